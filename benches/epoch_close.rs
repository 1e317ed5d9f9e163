//! How long closing one PoOT epoch takes: N nodes with 10 signed-size heartbeats each in
//! the window, closed in one write transaction on a real redb file (durable commit
//! included). Prints a table; no assertions (the machine is shared and noisy).
//!
//! `cargo bench --bench epoch_close` (N defaults to 10k and 100k; set EPOCH_BENCH_NODES to
//! a comma list to change).

use std::time::Instant;

use lucid_node_management::clock::Clock;
use lucid_node_management::crypto::generate_signing_key;
use lucid_node_management::domain::heartbeat::StoredHeartbeat;
use lucid_node_management::domain::node::{Node, NodeStatus};
use lucid_node_management::jobs::poot::{close_next_epoch, CloseParams};
use lucid_node_management::store::batch::AuditHead;
use lucid_node_management::store::tables::POOT_CLOSED_UNTIL_KEY;
use lucid_node_management::store::{self, Batch};
use rust_decimal::Decimal;

const S: u64 = 1_000_000;
const EPOCH: u64 = 300 * S;

fn main() {
    let sizes: Vec<usize> = std::env::var("EPOCH_BENCH_NODES")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    println!("| nodes | heartbeats | close epoch (s) | proofs/s |");
    println!("|---:|---:|---:|---:|");
    for n in sizes {
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = store::db::open_with_clock(dir.path(), 100).unwrap();
        // The window being closed is two epochs back from now.
        let now = clock.now_us();
        let epoch = now / EPOCH - 2;
        let start = epoch * EPOCH;
        let txn = store.db.begin_write().unwrap();
        {
            let mut head = AuditHead::load(&txn).unwrap();
            let mut b = Batch::new(&txn, &mut head, &clock);
            b.set_meta_u64(POOT_CLOSED_UNTIL_KEY, start).unwrap();
            for i in 0..n {
                let id = format!("node_bench{i:07}");
                let mut pk = [0u8; 32];
                pk[..8].copy_from_slice(&(i as u64).to_le_bytes());
                let node = Node {
                    node_id: id.clone(),
                    name: id.clone(),
                    operator_id: "op".into(),
                    public_key: pk,
                    payout_address: None,
                    region: None,
                    pool_id: None,
                    status: NodeStatus::Online,
                    registered_at_us: start,
                    last_heartbeat_at_us: None,
                    balance_usdt: Decimal::ZERO,
                    operational_seconds_total: 0,
                    token_generation: 0,
                    last_seq: None,
                    credit_carry: Decimal::ZERO,
                    last_proof: None,
                };
                b.put_node(&node, None).unwrap();
                for h in 0..10u64 {
                    let at = start + h * 30 * S + i as u64; // unique per node
                    let hb = StoredHeartbeat {
                        seq: h,
                        canonical: format!(
                            "lucid-hb-v1|{id}|{h}|2026-01-01T00:00:00Z|0|0|0.10|100"
                        ),
                        signature: vec![7; 64],
                        sessions_active: 0,
                        bytes_relayed: 0,
                        cpu_load: 0.1,
                        mem_used_mb: 100,
                    };
                    b.insert_heartbeat(at, &id, &hb).unwrap();
                }
            }
        }
        txn.commit().unwrap();

        let params = CloseParams {
            length_us: EPOCH,
            timeout_us: 90 * S,
            reward_per_hour: Decimal::new(5, 2),
            proof_key: generate_signing_key(),
        };
        let started = Instant::now();
        let txn = store.db.begin_write().unwrap();
        let closed = {
            let mut head = AuditHead::load(&txn).unwrap();
            let bench_clock = Clock::new();
            let mut b = Batch::new(&txn, &mut head, &bench_clock);
            close_next_epoch(&mut b, &params).unwrap()
        };
        txn.commit().unwrap();
        let secs = started.elapsed().as_secs_f64();
        let (_, proofs) = closed.expect("an epoch was due");
        println!(
            "| {n} | {} | {secs:.3} | {:.0} |",
            n * 10,
            proofs as f64 / secs
        );
    }
}
