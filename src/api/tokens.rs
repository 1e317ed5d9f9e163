//! `POST /api/v1/tokens`: admins issue operator (and admin) tokens.

use axum::extract::State;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;

use super::auth::{Caller, TokenResponse};
use super::created;
use super::extract::ApiJson;
use crate::app::AppState;
use crate::domain::ids::is_valid_subject;
use crate::domain::role::Role;
use crate::domain::timefmt::rfc3339_us;
use crate::error::{ApiError, ApiResult};

pub const DEFAULT_TTL_SECONDS: u64 = 3600;
pub const MAX_TTL_SECONDS: u64 = 366 * 86_400;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueTokenRequest {
    /// `operator` or `admin` (nodes log in with their key instead).
    pub role: String,
    pub subject: String,
    /// 60 seconds to 366 days; default 3600.
    pub ttl_seconds: Option<u64>,
}

/// Issue a token (admin).
#[utoipa::path(post, operation_id = "tokens_issue", path = "/api/v1/tokens", tag = "auth",
    request_body = IssueTokenRequest,
    responses((status = 201, body = TokenResponse), (status = 403, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn issue(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<IssueTokenRequest>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let role = match Role::parse(&req.role) {
        Some(r @ (Role::Operator | Role::Admin)) => r,
        _ => {
            return Err(ApiError::validation(
                "role must be operator or admin (nodes log in with their key)",
            ))
        }
    };
    if !is_valid_subject(&req.subject) {
        return Err(ApiError::validation(
            "subject must be 1-128 characters of letters, digits and _-.@:",
        ));
    }
    let ttl = req.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    if !(60..=MAX_TTL_SECONDS).contains(&ttl) {
        return Err(ApiError::validation(format!(
            "ttl_seconds must be between 60 and {MAX_TTL_SECONDS}"
        )));
    }
    let now = crate::crypto::tokens::unix_now_secs();
    let (token, exp) = app
        .tokens
        .issue(role, &req.subject, Duration::from_secs(ttl), None, now);
    let actor = caller.actor();
    let subject = req.subject.clone();
    app.writer
        .write(move |b| {
            b.audit(
                &actor,
                "token.issue",
                &subject,
                json!({"role": role.as_str(), "ttl_seconds": ttl}),
            )
            .map_err(ApiError::from)
        })
        .await?;
    Ok(created(TokenResponse {
        token,
        expires_at: rfc3339_us(exp * 1_000_000),
    }))
}
