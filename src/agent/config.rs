//! The agent's configuration: `agent.toml` (written by `agent enroll`, read by `agent run`
//! and `agent status`) merged with the command line, every flag overriding the file.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::VerifyingKey;
use serde::Deserialize;

use crate::config::parse_duration;

/// Where `enroll` writes and `run` / `status` read the configuration by default.
pub const DEFAULT_CONFIG: &str = "/etc/lucid-node-agent/agent.toml";
/// Where the key, the seq state, the status file and the receipts live by default.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/lucid-node-agent";
/// The node key's file name in the state directory.
pub const KEY_FILE: &str = "node.key";
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);

/// `agent.toml` as written by `enroll`. Every field may be left out (and given as a flag).
#[derive(Debug, Default, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    pub server: Option<String>,
    pub node_id: Option<String>,
    pub key: Option<PathBuf>,
    /// `sha256:<hex>` of the appliance's certificate (pinned).
    pub fingerprint: Option<String>,
    /// Or: trust this PEM certificate.
    pub ca_cert: Option<PathBuf>,
    pub interval: Option<String>,
    pub state_dir: Option<PathBuf>,
    /// The proof public key (base64) fetched from /api/v1/keys at enrolment: receipts are
    /// checked against it, so a changed key is noticed.
    pub proof_public_key: Option<String>,
    pub proof_key_id: Option<String>,
}

impl AgentFile {
    /// Reads the file; `Ok(None)` when it does not exist and `required` is false.
    pub fn load(path: &Path, required: bool) -> Result<Option<Self>, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        };
        toml::from_str(&text)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The file's text, with a comment on each line that needs one.
    pub fn render(&self) -> String {
        let mut s = String::from(
            "# Written by `lucid-node-management agent enroll`. Every value may be overridden\n\
             # by the flag of the same name (`agent run --help`).\n",
        );
        let mut line = |name: &str, value: Option<String>| {
            if let Some(v) = value {
                s.push_str(&format!("{name} = {}\n", toml_string(&v)));
            }
        };
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        line("server", self.server.clone());
        line("node_id", self.node_id.clone());
        line("key", path(&self.key));
        line("fingerprint", self.fingerprint.clone());
        line("ca_cert", path(&self.ca_cert));
        line("interval", self.interval.clone());
        line("state_dir", path(&self.state_dir));
        line("proof_public_key", self.proof_public_key.clone());
        line("proof_key_id", self.proof_key_id.clone());
        s
    }
}

/// A TOML basic string.
fn toml_string(v: &str) -> String {
    let mut out = String::with_capacity(v.len() + 2);
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// How the agent decides to trust the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The system's roots (a publicly trusted certificate).
    System,
    CaCert(PathBuf),
    Fingerprint([u8; 32]),
    Insecure,
}

/// Decodes a base64 Ed25519 public key.
pub fn parse_public_key(b64: &str) -> Result<VerifyingKey, String> {
    let bytes = B64
        .decode(b64.trim())
        .map_err(|_| "proof_public_key is not base64".to_string())?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "proof_public_key must be 32 bytes (Ed25519)".to_string())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "proof_public_key is not an Ed25519 key".into())
}

/// Everything `run` needs, resolved from the file and the flags.
#[derive(Debug, Clone)]
pub struct Settings {
    pub server: String,
    pub node_id: String,
    pub key: PathBuf,
    pub trust: Trust,
    pub interval: Duration,
    /// The seq state file.
    pub state: Option<PathBuf>,
    /// Receipts and the status file are kept here (None: no receipts, as before `enroll`).
    pub state_dir: Option<PathBuf>,
    pub proof_key: Option<VerifyingKey>,
    pub proof_key_id: Option<String>,
}

/// The flags that can override the file (all optional here; required after merging).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub server: Option<String>,
    pub node_id: Option<String>,
    pub key: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
    pub fingerprint: Option<String>,
    pub insecure: bool,
    pub interval: Option<Duration>,
    pub state: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
}

impl Settings {
    /// Flags over the file. `what` names the file for messages.
    pub fn resolve(file: Option<AgentFile>, flags: Overrides) -> Result<Self, String> {
        let file = file.unwrap_or_default();
        let server = flags
            .server
            .or(file.server)
            .ok_or("no server: give --server (or enrol with `agent enroll`)")?;
        let node_id = flags
            .node_id
            .or(file.node_id)
            .ok_or("no node id: give --node-id (or enrol with `agent enroll`)")?;
        let state_dir = flags.state_dir.or(file.state_dir);
        let key = flags
            .key
            .or(file.key)
            .or_else(|| state_dir.as_ref().map(|d| d.join(KEY_FILE)))
            .ok_or("no key: give --key (or enrol with `agent enroll`)")?;
        // A trust flag replaces the file's trust as a whole.
        let trust = if flags.insecure {
            Trust::Insecure
        } else if let Some(ca) = flags.ca_cert {
            Trust::CaCert(ca)
        } else if let Some(fp) = flags.fingerprint {
            Trust::Fingerprint(super::pin::parse_fingerprint(&fp)?)
        } else if let Some(fp) = file.fingerprint {
            Trust::Fingerprint(super::pin::parse_fingerprint(&fp)?)
        } else if let Some(ca) = file.ca_cert {
            Trust::CaCert(ca)
        } else {
            Trust::System
        };
        let interval = match (flags.interval, file.interval) {
            (Some(i), _) => i,
            (None, Some(text)) => {
                parse_duration(&text).map_err(|e| format!("interval {text:?}: {e}"))?
            }
            (None, None) => DEFAULT_INTERVAL,
        };
        let proof_key = file
            .proof_public_key
            .as_deref()
            .map(parse_public_key)
            .transpose()?;
        Ok(Self {
            server,
            node_id,
            key,
            trust,
            interval,
            state: flags.state,
            state_dir,
            proof_key,
            proof_key_id: file.proof_key_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file() -> AgentFile {
        AgentFile {
            server: Some("https://a:8095".into()),
            node_id: Some("node_abc".into()),
            key: None,
            fingerprint: Some(format!("sha256:{}", "ab".repeat(32))),
            ca_cert: None,
            interval: Some("10s".into()),
            state_dir: Some("/var/lib/x \"quoted\"".into()),
            proof_public_key: None,
            proof_key_id: Some("k1".into()),
        }
    }

    #[test]
    fn the_written_file_reads_back_the_same() {
        let f = file();
        let back: AgentFile = toml::from_str(&f.render()).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn flags_override_the_file_and_the_key_defaults_to_the_state_dir() {
        let s = Settings::resolve(Some(file()), Overrides::default()).unwrap();
        assert_eq!(s.interval, Duration::from_secs(10));
        assert_eq!(s.key, PathBuf::from("/var/lib/x \"quoted\"").join(KEY_FILE));
        assert_eq!(s.trust, Trust::Fingerprint([0xab; 32]));
        let s = Settings::resolve(
            Some(file()),
            Overrides {
                server: Some("https://b".into()),
                ca_cert: Some("/c.pem".into()),
                interval: Some(Duration::from_secs(2)),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(s.server, "https://b");
        assert_eq!(s.trust, Trust::CaCert("/c.pem".into()));
        assert_eq!(s.interval, Duration::from_secs(2));
        // Nothing at all: the first missing thing is named.
        let e = Settings::resolve(None, Overrides::default()).unwrap_err();
        assert!(e.contains("--server"), "{e}");
    }
}
