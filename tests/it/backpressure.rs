//! A full writer queue answers 503 with Retry-After at once (never an unbounded queue), and
//! a refused write leaves nothing behind.

use crate::common::*;
use futures::future::join_all;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_writer_queue_answers_503_with_retry_after_and_writes_nothing() {
    let server = TestServer::start_with(&[("WRITER_QUEUE_CAPACITY", "1")]).await;
    let server = &server;
    let admin = &server.admin;
    let mut created = 0usize;
    let mut overloaded = 0usize;
    for _burst in 0..20 {
        let requests = (0..64).map(|i| async move {
            let key = node_key();
            server
                .call_full(
                    "POST",
                    "/api/v1/nodes",
                    Some(admin),
                    Some(json!({"name": format!("n{i}"), "public_key": public_b64(&key)})),
                )
                .await
        });
        for (status, headers, body) in join_all(requests).await {
            match status {
                201 => created += 1,
                503 => {
                    assert_eq!(body["type"], "overloaded", "{body}");
                    assert!(
                        headers.get("retry-after").is_some(),
                        "503 without Retry-After"
                    );
                    overloaded += 1;
                }
                other => panic!("unexpected status {other}: {body}"),
            }
        }
        if overloaded > 0 && created > 0 {
            break;
        }
    }
    assert!(
        overloaded > 0,
        "a queue of 1 under 64 concurrent writers never filled"
    );
    assert!(created > 0);
    let stored = paginate_all(server, "/api/v1/nodes?limit=500", admin)
        .await
        .len();
    assert_eq!(stored, created, "only acknowledged writes are stored");
}
