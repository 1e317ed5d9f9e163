//! Node liveness kept in memory: each node's last accepted heartbeat `seq` and receive time.
//!
//! Why: rewriting a node's record on every heartbeat dirtied a random B-tree page per
//! heartbeat, most of the bytes an SD card was asked to write (issue "Flash that lasts").
//! The heartbeat rows already hold these values durably, so the node record is written only
//! when a node's status changes (and it then carries `last_seq` and the last heartbeat
//! time, which is what keeps the replay guard after the rows are pruned).
//!
//! The map holds committed values only: the writer stages a batch's heartbeats in the batch
//! and merges them here after the commit is durable (an aborted batch leaves no trace). At
//! start the map is rebuilt from the newest heartbeat rows of the nodes whose record says
//! `online` (only those can have heartbeats newer than their record).

use std::collections::HashMap;
use std::sync::RwLock;

use crate::clock::Micros;
use crate::domain::node::Node;

/// A node's latest accepted heartbeat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Live {
    pub last_seq: u64,
    pub last_heartbeat_at_us: Micros,
}

impl Live {
    /// Puts these values on `node` when they are newer than what it carries.
    pub fn apply_to(self, node: &mut Node) {
        if node
            .last_heartbeat_at_us
            .is_none_or(|t| t < self.last_heartbeat_at_us)
        {
            node.last_heartbeat_at_us = Some(self.last_heartbeat_at_us);
        }
        if node.last_seq.is_none_or(|s| s < self.last_seq) {
            node.last_seq = Some(self.last_seq);
        }
    }
}

/// The committed liveness of every node that beat since its record was last written.
#[derive(Debug, Default)]
pub struct Liveness {
    map: RwLock<HashMap<String, Live>>,
}

impl Liveness {
    pub fn get(&self, node_id: &str) -> Option<Live> {
        self.read().get(node_id).copied()
    }

    /// `node` as it is now: its record with the newer in-memory values applied.
    pub fn apply(&self, node: &mut Node) {
        if let Some(live) = self.get(&node.node_id) {
            live.apply_to(node);
        }
    }

    /// Records committed heartbeats (the writer, after a durable commit).
    pub fn merge(&self, updates: impl IntoIterator<Item = (String, Live)>) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        for (id, live) in updates {
            let slot = map.entry(id).or_insert(live);
            if slot.last_seq < live.last_seq {
                *slot = live;
            }
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Live>> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(seq: Option<u64>, at: Option<u64>) -> Node {
        let mut n = Node::registered("node_a".into(), "a".into(), "op".into(), [0; 32], 1);
        n.last_seq = seq;
        n.last_heartbeat_at_us = at;
        n
    }

    #[test]
    fn newer_live_values_overlay_the_record_and_older_ones_do_not() {
        let live = Liveness::default();
        live.merge([(
            "node_a".to_string(),
            Live {
                last_seq: 7,
                last_heartbeat_at_us: 70,
            },
        )]);
        let mut stale = node(Some(3), Some(30));
        live.apply(&mut stale);
        assert_eq!(
            (stale.last_seq, stale.last_heartbeat_at_us),
            (Some(7), Some(70))
        );
        let mut fresher = node(Some(9), Some(90));
        live.apply(&mut fresher);
        assert_eq!(
            (fresher.last_seq, fresher.last_heartbeat_at_us),
            (Some(9), Some(90))
        );
    }

    #[test]
    fn merge_never_moves_a_node_back_to_an_older_seq() {
        let live = Liveness::default();
        let at = |seq| {
            (
                "node_a".to_string(),
                Live {
                    last_seq: seq,
                    last_heartbeat_at_us: seq * 10,
                },
            )
        };
        live.merge([at(5)]);
        live.merge([at(4)]);
        assert_eq!(live.get("node_a").unwrap().last_seq, 5);
    }
}
