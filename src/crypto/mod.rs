//! Keys, tokens and signatures.
//!
//! - [`keys`]: the service's Ed25519 key files (create, load, write).
//! - [`tokens`]: issuing and verifying JWTs.
//! - [`signatures`]: Ed25519 signature checks, one at a time or batched.

pub mod keys;
pub mod signatures;
pub mod tokens;
