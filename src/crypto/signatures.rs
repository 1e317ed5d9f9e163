//! Ed25519 signature checks: one at a time, and many at once in a batch.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};

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
    use crate::crypto::keys::generate_signing_key;

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
}
