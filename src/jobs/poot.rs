//! PoOT: closes every finished epoch (catching up after downtime), one epoch per write
//! transaction, then prunes raw heartbeats past retention whose epochs are proven.

use std::collections::BTreeMap;
use std::time::Duration;

use ed25519_dalek::SigningKey;
use rust_decimal::Decimal;
use serde_json::json;

use crate::api::AppState;
use crate::clock::Micros;
use crate::crypto::key_id;
use crate::domain::ledger::EntryKind;
use crate::domain::merkle::leaf_hash;
use crate::domain::poot::{
    close_epoch, epoch_window, first_epoch_at_or_after, EpochParams, NodeEpochInput, Receipt,
};
use crate::domain::proof::{sign_epoch, Epoch};
use crate::error::{ApiError, ApiResult};
use crate::store::tables::{
    HEARTBEATS_PRUNED_BEFORE_KEY, POOT_CLOSED_UNTIL_KEY, POOT_LENGTH_KEY, PROOFS_COUNTER,
};
use crate::store::{Actor, Batch};

/// Heartbeats removed per write transaction while pruning (keeps each batch short).
const PRUNE_CHUNK: usize = 10_000;

/// Everything closing an epoch needs, captured once.
#[derive(Clone)]
pub struct CloseParams {
    pub length_us: Micros,
    pub timeout_us: Micros,
    pub reward_per_hour: Decimal,
    pub proof_key: SigningKey,
}

impl CloseParams {
    pub fn from_app(app: &AppState) -> Self {
        Self {
            length_us: app.config.poot_calculation_interval.as_micros() as u64,
            timeout_us: app.config.heartbeat_timeout.as_micros() as u64,
            reward_per_hour: app.config.reward_usdt_per_hour,
            proof_key: app.keys.proof.clone(),
        }
    }
}

pub async fn run(app: AppState) {
    let tick = (app.config.poot_calculation_interval / 10)
        .clamp(Duration::from_millis(200), Duration::from_secs(1));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match close_due_epochs(&app).await {
            Ok(closed) if !closed.is_empty() => {
                if let Err(e) = prune_heartbeats(&app).await {
                    tracing::warn!(error = %e, "heartbeat pruning failed");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "closing PoOT epochs failed"),
        }
    }
}

/// Refuses an epoch length that differs from the one this database was closed with:
/// epoch numbers would change meaning and signed epochs would be renumbered.
pub fn check_epoch_length(
    reader: &crate::store::queries::Reader,
    length_us: Micros,
) -> Result<(), String> {
    match reader.meta_u64(POOT_LENGTH_KEY).map_err(|e| e.detail)? {
        Some(stored) if stored != length_us => Err(format!(
            "invalid value {}s for POOT_CALCULATION_INTERVAL: this database's epochs are {}s long; changing the epoch length of existing data is not supported (it would renumber signed epochs)",
            length_us / 1_000_000,
            stored / 1_000_000
        )),
        _ => Ok(()),
    }
}

/// Closes every finished epoch not yet closed; returns their numbers. Idempotent: an
/// epoch is closed once, and an open epoch never.
pub async fn close_due_epochs(app: &AppState) -> ApiResult<Vec<u64>> {
    let params = CloseParams::from_app(app);
    let mut closed = Vec::new();
    loop {
        let p = params.clone();
        let metrics = app.metrics.clone();
        let started = std::time::Instant::now();
        let next = app
            .writer
            .write(move |b| {
                let result = close_next_epoch(b, &p)?;
                if let Some((_, proofs)) = result {
                    metrics.proofs.inc_by(proofs as u64);
                }
                Ok(result)
            })
            .await?;
        let Some((epoch, proofs)) = next else { break };
        app.metrics.epochs_closed.inc();
        app.metrics
            .epoch_close_seconds
            .observe(started.elapsed().as_secs_f64());
        closed.push(epoch);
        tracing::info!(epoch, proofs, "closed PoOT epoch");
        if closed.len() % 100 == 0 {
            tracing::info!(closed = closed.len(), "catching up on PoOT epochs");
        }
    }
    Ok(closed)
}

/// Closes the oldest finished epoch, if there is one: `Some((epoch, proofs written))`.
pub fn close_next_epoch(b: &mut Batch<'_>, p: &CloseParams) -> ApiResult<Option<(u64, usize)>> {
    // A stamp is strictly after every heartbeat stamped before, so "finished" means no
    // heartbeat for the window can still arrive.
    let now = b.stamp_us();
    let current_start = now - now % p.length_us;
    let Some(mut closed_until) = b.meta_u64(POOT_CLOSED_UNTIL_KEY)? else {
        // First start: the current epoch is the first one to close.
        b.set_meta_u64(POOT_CLOSED_UNTIL_KEY, current_start)?;
        b.set_meta_u64(POOT_LENGTH_KEY, p.length_us)?;
        return Ok(None);
    };
    // Skip, in one step, epochs in which no node can have been up: a long outage or a
    // clock that was far behind must not cost one transaction per empty epoch.
    let first = b.first_heartbeat_at_or_after(closed_until.saturating_sub(p.timeout_us))?;
    let busy_from = first.map_or(current_start, |t| (t - t % p.length_us).min(current_start));
    if busy_from > closed_until {
        b.set_meta_u64(POOT_CLOSED_UNTIL_KEY, busy_from)?;
        closed_until = busy_from;
    }
    let epoch = first_epoch_at_or_after(closed_until, p.length_us);
    let (start, end) = epoch_window(epoch, p.length_us);
    if end > now {
        return Ok(None);
    }
    if b.epoch(epoch)?.is_some() {
        // Signed epochs are never rewritten (this would mean the epoch length changed).
        return Err(ApiError::unavailable(format!(
            "epoch {epoch} is already closed; refusing to rewrite it"
        )));
    }
    let mut by_node: BTreeMap<String, Vec<Receipt>> = BTreeMap::new();
    b.for_each_heartbeat_between(
        start.saturating_sub(p.timeout_us),
        end,
        |at, node_id, hb| {
            let receipt = Receipt {
                received_at_us: at,
                leaf: leaf_hash(&hb.leaf_data()),
            };
            match by_node.get_mut(node_id) {
                Some(list) => list.push(receipt),
                None => {
                    by_node.insert(node_id.to_string(), vec![receipt]);
                }
            }
        },
    )?;
    let mut inputs = Vec::with_capacity(by_node.len());
    for (node_id, receipts) in by_node {
        let Some(node) = b.node(&node_id)? else {
            continue;
        };
        inputs.push(NodeEpochInput {
            node_id,
            receipts,
            credit_carry: node.credit_carry,
            prev_proof_hash: node.last_proof.map(|(_, h)| h),
        });
    }
    let params = EpochParams {
        epoch,
        length_us: p.length_us,
        timeout_us: p.timeout_us,
        reward_per_hour: p.reward_per_hour,
    };
    let (root, outputs) = close_epoch(&params, inputs);
    for out in &outputs {
        let Some(before) = b.node(&out.proof.node_id)? else {
            continue;
        };
        let mut node = before.clone();
        node.credit_carry = out.credit_carry;
        node.last_proof = Some((epoch, out.proof.proof_hash));
        node.operational_seconds_total += out.proof.operational_seconds;
        if out.proof.credits_usdt > Decimal::ZERO {
            b.append_ledger(
                &mut node,
                EntryKind::Credit,
                out.proof.credits_usdt,
                format!("epoch:{epoch}"),
            )?;
        }
        b.put_proof(&out.proof)?;
        b.put_node(&node, Some(&before))?;
    }
    let record = Epoch {
        epoch,
        root,
        signature: sign_epoch(&p.proof_key, epoch, &root),
        key_id: key_id(&p.proof_key.verifying_key()),
        proof_count: outputs.len() as u64,
        closed_at_us: now,
        length_us: p.length_us,
        timeout_us: p.timeout_us,
        reward_per_hour: p.reward_per_hour,
    };
    b.put_epoch(&record)?;
    b.set_meta_u64(POOT_CLOSED_UNTIL_KEY, end)?;
    if !outputs.is_empty() {
        // An epoch without proofs changed nothing but the bookkeeping: no audit event, so
        // an idle appliance does not grow its audit log every few minutes.
        b.add_counter(PROOFS_COUNTER, outputs.len() as i64)?;
        b.audit(
            &Actor::system(),
            "poot.epoch_close",
            &format!("epoch:{epoch}"),
            json!({"epoch": epoch, "proofs": outputs.len(), "epoch_root": hex::encode(root)}),
        )?;
    }
    Ok(Some((epoch, outputs.len())))
}

/// Removes raw heartbeats older than the retention whose epochs are closed (a heartbeat
/// still needed to cover the start of the next epoch is kept).
pub async fn prune_heartbeats(app: &AppState) -> ApiResult<usize> {
    let retention_us = app.config.heartbeat_retention.as_micros() as u64;
    let timeout_us = app.config.heartbeat_timeout.as_micros() as u64;
    let mut total = 0;
    loop {
        let removed = app
            .writer
            .write(move |b| {
                let Some(closed_until) = b.meta_u64(POOT_CLOSED_UNTIL_KEY)? else {
                    return Ok(0);
                };
                let cutoff = b
                    .now_us()
                    .saturating_sub(retention_us)
                    .min(closed_until.saturating_sub(timeout_us));
                let removed = b.prune_heartbeats(cutoff, PRUNE_CHUNK)?;
                if removed > 0 {
                    // Epochs whose windows reach back before this cannot be recomputed
                    // from raw heartbeats any more (verify skips that part for them).
                    let before = b.meta_u64(HEARTBEATS_PRUNED_BEFORE_KEY)?.unwrap_or(0);
                    b.set_meta_u64(HEARTBEATS_PRUNED_BEFORE_KEY, before.max(cutoff))?;
                }
                Ok(removed)
            })
            .await?;
        total += removed;
        if removed < PRUNE_CHUNK {
            break;
        }
    }
    if total > 0 {
        tracing::info!(removed = total, "pruned heartbeats past retention");
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::heartbeat::StoredHeartbeat;
    use crate::store::batch::AuditHead;

    const S: u64 = 1_000_000;

    fn params() -> CloseParams {
        CloseParams {
            length_us: 300 * S,
            timeout_us: 90 * S,
            reward_per_hour: Decimal::new(5, 2),
            proof_key: crate::crypto::generate_signing_key(),
        }
    }

    /// Runs `close_next_epoch` until it has nothing to do; returns the epochs closed.
    fn close_all(
        store: &crate::store::Store,
        clock: &crate::clock::Clock,
        p: &CloseParams,
    ) -> Vec<u64> {
        let mut closed = Vec::new();
        for _ in 0..100 {
            let txn = store.db.begin_write().unwrap();
            let mut head = AuditHead::load(&txn).unwrap();
            let next = {
                let mut b = Batch::new(&txn, &mut head, clock);
                close_next_epoch(&mut b, p).unwrap()
            };
            txn.commit().unwrap();
            match next {
                Some((e, _)) => closed.push(e),
                None => return closed,
            }
        }
        panic!("catch-up did not finish in 100 transactions");
    }

    #[test]
    fn a_long_silent_outage_is_skipped_in_one_step_not_one_epoch_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = crate::store::db::open_with_clock(dir.path(), 100).unwrap();
        let p = params();
        let now = clock.now_us();
        let long_ago = (now / p.length_us - 10_000) * p.length_us;
        let recent = now - 2 * p.length_us;
        {
            let txn = store.db.begin_write().unwrap();
            let mut head = AuditHead::load(&txn).unwrap();
            let mut b = Batch::new(&txn, &mut head, &clock);
            b.set_meta_u64(POOT_CLOSED_UNTIL_KEY, long_ago).unwrap();
            b.set_meta_u64(POOT_LENGTH_KEY, p.length_us).unwrap();
            let hb = StoredHeartbeat {
                seq: 1,
                canonical: "lucid-hb-v1|node_x|1|t|0|0|0|0".into(),
                signature: vec![0; 64],
                sessions_active: 0,
                bytes_relayed: 0,
                cpu_load: 0.0,
                mem_used_mb: 0,
            };
            b.insert_heartbeat(recent, "node_x", &hb).unwrap();

            txn.commit().unwrap();
        }
        let closed = close_all(&store, &clock, &p);
        // 10,000 silent epochs cost nothing; only the epochs around the heartbeat close.
        assert!(
            closed.len() <= 3,
            "closed {} epochs: {closed:?}",
            closed.len()
        );
        assert!(closed.contains(&(recent / p.length_us)));
    }

    #[test]
    fn a_different_epoch_length_is_refused_for_existing_data() {
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = crate::store::db::open_with_clock(dir.path(), 100).unwrap();
        let p = params();
        close_all(&store, &clock, &p); // first start records the length
        let reader = store.reader().unwrap();
        assert!(check_epoch_length(&reader, p.length_us).is_ok());
        let err = check_epoch_length(&reader, 600 * S).unwrap_err();
        assert!(err.contains("POOT_CALCULATION_INTERVAL"), "{err}");
    }
}
