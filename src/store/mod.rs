//! Storage: one redb file, its tables, and the single writer.
//!
//! - Reads open a redb read transaction directly (MVCC: they never wait for the writer).
//! - Every mutation goes through [`writer::Writer::write`]: one task owns the write
//!   transactions and commits everything waiting in one durable commit (group commit);
//!   a caller is answered only after its commit.
//! - A mutation writes its change and its audit event in the same transaction.

pub mod accounts;
#[allow(clippy::disallowed_methods)] // reads the stored heartbeats back at start
pub mod accumulators;
pub(crate) mod alerts;
pub(crate) mod batch;
pub(crate) mod codec;
// Opens transactions (clippy.toml forbids it outside src/store/).
#[allow(clippy::disallowed_methods)]
pub mod day_rows;
// Opens transactions (clippy.toml forbids it outside src/store/).
#[allow(clippy::disallowed_methods)]
pub mod db;
pub(crate) mod enrollments;
pub(crate) mod epoch_packs;
// Opens transactions (clippy.toml forbids it outside src/store/).
#[allow(clippy::disallowed_methods)]
pub mod epoch_rows;
pub mod error;
pub mod liveness;
pub(crate) mod migrate_rows;
pub(crate) mod node_rows;
pub mod outbox;
// Opens transactions in its tests (clippy.toml forbids it outside src/store/).
#[allow(clippy::disallowed_methods)]
pub(crate) mod payout_chunks;
pub(crate) mod payouts;
// Opens transactions (clippy.toml forbids it outside src/store/).
#[allow(clippy::disallowed_methods)]
pub mod poot;
pub mod queries;
pub(crate) mod revocations;
#[doc(hidden)] // for the benches and tests only
#[allow(clippy::disallowed_methods)] // seeds data in a write transaction of its own
pub mod seed;
// Opens transactions (clippy.toml forbids it outside src/store/).
#[allow(clippy::disallowed_methods)]
pub mod settle;
// Opens transactions (clippy.toml forbids it outside src/store/).
#[allow(clippy::disallowed_methods)]
pub(crate) mod snapshot;
pub mod space;
pub mod tables;
pub mod verify;
// Opens transactions (clippy.toml forbids it outside src/store/).
#[allow(clippy::disallowed_methods)]
pub mod writer;

pub use batch::{Actor, Batch};
pub use db::{open, Store, SCHEMA_VERSION};
pub use error::{StoreError, StoreResult};
pub use writer::{Urgency, Writer, WriterSettings};
// Opens transactions on a fault-injecting backend (clippy.toml forbids it outside src/store/).
#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod faults;
