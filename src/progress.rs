//! Progress of a long operation (a backup, a restore) and its cancellation flag: a line
//! redrawn on a terminal, log lines, or nothing.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What an interrupted operation answers.
pub const INTERRUPTED: &str = "interrupted; no file was written";

/// Where progress goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    /// A line redrawn in place on stderr.
    Terminal,
    /// A log line every few seconds.
    Log,
    Quiet,
}

/// Progress of one long operation, and its cancellation flag.
pub struct Progress {
    mode: ProgressMode,
    pub(crate) cancel: Arc<AtomicBool>,
    what: String,
    unit: &'static str,
    total: u64,
    done: u64,
    last: Instant,
    drawn: bool,
}

impl Progress {
    pub fn new(mode: ProgressMode, cancel: Arc<AtomicBool>) -> Self {
        Self {
            mode,
            cancel,
            what: String::new(),
            unit: "",
            total: 0,
            done: 0,
            last: Instant::now(),
            drawn: false,
        }
    }

    /// A terminal line when stderr is a terminal, log lines otherwise.
    pub fn for_cli(cancel: Arc<AtomicBool>) -> Self {
        let mode = if std::io::stderr().is_terminal() {
            ProgressMode::Terminal
        } else {
            ProgressMode::Log
        };
        Self::new(mode, cancel)
    }

    /// Starts a step of `total` units (0: unknown).
    pub fn start(&mut self, what: impl Into<String>, unit: &'static str, total: u64) {
        self.end_line();
        self.what = what.into();
        self.unit = unit;
        self.total = total;
        self.done = 0;
        self.last = Instant::now();
        match self.mode {
            ProgressMode::Terminal => self.draw(),
            ProgressMode::Log => {
                tracing::info!(total, unit, "{}", self.what)
            }
            ProgressMode::Quiet => {}
        }
    }

    /// Counts `n` more units; `Err` once the operation was interrupted.
    pub fn advance(&mut self, n: u64) -> Result<(), String> {
        self.done += n;
        if self.done % 256 < n || n > 1 {
            self.check()?;
            let every = match self.mode {
                ProgressMode::Terminal => Duration::from_millis(200),
                ProgressMode::Log => Duration::from_secs(5),
                ProgressMode::Quiet => return Ok(()),
            };
            if self.last.elapsed() >= every {
                self.last = Instant::now();
                match self.mode {
                    ProgressMode::Terminal => self.draw(),
                    _ => tracing::info!(
                        done = self.done,
                        total = self.total,
                        unit = self.unit,
                        "{}: {}",
                        self.what,
                        self.figures()
                    ),
                }
            }
        }
        Ok(())
    }

    /// `Err` once the operation was interrupted.
    pub fn check(&self) -> Result<(), String> {
        if self.cancel.load(Ordering::Relaxed) {
            Err(INTERRUPTED.to_string())
        } else {
            Ok(())
        }
    }

    /// Ends the current step.
    pub fn finish(&mut self) {
        match self.mode {
            ProgressMode::Terminal => {
                self.draw();
                self.end_line();
            }
            ProgressMode::Log => tracing::info!(
                done = self.done,
                unit = self.unit,
                "{}: done, {}",
                self.what,
                self.figures()
            ),
            ProgressMode::Quiet => {}
        }
    }

    /// A line of its own (a step without figures, or a result).
    pub fn note(&mut self, message: &str) {
        self.end_line();
        match self.mode {
            ProgressMode::Terminal => eprintln!("{message}"),
            ProgressMode::Log => tracing::info!("{message}"),
            ProgressMode::Quiet => {}
        }
    }

    fn figures(&self) -> String {
        let fmt = |n: u64| {
            if self.unit == "bytes" {
                format!("{:.1} MiB", n as f64 / 1_048_576.0)
            } else {
                n.to_string()
            }
        };
        if self.total > 0 {
            format!(
                "{} of {} {} ({}%)",
                fmt(self.done),
                fmt(self.total),
                if self.unit == "bytes" { "" } else { self.unit },
                self.done.min(self.total) * 100 / self.total
            )
            .replace("  ", " ")
        } else {
            format!(
                "{} {}",
                fmt(self.done),
                if self.unit == "bytes" { "" } else { self.unit }
            )
        }
    }

    fn draw(&mut self) {
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{}: {}\x1b[K", self.what, self.figures());
        let _ = err.flush();
        self.drawn = true;
    }

    fn end_line(&mut self) {
        if self.drawn {
            eprintln!();
            self.drawn = false;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.end_line();
    }
}
