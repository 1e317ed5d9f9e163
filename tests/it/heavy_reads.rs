//! Heavy reads (lists, histories, exports) wait for one of `HEAVY_READ_CONCURRENCY`
//! permits on blocking threads: with a single permit and many large reads at once, every
//! read still answers in full and heartbeats keep being accepted meanwhile.

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn heartbeats_are_accepted_while_many_large_reads_queue_for_one_permit() {
    let server = TestServer::start_with(&[("HEAVY_READ_CONCURRENCY", "1")]).await;
    // A long ledger and audit log to read.
    let (node, _) = server.register_node(&server.admin, "ledgered").await;
    let ledgered = node["node_id"].as_str().unwrap().to_string();
    for i in 1..=300u32 {
        let (s, e) = server
            .call(
                "POST",
                &format!("/api/v1/nodes/{ledgered}/ledger"),
                Some(&server.admin),
                Some(json!({"amount_usdt": format!("0.{i:06}"), "reason": "work"})),
            )
            .await;
        assert_eq!(s, 201, "{e}");
    }
    let (node, key) = server.register_node(&server.admin, "beating").await;
    let beating = node["node_id"].as_str().unwrap().to_string();
    let token = server.login_node(&beating, &key).await;
    let audit_len = paginate_all(&server, "/api/v1/audit?limit=500", &server.admin)
        .await
        .len();
    assert!(audit_len > 300, "{audit_len}");

    let server = &server;
    let readers = (0..8).map(|_| {
        let ledgered = ledgered.clone();
        async move {
            for _ in 0..4 {
                let ledger = paginate_all(
                    server,
                    &format!("/api/v1/nodes/{ledgered}/ledger?limit=500"),
                    &server.admin,
                )
                .await;
                assert_eq!(ledger.len(), 300);
                let audit = paginate_all(server, "/api/v1/audit?limit=500", &server.admin).await;
                assert!(audit.len() >= audit_len, "{} < {audit_len}", audit.len());
                let nodes = paginate_all(server, "/api/v1/nodes?limit=500", &server.admin).await;
                assert_eq!(nodes.len(), 2);
            }
        }
    });
    let beats = async {
        let mut statuses = Vec::new();
        for seq in 1..=60 {
            let (s, body) = server.beat(&beating, &key, &token, seq).await;
            assert_eq!(s, 202, "heartbeat {seq}: {body}");
            statuses.push(s);
        }
        statuses
    };
    let (_, statuses) = tokio::join!(futures::future::join_all(readers), beats);
    assert_eq!(statuses.len(), 60);
    let node = node_json(server, &beating).await;
    assert_eq!(node["status"], "online");
}
