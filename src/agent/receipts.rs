//! Receipts: the node keeps its own proofs. After each epoch closes the agent fetches its
//! proof, checks it offline exactly as `verify` does (proof hash, inclusion path, epoch
//! signature with the proof key pinned at enrolment, chain to its previous proof), compares
//! its heartbeat count with the heartbeats the appliance acknowledged in that window, and
//! appends it to `receipts` (JSON lines) in the state directory.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::proof::{verify_chain, verify_document, ProofDocument};
use crate::domain::timefmt::parse_rfc3339_us;

/// The receipts file's name in the state directory.
pub const RECEIPTS_FILE: &str = "receipts";

/// One line of the receipts file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The proof exactly as the appliance published it.
    pub proof: ProofDocument,
    /// Heartbeats the appliance acknowledged (202) in the proof's window, as this agent
    /// counted them.
    pub acknowledged_heartbeats: u64,
    /// When this agent checked it (RFC 3339).
    pub verified_at: String,
    /// What was wrong although the proof itself verified (fewer heartbeats than
    /// acknowledged). Empty for a clean receipt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// How many acknowledged heartbeats (their server receive times, µs) fall in the proof's
/// window `[window_start, window_end)`.
pub fn acknowledged_in(doc: &ProofDocument, acked_us: &[u64]) -> Result<u64, String> {
    let (start, end) = window_us(doc)?;
    Ok(acked_us
        .iter()
        .filter(|t| **t >= start && **t < end)
        .count() as u64)
}

pub fn window_us(doc: &ProofDocument) -> Result<(u64, u64), String> {
    let start = parse_rfc3339_us(&doc.window_start)
        .ok_or_else(|| format!("window_start {:?} is not a time", doc.window_start))?;
    let end = parse_rfc3339_us(&doc.window_end)
        .ok_or_else(|| format!("window_end {:?} is not a time", doc.window_end))?;
    Ok((start, end))
}

/// Checks a newly fetched proof. `Err` when it must not be kept (it does not verify, the
/// key changed, or it does not chain to the previous receipt); `Ok(problems)` otherwise,
/// with what is wrong in a proof that does verify (fewer heartbeats than acknowledged).
pub fn check_new(
    node_id: &str,
    previous: Option<&ProofDocument>,
    doc: &ProofDocument,
    key: &VerifyingKey,
    pinned_key_id: Option<&str>,
    acknowledged: u64,
) -> Result<Vec<String>, String> {
    if doc.node_id != node_id {
        return Err(format!(
            "the proof of epoch {} is for node {}, not {node_id}",
            doc.epoch, doc.node_id
        ));
    }
    if let Some(pinned) = pinned_key_id {
        if doc.key_id != pinned {
            return Err(format!(
                "the proof of epoch {} is signed with proof key {}, not the pinned {pinned}: the proof key changed",
                doc.epoch, doc.key_id
            ));
        }
    }
    verify_document(doc, key).map_err(|e| format!("the proof of epoch {}: {e}", doc.epoch))?;
    if let Some(prev) = previous {
        verify_chain(&[prev.clone(), doc.clone()]).map_err(|e| format!("broken chain: {e}"))?;
    }
    let mut problems = Vec::new();
    if doc.heartbeat_count < acknowledged {
        problems.push(format!(
            "the proof of epoch {} counts {} heartbeats, but the appliance acknowledged {} in its window",
            doc.epoch, doc.heartbeat_count, acknowledged
        ));
    }
    Ok(problems)
}

/// Re-checks a whole receipts file: every proof (hash, inclusion path, signature with
/// `key`) and the chain from each to the next. Returns the number of receipts.
pub fn verify_all(receipts: &[Receipt], key: &VerifyingKey) -> Result<usize, String> {
    for (i, r) in receipts.iter().enumerate() {
        verify_document(&r.proof, key)
            .map_err(|e| format!("receipt {} (epoch {}): {e}", i + 1, r.proof.epoch))?;
    }
    let docs: Vec<ProofDocument> = receipts.iter().map(|r| r.proof.clone()).collect();
    verify_chain(&docs)?;
    Ok(receipts.len())
}

pub fn receipts_path(state_dir: &Path) -> PathBuf {
    state_dir.join(RECEIPTS_FILE)
}

/// Reads every receipt; an empty list when there is no file yet.
pub fn read_all(path: &Path) -> Result<Vec<Receipt>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .map_err(|e| format!("{} line {}: not a receipt: {e}", path.display(), i + 1))
        })
        .collect()
}

/// Appends one receipt and syncs it to disk.
pub fn append(path: &Path, receipt: &Receipt) -> std::io::Result<()> {
    let mut line = serde_json::to_string(receipt).expect("a receipt always serializes");
    line.push('\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(line.as_bytes())?;
    f.sync_data()
}

/// Totals over some receipts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub epochs: usize,
    pub operational_seconds: u64,
    pub heartbeats: u64,
    pub credits_usdt: String,
    pub first_window_start: Option<String>,
    pub last_window_end: Option<String>,
    /// Receipts that carry a problem.
    pub flagged: usize,
}

pub fn summarise(receipts: &[&Receipt]) -> Summary {
    let mut credits = Decimal::ZERO;
    for r in receipts {
        if let Ok(c) = r.proof.credits_usdt.parse::<Decimal>() {
            credits += c;
        }
    }
    Summary {
        epochs: receipts.len(),
        operational_seconds: receipts.iter().map(|r| r.proof.operational_seconds).sum(),
        heartbeats: receipts.iter().map(|r| r.proof.heartbeat_count).sum(),
        credits_usdt: credits.normalize().to_string(),
        first_window_start: receipts.first().map(|r| r.proof.window_start.clone()),
        last_window_end: receipts.last().map(|r| r.proof.window_end.clone()),
        flagged: receipts.iter().filter(|r| !r.problems.is_empty()).count(),
    }
}

/// `--since`: an RFC 3339 time or a date (`2026-12-01`, midnight UTC) -> µs.
pub fn parse_since(text: &str) -> Result<u64, String> {
    let t = text.trim();
    parse_rfc3339_us(t)
        .or_else(|| parse_rfc3339_us(&format!("{t}T00:00:00Z")))
        .ok_or_else(|| format!("--since {text:?}: use a date (2026-12-01) or an RFC 3339 time"))
}

/// CSV with a header line; fields never contain commas or quotes (hex, numbers, times).
pub fn to_csv(receipts: &[&Receipt]) -> String {
    let mut s = String::from(
        "epoch,window_start,window_end,operational_seconds,heartbeat_count,acknowledged_heartbeats,credits_usdt,score,proof_hash,problems\n",
    );
    for r in receipts {
        let p = &r.proof;
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{}\n",
            p.epoch,
            p.window_start,
            p.window_end,
            p.operational_seconds,
            p.heartbeat_count,
            r.acknowledged_heartbeats,
            p.credits_usdt,
            p.score,
            p.proof_hash,
            r.problems.len()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::merkle::leaf_hash;
    use crate::domain::proof::{proof_hash, sign_epoch};
    use crate::domain::timefmt::rfc3339_us;
    use base64::Engine;
    use ed25519_dalek::SigningKey;

    /// A chain of single-node epochs, each proof its epoch's only leaf, built from the
    /// published document's rules (API.md) only.
    fn chain(key: &SigningKey, n: u64) -> Vec<ProofDocument> {
        let mut prev: Option<String> = None;
        let mut docs = Vec::new();
        for epoch in 1..=n {
            let start = rfc3339_us(epoch * 60_000_000);
            let end = rfc3339_us((epoch + 1) * 60_000_000);
            let hb_root = hex::encode(leaf_hash(&epoch.to_be_bytes()));
            let credits = format!("0.00{}", 1000 + epoch);
            let hash = proof_hash(
                "node_a",
                epoch,
                &start,
                &end,
                60,
                5,
                &hb_root,
                &credits,
                prev.as_deref(),
            );
            let root = leaf_hash(&hash);
            docs.push(ProofDocument {
                node_id: "node_a".into(),
                epoch,
                window_start: start,
                window_end: end,
                operational_seconds: 60,
                heartbeat_count: 5,
                heartbeats_root: hb_root,
                credits_usdt: credits,
                score: "100.00".into(),
                prev_proof_hash: prev.clone(),
                proof_hash: hex::encode(hash),
                epoch_root: hex::encode(root),
                inclusion_path: vec![],
                epoch_signature: base64::engine::general_purpose::STANDARD
                    .encode(sign_epoch(key, epoch, &root)),
                key_id: crate::crypto::keys::key_id(&key.verifying_key()),
            });
            prev = Some(hex::encode(hash));
        }
        docs
    }

    fn receipt(doc: ProofDocument) -> Receipt {
        Receipt {
            proof: doc,
            acknowledged_heartbeats: 5,
            verified_at: "2026-12-01T00:00:00Z".into(),
            problems: vec![],
        }
    }

    #[test]
    fn a_good_chain_verifies_and_a_shortfall_is_a_problem_not_a_refusal() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let docs = chain(&key, 3);
        let vk = key.verifying_key();
        let kid = docs[0].key_id.clone();
        assert_eq!(
            check_new("node_a", None, &docs[0], &vk, Some(&kid), 5),
            Ok(vec![])
        );
        assert_eq!(
            check_new("node_a", Some(&docs[0]), &docs[1], &vk, Some(&kid), 5),
            Ok(vec![])
        );
        let problems = check_new("node_a", Some(&docs[1]), &docs[2], &vk, None, 6).unwrap();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("acknowledged 6"), "{problems:?}");
        let all: Vec<Receipt> = docs.into_iter().map(receipt).collect();
        assert_eq!(verify_all(&all, &vk), Ok(3));
    }

    #[test]
    fn tampering_a_broken_chain_and_a_changed_key_are_refused() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let docs = chain(&key, 3);
        let vk = key.verifying_key();
        // Credits edited.
        let mut forged = docs[1].clone();
        forged.credits_usdt = "9.000000".into();
        assert!(check_new("node_a", Some(&docs[0]), &forged, &vk, None, 0).is_err());
        // Skipping a proof breaks the chain.
        let e = check_new("node_a", Some(&docs[0]), &docs[2], &vk, None, 0).unwrap_err();
        assert!(e.contains("broken chain"), "{e}");
        // Another proof key: refused by id, and by signature without the id.
        let other = SigningKey::from_bytes(&[4; 32]);
        let theirs = chain(&other, 1);
        let e = check_new("node_a", None, &theirs[0], &vk, Some(&docs[0].key_id), 0).unwrap_err();
        assert!(e.contains("proof key changed"), "{e}");
        assert!(check_new("node_a", None, &theirs[0], &vk, None, 0).is_err());
        // Another node's proof.
        assert!(check_new("node_b", None, &docs[0], &vk, None, 0).is_err());
        // A receipts file with one line edited or one removed fails as a whole.
        let mut all: Vec<Receipt> = docs.iter().cloned().map(receipt).collect();
        all[2].proof.operational_seconds += 1;
        assert!(verify_all(&all, &vk).is_err());
        let gap: Vec<Receipt> = [&docs[0], &docs[2]]
            .iter()
            .map(|d| receipt((*d).clone()))
            .collect();
        assert!(verify_all(&gap, &vk).is_err());
    }

    #[test]
    fn acknowledged_heartbeats_are_counted_in_the_half_open_window() {
        let key = SigningKey::from_bytes(&[3; 32]);
        let doc = &chain(&key, 1)[0];
        let (s, e) = window_us(doc).unwrap();
        assert_eq!(
            acknowledged_in(doc, &[s - 1, s, s + 5, e - 1, e]).unwrap(),
            3
        );
    }

    #[test]
    fn files_append_read_back_and_summarise() {
        let dir = tempfile::tempdir().unwrap();
        let path = receipts_path(dir.path());
        assert!(read_all(&path).unwrap().is_empty());
        let key = SigningKey::from_bytes(&[3; 32]);
        for d in chain(&key, 2) {
            append(&path, &receipt(d)).unwrap();
        }
        let all = read_all(&path).unwrap();
        assert_eq!(all.len(), 2);
        let refs: Vec<&Receipt> = all.iter().collect();
        let s = summarise(&refs);
        assert_eq!(
            (s.epochs, s.operational_seconds, s.heartbeats),
            (2, 120, 10)
        );
        assert_eq!(s.credits_usdt, "0.002003");
        let csv = to_csv(&refs);
        assert_eq!(csv.lines().count(), 3);
        assert!(csv.lines().nth(1).unwrap().starts_with("1,"));
        assert_eq!(parse_since("1970-01-01").unwrap(), 0);
        assert!(parse_since("soon").is_err());
    }
}
