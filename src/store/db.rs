//! Opening the database: schema version check, migrations, first-start initialisation.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, TableError};
use serde_json::json;

use super::batch::{Actor, AuditHead, Batch};
use super::error::StoreError;
use super::error::StoreResult;
use super::liveness::Liveness;
use super::queries::Reader;
use super::space::{DiskSpace, MinFree};
use super::tables::*;
use crate::clock::Clock;
use crate::domain::pool::{Pool, DEFAULT_POOL_ID, DEFAULT_POOL_NAME};

/// The schema this build writes. Bump it with a migration in [`migrate`].
pub const SCHEMA_VERSION: u32 = 6;

/// The oldest schema [`migrate`] can upgrade from. Every release writes its version in the
/// database's first transaction, so a database with data but no version (or version 0)
/// was not written by this program, or is damaged: it is refused, never adopted.
pub(crate) const OLDEST_SCHEMA_VERSION: u32 = 1;

/// File name of the database inside the state directory.
pub const DB_FILE: &str = "lucid.redb";

/// redb's page cache. Its default (1 GiB) lets one full read of a large database (a
/// backup, a verify) grow the service far past the unit's `MemoryMax=256M` on a small
/// board (measured: 505 MiB resident after backing up a 544 MiB database). 16 MiB: the
/// operating system's page cache holds the file anyway, and a larger cache only grew the
/// process. Measured with `cargo bench --bench footprint` at 100k nodes, 64 MiB against
/// 16 MiB: epoch close peak RSS 201.7 against 102.9 MiB (after it 169.4 against 70.7),
/// close 4.23 against 3.85 s, 100k node reads 14.1 against 15.5 s; with
/// `--bench epoch_close` close 2.93 / 2.80 s and payout run 3.21 / 3.09 s.
pub const CACHE_BYTES: usize = 16 << 20;

/// The database file, reopened in place after a storage failure.
///
/// Why: after an I/O error (a full disk, a failed fsync) redb refuses every later
/// operation on that `Database` until it is opened again. The writer reopens it here
/// (redb repairs the file if the failure left it needing that) once the cause clears, so
/// the service recovers by itself, without a restart. Everyone else takes the current
/// handle for one transaction at a time.
#[derive(Clone)]
pub struct DbHandle {
    slot: Arc<std::sync::RwLock<Option<Arc<Database>>>>,
    opener: Opener,
}

/// Opens the database file: the file at a path in the service; a fault-injecting backend
/// in the store's tests.
pub type Opener = Arc<dyn Fn() -> Result<Database, redb::DatabaseError> + Send + Sync>;

/// The opener of the database file at `path`.
pub fn file_opener(path: PathBuf) -> Opener {
    Arc::new(move || {
        Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
    })
}

impl DbHandle {
    fn new(db: Database, opener: Opener) -> Self {
        Self {
            slot: Arc::new(std::sync::RwLock::new(Some(Arc::new(db)))),
            opener,
        }
    }

    /// The open database, or `Unavailable` while a reopen has not succeeded yet.
    pub fn current(&self) -> StoreResult<Arc<Database>> {
        self.slot
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or_else(|| {
                StoreError::unavailable(
                    "the database is being reopened after a storage failure; retry shortly",
                )
            })
    }

    pub fn begin_read(&self) -> StoreResult<redb::ReadTransaction> {
        Ok(self.current()?.begin_read()?)
    }

    pub fn begin_write(&self) -> StoreResult<redb::WriteTransaction> {
        Ok(self.current()?.begin_write()?)
    }

    /// Closes the database and opens it again. Fails (and is tried again later) while the
    /// cause persists (no space to repair the file) or while a reader still holds the old
    /// one.
    pub(crate) fn reopen(&self) -> StoreResult<()> {
        let mut slot = self.slot.write().unwrap_or_else(|e| e.into_inner());
        // Our reference goes first: the file lock is released once the last one does.
        drop(slot.take());
        let db = (self.opener)().map_err(|e| match e {
            redb::DatabaseError::Storage(s) => StoreError::from(s),
            other => StoreError::Io(other.to_string()),
        })?;
        *slot = Some(Arc::new(db));
        Ok(())
    }
}

/// The open database.
#[derive(Clone)]
pub struct Store {
    pub db: DbHandle,
    pub path: PathBuf,
    /// Each node's latest committed heartbeat, kept in memory (see `liveness`).
    pub liveness: Arc<Liveness>,
    /// Free space of the database's filesystem and the floor for bulk writes.
    pub space: Arc<DiskSpace>,
    /// The tree of the epoch being closed (see `epoch_rows::ClosingTree`).
    pub closing: Arc<super::epoch_rows::ClosingTree>,
    /// Each node's PoOT window, accumulated as heartbeats commit (see `accumulators`).
    pub accumulators: Arc<super::accumulators::EpochAccumulators>,
}

/// What redb's pages hold: the file grows in large steps, so its size is a coarse
/// measure of bytes kept.
#[derive(Debug, Clone, Copy)]
pub struct PageStats {
    /// Pages in use, in bytes.
    pub allocated_bytes: u64,
    /// Bytes of keys and values stored in them.
    pub stored_bytes: u64,
}

impl Store {
    /// Page statistics of the database (a write transaction that is aborted; for the
    /// retention bench and operators' diagnostics).
    pub fn page_stats(&self) -> StoreResult<PageStats> {
        let txn = self.db.begin_write()?;
        let stats = txn.stats()?;
        txn.abort()?;
        Ok(PageStats {
            allocated_bytes: stats.allocated_pages() * stats.page_size() as u64,
            stored_bytes: stats.stored_bytes(),
        })
    }

    /// Bytes each table holds: (name, stored bytes, bytes its pages occupy: stored plus
    /// redb's metadata and fragmentation). For the benches that measure bytes kept.
    pub fn table_bytes(&self) -> StoreResult<Vec<(String, u64, u64)>> {
        use redb::{ReadableTableMetadata, TableHandle};
        struct Sizes<'a>(&'a redb::ReadTransaction, Vec<(String, u64, u64)>);
        impl super::tables::TableVisitor for Sizes<'_> {
            fn visit<K: redb::Key + 'static, V: redb::Value + 'static>(
                &mut self,
                table: redb::TableDefinition<'static, K, V>,
            ) -> Result<(), String> {
                let name = table.name().to_string();
                let t = self.0.open_table(table).map_err(|e| e.to_string())?;
                let st = t.stats().map_err(|e| e.to_string())?;
                let occupied = st.stored_bytes() + st.metadata_bytes() + st.fragmented_bytes();
                self.1.push((name, st.stored_bytes(), occupied));
                Ok(())
            }
        }
        let txn = self.db.begin_read()?;
        let mut sizes = Sizes(&txn, Vec::new());
        super::tables::visit_tables(&mut sizes).map_err(StoreError::corrupt)?;
        Ok(sizes.1)
    }

    /// Sets the floor under which the writer refuses heartbeats (`STORAGE_MIN_FREE`).
    pub fn with_min_free(mut self, min_free: MinFree) -> Self {
        self.space = Arc::new(DiskSpace::new(self.path.clone(), min_free));
        self
    }

    /// A consistent snapshot for reading; nodes read through it carry their latest
    /// liveness.
    pub fn reader(&self) -> StoreResult<Reader> {
        Ok(Reader::new(self.db.begin_read()?)
            .with_liveness(self.liveness.clone())
            .with_closing(self.closing.clone()))
    }
}

/// Rebuilds the in-memory liveness from the heartbeat rows: only a node whose record says
/// `online` can have heartbeats newer than its record, and its newest one is found by
/// reading the heartbeats backwards from the end (normally the last `HEARTBEAT_TIMEOUT`
/// before the process stopped).
fn rebuild_liveness(db: &Database) -> Result<Liveness, String> {
    let reader = Reader::new(db.begin_read().map_err(|e| e.to_string())?);
    let online = reader
        .node_ids_in_status(crate::domain::node::NodeStatus::Online)
        .map_err(|e| e.to_string())?;
    let liveness = Liveness::default();
    if online.is_empty() {
        return Ok(liveness);
    }
    let found = reader
        .newest_heartbeats_of(online.into_iter().collect())
        .map_err(|e| e.to_string())?;
    tracing::debug!(nodes = found.len(), "liveness rebuilt from heartbeats");
    liveness.merge(found);
    Ok(liveness)
}

/// Reads the schema version of an existing database (None for a fresh file).
fn stored_version(db: &Database) -> Result<Option<u32>, String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let table = match txn.open_table(META) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let value = table.get(SCHEMA_VERSION_KEY).map_err(|e| e.to_string())?;
    match value {
        None => Ok(None),
        Some(v) => {
            let bytes: [u8; 4] = v
                .value()
                .try_into()
                .map_err(|_| "schema_version is not 4 bytes".to_string())?;
            Ok(Some(u32::from_le_bytes(bytes)))
        }
    }
}

/// True when the file holds any table (a fresh file holds none).
fn has_tables(db: &Database) -> Result<bool, String> {
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    let tables = txn.list_tables().map_err(|e| e.to_string())?.count();
    let multimap = txn
        .list_multimap_tables()
        .map_err(|e| e.to_string())?
        .count();
    Ok(tables + multimap > 0)
}

/// Opens the database and starts the service clock no earlier than the latest time the
/// database recorded (see `Clock::starting_at_least`).
pub fn open_with_clock(data_dir: &Path, max_nodes_per_pool: u32) -> Result<(Store, Clock), String> {
    let store = open(data_dir, max_nodes_per_pool, &Clock::new())?;
    let high_water = {
        let txn = store.db.begin_read().map_err(|e| e.to_string())?;
        let meta = txn.open_table(META).map_err(|e| e.to_string())?;
        super::batch::meta_u64(&meta, CLOCK_HIGH_WATER_KEY).map_err(|e| e.to_string())?
    };
    Ok((store, Clock::starting_at_least(high_water.unwrap_or(0))))
}

/// Opens (creating when absent) the database in `data_dir`, checks its schema version,
/// migrates an older one and initialises a fresh one (tables, `default` pool).
///
/// A database written by a newer version is refused, not opened for writing.
pub fn open(data_dir: &Path, max_nodes_per_pool: u32, clock: &Clock) -> Result<Store, String> {
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create state directory {}: {e}", data_dir.display()))?;
    let path = data_dir.join(DB_FILE);
    open_with(path.clone(), file_opener(path), max_nodes_per_pool, clock)
}

/// Like [`open`], with the database opened by `opener` (`path` is where it lives, for
/// messages and the free-space check).
pub fn open_with(
    path: PathBuf,
    opener: Opener,
    max_nodes_per_pool: u32,
    clock: &Clock,
) -> Result<Store, String> {
    let db = opener().map_err(|e| match e {
        redb::DatabaseError::DatabaseAlreadyOpen => format!(
            "database {} is in use by another process (is the service running?)",
            path.display()
        ),
        other => format!("cannot open database {}: {other}", path.display()),
    })?;
    let version = stored_version(&db)?;
    if let Some(v) = version {
        if v > SCHEMA_VERSION {
            return Err(format!(
                "database {} has schema version {v}, newer than this build understands ({SCHEMA_VERSION}); refusing to open it (upgrade the binary)",
                path.display()
            ));
        }
        if v < OLDEST_SCHEMA_VERSION {
            return Err(format!(
                "database {} has schema version {v}, which no release wrote (oldest known: {OLDEST_SCHEMA_VERSION}); refusing to open it",
                path.display()
            ));
        }
    } else if has_tables(&db)? {
        return Err(format!(
            "database {} holds tables but no schema version: it was not written by lucid-node-management or is damaged; refusing to open it (restore a backup, or move it away to start afresh)",
            path.display()
        ));
    }
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    {
        // Creating every table up front keeps readers free of "table does not exist".
        struct Create<'t>(&'t redb::WriteTransaction);
        impl TableVisitor for Create<'_> {
            fn visit<K: redb::Key + 'static, V: redb::Value + 'static>(
                &mut self,
                table: redb::TableDefinition<'static, K, V>,
            ) -> Result<(), String> {
                self.0
                    .open_table(table)
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        }
        visit_tables(&mut Create(&txn))?;
    }
    let mut head = AuditHead::load(&txn).map_err(|e| e.to_string())?;
    {
        let mut batch = Batch::new(&txn, &mut head, clock);
        if let Some(v) = version {
            migrate(&mut batch, v).map_err(|e| e.to_string())?;
        }
        ensure_default_pool(&mut batch, max_nodes_per_pool).map_err(|e| e.to_string())?;
    }
    txn.open_table(META)
        .and_then(|mut t| {
            t.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION.to_le_bytes().as_slice())
                .map(|_| ())
                .map_err(Into::into)
        })
        .map_err(|e| e.to_string())?;
    txn.commit().map_err(|e| e.to_string())?;
    let liveness = rebuild_liveness(&db)?;
    Ok(Store {
        db: DbHandle::new(db, opener),
        liveness: Arc::new(liveness),
        space: Arc::new(DiskSpace::new(path.clone(), MinFree::OFF)),
        closing: Default::default(),
        accumulators: Default::default(),
        path,
    })
}

/// Upgrades a database from `from` to [`SCHEMA_VERSION`], one step at a time, inside the
/// start-up transaction (all or nothing).
fn migrate(batch: &mut Batch<'_>, from: u32) -> StoreResult<()> {
    if from < 3 {
        // Node records changed form in schema 3; the steps below read them.
        super::migrate_rows::reencode_nodes(batch)?;
    }
    let mut version = from;
    while version < SCHEMA_VERSION {
        match version {
            1 => migrate_1_to_2(batch)?,
            2 => {
                let m = super::migrate_rows::migrate_2_to_3(batch)?;
                tracing::info!(
                    nodes = m.nodes,
                    proofs = m.proofs,
                    epochs = m.epochs,
                    "database migrated to schema 3 (proofs as 96-byte rows per epoch)"
                );
            }
            // Schema 4 keeps nodes' running totals in the ACCOUNTS table (created empty at
            // open; filled as closes settle). Nothing to convert, but a build of schema 3
            // must refuse the file: it would read stale totals from the node records.
            3 => {}
            // Schema 5 stores the payouts runs create in chunks (PAYOUT_CHUNKS, see
            // `payout_chunks`), created empty at open; older payouts stay where they are.
            // A build of schema 4 must refuse the file: it would not see those payouts or
            // their ledger entries.
            4 => {}
            // Schema 6 stores new epochs' proof rows in packs of several epochs
            // (`epoch_packs`); earlier chunks stay as they are. A build of schema 5 must
            // refuse the file: it would read a pack as a chunk and fail, or worse.
            5 => {}
            _ => unreachable!("no migration from schema {version}"),
        }
        version += 1;
    }
    Ok(())
}

/// Schema 2 adds the nodes-by-status index (its table is created empty at open).
fn migrate_1_to_2(batch: &mut Batch<'_>) -> StoreResult<()> {
    let indexed = batch.rebuild_status_index()?;
    tracing::info!(
        nodes = indexed,
        "database migrated to schema 2 (nodes by status)"
    );
    Ok(())
}

fn ensure_default_pool(batch: &mut Batch<'_>, max_nodes_per_pool: u32) -> StoreResult<()> {
    if batch.pool(DEFAULT_POOL_ID)?.is_some() {
        return Ok(());
    }
    let pool = Pool {
        pool_id: DEFAULT_POOL_ID.to_string(),
        name: DEFAULT_POOL_NAME.to_string(),
        region: None,
        capacity: max_nodes_per_pool,
        member_count: 0,
        created_at_us: batch.now_us(),
    };
    batch.put_pool(&pool, true)?;
    batch.audit(
        &Actor::system(),
        "pool.create",
        &pool.pool_id,
        json!({"name": pool.name, "capacity": pool.capacity}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::node::{Node, NodeStatus};
    use crate::store::codec::encode;
    use crate::store::seed;

    #[test]
    fn a_fresh_database_gets_the_default_pool_once() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::new();
        let store = open(dir.path(), 100, &clock).unwrap();
        drop(store);
        let store = open(dir.path(), 100, &clock).unwrap();
        let r = store.reader().unwrap();
        assert_eq!(r.pool(DEFAULT_POOL_ID).unwrap().unwrap().name, "default");
        assert_eq!(r.counter(POOLS_COUNTER).unwrap(), 1);
        assert_eq!(r.audit(0, 10).unwrap().items.len(), 1);
    }

    #[test]
    fn a_database_from_a_newer_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(
                    SCHEMA_VERSION_KEY,
                    (SCHEMA_VERSION + 1).to_le_bytes().as_slice(),
                )
                .unwrap();
            txn.commit().unwrap();
        }
        let err = open(dir.path(), 100, &Clock::new()).err().unwrap();
        assert!(err.contains("newer"), "{err}");
    }

    #[test]
    fn a_database_written_by_this_version_opens_again_with_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::new();
        let store = open(dir.path(), 100, &clock).unwrap();
        seed::in_transaction(&store, &clock, |batch| {
            let pool = Pool {
                pool_id: "pool_upgrade".into(),
                name: "upgrade".into(),
                region: Some("eu".into()),
                capacity: 7,
                member_count: 0,
                created_at_us: batch.now_us(),
            };
            batch.put_pool(&pool, true).unwrap();
            batch
                .audit(&Actor::system(), "pool.create", "pool_upgrade", json!({}))
                .unwrap();
        });
        drop(store);
        let store = open(dir.path(), 100, &clock).unwrap();
        assert_eq!(
            stored_version(&store.db.current().unwrap()).unwrap(),
            Some(SCHEMA_VERSION)
        );
        let r = store.reader().unwrap();
        let pool = r.pool("pool_upgrade").unwrap().unwrap();
        assert_eq!((pool.name.as_str(), pool.capacity), ("upgrade", 7));
        assert_eq!(r.counter(POOLS_COUNTER).unwrap(), 2);
        assert_eq!(r.audit(0, 10).unwrap().items.len(), 2);
    }

    /// A redb file with a table of data and the given schema version (None: no META).
    fn foreign_database(dir: &Path, version: Option<u32>) -> PathBuf {
        let path = dir.join(DB_FILE);
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(NODES)
            .unwrap()
            .insert("node_x", b"not bincode".as_slice())
            .unwrap();
        if let Some(v) = version {
            txn.open_table(META)
                .unwrap()
                .insert(SCHEMA_VERSION_KEY, v.to_le_bytes().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
        path
    }

    #[test]
    fn a_database_with_data_but_no_schema_version_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = foreign_database(dir.path(), None);
        let err = open(dir.path(), 100, &Clock::new()).err().unwrap();
        assert!(err.contains("no schema version"), "{err}");
        let db = Database::open(&path).unwrap();
        let txn = db.begin_read().unwrap();
        let names: Vec<String> = txn
            .list_tables()
            .unwrap()
            .map(|t| redb::TableHandle::name(&t).to_string())
            .collect();
        assert_eq!(names, vec!["nodes".to_string()], "nothing was added");
    }

    #[test]
    fn a_database_of_schema_version_0_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        foreign_database(dir.path(), Some(0));
        let err = open(dir.path(), 100, &Clock::new()).err().unwrap();
        assert!(err.contains("schema version 0"), "{err}");
    }

    /// Every status and its nodes, read from the status index.
    fn status_index(store: &Store) -> Vec<(NodeStatus, Vec<String>)> {
        let r = store.reader().unwrap();
        NodeStatus::ALL
            .iter()
            .map(|&s| (s, r.node_ids_in_status(s).unwrap()))
            .filter(|(_, ids)| !ids.is_empty())
            .collect()
    }

    #[test]
    fn the_status_index_follows_every_status_change() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::new();
        let store = open(dir.path(), 100, &clock).unwrap();
        let mut node = seed::node("node_ix", 1, 0);
        node.status = NodeStatus::Registered;
        let other = seed::node("node_ix", 2, 0);
        seed::in_transaction(&store, &clock, |b| {
            b.put_node(&node, None).unwrap();
            b.put_node(&other, None).unwrap();
        });
        assert_eq!(
            status_index(&store),
            vec![
                (NodeStatus::Registered, vec![node.node_id.clone()]),
                (NodeStatus::Online, vec![other.node_id.clone()]),
            ]
        );
        for next in [
            NodeStatus::Online,
            NodeStatus::Offline,
            NodeStatus::Online,
            NodeStatus::Suspended,
            NodeStatus::Deregistered,
        ] {
            let before = node.clone();
            node.status = next;
            seed::in_transaction(&store, &clock, |b| {
                b.put_node(&node, Some(&before)).unwrap()
            });
            let mut expected = vec![
                (next, vec![node.node_id.clone()]),
                (NodeStatus::Online, vec![other.node_id.clone()]),
            ];
            if next == NodeStatus::Online {
                expected = vec![(
                    NodeStatus::Online,
                    vec![node.node_id.clone(), other.node_id.clone()],
                )];
            }
            expected.sort_by_key(|(s, _)| NodeStatus::ALL.iter().position(|a| a == s));
            assert_eq!(status_index(&store), expected, "after {next:?}");
        }
    }

    #[test]
    fn verify_reports_a_status_index_that_disagrees_with_the_nodes() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::new();
        let store = open(dir.path(), 100, &clock).unwrap();
        seed::in_transaction(&store, &clock, |b| {
            seed::put_nodes(b, (0..3).map(|i| seed::node("node_vx", i, 0))).unwrap();
        });
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng).verifying_key();
        let check =
            || crate::store::verify::verify_database(&store.reader().unwrap(), &key, |_| {});
        assert!(check().is_ok());
        // A node written around `put_node` with another status: the index is stale.
        seed::in_transaction(&store, &clock, |b| {
            let before = b.node(&seed::node_id("node_vx", 1)).unwrap().unwrap();
            let after = Node {
                status: NodeStatus::Offline,
                ..before
            };
            b.txn
                .open_table(NODES)
                .unwrap()
                .insert(after.node_id.as_str(), encode(&after).as_slice())
                .unwrap();
        });
        let err = check().unwrap_err();
        assert!(err.contains("status index"), "{err}");
    }

    #[test]
    fn a_schema_1_database_gets_its_status_index_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::new();
        let store = open(dir.path(), 100, &clock).unwrap();
        let statuses = [
            NodeStatus::Online,
            NodeStatus::Offline,
            NodeStatus::Online,
            NodeStatus::Suspended,
        ];
        seed::in_transaction(&store, &clock, |b| {
            let nodes = statuses.iter().enumerate().map(|(i, &status)| Node {
                status,
                ..seed::node("node_v1_", i, 0)
            });
            seed::put_nodes(b, nodes).unwrap();
        });
        let expected = status_index(&store);
        assert_eq!(expected.len(), 3, "{expected:?}");
        // What schema 1 looked like: no index table.
        {
            let txn = store.db.begin_write().unwrap();
            assert!(txn.delete_table(NODES_BY_STATUS).unwrap());
            txn.open_table(META)
                .unwrap()
                .insert(SCHEMA_VERSION_KEY, 1u32.to_le_bytes().as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        drop(store);
        let store = open(dir.path(), 100, &clock).unwrap();
        assert_eq!(
            stored_version(&store.db.current().unwrap()).unwrap(),
            Some(SCHEMA_VERSION)
        );
        assert_eq!(status_index(&store), expected);
    }

    #[test]
    fn an_empty_redb_file_is_initialised() {
        let dir = tempfile::tempdir().unwrap();
        drop(Database::create(dir.path().join(DB_FILE)).unwrap());
        let store = open(dir.path(), 100, &Clock::new()).unwrap();
        assert_eq!(
            stored_version(&store.db.current().unwrap()).unwrap(),
            Some(SCHEMA_VERSION)
        );
    }
}
