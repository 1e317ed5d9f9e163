//! Enrolment codes (issue 17): made by an operator, redeemed by a node without a token,
//! registered under the code's operator, one use per node, the same refusal for every
//! code that does not work, audited without the code.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::common::{
    assert_problem, node_key, paginate_all, public_b64, wait_until, TestServer, TRON_ADDRESS,
};

async fn make_code(server: &TestServer, token: &str, body: Value) -> Value {
    let (status, created) = server
        .call("POST", "/api/v1/enrollments", Some(token), Some(body))
        .await;
    assert_eq!(status, 201, "{created}");
    created
}

async fn redeem(server: &TestServer, code: &str, name: Option<&str>) -> (u16, Value) {
    let mut body = json!({"code": code, "public_key": public_b64(&node_key())});
    if let Some(n) = name {
        body["name"] = json!(n);
    }
    server
        .call("POST", "/api/v1/enrollments/redeem", None, Some(body))
        .await
}

async fn default_pool(server: &TestServer) -> String {
    let pools = paginate_all(server, "/api/v1/pools", &server.admin).await;
    pools.iter().find(|p| p["name"] == "default").unwrap()["pool_id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The DER of the server's certificate, from its PEM file.
fn cert_der(server: &TestServer) -> Vec<u8> {
    let pem = std::fs::read_to_string(server.data_dir().join("tls/cert.pem")).unwrap();
    let b64: String = pem
        .lines()
        .skip_while(|l| !l.starts_with("-----BEGIN CERTIFICATE"))
        .skip(1)
        .take_while(|l| !l.starts_with("-----END"))
        .collect();
    B64.decode(b64).unwrap()
}

#[tokio::test]
async fn a_code_registers_one_node_under_its_operator_in_its_pool_with_its_payout_address() {
    let server = TestServer::start().await;
    let op = server.cli_token("operator", "op-alice");
    let pool_id = default_pool(&server).await;
    let created = make_code(
        &server,
        &op,
        json!({"name": "rack-1", "pool_id": pool_id, "payout_address": TRON_ADDRESS}),
    )
    .await;
    let code = created["code"].as_str().unwrap();
    assert!(code.len() >= 26, "{created}");
    assert_eq!(created["uses"], 1);
    assert!(created["expires_at"].is_string());
    assert!(created["enrollment_id"]
        .as_str()
        .unwrap()
        .starts_with("enr_"));
    let want = format!("sha256:{}", hex::encode(Sha256::digest(cert_der(&server))));
    assert_eq!(created["tls_fingerprint"], want.as_str());

    let (status, node) = redeem(&server, code, None).await;
    assert_eq!(status, 201, "{node}");
    assert_eq!(node["operator_id"], "op-alice");
    assert_eq!(node["name"], "rack-1");
    assert_eq!(node["pool_id"], pool_id.as_str());
    assert_eq!(node["payout_address"], TRON_ADDRESS);
    assert_eq!(node["status"], "registered");
    // The operator sees it as its own; the pool counts it.
    let node_id = node["node_id"].as_str().unwrap();
    let (status, _) = server
        .call("GET", &format!("/api/v1/nodes/{node_id}"), Some(&op), None)
        .await;
    assert_eq!(status, 200);
    let (_, pool) = server
        .call("GET", &format!("/api/v1/pools/{pool_id}"), Some(&op), None)
        .await;
    assert!(pool["members"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m == node_id));

    // Used up: the second node is refused, and the code is no longer listed.
    let (status, again) = redeem(&server, code, Some("second")).await;
    assert_problem(status, &again, 401, "invalid-enrollment-code");
    let open = paginate_all(&server, "/api/v1/enrollments", &op).await;
    assert!(open.is_empty(), "{open:?}");
}

#[tokio::test]
async fn unknown_used_withdrawn_and_expired_codes_get_the_same_answer() {
    let server = TestServer::start().await;
    let op = server.cli_token("operator", "op-bob");
    let (s, unknown) = redeem(&server, "lne_thisisnotacodeatall0000000000", None).await;
    assert_problem(s, &unknown, 401, "invalid-enrollment-code");

    let used = make_code(&server, &op, json!({})).await;
    assert_eq!(
        redeem(&server, used["code"].as_str().unwrap(), None)
            .await
            .0,
        201
    );
    let (s, used_answer) = redeem(&server, used["code"].as_str().unwrap(), None).await;
    assert_eq!(s, 401);

    let withdrawn = make_code(&server, &op, json!({})).await;
    let id = withdrawn["enrollment_id"].as_str().unwrap();
    let (s, _) = server
        .call(
            "DELETE",
            &format!("/api/v1/enrollments/{id}"),
            Some(&op),
            None,
        )
        .await;
    assert_eq!(s, 204);
    let (s, withdrawn_answer) = redeem(&server, withdrawn["code"].as_str().unwrap(), None).await;
    assert_eq!(s, 401);

    let expiring = make_code(&server, &op, json!({"ttl_seconds": 1})).await;
    let code = expiring["code"].as_str().unwrap().to_string();
    let expired_answer = wait_until(Duration::from_secs(20), async || {
        let (s, body) = redeem(&server, &code, None).await;
        if s == 401 {
            Ok(body)
        } else {
            Err(format!("{s} {body}"))
        }
    })
    .await;
    // Identical bodies: nothing tells which of the four it was.
    assert_eq!(unknown, used_answer);
    assert_eq!(unknown, withdrawn_answer);
    assert_eq!(unknown, expired_answer);
}

#[tokio::test]
async fn a_one_use_code_registers_a_single_node_under_concurrent_redeems() {
    let server = TestServer::start().await;
    let op = server.cli_token("operator", "op-race");
    let created = make_code(&server, &op, json!({"uses": 1})).await;
    let code = created["code"].as_str().unwrap().to_string();
    let attempts = (0..12).map(|i| {
        let server = &server;
        let code = code.clone();
        async move { redeem(server, &code, Some(&format!("racer-{i}"))).await }
    });
    let answers = futures::future::join_all(attempts).await;
    let won = answers.iter().filter(|(s, _)| *s == 201).count();
    let refused = answers
        .iter()
        .filter(|(s, b)| *s == 401 && b["type"] == "invalid-enrollment-code")
        .count();
    assert_eq!((won, refused), (1, 11), "{answers:?}");
    let nodes = paginate_all(&server, "/api/v1/nodes", &op).await;
    assert_eq!(nodes.len(), 1);

    // A three-use code: exactly three.
    let created = make_code(&server, &op, json!({"uses": 3})).await;
    let code = created["code"].as_str().unwrap().to_string();
    let attempts = (0..8).map(|_| {
        let server = &server;
        let code = code.clone();
        async move { redeem(server, &code, None).await.0 }
    });
    let statuses = futures::future::join_all(attempts).await;
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        3,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn codes_are_listed_to_their_operator_without_the_secret_and_withdrawn_by_owner_or_admin() {
    let server = TestServer::start().await;
    let alice = server.cli_token("operator", "op-a");
    let bob = server.cli_token("operator", "op-b");
    let a1 = make_code(&server, &alice, json!({"name": "a1", "uses": 2})).await;
    let _a2 = make_code(&server, &alice, json!({})).await;
    let b1 = make_code(&server, &bob, json!({})).await;
    // Admin on behalf of an operator.
    let c1 = make_code(&server, &server.admin, json!({"operator_id": "op-c"})).await;

    let listed = paginate_all(&server, "/api/v1/enrollments?limit=1", &alice).await;
    assert_eq!(listed.len(), 2);
    for e in &listed {
        assert_eq!(e["operator_id"], "op-a");
        assert!(e.get("code").is_none(), "{e}");
        assert!(!e.to_string().contains(a1["code"].as_str().unwrap()));
    }
    let first = listed
        .iter()
        .find(|e| e["enrollment_id"] == a1["enrollment_id"])
        .unwrap();
    assert_eq!(
        (first["uses"].clone(), first["uses_left"].clone()),
        (json!(2), json!(2))
    );
    assert_eq!(
        paginate_all(&server, "/api/v1/enrollments", &server.admin)
            .await
            .len(),
        4
    );
    let only_c = paginate_all(
        &server,
        "/api/v1/enrollments?operator_id=op-c",
        &server.admin,
    )
    .await;
    assert_eq!(only_c.len(), 1);
    assert_eq!(only_c[0]["enrollment_id"], c1["enrollment_id"]);
    let (s, body) = server
        .call(
            "GET",
            "/api/v1/enrollments?operator_id=op-b",
            Some(&alice),
            None,
        )
        .await;
    assert_problem(s, &body, 403, "forbidden");

    // One use of two: listed with one left.
    assert_eq!(
        redeem(&server, a1["code"].as_str().unwrap(), None).await.0,
        201
    );
    let listed = paginate_all(&server, "/api/v1/enrollments", &alice).await;
    let first = listed
        .iter()
        .find(|e| e["enrollment_id"] == a1["enrollment_id"])
        .unwrap();
    assert_eq!(first["uses_left"], 1);

    // Another operator's code is not found; the admin withdraws anyone's.
    let b1_path = format!(
        "/api/v1/enrollments/{}",
        b1["enrollment_id"].as_str().unwrap()
    );
    let (s, body) = server.call("DELETE", &b1_path, Some(&alice), None).await;
    assert_problem(s, &body, 404, "not-found");
    let (s, _) = server
        .call("DELETE", &b1_path, Some(&server.admin), None)
        .await;
    assert_eq!(s, 204);
    let (s, _) = server.call("DELETE", &b1_path, Some(&bob), None).await;
    assert_eq!(s, 404);
    assert_eq!(
        redeem(&server, b1["code"].as_str().unwrap(), None).await.0,
        401
    );
}

#[tokio::test]
async fn making_a_code_is_validated_like_registering_a_node() {
    let server = TestServer::start().await;
    let op = server.cli_token("operator", "op-v");
    let bad = [
        (json!({"pool_id": "pool_nosuchpool"}), 404, "not-found"),
        (json!({"payout_address": "not-tron"}), 400, "validation"),
        (json!({"uses": 0}), 400, "validation"),
        (json!({"uses": 1001}), 400, "validation"),
        (json!({"ttl_seconds": 0}), 400, "validation"),
        (json!({"ttl_seconds": 31 * 24 * 3600}), 400, "validation"),
        (json!({"name": "   "}), 400, "validation"),
        (json!({"operator_id": "op-other"}), 403, "forbidden"),
        (json!({"surprise": 1}), 400, "validation"),
    ];
    for (body, status, kind) in bad {
        let (s, answer) = server
            .call("POST", "/api/v1/enrollments", Some(&op), Some(body.clone()))
            .await;
        assert_problem(s, &answer, status, kind);
    }
    let (s, answer) = server
        .call("POST", "/api/v1/enrollments", None, Some(json!({})))
        .await;
    assert_eq!(s, 401, "{answer}");
    // A node may not make codes.
    let (node, key) = server.register_node(&op, "n").await;
    let node_token = server
        .login_node(node["node_id"].as_str().unwrap(), &key)
        .await;
    let (s, answer) = server
        .call(
            "POST",
            "/api/v1/enrollments",
            Some(&node_token),
            Some(json!({})),
        )
        .await;
    assert_problem(s, &answer, 403, "forbidden");

    // Redeeming checks the key before the code; a key taken already is a conflict and
    // does not use the code up.
    let created = make_code(&server, &op, json!({})).await;
    let code = created["code"].as_str().unwrap();
    let (s, answer) = server
        .call(
            "POST",
            "/api/v1/enrollments/redeem",
            None,
            Some(json!({"code": code, "public_key": "AAAA"})),
        )
        .await;
    assert_problem(s, &answer, 400, "validation");
    let (s, answer) = server
        .call(
            "POST",
            "/api/v1/enrollments/redeem",
            None,
            Some(json!({"code": code, "public_key": public_b64(&key)})),
        )
        .await;
    assert_problem(s, &answer, 409, "duplicate-public-key");
    assert_eq!(redeem(&server, code, None).await.0, 201);
}

#[tokio::test]
async fn redeeming_respects_the_operator_quota_without_using_the_code_up() {
    let server = TestServer::start_with(&[("MAX_NODES_PER_OPERATOR", "1")]).await;
    let op = server.cli_token("operator", "op-q");
    let created = make_code(&server, &op, json!({"uses": 2})).await;
    let code = created["code"].as_str().unwrap();
    assert_eq!(redeem(&server, code, None).await.0, 201);
    let (s, answer) = redeem(&server, code, None).await;
    assert_problem(s, &answer, 422, "operator-quota");
    let listed = paginate_all(&server, "/api/v1/enrollments", &op).await;
    assert_eq!(listed[0]["uses_left"], 1);
}

#[tokio::test]
async fn enrolment_is_audited_without_the_code() {
    let server = TestServer::start().await;
    let op = server.cli_token("operator", "op-audit");
    let one = make_code(&server, &op, json!({})).await;
    let two = make_code(&server, &op, json!({})).await;
    let code = one["code"].as_str().unwrap();
    let (_, node) = redeem(&server, code, None).await;
    let id_two = two["enrollment_id"].as_str().unwrap();
    server
        .call(
            "DELETE",
            &format!("/api/v1/enrollments/{id_two}"),
            Some(&op),
            None,
        )
        .await;
    let events = paginate_all(&server, "/api/v1/audit", &server.admin).await;
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(code));
    assert!(!text.contains(two["code"].as_str().unwrap()));
    let actions: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["target"].as_str().unwrap()))
        .collect();
    let id_one = one["enrollment_id"].as_str().unwrap();
    for want in [
        ("enrollment.create", id_one),
        ("enrollment.redeem", id_one),
        ("node.register", node["node_id"].as_str().unwrap()),
        ("enrollment.create", id_two),
        ("enrollment.withdraw", id_two),
    ] {
        assert!(actions.contains(&want), "{want:?} not in {actions:?}");
    }
    let redeem_event = events
        .iter()
        .find(|e| e["action"] == "enrollment.redeem")
        .unwrap();
    assert_eq!(redeem_event["detail"]["node_id"], node["node_id"]);
    assert_eq!(redeem_event["detail"]["operator_id"], "op-audit");
    // The new tables are part of a database the offline check accepts.
    let mut server = server;
    server.terminate().await;
    server.verify_offline();
}

#[tokio::test]
async fn only_operators_and_admins_manage_codes_and_redeeming_needs_no_token() {
    let server = TestServer::start().await;
    let op = server.cli_token("operator", "op-m");
    let (node, key) = server.register_node(&op, "n").await;
    let node_token = server
        .login_node(node["node_id"].as_str().unwrap(), &key)
        .await;
    let created = make_code(&server, &op, json!({})).await;
    let path = format!(
        "/api/v1/enrollments/{}",
        created["enrollment_id"].as_str().unwrap()
    );
    for (method, p) in [("GET", "/api/v1/enrollments"), ("DELETE", path.as_str())] {
        let (s, body) = server.call(method, p, None, None).await;
        assert_eq!(s, 401, "{method} {p}: {body}");
        let (s, body) = server.call(method, p, Some("not-a-jwt"), None).await;
        assert_eq!(s, 401, "{method} {p}: {body}");
        let (s, body) = server.call(method, p, Some(&node_token), None).await;
        assert_problem(s, &body, 403, "forbidden");
    }
    // An id that is not an enrolment id at all: 404, as for any unknown id.
    let (s, body) = server
        .call("DELETE", "/api/v1/enrollments/node_x", Some(&op), None)
        .await;
    assert_problem(s, &body, 404, "not-found");
    // Redeeming ignores whatever token comes with it.
    let (s, body) = server
        .call(
            "POST",
            "/api/v1/enrollments/redeem",
            Some("not-a-jwt"),
            Some(json!({"code": created["code"], "public_key": public_b64(&node_key())})),
        )
        .await;
    assert_eq!(s, 201, "{body}");
    // The route is in the OpenAPI document.
    let (_, doc) = server.call("GET", "/api/v1/openapi.json", None, None).await;
    for route in [
        "/api/v1/enrollments",
        "/api/v1/enrollments/redeem",
        "/api/v1/enrollments/{enrollment_id}",
    ] {
        assert!(doc["paths"].get(route).is_some(), "{route} not documented");
    }
}

#[tokio::test]
async fn expired_codes_are_pruned_with_an_audit_event() {
    let server = TestServer::start().await;
    let op = server.cli_token("operator", "op-exp");
    let short = make_code(&server, &op, json!({"ttl_seconds": 1})).await;
    let short_id = short["enrollment_id"].as_str().unwrap().to_string();
    let expired_event = async || {
        paginate_all(&server, "/api/v1/audit", &server.admin)
            .await
            .into_iter()
            .find(|e| e["action"] == "enrollment.expire" && e["target"] == short_id.as_str())
    };
    assert!(expired_event().await.is_none());
    // Making a code prunes the expired ones (the timer does too, every minute).
    wait_until(Duration::from_secs(20), async || {
        make_code(&server, &op, json!({})).await;
        expired_event().await.ok_or("not pruned yet")
    })
    .await;
    let listed = paginate_all(&server, "/api/v1/enrollments", &server.admin).await;
    assert!(listed
        .iter()
        .all(|e| e["enrollment_id"] != short_id.as_str()));
}
