//! Enrolment codes: the enrolments by id, the code hashes that find them, and their expiry
//! index. Every change runs in the writer's transaction, so a redeem that consumes a use is
//! judged after every other redeem before it (a one-use code registers one node only).

use std::ops::Bound;

use redb::ReadableTable;

use super::codec::{decode, encode};
use super::error::StoreResult;
use super::queries::{Page, Reader};
use super::tables::*;
use super::Batch;
use crate::clock::Micros;
use crate::domain::enrollment::Enrollment;

impl Batch<'_> {
    pub fn enrollment(&self, enrollment_id: &str) -> StoreResult<Option<Enrollment>> {
        let t = self.txn.open_table(ENROLLMENTS)?;
        let v = t.get(enrollment_id)?;
        v.map(|v| decode(v.value())).transpose()
    }

    /// The enrolment a code's hash belongs to, whether or not it is still open.
    pub fn enrollment_by_code(&self, code_hash: &[u8; 32]) -> StoreResult<Option<Enrollment>> {
        let id = {
            let t = self.txn.open_table(ENROLLMENT_CODES)?;
            let v = t.get(code_hash.as_slice())?;
            v.map(|v| v.value().to_string())
        };
        match id {
            Some(id) => self.enrollment(&id),
            None => Ok(None),
        }
    }

    /// Stores a new enrolment or its next state (fewer uses left).
    pub fn put_enrollment(&mut self, e: &Enrollment) -> StoreResult<()> {
        self.txn
            .open_table(ENROLLMENTS)?
            .insert(e.enrollment_id.as_str(), encode(e).as_slice())?;
        self.txn
            .open_table(ENROLLMENT_CODES)?
            .insert(e.code_hash.as_slice(), e.enrollment_id.as_str())?;
        self.txn
            .open_table(ENROLLMENTS_BY_EXPIRY)?
            .insert((e.expires_at_us, e.enrollment_id.as_str()), ())?;
        Ok(())
    }

    /// Removes an enrolment with its code hash (used up, withdrawn, expired).
    pub fn remove_enrollment(&mut self, e: &Enrollment) -> StoreResult<()> {
        self.txn
            .open_table(ENROLLMENTS)?
            .remove(e.enrollment_id.as_str())?;
        self.txn
            .open_table(ENROLLMENT_CODES)?
            .remove(e.code_hash.as_slice())?;
        self.txn
            .open_table(ENROLLMENTS_BY_EXPIRY)?
            .remove((e.expires_at_us, e.enrollment_id.as_str()))?;
        Ok(())
    }

    /// Removes up to `max` enrolments that expired at or before `now`; returns them.
    pub fn prune_expired_enrollments(
        &mut self,
        now: Micros,
        max: usize,
    ) -> StoreResult<Vec<Enrollment>> {
        let ids: Vec<String> = {
            let t = self.txn.open_table(ENROLLMENTS_BY_EXPIRY)?;
            let mut ids = Vec::new();
            for entry in t.range::<(u64, &str)>(..(now.saturating_add(1), ""))? {
                let (k, _) = entry?;
                ids.push(k.value().1.to_string());
                if ids.len() == max {
                    break;
                }
            }
            ids
        };
        let mut pruned = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(e) = self.enrollment(&id)? {
                self.remove_enrollment(&e)?;
                pruned.push(e);
            }
        }
        Ok(pruned)
    }
}

impl Reader {
    /// Whether any enrolment expired at or before `now` (the timer writes only then).
    pub fn any_expired_enrollment(&self, now: Micros) -> StoreResult<bool> {
        let t = self.txn.open_table(ENROLLMENTS_BY_EXPIRY)?;
        let first = t.first()?;
        Ok(first.is_some_and(|(k, _)| k.value().0 <= now))
    }

    pub fn enrollment(&self, enrollment_id: &str) -> StoreResult<Option<Enrollment>> {
        let t = self.txn.open_table(ENROLLMENTS)?;
        let v = t.get(enrollment_id)?;
        v.map(|v| decode(v.value())).transpose()
    }

    /// Enrolments in id order after `after` that `keep` accepts, a page of at most `limit`.
    /// The table holds open codes only (used-up, withdrawn and expired ones are removed), so
    /// the scan is short.
    pub fn enrollments(
        &self,
        after: Option<&str>,
        limit: usize,
        keep: impl Fn(&Enrollment) -> bool,
    ) -> StoreResult<Page<Enrollment>> {
        let t = self.txn.open_table(ENROLLMENTS)?;
        let start = match after {
            Some(a) => Bound::Excluded(a),
            None => Bound::Unbounded,
        };
        let mut items: Vec<Enrollment> = Vec::new();
        for entry in t.range::<&str>((start, Bound::Unbounded))? {
            let (_, v) = entry?;
            let e: Enrollment = decode(v.value())?;
            if !keep(&e) {
                continue;
            }
            if items.len() == limit {
                let next = items.last().map(|l| l.enrollment_id.clone());
                return Ok(Page { items, next });
            }
            items.push(e);
        }
        Ok(Page { items, next: None })
    }
}
