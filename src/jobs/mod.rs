//! Timers that run inside the process: the node monitor (online -> offline), PoOT epoch
//! closing (with catch-up after downtime) and heartbeat retention. Each goes through the
//! writer like any request, so it shares the same transactions and audit chain.

pub mod alerts;
pub mod enrollments;
pub mod monitor;
pub mod payouts;
pub mod poot;

use tokio::task::JoinHandle;

use crate::app::AppState;

/// Starts every job; abort the handles to stop them.
pub fn spawn_all(app: &AppState) -> Result<Vec<JoinHandle<()>>, String> {
    let mut jobs = vec![
        tokio::spawn(monitor::run(app.clone())),
        tokio::spawn(poot::run(app.clone())),
        tokio::spawn(payouts::run_timer(app.clone())),
        tokio::spawn(watch_wall_clock(app.clone())),
        tokio::spawn(alerts::run_watcher(app.clone())),
        tokio::spawn(alerts::run_delivery(app.clone())),
        tokio::spawn(enrollments::run(app.clone())),
        tokio::spawn(sweep_rate_limits(app.clone())),
    ];
    if app.config.payout_sink == crate::config::PayoutSinkKind::Webhook {
        let sink = crate::payout_sink::webhook::WebhookSink::new(
            app.config.payout_webhook_url.as_deref().unwrap_or_default(),
            app.config
                .payout_webhook_secret
                .as_deref()
                .unwrap_or_default(),
            app.config.payout_webhook_timeout,
            app.config.webhook_allowed_networks.clone(),
        );
        jobs.push(tokio::spawn(payouts::run_webhook(
            app.clone(),
            std::sync::Arc::new(sink),
        )));
    }
    Ok(jobs)
}

/// Forgets rate-limit keys whose bursts have refilled, every second, so an address flood
/// holds memory for about a burst's refill time (see `app::rate_limits`).
async fn sweep_rate_limits(app: AppState) {
    let mut interval = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        interval.tick().await;
        app.rate_limits.sweep();
    }
}

/// Logs and counts wall-clock steps. Operational time is measured on the service clock
/// (monotonic), so a step changes nothing but is worth an operator's attention.
async fn watch_wall_clock(app: AppState) {
    let mut detector = crate::clock::JumpDetector::new(app.clock.wall_drift_us(), 2_000_000);
    let mut interval = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        interval.tick().await;
        if let Some(step) = detector.observe(app.clock.wall_drift_us()) {
            app.metrics.clock_jumps.inc();
            tracing::warn!(
                step_seconds = step as f64 / 1e6,
                "the wall clock stepped; operational time is measured on the monotonic clock and is unaffected"
            );
        }
    }
}
