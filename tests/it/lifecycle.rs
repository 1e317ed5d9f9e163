//! The service as a new user meets it: first start, persistence, graceful stop.

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn first_start_serves_health_keys_and_a_default_pool_over_tls() {
    let server = TestServer::start().await;
    let (status, health) = server.call("GET", "/health", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["service"], "lucid-node-management");
    assert!(health["version"].is_string());

    let (status, keys) = server.call("GET", "/api/v1/keys", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(keys["jwt"]["alg"], "EdDSA");
    assert_eq!(keys["proof"]["alg"], "Ed25519");
    assert!(keys["proof"]["key_id"].is_string());

    let (status, pools) = server
        .call("GET", "/api/v1/pools", Some(&server.admin), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(pools["items"][0]["name"], "default");
    assert_eq!(pools["items"][0]["capacity"], 100);

    // Service keys are private to the service user.
    use std::os::unix::fs::PermissionsExt;
    for key in [
        "keys/jwt_ed25519.key",
        "keys/proof_ed25519.key",
        "tls/key.pem",
    ] {
        let mode = std::fs::metadata(state_file(&server, key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
}

#[tokio::test]
async fn data_and_tokens_survive_a_restart() {
    let mut server = TestServer::start().await;
    let (node, _) = server.register_node(&server.admin, "pi-1").await;
    let node_id = node["node_id"].as_str().unwrap().to_string();
    let admin = server.admin.clone();
    assert_eq!(
        server.terminate().await,
        Some(0),
        "SIGTERM should exit cleanly"
    );
    server.restart();
    let (status, got) = server
        .call(
            "GET",
            &format!("/api/v1/nodes/{node_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["name"], "pi-1");
    // Still exactly one default pool after the second start.
    let (_, pools) = server
        .call("GET", "/api/v1/pools", Some(&admin), None)
        .await;
    assert_eq!(pools["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn plain_http_when_asked() {
    let server = TestServer::start_with(&[("TLS_DISABLE", "true")]).await;
    assert!(server.base.starts_with("http://"));
    let (status, _) = server.call("GET", "/health", None, None).await;
    assert_eq!(status, 200);
}

/// `--http` without an address listens on loopback only (bearer tokens cross it in clear),
/// and says so in its log.
#[test]
fn plain_http_listens_on_loopback_unless_an_address_is_set() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = crate::common::command(dir.path(), &[])
        .args(["serve", "--port", "0", "--http"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn server");
    let stderr = child.stderr.take().unwrap();
    let listening = BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .find(|v| v["message"] == "listening");
    let _ = child.kill();
    let _ = child.wait();
    let addr = listening.expect("a listening line")["addr"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
}

#[tokio::test]
async fn metrics_expose_the_documented_families() {
    let server = TestServer::start().await;
    server.register_node(&server.admin, "pi").await;
    let text = server.metrics_text().await;
    for family in [
        "lucid_build_info",
        "lucid_nodes",
        "lucid_pools",
        "lucid_pool_members",
        "lucid_http_requests_total",
        "lucid_http_request_duration_seconds",
        "lucid_writer_batch_size",
        "lucid_writer_commit_seconds",
    ] {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "missing HELP for {family}"
        );
    }
    assert!(
        text.contains("lucid_nodes{status=\"registered\"} 1"),
        "{text}"
    );
    assert!(text.contains("lucid_pools 1"));
    assert!(text.contains(&format!(
        "lucid_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    )));
}

#[tokio::test]
async fn openapi_document_covers_every_route() {
    let server = TestServer::start().await;
    let (status, doc) = server.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/health", "get"),
        ("/metrics", "get"),
        ("/api/v1/keys", "get"),
        ("/api/v1/openapi.json", "get"),
        ("/api/v1/tokens", "post"),
        ("/api/v1/tokens", "get"),
        ("/api/v1/tokens/revoke", "post"),
        ("/api/v1/auth/challenge", "post"),
        ("/api/v1/auth/token", "post"),
        ("/api/v1/nodes", "post"),
        ("/api/v1/nodes", "get"),
        ("/api/v1/nodes/{node_id}", "get"),
        ("/api/v1/nodes/{node_id}", "put"),
        ("/api/v1/nodes/{node_id}", "delete"),
        ("/api/v1/pools", "post"),
        ("/api/v1/pools", "get"),
        ("/api/v1/pools/{pool_id}", "get"),
        ("/api/v1/pools/{pool_id}/join", "post"),
        ("/api/v1/audit", "get"),
        ("/api/v1/nodes/{node_id}/heartbeat", "post"),
        ("/api/v1/poot/{node_id}", "get"),
        ("/api/v1/poot/{node_id}/history", "get"),
        ("/api/v1/poot/{node_id}/heartbeats", "get"),
        ("/api/v1/poot/calculate", "post"),
        ("/", "get"),
        ("/ui/", "get"),
        ("/ui/{file}", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} missing"
        );
    }
    // Operation ids must be unique for generated clients.
    let mut ids: Vec<String> = paths
        .values()
        .flat_map(|p| p.as_object().unwrap().values())
        .filter_map(|op| op["operationId"].as_str().map(String::from))
        .collect();
    let total = ids.len();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), total, "duplicate operationId");
}

#[tokio::test]
async fn node_login_gives_a_token_that_sees_only_itself() {
    let server = TestServer::start().await;
    let (a, key_a) = server.register_node(&server.admin, "a").await;
    let (b, _) = server.register_node(&server.admin, "b").await;
    let a_id = a["node_id"].as_str().unwrap();
    let token = server.login_node(a_id, &key_a).await;
    let (status, list) = server
        .call("GET", "/api/v1/nodes", Some(&token), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["node_id"], a_id);
    let (status, _) = server
        .call(
            "GET",
            &format!("/api/v1/nodes/{}", b["node_id"].as_str().unwrap()),
            Some(&token),
            None,
        )
        .await;
    assert_eq!(status, 404);

    // Suspension stops the token at once; lifting it does not revive the old token.
    let (status, _) = server
        .call(
            "PUT",
            &format!("/api/v1/nodes/{a_id}"),
            Some(&server.admin),
            Some(json!({"status": "suspended"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = server
        .call("GET", "/api/v1/nodes", Some(&token), None)
        .await;
    assert_problem(status, &body, 401, "invalid-token");
    let (status, _) = server
        .call(
            "PUT",
            &format!("/api/v1/nodes/{a_id}"),
            Some(&server.admin),
            Some(json!({"status": "registered"})),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = server
        .call("GET", "/api/v1/nodes", Some(&token), None)
        .await;
    assert_eq!(status, 401);
    let fresh = server.login_node(a_id, &key_a).await;
    let (status, _) = server
        .call("GET", "/api/v1/nodes", Some(&fresh), None)
        .await;
    assert_eq!(status, 200);
}
