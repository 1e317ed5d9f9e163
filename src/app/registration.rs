//! Registering a node: the one place the rules are checked (key not taken, the operator's
//! quota, room in the pool) and the node written. `POST /nodes` and the redeeming of an
//! enrolment code both come here, inside the writer's transaction.

use serde_json::json;

use crate::domain::ids::new_id;
use crate::domain::node::Node;
use crate::error::{ApiError, ApiResult};
use crate::store::{Actor, Batch};

/// A node to register, its fields already validated.
pub struct NewNode {
    pub name: String,
    pub operator_id: String,
    pub public_key: [u8; 32],
    pub payout_address: Option<String>,
    pub region: Option<String>,
    /// Join this pool at once (it must exist and have room).
    pub pool_id: Option<String>,
}

/// Limits the registration is judged against.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// MAX_NODES_PER_OPERATOR (None: no limit).
    pub max_nodes_per_operator: Option<u32>,
    /// MAX_NODES_PER_POOL, for pools without their own capacity.
    pub max_nodes_per_pool: u32,
}

/// Checks everything, then writes: a refusal leaves the transaction untouched (the writer
/// requires that), so a caller may check its own rules first and write after this.
pub fn check(b: &Batch<'_>, new: &NewNode, limits: Limits) -> ApiResult<()> {
    // Only that the key is taken: the node holding it may be another operator's.
    if b.node_id_for_key(&new.public_key)?.is_some() {
        return Err(ApiError::conflict(
            "duplicate-public-key",
            "this public key is already registered",
        ));
    }
    // Counted in the writer's transaction: concurrent registrations are judged one after
    // the other, each seeing the ones before it.
    if let Some(quota) = limits.max_nodes_per_operator {
        let quota = quota as usize;
        if b.operator_node_count(&new.operator_id, quota)? >= quota {
            return Err(ApiError::unprocessable(
                "operator-quota",
                format!(
                    "operator {} has registered {quota} nodes, the most allowed (MAX_NODES_PER_OPERATOR)",
                    new.operator_id
                ),
            ));
        }
    }
    if let Some(pool_id) = &new.pool_id {
        let pool = b
            .pool(pool_id)?
            .ok_or_else(|| ApiError::not_found("pool", pool_id))?;
        if !pool.has_room(limits.max_nodes_per_pool) {
            return Err(ApiError::conflict(
                "pool-full",
                format!(
                    "pool {} is full ({} of {})",
                    pool.pool_id,
                    pool.member_count,
                    pool.effective_capacity(limits.max_nodes_per_pool)
                ),
            ));
        }
    }
    Ok(())
}

/// Writes the node (and its pool membership) with its audit event. Call [`check`] first.
pub fn write(b: &mut Batch<'_>, actor: &Actor, new: NewNode) -> ApiResult<Node> {
    let mut node = Node {
        payout_address: new.payout_address,
        region: new.region,
        ..Node::registered(
            new_id("node"),
            new.name,
            new.operator_id,
            new.public_key,
            b.now_us(),
        )
    };
    let mut pool = match &new.pool_id {
        Some(id) => Some(b.pool(id)?.ok_or_else(|| ApiError::not_found("pool", id))?),
        None => None,
    };
    if let Some(pool) = &pool {
        node.pool_id = Some(pool.pool_id.clone());
    }
    b.put_node(&node, None)?;
    if let Some(pool) = pool.as_mut() {
        b.add_member(pool, &node.node_id)?;
    }
    let mut detail = json!({"name": node.name, "operator_id": node.operator_id});
    if let Some(pool_id) = &node.pool_id {
        detail["pool_id"] = json!(pool_id);
    }
    b.audit(actor, "node.register", &node.node_id, detail)?;
    Ok(node)
}
