//! Payout runs (every PAYOUT_PROCESSING_INTERVAL and on demand) and, with the webhook sink,
//! delivery with bounded retries and exponential backoff.

use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;

use crate::api::AppState;
use crate::domain::payout::{backoff, Payout, PayoutState};
use crate::error::ApiResult;
use crate::payout_sink::webhook::WebhookSink;
use crate::payout_sink::Delivery;
use crate::store::{payouts, Actor};

/// Nodes looked at per write transaction in a run (keeps each batch short).
const RUN_CHUNK: usize = 1000;

/// The result of one run.
pub struct RunOutcome {
    pub created: Vec<Payout>,
    pub skipped: u64,
}

pub async fn run_timer(app: AppState) {
    let mut interval = tokio::time::interval(app.config.payout_processing_interval);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await; // the first tick is immediate: wait one interval after start
    loop {
        interval.tick().await;
        match process(&app, &Actor::system()).await {
            Ok(out) => tracing::info!(
                created = out.created.len(),
                skipped = out.skipped,
                "payout run"
            ),
            Err(e) => tracing::warn!(error = %e, "payout run failed"),
        }
    }
}

/// One payout run: every node with a balance is looked at; those due get a payout of
/// their whole balance. Safe to run concurrently: each node is re-checked inside the
/// write transaction, where its balance is already zero if another run paid it.
pub async fn process(app: &AppState, actor: &Actor) -> ApiResult<RunOutcome> {
    let threshold = app.config.payout_threshold_usdt;
    let candidates = app
        .store
        .reader()?
        .node_ids_where(|n| n.balance_usdt > Decimal::ZERO)?;
    let mut outcome = RunOutcome {
        created: Vec::new(),
        skipped: 0,
    };
    for chunk in candidates.chunks(RUN_CHUNK) {
        let ids = chunk.to_vec();
        let actor = actor.clone();
        let (created, skipped) = app
            .writer
            .write(move |b| {
                let mut created = Vec::new();
                let mut skipped = 0u64;
                for id in ids {
                    match payouts::create_if_due(b, &id, threshold, &actor)? {
                        Ok(p) => created.push(p),
                        Err(_) => skipped += 1,
                    }
                }
                Ok((created, skipped))
            })
            .await?;
        outcome.created.extend(created);
        outcome.skipped += skipped;
    }
    app.metrics.payout_runs.inc();
    app.metrics
        .payout_last_run
        .set((app.clock.now_us() / 1_000_000) as i64);
    if !outcome.created.is_empty() {
        app.payout_wakeup.notify_one();
    }
    Ok(outcome)
}

/// The webhook delivery loop: wakes on new payouts and at least every second.
pub async fn run_webhook(app: AppState, sink: Arc<WebhookSink>) {
    loop {
        if let Err(e) = deliver_due(&app, &sink).await {
            tracing::warn!(error = %e, "payout delivery pass failed");
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), app.payout_wakeup.notified()).await;
    }
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
            payouts::mark_submitted(b, &id, next)
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
                .write(move |b| payouts::confirm(b, &id, &tx_hash, &Actor::system()))
                .await;
            match outcome {
                Ok(_) => {
                    tracing::info!(payout_id = %payout_id, "payout confirmed by the payment service")
                }
                Err(e) if e.is_storage_failure() || e.kind == "unavailable" => return Err(e),
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
                        payouts::fail(b, &id, &why, &Actor::system()).map(|_| ())
                    } else {
                        payouts::record_attempt_error(b, &id, &reason, false, false)
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
                })
                .await?;
        }
    }
    Ok(())
}
