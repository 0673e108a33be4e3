//! What a load generator needs from the machine besides descriptors ([`crate::fd_limit`]):
//! enough ephemeral ports (several loopback source addresses when one is not enough), and the
//! resident memory of the process under test, from /proc.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

/// Share of the ephemeral port range one source address is given: the rest stays for
/// sockets in TIME_WAIT and for other programs.
const PORT_SHARE: f64 = 0.8;

/// Ports in the kernel's ephemeral range (`ip_local_port_range`; 28,232 by default).
pub fn ephemeral_ports() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(str::parse::<usize>);
            match (parts.next(), parts.next()) {
                (Some(Ok(low)), Some(Ok(high))) if high >= low => Some(high - low + 1),
                _ => None,
            }
        })
        .unwrap_or(28_232)
}

/// Loopback source addresses for `sockets` connections to `destination`: `requested` of
/// them (127.0.0.1, 127.0.0.2, ...), or as many as the ephemeral range needs. Empty: let the
/// kernel choose (one address is enough, or the destination is not IPv4 loopback).
pub fn source_addresses(
    destination: Option<IpAddr>,
    sockets: usize,
    requested: Option<usize>,
) -> Result<Vec<IpAddr>, String> {
    let loopback_v4 = matches!(destination, Some(IpAddr::V4(ip)) if ip.is_loopback());
    let per_address = ((ephemeral_ports() as f64) * PORT_SHARE) as usize;
    let count = match requested {
        Some(0 | 1) => return Ok(Vec::new()),
        Some(n) if !loopback_v4 => {
            return Err(format!(
                "--source-addresses {n} needs an IPv4 loopback target (127.0.0.0/8)"
            ));
        }
        Some(n) => n,
        None if !loopback_v4 => return Ok(Vec::new()),
        None => sockets.div_ceil(per_address.max(1)),
    };
    if count <= 1 {
        return Ok(Vec::new());
    }
    if count > 250 {
        return Err(format!(
            "{count} source addresses is more than 127.0.0.1-250"
        ));
    }
    Ok((1..=count)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8)))
        .collect())
}

/// Resident set size of `pid`, bytes (VmRSS of /proc/PID/status).
pub fn rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// This process's RSS, bytes.
pub fn own_rss() -> u64 {
    rss(std::process::id()).unwrap_or(0)
}

/// The sum of the RSS of `pids`, bytes.
pub fn total_rss(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|&p| rss(p)).sum()
}

/// The processes with a socket listening on TCP `port` (any address), from /proc/net/tcp
/// and tcp6 and the processes' descriptors. Needs the right to read their /proc/PID/fd.
pub fn listening_pids(port: u16) -> Vec<u32> {
    let mut inodes = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) =
                (fields.get(1), fields.get(3), fields.get(9))
            else {
                continue;
            };
            let listening = *state == "0A";
            let on_port = local
                .rsplit_once(':')
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
                == Some(port);
            if listening && on_port && *inode != "0" {
                inodes.insert(format!("socket:[{inode}]"));
            }
        }
    }
    let mut pids = BTreeSet::new();
    if inodes.is_empty() {
        return Vec::new();
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(link) = std::fs::read_link(fd.path())
                && inodes.contains(link.to_string_lossy().as_ref())
            {
                pids.insert(pid);
                break;
            }
        }
    }
    pids.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_only_when_needed_and_on_loopback() {
        let lo = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        assert!(source_addresses(lo, 100, None).unwrap().is_empty());
        let many = source_addresses(lo, ephemeral_ports() * 2, None).unwrap();
        assert!(many.len() >= 3);
        assert_eq!(many[1], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        let other = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        assert!(source_addresses(other, 1_000_000, None).unwrap().is_empty());
        assert!(source_addresses(other, 1, Some(4)).is_err());
        assert_eq!(source_addresses(lo, 1, Some(4)).unwrap().len(), 4);
    }

    #[tokio::test]
    async fn finds_the_listening_process_and_its_rss() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(listening_pids(port), vec![std::process::id()]);
        assert!(own_rss() > 0);
    }
}
