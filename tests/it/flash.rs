//! Flash that lasts: heartbeats linger up to `COMMIT_INTERVAL` and share durable commits,
//! yet nothing acknowledged is lost; the node record is not rewritten per heartbeat, so the
//! replay guard and `last_heartbeat_at` come from memory and the heartbeat rows, and must
//! survive SIGKILL, restarts and the online -> offline change.

use std::time::Duration;

use crate::common::*;

/// The count of a histogram in `/metrics`.
async fn histogram_count(server: &TestServer, name: &str) -> u64 {
    let text = server.metrics_text().await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}_count ")))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0)
}

/// Registers and logs in `n` nodes; returns (node_id, key, token) of each.
async fn fleet(server: &TestServer, n: usize) -> Vec<(String, ed25519_dalek::SigningKey, String)> {
    let mut nodes = Vec::new();
    for i in 0..n {
        let (node, key) = server.register_node(&server.admin, &format!("n{i}")).await;
        let id = node["node_id"].as_str().unwrap().to_string();
        let token = server.login_node(&id, &key).await;
        nodes.push((id, key, token));
    }
    nodes
}

/// Timers that could commit on their own during a test are pushed far away.
const QUIET: [(&str, &str); 2] = [
    ("POOT_CALCULATION_INTERVAL", "3600"),
    ("PAYOUT_PROCESSING_INTERVAL", "3600"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heartbeats_of_many_nodes_arriving_within_the_interval_share_one_durable_commit() {
    let server = TestServer::start_with(&[QUIET[0], QUIET[1], ("COMMIT_INTERVAL", "2s")]).await;
    let nodes = fleet(&server, 8).await;
    let commits_before = histogram_count(&server, "lucid_writer_commit_seconds").await;
    let mut sends = Vec::new();
    for (id, key, token) in nodes.clone() {
        let client = server.client.clone();
        let url = server.url(&format!("/api/v1/nodes/{id}/heartbeat"));
        sends.push(tokio::spawn(async move {
            client
                .post(url)
                .bearer_auth(token)
                .json(&heartbeat_body(&id, &key, 1))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for s in sends {
        assert_eq!(s.await.unwrap(), 202);
    }
    let commits = histogram_count(&server, "lucid_writer_commit_seconds").await - commits_before;
    // Eight heartbeats sent together (each also turning its node online) wait for each
    // other: one commit, two if the 2 s window closed between the first and the last.
    assert!(
        (1..=2).contains(&commits),
        "8 heartbeats took {commits} durable commits"
    );
    for (id, _, _) in &nodes {
        assert_eq!(node_json(&server, id).await["status"], "online");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_acknowledged_lingering_heartbeat_survives_sigkill_and_its_seq_stays_used() {
    let mut server = TestServer::start_with(&[QUIET[0], QUIET[1], ("COMMIT_INTERVAL", "1s")]).await;
    let nodes = fleet(&server, 1).await;
    let (id, key, token) = &nodes[0];
    // seq 1 turns the node online (its record is written); 2..=5 are rows only.
    let mut last_received = String::new();
    for seq in 1..=5 {
        let (status, body) = server.beat(id, key, token, seq).await;
        assert_eq!(status, 202, "{body}");
        last_received = body["received_at"].as_str().unwrap().to_string();
    }
    assert_eq!(
        node_json(&server, id).await["last_heartbeat_at"],
        last_received.as_str()
    );
    server.kill();
    server.restart();

    // Rebuilt from the heartbeat rows: the last acknowledged heartbeat is there...
    assert_eq!(
        node_json(&server, id).await["last_heartbeat_at"],
        last_received.as_str()
    );
    // ...and its seq (and every earlier one) is refused as a replay, with a fresh token.
    let token = server.login_node(id, key).await;
    for seq in [5, 3] {
        let (status, body) = server.beat(id, key, &token, seq).await;
        assert_problem(status, &body, 409, "replayed-heartbeat");
    }
    let (status, _) = server.beat(id, key, &token, 6).await;
    assert_eq!(status, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_offline_change_writes_the_last_seq_so_the_replay_guard_survives_a_restart() {
    let mut server = TestServer::start_with(&[
        QUIET[0],
        QUIET[1],
        ("COMMIT_INTERVAL", "0"),
        ("HEARTBEAT_TIMEOUT", "1"),
    ])
    .await;
    let nodes = fleet(&server, 1).await;
    let (id, key, token) = &nodes[0];
    for seq in [10, 11, 12] {
        assert_eq!(server.beat(id, key, token, seq).await.0, 202);
    }
    let received = node_json(&server, id).await["last_heartbeat_at"].clone();
    wait_until(Duration::from_secs(20), async || {
        match node_json(&server, id).await["status"].clone() {
            s if s == "offline" => Ok(()),
            s => Err(format!("the node is still {s}")),
        }
    })
    .await;
    server.restart();
    let node = node_json(&server, id).await;
    assert_eq!(node["status"], "offline");
    assert_eq!(node["last_heartbeat_at"], received);
    let token = server.login_node(id, key).await;
    let (status, body) = server.beat(id, key, &token, 12).await;
    assert_problem(status, &body, 409, "replayed-heartbeat");
    let (status, body) = server.beat(id, key, &token, 13).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "online");
}
