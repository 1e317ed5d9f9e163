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
