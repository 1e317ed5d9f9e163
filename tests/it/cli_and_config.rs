//! The command line and configuration as scripts use them: bad values stop the start with
//! one line naming the variable, the file layers under env and flags, offline token
//! issue and keygen work, HS256 mode, and a database from a newer version is refused.

use std::os::unix::fs::PermissionsExt;

use crate::common::*;

#[test]
fn a_bad_value_stops_the_start_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value) in [
        ("NODE_MANAGEMENT_PORT", "80x"),
        ("MAX_NODES_PER_POOL", "0"),
        ("PAYOUT_THRESHOLD_USDT", "ten"),
        ("POOT_CALCULATION_INTERVAL", "5 minutes"),
        ("HEARTBEAT_TIMEOUT", "-1"),
        ("COMMIT_INTERVAL", "4s"),
        ("COMMIT_INTERVAL", "soon"),
        ("LOG_LEVEL", "loud"),
    ] {
        // Port 0 on loopback first, so a value that wrongly passes cannot bind a real port;
        // the variable under test comes last and overrides it.
        let env = [
            ("NODE_MANAGEMENT_PORT", "0"),
            ("BIND_ADDRESS", "127.0.0.1"),
            (var, value),
        ];
        let out = run_cli(dir.path(), &env, &["serve"]);
        assert!(!out.status.success(), "{var}={value} should stop the start");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "one line for {var}: {stderr}");
        assert!(
            lines[0].contains(var) && lines[0].contains(value),
            "{stderr}"
        );
    }
}

#[test]
fn the_config_file_is_read_and_typos_in_it_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, "max_nodes_per_pool = \"lots\"\n").unwrap();
    let out = run_cli(
        dir.path(),
        &[],
        &["serve", "--config", file.to_str().unwrap()],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("MAX_NODES_PER_POOL") && stderr.contains("lots"),
        "{stderr}"
    );

    std::fs::write(&file, "max_nodes_per_pol = 5\n").unwrap();
    let out = run_cli(
        dir.path(),
        &[],
        &["serve", "--config", file.to_str().unwrap()],
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("max_nodes_per_pol"));
}

#[tokio::test]
async fn file_values_apply_and_env_overrides_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.toml");
    std::fs::write(&file, "max_nodes_per_pool = 7\n").unwrap();
    let file_str = file.to_str().unwrap().to_string();
    let server = TestServer::start_with(&[("CONFIG_FILE", &file_str)]).await;
    let (_, pools) = server
        .call("GET", "/api/v1/pools", Some(&server.admin), None)
        .await;
    assert_eq!(pools["items"][0]["capacity"], 7);
    drop(server);
    let server =
        TestServer::start_with(&[("CONFIG_FILE", &file_str), ("MAX_NODES_PER_POOL", "3")]).await;
    let (status, body) = server
        .call(
            "POST",
            "/api/v1/pools",
            Some(&server.admin),
            Some(serde_json::json!({"name": "x", "capacity": 5})),
        )
        .await;
    assert_problem(status, &body, 400, "validation");
}

#[tokio::test]
async fn keygen_writes_a_private_key_pair_that_registers_and_logs_in() {
    let server = TestServer::start().await;
    let key_path = server.data_dir().join("node.key");
    let out = run_cli(
        server.data_dir(),
        &[],
        &["keygen", "--out", key_path.to_str().unwrap()],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let public = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let pub_file = std::fs::read_to_string(format!("{}.pub", key_path.display())).unwrap();
    assert_eq!(pub_file.trim(), public);
    // Refuses to overwrite without --force.
    let again = run_cli(
        server.data_dir(),
        &[],
        &["keygen", "--out", key_path.to_str().unwrap()],
    );
    assert!(!again.status.success());

    let (status, node) = server
        .call(
            "POST",
            "/api/v1/nodes",
            Some(&server.admin),
            Some(serde_json::json!({"name": "k", "public_key": public})),
        )
        .await;
    assert_eq!(status, 201);
    let seed = std::fs::read_to_string(&key_path).unwrap();
    use base64::Engine;
    let seed: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(seed.trim())
        .unwrap()
        .try_into()
        .unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&seed);
    server
        .login_node(node["node_id"].as_str().unwrap(), &key)
        .await;
}

#[tokio::test]
async fn token_issue_refuses_bad_roles_and_prints_a_working_token() {
    let server = TestServer::start().await;
    let out = run_cli(
        server.data_dir(),
        &[],
        &["token", "issue", "--role", "root", "--subject", "x"],
    );
    assert!(!out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stderr).lines().count(), 1);
    let operator = server.cli_token("operator", "op-9");
    let (status, list) = server
        .call("GET", "/api/v1/nodes", Some(&operator), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(list["items"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn jwt_secret_switches_to_hs256() {
    let secret = "a-shared-secret-of-at-least-32-chars!";
    let server = TestServer::start_with(&[("JWT_SECRET", secret)]).await;
    let (_, keys) = server.call("GET", "/api/v1/keys", None, None).await;
    assert_eq!(keys["jwt"]["alg"], "HS256");
    // The harness's admin token was issued by the CLI with the same secret.
    let (status, _) = server
        .call("GET", "/api/v1/audit", Some(&server.admin), None)
        .await;
    assert_eq!(status, 200);
    // An EdDSA token signed by the service key is refused: only HS256 is accepted now.
    let out = run_cli(
        server.data_dir(),
        &[],
        &["token", "issue", "--role", "admin", "--subject", "root"],
    );
    let eddsa = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let (status, body) = server
        .call("GET", "/api/v1/audit", Some(&eddsa), None)
        .await;
    assert_problem(status, &body, 401, "invalid-token");
}

#[test]
#[allow(clippy::disallowed_methods)] // seeds a raw redb file of a future schema
fn a_database_from_a_newer_version_is_refused_not_opened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lucid.redb");
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let table: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("meta");
            let mut t = txn.open_table(table).unwrap();
            t.insert("schema_version", 99u32.to_le_bytes().as_slice())
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let out = run_cli(dir.path(), &[], &["serve", "--port", "0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("schema version 99") && stderr.contains("newer"),
        "{stderr}"
    );
}
