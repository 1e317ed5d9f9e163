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
