//! An audit event as the API and the mirror show it.

use serde::Serialize;

use crate::domain::audit::AuditEvent;
use crate::domain::timefmt::rfc3339_us;

#[derive(Serialize, utoipa::ToSchema)]
pub struct ActorView {
    pub subject: String,
    pub role: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditEventView {
    pub seq: u64,
    pub at: String,
    pub actor: ActorView,
    pub action: String,
    pub target: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    /// Lowercase hex; null for the first event.
    pub prev_hash: Option<String>,
    /// `SHA-256("lucid-audit-v1|{seq}|{at}|{subject}|{role}|{action}|{target}|{detail}|{prev_hash}")`
    /// with `detail` as compact JSON (`detail_json`) and an absent prev_hash empty.
    pub hash: String,
    /// The exact detail text the hash covers.
    pub detail_json: String,
}

impl From<AuditEvent> for AuditEventView {
    fn from(e: AuditEvent) -> Self {
        Self {
            seq: e.seq,
            at: rfc3339_us(e.at_us),
            actor: ActorView {
                subject: e.actor_subject,
                role: e.actor_role,
            },
            action: e.action,
            target: e.target,
            detail: serde_json::from_str(&e.detail).unwrap_or(serde_json::Value::Null),
            prev_hash: e.prev_hash.map(hex::encode),
            hash: hex::encode(e.hash),
            detail_json: e.detail,
        }
    }
}
