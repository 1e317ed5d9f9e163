//! Pure domain rules: no I/O, no storage, no HTTP. Everything here is unit-tested in place.

pub mod alert;
pub mod audit;
pub mod credits;
pub mod heartbeat;
pub mod ids;
pub mod ledger;
pub mod merkle;
pub mod money;
pub mod netguard;
pub mod node;
pub mod payout;
pub mod pool;
pub mod poot;
pub mod proof;
pub mod refusal;
pub mod revocation;
pub mod role;
pub mod timefmt;
pub mod tron;
pub mod uptime;
