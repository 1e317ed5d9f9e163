//! Heartbeats: the canonical bytes a node signs.

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

/// The Merkle leaf data of an accepted heartbeat: its canonical bytes followed by the 64
/// signature bytes.
pub fn leaf_data(canonical: &str, signature: &[u8; 64]) -> Vec<u8> {
    let mut data = Vec::with_capacity(canonical.len() + 64);
    data.extend_from_slice(canonical.as_bytes());
    data.extend_from_slice(signature);
    data
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
