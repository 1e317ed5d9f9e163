//! Money: USDT as `rust_decimal`, six decimal places, never floats. Amounts travel as
//! decimal strings (`"10.500000"`).

use rust_decimal::{Decimal, RoundingStrategy};

/// USDT has six decimal places (one micro-USDT is the smallest unit).
pub const USDT_SCALE: u32 = 6;

/// Rounds toward zero to six places: credits are never rounded up.
pub fn floor_usdt(amount: Decimal) -> Decimal {
    amount.round_dp_with_strategy(USDT_SCALE, RoundingStrategy::ToZero)
}

/// The wire form: always exactly six places, e.g. `"0.000000"`, `"10.500000"`.
pub fn format_usdt(amount: Decimal) -> String {
    let mut d = floor_usdt(amount);
    d.rescale(USDT_SCALE);
    d.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    #[test]
    fn formats_with_exactly_six_places() {
        assert_eq!(format_usdt(Decimal::ZERO), "0.000000");
        assert_eq!(format_usdt(Decimal::from_str("10.5").unwrap()), "10.500000");
        assert_eq!(
            format_usdt(Decimal::from_str("0.0000019").unwrap()),
            "0.000001"
        );
    }

    #[test]
    fn flooring_never_rounds_up() {
        assert_eq!(
            floor_usdt(Decimal::from_str("1.9999999").unwrap()),
            Decimal::from_str("1.999999").unwrap()
        );
    }
}
