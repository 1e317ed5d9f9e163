//! `token revoke`: through the running service (as `backup` does), or straight into the
//! database when the service is stopped.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use super::backup::{error_chain, local_server, mint_admin_token, service_client};
use crate::app::revocations::{commit, lifetime_bound, plan};
use crate::config::Config;
use crate::crypto::tokens::unix_now_us;
use crate::domain::ids::is_valid_subject;
use crate::domain::revocation::{Revocation, RevocationTarget};
use crate::domain::role::Role;
use crate::domain::timefmt::rfc3339_us;
use crate::error::ApiError;
use crate::store::db::DB_FILE;
use crate::store::snapshot::open_for_backup;
use crate::store::{Actor, Writer, WriterSettings};

/// `token revoke` flags.
#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("what").required(true).args(["jti", "subject"])))]
pub struct RevokeArgs {
    /// Revoke the one token with this `jti` claim.
    #[arg(long)]
    pub jti: Option<String>,
    /// Revoke every token of this subject issued up to now (any role; a node's subject is
    /// its node_id).
    #[arg(long)]
    pub subject: Option<String>,
    /// Ask this running service (e.g. https://127.0.0.1:8095). Default when the database is
    /// in use: the local service, found from the configuration.
    #[arg(long)]
    pub server: Option<String>,
    /// Admin token for the service. Default: one minted with the keys in the state
    /// directory. Env: LUCID_TOKEN.
    #[arg(long, env = "LUCID_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate to trust for the service. Default: TLS_CERT, else DATA_DIR/tls/cert.pem.
    #[arg(long)]
    pub ca_cert: Option<PathBuf>,
}

/// Who the audit log names for a revocation made with the service stopped.
const OFFLINE_ACTOR: &str = "token-revoke-cli";

fn target(args: &RevokeArgs) -> Result<RevocationTarget, String> {
    match (&args.jti, &args.subject) {
        (Some(j), None) if is_valid_subject(j) => Ok(RevocationTarget::Jti(j.clone())),
        (None, Some(s)) if is_valid_subject(s) => Ok(RevocationTarget::Subject(s.clone())),
        (Some(_), None) => {
            Err("--jti must be 1-128 characters of letters, digits and _-.@:".into())
        }
        (None, Some(_)) => {
            Err("--subject must be 1-128 characters of letters, digits and _-.@:".into())
        }
        _ => Err("give exactly one of --jti and --subject".into()),
    }
}

/// `lucid-node-management token revoke`.
pub fn cli_revoke(args: RevokeArgs, config: &Config) -> Result<(), String> {
    crate::logging::init(&config.log_level, config.log_format);
    let target = target(&args)?;
    let answer = match &args.server {
        Some(server) => remote_revoke(server, &args, config)?,
        None => {
            let db_path = config.data_dir.join(DB_FILE);
            if !db_path.exists() {
                return Err(format!("no database at {}", db_path.display()));
            }
            match open_for_backup(&db_path)? {
                Some(snapshot) => {
                    drop(snapshot);
                    offline_revoke(target, config)?
                }
                None => {
                    eprintln!("token revoke: the service is running; asking it");
                    remote_revoke(&local_server(config)?, &args, config)?
                }
            }
        }
    };
    println!("{answer}");
    Ok(())
}

fn describe(r: &Revocation) -> String {
    let what = match &r.target {
        RevocationTarget::Jti(j) => format!("token {j}"),
        RevocationTarget::Subject(s) => format!(
            "every token of {s} issued up to {}",
            rfc3339_us(r.revoked_at_us)
        ),
    };
    format!(
        "revoked {what} (entry kept until {})",
        rfc3339_us(r.expires_at_us)
    )
}

/// Writes the revocation into the database of the stopped service, through the store's
/// writer like every other change, with its audit event.
fn offline_revoke(target: RevocationTarget, config: &Config) -> Result<String, String> {
    let (store, clock) =
        crate::store::db::open_with_clock(&config.data_dir, config.max_nodes_per_pool)?;
    let metrics = crate::metrics::Metrics::new();
    let mirror = crate::sync::prepare(config, &store, &metrics.mirror);
    let (writer, thread) =
        Writer::<ApiError>::start(&store, clock, WriterSettings::new(4).mirror(mirror))
            .map_err(|e| e.to_string())?;
    let now = unix_now_us();
    let reader = store.reader().map_err(|e| e.to_string())?;
    let entry =
        plan(&reader, target, now, lifetime_bound(config.node_token_ttl)).map_err(|e| e.detail)?;
    drop(reader);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let actor = Actor::new(OFFLINE_ACTOR, Role::Admin);
    let stored = runtime
        .block_on(commit(&writer, entry, actor, now))
        .map_err(|e| format!("not revoked: {}", e.detail))?;
    drop(writer);
    let _ = thread.join();
    Ok(describe(&stored))
}

fn remote_revoke(server: &str, args: &RevokeArgs, config: &Config) -> Result<String, String> {
    let token = match &args.token {
        Some(t) => t.clone(),
        None => mint_admin_token(config, OFFLINE_ACTOR)?,
    };
    let client = service_client(
        server,
        args.ca_cert.as_ref(),
        config,
        Duration::from_secs(60),
    )?;
    let url = format!("{}/api/v1/tokens/revoke", server.trim_end_matches('/'));
    let body = match (&args.jti, &args.subject) {
        (Some(j), _) => json!({ "jti": j }),
        (_, Some(s)) => json!({ "subject": s }),
        _ => json!({}),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let resp = client
            .post(&url)
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .map_err(|e| format!("cannot reach the service at {url}: {}", error_chain(&e)))?;
        let status = resp.status();
        let answer: Value = resp.json().await.unwrap_or_default();
        if !status.is_success() {
            let detail = answer["detail"].as_str().unwrap_or("no detail");
            return Err(format!(
                "the service refused the revocation: {status}: {detail}"
            ));
        }
        let what = match (answer["jti"].as_str(), answer["subject"].as_str()) {
            (Some(j), _) => format!("token {j}"),
            (_, Some(s)) => format!(
                "every token of {s} issued up to {}",
                answer["revoked_at"].as_str().unwrap_or("now")
            ),
            _ => "?".to_string(),
        };
        Ok(format!(
            "revoked {what} (entry kept until {})",
            answer["expires_at"].as_str().unwrap_or("?")
        ))
    })
}
