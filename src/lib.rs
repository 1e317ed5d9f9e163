//! lucid-node-management: the node pool manager of the Lucid network, as a library so
//! that the binary, the tests and the benchmarks share one implementation.
//!
//! # Layers
//!
//! Dependencies point one way, from the outside in:
//!
//! ```text
//! domain, views  <-  store  <-  app  <-  api, jobs, sync  <-  server, cli, agent
//! ```
//!
//! A module imports only from layers to its left (and from the modules beside the chain
//! listed below); never from its own layer's peers or from anything to its right.
//!
//! - [`domain`]: pure rules (ids, addresses, statuses, money, hashes, PoOT, audit chain);
//!   no I/O.
//! - [`views`]: the wire documents built from domain values: what the API answers and the
//!   MongoDB mirror stores, the same types for both.
//! - [`store`]: the redb database, its tables, the single group-committing writer, the
//!   mirror's outbox, backups and restores, and [`store::verify`], the offline checker of
//!   what is stored. Only the store opens redb transactions (`clippy.toml`).
//! - [`app`]: [`app::App`], the state shared by every request and timer, and the use cases
//!   handlers and timers share: node transitions, the PoOT epoch close, payout runs and
//!   delivery, alerts, batched signature checks, login challenges.
//! - [`api`]: axum handlers, thin: extract, authorize, call the store or [`app`], answer.
//! - [`jobs`]: the timers that run [`app`]'s use cases on a schedule.
//! - [`sync`]: the MongoDB mirror: its status, its plan, and the task draining the outbox.
//! - [`server`]: wiring: opens the store, builds the [`app::App`], starts the writer, the
//!   timers and the mirror, serves over TLS, shuts down.
//! - [`cli`]: the command line's backup and restore, outside the service.
//! - [`agent`]: the node agent (`agent` subcommand), a client of the service's API.
//!
//! Beside the chain:
//!
//! - [`clock`] and [`progress`]: leaves that import nothing from the crate; any layer may
//!   use them (`domain` its `Micros`, `store` the progress of a backup).
//! - [`payout_sink`]: the payment service's webhook client; uses `domain` only, used by
//!   `app` and `jobs`.
//! - [`config`], [`error`] and [`crypto`]: below `app`, above `store`: the configuration
//!   names store settings (free-space floor, commit interval), the one HTTP error maps
//!   store errors, and the token service answers with that error. The store imports none
//!   of them.
//! - [`metrics`]: beside `app` (which holds it): reads store counters and shows the
//!   mirror's [`sync::MirrorStatus`]; the one import from beside `app` into the layer above
//!   it.
//! - [`logging`] and [`tls`]: used by `server`, `cli` and `agent` only.
//!
//! The tests in this file read the sources and fail when an import runs against the
//! arrow.

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

/// The layering rule of the module doc, checked on the source text: a module's files must
/// not name a module to its right (or a peer), nor the crates of the outer layers.
#[cfg(test)]
mod layering {
    use std::path::{Path, PathBuf};

    /// Every module of the crate above `store`, and the ones beside the chain that sit
    /// above it.
    const ABOVE_STORE: &[&str] = &[
        "app",
        "api",
        "jobs",
        "sync",
        "server",
        "cli",
        "agent",
        "metrics",
        "config",
        "error",
        "crypto",
        "logging",
        "tls",
        "payout_sink",
    ];

    /// The `.rs` files of a module: `src/{name}.rs` or everything under `src/{name}/`.
    fn sources(module: &str) -> Vec<(PathBuf, String)> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut files = Vec::new();
        let mut dirs = vec![src.join(module)];
        let single = src.join(format!("{module}.rs"));
        if single.is_file() {
            files.push(single);
        }
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    files.push(path);
                }
            }
        }
        assert!(!files.is_empty(), "no sources found for module {module}");
        files.sort();
        files
            .into_iter()
            .map(|p| {
                let text = std::fs::read_to_string(&p).unwrap();
                (p, text)
            })
            .collect()
    }

    /// Lines of `text` that name `crate::{module}` (as a whole path segment).
    fn naming(text: &str, module: &str) -> Vec<(usize, String)> {
        let needle = format!("crate::{module}");
        text.lines()
            .enumerate()
            .filter(|(_, line)| {
                line.match_indices(&needle).any(|(at, _)| {
                    let next = line[at + needle.len()..].chars().next();
                    !next.is_some_and(|c| c.is_alphanumeric() || c == '_')
                })
            })
            .map(|(i, line)| (i + 1, line.trim().to_string()))
            .collect()
    }

    /// Every line of `module`'s files that names one of `modules` or uses one of `crates`.
    fn violations(module: &str, modules: &[&str], crates: &[&str]) -> Vec<String> {
        let mut found = Vec::new();
        for (path, text) in sources(module) {
            let file = path.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap();
            for m in modules {
                for (line, code) in naming(&text, m) {
                    found.push(format!("{}:{line}: crate::{m}: {code}", file.display()));
                }
            }
            for c in crates {
                let needle = format!("{c}::");
                for (i, code) in text.lines().enumerate() {
                    if code.contains(&needle) {
                        found.push(format!(
                            "{}:{}: {c}: {}",
                            file.display(),
                            i + 1,
                            code.trim()
                        ));
                    }
                }
            }
        }
        found
    }

    fn assert_clean(module: &str, modules: &[&str], crates: &[&str]) {
        let found = violations(module, modules, crates);
        assert!(
            found.is_empty(),
            "{module} imports against the arrow (see the module doc of lib.rs):\n{}",
            found.join("\n")
        );
    }

    #[test]
    fn the_check_finds_what_it_looks_for() {
        assert_eq!(naming("use crate::api::AppState;", "api").len(), 1);
        assert_eq!(naming("x = crate::app;", "app").len(), 1);
        assert!(naming("use crate::apis::X;", "api").is_empty());
        assert!(naming("use crate::app::X;", "api").is_empty());
        // Every module of the map exists where the check looks for it.
        for m in ABOVE_STORE.iter().chain(&["domain", "views", "store"]) {
            assert!(!sources(m).is_empty());
        }
    }

    #[test]
    fn domain_is_pure() {
        let mut above: Vec<&str> = ABOVE_STORE.to_vec();
        above.extend(["store", "views", "progress"]);
        assert_clean(
            "domain",
            &above,
            &["axum", "redb", "tokio", "reqwest", "mongodb"],
        );
    }

    #[test]
    fn views_build_on_the_domain_only() {
        let mut above: Vec<&str> = ABOVE_STORE.to_vec();
        above.extend(["store", "progress"]);
        assert_clean(
            "views",
            &above,
            &["axum", "redb", "tokio", "reqwest", "mongodb"],
        );
    }

    #[test]
    fn the_store_imports_nothing_above_it() {
        assert_clean("store", ABOVE_STORE, &["axum", "reqwest", "mongodb"]);
    }

    #[test]
    fn app_knows_no_handler_timer_or_mirror() {
        assert_clean(
            "app",
            &["api", "jobs", "sync", "server", "cli", "agent"],
            &["axum", "mongodb"],
        );
    }

    #[test]
    fn handlers_timers_and_the_mirror_are_peers_that_do_not_import_each_other() {
        let outer = ["server", "cli", "agent"];
        for (module, peers) in [
            ("api", ["jobs", "sync"]),
            ("jobs", ["api", "sync"]),
            ("sync", ["api", "jobs"]),
        ] {
            let mut forbidden = peers.to_vec();
            forbidden.extend(outer);
            assert_clean(module, &forbidden, &[]);
        }
        assert_clean("jobs", &[], &["axum"]);
        assert_clean("sync", &[], &["axum"]);
    }

    #[test]
    fn the_modules_beside_the_chain_stay_below_app() {
        let outer = ["app", "api", "jobs", "server", "cli", "agent"];
        for module in ["config", "error", "crypto", "payout_sink", "metrics"] {
            assert_clean(module, &outer, &[]);
        }
        for module in ["clock", "progress"] {
            let mut all: Vec<&str> = ABOVE_STORE.to_vec();
            all.extend(["domain", "views", "store"]);
            assert_clean(module, &all, &[]);
        }
    }
}
