//! Large states written straight into the store, for benchmarks and tests: N nodes and
//! their heartbeats in one transaction take seconds at 100k, where registering them
//! through the API would take many minutes. The service never calls this.
//!
//! The heartbeats are not signed (a fixed 64-byte "signature"): signatures are checked at
//! ingestion, and nothing after it reads them except as Merkle leaf data.

use super::batch::AuditHead;
use super::codec::encode_heartbeat;
use super::error::StoreResult;
use super::tables::HEARTBEATS;
use super::{Batch, Store};
use crate::clock::{Clock, Micros};
use crate::domain::heartbeat::StoredHeartbeat;
use crate::domain::node::{Node, NodeStatus};

/// The id of seeded node `i`: `{prefix}{i:07}`, so ids sort in `i` order.
pub fn node_id(prefix: &str, i: usize) -> String {
    format!("{prefix}{i:07}")
}

/// Seeded node `i`: online, owned by `op`, no payout address, a public key unique to `i`,
/// registered at `at_us`. Callers change what their case needs.
pub fn node(prefix: &str, i: usize, at_us: Micros) -> Node {
    let id = node_id(prefix, i);
    let mut public_key = [0u8; 32];
    public_key[..8].copy_from_slice(&(i as u64).to_le_bytes());
    Node {
        status: NodeStatus::Online,
        ..Node::registered(id.clone(), id, "op".into(), public_key, at_us)
    }
}

/// Runs `f` in one committed write transaction of its own, outside the writer (which is
/// not running while a bench or test seeds its state). Panics on a storage error.
pub fn in_transaction<T>(store: &Store, clock: &Clock, f: impl FnOnce(&mut Batch<'_>) -> T) -> T {
    let txn = store.db.begin_write().expect("seed: begin_write");
    let mut head = AuditHead::load(&txn).expect("seed: audit head");
    let mut batch =
        Batch::new(&txn, &mut head, clock).with_accumulation(store.accumulators.enabled());
    let out = f(&mut batch);
    let leaves = batch.take_staged_leaves();
    drop(batch);
    txn.commit().expect("seed: commit");
    store.accumulators.push_committed(leaves);
    out
}

/// Stores nodes as new (with their key and operator indexes and the status counters).
pub fn put_nodes(b: &mut Batch<'_>, nodes: impl IntoIterator<Item = Node>) -> StoreResult<()> {
    for node in nodes {
        b.put_node(&node, None)?;
    }
    Ok(())
}

/// Heartbeat `seq` of `node_id`, as ingestion stores it.
pub fn heartbeat(node_id: &str, seq: u64) -> StoredHeartbeat {
    StoredHeartbeat {
        seq,
        canonical: format!("lucid-hb-v1|{node_id}|{seq}|2026-01-01T00:00:00Z|0|0|0.10|100"),
        signature: vec![7; 64],
        sessions_active: 0,
        bytes_relayed: 0,
        cpu_load: 0.1,
        mem_used_mb: 100,
    }
}

/// `per_node` heartbeats for each of seeded nodes `0..n`, heartbeat `h` of node `i`
/// received at `received_at(i, h)` (unique per heartbeat: it is the key).
pub fn put_heartbeats(
    b: &mut Batch<'_>,
    prefix: &str,
    n: usize,
    per_node: u64,
    received_at: impl Fn(usize, u64) -> Micros,
) -> StoreResult<()> {
    let mut t = b.txn.open_table(HEARTBEATS)?;
    for i in 0..n {
        let id = node_id(prefix, i);
        for h in 0..per_node {
            let (at, hb) = (received_at(i, h), heartbeat(&id, h));
            t.insert((at, id.as_str()), encode_heartbeat(&id, at, &hb).as_slice())?;
            b.stage_leaf(&id, at, &hb);
        }
    }
    Ok(())
}
