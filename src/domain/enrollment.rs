//! Enrolment codes: a one-time (or few-times) secret an operator hands to a new node so it
//! can register itself without an operator token. The code is shown once and stored only as
//! its SHA-256 hash; what the code grants (operator, pool, payout address, name) is stored
//! beside the hash.

use rand::rngs::OsRng;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clock::Micros;

/// Codes start with this, so a pasted code is recognisable (and greppable in leaks).
pub const CODE_PREFIX: &str = "lne_";
/// Random characters after the prefix: 28 of 36 symbols, about 144 bits.
const CODE_RANDOM_LEN: usize = 28;
const CODE_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

pub const DEFAULT_TTL_SECONDS: u64 = 3600;
/// Shortest and longest lifetime a code may be given.
pub const MIN_TTL_SECONDS: u64 = 1;
pub const MAX_TTL_SECONDS: u64 = 30 * 24 * 3600;
pub const DEFAULT_USES: u32 = 1;
/// The most nodes one code may register (a code for a whole rack, not an open door).
pub const MAX_USES: u32 = 1000;

/// A code as stored: what it grants, never the code itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrollment {
    pub enrollment_id: String,
    /// SHA-256 of the code's text.
    pub code_hash: [u8; 32],
    pub operator_id: String,
    pub name: Option<String>,
    pub pool_id: Option<String>,
    pub payout_address: Option<String>,
    pub created_at_us: Micros,
    pub expires_at_us: Micros,
    /// Uses granted at creation.
    pub uses: u32,
    /// Uses still open; the code is removed when it reaches zero.
    pub uses_left: u32,
}

impl Enrollment {
    pub fn is_open(&self, now_us: Micros) -> bool {
        self.uses_left > 0 && now_us < self.expires_at_us
    }
}

/// A fresh code from the operating system's generator.
pub fn new_code() -> String {
    let mut rng = OsRng;
    let mut code = String::with_capacity(CODE_PREFIX.len() + CODE_RANDOM_LEN);
    code.push_str(CODE_PREFIX);
    for _ in 0..CODE_RANDOM_LEN {
        code.push(CODE_ALPHABET[rng.gen_range(0..CODE_ALPHABET.len())] as char);
    }
    code
}

/// The stored form of a code. Surrounding whitespace (from copy and paste) is ignored.
pub fn code_hash(code: &str) -> [u8; 32] {
    Sha256::digest(code.trim().as_bytes()).into()
}

/// `ttl_seconds` as given, or the default; refused outside the bounds.
pub fn checked_ttl(ttl_seconds: Option<i64>) -> Result<u64, String> {
    match ttl_seconds {
        None => Ok(DEFAULT_TTL_SECONDS),
        Some(t) if (MIN_TTL_SECONDS as i64..=MAX_TTL_SECONDS as i64).contains(&t) => Ok(t as u64),
        Some(t) => Err(format!(
            "ttl_seconds must be between {MIN_TTL_SECONDS} and {MAX_TTL_SECONDS}, got {t}"
        )),
    }
}

/// `uses` as given, or the default; refused outside 1..=MAX_USES.
pub fn checked_uses(uses: Option<i64>) -> Result<u32, String> {
    match uses {
        None => Ok(DEFAULT_USES),
        Some(u) if (1..=MAX_USES as i64).contains(&u) => Ok(u as u32),
        Some(u) => Err(format!("uses must be between 1 and {MAX_USES}, got {u}")),
    }
}

/// `sha256:<lowercase hex>` of a certificate's DER bytes, the form clients pin.
pub fn certificate_fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_long_random_and_differ() {
        let a = new_code();
        let b = new_code();
        assert_ne!(a, b);
        assert!(a.starts_with(CODE_PREFIX));
        assert_eq!(a.len(), CODE_PREFIX.len() + CODE_RANDOM_LEN);
        // At least 128 bits of entropy.
        assert!((CODE_RANDOM_LEN as f64) * (CODE_ALPHABET.len() as f64).log2() >= 128.0);
        assert!(a[CODE_PREFIX.len()..]
            .bytes()
            .all(|c| CODE_ALPHABET.contains(&c)));
    }

    #[test]
    fn the_hash_ignores_pasted_whitespace_only() {
        assert_eq!(code_hash("lne_abc"), code_hash("  lne_abc\n"));
        assert_ne!(code_hash("lne_abc"), code_hash("lne_abd"));
    }

    #[test]
    fn ttl_and_uses_have_defaults_and_bounds() {
        assert_eq!(checked_ttl(None), Ok(3600));
        assert_eq!(checked_ttl(Some(1)), Ok(1));
        assert!(checked_ttl(Some(0)).is_err());
        assert!(checked_ttl(Some(-1)).is_err());
        assert!(checked_ttl(Some(MAX_TTL_SECONDS as i64 + 1)).is_err());
        assert_eq!(checked_uses(None), Ok(1));
        assert_eq!(checked_uses(Some(1000)), Ok(1000));
        assert!(checked_uses(Some(0)).is_err());
        assert!(checked_uses(Some(1001)).is_err());
    }

    #[test]
    fn an_enrollment_is_open_until_it_expires_or_is_used_up() {
        let e = Enrollment {
            enrollment_id: "enr_x".into(),
            code_hash: [0; 32],
            operator_id: "op".into(),
            name: None,
            pool_id: None,
            payout_address: None,
            created_at_us: 0,
            expires_at_us: 100,
            uses: 1,
            uses_left: 1,
        };
        assert!(e.is_open(99));
        assert!(!e.is_open(100));
        assert!(!Enrollment { uses_left: 0, ..e }.is_open(0));
    }

    #[test]
    fn fingerprints_are_prefixed_lowercase_sha256() {
        assert_eq!(
            certificate_fingerprint(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
