//! Backup and restore, end to end with the real binary: a backup taken during a write burst
//! restores to a database that verifies and holds every write acknowledged before the
//! backup began; restore refuses damaged files and a running service, and leaves the
//! current database untouched when it refuses.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use serde_json::{json, Value};

fn stderr_errors(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("error:"))
        .map(String::from)
        .collect()
}

/// `backup` through the running server's API.
fn backup_via_api(server: &TestServer, out: &Path) -> Output {
    let cert = server.data_dir().join("tls/cert.pem");
    run_cli(
        server.data_dir(),
        &[],
        &[
            "backup",
            "--out",
            out.to_str().unwrap(),
            "--server",
            &server.base,
            "--token",
            &server.admin,
            "--ca-cert",
            cert.to_str().unwrap(),
        ],
    )
}

fn restore(dir: &Path, from: &Path) -> Output {
    run_cli(dir, &[], &["restore", "--from", from.to_str().unwrap()])
}

/// Every node id the admin can list.
async fn all_node_ids(server: &TestServer) -> HashSet<String> {
    paginate_all(server, "/api/v1/nodes?limit=500", &server.admin)
        .await
        .iter()
        .map(|n| n["node_id"].as_str().unwrap().to_string())
        .collect()
}

/// Names in the state directory, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_during_a_write_burst_restores_every_write_acknowledged_before_it() {
    let mut server = TestServer::start().await;
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..8 {
        let client = server.client.clone();
        let url = server.url("/api/v1/nodes");
        let admin = server.admin.clone();
        let acked = acked.clone();
        let stop = stop.clone();
        writers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && i < 20_000 {
                i += 1;
                let key = node_key();
                let resp = client
                    .post(&url)
                    .bearer_auth(&admin)
                    .json(&json!({"name": format!("w{w}-{i}"), "public_key": public_b64(&key)}))
                    .send()
                    .await
                    .expect("request");
                if resp.status().as_u16() == 201 {
                    let body: Value = resp.json().await.unwrap();
                    acked
                        .lock()
                        .unwrap()
                        .push(body["node_id"].as_str().unwrap().to_string());
                }
            }
        }));
    }
    wait_until_every(
        Duration::from_secs(30),
        Duration::from_millis(20),
        async || match acked.lock().unwrap().len() {
            n if n >= 300 => Ok(()),
            n => Err(format!("only {n} writes before the backup")),
        },
    )
    .await;
    let before: Vec<String> = acked.lock().unwrap().clone();
    assert!(
        before.len() >= 300,
        "only {} writes before the backup",
        before.len()
    );

    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("burst.redb");
    let backup = {
        let data_dir = server.data_dir().to_path_buf();
        let base = server.base.clone();
        let admin = server.admin.clone();
        let file = file.clone();
        tokio::task::spawn_blocking(move || {
            let cert = data_dir.join("tls/cert.pem");
            run_cli(
                &data_dir,
                &[],
                &[
                    "backup",
                    "--out",
                    file.to_str().unwrap(),
                    "--server",
                    &base,
                    "--token",
                    &admin,
                    "--ca-cert",
                    cert.to_str().unwrap(),
                ],
            )
        })
        .await
        .unwrap()
    };
    let during = acked.lock().unwrap().len() - before.len();
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    assert!(
        backup.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&backup.stderr)
    );
    assert!(String::from_utf8_lossy(&backup.stdout).contains("wrote"));
    eprintln!(
        "backup of {} bytes; {} writes before it, {during} acknowledged while it ran",
        std::fs::metadata(&file).unwrap().len(),
        before.len()
    );
    // Only the finished file is left next to it.
    assert_eq!(listing(out_dir.path()), vec!["burst.redb".to_string()]);

    assert_eq!(server.terminate().await, Some(0));
    let restored = restore(server.data_dir(), &file);
    assert!(
        restored.status.success(),
        "restore failed: {}",
        String::from_utf8_lossy(&restored.stderr)
    );
    assert!(listing(server.data_dir())
        .iter()
        .any(|n| n.starts_with("lucid.redb.before-restore-")));
    let verified = run_cli(server.data_dir(), &[], &["verify"]);
    assert!(
        verified.status.success(),
        "verify failed: {}",
        String::from_utf8_lossy(&verified.stderr)
    );

    server.restart();
    let stored = all_node_ids(&server).await;
    let lost: Vec<_> = before.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged nodes missing from the restored database: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}

#[tokio::test]
async fn backup_finds_the_running_service_by_itself() {
    // A fixed port, as on the appliance, so the CLI finds the service from its settings.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port().to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("NODE_MANAGEMENT_PORT", port.as_str()),
        ("BIND_ADDRESS", "127.0.0.1"),
    ];
    let owned: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut child = command(dir.path(), &owned)
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let drain = std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("\"listening\"") {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(());
                }
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("server did not start");

    let out = dir.path().join("auto.redb");
    let backup = run_cli(
        dir.path(),
        &env,
        &["backup", "--out", out.to_str().unwrap()],
    );
    let refused = restore(dir.path(), &out);
    let _ = child.kill();
    let _ = child.wait();
    let _ = drain.join();
    assert!(
        backup.status.success(),
        "backup failed: {}",
        String::from_utf8_lossy(&backup.stderr)
    );
    assert!(out.exists());
    assert!(!refused.status.success());
    assert_eq!(
        stderr_errors(&refused),
        vec![format!(
            "error: the service is running; stop it first (database {} is in use)",
            dir.path().join("lucid.redb").display()
        )]
    );
    // An existing file is not replaced without --force.
    let again = run_cli(
        dir.path(),
        &env,
        &["backup", "--out", out.to_str().unwrap()],
    );
    assert!(!again.status.success());
    assert!(stderr_errors(&again)[0].contains("--force"));
}

/// A copy of `good` with the bytes of `needle` (a stored record's) flipped where they occur.
fn flipped_at(good: &[u8], needle: &[u8]) -> Vec<u8> {
    let mut bad = good.to_vec();
    let mut hits = 0;
    let mut i = 0;
    while i + needle.len() <= bad.len() {
        if &bad[i..i + needle.len()] == needle {
            bad[i + 3] ^= 0x01;
            hits += 1;
            i += needle.len();
        } else {
            i += 1;
        }
    }
    assert!(hits > 0, "the record is not in the file");
    bad
}

/// A copy of `good` with bytes flipped near the start of every 4 KiB page after the first.
fn page_headers_flipped(good: &[u8]) -> Vec<u8> {
    let mut bad = good.to_vec();
    for page in 1..bad.len() / 4096 {
        for b in &mut bad[page * 4096 + 8..page * 4096 + 16] {
            *b ^= 0xA5;
        }
    }
    bad
}

#[tokio::test]
async fn restore_refuses_damaged_files_and_leaves_the_database_untouched() {
    let mut server = TestServer::start().await;
    let mut keys = Vec::new();
    for i in 0..20 {
        keys.push(
            server
                .register_node(&server.admin, &format!("n{i}"))
                .await
                .1,
        );
    }
    let record = keys[7].verifying_key().to_bytes();
    let dir = tempfile::tempdir().unwrap();
    let good_path = dir.path().join("good.redb");
    let out = backup_via_api(&server, &good_path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(server.terminate().await, Some(0));
    let good = std::fs::read(&good_path).unwrap();
    let db = server.data_dir().join("lucid.redb");
    let db_before = std::fs::read(&db).unwrap();
    let listing_before = listing(server.data_dir());

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("truncated to half", good[..good.len() / 2].to_vec()),
        ("truncated by one page", good[..good.len() - 4096].to_vec()),
        (
            "one bit of a stored key flipped",
            flipped_at(&good, &record),
        ),
        ("page headers flipped", page_headers_flipped(&good)),
        ("empty", Vec::new()),
        ("not a database", b"hello, this is not redb\n".repeat(400)),
    ];
    for (what, bytes) in cases {
        let path: PathBuf = dir.path().join(format!("{}.redb", what.replace(' ', "-")));
        std::fs::write(&path, &bytes).unwrap();
        let out = restore(server.data_dir(), &path);
        assert!(!out.status.success(), "{what}: restore accepted it");
        let errors = stderr_errors(&out);
        assert_eq!(errors.len(), 1, "{what}: {errors:?}");
        assert!(
            errors[0].contains("is not a usable backup"),
            "{what}: {}",
            errors[0]
        );
        assert!(!errors[0].contains('\n'));
        assert_eq!(
            std::fs::read(&db).unwrap(),
            db_before,
            "{what}: database changed"
        );
        assert_eq!(
            listing(server.data_dir()),
            listing_before,
            "{what}: files left"
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            bytes,
            "{what}: input changed"
        );
    }

    // The intact copy restores, and the service starts on it.
    let out = restore(server.data_dir(), &good_path);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.restart();
    assert_eq!(all_node_ids(&server).await.len(), 20);
}

#[tokio::test]
async fn restore_refuses_while_the_service_runs() {
    let server = TestServer::start().await;
    server.register_node(&server.admin, "n").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("b.redb");
    let out = backup_via_api(&server, &file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let before = listing(server.data_dir());
    let out = restore(server.data_dir(), &file);
    assert!(!out.status.success());
    let errors = stderr_errors(&out);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("error: the service is running; stop it first"),
        "{}",
        errors[0]
    );
    assert_eq!(listing(server.data_dir()), before);
    // The service is unaffected.
    let (status, _) = server.call("GET", "/health", None, None).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_backup_route_is_for_admins_only() {
    let server = TestServer::start().await;
    let operator = server.cli_token("operator", "op-1");
    let (status, body) = server.call("POST", "/api/v1/backup", None, None).await;
    assert_problem(status, &body, 401, "missing-token");
    let (status, body) = server
        .call("POST", "/api/v1/backup", Some(&operator), None)
        .await;
    assert_problem(status, &body, 403, "forbidden");
    let resp = server
        .client
        .post(server.url("/api/v1/backup"))
        .bearer_auth(&server.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/octet-stream"
    );
    let entries: u64 = resp.headers()["x-lucid-backup-entries"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(entries > 0);
    let bytes = resp.bytes().await.unwrap();
    assert!(bytes.len() > 4096);
    // The service's temporary copy is gone.
    assert!(!listing(server.data_dir())
        .iter()
        .any(|n| n.contains("backup-download")));
    // The route is documented.
    let (_, doc) = server.call("GET", "/api/v1/openapi.json", None, None).await;
    assert!(doc["paths"]["/api/v1/backup"]["post"].is_object());
    // The backup is in the audit log.
    let (_, audit) = server
        .call("GET", "/api/v1/audit?limit=500", Some(&server.admin), None)
        .await;
    assert!(audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["action"] == "backup.create"));
}

#[test]
#[allow(clippy::disallowed_methods)] // seeds raw heartbeat rows in one write transaction
fn ctrl_c_during_a_backup_leaves_no_file() {
    use lucid_node_management::clock::Clock;
    use lucid_node_management::store::tables::HEARTBEATS;
    // A database large enough that copying it takes a while: raw rows, copied as bytes.
    let dir = tempfile::tempdir().unwrap();
    {
        let store = lucid_node_management::store::open(dir.path(), 100, &Clock::new()).unwrap();
        let txn = store.db.begin_write().unwrap();
        {
            let mut t = txn.open_table(HEARTBEATS).unwrap();
            let value = [7u8; 200];
            for i in 0..150_000u64 {
                t.insert((i, "node_big"), value.as_slice()).unwrap();
            }
        }
        txn.commit().unwrap();
    }
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join("big.redb");
    let mut child = command(dir.path(), &[])
        .args(["backup", "--out", out.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the copy is under way (its temporary file exists).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while listing(out_dir.path()).is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(50));
    let _ = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        !status.success(),
        "the backup finished before the interrupt: {stderr}"
    );
    assert!(stderr.contains("error: interrupted"), "{stderr}");
    assert!(
        listing(out_dir.path()).is_empty(),
        "left behind: {:?}",
        listing(out_dir.path())
    );
}
