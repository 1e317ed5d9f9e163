//! Money mutations, each one transaction: a payout with its ledger debit, a confirmation,
//! a failure with its re-credit, an admin adjustment. Every one checks before it writes.

use rust_decimal::Decimal;
use serde_json::json;

use super::{Actor, Batch};
use crate::domain::alert::EventType;
use crate::domain::ids::new_time_ordered_id;
use crate::domain::ledger::{EntryKind, LedgerEntry};
use crate::domain::money::format_usdt;
use crate::domain::payout::{can_confirm, can_fail, due, Payout, PayoutState, Skip};
use crate::error::{ApiError, ApiResult};
use crate::store::tables::PAID_MICROS_COUNTER;

/// Creates a payout of the node's whole balance if it is due: the payout, the ledger
/// debit and the audit event in one transaction. `Err(skip)` says why not.
pub fn create_if_due(
    b: &mut Batch<'_>,
    node_id: &str,
    threshold: Decimal,
    actor: &Actor,
) -> ApiResult<Result<Payout, Skip>> {
    let Some(before) = b.node(node_id)? else {
        return Ok(Err(Skip::BelowThreshold));
    };
    let amount = match due(&before, threshold) {
        Ok(a) => a,
        Err(skip) => return Ok(Err(skip)),
    };
    let now = b.now_us();
    // Time-ordered (by the writer's unique stamp): a run's payouts append to the payout
    // tables instead of each landing on another B-tree page.
    let payout_id = new_time_ordered_id("payout", b.stamp_us());
    let payout = Payout {
        payout_id,
        node_id: node_id.to_string(),
        amount,
        payout_address: before.payout_address.clone().unwrap_or_default(),
        state: PayoutState::Pending,
        created_at_us: now,
        updated_at_us: now,
        tx_hash: None,
        attempts: 0,
        error: None,
        next_attempt_at_us: None,
        needs_attention: false,
    };
    let mut node = before.clone();
    b.append_ledger(
        &mut node,
        EntryKind::Debit,
        -amount,
        format!("payout:{}", payout.payout_id),
    )?;
    b.put_node(&node, Some(&before))?;
    b.put_payout(&payout, None)?;
    b.audit(
        actor,
        "payout.create",
        &payout.payout_id,
        json!({"node_id": node_id, "amount_usdt": format_usdt(amount), "payout_address": payout.payout_address}),
    )?;
    raise_payout_alert(b, EventType::PayoutCreated, &payout, &node.operator_id)?;
    Ok(Ok(payout))
}

/// Tells the node's operator (and the fleet hook) about a payout, in the transaction that
/// changed it.
fn raise_payout_alert(
    b: &mut Batch<'_>,
    event: EventType,
    payout: &Payout,
    operator_id: &str,
) -> ApiResult<()> {
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

fn open_payout(b: &Batch<'_>, payout_id: &str) -> ApiResult<Payout> {
    b.payout(payout_id)?
        .ok_or_else(|| ApiError::not_found("payout", payout_id))
}

/// Confirms a payout with its transaction hash. A hash that already confirmed another
/// payout is refused: one receipt pays one payout.
pub fn confirm(
    b: &mut Batch<'_>,
    payout_id: &str,
    tx_hash: &str,
    actor: &Actor,
) -> ApiResult<Payout> {
    let before = open_payout(b, payout_id)?;
    can_confirm(before.state).map_err(|e| ApiError::conflict("invalid-state", e))?;
    if let Some(other) = b.payout_for_tx_hash(tx_hash)? {
        return Err(ApiError::conflict(
            "duplicate-tx-hash",
            format!("transaction {tx_hash} already confirmed payout {other}"),
        ));
    }
    let mut payout = before.clone();
    payout.state = PayoutState::Confirmed;
    payout.needs_attention = false;
    payout.tx_hash = Some(tx_hash.to_string());
    payout.updated_at_us = b.now_us();
    payout.next_attempt_at_us = None;
    payout.error = None;
    b.put_payout(&payout, Some(&before))?;
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
pub fn fail(b: &mut Batch<'_>, payout_id: &str, reason: &str, actor: &Actor) -> ApiResult<Payout> {
    let before = open_payout(b, payout_id)?;
    can_fail(before.state).map_err(|e| ApiError::conflict("invalid-state", e))?;
    let node_before = b
        .node(&before.node_id)?
        .ok_or_else(|| ApiError::unavailable("the payout's node record is missing"))?;
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
    b.put_payout(&payout, Some(&before))?;
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
) -> ApiResult<Option<Payout>> {
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
    b.put_payout(&payout, Some(&before))?;
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
) -> ApiResult<()> {
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
    b.put_payout(&payout, Some(&before))
}

/// An admin's correction of a balance, as a ledger entry with its reason.
pub fn adjust(
    b: &mut Batch<'_>,
    node_id: &str,
    amount: Decimal,
    reason: &str,
    actor: &Actor,
) -> ApiResult<LedgerEntry> {
    let before = b
        .node(node_id)?
        .ok_or_else(|| ApiError::not_found("node", node_id))?;
    if before.balance_usdt + amount < Decimal::ZERO {
        return Err(ApiError::unprocessable(
            "negative-balance",
            format!(
                "the balance {} cannot go below zero",
                format_usdt(before.balance_usdt)
            ),
        ));
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
