//! The append-only ledger: a node's balance is always the sum of its entries.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::clock::Micros;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// Work credits for a closed epoch.
    Credit,
    /// A payout taken from the balance.
    Debit,
    /// A failed payout given back.
    Recredit,
    /// A correction by an admin (signed), with its reason.
    Adjustment,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub seq: u64,
    pub node_id: String,
    pub at_us: Micros,
    pub kind: EntryKind,
    /// Signed: credits positive, debits negative.
    pub amount: Decimal,
    /// What caused it: `epoch:123`, `payout:payout_...`.
    pub reference: String,
}

/// Sum of entries (what the balance must equal).
pub fn balance<'a>(entries: impl IntoIterator<Item = &'a LedgerEntry>) -> Decimal {
    entries.into_iter().map(|e| e.amount).sum()
}
