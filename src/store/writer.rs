//! The single writer: one thread owns every write transaction.
//!
//! Handlers send a job over a bounded channel and wait. The writer opens a transaction,
//! runs the first job and everything else already waiting (up to [`MAX_BATCH`]), commits
//! durably once, and only then answers each caller: group commit. One fsync serves the
//! whole batch, which is what lets durable writes scale with load.
//!
//! Lingering (`COMMIT_INTERVAL`): a durable commit costs about 32 KiB written whatever it
//! holds, so at a fleet's real pace (a few heartbeats a second) committing each heartbeat
//! on its own wears an SD card out in months. Jobs sent with [`Urgency::Linger`]
//! (heartbeats) therefore wait in the open transaction up to the commit interval for
//! companions; any other job ([`Urgency::Now`]: registrations, payouts, admin writes)
//! commits at once and carries the waiting heartbeats with it. Nobody is answered before
//! the commit that holds their write is durable.
//!
//! A full channel is answered at once with 503 and `Retry-After`, never queued unboundedly.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::db::DbHandle;
use tokio::sync::oneshot;

use super::batch::{AuditHead, Batch};
use super::db::Store;
use super::error::{StoreError, StoreResult};
use super::liveness::Liveness;
use super::outbox::OutboxConfig;
use super::space::DiskSpace;
use crate::clock::Clock;

/// Most jobs folded into one transaction.
pub const MAX_BATCH: usize = 4096;

/// Longest accepted `COMMIT_INTERVAL`: a heartbeat's acknowledgement waits at most this.
pub const MAX_COMMIT_INTERVAL: Duration = Duration::from_secs(3);

/// Whether a job may wait for companions before its commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Urgency {
    /// Commit as soon as the writer reaches it (with whatever is waiting).
    Now,
    /// May wait up to the commit interval for other jobs (heartbeats).
    Linger,
}

/// What one batch did, handed to the [`WriterObserver`] after its outcome is known.
#[derive(Debug, Clone, Copy)]
pub struct BatchReport {
    /// Jobs folded into the transaction.
    pub jobs: usize,
    /// From opening the transaction to the end of the durable commit (or abort),
    /// lingering included.
    pub open: Duration,
    /// The commit alone (fsync included).
    pub commit: Duration,
}

/// Counts what the writer does. The store knows nothing of Prometheus: `metrics`
/// implements this; tests and benches may pass [`NoObserver`].
pub trait WriterObserver: Send + Sync {
    /// A batch is durable.
    fn committed(&self, _report: &BatchReport) {}
    /// A batch was aborted: none of its writes happened.
    fn aborted(&self, _report: &BatchReport) {}
}

/// An observer that counts nothing.
pub struct NoObserver;
impl WriterObserver for NoObserver {}

/// How the writer runs.
pub struct WriterSettings {
    /// Jobs that may wait in the channel; one more is answered 503.
    pub queue_capacity: usize,
    /// How long a lingering job waits for companions (`0`: commit as soon as idle).
    pub commit_interval: Duration,
    /// With the MongoDB mirror on, every batch also writes its outbox (see `outbox`).
    pub mirror: Option<Arc<OutboxConfig>>,
    pub observer: Arc<dyn WriterObserver>,
}

impl WriterSettings {
    pub fn new(queue_capacity: usize) -> Self {
        Self {
            queue_capacity,
            commit_interval: Duration::ZERO,
            mirror: None,
            observer: Arc::new(NoObserver),
        }
    }

    pub fn commit_interval(mut self, interval: Duration) -> Self {
        self.commit_interval = interval.min(MAX_COMMIT_INTERVAL);
        self
    }

    pub fn mirror(mut self, mirror: Option<Arc<OutboxConfig>>) -> Self {
        self.mirror = mirror;
        self
    }

    pub fn observer(mut self, observer: Arc<dyn WriterObserver>) -> Self {
        self.observer = observer;
        self
    }
}

/// The error a job returns: anything the store's errors convert into, that can say
/// whether it is a storage failure (which aborts the batch). The HTTP error implements it
/// by remembering the store error it was made from.
pub trait JobError: From<StoreError> + Send + 'static {
    fn storage_failure(&self) -> Option<StoreError>;
}

impl JobError for StoreError {
    fn storage_failure(&self) -> Option<StoreError> {
        self.aborts_batch().then(|| self.clone())
    }
}

type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;
/// Runs inside the transaction and returns how to answer its caller once the commit is
/// known, plus whether it hit a storage failure (which aborts the batch).
/// Given `Err`, the job is refused without running (free space under the floor).
type Run =
    Box<dyn FnOnce(Result<&mut Batch<'_>, StoreError>) -> (Reply, Option<StoreError>) + Send>;

struct Job {
    run: Run,
    urgency: Urgency,
    sent: Instant,
}

/// Handle for sending mutations to the writer. Cheap to clone. `E` is the error its jobs
/// return (the service uses its HTTP error; the store's own tests use [`StoreError`]).
pub struct Writer<E = StoreError> {
    sender: SyncSender<Job>,
    queued: Arc<AtomicUsize>,
    capacity: usize,
    error: std::marker::PhantomData<fn() -> E>,
}

impl<E> Clone for Writer<E> {
    fn clone(&self) -> Self {
        Self {
            sender: self.sender.clone(),
            queued: self.queued.clone(),
            capacity: self.capacity,
            error: std::marker::PhantomData,
        }
    }
}

impl<E: JobError> Writer<E> {
    /// Starts the writer thread. It ends when every `Writer` handle is dropped, after
    /// committing what was already sent.
    pub fn start(
        store: &Store,
        clock: Clock,
        settings: WriterSettings,
    ) -> StoreResult<(Self, std::thread::JoinHandle<()>)> {
        let db = store.db.clone();
        let head = {
            let txn = db.begin_write()?;
            let head = AuditHead::load(&txn)?;
            txn.abort()?;
            head
        };
        let capacity = settings.queue_capacity.max(1);
        let (sender, receiver) = mpsc::sync_channel(capacity);
        let queued = Arc::new(AtomicUsize::new(0));
        let state = WriterThread {
            db,
            needs_reopen: false,
            clock,
            liveness: store.liveness.clone(),
            accumulators: store.accumulators.clone(),
            space: store.space.clone(),
            head,
            settings,
            queued: queued.clone(),
        };
        let handle = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || state.run(receiver))
            .expect("spawning the writer thread");
        Ok((
            Self {
                sender,
                queued,
                capacity,
                error: std::marker::PhantomData,
            },
            handle,
        ))
    }

    /// Runs `f` in the writer's transaction; returns its result once it is durable.
    ///
    /// `f` must check before it writes: an `Err` from a domain rule must come before any
    /// write (see `batch`). A storage error aborts the whole batch.
    pub async fn write<T, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        F: FnOnce(&mut Batch<'_>) -> Result<T, E> + Send + 'static,
    {
        self.write_with(Urgency::Now, f).await
    }

    /// Like [`Self::write`]; a [`Urgency::Linger`] job may wait up to the commit interval
    /// for companions before its durable commit.
    pub async fn write_with<T, F>(&self, urgency: Urgency, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        F: FnOnce(&mut Batch<'_>) -> Result<T, E> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel::<Result<T, E>>();
        let run: Run = Box::new(move |batch: Result<&mut Batch<'_>, StoreError>| {
            let result = match batch {
                Ok(batch) => f(batch),
                Err(refused) => Err(E::from(refused)),
            };
            let storage_failure = match &result {
                Err(e) => e.storage_failure(),
                _ => None,
            };
            let reply: Reply = Box::new(move |commit: Result<(), StoreError>| {
                let _ = tx.send(commit.map_err(E::from).and(result));
            });
            (reply, storage_failure)
        });
        let job = Job {
            run,
            urgency,
            sent: Instant::now(),
        };
        // Counted before sending, so the writer's decrement never runs first.
        self.queued.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = self.sender.try_send(job) {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            return Err(E::from(match e {
                TrySendError::Full(_) => StoreError::Overloaded,
                TrySendError::Disconnected(_) => {
                    StoreError::unavailable("the service is shutting down")
                }
            }));
        }
        rx.await.map_err(|_| {
            E::from(StoreError::unavailable(
                "the write was not committed (storage failure in its batch)",
            ))
        })?
    }

    /// Jobs waiting in the queue (for metrics).
    pub fn queue_len(&self) -> usize {
        self.queued.load(Ordering::Relaxed).min(self.capacity)
    }
}

/// What the writer thread owns.
struct WriterThread {
    db: DbHandle,
    /// Set by a storage failure: redb refuses everything on that `Database` until it is
    /// opened again, which the next batch tries first.
    needs_reopen: bool,
    clock: Clock,
    liveness: Arc<Liveness>,
    accumulators: Arc<super::accumulators::EpochAccumulators>,
    space: Arc<DiskSpace>,
    /// The audit chain's head and the last stamp handed out, cached between batches.
    head: AuditHead,
    settings: WriterSettings,
    queued: Arc<AtomicUsize>,
}

impl WriterThread {
    fn run(mut self, receiver: mpsc::Receiver<Job>) {
        while let Ok(first) = receiver.recv() {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.one_batch(first, &receiver);
        }
        tracing::debug!("writer stopped: all handles dropped");
    }
}

/// The next job: one already waiting, or (with `until`) one arriving before then. Keeps
/// the queue-length count in step.
fn recv(
    queued: &AtomicUsize,
    receiver: &mpsc::Receiver<Job>,
    until: Option<Instant>,
) -> Option<Job> {
    let job = match until {
        None => receiver.try_recv().ok(),
        Some(deadline) => {
            let wait = deadline.saturating_duration_since(Instant::now());
            receiver.recv_timeout(wait).ok()
        }
    };
    if job.is_some() {
        queued.fetch_sub(1, Ordering::Relaxed);
    }
    job
}

impl WriterThread {
    /// Runs `first` and its companions in one transaction and commits. Every caller is
    /// answered: with its own result after a successful commit, with the failure
    /// otherwise.
    /// Opens the database again after a storage failure and reloads what the writer
    /// caches from it. Until it succeeds every job is answered with the failure.
    fn recover(&mut self) -> StoreResult<()> {
        if !self.needs_reopen {
            return Ok(());
        }
        self.db.reopen()?;
        let txn = self.db.begin_write()?;
        self.head = AuditHead::load(&txn)?;
        txn.abort()?;
        self.needs_reopen = false;
        tracing::info!("database reopened after a storage failure; writes resume");
        Ok(())
    }

    fn one_batch(&mut self, first: Job, receiver: &mpsc::Receiver<Job>) {
        let opened = Instant::now();
        let txn = match self.recover().and_then(|()| self.db.begin_write()) {
            Ok(t) => t,
            Err(err) => {
                tracing::error!(error = %err, "cannot open a write transaction");
                if err.aborts_batch() {
                    self.needs_reopen = true;
                }
                // Every waiting job is answered with the failure (507 for a full disk, 503
                // otherwise), without running.
                let mut jobs = 0;
                let mut next = Some(first);
                while let Some(job) = next {
                    let (reply, _) = (job.run)(Err(err.clone()));
                    reply(Err(err.clone()));
                    jobs += 1;
                    next = recv(&self.queued, receiver, None);
                }
                self.settings.observer.aborted(&BatchReport {
                    jobs,
                    open: opened.elapsed(),
                    commit: Duration::ZERO,
                });
                return;
            }
        };
        let mut replies: Vec<Reply> = Vec::new();
        let mut failure: Option<StoreError> = None;
        let mut staged_liveness = Vec::new();
        let mut staged_leaves = Vec::new();
        let interval = self.settings.commit_interval;
        {
            let mut batch = Batch::new(&txn, &mut self.head, &self.clock)
                .with_mirror(self.settings.mirror.as_deref())
                .with_liveness(&self.liveness)
                .with_accumulation(self.accumulators.enabled());
            // When the batch must commit: at once, or when its first lingering job has
            // waited the interval.
            let mut linger_until: Option<Instant> = None;
            let mut urgent = false;
            let mut job = Some(first);
            while let Some(current) = job.take() {
                match current.urgency {
                    Urgency::Now => urgent = true,
                    Urgency::Linger => {
                        let due = current.sent + interval;
                        linger_until = Some(linger_until.map_or(due, |d: Instant| d.min(due)));
                    }
                }
                // Under the STORAGE_MIN_FREE floor the bulk writes (heartbeats) are refused
                // before they run; what remains of the disk is kept for the rest.
                let refused = match current.urgency {
                    Urgency::Linger => self.space.below_floor().map(StoreError::Full),
                    Urgency::Now => None,
                };
                let (reply, storage_failure) = match refused {
                    Some(full) => (current.run)(Err(full)),
                    None => (current.run)(Ok(&mut batch)),
                };
                replies.push(reply);
                if storage_failure.is_some() {
                    failure = storage_failure;
                    break;
                }
                if replies.len() >= MAX_BATCH {
                    break;
                }
                // Everything already waiting joins; then, if only lingering jobs are in,
                // wait for more until the first of them is due.
                job = recv(&self.queued, receiver, None);
                if job.is_none() && !urgent && !interval.is_zero() {
                    if let Some(deadline) = linger_until.filter(|d| *d > Instant::now()) {
                        job = recv(&self.queued, receiver, Some(deadline));
                    }
                }
            }
            if failure.is_none() {
                if let Err(e) = batch.persist_clock_high_water() {
                    failure = Some(e);
                }
            }
            if failure.is_none() {
                staged_liveness = batch.take_staged_liveness();
                staged_leaves = batch.take_staged_leaves();
            }
        }
        let jobs = replies.len();
        let commit_started = Instant::now();
        let outcome = match failure {
            Some(e) => {
                let _ = txn.abort();
                Err(e)
            }
            None => txn.commit().map_err(StoreError::from),
        };
        let report = BatchReport {
            jobs,
            open: opened.elapsed(),
            commit: commit_started.elapsed(),
        };
        match &outcome {
            Ok(()) => {
                // Durable: the heartbeats of this batch now count for the replay guard and
                // the monitor, before any caller hears back.
                self.liveness.merge(staged_liveness);
                self.accumulators.push_committed(staged_leaves);
                self.settings.observer.committed(&report);
            }
            Err(e) => {
                // A failed commit may be durable all the same: its heartbeats' epochs scan.
                if let Some(last) = staged_leaves.iter().map(|l| l.1).max() {
                    self.accumulators.forget_through(last);
                }
                self.settings.observer.aborted(&report);
                tracing::error!(error = %e, jobs, "write batch aborted");
                if matches!(e, StoreError::Full(_) | StoreError::Io(_)) {
                    // redb refuses everything (reads too) after an I/O error until the
                    // database is opened again: try at once, and before every batch after.
                    self.needs_reopen = true;
                    if let Err(why) = self.recover() {
                        tracing::warn!(error = %why, "database not reopened yet; will retry");
                    }
                } else if let Ok(txn) = self.db.begin_write() {
                    // The cached chain head may be ahead of what is on disk now.
                    if let Ok(h) = AuditHead::load(&txn) {
                        self.head = h;
                    }
                    let _ = txn.abort();
                }
            }
        }
        for reply in replies {
            reply(outcome.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::store::tables::META;

    /// Records every batch the writer reports.
    #[derive(Default)]
    struct Recorder {
        committed: Mutex<Vec<usize>>,
        aborted: Mutex<Vec<usize>>,
    }

    impl WriterObserver for Recorder {
        fn committed(&self, report: &BatchReport) {
            self.committed.lock().unwrap().push(report.jobs);
        }
        fn aborted(&self, report: &BatchReport) {
            self.aborted.lock().unwrap().push(report.jobs);
        }
    }

    fn start(
        settings: impl FnOnce(WriterSettings) -> WriterSettings,
    ) -> (
        tempfile::TempDir,
        Store,
        Writer<StoreError>,
        std::thread::JoinHandle<()>,
        Arc<Recorder>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = crate::store::db::open_with_clock(dir.path(), 100).unwrap();
        let recorder = Arc::new(Recorder::default());
        let (writer, thread) = Writer::start(
            &store,
            clock,
            settings(WriterSettings::new(8)).observer(recorder.clone()),
        )
        .unwrap();
        (dir, store, writer, thread, recorder)
    }

    /// A job that writes one META value, so a lost write would show.
    fn put(key: &'static str) -> impl FnOnce(&mut Batch<'_>) -> StoreResult<()> + Send {
        move |b: &mut Batch<'_>| b.set_meta_u64(key, 1)
    }

    fn stored(store: &Store, key: &str) -> bool {
        let txn = store.db.begin_read().unwrap();
        let t = txn.open_table(META).unwrap();
        let found = redb::ReadableTable::get(&t, key).unwrap().is_some();
        found
    }

    /// Holds the writer thread inside a job until `release` is dropped or sent to.
    fn blocker() -> (
        impl FnOnce(&mut Batch<'_>) -> StoreResult<()> + Send,
        std::sync::mpsc::Sender<()>,
        std::sync::mpsc::Receiver<()>,
    ) {
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let (entered_tx, entered) = std::sync::mpsc::channel::<()>();
        let job = move |_: &mut Batch<'_>| {
            let _ = entered_tx.send(());
            let _ = wait.recv();
            Ok(())
        };
        (job, release, entered)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_waiting_while_the_writer_is_busy_share_one_transaction() {
        let (_dir, store, writer, thread, recorder) = start(|s| s);
        let (block, release, entered) = blocker();
        let w = writer.clone();
        let first = tokio::spawn(async move { w.write(block).await });
        entered.recv().unwrap();
        // Four jobs queue behind the busy writer...
        let mut queued = Vec::new();
        for key in ["a", "b", "c", "d"] {
            let w = writer.clone();
            queued.push(tokio::spawn(async move { w.write(put(key)).await }));
        }
        while writer.queue_len() < 4 {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        for q in queued {
            q.await.unwrap().unwrap();
        }
        // ...and join the blocker's open transaction: one durable commit for all five.
        assert_eq!(*recorder.committed.lock().unwrap(), vec![5]);
        assert!(["a", "b", "c", "d"].iter().all(|k| stored(&store, k)));
        drop(writer);
        thread.join().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lingering_job_waits_for_companions_and_an_urgent_one_commits_them_together() {
        // A long interval: the urgent job, not the deadline, must end the batch.
        let (_dir, store, writer, thread, recorder) =
            start(|s| s.commit_interval(Duration::from_secs(3)));
        let w = writer.clone();
        let lingering =
            tokio::spawn(async move { w.write_with(Urgency::Linger, put("heartbeat")).await });
        // The lingering job is in the open transaction (taken off the queue) but not
        // committed: nothing is reported yet.
        while writer.queue_len() > 0 {
            tokio::task::yield_now().await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(recorder.committed.lock().unwrap().is_empty());
        assert!(
            !stored(&store, "heartbeat"),
            "not durable before its commit"
        );
        writer.write(put("registration")).await.unwrap();
        lingering.await.unwrap().unwrap();
        assert_eq!(*recorder.committed.lock().unwrap(), vec![2]);
        assert!(stored(&store, "heartbeat") && stored(&store, "registration"));
        drop(writer);
        thread.join().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lingering_job_alone_commits_when_its_interval_is_up() {
        let (_dir, store, writer, thread, recorder) =
            start(|s| s.commit_interval(Duration::from_millis(200)));
        writer
            .write_with(Urgency::Linger, put("heartbeat"))
            .await
            .unwrap();
        assert!(stored(&store, "heartbeat"));
        assert_eq!(*recorder.committed.lock().unwrap(), vec![1]);
        drop(writer);
        thread.join().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_refused_job_does_not_abort_its_batch_but_a_storage_failure_does() {
        let (_dir, store, writer, thread, recorder) = start(|s| s);
        let (block, release, entered) = blocker();
        let w = writer.clone();
        let first = tokio::spawn(async move { w.write(block).await });
        entered.recv().unwrap();
        let w = writer.clone();
        let refused = tokio::spawn(async move {
            w.write(|_| -> StoreResult<()> {
                Err(crate::domain::refusal::Refusal::conflict("pool-full", "full").into())
            })
            .await
        });
        let w = writer.clone();
        let kept = tokio::spawn(async move { w.write(put("kept")).await });
        while writer.queue_len() < 2 {
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        assert!(matches!(
            refused.await.unwrap().unwrap_err(),
            StoreError::Refused(r) if r.slug == "pool-full"
        ));
        kept.await.unwrap().unwrap();
        assert!(stored(&store, "kept"));

        // A storage failure after a write aborts the batch: its write is not kept.
        let failed = writer
            .write(|b| {
                b.set_meta_u64("lost", 1)?;
                Err::<(), _>(StoreError::from(redb::StorageError::Corrupted(
                    "test".into(),
                )))
            })
            .await
            .unwrap_err();
        assert!(failed.aborts_batch());
        assert!(!stored(&store, "lost"));
        assert_eq!(recorder.aborted.lock().unwrap().len(), 1);
        drop(writer);
        thread.join().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_is_answered_503_with_retry_after_at_once() {
        let (_dir, _store, writer, thread, _recorder) = start(|s| s);
        let (block, release, entered) = blocker();
        let w = writer.clone();
        let first = tokio::spawn(async move { w.write(block).await });
        entered.recv().unwrap();
        let mut queued = Vec::new();
        for _ in 0..8 {
            let w = writer.clone();
            queued.push(tokio::spawn(async move { w.write(put("q")).await }));
        }
        while writer.queue_len() < 8 {
            tokio::task::yield_now().await;
        }
        let full = writer.write(put("one too many")).await.unwrap_err();
        assert_eq!(full, StoreError::Overloaded);
        release.send(()).unwrap();
        first.await.unwrap().unwrap();
        for q in queued {
            q.await.unwrap().unwrap();
        }
        drop(writer);
        thread.join().unwrap();
    }
}
