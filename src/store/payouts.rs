//! Money mutations, each one transaction: a payout with its ledger debit, a confirmation,
//! a failure with its re-credit, an admin adjustment. Every one checks before it writes.

use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::json;

use redb::ReadableTable;

use super::accounts::{Account, AccountEdits};
use super::batch::{take_pending, take_pending_credits, DayReferences};
use super::codec::{decode, encode};
use super::error::{StoreError, StoreResult};
use super::payout_chunks::{self, ChunkedPayout, HeadEdits};
use super::queries::Reader;
use super::tables::{
    payout_state_counter, ACCOUNTS, LEDGER_SEQ_KEY, NODES, NODE_IDS, OPEN_PAYOUT_CHUNKS,
    PAYOUT_CHUNKS, PAYOUT_HEADS,
};
use super::{Actor, Batch};
use crate::domain::alert::EventType;
use crate::domain::ids::new_time_ordered_id;
use crate::domain::ledger::{EntryKind, LedgerEntry};
use crate::domain::money::format_usdt;
use crate::domain::node::Node;
use crate::domain::payout::{can_confirm, can_fail, due, Payout, PayoutState};
use crate::domain::refusal::Refusal;
use crate::store::tables::PAID_MICROS_COUNTER;

/// What one chunk of a payout run did.
#[derive(Debug, Default)]
pub struct ChunkOutcome {
    pub created: Vec<Payout>,
    /// Nodes looked at and not paid (not due any more, suspended, no address, gone).
    pub skipped: u64,
    /// How many of the given node ids were looked at: the caller sends the rest again.
    pub consumed: usize,
}

/// A node a payout run found due in a read snapshot, with what the run's transaction needs
/// to pay it without decoding and checking its record again. Made only by
/// [`find_candidates`]: a candidate whose record is still byte for byte the one read was
/// due by its status and address, and only its balance can have moved since.
#[derive(Debug, Clone)]
pub struct Candidate {
    node_id: String,
    node_index: u32,
    /// The node's record as the snapshot held it.
    record: Vec<u8>,
    payout_address: String,
    operator_id: String,
}

impl Candidate {
    #[cfg(test)]
    pub fn node_id(&self) -> &str {
        &self.node_id
    }
}

/// Walks the nodes in index order and hands `each` those due at `threshold`, in batches
/// of up to `batch` (it returns false to stop the walk). Returns how many other nodes have
/// a balance but are not due. A node whose account row holds no balance is passed over
/// without reading its record.
pub fn find_candidates(
    reader: &Reader,
    threshold: Decimal,
    batch: usize,
    mut each: impl FnMut(Vec<Candidate>) -> bool,
) -> StoreResult<u64> {
    let tables = super::accounts::read_tables(&reader.txn)?;
    let ids = reader.txn.open_table(NODE_IDS)?;
    let mut not_due = 0u64;
    let mut found = Vec::new();
    let mut accounts = super::accounts::AccountReads::new(&tables.accounts);
    for entry in ids.iter()? {
        let (k, v) = entry?;
        let (node_index, node_id) = (k.value(), v.value());
        let account = accounts.get(node_index)?;
        if account.is_some_and(|a| a.balance_usdt <= Decimal::ZERO) {
            continue;
        }
        let Some(record) = tables.nodes.get(node_id)? else {
            continue;
        };
        let mut node: Node = decode(record.value())?;
        if let Some(a) = account {
            a.apply_to(&mut node);
        }
        if node.balance_usdt <= Decimal::ZERO {
            continue;
        }
        if due(&node, threshold).is_err() {
            not_due += 1;
            continue;
        }
        found.push(Candidate {
            node_id: node.node_id,
            node_index,
            record: record.value().to_vec(),
            payout_address: node.payout_address.unwrap_or_default(),
            operator_id: node.operator_id,
        });
        if found.len() == batch && !each(std::mem::take(&mut found)) {
            return Ok(not_due);
        }
    }
    if !found.is_empty() {
        each(found);
    }
    Ok(not_due)
}

/// Creates, for each of `candidates` still due, a payout of its whole balance: the payout
/// with its ledger entries (stored in chunks, see `payout_chunks`), the node's new
/// balance, the audit event and the alerts, all in this transaction. Each node is checked
/// before anything of its payout is written.
///
/// The run's hot loop: the tables are opened once for the chunk; the ledger sequence, the
/// state counter and the audit event are written once. What a payout adds is a share of
/// a sequential value and of its node's account and head values (per payout, six
/// scattered rows were most of a run's cost). A node whose record is unchanged since the
/// scan and whose totals are in its account row is re-checked by its balance alone (its
/// record is not decoded again: that and checking the address were half of a run). Stops
/// after `budget` has passed, after at least one node.
pub fn create_due_chunk(
    b: &mut Batch<'_>,
    candidates: &[Candidate],
    threshold: Decimal,
    actor: &Actor,
    budget: Duration,
) -> StoreResult<ChunkOutcome> {
    let started = Instant::now();
    let mut out = ChunkOutcome::default();
    let mut stored: Vec<ChunkedPayout> = Vec::new();
    // Kept only when needed: each node after its payout (for the mirror), its operator
    // (for the alerts).
    let mirror = b.mirror.is_some();
    let alerts = b.any_alert_settings()?;
    let mut mirrored_nodes: Vec<Node> = Vec::new();
    let mut operators: Vec<String> = Vec::new();
    let mut days = DayReferences::default();
    let mut ledger_seq = b.meta_u64(LEDGER_SEQ_KEY)?.unwrap_or(0);
    let now = b.now_us();
    // Copied out of the batch: the tables borrow the transaction, not `b`, which hands out
    // stamps meanwhile.
    let txn = b.txn;
    let stored_sha256 = {
        let mut nodes = txn.open_table(NODES)?;
        let mut accounts = txn.open_table(ACCOUNTS)?;
        // Balances of nodes with an account row change there, one value per 128 nodes.
        let mut account_edits = AccountEdits::default();
        let mut heads = txn.open_table(PAYOUT_HEADS)?;
        let mut head_edits = HeadEdits::default();
        for c in candidates {
            if out.consumed > 0 && started.elapsed() >= budget {
                break;
            }
            out.consumed += 1;
            let node_id = &c.node_id;
            let account = account_edits.get(&accounts, c.node_index)?;
            // The record is decoded only when it changed since the scan, holds the
            // totals (no account row yet), or goes to the mirror.
            let node = match nodes.get(node_id.as_str())? {
                None => {
                    out.skipped += 1;
                    continue;
                }
                Some(v) if v.value() == c.record.as_slice() && account.is_some() && !mirror => None,
                Some(v) => Some(decode::<Node>(v.value())?),
            };
            // Address and operator as the record holds them now: the scan's copies only
            // when the record is the one scanned.
            let (amount, mut entries, payout_address, operator_id) = match (node, account) {
                (None, Some(mut a)) => {
                    // Status and address as the scan checked them: the balance decides.
                    if a.balance_usdt <= Decimal::ZERO || a.balance_usdt < threshold {
                        out.skipped += 1;
                        continue;
                    }
                    let amount = a.balance_usdt;
                    let entries: Vec<LedgerEntry> = take_pending(
                        node_id,
                        (&mut a.credits_pending_usdt, a.credits_pending_day),
                        (&mut ledger_seq, now),
                        &mut days,
                    )
                    .into_iter()
                    .collect();
                    a.balance_usdt -= amount;
                    account_edits.put(&accounts, c.node_index, &a)?;
                    (
                        amount,
                        entries,
                        c.payout_address.clone(),
                        c.operator_id.clone(),
                    )
                }
                (None, None) => unreachable!("a record is decoded when there is no row"),
                (Some(mut node), account) => {
                    if let Some(a) = account {
                        a.apply_to(&mut node);
                    }
                    let Ok(amount) = due(&node, threshold) else {
                        out.skipped += 1;
                        continue;
                    };
                    let entries: Vec<LedgerEntry> =
                        take_pending_credits(&mut node, &mut ledger_seq, now, &mut days)
                            .into_iter()
                            .collect();
                    node.balance_usdt -= amount;
                    // Only the balance changes, never the status its index and counters
                    // follow: into the account row, or the record of a node without one.
                    match account {
                        Some(_) => {
                            account_edits.put(&accounts, c.node_index, &Account::of_node(&node))?
                        }
                        None => {
                            nodes.insert(node_id.as_str(), encode(&node).as_slice())?;
                        }
                    }
                    let address = node.payout_address.clone().unwrap_or_default();
                    let operator = node.operator_id.clone();
                    if mirror {
                        mirrored_nodes.push(node);
                    }
                    (amount, entries, address, operator)
                }
            };
            // Time-ordered (by the writer's unique stamp): a run's payouts append, and the
            // id names the value that holds it.
            let stamp = b.stamp_us();
            let payout = Payout {
                payout_id: new_time_ordered_id("payout", stamp),
                node_id: node_id.clone(),
                amount,
                payout_address,
                state: PayoutState::Pending,
                created_at_us: now,
                updated_at_us: now,
                tx_hash: None,
                attempts: 0,
                error: None,
                next_attempt_at_us: None,
                needs_attention: false,
            };
            ledger_seq += 1;
            entries.push(LedgerEntry {
                seq: ledger_seq,
                node_id: node_id.clone(),
                at_us: now,
                kind: EntryKind::Debit,
                amount: -amount,
                reference: format!("payout:{}", payout.payout_id),
            });
            let prev = head_edits.push(&heads, c.node_index, stamp)?;
            stored.push(ChunkedPayout {
                payout,
                entries,
                prev,
            });
            if alerts {
                operators.push(operator_id);
            }
        }
        account_edits.flush(&mut accounts)?;
        head_edits.flush(&mut heads)?;
        payout_chunks::write(
            &mut txn.open_table(PAYOUT_CHUNKS)?,
            &mut txn.open_table(OPEN_PAYOUT_CHUNKS)?,
            &stored,
        )?
    };
    let (Some(first), Some(last)) = (stored.first(), stored.last()) else {
        return Ok(out);
    };
    let (first, last) = (&first.payout.payout_id, &last.payout.payout_id);
    b.set_meta_u64(LEDGER_SEQ_KEY, ledger_seq)?;
    b.add_counter(
        &payout_state_counter(PayoutState::Pending),
        stored.len() as i64,
    )?;
    // One audit event for the chunk: its payouts are exactly the run's ids from `first` to
    // `last` (time-ordered), each stored with its amount, address and ledger entries; the
    // digest of what was stored puts each of them under the audit chain.
    let total: Decimal = stored.iter().map(|c| c.payout.amount).sum();
    b.audit(
        actor,
        "payout.create",
        first,
        json!({
            "payouts": stored.len(),
            "amount_usdt": format_usdt(total),
            "first_payout_id": first,
            "last_payout_id": last,
            "payouts_sha256": hex::encode(stored_sha256),
        }),
    )?;
    // The mirror's outbox: each payout's ledger entries, node and payout.
    for (c, node) in stored.iter().zip(&mirrored_nodes) {
        for entry in &c.entries {
            b.mirror_ledger(entry)?;
        }
        b.mirror_node(node)?;
        b.mirror_payout(&c.payout)?;
    }
    out.created = stored.into_iter().map(|c| c.payout).collect();
    for (payout, operator_id) in out.created.iter().zip(&operators) {
        raise_payout_alert(b, EventType::PayoutCreated, payout, operator_id)?;
    }
    Ok(out)
}

/// Tells the node's operator (and the fleet hook) about a payout, in the transaction that
/// changed it.
fn raise_payout_alert(
    b: &mut Batch<'_>,
    event: EventType,
    payout: &Payout,
    operator_id: &str,
) -> StoreResult<()> {
    let detail = json!({
        "payout_id": payout.payout_id,
        "amount_usdt": format_usdt(payout.amount),
        "payout_address": payout.payout_address,
        "state": payout.state.as_str(),
        "tx_hash": payout.tx_hash,
        "reason": payout.error,
    });
    b.raise_alert(event, &payout.node_id, operator_id, detail)?;
    Ok(())
}

fn open_payout(b: &Batch<'_>, payout_id: &str) -> StoreResult<Payout> {
    b.payout(payout_id)?
        .ok_or_else(|| Refusal::not_found("payout", payout_id).into())
}

/// Confirms a payout with its transaction hash. A hash that already confirmed another
/// payout is refused: one receipt pays one payout.
pub fn confirm(
    b: &mut Batch<'_>,
    payout_id: &str,
    tx_hash: &str,
    actor: &Actor,
) -> StoreResult<Payout> {
    let before = open_payout(b, payout_id)?;
    can_confirm(before.state).map_err(|e| Refusal::conflict("invalid-state", e))?;
    if let Some(other) = b.payout_for_tx_hash(tx_hash)? {
        return Err(Refusal::conflict(
            "duplicate-tx-hash",
            format!("transaction {tx_hash} already confirmed payout {other}"),
        )
        .into());
    }
    let mut payout = before.clone();
    payout.state = PayoutState::Confirmed;
    payout.needs_attention = false;
    payout.tx_hash = Some(tx_hash.to_string());
    payout.updated_at_us = b.now_us();
    payout.next_attempt_at_us = None;
    payout.error = None;
    b.put_payout(&payout, &before)?;
    let micros = (payout.amount * Decimal::from(1_000_000)).trunc();
    b.add_counter(PAID_MICROS_COUNTER, micros.try_into().unwrap_or(0))?;
    b.audit(
        actor,
        "payout.confirm",
        payout_id,
        json!({"node_id": payout.node_id, "amount_usdt": format_usdt(payout.amount), "tx_hash": tx_hash}),
    )?;
    if let Some(node) = b.node(&payout.node_id)? {
        raise_payout_alert(b, EventType::PayoutConfirmed, &payout, &node.operator_id)?;
    }
    Ok(payout)
}

/// Fails a payout and gives the amount back by a ledger entry (history is never edited).
pub fn fail(
    b: &mut Batch<'_>,
    payout_id: &str,
    reason: &str,
    actor: &Actor,
) -> StoreResult<Payout> {
    let before = open_payout(b, payout_id)?;
    can_fail(before.state).map_err(|e| Refusal::conflict("invalid-state", e))?;
    let node_before = b
        .node(&before.node_id)?
        .ok_or_else(|| StoreError::corrupt("the payout's node record is missing"))?;
    let mut payout = before.clone();
    payout.state = PayoutState::Failed;
    payout.error = Some(reason.to_string());
    payout.updated_at_us = b.now_us();
    payout.next_attempt_at_us = None;
    let mut node = node_before.clone();
    b.append_ledger(
        &mut node,
        EntryKind::Recredit,
        payout.amount,
        format!("payout:{payout_id}"),
    )?;
    b.put_node(&node, Some(&node_before))?;
    b.put_payout(&payout, &before)?;
    b.audit(
        actor,
        "payout.fail",
        payout_id,
        json!({"node_id": payout.node_id, "amount_usdt": format_usdt(payout.amount), "reason": reason}),
    )?;
    raise_payout_alert(b, EventType::PayoutFailed, &payout, &node.operator_id)?;
    Ok(payout)
}

/// Records a delivery attempt (webhook sink) before the request is sent, so a crash after
/// sending is known and the retry reuses the same idempotency key. `None` when the payout
/// is no longer open (confirmed or failed meanwhile).
pub fn mark_submitted(
    b: &mut Batch<'_>,
    payout_id: &str,
    next_attempt_at_us: u64,
) -> StoreResult<Option<Payout>> {
    let Some(before) = b.payout(payout_id)? else {
        return Ok(None);
    };
    if !before.state.is_open() {
        return Ok(None);
    }
    let mut payout = before.clone();
    payout.state = PayoutState::Submitted;
    payout.attempts += 1;
    payout.updated_at_us = b.now_us();
    payout.next_attempt_at_us = Some(next_attempt_at_us);
    b.put_payout(&payout, &before)?;
    if before.state == PayoutState::Pending {
        b.audit(
            &Actor::system(),
            "payout.submit",
            payout_id,
            json!({"node_id": payout.node_id, "attempt": payout.attempts}),
        )?;
    }
    Ok(Some(payout))
}

/// Records why a delivery attempt failed (the payout stays open). `stop` parks it: no
/// more automatic attempts until an operator confirms or fails it.
pub fn record_attempt_error(
    b: &mut Batch<'_>,
    payout_id: &str,
    error: &str,
    needs_attention: bool,
    stop: bool,
) -> StoreResult<()> {
    let Some(before) = b.payout(payout_id)? else {
        return Ok(());
    };
    if !before.state.is_open() {
        return Ok(());
    }
    let mut payout = before.clone();
    payout.error = Some(error.to_string());
    payout.needs_attention |= needs_attention;
    if stop {
        payout.next_attempt_at_us = None;
    }
    payout.updated_at_us = b.now_us();
    b.put_payout(&payout, &before)
}

/// An admin's correction of a balance, as a ledger entry with its reason.
pub fn adjust(
    b: &mut Batch<'_>,
    node_id: &str,
    amount: Decimal,
    reason: &str,
    actor: &Actor,
) -> StoreResult<LedgerEntry> {
    let before = b
        .node(node_id)?
        .ok_or_else(|| Refusal::not_found("node", node_id))?;
    if before.balance_usdt + amount < Decimal::ZERO {
        return Err(Refusal::unprocessable(
            "negative-balance",
            format!(
                "the balance {} cannot go below zero",
                format_usdt(before.balance_usdt)
            ),
        )
        .into());
    }
    let mut node = before.clone();
    let entry = b.append_ledger(
        &mut node,
        EntryKind::Adjustment,
        amount,
        format!("adjustment:{reason}"),
    )?;
    b.put_node(&node, Some(&before))?;
    b.audit(
        actor,
        "ledger.adjust",
        node_id,
        json!({"amount_usdt": amount.to_string(), "reason": reason}),
    )?;
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::node::{Node, NodeStatus};
    use crate::store::{db, seed};

    const ADDRESS: &str = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t";

    /// Adds `amount` USDT to a node's balance by a ledger adjustment (credits would need
    /// proofs behind them to verify).
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

    /// Seeded node `i` with a payout address (or none) and a balance of `credit` USDT.
    fn funded(b: &mut Batch<'_>, i: usize, address: Option<&str>, credit: i64) -> String {
        let mut node = seed::node("node_pay", i, 0);
        node.payout_address = address.map(Into::into);
        b.put_node(&node, None).unwrap();
        adjust(b, &node.node_id, Decimal::from(credit), "test");
        node.node_id
    }

    /// The candidates a run's scan finds now, and how many nodes it found not due.
    fn scan(store: &db::Store, threshold: i64) -> (Vec<Candidate>, u64) {
        let mut all = Vec::new();
        let not_due = find_candidates(
            &store.reader().unwrap(),
            Decimal::from(threshold),
            2,
            |batch| {
                all.extend(batch);
                true
            },
        )
        .unwrap();
        (all, not_due)
    }

    fn ids_of(candidates: &[Candidate]) -> Vec<&str> {
        candidates.iter().map(|c| c.node_id()).collect()
    }

    fn suspend(b: &mut Batch<'_>, node_id: &str) {
        let before = b.node(node_id).unwrap().unwrap();
        let after = Node {
            status: NodeStatus::Suspended,
            ..before.clone()
        };
        b.put_node(&after, Some(&before)).unwrap();
    }

    #[test]
    fn a_chunk_pays_each_due_node_once_and_skips_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = db::open_with_clock(dir.path(), 100).unwrap();
        let [due, below, suspended, no_address, due_by_row, suspended_since, paid_since] =
            seed::in_transaction(&store, &clock, |b| {
                let due = funded(b, 0, Some(ADDRESS), 20);
                let below = funded(b, 1, Some(ADDRESS), 5);
                let suspended = funded(b, 2, Some(ADDRESS), 20);
                suspend(b, &suspended);
                let no_address = funded(b, 3, None, 20);
                // Totals in account rows: re-checked by balance while the record is as
                // the scan read it.
                let rows: Vec<String> = (4..7)
                    .map(|i| {
                        let id = funded(b, i, Some(ADDRESS), 20);
                        with_account_row(b, &id);
                        id
                    })
                    .collect();
                [
                    due,
                    below,
                    suspended,
                    no_address,
                    rows[0].clone(),
                    rows[1].clone(),
                    rows[2].clone(),
                ]
            });
        let (found, not_due) = scan(&store, 10);
        assert_eq!(
            ids_of(&found),
            [&due, &due_by_row, &suspended_since, &paid_since].map(|s| s.as_str())
        );
        assert_eq!(not_due, 3);
        // Between the scan and the run: one is suspended, one paid by another run.
        let paid_elsewhere: Vec<Candidate> = found
            .iter()
            .filter(|c| c.node_id() == paid_since)
            .cloned()
            .collect();
        seed::in_transaction(&store, &clock, |b| {
            suspend(b, &suspended_since);
            let other = pay(b, &paid_elsewhere);
            assert_eq!(other.created.len(), 1);
        });
        let mut candidates = found.clone();
        candidates.push(found[1].clone()); // twice in one chunk: paid once
        let out = seed::in_transaction(&store, &clock, |b| {
            // Other ledger appends in the same transaction: sequences must not collide.
            adjust(b, &below, Decimal::ONE, "before");
            let out = pay(b, &candidates);
            adjust(b, &below, Decimal::ONE, "after");
            out
        });
        assert_eq!((out.consumed, out.skipped), (candidates.len(), 3));
        let paid: Vec<&str> = out.created.iter().map(|p| p.node_id.as_str()).collect();
        assert_eq!(paid, [due.as_str(), due_by_row.as_str()]);
        let r = store.reader().unwrap();
        for id in [&suspended_since, &paid_since, &due_by_row] {
            assert_eq!(
                r.node_payouts(id).unwrap().len(),
                usize::from(id != &suspended_since),
                "{id}"
            );
        }
        assert_eq!(
            r.node(&suspended_since).unwrap().unwrap().balance_usdt,
            Decimal::from(20)
        );
        drop(r);
        let payout = &out.created[0];
        assert_eq!(
            (payout.node_id.as_str(), payout.amount, payout.state),
            (due.as_str(), Decimal::from(20), PayoutState::Pending)
        );

        let r = store.reader().unwrap();
        assert_eq!(r.node(&due).unwrap().unwrap().balance_usdt, Decimal::ZERO);
        for id in [&suspended, &no_address] {
            assert_eq!(r.node(id).unwrap().unwrap().balance_usdt, Decimal::from(20));
        }
        let debit = r.ledger(&due).unwrap().pop().unwrap();
        assert_eq!(
            (debit.kind, debit.amount, debit.reference.clone()),
            (
                EntryKind::Debit,
                Decimal::from(-20),
                format!("payout:{}", payout.payout_id)
            )
        );
        assert_eq!(r.node_payouts(&due).unwrap(), vec![payout.clone()]);
        let pending = r.payouts_in_state(PayoutState::Pending, None, 10).unwrap();
        let pending: Vec<&str> = pending.items.iter().map(|p| p.node_id.as_str()).collect();
        assert_eq!(
            pending,
            [&paid_since, &due, &due_by_row].map(|s| s.as_str())
        );
        assert_eq!(
            r.counter(&payout_state_counter(PayoutState::Pending))
                .unwrap(),
            3
        );
        // Ledger sequences unique and in order across the chunk and the appends around it;
        // every balance equals its ledger, every payout has its debit, the audit chain holds.
        let all = [
            &due,
            &below,
            &suspended,
            &no_address,
            &due_by_row,
            &suspended_since,
            &paid_since,
        ];
        let mut seqs: Vec<u64> = all
            .iter()
            .flat_map(|id| r.ledger(id).unwrap())
            .map(|e| e.seq)
            .collect();
        seqs.sort();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng).verifying_key();
        crate::store::verify::verify_database(&r, &key, |_| {}).unwrap();
        let last = r.audit(0, 100).unwrap().items;
        // One event per chunk.
        assert_eq!(
            last.iter().filter(|e| e.action == "payout.create").count(),
            2
        );
    }

    /// A payout as a schema-4 run stored it: its own PAYOUTS row, both indexes, the
    /// ledger debit beside the node's entries and the pending counter.
    fn legacy_payout(b: &mut Batch<'_>, node_id: &str) -> Payout {
        use crate::store::tables::{NODE_PAYOUTS, PAYOUTS, PAYOUTS_BY_STATE};
        let before = b.node(node_id).unwrap().unwrap();
        let mut node = before.clone();
        let stamp = b.stamp_us();
        let payout = Payout {
            payout_id: new_time_ordered_id("payout", stamp),
            node_id: node_id.to_string(),
            amount: node.balance_usdt,
            payout_address: node.payout_address.clone().unwrap(),
            state: PayoutState::Pending,
            created_at_us: stamp,
            updated_at_us: stamp,
            tx_hash: None,
            attempts: 0,
            error: None,
            next_attempt_at_us: None,
            needs_attention: false,
        };
        let reference = format!("payout:{}", payout.payout_id);
        b.append_ledger(&mut node, EntryKind::Debit, -payout.amount, reference)
            .unwrap();
        b.put_node(&node, Some(&before)).unwrap();
        let id = payout.payout_id.as_str();
        let txn = b.txn;
        txn.open_table(PAYOUTS)
            .unwrap()
            .insert(id, encode(&payout).as_slice())
            .unwrap();
        txn.open_table(NODE_PAYOUTS)
            .unwrap()
            .insert((node_id, id), ())
            .unwrap();
        txn.open_table(PAYOUTS_BY_STATE)
            .unwrap()
            .insert(("pending", id), ())
            .unwrap();
        b.add_counter(&payout_state_counter(PayoutState::Pending), 1)
            .unwrap();
        payout
    }

    /// [`create_due_chunk`] at 10 USDT, without a budget.
    fn pay(b: &mut Batch<'_>, candidates: &[Candidate]) -> ChunkOutcome {
        create_due_chunk(
            b,
            candidates,
            Decimal::from(10),
            &Actor::system(),
            Duration::MAX,
        )
        .unwrap()
    }

    /// Pays every node due at 10 USDT in one chunk; the payouts created.
    fn run(store: &db::Store, clock: &crate::clock::Clock) -> Vec<Payout> {
        let (candidates, _) = scan(store, 10);
        seed::in_transaction(store, clock, |b| pay(b, &candidates).created)
    }

    #[test]
    fn payouts_of_older_runs_and_chunked_ones_read_as_one_history() {
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = db::open_with_clock(dir.path(), 100).unwrap();
        let (a, other) = seed::in_transaction(&store, &clock, |b| {
            (
                funded(b, 0, Some(ADDRESS), 20),
                funded(b, 1, Some(ADDRESS), 30),
            )
        });
        let older = seed::in_transaction(&store, &clock, |b| legacy_payout(b, &a));
        seed::in_transaction(&store, &clock, |b| adjust(b, &a, Decimal::from(11), "2"));
        let first_run = run(&store, &clock);
        seed::in_transaction(&store, &clock, |b| adjust(b, &a, Decimal::from(12), "3"));
        let second_run = run(&store, &clock);
        assert_eq!((first_run.len(), second_run.len()), (2, 1));
        let (first, second) = (first_run[0].clone(), second_run[0].clone());

        let r = store.reader().unwrap();
        // By id, by node (oldest first, older rows before the chain), by state.
        assert_eq!(r.payout(&first.payout_id).unwrap(), Some(first.clone()));
        assert_eq!(r.payout(&older.payout_id).unwrap(), Some(older.clone()));
        let forged = format!("{}x", &first.payout_id[..first.payout_id.len() - 1]);
        assert_eq!(r.payout(&forged).unwrap(), None);
        assert_eq!(
            r.node_payouts(&a).unwrap(),
            vec![older.clone(), first.clone(), second.clone()]
        );
        assert_eq!(r.node_payouts(&other).unwrap(), vec![first_run[1].clone()]);
        let mut pending = vec![
            older.clone(),
            first.clone(),
            first_run[1].clone(),
            second.clone(),
        ];
        pending.sort_by(|x, y| x.payout_id.cmp(&y.payout_id));
        let mut paged = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = r
                .payouts_in_state(PayoutState::Pending, after.as_deref(), 1)
                .unwrap();
            paged.extend(page.items);
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(paged, pending);
        // The ledger: the older debit, the adjustments, each run's debit, in seq order and
        // the same whole or in pages of two.
        let ledger = r.ledger(&a).unwrap();
        let seqs: Vec<u64> = ledger.iter().map(|e| e.seq).collect();
        let mut sorted = seqs.clone();
        sorted.sort();
        assert_eq!(seqs, sorted);
        let debits: Vec<String> = ledger
            .iter()
            .filter(|e| e.kind == EntryKind::Debit)
            .map(|e| e.reference.clone())
            .collect();
        assert_eq!(
            debits,
            [&older, &first, &second].map(|p| format!("payout:{}", p.payout_id))
        );
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = r.ledger_page(&a, after, 2).unwrap();
            paged.extend(page.items);
            match page.next {
                Some(n) => after = Some(n.parse().unwrap()),
                None => break,
            }
        }
        assert_eq!(paged, ledger);
        drop(r);

        // A chunked payout confirmed and another failed: each read in its new state once.
        seed::in_transaction(&store, &clock, |b| {
            confirm(b, &first.payout_id, "0xabc", &Actor::system()).unwrap();
            fail(b, &second.payout_id, "refused", &Actor::system()).unwrap();
        });
        let r = store.reader().unwrap();
        let state = |id: &str| r.payout(id).unwrap().unwrap().state;
        assert_eq!(state(&first.payout_id), PayoutState::Confirmed);
        assert_eq!(state(&second.payout_id), PayoutState::Failed);
        let pending: Vec<String> = r
            .payouts_in_state(PayoutState::Pending, None, 10)
            .unwrap()
            .items
            .into_iter()
            .map(|p| p.payout_id)
            .collect();
        let mut want = vec![older.payout_id.clone(), first_run[1].payout_id.clone()];
        want.sort();
        assert_eq!(pending, want);
        let confirmed = r
            .payouts_in_state(PayoutState::Confirmed, None, 10)
            .unwrap()
            .items;
        assert_eq!(confirmed.len(), 1);
        assert_eq!(confirmed[0].tx_hash.as_deref(), Some("0xabc"));
        let mut all: Vec<String> = r
            .all_payouts()
            .unwrap()
            .into_iter()
            .map(|p| p.payout_id)
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 4);
        assert_eq!(
            r.counter(&payout_state_counter(PayoutState::Pending))
                .unwrap(),
            2
        );
        // The failed one's amount came back by a ledger entry.
        assert_eq!(r.node(&a).unwrap().unwrap().balance_usdt, second.amount);
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng).verifying_key();
        crate::store::verify::verify_database(&r, &key, |_| {}).unwrap();
    }

    /// Gives a node an account row holding its totals, as settling its first epoch does.
    fn with_account_row(b: &mut Batch<'_>, node_id: &str) {
        let node = b.node(node_id).unwrap().unwrap();
        let txn = b.txn;
        let index = txn.open_table(crate::store::tables::NODE_INDEX).unwrap();
        let i = index.get(node_id).unwrap().unwrap().value();
        let mut accounts = txn.open_table(ACCOUNTS).unwrap();
        let mut edits = AccountEdits::default();
        edits.put(&accounts, i, &Account::of_node(&node)).unwrap();
        edits.flush(&mut accounts).unwrap();
    }

    #[test]
    fn a_run_looks_at_nodes_due_by_their_account_row_or_their_record() {
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = db::open_with_clock(dir.path(), 100).unwrap();
        // (balance, has an account row, suspended)
        let cases = [
            (20, true, false),  // 0: due by its row
            (20, false, false), // 1: due by its record
            (5, true, false),   // 2: below the threshold
            (5, false, false),  // 3: below the threshold
            (20, true, true),   // 4: suspended, seen in its record
            (20, false, true),  // 5: suspended, seen in its record
            (0, true, false),   // 6: nothing to pay
            (0, false, false),  // 7: nothing to pay
        ];
        let ids: Vec<String> = seed::in_transaction(&store, &clock, |b| {
            cases
                .iter()
                .enumerate()
                .map(|(i, &(credit, row, suspended))| {
                    let id = funded(b, i, Some(ADDRESS), credit);
                    if suspended {
                        let before = b.node(&id).unwrap().unwrap();
                        let after = Node {
                            status: NodeStatus::Suspended,
                            ..before.clone()
                        };
                        b.put_node(&after, Some(&before)).unwrap();
                    }
                    if row {
                        with_account_row(b, &id);
                    }
                    id
                })
                .collect()
        });
        let (candidates, not_due) = scan(&store, 10);
        assert_eq!(ids_of(&candidates), [ids[0].as_str(), ids[1].as_str()]);
        assert_eq!(not_due, 4);
        let out = seed::in_transaction(&store, &clock, |b| pay(b, &candidates));
        let paid: Vec<&str> = out.created.iter().map(|p| p.node_id.as_str()).collect();
        assert_eq!(paid, [ids[0].as_str(), ids[1].as_str()]);
        assert_eq!(out.skipped, 0);
        let r = store.reader().unwrap();
        for (i, id) in ids.iter().enumerate() {
            let balance = r.node(id).unwrap().unwrap().balance_usdt;
            let want = if i < 2 { 0 } else { cases[i].0 };
            assert_eq!(balance, Decimal::from(want), "node {i}");
        }
    }

    #[test]
    fn an_address_changed_after_the_scan_is_the_one_paid_to() {
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = db::open_with_clock(dir.path(), 100).unwrap();
        let new_address = crate::domain::tron::encode_tron_address(&[0x11; 20]);
        let id = seed::in_transaction(&store, &clock, |b| {
            let id = funded(b, 0, Some(ADDRESS), 20);
            with_account_row(b, &id);
            id
        });
        let (candidates, _) = scan(&store, 10);
        seed::in_transaction(&store, &clock, |b| {
            let before = b.node(&id).unwrap().unwrap();
            let after = Node {
                payout_address: Some(new_address.clone()),
                ..before.clone()
            };
            b.put_node(&after, Some(&before)).unwrap();
        });
        let out = seed::in_transaction(&store, &clock, |b| pay(b, &candidates));
        assert_eq!(out.created.len(), 1);
        assert_eq!(out.created[0].payout_address, new_address);
    }

    #[test]
    fn a_chunked_payout_changed_but_still_pending_stays_listed_as_pending() {
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = db::open_with_clock(dir.path(), 100).unwrap();
        seed::in_transaction(&store, &clock, |b| {
            funded(b, 0, Some(ADDRESS), 20);
        });
        let payout = run(&store, &clock).remove(0);
        seed::in_transaction(&store, &clock, |b| {
            let before = b.payout(&payout.payout_id).unwrap().unwrap();
            let after = Payout {
                error: Some("noted".into()),
                ..before.clone()
            };
            b.put_payout(&after, &before).unwrap();
        });
        let r = store.reader().unwrap();
        let pending = r.payouts_in_state(PayoutState::Pending, None, 10).unwrap();
        assert_eq!(pending.items.len(), 1);
        assert_eq!(pending.items[0].error.as_deref(), Some("noted"));
        assert_eq!(
            r.counter(&payout_state_counter(PayoutState::Pending))
                .unwrap(),
            1
        );
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng).verifying_key();
        crate::store::verify::verify_database(&r, &key, |_| {}).unwrap();
        drop(r);

        // A wrong open count would hide pending payouts from the export (here: the one
        // changed payout counted open as if stored unchanged): verify says so.
        seed::in_transaction(&store, &clock, |b| {
            let chunks = b.txn.open_table(PAYOUT_CHUNKS).unwrap();
            let key = chunks.first().unwrap().unwrap().0.value();
            let mut open = b.txn.open_table(OPEN_PAYOUT_CHUNKS).unwrap();
            open.insert(key, 7).unwrap();
        });
        let r = store.reader().unwrap();
        let err = crate::store::verify::verify_database(&r, &key, |_| {}).unwrap_err();
        assert!(err.contains("counted 7"), "{err}");
    }

    #[test]
    fn a_stored_payout_altered_after_its_run_fails_verify() {
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = db::open_with_clock(dir.path(), 100).unwrap();
        seed::in_transaction(&store, &clock, |b| {
            for i in 0..3 {
                funded(b, i, Some(ADDRESS), 20);
            }
        });
        assert_eq!(run(&store, &clock).len(), 3);
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng).verifying_key();
        crate::store::verify::verify_database(&store.reader().unwrap(), &key, |_| {}).unwrap();
        // Someone with the file redirects a pending payout to another address.
        seed::in_transaction(&store, &clock, |b| {
            let mut chunks = b.txn.open_table(PAYOUT_CHUNKS).unwrap();
            let (k, mut value) = {
                let (k, v) = chunks.first().unwrap().unwrap();
                (k.value(), decode::<Vec<ChunkedPayout>>(v.value()).unwrap())
            };
            value[1].payout.payout_address = crate::domain::tron::encode_tron_address(&[0x22; 20]);
            chunks.insert(k, encode(&value).as_slice()).unwrap();
        });
        let err = crate::store::verify::verify_database(&store.reader().unwrap(), &key, |_| {})
            .unwrap_err();
        assert!(
            err.contains("differ from what their audit event recorded"),
            "{err}"
        );
    }

    #[test]
    fn a_chunk_out_of_budget_stops_after_one_node() {
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = db::open_with_clock(dir.path(), 100).unwrap();
        let ids: Vec<String> = seed::in_transaction(&store, &clock, |b| {
            (0..3).map(|i| funded(b, i, Some(ADDRESS), 20)).collect()
        });
        let (candidates, _) = scan(&store, 10);
        let out = seed::in_transaction(&store, &clock, |b| {
            create_due_chunk(
                b,
                &candidates,
                Decimal::from(10),
                &Actor::system(),
                Duration::ZERO,
            )
            .unwrap()
        });
        assert_eq!((out.consumed, out.created.len(), out.skipped), (1, 1, 0));
        assert_eq!(out.created[0].node_id, ids[0]);
    }
}
