//! Nodes: the stored record, their statuses and the rules for changing them.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::clock::Micros;

/// Where a node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Registered, never seen (or re-enabled after suspension).
    Registered,
    Online,
    Offline,
    /// Stopped by an admin: its tokens and heartbeats are refused.
    Suspended,
    /// Removed by its operator or an admin; the record stays for history and payouts.
    Deregistered,
}

impl NodeStatus {
    pub const ALL: [NodeStatus; 5] = [
        NodeStatus::Registered,
        NodeStatus::Online,
        NodeStatus::Offline,
        NodeStatus::Suspended,
        NodeStatus::Deregistered,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::Online => "online",
            Self::Offline => "offline",
            Self::Suspended => "suspended",
            Self::Deregistered => "deregistered",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Whether the node may authenticate and act (log in, send heartbeats, join pools).
    pub fn is_active(self) -> bool {
        !matches!(self, Self::Suspended | Self::Deregistered)
    }
}

/// A node as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    pub node_id: String,
    pub name: String,
    pub operator_id: String,
    pub public_key: [u8; 32],
    pub payout_address: Option<String>,
    pub region: Option<String>,
    pub pool_id: Option<String>,
    pub status: NodeStatus,
    pub registered_at_us: Micros,
    pub last_heartbeat_at_us: Option<Micros>,
    /// Sum of the node's ledger (kept in step with it inside each write transaction).
    pub balance_usdt: Decimal,
    pub operational_seconds_total: u64,
    /// Bumped whenever the node's tokens must stop working (suspend, deregister);
    /// node tokens carry the generation they were issued under.
    pub token_generation: u32,
    /// Highest accepted heartbeat `seq`.
    pub last_seq: Option<u64>,
    /// Credit numerator carried to the next epoch (see `credits`).
    pub credit_carry: Decimal,
    /// Epoch and hash of the node's latest proof (the next proof links to it).
    pub last_proof: Option<(u64, [u8; 32])>,
    /// Credits of closed epochs not entered in the ledger yet (schema 3): a day's epoch
    /// credits become one ledger entry (see `ledger::day_reference`) once the node earns
    /// in a later day or its ledger changes otherwise. `balance_usdt` includes them.
    pub credits_pending_usdt: Decimal,
    /// The UTC day (days since 1970-01-01) the pending credits were earned in.
    pub credits_pending_day: u32,
}

impl Node {
    /// A node as registration creates it: no heartbeat, balance, proofs or pool yet.
    pub fn registered(
        node_id: String,
        name: String,
        operator_id: String,
        public_key: [u8; 32],
        registered_at_us: Micros,
    ) -> Self {
        Self {
            node_id,
            name,
            operator_id,
            public_key,
            payout_address: None,
            region: None,
            pool_id: None,
            status: NodeStatus::Registered,
            registered_at_us,
            last_heartbeat_at_us: None,
            balance_usdt: Decimal::ZERO,
            operational_seconds_total: 0,
            token_generation: 0,
            last_seq: None,
            credit_carry: Decimal::ZERO,
            last_proof: None,
            credits_pending_usdt: Decimal::ZERO,
            credits_pending_day: 0,
        }
    }
}

/// Longest accepted node or pool name, region and similar free text.
pub const MAX_TEXT_LEN: usize = 128;

/// Characters that change how text around them is shown without being visible: zero-width
/// ones (U+200B-U+200F, U+FEFF) and bidi embeddings, overrides and isolates (U+202A-U+202E,
/// U+2066-U+2069). In a name they make one node look like another, or reorder a log line.
pub fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{FEFF}')
}

/// Checks a free-text field (name, region, reason): non-empty after trimming, bounded, no
/// control characters, no zero-width or bidi control characters. Returns the trimmed value.
pub fn validate_text(field: &str, value: &str) -> Result<String, String> {
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if trimmed.chars().count() > MAX_TEXT_LEN {
        return Err(format!("{field} is longer than {MAX_TEXT_LEN} characters"));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(format!("{field} contains control characters"));
    }
    if trimmed.chars().any(is_invisible_format) {
        return Err(format!(
            "{field} contains zero-width or bidirectional control characters"
        ));
    }
    Ok(trimmed.to_string())
}

/// Decodes a node public key: standard base64 of exactly 32 bytes that form a valid
/// Ed25519 point.
pub fn parse_public_key(b64: &str) -> Result<[u8; 32], String> {
    let bytes = B64
        .decode(b64.trim())
        .map_err(|e| format!("public_key is not valid base64: {e}"))?;
    let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
        format!(
            "public_key must be 32 bytes (Ed25519), got {} bytes",
            bytes.len()
        )
    })?;
    ed25519_dalek::VerifyingKey::from_bytes(&key)
        .map_err(|_| "public_key is not a valid Ed25519 public key".to_string())?;
    Ok(key)
}

/// The status change an admin may ask for through `PUT /nodes/{id}`.
pub fn admin_status_change(current: NodeStatus, requested: NodeStatus) -> Result<(), String> {
    match (current, requested) {
        (NodeStatus::Deregistered, _) => Err("a deregistered node cannot change status".into()),
        (_, NodeStatus::Suspended) | (_, NodeStatus::Registered) => Ok(()),
        (_, other) => Err(format!(
            "status can only be set to suspended or registered, not {}",
            other.as_str()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_roundtrip() {
        for s in NodeStatus::ALL {
            assert_eq!(NodeStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(NodeStatus::parse("ONLINE"), None);
    }

    #[test]
    fn only_suspend_and_reenable_are_admin_changes() {
        assert!(admin_status_change(NodeStatus::Online, NodeStatus::Suspended).is_ok());
        assert!(admin_status_change(NodeStatus::Suspended, NodeStatus::Registered).is_ok());
        assert!(admin_status_change(NodeStatus::Online, NodeStatus::Offline).is_err());
        assert!(admin_status_change(NodeStatus::Deregistered, NodeStatus::Registered).is_err());
    }

    #[test]
    fn public_keys_must_be_32_bytes_of_base64() {
        let good = B64.encode(
            ed25519_dalek::SigningKey::from_bytes(&[1; 32])
                .verifying_key()
                .to_bytes(),
        );
        assert!(parse_public_key(&good).is_ok());
        assert!(parse_public_key("not base64!")
            .unwrap_err()
            .contains("base64"));
        assert!(parse_public_key(&B64.encode([0u8; 31]))
            .unwrap_err()
            .contains("32 bytes"));
    }

    #[test]
    fn text_fields_are_trimmed_and_bounded() {
        assert_eq!(validate_text("name", "  pi-1 ").unwrap(), "pi-1");
        assert!(validate_text("name", "   ").is_err());
        assert!(validate_text("name", "a\u{7}b").is_err());
        assert!(validate_text("name", &"x".repeat(129)).is_err());
    }

    #[test]
    fn text_fields_refuse_zero_width_and_bidi_controls() {
        for c in [
            '\u{200B}', '\u{200D}', '\u{200F}', '\u{202A}', '\u{202E}', '\u{2066}', '\u{2069}',
            '\u{FEFF}',
        ] {
            let err = validate_text("name", &format!("pi{c}1")).unwrap_err();
            assert!(err.contains("bidirectional"), "{c:?}: {err}");
            // Also at the ends, where trimming does not remove them.
            assert!(validate_text("name", &format!("{c}pi")).is_err(), "{c:?}");
        }
        // Ordinary non-ASCII text stays accepted.
        assert_eq!(validate_text("name", "Zürich-東京").unwrap(), "Zürich-東京");
        assert!(validate_text("name", "a\u{2010}b").is_ok());
    }

    #[test]
    fn node_record_roundtrips_through_bincode() {
        let node = Node {
            node_id: "node_x".into(),
            name: "n".into(),
            operator_id: "op".into(),
            public_key: [3; 32],
            payout_address: None,
            region: Some("eu".into()),
            pool_id: None,
            status: NodeStatus::Online,
            registered_at_us: 1,
            last_heartbeat_at_us: Some(2),
            balance_usdt: Decimal::new(10_500_000, 6),
            operational_seconds_total: 5,
            token_generation: 1,
            last_seq: Some(3),
            credit_carry: Decimal::new(12, 6),
            last_proof: Some((4, [5; 32])),
            credits_pending_usdt: Decimal::ZERO,
            credits_pending_day: 0,
        };
        let bytes = bincode::serde::encode_to_vec(&node, bincode::config::standard()).unwrap();
        let (back, _): (Node, usize) =
            bincode::serde::decode_from_slice(&bytes, bincode::config::standard()).unwrap();
        assert_eq!(back, node);
    }
}
