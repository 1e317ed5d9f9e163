//! The agent's own records when it has a state directory: the status file `agent status`
//! reads (last accepted heartbeat, acknowledged heartbeats, receipt problems) and the
//! receipts, fetched and checked after each epoch closes.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ed25519_dalek::VerifyingKey;
use serde::Deserialize;

use super::config::{parse_public_key, Settings};
use super::http::{get_json, GetError};
use super::receipts::{self, acknowledged_in, check_new, window_us, Receipt};
use super::state::{load_health, save_health, Health, STATUS_FILE};
use super::{now_us, Agent};
use crate::domain::proof::ProofDocument;
use crate::domain::timefmt::{parse_rfc3339_us, rfc3339_us};

/// How often to look for new proofs: every other heartbeat, at most once a minute apart.
fn check_every(interval: Duration) -> Duration {
    (interval * 2).min(Duration::from_secs(60)).max(interval)
}

/// The most proofs one round pages back through (100 pages of 500: half a year of 5-minute
/// epochs). Proofs are read newest first and kept oldest first, each chained to the one
/// before, so a round must reach back to the last receipt: the bound only stops a history
/// that never ends.
const MAX_NEW_PER_ROUND: usize = 50_000;
const PAGE: usize = 500;

pub(super) struct Keeper {
    node_id: String,
    health_path: PathBuf,
    receipts_path: PathBuf,
    health: Health,
    proof_key: Option<VerifyingKey>,
    proof_key_id: Option<String>,
    /// The last receipt's proof: the next one must chain to it.
    last: Option<ProofDocument>,
    every: Duration,
    last_check: Option<Instant>,
    write_failed: bool,
}

#[derive(Deserialize)]
struct HistoryPage {
    items: Vec<ProofDocument>,
    next_cursor: Option<String>,
}

#[derive(Deserialize)]
struct Keys {
    proof: KeyInfo,
}

#[derive(Deserialize)]
struct KeyInfo {
    public_key: String,
    key_id: Option<String>,
}

impl Keeper {
    pub(super) fn open(dir: &std::path::Path, settings: &Settings) -> Result<Self, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create the state directory {}: {e}", dir.display()))?;
        let health_path = dir.join(STATUS_FILE);
        let receipts_path = receipts::receipts_path(dir);
        let mut health = match load_health(&health_path) {
            Ok(Some(h)) if h.node_id == settings.node_id => h,
            Ok(_) => Health::default(),
            Err(e) => {
                tracing::warn!(error = %e, "starting a new status file");
                Health::default()
            }
        };
        health.node_id = settings.node_id.clone();
        health.interval_secs = settings.interval.as_secs().max(1);
        let kept = receipts::read_all(&receipts_path)?;
        let last = kept.last().map(|r| r.proof.clone());
        if settings.proof_key.is_none() {
            tracing::warn!(
                "no proof key pinned in agent.toml: receipts are checked with the key the server publishes now"
            );
        }
        Ok(Self {
            node_id: settings.node_id.clone(),
            health_path,
            receipts_path,
            health,
            proof_key: settings.proof_key,
            proof_key_id: settings.proof_key_id.clone(),
            last,
            every: check_every(settings.interval),
            last_check: None,
            write_failed: false,
        })
    }

    fn save(&mut self) {
        match save_health(&self.health_path, &self.health) {
            Ok(()) => self.write_failed = false,
            Err(e) => {
                if !self.write_failed {
                    tracing::warn!(path = %self.health_path.display(), error = %e,
                        "cannot write the status file");
                }
                self.write_failed = true;
            }
        }
    }

    pub(super) fn on_accepted(&mut self, seq: u64, received_at: Option<&str>) {
        self.health.last_accepted_at_us = Some(now_us());
        self.health.last_accepted_seq = Some(seq);
        self.health.last_error = None;
        match received_at.and_then(parse_rfc3339_us) {
            Some(t) => self.health.acknowledge(t),
            None => tracing::warn!("the heartbeat answer has no received_at; not counted"),
        }
        self.save();
    }

    pub(super) fn on_failure(&mut self, reason: &str) {
        self.health.last_error = Some(reason.to_string());
        self.save();
    }

    pub(super) fn due(&self) -> bool {
        self.last_check.is_none_or(|t| t.elapsed() >= self.every)
    }

    /// Checks one new proof and keeps it; false when it was refused (later ones wait).
    fn accept(&mut self, doc: ProofDocument, key: &VerifyingKey) -> bool {
        let acked = match acknowledged_in(&doc, &self.health.acknowledged_us) {
            Ok(n) => n,
            Err(e) => return self.refuse(&doc, e),
        };
        let (start, end) = match window_us(&doc) {
            Ok(w) => w,
            Err(e) => return self.refuse(&doc, e),
        };
        match check_new(
            &self.node_id,
            self.last.as_ref(),
            &doc,
            key,
            self.proof_key_id.as_deref(),
            acked,
        ) {
            Err(e) => self.refuse(&doc, e),
            Ok(mut problems) => {
                // Acknowledged heartbeats before this window that no earlier proof
                // covered: an epoch the appliance closed without a proof for this node.
                let uncovered = self
                    .health
                    .acknowledged_us
                    .iter()
                    .filter(|t| **t < start)
                    .count();
                if uncovered > 0 {
                    problems.push(format!(
                        "{uncovered} acknowledged heartbeat(s) before epoch {} are in no proof",
                        doc.epoch
                    ));
                }
                for p in &problems {
                    tracing::error!(epoch = doc.epoch, problem = %p, "receipt problem");
                }
                let receipt = Receipt {
                    proof: doc.clone(),
                    acknowledged_heartbeats: acked,
                    verified_at: rfc3339_us(now_us()),
                    problems: problems.clone(),
                };
                if let Err(e) = receipts::append(&self.receipts_path, &receipt) {
                    let why = format!("cannot write {}: {e}", self.receipts_path.display());
                    tracing::error!(%why);
                    self.health.problems = vec![why];
                    self.save();
                    return false;
                }
                tracing::info!(epoch = doc.epoch, heartbeats = doc.heartbeat_count,
                    acknowledged = acked, credits_usdt = %doc.credits_usdt, "receipt verified");
                self.health.forget_before(end);
                self.health.last_receipt_epoch = Some(doc.epoch);
                self.health.last_receipt_at_us = Some(now_us());
                self.health.problems = problems;
                self.last = Some(doc);
                self.save();
                true
            }
        }
    }

    fn refuse(&mut self, doc: &ProofDocument, why: String) -> bool {
        tracing::error!(epoch = doc.epoch, error = %why, "proof refused; not kept as a receipt");
        self.health.problems = vec![why];
        self.save();
        false
    }
}

impl Agent {
    /// Fetches the proofs of epochs closed since the last receipt, checks and keeps them.
    /// Failures to reach the server are left for the next round.
    pub(super) async fn keep_receipts(&mut self) {
        if let Some(k) = self.keeper.as_mut() {
            k.last_check = Some(Instant::now());
        }
        let token = match self.token().await {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!(reason = ?e, "receipts: not logged in; next round");
                return;
            }
        };
        let client = self.client.clone();
        let base = format!("{}/api/v1/poot/{}", self.base, self.node_id);
        let Some(keeper) = self.keeper.as_mut() else {
            return;
        };
        let after = keeper.last.as_ref().map(|p| p.epoch);
        let latest: ProofDocument = match get_json(&client, &base, Some(&token)).await {
            Ok(doc) => doc,
            Err(GetError::Status(404, _)) => return,
            Err(e) => {
                tracing::warn!(error = %e, "receipts: cannot fetch the latest proof");
                return;
            }
        };
        if after.is_some_and(|a| latest.epoch <= a) {
            return;
        }
        let key = match keeper.proof_key {
            Some(k) => k,
            None => {
                match get_json::<Keys>(&client, &format!("{}/api/v1/keys", self.base), None)
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|k| {
                        parse_public_key(&k.proof.public_key).map(|pk| (pk, k.proof.key_id))
                    }) {
                    Ok((k, id)) => {
                        keeper.proof_key = Some(k);
                        keeper.proof_key_id = keeper.proof_key_id.take().or(id);
                        k
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "receipts: cannot fetch the proof key");
                        return;
                    }
                }
            }
        };
        // Newest first, back to the last receipt.
        let mut new: Vec<ProofDocument> = Vec::new();
        let mut cursor: Option<String> = None;
        'pages: loop {
            let url = match &cursor {
                Some(c) => format!("{base}/history?limit={PAGE}&cursor={c}"),
                None => format!("{base}/history?limit={PAGE}"),
            };
            let page: HistoryPage = match get_json(&client, &url, Some(&token)).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "receipts: cannot fetch the proof history");
                    return;
                }
            };
            for doc in page.items {
                if after.is_some_and(|a| doc.epoch <= a) {
                    break 'pages;
                }
                new.push(doc);
            }
            match page.next_cursor {
                Some(c) if new.len() < MAX_NEW_PER_ROUND => cursor = Some(c),
                _ => break,
            }
        }
        new.sort_by_key(|d| d.epoch);
        new.dedup_by_key(|d| d.epoch);
        for doc in new {
            if !keeper.accept(doc, &key) {
                break;
            }
        }
    }
}
