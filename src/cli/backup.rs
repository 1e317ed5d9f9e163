//! The `backup` and `restore` commands: their flags, interruption by signals, and the
//! download of a backup from a running service. The copy itself and the restore checks
//! are in `store::snapshot`.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::api::backup::ENTRIES_HEADER;
use crate::config::Config;
use crate::progress::{Progress, INTERRUPTED};
use crate::store::db::DB_FILE;
use crate::store::snapshot::{
    check_received_copy, open_for_backup, restore, table_names, write_backup, BackupStats, Partial,
};

/// A flag set by Ctrl-C (SIGINT) or SIGTERM instead of ending the process, so a long
/// operation stops at its next check and removes its temporary file. A second signal ends
/// the process at once.
pub fn cancel_on_signal() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = flag.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            let _ = ready_tx.send(());
            return;
        };
        rt.block_on(async move {
            let (Ok(mut int), Ok(mut term)) = (
                signal(SignalKind::interrupt()),
                signal(SignalKind::terminate()),
            ) else {
                let _ = ready_tx.send(());
                return;
            };
            let _ = ready_tx.send(());
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            set.store(true, Ordering::SeqCst);
            eprintln!(
                "\ninterrupted: stopping and removing the partial file (again to quit at once)"
            );
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            std::process::exit(130);
        });
    });
    let _ = ready_rx.recv_timeout(Duration::from_secs(2));
    flag
}

/// `backup` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct BackupArgs {
    /// Where to write the copy (written to a temporary file, renamed when complete).
    #[arg(long)]
    pub out: PathBuf,
    /// Replace OUT if it exists.
    #[arg(long)]
    pub force: bool,
    /// Ask this running service (e.g. https://127.0.0.1:8095) for the copy. Default when the
    /// database is in use: the local service, found from the configuration.
    #[arg(long)]
    pub server: Option<String>,
    /// Admin token for the service. Default: one minted with the keys in the state
    /// directory (as `token issue` does). Env: LUCID_TOKEN.
    #[arg(long, env = "LUCID_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate to trust for the service. Default: TLS_CERT, else DATA_DIR/tls/cert.pem.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
}

/// `restore` flags.
#[derive(clap::Args, Debug, Clone)]
pub struct RestoreArgs {
    /// The backup file to restore.
    #[arg(long)]
    pub from: PathBuf,
}

/// `lucid-node-management backup`.
pub fn cli_backup(args: BackupArgs, config: &Config) -> Result<(), String> {
    crate::logging::init(&config.log_level, config.log_format);
    if args.out.exists() && !args.force {
        return Err(format!(
            "{} exists; pass --force to replace it",
            args.out.display()
        ));
    }
    if args.out.is_dir() {
        return Err(format!("{} is a directory", args.out.display()));
    }
    let cancel = cancel_on_signal();
    let mut progress = Progress::for_cli(cancel.clone());
    let stats = match &args.server {
        Some(server) => remote_backup(server, &args, config, &mut progress)?,
        None => {
            let db_path = config.data_dir.join(DB_FILE);
            if !db_path.exists() {
                return Err(format!("no database at {}", db_path.display()));
            }
            match open_for_backup(&db_path) {
                Ok(Some(snapshot)) => write_backup(&snapshot.txn, &args.out, &mut progress)?,
                Ok(None) => {
                    progress.note("backup: the service is running; asking it for the copy");
                    let server = local_server(config)?;
                    remote_backup(&server, &args, config, &mut progress)?
                }
                Err(e) => return Err(e),
            }
        }
    };
    drop(progress);
    println!("wrote {} ({stats})", args.out.display());
    Ok(())
}

/// The local service's URL, from the configuration.
pub(crate) fn local_server(config: &Config) -> Result<String, String> {
    if config.port == 0 {
        return Err(
            "the service is running with port 0 (chosen at start); pass --server URL".into(),
        );
    }
    let host = match config.bind_address {
        std::net::IpAddr::V4(a) if a.is_unspecified() => "127.0.0.1".to_string(),
        std::net::IpAddr::V6(a) if a.is_unspecified() => "[::1]".to_string(),
        std::net::IpAddr::V4(a) => a.to_string(),
        std::net::IpAddr::V6(a) => format!("[{a}]"),
    };
    let scheme = if config.tls_disable { "http" } else { "https" };
    Ok(format!("{scheme}://{host}:{}", config.port))
}

/// An admin token for `subject`, signed with the keys in the state directory (valid 10
/// minutes).
pub(crate) fn mint_admin_token(config: &Config, subject: &str) -> Result<String, String> {
    let keys_dir = config.data_dir.join("keys");
    if !keys_dir.exists() {
        return Err(format!(
            "no keys in {} to sign an admin token with; pass --token",
            keys_dir.display()
        ));
    }
    let keys = crate::crypto::keys::ServiceKeys::load_or_create(&config.data_dir)
        .map_err(|e| format!("{e} (run as the service's user or root, or pass --token)"))?;
    let tokens = crate::crypto::tokens::TokenService::new(
        &keys.jwt,
        config.jwt_secret.as_deref(),
        &config.jwt_issuer,
    );
    let issued = tokens.issue_at(
        crate::domain::role::Role::Admin,
        subject,
        Duration::from_secs(600),
        None,
        crate::crypto::tokens::unix_now_us(),
    );
    Ok(issued.token)
}

/// An HTTP client for the service at `server`, trusting `ca_cert` (default: TLS_CERT, else
/// the service's own self-signed certificate in the state directory, and only that).
pub(crate) fn service_client(
    server: &str,
    ca_cert: Option<&PathBuf>,
    config: &Config,
    read_timeout: Duration,
) -> Result<reqwest::Client, String> {
    let ca = match ca_cert {
        Some(ca) => Some(ca.clone()),
        None if server.starts_with("https://") => Some(
            config
                .tls_cert
                .clone()
                .unwrap_or_else(|| config.data_dir.join("tls").join(crate::tls::CERT_FILE)),
        ),
        None => None,
    };
    let mut builder = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(read_timeout);
    if let Some(ca) = &ca {
        let pem = std::fs::read(ca)
            .map_err(|e| format!("cannot read CA certificate {}: {e}", ca.display()))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| format!("{} is not a PEM certificate: {e}", ca.display()))?;
        builder = builder.add_root_certificate(cert);
        if ca_cert.is_none() && config.tls_cert.is_none() {
            // The service's own self-signed certificate is the only root to trust.
            builder = builder.tls_built_in_root_certs(false);
        }
    }
    builder.build().map_err(|e| e.to_string())
}

/// Downloads a backup from a running service to `args.out`, checking it before the rename.
fn remote_backup(
    server: &str,
    args: &BackupArgs,
    config: &Config,
    progress: &mut Progress,
) -> Result<BackupStats, String> {
    let token = match &args.token {
        Some(t) => t.clone(),
        None => mint_admin_token(config, "backup-cli")?,
    };
    let client = service_client(
        server,
        args.ca_cert.as_ref(),
        config,
        Duration::from_secs(600),
    )?;
    let url = format!("{}/api/v1/backup", server.trim_end_matches('/'));
    let (partial, mut file) = Partial::beside(&args.out)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    progress.note(&format!("backup: asking {url}"));
    let expected = runtime.block_on(async {
        let cancel = progress.cancel.clone();
        let download = download(&client, &url, &token, &mut file, progress);
        let interrupted = async {
            while !cancel.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::select! {
            r = download => r,
            _ = interrupted => Err(INTERRUPTED.to_string()),
        }
    })?;
    file.sync_all()
        .map_err(|e| format!("cannot sync {}: {e}", partial.path.display()))?;
    drop(file);
    // Check what arrived: a redb file of a known schema holding what the service sent.
    let received = check_received_copy(&partial.path)?;
    if let Some(expected) = expected {
        if expected != received {
            return Err(format!(
                "the copy holds {received} entries but the service sent {expected}; not kept"
            ));
        }
    }
    progress.check()?;
    partial.persist(&args.out)?;
    let tables = table_names().len();
    let bytes = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    Ok(BackupStats {
        tables,
        entries: received,
        bytes,
    })
}

/// Streams the answer into `file`; returns the entry count the service announced.
async fn download(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    file: &mut File,
    progress: &mut Progress,
) -> Result<Option<u64>, String> {
    let mut resp = client
        .post(url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| format!("cannot reach the service at {url}: {}", error_chain(&e)))?;
    let status = resp.status();
    if !status.is_success() {
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let detail = body["detail"].as_str().unwrap_or("no detail");
        return Err(format!(
            "the service refused the backup: {status}: {detail}"
        ));
    }
    let expected_entries = resp
        .headers()
        .get(ENTRIES_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let length = resp.content_length();
    progress.start("backup: receiving", "bytes", length.unwrap_or(0));
    let mut received = 0u64;
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("the download broke off: {}", error_chain(&e)))?
    {
        file.write_all(&chunk)
            .map_err(|e| format!("cannot write the copy: {e}"))?;
        received += chunk.len() as u64;
        progress.advance(chunk.len() as u64)?;
    }
    progress.finish();
    if let Some(length) = length {
        if received != length {
            return Err(format!(
                "the download broke off after {received} of {length} bytes"
            ));
        }
    }
    Ok(expected_entries)
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// `lucid-node-management restore`.
pub fn cli_restore(args: RestoreArgs, config: &Config) -> Result<(), String> {
    crate::logging::init(&config.log_level, config.log_format);
    if !args.from.is_file() {
        return Err(format!("{} is not a file", args.from.display()));
    }
    let key_path = config
        .data_dir
        .join("keys")
        .join(crate::crypto::keys::PROOF_KEY_FILE);
    let proof_key = if key_path.exists() {
        crate::crypto::keys::read_signing_key(&key_path)?.verifying_key()
    } else {
        return Err(format!(
            "no proof key at {} to verify the backup with; copy the appliance's keys/ directory into {} first",
            key_path.display(),
            config.data_dir.display()
        ));
    };
    let cancel = cancel_on_signal();
    let mut progress = Progress::for_cli(cancel);
    let report = restore(&config.data_dir, &args.from, &proof_key, &mut progress)?;
    drop(progress);
    match &report.kept {
        Some(kept) => println!(
            "restored {} into {} (schema version {}, {} entries); the previous database is kept as {}",
            args.from.display(),
            report.database.display(),
            report.schema_version,
            report.entries,
            kept.display()
        ),
        None => println!(
            "restored {} into {} (schema version {}, {} entries)",
            args.from.display(),
            report.database.display(),
            report.schema_version,
            report.entries
        ),
    }
    Ok(())
}
