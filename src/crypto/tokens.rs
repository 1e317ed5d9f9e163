//! JWTs: issuing and verifying the service's bearer tokens.

use std::time::Duration;

use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::revocation::{IssuedAt, Revocation, Revocations, VERIFY_LEEWAY_SECONDS};
use crate::domain::role::Role;
use crate::error::ApiError;

/// JWT claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub iat: u64,
    /// The issue time in microseconds (wall clock): what a revocation of the subject is
    /// compared with, since `iat` has one-second resolution. Absent in tokens of older
    /// builds and of other issuers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat_us: Option<u64>,
    pub exp: u64,
    pub jti: String,
    pub iss: String,
    /// Node tokens only: the node's token generation when issued (see `Node`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gen: Option<u32>,
}

/// Issues and verifies tokens: EdDSA with the service key by default, HS256 with a shared
/// secret when `JWT_SECRET` is set. Verification accepts only the configured algorithm, so
/// a token cannot pick a weaker one (no `alg` confusion).
pub struct TokenService {
    algorithm: Algorithm,
    encoding: EncodingKey,
    decoding: DecodingKey,
    issuer: String,
    /// Tokens whose signature was already checked, by SHA-256 of the token text. A node
    /// sends the same token with every heartbeat over its keep-alive connection; checking
    /// the Ed25519 signature once instead of every time halves the crypto per heartbeat.
    /// Expiry is still checked on every use.
    verified: std::sync::Mutex<std::collections::HashMap<[u8; 32], Claims>>,
    /// The revocations in force, checked after every verification (cached or not), so a
    /// revocation takes effect on the next request.
    revocations: std::sync::RwLock<Revocations>,
    /// The last issue stamp handed out (µs): stamps strictly increase, so a revocation
    /// stamped after an issue covers it and one issued after the revocation never is.
    last_stamp_us: std::sync::atomic::AtomicU64,
}

/// A freshly signed token.
#[derive(Debug, Clone)]
pub struct Issued {
    pub token: String,
    pub jti: String,
    /// Seconds since the epoch.
    pub exp: u64,
}

/// Most remembered tokens; the cache is simply emptied when full.
const VERIFIED_CACHE_MAX: usize = 100_000;

impl TokenService {
    pub fn new(jwt_key: &SigningKey, shared_secret: Option<&str>, issuer: &str) -> Self {
        let (algorithm, encoding, decoding) = match shared_secret {
            Some(secret) => (
                Algorithm::HS256,
                EncodingKey::from_secret(secret.as_bytes()),
                DecodingKey::from_secret(secret.as_bytes()),
            ),
            None => {
                let der = jwt_key
                    .to_pkcs8_der()
                    .expect("an Ed25519 key always encodes as PKCS#8");
                (
                    Algorithm::EdDSA,
                    EncodingKey::from_ed_der(der.as_bytes()),
                    DecodingKey::from_ed_der(jwt_key.verifying_key().as_bytes()),
                )
            }
        };
        Self {
            algorithm,
            encoding,
            decoding,
            issuer: issuer.to_string(),
            verified: Default::default(),
            revocations: Default::default(),
            last_stamp_us: Default::default(),
        }
    }

    /// Now on the wall clock in microseconds, strictly after every stamp this service
    /// handed out before: for issuing tokens and for revoking them.
    pub fn stamp_us(&self) -> u64 {
        use std::sync::atomic::Ordering;
        let now = unix_now_us();
        let previous = self
            .last_stamp_us
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| {
                Some(now.max(last + 1))
            })
            .unwrap_or(0);
        now.max(previous + 1)
    }

    /// Replaces the revocations in force (at start, from the database). Issue stamps
    /// continue after the latest revocation, so a token issued now is never covered by a
    /// revocation made earlier, even if the wall clock was stepped back since.
    pub fn load_revocations(&self, entries: impl IntoIterator<Item = Revocation>) {
        let set = Revocations::from_entries(entries);
        if let Some(latest) = set.latest_revoked_at_us() {
            self.last_stamp_us
                .fetch_max(latest, std::sync::atomic::Ordering::SeqCst);
        }
        *self.revocations.write().unwrap_or_else(|p| p.into_inner()) = set;
    }

    /// Puts a (committed) revocation in force and forgets the expired ones.
    pub fn add_revocation(&self, entry: Revocation, now_us: u64) {
        let mut set = self.revocations.write().unwrap_or_else(|p| p.into_inner());
        set.insert(entry);
        set.prune(now_us);
    }

    /// A copy of the revocations in force (for listings).
    pub fn revocations(&self) -> Revocations {
        self.revocations
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Signs a token issued now (see [`Self::stamp_us`]).
    pub fn issue_now(
        &self,
        role: Role,
        subject: &str,
        ttl: Duration,
        generation: Option<u32>,
    ) -> Issued {
        let stamp = self.stamp_us();
        self.issue_at(role, subject, ttl, generation, stamp)
    }

    pub fn algorithm_name(&self) -> &'static str {
        match self.algorithm {
            Algorithm::HS256 => "HS256",
            _ => "EdDSA",
        }
    }

    /// Signs a token; returns it with its expiry (seconds since the epoch).
    pub fn issue(
        &self,
        role: Role,
        subject: &str,
        ttl: Duration,
        generation: Option<u32>,
        now_secs: u64,
    ) -> (String, u64) {
        let issued = self.issue_at(role, subject, ttl, generation, now_secs * 1_000_000);
        (issued.token, issued.exp)
    }

    /// Signs a token issued at `issued_at_us` (wall-clock microseconds).
    pub fn issue_at(
        &self,
        role: Role,
        subject: &str,
        ttl: Duration,
        generation: Option<u32>,
        issued_at_us: u64,
    ) -> Issued {
        let mut jti = [0u8; 16];
        OsRng.fill_bytes(&mut jti);
        let iat = issued_at_us / 1_000_000;
        let claims = Claims {
            sub: subject.to_string(),
            role,
            iat,
            iat_us: Some(issued_at_us),
            exp: iat + ttl.as_secs().max(1),
            jti: hex::encode(jti),
            iss: self.issuer.clone(),
            gen: generation,
        };
        let token = jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.encoding)
            .expect("signing with a valid key cannot fail");
        Issued {
            token,
            jti: claims.jti,
            exp: claims.exp,
        }
    }

    /// Verifies signature, algorithm, issuer, expiry and that the token is not revoked.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let claims = self.verify_signed(token)?;
        let revoked = self
            .revocations
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .covering(
                &claims.jti,
                &claims.sub,
                IssuedAt {
                    iat_secs: claims.iat,
                    iat_us: claims.iat_us.filter(|us| us / 1_000_000 == claims.iat),
                },
            )
            .is_some();
        if revoked {
            return Err(ApiError::unauthorized(
                "token-revoked",
                "the token has been revoked; ask an admin for a new one",
            ));
        }
        Ok(claims)
    }

    /// Signature, algorithm, issuer and expiry, through the cache of checked signatures.
    fn verify_signed(&self, token: &str) -> Result<Claims, ApiError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cached = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        if let Some(claims) = cached {
            if claims.exp + VERIFY_LEEWAY_SECONDS > unix_now_secs() {
                return Ok(claims);
            }
        }
        let claims = self.verify_uncached(token)?;
        let mut cache = self.verified.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= VERIFIED_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, claims.clone());
        Ok(claims)
    }

    fn verify_uncached(&self, token: &str) -> Result<Claims, ApiError> {
        let mut validation = Validation::new(self.algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "sub"]);
        validation.leeway = VERIFY_LEEWAY_SECONDS;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    ApiError::unauthorized("token-expired", "the token has expired")
                }
                _ => {
                    ApiError::unauthorized("invalid-token", format!("the token is not valid: {e}"))
                }
            })
    }
}

/// Microseconds since the epoch on the wall clock (see [`unix_now_secs`]).
pub fn unix_now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Seconds since the epoch on the wall clock. Token lifetimes are judged against the wall
/// clock (by this service and by every other Lucid service that reads its tokens), so they
/// are issued against it too, not against the service's monotonic clock.
pub fn unix_now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::generate_signing_key;

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    #[test]
    fn eddsa_tokens_roundtrip_and_carry_claims() {
        let svc = TokenService::new(&generate_signing_key(), None, "lucid");
        let (token, exp) = svc.issue(
            Role::Node,
            "node_a",
            Duration::from_secs(60),
            Some(3),
            now(),
        );
        let claims = svc.verify(&token).unwrap();
        assert_eq!(claims.sub, "node_a");
        assert_eq!(claims.role, Role::Node);
        assert_eq!(claims.gen, Some(3));
        assert_eq!(claims.exp, exp);
    }

    #[test]
    fn tokens_from_another_key_or_algorithm_are_refused() {
        let ours = TokenService::new(&generate_signing_key(), None, "lucid");
        let theirs = TokenService::new(&generate_signing_key(), None, "lucid");
        let hs = TokenService::new(&generate_signing_key(), Some(&"s".repeat(32)), "lucid");
        let (t1, _) = theirs.issue(Role::Admin, "x", Duration::from_secs(60), None, now());
        let (t2, _) = hs.issue(Role::Admin, "x", Duration::from_secs(60), None, now());
        assert_eq!(ours.verify(&t1).unwrap_err().kind, "invalid-token");
        assert_eq!(ours.verify(&t2).unwrap_err().kind, "invalid-token");
        assert!(hs.verify(&t2).is_ok());
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let svc = TokenService::new(&generate_signing_key(), None, "lucid");
        let (token, _) = svc.issue(Role::Admin, "x", Duration::from_secs(1), None, now() - 10);
        // Planted as if verified earlier: expiry is checked on every use all the same.
        let claims = Claims {
            sub: "x".into(),
            role: Role::Admin,
            iat: now() - 10,
            iat_us: None,
            exp: now() - 9,
            jti: "j".into(),
            iss: "lucid".into(),
            gen: None,
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        svc.verified.lock().unwrap().insert(key, claims);
        assert_eq!(svc.verify(&token).unwrap_err().kind, "token-expired");
    }

    #[test]
    fn a_forged_token_is_not_accepted_through_the_cache() {
        let svc = TokenService::new(&generate_signing_key(), None, "lucid");
        let (token, _) = svc.issue(Role::Operator, "op", Duration::from_secs(60), None, now());
        assert!(svc.verify(&token).is_ok());
        assert!(
            svc.verify(&token).is_ok(),
            "second use comes from the cache"
        );
        let mut forged = token.clone();
        let last = forged.pop().unwrap();
        forged.push(if last == 'A' { 'B' } else { 'A' });
        assert!(svc.verify(&forged).is_err());
    }

    #[test]
    fn a_revocation_refuses_a_remembered_token_at_once() {
        use crate::domain::revocation::{RevocationTarget, MAX_TOKEN_TTL_SECONDS};
        let svc = TokenService::new(&generate_signing_key(), None, "lucid");
        let first = svc.issue_now(Role::Operator, "op", Duration::from_secs(60), None);
        let other = svc.issue_now(Role::Operator, "op", Duration::from_secs(60), None);
        assert!(
            svc.verify(&first.token).is_ok(),
            "now remembered in the cache"
        );
        let entry = Revocation::new(
            RevocationTarget::Jti(first.jti.clone()),
            svc.stamp_us(),
            Some(first.exp),
            MAX_TOKEN_TTL_SECONDS,
        );
        svc.add_revocation(entry, unix_now_us());
        assert_eq!(svc.verify(&first.token).unwrap_err().kind, "token-revoked");
        assert!(svc.verify(&other.token).is_ok());
    }

    #[test]
    fn a_subject_revocation_spares_tokens_stamped_after_it() {
        use crate::domain::revocation::{RevocationTarget, MAX_TOKEN_TTL_SECONDS};
        let svc = TokenService::new(&generate_signing_key(), None, "lucid");
        let before = svc.issue_now(Role::Admin, "a", Duration::from_secs(60), None);
        let revoked_at = svc.stamp_us();
        svc.add_revocation(
            Revocation::new(
                RevocationTarget::Subject("a".into()),
                revoked_at,
                None,
                MAX_TOKEN_TTL_SECONDS,
            ),
            unix_now_us(),
        );
        let after = svc.issue_now(Role::Admin, "a", Duration::from_secs(60), None);
        assert_eq!(svc.verify(&before.token).unwrap_err().kind, "token-revoked");
        assert!(svc.verify(&after.token).is_ok());
    }

    #[test]
    fn after_a_restart_tokens_are_stamped_after_every_loaded_revocation() {
        use crate::domain::revocation::{RevocationTarget, MAX_TOKEN_TTL_SECONDS};
        let svc = TokenService::new(&generate_signing_key(), None, "lucid");
        // Revoked while the wall clock read an hour later than it does now (then stepped back).
        let revoked_at = unix_now_us() + 3_600_000_000;
        svc.load_revocations([Revocation::new(
            RevocationTarget::Subject("a".into()),
            revoked_at,
            None,
            MAX_TOKEN_TTL_SECONDS,
        )]);
        let issued = svc.issue_now(Role::Admin, "a", Duration::from_secs(60), None);
        assert!(svc.stamp_us() > revoked_at);
        assert!(svc.verify(&issued.token).is_ok());
    }

    #[test]
    fn stamps_strictly_increase() {
        let svc = TokenService::new(&generate_signing_key(), None, "lucid");
        let stamps: Vec<u64> = (0..1000).map(|_| svc.stamp_us()).collect();
        assert!(stamps.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn expired_tokens_say_so() {
        let svc = TokenService::new(&generate_signing_key(), None, "lucid");
        let (token, _) = svc.issue(Role::Admin, "x", Duration::from_secs(1), None, now() - 3600);
        assert_eq!(svc.verify(&token).unwrap_err().kind, "token-expired");
    }

    #[test]
    fn wrong_issuer_is_refused() {
        let key = generate_signing_key();
        let a = TokenService::new(&key, None, "a");
        let b = TokenService::new(&key, None, "b");
        let (token, _) = a.issue(Role::Admin, "x", Duration::from_secs(60), None, now());
        assert!(b.verify(&token).is_err());
    }
}
