//! `verify`: checks a database file or a published proof, offline.
//!
//! On a database it checks the audit hash chain; every node's balance against the sum of
//! its ledger; every proof against its fields, its node's chain and a recomputation of its
//! credits (carry rebuilt from the start); every epoch's root, inclusion paths and
//! signature; and, where the raw heartbeats are still kept, recomputes each epoch's
//! operational time, heartbeat counts and heartbeat roots from them.

use std::collections::BTreeMap;

use ed25519_dalek::VerifyingKey;
use rust_decimal::Decimal;

use crate::domain::audit::ChainVerifier;
use crate::domain::credits::credit_epoch;
use crate::domain::day::{verify_day_chain, verify_day_document, DayDocument};
use crate::domain::ledger::EntryKind;
use crate::domain::merkle::{leaf_hash, root, root_from_path, Hash, Side};
use crate::domain::node::NodeStatus;
use crate::domain::poot::{close_epoch, epoch_window, EpochParams, NodeEpochInput, Receipt};
use crate::domain::proof::{epoch_message, verify_chain, verify_document, Proof, ProofDocument};
use crate::store::queries::Reader;
use crate::store::tables::{HEARTBEATS_PRUNED_BEFORE_KEY, POOT_CLOSED_UNTIL_KEY};

/// What a database verification covered.
#[derive(Debug, Default)]
pub struct DbReport {
    pub audit_events: u64,
    pub nodes: u64,
    pub ledger_entries: u64,
    pub proofs: u64,
    pub epochs: u64,
    pub epochs_recomputed_from_heartbeats: u64,
    /// Epochs whose close is under way (proofs are stored in chunks after the record).
    pub epochs_being_closed: u64,
    pub payouts: u64,
    /// Rolled-up days and their daily records (proofs past `PROOF_RETENTION`).
    pub days: u64,
    pub day_records: u64,
}

impl std::fmt::Display for DbReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "audit chain: {} events, intact", self.audit_events)?;
        writeln!(
            f,
            "ledger: {} nodes, {} entries, every balance equals its ledger",
            self.nodes, self.ledger_entries
        )?;
        writeln!(
            f,
            "proofs: {} proofs in {} epochs: hashes, chains, credits, roots and signatures verify",
            self.proofs, self.epochs
        )?;
        writeln!(
            f,
            "daily records: {} records in {} rolled-up days: hashes, chains, roots and signatures verify",
            self.day_records, self.days
        )?;
        writeln!(
            f,
            "recomputed from raw heartbeats: {} epochs, identical",
            self.epochs_recomputed_from_heartbeats
        )?;
        if self.epochs_being_closed > 0 {
            writeln!(
                f,
                "being closed: {} epoch(s) with part of their proofs stored so far; the rest follow",
                self.epochs_being_closed
            )?;
        }
        write!(
            f,
            "payouts: {} payouts, each matched by exactly one debit (and one re-credit if failed)",
            self.payouts
        )
    }
}

/// What the proof pass learns about a node, to compare with its record and ledger.
#[derive(Default, Clone)]
struct NodeProofs {
    last: Option<(u64, Hash)>,
    carry: Decimal,
    seconds: u64,
    credits: Decimal,
    /// The same before the node's proof of an epoch still being closed: its totals follow
    /// once the close settles the epoch (`store::settle`), so either state is right.
    before_closing: Option<Box<NodeProofs>>,
}

/// What pass 1 keeps of each proof for the per-epoch checks.
struct Leaf {
    node_id: String,
    proof_hash: Hash,
    path: Vec<(bool, Hash)>,
    operational_seconds: u64,
    heartbeat_count: u64,
    heartbeats_root: Hash,
}

/// Whether `signature` is the proof key's over `message`.
fn signed_by(key: &VerifyingKey, message: &str, signature: &[u8]) -> bool {
    ed25519_dalek::Signature::from_slice(signature)
        .map(|sig| key.verify_strict(message.as_bytes(), &sig).is_ok())
        .unwrap_or(false)
}

/// Checks the whole database; `Err` lists what is wrong (first problems first).
pub fn verify_database(
    reader: &Reader,
    proof_key: &VerifyingKey,
    mut progress: impl FnMut(&str),
) -> Result<DbReport, String> {
    let e = |x: crate::store::StoreError| x.to_string();
    let mut report = DbReport::default();
    let mut problems: Vec<String> = Vec::new();

    progress("audit chain");
    let mut chain = ChainVerifier::default();
    // Jobs of payout runs: (first id, last id, payouts, digest) as their events say.
    let mut payout_jobs: Vec<(String, String, u64, String)> = Vec::new();
    reader.for_each_audit(|event| {
        if event.action == "payout.create" {
            let d: serde_json::Value = serde_json::from_str(&event.detail).unwrap_or_default();
            if let (Some(first), Some(last), Some(n), Some(sha)) = (
                d["first_payout_id"].as_str(),
                d["last_payout_id"].as_str(),
                d["payouts"].as_u64(),
                d["payouts_sha256"].as_str(),
            ) {
                payout_jobs.push((first.into(), last.into(), n, sha.into()));
            }
        }
        chain.push(&event).map_err(|e| e.to_string())
    })?;
    report.audit_events = chain.checked;
    // Each job's payouts are as its audit event recorded them, none added or altered.
    for (first, last, n, sha) in &payout_jobs {
        let (digest, count) = reader.payout_job_digest(first, last).map_err(e)?;
        if hex::encode(digest) != *sha || count as u64 != *n {
            problems.push(format!(
                "payouts {first}..{last} differ from what their audit event recorded"
            ));
        }
    }

    // node -> (last proof, carry, seconds, credits)
    let mut per_node: BTreeMap<String, NodeProofs> = BTreeMap::new();

    progress("daily records");
    // node -> its latest daily record's hash
    let mut last_day: BTreeMap<String, Hash> = BTreeMap::new();
    let mut rolled_days = std::collections::BTreeSet::new();
    reader
        .for_each_day(|day_root, records| {
            report.days += 1;
            rolled_days.insert(day_root.day);
            let name = crate::domain::day::date(day_root.day);
            if records.len() as u64 != day_root.record_count {
                problems.push(format!(
                    "day {name}: {} records stored, its root says {}",
                    records.len(),
                    day_root.record_count
                ));
            }
            let leaves: Vec<Hash> = records
                .iter()
                .map(|(_, r, _)| leaf_hash(&r.day_hash))
                .collect();
            if root(&leaves) != day_root.root {
                problems.push(format!("day {name}: root does not match its records"));
            }
            let message = crate::domain::day::day_root_message(day_root.day, &day_root.root);
            if !signed_by(proof_key, &message, &day_root.signature) {
                problems.push(format!(
                    "day {name}: signature does not verify with the proof key"
                ));
            }
            for (_, record, row) in records {
                report.day_records += 1;
                let where_ = format!("daily record of {} for {name}", record.node_id);
                if record.compute_hash() != record.day_hash {
                    problems.push(format!("{where_}: day_hash does not match its fields"));
                }
                if record.prev_day_hash != last_day.get(&record.node_id).copied() {
                    problems.push(format!(
                        "{where_}: does not link to the node's previous daily record"
                    ));
                }
                last_day.insert(record.node_id.clone(), record.day_hash);
                // The node's proof chain goes on from the day's last proof.
                let state = per_node.entry(record.node_id.clone()).or_default();
                state.last = Some((record.last_epoch, record.last_proof_hash));
                state.carry = row.carry();
                state.seconds += record.operational_seconds;
                state.credits += record.credits_usdt;
            }
            Ok(())
        })
        .map_err(e)?;

    progress("proofs");
    let epochs = reader.all_epochs().map_err(e)?;
    let closed_until = reader
        .meta_u64(POOT_CLOSED_UNTIL_KEY)
        .map_err(e)?
        .unwrap_or(0);
    let mut per_epoch: BTreeMap<u64, Vec<Leaf>> = BTreeMap::new();
    reader
        .for_each_proof(|p: Proof| {
            report.proofs += 1;
            let state = per_node.entry(p.node_id.clone()).or_default();
            let where_ = format!("proof of {} for epoch {}", p.node_id, p.epoch);
            if p.prev_proof_hash != state.last.map(|(_, h)| h) {
                problems.push(format!(
                    "{where_}: does not link to the node's previous proof"
                ));
            }
            let computed = Proof::compute_hash(
                &p.node_id,
                p.epoch,
                p.window_start_us,
                p.window_end_us,
                p.operational_seconds,
                p.heartbeat_count,
                &p.heartbeats_root,
                p.credits_usdt,
                p.prev_proof_hash.as_ref(),
            );
            if computed != p.proof_hash {
                problems.push(format!("{where_}: proof_hash does not match its fields"));
            }
            match epochs.get(&p.epoch) {
                None => problems.push(format!("{where_}: its epoch has no record")),
                Some(ep) => {
                    if epoch_window(p.epoch, ep.length_us).1 > closed_until {
                        state.before_closing = Some(Box::new(NodeProofs {
                            before_closing: None,
                            ..state.clone()
                        }));
                    }
                    let credit =
                        credit_epoch(p.operational_seconds, ep.reward_per_hour, state.carry);
                    if credit.credited != p.credits_usdt {
                        problems.push(format!(
                            "{where_}: credits {} but recomputation gives {}",
                            p.credits_usdt, credit.credited
                        ));
                    }
                    state.carry = credit.carry;
                }
            }
            state.last = Some((p.epoch, p.proof_hash));
            state.seconds += p.operational_seconds;
            state.credits += p.credits_usdt;
            per_epoch.entry(p.epoch).or_default().push(Leaf {
                node_id: p.node_id,
                proof_hash: p.proof_hash,
                path: p.inclusion_path,
                operational_seconds: p.operational_seconds,
                heartbeat_count: p.heartbeat_count,
                heartbeats_root: p.heartbeats_root,
            });
            Ok(())
        })
        .map_err(e)?;

    progress("epochs");
    let pruned_before = reader
        .meta_u64(HEARTBEATS_PRUNED_BEFORE_KEY)
        .map_err(e)?
        .unwrap_or(0);
    for (k, ep) in &epochs {
        report.epochs += 1;
        let mut leaves = per_epoch.remove(k).unwrap_or_default();
        let rolled_up = rolled_days.contains(&crate::domain::ledger::day_of(
            epoch_window(*k, ep.length_us).0,
        ));
        if rolled_up && leaves.is_empty() {
            // Past PROOF_RETENTION: its proofs are in the daily records checked above;
            // the epoch's signed root stays and is checked below.
            if !signed_by(proof_key, &epoch_message(*k, &ep.root), &ep.signature) {
                problems.push(format!(
                    "epoch {k}: signature does not verify with the proof key"
                ));
            }
            continue;
        }
        leaves.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        // A close in progress (a crash or a running service between its chunks): the
        // record is stored first, its proofs follow; each stored one must still be in
        // the signed tree.
        let being_closed = epoch_window(*k, ep.length_us).1 > closed_until;
        if being_closed {
            report.epochs_being_closed += 1;
            if leaves.len() as u64 > ep.proof_count {
                problems.push(format!(
                    "epoch {k}: {} proofs stored, record says {}",
                    leaves.len(),
                    ep.proof_count
                ));
            }
        } else if leaves.len() as u64 != ep.proof_count {
            problems.push(format!(
                "epoch {k}: {} proofs stored, record says {}",
                leaves.len(),
                ep.proof_count
            ));
        }
        let hashes: Vec<Hash> = leaves.iter().map(|l| leaf_hash(&l.proof_hash)).collect();
        if !being_closed && root(&hashes) != ep.root {
            problems.push(format!("epoch {k}: root does not match its proofs"));
        }
        for (leaf, h) in leaves.iter().zip(&hashes) {
            let path: Vec<(Side, Hash)> = leaf
                .path
                .iter()
                .map(|(l, h)| (if *l { Side::Left } else { Side::Right }, *h))
                .collect();
            // A close in progress stores whole blocks; a proof whose block is not whole
            // yet has no path until the close completes.
            let pending = being_closed && path.is_empty();
            if root_from_path(*h, &path) != ep.root && !pending {
                problems.push(format!(
                    "epoch {k}: inclusion path of {} is wrong",
                    leaf.node_id
                ));
            }
        }
        let sig_ok = signed_by(proof_key, &epoch_message(*k, &ep.root), &ep.signature);
        if !sig_ok {
            problems.push(format!(
                "epoch {k}: signature does not verify with the proof key"
            ));
        }
        // Recompute from raw heartbeats where they are all still kept.
        let (start, end) = epoch_window(*k, ep.length_us);
        let from = start.saturating_sub(ep.timeout_us);
        if from >= pruned_before && ep.length_us > 0 && !being_closed {
            let mut by_node: BTreeMap<String, Vec<Receipt>> = BTreeMap::new();
            for (at, node, hb) in reader.heartbeats_between(from, end).map_err(e)? {
                by_node.entry(node).or_default().push(Receipt {
                    received_at_us: at,
                    leaf: leaf_hash(&hb.leaf_data()),
                });
            }
            let inputs = by_node
                .into_iter()
                .map(|(node_id, receipts)| NodeEpochInput {
                    node_id,
                    receipts,
                    credit_carry: Decimal::ZERO,
                    prev_proof_hash: None,
                })
                .collect();
            let params = EpochParams {
                epoch: *k,
                length_us: ep.length_us,
                timeout_us: ep.timeout_us,
                reward_per_hour: ep.reward_per_hour,
            };
            let (_, outputs) = close_epoch(&params, inputs);
            let recomputed: Vec<(String, u64, u64, Hash)> = outputs
                .into_iter()
                .map(|o| {
                    (
                        o.proof.node_id,
                        o.proof.operational_seconds,
                        o.proof.heartbeat_count,
                        o.proof.heartbeats_root,
                    )
                })
                .collect();
            let stored: Vec<(String, u64, u64, Hash)> = leaves
                .iter()
                .map(|l| {
                    (
                        l.node_id.clone(),
                        l.operational_seconds,
                        l.heartbeat_count,
                        l.heartbeats_root,
                    )
                })
                .collect();
            if recomputed != stored {
                problems.push(format!(
                    "epoch {k}: recomputing from raw heartbeats gives different proofs"
                ));
            }
            report.epochs_recomputed_from_heartbeats += 1;
        }
    }
    for k in per_epoch.keys() {
        problems.push(format!("epoch {k}: proofs without an epoch record"));
    }

    progress("ledger and payouts");
    // payout id -> (debits, recredits) found in the ledger
    let mut payout_entries: BTreeMap<String, (Vec<Decimal>, Vec<Decimal>)> = BTreeMap::new();
    // status -> its nodes in id order, as the status index must list them
    let mut by_status: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = reader
            .nodes(after.as_deref(), 10_000, |_| true)
            .map_err(e)?;
        for node in &page.items {
            report.nodes += 1;
            by_status
                .entry(node.status.as_str())
                .or_default()
                .push(node.node_id.clone());
            let entries = reader.ledger(&node.node_id).map_err(e)?;
            report.ledger_entries += entries.len() as u64;
            for en in &entries {
                if let Some(id) = en.reference.strip_prefix("payout:") {
                    let slot = payout_entries.entry(id.to_string()).or_default();
                    match en.kind {
                        EntryKind::Debit => slot.0.push(en.amount),
                        EntryKind::Recredit => slot.1.push(en.amount),
                        _ => problems.push(format!(
                            "ledger entry {} refers to a payout but is a {:?}",
                            en.seq, en.kind
                        )),
                    }
                }
            }
            if node.balance_usdt < Decimal::ZERO {
                problems.push(format!(
                    "node {}: negative balance {}",
                    node.node_id, node.balance_usdt
                ));
            }
            // Credits of closed epochs not entered yet are in the balance (schema 3).
            let sum: Decimal =
                entries.iter().map(|en| en.amount).sum::<Decimal>() + node.credits_pending_usdt;
            if node.credits_pending_usdt < Decimal::ZERO {
                problems.push(format!(
                    "node {}: negative pending credits {}",
                    node.node_id, node.credits_pending_usdt
                ));
            }
            if sum != node.balance_usdt {
                problems.push(format!(
                    "node {}: balance {} but its ledger and pending credits sum to {sum}",
                    node.node_id, node.balance_usdt
                ));
            }
            let credited: Decimal = entries
                .iter()
                .filter(|en| en.kind == EntryKind::Credit)
                .map(|en| en.amount)
                .sum::<Decimal>()
                + node.credits_pending_usdt;
            let proofs = per_node.remove(&node.node_id).unwrap_or_default();
            // A node not yet settled for an epoch being closed is checked as before it.
            let NodeProofs {
                last,
                carry,
                seconds,
                credits: proof_credits,
                ..
            } = match proofs.before_closing {
                Some(before) if node.last_proof == before.last => *before,
                _ => proofs,
            };
            if credited != proof_credits {
                problems.push(format!(
                    "node {}: ledger credits {credited} but its proofs credit {proof_credits}",
                    node.node_id
                ));
            }
            if node.last_proof != last {
                problems.push(format!(
                    "node {}: last proof does not match its proof chain",
                    node.node_id
                ));
            }
            if node.credit_carry != carry || node.operational_seconds_total != seconds {
                problems.push(format!(
                    "node {}: carry or operational total differs from its proofs",
                    node.node_id
                ));
            }
        }
        match page.next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    for status in NodeStatus::ALL {
        let indexed = reader.node_ids_in_status(status).map_err(e)?;
        let nodes = by_status.remove(status.as_str()).unwrap_or_default();
        if indexed != nodes {
            problems.push(format!(
                "the status index lists {} node(s) as {}, but {} node(s) are",
                indexed.len(),
                status.as_str(),
                nodes.len()
            ));
        }
    }
    for id in per_node.keys() {
        problems.push(format!("proofs for unknown node {id}"));
    }
    for payout in reader.all_payouts().map_err(e)? {
        report.payouts += 1;
        let (debits, recredits) = payout_entries.remove(&payout.payout_id).unwrap_or_default();
        if debits != [-payout.amount] {
            problems.push(format!(
                "payout {}: expected exactly one debit of {}, found {debits:?}",
                payout.payout_id, payout.amount
            ));
        }
        let want_recredits: Vec<Decimal> =
            if payout.state == crate::domain::payout::PayoutState::Failed {
                vec![payout.amount]
            } else {
                vec![]
            };
        if recredits != want_recredits {
            problems.push(format!(
                "payout {} ({}): expected re-credits {want_recredits:?}, found {recredits:?}",
                payout.payout_id,
                payout.state.as_str()
            ));
        }
    }
    for id in payout_entries.keys() {
        problems.push(format!("ledger entries refer to unknown payout {id}"));
    }
    problems.extend(reader.payout_chunk_problems().map_err(e)?);

    if problems.is_empty() {
        Ok(report)
    } else {
        let total = problems.len();
        problems.truncate(20);
        Err(format!("{total} problem(s): {}", problems.join("; ")))
    }
}

/// Reads published documents from JSON text: one document, an array, or a list page
/// (`{"items": [...]}`); each a proof, or a daily record (it has a `day_hash`). Returns
/// (proofs, daily records).
pub fn parse_documents(text: &str) -> Result<(Vec<ProofDocument>, Vec<DayDocument>), String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let items = match value {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Object(ref o) if o.contains_key("items") => {
            o["items"].as_array().cloned().unwrap_or_default()
        }
        serde_json::Value::Object(ref o) if o.contains_key("proofs") => {
            o["proofs"].as_array().cloned().unwrap_or_default()
        }
        other => vec![other],
    };
    if items.is_empty() {
        return Err("no proof or daily record in the file".into());
    }
    let (mut proofs, mut days) = (Vec::new(), Vec::new());
    for v in items {
        if v.get("day_hash").is_some() {
            days.push(serde_json::from_value(v).map_err(|e| format!("not a daily record: {e}"))?);
        } else {
            proofs.push(serde_json::from_value(v).map_err(|e| format!("not a proof: {e}"))?);
        }
    }
    Ok((proofs, days))
}

/// Checks published daily records: each alone, then (several of one node) their chain in
/// day order; and with the node's proofs, that the oldest proof links to the newest
/// record's last proof.
pub fn verify_days(
    days: &mut [DayDocument],
    proofs: &[ProofDocument],
    public_key: &VerifyingKey,
) -> Result<(), String> {
    for doc in days.iter() {
        verify_day_document(doc, public_key)
            .map_err(|e| format!("daily record of {} for {}: {e}", doc.node_id, doc.day))?;
    }
    days.sort_by(|a, b| a.day.cmp(&b.day));
    let same_node = days.windows(2).all(|w| w[0].node_id == w[1].node_id);
    let linked = days.windows(2).all(|w| w[1].prev_day_hash.is_some());
    if days.len() > 1 && same_node && linked {
        verify_day_chain(days)?;
    }
    // The chain from the rolled-up days into the retained proofs: with a node's records
    // and its proofs (the oldest retained among them), the oldest proof links to the last
    // proof of the newest record.
    if let (Some(newest), Some(oldest)) = (days.last(), proofs.iter().min_by_key(|p| p.epoch)) {
        if same_node
            && oldest.node_id == newest.node_id
            && oldest.epoch > newest.last_epoch
            && oldest.prev_proof_hash.as_deref() != Some(newest.last_proof_hash.as_str())
        {
            return Err(format!(
                "the proof of epoch {} does not link to the last proof of the daily record of {} (give the node's oldest retained proofs with its records)",
                oldest.epoch, newest.day
            ));
        }
    }
    Ok(())
}

/// Checks published proofs: each one alone, then (for several proofs of one node) the
/// chain between them in epoch order.
pub fn verify_proofs(docs: &mut [ProofDocument], public_key: &VerifyingKey) -> Result<(), String> {
    for doc in docs.iter() {
        verify_document(doc, public_key)
            .map_err(|e| format!("proof of {} for epoch {}: {e}", doc.node_id, doc.epoch))?;
    }
    docs.sort_by_key(|d| d.epoch);
    let same_node = docs.windows(2).all(|w| w[0].node_id == w[1].node_id);
    let consecutive = docs.windows(2).all(|w| w[1].prev_proof_hash.is_some());
    if docs.len() > 1 && same_node && consecutive {
        verify_chain(docs)?;
    }
    Ok(())
}
