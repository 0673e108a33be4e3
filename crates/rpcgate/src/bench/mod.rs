//! `rpcgate bench`: a load generator built on rpcgate's client role. It opens virtual
//! connections through an RPC over HTTP proxy (or plain ncacn_ip_tcp associations with
//! `--direct`, for the server alone or an L4 relay in front of it), binds rpcecho on each and
//! drives EchoData, SinkData or SourceData calls of a chosen size in one of four modes: closed
//! loop (N connections with M calls in flight each), open loop at a fixed rate (latency),
//! set-up rate (connections opened, bound, called once and closed per second) and idle scale
//! (N idle connections held on keep-alives while the gateway's RSS is read from /proc).
//! Latencies go into HDR histograms; the outcome is printed for people or as one JSON object,
//! which `bench/compare` collects to put rpcgate side by side with HAProxy.
//!
//! # Layout
//! - [`conn`]: the target, opening one bound connection, calls in flight matched by call_id.
//! - [`modes`]: the four modes.
//! - [`report`]: the outcome, human and JSON output.
//! - [`progress`]: the progress line on stderr (staged lines when stderr is not a terminal).
//! - [`system`]: the fd limit, loopback source addresses, RSS from /proc.

pub mod conn;
pub mod modes;
pub mod progress;
pub mod report;
pub mod system;

use std::path::PathBuf;
use std::time::Duration;

use crate::rpch_client::{ClientOptions, ProxyUrl};
use conn::{CallKind, Target};
pub use modes::run;
use progress::Progress;
pub use report::Outcome;

/// What a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// N connections, each with M calls in flight: throughput.
    Closed,
    /// Calls at a fixed total rate, never waiting for earlier answers: latency.
    Open,
    /// Connections opened, bound, called once and closed, by N workers: set-up rate.
    Setup,
    /// N idle connections held open: memory per connection in the gateway.
    Idle,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Closed => "closed",
            Mode::Open => "open",
            Mode::Setup => "setup",
            Mode::Idle => "idle",
        }
    }
}

/// Exit codes of `rpcgate bench`.
pub mod exit {
    /// The run completed without a failed call.
    pub const OK: i32 = 0;
    /// The run completed but calls or connections failed (see the report).
    pub const ERRORS: i32 = 1;
    /// Bad arguments.
    pub const USAGE: i32 = 2;
    /// Not a single connection could be opened.
    pub const NO_CONNECTION: i32 = 3;
}

/// One run's settings, as the library takes them.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    pub target: Target,
    pub mode: Mode,
    pub call: CallKind,
    /// Bytes of data per call (EchoData both ways, SinkData in, SourceData out).
    pub size: usize,
    /// Virtual connections (closed, open, idle), or concurrent workers (setup).
    pub connections: usize,
    /// Calls in flight per connection: exactly that many (closed), at most (open).
    pub outstanding: usize,
    /// Open loop: calls per second, over all connections.
    pub rate: f64,
    /// Measured time (closed, open, setup), after `warmup`.
    pub duration: Duration,
    pub warmup: Duration,
    /// Idle: how long the connections are held before RSS is read again.
    pub hold: Duration,
    /// Processes whose RSS is the gateway's; empty: the one listening on the target's port.
    pub gateway_pids: Vec<u32>,
    /// Loopback source addresses to spread connections over (`None`: as many as needed).
    pub source_addresses: Option<usize>,
    /// Connections opened at once (idle mode's ramp).
    pub open_concurrency: usize,
    /// Bound on every wait for the server.
    pub timeout: Duration,
}

/// `rpcgate bench`'s command line.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchCli {
    /// The proxy: https://host[:port] or http://host:port, with -e (like rpcgate ping).
    #[arg(required_unless_present = "direct")]
    pub proxy: Option<String>,
    /// The RPC server behind the proxy, as server:port.
    #[arg(
        short = 'e',
        long = "endpoint",
        value_name = "SERVER:PORT",
        required_unless_present = "direct"
    )]
    pub endpoint: Option<String>,
    /// Plain ncacn_ip_tcp to HOST:PORT instead: the demo service itself, or an L4 relay.
    #[arg(long, value_name = "HOST:PORT", conflicts_with_all = ["proxy", "endpoint"])]
    pub direct: Option<String>,
    /// closed: N x M calls in flight; open: fixed rate; setup: connections per second; idle:
    /// hold N connections and report the gateway's RSS per connection.
    #[arg(long, value_enum, default_value = "closed")]
    pub mode: Mode,
    /// The rpcecho call: echo (EchoData), sink (SinkData) or source (SourceData).
    #[arg(long, value_enum, default_value = "echo")]
    pub call: CallKind,
    /// Bytes of data per call; k and m suffixes for KiB and MiB (64k).
    #[arg(long, default_value = "64", value_parser = parse_size)]
    pub size: usize,
    /// Virtual connections (setup mode: concurrent workers).
    #[arg(short = 'n', long, default_value_t = 1)]
    pub connections: usize,
    /// Calls in flight per connection (default 1 in closed mode; open mode's cap, default 256).
    #[arg(short = 'm', long)]
    pub outstanding: Option<usize>,
    /// Open mode: calls per second over all connections.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Seconds of load before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub warmup: f64,
    /// Idle mode: seconds the connections are held.
    #[arg(long, default_value_t = 10.0)]
    pub hold: f64,
    /// Idle mode: the gateway's process (repeat for several, e.g. proxy and endpoint apart);
    /// default: the process listening on the target's port.
    #[arg(long = "gateway-pid", value_name = "PID")]
    pub gateway_pid: Vec<u32>,
    /// Loopback source addresses (127.0.0.1 ..) to spread connections over; default: as many
    /// as the ephemeral port range needs.
    #[arg(long, value_name = "N")]
    pub source_addresses: Option<usize>,
    /// Connections opened at once while ramping up.
    #[arg(long, default_value_t = 64)]
    pub open_concurrency: usize,
    /// Trust this CA certificate (PEM) for the proxy's TLS certificate.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Accept any TLS certificate (testing only).
    #[arg(long)]
    pub insecure: bool,
    /// Seconds allowed for each wait for the server.
    #[arg(long, default_value_t = 10)]
    pub timeout: u64,
    /// One JSON object on stdout instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// No progress on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

/// `64`, `64k`, `1m` (KiB and MiB).
fn parse_size(text: &str) -> Result<usize, String> {
    let lower = text.trim().to_ascii_lowercase();
    let (digits, unit) = match lower.strip_suffix('k') {
        Some(d) => (d, 1024),
        None => match lower.strip_suffix('m') {
            Some(d) => (d, 1024 * 1024),
            None => (lower.as_str(), 1),
        },
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{text:?}: expected a byte count such as 64, 64k or 1m"))?;
    n.checked_mul(unit)
        .filter(|&n| u32::try_from(n).is_ok())
        .ok_or_else(|| format!("{text:?}: too large"))
}

fn seconds(value: f64, what: &str) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|_| format!("{what}: {value} is not a duration"))
}

impl BenchCli {
    /// Checks the arguments and turns them into [`BenchArgs`].
    pub async fn to_args(&self) -> Result<BenchArgs, String> {
        let timeout = Duration::from_secs(self.timeout.max(1));
        let target = match (&self.direct, &self.proxy, &self.endpoint) {
            (Some(direct), _, _) => Target::direct(direct).await?,
            (None, Some(proxy), Some(endpoint)) => {
                let proxy: ProxyUrl = proxy.parse()?;
                let tls = if proxy.tls {
                    Some(
                        crate::tls::client_config(self.ca.as_deref(), self.insecure)
                            .map_err(|e| format!("TLS settings: {e}"))?,
                    )
                } else {
                    None
                };
                let options = ClientOptions {
                    tls,
                    timeout,
                    ..ClientOptions::default()
                };
                Target::Http {
                    proxy,
                    endpoint: endpoint.clone(),
                    options: Box::new(options),
                }
            }
            _ => return Err("give a proxy URL with -e SERVER:PORT, or --direct HOST:PORT".into()),
        };
        if self.connections == 0 {
            return Err("--connections must be at least 1".into());
        }
        if self.rate.is_nan() || self.rate <= 0.0 {
            return Err("--rate must be positive".into());
        }
        let outstanding = self.outstanding.unwrap_or(match self.mode {
            Mode::Open => 256,
            _ => 1,
        });
        Ok(BenchArgs {
            target,
            mode: self.mode,
            call: self.call,
            size: self.size,
            connections: self.connections,
            outstanding: outstanding.max(1),
            rate: self.rate,
            duration: seconds(self.duration, "--duration")?,
            warmup: seconds(self.warmup, "--warmup")?,
            hold: seconds(self.hold, "--hold")?,
            gateway_pids: self.gateway_pid.clone(),
            source_addresses: self.source_addresses,
            open_concurrency: self.open_concurrency.max(1),
            timeout,
        })
    }
}

/// Runs `rpcgate bench` from its command line; returns the exit code.
pub async fn main(cli: BenchCli) -> i32 {
    let args = match cli.to_args().await {
        Ok(args) => args,
        Err(e) => {
            eprintln!("rpcgate bench: {e}");
            return exit::USAGE;
        }
    };
    let progress = Progress::new(!cli.quiet);
    match run(&args, &progress).await {
        Ok(outcome) => {
            progress.finish();
            if cli.json {
                println!("{}", outcome.to_json());
            } else {
                print!("{}", outcome.to_text());
            }
            if outcome.errors > 0 {
                exit::ERRORS
            } else {
                exit::OK
            }
        }
        Err(e) => {
            progress.finish();
            eprintln!("rpcgate bench: {e}");
            exit::NO_CONNECTION
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_size("64"), Ok(64));
        assert_eq!(parse_size("64k"), Ok(65_536));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert!(parse_size("x").is_err());
        assert!(parse_size("8192m").is_err());
    }
}
