//! The four modes of a run, each a sequence of stages:
//!
//! ```text
//!  closed, open   open N connections ─ warm-up ─ measure ─ drain the calls in flight
//!  setup          N workers: open, bind, one call, close, again ─ warm-up ─ measure
//!  idle           RSS ─ open N connections (one call each) ─ RSS ─ hold ─ RSS ─ one call each
//! ```
//!
//! A failed connection or call is counted, its reason kept (the first few), and the run goes
//! on with the others; only a run that cannot open a single connection fails as a whole.

use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::conn::{Call, Conn, Pace, Recorder, Window, histogram, record};
use super::progress::Progress;
use super::report::{Counters, IdleOutcome, Outcome, Percentiles};
use super::{BenchArgs, Mode, system};

/// Reasons kept for the report.
const ERROR_SAMPLES: usize = 5;
/// A set-up worker's pause after a failure, so that a dead target is not hammered.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Failures of a run: counted, and the first few reasons kept.
#[derive(Debug, Default)]
struct Failures {
    samples: Mutex<Vec<String>>,
}

impl Failures {
    fn note(&self, counters: &Counters, why: String) {
        counters.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut samples) = self.samples.lock()
            && samples.len() < ERROR_SAMPLES
        {
            samples.push(why);
        }
    }

    fn samples(&self) -> Vec<String> {
        self.samples.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// Everything the stages of a run share.
struct Run<'a> {
    args: &'a BenchArgs,
    progress: &'a Progress,
    call: Arc<Call>,
    sources: Vec<IpAddr>,
    counters: Arc<Counters>,
    failures: Arc<Failures>,
}

/// Runs `args`, showing progress on `progress`.
pub async fn run(args: &BenchArgs, progress: &Progress) -> Result<Outcome, String> {
    let sockets = args.connections * args.target.sockets_per_connection();
    let (_, short) = crate::fd_limit::raise(sockets as u64);
    if let Some(why) = short {
        eprintln!("rpcgate bench: warning: {why}");
    }
    let destination = args.target.destination_ip().await;
    let sources = system::source_addresses(destination, sockets, args.source_addresses)?;
    let run = Run {
        args,
        progress,
        call: Arc::new(Call::new(args.call, args.size)),
        sources,
        counters: Arc::new(Counters::default()),
        failures: Arc::new(Failures::default()),
    };
    progress.watch(run.counters.clone());
    let mut outcome = match args.mode {
        Mode::Closed | Mode::Open => run.load().await?,
        Mode::Setup => run.setup().await?,
        Mode::Idle => run.idle().await?,
    };
    outcome.errors = run.counters.errors.load(Ordering::Relaxed);
    outcome.error_samples = run.failures.samples();
    Ok(outcome)
}

impl Run<'_> {
    fn outcome(&self) -> Outcome {
        let args = self.args;
        Outcome {
            mode: args.mode,
            target: args.target.describe(),
            transport: args.target.transport(),
            call: args.call,
            size: args.size,
            connections: args.connections,
            outstanding: args.outstanding,
            source_addresses: self.sources.len(),
            duration_s: args.duration.as_secs_f64(),
            calls: 0,
            calls_per_s: 0.0,
            mb_per_s: 0.0,
            errors: 0,
            error_samples: Vec::new(),
            latency_us: None,
            rate: None,
            send_lag_us: None,
            setups: None,
            setups_per_s: None,
            setup_us: None,
            idle: None,
        }
    }

    /// The source address of the `i`th connection, if connections are spread.
    fn source(&self, i: usize) -> Option<IpAddr> {
        self.sources.get(i % self.sources.len().max(1)).copied()
    }

    /// Opens `n` connections, `open_concurrency` at a time, each making one call when
    /// `first_call` is set; failures are noted and left out.
    async fn open_all(&self, n: usize, first_call: bool) -> Vec<Conn> {
        let slots = Arc::new(Semaphore::new(self.args.open_concurrency));
        let mut opening = JoinSet::new();
        for i in 0..n {
            let slots = slots.clone();
            let target = self.args.target.clone();
            let source = self.source(i);
            let timeout = self.args.timeout;
            let call = first_call.then(|| self.call.clone());
            let counters = self.counters.clone();
            opening.spawn(async move {
                let _slot = slots.acquire_owned().await;
                let mut conn = target.open(source, timeout).await?;
                if let Some(call) = call {
                    conn.call_once(&call, timeout).await?;
                }
                counters.open.fetch_add(1, Ordering::Relaxed);
                Ok::<_, String>(conn)
            });
        }
        let mut conns = Vec::with_capacity(n);
        while let Some(joined) = opening.join_next().await {
            match joined {
                Ok(Ok(conn)) => conns.push(conn),
                Ok(Err(why)) => self.failures.note(&self.counters, why),
                Err(e) => self.failures.note(&self.counters, format!("task: {e}")),
            }
        }
        conns
    }

    fn no_connection(&self) -> String {
        let why = self
            .failures
            .samples()
            .into_iter()
            .next()
            .unwrap_or_default();
        format!(
            "no connection to {} could be opened: {why}",
            self.args.target.describe()
        )
    }

    /// Closed and open loop.
    async fn load(&self) -> Result<Outcome, String> {
        let args = self.args;
        let n = args.connections;
        self.progress
            .stage(format!("opening {n} connection(s)"), None);
        let conns = self.open_all(n, false).await;
        if conns.is_empty() {
            return Err(self.no_connection());
        }
        let start = Instant::now();
        let window = Window {
            from: start + args.warmup,
            until: start + args.warmup + args.duration,
        };
        let recorder = Arc::new(Recorder {
            latency: Mutex::new(histogram()),
            lag: Mutex::new(histogram()),
            counters: self.counters.clone(),
        });
        let open_interval = Duration::from_secs_f64(n as f64 / args.rate);
        let mut driving = JoinSet::new();
        let count = conns.len();
        for (i, conn) in conns.into_iter().enumerate() {
            let pace = match args.mode {
                Mode::Open => Pace::Open {
                    first: start + open_interval.mul_f64(i as f64 / count as f64),
                    interval: open_interval,
                    outstanding: args.outstanding,
                },
                _ => Pace::Closed {
                    outstanding: args.outstanding,
                },
            };
            driving.spawn(conn.drive(
                self.call.clone(),
                pace,
                window,
                recorder.clone(),
                args.timeout,
            ));
        }
        if !args.warmup.is_zero() {
            self.progress.stage("warm-up", Some(args.warmup));
            tokio::time::sleep_until(window.from.into()).await;
        }
        self.progress.stage("measuring", Some(args.duration));
        while let Some(joined) = driving.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(why)) => self.failures.note(&self.counters, why),
                Err(e) => self.failures.note(&self.counters, format!("task: {e}")),
            }
        }
        self.progress.stage("done", None);
        let mut outcome = self.outcome();
        let secs = args.duration.as_secs_f64().max(1e-9);
        outcome.calls = self.counters.calls.load(Ordering::Relaxed);
        outcome.calls_per_s = outcome.calls as f64 / secs;
        outcome.mb_per_s = self.counters.bytes.load(Ordering::Relaxed) as f64 / secs / 1e6;
        outcome.latency_us = recorder
            .latency
            .lock()
            .ok()
            .and_then(|h| Percentiles::of(&h));
        if args.mode == Mode::Open {
            outcome.rate = Some(args.rate);
            outcome.send_lag_us = recorder.lag.lock().ok().and_then(|h| Percentiles::of(&h));
        }
        Ok(outcome)
    }

    /// Set-up rate: workers open, bind, call once and close, over and over.
    async fn setup(&self) -> Result<Outcome, String> {
        let args = self.args;
        let start = Instant::now();
        let window = Window {
            from: start + args.warmup,
            until: start + args.warmup + args.duration,
        };
        let times = Arc::new(Mutex::new(histogram()));
        let mut workers = JoinSet::new();
        let stride = args.connections;
        for w in 0..stride {
            let target = args.target.clone();
            let call = self.call.clone();
            let counters = self.counters.clone();
            let failures = self.failures.clone();
            let times = times.clone();
            let sources = self.sources.clone();
            let timeout = args.timeout;
            workers.spawn(async move {
                let mut cycle = w;
                while Instant::now() < window.until {
                    let source = sources.get(cycle % sources.len().max(1)).copied();
                    cycle += stride;
                    let began = Instant::now();
                    let opened = match target.open(source, timeout).await {
                        Ok(mut conn) => {
                            let opened = began.elapsed();
                            conn.call_once(&call, timeout).await.map(|()| opened)
                        }
                        Err(e) => Err(e),
                    };
                    let now = Instant::now();
                    match opened {
                        Ok(opened) => {
                            if began >= window.from && now <= window.until {
                                counters.opened.fetch_add(1, Ordering::Relaxed);
                                counters.calls.fetch_add(1, Ordering::Relaxed);
                                counters.bytes.fetch_add(call.bytes, Ordering::Relaxed);
                                record(&times, opened);
                            }
                        }
                        Err(why) => {
                            failures.note(&counters, why);
                            tokio::time::sleep(RETRY_PAUSE).await;
                        }
                    }
                }
            });
        }
        if !args.warmup.is_zero() {
            self.progress.stage(
                format!("set-ups by {} workers, warm-up", args.connections),
                Some(args.warmup),
            );
            tokio::time::sleep_until(window.from.into()).await;
        }
        self.progress.stage("measuring", Some(args.duration));
        while workers.join_next().await.is_some() {}
        self.progress.stage("done", None);
        let mut outcome = self.outcome();
        let secs = args.duration.as_secs_f64().max(1e-9);
        let setups = self.counters.opened.load(Ordering::Relaxed);
        if setups == 0 && self.counters.errors.load(Ordering::Relaxed) > 0 {
            return Err(self.no_connection());
        }
        outcome.calls = self.counters.calls.load(Ordering::Relaxed);
        outcome.calls_per_s = outcome.calls as f64 / secs;
        outcome.mb_per_s = self.counters.bytes.load(Ordering::Relaxed) as f64 / secs / 1e6;
        outcome.setups = Some(setups);
        outcome.setups_per_s = Some(setups as f64 / secs);
        outcome.setup_us = times.lock().ok().and_then(|h| Percentiles::of(&h));
        Ok(outcome)
    }

    /// Idle scale: hold N connections and read the gateway's RSS.
    async fn idle(&self) -> Result<Outcome, String> {
        let args = self.args;
        let pids = if args.gateway_pids.is_empty() {
            let found = system::listening_pids(args.target.port());
            if found.is_empty() {
                return Err(format!(
                    "no process found listening on port {}: pass --gateway-pid",
                    args.target.port()
                ));
            }
            found
        } else {
            args.gateway_pids.clone()
        };
        let rss_before = system::total_rss(&pids);
        let client_before = system::own_rss();
        let n = args.connections;
        self.progress.stage(
            format!(
                "opening {n} connections, {} at a time",
                args.open_concurrency
            ),
            None,
        );
        let ramp = Instant::now();
        let mut conns = self.open_all(n, true).await;
        let ramp_s = ramp.elapsed().as_secs_f64();
        if conns.is_empty() {
            return Err(self.no_connection());
        }
        let rss_open = system::total_rss(&pids);
        self.progress.stage(
            format!("holding {} idle connections", conns.len()),
            Some(args.hold),
        );
        tokio::time::sleep(args.hold).await;
        let rss_after = system::total_rss(&pids);
        let client_after = system::own_rss();
        let held = conns.len() as u64;
        let pings_received = conns.iter().map(Conn::pings_received).sum();

        self.progress.stage("one call on every connection", None);
        let slots = Arc::new(Semaphore::new(args.open_concurrency));
        let mut checking = JoinSet::new();
        for mut conn in conns.drain(..) {
            let slots = slots.clone();
            let call = self.call.clone();
            let timeout = args.timeout;
            checking.spawn(async move {
                let _slot = slots.acquire_owned().await;
                conn.call_once(&call, timeout).await.map(|()| conn)
            });
        }
        let mut alive = 0u64;
        let mut survivors = Vec::with_capacity(n);
        while let Some(joined) = checking.join_next().await {
            match joined {
                Ok(Ok(conn)) => {
                    alive += 1;
                    survivors.push(conn);
                }
                Ok(Err(why)) => self
                    .failures
                    .note(&self.counters, format!("after the hold: {why}")),
                Err(e) => self.failures.note(&self.counters, format!("task: {e}")),
            }
        }
        self.progress.stage("closing", None);
        drop(survivors);
        let mut outcome = self.outcome();
        outcome.duration_s = args.hold.as_secs_f64();
        outcome.calls = 2 * held;
        let per = |after: u64, before: u64| after.saturating_sub(before) as f64 / held as f64;
        outcome.idle = Some(IdleOutcome {
            held,
            alive,
            hold_s: args.hold.as_secs_f64(),
            ramp_s,
            pings_received,
            gateway_pids: pids,
            rss_before,
            rss_open,
            rss_after,
            rss_per_connection: per(rss_after, rss_before),
            client_rss_per_connection: per(client_after, client_before),
        });
        Ok(outcome)
    }
}
