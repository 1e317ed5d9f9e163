//! Payouts: who is due, the state machine, and the retry schedule.
//!
//! `pending -> submitted -> confirmed`, or `-> failed` (bounded retries, or an admin's
//! word), where the amount goes back to the balance by a ledger entry. The payout id is
//! the idempotency key everywhere, so sending the same payout again after a crash can never
//! pay twice at a receiver that honours it.

use std::time::Duration;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::node::{Node, NodeStatus};
use super::tron::validate_tron_address;
use crate::clock::Micros;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum PayoutState {
    Pending,
    Submitted,
    Confirmed,
    Failed,
}

impl PayoutState {
    pub const ALL: [PayoutState; 4] = [
        Self::Pending,
        Self::Submitted,
        Self::Confirmed,
        Self::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Submitted => "submitted",
            Self::Confirmed => "confirmed",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Still owed: may yet be confirmed or failed.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Pending | Self::Submitted)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payout {
    pub payout_id: String,
    pub node_id: String,
    pub amount: Decimal,
    pub payout_address: String,
    pub state: PayoutState,
    pub created_at_us: Micros,
    pub updated_at_us: Micros,
    pub tx_hash: Option<String>,
    /// Deliveries tried (webhook sink).
    pub attempts: u32,
    pub error: Option<String>,
    /// When the sink may try again (webhook sink).
    pub next_attempt_at_us: Option<Micros>,
    /// The sink cannot settle it alone (outcome unknown after PAYOUT_MAX_RETRIES, or an
    /// answer it could not accept): an operator should look. Delivery goes on where it is
    /// safe (same idempotency key).
    pub needs_attention: bool,
}

/// Why a node with a balance gets no payout this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    BelowThreshold,
    NoAddress,
    InvalidAddress,
    Suspended,
}

/// Whether `node` is due a payout of its whole balance. Deregistered nodes are still paid
/// (their balance is theirs); suspended ones wait until an admin lifts the suspension.
pub fn due(node: &Node, threshold: Decimal) -> Result<Decimal, Skip> {
    if node.balance_usdt <= Decimal::ZERO || node.balance_usdt < threshold {
        return Err(Skip::BelowThreshold);
    }
    if node.status == NodeStatus::Suspended {
        return Err(Skip::Suspended);
    }
    match &node.payout_address {
        None => Err(Skip::NoAddress),
        Some(a) if validate_tron_address(a).is_err() => Err(Skip::InvalidAddress),
        Some(_) => Ok(node.balance_usdt),
    }
}

/// A transaction hash as TRON prints it: 64 hex digits (a `0x` prefix is accepted and
/// dropped). Stored lowercase, so the same receipt cannot be entered twice by case.
pub fn normalize_tx_hash(s: &str) -> Option<String> {
    let h = s.trim();
    let h = h.strip_prefix("0x").unwrap_or(h);
    (h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())).then(|| h.to_ascii_lowercase())
}

/// Wait before delivery attempt `attempts + 1`: `base * 2^(attempts - 1)`, capped at 1 h.
pub fn backoff(base: Duration, attempts: u32) -> Duration {
    let factor = 1u32 << attempts.saturating_sub(1).min(16);
    (base * factor).min(Duration::from_secs(3600))
}

/// What an admin or a sink may do to a payout in a given state.
pub fn can_confirm(state: PayoutState) -> Result<(), String> {
    match state {
        PayoutState::Pending | PayoutState::Submitted => Ok(()),
        other => Err(format!("the payout is already {}", other.as_str())),
    }
}

pub fn can_fail(state: PayoutState) -> Result<(), String> {
    can_confirm(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn node(balance: &str, address: Option<&str>, status: NodeStatus) -> Node {
        Node {
            node_id: "node_a".into(),
            name: "a".into(),
            operator_id: "op".into(),
            public_key: [1; 32],
            payout_address: address.map(String::from),
            region: None,
            pool_id: None,
            status,
            registered_at_us: 0,
            last_heartbeat_at_us: None,
            balance_usdt: Decimal::from_str(balance).unwrap(),
            operational_seconds_total: 0,
            token_generation: 0,
            last_seq: None,
            credit_carry: Decimal::ZERO,
            last_proof: None,
            credits_pending_usdt: Decimal::ZERO,
            credits_pending_day: 0,
        }
    }

    const ADDR: &str = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t";

    #[test]
    fn the_threshold_is_inclusive_to_the_micro() {
        let ten = Decimal::from(10);
        assert_eq!(
            due(&node("10.000000", Some(ADDR), NodeStatus::Online), ten),
            Ok(ten)
        );
        assert_eq!(
            due(&node("9.999999", Some(ADDR), NodeStatus::Online), ten),
            Err(Skip::BelowThreshold)
        );
    }

    #[test]
    fn address_and_status_rules() {
        let ten = Decimal::from(10);
        assert_eq!(
            due(&node("12", None, NodeStatus::Online), ten),
            Err(Skip::NoAddress)
        );
        assert_eq!(
            due(&node("12", Some("Tnope"), NodeStatus::Online), ten),
            Err(Skip::InvalidAddress)
        );
        assert_eq!(
            due(&node("12", Some(ADDR), NodeStatus::Suspended), ten),
            Err(Skip::Suspended)
        );
        assert!(due(&node("12", Some(ADDR), NodeStatus::Deregistered), ten).is_ok());
        assert_eq!(
            due(&node("0", Some(ADDR), NodeStatus::Online), Decimal::ZERO),
            Err(Skip::BelowThreshold)
        );
    }

    #[test]
    fn tx_hashes_are_64_hex_digits() {
        let h = "A".repeat(64);
        assert_eq!(normalize_tx_hash(&h), Some("a".repeat(64)));
        assert_eq!(
            normalize_tx_hash(&format!("0x{}", "b".repeat(64))),
            Some("b".repeat(64))
        );
        assert_eq!(normalize_tx_hash("abc"), None);
        assert_eq!(normalize_tx_hash(&"g".repeat(64)), None);
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let b = Duration::from_secs(2);
        assert_eq!(backoff(b, 1), Duration::from_secs(2));
        assert_eq!(backoff(b, 2), Duration::from_secs(4));
        assert_eq!(backoff(b, 3), Duration::from_secs(8));
        assert_eq!(backoff(b, 40), Duration::from_secs(3600));
    }

    #[test]
    fn closed_payouts_cannot_change() {
        assert!(can_confirm(PayoutState::Pending).is_ok());
        assert!(can_confirm(PayoutState::Submitted).is_ok());
        assert!(can_confirm(PayoutState::Confirmed).is_err());
        assert!(can_fail(PayoutState::Failed).is_err());
    }
}
