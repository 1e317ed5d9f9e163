//! One subscriber's stalled alert receiver (it takes the request and never answers) does
//! not hold up another subscriber's alerts.

use std::time::Duration;

use crate::common::*;
use serde_json::json;

async fn subscribe(server: &TestServer, token: &str, url: &str) {
    let (s, body) = server
        .call(
            "PUT",
            "/api/v1/alerts",
            Some(token),
            Some(json!({"webhook_url": url, "secret": "s3cret", "events": ["payout.created"]})),
        )
        .await;
    assert_eq!(s, 200, "{body}");
}

/// Credits a new node of `token`'s holder and runs payouts: its operator is owed a
/// `payout.created` alert.
async fn payout_for(server: &TestServer, token: &str) -> String {
    let (node, _) = server.register_node(token, "payee").await;
    let id = node["node_id"].as_str().unwrap().to_string();
    server.credit(&id, "2.5").await;
    let (s, run) = server
        .call("POST", "/api/v1/payouts/process", Some(&server.admin), None)
        .await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["created"].as_array().unwrap().len(), 1, "{run}");
    id
}

#[tokio::test]
async fn a_stalled_receiver_does_not_delay_another_subscribers_alerts() {
    // Alice's receiver records each request, then holds it far longer than the test runs;
    // the server waits for it up to ALERT_WEBHOOK_TIMEOUT, also longer than the test.
    let stalled = WebhookReceiver::start(
        "/hook",
        Answer::status(200).after(Duration::from_secs(3600)),
    )
    .await;
    let prompt = WebhookReceiver::start("/hook", Answer::status(200)).await;
    let server = TestServer::start_with(&[
        ("PAYOUT_THRESHOLD_USDT", "1"),
        ("ALERT_WEBHOOK_TIMEOUT", "1800s"),
    ])
    .await;
    let alice = server.cli_token("operator", "op-alice");
    let bob = server.cli_token("operator", "op-bob");
    subscribe(&server, &alice, &stalled.url).await;
    subscribe(&server, &bob, &prompt.url).await;

    payout_for(&server, &alice).await;
    wait_until(Duration::from_secs(30), async || match stalled.count() {
        0 => Err("alice's receiver has not been called yet"),
        _ => Ok(()),
    })
    .await;

    // Alice's delivery is hanging now; bob's alert, raised after it, still arrives.
    let bobs_node = payout_for(&server, &bob).await;
    let got = wait_until(Duration::from_secs(30), async || {
        let got: Vec<_> = prompt
            .received()
            .iter()
            .map(Received::json)
            .filter(|e| e["type"] == "payout.created")
            .collect();
        if got.is_empty() {
            Err("bob's payout.created has not arrived while alice's receiver stalls")
        } else {
            Ok(got)
        }
    })
    .await;
    assert_eq!(got[0]["node_id"], bobs_node.as_str(), "{got:?}");
    assert_eq!(got[0]["operator_id"], "op-bob");
    // Alice's receiver got her alert once and is still holding it (no retry was made).
    assert_eq!(stalled.count(), 1);
}
