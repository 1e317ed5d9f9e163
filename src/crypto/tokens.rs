//! JWTs: issuing and verifying the service's bearer tokens.

use std::time::Duration;

use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::role::Role;
use crate::error::ApiError;

/// JWT claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    pub iat: u64,
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
        }
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
        let mut jti = [0u8; 16];
        OsRng.fill_bytes(&mut jti);
        let claims = Claims {
            sub: subject.to_string(),
            role,
            iat: now_secs,
            exp: now_secs + ttl.as_secs().max(1),
            jti: hex::encode(jti),
            iss: self.issuer.clone(),
            gen: generation,
        };
        let token = jsonwebtoken::encode(&Header::new(self.algorithm), &claims, &self.encoding)
            .expect("signing with a valid key cannot fail");
        (token, claims.exp)
    }

    /// Verifies signature, algorithm, issuer and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, ApiError> {
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let cached = self
            .verified
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned();
        if let Some(claims) = cached {
            if claims.exp + 5 > unix_now_secs() {
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
        validation.leeway = 5;
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
