//! `GET /api/v1/audit` (admin): the hash-chained audit log, oldest first.

use axum::extract::State;
use axum::Json;

use super::auth::Caller;
use super::extract::ApiQuery;
use super::pagination::{ListPage, PageParams};
use crate::app::heavy::heavy_read;
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::views::AuditEventView;

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
    let limit = page.limit()?;
    heavy_read(&app, move |app| {
        let result = app.store.reader()?.audit(after, limit)?;
        Ok(Json(ListPage::new(
            result.items.into_iter().map(AuditEventView::from).collect(),
            result.next,
        )))
    })
    .await
}
