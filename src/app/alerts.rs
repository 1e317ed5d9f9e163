//! Alerts: the watcher's pass that raises `node.offline` / `node.online` for subscribers,
//! and the delivery pass that POSTs queued events to their webhooks (the loops that run
//! them are in `jobs::alerts`).
//!
//! Both stay off the heartbeat path: the watcher finds candidates in a read transaction
//! and hands the writer one small job per pass; delivery is plain HTTP outside the writer,
//! and only its outcome (remove, or back off) is written. An event is removed only after a
//! 2xx, so a crash between sending and recording sends it again with the same `event_id`
//! (at least once; receivers drop duplicates).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use super::AppState;
use crate::domain::alert::{
    expired, offline_alert_due, online_alert_due, retry_delay_us, AlertSettings, EventType,
    QueuedAlert, Subscriber,
};
use crate::domain::netguard::AllowedNetworks;
use crate::domain::node::{Node, NodeStatus};
use crate::domain::timefmt::rfc3339_us;
use crate::error::{ApiError, ApiResult};
use crate::payout_sink::target::{resolve, Refusal};
use crate::payout_sink::webhook::signature;
use crate::store::queries::Reader;

/// Longest wait between two attempts of one delivery.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(600);
/// Deliveries attempted per pass.
const DELIVERIES_PER_PASS: usize = 256;

/// What the watcher found for one subscriber and node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeAlert {
    pub subscriber_key: String,
    pub node_id: String,
    pub event: EventType,
}

/// One pass; returns how long to wait before the next one (a quarter of the shortest
/// grace, so an alert is at most that late; nothing to watch: check settings again soon).
pub async fn watch_nodes(app: &AppState) -> ApiResult<Duration> {
    let reader = app.store.reader()?;
    let settings: HashMap<String, AlertSettings> = reader
        .all_alert_settings()?
        .into_iter()
        .filter(|(_, s)| s.wants(EventType::NodeOffline) || s.wants(EventType::NodeOnline))
        .collect();
    let Some(shortest_grace) = settings.values().map(|s| s.offline_after_seconds).min() else {
        return Ok(Duration::from_secs(1));
    };
    let pause = Duration::from_millis(shortest_grace * 250)
        .clamp(Duration::from_millis(250), Duration::from_secs(10));
    let found = find_node_alerts(&reader, &settings, app.clock.now_us())?;
    drop(reader);
    if found.is_empty() {
        return Ok(pause);
    }
    let queued = app
        .writer
        .write(move |b| {
            let now = b.now_us();
            let mut queued = 0;
            for alert in found {
                let Some(settings) = b.alert_settings(&alert.subscriber_key)? else {
                    continue;
                };
                let Some(node) = b.node(&alert.node_id)? else {
                    continue;
                };
                let was_sent = b.offline_alert_sent(&alert.subscriber_key, &node.node_id)?;
                // Re-checked in the transaction: a heartbeat may have arrived meanwhile.
                let still_due = match alert.event {
                    EventType::NodeOffline => {
                        !was_sent && offline_alert_due(&node, settings.offline_after_seconds, now)
                    }
                    _ => was_sent && online_alert_due(&node),
                };
                if !still_due {
                    continue;
                }
                let offline = alert.event == EventType::NodeOffline;
                b.set_offline_alert_sent(&alert.subscriber_key, &node.node_id, offline)?;
                if settings.wants(alert.event) {
                    b.queue_alert(
                        &alert.subscriber_key,
                        alert.event,
                        &node.node_id,
                        &node.operator_id,
                        node_detail(&node, &settings),
                    )?;
                    queued += 1;
                }
            }
            Ok(queued)
        })
        .await?;
    if queued > 0 {
        app.alert_wakeup.notify_one();
    }
    Ok(pause)
}

/// Every node alert owed now, from a read snapshot. Only two kinds of node can owe one:
/// offline nodes (`node.offline`) and nodes a subscriber was told are offline
/// (`node.online`). The status index and the "offline sent" marks name them, so a pass
/// reads those nodes, not every node (at 100k nodes a full scan is ~0.25 s of CPU, and a
/// short grace repeats the pass every 250 ms).
pub fn find_node_alerts(
    reader: &Reader,
    settings: &HashMap<String, AlertSettings>,
    now: u64,
) -> ApiResult<Vec<NodeAlert>> {
    let sent: HashSet<(String, String)> = reader.offline_alerts_sent()?.into_iter().collect();
    let mut candidates: BTreeSet<String> = reader
        .node_ids_in_status(NodeStatus::Offline)?
        .into_iter()
        .collect();
    candidates.extend(sent.iter().map(|(_, node_id)| node_id.clone()));
    let mut found = Vec::new();
    for id in candidates {
        if let Some(node) = reader.node(&id)? {
            found.extend(alerts_for(&node, settings, &sent, now));
        }
    }
    Ok(found)
}

/// The node alerts owed to each subscriber of `node`.
fn alerts_for(
    node: &Node,
    settings: &HashMap<String, AlertSettings>,
    sent: &HashSet<(String, String)>,
    now: u64,
) -> Vec<NodeAlert> {
    let mut out = Vec::new();
    for subscriber in Subscriber::for_operator(&node.operator_id) {
        let key = subscriber.key();
        let Some(s) = settings.get(&key) else {
            continue;
        };
        let was_sent = sent.contains(&(key.clone(), node.node_id.clone()));
        let event = if !was_sent && offline_alert_due(node, s.offline_after_seconds, now) {
            EventType::NodeOffline
        } else if was_sent && online_alert_due(node) {
            EventType::NodeOnline
        } else {
            continue;
        };
        out.push(NodeAlert {
            subscriber_key: key,
            node_id: node.node_id.clone(),
            event,
        });
    }
    out
}

fn node_detail(node: &Node, settings: &AlertSettings) -> serde_json::Value {
    json!({
        "name": node.name,
        "status": node.status.as_str(),
        "pool_id": node.pool_id,
        "last_heartbeat_at": node.last_heartbeat_at_us.map(rfc3339_us),
        "offline_after_seconds": settings.offline_after_seconds,
    })
}

// ---- delivery ----

/// The result of one attempt.
enum Outcome {
    Delivered,
    Failed(String),
    /// The subscriber removed its settings: nowhere to send it.
    NoWebhook,
}

/// Checks where a webhook URL leads before it is stored (`PUT /api/v1/alerts`): 400 when it
/// is no http(s) URL, 422 `webhook-address-refused` when its host is, or resolves to, an
/// address the guard refuses, or does not resolve. Nothing is sent to the host.
pub async fn check_webhook_url(app: &AppState, url: &str) -> ApiResult<()> {
    match resolve(url.trim(), &app.config.webhook_allowed_networks).await {
        Ok(_) => Ok(()),
        Err(Refusal::Invalid(why)) => Err(ApiError::validation(format!("webhook_url: {why}"))),
        Err(refusal) => Err(ApiError::unprocessable(
            "webhook-address-refused",
            refusal.to_string(),
        )),
    }
}

/// Subscribers whose delivery task is running. A pass leaves them out, so a receiver that
/// accepts the connection and never answers holds up its own queue only (until
/// `ALERT_WEBHOOK_TIMEOUT`), never another subscriber's alerts.
#[derive(Clone, Default)]
pub struct InFlight(Arc<Mutex<HashSet<String>>>);

impl InFlight {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Marks a subscriber's task as running until dropped (also when the task panics).
struct Running {
    in_flight: InFlight,
    key: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.in_flight.lock().remove(&self.key);
    }
}

/// Starts a delivery task (in `tasks`, which the caller owns: dropping it stops them) for
/// every subscriber with alerts due and none running; returns how many started. Each task
/// sends its subscriber's alerts in event order, records the outcomes in its own write, and
/// wakes the loop for what came meanwhile.
pub async fn deliver_due(
    app: &AppState,
    in_flight: &InFlight,
    tasks: &mut tokio::task::JoinSet<()>,
) -> ApiResult<usize> {
    let now = app.clock.now_us();
    // Who is busy, taken before the read snapshot: a task that finishes after this has
    // its subscriber skipped this pass; one that finished before it committed its
    // outcomes before the snapshot, so nothing it delivered is read as due again.
    let busy = in_flight.lock().clone();
    let reader = app.store.reader()?;
    let due = reader.due_alerts(now, DELIVERIES_PER_PASS, |a| {
        !busy.contains(&a.subscriber_key)
    })?;
    if due.is_empty() {
        return Ok(0);
    }
    let mut by_subscriber: BTreeMap<String, Vec<(u64, QueuedAlert)>> = BTreeMap::new();
    for (seq, alert) in due {
        by_subscriber
            .entry(alert.subscriber_key.clone())
            .or_default()
            .push((seq, alert));
    }
    let mut started = 0;
    for (key, alerts) in by_subscriber {
        if !in_flight.lock().insert(key.clone()) {
            continue;
        }
        let running = Running {
            in_flight: in_flight.clone(),
            key: key.clone(),
        };
        let settings = reader.alert_settings(&key)?;
        let app = app.clone();
        tasks.spawn(async move {
            let outcomes = send_in_order(&app, settings.as_ref(), alerts).await;
            if let Err(e) = record_outcomes(&app, outcomes).await {
                tracing::warn!(error = %e, "alert delivery outcomes not recorded; they are sent again");
            }
            drop(running);
            app.alert_wakeup.notify_one();
        });
        started += 1;
    }
    Ok(started)
}

/// One subscriber's alerts, in event order, until one fails (the receiver is struggling:
/// the rest wait for a later pass).
async fn send_in_order(
    app: &AppState,
    settings: Option<&AlertSettings>,
    alerts: Vec<(u64, QueuedAlert)>,
) -> Vec<(u64, Outcome)> {
    let allowed = &app.config.webhook_allowed_networks;
    let timeout = app.config.alert_webhook_timeout;
    let mut outcomes = Vec::new();
    for (seq, alert) in alerts {
        let outcome = match settings {
            None => Outcome::NoWebhook,
            Some(s) => send(s, &alert, allowed, timeout).await,
        };
        let failed = matches!(outcome, Outcome::Failed(_));
        outcomes.push((seq, outcome));
        if failed {
            break;
        }
    }
    outcomes
}

/// Removes delivered alerts and backs off failed ones; returns how many were delivered.
async fn record_outcomes(app: &AppState, outcomes: Vec<(u64, Outcome)>) -> ApiResult<usize> {
    let base_us = app.config.alert_retry_base.as_micros() as u64;
    let max_age_us = app.config.alert_max_age.as_micros() as u64;
    let max_delay_us = MAX_RETRY_DELAY.as_micros() as u64;
    let (delivered, failed, dropped) = app
        .writer
        .write(move |b| {
            let now = b.now_us();
            let (mut delivered, mut failed, mut dropped) = (Vec::new(), 0u64, 0u64);
            for (seq, outcome) in outcomes {
                let Some(mut alert) = b.queued_alert(seq)? else {
                    continue;
                };
                match outcome {
                    Outcome::Delivered => {
                        b.remove_queued_alert(seq)?;
                        delivered.push(alert.event_type);
                    }
                    Outcome::NoWebhook => {
                        b.remove_queued_alert(seq)?;
                    }
                    Outcome::Failed(error) => {
                        failed += 1;
                        alert.attempts += 1;
                        if expired(&alert, max_age_us, now) {
                            tracing::warn!(event_id = %alert.event_id, attempts = alert.attempts, %error,
                                "alert given up after ALERT_MAX_AGE of failed deliveries");
                            b.remove_queued_alert(seq)?;
                            dropped += 1;
                            continue;
                        }
                        alert.next_attempt_at_us =
                            now + retry_delay_us(base_us, max_delay_us, alert.attempts);
                        alert.last_error = Some(error);
                        b.update_queued_alert(seq, &alert)?;
                    }
                }
            }
            Ok((delivered, failed, dropped))
        })
        .await?;
    for event in &delivered {
        app.metrics
            .alerts_sent
            .with_label_values(&[event.as_str()])
            .inc();
    }
    app.metrics.alerts_failed.inc_by(failed);
    app.metrics.alerts_dropped.inc_by(dropped);
    Ok(delivered.len())
}

/// One POST: the stored body, its event id, and the HMAC of the body with the current
/// secret. The host is resolved and checked for every attempt (DNS can change) and the
/// request goes only to the address checked; a redirect is an answer like any other (not
/// followed), and the answer's body is not read.
async fn send(
    settings: &AlertSettings,
    alert: &QueuedAlert,
    allowed: &AllowedNetworks,
    timeout: Duration,
) -> Outcome {
    let target = match resolve(&settings.webhook_url, allowed).await {
        Ok(t) => t,
        Err(refusal) => {
            tracing::warn!(event_id = %alert.event_id, %refusal, "alert webhook not sent");
            return Outcome::Failed(refusal.to_string());
        }
    };
    let client = match target.client(timeout) {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(e),
    };
    let sent = client
        .post(target.url.clone())
        .header("content-type", "application/json")
        .header("X-Lucid-Event-Id", &alert.event_id)
        .header(
            "X-Lucid-Signature",
            signature(&settings.secret, alert.body.as_bytes()),
        )
        .body(alert.body.clone())
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => Outcome::Delivered,
        Ok(r) => Outcome::Failed(format!(
            "the webhook {} answered {}",
            target.shown(),
            r.status().as_u16()
        )),
        Err(e) => Outcome::Failed(format!(
            "the webhook request to {} failed: {}",
            target.shown(),
            e.without_url()
        )),
    }
}
