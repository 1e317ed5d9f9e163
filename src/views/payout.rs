//! Payouts and ledger entries as the API and the mirror show them.

use serde::Serialize;

use crate::domain::ledger::{EntryKind, LedgerEntry};
use crate::domain::money::format_usdt;
use crate::domain::payout::{Payout, PayoutState};
use crate::domain::timefmt::rfc3339_us;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PayoutView {
    pub payout_id: String,
    pub node_id: String,
    pub amount_usdt: String,
    pub payout_address: String,
    pub state: PayoutState,
    pub created_at: String,
    pub updated_at: String,
    pub tx_hash: Option<String>,
    pub attempts: u32,
    pub error: Option<String>,
    pub next_attempt_at: Option<String>,
    /// The sink cannot settle it alone; an operator should confirm or fail it.
    pub needs_attention: bool,
}

impl From<&Payout> for PayoutView {
    fn from(p: &Payout) -> Self {
        Self {
            payout_id: p.payout_id.clone(),
            node_id: p.node_id.clone(),
            amount_usdt: format_usdt(p.amount),
            payout_address: p.payout_address.clone(),
            state: p.state,
            created_at: rfc3339_us(p.created_at_us),
            updated_at: rfc3339_us(p.updated_at_us),
            tx_hash: p.tx_hash.clone(),
            attempts: p.attempts,
            error: p.error.clone(),
            next_attempt_at: p
                .next_attempt_at_us
                .filter(|_| p.state.is_open())
                .map(rfc3339_us),
            needs_attention: p.needs_attention,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct LedgerEntryView {
    pub seq: u64,
    pub at: String,
    /// credit, debit, recredit or adjustment.
    pub kind: String,
    /// Signed decimal string: debits are negative.
    pub amount_usdt: String,
    pub reference: String,
    /// Set on the last entry of a node's ledger when it shows credits of closed epochs
    /// not entered yet (the day's credits are entered as one entry once the day is over):
    /// the balance is the sum of the entries shown, this one included.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
}

impl LedgerEntryView {
    /// `node`'s pending epoch credits as the entry they will become (`seq` is the next
    /// sequence number), if it has any.
    pub fn pending(node: &crate::domain::node::Node, seq: u64, at_us: u64) -> Option<Self> {
        if node.credits_pending_usdt.is_zero() {
            return None;
        }
        let entry = LedgerEntry {
            seq,
            node_id: node.node_id.clone(),
            at_us,
            kind: EntryKind::Credit,
            amount: node.credits_pending_usdt,
            reference: crate::domain::ledger::day_reference(node.credits_pending_day),
        };
        Some(Self {
            pending: true,
            ..Self::from(&entry)
        })
    }
}

impl From<&LedgerEntry> for LedgerEntryView {
    fn from(e: &LedgerEntry) -> Self {
        let mut amount = e.amount;
        amount.rescale(6);
        Self {
            seq: e.seq,
            at: rfc3339_us(e.at_us),
            kind: match e.kind {
                EntryKind::Credit => "credit",
                EntryKind::Debit => "debit",
                EntryKind::Recredit => "recredit",
                EntryKind::Adjustment => "adjustment",
            }
            .to_string(),
            amount_usdt: amount.to_string(),
            reference: e.reference.clone(),
            pending: false,
        }
    }
}
