//! Token revocation: which tokens a revocation covers and when its entry may be forgotten.
//!
//! A revocation names one token (`jti`) or every token of a subject issued up to the
//! revocation (`subject`; any role: a node's subject is its node_id). Tokens carry their
//! issue time in microseconds (`iat_us`), so "issued up to now" is exact: a token issued
//! for the same subject in the same second, after the revocation, still works. A token
//! without `iat_us` (issued by an older build, or by another Lucid service sharing
//! `JWT_SECRET`) is judged by its whole-second `iat`: it counts as issued up to the
//! revocation when its second is not after the revocation's, so such a token is never let
//! through wrongly (at worst one issued later in that very second is refused too).
//!
//! An entry is needed only while a token it covers can still verify: a `jti` entry until
//! that token's expiry (when known, else as for a subject), a `subject` entry until the
//! revocation time plus the longest lifetime a token can have. Past that it is pruned.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::clock::Micros;

/// The longest lifetime a token issued by this service can have, in seconds: `POST
/// /api/v1/tokens` and `token issue` refuse longer ones; node tokens live
/// `NODE_TOKEN_TTL` (see [`max_token_lifetime_secs`]).
pub const MAX_TOKEN_TTL_SECONDS: u64 = 366 * 86_400;

/// Seconds a token is still accepted after its `exp` (clock skew between services).
pub const VERIFY_LEEWAY_SECONDS: u64 = 5;

/// The longest any token of this service lives: the issued-token bound or the node token
/// lifetime, whichever is longer.
pub fn max_token_lifetime_secs(node_token_ttl_secs: u64) -> u64 {
    MAX_TOKEN_TTL_SECONDS.max(node_token_ttl_secs)
}

/// What a revocation names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RevocationTarget {
    /// One token, by its `jti` claim.
    Jti(String),
    /// Every token of this subject issued up to `revoked_at_us`.
    Subject(String),
}

impl RevocationTarget {
    /// The entry's key in storage: one entry per token or subject.
    pub fn key(&self) -> String {
        match self {
            Self::Jti(j) => format!("jti:{j}"),
            Self::Subject(s) => format!("sub:{s}"),
        }
    }
}

/// One revocation entry as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub target: RevocationTarget,
    /// Wall-clock microseconds; for a subject, tokens issued up to this instant are refused.
    pub revoked_at_us: Micros,
    /// When the entry may be forgotten: no token it covers verifies after this.
    pub expires_at_us: Micros,
}

impl Revocation {
    /// A new entry. `token_exp_secs` is the revoked token's expiry when known (jti only);
    /// without it the entry lasts as long as the longest-lived token could.
    pub fn new(
        target: RevocationTarget,
        revoked_at_us: Micros,
        token_exp_secs: Option<u64>,
        max_lifetime_secs: u64,
    ) -> Self {
        let bound = revoked_at_us
            .saturating_add((max_lifetime_secs + VERIFY_LEEWAY_SECONDS).saturating_mul(1_000_000));
        let expires_at_us = match (&target, token_exp_secs) {
            (RevocationTarget::Jti(_), Some(exp)) => exp
                .saturating_add(VERIFY_LEEWAY_SECONDS)
                .saturating_mul(1_000_000)
                .min(bound),
            _ => bound,
        };
        Self {
            target,
            revoked_at_us,
            expires_at_us,
        }
    }

    pub fn is_expired(&self, now_us: Micros) -> bool {
        self.expires_at_us < now_us
    }

    /// The entry after revoking the same target again: covers everything either did.
    pub fn merged_with(self, earlier: &Revocation) -> Revocation {
        Revocation {
            revoked_at_us: self.revoked_at_us.max(earlier.revoked_at_us),
            expires_at_us: self.expires_at_us.max(earlier.expires_at_us),
            target: self.target,
        }
    }
}

/// When a token was issued, as far as its claims tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IssuedAt {
    pub iat_secs: u64,
    pub iat_us: Option<Micros>,
}

impl IssuedAt {
    /// Whether the token was issued at or before `instant_us`. Without microseconds the
    /// token's whole second counts: not after the instant's second means covered.
    pub fn not_after(&self, instant_us: Micros) -> bool {
        match self.iat_us {
            Some(us) => us <= instant_us,
            None => self.iat_secs <= instant_us / 1_000_000,
        }
    }
}

/// The revocations in force, in memory, for an O(1) check on every request.
#[derive(Debug, Default, Clone)]
pub struct Revocations {
    by_jti: HashMap<String, Revocation>,
    by_subject: HashMap<String, Revocation>,
}

impl Revocations {
    pub fn from_entries(entries: impl IntoIterator<Item = Revocation>) -> Self {
        let mut set = Self::default();
        for e in entries {
            set.insert(e);
        }
        set
    }

    /// Adds (or widens) an entry.
    pub fn insert(&mut self, entry: Revocation) {
        let map = match &entry.target {
            RevocationTarget::Jti(j) => (&mut self.by_jti, j.clone()),
            RevocationTarget::Subject(s) => (&mut self.by_subject, s.clone()),
        };
        let (map, key) = map;
        let merged = match map.get(&key) {
            Some(old) => entry.merged_with(old),
            None => entry,
        };
        map.insert(key, merged);
    }

    /// The entry that refuses a token with these claims, if any.
    pub fn covering(&self, jti: &str, subject: &str, issued: IssuedAt) -> Option<&Revocation> {
        // Checked on every request (heartbeats included): an empty map costs no hashing.
        if !self.by_jti.is_empty() {
            if let Some(r) = self.by_jti.get(jti) {
                return Some(r);
            }
        }
        if self.by_subject.is_empty() {
            return None;
        }
        self.by_subject
            .get(subject)
            .filter(|r| issued.not_after(r.revoked_at_us))
    }

    /// Drops the entries that can no longer refuse anything; returns how many.
    pub fn prune(&mut self, now_us: Micros) -> usize {
        let before = self.len();
        self.by_jti.retain(|_, r| !r.is_expired(now_us));
        self.by_subject.retain(|_, r| !r.is_expired(now_us));
        before - self.len()
    }

    pub fn len(&self) -> usize {
        self.by_jti.len() + self.by_subject.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a token with this jti is revoked by its own entry (not by its subject's).
    pub fn has_jti(&self, jti: &str) -> bool {
        self.by_jti.contains_key(jti)
    }

    /// The latest revocation time of any entry.
    pub fn latest_revoked_at_us(&self) -> Option<Micros> {
        self.by_jti
            .values()
            .chain(self.by_subject.values())
            .map(|r| r.revoked_at_us)
            .max()
    }

    /// The subject entry for `subject`, if any.
    pub fn subject_entry(&self, subject: &str) -> Option<&Revocation> {
        self.by_subject.get(subject)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000;
    const DAY: u64 = 86_400;

    fn at(secs: u64, us: u64) -> IssuedAt {
        IssuedAt {
            iat_secs: secs,
            iat_us: Some(secs * S + us),
        }
    }

    fn subject(s: &str, revoked_at_us: u64) -> Revocation {
        Revocation::new(
            RevocationTarget::Subject(s.into()),
            revoked_at_us,
            None,
            MAX_TOKEN_TTL_SECONDS,
        )
    }

    #[test]
    fn a_subject_revocation_covers_tokens_issued_up_to_it_and_not_after_in_the_same_second() {
        let set = Revocations::from_entries([subject("op-1", 100 * S + 500)]);
        assert!(set.covering("a", "op-1", at(100, 499)).is_some());
        assert!(set.covering("a", "op-1", at(100, 500)).is_some());
        assert!(set.covering("a", "op-1", at(100, 501)).is_none());
        assert!(set.covering("a", "op-1", at(101, 0)).is_none());
        assert!(set.covering("a", "op-2", at(99, 0)).is_none());
    }

    #[test]
    fn tokens_without_microseconds_are_judged_by_their_whole_second_never_let_through_early() {
        let set = Revocations::from_entries([subject("op-1", 100 * S + 500)]);
        let legacy = |secs| IssuedAt {
            iat_secs: secs,
            iat_us: None,
        };
        assert!(set.covering("a", "op-1", legacy(99)).is_some());
        assert!(set.covering("a", "op-1", legacy(100)).is_some());
        assert!(set.covering("a", "op-1", legacy(101)).is_none());
    }

    #[test]
    fn a_jti_revocation_covers_that_token_whenever_it_was_issued() {
        let r = Revocation::new(
            RevocationTarget::Jti("j1".into()),
            100 * S,
            Some(200),
            MAX_TOKEN_TTL_SECONDS,
        );
        let set = Revocations::from_entries([r]);
        assert!(set.covering("j1", "anyone", at(150, 0)).is_some());
        assert!(set.covering("j2", "anyone", at(50, 0)).is_none());
    }

    #[test]
    fn a_jti_entry_expires_with_its_token_and_a_subject_entry_after_the_longest_lifetime() {
        let jti = Revocation::new(RevocationTarget::Jti("j".into()), 100 * S, Some(200), 1000);
        assert_eq!(jti.expires_at_us, (200 + VERIFY_LEEWAY_SECONDS) * S);
        let unknown = Revocation::new(RevocationTarget::Jti("j".into()), 100 * S, None, 1000);
        assert_eq!(
            unknown.expires_at_us,
            (100 + 1000 + VERIFY_LEEWAY_SECONDS) * S
        );
        // A claimed expiry past what any token can live is capped by the lifetime bound.
        let capped = Revocation::new(
            RevocationTarget::Jti("j".into()),
            100 * S,
            Some(u64::MAX),
            1000,
        );
        assert_eq!(capped.expires_at_us, unknown.expires_at_us);
        let sub = Revocation::new(
            RevocationTarget::Subject("s".into()),
            100 * S,
            Some(200),
            1000,
        );
        assert_eq!(sub.expires_at_us, unknown.expires_at_us);
    }

    #[test]
    fn expired_entries_are_pruned_and_live_ones_kept() {
        let mut set = Revocations::from_entries([
            Revocation::new(RevocationTarget::Jti("old".into()), 10 * S, Some(20), DAY),
            Revocation::new(
                RevocationTarget::Jti("new".into()),
                10 * S,
                Some(10_000),
                DAY,
            ),
            Revocation::new(RevocationTarget::Subject("s".into()), 10 * S, None, 100),
        ]);
        assert_eq!(
            set.prune((20 + VERIFY_LEEWAY_SECONDS) * S),
            0,
            "not before the leeway"
        );
        assert_eq!(set.prune(1000 * S), 2);
        assert!(set.has_jti("new"));
        assert!(!set.has_jti("old"));
        assert!(set.subject_entry("s").is_none());
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn revoking_a_subject_again_covers_the_later_tokens_too() {
        let mut set = Revocations::from_entries([subject("s", 100 * S)]);
        set.insert(subject("s", 50 * S));
        assert_eq!(set.subject_entry("s").unwrap().revoked_at_us, 100 * S);
        set.insert(subject("s", 300 * S));
        assert!(set.covering("x", "s", at(200, 0)).is_some());
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn the_lifetime_bound_follows_a_longer_node_token_ttl() {
        assert_eq!(max_token_lifetime_secs(3600), MAX_TOKEN_TTL_SECONDS);
        assert_eq!(max_token_lifetime_secs(400 * DAY), 400 * DAY);
    }
}
