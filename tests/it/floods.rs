//! Floods from one node, one operator or one address (issue 16), against the real binary:
//! a node pacing faster than `HEARTBEAT_MIN_INTERVAL` is refused with 429 and nothing is
//! stored, while other nodes carry on; heartbeat numbers have a bounded length; an
//! operator cannot register more than `MAX_NODES_PER_OPERATOR` nodes, also concurrently;
//! names refuse invisible bidi and zero-width characters; a duplicate key's 409 does not
//! name the node that holds it.

use std::time::Duration;

use crate::common::*;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{json, Value};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

async fn beat(
    server: &TestServer,
    node_id: &str,
    key: &SigningKey,
    token: &str,
    seq: u64,
) -> (u16, reqwest::header::HeaderMap, Value) {
    server
        .call_full(
            "POST",
            &format!("/api/v1/nodes/{node_id}/heartbeat"),
            Some(token),
            Some(heartbeat_body(node_id, key, seq)),
        )
        .await
}

/// Registers one node (admin) and logs it in: (node_id, key, token).
async fn node(server: &TestServer, name: &str) -> (String, SigningKey, String) {
    let (node, key) = server.register_node(&server.admin, name).await;
    let id = node["node_id"].as_str().unwrap().to_string();
    let token = server.login_node(&id, &key).await;
    (id, key, token)
}

fn metric(text: &str, series: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_beating_faster_than_the_interval_gets_429_and_nothing_is_stored() {
    let server = TestServer::start_with(&[("HEARTBEAT_MIN_INTERVAL", "3")]).await;
    let (a, a_key, a_token) = node(&server, "fast").await;
    let (b, b_key, b_token) = node(&server, "steady").await;

    let (status, _, first) = beat(&server, &a, &a_key, &a_token, 1).await;
    assert_eq!(status, 202, "{first}");
    let after_first = node_json(&server, &a).await;

    // Too soon: 429 with Retry-After; another node beating at the same time is accepted.
    let (too_soon, other) = tokio::join!(
        beat(&server, &a, &a_key, &a_token, 2),
        beat(&server, &b, &b_key, &b_token, 1)
    );
    let (status, headers, body) = too_soon;
    assert_problem(status, &body, 429, "heartbeat-too-frequent");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3).contains(&retry), "Retry-After {retry}");
    assert_eq!(other.0, 202, "{}", other.2);

    // Nothing of the refused heartbeat was stored.
    let after_refusal = node_json(&server, &a).await;
    assert_eq!(
        after_refusal["last_heartbeat_at"],
        after_first["last_heartbeat_at"]
    );

    // A burst of concurrent heartbeats from the same node: none passes before the
    // interval, whatever order the writer sees them in.
    let burst: Vec<_> = (3..8)
        .map(|seq| {
            let (server, a, a_key, a_token) = (&server, a.clone(), a_key.clone(), a_token.clone());
            async move { beat(server, &a, &a_key, &a_token, seq).await.0 }
        })
        .collect();
    let statuses = futures::future::join_all(burst).await;
    assert!(statuses.iter().all(|s| *s == 429), "{statuses:?}");

    // After the wait the node carries on from its last accepted seq: 2 was never stored,
    // so it is not a replay.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    let (status, _, accepted) = beat(&server, &a, &a_key, &a_token, 2).await;
    assert_eq!(status, 202, "{accepted}");
    let gap = received_gap(&first, &accepted);
    assert!(gap >= Duration::from_secs(3), "accepted only {gap:?} apart");

    let text = server.metrics_text().await;
    assert_eq!(
        metric(
            &text,
            "lucid_heartbeats_total{outcome=\"heartbeat-too-frequent\"} "
        ),
        6,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_heartbeats_sent_together_cannot_both_pass_while_the_first_lingers() {
    // The first heartbeat waits up to a second for its commit; the second is judged
    // against its staged receive stamp, not against what is committed.
    let server =
        TestServer::start_with(&[("HEARTBEAT_MIN_INTERVAL", "5"), ("COMMIT_INTERVAL", "1s")]).await;
    let (a, a_key, a_token) = node(&server, "twice").await;
    let (first, second) = tokio::join!(beat(&server, &a, &a_key, &a_token, 1), async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        beat(&server, &a, &a_key, &a_token, 2).await
    });
    assert_eq!(first.0, 202, "{}", first.2);
    assert_problem(second.0, &second.2, 429, "heartbeat-too-frequent");
    let retry: u64 = second.1["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((4..=5).contains(&retry), "Retry-After {retry}");
}

fn received_gap(first: &Value, second: &Value) -> Duration {
    let at = |v: &Value| {
        time::OffsetDateTime::parse(
            v["received_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    (at(second) - at(first)).try_into().unwrap()
}

/// A heartbeat whose `cpu_load` is written as `cpu` (raw JSON text), signed over it.
fn heartbeat_with_cpu_text(node_id: &str, key: &SigningKey, seq: u64, cpu: &str) -> String {
    let sent_at = "2026-01-01T00:00:00Z";
    let canonical = format!("lucid-hb-v1|{node_id}|{seq}|{sent_at}|2|1024|{cpu}|300");
    let signature = B64.encode(key.sign(canonical.as_bytes()).to_bytes());
    format!(
        r#"{{"seq": {seq}, "sent_at": "{sent_at}", "sessions_active": 2, "bytes_relayed": 1024, "cpu_load": {cpu}, "mem_used_mb": 300, "signature": "{signature}"}}"#
    )
}

#[tokio::test]
async fn an_oversize_number_in_a_heartbeat_is_refused() {
    let server = TestServer::start_with(&[("HEARTBEAT_MIN_INTERVAL", "0")]).await;
    let (a, a_key, a_token) = node(&server, "numbers").await;
    let send = |body: String| {
        let request = server
            .client
            .post(server.url(&format!("/api/v1/nodes/{a}/heartbeat")))
            .bearer_auth(&a_token)
            .header("content-type", "application/json")
            .body(body);
        async move {
            let resp = request.send().await.unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            (status, body)
        }
    };
    // 32 characters is the most a number may take.
    let longest = format!("0.{}", "2".repeat(30));
    assert_eq!(longest.len(), 32);
    let (status, body) = send(heartbeat_with_cpu_text(&a, &a_key, 1, &longest)).await;
    assert_eq!(status, 202, "{body}");
    // One more (a valid, signed number all the same) is refused, and so are long integers.
    let long = format!("0.{}", "2".repeat(31));
    let (status, body) = send(heartbeat_with_cpu_text(&a, &a_key, 2, &long)).await;
    assert_problem(status, &body, 400, "validation");
    assert!(
        body["detail"].as_str().unwrap().contains("cpu_load"),
        "{body}"
    );
    let huge = format!("1{}", "0".repeat(1000));
    let (status, body) = send(heartbeat_with_cpu_text(&a, &a_key, 3, &huge)).await;
    assert_problem(status, &body, 400, "validation");
    let (status, body) = send(heartbeat_with_cpu_text(&a, &a_key, 4, "0.25").replace(
        "\"bytes_relayed\": 1024",
        &format!("\"bytes_relayed\": {huge}"),
    ))
    .await;
    assert_problem(status, &body, 400, "validation");
    // The node goes on from its last accepted seq.
    let (status, _, body) = beat(&server, &a, &a_key, &a_token, 2).await;
    assert_eq!(status, 202, "{body}");
}

async fn register(server: &TestServer, token: &str, body: Value) -> (u16, Value) {
    server
        .call("POST", "/api/v1/nodes", Some(token), Some(body))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_operator_at_its_quota_gets_422_also_when_registering_concurrently() {
    let server = TestServer::start_with(&[("MAX_NODES_PER_OPERATOR", "5")]).await;
    let op = server.cli_token("operator", "op-flood");
    let sends: Vec<_> = (0..20)
        .map(|i| {
            let (server, op) = (&server, op.clone());
            async move {
                register(
                    server,
                    &op,
                    json!({"name": format!("n{i}"), "public_key": public_b64(&node_key())}),
                )
                .await
            }
        })
        .collect();
    let answers = futures::future::join_all(sends).await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(created, 5, "{answers:?}");
    for (status, body) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_problem(*status, body, 422, "operator-quota");
    }
    let listed = paginate_all(&server, "/api/v1/nodes", &op).await;
    assert_eq!(listed.len(), 5);

    // Nor can an admin register one more for that operator; others are unaffected.
    let (status, body) = register(
        &server,
        &server.admin,
        json!({"name": "extra", "public_key": public_b64(&node_key()), "operator_id": "op-flood"}),
    )
    .await;
    assert_problem(status, &body, 422, "operator-quota");
    let other = server.cli_token("operator", "op-calm");
    let (status, body) = register(
        &server,
        &other,
        json!({"name": "calm", "public_key": public_b64(&node_key())}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn names_regions_and_reasons_refuse_bidi_and_zero_width_characters() {
    let server = TestServer::start().await;
    let op = server.cli_token("operator", "op-names");
    for c in ['\u{202E}', '\u{200B}', '\u{200F}', '\u{2066}', '\u{FEFF}'] {
        let (status, body) = register(
            &server,
            &op,
            json!({"name": format!("pi{c}1"), "public_key": public_b64(&node_key())}),
        )
        .await;
        assert_problem(status, &body, 400, "validation");
        let (status, body) = register(
            &server,
            &op,
            json!({"name": "pi", "region": format!("eu{c}"), "public_key": public_b64(&node_key())}),
        )
        .await;
        assert_problem(status, &body, 400, "validation");
        let (status, body) = server
            .call(
                "POST",
                "/api/v1/pools",
                Some(&server.admin),
                Some(json!({"name": format!("pool{c}"), "capacity": 10})),
            )
            .await;
        assert_problem(status, &body, 400, "validation");
    }
    // Renaming too; nothing was registered by the refused requests.
    let (node, _) = server.register_node(&op, "plain").await;
    let id = node["node_id"].as_str().unwrap();
    let (status, body) = server
        .call(
            "PUT",
            &format!("/api/v1/nodes/{id}"),
            Some(&op),
            Some(json!({"name": "cash\u{202E}gnp.exe"})),
        )
        .await;
    assert_problem(status, &body, 400, "validation");
    assert_eq!(paginate_all(&server, "/api/v1/nodes", &op).await.len(), 1);
}

#[tokio::test]
async fn a_duplicate_key_answer_does_not_name_the_other_operators_node() {
    let server = TestServer::start().await;
    let mine = server.cli_token("operator", "op-one");
    let theirs = server.cli_token("operator", "op-two");
    let (node, key) = server.register_node(&mine, "original").await;
    let id = node["node_id"].as_str().unwrap();
    let (status, body) = register(
        &server,
        &theirs,
        json!({"name": "copy", "public_key": public_b64(&key)}),
    )
    .await;
    assert_problem(status, &body, 409, "duplicate-public-key");
    assert!(!body.to_string().contains(id), "{body}");
    assert!(!body.to_string().contains("node_"), "{body}");
}
