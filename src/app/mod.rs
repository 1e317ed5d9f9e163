//! The application: the shared state every request and timer works on ([`App`]) and the
//! use cases that both handlers (`api`) and timers (`jobs`) run. It sits above the store
//! and below the HTTP layer, the timers and the mirror: nothing here knows about
//! requests, routes or schedules.

pub mod alerts;
pub mod challenges;
pub mod enrollments;
pub mod heavy;
pub mod monitor;
pub mod payouts;
pub mod poot;
pub mod rate_limits;
pub mod registration;
pub mod revocations;
pub mod rollup;
pub mod verifier;

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::clock::Clock;
use crate::config::Config;
use crate::crypto::keys::ServiceKeys;
use crate::crypto::tokens::TokenService;
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;
use crate::store::{Batch, Store, Writer};

/// Everything a handler may need. Shared behind an `Arc`.
pub struct App {
    pub config: Config,
    pub store: Store,
    pub writer: Writer<ApiError>,
    /// Checks heartbeat signatures in batches.
    pub verifier: verifier::Verifier,
    pub tokens: TokenService,
    pub keys: ServiceKeys,
    pub metrics: Arc<Metrics>,
    pub clock: Clock,
    pub challenges: challenges::Challenges,
    /// Wakes the payout delivery loop when payouts are created.
    pub payout_wakeup: tokio::sync::Notify,
    /// Wakes the alert delivery loop when alerts are queued.
    pub alert_wakeup: tokio::sync::Notify,
    /// One PoOT epoch closer at a time: the timer and `calculate` share it (see
    /// [`poot::close_due_epochs`]).
    pub poot_closing: tokio::sync::Mutex<()>,
    /// `sha256:<hex>` of the serving certificate (None when serving plain HTTP): handed
    /// out with enrolment codes so a new node can pin it.
    pub tls_fingerprint: Option<String>,
    /// Per-address and per-token request limits.
    pub rate_limits: rate_limits::RateLimits,
    /// Permits of the heavy reads (see [`heavy::heavy_read`]).
    pub heavy_reads: heavy::HeavyReads,
}

pub type AppState = Arc<App>;

/// How a job done in chunks (an epoch close, a payout run) used the writer: heartbeat
/// ingestion waits while one of its jobs runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriterUse {
    pub jobs: usize,
    /// The longest a single job ran inside the writer.
    pub longest_job: Duration,
    /// The longest a single job took from sending to its durable commit.
    pub longest_job_committed: Duration,
}

impl WriterUse {
    /// Runs one writer job and records how long it held the writer and how long until
    /// it was durable.
    pub async fn write<T, F>(&mut self, writer: &Writer<ApiError>, f: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Batch<'_>) -> ApiResult<T> + Send + 'static,
    {
        let sent = Instant::now();
        let (value, ran) = writer
            .write(move |b| {
                let started = Instant::now();
                let value = f(b)?;
                Ok((value, started.elapsed()))
            })
            .await?;
        self.jobs += 1;
        self.longest_job = self.longest_job.max(ran);
        self.longest_job_committed = self.longest_job_committed.max(sent.elapsed());
        Ok(value)
    }
}
