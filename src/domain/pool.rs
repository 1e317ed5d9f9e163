//! Pools: groups of nodes with a capacity.

use serde::{Deserialize, Serialize};

use crate::clock::Micros;

/// The id of the pool that exists from first start.
pub const DEFAULT_POOL_ID: &str = "pool_default";
pub const DEFAULT_POOL_NAME: &str = "default";

/// A pool as stored. Members live in their own table; the count is kept here, updated in
/// the same transaction as the membership, so capacity checks are one read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub pool_id: String,
    pub name: String,
    pub region: Option<String>,
    pub capacity: u32,
    pub member_count: u32,
    pub created_at_us: Micros,
}

impl Pool {
    /// The capacity that applies: the pool's own, never above the configured maximum.
    pub fn effective_capacity(&self, max_nodes_per_pool: u32) -> u32 {
        self.capacity.min(max_nodes_per_pool)
    }

    pub fn has_room(&self, max_nodes_per_pool: u32) -> bool {
        self.member_count < self.effective_capacity(max_nodes_per_pool)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(capacity: u32, members: u32) -> Pool {
        Pool {
            pool_id: "pool_a".into(),
            name: "a".into(),
            region: None,
            capacity,
            member_count: members,
            created_at_us: 0,
        }
    }

    #[test]
    fn room_respects_both_pool_and_configured_capacity() {
        assert!(pool(100, 99).has_room(100));
        assert!(!pool(100, 100).has_room(100));
        assert!(!pool(100, 50).has_room(50));
        assert_eq!(pool(10, 0).effective_capacity(100), 10);
    }
}
