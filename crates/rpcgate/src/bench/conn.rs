//! One benchmark connection: where it goes ([`Target`]), opening it bound to rpcecho
//! ([`Target::open`]), and calls on it, one at a time ([`Conn::call_once`]) or several in
//! flight ([`Conn::drive`]).
//!
//! ```text
//!  sender task                       receiver (the caller's task)
//!    wait for a credit (closed) or    <- response fragments -> reassembled by call_id
//!    the schedule (open)                 check the data, record latency, give a credit back
//!    note (call_id, sent at) ------>  pending calls
//!    request fragments ->
//! ```
//!
//! [`crate::rpc_client::RpcClient`] makes one call at a time; several outstanding calls with
//! distinct call_ids on one association are what DCE/RPC clients pipeline, so the bench sends
//! them itself once the RpcClient has bound the interface. Calls are not multiplexed
//! (PFC_CONC_MPX is not negotiated): each request's fragments go out back to back, and the
//! server answers in order, each response's fragments together.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use hdrhistogram::Histogram;
use rpch_proto::dcerpc::{Reassembler, fragment_request};
use rpch_proto::pdu::rpc::{Pdu, Response, status};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{Semaphore, mpsc};

use super::report::Counters;
use crate::demo::echo;
use crate::framed::PduReader;
use crate::rpc_client::{PduTransport, RpcClient};
use crate::rpch_client::{ClientOptions, HttpTransport, PduSender, ProxyUrl};

/// The rpcecho call a run makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallKind {
    /// EchoData: `size` bytes to the server and back.
    Echo,
    /// SinkData: `size` bytes to the server.
    Sink,
    /// SourceData: `size` bytes from the server.
    Source,
}

impl CallKind {
    pub fn name(self) -> &'static str {
        match self {
            CallKind::Echo => "EchoData",
            CallKind::Sink => "SinkData",
            CallKind::Source => "SourceData",
        }
    }
}

/// A call, encoded once and sent many times.
#[derive(Debug)]
pub struct Call {
    pub kind: CallKind,
    opnum: u16,
    stub: Vec<u8>,
    /// The data EchoData must return (and SourceData's pattern).
    data: Vec<u8>,
    /// Call data moved per call, both directions (what MB/s counts).
    pub bytes: u64,
}

impl Call {
    pub fn new(kind: CallKind, size: usize) -> Self {
        let len = u32::try_from(size).unwrap_or(u32::MAX);
        let data = echo::source_pattern(size);
        let (opnum, stub, bytes) = match kind {
            CallKind::Echo => (echo::opnum::ECHO_DATA, echo::encode_data(&data), 2 * size),
            CallKind::Sink => (echo::opnum::SINK_DATA, echo::encode_data(&data), size),
            CallKind::Source => (
                echo::opnum::SOURCE_DATA,
                echo::encode_source_data(len),
                size,
            ),
        };
        Self {
            kind,
            opnum,
            stub,
            data,
            bytes: bytes as u64,
        }
    }

    /// Largest response stub expected, with room for NDR's length prefix.
    fn max_response(&self) -> usize {
        self.data.len() + 64
    }

    /// Whether `stub` is the right answer.
    fn check(&self, stub: &[u8]) -> Result<(), String> {
        let ok = match self.kind {
            CallKind::Sink => stub.is_empty(),
            CallKind::Echo | CallKind::Source => {
                let len = u32::try_from(self.data.len()).unwrap_or(u32::MAX);
                stub.get(..4) == Some(&len.to_le_bytes()[..])
                    && stub.get(4..) == Some(&self.data[..])
            }
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "{} answered a {}-byte stub that is not the expected data",
                self.kind.name(),
                stub.len()
            ))
        }
    }
}

/// Where the connections go.
#[derive(Debug, Clone)]
pub enum Target {
    /// ncacn_ip_tcp to these addresses (resolved once, tried in order).
    Direct {
        name: String,
        port: u16,
        addrs: Vec<SocketAddr>,
    },
    /// Virtual connections through an RPC over HTTP proxy to `endpoint` (server:port).
    Http {
        proxy: ProxyUrl,
        endpoint: String,
        options: Box<ClientOptions>,
    },
}

impl Target {
    /// `--direct HOST:PORT`, resolved now.
    pub async fn direct(text: &str) -> Result<Self, String> {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("--direct {text}: expected HOST:PORT"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("--direct {text}: bad port {port:?}"))?;
        let addrs = crate::connect::resolve(host, port)
            .await
            .map_err(|e| format!("--direct {text}: {e}"))?;
        Ok(Target::Direct {
            name: host.to_string(),
            port,
            addrs,
        })
    }

    /// `direct`, `http` or `https`.
    pub fn transport(&self) -> &'static str {
        match self {
            Target::Direct { .. } => "direct",
            Target::Http { proxy, .. } if proxy.tls => "https",
            Target::Http { .. } => "http",
        }
    }

    /// For people: `ncacn_ip_tcp 127.0.0.1:6100` or `http://.../rpcproxy.dll -> server:port`.
    pub fn describe(&self) -> String {
        match self {
            Target::Direct { name, port, .. } => format!("ncacn_ip_tcp {name}:{port}"),
            Target::Http {
                proxy, endpoint, ..
            } => format!("{proxy} -> {endpoint}"),
        }
    }

    /// TCP connections one bench connection holds: one, or an IN and an OUT channel.
    pub fn sockets_per_connection(&self) -> usize {
        match self {
            Target::Direct { .. } => 1,
            Target::Http { .. } => 2,
        }
    }

    /// The port the client connects to (the gateway's, or the relay's, or the server's).
    pub fn port(&self) -> u16 {
        match self {
            Target::Direct { port, .. } => *port,
            Target::Http { proxy, .. } => proxy.port,
        }
    }

    /// The address connected to, if it is an IP literal or resolves locally; for deciding on
    /// loopback source addresses.
    pub async fn destination_ip(&self) -> Option<IpAddr> {
        match self {
            Target::Direct { addrs, .. } => addrs.first().map(SocketAddr::ip),
            Target::Http { proxy, .. } => crate::connect::resolve(&proxy.host, proxy.port)
                .await
                .ok()
                .and_then(|a| a.first().map(SocketAddr::ip)),
        }
    }

    /// Opens one connection from `local` (if given) and binds rpcecho on it.
    pub async fn open(&self, local: Option<IpAddr>, timeout: Duration) -> Result<Conn, String> {
        match self {
            Target::Direct { name, port, addrs } => {
                let connected = match local {
                    Some(local) => {
                        crate::connect::connect_from(local, name, *port, addrs, timeout).await
                    }
                    None => crate::connect::connect_addrs(name, *port, addrs, timeout).await,
                }
                .map_err(|e| e.to_string())?;
                let (reader, writer) = connected.stream.into_split();
                let transport = TcpPdus {
                    reader: PduReader::new(reader, BytesMut::new()),
                    writer,
                };
                let (transport, bound) = bind(transport, timeout).await?;
                Ok(Conn {
                    tx: Tx::Tcp(transport.writer),
                    rx: Rx::Tcp(transport.reader),
                    requests: Requests::new(bound),
                })
            }
            Target::Http {
                proxy,
                endpoint,
                options,
            } => {
                let options = ClientOptions {
                    local_address: local,
                    timeout,
                    ..ClientOptions::clone(options)
                };
                let transport = crate::rpch_client::open(proxy, endpoint, &options)
                    .await
                    .map_err(|e| e.to_string())?;
                let (transport, bound) = bind(transport, timeout).await?;
                Ok(Conn {
                    tx: Tx::Http(transport.sender()),
                    rx: Rx::Http(Box::new(transport)),
                    requests: Requests::new(bound),
                })
            }
        }
    }
}

/// What the bind negotiated, as the calls need it.
#[derive(Debug, Clone, Copy)]
struct Bound {
    context_id: u16,
    max_xmit_frag: u16,
    max_recv_frag: u16,
}

async fn bind<T: PduTransport>(transport: T, timeout: Duration) -> Result<(T, Bound), String> {
    let mut client = RpcClient::new(transport).with_timeout(timeout);
    let info = client
        .bind(echo::INTERFACE)
        .await
        .map_err(|e| format!("binding rpcecho: {e}"))?;
    let bound = Bound {
        context_id: info.context_id,
        max_xmit_frag: info.max_xmit_frag,
        max_recv_frag: info.max_recv_frag,
    };
    Ok((client.into_transport(), bound))
}

/// ncacn_ip_tcp with the two directions apart, so that one task sends while another reads.
#[derive(Debug)]
struct TcpPdus {
    reader: PduReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
}

impl PduTransport for TcpPdus {
    async fn send(&mut self, pdu: Bytes) -> std::io::Result<()> {
        self.writer.write_all(&pdu).await
    }

    async fn recv(&mut self) -> std::io::Result<Bytes> {
        read_pdu(&mut self.reader).await
    }
}

async fn read_pdu(reader: &mut PduReader<OwnedReadHalf>) -> std::io::Result<Bytes> {
    match reader.next().await {
        Ok(Some(pdu)) => Ok(pdu),
        Ok(None) => Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        )),
        Err(e) => Err(std::io::Error::other(e.to_string())),
    }
}

/// The sending side of a connection.
#[derive(Debug)]
enum Tx {
    Tcp(OwnedWriteHalf),
    Http(PduSender),
}

impl Tx {
    /// Sends one call's request fragments, back to back (one write on TCP).
    async fn send_call(&mut self, fragments: Vec<Bytes>) -> std::io::Result<()> {
        match self {
            Tx::Tcp(writer) => {
                if let [one] = fragments.as_slice() {
                    return writer.write_all(one).await;
                }
                let mut all = BytesMut::with_capacity(fragments.iter().map(Bytes::len).sum());
                for fragment in &fragments {
                    all.extend_from_slice(fragment);
                }
                writer.write_all(&all).await
            }
            Tx::Http(sender) => {
                for fragment in fragments {
                    sender.send(fragment).await?;
                }
                Ok(())
            }
        }
    }
}

/// The receiving side of a connection.
#[derive(Debug)]
enum Rx {
    Tcp(PduReader<OwnedReadHalf>),
    Http(Box<HttpTransport>),
}

impl Rx {
    async fn recv(&mut self) -> std::io::Result<Bytes> {
        match self {
            Rx::Tcp(reader) => read_pdu(reader).await,
            Rx::Http(transport) => transport.recv().await,
        }
    }
}

/// Collects response fragments into whole answers.
struct Answers {
    reassembler: Reassembler<Response>,
    max_recv_frag: u16,
}

impl Answers {
    fn new(call: &Call, bound: Bound) -> Self {
        Self {
            reassembler: Reassembler::new(call.max_response()),
            max_recv_frag: bound.max_recv_frag,
        }
    }

    /// Adds one PDU; a whole answer comes back as `(call_id, stub)`.
    fn push(&mut self, pdu: &[u8]) -> Result<Option<(u32, Vec<u8>)>, String> {
        if pdu.len() > usize::from(self.max_recv_frag) {
            return Err(format!(
                "{}-byte fragment exceeds the negotiated {}",
                pdu.len(),
                self.max_recv_frag
            ));
        }
        match Pdu::decode(pdu).map_err(|e| format!("malformed PDU: {e}"))? {
            Pdu::Response(response) => Ok(self
                .reassembler
                .push(response)
                .map_err(|e| format!("bad response fragments: {e}"))?
                .map(|done| (done.call_id, done.stub))),
            Pdu::Fault(fault) => Err(format!(
                "server fault {:#010x} ({}) for call {}",
                fault.status,
                status::name(fault.status).unwrap_or("unknown status"),
                fault.call_id
            )),
            other => Err(format!("unexpected PDU for call {}", other.call_id())),
        }
    }
}

/// How a connection paces its calls in [`Conn::drive`].
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Always `outstanding` calls in flight.
    Closed { outstanding: usize },
    /// A call every `interval` from `first`, whatever is in flight (up to `outstanding`).
    Open {
        first: Instant,
        interval: Duration,
        outstanding: usize,
    },
}

/// When calls count: calls sent in `[from, until)` give latencies, calls answered in
/// `[from, until]` count toward throughput; no call is sent after `until`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub from: Instant,
    pub until: Instant,
}

/// Histograms shared by every connection of a run (nanoseconds).
#[derive(Debug)]
pub struct Recorder {
    pub latency: std::sync::Mutex<Histogram<u64>>,
    /// Open loop: how late each call left against its schedule.
    pub lag: std::sync::Mutex<Histogram<u64>>,
    pub counters: Arc<Counters>,
}

/// Bounds of every histogram: 1 ns to an hour, three significant digits.
#[allow(clippy::expect_used)]
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000_000, 3)
        .expect("constant bounds with three significant digits are valid")
}

/// Records `value` saturating at the histogram's bounds.
pub fn record(histogram: &std::sync::Mutex<Histogram<u64>>, value: Duration) {
    let nanos = u64::try_from(value.as_nanos()).unwrap_or(u64::MAX).max(1);
    if let Ok(mut h) = histogram.lock() {
        h.saturating_record(nanos);
    }
}

/// Numbers calls and cuts their requests into fragments.
#[derive(Debug)]
struct Requests {
    bound: Bound,
    next_call_id: u32,
}

impl Requests {
    fn new(bound: Bound) -> Self {
        // Call 1 was the bind.
        Self {
            bound,
            next_call_id: 2,
        }
    }

    fn next(&mut self, call: &Call) -> (u32, Vec<Bytes>) {
        let call_id = self.next_call_id;
        self.next_call_id = self.next_call_id.wrapping_add(1).max(1);
        let fragments = fragment_request(
            call_id,
            self.bound.context_id,
            call.opnum,
            &call.stub,
            self.bound.max_xmit_frag,
        );
        (call_id, fragments)
    }
}

/// An open connection bound to rpcecho.
#[derive(Debug)]
pub struct Conn {
    tx: Tx,
    rx: Rx,
    requests: Requests,
}

impl Conn {
    /// Keep-alive pings the proxy sent on this virtual connection (0 for ncacn_ip_tcp).
    pub fn pings_received(&self) -> u64 {
        match &self.rx {
            Rx::Http(transport) => transport.stats.pings_received.load(Ordering::Relaxed),
            Rx::Tcp(_) => 0,
        }
    }

    /// One call, waiting for its answer.
    pub async fn call_once(&mut self, call: &Call, timeout: Duration) -> Result<(), String> {
        let (call_id, fragments) = self.requests.next(call);
        let mut answers = Answers::new(call, self.requests.bound);
        tokio::time::timeout(timeout, async {
            self.tx
                .send_call(fragments)
                .await
                .map_err(|e| e.to_string())?;
            loop {
                let pdu = self.rx.recv().await.map_err(|e| e.to_string())?;
                if let Some((id, stub)) = answers.push(&pdu)? {
                    if id != call_id {
                        return Err(format!("answer for call {id} instead of {call_id}"));
                    }
                    return call.check(&stub);
                }
            }
        })
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
    }

    /// Makes calls paced by `pace` until `window.until`, then waits for the answers still due.
    /// Returns the first error, which ends the connection.
    pub async fn drive(
        self,
        call: Arc<Call>,
        pace: Pace,
        window: Window,
        recorder: Arc<Recorder>,
        timeout: Duration,
    ) -> Result<(), String> {
        let Conn {
            mut tx,
            mut rx,
            mut requests,
        } = self;
        let bound = requests.bound;
        let outstanding = match pace {
            Pace::Closed { outstanding } | Pace::Open { outstanding, .. } => outstanding.max(1),
        };
        let credits = Arc::new(Semaphore::new(outstanding));
        let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<(u32, Instant)>();
        let sender = {
            let call = call.clone();
            let credits = credits.clone();
            let recorder = recorder.clone();
            tokio::spawn(async move {
                let mut scheduled = match pace {
                    Pace::Open { first, .. } => Some(first),
                    Pace::Closed { .. } => None,
                };
                loop {
                    if let Some(at) = scheduled {
                        tokio::time::sleep_until(at.into()).await;
                    }
                    let Ok(permit) = credits.acquire().await else {
                        break;
                    };
                    permit.forget();
                    if let (Some(at), Pace::Open { interval, .. }) = (scheduled, pace) {
                        if at >= window.from {
                            record(&recorder.lag, at.elapsed());
                        }
                        scheduled = Some(at + interval);
                    }
                    if Instant::now() >= window.until {
                        break;
                    }
                    let (call_id, fragments) = requests.next(&call);
                    if sent_tx.send((call_id, Instant::now())).is_err() {
                        break;
                    }
                    tx.send_call(fragments).await.map_err(|e| e.to_string())?;
                }
                // No more calls; the sending side stays open until every answer is in (a
                // half-close, or a virtual connection closed by the application, could
                // overtake them).
                drop(sent_tx);
                Ok(tx)
            })
        };

        let mut answers = Answers::new(&call, bound);
        let mut pending: HashMap<u32, Instant> = HashMap::new();
        let mut sending = true;
        let counters = &recorder.counters;
        let result = loop {
            if !sending && pending.is_empty() {
                break Ok(());
            }
            let stalled = tokio::time::sleep(timeout);
            tokio::select! {
                noted = sent_rx.recv(), if sending => match noted {
                    Some((id, at)) => { pending.insert(id, at); }
                    None => sending = false,
                },
                pdu = rx.recv() => {
                    let pdu = match pdu {
                        Ok(pdu) => pdu,
                        Err(e) => break Err(e.to_string()),
                    };
                    let (id, stub) = match answers.push(&pdu) {
                        Ok(Some(done)) => done,
                        Ok(None) => continue,
                        Err(e) => break Err(e),
                    };
                    let now = Instant::now();
                    while let Ok((id, at)) = sent_rx.try_recv() {
                        pending.insert(id, at);
                    }
                    let Some(sent) = pending.remove(&id) else {
                        break Err(format!("answer for call {id}, which is not in flight"));
                    };
                    if let Err(e) = call.check(&stub) {
                        break Err(e);
                    }
                    credits.add_permits(1);
                    if sent >= window.from && sent < window.until {
                        record(&recorder.latency, now - sent);
                    }
                    if now >= window.from && now <= window.until {
                        counters.calls.fetch_add(1, Ordering::Relaxed);
                        counters.bytes.fetch_add(call.bytes, Ordering::Relaxed);
                    }
                },
                () = stalled, if !pending.is_empty() => {
                    break Err(format!("no answer within {timeout:?} ({} calls in flight)", pending.len()));
                }
            }
        };
        credits.close();
        if result.is_err() {
            // The sender may be blocked on a connection nobody reads any more.
            sender.abort();
            return result;
        }
        sender
            .await
            .unwrap_or_else(|e| Err(format!("sender task: {e}")))
            .map(drop)
    }
}
