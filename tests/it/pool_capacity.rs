//! Pool capacity is enforced inside the write transaction: no burst of concurrent joins
//! can overfill a pool, and the count survives a restart.

use crate::common::*;
use futures::future::join_all;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_concurrent_joins_fill_a_pool_of_100_exactly() {
    let mut server = TestServer::start().await;
    let admin = server.admin.clone();
    let (status, pool) = server
        .call(
            "POST",
            "/api/v1/pools",
            Some(&admin),
            Some(json!({"name": "eu-1", "capacity": 100})),
        )
        .await;
    assert_eq!(status, 201, "{pool}");
    let pool_id = pool["pool_id"].as_str().unwrap().to_string();

    let registrations = (0..300).map(|i| {
        let server = &server;
        let admin = &admin;
        async move {
            let (node, _) = server.register_node(admin, &format!("n{i}")).await;
            node["node_id"].as_str().unwrap().to_string()
        }
    });
    let node_ids: Vec<String> = join_all(registrations).await;

    let joins = node_ids.iter().map(|id| {
        let server = &server;
        let admin = &admin;
        let path = format!("/api/v1/pools/{pool_id}/join");
        async move {
            server
                .call("POST", &path, Some(admin), Some(json!({"node_id": id})))
                .await
        }
    });
    let results = join_all(joins).await;
    let ok = results.iter().filter(|(s, _)| *s == 200).count();
    let full = results
        .iter()
        .filter(|(s, b)| *s == 409 && b["type"] == "pool-full")
        .count();
    assert_eq!(ok, 100, "exactly the capacity may join");
    assert_eq!(full, 200, "every other join is refused as pool-full");

    let path = format!("/api/v1/pools/{pool_id}");
    let (_, got) = server.call("GET", &path, Some(&admin), None).await;
    assert_eq!(got["member_count"], 100);
    assert_eq!(got["members"].as_array().unwrap().len(), 100);

    server.kill();
    server.restart();
    let (_, got) = server.call("GET", &path, Some(&admin), None).await;
    assert_eq!(got["member_count"], 100, "count after restart");
    assert_eq!(got["members"].as_array().unwrap().len(), 100);
    let (_, in_pool) = server
        .call(
            "GET",
            &format!("/api/v1/nodes?pool_id={pool_id}&limit=500"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(in_pool["items"].as_array().unwrap().len(), 100);
}

#[tokio::test]
async fn joining_moves_a_node_out_of_its_old_pool() {
    let server = TestServer::start().await;
    let admin = &server.admin;
    let (node, _) = server.register_node(admin, "mover").await;
    let id = node["node_id"].as_str().unwrap();
    let (_, p2) = server
        .call(
            "POST",
            "/api/v1/pools",
            Some(admin),
            Some(json!({"name": "second"})),
        )
        .await;
    let p2 = p2["pool_id"].as_str().unwrap();
    let (s, _) = server
        .call(
            "POST",
            "/api/v1/pools/pool_default/join",
            Some(admin),
            Some(json!({"node_id": id})),
        )
        .await;
    assert_eq!(s, 200);
    let (s, moved) = server
        .call(
            "POST",
            &format!("/api/v1/pools/{p2}/join"),
            Some(admin),
            Some(json!({"node_id": id})),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(moved["member_count"], 1);
    let (_, default) = server
        .call("GET", "/api/v1/pools/pool_default", Some(admin), None)
        .await;
    assert_eq!(default["member_count"], 0);
    let (_, n) = server
        .call("GET", &format!("/api/v1/nodes/{id}"), Some(admin), None)
        .await;
    assert_eq!(n["pool_id"], p2);

    // Deregistering leaves the pool.
    let (s, _) = server
        .call("DELETE", &format!("/api/v1/nodes/{id}"), Some(admin), None)
        .await;
    assert_eq!(s, 204);
    let (_, pool) = server
        .call("GET", &format!("/api/v1/pools/{p2}"), Some(admin), None)
        .await;
    assert_eq!(pool["member_count"], 0);
    let (_, n) = server
        .call("GET", &format!("/api/v1/nodes/{id}"), Some(admin), None)
        .await;
    assert_eq!(n["status"], "deregistered");
    assert_eq!(n["pool_id"], serde_json::Value::Null);
}
