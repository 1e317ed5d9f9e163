//! Enrolment codes: an operator makes one, a new node redeems it (no token) and is
//! registered under that operator. The use cases live in [`crate::app::enrollments`].

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::created;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::nodes::checked_address;
use super::pagination::{ListPage, PageParams};
use crate::app::enrollments::{self, invalid_code, NewEnrollment};
use crate::app::AppState;
use crate::domain::enrollment::{checked_ttl, checked_uses, Enrollment};
use crate::domain::ids::{is_valid_id, is_valid_subject};
use crate::domain::node::{parse_public_key, validate_text};
use crate::domain::role::Role;
use crate::domain::timefmt::rfc3339_us;
use crate::error::{ApiError, ApiResult};
use crate::views::NodeView;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEnrollmentRequest {
    /// The name the node gets (the node may give its own when redeeming).
    pub name: Option<String>,
    /// The pool the node joins on registering.
    pub pool_id: Option<String>,
    /// TRON address (`T...`) the node is paid to.
    pub payout_address: Option<String>,
    /// Lifetime of the code, 1 s to 30 days; default 3600.
    pub ttl_seconds: Option<i64>,
    /// How many nodes the code registers, 1 to 1000; default 1.
    pub uses: Option<i64>,
    /// Admins only: make the code for this operator.
    pub operator_id: Option<String>,
}

/// An open code, as listed (never the code itself).
#[derive(Serialize, utoipa::ToSchema)]
pub struct EnrollmentView {
    pub enrollment_id: String,
    pub operator_id: String,
    pub name: Option<String>,
    pub pool_id: Option<String>,
    pub payout_address: Option<String>,
    pub created_at: String,
    pub expires_at: String,
    pub uses: u32,
    pub uses_left: u32,
}

impl From<&Enrollment> for EnrollmentView {
    fn from(e: &Enrollment) -> Self {
        Self {
            enrollment_id: e.enrollment_id.clone(),
            operator_id: e.operator_id.clone(),
            name: e.name.clone(),
            pool_id: e.pool_id.clone(),
            payout_address: e.payout_address.clone(),
            created_at: rfc3339_us(e.created_at_us),
            expires_at: rfc3339_us(e.expires_at_us),
            uses: e.uses,
            uses_left: e.uses_left,
        }
    }
}

/// The answer to a new code: the listed fields, the code (shown this once) and the
/// fingerprint of the certificate the service serves, for the node to pin.
#[derive(Serialize, utoipa::ToSchema)]
pub struct CreatedEnrollment {
    #[serde(flatten)]
    pub enrollment: EnrollmentView,
    pub code: String,
    /// `sha256:<hex>` of the serving certificate's DER; null when serving plain HTTP.
    pub tls_fingerprint: Option<String>,
}

fn operator_for(caller: &Caller, asked: Option<String>) -> ApiResult<String> {
    match (caller.role, asked) {
        (Role::Node, _) => Err(ApiError::forbidden("nodes cannot make enrolment codes")),
        (Role::Admin, Some(op)) => {
            if is_valid_subject(&op) {
                Ok(op)
            } else {
                Err(ApiError::validation("operator_id is not a valid subject"))
            }
        }
        (Role::Operator, Some(op)) if op != caller.subject => Err(ApiError::forbidden(
            "operators make enrolment codes for themselves only",
        )),
        _ => Ok(caller.subject.clone()),
    }
}

/// Make an enrolment code (operator, admin). The code is shown once.
#[utoipa::path(post, operation_id = "enrollments_create", path = "/api/v1/enrollments", tag = "enrollments",
    request_body = CreateEnrollmentRequest,
    responses((status = 201, body = CreatedEnrollment), (status = 400, body = crate::error::Problem),
        (status = 404, description = "no such pool", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateEnrollmentRequest>,
) -> ApiResult<Response> {
    let operator_id = operator_for(&caller, req.operator_id)?;
    let name = req
        .name
        .map(|n| validate_text("name", &n).map_err(ApiError::validation))
        .transpose()?;
    let pool_id = match req.pool_id {
        Some(p) if !is_valid_id("pool", &p) => return Err(ApiError::not_found("pool", &p)),
        other => other,
    };
    let payout_address = checked_address(req.payout_address)?;
    let ttl_seconds = checked_ttl(req.ttl_seconds).map_err(ApiError::validation)?;
    let uses = checked_uses(req.uses).map_err(ApiError::validation)?;
    let (enrollment, code) = enrollments::create(
        &app,
        caller.actor(),
        NewEnrollment {
            operator_id,
            name,
            pool_id,
            payout_address,
            ttl_seconds,
            uses,
        },
    )
    .await?;
    Ok(created(CreatedEnrollment {
        enrollment: EnrollmentView::from(&enrollment),
        code,
        tls_fingerprint: app.tls_fingerprint.clone(),
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
pub struct EnrollmentFilters {
    /// Admins only: one operator's codes.
    pub operator_id: Option<String>,
}

/// List open codes (operator: own; admin: all, or one operator's). Never the codes.
#[utoipa::path(get, operation_id = "enrollments_list", path = "/api/v1/enrollments", tag = "enrollments",
    params(PageParams, EnrollmentFilters),
    responses((status = 200, body = ListPage<EnrollmentView>)),
    security(("bearer" = [])))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(filters): ApiQuery<EnrollmentFilters>,
) -> ApiResult<Json<ListPage<EnrollmentView>>> {
    let limit = page.limit()?;
    let after = page.after()?;
    let only = match (caller.role, filters.operator_id.filter(|o| !o.is_empty())) {
        (Role::Node, _) => return Err(ApiError::forbidden("nodes have no enrolment codes")),
        (Role::Admin, asked) => asked,
        (Role::Operator, Some(op)) if op != caller.subject => {
            return Err(ApiError::forbidden("operators see their own codes only"))
        }
        (Role::Operator, _) => Some(caller.subject.clone()),
    };
    let now = app.clock.now_us();
    let page = app
        .store
        .reader()?
        .enrollments(after.as_deref(), limit, |e| {
            e.is_open(now) && only.as_ref().is_none_or(|op| &e.operator_id == op)
        })?;
    Ok(Json(ListPage::new(
        page.items.iter().map(EnrollmentView::from).collect(),
        page.next,
    )))
}

/// Withdraw an open code (its operator, an admin).
#[utoipa::path(delete, operation_id = "enrollments_withdraw", path = "/api/v1/enrollments/{enrollment_id}", tag = "enrollments",
    params(("enrollment_id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn withdraw(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(enrollment_id): ApiPath<String>,
) -> ApiResult<Response> {
    if caller.role == Role::Node {
        return Err(ApiError::forbidden("nodes have no enrolment codes"));
    }
    if !is_valid_id("enr", &enrollment_id) {
        return Err(ApiError::not_found("enrollment", &enrollment_id));
    }
    enrollments::withdraw(&app, caller.actor(), caller.is_admin(), enrollment_id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RedeemRequest {
    /// The enrolment code, as shown when it was made.
    pub code: String,
    /// Standard base64 of the node's 32-byte Ed25519 public key.
    pub public_key: String,
    /// The node's name (default: the code's name, else one made from the code's id).
    pub name: Option<String>,
}

/// Register a node with an enrolment code (no token). An unknown, used-up, withdrawn or
/// expired code: 401 `invalid-enrollment-code`, the same for each.
#[utoipa::path(post, operation_id = "enrollments_redeem", path = "/api/v1/enrollments/redeem", tag = "enrollments",
    request_body = RedeemRequest,
    responses((status = 201, body = NodeView), (status = 400, body = crate::error::Problem),
        (status = 401, description = "invalid-enrollment-code", body = crate::error::Problem),
        (status = 409, description = "duplicate-public-key, pool-full", body = crate::error::Problem),
        (status = 422, description = "operator-quota", body = crate::error::Problem)))]
pub async fn redeem(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<RedeemRequest>,
) -> ApiResult<Response> {
    let public_key = parse_public_key(&req.public_key).map_err(ApiError::validation)?;
    let name = req
        .name
        .map(|n| validate_text("name", &n).map_err(ApiError::validation))
        .transpose()?;
    // A code of absurd length is no code: the same answer, without hashing megabytes.
    if req.code.len() > 256 {
        return Err(invalid_code());
    }
    let node = enrollments::redeem(&app, req.code, public_key, name).await?;
    Ok(created(NodeView::from(&node)))
}
