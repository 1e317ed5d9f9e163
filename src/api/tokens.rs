//! `/api/v1/tokens`: admins issue operator (and admin) tokens, list the recently issued
//! ones and revoke tokens (one by its jti, or all of a subject's).

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::time::Duration;

use super::auth::{Caller, TokenResponse};
use super::created;
use super::extract::{ApiJson, ApiQuery};
use crate::app::heavy::heavy_read;
use crate::app::revocations::{self, issue_detail, IssuedToken};
use crate::app::AppState;
use crate::domain::ids::is_valid_subject;
use crate::domain::revocation::{Revocation, RevocationTarget, MAX_TOKEN_TTL_SECONDS};
use crate::domain::role::Role;
use crate::domain::timefmt::rfc3339_us;
use crate::error::{ApiError, ApiResult};

pub const DEFAULT_TTL_SECONDS: u64 = 3600;
pub const MAX_TTL_SECONDS: u64 = MAX_TOKEN_TTL_SECONDS;

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
    let iat_us = app.tokens.stamp_us();
    let issued = app
        .tokens
        .issue_at(role, &req.subject, Duration::from_secs(ttl), None, iat_us);
    let actor = caller.actor();
    let subject = req.subject.clone();
    // The jti and expiry (never the token) let the console list it and a revocation of
    // it expire with it.
    let detail = issue_detail(role.as_str(), ttl, &issued.jti, iat_us, issued.exp);
    app.writer
        .write(move |b| {
            b.audit(&actor, revocations::ISSUE_ACTION, &subject, detail)
                .map_err(ApiError::from)
        })
        .await?;
    Ok(created(TokenResponse {
        token: issued.token,
        expires_at: rfc3339_us(issued.exp * 1_000_000),
        jti: issued.jti,
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// One token, by its `jti` claim.
    pub jti: Option<String>,
    /// Every token of this subject issued up to now, any role (a node's subject is its
    /// node_id). Give exactly one of `jti` and `subject`.
    pub subject: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct RevocationView {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// For a subject: tokens issued up to this instant are refused.
    pub revoked_at: String,
    /// When the entry is dropped: no token it covers verifies after this.
    pub expires_at: String,
}

impl From<&Revocation> for RevocationView {
    fn from(r: &Revocation) -> Self {
        let (jti, subject) = match &r.target {
            RevocationTarget::Jti(j) => (Some(j.clone()), None),
            RevocationTarget::Subject(s) => (None, Some(s.clone())),
        };
        Self {
            jti,
            subject,
            revoked_at: rfc3339_us(r.revoked_at_us),
            expires_at: rfc3339_us(r.expires_at_us),
        }
    }
}

/// What a revoke request names, or why it is refused.
pub fn revocation_target(req: RevokeRequest) -> ApiResult<RevocationTarget> {
    match (req.jti, req.subject) {
        (Some(jti), None) if is_valid_subject(&jti) => Ok(RevocationTarget::Jti(jti)),
        (Some(_), None) => Err(ApiError::validation(
            "jti must be 1-128 characters of letters, digits and _-.@:",
        )),
        (None, Some(subject)) if is_valid_subject(&subject) => {
            Ok(RevocationTarget::Subject(subject))
        }
        (None, Some(_)) => Err(ApiError::validation(
            "subject must be 1-128 characters of letters, digits and _-.@:",
        )),
        _ => Err(ApiError::validation("give exactly one of jti and subject")),
    }
}

/// Revoke a token by its jti, or every token of a subject issued up to now (admin).
#[utoipa::path(post, operation_id = "tokens_revoke", path = "/api/v1/tokens/revoke", tag = "auth",
    request_body = RevokeRequest,
    responses((status = 200, body = RevocationView), (status = 400, body = crate::error::Problem),
        (status = 401, body = crate::error::Problem), (status = 403, body = crate::error::Problem),
        (status = 503, body = crate::error::Problem), (status = 507, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn revoke(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<RevokeRequest>,
) -> ApiResult<Json<RevocationView>> {
    caller.require_admin()?;
    let target = revocation_target(req)?;
    let stored = revocations::revoke(&app, target, caller.actor()).await?;
    Ok(Json(RevocationView::from(&stored)))
}

#[derive(Deserialize, utoipa::IntoParams)]
// Query-string parameters, optional (utoipa would document them as path parameters).
#[into_params(parameter_in = Query)]
pub struct IssuedParams {
    /// Most tokens to list, 1 to 500 (default 50).
    pub limit: Option<i64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct IssuedTokenView {
    pub jti: String,
    pub subject: String,
    pub role: String,
    pub issued_at: String,
    pub expires_at: String,
    /// Who issued it.
    pub issued_by: String,
    pub revoked: bool,
    /// When the revocation that refuses it was made (by jti or by subject).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct IssuedTokens {
    pub items: Vec<IssuedTokenView>,
}

/// Tokens issued through the API that have not expired, newest first, from the audit log
/// (admin). Tokens minted offline by `token issue` and node tokens are not recorded there.
#[utoipa::path(get, operation_id = "tokens_list", path = "/api/v1/tokens", tag = "auth",
    params(IssuedParams),
    responses((status = 200, body = IssuedTokens), (status = 400, body = crate::error::Problem),
        (status = 401, body = crate::error::Problem), (status = 403, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery<IssuedParams>,
) -> ApiResult<Json<IssuedTokens>> {
    caller.require_admin()?;
    let limit = super::pagination::PageParams {
        limit: params.limit,
        cursor: None,
    }
    .limit()?;
    let lifetime = revocations::lifetime_bound(app.config.node_token_ttl);
    let now_us = app.clock.now_us().max(crate::crypto::tokens::unix_now_us());
    // A walk of the audit log: a heavy read, off the async threads.
    let issued = heavy_read(&app, move |app| {
        revocations::recent_issued(&app.store.reader()?, now_us, lifetime, limit)
    })
    .await?;
    let set = app.tokens.revocations();
    let items = issued
        .iter()
        .map(|t: &IssuedToken| {
            let by = t.revoked_by(&set);
            IssuedTokenView {
                jti: t.jti.clone(),
                subject: t.subject.clone(),
                role: t.role.clone(),
                issued_at: rfc3339_us(t.issued_at_us),
                expires_at: rfc3339_us(t.exp * 1_000_000),
                issued_by: t.issued_by.clone(),
                revoked: by.is_some(),
                revoked_at: by.map(|r| rfc3339_us(r.revoked_at_us)),
            }
        })
        .collect();
    Ok(Json(IssuedTokens { items }))
}
