//! The monitoring files shipped in packaging/ (Prometheus rules, Grafana dashboard) use
//! only metrics the appliance really serves: a renamed metric would silently blind them.

use std::collections::BTreeSet;

use crate::common::TestServer;

/// `lucid_*` names in a text, with histogram suffixes folded to the family name.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("lucid_") {
        let start = i + at;
        let preceded_by_word = start > 0 && (bytes[start - 1].is_ascii_alphanumeric());
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        let name = &text[start..end];
        if !preceded_by_word && name != "lucid_" {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            names.insert(family.to_string());
        }
        i = end.max(start + 1);
    }
    names
}

#[tokio::test]
async fn rules_and_dashboard_use_only_served_metrics() {
    let server = TestServer::start().await;
    // Series with labels appear once something happened: a request, a refused token.
    let (s, _) = server
        .call("GET", "/api/v1/nodes", Some("not-a-token"), None)
        .await;
    assert_eq!(s, 401);
    let served: BTreeSet<String> = server
        .metrics_text()
        .await
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect();
    assert!(served.contains("lucid_nodes"), "{served:?}");

    let root = env!("CARGO_MANIFEST_DIR");
    let rules = std::fs::read_to_string(format!(
        "{root}/packaging/prometheus/lucid-node-management.rules.yml"
    ))
    .unwrap();
    let dashboard_text = std::fs::read_to_string(format!(
        "{root}/packaging/grafana/lucid-node-management.json"
    ))
    .unwrap();
    let dashboard: serde_json::Value =
        serde_json::from_str(&dashboard_text).expect("the dashboard is valid JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    let exprs: String = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().expect("every target has a PromQL expr"))
        .collect::<Vec<_>>()
        .join("\n");

    for (file, text) in [("rules", rules.as_str()), ("dashboard", exprs.as_str())] {
        let used = metric_names(text);
        assert!(used.len() >= 8, "{file} uses {used:?}");
        let unknown: Vec<_> = used.difference(&served).collect();
        assert!(
            unknown.is_empty(),
            "{file} uses metrics /metrics does not serve: {unknown:?}"
        );
    }
    // The four situations the issue names each have a rule.
    for alert in [
        "LucidNodesOffline",
        "LucidMirrorOutboxGrowing",
        "LucidPayoutsFailing",
        "LucidWriterQueueSaturated",
    ] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
    }
}
