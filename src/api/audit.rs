//! `GET /api/v1/audit` (admin): the hash-chained audit log, oldest first.

use axum::extract::State;
use axum::Json;
use serde::Serialize;

use super::auth::Caller;
use super::extract::ApiQuery;
use super::pagination::{ListPage, PageParams};
use crate::app::AppState;
use crate::domain::audit::AuditEvent;
use crate::domain::timefmt::rfc3339_us;
use crate::error::{ApiError, ApiResult};

#[derive(Serialize, utoipa::ToSchema)]
pub struct ActorView {
    pub subject: String,
    pub role: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct AuditEventView {
    pub seq: u64,
    pub at: String,
    pub actor: ActorView,
    pub action: String,
    pub target: String,
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    /// Lowercase hex; null for the first event.
    pub prev_hash: Option<String>,
    /// `SHA-256("lucid-audit-v1|{seq}|{at}|{subject}|{role}|{action}|{target}|{detail}|{prev_hash}")`
    /// with `detail` as compact JSON (`detail_json`) and an absent prev_hash empty.
    pub hash: String,
    /// The exact detail text the hash covers.
    pub detail_json: String,
}

impl From<AuditEvent> for AuditEventView {
    fn from(e: AuditEvent) -> Self {
        Self {
            seq: e.seq,
            at: rfc3339_us(e.at_us),
            actor: ActorView {
                subject: e.actor_subject,
                role: e.actor_role,
            },
            action: e.action,
            target: e.target,
            detail: serde_json::from_str(&e.detail).unwrap_or(serde_json::Value::Null),
            prev_hash: e.prev_hash.map(hex::encode),
            hash: hex::encode(e.hash),
            detail_json: e.detail,
        }
    }
}

/// The audit log (admin).
#[utoipa::path(get, operation_id = "audit_list", path = "/api/v1/audit", tag = "audit",
    params(PageParams),
    responses((status = 200, body = ListPage<AuditEventView>), (status = 403, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<ListPage<AuditEventView>>> {
    caller.require_admin()?;
    let after = match page.after()? {
        None => 0,
        Some(s) => s
            .parse::<u64>()
            .map_err(|_| ApiError::validation("cursor is not one this service issued"))?,
    };
    let result = app.store.reader()?.audit(after, page.limit()?)?;
    Ok(Json(ListPage::new(
        result.items.into_iter().map(AuditEventView::from).collect(),
        result.next,
    )))
}
