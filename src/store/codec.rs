//! Value encoding: bincode (standard config) over serde. A value that does not decode is
//! reported as a storage failure, never a panic.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::StoreError;

pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    bincode::serde::encode_to_vec(value, bincode::config::standard())
        .expect("in-memory values always encode")
}

pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StoreError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard())
        .map(|(v, _)| v)
        .map_err(|e| {
            tracing::error!(error = %e, "stored value does not decode");
            StoreError::corrupt(format!("stored value does not decode: {e}"))
        })
}

/// A heartbeat row: the compact form (see `domain::heartbeat::compact`) whenever it
/// rebuilds the signed bytes exactly, else the full bincode form. Both decode.
pub fn encode_heartbeat(
    node_id: &str,
    received_us: u64,
    hb: &crate::domain::heartbeat::StoredHeartbeat,
) -> Vec<u8> {
    crate::domain::heartbeat::compact::encode(node_id, received_us, hb)
        .unwrap_or_else(|| encode(hb))
}

/// The heartbeat of `node_id` received at `received_us` (the row's key), stored as
/// `bytes`, in either form.
pub fn decode_heartbeat(
    node_id: &str,
    received_us: u64,
    bytes: &[u8],
) -> Result<crate::domain::heartbeat::StoredHeartbeat, StoreError> {
    use crate::domain::heartbeat::compact;
    if bytes.first() == Some(&compact::TAG) {
        compact::decode(node_id, received_us, bytes).ok_or_else(|| {
            tracing::error!(node_id, "stored heartbeat does not decode");
            StoreError::corrupt("a stored heartbeat does not decode")
        })
    } else {
        decode(bytes)
    }
}
