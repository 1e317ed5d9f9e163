//! `GET /api/v1/nodes/{id}/ledger` is a list like any other: pages of `limit` entries,
//! oldest first, followed by `next_cursor`.

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn a_ledger_of_250_entries_pages_100_at_a_time_in_order() {
    let server = TestServer::start().await;
    let (node, _) = server.register_node(&server.admin, "busy").await;
    let id = node["node_id"].as_str().unwrap().to_string();
    // Amounts 0.000001, 0.000002, ... tell the entries apart and give their order.
    for i in 1..=250u32 {
        let (s, e) = server
            .call(
                "POST",
                &format!("/api/v1/nodes/{id}/ledger"),
                Some(&server.admin),
                Some(json!({"amount_usdt": format!("0.{i:06}"), "reason": "work"})),
            )
            .await;
        assert_eq!(s, 201, "{e}");
    }
    let path = format!("/api/v1/nodes/{id}/ledger?limit=100");
    let pages = pages_of(&server, &path, &server.admin).await;
    let sizes: Vec<usize> = pages
        .iter()
        .map(|p| p["items"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [100, 100, 50]);
    for page in &pages {
        assert_eq!(page["node_id"], id.as_str());
        // The balance is the node's, on every page: the sum of all 250 amounts.
        assert_eq!(page["balance_usdt"], "0.031375", "{page}");
    }
    let entries: Vec<_> = pages
        .iter()
        .flat_map(|p| p["items"].as_array().unwrap().clone())
        .collect();
    let amounts: Vec<String> = entries
        .iter()
        .map(|e| e["amount_usdt"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = (1..=250u32).map(|i| format!("0.{i:06}")).collect();
    assert_eq!(amounts, want);
    // Every entry keeps its fields.
    for e in &entries {
        for field in ["seq", "at", "kind", "amount_usdt", "reference"] {
            assert!(!e[field].is_null(), "{field} missing: {e}");
        }
    }
    let seqs: Vec<u64> = entries.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[tokio::test]
async fn a_ledger_cursor_the_service_did_not_issue_is_a_400() {
    let server = TestServer::start().await;
    let (node, _) = server.register_node(&server.admin, "n").await;
    let id = node["node_id"].as_str().unwrap();
    // Not base64; base64 of text that is no entry number; a limit out of range.
    for query in ["cursor=!!!", "cursor=bm90LWEtc2Vx", "limit=0", "limit=501"] {
        let (s, body) = server
            .call(
                "GET",
                &format!("/api/v1/nodes/{id}/ledger?{query}"),
                Some(&server.admin),
                None,
            )
            .await;
        assert_problem(s, &body, 400, "validation");
    }
}
