//! The OpenAPI document, generated from the handlers' annotations (utoipa).

use axum::Json;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use super::{
    alerts, audit, auth, backup, enrollments, heartbeat, meta, nodes, payouts, pools, poot, tokens,
    ui,
};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// Operations that refuse some valid callers with 403: the role may not (admin-only
/// routes, nodes managing records), or the node is suspended or deregistered.
/// Authenticated operations not named here answer every valid token (or 404 for what it
/// may not see); the test below makes each new operation decide.
pub const MAY_FORBID: &[&str] = &[
    "tokens_issue",
    "tokens_list",
    "tokens_revoke",
    "auth_challenge",
    "auth_token",
    "nodes_create",
    "nodes_update",
    "nodes_deregister",
    "nodes_heartbeat",
    "pools_create",
    "pools_join",
    "poot_calculate",
    "payouts_process",
    "payouts_export",
    "payouts_confirm",
    "payouts_fail",
    "ledger_adjust",
    "audit_list",
    "alerts_get",
    "alerts_put",
    "alerts_delete",
    "backup_create",
    "enrollments_create",
    "enrollments_list",
    "enrollments_withdraw",
];

/// Authenticated operations that never answer 403 (see [`MAY_FORBID`]).
pub const NEVER_FORBID: &[&str] = &[
    "nodes_list",
    "nodes_get_one",
    "pools_list",
    "pools_get_one",
    "poot_get",
    "poot_days",
    "poot_history",
    "poot_heartbeats",
    "payouts_for_node",
    "ledger_get",
];

/// `POST`s that write nothing to the database (no 503 from a full writer queue, no 507).
const WRITES_NOTHING: &[&str] = &["auth_challenge", "auth_token", "backup_create"];

/// The error answers every operation can give by the shared machinery, added to what each
/// handler's annotation lists (an annotation's own entry for a status wins):
/// - a bearer token: 401 (missing, invalid, expired, revoked) and 429 (`TOKEN_RATE_LIMIT`);
/// - the login routes: 429 (`AUTH_RATE_LIMIT`);
/// - a query string or a body: 400; a body: 413 too;
/// - an id in the path: 404;
/// - a write (`POST`, `PUT`, `DELETE` under `/api/v1`): 503 (writer queue full, storage
///   failure) and 507 (storage full);
/// - the operations named in [`MAY_FORBID`]: 403.
struct StandardErrors;

fn add_standard_errors(path: &str, writes: bool, op: &mut Operation) {
    let id = op.operation_id.clone().unwrap_or_default();
    let authenticated = op.security.as_ref().is_some_and(|s| !s.is_empty());
    let has_query = op
        .parameters
        .iter()
        .flatten()
        .any(|p| p.parameter_in == ParameterIn::Query);
    let has_body = op.request_body.is_some();
    let writes = writes && path.starts_with("/api/v1/") && !WRITES_NOTHING.contains(&id.as_str());
    let mut add = |status: &str, description: &str| {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| problem(description).into());
    };
    if authenticated {
        add(
            "401",
            "`missing-token`, `invalid-token`, `token-expired` or `token-revoked`",
        );
        add(
            "429",
            "`rate-limited`: the token's subject is over `TOKEN_RATE_LIMIT` (with `Retry-After`)",
        );
    }
    if super::limits::is_login_path(path) {
        add(
            "429",
            "`rate-limited`: this client address is over `AUTH_RATE_LIMIT` (with `Retry-After`)",
        );
    }
    if has_query || has_body {
        add("400", "`validation`: malformed or invalid input");
    }
    if has_body {
        add(
            "413",
            "`payload-too-large`: the body is over `MAX_BODY_BYTES`",
        );
    }
    if path.contains('{') {
        add(
            "404",
            "`not-found`: unknown id, or one the caller may not see",
        );
    }
    if writes {
        add(
            "503",
            "`overloaded` or `storage`: the write had no effect; retry after `Retry-After`",
        );
        add(
            "507",
            "`insufficient-storage`: the disk is full; the write had no effect",
        );
    }
    if MAY_FORBID.contains(&id.as_str()) {
        add(
            "403",
            "`forbidden` (the caller's role may not do this) or `node-inactive`",
        );
    }
}

fn problem(description: &str) -> utoipa::openapi::Response {
    ResponseBuilder::new()
        .description(description)
        .content(
            "application/problem+json",
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build(),
        )
        .build()
}

impl Modify for StandardErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            if let Some(op) = item.get.as_mut() {
                add_standard_errors(path, false, op);
            }
            for op in [&mut item.post, &mut item.put, &mut item.delete]
                .into_iter()
                .flatten()
            {
                add_standard_errors(path, true, op);
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "lucid-node-management", description = "Node pool manager of the Lucid network"),
    paths(
        meta::health, meta::metrics, meta::keys, document,
        tokens::issue, tokens::list, tokens::revoke, auth::challenge, auth::token,
        nodes::create, nodes::list, nodes::get_one, nodes::update, nodes::deregister,
        enrollments::create, enrollments::list, enrollments::withdraw, enrollments::redeem,
        pools::create, pools::list, pools::get_one, pools::join,
        heartbeat::heartbeat, poot::get_proof, poot::history, poot::days, poot::heartbeats, poot::calculate,
        payouts::for_node, payouts::process, payouts::export, payouts::confirm, payouts::fail,
        payouts::ledger, payouts::adjust,
        audit::list,
        alerts::get_settings, alerts::put_settings, alerts::delete_settings,
        backup::create,
        ui::root, ui::index, ui::file,
    ),
    components(schemas(crate::error::Problem)),
    modifiers(&BearerAuth, &StandardErrors)
)]
pub struct ApiDoc;

/// This document.
#[utoipa::path(get, operation_id = "openapi_document", path = "/api/v1/openapi.json", tag = "meta",
    responses((status = 200, body = Object)))]
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    let mut doc = ApiDoc::openapi();
    doc.info.version = crate::VERSION.to_string();
    Json(doc)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// Every operation of the generated document: (method, path, operation).
    fn operations() -> Vec<(String, String, Value)> {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                out.push((method.clone(), path.clone(), op.clone()));
            }
        }
        assert!(out.len() > 30, "{} operations", out.len());
        out
    }

    fn lists(op: &Value, status: &str) -> bool {
        op["responses"].get(status).is_some()
    }

    #[test]
    fn every_route_lists_the_errors_it_can_answer() {
        let mut missing = Vec::new();
        for (method, path, op) in operations() {
            let id = op["operationId"].as_str().unwrap_or_default().to_string();
            let authenticated = op["security"].as_array().is_some_and(|s| !s.is_empty());
            let has_input = op["requestBody"].is_object()
                || op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["in"] == "query"));
            let mut want = Vec::new();
            if authenticated {
                want.extend(["401", "429"]);
                let forbids = MAY_FORBID.contains(&id.as_str());
                assert!(
                    forbids || NEVER_FORBID.contains(&id.as_str()),
                    "{method} {path} ({id}): name it in MAY_FORBID or NEVER_FORBID"
                );
                if forbids {
                    want.push("403");
                }
            }
            if super::super::limits::is_login_path(&path) {
                want.push("429");
            }
            if has_input {
                want.push("400");
            }
            if path.contains('{') && path.starts_with("/api/v1/") {
                want.push("404");
            }
            for status in want {
                if !lists(&op, status) {
                    missing.push(format!("{method} {path}: {status}"));
                }
            }
        }
        assert!(missing.is_empty(), "missing error answers: {missing:#?}");
    }

    #[test]
    fn error_answers_carry_the_problem_schema() {
        for (method, path, op) in operations() {
            for (status, response) in op["responses"].as_object().unwrap() {
                if !status.starts_with('4') && !status.starts_with('5') || path == "/health" {
                    continue;
                }
                let schemas: Vec<&Value> = response["content"]
                    .as_object()
                    .unwrap_or_else(|| panic!("{method} {path} {status}: no content"))
                    .values()
                    .map(|c| &c["schema"]["$ref"])
                    .collect();
                assert!(
                    schemas
                        .iter()
                        .all(|r| r.as_str() == Some("#/components/schemas/Problem")),
                    "{method} {path} {status}: {response}"
                );
            }
        }
    }

    #[test]
    fn the_forbid_lists_name_only_real_operations_once() {
        let ids: Vec<String> = operations()
            .iter()
            .filter_map(|(_, _, op)| op["operationId"].as_str().map(str::to_string))
            .collect();
        for id in MAY_FORBID.iter().chain(NEVER_FORBID) {
            assert!(ids.iter().any(|i| i == id), "{id} is no operation");
            assert!(
                !(MAY_FORBID.contains(id) && NEVER_FORBID.contains(id)),
                "{id} is in both lists"
            );
        }
    }
}
