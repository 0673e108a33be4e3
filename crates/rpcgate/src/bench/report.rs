//! What a run found, for people ([`Outcome::to_text`]) and for scripts ([`Outcome::to_json`]).
//! MB/s counts call data (the bytes of EchoData's array both ways, SinkData's in, SourceData's
//! out) in millions of bytes per second, not protocol overhead: the same figure for every
//! target, so that ratios compare like with like.

use std::fmt::Write as _;
use std::sync::atomic::AtomicU64;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::Mode;
use super::conn::CallKind;

/// Live counters of a run (progress, and the totals of closed and open mode).
#[derive(Debug, Default)]
pub struct Counters {
    /// Calls answered inside the measured window.
    pub calls: AtomicU64,
    /// Call data of those calls.
    pub bytes: AtomicU64,
    /// Failed calls or connections.
    pub errors: AtomicU64,
    /// Connections open now.
    pub open: AtomicU64,
    /// Connections opened, set-up mode's cycles.
    pub opened: AtomicU64,
}

/// Percentiles of a histogram of nanoseconds, in microseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Percentiles {
    /// `None` for an empty histogram.
    pub fn of(h: &Histogram<u64>) -> Option<Self> {
        if h.is_empty() {
            return None;
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Some(Self {
            count: h.len(),
            min: us(h.min()),
            mean: h.mean() / 1000.0,
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            p999: us(h.value_at_quantile(0.999)),
            max: us(h.max()),
        })
    }

    fn line(&self, unit_ms: bool) -> String {
        let (scale, unit) = if unit_ms { (1000.0, "ms") } else { (1.0, "us") };
        let v = |x: f64| x / scale;
        format!(
            "min {:.3}  p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3} {unit} \
             (mean {:.3}, {} samples)",
            v(self.min),
            v(self.p50),
            v(self.p90),
            v(self.p99),
            v(self.p999),
            v(self.max),
            v(self.mean),
            self.count
        )
    }
}

/// Idle mode's memory readings.
#[derive(Debug, Clone, Serialize)]
pub struct IdleOutcome {
    /// Connections opened and held.
    pub held: u64,
    /// Of those, connections that still answered a call after the hold.
    pub alive: u64,
    pub hold_s: f64,
    /// Seconds to open them all.
    pub ramp_s: f64,
    /// Keep-alive pings received from the proxy during the hold, over all connections.
    pub pings_received: u64,
    /// The processes measured (the gateway's, or the relay's, or the server's).
    pub gateway_pids: Vec<u32>,
    /// Their RSS before the connections opened, after the ramp and after the hold, bytes.
    pub rss_before: u64,
    pub rss_open: u64,
    pub rss_after: u64,
    /// (rss_after - rss_before) / held.
    pub rss_per_connection: f64,
    /// This process's own RSS per connection (the client side), bytes.
    pub client_rss_per_connection: f64,
}

/// Everything a run found.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub mode: Mode,
    pub target: String,
    /// `direct`, `http` or `https`.
    pub transport: &'static str,
    pub call: CallKind,
    pub size: usize,
    pub connections: usize,
    pub outstanding: usize,
    /// Loopback source addresses used (0: the kernel's choice).
    pub source_addresses: usize,
    /// Seconds measured.
    pub duration_s: f64,
    /// Calls answered in the measured window.
    pub calls: u64,
    pub calls_per_s: f64,
    /// Call data, millions of bytes per second.
    pub mb_per_s: f64,
    /// Failed calls and connections, and the first few reasons.
    pub errors: u64,
    pub error_samples: Vec<String>,
    /// Call latency (closed, open).
    pub latency_us: Option<Percentiles>,
    /// Open mode: the rate asked for, and how late calls left against the schedule.
    pub rate: Option<f64>,
    pub send_lag_us: Option<Percentiles>,
    /// Set-up mode: connections opened, bound, called and closed, per second, and the time
    /// to open and bind one.
    pub setups: Option<u64>,
    pub setups_per_s: Option<f64>,
    pub setup_us: Option<Percentiles>,
    pub idle: Option<IdleOutcome>,
}

impl Outcome {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let shape = match self.mode {
            Mode::Setup => format!("{} workers", self.connections),
            Mode::Idle => format!("{} connections", self.connections),
            _ => format!(
                "{} connection(s) x {} call(s) in flight{}",
                self.connections,
                self.outstanding,
                if self.mode == Mode::Open {
                    " at most"
                } else {
                    ""
                }
            ),
        };
        let _ = writeln!(
            out,
            "rpcgate bench {}: {} ({}), {} {} B, {shape}",
            self.mode.name(),
            self.target,
            self.transport,
            self.call.name(),
            self.size
        );
        if self.source_addresses > 1 {
            let _ = writeln!(
                out,
                "  source       {} loopback addresses",
                self.source_addresses
            );
        }
        match self.mode {
            Mode::Closed | Mode::Open => {
                let _ = writeln!(
                    out,
                    "  calls        {} in {:.1} s: {:.0} calls/s, {:.1} MB/s of call data",
                    self.calls, self.duration_s, self.calls_per_s, self.mb_per_s
                );
                if let Some(rate) = self.rate {
                    let _ = writeln!(out, "  rate asked   {rate:.0} calls/s");
                }
                if let Some(l) = &self.latency_us {
                    let _ = writeln!(out, "  latency      {}", l.line(false));
                }
                if let Some(l) = &self.send_lag_us {
                    let _ = writeln!(out, "  send lag     {}", l.line(false));
                }
            }
            Mode::Setup => {
                let _ = writeln!(
                    out,
                    "  set-ups      {} in {:.1} s: {:.0} per second (open, bind, one call, close)",
                    self.setups.unwrap_or(0),
                    self.duration_s,
                    self.setups_per_s.unwrap_or(0.0)
                );
                if let Some(l) = &self.setup_us {
                    let _ = writeln!(out, "  open + bind  {}", l.line(true));
                }
            }
            Mode::Idle => {
                if let Some(idle) = &self.idle {
                    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
                    let _ = writeln!(
                        out,
                        "  held         {} connections for {:.0} s (opened in {:.1} s); {} answered a call afterwards",
                        idle.held, idle.hold_s, idle.ramp_s, idle.alive
                    );
                    let _ = writeln!(
                        out,
                        "  keep-alive   {} pings received from the proxy",
                        idle.pings_received
                    );
                    let _ = writeln!(
                        out,
                        "  gateway RSS  {:.1} MiB before, {:.1} MiB open, {:.1} MiB after the hold (pid {})",
                        mib(idle.rss_before),
                        mib(idle.rss_open),
                        mib(idle.rss_after),
                        idle.gateway_pids
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    let _ = writeln!(
                        out,
                        "  per conn.    {:.1} KiB in the gateway, {:.1} KiB in this client",
                        idle.rss_per_connection / 1024.0,
                        idle.client_rss_per_connection / 1024.0
                    );
                }
            }
        }
        let _ = writeln!(out, "  errors       {}", self.errors);
        for sample in &self.error_samples {
            let _ = writeln!(out, "               {sample}");
        }
        out
    }
}
