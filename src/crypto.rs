//! Keys and tokens.
//!
//! The service owns two Ed25519 keys in its state directory (mode 0600, created at first
//! start): one signs JWTs (EdDSA), one signs PoOT epoch roots. Node key pairs made by
//! `keygen` use the same file format: the 32-byte seed as standard base64 on one line.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::pkcs8::EncodePrivateKey;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// File names inside `DATA_DIR/keys/`.
pub const JWT_KEY_FILE: &str = "jwt_ed25519.key";
pub const PROOF_KEY_FILE: &str = "proof_ed25519.key";

/// Writes `contents` to `path` with mode 0600, atomically (temp file, fsync, rename), so a
/// crash never leaves a half-written key.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(contents)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads a signing key file (base64 of the 32-byte seed).
pub fn read_signing_key(path: &Path) -> Result<SigningKey, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read key file {}: {e}", path.display()))?;
    let seed = B64
        .decode(text.trim())
        .map_err(|_| format!("key file {} is not base64", path.display()))?;
    let seed: [u8; 32] = seed
        .as_slice()
        .try_into()
        .map_err(|_| format!("key file {} does not hold a 32-byte seed", path.display()))?;
    Ok(SigningKey::from_bytes(&seed))
}

/// A fresh random Ed25519 key.
pub fn generate_signing_key() -> SigningKey {
    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    SigningKey::from_bytes(&seed)
}

/// Writes a key pair: `path` (seed, 0600) and `path.pub` (public key, base64).
pub fn write_key_pair(path: &Path, key: &SigningKey) -> std::io::Result<PathBuf> {
    write_secret_file(path, format!("{}\n", B64.encode(key.to_bytes())).as_bytes())?;
    let pub_path = PathBuf::from(format!("{}.pub", path.display()));
    std::fs::write(
        &pub_path,
        format!("{}\n", B64.encode(key.verifying_key().to_bytes())),
    )?;
    Ok(pub_path)
}

fn load_or_create_key(path: &Path) -> Result<SigningKey, String> {
    if path.exists() {
        let mode = std::fs::metadata(path)
            .map_err(|e| e.to_string())?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777), "key file is readable by others; tightening to 0600");
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        return read_signing_key(path);
    }
    let key = generate_signing_key();
    write_secret_file(path, format!("{}\n", B64.encode(key.to_bytes())).as_bytes())
        .map_err(|e| format!("cannot write key file {}: {e}", path.display()))?;
    tracing::info!(path = %path.display(), "created service key");
    Ok(key)
}

/// Short identifier of a public key: the first 16 hex digits of its SHA-256.
pub fn key_id(public_key: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(public_key.as_bytes())[..8])
}

/// The service's own keys.
pub struct ServiceKeys {
    pub jwt: SigningKey,
    pub proof: SigningKey,
}

impl ServiceKeys {
    /// Loads the keys from `data_dir/keys`, creating any that are missing.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, String> {
        let dir = data_dir.join("keys");
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        Ok(Self {
            jwt: load_or_create_key(&dir.join(JWT_KEY_FILE))?,
            proof: load_or_create_key(&dir.join(PROOF_KEY_FILE))?,
        })
    }
}

/// Who a token speaks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Operator,
    Node,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Node => "node",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Role::Admin),
            "operator" => Some(Role::Operator),
            "node" => Some(Role::Node),
            _ => None,
        }
    }
}

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

/// The bytes a node signs to log in: `lucid-auth-v1:` followed by the nonce as sent.
pub fn login_message(nonce_b64: &str) -> Vec<u8> {
    format!("lucid-auth-v1:{nonce_b64}").into_bytes()
}

/// Verifies a base64 Ed25519 signature by `public_key` over `message`.
pub fn verify_signature(public_key: &[u8; 32], message: &[u8], signature_b64: &str) -> bool {
    let Ok(sig) = B64.decode(signature_b64.trim()) else {
        return false;
    };
    verify_signature_bytes(public_key, message, &sig)
}

/// Verifies raw Ed25519 signature bytes by `public_key` over `message`.
pub fn verify_signature_bytes(public_key: &[u8; 32], message: &[u8], signature: &[u8]) -> bool {
    let Ok(sig) = ed25519_dalek::Signature::from_slice(signature) else {
        return false;
    };
    let Ok(key) = VerifyingKey::from_bytes(public_key) else {
        return false;
    };
    key.verify_strict(message, &sig).is_ok()
}

/// One signature to check: Ed25519 by `public_key` over `message`.
#[derive(Clone, Copy)]
pub struct SignatureCheck<'a> {
    pub public_key: &'a [u8; 32],
    pub message: &'a [u8],
    pub signature: &'a [u8; 64],
}

impl SignatureCheck<'_> {
    /// The one-at-a-time check ([`verify_signature_bytes`], `verify_strict`).
    pub fn verify_one(&self) -> bool {
        verify_signature_bytes(self.public_key, self.message, self.signature)
    }
}

/// Messages with their signers' public keys and signatures, side by side, so that a batch
/// of [`SignatureCheck`]s can borrow them. For benches and tests (the verifier borrows its
/// checks from the queued requests instead); the fields are open so a case can tamper.
#[doc(hidden)]
#[derive(Debug, Clone, Default)]
pub struct SignedMessages {
    pub public_keys: Vec<[u8; 32]>,
    pub messages: Vec<Vec<u8>>,
    pub signatures: Vec<[u8; 64]>,
}

impl SignedMessages {
    /// Each message signed by its key.
    pub fn sign(signed: impl IntoIterator<Item = (SigningKey, Vec<u8>)>) -> Self {
        let mut out = Self::default();
        for (key, message) in signed {
            out.signatures.push(key.sign(&message).to_bytes());
            out.public_keys.push(key.verifying_key().to_bytes());
            out.messages.push(message);
        }
        out
    }

    /// One check per message, in order.
    pub fn checks(&self) -> Vec<SignatureCheck<'_>> {
        (0..self.messages.len())
            .map(|i| SignatureCheck {
                public_key: &self.public_keys[i],
                message: &self.messages[i],
                signature: &self.signatures[i],
            })
            .collect()
    }
}

/// Checks many signatures at once; `verdicts[i]` says whether `checks[i]` is good.
///
/// The signatures that can be batched are checked with one `ed25519_dalek::verify_batch`
/// (one multiscalar multiplication for all of them, about twice the rate of one at a
/// time); if that batch fails, each of its members is checked on its own, so a forged
/// signature is refused and the honest ones beside it still pass. Everything that
/// `verify_strict` treats specially goes straight to the one-at-a-time check and gets
/// exactly its answer: a public key or an `R` of small order, an `R` encoded
/// non-canonically (including `x = 0` with the sign bit set), a non-canonical `s`
/// (which makes the whole batch fail), points that do not decompress.
///
/// The one difference left from `verify_strict`: the batch equation is cofactorless with
/// random 128-bit weights, and a signature whose `R` or key carries a small-order
/// component, yet satisfies the equation up to that component, passes the batch with a
/// probability of 1/2 to 1/8 where `verify_strict` refuses it. Such a signature still
/// satisfies RFC 8032's cofactored check (§5.1.7) and can only be made with the key's
/// secret: an honest signer never produces one and nobody else can. Ruling it out would
/// cost a scalar multiplication per signature, as much as verifying it alone.
pub fn verify_signatures(checks: &[SignatureCheck<'_>]) -> Vec<bool> {
    if checks.len() < 2 {
        return checks.iter().map(SignatureCheck::verify_one).collect();
    }
    let mut verdicts = vec![false; checks.len()];
    let mut batched = Vec::with_capacity(checks.len());
    let mut messages: Vec<&[u8]> = Vec::with_capacity(checks.len());
    let mut signatures = Vec::with_capacity(checks.len());
    let mut keys = Vec::with_capacity(checks.len());
    for (i, check) in checks.iter().enumerate() {
        match batchable(check) {
            Some((key, signature)) => {
                batched.push(i);
                messages.push(check.message);
                signatures.push(signature);
                keys.push(key);
            }
            None => verdicts[i] = check.verify_one(),
        }
    }
    let all_good = match batched.len() {
        0 => return verdicts,
        1 => false,
        _ => ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok(),
    };
    for i in batched {
        verdicts[i] = all_good || checks[i].verify_one();
    }
    verdicts
}

/// The key and signature, when the batch equation decides this check exactly as
/// `verify_strict` would (see [`verify_signatures`]).
fn batchable(check: &SignatureCheck<'_>) -> Option<(VerifyingKey, ed25519_dalek::Signature)> {
    let key = VerifyingKey::from_bytes(check.public_key).ok()?;
    if key.is_weak() {
        return None;
    }
    let signature = ed25519_dalek::Signature::from_bytes(check.signature);
    let r = signature.r_bytes();
    if !is_canonical_y(r) || SMALL_ORDER_ENCODINGS.contains(r) {
        return None;
    }
    Some((key, signature))
}

/// Whether the y coordinate of a compressed Edwards point is below p = 2^255 - 19.
fn is_canonical_y(point: &[u8; 32]) -> bool {
    // y >= p only if bits 8..255 are all ones and the low byte is at least 0xed.
    !(point[31] & 0x7f == 0x7f && point[1..31].iter().all(|b| *b == 0xff) && point[0] >= 0xed)
}

/// Every encoding with a canonical y of a point of order 1, 2, 4 or 8: the eight points
/// in their canonical form, and the two (y = 1, y = -1, where x = 0) with the sign bit set.
const SMALL_ORDER_ENCODINGS: [[u8; 32]; 10] = {
    const fn hex32(s: &str) -> [u8; 32] {
        let b = s.as_bytes();
        let mut out = [0u8; 32];
        let mut i = 0;
        while i < 32 {
            out[i] = (nibble(b[2 * i]) << 4) | nibble(b[2 * i + 1]);
            i += 1;
        }
        out
    }
    const fn nibble(c: u8) -> u8 {
        match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => panic!("not hex"),
        }
    }
    [
        hex32("0100000000000000000000000000000000000000000000000000000000000000"),
        hex32("0100000000000000000000000000000000000000000000000000000000000080"),
        hex32("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
        hex32("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff"),
        hex32("0000000000000000000000000000000000000000000000000000000000000000"),
        hex32("0000000000000000000000000000000000000000000000000000000000000080"),
        hex32("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
        hex32("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85"),
        hex32("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
        hex32("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"),
    ]
};

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn login_signatures_verify_only_for_the_signed_nonce() {
        let key = generate_signing_key();
        let pk = key.verifying_key().to_bytes();
        let sig = B64.encode(key.sign(&login_message("abc")).to_bytes());
        assert!(verify_signature(&pk, &login_message("abc"), &sig));
        assert!(!verify_signature(&pk, &login_message("abd"), &sig));
        assert!(!verify_signature(&pk, &login_message("abc"), "!!"));
    }

    /// `n` honest signers, each signing its own heartbeat-like message.
    fn signed(n: usize) -> SignedMessages {
        SignedMessages::sign((0..n).map(|i| {
            let message = format!("lucid-hb-v1|node_{i}|{i}|t|0|0|0.1|1").into_bytes();
            (generate_signing_key(), message)
        }))
    }

    #[test]
    fn a_batch_of_honest_signatures_passes() {
        for n in [0, 1, 2, 3, 64] {
            assert_eq!(verify_signatures(&signed(n).checks()), vec![true; n]);
        }
    }

    #[test]
    fn a_forged_signature_fails_alone_in_its_batch() {
        let mut b = signed(16);
        b.messages[3].push(b'!'); // signed something else
        b.signatures[7][40] ^= 1; // a flipped bit in s
        b.signatures[9][0] ^= 1; // a flipped bit in R
        b.signatures[11][63] |= 0xf0; // s not reduced
        let verdicts = verify_signatures(&b.checks());
        for (i, ok) in verdicts.iter().enumerate() {
            assert_eq!(*ok, ![3, 7, 9, 11].contains(&i), "signature {i}");
        }
    }

    #[test]
    fn batch_verdicts_match_verify_strict_for_small_order_and_non_canonical_points() {
        let mut b = signed(4);
        let (k, m, s) = (&mut b.public_keys, &mut b.messages, &mut b.signatures);
        // The identity as key with the identity as R and s = 0 satisfies the cofactorless
        // equation for every message; verify_strict refuses it (weak key).
        let identity = SMALL_ORDER_ENCODINGS[0];
        k.push(identity);
        m.push(b"anything".to_vec());
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&identity);
        s.push(sig);
        // Every small-order R, and a non-canonical y, under an honest key.
        for r in SMALL_ORDER_ENCODINGS.iter().chain([&[0xff; 32]]) {
            k.push(k[0]);
            m.push(m[0].clone());
            let mut sig = s[0];
            sig[..32].copy_from_slice(r);
            s.push(sig);
        }
        let c = b.checks();
        let one_by_one: Vec<bool> = c.iter().map(SignatureCheck::verify_one).collect();
        assert_eq!(verify_signatures(&c), one_by_one);
        assert_eq!(one_by_one.iter().filter(|ok| **ok).count(), 4);
    }

    #[test]
    fn the_small_order_encodings_are_the_small_order_points() {
        let mut canonical = std::collections::HashSet::new();
        for bytes in SMALL_ORDER_ENCODINGS {
            let point = VerifyingKey::from_bytes(&bytes).expect("decompresses");
            assert!(point.is_weak(), "{}", hex::encode(bytes));
            assert!(is_canonical_y(&bytes));
            canonical.insert(point.to_edwards().compress().to_bytes());
        }
        // Eight distinct points: the whole torsion subgroup.
        assert_eq!(canonical.len(), 8);
        assert!(!is_canonical_y(&[0xff; 32]));
        let mut p_minus_1 = [0xff; 32];
        p_minus_1[0] = 0xec;
        p_minus_1[31] = 0x7f;
        assert!(is_canonical_y(&p_minus_1));
        p_minus_1[0] = 0xed;
        assert!(!is_canonical_y(&p_minus_1));
    }

    #[test]
    fn key_files_are_private_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ServiceKeys::load_or_create(dir.path()).unwrap();
        let again = ServiceKeys::load_or_create(dir.path()).unwrap();
        assert_eq!(keys.jwt.to_bytes(), again.jwt.to_bytes());
        assert_ne!(keys.jwt.to_bytes(), keys.proof.to_bytes());
        let mode = std::fs::metadata(dir.path().join("keys").join(JWT_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
