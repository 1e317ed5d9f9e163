//! The node monitor: a node with no heartbeat for longer than `HEARTBEAT_TIMEOUT` goes
//! `offline`. Candidates are found in a read transaction (no writer time spent scanning);
//! the writer re-checks each one before changing it.

use std::time::Duration;

use serde_json::json;

use crate::api::AppState;
use crate::domain::node::{Node, NodeStatus};
use crate::error::ApiResult;
use crate::metrics::Metrics;
use crate::store::{Actor, Batch};

/// Audits a status change and counts it. The caller stores the node.
pub fn record_transition(
    b: &mut Batch<'_>,
    metrics: &Metrics,
    node: &Node,
    to: NodeStatus,
    reason: &str,
) -> ApiResult<()> {
    metrics
        .node_transitions
        .with_label_values(&[node.status.as_str(), to.as_str()])
        .inc();
    b.audit(
        &Actor::system(),
        &format!("node.{}", to.as_str()),
        &node.node_id,
        json!({"from": node.status.as_str(), "reason": reason}),
    )
}

pub async fn run(app: AppState) {
    let timeout = app.config.heartbeat_timeout;
    let tick = (timeout / 4).clamp(Duration::from_millis(250), Duration::from_secs(5));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if let Err(e) = mark_silent_nodes_offline(&app).await {
            tracing::warn!(error = %e, "node monitor pass failed");
        }
    }
}

/// One pass: returns how many nodes went offline.
pub async fn mark_silent_nodes_offline(app: &AppState) -> ApiResult<usize> {
    let timeout_us = app.config.heartbeat_timeout.as_micros() as u64;
    let now = app.clock.now_us();
    let is_silent = move |n: &Node, now: u64| {
        n.status == NodeStatus::Online
            && n.last_heartbeat_at_us.is_none_or(|t| t + timeout_us <= now)
    };
    let candidates = app.store.reader()?.node_ids_where(|n| is_silent(n, now))?;
    if candidates.is_empty() {
        return Ok(0);
    }
    let metrics = app.metrics.clone();
    app.writer
        .write(move |b| {
            let now = b.now_us();
            let mut changed = 0;
            for id in candidates {
                let Some(node) = b.node(&id)? else { continue };
                if !is_silent(&node, now) {
                    continue; // a heartbeat arrived meanwhile
                }
                record_transition(b, &metrics, &node, NodeStatus::Offline, "heartbeat timeout")?;
                let mut next = node.clone();
                next.status = NodeStatus::Offline;
                b.put_node(&next, Some(&node))?;
                changed += 1;
            }
            Ok(changed)
        })
        .await
}
