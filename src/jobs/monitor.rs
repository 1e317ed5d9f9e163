//! The node monitor's timer: runs [`mark_silent_nodes_offline`] a few times per
//! `HEARTBEAT_TIMEOUT`.

use std::time::Duration;

use crate::app::monitor::mark_silent_nodes_offline;
use crate::app::AppState;

pub async fn run(app: AppState) {
    let timeout = app.config.heartbeat_timeout;
    let tick = (timeout / 4).clamp(Duration::from_millis(250), Duration::from_secs(5));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if let Err(e) = mark_silent_nodes_offline(&app).await {
            tracing::warn!(error = %e, "node monitor pass failed");
        }
    }
}
