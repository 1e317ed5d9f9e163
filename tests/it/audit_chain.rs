//! The audit log is a hash chain any admin can recompute from the API alone, and the
//! `verify` command checks it on the database file.

use crate::common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Recomputes every hash from the documented formula and checks every link.
fn check_chain(events: &[Value]) {
    let mut prev: Option<String> = None;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], (i + 1) as u64, "sequence has no gaps");
        assert_eq!(
            e["prev_hash"].as_str().map(String::from),
            prev,
            "event {} links to the previous",
            i + 1
        );
        let text = format!(
            "lucid-audit-v1|{}|{}|{}|{}|{}|{}|{}|{}",
            e["seq"],
            e["at"].as_str().unwrap(),
            e["actor"]["subject"].as_str().unwrap(),
            e["actor"]["role"].as_str().unwrap(),
            e["action"].as_str().unwrap(),
            e["target"].as_str().unwrap(),
            e["detail_json"].as_str().unwrap(),
            prev.clone().unwrap_or_default()
        );
        let hash = hex::encode(Sha256::digest(text.as_bytes()));
        assert_eq!(e["hash"].as_str().unwrap(), hash, "event {} hash", i + 1);
        let detail: Value = serde_json::from_str(e["detail_json"].as_str().unwrap()).unwrap();
        assert_eq!(detail, e["detail"]);
        prev = Some(hash);
    }
}

#[tokio::test]
async fn the_chain_verifies_after_a_mixed_workload() {
    let mut server = TestServer::start().await;
    let admin = server.admin.clone();
    let op = server.cli_token("operator", "op-1");
    let (node, key) = server.register_node(&op, "n1").await;
    let id = node["node_id"].as_str().unwrap();
    let (node2, _) = server.register_node(&admin, "n2").await;
    let id2 = node2["node_id"].as_str().unwrap();
    let (_, pool) = server
        .call(
            "POST",
            "/api/v1/pools",
            Some(&admin),
            Some(json!({"name": "p", "capacity": 5})),
        )
        .await;
    let pool_id = pool["pool_id"].as_str().unwrap();
    let node_token = server.login_node(id, &key).await;
    for (token, method, path, body) in [
        (
            &node_token,
            "POST",
            format!("/api/v1/pools/{pool_id}/join"),
            json!({"node_id": id}),
        ),
        (
            &op,
            "PUT",
            format!("/api/v1/nodes/{id}"),
            json!({"name": "renamed", "region": "eu"}),
        ),
        (
            &admin,
            "PUT",
            format!("/api/v1/nodes/{id2}"),
            json!({"status": "suspended"}),
        ),
        (
            &admin,
            "POST",
            "/api/v1/tokens".to_string(),
            json!({"role": "operator", "subject": "op-2"}),
        ),
        (&op, "DELETE", format!("/api/v1/nodes/{id}"), Value::Null),
    ] {
        let body = (!body.is_null()).then_some(body);
        let (status, resp) = server.call(method, &path, Some(token), body).await;
        assert!(status < 300, "{method} {path}: {status} {resp}");
    }
    let events = paginate_all(&server, "/api/v1/audit?limit=7", &server.admin).await;
    let actions: Vec<&str> = events
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "pool.create",
            "node.register",
            "node.register",
            "pool.create",
            "pool.join",
            "node.update",
            "node.update",
            "token.issue",
            "node.deregister"
        ]
    );
    assert_eq!(events[4]["actor"]["role"], "node");
    assert_eq!(events[5]["actor"]["subject"], "op-1");
    check_chain(&events);

    // The same chain verifies offline on the database file.
    assert_eq!(server.terminate().await, Some(0));
    let stdout = server.verify_offline();
    assert!(stdout.contains("9 events, intact"), "{stdout}");
}
