//! Progress on stderr while a run goes: on a terminal one line, rewritten four times a
//! second with the stage and the live counters; otherwise one line per stage, so logs of
//! scripted runs stay short.

use std::io::{IsTerminal, Write};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::report::Counters;

/// How often the terminal line is rewritten.
const TICK: Duration = Duration::from_millis(250);

#[derive(Debug)]
struct Stage {
    name: String,
    started: Instant,
    /// Length of the stage, when known, for "3.0 / 10 s".
    length: Option<Duration>,
}

/// The progress display of one run.
#[derive(Debug)]
pub struct Progress {
    enabled: bool,
    tty: bool,
    stage: Arc<Mutex<Stage>>,
    ticker: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Progress {
    /// A display on stderr (`enabled` false: silent).
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            tty: std::io::stderr().is_terminal(),
            stage: Arc::new(Mutex::new(Stage {
                name: String::new(),
                started: Instant::now(),
                length: None,
            })),
            ticker: Mutex::new(None),
        }
    }

    /// A silent display (tests, libraries).
    pub fn silent() -> Self {
        Self::new(false)
    }

    /// Enters a stage; `length` when its end is known.
    pub fn stage(&self, name: impl Into<String>, length: Option<Duration>) {
        let name = name.into();
        if self.enabled && !self.tty {
            eprintln!("bench: {name}");
        }
        if let Ok(mut stage) = self.stage.lock() {
            *stage = Stage {
                name,
                started: Instant::now(),
                length,
            };
        }
    }

    /// Starts rewriting the terminal line from `counters` (no-op when not on a terminal).
    pub fn watch(&self, counters: Arc<Counters>) {
        if !self.enabled || !self.tty {
            return;
        }
        let stage = self.stage.clone();
        let handle = tokio::spawn(async move {
            let mut last = (Instant::now(), 0u64, 0u64);
            loop {
                tokio::time::sleep(TICK).await;
                let now = Instant::now();
                let calls = counters.calls.load(Ordering::Relaxed);
                let bytes = counters.bytes.load(Ordering::Relaxed);
                let secs = now.duration_since(last.0).as_secs_f64().max(1e-3);
                let rate = calls.saturating_sub(last.1) as f64 / secs;
                let mbs = bytes.saturating_sub(last.2) as f64 / secs / 1e6;
                last = (now, calls, bytes);
                let (name, elapsed, length) = match stage.lock() {
                    Ok(s) => (s.name.clone(), s.started.elapsed(), s.length),
                    Err(_) => continue,
                };
                let clock = match length {
                    Some(l) => format!("{:.1}/{:.0} s", elapsed.as_secs_f64(), l.as_secs_f64()),
                    None => format!("{:.1} s", elapsed.as_secs_f64()),
                };
                let line = format!(
                    "bench: {name} {clock}  open {}  calls {calls} ({rate:.0}/s, {mbs:.1} MB/s)  \
                     errors {}",
                    counters.open.load(Ordering::Relaxed),
                    counters.errors.load(Ordering::Relaxed),
                );
                let mut err = std::io::stderr().lock();
                let _ = write!(err, "\r\x1b[2K{line}");
                let _ = err.flush();
            }
        });
        if let Ok(mut slot) = self.ticker.lock()
            && let Some(old) = slot.replace(handle)
        {
            old.abort();
        }
    }

    /// Stops the line and clears it.
    pub fn finish(&self) {
        if let Ok(mut slot) = self.ticker.lock()
            && let Some(handle) = slot.take()
        {
            handle.abort();
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
