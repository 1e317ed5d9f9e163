//! `POST /api/v1/nodes/{node_id}/heartbeat`: a signed heartbeat from the node itself,
//! answered 202 only once it is durably stored.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::auth::Caller;
use super::extract::{ApiJson, ApiPath};
use crate::app::monitor::record_transition;
use crate::app::AppState;
use crate::domain::heartbeat::{canonical_bytes, paced, StoredHeartbeat, MAX_NUMBER_TEXT};
use crate::domain::ids::is_valid_id;
use crate::domain::node::NodeStatus;
use crate::domain::role::Role;
use crate::domain::timefmt::{parse_rfc3339_us, rfc3339_us};
use crate::error::{ApiError, ApiResult};
use crate::store::Urgency;

/// The numbers are kept as the node wrote them: the signature covers their text.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// Strictly increasing per node.
    #[schema(value_type = u64)]
    pub seq: Box<RawValue>,
    /// The node's clock (RFC 3339); informational, never trusted for time accounting.
    pub sent_at: String,
    #[schema(value_type = u64)]
    pub sessions_active: Box<RawValue>,
    #[schema(value_type = u64)]
    pub bytes_relayed: Box<RawValue>,
    #[schema(value_type = f64)]
    pub cpu_load: Box<RawValue>,
    #[schema(value_type = u64)]
    pub mem_used_mb: Box<RawValue>,
    /// Base64 Ed25519 over `lucid-hb-v1|{node_id}|{seq}|{sent_at}|{sessions_active}|{bytes_relayed}|{cpu_load}|{mem_used_mb}`.
    pub signature: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct HeartbeatAccepted {
    pub accepted: bool,
    pub received_at: String,
    pub status: NodeStatus,
    pub seq: u64,
}

/// Refuses a number whose raw text is longer than [`MAX_NUMBER_TEXT`].
fn short(field: &str, raw: &RawValue) -> ApiResult<()> {
    if raw.get().len() > MAX_NUMBER_TEXT {
        return Err(ApiError::validation(format!(
            "{field} is longer than {MAX_NUMBER_TEXT} characters"
        )));
    }
    Ok(())
}

fn whole(field: &str, raw: &RawValue) -> ApiResult<u64> {
    short(field, raw)?;
    raw.get()
        .parse::<u64>()
        .map_err(|_| ApiError::validation(format!("{field} must be a whole number >= 0")))
}

/// A validated heartbeat, before its receive time is stamped.
struct Checked {
    seq: u64,
    stored: StoredHeartbeat,
}

/// Largest accepted `seq` (2^53 - 1, exact in every JSON reader): a node that jumped to
/// u64::MAX would lock itself out for good.
pub const MAX_SEQ: u64 = (1 << 53) - 1;

fn check(node_id: &str, req: &HeartbeatRequest) -> ApiResult<Checked> {
    let seq = whole("seq", &req.seq)?;
    if seq > MAX_SEQ {
        return Err(ApiError::validation(format!(
            "seq must be at most {MAX_SEQ}"
        )));
    }
    let sessions_active = whole("sessions_active", &req.sessions_active)?;
    let bytes_relayed = whole("bytes_relayed", &req.bytes_relayed)?;
    let mem_used_mb = whole("mem_used_mb", &req.mem_used_mb)?;
    short("cpu_load", &req.cpu_load)?;
    let cpu_load: f64 = req
        .cpu_load
        .get()
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v >= 0.0 && *v <= 1_000_000.0)
        .ok_or_else(|| ApiError::validation("cpu_load must be a number >= 0"))?;
    if req.sent_at.len() > 64 || parse_rfc3339_us(&req.sent_at).is_none() {
        return Err(ApiError::validation("sent_at must be an RFC 3339 time"));
    }
    let signature = B64
        .decode(req.signature.trim())
        .ok()
        .filter(|s| s.len() == 64)
        .ok_or_else(|| {
            ApiError::unauthorized("invalid-signature", "signature must be 64 bytes of base64")
        })?;
    let canonical = canonical_bytes(
        node_id,
        req.seq.get(),
        &req.sent_at,
        req.sessions_active.get(),
        req.bytes_relayed.get(),
        req.cpu_load.get(),
        req.mem_used_mb.get(),
    );
    Ok(Checked {
        seq,
        stored: StoredHeartbeat {
            seq,
            canonical,
            signature,
            sessions_active,
            bytes_relayed,
            cpu_load,
            mem_used_mb,
        },
    })
}

/// Accept a signed heartbeat (the node's own token).
#[utoipa::path(post, operation_id = "nodes_heartbeat", path = "/api/v1/nodes/{node_id}/heartbeat", tag = "heartbeats",
    params(("node_id" = String, Path)),
    request_body = HeartbeatRequest,
    responses((status = 202, body = HeartbeatAccepted),
        (status = 401, description = "invalid-signature", body = crate::error::Problem),
        (status = 409, description = "replayed-heartbeat", body = crate::error::Problem),
        (status = 429, description = "heartbeat-too-frequent (with Retry-After)", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn heartbeat(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(node_id): ApiPath<String>,
    ApiJson(req): ApiJson<HeartbeatRequest>,
) -> ApiResult<Response> {
    let result = accept(&app, &caller, node_id, req).await;
    let outcome = match &result {
        Ok(_) => "accepted",
        Err(e) => e.kind,
    };
    app.metrics.heartbeats.with_label_values(&[outcome]).inc();
    result
}

async fn accept(
    app: &AppState,
    caller: &Caller,
    node_id: String,
    req: HeartbeatRequest,
) -> ApiResult<Response> {
    if !is_valid_id("node", &node_id) {
        return Err(ApiError::not_found("node", &node_id));
    }
    match caller.role {
        Role::Node if caller.subject == node_id => {}
        Role::Node => return Err(ApiError::not_found("node", &node_id)),
        _ => {
            return Err(ApiError::forbidden(
                "heartbeats come from the node itself (node token)",
            ))
        }
    }
    let checked = check(&node_id, &req)?;
    let node = app
        .store
        .reader()?
        .node(&node_id)?
        .ok_or_else(|| ApiError::not_found("node", &node_id))?;
    // Waits for the verifier thread, which checks the signatures waiting together in one
    // batch (see `app::verifier`); decides as `crypto::signatures::verify_signature_bytes` (the one nuance is
    // in `crypto::signatures::verify_signatures`).
    let hb = &checked.stored;
    if !app
        .verifier
        .verify(&node.public_key, hb.canonical.as_bytes(), &hb.signature)
        .await
    {
        return Err(ApiError::unauthorized(
            "invalid-signature",
            "the signature does not verify over the canonical heartbeat bytes with the node's key",
        ));
    }
    // A heartbeat lingers up to COMMIT_INTERVAL for companions (one durable commit for
    // many heartbeats is what keeps an SD card alive) and is answered after that commit.
    // Only a status change writes the node record; otherwise the row and the in-memory
    // liveness carry `seq` and the receive time (see `store::liveness`).
    // Pacing is decided here, in the writer, on receive stamps: two heartbeats sent at
    // once are judged one after the other, the second against the first's stamp even
    // while that one still lingers uncommitted (`b.node` carries staged liveness).
    let min_interval_us =
        u64::try_from(app.config.heartbeat_min_interval.as_micros()).unwrap_or(u64::MAX);
    let (received_at, status, seq, transition) = app
        .writer
        .write_with(Urgency::Linger, move |b| {
            let current = b
                .node(&node_id)?
                .ok_or_else(|| ApiError::not_found("node", &node_id))?;
            if !current.status.is_active() {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "node-inactive",
                    format!("node {node_id} is {}", current.status.as_str()),
                ));
            }
            if let Some(last) = current.last_seq {
                if checked.seq <= last {
                    return Err(ApiError::conflict(
                        "replayed-heartbeat",
                        format!(
                            "seq {} is not greater than the last accepted seq {last}",
                            checked.seq
                        ),
                    ));
                }
            }
            // Every stamp handed out later is at least `now`, so a heartbeat passing here
            // is stamped at least the interval after the last accepted one.
            if let Err(wait) = paced(current.last_heartbeat_at_us, b.now_us(), min_interval_us) {
                return Err(ApiError::too_many_requests(
                    "heartbeat-too-frequent",
                    format!(
                        "heartbeats of a node must be at least {} s apart; retry in {wait} s",
                        min_interval_us as f64 / 1e6
                    ),
                    wait,
                ));
            }
            let at = b.stamp_us();
            b.insert_heartbeat(at, &node_id, &checked.stored)?;
            b.stage_heartbeat(&node_id, checked.seq, at);
            let mut transition = None;
            if current.status != NodeStatus::Online {
                transition = Some(record_transition(
                    b,
                    &current,
                    NodeStatus::Online,
                    "heartbeat",
                )?);
                let mut next = current.clone();
                next.last_seq = Some(checked.seq);
                next.last_heartbeat_at_us = Some(at);
                next.status = NodeStatus::Online;
                b.put_node(&next, Some(&current))?;
            }
            Ok((at, NodeStatus::Online, checked.seq, transition))
        })
        .await?;
    if let Some(t) = transition {
        t.count(&app.metrics);
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(HeartbeatAccepted {
            accepted: true,
            received_at: rfc3339_us(received_at),
            status,
            seq,
        }),
    )
        .into_response())
}
