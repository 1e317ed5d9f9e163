//! Heartbeats, node status and PoOT proofs against the real server, with epochs made
//! short by configuration so a test sees several of them. Proofs are checked here with
//! nothing but API.md's recipe and the public key from `/api/v1/keys`.

use std::time::Duration;

use crate::common::*;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const EPOCH_SECS: u64 = 2;
const TIMEOUT_SECS: u64 = 2;

async fn start() -> TestServer {
    TestServer::start_with(&[
        ("POOT_CALCULATION_INTERVAL", "2"),
        ("HEARTBEAT_TIMEOUT", "2"),
        ("REWARD_USDT_PER_HOUR", "36"),
    ])
    .await
}

fn sha(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// API.md's verification recipe, written from the document alone.
fn verify_from_api_md(proof: &Value, public_key: &VerifyingKey) -> Result<(), String> {
    let s = |k: &str| proof[k].as_str().map(String::from).unwrap_or_default();
    let text = format!(
        "lucid-proof-v1|{}|{}|{}|{}|{}|{}|{}|{}|{}",
        s("node_id"),
        proof["epoch"],
        s("window_start"),
        s("window_end"),
        proof["operational_seconds"],
        proof["heartbeat_count"],
        s("heartbeats_root"),
        s("credits_usdt"),
        s("prev_proof_hash")
    );
    let proof_hash = sha(text.as_bytes());
    if hex::encode(proof_hash) != s("proof_hash") {
        return Err("proof_hash".into());
    }
    let mut node = sha(&[&[0u8][..], &proof_hash].concat());
    for step in proof["inclusion_path"].as_array().unwrap() {
        let step = step.as_str().unwrap();
        let sibling = hex::decode(&step[2..]).unwrap();
        node = if step.starts_with("L:") {
            sha(&[&[1u8][..], &sibling, &node].concat())
        } else {
            sha(&[&[1u8][..], &node, &sibling].concat())
        };
    }
    if hex::encode(node) != s("epoch_root") {
        return Err("inclusion path".into());
    }
    let sig = Signature::from_slice(&B64.decode(s("epoch_signature")).unwrap()).unwrap();
    let message = format!("lucid-epoch-v1|{}|{}", proof["epoch"], s("epoch_root"));
    public_key
        .verify(message.as_bytes(), &sig)
        .map_err(|_| "signature".to_string())
}

async fn proof_key(server: &TestServer) -> VerifyingKey {
    let (_, keys) = server.call("GET", "/api/v1/keys", None, None).await;
    let bytes: [u8; 32] = B64
        .decode(keys["proof"]["public_key"].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    VerifyingKey::from_bytes(&bytes).unwrap()
}

async fn wait_for<F: Fn(&Value) -> bool>(
    server: &TestServer,
    path: &str,
    what: &str,
    ok: F,
) -> Value {
    wait_until_every(
        Duration::from_secs(20),
        Duration::from_millis(200),
        async || {
            let (_, v) = server.call("GET", path, Some(&server.admin), None).await;
            if ok(&v) {
                Ok(v)
            } else {
                Err(format!("timed out waiting for {what}: {v}"))
            }
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_become_verifiable_proofs_and_credits() {
    let mut server = start().await;
    let (node, key) = server.register_node(&server.admin, "pi").await;
    let id = node["node_id"].as_str().unwrap().to_string();
    let token = server.login_node(&id, &key).await;

    let (status, body) = server.beat(&id, &key, &token, 1).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], true);
    assert_eq!(body["status"], "online");
    assert!(body["received_at"].is_string());

    // Heartbeats every 250 ms across three epochs.
    for seq in 2..=(3 * EPOCH_SECS * 4) {
        let (status, body) = server.beat(&id, &key, &token, seq).await;
        assert_eq!(status, 202, "{body}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let proofs = wait_until_every(
        Duration::from_secs(10),
        Duration::from_millis(200),
        async || {
            let h = proof_history(&server, &id).await;
            if h.len() >= 2 {
                Ok(h)
            } else {
                Err(format!(
                    "expected at least two closed epochs, got {}",
                    h.len()
                ))
            }
        },
    )
    .await;
    assert!(
        proofs.len() >= 2,
        "expected at least two closed epochs, got {}",
        proofs.len()
    );
    let pk = proof_key(&server).await;
    for p in &proofs {
        verify_from_api_md(p, &pk).unwrap_or_else(|e| panic!("proof {p} fails: {e}"));
        assert!(p["operational_seconds"].as_u64().unwrap() <= EPOCH_SECS);
    }
    // History is newest first and chained.
    assert_eq!(proofs[0]["prev_proof_hash"], proofs[1]["proof_hash"]);
    // A full middle epoch: up the whole window, every heartbeat in it counted.
    let full = proofs
        .iter()
        .find(|p| p["operational_seconds"] == EPOCH_SECS)
        .expect("a fully covered epoch");
    assert_eq!(full["score"], "100.00");
    assert!(full["heartbeat_count"].as_u64().unwrap() >= 6);
    // 2 s at 36 USDT/h = 0.02.
    assert_eq!(full["credits_usdt"], "0.020000");

    // The node can check its own heartbeats against the proof.
    let (status, raw) = server
        .call(
            "GET",
            &format!("/api/v1/poot/{id}/heartbeats?epoch={}", full["epoch"]),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 200, "{raw}");
    let leaves: Vec<[u8; 32]> = raw["heartbeats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            let signed = h["signed"].as_str().unwrap().as_bytes().to_vec();
            let sig = B64.decode(h["signature"].as_str().unwrap()).unwrap();
            key.verifying_key()
                .verify(&signed, &Signature::from_slice(&sig).unwrap())
                .expect("every stored heartbeat carries the node's own signature");
            sha(&[&[0u8][..], &signed, &sig].concat())
        })
        .collect();
    assert_eq!(
        leaves.len() as u64,
        full["heartbeat_count"].as_u64().unwrap()
    );
    let mut level = leaves;
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|p| {
                if p.len() == 2 {
                    sha(&[&[1u8][..], &p[0], &p[1]].concat())
                } else {
                    p[0]
                }
            })
            .collect();
    }
    assert_eq!(
        hex::encode(level[0]),
        full["heartbeats_root"].as_str().unwrap()
    );

    // The latest proof, and by epoch.
    let (status, latest) = server
        .call("GET", &format!("/api/v1/poot/{id}"), Some(&token), None)
        .await;
    assert_eq!(status, 200, "{latest}");
    let epoch = full["epoch"].as_u64().unwrap();
    let (status, by_epoch) = server
        .call(
            "GET",
            &format!("/api/v1/poot/{id}?epoch={epoch}"),
            Some(&server.admin),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(&by_epoch, full);

    // The balance is the sum of the credits.
    let (_, n) = server
        .call(
            "GET",
            &format!("/api/v1/nodes/{id}"),
            Some(&server.admin),
            None,
        )
        .await;
    let all = proof_history(&server, &id).await;
    let total: f64 = all
        .iter()
        .map(|p| p["credits_usdt"].as_str().unwrap().parse::<f64>().unwrap())
        .sum();
    let balance: f64 = n["balance_usdt"].as_str().unwrap().parse().unwrap();
    assert!(
        (balance - total).abs() < 1e-9,
        "balance {balance} vs credits {total}"
    );
    let seconds: u64 = all
        .iter()
        .map(|p| p["operational_seconds"].as_u64().unwrap())
        .sum();
    assert_eq!(n["operational_seconds_total"], seconds);

    // Silence longer than the timeout: offline, audited.
    let node_path = format!("/api/v1/nodes/{id}");
    wait_for(&server, &node_path, "offline", |n| n["status"] == "offline").await;
    let (_, audit) = server
        .call("GET", "/api/v1/audit?limit=500", Some(&server.admin), None)
        .await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"node.online") && actions.contains(&"node.offline"),
        "{actions:?}"
    );
    assert!(actions.contains(&"poot.epoch_close"));

    // The gap earns nothing: once the epoch holding the last heartbeat's timeout tail is
    // closed, silent epochs add no proof.
    tokio::time::sleep(Duration::from_secs(EPOCH_SECS + 1)).await;
    let before = proof_history(&server, &id).await.len();
    tokio::time::sleep(Duration::from_secs(3 * EPOCH_SECS)).await;
    let after = proof_history(&server, &id).await;
    assert_eq!(after.len(), before, "silent epochs get no proof");
    let (status, _) = server.beat(&id, &key, &token, 1000).await;
    assert_eq!(status, 202);
    let n = wait_for(&server, &node_path, "online again", |n| {
        n["status"] == "online"
    })
    .await;
    assert_eq!(n["status"], "online");

    // The verify command checks a proof offline with only the public key...
    let (_, keys) = server.call("GET", "/api/v1/keys", None, None).await;
    let public_key = keys["proof"]["public_key"].as_str().unwrap().to_string();
    let dir = server.data_dir().to_path_buf();
    let file = dir.join("proof.json");
    std::fs::write(&file, full.to_string()).unwrap();
    let run_verify = |path: &std::path::Path| {
        run_cli(
            &dir,
            &[],
            &[
                "verify",
                path.to_str().unwrap(),
                "--public-key",
                &public_key,
            ],
        )
    };
    let out = run_verify(&file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("valid:"));
    // ...and a whole history, chain included...
    let hist_file = dir.join("history.json");
    std::fs::write(
        &hist_file,
        json!({"items": proof_history(&server, &id).await}).to_string(),
    )
    .unwrap();
    let out = run_verify(&hist_file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ...and refuses any tampering, saying why in one line.
    for (field, value) in [
        ("operational_seconds", json!(1)),
        ("credits_usdt", json!("0.030000")),
        ("heartbeats_root", json!(hex::encode([7u8; 32]))),
        ("prev_proof_hash", json!(hex::encode([3u8; 32]))),
        (
            "inclusion_path",
            json!(["L:".to_string() + &hex::encode([1u8; 32])]),
        ),
        ("epoch_signature", json!(B64.encode([0u8; 64]))),
    ] {
        let mut bad = full.clone();
        bad[field] = value;
        std::fs::write(&file, bad.to_string()).unwrap();
        let out = run_verify(&file);
        assert!(!out.status.success(), "tampered {field} verified");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).lines().count(),
            1,
            "one-line reason"
        );
    }
    // A history with a proof removed from the middle breaks the chain.
    let mut items = proof_history(&server, &id).await;
    assert!(items.len() >= 3);
    items.remove(1);
    std::fs::write(&hist_file, Value::Array(items).to_string()).unwrap();
    assert!(!run_verify(&hist_file).status.success());

    // The database verifies offline, with epochs recomputed from the raw heartbeats.
    assert_eq!(server.terminate().await, Some(0));
    let out = run_cli(&dir, &[], &["verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("every balance equals its ledger"),
        "{stdout}"
    );
    assert!(!stdout.contains("raw heartbeats: 0 epochs"), "{stdout}");
}

#[tokio::test]
async fn replays_forgeries_and_other_nodes_are_refused() {
    let server = start().await;
    let (a, key_a) = server.register_node(&server.admin, "a").await;
    let (b, key_b) = server.register_node(&server.admin, "b").await;
    let a_id = a["node_id"].as_str().unwrap();
    let b_id = b["node_id"].as_str().unwrap();
    let token_a = server.login_node(a_id, &key_a).await;

    assert_eq!(server.beat(a_id, &key_a, &token_a, 5).await.0, 202);
    let (status, body) = server.beat(a_id, &key_a, &token_a, 5).await;
    assert_problem(status, &body, 409, "replayed-heartbeat");
    let (status, body) = server.beat(a_id, &key_a, &token_a, 4).await;
    assert_problem(status, &body, 409, "replayed-heartbeat");

    // Signed by another key.
    let (status, body) = server.beat(a_id, &key_b, &token_a, 6).await;
    assert_problem(status, &body, 401, "invalid-signature");
    // A field changed after signing.
    let mut tampered = heartbeat_body(a_id, &key_a, 7);
    tampered["sessions_active"] = json!(3);
    let (status, body) = server
        .call(
            "POST",
            &format!("/api/v1/nodes/{a_id}/heartbeat"),
            Some(&token_a),
            Some(tampered),
        )
        .await;
    assert_problem(status, &body, 401, "invalid-signature");
    // Numbers must be sent as signed: 0.250 is not 0.25.
    let mut respelled = heartbeat_body(a_id, &key_a, 8).to_string();
    respelled = respelled.replace("0.25", "0.250");
    let resp = server
        .client
        .post(server.url(&format!("/api/v1/nodes/{a_id}/heartbeat")))
        .bearer_auth(&token_a)
        .header("content-type", "application/json")
        .body(respelled)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    // Node A cannot send for node B, even with B's key.
    let (status, body) = server.beat(b_id, &key_b, &token_a, 1).await;
    assert_problem(status, &body, 404, "not-found");
    // Operators and admins do not send heartbeats.
    let (status, body) = server.beat(a_id, &key_a, &server.admin, 9).await;
    assert_problem(status, &body, 403, "forbidden");
    // Bad shapes are 400.
    let mut bad = heartbeat_body(a_id, &key_a, 10);
    bad["seq"] = json!(-1);
    let (status, body) = server
        .call(
            "POST",
            &format!("/api/v1/nodes/{a_id}/heartbeat"),
            Some(&token_a),
            Some(bad),
        )
        .await;
    assert_problem(status, &body, 400, "validation");
    // A seq beyond 2^53 - 1 would lock the node out for good: refused.
    let (status, body) = server.beat(a_id, &key_a, &token_a, 1 << 53).await;
    assert_problem(status, &body, 400, "validation");
    // A suspended node's heartbeats stop at once.
    server
        .call(
            "PUT",
            &format!("/api/v1/nodes/{a_id}"),
            Some(&server.admin),
            Some(json!({"status": "suspended"})),
        )
        .await;
    let (status, _) = server.beat(a_id, &key_a, &token_a, 11).await;
    assert_eq!(status, 401);

    let text = server.metrics_text().await;
    assert!(
        text.contains("lucid_heartbeats_total{outcome=\"replayed-heartbeat\"} 2"),
        "{text}"
    );
    assert!(text.contains("lucid_heartbeats_total{outcome=\"invalid-signature\"}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_appliance_closes_the_epochs_it_missed() {
    let mut server = start().await;
    let (node, key) = server.register_node(&server.admin, "pi").await;
    let id = node["node_id"].as_str().unwrap().to_string();
    let token = server.login_node(&id, &key).await;
    for seq in 1..=12 {
        assert_eq!(server.beat(&id, &key, &token, seq).await.0, 202);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let (_, calc) = server
        .call("POST", "/api/v1/poot/calculate", Some(&server.admin), None)
        .await;
    assert!(calc["epochs_closed"].is_array(), "{calc}");
    let admin = server.admin.clone();
    server.kill();
    tokio::time::sleep(Duration::from_secs(3 * EPOCH_SECS)).await;
    server.restart();
    // The missed epochs are closed at start (or on demand); the last heartbeat before the
    // outage still counts until its timeout.
    let (status, calc) = server
        .call(
            "POST",
            "/api/v1/poot/calculate",
            Some(&admin),
            Some(json!({"node_id": id})),
        )
        .await;
    assert_eq!(status, 200, "{calc}");
    let hist = proof_history(&server, &id).await;
    let last_epoch = hist[0]["epoch"].as_u64().unwrap();
    let (_, keys) = server.call("GET", "/api/v1/keys", None, None).await;
    assert!(keys["proof"]["public_key"].is_string());
    let now_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / EPOCH_SECS;
    assert!(
        last_epoch + 6 >= now_epoch,
        "proofs reach the outage (last {last_epoch}, now {now_epoch})"
    );
    let covered: u64 = hist
        .iter()
        .map(|p| p["operational_seconds"].as_u64().unwrap())
        .sum();
    // ~3 s of heartbeats plus the 2 s timeout after the last: never more than that.
    assert!(covered <= 3 + TIMEOUT_SECS + 1, "covered {covered}");
    // calculate is idempotent: asking again closes nothing new right away and the proofs match.
    let again = proof_history(&server, &id).await;
    assert_eq!(
        again[..hist.len().min(again.len())].last(),
        hist[..hist.len().min(again.len())].last()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_heartbeats_are_pruned_once_proven_and_the_database_still_verifies() {
    let mut server = TestServer::start_with(&[
        ("POOT_CALCULATION_INTERVAL", "1"),
        ("HEARTBEAT_TIMEOUT", "1"),
        ("HEARTBEAT_RETENTION", "1"),
    ])
    .await;
    let op = server.cli_token("operator", "op-1");
    let other = server.cli_token("operator", "op-2");
    let (node, key) = server.register_node(&op, "pi").await;
    let id = node["node_id"].as_str().unwrap().to_string();
    let token = server.login_node(&id, &key).await;
    for seq in 1..=8 {
        assert_eq!(server.beat(&id, &key, &token, seq).await.0, 202);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Who may calculate: the owner and admins, not nodes nor other operators.
    let (status, body) = server
        .call("POST", "/api/v1/poot/calculate", Some(&token), None)
        .await;
    assert_problem(status, &body, 403, "forbidden");
    let (status, body) = server
        .call(
            "POST",
            "/api/v1/poot/calculate",
            Some(&other),
            Some(json!({"node_id": id})),
        )
        .await;
    assert_problem(status, &body, 404, "not-found");
    let (status, calc) = server
        .call(
            "POST",
            "/api/v1/poot/calculate",
            Some(&op),
            Some(json!({"node_id": id})),
        )
        .await;
    assert_eq!(status, 200, "{calc}");
    assert_eq!(calc["proofs"][0]["node_id"], id.as_str());

    tokio::time::sleep(Duration::from_secs(4)).await;
    let hist = proof_history(&server, &id).await;
    let oldest = hist.last().unwrap()["epoch"].as_u64().unwrap();
    let (status, body) = server
        .call(
            "GET",
            &format!("/api/v1/poot/{id}/heartbeats?epoch={oldest}"),
            Some(&op),
            None,
        )
        .await;
    assert_problem(status, &body, 404, "not-found");
    assert!(
        body["detail"].as_str().unwrap().contains("pruned"),
        "{body}"
    );
    // Proofs and ledger stay.
    let (status, _) = server
        .call(
            "GET",
            &format!("/api/v1/poot/{id}?epoch={oldest}"),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(server.terminate().await, Some(0));
    server.verify_offline();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_agent_earns_verifiable_proofs_and_its_silence_earns_nothing() {
    let server = start().await;
    let (node, key) = server.register_node(&server.admin, "agent-node").await;
    let id = node["node_id"].as_str().unwrap().to_string();
    let key_file = server.data_dir().join("agent.key");
    std::fs::write(&key_file, format!("{}\n", B64.encode(key.to_bytes()))).unwrap();
    let mut agent = command(server.data_dir(), &[])
        .args([
            "agent",
            "--server",
            &server.base,
            "--node-id",
            &id,
            "--key",
            key_file.to_str().unwrap(),
            "--ca-cert",
            server.data_dir().join("tls/cert.pem").to_str().unwrap(),
            "--interval",
            "1s",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The agent is stopped before any assertion, so a failure does not leave it running.
    let proofs = poll_until(
        Duration::from_secs(15),
        Duration::from_millis(250),
        async || {
            let proofs = proof_history(&server, &id).await;
            let full = proofs
                .iter()
                .filter(|p| p["operational_seconds"] == EPOCH_SECS)
                .count();
            if full >= 2 {
                Ok(proofs)
            } else {
                Err(proofs)
            }
        },
    )
    .await
    .unwrap_or_else(|proofs| proofs);
    let _ = agent.kill();
    let _ = agent.wait();
    let full: Vec<&Value> = proofs
        .iter()
        .filter(|p| p["operational_seconds"] == EPOCH_SECS)
        .collect();
    assert!(
        full.len() >= 2,
        "the agent kept the node up for whole epochs: {proofs:?}"
    );
    let pk = proof_key(&server).await;
    for p in &proofs {
        verify_from_api_md(p, &pk).unwrap();
    }
    // After the agent stops: offline after the timeout, and no more proofs.
    let node_path = format!("/api/v1/nodes/{id}");
    wait_for(&server, &node_path, "offline", |n| n["status"] == "offline").await;
    tokio::time::sleep(Duration::from_secs(EPOCH_SECS + 1)).await;
    let settled = proof_history(&server, &id).await.len();
    tokio::time::sleep(Duration::from_secs(2 * EPOCH_SECS)).await;
    assert_eq!(
        proof_history(&server, &id).await.len(),
        settled,
        "a stopped agent earns nothing"
    );
}

/// A counter's value in the `/metrics` text (0 when absent).
fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// Beats every 300 ms until at least `epochs` epochs with proofs have closed after the
/// first beat; returns the metrics text then.
async fn beat_through_epochs(server: &TestServer, epochs: u64) -> String {
    let op = server.cli_token("operator", "op-1");
    let (node, key) = server.register_node(&op, "pi").await;
    let id = node["node_id"].as_str().unwrap().to_string();
    let token = server.login_node(&id, &key).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut seq = 0;
    loop {
        seq += 1;
        assert_eq!(server.beat(&id, &key, &token, seq).await.0, 202);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let proofs = proof_history(server, &id).await.len() as u64;
        if proofs >= epochs {
            return server.metrics_text().await;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{proofs} proofs in 30 s"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closes_read_no_heartbeat_once_windows_are_accumulated_and_zero_turns_it_off() {
    for (setting, accumulates) in [("4", true), ("0", false)] {
        let mut server = TestServer::start_with(&[
            ("POOT_CALCULATION_INTERVAL", "1"),
            ("HEARTBEAT_TIMEOUT", "1"),
            ("POOT_ACCUMULATED_EPOCHS", setting),
        ])
        .await;
        let text = beat_through_epochs(&server, 5).await;
        let closed = counter(&text, "lucid_poot_epochs_closed_total");
        let accumulated = counter(&text, "lucid_poot_epochs_accumulated_total");
        assert!(closed >= 5, "{closed} closed");
        if accumulates {
            // Every epoch whose window (its start less the 1 s timeout) began after the
            // service started: all but the two or three around the start.
            assert!(
                accumulated >= 2 && accumulated + 3 >= closed,
                "{accumulated} of {closed} closes accumulated"
            );
        } else {
            assert_eq!(
                accumulated, 0,
                "POOT_ACCUMULATED_EPOCHS=0 scans every close"
            );
        }
        // Either way the stored proofs are what recomputing the raw heartbeats gives.
        assert_eq!(server.terminate().await, Some(0));
        server.verify_offline();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_the_windows_are_rebuilt_and_the_next_closes_read_no_heartbeat() {
    let mut server = TestServer::start_with(&[
        ("POOT_CALCULATION_INTERVAL", "1"),
        ("HEARTBEAT_TIMEOUT", "1"),
        ("POOT_ACCUMULATED_EPOCHS", "16"),
    ])
    .await;
    let op = server.cli_token("operator", "op-1");
    let (node, key) = server.register_node(&op, "pi").await;
    let id = node["node_id"].as_str().unwrap().to_string();
    let mut token = server.login_node(&id, &key).await;
    let mut seq = 0;
    for _ in 0..8 {
        seq += 1;
        assert_eq!(server.beat(&id, &key, &token, seq).await.0, 202);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // Killed mid-epoch: its heartbeats are on disk, the accumulators are gone.
    server.kill();
    server.restart();
    token = server.login_node(&id, &key).await;
    let before = proof_history(&server, &id).await.len();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while proof_history(&server, &id).await.len() < before + 4 {
        seq += 1;
        assert_eq!(server.beat(&id, &key, &token, seq).await.0, 202);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            std::time::Instant::now() < deadline,
            "no proofs after the restart"
        );
    }
    let text = server.metrics_text().await;
    let closed = counter(&text, "lucid_poot_epochs_closed_total");
    let accumulated = counter(&text, "lucid_poot_epochs_accumulated_total");
    // Without the rebuild the epochs missed while down, the one the restart fell in and
    // the next (their windows began before it) would scan; with it none does (a close
    // during the rebuild waits for it).
    assert!(closed >= 4, "{closed} closed since the restart");
    assert_eq!(
        accumulated, closed,
        "closes since the restart that read no heartbeat"
    );
    assert_eq!(server.terminate().await, Some(0));
    server.verify_offline();
}
