//! A node as the API and the mirror show it.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Serialize;

use crate::domain::money::format_usdt;
use crate::domain::node::{Node, NodeStatus};
use crate::domain::timefmt::rfc3339_us;

/// A node as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct NodeView {
    pub node_id: String,
    pub name: String,
    pub operator_id: String,
    /// Standard base64 of the 32-byte Ed25519 public key.
    pub public_key: String,
    pub payout_address: Option<String>,
    pub region: Option<String>,
    pub pool_id: Option<String>,
    pub status: NodeStatus,
    pub registered_at: String,
    pub last_heartbeat_at: Option<String>,
    /// Decimal string, six places.
    pub balance_usdt: String,
    pub operational_seconds_total: u64,
}

impl From<&Node> for NodeView {
    fn from(n: &Node) -> Self {
        Self {
            node_id: n.node_id.clone(),
            name: n.name.clone(),
            operator_id: n.operator_id.clone(),
            public_key: B64.encode(n.public_key),
            payout_address: n.payout_address.clone(),
            region: n.region.clone(),
            pool_id: n.pool_id.clone(),
            status: n.status,
            registered_at: rfc3339_us(n.registered_at_us),
            last_heartbeat_at: n.last_heartbeat_at_us.map(rfc3339_us),
            balance_usdt: format_usdt(n.balance_usdt),
            operational_seconds_total: n.operational_seconds_total,
        }
    }
}
