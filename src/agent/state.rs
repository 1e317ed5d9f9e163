//! The agent's persisted state: the last accepted seq in a small file beside the key, and
//! the counter that hands out the next seq from it and the clock.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Heartbeat sequence numbers: strictly increasing, never reused, and derived from the
/// clock as well so they keep increasing when the state file is lost:
/// next = max(last + 1, now in ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SeqCounter {
    /// The highest seq used (sent, or known to be taken).
    last: u64,
}

impl SeqCounter {
    /// Starts after `persisted` (the last accepted seq from the state file, if any).
    pub fn new(persisted: Option<u64>) -> Self {
        Self {
            last: persisted.unwrap_or(0),
        }
    }

    pub fn last(&self) -> u64 {
        self.last
    }

    /// The seq for the next heartbeat.
    pub fn next(&mut self, now_ms: u64) -> u64 {
        let seq = self.last.saturating_add(1).max(now_ms);
        self.last = seq;
        seq
    }

    /// The server refused `seq` as replayed: the next one is at least
    /// max(seq + 1, now_ms) + 1.
    pub fn on_replayed(&mut self, seq: u64, now_ms: u64) {
        self.last = self.last.max(seq.saturating_add(1).max(now_ms));
    }
}

/// The state file's default path: the key path with ".state" appended.
pub fn default_state_path(key: &Path) -> PathBuf {
    let mut s = key.as_os_str().to_owned();
    s.push(".state");
    PathBuf::from(s)
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    node_id: String,
    last_seq: u64,
}

/// Reads the last accepted seq; `Ok(None)` when there is no state file yet.
pub fn load_state(path: &Path) -> Result<Option<u64>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    if let Ok(state) = serde_json::from_str::<StateFile>(&text) {
        return Ok(Some(state.last_seq));
    }
    text.trim()
        .parse::<u64>()
        .map(Some)
        .map_err(|_| format!("{} is not an agent state file", path.display()))
}

/// Writes the last accepted seq atomically: a temporary file, fsync, rename.
pub fn save_state(path: &Path, node_id: &str, last_seq: u64) -> std::io::Result<()> {
    let text = serde_json::to_string(&StateFile {
        node_id: node_id.to_string(),
        last_seq,
    })
    .expect("the state always serializes");
    crate::crypto::keys::write_secret_file(path, format!("{text}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::now_us;
    use crate::agent::wire::last_accepted_seq_hint;
    use std::time::Duration;

    #[test]
    fn seq_never_decreases_even_when_the_clock_goes_back() {
        let mut c = SeqCounter::new(None);
        let mut last = 0;
        for now in [1_000u64, 1_000, 1_000, 5_000, 4_000, 0, 6_000, 6_000] {
            let s = c.next(now);
            assert!(s > last, "{s} after {last}");
            assert!(s >= now);
            last = s;
        }
        // A persisted seq ahead of the clock is respected.
        let mut c = SeqCounter::new(Some(10_000));
        assert_eq!(c.next(1_000), 10_001);
        assert_eq!(c.next(20_000), 20_000);
    }

    #[test]
    fn seq_moves_past_a_replayed_one() {
        let mut c = SeqCounter::new(None);
        let s = c.next(1_000);
        c.on_replayed(s, 1_000);
        assert!(c.next(1_000) >= s.max(1_000) + 2);
        // Replayed far ahead of the clock.
        let mut c = SeqCounter::new(None);
        c.on_replayed(50_000, 1_000);
        assert_eq!(c.next(1_000), 50_002);
        let mut c = SeqCounter::new(None);
        let s = c.next(1_000);
        c.on_replayed(s, 9_000);
        assert!(c.next(9_000) > 9_000);
        assert_eq!(
            last_accepted_seq_hint("seq 5 is not greater than the last accepted seq 1234"),
            Some(1234)
        );
        assert_eq!(last_accepted_seq_hint("seq replayed"), None);
    }

    #[test]
    fn seq_survives_a_lost_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key.state");
        assert_eq!(load_state(&path).unwrap(), None);
        let t0 = now_us() / 1000;
        let mut c = SeqCounter::new(load_state(&path).unwrap());
        let mut sent = Vec::new();
        for _ in 0..5 {
            let s = c.next(now_us() / 1000);
            save_state(&path, "node_a", s).unwrap();
            sent.push(s);
        }
        assert!(sent[0] >= t0);
        // Restart with the file: strictly after the last one even at the same instant.
        let mut again = SeqCounter::new(load_state(&path).unwrap());
        assert_eq!(load_state(&path).unwrap(), Some(*sent.last().unwrap()));
        assert!(again.next(t0) > *sent.last().unwrap());
        // No temporary file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec!["node.key.state".to_string()]);
        // Lose the file: a later start still goes past everything sent before, because
        // the seq follows the clock.
        std::fs::remove_file(&path).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut fresh = SeqCounter::new(load_state(&path).unwrap());
        assert!(fresh.next(now_us() / 1000) > *sent.last().unwrap());
        // A corrupt file is an error the caller logs, not a panic; a bare number reads.
        std::fs::write(&path, "garbage").unwrap();
        assert!(load_state(&path).is_err());
        std::fs::write(&path, "42\n").unwrap();
        assert_eq!(load_state(&path).unwrap(), Some(42));
    }

    #[test]
    fn default_state_path_appends_to_the_key_path() {
        assert_eq!(
            default_state_path(Path::new("/etc/lucid/node.key")),
            PathBuf::from("/etc/lucid/node.key.state")
        );
        assert_eq!(
            default_state_path(Path::new("node")),
            PathBuf::from("node.state")
        );
    }
}
