//! Heartbeats: the canonical bytes a node signs.

use serde::{Deserialize, Serialize};

/// An accepted heartbeat as stored (keyed by receive time and node).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredHeartbeat {
    pub seq: u64,
    /// The canonical bytes the node signed.
    pub canonical: String,
    pub signature: Vec<u8>,
    pub sessions_active: u64,
    pub bytes_relayed: u64,
    pub cpu_load: f64,
    pub mem_used_mb: u64,
}

impl StoredHeartbeat {
    /// Merkle leaf data: canonical bytes followed by the 64 signature bytes.
    pub fn leaf_data(&self) -> Vec<u8> {
        let mut data = Vec::with_capacity(self.canonical.len() + self.signature.len());
        data.extend_from_slice(self.canonical.as_bytes());
        data.extend_from_slice(&self.signature);
        data
    }

    /// Its Merkle leaf: `leaf_hash(leaf_data())`, without building the data.
    pub fn leaf(&self) -> super::merkle::Hash {
        super::merkle::leaf_hash_parts(&[self.canonical.as_bytes(), &self.signature])
    }
}

/// `lucid-hb-v1|{node_id}|{seq}|{sent_at}|{sessions_active}|{bytes_relayed}|{cpu_load}|{mem_used_mb}`
/// with every number exactly as the node sent it in its JSON.
#[allow(clippy::too_many_arguments)]
pub fn canonical_bytes(
    node_id: &str,
    seq: &str,
    sent_at: &str,
    sessions_active: &str,
    bytes_relayed: &str,
    cpu_load: &str,
    mem_used_mb: &str,
) -> String {
    format!(
        "lucid-hb-v1|{node_id}|{seq}|{sent_at}|{sessions_active}|{bytes_relayed}|{cpu_load}|{mem_used_mb}"
    )
}

/// Longest raw JSON text of a heartbeat number (`seq`, `cpu_load`, ...): they are kept and
/// signed as sent, and the stored row holds `cpu_load`'s text with a one-byte length.
pub const MAX_NUMBER_TEXT: usize = 32;

/// `HEARTBEAT_MIN_INTERVAL`: whether a heartbeat received at `now_us` comes too soon after
/// the node's last accepted one (received at `last_us`). `Err` carries the whole seconds
/// (at least 1) until one would be accepted. A zero interval never refuses.
pub fn paced(last_us: Option<u64>, now_us: u64, min_interval_us: u64) -> Result<(), u64> {
    let Some(last) = last_us else {
        return Ok(());
    };
    let allowed_at = last.saturating_add(min_interval_us);
    if min_interval_us == 0 || now_us >= allowed_at {
        return Ok(());
    }
    Err((allowed_at - now_us).div_ceil(1_000_000).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacing_refuses_until_the_interval_has_passed_and_says_how_long_to_wait() {
        const S: u64 = 1_000_000;
        assert_eq!(paced(None, 10 * S, 5 * S), Ok(()));
        assert_eq!(paced(Some(10 * S), 10 * S, 5 * S), Err(5));
        assert_eq!(paced(Some(10 * S), 11 * S + 1, 5 * S), Err(4));
        assert_eq!(paced(Some(10 * S), 15 * S - 1, 5 * S), Err(1));
        assert_eq!(paced(Some(10 * S), 15 * S, 5 * S), Ok(()));
        // A clock that went back still refuses, for the whole interval at most.
        assert_eq!(paced(Some(10 * S), 9 * S, 5 * S), Err(6));
        assert_eq!(paced(Some(10 * S), 10 * S, 0), Ok(()));
    }

    #[test]
    fn canonical_form_matches_the_contract() {
        assert_eq!(
            canonical_bytes(
                "node_a",
                "42",
                "2026-01-01T00:00:00Z",
                "3",
                "123456",
                "0.35",
                "412"
            ),
            "lucid-hb-v1|node_a|42|2026-01-01T00:00:00Z|3|123456|0.35|412"
        );
    }
}

/// The compact stored form of a heartbeat (kept `HEARTBEAT_RETENTION`, 7 days, so its size
/// is most of the database): the fields as sent, without the canonical string (rebuilt
/// from them and the node id, which the row's key holds) and without numbers stored twice.
///
/// Layout: [`TAG`](compact::TAG), then LEB128 `seq`, `sessions_active`, `bytes_relayed`,
/// `mem_used_mb`; `cpu_load` as a plain decimal (a byte `0xF0 + scale`, then the LEB128
/// mantissa) or as its text (length byte + bytes); `sent_at` as a time tag and value, the
/// common forms relative to the row's receive time (the key holds it, and a node's clock is
/// near the appliance's, so the difference takes 2-4 bytes); the 64 signature bytes.
/// Integers re-render exactly: JSON integers have a single decimal form. About 80 bytes
/// against about 190 before.
pub mod compact {
    use super::{canonical_bytes, StoredHeartbeat};
    use time::format_description::well_known::Rfc3339;
    use time::OffsetDateTime;

    /// First byte of a compact row. A bincode row starts with a varint, which never
    /// begins with 0xFF, so both forms can live in one table.
    pub const TAG: u8 = 0xFF;

    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let byte = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn put_text(out: &mut Vec<u8>, s: &str) -> Option<()> {
        out.push(u8::try_from(s.len()).ok().filter(|n| *n < DECIMAL)?);
        out.extend_from_slice(s.as_bytes());
        Some(())
    }

    /// A length byte at or above this is a decimal's marker (`DECIMAL + scale`).
    const DECIMAL: u8 = 0xF0;
    const MAX_SCALE: u32 = 9;

    /// `12.345` -> (12345, 3) when the text is exactly what rendering those gives back.
    fn plain_decimal(text: &str) -> Option<(u64, u32)> {
        let (int, frac) = text.split_once('.').unwrap_or((text, ""));
        let scale = frac.len() as u32;
        if scale > MAX_SCALE || int.is_empty() || (text.contains('.') && frac.is_empty()) {
            return None;
        }
        let digits: String = [int, frac].concat();
        if !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mantissa: u64 = digits.parse().ok()?;
        (render_decimal(mantissa, scale) == text).then_some((mantissa, scale))
    }

    fn render_decimal(mantissa: u64, scale: u32) -> String {
        if scale == 0 {
            return mantissa.to_string();
        }
        let unit = 10u64.pow(scale);
        format!(
            "{}.{:0width$}",
            mantissa / unit,
            mantissa % unit,
            width = scale as usize
        )
    }

    fn zigzag(v: i64) -> u64 {
        ((v << 1) ^ (v >> 63)) as u64
    }

    fn unzigzag(v: u64) -> i64 {
        ((v >> 1) as i64) ^ -((v & 1) as i64)
    }

    /// The sent_at time as Unix nanoseconds, when its RFC 3339 text is exactly what
    /// formatting those nanoseconds gives back.
    fn round_trip_nanos(sent_at: &str) -> Option<u64> {
        let t = OffsetDateTime::parse(sent_at, &Rfc3339).ok()?;
        if !t.offset().is_utc() {
            return None;
        }
        let nanos = u64::try_from(t.unix_timestamp_nanos()).ok()?;
        (t.format(&Rfc3339).ok()? == sent_at).then_some(nanos)
    }

    fn nanos_text(nanos: u64) -> Option<String> {
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(nanos))
            .ok()?
            .format(&Rfc3339)
            .ok()
    }

    /// The fields of canonical bytes, as sent.
    struct Parts<'a> {
        seq: u64,
        sent_at: &'a str,
        sessions_active: u64,
        bytes_relayed: u64,
        cpu_load: &'a str,
        mem_used_mb: u64,
    }

    fn parts<'a>(canonical: &'a str, node_id: &str) -> Option<Parts<'a>> {
        let rest = canonical.strip_prefix("lucid-hb-v1|")?;
        let rest = rest.strip_prefix(node_id)?.strip_prefix('|')?;
        let f: Vec<&str> = rest.split('|').collect();
        let [seq, sent_at, sessions, bytes, cpu, mem] = f.as_slice() else {
            return None;
        };
        // Integers must re-render to the same text (no sign, no leading zeros).
        let int = |s: &str| s.parse::<u64>().ok().filter(|v| v.to_string() == s);
        Some(Parts {
            seq: int(seq)?,
            sent_at,
            sessions_active: int(sessions)?,
            bytes_relayed: int(bytes)?,
            cpu_load: cpu,
            mem_used_mb: int(mem)?,
        })
    }

    /// The compact row of `hb` of `node_id`, received at `received_us`; None when it cannot
    /// be represented exactly (the caller then stores the full form).
    pub fn encode(node_id: &str, received_us: u64, hb: &StoredHeartbeat) -> Option<Vec<u8>> {
        let p = parts(&hb.canonical, node_id)?;
        if p.seq != hb.seq || hb.signature.len() != 64 {
            return None;
        }
        let mut out = Vec::with_capacity(96);
        out.push(TAG);
        put_varint(&mut out, p.seq);
        put_varint(&mut out, p.sessions_active);
        put_varint(&mut out, p.bytes_relayed);
        put_varint(&mut out, p.mem_used_mb);
        match plain_decimal(p.cpu_load) {
            Some((mantissa, scale)) => {
                out.push(DECIMAL + scale as u8);
                put_varint(&mut out, mantissa);
            }
            None => put_text(&mut out, p.cpu_load)?,
        }
        let received = i64::try_from(received_us).ok()?;
        // The agent's own form (six fraction digits) in 8 bytes, whole seconds in 5, any
        // other UTC time that round-trips from nanoseconds in 9, else the text.
        if let Some(us) = crate::domain::timefmt::parse_rfc3339_us(p.sent_at)
            .filter(|us| crate::domain::timefmt::rfc3339_us(*us) == p.sent_at)
        {
            out.push(2);
            put_varint(&mut out, zigzag(i64::try_from(us).ok()? - received));
        } else {
            match round_trip_nanos(p.sent_at) {
                Some(nanos) if nanos % 1_000_000_000 == 0 => {
                    let secs = i64::try_from(nanos / 1_000_000_000).ok()?;
                    out.push(3);
                    put_varint(&mut out, zigzag(secs - received / 1_000_000));
                }
                Some(nanos) => {
                    out.push(1);
                    put_varint(&mut out, nanos);
                }
                None => {
                    out.push(0);
                    put_text(&mut out, p.sent_at)?;
                }
            }
        }
        out.extend_from_slice(&hb.signature);
        Some(out)
    }

    struct Reader<'a>(&'a [u8]);

    impl<'a> Reader<'a> {
        fn byte(&mut self) -> Option<u8> {
            let (b, rest) = self.0.split_first()?;
            self.0 = rest;
            Some(*b)
        }
        fn varint(&mut self) -> Option<u64> {
            let mut v = 0u64;
            for shift in (0..64).step_by(7) {
                let b = self.byte()?;
                v |= u64::from(b & 0x7f).checked_shl(shift)?;
                if b & 0x80 == 0 {
                    return Some(v);
                }
            }
            None
        }
        fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
            if self.0.len() < n {
                return None;
            }
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Some(head)
        }
        fn text(&mut self) -> Option<&'a str> {
            let n = self.byte()? as usize;
            std::str::from_utf8(self.bytes(n)?).ok()
        }
    }

    /// The heartbeat of `node_id` received at `received_us`, stored as `bytes` (a compact
    /// row); None if damaged.
    pub fn decode(node_id: &str, received_us: u64, bytes: &[u8]) -> Option<StoredHeartbeat> {
        let received = i64::try_from(received_us).ok()?;
        let mut r = Reader(bytes);
        if r.byte()? != TAG {
            return None;
        }
        let seq = r.varint()?;
        let sessions_active = r.varint()?;
        let bytes_relayed = r.varint()?;
        let mem_used_mb = r.varint()?;
        let cpu_text = match r.0.first()? {
            n if *n >= DECIMAL => {
                let scale = u32::from(r.byte()? - DECIMAL);
                if scale > MAX_SCALE {
                    return None;
                }
                render_decimal(r.varint()?, scale)
            }
            _ => r.text()?.to_string(),
        };
        let cpu_text = cpu_text.as_str();
        let sent_at = match r.byte()? {
            1 => nanos_text(r.varint()?)?,
            2 => {
                let us = received.checked_add(unzigzag(r.varint()?))?;
                crate::domain::timefmt::rfc3339_us(u64::try_from(us).ok()?)
            }
            3 => {
                let secs = (received / 1_000_000).checked_add(unzigzag(r.varint()?))?;
                nanos_text(u64::try_from(secs).ok()?.checked_mul(1_000_000_000)?)?
            }
            0 => r.text()?.to_string(),
            _ => return None,
        };
        let signature = r.bytes(64)?.to_vec();
        if !r.0.is_empty() {
            return None;
        }
        let canonical = canonical_bytes(
            node_id,
            &seq.to_string(),
            &sent_at,
            &sessions_active.to_string(),
            &bytes_relayed.to_string(),
            cpu_text,
            &mem_used_mb.to_string(),
        );
        Some(StoredHeartbeat {
            seq,
            canonical,
            signature,
            sessions_active,
            bytes_relayed,
            cpu_load: cpu_text.parse().unwrap_or(0.0),
            mem_used_mb,
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use proptest::prelude::*;

        /// A receive time near the heartbeats' own times.
        const AT: u64 = 1_796_119_200_000_000;

        fn heartbeat(node: &str, seq: u64, sent_at: &str, cpu: &str) -> StoredHeartbeat {
            let cpu_load = cpu.parse().unwrap_or(0.0);
            let canonical =
                canonical_bytes(node, &seq.to_string(), sent_at, "3", "123456", cpu, "412");
            StoredHeartbeat {
                seq,
                canonical,
                signature: (0..64).collect(),
                sessions_active: 3,
                bytes_relayed: 123_456,
                cpu_load,
                mem_used_mb: 412,
            }
        }

        #[test]
        fn a_typical_heartbeat_round_trips_in_under_96_bytes() {
            let hb = heartbeat(
                "node_abcdefghijklmnopqrst",
                42,
                "2026-12-01T10:00:00Z",
                "0.35",
            );
            let row = encode("node_abcdefghijklmnopqrst", AT, &hb).unwrap();
            assert!(row.len() <= 96, "{} bytes", row.len());
            assert_eq!(decode("node_abcdefghijklmnopqrst", AT, &row).unwrap(), hb);
        }

        #[test]
        fn the_agents_time_form_is_stored_as_a_few_bytes_from_the_receive_time() {
            for sent_at in [
                "2026-12-01T10:00:00.123456Z",
                "2026-12-01T10:00:00.123450Z",
                "2026-12-01T10:00:00.000000Z",
            ] {
                let hb = heartbeat("node_a", 1, sent_at, "0.5");
                let row = encode("node_a", AT, &hb).unwrap();
                assert_eq!(decode("node_a", AT, &row).unwrap(), hb, "{sent_at}");
                let whole = encode(
                    "node_a",
                    AT,
                    &heartbeat("node_a", 1, "2026-12-01T10:00:00Z", "0.5"),
                )
                .unwrap();
                assert!(
                    row.len() <= whole.len() + 3,
                    "{sent_at}: {} bytes",
                    row.len()
                );
            }
        }

        #[test]
        fn cpu_load_is_packed_when_it_is_a_plain_decimal_and_kept_as_text_otherwise() {
            for cpu in [
                "0.25",
                "1",
                "0.250",
                "10.5",
                "0",
                "1e3",
                "0.1234567891",
                "1.0E-2",
            ] {
                let hb = heartbeat("node_a", 1, "2026-12-01T10:00:00Z", cpu);
                let row = encode("node_a", AT, &hb).unwrap();
                let back = decode("node_a", AT, &row).unwrap();
                assert_eq!(back.canonical, hb.canonical, "{cpu}");
            }
            let packed = encode(
                "node_a",
                AT,
                &heartbeat("node_a", 1, "2026-12-01T10:00:00Z", "0.25"),
            );
            let text = encode(
                "node_a",
                AT,
                &heartbeat("node_a", 1, "2026-12-01T10:00:00Z", "1e3"),
            );
            assert!(packed.unwrap().len() < text.unwrap().len());
        }

        #[test]
        fn times_that_do_not_round_trip_are_kept_as_text() {
            for sent_at in [
                "2026-12-01T10:00:00.120Z",
                "2026-12-01T10:00:00+02:00",
                "2026-12-01t10:00:00z",
                "2026-12-01T10:00:00.123456789Z",
            ] {
                let hb = heartbeat("node_a", 1, sent_at, "1");
                let row = encode("node_a", AT, &hb).unwrap();
                assert_eq!(
                    decode("node_a", AT, &row).unwrap().canonical,
                    hb.canonical,
                    "{sent_at}"
                );
            }
        }

        #[test]
        fn what_cannot_be_rebuilt_exactly_is_not_compacted() {
            let mut hb = heartbeat("node_a", 1, "2026-12-01T10:00:00Z", "1");
            hb.canonical = hb.canonical.replace("|412", "|0412");
            assert!(encode("node_a", AT, &hb).is_none());
            let hb = heartbeat("node_a", 1, "2026-12-01T10:00:00Z", "1");
            assert!(
                encode("node_b", AT, &hb).is_none(),
                "node id not in the canonical bytes"
            );
        }

        #[test]
        fn damaged_rows_do_not_decode() {
            let hb = heartbeat("node_a", 1, "2026-12-01T10:00:00Z", "1");
            let row = encode("node_a", AT, &hb).unwrap();
            for cut in 0..row.len() {
                assert!(decode("node_a", AT, &row[..cut]).is_none(), "cut at {cut}");
            }
            let mut longer = row.clone();
            longer.push(0);
            assert!(decode("node_a", AT, &longer).is_none());
        }

        proptest! {
            #[test]
            fn every_representable_heartbeat_round_trips(
                seq in 0u64..(1 << 53),
                sessions in any::<u64>(),
                bytes in any::<u64>(),
                mem in any::<u64>(),
                secs in 0i64..4_000_000_000,
                nanos in 0u32..1_000_000_000,
                cpu in "[0-9]{1,3}(\\.[0-9]{1,6})?",
                received in 0u64..8_000_000_000_000_000,
            ) {
                let sent_at = OffsetDateTime::from_unix_timestamp(secs).unwrap()
                    .replace_nanosecond(nanos).unwrap().format(&Rfc3339).unwrap();
                let canonical = canonical_bytes("node_p", &seq.to_string(), &sent_at,
                    &sessions.to_string(), &bytes.to_string(), &cpu, &mem.to_string());
                let hb = StoredHeartbeat { seq, canonical, signature: vec![9; 64],
                    sessions_active: sessions, bytes_relayed: bytes,
                    cpu_load: cpu.parse().unwrap(), mem_used_mb: mem };
                let row = encode("node_p", received, &hb).unwrap();
                prop_assert_eq!(decode("node_p", received, &row).unwrap(), hb);
            }
        }
    }
}
