//! The endpoint: rpcgate's server role of MS-RPCH, in front of a plain ncacn_ip_tcp backend.
//!
//! Each listener accepts proxy legs, greets them with `ncacn_http/1.0` (Windows proxies insist
//! on it), reads the first PDU and either pairs the leg into a virtual connection
//! ([`pairing`], [`bridge`]) or, when the first PDU is not RTS, treats the connection as RPC
//! over HTTP v1 and relays it to the backend as is ([`v1`]). Works behind any MS-RPCH proxy,
//! Windows' included, because it speaks only the wire protocol.

pub mod bridge;
pub mod pairing;
pub mod v1;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use rpch_proto::server::{FirstPdu, LEGACY_GREETING, Leg, classify_first_pdu};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::connect::TCP_KEEPALIVE_IDLE;
use crate::framed::PduReader;
use crate::ids::next_conn_id;
use crate::leg_stream::{LOCAL_PIPE_BUFFER, LegStream};
use crate::tasks::TaskScope;
use pairing::{Arrival, LegConn, PairingTable};

/// Where an endpoint forwards RPC traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Settings of one endpoint.
#[derive(Debug, Clone)]
pub struct EndpointSettings {
    pub backend: Backend,
    /// Our receive window for the IN legs (CONN/B3).
    pub receive_window: u32,
    /// How long the first leg of a virtual connection waits for the second.
    pub setup_timeout: Duration,
    /// How long a new leg may take to send its first PDU.
    pub first_pdu_timeout: Duration,
    /// Per-address timeout when connecting to the backend.
    pub connect_timeout: Duration,
}

/// Counters an endpoint keeps (status page, metrics, tests).
#[derive(Debug, Default)]
pub struct EndpointStats {
    pub legs_accepted: AtomicU64,
    pub legs_rejected: AtomicU64,
    pub vcs_opened: AtomicU64,
    pub vcs_active: AtomicU64,
    pub vcs_setup_timeouts: AtomicU64,
    pub v1_connections: AtomicU64,
    pub backend_failures: AtomicU64,
}

/// One endpoint: settings, pairing table and counters, shared by its listeners' tasks.
#[derive(Debug)]
pub struct Endpoint {
    pub settings: EndpointSettings,
    pub table: PairingTable,
    pub stats: EndpointStats,
    /// Every task of this endpoint: listeners, legs, virtual connections and their writers.
    pub tasks: TaskScope,
    /// Virtual connections bridged now, for the status page.
    pub live: Arc<crate::status::live::LiveTable>,
}

impl Endpoint {
    pub fn new(settings: EndpointSettings) -> Arc<Self> {
        Arc::new(Self {
            settings,
            table: PairingTable::default(),
            stats: EndpointStats::default(),
            tasks: TaskScope::new(),
            live: Arc::default(),
        })
    }

    /// A leg from a proxy of this process, over an in-memory pipe instead of TCP
    /// ([`crate::leg_stream`]): served exactly like one accepted on `address`, the
    /// listening address the proxy resolved its target to. Returns the proxy's end.
    pub fn accept_local(self: &Arc<Self>, address: SocketAddr) -> LegStream {
        let (proxy_end, endpoint_end) = tokio::io::duplex(LOCAL_PIPE_BUFFER);
        let conn_id = next_conn_id();
        self.stats.legs_accepted.fetch_add(1, Ordering::Relaxed);
        let span = info_span!("leg", conn = conn_id, peer = "in-process");
        let stream = LegStream::Local {
            pipe: endpoint_end,
            endpoint: address,
        };
        self.tasks
            .spawn(handle_leg(self.clone(), stream, address, conn_id).instrument(span));
        LegStream::Local {
            pipe: proxy_end,
            endpoint: address,
        }
    }

    /// Stops the endpoint: its listeners stop accepting and every leg and backend connection
    /// is closed at once. Returns when the last task has ended, or after
    /// [`crate::proxy::SHUTDOWN_WAIT`] with `false`.
    pub async fn shutdown(&self) -> bool {
        self.tasks.shutdown(crate::proxy::SHUTDOWN_WAIT).await
    }
}

/// Accepts legs on `listener` until the endpoint shuts down ([`Endpoint::shutdown`]); counted
/// as one of the endpoint's tasks from this call on, so that a shutdown right after it still
/// waits for the port to close.
pub fn serve(
    listener: TcpListener,
    endpoint: Arc<Endpoint>,
) -> impl Future<Output = ()> + Send + 'static {
    let counted = endpoint.tasks.enter();
    async move {
        let _counted = counted;
        accept_loop(listener, endpoint).await;
    }
}

async fn accept_loop(listener: TcpListener, endpoint: Arc<Endpoint>) {
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    loop {
        let accepted = tokio::select! {
            () = endpoint.tasks.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(listener = %local, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let conn_id = next_conn_id();
        endpoint.stats.legs_accepted.fetch_add(1, Ordering::Relaxed);
        let span = info_span!("leg", conn = conn_id, peer = %peer);
        endpoint.tasks.spawn(
            handle_leg(endpoint.clone(), LegStream::Tcp(stream), peer, conn_id).instrument(span),
        );
    }
}

async fn handle_leg(
    endpoint: Arc<Endpoint>,
    mut stream: LegStream,
    peer: SocketAddr,
    conn_id: u64,
) {
    stream.tune(TCP_KEEPALIVE_IDLE);
    // The legacy response, in one write and before anything else (impacket's direct
    // ncacn_http mode compares one recv() with it).
    if let Err(e) = stream.write_all(LEGACY_GREETING).await {
        debug!("leg closed before the greeting: {e}");
        return;
    }
    let mut reader = PduReader::new(stream, BytesMut::new());
    let first = match tokio::time::timeout(endpoint.settings.first_pdu_timeout, reader.next()).await
    {
        Ok(Ok(Some(pdu))) => pdu,
        Ok(Ok(None)) => {
            debug!("leg closed before its first PDU");
            return;
        }
        Ok(Err(e)) => {
            reject(&endpoint, format_args!("unreadable first PDU: {e}"));
            return;
        }
        Err(_) => {
            reject(
                &endpoint,
                format_args!(
                    "no first PDU within {} s",
                    endpoint.settings.first_pdu_timeout.as_secs()
                ),
            );
            return;
        }
    };
    let (stream, leftover) = reader.into_parts();
    let classified = match classify_first_pdu(&first) {
        Ok(c) => c,
        Err(e) => {
            reject(&endpoint, format_args!("{e}"));
            return;
        }
    };
    let (vc, this_leg) = match &classified {
        FirstPdu::PlainRpc => {
            endpoint
                .stats
                .v1_connections
                .fetch_add(1, Ordering::Relaxed);
            v1::relay(endpoint, stream, first, leftover).await;
            return;
        }
        FirstPdu::ConnA2(a2) => (a2.vc, Leg::Out),
        FirstPdu::ConnB2(b2) => (b2.vc, Leg::In),
        FirstPdu::InR1A2(_) | FirstPdu::OutR1A4(_) => {
            let name = classified.name();
            let Some(vc) = classified.vc() else { return };
            info!(vc = %vc, "{name}: a successor leg from another proxy (channel recycling)");
            let leg = LegConn {
                stream,
                leftover,
                first: classified,
                peer,
                conn_id,
            };
            if endpoint.table.route_successor(vc, leg).is_err() {
                reject(
                    &endpoint,
                    format_args!("{name} for virtual connection {vc}, which is not open here"),
                );
            }
            return;
        }
    };
    debug!(vc = %vc, leg = ?this_leg, "leg arrived");
    let leg = LegConn {
        stream,
        leftover,
        first: classified,
        peer,
        conn_id,
    };
    match endpoint.table.arrive(vc, this_leg, leg) {
        Arrival::First {
            leg,
            generation,
            second,
        } => bridge::drive(endpoint, leg, this_leg, generation, second).await,
        Arrival::Delivered => debug!(vc = %vc, "handed to the virtual connection's driver"),
        Arrival::Duplicate(_) => reject(
            &endpoint,
            format_args!("a second {this_leg:?} leg for virtual connection {vc}"),
        ),
    }
}

fn reject(endpoint: &Endpoint, why: std::fmt::Arguments<'_>) {
    endpoint.stats.legs_rejected.fetch_add(1, Ordering::Relaxed);
    warn!("leg rejected: {why}");
}
