//! The wire documents: how records look to the outside, in API responses and in the
//! MongoDB mirror's documents. Built from `domain` values only (no storage, no HTTP), so
//! both `api` and `store::outbox` use them and the two never drift apart.
//!
//! Changing a field here changes the API and the mirror at once; the mirror's exact text
//! is pinned by the tests in `store::outbox`.

pub mod audit;
pub mod node;
pub mod payout;
pub mod pool;
pub mod proof;

pub use audit::{ActorView, AuditEventView};
pub use node::NodeView;
pub use payout::{LedgerEntryView, PayoutView};
pub use pool::PoolDocument;
pub use proof::BareProofDocument;
