//! Each node's running totals (balance, pending day credits, credit carry, operational
//! seconds, latest proof) as fixed-size rows, [`ROWS_PER_CHUNK`] nodes per value keyed by
//! `node_index / ROWS_PER_CHUNK` (the ACCOUNTS table).
//!
//! Why not the node record: closing an epoch changes these totals for every node that
//! proved, and rewriting each node's record (decode, encode, a B-tree insert of ~250 B)
//! was most of a close: about 4 µs and 360 B written per node-epoch, 0.4 s of a 100k-node
//! close (measured with `benches/epoch_storage.rs`). Here an epoch is settled in node-index
//! order, one value rewrite per 128 nodes: about 104 B written per node-epoch.
//!
//! The rule every reader and writer keeps: **when a node has an account row, the row holds
//! its totals** and the record's copies of them are stale; a node without a row (one
//! registered before the table came and not settled since) has them in its record.
//! Readers apply the row with [`NodeTables::get`]; `Batch::put_node` writes a changed
//! total to the row and makes a new node's row at registration; closes make the rows of
//! older nodes as they settle them (no migration).

use redb::ReadableTable;
use rust_decimal::Decimal;

use super::codec::decode;
use super::error::StoreResult;
use super::node_rows::{RowEdits, RowKind, NODES_PER_VALUE};
use crate::domain::merkle::Hash;
use crate::domain::node::Node;

/// Nodes per stored value: 13 KiB values, so a payout of one node rewrites little, and an
/// epoch of 100k nodes rewrites 782 values.
pub const ROWS_PER_CHUNK: u32 = NODES_PER_VALUE;

/// Bytes of one row.
pub const ROW_LEN: usize = 104;

const PRESENT: u8 = 1;
const HAS_LAST_PROOF: u8 = 2;

/// A node's running totals, as its account row holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    pub balance_usdt: Decimal,
    pub credits_pending_usdt: Decimal,
    pub credits_pending_day: u32,
    pub credit_carry: Decimal,
    pub operational_seconds_total: u64,
    pub last_proof: Option<(u64, Hash)>,
}

impl Account {
    pub fn of_node(node: &Node) -> Self {
        Self {
            balance_usdt: node.balance_usdt,
            credits_pending_usdt: node.credits_pending_usdt,
            credits_pending_day: node.credits_pending_day,
            credit_carry: node.credit_carry,
            operational_seconds_total: node.operational_seconds_total,
            last_proof: node.last_proof,
        }
    }

    pub fn apply_to(&self, node: &mut Node) {
        node.balance_usdt = self.balance_usdt;
        node.credits_pending_usdt = self.credits_pending_usdt;
        node.credits_pending_day = self.credits_pending_day;
        node.credit_carry = self.credit_carry;
        node.operational_seconds_total = self.operational_seconds_total;
        node.last_proof = self.last_proof;
    }

    fn encode_into(&self, out: &mut [u8]) {
        let flags = PRESENT
            | if self.last_proof.is_some() {
                HAS_LAST_PROOF
            } else {
                0
            };
        out.fill(0);
        out[0] = flags;
        out[4..8].copy_from_slice(&self.credits_pending_day.to_le_bytes());
        out[8..16].copy_from_slice(&self.operational_seconds_total.to_le_bytes());
        let (epoch, hash) = self.last_proof.unwrap_or((0, [0; 32]));
        out[16..24].copy_from_slice(&epoch.to_le_bytes());
        out[24..56].copy_from_slice(&hash);
        out[56..72].copy_from_slice(&self.balance_usdt.serialize());
        out[72..88].copy_from_slice(&self.credits_pending_usdt.serialize());
        out[88..104].copy_from_slice(&self.credit_carry.serialize());
    }

    /// The account in exactly `ROW_LEN` bytes; None for an empty slot.
    fn decode(b: &[u8]) -> Option<Self> {
        if b[0] & PRESENT == 0 {
            return None;
        }
        let dec = |i: usize| Decimal::deserialize(b[i..i + 16].try_into().expect("16 bytes"));
        Some(Self {
            credits_pending_day: u32::from_le_bytes(b[4..8].try_into().expect("4 bytes")),
            operational_seconds_total: u64::from_le_bytes(b[8..16].try_into().expect("8 bytes")),
            last_proof: (b[0] & HAS_LAST_PROOF != 0).then(|| {
                (
                    u64::from_le_bytes(b[16..24].try_into().expect("8 bytes")),
                    b[24..56].try_into().expect("32 bytes"),
                )
            }),
            balance_usdt: dec(56),
            credits_pending_usdt: dec(72),
            credit_carry: dec(88),
        })
    }
}

/// The account rows' kind, for `node_rows`.
const ACCOUNT_ROW: RowKind = RowKind {
    len: ROW_LEN,
    what: "account",
};

/// The account row of `node_index` as `accounts` holds it.
pub fn account_at(
    accounts: &impl ReadableTable<u32, &'static [u8]>,
    node_index: u32,
) -> StoreResult<Option<Account>> {
    match accounts.get(node_index / ROWS_PER_CHUNK)? {
        Some(v) => account_in(v.value(), node_index),
        None => Ok(None),
    }
}

/// The account row of `node_index` in the stored value of its chunk.
pub fn account_in(chunk: &[u8], node_index: u32) -> StoreResult<Option<Account>> {
    Ok(Account::decode(ACCOUNT_ROW.row_in(chunk, node_index)?))
}

/// Account rows read in a pass over many nodes (a close proving them, a payout run's
/// scan): each stored value is fetched once and kept while the pass lasts.
pub struct AccountReads<'a, A> {
    accounts: &'a A,
    values: std::collections::HashMap<
        u32,
        Option<redb::AccessGuard<'a, &'static [u8]>>,
        foldhash::fast::FixedState,
    >,
}

impl<'a, A: ReadableTable<u32, &'static [u8]>> AccountReads<'a, A> {
    pub fn new(accounts: &'a A) -> Self {
        Self {
            accounts,
            values: Default::default(),
        }
    }

    /// The account row of `node_index`, if it has one.
    pub fn get(&mut self, node_index: u32) -> StoreResult<Option<Account>> {
        use std::collections::hash_map::Entry;
        let number = node_index / ROWS_PER_CHUNK;
        let stored = match self.values.entry(number) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(self.accounts.get(number)?),
        };
        match stored {
            Some(bytes) => account_in(bytes.value(), node_index),
            None => Ok(None),
        }
    }
}

/// The three tables a node is read from: its record, its index and its account row.
pub struct NodeTables<N, I, A> {
    pub nodes: N,
    pub index: I,
    pub accounts: A,
}

impl<N, I, A> NodeTables<N, I, A>
where
    N: ReadableTable<&'static str, &'static [u8]>,
    I: ReadableTable<&'static str, u32>,
    A: ReadableTable<u32, &'static [u8]>,
{
    /// The node with its account applied.
    pub fn get(&self, id: &str) -> StoreResult<Option<Node>> {
        let Some(v) = self.nodes.get(id)? else {
            return Ok(None);
        };
        let mut node: Node = decode(v.value())?;
        self.complete(&mut node)?;
        Ok(Some(node))
    }

    /// Applies the node's account row, if it has one, to a record read from `nodes`.
    pub fn complete(&self, node: &mut Node) -> StoreResult<()> {
        if let Some(a) = self.account(&node.node_id)? {
            a.apply_to(node);
        }
        Ok(())
    }

    /// The node's account row, if it has one.
    pub fn account(&self, id: &str) -> StoreResult<Option<Account>> {
        match self.index.get(id)? {
            Some(i) => account_at(&self.accounts, i.value()),
            None => Ok(None),
        }
    }
}

/// The node tables of a read transaction.
pub type ReadNodeTables = NodeTables<
    redb::ReadOnlyTable<&'static str, &'static [u8]>,
    redb::ReadOnlyTable<&'static str, u32>,
    redb::ReadOnlyTable<u32, &'static [u8]>,
>;

/// The node tables of a write transaction (read through; see `Batch::node_tables`).
pub type WriteNodeTables<'t> = NodeTables<
    redb::Table<'t, &'static str, &'static [u8]>,
    redb::Table<'t, &'static str, u32>,
    redb::Table<'t, u32, &'static [u8]>,
>;

/// The node tables of a read transaction.
pub fn read_tables(txn: &redb::ReadTransaction) -> StoreResult<ReadNodeTables> {
    Ok(NodeTables {
        nodes: txn.open_table(super::tables::NODES)?,
        index: txn.open_table(super::tables::NODE_INDEX)?,
        accounts: txn.open_table(super::tables::ACCOUNTS)?,
    })
}

/// Account rows changed in a write transaction, kept per chunk and written back once
/// ([`AccountEdits::flush`]): settling an epoch changes up to 128 rows of each value.
pub struct AccountEdits(RowEdits);

impl Default for AccountEdits {
    fn default() -> Self {
        Self(RowEdits::new(ACCOUNT_ROW))
    }
}

impl AccountEdits {
    /// The account of `node_index` with the edits so far.
    pub fn get(
        &mut self,
        accounts: &impl ReadableTable<u32, &'static [u8]>,
        node_index: u32,
    ) -> StoreResult<Option<Account>> {
        Ok(Account::decode(self.0.row(accounts, node_index)?))
    }

    pub fn put(
        &mut self,
        accounts: &impl ReadableTable<u32, &'static [u8]>,
        node_index: u32,
        account: &Account,
    ) -> StoreResult<()> {
        account.encode_into(self.0.row_mut(accounts, node_index)?);
        Ok(())
    }

    /// Writes the changed chunks (a chunk only read is not rewritten: a resumed settling
    /// reads every chunk again and changes few).
    pub fn flush(self, accounts: &mut redb::Table<'_, u32, &'static [u8]>) -> StoreResult<()> {
        self.0.flush(accounts)
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // a write transaction on a scratch database
mod tests {
    use super::*;
    use redb::ReadableTableMetadata;

    fn account(seed: u8) -> Account {
        Account {
            balance_usdt: Decimal::new(12_345_678 + i64::from(seed), 6),
            credits_pending_usdt: Decimal::new(4_027, 6),
            credits_pending_day: 20_000 + u32::from(seed),
            credit_carry: Decimal::new(999_999, 6),
            operational_seconds_total: 1 << 40,
            last_proof: Some((5_716_597, [seed; 32])),
        }
    }

    #[test]
    fn an_account_reads_back_as_written_and_an_empty_slot_reads_as_none() {
        let mut row = [0u8; ROW_LEN];
        assert_eq!(Account::decode(&row), None);
        for a in [
            account(7),
            Account {
                last_proof: None,
                balance_usdt: Decimal::ZERO,
                ..account(1)
            },
            Account {
                balance_usdt: Decimal::new(-5, 0),
                ..account(2)
            },
        ] {
            a.encode_into(&mut row);
            assert_eq!(Account::decode(&row), Some(a));
        }
    }

    #[test]
    fn edits_land_in_their_rows_of_their_chunk_and_nowhere_else() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("a.redb")).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let mut table = txn.open_table(super::super::tables::ACCOUNTS).unwrap();
            let mut edits = AccountEdits::default();
            for i in [0u32, 127, 128, 1000] {
                edits.put(&table, i, &account(i as u8)).unwrap();
            }
            // Only read: chunk 40 is not written.
            assert_eq!(edits.get(&table, 40 * ROWS_PER_CHUNK).unwrap(), None);
            edits.flush(&mut table).unwrap();
            for i in [0u32, 127, 128, 1000] {
                assert_eq!(account_at(&table, i).unwrap(), Some(account(i as u8)));
            }
            for i in [1u32, 126, 129, 999, 5000] {
                assert_eq!(account_at(&table, i).unwrap(), None, "{i}");
            }
            assert_eq!(table.len().unwrap(), 3);
        }
        txn.commit().unwrap();
    }
}
