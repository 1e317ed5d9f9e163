//! The black-box tests, one crate: each module is one area (the real binary over real TLS
//! on loopback), and `common` is the harness they share. One crate compiles the harness
//! once and links one test binary instead of one per file.

mod common;

mod access_matrix;
mod agent;
mod agent_enrol;
mod alerts;
mod audit_chain;
mod backpressure;
mod backup_restore;
mod bad_input;
mod cli_and_config;
mod console;
mod crash_durability;
mod disk_full;
mod enrollments;
mod flash;
mod floods;
mod heartbeat_batch;
mod heavy_reads;
mod ledger_pages;
mod lifecycle;
mod metrics_labels;
// Needs the feature (the binary must carry the mirror) and SecantusDB (scripts/ensure-mongo).
#[cfg(feature = "mongo-sync")]
mod mirror;
mod packaging_files;
mod payout_webhook;
mod payouts;
mod pool_capacity;
mod poot;
mod poot_chunks;
mod poot_rollup;
mod rate_limits;
mod schema_fixture;
mod slow_alerts;
mod ssrf;
mod stalled;
mod token_revocation;
