//! `POST /api/v1/backup` (admin): a consistent copy of the database, made inside the
//! service through one read transaction (see `store::snapshot`) and streamed back as the
//! redb file. The route sits outside the request timeout: a copy takes as long as the
//! database is large.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::auth::Caller;
use crate::app::AppState;
use crate::error::{ApiError, ApiResult};
use crate::store::snapshot::backup_for_download;

/// Header with the number of entries in a streamed backup, so the client can check it.
pub const ENTRIES_HEADER: &str = "x-lucid-backup-entries";

/// One backup at a time (each needs a database's worth of free space).
static RUNNING: AtomicBool = AtomicBool::new(false);

struct Running;

impl Running {
    fn acquire() -> ApiResult<Self> {
        RUNNING
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| Running)
            .map_err(|_| {
                ApiError::conflict(
                    "backup-in-progress",
                    "another backup is being made; retry when it is done",
                )
            })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING.store(false, Ordering::Release);
    }
}

/// Sets the copy's cancel flag when the request goes away (client gone, shutdown).
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Make and download a backup (admin).
#[utoipa::path(post, operation_id = "backup_create", path = "/api/v1/backup", tag = "admin",
    responses(
        (status = 200, description = "The database copy (a redb file); header x-lucid-backup-entries gives its entry count", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 403, body = crate::error::Problem),
        (status = 409, description = "another backup is running", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn create(State(app): State<AppState>, caller: Caller) -> ApiResult<Response> {
    caller.require_admin()?;
    let running = Running::acquire()?;
    let cancel = Arc::new(AtomicBool::new(false));
    let _cancel_on_drop = CancelOnDrop(cancel.clone());
    let db = app.store.db.current()?;
    let data_dir = app.config.data_dir.clone();
    tracing::info!(subject = %caller.subject, "backup: started");
    let made = tokio::task::spawn_blocking(move || backup_for_download(&db, &data_dir, cancel))
        .await
        .map_err(|e| ApiError::unavailable(format!("the backup task failed: {e}")))?;
    drop(running);
    let (file, stats) = made.map_err(|e| {
        tracing::warn!(error = %e, "backup: failed");
        ApiError::unavailable(format!("the backup failed: {e}"))
    })?;
    tracing::info!(
        entries = stats.entries,
        bytes = stats.bytes,
        "backup: copied, sending"
    );
    let actor = caller.actor();
    app.writer
        .write(move |b| {
            b.audit(
                &actor,
                "backup.create",
                "database",
                json!({"entries": stats.entries, "bytes": stats.bytes}),
            )
            .map_err(ApiError::from)
        })
        .await?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(
        tokio::fs::File::from_std(file),
        256 * 1024,
    ));
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(stats.bytes));
    headers.insert(ENTRIES_HEADER, HeaderValue::from(stats.entries));
    headers.insert(
        header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"lucid-backup.redb\""),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
