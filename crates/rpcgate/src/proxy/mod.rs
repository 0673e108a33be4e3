//! The proxy: rpcgate's `/rpc/rpcproxy.dll`, the inbound and outbound proxy roles of MS-RPCH.
//!
//! A listener accepts TCP (and TLS) connections and serves HTTP/1.0 and 1.1 requests on them
//! ([`http_conn`]): echo requests are answered and the connection kept for the next request;
//! an `RPC_IN_DATA` channel request hands the connection to [`inbound`], an `RPC_OUT_DATA` one
//! to [`outbound`], for the rest of its life. Both check the target against ValidPorts before
//! resolving or connecting anything ([`Proxy::check_target`]): never an open relay.

mod channel_start;
pub mod forwarded;
pub mod http_conn;
pub mod inbound;
pub mod outbound;
pub mod registry;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument, debug, info_span, warn};

use crate::connect::{TCP_KEEPALIVE_IDLE, tune_socket};
use crate::http::Target;
use crate::ids::next_conn_id;
use crate::status::live::{LiveGuard, LiveTable, NewEntry};
use crate::tasks::TaskScope;
use crate::valid_ports::ValidPorts;

/// How long [`Proxy::shutdown`] (and the endpoint's) waits for cancelled tasks to end; they
/// end at their next poll, so this is only a bound against a bug.
pub const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Settings shared by every listener of the proxy.
#[derive(Debug, Clone)]
pub struct ProxySettings {
    /// Receive window of both proxy roles (CONN/B2 and CONN/A2).
    pub receive_window: u32,
    /// ConnectionTimeout announced in CONN/A3 and CONN/B2, ms.
    pub connection_timeout_ms: u32,
    /// Content-Length of OUT channel responses (CONN/A2 ChannelLifetime).
    pub out_channel_lifetime: u32,
    /// Per-address timeout for connections to servers.
    pub connect_timeout: Duration,
    /// Bound on each setup stage: request head, first PDU, CONN/B3, CONN/C1.
    pub handshake_timeout: Duration,
    /// How long an idle keep-alive HTTP connection may wait for its next request.
    pub keepalive_timeout: Duration,
    /// A channel with no PDU in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// Client connections served at once; more are closed on accept.
    pub max_connections: usize,
}

/// Counters the proxy keeps (status page, metrics, tests).
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub connections: AtomicU64,
    pub echo_requests: AtomicU64,
    pub in_channels: AtomicU64,
    pub out_channels: AtomicU64,
    pub channels_active: AtomicU64,
    pub denied_by_valid_ports: AtomicU64,
    pub server_unreachable: AtomicU64,
    pub http_errors: AtomicU64,
    pub refused_over_limit: AtomicU64,
    /// Requests answered `401` because credentials were wrong or a handshake broke.
    pub auth_failures: AtomicU64,
    /// Requests answered `401` without verification because of failed-auth throttling.
    pub auth_throttled: AtomicU64,
    /// Requests answered `401` for lack of credentials (the first leg of every client).
    pub auth_challenges: AtomicU64,
    /// Channels refused with `503 RPC Error: 5` by the authorization rules.
    pub denied_by_authorization: AtomicU64,
    /// Connections refused because they did not come from a trusted load balancer.
    pub refused_untrusted: AtomicU64,
    /// Channel recycling: successors handed to their predecessor here (R2) and successors
    /// whose predecessor was on another proxy (R1), per direction.
    pub in_r2: AtomicU64,
    pub in_r1: AtomicU64,
    pub out_r2: AtomicU64,
    pub out_r1: AtomicU64,
    /// OUT channels whose client never acknowledged a full window: its window became advisory
    /// (Samba's client; see docs/flow-control.md).
    pub out_window_advisory: AtomicU64,
    /// Channels connected to an endpoint of this process over an in-memory pipe.
    pub in_process_legs: AtomicU64,
}

/// The proxy: settings, the live allow-list and counters.
#[derive(Debug)]
pub struct Proxy {
    pub settings: ProxySettings,
    valid_ports: RwLock<Arc<ValidPorts>>,
    pub stats: ProxyStats,
    /// One permit per client connection being served (`max_connections`).
    connections: Arc<tokio::sync::Semaphore>,
    /// Channels running here, for recycling on the same instance (R2).
    pub channels: registry::ChannelTable,
    /// Every task of this proxy: listeners, connections, channels and their writers.
    pub tasks: TaskScope,
    /// Channels running now, for the status page.
    pub live: Arc<LiveTable>,
    /// Endpoints of this process, reached over in-memory pipes instead of TCP.
    pub local_endpoints: crate::leg_stream::LocalEndpoints,
}

/// Per-listener policy.
#[derive(Clone)]
pub struct ListenerPolicy {
    /// TLS, if this listener terminates it.
    pub tls: Option<TlsAcceptor>,
    /// Unauthenticated requests are served (loopback listeners, or `allow_anonymous`).
    pub allow_anonymous: bool,
}

/// Who a listener serves: its authentication methods and, on a TLS-offloaded listener, the
/// load balancers it trusts ([`forwarded`]).
#[derive(Debug, Clone)]
pub struct ListenerAccess {
    pub auth: crate::auth::ListenerAuth,
    pub trusted_proxies: forwarded::TrustedProxies,
    /// Answers `/autodiscover/autodiscover.xml` when configured (404 otherwise).
    pub autodiscover: Option<Arc<crate::autodiscover::Service>>,
}

impl ListenerAccess {
    /// What a bare [`ListenerPolicy`] means: everyone (`allow_anonymous`) or no one.
    pub fn from_policy(policy: &ListenerPolicy) -> Self {
        let mut auth = crate::auth::ListenerAuth::anonymous_only();
        auth.anonymous = policy.allow_anonymous;
        Self {
            auth,
            trusted_proxies: forwarded::TrustedProxies::default(),
            autodiscover: None,
        }
    }
}

impl std::fmt::Debug for ListenerPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerPolicy")
            .field("tls", &self.tls.is_some())
            .field("allow_anonymous", &self.allow_anonymous)
            .finish()
    }
}

impl Proxy {
    pub fn new(settings: ProxySettings, valid_ports: ValidPorts) -> Arc<Self> {
        Arc::new(Self {
            connections: Arc::new(tokio::sync::Semaphore::new(settings.max_connections)),
            valid_ports: RwLock::new(Arc::new(valid_ports)),
            stats: ProxyStats::default(),
            channels: registry::ChannelTable::default(),
            tasks: TaskScope::new(),
            live: Arc::default(),
            local_endpoints: crate::leg_stream::LocalEndpoints::default(),
            settings,
        })
    }

    /// Stops the proxy: its listeners stop accepting, and every connection and channel is
    /// closed at once (peers see the sockets close, as if the process had died). Returns when
    /// the last task has ended, or after [`SHUTDOWN_WAIT`] with `false`.
    pub async fn shutdown(&self) -> bool {
        self.tasks.shutdown(SHUTDOWN_WAIT).await
    }

    /// The allow-list in force now.
    pub fn valid_ports(&self) -> Arc<ValidPorts> {
        match self.valid_ports.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the allow-list atomically; live channels keep running.
    pub fn set_valid_ports(&self, valid_ports: ValidPorts) {
        let new = Arc::new(valid_ports);
        match self.valid_ports.write() {
            Ok(mut guard) => *guard = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }

    /// Whether the target may be connected to. Called before any name resolution.
    pub fn check_target(&self, target: &Target) -> bool {
        let allowed = self
            .valid_ports()
            .allows(&target.host, target.port)
            .is_some();
        if !allowed {
            self.stats
                .denied_by_valid_ports
                .fetch_add(1, Ordering::Relaxed);
        }
        allowed
    }
}

/// An `RPC_IN_DATA` / `RPC_OUT_DATA` channel request that passed authentication and
/// authorization, as the channel drivers ([`inbound::run`], [`outbound::run`]) take it.
#[derive(Debug)]
pub struct ChannelRequest {
    pub head: crate::http::RequestHead,
    pub target: crate::http::Target,
    /// The client (from `X-Forwarded-For` behind a trusted load balancer).
    pub peer: SocketAddr,
    /// The HTTP connection's id (`conn=` in the logs).
    pub conn_id: u64,
    /// The authenticated user (`anonymous` without credentials).
    pub user: String,
}

/// A channel running on this proxy, from its server leg's connection to its end: registered
/// for same-proxy recycling, counted in `channels_active` and listed on the status page until
/// dropped, however the channel's task ends (closed, failed or cancelled by a shutdown).
#[derive(Debug)]
pub struct ActiveChannel {
    proxy: Arc<Proxy>,
    vc: rpch_proto::Cookie,
    direction: registry::Direction,
    generation: u64,
    pub live: LiveGuard,
}

impl ActiveChannel {
    /// Registers the channel; successors for it arrive on the returned receiver.
    pub fn open(
        proxy: &Arc<Proxy>,
        direction: registry::Direction,
        entry: NewEntry,
    ) -> (Self, tokio::sync::mpsc::Receiver<Box<registry::Successor>>) {
        let vc = entry.vc;
        let (generation, successors) = proxy.channels.register(vc, direction);
        proxy.stats.channels_active.fetch_add(1, Ordering::Relaxed);
        let live = proxy.live.register(entry);
        let channel = Self {
            proxy: proxy.clone(),
            vc,
            direction,
            generation,
            live,
        };
        (channel, successors)
    }

    /// Leaves the recycling table early (a draining predecessor: a new successor reaching
    /// this proxy must start afresh, not be handed to it). Idempotent.
    pub fn forget(&self) {
        self.proxy
            .channels
            .forget(&self.vc, self.direction, self.generation);
    }
}

impl Drop for ActiveChannel {
    fn drop(&mut self) {
        self.forget();
        self.proxy
            .stats
            .channels_active
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves HTTP(S) on `listener` until the proxy shuts down: anonymous clients if the policy
/// allows them, nobody otherwise. [`serve_with_access`] adds authentication.
///
/// The listener counts as one of the proxy's tasks from this call on (not from its first
/// poll), so that a [`Proxy::shutdown`] right after it still waits for the port to close.
pub fn serve(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    policy: ListenerPolicy,
) -> impl Future<Output = ()> + Send + 'static {
    let counted = proxy.tasks.enter();
    async move {
        let _counted = counted;
        serve_anonymous(listener, proxy, policy).await;
    }
}

async fn serve_anonymous(listener: TcpListener, proxy: Arc<Proxy>, policy: ListenerPolicy) {
    // The first listener runs successors orphaned by the recycling race (see registry).
    let orphans = match proxy.channels.orphan_queue.lock() {
        Ok(mut slot) => slot.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    };
    if let Some(mut orphans) = orphans {
        let scope = proxy.tasks.clone();
        let proxy = proxy.clone();
        scope.spawn(async move {
            while let Some(orphan) = orphans.recv().await {
                let span = info_span!("orphan", conn = orphan.successor.conn_id);
                let tasks = &proxy.tasks;
                match orphan.direction {
                    registry::Direction::In => {
                        tasks.spawn(inbound::run_orphan(proxy.clone(), orphan).instrument(span))
                    }
                    registry::Direction::Out => {
                        tasks.spawn(outbound::run_orphan(proxy.clone(), orphan).instrument(span))
                    }
                };
            }
        });
    }
    let access = Arc::new(ListenerAccess::from_policy(&policy));
    serve_with_access(listener, proxy, policy, access).await;
}

/// Serves HTTP(S) on `listener` with `access` deciding who is served, until the proxy shuts
/// down ([`Proxy::shutdown`]); counted as one of the proxy's tasks from this call on.
pub fn serve_with_access(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    policy: ListenerPolicy,
    access: Arc<ListenerAccess>,
) -> impl Future<Output = ()> + Send + 'static {
    let counted = proxy.tasks.enter();
    async move {
        let _counted = counted;
        accept_loop(listener, proxy, policy, access).await;
        // The listener is closed here, before the guard goes: the port is free once
        // shutdown returns.
    }
}

async fn accept_loop(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    policy: ListenerPolicy,
    access: Arc<ListenerAccess>,
) {
    let local = listener.local_addr().ok();
    loop {
        let accepted = tokio::select! {
            () = proxy.tasks.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(listener = ?local, "accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = proxy.connections.clone().try_acquire_owned() else {
            // Over the limit: close at once rather than queue (the client retries).
            proxy
                .stats
                .refused_over_limit
                .fetch_add(1, Ordering::Relaxed);
            warn!(%peer, limit = proxy.settings.max_connections, "connection refused: max_connections reached");
            continue;
        };
        tune_socket(&stream, TCP_KEEPALIVE_IDLE);
        proxy.stats.connections.fetch_add(1, Ordering::Relaxed);
        let conn_id = next_conn_id();
        let span = info_span!(
            "http",
            conn = conn_id,
            peer = %peer,
            client = tracing::field::Empty,
            user = tracing::field::Empty
        );
        let proxy = proxy.clone();
        let policy = policy.clone();
        let access = access.clone();
        let tasks = proxy.tasks.clone();
        tasks.spawn(
            async move {
                let _permit = permit;
                // Each branch boxed on its own: the task then holds only the state of the
                // transport it serves (a TLS connection's state is several times a plain
                // one's), which matters with tens of thousands of connections open.
                match &policy.tls {
                    Some(acceptor) => {
                        let acceptor = acceptor.clone();
                        Box::pin(async move {
                            let handshake = tokio::time::timeout(
                                proxy.settings.handshake_timeout,
                                acceptor.accept(stream),
                            );
                            match handshake.await {
                                Ok(Ok(tls)) => {
                                    http_conn::serve_connection(proxy, access, tls, peer, conn_id)
                                        .await
                                }
                                Ok(Err(e)) => debug!("TLS handshake failed: {e}"),
                                Err(_) => debug!("TLS handshake timed out"),
                            }
                        })
                        .await
                    }
                    None => {
                        Box::pin(http_conn::serve_connection(
                            proxy, access, stream, peer, conn_id,
                        ))
                        .await
                    }
                }
            }
            .instrument(span),
        );
    }
}

/// The client address CONN/B2 reports: the TCP peer (IPv4-mapped IPv6 shown as IPv4).
pub fn client_address(peer: SocketAddr) -> std::net::IpAddr {
    match peer.ip() {
        std::net::IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(std::net::IpAddr::V6(v6), std::net::IpAddr::V4),
        v4 => v4,
    }
}
