//! The access matrix: every route x {no token, garbage token, node, other node, operator,
//! other operator, admin} gives the status API.md documents, with the documented problem
//! `type` for refusals. Plus the ways a token stops being accepted: signed by another
//! installation, expired, or held by a node that was deregistered.

use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

/// Who makes a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    /// No `Authorization` header at all.
    Nobody,
    /// A bearer token that is not a JWT.
    Garbage,
    /// Node NA (registered by operator A), with its own login token.
    NodeA,
    /// Node NB (registered by operator B).
    NodeB,
    OpA,
    OpB,
    Admin,
}

const GARBAGE_TOKEN: &str = "not-a-jwt.at-all.really";

/// One server with two operators, each owning one logged-in node.
struct Fixture {
    server: TestServer,
    op_a: String,
    op_b: String,
    na: String,
    nb: String,
    na_token: String,
    nb_token: String,
}

impl Fixture {
    async fn new() -> Self {
        let server = TestServer::start().await;
        let op_a = server.cli_token("operator", "op-a");
        let op_b = server.cli_token("operator", "op-b");
        let (na, key_a) = server.register_node(&op_a, "na").await;
        let (nb, key_b) = server.register_node(&op_b, "nb").await;
        let na = na["node_id"].as_str().unwrap().to_string();
        let nb = nb["node_id"].as_str().unwrap().to_string();
        let na_token = server.login_node(&na, &key_a).await;
        let nb_token = server.login_node(&nb, &key_b).await;
        Fixture {
            server,
            op_a,
            op_b,
            na,
            nb,
            na_token,
            nb_token,
        }
    }

    fn token(&self, who: Who) -> Option<&str> {
        match who {
            Who::Nobody => None,
            Who::Garbage => Some(GARBAGE_TOKEN),
            Who::NodeA => Some(&self.na_token),
            Who::NodeB => Some(&self.nb_token),
            Who::OpA => Some(&self.op_a),
            Who::OpB => Some(&self.op_b),
            Who::Admin => Some(&self.server.admin),
        }
    }

    /// A fresh node owned by `owner` (a token), for calls that destroy or change it.
    async fn fresh_node(&self, owner: &str, name: &str) -> String {
        let (node, _) = self.server.register_node(owner, name).await;
        node["node_id"].as_str().unwrap().to_string()
    }

    /// The node ids `who` gets from `GET /api/v1/nodes`, sorted.
    async fn listed_ids(&self, who: Who) -> Vec<String> {
        let (status, body) = self
            .server
            .call("GET", "/api/v1/nodes?limit=500", self.token(who), None)
            .await;
        assert_eq!(status, 200, "{who:?} lists nodes: {body}");
        assert!(body["next_cursor"].is_null(), "{body}");
        let mut ids: Vec<String> = body["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["node_id"].as_str().unwrap().to_string())
            .collect();
        ids.sort();
        ids
    }
}

struct Row {
    who: Who,
    method: &'static str,
    path: String,
    body: Option<Value>,
    want: u16,
}

fn row(who: Who, method: &'static str, path: &str, body: Option<Value>, want: u16) -> Row {
    Row {
        who,
        method,
        path: path.to_string(),
        body,
        want,
    }
}

/// The problem type a refusal must carry, from who asked and the status.
fn expected_type(who: Who, status: u16) -> &'static str {
    match (who, status) {
        (Who::Nobody, 401) => "missing-token",
        (_, 401) => "invalid-token",
        (_, 403) => "forbidden",
        (_, 404) => "not-found",
        _ => "validation",
    }
}

/// Runs every row in order; collects every mismatch and fails once, naming each row.
async fn run_rows(fx: &Fixture, rows: Vec<Row>) {
    let mut failures = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        let label = format!(
            "row {i}: {:?} {} {} {}",
            r.who,
            r.method,
            r.path,
            r.body.as_ref().map(|b| b.to_string()).unwrap_or_default()
        );
        let (status, headers, body) = fx
            .server
            .call_full(r.method, &r.path, fx.token(r.who), r.body.clone())
            .await;
        if status != r.want {
            failures.push(format!(
                "{label}\n    want {}, got {status}: {body}",
                r.want
            ));
            continue;
        }
        if status >= 400 {
            let content_type = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            let want_type = expected_type(r.who, status);
            if content_type != "application/problem+json"
                || body["type"] != want_type
                || body["status"] != status
                || !body["title"].is_string()
                || !body["detail"].is_string()
            {
                failures.push(format!(
                    "{label}\n    want problem+json type {want_type:?}, got content-type {content_type:?}: {body}"
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
}

/// A fresh key's registration body.
fn new_node_body(name: &str) -> Value {
    json!({"name": name, "public_key": public_b64(&node_key()), "payout_address": TRON_ADDRESS})
}

#[tokio::test]
async fn every_route_answers_each_caller_with_the_documented_status() {
    use Who::*;
    let fx = Fixture::new().await;
    let server = &fx.server;
    let na = format!("/api/v1/nodes/{}", fx.na);
    let nb = format!("/api/v1/nodes/{}", fx.nb);
    let pool = "/api/v1/pools/pool_default";
    let join = "/api/v1/pools/pool_default/join";
    let join_na = || Some(json!({"node_id": fx.na}));

    // Victims for destructive and status-changing calls, so NA and NB stay usable.
    let a_del_by_op_a = fx.fresh_node(&fx.op_a, "del-by-op-a").await;
    let a_del_by_admin = fx.fresh_node(&fx.op_a, "del-by-admin").await;
    let a_suspend_by_admin = fx.fresh_node(&fx.op_a, "suspend-by-admin").await;
    let b_del_by_admin = fx.fresh_node(&fx.op_b, "b-del-by-admin").await;
    let node = |id: &str| format!("/api/v1/nodes/{id}");

    let rows = vec![
        // --- Registering nodes: operators and admins; never nodes.
        row(OpA, "POST", "/api/v1/nodes", Some(new_node_body("a2")), 201),
        row(OpB, "POST", "/api/v1/nodes", Some(new_node_body("b2")), 201),
        row(
            Admin,
            "POST",
            "/api/v1/nodes",
            Some(new_node_body("r1")),
            201,
        ),
        row(
            Admin,
            "POST",
            "/api/v1/nodes",
            Some(
                json!({"name": "for-b", "public_key": public_b64(&node_key()), "operator_id": "op-b"}),
            ),
            201,
        ),
        row(
            NodeA,
            "POST",
            "/api/v1/nodes",
            Some(new_node_body("n")),
            403,
        ),
        row(
            NodeB,
            "POST",
            "/api/v1/nodes",
            Some(new_node_body("n")),
            403,
        ),
        // An operator may not register on behalf of another operator.
        row(
            OpA,
            "POST",
            "/api/v1/nodes",
            Some(
                json!({"name": "x", "public_key": public_b64(&node_key()), "operator_id": "op-b"}),
            ),
            403,
        ),
        // --- Listing nodes (the ids are checked in their own test).
        row(NodeA, "GET", "/api/v1/nodes", None, 200),
        row(NodeB, "GET", "/api/v1/nodes", None, 200),
        row(OpA, "GET", "/api/v1/nodes", None, 200),
        row(OpB, "GET", "/api/v1/nodes", None, 200),
        row(Admin, "GET", "/api/v1/nodes", None, 200),
        // --- Reading one node: only those who may see it; 404 (not 403) for the others.
        row(NodeA, "GET", &na, None, 200),
        row(NodeB, "GET", &na, None, 404),
        row(OpA, "GET", &na, None, 200),
        row(OpB, "GET", &na, None, 404),
        row(Admin, "GET", &na, None, 200),
        row(NodeB, "GET", &nb, None, 200),
        row(NodeA, "GET", &nb, None, 404),
        row(OpB, "GET", &nb, None, 200),
        row(OpA, "GET", &nb, None, 404),
        row(Admin, "GET", &nb, None, 200),
        // --- Changing a node: its operator and admins; a node may not, even itself.
        row(NodeA, "PUT", &na, Some(json!({"name": "self"})), 403),
        row(NodeB, "PUT", &na, Some(json!({"name": "other"})), 404),
        row(OpB, "PUT", &na, Some(json!({"name": "other-op"})), 404),
        row(OpA, "PUT", &na, Some(json!({"name": "na-renamed"})), 200),
        row(Admin, "PUT", &na, Some(json!({"region": "eu-west"})), 200),
        row(OpB, "PUT", &nb, Some(json!({"name": "nb-renamed"})), 200),
        // Only an admin sets status.
        row(OpA, "PUT", &na, Some(json!({"status": "suspended"})), 403),
        row(NodeA, "PUT", &na, Some(json!({"status": "suspended"})), 403),
        row(OpB, "PUT", &na, Some(json!({"status": "suspended"})), 403),
        row(
            Admin,
            "PUT",
            &na,
            Some(json!({"status": "registered"})),
            200,
        ),
        row(
            Admin,
            "PUT",
            &node(&a_suspend_by_admin),
            Some(json!({"status": "suspended"})),
            200,
        ),
        // --- Deregistering: its operator and admins; 404 for those who cannot see it.
        row(NodeA, "DELETE", &na, None, 403),
        row(NodeB, "DELETE", &na, None, 404),
        row(OpB, "DELETE", &na, None, 404),
        row(NodeA, "DELETE", &node(&a_del_by_op_a), None, 404),
        row(OpB, "DELETE", &node(&a_del_by_op_a), None, 404),
        row(OpA, "DELETE", &node(&b_del_by_admin), None, 404),
        row(OpA, "DELETE", &node(&a_del_by_op_a), None, 204),
        row(Admin, "DELETE", &node(&a_del_by_admin), None, 204),
        row(Admin, "DELETE", &node(&b_del_by_admin), None, 204),
        // NA survived all of that.
        row(NodeA, "GET", &na, None, 200),
        // --- Pools: everyone authenticated reads them; only admins create.
        row(NodeA, "GET", "/api/v1/pools", None, 200),
        row(NodeB, "GET", "/api/v1/pools", None, 200),
        row(OpA, "GET", "/api/v1/pools", None, 200),
        row(OpB, "GET", "/api/v1/pools", None, 200),
        row(Admin, "GET", "/api/v1/pools", None, 200),
        row(NodeA, "GET", pool, None, 200),
        row(NodeB, "GET", pool, None, 200),
        row(OpA, "GET", pool, None, 200),
        row(OpB, "GET", pool, None, 200),
        row(Admin, "GET", pool, None, 200),
        row(
            Admin,
            "POST",
            "/api/v1/pools",
            Some(json!({"name": "eu-1", "capacity": 10})),
            201,
        ),
        row(
            OpA,
            "POST",
            "/api/v1/pools",
            Some(json!({"name": "op-pool"})),
            403,
        ),
        row(
            OpB,
            "POST",
            "/api/v1/pools",
            Some(json!({"name": "op-pool"})),
            403,
        ),
        row(
            NodeA,
            "POST",
            "/api/v1/pools",
            Some(json!({"name": "node-pool"})),
            403,
        ),
        row(
            NodeB,
            "POST",
            "/api/v1/pools",
            Some(json!({"name": "node-pool"})),
            403,
        ),
        // --- Joining: the node itself, its operator, or an admin.
        row(NodeA, "POST", join, join_na(), 200),
        row(NodeB, "POST", join, join_na(), 404),
        row(OpA, "POST", join, join_na(), 200),
        row(OpB, "POST", join, join_na(), 404),
        row(Admin, "POST", join, join_na(), 200),
        row(NodeA, "POST", join, Some(json!({"node_id": fx.nb})), 404),
        row(NodeB, "POST", join, Some(json!({"node_id": fx.nb})), 200),
        // --- Tokens: admins only.
        row(
            Admin,
            "POST",
            "/api/v1/tokens",
            Some(json!({"role": "operator", "subject": "op-c"})),
            201,
        ),
        row(
            OpA,
            "POST",
            "/api/v1/tokens",
            Some(json!({"role": "operator", "subject": "op-c"})),
            403,
        ),
        row(
            OpB,
            "POST",
            "/api/v1/tokens",
            Some(json!({"role": "admin", "subject": "op-b"})),
            403,
        ),
        row(
            NodeA,
            "POST",
            "/api/v1/tokens",
            Some(json!({"role": "operator", "subject": "op-c"})),
            403,
        ),
        row(
            NodeB,
            "POST",
            "/api/v1/tokens",
            Some(json!({"role": "operator", "subject": "op-c"})),
            403,
        ),
        // --- Token listing and revocation: admins only (a jti nobody holds: no effect).
        row(Admin, "GET", "/api/v1/tokens", None, 200),
        row(OpA, "GET", "/api/v1/tokens", None, 403),
        row(NodeA, "GET", "/api/v1/tokens", None, 403),
        row(
            Admin,
            "POST",
            "/api/v1/tokens/revoke",
            Some(json!({"jti": "matrix-nobody"})),
            200,
        ),
        row(
            OpA,
            "POST",
            "/api/v1/tokens/revoke",
            Some(json!({"jti": "matrix-nobody"})),
            403,
        ),
        row(
            OpB,
            "POST",
            "/api/v1/tokens/revoke",
            Some(json!({"subject": "op-b"})),
            403,
        ),
        row(
            NodeA,
            "POST",
            "/api/v1/tokens/revoke",
            Some(json!({"jti": "matrix-nobody"})),
            403,
        ),
        // --- Audit: admins only.
        row(Admin, "GET", "/api/v1/audit", None, 200),
        row(OpA, "GET", "/api/v1/audit", None, 403),
        row(OpB, "GET", "/api/v1/audit", None, 403),
        row(NodeA, "GET", "/api/v1/audit", None, 403),
        row(NodeB, "GET", "/api/v1/audit", None, 403),
        // --- Alerts: operators their own, admins any operator's and the fleet hook.
        row(OpA, "GET", "/api/v1/alerts", None, 200),
        row(OpA, "GET", "/api/v1/alerts?operator_id=op-a", None, 200),
        row(OpA, "GET", "/api/v1/alerts?operator_id=op-b", None, 403),
        row(
            OpB,
            "PUT",
            "/api/v1/alerts?operator_id=op-a",
            Some(json!({"webhook_url": "https://h/x", "secret": "s"})),
            403,
        ),
        row(OpB, "DELETE", "/api/v1/alerts?operator_id=op-a", None, 403),
        row(Admin, "GET", "/api/v1/alerts", None, 200),
        row(Admin, "GET", "/api/v1/alerts?operator_id=op-a", None, 200),
        row(NodeA, "GET", "/api/v1/alerts", None, 403),
        row(
            NodeA,
            "PUT",
            "/api/v1/alerts",
            Some(json!({"webhook_url": "https://h/x", "secret": "s"})),
            403,
        ),
        row(NodeB, "DELETE", "/api/v1/alerts", None, 403),
        // --- Public routes need no token, and ignore a bad one.
        row(Nobody, "GET", "/health", None, 200),
        row(Nobody, "GET", "/metrics", None, 200),
        row(Nobody, "GET", "/api/v1/keys", None, 200),
        row(Nobody, "GET", "/api/v1/openapi.json", None, 200),
        row(Garbage, "GET", "/health", None, 200),
        row(Garbage, "GET", "/api/v1/keys", None, 200),
        // The console's page and assets load without a token (its API calls need one).
        row(Nobody, "GET", "/", None, 200),
        row(Nobody, "GET", "/ui/", None, 200),
        row(Garbage, "GET", "/ui/app.js", None, 200),
        row(OpA, "GET", "/ui/verify.js", None, 200),
        row(Nobody, "GET", "/ui/no-such-file.js", None, 404),
        row(
            Nobody,
            "POST",
            "/api/v1/auth/challenge",
            Some(json!({"node_id": fx.na})),
            200,
        ),
    ];
    run_rows(&fx, rows).await;

    // The refused calls changed nothing: NA is as op-a and the admin left it.
    let (_, na_now) = server.call("GET", &na, Some(&server.admin), None).await;
    assert_eq!(na_now["name"], "na-renamed");
    assert_eq!(na_now["region"], "eu-west");
    assert_eq!(na_now["status"], "registered");
    assert_eq!(na_now["pool_id"], "pool_default");
    let (_, nb_now) = server.call("GET", &nb, Some(&server.admin), None).await;
    assert_eq!(nb_now["name"], "nb-renamed");
    let (_, suspended) = server
        .call("GET", &node(&a_suspend_by_admin), Some(&server.admin), None)
        .await;
    assert_eq!(suspended["status"], "suspended");
    for id in [&a_del_by_op_a, &a_del_by_admin, &b_del_by_admin] {
        let (_, n) = server
            .call("GET", &node(id), Some(&server.admin), None)
            .await;
        assert_eq!(n["status"], "deregistered", "{n}");
    }
    // Only pools the admin created exist; no token minted for a non-admin.
    let (_, pools) = server
        .call("GET", "/api/v1/pools", Some(&server.admin), None)
        .await;
    let names: Vec<&str> = pools["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{pools}");
    assert!(names.contains(&"default") && names.contains(&"eu-1"));
    let (_, audit) = server
        .call("GET", "/api/v1/audit?limit=500", Some(&server.admin), None)
        .await;
    let token_events = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "token.issue")
        .count();
    assert_eq!(
        token_events, 1,
        "only the admin's token request is recorded"
    );
}

#[tokio::test]
async fn every_authenticated_route_refuses_missing_and_garbage_tokens() {
    let fx = Fixture::new().await;
    let na = format!("/api/v1/nodes/{}", fx.na);
    let authenticated: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/api/v1/nodes".into(), None),
        ("POST", "/api/v1/nodes".into(), Some(new_node_body("x"))),
        ("GET", na.clone(), None),
        ("PUT", na.clone(), Some(json!({"name": "x"}))),
        ("DELETE", na.clone(), None),
        ("GET", "/api/v1/pools".into(), None),
        ("POST", "/api/v1/pools".into(), Some(json!({"name": "p"}))),
        ("GET", "/api/v1/pools/pool_default".into(), None),
        (
            "POST",
            "/api/v1/pools/pool_default/join".into(),
            Some(json!({"node_id": fx.na})),
        ),
        (
            "POST",
            "/api/v1/tokens".into(),
            Some(json!({"role": "operator", "subject": "x"})),
        ),
        ("GET", "/api/v1/tokens".into(), None),
        (
            "POST",
            "/api/v1/tokens/revoke".into(),
            Some(json!({"subject": "x"})),
        ),
        ("GET", "/api/v1/audit".into(), None),
        ("GET", "/api/v1/alerts".into(), None),
        (
            "PUT",
            "/api/v1/alerts".into(),
            Some(json!({"webhook_url": "https://h/x", "secret": "s"})),
        ),
        ("DELETE", "/api/v1/alerts".into(), None),
    ];
    let mut rows = Vec::new();
    for (method, path, body) in &authenticated {
        for who in [Who::Nobody, Who::Garbage] {
            rows.push(row(who, method, path, body.clone(), 401));
        }
    }
    run_rows(&fx, rows).await;

    // Malformed Authorization headers count as no token at all; a well-formed bearer
    // value that is not ours is an invalid token.
    for (header, want_type) in [
        ("Basic b3AtYTpwdw==".to_string(), "missing-token"),
        ("Bearer ".to_string(), "missing-token"),
        (fx.op_a.clone(), "missing-token"),
        (format!("Bearer {}x", fx.op_a), "invalid-token"),
        ("Bearer a.b.c".to_string(), "invalid-token"),
    ] {
        let resp = fx
            .server
            .client
            .get(fx.server.url("/api/v1/nodes"))
            .header("authorization", &header)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 401, "Authorization: {header:?} -> {body}");
        assert_problem(status, &body, 401, want_type);
    }

    // Nothing was written by any of these calls: no pool, no node, no token event.
    let (_, nodes) = fx
        .server
        .call("GET", "/api/v1/nodes", Some(&fx.server.admin), None)
        .await;
    assert_eq!(nodes["items"].as_array().unwrap().len(), 2, "{nodes}");
    let (_, na_now) = fx
        .server
        .call("GET", &na, Some(&fx.server.admin), None)
        .await;
    assert_eq!(na_now["name"], "na");
    assert_eq!(na_now["status"], "registered");
    assert!(na_now["pool_id"].is_null());
    let (_, pools) = fx
        .server
        .call("GET", "/api/v1/pools", Some(&fx.server.admin), None)
        .await;
    assert_eq!(pools["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn node_lists_show_admins_everything_operators_their_own_and_nodes_only_themselves() {
    let fx = Fixture::new().await;
    let a2 = fx.fresh_node(&fx.op_a, "a2").await;
    let b2 = fx.fresh_node(&fx.op_b, "b2").await;
    let mut all = vec![fx.na.clone(), fx.nb.clone(), a2.clone(), b2.clone()];
    all.sort();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(fx.listed_ids(Who::Admin).await, all);
    assert_eq!(
        fx.listed_ids(Who::OpA).await,
        sorted(vec![fx.na.clone(), a2.clone()])
    );
    assert_eq!(
        fx.listed_ids(Who::OpB).await,
        sorted(vec![fx.nb.clone(), b2.clone()])
    );
    assert_eq!(fx.listed_ids(Who::NodeA).await, vec![fx.na.clone()]);
    assert_eq!(fx.listed_ids(Who::NodeB).await, vec![fx.nb.clone()]);

    // The pool filter does not widen what a caller sees: everyone joins the default
    // pool, and each caller still gets only its own from `?pool_id=`.
    for id in [&fx.na, &fx.nb, &a2, &b2] {
        let (status, body) = fx
            .server
            .call(
                "POST",
                "/api/v1/pools/pool_default/join",
                Some(&fx.server.admin),
                Some(json!({"node_id": id})),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let pool_ids = |who: Who| {
        let fx = &fx;
        async move {
            let (status, body) = fx
                .server
                .call(
                    "GET",
                    "/api/v1/nodes?pool_id=pool_default",
                    fx.token(who),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{body}");
            let mut ids: Vec<String> = body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["node_id"].as_str().unwrap().to_string())
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(pool_ids(Who::Admin).await, all);
    assert_eq!(
        pool_ids(Who::OpA).await,
        sorted(vec![fx.na.clone(), a2.clone()])
    );
    assert_eq!(pool_ids(Who::NodeB).await, vec![fx.nb.clone()]);

    // Pool members are filtered the same way.
    let members = |who: Who| {
        let fx = &fx;
        async move {
            let (status, body) = fx
                .server
                .call("GET", "/api/v1/pools/pool_default", fx.token(who), None)
                .await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["member_count"], 4, "{body}");
            let mut ids: Vec<String> = body["members"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m.as_str().unwrap().to_string())
                .collect();
            ids.sort();
            ids
        }
    };
    assert_eq!(members(Who::Admin).await, all);
    assert_eq!(
        members(Who::OpB).await,
        sorted(vec![fx.nb.clone(), b2.clone()])
    );
    assert_eq!(members(Who::NodeA).await, vec![fx.na.clone()]);
}

#[tokio::test]
async fn a_token_signed_by_another_installation_is_refused() {
    let server = TestServer::start().await;
    let other = tempfile::tempdir().unwrap();
    let foreign_admin = cli_token_in(other.path(), &[], "admin", "root", "1h");
    let foreign_op = cli_token_in(other.path(), &[], "operator", "op-a", "1h");
    for token in [&foreign_admin, &foreign_op] {
        for (method, path, body) in [
            ("GET", "/api/v1/nodes", None),
            ("GET", "/api/v1/audit", None),
            ("POST", "/api/v1/pools", Some(json!({"name": "stolen"}))),
        ] {
            let (status, body) = server.call(method, path, Some(token), body).await;
            assert_problem(status, &body, 401, "invalid-token");
        }
    }
    // The same subject and role from this installation's key works.
    let (status, _) = server
        .call("GET", "/api/v1/audit", Some(&server.admin), None)
        .await;
    assert_eq!(status, 200);
    let (_, pools) = server
        .call("GET", "/api/v1/pools", Some(&server.admin), None)
        .await;
    assert_eq!(pools["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_expired_token_is_refused_as_token_expired() {
    let server = TestServer::start().await;
    let short = cli_token_in(server.data_dir(), &[], "operator", "op-a", "1s");
    let short_admin = cli_token_in(server.data_dir(), &[], "admin", "root", "1s");
    let (status, body) = server
        .call("GET", "/api/v1/nodes", Some(&short), None)
        .await;
    assert_eq!(status, 200, "fresh token should work: {body}");
    // 1 s of life plus the server's 5 s leeway, and a margin.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let (status, body) = server
        .call("GET", "/api/v1/nodes", Some(&short), None)
        .await;
    assert_problem(status, &body, 401, "token-expired");
    let (status, body) = server
        .call(
            "POST",
            "/api/v1/pools",
            Some(&short_admin),
            Some(json!({"name": "late"})),
        )
        .await;
    assert_problem(status, &body, 401, "token-expired");
    let (_, pools) = server
        .call("GET", "/api/v1/pools", Some(&server.admin), None)
        .await;
    assert_eq!(pools["items"].as_array().unwrap().len(), 1, "{pools}");
}

#[tokio::test]
async fn a_deregistered_nodes_token_stops_working() {
    let fx = Fixture::new().await;
    let server = &fx.server;
    let (victim, key) = server.register_node(&fx.op_a, "victim").await;
    let victim = victim["node_id"].as_str().unwrap().to_string();
    let token = server.login_node(&victim, &key).await;
    let path = format!("/api/v1/nodes/{victim}");
    let (status, _) = server.call("GET", &path, Some(&token), None).await;
    assert_eq!(status, 200);

    let (status, body) = server.call("DELETE", &path, Some(&fx.op_a), None).await;
    assert_eq!(status, 204, "{body}");

    for (method, p, body) in [
        ("GET", path.clone(), None),
        ("GET", "/api/v1/nodes".to_string(), None),
        ("GET", "/api/v1/pools".to_string(), None),
        (
            "POST",
            "/api/v1/pools/pool_default/join".to_string(),
            Some(json!({"node_id": victim})),
        ),
    ] {
        let (status, body) = server.call(method, &p, Some(&token), body).await;
        assert_problem(status, &body, 401, "invalid-token");
    }
    // It cannot log in again either, and other nodes' tokens are untouched.
    let (status, body) = server
        .call(
            "POST",
            "/api/v1/auth/challenge",
            None,
            Some(json!({"node_id": victim})),
        )
        .await;
    assert_problem(status, &body, 403, "node-inactive");
    let (status, _) = server
        .call("GET", "/api/v1/nodes", Some(&fx.na_token), None)
        .await;
    assert_eq!(status, 200);
    // The record stays for history.
    let (status, body) = server.call("GET", &path, Some(&fx.op_a), None).await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "deregistered");
}
