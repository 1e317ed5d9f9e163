//! The PoOT timer: closes due epochs (see [`crate::app::poot`]) a few times per epoch,
//! then prunes heartbeats past retention and rolls proofs past retention up into daily
//! records.

use std::time::Duration;

use crate::app::poot::{close_due_epochs, prune_heartbeats};
use crate::app::rollup::roll_up_due_days;
use crate::app::AppState;

pub async fn run(app: AppState) {
    let tick = (app.config.poot_calculation_interval / 10)
        .clamp(Duration::from_millis(200), Duration::from_secs(1));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match close_due_epochs(&app).await {
            Ok(closed) if !closed.is_empty() => {
                if let Err(e) = prune_heartbeats(&app).await {
                    tracing::warn!(error = %e, "heartbeat pruning failed");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "closing PoOT epochs failed"),
        }
        // Every tick (a read of a snapshot when nothing is due): a silent fleet closes no
        // epoch, and its old proofs must still roll up.
        if let Err(e) = roll_up_due_days(&app).await {
            tracing::warn!(error = %e, "rolling proofs up into daily records failed");
        }
    }
}
