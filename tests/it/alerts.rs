//! Alerts as an operator meets them: a webhook receiver started by the test, the real
//! agent binary stopped and started, the appliance SIGKILLed while the receiver fails.

use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::{json, Value};

const SECRET: &str = "alert-receiver-secret";

/// Alerts as a receiver sees them.
trait AlertHook {
    /// Events acknowledged with 2xx, each `event_id` once (a receiver drops duplicates).
    fn events(&self) -> Vec<Value>;

    fn of_type(&self, kind: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["type"] == kind)
            .collect()
    }

    /// Waits until `n` events of `kind` were acknowledged (or the limit passes); returns
    /// those there are.
    async fn wait_for(&self, kind: &str, n: usize, limit: Duration) -> Vec<Value> {
        poll_until(limit, POLL, async || {
            let got = self.of_type(kind);
            if got.len() >= n {
                Ok(got)
            } else {
                Err(got)
            }
        })
        .await
        .unwrap_or_else(|got| got)
    }
}

impl AlertHook for WebhookReceiver {
    fn events(&self) -> Vec<Value> {
        let mut ids = std::collections::HashSet::new();
        self.received()
            .iter()
            .filter(|d| d.answered < 300)
            .map(Received::json)
            .filter(|e| ids.insert(e["event_id"].as_str().unwrap().to_string()))
            .collect()
    }
}

/// A receiver of alerts at `/hook`, answering 200.
async fn alert_hook() -> WebhookReceiver {
    WebhookReceiver::start("/hook", Answer::status(200)).await
}

fn assert_well_formed(d: &Received) {
    assert!(
        d.signed_with(SECRET),
        "X-Lucid-Signature must verify: {d:?}"
    );
    let event = d.json();
    assert_eq!(event["event_id"], d.header("x-lucid-event-id").as_str());
    for field in ["event_id", "type", "at", "node_id", "operator_id"] {
        assert!(event[field].is_string(), "{field} missing in {event}");
    }
    assert!(event["detail"].is_object(), "{event}");
}

async fn put_alerts(server: &TestServer, token: &str, query: &str, body: Value) -> (u16, Value) {
    server
        .call(
            "PUT",
            &format!("/api/v1/alerts{query}"),
            Some(token),
            Some(body),
        )
        .await
}

/// The real agent keeps a node online; once it stops, exactly one `node.offline` arrives
/// after the grace (not at the first missed heartbeat), and one `node.online` when it is
/// back.
#[tokio::test]
async fn a_stopped_agent_brings_exactly_one_offline_alert_after_the_grace() {
    let receiver = alert_hook().await;
    let server = TestServer::start_with(&[("HEARTBEAT_TIMEOUT", "2")]).await;
    let operator = server.cli_token("operator", "op-alerts");
    let (s, settings) = put_alerts(
        &server,
        &operator,
        "",
        json!({"webhook_url": receiver.url, "secret": SECRET, "offline_after_seconds": 4}),
    )
    .await;
    assert_eq!(s, 200, "{settings}");
    assert_eq!(settings["secret_set"], true);
    assert!(
        settings.get("secret").is_none(),
        "the secret is never shown"
    );

    let (key, public) = keygen(server.data_dir(), "n.key");
    let (s, node) = server
        .call(
            "POST",
            "/api/v1/nodes",
            Some(&operator),
            Some(json!({"name": "edge-1", "public_key": public})),
        )
        .await;
    assert_eq!(s, 201, "{node}");
    let node_id = node["node_id"].as_str().unwrap().to_string();
    let args = |id: &str| {
        vec![
            "--server".to_string(),
            server.base.clone(),
            "--node-id".into(),
            id.to_string(),
            "--key".into(),
            key.display().to_string(),
            "--ca-cert".into(),
            cert(&server),
            "--interval".into(),
            "1s".into(),
        ]
    };
    let spawn = || {
        let a = args(&node_id);
        spawn_agent(
            server.data_dir(),
            &a.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    };
    let mut agent = spawn();
    wait_for_status(&server, &node_id, "online").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    agent.kill().unwrap();
    agent.wait().unwrap();
    let stopped = Instant::now();

    // Offline (HEARTBEAT_TIMEOUT 2 s) comes first; the alert only after the 4 s grace.
    wait_for_status(&server, &node_id, "offline").await;
    let offline = receiver
        .wait_for("node.offline", 1, Duration::from_secs(20))
        .await;
    assert_eq!(offline.len(), 1, "one node.offline: {offline:?}");
    assert!(
        stopped.elapsed() >= Duration::from_secs(3),
        "the alert waited for the grace"
    );
    assert_eq!(offline[0]["node_id"], node_id.as_str());
    assert_eq!(offline[0]["operator_id"], "op-alerts");
    assert_eq!(offline[0]["detail"]["name"], "edge-1");
    // Nothing more while it stays silent.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(receiver.of_type("node.offline").len(), 1);
    assert!(receiver.of_type("node.online").is_empty());

    let mut agent = spawn();
    let online = receiver
        .wait_for("node.online", 1, Duration::from_secs(20))
        .await;
    agent.kill().unwrap();
    agent.wait().unwrap();
    assert_eq!(online.len(), 1, "{online:?}");
    assert_eq!(online[0]["node_id"], node_id.as_str());
    for d in receiver.received() {
        assert_well_formed(&d);
    }
    let metrics = server.metrics_text().await;
    assert!(
        metrics.contains("lucid_alerts_sent_total{type=\"node.offline\"} 1"),
        "{metrics}"
    );
}

async fn wait_for_status(server: &TestServer, node_id: &str, status: &str) {
    wait_until(Duration::from_secs(20), async || {
        let node = node_json(server, node_id).await;
        if node["status"] == status {
            Ok(())
        } else {
            Err(format!("node never became {status}: {node}"))
        }
    })
    .await
}

/// A node that goes offline for a moment and comes back within the grace is not
/// reported: neither `node.offline` nor `node.online`.
#[tokio::test]
async fn a_node_back_within_the_grace_causes_no_alert() {
    let receiver = alert_hook().await;
    let server = TestServer::start_with(&[("HEARTBEAT_TIMEOUT", "1")]).await;
    let operator = server.cli_token("operator", "op-flap");
    let (s, _) = put_alerts(
        &server,
        &operator,
        "",
        json!({"webhook_url": receiver.url, "secret": SECRET, "offline_after_seconds": 8}),
    )
    .await;
    assert_eq!(s, 200);
    let (node, key) = server.register_node(&operator, "flappy").await;
    let node_id = node["node_id"].as_str().unwrap().to_string();
    let token = server.login_node(&node_id, &key).await;
    let beat = |seq: u64| {
        let body = heartbeat_body(&node_id, &key, seq);
        let token = token.clone();
        let server = &server;
        let path = format!("/api/v1/nodes/{node_id}/heartbeat");
        async move {
            let (s, b) = server.call("POST", &path, Some(&token), Some(body)).await;
            assert_eq!(s, 202, "{b}");
        }
    };
    beat(1).await;
    // Silent past HEARTBEAT_TIMEOUT: the node is offline, but not for the 8 s grace.
    wait_for_status(&server, &node_id, "offline").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    beat(2).await;
    // Keep it online until well past the moment the grace would have ended.
    for seq in 3..12 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        beat(seq).await;
    }
    assert_eq!(receiver.count(), 0, "{:?}", receiver.events());
}

/// A payout event survives a receiver answering 500 and a SIGKILL of the appliance:
/// it arrives (once per event_id) after the restart. The fleet hook hears about every
/// operator's nodes; an operator's hook only about their own.
#[tokio::test]
async fn payout_alerts_arrive_after_failures_and_a_sigkill() {
    let operator_hook = alert_hook().await;
    let fleet_hook = alert_hook().await;
    operator_hook.answer_with(Answer::status(500));
    let mut server =
        TestServer::start_with(&[("ALERT_RETRY_BASE", "1s"), ("PAYOUT_THRESHOLD_USDT", "1")]).await;
    let admin = server.admin.clone();
    let alice = server.cli_token("operator", "alice");
    let bob = server.cli_token("operator", "bob");
    let (s, _) = put_alerts(
        &server,
        &alice,
        "",
        json!({"webhook_url": operator_hook.url, "secret": SECRET,
               "events": ["payout.created", "payout.confirmed", "payout.failed"]}),
    )
    .await;
    assert_eq!(s, 200);
    let (s, fleet) = put_alerts(
        &server,
        &admin,
        "",
        json!({"webhook_url": fleet_hook.url, "secret": SECRET}),
    )
    .await;
    assert_eq!(s, 200, "{fleet}");
    assert_eq!(fleet["scope"], "fleet");

    let mut nodes = Vec::new();
    for token in [&alice, &bob] {
        let (node, _) = server.register_node(token, "payee").await;
        let id = node["node_id"].as_str().unwrap().to_string();
        let (s, e) = server
            .call(
                "POST",
                &format!("/api/v1/nodes/{id}/ledger"),
                Some(&admin),
                Some(json!({"amount_usdt": "2.5", "reason": "work"})),
            )
            .await;
        assert_eq!(s, 201, "{e}");
        nodes.push(id);
    }
    let (s, run) = server
        .call("POST", "/api/v1/payouts/process", Some(&admin), None)
        .await;
    assert_eq!(s, 200, "{run}");
    assert_eq!(run["created"].as_array().unwrap().len(), 2);

    // Alice's receiver refuses at least once, then the appliance dies.
    wait_until_every(
        Duration::from_secs(20),
        Duration::from_millis(50),
        async || match operator_hook.count() {
            0 => Err("no delivery attempt"),
            _ => Ok(()),
        },
    )
    .await;
    server.kill();
    operator_hook.answer_with(Answer::status(200));
    server.restart();

    let created = operator_hook
        .wait_for("payout.created", 1, Duration::from_secs(30))
        .await;
    assert_eq!(created.len(), 1, "{created:?}");
    assert_eq!(
        created[0]["node_id"],
        nodes[0].as_str(),
        "only alice's node"
    );
    assert_eq!(created[0]["detail"]["amount_usdt"], "2.500000");
    let fleet_created = fleet_hook
        .wait_for("payout.created", 2, Duration::from_secs(30))
        .await;
    assert_eq!(fleet_created.len(), 2, "the fleet hook hears of both");

    // Confirm alice's payout, fail bob's: each event reaches who should hear it.
    let payout_of = |n: usize| {
        run["created"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["node_id"] == nodes[n].as_str())
            .unwrap()["payout_id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (s, e) = server
        .call(
            "POST",
            &format!("/api/v1/payouts/{}/confirm", payout_of(0)),
            Some(&admin),
            Some(json!({"tx_hash": "ab".repeat(32)})),
        )
        .await;
    assert_eq!(s, 200, "{e}");
    let (s, e) = server
        .call(
            "POST",
            &format!("/api/v1/payouts/{}/fail", payout_of(1)),
            Some(&admin),
            Some(json!({"reason": "address frozen"})),
        )
        .await;
    assert_eq!(s, 200, "{e}");
    let confirmed = operator_hook
        .wait_for("payout.confirmed", 1, Duration::from_secs(20))
        .await;
    assert_eq!(confirmed.len(), 1);
    assert_eq!(confirmed[0]["detail"]["tx_hash"], "ab".repeat(32));
    let failed = fleet_hook
        .wait_for("payout.failed", 1, Duration::from_secs(20))
        .await;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["detail"]["reason"], "address frozen");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        operator_hook.of_type("payout.failed").is_empty(),
        "bob's failure is not alice's business"
    );
    for d in operator_hook
        .received()
        .iter()
        .chain(fleet_hook.received().iter())
    {
        assert_well_formed(d);
    }
    let metrics = server.metrics_text().await;
    assert!(metrics.contains("lucid_alerts_failed_total"), "{metrics}");
    assert!(metrics.contains("lucid_alerts_queued 0"), "{metrics}");
}

/// Settings are private: an operator reads and changes only their own; bad settings get
/// a problem with a reason; the secret is never shown.
#[tokio::test]
async fn operators_cannot_read_or_change_each_others_alert_settings() {
    let server = TestServer::start().await;
    let admin = server.admin.clone();
    let alice = server.cli_token("operator", "alice");
    let bob = server.cli_token("operator", "bob");
    let hook = json!({"webhook_url": "https://127.0.0.1:9/alice", "secret": "s"});

    let (s, body) = put_alerts(&server, &alice, "", hook.clone()).await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(body["operator_id"], "alice");
    assert_eq!(body["offline_after_seconds"], 300);
    assert_eq!(body["events"].as_array().unwrap().len(), 5);

    for (method, body) in [("GET", None), ("PUT", Some(hook.clone())), ("DELETE", None)] {
        let (s, e) = server
            .call(method, "/api/v1/alerts?operator_id=alice", Some(&bob), body)
            .await;
        assert_problem(s, &e, 403, "forbidden");
    }
    let (s, own) = server.call("GET", "/api/v1/alerts", Some(&bob), None).await;
    assert_eq!(s, 200);
    assert_eq!(
        own["configured"], false,
        "bob sees his own (empty) settings"
    );

    let (s, seen) = server
        .call(
            "GET",
            "/api/v1/alerts?operator_id=alice",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(seen["webhook_url"], "https://127.0.0.1:9/alice");
    assert_eq!(seen["secret_set"], true);
    assert!(!seen.to_string().contains("\"s\""), "no secret: {seen}");
    let (s, fleet) = server
        .call("GET", "/api/v1/alerts", Some(&admin), None)
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        fleet["configured"], false,
        "alice's hook is not the fleet hook"
    );

    let (node, key) = server.register_node(&alice, "n").await;
    let node_token = server
        .login_node(node["node_id"].as_str().unwrap(), &key)
        .await;
    let (s, e) = server
        .call("GET", "/api/v1/alerts", Some(&node_token), None)
        .await;
    assert_problem(s, &e, 403, "forbidden");
    let (s, e) = server.call("GET", "/api/v1/alerts", None, None).await;
    assert_eq!(s, 401, "{e}");

    for bad in [
        json!({"webhook_url": "ftp://x/y", "secret": "s"}),
        json!({"webhook_url": "https://h/x", "secret": "s", "offline_after_seconds": 0}),
        json!({"webhook_url": "https://h/x", "secret": "s", "events": ["node.exploded"]}),
        json!({"webhook_url": "https://h/x"}),
        json!({"webhook_url": "https://h/x", "secret": "s", "colour": "red"}),
    ] {
        let (s, e) = put_alerts(&server, &bob, "", bad.clone()).await;
        assert_eq!(s, 400, "{bad} -> {e}");
        assert!(e["detail"].as_str().is_some_and(|d| !d.is_empty()), "{e}");
    }
    let (_, still) = server.call("GET", "/api/v1/alerts", Some(&bob), None).await;
    assert_eq!(still["configured"], false, "refused settings leave nothing");

    // Changing the grace keeps the secret that is not sent again.
    let (s, changed) = put_alerts(
        &server,
        &alice,
        "",
        json!({"webhook_url": "https://127.0.0.1:9/alice2", "offline_after_seconds": 60}),
    )
    .await;
    assert_eq!(s, 200, "{changed}");
    assert_eq!(changed["secret_set"], true);
    assert_eq!(changed["offline_after_seconds"], 60);

    let (s, _) = server
        .call("DELETE", "/api/v1/alerts", Some(&alice), None)
        .await;
    assert_eq!(s, 204);
    let (_, gone) = server
        .call("GET", "/api/v1/alerts", Some(&alice), None)
        .await;
    assert_eq!(gone["configured"], false);
}
