//! Heavy reads (lists, histories, exports) run on tokio's blocking threads, at most
//! `HEAVY_READ_CONCURRENCY` at once. A read that walks thousands of rows would otherwise
//! hold an async worker (the board has few cores) and every heartbeat queued behind it
//! would wait; here it waits for a permit instead, and the request timeout bounds that
//! wait (a request that times out drops its place in the queue).

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::{App, AppState};
use crate::error::{ApiError, ApiResult};

/// The permits; `None` is no bound (`HEAVY_READ_CONCURRENCY=0`).
#[derive(Clone)]
pub struct HeavyReads(Option<Arc<Semaphore>>);

impl HeavyReads {
    pub fn new(concurrency: usize) -> Self {
        Self((concurrency > 0).then(|| Arc::new(Semaphore::new(concurrency))))
    }
}

/// Runs `read` on a blocking thread once a permit is free, and hands back its result.
/// The permit is held until `read` returns, even when the request gave up waiting, so the
/// bound holds for the threads actually busy.
pub async fn heavy_read<T, F>(app: &AppState, read: F) -> ApiResult<T>
where
    T: Send + 'static,
    F: FnOnce(&App) -> ApiResult<T> + Send + 'static,
{
    let permit = match &app.heavy_reads.0 {
        Some(semaphore) => Some(
            semaphore
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| ApiError::unavailable("the service is shutting down"))?,
        ),
        None => None,
    };
    let app = app.clone();
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        read(&app)
    })
    .await
    .map_err(|e| {
        tracing::error!(error = %e, "a heavy read panicked");
        ApiError::unavailable("the read failed; retry later")
    })?
}
