//! `agent status` (is this node healthy? for people, scripts and monitoring) and
//! `agent receipts` (what the kept proofs add up to; `--verify` re-checks them all).

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::config::{Settings, DEFAULT_CONFIG};
use super::http::{build_client, get_json, GetError};
use super::receipts::{self, parse_since, summarise, to_csv, verify_all, window_us};
use super::state::{default_state_path, load_health, SeqCounter, STATUS_FILE};
use super::{now_us, Agent, AgentArgs};
use crate::crypto::keys::read_signing_key;
use crate::domain::timefmt::rfc3339_us;

#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    /// agent.toml written by `agent enroll`.
    #[arg(long, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Only the local records: do not ask the appliance.
    #[arg(long)]
    pub offline: bool,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ReceiptsArgs {
    /// agent.toml written by `agent enroll`.
    #[arg(long, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// Only epochs whose window starts at or after this (2026-12-01 or an RFC 3339 time).
    #[arg(long)]
    pub since: Option<String>,
    /// Print every receipt as CSV or the summary and receipts as JSON (default: a summary).
    #[arg(long, value_parser = ["csv", "json", "text"], default_value = "text")]
    pub format: String,
    /// Re-check the whole file (hashes, inclusion paths, signatures with the pinned proof
    /// key, the chain); exit non-zero on the first failure.
    #[arg(long)]
    pub verify: bool,
}

fn settings_from(config: &std::path::Path) -> Result<(Settings, PathBuf), String> {
    let settings = AgentArgs {
        config: Some(config.to_path_buf()),
        ..Default::default()
    }
    .settings(true)?;
    let dir = settings.state_dir.clone().ok_or_else(|| {
        format!(
            "{} names no state_dir: this node was not enrolled with `agent enroll`",
            config.display()
        )
    })?;
    Ok((settings, dir))
}

#[derive(Deserialize)]
struct NodeInfo {
    status: String,
    balance_usdt: String,
    last_heartbeat_at: Option<String>,
}

fn ago(us: u64) -> String {
    let secs = now_us().saturating_sub(us) / 1_000_000;
    format!("{} ({secs} s ago)", rfc3339_us(us))
}

/// How old the last accepted heartbeat may be before the node counts as not sending.
pub fn stale_after(interval_secs: u64) -> Duration {
    Duration::from_secs((interval_secs.max(1) * 3).max(90))
}

pub fn status(args: StatusArgs) -> Result<(), String> {
    let (settings, dir) = settings_from(&args.config)?;
    let health = load_health(&dir.join(STATUS_FILE))?;
    let kept = receipts::read_all(&receipts::receipts_path(&dir))?;
    let mut problems: Vec<String> = Vec::new();

    println!("node:              {}", settings.node_id);
    println!("server:            {}", settings.server);
    match health
        .as_ref()
        .and_then(|h| h.last_accepted_at_us.map(|t| (h, t)))
    {
        Some((h, t)) => {
            println!(
                "last heartbeat:    {} seq {}",
                ago(t),
                h.last_accepted_seq.unwrap_or(0)
            );
            let age = Duration::from_micros(now_us().saturating_sub(t));
            if age > stale_after(h.interval_secs) {
                problems.push(format!(
                    "no heartbeat accepted for {} s (interval {} s)",
                    age.as_secs(),
                    h.interval_secs
                ));
            }
        }
        None => {
            println!("last heartbeat:    none");
            problems.push("no heartbeat accepted yet (is lucid-node-agent running?)".into());
        }
    }
    if let Some(e) = health.as_ref().and_then(|h| h.last_error.as_ref()) {
        println!("last failure:      {e}");
    }
    match kept.last() {
        Some(r) => println!(
            "last proof:        epoch {} ({} .. {}), {} s operational, {} USDT, verified {}",
            r.proof.epoch,
            r.proof.window_start,
            r.proof.window_end,
            r.proof.operational_seconds,
            r.proof.credits_usdt,
            r.verified_at
        ),
        None => println!("last proof:        none yet"),
    }
    println!("receipts:          {}", kept.len());
    if let Some(h) = &health {
        problems.extend(h.problems.iter().cloned());
    }
    if !args.offline {
        match live(&settings) {
            Ok(node) => {
                println!("balance:           {} USDT", node.balance_usdt);
                println!("appliance says:    {}", node.status);
                if let Some(at) = node.last_heartbeat_at {
                    println!("appliance last hb: {at}");
                }
                if matches!(node.status.as_str(), "suspended" | "deregistered") {
                    problems.push(format!("the appliance lists this node as {}", node.status));
                }
            }
            Err(e) => problems.push(e),
        }
    }
    if problems.is_empty() {
        println!("health:            ok");
        Ok(())
    } else {
        for p in &problems {
            println!("problem:           {p}");
        }
        Err(format!("unhealthy: {}", problems.join("; ")))
    }
}

/// The node's record as the appliance sees it, logged in with the node key.
fn live(settings: &Settings) -> Result<NodeInfo, String> {
    let key = read_signing_key(&settings.key)?;
    let client = build_client(&settings.trust)?;
    let base = settings.server.trim().trim_end_matches('/').to_string();
    let mut agent = Agent {
        client: client.clone(),
        base: base.clone(),
        node_id: settings.node_id.clone(),
        key,
        key_path: settings.key.clone(),
        state_path: default_state_path(&settings.key),
        seq: SeqCounter::new(None),
        session: None,
        last_status: None,
        state_write_failed: false,
        keeper: None,
        notified_ready: false,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let token = agent.token().await.map_err(|e| match e {
            super::http::Failure::Transient { reason, .. } => {
                format!("server unreachable or failing: {reason}")
            }
            other => format!("cannot log in: {other:?}"),
        })?;
        get_json::<NodeInfo>(
            &client,
            &format!("{base}/api/v1/nodes/{}", settings.node_id),
            Some(&token),
        )
        .await
        .map_err(|e| match e {
            GetError::Unreachable(r) => format!("server unreachable: {r}"),
            GetError::Status(_, r) => format!("cannot read the node's record: {r}"),
        })
    })
}

pub fn receipts(args: ReceiptsArgs) -> Result<(), String> {
    let (settings, dir) = settings_from(&args.config)?;
    let path = receipts::receipts_path(&dir);
    let all = receipts::read_all(&path)?;
    if args.verify {
        let key = settings
            .proof_key
            .ok_or("agent.toml pins no proof_public_key: nothing to verify the receipts with")?;
        let n = verify_all(&all, &key).map_err(|e| format!("{}: {e}", path.display()))?;
        let flagged = all.iter().filter(|r| !r.problems.is_empty()).count();
        println!("valid: {n} receipts, every proof signed by the pinned proof key and chained to the one before");
        if flagged > 0 {
            println!("{flagged} receipt(s) carry a problem found when they were fetched (see `agent receipts`)");
        }
        return Ok(());
    }
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let chosen: Vec<&receipts::Receipt> = all
        .iter()
        .filter(|r| {
            since.is_none_or(|s| {
                window_us(&r.proof)
                    .map(|(start, _)| start >= s)
                    .unwrap_or(false)
            })
        })
        .collect();
    let summary = summarise(&chosen);
    match args.format.as_str() {
        "csv" => print!("{}", to_csv(&chosen)),
        "json" => {
            let doc = serde_json::json!({"summary": summary, "receipts": chosen});
            println!(
                "{}",
                serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?
            );
        }
        _ => {
            println!("epochs:              {}", summary.epochs);
            println!(
                "operational time:    {} s ({:.2} h)",
                summary.operational_seconds,
                summary.operational_seconds as f64 / 3600.0
            );
            println!("heartbeats:          {}", summary.heartbeats);
            println!("credits:             {} USDT", summary.credits_usdt);
            if let (Some(a), Some(b)) = (&summary.first_window_start, &summary.last_window_end) {
                println!("from:                {a}");
                println!("to:                  {b}");
            }
            println!("flagged:             {}", summary.flagged);
        }
    }
    Ok(())
}
