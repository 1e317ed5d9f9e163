//! The node agent: `lucid-node-management agent`.
//!
//! It logs in with the node key (challenge, Ed25519 signature, JWT) and then sends a
//! signed heartbeat every interval (see "Heartbeats" in the HTTP contract). The pure parts
//! (canonical bytes and body text, sequence numbers, `/proc` parsing, backoff, the state
//! file) are plain functions so they can be tested without a server.
//!
//! - [`wire`]: what goes over the wire (the heartbeat's fields, body and signature; the
//!   answers read back);
//! - [`state`]: the persisted state (the last accepted seq) and the seq counter;
//! - `http`: the HTTP client side (login, heartbeat requests, classifying answers);
//! - [`config`]: `agent.toml` and the flags over it; [`pin`]: certificate pinning;
//! - `enroll`: `agent enroll` (a code, a key, the pinned certificate, `agent.toml`);
//! - `keeper` and [`receipts`]: the node's own proofs, checked and kept after each epoch;
//! - `status`: `agent status` and `agent receipts`.
//!
//! Failure policy:
//! - connection errors, 408, 429 and 5xx: exponential backoff (1 s doubling to 60 s,
//!   at least `Retry-After` when the server sends one), then carry on; never exit;
//! - 401: log in again and retry once; the token is also renewed shortly before it expires;
//! - 409 `replayed-heartbeat`: move `seq` past the refused one, send again next tick;
//! - 404 (the node does not exist), a key that does not match the node, and a
//!   deregistered node: exit non-zero with a one-line reason, since nothing will fix them;
//! - any other 4xx: log it and try again next tick.

pub mod config;
mod enroll;
mod http;
mod keeper;
pub mod pin;
pub mod receipts;
pub mod state;
mod status;
pub mod wire;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ed25519_dalek::SigningKey;
use serde::Deserialize;

use crate::config::{parse_duration, LogFormat};
use crate::crypto::keys::read_signing_key;

use http::{build_client, Failure};
use state::{default_state_path, load_state, save_state, SeqCounter};

/// First wait after a transient failure.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest wait between retries (a `Retry-After` may ask for more, up to
/// [`MAX_RETRY_AFTER`]).
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// The most of a server's `Retry-After` the agent honours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// Renew the token when it expires within this (or half its lifetime, if shorter).
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// `lucid-node-management agent`: without a subcommand it runs the agent from flags (as
/// before there were subcommands); `run` does the same reading `agent.toml` first.
#[derive(clap::Args, Debug, Clone)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AgentCli {
    #[command(subcommand)]
    pub command: Option<AgentCommand>,
    #[command(flatten)]
    pub run: AgentArgs,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum AgentCommand {
    /// Enrol this node with a code from the console or the API: make its key, register it,
    /// pin the appliance's certificate and write agent.toml.
    Enroll(enroll::EnrollArgs),
    /// Run the agent (what lucid-node-agent.service starts): reads --config (default
    /// /etc/lucid-node-agent/agent.toml); every flag overrides the file.
    Run(AgentArgs),
    /// Print the node's health; exit non-zero when it is not healthy.
    Status(status::StatusArgs),
    /// Summarise the kept proofs (receipts), or re-check them all with --verify.
    Receipts(status::ReceiptsArgs),
}

/// The agent's run flags (each overrides agent.toml's value of the same name).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AgentArgs {
    /// agent.toml written by `agent enroll` (`agent run` reads
    /// /etc/lucid-node-agent/agent.toml when this is not given).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Base URL of the service, e.g. https://nodes.example:8443
    #[arg(long)]
    pub server: Option<String>,
    /// This node's id (node_...), as returned at registration.
    #[arg(long)]
    pub node_id: Option<String>,
    /// Node key file written by `keygen` (base64 Ed25519 seed).
    #[arg(long)]
    pub key: Option<PathBuf>,
    /// Trust only this PEM certificate (e.g. the service's DATA_DIR/tls/cert.pem).
    #[arg(long, conflicts_with_all = ["insecure", "fingerprint"])]
    pub ca_cert: Option<PathBuf>,
    /// Trust only the certificate with this SHA-256 fingerprint (sha256:<hex>).
    #[arg(long, conflicts_with = "insecure")]
    pub fingerprint: Option<String>,
    /// Do not check the server's certificate (testing only).
    #[arg(long)]
    pub insecure: bool,
    /// Time between heartbeats: seconds or with a unit (30s, 2m). Default 30s.
    #[arg(long, value_parser = parse_duration)]
    pub interval: Option<Duration>,
    /// Where the last accepted seq is kept (default: the key path + ".state").
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Keep receipts and the status file here (set by `enroll`).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Exit 0 after this many accepted heartbeats.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_heartbeats: Option<u64>,
}

impl AgentArgs {
    /// The settings: the config file (when given, or by default for `agent run`) under
    /// the flags.
    pub fn settings(&self, default_config: bool) -> Result<config::Settings, String> {
        let file = match (&self.config, default_config) {
            (Some(path), _) => config::AgentFile::load(path, true)?,
            (None, true) => config::AgentFile::load(Path::new(config::DEFAULT_CONFIG), false)?,
            (None, false) => None,
        };
        config::Settings::resolve(
            file,
            config::Overrides {
                server: self.server.clone(),
                node_id: self.node_id.clone(),
                key: self.key.clone(),
                ca_cert: self.ca_cert.clone(),
                fingerprint: self.fingerprint.clone(),
                insecure: self.insecure,
                interval: self.interval,
                state: self.state.clone(),
                state_dir: self.state_dir.clone(),
            },
        )
    }
}

/// `lucid-node-management agent ...`.
pub fn main(cli: AgentCli) -> Result<(), String> {
    match cli.command {
        None => run(cli.run, false),
        Some(AgentCommand::Run(args)) => run(args, true),
        Some(AgentCommand::Enroll(args)) => enroll::enroll(args),
        Some(AgentCommand::Status(args)) => status::status(args),
        Some(AgentCommand::Receipts(args)) => status::receipts(args),
    }
}

// ---------------------------------------------------------------------------------------
// Pure parts
// ---------------------------------------------------------------------------------------
/// CPU load per CPU, rounded to two decimals, as JSON number text. The text is what
/// serde_json prints for that `f64` (`0.35`, `1.0`, `0.0`), so a server that parses the
/// number and prints it again with serde_json gets the same text back.
pub fn format_cpu_load(load1: Option<f64>, cpus: usize) -> String {
    let per_cpu = load1.unwrap_or(0.0) / cpus.max(1) as f64;
    let mut rounded = (per_cpu * 100.0).round() / 100.0;
    if !rounded.is_finite() || rounded < 0.0 {
        rounded = 0.0;
    }
    serde_json::to_string(&rounded).unwrap_or_else(|_| "0.0".to_string())
}

/// The 1-minute load average from `/proc/loadavg` text.
pub fn parse_loadavg(text: &str) -> Option<f64> {
    let v: f64 = text.split_whitespace().next()?.parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// `(MemTotal - MemAvailable) / 1024` from `/proc/meminfo` text (values in kB).
pub fn parse_meminfo_used_mb(text: &str) -> Option<u64> {
    let field = |name: &str| -> Option<u64> {
        text.lines().find_map(|line| {
            let rest = line.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse().ok()
        })
    };
    let total = field("MemTotal")?;
    let available = field("MemAvailable")?;
    Some(total.saturating_sub(available) / 1024)
}

/// Reads the machine's load and memory; zeros where `/proc` is unreadable.
fn sample_system() -> (String, u64) {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|t| parse_loadavg(&t));
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| parse_meminfo_used_mb(&t))
        .unwrap_or(0);
    (format_cpu_load(load, cpus), mem)
}

/// Exponential backoff: 1 s, 2 s, 4 s ... capped at 60 s; reset after a success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            next: BACKOFF_START,
        }
    }
}

impl Backoff {
    /// How long to wait now; at least the server's `Retry-After` (up to 10 minutes).
    pub fn delay(&mut self, retry_after: Option<Duration>) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        match retry_after {
            Some(r) => d.max(r.min(MAX_RETRY_AFTER)),
            None => d,
        }
    }

    pub fn reset(&mut self) {
        self.next = BACKOFF_START;
    }
}

/// `Retry-After` in seconds (the HTTP-date form is ignored).
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// A token's lifetime from its own `iat` and `exp` claims (read, not verified), which
/// does not depend on this machine's clock agreeing with the server's.
pub fn token_lifetime(token: &str) -> Option<Duration> {
    #[derive(Deserialize)]
    struct Times {
        iat: u64,
        exp: u64,
    }
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')).ok()?;
    let t: Times = serde_json::from_slice(&bytes).ok()?;
    t.exp.checked_sub(t.iat).map(Duration::from_secs)
}

/// When to renew a token of that lifetime: 60 s before it expires, or half-way for
/// tokens shorter than two minutes.
pub fn refresh_after(lifetime: Duration) -> Duration {
    lifetime - TOKEN_REFRESH_MARGIN.min(lifetime / 2)
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// The agent
// ---------------------------------------------------------------------------------------

struct Session {
    token: String,
    /// Renew from this instant on.
    refresh_at: Option<Instant>,
    /// The token stops working at this instant (as far as we know).
    expires_at: Option<Instant>,
}

struct Agent {
    client: reqwest::Client,
    base: String,
    node_id: String,
    key: SigningKey,
    key_path: PathBuf,
    state_path: PathBuf,
    seq: SeqCounter,
    session: Option<Session>,
    last_status: Option<String>,
    state_write_failed: bool,
    /// Receipts and the status file (when the agent has a state directory).
    keeper: Option<keeper::Keeper>,
    /// READY=1 went to systemd (after the first accepted heartbeat).
    notified_ready: bool,
}

impl Agent {
    fn persist(&mut self, seq: u64) {
        match save_state(&self.state_path, &self.node_id, seq) {
            Ok(()) => self.state_write_failed = false,
            Err(e) => {
                if !self.state_write_failed {
                    tracing::warn!(path = %self.state_path.display(), error = %e,
                        "cannot write the state file; seq still follows the clock");
                }
                self.state_write_failed = true;
            }
        }
    }

    /// Heartbeats until `max` are accepted (or forever); Err only for fatal failures.
    async fn run(&mut self, interval: Duration, max: Option<u64>) -> Result<(), String> {
        let mut backoff = Backoff::default();
        let mut accepted = 0u64;
        let mut failing = false;
        loop {
            let cycle_start = tokio::time::Instant::now();
            let mut retried = false;
            loop {
                match self.beat().await {
                    Ok(answer) => {
                        accepted += 1;
                        backoff.reset();
                        if let Some(k) = self.keeper.as_mut() {
                            k.on_accepted(self.seq.last(), answer.received_at.as_deref());
                        }
                        if !self.notified_ready {
                            // Type=notify: the unit is "started" once the appliance took a
                            // heartbeat. Outside systemd this does nothing.
                            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
                            self.notified_ready = true;
                        }
                        let status_changed = answer.status.is_some()
                            && answer.status.as_deref() != self.last_status.as_deref();
                        if accepted == 1 || failing || status_changed {
                            tracing::info!(
                                seq = self.seq.last(),
                                status = answer.status.as_deref().unwrap_or("?"),
                                "heartbeat accepted"
                            );
                        }
                        if answer.status.is_some() {
                            self.last_status = answer.status;
                        }
                        failing = false;
                        if max.is_some_and(|m| accepted >= m) {
                            tracing::info!(accepted, "sent the requested number of heartbeats");
                            return Ok(());
                        }
                        break;
                    }
                    Err(Failure::Transient {
                        reason,
                        retry_after,
                    }) => {
                        let wait = backoff.delay(retry_after);
                        tracing::warn!(%reason, retry_in = ?wait, "heartbeat failed; retrying");
                        if let Some(k) = self.keeper.as_mut() {
                            k.on_failure(&reason);
                        }
                        failing = true;
                        retried = true;
                        tokio::time::sleep(wait).await;
                    }
                    Err(Failure::Replayed { reason }) => {
                        tracing::warn!(
                            %reason,
                            next_seq_at_least = self.seq.last() + 1,
                            "seq refused as replayed; moving on"
                        );
                        failing = true;
                        break;
                    }
                    Err(Failure::Rejected { reason } | Failure::Unauthorized { reason, .. }) => {
                        tracing::warn!(%reason, "heartbeat refused; trying again next interval");
                        if let Some(k) = self.keeper.as_mut() {
                            k.on_failure(&reason);
                        }
                        failing = true;
                        backoff.reset();
                        break;
                    }
                    Err(Failure::Fatal(reason)) => return Err(reason),
                }
            }
            if self.keeper.as_ref().is_some_and(|k| k.due()) {
                self.keep_receipts().await;
            }
            let next = if retried {
                tokio::time::Instant::now() + interval
            } else {
                cycle_start + interval
            };
            tokio::time::sleep_until(next).await;
        }
    }
}

/// `lucid-node-management agent [run]`: runs until stopped (exit 0), until
/// `--max-heartbeats` are accepted (exit 0), or until a failure nothing will fix (Err: exit
/// non-zero).
pub fn run(args: AgentArgs, default_config: bool) -> Result<(), String> {
    let level = std::env::var("LOG_LEVEL")
        .ok()
        .filter(|l| !l.trim().is_empty())
        .unwrap_or_else(|| "info".to_string());
    crate::logging::init(&level, LogFormat::Text);

    let settings = args.settings(default_config)?;
    let server = settings.server.trim().trim_end_matches('/').to_string();
    let url = reqwest::Url::parse(&server).map_err(|e| format!("--server {server:?}: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!("--server {server:?}: use an https:// URL"));
    }
    if !crate::domain::ids::is_valid_id("node", &settings.node_id) {
        return Err(format!(
            "--node-id {:?} is not a node id (node_...)",
            settings.node_id
        ));
    }
    let key = read_signing_key(&settings.key)?;
    if let Ok(meta) = std::fs::metadata(&settings.key) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %settings.key.display(),
                "the key file is readable by others; chmod 600 it"
            );
        }
    }
    if settings.trust == config::Trust::Insecure {
        tracing::warn!(
            "--insecure: the server's certificate is NOT checked; anyone on the path can impersonate it"
        );
    }
    let client = build_client(&settings.trust)?;
    let state_path = settings
        .state
        .clone()
        .unwrap_or_else(|| default_state_path(&settings.key));
    let persisted = match load_state(&state_path) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the state file; seq follows the clock");
            None
        }
    };
    let keeper = match &settings.state_dir {
        Some(dir) => Some(keeper::Keeper::open(dir, &settings)?),
        None => None,
    };
    let mut agent = Agent {
        client,
        base: server,
        node_id: settings.node_id.clone(),
        key,
        key_path: settings.key.clone(),
        state_path,
        seq: SeqCounter::new(persisted),
        session: None,
        last_status: None,
        state_write_failed: false,
        keeper,
        notified_ready: false,
    };
    tracing::info!(server = %agent.base, node_id = %agent.node_id, interval = ?settings.interval,
        state = %agent.state_path.display(), last_seq = ?persisted,
        receipts = agent.keeper.is_some(), "agent starting");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        tokio::select! {
            r = agent.run(settings.interval, args.max_heartbeats) => r,
            _ = crate::server::shutdown_signal() => {
                tracing::info!("stopping");
                Ok(())
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::generate_signing_key;

    #[test]
    fn cpu_load_is_per_cpu_with_two_decimals() {
        assert_eq!(format_cpu_load(Some(0.7), 2), "0.35");
        assert_eq!(format_cpu_load(Some(1.0), 3), "0.33");
        assert_eq!(format_cpu_load(Some(2.0), 1), "2.0");
        assert_eq!(format_cpu_load(Some(0.0), 4), "0.0");
        assert_eq!(format_cpu_load(None, 4), "0.0");
        assert_eq!(format_cpu_load(Some(0.5), 0), "0.5");
        assert_eq!(format_cpu_load(Some(f64::NAN), 2), "0.0");
        for i in 0..2000 {
            let t = format_cpu_load(Some(i as f64 * 0.0137), 3);
            let back: f64 = t.parse().unwrap();
            assert_eq!(serde_json::to_string(&back).unwrap(), t);
            let decimals = t.split('.').nth(1).map_or(0, str::len);
            assert!(decimals <= 2, "{t}");
        }
    }

    #[test]
    fn proc_files_parse() {
        assert_eq!(parse_loadavg("0.70 0.52 0.41 2/345 12345\n"), Some(0.70));
        assert_eq!(parse_loadavg(""), None);
        assert_eq!(parse_loadavg("x y"), None);
        let meminfo = "MemTotal:        8048876 kB\nMemFree:         1234567 kB\nMemAvailable:    5000000 kB\nBuffers:          100000 kB\n";
        assert_eq!(
            parse_meminfo_used_mb(meminfo),
            Some((8_048_876 - 5_000_000) / 1024)
        );
        // Old kernels without MemAvailable, or garbage: unknown.
        assert_eq!(
            parse_meminfo_used_mb("MemTotal: 100 kB\nMemFree: 50 kB\n"),
            None
        );
        assert_eq!(parse_meminfo_used_mb("nonsense"), None);
        // "MemTotalX" must not be taken for MemTotal.
        assert_eq!(
            parse_meminfo_used_mb("MemTotalX: 1 kB\nMemTotal: 2048 kB\nMemAvailable: 1024 kB\n"),
            Some(1)
        );
        assert_eq!(
            parse_meminfo_used_mb("MemTotal: 10 kB\nMemAvailable: 20 kB\n"),
            Some(0)
        );
        // The real files, where present, parse.
        if let Ok(t) = std::fs::read_to_string("/proc/meminfo") {
            assert!(parse_meminfo_used_mb(&t).is_some());
        }
        if let Ok(t) = std::fs::read_to_string("/proc/loadavg") {
            assert!(parse_loadavg(&t).is_some());
        }
    }

    #[test]
    fn backoff_doubles_to_a_minute_and_resets() {
        let mut b = Backoff::default();
        let schedule: Vec<u64> = (0..9).map(|_| b.delay(None).as_secs()).collect();
        assert_eq!(schedule, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        b.reset();
        assert_eq!(b.delay(None), Duration::from_secs(1));
        // Retry-After is a floor, itself capped at ten minutes.
        let mut b = Backoff::default();
        assert_eq!(
            b.delay(Some(Duration::from_secs(5))),
            Duration::from_secs(5)
        );
        assert_eq!(
            b.delay(Some(Duration::from_secs(1))),
            Duration::from_secs(2)
        );
        assert_eq!(b.delay(Some(Duration::from_secs(86_400))), MAX_RETRY_AFTER);
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
    }

    #[test]
    fn token_lifetime_reads_the_claims() {
        let svc = crate::crypto::tokens::TokenService::new(&generate_signing_key(), None, "lucid");
        let (token, _) = svc.issue(
            crate::domain::role::Role::Node,
            "node_a",
            Duration::from_secs(3600),
            Some(0),
            1_000,
        );
        assert_eq!(token_lifetime(&token), Some(Duration::from_secs(3600)));
        assert_eq!(token_lifetime("not.a.token"), None);
        assert_eq!(
            refresh_after(Duration::from_secs(3600)),
            Duration::from_secs(3540)
        );
        assert_eq!(
            refresh_after(Duration::from_secs(30)),
            Duration::from_secs(15)
        );
    }
}
