//! Free space on the filesystem that holds the database, and the floor under which the
//! writer refuses heartbeats (`STORAGE_MIN_FREE`).
//!
//! Why a floor: a card that fills in the middle of a payout's commit is the worst place to
//! meet ENOSPC. Refusing the bulk writes (heartbeats, 507 with `Retry-After`) while a little
//! space is left keeps room for the writes that must not fail (payouts, confirmations,
//! admin changes), and reads never need space. Free space is read with `statvfs` at most
//! once per [`REFRESH`], so the check costs nothing per heartbeat.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often free space is read again.
pub const REFRESH: Duration = Duration::from_millis(500);

/// `STORAGE_MIN_FREE`: a share of the filesystem or a number of bytes; zero turns it off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinFree {
    Ratio(f64),
    Bytes(u64),
}

impl MinFree {
    pub const OFF: MinFree = MinFree::Bytes(0);

    /// `2%`, `0.5%`, `512MiB`, `1G`, `1048576`, `0`.
    pub fn parse(v: &str) -> Result<Self, String> {
        let v = v.trim();
        if let Some(p) = v.strip_suffix('%') {
            let p: f64 = p
                .trim()
                .parse()
                .map_err(|_| "expected a percentage such as 2% or a size such as 512MiB")?;
            if !(0.0..=100.0).contains(&p) {
                return Err("a percentage must be from 0% to 100%".into());
            }
            return Ok(Self::Ratio(p / 100.0));
        }
        let digits_end = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
        let (digits, unit) = v.split_at(digits_end);
        let n: u64 = digits
            .parse()
            .map_err(|_| "expected a percentage such as 2% or a size such as 512MiB")?;
        let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1 << 10,
            "m" | "mb" | "mib" => 1 << 20,
            "g" | "gb" | "gib" => 1 << 30,
            other => return Err(format!("unknown size unit {other:?}; use KiB, MiB or GiB")),
        };
        n.checked_mul(factor)
            .map(Self::Bytes)
            .ok_or_else(|| "too large".to_string())
    }

    /// The floor in bytes on a filesystem of `total` bytes.
    pub fn bytes_of(self, total: u64) -> u64 {
        match self {
            Self::Ratio(r) => (total as f64 * r) as u64,
            Self::Bytes(b) => b,
        }
    }

    pub fn is_off(self) -> bool {
        self.bytes_of(u64::MAX) == 0
    }
}

/// Free and total bytes of the filesystem holding `path`.
pub(crate) fn statvfs(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a writable statvfs struct.
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let unit = st.f_frsize as u64;
    // f_bavail: what an unprivileged process may still use (root's reserve excluded).
    Ok((st.f_bavail as u64 * unit, st.f_blocks as u64 * unit))
}

/// What the service knows about its disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpaceReport {
    /// The database file's size.
    pub file_bytes: u64,
    pub free_bytes: u64,
    pub total_bytes: u64,
}

impl SpaceReport {
    pub fn free_ratio(&self) -> f64 {
        if self.total_bytes == 0 {
            return 0.0;
        }
        self.free_bytes as f64 / self.total_bytes as f64
    }
}

/// Watches the free space of the database's filesystem.
#[derive(Debug)]
pub struct DiskSpace {
    file: PathBuf,
    min_free: MinFree,
    free: AtomicU64,
    total: AtomicU64,
    checked: Mutex<Option<Instant>>,
}

impl DiskSpace {
    pub fn new(file: PathBuf, min_free: MinFree) -> Self {
        Self {
            file,
            min_free,
            free: AtomicU64::new(u64::MAX),
            total: AtomicU64::new(u64::MAX),
            checked: Mutex::new(None),
        }
    }

    /// Reads free space again when the last reading is older than [`REFRESH`].
    fn refresh(&self) {
        let mut checked = self.checked.lock().unwrap_or_else(|e| e.into_inner());
        if checked.is_some_and(|t| t.elapsed() < REFRESH) {
            return;
        }
        *checked = Some(Instant::now());
        let dir = self.file.parent().unwrap_or(Path::new("."));
        if let Ok((free, total)) = statvfs(dir) {
            self.free.store(free, Ordering::Relaxed);
            self.total.store(total, Ordering::Relaxed);
        }
    }

    /// The current report (free space at most [`REFRESH`] old).
    pub fn report(&self) -> SpaceReport {
        self.refresh();
        SpaceReport {
            file_bytes: std::fs::metadata(&self.file).map(|m| m.len()).unwrap_or(0),
            free_bytes: self.free.load(Ordering::Relaxed),
            total_bytes: self.total.load(Ordering::Relaxed),
        }
    }

    /// `Some(why)` when free space is under the floor: bulk writes are to be refused.
    pub fn below_floor(&self) -> Option<String> {
        if self.min_free.is_off() {
            return None;
        }
        self.refresh();
        let free = self.free.load(Ordering::Relaxed);
        let total = self.total.load(Ordering::Relaxed);
        let floor = self.min_free.bytes_of(total);
        (free < floor).then(|| {
            format!("{free} bytes free, under the STORAGE_MIN_FREE floor of {floor} bytes")
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_free_reads_percentages_and_sizes_and_zero_is_off() {
        assert_eq!(MinFree::parse("2%").unwrap(), MinFree::Ratio(0.02));
        assert_eq!(MinFree::parse("512MiB").unwrap(), MinFree::Bytes(512 << 20));
        assert_eq!(MinFree::parse("1G").unwrap(), MinFree::Bytes(1 << 30));
        assert_eq!(MinFree::parse("4096").unwrap(), MinFree::Bytes(4096));
        assert!(MinFree::parse("0").unwrap().is_off());
        assert!(MinFree::parse("0%").unwrap().is_off());
        for bad in ["", "x", "-1%", "101%", "5 parsecs"] {
            assert!(MinFree::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(MinFree::Ratio(0.02).bytes_of(1000), 20);
    }

    #[test]
    fn a_floor_above_the_free_space_refuses_and_off_never_does() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("db");
        let all = DiskSpace::new(file.clone(), MinFree::Ratio(1.0));
        assert!(all.below_floor().is_some());
        let off = DiskSpace::new(file, MinFree::OFF);
        assert!(off.below_floor().is_none());
        assert!(off.report().total_bytes > 0);
    }
}
