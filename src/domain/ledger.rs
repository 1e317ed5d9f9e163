//! The append-only ledger: a node's balance is always the sum of its entries.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::clock::Micros;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// Work credits: of one closed epoch (`epoch:N`, before schema 3), or of one UTC day's
    /// closed epochs (`day:YYYY-MM-DD`).
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

/// Microseconds in a UTC day.
pub const DAY_US: Micros = 86_400_000_000;

/// The UTC day (days since 1970-01-01) of an instant.
pub fn day_of(at_us: Micros) -> u32 {
    (at_us / DAY_US) as u32
}

/// The reference of the ledger entry that enters a day's epoch credits:
/// `day:YYYY-MM-DD`.
pub fn day_reference(day: u32) -> String {
    let date = crate::domain::timefmt::rfc3339_us(u64::from(day) * DAY_US);
    format!("day:{}", &date[..10])
}

/// Sum of entries (what the balance must equal).
pub fn balance<'a>(entries: impl IntoIterator<Item = &'a LedgerEntry>) -> Decimal {
    entries.into_iter().map(|e| e.amount).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_is_named_by_its_utc_date() {
        assert_eq!(day_reference(0), "day:1970-01-01");
        // 2026-12-01T23:59:59.999999Z and the next microsecond fall in two days.
        let end = 1_796_169_599_999_999;
        assert_eq!(day_reference(day_of(end)), "day:2026-12-01");
        assert_eq!(day_reference(day_of(end + 1)), "day:2026-12-02");
    }
}
