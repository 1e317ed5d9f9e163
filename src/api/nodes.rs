//! Nodes: register, list, read, update, deregister.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::auth::Caller;
use super::created;
use super::extract::{double_option, ApiJson, ApiPath, ApiQuery};
use super::pagination::{ListPage, PageParams};
use crate::app::heavy::heavy_read;
use crate::app::{registration, AppState};
use crate::domain::ids::{is_valid_id, is_valid_subject};
use crate::domain::node::{admin_status_change, parse_public_key, validate_text, Node, NodeStatus};
use crate::domain::role::Role;
use crate::domain::tron::validate_tron_address;
use crate::error::{ApiError, ApiResult};
use crate::store::queries::{NodeIndex, Page};
use crate::views::NodeView;

pub(super) fn checked_address(address: Option<String>) -> ApiResult<Option<String>> {
    match address {
        None => Ok(None),
        Some(a) => {
            let a = a.trim().to_string();
            validate_tron_address(&a).map_err(|e| {
                ApiError::validation(format!("payout_address is not a TRON address: {e}"))
            })?;
            Ok(Some(a))
        }
    }
}

fn checked_text(field: &str, value: Option<String>) -> ApiResult<Option<String>> {
    value
        .map(|v| validate_text(field, &v).map_err(ApiError::validation))
        .transpose()
}

fn checked_node_id(id: &str) -> ApiResult<()> {
    if is_valid_id("node", id) {
        Ok(())
    } else {
        Err(ApiError::not_found("node", id))
    }
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNodeRequest {
    pub name: String,
    /// Standard base64 of the node's 32-byte Ed25519 public key.
    pub public_key: String,
    /// TRON address (`T...`, base58check).
    pub payout_address: Option<String>,
    pub region: Option<String>,
    /// Admins only: register on behalf of this operator.
    pub operator_id: Option<String>,
}

/// Register a node (operator, admin).
#[utoipa::path(post, operation_id = "nodes_create", path = "/api/v1/nodes", tag = "nodes",
    request_body = CreateNodeRequest,
    responses((status = 201, body = NodeView), (status = 400, body = crate::error::Problem),
        (status = 409, description = "duplicate-public-key", body = crate::error::Problem),
        (status = 422, description = "operator-quota", body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateNodeRequest>,
) -> ApiResult<Response> {
    let operator_id = match (caller.role, req.operator_id) {
        (Role::Node, _) => return Err(ApiError::forbidden("nodes cannot register nodes")),
        (Role::Admin, Some(op)) => {
            if !is_valid_subject(&op) {
                return Err(ApiError::validation("operator_id is not a valid subject"));
            }
            op
        }
        (Role::Operator, Some(op)) if op != caller.subject => {
            return Err(ApiError::forbidden(
                "operators register nodes for themselves only",
            ))
        }
        _ => caller.subject.clone(),
    };
    let name = validate_text("name", &req.name).map_err(ApiError::validation)?;
    let public_key = parse_public_key(&req.public_key).map_err(ApiError::validation)?;
    let payout_address = checked_address(req.payout_address)?;
    let region = checked_text("region", req.region)?;
    let actor = caller.actor();
    let limits = registration::Limits {
        max_nodes_per_operator: app.config.max_nodes_per_operator,
        max_nodes_per_pool: app.config.max_nodes_per_pool,
    };
    let new = registration::NewNode {
        name,
        operator_id,
        public_key,
        payout_address,
        region,
        pool_id: None,
    };
    let node = app
        .writer
        .write(move |b| {
            registration::check(b, &new, limits)?;
            registration::write(b, &actor, new)
        })
        .await?;
    Ok(created(NodeView::from(&node)))
}

#[derive(Deserialize, utoipa::IntoParams)]
// Query-string parameters, optional (utoipa would document them as path parameters).
#[into_params(parameter_in = Query)]
pub struct NodeFilters {
    /// Only nodes in this status.
    pub status: Option<String>,
    /// Only members of this pool.
    pub pool_id: Option<String>,
}

/// List the nodes the caller may see (admin: all; operator: own; node: itself).
#[utoipa::path(get, operation_id = "nodes_list", path = "/api/v1/nodes", tag = "nodes",
    params(PageParams, NodeFilters),
    responses((status = 200, body = ListPage<NodeView>)),
    security(("bearer" = [])))]
pub async fn list(
    State(app): State<AppState>,
    caller: Caller,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(filters): ApiQuery<NodeFilters>,
) -> ApiResult<Json<ListPage<NodeView>>> {
    let limit = page.limit()?;
    let after = page.after()?;
    let status = match filters.status.as_deref() {
        None | Some("") => None,
        Some(s) => Some(NodeStatus::parse(s).ok_or_else(|| {
            ApiError::validation(format!(
                "status must be one of registered, online, offline, suspended, deregistered; got {s:?}"
            ))
        })?),
    };
    let pool_id = filters.pool_id.filter(|p| !p.is_empty());
    heavy_read(&app, move |app| {
        let keep = |n: &Node| {
            caller.can_see(n)
                && status.is_none_or(|s| n.status == s)
                && pool_id
                    .as_ref()
                    .is_none_or(|p| n.pool_id.as_ref() == Some(p))
        };
        let reader = app.store.reader()?;
        let result = match (caller.role, &pool_id) {
            (Role::Node, _) => {
                let own = reader.node(&caller.subject)?.filter(|n| keep(n));
                let items = own
                    .into_iter()
                    .filter(|n| after.as_deref().is_none_or(|a| n.node_id.as_str() > a))
                    .collect();
                Page { items, next: None }
            }
            (_, Some(p)) => {
                reader.indexed_nodes(NodeIndex::Pool, p, after.as_deref(), limit, keep)?
            }
            (Role::Operator, None) => reader.indexed_nodes(
                NodeIndex::Operator,
                &caller.subject,
                after.as_deref(),
                limit,
                keep,
            )?,
            (Role::Admin, None) => match status {
                Some(s) => reader.indexed_nodes(
                    NodeIndex::Status,
                    s.as_str(),
                    after.as_deref(),
                    limit,
                    keep,
                )?,
                None => reader.nodes(after.as_deref(), limit, keep)?,
            },
        };
        Ok(Json(ListPage::new(
            result.items.iter().map(NodeView::from).collect(),
            result.next,
        )))
    })
    .await
}

/// Loads a node the caller may see, or 404 (also for nodes it may not see).
pub fn visible_node(app: &AppState, caller: &Caller, node_id: &str) -> ApiResult<Node> {
    checked_node_id(node_id)?;
    app.store
        .reader()?
        .node(node_id)?
        .filter(|n| caller.can_see(n))
        .ok_or_else(|| ApiError::not_found("node", node_id))
}

/// One node.
#[utoipa::path(get, operation_id = "nodes_get_one", path = "/api/v1/nodes/{node_id}", tag = "nodes",
    params(("node_id" = String, Path)),
    responses((status = 200, body = NodeView), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn get_one(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(node_id): ApiPath<String>,
) -> ApiResult<Json<NodeView>> {
    let node = visible_node(&app, &caller, &node_id)?;
    Ok(Json(NodeView::from(&node)))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateNodeRequest {
    pub name: Option<String>,
    /// A TRON address, or null to remove it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub payout_address: Option<Option<String>>,
    /// A region, or null to remove it.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub region: Option<Option<String>>,
    /// Admins only: `suspended`, or `registered` to lift a suspension.
    pub status: Option<NodeStatus>,
}

/// Change a node (its operator or an admin; only admins change `status`).
#[utoipa::path(put, operation_id = "nodes_update", path = "/api/v1/nodes/{node_id}", tag = "nodes",
    params(("node_id" = String, Path)),
    request_body = UpdateNodeRequest,
    responses((status = 200, body = NodeView), (status = 403, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn update(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(node_id): ApiPath<String>,
    ApiJson(req): ApiJson<UpdateNodeRequest>,
) -> ApiResult<Json<NodeView>> {
    checked_node_id(&node_id)?;
    if req.status.is_some() && !caller.is_admin() {
        return Err(ApiError::forbidden(
            "only an admin may change a node's status",
        ));
    }
    let name = checked_text("name", req.name)?;
    let payout_address = req.payout_address.map(checked_address).transpose()?;
    let region = req.region.map(|r| checked_text("region", r)).transpose()?;
    let actor = caller.actor();
    let node = app
        .writer
        .write(move |b| {
            let current = b
                .node(&node_id)?
                .filter(|n| caller.can_see(n))
                .ok_or_else(|| ApiError::not_found("node", &node_id))?;
            if !caller.can_manage(&current) {
                return Err(ApiError::forbidden("nodes cannot change their own record"));
            }
            let mut next = current.clone();
            let mut changed = serde_json::Map::new();
            if let Some(name) = name {
                changed.insert("name".into(), json!(name));
                next.name = name;
            }
            if let Some(address) = payout_address {
                changed.insert("payout_address".into(), json!(address));
                next.payout_address = address;
            }
            if let Some(region) = region {
                changed.insert("region".into(), json!(region));
                next.region = region;
            }
            if let Some(status) = req.status {
                if status != current.status {
                    admin_status_change(current.status, status).map_err(|e| {
                        if current.status == NodeStatus::Deregistered {
                            ApiError::conflict("invalid-state", e)
                        } else {
                            ApiError::unprocessable("invalid-status-change", e)
                        }
                    })?;
                    if status == NodeStatus::Suspended {
                        next.token_generation += 1;
                    }
                    next.status = status;
                    changed.insert("status".into(), json!(status.as_str()));
                }
            }
            if next != current {
                b.put_node(&next, Some(&current))?;
                b.audit(
                    &actor,
                    "node.update",
                    &next.node_id,
                    serde_json::Value::Object(changed),
                )?;
            }
            Ok(next)
        })
        .await?;
    Ok(Json(NodeView::from(&node)))
}

/// Deregister a node: it leaves its pool and its tokens stop working; history stays.
#[utoipa::path(delete, operation_id = "nodes_deregister", path = "/api/v1/nodes/{node_id}", tag = "nodes",
    params(("node_id" = String, Path)),
    responses((status = 204), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn deregister(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(node_id): ApiPath<String>,
) -> ApiResult<Response> {
    checked_node_id(&node_id)?;
    let actor = caller.actor();
    app.writer
        .write(move |b| {
            let current = b
                .node(&node_id)?
                .filter(|n| caller.can_see(n))
                .ok_or_else(|| ApiError::not_found("node", &node_id))?;
            if !caller.can_manage(&current) {
                return Err(ApiError::forbidden("nodes cannot deregister themselves"));
            }
            if current.status == NodeStatus::Deregistered {
                return Ok(());
            }
            let mut next = current.clone();
            next.status = NodeStatus::Deregistered;
            next.token_generation += 1;
            if let Some(pool_id) = next.pool_id.take() {
                b.remove_member(&pool_id, &node_id)?;
            }
            b.put_node(&next, Some(&current))?;
            b.audit(
                &actor,
                "node.deregister",
                &node_id,
                json!({"left_pool": current.pool_id}),
            )
            .map_err(ApiError::from)
        })
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
