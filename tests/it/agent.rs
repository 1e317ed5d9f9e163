//! The node agent (`lucid-node-management agent`) as a black box: the real binary against
//! the real server over TLS, trusting only the server's self-signed certificate.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use crate::common::{
    cert, keygen, node_json, register_keygen_node, run_cli, spawn_agent, TestServer,
};

/// Waits up to `limit` for the agent to exit on its own (SIGKILL after that); returns
/// its status (None if it had to be killed) and its whole stderr.
fn wait_agent(mut child: Child, limit: Duration) -> (Option<ExitStatus>, String) {
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (status, reader.join().unwrap())
}

/// The agent's one-line reason: the last non-empty stderr line.
fn last_line(stderr: &str) -> &str {
    stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
}

fn sigterm(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
}

#[tokio::test]
async fn agent_logs_in_with_a_keygen_key() {
    let server = TestServer::start().await;
    let (node_id, key) = register_keygen_node(&server, "agent-login").await;
    let cert = cert(&server);
    let child = spawn_agent(
        server.data_dir(),
        &[
            "--server",
            &server.base,
            "--node-id",
            &node_id,
            "--key",
            key.to_str().unwrap(),
            "--ca-cert",
            &cert,
            "--interval",
            "1s",
            "--max-heartbeats",
            "1",
        ],
    );
    let (status, stderr) =
        tokio::task::spawn_blocking(move || wait_agent(child, Duration::from_secs(30)))
            .await
            .unwrap();
    assert!(stderr.contains("logged in"), "no login in:\n{stderr}");
    // Until the heartbeat route exists the agent stops at its 404 with a reason; once it
    // exists the one heartbeat is accepted and the agent exits 0. Either way it exits.
    let status = status.unwrap_or_else(|| panic!("agent did not exit:\n{stderr}"));
    if !status.success() {
        let line = last_line(&stderr);
        assert!(
            line.starts_with("error: ") && line.contains("404"),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn agent_exits_with_a_reason_for_a_wrong_node() {
    let server = TestServer::start().await;
    let (node_a, key_a) = register_keygen_node(&server, "agent-a").await;
    let (node_b, _) = register_keygen_node(&server, "agent-b").await;
    let cert = cert(&server);
    let key_a = key_a.to_str().unwrap().to_string();
    let cases = [
        // An id the server does not know.
        ("node_doesnotexist".to_string(), "node_doesnotexist"),
        // Another node's id: the key does not belong to it.
        (node_b.clone(), "does not belong"),
    ];
    for (node_id, want) in cases {
        let child = spawn_agent(
            server.data_dir(),
            &[
                "--server",
                &server.base,
                "--node-id",
                &node_id,
                "--key",
                &key_a,
                "--ca-cert",
                &cert,
                "--interval",
                "1s",
            ],
        );
        let (status, stderr) =
            tokio::task::spawn_blocking(move || wait_agent(child, Duration::from_secs(20)))
                .await
                .unwrap();
        let status = status.unwrap_or_else(|| panic!("agent kept running:\n{stderr}"));
        assert!(!status.success(), "{stderr}");
        let line = last_line(&stderr);
        assert!(
            line.starts_with("error: ") && line.contains(want),
            "{node_id}: want a one-line reason with {want:?}, got:\n{stderr}"
        );
        assert!(!stderr.contains("logged in"), "{stderr}");
    }
    assert_ne!(node_a, node_b);
}

#[tokio::test]
async fn agent_keeps_retrying_an_unreachable_server_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = keygen(dir.path(), "node.key");
    // A loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = format!("https://127.0.0.1:{port}");
    let mut child = spawn_agent(
        dir.path(),
        &[
            "--server",
            &server,
            "--node-id",
            "node_offline",
            "--key",
            key.to_str().unwrap(),
            "--insecure",
            "--interval",
            "1s",
        ],
    );
    std::thread::sleep(Duration::from_secs(3));
    let still_running = child.try_wait().unwrap().is_none();
    let pid = child.id();
    if still_running {
        sigterm(pid);
    }
    let (status, stderr) = wait_agent(child, Duration::from_secs(10));
    assert!(
        still_running,
        "agent exited on a transient failure:\n{stderr}"
    );
    assert!(stderr.contains("retrying"), "{stderr}");
    assert!(stderr.contains("--insecure"), "no warning:\n{stderr}");
    // SIGTERM is a clean stop.
    let status = status.unwrap_or_else(|| panic!("agent ignored SIGTERM:\n{stderr}"));
    assert_eq!(status.code(), Some(0), "{stderr}");
    // Nothing was accepted, so no state file was written.
    assert!(!dir.path().join("node.key.state").exists());
}

#[test]
fn agent_refuses_ca_cert_with_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_cli(
        dir.path(),
        &[],
        &[
            "agent",
            "--server",
            "https://127.0.0.1:1",
            "--node-id",
            "node_x",
            "--key",
            "k",
            "--ca-cert",
            "c.pem",
            "--insecure",
        ],
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot be used with"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]

async fn agent_sends_three_heartbeats_and_resumes_after_a_restart() {
    let server = TestServer::start().await;
    let (node_id, key) = register_keygen_node(&server, "agent-hb").await;
    let cert = cert(&server);
    let args = [
        "--server",
        &server.base,
        "--node-id",
        &node_id,
        "--key",
        key.to_str().unwrap(),
        "--ca-cert",
        &cert,
        "--interval",
        "1s",
        "--max-heartbeats",
        "3",
    ];
    let child = spawn_agent(server.data_dir(), &args);
    let (status, stderr) =
        tokio::task::spawn_blocking(move || wait_agent(child, Duration::from_secs(60)))
            .await
            .unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "agent did not exit 0:\n{stderr}"
    );
    // The state file holds the last accepted seq.
    let state_path = PathBuf::from(format!("{}.state", key.display()));
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    let first_last_seq = state["last_seq"].as_u64().unwrap();
    let node = node_json(&server, &node_id).await;
    assert!(node["last_heartbeat_at"].is_string(), "{node}");
    assert_eq!(node["status"], "online", "{node}");
    // A restarted agent continues after the persisted seq (no 409 replays).
    let child = spawn_agent(server.data_dir(), &args);
    let (status, stderr) =
        tokio::task::spawn_blocking(move || wait_agent(child, Duration::from_secs(60)))
            .await
            .unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "restarted agent did not exit 0:\n{stderr}"
    );
    assert!(!stderr.contains("replayed"), "{stderr}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    assert!(state["last_seq"].as_u64().unwrap() > first_last_seq);
}
