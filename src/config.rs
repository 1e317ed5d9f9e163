//! One validated [`Config`], built from embedded defaults < TOML file < environment <
//! command-line flags.
//!
//! Every setting has one name, the environment variable of the seed service
//! (`NODE_MANAGEMENT_PORT`, ...). The TOML file uses the same names in lower case
//! (`node_management_port = 8095`). Values from all sources are collected as text first and
//! parsed once, so a bad value is reported the same way wherever it came from: one line
//! naming the variable, the value and where it was set.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use rust_decimal::Decimal;

/// Where the packaged service looks for its configuration file.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/lucid-node-management/config.toml";

/// Every setting: its name and embedded default (empty = unset).
pub const SETTINGS: &[(&str, &str, &str)] = &[
    (
        "DATA_DIR",
        "./data",
        "state directory (database, keys, certificate)",
    ),
    (
        "BIND_ADDRESS",
        "",
        "address to listen on (default: 0.0.0.0 with TLS, 127.0.0.1 with TLS_DISABLE, since tokens would cross it in clear)",
    ),
    ("NODE_MANAGEMENT_PORT", "8095", "TCP port of the API"),
    (
        "TLS_DISABLE",
        "false",
        "serve plain HTTP (behind a TLS proxy)",
    ),
    (
        "TLS_CERT",
        "",
        "PEM certificate chain; a self-signed one is created when unset",
    ),
    ("TLS_KEY", "", "PEM private key for TLS_CERT"),
    (
        "MONGODB_URI",
        "",
        "MongoDB mirror (needs the mongo-sync feature)",
    ),
    (
        "SITE_ID",
        "",
        "site id carried by mirrored documents (default: host name)",
    ),
    (
        "OUTBOX_MAX_ENTRIES",
        "1000000",
        "mirror outbox bound; at it, queuing stops and a full resync follows",
    ),
    (
        "MAX_NODES_PER_POOL",
        "100",
        "upper bound of any pool's capacity",
    ),
    (
        "PAYOUT_THRESHOLD_USDT",
        "10.0",
        "balance at which a node is paid",
    ),
    (
        "POOT_CALCULATION_INTERVAL",
        "300",
        "PoOT epoch length, seconds",
    ),
    (
        "PAYOUT_PROCESSING_INTERVAL",
        "3600",
        "payout run interval, seconds",
    ),
    (
        "HEARTBEAT_TIMEOUT",
        "90",
        "silence after which a node is offline, seconds",
    ),
    (
        "REWARD_USDT_PER_HOUR",
        "0.05",
        "credits per operational hour",
    ),
    (
        "PAYOUT_SINK",
        "ledger",
        "where payouts go: ledger (offline) or webhook",
    ),
    (
        "PAYOUT_WEBHOOK_URL",
        "",
        "payment service URL (PAYOUT_SINK=webhook)",
    ),
    (
        "PAYOUT_WEBHOOK_SECRET",
        "",
        "HMAC secret for X-Lucid-Signature (PAYOUT_SINK=webhook)",
    ),
    (
        "PAYOUT_MAX_RETRIES",
        "3",
        "delivery attempts before a payout fails",
    ),
    (
        "PAYOUT_RETRY_BASE",
        "30s",
        "first retry delay; doubles per attempt",
    ),
    (
        "PAYOUT_WEBHOOK_TIMEOUT",
        "10s",
        "longest wait for the payment service",
    ),
    (
        "ALERT_RETRY_BASE",
        "10s",
        "first alert webhook retry delay; doubles per attempt, at most 10 minutes",
    ),
    (
        "ALERT_MAX_AGE",
        "24h",
        "how long an undelivered alert keeps being retried",
    ),
    (
        "ALERT_WEBHOOK_TIMEOUT",
        "10s",
        "longest wait for an alert webhook",
    ),
    (
        "WEBHOOK_ALLOWED_NETWORKS",
        "",
        "comma-separated CIDRs webhooks may reach beyond public addresses (loopback, link-local, private, CGNAT are refused otherwise)",
    ),
    (
        "HEARTBEAT_RETENTION",
        "7d",
        "raw heartbeats kept this long once their epochs are proven",
    ),
    (
        "POOT_ACCUMULATED_EPOCHS",
        "4",
        "epochs whose PoOT windows are accumulated in memory as heartbeats commit, so their close reads no heartbeat (about 400-550 B per node with three open); 0 turns it off: every close scans the window's heartbeats",
    ),
    (
        "PROOF_RETENTION",
        "30d",
        "epoch proofs kept this long; older ones are rolled up into signed daily records (0: keep every proof)",
    ),
    ("LOG_LEVEL", "INFO", "trace, debug, info, warn or error"),
    ("LOG_FORMAT", "text", "text or json"),
    (
        "JWT_SECRET",
        "",
        "switches tokens to HS256 with this shared secret",
    ),
    (
        "JWT_ISSUER",
        "lucid-node-management",
        "iss claim of issued tokens",
    ),
    (
        "NODE_TOKEN_TTL",
        "900",
        "lifetime of node login tokens, seconds",
    ),
    ("MAX_BODY_BYTES", "65536", "largest accepted request body"),
    (
        "WRITER_QUEUE_CAPACITY",
        "8192",
        "bounded queue in front of the writer",
    ),
    (
        "STORAGE_MIN_FREE",
        "2%",
        "free space (share of the filesystem, or a size such as 512MiB) under which heartbeats are refused with 507, keeping the rest for payouts and admin writes; 0 turns it off",
    ),
    (
        "COMMIT_INTERVAL",
        "3",
        "how long a heartbeat waits for companions before its durable commit (at most 3 s; 0 commits as soon as the writer is idle); saves flash wear",
    ),
    (
        "REQUEST_TIMEOUT",
        "30",
        "longest a request may take, seconds",
    ),
    (
        "HEARTBEAT_MIN_INTERVAL",
        "5",
        "a node's heartbeat sooner than this after its last accepted one gets 429, seconds; 0 turns it off",
    ),
    (
        "MAX_NODES_PER_OPERATOR",
        "1000",
        "nodes one operator may register (deregistered ones count: their records stay); 0 turns it off",
    ),
    (
        "REQUEST_HEADER_TIMEOUT",
        "10",
        "a connection must send a whole request head within this of connecting (TLS handshake included) or of the head's first byte; 0 turns it off",
    ),
    (
        "IDLE_TIMEOUT",
        "120",
        "a keep-alive connection with no request for this long is closed; above the agent's 30 s interval; 0 turns it off",
    ),
    (
        "MAX_CONNECTIONS",
        "2048",
        "open connections beyond which new ones wait to be accepted; 0 turns the cap off",
    ),
    (
        "AUTH_RATE_LIMIT",
        "10",
        "requests per second one client address may make to /api/v1/auth/* and /api/v1/enrollments/redeem (429 rate-limited beyond); 0 turns it off",
    ),
    (
        "AUTH_RATE_BURST",
        "30",
        "requests one client address may make at once before AUTH_RATE_LIMIT paces it",
    ),
    (
        "TOKEN_RATE_LIMIT",
        "50",
        "requests per second one token subject (operator or node, not admin) may make to authenticated routes, heartbeats included; 0 turns it off",
    ),
    (
        "TOKEN_RATE_BURST",
        "100",
        "requests one token subject may make at once before TOKEN_RATE_LIMIT paces it",
    ),
    (
        "HEAVY_READ_CONCURRENCY",
        "2",
        "list, history and export reads that run at once on blocking threads; more wait their turn (within REQUEST_TIMEOUT); 0 turns the bound off",
    ),
];

/// Where payouts go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayoutSinkKind {
    /// Offline: payouts wait for an external treasury (export, confirm, fail via the API).
    Ledger,
    /// A signed POST per payout to a payment service.
    Webhook,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub bind_address: IpAddr,
    pub port: u16,
    pub tls_disable: bool,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub mongodb_uri: Option<String>,
    pub site_id: Option<String>,
    pub outbox_max_entries: u64,
    pub max_nodes_per_pool: u32,
    pub payout_threshold_usdt: Decimal,
    pub poot_calculation_interval: Duration,
    pub payout_processing_interval: Duration,
    pub heartbeat_timeout: Duration,
    pub reward_usdt_per_hour: Decimal,
    pub heartbeat_retention: Duration,
    pub proof_retention: Duration,
    /// POOT_ACCUMULATED_EPOCHS (0: every close scans its heartbeats).
    pub poot_accumulated_epochs: usize,
    pub payout_sink: PayoutSinkKind,
    pub payout_webhook_url: Option<String>,
    pub payout_webhook_secret: Option<String>,
    pub payout_max_retries: u32,
    pub payout_retry_base: Duration,
    pub payout_webhook_timeout: Duration,
    pub alert_retry_base: Duration,
    pub alert_max_age: Duration,
    pub alert_webhook_timeout: Duration,
    /// Networks webhooks may reach on top of public addresses.
    pub webhook_allowed_networks: crate::domain::netguard::AllowedNetworks,
    pub log_level: String,
    pub log_format: LogFormat,
    pub jwt_secret: Option<String>,
    pub jwt_issuer: String,
    pub node_token_ttl: Duration,
    pub max_body_bytes: usize,
    pub writer_queue_capacity: usize,
    /// Heartbeats linger this long for companions before their durable commit.
    pub commit_interval: Duration,
    /// Free space under which heartbeats are refused with 507.
    pub storage_min_free: crate::store::space::MinFree,
    pub request_timeout: Duration,
    /// Shortest spacing of a node's accepted heartbeats (zero: no pacing).
    pub heartbeat_min_interval: Duration,
    /// Most nodes one operator may register (None: no quota).
    pub max_nodes_per_operator: Option<u32>,
    /// `None`: off.
    pub request_header_timeout: Option<Duration>,
    /// `None`: off.
    pub idle_timeout: Option<Duration>,
    /// 0: no cap.
    pub max_connections: usize,
    /// Per client address on the login routes; `None`: off.
    pub auth_rate: Option<RateLimit>,
    /// Per token subject (admins exempt); `None`: off.
    pub token_rate: Option<RateLimit>,
    /// Heavy reads at once; 0: no bound.
    pub heavy_read_concurrency: usize,
}

/// A rate limit: a steady rate and the burst allowed on top of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// A configuration error: one line naming the variable, the value and its source.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Raw text values with the source each came from, before parsing.
#[derive(Debug, Default, Clone)]
pub struct RawConfig {
    values: BTreeMap<&'static str, (String, String)>,
}

impl RawConfig {
    /// The embedded defaults.
    pub fn defaults() -> Self {
        let mut raw = Self::default();
        for (name, default, _) in SETTINGS {
            raw.values
                .insert(name, (default.to_string(), "default".to_string()));
        }
        raw
    }

    fn canonical(name: &str) -> Option<&'static str> {
        SETTINGS
            .iter()
            .map(|(n, _, _)| *n)
            .find(|n| n.eq_ignore_ascii_case(name))
    }

    /// Sets a value by setting name (any case).
    pub fn set(&mut self, name: &str, value: impl Into<String>, source: impl Into<String>) {
        if let Some(name) = Self::canonical(name) {
            self.values.insert(name, (value.into(), source.into()));
        }
    }

    /// Layers a TOML file over the current values. Unknown keys are errors: they are
    /// almost always typos that would otherwise be silently ignored.
    pub fn apply_toml_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigError(format!(
                "config file {} is not valid TOML: {}",
                path.display(),
                e.message()
            ))
        })?;
        let source = format!("config file {}", path.display());
        for (key, value) in table {
            let Some(name) = Self::canonical(&key) else {
                return Err(ConfigError(format!("unknown setting {key:?} in {source}")));
            };
            let text = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(ConfigError(format!(
                        "invalid value {other:?} for {name} in {source}: expected a string, number or boolean"
                    )))
                }
            };
            self.values.insert(name, (text, source.clone()));
        }
        Ok(())
    }

    /// Layers the process environment over the current values.
    pub fn apply_env(&mut self, env: impl Iterator<Item = (String, String)>) {
        let env: BTreeMap<String, String> = env.collect();
        for (name, _, _) in SETTINGS {
            if let Some(v) = env.get(*name) {
                self.values
                    .insert(name, (v.clone(), "environment".to_string()));
            }
        }
        // systemd's StateDirectory= hands the packaged service its directory this way.
        if !env.contains_key("DATA_DIR") {
            if let Some(dir) = env.get("STATE_DIRECTORY") {
                self.values.insert(
                    "DATA_DIR",
                    (dir.clone(), "environment (STATE_DIRECTORY)".to_string()),
                );
            }
        }
    }

    fn get(&self, name: &'static str) -> (&str, &str) {
        self.values
            .get(name)
            .map(|(v, s)| (v.as_str(), s.as_str()))
            .unwrap_or(("", "default"))
    }

    fn parse<T>(
        &self,
        name: &'static str,
        parser: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<T, ConfigError> {
        let (value, source) = self.get(name);
        parser(value.trim()).map_err(|why| {
            ConfigError(format!(
                "invalid value {value:?} for {name} (from {source}): {why}"
            ))
        })
    }

    /// A rate (`0`: off) and its burst (at least 1).
    fn rate_limit(
        &self,
        rate: &'static str,
        burst: &'static str,
    ) -> Result<Option<RateLimit>, ConfigError> {
        let per_second = self.parse(rate, |v| {
            if v == "0" {
                Ok(0)
            } else {
                positive_int(v, 1_000_000)
            }
        })?;
        let burst = self.parse(burst, |v| positive_int(v, 1_000_000))?;
        Ok((per_second > 0).then_some(RateLimit { per_second, burst }))
    }

    fn optional(&self, name: &'static str) -> Option<String> {
        let (value, _) = self.get(name);
        let value = value.trim();
        (!value.is_empty()).then(|| value.to_string())
    }

    /// Parses and validates every value.
    pub fn build(&self) -> Result<Config, ConfigError> {
        let mut config = Config {
            data_dir: self.parse("DATA_DIR", non_empty_path)?,
            bind_address: self.parse("BIND_ADDRESS", |v| {
                if v.is_empty() {
                    // Resolved below, once TLS_DISABLE is known.
                    Ok(IpAddr::from([0, 0, 0, 0]))
                } else {
                    IpAddr::from_str(v).map_err(|e| e.to_string())
                }
            })?,
            port: self.parse("NODE_MANAGEMENT_PORT", |v| {
                v.parse::<u16>()
                    .map_err(|_| "expected a port number 0-65535".to_string())
            })?,
            tls_disable: self.parse("TLS_DISABLE", parse_bool)?,
            tls_cert: self.optional("TLS_CERT").map(PathBuf::from),
            tls_key: self.optional("TLS_KEY").map(PathBuf::from),
            mongodb_uri: self.optional("MONGODB_URI"),
            site_id: self.optional("SITE_ID"),
            outbox_max_entries: self.parse("OUTBOX_MAX_ENTRIES", |v| {
                positive_int(v, u32::MAX).map(u64::from)
            })?,
            max_nodes_per_pool: self.parse("MAX_NODES_PER_POOL", |v| positive_int(v, 1_000_000))?,
            payout_threshold_usdt: self.parse("PAYOUT_THRESHOLD_USDT", usdt_amount)?,
            poot_calculation_interval: self.parse("POOT_CALCULATION_INTERVAL", parse_duration)?,
            payout_processing_interval: self.parse("PAYOUT_PROCESSING_INTERVAL", parse_duration)?,
            heartbeat_timeout: self.parse("HEARTBEAT_TIMEOUT", parse_duration)?,
            reward_usdt_per_hour: self.parse("REWARD_USDT_PER_HOUR", usdt_amount)?,
            heartbeat_retention: self.parse("HEARTBEAT_RETENTION", parse_duration)?,
            proof_retention: self.parse("PROOF_RETENTION", parse_duration)?,
            // One epoch open is too few: a heartbeat near an epoch's end opens the next.
            poot_accumulated_epochs: self.parse("POOT_ACCUMULATED_EPOCHS", |v| {
                match v.parse::<usize>() {
                    Ok(n) if n == 0 || (2..=64).contains(&n) => Ok(n),
                    _ => Err("expected 0 (off) or a whole number from 2 to 64".to_string()),
                }
            })?,
            payout_sink: self.parse("PAYOUT_SINK", |v| match v.to_ascii_lowercase().as_str() {
                "ledger" | "" => Ok(PayoutSinkKind::Ledger),
                "webhook" => Ok(PayoutSinkKind::Webhook),
                _ => Err("expected ledger or webhook".to_string()),
            })?,
            payout_webhook_url: self.parse("PAYOUT_WEBHOOK_URL", |v| {
                if v.is_empty() {
                    Ok(None)
                } else if v.starts_with("https://") || v.starts_with("http://") {
                    Ok(Some(v.to_string()))
                } else {
                    Err("expected an http:// or https:// URL".to_string())
                }
            })?,
            payout_webhook_secret: self.optional("PAYOUT_WEBHOOK_SECRET"),
            payout_max_retries: self.parse("PAYOUT_MAX_RETRIES", |v| positive_int(v, 100))?,
            payout_retry_base: self.parse("PAYOUT_RETRY_BASE", parse_duration)?,
            payout_webhook_timeout: self.parse("PAYOUT_WEBHOOK_TIMEOUT", parse_duration)?,
            alert_retry_base: self.parse("ALERT_RETRY_BASE", parse_duration)?,
            alert_max_age: self.parse("ALERT_MAX_AGE", parse_duration)?,
            alert_webhook_timeout: self.parse("ALERT_WEBHOOK_TIMEOUT", parse_duration)?,
            webhook_allowed_networks: self.parse(
                "WEBHOOK_ALLOWED_NETWORKS",
                crate::domain::netguard::AllowedNetworks::parse,
            )?,
            log_level: self.parse("LOG_LEVEL", |v| {
                let level = v.to_ascii_lowercase();
                match level.as_str() {
                    "trace" | "debug" | "info" | "warn" | "error" => Ok(level),
                    _ => Err("expected trace, debug, info, warn or error".to_string()),
                }
            })?,
            log_format: self.parse("LOG_FORMAT", |v| match v.to_ascii_lowercase().as_str() {
                "text" | "" => Ok(LogFormat::Text),
                "json" => Ok(LogFormat::Json),
                _ => Err("expected text or json".to_string()),
            })?,
            jwt_secret: self.parse("JWT_SECRET", |v| {
                if !v.is_empty() && v.len() < 32 {
                    Err("a shared secret must be at least 32 characters".to_string())
                } else {
                    Ok((!v.is_empty()).then(|| v.to_string()))
                }
            })?,
            jwt_issuer: self.parse("JWT_ISSUER", |v| {
                if v.is_empty() {
                    Err("must not be empty".to_string())
                } else {
                    Ok(v.to_string())
                }
            })?,
            node_token_ttl: self.parse("NODE_TOKEN_TTL", parse_duration)?,
            max_body_bytes: self.parse("MAX_BODY_BYTES", |v| {
                positive_int(v, 64 * 1024 * 1024).map(|n| n as usize)
            })?,
            writer_queue_capacity: self.parse("WRITER_QUEUE_CAPACITY", |v| {
                positive_int(v, 1_000_000).map(|n| n as usize)
            })?,
            commit_interval: self.parse("COMMIT_INTERVAL", parse_commit_interval)?,
            storage_min_free: self
                .parse("STORAGE_MIN_FREE", crate::store::space::MinFree::parse)?,
            request_timeout: self.parse("REQUEST_TIMEOUT", parse_duration)?,
            heartbeat_min_interval: self.parse("HEARTBEAT_MIN_INTERVAL", |v| {
                if v == "0" || v == "0s" {
                    Ok(Duration::ZERO)
                } else {
                    parse_duration(v)
                }
            })?,
            max_nodes_per_operator: self.parse("MAX_NODES_PER_OPERATOR", |v| {
                if v == "0" {
                    Ok(None)
                } else {
                    positive_int(v, 1_000_000).map(Some)
                }
            })?,
            request_header_timeout: self
                .parse("REQUEST_HEADER_TIMEOUT", parse_optional_duration)?,
            idle_timeout: self.parse("IDLE_TIMEOUT", parse_optional_duration)?,
            max_connections: self.parse("MAX_CONNECTIONS", |v| {
                if v == "0" {
                    Ok(0)
                } else {
                    positive_int(v, 1_000_000).map(|n| n as usize)
                }
            })?,
            auth_rate: self.rate_limit("AUTH_RATE_LIMIT", "AUTH_RATE_BURST")?,
            token_rate: self.rate_limit("TOKEN_RATE_LIMIT", "TOKEN_RATE_BURST")?,
            heavy_read_concurrency: self.parse("HEAVY_READ_CONCURRENCY", |v| {
                if v == "0" {
                    Ok(0)
                } else {
                    positive_int(v, 1024).map(|n| n as usize)
                }
            })?,
        };
        // Plain HTTP carries bearer tokens in clear: it listens on loopback (behind a
        // local TLS proxy) unless an address is set explicitly.
        if config.tls_disable && self.optional("BIND_ADDRESS").is_none() {
            config.bind_address = IpAddr::from([127, 0, 0, 1]);
        }
        if config.payout_sink == PayoutSinkKind::Webhook
            && (config.payout_webhook_url.is_none() || config.payout_webhook_secret.is_none())
        {
            return Err(ConfigError(
                "PAYOUT_SINK=webhook needs PAYOUT_WEBHOOK_URL and PAYOUT_WEBHOOK_SECRET"
                    .to_string(),
            ));
        }
        if config.tls_cert.is_some() != config.tls_key.is_some() {
            return Err(ConfigError(
                "TLS_CERT and TLS_KEY must be set together".to_string(),
            ));
        }
        Ok(config)
    }
}

fn non_empty_path(v: &str) -> Result<PathBuf, String> {
    if v.is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(PathBuf::from(v))
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err("expected true or false".into()),
    }
}

fn positive_int(v: &str, max: u32) -> Result<u32, String> {
    match v.parse::<u32>() {
        Ok(n) if n >= 1 && n <= max => Ok(n),
        _ => Err(format!("expected a whole number from 1 to {max}")),
    }
}

/// A USDT amount: a non-negative decimal with at most 6 places.
pub fn usdt_amount(v: &str) -> Result<Decimal, String> {
    let d =
        Decimal::from_str(v).map_err(|_| "expected a decimal number such as 10.0".to_string())?;
    if d.is_sign_negative() {
        return Err("must not be negative".into());
    }
    if d.normalize().scale() > 6 {
        return Err("USDT has at most 6 decimal places".into());
    }
    Ok(d)
}

/// Whole seconds (`90`), or a number with a unit suffix: `s`, `m`, `h`, `d` (`90s`, `5m`).
/// Zero is refused: every duration here is an interval or a timeout.
/// `COMMIT_INTERVAL`: `0` (commit when idle), whole seconds (`3`, `3s`) or milliseconds
/// (`500ms`), at most 3 s: a heartbeat's acknowledgement waits up to this long.
pub fn parse_commit_interval(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    let interval = if let Some(ms) = v.strip_suffix("ms") {
        ms.parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| "expected 0, whole seconds such as 3, or milliseconds such as 500ms")?
    } else if v == "0" || v == "0s" {
        Duration::ZERO
    } else {
        parse_duration(v)?
    };
    if interval > crate::store::writer::MAX_COMMIT_INTERVAL {
        return Err("must be at most 3 s (a heartbeat's acknowledgement waits this long)".into());
    }
    Ok(interval)
}

/// A timeout that `0` turns off (`None`); otherwise as [`parse_duration`].
pub fn parse_optional_duration(v: &str) -> Result<Option<Duration>, String> {
    if v.trim() == "0" || v.trim() == "0s" {
        Ok(None)
    } else {
        parse_duration(v).map(Some)
    }
}

pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    let (digits, unit) = match v.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => v.split_at(i),
        None => (v, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| "expected whole seconds such as 90, or 90s, 5m, 1h, 7d".to_string())?;
    let factor = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("unknown unit {unit:?}; use s, m, h or d")),
    };
    let secs = n
        .checked_mul(factor)
        .filter(|s| *s <= 10 * 365 * 86_400)
        .ok_or_else(|| "too long".to_string())?;
    if secs == 0 {
        return Err("must be at least 1 second".into());
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn commit_interval_takes_zero_seconds_or_milliseconds_up_to_three_seconds() {
        assert_eq!(parse_commit_interval("0").unwrap(), Duration::ZERO);
        assert_eq!(parse_commit_interval("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_commit_interval("2s").unwrap(), Duration::from_secs(2));
        assert_eq!(
            parse_commit_interval("500ms").unwrap(),
            Duration::from_millis(500)
        );
        for bad in ["4", "3001ms", "1m", "soon", "-1", ""] {
            assert!(parse_commit_interval(bad).is_err(), "{bad:?}");
        }
    }

    fn build(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut raw = RawConfig::defaults();
        raw.apply_env(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        raw.build()
    }

    #[test]
    fn embedded_defaults_match_the_seed_service() {
        let c = build(&[]).unwrap();
        assert_eq!(c.port, 8095);
        assert_eq!(c.max_nodes_per_pool, 100);
        assert_eq!(c.payout_threshold_usdt, Decimal::from_str("10.0").unwrap());
        assert_eq!(c.poot_calculation_interval, Duration::from_secs(300));
        assert_eq!(c.payout_processing_interval, Duration::from_secs(3600));
        assert_eq!(c.heartbeat_timeout, Duration::from_secs(90));
        assert_eq!(c.log_level, "info");
        assert!(c.mongodb_uri.is_none());
        assert!(!c.tls_disable);
        assert_eq!(c.heartbeat_min_interval, Duration::from_secs(5));
        assert_eq!(c.max_nodes_per_operator, Some(1000));
        assert_eq!(c.poot_accumulated_epochs, 4);
    }

    #[test]
    fn poot_accumulation_turns_off_with_zero_and_needs_two_epochs_when_on() {
        assert_eq!(
            build(&[("POOT_ACCUMULATED_EPOCHS", "0")])
                .unwrap()
                .poot_accumulated_epochs,
            0
        );
        assert_eq!(
            build(&[("POOT_ACCUMULATED_EPOCHS", "2")])
                .unwrap()
                .poot_accumulated_epochs,
            2
        );
        assert!(build(&[("POOT_ACCUMULATED_EPOCHS", "1")]).is_err());
        assert!(build(&[("POOT_ACCUMULATED_EPOCHS", "65")]).is_err());
    }

    #[test]
    fn flood_limits_turn_off_with_zero() {
        let c = build(&[
            ("HEARTBEAT_MIN_INTERVAL", "0"),
            ("MAX_NODES_PER_OPERATOR", "0"),
        ])
        .unwrap();
        assert_eq!(c.heartbeat_min_interval, Duration::ZERO);
        assert_eq!(c.max_nodes_per_operator, None);
        let c = build(&[("HEARTBEAT_MIN_INTERVAL", "1m")]).unwrap();
        assert_eq!(c.heartbeat_min_interval, Duration::from_secs(60));
        assert!(build(&[("MAX_NODES_PER_OPERATOR", "-1")]).is_err());

        assert!(build(&[("HEARTBEAT_MIN_INTERVAL", "soon")]).is_err());
    }

    #[test]
    fn bad_values_name_the_variable_and_value() {
        let err = build(&[("NODE_MANAGEMENT_PORT", "80x")]).unwrap_err();
        assert!(err.0.contains("NODE_MANAGEMENT_PORT"), "{err}");
        assert!(err.0.contains("\"80x\""), "{err}");
        assert!(err.0.contains("environment"), "{err}");
        let err = build(&[("PAYOUT_THRESHOLD_USDT", "-1")]).unwrap_err();
        assert!(err.0.contains("PAYOUT_THRESHOLD_USDT"));
        let err = build(&[("HEARTBEAT_TIMEOUT", "0")]).unwrap_err();
        assert!(err.0.contains("HEARTBEAT_TIMEOUT"));
    }

    #[test]
    fn webhook_allowed_networks_are_cidrs() {
        assert!(build(&[]).unwrap().webhook_allowed_networks.is_empty());
        let c = build(&[("WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8,192.168.1.0/24")]).unwrap();
        assert!(c
            .webhook_allowed_networks
            .contains("192.168.1.9".parse().unwrap()));
        let err = build(&[("WEBHOOK_ALLOWED_NETWORKS", "10.0.0.0/40")]).unwrap_err();
        assert!(err.0.contains("WEBHOOK_ALLOWED_NETWORKS"), "{err}");
    }

    #[test]
    fn durations_accept_seconds_and_unit_suffixes() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        assert!(parse_duration("5 minutes").is_err());
        assert!(parse_duration("-5").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn later_sources_override_earlier_ones() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(
            &file,
            "node_management_port = 9000\nmax_nodes_per_pool = 7\n",
        )
        .unwrap();
        let mut raw = RawConfig::defaults();
        raw.apply_toml_file(&file).unwrap();
        raw.apply_env([("NODE_MANAGEMENT_PORT".to_string(), "9001".to_string())].into_iter());
        raw.set("NODE_MANAGEMENT_PORT", "9002", "flag --port");
        let c = raw.build().unwrap();
        assert_eq!(c.port, 9002);
        assert_eq!(c.max_nodes_per_pool, 7);
    }

    #[test]
    fn unknown_keys_in_the_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "node_managment_port = 9000\n").unwrap();
        let err = RawConfig::defaults().apply_toml_file(&file).unwrap_err();
        assert!(err.0.contains("node_managment_port"));
    }

    #[test]
    fn connection_limits_default_on_and_zero_turns_each_off() {
        let c = build(&[]).unwrap();
        assert_eq!(c.request_header_timeout, Some(Duration::from_secs(10)));
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(120)));
        assert_eq!(c.max_connections, 2048);
        let c = build(&[
            ("REQUEST_HEADER_TIMEOUT", "0"),
            ("IDLE_TIMEOUT", "0"),
            ("MAX_CONNECTIONS", "0"),
        ])
        .unwrap();
        assert_eq!(c.request_header_timeout, None);
        assert_eq!(c.idle_timeout, None);
        assert_eq!(c.max_connections, 0);
        assert!(build(&[("IDLE_TIMEOUT", "soon")]).is_err());
        assert!(build(&[("MAX_CONNECTIONS", "-1")]).is_err());
    }

    #[test]
    fn rate_limits_and_heavy_reads_default_on_and_zero_turns_each_off() {
        let c = build(&[]).unwrap();
        assert_eq!(
            c.auth_rate,
            Some(RateLimit {
                per_second: 10,
                burst: 30
            })
        );
        assert_eq!(
            c.token_rate,
            Some(RateLimit {
                per_second: 50,
                burst: 100
            })
        );
        assert_eq!(c.heavy_read_concurrency, 2);
        let c = build(&[
            ("AUTH_RATE_LIMIT", "0"),
            ("TOKEN_RATE_LIMIT", "0"),
            ("HEAVY_READ_CONCURRENCY", "0"),
        ])
        .unwrap();
        assert_eq!(c.auth_rate, None);
        assert_eq!(c.token_rate, None);
        assert_eq!(c.heavy_read_concurrency, 0);
        assert!(build(&[("AUTH_RATE_BURST", "0")]).is_err());
        assert!(build(&[("TOKEN_RATE_LIMIT", "fast")]).is_err());
    }

    #[test]
    fn plain_http_binds_loopback_unless_an_address_is_set() {
        let any = IpAddr::from([0, 0, 0, 0]);
        let loopback = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(build(&[]).unwrap().bind_address, any);
        let c = build(&[("TLS_DISABLE", "true")]).unwrap();
        assert_eq!(c.bind_address, loopback);
        let c = build(&[("TLS_DISABLE", "true"), ("BIND_ADDRESS", "0.0.0.0")]).unwrap();
        assert_eq!(c.bind_address, any);
        let c = build(&[("BIND_ADDRESS", "10.0.0.1")]).unwrap();
        assert_eq!(c.bind_address, IpAddr::from([10, 0, 0, 1]));
    }

    #[test]
    fn systemd_state_directory_is_the_packaged_default() {
        let c = build(&[("STATE_DIRECTORY", "/var/lib/lucid-node-management")]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/var/lib/lucid-node-management"));
        let c = build(&[("STATE_DIRECTORY", "/x"), ("DATA_DIR", "/y")]).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/y"));
    }
}

#[cfg(test)]
mod packaged_file_tests {
    use super::*;

    const PACKAGED: &str = include_str!("../packaging/config.toml");

    #[test]
    fn the_packaged_config_file_lists_every_setting_with_its_default() {
        for (name, default, _) in SETTINGS {
            let key = name.to_ascii_lowercase();
            let line = PACKAGED
                .lines()
                .find(|l| l.starts_with(&format!("# {key} = ")))
                .unwrap_or_else(|| panic!("{key} is missing from packaging/config.toml"));
            let value = line.split_once(" = ").unwrap().1.trim_matches('"');
            assert_eq!(value, *default, "{key}");
        }
    }

    #[test]
    fn uncommenting_every_line_of_the_packaged_file_gives_a_valid_config() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        let uncommented: String = PACKAGED
            .lines()
            .filter_map(|l| l.strip_prefix("# ").filter(|l| l.contains(" = ")))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&file, uncommented).unwrap();
        let mut raw = RawConfig::defaults();
        raw.apply_toml_file(&file).unwrap();
        let from_file = raw.build().unwrap();
        let defaults = RawConfig::defaults().build().unwrap();
        assert_eq!(format!("{from_file:?}"), format!("{defaults:?}"));
    }
}
