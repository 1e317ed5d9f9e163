//! An epoch's proofs as stored (schema 3, issue 15): 96-byte rows, one per proof, in the
//! epoch's leaf order (`node_id`), written as chunks of consecutive rows. A chunk is one
//! redb value, so closing an epoch writes a few sequential blobs instead of one B-tree row
//! per node, and a proof costs 96 bytes instead of 520-750.
//!
//! What a row leaves out is rebuilt when a proof is read:
//! - the node id: rows name a node by its index (`NODE_INDEX`, given at registration);
//! - the window, root and signature: the epoch record holds them once;
//! - the previous proof hash: the proof hash of the node's row `prev_delta` epochs back;
//! - the inclusion path: computed from the proof's 512-leaf block and the epoch's block
//!   roots (`EPOCH_BLOCKS`, see `merkle::blocked_path`), so one or two chunks prove a
//!   proof.
//!
//! Chunks are keyed `(epoch, node_id of the first row)`: the chunk holding a node is the
//! last one whose key is at or before it. Their sizes follow redb's allocator, not the
//! Merkle blocks ([`chunk_starts`]): a value takes a power-of-two run of pages, and a
//! 680-row chunk fills 64 KiB where a 512-row one would leave a quarter of it empty.
//!
//! Since schema 6 closes write packs instead (`epoch_packs`): values of up to 16 KiB
//! holding runs of rows of consecutive epochs, keyed like a chunk by their first run. A
//! reader takes every value as runs of rows; an epoch's first run may be in the value
//! keyed just before the epoch's own keys.

use std::borrow::Cow;
use std::collections::HashMap;

use redb::{ReadTransaction, ReadableTable};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

use super::codec::decode;
use super::epoch_packs::runs_in_value;
use super::error::{StoreError, StoreResult};
use super::queries::{Page, Reader};
use super::tables::{EPOCHS, EPOCH_BLOCKS, EPOCH_ROWS, NODE_IDS};
use crate::domain::merkle::{blocked_path, leaf_hash, levels, path_at, Hash, BLOCK_LEAVES};
use crate::domain::poot::{epoch_window, path_entries};
use crate::domain::proof::{Epoch, Proof};

/// The tree of the epoch being closed, while its chunks are written: a proof stored in a
/// block whose other proofs are not stored yet gets its path from here (within this
/// process; after a crash such proofs are served once the resumed close completes).
#[derive(Default)]
pub struct ClosingTree(std::sync::Mutex<Option<(u64, TreeLevels)>>);

/// A tree's levels (`merkle::levels`), shared.
pub type TreeLevels = std::sync::Arc<Vec<Vec<Hash>>>;

impl ClosingTree {
    pub fn set(&self, epoch: u64, levels: TreeLevels) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((epoch, levels));
    }

    pub fn clear(&self, epoch: u64) {
        let mut current = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_some_and(|(e, _)| *e == epoch) {
            *current = None;
        }
    }

    fn levels(&self, epoch: u64) -> Option<TreeLevels> {
        let current = self.0.lock().unwrap_or_else(|e| e.into_inner());
        current
            .as_ref()
            .filter(|(e, _)| *e == epoch)
            .map(|(_, l)| l.clone())
    }
}

/// Bytes of one proof row as the code reads it (`ProofRow::decode`).
pub const ROW_LEN: usize = 96;
/// Bytes of one proof row as chunks written since schema 4 store it: the row without its
/// four reserved bytes (96 B rows came to 97-99 B of redb pages a proof, over the budget
/// of 96; these come to 93).
pub const STORED_ROW_LEN: usize = 92;
/// Where the reserved bytes are in a `ROW_LEN` row.
const RESERVED: std::ops::Range<usize> = 28..32;
/// Bytes before a chunk's rows: the position of its first row in the epoch (u32 LE),
/// with [`COMPACT_FLAG`] set when the rows are stored in their compact form.
const CHUNK_HEADER: usize = 4;
/// Set in a chunk's header when its rows are `StoredRow::STORED_LEN` bytes each.
const COMPACT_FLAG: u32 = 1 << 31;

/// One node's proof in an epoch, as stored. Fixed size: `ROW_LEN` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProofRow {
    pub node_index: u32,
    pub operational_seconds: u32,
    pub heartbeat_count: u32,
    /// Epochs back to the node's previous proof; 0 for its first.
    pub prev_delta: u32,
    pub credits_micros: u64,
    /// The node's credit carry after this epoch, in micro-units (`credits`).
    pub carry_micros: u32,
    pub heartbeats_root: Hash,
    pub proof_hash: Hash,
}

/// A fixed-size row of a chunk (proof rows, daily-record rows): chunks of either kind are
/// found, split and searched the same way.
pub trait StoredRow: Sized + Copy + 'static {
    const LEN: usize;
    /// Bytes of a row as new chunks store it (`LEN` unless the row has a compact form).
    const STORED_LEN: usize = Self::LEN;
    fn decode(bytes: &[u8]) -> Self;
    fn encode_into(&self, out: &mut Vec<u8>);
    fn node_index(&self) -> u32;
    /// Appends the `LEN`-byte form of a `STORED_LEN`-byte stored row.
    fn expand_into(stored: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(stored);
    }
    /// Appends the row's stored form.
    fn encode_stored_into(&self, out: &mut Vec<u8>) {
        self.encode_into(out)
    }
}

impl StoredRow for ProofRow {
    const LEN: usize = ROW_LEN;
    const STORED_LEN: usize = STORED_ROW_LEN;
    fn expand_into(stored: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(&stored[..RESERVED.start]);
        out.extend_from_slice(&[0; RESERVED.end - RESERVED.start]);
        out.extend_from_slice(&stored[RESERVED.start..]);
    }
    fn encode_stored_into(&self, out: &mut Vec<u8>) {
        let at = out.len();
        self.encode_into(out);
        out.drain(at + RESERVED.start..at + RESERVED.end);
    }
    fn decode(bytes: &[u8]) -> Self {
        ProofRow::decode(bytes)
    }
    fn encode_into(&self, out: &mut Vec<u8>) {
        ProofRow::encode_into(self, out)
    }
    fn node_index(&self) -> u32 {
        self.node_index
    }
}

impl ProofRow {
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.node_index.to_le_bytes());
        out.extend_from_slice(&self.operational_seconds.to_le_bytes());
        out.extend_from_slice(&self.heartbeat_count.to_le_bytes());
        out.extend_from_slice(&self.prev_delta.to_le_bytes());
        out.extend_from_slice(&self.credits_micros.to_le_bytes());
        out.extend_from_slice(&self.carry_micros.to_le_bytes());
        out.extend_from_slice(&[0; 4]); // reserved, keeps the hashes 8-aligned
        out.extend_from_slice(&self.heartbeats_root);
        out.extend_from_slice(&self.proof_hash);
    }

    /// Reads a row from exactly `ROW_LEN` bytes.
    pub fn decode(b: &[u8]) -> Self {
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Self {
            node_index: u32_at(0),
            operational_seconds: u32_at(4),
            heartbeat_count: u32_at(8),
            prev_delta: u32_at(12),
            credits_micros: u64::from_le_bytes(b[16..24].try_into().expect("8 bytes")),
            carry_micros: u32_at(24),
            heartbeats_root: b[32..64].try_into().expect("32 bytes"),
            proof_hash: b[64..96].try_into().expect("32 bytes"),
        }
    }

    /// The row of `proof`, made by a node whose index is `node_index` and whose previous
    /// proof is `prev_delta` epochs back, with `carry` after it.
    pub fn of_proof(
        proof: &Proof,
        node_index: u32,
        prev_delta: u32,
        carry: Decimal,
    ) -> StoreResult<Self> {
        let too_big = |what: &str| {
            StoreError::corrupt(format!(
                "proof of {} for epoch {}: {what} does not fit a stored row",
                proof.node_id, proof.epoch
            ))
        };
        Ok(Self {
            node_index,
            operational_seconds: u32::try_from(proof.operational_seconds)
                .map_err(|_| too_big("operational_seconds"))?,
            heartbeat_count: u32::try_from(proof.heartbeat_count)
                .map_err(|_| too_big("heartbeat_count"))?,
            prev_delta,
            credits_micros: micros(proof.credits_usdt).ok_or_else(|| too_big("credits"))?,
            carry_micros: micros(carry)
                .and_then(|m| u32::try_from(m).ok())
                .ok_or_else(|| too_big("carry"))?,
            heartbeats_root: proof.heartbeats_root,
            proof_hash: proof.proof_hash,
        })
    }

    /// Reads a row from its `STORED_ROW_LEN`-byte stored form.
    pub fn decode_stored(stored: &[u8]) -> Self {
        let mut row = Vec::with_capacity(ROW_LEN);
        <Self as StoredRow>::expand_into(stored, &mut row);
        Self::decode(&row)
    }

    pub fn credits(&self) -> Decimal {
        Decimal::from_i128_with_scale(self.credits_micros.into(), 6)
    }

    pub fn carry(&self) -> Decimal {
        Decimal::from_i128_with_scale(self.carry_micros.into(), 6)
    }

    /// The proof this row stores, given what the row leaves out.
    pub fn proof(
        &self,
        node_id: String,
        record: &Epoch,
        prev_proof_hash: Option<Hash>,
        inclusion_path: Vec<(bool, Hash)>,
    ) -> Proof {
        let (start, end) = epoch_window(record.epoch, record.length_us);
        Proof {
            node_id,
            epoch: record.epoch,
            window_start_us: start,
            window_end_us: end,
            operational_seconds: self.operational_seconds.into(),
            heartbeat_count: self.heartbeat_count.into(),
            heartbeats_root: self.heartbeats_root,
            credits_usdt: self.credits(),
            prev_proof_hash,
            proof_hash: self.proof_hash,
            inclusion_path,
        }
    }
}

/// A non-negative amount with at most six decimals, in micro-units.
fn micros(d: Decimal) -> Option<u64> {
    if d.is_sign_negative() && !d.is_zero() {
        return None;
    }
    let m = d * Decimal::from(1_000_000u32);
    if !m.fract().is_zero() {
        return None;
    }
    m.to_u64()
}

/// A chunk value: its first row's position, then its rows in their stored form. Positions
/// must be below 2^31 (the header's top bit is [`COMPACT_FLAG`]).
pub fn encode_chunk<R: StoredRow>(position: u32, rows: &[R]) -> Vec<u8> {
    debug_assert!(position < COMPACT_FLAG);
    let compact = R::STORED_LEN != R::LEN;
    let header = if compact {
        position | COMPACT_FLAG
    } else {
        position
    };
    let mut out = Vec::with_capacity(CHUNK_HEADER + rows.len() * R::STORED_LEN);
    out.extend_from_slice(&header.to_le_bytes());
    for r in rows {
        r.encode_stored_into(&mut out);
    }
    out
}

/// A chunk's first position and its rows' bytes, each row `R::LEN` bytes (a chunk of
/// compact rows is expanded; one written before schema 4 is borrowed as it is).
pub fn split_chunk<R: StoredRow>(bytes: &[u8]) -> StoreResult<(u64, Cow<'_, [u8]>)> {
    let not_whole = || {
        StoreError::corrupt(format!(
            "a stored chunk of {} bytes is not whole rows",
            bytes.len()
        ))
    };
    if bytes.len() < CHUNK_HEADER {
        return Err(not_whole());
    }
    let header = u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"));
    let rows = &bytes[CHUNK_HEADER..];
    if header & COMPACT_FLAG == 0 || R::STORED_LEN == R::LEN {
        if !rows.len().is_multiple_of(R::LEN) {
            return Err(not_whole());
        }
        return Ok((header.into(), Cow::Borrowed(rows)));
    }
    if !rows.len().is_multiple_of(R::STORED_LEN) {
        return Err(not_whole());
    }
    let mut expanded = Vec::with_capacity(rows.len() / R::STORED_LEN * R::LEN);
    for row in rows.chunks_exact(R::STORED_LEN) {
        R::expand_into(row, &mut expanded);
    }
    Ok(((header & !COMPACT_FLAG).into(), Cow::Owned(expanded)))
}

pub fn rows_of<R: StoredRow>(rows: &[u8]) -> impl Iterator<Item = R> + '_ {
    rows.chunks_exact(R::LEN).map(R::decode)
}

/// The node id a row's index names.
pub fn node_id_of(ids: &impl ReadableTable<u32, &'static str>, index: u32) -> StoreResult<String> {
    match ids.get(index)? {
        Some(v) => Ok(v.value().to_string()),
        None => Err(StoreError::corrupt(format!(
            "a stored proof names node index {index}, which no node has"
        ))),
    }
}

/// A node's row in an epoch (or day), and the run of rows it was found in.
pub struct Located<R = ProofRow> {
    pub position: u64,
    pub row: R,
    /// The run's first position and its rows' bytes.
    pub chunk_position: u64,
    pub chunk: Vec<u8>,
    /// The key of the stored value holding the run (a chunk, or a pack: `epoch_packs`).
    pub value_key: (u64, String),
}

/// Finds `node_id`'s row under `key` (an epoch, or a day): the stored value whose key is
/// the last at or before `(key, node_id)`, its run of `key` (a pack opened by an earlier
/// epoch may hold the first rows of this one), then a binary search of the run's rows
/// (sorted by node id).
pub fn find_row<R: StoredRow>(
    rows_table: &impl ReadableTable<(u64, &'static str), &'static [u8]>,
    ids: &impl ReadableTable<u32, &'static str>,
    key: u64,
    node_id: &str,
) -> StoreResult<Option<Located<R>>> {
    let Some(entry) = rows_table.range(..=(key, node_id))?.next_back() else {
        return Ok(None);
    };
    let (k, v) = entry?;
    let value_key = (k.value().0, k.value().1.to_string());
    let Some((chunk_position, bytes)) = runs_in_value::<R>(value_key.0, v.value(), key)? else {
        return Ok(None);
    };
    let bytes = &bytes[..];
    let count = bytes.len() / R::LEN;
    let (mut lo, mut hi) = (0usize, count);
    while lo < hi {
        let mid = (lo + hi) / 2;
        let row = R::decode(&bytes[mid * R::LEN..(mid + 1) * R::LEN]);
        let id = node_id_of(ids, row.node_index())?;
        match id.as_str().cmp(node_id) {
            std::cmp::Ordering::Equal => {
                return Ok(Some(Located {
                    position: chunk_position + mid as u64,
                    row,
                    chunk_position,
                    chunk: bytes.to_vec(),
                    value_key,
                }))
            }
            std::cmp::Ordering::Less => lo = mid + 1,
            std::cmp::Ordering::Greater => hi = mid,
        }
    }
    Ok(None)
}

/// A run of stored rows under one key (an epoch, or a day).
pub struct StoredRun {
    /// Its first row's position.
    pub position: u64,
    /// Its rows, `R::LEN` bytes each.
    pub rows: Vec<u8>,
}

/// A stored value of a rows table with its key, as redb's iterators give it.
pub type StoredValue<'t> = (
    redb::AccessGuard<'t, (u64, &'static str)>,
    redb::AccessGuard<'t, &'static [u8]>,
);

/// The stored values that may hold rows of the keys `keys` (epochs, or days), in key
/// order: the one keyed just before them, since a pack opened by an earlier epoch may
/// hold the first rows (`epoch_packs`), then those keyed under them.
pub fn values_holding<'t>(
    rows_table: &'t impl ReadableTable<(u64, &'static str), &'static [u8]>,
    keys: std::ops::Range<u64>,
) -> StoreResult<impl Iterator<Item = Result<StoredValue<'t>, redb::StorageError>> + 't> {
    let before = rows_table
        .range(..(keys.start, ""))?
        .next_back()
        .transpose()?;
    Ok(before
        .into_iter()
        .map(Ok)
        .chain(rows_table.range((keys.start, "")..(keys.end, ""))?))
}

/// Every run of rows under `key` (an epoch, or a day), in position order.
pub fn runs_at<R: StoredRow>(
    rows_table: &impl ReadableTable<(u64, &'static str), &'static [u8]>,
    key: u64,
) -> StoreResult<Vec<StoredRun>> {
    let mut out = Vec::new();
    for entry in values_holding(rows_table, key..key + 1)? {
        let (k, v) = entry?;
        if let Some((position, rows)) = runs_in_value::<R>(k.value().0, v.value(), key)? {
            out.push(StoredRun {
                position,
                rows: rows.into_owned(),
            });
        }
    }
    out.sort_unstable_by_key(|r| r.position);
    Ok(out)
}

/// Every stored row under `key` (an epoch, or a day) with its position, in order.
pub fn rows_at<R: StoredRow>(
    rows_table: &impl ReadableTable<(u64, &'static str), &'static [u8]>,
    key: u64,
) -> StoreResult<Vec<(u64, R)>> {
    let mut out = Vec::new();
    for run in runs_at::<R>(rows_table, key)? {
        out.extend(
            rows_of::<R>(&run.rows)
                .enumerate()
                .map(|(i, r)| (run.position + i as u64, r)),
        );
    }
    Ok(out)
}

/// Every stored proof row of `epoch` with its position, in position order.
pub fn epoch_rows(
    rows_table: &impl ReadableTable<(u64, &'static str), &'static [u8]>,
    epoch: u64,
) -> StoreResult<Vec<(u64, ProofRow)>> {
    rows_at(rows_table, epoch)
}

/// The epoch's block roots, if its record's close stored them.
pub fn block_roots(
    blocks: &impl ReadableTable<u64, &'static [u8]>,
    epoch: u64,
) -> StoreResult<Option<Vec<Hash>>> {
    let Some(v) = blocks.get(epoch)? else {
        return Ok(None);
    };
    let bytes = v.value();
    if !bytes.len().is_multiple_of(32) {
        return Err(StoreError::corrupt(format!(
            "epoch {epoch}'s block roots are {} bytes",
            bytes.len()
        )));
    }
    Ok(Some(
        bytes
            .chunks_exact(32)
            .map(|c| c.try_into().expect("32 bytes"))
            .collect(),
    ))
}

/// Rows per chunk, largest first. redb gives a value a power-of-two run of 4 KiB pages,
/// so a chunk is sized to fill one: `4 + 92 n` bytes plus its key and the leaf's header.
/// 709 rows fill 64 KiB (512 rows, one Merkle block, would take 64 KiB too: 128 B a row).
/// (Before schema 4, 96-byte rows: 680, 338, 168, 82, 40; readers need neither.)
const CHUNK_ROWS: [u64; 5] = [709, 353, 175, 86, 41];

/// Where the chunks of an epoch of `total` proofs start: full 64 KiB chunks while they
/// fit, then the rest in the largest pieces that fill their allocation, then what is
/// left. Chunks so ignore Merkle blocks; a block is read from the chunks it spans.
pub fn chunk_starts(total: u64) -> Vec<u64> {
    let mut starts = Vec::new();
    let mut at = 0;
    for size in CHUNK_ROWS {
        while total - at >= size {
            starts.push(at);
            at += size;
        }
    }
    if at < total {
        starts.push(at);
    }
    starts
}

/// Leaves of the block `[start, end)` of an epoch: from `found`'s run and, where the
/// block runs over it, from the stored values before or after it. None while one is
/// missing (a close in progress).
fn block_leaves(
    rows_table: &impl ReadableTable<(u64, &'static str), &'static [u8]>,
    epoch: u64,
    (start, end): (u64, u64),
    found: &Located,
) -> StoreResult<Option<Vec<Hash>>> {
    let mut leaves: Vec<Option<Hash>> = vec![None; (end - start) as usize];
    let mut take = |position: u64, rows: &[u8]| {
        for (i, r) in rows_of::<ProofRow>(rows).enumerate() {
            let p = position + i as u64;
            if (start..end).contains(&p) {
                leaves[(p - start) as usize] = Some(leaf_hash(&r.proof_hash));
            }
        }
    };
    take(found.chunk_position, &found.chunk);
    let at = (found.value_key.0, found.value_key.1.as_str());
    if found.chunk_position > start {
        for entry in rows_table.range(..at)?.rev() {
            let (k, v) = entry?;
            let Some((position, rows)) = runs_in_value::<ProofRow>(k.value().0, v.value(), epoch)?
            else {
                break;
            };
            take(position, &rows);
            if position <= start {
                break;
            }
        }
    }
    let chunk_end = found.chunk_position + (found.chunk.len() / ROW_LEN) as u64;
    if chunk_end < end {
        for entry in rows_table.range(at..)?.skip(1) {
            let (k, v) = entry?;
            let Some((position, rows)) = runs_in_value::<ProofRow>(k.value().0, v.value(), epoch)?
            else {
                break;
            };
            take(position, &rows);
            if position + (rows.len() / ROW_LEN) as u64 >= end {
                break;
            }
        }
    }
    Ok(leaves.into_iter().collect())
}

/// The inclusion path of the row `found` in its epoch of `record.proof_count` leaves.
pub fn inclusion_path(
    rows_table: &impl ReadableTable<(u64, &'static str), &'static [u8]>,
    blocks: &impl ReadableTable<u64, &'static [u8]>,
    record: &Epoch,
    found: &Located,
    closing: Option<&ClosingTree>,
) -> StoreResult<Vec<(bool, Hash)>> {
    if let Some(levels) = closing.and_then(|c| c.levels(record.epoch)) {
        return Ok(path_entries(path_at(&levels, found.position as usize)));
    }
    let being_closed = || {
        StoreError::Unavailable(format!(
            "epoch {} is still being closed; its proofs are served once it is",
            record.epoch
        ))
    };
    let block = BLOCK_LEAVES as u64;
    let start = found.position - found.position % block;
    let end = (start + block).min(record.proof_count);
    let leaves =
        block_leaves(rows_table, record.epoch, (start, end), found)?.ok_or_else(being_closed)?;
    let roots = block_roots(blocks, record.epoch)?.ok_or_else(being_closed)?;
    Ok(path_entries(blocked_path(
        &leaves,
        found.position as usize,
        &roots,
    )))
}

/// The read side of the stored proofs, on any transaction.
pub struct ProofTables<R, B, I, E> {
    pub rows: R,
    /// Daily records (`DAY_ROWS`): where a retained proof's rolled-up predecessor is.
    pub day_rows: R,
    pub blocks: B,
    pub ids: I,
    pub epochs: E,
    pub closing: Option<std::sync::Arc<ClosingTree>>,
}

impl<R, B, I, E> ProofTables<R, B, I, E>
where
    R: ReadableTable<(u64, &'static str), &'static [u8]>,
    B: ReadableTable<u64, &'static [u8]>,
    I: ReadableTable<u32, &'static str>,
    E: ReadableTable<u64, &'static [u8]>,
{
    pub fn record(&self, epoch: u64) -> StoreResult<Option<Epoch>> {
        self.epochs
            .get(epoch)?
            .map(|v| decode(v.value()))
            .transpose()
    }

    /// The proof hash of `node_id`'s proof `delta` epochs before `epoch` (None for 0).
    fn prev_hash(&self, node_id: &str, epoch: u64, delta: u32) -> StoreResult<Option<Hash>> {
        if delta == 0 {
            return Ok(None);
        }
        let prev = epoch.checked_sub(delta.into()).ok_or_else(|| {
            StoreError::corrupt(format!(
                "{node_id}'s proof of epoch {epoch} links before epoch 0"
            ))
        })?;
        if let Some(found) = find_row::<ProofRow>(&self.rows, &self.ids, prev, node_id)? {
            return Ok(Some(found.row.proof_hash));
        }
        // Rolled up: the previous proof is the last of its day's record.
        if let Some(day) = self.rolled_day(prev)? {
            if let Some(h) =
                super::day_rows::rolled_proof_hash(&self.day_rows, &self.ids, node_id, day, prev)?
            {
                return Ok(Some(h));
            }
        }
        Err(StoreError::corrupt(format!(
            "{node_id}'s proof of epoch {epoch} links to epoch {prev}, which holds no proof of it"
        )))
    }

    /// The UTC day of `epoch` when its proofs are rolled up (its rows are gone and the day
    /// has records).
    fn rolled_day(&self, epoch: u64) -> StoreResult<Option<u32>> {
        let Some(record) = self.record(epoch)? else {
            return Ok(None);
        };
        let day = crate::domain::ledger::day_of(epoch_window(epoch, record.length_us).0);
        let rolled = self
            .day_rows
            .range((u64::from(day), "")..(u64::from(day) + 1, ""))?
            .next()
            .is_some();
        Ok(rolled.then_some(day))
    }

    /// The whole proof from a located row.
    fn proof_at(&self, node_id: &str, record: &Epoch, found: &Located) -> StoreResult<Proof> {
        let prev = self.prev_hash(node_id, record.epoch, found.row.prev_delta)?;
        let path = inclusion_path(
            &self.rows,
            &self.blocks,
            record,
            found,
            self.closing.as_deref(),
        )?;
        Ok(found.row.proof(node_id.to_string(), record, prev, path))
    }

    /// The proofs of the stored run of `epoch`'s rows that holds `first_node_id` (the
    /// mirror's reference names its first), paths included, in leaf order, with the
    /// epoch's record; None when no such run is stored. Each block's tree is built once
    /// for the run, not once per proof.
    pub fn chunk_proofs(
        &self,
        epoch: u64,
        first_node_id: &str,
    ) -> StoreResult<Option<(Epoch, Vec<Proof>)>> {
        let Some(mut found) = find_row::<ProofRow>(&self.rows, &self.ids, epoch, first_node_id)?
        else {
            return Ok(None);
        };
        let chunk_position = found.chunk_position;
        // The run's rows, apart from `found`, which the loop moves from row to row.
        let rows = found.chunk.clone();
        let rows = &rows[..];
        let record = self.record(epoch)?.ok_or_else(|| {
            StoreError::corrupt(format!("epoch {epoch} has proofs but no record"))
        })?;
        let being_closed = || {
            StoreError::Unavailable(format!(
                "epoch {epoch} is still being closed; its proofs are served once it is"
            ))
        };
        let closing = self.closing.as_deref().and_then(|c| c.levels(epoch));
        let root_levels = match closing {
            Some(_) => Vec::new(),
            None => levels(&block_roots(&self.blocks, epoch)?.ok_or_else(being_closed)?),
        };
        let block = BLOCK_LEAVES as u64;
        let mut tree: Option<(u64, Vec<Vec<Hash>>)> = None;
        let mut proofs = Vec::with_capacity(rows.len() / ROW_LEN);
        for (i, row) in rows_of::<ProofRow>(rows).enumerate() {
            let position = chunk_position + i as u64;
            let node_id = node_id_of(&self.ids, row.node_index)?;
            let prev = self.prev_hash(&node_id, epoch, row.prev_delta)?;
            let path = match &closing {
                Some(levels) => path_entries(path_at(levels, position as usize)),
                None => {
                    let b = position / block;
                    if tree.as_ref().is_none_or(|(tb, _)| *tb != b) {
                        let start = b * block;
                        let end = (start + block).min(record.proof_count);
                        found.position = position;
                        found.row = row;
                        let leaves = block_leaves(&self.rows, epoch, (start, end), &found)?
                            .ok_or_else(being_closed)?;
                        tree = Some((b, levels(&leaves)));
                    }
                    let block_levels = &tree.as_ref().expect("built above").1;
                    let mut path = path_at(block_levels, (position % block) as usize);
                    path.extend(path_at(&root_levels, b as usize));
                    path_entries(path)
                }
            };
            proofs.push(row.proof(node_id, &record, prev, path));
        }
        Ok(Some((record, proofs)))
    }

    /// `node_id`'s proof for `epoch`, path included.
    pub fn proof(&self, node_id: &str, epoch: u64) -> StoreResult<Option<Proof>> {
        let Some(found) = find_row::<ProofRow>(&self.rows, &self.ids, epoch, node_id)? else {
            return Ok(None);
        };
        let record = self.record(epoch)?.ok_or_else(|| {
            StoreError::corrupt(format!("epoch {epoch} has proofs but no record"))
        })?;
        self.proof_at(node_id, &record, &found).map(Some)
    }

    /// A node's proofs, newest first, with epochs below `before`, following the chain of
    /// previous proofs from `latest` (the node's last proof epoch).
    pub fn history(
        &self,
        node_id: &str,
        latest: Option<u64>,
        before: Option<u64>,
        limit: usize,
    ) -> StoreResult<Page<Proof>> {
        // Where to start: the proof before the cursor's (the cursor is the last epoch a
        // page returned), else walk down from the latest.
        let mut next: Option<u64> = latest;
        if let Some(b) = before {
            next = match find_row::<ProofRow>(&self.rows, &self.ids, b, node_id)? {
                Some(found) if found.row.prev_delta > 0 => {
                    Some(b - u64::from(found.row.prev_delta))
                }
                Some(_) => None,
                None => {
                    let mut e = latest;
                    while let Some(epoch) = e.filter(|e| *e >= b) {
                        e = match find_row::<ProofRow>(&self.rows, &self.ids, epoch, node_id)? {
                            Some(f) if f.row.prev_delta > 0 => {
                                Some(epoch - u64::from(f.row.prev_delta))
                            }
                            _ => None,
                        };
                    }
                    e
                }
            };
        }
        let mut items = Vec::new();
        while let Some(epoch) = next {
            if items.len() == limit {
                let cursor = items.last().map(|p: &Proof| p.epoch.to_string());
                return Ok(Page {
                    items,
                    next: cursor,
                });
            }
            let Some(found) = find_row::<ProofRow>(&self.rows, &self.ids, epoch, node_id)? else {
                if self.rolled_day(epoch)?.is_some() {
                    break; // older proofs are in the node's daily records
                }
                return Err(StoreError::corrupt(format!(
                    "{node_id}'s proof chain names epoch {epoch}, which holds no proof of it"
                )));
            };
            let record = self.record(epoch)?.ok_or_else(|| {
                StoreError::corrupt(format!("epoch {epoch} has proofs but no record"))
            })?;
            items.push(self.proof_at(node_id, &record, &found)?);
            next = (found.row.prev_delta > 0).then(|| epoch - u64::from(found.row.prev_delta));
        }
        Ok(Page { items, next: None })
    }
}

/// The proof tables of a read transaction.
#[allow(clippy::type_complexity)]
pub fn read_tables(
    txn: &ReadTransaction,
    closing: Option<std::sync::Arc<ClosingTree>>,
) -> StoreResult<
    ProofTables<
        redb::ReadOnlyTable<(u64, &'static str), &'static [u8]>,
        redb::ReadOnlyTable<u64, &'static [u8]>,
        redb::ReadOnlyTable<u32, &'static str>,
        redb::ReadOnlyTable<u64, &'static [u8]>,
    >,
> {
    Ok(ProofTables {
        rows: txn.open_table(EPOCH_ROWS)?,
        day_rows: txn.open_table(super::tables::DAY_ROWS)?,
        blocks: txn.open_table(EPOCH_BLOCKS)?,
        ids: txn.open_table(NODE_IDS)?,
        epochs: txn.open_table(EPOCHS)?,
        closing,
    })
}

/// The node's latest proof epoch (see [`latest_stored_proof`]).
pub fn latest_proof_epoch(txn: &ReadTransaction, node_id: &str) -> StoreResult<Option<u64>> {
    let tables = super::accounts::read_tables(txn)?;
    let settled = tables.get(node_id)?.and_then(|n| n.last_proof);
    Ok(latest_stored_proof(txn, node_id, settled)?.map(|(e, _)| e))
}

/// The epoch whose close is under way (its record is stored, `closed_until` has not moved
/// past it), if any.
fn epoch_being_closed(txn: &ReadTransaction) -> StoreResult<Option<u64>> {
    use super::tables::{META, POOT_CLOSED_UNTIL_KEY, POOT_LENGTH_KEY};
    let meta = txn.open_table(META)?;
    let closed_until = super::batch::meta_u64(&meta, POOT_CLOSED_UNTIL_KEY)?;
    let length = super::batch::meta_u64(&meta, POOT_LENGTH_KEY)?;
    let (Some(closed_until), Some(length)) = (closed_until, length.filter(|l| *l > 0)) else {
        return Ok(None);
    };
    let epoch = crate::domain::poot::first_epoch_at_or_after(closed_until, length);
    Ok(txn.open_table(EPOCHS)?.get(epoch)?.map(|_| epoch))
}

/// A node's latest stored proof: the one its totals were settled with (`settled`), or
/// its proof in the epoch being closed, which is served as soon as its row is stored
/// (its totals follow when the close settles the epoch, `store::settle`).
pub fn latest_stored_proof(
    txn: &ReadTransaction,
    node_id: &str,
    settled: Option<(u64, Hash)>,
) -> StoreResult<Option<(u64, Hash)>> {
    let Some(epoch) = epoch_being_closed(txn)? else {
        return Ok(settled);
    };
    if settled.is_some_and(|(e, _)| e >= epoch) {
        return Ok(settled);
    }
    let rows = txn.open_table(EPOCH_ROWS)?;
    let ids = txn.open_table(NODE_IDS)?;
    Ok(match find_row::<ProofRow>(&rows, &ids, epoch, node_id)? {
        Some(found) => Some((epoch, found.row.proof_hash)),
        None => settled,
    })
}

impl Reader {
    pub fn proof(&self, node_id: &str, epoch: u64) -> StoreResult<Option<Proof>> {
        read_tables(&self.txn, self.closing.clone())?.proof(node_id, epoch)
    }

    /// The proofs of one stored chunk, as the mirror's sync task renders them.
    #[cfg(test)]
    pub fn chunk_proofs(&self, epoch: u64, first_node_id: &str) -> StoreResult<Vec<Proof>> {
        let tables = read_tables(&self.txn, self.closing.clone())?;
        Ok(tables
            .chunk_proofs(epoch, first_node_id)?
            .map(|(_, p)| p)
            .unwrap_or_default())
    }

    /// A node's proofs, newest first, with epochs below `before`.
    pub fn proof_history(
        &self,
        node_id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> StoreResult<Page<Proof>> {
        let latest = latest_proof_epoch(&self.txn, node_id)?;
        read_tables(&self.txn, self.closing.clone())?.history(node_id, latest, before, limit)
    }

    /// Every stored proof, epoch by epoch (each node's in chain order), paths included.
    pub fn for_each_proof(&self, mut f: impl FnMut(Proof) -> StoreResult<()>) -> StoreResult<()> {
        let tables = read_tables(&self.txn, self.closing.clone())?;
        let mut names: HashMap<u32, String> = HashMap::new();
        // node index -> (epoch, proof hash) of its latest proof seen so far
        let mut last: HashMap<u32, (u64, Hash)> = HashMap::new();
        let mut epochs: Vec<u64> = Vec::new();
        for entry in tables.epochs.iter()? {
            epochs.push(entry?.0.value());
        }
        for epoch in epochs {
            let rows = epoch_rows(&tables.rows, epoch)?;
            if rows.is_empty() {
                continue;
            }
            let record = tables.record(epoch)?.ok_or_else(|| {
                StoreError::corrupt(format!("epoch {epoch} has proofs but no record"))
            })?;
            let complete = rows.len() as u64 == record.proof_count
                && rows.iter().enumerate().all(|(i, (p, _))| *p == i as u64);
            let full = complete.then(|| {
                levels(
                    &rows
                        .iter()
                        .map(|(_, r)| leaf_hash(&r.proof_hash))
                        .collect::<Vec<_>>(),
                )
            });
            for (position, row) in rows {
                let node_id = match names.get(&row.node_index) {
                    Some(n) => n.clone(),
                    None => {
                        let n = node_id_of(&tables.ids, row.node_index)?;
                        names.insert(row.node_index, n.clone());
                        n
                    }
                };
                let prev = match (row.prev_delta, last.get(&row.node_index)) {
                    (0, _) => None,
                    (d, Some((e, h))) if *e + u64::from(d) == epoch => Some(*h),
                    (d, _) => tables.prev_hash(&node_id, epoch, d)?,
                };
                let path = match &full {
                    Some(levels) => path_entries(path_at(levels, position as usize)),
                    None => {
                        let found =
                            find_row::<ProofRow>(&tables.rows, &tables.ids, epoch, &node_id)?
                                .ok_or_else(|| StoreError::corrupt("a stored row vanished"))?;
                        // A close in progress whose block is not whole yet: no path.
                        inclusion_path(
                            &tables.rows,
                            &tables.blocks,
                            &record,
                            &found,
                            tables.closing.as_deref(),
                        )
                        .unwrap_or_default()
                    }
                };
                last.insert(row.node_index, (epoch, row.proof_hash));
                f(row.proof(node_id, &record, prev, path))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_row_reads_back_as_written(
            node_index in any::<u32>(), secs in any::<u32>(), count in any::<u32>(),
            delta in any::<u32>(), credits in any::<u64>(), carry in 0u32..3600,
            a in any::<u8>(), b in any::<u8>(),
        ) {
            let row = ProofRow {
                node_index, operational_seconds: secs, heartbeat_count: count, prev_delta: delta,
                credits_micros: credits, carry_micros: carry,
                heartbeats_root: [a; 32], proof_hash: [b; 32],
            };
            let mut bytes = Vec::new();
            row.encode_into(&mut bytes);
            prop_assert_eq!(bytes.len(), ROW_LEN);
            prop_assert_eq!(ProofRow::decode(&bytes), row);
            let chunk = encode_chunk(7, &[row, row]);
            let (position, rows) = split_chunk::<ProofRow>(&chunk).unwrap();
            prop_assert_eq!(position, 7);
            prop_assert_eq!(rows_of::<ProofRow>(&rows).collect::<Vec<_>>(), vec![row, row]);
        }

        #[test]
        fn credits_and_carry_keep_their_exact_value(micros_in in 0u64..10_000_000_000_000, carry in 0u32..3600) {
            let credits = Decimal::from_i128_with_scale(micros_in.into(), 6);
            prop_assert_eq!(micros(credits), Some(micros_in));
            let row = ProofRow {
                node_index: 0, operational_seconds: 0, heartbeat_count: 0, prev_delta: 0,
                credits_micros: micros_in, carry_micros: carry,
                heartbeats_root: [0; 32], proof_hash: [0; 32],
            };
            prop_assert_eq!(row.credits(), credits);
            prop_assert_eq!(row.carry(), Decimal::from_i128_with_scale(carry.into(), 6));
        }
    }

    #[test]
    fn amounts_finer_than_a_micro_or_negative_do_not_fit_a_row() {
        assert_eq!(micros(Decimal::new(1, 7)), None);
        assert_eq!(micros(Decimal::new(-1, 6)), None);
        assert_eq!(micros(Decimal::new(1_500_000, 6)), Some(1_500_000));
        assert_eq!(micros(Decimal::new(15, 1)), Some(1_500_000));
    }

    #[test]
    fn chunks_cover_every_position_once_and_fill_their_allocation() {
        assert_eq!(chunk_starts(0), Vec::<u64>::new());
        assert_eq!(chunk_starts(30), vec![0]);
        assert_eq!(chunk_starts(1_000), vec![0, 709, 884, 970]);
        for total in [1, 39, 40, 41, 100, 512, 709, 710, 1_000, 10_000, 100_000] {
            let starts = chunk_starts(total);
            let mut sizes: Vec<u64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
            sizes.push(total - starts.last().unwrap());
            assert_eq!(sizes.iter().sum::<u64>(), total);
            // All but the last are filling sizes, largest first; the last is under 41 rows
            // or a filling size itself.
            for w in sizes[..sizes.len() - 1].windows(2) {
                assert!(w[0] >= w[1], "{sizes:?}");
            }
            let last = *sizes.last().unwrap();
            assert!(last < 41 || CHUNK_ROWS.contains(&last), "{sizes:?}");
        }
        // A value of each size, with a key and a leaf header to spare, fits its run of
        // pages, and the next row would not.
        for (rows, pages) in CHUNK_ROWS.into_iter().zip([16u64, 8, 4, 2, 1]) {
            let bytes = CHUNK_HEADER as u64 + STORED_ROW_LEN as u64 * rows;
            assert!(bytes + 128 <= pages * 4096, "{rows} rows");
            assert!(
                bytes + 4 * STORED_ROW_LEN as u64 > pages * 4096,
                "{rows} rows leave rows empty"
            );
        }
    }

    #[test]
    fn a_chunk_that_is_not_whole_rows_is_corrupt() {
        assert!(split_chunk::<ProofRow>(&[0, 0, 0]).is_err());
        assert!(split_chunk::<ProofRow>(&[0; 4 + ROW_LEN + 1]).is_err());
        assert!(split_chunk::<ProofRow>(&[0; 4]).is_ok());
        // Compact rows: whole 92-byte rows, not 96.
        let compact = |n: usize| {
            let mut c = (COMPACT_FLAG | 3).to_le_bytes().to_vec();
            c.extend(std::iter::repeat_n(7u8, n));
            c
        };
        assert!(split_chunk::<ProofRow>(&compact(STORED_ROW_LEN * 2)).is_ok());
        assert!(split_chunk::<ProofRow>(&compact(ROW_LEN)).is_err());
    }

    /// Chunks written since schema 4 store 92-byte rows; a database keeps chunks of
    /// 96-byte rows from before (an epoch may even hold both, when its close was resumed
    /// across the upgrade): both read as the same rows.
    #[test]
    fn compact_and_earlier_chunks_read_as_the_same_rows() {
        let row = |i: u32| ProofRow {
            node_index: i,
            operational_seconds: 290 + i,
            heartbeat_count: 10,
            prev_delta: i % 3,
            credits_micros: 4_027 * u64::from(i),
            carry_micros: 999_999 - i,
            heartbeats_root: [i as u8; 32],
            proof_hash: [0xa0 ^ i as u8; 32],
        };
        let rows: Vec<ProofRow> = (0..5).map(row).collect();
        let compact = encode_chunk(12, &rows);
        assert_eq!(compact.len(), CHUNK_HEADER + 5 * STORED_ROW_LEN);
        let mut earlier = 12u32.to_le_bytes().to_vec();
        for r in &rows {
            r.encode_into(&mut earlier);
        }
        assert_eq!(earlier.len(), CHUNK_HEADER + 5 * ROW_LEN);
        for bytes in [&compact, &earlier] {
            let (position, read) = split_chunk::<ProofRow>(bytes).unwrap();
            assert_eq!(position, 12);
            assert_eq!(rows_of::<ProofRow>(&read).collect::<Vec<_>>(), rows);
        }
        // An earlier chunk is read in place, a compact one expanded.
        assert!(matches!(
            split_chunk::<ProofRow>(&earlier).unwrap().1,
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            split_chunk::<ProofRow>(&compact).unwrap().1,
            Cow::Owned(_)
        ));
    }
}
