//! The command line's long-running commands, outside the service (the flags and the
//! dispatch live in `main.rs`).

pub mod backup;
pub mod tokens;
