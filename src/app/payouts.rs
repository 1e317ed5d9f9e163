//! Payout runs (every PAYOUT_PROCESSING_INTERVAL and on demand) and, with the webhook sink,
//! delivery with bounded retries and exponential backoff. The timers that run them are in
//! `jobs::payouts`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rust_decimal::Decimal;

use super::{AppState, WriterUse};
use crate::domain::payout::{backoff, Payout, PayoutState};
use crate::error::{ApiError, ApiResult};
use crate::payout_sink::webhook::WebhookSink;
use crate::payout_sink::Delivery;
use crate::store::{payouts, Actor, Store, Writer};

/// Nodes sent per write transaction in a run; a job stops early after [`JOB_BUDGET`].
const RUN_CHUNK: usize = 5000;

/// How long one job of a run may hold the writer (heartbeats wait meanwhile) before it
/// leaves the rest to the next job. Its commit follows: a job's payouts are a few
/// sequential values plus the account and head values of its nodes, and at 15 ms (about
/// 2,000 payouts) the commit took under 10 ms in `benches/epoch_close.rs`, keeping the
/// two well under 50 ms.
pub const JOB_BUDGET: Duration = Duration::from_millis(15);

/// The result of one run.
pub struct RunOutcome {
    pub created: Vec<Payout>,
    pub skipped: u64,
}

/// One payout run: every node with a balance is looked at; those due get a payout of
/// their whole balance. Safe to run concurrently: each node is re-checked inside the
/// write transaction, where its balance is already zero if another run paid it.
pub async fn process(app: &AppState, actor: &Actor) -> ApiResult<RunOutcome> {
    let (outcome, _) = process_with(
        &app.store,
        &app.writer,
        app.config.payout_threshold_usdt,
        actor,
    )
    .await?;
    app.metrics.payout_runs.inc();
    app.metrics
        .payout_last_run
        .set((app.clock.now_us() / 1_000_000) as i64);
    if !outcome.created.is_empty() {
        app.payout_wakeup.notify_one();
    }
    Ok(outcome)
}

/// How a run used the writer.
#[derive(Debug, Clone, Default)]
pub struct RunTiming {
    pub candidates: usize,
    /// Finding candidates in a read snapshot (outside the writer, while it pays).
    pub scan: Duration,
    pub writer: WriterUse,
}

/// Candidates the scan hands over at a time: the writer pays one batch (in jobs of at
/// most [`JOB_BUDGET`]) while the scan finds the next.
const SCAN_BATCH: usize = 2000;

/// [`process`] on a store and writer: candidates come from a read snapshot on a blocking
/// thread, in batches, while the writer re-checks and pays the previous batch in jobs of
/// up to [`RUN_CHUNK`] nodes: the scan and the writer run on both cores at once.
pub async fn process_with(
    store: &Store,
    writer: &Writer<ApiError>,
    threshold: Decimal,
    actor: &Actor,
) -> ApiResult<(RunOutcome, RunTiming)> {
    let started = Instant::now();
    // At most two batches wait: the scan stays just ahead of the writer.
    let (batches, mut found) = tokio::sync::mpsc::channel::<Vec<payouts::Candidate>>(2);
    let scan = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || -> ApiResult<(u64, Duration)> {
            let reader = store.reader()?;
            // A send fails only when the run stopped on an error: the walk stops too.
            let not_due = payouts::find_candidates(&reader, threshold, SCAN_BATCH, |batch| {
                batches.blocking_send(batch).is_ok()
            })?;
            Ok((not_due, started.elapsed()))
        })
    };
    let mut timing = RunTiming::default();
    let mut outcome = RunOutcome {
        created: Vec::new(),
        skipped: 0,
    };
    while let Some(batch) = found.recv().await {
        timing.candidates += batch.len();
        let batch = Arc::new(batch);
        let mut from = 0;
        while from < batch.len() {
            let (candidates, actor) = (batch.clone(), actor.clone());
            let to = (from + RUN_CHUNK).min(batch.len());
            // Heartbeats wait while a job runs: it stops after the budget and the rest
            // goes in the next job.
            let chunk = timing
                .writer
                .write(writer, move |b| {
                    payouts::create_due_chunk(
                        b,
                        &candidates[from..to],
                        threshold,
                        &actor,
                        JOB_BUDGET,
                    )
                    .map_err(ApiError::from)
                })
                .await?;
            let payouts::ChunkOutcome {
                created,
                skipped,
                consumed,
            } = chunk;
            from += consumed.max(1);
            outcome.created.extend(created);
            outcome.skipped += skipped;
        }
    }
    let (not_due, scan) = scan
        .await
        .map_err(|e| ApiError::unavailable(format!("finding payout candidates failed: {e}")))??;
    outcome.skipped += not_due;
    timing.scan = scan;
    Ok((outcome, timing))
}

/// Delivers every open payout whose next attempt is due, one at a time.
pub async fn deliver_due(app: &AppState, sink: &WebhookSink) -> ApiResult<usize> {
    let now = app.clock.now_us();
    let mut due = Vec::new();
    {
        let reader = app.store.reader()?;
        for state in [PayoutState::Pending, PayoutState::Submitted] {
            let mut after: Option<String> = None;
            loop {
                let page = reader.payouts_in_state(state, after.as_deref(), 1000)?;
                // Pending: never tried. Submitted: due when its next attempt is; parked
                // (no next attempt) ones wait for an operator.
                due.extend(
                    page.items
                        .into_iter()
                        .filter(|p| match p.state {
                            PayoutState::Pending => true,
                            _ => p.next_attempt_at_us.is_some_and(|t| t <= now),
                        })
                        .map(|p| p.payout_id),
                );
                match page.next {
                    Some(n) => after = Some(n),
                    None => break,
                }
            }
        }
    }
    let delivered = due.len();
    for id in due {
        deliver_one(app, sink, id).await?;
    }
    Ok(delivered)
}

async fn deliver_one(app: &AppState, sink: &WebhookSink, payout_id: String) -> ApiResult<()> {
    let base = app.config.payout_retry_base;
    let max = app.config.payout_max_retries;
    // Recorded before sending: after a crash the attempt is known and the retry carries
    // the same idempotency key.
    let id = payout_id.clone();
    let Some(payout) = app
        .writer
        .write(move |b| {
            let attempts = b.payout(&id)?.map(|p| p.attempts).unwrap_or(0) + 1;
            let next = b.now_us() + backoff(base, attempts).as_micros() as u64;
            payouts::mark_submitted(b, &id, next).map_err(ApiError::from)
        })
        .await?
    else {
        return Ok(());
    };
    let result = sink.deliver(&payout).await;
    let id = payout_id.clone();
    let attempts = payout.attempts;
    let out_of_attempts = attempts >= max;
    match result {
        Delivery::Paid { tx_hash } => {
            let outcome = app
                .writer
                .write(move |b| {
                    payouts::confirm(b, &id, &tx_hash, &Actor::system()).map_err(ApiError::from)
                })
                .await;
            match outcome {
                Ok(_) => {
                    tracing::info!(payout_id = %payout_id, "payout confirmed by the payment service")
                }
                Err(e) if e.is_transient() => return Err(e),
                Err(e) => {
                    // A receipt we cannot accept (already used, payout closed meanwhile):
                    // an operator has to look; after the last attempt stop asking.
                    app.metrics.payout_sink_errors.inc();
                    tracing::error!(payout_id = %payout_id, error = %e, "payment service receipt refused");
                    let detail = e.detail.clone();
                    let id = payout_id.clone();
                    app.writer
                        .write(move |b| {
                            payouts::record_attempt_error(b, &id, &detail, true, out_of_attempts)
                                .map_err(ApiError::from)
                        })
                        .await?;
                }
            }
        }
        Delivery::NotPaid { reason } => {
            app.metrics.payout_sink_errors.inc();
            tracing::warn!(payout_id = %payout_id, attempt = attempts, %reason, "payout not delivered");
            app.writer
                .write(move |b| {
                    if out_of_attempts {
                        let why = format!("gave up after {attempts} attempts: {reason}");
                        payouts::fail(b, &id, &why, &Actor::system())
                            .map(|_| ())
                            .map_err(ApiError::from)
                    } else {
                        payouts::record_attempt_error(b, &id, &reason, false, false)
                            .map_err(ApiError::from)
                    }
                })
                .await?;
        }
        Delivery::Unknown { reason } => {
            // Perhaps paid: keep asking with the same idempotency key, never re-credit.
            app.metrics.payout_sink_errors.inc();
            if out_of_attempts {
                tracing::error!(payout_id = %payout_id, attempt = attempts, %reason, "payout outcome still unknown; retrying with the same idempotency key, needs attention");
            } else {
                tracing::warn!(payout_id = %payout_id, attempt = attempts, %reason, "payout outcome unknown; will retry");
            }
            app.writer
                .write(move |b| {
                    payouts::record_attempt_error(b, &id, &reason, out_of_attempts, false)
                        .map_err(ApiError::from)
                })
                .await?;
        }
    }
    Ok(())
}
