//! Bytes an epoch close keeps and writes per node (issue 15), on a real redb file with
//! durable commits, closing epochs as the service does.
//!
//! Per N: N nodes with 10 heartbeats each in each of K consecutive epochs (seeded first);
//! then the K epochs are closed one after another. Measured over the closes only:
//! - kept: growth of redb's allocated pages and of its stored bytes, per node-epoch;
//! - written: this process's `write_bytes` (/proc/self/io), per node-epoch;
//! - time: each close, and the longest it held the writer.
//!
//! Each N runs twice (EPOCH_STORAGE_MODES, default `accumulated,scanned`): with the PoOT
//! windows accumulated as the heartbeats commit, as the service runs once its first
//! epochs after a start have closed, and with every close scanning its window's
//! heartbeats, as after a start or a retried close. The ratio of the two is the figure.
//!
//! Then, per M (EPOCH_STORAGE_DAY_NODES, default 1000): three days of 1-hour epochs (two
//! heartbeats per node per epoch) are closed and the two oldest days rolled up past a
//! one-day retention; measured per table (redb's own table statistics): what a node-day
//! keeps forever (its daily record, its ledger entry) and what the rolled-up proof rows
//! gave back.
//!
//! Last, the memory the accumulators hold per node and open epoch (counted by this
//! bench's allocator), for EPOCH_STORAGE_NODES nodes beating 10 and 60 times an epoch.
//!
//! `cargo bench --bench epoch_storage` (EPOCH_STORAGE_NODES, default `1000,10000`;
//! EPOCH_STORAGE_EPOCHS, default 12 = one hour of 5-minute epochs). Prints tables; no
//! assertions (the machine is shared and noisy).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use lucid_node_management::app::poot::{
    close_due_epochs_with, close_epoch_in_chunks, next_due_epoch, CloseParams,
};
use lucid_node_management::app::rollup::roll_up_due_days_with;
use lucid_node_management::crypto::keys::generate_signing_key;
use lucid_node_management::store::tables::POOT_CLOSED_UNTIL_KEY;
use lucid_node_management::store::tables::POOT_LENGTH_KEY;
use lucid_node_management::store::Store;
use lucid_node_management::store::{self, seed, Writer, WriterSettings};
use rust_decimal::Decimal;

/// Counts the bytes live on the heap, to measure what the accumulators hold.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const S: u64 = 1_000_000;
const EPOCH: u64 = 300 * S;
const PREFIX: &str = "node_0123456789abcdefghij"; // the length of a real node id

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn main() {
    let sizes = env_list("EPOCH_STORAGE_NODES", "1000,10000");
    let epochs = env_list("EPOCH_STORAGE_EPOCHS", "12")[0] as u64;
    let modes: Vec<String> = std::env::var("EPOCH_STORAGE_MODES")
        .unwrap_or_else(|_| "accumulated,scanned".into())
        .split(',')
        .map(|m| m.trim().to_string())
        .filter(|m| m == "accumulated" || m == "scanned")
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for (n, mode) in sizes
        .iter()
        .flat_map(|&n| modes.iter().map(move |m| (n, m.as_str())))
    {
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = store::db::open_with_clock(dir.path(), 100).unwrap();
        let first = clock.now_us() / EPOCH - epochs - 1;
        let start = first * EPOCH;
        if mode == "accumulated" {
            // From before the first heartbeat, holding every seeded epoch (the service
            // holds 4: its heartbeats arrive as the epochs pass).
            store
                .accumulators
                .configure((EPOCH, 90 * S), 0, epochs as usize + 2);
        }
        seed::in_transaction(&store, &clock, |b| {
            b.set_meta_u64(POOT_CLOSED_UNTIL_KEY, start).unwrap();
            seed::put_nodes(b, (0..n).map(|i| seed::node(PREFIX, i, start))).unwrap();
            // Every node every 30 s, all K epochs long (unique receive times).
            seed::put_heartbeats(b, PREFIX, n, 10 * epochs, |i, h| {
                start + h * 30 * S + i as u64
            })
            .unwrap();
        });
        let (writer, thread) =
            Writer::start(&store, clock.clone(), WriterSettings::new(10_000)).unwrap();
        let params = CloseParams {
            length_us: EPOCH,
            timeout_us: 90 * S,
            reward_per_hour: Decimal::new(5, 2),
            proof_key: generate_signing_key(),
        };
        let tables_before = store.table_bytes().unwrap();
        let pages_before = store.page_stats().unwrap();
        let written_before = common::written_bytes();
        let mut closes: Vec<Duration> = Vec::new();
        // Per close: computing proofs (off the writer), and the writer jobs' time until
        // durable, summed (what the rest of the close is).
        let mut computes: Vec<Duration> = Vec::new();
        let mut longest_job = Duration::ZERO;
        let mut proofs = 0;
        let mut accumulated = 0;
        rt.block_on(async {
            loop {
                let p = params.clone();
                let started = Instant::now();
                let Some(due) = writer.write(move |b| next_due_epoch(b, &p)).await.unwrap() else {
                    break;
                };
                if due.epoch >= first + epochs {
                    break;
                }
                let report = close_epoch_in_chunks(&writer, &store, &params, due)
                    .await
                    .unwrap();
                closes.push(started.elapsed());
                computes.push(report.compute);
                longest_job = longest_job.max(report.writer.longest_job);
                proofs += report.proofs_written;
                accumulated += usize::from(report.accumulated);
            }
        });
        drop(writer);
        thread.join().unwrap();
        let written = common::written_bytes() - written_before;
        let pages_after = store.page_stats().unwrap();
        let node_epochs = proofs.max(1) as f64;
        let grown = table_growth(&tables_before, &store.table_bytes().unwrap());
        let per = |name: &str| grown.get(name).copied().unwrap_or(0) as f64 / node_epochs;
        closes.sort();
        computes.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        rows.push(format!(
            "| {n} | {mode} ({accumulated}) | {} | {proofs} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.1} / {:.1} | {:.1} | {:.1} |",
            closes.len(),
            per("epoch_rows") + per("epoch_blocks"),
            per("ledger"),
            (pages_after.allocated_bytes as f64 - pages_before.allocated_bytes as f64)
                / node_epochs,
            (pages_after.stored_bytes as f64 - pages_before.stored_bytes as f64) / node_epochs,
            written as f64 / node_epochs,
            ms(closes[closes.len() / 2]),
            ms(*closes.last().unwrap()),
            ms(computes[computes.len() / 2]),
            ms(longest_job),
        ));
    }
    println!("Closing {epochs} consecutive epochs (10 heartbeats per node per epoch): bytes per node-epoch over the closes only");
    println!();
    println!("| nodes | windows (closes accumulated) | epochs | proofs | kept: proof rows (B) | kept: ledger (B) | kept: redb pages, all tables (B) | kept: stored bytes, all tables (B) | written (B) | close median / max (ms) | of which computing proofs, median (ms) | longest writer job (ms) |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|");
    for r in rows {
        println!("{r}");
    }
    println!();
    println!("PoOT accumulators: heap held after two epochs of heartbeats, none closed (three epochs open: two whole, the next with the last 90 s; the service holds two or three)");
    println!();
    println!("| nodes | heartbeats per node-epoch | held per node (B) | held in all (MiB) |");
    println!("|---:|---:|---:|---:|");
    for &n in &sizes {
        for beats in [10u64, 60] {
            println!("{}", accumulator_memory(n, beats));
        }
    }
    println!();
    let day_nodes = env_list("EPOCH_STORAGE_DAY_NODES", "1000");
    println!("Rolling two days up (1-hour epochs, past a one-day retention): bytes per node-day, from redb's table statistics (occupied = stored + metadata + fragmentation)");
    println!();
    println!("| nodes | days rolled up | daily records kept (B) | ledger kept (B) | day roots kept, per day (B) | proof rows given back (B) | roll-up time per day (ms) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for n in day_nodes {
        println!("{}", roll_up_days(&rt, n));
    }
}

/// Occupied bytes each table gained (negative: gave back) between two measurements.
/// Heap the accumulators hold for `n` nodes beating `beats` times in each of two epochs
/// (with the 90 s timeout, the later heartbeats of each also open the next epoch).
fn accumulator_memory(n: usize, beats: u64) -> String {
    let acc = store::accumulators::EpochAccumulators::default();
    let before = LIVE.load(Ordering::Relaxed);
    acc.configure((EPOCH, 90 * S), 0, 8);
    let every = EPOCH / beats;
    for h in 0..2 * beats {
        let leaves = (0..n)
            .map(|i| {
                let id = seed::node_id(PREFIX, i);
                let at = 10 * EPOCH + h * every + i as u64;
                (id.into_boxed_str(), at, [h as u8; 32])
            })
            .collect();
        acc.push_committed(leaves);
    }
    let held = LIVE.load(Ordering::Relaxed) - before;
    format!(
        "| {n} | {beats} | {:.0} | {:.1} |",
        held as f64 / n as f64,
        held as f64 / (1 << 20) as f64
    )
}

fn table_growth(
    before: &[(String, u64, u64)],
    after: &[(String, u64, u64)],
) -> std::collections::HashMap<String, i64> {
    after
        .iter()
        .map(|(name, _, occupied)| {
            let was = before
                .iter()
                .find(|b| &b.0 == name)
                .map_or(0, |b| b.2 as i64);
            (name.clone(), *occupied as i64 - was)
        })
        .collect()
}

/// Three days of 1-hour epochs for `n` nodes, closed, then the two oldest rolled up.
fn roll_up_days(rt: &tokio::runtime::Runtime, n: usize) -> String {
    const HOUR: u64 = 3600 * S;
    const DAY: u64 = 24 * HOUR;
    let dir = tempfile::tempdir().unwrap();
    let (store, clock): (Store, _) = store::db::open_with_clock(dir.path(), 100).unwrap();
    let today = clock.now_us() / DAY;
    let start = (today - 3) * DAY;
    seed::in_transaction(&store, &clock, |b| {
        b.set_meta_u64(POOT_CLOSED_UNTIL_KEY, start).unwrap();
        b.set_meta_u64(POOT_LENGTH_KEY, HOUR).unwrap();
        seed::put_nodes(b, (0..n).map(|i| seed::node(PREFIX, i, start))).unwrap();
        // Every 30 minutes for three days.
        seed::put_heartbeats(b, PREFIX, n, 144, |i, h| start + h * 1800 * S + i as u64).unwrap();
    });
    let params = CloseParams {
        length_us: HOUR,
        timeout_us: 2400 * S,
        reward_per_hour: Decimal::new(5, 2),
        proof_key: generate_signing_key(),
    };
    let (writer, thread) =
        Writer::start(&store, clock.clone(), WriterSettings::new(10_000)).unwrap();
    let closing = tokio::sync::Mutex::new(());
    let (before, after, days, took) = rt.block_on(async {
        for _ in 0..2 {
            close_due_epochs_with(&closing, &writer, &store, &params, |_| {})
                .await
                .unwrap();
        }
        let before = store.table_bytes().unwrap();
        let started = Instant::now();
        let days = roll_up_due_days_with(
            &closing,
            &writer,
            &store,
            &params.proof_key,
            (DAY, false),
            || clock.now_us(),
        )
        .await
        .unwrap();
        let took = started.elapsed();
        (before, store.table_bytes().unwrap(), days.len(), took)
    });
    drop(writer);
    thread.join().unwrap();
    let grown = table_growth(&before, &after);
    let node_days = (n * days.max(1)) as f64;
    let g = |name: &str| grown.get(name).copied().unwrap_or(0) as f64;
    let ledger_total = after.iter().find(|t| t.0 == "ledger").map_or(0, |t| t.2) as f64;
    format!(
        "| {n} | {days} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
        (g("day_rows") + g("day_blocks")) / node_days,
        // Two days' credits entered (the third's are still pending).
        ledger_total / node_days,
        g("days") / days.max(1) as f64,
        -(g("epoch_rows") + g("epoch_blocks")) / node_days,
        took.as_secs_f64() * 1000.0 / days.max(1) as f64,
    )
}
