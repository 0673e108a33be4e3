//! What an incoming request to the proxy is (notes §2.2), and the `?server:port` target of
//! a channel request (notes §2.1).
//!
//! Classification is by method first, then by Content-Length, leniently: an `RPC_IN_DATA`
//! or `RPC_OUT_DATA` request announcing at most 16 bytes (or nothing) is an echo request,
//! whatever its path query, because impacket's NTLM negotiate leg and Windows' echo requests
//! come without a query; a larger `RPC_IN_DATA` is an IN channel; an `RPC_OUT_DATA` of at
//! least 76 bytes (CONN/A1; 120 for a replacement channel) is an OUT channel. Which PDU
//! actually follows is the channel role's business, not this module's. Authentication is
//! decided before a classification is acted upon, by the caller.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

use super::head::{Method, RequestHead};

/// The largest Content-Length of an echo request (MS-RPCH 2.1.2.1.1: 0..=0x10).
pub const ECHO_MAX_CONTENT_LENGTH: u64 = 16;

/// The smallest Content-Length of an OUT channel: the size of CONN/A1 (MS-RPCH 2.2.4.3).
pub const OUT_CHANNEL_MIN_CONTENT_LENGTH: u64 = 76;

/// The longest server name in a target (MS-RPCH 2.1.2.1.4: fewer than 1024 characters).
pub const MAX_TARGET_HOST_LEN: usize = 1023;

/// The two paths of the RPC proxy (MS-RPCH 2.1.2.1.4); `/rpcwithcert` is for clients that
/// authenticate with a TLS client certificate.
pub const RPC_PATHS: [&str; 2] = ["/rpc/rpcproxy.dll", "/rpcwithcert/rpcproxy.dll"];

/// What a request is and therefore what the proxy does with it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestKind {
    /// An echo request: answer with the echo response and keep the connection.
    Echo,
    /// A new or replacement IN channel to `target` (inbound proxy role).
    InChannel {
        /// Where the client wants to go.
        target: Target,
    },
    /// A new or replacement OUT channel to `target` (outbound proxy role).
    OutChannel {
        /// Where the client wants to go.
        target: Target,
    },
    /// `RPC_CONNECT`: RPC over HTTP v1, not implemented (notes §9: answer 501).
    RpcConnect,
    /// `/autodiscover/autodiscover.xml` (any method; see [`crate::autodiscover`]).
    Autodiscover,
    /// The path is not one of [`RPC_PATHS`].
    NotFound,
    /// A method other than `RPC_IN_DATA` / `RPC_OUT_DATA` on the RPC path.
    MethodNotAllowed,
    /// A channel request whose `?server:port` is missing or malformed.
    BadTarget(TargetError),
    /// An `RPC_OUT_DATA` request too long for an echo and too short for CONN/A1.
    BadContentLength(u64),
    /// A chunked request body; no RPC client sends one and channel accounting needs a length.
    ChunkedBody,
}

impl RequestKind {
    /// The error response status for the kinds that are rejected (`None` for echo and
    /// channels). A bad target gets 400 here; whether a *valid* target is allowed and
    /// reachable is answered later with `503 RPC Error` (notes §7.2).
    pub fn http_status(&self) -> Option<(u16, &'static str)> {
        match self {
            Self::Echo | Self::InChannel { .. } | Self::OutChannel { .. } => None,
            Self::RpcConnect | Self::ChunkedBody => Some((501, "Not Implemented")),
            // Autodiscover is answered where it is configured; elsewhere the path is unknown.
            Self::NotFound | Self::Autodiscover => Some((404, "Not Found")),
            Self::MethodNotAllowed => Some((405, "Method Not Allowed")),
            Self::BadTarget(_) | Self::BadContentLength(_) => Some((400, "Bad Request")),
        }
    }
}

/// Classifies a request head (notes §2.2).
pub fn classify(head: &RequestHead) -> RequestKind {
    // v1's request-line format is unconfirmed (notes §12), so recognise it by method alone.
    if head.method == Method::RpcConnect {
        return RequestKind::RpcConnect;
    }
    if crate::autodiscover::is_autodiscover_path(&head.path) {
        return RequestKind::Autodiscover;
    }
    if !is_rpc_path(&head.path) {
        return RequestKind::NotFound;
    }
    let inbound = match head.method {
        Method::RpcInData => true,
        Method::RpcOutData => false,
        _ => return RequestKind::MethodNotAllowed,
    };
    if head.chunked {
        return RequestKind::ChunkedBody;
    }
    // No Content-Length and no body is an echo request of length 0 (notes §2.2).
    let length = head.content_length.unwrap_or(0);
    if length <= ECHO_MAX_CONTENT_LENGTH {
        return RequestKind::Echo;
    }
    if !inbound && length < OUT_CHANNEL_MIN_CONTENT_LENGTH {
        return RequestKind::BadContentLength(length);
    }
    let target = match head.query.as_deref() {
        None => Err(TargetError::Missing),
        Some(query) => parse_target(query),
    };
    match (target, inbound) {
        (Err(e), _) => RequestKind::BadTarget(e),
        (Ok(target), true) => RequestKind::InChannel { target },
        (Ok(target), false) => RequestKind::OutChannel { target },
    }
}

/// Whether `path` is one of [`RPC_PATHS`], compared case-insensitively as IIS does.
pub fn is_rpc_path(path: &str) -> bool {
    RPC_PATHS.iter().any(|p| p.eq_ignore_ascii_case(path))
}

/// The RPC server a channel request names: `?server-name:server-port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// The server name as sent: a DNS or NetBIOS name, an IPv4 literal, an IPv6 literal
    /// (without brackets), or an Exchange 2013+ `mailbox-guid@domain`.
    pub host: String,
    /// The server port (1..=65535).
    pub port: u16,
}

impl Target {
    /// The host as an IP address if it is an IPv4 or IPv6 literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Why a `server:port` target is unacceptable. The client (or whoever configured it) is at
/// fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// The request has no query string.
    #[error("no target: the URL needs ?server:port")]
    Missing,
    /// There is no `:` separating the port.
    #[error("target {target:?} has no :port")]
    NoPort {
        /// The target as received.
        target: String,
    },
    /// Nothing before the last `:`.
    #[error("target {target:?} has an empty server name")]
    EmptyHost {
        /// The target as received.
        target: String,
    },
    /// The server name has 1024 characters or more.
    #[error("target server name is {len} characters long (the limit is {MAX_TARGET_HOST_LEN})")]
    HostTooLong {
        /// The name's length in bytes.
        len: usize,
    },
    /// The port is not 1 to 6 decimal digits.
    #[error("target port {port:?} is not a decimal number")]
    InvalidPort {
        /// The port text as received.
        port: String,
    },
    /// The port is 0 or above 65535.
    #[error("target port {port} is out of range (1..=65535)")]
    PortOutOfRange {
        /// The port value.
        port: u64,
    },
    /// The server name contains a character no name can contain.
    #[error("target server name {host:?} contains {ch:?}, which no server name can contain")]
    InvalidChar {
        /// The server name as received.
        host: String,
        /// The first offending character.
        ch: char,
    },
    /// A bracketed or colon-containing server name that is not an IPv6 address.
    #[error("target server name {host:?} is neither a name nor a valid IPv6 literal")]
    InvalidIpv6 {
        /// The server name as received.
        host: String,
    },
}

/// Parses `server-name:server-port`, splitting at the *last* `:` so that IPv6 literals work
/// bracketed (`[::1]:6001`) and bare (`::1:6001`, notes §2.1 and pitfall 16).
pub fn parse_target(query: &str) -> Result<Target, TargetError> {
    let (host, port_text) = query.rsplit_once(':').ok_or_else(|| TargetError::NoPort {
        target: query.to_owned(),
    })?;
    if host.is_empty() {
        return Err(TargetError::EmptyHost {
            target: query.to_owned(),
        });
    }
    let port = parse_port(port_text)?;
    let host = parse_host(host)?;
    Ok(Target { host, port })
}

fn parse_port(text: &str) -> Result<u16, TargetError> {
    // MS-RPCH allows 1 to 6 digits (so `006001` is fine); no sign, no spaces.
    if text.is_empty() || text.len() > 6 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TargetError::InvalidPort {
            port: text.to_owned(),
        });
    }
    let value: u64 = text.parse().map_err(|_| TargetError::InvalidPort {
        port: text.to_owned(),
    })?;
    match u16::try_from(value) {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(TargetError::PortOutOfRange { port: value }),
    }
}

fn parse_host(host: &str) -> Result<String, TargetError> {
    if host.len() > MAX_TARGET_HOST_LEN {
        return Err(TargetError::HostTooLong { len: host.len() });
    }
    // Characters that cannot be part of any server name and that would be dangerous in logs
    // or name resolution. NetBIOS names allow much punctuation, so the list stays short.
    if let Some(ch) = host.chars().find(|&c| {
        c.is_control() || c.is_whitespace() || !c.is_ascii() || matches!(c, '/' | '\\' | '?' | '#')
    }) {
        return Err(TargetError::InvalidChar {
            host: host.to_owned(),
            ch,
        });
    }
    let invalid_ipv6 = || TargetError::InvalidIpv6 {
        host: host.to_owned(),
    };
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or_else(invalid_ipv6)?;
        inner.parse::<Ipv6Addr>().map_err(|_| invalid_ipv6())?;
        return Ok(inner.to_owned());
    }
    if host.contains([':', '[', ']']) {
        host.parse::<Ipv6Addr>().map_err(|_| invalid_ipv6())?;
    }
    Ok(host.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::fixtures::{self, Rng};
    use crate::http::head::parse_request_head;

    fn kind_of(bytes: &[u8]) -> RequestKind {
        classify(&parse_request_head(bytes).unwrap().unwrap().0)
    }

    fn target(host: &str, port: u16) -> Target {
        Target {
            host: host.into(),
            port,
        }
    }

    fn request(method: &str, path: &str, content_length: Option<u64>) -> Vec<u8> {
        let mut text = format!("{method} {path} HTTP/1.1\r\nHost: proxy\r\n");
        if let Some(length) = content_length {
            text.push_str(&format!("Content-Length: {length}\r\n"));
        }
        text.push_str("\r\n");
        text.into_bytes()
    }

    #[test]
    fn real_clients() {
        let local = target("127.0.0.1", 6001);
        assert_eq!(
            kind_of(fixtures::IMPACKET_IN),
            RequestKind::InChannel {
                target: local.clone()
            }
        );
        assert_eq!(
            kind_of(fixtures::IMPACKET_OUT),
            RequestKind::OutChannel {
                target: local.clone()
            }
        );
        assert_eq!(
            kind_of(fixtures::IMPACKET_NTLM_NEGOTIATE),
            RequestKind::Echo
        );
        assert_eq!(
            kind_of(fixtures::SAMBA_OUT),
            RequestKind::OutChannel {
                target: local.clone()
            }
        );
        assert_eq!(
            kind_of(fixtures::SAMBA_IN),
            RequestKind::InChannel { target: local }
        );
        assert_eq!(
            kind_of(fixtures::FREERDP_IN),
            RequestKind::InChannel {
                target: target("localhost", 3388)
            }
        );
        assert_eq!(kind_of(fixtures::WINDOWS_ECHO), RequestKind::Echo);
    }

    #[test]
    fn content_length_boundaries() {
        let path = "/rpc/rpcproxy.dll?mbx1:6001";
        let mbx1 = || target("mbx1", 6001);
        for (method, length, kind) in [
            ("RPC_IN_DATA", None, RequestKind::Echo),
            ("RPC_OUT_DATA", None, RequestKind::Echo),
            ("RPC_IN_DATA", Some(16), RequestKind::Echo),
            ("RPC_OUT_DATA", Some(16), RequestKind::Echo),
            (
                "RPC_IN_DATA",
                Some(17),
                RequestKind::InChannel { target: mbx1() },
            ),
            ("RPC_OUT_DATA", Some(17), RequestKind::BadContentLength(17)),
            ("RPC_OUT_DATA", Some(75), RequestKind::BadContentLength(75)),
            (
                "RPC_OUT_DATA",
                Some(76),
                RequestKind::OutChannel { target: mbx1() },
            ),
            (
                "RPC_OUT_DATA",
                Some(120),
                RequestKind::OutChannel { target: mbx1() },
            ),
            (
                "RPC_OUT_DATA",
                Some(131_072),
                RequestKind::OutChannel { target: mbx1() },
            ),
            (
                "RPC_IN_DATA",
                Some(1 << 31),
                RequestKind::InChannel { target: mbx1() },
            ),
        ] {
            assert_eq!(
                kind_of(&request(method, path, length)),
                kind,
                "{method} {length:?}"
            );
        }
    }

    #[test]
    fn paths_and_methods() {
        assert_eq!(
            kind_of(&request(
                "RPC_IN_DATA",
                "/RPC/RpcProxy.DLL?mbx1:6001",
                Some(1 << 30)
            )),
            RequestKind::InChannel {
                target: target("mbx1", 6001)
            }
        );
        assert_eq!(
            kind_of(&request(
                "RPC_OUT_DATA",
                "/rpcwithcert/rpcproxy.dll?mbx1:6001",
                Some(76)
            )),
            RequestKind::OutChannel {
                target: target("mbx1", 6001)
            }
        );
        assert_eq!(
            kind_of(&request("RPC_IN_DATA", "/", Some(0))),
            RequestKind::NotFound
        );
        assert_eq!(
            kind_of(&request(
                "RPC_IN_DATA",
                "/rpc/rpcproxy.dll/x?a:1",
                Some(1 << 30)
            )),
            RequestKind::NotFound
        );
        assert_eq!(
            kind_of(&request("GET", "/rpc/rpcproxy.dll", None)),
            RequestKind::MethodNotAllowed
        );
        assert_eq!(
            kind_of(&request("rpc_in_data", "/rpc/rpcproxy.dll", None)),
            RequestKind::MethodNotAllowed
        );
        assert_eq!(
            kind_of(&request("RPC_CONNECT", "mbx1:593", None)),
            RequestKind::RpcConnect
        );
        for (method, path) in [
            ("POST", "/autodiscover/autodiscover.xml"),
            ("POST", "/Autodiscover/AutoDiscover.XML"),
            ("GET", "/autodiscover/autodiscover.xml"),
        ] {
            assert_eq!(
                kind_of(&request(method, path, Some(10))),
                RequestKind::Autodiscover
            );
        }
        for path in [
            "/autodiscover/autodiscover.json",
            "/autodiscover/autodiscover.xml/x",
            "/x/autodiscover/autodiscover.xml",
        ] {
            assert_eq!(
                kind_of(&request("POST", path, Some(10))),
                RequestKind::NotFound
            );
        }
        assert_eq!(
            RequestKind::RpcConnect.http_status(),
            Some((501, "Not Implemented"))
        );
        assert_eq!(
            RequestKind::MethodNotAllowed.http_status().map(|s| s.0),
            Some(405)
        );
        assert_eq!(RequestKind::Echo.http_status(), None);
    }

    #[test]
    fn channel_without_query_is_a_bad_target_but_echo_is_not() {
        assert_eq!(
            kind_of(&request("RPC_IN_DATA", "/rpc/rpcproxy.dll", Some(1 << 30))),
            RequestKind::BadTarget(TargetError::Missing)
        );
        assert_eq!(
            kind_of(&request("RPC_OUT_DATA", "/rpc/rpcproxy.dll?mbx1", Some(76))),
            RequestKind::BadTarget(TargetError::NoPort {
                target: "mbx1".into()
            })
        );
        assert_eq!(
            kind_of(&request(
                "RPC_OUT_DATA",
                "/rpc/rpcproxy.dll?garbage",
                Some(4)
            )),
            RequestKind::Echo
        );
    }

    #[test]
    fn chunked_channel_is_refused() {
        let bytes = b"RPC_IN_DATA /rpc/rpcproxy.dll?a:1 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(kind_of(bytes), RequestKind::ChunkedBody);
    }

    #[test]
    fn target_forms() {
        for (query, host, port) in [
            ("mbx1.contoso.com:6001", "mbx1.contoso.com", 6001),
            ("MBX1:6004", "MBX1", 6004),
            ("192.0.2.7:593", "192.0.2.7", 593),
            ("[::1]:6001", "::1", 6001),
            ("[2001:db8::7]:6002", "2001:db8::7", 6002),
            ("::1:6001", "::1", 6001),
            ("2001:db8::7:6002", "2001:db8::7", 6002),
            (
                "b2ea5684-1f8b-4d1b-a5c1-0123456789ab@contoso.com:6001",
                "b2ea5684-1f8b-4d1b-a5c1-0123456789ab@contoso.com",
                6001,
            ),
            ("localhost:3388", "localhost", 3388),
            ("host:065535", "host", 65535),
            ("WEIRD$NAME!:1", "WEIRD$NAME!", 1),
        ] {
            assert_eq!(parse_target(query), Ok(target(host, port)), "{query}");
        }
        assert_eq!(target("::1", 6001).to_string(), "[::1]:6001");
        assert_eq!(target("mbx1", 6001).to_string(), "mbx1:6001");
        assert_eq!(
            parse_target("[::1]:1").unwrap().ip(),
            Some("::1".parse().unwrap())
        );
        assert_eq!(parse_target("mbx1:1").unwrap().ip(), None);
    }

    #[test]
    fn target_errors() {
        use TargetError as E;
        let cases: Vec<(&str, TargetError)> = vec![
            ("", E::NoPort { target: "".into() }),
            (
                "mbx1",
                E::NoPort {
                    target: "mbx1".into(),
                },
            ),
            (
                ":6001",
                E::EmptyHost {
                    target: ":6001".into(),
                },
            ),
            ("mbx1:", E::InvalidPort { port: "".into() }),
            ("mbx1:0", E::PortOutOfRange { port: 0 }),
            ("mbx1:65536", E::PortOutOfRange { port: 65536 }),
            (
                "mbx1:1234567",
                E::InvalidPort {
                    port: "1234567".into(),
                },
            ),
            ("mbx1:+80", E::InvalidPort { port: "+80".into() }),
            (
                "mbx1:0x50",
                E::InvalidPort {
                    port: "0x50".into(),
                },
            ),
            ("mbx1: 80", E::InvalidPort { port: " 80".into() }),
            (
                "mb x1:80",
                E::InvalidChar {
                    host: "mb x1".into(),
                    ch: ' ',
                },
            ),
            (
                "mb\tx1:80",
                E::InvalidChar {
                    host: "mb\tx1".into(),
                    ch: '\t',
                },
            ),
            (
                "mbx\u{1}:80",
                E::InvalidChar {
                    host: "mbx\u{1}".into(),
                    ch: '\u{1}',
                },
            ),
            (
                "m\u{e9}:80",
                E::InvalidChar {
                    host: "m\u{e9}".into(),
                    ch: '\u{e9}',
                },
            ),
            (
                "a/b:80",
                E::InvalidChar {
                    host: "a/b".into(),
                    ch: '/',
                },
            ),
            (
                "[::1:80",
                E::InvalidIpv6 {
                    host: "[::1".into(),
                },
            ),
            (
                "[mbx1]:80",
                E::InvalidIpv6 {
                    host: "[mbx1]".into(),
                },
            ),
            ("a:b:80", E::InvalidIpv6 { host: "a:b".into() }),
            (
                "mbx1]:80",
                E::InvalidIpv6 {
                    host: "mbx1]".into(),
                },
            ),
        ];
        for (query, error) in cases {
            assert_eq!(parse_target(query), Err(error), "{query:?}");
        }
        let long = format!("{}:6001", "a".repeat(1024));
        assert_eq!(parse_target(&long), Err(E::HostTooLong { len: 1024 }));
        let longest = format!("{}:6001", "a".repeat(1023));
        assert!(parse_target(&longest).is_ok());
    }

    #[test]
    fn hostile_targets_never_panic() {
        let mut rng = Rng::new(7);
        let alphabet = b"ab:[]0169.@ \t\x7f-%";
        for _ in 0..20_000 {
            let len = rng.below(24);
            let bytes: Vec<u8> = (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            let text = String::from_utf8_lossy(&bytes);
            if let Ok(t) = parse_target(&text) {
                assert!(t.port != 0);
                // What parses renders back to something that parses to the same target.
                assert_eq!(parse_target(&t.to_string()), Ok(t));
            }
        }
    }
}
