//! Outgoing TCP connections to backends, trying every address of a name (happy eyeballs).
//!
//! The seed's DSProxy bug (a service listening on IPv4 only while clients resolve IPv6 first)
//! cannot happen here: all addresses are tried, IPv6 and IPv4 interleaved (RFC 8305 order), a
//! new attempt starting every [`ATTEMPT_STAGGER`] while earlier ones are still pending, each
//! with its own timeout; the first to succeed wins and the others are dropped. Every attempt is
//! recorded so that logs and `rpcgate ping` can say what was tried and how each one failed.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::task::JoinSet;

/// Delay before starting the next address while earlier attempts are still pending.
pub const ATTEMPT_STAGGER: Duration = Duration::from_millis(250);

/// One connection attempt and how it ended.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub address: SocketAddr,
    pub elapsed: Duration,
    /// `None` for the attempt that won.
    pub error: Option<String>,
}

/// Why no connection could be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("could not connect to {host}:{port}: {}", summarize(.attempts))]
    AllFailed {
        host: String,
        port: u16,
        attempts: Vec<Attempt>,
    },
}

fn summarize(attempts: &[Attempt]) -> String {
    attempts
        .iter()
        .map(|a| {
            format!(
                "{} {}",
                a.address,
                a.error.as_deref().unwrap_or("connected")
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A connected stream and the attempts it took.
#[derive(Debug)]
pub struct Connected {
    pub stream: TcpStream,
    pub attempts: Vec<Attempt>,
}

/// Resolves `host` and returns its addresses in happy-eyeballs order: families interleaved,
/// starting with the family of the first address the resolver returned.
pub async fn resolve(host: &str, port: u16) -> Result<Vec<SocketAddr>, ConnectError> {
    // Bracketed IPv6 literals come from URLs; the resolver wants them bare.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|source| ConnectError::Resolve {
            host: host.to_string(),
            source,
        })?
        .collect();
    if addrs.is_empty() {
        return Err(ConnectError::NoAddress {
            host: host.to_string(),
        });
    }
    Ok(interleave(addrs))
}

fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let mut unique = Vec::with_capacity(addrs.len());
    for a in addrs {
        if !unique.contains(&a) {
            unique.push(a);
        }
    }
    let first_is_v6 = unique.first().is_some_and(SocketAddr::is_ipv6);
    let (mut primary, mut secondary): (Vec<_>, Vec<_>) =
        unique.into_iter().partition(|a| a.is_ipv6() == first_is_v6);
    let mut out = Vec::with_capacity(primary.len() + secondary.len());
    primary.reverse();
    secondary.reverse();
    loop {
        match (primary.pop(), secondary.pop()) {
            (None, None) => return out,
            (a, b) => out.extend(a.into_iter().chain(b)),
        }
    }
}

/// Connects to `host:port`, trying every address; `per_address` bounds each attempt.
pub async fn connect(
    host: &str,
    port: u16,
    per_address: Duration,
) -> Result<Connected, ConnectError> {
    let addrs = resolve(host, port).await?;
    connect_addrs(host, port, &addrs, per_address).await
}

/// Connects to the first address of `addrs` that answers (happy eyeballs over a given list).
pub async fn connect_addrs(
    host: &str,
    port: u16,
    addrs: &[SocketAddr],
    per_address: Duration,
) -> Result<Connected, ConnectError> {
    let started = Instant::now();
    let mut attempts = Vec::new();
    let mut pending: JoinSet<(SocketAddr, std::io::Result<TcpStream>)> = JoinSet::new();
    let mut next = addrs.iter().copied();
    let mut exhausted = false;
    loop {
        if !exhausted && pending.is_empty() {
            match next.next() {
                Some(addr) => spawn_attempt(&mut pending, addr, per_address),
                None => exhausted = true,
            }
        }
        if pending.is_empty() {
            return Err(ConnectError::AllFailed {
                host: host.to_string(),
                port,
                attempts,
            });
        }
        let stagger = tokio::time::sleep(ATTEMPT_STAGGER);
        tokio::select! {
            Some(joined) = pending.join_next() => {
                let Ok((address, result)) = joined else { continue };
                let elapsed = started.elapsed();
                match result {
                    Ok(stream) => {
                        attempts.push(Attempt { address, elapsed, error: None });
                        pending.abort_all();
                        return Ok(Connected { stream, attempts });
                    }
                    Err(e) => attempts.push(Attempt { address, elapsed, error: Some(e.to_string()) }),
                }
            }
            () = stagger, if !exhausted => {
                match next.next() {
                    Some(addr) => spawn_attempt(&mut pending, addr, per_address),
                    None => exhausted = true,
                }
            }
        }
    }
}

/// Connects from the local address `local` (the kernel picks the port) to the first address
/// of `addrs` in `local`'s family that answers, one at a time. A load generator spreads its
/// connections over several loopback source addresses this way when one address's
/// ephemeral ports are not enough.
pub async fn connect_from(
    local: IpAddr,
    host: &str,
    port: u16,
    addrs: &[SocketAddr],
    per_address: Duration,
) -> Result<Connected, ConnectError> {
    let started = Instant::now();
    let mut attempts = Vec::new();
    for &address in addrs.iter().filter(|a| a.is_ipv4() == local.is_ipv4()) {
        let attempt = async {
            let socket = if local.is_ipv4() {
                tokio::net::TcpSocket::new_v4()?
            } else {
                tokio::net::TcpSocket::new_v6()?
            };
            socket.bind(SocketAddr::new(local, 0))?;
            socket.connect(address).await
        };
        let result = tokio::time::timeout(per_address, attempt)
            .await
            .unwrap_or_else(|_| {
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {} ms", per_address.as_millis()),
                ))
            });
        let elapsed = started.elapsed();
        match result {
            Ok(stream) => {
                let _ = stream.set_nodelay(true);
                attempts.push(Attempt {
                    address,
                    elapsed,
                    error: None,
                });
                return Ok(Connected { stream, attempts });
            }
            Err(e) => attempts.push(Attempt {
                address,
                elapsed,
                error: Some(format!("from {local}: {e}")),
            }),
        }
    }
    Err(ConnectError::AllFailed {
        host: host.to_string(),
        port,
        attempts,
    })
}

fn spawn_attempt(
    set: &mut JoinSet<(SocketAddr, std::io::Result<TcpStream>)>,
    addr: SocketAddr,
    timeout: Duration,
) {
    set.spawn(async move {
        let result = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {} ms", timeout.as_millis()),
            )),
        };
        if let Ok(stream) = &result {
            let _ = stream.set_nodelay(true);
        }
        (addr, result)
    });
}

/// TCP keep-alive idle time on every socket rpcgate holds: long-lived channels must survive
/// quiet hours, and a peer that vanished must still be noticed.
pub const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(60);

/// Enables TCP keep-alive (idle `idle`, then probes every 10 s, 6 probes) and TCP_NODELAY.
pub fn tune_socket(stream: &TcpStream, idle: Duration) {
    let sock = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(idle)
        .with_interval(Duration::from_secs(10))
        .with_retries(6);
    if let Err(e) = sock.set_tcp_keepalive(&keepalive) {
        tracing::debug!("cannot enable TCP keep-alive: {e}");
    }
    let _ = stream.set_nodelay(true);
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn interleaves_families_starting_with_the_first() {
        let v6 = |p| SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], p));
        let v4 = |p| SocketAddr::from(([127, 0, 0, 1], p));
        assert_eq!(
            interleave(vec![v6(1), v6(2), v4(3), v6(1)]),
            vec![v6(1), v4(3), v6(2)]
        );
        assert_eq!(interleave(vec![v4(1), v6(2)]), vec![v4(1), v6(2)]);
    }

    #[tokio::test]
    async fn reaches_an_ipv4_only_service_even_when_ipv6_comes_first() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        // ::1 refuses (nothing listens there on this port), 127.0.0.1 answers.
        let addrs = [
            SocketAddr::from(([0, 0, 0, 0, 0, 0, 0, 1], port)),
            SocketAddr::from(([127, 0, 0, 1], port)),
        ];
        let connected = connect_addrs("localhost", port, &addrs, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(connected.stream.peer_addr().unwrap().port(), port);
        assert!(connected.attempts.iter().any(|a| a.error.is_none()));
        // And through the resolver, by name.
        let connected = connect("localhost", port, Duration::from_secs(2))
            .await
            .unwrap();
        assert!(connected.stream.peer_addr().unwrap().ip().is_loopback());
    }

    #[tokio::test]
    async fn reports_every_failed_attempt() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let err = connect("127.0.0.1", port, Duration::from_secs(2))
            .await
            .unwrap_err();
        match err {
            ConnectError::AllFailed { attempts, .. } => {
                assert_eq!(attempts.len(), 1);
                assert!(attempts[0].error.is_some());
            }
            other => panic!("unexpected {other}"),
        }
    }
}
