//! Storage side of closing a PoOT epoch in chunks (see `app::poot`).
//!
//! - [`epoch_proofs`] computes an epoch's proofs from read transactions, outside the
//!   writer: once an epoch is finished its heartbeats cannot change (receive stamps are
//!   handed out inside the writer and strictly increase).
//! - [`Batch::write_epoch_proofs`] writes one chunk of proofs with their node updates and
//!   ledger credits. A proof that is already stored is skipped, and a proof, its credit
//!   and its node update commit together: a crash between chunks loses nothing and
//!   credits nothing twice.

use std::collections::HashMap;

use redb::{Database, ReadableDatabase, ReadableTable};
use rust_decimal::Decimal;
use serde::Deserialize;

use super::batch::write_ledger_entry;
use super::codec::{decode, encode};
use super::error::{StoreError, StoreResult};
use super::tables::{COUNTERS, LEDGER, LEDGER_SEQ_KEY, NODES, PROOFS, PROOFS_COUNTER};
use super::Batch;
use crate::clock::Micros;
use crate::domain::ledger::{EntryKind, LedgerEntry};
use crate::domain::merkle::{leaf_hash_parts, Hash};
use crate::domain::node::Node;
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
        let hb = super::codec::decode_heartbeat(node_id, received_us, bytes)?;
        return Ok(leaf_hash_parts(&[hb.canonical.as_bytes(), &hb.signature]));
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
/// and computes its proof. Returns the proofs already stored (with `resume`) and the new
/// ones, both in `node_id` order.
fn prove_part(
    db: &Database,
    params: &EpochParams,
    (from, to): (Micros, Micros),
    resume: bool,
    part: u64,
) -> StoreResult<(Vec<Proof>, Vec<NodeEpochOutput>)> {
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
    let nodes = txn.open_table(NODES)?;
    let proofs = txn.open_table(PROOFS)?;
    let mut stored = Vec::new();
    let mut outputs = Vec::with_capacity(windows.len());
    for (node_id, window) in windows {
        if resume {
            if let Some(v) = proofs.get((&*node_id, params.epoch))? {
                stored.push(decode::<Proof>(v.value())?);
                continue;
            }
        }
        let Some(node) = super::queries::node(&nodes, &node_id)? else {
            continue; // heartbeats of an unknown node prove nothing
        };
        outputs.extend(prove_summary(
            params,
            node_id.into(),
            window.finish(params),
            node.credit_carry,
            node.last_proof.map(|(_, h)| h),
        ));
    }
    Ok((stored, outputs))
}

/// Every proof of an epoch whose heartbeats were received in `[from, to)`, computed from
/// read snapshots on [`SCAN_PARTS`] threads (the window's heartbeats can no longer
/// change, and only the closer changes a node's chain state, so every snapshot agrees).
/// With `resume`, proofs already stored are returned as they are instead of recomputed.
/// Returns (stored proofs, new proofs without paths), each in `node_id` order.
pub fn epoch_proofs(
    db: &Database,
    params: &EpochParams,
    from: Micros,
    to: Micros,
    resume: bool,
) -> StoreResult<(Vec<Proof>, Vec<NodeEpochOutput>)> {
    let results: Vec<StoreResult<(Vec<Proof>, Vec<NodeEpochOutput>)>> = std::thread::scope(|s| {
        let others: Vec<_> = (1..SCAN_PARTS)
            .map(|part| s.spawn(move || prove_part(db, params, (from, to), resume, part)))
            .collect();
        let mut results = vec![prove_part(db, params, (from, to), resume, 0)];
        results.extend(
            others
                .into_iter()
                .map(|h| h.join().expect("proof computation panicked")),
        );
        results
    });
    let mut stored = Vec::new();
    let mut outputs = Vec::new();
    for r in results {
        let (s, o) = r?;
        stored.extend(s);
        outputs.extend(o);
    }
    stored.sort_unstable_by(|a, b| a.node_id.cmp(&b.node_id));
    outputs.sort_unstable_by(|a, b| a.proof.node_id.cmp(&b.proof.node_id));
    Ok((stored, outputs))
}

/// One proof to store, with the node's carry after it.
pub struct ProofWrite {
    pub proof: Proof,
    pub credit_carry: Decimal,
}

/// bincode (standard config) varint of a u64, as `codec::encode` writes it.
fn put_varint(out: &mut Vec<u8>, v: u64) {
    if v <= 250 {
        out.push(v as u8);
    } else if v <= u16::MAX as u64 {
        out.push(251);
        out.extend_from_slice(&(v as u16).to_le_bytes());
    } else if v <= u32::MAX as u64 {
        out.push(252);
        out.extend_from_slice(&(v as u32).to_le_bytes());
    } else {
        out.push(253);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// `codec::encode(proof)`, byte for byte, written directly: through serde every hash
/// byte is a separate call, which made encoding the largest single cost of closing an
/// epoch. A test holds the two equal.
pub(crate) fn encode_proof(p: &Proof) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + p.node_id.len() + 33 * p.inclusion_path.len());
    put_varint(&mut out, p.node_id.len() as u64);
    out.extend_from_slice(p.node_id.as_bytes());
    put_varint(&mut out, p.epoch);
    put_varint(&mut out, p.window_start_us);
    put_varint(&mut out, p.window_end_us);
    put_varint(&mut out, p.operational_seconds);
    put_varint(&mut out, p.heartbeat_count);
    out.extend_from_slice(&p.heartbeats_root);
    out.extend_from_slice(&encode(&p.credits_usdt));
    match &p.prev_proof_hash {
        None => out.push(0),
        Some(h) => {
            out.push(1);
            out.extend_from_slice(h);
        }
    }
    out.extend_from_slice(&p.proof_hash);
    put_varint(&mut out, p.inclusion_path.len() as u64);
    for (left, h) in &p.inclusion_path {
        out.push(u8::from(*left));
        out.extend_from_slice(h);
    }
    out
}

impl Batch<'_> {
    /// Stores a chunk of one epoch's proofs: each proof with its ledger credit and its
    /// node's new carry, last proof and operational total. Proofs already stored are
    /// skipped (a resumed close). Checks every node first and writes only then, so a
    /// refused chunk writes nothing.
    ///
    /// Stops writing once `budget` has passed (the writer is what heartbeats wait for),
    /// after at least one proof. Returns `(items consumed, proofs written)`: the caller
    /// sends the rest again.
    pub fn write_epoch_proofs(
        &mut self,
        epoch: u64,
        items: &[ProofWrite],
        budget: std::time::Duration,
    ) -> StoreResult<(usize, usize)> {
        let started = std::time::Instant::now();
        // (index in `items`, item, its node as stored)
        let mut todo: Vec<(usize, &ProofWrite, Node)> = Vec::with_capacity(items.len());
        {
            let proofs = self.txn.open_table(PROOFS)?;
            let nodes = self.txn.open_table(NODES)?;
            for (index, item) in items.iter().enumerate() {
                let p = &item.proof;
                if p.epoch != epoch {
                    return Err(StoreError::corrupt(format!(
                        "a proof for epoch {} in a chunk of epoch {epoch}",
                        p.epoch
                    )));
                }
                if proofs.get((p.node_id.as_str(), epoch))?.is_some() {
                    continue;
                }
                let node = super::queries::node(&nodes, &p.node_id)?.ok_or_else(|| {
                    StoreError::corrupt(format!("node {} of a proof is missing", p.node_id))
                })?;
                if node.last_proof.map(|(_, h)| h) != p.prev_proof_hash {
                    return Err(StoreError::corrupt(format!(
                        "node {}'s proof chain moved while epoch {epoch} was being closed",
                        p.node_id
                    )));
                }
                todo.push((index, item, node));
            }
        }
        if todo.is_empty() {
            return Ok((items.len(), 0));
        }
        let now = self.now_us();
        let mut seq = self.meta_u64(LEDGER_SEQ_KEY)?.unwrap_or(0);
        let mut consumed = items.len();
        let mut count = 0;
        let mirrored = self.mirror.is_some();
        let mut written: Vec<(&ProofWrite, Option<LedgerEntry>, Node)> = Vec::new();
        {
            let mut proofs = self.txn.open_table(PROOFS)?;
            let mut nodes = self.txn.open_table(NODES)?;
            let mut ledger = self.txn.open_table(LEDGER)?;
            for (index, item, mut node) in todo {
                if count > 0 && started.elapsed() >= budget {
                    consumed = index;
                    break;
                }
                count += 1;
                let p = &item.proof;
                node.credit_carry = item.credit_carry;
                node.last_proof = Some((epoch, p.proof_hash));
                node.operational_seconds_total += p.operational_seconds;
                let mut entry = None;
                if p.credits_usdt > Decimal::ZERO {
                    seq += 1;
                    entry = Some(write_ledger_entry(
                        &mut ledger,
                        &mut node,
                        (seq, now),
                        EntryKind::Credit,
                        p.credits_usdt,
                        format!("epoch:{epoch}"),
                    )?);
                }
                proofs.insert((p.node_id.as_str(), epoch), encode_proof(p).as_slice())?;
                // Written around `put_node`: the status (which its index and counters
                // follow) never changes here.
                nodes.insert(node.node_id.as_str(), encode(&node).as_slice())?;
                if mirrored {
                    written.push((item, entry, node));
                }
            }
        }
        self.set_meta_u64(LEDGER_SEQ_KEY, seq)?;
        {
            let mut counters = self.txn.open_table(COUNTERS)?;
            let current = counters
                .get(PROOFS_COUNTER)?
                .map(|v| v.value())
                .unwrap_or(0);
            counters.insert(PROOFS_COUNTER, current + count as u64)?;
        }
        // The mirror's outbox, in the order a node-by-node close wrote it.
        for (item, entry, node) in written {
            if let Some(e) = entry {
                self.mirror_ledger(&e)?;
            }
            self.mirror_proof(&item.proof)?;
            self.mirror_node(&node)?;
        }
        Ok((consumed, count))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::heartbeat::StoredHeartbeat;
    use crate::domain::merkle::leaf_hash;
    use proptest::prelude::*;

    fn hash(seed: u8) -> Hash {
        [seed; 32]
    }

    proptest! {
        #[test]
        fn the_direct_proof_encoding_equals_bincode(
            node in "[a-z_0-9]{0,40}",
            epoch in any::<u64>(),
            start in any::<u64>(),
            secs in prop_oneof![0u64..300, any::<u64>()],
            count in prop_oneof![0u64..300, 250u64..70_000, any::<u64>()],
            micros in 0i64..10_000_000_000,
            prev in any::<Option<u8>>(),
            path in proptest::collection::vec((any::<bool>(), any::<u8>()), 0..20),
        ) {
            let p = Proof {
                node_id: node,
                epoch,
                window_start_us: start,
                window_end_us: start / 2 + 70_000,
                operational_seconds: secs,
                heartbeat_count: count,
                heartbeats_root: hash(1),
                credits_usdt: Decimal::new(micros, 6),
                prev_proof_hash: prev.map(hash),
                proof_hash: hash(2),
                inclusion_path: path.into_iter().map(|(l, s)| (l, hash(s))).collect(),
            };
            prop_assert_eq!(encode_proof(&p), encode(&p));
            prop_assert_eq!(decode::<Proof>(&encode_proof(&p)).unwrap(), p);
        }
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
