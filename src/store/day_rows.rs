//! Daily roll-ups as stored (see `domain::day`): per rolled-up UTC day, the signed root
//! (`DAYS`), its block roots (`DAY_BLOCKS`) and each node's record as a 144-byte row in
//! chunks keyed `(day, node_id of the first row)` (`DAY_ROWS`), in the day's leaf order.
//! Once a day is rolled up, its epochs' proof rows are deleted; the epoch records (root
//! and signature, about 100 bytes each) stay.

use std::collections::HashMap;

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable};
use rust_decimal::Decimal;

use super::codec::{decode, encode};
use super::epoch_packs::{decode_pack, encode_pack, epochs_held, runs_of_value, Run};
use super::epoch_rows::{
    block_roots, find_row, node_id_of, rows_at, values_holding, Located, ProofRow, StoredRow,
};
use super::error::{StoreError, StoreResult};
use super::queries::{Page, Reader};
use super::tables::{DAYS, DAY_BLOCKS, DAY_ROWS, EPOCHS, EPOCH_BLOCKS, EPOCH_ROWS, NODE_IDS};
use super::Batch;
use crate::domain::day::{DayFold, DayRecord, DayRoot};
use crate::domain::ledger::{day_of, DAY_US};
use crate::domain::merkle::{blocked_path, Hash, Side, BLOCK_LEAVES};
use crate::domain::poot::{epoch_window, first_epoch_at_or_after};
use crate::domain::proof::Epoch;

/// Bytes of one stored daily record.
pub const DAY_ROW_LEN: usize = 144;

/// One node's daily record, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DayRow {
    pub node_index: u32,
    pub epochs: u32,
    pub operational_seconds: u32,
    pub heartbeat_count: u32,
    pub credits_micros: u64,
    pub first_epoch: u64,
    pub last_epoch: u64,
    /// Days back to the node's previous record; 0 for its first.
    pub prev_day_delta: u32,
    /// The node's credit carry after the day's last proof, in micro-units.
    pub carry_micros: u32,
    pub first_proof_hash: Hash,
    pub last_proof_hash: Hash,
    pub day_hash: Hash,
}

impl StoredRow for DayRow {
    const LEN: usize = DAY_ROW_LEN;

    fn decode(b: &[u8]) -> Self {
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let hash_at = |i: usize| -> Hash { b[i..i + 32].try_into().expect("32 bytes") };
        Self {
            node_index: u32_at(0),
            epochs: u32_at(4),
            operational_seconds: u32_at(8),
            heartbeat_count: u32_at(12),
            credits_micros: u64_at(16),
            first_epoch: u64_at(24),
            last_epoch: u64_at(32),
            prev_day_delta: u32_at(40),
            carry_micros: u32_at(44),
            first_proof_hash: hash_at(48),
            last_proof_hash: hash_at(80),
            day_hash: hash_at(112),
        }
    }

    fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.node_index.to_le_bytes());
        out.extend_from_slice(&self.epochs.to_le_bytes());
        out.extend_from_slice(&self.operational_seconds.to_le_bytes());
        out.extend_from_slice(&self.heartbeat_count.to_le_bytes());
        out.extend_from_slice(&self.credits_micros.to_le_bytes());
        out.extend_from_slice(&self.first_epoch.to_le_bytes());
        out.extend_from_slice(&self.last_epoch.to_le_bytes());
        out.extend_from_slice(&self.prev_day_delta.to_le_bytes());
        out.extend_from_slice(&self.carry_micros.to_le_bytes());
        out.extend_from_slice(&self.first_proof_hash);
        out.extend_from_slice(&self.last_proof_hash);
        out.extend_from_slice(&self.day_hash);
    }

    fn node_index(&self) -> u32 {
        self.node_index
    }
}

impl DayRow {
    /// The published record, given the node's id and its previous record's hash.
    pub fn record(&self, node_id: String, day: u32, prev_day_hash: Option<Hash>) -> DayRecord {
        DayRecord {
            node_id,
            day,
            first_epoch: self.first_epoch,
            last_epoch: self.last_epoch,
            epochs: self.epochs,
            operational_seconds: self.operational_seconds.into(),
            heartbeat_count: self.heartbeat_count.into(),
            credits_usdt: Decimal::from_i128_with_scale(self.credits_micros.into(), 6),
            first_proof_hash: self.first_proof_hash,
            last_proof_hash: self.last_proof_hash,
            prev_day_hash,
            day_hash: self.day_hash,
        }
    }

    pub fn carry(&self) -> Decimal {
        Decimal::from_i128_with_scale(self.carry_micros.into(), 6)
    }
}

/// The epochs whose window starts in UTC day `day`.
pub fn epochs_of_day(day: u32, length_us: u64) -> std::ops::Range<u64> {
    let start = u64::from(day) * DAY_US;
    first_epoch_at_or_after(start, length_us)..first_epoch_at_or_after(start + DAY_US, length_us)
}

/// A day's roll-up, computed from its epochs' rows: each node's record, in node order.
pub struct DayPlan {
    pub day: u32,
    pub epochs: std::ops::Range<u64>,
    pub rows: Vec<(String, DayRow)>,
}

/// Folds the proof rows of `day`'s epochs into one record per node, chained to each
/// node's previous record. Reads a snapshot; the day must be closed and not rolled up.
pub fn plan_day(db: &Database, day: u32, length_us: u64) -> StoreResult<DayPlan> {
    let txn = db.begin_read()?;
    let rows_t = txn.open_table(EPOCH_ROWS)?;
    let ids = txn.open_table(NODE_IDS)?;
    let days = txn.open_table(DAY_ROWS)?;
    let epochs_t = txn.open_table(EPOCHS)?;
    let epochs = epochs_of_day(day, length_us);
    // node index -> (fold, first row's prev delta, carry after the last row)
    let mut folds: HashMap<u32, (DayFold, u32, u32)> = HashMap::new();
    // One sequential scan over the day's stored values: epochs ascending, each in node
    // order. A pack may begin with an epoch of the day before, or end with one of the
    // next: only the day's runs are folded.
    for entry in values_holding(&rows_t, epochs.clone())? {
        let (k, v) = entry?;
        for run in runs_of_value::<ProofRow>(k.value().0, v.value())? {
            if epochs.contains(&run.epoch) {
                fold_rows(&mut folds, run.epoch, &run.rows);
            }
        }
    }
    let mut rows = Vec::with_capacity(folds.len());
    for (node_index, (fold, first_delta, carry)) in folds {
        let node_id = node_id_of(&ids, node_index)?;
        let first_epoch = fold.first_epoch().expect("a fold of at least one row");
        // The previous record: the day of the proof before this day's first.
        let (prev_day_delta, prev_day_hash) = if first_delta == 0 {
            (0, None)
        } else {
            let prev_epoch = first_epoch - u64::from(first_delta);
            let record: Epoch = epochs_t
                .get(prev_epoch)?
                .map(|v| decode(v.value()))
                .transpose()?
                .ok_or_else(|| StoreError::corrupt(format!("epoch {prev_epoch} has no record")))?;
            let prev_day = day_of(epoch_window(prev_epoch, record.length_us).0);
            let found: Located<DayRow> = find_row(&days, &ids, prev_day.into(), &node_id)?
                .ok_or_else(|| {
                    StoreError::corrupt(format!(
                        "rolling up {node_id}'s day {day}: its previous proof (epoch {prev_epoch}) is in no rolled-up day"
                    ))
                })?;
            (day - prev_day, Some(found.row.day_hash))
        };
        let record = fold
            .finish(node_id.clone(), day, prev_day_hash)
            .expect("a fold of at least one row");
        let row = DayRow {
            node_index,
            epochs: record.epochs,
            operational_seconds: u32::try_from(record.operational_seconds)
                .map_err(|_| StoreError::corrupt("a day of more than 4 billion seconds"))?,
            heartbeat_count: u32::try_from(record.heartbeat_count)
                .map_err(|_| StoreError::corrupt("a day of more than 4 billion heartbeats"))?,
            credits_micros: (record.credits_usdt * Decimal::from(1_000_000u32))
                .trunc()
                .try_into()
                .map_err(|_| StoreError::corrupt("a day's credits do not fit"))?,
            first_epoch: record.first_epoch,
            last_epoch: record.last_epoch,
            prev_day_delta,
            carry_micros: carry,
            first_proof_hash: record.first_proof_hash,
            last_proof_hash: record.last_proof_hash,
            day_hash: record.day_hash,
        };
        rows.push((node_id, row));
    }
    rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    Ok(DayPlan { day, epochs, rows })
}

/// Folds one epoch's rows (`ROW_LEN` bytes each) into each node's day: node index ->
/// (fold, the prev delta of its first row of the day, its carry after the last).
fn fold_rows(folds: &mut HashMap<u32, (DayFold, u32, u32)>, epoch: u64, rows: &[u8]) {
    for row in super::epoch_rows::rows_of::<ProofRow>(rows) {
        let (fold, first_delta, carry) = folds
            .entry(row.node_index)
            .or_insert_with(|| (DayFold::default(), row.prev_delta, 0));
        fold.push_parts(
            epoch,
            row.proof_hash,
            row.operational_seconds.into(),
            row.heartbeat_count.into(),
            row.credits(),
        );
        if fold.first_epoch() == Some(epoch) {
            *first_delta = row.prev_delta;
        }
        *carry = row.carry_micros;
    }
}

impl Batch<'_> {
    pub fn day_root(&self, day: u32) -> StoreResult<Option<DayRoot>> {
        self.txn
            .open_table(DAYS)?
            .get(u64::from(day))?
            .map(|v| decode(v.value()))
            .transpose()
    }

    /// Stores a day's signed root and block roots (before its records).
    pub fn put_day_root(&mut self, root: &DayRoot, blocks: &[Hash]) -> StoreResult<()> {
        let key = u64::from(root.day);
        self.txn
            .open_table(DAYS)?
            .insert(key, encode(root).as_slice())?;
        let bytes: Vec<u8> = blocks.iter().flatten().copied().collect();
        self.txn
            .open_table(DAY_BLOCKS)?
            .insert(key, bytes.as_slice())?;
        Ok(())
    }

    /// Stores one chunk of a day's records from `position` on; false when stored already.
    pub fn write_day_chunk(
        &mut self,
        day: u32,
        position: u32,
        rows: &[(String, DayRow)],
    ) -> StoreResult<bool> {
        let Some((first, _)) = rows.first() else {
            return Ok(false);
        };
        let mut t = self.txn.open_table(DAY_ROWS)?;
        let key = (u64::from(day), first.as_str());
        if t.get(key)?.is_some() {
            return Ok(false);
        }
        let only: Vec<DayRow> = rows.iter().map(|r| r.1).collect();
        t.insert(
            key,
            super::epoch_rows::encode_chunk(position, &only).as_slice(),
        )?;
        Ok(true)
    }

    /// Deletes up to `max` stored values of proof rows of the epochs `epochs` (their day
    /// is rolled up), with their block roots; returns the values removed (0: none were
    /// left). A pack that also holds other epochs keeps them, keyed by its new first run.
    pub fn drop_epoch_rows(
        &mut self,
        epochs: std::ops::Range<u64>,
        max: usize,
    ) -> StoreResult<usize> {
        let mut rows = self.txn.open_table(EPOCH_ROWS)?;
        let ids = self.txn.open_table(NODE_IDS)?;
        let owned = |k: redb::AccessGuard<'_, (u64, &'static str)>| {
            let (e, n) = k.value();
            (e, n.to_string())
        };
        // The values that may hold these epochs' rows: the one before them (a pack opened
        // by an earlier epoch) and up to `max` keyed under them.
        let mut keys: Vec<(u64, String)> = Vec::new();
        if let Some(entry) = rows.range(..(epochs.start, ""))?.next_back() {
            keys.push(owned(entry?.0));
        }
        let mut in_range = rows.range((epochs.start, "")..(epochs.end, ""))?;
        for entry in in_range.by_ref().take(max) {
            keys.push(owned(entry?.0));
        }
        // Block roots go with the epochs whose rows are all gone: those before the first
        // value left for a later job.
        let blocks_end = match in_range.next() {
            Some(entry) => entry?.0.value().0,
            None => epochs.end,
        };
        drop(in_range);
        let mut removed = 0;
        for (n, (epoch, first)) in keys.into_iter().enumerate() {
            let key = (epoch, first.as_str());
            // Only a value that also holds other epochs is read whole and kept in part.
            let held = match rows.get(key)? {
                Some(v) => epochs_held::<ProofRow>(epoch, v.value())?,
                None => continue,
            };
            let gone = held.iter().filter(|e| epochs.contains(e)).count();
            if gone == 0 {
                if epochs.contains(&epoch) {
                    // Keyed under these epochs but holding none of them: the key is not
                    // its first run's (skipping it would roll this day up forever).
                    return Err(StoreError::corrupt(format!(
                        "stored proof rows keyed under epoch {epoch} hold epochs {held:?}"
                    )));
                }
                debug_assert_eq!(n, 0, "only the value before the range may hold none");
                continue;
            }
            let kept: Vec<Run> = if gone == held.len() {
                Vec::new()
            } else {
                let value = rows
                    .get(key)?
                    .map(|v| v.value().to_vec())
                    .unwrap_or_default();
                decode_pack::<ProofRow>(&value)?
                    .into_iter()
                    .filter(|r| !epochs.contains(&r.epoch))
                    .collect()
            };
            rows.remove(key)?;
            removed += 1;
            if let Some(run) = kept.first() {
                let first_row = run
                    .stored
                    .get(..super::epoch_rows::STORED_ROW_LEN)
                    .ok_or_else(|| StoreError::corrupt("a stored pack has an empty run"))?;
                let first = node_id_of(&ids, ProofRow::decode_stored(first_row).node_index)?;
                rows.insert((run.epoch, first.as_str()), encode_pack(&kept).as_slice())?;
            }
        }
        drop(rows);
        self.txn
            .open_table(EPOCH_BLOCKS)?
            .retain_in(epochs.start..blocks_end, |_, _| false)?;
        Ok(removed)
    }

    /// The first epoch that still has proof rows, if any.
    pub fn first_epoch_with_rows(&self) -> StoreResult<Option<u64>> {
        let t = self.txn.open_table(EPOCH_ROWS)?;
        let first = t.first()?.map(|(k, _)| k.value().0);
        Ok(first)
    }
}

/// A daily record with its day's root and its inclusion path: all its document needs.
pub type DayEntry = (DayRecord, DayRoot, Vec<(Side, Hash)>);

/// `node_id`'s daily record of `day` with the day's root and the record's path, and its
/// stored row.
fn day_document_parts(
    txn: &ReadTransaction,
    node_id: &str,
    day: u32,
) -> StoreResult<Option<(DayEntry, DayRow)>> {
    let rows_t = txn.open_table(DAY_ROWS)?;
    let ids = txn.open_table(NODE_IDS)?;
    let Some(found) = find_row::<DayRow>(&rows_t, &ids, day.into(), node_id)? else {
        return Ok(None);
    };
    let root: DayRoot = txn
        .open_table(DAYS)?
        .get(u64::from(day))?
        .map(|v| decode(v.value()))
        .transpose()?
        .ok_or_else(|| StoreError::corrupt(format!("day {day} has records but no root")))?;
    let blocks = block_roots(&txn.open_table(DAY_BLOCKS)?, day.into())?
        .ok_or_else(|| StoreError::corrupt(format!("day {day} has no block roots")))?;
    let block = BLOCK_LEAVES as u64;
    let start = found.position - found.position % block;
    let end = (start + block).min(root.record_count);
    let leaves: Vec<Hash> = if found.chunk_position <= start
        && end <= found.chunk_position + (found.chunk.len() / DAY_ROW_LEN) as u64
    {
        let from = (start - found.chunk_position) as usize * DAY_ROW_LEN;
        super::epoch_rows::rows_of::<DayRow>(&found.chunk[from..])
            .take((end - start) as usize)
            .map(|r| crate::domain::merkle::leaf_hash(&r.day_hash))
            .collect()
    } else {
        rows_at::<DayRow>(&rows_t, day.into())?
            .into_iter()
            .filter(|(p, _)| (start..end).contains(p))
            .map(|(_, r)| crate::domain::merkle::leaf_hash(&r.day_hash))
            .collect()
    };
    let path = blocked_path(&leaves, found.position as usize, &blocks);
    let prev = if found.row.prev_day_delta == 0 {
        None
    } else {
        let prev_day = day - found.row.prev_day_delta;
        let prev =
            find_row::<DayRow>(&rows_t, &ids, prev_day.into(), node_id)?.ok_or_else(|| {
                StoreError::corrupt(format!(
                    "{node_id}'s record of day {day} links to a missing day"
                ))
            })?;
        Some(prev.row.day_hash)
    };
    let row = found.row;
    Ok(Some((
        (row.record(node_id.to_string(), day, prev), root, path),
        row,
    )))
}

/// Days that are rolled up run from `first` to before `until`.
fn rolled_range(txn: &ReadTransaction) -> StoreResult<Option<(u32, u32)>> {
    let t = txn.open_table(DAYS)?;
    let first = t.first()?.map(|(k, _)| k.value() as u32);
    let last = t.last()?.map(|(k, _)| k.value() as u32);
    Ok(first.zip(last).map(|(f, l)| (f, l + 1)))
}

/// A node's record of `day`, if that day is rolled up and the node has one.
pub fn day_row(txn: &ReadTransaction, node_id: &str, day: u32) -> StoreResult<Option<DayRow>> {
    let rows_t = txn.open_table(DAY_ROWS)?;
    let ids = txn.open_table(NODE_IDS)?;
    Ok(find_row::<DayRow>(&rows_t, &ids, day.into(), node_id)?.map(|f| f.row))
}

impl Reader {
    /// The oldest day with proof rows, with its epochs' length, when it is due to be
    /// rolled up: over `retention_us` old, and every epoch starting in it closed.
    pub fn next_day_to_roll_up(
        &self,
        now_us: u64,
        retention_us: u64,
    ) -> StoreResult<Option<(u32, u64)>> {
        let first = {
            let rows = self.txn.open_table(EPOCH_ROWS)?;
            let first = rows.first()?.map(|(k, _)| k.value().0);
            first
        };
        let Some(first) = first else {
            return Ok(None);
        };
        let record = self.epoch(first)?.ok_or_else(|| {
            StoreError::corrupt(format!("epoch {first} has proofs but no record"))
        })?;
        let day = day_of(epoch_window(first, record.length_us).0);
        let epochs = epochs_of_day(day, record.length_us);
        let last_end = epoch_window(epochs.end.max(first + 1) - 1, record.length_us).1;
        let closed_until = self
            .meta_u64(super::tables::POOT_CLOSED_UNTIL_KEY)?
            .unwrap_or(0);
        let day_end = (u64::from(day) + 1) * DAY_US;
        if day_end.saturating_add(retention_us) > now_us || last_end > closed_until {
            return Ok(None);
        }
        Ok(Some((day, record.length_us)))
    }

    /// Whether every record of a rolled-up day is stored (its root says how many).
    pub fn day_records_complete(&self, day: u32) -> StoreResult<bool> {
        let root: Option<DayRoot> = self
            .txn
            .open_table(DAYS)?
            .get(u64::from(day))?
            .map(|v| decode(v.value()))
            .transpose()?;
        let Some(root) = root else {
            return Ok(false);
        };
        let rows = self.txn.open_table(DAY_ROWS)?;
        let stored = rows_at::<DayRow>(&rows, day.into())?.len() as u64;
        Ok(stored == root.record_count)
    }

    /// A node's daily records, newest first, with days before `before`: (record, the
    /// day's root, the record's inclusion path).
    pub fn day_history(
        &self,
        node_id: &str,
        before: Option<u32>,
        limit: usize,
    ) -> StoreResult<Page<DayEntry>> {
        let Some((first, until)) = rolled_range(&self.txn)? else {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        };
        // The newest record below `before`: from a cursor's record, its link; else the
        // days are probed from the newest down.
        let mut next: Option<u32> = None;
        match before {
            Some(b) if b > first => match day_row(&self.txn, node_id, b)? {
                Some(row) if row.prev_day_delta > 0 => next = Some(b - row.prev_day_delta),
                Some(_) => {}
                None => {
                    let mut d = b.min(until);
                    while d > first {
                        d -= 1;
                        if day_row(&self.txn, node_id, d)?.is_some() {
                            next = Some(d);
                            break;
                        }
                    }
                }
            },
            Some(_) => {}
            None => {
                let mut d = until;
                while d > first {
                    d -= 1;
                    if day_row(&self.txn, node_id, d)?.is_some() {
                        next = Some(d);
                        break;
                    }
                }
            }
        }
        let mut items = Vec::new();
        while let Some(day) = next {
            if items.len() == limit {
                let cursor = items.last().map(|(r, _, _): &DayEntry| r.day.to_string());
                return Ok(Page {
                    items,
                    next: cursor,
                });
            }
            let (entry, row) = day_document_parts(&self.txn, node_id, day)?.ok_or_else(|| {
                StoreError::corrupt(format!(
                    "{node_id}'s day chain names day {day}, which holds no record of it"
                ))
            })?;
            items.push(entry);
            next = (row.prev_day_delta > 0).then(|| day - row.prev_day_delta);
        }
        Ok(Page { items, next: None })
    }

    /// The day whose record holds `node_id`'s proof of `epoch`, when that epoch is rolled
    /// up (its proof answers 410 then).
    pub fn rolled_up_day_of(&self, node_id: &str, epoch: u64) -> StoreResult<Option<u32>> {
        let Some(record) = self.epoch(epoch)? else {
            return Ok(None);
        };
        let day = day_of(epoch_window(epoch, record.length_us).0);
        Ok(day_row(&self.txn, node_id, day)?
            .filter(|r| (r.first_epoch..=r.last_epoch).contains(&epoch))
            .map(|_| day))
    }

    /// Every rolled-up day: its root and each node's record (for `verify`).
    pub fn for_each_day(
        &self,
        mut f: impl FnMut(&DayRoot, Vec<(u64, DayRecord, DayRow)>) -> StoreResult<()>,
    ) -> StoreResult<()> {
        let days = self.txn.open_table(DAYS)?;
        let rows_t = self.txn.open_table(DAY_ROWS)?;
        let ids = self.txn.open_table(NODE_IDS)?;
        // node index -> its latest record's day hash so far
        let mut last: HashMap<u32, (u32, Hash)> = HashMap::new();
        for entry in days.iter()? {
            let (_, v) = entry?;
            let root: DayRoot = decode(v.value())?;
            let mut records = Vec::new();
            for (position, row) in rows_at::<DayRow>(&rows_t, root.day.into())? {
                let node_id = node_id_of(&ids, row.node_index)?;
                let prev = match (row.prev_day_delta, last.get(&row.node_index)) {
                    (0, _) => None,
                    (d, Some((day, h))) if day + d == root.day => Some(*h),
                    // A link to a day this walk did not see: shown as is, so a check of
                    // the chain reports it.
                    _ => Some([0; 32]),
                };
                last.insert(row.node_index, (root.day, row.day_hash));
                records.push((position, row.record(node_id, root.day, prev), row));
            }
            f(&root, records)?;
        }
        Ok(())
    }
}

/// The last proof hash of the day record holding epoch `epoch` of `node_id` (a retained
/// proof's previous proof, rolled up).
pub fn rolled_proof_hash(
    day_rows: &impl ReadableTable<(u64, &'static str), &'static [u8]>,
    ids: &impl ReadableTable<u32, &'static str>,
    node_id: &str,
    day: u32,
    epoch: u64,
) -> StoreResult<Option<Hash>> {
    Ok(find_row::<DayRow>(day_rows, ids, day.into(), node_id)?
        .filter(|f| f.row.last_epoch == epoch)
        .map(|f| f.row.last_proof_hash))
}

#[cfg(test)]
mod tests {
    use super::super::epoch_rows::split_chunk;
    use super::*;

    #[test]
    fn a_day_row_reads_back_as_written() {
        let row = DayRow {
            node_index: 7,
            epochs: 288,
            operational_seconds: 86_000,
            heartbeat_count: 2_880,
            credits_micros: 1_194_444,
            first_epoch: 5_000_000,
            last_epoch: 5_000_287,
            prev_day_delta: 3,
            carry_micros: 1_200,
            first_proof_hash: [1; 32],
            last_proof_hash: [2; 32],
            day_hash: [3; 32],
        };
        let mut bytes = Vec::new();
        row.encode_into(&mut bytes);
        assert_eq!(bytes.len(), DAY_ROW_LEN);
        assert_eq!(<DayRow as StoredRow>::decode(&bytes), row);
        let chunk = super::super::epoch_rows::encode_chunk(5, &[row]);
        assert_eq!(split_chunk::<DayRow>(&chunk).unwrap().0, 5);
    }

    #[test]
    fn a_day_holds_the_epochs_that_start_in_it() {
        // 5-minute epochs: 288 a day, the first at midnight.
        let day = 20_000;
        let r = epochs_of_day(day, 300_000_000);
        assert_eq!(r.end - r.start, 288);
        assert_eq!(r.start * 300_000_000, u64::from(day) * DAY_US);
        // 7-minute epochs do not divide a day: each epoch is in the day it starts in.
        let r7 = epochs_of_day(day, 420_000_000);
        let next = epochs_of_day(day + 1, 420_000_000);
        assert_eq!(r7.end, next.start);
    }
}
