//! Enrolment codes: made by an operator, redeemed by a new node without any token. The
//! code is a secret shown once; only its hash is stored. Redeeming consumes one use in the
//! same writer transaction that registers the node, so a code can never register more
//! nodes than it has uses, however many redeem it at once.

use serde_json::json;

use super::registration::{self, Limits, NewNode};
use super::AppState;
use crate::clock::Micros;
use crate::domain::enrollment::{code_hash, new_code, Enrollment};
use crate::domain::ids::new_id;
use crate::domain::node::Node;
use crate::error::{ApiError, ApiResult};
use crate::store::{Actor, Batch};

/// How many expired codes one write removes at most (the rest go with the next).
const PRUNE_BATCH: usize = 100;

/// The one answer for a code that is unknown, used up, withdrawn or expired, so that
/// codes cannot be probed.
pub fn invalid_code() -> ApiError {
    ApiError::unauthorized(
        "invalid-enrollment-code",
        "the enrolment code is unknown, used up, withdrawn or expired",
    )
}

/// What an operator asks for, validated.
pub struct NewEnrollment {
    pub operator_id: String,
    pub name: Option<String>,
    pub pool_id: Option<String>,
    pub payout_address: Option<String>,
    pub ttl_seconds: u64,
    pub uses: u32,
}

/// Makes a code; returns the stored enrolment and the code (its only appearance).
pub async fn create(
    app: &AppState,
    actor: Actor,
    req: NewEnrollment,
) -> ApiResult<(Enrollment, String)> {
    let code = new_code();
    let hash = code_hash(&code);
    let enrollment = app
        .writer
        .write(move |b| {
            if let Some(pool_id) = &req.pool_id {
                if b.pool(pool_id)?.is_none() {
                    return Err(ApiError::not_found("pool", pool_id));
                }
            }
            let now = b.now_us();
            prune(b, now)?;
            let e = Enrollment {
                enrollment_id: new_id("enr"),
                code_hash: hash,
                operator_id: req.operator_id,
                name: req.name,
                pool_id: req.pool_id,
                payout_address: req.payout_address,
                created_at_us: now,
                expires_at_us: now.saturating_add(req.ttl_seconds.saturating_mul(1_000_000)),
                uses: req.uses,
                uses_left: req.uses,
            };
            b.put_enrollment(&e)?;
            // Never the code, nor its hash.
            b.audit(
                &actor,
                "enrollment.create",
                &e.enrollment_id,
                json!({"operator_id": e.operator_id, "pool_id": e.pool_id, "name": e.name,
                    "uses": e.uses, "expires_at_us": e.expires_at_us}),
            )?;
            Ok(e)
        })
        .await?;
    Ok((enrollment, code))
}

/// Removes expired codes (a bounded number per call), each with an audit event.
fn prune(b: &mut Batch<'_>, now: Micros) -> ApiResult<()> {
    for e in b.prune_expired_enrollments(now, PRUNE_BATCH)? {
        b.audit(
            &Actor::system(),
            "enrollment.expire",
            &e.enrollment_id,
            json!({"operator_id": e.operator_id, "uses_left": e.uses_left}),
        )?;
    }
    Ok(())
}

/// Removes expired codes; used by the timer so an unused table does not keep them. Reads
/// first: no write (and no commit to flash) when nothing expired.
pub async fn prune_expired(app: &AppState) -> ApiResult<()> {
    if !app
        .store
        .reader()?
        .any_expired_enrollment(app.clock.now_us())?
    {
        return Ok(());
    }
    app.writer
        .write(|b| {
            let now = b.now_us();
            prune(b, now)
        })
        .await
}

/// Withdraws an open code: its owner or an admin. Unknown (or another operator's) -> 404.
pub async fn withdraw(
    app: &AppState,
    actor: Actor,
    is_admin: bool,
    enrollment_id: String,
) -> ApiResult<()> {
    let subject = actor.subject.clone();
    app.writer
        .write(move |b| {
            let e = b
                .enrollment(&enrollment_id)?
                .filter(|e| is_admin || e.operator_id == subject)
                .ok_or_else(|| ApiError::not_found("enrollment", &enrollment_id))?;
            b.remove_enrollment(&e)?;
            b.audit(
                &actor,
                "enrollment.withdraw",
                &e.enrollment_id,
                json!({"operator_id": e.operator_id, "uses_left": e.uses_left}),
            )?;
            Ok(())
        })
        .await
}

/// `node-` and a few characters of the enrolment's id, for a node enrolled without a name.
fn default_name(enrollment_id: &str) -> String {
    let tail: String = enrollment_id
        .trim_start_matches("enr_")
        .chars()
        .take(8)
        .collect();
    format!("node-{tail}")
}

/// Registers a node with a code. `name` overrides the code's name; without either the
/// node is named after its id.
pub async fn redeem(
    app: &AppState,
    code: String,
    public_key: [u8; 32],
    name: Option<String>,
) -> ApiResult<Node> {
    let hash = code_hash(&code);
    let limits = Limits {
        max_nodes_per_operator: app.config.max_nodes_per_operator,
        max_nodes_per_pool: app.config.max_nodes_per_pool,
    };
    app.writer
        .write(move |b| {
            let now = b.now_us();
            let e = b
                .enrollment_by_code(&hash)?
                .filter(|e| e.is_open(now))
                .ok_or_else(invalid_code)?;
            let new = NewNode {
                name: name
                    .or_else(|| e.name.clone())
                    .unwrap_or_else(|| default_name(&e.enrollment_id)),
                operator_id: e.operator_id.clone(),
                public_key,
                payout_address: e.payout_address.clone(),
                region: None,
                pool_id: e.pool_id.clone(),
            };
            // Every refusal before the first write (the writer's rule).
            registration::check(b, &new, limits)?;
            let actor = Actor {
                subject: e.enrollment_id.clone(),
                role: "enrollment".to_string(),
            };
            let node = registration::write(b, &actor, new)?;
            let mut next = e.clone();
            next.uses_left -= 1;
            if next.uses_left == 0 {
                b.remove_enrollment(&e)?;
            } else {
                b.put_enrollment(&next)?;
            }
            b.audit(
                &actor,
                "enrollment.redeem",
                &e.enrollment_id,
                json!({"operator_id": e.operator_id, "node_id": node.node_id,
                    "uses_left": next.uses_left}),
            )?;
            Ok(node)
        })
        .await
}
