//! Prometheus metrics. Counters that describe stored data (nodes per status, pools,
//! members) are read from the database's counter table at scrape time, so they are
//! right after a restart and cost no scan.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::domain::node::NodeStatus;
use crate::store::queries::Reader;
use crate::store::tables::{status_counter, POOLS_COUNTER, POOL_MEMBERS_COUNTER};

pub struct Metrics {
    registry: Registry,
    /// Labels `method` (GET, POST, PUT, DELETE, HEAD, OPTIONS, PATCH or `other`), `route`
    /// (the matched route template or `unmatched`) and `status`: all bounded sets, whatever
    /// clients send (see `api::observe`).
    pub http_requests: IntCounterVec,
    /// Label `route`, as for `http_requests`.
    pub http_latency: HistogramVec,
    pub writer_batch_size: Histogram,
    pub writer_commit_seconds: Histogram,
    pub writer_failed_batches: IntCounter,
    pub writer_queue: IntGauge,
    pub writer_queue_capacity: IntGauge,
    pub nodes_by_status: IntGaugeVec,
    pub pools: IntGauge,
    pub pool_members: IntGauge,
    pub auth_failures: IntCounterVec,
    /// Label `limit`: `auth` or `token` (see `app::rate_limits::LimitKind`).
    pub rate_limited: IntCounterVec,
    /// Keys the rate limiters hold now, label `limit` as for `rate_limited` (set at scrape).
    pub rate_limit_keys: IntGaugeVec,
    pub heartbeats: IntCounterVec,
    pub node_transitions: IntCounterVec,
    pub epochs_closed: IntCounter,
    /// Closes that finished windows accumulated as heartbeats committed (no scan).
    pub epochs_accumulated: IntCounter,
    pub epoch_close_seconds: Histogram,
    pub proofs: IntCounter,
    pub clock_jumps: IntCounter,
    pub payouts_by_state: IntGaugeVec,
    pub paid_usdt: prometheus::Gauge,
    pub payout_sink_errors: IntCounter,
    pub payout_runs: IntCounter,
    pub payout_last_run: IntGauge,
    pub alerts_sent: IntCounterVec,
    pub alerts_failed: IntCounter,
    pub alerts_dropped: IntCounter,
    pub alerts_queued: IntGauge,
    /// Free bytes of the database's filesystem, the database file's size, and what the
    /// process wrote to storage (`write_bytes` of /proc/self/io): the SD card's wear.
    pub storage_free_bytes: IntGauge,
    pub storage_file_bytes: IntGauge,
    pub storage_free_ratio: prometheus::Gauge,
    pub storage_written_bytes: IntCounter,
    /// The MongoDB mirror's state (rendered by `sync::MirrorStatus::render`).
    pub mirror: std::sync::Arc<crate::sync::MirrorStatus>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let build_info = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "lucid_build_info",
                    "Build information; the value is always 1.",
                ),
                &["version"],
            )
            .unwrap(),
        );
        build_info.with_label_values(&[crate::VERSION]).set(1);
        let metrics = Self {
            http_requests: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "lucid_http_requests_total",
                        "HTTP requests by route and status.",
                    ),
                    &["method", "route", "status"],
                )
                .unwrap(),
            ),
            http_latency: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "lucid_http_request_duration_seconds",
                        "HTTP request latency by route.",
                    )
                    .buckets(vec![
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    ]),
                    &["route"],
                )
                .unwrap(),
            ),
            writer_batch_size: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "lucid_writer_batch_size",
                        "Mutations folded into one write transaction (group commit).",
                    )
                    .buckets(vec![
                        1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 1024.0, 4096.0,
                    ]),
                )
                .unwrap(),
            ),
            writer_commit_seconds: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "lucid_writer_commit_seconds",
                        "Time to durably commit one write batch (the commit and its fsync).",
                    )
                    .buckets(vec![
                        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
                    ]),
                )
                .unwrap(),
            ),
            writer_failed_batches: register(
                &registry,
                IntCounter::new(
                    "lucid_writer_failed_batches_total",
                    "Write batches aborted by a storage failure.",
                )
                .unwrap(),
            ),
            writer_queue: register(
                &registry,
                IntGauge::new(
                    "lucid_writer_queue_length",
                    "Mutations waiting for the writer.",
                )
                .unwrap(),
            ),
            writer_queue_capacity: register(
                &registry,
                IntGauge::new(
                    "lucid_writer_queue_capacity",
                    "Bound of the writer's queue (WRITER_QUEUE_CAPACITY); at it, writes get 503.",
                )
                .unwrap(),
            ),
            nodes_by_status: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new("lucid_nodes", "Registered nodes by status."),
                    &["status"],
                )
                .unwrap(),
            ),
            pools: register(&registry, IntGauge::new("lucid_pools", "Pools.").unwrap()),
            pool_members: register(
                &registry,
                IntGauge::new("lucid_pool_members", "Nodes that are members of a pool.").unwrap(),
            ),
            auth_failures: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "lucid_auth_failures_total",
                        "Refused authentications by reason.",
                    ),
                    &["reason"],
                )
                .unwrap(),
            ),
            rate_limited: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "lucid_rate_limited_total",
                        "Requests refused with 429 rate-limited, by limit (auth: per client address on the login routes; token: per token subject).",
                    ),
                    &["limit"],
                )
                .unwrap(),
            ),
            rate_limit_keys: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "lucid_rate_limit_keys",
                        "Client addresses (auth) and token subjects (token) the rate limiters remember; keys whose burst has refilled are forgotten every second.",
                    ),
                    &["limit"],
                )
                .unwrap(),
            ),
            heartbeats: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "lucid_heartbeats_total",
                        "Heartbeats by outcome: accepted, or the problem type of the refusal.",
                    ),
                    &["outcome"],
                )
                .unwrap(),
            ),
            node_transitions: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "lucid_node_status_transitions_total",
                        "Node status changes.",
                    ),
                    &["from", "to"],
                )
                .unwrap(),
            ),
            epochs_closed: register(
                &registry,
                IntCounter::new("lucid_poot_epochs_closed_total", "PoOT epochs closed.").unwrap(),
            ),
            epochs_accumulated: register(
                &registry,
                IntCounter::new(
                    "lucid_poot_epochs_accumulated_total",
                    "PoOT epochs closed from windows accumulated as their heartbeats committed, reading no heartbeat (POOT_ACCUMULATED_EPOCHS).",
                )
                .unwrap(),
            ),
            epoch_close_seconds: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "lucid_poot_epoch_close_seconds",
                        "Time to close one PoOT epoch, including its commit.",
                    )
                    .buckets(vec![
                        0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    ]),
                )
                .unwrap(),
            ),
            proofs: register(
                &registry,
                IntCounter::new("lucid_poot_proofs_total", "PoOT proofs written.").unwrap(),
            ),
            clock_jumps: register(
                &registry,
                IntCounter::new(
                    "lucid_wall_clock_jumps_total",
                    "Wall-clock steps detected (they do not affect operational time).",
                )
                .unwrap(),
            ),
            payouts_by_state: register(
                &registry,
                IntGaugeVec::new(Opts::new("lucid_payouts", "Payouts by state."), &["state"])
                    .unwrap(),
            ),
            paid_usdt: register(
                &registry,
                prometheus::Gauge::new(
                    "lucid_payouts_paid_usdt",
                    "USDT confirmed paid in total (from the database, exact to the micro).",
                )
                .unwrap(),
            ),
            payout_sink_errors: register(
                &registry,
                IntCounter::new(
                    "lucid_payout_sink_errors_total",
                    "Failed payout delivery attempts (each is retried or fails the payout).",
                )
                .unwrap(),
            ),
            payout_runs: register(
                &registry,
                IntCounter::new("lucid_payout_runs_total", "Payout runs.").unwrap(),
            ),
            payout_last_run: register(
                &registry,
                IntGauge::new(
                    "lucid_payout_last_run_timestamp_seconds",
                    "Unix time of the last payout run.",
                )
                .unwrap(),
            ),
            alerts_sent: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "lucid_alerts_sent_total",
                        "Alert webhook deliveries acknowledged with 2xx, by event type.",
                    ),
                    &["type"],
                )
                .unwrap(),
            ),
            alerts_failed: register(
                &registry,
                IntCounter::new(
                    "lucid_alerts_failed_total",
                    "Alert webhook delivery attempts that failed (each is retried until ALERT_MAX_AGE).",
                )
                .unwrap(),
            ),
            alerts_dropped: register(
                &registry,
                IntCounter::new(
                    "lucid_alerts_dropped_total",
                    "Alerts given up after ALERT_MAX_AGE of failed deliveries.",
                )
                .unwrap(),
            ),
            alerts_queued: register(
                &registry,
                IntGauge::new(
                    "lucid_alerts_queued",
                    "Alert deliveries waiting (from the database).",
                )
                .unwrap(),
            ),
            storage_free_bytes: register(
                &registry,
                IntGauge::new(
                    "lucid_storage_free_bytes",
                    "Free bytes on the filesystem that holds the database.",
                )
                .unwrap(),
            ),
            storage_file_bytes: register(
                &registry,
                IntGauge::new("lucid_storage_file_bytes", "Size of the database file.").unwrap(),
            ),
            storage_free_ratio: register(
                &registry,
                prometheus::Gauge::new(
                    "lucid_storage_free_ratio",
                    "Free share (0 to 1) of the filesystem that holds the database.",
                )
                .unwrap(),
            ),
            storage_written_bytes: register(
                &registry,
                IntCounter::new(
                    "lucid_storage_written_bytes_total",
                    "Bytes this process caused to be written to storage (flash wear).",
                )
                .unwrap(),
            ),
            mirror: Default::default(),
            registry,
        };
        // Series that exist from the start (at 0), so rate() and alerting rules see them
        // before the first event.
        metrics.heartbeats.with_label_values(&["accepted"]);
        for limit in ["auth", "token"] {
            metrics.rate_limited.with_label_values(&[limit]);
            metrics.rate_limit_keys.with_label_values(&[limit]);
        }
        for event in crate::domain::alert::EventType::ALL {
            metrics.alerts_sent.with_label_values(&[event.as_str()]);
        }
        metrics
    }

    /// Sets the storage figures (free space, file size, bytes written so far).
    pub fn observe_storage(&self, report: &crate::store::space::SpaceReport) {
        self.storage_free_bytes
            .set(report.free_bytes.min(i64::MAX as u64) as i64);
        self.storage_file_bytes
            .set(report.file_bytes.min(i64::MAX as u64) as i64);
        self.storage_free_ratio.set(report.free_ratio());
        if let Some(written) = process_write_bytes() {
            let seen = self.storage_written_bytes.get();
            if written > seen {
                self.storage_written_bytes.inc_by(written - seen);
            }
        }
    }

    /// Refreshes the data gauges from storage and renders the text format.
    pub fn render(&self, reader: Option<&Reader>, writer_queue: usize) -> String {
        if let Some(r) = reader {
            for status in NodeStatus::ALL {
                if let Ok(n) = r.counter(&status_counter(status)) {
                    self.nodes_by_status
                        .with_label_values(&[status.as_str()])
                        .set(n as i64);
                }
            }
            if let Ok(n) = r.counter(POOLS_COUNTER) {
                self.pools.set(n as i64);
            }
            if let Ok(n) = r.counter(POOL_MEMBERS_COUNTER) {
                self.pool_members.set(n as i64);
            }
            for state in crate::domain::payout::PayoutState::ALL {
                if let Ok(n) = r.counter(&crate::store::tables::payout_state_counter(state)) {
                    self.payouts_by_state
                        .with_label_values(&[state.as_str()])
                        .set(n as i64);
                }
            }
            if let Ok(micros) = r.counter(crate::store::tables::PAID_MICROS_COUNTER) {
                self.paid_usdt.set(micros as f64 / 1e6);
            }
            if let Ok(n) = r.counter(crate::store::tables::ALERTS_QUEUED_COUNTER) {
                self.alerts_queued.set(n as i64);
            }
        }
        self.writer_queue.set(writer_queue as i64);
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        let mut text = String::from_utf8(out).unwrap_or_default();
        self.mirror.render(&mut text);
        text
    }
}

/// `write_bytes` of this process (Linux `/proc/self/io`): bytes sent to the storage layer.
fn process_write_bytes() -> Option<u64> {
    let io = std::fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("write_bytes:"))
        .and_then(|v| v.trim().parse().ok())
}

/// The writer reports each batch here, after its outcome is known (an aborted batch is
/// counted as failed, never as committed).
impl crate::store::writer::WriterObserver for Metrics {
    fn committed(&self, report: &crate::store::writer::BatchReport) {
        self.writer_batch_size.observe(report.jobs as f64);
        self.writer_commit_seconds
            .observe(report.commit.as_secs_f64());
    }

    fn aborted(&self, _report: &crate::store::writer::BatchReport) {
        self.writer_failed_batches.inc();
    }
}
