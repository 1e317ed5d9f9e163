//! HTTP: the axum router and cross-cutting layers. Handlers live in one module per
//! resource and stay thin: parse, authorize, call the store or a use case in
//! [`crate::app`], shape the answer. The shared state, [`crate::app::App`], lives in `app`.

pub mod alerts;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod enrollments;
pub mod extract;
pub mod heartbeat;
pub mod limits;
pub mod meta;
pub mod nodes;
pub mod openapi;
pub mod pagination;
pub mod payouts;
pub mod pools;
pub mod poot;
pub mod tokens;
pub mod ui;

use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

use crate::app::AppState;
use crate::error::ApiError;

/// The complete router.
pub fn router(app: AppState) -> Router {
    let api = Router::new()
        .route("/keys", get(meta::keys))
        .route("/openapi.json", get(openapi::document))
        .route("/tokens", post(tokens::issue).get(tokens::list))
        .route("/tokens/revoke", post(tokens::revoke))
        .route("/auth/challenge", post(auth::challenge))
        .route("/auth/token", post(auth::token))
        .route("/nodes", post(nodes::create).get(nodes::list))
        .route(
            "/enrollments",
            post(enrollments::create).get(enrollments::list),
        )
        .route("/enrollments/redeem", post(enrollments::redeem))
        .route(
            "/enrollments/{enrollment_id}",
            axum::routing::delete(enrollments::withdraw),
        )
        .route(
            "/nodes/{node_id}",
            get(nodes::get_one)
                .put(nodes::update)
                .delete(nodes::deregister),
        )
        .route("/nodes/{node_id}/heartbeat", post(heartbeat::heartbeat))
        .route(
            "/nodes/{node_id}/ledger",
            get(payouts::ledger).post(payouts::adjust),
        )
        .route("/payouts", get(payouts::export))
        .route("/payouts/process", post(payouts::process))
        .route("/payouts/{id}", get(payouts::for_node))
        .route("/payouts/{id}/confirm", post(payouts::confirm))
        .route("/payouts/{id}/fail", post(payouts::fail))
        .route("/poot/calculate", post(poot::calculate))
        .route("/poot/{node_id}", get(poot::get_proof))
        .route("/poot/{node_id}/history", get(poot::history))
        .route("/poot/{node_id}/days", get(poot::days))
        .route("/poot/{node_id}/heartbeats", get(poot::heartbeats))
        .route("/pools", post(pools::create).get(pools::list))
        .route("/pools/{pool_id}", get(pools::get_one))
        .route("/pools/{pool_id}/join", post(pools::join))
        .route("/audit", get(audit::list))
        .route(
            "/alerts",
            get(alerts::get_settings)
                .put(alerts::put_settings)
                .delete(alerts::delete_settings),
        );
    let timeout = app.config.request_timeout;
    let body_limit = app.config.max_body_bytes;
    Router::new()
        .route("/health", get(meta::health))
        .route("/metrics", get(meta::metrics))
        .nest("/api/v1", api)
        .merge(ui::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            app.clone(),
            limits::by_address,
        ))
        .layer(middleware::from_fn_with_state(app.clone(), observe))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            timeout.max(Duration::from_secs(1)),
        ))
        // Added after the timeout layer, so outside it: a backup takes as long as the
        // database is large. Still counted and timed by `observe`.
        .route(
            "/api/v1/backup",
            post(backup::create).layer(middleware::from_fn_with_state(app.clone(), observe)),
        )
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .with_state(app)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not-found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method-not-allowed",
        "this route does not accept that method",
    )
}

/// Counts and times every request by its route pattern (never the raw path, which would
/// put ids into label values; a path no route matches is `unmatched`) and its method
/// (one of a fixed set, see [`method_label`]). Every label takes a bounded set of values,
/// so no client can grow `/metrics` by sending made-up methods or paths.
async fn observe(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status();
    app.metrics
        .http_requests
        .with_label_values(&[method, &route, status.as_str()])
        .inc();
    app.metrics
        .http_latency
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    if status.is_server_error() {
        tracing::warn!(%method, %route, status = status.as_u16(), "request failed");
    }
    response
}

/// The method as a metric label: the standard methods by name, anything else (made-up
/// extension methods, and `CONNECT` and `TRACE`, which no route serves) as `other`.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// `201 Created` with a JSON body.
pub fn created<T: serde::Serialize>(body: T) -> Response {
    (StatusCode::CREATED, axum::Json(body)).into_response()
}
