//! The store's own error: what went wrong with storage, in terms the store knows.
//!
//! The HTTP error (`error::ApiError`) is made from it in one place (`From<StoreError>`),
//! which keeps redb's text out of responses (clients see a sanitized sentence; the log
//! keeps the detail). Whether a failure aborts the writer's batch is a property of the
//! variant ([`StoreError::aborts_batch`]), never a comparison of strings.

use crate::domain::refusal::Refusal;

/// Why a store operation did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The disk is full (ENOSPC), or free space is under `STORAGE_MIN_FREE`: writes are
    /// refused until space returns; reads go on from the last commit.
    #[error("storage is full: {0}")]
    Full(String),
    /// An I/O error or a database failure (a failed write or fsync, ...). The batch is
    /// aborted; nothing of it is on disk.
    #[error("storage failure: {0}")]
    Io(String),
    /// A stored value does not decode, or the stored state contradicts itself.
    #[error("stored data is damaged: {0}")]
    Corrupt(String),
    /// The writer's queue is full: retry shortly.
    #[error("the write queue is full")]
    Overloaded,
    /// The writer is stopping, or another job's storage failure aborted the batch this
    /// job was in; the job had no effect.
    #[error("{0}")]
    Unavailable(String),
    /// A domain rule refused the operation (checked before any write).
    #[error("{0}")]
    Refused(Refusal),
}

/// Shorthand for results whose error is a [`StoreError`].
pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// Failures of storage itself: the writer aborts the whole batch (its writes may be
    /// half-done), and may need to reopen the database before the next one.
    pub fn aborts_batch(&self) -> bool {
        matches!(self, Self::Full(_) | Self::Io(_) | Self::Corrupt(_))
    }

    pub fn corrupt(detail: impl Into<String>) -> Self {
        Self::Corrupt(detail.into())
    }

    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self::Unavailable(detail.into())
    }
}

impl From<Refusal> for StoreError {
    fn from(r: Refusal) -> Self {
        Self::Refused(r)
    }
}

/// ENOSPC (and EDQUOT: a quota is a full disk for this process) from an I/O error.
fn is_disk_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || e.kind() == std::io::ErrorKind::QuotaExceeded
        || matches!(e.raw_os_error(), Some(28) | Some(122))
}

impl From<redb::StorageError> for StoreError {
    fn from(e: redb::StorageError) -> Self {
        match e {
            redb::StorageError::Io(io) if is_disk_full(&io) => Self::Full(io.to_string()),
            redb::StorageError::Corrupted(what) => Self::Corrupt(what),
            other => Self::Io(other.to_string()),
        }
    }
}

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        match e {
            redb::Error::Io(io) if is_disk_full(&io) => Self::Full(io.to_string()),
            redb::Error::Corrupted(what) => Self::Corrupt(what),
            other => Self::Io(other.to_string()),
        }
    }
}

/// redb's other error types each wrap a `StorageError` where storage failed; the rest are
/// misuse of the API (a table opened with the wrong types, ...), reported as failures.
macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self {
                StoreError::from(redb::Error::from(e))
            }
        }
    )*};
}
from_redb!(redb::TableError, redb::TransactionError, redb::CommitError);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enospc_is_a_full_disk_and_other_io_errors_are_failures() {
        let full = StoreError::from(redb::StorageError::Io(std::io::Error::from_raw_os_error(
            28,
        )));
        assert!(matches!(full, StoreError::Full(_)));
        assert!(full.aborts_batch());
        let eio = StoreError::from(redb::StorageError::Io(std::io::Error::from_raw_os_error(5)));
        assert!(matches!(eio, StoreError::Io(_)));
        assert!(eio.aborts_batch());
        let refused = StoreError::from(Refusal::not_found("payout", "payout_x"));
        assert!(!refused.aborts_batch());
        assert!(!StoreError::Overloaded.aborts_batch());
    }
}
