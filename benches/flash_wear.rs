//! Flash wear: bytes the server writes to storage per accepted heartbeat at a fleet's real
//! pace (N nodes each beating every 30 s: N/30 signed heartbeats a second over HTTPS,
//! spread evenly), measured from the server's `/proc/PID/io` (`write_bytes`), with the
//! durable commits a second, the database file's growth per heartbeat and the
//! acknowledgement latency. Each fleet size runs once per `COMMIT_INTERVAL`, so the
//! linger's effect is a ratio measured in the same run.
//!
//! `cargo bench --bench flash_wear`
//!   FLASH_NODES=1000        fleet sizes, comma-separated (e.g. `1000,10000`)
//!   FLASH_INTERVALS=3,0     COMMIT_INTERVAL values to compare
//!   FLASH_SECONDS=60        measured seconds per run, after every node has beaten once
//!   FLASH_PERIOD=30         seconds between a node's heartbeats
//!
//! No epoch closes during a run (`POOT_CALCULATION_INTERVAL` is an hour), so the figures
//! are the heartbeats' own; the monitor and alert timers run as in production.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_lucid-node-management");

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

struct Server {
    child: Child,
    base: String,
    client: reqwest::Client,
    admin: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn boot(dir: &Path, commit_interval: &str) -> Server {
    let mut child = Command::new(BIN)
        .args(["serve", "--port", "0", "--bind", "127.0.0.1"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATA_DIR", dir)
        .env("LOG_FORMAT", "json")
        .env("LOG_LEVEL", "info")
        .env("COMMIT_INTERVAL", commit_interval)
        .env("POOT_CALCULATION_INTERVAL", "3600")
        .env("PAYOUT_PROCESSING_INTERVAL", "3600")
        .env("WRITER_QUEUE_CAPACITY", "100000")
        // Every simulated node logs in from this one address.
        .env("AUTH_RATE_LIMIT", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if v["message"] == "listening" {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(v["addr"].as_str().unwrap().to_string());
                    }
                } else if v["level"] == "ERROR" {
                    eprintln!("[server] {line}");
                }
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("listening");
    let cert = std::fs::read(dir.join("tls/cert.pem")).unwrap();
    let out = Command::new(BIN)
        .args(["token", "issue", "--role", "admin", "--subject", "bench"])
        .env("DATA_DIR", dir)
        .output()
        .unwrap();
    let admin = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&cert).unwrap())
        .tls_built_in_root_certs(false)
        .http1_only()
        .pool_max_idle_per_host(4096)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    Server {
        child,
        base: format!("https://127.0.0.1:{}", addr.rsplit(':').next().unwrap()),
        client,
        admin,
    }
}

/// `write_bytes` and `syscw` of a process, from `/proc/{pid}/io`.
fn io_counters(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    (field("write_bytes:"), field("syscw:"))
}

/// The count of a Prometheus histogram in the server's `/metrics`.
async fn histogram_count(server: &Server, name: &str) -> f64 {
    let text = server
        .client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}_count ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0)
}

struct Node {
    id: String,
    key: SigningKey,
    token: String,
}

/// Registers `n` nodes and logs each in, `parallel` at a time.
async fn enroll(server: &Arc<Server>, n: usize, parallel: usize) -> Vec<Node> {
    let sem = Arc::new(tokio::sync::Semaphore::new(parallel));
    let mut tasks = Vec::new();
    for i in 0..n {
        let server = server.clone();
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire().await.unwrap();
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
            let key = SigningKey::from_bytes(&seed);
            let (c, base) = (&server.client, &server.base);
            let node: Value = c
                .post(format!("{base}/api/v1/nodes"))
                .bearer_auth(&server.admin)
                .json(&json!({"name": format!("flash-{i}"), "public_key": B64.encode(key.verifying_key().to_bytes())}))
                .send().await.unwrap().json().await.unwrap();
            let id = node["node_id"].as_str().expect("registered").to_string();
            let ch: Value = c
                .post(format!("{base}/api/v1/auth/challenge"))
                .json(&json!({"node_id": id}))
                .send().await.unwrap().json().await.unwrap();
            let nonce = ch["nonce"].as_str().unwrap();
            let sig = B64.encode(key.sign(format!("lucid-auth-v1:{nonce}").as_bytes()).to_bytes());
            let tok: Value = c
                .post(format!("{base}/api/v1/auth/token"))
                .json(&json!({"node_id": id, "nonce": nonce, "signature": sig}))
                .send().await.unwrap().json().await.unwrap();
            Node { id, key, token: tok["token"].as_str().unwrap().to_string() }
        }));
    }
    let mut nodes = Vec::with_capacity(n);
    for t in tasks {
        nodes.push(t.await.unwrap());
    }
    nodes
}

fn heartbeat_body(node: &Node, seq: u64) -> String {
    let sent_at = "2026-12-01T00:00:00Z";
    let canonical = format!("lucid-hb-v1|{}|{seq}|{sent_at}|1|2048|0.25|256", node.id);
    let sig = B64.encode(node.key.sign(canonical.as_bytes()).to_bytes());
    format!(
        r#"{{"seq":{seq},"sent_at":"{sent_at}","sessions_active":1,"bytes_relayed":2048,"cpu_load":0.25,"mem_used_mb":256,"signature":"{sig}"}}"#
    )
}

#[derive(Default)]
struct Tally {
    accepted: AtomicU64,
    refused: AtomicU64,
}

/// Every node beats once per `period`, node `i` offset by `i/n` of it; heartbeats whose
/// scheduled time falls in `[measure_from, until)` record their latency (from the
/// scheduled time) in `latencies`.
async fn beat(
    server: Arc<Server>,
    nodes: Arc<Vec<Node>>,
    period: Duration,
    start: Instant,
    measure_from: Instant,
    until: Instant,
    tally: Arc<Tally>,
) -> Vec<f64> {
    let n = nodes.len();
    let mut tasks = Vec::new();
    // One task per 1/64 of the fleet keeps the task count small at 10k nodes; each sends
    // its nodes' heartbeats on their schedules without waiting for the answers.
    let groups = 64.min(n);
    for g in 0..groups {
        let (server, nodes, tally) = (server.clone(), nodes.clone(), tally.clone());
        tasks.push(tokio::spawn(async move {
            let mut schedule: Vec<(Instant, usize, u64)> = (g..n)
                .step_by(groups)
                .map(|i| (start + period.mul_f64(i as f64 / n as f64), i, 1))
                .collect();
            let mut inflight = tokio::task::JoinSet::new();
            loop {
                let (k, &(at, i, seq)) = schedule
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, s)| s.0)
                    .unwrap();
                if at >= until {
                    break;
                }
                tokio::time::sleep_until(at.into()).await;
                schedule[k] = (at + period, i, seq + 1);
                let (server, nodes, tally) = (server.clone(), nodes.clone(), tally.clone());
                inflight.spawn(async move {
                    let node = &nodes[i];
                    let resp = server
                        .client
                        .post(format!(
                            "{}/api/v1/nodes/{}/heartbeat",
                            server.base, node.id
                        ))
                        .bearer_auth(&node.token)
                        .header("content-type", "application/json")
                        .body(heartbeat_body(node, seq))
                        .send()
                        .await;
                    let ok = matches!(resp, Ok(r) if r.status() == 202);
                    let counter = if ok { &tally.accepted } else { &tally.refused };
                    if at >= measure_from {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                    (at >= measure_from).then(|| at.elapsed().as_secs_f64() * 1000.0)
                });
            }
            let mut latencies = Vec::new();
            while let Some(done) = inflight.join_next().await {
                latencies.extend(done.unwrap());
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all
}

struct Row {
    nodes: usize,
    interval: String,
    accepted: u64,
    refused: u64,
    seconds: f64,
    bytes_per_hb: f64,
    syscw_per_hb: f64,
    commits_per_s: f64,
    growth_per_hb: f64,
    p50: f64,
    p99: f64,
}

fn run(nodes_n: usize, interval: &str, seconds: u64, period: Duration) -> Row {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = Arc::new(boot(dir.path(), interval));
    let pid = server.child.id();
    let db = dir.path().join("lucid.redb");
    rt.block_on(async {
        let t0 = Instant::now();
        let nodes = Arc::new(enroll(&server, nodes_n, 64).await);
        eprintln!(
            "{nodes_n} nodes registered and logged in in {:.1} s (COMMIT_INTERVAL={interval})",
            t0.elapsed().as_secs_f64()
        );
        let tally = Arc::new(Tally::default());
        // One period to bring every node online (its first heartbeat writes its record),
        // then the measured window.
        let start = Instant::now() + Duration::from_millis(200);
        let measure_from = start + period + Duration::from_secs(2);
        let until = measure_from + Duration::from_secs(seconds);
        let probe = {
            let server = server.clone();
            let db = db.clone();
            tokio::spawn(async move {
                tokio::time::sleep_until(measure_from.into()).await;
                let io0 = io_counters(pid);
                let commits0 = histogram_count(&server, "lucid_writer_commit_seconds").await;
                let size0 = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
                let t = Instant::now();
                tokio::time::sleep_until(until.into()).await;
                // Answers of the last heartbeats arrive up to one commit interval later.
                tokio::time::sleep(Duration::from_secs(4)).await;
                let io1 = io_counters(pid);
                let commits1 = histogram_count(&server, "lucid_writer_commit_seconds").await;
                let size1 = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
                (
                    io1.0 - io0.0,
                    io1.1 - io0.1,
                    commits1 - commits0,
                    size1 as f64 - size0 as f64,
                    t.elapsed().as_secs_f64(),
                )
            })
        };
        let mut lat = beat(
            server.clone(),
            nodes,
            period,
            start,
            measure_from,
            until,
            tally.clone(),
        )
        .await;
        let (bytes, syscw, commits, growth, secs) = probe.await.unwrap();
        lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
                .copied()
                .unwrap_or(0.0)
        };
        let accepted = tally.accepted.load(Ordering::Relaxed);
        let per = accepted.max(1) as f64;
        Row {
            nodes: nodes_n,
            interval: interval.to_string(),
            accepted,
            refused: tally.refused.load(Ordering::Relaxed),
            seconds: secs,
            bytes_per_hb: bytes as f64 / per,
            syscw_per_hb: syscw as f64 / per,
            commits_per_s: commits / secs,
            growth_per_hb: growth / per,
            p50: pct(0.50),
            p99: pct(0.99),
        }
    })
}

fn main() {
    let sizes: Vec<usize> = env_list("FLASH_NODES", "1000")
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    let intervals = env_list("FLASH_INTERVALS", "3,0");
    let seconds: u64 = env_or("FLASH_SECONDS", 60);
    let period = Duration::from_secs(env_or("FLASH_PERIOD", 30));
    let mut rows = Vec::new();
    for &n in &sizes {
        for interval in &intervals {
            let row = run(n, interval, seconds, period);
            eprintln!(
                "nodes {n} COMMIT_INTERVAL={interval}: {:.0} B/heartbeat",
                row.bytes_per_hb
            );
            rows.push(row);
        }
    }
    println!(
        "Heartbeats at the fleet's pace (every node every {} s, spread evenly) over HTTPS; {seconds} s measured \
         after every node's first heartbeat; bytes from the server's /proc/PID/io.",
        period.as_secs()
    );
    println!();
    println!("| nodes | COMMIT_INTERVAL | accepted | refused | heartbeats/s | bytes written / heartbeat | write calls / heartbeat | durable commits / s | file growth / heartbeat | ack p50 ms | ack p99 ms |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {:.1} | {:.0} B | {:.2} | {:.2} | {:.0} B | {:.0} | {:.0} |",
            r.nodes,
            r.interval,
            r.accepted,
            r.refused,
            r.accepted as f64 / r.seconds,
            r.bytes_per_hb,
            r.syscw_per_hb,
            r.commits_per_s,
            r.growth_per_hb,
            r.p50,
            r.p99
        );
    }
    for &n in &sizes {
        let of = |i: &str| rows.iter().find(|r| r.nodes == n && r.interval == i);
        if let (Some(a), Some(b)) = (
            of(intervals[0].as_str()),
            intervals.get(1).and_then(|i| of(i)),
        ) {
            println!();
            println!(
                "{n} nodes: COMMIT_INTERVAL={} writes {:.3}x the bytes per heartbeat of COMMIT_INTERVAL={}.",
                a.interval,
                a.bytes_per_hb / b.bytes_per_hb.max(1.0),
                b.interval
            );
        }
    }
}
