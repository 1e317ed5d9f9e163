//! The node agent: `lucid-node-management agent`.
//!
//! It logs in with the node key (challenge, Ed25519 signature, JWT) and then sends a
//! signed heartbeat every interval (see "Heartbeats" in the HTTP contract). The pure parts
//! (canonical bytes and body text, sequence numbers, `/proc` parsing, backoff, the state
//! file) are plain functions so they can be tested without a server.
//!
//! Failure policy:
//! - connection errors, 408, 429 and 5xx: exponential backoff (1 s doubling to 60 s,
//!   at least `Retry-After` when the server sends one), then carry on; never exit;
//! - 401: log in again and retry once; the token is also renewed shortly before it expires;
//! - 409 `replayed-heartbeat`: move `seq` past the refused one, send again next tick;
//! - 404 (the node does not exist), a key that does not match the node, and a
//!   deregistered node: exit non-zero with a one-line reason, since nothing will fix them;
//! - any other 4xx: log it and try again next tick.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD as B64, URL_SAFE_NO_PAD};
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use crate::config::{parse_duration, LogFormat};
use crate::crypto::keys::read_signing_key;
use crate::crypto::signatures::login_message;
use crate::domain::timefmt::{parse_rfc3339_us, rfc3339_us};

/// First wait after a transient failure.
pub const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest wait between retries (a `Retry-After` may ask for more, up to
/// [`MAX_RETRY_AFTER`]).
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// The most of a server's `Retry-After` the agent honours.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(600);
/// Renew the token when it expires within this (or half its lifetime, if shorter).
pub const TOKEN_REFRESH_MARGIN: Duration = Duration::from_secs(60);
/// Per-request limit (connect, send, answer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// `lucid-node-management agent` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct AgentArgs {
    /// Base URL of the service, e.g. https://nodes.example:8443
    #[arg(long)]
    pub server: String,
    /// This node's id (node_...), as returned at registration.
    #[arg(long)]
    pub node_id: String,
    /// Node key file written by `keygen` (base64 Ed25519 seed).
    #[arg(long)]
    pub key: PathBuf,
    /// Trust only this PEM certificate (e.g. the service's DATA_DIR/tls/cert.pem).
    #[arg(long, conflicts_with = "insecure")]
    pub ca_cert: Option<PathBuf>,
    /// Do not check the server's certificate (testing only).
    #[arg(long)]
    pub insecure: bool,
    /// Time between heartbeats: seconds or with a unit (30s, 2m).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Where the last accepted seq is kept (default: the key path + ".state").
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// Exit 0 after this many accepted heartbeats.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_heartbeats: Option<u64>,
}

// ---------------------------------------------------------------------------------------
// Pure parts
// ---------------------------------------------------------------------------------------

/// The signed fields of one heartbeat, each number already as the text that is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatFields {
    pub seq: u64,
    pub sent_at: String,
    pub sessions_active: u64,
    pub bytes_relayed: u64,
    /// The JSON number text, e.g. `0.35` (see [`format_cpu_load`]).
    pub cpu_load: String,
    pub mem_used_mb: u64,
}

impl HeartbeatFields {
    /// `lucid-hb-v1|{node_id}|{seq}|{sent_at}|{sessions_active}|{bytes_relayed}|{cpu_load}|{mem_used_mb}`
    pub fn canonical(&self, node_id: &str) -> String {
        format!(
            "lucid-hb-v1|{node_id}|{}|{}|{}|{}|{}|{}",
            self.seq,
            self.sent_at,
            self.sessions_active,
            self.bytes_relayed,
            self.cpu_load,
            self.mem_used_mb
        )
    }

    /// The JSON body, written by hand so every number is exactly the text that was signed.
    pub fn body(&self, signature_b64: &str) -> String {
        format!(
            "{{\"seq\":{},\"sent_at\":{},\"sessions_active\":{},\"bytes_relayed\":{},\"cpu_load\":{},\"mem_used_mb\":{},\"signature\":{}}}",
            self.seq,
            json_string(&self.sent_at),
            self.sessions_active,
            self.bytes_relayed,
            self.cpu_load,
            self.mem_used_mb,
            json_string(signature_b64)
        )
    }

    /// Signs the canonical bytes and returns the request body.
    pub fn signed_body(&self, node_id: &str, key: &SigningKey) -> String {
        let signature = B64.encode(key.sign(self.canonical(node_id).as_bytes()).to_bytes());
        self.body(&signature)
    }
}

fn json_string(s: &str) -> String {
    serde_json::to_string(s).expect("a string always serializes")
}

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

/// Heartbeat sequence numbers: strictly increasing, never reused, and derived from the
/// clock as well so they keep increasing when the state file is lost:
/// next = max(last + 1, now in ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeqCounter {
    /// The highest seq used (sent, or known to be taken).
    last: u64,
}

impl SeqCounter {
    /// Starts after `persisted` (the last accepted seq from the state file, if any).
    pub fn new(persisted: Option<u64>) -> Self {
        Self {
            last: persisted.unwrap_or(0),
        }
    }

    pub fn last(&self) -> u64 {
        self.last
    }

    /// The seq for the next heartbeat.
    pub fn next(&mut self, now_ms: u64) -> u64 {
        let seq = self.last.saturating_add(1).max(now_ms);
        self.last = seq;
        seq
    }

    /// The server refused `seq` as replayed: the next one is at least
    /// max(seq + 1, now_ms) + 1.
    pub fn on_replayed(&mut self, seq: u64, now_ms: u64) {
        self.last = self.last.max(seq.saturating_add(1).max(now_ms));
    }
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

/// The last accepted seq named in a `replayed-heartbeat` detail
/// ("... not greater than the last accepted seq 1234"), if any.
pub fn last_accepted_seq_hint(detail: &str) -> Option<u64> {
    let rest = detail.split("last accepted seq").nth(1)?.trim_start();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
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

/// The state file's default path: the key path with ".state" appended.
pub fn default_state_path(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".state");
    PathBuf::from(s)
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    node_id: String,
    last_seq: u64,
}

/// Reads the last accepted seq; `Ok(None)` when there is no state file yet.
pub fn load_state(path: &Path) -> Result<Option<u64>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    if let Ok(state) = serde_json::from_str::<StateFile>(&text) {
        return Ok(Some(state.last_seq));
    }
    text.trim()
        .parse::<u64>()
        .map(Some)
        .map_err(|_| format!("{} is not an agent state file", path.display()))
}

/// Writes the last accepted seq atomically: a temporary file, fsync, rename.
pub fn save_state(path: &Path, node_id: &str, last_seq: u64) -> std::io::Result<()> {
    let text = serde_json::to_string(&StateFile {
        node_id: node_id.to_string(),
        last_seq,
    })
    .expect("the state always serializes");
    crate::crypto::keys::write_secret_file(path, format!("{text}\n").as_bytes())
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------

/// A problem+json body (every field optional: proxies answer with anything).
#[derive(Deserialize, Default)]
struct Problem {
    #[serde(rename = "type")]
    kind: Option<String>,
    title: Option<String>,
    detail: Option<String>,
}

/// A non-success answer, or no answer at all.
#[derive(Debug)]
enum Failure {
    /// Connection error, timeout, 408, 429, 5xx: back off and try again.
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// 401 with the problem type.
    Unauthorized { kind: String, reason: String },
    /// 409 `replayed-heartbeat` (the counter has been moved on already).
    Replayed { reason: String },
    /// Refused for a reason that may pass: log and try again next tick.
    Rejected { reason: String },
    /// Nothing will fix it: exit non-zero with this reason.
    Fatal(String),
}

impl Failure {
    fn reason(&self) -> &str {
        match self {
            Failure::Transient { reason, .. }
            | Failure::Unauthorized { reason, .. }
            | Failure::Replayed { reason }
            | Failure::Rejected { reason }
            | Failure::Fatal(reason) => reason,
        }
    }
}

struct Reply {
    status: StatusCode,
    retry_after: Option<Duration>,
    body: Vec<u8>,
}

impl Reply {
    fn problem(&self) -> Problem {
        serde_json::from_slice(&self.body).unwrap_or_default()
    }

    /// `404 not-found: no such node` on one line.
    fn describe(&self) -> String {
        let p = self.problem();
        let mut s = self.status.as_u16().to_string();
        if let Some(kind) = &p.kind {
            s.push(' ');
            s.push_str(kind);
        }
        match (p.detail.or(p.title), p.kind.is_none()) {
            (Some(d), _) => {
                s.push_str(": ");
                s.push_str(&d);
            }
            (None, true) => {
                let text = String::from_utf8_lossy(&self.body);
                let text = text.trim();
                if !text.is_empty() {
                    s.push_str(": ");
                    s.push_str(&text.chars().take(200).collect::<String>());
                }
            }
            (None, false) => {}
        }
        one_line(&s)
    }

    /// The usual mapping of a non-success status.
    fn classify(&self, what: &str) -> Failure {
        let reason = format!("{what}: {}", self.describe());
        let kind = self.problem().kind.unwrap_or_default();
        match self.status.as_u16() {
            408 | 429 | 500..=599 => Failure::Transient {
                reason,
                retry_after: self.retry_after,
            },
            401 => Failure::Unauthorized { kind, reason },
            409 if kind == "replayed-heartbeat" => Failure::Replayed { reason },
            404 => Failure::Fatal(reason),
            _ => Failure::Rejected { reason },
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The error and its causes on one line (reqwest's own message is terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = cause.source();
    }
    one_line(&s)
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after)
}

/// The one HTTP client: keep-alive, rustls with the ring provider, and the trust chosen
/// on the command line.
fn build_client(ca_cert: Option<&Path>, insecure: bool) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .user_agent(format!("lucid-node-agent/{}", crate::VERSION))
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .tcp_keepalive(Duration::from_secs(60))
        .pool_max_idle_per_host(2);
    if let Some(path) = ca_cert {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read --ca-cert {}: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("--ca-cert {} is not PEM: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "--ca-cert {} holds no PEM certificate",
                path.display()
            ));
        }
        builder = builder.tls_built_in_root_certs(false);
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    } else if insecure {
        builder = builder.danger_accept_invalid_certs(true);
    }
    builder
        .build()
        .map_err(|e| format!("cannot set up HTTPS: {}", error_chain(&e)))
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
}

#[derive(Deserialize)]
struct ChallengeReply {
    nonce: String,
}

#[derive(Deserialize)]
struct TokenReply {
    token: String,
    expires_at: String,
}

#[derive(Deserialize, Default)]
struct HeartbeatReply {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    received_at: Option<String>,
}

impl Agent {
    async fn post(&self, url: &str, body: String, token: Option<&str>) -> Result<Reply, Failure> {
        let mut req = self
            .client
            .post(url)
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        if let Some(t) = token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        let transient = |e: reqwest::Error| Failure::Transient {
            reason: error_chain(&e),
            retry_after: None,
        };
        let resp = req.send().await.map_err(transient)?;
        let status = resp.status();
        let retry_after = retry_after(resp.headers());
        let body = resp.bytes().await.map_err(transient)?.to_vec();
        Ok(Reply {
            status,
            retry_after,
            body,
        })
    }

    /// Challenge, sign, token.
    async fn login(&self) -> Result<Session, Failure> {
        let challenge_body = serde_json::json!({ "node_id": self.node_id }).to_string();
        let reply = self
            .post(
                &format!("{}/api/v1/auth/challenge", self.base),
                challenge_body,
                None,
            )
            .await?;
        if !reply.status.is_success() {
            return Err(self.login_failure("login challenge", &reply));
        }
        let challenge: ChallengeReply =
            serde_json::from_slice(&reply.body).map_err(|e| Failure::Transient {
                reason: format!("login challenge: unexpected answer: {e}"),
                retry_after: None,
            })?;
        let signature = B64.encode(self.key.sign(&login_message(&challenge.nonce)).to_bytes());
        let started = Instant::now();
        let token_body = serde_json::json!({
            "node_id": self.node_id,
            "nonce": challenge.nonce,
            "signature": signature,
        })
        .to_string();
        let reply = self
            .post(
                &format!("{}/api/v1/auth/token", self.base),
                token_body,
                None,
            )
            .await?;
        if !reply.status.is_success() {
            return Err(self.login_failure("login", &reply));
        }
        let token: TokenReply =
            serde_json::from_slice(&reply.body).map_err(|e| Failure::Transient {
                reason: format!("login: unexpected answer: {e}"),
                retry_after: None,
            })?;
        // Prefer the token's own lifetime (immune to clock skew); else its expires_at
        // against our clock.
        let lifetime = token_lifetime(&token.token).or_else(|| {
            let exp = parse_rfc3339_us(&token.expires_at)?;
            exp.checked_sub(now_us()).map(Duration::from_micros)
        });
        tracing::info!(node_id = %self.node_id, expires_at = %token.expires_at, "logged in");
        Ok(Session {
            token: token.token,
            refresh_at: lifetime.map(|l| started + refresh_after(l)),
            expires_at: lifetime.map(|l| started + l),
        })
    }

    fn login_failure(&self, what: &str, reply: &Reply) -> Failure {
        let problem = reply.problem();
        let kind = problem.kind.as_deref().unwrap_or_default();
        let detail = problem.detail.as_deref().unwrap_or_default();
        let reason = format!("{what}: {}", reply.describe());
        match reply.status.as_u16() {
            404 => Failure::Fatal(format!(
                "node {} is not known to {} ({reason})",
                self.node_id, self.base
            )),
            400 => Failure::Fatal(format!("the server refused the login ({reason})")),
            401 if kind == "invalid-signature" => Failure::Fatal(format!(
                "the key in {} does not belong to node {} ({reason})",
                self.key_path.display(),
                self.node_id
            )),
            // An expired or already used nonce: ask again.
            401 => Failure::Transient {
                reason,
                retry_after: None,
            },
            403 if kind == "node-inactive" && detail.contains("deregistered") => {
                Failure::Fatal(format!("node {} was deregistered ({reason})", self.node_id))
            }
            _ => reply.classify(what),
        }
    }

    /// Logs in when there is no token or it is about to expire. A failed renewal keeps
    /// the old token while it is still valid.
    async fn ensure_session(&mut self) -> Result<(), Failure> {
        let now = Instant::now();
        let due = match &self.session {
            None => true,
            Some(s) => s.refresh_at.is_some_and(|t| now >= t),
        };
        if !due {
            return Ok(());
        }
        match self.login().await {
            Ok(session) => {
                self.session = Some(session);
                Ok(())
            }
            Err(e @ (Failure::Transient { .. } | Failure::Rejected { .. })) => {
                let still_valid = self
                    .session
                    .as_ref()
                    .and_then(|s| s.expires_at)
                    .is_some_and(|exp| now < exp);
                if still_valid {
                    tracing::warn!(
                        reason = e.reason(),
                        "token renewal failed; using the current token meanwhile"
                    );
                    Ok(())
                } else {
                    self.session = None;
                    Err(e)
                }
            }
            Err(e) => {
                self.session = None;
                Err(e)
            }
        }
    }

    /// One heartbeat with the current token.
    async fn send_heartbeat(&mut self) -> Result<HeartbeatReply, Failure> {
        let token = match &self.session {
            Some(s) => s.token.clone(),
            None => {
                return Err(Failure::Transient {
                    reason: "not logged in".into(),
                    retry_after: None,
                })
            }
        };
        let now = now_us();
        let seq = self.seq.next(now / 1000);
        let (cpu_load, mem_used_mb) = sample_system();
        let fields = HeartbeatFields {
            seq,
            sent_at: rfc3339_us(now),
            sessions_active: 0,
            bytes_relayed: 0,
            cpu_load,
            mem_used_mb,
        };
        let body = fields.signed_body(&self.node_id, &self.key);
        let url = format!("{}/api/v1/nodes/{}/heartbeat", self.base, self.node_id);
        let reply = self.post(&url, body, Some(&token)).await?;
        if reply.status.is_success() {
            self.persist(seq);
            let answer: HeartbeatReply = serde_json::from_slice(&reply.body).unwrap_or_default();
            tracing::debug!(seq, received_at = ?answer.received_at, "heartbeat accepted");
            return Ok(answer);
        }
        match reply.classify("heartbeat") {
            Failure::Replayed { reason } => {
                // The server's last accepted seq, when its detail names it (after a clock
                // step back, say), so one refusal is enough to get past it.
                let server_last = reply
                    .problem()
                    .detail
                    .as_deref()
                    .and_then(last_accepted_seq_hint);
                self.seq
                    .on_replayed(seq.max(server_last.unwrap_or(0)), now_us() / 1000);
                Err(Failure::Replayed { reason })
            }
            Failure::Fatal(reason) => Err(Failure::Fatal(format!(
                "{reason} (node {} was removed or does not exist)",
                self.node_id
            ))),
            other => Err(other),
        }
    }

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

    /// Log in if needed and send one heartbeat; on a 401, log in again and retry once.
    async fn beat(&mut self) -> Result<HeartbeatReply, Failure> {
        self.ensure_session().await?;
        match self.send_heartbeat().await {
            Err(Failure::Unauthorized { kind, reason }) => {
                tracing::info!(%kind, %reason, "token refused; logging in again");
                self.session = None;
                self.ensure_session().await?;
                match self.send_heartbeat().await {
                    Err(Failure::Unauthorized { reason, .. }) => Err(Failure::Rejected { reason }),
                    other => other,
                }
            }
            other => other,
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
                        failing = true;
                        backoff.reset();
                        break;
                    }
                    Err(Failure::Fatal(reason)) => return Err(reason),
                }
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

/// `lucid-node-management agent`: runs until stopped (exit 0), until `--max-heartbeats`
/// are accepted (exit 0), or until a failure nothing will fix (Err: exit non-zero).
pub fn run(args: AgentArgs) -> Result<(), String> {
    let level = std::env::var("LOG_LEVEL")
        .ok()
        .filter(|l| !l.trim().is_empty())
        .unwrap_or_else(|| "info".to_string());
    crate::logging::init(&level, LogFormat::Text);

    let server = args.server.trim().trim_end_matches('/').to_string();
    let url = reqwest::Url::parse(&server).map_err(|e| format!("--server {server:?}: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err(format!("--server {server:?}: use an https:// URL"));
    }
    if !crate::domain::ids::is_valid_id("node", &args.node_id) {
        return Err(format!(
            "--node-id {:?} is not a node id (node_...)",
            args.node_id
        ));
    }
    let key = read_signing_key(&args.key)?;
    if let Ok(meta) = std::fs::metadata(&args.key) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                path = %args.key.display(),
                "the key file is readable by others; chmod 600 it"
            );
        }
    }
    if args.insecure {
        tracing::warn!(
            "--insecure: the server's certificate is NOT checked; anyone on the path can impersonate it"
        );
    }
    let client = build_client(args.ca_cert.as_deref(), args.insecure)?;
    let state_path = args
        .state
        .clone()
        .unwrap_or_else(|| default_state_path(&args.key));
    let persisted = match load_state(&state_path) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "ignoring the state file; seq follows the clock");
            None
        }
    };
    let mut agent = Agent {
        client,
        base: server,
        node_id: args.node_id.clone(),
        key,
        key_path: args.key.clone(),
        state_path,
        seq: SeqCounter::new(persisted),
        session: None,
        last_status: None,
        state_write_failed: false,
    };
    tracing::info!(server = %agent.base, node_id = %agent.node_id, interval = ?args.interval,
        state = %agent.state_path.display(), last_seq = ?persisted, "agent starting");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        tokio::select! {
            r = agent.run(args.interval, args.max_heartbeats) => r,
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
    use crate::crypto::signatures::verify_signature;
    use serde_json::Value;

    /// The raw text of each top-level field of a flat JSON object, in order.
    fn raw_fields(body: &str) -> Vec<(String, String)> {
        fn skip_ws(s: &str, mut i: usize) -> usize {
            while s.as_bytes().get(i).is_some_and(|b| b.is_ascii_whitespace()) {
                i += 1;
            }
            i
        }
        // One JSON value starting at `i`: (value, end offset).
        fn value_at(s: &str, i: usize) -> (Value, usize) {
            let mut stream = serde_json::Deserializer::from_str(&s[i..]).into_iter::<Value>();
            let v = stream.next().expect("a value").expect("valid JSON");
            (v, i + stream.byte_offset())
        }
        let mut out = Vec::new();
        let mut i = skip_ws(body, 0);
        assert_eq!(&body[i..i + 1], "{");
        i += 1;
        loop {
            i = skip_ws(body, i);
            let (key, end) = value_at(body, i);
            i = skip_ws(body, end);
            assert_eq!(&body[i..i + 1], ":");
            i = skip_ws(body, i + 1);
            let (_, end) = value_at(body, i);
            out.push((key.as_str().unwrap().to_string(), body[i..end].to_string()));
            i = skip_ws(body, end);
            match &body[i..i + 1] {
                "," => i += 1,
                "}" => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        out
    }

    fn sample_fields(cpu: Option<f64>, cpus: usize) -> HeartbeatFields {
        HeartbeatFields {
            seq: 1_764_082_185_123,
            sent_at: rfc3339_us(1_764_082_185_123_456),
            sessions_active: 0,
            bytes_relayed: 0,
            cpu_load: format_cpu_load(cpu, cpus),
            mem_used_mb: 412,
        }
    }

    #[test]
    fn body_and_canonical_bytes_agree_and_the_signature_verifies() {
        let key = generate_signing_key();
        let node_id = "node_abc-1";
        for (cpu, cpus) in [
            (Some(0.7), 2),
            (Some(0.0), 1),
            (Some(2.0), 2),
            (Some(3.3), 4),
            (None, 8),
            (Some(12.345), 3),
        ] {
            let fields = sample_fields(cpu, cpus);
            let body = fields.signed_body(node_id, &key);
            // Valid JSON with the contract's fields and types.
            let v: Value = serde_json::from_str(&body).unwrap();
            assert!(v["seq"].is_u64() && v["sent_at"].is_string() && v["signature"].is_string());
            assert!(v["sessions_active"].is_u64() && v["bytes_relayed"].is_u64());
            assert!(v["cpu_load"].is_f64() && v["mem_used_mb"].is_u64());
            // Rebuild the canonical string from the raw texts in the body.
            let raw: std::collections::HashMap<_, _> = raw_fields(&body).into_iter().collect();
            assert_eq!(raw.len(), 7);
            let text = |k: &str| -> String {
                let r = &raw[k];
                match serde_json::from_str::<Value>(r).unwrap() {
                    Value::String(s) => s,
                    _ => r.clone(),
                }
            };
            let rebuilt = format!(
                "lucid-hb-v1|{node_id}|{}|{}|{}|{}|{}|{}",
                text("seq"),
                text("sent_at"),
                text("sessions_active"),
                text("bytes_relayed"),
                text("cpu_load"),
                text("mem_used_mb")
            );
            assert_eq!(rebuilt, fields.canonical(node_id));
            let pk = key.verifying_key().to_bytes();
            assert!(verify_signature(
                &pk,
                rebuilt.as_bytes(),
                &text("signature")
            ));
            // A server that parses cpu_load as f64 and prints it with serde_json again
            // gets the same text.
            assert_eq!(v["cpu_load"].to_string(), raw["cpu_load"]);
        }
    }

    #[test]
    fn canonical_bytes_follow_the_contract() {
        let fields = sample_fields(Some(0.7), 2);
        assert_eq!(
            fields.canonical("node_x"),
            "lucid-hb-v1|node_x|1764082185123|2025-11-25T14:49:45.123456Z|0|0|0.35|412"
        );
    }

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
    fn seq_never_decreases_even_when_the_clock_goes_back() {
        let mut c = SeqCounter::new(None);
        let mut last = 0;
        for now in [1_000u64, 1_000, 1_000, 5_000, 4_000, 0, 6_000, 6_000] {
            let s = c.next(now);
            assert!(s > last, "{s} after {last}");
            assert!(s >= now);
            last = s;
        }
        // A persisted seq ahead of the clock is respected.
        let mut c = SeqCounter::new(Some(10_000));
        assert_eq!(c.next(1_000), 10_001);
        assert_eq!(c.next(20_000), 20_000);
    }

    #[test]
    fn seq_moves_past_a_replayed_one() {
        let mut c = SeqCounter::new(None);
        let s = c.next(1_000);
        c.on_replayed(s, 1_000);
        assert!(c.next(1_000) >= s.max(1_000) + 2);
        // Replayed far ahead of the clock.
        let mut c = SeqCounter::new(None);
        c.on_replayed(50_000, 1_000);
        assert_eq!(c.next(1_000), 50_002);
        let mut c = SeqCounter::new(None);
        let s = c.next(1_000);
        c.on_replayed(s, 9_000);
        assert!(c.next(9_000) > 9_000);
        assert_eq!(
            last_accepted_seq_hint("seq 5 is not greater than the last accepted seq 1234"),
            Some(1234)
        );
        assert_eq!(last_accepted_seq_hint("seq replayed"), None);
    }

    #[test]
    fn seq_survives_a_lost_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key.state");
        assert_eq!(load_state(&path).unwrap(), None);
        let t0 = now_us() / 1000;
        let mut c = SeqCounter::new(load_state(&path).unwrap());
        let mut sent = Vec::new();
        for _ in 0..5 {
            let s = c.next(now_us() / 1000);
            save_state(&path, "node_a", s).unwrap();
            sent.push(s);
        }
        assert!(sent[0] >= t0);
        // Restart with the file: strictly after the last one even at the same instant.
        let mut again = SeqCounter::new(load_state(&path).unwrap());
        assert_eq!(load_state(&path).unwrap(), Some(*sent.last().unwrap()));
        assert!(again.next(t0) > *sent.last().unwrap());
        // No temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["node.key.state".to_string()]);
        // Lose the file: a later start still goes past everything sent before, because
        // the seq follows the clock.
        std::fs::remove_file(&path).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut fresh = SeqCounter::new(load_state(&path).unwrap());
        assert!(fresh.next(now_us() / 1000) > *sent.last().unwrap());
        // A corrupt file is an error the caller logs, not a panic; a bare number reads.
        std::fs::write(&path, "garbage").unwrap();
        assert!(load_state(&path).is_err());
        std::fs::write(&path, "42\n").unwrap();
        assert_eq!(load_state(&path).unwrap(), Some(42));
    }

    #[test]
    fn default_state_path_appends_to_the_key_path() {
        assert_eq!(
            default_state_path(Path::new("/etc/lucid/node.key")),
            PathBuf::from("/etc/lucid/node.key.state")
        );
        assert_eq!(
            default_state_path(Path::new("node")),
            PathBuf::from("node.state")
        );
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

    #[test]
    fn problem_answers_are_classified() {
        let reply = |status: u16, body: &str| Reply {
            status: StatusCode::from_u16(status).unwrap(),
            retry_after: Some(Duration::from_secs(3)),
            body: body.as_bytes().to_vec(),
        };
        let p =
            |kind: &str| format!(r#"{{"type":"{kind}","title":"t","status":0,"detail":"d\nx"}}"#);
        assert!(matches!(
            reply(503, &p("overloaded")).classify("hb"),
            Failure::Transient {
                retry_after: Some(_),
                ..
            }
        ));
        assert!(matches!(
            reply(502, "<html>bad gateway</html>").classify("hb"),
            Failure::Transient { .. }
        ));
        assert!(matches!(
            reply(401, &p("token-expired")).classify("hb"),
            Failure::Unauthorized { .. }
        ));
        assert!(matches!(
            reply(409, &p("replayed-heartbeat")).classify("hb"),
            Failure::Replayed { .. }
        ));
        assert!(matches!(
            reply(409, &p("conflict")).classify("hb"),
            Failure::Rejected { .. }
        ));
        assert!(matches!(
            reply(404, &p("not-found")).classify("hb"),
            Failure::Fatal(_)
        ));
        assert!(matches!(
            reply(422, &p("rule")).classify("hb"),
            Failure::Rejected { .. }
        ));
        assert_eq!(reply(404, &p("not-found")).describe(), "404 not-found: d x");
    }
}
