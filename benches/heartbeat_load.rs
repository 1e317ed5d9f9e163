//! Durable, signature-checked heartbeats over HTTPS keep-alive against the real binary,
//! compared as ratios with `GET /health` and a node read measured in the same run, and with
//! the Ed25519 batch-verification rate of this machine measured in the same run (the
//! ceiling). The load generator runs in this process and shares the machine's cores with
//! the server: the table shows how much CPU each side spent per request.
//!
//! `cargo bench --bench heartbeat_load` (CONNECTIONS=64, SECONDS=5 by default).
//! `PERF_RECORD=/tmp/hb.perf.data` also records `perf record -a -g` during the heartbeat
//! phase (whole machine: server threads, load generator, kernel).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use lucid_node_management::app::verifier::MAX_BATCH;
use lucid_node_management::crypto::signatures::{verify_signatures, SignedMessages};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_lucid-node-management");

/// The server to measure: this build's binary, or the command in `BENCH_SERVER`, e.g.
/// `BENCH_SERVER="qemu-aarch64-static target/aarch64-unknown-linux-musl/release/lucid-node-management"`
/// for the aarch64 build under qemu (issue 7 wants its figures as a sanity check only:
/// emulation makes them no measure of a board).
fn server_command() -> Command {
    match std::env::var("BENCH_SERVER") {
        Ok(cmd) if !cmd.trim().is_empty() => {
            let mut words = cmd.split_whitespace();
            let mut c = Command::new(words.next().unwrap_or_default());
            c.args(words);
            c
        }
        _ => Command::new(BIN),
    }
}

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
    let mut child = server_command()
        .args(["serve", "--port", "0", "--bind", "127.0.0.1"])
        .env("DATA_DIR", dir)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "warn,lucid_node_management=info")
        // Flat out: a closed loop of C connections would otherwise get C heartbeats per
        // commit interval (the linger is measured by benches/flash_wear.rs).
        .env("COMMIT_INTERVAL", "0")
        // Flat out, each node beats far faster than a real one may (HEARTBEAT_MIN_INTERVAL).
        .env("HEARTBEAT_MIN_INTERVAL", "0")
        // Every simulated node logs in from this one address, and beats flat out.
        .env("AUTH_RATE_LIMIT", "0")
        .env("TOKEN_RATE_LIMIT", "0")
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
    let addr = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("listening");
    let cert = std::fs::read(dir.join("tls/cert.pem")).unwrap();
    let out = server_command()
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

/// CPU seconds (user + system) a process has used so far, from `/proc/{pid}/stat`.
fn cpu_seconds(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name;
    // USER_HZ is 100 on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

struct Phase {
    name: &'static str,
    requests: u64,
    errors: u64,
    seconds: f64,
    p50_ms: f64,
    p99_ms: f64,
    server_cpu: f64,
    loadgen_cpu: f64,
}

impl Phase {
    fn rate(&self) -> f64 {
        self.requests as f64 / self.seconds
    }
    fn us_per_request(&self, cpu: f64) -> f64 {
        cpu * 1e6 / self.requests.max(1) as f64
    }
}

/// Runs `make_request(task, i)` from `connections` tasks for `seconds`: closed loop (each
/// connection sends its next request as soon as the answer comes) without `pace`; with
/// `pace`, each connection sends one request per `pace` on a fixed schedule (open loop),
/// and latency counts from the scheduled time, so a late answer also delays the next.
async fn drive<F, Fut>(
    name: &'static str,
    server_pid: &str,
    connections: usize,
    seconds: u64,
    pace: Option<Duration>,
    make_request: F,
) -> Phase
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let make_request = Arc::new(make_request);
    let errors = Arc::new(AtomicU64::new(0));
    let (server_cpu0, loadgen_cpu0) = (cpu_seconds(server_pid), cpu_seconds("self"));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for t in 0..connections {
        let make_request = make_request.clone();
        let errors = errors.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(100_000);
            let mut i = 0u64;
            // Paced connections start spread over one period.
            let first = started + pace.unwrap_or_default() * t as u32 / connections as u32;
            while Instant::now() < deadline {
                let t0 = match pace {
                    Some(pace) => {
                        let at = first + pace * i as u32;
                        if at >= deadline {
                            break;
                        }
                        tokio::time::sleep_until(at.into()).await;
                        at
                    }
                    None => Instant::now(),
                };
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
    let server_cpu = cpu_seconds(server_pid) - server_cpu0;
    let loadgen_cpu = cpu_seconds("self") - loadgen_cpu0;
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
        server_cpu,
        loadgen_cpu,
    }
}

/// Ed25519 verification rates on one core, measured the way the server checks heartbeat
/// signatures: one at a time (`verify_strict`) and in full batches of the verifier thread
/// (`MAX_BATCH`, through the same `verify_signatures`).
fn verify_rates(seconds: f64) -> (f64, f64) {
    let signed = SignedMessages::sign((0..MAX_BATCH).map(|i| {
        let message =
            format!("lucid-hb-v1|node_x|{i}|2026-01-01T00:00:00Z|1|2048|0.25|256").into_bytes();
        (SigningKey::from_bytes(&[i as u8; 32]), message)
    }));
    let checks = signed.checks();
    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < seconds {
        for check in &checks {
            assert!(check.verify_one());
        }
        n += MAX_BATCH as u64;
    }
    let single = n as f64 / t0.elapsed().as_secs_f64();

    let t0 = Instant::now();
    let mut n = 0u64;
    while t0.elapsed().as_secs_f64() < seconds {
        assert!(verify_signatures(&checks).iter().all(|ok| *ok));
        n += MAX_BATCH as u64;
    }
    (single, n as f64 / t0.elapsed().as_secs_f64())
}

/// Milliseconds for one 4 KiB write + fdatasync in `dir`, the median of 50.
fn fsync_ms(dir: &std::path::Path) -> f64 {
    let mut f = std::fs::File::create(dir.join("fsync-probe")).unwrap();
    let mut times = Vec::new();
    for _ in 0..50 {
        let t0 = Instant::now();
        f.write_all(&[7u8; 4096]).unwrap();
        f.sync_data().unwrap();
        times.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    times[times.len() / 2]
}

/// (sum, count) of a Prometheus histogram in the server's `/metrics`.
async fn histogram(server: &Server, name: &str) -> (f64, f64) {
    let text = server
        .client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |suffix: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}_{suffix} ")))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (value("sum"), value("count"))
}

const SENT_AT: &str = "2026-01-01T00:00:00Z";

/// The JSON body of heartbeat `seq` of node `id`, signed.
fn heartbeat_body(id: &str, key: &SigningKey, seq: u64) -> String {
    let canonical = format!("lucid-hb-v1|{id}|{seq}|{SENT_AT}|1|2048|0.25|256");
    let sig = B64.encode(key.sign(canonical.as_bytes()).to_bytes());
    format!(
        r#"{{"seq":{seq},"sent_at":"{SENT_AT}","sessions_active":1,"bytes_relayed":2048,"cpu_load":0.25,"mem_used_mb":256,"signature":"{sig}"}}"#
    )
}

struct Node {
    id: String,
    key: SigningKey,
    token: String,
    client: reqwest::Client,
    heartbeat_url: String,
    read_url: String,
    /// Heartbeats signed before the phase starts (a real node signs on its own machine,
    /// not on the server's cores); past the end they are signed on the fly.
    presigned: Vec<String>,
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
    let perf_out = std::env::var("PERF_RECORD").ok();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let dir = tempfile::tempdir().unwrap();
    let server = boot(dir.path());
    let server_pid = server.child.id().to_string();
    eprintln!("server pid {server_pid}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (phases, batches, commits) = rt.block_on(async {
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
            nodes.push(Node {
                heartbeat_url: format!("{}/api/v1/nodes/{id}/heartbeat", server.base),
                read_url: format!("{}/api/v1/nodes/{id}", server.base),
                id,
                key,
                token: tok["token"].as_str().unwrap().to_string(),
                client: client(&server.cert),
                presigned: Vec::new(),
            });
        }
        let base = Arc::new(server.base.clone());
        let admin = Arc::new(server.admin.clone());

        let n = Arc::new(nodes);
        let (nn, b) = (n.clone(), base.clone());
        let health = drive("GET /health", &server_pid, connections, seconds, None, move |t, _| {
            let (n, b) = (nn.clone(), b.clone());
            async move {
                matches!(n[t].client.get(format!("{b}/health")).send().await, Ok(r) if r.status() == 200)
            }
        }).await;

        let (nn, a) = (n.clone(), admin.clone());
        let reads = drive("GET /api/v1/nodes/{id}", &server_pid, connections, seconds, None, move |t, _| {
            let (n, a) = (nn.clone(), a.clone());
            async move {
                matches!(n[t].client.get(&n[t].read_url).bearer_auth(a.as_str()).send().await, Ok(r) if r.status() == 200)
            }
        }).await;

        // Sign enough heartbeats for both heartbeat phases even at the /health rate.
        let mut nodes = Arc::try_unwrap(n).ok().expect("phases are over");
        let per_node = (health.rate() * seconds as f64 * 1.6 / connections as f64) as u64 + 64;
        std::thread::scope(|s| {
            for chunk in nodes.chunks_mut(connections.div_ceil(cores.max(1))) {
                s.spawn(move || {
                    for node in chunk {
                        node.presigned = (1..=per_node).map(|seq| heartbeat_body(&node.id, &node.key, seq)).collect();
                    }
                });
            }
        });
        let n = Arc::new(nodes);

        let (batches0, commits0) = (
            histogram(&server, "lucid_writer_batch_size").await,
            histogram(&server, "lucid_writer_commit_seconds").await,
        );
        let perf = perf_out.as_ref().map(|out| {
            Command::new("perf")
                .args(["record", "-a", "-g", "-F", "999", "-o", out, "--", "sleep", &seconds.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("perf")
        });
        // Each connection's heartbeats carry seq numbers from where the last phase ended.
        let next_seq: Arc<Vec<AtomicU64>> = Arc::new((0..connections).map(|_| AtomicU64::new(1)).collect());
        let send = {
            let (n, next_seq) = (n.clone(), next_seq.clone());
            move |t: usize, _i: u64| {
                let (n, next_seq) = (n.clone(), next_seq.clone());
                async move {
                    let node = &n[t];
                    let seq = next_seq[t].fetch_add(1, Ordering::Relaxed);
                    let body = match node.presigned.get(seq as usize - 1) {
                        Some(body) => body.clone(),
                        None => heartbeat_body(&node.id, &node.key, seq),
                    };
                    let resp = node.client
                        .post(&node.heartbeat_url)
                        .bearer_auth(&node.token)
                        .header("content-type", "application/json")
                        .body(body)
                        .send()
                        .await;
                    matches!(resp, Ok(r) if r.status() == 202)
                }
            }
        };
        let heartbeats = drive("POST heartbeat (durable, signed)", &server_pid, connections, seconds, None, send.clone()).await;
        if let Some(mut p) = perf {
            let _ = p.wait();
        }
        let (batches1, commits1) = (
            histogram(&server, "lucid_writer_batch_size").await,
            histogram(&server, "lucid_writer_commit_seconds").await,
        );
        let batches = (batches1.0 - batches0.0, batches1.1 - batches0.1);
        let commits = (commits1.0 - commits0.0, commits1.1 - commits0.1);
        // The same heartbeats offered at the target rate (0.30x /health), open loop: the
        // latency of the service at that rate rather than of 64 connections queueing.
        let pace = Duration::from_secs_f64(connections as f64 / (0.30 * health.rate()));
        let paced = drive("POST heartbeat at 0.30x /health, paced", &server_pid, connections, seconds, Some(pace), send).await;
        (vec![health, reads, heartbeats, paced], batches, commits)
    });
    drop(server);
    let fsync = fsync_ms(dir.path());
    let (single, batch) = verify_rates(2.0);
    let health_rate = phases[0].rate();
    let hb = &phases[2];

    println!(
        "{connections} keep-alive HTTPS/1.1 connections, {seconds} s per phase. The load generator \
         runs in this process and shares the machine's {cores} cores with the server (its CPU per \
         request is in the table); heartbeat signatures are made before the phase starts."
    );
    if let Ok(cmd) = std::env::var("BENCH_SERVER") {
        println!("Server: `{cmd}` (the Ed25519 rows are this machine's, natively).");
    }
    println!();
    println!("| measure | per second | ratio | p50 ms | p99 ms | server CPU µs/req | load-gen CPU µs/req | errors |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (p, of) in phases
        .iter()
        .zip(["", " of /health", " of /health", " of /health"])
    {
        println!(
            "| {} | {:.0} | {:.2}x{of} | {:.2} | {:.2} | {:.0} | {:.0} | {} |",
            p.name,
            p.rate(),
            p.rate() / health_rate,
            p.p50_ms,
            p.p99_ms,
            p.us_per_request(p.server_cpu),
            p.us_per_request(p.loadgen_cpu),
            p.errors
        );
    }
    println!(
        "| Ed25519 verify one at a time (1 core, `verify_strict`) | {single:.0} | heartbeats {:.2}x of it | | | {:.0} | | |",
        hb.rate() / single,
        1e6 / single
    );
    println!(
        "| Ed25519 verify in batches of {MAX_BATCH} (1 core): the ceiling | {batch:.0} | heartbeats {:.2}x of it | | | {:.0} | | |",
        hb.rate() / batch,
        1e6 / batch
    );
    println!();
    println!(
        "Heartbeat phase: the writer committed {:.0} batches, {:.1} heartbeats per batch on average, \
         {:.2} ms per batch (apply + durable commit); one 4 KiB write + fdatasync on this disk takes {fsync:.2} ms. \
         CPU: server {:.0}%, load generator {:.0}% of {cores} cores.",
        batches.1,
        batches.0 / batches.1.max(1.0),
        commits.0 * 1000.0 / commits.1.max(1.0),
        hb.server_cpu * 100.0 / hb.seconds / cores.max(1) as f64,
        hb.loadgen_cpu * 100.0 / hb.seconds / cores.max(1) as f64,
    );
}
