//! Storage side of closing a PoOT epoch in chunks (see `app::poot`).
//!
//! - [`epoch_proofs`] computes an epoch's proofs from read transactions, outside the
//!   writer: once an epoch is finished its heartbeats cannot change (receive stamps are
//!   handed out inside the writer and strictly increase).
//! - [`Batch::write_epoch_chunks`] writes runs of proofs (92-byte rows, see `epoch_rows`)
//!   into packs (`epoch_packs`). A run already stored is skipped; the nodes' totals and ledgers
//!   follow from the stored rows when the epoch is settled (`settle`), which skips what
//!   it settled before: a crash anywhere loses nothing and credits nothing twice.

use std::collections::{HashMap, HashSet};

use redb::{Database, ReadableDatabase, ReadableTable};
use rust_decimal::Decimal;
use serde::Deserialize;

use super::epoch_packs::{append, decode_pack, encode_pack, is_pack, stored_end, Run};
use super::epoch_rows::{epoch_rows, node_id_of, ProofRow, StoredRow, STORED_ROW_LEN};
use super::error::{StoreError, StoreResult};
use super::tables::{COUNTERS, EPOCH_ROWS, NODE_IDS, PROOFS_COUNTER};
use super::Batch;
use crate::clock::Micros;
use crate::domain::merkle::{leaf_hash_parts, Hash};
use crate::domain::poot::{prove_summary, EpochParams, NodeEpochOutput, WindowAccumulator};
use crate::domain::proof::Proof;

/// The leading fields of a stored heartbeat, borrowed from its bytes: the Merkle leaf
/// needs only these, so the scan allocates nothing per heartbeat.
#[derive(Deserialize)]
struct HeartbeatLeafFields<'a> {
    #[allow(dead_code)]
    seq: u64,
    #[serde(borrow)]
    canonical: &'a str,
    #[serde(borrow)]
    signature: &'a [u8],
}

/// `leaf_hash(canonical || signature)` of a stored heartbeat of `node_id`, from its
/// encoded bytes (either form, see `codec::encode_heartbeat`).
pub(crate) fn heartbeat_leaf(node_id: &str, received_us: u64, bytes: &[u8]) -> StoreResult<Hash> {
    if bytes.first() == Some(&crate::domain::heartbeat::compact::TAG) {
        return Ok(super::codec::decode_heartbeat(node_id, received_us, bytes)?.leaf());
    }
    let (hb, _): (HeartbeatLeafFields<'_>, usize) =
        bincode::serde::borrow_decode_from_slice(bytes, bincode::config::standard()).map_err(
            |e| {
                tracing::error!(error = %e, "stored heartbeat does not decode");
                StoreError::corrupt(format!("stored value does not decode: {e}"))
            },
        )?;
    Ok(leaf_hash_parts(&[hb.canonical.as_bytes(), hb.signature]))
}

/// foldhash's fast hasher (in the build already, through serde_json): node ids are not
/// attacker-chosen keys here, and SipHash was a tenth of the heartbeat scan. A fixed seed,
/// so that every scan thread puts a node in the same share.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

/// Threads an epoch's heartbeats are scanned on: each keeps the nodes of its share.
const SCAN_PARTS: u64 = 2;

fn part_of(node_id: &str) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::default().hash_one(node_id) % SCAN_PARTS
}

/// Streams the heartbeats received in `[from, to)` of the nodes in share `part` into one
/// [`WindowAccumulator`] each (no receipts are kept), then reads each node's chain state
/// and computes its proof. Nodes in `stored` (their proofs are stored already) are
/// skipped. Returns the new proofs in `node_id` order.
fn prove_part(
    db: &Database,
    params: &EpochParams,
    (from, to): (Micros, Micros),
    stored: &HashSet<String>,
    part: u64,
) -> StoreResult<Vec<NodeEpochOutput>> {
    let txn = db.begin_read()?;
    let mut windows: FastMap<Box<str>, WindowAccumulator> = FastMap::default();
    {
        let t = txn.open_table(super::tables::HEARTBEATS)?;
        for entry in t.range::<(u64, &str)>((from, "")..(to, ""))? {
            let (k, v) = entry?;
            let (at, node) = k.value();
            if part_of(node) != part {
                continue;
            }
            let leaf = heartbeat_leaf(node, at, v.value())?;
            match windows.get_mut(node) {
                Some(w) => w.push(params, at, leaf),
                None => {
                    let mut w = WindowAccumulator::default();
                    w.push(params, at, leaf);
                    windows.insert(node.into(), w);
                }
            }
        }
    }
    let mut windows: Vec<(Box<str>, WindowAccumulator)> = windows.into_iter().collect();
    windows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    prove_windows(&txn, params, windows, stored)
}

/// Each node's proof from its finished window and its chain state (carry, previous proof)
/// as `txn` holds it (its account row, or its record before it has one); nodes in `stored`
/// and unknown nodes are skipped. `windows` must be in node id order, without repeats.
fn prove_windows(
    txn: &redb::ReadTransaction,
    params: &EpochParams,
    windows: Vec<(Box<str>, WindowAccumulator)>,
    stored: &HashSet<String>,
) -> StoreResult<Vec<NodeEpochOutput>> {
    let tables = super::accounts::read_tables(txn)?;
    // Account values fetched once each: the nodes come in id order, their indexes in none.
    let mut accounts = super::accounts::AccountReads::new(&tables.accounts);
    let mut outputs = Vec::with_capacity(windows.len());
    // The nodes' indexes walked alongside the windows, both in id order: one step of a
    // range per node instead of a B-tree lookup each (a tenth of a 100k close).
    let mut index = match (windows.first(), windows.last()) {
        (Some(first), Some(last)) => Some(tables.index.range::<&str>(&*first.0..=&*last.0)?),
        _ => None,
    };
    let mut next_index: Option<(redb::AccessGuard<'_, &'static str>, u32)> = None;
    for (node_id, window) in windows {
        if stored.contains(&*node_id) {
            continue;
        }
        let node_index = loop {
            if next_index.is_none() {
                next_index = match index.as_mut().and_then(|i| i.next()) {
                    Some(entry) => {
                        let (k, v) = entry?;
                        let i = v.value();
                        Some((k, i))
                    }
                    None => None,
                };
            }
            match &next_index {
                None => break None,
                Some((id, i)) => match id.value().cmp(&*node_id) {
                    std::cmp::Ordering::Less => next_index = None,
                    std::cmp::Ordering::Equal => break Some(*i),
                    std::cmp::Ordering::Greater => break None,
                },
            }
        };
        let Some(node_index) = node_index else {
            continue; // heartbeats of an unknown node prove nothing
        };
        let (carry, last_proof) = match accounts.get(node_index)? {
            Some(a) => (a.credit_carry, a.last_proof),
            None => {
                let Some(node) = super::queries::node_record(&tables.nodes, &node_id)? else {
                    continue;
                };
                (node.credit_carry, node.last_proof)
            }
        };
        outputs.extend(
            prove_summary(
                params,
                node_id.into(),
                window.finish(params),
                carry,
                last_proof.map(|(_, h)| h),
            )
            .map(|o| NodeEpochOutput {
                node_index,
                prev_epoch: last_proof.map(|(e, _)| e),
                ..o
            }),
        );
    }
    Ok(outputs)
}

/// Every new proof of an epoch whose heartbeats were received in `[from, to)`, computed
/// from read snapshots on [`SCAN_PARTS`] threads (the window's heartbeats can no longer
/// change, and only the closer changes a node's chain state, so every snapshot agrees).
/// Nodes in `stored` are skipped (a resumed close). Returns proofs without paths, in
/// `node_id` order.
pub fn epoch_proofs(
    db: &Database,
    params: &EpochParams,
    from: Micros,
    to: Micros,
    stored: &HashSet<String>,
) -> StoreResult<Vec<NodeEpochOutput>> {
    let mut outputs = prove_on_threads((0..SCAN_PARTS).collect(), |part| {
        prove_part(db, params, (from, to), stored, part)
    })?;
    outputs.sort_unstable_by(|a, b| a.proof.node_id.cmp(&b.proof.node_id));
    Ok(outputs)
}

/// `prove` of each part, the first on this thread and the others on threads of their
/// own; their outputs in the order of the parts.
fn prove_on_threads<P: Send>(
    parts: Vec<P>,
    prove: impl Fn(P) -> StoreResult<Vec<NodeEpochOutput>> + Sync,
) -> StoreResult<Vec<NodeEpochOutput>> {
    let results: Vec<StoreResult<Vec<NodeEpochOutput>>> = std::thread::scope(|s| {
        let prove = &prove;
        let mut parts = parts.into_iter();
        let first = parts.next();
        let others: Vec<_> = parts.map(|part| s.spawn(move || prove(part))).collect();
        let mut results: Vec<_> = first.into_iter().map(prove).collect();
        results.extend(
            others
                .into_iter()
                .map(|h| h.join().expect("proof computation panicked")),
        );
        results
    });
    let mut outputs = Vec::new();
    for r in results {
        outputs.extend(r?);
    }
    Ok(outputs)
}

/// The new proofs of an epoch from windows accumulated as its heartbeats committed
/// (`accumulators`), in node id order (`windows` is): what [`epoch_proofs`] computes by
/// scanning, without reading a heartbeat.
pub fn epoch_proofs_from_windows(
    db: &Database,
    params: &EpochParams,
    mut windows: Vec<(Box<str>, WindowAccumulator)>,
) -> StoreResult<Vec<NodeEpochOutput>> {
    // On SCAN_PARTS threads, each a contiguous run of node ids, so the outputs stay in
    // order; each reads its own snapshot (only the closer changes a node's chain state,
    // so they agree). Small epochs are not worth the threads.
    let per = windows
        .len()
        .div_ceil(SCAN_PARTS as usize)
        .max(PARALLEL_MIN_NODES);
    let mut parts = Vec::new();
    while windows.len() > per {
        let rest = windows.split_off(per);
        parts.push(std::mem::replace(&mut windows, rest));
    }
    parts.push(windows);
    let none = HashSet::new();
    prove_on_threads(parts, |part| {
        prove_windows(&db.begin_read()?, params, part, &none)
    })
}

/// Accumulated windows are proved on one thread below this many nodes.
const PARALLEL_MIN_NODES: usize = 512;

/// The proofs of `epoch` already stored (an interrupted close): node id, position in the
/// epoch, proof hash.
pub fn stored_leaves(db: &Database, epoch: u64) -> StoreResult<Vec<(String, u64, Hash)>> {
    let txn = db.begin_read()?;
    let rows = txn.open_table(EPOCH_ROWS)?;
    let ids = txn.open_table(NODE_IDS)?;
    epoch_rows(&rows, epoch)?
        .into_iter()
        .map(|(position, row)| Ok((node_id_of(&ids, row.node_index)?, position, row.proof_hash)))
        .collect()
}

/// One proof to store, with the node's carry after it, its index and the epoch of the
/// proof it links to.
pub struct ProofWrite {
    pub proof: Proof,
    pub credit_carry: Decimal,
    pub node_index: u32,
    pub prev_epoch: Option<u64>,
}

/// Proofs at consecutive positions of an epoch, from `position` on, stored as one value.
pub struct ChunkWrite {
    pub position: u64,
    pub items: Vec<ProofWrite>,
}

impl Batch<'_> {
    /// Stores runs of one epoch's proofs, appended to the open pack (the table's last
    /// value, `epoch_packs`) while it has room, then to new packs; each pack is written
    /// once per call. Rows are stored in position order; a run already stored is skipped
    /// (a resumed close). The nodes' totals follow when the epoch is settled (`settle`):
    /// this writes no node, ledger or account row.
    ///
    /// Stops once `budget` has passed (the writer is what heartbeats wait for), after at
    /// least one chunk. Returns `(chunks consumed, proofs written)`: the caller sends the
    /// rest again.
    pub fn write_epoch_chunks(
        &mut self,
        epoch: u64,
        chunks: &[ChunkWrite],
        budget: std::time::Duration,
    ) -> StoreResult<(usize, usize)> {
        let started = std::time::Instant::now();
        let mut table = self.txn.open_table(EPOCH_ROWS)?;
        let mut open = OpenPack::read(&table, epoch)?;
        let mut written = 0;
        let mut consumed = chunks.len();
        for (i, chunk) in chunks.iter().enumerate() {
            if i > 0 && started.elapsed() >= budget {
                consumed = i;
                break;
            }
            written += open.append(&mut table, epoch, chunk)?;
        }
        open.store(&mut table)?;
        drop(table);
        if written > 0 {
            let mut counters = self.txn.open_table(COUNTERS)?;
            let current = counters
                .get(PROOFS_COUNTER)?
                .map(|v| v.value())
                .unwrap_or(0);
            counters.insert(PROOFS_COUNTER, current + written as u64)?;
        }
        Ok((consumed, written))
    }
}

/// The pack being filled, held while a writer job appends to it.
struct OpenPack {
    /// Its key: (epoch, node id) of its first row; None until it has one.
    key: Option<(u64, String)>,
    runs: Vec<Run>,
    /// Whether it holds rows not stored yet.
    changed: bool,
    /// Where the epoch's stored rows end (the next position to store).
    stored_until: u64,
}

impl OpenPack {
    /// The table's last value when it is a pack (full or not: a full one takes nothing
    /// more), and where `epoch`'s stored rows end.
    fn read(
        table: &impl ReadableTable<(u64, &'static str), &'static [u8]>,
        epoch: u64,
    ) -> StoreResult<Self> {
        let mut open = OpenPack {
            key: None,
            runs: Vec::new(),
            changed: false,
            stored_until: 0,
        };
        let Some((k, v)) = table.last()? else {
            return Ok(open);
        };
        let (key_epoch, key_first) = k.value();
        if key_epoch > epoch {
            return Err(StoreError::corrupt(format!(
                "proofs of epoch {key_epoch} are stored before those of epoch {epoch}"
            )));
        }
        // The last value holds the end of the epoch's rows if any are stored (a chunk of
        // an earlier build's close, or a pack); if it holds none, its key's epoch is an
        // earlier one and so is every other value's: none are stored.
        open.stored_until = stored_end::<ProofRow>(key_epoch, v.value(), epoch)?.unwrap_or(0);
        if is_pack(v.value()) {
            open.key = Some((key_epoch, key_first.to_string()));
            open.runs = decode_pack::<ProofRow>(v.value())?;
        }
        Ok(open)
    }

    /// Appends a run of proofs, storing each pack it fills; returns the proofs taken (0
    /// when they are stored already).
    fn append(
        &mut self,
        table: &mut redb::Table<(u64, &'static str), &'static [u8]>,
        epoch: u64,
        chunk: &ChunkWrite,
    ) -> StoreResult<usize> {
        let end = chunk.position + chunk.items.len() as u64;
        if chunk.items.is_empty() || end <= self.stored_until {
            return Ok(0);
        }
        if chunk.position != self.stored_until {
            return Err(StoreError::corrupt(format!(
                "epoch {epoch}: proofs from position {} sent to be stored, but its stored rows end at {}",
                chunk.position, self.stored_until
            )));
        }
        let stored = stored_rows(epoch, chunk)?;
        let too_many = || StoreError::corrupt("an epoch of more than 4 billion proofs");
        let mut done = 0;
        while done < chunk.items.len() {
            if self.key.is_none() {
                self.key = Some((epoch, chunk.items[done].proof.node_id.clone()));
            }
            let position = u32::try_from(chunk.position + done as u64).map_err(|_| too_many())?;
            let taken = append::<ProofRow>(
                &mut self.runs,
                epoch,
                position,
                &stored[done * STORED_ROW_LEN..],
            );
            done += taken;
            self.changed |= taken > 0;
            if done < chunk.items.len() {
                // Full: stored now, and the next rows start another.
                self.store(table)?;
                self.key = None;
                self.runs.clear();
            }
        }
        self.stored_until = end;
        Ok(done)
    }

    /// Writes the pack if it holds rows not stored yet.
    fn store(
        &mut self,
        table: &mut redb::Table<(u64, &'static str), &'static [u8]>,
    ) -> StoreResult<()> {
        if let (true, Some((epoch, first))) = (self.changed, &self.key) {
            table.insert((*epoch, first.as_str()), encode_pack(&self.runs).as_slice())?;
        }
        self.changed = false;
        Ok(())
    }
}

/// The stored form of a run of proofs of `epoch`, row after row.
fn stored_rows(epoch: u64, chunk: &ChunkWrite) -> StoreResult<Vec<u8>> {
    let mut stored = Vec::with_capacity(chunk.items.len() * STORED_ROW_LEN);
    for item in &chunk.items {
        let p = &item.proof;
        if p.epoch != epoch {
            return Err(StoreError::corrupt(format!(
                "a proof for epoch {} in a chunk of epoch {epoch}",
                p.epoch
            )));
        }
        let prev_delta = match item.prev_epoch {
            None => 0,
            Some(e) => epoch
                .checked_sub(e)
                .filter(|d| *d > 0)
                .and_then(|d| u32::try_from(d).ok())
                .ok_or_else(|| {
                    StoreError::corrupt(format!(
                        "node {}'s previous proof (epoch {e}) is not before epoch {epoch}",
                        p.node_id
                    ))
                })?,
        };
        ProofRow::of_proof(p, item.node_index, prev_delta, item.credit_carry)?
            .encode_stored_into(&mut stored);
    }
    Ok(stored)
}

#[cfg(test)]
mod tests {
    use super::super::codec::encode;
    use super::*;
    use crate::domain::heartbeat::StoredHeartbeat;
    use crate::domain::merkle::leaf_hash;

    /// The window of a node nobody registered proves nothing, wherever its id falls among
    /// the known ones (the nodes' indexes are walked alongside the windows).
    #[test]
    fn heartbeats_of_unknown_nodes_between_known_ones_prove_nothing() {
        use crate::store::seed;
        const S: u64 = 1_000_000;
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = crate::store::db::open_with_clock(dir.path(), 100).unwrap();
        let params = EpochParams {
            epoch: 10,
            length_us: 300 * S,
            timeout_us: 90 * S,
            reward_per_hour: Decimal::new(5, 2),
        };
        let (start, end) = crate::domain::poot::epoch_window(10, params.length_us);
        seed::in_transaction(&store, &clock, |b| {
            seed::put_nodes(b, [1, 3, 4].map(|i| seed::node("node_", i, 0))).unwrap();
            for i in 0..7 {
                let id = seed::node_id("node_", i);
                b.insert_heartbeat(start + S + i as u64, &id, &seed::heartbeat(&id, 1))
                    .unwrap();
            }
        });
        let db = store.db.current().unwrap();
        let scanned = epoch_proofs(
            &db,
            &params,
            start - params.timeout_us,
            end,
            &HashSet::new(),
        )
        .unwrap();
        let ids: Vec<&str> = scanned.iter().map(|o| o.proof.node_id.as_str()).collect();
        let known: Vec<String> = [1, 3, 4].map(|i| seed::node_id("node_", i)).into();
        assert_eq!(ids, known);
    }

    #[test]
    fn the_leaf_read_from_the_bytes_equals_the_leaf_of_the_decoded_heartbeat() {
        let hb = StoredHeartbeat {
            seq: 300,
            canonical: "lucid-hb-v1|node_x|300|2026-01-01T00:00:00Z|1|2|0.5|3".into(),
            signature: (0..64).collect(),
            sessions_active: 1,
            bytes_relayed: 2,
            cpu_load: 0.5,
            mem_used_mb: 3,
        };
        // The full (bincode) form, as rows written before the compact one are...
        assert_eq!(
            heartbeat_leaf("node_x", 7, &encode(&hb)).unwrap(),
            leaf_hash(&hb.leaf_data())
        );
        // ...and the compact form give the same leaf.
        let compact = super::super::codec::encode_heartbeat("node_x", 7, &hb);
        assert_eq!(compact[0], crate::domain::heartbeat::compact::TAG);
        assert_eq!(
            heartbeat_leaf("node_x", 7, &compact).unwrap(),
            leaf_hash(&hb.leaf_data())
        );
        assert!(heartbeat_leaf("node_x", 7, &[0xff]).is_err());
        assert!(heartbeat_leaf("node_x", 7, &[0x01]).is_err());
    }
}
