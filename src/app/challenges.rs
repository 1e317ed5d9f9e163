//! Node login challenges: single-use nonces a node signs to get a token.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::rngs::OsRng;
use rand::RngCore;

/// Login challenges. A nonce is self-validating: `expiry || random || HMAC(key, node_id,
/// expiry, random)`, with a key that lives only in this process. Nothing is stored per
/// challenge, so nobody can crowd a node's challenges out by asking for many; only nonces
/// that were answered are remembered, until they expire, to make them single-use. A
/// restart only means a node asks again.
pub struct Challenges {
    key: [u8; 32],
    used: Mutex<HashMap<String, u64>>,
}

impl Default for Challenges {
    fn default() -> Self {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        Self {
            key,
            used: Mutex::default(),
        }
    }
}

/// How long a nonce may be answered.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(60);

impl Challenges {
    fn mac(&self, node_id: &str, expiry: u64, random: &[u8]) -> [u8; 16] {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(b"lucid-challenge-v1|");
        mac.update(node_id.as_bytes());
        mac.update(&expiry.to_be_bytes());
        mac.update(random);
        let full = mac.finalize().into_bytes();
        full[..16].try_into().expect("32-byte MAC")
    }

    /// A fresh nonce for `node_id` and its expiry (seconds since the epoch).
    pub fn issue(&self, node_id: &str, now_secs: u64) -> (String, u64) {
        let expiry = now_secs + CHALLENGE_TTL.as_secs();
        let mut random = [0u8; 16];
        OsRng.fill_bytes(&mut random);
        let mut bytes = Vec::with_capacity(40);
        bytes.extend_from_slice(&expiry.to_be_bytes());
        bytes.extend_from_slice(&random);
        bytes.extend_from_slice(&self.mac(node_id, expiry, &random));
        (B64.encode(bytes), expiry)
    }

    /// Whether `nonce` was issued here for `node_id`, has not expired and was not used.
    pub fn is_valid(&self, node_id: &str, nonce: &str, now_secs: u64) -> bool {
        let Ok(bytes) = B64.decode(nonce) else {
            return false;
        };
        if bytes.len() != 40 {
            return false;
        }
        let expiry = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
        let expected = self.mac(node_id, expiry, &bytes[8..24]);
        let mac_ok = bytes[24..]
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        mac_ok && expiry > now_secs && !self.lock_used().contains_key(nonce)
    }

    /// Marks a nonce used; false if it already was (a concurrent replay).
    pub fn consume(&self, nonce: &str, now_secs: u64) -> bool {
        let mut used = self.lock_used();
        if used.len() > 10_000 {
            used.retain(|_, expiry| *expiry > now_secs);
        }
        used.insert(nonce.to_string(), now_secs + CHALLENGE_TTL.as_secs())
            .is_none()
    }

    fn lock_used(&self) -> std::sync::MutexGuard<'_, HashMap<String, u64>> {
        self.used.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_bound_to_their_node_and_single_use() {
        let c = Challenges::default();
        let (n, _) = c.issue("node_a", 1000);
        assert!(!c.is_valid("node_b", &n, 1000));
        assert!(c.is_valid("node_a", &n, 1000));
        assert!(c.consume(&n, 1000));
        assert!(!c.is_valid("node_a", &n, 1000));
        assert!(!c.consume(&n, 1000));
    }

    #[test]
    fn nonces_expire_and_cannot_be_forged() {
        let c = Challenges::default();
        let (n, expiry) = c.issue("node_a", 1000);
        assert_eq!(expiry, 1060);
        assert!(!c.is_valid("node_a", &n, 1060));
        let other = Challenges::default();
        let (foreign, _) = other.issue("node_a", 1000);
        assert!(!c.is_valid("node_a", &foreign, 1000));
        assert!(!c.is_valid("node_a", "garbage", 1000));
    }

    #[test]
    fn many_challenges_do_not_crowd_out_a_nodes_own() {
        let c = Challenges::default();
        let (mine, _) = c.issue("node_a", 1000);
        for _ in 0..10_000 {
            c.issue("node_a", 1000);
        }
        assert!(c.is_valid("node_a", &mine, 1000));
    }
}
