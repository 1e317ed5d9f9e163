//! Table definitions. Keys are chosen for range scans; values are bincode (see `codec`).

use redb::TableDefinition;

/// `schema_version` and other single values.
pub const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
/// node_id -> Node
pub const NODES: TableDefinition<&str, &[u8]> = TableDefinition::new("nodes");
/// public key bytes -> node_id (a key registers once)
pub const NODE_KEYS: TableDefinition<&[u8], &str> = TableDefinition::new("node_keys");
/// (operator_id, node_id) -> () : an operator's nodes in id order
pub const OPERATOR_NODES: TableDefinition<(&str, &str), ()> =
    TableDefinition::new("operator_nodes");
/// pool_id -> Pool
pub const POOLS: TableDefinition<&str, &[u8]> = TableDefinition::new("pools");
/// pool name -> pool_id (names are unique)
pub const POOL_NAMES: TableDefinition<&str, &str> = TableDefinition::new("pool_names");
/// (pool_id, node_id) -> () : a pool's members in id order
pub const POOL_MEMBERS: TableDefinition<(&str, &str), ()> = TableDefinition::new("pool_members");
/// seq -> AuditEvent
pub const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// counter name -> value (nodes per status, pools, members), kept in step with the data
/// inside each transaction so metrics never scan.
pub const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");

pub const SCHEMA_VERSION_KEY: &str = "schema_version";

/// Counter names.
pub fn status_counter(status: crate::domain::node::NodeStatus) -> String {
    format!("nodes.status.{}", status.as_str())
}
pub const POOLS_COUNTER: &str = "pools";
pub const POOL_MEMBERS_COUNTER: &str = "pool_members";
