//! The audit chain: every event's hash covers the previous event's hash, so removing or
//! editing any event breaks every hash after it.
//!
//! `hash = SHA-256("lucid-audit-v1|{seq}|{at}|{subject}|{role}|{action}|{target}|{detail}|{prev_hash}")`
//! with `at` as RFC 3339 (six fraction digits), `detail` the compact JSON as stored and
//! `prev_hash` lowercase hex, empty for the first event.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::Micros;
use crate::domain::timefmt::rfc3339_us;

/// One audit event as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub seq: u64,
    pub at_us: Micros,
    pub actor_subject: String,
    pub actor_role: String,
    pub action: String,
    pub target: String,
    /// Compact JSON object text.
    pub detail: String,
    pub prev_hash: Option<[u8; 32]>,
    pub hash: [u8; 32],
}

/// Computes the hash of an event from its fields and the previous hash.
#[allow(clippy::too_many_arguments)]
pub fn audit_hash(
    seq: u64,
    at_us: Micros,
    actor_subject: &str,
    actor_role: &str,
    action: &str,
    target: &str,
    detail: &str,
    prev_hash: Option<&[u8; 32]>,
) -> [u8; 32] {
    let prev = prev_hash.map(hex::encode).unwrap_or_default();
    let text = format!(
        "lucid-audit-v1|{seq}|{}|{actor_subject}|{actor_role}|{action}|{target}|{detail}|{prev}",
        rfc3339_us(at_us)
    );
    Sha256::digest(text.as_bytes()).into()
}

impl AuditEvent {
    pub fn expected_hash(&self) -> [u8; 32] {
        audit_hash(
            self.seq,
            self.at_us,
            &self.actor_subject,
            &self.actor_role,
            &self.action,
            &self.target,
            &self.detail,
            self.prev_hash.as_ref(),
        )
    }
}

/// Where a chain breaks.
#[derive(Debug, PartialEq, Eq)]
pub enum ChainError {
    BadHash { seq: u64 },
    BrokenLink { seq: u64 },
    Gap { expected: u64, found: u64 },
}

impl std::fmt::Display for ChainError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadHash { seq } => write!(f, "audit event {seq}: hash does not match its fields"),
            Self::BrokenLink { seq } => {
                write!(
                    f,
                    "audit event {seq}: prev_hash is not the previous event's hash"
                )
            }
            Self::Gap { expected, found } => {
                write!(f, "audit sequence jumps from {expected} to {found}")
            }
        }
    }
}

/// Incremental chain checker: feed events in sequence order.
#[derive(Default)]
pub struct ChainVerifier {
    last: Option<(u64, [u8; 32])>,
    pub checked: u64,
}

impl ChainVerifier {
    pub fn push(&mut self, event: &AuditEvent) -> Result<(), ChainError> {
        if let Some((seq, hash)) = self.last {
            if event.seq != seq + 1 {
                return Err(ChainError::Gap {
                    expected: seq + 1,
                    found: event.seq,
                });
            }
            if event.prev_hash != Some(hash) {
                return Err(ChainError::BrokenLink { seq: event.seq });
            }
        } else if event.prev_hash.is_some() && event.seq == 1 {
            return Err(ChainError::BrokenLink { seq: event.seq });
        }
        if event.expected_hash() != event.hash {
            return Err(ChainError::BadHash { seq: event.seq });
        }
        self.last = Some((event.seq, event.hash));
        self.checked += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<AuditEvent> {
        let mut prev = None;
        (1..=n)
            .map(|seq| {
                let detail = format!("{{\"i\":{seq}}}");
                let hash = audit_hash(
                    seq,
                    seq * 10,
                    "root",
                    "admin",
                    "node.create",
                    "node_x",
                    &detail,
                    prev.as_ref(),
                );
                let event = AuditEvent {
                    seq,
                    at_us: seq * 10,
                    actor_subject: "root".into(),
                    actor_role: "admin".into(),
                    action: "node.create".into(),
                    target: "node_x".into(),
                    detail,
                    prev_hash: prev,
                    hash,
                };
                prev = Some(hash);
                event
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let mut v = ChainVerifier::default();
        for e in chain(5) {
            v.push(&e).unwrap();
        }
        assert_eq!(v.checked, 5);
    }

    #[test]
    fn editing_an_event_breaks_the_chain() {
        let mut events = chain(3);
        events[1].target = "node_y".into();
        let mut v = ChainVerifier::default();
        v.push(&events[0]).unwrap();
        assert_eq!(v.push(&events[1]), Err(ChainError::BadHash { seq: 2 }));
    }

    #[test]
    fn removing_an_event_breaks_the_chain() {
        let events = chain(3);
        let mut v = ChainVerifier::default();
        v.push(&events[0]).unwrap();
        assert_eq!(
            v.push(&events[2]),
            Err(ChainError::Gap {
                expected: 2,
                found: 3
            })
        );
    }
}
