//! Where payouts go. `ledger` (the default) needs no code: payouts wait, `pending`, for an
//! external treasury that exports them and confirms them through the API. `webhook` posts
//! each payout to a payment service.

pub mod target;
pub mod webhook;

/// The result of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The payment service paid and answered with this transaction hash.
    Paid { tx_hash: String },
    /// Certainly not paid: the request never reached the service (no connection), or the
    /// service refused it (4xx other than 408/429). Retried; after PAYOUT_MAX_RETRIES the
    /// payout fails and is re-credited.
    NotPaid { reason: String },
    /// Perhaps paid: a timeout, a 5xx, a 2xx without a valid receipt. Retried with the same
    /// idempotency key until the service gives a clear answer; never failed automatically,
    /// because re-crediting a payout that was in fact paid would pay it twice.
    Unknown { reason: String },
}
