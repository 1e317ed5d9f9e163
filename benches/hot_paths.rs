//! Micro-benchmarks of the pure functions on the hot paths (divan).
//!
//! `cargo bench --bench hot_paths` (divan's options follow `--`, e.g.
//! `cargo bench --bench hot_paths -- verify` for the signature benchmarks only).
//!
//! - heartbeat ingestion: canonical bytes of a heartbeat, Ed25519 verification one at a
//!   time (`verify_strict`, what a lone heartbeat gets) and in batches (what the verifier
//!   thread does with the heartbeats waiting together), per batch size;
//! - epoch close: the operational-time union of one node, the Merkle root over its
//!   heartbeats, the credit arithmetic of one epoch.

use divan::{black_box, Bencher};
use ed25519_dalek::SigningKey;
use lucid_node_management::crypto::signatures::{
    verify_signature_bytes, verify_signatures, SignedMessages,
};
use lucid_node_management::domain::credits::credit_epoch;
use lucid_node_management::domain::heartbeat::canonical_bytes;
use lucid_node_management::domain::merkle::{leaf_hash, root};
use lucid_node_management::domain::uptime::operational_micros;
use rust_decimal::Decimal;

fn main() {
    divan::main();
}

const SECOND: u64 = 1_000_000;

#[divan::bench]
fn heartbeat_canonical_bytes() -> String {
    canonical_bytes(
        black_box("node_7f3a9c2e1b4d5a6f"),
        black_box("123456"),
        black_box("2026-01-01T00:00:00.123456Z"),
        black_box("3"),
        black_box("1234567890"),
        black_box("0.35"),
        black_box("412"),
    )
}

/// `n` heartbeats from `n` different nodes, signed.
fn signed(n: usize) -> SignedMessages {
    SignedMessages::sign((0..n).map(|i| {
        let key = SigningKey::from_bytes(&[(i % 251) as u8 + 1; 32]);
        let message = canonical_bytes(
            &format!("node_{i:016x}"),
            &i.to_string(),
            "2026-01-01T00:00:00Z",
            "1",
            "2048",
            "0.25",
            "256",
        )
        .into_bytes();
        (key, message)
    }))
}

#[divan::bench]
fn verify_one(bencher: Bencher) {
    let signed = signed(1);
    bencher.bench(|| {
        assert!(verify_signature_bytes(
            black_box(&signed.public_keys[0]),
            black_box(&signed.messages[0]),
            black_box(&signed.signatures[0])
        ))
    });
}

/// One batch of `n` signatures; divan reports the time per signature (throughput).
#[divan::bench(args = [2, 4, 8, 16, 32, 64, 128])]
fn verify_batch(bencher: Bencher, n: usize) {
    let signed = signed(n);
    let checks = signed.checks();
    bencher
        .counter(divan::counter::ItemsCount::new(n))
        .bench(|| assert!(verify_signatures(black_box(&checks)).iter().all(|ok| *ok)));
}

/// A batch of 64 with one forged signature: the batch fails, each is checked alone.
#[divan::bench]
fn verify_batch_64_one_forged(bencher: Bencher) {
    let mut signed = signed(64);
    signed.signatures[17][40] ^= 1;
    let checks = signed.checks();
    bencher
        .counter(divan::counter::ItemsCount::new(64usize))
        .bench(|| {
            let verdicts = verify_signatures(black_box(&checks));
            assert!(!verdicts[17] && verdicts[16]);
        });
}

/// Receipts of one node over an epoch of `n` heartbeats 30 s apart, with a gap.
fn receipts(n: u64) -> Vec<u64> {
    (0..n)
        .map(|i| 1_000 * SECOND + i * 30 * SECOND + if i > n / 2 { 200 * SECOND } else { 0 })
        .collect()
}

#[divan::bench(args = [10, 100, 1000])]
fn operational_time_union(bencher: Bencher, n: u64) {
    let r = receipts(n);
    let (start, end) = (r[0] + 5 * SECOND, r[r.len() - 1] + 60 * SECOND);
    bencher
        .counter(divan::counter::ItemsCount::new(n as usize))
        .bench(|| operational_micros(black_box(&r), 90 * SECOND, start, end));
}

/// Merkle root over `n` heartbeat leaves (leaf hashing included: canonical bytes plus
/// signature, as at epoch close).
#[divan::bench(args = [10, 100, 1000])]
fn merkle_root_over_heartbeats(bencher: Bencher, n: usize) {
    let leaves: Vec<Vec<u8>> = (0..n)
        .map(|i| {
            let mut data = format!(
                "lucid-hb-v1|node_7f3a9c2e1b4d5a6f|{i}|2026-01-01T00:00:00Z|1|2048|0.25|256"
            )
            .into_bytes();
            data.extend_from_slice(&[i as u8; 64]);
            data
        })
        .collect();
    bencher
        .counter(divan::counter::ItemsCount::new(n))
        .bench(|| {
            let hashes: Vec<_> = leaves.iter().map(|l| leaf_hash(l)).collect();
            root(black_box(&hashes))
        });
}

#[divan::bench]
fn credit_one_epoch(bencher: Bencher) {
    let rate = Decimal::new(5, 2); // 0.05 USDT per hour
    let carry = Decimal::new(1234, 6);
    bencher.bench(|| credit_epoch(black_box(287), black_box(rate), black_box(carry)));
}
