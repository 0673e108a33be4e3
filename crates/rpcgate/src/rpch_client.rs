//! rpcgate's own RPC-over-HTTP client transport: opens a virtual connection through a proxy
//! and carries RPC PDUs over it. `rpcgate ping`, `rpcgate bench` and the tests use it.
//!
//! [`open`] connects the IN and OUT channels (each over TCP, optionally TLS, optionally through
//! different proxies to exercise split channels), sends CONN/A1 and CONN/B1, checks the OUT
//! response status (decoding `503 RPC Error: <hex>`), waits for CONN/A3 and CONN/C2, and then
//! spawns a task that drives [`ClientVc`]: PDUs given to [`HttpTransport::send`] go out on the
//! IN channel within the proxy's window, PDUs from the OUT channel come back through
//! [`HttpTransport::recv`], acknowledged and pinged as the protocol requires.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rpch_proto::Cookie;
use rpch_proto::client::{ClientConfig, ClientVc, ConnectionParams};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

use crate::connect::{TCP_KEEPALIVE_IDLE, connect, tune_socket};
use crate::framed::{PduReader, finish_writer, spawn_writer};
use crate::http::parse_response_head;

/// IN channel Content-Length, as every client sends it (1 GiB).
pub const IN_CHANNEL_LIFETIME: u32 = 0x4000_0000;
/// The OUT request's Content-Length: exactly CONN/A1.
const OUT_REQUEST_LENGTH: u64 = 76;
/// RPC PDUs queued toward the driver task.
const QUEUE: usize = 64;

/// Where the proxy is: `http[s]://host[:port][/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    pub tls: bool,
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl std::str::FromStr for ProxyUrl {
    type Err = String;

    /// Accepts `https://host:port`, `http://host/rpc/rpcproxy.dll`, `host` (HTTPS on 443) and
    /// bracketed IPv6 literals.
    fn from_str(text: &str) -> Result<Self, String> {
        let (tls, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else if text.contains("://") {
            return Err(format!(
                "{text}: only http:// and https:// proxy URLs are supported"
            ));
        } else {
            (true, text)
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (rest.get(..i).unwrap_or(""), rest.get(i..).unwrap_or("/")),
            None => (rest, "/rpc/rpcproxy.dll"),
        };
        let path = path.split('?').next().unwrap_or(path);
        let path = if path == "/" || path.is_empty() {
            "/rpc/rpcproxy.dll"
        } else {
            path
        };
        let default_port = if tls { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{text}: unterminated IPv6 literal"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| format!("{text}: bad port {p:?}"))?,
                None => default_port,
            };
            (host.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((host, p)) => (
                    host.to_string(),
                    p.parse().map_err(|_| format!("{text}: bad port {p:?}"))?,
                ),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() {
            return Err(format!("{text}: no host name"));
        }
        Ok(Self {
            tls,
            host,
            port,
            path: path.to_string(),
        })
    }
}

impl std::fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            write!(f, "{scheme}://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

/// How to open a virtual connection.
#[derive(Clone)]
pub struct ClientOptions {
    /// TLS settings for https proxies.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Send the OUT channel to this proxy instead (IN and OUT on different proxy instances).
    pub out_proxy: Option<ProxyUrl>,
    /// Our OUT receive window (CONN/A1).
    pub receive_window: u32,
    /// Bound on each stage: connect, TLS, response head, CONN/A3, CONN/C2.
    pub timeout: Duration,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("tls", &self.tls.is_some())
            .field("out_proxy", &self.out_proxy)
            .field("receive_window", &self.receive_window)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Default for ClientOptions {
    fn default() -> Self {
        Self {
            tls: None,
            out_proxy: None,
            receive_window: 65_536,
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why a virtual connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to the proxy {proxy}: {source}")]
    Connect {
        proxy: String,
        source: crate::connect::ConnectError,
    },
    #[error("TLS with {proxy}: {message}")]
    Tls { proxy: String, message: String },
    #[error("the proxy refused the channel: RPC error {code:#x} ({status_line})")]
    RpcError { code: u32, status_line: String },
    #[error("the proxy answered the OUT channel with HTTP {status} {reason}")]
    HttpStatus { status: u16, reason: String },
    #[error("{what} timed out after {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error("{0}")]
    Protocol(String),
    #[error("I/O with the proxy: {0}")]
    Io(#[from] std::io::Error),
}

/// What opening the virtual connection observed, for diagnostics.
#[derive(Debug, Clone)]
pub struct OpenInfo {
    pub vc: Cookie,
    pub params: ConnectionParams,
    /// Time to the OUT response's status line, and to CONN/C2.
    pub response_after: Duration,
    pub opened_after: Duration,
}

/// Any byte stream to a proxy.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
type BoxedIo = Box<dyn Io>;

/// An open virtual connection carrying RPC PDUs.
#[derive(Debug)]
pub struct HttpTransport {
    to_vc: mpsc::Sender<Bytes>,
    from_vc: mpsc::Receiver<Bytes>,
    ended: Arc<Mutex<Option<String>>>,
    pub info: OpenInfo,
}

impl HttpTransport {
    /// Sends one RPC PDU to the server.
    pub async fn send(&mut self, pdu: Bytes) -> std::io::Result<()> {
        self.to_vc.send(pdu).await.map_err(|_| self.closed_error())
    }

    /// The next RPC PDU from the server.
    pub async fn recv(&mut self) -> std::io::Result<Bytes> {
        self.from_vc.recv().await.ok_or_else(|| self.closed_error())
    }

    /// A cloneable handle for sending while another task receives.
    pub fn sender(&self) -> PduSender {
        PduSender {
            to_vc: self.to_vc.clone(),
        }
    }

    fn closed_error(&self) -> std::io::Error {
        let why = self
            .ended
            .lock()
            .ok()
            .and_then(|g| g.clone())
            .unwrap_or_else(|| "closed".into());
        std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            format!("virtual connection ended: {why}"),
        )
    }
}

impl crate::rpc_client::PduTransport for HttpTransport {
    async fn send(&mut self, pdu: Bytes) -> std::io::Result<()> {
        HttpTransport::send(self, pdu).await
    }

    async fn recv(&mut self) -> std::io::Result<Bytes> {
        HttpTransport::recv(self).await
    }
}

/// Sends RPC PDUs on a virtual connection (see [`HttpTransport::sender`]).
#[derive(Debug, Clone)]
pub struct PduSender {
    to_vc: mpsc::Sender<Bytes>,
}

impl PduSender {
    pub async fn send(&self, pdu: Bytes) -> std::io::Result<()> {
        self.to_vc.send(pdu).await.map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "virtual connection ended",
            )
        })
    }
}

fn random_cookie() -> Cookie {
    let mut bytes = [0u8; 16];
    // Without an OS random source, a time-derived cookie still keeps concurrent runs apart.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        bytes = nanos.to_le_bytes();
    }
    Cookie(bytes)
}

async fn open_stream(proxy: &ProxyUrl, options: &ClientOptions) -> Result<BoxedIo, ClientError> {
    let connected = tokio::time::timeout(
        options.timeout,
        connect(&proxy.host, proxy.port, options.timeout),
    )
    .await
    .map_err(|_| ClientError::Timeout {
        what: "connecting to the proxy",
        after: options.timeout,
    })?
    .map_err(|source| ClientError::Connect {
        proxy: proxy.to_string(),
        source,
    })?;
    let stream = connected.stream;
    tune_socket(&stream, TCP_KEEPALIVE_IDLE);
    if !proxy.tls {
        return Ok(Box::new(stream));
    }
    let config = options.tls.clone().ok_or_else(|| ClientError::Tls {
        proxy: proxy.to_string(),
        message: "no TLS settings given for an https proxy".into(),
    })?;
    let name = rustls::pki_types::ServerName::try_from(proxy.host.clone()).map_err(|e| {
        ClientError::Tls {
            proxy: proxy.to_string(),
            message: format!("invalid server name: {e}"),
        }
    })?;
    let tls = tokio::time::timeout(
        options.timeout,
        TlsConnector::from(config).connect(name, stream),
    )
    .await
    .map_err(|_| ClientError::Timeout {
        what: "the TLS handshake",
        after: options.timeout,
    })?
    .map_err(|e| ClientError::Tls {
        proxy: proxy.to_string(),
        message: e.to_string(),
    })?;
    Ok(Box::new(tls))
}

fn request_head(method: &str, proxy: &ProxyUrl, target: &str, content_length: u64) -> String {
    format!(
        "{method} {}?{target} HTTP/1.1\r\nHost: {}:{}\r\nAccept: application/rpc\r\n\
         User-Agent: MSRPC\r\nCache-Control: no-cache\r\nPragma: No-cache\r\n\
         Connection: Keep-Alive\r\nContent-Length: {content_length}\r\n\r\n",
        proxy.path, proxy.host, proxy.port
    )
}

/// Opens a virtual connection to `target` (`server:port`) through `proxy`.
pub async fn open(
    proxy: &ProxyUrl,
    target: &str,
    options: &ClientOptions,
) -> Result<HttpTransport, ClientError> {
    let started = Instant::now();
    let out_proxy = options.out_proxy.as_ref().unwrap_or(proxy);
    let mut in_stream = open_stream(proxy, options).await?;
    let mut out_stream = open_stream(out_proxy, options).await?;
    let config = ClientConfig {
        vc: random_cookie(),
        in_channel: random_cookie(),
        out_channel: random_cookie(),
        association_group: random_cookie(),
        receive_window: options.receive_window,
        in_channel_lifetime: IN_CHANNEL_LIFETIME,
        keepalive_ms: 300_000,
    };
    let mut vc = ClientVc::new(config);
    let now = Instant::now();

    let mut in_request =
        request_head("RPC_IN_DATA", proxy, target, u64::from(IN_CHANNEL_LIFETIME)).into_bytes();
    while let Some(pdu) = vc.poll_transmit_in(now) {
        in_request.extend_from_slice(&pdu);
    }
    let mut out_request =
        request_head("RPC_OUT_DATA", out_proxy, target, OUT_REQUEST_LENGTH).into_bytes();
    while let Some(pdu) = vc.poll_transmit_out() {
        out_request.extend_from_slice(&pdu);
    }
    out_stream.write_all(&out_request).await?;
    in_stream.write_all(&in_request).await?;

    // The OUT response head: 200 Success, or 503 RPC Error: <hex>.
    let mut buf = BytesMut::with_capacity(4096);
    let head = tokio::time::timeout(options.timeout, async {
        loop {
            match parse_response_head(&buf) {
                Ok(Some((head, used))) => {
                    let _ = buf.split_to(used);
                    return Ok(head);
                }
                Ok(None) => {}
                Err(e) => return Err(ClientError::Protocol(format!("bad OUT response: {e}"))),
            }
            if out_stream.read_buf(&mut buf).await? == 0 {
                return Err(ClientError::Protocol(
                    "the proxy closed the OUT channel without a response".into(),
                ));
            }
        }
    })
    .await
    .map_err(|_| ClientError::Timeout {
        what: "the OUT channel response",
        after: options.timeout,
    })??;
    let response_after = started.elapsed();
    if head.status != 200 {
        let status_line = format!("HTTP {} {}", head.status, head.reason);
        if let Some(code) = head.rpc_error_code() {
            return Err(ClientError::RpcError { code, status_line });
        }
        return Err(ClientError::HttpStatus {
            status: head.status,
            reason: head.reason,
        });
    }

    let mut out_reader = PduReader::new(out_stream, buf);
    while !vc.is_open() {
        let pdu = tokio::time::timeout(options.timeout, out_reader.next())
            .await
            .map_err(|_| ClientError::Timeout {
                what: "CONN/A3 and CONN/C2",
                after: options.timeout,
            })?
            .map_err(|e| ClientError::Protocol(format!("OUT channel: {e}")))?
            .ok_or_else(|| ClientError::Protocol("the OUT channel closed during setup".into()))?;
        vc.handle_out_pdu(pdu)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
    }
    let info = OpenInfo {
        vc: config.vc,
        params: vc.params(),
        response_after,
        opened_after: started.elapsed(),
    };

    let (app_tx, to_vc) = mpsc::channel(QUEUE);
    let (from_vc, app_rx) = mpsc::channel(QUEUE);
    let ended = Arc::new(Mutex::new(None));
    tokio::spawn(drive(
        vc,
        in_stream,
        out_reader,
        to_vc,
        from_vc,
        ended.clone(),
    ));
    Ok(HttpTransport {
        to_vc: app_tx,
        from_vc: app_rx,
        ended,
        info,
    })
}

/// Runs an open virtual connection until the application or the network ends it.
async fn drive(
    mut vc: ClientVc,
    in_stream: BoxedIo,
    mut out_reader: PduReader<BoxedIo>,
    mut to_vc: mpsc::Receiver<Bytes>,
    from_vc: mpsc::Sender<Bytes>,
    ended: Arc<Mutex<Option<String>>>,
) {
    let (_in_r, in_w) = tokio::io::split(in_stream);
    let (in_tx, in_task) = spawn_writer(in_w);
    let mut app_open = true;
    let outcome: String = loop {
        let now = Instant::now();
        vc.handle_timeout(now);
        while vc.has_transmit_in() {
            match in_tx.try_reserve() {
                Ok(permit) => {
                    if let Some(pdu) = vc.poll_transmit_in(now) {
                        permit.send(pdu);
                    }
                }
                Err(_) => break,
            }
        }
        while vc.has_received() {
            match from_vc.try_reserve() {
                Ok(permit) => {
                    if let Some(pdu) = vc.poll_received() {
                        permit.send(pdu);
                    }
                }
                Err(_) => break,
            }
        }
        if !app_open && vc.queued_bytes() == 0 && !vc.has_transmit_in() {
            break "closed by the application".into();
        }
        let ping_at = vc.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            pdu = to_vc.recv(), if app_open && vc.queued_bytes() < 256 * 1024 => match pdu {
                Some(pdu) => vc.send(pdu),
                None => app_open = false,
            },
            read = out_reader.next(), if vc.wants_out_data() => match read {
                Ok(Some(pdu)) => if let Err(e) = vc.handle_out_pdu(pdu) { break e.to_string() },
                Ok(None) => break "the proxy closed the OUT channel".into(),
                Err(e) => break format!("OUT channel: {e}"),
            },
            permit = in_tx.reserve(), if vc.has_transmit_in() => match permit {
                Ok(permit) => if let Some(pdu) = vc.poll_transmit_in(Instant::now()) { permit.send(pdu) },
                Err(_) => break "writing the IN channel failed".into(),
            },
            permit = from_vc.reserve(), if vc.has_received() => match permit {
                Ok(permit) => if let Some(pdu) = vc.poll_received() { permit.send(pdu) },
                Err(_) => break "closed by the application".into(),
            },
            () = tokio::time::sleep_until(ping_at.unwrap_or_else(tokio::time::Instant::now)), if ping_at.is_some() => {}
        }
    };
    if let Ok(mut slot) = ended.lock() {
        *slot = Some(outcome);
    }
    drop(from_vc);
    drop(in_tx);
    finish_writer(in_task).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proxy_urls() {
        let u: ProxyUrl = "https://127.0.0.1:8443".parse().unwrap();
        assert_eq!(
            u,
            ProxyUrl {
                tls: true,
                host: "127.0.0.1".into(),
                port: 8443,
                path: "/rpc/rpcproxy.dll".into()
            }
        );
        let u: ProxyUrl = "http://[::1]:8080/rpc/rpcproxy.dll?x:1".parse().unwrap();
        assert_eq!((u.tls, u.host.as_str(), u.port), (false, "::1", 8080));
        assert_eq!(u.path, "/rpc/rpcproxy.dll");
        assert_eq!(u.to_string(), "http://[::1]:8080/rpc/rpcproxy.dll");
        let u: ProxyUrl = "mail.example.com".parse().unwrap();
        assert_eq!((u.tls, u.port), (true, 443));
        assert!("ftp://x".parse::<ProxyUrl>().is_err());
        assert!("https://:1".parse::<ProxyUrl>().is_err());
        assert!("https://h:99999".parse::<ProxyUrl>().is_err());
    }
}
