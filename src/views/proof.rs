//! A proof without its epoch, as the mirror stores it when the epoch record is missing.
//! (A proof with its epoch is `domain::proof::ProofDocument`, which `verify` reads too.)

use serde::Serialize;

use crate::domain::money::format_usdt;
use crate::domain::proof::Proof;
use crate::domain::timefmt::rfc3339_us;

/// The proof's own fields: no score, epoch root, inclusion path or signature.
#[derive(Debug, Serialize)]
pub struct BareProofDocument {
    pub node_id: String,
    pub epoch: u64,
    pub window_start: String,
    pub window_end: String,
    pub operational_seconds: u64,
    pub heartbeat_count: u64,
    pub heartbeats_root: String,
    pub credits_usdt: String,
    pub prev_proof_hash: Option<String>,
    pub proof_hash: String,
}

impl From<&Proof> for BareProofDocument {
    fn from(p: &Proof) -> Self {
        Self {
            node_id: p.node_id.clone(),
            epoch: p.epoch,
            window_start: rfc3339_us(p.window_start_us),
            window_end: rfc3339_us(p.window_end_us),
            operational_seconds: p.operational_seconds,
            heartbeat_count: p.heartbeat_count,
            heartbeats_root: hex::encode(p.heartbeats_root),
            credits_usdt: format_usdt(p.credits_usdt),
            prev_proof_hash: p.prev_proof_hash.map(hex::encode),
            proof_hash: hex::encode(p.proof_hash),
        }
    }
}
