//! `/metrics` stays bounded whatever clients send: the request metrics are labelled with
//! a fixed set of methods and with route templates, never with what the client made up.

use crate::common::*;
use rand::Rng;

fn random_letters(rng: &mut impl Rng, n: usize, base: u8) -> String {
    (0..n)
        .map(|_| (base + rng.gen_range(0..26)) as char)
        .collect()
}

#[tokio::test]
async fn made_up_methods_and_paths_do_not_grow_metrics() {
    let server = TestServer::start().await;
    let send = |method: String, path: String| {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let request = server.client.request(method, server.url(&path));
        async move {
            let resp = request.send().await.expect("an answer");
            let status = resp.status().as_u16();
            let _ = resp.bytes().await;
            status
        }
    };
    // Every series the made-up requests below can touch exists before the baseline.
    assert_eq!(send("MADEUP".into(), "/nowhere".into()).await, 404);
    assert_eq!(
        send("MADEUP".into(), "/api/v1/pools/warmup".into()).await,
        405
    );
    assert_eq!(send("GET".into(), "/nowhere".into()).await, 404);
    server.metrics_text().await;
    let before = server.metrics_text().await;

    let mut rng = rand::thread_rng();
    let mut made_up = Vec::new();
    for i in 0..300 {
        let method = random_letters(&mut rng, 30, b'A');
        let segment = random_letters(&mut rng, 30, b'a');
        let (path, want) = match i % 3 {
            0 => (format!("/{segment}"), 404),
            1 => (format!("/api/v1/{segment}/{i}"), 404),
            // A real route with a made-up id: the route template, never the id.
            _ => (format!("/api/v1/pools/{segment}"), 405),
        };
        assert_eq!(
            send(method.clone(), path.clone()).await,
            want,
            "{method} {path}"
        );
        made_up.push(method);
        made_up.push(segment);
    }
    // Plain GETs of unmatched paths are labelled `unmatched` too.
    for _ in 0..20 {
        let segment = random_letters(&mut rng, 30, b'a');
        assert_eq!(send("GET".into(), format!("/{segment}")).await, 404);
        made_up.push(segment);
    }

    let after = server.metrics_text().await;
    for s in &made_up {
        assert!(!after.contains(s.as_str()), "{s} is in /metrics");
    }
    assert!(after.contains(r#"method="other",route="unmatched",status="404""#));
    assert!(after.contains(r#"method="other",route="/api/v1/pools/{pool_id}",status="405""#));
    assert!(after.contains(r#"method="GET",route="unmatched",status="404""#));
    // Only counts and sums changed: a few digits per series, not a series per request.
    let grown = after.len().saturating_sub(before.len());
    assert!(grown < 1024, "/metrics grew by {grown} bytes");
}
