//! Webhooks that reach where they should not (issue 16): alert hooks and the payment
//! service are refused when their host is, or resolves to, a loopback, link-local, private
//! or other non-public address, unless `WEBHOOK_ALLOWED_NETWORKS` allows it; redirects are
//! not followed; the audit trail shows a hook's scheme and host only.
//!
//! Every address here is refused before any connection is attempted: nothing is ever sent
//! anywhere but loopback (the receivers these tests start).

use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::*;
use axum::response::IntoResponse;
use serde_json::{json, Value};

const SECRET: &str = "ssrf-test-secret";

async fn put_hook(server: &TestServer, token: &str, url: &str) -> (u16, Value) {
    server
        .call(
            "PUT",
            "/api/v1/alerts",
            Some(token),
            Some(json!({"webhook_url": url, "secret": SECRET})),
        )
        .await
}

/// Credits a node of `operator` and runs payouts, so every hook hears `payout.created`.
async fn cause_a_payout(server: &TestServer, operator: &str) {
    let (node, _) = server.register_node(operator, "payee").await;
    let id = node["node_id"].as_str().unwrap();
    let (s, e) = server
        .call(
            "POST",
            &format!("/api/v1/nodes/{id}/ledger"),
            Some(&server.admin),
            Some(json!({"amount_usdt": "2.5", "reason": "work"})),
        )
        .await;
    assert_eq!(s, 201, "{e}");
    let (s, run) = server
        .call("POST", "/api/v1/payouts/process", Some(&server.admin), None)
        .await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["created"].as_array().unwrap().len(), 1, "{run}");
}

/// A loopback server answering every request (any method, any path) with `answer`, and
/// counting them.
async fn any_method_server(
    answer: impl Fn() -> axum::response::Response + Clone + Send + Sync + 'static,
) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().fallback(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        let answer = answer.clone();
        async move { answer() }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, hits)
}

/// With `WEBHOOK_ALLOWED_NETWORKS` empty, loopback (by address, IPv6, another spelling or
/// name), the cloud metadata address and a private address are refused with 422
/// `webhook-address-refused`, nothing is stored, and the loopback receiver hears nothing.
#[tokio::test]
async fn non_public_hooks_are_refused_before_anything_is_sent() {
    let receiver = WebhookReceiver::start("/hook", Answer::status(200)).await;
    let port = receiver
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let server = TestServer::start_with(&[
        ("WEBHOOK_ALLOWED_NETWORKS", ""),
        ("ALERT_RETRY_BASE", "1s"),
        ("PAYOUT_THRESHOLD_USDT", "1"),
    ])
    .await;
    let alice = server.cli_token("operator", "alice");
    let refused = [
        receiver.url.clone(),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.1/hook".to_string(),
        format!("http://[::1]:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        format!("http://2130706433:{port}/hook"),
        format!("http://localhost:{port}/hook"),
        format!("http://100.64.0.1:{port}/hook"),
        "http://0.0.0.0/hook".to_string(),
    ];
    for url in &refused {
        for token in [&alice, &server.admin] {
            let (s, body) = put_hook(&server, token, url).await;
            assert_problem(s, &body, 422, "webhook-address-refused");
            let detail = body["detail"].as_str().unwrap();
            assert!(detail.contains("WEBHOOK_ALLOWED_NETWORKS"), "{detail}");
            assert!(
                !detail.contains("/hook") && !detail.contains("meta-data"),
                "{detail}"
            );
        }
    }
    let (s, settings) = server
        .call("GET", "/api/v1/alerts", Some(&alice), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(settings["configured"], false, "{settings}");
    // The contract documents it.
    let (s, doc) = server.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(s, 200);
    let refused = &doc["paths"]["/api/v1/alerts"]["put"]["responses"]["422"];
    assert!(
        refused["description"]
            .as_str()
            .is_some_and(|d| d.contains("webhook-address-refused")),
        "{refused}"
    );
    // Not a URL at all stays a validation error.
    let (s, body) = put_hook(&server, &alice, "ftp://example.com/x").await;
    assert_problem(s, &body, 400, "validation");

    // Events happen; there is nowhere to send them.
    cause_a_payout(&server, &alice).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.count(), 0, "{:?}", receiver.received());
}

/// With `WEBHOOK_ALLOWED_NETWORKS=127.0.0.0/8` the loopback receiver is accepted and gets
/// the alert; the owner still reads the whole URL back, but the audit event of
/// `alerts.set` holds its scheme and host only (no path, no query).
#[tokio::test]
async fn an_allowed_network_is_reached_and_the_audit_trail_shows_scheme_and_host_only() {
    let receiver = WebhookReceiver::start("/T0123/secret-path", Answer::status(200)).await;
    let url = format!("{}?token=query-secret", receiver.url);
    let server = TestServer::start_with(&[
        ("WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8"),
        ("PAYOUT_THRESHOLD_USDT", "1"),
    ])
    .await;
    let alice = server.cli_token("operator", "alice");
    let (s, body) = put_hook(&server, &alice, &url).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["webhook_url"], url.as_str());
    // Still refused: loopback by IPv6 is outside 127.0.0.0/8.
    let port = receiver
        .url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap();
    let (s, body) = put_hook(&server, &alice, &format!("http://[::1]:{port}/x")).await;
    assert_problem(s, &body, 422, "webhook-address-refused");

    cause_a_payout(&server, &alice).await;
    let got = poll_until(Duration::from_secs(20), POLL, async || {
        match receiver.count() {
            0 => Err(()),
            _ => Ok(receiver.received()),
        }
    })
    .await
    .expect("the allowed receiver gets the alert");
    assert_eq!(got[0].json()["type"], "payout.created");
    assert!(got[0].signed_with(SECRET));

    let (s, settings) = server
        .call("GET", "/api/v1/alerts", Some(&alice), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        settings["webhook_url"],
        url.as_str(),
        "the owner sees it as today"
    );

    let events = paginate_all(&server, "/api/v1/audit", &server.admin).await;
    let set: Vec<&Value> = events
        .iter()
        .filter(|e| e["action"] == "alerts.set")
        .collect();
    assert_eq!(set.len(), 1, "{events:?}");
    let host = receiver.url.split("/T0123").next().unwrap();
    assert_eq!(set[0]["detail"]["webhook_url"], host, "{}", set[0]);
    let whole = set[0].to_string();
    assert!(
        !whole.contains("secret-path") && !whole.contains("query-secret"),
        "{whole}"
    );
}

/// A hook answering 302 or 307 to another URL is not followed: the redirect target hears
/// nothing, and the redirecting hook is retried as a failed attempt.
#[tokio::test]
async fn redirects_are_not_followed() {
    let (target, target_hits) =
        any_method_server(|| axum::http::StatusCode::OK.into_response()).await;
    let to = format!("{target}/stolen");
    let to_302 = to.clone();
    let (redirect_302, hits_302) =
        any_method_server(move || redirect(axum::http::StatusCode::FOUND, &to_302)).await;
    let (redirect_307, hits_307) =
        any_method_server(move || redirect(axum::http::StatusCode::TEMPORARY_REDIRECT, &to)).await;
    let server = TestServer::start_with(&[
        ("WEBHOOK_ALLOWED_NETWORKS", "127.0.0.0/8"),
        ("ALERT_RETRY_BASE", "1s"),
        ("PAYOUT_THRESHOLD_USDT", "1"),
    ])
    .await;
    let alice = server.cli_token("operator", "alice");
    let (s, body) = put_hook(&server, &alice, &format!("{redirect_302}/hook")).await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = put_hook(&server, &server.admin, &format!("{redirect_307}/hook")).await;
    assert_eq!(s, 200, "{body}");

    cause_a_payout(&server, &alice).await;
    // Each hook is tried, fails (a 3xx is no 2xx) and is tried again.
    wait_until(Duration::from_secs(30), async || {
        let (a, b) = (
            hits_302.load(Ordering::SeqCst),
            hits_307.load(Ordering::SeqCst),
        );
        // A followed redirect reaches the target: stop waiting, the assert below says so.
        if (a >= 2 && b >= 2) || target_hits.load(Ordering::SeqCst) > 0 {
            Ok(())
        } else {
            Err(format!("302 hook: {a} attempts, 307 hook: {b}"))
        }
    })
    .await;
    assert_eq!(
        target_hits.load(Ordering::SeqCst),
        0,
        "a redirect was followed"
    );
}

fn redirect(status: axum::http::StatusCode, to: &str) -> axum::response::Response {
    (status, [(axum::http::header::LOCATION, to.to_string())]).into_response()
}

/// A `PAYOUT_WEBHOOK_URL` the guard refuses stops the start with one line naming the
/// variable (and not the URL's path or query); nothing listens.
#[tokio::test]
async fn a_refused_payout_webhook_url_stops_the_start() {
    for url in [
        "http://169.254.169.254/pay?key=query-secret",
        "http://127.0.0.1:9/pay?key=query-secret",
        "http://[fd00::1]/pay?key=query-secret",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let env: Vec<(String, String)> = [
            ("WEBHOOK_ALLOWED_NETWORKS", ""),
            ("PAYOUT_SINK", "webhook"),
            ("PAYOUT_WEBHOOK_URL", url),
            ("PAYOUT_WEBHOOK_SECRET", "payment-secret"),
            ("NODE_MANAGEMENT_PORT", "0"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let mut child = command(dir.path(), &env)
            .arg("serve")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if started.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                panic!("{url}: the service started");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let out = child.wait_with_output().unwrap();
        assert!(!status.success(), "{url}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{url}: {stderr}");
        assert!(lines[0].contains("PAYOUT_WEBHOOK_URL"), "{stderr}");
        assert!(lines[0].contains("WEBHOOK_ALLOWED_NETWORKS"), "{stderr}");
        assert!(!lines[0].contains("query-secret"), "{stderr}");
    }
}
