//! Node status changes: the audit and metrics of a transition (shared by the heartbeat
//! handler and the monitor), and the monitor's pass: a node with no heartbeat for longer
//! than `HEARTBEAT_TIMEOUT` goes `offline`. Candidates are found in a read transaction (no
//! writer time spent scanning); the writer re-checks each one before changing it.

use serde_json::json;

use super::AppState;
use crate::domain::node::{Node, NodeStatus};
use crate::error::ApiResult;
use crate::metrics::Metrics;
use crate::store::{Actor, Batch};

/// A status change a batch made; counted in metrics only once its batch is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: NodeStatus,
    pub to: NodeStatus,
}

impl Transition {
    /// Counts it (after the commit that holds it: an aborted batch counts nothing).
    pub fn count(self, metrics: &Metrics) {
        metrics
            .node_transitions
            .with_label_values(&[self.from.as_str(), self.to.as_str()])
            .inc();
    }
}

/// Audits a status change. The caller stores the node (the record then carries the
/// node's latest `seq` and heartbeat time, see `store::liveness`).
pub fn record_transition(
    b: &mut Batch<'_>,
    node: &Node,
    to: NodeStatus,
    reason: &str,
) -> ApiResult<Transition> {
    b.audit(
        &Actor::system(),
        &format!("node.{}", to.as_str()),
        &node.node_id,
        json!({"from": node.status.as_str(), "reason": reason}),
    )?;
    Ok(Transition {
        from: node.status,
        to,
    })
}

/// One pass: returns how many nodes went offline. Candidates come from memory (the
/// nodes' liveness, see `store::liveness`) and the status index, never a scan of every
/// node record; the writer re-checks each one before changing it.
pub async fn mark_silent_nodes_offline(app: &AppState) -> ApiResult<usize> {
    let timeout_us = app.config.heartbeat_timeout.as_micros() as u64;
    let now = app.clock.now_us();
    let is_silent = move |n: &Node, now: u64| {
        n.status == NodeStatus::Online
            && n.last_heartbeat_at_us.is_none_or(|t| t + timeout_us <= now)
    };
    let reader = app.store.reader()?;
    let mut candidates = Vec::new();
    for id in reader.node_ids_in_status(NodeStatus::Online)? {
        let silent = match app.store.liveness.get(&id) {
            Some(live) => live.last_heartbeat_at_us + timeout_us <= now,
            None => reader.node(&id)?.is_some_and(|n| is_silent(&n, now)),
        };
        if silent {
            candidates.push(id);
        }
    }
    drop(reader);
    if candidates.is_empty() {
        return Ok(0);
    }
    let transitions = app
        .writer
        .write(move |b| {
            let now = b.now_us();
            let mut transitions = Vec::new();
            for id in candidates {
                let Some(node) = b.node(&id)? else { continue };
                if !is_silent(&node, now) {
                    continue; // a heartbeat arrived meanwhile
                }
                transitions.push(record_transition(
                    b,
                    &node,
                    NodeStatus::Offline,
                    "heartbeat timeout",
                )?);
                // `node` carries its latest seq and heartbeat time (Batch::node applies
                // them), so the record keeps the replay guard once its rows are pruned.
                let mut next = node.clone();
                next.status = NodeStatus::Offline;
                b.put_node(&next, Some(&node))?;
            }
            Ok(transitions)
        })
        .await?;
    for t in &transitions {
        t.count(&app.metrics);
    }
    Ok(transitions.len())
}
