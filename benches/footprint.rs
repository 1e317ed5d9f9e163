//! Memory and start-up of the real release binary with many registered nodes.
//!
//! Per N: a state directory with N registered nodes (written through the store, fast) is
//! prepared; the binary is started once to create its keys and certificate, stopped, and
//! started again: start to ready is measured on that second start (until the "listening"
//! log line, and until `GET /health` answers over HTTPS). Then RSS (VmRSS) idle, and RSS
//! and its peak (VmHWM) after a read load: every node listed page by page and fetched one
//! by one from 16 keep-alive connections. Last, 10 heartbeats per node are added in the
//! last finished epoch and the server started again: it closes that epoch at once, and
//! its RSS after the close and peak (VmHWM) are read. Prints a table; no assertions.
//!
//! `cargo bench --bench footprint` (N defaults to 10k and 100k; set FOOTPRINT_NODES to a
//! comma list to change).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lucid_node_management::domain::node::{Node, NodeStatus};
use lucid_node_management::store::tables::{POOT_CLOSED_UNTIL_KEY, POOT_LENGTH_KEY};
use lucid_node_management::store::{self, seed};

const BIN: &str = env!("CARGO_BIN_EXE_lucid-node-management");
const PREFIX: &str = "node_fp";

fn prepare(dir: &Path, n: usize) {
    let (store, clock) = store::db::open_with_clock(dir, 100).unwrap();
    let now = clock.now_us();
    seed::in_transaction(&store, &clock, |b| {
        let nodes = (0..n).map(|i| Node {
            name: format!("node {i}"),
            operator_id: format!("op{}", i % 100),
            status: NodeStatus::Registered,
            ..seed::node(PREFIX, i, now)
        });
        seed::put_nodes(b, nodes).unwrap();
    });
}

/// Ten heartbeats per node in the last finished epoch (300 s epochs), with `closed_until`
/// at its start: the next server start closes it.
fn add_heartbeats(dir: &Path, n: usize) {
    const S: u64 = 1_000_000;
    const EPOCH: u64 = 300 * S;
    let (store, clock) = store::db::open_with_clock(dir, 100).unwrap();
    let now = clock.now_us();
    let start = (now / EPOCH - 1) * EPOCH;
    seed::in_transaction(&store, &clock, |b| {
        b.set_meta_u64(POOT_CLOSED_UNTIL_KEY, start).unwrap();
        b.set_meta_u64(POOT_LENGTH_KEY, EPOCH).unwrap();
        seed::put_heartbeats(b, PREFIX, n, 10, |i, h| start + h * 29 * S + i as u64).unwrap();
    });
}

fn command(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATA_DIR", dir)
        .env("LOG_FORMAT", "json")
        .env("LOG_LEVEL", "info")
        .env("POOT_CALCULATION_INTERVAL", "300")
        // As the packaged systemd unit runs it (see systemd/lucid-node-management.service).
        .env("MALLOC_ARENA_MAX", "2");
    cmd
}

/// Starts the server; returns it, its port, the time until it logged "listening", and
/// the "closed PoOT epoch" log lines (as they come).
fn start(dir: &Path) -> (Child, u16, Duration, mpsc::Receiver<serde_json::Value>) {
    let started = Instant::now();
    let mut child = command(dir)
        .args(["serve", "--port", "0", "--bind", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<(String, Duration)>();
    let (closed_tx, closed) = mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if v["message"] == "closed PoOT epoch" {
                    let _ = closed_tx.send(v.clone());
                }
                if v["message"] == "listening" {
                    if let Some(tx) = tx.take() {
                        let addr = v["addr"].as_str().unwrap_or_default().to_string();
                        let _ = tx.send((addr, started.elapsed()));
                    }
                }
            }
        }
    });
    let (addr, listening) = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server did not report listening");
    let port = addr.rsplit(':').next().unwrap().parse().unwrap();
    (child, port, listening, closed)
}

fn stop(mut child: Child) {
    // SIGTERM for a clean shutdown, as systemd does.
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// (VmRSS, VmHWM) in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .map_or(0.0, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn admin_token(dir: &Path) -> String {
    let out = command(dir)
        .args([
            "token",
            "issue",
            "--role",
            "admin",
            "--subject",
            "bench",
            "--ttl",
            "1h",
        ])
        .output()
        .expect("token issue");
    assert!(out.status.success(), "token issue failed");
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_string()
}

fn main() {
    let sizes: Vec<usize> = std::env::var("FOOTPRINT_NODES")
        .unwrap_or_else(|_| "10000,100000".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = Vec::new();
    for n in sizes {
        let dir = tempfile::tempdir().unwrap();
        let prepared = Instant::now();
        prepare(dir.path(), n);
        let prepare_s = prepared.elapsed().as_secs_f64();
        let db_mib = std::fs::metadata(dir.path().join(store::db::DB_FILE))
            .map_or(0.0, |m| m.len() as f64 / (1 << 20) as f64);
        // First start: creates the service keys and the TLS certificate.
        let (child, _, first_listening, _) = start(dir.path());
        stop(child);
        let token = admin_token(dir.path());

        let started = Instant::now();
        let (child, port, listening, _) = start(dir.path());
        let pem = std::fs::read(dir.path().join("tls/cert.pem")).expect("server cert");
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .tls_built_in_root_certs(false)
            .pool_max_idle_per_host(64)
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("https://127.0.0.1:{port}");
        let health = rt.block_on(async {
            loop {
                if let Ok(r) = client.get(format!("{base}/health")).send().await {
                    if r.status().is_success() {
                        return started.elapsed();
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        });
        std::thread::sleep(Duration::from_secs(2));
        let (idle, _) = rss_mib(child.id());

        // Load: list every node page by page, then fetch each one, 16 at a time.
        let load_started = Instant::now();
        let requests = rt.block_on(async {
            let mut ids = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let url = match &cursor {
                    Some(c) => format!("{base}/api/v1/nodes?limit=500&cursor={c}"),
                    None => format!("{base}/api/v1/nodes?limit=500"),
                };
                let page: serde_json::Value = client
                    .get(url)
                    .bearer_auth(&token)
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                for item in page["items"].as_array().into_iter().flatten() {
                    ids.push(item["node_id"].as_str().unwrap_or_default().to_string());
                }
                match page["next_cursor"].as_str() {
                    Some(c) => cursor = Some(c.to_string()),
                    None => break,
                }
            }
            let pages = ids.len() / 500 + 1;
            let mut tasks = Vec::new();
            for w in 0..16 {
                let (client, base, token) = (client.clone(), base.clone(), token.clone());
                let mine: Vec<String> = ids.iter().skip(w).step_by(16).cloned().collect();
                tasks.push(tokio::spawn(async move {
                    for id in mine {
                        let _ = client
                            .get(format!("{base}/api/v1/nodes/{id}"))
                            .bearer_auth(&token)
                            .send()
                            .await
                            .and_then(|r| r.error_for_status());
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
            pages + ids.len()
        });
        let load_s = load_started.elapsed().as_secs_f64();
        let (loaded, peak) = rss_mib(child.id());
        stop(child);

        // An epoch to close: 10 heartbeats per node in the last finished epoch, closed by
        // the server as soon as it starts; its peak RSS covers the close.
        add_heartbeats(dir.path(), n);
        let (child, _, _, closed) = start(dir.path());
        let close = loop {
            let v = closed
                .recv_timeout(Duration::from_secs(300))
                .expect("the server did not close the epoch");
            if v["proofs"].as_u64().unwrap_or(0) > 0 {
                break v;
            }
        };
        let (after_close, close_peak) = rss_mib(child.id());
        stop(child);
        rows.push(format!(
            "| {n} | {db_mib:.0} | {prepare_s:.1} | {:.0} | {:.0} | {:.0} | {idle:.1} | {requests} in {load_s:.1} s | {loaded:.1} | {peak:.1} | {} proofs in {:.2} s | {after_close:.1} / {close_peak:.1} |",
            first_listening.as_secs_f64() * 1000.0,
            listening.as_secs_f64() * 1000.0,
            health.as_secs_f64() * 1000.0,
            close["proofs"],
            close["seconds"].as_f64().unwrap_or(0.0),
        ));
    }
    println!("Start-up and memory of the release binary (second start; RSS from /proc/PID/status)");
    println!();
    println!("| nodes | database (MiB) | prepare (s) | first start to listening (ms) | start to listening (ms) | start to /health 200 (ms) | RSS idle (MiB) | read load | RSS after load (MiB) | peak RSS (MiB) | epoch close at start (10 heartbeats/node) | RSS after close / peak (MiB) |");
    println!("|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---|");
    for r in rows {
        println!("{r}");
    }
}
