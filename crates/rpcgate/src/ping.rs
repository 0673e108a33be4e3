//! `rpcgate ping`: walks the whole path of an RPC over HTTP connection, stage by stage, and
//! says where it breaks and what to change.
//!
//! ```text
//!  [autodiscover: EXPR proxy, auth package, EXCH server, with --autodiscover EMAIL]
//!  resolve ─ tcp (every address) ─ tls (certificate) ─ http (401 schemes, credentials)
//!    ─ echo ─┬─ done with -E (the proxy alone, like rpcping -E)
//!            └─ channels (RPC_IN_DATA / RPC_OUT_DATA: 200 or 503 RPC Error) ─ rts (A3, C2)
//!               ─ bind (interface, fragment sizes) ─ call (mgmt inq_if_ids or rpcecho AddOne)
//!               ─ latency (--count N)
//! ```
//!
//! The first four stages run on a probe connection of their own, so that each address and
//! the certificate can be inspected; the virtual connection then opens as any client would.
//! Each stage is printed when it completes ([`report`]); a failure ends the run with one
//! sentence saying what it means and the likely fix, and the exit code of its class ([`exit`]).

mod autodiscover;
mod report;
mod tls_probe;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rpch_proto::pdu::rpc::{SyntaxId, SyntaxIdParseError};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::client_auth::{self, HttpAuth};
use crate::rpc_client::{RpcClient, RpcClientError};
use crate::rpch_client::{ClientError, ClientOptions, ProxyUrl, open, read_head_and_body};
use report::Report;

/// What to ping.
#[derive(Debug, Clone)]
pub struct PingArgs {
    /// The proxy; with `autodiscover`, the Autodiscover URL (see [`autodiscover_url`]).
    pub proxy: ProxyUrl,
    /// `server:port` behind the proxy; `None` with `-E` (the proxy alone). With
    /// `autodiscover`, a bare port goes with the discovered server.
    pub endpoint: Option<String>,
    /// `-E`: the proxy alone.
    pub proxy_only: bool,
    /// `--autodiscover EMAIL`: take proxy, auth and endpoint from Autodiscover first.
    pub autodiscover: Option<String>,
    pub insecure: bool,
    pub ca: Option<PathBuf>,
    pub timeout: Duration,
    /// Interface to bind (default: the DCE management interface).
    pub interface: Option<SyntaxId>,
    /// User and password, and the scheme asked for (`None`: the best one offered).
    pub user: Option<String>,
    pub password: Option<String>,
    pub auth: Option<String>,
    /// Calls to make (latency statistics when more than one).
    pub count: u32,
    pub json: bool,
    /// Addresses to use for the proxy's name instead of resolving it (like curl --resolve).
    pub resolve: Option<Vec<SocketAddr>>,
}

/// Exit codes, one per class of failing stage.
pub mod exit {
    /// Every stage passed.
    pub const OK: i32 = 0;
    /// Bad arguments (URL, interface, password file, TLS settings).
    pub const USAGE: i32 = 2;
    /// The proxy is unreachable: name resolution or TCP.
    pub const CONNECT: i32 = 3;
    /// TLS handshake or certificate.
    pub const TLS: i32 = 4;
    /// The proxy refused the channels: `503 RPC Error`, other HTTP errors, no echo.
    pub const PROXY_REFUSED: i32 = 5;
    /// The RTS handshake (CONN/A3, CONN/C2) did not complete.
    pub const RTS: i32 = 6;
    /// The bind was refused (bind_nak, interface not served).
    pub const BIND: i32 = 7;
    /// The call failed.
    pub const CALL: i32 = 8;
    /// HTTP authentication: credentials missing, scheme not offered, or rejected.
    pub const AUTH: i32 = 9;
    /// Autodiscover answered with an error (unknown address, no server) or nothing usable.
    pub const AUTODISCOVER: i32 = 10;
}

/// The Autodiscover URL for `--autodiscover EMAIL`: the given proxy URL's host, port and
/// scheme, or `https://autodiscover.<domain>`.
pub fn autodiscover_url(given: Option<&str>, email: &str) -> Result<ProxyUrl, String> {
    autodiscover::url(given, email)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the ping; returns the process exit code.
pub async fn run(args: PingArgs) -> i32 {
    let mut report = Report::new(args.json);
    if let Some(email) = &args.autodiscover {
        report.line(&format!(
            "rpcgate ping --autodiscover {email} via {}",
            args.proxy
        ));
        let code = match autodiscover::stage(&args, email, &mut report).await {
            Ok(next) => stages(&next, &mut report).await,
            Err(code) => code,
        };
        report.finish(
            json!({"autodiscover": email, "url": args.proxy.to_string(), "endpoint": args.endpoint}),
            code,
        );
        return code;
    }
    let target = match &args.endpoint {
        Some(e) => format!("{} -> {e} (RPC over HTTP v2)", args.proxy),
        None => format!("{} (proxy only, echo)", args.proxy),
    };
    report.line(&format!("rpcgate ping {target}"));
    let code = stages(&args, &mut report).await;
    report.finish(
        json!({"proxy": args.proxy.to_string(), "endpoint": args.endpoint}),
        code,
    );
    code
}

async fn stages(args: &PingArgs, report: &mut Report) -> i32 {
    let proxy = &args.proxy;
    // Resolution: every address, in the order a client tries them.
    let addrs = match &args.resolve {
        Some(list) => {
            let addrs: Vec<SocketAddr> = list
                .iter()
                .map(|a| SocketAddr::new(a.ip(), proxy.port))
                .collect();
            report.ok(
                "resolve",
                format!(
                    "{} -> {} address(es) (from --resolve)",
                    proxy.host,
                    addrs.len()
                ),
                addrs.iter().map(|a| a.ip().to_string()).collect(),
            );
            addrs
        }
        None => match crate::connect::resolve(&proxy.host, proxy.port).await {
            Ok(addrs) => {
                report.ok(
                    "resolve",
                    format!("{} -> {} address(es)", proxy.host, addrs.len()),
                    addrs.iter().map(|a| a.ip().to_string()).collect(),
                );
                addrs
            }
            Err(e) => {
                report.fail(
                    "resolve",
                    e.to_string(),
                    vec![],
                    format!(
                        "the proxy's name {} does not resolve here: check its spelling and this \
                         machine's DNS (the name Outlook uses must resolve from the client side)",
                        proxy.host
                    ),
                );
                return exit::CONNECT;
            }
        },
    };

    // TCP: each address in turn, both families, so that a dead family shows.
    let mut stream = None;
    let mut lines = Vec::new();
    let mut winner = None;
    for addr in &addrs {
        let started = Instant::now();
        let attempt = tokio::time::timeout(args.timeout, TcpStream::connect(addr)).await;
        let took = ms(started.elapsed());
        match attempt {
            Ok(Ok(s)) => {
                lines.push(format!("{addr}  connected in {took:.1} ms"));
                if stream.is_none() {
                    stream = Some(s);
                    winner = Some(*addr);
                }
            }
            Ok(Err(e)) => lines.push(format!("{addr}  failed after {took:.1} ms: {e}")),
            Err(_) => lines.push(format!("{addr}  no answer within {:?}", args.timeout)),
        }
    }
    let (Some(stream), Some(addr)) = (stream, winner) else {
        report.fail(
            "tcp",
            format!("no address of {} accepts port {}", proxy.host, proxy.port),
            lines,
            format!(
                "nothing listens on port {} of the proxy, or a firewall drops it: check that \
                 `rpcgate serve` runs with a listener on that port and that the port is open",
                proxy.port
            ),
        );
        return exit::CONNECT;
    };
    let failed = lines
        .iter()
        .filter(|l| l.contains("failed") || l.contains("no answer"))
        .count();
    let summary = if failed > 0 {
        format!(
            "{addr} ({failed} of {} address(es) failed; clients that try only the first \
             address would fail too)",
            addrs.len()
        )
    } else {
        format!("{addr}")
    };
    report.ok("tcp", summary, lines);

    // TLS: the certificate as a strict client sees it.
    if proxy.tls {
        match tls_probe::handshake(stream, &proxy.host, args.ca.as_deref(), args.timeout).await {
            Ok((tls, facts)) => {
                let details = tls_probe::details(&facts, &proxy.host);
                let summary = format!("{}, {}", facts.version, facts.cipher);
                match tls_probe::diagnosis(&facts, &proxy.host, addr) {
                    Some(why) if !args.insecure => {
                        report.fail("tls", summary, details, why);
                        return exit::TLS;
                    }
                    Some(_) => report.ok(
                        "tls",
                        format!("{summary} (NOT trusted, accepted because of --insecure)"),
                        details,
                    ),
                    None => report.ok("tls", summary, details),
                }
                http_stages(args, report, tls).await
            }
            Err(e) => {
                report.fail(
                    "tls",
                    e,
                    vec![],
                    format!(
                        "the TLS handshake with {addr} failed: is this an HTTPS listener? (use \
                         http:// for a plain-HTTP one)"
                    ),
                );
                exit::TLS
            }
        }
    } else {
        http_stages(args, report, stream).await
    }
}

fn credentials(args: &PingArgs, offered: &[String]) -> Result<Option<HttpAuth>, String> {
    let (Some(user), Some(password)) = (&args.user, &args.password) else {
        return Ok(None);
    };
    let has = |s: &str| offered.iter().any(|o| o.eq_ignore_ascii_case(s));
    let scheme = match args.auth.as_deref() {
        Some(asked) => {
            if !has(asked) {
                return Err(format!(
                    "the proxy offers only {} while {asked} was asked: use --auth {} (or add \
                     \"{}\" to the listener's auth list)",
                    offered.join(", "),
                    offered
                        .first()
                        .map(|s| s.to_ascii_lowercase())
                        .unwrap_or_default(),
                    asked.to_ascii_lowercase()
                ));
            }
            asked.to_ascii_lowercase()
        }
        None if has("NTLM") => "ntlm".into(),
        None if has("Basic") => "basic".into(),
        None => {
            return Err(format!(
                "the proxy offers only {} and ping speaks Basic and NTLM: enable \"ntlm\" or \
                 \"basic\" on the listener to test with ping",
                offered.join(", ")
            ));
        }
    };
    match scheme.as_str() {
        "basic" => Ok(Some(HttpAuth::Basic {
            user: user.clone(),
            password: password.clone(),
        })),
        "ntlm" => Ok(Some(HttpAuth::Ntlm {
            user: user.clone(),
            password: password.clone(),
        })),
        other => Err(format!(
            "ping cannot authenticate with {other} (Kerberos) yet: use --auth ntlm or basic"
        )),
    }
}

fn echo_request(proxy: &ProxyUrl, extra: &str) -> String {
    format!(
        "RPC_IN_DATA {} HTTP/1.1\r\nHost: {}:{}\r\nAccept: application/rpc\r\n\
         User-Agent: MSRPC\r\nCache-Control: no-cache\r\nConnection: Keep-Alive\r\n\
         {extra}Content-Length: 0\r\n\r\n",
        proxy.path, proxy.host, proxy.port
    )
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    args: &PingArgs,
    extra: &str,
) -> Result<crate::http::ResponseHead, ClientError> {
    stream
        .write_all(echo_request(&args.proxy, extra).as_bytes())
        .await?;
    read_head_and_body(stream, args.timeout).await
}

/// HTTP, echo, and the virtual connection.
async fn http_stages<S: AsyncRead + AsyncWrite + Unpin>(
    args: &PingArgs,
    report: &mut Report,
    mut stream: S,
) -> i32 {
    let fail_http = |report: &mut Report, e: ClientError| {
        report.fail(
            "http",
            e.to_string(),
            vec![],
            "the proxy accepted the connection but gave no HTTP answer to an echo request: \
             check the URL (scheme, port, path /rpc/rpcproxy.dll)",
        );
        exit::PROXY_REFUSED
    };
    let mut head = match echo(&mut stream, args, "").await {
        Ok(h) => h,
        Err(e) => return fail_http(report, e),
    };
    let mut auth = None;
    if head.status == 401 {
        let values = crate::rpch_client::www_authenticate(&head);
        let offered = client_auth::offered_schemes(values.iter().map(String::as_str));
        let chosen = match credentials(args, &offered) {
            Ok(Some(c)) => c,
            Ok(None) => {
                report.fail(
                    "http",
                    format!("401, offers {}", offered.join(", ")),
                    vec![],
                    "the proxy requires authentication: pass --user and --password-file (or \
                     RPCGATE_PASSWORD)",
                );
                return exit::AUTH;
            }
            Err(why) => {
                report.fail(
                    "http",
                    format!("401, offers {}", offered.join(", ")),
                    vec![],
                    why,
                );
                return exit::AUTH;
            }
        };
        let answered = match &chosen {
            HttpAuth::Basic { .. } => {
                echo(
                    &mut stream,
                    args,
                    &chosen.basic_header().unwrap_or_default(),
                )
                .await
            }
            HttpAuth::Ntlm { user, password } => {
                match echo(&mut stream, args, &client_auth::ntlm_negotiate_header()).await {
                    Ok(h) => {
                        let values = crate::rpch_client::www_authenticate(&h);
                        match client_auth::ntlm_challenge(values.iter().map(String::as_str))
                            .ok_or_else(|| "no NTLM challenge in the 401".to_string())
                            .and_then(|c| client_auth::ntlm_authenticate_header(user, password, &c))
                        {
                            Ok(header) => echo(&mut stream, args, &header).await,
                            Err(e) => Err(ClientError::Protocol(e)),
                        }
                    }
                    Err(e) => Err(e),
                }
            }
        };
        head = match answered {
            Ok(h) => h,
            Err(e) => return fail_http(report, e),
        };
        if head.status == 401 {
            report.fail(
                "http",
                format!(
                    "401 again: {} rejected for {}",
                    chosen.scheme(),
                    chosen.user()
                ),
                vec![format!("offered: {}", offered.join(", "))],
                "the proxy rejected these credentials: check the password and the user name \
                 (DOMAIN\\user for domain accounts); repeated failures can also be throttled",
            );
            return exit::AUTH;
        }
        report.ok(
            "http",
            format!(
                "401 offered {}; authenticated as {} with {}",
                offered.join(", "),
                chosen.user(),
                chosen.scheme()
            ),
            vec![],
        );
        auth = Some(chosen);
    } else {
        report.ok(
            "http",
            format!(
                "HTTP {} without credentials (anonymous listener)",
                head.status
            ),
            vec![],
        );
    }
    if head.status != 200 {
        report.fail(
            "echo",
            format!("HTTP {} {}", head.status, head.reason),
            vec![],
            format!(
                "the URL does not answer RPC echo requests: check the path ({}) and that it is \
                 an RPC over HTTP proxy",
                args.proxy.path
            ),
        );
        return exit::PROXY_REFUSED;
    }
    report.ok("echo", "200, echo RTS PDU received", vec![]);
    drop(stream);

    let Some(endpoint) = &args.endpoint else {
        return exit::OK;
    };
    let tls = if args.proxy.tls {
        match crate::tls::client_config(args.ca.as_deref(), args.insecure) {
            Ok(config) => Some(config),
            Err(e) => {
                report.fail(
                    "channels",
                    e.to_string(),
                    vec![],
                    "fix the TLS settings (--ca)",
                );
                return exit::USAGE;
            }
        }
    } else {
        None
    };
    let options = ClientOptions {
        tls,
        timeout: args.timeout,
        auth,
        addresses: args.resolve.clone(),
        ..ClientOptions::default()
    };
    report.restart();
    let transport = match open(&args.proxy, endpoint, &options).await {
        Ok(t) => t,
        Err(e) => return channel_failure(report, &e, endpoint),
    };
    let info = transport.info.clone();
    report.ok_timed(
        "channels",
        ms(info.response_after),
        format!("RPC_IN_DATA and RPC_OUT_DATA to {endpoint} accepted (200)"),
    );
    let p = info.params;
    report.ok_timed(
        "rts",
        ms(info.opened_after.saturating_sub(info.response_after)),
        format!(
            "vc {}: CONN/A3 (keep-alive {} s), CONN/C2 (receive window {}, timeout {} s)",
            info.vc,
            p.out_proxy_timeout_ms / 1000,
            p.in_proxy_window,
            p.in_proxy_timeout_ms / 1000
        ),
    );
    rpc_stages(args, report, transport, endpoint).await
}

fn channel_failure(report: &mut Report, e: &ClientError, endpoint: &str) -> i32 {
    let (stage, code, why) = match e {
        ClientError::RpcError { code: 0x6ba, .. } => (
            "channels",
            exit::PROXY_REFUSED,
            format!(
                "503 RPC Error 6ba: {endpoint} is not in the proxy's ValidPorts, or the proxy \
                 cannot reach it (endpoint down, firewall, name not resolvable on the proxy): \
                 check valid_ports and that the endpoint listens there"
            ),
        ),
        ClientError::RpcError { code: 5, .. } => (
            "channels",
            exit::PROXY_REFUSED,
            format!(
                "503 RPC Error 5, access denied: the proxy's authorization rules (auth.allow) do \
                 not let this user reach {endpoint}"
            ),
        ),
        ClientError::RpcError { code, .. } => (
            "channels",
            exit::PROXY_REFUSED,
            format!("the proxy refused the channel with RPC error {code:#x}: see the proxy's log"),
        ),
        ClientError::Unauthorized { .. } => (
            "channels",
            exit::AUTH,
            "the channel request was not authenticated although the echo was: check the \
             listener's auth settings"
                .to_string(),
        ),
        ClientError::HttpStatus { status, .. } => (
            "channels",
            exit::PROXY_REFUSED,
            format!("the proxy answered the channel request with HTTP {status}: see its log"),
        ),
        ClientError::Connect { .. } => (
            "channels",
            exit::CONNECT,
            "the proxy stopped accepting connections between stages".to_string(),
        ),
        ClientError::Tls { .. } => (
            "channels",
            exit::TLS,
            "TLS failed on the channel connections: pass --ca with the proxy's CA".to_string(),
        ),
        ClientError::Timeout { .. } | ClientError::Protocol(_) | ClientError::Io(_) => (
            "rts",
            exit::RTS,
            format!(
                "the proxy accepted the channels but the virtual connection did not open: is \
                 {endpoint} an ncacn_http endpoint (rpcgate endpoint, or a Windows RPC over \
                 HTTP server port such as 6001-6004)?"
            ),
        ),
    };
    report.fail(stage, e.to_string(), vec![], why);
    code
}

async fn rpc_stages(
    args: &PingArgs,
    report: &mut Report,
    transport: crate::rpch_client::HttpTransport,
    endpoint: &str,
) -> i32 {
    let mgmt = crate::demo::mgmt::interface();
    let echo_if = crate::demo::echo::interface();
    let interface = args.interface.unwrap_or(mgmt);
    let mut client = RpcClient::new(transport).with_timeout(args.timeout);
    match client.bind(interface).await {
        Ok(info) => report.ok(
            "bind",
            format!(
                "{interface} accepted (fragments: send {}, receive {})",
                info.max_xmit_frag, info.max_recv_frag
            ),
            vec![],
        ),
        Err(e) => {
            let why = match &e {
                RpcClientError::ContextRejected { .. } => format!(
                    "the endpoint {endpoint} was reached but does not serve {interface}: check \
                     the port (the service may listen on another one) or the interface id"
                ),
                RpcClientError::BindNak { .. } => format!(
                    "the RPC server behind {endpoint} refused the association (bind_nak): see \
                     the server's log"
                ),
                _ => {
                    format!("no usable bind answer from {endpoint}: is the backend an RPC server?")
                }
            };
            report.fail("bind", e.to_string(), vec![], why);
            return exit::BIND;
        }
    }
    let name = if interface == echo_if {
        "rpcecho AddOne"
    } else if interface == mgmt {
        "mgmt inq_if_ids"
    } else {
        report.ok(
            "call",
            "no call known for this interface: bind only",
            vec![],
        );
        return exit::OK;
    };
    let mut latencies = Vec::new();
    let mut first = String::new();
    let mut details = Vec::new();
    for i in 0..args.count.max(1) {
        let started = Instant::now();
        let outcome = if interface == echo_if {
            client
                .echo_add_one(41)
                .await
                .map(|v| (format!("AddOne(41) = {v}"), vec![]))
        } else {
            client.mgmt_inq_if_ids().await.map(|ids| {
                (
                    format!("{} interface(s)", ids.len()),
                    ids.iter().map(ToString::to_string).collect(),
                )
            })
        };
        match outcome {
            Ok((summary, lines)) => {
                latencies.push(ms(started.elapsed()));
                if i == 0 {
                    first = summary;
                    details = lines;
                }
            }
            Err(e) => {
                report.fail(
                    "call",
                    format!("{name} (call {} of {}): {e}", i + 1, args.count.max(1)),
                    vec![],
                    "the bind worked but the call failed on the server: see the RPC server's \
                     log (a fault names the reason)",
                );
                return exit::CALL;
            }
        }
    }
    report.ok("call", format!("{name}: {first}"), details);
    if latencies.len() > 1 {
        let mut sorted = latencies.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let mean = sorted.iter().sum::<f64>() / n as f64;
        let p99 = sorted
            .get(
                ((n as f64 * 0.99).ceil() as usize)
                    .saturating_sub(1)
                    .min(n - 1),
            )
            .copied()
            .unwrap_or_default();
        report.ok_timed(
            "latency",
            sorted.iter().sum(),
            format!(
                "{n} calls: min {:.2} / mean {mean:.2} / p99 {p99:.2} / max {:.2} ms",
                sorted.first().copied().unwrap_or_default(),
                sorted.last().copied().unwrap_or_default()
            ),
        );
    }
    exit::OK
}

/// Parses `--interface UUID[:MAJOR.MINOR]` (or the `UUID vMAJOR.MINOR` form).
pub fn parse_interface(text: &str) -> Result<SyntaxId, String> {
    let normal = match text.rsplit_once(':') {
        Some((uuid, version)) => format!("{uuid} v{version}"),
        None => text.to_string(),
    };
    normal
        .parse()
        .map_err(|e: SyntaxIdParseError| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interfaces_parse_with_colon_versions() {
        let id = parse_interface("60a15ec5-4de8-11d7-a637-005056a20182:1.0");
        assert_eq!(id, Ok(crate::demo::echo::interface()));
        assert!(parse_interface("nope").is_err());
    }
}
