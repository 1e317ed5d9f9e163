//! Payouts with the offline ledger sink: threshold boundaries, the state machine, export,
//! duplicate receipts, concurrency, and the money invariants checked by `verify`.

use crate::common::*;
use futures::future::join_all;
use serde_json::{json, Value};

async fn node_with_balance(
    server: &TestServer,
    name: &str,
    amount: &str,
    address: Option<&str>,
) -> String {
    let key = node_key();
    let mut body = json!({"name": name, "public_key": public_b64(&key)});
    if let Some(a) = address {
        body["payout_address"] = json!(a);
    }
    let (status, node) = server
        .call("POST", "/api/v1/nodes", Some(&server.admin), Some(body))
        .await;
    assert_eq!(status, 201, "{node}");
    let id = node["node_id"].as_str().unwrap().to_string();
    server.credit(&id, amount).await;
    id
}

async fn balance(server: &TestServer, id: &str) -> String {
    let p = payouts_json(server, id).await;
    p["balance_usdt"].as_str().unwrap().to_string()
}

fn tx(n: u8) -> String {
    format!("{:064x}", n as u128 + 0xabc)
}

#[tokio::test]
async fn threshold_boundaries_state_machine_and_export() {
    let mut server = TestServer::start().await;
    let at = node_with_balance(&server, "at", "10.000000", Some(TRON_ADDRESS)).await;
    let below = node_with_balance(&server, "below", "9.999999", Some(TRON_ADDRESS)).await;
    let no_address = node_with_balance(&server, "none", "25", None).await;
    let gone = node_with_balance(&server, "gone", "15.5", Some(TRON_ADDRESS)).await;
    let (s, _) = server
        .call(
            "DELETE",
            &format!("/api/v1/nodes/{gone}"),
            Some(&server.admin),
            None,
        )
        .await;
    assert_eq!(s, 204);

    // Only admins run payouts.
    let op = server.cli_token("operator", "op-x");
    let (s, body) = server
        .call("POST", "/api/v1/payouts/process", Some(&op), None)
        .await;
    assert_problem(s, &body, 403, "forbidden");

    let (s, run) = server
        .call("POST", "/api/v1/payouts/process", Some(&server.admin), None)
        .await;
    assert_eq!(s, 200, "{run}");
    let created = run["created"].as_array().unwrap();
    let paid: Vec<&str> = created
        .iter()
        .map(|p| p["node_id"].as_str().unwrap())
        .collect();
    assert_eq!(created.len(), 2, "{run}");
    assert!(paid.contains(&at.as_str()), "exactly at the threshold pays");
    assert!(
        paid.contains(&gone.as_str()),
        "a deregistered node is still paid"
    );
    assert_eq!(
        run["skipped"], 2,
        "one micro below and no address are skipped"
    );
    let p_at = created
        .iter()
        .find(|p| p["node_id"] == at.as_str())
        .unwrap();
    assert_eq!(p_at["amount_usdt"], "10.000000");
    assert_eq!(p_at["state"], "pending");
    assert_eq!(p_at["payout_address"], TRON_ADDRESS);
    assert_eq!(p_at["attempts"], 0);
    assert!(p_at["payout_id"].as_str().unwrap().starts_with("payout_"));
    assert_eq!(balance(&server, &at).await, "0.000000");
    assert_eq!(balance(&server, &below).await, "9.999999");
    assert_eq!(balance(&server, &no_address).await, "25.000000");

    // A second run pays nothing new.
    let (_, again) = server
        .call("POST", "/api/v1/payouts/process", Some(&server.admin), None)
        .await;
    assert_eq!(again["created"].as_array().unwrap().len(), 0);

    // The node's view.
    let view = payouts_json(&server, &at).await;
    assert_eq!(view["threshold_usdt"], "10.000000");
    assert_eq!(view["payouts"].as_array().unwrap().len(), 1);

    // Export for the treasury.
    let (s, page) = server
        .call(
            "GET",
            "/api/v1/payouts?state=pending&format=json",
            Some(&server.admin),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let csv = server
        .client
        .get(server.url("/api/v1/payouts?state=pending&format=csv"))
        .bearer_auth(&server.admin)
        .send()
        .await
        .unwrap();
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let csv = csv.text().await.unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(csv.starts_with("payout_id,node_id,amount_usdt"));
    assert!(csv.contains(",10.000000,") && csv.contains(",15.500000,"));
    let (s, body) = server
        .call(
            "GET",
            "/api/v1/payouts?format=xml",
            Some(&server.admin),
            None,
        )
        .await;
    assert_problem(s, &body, 400, "validation");
    let (s, body) = server.call("GET", "/api/v1/payouts", Some(&op), None).await;
    assert_problem(s, &body, 403, "forbidden");

    // Confirm, and everything that must be refused around it.
    let id_at = p_at["payout_id"].as_str().unwrap().to_string();
    let id_gone = created
        .iter()
        .find(|p| p["node_id"] == gone.as_str())
        .unwrap()["payout_id"]
        .as_str()
        .unwrap()
        .to_string();
    let confirm = |id: &str| format!("/api/v1/payouts/{id}/confirm");
    let (s, body) = server
        .call(
            "POST",
            &confirm(&id_at),
            Some(&server.admin),
            Some(json!({"tx_hash": "0xnothex"})),
        )
        .await;
    assert_problem(s, &body, 400, "validation");
    let (s, body) = server
        .call(
            "POST",
            &confirm(&id_at),
            Some(&op),
            Some(json!({"tx_hash": tx(1)})),
        )
        .await;
    assert_problem(s, &body, 403, "forbidden");
    let (s, body) = server
        .call(
            "POST",
            &confirm("payout_unknown"),
            Some(&server.admin),
            Some(json!({"tx_hash": tx(1)})),
        )
        .await;
    assert_problem(s, &body, 404, "not-found");
    let (s, done) = server
        .call(
            "POST",
            &confirm(&id_at),
            Some(&server.admin),
            Some(json!({"tx_hash": tx(1)})),
        )
        .await;
    assert_eq!(s, 200, "{done}");
    assert_eq!(done["state"], "confirmed");
    assert_eq!(done["tx_hash"], tx(1));
    let (s, body) = server
        .call(
            "POST",
            &confirm(&id_at),
            Some(&server.admin),
            Some(json!({"tx_hash": tx(2)})),
        )
        .await;
    assert_problem(s, &body, 409, "invalid-state");
    // One receipt pays one payout.
    let (s, body) = server
        .call(
            "POST",
            &confirm(&id_gone),
            Some(&server.admin),
            Some(json!({"tx_hash": tx(1).to_uppercase()})),
        )
        .await;
    assert_problem(s, &body, 409, "duplicate-tx-hash");
    let (s, body) = server
        .call(
            "POST",
            &format!("/api/v1/payouts/{id_at}/fail"),
            Some(&server.admin),
            Some(json!({"reason": "late"})),
        )
        .await;
    assert_problem(s, &body, 409, "invalid-state");

    // Failing gives the amount back by a ledger entry.
    let (s, failed) = server
        .call(
            "POST",
            &format!("/api/v1/payouts/{id_gone}/fail"),
            Some(&server.admin),
            Some(json!({"reason": "bank said no"})),
        )
        .await;
    assert_eq!(s, 200, "{failed}");
    assert_eq!(failed["state"], "failed");
    assert_eq!(failed["error"], "bank said no");
    assert_eq!(balance(&server, &gone).await, "15.500000");
    let (_, ledger) = server
        .call(
            "GET",
            &format!("/api/v1/nodes/{gone}/ledger"),
            Some(&server.admin),
            None,
        )
        .await;
    let kinds: Vec<&str> = ledger["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["adjustment", "debit", "recredit"]);
    assert_eq!(ledger["items"][1]["amount_usdt"], "-15.500000");

    // An adjustment may not make a balance negative.
    let (s, body) = server
        .call(
            "POST",
            &format!("/api/v1/nodes/{below}/ledger"),
            Some(&server.admin),
            Some(json!({"amount_usdt": "-10", "reason": "x"})),
        )
        .await;
    assert_problem(s, &body, 422, "negative-balance");

    // Metrics.
    let text = server.metrics_text().await;
    assert!(
        text.contains("lucid_payouts{state=\"confirmed\"} 1"),
        "{text}"
    );
    assert!(text.contains("lucid_payouts{state=\"failed\"} 1"));
    assert!(text.contains("lucid_payouts_paid_usdt 10"));
    assert!(text.contains("lucid_payout_last_run_timestamp_seconds"));

    // The money invariants hold on disk.
    server.kill();
    server.verify_offline();
}

#[tokio::test]
async fn a_changed_threshold_applies_from_the_next_run() {
    let mut server = TestServer::start_with(&[("PAYOUT_THRESHOLD_USDT", "10")]).await;
    let id = node_with_balance(&server, "n", "7.5", Some(TRON_ADDRESS)).await;
    let (_, run) = server
        .call("POST", "/api/v1/payouts/process", Some(&server.admin), None)
        .await;
    assert_eq!(run["created"].as_array().unwrap().len(), 0);
    server.set_env("PAYOUT_THRESHOLD_USDT", "5");
    server.restart();
    let (_, run) = server
        .call("POST", "/api/v1/payouts/process", Some(&server.admin), None)
        .await;
    assert_eq!(run["created"].as_array().unwrap().len(), 1);
    assert_eq!(run["created"][0]["node_id"], id.as_str());
    let view = payouts_json(&server, &id).await;
    assert_eq!(view["threshold_usdt"], "5.000000");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_runs_create_no_duplicate_payout() {
    let mut server = TestServer::start().await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(node_with_balance(&server, &format!("n{i}"), "11", Some(TRON_ADDRESS)).await);
    }
    let runs =
        (0..30).map(|_| server.call("POST", "/api/v1/payouts/process", Some(&server.admin), None));
    let results: Vec<(u16, Value)> = join_all(runs).await;
    let mut created: Vec<String> = Vec::new();
    for (s, r) in &results {
        assert_eq!(*s, 200, "{r}");
        created.extend(
            r["created"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["node_id"].as_str().unwrap().to_string()),
        );
    }
    created.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(created, expected, "each due node paid exactly once");
    for id in &ids {
        let v = payouts_json(&server, id).await;
        assert_eq!(v["payouts"].as_array().unwrap().len(), 1);
        assert_eq!(v["balance_usdt"], "0.000000");
    }
    // The money invariants hold on disk.
    server.kill();
    let out = run_cli(server.data_dir(), &[], &["verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("payouts: 20 payouts, each matched by exactly one debit"),
        "{stdout}"
    );
}
