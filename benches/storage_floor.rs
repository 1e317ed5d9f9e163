//! What redb itself costs on this machine for the rows an epoch close and a payout run
//! are made of, with none of the appliance's code: the floor under `epoch_close`'s
//! figures (issue 7). Each case writes N nodes' rows (default 100k, `FLOOR_NODES=`),
//! committed durably in chunks of 2000 nodes with each table opened once per chunk, as
//! the close's and the payout run's writer jobs do. Nodes are visited in id order.
//!
//! `cargo bench --bench storage_floor`
//!
//! It measures redb alone, so it opens redb transactions itself (clippy.toml allows that
//! only in src/store/).
#![allow(clippy::disallowed_methods)]

use std::ops::Range;
use std::time::Instant;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

const CHUNK: usize = 2000;
/// Rows kept per node, next to that node's earlier rows (as proofs and the ledger are).
const BY_NODE: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("by_node");
/// Rows appended in key order (as a per-epoch or time-ordered table would be).
const BY_EPOCH: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("by_epoch");
/// One row per node, overwritten (as a balance or a node record).
const PER_NODE: TableDefinition<&str, &[u8]> = TableDefinition::new("per_node");

/// Seconds in all, and of them in `commit` (page writes + fsync).
struct Timing {
    total: f64,
    committing: f64,
}

/// Runs `chunk(txn, nodes)` for every `CHUNK` nodes, one durable commit each.
fn chunked(
    db: &Database,
    n: usize,
    mut chunk: impl FnMut(&WriteTransaction, Range<usize>),
) -> Timing {
    let started = Instant::now();
    let mut committing = 0.0;
    for start in (0..n).step_by(CHUNK) {
        let txn = db.begin_write().unwrap();
        chunk(&txn, start..(start + CHUNK).min(n));
        let commit_started = Instant::now();
        txn.commit().unwrap();
        committing += commit_started.elapsed().as_secs_f64();
    }
    Timing {
        total: started.elapsed().as_secs_f64(),
        committing,
    }
}

fn node_id(i: usize) -> String {
    // Like the appliance's ids: a prefix and a random-looking tail, so the order nodes
    // are created in is unrelated to their key order.
    let h = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    format!("node_{h:020}")
}

fn main() {
    let n: usize = std::env::var("FLOOR_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let db = Database::builder()
        .set_cache_size(16 << 20) // as the appliance (store::db::CACHE_BYTES)
        .create(dir.path().join("floor.redb"))
        .unwrap();
    let mut ids: Vec<String> = (0..n).map(node_id).collect();
    let row = |len: usize| vec![7u8; len];
    let (small, mid, proof) = (row(100), row(200), row(750));
    let insert_by_node =
        |txn: &WriteTransaction, nodes: Range<usize>, ids: &[String], seq: u64, v: &[u8]| {
            let mut t = txn.open_table(BY_NODE).unwrap();
            for i in nodes {
                t.insert((ids[i].as_str(), seq), v).unwrap();
            }
        };
    let append_by_epoch =
        |txn: &WriteTransaction, nodes: Range<usize>, ids: &[String], epoch: u64, v: &[u8]| {
            let mut t = txn.open_table(BY_EPOCH).unwrap();
            for i in nodes {
                t.insert((epoch, ids[i].as_str()), v).unwrap();
            }
        };
    let overwrite = |txn: &WriteTransaction, nodes: Range<usize>, ids: &[String], v: &[u8]| {
        let mut t = txn.open_table(PER_NODE).unwrap();
        for i in nodes {
            t.insert(ids[i].as_str(), v).unwrap();
        }
    };

    let mut rows: Vec<(&str, Timing)> = Vec::new();
    // Each node already has rows from an earlier epoch, as after the first close; the
    // nodes arrive in creation order, scattered over the key space.
    rows.push((
        "insert 100 B, key (node, seq), nodes in creation order",
        chunked(&db, n, |txn, nodes| {
            insert_by_node(txn, nodes, &ids, 1, &small)
        }),
    ));
    chunked(&db, n, |txn, nodes| overwrite(txn, nodes, &ids, &small));
    // The close and the payout run walk nodes in id order.
    ids.sort();
    let ids = &ids;

    for (case, epoch, value) in [
        ("append 100 B, key (epoch, node)", 2, &small),
        ("append 200 B, key (epoch, node)", 3, &mid),
        ("append 750 B, key (epoch, node)", 4, &proof),
    ] {
        let t = chunked(&db, n, |txn, nodes| {
            append_by_epoch(txn, nodes, ids, epoch, value)
        });
        rows.push((case, t));
    }
    for (case, seq, value) in [
        (
            "insert 100 B, key (node, seq), beside the node's rows",
            2,
            &small,
        ),
        (
            "insert 750 B, key (node, seq), beside the node's rows",
            3,
            &proof,
        ),
    ] {
        let t = chunked(&db, n, |txn, nodes| {
            insert_by_node(txn, nodes, ids, seq, value)
        });
        rows.push((case, t));
    }
    rows.push((
        "overwrite 100 B, key node",
        chunked(&db, n, |txn, nodes| overwrite(txn, nodes, ids, &small)),
    ));
    rows.push((
        "get 100 B, key node, in a write transaction",
        chunked(&db, n, |txn, nodes| {
            let t = txn.open_table(PER_NODE).unwrap();
            for i in nodes {
                assert!(t.get(ids[i].as_str()).unwrap().is_some());
            }
        }),
    ));
    let started = Instant::now();
    {
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(PER_NODE).unwrap();
        for id in ids {
            assert!(t.get(id.as_str()).unwrap().is_some());
        }
    }
    rows.push((
        "get 100 B, key node, read snapshot",
        Timing {
            total: started.elapsed().as_secs_f64(),
            committing: 0.0,
        },
    ));
    // The least a close can store under DESIGN.md (a proof, a ledger credit, the
    // balance and carried remainder), with the proof at its smallest (no inclusion path)
    // and appended; a payout run's least (a payout record appended, its ledger debit, the
    // balance) is the same three rows.
    rows.push((
        "three rows: 200 B appended + 100 B beside the node's rows + 100 B overwritten \
         (the smallest close: proof, credit, balance; the smallest payout: payout, debit, balance)",
        chunked(&db, n, |txn, nodes| {
            append_by_epoch(txn, nodes.clone(), ids, 5, &mid);
            insert_by_node(txn, nodes.clone(), ids, 5, &small);
            overwrite(txn, nodes, ids, &small);
        }),
    ));

    println!(
        "redb alone, {n} nodes, {CHUNK} nodes per durable commit, 16 MiB cache, one thread, \
         tables opened once per chunk.\n"
    );
    println!("| case | total s | of it in commit s | µs per node |");
    println!("|---|---:|---:|---:|");
    for (case, t) in rows {
        println!(
            "| {case} | {:.3} | {:.3} | {:.2} |",
            t.total,
            t.committing,
            t.total * 1e6 / n as f64
        );
    }
}
