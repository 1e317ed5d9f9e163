//! Bytes kept: the database file over simulated days of heartbeats at a fleet's pace, with
//! retention pruning as the service does it (every epoch, heartbeats older than
//! `HEARTBEAT_RETENTION` removed in chunks). Once the retention window is full the file
//! must stop growing: freed pages are reused by new rows.
//!
//! `cargo bench --bench retention`
//!   RETENTION_NODES=1000    nodes, each beating every 30 s
//!   RETENTION_DAYS=14       simulated days
//!   RETENTION_KEEP_DAYS=7   HEARTBEAT_RETENTION
//!   RETENTION_COMMIT_S=90   simulated seconds of heartbeats per durable commit (the service
//!                           commits every COMMIT_INTERVAL; larger commits keep the bench
//!                           short and change the rows' layout little)
//!
//! Rows are written through `Batch::insert_heartbeat` (the compact form the service stores)
//! into the real redb file, durably.

use std::time::Instant;

use lucid_node_management::clock::Clock;
use lucid_node_management::domain::heartbeat::{canonical_bytes, StoredHeartbeat};
use lucid_node_management::domain::timefmt::rfc3339_us;
use lucid_node_management::store::{self, seed};

const S: u64 = 1_000_000;
const DAY: u64 = 86_400 * S;
const PERIOD: u64 = 30 * S;
const EPOCH: u64 = 300 * S;
const PRUNE_CHUNK: usize = 10_000;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn agent_heartbeat(node_id: &str, seq: u64, at: u64) -> StoredHeartbeat {
    let sent_at = rfc3339_us(at);
    StoredHeartbeat {
        seq,
        canonical: canonical_bytes(
            node_id,
            &seq.to_string(),
            &sent_at,
            "1",
            "2048",
            "0.25",
            "256",
        ),
        signature: (0..64u8).map(|b| b.wrapping_mul(seq as u8)).collect(),
        sessions_active: 1,
        bytes_relayed: 2048,
        cpu_load: 0.25,
        mem_used_mb: 256,
    }
}

fn main() {
    let nodes = env_or("RETENTION_NODES", 1000) as usize;
    let days = env_or("RETENTION_DAYS", 14);
    let keep = env_or("RETENTION_KEEP_DAYS", 7) * DAY;
    let commit_span = env_or("RETENTION_COMMIT_S", 90) * S;
    let dir = tempfile::tempdir().unwrap();
    let (store, clock) = store::db::open_with_clock(dir.path(), 100).unwrap();
    let file = dir.path().join(store::db::DB_FILE);
    // Ids as long as real ones (`node_` and 20 characters), heartbeats as the agent sends
    // them (its time form, the numbers of benches/flash_wear.rs, a 64-byte signature).
    const PREFIX: &str = "node_retention_abc";
    let ids: Vec<String> = (0..nodes).map(|i| seed::node_id(PREFIX, i)).collect();
    assert_eq!(ids[0].len(), 25);
    seed::in_transaction(&store, &clock, |b| {
        seed::put_nodes(b, (0..nodes).map(|i| seed::node(PREFIX, i, 0)))
    })
    .unwrap();
    let start = 1_800_000_000 * S; // any fixed time
    let started = Instant::now();
    let mut t = start;
    let mut next_prune = start + EPOCH;
    let mut seq = vec![0u64; nodes];
    let mut rows_kept: u64 = 0;
    let mut rows_written: u64 = 0;
    let mut sizes = Vec::new();
    let end = start + days * DAY;
    let mut next_day = start + DAY;
    let clock = Clock::new();
    while t < end {
        let span_end = (t + commit_span).min(end);
        seed::in_transaction(&store, &clock, |b| {
            // Node i beats at offset i/n of each period.
            let mut at = t;
            while at < span_end {
                let slot = (at - start) % PERIOD;
                let i = (slot as u128 * nodes as u128 / PERIOD as u128) as usize;
                seq[i] += 1;
                let hb = agent_heartbeat(&ids[i], seq[i], at);
                b.insert_heartbeat(at, &ids[i], &hb).unwrap();
                rows_written += 1;
                rows_kept += 1;
                at += PERIOD / nodes as u64;
            }
        });
        t = span_end;
        while next_prune <= t {
            let cutoff = next_prune.saturating_sub(keep);
            loop {
                let removed = seed::in_transaction(&store, &clock, |b| {
                    b.prune_heartbeats(cutoff, PRUNE_CHUNK).unwrap()
                });
                rows_kept -= removed as u64;
                if removed < PRUNE_CHUNK {
                    break;
                }
            }
            next_prune += EPOCH;
        }
        if t >= next_day {
            let bytes = std::fs::metadata(&file).unwrap().len();
            // redb grows the file in large steps; what its pages hold is the finer figure.
            let stats = store.page_stats().unwrap();
            let used = stats.allocated_bytes;
            sizes.push((
                sizes.len() as u64 + 1,
                bytes,
                rows_kept,
                used,
                stats.stored_bytes,
            ));
            eprintln!(
                "day {:>2}: file {:>7.1} MiB, pages in use {:>7.1} MiB, {rows_kept} rows kept ({:.0} s)",
                sizes.len(),
                bytes as f64 / (1 << 20) as f64,
                used as f64 / (1 << 20) as f64,
                started.elapsed().as_secs_f64()
            );
            next_day += DAY;
        }
    }
    println!(
        "{nodes} nodes beating every 30 s for {days} simulated days, heartbeats kept {} days, \
         {} s of heartbeats per durable commit, pruned every 5 min; {rows_written} rows written in {:.0} s.",
        keep / DAY,
        commit_span / S,
        started.elapsed().as_secs_f64()
    );
    println!();
    println!("| day | file MiB | pages in use MiB | rows kept | page bytes per kept row | stored bytes per kept row |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for (day, bytes, rows, used, stored) in &sizes {
        println!(
            "| {day} | {:.1} | {:.1} | {rows} | {:.0} | {:.0} |",
            *bytes as f64 / (1 << 20) as f64,
            *used as f64 / (1 << 20) as f64,
            *used as f64 / (*rows).max(1) as f64,
            *stored as f64 / (*rows).max(1) as f64
        );
    }
    let keep_days = (keep / DAY) as usize;
    if sizes.len() > keep_days {
        let full = &sizes[keep_days - 1];
        let last = sizes.last().unwrap();
        println!();
        println!(
            "Once the window is full (day {keep_days}) to day {}: the file changed by {:+.1} %, the pages in use by {:+.1} %.",
            sizes.len(),
            (last.1 as f64 / full.1 as f64 - 1.0) * 100.0,
            (last.3 as f64 / full.3 as f64 - 1.0) * 100.0
        );
    }
}
