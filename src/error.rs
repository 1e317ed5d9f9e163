//! The one error type of the service and its single mapping to HTTP
//! (`application/problem+json`, RFC 9457).
//!
//! Every failure a client can see is an [`ApiError`]: a stable `type` slug, a status and a
//! human-readable detail. Handlers return it with `?`; nothing else turns errors into
//! responses, so the shape is the same everywhere.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::refusal::{Refusal, RefusalKind};
use crate::store::error::StoreError;
use crate::store::writer::JobError;

/// An error answered to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable slug, e.g. `pool-full`; clients switch on it.
    pub kind: &'static str,
    pub detail: String,
    /// Seconds for a `Retry-After` header (503, 507 and 429 only).
    pub retry_after: Option<u64>,
    /// The storage failure this error was made from, if any: the writer aborts the batch
    /// of a job that returns it (see `store::writer::JobError`).
    pub storage: Option<StoreError>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.kind,
            self.status.as_u16(),
            self.detail
        )
    }
}

impl std::error::Error for ApiError {}

/// Shorthand for results whose error is an [`ApiError`].
pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            detail: detail.into(),
            retry_after: None,
            storage: None,
        }
    }

    /// 400: malformed or invalid input.
    pub fn validation(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "validation", detail)
    }

    /// 401: no token, or a token that does not verify.
    pub fn unauthorized(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, kind, detail)
    }

    /// 403: a valid token whose holder may not do this.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    /// 404: unknown id, also for ids the caller may not see.
    pub fn not_found(what: &str, id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            format!("no {what} with id {id:?}"),
        )
    }

    /// 409: conflicts with the current state.
    pub fn conflict(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, kind, detail)
    }

    /// 422: well-formed but refused by a rule.
    pub fn unprocessable(kind: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, kind, detail)
    }

    /// 429 with `Retry-After` (whole seconds, at least 1): too soon; try again then.
    pub fn too_many_requests(
        kind: &'static str,
        detail: impl Into<String>,
        retry_after_secs: u64,
    ) -> Self {
        Self {
            retry_after: Some(retry_after_secs.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, kind, detail)
        }
    }

    /// 503 with `Retry-After`: the writer queue is full.
    pub fn overloaded() -> Self {
        Self {
            retry_after: Some(1),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the write queue is full; retry shortly",
            )
        }
    }

    /// 503: storage failed or the service is shutting down. The request had no effect.
    pub fn unavailable(detail: impl Into<String>) -> Self {
        Self {
            retry_after: Some(5),
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", detail)
        }
    }

    /// True for errors that mean storage itself failed (the writer aborts the batch).
    pub fn is_storage_failure(&self) -> bool {
        self.storage.is_some()
    }

    /// Nothing was wrong with the request: storage failed or was full, or the writer was
    /// busy or stopping. Retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        self.storage.is_some()
            || self.status == StatusCode::SERVICE_UNAVAILABLE
            || self.status == StatusCode::INSUFFICIENT_STORAGE
    }

    /// 507 with `Retry-After`: the disk is full (or under `STORAGE_MIN_FREE`).
    pub fn insufficient_storage(detail: impl Into<String>) -> Self {
        Self {
            retry_after: Some(30),
            ..Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient-storage",
                detail,
            )
        }
    }

    fn title(&self) -> &'static str {
        match self.kind {
            "validation" => "Invalid request",
            "payload-too-large" => "Request body too large",
            "missing-token" | "invalid-token" | "token-expired" | "token-revoked" => {
                "Not authenticated"
            }
            "invalid-signature" => "Invalid signature",
            "invalid-challenge" => "Invalid or expired challenge",
            "forbidden" => "Not allowed",
            "not-found" => "Not found",
            "proof-expired" => "Proof rolled up into a daily record",
            "pool-full" => "Pool is full",
            "duplicate-public-key" => "Public key already registered",
            "duplicate-pool-name" => "Pool name already taken",
            "invalid-state" => "Not allowed in the current state",
            "invalid-status-change" => "Status change not allowed",
            "replayed-heartbeat" => "Heartbeat replayed",
            "heartbeat-too-frequent" => "Heartbeats too frequent",
            "rate-limited" => "Too many requests",
            "operator-quota" => "Operator's node quota reached",
            "invalid-enrollment-code" => "Invalid enrolment code",
            "duplicate-tx-hash" => "Receipt already used",
            "negative-balance" => "Balance would go negative",
            "node-inactive" => "Node is suspended or deregistered",
            "webhook-address-refused" => "Webhook address refused",
            "overloaded" => "Service overloaded",
            "insufficient-storage" => "Storage full",
            "storage" | "unavailable" => "Service unavailable",
            _ => "Request failed",
        }
    }
}

/// The JSON body of a problem response.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// Stable slug per error kind, e.g. `pool-full`.
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Problem {
            kind: self.kind.to_string(),
            title: self.title().to_string(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
        };
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (self.status, bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "the request body is larger than the limit",
            );
        }
        Self::validation(rejection.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::validation(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::validation(rejection.body_text())
    }
}

/// The one place a store error becomes an HTTP error. Storage failures are logged with
/// their detail; clients get a sentence without redb's text.
impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Refused(r) => r.into(),
            StoreError::Overloaded => Self::overloaded(),
            StoreError::Unavailable(detail) => Self::unavailable(detail),
            StoreError::Full(ref detail) => {
                tracing::warn!(error = %detail, "storage full: write refused");
                Self {
                    storage: Some(e.clone()),
                    ..Self::insufficient_storage(
                        "the appliance's storage is full; the write had no effect, retry later",
                    )
                }
            }
            StoreError::Io(ref detail) | StoreError::Corrupt(ref detail) => {
                tracing::error!(error = %detail, "storage failure");
                Self {
                    retry_after: Some(5),
                    storage: Some(e.clone()),
                    ..Self::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "storage",
                        "a storage failure stopped the write; it had no effect, retry later",
                    )
                }
            }
        }
    }
}

impl From<Refusal> for ApiError {
    fn from(r: Refusal) -> Self {
        let status = match r.kind {
            RefusalKind::Invalid => StatusCode::BAD_REQUEST,
            RefusalKind::NotFound => StatusCode::NOT_FOUND,
            RefusalKind::Conflict => StatusCode::CONFLICT,
            RefusalKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
        };
        Self::new(status, r.slug, r.detail)
    }
}

impl JobError for ApiError {
    fn storage_failure(&self) -> Option<StoreError> {
        self.storage.clone()
    }
}

/// redb errors met outside the store (backups): through the store's classification.
macro_rules! storage_error_from {
    ($($t:ty),*) => {$(
        impl From<$t> for ApiError {
            fn from(e: $t) -> Self {
                StoreError::from(e).into()
            }
        }
    )*};
}
storage_error_from!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overloaded_carries_retry_after_header() {
        let response = ApiError::overloaded().into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }

    #[test]
    fn too_many_requests_asks_to_wait_at_least_a_second() {
        let response =
            ApiError::too_many_requests("heartbeat-too-frequent", "x", 0).into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    }

    #[test]
    fn storage_errors_are_flagged_for_batch_abort() {
        let e: ApiError = redb::StorageError::Corrupted("x".into()).into();
        assert!(e.is_storage_failure());
        assert!(!ApiError::validation("x").is_storage_failure());
    }

    #[test]
    fn a_full_disk_answers_507_with_retry_after_and_no_redb_text() {
        let e: ApiError = redb::StorageError::Io(std::io::Error::from_raw_os_error(28)).into();
        assert!(e.is_storage_failure());
        let response = e.into_response();
        assert_eq!(response.status(), StatusCode::INSUFFICIENT_STORAGE);
        assert!(response.headers().contains_key(header::RETRY_AFTER));
    }

    #[test]
    fn storage_failures_reach_clients_without_the_underlying_text() {
        let e: ApiError = redb::StorageError::Corrupted("page 17 checksum".into()).into();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(!e.detail.contains("page 17"), "{}", e.detail);
    }
}
