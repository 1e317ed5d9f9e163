//! Timers that run inside the process: the node monitor (online -> offline), PoOT epoch
//! closing (with catch-up after downtime) and heartbeat retention. Each goes through the
//! writer like any request, so it shares the same transactions and audit chain.

pub mod monitor;
pub mod poot;

use tokio::task::JoinHandle;

use crate::api::AppState;

/// Starts every job; abort the handles to stop them.
pub fn spawn_all(app: &AppState) -> Vec<JoinHandle<()>> {
    vec![
        tokio::spawn(monitor::run(app.clone())),
        tokio::spawn(poot::run(app.clone())),
        tokio::spawn(watch_wall_clock(app.clone())),
    ]
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
