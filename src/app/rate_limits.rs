//! Rate limits (issue 16): per client address on the login routes, per token subject on
//! authenticated routes. Keyed GCRA limiters (`governor`) in memory: a restart forgets
//! them, which costs an attacker nothing it could not get by waiting a burst's length.
//!
//! A key's state is one 8-byte instant; a key whose state is indistinguishable from a fresh
//! one (its burst refilled) carries no information and is dropped by [`RateLimits::sweep`],
//! which a timer runs every second. So the keys held are at most those seen within the
//! last burst's refill time: a flood from many addresses costs memory in proportion to the
//! request rate the server can take, not to the number of addresses ever seen.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

use crate::config::RateLimit;

/// One keyed limiter.
pub struct Keyed<K: std::hash::Hash + Eq + Clone, C: Clock = DefaultClock> {
    limiter: RateLimiter<K, HashMapStateStore<K>, C, NoOpMiddleware<C::Instant>>,
}

impl<K: std::hash::Hash + Eq + Clone> Keyed<K> {
    pub fn new(limit: RateLimit) -> Self {
        Self::with_clock(limit, DefaultClock::default())
    }
}

impl<K: std::hash::Hash + Eq + Clone, C: Clock> Keyed<K, C> {
    pub fn with_clock(limit: RateLimit, clock: C) -> Self {
        let per_second = NonZeroU32::new(limit.per_second).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(limit.burst).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Self {
            limiter: RateLimiter::hashmap_with_clock(quota, clock),
        }
    }

    /// `Err(wait)` when `key` is over its limit: how long until its next request passes.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        self.limiter
            .check_key(key)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }

    /// Drops every key whose state equals a fresh one, and gives the memory back.
    pub fn sweep(&self) {
        self.limiter.retain_recent();
        self.limiter.shrink_to_fit();
    }

    /// Keys held.
    pub fn len(&self) -> usize {
        self.limiter.len()
    }

    pub fn is_empty(&self) -> bool {
        self.limiter.is_empty()
    }
}

/// Which limit refused a request (the `limit` label of `lucid_rate_limited_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Auth,
    Token,
}

impl LimitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            LimitKind::Auth => "auth",
            LimitKind::Token => "token",
        }
    }
}

/// Both limits; `None` is a limit turned off (`0`).
pub struct RateLimits {
    pub auth: Option<Keyed<IpAddr>>,
    pub token: Option<Keyed<String>>,
}

impl RateLimits {
    pub fn new(auth: Option<RateLimit>, token: Option<RateLimit>) -> Self {
        Self {
            auth: auth.map(Keyed::new),
            token: token.map(Keyed::new),
        }
    }

    /// A request from `peer` to a login route.
    pub fn check_address(&self, peer: IpAddr) -> Result<(), Duration> {
        match &self.auth {
            Some(limiter) => limiter.check(&client_key(peer)),
            None => Ok(()),
        }
    }

    /// A request by the holder of a token with this subject (the caller exempts admins).
    pub fn check_subject(&self, subject: &str) -> Result<(), Duration> {
        match &self.token {
            Some(limiter) => limiter.check(&subject.to_string()),
            None => Ok(()),
        }
    }

    /// Keys held by the address limiter and the subject limiter (0 when off).
    pub fn key_counts(&self) -> (usize, usize) {
        (
            self.auth.as_ref().map_or(0, Keyed::len),
            self.token.as_ref().map_or(0, Keyed::len),
        )
    }

    pub fn sweep(&self) {
        if let Some(l) = &self.auth {
            l.sweep();
        }
        if let Some(l) = &self.token {
            l.sweep();
        }
    }
}

/// The key of a client address: IPv4 as is; IPv6 by its /64, the block one subscriber
/// usually holds whole (counting single IPv6 addresses would let one host take 2^64 keys).
/// An IPv4-mapped IPv6 address counts as its IPv4 address.
pub fn client_key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

/// Whole seconds for `Retry-After`, rounded up (at least 1).
pub fn retry_after_secs(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn limit(per_second: u32, burst: u32) -> RateLimit {
        RateLimit { per_second, burst }
    }

    #[test]
    fn a_burst_passes_then_the_next_request_waits_for_the_rate() {
        let clock = FakeRelativeClock::default();
        let l = Keyed::with_clock(limit(10, 3), clock.clone());
        for _ in 0..3 {
            assert!(l.check(&"a").is_ok());
        }
        let wait = l.check(&"a").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
        // Another key is unaffected.
        assert!(l.check(&"b").is_ok());
        clock.advance(Duration::from_millis(100));
        assert!(l.check(&"a").is_ok());
    }

    #[test]
    fn a_flood_of_keys_is_forgotten_once_their_bursts_refill() {
        let clock = FakeRelativeClock::default();
        let l = Keyed::with_clock(limit(10, 30), clock.clone());
        for i in 0..50_000u32 {
            let _ = l.check(&IpAddr::from(i.to_be_bytes()));
        }
        assert_eq!(l.len(), 50_000);
        // A sweep before their state refilled keeps them (they still count).
        l.sweep();
        assert_eq!(l.len(), 50_000);
        clock.advance(Duration::from_secs(4));
        // A key still over its limit survives the sweep; the refilled ones go.
        for _ in 0..40 {
            let _ = l.check(&IpAddr::from([10, 0, 0, 1]));
        }
        l.sweep();
        assert_eq!(l.len(), 1);
        assert!(l.check(&IpAddr::from([10, 0, 0, 1])).is_err());
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), IpAddr::from([192, 0, 2, 7]));
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
    }

    #[test]
    fn a_limit_turned_off_never_refuses() {
        let limits = RateLimits::new(None, None);
        for _ in 0..1000 {
            assert!(limits.check_address(IpAddr::from([1, 2, 3, 4])).is_ok());
            assert!(limits.check_subject("op").is_ok());
        }
    }
}
