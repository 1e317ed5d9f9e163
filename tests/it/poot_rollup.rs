//! Proofs past PROOF_RETENTION are rolled up into signed daily records (issue 15). The
//! debug build's `LUCID_DEBUG_CLOCK_AHEAD_SECS` restarts the server days later, so the test
//! sees a day pass: its proofs answer 410 naming the day, `/days` serves the records with
//! their paths to the signed day root, `verify` checks them and their link to the proofs,
//! and the database verifies offline.

use std::time::Duration;

use crate::common::*;
use serde_json::Value;

const DAY_SECS: u64 = 86_400;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proofs_past_retention_become_daily_records_that_verify_and_old_epochs_answer_410() {
    let env = [
        ("POOT_CALCULATION_INTERVAL", "2"),
        ("HEARTBEAT_TIMEOUT", "2"),
        ("REWARD_USDT_PER_HOUR", "36"),
        ("PROOF_RETENTION", "1d"),
    ];
    let mut server = TestServer::start_with(&env).await;
    let (node, key) = server.register_node(&server.admin, "rolled").await;
    let id = node["node_id"].as_str().unwrap().to_string();
    let token = server.login_node(&id, &key).await;
    for seq in 1..=10 {
        let (status, body) = server.beat(&id, &key, &token, seq).await;
        assert_eq!(status, 202, "{body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Every proof of the silence after the last heartbeat too (a few epochs).
    let mut seen = 0;
    let proofs = wait_until(Duration::from_secs(30), async || {
        let p = proof_history(&server, &id).await;
        let settled = p.len() >= 3 && p.len() == seen;
        seen = p.len();
        if settled {
            Ok(p)
        } else {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Err(format!("{} proofs so far", p.len()))
        }
    })
    .await;
    let oldest = proofs.last().unwrap().clone();

    // Three days later (today's proofs are then past a retention of one day).
    server.set_env("LUCID_DEBUG_CLOCK_AHEAD_SECS", &(3 * DAY_SECS).to_string());
    server.restart();
    let days = wait_until(Duration::from_secs(30), async || {
        let d = paginate_all(&server, &format!("/api/v1/poot/{id}/days"), &server.admin).await;
        if d.is_empty() {
            Err("no daily record yet".to_string())
        } else {
            Ok(d)
        }
    })
    .await;
    // One record per UTC day the proofs fell in (two when the test ran over midnight).
    let total: u64 = days.iter().map(|d| d["epochs"].as_u64().unwrap()).sum();
    assert!(total >= proofs.len() as u64, "{days:?}");
    let first_day = days.last().unwrap();
    assert_eq!(first_day["first_proof_hash"], oldest["proof_hash"]);
    assert_eq!(first_day["first_epoch"], oldest["epoch"]);
    assert_eq!(first_day["prev_day_hash"], Value::Null);
    assert_eq!(days[0]["last_proof_hash"], proofs[0]["proof_hash"]);

    // An old epoch's proof is gone and names the day that holds it.
    let (status, body) = server
        .call(
            "GET",
            &format!("/api/v1/poot/{id}?epoch={}", oldest["epoch"]),
            Some(&server.admin),
            None,
        )
        .await;
    assert_problem(status, &body, 410, "proof-expired");
    let date = first_day["day"].as_str().unwrap();
    assert!(body["detail"].as_str().unwrap().contains(date), "{body}");
    assert!(proof_history(&server, &id).await.is_empty());

    // `verify` checks the records offline with the proof key, and a changed one fails.
    let (_, keys) = server.call("GET", "/api/v1/keys", None, None).await;
    let public = keys["proof"]["public_key"].as_str().unwrap().to_string();
    let file = server.data_dir().join("days.json");
    std::fs::write(&file, serde_json::to_string(&days).unwrap()).unwrap();
    let out = run_cli(
        server.data_dir(),
        &[],
        &["verify", file.to_str().unwrap(), "--public-key", &public],
    );
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut tampered = days.clone();
    tampered[0]["operational_seconds"] = Value::from(1_000_000);
    std::fs::write(&file, serde_json::to_string(&tampered).unwrap()).unwrap();
    let out = run_cli(
        server.data_dir(),
        &[],
        &["verify", file.to_str().unwrap(), "--public-key", &public],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("day_hash"));

    assert_eq!(server.terminate().await, Some(0));
    let report = server.verify_offline();
    assert!(report.contains("rolled-up days"), "{report}");
}
