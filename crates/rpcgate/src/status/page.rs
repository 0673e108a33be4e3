//! `/` and `/status.json`: the status page, a self-refreshing HTML table of the live channels
//! and virtual connections with the main counters above it, and the same data as JSON.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::live::LiveEntry;
use super::{Snapshot, process};

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// `1.5 MiB`, `312 B`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let name = UNITS.get(unit).copied().unwrap_or("B");
    if unit == 0 {
        format!("{bytes} {name}")
    } else {
        format!("{value:.1} {name}")
    }
}

/// `3d 4h`, `2h 5m`, `4m 10s`, `12s`.
pub fn human_age(age: Duration) -> String {
    let s = age.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        3600..86_400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

fn all_entries(snapshot: &Snapshot<'_>) -> Vec<std::sync::Arc<LiveEntry>> {
    let mut entries = Vec::new();
    if let Some(proxy) = snapshot.proxy {
        entries.extend(proxy.live.snapshot());
    }
    for endpoint in snapshot.endpoints {
        entries.extend(endpoint.live.snapshot());
    }
    entries.sort_by_key(|e| (e.vc, e.kind, e.conn_id));
    entries
}

/// The HTML page.
pub fn html(snapshot: &Snapshot<'_>) -> String {
    let mut out = String::with_capacity(16 * 1024);
    out.push_str(
        "<!doctype html><html><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"5\"><title>rpcgate status</title><style>\
         body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}\
         h1{font-size:1.3em;margin:0 0 .2em}.sub{color:#666;margin-bottom:1em}\
         .cards{display:flex;flex-wrap:wrap;gap:.6em;margin-bottom:1.2em}\
         .card{border:1px solid #ddd;border-radius:6px;padding:.5em .8em;min-width:8em}\
         .card b{display:block;font-size:1.4em}.warn b{color:#b00}\
         table{border-collapse:collapse;width:100%}th,td{padding:.3em .6em;text-align:left;\
         border-bottom:1px solid #eee;white-space:nowrap}th{background:#f6f6f6}\
         td.n{text-align:right;font-variant-numeric:tabular-nums}code{font-size:.92em}\
         </style></head><body>",
    );
    let process = process::read();
    let _ = write!(
        out,
        "<h1>rpcgate {}</h1><div class=\"sub\">up {}{}{} &middot; refreshes every 5 s &middot; \
         <a href=\"/metrics\">metrics</a> &middot; <a href=\"/status.json\">json</a></div>",
        env!("CARGO_PKG_VERSION"),
        human_age(snapshot.uptime),
        process
            .resident_bytes
            .map(|b| format!(" &middot; {} resident", human_bytes(b)))
            .unwrap_or_default(),
        process
            .open_fds
            .map(|n| format!(" &middot; {n} open fds"))
            .unwrap_or_default(),
    );
    out.push_str("<div class=\"cards\">");
    let mut card = |label: &str, value: u64, warn: bool| {
        let class = if warn && value > 0 {
            "card warn"
        } else {
            "card"
        };
        let _ = write!(out, "<div class=\"{class}\"><b>{value}</b>{label}</div>");
    };
    if let Some(proxy) = snapshot.proxy {
        let s = &proxy.stats;
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        card("channels now", get(&s.channels_active), false);
        card(
            "channels since start",
            get(&s.in_channels) + get(&s.out_channels),
            false,
        );
        card(
            "recyclings",
            get(&s.in_r1) + get(&s.in_r2) + get(&s.out_r1) + get(&s.out_r2),
            false,
        );
        card("refused by ValidPorts", get(&s.denied_by_valid_ports), true);
        card("servers unreachable", get(&s.server_unreachable), true);
        card("auth failures", get(&s.auth_failures), true);
    }
    for endpoint in snapshot.endpoints {
        let s = &endpoint.stats;
        card(
            "virtual connections now",
            s.vcs_active.load(Ordering::Relaxed),
            false,
        );
        card(
            "backend failures",
            s.backend_failures.load(Ordering::Relaxed),
            true,
        );
    }
    if let Some(status) = &snapshot.configurator {
        card(
            "ValidPorts entries",
            (status.static_entries + status.directory_entries) as u64,
            false,
        );
        card("directory polls failed", status.polls_failed, true);
    }
    out.push_str("</div>");

    let entries = all_entries(snapshot);
    let _ = write!(
        out,
        "<h2 style=\"font-size:1.1em\">Live ({} channels and virtual connections)</h2>",
        entries.len()
    );
    out.push_str(
        "<table><tr><th>conn</th><th>what</th><th>virtual connection</th><th>from</th>\
         <th>user / client</th><th>to</th><th>age</th><th>to server</th><th>to client</th>\
         <th>recycled</th></tr>",
    );
    for e in &entries {
        let _ = write!(
            out,
            "<tr><td class=\"n\">{}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td>\
             <td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td></tr>",
            e.conn_id,
            e.kind.label(),
            e.vc,
            escape(&e.peer.to_string()),
            escape(&e.user),
            escape(&e.target),
            human_age(e.started.elapsed()),
            human_bytes(e.bytes_up.load(Ordering::Relaxed)),
            human_bytes(e.bytes_down.load(Ordering::Relaxed)),
            e.recycles.load(Ordering::Relaxed),
        );
    }
    if entries.is_empty() {
        out.push_str("<tr><td colspan=\"10\" style=\"color:#666\">nothing connected</td></tr>");
    }
    out.push_str("</table></body></html>\n");
    out
}

/// The same data as JSON.
pub fn json(snapshot: &Snapshot<'_>) -> String {
    let live: Vec<serde_json::Value> = all_entries(snapshot)
        .iter()
        .map(|e| {
            serde_json::json!({
                "conn": e.conn_id,
                "kind": e.kind.label(),
                "vc": e.vc.to_string(),
                "peer": e.peer.to_string(),
                "user": e.user,
                "target": e.target,
                "since_unix": super::unix_seconds(e.since),
                "age_seconds": e.started.elapsed().as_secs(),
                "bytes_to_server": e.bytes_up.load(Ordering::Relaxed),
                "bytes_to_client": e.bytes_down.load(Ordering::Relaxed),
                "recycles": e.recycles.load(Ordering::Relaxed),
            })
        })
        .collect();
    let proxy = snapshot.proxy.map(|p| {
        let s = &p.stats;
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
        serde_json::json!({
            "connections": get(&s.connections),
            "channels_active": get(&s.channels_active),
            "in_channels": get(&s.in_channels),
            "out_channels": get(&s.out_channels),
            "denied_by_valid_ports": get(&s.denied_by_valid_ports),
            "denied_by_authorization": get(&s.denied_by_authorization),
            "server_unreachable": get(&s.server_unreachable),
            "auth_failures": get(&s.auth_failures),
            "recycles": {"in_r1": get(&s.in_r1), "in_r2": get(&s.in_r2),
                         "out_r1": get(&s.out_r1), "out_r2": get(&s.out_r2)},
        })
    });
    let endpoints: Vec<serde_json::Value> = snapshot
        .endpoints
        .iter()
        .map(|e| {
            let s = &e.stats;
            serde_json::json!({
                "backend": e.settings.backend.to_string(),
                "virtual_connections_active": s.vcs_active.load(Ordering::Relaxed),
                "virtual_connections_total": s.vcs_opened.load(Ordering::Relaxed),
                "legs_rejected": s.legs_rejected.load(Ordering::Relaxed),
                "backend_failures": s.backend_failures.load(Ordering::Relaxed),
            })
        })
        .collect();
    let process = process::read();
    let value = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": snapshot.uptime.as_secs(),
        "resident_bytes": process.resident_bytes,
        "open_fds": process.open_fds,
        "proxy": proxy,
        "endpoints": endpoints,
        "live": live,
    });
    let mut text = value.to_string();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_read_like_a_person_wrote_them() {
        assert_eq!(human_bytes(312), "312 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(human_age(Duration::from_secs(12)), "12s");
        assert_eq!(human_age(Duration::from_secs(250)), "4m 10s");
        assert_eq!(human_age(Duration::from_secs(7500)), "2h 5m");
        assert_eq!(
            human_age(Duration::from_secs(3 * 86_400 + 4 * 3600)),
            "3d 4h"
        );
    }

    #[test]
    fn markup_in_names_is_escaped() {
        assert_eq!(escape("<b>\"x\"&'"), "&lt;b&gt;&quot;x&quot;&amp;&#39;");
    }
}
