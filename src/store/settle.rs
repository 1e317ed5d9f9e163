//! Settling a closed epoch: its stored proof rows applied to the nodes' running totals
//! (`accounts`): credit carry, latest proof, operational seconds, balance and the day's
//! pending credits (a day's credits become one ledger entry, `batch::enter_day_credits`,
//! once the node earns in a later day, or when another entry is written first).
//!
//! The rows are read once outside the writer and sorted by node index ([`epoch_settlement`]),
//! so each writer job rewrites each account value it touches once. Settling is driven only
//! by what is stored: a row whose node's account already has this epoch (or a later one)
//! as its latest proof was settled before and is skipped, so a close interrupted anywhere
//! settles the rest when it resumes, crediting nothing twice.

use std::time::{Duration, Instant};

use redb::{Database, ReadableDatabase};

use super::accounts::{Account, AccountEdits, ROWS_PER_CHUNK};
use super::batch::enter_day_credits;
use super::epoch_rows::{epoch_rows, node_id_of, rows_of, runs_at, ProofRow};
use super::error::{StoreError, StoreResult};
use super::tables::{ACCOUNTS, EPOCH_ROWS, LEDGER, LEDGER_SEQ_KEY, NODES, NODE_IDS};
use super::Batch;

/// META: the epoch being settled and the ledger sequence number before its first settling
/// job: the mirror's chunk references name the ledger entries entered since.
const SETTLING_EPOCH_KEY: &str = "poot.settling_epoch";
const SETTLING_LEDGER_FROM_KEY: &str = "poot.settling_ledger_from";

/// The stored rows of `epoch`, in node index order.
pub fn epoch_settlement(db: &Database, epoch: u64) -> StoreResult<Vec<ProofRow>> {
    let txn = db.begin_read()?;
    let mut rows: Vec<ProofRow> = epoch_rows(&txn.open_table(EPOCH_ROWS)?, epoch)?
        .into_iter()
        .map(|(_, row)| row)
        .collect();
    rows.sort_unstable_by_key(|r| r.node_index);
    Ok(rows)
}

impl Batch<'_> {
    /// Settles `rows` (of `epoch`, whose window starts in UTC day `day`, in node index
    /// order) from the first, one account value at a time, until `budget` has passed
    /// (after at least one). Returns the rows consumed.
    pub fn settle_epoch_rows(
        &mut self,
        epoch: u64,
        day: u32,
        rows: &[ProofRow],
        budget: Duration,
    ) -> StoreResult<usize> {
        let started = Instant::now();
        if self.meta_u64(SETTLING_EPOCH_KEY)? != Some(epoch) {
            let seq = self.meta_u64(LEDGER_SEQ_KEY)?.unwrap_or(0);
            self.set_meta_u64(SETTLING_EPOCH_KEY, epoch)?;
            self.set_meta_u64(SETTLING_LEDGER_FROM_KEY, seq)?;
        }
        let at_us = self.now_us();
        let seq_before = self.meta_u64(LEDGER_SEQ_KEY)?.unwrap_or(0);
        let mut seq = seq_before;
        let mut consumed = 0;
        {
            let nodes = self.txn.open_table(NODES)?;
            let ids = self.txn.open_table(NODE_IDS)?;
            let mut accounts = self.txn.open_table(ACCOUNTS)?;
            let mut ledger = self.txn.open_table(LEDGER)?;
            let mut edits = AccountEdits::default();
            let mut chunk = None;
            for row in rows {
                let this_chunk = row.node_index / ROWS_PER_CHUNK;
                if chunk != Some(this_chunk) {
                    if consumed > 0 && started.elapsed() >= budget {
                        break;
                    }
                    chunk = Some(this_chunk);
                }
                consumed += 1;
                let mut account = match edits.get(&accounts, row.node_index)? {
                    Some(a) => a,
                    None => {
                        // Its first settling since accounts came: the record has its totals.
                        let id = node_id_of(&ids, row.node_index)?;
                        let node = super::queries::node_record(&nodes, &id)?.ok_or_else(|| {
                            StoreError::corrupt(format!("node {id} of a proof is missing"))
                        })?;
                        Account::of_node(&node)
                    }
                };
                let latest = account.last_proof.map(|(e, _)| e);
                if latest.is_some_and(|e| e >= epoch) {
                    continue; // settled before this close was interrupted
                }
                let links_to = (row.prev_delta > 0).then(|| epoch - u64::from(row.prev_delta));
                if latest != links_to {
                    return Err(StoreError::corrupt(format!(
                        "node index {}: its proof of epoch {epoch} links to epoch {links_to:?}, but its latest proof is of {latest:?}",
                        row.node_index
                    )));
                }
                account.credit_carry = row.carry();
                account.last_proof = Some((epoch, row.proof_hash));
                account.operational_seconds_total += u64::from(row.operational_seconds);
                let credits = row.credits();
                if !credits.is_zero() {
                    if account.credits_pending_day != day && !account.credits_pending_usdt.is_zero()
                    {
                        // The earlier day's credits become its ledger entry now.
                        enter_day_credits(
                            &mut ledger,
                            &node_id_of(&ids, row.node_index)?,
                            (account.credits_pending_usdt, account.credits_pending_day),
                            &mut seq,
                            at_us,
                        )?;
                        account.credits_pending_usdt = Default::default();
                    }
                    account.balance_usdt += credits;
                    account.credits_pending_usdt += credits;
                    account.credits_pending_day = day;
                }
                edits.put(&accounts, row.node_index, &account)?;
            }
            edits.flush(&mut accounts)?;
        }
        if seq != seq_before {
            self.set_meta_u64(LEDGER_SEQ_KEY, seq)?;
        }
        Ok(consumed)
    }

    /// The mirror's outbox once `epoch` is settled: one reference per stored run of its
    /// rows (a chunk, or its part of a pack), whose proof, node and ledger documents the
    /// sync task renders when it sends them.
    pub fn mirror_settled_epoch(&mut self, epoch: u64) -> StoreResult<()> {
        if self.mirror.is_none() {
            return Ok(());
        }
        let seq_last = self.meta_u64(LEDGER_SEQ_KEY)?.unwrap_or(0);
        let seq_after = match self.meta_u64(SETTLING_EPOCH_KEY)? {
            Some(e) if e == epoch => self.meta_u64(SETTLING_LEDGER_FROM_KEY)?.unwrap_or(0),
            _ => seq_last,
        };
        // One reference per stored run of the epoch's rows, named by its first node.
        let firsts: Vec<String> = {
            let rows = self.txn.open_table(EPOCH_ROWS)?;
            let ids = self.txn.open_table(NODE_IDS)?;
            runs_at::<ProofRow>(&rows, epoch)?
                .iter()
                .filter_map(|run| rows_of::<ProofRow>(&run.rows).next())
                .map(|first| node_id_of(&ids, first.node_index))
                .collect::<StoreResult<_>>()?
        };
        for first in firsts {
            self.mirror_epoch_chunk(epoch, &first, (seq_after, seq_last))?;
        }
        Ok(())
    }
}
