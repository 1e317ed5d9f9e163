//! The MongoDB mirror against a real MongoDB-wire server (SecantusDB, installed by
//! scripts/ensure-mongo into .tools/mongo). Each test starts its own server on a free port
//! with its own storage directory and stops it at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::common::*;
use lucid_node_management::domain::timefmt::parse_rfc3339_us;
use mongodb::bson::{doc, Bson, Document};
use serde_json::{json, Value};

// ---- the MongoDB-compatible server ----

struct Mongo {
    port: u16,
    storage: PathBuf,
    child: Option<Child>,
    _dir: Option<tempfile::TempDir>,
}

fn secantusd() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/mongo/bin/secantusd-py");
    assert!(
        path.exists(),
        "{} is missing: run scripts/ensure-mongo (scripts/test does)",
        path.display()
    );
    path
}

impl Mongo {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("db");
        let mut m = Mongo {
            port: 0,
            storage,
            child: None,
            _dir: Some(dir),
        };
        m.boot();
        m
    }

    /// Starts (again) on `self.port` (0: any free port, read from its log).
    fn boot(&mut self) {
        use std::os::unix::process::CommandExt;
        let mut child = Command::new(secantusd())
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .arg("--storage-path")
            .arg(&self.storage)
            .args(["--log-level", "INFO"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start secantusd-py");
        let (tx, rx) = mpsc::channel::<u16>();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if std::env::var("TEST_MONGO_LOG").is_ok() {
                        eprintln!("[mongo] {line}");
                    }
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        if let Some(p) = rest.trim().rsplit(':').next() {
                            if let Ok(p) = p.parse() {
                                let _ = tx.send(p);
                            }
                        }
                    }
                }
            });
        }
        self.port = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("secantusd-py did not report listening within 60 s");
        self.child = Some(child);
    }

    fn uri(&self, db: &str) -> String {
        format!(
            "mongodb://127.0.0.1:{}/{db}?directConnection=true",
            self.port
        )
    }

    /// Stops it (SIGTERM to its process group, SIGKILL after 10 s).
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pgid = child.id().to_string();
            let _ = Command::new("kill")
                .args(["-TERM", "--", &format!("-{pgid}")])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pgid}")])
                .status();
            let _ = child.wait();
        }
    }

    async fn db(&self, name: &str) -> mongodb::Database {
        let client = mongodb::Client::with_uri_str(self.uri(name)).await.unwrap();
        client.database(name)
    }
}

impl Drop for Mongo {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---- helpers ----

fn mirror_env<'a>(uri: &'a str, site: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![("MONGODB_URI", uri), ("SITE_ID", site)]
}

async fn health(server: &TestServer) -> Value {
    let (status, body) = server.call("GET", "/health", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "healthy", "{body}");
    body
}

/// Waits until the mirror is connected, initialised and the outbox is empty.
async fn converged(server: &TestServer) -> Value {
    wait_until(Duration::from_secs(90), async || {
        let h = health(server).await;
        let m = &h["mirror"];
        if m["connected"] == true && m["initial_sync_done"] == true && m["outbox"] == 0 {
            // The outbox gauge is refreshed after the ack; look once more after a beat.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let h = health(server).await;
            if h["mirror"]["outbox"] == 0 {
                return Ok(h);
            }
        }
        Err(format!("mirror did not converge: {h}"))
    })
    .await
}

/// Waits until the mirror noticed MongoDB is gone.
async fn wait_disconnected(server: &TestServer) {
    wait_until(Duration::from_secs(30), async || {
        let h = health(server).await;
        if h["mirror"]["connected"] == false {
            Ok(())
        } else {
            Err(format!("the outage was never noticed: {h}"))
        }
    })
    .await
}

/// A collection's documents of one site, as relaxed extended JSON, by `_id`.
async fn mongo_docs(db: &mongodb::Database, coll: &str, site: &str) -> BTreeMap<String, Value> {
    use futures::TryStreamExt;
    let docs: Vec<Document> = db
        .collection::<Document>(coll)
        .find(doc! {"site_id": site})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for d in docs {
        let id = d.get_str("_id").unwrap().to_string();
        let v = Bson::Document(d).into_relaxed_extjson();
        assert!(out.insert(id.clone(), v).is_none(), "duplicate _id {id}");
    }
    out
}

async fn total_docs(db: &mongodb::Database, coll: &str) -> u64 {
    db.collection::<Document>(coll)
        .count_documents(doc! {})
        .await
        .unwrap()
}

/// Asserts every field the API shows equals the mirrored document's.
fn same_fields(api: &Value, mirrored: &Value, what: &str) {
    let obj = api.as_object().unwrap();
    for (k, v) in obj {
        assert_eq!(
            &mirrored[k], v,
            "{what}: field {k} differs\napi: {api}\nmongo: {mirrored}"
        );
    }
}

/// Asserts MongoDB holds exactly the appliance's state for `site`.
async fn assert_mirror_equals(server: &TestServer, db: &mongodb::Database, site: &str) {
    // nodes, field by field
    let nodes = paginate_all(server, "/api/v1/nodes?limit=500", &server.admin).await;
    let mirrored = mongo_docs(db, "nodes", site).await;
    assert_eq!(mirrored.len(), nodes.len(), "node count");
    for n in &nodes {
        let id = format!("{site}:{}", n["node_id"].as_str().unwrap());
        let m = mirrored
            .get(&id)
            .unwrap_or_else(|| panic!("node {id} missing"));
        assert_eq!(m["site_id"], site);
        same_fields(n, m, "node");
    }
    // payouts, field by field
    let payouts = paginate_all(
        server,
        "/api/v1/payouts?format=json&limit=500",
        &server.admin,
    )
    .await;
    let mirrored = mongo_docs(db, "payouts", site).await;
    assert_eq!(mirrored.len(), payouts.len(), "payout count");
    for p in &payouts {
        let id = format!("{site}:{}", p["payout_id"].as_str().unwrap());
        same_fields(p, &mirrored[&id], "payout");
    }
    // pools: name, region, member count and members
    let pools = paginate_all(server, "/api/v1/pools?limit=500", &server.admin).await;
    let mirrored = mongo_docs(db, "pools", site).await;
    assert_eq!(mirrored.len(), pools.len(), "pool count");
    for p in &pools {
        let pid = p["pool_id"].as_str().unwrap();
        let m = &mirrored[&format!("{site}:{pid}")];
        for k in ["name", "region", "member_count", "created_at"] {
            assert_eq!(m[k], p[k], "pool {pid} {k}");
        }
        let (_, one) = server
            .call(
                "GET",
                &format!("/api/v1/pools/{pid}"),
                Some(&server.admin),
                None,
            )
            .await;
        if let Some(members) = one["members"].as_array() {
            let mut a: Vec<&Value> = members.iter().collect();
            a.sort_by_key(|v| v.as_str().unwrap().to_string());
            let b: Vec<&Value> = m["members"].as_array().unwrap().iter().collect();
            assert_eq!(a, b, "pool {pid} members");
        }
    }
    // ledger and proofs, per node
    let ledger = mongo_docs(db, "ledger", site).await;
    let proofs = mongo_docs(db, "poot_proofs", site).await;
    let (mut ledger_n, mut proofs_n) = (0, 0);
    for n in &nodes {
        let nid = n["node_id"].as_str().unwrap();
        for e in &paginate_all(
            server,
            &format!("/api/v1/nodes/{nid}/ledger?limit=500"),
            &server.admin,
        )
        .await
        {
            if e["pending"] == true {
                // Today's epoch credits, not entered yet: the node's balance carries them.
                continue;
            }
            let id = format!("{site}:{nid}:{}", e["seq"]);
            let m = ledger
                .get(&id)
                .unwrap_or_else(|| panic!("ledger entry {id} missing"));
            same_fields(e, m, "ledger entry");
            ledger_n += 1;
        }
        for p in paginate_all(
            server,
            &format!("/api/v1/poot/{nid}/history?limit=500"),
            &server.admin,
        )
        .await
        {
            let id = format!("{site}:{nid}:{}", p["epoch"]);
            let m = proofs
                .get(&id)
                .unwrap_or_else(|| panic!("proof {id} missing"));
            same_fields(&p, m, "proof");
            proofs_n += 1;
        }
    }
    assert_eq!(ledger.len(), ledger_n, "ledger count");
    assert_eq!(proofs.len(), proofs_n, "proof count");
    // audit events
    let audit = paginate_all(server, "/api/v1/audit?limit=500", &server.admin).await;
    let mirrored = mongo_docs(db, "audit_events", site).await;
    assert_eq!(mirrored.len(), audit.len(), "audit count");
    for e in &audit {
        let m = &mirrored[&format!("{site}:{}", e["seq"])];
        for k in [
            "seq",
            "at",
            "action",
            "target",
            "hash",
            "prev_hash",
            "detail_json",
        ] {
            assert_eq!(m[k], e[k], "audit {k}");
        }
    }
}

async fn node_with_credit(server: &TestServer, name: &str, amount: &str) -> String {
    let (node, _) = server.register_node(&server.admin, name).await;
    let id = node["node_id"].as_str().unwrap().to_string();
    server.credit(&id, amount).await;
    id
}

// ---- tests ----

/// (a) A mixed workload, half of it before the mirror is enabled (initial copy), half
/// after: every collection equals the appliance's state.
#[tokio::test]
async fn after_a_mixed_workload_every_collection_equals_the_appliance() {
    let mongo = Mongo::start();
    let uri = mongo.uri("fleet");
    let mut server = TestServer::start_with(&[
        ("SITE_ID", "site-a"),
        ("POOT_CALCULATION_INTERVAL", "2"),
        ("HEARTBEAT_TIMEOUT", "2"),
        ("REWARD_USDT_PER_HOUR", "36"),
    ])
    .await;
    assert!(
        health(&server).await.get("mirror").is_none(),
        "no mirror field without MONGODB_URI"
    );
    // Before the mirror: nodes, a pool, a join, credits.
    let (s, pool) = server
        .call(
            "POST",
            "/api/v1/pools",
            Some(&server.admin),
            Some(json!({"name": "east", "region": "eu-east", "capacity": 10})),
        )
        .await;
    assert_eq!(s, 201, "{pool}");
    let pool_id = pool["pool_id"].as_str().unwrap().to_string();
    let mut ids = Vec::new();
    for i in 0..4 {
        ids.push(node_with_credit(&server, &format!("early-{i}"), "12.5").await);
    }
    let (s, b) = server
        .call(
            "POST",
            &format!("/api/v1/pools/{pool_id}/join"),
            Some(&server.admin),
            Some(json!({"node_id": ids[0]})),
        )
        .await;
    assert_eq!(s, 200, "{b}");

    // Enable the mirror on existing data.
    server.set_env("MONGODB_URI", &uri);
    server.restart();
    let h = health(&server).await;
    assert_eq!(h["mirror"]["enabled"], true, "{h}");

    // After: more nodes, joins, heartbeats (proofs), adjustments, a payout run.
    let (hb_node, key) = server.register_node(&server.admin, "beating").await;
    let hb_id = hb_node["node_id"].as_str().unwrap().to_string();
    let token = server.login_node(&hb_id, &key).await;
    for seq in 1..=3 {
        let (s, b) = server
            .call(
                "POST",
                &format!("/api/v1/nodes/{hb_id}/heartbeat"),
                Some(&token),
                Some(heartbeat_body(&hb_id, &key, seq)),
            )
            .await;
        assert_eq!(s, 202, "{b}");
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    // The node counts as up until its last heartbeat (as the appliance stamped it) plus
    // HEARTBEAT_TIMEOUT (2 s).
    let beating = node_json(&server, &hb_id).await;
    let last_heartbeat_us = beating["last_heartbeat_at"]
        .as_str()
        .and_then(parse_rfc3339_us)
        .unwrap_or_else(|| panic!("no last heartbeat: {beating}"));
    let up_until_us = last_heartbeat_us + 2_000_000;
    for i in 0..4 {
        ids.push(node_with_credit(&server, &format!("late-{i}"), "3").await);
    }
    for id in &ids[1..3] {
        let (s, b) = server
            .call(
                "POST",
                &format!("/api/v1/pools/{pool_id}/join"),
                Some(&server.admin),
                Some(json!({"node_id": id})),
            )
            .await;
        assert_eq!(s, 200, "{b}");
    }
    let (s, b) = server
        .call(
            "POST",
            &format!("/api/v1/nodes/{}/ledger", ids[5]),
            Some(&server.admin),
            Some(json!({"amount_usdt": "-1.25", "reason": "correction"})),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    let (s, run) = server
        .call("POST", "/api/v1/payouts/process", Some(&server.admin), None)
        .await;
    assert_eq!(s, 200, "{run}");
    // Wait for at least one closed epoch with a proof of the beating node.
    let history = format!("/api/v1/poot/{hb_id}/history?limit=500");
    wait_until_every(
        Duration::from_secs(20),
        Duration::from_millis(300),
        async || match paginate_all(&server, &history, &server.admin).await.len() {
            0 => Err("no proof was written"),
            _ => Ok(()),
        },
    )
    .await;

    // The timers keep changing the beating node until an epoch ends after it went quiet
    // and the monitor has seen it silent; wait for both, so nothing changes while the two
    // sides are compared.
    wait_until_every(
        Duration::from_secs(30),
        Duration::from_millis(300),
        async || {
            // Epochs in which no node was up are skipped without a record, so the last closed
            // epoch is the one the node's uptime ends in.
            let poot = &health(&server).await["poot"];
            let length_us = poot["epoch_length_seconds"].as_u64().unwrap() * 1_000_000;
            let closed_end_us = poot["last_closed_epoch"]
                .as_u64()
                .map_or(0, |e| (e + 1) * length_us);
            // The node monitor takes the silent node offline (a node update and an audit event).
            let beating = node_json(&server, &hb_id).await;
            if closed_end_us >= up_until_us && beating["status"] == "offline" {
                Ok(())
            } else {
                Err(format!("epochs stopped closing: {poot}"))
            }
        },
    )
    .await;

    let started = Instant::now();
    let h = converged(&server).await;
    let db = mongo.db("fleet").await;
    assert_mirror_equals(&server, &db, "site-a").await;
    let payouts = mongo_docs(&db, "payouts", "site-a").await;
    assert!(
        payouts.len() >= 4,
        "the payout run paid the early nodes: {payouts:?}"
    );
    let proofs = mongo_docs(&db, "poot_proofs", "site-a").await;
    let any = proofs.values().next().unwrap();
    assert!(
        any["epoch_root"].is_string() && any["epoch_signature"].is_string(),
        "{any}"
    );
    eprintln!(
        "mirror converged {:.2}s after the workload; {} documents mirrored; health: {}",
        started.elapsed().as_secs_f64(),
        h["mirror"]["documents_mirrored"],
        h["mirror"]
    );
    // Metrics. The timers (node monitor, epoch close) may have queued a change since the
    // health check above; the mirror drains it, and the gauge shows 0 again.
    let text = wait_until(Duration::from_secs(30), async || {
        let text = server.metrics_text().await;
        if text.contains("lucid_mirror_outbox_entries 0\n") {
            Ok(text)
        } else {
            Err("lucid_mirror_outbox_entries 0\n missing from /metrics")
        }
    })
    .await;
    for m in [
        "lucid_mirror_outbox_entries 0\n",
        "lucid_mirror_documents_total",
        "lucid_mirror_last_sync_timestamp_seconds",
        "lucid_mirror_sync_errors_total",
    ] {
        assert!(text.contains(m), "{m} missing from /metrics");
    }
}

/// (b) MongoDB stops mid-workload: no request fails, the outbox grows, and after MongoDB
/// is back on the same port and storage the mirror converges.
#[tokio::test]
async fn mongodb_down_mid_workload_then_back_converges() {
    let mut mongo = Mongo::start();
    let uri = mongo.uri("fleet");
    let server = TestServer::start_with(&mirror_env(&uri, "b1")).await;
    for i in 0..10 {
        node_with_credit(&server, &format!("before-{i}"), "1").await;
    }
    converged(&server).await;

    mongo.stop();
    let t = Instant::now();
    for i in 0..40 {
        // node_with_credit asserts every answer is a success.
        node_with_credit(&server, &format!("during-{i}"), "2").await;
    }
    let writes_down = t.elapsed();
    // Healthy, and says MongoDB is unreachable.
    wait_until_every(
        Duration::from_secs(30),
        Duration::from_millis(200),
        async || {
            let h = health(&server).await;
            if h["mirror"]["connected"] == false && h["mirror"]["outbox"].as_u64().unwrap() > 0 {
                assert!(h["mirror"]["reason"].is_string(), "{h}");
                Ok(())
            } else {
                Err(format!("health never showed the outage: {h}"))
            }
        },
    )
    .await;
    let text = server.metrics_text().await;
    assert!(
        !text.contains("lucid_mirror_sync_errors_total 0\n"),
        "errors counted"
    );

    mongo.boot(); // same port, same storage
    let t2 = Instant::now();
    converged(&server).await;
    eprintln!(
        "80 writes while MongoDB was down took {:.2}s; converged {:.2}s after it came back",
        writes_down.as_secs_f64(),
        t2.elapsed().as_secs_f64()
    );
    let db = mongo.db("fleet").await;
    assert_mirror_equals(&server, &db, "b1").await;
    assert_eq!(mongo_docs(&db, "nodes", "b1").await.len(), 50);
}

/// (c) SIGKILL the appliance while it syncs a large outbox: after a restart nothing is
/// missing and nothing is there twice.
#[tokio::test]
async fn sigkill_during_sync_loses_nothing_and_duplicates_nothing() {
    let mut mongo = Mongo::start();
    let uri = mongo.uri("fleet");
    let mut server = TestServer::start_with(&mirror_env(&uri, "c1")).await;
    converged(&server).await;
    mongo.stop();
    // A backlog of a few thousand outbox entries.
    let t = Instant::now();
    let mut n = 0;
    for chunk in 0..20 {
        let names: Vec<String> = (0..25).map(|i| format!("n-{chunk}-{i}")).collect();
        let futs = names
            .iter()
            .map(|name| node_with_credit(&server, name, "1"));
        n += futures::future::join_all(futs).await.len();
    }
    let backlog = health(&server).await["mirror"]["outbox"].as_u64().unwrap();
    eprintln!(
        "{n} nodes ({backlog} outbox entries) written in {:.2}s while MongoDB was down",
        t.elapsed().as_secs_f64()
    );
    mongo.boot();
    // Kill as soon as the sync has started but not finished.
    let left = wait_until_every(
        Duration::from_secs(60),
        Duration::from_millis(5),
        async || {
            let h = health(&server).await;
            let left = h["mirror"]["outbox"].as_u64().unwrap();
            if h["mirror"]["connected"] == true && left < backlog {
                Ok(left)
            } else {
                Err(format!("sync never started: {h}"))
            }
        },
    )
    .await;
    server.kill();
    let caught = left > 0;
    eprintln!("killed the appliance mid-sync: {caught}");
    server.restart();
    let t = Instant::now();
    let h = converged(&server).await;
    eprintln!(
        "after restart converged in {:.2}s: {}",
        t.elapsed().as_secs_f64(),
        h["mirror"]
    );
    let db = mongo.db("fleet").await;
    assert_mirror_equals(&server, &db, "c1").await;
    assert_eq!(mongo_docs(&db, "nodes", "c1").await.len(), n);
    assert_eq!(mongo_docs(&db, "ledger", "c1").await.len(), n);
}

/// (d) Two appliances, two sites, one database: neither touches the other's documents.
#[tokio::test]
async fn two_sites_mirror_into_one_database_without_collisions() {
    let mongo = Mongo::start();
    let uri = mongo.uri("fleet");
    let a = TestServer::start_with(&mirror_env(&uri, "a")).await;
    let b = TestServer::start_with(&mirror_env(&uri, "b")).await;
    for i in 0..5 {
        node_with_credit(&a, &format!("a-{i}"), "1").await;
        node_with_credit(&b, &format!("b-{i}"), "2").await;
    }
    node_with_credit(&b, "b-extra", "3").await;
    converged(&a).await;
    converged(&b).await;
    let db = mongo.db("fleet").await;
    assert_mirror_equals(&a, &db, "a").await;
    assert_mirror_equals(&b, &db, "b").await;
    // Both default pools exist side by side.
    let pools = db.collection::<Document>("pools");
    for id in ["a:pool_default", "b:pool_default"] {
        assert!(
            pools.find_one(doc! {"_id": id}).await.unwrap().is_some(),
            "{id}"
        );
    }
    let a_nodes = mongo_docs(&db, "nodes", "a").await;
    let b_nodes = mongo_docs(&db, "nodes", "b").await;
    assert_eq!((a_nodes.len(), b_nodes.len()), (5, 6));
    assert!(a_nodes.keys().all(|k| k.starts_with("a:")));
    assert!(b_nodes.keys().all(|k| k.starts_with("b:")));
    assert_eq!(total_docs(&db, "nodes").await, 11);
    let ids: BTreeSet<String> = db
        .collection::<Document>("audit_events")
        .distinct("site_id", doc! {})
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, BTreeSet::from(["a".to_string(), "b".to_string()]));
}

/// (e) An unparseable MONGODB_URI is reported at start in one line; the appliance serves
/// and `/health` says why the mirror is off.
#[tokio::test]
async fn a_bad_mongodb_uri_is_reported_and_the_appliance_still_serves() {
    let dir = tempfile::tempdir().unwrap();
    let env = vec![("MONGODB_URI".to_string(), "mongo://nowhere:::".to_string())];
    let mut child = command(dir.path(), &env)
        .args(["serve", "--port", "0", "--bind", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut reported = None;
    for line in BufReader::new(child.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
    {
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v["message"] == "MongoDB mirror disabled" {
            reported = Some(v.clone());
        }
        if v["message"] == "listening" {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let reported = reported.expect("the bad URI was not reported before listening");
    assert!(
        reported["reason"].as_str().unwrap().contains("MONGODB_URI"),
        "{reported}"
    );

    let server = TestServer::start_with(&[("MONGODB_URI", "mongo://nowhere:::")]).await;
    let h = health(&server).await;
    assert_eq!(h["mirror"]["enabled"], false, "{h}");
    assert!(
        h["mirror"]["reason"]
            .as_str()
            .unwrap()
            .contains("MONGODB_URI"),
        "{h}"
    );
    let (s, _) = server.register_node(&server.admin, "still-serving").await;
    assert!(s["node_id"].is_string());
}

/// (f) The outbox bound: with MongoDB down, writes go on past OUTBOX_MAX_ENTRIES (queuing
/// stops, a resync is marked); when MongoDB is back a full copy makes the mirror whole.
#[tokio::test]
async fn at_the_outbox_bound_writes_go_on_and_a_full_resync_follows() {
    let mut mongo = Mongo::start();
    let uri = mongo.uri("fleet");
    let mut env = mirror_env(&uri, "f1");
    env.push(("OUTBOX_MAX_ENTRIES", "20"));
    let server = TestServer::start_with(&env).await;
    converged(&server).await;
    mongo.stop();
    wait_disconnected(&server).await;
    for i in 0..12 {
        node_with_credit(&server, &format!("n-{i}"), "1").await;
    }
    let h = health(&server).await;
    assert_eq!(h["mirror"]["outbox_overflowed"], true, "{h}");
    assert_eq!(h["mirror"]["outbox"], 20, "{h}");
    let text = server.metrics_text().await;
    assert!(text.contains("lucid_mirror_outbox_near_full 1"), "{text}");
    mongo.boot();
    let h = converged(&server).await;
    assert_eq!(h["mirror"]["outbox_overflowed"], false, "{h}");
    let db = mongo.db("fleet").await;
    assert_mirror_equals(&server, &db, "f1").await;
}

/// (g) Issue 15: an epoch close queues one outbox entry per chunk of up to 680 nodes (the
/// sync task renders the chunk's ledger, proof and node documents when it sends them),
/// not documents per node; MongoDB still receives every proof exactly as the API serves
/// it. And a day past PROOF_RETENTION is rolled up only once MongoDB holds its proofs:
/// the cluster keeps every proof document after the appliance dropped its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_close_queues_one_entry_per_chunk_and_rolled_up_proofs_stay_in_mongodb() {
    const NODES: usize = 30;
    let mut mongo = Mongo::start();
    let uri = mongo.uri("fleet");
    let mut env = mirror_env(&uri, "g1");
    env.extend([
        ("POOT_CALCULATION_INTERVAL", "2"),
        // Long enough that every node is proven in several epochs after one heartbeat.
        ("HEARTBEAT_TIMEOUT", "16"),
        ("HEARTBEAT_MIN_INTERVAL", "0"),
        ("AUTH_RATE_LIMIT", "0"),
        ("TOKEN_RATE_LIMIT", "0"),
        ("REWARD_USDT_PER_HOUR", "36"),
        ("PROOF_RETENTION", "1d"),
        ("OUTBOX_MAX_ENTRIES", "100000"),
    ]);
    let mut server = TestServer::start_with(&env).await;
    converged(&server).await;
    mongo.stop();
    wait_disconnected(&server).await;

    let mut nodes = Vec::new();
    for i in 0..NODES {
        let (node, key) = server.register_node(&server.admin, &format!("g-{i}")).await;
        let id = node["node_id"].as_str().unwrap().to_string();
        let token = server.login_node(&id, &key).await;
        nodes.push((id, key, token));
    }
    let before_beats = health(&server).await["mirror"]["outbox"].as_u64().unwrap();
    for (id, key, token) in &nodes {
        let (status, body) = server.beat(id, key, token, 1).await;
        assert_eq!(status, 202, "{body}");
    }
    // Every node proven, gone silent and offline, and no epoch left to close for it.
    let histories: Vec<Vec<Value>> = wait_until_every(
        Duration::from_secs(60),
        Duration::from_millis(500),
        async || {
            let mut all = Vec::new();
            for (id, _, _) in &nodes {
                let n = node_json(&server, id).await;
                if n["status"] != "offline" {
                    return Err(format!("{id} is still {}", n["status"]));
                }
                all.push(proof_history(&server, id).await);
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
            let again = proof_history(&server, &nodes[0].0).await;
            if again.len() != all[0].len() || all.iter().any(|h| h.is_empty()) {
                return Err("epochs are still closing".to_string());
            }
            Ok(all)
        },
    )
    .await;
    let proofs: usize = histories.iter().map(Vec::len).sum();
    let grown = health(&server).await["mirror"]["outbox"].as_u64().unwrap() - before_beats;
    eprintln!("{proofs} proofs of {NODES} nodes queued {grown} outbox entries (beats, closes, nodes going offline)");
    assert!(proofs >= 3 * NODES, "{proofs} proofs");
    // One entry per proof and another per node update would be 2 * proofs and more.
    assert!(
        (grown as usize) < proofs,
        "{grown} outbox entries for {proofs} proofs: the close queued documents per node"
    );

    // Three days later, MongoDB still down: the proofs are past retention, but their day
    // waits for the mirror.
    server.set_env(
        "LUCID_DEBUG_CLOCK_AHEAD_SECS",
        &(3 * DAY_SECS_MIRROR).to_string(),
    );
    server.restart();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let id0 = &nodes[0].0;
    assert_eq!(
        proof_history(&server, id0).await.len(),
        histories[0].len(),
        "a day was rolled up before MongoDB held its proofs"
    );

    // MongoDB back: the outbox drains, then the day is rolled up.
    mongo.boot();
    converged(&server).await;
    wait_until(Duration::from_secs(60), async || {
        if proof_history(&server, id0).await.is_empty() {
            Ok(())
        } else {
            Err("the day was never rolled up")
        }
    })
    .await;
    // MongoDB holds every proof, field for field as the API served it before the roll-up.
    let db = mongo.db("fleet").await;
    let mirrored = mongo_docs(&db, "poot_proofs", "g1").await;
    assert_eq!(mirrored.len(), proofs, "proof documents in MongoDB");
    for ((id, _, _), history) in nodes.iter().zip(&histories) {
        for p in history {
            let m = mirrored
                .get(&format!("g1:{id}:{}", p["epoch"]))
                .unwrap_or_else(|| panic!("proof {id}:{} missing", p["epoch"]));
            same_fields(p, m, "proof");
        }
    }
}

const DAY_SECS_MIRROR: u64 = 86_400;
