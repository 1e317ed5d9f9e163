//! The alert timers: the watcher that raises `node.offline` / `node.online` for
//! subscribers, and the delivery loop that POSTs queued events to their webhooks (see
//! [`crate::app::alerts`]).

use std::time::Duration;

use crate::app::alerts::{deliver_due, watch_nodes, InFlight};
use crate::app::AppState;

pub async fn run_watcher(app: AppState) {
    loop {
        let pause = match watch_nodes(&app).await {
            Ok(pause) => pause,
            Err(e) => {
                tracing::warn!(error = %e, "alert watcher pass failed");
                Duration::from_secs(5)
            }
        };
        tokio::time::sleep(pause).await;
    }
}

/// Each pass starts a task per subscriber with alerts due (one task per subscriber at a
/// time) and returns at once: a stalled receiver never holds up the loop.
/// Each delivery builds (or reuses) a client pinned to the address it checked (see
/// [`crate::payout_sink::target`]).
pub async fn run_delivery(app: AppState) {
    let in_flight = InFlight::default();
    // Aborting this job drops the set, which stops the deliveries in flight.
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        if let Err(e) = deliver_due(&app, &in_flight, &mut tasks).await {
            tracing::warn!(error = %e, "alert delivery pass failed");
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), app.alert_wakeup.notified()).await;
    }
}
