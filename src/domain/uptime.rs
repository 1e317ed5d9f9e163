//! Operational time: a node is up from each heartbeat until the next one or until the
//! timeout after it, whichever comes first. Operational time in a window is the length of
//! the union of those intervals, clipped to the window.
//!
//! All times are the server's receive times in microseconds on its monotonic-anchored
//! clock (see `clock`), so wall-clock steps on the appliance cannot change the result.

use crate::clock::Micros;

/// Microseconds of operational time in `[window_start, window_end)`.
///
/// `receipts` are receive times in ascending order; they should include the last heartbeat
/// before the window (it may cover the window's start). Duplicates are harmless.
pub fn operational_micros(
    receipts: &[Micros],
    timeout: Micros,
    window_start: Micros,
    window_end: Micros,
) -> Micros {
    if window_end <= window_start {
        return 0;
    }
    let mut total = 0;
    for (i, &start) in receipts.iter().enumerate() {
        let mut end = start.saturating_add(timeout);
        if let Some(&next) = receipts.get(i + 1) {
            end = end.min(next);
        }
        // Each interval ends no later than the next one starts: they never overlap, so
        // the union's length is the sum of the clipped lengths.
        let s = start.max(window_start);
        let e = end.min(window_end);
        if e > s {
            total += e - s;
        }
    }
    total
}

/// Whole seconds of operational time (rounded down).
pub fn operational_seconds(
    receipts: &[Micros],
    timeout: Micros,
    window_start: Micros,
    window_end: Micros,
) -> u64 {
    operational_micros(receipts, timeout, window_start, window_end) / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = 1_000_000;

    #[test]
    fn hand_worked_cases() {
        // Window [0, 300 s), timeout 90 s.
        let t = 90 * S;
        assert_eq!(operational_seconds(&[], t, 0, 300 * S), 0);
        // One heartbeat at 10 s: up 10..100.
        assert_eq!(operational_seconds(&[10 * S], t, 0, 300 * S), 90);
        // Every 30 s from 0 to 270: up from 0 to 270+90 clipped to 300.
        let every30: Vec<u64> = (0..10).map(|i| i * 30 * S).collect();
        assert_eq!(operational_seconds(&every30, t, 0, 300 * S), 300);
        // A gap longer than the timeout: 0..90 and 200..290.
        assert_eq!(operational_seconds(&[0, 200 * S], t, 0, 300 * S), 180);
        // A heartbeat before the window covers its start.
        assert_eq!(operational_seconds(&[250 * S], t, 300 * S, 600 * S), 40);
        // A heartbeat near the end is clipped by the window.
        assert_eq!(operational_seconds(&[290 * S], t, 0, 300 * S), 10);
    }

    fn sorted(mut v: Vec<u64>) -> Vec<u64> {
        v.sort_unstable();
        v
    }

    proptest! {
        #[test]
        fn never_more_than_the_window(
            receipts in prop::collection::vec(0u64..2_000 * S, 0..60).prop_map(sorted),
            timeout in 1u64..200 * S,
            start in 0u64..1_000 * S,
            len in 0u64..1_000 * S,
        ) {
            let up = operational_micros(&receipts, timeout, start, start + len);
            prop_assert!(up <= len);
        }

        #[test]
        fn adding_a_heartbeat_never_removes_time(
            receipts in prop::collection::vec(0u64..2_000 * S, 0..40).prop_map(sorted),
            extra in 0u64..2_000 * S,
            timeout in 1u64..200 * S,
        ) {
            let before = operational_micros(&receipts, timeout, 500 * S, 1_500 * S);
            let mut more = receipts.clone();
            more.push(extra);
            more.sort_unstable();
            let after = operational_micros(&more, timeout, 500 * S, 1_500 * S);
            prop_assert!(after >= before);
        }

        #[test]
        fn duplicated_heartbeats_change_nothing(
            receipts in prop::collection::vec(0u64..2_000 * S, 1..40).prop_map(sorted),
            which in any::<prop::sample::Index>(),
            timeout in 1u64..200 * S,
        ) {
            let mut dup = receipts.clone();
            dup.push(receipts[which.index(receipts.len())]);
            dup.sort_unstable();
            prop_assert_eq!(
                operational_micros(&receipts, timeout, 0, 2_000 * S),
                operational_micros(&dup, timeout, 0, 2_000 * S)
            );
        }

        #[test]
        fn windows_split_add_up(
            receipts in prop::collection::vec(0u64..2_000 * S, 0..40).prop_map(sorted),
            timeout in 1u64..200 * S,
            cut in 0u64..2_000 * S,
        ) {
            let whole = operational_micros(&receipts, timeout, 0, 2_000 * S);
            let left = operational_micros(&receipts, timeout, 0, cut);
            let right = operational_micros(&receipts, timeout, cut, 2_000 * S);
            prop_assert_eq!(whole, left + right);
        }
    }
}
