//! Identifiers with a kind prefix (`node_...`, `pool_...`, `payout_...`), as the rest of the
//! Lucid system expects: pattern `^{kind}_[a-zA-Z0-9_-]+$`.

use rand::Rng;

const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
const RANDOM_LEN: usize = 20;

/// A fresh random id of the given kind, e.g. `node_k3v...` (20 random characters,
/// about 103 bits: unique across appliances without coordination).
pub fn new_id(kind: &str) -> String {
    id_with(kind, b"", RANDOM_LEN)
}

/// `{kind}_{prefix}` followed by `random` characters of [`ALPHABET`].
fn id_with(kind: &str, prefix: &[u8], random: usize) -> String {
    let mut rng = rand::thread_rng();
    let mut id = String::with_capacity(kind.len() + 1 + prefix.len() + random);
    id.push_str(kind);
    id.push('_');
    id.push_str(std::str::from_utf8(prefix).expect("ASCII prefix"));
    // Random bytes in bulk (one call instead of one per character: a payout run makes
    // ids by the hundred thousand); a byte of 252 or more is dropped so that each
    // character stays uniform over the 36.
    let mut pool = [0u8; 64];
    let mut at = pool.len();
    for _ in 0..random {
        loop {
            if at == pool.len() {
                rng.fill(&mut pool[..]);
                at = 0;
            }
            let b = pool[at];
            at += 1;
            if b < 252 {
                id.push(ALPHABET[usize::from(b % 36)] as char);
                break;
            }
        }
    }
    id
}

/// Digits of the time prefix of [`new_time_ordered_id`], in ASCII order so that ids
/// sort by time.
const ORDERED_DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// A fresh id that sorts after every id made with an earlier `stamp_us`: 13 base-36
/// digits of the stamp, then 12 random characters (unique across appliances still).
/// Payouts use it: a run's payouts then append to their tables' B-trees instead of
/// landing on a different page each, which made a large run several times slower.
pub fn new_time_ordered_id(kind: &str, stamp_us: u64) -> String {
    let mut digits = [b'0'; 13];
    let mut t = stamp_us;
    for d in digits.iter_mut().rev() {
        *d = ORDERED_DIGITS[(t % 36) as usize];
        t /= 36;
    }
    id_with(kind, &digits, 12)
}

/// The stamp a [`new_time_ordered_id`] of `kind` was made with; None for any other id.
/// Payouts created by a run are found by it (see `store::payout_chunks`).
pub fn time_ordered_stamp(kind: &str, id: &str) -> Option<u64> {
    let rest = id.strip_prefix(kind)?.strip_prefix('_')?;
    let digits = rest.as_bytes().get(..13)?;
    let mut stamp: u64 = 0;
    for d in digits {
        let v = ORDERED_DIGITS.iter().position(|o| o == d)? as u64;
        stamp = stamp.checked_mul(36)?.checked_add(v)?;
    }
    Some(stamp)
}

/// True when `id` matches `^{kind}_[a-zA-Z0-9_-]+$` and is of a sane length.
pub fn is_valid_id(kind: &str, id: &str) -> bool {
    let Some(rest) = id.strip_prefix(kind).and_then(|r| r.strip_prefix('_')) else {
        return false;
    };
    !rest.is_empty()
        && id.len() <= 128
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A subject (operator id, admin name) as carried in tokens: printable, short, no spaces.
pub fn is_valid_subject(subject: &str) -> bool {
    !subject.is_empty()
        && subject.len() <= 128
        && subject
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.@:".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_ordered_id_gives_back_its_stamp_and_no_other_id_does() {
        for stamp in [0, 1, 35, 36, 1_764_000_000_000_000, u64::MAX / 1000] {
            let id = new_time_ordered_id("payout", stamp);
            assert_eq!(time_ordered_stamp("payout", &id), Some(stamp), "{id}");
            assert_eq!(time_ordered_stamp("node", &id), None);
        }
        for other in [
            "payout_",
            "payout_short",
            "payout_ABCDEFGHIJKLMxyz",
            "payout",
            "",
        ] {
            assert_eq!(time_ordered_stamp("payout", other), None, "{other}");
        }
        // Thirteen of the highest digit overflow u64: refused, not wrapped.
        assert_eq!(time_ordered_stamp("payout", "payout_zzzzzzzzzzzzz"), None);
    }

    #[test]
    fn random_characters_cover_the_whole_alphabet() {
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            seen.extend(new_id("node")["node_".len()..].bytes());
        }
        assert_eq!(seen.into_iter().collect::<Vec<u8>>(), {
            let mut all = ALPHABET.to_vec();
            all.sort();
            all
        });
    }

    #[test]
    fn generated_ids_match_their_pattern() {
        for kind in ["node", "pool", "payout"] {
            let id = new_id(kind);
            assert!(is_valid_id(kind, &id), "{id}");
            assert!(!is_valid_id("other", &id));
        }
    }

    #[test]
    fn time_ordered_ids_match_their_pattern_and_sort_by_time() {
        let stamps = [
            0u64,
            1,
            35,
            36,
            1_700_000_000_000_000,
            u64::MAX - 1,
            u64::MAX,
        ];
        let ids: Vec<String> = stamps
            .iter()
            .map(|t| new_time_ordered_id("payout", *t))
            .collect();
        for id in &ids {
            assert!(is_valid_id("payout", id), "{id}");
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "{ids:?}");
        assert_ne!(
            new_time_ordered_id("payout", 7),
            new_time_ordered_id("payout", 7)
        );
    }

    #[test]
    fn ids_outside_the_pattern_are_rejected() {
        assert!(!is_valid_id("node", "node_"));
        assert!(!is_valid_id("node", "node"));
        assert!(!is_valid_id("node", "pool_abc"));
        assert!(!is_valid_id("node", "node_a b"));
        assert!(!is_valid_id("node", "node_a/b"));
        assert!(is_valid_id("node", "node_A-b_9"));
    }

    #[test]
    fn subjects_are_printable_and_bounded() {
        assert!(is_valid_subject("op-1"));
        assert!(is_valid_subject("alice@example.org"));
        assert!(!is_valid_subject(""));
        assert!(!is_valid_subject("a b"));
        assert!(!is_valid_subject(&"x".repeat(129)));
    }
}
