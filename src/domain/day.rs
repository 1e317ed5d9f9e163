//! Daily roll-ups (issue 15): past `PROOF_RETENTION`, a node's proofs of one UTC day are
//! replaced by one daily record (its operational time, heartbeats and credits, the first
//! and last proof hash of the day, and the hash of the node's previous daily record), and
//! each day gets a Merkle root over every node's daily record, signed with the proof key.
//! A node's daily records chain to each other and to its proofs: the first proof of a day
//! links (`prev_proof_hash`) to the last proof hash of its previous daily record.
//!
//! Canonical forms (hex lowercase, `|` joins fields as text, an absent value is empty):
//! - `day_hash` = `H("lucid-day-v1|{node_id}|{day}|{first_epoch}|{last_epoch}|{epochs}|{operational_seconds}|{heartbeat_count}|{credits_usdt}|{first_proof_hash}|{last_proof_hash}|{prev_day_hash}")`
//!   with `day` as `YYYY-MM-DD`;
//! - `day_root`: RFC 6962 tree over the day's records sorted by `node_id`, each leaf's
//!   data the 32 bytes of its `day_hash`;
//! - `day_signature` = Ed25519 by the proof key over `lucid-day-root-v1|{day}|{day_root}`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::ledger::DAY_US;
use super::merkle::{format_path, leaf_hash, parse_hash, parse_path, root_from_path, Hash, Side};
use super::money::format_usdt;
use super::proof::Proof;
use super::timefmt::rfc3339_us;
use crate::clock::Micros;

/// `YYYY-MM-DD` of a UTC day number.
pub fn date(day: u32) -> String {
    rfc3339_us(u64::from(day) * DAY_US)[..10].to_string()
}

/// One node's roll-up of one day, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayRecord {
    pub node_id: String,
    pub day: u32,
    pub first_epoch: u64,
    pub last_epoch: u64,
    /// Proofs rolled up.
    pub epochs: u32,
    pub operational_seconds: u64,
    pub heartbeat_count: u64,
    pub credits_usdt: Decimal,
    pub first_proof_hash: Hash,
    pub last_proof_hash: Hash,
    pub prev_day_hash: Option<Hash>,
    pub day_hash: Hash,
}

#[allow(clippy::too_many_arguments)]
fn hash_fields(
    node_id: &str,
    day: &str,
    first_epoch: u64,
    last_epoch: u64,
    epochs: u32,
    operational_seconds: u64,
    heartbeat_count: u64,
    credits_usdt: &str,
    first_proof_hash: &str,
    last_proof_hash: &str,
    prev_day_hash: Option<&str>,
) -> Hash {
    let text = format!(
        "lucid-day-v1|{node_id}|{day}|{first_epoch}|{last_epoch}|{epochs}|{operational_seconds}|{heartbeat_count}|{credits_usdt}|{first_proof_hash}|{last_proof_hash}|{}",
        prev_day_hash.unwrap_or("")
    );
    Sha256::digest(text.as_bytes()).into()
}

impl DayRecord {
    /// `day_hash` from the other fields.
    pub fn compute_hash(&self) -> Hash {
        hash_fields(
            &self.node_id,
            &date(self.day),
            self.first_epoch,
            self.last_epoch,
            self.epochs,
            self.operational_seconds,
            self.heartbeat_count,
            &format_usdt(self.credits_usdt),
            &hex::encode(self.first_proof_hash),
            &hex::encode(self.last_proof_hash),
            self.prev_day_hash.map(hex::encode).as_deref(),
        )
    }

    /// The published form, with the day's root, signature and this record's path.
    pub fn document(&self, root: &DayRoot, path: &[(Side, Hash)]) -> DayDocument {
        DayDocument {
            node_id: self.node_id.clone(),
            day: date(self.day),
            first_epoch: self.first_epoch,
            last_epoch: self.last_epoch,
            epochs: self.epochs,
            operational_seconds: self.operational_seconds,
            heartbeat_count: self.heartbeat_count,
            credits_usdt: format_usdt(self.credits_usdt),
            first_proof_hash: hex::encode(self.first_proof_hash),
            last_proof_hash: hex::encode(self.last_proof_hash),
            prev_day_hash: self.prev_day_hash.map(hex::encode),
            day_hash: hex::encode(self.day_hash),
            day_root: hex::encode(root.root),
            inclusion_path: format_path(path),
            day_signature: B64.encode(&root.signature),
            key_id: root.key_id.clone(),
        }
    }
}

/// A node's proofs of one day folded into its record, in epoch order.
#[derive(Debug, Clone, Default)]
pub struct DayFold {
    first: Option<(u64, Hash)>,
    last: Option<(u64, Hash)>,
    epochs: u32,
    operational_seconds: u64,
    heartbeat_count: u64,
    credits: Decimal,
}

impl DayFold {
    pub fn push(&mut self, proof: &Proof) {
        self.push_parts(
            proof.epoch,
            proof.proof_hash,
            proof.operational_seconds,
            proof.heartbeat_count,
            proof.credits_usdt,
        );
    }

    /// [`push`](Self::push) from a proof's fields.
    pub fn push_parts(
        &mut self,
        epoch: u64,
        proof_hash: Hash,
        operational_seconds: u64,
        heartbeat_count: u64,
        credits: Decimal,
    ) {
        if self.first.is_none() {
            self.first = Some((epoch, proof_hash));
        }
        self.last = Some((epoch, proof_hash));
        self.epochs += 1;
        self.operational_seconds += operational_seconds;
        self.heartbeat_count += heartbeat_count;
        self.credits += credits;
    }

    /// The first epoch folded in.
    pub fn first_epoch(&self) -> Option<u64> {
        self.first.map(|f| f.0)
    }

    /// The record, chained to the node's previous one; `None` for an empty fold.
    pub fn finish(
        self,
        node_id: String,
        day: u32,
        prev_day_hash: Option<Hash>,
    ) -> Option<DayRecord> {
        let (first_epoch, first_proof_hash) = self.first?;
        let (last_epoch, last_proof_hash) = self.last?;
        let mut record = DayRecord {
            node_id,
            day,
            first_epoch,
            last_epoch,
            epochs: self.epochs,
            operational_seconds: self.operational_seconds,
            heartbeat_count: self.heartbeat_count,
            credits_usdt: self.credits,
            first_proof_hash,
            last_proof_hash,
            prev_day_hash,
            day_hash: [0; 32],
        };
        record.day_hash = record.compute_hash();
        Some(record)
    }
}

/// One rolled-up day: the Merkle root over its records, signed with the proof key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayRoot {
    pub day: u32,
    pub root: Hash,
    pub signature: Vec<u8>,
    pub key_id: String,
    pub record_count: u64,
    /// The epochs rolled up: those whose window starts in the day.
    pub first_epoch: u64,
    pub last_epoch: u64,
    pub rolled_at_us: Micros,
}

/// The bytes the proof key signs for a day.
pub fn day_root_message(day: u32, root: &Hash) -> String {
    format!("lucid-day-root-v1|{}|{}", date(day), hex::encode(root))
}

pub fn sign_day(key: &SigningKey, day: u32, root: &Hash) -> Vec<u8> {
    key.sign(day_root_message(day, root).as_bytes())
        .to_bytes()
        .to_vec()
}

/// A daily record as published by `GET /api/v1/poot/{node_id}/days` and read by `verify`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DayDocument {
    pub node_id: String,
    /// `YYYY-MM-DD` (UTC).
    pub day: String,
    pub first_epoch: u64,
    pub last_epoch: u64,
    pub epochs: u32,
    pub operational_seconds: u64,
    pub heartbeat_count: u64,
    pub credits_usdt: String,
    pub first_proof_hash: String,
    pub last_proof_hash: String,
    pub prev_day_hash: Option<String>,
    pub day_hash: String,
    pub day_root: String,
    pub inclusion_path: Vec<String>,
    pub day_signature: String,
    pub key_id: String,
}

/// Checks one published daily record: its hash from its fields, its path to the day root,
/// and the day signature with `public_key`.
pub fn verify_day_document(doc: &DayDocument, public_key: &VerifyingKey) -> Result<(), String> {
    let computed = hash_fields(
        &doc.node_id,
        &doc.day,
        doc.first_epoch,
        doc.last_epoch,
        doc.epochs,
        doc.operational_seconds,
        doc.heartbeat_count,
        &doc.credits_usdt,
        &doc.first_proof_hash,
        &doc.last_proof_hash,
        doc.prev_day_hash.as_deref(),
    );
    let claimed = parse_hash(&doc.day_hash).map_err(|e| format!("day_hash: {e}"))?;
    if computed != claimed {
        return Err(format!(
            "day_hash does not match the record's fields (computed {})",
            hex::encode(computed)
        ));
    }
    let root = parse_hash(&doc.day_root).map_err(|e| format!("day_root: {e}"))?;
    let path = parse_path(&doc.inclusion_path)?;
    if root_from_path(leaf_hash(&claimed), &path) != root {
        return Err("inclusion_path does not lead from the record to day_root".into());
    }
    let sig = B64
        .decode(&doc.day_signature)
        .ok()
        .and_then(|b| Signature::from_slice(&b).ok())
        .ok_or("day_signature is not a base64 Ed25519 signature")?;
    let message = format!("lucid-day-root-v1|{}|{}", doc.day, doc.day_root);
    public_key
        .verify_strict(message.as_bytes(), &sig)
        .map_err(|_| "day_signature does not verify with the given public key".to_string())
}

/// Checks that a node's daily records (ascending days) chain: each `prev_day_hash` is the
/// previous record's `day_hash`.
pub fn verify_day_chain(docs: &[DayDocument]) -> Result<(), String> {
    for pair in docs.windows(2) {
        let (prev, next) = (&pair[0], &pair[1]);
        if prev.node_id != next.node_id || next.day <= prev.day {
            return Err(format!(
                "daily records of {} {} and {} {} are not one node's days in order",
                prev.node_id, prev.day, next.node_id, next.day
            ));
        }
        if next.prev_day_hash.as_deref() != Some(prev.day_hash.as_str()) {
            return Err(format!(
                "the record of {} does not link to the record of {}",
                next.day, prev.day
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::merkle::{levels, path_at};

    fn proof(epoch: u64, seed: u8) -> Proof {
        Proof {
            node_id: "node_a".into(),
            epoch,
            window_start_us: 0,
            window_end_us: 0,
            operational_seconds: 290,
            heartbeat_count: 10,
            heartbeats_root: [seed; 32],
            credits_usdt: Decimal::new(4027, 6),
            prev_proof_hash: None,
            proof_hash: [seed; 32],
            inclusion_path: Vec::new(),
        }
    }

    fn signed_document(prev: Option<Hash>) -> (DayDocument, VerifyingKey) {
        let key = SigningKey::from_bytes(&[3; 32]);
        let mut fold = DayFold::default();
        for (e, s) in [(10, 1), (11, 2), (13, 3)] {
            fold.push(&proof(e, s));
        }
        let record = fold.finish("node_a".into(), 20_000, prev).unwrap();
        let other = leaf_hash(b"another node's record");
        let leaves = vec![leaf_hash(&record.day_hash), other];
        let lv = levels(&leaves);
        let root = lv.last().unwrap()[0];
        let day_root = DayRoot {
            day: 20_000,
            root,
            signature: sign_day(&key, 20_000, &root),
            key_id: "k".into(),
            record_count: 2,
            first_epoch: 0,
            last_epoch: 0,
            rolled_at_us: 0,
        };
        (
            record.document(&day_root, &path_at(&lv, 0)),
            key.verifying_key(),
        )
    }

    #[test]
    fn a_days_proofs_fold_into_one_record_that_verifies_offline() {
        let (doc, key) = signed_document(None);
        assert_eq!(doc.day, "2024-10-04");
        assert_eq!((doc.first_epoch, doc.last_epoch, doc.epochs), (10, 13, 3));
        assert_eq!((doc.operational_seconds, doc.heartbeat_count), (870, 30));
        assert_eq!(doc.credits_usdt, "0.012081");
        assert_eq!(doc.first_proof_hash, hex::encode([1; 32]));
        assert_eq!(doc.last_proof_hash, hex::encode([3; 32]));
        verify_day_document(&doc, &key).unwrap();
    }

    #[test]
    fn a_changed_field_path_or_key_fails_verification() {
        let (doc, key) = signed_document(Some([7; 32]));
        let mut d = doc.clone();
        d.operational_seconds += 1;
        assert!(verify_day_document(&d, &key)
            .unwrap_err()
            .contains("day_hash"));
        let mut d = doc.clone();
        d.inclusion_path.clear();
        assert!(verify_day_document(&d, &key)
            .unwrap_err()
            .contains("inclusion_path"));
        let other = SigningKey::from_bytes(&[4; 32]).verifying_key();
        assert!(verify_day_document(&doc, &other)
            .unwrap_err()
            .contains("signature"));
    }

    #[test]
    fn daily_records_chain_by_their_hashes() {
        let (first, _) = signed_document(None);
        let (mut second, _) = signed_document(Some(parse_hash(&first.day_hash).unwrap()));
        second.day = "2024-10-05".into();
        verify_day_chain(&[first.clone(), second.clone()]).unwrap();
        second.prev_day_hash = Some(hex::encode([0; 32]));
        assert!(verify_day_chain(&[first, second]).is_err());
    }
}
