//! Helpers the benches share (a directory, so cargo does not take it for a bench).

/// Bytes this process has caused to be written to storage (`write_bytes` of
/// /proc/self/io): the database file's pages and its commits.
pub fn written_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}
