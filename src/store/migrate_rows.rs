//! Schema 2 -> 3: every proof moves from its own B-tree row (`proofs`, 520-750 bytes with
//! its inclusion path) to the 96-byte rows of its epoch (`epoch_rows`), and every node gets
//! the index its rows name it by. Runs inside the start-up transaction: all or nothing.
//!
//! The old rows are keyed `(node_id, epoch)`, so each node's chain comes in order (its
//! previous-proof links and carries are checked and computed on the way); they are
//! regrouped by epoch through a scratch table, which bounds memory by one epoch's proofs.

use std::collections::BTreeMap;

use redb::{ReadableTable, TableDefinition};
use rust_decimal::Decimal;

use super::codec::{decode, encode};
use super::epoch_rows::{encode_chunk, ProofRow, ROW_LEN};
use super::error::{StoreError, StoreResult};
use super::tables::{EPOCHS, EPOCH_ROWS, NODES, NODE_INDEX, POOT_CLOSED_UNTIL_KEY};
use super::Batch;
use crate::domain::credits::credit_epoch;
use crate::domain::merkle::{
    block_roots, leaf_hash, position_from_path, root, Hash, Side, BLOCK_LEAVES,
};
use crate::domain::node::Node;
use crate::domain::poot::epoch_window;
use crate::domain::proof::{Epoch, Proof};

/// Schema 2's proofs: (node_id, epoch) -> Proof (bincode).
const LEGACY_PROOFS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("proofs");
/// (epoch, node_id) -> position (u32 LE, `u32::MAX` when it is the rank) and the row.
const SCRATCH: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("migration_3_proof_rows");

/// A node as schemas 1 and 2 stored it (schema 3 adds the pending credits).
#[derive(serde::Deserialize)]
struct NodeV2 {
    node_id: String,
    name: String,
    operator_id: String,
    public_key: [u8; 32],
    payout_address: Option<String>,
    region: Option<String>,
    pool_id: Option<String>,
    status: crate::domain::node::NodeStatus,
    registered_at_us: u64,
    last_heartbeat_at_us: Option<u64>,
    balance_usdt: Decimal,
    operational_seconds_total: u64,
    token_generation: u32,
    last_seq: Option<u64>,
    credit_carry: Decimal,
    last_proof: Option<(u64, [u8; 32])>,
}

impl From<NodeV2> for Node {
    fn from(n: NodeV2) -> Self {
        Node {
            node_id: n.node_id,
            name: n.name,
            operator_id: n.operator_id,
            public_key: n.public_key,
            payout_address: n.payout_address,
            region: n.region,
            pool_id: n.pool_id,
            status: n.status,
            registered_at_us: n.registered_at_us,
            last_heartbeat_at_us: n.last_heartbeat_at_us,
            balance_usdt: n.balance_usdt,
            operational_seconds_total: n.operational_seconds_total,
            token_generation: n.token_generation,
            last_seq: n.last_seq,
            credit_carry: n.credit_carry,
            last_proof: n.last_proof,
            // Every credit of an earlier schema is in the ledger already.
            credits_pending_usdt: Decimal::ZERO,
            credits_pending_day: 0,
        }
    }
}

/// Rewrites every node record in schema 3's form. Runs before the other steps of an
/// upgrade from schema 1 or 2 (they read nodes).
pub(super) fn reencode_nodes(batch: &mut Batch<'_>) -> StoreResult<u64> {
    let mut nodes = batch.txn.open_table(NODES)?;
    let mut rewritten: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in nodes.iter()? {
        let (k, v) = entry?;
        let node: Node = decode::<NodeV2>(v.value())?.into();
        rewritten.push((k.value().to_string(), encode(&node)));
    }
    for (id, bytes) in &rewritten {
        nodes.insert(id.as_str(), bytes.as_slice())?;
    }
    Ok(rewritten.len() as u64)
}

/// What the migration did.
#[derive(Debug, Default)]
pub struct Migrated {
    pub nodes: u64,
    pub proofs: u64,
    pub epochs: u64,
}

pub(super) fn migrate_2_to_3(batch: &mut Batch<'_>) -> StoreResult<Migrated> {
    let mut done = Migrated::default();
    let ids: Vec<String> = {
        let nodes = batch.txn.open_table(NODES)?;
        let mut ids = Vec::new();
        for entry in nodes.iter()? {
            ids.push(entry?.0.value().to_string());
        }
        ids
    };
    for id in &ids {
        batch.index_node(id)?;
    }
    done.nodes = ids.len() as u64;

    let records: BTreeMap<u64, Epoch> = {
        let t = batch.txn.open_table(EPOCHS)?;
        let mut out = BTreeMap::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            out.insert(k.value(), decode::<Epoch>(v.value())?);
        }
        out
    };
    let closed_until = batch.meta_u64(POOT_CLOSED_UNTIL_KEY)?.unwrap_or(0);
    let being_closed = |r: &Epoch| epoch_window(r.epoch, r.length_us).1 > closed_until;

    // Pass 1: each node's chain, in order, into the scratch table by epoch.
    {
        let legacy = batch.txn.open_table(LEGACY_PROOFS)?;
        let index = batch.txn.open_table(NODE_INDEX)?;
        let mut scratch = batch.txn.open_table(SCRATCH)?;
        // (node, epoch, proof hash, carry after) of the previous proof seen
        let mut prev: Option<(String, u64, Hash, Decimal)> = None;
        for entry in legacy.iter()? {
            let (k, v) = entry?;
            let (node_id, epoch) = k.value();
            let p: Proof = decode(v.value())?;
            let broken = |why: &str| {
                StoreError::corrupt(format!(
                    "migrating to schema 3: the proof of {node_id} for epoch {epoch} {why}; run `verify` with the previous release"
                ))
            };
            let record = records
                .get(&epoch)
                .ok_or_else(|| broken("has no epoch record"))?;
            let (prev_delta, carry) = match &prev {
                Some((n, e, h, c)) if n == node_id => {
                    if p.prev_proof_hash != Some(*h) {
                        return Err(broken("does not link to the node's previous proof"));
                    }
                    let delta = u32::try_from(epoch - e)
                        .map_err(|_| broken("is too far from its previous proof"))?;
                    (delta, *c)
                }
                _ => {
                    if p.prev_proof_hash.is_some() {
                        return Err(broken("links to a proof that is not stored"));
                    }
                    (0, Decimal::ZERO)
                }
            };
            let carry_after =
                credit_epoch(p.operational_seconds, record.reward_per_hour, carry).carry;
            let node_index = index
                .get(node_id)?
                .map(|v| v.value())
                .ok_or_else(|| broken("names a node that does not exist"))?;
            let row = ProofRow::of_proof(&p, node_index, prev_delta, carry_after)?;
            // An epoch whose close was interrupted holds some of its proofs only: their
            // places in the tree come from their paths.
            let position = if being_closed(record) {
                let path: Vec<(Side, Hash)> = p
                    .inclusion_path
                    .iter()
                    .map(|(l, h)| (if *l { Side::Left } else { Side::Right }, *h))
                    .collect();
                let at = position_from_path(record.proof_count as usize, &path)
                    .ok_or_else(|| broken("has a path that fits no place in its epoch"))?;
                u32::try_from(at).map_err(|_| broken("is too far into its epoch"))?
            } else {
                u32::MAX
            };
            let mut value = Vec::with_capacity(4 + ROW_LEN);
            value.extend_from_slice(&position.to_le_bytes());
            row.encode_into(&mut value);
            scratch.insert((epoch, node_id), value.as_slice())?;
            prev = Some((node_id.to_string(), epoch, p.proof_hash, carry_after));
            done.proofs += 1;
        }
    }

    // Pass 2: epoch by epoch, the rows in leaf order, checked against the signed root.
    for (epoch, record) in &records {
        let mut rows: Vec<(u32, String, ProofRow)> = Vec::new();
        {
            let scratch = batch.txn.open_table(SCRATCH)?;
            for entry in scratch.range((*epoch, "")..(*epoch + 1, ""))? {
                let (k, v) = entry?;
                let v = v.value();
                let position = u32::from_le_bytes(v[..4].try_into().expect("4 bytes"));
                rows.push((position, k.value().1.to_string(), ProofRow::decode(&v[4..])));
            }
        }
        if rows.is_empty() {
            continue;
        }
        done.epochs += 1;
        let wrong = |why: &str| {
            StoreError::corrupt(format!(
                "migrating to schema 3: epoch {epoch} {why}; run `verify` with the previous release"
            ))
        };
        let mut chunks: Vec<(u32, String, Vec<ProofRow>)> = Vec::new();
        if being_closed(record) {
            rows.sort_by_key(|r| r.0);
            for (position, node_id, row) in rows {
                match chunks.last_mut() {
                    Some((start, _, run))
                        if *start as usize + run.len() == position as usize
                            && !(position as usize).is_multiple_of(BLOCK_LEAVES) =>
                    {
                        run.push(row)
                    }
                    _ => chunks.push((position, node_id, vec![row])),
                }
            }
        } else {
            // Rows came in node_id order: their rank is their place in the tree.
            if rows.len() as u64 != record.proof_count {
                return Err(wrong(&format!(
                    "has {} proofs stored and {} in its record",
                    rows.len(),
                    record.proof_count
                )));
            }
            let leaves: Vec<Hash> = rows.iter().map(|r| leaf_hash(&r.2.proof_hash)).collect();
            if root(&leaves) != record.root {
                return Err(wrong("has proofs whose root is not its signed root"));
            }
            batch.put_epoch_blocks(*epoch, &block_roots(&leaves))?;
            for (start, block) in rows.chunks(BLOCK_LEAVES).enumerate() {
                chunks.push((
                    (start * BLOCK_LEAVES) as u32,
                    block[0].1.clone(),
                    block.iter().map(|r| r.2).collect(),
                ));
            }
        }
        let mut t = batch.txn.open_table(EPOCH_ROWS)?;
        for (position, first, run) in chunks {
            t.insert(
                (*epoch, first.as_str()),
                encode_chunk(position, &run).as_slice(),
            )?;
        }
    }
    batch.txn.delete_table(SCRATCH)?;
    batch.txn.delete_table(LEGACY_PROOFS)?;
    Ok(done)
}
