//! Token revocation end to end (issue 16): by jti and by subject (operator, admin and node
//! tokens), exact to the microsecond for tokens issued right after, in force at once and
//! after a restart, admin only, from the command line with the service stopped or running,
//! and carried by backups.

use std::path::Path;

use serde_json::{json, Value};

use lucid_node_management::domain::timefmt::parse_rfc3339_us;

use crate::common::{assert_problem, run_cli, TestServer};

fn micros(rfc3339: &Value) -> u64 {
    parse_rfc3339_us(rfc3339.as_str().expect("a time stamp")).expect("RFC 3339")
}

/// Issues a token through the API; returns (token, jti).
async fn issue(server: &TestServer, role: &str, subject: &str) -> (String, String) {
    issue_full(server, role, subject).await.0
}

/// Issues a token through the API; returns (token, jti) and the whole answer.
async fn issue_full(server: &TestServer, role: &str, subject: &str) -> ((String, String), Value) {
    let (status, body) = server
        .call(
            "POST",
            "/api/v1/tokens",
            Some(&server.admin),
            Some(json!({"role": role, "subject": subject, "ttl_seconds": 3600})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let jti = body["jti"].as_str().expect("jti in the answer").to_string();
    ((body["token"].as_str().unwrap().to_string(), jti), body)
}

async fn revoke(server: &TestServer, body: Value) -> (u16, Value) {
    server
        .call(
            "POST",
            "/api/v1/tokens/revoke",
            Some(&server.admin),
            Some(body),
        )
        .await
}

/// The status of an authenticated read with `token` (and the body).
async fn use_token(server: &TestServer, token: &str) -> (u16, Value) {
    server.call("GET", "/api/v1/nodes", Some(token), None).await
}

async fn assert_works(server: &TestServer, token: &str, what: &str) {
    let (status, body) = use_token(server, token).await;
    assert_eq!(status, 200, "{what} should work: {body}");
}

async fn assert_revoked(server: &TestServer, token: &str, what: &str) {
    let (status, body) = use_token(server, token).await;
    assert_problem(status, &body, 401, "token-revoked");
    assert_eq!(body["title"], "Not authenticated", "{what}: {body}");
}

fn cli_revoke(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> std::process::Output {
    let mut all = vec!["token", "revoke"];
    all.extend_from_slice(args);
    run_cli(dir, env, &all)
}

fn port_of(base: &str) -> String {
    base.rsplit(':').next().unwrap().to_string()
}

#[tokio::test]
async fn revoking_a_jti_refuses_that_token_at_once_and_spares_the_subjects_other_tokens() {
    let server = TestServer::start().await;
    let ((first, jti), answer) = issue_full(&server, "operator", "op-1").await;
    let (second, _) = issue(&server, "operator", "op-1").await;
    // Both verified once: the service now remembers their signatures.
    assert_works(&server, &first, "the first token").await;
    assert_works(&server, &second, "the second token").await;

    let (status, body) = revoke(&server, json!({"jti": jti})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["jti"], jti.as_str());
    assert!(body.get("subject").is_none(), "{body}");
    // The entry expires with the token (plus the verification leeway), not a year later.
    assert_eq!(
        micros(&body["expires_at"]),
        micros(&answer["expires_at"]) + 5_000_000,
        "{body}"
    );

    assert_revoked(&server, &first, "the revoked token").await;
    assert_works(&server, &second, "another token of the same subject").await;

    // Audited with the jti, never the token itself.
    let events =
        crate::common::paginate_all(&server, "/api/v1/audit?limit=500", &server.admin).await;
    let event = events
        .iter()
        .find(|e| e["action"] == "token.revoke")
        .expect("a token.revoke event");
    assert_eq!(event["target"], jti.as_str());
    let text = event.to_string();
    assert!(
        !text.contains(&first),
        "the audit log holds the token: {text}"
    );
    // Issues are audited with jti, role and expiry (what the console lists).
    let issued = events
        .iter()
        .find(|e| e["action"] == "token.issue" && e["detail"].to_string().contains(&jti))
        .expect("the token.issue event names the jti");
    assert_eq!(issued["target"], "op-1");
}

#[tokio::test]
async fn revoking_a_subject_refuses_every_earlier_token_of_it_and_not_one_issued_right_after() {
    let server = TestServer::start().await;
    let (api_token, _) = issue(&server, "operator", "op-1").await;
    let cli_token = server.cli_token("operator", "op-1");
    let (other_subject, _) = issue(&server, "operator", "op-2").await;
    assert_works(&server, &api_token, "the API token").await;

    let (status, body) = revoke(&server, json!({"subject": "op-1"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["subject"], "op-1");
    // Kept as long as the longest-lived token of the subject could verify.
    assert!(
        micros(&body["expires_at"]) >= micros(&body["revoked_at"]) + 366 * 86_400 * 1_000_000,
        "{body}"
    );

    // Issued right after, within the same second as the revocation: not covered.
    let (after, _) = issue(&server, "operator", "op-1").await;
    let cli_after = server.cli_token("operator", "op-1");
    assert_revoked(&server, &api_token, "the API token issued before").await;
    assert_revoked(&server, &cli_token, "the CLI token issued before").await;
    assert_works(&server, &after, "an API token issued right after").await;
    assert_works(&server, &cli_after, "a CLI token issued right after").await;
    assert_works(&server, &other_subject, "another subject's token").await;

    // The listing shows which issued tokens are revoked.
    let (status, list) = server
        .call("GET", "/api/v1/tokens", Some(&server.admin), None)
        .await;
    assert_eq!(status, 200, "{list}");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 3, "{list}");
    let revoked: Vec<bool> = items
        .iter()
        .map(|t| t["revoked"].as_bool().unwrap())
        .collect();
    // Newest first: the token issued after, op-2's, the revoked one.
    assert_eq!(revoked, [false, false, true], "{list}");
}

#[tokio::test]
async fn revoking_a_nodes_subject_refuses_its_node_token_until_it_logs_in_again() {
    let server = TestServer::start().await;
    let operator = server.cli_token("operator", "op-1");
    let (node, key) = server.register_node(&operator, "n1").await;
    let node_id = node["node_id"].as_str().unwrap();
    let node_token = server.login_node(node_id, &key).await;
    let (status, body) = server.beat(node_id, &key, &node_token, 1).await;
    assert!(status < 300, "{body}");

    let (status, body) = revoke(&server, json!({"subject": node_id})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.beat(node_id, &key, &node_token, 2).await;
    assert_problem(status, &body, 401, "token-revoked");
    assert_works(&server, &operator, "the node's operator").await;

    let fresh = server.login_node(node_id, &key).await;
    let (status, body) = server.beat(node_id, &key, &fresh, 3).await;
    assert!(
        status < 300,
        "a token from a login after the revocation works: {body}"
    );
}

#[tokio::test]
async fn node_logins_answer_the_jti_and_revoking_it_refuses_that_node_token() {
    let server = TestServer::start().await;
    let (node, key) = server.register_node(&server.admin, "n1").await;
    let node_id = node["node_id"].as_str().unwrap();
    let (_, challenge) = server
        .call(
            "POST",
            "/api/v1/auth/challenge",
            None,
            Some(json!({"node_id": node_id})),
        )
        .await;
    let nonce = challenge["nonce"].as_str().unwrap();
    let (status, login) = server
        .call(
            "POST",
            "/api/v1/auth/token",
            None,
            Some(json!({"node_id": node_id, "nonce": nonce, "signature": crate::common::sign_login(&key, nonce)})),
        )
        .await;
    assert_eq!(status, 200, "{login}");
    let token = login["token"].as_str().unwrap();
    let jti = login["jti"].as_str().expect("jti in the login answer");
    let (status, body) = revoke(&server, json!({"jti": jti})).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = server.beat(node_id, &key, token, 1).await;
    assert_problem(status, &body, 401, "token-revoked");
}

#[tokio::test]
async fn revocations_survive_a_restart() {
    let mut server = TestServer::start().await;
    let (by_jti, jti) = issue(&server, "operator", "op-1").await;
    let by_subject = server.cli_token("admin", "second-admin");
    assert_eq!(revoke(&server, json!({"jti": jti})).await.0, 200);
    assert_eq!(
        revoke(&server, json!({"subject": "second-admin"})).await.0,
        200
    );
    server.restart();
    assert_revoked(&server, &by_jti, "revoked by jti").await;
    assert_revoked(&server, &by_subject, "revoked by subject").await;
    let after = server.cli_token("admin", "second-admin");
    assert_works(&server, &after, "a token issued after the restart").await;
}

#[tokio::test]
async fn only_admins_revoke_and_a_request_names_exactly_one_valid_target() {
    let server = TestServer::start().await;
    let operator = server.cli_token("operator", "op-1");
    let (status, body) = server
        .call(
            "POST",
            "/api/v1/tokens/revoke",
            Some(&operator),
            Some(json!({"subject": "op-1"})),
        )
        .await;
    assert_problem(status, &body, 403, "forbidden");
    let (status, body) = server
        .call("GET", "/api/v1/tokens", Some(&operator), None)
        .await;
    assert_problem(status, &body, 403, "forbidden");
    let (status, body) = server
        .call(
            "POST",
            "/api/v1/tokens/revoke",
            None,
            Some(json!({"subject": "op-1"})),
        )
        .await;
    assert_problem(status, &body, 401, "missing-token");
    assert_works(
        &server,
        &operator,
        "the operator's token after a refused attempt",
    )
    .await;

    for bad in [
        json!({}),
        json!({"jti": "a", "subject": "op-1"}),
        json!({"jti": ""}),
        json!({"subject": "has space"}),
        json!({"jti": 5}),
        json!({"subject": "op-1", "extra": true}),
        json!(["op-1"]),
    ] {
        let (status, body) = revoke(&server, bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_problem(status, &body, 400, "validation");
    }
    assert_works(
        &server,
        &operator,
        "nothing was revoked by the bad requests",
    )
    .await;
}

#[tokio::test]
async fn the_cli_revokes_with_the_service_stopped_and_through_the_running_service() {
    let mut server = TestServer::start().await;
    let (offline_target, offline_jti) = issue(&server, "operator", "op-1").await;
    let through_service = server.cli_token("operator", "op-2");
    let spared = server.cli_token("operator", "op-3");
    assert_eq!(server.terminate().await, Some(0));

    let out = cli_revoke(server.data_dir(), &[], &["--jti", &offline_jti]);
    assert!(
        out.status.success(),
        "offline revoke failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&offline_jti));
    let out = cli_revoke(server.data_dir(), &[], &[]);
    assert!(!out.status.success(), "neither --jti nor --subject");
    let out = cli_revoke(server.data_dir(), &[], &["--jti", "a", "--subject", "b"]);
    assert!(!out.status.success(), "both --jti and --subject");

    // Written through the store's writer with its audit event: the database still verifies.
    server.verify_offline();
    server.restart();
    assert_revoked(&server, &offline_target, "revoked offline").await;

    // The service runs: the command notices (the database is in use) and asks it, with an
    // admin token minted from the state directory's key.
    let port = port_of(&server.base);
    let out = cli_revoke(
        server.data_dir(),
        &[("NODE_MANAGEMENT_PORT", &port)],
        &["--subject", "op-2"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "revoke through the service failed: {stderr}"
    );
    assert!(stderr.contains("service is running"), "{stderr}");
    assert_revoked(&server, &through_service, "revoked through the service").await;
    assert_works(&server, &spared, "another subject").await;

    // With an explicit --server and a token that may not revoke: refused, one line.
    let cert = server.data_dir().join("tls/cert.pem");
    let operator = server.cli_token("operator", "op-3");
    let out = cli_revoke(
        server.data_dir(),
        &[],
        &[
            "--subject",
            "op-3",
            "--server",
            &server.base,
            "--token",
            &operator,
            "--ca-cert",
            cert.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("403"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert_works(&server, &spared, "the refused revocation changed nothing").await;
}

#[tokio::test]
async fn a_restored_backup_still_refuses_a_revoked_token() {
    let mut server = TestServer::start().await;
    let (token, jti) = issue(&server, "operator", "op-1").await;
    assert_eq!(revoke(&server, json!({"jti": jti})).await.0, 200);
    let file = server.data_dir().join("revoked.backup");
    let cert = server.data_dir().join("tls/cert.pem");
    let out = run_cli(
        server.data_dir(),
        &[],
        &[
            "backup",
            "--out",
            file.to_str().unwrap(),
            "--server",
            &server.base,
            "--token",
            &server.admin,
            "--ca-cert",
            cert.to_str().unwrap(),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A fresh database knows no revocation: the same token works there.
    assert_eq!(server.terminate().await, Some(0));
    std::fs::remove_file(server.data_dir().join("lucid.redb")).unwrap();
    server.restart();
    assert_works(
        &server,
        &token,
        "the token on a database without the revocation",
    )
    .await;
    assert_eq!(server.terminate().await, Some(0));

    let out = run_cli(
        server.data_dir(),
        &[],
        &["restore", "--from", file.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.restart();
    assert_revoked(&server, &token, "the token after the restore").await;
}

#[tokio::test]
async fn token_issue_refuses_lifetimes_past_what_revocation_entries_cover() {
    let server = TestServer::start().await;
    let args = |ttl: &'static str| {
        [
            "token",
            "issue",
            "--role",
            "operator",
            "--subject",
            "op-1",
            "--ttl",
            ttl,
        ]
    };
    let out = run_cli(server.data_dir(), &[], &args("367d"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("366 days"));
    let out = run_cli(server.data_dir(), &[], &args("366d"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
