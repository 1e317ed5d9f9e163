//! Each node's PoOT window, accumulated as its heartbeats commit (issue 15).
//!
//! Closing an epoch used to read back every heartbeat of its window (about 130,000 at
//! 10,000 nodes) to rebuild each node's operational time and heartbeat Merkle root: two
//! thirds of a close. Here the writer hands every committed heartbeat's Merkle leaf to
//! [`EpochAccumulators::push_committed`], which adds it to the [`WindowAccumulator`] of each
//! epoch whose window holds it (a streaming Merkle frontier: O(log n) per heartbeat). The
//! close then only finishes them ([`EpochAccumulators::take`]).
//!
//! At start the windows of the epochs not closed yet are rebuilt from the stored heartbeats
//! ([`rebuild`], on a snapshot taken before the writer starts, in the background); leaves
//! committed meanwhile wait in a queue and follow them, so each window still takes its
//! heartbeats in receive order. An epoch is covered only when every heartbeat of its
//! window (its start minus the heartbeat timeout) was pushed; a close that comes while the
//! rebuild runs waits for it. For an epoch whose close is retried or resumed, one older
//! than the rebuild reaches, one after a failed commit and one dropped by the memory
//! bound, the close scans the heartbeats as before. Both give the same proofs: the accumulator is the one the
//! scan feeds, in the same receive order.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use redb::ReadableDatabase;
use rust_decimal::Decimal;

use super::error::{StoreError, StoreResult};
use super::tables::{HEARTBEATS, POOT_CLOSED_UNTIL_KEY};
use crate::clock::Micros;
use crate::domain::merkle::Hash;
use crate::domain::poot::{EpochParams, WindowAccumulator};

/// How long a close waits for the rebuild at start before it scans instead.
const REBUILD_WAIT: Duration = Duration::from_secs(120);

/// Stored heartbeats pushed at a time while rebuilding (the writer's pushes wait for it).
const REBUILD_BATCH: usize = 4096;

/// At start, after [`EpochAccumulators::configure`] and before the writer starts: rebuilds
/// the windows of the epochs not closed yet from the stored heartbeats, on a thread of its
/// own, so the first closes after a start need not scan either.
pub fn rebuild_in_background(store: &super::Store, now_us: Micros) {
    let acc = store.accumulators.clone();
    let closed_until = match store
        .reader()
        .and_then(|r| r.meta_u64(POOT_CLOSED_UNTIL_KEY))
    {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "PoOT windows not rebuilt; the next closes scan their heartbeats");
            return;
        }
    };
    let Some(from) = acc.rebuild_from(closed_until, now_us) else {
        return;
    };
    // Taken before the writer commits anything: it holds every heartbeat stamped before
    // `now_us`, and every later one reaches `push_committed`.
    let snapshot = match rebuild_snapshot(store) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "PoOT windows not rebuilt; the next closes scan their heartbeats");
            return;
        }
    };
    acc.begin_rebuild(from);
    let worker = acc.clone();
    let spawned = std::thread::Builder::new()
        .name("poot-rebuild".into())
        .spawn(move || {
            // A panic (a row that does not decode in a way nothing foresaw) must not leave
            // the queue on: pushes would wait there for ever, and nothing be covered.
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                rebuild(&worker, &snapshot, from)
            }))
            .unwrap_or_else(|_| Err(StoreError::unavailable("the PoOT rebuild panicked")));
            worker.finish_rebuild(now_us, outcome);
        });
    if let Err(e) = spawned {
        acc.finish_rebuild(
            now_us,
            Err(StoreError::unavailable(format!(
                "cannot start the rebuild thread: {e}"
            ))),
        );
    }
}

/// The read snapshot [`rebuild`] reads from.
pub fn rebuild_snapshot(store: &super::Store) -> StoreResult<redb::ReadTransaction> {
    Ok(store.db.current()?.begin_read()?)
}

/// Reads the heartbeats received from `from_us` on in `snapshot` (taken before the writer
/// started) into `acc`, in receive order; returns how many.
pub fn rebuild(
    acc: &EpochAccumulators,
    snapshot: &redb::ReadTransaction,
    from_us: Micros,
) -> StoreResult<usize> {
    let table = snapshot.open_table(HEARTBEATS)?;
    let mut batch = Vec::with_capacity(REBUILD_BATCH);
    let mut read = 0;
    for entry in table.range::<(u64, &str)>((from_us, "")..)? {
        let (k, v) = entry?;
        let (at, node) = k.value();
        batch.push((
            node.into(),
            at,
            super::poot::heartbeat_leaf(node, at, v.value())?,
        ));
        read += 1;
        if batch.len() == REBUILD_BATCH {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(REBUILD_BATCH));
            acc.state().push(full);
        }
    }
    acc.state().push(batch);
    Ok(read)
}

/// Epochs with open accumulators at most (POOT_ACCUMULATED_EPOCHS' default): the current
/// one, the next (opened by heartbeats within the timeout of its start) and those whose
/// close is due. Past it the oldest is dropped (and scanned when closed), so a closer that
/// stalls cannot grow memory without bound.
pub const KEPT_EPOCHS: usize = 4;

#[derive(Default)]
pub struct EpochAccumulators(Mutex<State>, Condvar);

#[derive(Default)]
struct State {
    config: Option<Config>,
    /// Each node heard since accumulation began, by slot: its id is kept once, not once
    /// per open epoch (ids never change; bounded by the nodes that send heartbeats).
    slots: HashMap<Arc<str>, u32>,
    ids: Vec<Arc<str>>,
    /// Per open epoch, each node's window by slot (dense: a slot is 56 bytes, less than
    /// a hash map's entry; a node not heard in the epoch has an empty one).
    epochs: BTreeMap<u64, Vec<WindowAccumulator>>,
    /// Epochs below this are not covered (dropped unclosed, or taken by a close).
    covered_from: u64,
    /// While the windows are rebuilt from stored heartbeats: the leaves committed
    /// meanwhile, pushed after the stored ones (receive order).
    queued: Option<VecDeque<CommittedLeaf>>,
}

impl State {
    /// Adds heartbeats, in receive order, to the windows holding them: epochs `e` with
    /// `e * length - timeout <= at < (e + 1) * length`.
    fn push(&mut self, leaves: Vec<CommittedLeaf>) {
        let Some(c) = self.config else {
            return;
        };
        for (node, at, leaf) in leaves {
            let slot = self.slot(node);
            let first = at / c.length_us;
            let last = at.saturating_add(c.timeout_us) / c.length_us;
            for epoch in first.max(self.covered_from)..=last {
                let params = EpochParams {
                    epoch,
                    length_us: c.length_us,
                    timeout_us: c.timeout_us,
                    reward_per_hour: Decimal::ZERO, // not used by the window
                };
                let nodes = self.ids.len();
                let windows = self
                    .epochs
                    .entry(epoch)
                    .or_insert_with(|| Vec::with_capacity(nodes));
                if windows.len() <= slot as usize {
                    windows.resize_with(slot as usize + 1, WindowAccumulator::default);
                }
                let w = &mut windows[slot as usize];
                w.push(&params, at, leaf);
                // Held for minutes: keep only the hashes the frontier needs.
                w.shrink_to_fit();
            }
        }
        while self.epochs.len() > c.kept_epochs {
            if let Some((oldest, _)) = self.epochs.pop_first() {
                tracing::debug!(
                    epoch = oldest,
                    "PoOT accumulators dropped unclosed; its close scans the heartbeats"
                );
                self.covered_from = self.covered_from.max(oldest + 1);
            }
        }
    }

    fn slot(&mut self, node: Box<str>) -> u32 {
        if let Some(&slot) = self.slots.get(&*node) {
            return slot;
        }
        let slot = u32::try_from(self.ids.len()).unwrap_or(u32::MAX);
        let id: Arc<str> = Arc::from(node);
        self.ids.push(id.clone());
        self.slots.insert(id, slot);
        slot
    }
}

#[derive(Clone, Copy)]
struct Config {
    length_us: Micros,
    timeout_us: Micros,
    kept_epochs: usize,
    /// Heartbeats stamped after this are all seen.
    since_us: Micros,
}

/// One committed heartbeat: node, receive stamp, Merkle leaf.
pub type CommittedLeaf = (Box<str>, Micros, Hash);

impl EpochAccumulators {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts accumulating, for epochs of `length_us` with `timeout_us`, at most
    /// `kept_epochs` open (0: off, every close scans): every heartbeat committed from now
    /// on must be pushed, and none stamped after `since_us` may have been committed before
    /// (the service calls this before it serves).
    pub fn configure(
        &self,
        (length_us, timeout_us): (Micros, Micros),
        since_us: Micros,
        kept_epochs: usize,
    ) {
        let mut s = self.state();
        // When the close of epoch e comes, e, e + 1 and the epochs a heartbeat's timeout
        // reaches into are open: with fewer kept, e would always be dropped first.
        let needed = (timeout_us / length_us.max(1)) as usize + 2;
        if kept_epochs > 0 && kept_epochs < needed {
            tracing::warn!(
                kept_epochs,
                needed,
                "POOT_ACCUMULATED_EPOCHS is too small for HEARTBEAT_TIMEOUT / POOT_CALCULATION_INTERVAL; every close scans its heartbeats"
            );
        }
        s.config = (length_us > 0 && kept_epochs >= needed).then_some(Config {
            length_us,
            timeout_us,
            kept_epochs,
            since_us,
        });
        s.epochs.clear();
        s.slots.clear();
        s.ids.clear();
        s.covered_from = 0;
        s.queued = None;
    }

    /// Where a rebuild at start should read from, given when the first epoch not closed
    /// yet begins (`closed_until_us`) and the time now; None when accumulation is off or
    /// nothing has been closed yet. Not further back than the epochs that can be kept.
    pub fn rebuild_from(&self, closed_until_us: Option<Micros>, now_us: Micros) -> Option<Micros> {
        let c = self.state().config?;
        let closed_until = closed_until_us.filter(|&t| t > 0)?;
        let kept_back = (c.kept_epochs as u64).saturating_sub(1) * c.length_us;
        Some(
            closed_until
                .saturating_sub(c.timeout_us)
                .max(now_us.saturating_sub(kept_back)),
        )
    }

    /// Whether the writer should hand over committed heartbeats.
    pub fn enabled(&self) -> bool {
        self.state().config.is_some()
    }

    /// A batch whose commit failed may be on disk all the same (redb writes the new header
    /// before its last flush, so a failed flush does not undo it): the epochs whose windows
    /// could hold heartbeats stamped up to `at_us` are scanned when closed.
    pub fn forget_through(&self, at_us: Micros) {
        let mut s = self.state();
        if let Some(c) = &mut s.config {
            c.since_us = c.since_us.max(at_us);
        }
    }

    /// Adds committed heartbeats, in commit (so receive) order (queued while a rebuild
    /// runs).
    pub fn push_committed(&self, leaves: Vec<CommittedLeaf>) {
        if leaves.is_empty() {
            return;
        }
        let mut s = self.state();
        match &mut s.queued {
            Some(queue) => queue.extend(leaves),
            None => s.push(leaves),
        }
    }

    /// Starts rebuilding at start (before the writer commits anything): every heartbeat
    /// received from `from_us` on will have been pushed once [`rebuild`] has read the
    /// stored ones and [`Self::finish_rebuild`] the ones committed meanwhile; until then
    /// nothing is covered.
    pub fn begin_rebuild(&self, from_us: Micros) {
        let mut s = self.state();
        if let Some(c) = &mut s.config {
            c.since_us = c.since_us.min(from_us.saturating_sub(1));
            s.queued = Some(VecDeque::new());
        }
    }

    /// Ends a rebuild: the leaves committed meanwhile follow the stored ones. When it
    /// failed, only epochs whose window began after `started_us` (all of whose
    /// heartbeats were committed by this process) stay covered.
    pub fn finish_rebuild(&self, started_us: Micros, outcome: StoreResult<usize>) {
        let mut s = self.state();
        match outcome {
            Ok(n) => tracing::info!(
                heartbeats = n,
                "PoOT windows rebuilt from the stored heartbeats"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "PoOT windows not rebuilt; the next closes scan their heartbeats");
                if let Some(c) = &mut s.config {
                    c.since_us = c.since_us.max(started_us);
                }
            }
        }
        drop(s);
        // The queue, a batch per lock hold: the writer pushes under the same lock after
        // every commit, and a long rebuild may have queued many (new ones join at the back).
        loop {
            let mut s = self.state();
            let Some(queue) = &mut s.queued else {
                return;
            };
            if queue.len() > REBUILD_BATCH {
                let batch: Vec<CommittedLeaf> = queue.drain(..REBUILD_BATCH).collect();
                s.push(batch);
            } else {
                let rest = s.queued.take().map(Vec::from).unwrap_or_default();
                s.push(rest);
                drop(s);
                self.1.notify_all();
                return;
            }
        }
    }

    /// The finished windows of `epoch`'s nodes, in node id order, when this process saw
    /// every heartbeat of its window with these parameters; else None (the close scans).
    /// Taken once: a retried close scans.
    pub fn take(
        &self,
        epoch: u64,
        length_us: Micros,
        timeout_us: Micros,
    ) -> Option<Vec<(Box<str>, WindowAccumulator)>> {
        let mut s = self.state();
        // A close that comes while the windows are rebuilt at start waits for them (closes
        // run off the async threads): reading the same heartbeats twice, once to rebuild
        // and once to scan, would only slow both.
        if s.queued.is_some() {
            s = self
                .1
                .wait_timeout_while(s, REBUILD_WAIT, |s| s.queued.is_some())
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let c = s.config?;
        let window_start = (epoch * length_us).checked_sub(timeout_us)?;
        let covered = s.queued.is_none()
            && c.length_us == length_us
            && c.timeout_us == timeout_us
            && epoch >= s.covered_from
            && window_start > c.since_us;
        // Closes go in epoch order: what is older is closed (or skipped) already.
        let mut later = s.epochs.split_off(&epoch);
        let taken = later.remove(&epoch);
        s.epochs = later;
        s.covered_from = s.covered_from.max(epoch + 1);
        if !covered {
            return None;
        }
        let taken = taken.unwrap_or_default();
        let ids: Vec<Arc<str>> = s.ids[..taken.len().min(s.ids.len())].to_vec();
        // The writer pushes under this lock after every commit: sort without it.
        drop(s);
        let mut windows: Vec<(Box<str>, WindowAccumulator)> = taken
            .into_iter()
            .zip(ids)
            .filter(|(w, _)| w.heard())
            .map(|(w, id)| (Box::from(&*id), w))
            .collect();
        windows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Some(windows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::merkle::leaf_hash;

    const S: u64 = 1_000_000;

    fn leaf(i: u64) -> Hash {
        leaf_hash(&i.to_le_bytes())
    }

    fn params(epoch: u64) -> EpochParams {
        EpochParams {
            epoch,
            length_us: 300 * S,
            timeout_us: 90 * S,
            reward_per_hour: Decimal::ZERO,
        }
    }

    #[test]
    fn a_window_accumulated_at_commit_equals_the_window_scanned_at_close() {
        let acc = EpochAccumulators::default();
        acc.configure((300 * S, 90 * S), 1_000 * S, 8);
        // Heartbeats every 30 s from 1,200 s to 2,400 s (epochs 4 to 7), two nodes.
        let beats: Vec<(u64, &str)> = (0..40)
            .flat_map(|i| [(1_200 * S + i * 30 * S, "a"), (1_201 * S + i * 30 * S, "b")])
            .collect();
        for chunk in beats.chunks(7) {
            acc.push_committed(
                chunk
                    .iter()
                    .map(|&(at, n)| (n.into(), at, leaf(at)))
                    .collect(),
            );
        }
        // Epoch 4's window starts at 1,110 s, after accumulation began: covered.
        for epoch in [4u64, 5, 6] {
            let p = params(epoch);
            let (from, to) = (epoch * 300 * S - 90 * S, (epoch + 1) * 300 * S);
            let got = acc.take(epoch, 300 * S, 90 * S).unwrap();
            assert_eq!(got.len(), 2);
            for (node, w) in got {
                let mut scanned = WindowAccumulator::default();
                for &(at, n) in &beats {
                    if n == &*node && (from..to).contains(&at) {
                        scanned.push(&p, at, leaf(at));
                    }
                }
                assert_eq!(
                    w.finish(&p),
                    scanned.finish(&p),
                    "epoch {epoch} node {node}"
                );
            }
            // Taken once: a retried close scans.
            assert!(acc.take(epoch, 300 * S, 90 * S).is_none());
        }
        // Other parameters than the accumulated ones: not covered.
        assert!(acc.take(7, 60 * S, 90 * S).is_none());
    }

    #[test]
    fn a_failed_commit_makes_the_epochs_it_may_have_reached_scan() {
        let acc = EpochAccumulators::default();
        acc.configure((300 * S, 90 * S), 1_000 * S, KEPT_EPOCHS);
        acc.push_committed(vec![("a".into(), 1_500 * S, leaf(1))]);
        // A batch with a heartbeat at 1,790 s failed to commit (maybe on disk): epoch 5's
        // window (1,410-1,800 s) and epoch 6's (1,710-2,100 s) could hold it.
        acc.forget_through(1_790 * S);
        assert!(acc.take(5, 300 * S, 90 * S).is_none());
        assert!(acc.take(6, 300 * S, 90 * S).is_none());
        // Epoch 7's window starts at 2,010 s: covered.
        assert!(acc.take(7, 300 * S, 90 * S).is_some());
    }

    #[test]
    fn heartbeats_queued_during_a_rebuild_are_added_in_order_after_it() {
        let (direct, rebuilt) = (EpochAccumulators::default(), EpochAccumulators::default());
        for acc in [&direct, &rebuilt] {
            acc.configure((300 * S, 90 * S), 1_000 * S, KEPT_EPOCHS);
        }
        rebuilt.begin_rebuild(1_100 * S);
        // More than a batch queued (the drain takes several lock holds), two nodes.
        let beats: Vec<CommittedLeaf> = (0..3 * REBUILD_BATCH as u64)
            .map(|i| {
                let node = if i % 2 == 0 { "a" } else { "b" };
                (node.into(), 1_200 * S + i * 50_000, leaf(i))
            })
            .collect();
        direct.push_committed(beats.clone());
        rebuilt.push_committed(beats);
        // A close during the rebuild waits for it, then finds its windows.
        let b = std::thread::scope(|scope| {
            let waiting = scope.spawn(|| rebuilt.take(4, 300 * S, 90 * S));
            std::thread::sleep(Duration::from_millis(50));
            assert!(
                !waiting.is_finished(),
                "a close waits while the rebuild runs"
            );
            rebuilt.finish_rebuild(1_000 * S, Ok(0));
            waiting.join().unwrap()
        })
        .expect("covered once the rebuild is done");
        let finish = |w: Vec<(Box<str>, WindowAccumulator)>| -> Vec<_> {
            w.into_iter()
                .map(|(n, w)| (n, w.finish(&params(4))))
                .collect()
        };
        let a = direct.take(4, 300 * S, 90 * S).unwrap();
        assert_eq!(a.len(), 2);
        assert_eq!(finish(a), finish(b));
    }

    #[test]
    fn too_few_epochs_for_the_timeout_turn_accumulation_off() {
        let acc = EpochAccumulators::default();
        // A 700 s timeout on 300 s epochs reaches two epochs ahead: four needed.
        acc.configure((300 * S, 700 * S), 0, 3);
        assert!(!acc.enabled());
        acc.configure((300 * S, 700 * S), 0, 4);
        assert!(acc.enabled());
    }

    #[test]
    fn epochs_whose_window_began_before_accumulation_or_were_dropped_are_not_covered() {
        let acc = EpochAccumulators::default();
        assert!(acc.take(10, 300 * S, 90 * S).is_none(), "not configured");
        acc.configure((300 * S, 90 * S), 1_000 * S, 0);
        assert!(!acc.enabled(), "POOT_ACCUMULATED_EPOCHS=0 turns it off");
        assert!(acc.take(10, 300 * S, 90 * S).is_none());
        acc.configure((300 * S, 90 * S), 1_000 * S, KEPT_EPOCHS);
        // Epoch 3's window starts at 810 s: heartbeats before 1,000 s were not seen.
        assert!(acc.take(3, 300 * S, 90 * S).is_none());
        // Heartbeats over 6 epochs (10..=15) with none closed: the oldest are dropped.
        for epoch in 10..16u64 {
            acc.push_committed(vec![("a".into(), epoch * 300 * S + S, leaf(epoch))]);
        }
        assert!(acc.take(11, 300 * S, 90 * S).is_none(), "dropped unclosed");
        assert_eq!(acc.take(14, 300 * S, 90 * S).unwrap().len(), 1);
        // A covered epoch in which nothing was heard has no windows (no proofs).
        assert!(acc.take(16, 300 * S, 90 * S).unwrap().is_empty());
    }
}
