//! Where payouts go. `ledger` (the default) needs no code: payouts wait, `pending`, for an
//! external treasury that exports them and confirms them through the API. `webhook` posts
//! each payout to a payment service.

pub mod webhook;

/// The result of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The payment service paid and answered with this transaction hash.
    Paid { tx_hash: String },
    /// Anything else: an error status, garbage, a timeout, no connection. Retried.
    NotPaid { reason: String },
}
