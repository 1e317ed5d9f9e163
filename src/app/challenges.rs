//! Node login challenges: single-use nonces a node signs to get a token.

use std::collections::{BTreeSet, HashSet};
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
    used: Mutex<UsedNonces>,
}

/// Answered nonces until they expire: a set to look them up and the same nonces ordered by
/// expiry, so pruning takes only the expired ones from the front (never a whole scan).
#[derive(Debug, Default)]
struct UsedNonces {
    nonces: HashSet<String>,
    by_expiry: BTreeSet<(u64, String)>,
}

impl UsedNonces {
    fn contains(&self, nonce: &str) -> bool {
        self.nonces.contains(nonce)
    }

    /// Drops every nonce expired at `now_secs`.
    fn prune(&mut self, now_secs: u64) {
        while let Some((expiry, _)) = self.by_expiry.first() {
            if *expiry > now_secs {
                break;
            }
            let (_, nonce) = self.by_expiry.pop_first().expect("a first entry");
            self.nonces.remove(&nonce);
        }
    }

    /// False if it was there already.
    fn insert(&mut self, nonce: &str, expiry: u64) -> bool {
        if !self.nonces.insert(nonce.to_string()) {
            return false;
        }
        self.by_expiry.insert((expiry, nonce.to_string()));
        true
    }

    fn len(&self) -> usize {
        self.nonces.len()
    }
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
        mac_ok && expiry > now_secs && !self.lock_used().contains(nonce)
    }

    /// Marks a nonce used; false if it already was (a concurrent replay). Expired nonces
    /// are dropped first, in expiry order: an expired nonce is refused by its own expiry.
    pub fn consume(&self, nonce: &str, now_secs: u64) -> bool {
        let mut used = self.lock_used();
        used.prune(now_secs);
        used.insert(nonce, now_secs + CHALLENGE_TTL.as_secs())
    }

    /// How many answered nonces are remembered.
    pub fn used_len(&self) -> usize {
        self.lock_used().len()
    }

    fn lock_used(&self) -> std::sync::MutexGuard<'_, UsedNonces> {
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
    fn used_nonces_are_forgotten_in_expiry_order_once_expired() {
        let c = Challenges::default();
        let (first, _) = c.issue("node_a", 1000);
        assert!(c.consume(&first, 1000)); // remembered until 1060
        let mut later = Vec::new();
        for i in 0..100 {
            let (n, _) = c.issue("node_a", 1030);
            assert!(c.consume(&n, 1030 + i % 2)); // until 1090 / 1091
            later.push(n);
        }
        assert_eq!(c.used_len(), 101);
        // Still within the first one's life: nothing goes, a replay is still caught.
        assert!(!c.consume(&first, 1059));
        assert_eq!(c.used_len(), 101);
        // The first has expired: only it goes.
        let (n, _) = c.issue("node_a", 1060);
        assert!(c.consume(&n, 1060));
        assert_eq!(c.used_len(), 101);
        assert!(!c.consume(&later[0], 1060));
        // All the later ones expired too; the one used at 1060 stays until 1120.
        let (n, _) = c.issue("node_a", 1091);
        assert!(c.consume(&n, 1091));
        assert_eq!(c.used_len(), 2);
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
