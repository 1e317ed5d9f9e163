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
    ]
}
