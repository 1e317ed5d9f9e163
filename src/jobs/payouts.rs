//! The payout timers: a run every PAYOUT_PROCESSING_INTERVAL and, with the webhook sink,
//! the delivery loop (see [`crate::app::payouts`]).

use std::sync::Arc;
use std::time::Duration;

use crate::app::payouts::{deliver_due, process};
use crate::app::AppState;
use crate::payout_sink::webhook::WebhookSink;
use crate::store::Actor;

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

/// The webhook delivery loop: wakes on new payouts and at least every second.
pub async fn run_webhook(app: AppState, sink: Arc<WebhookSink>) {
    loop {
        if let Err(e) = deliver_due(&app, &sink).await {
            tracing::warn!(error = %e, "payout delivery pass failed");
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), app.payout_wakeup.notified()).await;
    }
}
