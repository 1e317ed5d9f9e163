//! Nothing acknowledged is lost: a server killed with SIGKILL in the middle of a burst of
//! writes has, after restart, every node it answered 201 for.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_a_write_burst_loses_no_acknowledged_node() {
    let mut server = TestServer::start().await;
    let admin = server.admin.clone();
    for round in 0..3 {
        let acked: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut tasks = Vec::new();
        for w in 0..16 {
            let client = server.client.clone();
            let url = server.url("/api/v1/nodes");
            let admin = admin.clone();
            let acked = acked.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..10_000 {
                    let key = node_key();
                    let resp = client
                        .post(&url)
                        .bearer_auth(&admin)
                        .json(&json!({"name": format!("r{round}-w{w}-{i}"), "public_key": public_b64(&key)}))
                        .send()
                        .await;
                    let Ok(resp) = resp else { break };
                    if resp.status().as_u16() != 201 {
                        continue;
                    }
                    let Ok(body) = resp.json::<serde_json::Value>().await else { break };
                    acked.lock().unwrap().push(body["node_id"].as_str().unwrap().to_string());
                }
            }));
        }
        // Let the burst build up, then pull the plug while requests are in flight.
        wait_until_every(
            Duration::from_secs(20),
            Duration::from_millis(20),
            async || match acked.lock().unwrap().len() {
                n if n >= 200 => Ok(()),
                n => Err(format!(
                    "round {round}: the burst acknowledged only {n} writes"
                )),
            },
        )
        .await;
        server.kill();
        for t in tasks {
            let _ = t.await;
        }
        let acked = acked.lock().unwrap().clone();
        assert!(
            acked.len() >= 200,
            "the burst acknowledged only {} writes",
            acked.len()
        );

        server.restart();
        let stored: HashSet<String> = paginate_all(&server, "/api/v1/nodes?limit=500", &admin)
            .await
            .iter()
            .map(|n| n["node_id"].as_str().unwrap().to_string())
            .collect();
        let lost: Vec<_> = acked.iter().filter(|id| !stored.contains(*id)).collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} acknowledged nodes lost: {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
    }
    // The audit chain is intact after three crashes.
    server.kill();
    let out = run_cli(server.data_dir(), &[], &["verify"]);
    assert!(
        out.status.success(),
        "verify failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
