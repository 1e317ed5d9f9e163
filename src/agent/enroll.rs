//! `agent enroll`: one command on a new node. It checks the appliance's certificate
//! against the pinned fingerprint (or a CA file), fetches and pins the proof key, makes the
//! node key (0600), redeems the enrolment code with it, and writes agent.toml. Nothing is
//! left behind when the code is refused, so the command can simply be run again.

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;

use super::config::{AgentFile, Trust, DEFAULT_CONFIG, DEFAULT_STATE_DIR, KEY_FILE};
use super::http::{build_client, get_json};
use super::pin::{format_fingerprint, parse_fingerprint};
use super::wire::Problem;
use crate::config::parse_duration;
use crate::crypto::keys::{generate_signing_key, write_key_pair};

#[derive(clap::Args, Debug, Clone)]
pub struct EnrollArgs {
    /// Base URL of the appliance, e.g. https://pi.local:8095
    #[arg(long)]
    pub server: String,
    /// The enrolment code from the console or POST /api/v1/enrollments.
    #[arg(long)]
    pub code: String,
    /// The appliance certificate's SHA-256 fingerprint (sha256:<hex>), as shown with the
    /// code. Without it or --ca-cert the system's trusted roots are used (an appliance
    /// behind a proxy with a public certificate).
    #[arg(long, conflicts_with = "ca_cert")]
    pub fingerprint: Option<String>,
    /// Or: trust this PEM certificate.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
    /// Where to write the configuration.
    #[arg(long, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Where the node key, state and receipts are kept.
    #[arg(long, default_value = DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// The node's name (default: the name given with the code).
    #[arg(long)]
    pub name: Option<String>,
    /// Time between heartbeats written to the configuration.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Enrol again although this node is enrolled (a new key and a new node).
    #[arg(long)]
    pub force: bool,
}

#[derive(Deserialize)]
struct Keys {
    proof: ProofKey,
}

#[derive(Deserialize)]
struct ProofKey {
    public_key: String,
    key_id: Option<String>,
}

#[derive(Deserialize)]
struct Registered {
    node_id: String,
    name: String,
    operator_id: String,
    pool_id: Option<String>,
}

fn mkdir_private(dir: &Path) -> Result<(), String> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// Gives the files enrol wrote to the owner of the state directory: the package makes
/// the directory the agent user's, and `enroll` runs as root, so without this the service
/// could not read its own key. Nothing to do when they are the same user already.
fn hand_over(dir: &Path, files: &[PathBuf]) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for f in files.iter().filter(|f| f.exists()) {
        let m = std::fs::metadata(f).map_err(|e| format!("{}: {e}", f.display()))?;
        if (m.uid(), m.gid()) != (meta.uid(), meta.gid()) {
            std::os::unix::fs::chown(f, Some(meta.uid()), Some(meta.gid()))
                .map_err(|e| format!("cannot give {} to the agent's user: {e}", f.display()))?;
        }
    }
    Ok(())
}

pub fn enroll(args: EnrollArgs) -> Result<(), String> {
    let key_path = args.state_dir.join(KEY_FILE);
    if !args.force {
        for existing in [&args.config, &key_path] {
            if existing.exists() {
                return Err(format!(
                    "this node is enrolled already ({} exists); pass --force to enrol it again as a new node",
                    existing.display()
                ));
            }
        }
    }
    let server = args.server.trim().trim_end_matches('/').to_string();
    let url = reqwest::Url::parse(&server).map_err(|e| format!("--server {server:?}: {e}"))?;
    if url.scheme() != "https" {
        return Err(format!(
            "--server {server:?}: use an https:// URL (the certificate is what is pinned)"
        ));
    }
    let (trust, fingerprint) = match (&args.fingerprint, &args.ca_cert) {
        (Some(fp), _) => {
            let digest = parse_fingerprint(fp)?;
            (
                Trust::Fingerprint(digest),
                Some(format_fingerprint(&digest)),
            )
        }
        (None, Some(ca)) => (Trust::CaCert(ca.clone()), None),
        (None, None) => (Trust::System, None),
    };
    let client = build_client(&trust)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;

    // First the keys: this proves the pinned certificate before anything is written or
    // the code is used.
    let keys: Keys = runtime
        .block_on(get_json(&client, &format!("{server}/api/v1/keys"), None))
        .map_err(|e| format!("cannot reach {server}: {e}"))?;
    super::config::parse_public_key(&keys.proof.public_key)?;

    mkdir_private(&args.state_dir)?;
    let key = generate_signing_key();
    write_key_pair(&key_path, &key)
        .map_err(|e| format!("cannot write {}: {e}", key_path.display()))?;
    let mut body = serde_json::json!({
        "code": args.code.trim(),
        "public_key": B64.encode(key.verifying_key().to_bytes()),
    });
    if let Some(name) = &args.name {
        body["name"] = serde_json::json!(name);
    }
    let redeemed = runtime.block_on(async {
        let resp = client
            .post(format!("{server}/api/v1/enrollments/redeem"))
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("cannot reach {server}: {e}"))?;
        let status = resp.status();
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| format!("cannot read the answer: {e}"))?;
        if status.as_u16() == 201 {
            serde_json::from_slice::<Registered>(&bytes)
                .map_err(|e| format!("unexpected answer: {e}"))
        } else {
            let p: Problem = serde_json::from_slice(&bytes).unwrap_or_default();
            Err(format!(
                "the appliance refused the code: {} {}: {}",
                status.as_u16(),
                p.kind.unwrap_or_default(),
                p.detail.unwrap_or_default()
            ))
        }
    });
    let node = match redeemed {
        Ok(n) => n,
        Err(e) => {
            // The key belongs to no node: remove it so a retry starts clean.
            let _ = std::fs::remove_file(&key_path);
            let _ = std::fs::remove_file(format!("{}.pub", key_path.display()));
            return Err(e);
        }
    };
    // A state file of an earlier enrolment belongs to another node.
    for stale in [
        super::state::default_state_path(&key_path),
        args.state_dir.join(super::state::STATUS_FILE),
    ] {
        let _ = std::fs::remove_file(stale);
    }
    let receipts = super::receipts::receipts_path(&args.state_dir);
    if receipts.exists() {
        let kept = args
            .state_dir
            .join(format!("receipts.before-{}", super::now_us() / 1_000_000));
        std::fs::rename(&receipts, &kept)
            .map_err(|e| format!("cannot move the old receipts aside: {e}"))?;
        eprintln!(
            "kept the receipts of the earlier enrolment as {}",
            kept.display()
        );
    }

    hand_over(
        &args.state_dir,
        &[
            key_path.clone(),
            PathBuf::from(format!("{}.pub", key_path.display())),
        ],
    )?;
    let file = AgentFile {
        server: Some(server.clone()),
        node_id: Some(node.node_id.clone()),
        key: Some(key_path.clone()),
        fingerprint,
        ca_cert: args.ca_cert.clone(),
        interval: Some(format!("{}s", args.interval.as_secs().max(1))),
        state_dir: Some(args.state_dir.clone()),
        proof_public_key: Some(keys.proof.public_key.clone()),
        proof_key_id: keys.proof.key_id.clone(),
    };
    if let Some(dir) = args.config.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(&args.config, file.render())
        .map_err(|e| format!("cannot write {}: {e}", args.config.display()))?;

    println!(
        "enrolled node {} ({}) for operator {}{}",
        node.node_id,
        node.name,
        node.operator_id,
        node.pool_id
            .map(|p| format!(" in pool {p}"))
            .unwrap_or_default()
    );
    println!(
        "wrote {} and the node key {} (0600)",
        args.config.display(),
        key_path.display()
    );
    println!("start the agent now and at every boot with:");
    println!("  systemctl enable --now lucid-node-agent");
    Ok(())
}
