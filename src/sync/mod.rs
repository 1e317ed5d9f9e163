//! The MongoDB mirror (cargo feature `mongo-sync`).
//!
//! Every mutation writes an outbox entry in its own transaction (`store::outbox`); the
//! task in `task` drains the outbox to MongoDB with idempotent upserts by `_id`, in
//! order, and deletes entries only after MongoDB acknowledged them. The appliance never
//! waits for MongoDB: while it is down the outbox grows and the task retries with
//! backoff. This module also holds what the rest of the program sees of the mirror
//! (status for `/health` and `/metrics`), which exists with or without the feature.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::config::Config;
use crate::store::outbox::{OutboxConfig, OutboxStatus};
use crate::store::Store;

#[cfg(feature = "mongo-sync")]
mod task;
#[cfg(feature = "mongo-sync")]
pub use task::run;

/// What `/health` and `/metrics` show of the mirror. All fields are cheap atomics.
#[derive(Default)]
pub struct MirrorStatus {
    /// MONGODB_URI was set (enabled or not).
    pub configured: AtomicBool,
    pub enabled: AtomicBool,
    pub connected: AtomicBool,
    pub initial_sync_done: AtomicBool,
    /// The outbox's length and overflow marker, which the writer's batches keep current
    /// (the store's side of this status).
    pub outbox: Arc<OutboxStatus>,
    pub outbox_max: AtomicU64,
    pub documents_mirrored: AtomicU64,
    pub sync_errors: AtomicU64,
    /// Unix time (µs) of the last successful write to MongoDB; 0 = never.
    pub last_sync_at_us: AtomicU64,
    /// Why the mirror is disabled, or the last sync error.
    pub reason: Mutex<Option<String>>,
    pub site_id: Mutex<String>,
}

impl MirrorStatus {
    pub fn set_reason(&self, reason: Option<String>) {
        *self.reason.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }

    /// The `mirror` field of `/health` (None when MONGODB_URI is unset).
    pub fn health(&self) -> Option<Value> {
        if !self.configured.load(Ordering::Relaxed) {
            return None;
        }
        let last = self.last_sync_at_us.load(Ordering::Relaxed);
        let reason = self
            .reason
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        Some(json!({
            "enabled": self.enabled.load(Ordering::Relaxed),
            "connected": self.connected.load(Ordering::Relaxed),
            "site_id": self.site_id.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            "initial_sync_done": self.initial_sync_done.load(Ordering::Relaxed),
            "outbox": self.outbox.len.load(Ordering::Relaxed),
            "outbox_max": self.outbox_max.load(Ordering::Relaxed),
            "outbox_overflowed": self.outbox.overflowed.load(Ordering::Relaxed),
            "documents_mirrored": self.documents_mirrored.load(Ordering::Relaxed),
            "last_sync_at": (last > 0).then(|| crate::domain::timefmt::rfc3339_us(last)),
            "reason": reason,
        }))
    }

    /// Appends the mirror's metrics in the Prometheus text format.
    pub fn render(&self, out: &mut String) {
        let g = |v: &AtomicU64| v.load(Ordering::Relaxed);
        let b = |v: &AtomicBool| u8::from(v.load(Ordering::Relaxed));
        let max = g(&self.outbox_max);
        let len = g(&self.outbox.len);
        let mut line = |name: &str, kind: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        };
        line(
            "lucid_mirror_enabled",
            "gauge",
            "1 when the MongoDB mirror runs.",
            b(&self.enabled).to_string(),
        );
        line(
            "lucid_mirror_connected",
            "gauge",
            "1 while MongoDB answers.",
            b(&self.connected).to_string(),
        );
        line(
            "lucid_mirror_outbox_entries",
            "gauge",
            "Changes waiting in the outbox for MongoDB.",
            len.to_string(),
        );
        line(
            "lucid_mirror_outbox_max_entries",
            "gauge",
            "The outbox bound (OUTBOX_MAX_ENTRIES).",
            max.to_string(),
        );
        line(
            "lucid_mirror_outbox_near_full",
            "gauge",
            "1 when the outbox holds 80% of its bound or more.",
            u8::from(max > 0 && len.saturating_mul(5) >= max.saturating_mul(4)).to_string(),
        );
        line(
            "lucid_mirror_outbox_overflowed",
            "gauge",
            "1 when the outbox hit its bound; a full resync is pending.",
            b(&self.outbox.overflowed).to_string(),
        );
        line(
            "lucid_mirror_documents_total",
            "counter",
            "Documents written to MongoDB.",
            g(&self.documents_mirrored).to_string(),
        );
        line(
            "lucid_mirror_sync_errors_total",
            "counter",
            "Failed attempts to reach or write MongoDB.",
            g(&self.sync_errors).to_string(),
        );
        line(
            "lucid_mirror_last_sync_timestamp_seconds",
            "gauge",
            "Unix time of the last successful write to MongoDB (0: never).",
            format!("{:.3}", g(&self.last_sync_at_us) as f64 / 1e6),
        );
    }
}

/// What the configuration asks of the mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// MONGODB_URI unset: nothing happens, nothing connects.
    Off,
    /// Set, but the mirror cannot run (why).
    Disabled(String),
    On {
        uri: String,
        site_id: String,
    },
}

/// The site id: SITE_ID, else the host name, else "localhost".
pub fn site_id(config: &Config) -> String {
    if let Some(s) = &config.site_id {
        return s.clone();
    }
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

pub fn plan(config: &Config) -> Plan {
    let Some(uri) = &config.mongodb_uri else {
        return Plan::Off;
    };
    if !cfg!(feature = "mongo-sync") {
        return Plan::Disabled(
            "MONGODB_URI is set but this build has no MongoDB support (cargo feature mongo-sync)"
                .into(),
        );
    }
    if uri.trim_start().starts_with("mongodb+srv://") {
        return Plan::Disabled(
            "MONGODB_URI uses mongodb+srv://, which this build cannot resolve (no DNS SRV resolver): list the hosts in a mongodb:// URI; mirror disabled"
                .into(),
        );
    }
    #[cfg(feature = "mongo-sync")]
    if let Err(e) = mongodb::options::ConnectionString::parse(uri) {
        return Plan::Disabled(format!(
            "MONGODB_URI is not a valid MongoDB connection string ({}): mirror disabled",
            task::mongo_error(&e)
        ));
    }
    Plan::On {
        uri: uri.clone(),
        site_id: site_id(config),
    }
}

/// Decides at start-up whether the writer keeps an outbox; reports a disabled mirror in
/// one line. The appliance serves either way.
pub fn prepare(
    config: &Config,
    store: &Store,
    status: &Arc<MirrorStatus>,
) -> Option<Arc<OutboxConfig>> {
    status
        .outbox_max
        .store(config.outbox_max_entries, Ordering::Relaxed);
    match plan(config) {
        Plan::Off => None,
        Plan::Disabled(why) => {
            status.configured.store(true, Ordering::Relaxed);
            tracing::error!(reason = %why, "MongoDB mirror disabled");
            status.set_reason(Some(why));
            None
        }
        Plan::On { site_id, .. } => {
            status.configured.store(true, Ordering::Relaxed);
            status.enabled.store(true, Ordering::Relaxed);
            *status.site_id.lock().unwrap_or_else(|e| e.into_inner()) = site_id.clone();
            if let Ok(reader) = store.reader() {
                if let Ok((len, _, init, over)) = reader.outbox_state() {
                    status.outbox.note_len(len, config.outbox_max_entries);
                    status.initial_sync_done.store(init, Ordering::Relaxed);
                    status.outbox.overflowed.store(over, Ordering::Relaxed);
                }
            }
            tracing::info!(site_id = %site_id, "MongoDB mirror enabled");
            Some(Arc::new(OutboxConfig {
                site_id,
                max_entries: config.outbox_max_entries,
                status: status.outbox.clone(),
            }))
        }
    }
}
