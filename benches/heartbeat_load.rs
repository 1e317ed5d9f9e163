//! Durable, signature-checked heartbeats over HTTPS keep-alive against the real binary,
//! compared as ratios with `GET /health` and a node read measured in the same run, and with
//! the Ed25519 verification rates of this machine (the ceiling). The load generator runs
//! in this process and shares the machine's cores with the server.
//!
//! `cargo bench --bench heartbeat_load` (CONNECTIONS=64, SECONDS=5 by default).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey, Verifier};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_lucid-node-management");

struct Server {
    child: std::process::Child,
    base: String,
    client: reqwest::Client,
    cert: Vec<u8>,
    admin: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn boot(dir: &std::path::Path) -> Server {
    let mut child = Command::new(BIN)
        .args(["serve", "--port", "0", "--bind", "127.0.0.1"])
        .env("DATA_DIR", dir)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "warn,lucid_node_management=info")
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
                }
            }
        }
    });
    let addr = rx.recv_timeout(Duration::from_secs(30)).expect("listening");
    let cert = std::fs::read(dir.join("tls/cert.pem")).unwrap();
    let out = Command::new(BIN)
        .args(["token", "issue", "--role", "admin", "--subject", "bench"])
        .env("DATA_DIR", dir)
        .output()
        .unwrap();
    let admin = String::from_utf8(out.stdout).unwrap().trim().to_string();
    Server {
        child,
        base: format!("https://127.0.0.1:{}", addr.rsplit(':').next().unwrap()),
        client: client(&cert),
        cert,
        admin,
    }
}

/// One HTTP/1.1 keep-alive connection per client: each load task owns one.
fn client(cert: &[u8]) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert).unwrap())
        .tls_built_in_root_certs(false)
        .http1_only()
        .pool_max_idle_per_host(1)
        .build()
        .unwrap()
}

struct Phase {
    name: &'static str,
    requests: u64,
    errors: u64,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
}

/// Runs `make_request(task, i)` from `connections` tasks for `seconds`.
async fn drive<F, Fut>(
    name: &'static str,
    connections: usize,
    seconds: u64,
    make_request: F,
) -> Phase
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let make_request = Arc::new(make_request);
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..connections {
        let make_request = make_request.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            let mut i = 0u64;
            while Instant::now() < deadline {
                let t0 = Instant::now();
                if !make_request(t, i).await {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                latencies.push(t0.elapsed().as_secs_f64() * 1000.0);
                i += 1;
            }
            latencies
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let seconds = started.elapsed().as_secs_f64();
    all.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    Phase {
        name,
        requests: all.len() as u64,
        errors: errors.load(Ordering::Relaxed),
        seconds,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
    }
}

fn verify_rates(seconds: f64) -> (f64, f64) {
    let key = SigningKey::from_bytes(&[5; 32]);
    let msgs: Vec<Vec<u8>> = (0..64)
        .map(|i| format!("lucid-hb-v1|node_x|{i}|t|0|0|0.1|1").into_bytes())
        .collect();
    let sigs: Vec<_> = msgs.iter().map(|m| key.sign(m)).collect();
    let vk = key.verifying_key();
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < seconds {
        for (m, s) in msgs.iter().zip(&sigs) {
            vk.verify(m, s).unwrap();
        }
        n += 64;
    }
    let single = n as f64 / t0.elapsed().as_secs_f64();
    let refs: Vec<&[u8]> = msgs.iter().map(|m| m.as_slice()).collect();
    let keys = vec![vk; 64];
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < seconds {
        ed25519_dalek::verify_batch(&refs, &sigs, &keys).unwrap();
        n += 64;
    }
    (single, n as f64 / t0.elapsed().as_secs_f64())
}

fn main() {
    let connections: usize = std::env::var("CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let seconds: u64 = std::env::var("SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let server = boot(dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let phases = rt.block_on(async {
        // One node per connection, each logged in.
        let mut nodes = Vec::new();
        for i in 0..connections {
            let key = SigningKey::from_bytes(&{
                let mut s = [0u8; 32];
                s[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
                s
            });
            let node: Value = server
                .client
                .post(format!("{}/api/v1/nodes", server.base))
                .bearer_auth(&server.admin)
                .json(&json!({"name": format!("bench-{i}"), "public_key": B64.encode(key.verifying_key().to_bytes())}))
                .send().await.unwrap().json().await.unwrap();
            let id = node["node_id"].as_str().unwrap().to_string();
            let ch: Value = server.client.post(format!("{}/api/v1/auth/challenge", server.base))
                .json(&json!({"node_id": id})).send().await.unwrap().json().await.unwrap();
            let nonce = ch["nonce"].as_str().unwrap();
            let sig = B64.encode(key.sign(format!("lucid-auth-v1:{nonce}").as_bytes()).to_bytes());
            let tok: Value = server.client.post(format!("{}/api/v1/auth/token", server.base))
                .json(&json!({"node_id": id, "nonce": nonce, "signature": sig}))
                .send().await.unwrap().json().await.unwrap();
            nodes.push((id, key, tok["token"].as_str().unwrap().to_string(), client(&server.cert)));
        }
        let nodes = Arc::new(nodes);
        let base = Arc::new(server.base.clone());
        let admin = Arc::new(server.admin.clone());

        let (n, b) = (nodes.clone(), base.clone());
        let health = drive("GET /health", connections, seconds, move |t, _| {
            let (n, b) = (n.clone(), b.clone());
            async move {
                matches!(n[t].3.get(format!("{b}/health")).send().await, Ok(r) if r.status() == 200)
            }
        }).await;

        let (n, b, a) = (nodes.clone(), base.clone(), admin.clone());
        let reads = drive("GET /api/v1/nodes/{id}", connections, seconds, move |t, _| {
            let (n, b, a) = (n.clone(), b.clone(), a.clone());
            async move {
                let url = format!("{b}/api/v1/nodes/{}", n[t].0);
                matches!(n[t].3.get(url).bearer_auth(a.as_str()).send().await, Ok(r) if r.status() == 200)
            }
        }).await;

        let (n, b) = (nodes.clone(), base.clone());
        let heartbeats = drive("POST heartbeat (durable, signed)", connections, seconds, move |t, i| {
            let (n, b) = (n.clone(), b.clone());
            async move {
                let (id, key, token, client) = &n[t];
                let seq = i + 1;
                let sent_at = "2026-01-01T00:00:00Z";
                let canonical = format!("lucid-hb-v1|{id}|{seq}|{sent_at}|1|2048|0.25|256");
                let sig = B64.encode(key.sign(canonical.as_bytes()).to_bytes());
                let body = format!(r#"{{"seq":{seq},"sent_at":"{sent_at}","sessions_active":1,"bytes_relayed":2048,"cpu_load":0.25,"mem_used_mb":256,"signature":"{sig}"}}"#);
                let resp = client
                    .post(format!("{b}/api/v1/nodes/{id}/heartbeat"))
                    .bearer_auth(token)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                matches!(resp, Ok(r) if r.status() == 202)
            }
        }).await;
        vec![health, reads, heartbeats]
    });
    let (single, batch) = verify_rates(2.0);
    let health_rate = phases[0].rate();
    println!("{connections} keep-alive HTTPS/1.1 connections, {seconds} s per phase; the load generator shares the machine's {} cores with the server.", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    println!();
    println!("| phase | requests/s | x /health | p50 ms | p99 ms | errors |");
    println!("|---|---:|---:|---:|---:|---:|");
    for p in &phases {
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
            p.name,
            p.rate(),
            p.rate() / health_rate,
            p.p50_ms,
            p.p99_ms,
            p.errors
        );
    }
    println!();
    println!("| Ed25519 verify on this machine (1 core) | per second |");
    println!("|---|---:|");
    println!("| one at a time | {single:.0} |");
    println!("| in batches of 64 | {batch:.0} |");
    println!();
    println!(
        "heartbeats/s as a share of the one-at-a-time verify rate: {:.2}",
        phases[2].rate() / single
    );
}
