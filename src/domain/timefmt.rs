//! RFC 3339 UTC timestamps with exactly six fractional digits, so the same instant always
//! prints the same way (hashes in audit events and proofs cover these strings).

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// `2026-11-25T14:49:45.123456Z` for the given microseconds since the epoch.
pub fn rfc3339_us(us: u64) -> String {
    let secs = (us / 1_000_000) as i64;
    let micros = us % 1_000_000;
    match OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            micros
        ),
        Err(_) => "9999-12-31T23:59:59.999999Z".to_string(),
    }
}

/// Parses an RFC 3339 timestamp (any offset) into microseconds since the epoch.
pub fn parse_rfc3339_us(s: &str) -> Option<u64> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    let nanos = t.unix_timestamp_nanos();
    if nanos < 0 {
        return None;
    }
    u64::try_from(nanos / 1000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_six_fraction_digits() {
        assert_eq!(rfc3339_us(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            rfc3339_us(1_764_082_185_123_456),
            "2025-11-25T14:49:45.123456Z"
        );
    }

    #[test]
    fn parse_roundtrips_formatted_times() {
        for us in [0u64, 1, 999_999, 1_764_082_185_123_456] {
            assert_eq!(parse_rfc3339_us(&rfc3339_us(us)), Some(us));
        }
        assert_eq!(
            parse_rfc3339_us("2025-11-25T15:49:45+01:00"),
            Some(1_764_082_185_000_000)
        );
        assert_eq!(parse_rfc3339_us("yesterday"), None);
    }
}
