//! Token revocations as stored (see `domain::revocation`), and the newest-first walk of the
//! audit log that finds issued tokens.

use redb::ReadableTable;

use super::codec::{decode, encode};
use super::error::StoreResult;
use super::queries::Reader;
use super::tables::{AUDIT, REVOCATIONS};
use super::Batch;
use crate::clock::Micros;
use crate::domain::audit::AuditEvent;
use crate::domain::revocation::Revocation;

fn all_in(t: &impl ReadableTable<&'static str, &'static [u8]>) -> StoreResult<Vec<Revocation>> {
    let mut out = Vec::new();
    for entry in t.iter()? {
        let (_, v) = entry?;
        out.push(decode(v.value())?);
    }
    Ok(out)
}

impl Batch<'_> {
    /// Stores a revocation, widened by an existing entry for the same target; returns the
    /// entry as stored.
    pub fn put_revocation(&mut self, entry: Revocation) -> StoreResult<Revocation> {
        let key = entry.target.key();
        let mut t = self.txn.open_table(REVOCATIONS)?;
        let earlier: Option<Revocation> = match t.get(key.as_str())? {
            Some(v) => Some(decode(v.value())?),
            None => None,
        };
        let entry = match earlier {
            Some(earlier) => entry.merged_with(&earlier),
            None => entry,
        };
        t.insert(key.as_str(), encode(&entry).as_slice())?;
        Ok(entry)
    }

    /// Removes the entries that can no longer refuse a token; returns how many.
    pub fn prune_revocations(&mut self, now_us: Micros) -> StoreResult<usize> {
        let mut t = self.txn.open_table(REVOCATIONS)?;
        let mut removed = 0;
        t.retain(|_, v| {
            let keep = decode::<Revocation>(v).map_or(true, |r| !r.is_expired(now_us));
            if !keep {
                removed += 1;
            }
            keep
        })?;
        Ok(removed)
    }
}

impl Reader {
    /// Every stored revocation (expired ones included until pruned).
    pub fn revocations(&self) -> StoreResult<Vec<Revocation>> {
        all_in(&self.txn.open_table(REVOCATIONS)?)
    }

    /// Walks the audit log from the newest event back, until `f` answers false or an event
    /// older than `since_us` is reached.
    pub fn audit_newest_first(
        &self,
        since_us: Micros,
        mut f: impl FnMut(AuditEvent) -> bool,
    ) -> StoreResult<()> {
        let table = self.txn.open_table(AUDIT)?;
        for entry in table.iter()?.rev() {
            let (_, v) = entry?;
            let event: AuditEvent = decode(v.value())?;
            if event.at_us < since_us || !f(event) {
                break;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::revocation::RevocationTarget;
    use crate::store::{db, seed};

    const S: u64 = 1_000_000;

    #[test]
    fn stored_entries_widen_on_a_second_revocation_and_expired_ones_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let (store, clock) = db::open_with_clock(dir.path(), 100).unwrap();
        let entry = |target, at, lifetime| Revocation::new(target, at, None, lifetime);
        seed::in_transaction(&store, &clock, |b| {
            let jti = RevocationTarget::Jti("j".into());
            let sub = RevocationTarget::Subject("s".into());
            b.put_revocation(entry(jti, 10 * S, 100)).unwrap();
            b.put_revocation(entry(sub.clone(), 10 * S, 1000)).unwrap();
            let widened = b.put_revocation(entry(sub, 20 * S, 1000)).unwrap();
            assert_eq!(widened.revoked_at_us, 20 * S);
        });
        assert_eq!(store.reader().unwrap().revocations().unwrap().len(), 2);
        let pruned =
            seed::in_transaction(&store, &clock, |b| b.prune_revocations(500 * S).unwrap());
        assert_eq!(pruned, 1, "the jti entry outlived its 100 s bound");
        let left = store.reader().unwrap().revocations().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].target, RevocationTarget::Subject("s".into()));
        assert_eq!(left[0].revoked_at_us, 20 * S);
    }
}
