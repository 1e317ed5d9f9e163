//! Fixed-size rows per node, [`NODES_PER_VALUE`] nodes to a stored value keyed by
//! `node_index / NODES_PER_VALUE`: how the account rows (`accounts`) and the payout heads
//! (`payout_chunks`) are kept, so that a pass over many nodes in index order rewrites one
//! value per 128 nodes instead of one row each.

use std::collections::BTreeMap;

use redb::ReadableTable;

use super::error::{StoreError, StoreResult};

/// Nodes per stored value.
pub const NODES_PER_VALUE: u32 = 128;

/// A kind of row: its length, and its name in corruption reports.
#[derive(Debug, Clone, Copy)]
pub struct RowKind {
    pub len: usize,
    pub what: &'static str,
}

impl RowKind {
    /// The number of the value holding `node_index`'s row, and the row's offset in it.
    pub fn slot(self, node_index: u32) -> (u32, usize) {
        (
            node_index / NODES_PER_VALUE,
            (node_index % NODES_PER_VALUE) as usize * self.len,
        )
    }

    /// `node_index`'s row in the stored value `bytes` of its number (checked whole).
    pub fn row_in(self, bytes: &[u8], node_index: u32) -> StoreResult<&[u8]> {
        let (number, at) = self.slot(node_index);
        self.check(number, bytes)?;
        Ok(&bytes[at..at + self.len])
    }

    /// A stored value is whole: `NODES_PER_VALUE` rows.
    fn check(self, number: u32, bytes: &[u8]) -> StoreResult<()> {
        if bytes.len() != NODES_PER_VALUE as usize * self.len {
            return Err(StoreError::corrupt(format!(
                "{} value {number} is {} bytes",
                self.what,
                bytes.len()
            )));
        }
        Ok(())
    }
}

/// Rows changed in a write transaction, kept per value and written back once
/// ([`RowEdits::flush`]); a value only read is not rewritten.
pub struct RowEdits {
    kind: RowKind,
    /// Each value read, and whether a row of it changed.
    values: BTreeMap<u32, (Vec<u8>, bool)>,
}

impl RowEdits {
    pub fn new(kind: RowKind) -> Self {
        Self {
            kind,
            values: BTreeMap::new(),
        }
    }

    fn value(
        &mut self,
        table: &impl ReadableTable<u32, &'static [u8]>,
        number: u32,
    ) -> StoreResult<&mut (Vec<u8>, bool)> {
        use std::collections::btree_map::Entry;
        match self.values.entry(number) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(e) => {
                let bytes = match table.get(number)? {
                    Some(v) => v.value().to_vec(),
                    None => vec![0; NODES_PER_VALUE as usize * self.kind.len],
                };
                self.kind.check(number, &bytes)?;
                Ok(e.insert((bytes, false)))
            }
        }
    }

    /// `node_index`'s row with the edits so far (zeros when never written).
    pub fn row(
        &mut self,
        table: &impl ReadableTable<u32, &'static [u8]>,
        node_index: u32,
    ) -> StoreResult<&[u8]> {
        let (number, at) = self.kind.slot(node_index);
        let len = self.kind.len;
        let (bytes, _) = self.value(table, number)?;
        Ok(&bytes[at..at + len])
    }

    /// `node_index`'s row to change; its value is written back by [`RowEdits::flush`].
    pub fn row_mut(
        &mut self,
        table: &impl ReadableTable<u32, &'static [u8]>,
        node_index: u32,
    ) -> StoreResult<&mut [u8]> {
        let (number, at) = self.kind.slot(node_index);
        let len = self.kind.len;
        let (bytes, changed) = self.value(table, number)?;
        *changed = true;
        Ok(&mut bytes[at..at + len])
    }

    /// Writes the changed values.
    pub fn flush(self, table: &mut redb::Table<'_, u32, &'static [u8]>) -> StoreResult<()> {
        for (number, (bytes, changed)) in self.values {
            if changed {
                table.insert(number, bytes.as_slice())?;
            }
        }
        Ok(())
    }
}
