//! Read helpers shared by handlers (read transactions) and the writer (its write
//! transaction): both table kinds implement `ReadableTable`.

use std::ops::Bound;

use std::sync::Arc;

use redb::{ReadTransaction, ReadableTable};

use super::codec::{decode, decode_heartbeat};
use super::error::StoreResult;
use super::liveness::{Live, Liveness};
use super::tables::*;
use crate::domain::audit::AuditEvent;
use crate::domain::heartbeat::StoredHeartbeat;
use crate::domain::ledger::LedgerEntry;
use crate::domain::node::{Node, NodeStatus};
use crate::domain::payout::{Payout, PayoutState};
use crate::domain::pool::Pool;
use crate::domain::proof::Epoch;

/// A node's record as stored, without its account row (see `accounts`: the totals may be
/// stale); readers use `accounts::NodeTables::get`.
pub fn node_record(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> StoreResult<Option<Node>> {
    match t.get(id)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

pub fn pool(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> StoreResult<Option<Pool>> {
    match t.get(id)? {
        Some(v) => Ok(Some(decode(v.value())?)),
        None => Ok(None),
    }
}

/// Read-side access to the tables, one read transaction per request.
pub struct Reader {
    pub(super) txn: ReadTransaction,
    /// Applied to every node read (see `liveness`); empty for a reader of a file at rest.
    liveness: Arc<Liveness>,
    /// The tree of an epoch being closed by this process (see `epoch_rows`).
    pub(super) closing: Option<Arc<super::epoch_rows::ClosingTree>>,
}

/// The indexes that group nodes: by operator, by pool, by status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeIndex {
    Operator,
    Pool,
    Status,
}

/// A page of results and the key to continue after.
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

impl Reader {
    pub fn new(txn: ReadTransaction) -> Self {
        Self {
            txn,
            liveness: Default::default(),
            closing: None,
        }
    }

    pub fn with_closing(mut self, closing: Arc<super::epoch_rows::ClosingTree>) -> Self {
        self.closing = Some(closing);
        self
    }

    pub fn with_liveness(mut self, liveness: Arc<Liveness>) -> Self {
        self.liveness = liveness;
        self
    }

    /// A node as the API shows it: its account applied, its liveness, and as its latest
    /// proof the one stored by a close under way (whose totals are not settled yet). For
    /// display only: a node to change and store is read with `Batch::node` in the writer
    /// (this one's `last_proof` would make the settling skip that epoch's credit).
    pub fn node(&self, id: &str) -> StoreResult<Option<Node>> {
        let mut node = super::accounts::read_tables(&self.txn)?.get(id)?;
        if let Some(n) = node.as_mut() {
            self.liveness.apply(n);
            // A proof stored by the close under way is the latest one already.
            n.last_proof = super::epoch_rows::latest_stored_proof(&self.txn, id, n.last_proof)?;
        }
        Ok(node)
    }

    /// The newest heartbeat of each of `nodes`, reading the heartbeat rows from the end
    /// until every one is found (or the rows run out).
    pub fn newest_heartbeats_of(
        &self,
        mut nodes: std::collections::HashSet<String>,
    ) -> StoreResult<Vec<(String, Live)>> {
        let table = self.txn.open_table(HEARTBEATS)?;
        let mut found = Vec::new();
        for entry in table.iter()?.rev() {
            if nodes.is_empty() {
                break;
            }
            let (k, v) = entry?;
            let (at, node_id) = k.value();
            if nodes.remove(node_id) {
                let hb: StoredHeartbeat = decode_heartbeat(node_id, at, v.value())?;
                found.push((
                    node_id.to_string(),
                    Live {
                        last_seq: hb.seq,
                        last_heartbeat_at_us: at,
                    },
                ));
            }
        }
        Ok(found)
    }

    /// Ids of the nodes in `status`, in id order, from the status index (no scan).
    pub fn node_ids_in_status(&self, status: NodeStatus) -> StoreResult<Vec<String>> {
        self.index_ids(NODES_BY_STATUS, status.as_str(), None)
    }

    pub fn pool(&self, id: &str) -> StoreResult<Option<Pool>> {
        pool(&self.txn.open_table(POOLS)?, id)
    }

    /// Nodes in id order after `after`, kept when `keep` says so, at most `limit`.
    pub fn nodes(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&Node) -> bool,
    ) -> StoreResult<Page<Node>> {
        let tables = super::accounts::read_tables(&self.txn)?;
        let start = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        let mut items = Vec::new();
        for entry in tables.nodes.range::<&str>((start, Bound::Unbounded))? {
            let (_, v) = entry?;
            let mut n: Node = decode(v.value())?;
            tables.complete(&mut n)?;
            self.liveness.apply(&mut n);
            if keep(&n) {
                if items.len() == limit {
                    let next = items.last().map(|l: &Node| l.node_id.clone());
                    return Ok(Page { items, next });
                }
                items.push(n);
            }
        }
        Ok(Page { items, next: None })
    }

    /// Ids of every node `keep` accepts, in id order (a full scan, in pages).
    pub fn node_ids_where(&self, keep: impl Fn(&Node) -> bool) -> StoreResult<Vec<String>> {
        let mut ids = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.nodes(after.as_deref(), 10_000, &keep)?;
            ids.extend(page.items.into_iter().map(|n| n.node_id));
            match page.next {
                Some(n) => after = Some(n),
                None => return Ok(ids),
            }
        }
    }

    /// Ids of the entries of a `(group, id) -> ()` index, in id order after `after`.
    fn index_ids(
        &self,
        table: redb::TableDefinition<(&str, &str), ()>,
        group: &str,
        after: Option<&str>,
    ) -> StoreResult<Vec<String>> {
        let t = self.txn.open_table(table)?;
        let start = match after {
            Some(a) => Bound::Excluded((group, a)),
            None => Bound::Included((group, "")),
        };
        let mut ids = Vec::new();
        for entry in t.range::<(&str, &str)>((start, Bound::Unbounded))? {
            let (k, _) = entry?;
            let (g, id) = k.value();
            if g != group {
                break;
            }
            ids.push(id.to_string());
        }
        Ok(ids)
    }

    /// Nodes listed in an index group (an operator's nodes, a pool's members, the nodes
    /// in a status), filtered.
    pub fn indexed_nodes(
        &self,
        index: NodeIndex,
        group: &str,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&Node) -> bool,
    ) -> StoreResult<Page<Node>> {
        let table = match index {
            NodeIndex::Operator => OPERATOR_NODES,
            NodeIndex::Pool => POOL_MEMBERS,
            NodeIndex::Status => NODES_BY_STATUS,
        };
        let nodes = super::accounts::read_tables(&self.txn)?;
        let index = self.txn.open_table(table)?;
        let start = match after {
            Some(a) => Bound::Excluded((group, a)),
            None => Bound::Included((group, "")),
        };
        let mut items: Vec<Node> = Vec::new();
        // Walked lazily: a status group can be most of the fleet, and a page needs only
        // `limit` of it.
        for entry in index.range::<(&str, &str)>((start, Bound::Unbounded))? {
            let (k, _) = entry?;
            let (g, id) = k.value();
            if g != group {
                break;
            }
            let Some(mut n) = nodes.get(id)? else {
                continue;
            };
            self.liveness.apply(&mut n);
            if keep(&n) {
                if items.len() == limit {
                    let next = items.last().map(|l| l.node_id.clone());
                    return Ok(Page { items, next });
                }
                items.push(n);
            }
        }
        Ok(Page { items, next: None })
    }

    pub fn pool_member_ids(&self, pool_id: &str) -> StoreResult<Vec<String>> {
        self.index_ids(POOL_MEMBERS, pool_id, None)
    }

    /// Members of a pool that are online now.
    pub fn online_count(&self, pool_id: &str) -> StoreResult<u32> {
        let nodes = self.txn.open_table(NODES)?;
        let mut count = 0;
        for id in self.pool_member_ids(pool_id)? {
            // The status only: the record's own copy is current.
            if let Some(n) = node_record(&nodes, &id)? {
                if n.status == NodeStatus::Online {
                    count += 1;
                }
            }
        }
        Ok(count)
    }

    pub fn pools(&self, after: Option<&str>, limit: usize) -> StoreResult<Page<Pool>> {
        let table = self.txn.open_table(POOLS)?;
        let start = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        let mut items: Vec<Pool> = Vec::new();
        for entry in table.range::<&str>((start, Bound::Unbounded))? {
            let (_, v) = entry?;
            if items.len() == limit {
                let next = items.last().map(|l| l.pool_id.clone());
                return Ok(Page { items, next });
            }
            items.push(decode(v.value())?);
        }
        Ok(Page { items, next: None })
    }

    /// Audit events with `seq > after`, in order.
    pub fn audit(&self, after: u64, limit: usize) -> StoreResult<Page<AuditEvent>> {
        let table = self.txn.open_table(AUDIT)?;
        let mut items: Vec<AuditEvent> = Vec::new();
        // A cursor at u64::MAX has nothing after it (and `after + 1` would overflow).
        let Some(first) = after.checked_add(1) else {
            return Ok(Page { items, next: None });
        };
        for entry in table.range(first..)? {
            let (_, v) = entry?;
            if items.len() == limit {
                let next = items.last().map(|l| l.seq.to_string());
                return Ok(Page { items, next });
            }
            items.push(decode(v.value())?);
        }
        Ok(Page { items, next: None })
    }

    pub fn epoch(&self, epoch: u64) -> StoreResult<Option<Epoch>> {
        let t = self.txn.open_table(EPOCHS)?;
        let v = t.get(epoch)?;
        v.map(|v| decode(v.value())).transpose()
    }

    /// The latest closed epoch, if any.
    pub fn last_epoch(&self) -> StoreResult<Option<Epoch>> {
        let t = self.txn.open_table(EPOCHS)?;
        let last = t.last()?;
        last.map(|(_, v)| decode(v.value())).transpose()
    }

    /// Ids of an operator's nodes.
    pub fn operator_node_ids(&self, operator_id: &str) -> StoreResult<Vec<String>> {
        self.index_ids(OPERATOR_NODES, operator_id, None)
    }

    /// Every ledger entry of a node, in order.
    pub fn ledger(&self, node_id: &str) -> StoreResult<Vec<LedgerEntry>> {
        Ok(self.ledger_page(node_id, None, usize::MAX)?.items)
    }

    /// The entries a node's chunked payouts wrote, in `seq` order (see `payout_chunks`).
    fn chunked_ledger(&self, node_id: &str) -> StoreResult<Vec<LedgerEntry>> {
        let mut entries: Vec<LedgerEntry> = self
            .chunked_payouts(node_id)?
            .into_iter()
            .flat_map(|c| c.entries)
            .collect();
        entries.sort_by_key(|e| e.seq);
        Ok(entries)
    }

    /// A node's payouts stored by runs, as created, newest first.
    fn chunked_payouts(
        &self,
        node_id: &str,
    ) -> StoreResult<Vec<super::payout_chunks::ChunkedPayout>> {
        let Some(index) = self
            .txn
            .open_table(NODE_INDEX)?
            .get(node_id)?
            .map(|v| v.value())
        else {
            return Ok(Vec::new());
        };
        let head = super::payout_chunks::head(&self.txn.open_table(PAYOUT_HEADS)?, index)?;
        super::payout_chunks::chain(&self.txn.open_table(PAYOUT_CHUNKS)?, node_id, head)
    }

    /// One page of a node's ledger, in entry order, after entry `after` (its `seq`): a
    /// range read of `limit + 1` LEDGER rows at most, merged with the entries of the
    /// node's chunked payouts (a handful a year).
    pub fn ledger_page(
        &self,
        node_id: &str,
        after: Option<u64>,
        limit: usize,
    ) -> StoreResult<Page<LedgerEntry>> {
        let t = self.txn.open_table(LEDGER)?;
        let first = match after {
            None => 0,
            // Nothing comes after the last possible seq.
            Some(a) => match a.checked_add(1) {
                Some(f) => f,
                None => {
                    return Ok(Page {
                        items: Vec::new(),
                        next: None,
                    })
                }
            },
        };
        let mut items: Vec<LedgerEntry> = Vec::new();
        for entry in t.range::<(&str, u64)>((node_id, first)..=(node_id, u64::MAX))? {
            let (_, v) = entry?;
            if items.len() > limit {
                break;
            }
            items.push(decode(v.value())?);
        }
        items.extend(
            self.chunked_ledger(node_id)?
                .into_iter()
                .filter(|e| e.seq >= first),
        );
        items.sort_by_key(|e| e.seq);
        if items.len() > limit {
            items.truncate(limit);
            let next = items.last().map(|l| l.seq.to_string());
            return Ok(Page { items, next });
        }
        Ok(Page { items, next: None })
    }

    pub fn counter(&self, name: &str) -> StoreResult<u64> {
        let table = self.txn.open_table(COUNTERS)?;
        Ok(table.get(name)?.map(|v| v.value()).unwrap_or(0))
    }

    pub fn payout(&self, id: &str) -> StoreResult<Option<Payout>> {
        super::payout_chunks::lookup(
            &self.txn.open_table(PAYOUTS)?,
            &self.txn.open_table(PAYOUT_CHUNKS)?,
            id,
        )
    }

    /// A node's payouts, oldest first: those NODE_PAYOUTS lists (older runs) and its
    /// chunked ones, each in its current state.
    pub fn node_payouts(&self, node_id: &str) -> StoreResult<Vec<Payout>> {
        let payouts = self.txn.open_table(PAYOUTS)?;
        let mut out: Vec<Payout> = Vec::new();
        for id in self.index_ids(NODE_PAYOUTS, node_id, None)? {
            if let Some(v) = payouts.get(id.as_str())? {
                out.push(decode(v.value())?);
            }
        }
        for c in self.chunked_payouts(node_id)? {
            match payouts.get(c.payout.payout_id.as_str())? {
                Some(v) => out.push(decode(v.value())?),
                None => out.push(c.payout),
            }
        }
        out.sort_by(|a, b| (a.created_at_us, &a.payout_id).cmp(&(b.created_at_us, &b.payout_id)));
        Ok(out)
    }

    /// Payouts in a state, in id order after `after`. Pending ones are also those of the
    /// runs' chunks not changed since (see `payout_chunks`).
    pub fn payouts_in_state(
        &self,
        state: PayoutState,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Page<Payout>> {
        let payouts = self.txn.open_table(PAYOUTS)?;
        let mut items: Vec<Payout> = Vec::new();
        let mut more = false;
        for id in self.index_ids(PAYOUTS_BY_STATE, state.as_str(), after)? {
            if items.len() == limit {
                more = true;
                break;
            }
            if let Some(v) = payouts.get(id.as_str())? {
                items.push(decode(v.value())?);
            }
        }
        if state == PayoutState::Pending {
            let (chunked, chunked_more) = super::payout_chunks::pending_after(
                &payouts,
                &self.txn.open_table(PAYOUT_CHUNKS)?,
                &self.txn.open_table(OPEN_PAYOUT_CHUNKS)?,
                after,
                limit,
            )?;
            more |= chunked_more;
            items.extend(chunked);
            items.sort_by(|a, b| a.payout_id.cmp(&b.payout_id));
            if items.len() > limit {
                items.truncate(limit);
                more = true;
            }
        }
        let next = if more {
            items.last().map(|p| p.payout_id.clone())
        } else {
            None
        };
        Ok(Page { items, next })
    }

    /// Every payout in its current state (for `verify`).
    pub fn all_payouts(&self) -> StoreResult<Vec<Payout>> {
        let t = self.txn.open_table(PAYOUTS)?;
        let mut out = Vec::new();
        for entry in t.iter()? {
            let (_, v) = entry?;
            out.push(decode(v.value())?);
        }
        // Chunked payouts not changed since their run (the others are PAYOUTS rows).
        for entry in self.txn.open_table(PAYOUT_CHUNKS)?.iter()? {
            let (_, v) = entry?;
            let value: Vec<super::payout_chunks::ChunkedPayout> = decode(v.value())?;
            for c in value {
                if t.get(c.payout.payout_id.as_str())?.is_none() {
                    out.push(c.payout);
                }
            }
        }
        Ok(out)
    }

    /// The digest and count of the payouts a run's job stored (see
    /// `payout_chunks::digest`).
    pub fn payout_job_digest(&self, first: &str, last: &str) -> StoreResult<([u8; 32], usize)> {
        super::payout_chunks::digest(&self.txn.open_table(PAYOUT_CHUNKS)?, first, last)
    }

    /// What `verify` finds wrong in the payouts runs stored in chunks (see
    /// `payout_chunks`): each value's open count must be its payouts without a PAYOUTS
    /// row (absent at zero), every count must have its value, a payout with a row must be
    /// indexed by its state, and its ledger entries must be its node's.
    pub fn payout_chunk_problems(&self) -> StoreResult<Vec<String>> {
        let payouts = self.txn.open_table(PAYOUTS)?;
        let chunks = self.txn.open_table(PAYOUT_CHUNKS)?;
        let open = self.txn.open_table(OPEN_PAYOUT_CHUNKS)?;
        let by_state = self.txn.open_table(PAYOUTS_BY_STATE)?;
        let mut problems = Vec::new();
        for entry in chunks.iter()? {
            let (k, v) = entry?;
            let key = k.value();
            let value: Vec<super::payout_chunks::ChunkedPayout> = decode(v.value())?;
            let mut unchanged = 0u64;
            for c in &value {
                let id = c.payout.payout_id.as_str();
                match payouts.get(id)? {
                    None => unchanged += 1,
                    Some(row) => {
                        let now: Payout = decode(row.value())?;
                        if by_state.get((now.state.as_str(), id))?.is_none() {
                            problems.push(format!(
                                "payout {id} is {} but not indexed so",
                                now.state.as_str()
                            ));
                        }
                    }
                }
                if c.entries.iter().any(|e| e.node_id != c.payout.node_id) {
                    problems.push(format!("payout {id} holds another node's ledger entries"));
                }
            }
            let counted = open.get(key)?.map(|v| v.value()).unwrap_or(0);
            if counted != unchanged {
                problems.push(format!(
                    "payout chunk {key}: {unchanged} payout(s) still pending as stored, counted {counted}"
                ));
            }
        }
        for entry in open.iter()? {
            let (k, _) = entry?;
            if chunks.get(k.value())?.is_none() {
                problems.push(format!("open payout chunk {} is missing", k.value()));
            }
        }
        Ok(problems)
    }

    /// The last ledger sequence number given.
    pub fn ledger_seq(&self) -> StoreResult<u64> {
        Ok(self.meta_u64(LEDGER_SEQ_KEY)?.unwrap_or(0))
    }

    /// Every closed epoch.
    pub fn all_epochs(&self) -> StoreResult<std::collections::BTreeMap<u64, Epoch>> {
        let t = self.txn.open_table(EPOCHS)?;
        let mut out = std::collections::BTreeMap::new();
        for entry in t.iter()? {
            let (k, v) = entry?;
            out.insert(k.value(), decode(v.value())?);
        }
        Ok(out)
    }

    /// Heartbeats received in `[from, to)`, in receive order.
    pub fn heartbeats_between(
        &self,
        from: u64,
        to: u64,
    ) -> StoreResult<Vec<(u64, String, StoredHeartbeat)>> {
        let t = self.txn.open_table(HEARTBEATS)?;
        let mut out = Vec::new();
        for entry in t.range::<(u64, &str)>((from, "")..(to, ""))? {
            let (k, v) = entry?;
            let (at, node) = k.value();
            out.push((at, node.to_string(), decode_heartbeat(node, at, v.value())?));
        }
        Ok(out)
    }

    /// One node's heartbeats received in `[from, to)`: other nodes' entries are skipped by
    /// key, without decoding them.
    pub fn node_heartbeats_between(
        &self,
        node_id: &str,
        from: u64,
        to: u64,
    ) -> StoreResult<Vec<(u64, StoredHeartbeat)>> {
        let t = self.txn.open_table(HEARTBEATS)?;
        let mut out = Vec::new();
        for entry in t.range::<(u64, &str)>((from, "")..(to, ""))? {
            let (k, v) = entry?;
            let (at, node) = k.value();
            if node == node_id {
                out.push((at, decode_heartbeat(node, at, v.value())?));
            }
        }
        Ok(out)
    }

    pub fn meta_u64(&self, key: &str) -> StoreResult<Option<u64>> {
        super::batch::meta_u64(&self.txn.open_table(META)?, key)
    }

    /// Every audit event in order (for `verify`).
    pub fn for_each_audit(
        &self,
        mut f: impl FnMut(AuditEvent) -> Result<(), String>,
    ) -> Result<(), String> {
        let table = self.txn.open_table(AUDIT).map_err(|e| e.to_string())?;
        for entry in table.iter().map_err(|e| e.to_string())? {
            let (_, v) = entry.map_err(|e| e.to_string())?;
            let event: AuditEvent = decode(v.value()).map_err(|e| e.to_string())?;
            f(event)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod ledger_page_tests {
    use rust_decimal::Decimal;

    use crate::domain::ledger::EntryKind;
    use crate::store::{db, seed, Batch};

    fn adjust(b: &mut Batch<'_>, node_id: &str, amount: Decimal, reason: &str) {
        let before = b.node(node_id).unwrap().unwrap();
        let mut node = before.clone();
        b.append_ledger(
            &mut node,
            EntryKind::Adjustment,
            amount,
            format!("adjustment:{reason}"),
        )
        .unwrap();
        b.put_node(&node, Some(&before)).unwrap();
    }

    /// Seeded node `i` with one ledger entry.
    fn funded(b: &mut Batch<'_>, i: usize) -> String {
        let node = seed::node("node_led", i, 0);
        b.put_node(&node, None).unwrap();
        adjust(b, &node.node_id, Decimal::ONE, "first");
        node.node_id
    }

    #[test]
    fn ledger_pages_follow_one_nodes_entries_in_order_from_the_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = db::open_with_clock(dir.path(), 100).unwrap();
        // Two nodes' entries interleaved: a page must never run into the other node's.
        let (a, b_id) = seed::in_transaction(&store, &clock, |b| {
            let a = funded(b, 0);
            let other = funded(b, 1);
            for i in 0..6 {
                adjust(b, &a, Decimal::from(i + 2), "a");
                adjust(b, &other, Decimal::from(100), "b");
            }
            (a, other)
        });
        let r = store.reader().unwrap();
        let all = r.ledger(&a).unwrap();
        assert_eq!(all.len(), 7);
        let mut pages = Vec::new();
        let mut after = None;
        loop {
            let page = r.ledger_page(&a, after, 3).unwrap();
            assert!(page.items.len() <= 3);
            pages.push(page.items.len());
            after = page.items.last().map(|e| e.seq);
            assert!(page.items.iter().all(|e| e.node_id == a));
            if page.next.is_none() {
                break;
            }
            assert_eq!(page.next, after.map(|s| s.to_string()));
        }
        assert_eq!(pages, [3, 3, 1]);
        let paged: Vec<u64> =
            std::iter::successors(Some(r.ledger_page(&a, None, 3).unwrap()), |p| {
                p.next
                    .as_ref()
                    .map(|n| r.ledger_page(&a, Some(n.parse().unwrap()), 3).unwrap())
            })
            .flat_map(|p| p.items)
            .map(|e| e.seq)
            .collect();
        assert_eq!(paged, all.iter().map(|e| e.seq).collect::<Vec<_>>());
        // A cursor past the end, or at the largest seq, is an empty last page.
        let end = r.ledger_page(&a, Some(u64::MAX), 3).unwrap();
        assert!(end.items.is_empty() && end.next.is_none());
        assert_eq!(r.ledger_page(&b_id, None, 500).unwrap().items.len(), 7);
    }
}
