//! The OpenAPI document, generated from the handlers' annotations (utoipa).

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
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
    modifiers(&BearerAuth)
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
