//! A pool as the mirror stores it.

use serde::Serialize;

use crate::domain::pool::Pool;
use crate::domain::timefmt::rfc3339_us;

/// A pool in the mirror: its stored capacity (not capped by `MAX_NODES_PER_POOL` as the
/// API's `PoolView` is) and every member, in id order. Key order is the document's.
#[derive(Debug, Serialize)]
pub struct PoolDocument {
    pub pool_id: String,
    pub name: String,
    pub region: Option<String>,
    pub capacity: u32,
    pub member_count: u32,
    pub members: Vec<String>,
    pub created_at: String,
}

impl PoolDocument {
    pub fn new(p: &Pool, members: Vec<String>) -> Self {
        Self {
            pool_id: p.pool_id.clone(),
            name: p.name.clone(),
            region: p.region.clone(),
            capacity: p.capacity,
            member_count: p.member_count,
            members,
            created_at: rfc3339_us(p.created_at_us),
        }
    }
}
