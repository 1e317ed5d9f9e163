//! A disk that fills, for real: the release binary's state directory on a 24 MiB tmpfs.
//! Under `STORAGE_MIN_FREE` heartbeats are refused with 507 before the disk is full, while
//! reads, `/health` and other writes go on; once space is freed, heartbeats are accepted
//! again without a restart, and the database verifies.
//!
//! Needs root (to mount a tmpfs), as CI and the developer machines run; the test fails
//! rather than passing silently when it cannot mount.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::*;

/// A tmpfs mounted on a fresh directory, unmounted on drop (also when the test fails).
struct SmallDisk {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_path_buf();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&path)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            dir: Some(dir),
            path,
        }
    }

    fn free_bytes(&self) -> u64 {
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.path)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap()
    }

    /// Writes a filler file that leaves about `leave` bytes free.
    fn fill_leaving(&self, leave: u64) -> PathBuf {
        let filler = self.path.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while self.free_bytes() > leave + chunk.len() as u64 {
            f.write_all(&chunk).unwrap();
            f.flush().unwrap();
        }
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
        drop(self.dir.take());
    }
}

/// Sends heartbeats from `seq` on (the next one after each 202) until one is answered
/// `want`; returns the next unused seq and that answer.
async fn wait_for_status(
    server: &TestServer,
    path: &str,
    token: &str,
    body: impl Fn(u64) -> serde_json::Value,
    mut seq: u64,
    want: u16,
) -> (u64, serde_json::Value) {
    let answer = wait_until(Duration::from_secs(20), async || {
        let (status, answer) = server
            .call("POST", path, Some(token), Some(body(seq)))
            .await;
        if status == 202 {
            seq += 1;
        }
        if status == want {
            Ok(answer)
        } else {
            Err(format!("never answered {want}; last {status} {answer}"))
        }
    })
    .await;
    (seq, answer)
}

fn data_dir_of(disk: &SmallDisk) -> tempfile::TempDir {
    // The server's state directory lives inside the mount; the harness owns it.
    tempfile::tempdir_in(&disk.path).unwrap()
}

/// A server with its state on `disk` and the given `STORAGE_MIN_FREE`, heartbeats
/// committed at once and no timers in the way, with one registered, logged-in node.
async fn one_node_on(
    disk: &SmallDisk,
    min_free: &str,
) -> (TestServer, String, ed25519_dalek::SigningKey, String) {
    let server = TestServer::start_in(
        data_dir_of(disk),
        &[
            ("STORAGE_MIN_FREE", min_free),
            ("COMMIT_INTERVAL", "0"),
            ("POOT_CALCULATION_INTERVAL", "3600"),
            ("PAYOUT_PROCESSING_INTERVAL", "3600"),
        ],
    )
    .await;
    let (node, key) = server.register_node(&server.admin, "pi-1").await;
    let id = node["node_id"].as_str().unwrap().to_string();
    let token = server.login_node(&id, &key).await;
    (server, id, key, token)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn under_the_free_space_floor_heartbeats_get_507_until_space_returns() {
    let disk = SmallDisk::mount("24m");
    let (mut server, id, key, token) = one_node_on(&disk, "4MiB").await;
    let admin = server.admin.clone();
    let hb_path = format!("/api/v1/nodes/{id}/heartbeat");
    let body = |seq| heartbeat_body(&id, &key, seq);
    let (status, _) = server
        .call("POST", &hb_path, Some(&token), Some(body(1)))
        .await;
    assert_eq!(status, 202);

    let (_, health) = server.call("GET", "/health", None, None).await;
    assert!(health["storage"]["file_bytes"].as_u64().unwrap() > 0);
    assert!(health["storage"]["free_bytes"].as_u64().unwrap() > 4 << 20);
    assert_eq!(health["storage"]["below_min_free"], false);

    // Fill the disk to 2 MiB free: under the 4 MiB floor, not yet full.
    let filler = disk.fill_leaving(2 << 20);
    let (seq, refused) = wait_for_status(&server, &hb_path, &token, body, 2, 507).await;
    assert_problem(507, &refused, 507, "insufficient-storage");
    let resp = server
        .client
        .post(server.url(&hb_path))
        .bearer_auth(&token)
        .json(&body(seq))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 507);
    assert!(resp.headers().contains_key("retry-after"));

    // Reads, health and the writes that must not fail go on.
    let (status, health) = server.call("GET", "/health", None, None).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["storage"]["below_min_free"], true);
    assert_eq!(node_json(&server, &id).await["status"], "online");
    let (other, _) = server.register_node(&admin, "pi-2").await;
    assert!(other["node_id"].is_string(), "{other}");
    let metrics = server.metrics_text().await;
    assert!(metrics.contains("lucid_storage_free_bytes"), "{metrics}");
    assert!(metrics.contains("lucid_storage_written_bytes_total"));

    // Space returns: accepted again, no restart.
    std::fs::remove_file(&filler).unwrap();
    let (seq, _) = wait_for_status(&server, &hb_path, &token, body, seq, 202).await;
    let (status, health) = server.call("GET", "/health", None, None).await;
    assert_eq!(status, 200);
    assert_eq!(health["storage"]["below_min_free"], false);
    // The refused heartbeats left nothing behind: the next seq follows the last accepted.
    let (status, body_answer) = server
        .call("POST", &hb_path, Some(&token), Some(body(seq)))
        .await;
    assert_eq!(status, 202, "{body_answer}");

    server.kill();
    server.verify_offline();
    drop(server);
    assert!(Path::new(&disk.path).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_disk_that_really_fills_refuses_writes_loses_nothing_and_recovers_without_restart() {
    let disk = SmallDisk::mount("24m");
    // No floor: the database itself meets ENOSPC.
    let (mut server, id, key, token) = one_node_on(&disk, "0").await;
    let hb_path = format!("/api/v1/nodes/{id}/heartbeat");
    let body = |seq| heartbeat_body(&id, &key, seq);

    let filler = disk.fill_leaving(0);
    // Heartbeats until storage refuses one; each answer is 202, 507 or 503, never a 500.
    let mut last_acked: Option<(u64, String)> = None;
    let mut refused = None;
    for seq in 1..=5_000u64 {
        let (status, answer) = server
            .call("POST", &hb_path, Some(&token), Some(body(seq)))
            .await;
        match status {
            202 => last_acked = Some((seq, answer["received_at"].as_str().unwrap().to_string())),
            507 | 503 => {
                refused = Some(answer);
                break;
            }
            other => panic!("heartbeat {seq} on a full disk answered {other}: {answer}"),
        }
    }
    let refused = refused.expect("the full disk never refused a heartbeat");
    assert!(
        ["insufficient-storage", "storage", "unavailable"]
            .contains(&refused["type"].as_str().unwrap()),
        "{refused}"
    );
    assert!(
        !refused["detail"].as_str().unwrap().contains("os error"),
        "redb text leaked: {refused}"
    );
    // The disk is still full: reads answer from the last commit (the writer reopened the
    // database at once; redb refuses reads too until it is reopened).
    let node = wait_until(Duration::from_secs(10), async || {
        match server
            .call(
                "GET",
                &format!("/api/v1/nodes/{id}"),
                Some(&server.admin),
                None,
            )
            .await
        {
            (200, node) => Ok(node),
            (status, answer) => Err(format!("reads on a full disk: {status} {answer}")),
        }
    })
    .await;
    assert_eq!(node["node_id"], id.as_str());
    if let Some((_, received)) = &last_acked {
        assert_eq!(node["last_heartbeat_at"], received.as_str());
    }

    // Space returns: writes resume by themselves.
    std::fs::remove_file(&filler).unwrap();
    let next = last_acked.as_ref().map_or(1, |(s, _)| s + 1);
    let (seq, _) = wait_for_status(&server, &hb_path, &token, body, next + 1, 202).await;
    // Nothing acknowledged was lost: the last acknowledged seq is a replay now.
    if let Some((acked, _)) = &last_acked {
        let (status, answer) = server
            .call("POST", &hb_path, Some(&token), Some(body(*acked)))
            .await;
        assert_problem(status, &answer, 409, "replayed-heartbeat");
    }
    let (status, health) = server.call("GET", "/health", None, None).await;
    assert_eq!(status, 200, "{health}");
    let (status, _) = server
        .call("POST", &hb_path, Some(&token), Some(body(seq)))
        .await;
    assert_eq!(status, 202);

    server.kill();
    server.verify_offline();
}
