//! PoOT proofs: read a node's proofs, and close finished epochs on demand.

use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::Caller;
use super::extract::{optional_json_object, ApiPath, ApiQuery};
use super::nodes::visible_node;
use super::pagination::{ListPage, PageParams};
use crate::app::heavy::heavy_read;
use crate::app::poot::close_due_epochs;
use crate::app::AppState;
use crate::domain::proof::ProofDocument;
use crate::domain::role::Role;
use crate::error::{ApiError, ApiResult};
use crate::store::queries::Reader;

/// Most proofs one `calculate` answer carries.
const MAX_PROOFS_IN_ANSWER: usize = 500;

fn document(reader: &Reader, node_id: &str, epoch: u64) -> ApiResult<Option<ProofDocument>> {
    let Some(proof) = reader.proof(node_id, epoch)? else {
        return Ok(None);
    };
    let record = reader
        .epoch(epoch)?
        .ok_or_else(|| ApiError::unavailable(format!("epoch {epoch} has proofs but no record")))?;
    Ok(Some(proof.document(&record)))
}

#[derive(Deserialize, utoipa::IntoParams)]
// Query-string parameters, optional (utoipa would document them as path parameters).
#[into_params(parameter_in = Query)]
pub struct ProofQuery {
    /// One epoch instead of the latest.
    pub epoch: Option<u64>,
}

/// A node's latest proof, or the proof of `?epoch=`.
#[utoipa::path(get, operation_id = "poot_get", path = "/api/v1/poot/{node_id}", tag = "poot",
    params(("node_id" = String, Path), ProofQuery),
    responses((status = 200, body = ProofDocument), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn get_proof(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(node_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ProofQuery>,
) -> ApiResult<Json<ProofDocument>> {
    let node = visible_node(&app, &caller, &node_id)?;
    let epoch = match q.epoch {
        Some(e) => e,
        None => node.last_proof.map(|(e, _)| e).ok_or_else(|| {
            ApiError::new(
                axum::http::StatusCode::NOT_FOUND,
                "not-found",
                format!("node {node_id} has no proof yet"),
            )
        })?,
    };
    let reader = app.store.reader()?;
    if let Some(doc) = document(&reader, &node_id, epoch)? {
        return Ok(Json(doc));
    }
    if let Some(day) = reader.rolled_up_day_of(&node_id, epoch)? {
        return Err(expired(&node_id, epoch, day));
    }
    Err(ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "not-found",
        format!("node {node_id} has no proof for epoch {epoch}"),
    ))
}

/// 410 for a proof past `PROOF_RETENTION`, naming the day whose record holds it.
fn expired(node_id: &str, epoch: u64, day: u32) -> ApiError {
    let date = crate::domain::day::date(day);
    ApiError::new(
        axum::http::StatusCode::GONE,
        "proof-expired",
        format!(
            "the proof of {node_id} for epoch {epoch} is past PROOF_RETENTION and rolled up into its daily record of {date} (GET /api/v1/poot/{node_id}/days)"
        ),
    )
}

/// A node's daily records (its proofs past `PROOF_RETENTION`, rolled up one record per
/// UTC day), newest first, each with its inclusion path to the day's signed root.
#[utoipa::path(get, operation_id = "poot_days", path = "/api/v1/poot/{node_id}/days", tag = "poot",
    params(("node_id" = String, Path), PageParams),
    responses((status = 200, body = ListPage<crate::domain::day::DayDocument>), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn days(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(node_id): ApiPath<String>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<ListPage<crate::domain::day::DayDocument>>> {
    visible_node(&app, &caller, &node_id)?;
    let before = match page.after()? {
        None => None,
        Some(s) => Some(
            s.parse::<u32>()
                .map_err(|_| ApiError::validation("cursor is not one this service issued"))?,
        ),
    };
    let limit = page.limit()?;
    heavy_read(&app, move |app| {
        let result = app.store.reader()?.day_history(&node_id, before, limit)?;
        let items = result
            .items
            .iter()
            .map(|(record, root, path)| record.document(root, path))
            .collect();
        Ok(Json(ListPage::new(items, result.next)))
    })
    .await
}

/// A node's proofs, newest first.
#[utoipa::path(get, operation_id = "poot_history", path = "/api/v1/poot/{node_id}/history", tag = "poot",
    params(("node_id" = String, Path), PageParams),
    responses((status = 200, body = ListPage<ProofDocument>), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn history(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(node_id): ApiPath<String>,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<ListPage<ProofDocument>>> {
    visible_node(&app, &caller, &node_id)?;
    let before = match page.after()? {
        None => None,
        Some(s) => Some(
            s.parse::<u64>()
                .map_err(|_| ApiError::validation("cursor is not one this service issued"))?,
        ),
    };
    let limit = page.limit()?;
    heavy_read(&app, move |app| {
        let reader = app.store.reader()?;
        let result = reader.proof_history(&node_id, before, limit)?;
        let mut items = Vec::with_capacity(result.items.len());
        for proof in result.items {
            let record = reader
                .epoch(proof.epoch)?
                .ok_or_else(|| ApiError::unavailable("epoch record missing"))?;
            items.push(proof.document(&record));
        }
        Ok(Json(ListPage::new(items, result.next)))
    })
    .await
}

#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CalculateRequest {
    /// Only this node's proofs in the answer.
    pub node_id: Option<String>,
    /// Proofs of this epoch instead of the epochs closed now.
    pub epoch: Option<u64>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct CalculateResponse {
    pub epochs_closed: Vec<u64>,
    pub proofs: Vec<ProofDocument>,
}

/// Close finished epochs now (never an open one) and return the proofs asked for.
/// Idempotent. Operators for their own nodes, admins for all.
#[utoipa::path(post, operation_id = "poot_calculate", path = "/api/v1/poot/calculate", tag = "poot",
    request_body = CalculateRequest,
    responses((status = 200, body = CalculateResponse), (status = 403, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn calculate(
    State(app): State<AppState>,
    caller: Caller,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> ApiResult<Json<CalculateResponse>> {
    let body = body.map_err(|rejection| {
        if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "payload-too-large",
                "the request body is larger than the limit",
            )
        } else {
            ApiError::validation(rejection.body_text())
        }
    })?;
    if caller.role == Role::Node {
        return Err(ApiError::forbidden("operators and admins calculate PoOT"));
    }
    let req: CalculateRequest = optional_json_object(&body)?;
    if let Some(id) = &req.node_id {
        visible_node(&app, &caller, id)?;
    }
    let epochs_closed = close_due_epochs(&app).await?;
    let reader = app.store.reader()?;
    let epochs: Vec<u64> = match req.epoch {
        Some(e) => vec![e],
        None if req.node_id.is_some() => Vec::new(),
        None => epochs_closed.clone(),
    };
    let mut proofs = Vec::new();
    match &req.node_id {
        Some(id) => {
            let wanted = match req.epoch {
                Some(e) => Some(e),
                None => reader.node(id)?.and_then(|n| n.last_proof).map(|(e, _)| e),
            };
            if let Some(e) = wanted {
                proofs.extend(document(&reader, id, e)?);
            }
        }
        None => {
            let node_ids: Vec<String> = match caller.role {
                Role::Admin => reader.node_ids_where(|_| true)?,
                _ => reader.operator_node_ids(&caller.subject)?,
            };
            'outer: for e in &epochs {
                for id in &node_ids {
                    if proofs.len() == MAX_PROOFS_IN_ANSWER {
                        break 'outer;
                    }
                    proofs.extend(document(&reader, id, *e)?);
                }
            }
        }
    }
    Ok(Json(CalculateResponse {
        epochs_closed,
        proofs,
    }))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct HeartbeatRecord {
    pub received_at: String,
    pub seq: u64,
    /// The canonical bytes the node signed (see Heartbeats in API.md).
    pub signed: String,
    /// Base64 of the node's 64-byte signature.
    pub signature: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct EpochHeartbeats {
    pub node_id: String,
    pub epoch: u64,
    pub window_start: String,
    pub window_end: String,
    /// Merkle root over the heartbeats below (equals the proof's `heartbeats_root`).
    pub heartbeats_root: String,
    pub heartbeats: Vec<HeartbeatRecord>,
}

/// The raw heartbeats behind a node's proof, so a node can check its own proof against
/// what it sent. Available until the heartbeats are pruned (HEARTBEAT_RETENTION).
#[utoipa::path(get, operation_id = "poot_heartbeats", path = "/api/v1/poot/{node_id}/heartbeats", tag = "poot",
    params(("node_id" = String, Path), ProofQuery),
    responses((status = 200, body = EpochHeartbeats), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn heartbeats(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(node_id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ProofQuery>,
) -> ApiResult<Json<EpochHeartbeats>> {
    use crate::domain::merkle::{leaf_hash, root};
    use crate::domain::poot::epoch_window;
    use crate::domain::timefmt::rfc3339_us;
    use crate::store::tables::HEARTBEATS_PRUNED_BEFORE_KEY;
    use base64::Engine;

    let node = visible_node(&app, &caller, &node_id)?;
    let not_found =
        |detail: String| ApiError::new(axum::http::StatusCode::NOT_FOUND, "not-found", detail);
    let epoch = match q.epoch.or(node.last_proof.map(|(e, _)| e)) {
        Some(e) => e,
        None => return Err(not_found(format!("node {node_id} has no proof yet"))),
    };
    heavy_read(&app, move |app| {
        let reader = app.store.reader()?;
        let record = reader
            .epoch(epoch)?
            .ok_or_else(|| not_found(format!("epoch {epoch} is not closed")))?;
        let (start, end) = epoch_window(epoch, record.length_us);
        if reader.meta_u64(HEARTBEATS_PRUNED_BEFORE_KEY)?.unwrap_or(0) > start {
            return Err(not_found(format!(
                "the raw heartbeats of epoch {epoch} were pruned (HEARTBEAT_RETENTION)"
            )));
        }
        let mine = reader.node_heartbeats_between(&node_id, start, end)?;
        let leaves: Vec<_> = mine
            .iter()
            .map(|(_, hb)| leaf_hash(&hb.leaf_data()))
            .collect();
        Ok(Json(EpochHeartbeats {
            node_id,
            epoch,
            window_start: rfc3339_us(start),
            window_end: rfc3339_us(end),
            heartbeats_root: hex::encode(root(&leaves)),
            heartbeats: mine
                .into_iter()
                .map(|(at, hb)| HeartbeatRecord {
                    received_at: rfc3339_us(at),
                    seq: hb.seq,
                    signature: base64::engine::general_purpose::STANDARD.encode(&hb.signature),
                    signed: hb.canonical,
                })
                .collect(),
        }))
    })
    .await
}
