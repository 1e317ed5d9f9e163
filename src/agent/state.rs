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

/// The status file's name in the state directory (kept by `run`, read by `status`).
pub const STATUS_FILE: &str = "status.json";
/// The most acknowledged heartbeats kept while no proof covers them (about 35 days at
/// 30 s): a bound for an appliance that never closes epochs.
pub const MAX_ACKNOWLEDGED: usize = 100_000;

/// What the running agent knows about its own health, for `agent status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub node_id: String,
    /// This machine's clock (µs) when the last heartbeat was accepted.
    pub last_accepted_at_us: Option<u64>,
    pub last_accepted_seq: Option<u64>,
    /// The appliance's receive times (µs) of acknowledged heartbeats that no receipt
    /// covers yet, oldest first: counted against each proof's heartbeat count.
    #[serde(default)]
    pub acknowledged_us: Vec<u64>,
    /// This machine's clock (µs) when the last receipt was verified.
    pub last_receipt_at_us: Option<u64>,
    pub last_receipt_epoch: Option<u64>,
    /// What the last receipt check found wrong (empty: nothing).
    #[serde(default)]
    pub problems: Vec<String>,
    /// The last heartbeat failure, cleared by the next accepted heartbeat.
    pub last_error: Option<String>,
    /// The heartbeat interval in seconds, so `status` knows what "recent" means.
    pub interval_secs: u64,
}

impl Health {
    /// Records an acknowledged heartbeat received by the appliance at `received_us`.
    pub fn acknowledge(&mut self, received_us: u64) {
        self.acknowledged_us.push(received_us);
        if self.acknowledged_us.len() > MAX_ACKNOWLEDGED {
            let excess = self.acknowledged_us.len() - MAX_ACKNOWLEDGED;
            self.acknowledged_us.drain(..excess);
        }
    }

    /// Forgets acknowledgements before `before` (covered by a receipt now).
    pub fn forget_before(&mut self, before: u64) {
        self.acknowledged_us.retain(|t| *t >= before);
    }
}

/// Reads the status file; `Ok(None)` when there is none yet.
pub fn load_health(path: &Path) -> Result<Option<Health>, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => serde_json::from_str(&t)
            .map(Some)
            .map_err(|e| format!("{} is not an agent status file: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// Writes the status file atomically.
pub fn save_health(path: &Path, health: &Health) -> std::io::Result<()> {
    let text = serde_json::to_string(health).expect("the status always serializes");
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
    fn health_keeps_a_bounded_list_of_acknowledgements_and_reads_back() {
        let mut h = Health::default();
        for t in 0..(MAX_ACKNOWLEDGED as u64 + 5) {
            h.acknowledge(t);
        }
        assert_eq!(h.acknowledged_us.len(), MAX_ACKNOWLEDGED);
        assert_eq!(h.acknowledged_us[0], 5);
        h.forget_before(MAX_ACKNOWLEDGED as u64);
        assert_eq!(
            h.acknowledged_us,
            vec![
                MAX_ACKNOWLEDGED as u64,
                MAX_ACKNOWLEDGED as u64 + 1,
                MAX_ACKNOWLEDGED as u64 + 2,
                MAX_ACKNOWLEDGED as u64 + 3,
                MAX_ACKNOWLEDGED as u64 + 4
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATUS_FILE);
        assert_eq!(load_health(&path).unwrap(), None);
        save_health(&path, &h).unwrap();
        assert_eq!(load_health(&path).unwrap(), Some(h));
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
