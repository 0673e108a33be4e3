//! `/metrics`: the Prometheus text exposition of a gateway's counters and gauges, named
//! `rpcgate_*`, with a `# HELP` and `# TYPE` line for every family.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use super::{Snapshot, process};

/// One metric family being written: its header once, then its samples.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Self { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{key}=\"{}\"", escape_label(val));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes a family with a single unlabelled sample.
fn single(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    Family::new(out, name, kind, help).sample(name, &[], value);
}

/// The whole exposition.
pub fn render(snapshot: &Snapshot<'_>) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let mut build = Family::new(
        &mut out,
        "rpcgate_build_info",
        "gauge",
        "The running version (always 1).",
    );
    build.sample(
        "rpcgate_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1,
    );
    single(
        &mut out,
        "rpcgate_uptime_seconds",
        "gauge",
        "Seconds since the gateway started.",
        snapshot.uptime.as_secs(),
    );
    let process = process::read();
    if let Some(rss) = process.resident_bytes {
        single(
            &mut out,
            "rpcgate_process_resident_memory_bytes",
            "gauge",
            "Resident memory of the gateway process.",
            rss,
        );
    }
    if let Some(fds) = process.open_fds {
        single(
            &mut out,
            "rpcgate_process_open_fds",
            "gauge",
            "Open file descriptors of the gateway process.",
            fds,
        );
    }
    if let Some(tasks) = snapshot.tasks {
        single(
            &mut out,
            "rpcgate_tasks",
            "gauge",
            "Tasks alive in the gateway's runtime.",
            tasks,
        );
    }

    if let Some(proxy) = snapshot.proxy {
        let s = &proxy.stats;
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        single(
            &mut out,
            "rpcgate_proxy_connections_total",
            "counter",
            "Client connections accepted by the proxy.",
            get(&s.connections),
        );
        single(
            &mut out,
            "rpcgate_proxy_echo_requests_total",
            "counter",
            "Echo requests answered (the probe clients send before opening channels).",
            get(&s.echo_requests),
        );
        let mut f = Family::new(
            &mut out,
            "rpcgate_proxy_channels_total",
            "counter",
            "Channel requests started, by direction.",
        );
        f.sample(
            "rpcgate_proxy_channels_total",
            &[("direction", "in")],
            get(&s.in_channels),
        );
        f.sample(
            "rpcgate_proxy_channels_total",
            &[("direction", "out")],
            get(&s.out_channels),
        );
        single(
            &mut out,
            "rpcgate_proxy_channels_active",
            "gauge",
            "Channels connected to a server now.",
            get(&s.channels_active),
        );
        let mut f = Family::new(
            &mut out,
            "rpcgate_proxy_refused_total",
            "counter",
            "Requests and connections refused, by reason.",
        );
        for (reason, counter) in [
            ("valid_ports", &s.denied_by_valid_ports),
            ("authorization", &s.denied_by_authorization),
            ("untrusted_load_balancer", &s.refused_untrusted),
            ("max_connections", &s.refused_over_limit),
            ("server_unreachable", &s.server_unreachable),
            ("bad_request", &s.http_errors),
        ] {
            f.sample(
                "rpcgate_proxy_refused_total",
                &[("reason", reason)],
                get(counter),
            );
        }
        let mut f = Family::new(
            &mut out,
            "rpcgate_proxy_auth_401_total",
            "counter",
            "Requests answered 401, by cause.",
        );
        for (cause, counter) in [
            ("challenge", &s.auth_challenges),
            ("failure", &s.auth_failures),
            ("throttled", &s.auth_throttled),
        ] {
            f.sample(
                "rpcgate_proxy_auth_401_total",
                &[("cause", cause)],
                get(counter),
            );
        }
        let mut f = Family::new(
            &mut out,
            "rpcgate_proxy_recycles_total",
            "counter",
            "Channel recyclings seen here: R2 (successor on this proxy) or R1 (predecessor on another).",
        );
        for (direction, kind, counter) in [
            ("in", "r1", &s.in_r1),
            ("in", "r2", &s.in_r2),
            ("out", "r1", &s.out_r1),
            ("out", "r2", &s.out_r2),
        ] {
            f.sample(
                "rpcgate_proxy_recycles_total",
                &[("direction", direction), ("kind", kind)],
                get(counter),
            );
        }
        single(
            &mut out,
            "rpcgate_proxy_out_window_advisory_total",
            "counter",
            "OUT channels whose client never acknowledged a full window.",
            get(&s.out_window_advisory),
        );
        single(
            &mut out,
            "rpcgate_proxy_in_process_legs_total",
            "counter",
            "Channels connected to an endpoint of this process over an in-memory pipe.",
            get(&s.in_process_legs),
        );
    }

    if !snapshot.endpoints.is_empty() {
        type Counter = fn(&crate::endpoint::EndpointStats) -> &std::sync::atomic::AtomicU64;
        let families: [(&str, &str, &str, Counter); 7] = [
            (
                "rpcgate_endpoint_legs_accepted_total",
                "counter",
                "Legs (proxy connections) accepted.",
                |s| &s.legs_accepted,
            ),
            (
                "rpcgate_endpoint_legs_rejected_total",
                "counter",
                "Legs rejected (bad first PDU, unknown or duplicate virtual connection).",
                |s| &s.legs_rejected,
            ),
            (
                "rpcgate_endpoint_virtual_connections_total",
                "counter",
                "Virtual connections bridged to the backend.",
                |s| &s.vcs_opened,
            ),
            (
                "rpcgate_endpoint_virtual_connections_active",
                "gauge",
                "Virtual connections bridged now.",
                |s| &s.vcs_active,
            ),
            (
                "rpcgate_endpoint_setup_timeouts_total",
                "counter",
                "Virtual connections whose second leg never arrived.",
                |s| &s.vcs_setup_timeouts,
            ),
            (
                "rpcgate_endpoint_v1_connections_total",
                "counter",
                "RPC over HTTP v1 connections relayed.",
                |s| &s.v1_connections,
            ),
            (
                "rpcgate_endpoint_backend_failures_total",
                "counter",
                "Virtual connections closed because the backend could not be reached.",
                |s| &s.backend_failures,
            ),
        ];
        for (name, kind, help, counter) in families {
            let mut f = Family::new(&mut out, name, kind, help);
            for endpoint in snapshot.endpoints {
                let backend = endpoint.settings.backend.to_string();
                f.sample(
                    name,
                    &[("backend", &backend)],
                    counter(&endpoint.stats).load(Ordering::Relaxed),
                );
            }
        }
    }

    if let Some(status) = &snapshot.configurator {
        let mut f = Family::new(
            &mut out,
            "rpcgate_validports_entries",
            "gauge",
            "ValidPorts entries in force, by origin.",
        );
        f.sample(
            "rpcgate_validports_entries",
            &[("origin", "static")],
            status.static_entries,
        );
        f.sample(
            "rpcgate_validports_entries",
            &[("origin", "directory")],
            status.directory_entries,
        );
        let mut f = Family::new(
            &mut out,
            "rpcgate_configurator_polls_total",
            "counter",
            "Directory polls, by result.",
        );
        f.sample(
            "rpcgate_configurator_polls_total",
            &[("result", "ok")],
            status.polls_ok,
        );
        f.sample(
            "rpcgate_configurator_polls_total",
            &[("result", "failed")],
            status.polls_failed,
        );
        if let Some(at) = status.last_success {
            single(
                &mut out,
                "rpcgate_configurator_last_success_timestamp_seconds",
                "gauge",
                "When the directory last answered (Unix time).",
                super::unix_seconds(at),
            );
        }
    }
    out
}
