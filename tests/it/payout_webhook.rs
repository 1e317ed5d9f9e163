//! The webhook sink, exactly once across crashes: a real HTTP payment service in this test
//! records every request and answers 500, hangs past the timeout, answers garbage, or pays;
//! meanwhile the appliance is SIGKILLed at random moments and restarted. At the end every
//! payout was paid exactly once by the receiver (by idempotency key), confirmed with that
//! receipt, no balance is negative, and credited = paid + balances.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use rand::Rng;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const SECRET: &str = "payment-service-shared-secret";

#[derive(Default)]
struct Ledger {
    /// idempotency key -> (amount, tx hash): paid once per key.
    paid: HashMap<String, (String, String)>,
    requests: u64,
    bad_signatures: u64,
    /// Answer only successes from now on.
    calm: bool,
}

/// The payment service's answer to one request: until it is calm, a quarter of the
/// requests get 500, a tenth garbage, and a tenth are paid but answered too late.
fn pay(ledger: &Mutex<Ledger>, req: &Received) -> Answer {
    let key = req.header("idempotency-key");
    let signed_ok = req.signed_with(SECRET);
    let request = req.json();
    let roll: u32 = rand::thread_rng().gen_range(0..100);
    let calm = {
        let mut l = ledger.lock().unwrap();
        l.requests += 1;
        if !signed_ok {
            l.bad_signatures += 1;
            return Answer::text(401, "bad signature");
        }
        assert_eq!(
            request["payout_id"],
            key.as_str(),
            "the payout id is the idempotency key"
        );
        l.calm
    };
    if !calm {
        match roll {
            0..=24 => return Answer::text(500, "try later"),
            25..=34 => return Answer::text(200, "<html>not json</html>"),
            35..=44 => {
                // Pay, then hang past the appliance's timeout: it must retry with the same
                // key and get the same receipt, not a second payment.
                record(ledger, &key, &request);
                return Answer::text(200, "too late").after(Duration::from_secs(3));
            }
            _ => {}
        }
    }
    let tx_hash = record(ledger, &key, &request);
    Answer::json(200, json!({"tx_hash": tx_hash}))
}

/// Pays once per idempotency key; a repeated key gets the first receipt back.
fn record(ledger: &Mutex<Ledger>, key: &str, request: &Value) -> String {
    let mut l = ledger.lock().unwrap();
    let amount = request["amount_usdt"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    l.paid
        .entry(key.to_string())
        .or_insert_with(|| (amount, hex::encode(Sha256::digest(key.as_bytes()))))
        .1
        .clone()
}

/// The payment service at `/pay`: its ledger, and the receiver serving it.
async fn start_receiver() -> (Arc<Mutex<Ledger>>, WebhookReceiver) {
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let paying = ledger.clone();
    let receiver = WebhookReceiver::answering("/pay", move |req| pay(&paying, req)).await;
    (ledger, receiver)
}

fn micros(s: &str) -> i128 {
    let (whole, frac) = s.split_once('.').unwrap_or((s, "0"));
    let sign = if whole.starts_with('-') { -1 } else { 1 };
    let frac = format!("{frac:0<6}");
    sign * (whole.trim_start_matches('-').parse::<i128>().unwrap() * 1_000_000
        + frac[..6].parse::<i128>().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_payout_is_paid_exactly_once_across_sigkills() {
    let (receiver, payment_service) = start_receiver().await;
    let url = payment_service.url.clone();
    let mut server = TestServer::start_with(&[
        ("PAYOUT_SINK", "webhook"),
        ("PAYOUT_WEBHOOK_URL", &url),
        ("PAYOUT_WEBHOOK_SECRET", SECRET),
        ("PAYOUT_WEBHOOK_TIMEOUT", "1s"),
        ("PAYOUT_RETRY_BASE", "1s"),
        ("PAYOUT_MAX_RETRIES", "30"),
        ("PAYOUT_THRESHOLD_USDT", "1"),
    ])
    .await;
    let admin = server.admin.clone();
    let mut nodes = Vec::new();
    for i in 0..12 {
        let (node, _) = server.register_node(&admin, &format!("n{i}")).await;
        nodes.push(node["node_id"].as_str().unwrap().to_string());
    }
    let mut credited: i128 = 0;
    for round in 0..6 {
        // New money, a payout run, then the plug is pulled at a random moment.
        for (i, id) in nodes.iter().enumerate() {
            let amount = format!("{}.{:06}", 1 + (i + round) % 5, 1000 * (i + 1));
            let (s, _) = server
                .call(
                    "POST",
                    &format!("/api/v1/nodes/{id}/ledger"),
                    Some(&admin),
                    Some(json!({"amount_usdt": amount, "reason": "work"})),
                )
                .await;
            assert_eq!(s, 201);
            credited += micros(&amount);
        }
        let (s, run) = server
            .call("POST", "/api/v1/payouts/process", Some(&admin), None)
            .await;
        assert_eq!(s, 200, "{run}");
        let pause = rand::thread_rng().gen_range(50..1500);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        server.kill();
        server.restart();
    }
    receiver.lock().unwrap().calm = true;

    // Let delivery finish: no payout left open.
    wait_until_every(
        Duration::from_secs(60),
        Duration::from_millis(500),
        async || {
            let mut open = 0;
            for state in ["pending", "submitted"] {
                let (_, page) = server
                    .call(
                        "GET",
                        &format!("/api/v1/payouts?state={state}&limit=500"),
                        Some(&admin),
                        None,
                    )
                    .await;
                open += page["items"].as_array().unwrap().len();
            }
            match open {
                0 => Ok(()),
                _ => Err(format!(
                    "{open} payouts still open after the receiver calmed down"
                )),
            }
        },
    )
    .await;

    let (_, confirmed) = server
        .call(
            "GET",
            "/api/v1/payouts?state=confirmed&limit=500",
            Some(&admin),
            None,
        )
        .await;
    let confirmed = confirmed["items"].as_array().unwrap().clone();
    let (_, failed) = server
        .call(
            "GET",
            "/api/v1/payouts?state=failed&limit=500",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        failed["items"].as_array().unwrap().len(),
        0,
        "30 retries: nothing gives up"
    );
    // A snapshot of what the receiver saw (no lock held across the awaits below).
    let ledger = {
        let l = receiver.lock().unwrap();
        Ledger {
            paid: l.paid.clone(),
            requests: l.requests,
            bad_signatures: l.bad_signatures,
            calm: l.calm,
        }
    };
    assert_eq!(
        ledger.bad_signatures, 0,
        "every request carried a valid HMAC signature"
    );
    assert!(
        ledger.requests as usize > confirmed.len(),
        "the chaos caused retries"
    );
    assert_eq!(
        ledger.paid.len(),
        confirmed.len(),
        "one payment per confirmed payout"
    );
    let mut paid_total: i128 = 0;
    for p in &confirmed {
        let id = p["payout_id"].as_str().unwrap();
        let (amount, tx_hash) = ledger
            .paid
            .get(id)
            .unwrap_or_else(|| panic!("{id} confirmed but never paid"));
        assert_eq!(
            p["tx_hash"].as_str().unwrap(),
            tx_hash,
            "confirmed with the receiver's receipt"
        );
        assert_eq!(p["amount_usdt"].as_str().unwrap(), amount);
        paid_total += micros(amount);
    }
    let mut balances: i128 = 0;
    for id in &nodes {
        let (_, v) = server
            .call("GET", &format!("/api/v1/payouts/{id}"), Some(&admin), None)
            .await;
        let b = micros(v["balance_usdt"].as_str().unwrap());
        assert!(b >= 0, "negative balance");
        balances += b;
    }
    assert_eq!(
        credited,
        paid_total + balances,
        "credited = paid + balances"
    );
    server.kill();
    server.verify_offline();
}

async fn one_payout(url: &str) -> (TestServer, String) {
    let server = TestServer::start_with(&[
        ("PAYOUT_SINK", "webhook"),
        ("PAYOUT_WEBHOOK_URL", url),
        ("PAYOUT_WEBHOOK_SECRET", SECRET),
        ("PAYOUT_RETRY_BASE", "1s"),
        ("PAYOUT_MAX_RETRIES", "2"),
    ])
    .await;
    let (node, _) = server.register_node(&server.admin, "n").await;
    let id = node["node_id"].as_str().unwrap().to_string();
    server
        .call(
            "POST",
            &format!("/api/v1/nodes/{id}/ledger"),
            Some(&server.admin),
            Some(json!({"amount_usdt": "12", "reason": "work"})),
        )
        .await;
    let (_, run) = server
        .call("POST", "/api/v1/payouts/process", Some(&server.admin), None)
        .await;
    assert_eq!(run["created"].as_array().unwrap().len(), 1);
    (server, id)
}

/// The node's payouts (`GET /payouts/{id}`) once its first payout is `done`.
async fn wait_for_payout(server: &TestServer, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    wait_until_every(
        Duration::from_secs(10),
        Duration::from_millis(250),
        async || {
            let v = payouts_json(server, id).await;
            if done(&v["payouts"][0]) {
                Ok(v)
            } else {
                Err(v)
            }
        },
    )
    .await
}

#[tokio::test]
async fn a_clear_refusal_fails_the_payout_after_bounded_retries_and_recredits_it() {
    let receiver = WebhookReceiver::start("/pay", Answer::text(422, "address is blocked")).await;
    let (server, id) = one_payout(&receiver.url).await;
    let last = wait_for_payout(&server, &id, |p| p["state"] == "failed").await;
    assert_eq!(last["payouts"][0]["state"], "failed", "{last}");
    assert_eq!(last["payouts"][0]["attempts"], 2);
    assert!(
        last["payouts"][0]["error"]
            .as_str()
            .unwrap()
            .contains("blocked"),
        "{last}"
    );
    assert_eq!(
        last["balance_usdt"], "12.000000",
        "the amount went back to the balance"
    );
}

#[tokio::test]
async fn garbage_answers_never_recredit_a_payout_that_may_have_been_paid() {
    let receiver = WebhookReceiver::start("/pay", Answer::text(200, "{\"tx_hash\": 42}")).await;
    let (server, id) = one_payout(&receiver.url).await;
    let last = wait_for_payout(&server, &id, |p| p["needs_attention"] == true).await;
    let payout = &last["payouts"][0];
    assert_eq!(payout["state"], "submitted", "{last}");
    assert_eq!(payout["needs_attention"], true, "{last}");
    assert!(
        payout["error"].as_str().unwrap().contains("tx_hash"),
        "{last}"
    );
    assert_eq!(
        last["balance_usdt"], "0.000000",
        "not re-credited while the outcome is unknown"
    );
    // An operator may fail it, but only deliberately.
    let pid = payout["payout_id"].as_str().unwrap();
    let fail = format!("/api/v1/payouts/{pid}/fail");
    let (s, body) = server
        .call(
            "POST",
            &fail,
            Some(&server.admin),
            Some(json!({"reason": "treasury: not paid"})),
        )
        .await;
    assert_problem(s, &body, 409, "payout-submitted");
    let (s, failed) = server
        .call(
            "POST",
            &fail,
            Some(&server.admin),
            Some(json!({"reason": "treasury: not paid", "force": true})),
        )
        .await;
    assert_eq!(s, 200, "{failed}");
    assert_eq!(failed["state"], "failed");
    let v = payouts_json(&server, &id).await;
    assert_eq!(v["balance_usdt"], "12.000000");
}

#[test]
fn webhook_sink_needs_a_url_and_secret() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_cli(
        dir.path(),
        &[("PAYOUT_SINK", "webhook")],
        &["serve", "--port", "0", "--bind", "127.0.0.1"],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PAYOUT_WEBHOOK_URL"));
}
