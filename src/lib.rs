//! lucid-node-management: the node pool manager of the Lucid network, as a library so
//! that the binary, the tests and the benchmarks share one implementation.
//!
//! Layers, from the inside out:
//! - [`domain`]: pure rules (ids, addresses, statuses, hashes); no I/O.
//! - [`store`]: the redb database, its tables and the single group-committing writer.
//! - [`api`]: axum handlers, thin, turning HTTP into store calls.
//! - [`server`]: wiring, TLS, shutdown.
//! - [`cli`]: the command line's backup and restore, outside the service.

pub mod agent;
pub mod api;
pub mod app;
pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod error;
pub mod jobs;
pub mod logging;
pub mod metrics;
pub mod payout_sink;
pub mod progress;
pub mod server;
pub mod store;
pub mod sync;
pub mod tls;
pub mod views;

/// The version the binary reports in `/health`, metrics and the OpenAPI document.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The service name as the rest of the Lucid system knows it.
pub const SERVICE_NAME: &str = "lucid-node-management";
