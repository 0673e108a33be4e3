//! Teardown: a virtual connection whose client, inbound proxy, outbound proxy, endpoint or
//! backend dies is torn down on every other node, and every resource comes back: open file
//! descriptors of the process, live tasks of each node, the proxies' channel tables and the
//! endpoint's pairing table, the `*_active` counters.
//!
//! Each node runs on a runtime of its own, so that its tasks can be counted alone and a node
//! can die the way a process does. The client and the backend die by having their runtime
//! dropped (every socket closes under the peers' feet); the proxies and the endpoint die by
//! their `shutdown()`, which must leave no task behind on their runtime. The victim is then
//! restarted on the same address, and the whole process must be back to the counts it had
//! before the virtual connection was opened.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{init_logging, proxy_settings, valid_ports};
use rpcgate::endpoint::{Backend, Endpoint, EndpointSettings};
use rpcgate::proxy::{ListenerPolicy, Proxy, ProxySettings};
use rpcgate::rpc_client::RpcClient;
use rpcgate::rpch_client::{ClientOptions, ProxyUrl, open};
use tokio::net::TcpListener;
use tokio::runtime::Runtime;
use tokio::sync::oneshot;

/// How long the surviving nodes may take to free everything after a death: EOF travels at
/// once, and a closing writer gets at most `framed::DRAIN_TIMEOUT` (5 s) to drain.
const TEARDOWN_DEADLINE: Duration = Duration::from_secs(8);

/// The tests count the whole process's descriptors, so they run one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serialized() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

fn settings() -> ProxySettings {
    let mut settings = proxy_settings();
    settings.idle_timeout = Duration::from_secs(10);
    settings.handshake_timeout = Duration::from_secs(5);
    settings
}

/// One gateway node on its own runtime.
struct Node<T> {
    rt: Runtime,
    handle: T,
}

impl<T> Node<T> {
    fn tasks(&self) -> usize {
        self.rt.metrics().num_alive_tasks()
    }
}

fn start_backend(address: SocketAddr) -> Node<()> {
    let rt = runtime();
    let listener = listen(&rt, address);
    rt.spawn(rpcgate::demo::serve(listener));
    Node { rt, handle: () }
}

fn start_endpoint(address: SocketAddr, backend: SocketAddr) -> Node<Arc<Endpoint>> {
    let rt = runtime();
    let listener = listen(&rt, address);
    let endpoint = Endpoint::new(EndpointSettings {
        backend: Backend {
            host: backend.ip().to_string(),
            port: backend.port(),
        },
        receive_window: 65_536,
        setup_timeout: Duration::from_secs(5),
        first_pdu_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
    });
    rt.spawn(rpcgate::endpoint::serve(listener, endpoint.clone()));
    Node {
        rt,
        handle: endpoint,
    }
}

fn start_proxy(address: SocketAddr, valid: &str, settings: ProxySettings) -> Node<Arc<Proxy>> {
    let rt = runtime();
    let listener = listen(&rt, address);
    let proxy = Proxy::new(settings, valid_ports(valid));
    rt.spawn(rpcgate::proxy::serve(
        listener,
        proxy.clone(),
        ListenerPolicy {
            tls: None,
            allow_anonymous: true,
        },
    ));
    Node { rt, handle: proxy }
}

/// Listens on `address` from `rt`. A node restarted on its old address retries for a moment
/// if something else holds the port: the port was free when the victim was shut down (the
/// proxy shutdown test checks that), but a port from the ephemeral range may be taken in
/// between by any outgoing connection on the machine.
fn listen(rt: &Runtime, address: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match rt.block_on(TcpListener::bind(address)) {
            Ok(listener) => return listener,
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) => panic!("cannot listen on {address}: {e}"),
        }
    }
}

/// Binds port 0 to learn a free port, for a node that must come back on the same address.
fn free_address() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Victim {
    Client,
    InboundProxy,
    OutboundProxy,
    Endpoint,
    Backend,
}

struct Gateway {
    backend_addr: SocketAddr,
    endpoint_addr: SocketAddr,
    in_addr: SocketAddr,
    out_addr: SocketAddr,
    backend: Option<Node<()>>,
    endpoint: Option<Node<Arc<Endpoint>>>,
    proxy_in: Option<Node<Arc<Proxy>>>,
    proxy_out: Option<Node<Arc<Proxy>>>,
}

/// What is counted before and after.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Counts {
    fds: usize,
    tasks: [usize; 4],
    channels: [usize; 2],
    channels_active: [u64; 2],
    endpoint_live: usize,
    endpoint_waiting: usize,
    vcs_active: u64,
}

impl Gateway {
    fn start() -> Self {
        let backend_addr = free_address();
        let endpoint_addr = free_address();
        let in_addr = free_address();
        let out_addr = free_address();
        let mut gateway = Self {
            backend_addr,
            endpoint_addr,
            in_addr,
            out_addr,
            backend: None,
            endpoint: None,
            proxy_in: None,
            proxy_out: None,
        };
        for victim in [
            Victim::Backend,
            Victim::Endpoint,
            Victim::InboundProxy,
            Victim::OutboundProxy,
        ] {
            gateway.restart(victim);
        }
        gateway
    }

    fn valid(&self) -> String {
        format!("127.0.0.1:{}", self.endpoint_addr.port())
    }

    fn restart(&mut self, victim: Victim) {
        match victim {
            Victim::Client => {}
            Victim::Backend => self.backend = Some(start_backend(self.backend_addr)),
            Victim::Endpoint => {
                self.endpoint = Some(start_endpoint(self.endpoint_addr, self.backend_addr));
            }
            Victim::InboundProxy => {
                self.proxy_in = Some(start_proxy(self.in_addr, &self.valid(), settings()));
            }
            Victim::OutboundProxy => {
                self.proxy_out = Some(start_proxy(self.out_addr, &self.valid(), settings()));
            }
        }
    }

    fn endpoint(&self) -> &Node<Arc<Endpoint>> {
        self.endpoint.as_ref().unwrap()
    }

    fn proxies(&self) -> [&Node<Arc<Proxy>>; 2] {
        [
            self.proxy_in.as_ref().unwrap(),
            self.proxy_out.as_ref().unwrap(),
        ]
    }

    fn counts(&self) -> Counts {
        let [pin, pout] = self.proxies();
        let endpoint = self.endpoint();
        Counts {
            fds: open_fds(),
            tasks: [
                self.backend.as_ref().unwrap().tasks(),
                endpoint.tasks(),
                pin.tasks(),
                pout.tasks(),
            ],
            channels: [pin.handle.channels.len(), pout.handle.channels.len()],
            channels_active: [
                pin.handle.stats.channels_active.load(Ordering::Relaxed),
                pout.handle.stats.channels_active.load(Ordering::Relaxed),
            ],
            endpoint_live: endpoint.handle.table.live(),
            endpoint_waiting: endpoint.handle.table.waiting(),
            vcs_active: endpoint.handle.stats.vcs_active.load(Ordering::Relaxed),
        }
    }

    /// Whether the virtual connection is gone from every surviving node's tables.
    fn tables_empty(&self, victim: Victim) -> bool {
        let survives = |v: Victim| v != victim;
        let proxy_clear = |node: &Option<Node<Arc<Proxy>>>| {
            node.as_ref().is_none_or(|n| {
                n.handle.channels.is_empty()
                    && n.handle.stats.channels_active.load(Ordering::Relaxed) == 0
            })
        };
        let endpoint_clear = self.endpoint.as_ref().is_none_or(|n| {
            n.handle.table.live() == 0
                && n.handle.table.waiting() == 0
                && n.handle.stats.vcs_active.load(Ordering::Relaxed) == 0
        });
        (!survives(Victim::InboundProxy) || proxy_clear(&self.proxy_in))
            && (!survives(Victim::OutboundProxy) || proxy_clear(&self.proxy_out))
            && (!survives(Victim::Endpoint) || endpoint_clear)
    }

    /// Kills `victim`: a runtime dropped, or a `shutdown()` that must leave no task behind.
    fn kill(&mut self, victim: Victim, client: &mut Option<Runtime>) {
        match victim {
            Victim::Client => {
                if let Some(rt) = client.take() {
                    rt.shutdown_timeout(Duration::ZERO);
                }
            }
            Victim::Backend => {
                if let Some(node) = self.backend.take() {
                    node.rt.shutdown_timeout(Duration::ZERO);
                }
            }
            Victim::Endpoint => {
                let node = self.endpoint.take().unwrap();
                let endpoint = node.handle.clone();
                assert!(node.rt.block_on(endpoint.shutdown()), "endpoint shutdown");
                assert_no_tasks_left(&node, "endpoint");
            }
            Victim::InboundProxy | Victim::OutboundProxy => {
                let slot = if victim == Victim::InboundProxy {
                    &mut self.proxy_in
                } else {
                    &mut self.proxy_out
                };
                let node = slot.take().unwrap();
                let proxy = node.handle.clone();
                assert!(node.rt.block_on(proxy.shutdown()), "proxy shutdown");
                assert_no_tasks_left(&node, &format!("{victim:?}"));
            }
        }
    }
}

/// After `shutdown()` has returned, the node's runtime runs no task: the scope's tracker counts
/// a task done when its future completes, the runtime a moment later when it frees the task.
fn assert_no_tasks_left<T>(node: &Node<T>, what: &str) {
    let freed = wait_until(Instant::now() + Duration::from_millis(500), || {
        node.tasks() == 0
    });
    assert!(
        freed,
        "{what}: {} tasks left after shutdown()",
        node.tasks()
    );
}

/// Opens a virtual connection (IN through one proxy, OUT through the other), binds rpcecho,
/// and keeps calling EchoData until a call fails; the error goes to the returned receiver.
fn start_client(rt: &Runtime, gateway: &Gateway) -> oneshot::Receiver<String> {
    let in_proxy: ProxyUrl = format!("http://{}", gateway.in_addr).parse().unwrap();
    let out_proxy: ProxyUrl = format!("http://{}", gateway.out_addr).parse().unwrap();
    let target = gateway.valid();
    let (opened_tx, opened_rx) = std::sync::mpsc::channel();
    let (failed_tx, failed_rx) = oneshot::channel();
    rt.spawn(async move {
        let options = ClientOptions {
            out_proxy: Some(out_proxy),
            ..ClientOptions::default()
        };
        let transport = open(&in_proxy, &target, &options).await.unwrap();
        let mut client = RpcClient::new(transport).with_timeout(Duration::from_secs(30));
        client.bind(rpcgate::demo::echo::interface()).await.unwrap();
        let payload = vec![0x5a; 4096];
        assert_eq!(client.echo_data(&payload).await.unwrap(), payload);
        opened_tx.send(()).unwrap();
        loop {
            match client.echo_data(&payload).await {
                Ok(echoed) => assert_eq!(echoed, payload),
                Err(e) => {
                    let _ = failed_tx.send(e.to_string());
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    opened_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("virtual connection opened and a call made");
    failed_rx
}

fn wait_until(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    while Instant::now() < deadline {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}

#[test]
fn a_dead_client_proxy_endpoint_or_backend_frees_every_resource_on_every_node() {
    init_logging();
    let _serial = serialized();
    let mut gateway = Gateway::start();
    // Let the nodes settle (listener tasks polled once, runtime threads parked).
    std::thread::sleep(Duration::from_millis(200));
    let baseline = gateway.counts();
    assert_eq!(baseline.channels, [0, 0]);

    for victim in [
        Victim::Client,
        Victim::InboundProxy,
        Victim::OutboundProxy,
        Victim::Endpoint,
        Victim::Backend,
    ] {
        let mut client = Some(runtime());
        let mut failed = start_client(client.as_ref().unwrap(), &gateway);
        let busy = gateway.counts();
        assert_eq!(busy.channels_active, [1, 1], "{victim:?}: {busy:?}");
        assert_eq!(busy.endpoint_live, 1, "{victim:?}: {busy:?}");
        assert_eq!(busy.vcs_active, 1, "{victim:?}: {busy:?}");
        assert!(busy.fds > baseline.fds, "{victim:?}: {busy:?}");

        let killed = Instant::now();
        gateway.kill(victim, &mut client);
        let deadline = killed + TEARDOWN_DEADLINE;

        // The client learns of it: its call fails, it does not hang.
        if victim != Victim::Client {
            let error = wait_until(deadline, || {
                !matches!(failed.try_recv(), Err(oneshot::error::TryRecvError::Empty))
            });
            assert!(error, "{victim:?} died but the client's calls did not fail");
        }
        // Every surviving node forgets the virtual connection.
        let torn_down = wait_until(deadline, || gateway.tables_empty(victim));
        let teardown_took = killed.elapsed();
        assert!(
            torn_down,
            "{victim:?}: the virtual connection is still held: {:?}",
            gateway.counts()
        );
        drop(client.take());

        // Back to the baseline once the victim is restarted: descriptors, tasks, tables.
        gateway.restart(victim);
        let back = wait_until(
            deadline.max(Instant::now() + Duration::from_secs(2)),
            || gateway.counts() == baseline,
        );
        assert!(
            back,
            "{victim:?}: resources not freed:\n  before {baseline:?}\n  after  {:?}",
            gateway.counts()
        );
        eprintln!(
            "{victim:?} killed: virtual connection torn down on every node in {teardown_took:?}"
        );
    }
}

#[test]
fn a_proxy_shutdown_closes_live_channels_and_leaves_no_task() {
    init_logging();
    let _serial = serialized();
    let gateway = Gateway::start();
    let client = runtime();
    let failed = start_client(&client, &gateway);
    let proxy_in = gateway.proxy_in.as_ref().unwrap();
    assert!(proxy_in.tasks() > 1);
    let started = Instant::now();
    assert!(proxy_in.rt.block_on(proxy_in.handle.shutdown()));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_no_tasks_left(proxy_in, "proxy");
    // The listener is closed: nothing accepts on its address any more.
    assert!(std::net::TcpStream::connect(gateway.in_addr).is_err());
    let error = client
        .block_on(async { tokio::time::timeout(Duration::from_secs(8), failed).await })
        .expect("the client notices")
        .unwrap();
    assert!(!error.is_empty());
}

/// A client that opens both channels and then goes silent (a frozen process, a NAT that
/// dropped its state): nothing closes its sockets, so only the proxies' idle timeout can free
/// the virtual connection, and it must, on every node.
#[test]
fn a_silent_client_is_dropped_after_the_idle_timeout_on_every_node() {
    use rpch_proto::cookie::Cookie;
    use rpch_proto::rts::build;
    use std::io::Write;

    init_logging();
    let _serial = serialized();
    let idle = Duration::from_secs(2);
    let mut gateway = Gateway::start();
    let valid = gateway.valid();
    // Proxies with a short idle timeout take the place of the default ones, on addresses of
    // their own (nothing here needs the old ones).
    for (node, address) in [
        (&mut gateway.proxy_in, &mut gateway.in_addr),
        (&mut gateway.proxy_out, &mut gateway.out_addr),
    ] {
        let old = node.take().unwrap();
        assert!(old.rt.block_on(old.handle.shutdown()));
        drop(old);
        let mut settings = settings();
        settings.idle_timeout = idle;
        *address = free_address();
        *node = Some(start_proxy(*address, &valid, settings));
    }
    std::thread::sleep(Duration::from_millis(200));
    let baseline = gateway.counts();

    let vc = Cookie([7; 16]);
    let target = gateway.valid();
    let request = |verb: &str, length: u32| {
        format!(
            "{verb} /rpc/rpcproxy.dll?{target} HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Content-Length: {length}\r\nUser-Agent: MSRPC\r\n\r\n"
        )
    };
    let mut out = std::net::TcpStream::connect(gateway.out_addr).unwrap();
    out.write_all(request("RPC_OUT_DATA", 76).as_bytes())
        .unwrap();
    out.write_all(&build::conn_a1(vc, Cookie([8; 16]), 65_536).encode())
        .unwrap();
    let mut inn = std::net::TcpStream::connect(gateway.in_addr).unwrap();
    inn.write_all(request("RPC_IN_DATA", 0x4000_0000).as_bytes())
        .unwrap();
    inn.write_all(
        &build::conn_b1(vc, Cookie([9; 16]), 0x4000_0000, 300_000, Cookie([10; 16])).encode(),
    )
    .unwrap();
    let opened = wait_until(Instant::now() + Duration::from_secs(5), || {
        gateway.counts().vcs_active == 1
    });
    assert!(
        opened,
        "virtual connection not opened: {:?}",
        gateway.counts()
    );
    let silent_since = Instant::now();

    // The sockets stay open; nothing more is sent or read.
    let freed = wait_until(silent_since + idle + Duration::from_secs(6), || {
        gateway.tables_empty(Victim::Client)
    });
    let took = silent_since.elapsed();
    assert!(freed, "still held after {took:?}: {:?}", gateway.counts());
    assert!(
        took >= idle - Duration::from_millis(500),
        "freed before the idle timeout: {took:?}"
    );
    drop((out, inn));
    let back = wait_until(Instant::now() + Duration::from_secs(8), || {
        gateway.counts() == baseline
    });
    assert!(back, "before {baseline:?}\nafter  {:?}", gateway.counts());
    eprintln!("silent client: freed on every node {took:?} after its last byte");
}
