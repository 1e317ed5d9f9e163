//! The service clock: wall time anchored once, advanced by the monotonic clock.
//!
//! Edge boards often boot without a real-time clock and have their wall clock stepped
//! later by NTP. Measuring every interval on `Instant` means such a step can neither
//! create nor destroy operational time; a step is only detected and logged.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub type Micros = u64;

#[derive(Debug, Clone)]
pub struct Clock {
    anchor_wall_us: Micros,
    anchor_instant: Instant,
}

/// Watches the wall clock against the service clock and reports steps (NTP setting the
/// time on a board that booted without a real-time clock, an admin changing it, ...).
/// Steps are logged and counted; they never change the service clock.
pub struct JumpDetector {
    last_drift_us: i64,
    threshold_us: i64,
}

impl JumpDetector {
    pub fn new(initial_drift_us: i64, threshold_us: i64) -> Self {
        Self {
            last_drift_us: initial_drift_us,
            threshold_us,
        }
    }

    /// Feeds the current drift; returns the size of a step since the last call, if any.
    pub fn observe(&mut self, drift_us: i64) -> Option<i64> {
        let step = drift_us - self.last_drift_us;
        self.last_drift_us = drift_us;
        (step.abs() >= self.threshold_us).then_some(step)
    }
}

/// Debug builds only: `LUCID_DEBUG_CLOCK_AHEAD_SECS` starts the service clock that far
/// ahead of the wall clock, so a black-box test can see days pass (proofs rolled up past
/// `PROOF_RETENTION`). Release builds ignore it.
fn debug_ahead_us() -> Micros {
    if !cfg!(debug_assertions) {
        return 0;
    }
    std::env::var("LUCID_DEBUG_CLOCK_AHEAD_SECS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(0, |s| s * 1_000_000)
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    pub fn new() -> Self {
        Self {
            anchor_wall_us: wall_now_us(),
            anchor_instant: Instant::now(),
        }
    }

    /// A clock that never reads earlier than `floor_us`: the latest time this database has
    /// recorded. A board that boots without a real-time clock starts with a stale wall time;
    /// continuing from the recorded time keeps stored times in order across restarts.
    pub fn starting_at_least(floor_us: Micros) -> Self {
        let wall = wall_now_us() + debug_ahead_us();
        if wall < floor_us {
            tracing::warn!(
                behind_seconds = (floor_us - wall) / 1_000_000,
                "the wall clock is behind the last recorded time (no real-time clock?); continuing from the recorded time"
            );
        }
        Self {
            anchor_wall_us: wall.max(floor_us),
            anchor_instant: Instant::now(),
        }
    }

    /// Current time in microseconds since the epoch, monotonic within this process.
    pub fn now_us(&self) -> Micros {
        self.anchor_wall_us + self.anchor_instant.elapsed().as_micros() as u64
    }

    /// How far the wall clock has moved away from the monotonic estimate, in
    /// microseconds (positive: the wall clock is ahead). Used to detect and log steps.
    pub fn wall_drift_us(&self) -> i64 {
        wall_now_us() as i64 - self.now_us() as i64
    }
}

fn wall_now_us() -> Micros {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wall_clock_steps_are_detected_once() {
        let mut d = JumpDetector::new(0, 2_000_000);
        assert_eq!(d.observe(100), None);
        assert_eq!(d.observe(3_600_000_100), Some(3_600_000_000));
        assert_eq!(
            d.observe(3_600_000_200),
            None,
            "the new offset is the new normal"
        );
        assert_eq!(d.observe(200), Some(-3_600_000_000));
    }

    #[test]
    fn a_stale_wall_clock_does_not_take_time_backwards() {
        let future = wall_now_us() + 3_600_000_000;
        let clock = Clock::starting_at_least(future);
        assert!(clock.now_us() >= future);
    }

    #[test]
    fn clock_never_goes_backwards() {
        let clock = Clock::new();
        let mut last = clock.now_us();
        for _ in 0..1000 {
            let now = clock.now_us();
            assert!(now >= last);
            last = now;
        }
    }
}
