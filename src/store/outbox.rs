//! The transactional outbox of the MongoDB mirror.
//!
//! With the mirror enabled, every mutation made through [`Batch`] also appends an
//! [`OutboxEntry`] (the mirrored document, as JSON text) to the OUTBOX table, in the same
//! write transaction as the change: the change and its entry commit together or not at
//! all. The mirror's sync task (module `sync`) drains the table in sequence order and deletes
//! entries (through the writer) only after MongoDB acknowledged them.
//!
//! An epoch close is the exception that keeps the outbox small: it appends one
//! [`Op::EpochChunk`] reference per stored chunk of up to 680 proofs, and the reader
//! renders the chunk's documents from the stored rows when the sync task asks
//! ([`Reader::outbox_entries`]).
//!
//! Without a mirror, `Batch` carries no [`OutboxConfig`] and nothing here runs.
//!
//! The bound: at `OUTBOX_MAX_ENTRIES` entries the batch stops appending and sets
//! `MIRROR_OVERFLOW_KEY`; the sync task then clears the outbox and copies everything
//! again (a full resync) once MongoDB is reachable. Writes are never refused because of
//! the mirror.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use redb::{ReadableTable, ReadableTableMetadata};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::batch::Batch;
use super::codec::{decode, encode};
use super::epoch_rows::ClosingTree;
use super::error::StoreResult;
use super::queries::Reader;
use super::tables::{META, OUTBOX, POOL_MEMBERS};
use crate::domain::audit::AuditEvent;
use crate::domain::ledger::LedgerEntry;
use crate::domain::node::Node;
use crate::domain::payout::Payout;
use crate::domain::pool::Pool;
use crate::domain::proof::{Epoch, Proof};
use crate::views::{
    AuditEventView, BareProofDocument, LedgerEntryView, NodeView, PayoutView, PoolDocument,
};

/// META: set (1) once a full copy to MongoDB completed; absent means the sync task must
/// copy everything (first enable on existing data, or after an overflow).
pub(crate) const MIRROR_INITIALIZED_KEY: &str = "mirror.initialized";
/// META: set (1) when the outbox reached its bound; appends stop until a full resync.
pub(crate) const MIRROR_OVERFLOW_KEY: &str = "mirror.overflow";
/// META: the oldest epoch that an outbox entry still references (an [`Op::EpochChunk`]);
/// absent when none does. Rolling a day up deletes its proof rows, so it waits until
/// MongoDB has every proof of the day (`Reader::mirror_holds_epochs_until`).
pub(crate) const MIRROR_CHUNK_FLOOR_KEY: &str = "mirror.chunk_floor";
/// META: the outbox sequence number of the reference that set the floor.
pub(crate) const MIRROR_CHUNK_FLOOR_SEQ_KEY: &str = "mirror.chunk_floor_seq";

/// The six mirrored collections.
pub(crate) const NODES_COLLECTION: &str = "nodes";
pub(crate) const POOLS_COLLECTION: &str = "pools";
pub(crate) const PROOFS_COLLECTION: &str = "poot_proofs";
pub(crate) const LEDGER_COLLECTION: &str = "ledger";
pub(crate) const PAYOUTS_COLLECTION: &str = "payouts";
pub(crate) const AUDIT_COLLECTION: &str = "audit_events";
pub const COLLECTIONS: [&str; 6] = [
    NODES_COLLECTION,
    POOLS_COLLECTION,
    PROOFS_COLLECTION,
    LEDGER_COLLECTION,
    PAYOUTS_COLLECTION,
    AUDIT_COLLECTION,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    Upsert,
    Delete,
    /// A reference to one stored chunk of an epoch's proofs ([`EpochChunkRef`] as JSON in
    /// `document`): the reader turns it into the ledger, proof and node documents of the
    /// chunk's nodes when the sync task reads it, so a close appends one entry per chunk
    /// of up to 680 nodes instead of three per node. (Last, so stored entries keep their
    /// encoding.)
    EpochChunk,
}

/// What an [`Op::EpochChunk`] entry names: the chunk of `epoch`'s proof rows whose first
/// node is `first_node_id`, and the ledger sequence numbers its credits took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochChunkRef {
    pub site_id: String,
    pub epoch: u64,
    pub first_node_id: String,
    /// Ledger entries of this chunk have sequence numbers in `(ledger_seq_after, ledger_seq_last]`.
    pub ledger_seq_after: u64,
    pub ledger_seq_last: u64,
}

/// One outbox entry: the whole document to store under `doc_id` (or its deletion).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxEntry {
    pub collection: String,
    /// `{site_id}:{natural id}`: the MongoDB `_id`.
    pub doc_id: String,
    pub op: Op,
    /// JSON object text (empty for a delete); carries `_id` and `site_id`.
    pub document: String,
}

/// What the writer hands every batch when the mirror is enabled.
pub struct OutboxConfig {
    pub site_id: String,
    pub max_entries: u64,
    pub status: Arc<OutboxStatus>,
}

/// The outbox as the rest of the process sees it without a read transaction: kept
/// current by the batches that append and acknowledge entries. The mirror's status
/// (`sync::MirrorStatus`) holds one and shows it in `/health` and `/metrics`.
#[derive(Default)]
pub struct OutboxStatus {
    /// Entries waiting for MongoDB.
    pub len: AtomicU64,
    /// The outbox hit its bound; a full resync is pending.
    pub overflowed: AtomicBool,
    near_full_warned: AtomicBool,
}

impl OutboxStatus {
    /// Records the outbox length; warns once when it reaches 80 % of the bound.
    pub fn note_len(&self, len: u64, max: u64) {
        self.len.store(len, Ordering::Relaxed);
        let near = len.saturating_mul(5) >= max.saturating_mul(4);
        if near && !self.near_full_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                outbox = len,
                max_entries = max,
                "mirror outbox is at 80% of OUTBOX_MAX_ENTRIES: MongoDB is not keeping up or unreachable; at the bound, queuing stops and a full resync follows"
            );
        } else if !near && len.saturating_mul(10) < max.saturating_mul(7) {
            self.near_full_warned.store(false, Ordering::Relaxed);
        }
    }
}

/// Per-transaction outbox cursor, loaded on first use.
#[derive(Default)]
pub(crate) struct OutboxState {
    /// (next sequence number, current length)
    cursor: Option<(u64, u64)>,
    /// The overflow marker as read at the start of this transaction (or set in it).
    blocked: Option<bool>,
}

fn doc_id(site_id: &str, natural: &str) -> String {
    format!("{site_id}:{natural}")
}

/// Adds `_id` and `site_id` to a view.
fn with_ids(site_id: &str, natural: &str, view: impl Serialize) -> Value {
    let mut v = serde_json::to_value(view).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut v {
        map.insert("_id".into(), Value::String(doc_id(site_id, natural)));
        map.insert("site_id".into(), Value::String(site_id.to_string()));
    }
    v
}

fn node_doc(site: &str, n: &Node) -> (String, Value) {
    (
        n.node_id.clone(),
        with_ids(site, &n.node_id, NodeView::from(n)),
    )
}

fn pool_doc(site: &str, p: &Pool, members: Vec<String>) -> (String, Value) {
    let view = PoolDocument::new(p, members);
    (p.pool_id.clone(), with_ids(site, &p.pool_id, view))
}

fn proof_doc(site: &str, p: &Proof, epoch: Option<&Epoch>) -> (String, Value) {
    let natural = format!("{}:{}", p.node_id, p.epoch);
    let view = match epoch {
        Some(e) => serde_json::to_value(p.document(e)).unwrap_or(Value::Null),
        // The epoch record was not found: the proof's own fields.
        None => serde_json::to_value(BareProofDocument::from(p)).unwrap_or(Value::Null),
    };
    let id = natural.clone();
    (natural, with_ids(site, &id, view))
}

fn ledger_doc(site: &str, e: &LedgerEntry) -> (String, Value) {
    let natural = format!("{}:{}", e.node_id, e.seq);
    let mut v = with_ids(site, &natural, LedgerEntryView::from(e));
    v["node_id"] = Value::String(e.node_id.clone());
    (natural, v)
}

fn payout_doc(site: &str, p: &Payout) -> (String, Value) {
    (
        p.payout_id.clone(),
        with_ids(site, &p.payout_id, PayoutView::from(p)),
    )
}

fn audit_doc(site: &str, e: &AuditEvent) -> (String, Value) {
    let natural = e.seq.to_string();
    let v = with_ids(site, &natural, AuditEventView::from(e.clone()));
    (natural, v)
}

/// The members of a pool, in id order.
fn pool_members(
    t: &impl ReadableTable<(&'static str, &'static str), ()>,
    pool_id: &str,
) -> StoreResult<Vec<String>> {
    let mut out = Vec::new();
    for entry in t.range::<(&str, &str)>((pool_id, "")..)? {
        let (k, _) = entry?;
        let (p, n) = k.value();
        if p != pool_id {
            break;
        }
        out.push(n.to_string());
    }
    Ok(out)
}

impl Batch<'_> {
    /// Appends an upsert of `doc` to the outbox, unless the outbox is at its bound.
    fn outbox_upsert(&mut self, collection: &str, natural: &str, doc: Value) -> StoreResult<()> {
        self.outbox_append(collection, natural, Op::Upsert, doc.to_string())
            .map(|_| ())
    }

    /// Appends one entry to the outbox, unless the outbox is at its bound; returns its
    /// sequence number when it did.
    fn outbox_append(
        &mut self,
        collection: &str,
        natural: &str,
        op: Op,
        document: String,
    ) -> StoreResult<Option<u64>> {
        let Some(cfg) = self.mirror else {
            return Ok(None);
        };
        if self.outbox.blocked.is_none() {
            let meta = self.txn.open_table(META)?;
            let blocked = super::batch::meta_u64(&meta, MIRROR_OVERFLOW_KEY)?.unwrap_or(0) != 0;
            self.outbox.blocked = Some(blocked);
        }
        if self.outbox.blocked == Some(true) {
            return Ok(None);
        }
        let mut table = self.txn.open_table(OUTBOX)?;
        let (next, len) = match self.outbox.cursor {
            Some(c) => c,
            None => {
                let next = table.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1);
                (next, table.len()?)
            }
        };
        if len >= cfg.max_entries {
            drop(table);
            self.outbox.blocked = Some(true);
            self.txn
                .open_table(META)?
                .insert(MIRROR_OVERFLOW_KEY, 1u64.to_le_bytes().as_slice())?;
            cfg.status.overflowed.store(true, Ordering::Relaxed);
            tracing::error!(
                max_entries = cfg.max_entries,
                "mirror outbox is full: changes are no longer queued for MongoDB; a full resync runs when MongoDB is reachable again (raise OUTBOX_MAX_ENTRIES or fix the connection)"
            );
            return Ok(None);
        }
        let entry = OutboxEntry {
            collection: collection.to_string(),
            doc_id: doc_id(&cfg.site_id, natural),
            op,
            document,
        };
        table.insert(next, encode(&entry).as_slice())?;
        self.outbox.cursor = Some((next + 1, len + 1));
        cfg.status.note_len(len + 1, cfg.max_entries);
        Ok(Some(next))
    }

    /// Queues a stored chunk of `epoch`'s proofs (first node `first_node_id`, ledger
    /// sequence numbers `(seq_after, seq_last]`) as one reference: the sync task renders
    /// its documents when it sends them (`Reader::outbox_entries`).
    pub(super) fn mirror_epoch_chunk(
        &mut self,
        epoch: u64,
        first_node_id: &str,
        (seq_after, seq_last): (u64, u64),
    ) -> StoreResult<()> {
        let Some(cfg) = self.mirror else {
            return Ok(());
        };
        let chunk = EpochChunkRef {
            site_id: cfg.site_id.clone(),
            epoch,
            first_node_id: first_node_id.to_string(),
            ledger_seq_after: seq_after,
            ledger_seq_last: seq_last,
        };
        let natural = format!("chunk:{epoch}:{first_node_id}");
        let document = serde_json::to_string(&chunk).unwrap_or_default();
        if let Some(seq) =
            self.outbox_append(PROOFS_COLLECTION, &natural, Op::EpochChunk, document)?
        {
            let mut meta = self.txn.open_table(META)?;
            let floor = super::batch::meta_u64(&meta, MIRROR_CHUNK_FLOOR_KEY)?;
            if floor.is_none_or(|f| f > epoch) {
                meta.insert(MIRROR_CHUNK_FLOOR_KEY, epoch.to_le_bytes().as_slice())?;
                meta.insert(MIRROR_CHUNK_FLOOR_SEQ_KEY, seq.to_le_bytes().as_slice())?;
            }
        }
        Ok(())
    }

    pub(super) fn mirror_node(&mut self, node: &Node) -> StoreResult<()> {
        if let Some(cfg) = self.mirror {
            let (id, doc) = node_doc(&cfg.site_id, node);
            self.outbox_upsert(NODES_COLLECTION, &id, doc)?;
        }
        Ok(())
    }

    pub(super) fn mirror_pool(&mut self, pool: &Pool) -> StoreResult<()> {
        if let Some(cfg) = self.mirror {
            let members = pool_members(&self.txn.open_table(POOL_MEMBERS)?, &pool.pool_id)?;
            let (id, doc) = pool_doc(&cfg.site_id, pool, members);
            self.outbox_upsert(POOLS_COLLECTION, &id, doc)?;
        }
        Ok(())
    }

    pub(super) fn mirror_ledger(&mut self, entry: &LedgerEntry) -> StoreResult<()> {
        if let Some(cfg) = self.mirror {
            let (id, doc) = ledger_doc(&cfg.site_id, entry);
            self.outbox_upsert(LEDGER_COLLECTION, &id, doc)?;
        }
        Ok(())
    }

    pub(super) fn mirror_payout(&mut self, payout: &Payout) -> StoreResult<()> {
        if let Some(cfg) = self.mirror {
            let (id, doc) = payout_doc(&cfg.site_id, payout);
            self.outbox_upsert(PAYOUTS_COLLECTION, &id, doc)?;
        }
        Ok(())
    }

    pub(super) fn mirror_audit(&mut self, event: &AuditEvent) -> StoreResult<()> {
        if let Some(cfg) = self.mirror {
            let (id, doc) = audit_doc(&cfg.site_id, event);
            self.outbox_upsert(AUDIT_COLLECTION, &id, doc)?;
        }
        Ok(())
    }

    // ---- used by the sync task (through the writer) ----

    /// Deletes acknowledged entries: every entry with a sequence number up to `upto`.
    pub fn outbox_ack(&mut self, upto: u64) -> StoreResult<u64> {
        let mut t = self.txn.open_table(OUTBOX)?;
        let mut removed = 0u64;
        t.retain_in(..=upto, |_, _| {
            removed += 1;
            false
        })?;
        let len = t.len()?;
        // Once the reference that set the floor is acknowledged, the floor moves to the
        // next reference left (closes append them in epoch order), or goes.
        let floor_seq =
            super::batch::meta_u64(&self.txn.open_table(META)?, MIRROR_CHUNK_FLOOR_SEQ_KEY)?;
        if floor_seq.is_some_and(|s| s <= upto) {
            let mut floor = None;
            for entry in t.range(upto.saturating_add(1)..)? {
                let (seq, v) = entry?;
                let e: OutboxEntry = decode(v.value())?;
                if e.op == Op::EpochChunk {
                    floor = serde_json::from_str::<EpochChunkRef>(&e.document)
                        .ok()
                        .map(|c| (c.epoch, seq.value()));
                    break;
                }
            }
            let mut meta = self.txn.open_table(META)?;
            match floor {
                Some((epoch, seq)) => {
                    meta.insert(MIRROR_CHUNK_FLOOR_KEY, epoch.to_le_bytes().as_slice())?;
                    meta.insert(MIRROR_CHUNK_FLOOR_SEQ_KEY, seq.to_le_bytes().as_slice())?;
                }
                None => {
                    meta.remove(MIRROR_CHUNK_FLOOR_KEY)?;
                    meta.remove(MIRROR_CHUNK_FLOOR_SEQ_KEY)?;
                }
            }
        }
        drop(t);
        self.outbox.cursor = None;
        if let Some(cfg) = self.mirror {
            cfg.status.note_len(len, cfg.max_entries);
        }
        Ok(removed)
    }

    /// Starts a full resync: empties the outbox, clears the overflow marker and the
    /// "initialized" marker (so a crash during the copy restarts it).
    pub fn outbox_reset_for_full_sync(&mut self) -> StoreResult<()> {
        self.txn.delete_table(OUTBOX)?;
        self.txn.open_table(OUTBOX)?;
        let mut meta = self.txn.open_table(META)?;
        meta.remove(MIRROR_OVERFLOW_KEY)?;
        meta.remove(MIRROR_INITIALIZED_KEY)?;
        meta.remove(MIRROR_CHUNK_FLOOR_KEY)?;
        meta.remove(MIRROR_CHUNK_FLOOR_SEQ_KEY)?;
        drop(meta);
        self.outbox.cursor = None;
        self.outbox.blocked = Some(false);
        if let Some(cfg) = self.mirror {
            cfg.status.overflowed.store(false, Ordering::Relaxed);
            cfg.status.note_len(0, cfg.max_entries);
        }
        Ok(())
    }

    /// Marks the full copy done.
    pub fn mirror_mark_initialized(&mut self) -> StoreResult<()> {
        self.set_meta_u64(MIRROR_INITIALIZED_KEY, 1)
    }
}

// ---- reading, for the sync task ----

/// Where a full copy of one collection stands (the last key copied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cursor {
    Start,
    Str(String),
    StrU64(String, u64),
    U64(u64),
    Done,
}

impl Reader {
    /// Outbox length, last sequence number and the two META markers (initialized,
    /// overflowed), in this reader's snapshot.
    pub fn outbox_state(&self) -> StoreResult<(u64, u64, bool, bool)> {
        read_state(&self.txn)
    }

    /// The outbox entries after `after`, in order, with each epoch-chunk reference
    /// turned into its documents (they share the reference's sequence number); stops
    /// after the entry that reaches `limit` documents.
    pub fn outbox_entries(&self, after: u64, limit: usize) -> StoreResult<Vec<(u64, OutboxEntry)>> {
        read_entries(&self.txn, after, limit, self.closing.clone())
    }

    /// Whether MongoDB holds every proof of epochs up to `last_epoch` (or will without
    /// reading their rows again): the mirror's full copy is done, it did not overflow, and
    /// no outbox reference to a chunk of those epochs is waiting. Rolling a day up deletes
    /// its rows, so with the mirror on it waits for this.
    pub fn mirror_holds_epochs_through(&self, last_epoch: u64) -> StoreResult<bool> {
        let (_, _, initialized, overflowed) = read_state(&self.txn)?;
        let meta = self.txn.open_table(META)?;
        let floor = super::batch::meta_u64(&meta, MIRROR_CHUNK_FLOOR_KEY)?;
        Ok(initialized && !overflowed && floor.is_none_or(|f| f > last_epoch))
    }

    /// One page of a collection's mirror documents after `cursor`, for the full copy; the
    /// cursor to continue from comes with it.
    pub fn mirror_page(
        &self,
        collection: &str,
        cursor: &Cursor,
        site: &str,
        limit: usize,
    ) -> StoreResult<(Vec<(String, Value)>, Cursor)> {
        snapshot_page(&self.txn, collection, cursor, site, limit)
    }
}

/// See [`Reader::outbox_entries`].
fn read_entries(
    txn: &redb::ReadTransaction,
    after: u64,
    limit: usize,
    closing: Option<Arc<ClosingTree>>,
) -> StoreResult<Vec<(u64, OutboxEntry)>> {
    let t = txn.open_table(OUTBOX)?;
    let mut out = Vec::new();
    let mut proofs = None;
    for entry in t.range(after + 1..)? {
        let (k, v) = entry?;
        let e: OutboxEntry = decode(v.value())?;
        if e.op == Op::EpochChunk {
            let tables = match &mut proofs {
                Some(t) => t,
                None => proofs.insert(super::epoch_rows::read_tables(txn, closing.clone())?),
            };
            expand_chunk(txn, tables, k.value(), &e, &mut out)?;
        } else {
            out.push((k.value(), e));
        }
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// The documents an epoch-chunk reference stands for, in the order a node-by-node close
/// queued them: per node, its ledger entry of the chunk (if any), its proof (as the API
/// serves it) and its node document (as it is now: later changes are newer still).
fn expand_chunk<R, B, I, E>(
    txn: &redb::ReadTransaction,
    tables: &super::epoch_rows::ProofTables<R, B, I, E>,
    seq: u64,
    reference: &OutboxEntry,
    out: &mut Vec<(u64, OutboxEntry)>,
) -> StoreResult<()>
where
    R: ReadableTable<(u64, &'static str), &'static [u8]>,
    B: ReadableTable<u64, &'static [u8]>,
    I: ReadableTable<u32, &'static str>,
    E: ReadableTable<u64, &'static [u8]>,
{
    use super::tables::LEDGER;
    let chunk: EpochChunkRef = match serde_json::from_str(&reference.document) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, entry = seq, "MongoDB mirror: an epoch-chunk reference does not parse; skipped");
            return Ok(());
        }
    };
    let Some((record, proofs)) = tables.chunk_proofs(chunk.epoch, &chunk.first_node_id)? else {
        // Rolled up while the mirror was off: the reference outlived its rows.
        tracing::warn!(
            epoch = chunk.epoch,
            "MongoDB mirror: a referenced chunk of proofs is no longer stored; skipped"
        );
        return Ok(());
    };
    let site = chunk.site_id.as_str();
    let ledger = txn.open_table(LEDGER)?;
    let nodes = super::accounts::read_tables(txn)?;
    let mut push = |collection: &str, (natural, doc): (String, Value)| {
        out.push((
            seq,
            OutboxEntry {
                collection: collection.to_string(),
                doc_id: doc_id(site, &natural),
                op: Op::Upsert,
                document: doc.to_string(),
            },
        ));
    };
    for proof in proofs {
        let node = proof.node_id.as_str();
        if chunk.ledger_seq_last > chunk.ledger_seq_after {
            let range = (node, chunk.ledger_seq_after + 1)..=(node, chunk.ledger_seq_last);
            for entry in ledger.range(range)? {
                let (_, v) = entry?;
                push(LEDGER_COLLECTION, ledger_doc(site, &decode(v.value())?));
            }
        }
        push(PROOFS_COLLECTION, proof_doc(site, &proof, Some(&record)));
        if let Some(n) = nodes.get(node)? {
            push(NODES_COLLECTION, node_doc(site, &n));
        }
    }
    Ok(())
}

/// Outbox length, last sequence number and the two META markers
/// (initialized, overflowed).
fn read_state(txn: &redb::ReadTransaction) -> StoreResult<(u64, u64, bool, bool)> {
    let t = txn.open_table(OUTBOX)?;
    let len = t.len()?;
    let last = t.last()?.map(|(k, _)| k.value()).unwrap_or(0);
    let meta = txn.open_table(META)?;
    let init = super::batch::meta_u64(&meta, MIRROR_INITIALIZED_KEY)?.unwrap_or(0) != 0;
    let over = super::batch::meta_u64(&meta, MIRROR_OVERFLOW_KEY)?.unwrap_or(0) != 0;
    Ok((len, last, init, over))
}

/// One page of a collection's documents from a snapshot, for the full copy.
fn snapshot_page(
    txn: &redb::ReadTransaction,
    collection: &str,
    cursor: &Cursor,
    site: &str,
    limit: usize,
) -> StoreResult<(Vec<(String, Value)>, Cursor)> {
    use super::tables::{AUDIT, LEDGER, NODES, PAYOUTS, POOLS};
    let mut docs = Vec::new();
    let mut next = Cursor::Done;
    match collection {
        // After the PAYOUTS rows and the LEDGER rows, the payouts and entries the runs
        // stored in chunks (see `payout_chunks`), value by value: `U64(key)` is the last
        // value copied (keys are stamps, never 0).
        PAYOUTS_COLLECTION | LEDGER_COLLECTION if matches!(cursor, Cursor::U64(_)) => {
            let Cursor::U64(done) = cursor else {
                unreachable!("matched above")
            };
            let payouts = txn.open_table(PAYOUTS)?;
            let chunks = txn.open_table(super::tables::PAYOUT_CHUNKS)?;
            for entry in
                chunks.range((std::ops::Bound::Excluded(*done), std::ops::Bound::Unbounded))?
            {
                let (k, v) = entry?;
                let value: Vec<super::payout_chunks::ChunkedPayout> = decode(v.value())?;
                for c in value {
                    let doc = if collection == PAYOUTS_COLLECTION {
                        // Changed since: copied with the PAYOUTS rows already.
                        if payouts.get(c.payout.payout_id.as_str())?.is_some() {
                            continue;
                        }
                        vec![payout_doc(site, &c.payout)]
                    } else {
                        c.entries.iter().map(|e| ledger_doc(site, e)).collect()
                    };
                    for d in doc {
                        docs.push((doc_id(site, &d.0), d.1));
                    }
                }
                if docs.len() >= limit {
                    next = Cursor::U64(k.value());
                    break;
                }
            }
        }
        NODES_COLLECTION | POOLS_COLLECTION | PAYOUTS_COLLECTION => {
            let def = match collection {
                NODES_COLLECTION => NODES,
                POOLS_COLLECTION => POOLS,
                _ => PAYOUTS,
            };
            let t = txn.open_table(def)?;
            let node_tables = super::accounts::read_tables(txn)?;
            let members = txn.open_table(POOL_MEMBERS)?;
            let from = match cursor {
                Cursor::Str(s) => s.clone(),
                _ => String::new(),
            };
            for entry in t.range(from.as_str()..)? {
                let (k, v) = entry?;
                let key = k.value().to_string();
                if matches!(cursor, Cursor::Str(s) if *s == key) {
                    continue;
                }
                let doc = match collection {
                    NODES_COLLECTION => {
                        let mut n = decode::<Node>(v.value())?;
                        node_tables.complete(&mut n)?;
                        node_doc(site, &n)
                    }
                    POOLS_COLLECTION => {
                        let p: Pool = decode(v.value())?;
                        let m = pool_members(&members, &p.pool_id)?;
                        pool_doc(site, &p, m)
                    }
                    _ => payout_doc(site, &decode::<Payout>(v.value())?),
                };
                docs.push((doc_id(site, &doc.0), doc.1));
                if docs.len() >= limit {
                    next = Cursor::Str(key);
                    break;
                }
            }
            if collection == PAYOUTS_COLLECTION && next == Cursor::Done {
                next = Cursor::U64(0);
            }
        }
        PROOFS_COLLECTION => {
            // Node by node, each node's proofs newest first along its chain; the cursor is
            // the last (node, epoch) copied.
            let proofs = super::epoch_rows::read_tables(txn, None)?;
            let node_tables = super::accounts::read_tables(txn)?;
            let nodes = &node_tables.nodes;
            let (from_node, mut before) = match cursor {
                Cursor::StrU64(s, n) => (s.clone(), Some(*n)),
                _ => (String::new(), None),
            };
            'nodes: for entry in nodes.range(from_node.as_str()..)? {
                let (k, v) = entry?;
                let node_id = k.value();
                if node_id != from_node {
                    before = None;
                }
                let mut node = decode::<Node>(v.value())?;
                node_tables.complete(&mut node)?;
                let latest = node.last_proof.map(|(e, _)| e);
                let page = proofs.history(node_id, latest, before, limit - docs.len())?;
                let epoch = |e: u64| -> StoreResult<Option<Epoch>> { proofs.record(e) };
                for p in page.items {
                    let record = epoch(p.epoch)?;
                    let doc = proof_doc(site, &p, record.as_ref());
                    docs.push((doc_id(site, &doc.0), doc.1));
                    if docs.len() >= limit {
                        next = Cursor::StrU64(node_id.to_string(), p.epoch);
                        break 'nodes;
                    }
                }
            }
        }
        LEDGER_COLLECTION => {
            let t = txn.open_table(LEDGER)?;
            let (from_s, from_n) = match cursor {
                Cursor::StrU64(s, n) => (s.clone(), *n),
                _ => (String::new(), 0),
            };
            for entry in t.range((from_s.as_str(), from_n)..)? {
                let (k, v) = entry?;
                let (ks, kn) = k.value();
                if matches!(cursor, Cursor::StrU64(s, n) if s == ks && *n == kn) {
                    continue;
                }
                let doc = ledger_doc(site, &decode::<LedgerEntry>(v.value())?);
                docs.push((doc_id(site, &doc.0), doc.1));
                if docs.len() >= limit {
                    next = Cursor::StrU64(ks.to_string(), kn);
                    break;
                }
            }
            if next == Cursor::Done {
                next = Cursor::U64(0);
            }
        }
        _ => {
            let t = txn.open_table(AUDIT)?;
            let from = match cursor {
                Cursor::U64(n) => *n + 1,
                _ => 0,
            };
            for entry in t.range(from..)? {
                let (k, v) = entry?;
                let doc = audit_doc(site, &decode::<AuditEvent>(v.value())?);
                docs.push((doc_id(site, &doc.0), doc.1));
                if docs.len() >= limit {
                    next = Cursor::U64(k.value());
                    break;
                }
            }
        }
    }
    Ok((docs, next))
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // writes batches without a writer thread
mod tests {
    use serde_json::json;

    use super::*;
    use crate::clock::Clock;
    use crate::store::batch::{Actor, AuditHead};

    fn pool(i: u32) -> Pool {
        Pool {
            pool_id: format!("pool_{i}"),
            name: format!("p{i}"),
            region: None,
            capacity: 5,
            member_count: 0,
            created_at_us: 1,
        }
    }

    fn write(
        store: &crate::store::Store,
        cfg: Option<&OutboxConfig>,
        f: impl FnOnce(&mut Batch<'_>),
    ) {
        let clock = Clock::new();
        let txn = store.db.begin_write().unwrap();
        let mut head = AuditHead::load(&txn).unwrap();
        {
            let mut b = Batch::new(&txn, &mut head, &clock).with_mirror(cfg);
            f(&mut b);
            b.persist_clock_high_water().unwrap();
        }
        txn.commit().unwrap();
    }

    fn state(store: &crate::store::Store) -> (u64, u64, bool, bool) {
        read_state(&store.db.begin_read().unwrap()).unwrap()
    }

    #[test]
    fn without_a_mirror_nothing_is_queued() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(dir.path(), 100, &Clock::new()).unwrap();
        write(&store, None, |b| {
            b.put_pool(&pool(1), true).unwrap();
            b.audit(&Actor::system(), "pool.create", "pool_1", json!({}))
                .unwrap();
        });
        assert_eq!(state(&store).0, 0);
    }

    #[test]
    fn changes_are_queued_in_order_and_the_bound_stops_queuing_until_a_full_resync() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(dir.path(), 100, &Clock::new()).unwrap();
        let cfg = OutboxConfig {
            site_id: "s".into(),
            max_entries: 3,
            status: Default::default(),
        };
        write(&store, Some(&cfg), |b| {
            b.put_pool(&pool(1), true).unwrap();
            b.audit(&Actor::system(), "pool.create", "pool_1", json!({}))
                .unwrap();
        });
        let entries = read_entries(&store.db.begin_read().unwrap(), 0, 10, None).unwrap();
        let ids: Vec<&str> = entries.iter().map(|(_, e)| e.doc_id.as_str()).collect();
        assert_eq!(ids, vec!["s:pool_1", "s:2"]);
        let doc: Value = serde_json::from_str(&entries[0].1.document).unwrap();
        assert_eq!(
            (doc["_id"].as_str(), doc["site_id"].as_str()),
            (Some("s:pool_1"), Some("s"))
        );

        // Past the bound: the change commits, its entry does not, the marker is set.
        write(&store, Some(&cfg), |b| {
            for i in 2..6 {
                b.put_pool(&pool(i), true).unwrap();
            }
        });
        assert_eq!(state(&store), (3, 3, false, true));
        assert!(store.reader().unwrap().pool("pool_5").unwrap().is_some());
        assert!(cfg.status.overflowed.load(Ordering::Relaxed));
        // Still blocked in later transactions.
        write(&store, Some(&cfg), |b| b.put_pool(&pool(9), true).unwrap());
        assert_eq!(state(&store).0, 3);

        // The sync task's full resync empties the outbox and queuing resumes.
        write(&store, Some(&cfg), |b| {
            b.outbox_reset_for_full_sync().unwrap()
        });
        assert_eq!(state(&store), (0, 0, false, false));
        write(&store, Some(&cfg), |b| b.put_pool(&pool(10), true).unwrap());
        let (len, last, _, _) = state(&store);
        assert_eq!(len, 1);
        write(&store, Some(&cfg), |b| {
            b.outbox_ack(last).unwrap();
            b.mirror_mark_initialized().unwrap();
        });
        assert_eq!(state(&store), (0, 0, true, false));
    }

    #[test]
    fn chunk_references_hold_back_the_roll_up_of_their_epochs_until_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(dir.path(), 100, &Clock::new()).unwrap();
        let cfg = OutboxConfig {
            site_id: "s".into(),
            max_entries: 100,
            status: Default::default(),
        };
        let holds = |epoch| {
            store
                .reader()
                .unwrap()
                .mirror_holds_epochs_through(epoch)
                .unwrap()
        };
        // Before the first full copy MongoDB holds nothing.
        assert!(!holds(0));
        write(&store, Some(&cfg), |b| b.mirror_mark_initialized().unwrap());
        assert!(holds(u64::MAX));
        write(&store, Some(&cfg), |b| {
            b.put_pool(&pool(1), true).unwrap(); // 1
            b.mirror_epoch_chunk(7, "node_a", (0, 0)).unwrap(); // 2
            b.put_pool(&pool(2), true).unwrap(); // 3
            b.mirror_epoch_chunk(8, "node_a", (0, 0)).unwrap(); // 4
        });
        assert!(holds(6));
        assert!(!holds(7));
        // A reference whose rows are gone (no such chunk here) is skipped when read.
        let entries = read_entries(&store.db.begin_read().unwrap(), 0, 10, None).unwrap();
        let ids: Vec<&str> = entries.iter().map(|(_, e)| e.doc_id.as_str()).collect();
        assert_eq!(ids, vec!["s:pool_1", "s:pool_2"]);

        write(&store, Some(&cfg), |b| {
            b.outbox_ack(1).unwrap();
        });
        assert!(!holds(7), "epoch 7's reference is still waiting");
        write(&store, Some(&cfg), |b| {
            b.outbox_ack(2).unwrap();
        });
        assert!(holds(7));
        assert!(!holds(8));
        write(&store, Some(&cfg), |b| {
            b.outbox_ack(4).unwrap();
        });
        assert!(holds(u64::MAX));
        // An overflow (references were dropped) holds every epoch back until a full copy.
        write(&store, Some(&cfg), |b| {
            b.set_meta_u64(MIRROR_OVERFLOW_KEY, 1).unwrap()
        });
        assert!(!holds(0));
    }

    /// One document of each mirrored collection, exactly as the outbox stores it (the
    /// JSON text of `OutboxEntry::document`). MongoDB holds these documents: a change of
    /// text here is a change of the mirror's data.
    mod pinned_documents {
        use rust_decimal::Decimal;

        use super::*;
        use crate::domain::ledger::EntryKind;
        use crate::domain::node::NodeStatus;
        use crate::domain::payout::PayoutState;

        const SITE: &str = "site-a";
        /// 2024-05-06T07:08:09.123456Z
        const T: u64 = 1_714_979_289_123_456;

        /// With the mirror (cargo feature `mongo-sync`), bson turns on serde_json's
        /// `preserve_order`: keys keep their insertion order and the text is pinned byte
        /// for byte. Without it (no mirror runs then) keys are sorted: same document.
        fn assert_pinned(natural: &str, (id, doc): (String, Value), expected: &str) {
            assert_eq!(id, natural);
            if cfg!(feature = "mongo-sync") {
                assert_eq!(doc.to_string(), expected);
            } else {
                assert_eq!(doc, serde_json::from_str::<Value>(expected).unwrap());
            }
        }

        fn proof() -> Proof {
            Proof {
                node_id: "node_a1".into(),
                epoch: 5_716_597,
                window_start_us: 1_714_979_100_000_000,
                window_end_us: 1_714_979_400_000_000,
                operational_seconds: 290,
                heartbeat_count: 10,
                heartbeats_root: [0x11; 32],
                credits_usdt: Decimal::new(4_027_777, 9),
                prev_proof_hash: Some([0x22; 32]),
                proof_hash: [0x33; 32],
                inclusion_path: vec![(true, [0x44; 32]), (false, [0x55; 32])],
            }
        }

        #[test]
        fn node() {
            let n = Node {
                node_id: "node_a1".into(),
                name: "relay \"one\"".into(),
                operator_id: "op_7".into(),
                public_key: [7; 32],
                payout_address: Some("TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t".into()),
                region: None,
                pool_id: Some("pool_x".into()),
                status: NodeStatus::Online,
                registered_at_us: T,
                last_heartbeat_at_us: Some(T + 1),
                balance_usdt: Decimal::new(12_345_678, 7),
                operational_seconds_total: 86_400,
                token_generation: 3,
                last_seq: Some(9),
                credit_carry: Decimal::new(1, 12),
                last_proof: Some((5, [1; 32])),
                credits_pending_usdt: Decimal::ZERO,
                credits_pending_day: 0,
            };
            assert_pinned("node_a1", node_doc(SITE, &n), NODE);
        }

        #[test]
        fn pool() {
            let p = Pool {
                pool_id: "pool_x".into(),
                name: "Lisbon".into(),
                region: Some("eu-west".into()),
                capacity: 50,
                member_count: 2,
                created_at_us: T,
            };
            let members = vec!["node_a1".to_string(), "node_b2".to_string()];
            assert_pinned("pool_x", pool_doc(SITE, &p, members), POOL);
        }

        #[test]
        fn proof_with_its_epoch() {
            let e = Epoch {
                epoch: 5_716_597,
                root: [0x66; 32],
                signature: vec![0xab; 64],
                key_id: "k1".into(),
                proof_count: 3,
                closed_at_us: T,
                length_us: 300_000_000,
                timeout_us: 90_000_000,
                reward_per_hour: Decimal::new(5, 2),
            };
            assert_pinned(
                "node_a1:5716597",
                proof_doc(SITE, &proof(), Some(&e)),
                PROOF,
            );
        }

        #[test]
        fn proof_without_its_epoch() {
            let mut p = proof();
            p.prev_proof_hash = None;
            assert_pinned(
                "node_a1:5716597",
                proof_doc(SITE, &p, None),
                PROOF_WITHOUT_EPOCH,
            );
        }

        #[test]
        fn ledger_entry() {
            let e = LedgerEntry {
                seq: 42,
                node_id: "node_a1".into(),
                at_us: T,
                kind: EntryKind::Debit,
                amount: Decimal::new(-25, 1),
                reference: "payout:payout_9".into(),
            };
            assert_pinned("node_a1:42", ledger_doc(SITE, &e), LEDGER);
        }

        #[test]
        fn payout() {
            let p = Payout {
                payout_id: "payout_9".into(),
                node_id: "node_a1".into(),
                amount: Decimal::new(25, 1),
                payout_address: "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t".into(),
                state: PayoutState::Submitted,
                created_at_us: T,
                updated_at_us: T + 1_000_000,
                tx_hash: None,
                attempts: 2,
                error: Some("the webhook answered 502".into()),
                next_attempt_at_us: Some(T + 60_000_000),
                needs_attention: false,
            };
            assert_pinned("payout_9", payout_doc(SITE, &p), PAYOUT);
        }

        #[test]
        fn audit_event() {
            let e = AuditEvent {
                seq: 7,
                at_us: T,
                actor_subject: "admin".into(),
                actor_role: "admin".into(),
                action: "pool.create".into(),
                target: "pool_x".into(),
                detail: r#"{"name":"Lisbon","capacity":50}"#.into(),
                prev_hash: Some([0x77; 32]),
                hash: [0x88; 32],
            };
            assert_pinned("7", audit_doc(SITE, &e), AUDIT);
        }

        const NODE: &str = r#"{"node_id":"node_a1","name":"relay \"one\"","operator_id":"op_7","public_key":"BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=","payout_address":"TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t","region":null,"pool_id":"pool_x","status":"online","registered_at":"2024-05-06T07:08:09.123456Z","last_heartbeat_at":"2024-05-06T07:08:09.123457Z","balance_usdt":"1.234567","operational_seconds_total":86400,"_id":"site-a:node_a1","site_id":"site-a"}"#;
        const POOL: &str = r#"{"pool_id":"pool_x","name":"Lisbon","region":"eu-west","capacity":50,"member_count":2,"members":["node_a1","node_b2"],"created_at":"2024-05-06T07:08:09.123456Z","_id":"site-a:pool_x","site_id":"site-a"}"#;
        const PROOF: &str = r#"{"node_id":"node_a1","epoch":5716597,"window_start":"2024-05-06T07:05:00.000000Z","window_end":"2024-05-06T07:10:00.000000Z","operational_seconds":290,"heartbeat_count":10,"heartbeats_root":"1111111111111111111111111111111111111111111111111111111111111111","credits_usdt":"0.004027","score":"96.67","prev_proof_hash":"2222222222222222222222222222222222222222222222222222222222222222","proof_hash":"3333333333333333333333333333333333333333333333333333333333333333","epoch_root":"6666666666666666666666666666666666666666666666666666666666666666","inclusion_path":["L:4444444444444444444444444444444444444444444444444444444444444444","R:5555555555555555555555555555555555555555555555555555555555555555"],"epoch_signature":"q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6urqw==","key_id":"k1","_id":"site-a:node_a1:5716597","site_id":"site-a"}"#;
        const PROOF_WITHOUT_EPOCH: &str = r#"{"node_id":"node_a1","epoch":5716597,"window_start":"2024-05-06T07:05:00.000000Z","window_end":"2024-05-06T07:10:00.000000Z","operational_seconds":290,"heartbeat_count":10,"heartbeats_root":"1111111111111111111111111111111111111111111111111111111111111111","credits_usdt":"0.004027","prev_proof_hash":null,"proof_hash":"3333333333333333333333333333333333333333333333333333333333333333","_id":"site-a:node_a1:5716597","site_id":"site-a"}"#;
        const LEDGER: &str = r#"{"seq":42,"at":"2024-05-06T07:08:09.123456Z","kind":"debit","amount_usdt":"-2.500000","reference":"payout:payout_9","_id":"site-a:node_a1:42","site_id":"site-a","node_id":"node_a1"}"#;
        const PAYOUT: &str = r#"{"payout_id":"payout_9","node_id":"node_a1","amount_usdt":"2.500000","payout_address":"TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t","state":"submitted","created_at":"2024-05-06T07:08:09.123456Z","updated_at":"2024-05-06T07:08:10.123456Z","tx_hash":null,"attempts":2,"error":"the webhook answered 502","next_attempt_at":"2024-05-06T07:09:09.123456Z","needs_attention":false,"_id":"site-a:payout_9","site_id":"site-a"}"#;
        const AUDIT: &str = r#"{"seq":7,"at":"2024-05-06T07:08:09.123456Z","actor":{"subject":"admin","role":"admin"},"action":"pool.create","target":"pool_x","detail":{"name":"Lisbon","capacity":50},"prev_hash":"7777777777777777777777777777777777777777777777777777777777777777","hash":"8888888888888888888888888888888888888888888888888888888888888888","detail_json":"{\"name\":\"Lisbon\",\"capacity\":50}","_id":"site-a:7","site_id":"site-a"}"#;
    }
}
