//! Opening the database: schema version check, migrations, first-start initialisation.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableDatabase, TableError};
use serde_json::json;

use super::batch::{Actor, AuditHead, Batch};
use super::queries::Reader;
use super::tables::*;
use crate::clock::Clock;
use crate::domain::pool::{Pool, DEFAULT_POOL_ID, DEFAULT_POOL_NAME};
use crate::error::ApiResult;

/// The schema this build writes. Bump it with a migration in [`migrate`].
pub const SCHEMA_VERSION: u32 = 1;

/// File name of the database inside the state directory.
pub const DB_FILE: &str = "lucid.redb";

/// The open database.
#[derive(Clone)]
pub struct Store {
    pub db: Arc<Database>,
    pub path: PathBuf,
}

impl Store {
    /// A consistent snapshot for reading.
    pub fn reader(&self) -> ApiResult<Reader> {
        Ok(Reader::new(self.db.begin_read()?))
    }
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

/// Opens the database and starts the service clock no earlier than the latest time the
/// database recorded (see `Clock::starting_at_least`).
pub fn open_with_clock(data_dir: &Path, max_nodes_per_pool: u32) -> Result<(Store, Clock), String> {
    let store = open(data_dir, max_nodes_per_pool, &Clock::new())?;
    let high_water = {
        let txn = store.db.begin_read().map_err(|e| e.to_string())?;
        let meta = txn.open_table(META).map_err(|e| e.to_string())?;
        super::batch::meta_u64(&meta, CLOCK_HIGH_WATER_KEY).map_err(|e| e.detail)?
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
    let db = Database::create(&path).map_err(|e| match e {
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
    }
    let txn = db.begin_write().map_err(|e| e.to_string())?;
    {
        // Creating every table up front keeps readers free of "table does not exist".
        txn.open_table(META).map_err(|e| e.to_string())?;
        txn.open_table(NODES).map_err(|e| e.to_string())?;
        txn.open_table(NODE_KEYS).map_err(|e| e.to_string())?;
        txn.open_table(OPERATOR_NODES).map_err(|e| e.to_string())?;
        txn.open_table(POOLS).map_err(|e| e.to_string())?;
        txn.open_table(POOL_NAMES).map_err(|e| e.to_string())?;
        txn.open_table(POOL_MEMBERS).map_err(|e| e.to_string())?;
        txn.open_table(AUDIT).map_err(|e| e.to_string())?;
        txn.open_table(COUNTERS).map_err(|e| e.to_string())?;
        txn.open_table(HEARTBEATS).map_err(|e| e.to_string())?;
        txn.open_table(PROOFS).map_err(|e| e.to_string())?;
        txn.open_table(EPOCHS).map_err(|e| e.to_string())?;
        txn.open_table(LEDGER).map_err(|e| e.to_string())?;
        txn.open_table(PAYOUTS).map_err(|e| e.to_string())?;
        txn.open_table(NODE_PAYOUTS).map_err(|e| e.to_string())?;
        txn.open_table(PAYOUTS_BY_STATE)
            .map_err(|e| e.to_string())?;
        txn.open_table(TX_HASHES).map_err(|e| e.to_string())?;
    }
    let mut head = AuditHead::load(&txn).map_err(|e| e.detail)?;
    {
        let mut batch = Batch::new(&txn, &mut head, clock);
        if let Some(v) = version {
            migrate(&mut batch, v).map_err(|e| e.detail)?;
        }
        ensure_default_pool(&mut batch, max_nodes_per_pool).map_err(|e| e.detail)?;
    }
    txn.open_table(META)
        .and_then(|mut t| {
            t.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION.to_le_bytes().as_slice())
                .map(|_| ())
                .map_err(Into::into)
        })
        .map_err(|e| e.to_string())?;
    txn.commit().map_err(|e| e.to_string())?;
    Ok(Store {
        db: Arc::new(db),
        path,
    })
}

/// Upgrades a database from `from` to [`SCHEMA_VERSION`], one step at a time, inside the
/// start-up transaction (all or nothing).
fn migrate(_batch: &mut Batch<'_>, from: u32) -> ApiResult<()> {
    let mut version = from;
    while version < SCHEMA_VERSION {
        // No migrations yet: version 1 is the first schema. Each future step goes here:
        // `1 => migrate_1_to_2(batch)?`.
        version += 1;
    }
    Ok(())
}

fn ensure_default_pool(batch: &mut Batch<'_>, max_nodes_per_pool: u32) -> ApiResult<()> {
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
}
