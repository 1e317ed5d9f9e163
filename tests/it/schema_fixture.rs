//! Databases written by earlier releases, kept in `tests/fixtures/` (issue 15: "keep a
//! database from today's build as a test fixture"), and what those releases served from
//! them. `make_schema_2_fixture` (ignored) wrote each, with the build of that schema
//! (schema 3: commit 6a59541; schema 5: commit 33fa3f2):
//!
//! ```sh
//! LUCID_FIXTURE_OUT=tests/fixtures/schema-2 cargo test --test it -- --ignored make_schema_2_fixture
//! ```
//!
//! The fixture holds the state directory's database and keys (`lucid.redb`, `keys/`) and
//! `served.json`: every node, proof history, ledger and payout as the API answered them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

/// What the fixture's release answered for each node: the node, its proof history and its
/// ledger, keyed by node id.
pub async fn served(server: &TestServer, node_ids: &[String]) -> Value {
    let mut nodes = serde_json::Map::new();
    for id in node_ids {
        let node = node_json(server, id).await;
        let proofs =
            paginate_all(server, &format!("/api/v1/poot/{id}/history"), &server.admin).await;
        // The ledger in the shape the fixture's release served it (one answer with every
        // entry), put together from the pages the ledger route answers now.
        let pages = pages_of(
            server,
            &format!("/api/v1/nodes/{id}/ledger?limit=500"),
            &server.admin,
        )
        .await;
        let entries: Vec<Value> = pages
            .iter()
            .flat_map(|p| p["items"].as_array().unwrap().clone())
            .collect();
        let ledger = json!({
            "node_id": pages[0]["node_id"],
            "balance_usdt": pages[0]["balance_usdt"],
            "entries": entries,
        });
        let payouts = payouts_json(server, id).await;
        nodes.insert(
            id.clone(),
            json!({"node": node, "proofs": proofs, "ledger": ledger, "payouts": payouts}),
        );
    }
    Value::Object(nodes)
}

pub fn fixture_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[tokio::test]
#[ignore = "writes the fixture; run by hand with LUCID_FIXTURE_OUT (see the module doc)"]
async fn make_schema_2_fixture() {
    let out = PathBuf::from(std::env::var("LUCID_FIXTURE_OUT").expect("LUCID_FIXTURE_OUT"));
    let server = TestServer::start_with(&[
        ("POOT_CALCULATION_INTERVAL", "2"),
        ("HEARTBEAT_TIMEOUT", "2"),
        ("REWARD_USDT_PER_HOUR", "36"),
        ("PAYOUT_THRESHOLD_USDT", "0.01"),
    ])
    .await;
    let op = server.cli_token("operator", "op-fixture");
    let mut nodes = Vec::new();
    for i in 0..4 {
        let (node, key) = server.register_node(&op, &format!("fixture-{i}")).await;
        let id = node["node_id"].as_str().unwrap().to_string();
        let token = server.login_node(&id, &key).await;
        nodes.push((id, key, token));
    }
    // About six epochs: node 3 stops half-way (a gap in its chain), the others beat on.
    for seq in 1..=24u64 {
        for (i, (id, key, token)) in nodes.iter().enumerate() {
            if i == 3 && seq > 10 {
                continue;
            }
            let (status, body) = server.beat(id, key, token, seq).await;
            assert_eq!(status, 202, "{body}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (status, body) = server
        .call(
            "POST",
            "/api/v1/poot/calculate",
            Some(&server.admin),
            Some(json!({})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server
        .call("POST", "/api/v1/payouts/process", Some(&server.admin), None)
        .await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<String> = nodes.iter().map(|n| n.0.clone()).collect();
    let served = served(&server, &ids).await;
    for id in &ids {
        assert!(
            served[id]["proofs"].as_array().unwrap().len() >= 3,
            "{id} has too few proofs: {served}"
        );
    }
    let (_, keys) = server.call("GET", "/api/v1/keys", None, None).await;
    let mut server = server;
    assert_eq!(server.terminate().await, Some(0));
    std::fs::create_dir_all(out.join("keys")).unwrap();
    std::fs::copy(server.data_dir().join("lucid.redb"), out.join("lucid.redb")).unwrap();
    for entry in std::fs::read_dir(server.data_dir().join("keys")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), out.join("keys").join(entry.file_name())).unwrap();
    }
    // The nodes' signing keys, so a test can go on beating as the same nodes.
    let node_keys: serde_json::Map<String, Value> = nodes
        .iter()
        .map(|(id, key, _)| (id.clone(), json!(hex::encode(key.to_bytes()))))
        .collect();
    std::fs::write(
        out.join("served.json"),
        serde_json::to_string_pretty(
            &json!({"nodes": served, "keys": keys, "node_keys": node_keys}),
        )
        .unwrap(),
    )
    .unwrap();
}

/// A copy of the fixture `name` as a fresh state directory.
fn state_dir_from_fixture(name: &str) -> tempfile::TempDir {
    let from = fixture_dir(name);
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(from.join("lucid.redb"), dir.path().join("lucid.redb")).unwrap();
    std::fs::create_dir_all(dir.path().join("keys")).unwrap();
    for entry in std::fs::read_dir(from.join("keys")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(
            entry.path(),
            dir.path().join("keys").join(entry.file_name()),
        )
        .unwrap();
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_2_database_migrates_at_start_and_serves_everything_as_before() {
    migrates_and_serves_everything_as_before("schema-2").await;
}

/// Schema 3 kept each node's totals in its record and its proofs as 96-byte rows; schema 4
/// reads both as they are, and the next close settles the totals into account rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_3_database_opens_serves_everything_as_before_and_closes_on() {
    migrates_and_serves_everything_as_before("schema-3").await;
}

/// Schema 5 kept each epoch's proofs in chunks of its own; schema 6 reads them as they
/// are and packs the rows of the epochs it closes after them (`epoch_packs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_5_database_opens_serves_everything_as_before_and_packs_the_epochs_after() {
    migrates_and_serves_everything_as_before("schema-5").await;
}

/// Starts on a copy of the fixture `name`: every node, proof, ledger and payout is served
/// as its release served them, a node's chain goes on from its last proof, and the result
/// verifies offline.
async fn migrates_and_serves_everything_as_before(name: &str) {
    let before: Value =
        serde_json::from_slice(&std::fs::read(fixture_dir(name).join("served.json")).unwrap())
            .unwrap();
    let mut server = TestServer::start_in(
        state_dir_from_fixture(name),
        &[
            ("POOT_CALCULATION_INTERVAL", "2"),
            ("HEARTBEAT_TIMEOUT", "2"),
            ("REWARD_USDT_PER_HOUR", "36"),
            ("PAYOUT_THRESHOLD_USDT", "0.01"),
        ],
    )
    .await;
    let ids: Vec<String> = before["nodes"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let now = served(&server, &ids).await;
    for id in &ids {
        let (was, is) = (&before["nodes"][id], &now[id]);
        // Every proof, byte for byte: hashes, links, paths, roots and signatures.
        assert_eq!(was["proofs"], is["proofs"], "{id}'s proofs changed");
        assert_eq!(was["ledger"], is["ledger"], "{id}'s ledger changed");
        assert_eq!(was["payouts"], is["payouts"], "{id}'s payouts changed");
        for field in [
            "balance_usdt",
            "operator_id",
            "name",
            "public_key",
            "pool_id",
        ] {
            assert_eq!(
                was["node"][field], is["node"][field],
                "{id}'s {field} changed"
            );
        }
    }
    let (_, keys) = server.call("GET", "/api/v1/keys", None, None).await;
    assert_eq!(keys, before["keys"]);

    // The chain goes on from the migrated proofs.
    let id = &ids[0];
    let latest = before["nodes"][id]["proofs"][0].clone();
    let seed: [u8; 32] = hex::decode(before["node_keys"][id].as_str().unwrap())
        .unwrap()
        .try_into()
        .unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    let token = server.login_node(id, &key).await;
    for seq in 100..104 {
        let (status, body) = server.beat(id, &key, &token, seq).await;
        assert_eq!(status, 202, "{body}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let next = wait_until(Duration::from_secs(20), async || {
        let proofs = proof_history(&server, id).await;
        match proofs.first() {
            Some(p) if p["epoch"].as_u64() > latest["epoch"].as_u64() => {
                // The first proof after the migration links to the last one before it.
                let first_new = proofs
                    .iter()
                    .rev()
                    .find(|p| p["epoch"].as_u64() > latest["epoch"].as_u64())
                    .unwrap();
                Ok(first_new.clone())
            }
            _ => Err("no new proof yet".to_string()),
        }
    })
    .await;
    assert_eq!(next["prev_proof_hash"], latest["proof_hash"], "{next}");

    // A payout run after the upgrade stores its payouts the new way (in chunks, schema 5):
    // the node's payouts are its older one and the new one, the pending export holds every
    // older payout and the new ones, and both kinds confirm.
    // (A proof is served once stored; its credit follows when its epoch is settled.)
    wait_until(Duration::from_secs(20), async || {
        let node = node_json(&server, id).await;
        match usdt_micros(&node["balance_usdt"]) {
            0 => Err(format!("no credit yet: {node}")),
            _ => Ok(()),
        }
    })
    .await;
    let (status, run) = server
        .call("POST", "/api/v1/payouts/process", Some(&server.admin), None)
        .await;
    assert_eq!(status, 200, "{run}");
    let new = run["created"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["node_id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} was not paid: {run}"))
        .clone();
    let older = before["nodes"][id]["payouts"]["payouts"]
        .as_array()
        .unwrap();
    let listed = |body: &Value| body["payouts"].as_array().unwrap().clone();
    let view = payouts_json(&server, id).await;
    let mut want = older.clone();
    want.push(new.clone());
    assert_eq!(listed(&view), want);
    // In pages of two: older payouts and chunked ones on one page and across pages.
    let pending = paginate_all(
        &server,
        "/api/v1/payouts?state=pending&format=json&limit=2",
        &server.admin,
    )
    .await;
    let pending: Vec<&str> = pending
        .iter()
        .map(|p| p["payout_id"].as_str().unwrap())
        .collect();
    let mut in_order = pending.clone();
    in_order.sort();
    in_order.dedup();
    assert_eq!(pending, in_order, "listed once each, in id order");
    for node in &ids {
        for p in before["nodes"][node]["payouts"]["payouts"]
            .as_array()
            .unwrap()
        {
            assert!(pending.contains(&p["payout_id"].as_str().unwrap()), "{p}");
        }
    }
    for p in run["created"].as_array().unwrap() {
        assert!(pending.contains(&p["payout_id"].as_str().unwrap()), "{p}");
    }
    for (n, p) in [&older[0], &new].into_iter().enumerate() {
        let (status, body) = server
            .call(
                "POST",
                &format!(
                    "/api/v1/payouts/{}/confirm",
                    p["payout_id"].as_str().unwrap()
                ),
                Some(&server.admin),
                Some(json!({"tx_hash": format!("{n:064x}")})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let view = payouts_json(&server, id).await;
    for p in listed(&view) {
        assert_eq!(p["state"], "confirmed", "{p}");
    }
    // Every proof, before the upgrade and since, credited once, and the balance the sum of
    // the ledger as served.
    let proofs: i64 = proof_history(&server, id)
        .await
        .iter()
        .map(|p| usdt_micros(&p["credits_usdt"]))
        .sum();
    let ledger = paginate_all(
        &server,
        &format!("/api/v1/nodes/{id}/ledger?limit=500"),
        &server.admin,
    )
    .await;
    let credited: i64 = ledger
        .iter()
        .filter(|e| e["kind"] == "credit")
        .map(|e| usdt_micros(&e["amount_usdt"]))
        .sum();
    assert_eq!(credited, proofs, "{ledger:?}");
    let node = node_json(&server, id).await;
    let sum: i64 = ledger.iter().map(|e| usdt_micros(&e["amount_usdt"])).sum();
    assert_eq!(usdt_micros(&node["balance_usdt"]), sum, "{node}");
    assert_eq!(server.terminate().await, Some(0));
    // The migrated database verifies offline: chains, roots, signatures, balances.
    server.verify_offline();
}
