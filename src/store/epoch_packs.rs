//! Packs (schema 6, issue 15): stored values of `EPOCH_ROWS` that hold the proof rows of
//! several consecutive epochs, so a small fleet's epochs fill redb's allocations too.
//!
//! redb gives each value a power-of-two run of 4 KiB pages. An epoch cut into chunks of
//! its own ends with a tail that fills its allocation badly: 100 nodes took an 8 KiB
//! chunk and a 4 KiB leaf for 9.2 KB of rows, 130 B a proof against a budget of 96. The
//! close now appends its rows to the open pack (the table's last value) until it holds
//! [`PACK_BYTES`] (16 KiB), then starts the next: every value but the open one is full,
//! whatever the fleet size.
//!
//! A pack is a list of runs, each the rows of one epoch from one position on, in key
//! order: `PACK_MARK`, the run count (u16 LE), per run its epoch (u64 LE), first position
//! (u32 LE) and row count (u32 LE), then every run's rows in their compact stored form.
//! It is keyed like a chunk, by its first run: `(epoch, node_id of the first row)`. So
//! the rows of an epoch are found in the values keyed under it and, when the epoch began
//! in a pack opened by an earlier one, in the value just before them.
//!
//! A chunk (schemas 3 to 5, or migrated proofs) reads as one run of the epoch it is
//! keyed under: readers take both through [`runs_in_value`].

use std::borrow::Cow;

use super::epoch_rows::{split_chunk, StoredRow};
use super::error::{StoreError, StoreResult};

/// A pack's first four bytes. A chunk's header is its first position (below 2^31) with
/// the compact flag (2^31) set or not, so it is never all ones.
const PACK_MARK: u32 = u32::MAX;
/// Bytes before a pack's runs: the mark and the run count.
const PACK_HEADER: usize = 6;
/// Bytes of one run's entry in a pack's header.
const RUN_ENTRY: usize = 16;
/// Most bytes a pack holds: 16 KiB less what redb's leaf adds around it (its header,
/// two offsets and the key, whose node id is at most 64 bytes), so a full pack takes
/// exactly four 4 KiB pages (176 rows, 93 B of pages a row). Not 64 KiB (710 rows, 92.3
/// B a row): each close rewrites the open pack, and at 100 nodes 64 KiB packs wrote 2.8
/// KB per node-epoch against 1.5 KB for these (`benches/epoch_storage.rs`); at 100k
/// nodes neither size changes the close.
pub const PACK_BYTES: usize = 16_384 - 128;

/// One epoch's rows from one position on, as a pack stores them (compact form).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub epoch: u64,
    pub position: u32,
    /// `count` rows of `R::STORED_LEN` bytes.
    pub stored: Vec<u8>,
    pub count: u32,
}

impl Run {
    fn end(&self) -> u64 {
        u64::from(self.position) + u64::from(self.count)
    }
}

/// Whether a stored value of `EPOCH_ROWS` is a pack (otherwise a chunk).
pub fn is_pack(bytes: &[u8]) -> bool {
    bytes.len() >= 4 && bytes[..4] == PACK_MARK.to_le_bytes()
}

/// The bytes a pack of `runs` takes.
pub fn encoded_len(runs: &[Run]) -> usize {
    PACK_HEADER
        + runs
            .iter()
            .map(|r| RUN_ENTRY + r.stored.len())
            .sum::<usize>()
}

pub fn encode_pack(runs: &[Run]) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(runs));
    out.extend_from_slice(&PACK_MARK.to_le_bytes());
    out.extend_from_slice(&(runs.len() as u16).to_le_bytes());
    for r in runs {
        out.extend_from_slice(&r.epoch.to_le_bytes());
        out.extend_from_slice(&r.position.to_le_bytes());
        out.extend_from_slice(&r.count.to_le_bytes());
    }
    for r in runs {
        out.extend_from_slice(&r.stored);
    }
    out
}

/// Where a pack's run is: its epoch, first position and row count, and the byte range of
/// its rows in the pack.
struct RunEntry {
    epoch: u64,
    position: u32,
    count: u32,
    rows: std::ops::Range<usize>,
}

/// A pack's runs (rows of `row_len` bytes each).
fn pack_index(bytes: &[u8], row_len: usize) -> StoreResult<Vec<RunEntry>> {
    let bad = |what: &str| StoreError::corrupt(format!("a stored pack of proof rows {what}"));
    if bytes.len() < PACK_HEADER {
        return Err(bad("is cut short"));
    }
    let runs = usize::from(u16::from_le_bytes([bytes[4], bytes[5]]));
    let mut at = PACK_HEADER + runs * RUN_ENTRY;
    if bytes.len() < at {
        return Err(bad("is cut short"));
    }
    let mut out: Vec<RunEntry> = Vec::with_capacity(runs);
    for i in 0..runs {
        let e = &bytes[PACK_HEADER + i * RUN_ENTRY..PACK_HEADER + (i + 1) * RUN_ENTRY];
        let epoch = u64::from_le_bytes(e[..8].try_into().expect("8 bytes"));
        let position = u32::from_le_bytes(e[8..12].try_into().expect("4 bytes"));
        let count = u32::from_le_bytes(e[12..16].try_into().expect("4 bytes"));
        let len = (count as usize)
            .checked_mul(row_len)
            .ok_or_else(|| bad("has a run too long"))?;
        let end = at
            .checked_add(len)
            .ok_or_else(|| bad("has a run too long"))?;
        if end > bytes.len() {
            return Err(bad("is cut short"));
        }
        if count == 0 {
            return Err(bad("has an empty run"));
        }
        // Runs follow each other: epochs ascending, each epoch's positions ascending, so
        // that the first run of an epoch is where its rows in the pack begin.
        if out
            .last()
            .is_some_and(|last| (last.epoch, last.position) >= (epoch, position))
        {
            return Err(bad("has runs out of order"));
        }
        out.push(RunEntry {
            epoch,
            position,
            count,
            rows: at..end,
        });
        at = end;
    }
    if at != bytes.len() {
        return Err(bad("has bytes after its runs"));
    }
    Ok(out)
}

/// A pack's runs, owned (to append to, or to keep some of).
pub fn decode_pack<R: StoredRow>(bytes: &[u8]) -> StoreResult<Vec<Run>> {
    Ok(pack_index(bytes, R::STORED_LEN)?
        .into_iter()
        .map(|r| Run {
            epoch: r.epoch,
            position: r.position,
            stored: bytes[r.rows].to_vec(),
            count: r.count,
        })
        .collect())
}

/// Expands stored (compact) rows to `R::LEN` bytes each.
fn expand<R: StoredRow>(stored: &[u8]) -> Vec<u8> {
    if R::STORED_LEN == R::LEN {
        return stored.to_vec();
    }
    let mut out = Vec::with_capacity(stored.len() / R::STORED_LEN * R::LEN);
    for row in stored.chunks_exact(R::STORED_LEN) {
        R::expand_into(row, &mut out);
    }
    out
}

/// One epoch's rows in a stored value, as read: `R::LEN` bytes a row.
pub struct ReadRun<'a> {
    pub epoch: u64,
    pub rows: Cow<'a, [u8]>,
}

/// Every run of a stored value keyed under epoch `value_key`. A chunk is one run of
/// `value_key`.
pub fn runs_of_value<R: StoredRow>(value_key: u64, bytes: &[u8]) -> StoreResult<Vec<ReadRun<'_>>> {
    if !is_pack(bytes) {
        let (_, rows) = split_chunk::<R>(bytes)?;
        return Ok(vec![ReadRun {
            epoch: value_key,
            rows,
        }]);
    }
    Ok(pack_index(bytes, R::STORED_LEN)?
        .into_iter()
        .map(|r| ReadRun {
            epoch: r.epoch,
            rows: Cow::Owned(expand::<R>(&bytes[r.rows])),
        })
        .collect())
}

/// The rows of epoch `key` in a stored value keyed under epoch `value_key`: the first
/// position and the rows (`R::LEN` bytes each); None when it holds none of them.
pub fn runs_in_value<R: StoredRow>(
    value_key: u64,
    bytes: &[u8],
    key: u64,
) -> StoreResult<Option<(u64, Cow<'_, [u8]>)>> {
    if !is_pack(bytes) {
        if value_key != key {
            return Ok(None);
        }
        return split_chunk::<R>(bytes).map(Some);
    }
    Ok(pack_index(bytes, R::STORED_LEN)?
        .into_iter()
        .find(|r| r.epoch == key)
        .map(|r| {
            (
                u64::from(r.position),
                Cow::Owned(expand::<R>(&bytes[r.rows])),
            )
        }))
}

/// The epochs a stored value keyed under epoch `value_key` holds rows of, in order, read
/// from its header (a chunk holds only `value_key`'s).
pub fn epochs_held<R: StoredRow>(value_key: u64, bytes: &[u8]) -> StoreResult<Vec<u64>> {
    if !is_pack(bytes) {
        return Ok(vec![value_key]);
    }
    let mut epochs: Vec<u64> = pack_index(bytes, R::STORED_LEN)?
        .iter()
        .map(|r| r.epoch)
        .collect();
    epochs.dedup();
    Ok(epochs)
}

/// Where the stored rows of `epoch` end in a value (the first position not stored in
/// it), if it holds any.
pub fn stored_end<R: StoredRow>(
    value_key: u64,
    bytes: &[u8],
    epoch: u64,
) -> StoreResult<Option<u64>> {
    if !is_pack(bytes) {
        if value_key != epoch {
            return Ok(None);
        }
        let (position, rows) = split_chunk::<R>(bytes)?;
        return Ok(Some(position + (rows.len() / R::LEN) as u64));
    }
    Ok(pack_index(bytes, R::STORED_LEN)?
        .into_iter()
        .filter(|r| r.epoch == epoch)
        .map(|r| u64::from(r.position) + u64::from(r.count))
        .max())
}

/// Appends `stored` (rows of `R::STORED_LEN` bytes of `epoch` from `position` on) to
/// the open pack `runs` while it has room. Returns the rows taken.
pub fn append<R: StoredRow>(
    runs: &mut Vec<Run>,
    epoch: u64,
    position: u32,
    stored: &[u8],
) -> usize {
    let rows = stored.len() / R::STORED_LEN;
    let used = encoded_len(runs);
    let extends = runs
        .last()
        .is_some_and(|r| r.epoch == epoch && r.end() == u64::from(position));
    let header = if extends { 0 } else { RUN_ENTRY };
    let room = PACK_BYTES.saturating_sub(used + header) / R::STORED_LEN;
    let take = rows.min(room);
    if take == 0 {
        return 0;
    }
    let bytes = &stored[..take * R::STORED_LEN];
    match runs.last_mut() {
        Some(r) if extends => {
            r.stored.extend_from_slice(bytes);
            r.count += take as u32;
        }
        _ => runs.push(Run {
            epoch,
            position,
            stored: bytes.to_vec(),
            count: take as u32,
        }),
    }
    take
}

#[cfg(test)]
mod tests {
    use super::super::epoch_rows::{encode_chunk, ProofRow, ROW_LEN, STORED_ROW_LEN};
    use super::*;

    fn row(i: u32) -> ProofRow {
        ProofRow {
            node_index: i,
            operational_seconds: 300,
            heartbeat_count: 10,
            prev_delta: 1,
            credits_micros: 4_166,
            carry_micros: 2_400,
            heartbeats_root: [i as u8; 32],
            proof_hash: [(i + 1) as u8; 32],
        }
    }

    fn stored(rows: impl Iterator<Item = u32>) -> Vec<u8> {
        let mut out = Vec::new();
        for i in rows {
            row(i).encode_stored_into(&mut out);
        }
        out
    }

    #[test]
    fn a_pack_reads_back_each_epochs_rows_and_a_chunk_reads_as_one_run() {
        let mut runs = Vec::new();
        assert_eq!(append::<ProofRow>(&mut runs, 7, 90, &stored(0..10)), 10);
        assert_eq!(append::<ProofRow>(&mut runs, 7, 100, &stored(10..12)), 2);
        assert_eq!(append::<ProofRow>(&mut runs, 8, 0, &stored(20..25)), 5);
        assert_eq!(runs.len(), 2, "contiguous rows of one epoch extend its run");
        let bytes = encode_pack(&runs);
        assert!(is_pack(&bytes));
        assert_eq!(bytes.len(), encoded_len(&runs));
        let (position, rows) = runs_in_value::<ProofRow>(7, &bytes, 7).unwrap().unwrap();
        assert_eq!(position, 90);
        let read: Vec<ProofRow> = rows.chunks_exact(ROW_LEN).map(ProofRow::decode).collect();
        assert_eq!(read, (0..12).map(row).collect::<Vec<_>>());
        let (position, rows) = runs_in_value::<ProofRow>(7, &bytes, 8).unwrap().unwrap();
        assert_eq!((position, rows.len()), (0, 5 * ROW_LEN));
        assert!(runs_in_value::<ProofRow>(7, &bytes, 9).unwrap().is_none());
        assert_eq!(stored_end::<ProofRow>(7, &bytes, 7).unwrap(), Some(102));
        assert_eq!(decode_pack::<ProofRow>(&bytes).unwrap(), runs);
        assert_eq!(runs_of_value::<ProofRow>(7, &bytes).unwrap().len(), 2);

        let chunk = encode_chunk(3, &[row(1), row(2)]);
        assert!(!is_pack(&chunk));
        assert_eq!(
            runs_in_value::<ProofRow>(5, &chunk, 5).unwrap().unwrap().0,
            3
        );
        assert!(runs_in_value::<ProofRow>(5, &chunk, 6).unwrap().is_none());
        assert_eq!(stored_end::<ProofRow>(5, &chunk, 5).unwrap(), Some(5));
    }

    #[test]
    fn a_pack_takes_rows_until_it_fills_its_allocation() {
        let mut runs = Vec::new();
        let many = stored(0..1_000);
        let taken = append::<ProofRow>(&mut runs, 1, 0, &many);
        assert_eq!(
            taken,
            (PACK_BYTES - PACK_HEADER - RUN_ENTRY) / STORED_ROW_LEN
        );
        assert!(encoded_len(&runs) <= PACK_BYTES);
        assert!(encoded_len(&runs) + STORED_ROW_LEN > PACK_BYTES);
        assert_eq!(append::<ProofRow>(&mut runs, 2, 0, &many), 0);
        // 40-node epochs: as many whole runs as fit, then part of the next fills the rest.
        let mut runs = Vec::new();
        let mut epochs = 0;
        while append::<ProofRow>(&mut runs, epochs, 0, &stored(0..40)) == 40 {
            epochs += 1;
        }
        let run_bytes = (RUN_ENTRY + 40 * STORED_ROW_LEN) as u64;
        assert_eq!(epochs, (PACK_BYTES - PACK_HEADER) as u64 / run_bytes);
        assert_eq!(runs.len() as u64, epochs + 1, "the last run is a part");
        assert!(encoded_len(&runs) + STORED_ROW_LEN > PACK_BYTES);
    }

    #[test]
    fn a_damaged_pack_is_corrupt_not_a_panic() {
        let bytes = encode_pack(&[Run {
            epoch: 1,
            position: 0,
            stored: stored(0..3),
            count: 3,
        }]);
        for cut in [5, 10, bytes.len() - 1] {
            assert!(
                runs_of_value::<ProofRow>(1, &bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(runs_of_value::<ProofRow>(1, &longer).is_err());
        let mut huge = bytes;
        huge[18..22].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(runs_of_value::<ProofRow>(1, &huge).is_err());
        // Empty runs, and runs out of order, would make readers disagree on where an
        // epoch's rows are: corrupt.
        let run = |epoch, position, count| Run {
            epoch,
            position,
            stored: stored(0..count),
            count,
        };
        let empty = encode_pack(&[run(1, 0, 2), run(2, 0, 0)]);
        assert!(runs_of_value::<ProofRow>(1, &empty).is_err());
        for (a, b) in [((2, 0), (1, 0)), ((1, 5), (1, 5)), ((1, 5), (1, 2))] {
            let bytes = encode_pack(&[run(a.0, a.1, 2), run(b.0, b.1, 2)]);
            assert!(
                runs_of_value::<ProofRow>(1, &bytes).is_err(),
                "{a:?} then {b:?}"
            );
            assert!(epochs_held::<ProofRow>(1, &bytes).is_err());
        }
        let fine = encode_pack(&[run(1, 5, 2), run(3, 0, 2), run(3, 9, 1)]);
        assert_eq!(epochs_held::<ProofRow>(1, &fine).unwrap(), vec![1, 3]);
    }
}
