//! [`Batch`]: what a mutation sees inside the writer's transaction.
//!
//! Discipline every mutation follows: **check first, then write.** A mutation returns a
//! domain error (4xx) only before its first write, so a refused request leaves nothing
//! behind even though it shares the transaction with others. A storage error after a write
//! aborts the whole batch (see `writer`).

use redb::{ReadableTable, WriteTransaction};
use serde_json::Value;

use std::collections::HashMap;

use super::codec::{decode, decode_heartbeat, encode, encode_heartbeat};
use super::error::{StoreError, StoreResult};
use super::liveness::{Live, Liveness};
use super::queries;
use super::tables::*;
use crate::clock::{Clock, Micros};
use crate::domain::audit::{audit_hash, AuditEvent};
use crate::domain::heartbeat::StoredHeartbeat;
use crate::domain::ledger::{day_reference, EntryKind, LedgerEntry};
use crate::domain::node::Node;
use crate::domain::payout::Payout;
use crate::domain::pool::Pool;
use crate::domain::proof::Epoch;
use crate::domain::role::Role;
use rust_decimal::Decimal;

/// Who did something, as recorded in the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    pub subject: String,
    pub role: String,
}

impl Actor {
    pub fn new(subject: &str, role: Role) -> Self {
        Self {
            subject: subject.to_string(),
            role: role.as_str().to_string(),
        }
    }

    /// The service itself (start-up, timers).
    pub fn system() -> Self {
        Self {
            subject: "system".to_string(),
            role: "system".to_string(),
        }
    }
}

/// What the writer caches between batches: the audit chain's head (seq and hash of the
/// last event) so appending costs no read, and the last time stamp handed out. Reloaded
/// after an aborted batch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditHead {
    pub seq: u64,
    pub hash: Option<[u8; 32]>,
    pub last_stamp_us: Micros,
}

impl AuditHead {
    pub fn load(txn: &WriteTransaction) -> StoreResult<Self> {
        let table = txn.open_table(AUDIT)?;
        let last = table.last()?;
        let mut head = match last {
            Some((_, v)) => {
                let e: AuditEvent = decode(v.value())?;
                Self {
                    seq: e.seq,
                    hash: Some(e.hash),
                    last_stamp_us: 0,
                }
            }
            None => Self::default(),
        };
        head.last_stamp_us = meta_u64(&txn.open_table(META)?, CLOCK_HIGH_WATER_KEY)?.unwrap_or(0);
        Ok(head)
    }
}

/// Enters the node's pending epoch credits in the ledger as one `day:YYYY-MM-DD` credit
/// (its balance includes them already). Nothing when none are pending.
pub(super) fn enter_pending_credits(
    ledger: &mut redb::Table<'_, (&'static str, u64), &'static [u8]>,
    node: &mut Node,
    seq: &mut u64,
    at_us: Micros,
) -> StoreResult<Option<LedgerEntry>> {
    let entry = take_pending_credits(node, seq, at_us, &mut DayReferences::default());
    if let Some(e) = &entry {
        ledger.insert((e.node_id.as_str(), e.seq), encode(e).as_slice())?;
    }
    Ok(entry)
}

/// The node's pending epoch credits as the `day:YYYY-MM-DD` credit entry that enters
/// them (the caller stores it), taken off its pending total. None when none are pending.
pub(super) fn take_pending_credits(
    node: &mut Node,
    seq: &mut u64,
    at_us: Micros,
    days: &mut DayReferences,
) -> Option<LedgerEntry> {
    take_pending(
        &node.node_id,
        (&mut node.credits_pending_usdt, node.credits_pending_day),
        (seq, at_us),
        days,
    )
}

/// [`take_pending_credits`] on the pending total and day wherever they are kept (a node
/// record or an account row).
pub(super) fn take_pending(
    node_id: &str,
    (pending, day): (&mut Decimal, u32),
    (seq, at_us): (&mut u64, Micros),
    days: &mut DayReferences,
) -> Option<LedgerEntry> {
    if pending.is_zero() {
        return None;
    }
    let entry = day_credit_entry(node_id, (*pending, days.of(day)), seq, at_us);
    *pending = Decimal::ZERO;
    Some(entry)
}

/// Appends `amount` of epoch credits of UTC day `day` to `node_id`'s ledger as one
/// `day:YYYY-MM-DD` credit entry (its balance includes them already).
pub(super) fn enter_day_credits(
    ledger: &mut redb::Table<'_, (&'static str, u64), &'static [u8]>,
    node_id: &str,
    (amount, day): (Decimal, u32),
    seq: &mut u64,
    at_us: Micros,
) -> StoreResult<LedgerEntry> {
    let entry = day_credit_entry(node_id, (amount, day_reference(day)), seq, at_us);
    ledger.insert((node_id, entry.seq), encode(&entry).as_slice())?;
    Ok(entry)
}

fn day_credit_entry(
    node_id: &str,
    (amount, reference): (Decimal, String),
    seq: &mut u64,
    at_us: Micros,
) -> LedgerEntry {
    *seq += 1;
    LedgerEntry {
        seq: *seq,
        node_id: node_id.to_string(),
        at_us,
        kind: EntryKind::Credit,
        amount,
        reference,
    }
}

/// `day:YYYY-MM-DD` references formatted once per day, for loops over many nodes (a payout
/// run): formatting a date per node was 7 % of a run.
#[derive(Default)]
pub(super) struct DayReferences(Option<(u32, String)>);

impl DayReferences {
    fn of(&mut self, day: u32) -> String {
        match &self.0 {
            Some((d, reference)) if *d == day => reference.clone(),
            _ => {
                let reference = day_reference(day);
                self.0 = Some((day, reference.clone()));
                reference
            }
        }
    }
}

/// Appends a ledger entry and applies it to the node's balance (the caller stores the
/// node and `seq`). Pending epoch credits are entered first, so entries keep their order.
/// Returns the entries written, the asked one last.
pub(super) fn write_ledger_entry(
    ledger: &mut redb::Table<'_, (&'static str, u64), &'static [u8]>,
    node: &mut Node,
    (seq, at_us): (&mut u64, Micros),
    kind: EntryKind,
    amount: Decimal,
    reference: String,
) -> StoreResult<Vec<LedgerEntry>> {
    let mut written: Vec<LedgerEntry> = enter_pending_credits(ledger, node, seq, at_us)?
        .into_iter()
        .collect();
    *seq += 1;
    let entry = LedgerEntry {
        seq: *seq,
        node_id: node.node_id.clone(),
        at_us,
        kind,
        amount,
        reference,
    };
    ledger.insert((node.node_id.as_str(), *seq), encode(&entry).as_slice())?;
    node.balance_usdt += amount;
    written.push(entry);
    Ok(written)
}

/// Reads a little-endian u64 from the META table.
pub fn meta_u64(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> StoreResult<Option<u64>> {
    Ok(t.get(key)?
        .and_then(|v| v.value().try_into().ok().map(u64::from_le_bytes)))
}

pub struct Batch<'a> {
    pub(super) txn: &'a WriteTransaction,
    audit_head: &'a mut AuditHead,
    clock: &'a Clock,
    /// Committed node liveness (see `liveness`); None outside the service's writer.
    liveness: Option<&'a Liveness>,
    /// Heartbeats accepted in this batch, merged into `liveness` once it is durable.
    staged_liveness: HashMap<String, Live>,
    /// The Merkle leaves of heartbeats stored in this batch, for the PoOT accumulators
    /// once it is durable (None when nothing accumulates).
    staged_leaves: Option<Vec<super::accumulators::CommittedLeaf>>,
    /// The MongoDB mirror's outbox (see `outbox`): None when the mirror is off.
    pub(super) mirror: Option<&'a super::outbox::OutboxConfig>,
    pub(super) outbox: super::outbox::OutboxState,
}

impl<'a> Batch<'a> {
    pub fn new(txn: &'a WriteTransaction, audit_head: &'a mut AuditHead, clock: &'a Clock) -> Self {
        Self {
            txn,
            audit_head,
            clock,
            liveness: None,
            staged_liveness: HashMap::new(),
            staged_leaves: None,
            mirror: None,
            outbox: Default::default(),
        }
    }

    /// Lets this batch see (and stage changes to) the nodes' in-memory liveness.
    pub fn with_liveness(mut self, liveness: &'a Liveness) -> Self {
        self.liveness = Some(liveness);
        self
    }

    /// A node's latest accepted heartbeat: staged in this batch, else committed.
    pub fn live(&self, node_id: &str) -> Option<Live> {
        self.staged_liveness
            .get(node_id)
            .copied()
            .or_else(|| self.liveness.and_then(|l| l.get(node_id)))
    }

    /// Records an accepted heartbeat's seq and receive time for the replay guard and the
    /// monitor; they reach the shared map only when this batch commits.
    pub fn stage_heartbeat(&mut self, node_id: &str, seq: u64, at_us: Micros) {
        self.staged_liveness.insert(
            node_id.to_string(),
            Live {
                last_seq: seq,
                last_heartbeat_at_us: at_us,
            },
        );
    }

    /// What the writer merges into the shared map after the commit.
    pub(super) fn take_staged_liveness(&mut self) -> Vec<(String, Live)> {
        self.staged_liveness.drain().collect()
    }

    /// Keeps the Merkle leaf of every heartbeat this batch stores, for the PoOT
    /// accumulators (`accumulators`), when `on`.
    pub fn with_accumulation(mut self, on: bool) -> Self {
        self.staged_leaves = on.then(Vec::new);
        self
    }

    /// The leaves of the heartbeats stored, in order, for after the commit.
    pub(super) fn take_staged_leaves(&mut self) -> Vec<super::accumulators::CommittedLeaf> {
        self.staged_leaves.take().unwrap_or_default()
    }

    /// Enables the mirror's outbox for this batch (the writer does, when it is on).
    pub fn with_mirror(mut self, mirror: Option<&'a super::outbox::OutboxConfig>) -> Self {
        self.mirror = mirror;
        self
    }

    pub fn now_us(&self) -> Micros {
        self.clock.now_us()
    }

    /// A receive time stamp: now, and strictly after every stamp handed out before, so
    /// stamps are unique keys and follow commit order.
    pub fn stamp_us(&mut self) -> Micros {
        let stamp = self.now_us().max(self.audit_head.last_stamp_us + 1);
        self.audit_head.last_stamp_us = stamp;
        stamp
    }

    /// Records the latest stamp, so a restarted clock never reads earlier.
    pub fn persist_clock_high_water(&mut self) -> StoreResult<()> {
        let t = self.now_us().max(self.audit_head.last_stamp_us);
        self.set_meta_u64(CLOCK_HIGH_WATER_KEY, t)
    }

    // ---- meta ----

    pub fn meta_u64(&self, key: &str) -> StoreResult<Option<u64>> {
        meta_u64(&self.txn.open_table(META)?, key)
    }

    pub fn set_meta_u64(&mut self, key: &str, value: u64) -> StoreResult<()> {
        self.txn
            .open_table(META)?
            .insert(key, value.to_le_bytes().as_slice())?;
        Ok(())
    }

    // ---- heartbeats, proofs, epochs, ledger ----

    pub fn insert_heartbeat(
        &mut self,
        received_at_us: Micros,
        node_id: &str,
        hb: &StoredHeartbeat,
    ) -> StoreResult<()> {
        self.txn.open_table(HEARTBEATS)?.insert(
            (received_at_us, node_id),
            encode_heartbeat(node_id, received_at_us, hb).as_slice(),
        )?;
        self.stage_leaf(node_id, received_at_us, hb);
        Ok(())
    }

    /// Keeps a stored heartbeat's Merkle leaf for the accumulators, when they run.
    pub(super) fn stage_leaf(
        &mut self,
        node_id: &str,
        received_at_us: Micros,
        hb: &StoredHeartbeat,
    ) {
        if let Some(leaves) = &mut self.staged_leaves {
            leaves.push((node_id.into(), received_at_us, hb.leaf()));
        }
    }

    /// Calls `f` for every heartbeat received in `[from, to)`, in receive order, without
    /// holding them all in memory.
    pub fn for_each_heartbeat_between(
        &self,
        from: Micros,
        to: Micros,
        mut f: impl FnMut(Micros, &str, StoredHeartbeat),
    ) -> StoreResult<()> {
        let t = self.txn.open_table(HEARTBEATS)?;
        for entry in t.range::<(u64, &str)>((from, "")..(to, ""))? {
            let (k, v) = entry?;
            let (at, node) = k.value();
            f(at, node, decode_heartbeat(node, at, v.value())?);
        }
        Ok(())
    }

    /// Receive time of the first heartbeat at or after `t`.
    pub fn first_heartbeat_at_or_after(&self, t: Micros) -> StoreResult<Option<Micros>> {
        let table = self.txn.open_table(HEARTBEATS)?;
        let mut range = table.range::<(u64, &str)>((t, "")..)?;
        let first = match range.next() {
            Some(entry) => Some(entry?.0.value().0),
            None => None,
        };
        Ok(first)
    }

    /// Removes up to `max` heartbeats received before `before`; returns how many.
    ///
    /// The rows are keyed time first, so this is one range at the front of the table:
    /// whole leaf pages empty out and are reused by the rows written after (the file stops
    /// growing once the retention window is full; `cargo bench --bench retention`).
    pub fn prune_heartbeats(&mut self, before: Micros, max: usize) -> StoreResult<usize> {
        let mut t = self.txn.open_table(HEARTBEATS)?;
        // Where this chunk ends: the `max`-th row before `before`, else `before` itself.
        let end: (Micros, String) = match t.range::<(u64, &str)>(..(before, ""))?.nth(max) {
            Some(entry) => {
                let (k, _) = entry?;
                let (at, node) = k.value();
                (at, node.to_string())
            }
            None => (before, String::new()),
        };
        let mut removed = 0;
        t.retain_in::<(u64, &str), _>(..(end.0, end.1.as_str()), |_, _| {
            removed += 1;
            false
        })?;
        Ok(removed)
    }

    /// Stores the roots of an epoch's 512-proof blocks (with its record, before its proofs).
    pub fn put_epoch_blocks(
        &mut self,
        epoch: u64,
        roots: &[crate::domain::merkle::Hash],
    ) -> StoreResult<()> {
        let bytes: Vec<u8> = roots.iter().flatten().copied().collect();
        self.txn
            .open_table(EPOCH_BLOCKS)?
            .insert(epoch, bytes.as_slice())?;
        Ok(())
    }

    pub fn has_epoch_blocks(&self, epoch: u64) -> StoreResult<bool> {
        Ok(self.txn.open_table(EPOCH_BLOCKS)?.get(epoch)?.is_some())
    }

    /// Gives a new node the next index, by which its proof rows name it.
    pub(super) fn index_node(&mut self, node_id: &str) -> StoreResult<()> {
        let mut index = self.txn.open_table(NODE_INDEX)?;
        if index.get(node_id)?.is_some() {
            return Ok(());
        }
        let next = {
            let counters = self.txn.open_table(COUNTERS)?;
            let v = counters.get(NODE_INDEX_NEXT_COUNTER)?.map(|v| v.value());
            v.unwrap_or(0)
        };
        let i = u32::try_from(next)
            .map_err(|_| StoreError::corrupt("no node index is left (4 billion nodes)"))?;
        index.insert(node_id, i)?;
        drop(index);
        self.txn.open_table(NODE_IDS)?.insert(i, node_id)?;
        self.txn
            .open_table(COUNTERS)?
            .insert(NODE_INDEX_NEXT_COUNTER, next + 1)?;
        Ok(())
    }

    pub fn put_epoch(&mut self, epoch: &Epoch) -> StoreResult<()> {
        self.txn
            .open_table(EPOCHS)?
            .insert(epoch.epoch, encode(epoch).as_slice())?;
        Ok(())
    }

    pub fn epoch(&self, epoch: u64) -> StoreResult<Option<Epoch>> {
        let t = self.txn.open_table(EPOCHS)?;
        let v = t.get(epoch)?;
        v.map(|v| decode(v.value())).transpose()
    }

    /// Appends a ledger entry and applies it to the node's balance (the caller stores the
    /// node). Balance and ledger change in the same transaction, so they always agree.
    pub fn append_ledger(
        &mut self,
        node: &mut Node,
        kind: EntryKind,
        amount: Decimal,
        reference: String,
    ) -> StoreResult<LedgerEntry> {
        let mut seq = self.meta_u64(LEDGER_SEQ_KEY)?.unwrap_or(0);
        let now = self.now_us();
        let entries = write_ledger_entry(
            &mut self.txn.open_table(LEDGER)?,
            node,
            (&mut seq, now),
            kind,
            amount,
            reference,
        )?;
        self.set_meta_u64(LEDGER_SEQ_KEY, seq)?;
        for e in &entries {
            self.mirror_ledger(e)?;
        }
        Ok(entries.into_iter().next_back().expect("the asked entry"))
    }

    // ---- nodes ----

    /// A node with its latest liveness (staged or committed) applied.
    pub fn node(&self, id: &str) -> StoreResult<Option<Node>> {
        let mut node = self.node_tables()?.get(id)?;
        if let (Some(n), Some(live)) = (node.as_mut(), self.live(id)) {
            live.apply_to(n);
        }
        Ok(node)
    }

    /// The node tables of this transaction, to read nodes with their accounts (see
    /// `accounts`); none of the three may be open elsewhere meanwhile.
    pub(super) fn node_tables(&self) -> StoreResult<super::accounts::WriteNodeTables<'_>> {
        Ok(super::accounts::NodeTables {
            nodes: self.txn.open_table(NODES)?,
            index: self.txn.open_table(NODE_INDEX)?,
            accounts: self.txn.open_table(ACCOUNTS)?,
        })
    }

    /// Writes `node`'s totals to its account row when it has one and they changed (the row,
    /// not the record, holds them then: see `accounts`). A node just registered (`created`)
    /// gets its row now, so the first close that credits it settles it like any other
    /// instead of reading its record (at 100k nodes that made the first close 0.2 s
    /// slower); nodes registered before account rows get theirs when first settled.
    fn put_account(&mut self, node: &Node, created: bool) -> StoreResult<()> {
        let Some(i) = self
            .txn
            .open_table(NODE_INDEX)?
            .get(node.node_id.as_str())?
            .map(|v| v.value())
        else {
            return Ok(());
        };
        let mut accounts = self.txn.open_table(ACCOUNTS)?;
        let stored = super::accounts::account_at(&accounts, i)?;
        if stored.is_none() && !created {
            return Ok(());
        }
        let now = super::accounts::Account::of_node(node);
        if stored != Some(now) {
            let mut edits = super::accounts::AccountEdits::default();
            edits.put(&accounts, i, &now)?;
            edits.flush(&mut accounts)?;
        }
        Ok(())
    }

    pub fn node_id_for_key(&self, public_key: &[u8; 32]) -> StoreResult<Option<String>> {
        let t = self.txn.open_table(NODE_KEYS)?;
        let id = t.get(public_key.as_slice())?.map(|v| v.value().to_string());
        Ok(id)
    }

    /// How many nodes `operator_id` has registered (any status), counting at most `up_to`:
    /// a walk of the operator index, bounded by the quota it is checked against.
    pub fn operator_node_count(&self, operator_id: &str, up_to: usize) -> StoreResult<usize> {
        let t = self.txn.open_table(OPERATOR_NODES)?;
        let mut n = 0;
        for entry in t.range::<(&str, &str)>((operator_id, "")..)?.take(up_to) {
            let (k, _) = entry?;
            if k.value().0 != operator_id {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// Stores a node. `previous` is the stored version (None for a new node); indexes and
    /// counters are kept in step here, in one place.
    pub fn put_node(&mut self, node: &Node, previous: Option<&Node>) -> StoreResult<()> {
        self.txn
            .open_table(NODES)?
            .insert(node.node_id.as_str(), encode(node).as_slice())?;
        if previous.is_none() {
            self.txn
                .open_table(NODE_KEYS)?
                .insert(node.public_key.as_slice(), node.node_id.as_str())?;
            self.txn
                .open_table(OPERATOR_NODES)?
                .insert((node.operator_id.as_str(), node.node_id.as_str()), ())?;
            self.index_node(&node.node_id)?;
        }
        self.put_account(node, previous.is_none())?;
        let old_status = previous.map(|p| p.status);
        if old_status != Some(node.status) {
            let id = node.node_id.as_str();
            let mut by_status = self.txn.open_table(NODES_BY_STATUS)?;
            if let Some(old) = old_status {
                by_status.remove((old.as_str(), id))?;
            }
            by_status.insert((node.status.as_str(), id), ())?;
            drop(by_status);
            if let Some(old) = old_status {
                self.add_counter(&status_counter(old), -1)?;
            }
            self.add_counter(&status_counter(node.status), 1)?;
        }
        self.mirror_node(node)
    }

    /// Rebuilds the nodes-by-status index from the nodes (the schema 1 -> 2 migration).
    pub fn rebuild_status_index(&mut self) -> StoreResult<u64> {
        let nodes = self.txn.open_table(NODES)?;
        let mut by_status = self.txn.open_table(NODES_BY_STATUS)?;
        by_status.retain(|_, _| false)?;
        let mut indexed = 0;
        for entry in nodes.iter()? {
            let (k, v) = entry?;
            let node: Node = decode(v.value())?;
            by_status.insert((node.status.as_str(), k.value()), ())?;
            indexed += 1;
        }
        Ok(indexed)
    }

    // ---- pools ----

    pub fn pool(&self, id: &str) -> StoreResult<Option<Pool>> {
        queries::pool(&self.txn.open_table(POOLS)?, id)
    }

    pub fn pool_id_by_name(&self, name: &str) -> StoreResult<Option<String>> {
        let t = self.txn.open_table(POOL_NAMES)?;
        let id = t.get(name)?.map(|v| v.value().to_string());
        Ok(id)
    }

    pub fn put_pool(&mut self, pool: &Pool, is_new: bool) -> StoreResult<()> {
        self.txn
            .open_table(POOLS)?
            .insert(pool.pool_id.as_str(), encode(pool).as_slice())?;
        if is_new {
            self.txn
                .open_table(POOL_NAMES)?
                .insert(pool.name.as_str(), pool.pool_id.as_str())?;
            self.add_counter(POOLS_COUNTER, 1)?;
        }
        self.mirror_pool(pool)
    }

    /// Adds a member and bumps the pool's count. The caller has checked room.
    pub fn add_member(&mut self, pool: &mut Pool, node_id: &str) -> StoreResult<()> {
        self.txn
            .open_table(POOL_MEMBERS)?
            .insert((pool.pool_id.as_str(), node_id), ())?;
        pool.member_count += 1;
        self.put_pool(pool, false)?;
        self.add_counter(POOL_MEMBERS_COUNTER, 1)
    }

    /// Removes a member (if it is one) and lowers the pool's count.
    pub fn remove_member(&mut self, pool_id: &str, node_id: &str) -> StoreResult<()> {
        let removed = self
            .txn
            .open_table(POOL_MEMBERS)?
            .remove((pool_id, node_id))?
            .is_some();
        if removed {
            if let Some(mut pool) = self.pool(pool_id)? {
                pool.member_count = pool.member_count.saturating_sub(1);
                self.put_pool(&pool, false)?;
            }
            self.add_counter(POOL_MEMBERS_COUNTER, -1)?;
        }
        Ok(())
    }

    // ---- payouts ----

    pub fn payout(&self, id: &str) -> StoreResult<Option<Payout>> {
        super::payout_chunks::lookup(
            &self.txn.open_table(PAYOUTS)?,
            &self.txn.open_table(PAYOUT_CHUNKS)?,
            id,
        )
    }

    /// Stores a changed payout; its index by state and per-state counters follow in one
    /// place. (Payouts are created by runs, in chunks: `payouts::create_due_chunk`.) A
    /// chunked payout gets its PAYOUTS row on its first change (see `payout_chunks`).
    pub fn put_payout(&mut self, payout: &Payout, previous: &Payout) -> StoreResult<()> {
        let mut payouts = self.txn.open_table(PAYOUTS)?;
        let first_row = super::payout_chunks::note_first_change(
            &payouts,
            &self.txn.open_table(PAYOUT_CHUNKS)?,
            &mut self.txn.open_table(OPEN_PAYOUT_CHUNKS)?,
            &payout.payout_id,
        )?;
        payouts.insert(payout.payout_id.as_str(), encode(payout).as_slice())?;
        drop(payouts);
        let id = payout.payout_id.as_str();
        let old = previous.state;
        // A chunked payout's first row is indexed by its state even when that is still
        // `pending`: the chunk no longer lists it as pending.
        if old != payout.state || first_row {
            let mut by_state = self.txn.open_table(PAYOUTS_BY_STATE)?;
            // Absent for a chunked payout's first change: harmless.
            by_state.remove((old.as_str(), id))?;
            by_state.insert((payout.state.as_str(), id), ())?;
        }
        if old != payout.state {
            self.add_counter(&payout_state_counter(old), -1)?;
            self.add_counter(&payout_state_counter(payout.state), 1)?;
        }
        if let (Some(hash), None) = (&payout.tx_hash, &previous.tx_hash) {
            self.txn.open_table(TX_HASHES)?.insert(hash.as_str(), id)?;
        }
        self.mirror_payout(payout)
    }

    /// The payout a transaction hash already confirmed, if any.
    pub fn payout_for_tx_hash(&self, hash: &str) -> StoreResult<Option<String>> {
        let t = self.txn.open_table(TX_HASHES)?;
        let id = t.get(hash)?.map(|v| v.value().to_string());
        Ok(id)
    }

    // ---- counters and audit ----

    pub fn add_counter(&mut self, name: &str, delta: i64) -> StoreResult<()> {
        let mut t = self.txn.open_table(COUNTERS)?;
        let current = t.get(name)?.map(|v| v.value()).unwrap_or(0);
        let next = (current as i64 + delta).max(0) as u64;
        t.insert(name, next)?;
        Ok(())
    }

    /// Appends an audit event to the hash chain.
    pub fn audit(
        &mut self,
        actor: &Actor,
        action: &str,
        target: &str,
        detail: Value,
    ) -> StoreResult<()> {
        let event = self.audit_event(actor, action, target, detail);
        self.txn
            .open_table(AUDIT)?
            .insert(event.seq, encode(&event).as_slice())?;
        self.mirror_audit(&event)
    }

    /// The next event of the hash chain; the caller stores it in this transaction (an
    /// aborted batch reloads the chain's head, so an unstored event leaves no gap).
    pub fn audit_event(
        &mut self,
        actor: &Actor,
        action: &str,
        target: &str,
        detail: Value,
    ) -> AuditEvent {
        let seq = self.audit_head.seq + 1;
        let at_us = self.now_us();
        let detail = detail.to_string();
        let prev_hash = self.audit_head.hash;
        let hash = audit_hash(
            seq,
            at_us,
            &actor.subject,
            &actor.role,
            action,
            target,
            &detail,
            prev_hash.as_ref(),
        );
        let event = AuditEvent {
            seq,
            at_us,
            actor_subject: actor.subject.clone(),
            actor_role: actor.role.clone(),
            action: action.to_string(),
            target: target.to_string(),
            detail,
            prev_hash,
            hash,
        };
        self.audit_head.seq = seq;
        self.audit_head.hash = Some(hash);
        event
    }
}
