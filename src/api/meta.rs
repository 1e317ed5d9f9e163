//! Health, metrics and public keys: no authentication.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Serialize;

use crate::app::AppState;
use crate::crypto::keys::key_id;
use crate::domain::timefmt::rfc3339_us;
use crate::store::tables::POOLS_COUNTER;

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `healthy` or `unhealthy`.
    pub status: &'static str,
    pub service: &'static str,
    pub version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The MongoDB mirror (only when MONGODB_URI is set): enabled, connected, outbox,
    /// last_sync_at, reason. An unreachable MongoDB does not make the service unhealthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub mirror: Option<serde_json::Value>,
    /// PoOT epochs: the length, and the last closed epoch and when it closed (null before
    /// the first one). Absent when storage is unusable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub poot: Option<PootStatus>,
    /// The database file's size and the free space of its filesystem.
    pub storage: StorageStatus,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct StorageStatus {
    pub file_bytes: u64,
    pub free_bytes: u64,
    /// Free share of the filesystem, 0 to 1.
    pub free_ratio: f64,
    /// True while free space is under `STORAGE_MIN_FREE`: heartbeats are refused (507).
    pub below_min_free: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PootStatus {
    pub epoch_length_seconds: u64,
    pub last_closed_epoch: Option<u64>,
    pub closed_at: Option<String>,
}

/// Liveness and storage health.
#[utoipa::path(get, operation_id = "health", path = "/health", tag = "meta",
    responses((status = 200, body = Health), (status = 503, body = Health)))]
pub async fn health(State(app): State<AppState>) -> Response {
    let check = app.store.reader().and_then(|r| {
        r.counter(POOLS_COUNTER)?;
        r.last_epoch()
    });
    let (code, status, reason, poot) = match check {
        Ok(last) => {
            let poot = PootStatus {
                epoch_length_seconds: app.config.poot_calculation_interval.as_secs(),
                last_closed_epoch: last.as_ref().map(|e| e.epoch),
                closed_at: last.as_ref().map(|e| rfc3339_us(e.closed_at_us)),
            };
            (StatusCode::OK, "healthy", None, Some(poot))
        }
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "unhealthy",
            Some(e.to_string()),
            None,
        ),
    };
    let space = app.store.space.report();
    let storage = StorageStatus {
        file_bytes: space.file_bytes,
        free_bytes: space.free_bytes,
        free_ratio: (space.free_ratio() * 10_000.0).round() / 10_000.0,
        below_min_free: app.store.space.below_floor().is_some(),
    };
    (
        code,
        Json(Health {
            status,
            service: crate::SERVICE_NAME,
            version: crate::VERSION,
            reason,
            mirror: app.metrics.mirror.health(),
            poot,
            storage,
        }),
    )
        .into_response()
}

/// Prometheus text format.
#[utoipa::path(get, operation_id = "metrics", path = "/metrics", tag = "meta",
    responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(State(app): State<AppState>) -> Response {
    let reader = app.store.reader().ok();
    app.metrics.observe_storage(&app.store.space.report());
    let (auth_keys, token_keys) = app.rate_limits.key_counts();
    for (limit, keys) in [("auth", auth_keys), ("token", token_keys)] {
        app.metrics
            .rate_limit_keys
            .with_label_values(&[limit])
            .set(keys as i64);
    }
    let body = app.metrics.render(reader.as_ref(), app.writer.queue_len());
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct PublicKey {
    pub alg: &'static str,
    /// Standard base64 of the raw 32-byte Ed25519 public key (absent for HS256).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Keys {
    pub jwt: PublicKey,
    pub proof: PublicKey,
}

/// The service's public keys: JWT verification and PoOT proof signatures.
#[utoipa::path(get, operation_id = "keys", path = "/api/v1/keys", tag = "meta", responses((status = 200, body = Keys)))]
pub async fn keys(State(app): State<AppState>) -> Json<Keys> {
    let jwt_public = app.keys.jwt.verifying_key();
    let proof_public = app.keys.proof.verifying_key();
    let jwt = match app.tokens.algorithm_name() {
        "HS256" => PublicKey {
            alg: "HS256",
            public_key: None,
            key_id: None,
        },
        _ => PublicKey {
            alg: "EdDSA",
            public_key: Some(B64.encode(jwt_public.as_bytes())),
            key_id: Some(key_id(&jwt_public)),
        },
    };
    Json(Keys {
        jwt,
        proof: PublicKey {
            alg: "Ed25519",
            public_key: Some(B64.encode(proof_public.as_bytes())),
            key_id: Some(key_id(&proof_public)),
        },
    })
}
