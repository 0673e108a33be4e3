//! rpcgate's own RPC-over-HTTP client transport: opens a virtual connection through a proxy
//! and carries RPC PDUs over it. `rpcgate ping`, `rpcgate bench` and the tests use it.
//!
//! [`open`] connects the IN and OUT channels (each over TCP, optionally TLS, optionally through
//! different proxies to exercise split channels), sends CONN/A1 and CONN/B1, checks the OUT
//! response status (decoding `503 RPC Error: <hex>`), waits for CONN/A3 and CONN/C2, and then
//! spawns a task that drives [`ClientVc`]: PDUs given to [`HttpTransport::send`] go out on the
//! IN channel within the proxy's window, PDUs from the OUT channel come back through
//! [`HttpTransport::recv`], acknowledged and pinged as the protocol requires.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use rpch_proto::Cookie;
use rpch_proto::client::{ChannelId, ClientConfig, ClientEvent, ClientVc, ConnectionParams};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_rustls::TlsConnector;

use crate::connect::{
    TCP_KEEPALIVE_IDLE, connect, connect_addrs, connect_from, resolve, tune_socket,
};
use crate::framed::{PduReader, WriterTx, finish_writer, spawn_writer};
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
    /// IN request Content-Length (CONN/B1 ChannelLifetime); the client recycles its IN channel
    /// before it is used up.
    pub in_channel_lifetime: u32,
    /// Proxies that successor IN / OUT requests go to, in turn (default: the original one).
    pub in_recycle_proxies: Vec<ProxyUrl>,
    pub out_recycle_proxies: Vec<ProxyUrl>,
    /// Credentials for the proxy's HTTP authentication (none: anonymous).
    pub auth: Option<crate::client_auth::HttpAuth>,
    /// Connect to these addresses instead of resolving the proxy's host name (`ping
    /// --resolve`); the name is still used for TLS and the Host header.
    pub addresses: Option<Vec<std::net::SocketAddr>>,
    /// Connect from this local address (the kernel picks the port): `rpcgate bench` spreads
    /// many channels over several loopback source addresses.
    pub local_address: Option<std::net::IpAddr>,
    /// Test and diagnostic option: never send FlowControlAck for the OUT channel, the way
    /// Samba's client behaves (the outbound proxy must then treat our window as advisory).
    pub never_acknowledge: bool,
}

impl std::fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientOptions")
            .field("tls", &self.tls.is_some())
            .field("out_proxy", &self.out_proxy)
            .field("receive_window", &self.receive_window)
            .field("timeout", &self.timeout)
            .field("never_acknowledge", &self.never_acknowledge)
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
            in_channel_lifetime: IN_CHANNEL_LIFETIME,
            in_recycle_proxies: Vec::new(),
            out_recycle_proxies: Vec::new(),
            auth: None,
            addresses: None,
            local_address: None,
            never_acknowledge: false,
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
    /// `401`: no credentials, a scheme the proxy does not offer, or wrong credentials.
    #[error("the proxy answered HTTP 401 (offers: {})", .offered.join(", "))]
    Unauthorized { offered: Vec<String> },
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
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}
/// A connection to a proxy, plain or TLS.
pub type BoxedIo = Box<dyn Io>;

/// An open virtual connection carrying RPC PDUs.
#[derive(Debug)]
pub struct HttpTransport {
    to_vc: mpsc::Sender<Bytes>,
    from_vc: mpsc::Receiver<Bytes>,
    ended: Arc<Mutex<Option<String>>>,
    pub info: OpenInfo,
    /// Live counters (recycling, pings).
    pub stats: Arc<TransportStats>,
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

/// Connects to `proxy` (every address, or `options.addresses`) and does TLS for https.
pub async fn open_stream(
    proxy: &ProxyUrl,
    options: &ClientOptions,
) -> Result<BoxedIo, ClientError> {
    let connected = tokio::time::timeout(options.timeout, async {
        match (&options.addresses, options.local_address) {
            (Some(addrs), None) => {
                let addrs: Vec<_> = addrs
                    .iter()
                    .map(|a| std::net::SocketAddr::new(a.ip(), proxy.port))
                    .collect();
                connect_addrs(&proxy.host, proxy.port, &addrs, options.timeout).await
            }
            (None, None) => connect(&proxy.host, proxy.port, options.timeout).await,
            (addrs, Some(local)) => {
                let addrs = match addrs {
                    Some(addrs) => addrs
                        .iter()
                        .map(|a| std::net::SocketAddr::new(a.ip(), proxy.port))
                        .collect(),
                    None => resolve(&proxy.host, proxy.port).await?,
                };
                connect_from(local, &proxy.host, proxy.port, &addrs, options.timeout).await
            }
        }
    })
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

fn request_head(
    method: &str,
    proxy: &ProxyUrl,
    target: &str,
    content_length: u64,
    extra: &str,
) -> String {
    format!(
        "{method} {}?{target} HTTP/1.1\r\nHost: {}:{}\r\nAccept: application/rpc\r\n\
         User-Agent: MSRPC\r\nCache-Control: no-cache\r\nPragma: No-cache\r\n\
         Connection: Keep-Alive\r\n{extra}Content-Length: {content_length}\r\n\r\n",
        proxy.path, proxy.host, proxy.port
    )
}

/// The `Authorization` header line for a request on `stream` (empty when anonymous). NTLM
/// runs its NEGOTIATE / CHALLENGE exchange on `stream` first, with an empty request of the
/// same method and target.
pub async fn authorize(
    stream: &mut (impl AsyncRead + AsyncWrite + Unpin),
    method: &str,
    proxy: &ProxyUrl,
    target: &str,
    options: &ClientOptions,
) -> Result<String, ClientError> {
    use crate::client_auth::{HttpAuth, ntlm_authenticate_header, ntlm_challenge};
    let Some(auth) = &options.auth else {
        return Ok(String::new());
    };
    let HttpAuth::Ntlm { user, password } = auth else {
        return Ok(auth.basic_header().unwrap_or_default());
    };
    let first = crate::client_auth::ntlm_negotiate_header();
    stream
        .write_all(request_head(method, proxy, target, 0, &first).as_bytes())
        .await?;
    let head = read_head_and_body(stream, options.timeout).await?;
    if head.status != 401 {
        return Err(ClientError::HttpStatus {
            status: head.status,
            reason: head.reason,
        });
    }
    let values = www_authenticate(&head);
    let challenge = ntlm_challenge(values.iter().map(String::as_str)).ok_or_else(|| {
        ClientError::Unauthorized {
            offered: crate::client_auth::offered_schemes(values.iter().map(String::as_str)),
        }
    })?;
    ntlm_authenticate_header(user, password, &challenge).map_err(ClientError::Protocol)
}

/// Every `WWW-Authenticate` value of a response.
pub fn www_authenticate(head: &crate::http::ResponseHead) -> Vec<String> {
    head.headers
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case("www-authenticate"))
        .map(|(_, value)| value.clone())
        .collect()
}

/// Reads a response head and its (Content-Length) body, byte by byte so that nothing after
/// it is consumed.
pub async fn read_head_and_body(
    stream: &mut (impl AsyncRead + Unpin),
    timeout: Duration,
) -> Result<crate::http::ResponseHead, ClientError> {
    tokio::time::timeout(timeout, async {
        let mut buf = Vec::with_capacity(512);
        loop {
            if let Some((head, _)) = parse_response_head(&buf)
                .map_err(|e| ClientError::Protocol(format!("bad response: {e}")))?
            {
                let mut body = vec![0u8; head.content_length.unwrap_or(0).min(65_536) as usize];
                stream.read_exact(&mut body).await?;
                return Ok(head);
            }
            if stream.read_u8().await.map(|b| buf.push(b)).is_err() {
                return Err(ClientError::Protocol(
                    "the proxy closed the connection without a response".into(),
                ));
            }
        }
    })
    .await
    .map_err(|_| ClientError::Timeout {
        what: "the HTTP response",
        after: timeout,
    })?
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
        in_channel_lifetime: options.in_channel_lifetime,
        keepalive_ms: 300_000,
    };
    let (in_id, out_id) = (ChannelId(1), ChannelId(2));
    let mut vc = ClientVc::new(config, in_id, out_id);
    vc.set_never_acknowledge(options.never_acknowledge);
    let now = Instant::now();

    let in_auth = authorize(&mut in_stream, "RPC_IN_DATA", proxy, target, options).await?;
    let out_auth = authorize(&mut out_stream, "RPC_OUT_DATA", out_proxy, target, options).await?;
    let mut in_request = request_head(
        "RPC_IN_DATA",
        proxy,
        target,
        u64::from(options.in_channel_lifetime),
        &in_auth,
    )
    .into_bytes();
    while let Some(pdu) = vc.poll_transmit(in_id, now) {
        in_request.extend_from_slice(&pdu);
    }
    let mut out_request = request_head(
        "RPC_OUT_DATA",
        out_proxy,
        target,
        OUT_REQUEST_LENGTH,
        &out_auth,
    )
    .into_bytes();
    while let Some(pdu) = vc.poll_transmit(out_id, now) {
        out_request.extend_from_slice(&pdu);
    }
    out_stream.write_all(&out_request).await?;
    in_stream.write_all(&in_request).await?;

    let (out_reader, response_after) = read_out_head(out_stream, options.timeout).await?;
    let response_after = response_after.min(started.elapsed());
    let mut out_reader = out_reader;
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
    let stats = Arc::new(TransportStats::default());
    let (in_r, in_w) = tokio::io::split(in_stream);
    drop(in_r);
    let mut in_writers = HashMap::new();
    in_writers.insert(in_id, spawn_writer(in_w));
    let driver = Driver {
        vc,
        target: target.to_string(),
        in_proxies: successor_proxies(proxy, options, true),
        out_proxies: successor_proxies(out_proxy, options, false),
        next_proxy: (0, 0),
        options: options.clone(),
        in_writers,
        out_writers: HashMap::new(),
        out_pending: HashMap::new(),
        out_reader,
        next_channel: 3,
        stats: stats.clone(),
    };
    tokio::spawn(driver.run(to_vc, from_vc, ended.clone()));
    Ok(HttpTransport {
        to_vc: app_tx,
        from_vc: app_rx,
        ended,
        info,
        stats,
    })
}

/// Proxies that successor channels go to, in turn.
fn successor_proxies(first: &ProxyUrl, options: &ClientOptions, is_in: bool) -> Vec<ProxyUrl> {
    let list = if is_in {
        &options.in_recycle_proxies
    } else {
        &options.out_recycle_proxies
    };
    if list.is_empty() {
        vec![first.clone()]
    } else {
        list.clone()
    }
}

/// Reads an OUT response head: `200 Success`, or `503 RPC Error: <hex>` turned into an error.
async fn read_out_head(
    mut stream: BoxedIo,
    timeout: Duration,
) -> Result<(PduReader<BoxedIo>, Duration), ClientError> {
    let started = Instant::now();
    let mut buf = BytesMut::with_capacity(4096);
    let head = tokio::time::timeout(timeout, async {
        loop {
            match parse_response_head(&buf) {
                Ok(Some((head, used))) => {
                    let _ = buf.split_to(used);
                    return Ok(head);
                }
                Ok(None) => {}
                Err(e) => return Err(ClientError::Protocol(format!("bad OUT response: {e}"))),
            }
            if stream.read_buf(&mut buf).await? == 0 {
                return Err(ClientError::Protocol(
                    "the proxy closed the OUT channel without a response".into(),
                ));
            }
        }
    })
    .await
    .map_err(|_| ClientError::Timeout {
        what: "the OUT channel response",
        after: timeout,
    })??;
    if head.status == 401 {
        let values = www_authenticate(&head);
        return Err(ClientError::Unauthorized {
            offered: crate::client_auth::offered_schemes(values.iter().map(String::as_str)),
        });
    }
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
    Ok((PduReader::new(stream, buf), started.elapsed()))
}

/// Counters of one virtual connection, readable while it runs.
#[derive(Debug, Default)]
pub struct TransportStats {
    pub in_recycles: std::sync::atomic::AtomicU64,
    pub out_recycles: std::sync::atomic::AtomicU64,
    pub pings_received: std::sync::atomic::AtomicU64,
}

type Writer = (WriterTx, crate::framed::WriterTask);

/// The task that runs an open virtual connection.
struct Driver {
    vc: ClientVc,
    target: String,
    in_proxies: Vec<ProxyUrl>,
    out_proxies: Vec<ProxyUrl>,
    next_proxy: (usize, usize),
    options: ClientOptions,
    in_writers: HashMap<ChannelId, Writer>,
    out_writers: HashMap<ChannelId, Writer>,
    /// Successor OUT requests whose response is not read yet.
    out_pending: HashMap<ChannelId, tokio::io::ReadHalf<BoxedIo>>,
    out_reader: PduReader<BoxedIo>,
    next_channel: u64,
    stats: Arc<TransportStats>,
}

impl Driver {
    fn fresh_channel(&mut self) -> ChannelId {
        self.next_channel += 1;
        ChannelId(self.next_channel)
    }

    /// Hands ready bytes to every request's writer without waiting.
    fn flush(&mut self) -> Result<bool, String> {
        let now = Instant::now();
        let mut moved = false;
        for writers in [&self.in_writers, &self.out_writers] {
            for (id, (tx, _)) in writers {
                while self.vc.has_transmit(*id) {
                    match tx.try_reserve() {
                        Ok(permit) => {
                            if let Some(pdu) = self.vc.poll_transmit(*id, now) {
                                crate::framed::log_rts("client sent", &pdu);
                                permit.send(pdu);
                                moved = true;
                            }
                        }
                        Err(mpsc::error::TrySendError::Full(())) => break,
                        Err(mpsc::error::TrySendError::Closed(())) => {
                            return Err("writing a request body failed".into());
                        }
                    }
                }
            }
        }
        Ok(moved)
    }

    async fn handle_event(&mut self, event: ClientEvent) -> Result<(), String> {
        match event {
            ClientEvent::OpenInSuccessor => {
                let proxy = pick(&self.in_proxies, self.next_proxy.0)?;
                self.next_proxy.0 += 1;
                let mut stream = open_stream(&proxy, &self.options)
                    .await
                    .map_err(|e| format!("opening a successor IN channel: {e}"))?;
                let auth = authorize(
                    &mut stream,
                    "RPC_IN_DATA",
                    &proxy,
                    &self.target,
                    &self.options,
                )
                .await
                .map_err(|e| format!("successor IN channel: {e}"))?;
                let head = request_head(
                    "RPC_IN_DATA",
                    &proxy,
                    &self.target,
                    u64::from(self.options.in_channel_lifetime),
                    &auth,
                );
                stream
                    .write_all(head.as_bytes())
                    .await
                    .map_err(|e| format!("successor IN channel: {e}"))?;
                let id = self.fresh_channel();
                let (r, w) = tokio::io::split(stream);
                drop(r);
                self.in_writers.insert(id, spawn_writer(w));
                self.vc.in_successor_opened(id);
            }
            ClientEvent::OpenOutSuccessor => {
                let proxy = pick(&self.out_proxies, self.next_proxy.1)?;
                self.next_proxy.1 += 1;
                let mut stream = open_stream(&proxy, &self.options)
                    .await
                    .map_err(|e| format!("opening a successor OUT channel: {e}"))?;
                let auth = authorize(
                    &mut stream,
                    "RPC_OUT_DATA",
                    &proxy,
                    &self.target,
                    &self.options,
                )
                .await
                .map_err(|e| format!("successor OUT channel: {e}"))?;
                let head = request_head("RPC_OUT_DATA", &proxy, &self.target, 120, &auth);
                stream
                    .write_all(head.as_bytes())
                    .await
                    .map_err(|e| format!("successor OUT channel: {e}"))?;
                let id = self.fresh_channel();
                let (r, w) = tokio::io::split(stream);
                self.out_writers.insert(id, spawn_writer(w));
                self.out_pending.insert(id, r);
                self.vc.out_successor_opened(id);
            }
            ClientEvent::SwitchOut { from, to } => {
                // The successor's body (A11 in R1) must be on its way before its response.
                let _ = self.flush()?;
                let read = self
                    .out_pending
                    .remove(&to)
                    .ok_or_else(|| "switching to an unknown OUT channel".to_string())?;
                let write = self.out_writers.remove(&to);
                let stream: BoxedIo = Box::new(Rejoined { read, write: None });
                let (reader, _) = read_out_head(stream, self.options.timeout)
                    .await
                    .map_err(|e| format!("successor OUT channel: {e}"))?;
                self.out_reader = reader;
                if let Some((tx, task)) = self.out_writers.remove(&from) {
                    drop(tx);
                    tokio::spawn(finish_writer(task));
                }
                // The successor's request body is complete; keep its writer until done.
                if let Some(writer) = write {
                    self.out_writers.insert(to, writer);
                }
                self.stats
                    .out_recycles
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            ClientEvent::CloseIn(id) => {
                if let Some((tx, task)) = self.in_writers.remove(&id) {
                    drop(tx);
                    tokio::spawn(finish_writer(task));
                }
                self.stats
                    .in_recycles
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Runs until the application or the network ends the virtual connection.
    async fn run(
        mut self,
        mut to_vc: mpsc::Receiver<Bytes>,
        from_vc: mpsc::Sender<Bytes>,
        ended: Arc<Mutex<Option<String>>>,
    ) {
        let mut app_open = true;
        let outcome: String = loop {
            let now = Instant::now();
            self.vc.handle_timeout(now);
            // Writing can raise events (recycling starts when a request nears its end),
            // events can make bytes ready, and handing PDUs to the application makes acks
            // ready: repeat until none of them has anything left.
            let mut failed = None;
            loop {
                let mut progressed = false;
                while let Some(event) = self.vc.poll_event() {
                    progressed = true;
                    if let Err(e) = self.handle_event(event).await {
                        failed = Some(e);
                        break;
                    }
                }
                if failed.is_some() {
                    break;
                }
                while self.vc.has_received() {
                    match from_vc.try_reserve() {
                        Ok(permit) => {
                            if let Some(pdu) = self.vc.poll_received() {
                                permit.send(pdu);
                                progressed = true;
                            }
                        }
                        Err(_) => break,
                    }
                }
                match self.flush() {
                    Ok(moved) => progressed |= moved,
                    Err(why) => {
                        failed = Some(why);
                        break;
                    }
                }
                if !progressed {
                    break;
                }
            }
            if let Some(why) = failed {
                break why;
            }
            let (in_id, _) = self.vc.channels();
            if !app_open && self.vc.queued_bytes() == 0 && !self.vc.has_transmit(in_id) {
                break "closed by the application".into();
            }
            self.stats.pings_received.store(
                self.vc.pings_received(),
                std::sync::atomic::Ordering::Relaxed,
            );
            let ping_at = self.vc.poll_timeout().map(tokio::time::Instant::from_std);
            // A request writer that is full while the machine has more for it.
            let blocked = self
                .in_writers
                .iter()
                .chain(self.out_writers.iter())
                .find(|(id, (tx, _))| self.vc.has_transmit(**id) && tx.capacity() == 0)
                .map(|(id, (tx, _))| (*id, tx.clone()));
            tokio::select! {
                pdu = to_vc.recv(), if app_open && self.vc.queued_bytes() < 256 * 1024 => match pdu {
                    Some(pdu) => self.vc.send(pdu),
                    None => app_open = false,
                },
                read = self.out_reader.next(), if self.vc.wants_out_data() => match read {
                    Ok(Some(pdu)) => {
                        crate::framed::log_rts("client got", &pdu);
                        if let Err(e) = self.vc.handle_out_pdu(pdu) { break e.to_string() }
                    }
                    Ok(None) => break "the proxy closed the OUT channel".into(),
                    Err(e) => break format!("OUT channel: {e}"),
                },
                permit = async {
                    match &blocked {
                        Some((_, tx)) => tx.reserve().await,
                        None => std::future::pending().await,
                    }
                }, if blocked.is_some() => {
                    let Some((id, _)) = blocked else { continue };
                    match permit {
                        Ok(permit) => if let Some(pdu) = self.vc.poll_transmit(id, Instant::now()) { permit.send(pdu) },
                        Err(_) => break "writing a request body failed".into(),
                    }
                },
                permit = from_vc.reserve(), if self.vc.has_received() => match permit {
                    Ok(permit) => if let Some(pdu) = self.vc.poll_received() { permit.send(pdu) },
                    Err(_) => break "closed by the application".into(),
                },
                () = async {
                    match ping_at {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                }, if ping_at.is_some() => {}
            }
        };
        if let Ok(mut slot) = ended.lock() {
            *slot = Some(outcome);
        }
        drop(from_vc);
        for (_, (tx, task)) in self.in_writers.into_iter().chain(self.out_writers) {
            drop(tx);
            finish_writer(task).await;
        }
    }
}

/// The `n`th proxy of a round-robin list.
fn pick(proxies: &[ProxyUrl], n: usize) -> Result<ProxyUrl, String> {
    proxies
        .get(n % proxies.len().max(1))
        .cloned()
        .ok_or_else(|| "no proxy to open a successor channel on".to_string())
}

/// The read half of a split stream, usable where a whole stream is expected (for reading).
struct Rejoined {
    read: tokio::io::ReadHalf<BoxedIo>,
    write: Option<()>,
}

impl AsyncRead for Rejoined {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.read).poll_read(cx, buf)
    }
}

impl AsyncWrite for Rejoined {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        _buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let _ = self.write;
        std::task::Poll::Ready(Err(std::io::ErrorKind::Unsupported.into()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
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
