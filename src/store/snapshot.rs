//! Backup and restore of the database: what touches redb.
//!
//! A file copy of a live redb file is not a backup. A backup is made through ONE read
//! transaction (one consistent snapshot of every table), copied table by table into a new
//! redb file in one write transaction, committed durably, fsynced and only then renamed to
//! its final name: an interrupted or failed backup leaves no half-written file behind.
//!
//! - Database free (service stopped): the CLI opens it read-only and copies it itself.
//! - Service running (it holds the database's exclusive lock): the CLI asks the service,
//!   `POST /api/v1/backup` (admin), which makes the same copy inside the service and
//!   streams it back; the CLI checks what it received before renaming it into place
//!   (see `cli::backup`, and [`check_received_copy`] here).
//! - Restore refuses while the service runs, stages the copy inside the state directory,
//!   checks it (redb page checksums, schema version, [`super::verify::verify_database`]),
//!   keeps the old database as `lucid.redb.before-restore-<timestamp>` and renames the
//!   staged copy in place (at every moment `lucid.redb` names a complete database).

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use ed25519_dalek::VerifyingKey;
use redb::{
    Database, Key, MultimapTableHandle, ReadOnlyDatabase, ReadTransaction, ReadableDatabase,
    ReadableTable, ReadableTableMetadata, TableDefinition, TableError, TableHandle, Value,
    WriteTransaction,
};

use crate::progress::{Progress, ProgressMode};
use crate::store::db::{DB_FILE, OLDEST_SCHEMA_VERSION, SCHEMA_VERSION};
use crate::store::queries::Reader;
use crate::store::tables::*;

/// Name prefix of the service's temporary backup files in the state directory.
pub const SERVER_TEMP_PREFIX: &str = ".backup-download-";

/// Name prefix of a restore's staged copy in the state directory.
const RESTORE_TEMP_PREFIX: &str = ".restore-staged-";

// ---------------------------------------------------------------------------------------
// The table list

/// The names of the tables a backup copies.
pub fn table_names() -> Vec<String> {
    struct Names(Vec<String>);
    impl TableVisitor for Names {
        fn visit<K: Key + 'static, V: Value + 'static>(
            &mut self,
            table: TableDefinition<'static, K, V>,
        ) -> Result<(), String> {
            self.0.push(table.name().to_string());
            Ok(())
        }
    }
    let mut names = Names(Vec::new());
    let _ = visit_tables(&mut names);
    names.0
}

/// Refuses a database holding a table this build does not know (it would be lost).
fn check_tables_known(txn: &ReadTransaction) -> Result<(), String> {
    let known = table_names();
    let mut unknown: Vec<String> = txn
        .list_tables()
        .map_err(|e| format!("cannot list tables: {e}"))?
        .map(|t| t.name().to_string())
        .filter(|n| !known.contains(n))
        .collect();
    unknown.extend(
        txn.list_multimap_tables()
            .map_err(|e| format!("cannot list tables: {e}"))?
            .map(|t| t.name().to_string()),
    );
    if unknown.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the database holds tables this build does not know ({}); refusing to make an incomplete copy",
            unknown.join(", ")
        ))
    }
}

/// Entries in all known tables.
fn count_entries(txn: &ReadTransaction) -> Result<u64, String> {
    struct Count<'a>(&'a ReadTransaction, u64);
    impl TableVisitor for Count<'_> {
        fn visit<K: Key + 'static, V: Value + 'static>(
            &mut self,
            table: TableDefinition<'static, K, V>,
        ) -> Result<(), String> {
            match self.0.open_table(table) {
                Ok(t) => self.1 += t.len().map_err(|e| e.to_string())?,
                Err(TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(format!("cannot read table {}: {e}", table.name())),
            }
            Ok(())
        }
    }
    let mut count = Count(txn, 0);
    visit_tables(&mut count)?;
    Ok(count.1)
}

/// Key and value bytes written to the copy before an intermediate commit. One write
/// transaction for the whole copy would hold every page it writes in memory (a 544 MiB
/// database took 940 MiB); committing every few MiB keeps a backup inside the service's
/// `MemoryMax` on a small board.
const COMMIT_EVERY_BYTES: u64 = 8 << 20;

/// Page cache of the databases a backup or restore opens (redb's default is 1 GiB).
pub const CACHE_BYTES: usize = 16 << 20;

/// Copies each table from the snapshot into the new file. Intermediate commits are not
/// durable (`Durability::None`): the file's durable state goes straight from "empty" to
/// "complete" with the final commit, so a copy cut short can never pass for a smaller
/// database (its schema version would be missing too: META is copied first).
struct Copier<'a> {
    src: &'a ReadTransaction,
    db: &'a Database,
    txn: Option<WriteTransaction>,
    progress: &'a mut Progress,
    tables: usize,
    pending: u64,
}

impl Copier<'_> {
    fn begin(&mut self) -> Result<(), String> {
        if self.txn.is_none() {
            let txn = self
                .db
                .begin_write()
                .map_err(|e| format!("cannot write the copy: {e}"))?;
            self.txn = Some(txn);
        }
        Ok(())
    }

    /// Commits what was copied so far without fsync, freeing its memory.
    fn commit_chunk(&mut self) -> Result<(), String> {
        if let Some(mut txn) = self.txn.take() {
            txn.set_durability(redb::Durability::None)
                .map_err(|e| format!("cannot commit the copy: {e}"))?;
            txn.commit()
                .map_err(|e| format!("cannot commit the copy: {e}"))?;
        }
        self.pending = 0;
        Ok(())
    }

    /// The final, durable commit.
    fn finish(mut self) -> Result<usize, String> {
        let txn = match self.txn.take() {
            Some(txn) => txn,
            None => self
                .db
                .begin_write()
                .map_err(|e| format!("cannot write the copy: {e}"))?,
        };
        txn.commit()
            .map_err(|e| format!("cannot commit the copy: {e}"))?;
        Ok(self.tables)
    }
}

impl TableVisitor for Copier<'_> {
    fn visit<K: Key + 'static, V: Value + 'static>(
        &mut self,
        table: TableDefinition<'static, K, V>,
    ) -> Result<(), String> {
        let name = table.name().to_string();
        let src = match self.src.open_table(table) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(format!("cannot read table {name}: {e}")),
        };
        let mut entries = src
            .iter()
            .map_err(|e| format!("cannot read table {name}: {e}"))?;
        loop {
            self.begin()?;
            let txn = self.txn.as_ref().expect("begun");
            let mut dst = txn
                .open_table(table)
                .map_err(|e| format!("cannot create table {name} in the copy: {e}"))?;
            let mut written = 0u64;
            let mut chunk_full = false;
            for entry in entries.by_ref() {
                let (k, v) = entry.map_err(|e| format!("cannot read table {name}: {e}"))?;
                let (k, v) = (k.value(), v.value());
                written +=
                    (K::as_bytes(&k).as_ref().len() + V::as_bytes(&v).as_ref().len()) as u64 + 16;
                dst.insert(k, v)
                    .map_err(|e| format!("cannot write table {name} in the copy: {e}"))?;
                self.progress.advance(1)?;
                if self.pending + written >= COMMIT_EVERY_BYTES {
                    chunk_full = true;
                    break;
                }
            }
            drop(dst);
            self.pending += written;
            if !chunk_full {
                break;
            }
            self.commit_chunk()?;
        }
        self.tables += 1;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// Files

/// A temporary file next to its final name, removed unless [`Partial::persist`] renames it.
pub(crate) struct Partial {
    pub(crate) path: PathBuf,
    done: bool,
}

static PARTIAL_SEQ: AtomicU64 = AtomicU64::new(0);

impl Partial {
    /// Creates `dir/{prefix}{pid}-{n}` (mode 0600), failing if it exists.
    pub(crate) fn create_in(dir: &Path, prefix: &str) -> Result<(Self, File), String> {
        let n = PARTIAL_SEQ.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = dir.join(format!("{prefix}{}-{n}-{nanos}", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok((Self { path, done: false }, file))
    }

    /// A temporary file beside `target`: `.{name}.partial-...`.
    pub(crate) fn beside(target: &Path) -> Result<(Self, File), String> {
        let name = target
            .file_name()
            .ok_or_else(|| format!("{} is not a file name", target.display()))?
            .to_string_lossy()
            .into_owned();
        let dir = parent_dir(target);
        Self::create_in(&dir, &format!(".{name}.partial-"))
    }

    /// fsyncs the file, renames it to `target` and fsyncs the directory.
    pub(crate) fn persist(mut self, target: &Path) -> Result<(), String> {
        File::open(&self.path)
            .and_then(|f| f.sync_all())
            .map_err(|e| format!("cannot sync {}: {e}", self.path.display()))?;
        std::fs::rename(&self.path, target)
            .map_err(|e| format!("cannot rename to {}: {e}", target.display()))?;
        self.done = true;
        sync_dir(&parent_dir(target));
        Ok(())
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

// ---------------------------------------------------------------------------------------
// Backup

/// What a backup copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupStats {
    pub tables: usize,
    pub entries: u64,
    pub bytes: u64,
}

impl std::fmt::Display for BackupStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} tables, {} entries, {:.1} MiB",
            self.tables,
            self.entries,
            self.bytes as f64 / 1_048_576.0
        )
    }
}

/// Copies the snapshot `src` into a new redb file at `out` (replaced atomically; nothing
/// is left behind on failure or interruption).
pub fn write_backup(
    src: &ReadTransaction,
    out: &Path,
    progress: &mut Progress,
) -> Result<BackupStats, String> {
    check_tables_known(src)?;
    let total = count_entries(src)?;
    let (partial, file) = Partial::beside(out)?;
    let db = redb::backends::FileBackend::new(file)
        .and_then(|backend| {
            Database::builder()
                .set_cache_size(CACHE_BYTES)
                .create_with_backend(backend)
        })
        .map_err(|e| format!("cannot create the copy: {e}"))?;
    progress.start("backup: copying", "entries", total);
    let mut copier = Copier {
        src,
        db: &db,
        txn: None,
        progress,
        tables: 0,
        pending: 0,
    };
    visit_tables(&mut copier)?;
    copier.progress.check()?;
    let tables = copier.finish()?;
    db.close()
        .map_err(|e| format!("cannot close the copy: {e}"))?;
    partial.persist(out)?;
    progress.finish();
    let bytes = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    Ok(BackupStats {
        tables,
        entries: total,
        bytes,
    })
}

/// Inside the service: writes a backup of `db` to a temporary file in `data_dir` and
/// returns it opened and already unlinked (it lives as long as the handle), with its stats.
pub fn backup_for_download(
    db: &Database,
    data_dir: &Path,
    cancel: Arc<AtomicBool>,
) -> Result<(File, BackupStats), String> {
    // Leftovers of a backup interrupted by a crash (only one backup runs at a time).
    if let Ok(entries) = std::fs::read_dir(data_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().contains(SERVER_TEMP_PREFIX) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    let txn = db
        .begin_read()
        .map_err(|e| format!("cannot begin a read transaction: {e}"))?;
    let out = data_dir.join(format!(
        "{SERVER_TEMP_PREFIX}{}-{}.redb",
        std::process::id(),
        PARTIAL_SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let mut progress = Progress::new(ProgressMode::Log, cancel);
    let result = write_backup(&txn, &out, &mut progress);
    drop(txn);
    let stats = result?;
    let file = File::open(&out);
    let _ = std::fs::remove_file(&out);
    let file = file.map_err(|e| format!("cannot reopen the copy: {e}"))?;
    Ok((file, stats))
}

/// Schema version stored in a database (None when absent).
fn schema_version(txn: &ReadTransaction) -> Result<Option<u32>, String> {
    let meta = match txn.open_table(META) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let Some(v) = meta.get(SCHEMA_VERSION_KEY).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let bytes: [u8; 4] = v
        .value()
        .try_into()
        .map_err(|_| "its schema_version is not 4 bytes".to_string())?;
    Ok(Some(u32::from_le_bytes(bytes)))
}

/// A copy as the backup command received it from the service: opens the file read-only,
/// checks its schema and counts its entries (to compare with what the service announced).
pub(crate) fn check_received_copy(path: &Path) -> Result<u64, String> {
    let db = ReadOnlyDatabase::open(path)
        .map_err(|e| format!("the service sent a file that does not open as redb: {e}"))?;
    let txn = db.begin_read().map_err(|e| e.to_string())?;
    check_schema(&txn).map_err(|e| format!("the service sent a copy that {e}"))?;
    count_entries(&txn)
}

/// The copy is a database of a schema version this build can open.
fn check_schema(txn: &ReadTransaction) -> Result<u32, String> {
    match schema_version(txn)? {
        None => Err("it has no schema version: not a lucid-node-management database".into()),
        Some(v) if v > SCHEMA_VERSION => Err(format!(
            "its schema version {v} is newer than this build understands ({SCHEMA_VERSION}); upgrade the binary first"
        )),
        Some(v) if v < OLDEST_SCHEMA_VERSION => Err(format!(
            "its schema version {v} is unknown (oldest supported: {OLDEST_SCHEMA_VERSION})"
        )),
        Some(v) => Ok(v),
    }
}

// ---------------------------------------------------------------------------------------
// Restore

/// What a restore did.
#[derive(Debug)]
pub struct RestoreReport {
    pub database: PathBuf,
    /// Where the replaced database was kept (None when there was none).
    pub kept: Option<PathBuf>,
    pub schema_version: u32,
    pub entries: u64,
}

/// Why a database cannot be opened, with the service-is-running case worded for people.
fn open_error(path: &Path, e: redb::DatabaseError) -> String {
    match e {
        redb::DatabaseError::DatabaseAlreadyOpen | redb::DatabaseError::LockProtocolMismatch => {
            format!(
                "the service is running; stop it first (database {} is in use)",
                path.display()
            )
        }
        other => format!("cannot open {}: {other}", path.display()),
    }
}

/// Replaces `data_dir/lucid.redb` with the backup `from`, after checking it. Refuses while
/// the database is in use; leaves the current database untouched on any failure.
pub fn restore(
    data_dir: &Path,
    from: &Path,
    proof_key: &VerifyingKey,
    progress: &mut Progress,
) -> Result<RestoreReport, String> {
    let db_path = data_dir.join(DB_FILE);
    // A read-only handle takes a shared lock: it fails while the service (a writer) holds
    // the database, and keeps the service from opening it until the swap is done.
    let _current = if db_path.exists() {
        match ReadOnlyDatabase::open(&db_path) {
            Ok(db) => Some(db),
            Err(
                e @ (redb::DatabaseError::DatabaseAlreadyOpen
                | redb::DatabaseError::LockProtocolMismatch),
            ) => return Err(open_error(&db_path, e)),
            // A damaged current database is a reason to restore, not to refuse.
            Err(e) => {
                progress.note(&format!(
                    "warning: the current database cannot be opened ({e}); replacing it anyway"
                ));
                None
            }
        }
    } else {
        None
    };
    let source = File::open(from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
    let size = source.metadata().map(|m| m.len()).unwrap_or(0);

    // Stage a private copy beside the database: the checks below open it for writing
    // (the integrity check commits), and the final rename must stay on one file system.
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    remove_stale(data_dir, RESTORE_TEMP_PREFIX);
    let (staged, mut file) = Partial::create_in(data_dir, RESTORE_TEMP_PREFIX)?;
    progress.start("restore: reading the backup", "bytes", size);
    copy_bytes(source, &mut file, progress)
        .map_err(|e| format!("cannot copy {}: {e}", from.display()))?;
    progress.finish();
    file.sync_all()
        .map_err(|e| format!("cannot sync the staged copy: {e}"))?;
    drop(file);

    let bad = |why: String| format!("{} is not a usable backup: {why}", from.display());
    progress.note("restore: checking page checksums");
    let db = Database::builder()
        .set_cache_size(CACHE_BYTES)
        .set_check_integrity_on_open(true)
        .open(&staged.path)
        .map_err(|e| bad(format!("{e}")))?;
    let (schema_version, entries) = {
        let txn = db.begin_read().map_err(|e| bad(e.to_string()))?;
        let v = check_schema(&txn).map_err(bad)?;
        check_tables_known(&txn).map_err(bad)?;
        let entries = count_entries(&txn).map_err(bad)?;
        progress.check()?;
        let reader = Reader::new(txn);
        let mut p = |step: &str| progress.note(&format!("restore: verifying {step}"));
        super::verify::verify_database(&reader, proof_key, &mut p).map_err(|e| {
            bad(format!(
                "it does not verify ({}); if it comes from another appliance, copy that appliance's keys/ into {} first",
                first_line(&e),
                data_dir.display()
            ))
        })?;
        (v, entries)
    };
    // MongoDB may hold changes made after this backup was taken: have the mirror copy
    // everything again on the next start (upserts are idempotent).
    {
        let txn = db.begin_write().map_err(|e| bad(e.to_string()))?;
        txn.open_table(crate::store::tables::META)
            .and_then(|mut meta| {
                meta.remove(crate::store::outbox::MIRROR_INITIALIZED_KEY)
                    .map(|_| ())
                    .map_err(Into::into)
            })
            .map_err(|e| bad(e.to_string()))?;
        txn.commit().map_err(|e| bad(e.to_string()))?;
    }
    db.close().map_err(|e| bad(e.to_string()))?;
    progress.check()?;
    match_owner(&staged.path, data_dir);

    // Keep the old database under a new name (a hard link, so `lucid.redb` never goes
    // missing), then replace it atomically.
    let kept = if db_path.exists() {
        let stamp = time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!(
                "[year][month][day]T[hour][minute][second]Z"
            ))
            .unwrap_or_else(|_| "unknown".into());
        let mut kept = data_dir.join(format!("{DB_FILE}.before-restore-{stamp}"));
        for n in 2.. {
            if !kept.exists() {
                break;
            }
            kept = data_dir.join(format!("{DB_FILE}.before-restore-{stamp}-{n}"));
        }
        std::fs::hard_link(&db_path, &kept).map_err(|e| {
            format!(
                "cannot keep the current database as {}: {e}",
                kept.display()
            )
        })?;
        Some(kept)
    } else {
        None
    };
    staged.persist(&db_path)?;
    Ok(RestoreReport {
        database: db_path,
        kept,
        schema_version,
        entries,
    })
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn copy_bytes(mut from: File, to: &mut File, progress: &mut Progress) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n])?;
        progress.advance(n as u64).map_err(std::io::Error::other)?;
    }
}

fn remove_stale(dir: &Path, prefix: &str) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(prefix) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

/// Run as root (e.g. `sudo ... restore`), hand the new database to the owner of the state
/// directory, so the service (its own user) can open it.
fn match_owner(file: &Path, dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    if let (Ok(f), Ok(d)) = (std::fs::metadata(file), std::fs::metadata(dir)) {
        if f.uid() != d.uid() || f.gid() != d.gid() {
            let _ = std::os::unix::fs::chown(file, Some(d.uid()), Some(d.gid()));
        }
    }
}

/// A read transaction with the database handle it needs (dropping the handle closes the
/// file under the transaction). Fields drop in order: the transaction first.
pub(crate) struct Snapshot {
    pub(crate) txn: ReadTransaction,
    _db: Box<dyn ReadableDatabase>,
}

/// A snapshot of a database nobody else has open; `None` while the service holds it.
pub(crate) fn open_for_backup(path: &Path) -> Result<Option<Snapshot>, String> {
    // Read-only first: it needs no write access and changes nothing. A database left by a
    // crash needs recovery, which only a writable open performs.
    let mut builder = Database::builder();
    builder.set_cache_size(CACHE_BYTES);
    let db: Box<dyn ReadableDatabase> = match builder.open_read_only(path) {
        Ok(db) => Box::new(db),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Ok(None),
        Err(_) => match builder.open(path) {
            Ok(db) => Box::new(db),
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => return Ok(None),
            Err(e) => return Err(open_error(path, e)),
        },
    };
    let txn = db
        .begin_read()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(Some(Snapshot { txn, _db: db }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::progress::INTERRUPTED;
    use std::collections::BTreeSet;

    /// Table names defined anywhere in `src/` (`TableDefinition::new("...")`), except in
    /// migrations (`store/migrate_*.rs`): their tables are an old schema's, or scratch,
    /// and the migration deletes them before it commits.
    fn defined_in_source() -> BTreeSet<String> {
        fn walk(dir: &Path, out: &mut BTreeSet<String>) {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                let migration = path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("migrate_"));
                if path.is_dir() {
                    walk(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") && !migration {
                    let text = std::fs::read_to_string(&path).unwrap();
                    let code = text.lines().filter(|l| !l.trim_start().starts_with("//"));
                    for line in code {
                        for part in line.split("TableDefinition::new(\"").skip(1) {
                            if let Some(name) = part.split('"').next() {
                                out.insert(name.to_string());
                            }
                        }
                    }
                }
            }
        }
        let mut out = BTreeSet::new();
        walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
        out
    }

    #[test]
    fn every_table_defined_in_the_source_is_backed_up() {
        let listed: BTreeSet<String> = table_names().into_iter().collect();
        assert_eq!(listed.len(), table_names().len(), "a table is listed twice");
        let defined = defined_in_source();
        let missing: Vec<_> = defined.difference(&listed).collect();
        assert!(
            missing.is_empty(),
            "tables missing from backup::visit_tables: {missing:?}"
        );
    }

    #[test]
    fn every_table_of_a_live_database_is_backed_up() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(dir.path(), 100, &Clock::new()).unwrap();
        let txn = store.db.begin_read().unwrap();
        let listed = table_names();
        for t in txn.list_tables().unwrap() {
            assert!(
                listed.contains(&t.name().to_string()),
                "table {} is not in backup::visit_tables",
                t.name()
            );
        }
        assert_eq!(txn.list_multimap_tables().unwrap().count(), 0);
        check_tables_known(&txn).unwrap();
    }

    fn quiet() -> Progress {
        Progress::new(ProgressMode::Quiet, Arc::new(AtomicBool::new(false)))
    }

    #[test]
    fn a_backup_copies_every_entry_of_every_table() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(dir.path(), 100, &Clock::new()).unwrap();
        {
            let txn = store.db.begin_write().unwrap();
            txn.open_table(COUNTERS).unwrap().insert("x", 7).unwrap();
            txn.open_table(OPERATOR_NODES)
                .unwrap()
                .insert(("op", "node_a"), ())
                .unwrap();
            txn.open_table(HEARTBEATS)
                .unwrap()
                .insert((5, "node_a"), [1u8, 2, 3].as_slice())
                .unwrap();
            txn.open_table(NODE_KEYS)
                .unwrap()
                .insert([9u8; 32].as_slice(), "node_a")
                .unwrap();
            txn.commit().unwrap();
        }
        let out = dir.path().join("copy.redb");
        let src = store.db.begin_read().unwrap();
        let stats = write_backup(&src, &out, &mut quiet()).unwrap();
        assert_eq!(stats.entries, count_entries(&src).unwrap());
        let copy = ReadOnlyDatabase::open(&out).unwrap();
        let c = copy.begin_read().unwrap();
        assert_eq!(count_entries(&c).unwrap(), stats.entries);
        assert_eq!(
            c.open_table(COUNTERS)
                .unwrap()
                .get("x")
                .unwrap()
                .unwrap()
                .value(),
            7
        );
        assert!(c
            .open_table(OPERATOR_NODES)
            .unwrap()
            .get(("op", "node_a"))
            .unwrap()
            .is_some());
        assert_eq!(
            c.open_table(HEARTBEATS)
                .unwrap()
                .get((5, "node_a"))
                .unwrap()
                .unwrap()
                .value(),
            &[1, 2, 3]
        );
        assert_eq!(check_schema(&c).unwrap(), SCHEMA_VERSION);
        // Nothing else was left in the directory.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("partial"))
            .collect();
        assert!(names.is_empty(), "{names:?}");
    }

    #[test]
    fn an_interrupted_backup_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(dir.path(), 100, &Clock::new()).unwrap();
        let out = dir.path().join("copy.redb");
        let cancel = Arc::new(AtomicBool::new(true));
        let mut progress = Progress::new(ProgressMode::Quiet, cancel);
        let src = store.db.begin_read().unwrap();
        let err = write_backup(&src, &out, &mut progress).unwrap_err();
        assert_eq!(err, INTERRUPTED);
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != DB_FILE && n != "keys")
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn a_database_with_an_unknown_table_is_not_backed_up_incompletely() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::open(dir.path(), 100, &Clock::new()).unwrap();
        {
            let txn = store.db.begin_write().unwrap();
            // Not a literal: the source scan above must not count it.
            const FUTURE: &str = "from_the_future";
            let t: TableDefinition<u64, u64> = TableDefinition::new(FUTURE);
            txn.open_table(t).unwrap().insert(1, 1).unwrap();
            txn.commit().unwrap();
        }
        let src = store.db.begin_read().unwrap();
        let err = write_backup(&src, &dir.path().join("x.redb"), &mut quiet()).unwrap_err();
        assert!(err.contains("from_the_future"), "{err}");
        assert!(!dir.path().join("x.redb").exists());
    }
}
