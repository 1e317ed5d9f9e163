//! Authentication: the bearer-token extractor and node login by challenge.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::Json;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rand::rngs::OsRng;
use rand::RngCore;
use serde::{Deserialize, Serialize};

use super::extract::ApiJson;
use super::AppState;
use crate::crypto::{login_message, verify_signature, Role};
use crate::domain::ids::is_valid_id;
use crate::domain::node::Node;
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
        result
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

/// Outstanding login challenges, in memory: they live 60 s, are single-use, and a restart
/// only means a node asks again.
#[derive(Default)]
pub struct Challenges {
    inner: Mutex<HashMap<String, Vec<(String, Instant)>>>,
}

/// How long a nonce may be answered.
pub const CHALLENGE_TTL: Duration = Duration::from_secs(60);
/// Outstanding nonces per node; older ones are dropped beyond this.
const MAX_PER_NODE: usize = 4;
/// Nodes with outstanding nonces; beyond this new challenges are refused (429).
const MAX_NODES: usize = 200_000;

impl Challenges {
    fn issue(&self, node_id: &str) -> ApiResult<String> {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        let nonce = B64.encode(bytes);
        let now = Instant::now();
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_NODES {
            map.retain(|_, v| {
                v.retain(|(_, exp)| *exp > now);
                !v.is_empty()
            });
            if map.len() >= MAX_NODES {
                return Err(ApiError {
                    retry_after: Some(5),
                    ..ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        "too-many-challenges",
                        "too many outstanding login challenges",
                    )
                });
            }
        }
        let list = map.entry(node_id.to_string()).or_default();
        list.retain(|(_, exp)| *exp > now);
        if list.len() >= MAX_PER_NODE {
            list.remove(0);
        }
        list.push((nonce.clone(), now + CHALLENGE_TTL));
        Ok(nonce)
    }

    /// Takes a nonce out (single use): true if it was outstanding and not expired.
    fn take(&self, node_id: &str, nonce: &str) -> bool {
        let now = Instant::now();
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(list) = map.get_mut(node_id) else {
            return false;
        };
        let found = list
            .iter()
            .position(|(n, _)| n == nonce)
            .map(|i| list.remove(i));
        if list.is_empty() {
            map.remove(node_id);
        }
        matches!(found, Some((_, exp)) if exp > now)
    }
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
    let nonce = app.challenges.issue(&req.node_id)?;
    let expires = app.clock.now_us() + CHALLENGE_TTL.as_micros() as u64;
    Ok(Json(ChallengeResponse {
        nonce,
        expires_at: rfc3339_us(expires),
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
    if !app.challenges.take(&req.node_id, &req.nonce) {
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
    let now = app.clock.now_us() / 1_000_000;
    let (token, exp) = app.tokens.issue(
        Role::Node,
        &node.node_id,
        app.config.node_token_ttl,
        Some(node.token_generation),
        now,
    );
    Ok(Json(TokenResponse {
        token,
        expires_at: rfc3339_us(exp * 1_000_000),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_are_single_use() {
        let c = Challenges::default();
        let n = c.issue("node_a").unwrap();
        assert!(!c.take("node_b", &n));
        assert!(c.take("node_a", &n));
        assert!(!c.take("node_a", &n));
    }

    #[test]
    fn only_the_latest_few_nonces_stay_valid() {
        let c = Challenges::default();
        let first = c.issue("node_a").unwrap();
        for _ in 0..MAX_PER_NODE {
            c.issue("node_a").unwrap();
        }
        assert!(!c.take("node_a", &first));
    }
}
