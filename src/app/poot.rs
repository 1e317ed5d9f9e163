//! PoOT: closes every finished epoch (catching up after downtime), computing its proofs
//! outside the writer and storing them in short chunks, and prunes raw heartbeats past
//! retention whose epochs are proven. The timer that runs both is `jobs::poot`; the
//! `calculate` handler closes on demand.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use rust_decimal::Decimal;
use serde_json::json;

use super::{AppState, WriterUse};
use crate::clock::Micros;
use crate::crypto::keys::key_id;
use crate::domain::ledger::day_of;
use crate::domain::merkle::leaf_hash;
use crate::domain::merkle::{block_roots_from_levels, levels as merkle_levels, levels_root, Hash};
use crate::domain::poot::{
    epoch_window, first_epoch_at_or_after, proof_leaf, EpochParams, NodeEpochOutput,
};
use crate::domain::proof::{sign_epoch, Epoch};
use crate::error::{ApiError, ApiResult};
use crate::store::epoch_rows::chunk_starts;
use crate::store::poot::{
    epoch_proofs, epoch_proofs_from_windows, stored_leaves, ChunkWrite, ProofWrite,
};
use crate::store::settle::epoch_settlement;
use crate::store::tables::{HEARTBEATS_PRUNED_BEFORE_KEY, POOT_CLOSED_UNTIL_KEY, POOT_LENGTH_KEY};
use crate::store::{Actor, Batch, Store, Writer};

/// Heartbeats removed per write transaction while pruning (keeps each batch short).
const PRUNE_CHUNK: usize = 10_000;

/// Everything closing an epoch needs, captured once.
#[derive(Clone)]
pub struct CloseParams {
    pub length_us: Micros,
    pub timeout_us: Micros,
    pub reward_per_hour: Decimal,
    pub proof_key: SigningKey,
}

impl CloseParams {
    pub fn from_app(app: &AppState) -> Self {
        Self {
            length_us: app.config.poot_calculation_interval.as_micros() as u64,
            timeout_us: app.config.heartbeat_timeout.as_micros() as u64,
            reward_per_hour: app.config.reward_usdt_per_hour,
            proof_key: app.keys.proof.clone(),
        }
    }
}

/// Refuses an epoch length that differs from the one this database was closed with:
/// epoch numbers would change meaning and signed epochs would be renumbered.
pub fn check_epoch_length(
    reader: &crate::store::queries::Reader,
    length_us: Micros,
) -> Result<(), String> {
    match reader.meta_u64(POOT_LENGTH_KEY).map_err(|e| e.to_string())? {
        Some(stored) if stored != length_us => Err(format!(
            "invalid value {}s for POOT_CALCULATION_INTERVAL: this database's epochs are {}s long; changing the epoch length of existing data is not supported (it would renumber signed epochs)",
            length_us / 1_000_000,
            stored / 1_000_000
        )),
        _ => Ok(()),
    }
}

/// Proofs sent per writer job while closing an epoch; a job stops early once it has run
/// for [`JOB_BUDGET`], so it holds the writer (and so heartbeat ingestion) no longer than
/// that; the epoch's proofs are computed before, outside the writer. Storing a proof row
/// takes about a microsecond: a 10k-node epoch is one job (one durable commit).
pub const PROOF_CHUNK: usize = 10_000;

/// How long one chunk job may run inside the writer before it stops (its commit follows).
pub const JOB_BUDGET: Duration = Duration::from_millis(20);

/// Debug builds only: `LUCID_DEBUG_POOT_CHUNK` (proofs per job),
/// `LUCID_DEBUG_POOT_SETTLE_ROWS` (rows settled per job) and
/// `LUCID_DEBUG_POOT_CHUNK_PAUSE_MS` (a pause after each of those jobs) let a test kill
/// the server in the middle of a close.
fn debug_knob(name: &str) -> Option<u64> {
    if cfg!(debug_assertions) {
        std::env::var(name).ok().and_then(|v| v.parse().ok())
    } else {
        None
    }
}

/// The next epoch to close, as the writer found it.
#[derive(Debug, Clone)]
pub struct DueEpoch {
    pub epoch: u64,
    /// The stamp that showed the epoch finished (its `closed_at`).
    pub now: Micros,
    /// Set when a close of this epoch was interrupted: its record is already stored and
    /// the close resumes with the record's parameters.
    pub record: Option<Epoch>,
}

/// What closing one epoch did and how long it held the writer.
#[derive(Debug, Clone, Default)]
pub struct CloseReport {
    pub epoch: u64,
    /// Proofs written now (fewer than the epoch's when a close resumed).
    pub proofs_written: usize,
    pub proof_count: u64,
    pub resumed: bool,
    /// Reading heartbeats (or finishing accumulated windows) and computing proofs
    /// (outside the writer).
    pub compute: Duration,
    /// The windows were accumulated as the heartbeats committed (no scan).
    pub accumulated: bool,
    pub writer: WriterUse,
    pub total: Duration,
}

/// Closes every finished epoch not yet closed; returns their numbers. Idempotent: an
/// epoch is closed once, and an open epoch never.
pub async fn close_due_epochs(app: &AppState) -> ApiResult<Vec<u64>> {
    let params = CloseParams::from_app(app);
    if !maybe_due(&app.store, &params, app.clock.now_us())? {
        return Ok(Vec::new());
    }
    let closing = &app.poot_closing;
    let reports = close_due_epochs_with(closing, &app.writer, &app.store, &params, |r| {
        app.metrics.proofs.inc_by(r.proofs_written as u64);
        app.metrics.epochs_closed.inc();
        if r.accumulated {
            app.metrics.epochs_accumulated.inc();
        }
        app.metrics
            .epoch_close_seconds
            .observe(r.total.as_secs_f64());
    })
    .await?;
    Ok(reports.into_iter().map(|r| r.epoch).collect())
}

/// [`close_due_epochs`] on a writer and store; `closed` sees each epoch as it closes.
/// `closing` makes one closer run at a time: the service passes [`super::App::poot_closing`]
/// (shared by the timer and `calculate`).
///
/// Each epoch: (1) a short writer job finds the next finished epoch; (2) its proofs are
/// computed from a read snapshot, outside the writer; (3) the first writer job stores the
/// signed epoch record with (4) the first proof rows, jobs of [`PROOF_CHUNK`] proofs
/// the rest; (5) jobs settle the stored rows into the nodes' totals and ledgers
/// (`store::settle`), and (6) the last of them moves `closed_until` past the epoch,
/// queues it for the mirror and audits it. A crash
/// anywhere resumes at (2) with the stored record: proofs are recomputed identically,
/// stored ones are skipped, the root must match the record, settled rows are skipped.
pub async fn close_due_epochs_with(
    closing: &tokio::sync::Mutex<()>,
    writer: &Writer<ApiError>,
    store: &Store,
    params: &CloseParams,
    mut closed: impl FnMut(&CloseReport),
) -> ApiResult<Vec<CloseReport>> {
    let _one_closer = closing.lock().await;
    let mut reports = Vec::new();
    loop {
        let p = params.clone();
        let Some(due) = writer.write(move |b| next_due_epoch(b, &p)).await? else {
            break;
        };
        let report = close_epoch_in_chunks(writer, store, params, due).await?;
        tracing::info!(
            epoch = report.epoch,
            proofs = report.proof_count,
            written = report.proofs_written,
            resumed = report.resumed,
            seconds = report.total.as_secs_f64(),
            longest_writer_job_ms = report.writer.longest_job.as_secs_f64() * 1000.0,
            "closed PoOT epoch"
        );
        closed(&report);
        reports.push(report);
        if reports.len() % 100 == 0 {
            tracing::info!(closed = reports.len(), "catching up on PoOT epochs");
        }
    }
    Ok(reports)
}

/// Whether an epoch may be due, from a read snapshot: the timer asks every second, and
/// asking the writer each time cost a durable commit a second on an idle appliance (about
/// 32 KiB written each, 2.7 GB a day of flash wear for nothing). The writer decides for
/// real ([`next_due_epoch`]); this only rules out the ticks where nothing can be due.
fn maybe_due(store: &Store, p: &CloseParams, now_us: Micros) -> ApiResult<bool> {
    let reader = store.reader()?;
    let Some(closed_until) = reader.meta_u64(POOT_CLOSED_UNTIL_KEY)? else {
        return Ok(true); // first start: the writer records where closing begins
    };
    let epoch = first_epoch_at_or_after(closed_until, p.length_us);
    let (_, end) = epoch_window(epoch, p.length_us);
    Ok(end <= now_us || reader.epoch(epoch)?.is_some())
}

/// Finds the oldest finished epoch not closed yet, if there is one.
pub fn next_due_epoch(b: &mut Batch<'_>, p: &CloseParams) -> ApiResult<Option<DueEpoch>> {
    // A stamp is strictly after every heartbeat stamped before, and heartbeats are stamped
    // only here in the writer: once `now` is past an epoch's end, no heartbeat for its
    // window can still arrive, and every one stamped before is committed with this job.
    let now = b.stamp_us();
    let current_start = now - now % p.length_us;
    let Some(mut closed_until) = b.meta_u64(POOT_CLOSED_UNTIL_KEY)? else {
        // First start: the current epoch is the first one to close.
        b.set_meta_u64(POOT_CLOSED_UNTIL_KEY, current_start)?;
        b.set_meta_u64(POOT_LENGTH_KEY, p.length_us)?;
        return Ok(None);
    };
    let epoch = first_epoch_at_or_after(closed_until, p.length_us);
    if let Some(record) = b.epoch(epoch)? {
        // Its record is stored but `closed_until` did not move past it: a close that was
        // interrupted. Finish it with the parameters it was signed with.
        if record.length_us != p.length_us {
            return Err(ApiError::unavailable(format!(
                "epoch {epoch} is already closed with another length; refusing to rewrite it"
            )));
        }
        return Ok(Some(DueEpoch {
            epoch,
            now,
            record: Some(record),
        }));
    }
    // Skip, in one step, epochs in which no node can have been up: a long outage or a
    // clock that was far behind must not cost one transaction per empty epoch.
    let first = b.first_heartbeat_at_or_after(closed_until.saturating_sub(p.timeout_us))?;
    let busy_from = first.map_or(current_start, |t| (t - t % p.length_us).min(current_start));
    if busy_from > closed_until {
        b.set_meta_u64(POOT_CLOSED_UNTIL_KEY, busy_from)?;
        closed_until = busy_from;
    }
    let epoch = first_epoch_at_or_after(closed_until, p.length_us);
    let (_, end) = epoch_window(epoch, p.length_us);
    if end > now {
        return Ok(None);
    }
    if b.epoch(epoch)?.is_some() {
        // Signed epochs are never rewritten (this would mean the epoch length changed).
        return Err(ApiError::unavailable(format!(
            "epoch {epoch} is already closed; refusing to rewrite it"
        )));
    }
    Ok(Some(DueEpoch {
        epoch,
        now,
        record: None,
    }))
}

/// An epoch's proofs and signed record, computed outside the writer.
pub struct EpochPlan {
    pub record: Epoch,
    /// Proofs still to store, in `node_id` order, without their inclusion paths yet.
    pub outputs: Vec<NodeEpochOutput>,
    /// Each output's position among all the epoch's proofs (its Merkle leaf index).
    pub positions: Vec<usize>,
    /// The epoch tree's levels, to read the inclusion paths off.
    pub levels: Arc<Vec<Vec<Hash>>>,
    /// The roots of the epoch's 512-proof blocks (stored with the record).
    pub block_roots: Vec<Hash>,
    /// The windows came from the accumulators, not from a scan of the heartbeats.
    pub accumulated: bool,
}

impl EpochPlan {
    /// The outputs as runs of consecutive positions (ranges into `outputs`) of at most
    /// `max` proofs, cut where a chunk of `epoch_rows::chunk_starts` would start: pieces
    /// of up to 709 rows, between which a writer job may stop (rows are appended to packs
    /// whatever the pieces, `epoch_packs`).
    pub fn chunk_ranges(&self, max: usize) -> Vec<std::ops::Range<usize>> {
        let starts: std::collections::HashSet<u64> =
            chunk_starts(self.record.proof_count).into_iter().collect();
        let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
        for (i, &pos) in self.positions.iter().enumerate() {
            match ranges.last_mut() {
                Some(r)
                    if r.len() < max
                        && self.positions[r.end - 1] + 1 == pos
                        && !starts.contains(&(pos as u64)) =>
                {
                    r.end = i + 1
                }
                _ => ranges.push(i..i + 1),
            }
        }
        ranges
    }

    /// The chunk of outputs `range`, ready to store (paths are not stored: they are
    /// computed when asked, from the stored leaves).
    pub fn chunk(&self, range: std::ops::Range<usize>) -> ChunkWrite {
        let position = self.positions[range.start] as u64;
        let items = self.outputs[range]
            .iter()
            .map(|o| ProofWrite {
                proof: o.proof.clone(),
                credit_carry: o.credit_carry,
                node_index: o.node_index,
                prev_epoch: o.prev_epoch,
            })
            .collect();
        ChunkWrite { position, items }
    }
}

/// Computes an epoch's proofs and record from a read snapshot. Deterministic: the same
/// stored data gives the same proofs and root, so an interrupted close resumes exactly.
pub fn plan_epoch(store: &Store, p: &CloseParams, due: &DueEpoch) -> ApiResult<EpochPlan> {
    let (length_us, timeout_us, reward_per_hour) = match &due.record {
        Some(r) => (r.length_us, r.timeout_us, r.reward_per_hour),
        None => (p.length_us, p.timeout_us, p.reward_per_hour),
    };
    let (start, end) = epoch_window(due.epoch, length_us);
    let params = EpochParams {
        epoch: due.epoch,
        length_us,
        timeout_us,
        reward_per_hour,
    };
    // A resumed close: the chunks stored before the interruption stay as they are.
    let stored = match due.record {
        Some(_) => stored_leaves(&*store.db.current()?, due.epoch)?,
        None => Vec::new(),
    };
    let stored_ids: std::collections::HashSet<String> =
        stored.iter().map(|s| s.0.clone()).collect();
    // Windows accumulated as the heartbeats committed, when this process saw them all
    // (taken in any case: a retried or resumed close scans).
    let accumulated = store.accumulators.take(due.epoch, length_us, timeout_us);
    let from_windows = accumulated.is_some() && due.record.is_none();
    let outputs = match accumulated {
        Some(windows) if from_windows => {
            epoch_proofs_from_windows(&*store.db.current()?, &params, windows)?
        }
        _ => epoch_proofs(
            &*store.db.current()?,
            &params,
            start.saturating_sub(timeout_us),
            end,
            &stored_ids,
        )?,
    };
    drop(stored_ids);
    // Every proof of the epoch in node_id order: the ones stored before an interruption
    // and the ones to store now.
    let mut leaves: Vec<(&str, Hash, Option<usize>)> =
        Vec::with_capacity(outputs.len() + stored.len());
    leaves.extend(stored.iter().map(|s| (s.0.as_str(), leaf_hash(&s.2), None)));
    leaves.extend(
        outputs
            .iter()
            .enumerate()
            .map(|(i, o)| (o.proof.node_id.as_str(), proof_leaf(&o.proof), Some(i))),
    );
    if !stored.is_empty() {
        leaves.sort_unstable_by(|a, b| a.0.cmp(b.0));
        // A stored chunk says where its proofs are; the recomputed order must agree.
        let at: std::collections::HashMap<&str, u64> =
            stored.iter().map(|s| (s.0.as_str(), s.1)).collect();
        for (pos, (id, _, out)) in leaves.iter().enumerate() {
            if out.is_none() && at.get(id) != Some(&(pos as u64)) {
                return Err(ApiError::unavailable(format!(
                    "resuming the close of epoch {}: {id}'s stored proof is not where the recomputed epoch puts it; refusing to continue",
                    due.epoch
                )));
            }
        }
    }
    let mut positions = vec![0; outputs.len()];
    for (pos, (_, _, out)) in leaves.iter().enumerate() {
        if let Some(i) = out {
            positions[*i] = pos;
        }
    }
    let hashes: Vec<Hash> = leaves.iter().map(|l| l.1).collect();
    let proof_count = hashes.len() as u64;
    drop(leaves);
    let levels = merkle_levels(&hashes);
    drop(hashes);
    let root = levels_root(&levels);
    let block_roots = block_roots_from_levels(&levels);
    let record = match &due.record {
        Some(r) => {
            if r.root != root || r.proof_count != proof_count {
                return Err(ApiError::unavailable(format!(
                    "resuming the close of epoch {}: recomputed {proof_count} proofs with another root than its record ({} proofs); refusing to continue",
                    due.epoch, r.proof_count
                )));
            }
            r.clone()
        }
        None => Epoch {
            epoch: due.epoch,
            root,
            signature: sign_epoch(&p.proof_key, due.epoch, &root),
            key_id: key_id(&p.proof_key.verifying_key()),
            proof_count,
            closed_at_us: due.now,
            length_us,
            timeout_us,
            reward_per_hour,
        },
    };
    Ok(EpochPlan {
        record,
        outputs,
        positions,
        levels: Arc::new(levels),
        block_roots,
        accumulated: from_windows,
    })
}

/// Steps (2) to (5) of [`close_due_epochs_with`] for one epoch.
pub async fn close_epoch_in_chunks(
    writer: &Writer<ApiError>,
    store: &Store,
    p: &CloseParams,
    due: DueEpoch,
) -> ApiResult<CloseReport> {
    let started = Instant::now();
    let epoch = due.epoch;
    let mut report = CloseReport {
        epoch,
        resumed: due.record.is_some(),
        ..Default::default()
    };
    if report.resumed {
        tracing::warn!(epoch, "resuming an interrupted PoOT epoch close");
    }
    let plan = {
        let (store, p) = (store.clone(), p.clone());
        tokio::task::spawn_blocking(move || plan_epoch(&store, &p, &due))
            .await
            .map_err(|e| ApiError::unavailable(format!("computing epoch proofs failed: {e}")))??
    };
    report.compute = started.elapsed();
    report.proof_count = plan.record.proof_count;
    report.accumulated = plan.accumulated;
    let plan = Arc::new(plan);

    // Proofs of a block not yet whole are served from this tree meanwhile.
    store.closing.set(epoch, plan.levels.clone());
    let written = write_chunks(writer, &mut report, &plan, epoch).await;
    store.closing.clear(epoch);
    report.proofs_written = written?;
    let (start, end) = epoch_window(epoch, plan.record.length_us);
    let (proof_count, root) = (plan.record.proof_count, plan.record.root);
    drop(plan);
    // Step (6), run by the last settling job (one commit less per close: about 32 KiB
    // written, most of what a close of a small fleet writes).
    let finish = move |b: &mut Batch<'_>| -> ApiResult<()> {
        if b.meta_u64(POOT_CLOSED_UNTIL_KEY)?.unwrap_or(0) >= end {
            return Ok(());
        }
        b.set_meta_u64(POOT_CLOSED_UNTIL_KEY, end)?;
        b.mirror_settled_epoch(epoch)?;
        if proof_count > 0 {
            // An epoch without proofs changed nothing but the bookkeeping: no audit event,
            // so an idle appliance does not grow its audit log every few minutes.
            b.audit(
                &Actor::system(),
                "poot.epoch_close",
                &format!("epoch:{epoch}"),
                json!({"epoch": epoch, "proofs": proof_count, "epoch_root": hex::encode(root)}),
            )?;
        }
        Ok(())
    };
    settle_and_finish(writer, store, &mut report, (epoch, day_of(start)), finish).await?;
    report.total = started.elapsed();
    Ok(report)
}

/// Steps (5) and (6): the epoch's stored rows applied to the nodes' totals
/// (`store::settle`) in jobs of a few account values each, the last of which also runs
/// `finish`.
async fn settle_and_finish(
    writer: &Writer<ApiError>,
    store: &Store,
    report: &mut CloseReport,
    (epoch, day): (u64, u32),
    finish: impl Fn(&mut Batch<'_>) -> ApiResult<()> + Send + Sync + 'static,
) -> ApiResult<()> {
    let rows = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || epoch_settlement(&*store.db.current()?, epoch))
            .await
            .map_err(|e| ApiError::unavailable(format!("reading epoch rows failed: {e}")))??
    };
    let rows = Arc::new(rows);
    let finish = Arc::new(finish);
    let per_job =
        debug_knob("LUCID_DEBUG_POOT_SETTLE_ROWS").map_or(usize::MAX, |c| c.max(1) as usize);
    let pause = debug_knob("LUCID_DEBUG_POOT_CHUNK_PAUSE_MS").map(Duration::from_millis);
    let mut next = 0;
    loop {
        let (todo, finish) = (rows.clone(), finish.clone());
        let (consumed, finished) = report
            .writer
            .write(writer, move |b| {
                let rest = &todo[next.min(todo.len())..];
                let consumed = match &rest[..rest.len().min(per_job)] {
                    [] => 0,
                    some => b.settle_epoch_rows(epoch, day, some, JOB_BUDGET)?,
                };
                let finished = next + consumed >= todo.len();
                if finished {
                    finish(b)?;
                }
                Ok((consumed, finished))
            })
            .await?;
        if finished {
            return Ok(());
        }
        next += consumed.max(1);
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
    }
}

/// Step (3): the signed record and the block roots, before any proof (in the same job as
/// the first chunk): a proof is never stored without its epoch's root and signature (the
/// API and the mirror publish proofs with them).
fn store_record(b: &mut Batch<'_>, record: &Epoch, roots: &[Hash]) -> ApiResult<()> {
    match b.epoch(record.epoch)? {
        Some(stored) if stored == *record => {}
        Some(_) => {
            return Err(ApiError::unavailable(format!(
                "epoch {} has a different record stored; refusing to rewrite it",
                record.epoch
            )))
        }
        None => b.put_epoch(record)?,
    }
    if !b.has_epoch_blocks(record.epoch)? {
        b.put_epoch_blocks(record.epoch, roots)?;
    }
    Ok(())
}

/// Steps (3) and (4): the plan's proofs in chunks, a few blocks per writer job. Returns the proofs
/// written (stored chunks are skipped).
async fn write_chunks(
    writer: &Writer<ApiError>,
    report: &mut CloseReport,
    plan: &Arc<EpochPlan>,
    epoch: u64,
) -> ApiResult<usize> {
    let rows = debug_knob("LUCID_DEBUG_POOT_CHUNK").map_or(usize::MAX, |c| c.max(1) as usize);
    let pause = debug_knob("LUCID_DEBUG_POOT_CHUNK_PAUSE_MS").map(Duration::from_millis);
    let ranges = plan.chunk_ranges(rows);
    let mut record = Some((plan.record.clone(), plan.block_roots.clone()));
    let mut written = 0;
    let mut next = 0;
    loop {
        // Chunks up to about PROOF_CHUNK proofs per job.
        let mut chunks = Vec::new();
        let mut proofs = 0;
        for r in &ranges[next.min(ranges.len())..] {
            if !chunks.is_empty() && (proofs + r.len() > PROOF_CHUNK || pause.is_some()) {
                break;
            }
            proofs += r.len();
            chunks.push(plan.chunk(r.clone()));
        }
        let first = record.take();
        let (consumed, count) = report
            .writer
            .write(writer, move |b| {
                if let Some((record, roots)) = &first {
                    store_record(b, record, roots)?;
                }
                b.write_epoch_chunks(epoch, &chunks, JOB_BUDGET)
                    .map_err(ApiError::from)
            })
            .await?;
        written += count;
        next += consumed.max(1);
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
        if next >= ranges.len() {
            return Ok(written);
        }
    }
}

/// Removes raw heartbeats older than the retention whose epochs are closed (a heartbeat
/// still needed to cover the start of the next epoch is kept).
pub async fn prune_heartbeats(app: &AppState) -> ApiResult<usize> {
    let retention_us = app.config.heartbeat_retention.as_micros() as u64;
    let timeout_us = app.config.heartbeat_timeout.as_micros() as u64;
    let mut total = 0;
    loop {
        let removed = app
            .writer
            .write(move |b| {
                let Some(closed_until) = b.meta_u64(POOT_CLOSED_UNTIL_KEY)? else {
                    return Ok(0);
                };
                let cutoff = b
                    .now_us()
                    .saturating_sub(retention_us)
                    .min(closed_until.saturating_sub(timeout_us));
                let removed = b.prune_heartbeats(cutoff, PRUNE_CHUNK)?;
                if removed > 0 {
                    // Epochs whose windows reach back before this cannot be recomputed
                    // from raw heartbeats any more (verify skips that part for them).
                    let before = b.meta_u64(HEARTBEATS_PRUNED_BEFORE_KEY)?.unwrap_or(0);
                    b.set_meta_u64(HEARTBEATS_PRUNED_BEFORE_KEY, before.max(cutoff))?;
                }
                Ok(removed)
            })
            .await?;
        total += removed;
        if removed < PRUNE_CHUNK {
            break;
        }
    }
    if total > 0 {
        tracing::info!(removed = total, "pruned heartbeats past retention");
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::poot::path_entries;
    use crate::store::WriterSettings;

    const S: u64 = 1_000_000;

    fn params() -> CloseParams {
        CloseParams {
            length_us: 300 * S,
            timeout_us: 90 * S,
            reward_per_hour: Decimal::new(5, 2),
            proof_key: crate::crypto::keys::generate_signing_key(),
        }
    }

    /// Closes every due epoch through a writer, as the service does; returns them.
    async fn close_all(
        store: &crate::store::Store,
        clock: &crate::clock::Clock,
        p: &CloseParams,
    ) -> Vec<CloseReport> {
        let (writer, thread) =
            Writer::start(store, clock.clone(), WriterSettings::new(1000)).unwrap();
        // Without an App: a closer lock of its own.
        let closing = tokio::sync::Mutex::new(());
        let mut reports = Vec::new();
        // The first call on a fresh database only records where closing starts.
        for _ in 0..2 {
            reports.extend(
                close_due_epochs_with(&closing, &writer, store, p, |_| {})
                    .await
                    .unwrap(),
            );
        }
        drop(writer);
        thread.join().unwrap();
        reports
    }

    #[tokio::test]
    async fn a_long_silent_outage_is_skipped_in_one_step_not_one_epoch_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = crate::store::db::open_with_clock(dir.path(), 100).unwrap();
        let p = params();
        let now = clock.now_us();
        let long_ago = (now / p.length_us - 10_000) * p.length_us;
        let recent = now - 2 * p.length_us;
        crate::store::seed::in_transaction(&store, &clock, |b| {
            b.set_meta_u64(POOT_CLOSED_UNTIL_KEY, long_ago).unwrap();
            b.set_meta_u64(POOT_LENGTH_KEY, p.length_us).unwrap();
            let hb = crate::store::seed::heartbeat("node_x", 1);
            b.insert_heartbeat(recent, "node_x", &hb).unwrap();
        });
        let closed: Vec<u64> = close_all(&store, &clock, &p)
            .await
            .iter()
            .map(|r| r.epoch)
            .collect();
        // 10,000 silent epochs cost nothing; only the epochs around the heartbeat close.
        assert!(
            closed.len() <= 3,
            "closed {} epochs: {closed:?}",
            closed.len()
        );
        assert!(closed.contains(&(recent / p.length_us)));
    }

    /// `n` nodes with five heartbeats each in the epoch starting at `start`, and
    /// `closed_until` at `start`: the same data every call.
    fn prepare(store: &crate::store::Store, clock: &crate::clock::Clock, n: usize, start: u64) {
        prepare_with(store, clock, n, start, |i| (i as u64) * 7 * S);
    }

    /// [`prepare`] with node `i`'s heartbeats `offset(i)` after the first of the epoch.
    fn prepare_with(
        store: &crate::store::Store,
        clock: &crate::clock::Clock,
        n: usize,
        start: u64,
        offset: impl Fn(usize) -> u64,
    ) {
        prepare_beats(store, clock, (n, 5), start, |i, h| {
            start + h * 40 * S + offset(i)
        });
    }

    /// `n` nodes with `per_node` heartbeats each, heartbeat `h` of node `i` received at
    /// `at(i, h)`, and `closed_until` at `start`.
    fn prepare_beats(
        store: &crate::store::Store,
        clock: &crate::clock::Clock,
        (n, per_node): (usize, u64),
        start: u64,
        at: impl Fn(usize, u64) -> u64,
    ) {
        use crate::store::seed;
        seed::in_transaction(store, clock, |b| {
            b.set_meta_u64(POOT_CLOSED_UNTIL_KEY, start).unwrap();
            b.set_meta_u64(POOT_LENGTH_KEY, 300 * S).unwrap();
            seed::put_nodes(b, (0..n).map(|i| seed::node("node_", i, start))).unwrap();
            seed::put_heartbeats(b, "node_", n, per_node, at).unwrap();
        });
    }

    /// A fresh database in a directory of its own (kept alive by the returned guard).
    fn fresh_store() -> (tempfile::TempDir, crate::store::Store, crate::clock::Clock) {
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = crate::store::db::open_with_clock(dir.path(), 100).unwrap();
        (dir, store, clock)
    }

    fn all_proofs(store: &crate::store::Store) -> Vec<crate::domain::proof::Proof> {
        let mut out = Vec::new();
        store
            .reader()
            .unwrap()
            .for_each_proof(|p| {
                out.push(p);
                Ok(())
            })
            .unwrap();
        out
    }

    /// The epoch's proofs as the mirror renders them: its stored runs one after another,
    /// each named by its first node (`proofs` are the epoch's, in leaf order); with the
    /// position each run starts at.
    fn mirror_runs(
        reader: &crate::store::queries::Reader,
        epoch: u64,
        proofs: &[crate::domain::proof::Proof],
    ) -> (Vec<crate::domain::proof::Proof>, Vec<usize>) {
        let mut rendered = Vec::new();
        let mut starts = Vec::new();
        while rendered.len() < proofs.len() {
            starts.push(rendered.len());
            let first = &proofs[rendered.len()].node_id;
            let run = reader.chunk_proofs(epoch, first).unwrap();
            assert!(
                !run.is_empty(),
                "epoch {epoch}: a run from proof {}",
                rendered.len()
            );
            rendered.extend(run);
        }
        (rendered, starts)
    }

    /// Chunks are sized for redb's allocator, not for the 512-proof Merkle blocks: a
    /// proof whose block spans two chunks is served with the path of the whole tree, by
    /// the API and by the mirror's per-chunk reading alike.
    #[tokio::test]
    async fn proofs_whose_block_spans_chunks_carry_the_paths_of_the_whole_tree() {
        let p = params();
        let n = 1_300; // eight packs of 176 rows or fewer
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = crate::store::db::open_with_clock(dir.path(), 100).unwrap();
        let start = (clock.now_us() / p.length_us - 3) * p.length_us;
        // Every node's five heartbeats inside the one epoch.
        prepare_with(&store, &clock, n, start, |i| (i as u64 % 90) * S);
        close_all(&store, &clock, &p).await;
        let epoch = start / p.length_us;
        let proofs: Vec<_> = all_proofs(&store)
            .into_iter()
            .filter(|p| p.epoch == epoch)
            .collect();
        assert_eq!(proofs.len(), n);
        let leaves: Vec<Hash> = proofs.iter().map(proof_leaf).collect();
        let (root, paths) = crate::domain::merkle::root_and_paths(&leaves);
        let reader = store.reader().unwrap();
        assert_eq!(reader.epoch(epoch).unwrap().unwrap().root, root);
        let (rendered, starts) = mirror_runs(&reader, epoch, &proofs);
        assert!(starts.len() > 1, "the epoch fills more than one value");
        // Every proof near a run or block edge, and every fifth elsewhere.
        let near_edge = |i: usize| {
            starts.iter().any(|s| s.abs_diff(i) <= 2) || matches!(i % 512, 0 | 1 | 510 | 511)
        };
        for (i, proof) in proofs.iter().enumerate() {
            if i % 5 != 0 && !near_edge(i) {
                continue;
            }
            let served = reader.proof(&proof.node_id, epoch).unwrap().unwrap();
            assert_eq!(
                served.inclusion_path,
                path_entries(paths[i].clone()),
                "proof {i} of {n}"
            );
        }
        assert_eq!(rendered.len(), n);
        for (i, (r, served)) in rendered.iter().zip(&proofs).enumerate() {
            assert_eq!(r.inclusion_path, path_entries(paths[i].clone()), "{i}");
            assert_eq!(r.prev_proof_hash, served.prev_proof_hash);
            assert_eq!(r.proof_hash, served.proof_hash);
        }
    }

    /// A small fleet's epochs share packs (`epoch_packs`): an epoch's rows may begin in a
    /// value an earlier epoch opened and run on into the next. Every proof is served, by
    /// node and epoch, along each node's history and in the mirror's runs, as the whole
    /// epoch's tree gives it, and the database verifies.
    #[tokio::test]
    async fn epochs_of_a_small_fleet_share_packs_and_every_proof_reads_as_computed() {
        let p = params();
        // 60 rows (5.5 KB) an epoch: a pack of 16 KiB holds about three, and the runs of
        // most epochs span two packs.
        let (n, epochs) = (60, 12u64);
        let (_dir, store, clock) = fresh_store();
        let start = (clock.now_us() / p.length_us - epochs - 2) * p.length_us;
        // A heartbeat a minute for `epochs` epochs.
        prepare_beats(&store, &clock, (n, epochs * 5), start, |i, h| {
            start + h * 60 * S + (i as u64 % 30) * S
        });
        close_all(&store, &clock, &p).await;
        let proofs = all_proofs(&store);
        let first = start / p.length_us;
        let reader = store.reader().unwrap();
        for epoch in first..first + epochs {
            let of_epoch: Vec<_> = proofs.iter().filter(|p| p.epoch == epoch).collect();
            assert_eq!(of_epoch.len(), n, "epoch {epoch}");
            let leaves: Vec<Hash> = of_epoch.iter().map(|p| proof_leaf(p)).collect();
            let (root, paths) = crate::domain::merkle::root_and_paths(&leaves);
            assert_eq!(reader.epoch(epoch).unwrap().unwrap().root, root);
            for (i, proof) in of_epoch.iter().enumerate() {
                let served = reader.proof(&proof.node_id, epoch).unwrap().unwrap();
                assert_eq!(&&served, proof, "proof {i} of epoch {epoch}");
                assert_eq!(served.inclusion_path, path_entries(paths[i].clone()));
            }
            let of_epoch: Vec<_> = of_epoch.into_iter().cloned().collect();
            let (rendered, _) = mirror_runs(&reader, epoch, &of_epoch);
            assert_eq!(rendered, of_epoch, "epoch {epoch}");
        }
        // Each node's history, newest first, is its proofs of every epoch.
        let id = &proofs[0].node_id;
        let mine: Vec<_> = proofs
            .iter()
            .filter(|p| &p.node_id == id)
            .rev()
            .cloned()
            .collect();
        // (The last heartbeats' timeout reaches into one more epoch.)
        assert!(mine.len() as u64 >= epochs, "{} proofs", mine.len());
        assert_eq!(reader.proof_history(id, None, 100).unwrap().items, mine);
        let report =
            crate::store::verify::verify_database(&reader, &p.proof_key.verifying_key(), |_| {})
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.proofs, proofs.len() as u64);
    }

    /// The windows accumulated as heartbeats commit give the proofs, credits and chain
    /// that scanning the heartbeats at close gives, byte for byte.
    #[tokio::test]
    async fn a_close_from_accumulated_windows_equals_a_close_that_scans() {
        let p = params();
        // More than one thread's share (PARALLEL_MIN_NODES): proved on two threads.
        let n = 1_100;
        let ((_dir_a, a, clock_a), (_dir_b, b, clock_b)) = (fresh_store(), fresh_store());
        // A accumulates from before any heartbeat; B never does.
        a.accumulators.configure(
            (p.length_us, p.timeout_us),
            0,
            crate::store::accumulators::KEPT_EPOCHS,
        );
        let start = (clock_a.now_us() / p.length_us - 4) * p.length_us;
        // Heartbeats spread over about three epochs, some within the timeout of the next.
        let spread = |i: usize| (i as u64 % 40) * 17 * S;
        prepare_with(&a, &clock_a, n, start, spread);
        prepare_with(&b, &clock_b, n, start, spread);
        let reports_a = close_all(&a, &clock_a, &p).await;
        let reports_b = close_all(&b, &clock_b, &p).await;
        assert!(reports_a.iter().any(|r| r.accumulated && r.proof_count > 0));
        assert!(reports_b.iter().all(|r| !r.accumulated));
        let (proofs_a, proofs_b) = (all_proofs(&a), all_proofs(&b));
        assert!(proofs_a.len() > n, "{} proofs", proofs_a.len());
        assert_eq!(proofs_a, proofs_b);
        let (ra, rb) = (a.reader().unwrap(), b.reader().unwrap());
        for i in 0..n {
            let id = crate::store::seed::node_id("node_", i);
            let (na, nb) = (
                ra.node(&id).unwrap().unwrap(),
                rb.node(&id).unwrap().unwrap(),
            );
            assert_eq!(
                (na.balance_usdt, na.credit_carry, na.last_proof),
                (nb.balance_usdt, nb.credit_carry, nb.last_proof)
            );
        }
    }

    /// Windows rebuilt at start from the stored heartbeats, followed by the heartbeats
    /// committed while the rebuild ran, give the proofs a scan gives: every epoch not
    /// closed at the start is then closed without a scan.
    #[tokio::test]
    async fn windows_rebuilt_at_start_with_the_heartbeats_committed_meanwhile_equal_a_scan() {
        use crate::store::{accumulators, seed};
        let p = params();
        let n = 60;
        let ((_dir_a, a, clock_a), (_dir_b, b, clock_b)) = (fresh_store(), fresh_store());
        let start = (clock_a.now_us() / p.length_us - 4) * p.length_us;
        let at = |i: usize, h: u64| start + h * 40 * S + (i as u64 % 40) * 17 * S;
        // Stored before the (pretended) start, one epoch after `start`: no accumulator saw them.
        prepare_beats(&a, &clock_a, (n, 3), start, at);
        prepare_beats(&b, &clock_b, (n, 3), start, at);
        let started = start + p.length_us;
        a.accumulators.configure(
            (p.length_us, p.timeout_us),
            started,
            accumulators::KEPT_EPOCHS,
        );
        let from = a.accumulators.rebuild_from(Some(start), started).unwrap();
        assert_eq!(from, start - p.timeout_us, "the first open epoch's window");
        let snapshot = accumulators::rebuild_snapshot(&a).unwrap();
        a.accumulators.begin_rebuild(from);
        // Committed while the rebuild has not read the stored ones yet: they wait.
        for (store, clock) in [(&a, &clock_a), (&b, &clock_b)] {
            seed::in_transaction(store, clock, |b| {
                seed::put_heartbeats(b, "node_", n, 2, |i, h| at(i, h + 3)).unwrap();
            });
        }
        let read = accumulators::rebuild(&a.accumulators, &snapshot, from).unwrap();
        assert_eq!(read, n * 3);
        a.accumulators.finish_rebuild(started, Ok(read));
        let reports_a = close_all(&a, &clock_a, &p).await;
        close_all(&b, &clock_b, &p).await;
        let accumulated: Vec<bool> = reports_a.iter().map(|r| r.accumulated).collect();
        assert!(accumulated.iter().all(|&x| x), "{accumulated:?}");
        assert!(reports_a.iter().any(|r| r.proof_count > 0));
        assert_eq!(all_proofs(&a), all_proofs(&b));
    }

    #[tokio::test]
    async fn an_interrupted_close_resumes_with_identical_proofs_and_credits_once() {
        let p = params();
        let n = 25;
        let ((_dir_a, a, clock_a), (_dir_b, b, clock_b)) = (fresh_store(), fresh_store());
        let start = (clock_a.now_us() / p.length_us - 3) * p.length_us;
        prepare(&a, &clock_a, n, start);
        prepare(&b, &clock_b, n, start);

        // A closes without interruption.
        let reports_a = close_all(&a, &clock_a, &p).await;
        assert!(reports_a.iter().all(|r| !r.resumed));

        // B stores the record and one chunk of ten, twice (a retried chunk), then
        // "crashes": the writer goes away mid-close.
        {
            let (writer, thread, due, plan) = begin_close(&b, &clock_b, &p).await;
            assert_eq!(due.epoch, start / p.length_us);
            assert_eq!(plan.outputs.len(), n);
            let (record, roots) = (plan.record.clone(), plan.block_roots.clone());
            writer
                .write(move |w| store_record(w, &record, &roots))
                .await
                .unwrap();
            let ranges = plan.chunk_ranges(10);
            assert_eq!(ranges[..2], [0..10, 10..20]);
            for expected in [10, 0] {
                let chunks = vec![plan.chunk(0..10)];
                let epoch = due.epoch;
                let (consumed, written) = writer
                    .write(move |w| Ok(w.write_epoch_chunks(epoch, &chunks, Duration::MAX)?))
                    .await
                    .unwrap();
                assert_eq!(consumed, 1);
                assert_eq!(written, expected, "a stored chunk is never written again");
            }
            // Out of time budget: one chunk is written, the caller resends the rest.
            let (chunks, epoch) = (vec![plan.chunk(10..11), plan.chunk(11..12)], due.epoch);
            let cut = writer
                .write(move |w| Ok(w.write_epoch_chunks(epoch, &chunks, Duration::ZERO)?))
                .await
                .unwrap();
            assert_eq!(cut, (1, 1));
            drop(writer);
            thread.join().unwrap();
        }
        // The half-closed database verifies (the close is reported as under way).
        let key = p.proof_key.verifying_key();
        let half =
            crate::store::verify::verify_database(&b.reader().unwrap(), &key, |_| {}).unwrap();
        assert_eq!((half.epochs_being_closed, half.proofs), (1, 11));

        // The restart resumes: 14 proofs left in the first epoch, then the next epochs.
        let reports_b = close_all(&b, &clock_b, &p).await;
        assert!(reports_b[0].resumed);
        assert_eq!(reports_b[0].proofs_written, n - 11);
        assert_eq!(reports_b[0].proof_count, n as u64);

        // Identical content: proofs, roots and signatures, balances; one credit per proof.
        assert_eq!(all_proofs(&a), all_proofs(&b));
        let (ra, rb) = (a.reader().unwrap(), b.reader().unwrap());
        let epochs_a = ra.all_epochs().unwrap();
        let epochs_b = rb.all_epochs().unwrap();
        assert_eq!(epochs_a.len(), epochs_b.len());
        for (ea, eb) in epochs_a.values().zip(epochs_b.values()) {
            assert_eq!(
                (ea.epoch, ea.root, &ea.signature, ea.proof_count),
                (eb.epoch, eb.root, &eb.signature, eb.proof_count)
            );
        }
        for i in 0..n {
            let id = crate::store::seed::node_id("node_", i);
            let (na, nb) = (
                ra.node(&id).unwrap().unwrap(),
                rb.node(&id).unwrap().unwrap(),
            );
            assert_eq!(
                (
                    na.balance_usdt,
                    na.credit_carry,
                    na.last_proof,
                    na.operational_seconds_total
                ),
                (
                    nb.balance_usdt,
                    nb.credit_carry,
                    nb.last_proof,
                    nb.operational_seconds_total
                )
            );
            let mut refs: Vec<String> = rb
                .ledger(&id)
                .unwrap()
                .into_iter()
                .map(|e| e.reference)
                .collect();
            let before = refs.len();
            refs.dedup();
            assert_eq!(refs.len(), before, "{id} was credited twice for an epoch");
        }
        for (store, name) in [(&a, "a"), (&b, "b")] {
            let r = crate::store::verify::verify_database(&store.reader().unwrap(), &key, |_| {})
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(r.epochs_being_closed, 0);
            assert!(r.epochs_recomputed_from_heartbeats >= 1);
        }
    }

    /// A writer on `store`, the next due epoch and its plan: a close as far as a test that
    /// interrupts it takes it by hand.
    async fn begin_close(
        store: &crate::store::Store,
        clock: &crate::clock::Clock,
        p: &CloseParams,
    ) -> (
        Writer<ApiError>,
        std::thread::JoinHandle<()>,
        DueEpoch,
        EpochPlan,
    ) {
        let (writer, thread) =
            Writer::start(store, clock.clone(), WriterSettings::new(100)).unwrap();
        let q = p.clone();
        let due = writer
            .write(move |w| next_due_epoch(w, &q))
            .await
            .unwrap()
            .unwrap();
        let plan = plan_epoch(store, p, &due).unwrap();
        (writer, thread, due, plan)
    }

    /// Every node record as stored (bytes), in id order: raw, as no reader serves them.
    #[allow(clippy::disallowed_methods)]
    fn node_records(store: &crate::store::Store) -> Vec<Vec<u8>> {
        use redb::{ReadableDatabase, ReadableTable};
        let db = store.db.current().unwrap();
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(crate::store::tables::NODES).unwrap();
        t.iter()
            .unwrap()
            .map(|e| e.unwrap().1.value().to_vec())
            .collect()
    }

    /// Settling happens after the proof rows are stored: a crash between its jobs resumes
    /// to the totals an uninterrupted close gives, each node credited once, and no close
    /// rewrites a node record (the totals live in the account rows).
    #[tokio::test]
    async fn a_close_interrupted_while_settling_resumes_and_credits_each_node_once() {
        let p = params();
        let n = 300; // three account values
        let ((_dir_a, a, clock_a), (_dir_b, b, clock_b)) = (fresh_store(), fresh_store());
        let start = (clock_a.now_us() / p.length_us - 3) * p.length_us;
        // Every node's heartbeats inside the first epoch.
        prepare_with(&a, &clock_a, n, start, |i| (i % 7) as u64 * S);
        prepare_with(&b, &clock_b, n, start, |i| (i % 7) as u64 * S);
        let records_before = node_records(&b);
        close_all(&a, &clock_a, &p).await;

        // B stores the record and every chunk, settles 150 of the 300 rows, and "crashes".
        {
            let (writer, thread, due, plan) = begin_close(&b, &clock_b, &p).await;
            let epoch = due.epoch;
            let (record, roots) = (plan.record.clone(), plan.block_roots.clone());
            let chunks: Vec<ChunkWrite> = plan
                .chunk_ranges(usize::MAX)
                .into_iter()
                .map(|r| plan.chunk(r))
                .collect();
            writer
                .write(move |w| {
                    store_record(w, &record, &roots)?;
                    Ok(w.write_epoch_chunks(epoch, &chunks, Duration::MAX)?)
                })
                .await
                .unwrap();
            let rows = epoch_settlement(&b.db.current().unwrap(), epoch).unwrap();
            assert_eq!(rows.len(), n);
            let day = day_of(epoch_window(epoch, p.length_us).0);
            let settled = writer
                .write(move |w| Ok(w.settle_epoch_rows(epoch, day, &rows[..150], Duration::MAX)?))
                .await
                .unwrap();
            assert_eq!(settled, 150);
            drop(writer);
            thread.join().unwrap();
        }
        let key = p.proof_key.verifying_key();
        let half =
            crate::store::verify::verify_database(&b.reader().unwrap(), &key, |_| {}).unwrap();
        assert_eq!((half.epochs_being_closed, half.proofs), (1, n as u64));

        let reports_b = close_all(&b, &clock_b, &p).await;
        assert!(reports_b[0].resumed);
        assert_eq!(reports_b[0].proofs_written, 0);
        let (ra, rb) = (a.reader().unwrap(), b.reader().unwrap());
        for i in 0..n {
            let id = crate::store::seed::node_id("node_", i);
            let (na, nb) = (
                ra.node(&id).unwrap().unwrap(),
                rb.node(&id).unwrap().unwrap(),
            );
            assert!(nb.balance_usdt > Decimal::ZERO, "{id} was not credited");
            assert_eq!(
                (na.balance_usdt, na.credits_pending_usdt, na.credit_carry),
                (nb.balance_usdt, nb.credits_pending_usdt, nb.credit_carry),
                "{id}"
            );
            assert_eq!(
                (na.last_proof, na.operational_seconds_total),
                (nb.last_proof, nb.operational_seconds_total),
                "{id}"
            );
        }
        for store in [&a, &b] {
            let r = crate::store::verify::verify_database(&store.reader().unwrap(), &key, |_| {})
                .unwrap();
            assert_eq!(r.epochs_being_closed, 0);
        }
        assert_eq!(
            node_records(&b),
            records_before,
            "a close rewrote node records"
        );
    }

    #[tokio::test]
    async fn a_different_epoch_length_is_refused_for_existing_data() {
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = crate::store::db::open_with_clock(dir.path(), 100).unwrap();
        let p = params();
        close_all(&store, &clock, &p).await; // first start records the length
        let reader = store.reader().unwrap();
        assert!(check_epoch_length(&reader, p.length_us).is_ok());
        let err = check_epoch_length(&reader, 600 * S).unwrap_err();
        assert!(err.contains("POOT_CALCULATION_INTERVAL"), "{err}");
    }
}
