//! An epoch is stored in chunks (its record first, then its proofs a few at a time): a
//! server killed with SIGKILL between two chunks leaves a database that verifies, and
//! after restart finishes the epoch with the same proofs, crediting every node once.
//!
//! The debug build's `LUCID_DEBUG_POOT_CHUNK` / `LUCID_DEBUG_POOT_CHUNK_PAUSE_MS` make the
//! chunks one proof each with a pause after each, so the kill lands mid-close.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::*;
use serde_json::Value;

const NODES: usize = 6;

/// Each node's proof of `epoch`, if stored.
async fn proofs_of(server: &TestServer, ids: &[String], epoch: u64) -> HashMap<String, Value> {
    let mut out = HashMap::new();
    for id in ids {
        if let Some(p) = proof_history(server, id)
            .await
            .into_iter()
            .find(|p| p["epoch"].as_u64() == Some(epoch))
        {
            out.insert(id.clone(), p);
        }
    }
    out
}

/// A server with 2-second epochs and the debug `knobs`, and [`NODES`] nodes that each sent
/// one heartbeat; their ids.
async fn start_with_beating_nodes(knobs: &[(&str, &str)]) -> (TestServer, Vec<String>) {
    let mut env = vec![
        ("POOT_CALCULATION_INTERVAL", "2"),
        ("HEARTBEAT_TIMEOUT", "2"),
        ("REWARD_USDT_PER_HOUR", "36"),
    ];
    env.extend_from_slice(knobs);
    let server = TestServer::start_with(&env).await;
    let mut ids = Vec::new();
    for i in 0..NODES {
        let (node, key) = server.register_node(&server.admin, &format!("n{i}")).await;
        let id = node["node_id"].as_str().unwrap().to_string();
        let token = server.login_node(&id, &key).await;
        let (status, body) = server
            .call(
                "POST",
                &format!("/api/v1/nodes/{id}/heartbeat"),
                Some(&token),
                Some(heartbeat_body(&id, &key, 1)),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        ids.push(id);
    }
    (server, ids)
}

/// Kills the server in the middle of a close, checks that the half-closed database
/// verifies (what is stored is consistent and signed), restarts it and lets `calculate`
/// wait for the resumed close and close the rest.
async fn kill_mid_close_and_resume(server: &mut TestServer) {
    server.kill();
    let report = server.verify_offline();
    assert!(report.contains("being closed"), "{report}");
    server.restart();
    let (status, calc) = server
        .call("POST", "/api/v1/poot/calculate", Some(&server.admin), None)
        .await;
    assert_eq!(status, 200, "{calc}");
}

/// Every node of `ids` credited once per proof: its balance is the sum of its proofs'
/// credits, and the ledger as served (the day's pending credits included) sums to it.
async fn assert_each_node_credited_once(server: &TestServer, ids: &[String]) {
    for id in ids {
        let proofs: i64 = proof_history(server, id)
            .await
            .iter()
            .map(|p| usdt_micros(&p["credits_usdt"]))
            .sum();
        let (status, node) = server
            .call(
                "GET",
                &format!("/api/v1/nodes/{id}/ledger"),
                Some(&server.admin),
                None,
            )
            .await;
        assert_eq!(status, 200, "{node}");
        let ledger = paginate_all(
            server,
            &format!("/api/v1/nodes/{id}/ledger?limit=500"),
            &server.admin,
        )
        .await;
        let entries: i64 = ledger.iter().map(|e| usdt_micros(&e["amount_usdt"])).sum();
        assert_eq!(usdt_micros(&node["balance_usdt"]), proofs, "{id}: {node}");
        assert_eq!(entries, proofs, "{id}: {ledger:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_chunks_of_an_epoch_close_loses_nothing_and_credits_once() {
    let (mut server, ids) = start_with_beating_nodes(&[
        ("LUCID_DEBUG_POOT_CHUNK", "1"),
        ("LUCID_DEBUG_POOT_CHUNK_PAUSE_MS", "500"),
    ])
    .await;

    // Wait until the first epoch with proofs is part-way stored, then pull the plug. (Its
    // proofs are fewer than the nodes when their heartbeats straddle an epoch boundary.)
    let mut first_epoch = None;
    let (epoch, before) = wait_until_every(
        Duration::from_secs(30),
        Duration::from_millis(50),
        async || {
            let e = match first_epoch {
                Some(e) => e,
                None => {
                    // The earliest epoch any node has a proof for.
                    let mut first = None;
                    for id in &ids {
                        if let Some(p) = proof_history(&server, id).await.last() {
                            let k = p["epoch"].as_u64().unwrap();
                            first = Some(first.map_or(k, |f: u64| f.min(k)));
                        }
                    }
                    let Some(e) = first else {
                        return Err("no epoch was closed".to_string());
                    };
                    first_epoch = Some(e);
                    e
                }
            };
            let before = proofs_of(&server, &ids, e).await;
            if !before.is_empty() && before.len() < NODES {
                return Ok((e, before));
            }
            assert!(
                before.len() < NODES,
                "epoch {e} closed completely before the test could interrupt it"
            );
            Err(format!("no proof of epoch {e} stored yet"))
        },
    )
    .await;
    assert!(!before.is_empty() && before.len() < NODES);
    kill_mid_close_and_resume(&mut server).await;
    let after = proofs_of(&server, &ids, epoch).await;
    assert!(
        after.len() >= before.len(),
        "the restart finished epoch {epoch}: {} proofs before the kill, {} after",
        before.len(),
        after.len()
    );
    for (id, proof) in &before {
        assert_eq!(&after[id], proof, "{id}'s proof changed across the restart");
    }
    let proved: Vec<String> = after.keys().cloned().collect();
    assert_each_node_credited_once(&server, &proved).await;
    let _ = server.terminate().await;
    server.verify_offline();
}

/// A close stores its proof rows, then settles them into the nodes' totals a few at a time
/// (the debug build settles one node per job here): a server killed with SIGKILL while
/// settling leaves a database that verifies, and after restart every node of the epoch is
/// credited exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_while_an_epoch_is_settled_credits_every_node_once_after_restart() {
    let (mut server, ids) = start_with_beating_nodes(&[
        ("LUCID_DEBUG_POOT_SETTLE_ROWS", "1"),
        ("LUCID_DEBUG_POOT_CHUNK_PAUSE_MS", "500"),
    ])
    .await;

    // Wait until an epoch's proofs are all stored and served, some of their nodes are
    // credited and some not yet: the close is settling. Then pull the plug.
    wait_until_every(
        Duration::from_secs(30),
        Duration::from_millis(50),
        async || {
            // node -> (epoch of its latest proof, its credits, the node's balance)
            let mut latest = Vec::new();
            for id in &ids {
                let (status, proof) = server
                    .call(
                        "GET",
                        &format!("/api/v1/poot/{id}"),
                        Some(&server.admin),
                        None,
                    )
                    .await;
                if status != 200 {
                    continue;
                }
                let node = node_json(&server, id).await;
                latest.push((
                    proof["epoch"].as_u64().unwrap(),
                    usdt_micros(&proof["credits_usdt"]),
                    usdt_micros(&node["balance_usdt"]),
                ));
            }
            // The first epoch whose proofs carry credits: one whose proofs carry none (a
            // window the nodes joined at its very end, seen once on a loaded machine)
            // cannot show settling.
            let Some(first) = latest.iter().filter(|l| l.1 > 0).map(|l| l.0).min() else {
                return Err(format!("no credited proof yet: {latest:?}"));
            };
            let of_first: Vec<_> = latest.iter().filter(|l| l.0 == first).collect();
            let credited = of_first.iter().filter(|l| l.2 > 0).count();
            let waiting = of_first.iter().filter(|l| l.1 > 0 && l.2 == 0).count();
            assert!(
                latest.iter().all(|l| l.0 <= first),
                "a later epoch closed before the test could interrupt the first: {latest:?}"
            );
            if credited > 0 && waiting > 0 {
                Ok(())
            } else {
                Err(format!("not settling: {latest:?}"))
            }
        },
    )
    .await;
    kill_mid_close_and_resume(&mut server).await;
    assert_each_node_credited_once(&server, &ids).await;
    for id in &ids {
        let node = node_json(&server, id).await;
        assert!(
            usdt_micros(&node["balance_usdt"]) > 0,
            "{id} was never credited: {node}"
        );
    }
    let _ = server.terminate().await;
    server.verify_offline();
}
