//! Each bad input gets the problem+json answer API.md documents: the exact status and
//! `type`, never a 500, and never a partial write (nodes, pools and the audit log are
//! exactly as they were before the refused call).

use std::collections::HashSet;

use crate::common::*;
use base64::engine::general_purpose::STANDARD as B64;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use reqwest::header::HeaderMap;
use serde_json::{json, Value};

/// A request body.
#[derive(Clone)]
enum Body {
    None,
    Json(Value),
    /// Raw bytes sent as `application/json`.
    Raw(Vec<u8>),
    /// Raw bytes with an explicit content type (or none).
    Typed(Option<&'static str>, Vec<u8>),
}

impl From<Value> for Body {
    fn from(v: Value) -> Self {
        Body::Json(v)
    }
}

async fn send(
    server: &TestServer,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Body,
) -> (u16, HeaderMap, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = server.client.request(method, server.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req = match body {
        Body::None => req,
        Body::Json(v) => req.json(&v),
        Body::Raw(bytes) => req.header("content-type", "application/json").body(bytes),
        Body::Typed(Some(ct), bytes) => req.header("content-type", ct).body(bytes),
        Body::Typed(None, bytes) => req.body(bytes),
    };
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{path}: no answer (did the server panic?): {e}"));
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap_or_default();
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

/// Asserts a complete problem+json answer: status, type, content type and all fields.
fn assert_problem_json(
    label: &str,
    status: u16,
    headers: &HeaderMap,
    body: &Value,
    want: u16,
    kind: &str,
) {
    assert!(status < 500, "{label}: server error {status}: {body}");
    assert_eq!(status, want, "{label}: unexpected status, body: {body}");
    assert_eq!(
        headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/problem+json"),
        "{label}: content type"
    );
    assert_eq!(body["type"], kind, "{label}: problem type: {body}");
    assert_problem(status, body, want, kind);
}

/// Everything a refused call could have touched: every node and pool as an admin sees
/// them, and the audit log.
#[derive(Debug, PartialEq)]
struct Snapshot {
    nodes: Vec<Value>,
    pools: Vec<Value>,
    audit: Vec<Value>,
}

async fn snapshot(server: &TestServer) -> Snapshot {
    Snapshot {
        nodes: paginate_all(server, "/api/v1/nodes?limit=500", &server.admin).await,
        pools: paginate_all(server, "/api/v1/pools?limit=500", &server.admin).await,
        audit: paginate_all(server, "/api/v1/audit?limit=500", &server.admin).await,
    }
}

/// One refused call: exact problem answer and no change to the stored state.
#[allow(clippy::too_many_arguments)]
async fn refused(
    server: &TestServer,
    label: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: impl Into<Body>,
    want: u16,
    kind: &str,
) {
    let before = snapshot(server).await;
    let (status, headers, answer) = send(server, method, path, token, body.into()).await;
    assert_problem_json(
        &format!("{label} ({method} {path})"),
        status,
        &headers,
        &answer,
        want,
        kind,
    );
    let after = snapshot(server).await;
    assert!(
        before == after,
        "{label} ({method} {path}): refused with {status} but the state changed:\nbefore: {before:?}\nafter: {after:?}"
    );
}

/// A server with an operator and one node it owns.
struct Fixture {
    server: TestServer,
    op: String,
    node_id: String,
    key: ed25519_dalek::SigningKey,
}

impl Fixture {
    async fn new() -> Self {
        let server = TestServer::start().await;
        let op = server.cli_token("operator", "op-1");
        let (node, key) = server.register_node(&op, "pi-1").await;
        Fixture {
            node_id: node["node_id"].as_str().unwrap().to_string(),
            server,
            op,
            key,
        }
    }

    fn node_path(&self) -> String {
        format!("/api/v1/nodes/{}", self.node_id)
    }
}

fn register_body() -> Value {
    json!({"name": "n", "public_key": public_b64(&node_key()), "payout_address": TRON_ADDRESS})
}

#[tokio::test]
async fn malformed_json_is_400_validation_and_writes_nothing() {
    let fx = Fixture::new().await;
    let s = &fx.server;
    let admin = Some(s.admin.as_str());
    let node = fx.node_path();
    let join = "/api/v1/pools/pool_default/join";
    let bodies: Vec<(&str, Body)> = vec![
        ("truncated object", Body::Raw(b"{\"name\": \"x\"".to_vec())),
        ("not json", Body::Raw(b"name=x".to_vec())),
        ("trailing garbage", Body::Raw(b"{} {}".to_vec())),
        ("empty body", Body::Raw(Vec::new())),
        ("a bare string", Body::Raw(b"\"x\"".to_vec())),
        ("an array", Body::Raw(b"[]".to_vec())),
        ("null", Body::Raw(b"null".to_vec())),
        (
            "invalid utf-8",
            Body::Raw(b"{\"name\": \"\xff\xfe\"}".to_vec()),
        ),
        (
            "json without a content type",
            Body::Typed(None, register_body().to_string().into_bytes()),
        ),
        (
            "json sent as text/plain",
            Body::Typed(Some("text/plain"), register_body().to_string().into_bytes()),
        ),
    ];
    for (what, body) in bodies {
        for (method, path) in [
            ("POST", "/api/v1/nodes"),
            ("PUT", node.as_str()),
            ("POST", "/api/v1/pools"),
            ("POST", join),
            ("POST", "/api/v1/tokens"),
            ("POST", "/api/v1/auth/challenge"),
            ("POST", "/api/v1/auth/token"),
        ] {
            refused(
                s,
                what,
                method,
                path,
                admin,
                body.clone(),
                400,
                "validation",
            )
            .await;
        }
    }
}

#[tokio::test]
async fn unknown_fields_are_refused_on_every_body() {
    let fx = Fixture::new().await;
    let s = &fx.server;
    let admin = Some(s.admin.as_str());
    let node = fx.node_path();
    let mut with_extra = register_body();
    with_extra["is_admin"] = json!(true);
    refused(
        s,
        "register + unknown field",
        "POST",
        "/api/v1/nodes",
        admin,
        with_extra,
        400,
        "validation",
    )
    .await;
    // A misspelt optional field must not be silently dropped.
    refused(
        s,
        "register with misspelt payout address",
        "POST",
        "/api/v1/nodes",
        Some(&fx.op),
        json!({"name": "n", "public_key": public_b64(&node_key()), "payout_adress": TRON_ADDRESS}),
        400,
        "validation",
    )
    .await;
    // A field given twice is ambiguous: refused rather than last-one-wins.
    refused(
        s,
        "register with a duplicate field",
        "POST",
        "/api/v1/nodes",
        admin,
        Body::Raw(
            format!(
                r#"{{"name":"a","name":"b","public_key":"{}"}}"#,
                public_b64(&node_key())
            )
            .into_bytes(),
        ),
        400,
        "validation",
    )
    .await;
    refused(
        s,
        "update + unknown field",
        "PUT",
        &node,
        admin,
        json!({"name": "x", "balance_usdt": "100.000000"}),
        400,
        "validation",
    )
    .await;
    refused(
        s,
        "update with only an unknown field",
        "PUT",
        &node,
        Some(&fx.op),
        json!({"operator_id": "op-2"}),
        400,
        "validation",
    )
    .await;
    refused(
        s,
        "pool + unknown field",
        "POST",
        "/api/v1/pools",
        admin,
        json!({"name": "p", "members": []}),
        400,
        "validation",
    )
    .await;
    refused(
        s,
        "token + unknown field",
        "POST",
        "/api/v1/tokens",
        admin,
        json!({"role": "operator", "subject": "x", "scope": "all"}),
        400,
        "validation",
    )
    .await;
    refused(
        s,
        "challenge + unknown field",
        "POST",
        "/api/v1/auth/challenge",
        None,
        json!({"node_id": fx.node_id, "x": 1}),
        400,
        "validation",
    )
    .await;
    refused(
        s,
        "login + unknown field",
        "POST",
        "/api/v1/auth/token",
        None,
        json!({"node_id": fx.node_id, "nonce": "n", "signature": "s", "x": 1}),
        400,
        "validation",
    )
    .await;
    refused(
        s,
        "join + unknown field",
        "POST",
        "/api/v1/pools/pool_default/join",
        admin,
        json!({"node_id": fx.node_id, "force": true}),
        400,
        "validation",
    )
    .await;
}

#[tokio::test]
async fn missing_required_fields_are_400_validation() {
    let fx = Fixture::new().await;
    let s = &fx.server;
    let admin = Some(s.admin.as_str());
    let cases: Vec<(&str, &str, Value)> = vec![
        (
            "/api/v1/nodes",
            "register without a public key",
            json!({"name": "n"}),
        ),
        (
            "/api/v1/nodes",
            "register without a name",
            json!({"public_key": public_b64(&node_key())}),
        ),
        ("/api/v1/nodes", "register with an empty object", json!({})),
        (
            "/api/v1/pools",
            "pool without a name",
            json!({"capacity": 5}),
        ),
        (
            "/api/v1/tokens",
            "token without a subject",
            json!({"role": "operator"}),
        ),
        (
            "/api/v1/tokens",
            "token without a role",
            json!({"subject": "op-2"}),
        ),
        (
            "/api/v1/auth/challenge",
            "challenge without a node id",
            json!({}),
        ),
        (
            "/api/v1/auth/token",
            "login without a signature",
            json!({"node_id": fx.node_id, "nonce": "x"}),
        ),
        (
            "/api/v1/pools/pool_default/join",
            "join without a node id",
            json!({}),
        ),
    ];
    for (path, what, body) in cases {
        refused(s, what, "POST", path, admin, body, 400, "validation").await;
    }
}

#[tokio::test]
async fn wrong_json_types_are_400_validation() {
    let fx = Fixture::new().await;
    let s = &fx.server;
    let admin = Some(s.admin.as_str());
    let node = fx.node_path();
    let key = public_b64(&node_key());
    let cases: Vec<(&str, &str, &str, Value)> = vec![
        (
            "POST",
            "/api/v1/nodes",
            "name as a number",
            json!({"name": 5, "public_key": key}),
        ),
        (
            "POST",
            "/api/v1/nodes",
            "public key as an array",
            json!({"name": "n", "public_key": [1, 2, 3]}),
        ),
        (
            "POST",
            "/api/v1/nodes",
            "payout address as a bool",
            json!({"name": "n", "public_key": key, "payout_address": true}),
        ),
        (
            "POST",
            "/api/v1/nodes",
            "region as an object",
            json!({"name": "n", "public_key": key, "region": {}}),
        ),
        (
            "PUT",
            &node,
            "name as null",
            json!({"name": null, "region": 3}),
        ),
        ("PUT", &node, "status as a number", json!({"status": 1})),
        (
            "PUT",
            &node,
            "status not a known value",
            json!({"status": "godmode"}),
        ),
        (
            "POST",
            "/api/v1/pools",
            "capacity as a string",
            json!({"name": "p", "capacity": "10"}),
        ),
        (
            "POST",
            "/api/v1/pools",
            "capacity negative",
            json!({"name": "p", "capacity": -1}),
        ),
        (
            "POST",
            "/api/v1/pools",
            "capacity fractional",
            json!({"name": "p", "capacity": 1.5}),
        ),
        (
            "POST",
            "/api/v1/pools",
            "capacity above u32",
            json!({"name": "p", "capacity": 4_294_967_296u64}),
        ),
        (
            "POST",
            "/api/v1/tokens",
            "ttl as a string",
            json!({"role": "operator", "subject": "x", "ttl_seconds": "3600"}),
        ),
        (
            "POST",
            "/api/v1/tokens",
            "ttl negative",
            json!({"role": "operator", "subject": "x", "ttl_seconds": -60}),
        ),
        (
            "POST",
            "/api/v1/auth/challenge",
            "node id as a number",
            json!({"node_id": 7}),
        ),
        (
            "POST",
            "/api/v1/pools/pool_default/join",
            "node id as an array",
            json!({"node_id": [fx.node_id]}),
        ),
    ];
    for (method, path, what, body) in cases {
        refused(s, what, method, path, admin, body, 400, "validation").await;
    }
}

#[tokio::test]
async fn bodies_over_64_kib_are_413_payload_too_large() {
    let fx = Fixture::new().await;
    let s = &fx.server;
    let admin = Some(s.admin.as_str());
    let node = fx.node_path();
    // Valid JSON, just too big: a 70 KiB name.
    let big = "x".repeat(70 * 1024);
    let mut register = register_body();
    register["name"] = json!(big);
    for (method, path, body) in [
        ("POST", "/api/v1/nodes", register),
        ("PUT", node.as_str(), json!({"name": big})),
        ("POST", "/api/v1/pools", json!({"name": big})),
        (
            "POST",
            "/api/v1/tokens",
            json!({"role": "operator", "subject": big}),
        ),
        ("POST", "/api/v1/auth/challenge", json!({"node_id": big})),
        (
            "POST",
            "/api/v1/pools/pool_default/join",
            json!({"node_id": big}),
        ),
    ] {
        refused(
            s,
            "70 KiB body",
            method,
            path,
            admin,
            body,
            413,
            "payload-too-large",
        )
        .await;
    }
    // One byte over the limit is over it.
    let mut exact = register_body();
    let filler = 64 * 1024 + 1 - exact.to_string().len() - r#","region":"""#.len();
    exact["region"] = json!("r".repeat(filler));
    assert_eq!(exact.to_string().len(), 64 * 1024 + 1);
    refused(
        s,
        "64 KiB + 1 body",
        "POST",
        "/api/v1/nodes",
        admin,
        exact,
        413,
        "payload-too-large",
    )
    .await;
    // Under the limit, the same kind of request is judged on its content instead.
    let mut under = register_body();
    under["name"] = json!("x".repeat(1000));
    refused(
        s,
        "long name under the limit",
        "POST",
        "/api/v1/nodes",
        admin,
        under,
        400,
        "validation",
    )
    .await;
}

#[tokio::test]
async fn public_keys_must_be_32_bytes_of_base64_and_register_once() {
    let fx = Fixture::new().await;
    let s = &fx.server;
    let op = Some(fx.op.as_str());
    let good = node_key().verifying_key().to_bytes();
    let cases: Vec<(&str, String)> = vec![
        ("not base64", "not base64!!".to_string()),
        ("url-safe alphabet mixed with invalid", "@@@@".to_string()),
        ("empty", String::new()),
        ("31 bytes", B64.encode(&good[..31])),
        ("33 bytes", B64.encode([&good[..], &[0u8]].concat())),
        ("64 bytes", B64.encode([good, good].concat())),
        ("hex instead of base64", hex_of(&good)),
    ];
    for (what, key) in cases {
        refused(
            s,
            &format!("public key {what}"),
            "POST",
            "/api/v1/nodes",
            op,
            json!({"name": "n", "public_key": key}),
            400,
            "validation",
        )
        .await;
    }
    // The key of an existing node, by its operator, by another operator and by an admin.
    let (_, existing) = s.call("GET", &fx.node_path(), op, None).await;
    let taken = existing["public_key"].as_str().unwrap().to_string();
    let other_op = s.cli_token("operator", "op-2");
    for token in [fx.op.as_str(), other_op.as_str(), s.admin.as_str()] {
        refused(
            s,
            "duplicate public key",
            "POST",
            "/api/v1/nodes",
            Some(token),
            json!({"name": "again", "public_key": taken}),
            409,
            "duplicate-public-key",
        )
        .await;
    }
    // Surrounding whitespace does not make it a different key.
    refused(
        s,
        "duplicate public key with whitespace",
        "POST",
        "/api/v1/nodes",
        op,
        json!({"name": "again", "public_key": format!(" {taken}\n")}),
        409,
        "duplicate-public-key",
    )
    .await;
    // A deregistered node's key stays taken (its history stays under that key).
    let (status, _) = s.call("DELETE", &fx.node_path(), op, None).await;
    assert_eq!(status, 204);
    refused(
        s,
        "key of a deregistered node",
        "POST",
        "/api/v1/nodes",
        op,
        json!({"name": "again", "public_key": taken}),
        409,
        "duplicate-public-key",
    )
    .await;
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Base58check of `version || 20 bytes`.
fn base58check(version: u8) -> String {
    let mut payload = vec![version];
    payload.extend_from_slice(&[7u8; 20]);
    let checksum = {
        use sha2::{Digest, Sha256};
        let once = Sha256::digest(&payload);
        Sha256::digest(once)
    };
    payload.extend_from_slice(&checksum[..4]);
    bs58::encode(payload).into_string()
}

#[tokio::test]
async fn invalid_tron_addresses_are_400_on_register_and_update() {
    let fx = Fixture::new().await;
    let s = &fx.server;
    let op = Some(fx.op.as_str());
    // Sanity: the helper makes valid addresses with the right version byte.
    let valid_made = base58check(0x41);
    assert!(valid_made.starts_with('T'));
    let (status, body) = s
        .call(
            "PUT",
            &fx.node_path(),
            op,
            Some(json!({"payout_address": valid_made})),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let mut bad_checksum = TRON_ADDRESS.to_string();
    // Change one character (keeping the base58 alphabet): the checksum no longer matches.
    let c = if &bad_checksum[10..11] == "x" {
        "y"
    } else {
        "x"
    };
    bad_checksum.replace_range(10..11, c);
    let mut last_changed = TRON_ADDRESS.to_string();
    last_changed.replace_range(33..34, "u");
    let bitcoin_version = base58check(0x00);
    // A version byte other than 0x41 whose address still starts with `T`, so only the
    // version check can refuse it.
    let t_like = (0u8..=255)
        .filter(|&v| v != 0x41)
        .map(base58check)
        .find(|a| a.starts_with('T'))
        .expect("some other version byte encodes to a T... address");
    let cases: Vec<(&str, String)> = vec![
        ("bad checksum", bad_checksum),
        ("last character changed", last_changed),
        ("wrong version byte 0x00", bitcoin_version),
        ("wrong version byte 0xa0", base58check(0xa0)),
        ("wrong version byte, still starting with T", t_like),
        ("not starting with T", TRON_ADDRESS.replacen('T', "X", 1)),
        ("lowercase t", TRON_ADDRESS.to_lowercase()),
        (
            "an Ethereum address",
            "0x52908400098527886E0F7030069857D2E4169EE7".to_string(),
        ),
        ("truncated", TRON_ADDRESS[..20].to_string()),
        (
            "characters outside base58",
            "T0OIl0OIl0OIl0OIl0OIl0OIl0OIl0OIl".to_string(),
        ),
        ("empty", String::new()),
    ];
    for (what, address) in &cases {
        refused(
            s,
            &format!("register with {what}"),
            "POST",
            "/api/v1/nodes",
            op,
            json!({"name": "n", "public_key": public_b64(&node_key()), "payout_address": address}),
            400,
            "validation",
        )
        .await;
        refused(
            s,
            &format!("update with {what}"),
            "PUT",
            &fx.node_path(),
            op,
            json!({"payout_address": address, "name": "renamed"}),
            400,
            "validation",
        )
        .await;
    }
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_404_not_found() {
    let fx = Fixture::new().await;
    let s = &fx.server;
    let admin = Some(s.admin.as_str());
    for id in [
        "node_doesnotexist",
        "node_",
        "pool_default",
        "abc",
        "NODE_abc",
        "node_a%20b",
        "node_a.b",
        "node_%00",
        &"node_x".repeat(30),
    ] {
        let path = format!("/api/v1/nodes/{id}");
        refused(
            s,
            "get unknown node",
            "GET",
            &path,
            admin,
            Body::None,
            404,
            "not-found",
        )
        .await;
        refused(
            s,
            "update unknown node",
            "PUT",
            &path,
            admin,
            json!({"name": "x"}),
            404,
            "not-found",
        )
        .await;
        refused(
            s,
            "delete unknown node",
            "DELETE",
            &path,
            admin,
            Body::None,
            404,
            "not-found",
        )
        .await;
        refused(
            s,
            "join with unknown node",
            "POST",
            "/api/v1/pools/pool_default/join",
            admin,
            json!({"node_id": id}),
            404,
            "not-found",
        )
        .await;
    }
    for id in [
        "pool_doesnotexist",
        "pool_",
        "default",
        "node_abc",
        "pool_a%20b",
    ] {
        let path = format!("/api/v1/pools/{id}");
        refused(
            s,
            "get unknown pool",
            "GET",
            &path,
            admin,
            Body::None,
            404,
            "not-found",
        )
        .await;
        refused(
            s,
            "join unknown pool",
            "POST",
            &format!("{path}/join"),
            admin,
            json!({"node_id": fx.node_id}),
            404,
            "not-found",
        )
        .await;
    }
    // The caller's own node is still reachable: the 404s were about the ids.
    let (status, _) = s.call("GET", &fx.node_path(), admin, None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_node_token_cannot_reach_another_node() {
    let fx = Fixture::new().await;
    let s = &fx.server;
    let token = s.login_node(&fx.node_id, &fx.key).await;
    let (other, _) = s.register_node(&fx.op, "pi-2").await;
    let other = other["node_id"].as_str().unwrap().to_string();
    let other_path = format!("/api/v1/nodes/{other}");
    let t = Some(token.as_str());
    refused(
        s,
        "node joins another node",
        "POST",
        "/api/v1/pools/pool_default/join",
        t,
        json!({"node_id": other}),
        404,
        "not-found",
    )
    .await;
    refused(
        s,
        "node reads another node",
        "GET",
        &other_path,
        t,
        Body::None,
        404,
        "not-found",
    )
    .await;
    refused(
        s,
        "node renames another node",
        "PUT",
        &other_path,
        t,
        json!({"name": "x"}),
        404,
        "not-found",
    )
    .await;
    refused(
        s,
        "node deletes another node",
        "DELETE",
        &other_path,
        t,
        Body::None,
        404,
        "not-found",
    )
    .await;
    // The same node's own record: readable, but not changeable by the node.
    refused(
        s,
        "node renames itself",
        "PUT",
        &fx.node_path(),
        t,
        json!({"name": "x"}),
        403,
        "forbidden",
    )
    .await;
    refused(
        s,
        "node deletes itself",
        "DELETE",
        &fx.node_path(),
        t,
        Body::None,
        403,
        "forbidden",
    )
    .await;
}

#[tokio::test]
async fn login_refuses_unknown_nodes_wrong_signatures_and_replayed_nonces() {
    let fx = Fixture::new().await;
    let s = &fx.server;
    refused(
        s,
        "challenge for an unknown node",
        "POST",
        "/api/v1/auth/challenge",
        None,
        json!({"node_id": "node_doesnotexist"}),
        404,
        "not-found",
    )
    .await;

    let challenge = |node_id: String| async move {
        let (status, body) = s
            .call(
                "POST",
                "/api/v1/auth/challenge",
                None,
                Some(json!({"node_id": node_id})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["nonce"].as_str().unwrap().to_string()
    };

    // Signed by another key.
    let nonce = challenge(fx.node_id.clone()).await;
    let stranger = node_key();
    refused(
        s,
        "login signed by another key",
        "POST",
        "/api/v1/auth/token",
        None,
        json!({"node_id": fx.node_id, "nonce": nonce, "signature": sign_login(&stranger, &nonce)}),
        401,
        "invalid-signature",
    )
    .await;
    // Right key, wrong message (the nonce without the domain prefix).
    use ed25519_dalek::Signer;
    let nonce = challenge(fx.node_id.clone()).await;
    let raw = B64.encode(fx.key.sign(nonce.as_bytes()).to_bytes());
    refused(
        s,
        "login signing the bare nonce",
        "POST",
        "/api/v1/auth/token",
        None,
        json!({"node_id": fx.node_id, "nonce": nonce, "signature": raw}),
        401,
        "invalid-signature",
    )
    .await;
    // Not a signature at all.
    let nonce = challenge(fx.node_id.clone()).await;
    refused(
        s,
        "login with a garbage signature",
        "POST",
        "/api/v1/auth/token",
        None,
        json!({"node_id": fx.node_id, "nonce": nonce, "signature": "!!not base64!!"}),
        401,
        "invalid-signature",
    )
    .await;
    // A nonce never issued.
    let made_up = B64.encode([9u8; 32]);
    refused(s, "login with a made-up nonce", "POST", "/api/v1/auth/token", None,
        json!({"node_id": fx.node_id, "nonce": made_up, "signature": sign_login(&fx.key, &made_up)}),
        401, "invalid-challenge").await;
    // A nonce issued to another node.
    let (other, other_key) = s.register_node(&fx.op, "pi-2").await;
    let other = other["node_id"].as_str().unwrap().to_string();
    let nonce = challenge(other.clone()).await;
    refused(
        s,
        "login with another node's nonce",
        "POST",
        "/api/v1/auth/token",
        None,
        json!({"node_id": fx.node_id, "nonce": nonce, "signature": sign_login(&fx.key, &nonce)}),
        401,
        "invalid-challenge",
    )
    .await;
    // Replaying a nonce that already gave a token.
    let nonce = challenge(fx.node_id.clone()).await;
    let login =
        json!({"node_id": fx.node_id, "nonce": nonce, "signature": sign_login(&fx.key, &nonce)});
    let (status, body) = s
        .call("POST", "/api/v1/auth/token", None, Some(login.clone()))
        .await;
    assert_eq!(status, 200, "{body}");
    refused(
        s,
        "login replaying a used nonce",
        "POST",
        "/api/v1/auth/token",
        None,
        login,
        401,
        "invalid-challenge",
    )
    .await;
    // A nonce answered once with a bad signature is spent too.
    let nonce = challenge(other.clone()).await;
    refused(
        s,
        "bad signature spends the nonce",
        "POST",
        "/api/v1/auth/token",
        None,
        json!({"node_id": other, "nonce": nonce, "signature": sign_login(&stranger, &nonce)}),
        401,
        "invalid-signature",
    )
    .await;
    refused(
        s,
        "retry of a spent nonce",
        "POST",
        "/api/v1/auth/token",
        None,
        json!({"node_id": other, "nonce": nonce, "signature": sign_login(&other_key, &nonce)}),
        401,
        "invalid-challenge",
    )
    .await;
    // Unknown node on login.
    refused(s, "login for an unknown node", "POST", "/api/v1/auth/token", None,
        json!({"node_id": "node_doesnotexist", "nonce": made_up, "signature": sign_login(&fx.key, &made_up)}),
        404, "not-found").await;
}

#[tokio::test]
async fn list_parameters_are_validated() {
    let fx = Fixture::new().await;
    let s = &fx.server;
    let admin = Some(s.admin.as_str());
    let op = Some(fx.op.as_str());
    for list in ["/api/v1/nodes", "/api/v1/pools", "/api/v1/audit"] {
        for query in [
            "limit=0",
            "limit=501",
            "limit=-1",
            "limit=abc",
            "limit=99999999999999999999",
            "cursor=!!!",
            "cursor=%FF%FE",
            "cursor=not%20a%20cursor",
        ] {
            let path = format!("{list}?{query}");
            refused(
                s,
                "bad list parameter",
                "GET",
                &path,
                admin,
                Body::None,
                400,
                "validation",
            )
            .await;
        }
    }
    // The audit cursor is a sequence number; a cursor that decodes to anything else is
    // not one the service issued.
    let not_a_seq = B64URL.encode("node_abc");
    refused(
        s,
        "audit cursor of another list",
        "GET",
        &format!("/api/v1/audit?cursor={not_a_seq}"),
        admin,
        Body::None,
        400,
        "validation",
    )
    .await;
    for query in [
        "status=bogus",
        "status=ONLINE",
        "status=online,offline",
        "limit=0&status=online",
    ] {
        let path = format!("/api/v1/nodes?{query}");
        refused(
            s,
            "bad status filter",
            "GET",
            &path,
            admin,
            Body::None,
            400,
            "validation",
        )
        .await;
        refused(
            s,
            "bad status filter (operator)",
            "GET",
            &path,
            op,
            Body::None,
            400,
            "validation",
        )
        .await;
    }
    // Edges that are allowed.
    for path in [
        "/api/v1/nodes?limit=1",
        "/api/v1/nodes?limit=500",
        "/api/v1/nodes?status=registered",
        "/api/v1/audit?limit=500",
        "/api/v1/pools?limit=1",
    ] {
        let (status, body) = s.call("GET", path, admin, None).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
}

#[tokio::test]
async fn an_audit_cursor_past_the_end_gives_an_empty_page_not_a_crash() {
    let fx = Fixture::new().await;
    let s = &fx.server;
    let admin = Some(s.admin.as_str());
    for seq in ["999999", &u64::MAX.to_string()] {
        let path = format!("/api/v1/audit?cursor={}", B64URL.encode(seq));
        let (status, _, body) = send(s, "GET", &path, admin, Body::None).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(body["items"], json!([]), "{body}");
        assert!(body["next_cursor"].is_null(), "{body}");
    }
    // The service is still up and answering.
    let (status, _) = s.call("GET", "/health", None, None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn pool_capacity_and_name_are_validated() {
    let fx = Fixture::new().await;
    let s = &fx.server;
    let admin = Some(s.admin.as_str());
    // MAX_NODES_PER_POOL is 100 by default.
    let (status, body) = s
        .call(
            "POST",
            "/api/v1/pools",
            admin,
            Some(json!({"name": "full-size", "capacity": 100})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = s
        .call(
            "POST",
            "/api/v1/pools",
            admin,
            Some(json!({"name": "tiny", "capacity": 1})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    for (what, body) in [
        ("capacity 0", json!({"name": "p0", "capacity": 0})),
        (
            "capacity over MAX_NODES_PER_POOL",
            json!({"name": "p101", "capacity": 101}),
        ),
        (
            "capacity far over",
            json!({"name": "pbig", "capacity": 4_000_000_000u32}),
        ),
        ("empty name", json!({"name": ""})),
        ("blank name", json!({"name": "   "})),
        ("name with a control character", json!({"name": "a\u{7}b"})),
        ("name too long", json!({"name": "p".repeat(129)})),
        ("empty region", json!({"name": "p", "region": " "})),
    ] {
        refused(
            s,
            what,
            "POST",
            "/api/v1/pools",
            admin,
            body,
            400,
            "validation",
        )
        .await;
    }
    for (what, name) in [
        ("the default pool's name", "default"),
        ("a created pool's name", "tiny"),
        ("a created pool's name padded", "  tiny "),
    ] {
        refused(
            s,
            what,
            "POST",
            "/api/v1/pools",
            admin,
            json!({"name": name, "capacity": 5}),
            409,
            "duplicate-pool-name",
        )
        .await;
    }
}

#[tokio::test]
async fn token_requests_are_validated() {
    let fx = Fixture::new().await;
    let s = &fx.server;
    let admin = Some(s.admin.as_str());
    for (what, body) in [
        ("role node", json!({"role": "node", "subject": fx.node_id})),
        ("unknown role", json!({"role": "root", "subject": "x"})),
        ("role in capitals", json!({"role": "ADMIN", "subject": "x"})),
        ("empty subject", json!({"role": "operator", "subject": ""})),
        (
            "subject with a space",
            json!({"role": "operator", "subject": "op 1"}),
        ),
        (
            "subject with a slash",
            json!({"role": "operator", "subject": "op/1"}),
        ),
        (
            "subject too long",
            json!({"role": "operator", "subject": "o".repeat(129)}),
        ),
        (
            "ttl under a minute",
            json!({"role": "operator", "subject": "op-2", "ttl_seconds": 59}),
        ),
        (
            "ttl zero",
            json!({"role": "operator", "subject": "op-2", "ttl_seconds": 0}),
        ),
        (
            "ttl over 366 days",
            json!({"role": "operator", "subject": "op-2", "ttl_seconds": 366 * 86_400 + 1}),
        ),
    ] {
        refused(
            s,
            what,
            "POST",
            "/api/v1/tokens",
            admin,
            body,
            400,
            "validation",
        )
        .await;
    }
    // Register-on-behalf subjects are checked the same way.
    refused(
        s,
        "admin registers for an invalid operator id",
        "POST",
        "/api/v1/nodes",
        admin,
        json!({"name": "n", "public_key": public_b64(&node_key()), "operator_id": "op 1"}),
        400,
        "validation",
    )
    .await;
}

#[tokio::test]
async fn node_fields_are_validated_on_register_and_update() {
    let fx = Fixture::new().await;
    let s = &fx.server;
    let op = Some(fx.op.as_str());
    let admin = Some(s.admin.as_str());
    for (what, name) in [
        ("empty name", ""),
        ("blank name", "  \t "),
        ("control character", "pi\u{0}1"),
    ] {
        refused(
            s,
            what,
            "POST",
            "/api/v1/nodes",
            op,
            json!({"name": name, "public_key": public_b64(&node_key())}),
            400,
            "validation",
        )
        .await;
        refused(
            s,
            what,
            "PUT",
            &fx.node_path(),
            op,
            json!({"name": name}),
            400,
            "validation",
        )
        .await;
    }
    refused(
        s,
        "name too long",
        "PUT",
        &fx.node_path(),
        op,
        json!({"name": "n".repeat(129)}),
        400,
        "validation",
    )
    .await;
    refused(
        s,
        "region too long",
        "PUT",
        &fx.node_path(),
        op,
        json!({"region": "r".repeat(129)}),
        400,
        "validation",
    )
    .await;
    // A good field next to a bad one: nothing of it is applied.
    refused(
        s,
        "good name, bad region",
        "PUT",
        &fx.node_path(),
        op,
        json!({"name": "fine", "region": ""}),
        400,
        "validation",
    )
    .await;
    // Status changes outside the documented ones are refused by rule.
    refused(
        s,
        "status online set by admin",
        "PUT",
        &fx.node_path(),
        admin,
        json!({"status": "online", "name": "x"}),
        422,
        "invalid-status-change",
    )
    .await;
    refused(
        s,
        "status deregistered set by admin",
        "PUT",
        &fx.node_path(),
        admin,
        json!({"status": "deregistered"}),
        422,
        "invalid-status-change",
    )
    .await;
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_problem_json() {
    let fx = Fixture::new().await;
    let s = &fx.server;
    let admin = Some(s.admin.as_str());
    for path in [
        "/nope",
        "/api/v1/nope",
        "/api/v2/nodes",
        "/api/v1/nodes/node_x/extra",
        "/api/v1/pools/pool_default/leave",
        "/api/v1",
    ] {
        refused(
            s,
            "unknown route",
            "GET",
            path,
            admin,
            Body::None,
            404,
            "not-found",
        )
        .await;
        refused(
            s,
            "unknown route without a token",
            "GET",
            path,
            None,
            Body::None,
            404,
            "not-found",
        )
        .await;
    }
    refused(
        s,
        "unknown route, POST",
        "POST",
        "/api/v1/nodes/node_x/reboot",
        admin,
        json!({}),
        404,
        "not-found",
    )
    .await;
    for (method, path) in [
        ("DELETE", "/api/v1/pools/pool_default"),
        ("PATCH", "/api/v1/nodes"),
        ("DELETE", "/api/v1/tokens"),
        ("PUT", "/api/v1/audit"),
    ] {
        refused(
            s,
            "method not allowed",
            method,
            path,
            admin,
            Body::None,
            405,
            "method-not-allowed",
        )
        .await;
    }
}

/// Every node id of a list, following `next_cursor` with `limit=3`.
async fn walk_pages(server: &TestServer, token: &str, extra: &str) -> (Vec<String>, usize) {
    let path = format!("/api/v1/nodes?limit=3{extra}");
    let pages = pages_of(server, &path, token).await;
    assert!(pages.len() <= 10, "pagination does not end");
    let mut ids = Vec::new();
    for (i, body) in pages.iter().enumerate() {
        let items = body["items"].as_array().unwrap();
        assert!(
            items.len() <= 3,
            "{path}, page {i}: more than limit: {body}"
        );
        if i + 1 < pages.len() {
            assert_eq!(items.len(), 3, "a non-final page is full: {body}");
        }
        ids.extend(
            items
                .iter()
                .map(|n| n["node_id"].as_str().unwrap().to_string()),
        );
    }
    (ids, pages.len())
}

#[tokio::test]
async fn pagination_follows_next_cursor_through_every_node_exactly_once() {
    let server = TestServer::start().await;
    let op = server.cli_token("operator", "op-1");
    let other = server.cli_token("operator", "op-2");
    let mut mine = HashSet::new();
    for i in 0..7 {
        let (node, _) = server.register_node(&op, &format!("pi-{i}")).await;
        mine.insert(node["node_id"].as_str().unwrap().to_string());
    }
    // Another operator's nodes interleave with op-1's in id order.
    let mut theirs = HashSet::new();
    for i in 0..4 {
        let (node, _) = server.register_node(&other, &format!("x-{i}")).await;
        theirs.insert(node["node_id"].as_str().unwrap().to_string());
    }

    for (who, token, extra, want) in [
        ("operator", op.as_str(), "", &mine),
        (
            "operator, status filter",
            op.as_str(),
            "&status=registered",
            &mine,
        ),
        ("other operator", other.as_str(), "", &theirs),
    ] {
        let (ids, pages) = walk_pages(&server, token, extra).await;
        let unique: HashSet<String> = ids.iter().cloned().collect();
        assert_eq!(
            unique.len(),
            ids.len(),
            "{who}: duplicates across pages: {ids:?}"
        );
        assert_eq!(&unique, want, "{who}: pages do not add up to the nodes");
        assert_eq!(pages, want.len().div_ceil(3), "{who}");
    }
    let (ids, pages) = walk_pages(&server, &server.admin, "").await;
    let unique: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "admin: duplicates: {ids:?}");
    let all: HashSet<String> = mine.union(&theirs).cloned().collect();
    assert_eq!(unique, all);
    assert_eq!(pages, 4);
    // Ids come in a stable (sorted) order.
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);

    // The status index pages the same way (an admin's status filter reads it).
    let (ids, pages) = walk_pages(&server, &server.admin, "&status=registered").await;
    assert_eq!(
        ids, sorted,
        "admin, registered: every node once, in id order"
    );
    assert_eq!(pages, 4);
    let (ids, _) = walk_pages(&server, &server.admin, "&status=online").await;
    assert!(ids.is_empty(), "no node is online: {ids:?}");

    // The pool-member index pages the same way.
    for id in &mine {
        let (status, body) = server
            .call(
                "POST",
                "/api/v1/pools/pool_default/join",
                Some(&op),
                Some(json!({"node_id": id})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let (ids, _) = walk_pages(&server, &server.admin, "&pool_id=pool_default").await;
    let unique: HashSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len());
    assert_eq!(unique, mine);

    // Audit pages join up too: every seq once, in order.
    let seqs: Vec<u64> = paginate_all(&server, "/api/v1/audit?limit=4", &server.admin)
        .await
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    let all_seqs: Vec<u64> = paginate_all(&server, "/api/v1/audit?limit=500", &server.admin)
        .await
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, all_seqs);
    // At least the 11 registrations and 7 joins.
    assert!(seqs.len() >= 18, "{seqs:?}");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[tokio::test]
async fn a_json_array_is_not_accepted_in_place_of_the_documented_object() {
    // Serde can fill a struct from an array by position; the API takes objects only, so
    // the order of fields in the code never becomes part of the contract.
    let fx = Fixture::new().await;
    let s = &fx.server;
    let admin = Some(s.admin.as_str());
    let key = public_b64(&node_key());
    let cases: Vec<(&str, String, Value)> = vec![
        (
            "POST",
            "/api/v1/nodes".into(),
            json!(["arr", key, null, null, null]),
        ),
        ("PUT", fx.node_path(), json!(["renamed", null, null, null])),
        ("POST", "/api/v1/pools".into(), json!(["arr-pool", null, 5])),
        (
            "POST",
            "/api/v1/tokens".into(),
            json!(["operator", "op-9", 3600]),
        ),
        ("POST", "/api/v1/auth/challenge".into(), json!([fx.node_id])),
        (
            "POST",
            "/api/v1/pools/pool_default/join".into(),
            json!([fx.node_id]),
        ),
    ];
    for (method, path, body) in cases {
        refused(
            s,
            "positional array body",
            method,
            &path,
            admin,
            body,
            400,
            "validation",
        )
        .await;
    }
    // Whitespace before the object is still fine.
    let body = format!(
        " \n\t{}",
        json!({"name": "spaced", "public_key": public_b64(&node_key())})
    );
    let (status, _, answer) = send(
        s,
        "POST",
        "/api/v1/nodes",
        admin,
        Body::Raw(body.into_bytes()),
    )
    .await;
    assert_eq!(status, 201, "{answer}");
}
