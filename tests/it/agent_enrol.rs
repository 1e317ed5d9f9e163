//! Issue 17's done-when: a node enrols with a code over TLS, pinning the appliance's
//! certificate by fingerprint, runs as the unit runs it (`agent run --config`), keeps
//! verified receipts across several epochs, and catches tampering (an edited receipts
//! file, a proof key that is not the one pinned at enrolment).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{command, paginate_all, run_cli, wait_until, TestServer, TRON_ADDRESS};

async fn start() -> TestServer {
    TestServer::start_with(&[
        ("POOT_CALCULATION_INTERVAL", "2"),
        ("HEARTBEAT_TIMEOUT", "2"),
        ("REWARD_USDT_PER_HOUR", "36"),
    ])
    .await
}

async fn make_code(server: &TestServer, token: &str) -> (String, String) {
    let (status, created) = server
        .call(
            "POST",
            "/api/v1/enrollments",
            Some(token),
            Some(json!({"name": "edge-1", "payout_address": TRON_ADDRESS})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    (
        created["code"].as_str().unwrap().to_string(),
        created["tls_fingerprint"].as_str().unwrap().to_string(),
    )
}

/// The node's side: its own directory for agent.toml and the state directory.
struct Node {
    dir: tempfile::TempDir,
}

impl Node {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn config(&self) -> PathBuf {
        self.dir.path().join("etc/agent.toml")
    }
    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    fn receipts(&self) -> PathBuf {
        self.state_dir().join("receipts")
    }
    fn cli(&self, args: &[&str]) -> Output {
        run_cli(self.dir.path(), &[], args)
    }
    fn agent(&self, sub: &str, extra: &[&str]) -> Output {
        let config = self.config();
        let mut args = vec!["agent", sub, "--config", config.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.cli(&args)
    }
    fn enroll(&self, server: &str, code: &str, fingerprint: &str, extra: &[&str]) -> Output {
        let config = self.config();
        let state = self.state_dir();
        let mut args = vec![
            "agent",
            "enroll",
            "--server",
            server,
            "--code",
            code,
            "--fingerprint",
            fingerprint,
            "--config",
            config.to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--interval",
            "1s",
        ];
        args.extend_from_slice(extra);
        self.cli(&args)
    }
    /// `agent run --config`, as lucid-node-agent.service starts it, with systemd's
    /// notification socket pointed at `notify`.
    fn run(&self, notify: &Path) -> Child {
        command(
            self.dir.path(),
            &[("NOTIFY_SOCKET".into(), notify.display().to_string())],
        )
        .args(["agent", "run", "--config", self.config().to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn agent run")
    }
    fn receipt_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(self.receipts())
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn stop(mut child: Child) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

/// Rewrites one `name = "value"` line of agent.toml.
fn set_in_config(path: &Path, name: &str, value: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = String::new();
    for line in text.lines() {
        if line.starts_with(&format!("{name} = ")) {
            out.push_str(&format!("{name} = \"{value}\"\n"));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    std::fs::write(path, out).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enrolled_agent_keeps_verified_receipts_across_epochs_and_catches_tampering() {
    let server = start().await;
    let op = server.cli_token("operator", "op-edge");
    let (code, fingerprint) = make_code(&server, &op).await;
    let node = Node::new();

    let out = node.enroll(&server.base, &code, &fingerprint, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout
            .trim_end()
            .ends_with("systemctl enable --now lucid-node-agent"),
        "{stdout}"
    );
    let key = node.state_dir().join("node.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let config = std::fs::read_to_string(node.config()).unwrap();
    for field in [
        "server = ",
        "node_id = \"node_",
        "fingerprint = \"sha256:",
        "proof_public_key = ",
        "state_dir = ",
        "interval = \"1s\"",
    ] {
        assert!(config.contains(field), "{field} missing in:\n{config}");
    }
    // The node is the operator's, with the code's payout address.
    let nodes = paginate_all(&server, "/api/v1/nodes", &op).await;
    assert_eq!(nodes.len(), 1);
    let node_id = nodes[0]["node_id"].as_str().unwrap().to_string();
    assert!(config.contains(&node_id));
    assert_eq!(nodes[0]["payout_address"], TRON_ADDRESS);
    assert_eq!(nodes[0]["name"], "edge-1");

    // Enrolling again is refused without --force, and changes nothing.
    let (code2, _) = make_code(&server, &op).await;
    let out = node.enroll(&server.base, &code2, &fingerprint, &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("--force"), "{}", text(&out));
    assert!(std::fs::read_to_string(node.config())
        .unwrap()
        .contains(&node_id));

    // Run it as the unit does; READY=1 arrives once a heartbeat was accepted.
    let notify_path = node.dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let agent = node.run(&notify_path);
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).expect("no READY=1 from the agent");
    assert!(
        String::from_utf8_lossy(&buf[..n]).contains("READY=1"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    let (_, record) = server
        .call("GET", &format!("/api/v1/nodes/{node_id}"), Some(&op), None)
        .await;
    assert!(record["last_heartbeat_at"].is_string(), "{record}");

    // Several epochs close; each proof is fetched, verified and kept.
    let kept = wait_until(Duration::from_secs(60), async || {
        let lines = node.receipt_lines();
        if lines.len() >= 3 {
            Ok(lines)
        } else {
            Err(format!("{} receipts so far", lines.len()))
        }
    })
    .await;
    for (i, r) in kept.iter().enumerate() {
        assert_eq!(r["proof"]["node_id"], node_id.as_str());
        assert!(r.get("problems").is_none(), "receipt {i} flagged: {r}");
        // The proof counts at least every heartbeat the appliance acknowledged.
        assert!(
            r["proof"]["heartbeat_count"].as_u64().unwrap()
                >= r["acknowledged_heartbeats"].as_u64().unwrap(),
            "{r}"
        );
        if i > 0 {
            assert_eq!(
                r["proof"]["prev_proof_hash"],
                kept[i - 1]["proof"]["proof_hash"]
            );
        }
    }
    assert!(kept
        .iter()
        .any(|r| r["acknowledged_heartbeats"].as_u64().unwrap() > 0));
    // They are the appliance's proofs, as anyone can fetch them.
    let (_, published) = server
        .call(
            "GET",
            &format!("/api/v1/poot/{node_id}?epoch={}", kept[0]["proof"]["epoch"]),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(published, kept[0]["proof"]);

    let out = node.agent("status", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let status = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        status.contains(&node_id) && status.contains("health:            ok"),
        "{status}"
    );
    assert!(status.contains("balance:"), "{status}");

    let out = node.agent("receipts", &["--verify"]);
    assert!(out.status.success(), "{}", text(&out));
    let out = node.agent("receipts", &["--format", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        summary["summary"]["epochs"].as_u64().unwrap() >= 3,
        "{summary}"
    );
    assert!(summary["summary"]["operational_seconds"].as_u64().unwrap() > 0);
    let out = node.agent("receipts", &["--format", "csv", "--since", "2000-01-01"]);
    let csv = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(csv.starts_with("epoch,window_start"), "{csv}");
    assert!(csv.lines().count() >= 4, "{csv}");
    let out = node.agent("receipts", &["--format", "csv", "--since", "2999-01-01"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    stop(agent);

    // An edited receipts file no longer verifies.
    let original = std::fs::read_to_string(node.receipts()).unwrap();
    let mut lines: Vec<Value> = node.receipt_lines();
    lines[1]["proof"]["credits_usdt"] = json!("1000.000000");
    let forged: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(node.receipts(), forged).unwrap();
    let out = node.agent("receipts", &["--verify"]);
    assert!(!out.status.success(), "{}", text(&out));
    // A receipt taken out breaks the chain.
    let mut lines: Vec<Value> = serde_json::Deserializer::from_str(&original)
        .into_iter::<Value>()
        .map(Result::unwrap)
        .collect();
    lines.remove(1);
    let gap: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(node.receipts(), gap).unwrap();
    let out = node.agent("receipts", &["--verify"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("link"), "{}", text(&out));
    std::fs::write(node.receipts(), &original).unwrap();
    assert!(node.agent("receipts", &["--verify"]).status.success());

    // Proofs signed by a key other than the pinned one: refused, not kept, reported.
    let other_key = crate::common::public_b64(&crate::common::node_key());
    set_in_config(&node.config(), "proof_public_key", &other_key);
    let before = node.receipt_lines().len();
    let agent = node.run(&notify_path);
    let status = wait_until(Duration::from_secs(60), async || {
        let out = node.agent("status", &[]);
        let t = text(&out);
        if !out.status.success() && t.contains("does not verify") {
            Ok(t)
        } else {
            Err(t)
        }
    })
    .await;
    assert!(status.contains("problem:"), "{status}");
    stop(agent);
    assert_eq!(node.receipt_lines().len(), before);
}

#[tokio::test]
async fn a_wrong_fingerprint_is_refused_before_the_code_is_used_and_status_reports_problems() {
    let server = start().await;
    let op = server.cli_token("operator", "op-pin");
    let (code, fingerprint) = make_code(&server, &op).await;
    let node = Node::new();
    let wrong = format!("sha256:{}", "00".repeat(32));
    let out = node.enroll(&server.base, &code, &wrong, &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("not the pinned"), "{}", text(&out));
    assert!(!node.config().exists());
    assert!(!node.state_dir().join("node.key").exists());
    // A bad code leaves no key behind either.
    let out = node.enroll(&server.base, "lne_nope", &fingerprint, &[]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("invalid-enrollment-code"),
        "{}",
        text(&out)
    );
    assert!(!node.state_dir().join("node.key").exists());
    // The code is still good.
    let out = node.enroll(&server.base, &code, &fingerprint, &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(paginate_all(&server, "/api/v1/nodes", &op).await.len(), 1);
    // --force makes a new node with a new key.
    let first_key = std::fs::read(node.state_dir().join("node.key")).unwrap();
    let (code2, _) = make_code(&server, &op).await;
    let out = node.enroll(&server.base, &code2, &fingerprint, &["--force"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_ne!(
        std::fs::read(node.state_dir().join("node.key")).unwrap(),
        first_key
    );
    assert_eq!(paginate_all(&server, "/api/v1/nodes", &op).await.len(), 2);
    // Status of a node whose agent never ran: not healthy.
    let out = node.agent("status", &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("no heartbeat accepted yet"),
        "{}",
        text(&out)
    );
    // The appliance gone: said so, and still non-zero.
    let mut server = server;
    server.kill();
    let out = node.agent("status", &[]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("unreachable"), "{}", text(&out));
    // --offline asks nobody: only the missing heartbeat is reported.
    let out = node.agent("status", &["--offline"]);
    assert!(!out.status.success());
    assert!(!text(&out).contains("unreachable"), "{}", text(&out));
}

/// Forwards everything to the real appliance over its TLS and hands back its answers,
/// except that proofs come back with their credits raised: an appliance (or anything on
/// the path) serving a tampered proof, with no fake server behind it. Plain HTTP towards
/// the agent (`--server http://...` overrides agent.toml's server).
async fn tampering_relay(server: &TestServer) -> String {
    use axum::response::IntoResponse;
    let upstream = server.base.clone();
    let client = server.client.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let upstream = upstream.clone();
        let client = client.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
            let path = parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_default();
            let mut forward = client
                .request(parts.method.clone(), format!("{upstream}{path}"))
                .body(body.to_vec());
            for name in ["authorization", "content-type"] {
                if let Some(v) = parts.headers.get(name) {
                    forward = forward.header(name, v);
                }
            }
            let resp = forward.send().await.unwrap();
            let status = resp.status();
            let content_type = resp
                .headers()
                .get("content-type")
                .cloned()
                .unwrap_or(axum::http::HeaderValue::from_static("application/json"));
            let mut bytes = resp.bytes().await.unwrap().to_vec();
            if parts.uri.path().starts_with("/api/v1/poot/") && status.is_success() {
                let mut doc: Value = serde_json::from_slice(&bytes).unwrap();
                let raise = |p: &mut Value| p["credits_usdt"] = json!("999.000000");
                match doc.get_mut("items").and_then(Value::as_array_mut) {
                    Some(items) => items.iter_mut().for_each(raise),
                    None => raise(&mut doc),
                }
                bytes = serde_json::to_vec(&doc).unwrap();
            }
            (
                status,
                [(axum::http::header::CONTENT_TYPE, content_type)],
                bytes,
            )
                .into_response()
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_proof_served_to_the_agent_is_refused_and_never_kept() {
    let server = start().await;
    let op = server.cli_token("operator", "op-mitm");
    let (code, fingerprint) = make_code(&server, &op).await;
    let node = Node::new();
    let out = node.enroll(&server.base, &code, &fingerprint, &[]);
    assert!(out.status.success(), "{}", text(&out));
    let relay = tampering_relay(&server).await;
    let notify_path = node.dir.path().join("notify.sock");
    let _notify = UnixDatagram::bind(&notify_path).unwrap();

    // Through the relay: heartbeats pass, every proof arrives with forged credits.
    let agent = command(
        node.dir.path(),
        &[("NOTIFY_SOCKET".into(), notify_path.display().to_string())],
    )
    .args([
        "agent",
        "run",
        "--config",
        node.config().to_str().unwrap(),
        "--server",
        &relay,
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let status = wait_until(Duration::from_secs(60), async || {
        let out = node.agent("status", &["--offline"]);
        let t = text(&out);
        if !out.status.success() && t.contains("proof_hash does not match") {
            Ok(t)
        } else {
            Err(t)
        }
    })
    .await;
    stop(agent);
    assert!(status.contains("problem:"), "{status}");
    assert!(node.receipt_lines().is_empty(), "a forged proof was kept");

    // Straight to the appliance: the same epochs verify and are kept; status is healthy.
    let agent = node.run(&notify_path);
    let kept = wait_until(Duration::from_secs(60), async || {
        let lines = node.receipt_lines();
        if lines.len() >= 2 {
            Ok(lines)
        } else {
            Err(format!("{} receipts so far", lines.len()))
        }
    })
    .await;
    assert!(kept
        .iter()
        .all(|r| r["proof"]["credits_usdt"] != "999.000000"));
    wait_until(Duration::from_secs(30), async || {
        let out = node.agent("status", &[]);
        if out.status.success() {
            Ok(())
        } else {
            Err(text(&out))
        }
    })
    .await;
    stop(agent);
    assert!(node.agent("receipts", &["--verify"]).status.success());
}
