//! Table definitions. Keys are chosen for range scans; values are bincode (see `codec`).

use redb::{Key, TableDefinition, Value};

/// `schema_version` and other single values.
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// node_id -> Node
pub const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
/// public key bytes -> node_id (a key registers once)
pub(crate) const NODE_KEYS: TableDefinition<&[u8], &str> = TableDefinition::new("node_keys");
/// (operator_id, node_id) -> () : an operator's nodes in id order
pub(crate) const OPERATOR_NODES: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("operator_nodes");
/// (status, node_id) -> () : nodes by status, kept in step with NODES by `Batch::put_node`
/// (schema 2). The alert watcher reads the offline nodes here instead of scanning all.
pub(crate) const NODES_BY_STATUS: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("nodes_by_status");
/// pool_id -> Pool
pub(crate) const POOLS: TableDefinition<&str, &[u8]> = TableDefinition::new("pools");
/// pool name -> pool_id (names are unique)
pub(crate) const POOL_NAMES: TableDefinition<&str, &str> = TableDefinition::new("pool_names");
/// (pool_id, node_id) -> () : a pool's members in id order
pub(crate) const POOL_MEMBERS: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("pool_members");
/// seq -> AuditEvent
pub(crate) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// counter name -> value (nodes per status, pools, members), kept in step with the data
/// inside each transaction so metrics never scan.
pub(crate) const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

pub(crate) const SCHEMA_VERSION_KEY: &str = "schema_version";

/// Counter names.
pub fn status_counter(status: crate::domain::node::NodeStatus) -> String {
    format!("nodes.status.{}", status.as_str())
}
pub const POOLS_COUNTER: &str = "pools";
pub const POOL_MEMBERS_COUNTER: &str = "pool_members";

/// (received_at_us, node_id) -> StoredHeartbeat. Time first: closing an epoch is one
/// sequential range scan, and pruning old heartbeats removes a prefix.
pub const HEARTBEATS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("heartbeats");
/// (epoch, node_id of its first row) -> a chunk of the epoch's proofs as 96-byte rows in
/// leaf order (schema 3; see `epoch_rows`), or, since schema 6, a pack of runs of rows of
/// consecutive epochs keyed by its first run (`epoch_packs`).
pub(crate) const EPOCH_ROWS: TableDefinition<(u64, &str), &[u8]> =
    TableDefinition::new("epoch_rows");
/// epoch -> the roots of its 512-proof blocks, 32 bytes each (inclusion paths are
/// computed from one block and these).
pub(crate) const EPOCH_BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("epoch_blocks");
/// day (UTC, days since 1970-01-01) -> DayRoot: a rolled-up day's signed root (kept forever).
pub(crate) const DAYS: TableDefinition<u64, &[u8]> = TableDefinition::new("days");
/// day -> the roots of its 512-record blocks, 32 bytes each.
pub(crate) const DAY_BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("day_blocks");
/// (day, node_id of its first row) -> a chunk of the day's records as 144-byte rows in leaf
/// order (see `day_rows`).
pub(crate) const DAY_ROWS: TableDefinition<(u64, &str), &[u8]> = TableDefinition::new("day_rows");
/// node_id -> the index its proof rows name it by (given at registration, never reused).
pub(crate) const NODE_INDEX: TableDefinition<&str, u32> = TableDefinition::new("node_index");
/// node index -> node_id
pub(crate) const NODE_IDS: TableDefinition<u32, &str> = TableDefinition::new("node_ids");
/// node_index / 128 -> the running totals of 128 nodes as 104-byte rows (see `accounts`).
pub(crate) const ACCOUNTS: TableDefinition<u32, &[u8]> = TableDefinition::new("accounts");
/// epoch -> Epoch (root, signature)
pub(crate) const EPOCHS: TableDefinition<u64, &[u8]> = TableDefinition::new("epochs");
/// (node_id, entry seq) -> LedgerEntry: append-only credits and debits.
pub(crate) const LEDGER: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("ledger");

/// META keys (u64 little-endian values).
pub const POOT_CLOSED_UNTIL_KEY: &str = "poot.closed_until_us";
/// The epoch length (µs) this database's epochs were closed with.
pub const POOT_LENGTH_KEY: &str = "poot.length_us";
pub(crate) const LEDGER_SEQ_KEY: &str = "ledger.seq";
pub(crate) const CLOCK_HIGH_WATER_KEY: &str = "clock.high_water_us";
/// Heartbeats received before this have been pruned.
pub const HEARTBEATS_PRUNED_BEFORE_KEY: &str = "heartbeats.pruned_before_us";

pub const HEARTBEATS_COUNTER: &str = "heartbeats.stored";
pub(crate) const PROOFS_COUNTER: &str = "proofs";
/// The next node index to give.
pub(crate) const NODE_INDEX_NEXT_COUNTER: &str = "nodes.index_next";

/// payout_id -> Payout
pub(crate) const PAYOUTS: TableDefinition<&str, &[u8]> = TableDefinition::new("payouts");
/// (node_id, payout_id) -> () : a node's payouts
pub(crate) const NODE_PAYOUTS: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("node_payouts");
/// (state, payout_id) -> () : payouts by state (export, sink work queue)
pub(crate) const PAYOUTS_BY_STATE: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("payouts_by_state");
/// stamp of the first payout id -> up to 48 payouts a run created, with their ledger
/// entries and each node's previous one (see `payout_chunks`).
pub(crate) const PAYOUT_CHUNKS: TableDefinition<u64, &[u8]> = TableDefinition::new("payout_chunks");
/// node_index / 128 -> the stamp of each of 128 nodes' latest chunked payout (8 bytes).
pub(crate) const PAYOUT_HEADS: TableDefinition<u32, &[u8]> = TableDefinition::new("payout_heads");
/// PAYOUT_CHUNKS key -> how many of its payouts are still pending and unchanged.
pub(crate) const OPEN_PAYOUT_CHUNKS: TableDefinition<u64, u64> =
    TableDefinition::new("open_payout_chunks");
/// tx_hash -> payout_id : a receipt confirms one payout only
pub(crate) const TX_HASHES: TableDefinition<&str, &str> = TableDefinition::new("tx_hashes");

pub fn payout_state_counter(state: crate::domain::payout::PayoutState) -> String {
    format!("payouts.state.{}", state.as_str())
}
/// Micro-USDT confirmed paid, in total.
pub const PAID_MICROS_COUNTER: &str = "payouts.paid_micros";

/// seq -> OutboxEntry: changes waiting for the MongoDB mirror (see `outbox`). Empty and
/// untouched when the mirror is off.
pub(crate) const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");

/// subscriber key (`operator:{id}` or `fleet`) -> AlertSettings
pub(crate) const ALERT_SETTINGS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("alert_settings");
/// seq -> QueuedAlert: events written with the change that caused them, removed once a
/// webhook acknowledged them (or after ALERT_MAX_AGE of failures).
pub(crate) const ALERT_QUEUE: TableDefinition<u64, &[u8]> = TableDefinition::new("alert_queue");
/// (subscriber key, node_id) -> when `node.offline` was queued: a `node.online` is owed.
pub(crate) const ALERT_OFFLINE_SENT: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("alert_offline_sent");
pub(crate) const ALERT_SEQ_KEY: &str = "alerts.seq";
pub const ALERTS_QUEUED_COUNTER: &str = "alerts.queued";

/// enrollment_id -> Enrollment: open enrolment codes (stored by hash only). Removed when
/// used up, withdrawn or expired.
pub(crate) const ENROLLMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("enrollments");
/// SHA-256 of a code -> enrollment_id: how a redeemed code finds its enrolment.
pub(crate) const ENROLLMENT_CODES: TableDefinition<&[u8], &str> =
    TableDefinition::new("enrollment_codes");
/// (expires_at_us, enrollment_id) -> () : pruning expired codes removes a prefix.
pub(crate) const ENROLLMENTS_BY_EXPIRY: TableDefinition<(u64, &str), ()> =
    TableDefinition::new("enrollments_by_expiry");
/// "jti:{jti}" or "sub:{subject}" -> Revocation: the token revocations in force, pruned
/// once no token they cover can verify any more (see `domain::revocation`).
pub(crate) const REVOCATIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("revocations");

/// Something done once per table, for every key/value type pair.
pub(crate) trait TableVisitor {
    fn visit<K: Key + 'static, V: Value + 'static>(
        &mut self,
        table: TableDefinition<'static, K, V>,
    ) -> Result<(), String>;
}

/// Every table of the database: the store creates them from this list at open, and a
/// backup copies them. A table defined above must be added here:
/// `snapshot::tests::every_table_defined_in_the_source_is_backed_up` fails otherwise, and at run time a
/// backup of a database holding a table missing from this list is refused rather than made
/// incomplete.
pub(crate) fn visit_tables(v: &mut impl TableVisitor) -> Result<(), String> {
    v.visit(META)?;
    v.visit(NODES)?;
    v.visit(NODE_KEYS)?;
    v.visit(OPERATOR_NODES)?;
    v.visit(NODES_BY_STATUS)?;
    v.visit(POOLS)?;
    v.visit(POOL_NAMES)?;
    v.visit(POOL_MEMBERS)?;
    v.visit(AUDIT)?;
    v.visit(COUNTERS)?;
    v.visit(HEARTBEATS)?;
    v.visit(EPOCH_ROWS)?;
    v.visit(EPOCH_BLOCKS)?;
    v.visit(DAYS)?;
    v.visit(DAY_BLOCKS)?;
    v.visit(DAY_ROWS)?;
    v.visit(NODE_INDEX)?;
    v.visit(NODE_IDS)?;
    v.visit(ACCOUNTS)?;
    v.visit(EPOCHS)?;
    v.visit(LEDGER)?;
    v.visit(PAYOUTS)?;
    v.visit(NODE_PAYOUTS)?;
    v.visit(PAYOUTS_BY_STATE)?;
    v.visit(PAYOUT_CHUNKS)?;
    v.visit(PAYOUT_HEADS)?;
    v.visit(OPEN_PAYOUT_CHUNKS)?;
    v.visit(TX_HASHES)?;
    v.visit(OUTBOX)?;
    v.visit(ALERT_SETTINGS)?;
    v.visit(ALERT_QUEUE)?;
    v.visit(ALERT_OFFLINE_SENT)?;
    v.visit(ENROLLMENTS)?;
    v.visit(ENROLLMENT_CODES)?;
    v.visit(ENROLLMENTS_BY_EXPIRY)?;
    v.visit(REVOCATIONS)?;
    Ok(())
}
