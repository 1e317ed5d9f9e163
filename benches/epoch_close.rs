//! How long closing one PoOT epoch and one payout run take, and how long each blocks the
//! writer (and so heartbeat ingestion), on a real redb file with durable commits.
//!
//! Per N: N nodes with 10 signed-size heartbeats each in the window; the epoch is closed
//! as the service closes it (proofs computed outside the writer, stored in chunks), then
//! a payout run pays every node's credits. Meanwhile a probe sends a trivial write every
//! millisecond and times it: its worst latency is how long a heartbeat would have waited.
//! Prints tables; no assertions (the machine is shared and noisy). `verify` runs on the
//! result unless EPOCH_BENCH_VERIFY=0.
//!
//! `cargo bench --bench epoch_close` (N defaults to 10k and 100k; set EPOCH_BENCH_NODES to
//! a comma list to change).

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lucid_node_management::app::alerts::find_node_alerts;
use lucid_node_management::app::payouts::process_with;
use lucid_node_management::app::poot::{close_epoch_in_chunks, next_due_epoch, CloseParams};
use lucid_node_management::clock::Clock;
use lucid_node_management::crypto::keys::generate_signing_key;
use lucid_node_management::domain::alert::{AlertSettings, EventType};
use lucid_node_management::domain::node::{Node, NodeStatus};
use lucid_node_management::error::ApiError;
use lucid_node_management::store::tables::POOT_CLOSED_UNTIL_KEY;
use lucid_node_management::store::{self, seed, Actor, Store, Writer, WriterSettings};
use rust_decimal::Decimal;

const S: u64 = 1_000_000;
const EPOCH: u64 = 300 * S;
const PREFIX: &str = "node_bench";
/// A valid TRON address (the USDT contract).
const TRON_ADDRESS: &str = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t";

/// Writes N nodes and their heartbeats; returns the store and its clock.
fn prepare(dir: &std::path::Path, n: usize) -> (Store, Clock) {
    let (store, clock) = store::db::open_with_clock(dir, 100).unwrap();
    // The window being closed is two epochs back from now.
    let now = clock.now_us();
    let epoch = now / EPOCH - 2;
    let start = epoch * EPOCH;
    seed::in_transaction(&store, &clock, |b| {
        b.set_meta_u64(POOT_CLOSED_UNTIL_KEY, start).unwrap();
        let nodes = (0..n).map(|i| Node {
            payout_address: Some(TRON_ADDRESS.into()),
            ..seed::node(PREFIX, i, start)
        });
        seed::put_nodes(b, nodes).unwrap();
        // Unique per node: the receive time is the key.
        seed::put_heartbeats(b, PREFIX, n, 10, |i, h| start + h * 30 * S + i as u64).unwrap();
    });
    (store, clock)
}

/// Resets this process's peak RSS (VmHWM), so a later [`peak_rss_mib`] covers what ran
/// in between.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// VmHWM of this process in MiB.
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

/// Sends a trivial durable write every millisecond until stopped; collects latencies.
struct Probe {
    stop: Arc<AtomicBool>,
    latencies: Arc<Mutex<Vec<Duration>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Probe {
    fn start(writer: &Writer<ApiError>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let latencies: Arc<Mutex<Vec<Duration>>> = Arc::default();
        let (w, s, l) = (writer.clone(), stop.clone(), latencies.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                let sent = Instant::now();
                if w.write(|_| Ok(())).await.is_ok() {
                    l.lock().unwrap().push(sent.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        });
        Self {
            stop,
            latencies,
            task,
        }
    }

    /// (count, median, p99, max) in milliseconds.
    async fn finish(self) -> (usize, f64, f64, f64) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.task.await;
        let mut l = self.latencies.lock().unwrap().clone();
        l.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        if l.is_empty() {
            return (0, 0.0, 0.0, 0.0);
        }
        let at = |q: f64| ms(l[((l.len() - 1) as f64 * q) as usize]);
        (l.len(), at(0.5), at(0.99), ms(*l.last().unwrap()))
    }
}

fn main() {
    let sizes: Vec<usize> = std::env::var("EPOCH_BENCH_NODES")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let verify = std::env::var("EPOCH_BENCH_VERIFY").map_or(true, |v| v != "0");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows_close = Vec::new();
    let mut rows_payout = Vec::new();
    let mut rows_watch = Vec::new();
    for n in sizes {
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = prepare(dir.path(), n);
        let (writer, thread) =
            Writer::start(&store, clock.clone(), WriterSettings::new(10_000)).unwrap();
        let params = CloseParams {
            length_us: EPOCH,
            timeout_us: 90 * S,
            reward_per_hour: Decimal::new(5, 2),
            proof_key: generate_signing_key(),
        };
        rt.block_on(async {
            // The probe alone first: what a write costs when nothing else runs.
            let idle = Probe::start(&writer);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let (_, idle_median, _, _) = idle.finish().await;

            let probe = Probe::start(&writer);
            reset_peak_rss();
            let rss_before = peak_rss_mib();
            let started = Instant::now();
            let p = params.clone();
            let due = writer
                .write(move |b| next_due_epoch(b, &p))
                .await
                .unwrap()
                .expect("an epoch was due");
            let report = close_epoch_in_chunks(&writer, &store, &params, due)
                .await
                .unwrap();
            let secs = started.elapsed().as_secs_f64();
            let rss_peak = peak_rss_mib();
            let (count, median, p99, max) = probe.finish().await;
            rows_close.push(format!(
                "| {n} | {} | {} | {:.3} | {secs:.3} | {:.0} | {} | {:.1} | {:.1} | {count} | {idle_median:.1} / {median:.1} / {p99:.1} / {max:.1} | {rss_before:.0} / {rss_peak:.0} |",
                n * 10,
                report.proofs_written,
                report.compute.as_secs_f64(),
                report.proofs_written as f64 / secs,
                report.writer.jobs,
                report.writer.longest_job.as_secs_f64() * 1000.0,
                report.writer.longest_job_committed.as_secs_f64() * 1000.0,
            ));

            let probe = Probe::start(&writer);
            let written_before = common::written_bytes();
            let started = Instant::now();
            let (outcome, timing) = process_with(
                &store,
                &writer,
                Decimal::new(1, 3),
                &Actor::system(),
            )
            .await
            .unwrap();
            let secs = started.elapsed().as_secs_f64();
            let written = common::written_bytes().saturating_sub(written_before);
            let (count, median, p99, max) = probe.finish().await;
            rows_payout.push(format!(
                "| {n} | {} | {:.3} | {secs:.3} | {:.0} | {} | {:.1} | {:.1} | {count} | {idle_median:.1} / {median:.1} / {p99:.1} / {max:.1} | {:.0} |",
                outcome.created.len(),
                timing.scan.as_secs_f64(),
                outcome.created.len() as f64 / secs,
                timing.writer.jobs,
                timing.writer.longest_job.as_secs_f64() * 1000.0,
                timing.writer.longest_job_committed.as_secs_f64() * 1000.0,
                written as f64 / outcome.created.len().max(1) as f64,
            ));

            // The alert watcher's pass with a fleet webhook and 1 % of the nodes offline:
            // what it reads now (the status index) against the full node scan it did.
            let offline: Vec<String> = (0..n).step_by(100).map(|i| seed::node_id(PREFIX, i)).collect();
            let offline_count = offline.len();
            writer
                .write(move |b| {
                    for id in &offline {
                        let before = b.node(id)?.expect("seeded node");
                        let after = Node { status: NodeStatus::Offline, ..before.clone() };
                        b.put_node(&after, Some(&before))?;
                    }
                    Ok(())
                })
                .await
                .unwrap();
            let settings = HashMap::from([(
                "fleet".to_string(),
                AlertSettings {
                    webhook_url: "https://receiver.example/lucid".into(),
                    secret: "s".into(),
                    offline_after_seconds: 1,
                    events: vec![EventType::NodeOffline, EventType::NodeOnline],
                    updated_at_us: 0,
                },
            )]);
            let reader = store.reader().unwrap();
            let now = clock.now_us() + 3_600 * S;
            let started = Instant::now();
            let found = find_node_alerts(&reader, &settings, now).unwrap();
            let indexed = started.elapsed().as_secs_f64() * 1000.0;
            let started = Instant::now();
            let scanned = reader.nodes(None, usize::MAX, |node| node.status == NodeStatus::Offline).unwrap().items.len();
            let full_scan = started.elapsed().as_secs_f64() * 1000.0;
            assert_eq!((found.len(), scanned), (offline_count, offline_count));
            rows_watch.push(format!(
                "| {n} | {offline_count} | {full_scan:.1} | {indexed:.2} | {:.0}x |",
                full_scan / indexed
            ));
        });
        drop(writer);
        thread.join().unwrap();
        if verify {
            let started = Instant::now();
            let report = lucid_node_management::store::verify::verify_database(
                &store.reader().unwrap(),
                &params.proof_key.verifying_key(),
                |_| {},
            )
            .unwrap_or_else(|e| panic!("verify failed at {n} nodes: {e}"));
            eprintln!(
                "verify at {n} nodes: {} proofs, {} payouts, ok ({:.1} s)",
                report.proofs,
                report.payouts,
                started.elapsed().as_secs_f64()
            );
        }
    }
    println!("Closing one PoOT epoch (10 heartbeats per node; probe = a trivial durable write every 1 ms, idle median / median / p99 / max latency during the close, ms)");
    println!();
    println!("| nodes | heartbeats | proofs | compute, outside the writer (s) | close total (s) | proofs/s | writer jobs | longest job in writer (ms) | longest job until durable (ms) | probe writes | probe latency (ms) | bench process RSS before / peak during (MiB) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|");
    for r in rows_close {
        println!("{r}");
    }
    println!();
    println!("One payout run over every node's balance");
    println!();
    println!("| nodes | payouts | candidate scan, beside the writer (s) | run total (s) | payouts/s | writer jobs | longest job in writer (ms) | longest job until durable (ms) | probe writes | probe latency (ms) | written per payout (B) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|");
    for r in rows_payout {
        println!("{r}");
    }
    println!();
    println!("One alert watcher pass (a fleet webhook, 1 % of the nodes offline): the offline nodes read through the status index, against a scan of every node");
    println!();
    println!("| nodes | offline | full scan (ms) | status index (ms) | ratio |");
    println!("|---:|---:|---:|---:|---:|");
    for r in rows_watch {
        println!("{r}");
    }
}
