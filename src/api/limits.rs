//! The per-address rate limit of the login routes, as a middleware, and the 429 answer
//! both rate limits give (the per-token one is checked by the [`super::auth::Caller`]
//! extractor, once the subject is known).
//!
//! The client address is the TCP peer (axum's `ConnectInfo`). Behind a reverse proxy
//! (`--http` with a local TLS proxy) every client has the proxy's address, so the proxy's
//! clients share one budget: `X-Forwarded-For` is not trusted, since any client could set
//! it to a new value per request.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::app::rate_limits::{retry_after_secs, LimitKind};
use crate::app::AppState;
use crate::error::ApiError;

/// The paths the per-address limit covers: node login and enrolment redemption, the
/// routes a client reaches without a token.
pub fn is_login_path(path: &str) -> bool {
    path.starts_with("/api/v1/auth/") || path == "/api/v1/enrollments/redeem"
}

/// 429 `rate-limited` with `Retry-After` (seconds, rounded up), counted by limit.
pub fn rate_limited(app: &AppState, limit: LimitKind, wait: Duration) -> ApiError {
    app.metrics
        .rate_limited
        .with_label_values(&[limit.as_str()])
        .inc();
    let who = match limit {
        LimitKind::Auth => "this address",
        LimitKind::Token => "this token's subject",
    };
    ApiError::too_many_requests(
        "rate-limited",
        format!("too many requests from {who}; retry after the Retry-After delay"),
        retry_after_secs(wait),
    )
}

/// Refuses a login-route request over its address's limit before anything else runs.
pub async fn by_address(State(app): State<AppState>, request: Request, next: Next) -> Response {
    if is_login_path(request.uri().path()) {
        if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
            if let Err(wait) = app.rate_limits.check_address(peer.ip()) {
                return rate_limited(&app, LimitKind::Auth, wait).into_response();
            }
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_429_is_a_rate_limited_problem_with_retry_after_rounded_up() {
        let e = ApiError::too_many_requests(
            "rate-limited",
            "x",
            retry_after_secs(Duration::from_millis(1500)),
        );
        let response = e.into_response();
        assert_eq!(response.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[axum::http::header::RETRY_AFTER], "2");
    }

    #[test]
    fn login_paths_are_auth_and_enrolment_redemption_only() {
        assert!(is_login_path("/api/v1/auth/challenge"));
        assert!(is_login_path("/api/v1/auth/token"));
        assert!(is_login_path("/api/v1/enrollments/redeem"));
        assert!(!is_login_path("/api/v1/enrollments"));
        assert!(!is_login_path("/api/v1/nodes"));
        assert!(!is_login_path("/api/v1/authx"));
    }
}
