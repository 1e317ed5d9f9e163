//! Heartbeats that arrive together are verified together (one batch equation): a forged
//! one among them is still refused with 401 `invalid-signature`, and the honest ones sent
//! with it are still accepted.

use crate::common::*;
use futures::future::join_all;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_heartbeats_fail_alone_among_concurrent_honest_ones() {
    let server = TestServer::start().await;
    let mut nodes = Vec::new();
    for i in 0..12 {
        let (node, key) = server.register_node(&server.admin, &format!("n{i}")).await;
        let id = node["node_id"].as_str().unwrap().to_string();
        let token = server.login_node(&id, &key).await;
        nodes.push((id, key, token));
    }
    let other = node_key();
    for round in 1..=6u64 {
        // In each round a different third of the nodes signs with the wrong key; all the
        // heartbeats of a round are in flight at once.
        let forged = |i: usize| (i as u64 + round).is_multiple_of(3);
        let sends = nodes.iter().enumerate().map(|(i, (id, key, token))| {
            let body = heartbeat_body(id, if forged(i) { &other } else { key }, round);
            let server = &server;
            async move {
                server
                    .call(
                        "POST",
                        &format!("/api/v1/nodes/{id}/heartbeat"),
                        Some(token),
                        Some(body),
                    )
                    .await
            }
        });
        let answers: Vec<(u16, Value)> = join_all(sends).await;
        for (i, (status, body)) in answers.iter().enumerate() {
            if forged(i) {
                assert_problem(*status, body, 401, "invalid-signature");
            } else {
                assert_eq!(*status, 202, "round {round}, node {i}: {body}");
                assert_eq!(body["seq"], round);
            }
        }
    }
    let metrics = server.metrics_text().await;
    assert!(metrics.contains("lucid_heartbeats_total{outcome=\"accepted\"} 48"));
    assert!(metrics.contains("lucid_heartbeats_total{outcome=\"invalid-signature\"} 24"));
}
