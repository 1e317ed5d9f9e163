//! Authentication: the bearer-token extractor and node login by challenge.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::extract::ApiJson;
use crate::app::rate_limits::LimitKind;
use crate::app::AppState;
use crate::crypto::signatures::{login_message, verify_signature};
use crate::domain::ids::is_valid_id;
use crate::domain::node::Node;
use crate::domain::role::Role;
use crate::domain::timefmt::rfc3339_us;
use crate::error::{ApiError, ApiResult};
use crate::store::Actor;

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub subject: String,
    pub role: Role,
}

impl Caller {
    pub fn actor(&self) -> Actor {
        Actor::new(&self.subject, self.role)
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    /// A node sees only itself, an operator the nodes it owns, an admin every node.
    pub fn can_see(&self, node: &Node) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Operator => node.operator_id == self.subject,
            Role::Node => node.node_id == self.subject,
        }
    }

    /// Operators manage their own nodes; admins all of them; nodes none.
    pub fn can_manage(&self, node: &Node) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Operator => node.operator_id == self.subject,
            Role::Node => false,
        }
    }

    pub fn require_admin(&self) -> ApiResult<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::forbidden("this needs an admin token"))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let result = authenticate(parts, app);
        if let Err(e) = &result {
            app.metrics.auth_failures.with_label_values(&[e.kind]).inc();
        }
        let caller = result?;
        // Every authenticated route, heartbeats included, counts against the token's
        // subject; admins are exempt (they run the appliance). Heartbeats count because
        // HEARTBEAT_MIN_INTERVAL paces only accepted ones: a node sending replays or bad
        // signatures is stopped here, before the body is read or verified.
        if !caller.is_admin() {
            if let Err(wait) = app.rate_limits.check_subject(&caller.subject) {
                return Err(super::limits::rate_limited(app, LimitKind::Token, wait));
            }
        }
        Ok(caller)
    }
}

fn authenticate(parts: &Parts, app: &AppState) -> ApiResult<Caller> {
    let header = parts.headers.get(header::AUTHORIZATION).ok_or_else(|| {
        ApiError::unauthorized("missing-token", "send Authorization: Bearer <token>")
    })?;
    let token = header
        .to_str()
        .ok()
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::unauthorized("missing-token", "send Authorization: Bearer <token>")
        })?;
    let claims = app.tokens.verify(token)?;
    if claims.role == Role::Node {
        // Node tokens stop working the moment the node is suspended or deregistered.
        let node = app.store.reader()?.node(&claims.sub)?;
        let valid = node
            .is_some_and(|n| n.status.is_active() && claims.gen.unwrap_or(0) == n.token_generation);
        if !valid {
            return Err(ApiError::unauthorized(
                "invalid-token",
                "the node of this token is suspended, deregistered or unknown",
            ));
        }
    }
    Ok(Caller {
        subject: claims.sub,
        role: claims.role,
    })
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    pub node_id: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct ChallengeResponse {
    /// Base64; sign `lucid-auth-v1:` followed by this value as sent.
    pub nonce: String,
    pub expires_at: String,
}

fn active_node(app: &AppState, node_id: &str) -> ApiResult<Node> {
    if !is_valid_id("node", node_id) {
        return Err(ApiError::validation("node_id must look like node_..."));
    }
    let node = app
        .store
        .reader()?
        .node(node_id)?
        .ok_or_else(|| ApiError::not_found("node", node_id))?;
    if !node.status.is_active() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "node-inactive",
            format!("node {node_id} is {}", node.status.as_str()),
        ));
    }
    Ok(node)
}

/// Start a node login: a single-use nonce valid for 60 seconds.
#[utoipa::path(post, operation_id = "auth_challenge", path = "/api/v1/auth/challenge", tag = "auth",
    request_body = ChallengeRequest,
    responses((status = 200, body = ChallengeResponse), (status = 404, body = crate::error::Problem)))]
pub async fn challenge(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<ChallengeRequest>,
) -> ApiResult<Json<ChallengeResponse>> {
    active_node(&app, &req.node_id)?;
    let (nonce, expiry) = app
        .challenges
        .issue(&req.node_id, crate::crypto::tokens::unix_now_secs());
    Ok(Json(ChallengeResponse {
        nonce,
        expires_at: rfc3339_us(expiry * 1_000_000),
    }))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub node_id: String,
    pub nonce: String,
    /// Base64 Ed25519 signature over `lucid-auth-v1:` + nonce.
    pub signature: String,
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    pub token: String,
    pub expires_at: String,
    /// The token's `jti` claim: what `POST /api/v1/tokens/revoke` takes to revoke it.
    pub jti: String,
}

/// Finish a node login: answer the challenge with the node key's signature.
#[utoipa::path(post, operation_id = "auth_token", path = "/api/v1/auth/token", tag = "auth",
    request_body = LoginRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = crate::error::Problem)))]
pub async fn token(
    State(app): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let node = active_node(&app, &req.node_id)?;
    let now = crate::crypto::tokens::unix_now_secs();
    // A nonce is spent by its first answer, right or wrong: a wrong signature cannot be
    // followed by guesses on the same nonce.
    if !app.challenges.is_valid(&req.node_id, &req.nonce, now)
        || !app.challenges.consume(&req.nonce, now)
    {
        app.metrics
            .auth_failures
            .with_label_values(&["invalid-challenge"])
            .inc();
        return Err(ApiError::unauthorized(
            "invalid-challenge",
            "the nonce is unknown, expired or already used; ask for a new challenge",
        ));
    }
    if !verify_signature(&node.public_key, &login_message(&req.nonce), &req.signature) {
        app.metrics
            .auth_failures
            .with_label_values(&["invalid-signature"])
            .inc();
        return Err(ApiError::unauthorized(
            "invalid-signature",
            "the signature does not verify with the node's public key",
        ));
    }
    let issued = app.tokens.issue_now(
        Role::Node,
        &node.node_id,
        app.config.node_token_ttl,
        Some(node.token_generation),
    );
    Ok(Json(TokenResponse {
        token: issued.token,
        expires_at: rfc3339_us(issued.exp * 1_000_000),
        jti: issued.jti,
    }))
}
