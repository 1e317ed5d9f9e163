//! Closing a PoOT epoch, as a pure function of its inputs: the same heartbeats, carries and
//! previous proofs always give the same proofs, byte for byte.

use rust_decimal::Decimal;

use super::credits::credit_epoch;
use super::merkle::{empty_root, inner_hash, leaf_hash, root, root_and_paths, Hash, Side};
use super::proof::Proof;
use super::uptime::operational_seconds;
use crate::clock::Micros;

/// Epoch `k` covers `[k*L, (k+1)*L)`; these are its bounds in microseconds.
pub fn epoch_window(epoch: u64, length_us: Micros) -> (Micros, Micros) {
    (epoch * length_us, (epoch + 1) * length_us)
}

/// The first epoch that starts at or after `t`.
pub fn first_epoch_at_or_after(t: Micros, length_us: Micros) -> u64 {
    t.div_ceil(length_us)
}

/// One accepted heartbeat as the epoch sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub received_at_us: Micros,
    /// `leaf_hash(canonical bytes || signature)`.
    pub leaf: Hash,
}

/// What the epoch needs to know about one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEpochInput {
    pub node_id: String,
    /// Receipts from `window_start - timeout` to `window_end`, in receive order.
    pub receipts: Vec<Receipt>,
    pub credit_carry: Decimal,
    pub prev_proof_hash: Option<Hash>,
}

/// A node's result: its proof and its new credit carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEpochOutput {
    pub proof: Proof,
    pub credit_carry: Decimal,
    /// The node's index in the store and the epoch of its previous proof: set by the
    /// store, which read the chain state the proof links to (0 and None here).
    pub node_index: u32,
    pub prev_epoch: Option<u64>,
}

pub struct EpochParams {
    pub epoch: u64,
    pub length_us: Micros,
    pub timeout_us: Micros,
    pub reward_per_hour: Decimal,
}

/// A node's window as [`prove_node`] measures it, built one receipt at a time (in receive
/// order) without keeping the receipts: operational time as `uptime::operational_seconds`
/// computes it, heartbeats in the window and their Merkle root as `merkle::root` does.
/// Closing an epoch of 100k nodes streams a million heartbeats through these.
#[derive(Debug, Clone, Default)]
pub struct WindowAccumulator {
    last: Option<Micros>,
    micros: Micros,
    count: u64,
    /// Roots of complete subtrees, left to right: one per set bit of `count`, the
    /// highest first (their heights are those bits, so they are not stored).
    stack: Vec<Hash>,
}

/// What [`WindowAccumulator`] gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSummary {
    pub operational_seconds: u64,
    pub heartbeat_count: u64,
    pub heartbeats_root: Hash,
}

impl WindowAccumulator {
    /// The interval from `start` until `next` or the timeout, clipped to the window.
    fn clipped(start: Micros, until: Micros, window: (Micros, Micros)) -> Micros {
        let s = start.max(window.0);
        let e = until.min(window.1);
        e.saturating_sub(s)
    }

    /// Adds the next receipt (receive times must not decrease).
    pub fn push(&mut self, params: &EpochParams, received_at_us: Micros, leaf: Hash) {
        let window = epoch_window(params.epoch, params.length_us);
        if let Some(prev) = self.last {
            let until = prev.saturating_add(params.timeout_us).min(received_at_us);
            self.micros += Self::clipped(prev, until, window);
        }
        self.last = Some(received_at_us);
        if received_at_us >= window.0 && received_at_us < window.1 {
            // Adding a leaf to a binary counter: each trailing 1 bit of the count is a
            // subtree of that height to merge with.
            let merges = self.count.trailing_ones();
            self.count += 1;
            let mut node = leaf;
            for _ in 0..merges {
                let left = self
                    .stack
                    .pop()
                    .expect("one subtree per set bit of the count");
                node = inner_hash(&left, &node);
            }
            self.stack.push(node);
        }
    }

    /// Whether any receipt was pushed (a node not heard in the window has no proof).
    pub fn heard(&self) -> bool {
        self.last.is_some()
    }

    /// Gives back the frontier's spare capacity (an accumulator kept for long holds only
    /// its popcount(count) hashes).
    pub fn shrink_to_fit(&mut self) {
        self.stack.shrink_to_fit();
    }

    pub fn finish(self, params: &EpochParams) -> WindowSummary {
        let window = epoch_window(params.epoch, params.length_us);
        let mut micros = self.micros;
        if let Some(last) = self.last {
            micros += Self::clipped(last, last.saturating_add(params.timeout_us), window);
        }
        let heartbeats_root = match self.stack.split_last() {
            None => empty_root(),
            Some((&top, rest)) => rest
                .iter()
                .rev()
                .fold(top, |right, left| inner_hash(left, &right)),
        };
        WindowSummary {
            operational_seconds: micros / 1_000_000,
            heartbeat_count: self.count,
            heartbeats_root,
        }
    }
}

/// [`prove_node`] from a node's [`WindowSummary`] (see [`WindowAccumulator`]).
pub fn prove_summary(
    params: &EpochParams,
    node_id: String,
    summary: WindowSummary,
    credit_carry: Decimal,
    prev_proof_hash: Option<Hash>,
) -> Option<NodeEpochOutput> {
    let (start, end) = epoch_window(params.epoch, params.length_us);
    let seconds = summary.operational_seconds;
    if seconds == 0 && summary.heartbeat_count == 0 {
        return None;
    }
    let credit = credit_epoch(seconds, params.reward_per_hour, credit_carry);
    let proof_hash = Proof::compute_hash(
        &node_id,
        params.epoch,
        start,
        end,
        seconds,
        summary.heartbeat_count,
        &summary.heartbeats_root,
        credit.credited,
        prev_proof_hash.as_ref(),
    );
    Some(NodeEpochOutput {
        proof: Proof {
            node_id,
            epoch: params.epoch,
            window_start_us: start,
            window_end_us: end,
            operational_seconds: seconds,
            heartbeat_count: summary.heartbeat_count,
            heartbeats_root: summary.heartbeats_root,
            credits_usdt: credit.credited,
            prev_proof_hash,
            proof_hash,
            inclusion_path: Vec::new(),
        },
        credit_carry: credit.carry,
        node_index: 0,
        prev_epoch: None,
    })
}

/// One node's proof for the epoch, without its inclusion path (that needs every proof of
/// the epoch); `None` when the node has neither operational time nor heartbeats in the
/// window (nothing to prove, nothing to credit).
pub fn prove_node(params: &EpochParams, node: NodeEpochInput) -> Option<NodeEpochOutput> {
    let (start, end) = epoch_window(params.epoch, params.length_us);
    let times: Vec<Micros> = node.receipts.iter().map(|r| r.received_at_us).collect();
    let in_window: Vec<Hash> = node
        .receipts
        .iter()
        .filter(|r| r.received_at_us >= start && r.received_at_us < end)
        .map(|r| r.leaf)
        .collect();
    let summary = WindowSummary {
        operational_seconds: operational_seconds(&times, params.timeout_us, start, end),
        heartbeat_count: in_window.len() as u64,
        heartbeats_root: root(&in_window),
    };
    prove_summary(
        params,
        node.node_id,
        summary,
        node.credit_carry,
        node.prev_proof_hash,
    )
}

/// The epoch tree's leaf for a proof.
pub fn proof_leaf(proof: &Proof) -> Hash {
    leaf_hash(&proof.proof_hash)
}

/// Builds every node's proof and the epoch root. Nodes with neither operational time nor
/// heartbeats in the window get no proof (nothing to prove, nothing to credit).
/// Inputs may come in any order; proofs are sorted by `node_id`.
pub fn close_epoch(
    params: &EpochParams,
    mut nodes: Vec<NodeEpochInput>,
) -> (Hash, Vec<NodeEpochOutput>) {
    nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
    let mut outputs: Vec<NodeEpochOutput> = nodes
        .into_iter()
        .filter_map(|node| prove_node(params, node))
        .collect();
    let leaves: Vec<Hash> = outputs.iter().map(|o| proof_leaf(&o.proof)).collect();
    let (epoch_root, paths) = root_and_paths(&leaves);
    for (output, path) in outputs.iter_mut().zip(paths) {
        output.proof.inclusion_path = path_entries(path);
    }
    (epoch_root, outputs)
}

/// A path as stored in a proof: `true` = the sibling is on the left.
pub fn path_entries(path: Vec<(Side, Hash)>) -> Vec<(bool, Hash)> {
    path.into_iter()
        .map(|(s, h)| (s == Side::Left, h))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::merkle::root_from_path;

    const S: u64 = 1_000_000;

    fn params() -> EpochParams {
        EpochParams {
            epoch: 10,
            length_us: 300 * S,
            timeout_us: 90 * S,
            reward_per_hour: Decimal::new(5, 2),
        }
    }

    fn node(id: &str, times: &[u64]) -> NodeEpochInput {
        NodeEpochInput {
            node_id: id.into(),
            receipts: times
                .iter()
                .map(|t| Receipt {
                    received_at_us: *t,
                    leaf: leaf_hash(&t.to_be_bytes()),
                })
                .collect(),
            credit_carry: Decimal::ZERO,
            prev_proof_hash: None,
        }
    }

    #[test]
    fn recomputing_an_epoch_gives_identical_proofs() {
        let base = 3000 * S;
        let inputs = vec![
            node("node_b", &[base, base + 30 * S, base + 60 * S]),
            node("node_a", &[base - 50 * S, base + 100 * S]),
        ];
        let first = close_epoch(&params(), inputs.clone());
        let mut reversed = inputs;
        reversed.reverse();
        let second = close_epoch(&params(), reversed);
        assert_eq!(first, second);
        assert_eq!(first.1[0].proof.node_id, "node_a");
        // node_a: 3000..3040 from the heartbeat before the window, 3100..3190.
        assert_eq!(first.1[0].proof.operational_seconds, 40 + 90);
        assert_eq!(first.1[0].proof.heartbeat_count, 1);
        for out in &first.1 {
            assert_eq!(
                root_from_path(
                    leaf_hash(&out.proof.proof_hash),
                    &out.proof
                        .inclusion_path
                        .iter()
                        .map(|(l, h)| (if *l { Side::Left } else { Side::Right }, *h))
                        .collect::<Vec<_>>()
                ),
                first.0
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn the_streamed_window_equals_the_proof_from_all_receipts(
            gaps in proptest::collection::vec(0u64..200, 0..40),
            first in 2700u64..3100,
            carry in 0i64..3600,
        ) {
            let p = params();
            let mut t = first * S;
            let times: Vec<u64> = gaps.iter().map(|g| { t += g * S / 2; t }).collect();
            let input = NodeEpochInput {
                credit_carry: Decimal::new(carry, 6),
                ..node("node_s", &times)
            };
            let mut acc = WindowAccumulator::default();
            for r in &input.receipts {
                acc.push(&p, r.received_at_us, r.leaf);
            }
            let streamed = prove_summary(
                &p,
                input.node_id.clone(),
                acc.finish(&p),
                input.credit_carry,
                input.prev_proof_hash,
            );
            proptest::prop_assert_eq!(streamed, prove_node(&p, input));
        }
    }

    #[test]
    fn idle_nodes_get_no_proof() {
        let (root_hash, outs) = close_epoch(&params(), vec![node("node_a", &[])]);
        assert!(outs.is_empty());
        assert_eq!(root_hash, crate::domain::merkle::empty_root());
    }

    #[test]
    fn epochs_are_aligned_to_their_length() {
        assert_eq!(epoch_window(2, 300 * S), (600 * S, 900 * S));
        assert_eq!(first_epoch_at_or_after(600 * S, 300 * S), 2);
        assert_eq!(first_epoch_at_or_after(600 * S + 1, 300 * S), 3);
    }
}
