//! Rate limits: per client address on the login routes (`AUTH_RATE_LIMIT`), per token
//! subject on authenticated routes (`TOKEN_RATE_LIMIT`, admins exempt); `0` turns each off.
//! Each test sets the limits it relies on (the harness turns both off).
//!
//! The limits are tiny (1 per second) and each burst is sent back to back, so the requests
//! beyond the burst arrive long before a second has refilled one: no timing is assumed
//! beyond that.

use crate::common::*;
use serde_json::{json, Value};

/// Sends `n` requests one after the other; returns each status with its headers and body.
async fn burst(
    server: &TestServer,
    n: usize,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Vec<(u16, reqwest::header::HeaderMap, Value)> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(server.call_full(method, path, token, body.clone()).await);
    }
    out
}

/// The first 429 of `answers`, checked to be a well-formed `rate-limited` problem with a
/// whole-seconds `Retry-After` of at least 1.
fn first_rate_limited(answers: &[(u16, reqwest::header::HeaderMap, Value)]) -> &Value {
    let (status, headers, body) = answers
        .iter()
        .find(|(s, _, _)| *s == 429)
        .unwrap_or_else(|| {
            panic!(
                "no 429 in {:?}",
                answers.iter().map(|a| a.0).collect::<Vec<_>>()
            )
        });
    assert_problem(*status, body, 429, "rate-limited");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1, "{retry}");
    body
}

fn count_of(metrics: &str, series: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or_else(|| panic!("{series} missing from metrics"))
}

#[tokio::test]
async fn login_routes_refuse_a_burst_from_one_address_with_429_and_retry_after() {
    let server = TestServer::start_with(&[
        ("AUTH_RATE_LIMIT", "1"),
        ("AUTH_RATE_BURST", "3"),
        ("TOKEN_RATE_LIMIT", "0"),
    ])
    .await;
    let (node, _) = server.register_node(&server.admin, "n").await;
    let id = node["node_id"].as_str().unwrap();
    let answers = burst(
        &server,
        12,
        "POST",
        "/api/v1/auth/challenge",
        None,
        Some(json!({"node_id": id})),
    )
    .await;
    // The burst passes, then the address is paced.
    assert!(answers[..3].iter().all(|a| a.0 == 200), "{answers:?}");
    first_rate_limited(&answers);
    // The other login routes share the address's budget, the enrolment redemption
    // included (whether or not that route exists in this build).
    for path in ["/api/v1/auth/token", "/api/v1/enrollments/redeem"] {
        let answers = burst(&server, 3, "POST", path, None, Some(json!({}))).await;
        first_rate_limited(&answers);
    }
    // Routes with a token are not limited by address.
    for _ in 0..20 {
        let (s, body) = server
            .call("GET", "/api/v1/nodes", Some(&server.admin), None)
            .await;
        assert_eq!(s, 200, "{body}");
    }
    let metrics = server.metrics_text().await;
    assert!(
        count_of(&metrics, "lucid_rate_limited_total{limit=\"auth\"}") >= 3,
        "{metrics}"
    );
    assert_eq!(
        count_of(&metrics, "lucid_rate_limited_total{limit=\"token\"}"),
        0
    );
}

#[tokio::test]
async fn one_token_subject_over_its_limit_gets_429_while_others_and_admins_do_not() {
    let server = TestServer::start_with(&[
        ("AUTH_RATE_LIMIT", "0"),
        ("TOKEN_RATE_LIMIT", "1"),
        ("TOKEN_RATE_BURST", "5"),
    ])
    .await;
    let alice = server.cli_token("operator", "op-alice");
    let bob = server.cli_token("operator", "op-bob");
    let answers = burst(&server, 20, "GET", "/api/v1/nodes", Some(&alice), None).await;
    assert!(answers[..5].iter().all(|a| a.0 == 200), "{answers:?}");
    first_rate_limited(&answers);
    // A second token of the same subject shares its budget.
    let alice_again = server.cli_token("operator", "op-alice");
    let answers = burst(&server, 3, "GET", "/api/v1/nodes", Some(&alice_again), None).await;
    first_rate_limited(&answers);
    // Another subject is unaffected.
    let answers = burst(&server, 5, "GET", "/api/v1/nodes", Some(&bob), None).await;
    assert!(answers.iter().all(|a| a.0 == 200), "{answers:?}");
    // Admins are exempt.
    let answers = burst(
        &server,
        40,
        "GET",
        "/api/v1/nodes",
        Some(&server.admin),
        None,
    )
    .await;
    assert!(answers.iter().all(|a| a.0 == 200));
    // Many subjects over their limits add no series: the label set is fixed.
    for i in 0..30 {
        let token = server.cli_token_ttl("operator", &format!("op-flood-{i}"), "1h");
        burst(&server, 7, "GET", "/api/v1/pools", Some(&token), None).await;
    }
    let metrics = server.metrics_text().await;
    assert!(count_of(&metrics, "lucid_rate_limited_total{limit=\"token\"}") >= 30);
    let series: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("lucid_rate_limited_total{"))
        .collect();
    assert_eq!(series.len(), 2, "{series:?}");
    assert!(!metrics.contains("op-flood"));
}

#[tokio::test]
async fn a_nodes_heartbeats_count_against_its_token() {
    let server =
        TestServer::start_with(&[("TOKEN_RATE_LIMIT", "1"), ("TOKEN_RATE_BURST", "3")]).await;
    let (node, key) = server.register_node(&server.admin, "n").await;
    let id = node["node_id"].as_str().unwrap();
    let token = server.login_node(id, &key).await;
    let mut statuses = Vec::new();
    for seq in 1..=10 {
        let (s, headers, body) = server
            .call_full(
                "POST",
                &format!("/api/v1/nodes/{id}/heartbeat"),
                Some(&token),
                Some(heartbeat_body(id, &key, seq)),
            )
            .await;
        if s == 429 {
            assert_problem(s, &body, 429, "rate-limited");
            assert!(headers.contains_key("retry-after"));
        }
        statuses.push(s);
    }
    assert!(statuses[..3].iter().all(|s| *s == 202), "{statuses:?}");
    assert!(statuses.contains(&429), "{statuses:?}");
}

#[tokio::test]
async fn limits_set_to_zero_never_refuse() {
    let server =
        TestServer::start_with(&[("AUTH_RATE_LIMIT", "0"), ("TOKEN_RATE_LIMIT", "0")]).await;
    let (node, _) = server.register_node(&server.admin, "n").await;
    let id = node["node_id"].as_str().unwrap();
    let operator = server.cli_token("operator", "op-1");
    let answers = burst(
        &server,
        100,
        "POST",
        "/api/v1/auth/challenge",
        None,
        Some(json!({"node_id": id})),
    )
    .await;
    assert!(answers.iter().all(|a| a.0 == 200));
    let answers = burst(&server, 150, "GET", "/api/v1/nodes", Some(&operator), None).await;
    assert!(answers.iter().all(|a| a.0 == 200));
    let metrics = server.metrics_text().await;
    assert_eq!(
        count_of(&metrics, "lucid_rate_limited_total{limit=\"auth\"}"),
        0
    );
}

/// The keys a limiter holds (the `lucid_rate_limit_keys` gauge) fall back to none once the
/// subjects of a flood stop: memory follows recent traffic, not every subject ever seen.
#[tokio::test]
async fn a_flood_of_token_subjects_is_forgotten_once_their_bursts_refill() {
    let server = TestServer::start_with(&[
        ("AUTH_RATE_LIMIT", "0"),
        ("TOKEN_RATE_LIMIT", "1"),
        ("TOKEN_RATE_BURST", "1000"),
    ])
    .await;
    let keys = |metrics: &str| count_of(metrics, "lucid_rate_limit_keys{limit=\"token\"}");
    let mut tokens = Vec::new();
    for i in 0..200 {
        let (s, body) = server
            .call(
                "POST",
                "/api/v1/tokens",
                Some(&server.admin),
                Some(json!({"role": "operator", "subject": format!("op-flood-{i}"), "ttl_seconds": 3600})),
            )
            .await;
        assert_eq!(s, 201, "{body}");
        tokens.push(body["token"].as_str().unwrap().to_string());
    }
    // Each subject spends a few cells (a second each to refill); the last one 30.
    for (i, token) in tokens.iter().enumerate() {
        let n = if i == tokens.len() - 1 { 30 } else { 3 };
        let answers = burst(&server, n, "GET", "/api/v1/pools", Some(token), None).await;
        assert!(answers.iter().all(|a| a.0 == 200));
    }
    let held = keys(&server.metrics_text().await);
    assert!(held >= 1, "the limiter holds no key right after the flood");
    wait_until(std::time::Duration::from_secs(90), async || {
        match keys(&server.metrics_text().await) {
            0 => Ok(()),
            n => Err(format!("{n} keys still held")),
        }
    })
    .await;
}
