//! Work credits: `operational_seconds * REWARD_USDT_PER_HOUR / 3600`, rounded down to one
//! micro-USDT, with the remainder carried per node so that no dust is lost over time.
//!
//! The arithmetic is exact: the carry is kept as a numerator in "USDT-seconds per hour"
//! (`ops * rate`), whose micro-units are whole numbers because the rate has at most six
//! decimal places. Division by 3600 is integer division; its remainder is the new carry.

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

/// The result of crediting one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochCredit {
    /// Credited now, in USDT (scale 6).
    pub credited: Decimal,
    /// Numerator carried to the next epoch (`< 3600` micro-units).
    pub carry: Decimal,
}

/// Credits one epoch of `operational_seconds` at `rate_per_hour`, given the node's carry.
pub fn credit_epoch(
    operational_seconds: u64,
    rate_per_hour: Decimal,
    carry: Decimal,
) -> EpochCredit {
    let numerator = carry + Decimal::from(operational_seconds) * rate_per_hour;
    // Micro-units of the numerator: an exact integer (scale of rate and carry is <= 6).
    let micro_numerator = (numerator * Decimal::from(1_000_000u32))
        .trunc()
        .to_i128()
        .unwrap_or(0)
        .max(0);
    let credited_micros = micro_numerator / 3600;
    let remainder = micro_numerator % 3600;
    EpochCredit {
        credited: Decimal::from_i128_with_scale(credited_micros, 6),
        carry: Decimal::from_i128_with_scale(remainder, 6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn the_default_rate_for_a_full_epoch() {
        // 300 s at 0.05 USDT/h = 0.0041666.. -> 0.004166, remainder carried.
        let c = credit_epoch(300, d("0.05"), Decimal::ZERO);
        assert_eq!(c.credited, d("0.004166"));
        assert!(c.carry > Decimal::ZERO);
        // Twelve such epochs make exactly one hour: 0.05.
        let mut carry = Decimal::ZERO;
        let mut total = Decimal::ZERO;
        for _ in 0..12 {
            let c = credit_epoch(300, d("0.05"), carry);
            total += c.credited;
            carry = c.carry;
        }
        assert_eq!(total, d("0.05"));
        assert_eq!(carry, Decimal::ZERO);
    }

    #[test]
    fn zero_time_credits_nothing() {
        assert_eq!(
            credit_epoch(0, d("0.05"), Decimal::ZERO).credited,
            Decimal::ZERO
        );
    }

    proptest! {
        #[test]
        fn the_sum_over_epochs_is_the_exact_product_rounded_down(
            epochs in prop::collection::vec(0u64..=300, 1..400),
            rate_micros in 1i64..100_000_000,
        ) {
            let rate = Decimal::new(rate_micros, 6);
            let mut carry = Decimal::ZERO;
            let mut total = Decimal::ZERO;
            for &ops in &epochs {
                let c = credit_epoch(ops, rate, carry);
                prop_assert!(c.credited >= Decimal::ZERO);
                prop_assert!(c.credited.scale() <= 6);
                total += c.credited;
                carry = c.carry;
            }
            let seconds: u64 = epochs.iter().sum();
            // exact = seconds * rate / 3600, in micro-USDT, rounded down
            let exact_micros = (seconds as i128 * rate_micros as i128) / 3600;
            let paid_micros = (total * Decimal::from(1_000_000)).to_i128().unwrap();
            prop_assert_eq!(paid_micros, exact_micros, "never more, never a micro less");
        }
    }
}
