//! Payouts created by a payout run, stored as chunks (schema 5).
//!
//! Why: a run used to write six rows per payout (the payout, its indexes by node and by
//! state, two ledger entries beside the node's earlier ones, an audit event). Four of them
//! land on a different B-tree page per node, and a run over 100k due balances took
//! 1.7–2.5 s of writer time and dirtied a page or two per payout (`cargo bench --bench
//! epoch_close`). Here a run's payouts go, with the ledger entries each wrote, into values
//! of [`PAYOUTS_PER_VALUE`] appended in id order (PAYOUT_CHUNKS, keyed by the stamp of the
//! first payout id), and each node's payouts are linked newest first: the node's latest
//! stamp in PAYOUT_HEADS (128 nodes to a value, by node index, like the account rows), each
//! payout the stamp of the one before.
//!
//! The rules every reader and writer keeps:
//! - A payout id made by [`new_time_ordered_id`] carries its stamp, so the value holding it
//!   is the last one keyed at or before that stamp.
//! - **A payout's row in PAYOUTS, when there is one, is its current state**: a chunked
//!   payout gets one when it first changes (submitted, confirmed, failed), and is indexed
//!   by state from then on. Until then it is pending, and OPEN_PAYOUT_CHUNKS counts, per
//!   value, the payouts still in that case: the pending ones are found there.
//! - A node's ledger is its LEDGER rows and the entries of its chunked payouts, in `seq`
//!   order; its payouts are those NODE_PAYOUTS lists (older runs) and its chain.
//!
//! [`new_time_ordered_id`]: crate::domain::ids::new_time_ordered_id

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::error::{StoreError, StoreResult};
use super::node_rows::{RowEdits, RowKind, NODES_PER_VALUE};
use crate::domain::ids::time_ordered_stamp;
use crate::domain::ledger::LedgerEntry;
use crate::domain::payout::Payout;

/// Payouts per stored value: ~15 KiB, so finding one payout by id decodes at most this
/// many, and a run of 100k payouts writes about 2,100 values.
pub const PAYOUTS_PER_VALUE: usize = 48;

/// One payout of a run as stored: the payout as created (pending) and what it wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkedPayout {
    pub payout: Payout,
    /// The ledger entries written with it: the day's pending credit, if any, then the debit.
    pub entries: Vec<LedgerEntry>,
    /// The stamp of the node's previous chunked payout; 0 when it has none (its older
    /// payouts, if any, are listed in NODE_PAYOUTS).
    pub prev: u64,
}

impl ChunkedPayout {
    pub fn stamp(&self) -> StoreResult<u64> {
        stamp_of(&self.payout.payout_id)
    }
}

fn stamp_of(payout_id: &str) -> StoreResult<u64> {
    time_ordered_stamp("payout", payout_id).ok_or_else(|| {
        StoreError::corrupt(format!("chunked payout {payout_id} has no time-ordered id"))
    })
}

/// Writes a run's payouts (in id order, all pending) as values of [`PAYOUTS_PER_VALUE`],
/// each counted open in OPEN_PAYOUT_CHUNKS. Returns the SHA-256 of the values in order
/// (the job's audit event carries it, and `verify` recomputes it: see [`digest`]).
pub fn write(
    chunks: &mut redb::Table<'_, u64, &'static [u8]>,
    open: &mut redb::Table<'_, u64, u64>,
    payouts: &[ChunkedPayout],
) -> StoreResult<[u8; 32]> {
    use sha2::Digest;
    let mut sha = sha2::Sha256::new();
    for value in payouts.chunks(PAYOUTS_PER_VALUE) {
        let key = value[0].stamp()?;
        let bytes = encode(&value);
        sha.update(&bytes);
        // Stamps are unique: a key already taken would lose the payouts stored under it.
        if chunks.insert(key, bytes.as_slice())?.is_some()
            || open.insert(key, value.len() as u64)?.is_some()
        {
            return Err(StoreError::corrupt(format!(
                "payouts are already stored under stamp {key}"
            )));
        }
    }
    Ok(sha.finalize().into())
}

/// The SHA-256 of the stored values of one job: those keyed from the stamp of its first
/// payout to that of its last (stamps only grow, so no other job's values lie between),
/// with how many payouts they hold.
pub fn digest(
    chunks: &impl ReadableTable<u64, &'static [u8]>,
    first_payout_id: &str,
    last_payout_id: &str,
) -> StoreResult<([u8; 32], usize)> {
    use sha2::Digest;
    let (Some(first), Some(last)) = (
        time_ordered_stamp("payout", first_payout_id),
        time_ordered_stamp("payout", last_payout_id),
    ) else {
        return Err(StoreError::corrupt(format!(
            "payouts {first_payout_id}..{last_payout_id} have no time-ordered ids"
        )));
    };
    let mut sha = sha2::Sha256::new();
    let mut count = 0;
    for entry in chunks.range(first..=last)? {
        let (_, v) = entry?;
        sha.update(v.value());
        count += decode::<Vec<ChunkedPayout>>(v.value())?.len();
    }
    Ok((sha.finalize().into(), count))
}

/// The stored value holding the chunked payout of `stamp`: its key and payouts.
fn value_holding(
    chunks: &impl ReadableTable<u64, &'static [u8]>,
    stamp: u64,
) -> StoreResult<Option<(u64, Vec<ChunkedPayout>)>> {
    let Some(entry) = chunks.range(..=stamp)?.next_back() else {
        return Ok(None);
    };
    let (k, v) = entry?;
    Ok(Some((k.value(), decode(v.value())?)))
}

/// The chunked payout `payout_id` as created, with the key of its value; None when no run
/// stored it (an older payout, or no payout at all).
pub fn find(
    chunks: &impl ReadableTable<u64, &'static [u8]>,
    payout_id: &str,
) -> StoreResult<Option<(u64, ChunkedPayout)>> {
    let Some(stamp) = time_ordered_stamp("payout", payout_id) else {
        return Ok(None);
    };
    let Some((key, value)) = value_holding(chunks, stamp)? else {
        return Ok(None);
    };
    Ok(value
        .into_iter()
        .find(|c| c.payout.payout_id == payout_id)
        .map(|c| (key, c)))
}

/// The payout `payout_id` in its current state: its PAYOUTS row, else as its run stored it.
pub fn lookup(
    payouts: &impl ReadableTable<&'static str, &'static [u8]>,
    chunks: &impl ReadableTable<u64, &'static [u8]>,
    payout_id: &str,
) -> StoreResult<Option<Payout>> {
    if let Some(v) = payouts.get(payout_id)? {
        return Ok(Some(decode(v.value())?));
    }
    Ok(find(chunks, payout_id)?.map(|(_, c)| c.payout))
}

/// A chunked payout's first change: the value holding it has one open payout fewer, and
/// true is returned (its PAYOUTS row, written next, now holds it and must be indexed by
/// state). False for any other payout. Called before its PAYOUTS row is written.
pub fn note_first_change(
    payouts: &impl ReadableTable<&'static str, &'static [u8]>,
    chunks: &impl ReadableTable<u64, &'static [u8]>,
    open: &mut redb::Table<'_, u64, u64>,
    payout_id: &str,
) -> StoreResult<bool> {
    if payouts.get(payout_id)?.is_some() {
        return Ok(false);
    }
    let Some((key, _)) = find(chunks, payout_id)? else {
        return Ok(false);
    };
    let left = open.get(key)?.map(|v| v.value()).unwrap_or(0);
    if left <= 1 {
        open.remove(key)?;
    } else {
        open.insert(key, left - 1)?;
    }
    Ok(true)
}

/// A node's chunked payouts as created, newest first, from the stamp of its latest.
pub fn chain(
    chunks: &impl ReadableTable<u64, &'static [u8]>,
    node_id: &str,
    mut stamp: u64,
) -> StoreResult<Vec<ChunkedPayout>> {
    let mut out: Vec<ChunkedPayout> = Vec::new();
    while stamp != 0 {
        let found = value_holding(chunks, stamp)?.and_then(|(_, value)| {
            value.into_iter().find(|c| {
                c.payout.node_id == node_id
                    && time_ordered_stamp("payout", &c.payout.payout_id) == Some(stamp)
            })
        });
        let Some(c) = found else {
            return Err(StoreError::corrupt(format!(
                "node {node_id}'s payout chain names stamp {stamp}, which holds none of its payouts"
            )));
        };
        // Each link points back in time; anything else is a loop.
        if c.prev >= stamp {
            return Err(StoreError::corrupt(format!(
                "node {node_id}'s payout chain does not go back in time at {stamp}"
            )));
        }
        stamp = c.prev;
        out.push(c);
    }
    Ok(out)
}

/// The payout heads' kind, for `node_rows`: a stamp of 8 bytes per node.
const HEAD: RowKind = RowKind {
    len: 8,
    what: "payout heads",
};

fn stamp_in(row: &[u8]) -> u64 {
    u64::from_le_bytes(row.try_into().expect("a head row is 8 bytes"))
}

/// The stamp of the latest chunked payout of node `node_index` (0: none).
pub fn head(heads: &impl ReadableTable<u32, &'static [u8]>, node_index: u32) -> StoreResult<u64> {
    match heads.get(node_index / NODES_PER_VALUE)? {
        Some(v) => Ok(stamp_in(HEAD.row_in(v.value(), node_index)?)),
        None => Ok(0),
    }
}

/// Heads changed by a run, written back once per value ([`HeadEdits::flush`]).
pub struct HeadEdits(RowEdits);

impl Default for HeadEdits {
    fn default() -> Self {
        Self(RowEdits::new(HEAD))
    }
}

impl HeadEdits {
    /// Makes `stamp` node `node_index`'s latest chunked payout; returns the one before
    /// (0: none).
    pub fn push(
        &mut self,
        heads: &impl ReadableTable<u32, &'static [u8]>,
        node_index: u32,
        stamp: u64,
    ) -> StoreResult<u64> {
        let row = self.0.row_mut(heads, node_index)?;
        let prev = stamp_in(row);
        row.copy_from_slice(&stamp.to_le_bytes());
        Ok(prev)
    }

    pub fn flush(self, heads: &mut redb::Table<'_, u32, &'static [u8]>) -> StoreResult<()> {
        self.0.flush(heads)
    }
}

/// The pending chunked payouts with an id after `after`, in id order, at most `limit`
/// (and whether more follow): those of the values still counted open, without a PAYOUTS
/// row.
pub fn pending_after(
    payouts: &impl ReadableTable<&'static str, &'static [u8]>,
    chunks: &impl ReadableTable<u64, &'static [u8]>,
    open: &impl ReadableTable<u64, u64>,
    after: Option<&str>,
    limit: usize,
) -> StoreResult<(Vec<Payout>, bool)> {
    // Start at the value that would hold `after`: earlier ones hold only earlier ids.
    let from = match after.and_then(|a| time_ordered_stamp("payout", a)) {
        Some(stamp) => match chunks.range(..=stamp)?.next_back() {
            Some(e) => e?.0.value(),
            None => 0,
        },
        None => 0,
    };
    let mut out = Vec::new();
    for entry in open.range(from..)? {
        let (key, _) = entry?;
        let Some(v) = chunks.get(key.value())? else {
            return Err(StoreError::corrupt(format!(
                "open payout value {} is missing",
                key.value()
            )));
        };
        let value: Vec<ChunkedPayout> = decode(v.value())?;
        for c in value {
            if after.is_some_and(|a| c.payout.payout_id.as_str() <= a)
                || payouts.get(c.payout.payout_id.as_str())?.is_some()
            {
                continue;
            }
            if out.len() == limit {
                return Ok((out, true));
            }
            out.push(c.payout);
        }
    }
    Ok((out, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_keep_each_node_slot_apart_and_return_the_previous_stamp() {
        let db = redb::Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut t = txn.open_table(super::super::tables::PAYOUT_HEADS).unwrap();
            let mut edits = HeadEdits::default();
            assert_eq!(edits.push(&t, 5, 100).unwrap(), 0);
            assert_eq!(edits.push(&t, 5, 200).unwrap(), 100);
            assert_eq!(edits.push(&t, 133, 300).unwrap(), 0);
            edits.flush(&mut t).unwrap();
            assert_eq!(head(&t, 5).unwrap(), 200);
            assert_eq!(head(&t, 6).unwrap(), 0);
            assert_eq!(head(&t, 133).unwrap(), 300);
            assert_eq!(head(&t, 9_999).unwrap(), 0);
        }
        txn.commit().unwrap();
    }
}
