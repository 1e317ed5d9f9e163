//! Heartbeats: the canonical bytes a node signs.

use serde::{Deserialize, Serialize};

/// An accepted heartbeat as stored (keyed by receive time and node).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredHeartbeat {
    pub seq: u64,
    /// The canonical bytes the node signed.
    pub canonical: String,
    pub signature: Vec<u8>,
    pub sessions_active: u64,
    pub bytes_relayed: u64,
    pub cpu_load: f64,
    pub mem_used_mb: u64,
}

impl StoredHeartbeat {
    /// Merkle leaf data: canonical bytes followed by the 64 signature bytes.
    pub fn leaf_data(&self) -> Vec<u8> {
        let mut data = Vec::with_capacity(self.canonical.len() + self.signature.len());
        data.extend_from_slice(self.canonical.as_bytes());
        data.extend_from_slice(&self.signature);
        data
    }
}

/// `lucid-hb-v1|{node_id}|{seq}|{sent_at}|{sessions_active}|{bytes_relayed}|{cpu_load}|{mem_used_mb}`
/// with every number exactly as the node sent it in its JSON.
#[allow(clippy::too_many_arguments)]
pub fn canonical_bytes(
    node_id: &str,
    seq: &str,
    sent_at: &str,
    sessions_active: &str,
    bytes_relayed: &str,
    cpu_load: &str,
    mem_used_mb: &str,
) -> String {
    format!(
        "lucid-hb-v1|{node_id}|{seq}|{sent_at}|{sessions_active}|{bytes_relayed}|{cpu_load}|{mem_used_mb}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_form_matches_the_contract() {
        assert_eq!(
            canonical_bytes(
                "node_a",
                "42",
                "2026-01-01T00:00:00Z",
                "3",
                "123456",
                "0.35",
                "412"
            ),
            "lucid-hb-v1|node_a|42|2026-01-01T00:00:00Z|3|123456|0.35|412"
        );
    }
}
