//! Pools: create, list, read, join.

use axum::extract::State;
use axum::response::Response;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::auth::Caller;
use super::created;
use super::extract::{ApiJson, ApiPath, ApiQuery};
use super::pagination::{ListPage, PageParams};
use crate::app::AppState;
use crate::domain::ids::{is_valid_id, new_id};
use crate::domain::node::validate_text;
use crate::domain::pool::Pool;
use crate::domain::role::Role;
use crate::domain::timefmt::rfc3339_us;
use crate::error::{ApiError, ApiResult};
use crate::store::queries::Reader;

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PoolView {
    pub pool_id: String,
    pub name: String,
    pub region: Option<String>,
    pub capacity: u32,
    pub member_count: u32,
    pub online_count: u32,
    pub created_at: String,
    /// Only in `GET /pools/{pool_id}`: the members the caller may see.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<String>>,
}

impl PoolView {
    fn new(pool: &Pool, max: u32, online_count: u32) -> Self {
        Self {
            pool_id: pool.pool_id.clone(),
            name: pool.name.clone(),
            region: pool.region.clone(),
            capacity: pool.effective_capacity(max),
            member_count: pool.member_count,
            online_count,
            created_at: rfc3339_us(pool.created_at_us),
            members: None,
        }
    }
}

fn view(reader: &Reader, pool: &Pool, max: u32) -> ApiResult<PoolView> {
    Ok(PoolView::new(
        pool,
        max,
        reader.online_count(&pool.pool_id)?,
    ))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePoolRequest {
    pub name: String,
    pub region: Option<String>,
    /// 1 to MAX_NODES_PER_POOL (the default).
    pub capacity: Option<u32>,
}

/// Create a pool (admin).
#[utoipa::path(post, operation_id = "pools_create", path = "/api/v1/pools", tag = "pools",
    request_body = CreatePoolRequest,
    responses((status = 201, body = PoolView), (status = 409, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    State(app): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreatePoolRequest>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let max = app.config.max_nodes_per_pool;
    let name = validate_text("name", &req.name).map_err(ApiError::validation)?;
    let region = req
        .region
        .map(|r| validate_text("region", &r).map_err(ApiError::validation))
        .transpose()?;
    let capacity = req.capacity.unwrap_or(max);
    if capacity == 0 || capacity > max {
        return Err(ApiError::validation(format!(
            "capacity must be between 1 and {max} (MAX_NODES_PER_POOL)"
        )));
    }
    let actor = caller.actor();
    let pool = app
        .writer
        .write(move |b| {
            if b.pool_id_by_name(&name)?.is_some() {
                return Err(ApiError::conflict(
                    "duplicate-pool-name",
                    format!("a pool named {name:?} exists"),
                ));
            }
            let pool = Pool {
                pool_id: new_id("pool"),
                name,
                region,
                capacity,
                member_count: 0,
                created_at_us: b.now_us(),
            };
            b.put_pool(&pool, true)?;
            b.audit(
                &actor,
                "pool.create",
                &pool.pool_id,
                json!({"name": pool.name, "capacity": pool.capacity}),
            )?;
            Ok(pool)
        })
        .await?;
    Ok(created(PoolView::new(&pool, max, 0)))
}

/// List pools.
#[utoipa::path(get, operation_id = "pools_list", path = "/api/v1/pools", tag = "pools",
    params(PageParams),
    responses((status = 200, body = ListPage<PoolView>)),
    security(("bearer" = [])))]
pub async fn list(
    State(app): State<AppState>,
    _caller: Caller,
    ApiQuery(page): ApiQuery<PageParams>,
) -> ApiResult<Json<ListPage<PoolView>>> {
    let reader = app.store.reader()?;
    let result = reader.pools(page.after()?.as_deref(), page.limit()?)?;
    let max = app.config.max_nodes_per_pool;
    let items = result
        .items
        .iter()
        .map(|p| view(&reader, p, max))
        .collect::<ApiResult<_>>()?;
    Ok(Json(ListPage::new(items, result.next)))
}

fn find_pool(reader: &Reader, pool_id: &str) -> ApiResult<Pool> {
    if !is_valid_id("pool", pool_id) {
        return Err(ApiError::not_found("pool", pool_id));
    }
    reader
        .pool(pool_id)?
        .ok_or_else(|| ApiError::not_found("pool", pool_id))
}

/// One pool with the members the caller may see.
#[utoipa::path(get, operation_id = "pools_get_one", path = "/api/v1/pools/{pool_id}", tag = "pools",
    params(("pool_id" = String, Path)),
    responses((status = 200, body = PoolView), (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn get_one(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(pool_id): ApiPath<String>,
) -> ApiResult<Json<PoolView>> {
    let reader = app.store.reader()?;
    let pool = find_pool(&reader, &pool_id)?;
    let mut members = Vec::new();
    for id in reader.pool_member_ids(&pool_id)? {
        if caller.is_admin() || reader.node(&id)?.is_some_and(|n| caller.can_see(&n)) {
            members.push(id);
        }
    }
    let mut v = view(&reader, &pool, app.config.max_nodes_per_pool)?;
    v.members = Some(members);
    Ok(Json(v))
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinRequest {
    pub node_id: String,
}

/// Put a node into a pool (the node, its operator, or an admin). Moves it out of its
/// old pool. 409 `pool-full` when the pool is at capacity.
#[utoipa::path(post, operation_id = "pools_join", path = "/api/v1/pools/{pool_id}/join", tag = "pools",
    params(("pool_id" = String, Path)),
    request_body = JoinRequest,
    responses((status = 200, body = PoolView), (status = 409, body = crate::error::Problem),
        (status = 404, body = crate::error::Problem)),
    security(("bearer" = [])))]
pub async fn join(
    State(app): State<AppState>,
    caller: Caller,
    ApiPath(pool_id): ApiPath<String>,
    ApiJson(req): ApiJson<JoinRequest>,
) -> ApiResult<Json<PoolView>> {
    if !is_valid_id("pool", &pool_id) {
        return Err(ApiError::not_found("pool", &pool_id));
    }
    if !is_valid_id("node", &req.node_id) {
        return Err(ApiError::not_found("node", &req.node_id));
    }
    let max = app.config.max_nodes_per_pool;
    let actor = caller.actor();
    let node_id = req.node_id;
    let pool = app
        .writer
        .write(move |b| {
            // Checked inside the write transaction: concurrent joins are serialized here,
            // so a pool can never be overfilled.
            let mut pool = b
                .pool(&pool_id)?
                .ok_or_else(|| ApiError::not_found("pool", &pool_id))?;
            let node = b
                .node(&node_id)?
                .filter(|n| caller.can_see(n))
                .ok_or_else(|| ApiError::not_found("node", &node_id))?;
            if caller.role == Role::Node && node.node_id != caller.subject {
                return Err(ApiError::forbidden("a node can only move itself"));
            }
            if !node.status.is_active() {
                return Err(ApiError::conflict(
                    "invalid-state",
                    format!("node {node_id} is {}", node.status.as_str()),
                ));
            }
            if node.pool_id.as_deref() == Some(pool.pool_id.as_str()) {
                return Ok(pool);
            }
            if !pool.has_room(max) {
                return Err(ApiError::conflict(
                    "pool-full",
                    format!(
                        "pool {} is full ({} of {})",
                        pool.pool_id,
                        pool.member_count,
                        pool.effective_capacity(max)
                    ),
                ));
            }
            let previous = node.clone();
            let mut moved = node;
            if let Some(old) = moved.pool_id.take() {
                b.remove_member(&old, &moved.node_id)?;
            }
            b.add_member(&mut pool, &moved.node_id)?;
            moved.pool_id = Some(pool.pool_id.clone());
            b.put_node(&moved, Some(&previous))?;
            b.audit(
                &actor,
                "pool.join",
                &moved.node_id,
                json!({"pool_id": pool.pool_id, "from": previous.pool_id}),
            )?;
            Ok(pool)
        })
        .await?;
    let reader = app.store.reader()?;
    Ok(Json(view(&reader, &pool, max)?))
}
