//! PoOT proofs: what is stored, what is published, and how anyone checks one offline with
//! nothing but the proof public key (API.md, "PoOT").

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::merkle::{format_path, leaf_hash, parse_hash, parse_path, root_from_path, Hash, Side};
use super::money::format_usdt;
use super::timefmt::rfc3339_us;
use crate::clock::Micros;

/// A node's proof for one epoch, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    pub node_id: String,
    pub epoch: u64,
    pub window_start_us: Micros,
    pub window_end_us: Micros,
    pub operational_seconds: u64,
    pub heartbeat_count: u64,
    pub heartbeats_root: Hash,
    pub credits_usdt: Decimal,
    pub prev_proof_hash: Option<Hash>,
    pub proof_hash: Hash,
    /// Siblings from leaf to epoch root; `true` = the sibling is on the left.
    pub inclusion_path: Vec<(bool, Hash)>,
}

/// One closed epoch: the Merkle root over its proofs, signed with the proof key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Epoch {
    pub epoch: u64,
    pub root: Hash,
    pub signature: Vec<u8>,
    pub key_id: String,
    pub proof_count: u64,
    pub closed_at_us: Micros,
    /// The parameters the epoch was closed with, so it can be recomputed exactly later
    /// even after the configuration changed.
    pub length_us: Micros,
    pub timeout_us: Micros,
    pub reward_per_hour: Decimal,
}

/// `H("lucid-proof-v1|{node_id}|{epoch}|{window_start}|{window_end}|{operational_seconds}|{heartbeat_count}|{heartbeats_root}|{credits_usdt}|{prev_proof_hash}")`
#[allow(clippy::too_many_arguments)]
pub fn proof_hash(
    node_id: &str,
    epoch: u64,
    window_start: &str,
    window_end: &str,
    operational_seconds: u64,
    heartbeat_count: u64,
    heartbeats_root: &str,
    credits_usdt: &str,
    prev_proof_hash: Option<&str>,
) -> Hash {
    let text = format!(
        "lucid-proof-v1|{node_id}|{epoch}|{window_start}|{window_end}|{operational_seconds}|{heartbeat_count}|{heartbeats_root}|{credits_usdt}|{}",
        prev_proof_hash.unwrap_or("")
    );
    Sha256::digest(text.as_bytes()).into()
}

/// The bytes the proof key signs for an epoch.
pub fn epoch_message(epoch: u64, root: &Hash) -> String {
    format!("lucid-epoch-v1|{epoch}|{}", hex::encode(root))
}

pub fn sign_epoch(key: &SigningKey, epoch: u64, root: &Hash) -> Vec<u8> {
    key.sign(epoch_message(epoch, root).as_bytes())
        .to_bytes()
        .to_vec()
}

/// The uptime share of the window in percent with two decimals (informational).
pub fn score(operational_seconds: u64, window_seconds: u64) -> String {
    if window_seconds == 0 {
        return "0.00".into();
    }
    let mut s =
        (Decimal::from(operational_seconds) * Decimal::from(100)) / Decimal::from(window_seconds);
    s = s.round_dp(2);
    s.rescale(2);
    s.to_string()
}

impl Proof {
    /// Builds the proof hash from the fields (as the published strings).
    #[allow(clippy::too_many_arguments)]
    pub fn compute_hash(
        node_id: &str,
        epoch: u64,
        window_start_us: Micros,
        window_end_us: Micros,
        operational_seconds: u64,
        heartbeat_count: u64,
        heartbeats_root: &Hash,
        credits_usdt: Decimal,
        prev_proof_hash: Option<&Hash>,
    ) -> Hash {
        proof_hash(
            node_id,
            epoch,
            &rfc3339_us(window_start_us),
            &rfc3339_us(window_end_us),
            operational_seconds,
            heartbeat_count,
            &hex::encode(heartbeats_root),
            &format_usdt(credits_usdt),
            prev_proof_hash.map(hex::encode).as_deref(),
        )
    }

    /// The published form, with the epoch's root and signature.
    pub fn document(&self, epoch: &Epoch) -> ProofDocument {
        let path: Vec<(Side, Hash)> = self
            .inclusion_path
            .iter()
            .map(|(left, h)| (if *left { Side::Left } else { Side::Right }, *h))
            .collect();
        ProofDocument {
            node_id: self.node_id.clone(),
            epoch: self.epoch,
            window_start: rfc3339_us(self.window_start_us),
            window_end: rfc3339_us(self.window_end_us),
            operational_seconds: self.operational_seconds,
            heartbeat_count: self.heartbeat_count,
            heartbeats_root: hex::encode(self.heartbeats_root),
            credits_usdt: format_usdt(self.credits_usdt),
            score: score(
                self.operational_seconds,
                (self.window_end_us - self.window_start_us) / 1_000_000,
            ),
            prev_proof_hash: self.prev_proof_hash.map(hex::encode),
            proof_hash: hex::encode(self.proof_hash),
            epoch_root: hex::encode(epoch.root),
            inclusion_path: format_path(&path),
            epoch_signature: B64.encode(&epoch.signature),
            key_id: epoch.key_id.clone(),
        }
    }
}

/// A proof as published by the API and read by `verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ProofDocument {
    pub node_id: String,
    pub epoch: u64,
    pub window_start: String,
    pub window_end: String,
    pub operational_seconds: u64,
    pub heartbeat_count: u64,
    pub heartbeats_root: String,
    pub credits_usdt: String,
    pub score: String,
    pub prev_proof_hash: Option<String>,
    pub proof_hash: String,
    pub epoch_root: String,
    pub inclusion_path: Vec<String>,
    pub epoch_signature: String,
    pub key_id: String,
}

/// Checks one published proof: its hash from its fields, its inclusion path to the epoch
/// root, and the epoch signature with `public_key`.
pub fn verify_document(doc: &ProofDocument, public_key: &VerifyingKey) -> Result<(), String> {
    let computed = proof_hash(
        &doc.node_id,
        doc.epoch,
        &doc.window_start,
        &doc.window_end,
        doc.operational_seconds,
        doc.heartbeat_count,
        &doc.heartbeats_root,
        &doc.credits_usdt,
        doc.prev_proof_hash.as_deref(),
    );
    let claimed = parse_hash(&doc.proof_hash).map_err(|e| format!("proof_hash: {e}"))?;
    if computed != claimed {
        return Err(format!(
            "proof_hash does not match the proof's fields (computed {})",
            hex::encode(computed)
        ));
    }
    let root = parse_hash(&doc.epoch_root).map_err(|e| format!("epoch_root: {e}"))?;
    let path = parse_path(&doc.inclusion_path)?;
    if root_from_path(leaf_hash(&claimed), &path) != root {
        return Err("inclusion_path does not lead from the proof to epoch_root".into());
    }
    let sig = B64
        .decode(&doc.epoch_signature)
        .ok()
        .and_then(|b| Signature::from_slice(&b).ok())
        .ok_or("epoch_signature is not a base64 Ed25519 signature")?;
    public_key
        .verify_strict(epoch_message(doc.epoch, &root).as_bytes(), &sig)
        .map_err(|_| "epoch_signature does not verify with the given public key".to_string())
}

/// Checks that consecutive proofs of one node are chained: each `prev_proof_hash` is the
/// previous proof's `proof_hash` (proofs in ascending epoch order).
pub fn verify_chain(docs: &[ProofDocument]) -> Result<(), String> {
    for pair in docs.windows(2) {
        let (prev, next) = (&pair[0], &pair[1]);
        if prev.node_id != next.node_id {
            return Err(format!(
                "proofs of different nodes ({} and {}) cannot form a chain",
                prev.node_id, next.node_id
            ));
        }
        if next.epoch <= prev.epoch {
            return Err(format!(
                "epochs are not ascending ({} then {})",
                prev.epoch, next.epoch
            ));
        }
        if next.prev_proof_hash.as_deref() != Some(prev.proof_hash.as_str()) {
            return Err(format!(
                "the proof of epoch {} does not link to the proof of epoch {}",
                next.epoch, prev.epoch
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::merkle::root_and_paths;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[9; 32])
    }

    /// An epoch with three proofs, the middle one returned as a document.
    fn sample() -> (ProofDocument, VerifyingKey) {
        let mut proofs: Vec<Proof> = ["node_a", "node_b", "node_c"]
            .iter()
            .map(|id| {
                let hb_root = leaf_hash(id.as_bytes());
                let credits = Decimal::new(4166, 6);
                let hash = Proof::compute_hash(
                    id,
                    7,
                    2_100_000_000,
                    2_400_000_000,
                    300,
                    10,
                    &hb_root,
                    credits,
                    None,
                );
                Proof {
                    node_id: id.to_string(),
                    epoch: 7,
                    window_start_us: 2_100_000_000,
                    window_end_us: 2_400_000_000,
                    operational_seconds: 300,
                    heartbeat_count: 10,
                    heartbeats_root: hb_root,
                    credits_usdt: credits,
                    prev_proof_hash: None,
                    proof_hash: hash,
                    inclusion_path: vec![],
                }
            })
            .collect();
        let leaves: Vec<Hash> = proofs.iter().map(|p| leaf_hash(&p.proof_hash)).collect();
        let (root, paths) = root_and_paths(&leaves);
        for (p, path) in proofs.iter_mut().zip(paths) {
            p.inclusion_path = path
                .into_iter()
                .map(|(s, h)| (s == Side::Left, h))
                .collect();
        }
        let epoch = Epoch {
            epoch: 7,
            root,
            signature: sign_epoch(&key(), 7, &root),
            key_id: "k".into(),
            proof_count: 3,
            closed_at_us: 0,
            length_us: 300_000_000,
            timeout_us: 90_000_000,
            reward_per_hour: Decimal::new(5, 2),
        };
        (proofs[1].document(&epoch), key().verifying_key())
    }

    #[test]
    fn a_published_proof_verifies() {
        let (doc, pk) = sample();
        assert_eq!(doc.score, "100.00");
        verify_document(&doc, &pk).unwrap();
    }

    #[test]
    fn tampering_with_any_field_is_detected() {
        let (doc, pk) = sample();
        type Tamper = Box<dyn Fn(&mut ProofDocument)>;
        let tampered: Vec<(&str, Tamper)> = vec![
            ("seconds", Box::new(|d| d.operational_seconds += 1)),
            ("count", Box::new(|d| d.heartbeat_count -= 1)),
            ("credits", Box::new(|d| d.credits_usdt = "0.004167".into())),
            ("node", Box::new(|d| d.node_id = "node_x".into())),
            (
                "window",
                Box::new(|d| d.window_end = d.window_start.clone()),
            ),
            (
                "heartbeats",
                Box::new(|d| d.heartbeats_root = hex::encode([0u8; 32])),
            ),
            (
                "prev",
                Box::new(|d| d.prev_proof_hash = Some(hex::encode([1u8; 32]))),
            ),
            ("path", Box::new(|d| d.inclusion_path.reverse())),
            (
                "path side",
                Box::new(|d| {
                    d.inclusion_path[0] = d.inclusion_path[0]
                        .replacen('R', "L", 1)
                        .replacen("L:", "R:", 0)
                }),
            ),
            ("epoch", Box::new(|d| d.epoch += 1)),
            ("root", Box::new(|d| d.epoch_root = hex::encode([2u8; 32]))),
            (
                "signature",
                Box::new(|d| d.epoch_signature = B64.encode([0u8; 64])),
            ),
        ];
        for (what, change) in tampered {
            let mut d = doc.clone();
            change(&mut d);
            if d == doc {
                continue;
            }
            assert!(
                verify_document(&d, &pk).is_err(),
                "tampered {what} still verifies"
            );
        }
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        assert!(verify_document(&doc, &other).is_err());
    }

    #[test]
    fn scores_have_two_decimals() {
        assert_eq!(score(287, 300), "95.67");
        assert_eq!(score(0, 300), "0.00");
        assert_eq!(score(300, 300), "100.00");
    }
}
