//! Test harness: boots the real binary on an ephemeral loopback port over real TLS,
//! with a fresh state directory, and talks to it with a real HTTPS client that trusts
//! only the server's own self-signed certificate.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_lucid-node-management");

/// The binary under test: this build's, or the one in `LUCID_TEST_BIN` (scripts/ci-package
/// runs the disk-full tests against the release binary that way).
pub fn bin() -> String {
    std::env::var("LUCID_TEST_BIN")
        .ok()
        .filter(|b| !b.is_empty())
        .unwrap_or_else(|| BIN.to_string())
}

/// A valid TRON address (the USDT contract).
pub const TRON_ADDRESS: &str = "TR7NHqjeKQxGTCi8q8ZY4pL8otSzgjLj6t";

pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub base: String,
    pub client: reqwest::Client,
    pub admin: String,
    env: Vec<(String, String)>,
    child: Option<Child>,
    log: Option<std::thread::JoinHandle<()>>,
}

/// Runs the binary with the test's environment (nothing inherited but PATH).
pub fn command(data_dir: &Path, env: &[(String, String)]) -> Command {
    let mut cmd = Command::new(bin());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATA_DIR", data_dir)
        .env("LOG_FORMAT", "json")
        .env("LOG_LEVEL", "info")
        // Heartbeats commit as soon as the writer is idle unless a test sets its own
        // interval (the default lingers 3 s to save flash; see tests/flash.rs).
        .env("COMMIT_INTERVAL", "0")
        // Tests send heartbeats back to back; tests of pacing set their own interval.
        .env("HEARTBEAT_MIN_INTERVAL", "0")
        // Tests log in and call back to back from one address with one token; the tests
        // of the rate limits set their own (tests/it/rate_limits.rs).
        .env("AUTH_RATE_LIMIT", "0")
        .env("TOKEN_RATE_LIMIT", "0")
        // The tests' webhook receivers listen on loopback, which webhooks may not reach
        // by default (issue 16; tests/it/ssrf.rs sets its own value).
        .env("WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs the command line once against `data_dir` with `env` (stdin closed) and returns its
/// status and what it printed.
pub fn run_cli(data_dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    command(data_dir, &env)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run the binary")
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts with extra environment variables.
    pub async fn start_with(env: &[(&str, &str)]) -> Self {
        Self::start_in(tempfile::tempdir().expect("temp dir"), env).await
    }

    /// Starts with `dir` as the state directory (e.g. one on a small filesystem).
    pub async fn start_in(dir: tempfile::TempDir, env: &[(&str, &str)]) -> Self {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut server = TestServer {
            dir,
            base: String::new(),
            client: reqwest::Client::new(),
            admin: String::new(),
            env,
            child: None,
            log: None,
        };
        server.boot();
        server.admin = server.cli_token("admin", "root");
        server
    }

    /// Changes an environment variable for the next `restart`.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    fn boot(&mut self) {
        let mut child = command(self.dir.path(), &self.env)
            .args(["serve", "--port", "0", "--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn server");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        // Keep draining the log so the server never blocks on a full pipe.
        let log = std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var("TEST_SERVER_LOG").is_ok() {
                    eprintln!("[server] {line}");
                }
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["message"] == "listening" {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(v["addr"].as_str().unwrap_or_default().to_string());
                        }
                    }
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("server did not report listening within 30 s");
        let port = addr.rsplit(':').next().unwrap().to_string();
        let tls = !self
            .env
            .iter()
            .any(|(k, v)| k == "TLS_DISABLE" && v == "true");
        if tls {
            self.base = format!("https://127.0.0.1:{port}");
            let pem = std::fs::read(self.dir.path().join("tls/cert.pem")).expect("server cert");
            self.client = reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
                .tls_built_in_root_certs(false)
                .pool_max_idle_per_host(64)
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
        } else {
            self.base = format!("http://127.0.0.1:{port}");
            self.client = reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap();
        }
        self.child = Some(child);
        self.log = Some(log);
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(log) = self.log.take() {
            let _ = log.join();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status code. Waits on a
    /// blocking thread so this runtime's client connections can still answer the server's
    /// graceful-shutdown handshake (HTTP/2 GOAWAY and PING).
    pub async fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        unsafe_sigterm(child.id());
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .ok()?
            .ok()?;
        if let Some(log) = self.log.take() {
            let _ = log.join();
        }
        status.code()
    }

    /// Starts the binary again on the same state directory (after `kill`/`terminate`).
    pub fn restart(&mut self) {
        self.kill();
        self.boot();
    }

    /// A token from the offline CLI (`token issue`).
    pub fn cli_token(&self, role: &str, subject: &str) -> String {
        self.cli_token_ttl(role, subject, "1h")
    }

    /// A token from the offline CLI with a chosen lifetime (`--ttl`, e.g. `1s`).
    pub fn cli_token_ttl(&self, role: &str, subject: &str, ttl: &str) -> String {
        cli_token_in(self.dir.path(), &self.env, role, subject, ttl)
    }

    /// Credits a node's balance by an admin ledger adjustment.
    pub async fn credit(&self, node_id: &str, amount: &str) {
        let (status, entry) = self
            .call(
                "POST",
                &format!("/api/v1/nodes/{node_id}/ledger"),
                Some(&self.admin),
                Some(json!({"amount_usdt": amount, "reason": "test credit"})),
            )
            .await;
        assert_eq!(status, 201, "{entry}");
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Sends a request with an optional bearer token and JSON body; returns status and body
    /// (JSON, or `Value::Null` when empty / not JSON).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (status, _, body) = self.call_full(method, path, token, body).await;
        (status, body)
    }

    pub async fn call_full(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request failed");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.unwrap_or_default();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, headers, value)
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics_text(&self) -> String {
        let resp = self
            .client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("GET /metrics");
        resp.text().await.expect("metrics body")
    }

    /// Runs `verify` on the state directory (the server must be stopped); asserts it
    /// passes and returns what it printed.
    pub fn verify_offline(&self) -> String {
        let out = command(self.dir.path(), &self.env)
            .arg("verify")
            .output()
            .expect("run verify");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "verify failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    }

    /// Registers a node for `token`'s holder; returns (node json, its signing key).
    /// Sends heartbeat `seq` of `node_id`, signed with `key`, with the node's `token`.
    pub async fn beat(
        &self,
        node_id: &str,
        key: &SigningKey,
        token: &str,
        seq: u64,
    ) -> (u16, Value) {
        self.call(
            "POST",
            &format!("/api/v1/nodes/{node_id}/heartbeat"),
            Some(token),
            Some(heartbeat_body(node_id, key, seq)),
        )
        .await
    }

    pub async fn register_node(&self, token: &str, name: &str) -> (Value, SigningKey) {
        let key = node_key();
        let (status, body) = self
            .call(
                "POST",
                "/api/v1/nodes",
                Some(token),
                Some(json!({"name": name, "public_key": public_b64(&key), "payout_address": TRON_ADDRESS})),
            )
            .await;
        assert_eq!(status, 201, "register failed: {body}");
        (body, key)
    }

    /// Logs a node in by challenge; returns its token.
    pub async fn login_node(&self, node_id: &str, key: &SigningKey) -> String {
        let (status, challenge) = self
            .call(
                "POST",
                "/api/v1/auth/challenge",
                None,
                Some(json!({"node_id": node_id})),
            )
            .await;
        assert_eq!(status, 200, "challenge failed: {challenge}");
        let nonce = challenge["nonce"].as_str().unwrap();
        let (status, body) = self
            .call(
                "POST",
                "/api/v1/auth/token",
                None,
                Some(json!({"node_id": node_id, "nonce": nonce, "signature": sign_login(key, nonce)})),
            )
            .await;
        assert_eq!(status, 200, "login failed: {body}");
        body["token"].as_str().unwrap().to_string()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn unsafe_sigterm(pid: u32) {
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

/// A USDT amount as the API writes it (`"0.004027"`), in micro-USDT.
pub fn usdt_micros(v: &Value) -> i64 {
    v.as_str().unwrap().replace('.', "").parse::<i64>().unwrap()
}

/// The node as an admin reads it (`GET /nodes/{id}`, which must answer 200).
pub async fn node_json(server: &TestServer, node_id: &str) -> Value {
    let (status, body) = server
        .call(
            "GET",
            &format!("/api/v1/nodes/{node_id}"),
            Some(&server.admin),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// A node's payouts and balance as an admin reads them (`GET /payouts/{id}`, which must
/// answer 200).
pub async fn payouts_json(server: &TestServer, node_id: &str) -> Value {
    let (status, body) = server
        .call(
            "GET",
            &format!("/api/v1/payouts/{node_id}"),
            Some(&server.admin),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// A node's proofs (`GET /poot/{id}/history`, up to 500), as the admin sees them.
pub async fn proof_history(server: &TestServer, node_id: &str) -> Vec<Value> {
    let (status, page) = server
        .call(
            "GET",
            &format!("/api/v1/poot/{node_id}/history?limit=500"),
            Some(&server.admin),
            None,
        )
        .await;
    assert_eq!(status, 200, "{page}");
    page["items"].as_array().unwrap().clone()
}

/// How often `wait_until` looks again.
pub const POLL: Duration = Duration::from_millis(100);

/// Runs `check` every `POLL` until it returns `Ok`, and returns that value; after `timeout`
/// fails with the last `Err`, which says what was seen instead.
pub async fn wait_until<T, E: std::fmt::Display>(
    timeout: Duration,
    check: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    wait_until_every(timeout, POLL, check).await
}

/// `wait_until`, looking again every `every`.
pub async fn wait_until_every<T, E: std::fmt::Display>(
    timeout: Duration,
    every: Duration,
    check: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    poll_until(timeout, every, check)
        .await
        .unwrap_or_else(|seen| panic!("still not so after {timeout:?}: {seen}"))
}

/// Runs `check` every `every` until it returns `Ok`; after `timeout` hands back its last
/// `Err` instead of failing (for a caller that stops a process first, or asserts on what
/// it saw).
pub async fn poll_until<T, E>(
    timeout: Duration,
    every: Duration,
    mut check: impl AsyncFnMut() -> Result<T, E>,
) -> Result<T, E> {
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(value) => return Ok(value),
            Err(seen) if Instant::now() >= deadline => return Err(seen),
            Err(_) => tokio::time::sleep(every).await,
        }
    }
}

/// Every page of the list at `path` (which carries its own query, e.g. `?limit=500`) as
/// `token` reads it, following `next_cursor` to the end; each page must answer 200.
pub async fn pages_of(server: &TestServer, path: &str, token: &str) -> Vec<Value> {
    /// More pages than any test makes: the cursor went round in a circle.
    const MAX_PAGES: usize = 10_000;
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut pages = Vec::new();
    let mut url = path.to_string();
    loop {
        let (status, page) = server.call("GET", &url, Some(token), None).await;
        assert_eq!(status, 200, "{url}: {page}");
        let next = page["next_cursor"]
            .as_str()
            .map(|c| format!("{path}{sep}cursor={c}"));
        pages.push(page);
        match next {
            Some(next) => url = next,
            None => return pages,
        }
        assert!(pages.len() < MAX_PAGES, "pagination of {path} does not end");
    }
}

/// Every item of the list at `path` as `token` reads it, all pages in order.
pub async fn paginate_all(server: &TestServer, path: &str, token: &str) -> Vec<Value> {
    pages_of(server, path, token)
        .await
        .iter()
        .flat_map(|page| page["items"].as_array().unwrap().iter().cloned())
        .collect()
}

/// Issues a token with the offline CLI against `data_dir` (its last word on stdout).
pub fn cli_token_in(
    data_dir: &Path,
    env: &[(String, String)],
    role: &str,
    subject: &str,
    ttl: &str,
) -> String {
    let out = command(data_dir, env)
        .args([
            "token",
            "issue",
            "--role",
            role,
            "--subject",
            subject,
            "--ttl",
            ttl,
        ])
        .output()
        .expect("run token issue");
    assert!(
        out.status.success(),
        "token issue failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_string()
}

/// A heartbeat as a node sends it, signed over API.md's canonical bytes (cpu_load is
/// written as 0.25 in both the signed text and the JSON).
pub fn heartbeat_body(node_id: &str, key: &SigningKey, seq: u64) -> Value {
    let sent_at = "2026-01-01T00:00:00Z";
    let canonical = format!("lucid-hb-v1|{node_id}|{seq}|{sent_at}|2|1024|0.25|300");
    let signature = B64.encode(key.sign(canonical.as_bytes()).to_bytes());
    json!({"seq": seq, "sent_at": sent_at, "sessions_active": 2, "bytes_relayed": 1024,
           "cpu_load": 0.25, "mem_used_mb": 300, "signature": signature})
}

pub fn node_key() -> SigningKey {
    let mut seed = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
    SigningKey::from_bytes(&seed)
}

pub fn public_b64(key: &SigningKey) -> String {
    B64.encode(key.verifying_key().to_bytes())
}

pub fn sign_login(key: &SigningKey, nonce: &str) -> String {
    B64.encode(
        key.sign(format!("lucid-auth-v1:{nonce}").as_bytes())
            .to_bytes(),
    )
}

/// Path to a file in the server's state directory.
pub fn state_file(server: &TestServer, rel: &str) -> PathBuf {
    server.data_dir().join(rel)
}

/// Asserts a problem+json answer with the given status and type.
pub fn assert_problem(status: u16, body: &Value, want_status: u16, want_type: &str) {
    assert_eq!(status, want_status, "unexpected status, body: {body}");
    assert_eq!(body["type"], want_type, "unexpected problem type: {body}");
    assert_eq!(body["status"], want_status, "problem status field: {body}");
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
}

// ---- the node agent ----

/// Writes a node key with `keygen`; returns (key path, public key b64).
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let out = run_cli(dir, &[], &["keygen", "--out", path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    (path, public)
}

/// Registers a node whose key was written by `keygen`; returns (node_id, key path).
pub async fn register_keygen_node(server: &TestServer, name: &str) -> (String, PathBuf) {
    let (key, public) = keygen(server.data_dir(), &format!("{name}.key"));
    let (status, body) = server
        .call(
            "POST",
            "/api/v1/nodes",
            Some(&server.admin),
            Some(json!({"name": name, "public_key": public, "payout_address": TRON_ADDRESS})),
        )
        .await;
    assert_eq!(status, 201, "register failed: {body}");
    (body["node_id"].as_str().unwrap().to_string(), key)
}

pub fn spawn_agent(data_dir: &Path, args: &[&str]) -> Child {
    command(data_dir, &[])
        .arg("agent")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn agent")
}

/// The server's self-signed certificate, for `agent --ca-cert`.
pub fn cert(server: &TestServer) -> String {
    server.data_dir().join("tls/cert.pem").display().to_string()
}

// ---- webhook receivers ----

/// One POST as a `WebhookReceiver` got it, with the status it answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: axum::http::HeaderMap,
    pub body: axum::body::Bytes,
    pub answered: u16,
}

impl Received {
    /// A header's value ("" when absent or not text).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    /// The body as JSON (`Value::Null` when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    /// Whether `X-Lucid-Signature` is `sha256=` and the HMAC-SHA256 of the body under
    /// `secret`, as the server signs alerts and payout requests.
    pub fn signed_with(&self, secret: &str) -> bool {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(&self.body);
        let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        self.header("x-lucid-signature") == expected
    }
}

/// What a `WebhookReceiver` answers to a POST.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: AnswerBody,
    /// How long it waits before answering (after recording the request).
    pub delay: Duration,
}

#[derive(Debug, Clone)]
pub enum AnswerBody {
    Empty,
    /// `text/plain; charset=utf-8`
    Text(String),
    /// `application/json`
    Json(Value),
}

impl Answer {
    /// `status` with an empty body.
    pub fn status(status: u16) -> Self {
        Answer {
            status,
            body: AnswerBody::Empty,
            delay: Duration::ZERO,
        }
    }

    pub fn text(status: u16, body: &str) -> Self {
        Answer {
            body: AnswerBody::Text(body.to_string()),
            ..Answer::status(status)
        }
    }

    pub fn json(status: u16, body: Value) -> Self {
        Answer {
            body: AnswerBody::Json(body),
            ..Answer::status(status)
        }
    }

    /// The same answer, given only after `delay`.
    pub fn after(self, delay: Duration) -> Self {
        Answer { delay, ..self }
    }
}

type Answering = Arc<dyn Fn(&Received) -> Answer + Send + Sync>;

#[derive(Clone)]
struct ReceiverState {
    received: Arc<Mutex<Vec<Received>>>,
    answering: Arc<Mutex<Answering>>,
}

/// A webhook receiver on a loopback port: records every POST to its path (headers, body,
/// what it answered) and answers as it is told.
pub struct WebhookReceiver {
    /// Where to POST (`http://127.0.0.1:{port}{path}`).
    pub url: String,
    state: ReceiverState,
}

impl WebhookReceiver {
    /// Answers every POST to `path` with `answer`.
    pub async fn start(path: &str, answer: Answer) -> Self {
        Self::answering(path, move |_| answer.clone()).await
    }

    /// Answers each POST to `path` with what `answer` says for it (called before the
    /// request is recorded, once per request).
    pub async fn answering(
        path: &str,
        answer: impl Fn(&Received) -> Answer + Send + Sync + 'static,
    ) -> Self {
        let state = ReceiverState {
            received: Arc::default(),
            answering: Arc::new(Mutex::new(Arc::new(answer))),
        };
        let app = axum::Router::new()
            .route(path, axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}{path}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        WebhookReceiver { url, state }
    }

    /// From now on answers every POST with `answer`.
    pub fn answer_with(&self, answer: Answer) {
        *self.state.answering.lock().unwrap() = Arc::new(move |_| answer.clone());
    }

    /// Every POST so far, in the order they came.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// How many POSTs came so far.
    pub fn count(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }
}

async fn receive(
    axum::extract::State(state): axum::extract::State<ReceiverState>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut got = Received {
        headers,
        body,
        answered: 0,
    };
    let answering = state.answering.lock().unwrap().clone();
    let answer = answering(&got);
    got.answered = answer.status;
    state.received.lock().unwrap().push(got);
    if !answer.delay.is_zero() {
        tokio::time::sleep(answer.delay).await;
    }
    let status = axum::http::StatusCode::from_u16(answer.status).unwrap();
    match answer.body {
        AnswerBody::Empty => status.into_response(),
        AnswerBody::Text(text) => (status, text).into_response(),
        AnswerBody::Json(value) => (status, axum::Json(value)).into_response(),
    }
}
