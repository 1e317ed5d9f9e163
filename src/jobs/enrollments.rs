//! Removes expired enrolment codes, so a code nobody used does not stay stored (making a
//! new code prunes too; this covers appliances where no one makes codes any more).

use std::time::Duration;

use crate::app::AppState;

/// How often expired codes are looked for.
const EVERY: Duration = Duration::from_secs(60);

pub async fn run(app: AppState) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = crate::app::enrollments::prune_expired(&app).await {
            if !e.is_transient() {
                tracing::warn!(error = %e, "pruning expired enrolment codes failed");
            }
        }
    }
}
