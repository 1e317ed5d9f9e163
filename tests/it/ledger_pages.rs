//! `GET /api/v1/nodes/{id}/ledger` is a list like any other: pages of `limit` entries,
//! oldest first, followed by `next_cursor`.

use crate::common::*;
use serde_json::{json, Value};

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

/// The day's epoch credits, not entered in the ledger yet, close the last page as one
/// `pending` entry; a page never carries more than `limit` entries for it.
#[tokio::test]
async fn pending_credits_close_the_last_page_within_the_limit() {
    let server = TestServer::start_with(&[
        ("POOT_CALCULATION_INTERVAL", "2"),
        ("HEARTBEAT_TIMEOUT", "2"),
        ("REWARD_USDT_PER_HOUR", "36"),
    ])
    .await;
    let (node, key) = server.register_node(&server.admin, "earner").await;
    let id = node["node_id"].as_str().unwrap().to_string();
    server.credit(&id, "1").await;
    let token = server.login_node(&id, &key).await;
    let mut seq = 0;
    wait_until(std::time::Duration::from_secs(60), async || {
        seq += 1;
        let (s, body) = server.beat(&id, &key, &token, seq).await;
        assert_eq!(s, 202, "{body}");
        let balance = node_json(&server, &id).await["balance_usdt"].clone();
        if balance != "1.000000" {
            Ok(())
        } else {
            Err("no epoch credit yet")
        }
    })
    .await;
    // Beats have stopped; epochs may still close. Read the balance, every paging of the
    // ledger, and the balance again, until nothing moved in between.
    let limits = [1usize, 2, 500];
    let (balance, pagings) = wait_until(std::time::Duration::from_secs(60), async || {
        let before = node_json(&server, &id).await["balance_usdt"].clone();
        let mut pagings = Vec::new();
        for limit in limits {
            pagings.push(
                pages_of(
                    &server,
                    &format!("/api/v1/nodes/{id}/ledger?limit={limit}"),
                    &server.admin,
                )
                .await,
            );
        }
        let after = node_json(&server, &id).await["balance_usdt"].clone();
        if before == after {
            Ok((after.as_str().unwrap().to_string(), pagings))
        } else {
            Err(format!("the balance moved from {before} to {after}"))
        }
    })
    .await;
    let micros = |v: &str| v.replace('.', "").parse::<i64>().unwrap();
    for (limit, pages) in limits.into_iter().zip(pagings) {
        let entries: Vec<Value> = pages
            .iter()
            .flat_map(|p| p["items"].as_array().unwrap().clone())
            .collect();
        assert!(
            pages
                .iter()
                .all(|p| p["items"].as_array().unwrap().len() <= limit),
            "limit {limit}: {pages:?}"
        );
        let pending: Vec<usize> = entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e["pending"] == true)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(pending, [entries.len() - 1], "limit {limit}: {entries:?}");
        let sum: i64 = entries
            .iter()
            .map(|e| micros(e["amount_usdt"].as_str().unwrap()))
            .sum();
        assert_eq!(sum, micros(&balance), "limit {limit}: {entries:?}");
    }
}
