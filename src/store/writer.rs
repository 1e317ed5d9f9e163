//! The single writer: one thread owns every write transaction.
//!
//! Handlers send a job over a bounded channel and wait. The writer takes the first job,
//! drains everything else already waiting (up to [`MAX_BATCH`]), runs all of them in one
//! transaction, commits durably once, and only then answers each caller: group commit.
//! One fsync serves the whole batch, which is what lets durable writes scale with load.
//! A full channel is answered at once with 503 and `Retry-After`, never queued unboundedly.

use std::sync::Arc;
use std::time::Instant;

use redb::Database;
use tokio::sync::{mpsc, oneshot};

use super::batch::{AuditHead, Batch};
use super::outbox::OutboxConfig;
use crate::clock::Clock;
use crate::error::{ApiError, ApiResult};
use crate::metrics::Metrics;

/// Most jobs folded into one transaction.
pub const MAX_BATCH: usize = 4096;

type Reply = Box<dyn FnOnce(Result<(), ApiError>) + Send>;
/// A job runs inside the transaction and returns how to answer its caller once the commit
/// is known, plus whether it hit a storage failure (which aborts the batch).
type Job = Box<dyn FnOnce(&mut Batch<'_>) -> (Reply, Option<ApiError>) + Send>;

/// Handle for sending mutations to the writer. Cheap to clone.
#[derive(Clone)]
pub struct Writer {
    sender: mpsc::Sender<Job>,
}

impl Writer {
    /// Starts the writer thread. It ends when every `Writer` handle is dropped, after
    /// committing what was already sent.
    pub fn start(
        db: Arc<Database>,
        clock: Clock,
        metrics: Arc<Metrics>,
        capacity: usize,
    ) -> ApiResult<(Self, std::thread::JoinHandle<()>)> {
        Self::start_with_mirror(db, clock, metrics, capacity, None)
    }

    /// Like [`Self::start`]; with `mirror`, every batch also writes the MongoDB mirror's
    /// outbox (see `outbox`).
    pub fn start_with_mirror(
        db: Arc<Database>,
        clock: Clock,
        metrics: Arc<Metrics>,
        capacity: usize,
        mirror: Option<Arc<OutboxConfig>>,
    ) -> ApiResult<(Self, std::thread::JoinHandle<()>)> {
        let head = {
            let txn = db.begin_write()?;
            let head = AuditHead::load(&txn)?;
            txn.abort()?;
            head
        };
        let (sender, receiver) = mpsc::channel(capacity);
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || run(db, clock, metrics, receiver, head, mirror))
            .expect("spawning the writer thread");
        Ok((Self { sender }, handle))
    }

    /// Runs `f` in the writer's transaction; returns its result once it is durable.
    ///
    /// `f` must check before it writes: an `Err` from a domain rule must come before any
    /// write (see `batch`). A storage error aborts the whole batch.
    pub async fn write<T, F>(&self, f: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Batch<'_>) -> ApiResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<ApiResult<T>>();
        let job: Job = Box::new(move |batch: &mut Batch<'_>| {
            let result = f(batch);
            let storage_failure = match &result {
                Err(e) if e.is_storage_failure() => Some(e.clone()),
                _ => None,
            };
            let reply: Reply = Box::new(move |commit: Result<(), ApiError>| {
                let _ = tx.send(commit.and(result));
            });
            (reply, storage_failure)
        });
        self.sender.try_send(job).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => ApiError::overloaded(),
            mpsc::error::TrySendError::Closed(_) => {
                ApiError::unavailable("the service is shutting down")
            }
        })?;
        rx.await.map_err(|_| {
            ApiError::unavailable("the write was not committed (storage failure in its batch)")
        })?
    }

    /// Jobs waiting in the queue (for metrics).
    pub fn queue_len(&self) -> usize {
        self.sender.max_capacity() - self.sender.capacity()
    }
}

fn run(
    db: Arc<Database>,
    clock: Clock,
    metrics: Arc<Metrics>,
    mut receiver: mpsc::Receiver<Job>,
    mut head: AuditHead,
    mirror: Option<Arc<OutboxConfig>>,
) {
    let mut jobs: Vec<Job> = Vec::with_capacity(64);
    while let Some(first) = receiver.blocking_recv() {
        jobs.push(first);
        while jobs.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let size = jobs.len();
        let started = Instant::now();
        let outcome = commit_batch(&db, &clock, &mut head, mirror.as_deref(), jobs.drain(..));
        metrics.writer_batch_size.observe(size as f64);
        metrics
            .writer_commit_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Err(e) = outcome {
            metrics.writer_failed_batches.inc();
            tracing::error!(error = %e, jobs = size, "write batch aborted");
            // The cached chain head may be ahead of what is on disk now.
            if let Ok(txn) = db.begin_write() {
                if let Ok(h) = AuditHead::load(&txn) {
                    head = h;
                }
                let _ = txn.abort();
            }
        }
    }
    tracing::debug!("writer stopped: all handles dropped");
}

/// Runs the jobs in one transaction and commits. Every caller is answered: with its own
/// result after a successful commit, with the failure otherwise.
fn commit_batch(
    db: &Database,
    clock: &Clock,
    head: &mut AuditHead,
    mirror: Option<&OutboxConfig>,
    jobs: impl Iterator<Item = Job>,
) -> Result<(), ApiError> {
    let txn = match db.begin_write() {
        Ok(t) => t,
        Err(e) => {
            let err = ApiError::from(e);
            // Dropping the jobs drops their reply channels: callers get 503.
            drop(jobs.collect::<Vec<_>>());
            return Err(err);
        }
    };
    let mut replies: Vec<Reply> = Vec::new();
    let mut failure: Option<ApiError> = None;
    {
        let mut batch = Batch::new(&txn, head, clock).with_mirror(mirror);
        for job in jobs {
            if failure.is_some() {
                drop(job); // never ran; its caller gets 503
                continue;
            }
            let (reply, storage_failure) = job(&mut batch);
            replies.push(reply);
            failure = storage_failure;
        }
        if failure.is_none() {
            if let Err(e) = batch.persist_clock_high_water() {
                failure = Some(e);
            }
        }
    }
    let outcome = match failure {
        Some(e) => {
            let _ = txn.abort();
            Err(e)
        }
        None => txn.commit().map_err(ApiError::from),
    };
    for reply in replies {
        reply(outcome.clone());
    }
    outcome
}
