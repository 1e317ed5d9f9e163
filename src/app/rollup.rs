//! Rolls proofs past `PROOF_RETENTION` up into signed daily records (see `domain::day`),
//! a UTC day at a time, oldest first, then deletes that day's proof rows: what an
//! appliance keeps forever is then about 144 bytes per node and day, plus the signed
//! roots of epochs and days.
//!
//! A day is rolled up in writer jobs that can each be interrupted: (1) its signed root,
//! (2) its records in chunks, (3) deleting its epochs' rows. A restart finds the day again
//! (its rows are the oldest) and goes on: recomputed records are identical, stored chunks
//! are skipped, and once every record is stored the rows are only deleted.

use std::sync::Arc;

use ed25519_dalek::SigningKey;
use serde_json::json;

use super::AppState;
use crate::crypto::keys::key_id;
use crate::domain::day::{date, sign_day, DayRoot};
use crate::domain::merkle::{
    block_roots_from_levels, leaf_hash, levels, levels_root, Hash, BLOCK_LEAVES,
};
use crate::error::{ApiError, ApiResult};
use crate::store::day_rows::{epochs_of_day, plan_day, DayPlan};
use crate::store::{Actor, Store, Writer};

/// Proof-row chunks one writer job deletes (a few ms of the writer each).
const DROP_CHUNKS_PER_JOB: usize = 2_000;
/// Record chunks one writer job stores.
const CHUNKS_PER_JOB: usize = 4;

/// Rolls up every day past retention; returns the days rolled up. Nothing when
/// `PROOF_RETENTION` is 0.
pub async fn roll_up_due_days(app: &AppState) -> ApiResult<Vec<u32>> {
    let retention_us = app.config.proof_retention.as_micros() as u64;
    if retention_us == 0 {
        return Ok(Vec::new());
    }
    let mirrored = app
        .metrics
        .mirror
        .enabled
        .load(std::sync::atomic::Ordering::Relaxed);
    roll_up_due_days_with(
        &app.poot_closing,
        &app.writer,
        &app.store,
        &app.keys.proof,
        (retention_us, mirrored),
        || app.clock.now_us(),
    )
    .await
}

/// [`roll_up_due_days`] on a writer and store. `closing` is the PoOT closer's lock: a
/// roll-up and an epoch close never run at once. With `mirrored` (the MongoDB mirror is
/// on), a day waits until MongoDB holds every proof of it: the cluster keeps the long
/// history, and the rows are what its documents are rendered from.
pub async fn roll_up_due_days_with(
    closing: &tokio::sync::Mutex<()>,
    writer: &Writer<ApiError>,
    store: &Store,
    proof_key: &SigningKey,
    (retention_us, mirrored): (u64, bool),
    now_us: impl Fn() -> u64,
) -> ApiResult<Vec<u32>> {
    let _one_at_a_time = closing.lock().await;
    let mut rolled = Vec::new();
    // Read from a snapshot first: the timer asks every second, and an idle appliance must
    // not commit for nothing.
    while let Some((day, length_us)) = store
        .reader()?
        .next_day_to_roll_up(now_us(), retention_us)?
    {
        let last_epoch = epochs_of_day(day, length_us).end.saturating_sub(1);
        if mirrored && !store.reader()?.mirror_holds_epochs_through(last_epoch)? {
            tracing::debug!(day = %date(day), "roll-up waits for the MongoDB mirror to hold the day's proofs");
            break;
        }
        roll_up_day(writer, store, proof_key, (day, length_us), now_us()).await?;
        tracing::info!(day = %date(day), "rolled proofs past PROOF_RETENTION up into daily records");
        rolled.push(day);
    }
    Ok(rolled)
}

async fn roll_up_day(
    writer: &Writer<ApiError>,
    store: &Store,
    proof_key: &SigningKey,
    (day, length_us): (u32, u64),
    now_us: u64,
) -> ApiResult<()> {
    let epochs = epochs_of_day(day, length_us);
    // Every record stored already: an interrupted deletion, which only goes on.
    if !store.reader()?.day_records_complete(day)? {
        let plan = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || plan_day(&*store.db.current()?, day, length_us))
                .await
                .map_err(|e| ApiError::unavailable(format!("rolling up a day failed: {e}")))??
        };
        let root = signed_root(&plan, proof_key, now_us);
        let record_count = root.record_count;
        let (stored_root, blocks) = (root.clone(), root_blocks(&plan));
        writer
            .write(move |b| match b.day_root(day)? {
                Some(r) if r.root == stored_root.root && r.record_count == record_count => Ok(()),
                Some(_) => Err(ApiError::unavailable(format!(
                    "day {} is rolled up with another root; refusing to rewrite it",
                    date(day)
                ))),
                None => Ok(b.put_day_root(&stored_root, &blocks)?),
            })
            .await?;
        let plan = Arc::new(plan);
        let chunks: Vec<usize> = (0..plan.rows.len()).step_by(BLOCK_LEAVES).collect();
        for group in chunks.chunks(CHUNKS_PER_JOB) {
            let (plan, group) = (plan.clone(), group.to_vec());
            writer
                .write(move |b| {
                    for start in group {
                        let end = (start + BLOCK_LEAVES).min(plan.rows.len());
                        b.write_day_chunk(day, start as u32, &plan.rows[start..end])?;
                    }
                    Ok(())
                })
                .await?;
        }
        let (root_hex, records) = (hex::encode(root.root), plan.rows.len());
        writer
            .write(move |b| {
                b.audit(
                    &Actor::system(),
                    "poot.day_rollup",
                    &format!("day:{}", date(day)),
                    json!({"day": date(day), "records": records, "day_root": root_hex}),
                )?;
                Ok(())
            })
            .await?;
    }
    loop {
        let range = epochs.clone();
        let removed = writer
            .write(move |b| Ok(b.drop_epoch_rows(range, DROP_CHUNKS_PER_JOB)?))
            .await?;
        if removed == 0 {
            break;
        }
    }
    Ok(())
}

fn leaves(plan: &DayPlan) -> Vec<Hash> {
    plan.rows
        .iter()
        .map(|(_, r)| leaf_hash(&r.day_hash))
        .collect()
}

fn root_blocks(plan: &DayPlan) -> Vec<Hash> {
    if plan.rows.is_empty() {
        return Vec::new();
    }
    block_roots_from_levels(&levels(&leaves(plan)))
}

/// The day's root over its records, signed.
fn signed_root(plan: &DayPlan, key: &SigningKey, now_us: u64) -> DayRoot {
    let root = levels_root(&levels(&leaves(plan)));
    DayRoot {
        day: plan.day,
        root,
        signature: sign_day(key, plan.day, &root),
        key_id: key_id(&key.verifying_key()),
        record_count: plan.rows.len() as u64,
        first_epoch: plan.epochs.start,
        last_epoch: plan.epochs.end.saturating_sub(1),
        rolled_at_us: now_us,
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal::Decimal;

    use super::*;
    use crate::app::poot::{close_due_epochs_with, CloseParams};
    use crate::domain::day::{verify_day_chain, verify_day_document, DayDocument};
    use crate::domain::ledger::{day_of, DAY_US};
    use crate::domain::proof::Proof;
    use crate::store::tables::{POOT_CLOSED_UNTIL_KEY, POOT_LENGTH_KEY};
    use crate::store::{seed, WriterSettings};

    const S: u64 = 1_000_000;
    /// Four epochs a day keep the test small.
    const LENGTH: u64 = 6 * 3600 * S;
    /// 40 rows an epoch: a pack holds four and a bit, so the days' edges fall inside
    /// packs, which roll-up trims (`epoch_packs`).
    const NODES: usize = 40;

    fn history(store: &Store, id: &str) -> Vec<Proof> {
        store
            .reader()
            .unwrap()
            .proof_history(id, None, 1000)
            .unwrap()
            .items
    }

    /// Proofs past a day's retention become one signed, chained record per node and day;
    /// the retained proofs are served as before and link to the rolled-up ones.
    #[tokio::test]
    async fn proofs_past_retention_roll_up_into_daily_records_that_verify() {
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = crate::store::db::open_with_clock(dir.path(), 100).unwrap();
        let today = day_of(clock.now_us());
        // Three whole days of heartbeats, every 2 hours, from three days ago.
        let start = u64::from(today - 3) * DAY_US;
        seed::in_transaction(&store, &clock, |b| {
            b.set_meta_u64(POOT_CLOSED_UNTIL_KEY, start).unwrap();
            b.set_meta_u64(POOT_LENGTH_KEY, LENGTH).unwrap();
            seed::put_nodes(b, (0..NODES).map(|i| seed::node("node_", i, start))).unwrap();
            seed::put_heartbeats(b, "node_", NODES, 36, |i, h| {
                start + h * 2 * 3600 * S + i as u64 * S
            })
            .unwrap();
        });
        let params = CloseParams {
            length_us: LENGTH,
            timeout_us: 3 * 3600 * S,
            reward_per_hour: Decimal::new(5, 2),
            proof_key: crate::crypto::keys::generate_signing_key(),
        };
        let (writer, thread) =
            Writer::start(&store, clock.clone(), WriterSettings::new(1000)).unwrap();
        let closing = tokio::sync::Mutex::new(());
        for _ in 0..2 {
            close_due_epochs_with(&closing, &writer, &store, &params, |_| {})
                .await
                .unwrap();
        }
        let ids: Vec<String> = (0..NODES).map(|i| seed::node_id("node_", i)).collect();
        let before: Vec<Vec<Proof>> = ids.iter().map(|id| history(&store, id)).collect();
        assert!(before[0].len() >= 12, "{} proofs", before[0].len());

        // Retention of one day: the two oldest days are due, yesterday is not.
        let rolled = roll_up_due_days_with(
            &closing,
            &writer,
            &store,
            &params.proof_key,
            (DAY_US, false),
            || clock.now_us(),
        )
        .await
        .unwrap();
        assert_eq!(rolled, vec![today - 3, today - 2]);
        drop(writer);
        thread.join().unwrap();

        let key = params.proof_key.verifying_key();
        let reader = store.reader().unwrap();
        for (id, proofs) in ids.iter().zip(&before) {
            let days = reader.day_history(id, None, 10).unwrap().items;
            let docs: Vec<DayDocument> = days
                .iter()
                .rev()
                .map(|(record, root, path)| record.document(root, path))
                .collect();
            assert_eq!(docs.len(), 2, "{id}");
            for doc in &docs {
                verify_day_document(doc, &key).unwrap();
            }
            verify_day_chain(&docs).unwrap();
            // Each record sums its day's proofs and names the first and last.
            for (doc, day) in docs.iter().zip([today - 3, today - 2]) {
                let of_day: Vec<&Proof> = proofs
                    .iter()
                    .rev()
                    .filter(|p| day_of(p.window_start_us) == day)
                    .collect();
                assert_eq!(doc.epochs as usize, of_day.len());
                assert_eq!(
                    doc.operational_seconds,
                    of_day.iter().map(|p| p.operational_seconds).sum::<u64>()
                );
                assert_eq!(doc.first_proof_hash, hex::encode(of_day[0].proof_hash));
                assert_eq!(
                    doc.last_proof_hash,
                    hex::encode(of_day.last().unwrap().proof_hash)
                );
                // Their epochs' proofs are gone and point to the day.
                let epoch = of_day[0].epoch;
                assert_eq!(reader.proof(id, epoch).unwrap(), None);
                assert_eq!(reader.rolled_up_day_of(id, epoch).unwrap(), Some(day));
            }
            // The retained proofs are served exactly as before, the oldest linking to the
            // last proof of the last rolled-up day.
            let retained: Vec<Proof> = proofs
                .iter()
                .filter(|p| day_of(p.window_start_us) > today - 2)
                .cloned()
                .collect();
            assert_eq!(history(&store, id), retained);
            assert_eq!(
                retained.last().unwrap().prev_proof_hash.map(hex::encode),
                Some(docs[1].last_proof_hash.clone())
            );
        }
        let report = crate::store::verify::verify_database(&reader, &key, |_| {})
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((report.days, report.day_records), (2, 2 * NODES as u64));
    }
}
