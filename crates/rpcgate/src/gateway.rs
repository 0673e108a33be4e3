//! Starting and holding a running gateway: the demo service, the endpoints and the proxy
//! listeners, in that order (each may depend on the one before), from a [`GatewaySpec`].
//!
//! `rpcgate serve` builds the spec from the config file; tests build it directly with port 0
//! everywhere and read the bound addresses back from [`RunningGateway`]. Binding happens
//! before anything is spawned, so a port already in use is reported as a start-up error that
//! names the address, never as a half-started gateway.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tracing::info;

use crate::endpoint::{Backend, Endpoint, EndpointSettings};
use crate::proxy::{ListenerAccess, ListenerPolicy, Proxy, ProxySettings};
use crate::tasks::TaskScope;
use crate::valid_ports::ValidPorts;

/// Where an endpoint's backend is.
#[derive(Debug, Clone)]
pub enum BackendSpec {
    /// The built-in demo service of this gateway.
    Demo,
    /// An ncacn_ip_tcp server.
    Tcp(Backend),
}

/// One endpoint to start.
#[derive(Debug, Clone)]
pub struct EndpointSpec {
    pub listen: Vec<SocketAddr>,
    pub backend: BackendSpec,
    /// Settings; the backend in here is replaced according to `backend`.
    pub settings: EndpointSettings,
}

/// One proxy listener to start.
#[derive(Clone)]
pub struct ProxyListenerSpec {
    pub address: SocketAddr,
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Authentication methods, anonymous access and trusted load balancers.
    pub access: ListenerAccess,
}

impl std::fmt::Debug for ProxyListenerSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyListenerSpec")
            .field("address", &self.address)
            .field("tls", &self.tls.is_some())
            .field("access", &self.access)
            .finish()
    }
}

/// Everything a gateway runs.
#[derive(Debug, Clone)]
pub struct GatewaySpec {
    pub proxy: ProxySettings,
    pub valid_ports: ValidPorts,
    pub listeners: Vec<ProxyListenerSpec>,
    pub endpoints: Vec<EndpointSpec>,
    /// Address of the demo service, if it runs.
    pub demo: Option<SocketAddr>,
    /// Address of the status page and metrics, if they are served.
    pub status: Option<SocketAddr>,
    /// The proxy reaches this gateway's own endpoints over in-memory pipes.
    pub in_process_endpoints: bool,
}

/// Why a gateway did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {address} ({what}): {source}")]
    Bind {
        address: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error(
        "an endpoint uses the demo service as its backend, but the demo service is not enabled"
    )]
    NoDemo,
}

/// A started gateway; [`RunningGateway::shutdown`] stops it with every connection.
#[derive(Debug)]
pub struct RunningGateway {
    pub proxy: Arc<Proxy>,
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Bound proxy listener addresses, in spec order, with whether each is TLS.
    pub proxy_addrs: Vec<(SocketAddr, bool)>,
    /// Bound endpoint addresses, per endpoint in spec order.
    pub endpoint_addrs: Vec<Vec<SocketAddr>>,
    pub demo_addr: Option<SocketAddr>,
    /// The status listener's address, and what it reports on (the configurator's manager is
    /// added to it once it exists).
    pub status_addr: Option<SocketAddr>,
    pub status: Arc<crate::status::Sources>,
    /// The demo service's tasks (its listener and connections), and the status listener's.
    demo_tasks: TaskScope,
    status_tasks: TaskScope,
    /// The listeners' accept loops.
    tasks: JoinSet<()>,
}

impl RunningGateway {
    /// The first plain-HTTP proxy listener.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.proxy_addrs
            .iter()
            .find(|(_, tls)| !tls)
            .map(|(a, _)| *a)
    }

    /// The first HTTPS proxy listener.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.proxy_addrs
            .iter()
            .find(|(_, tls)| *tls)
            .map(|(a, _)| *a)
    }

    /// Waits until a task ends (they normally never do).
    pub async fn wait(&mut self) {
        let _ = self.tasks.join_next().await;
    }

    /// Stops everything: the proxy first (clients see their channels close), then the
    /// endpoints, then the demo service. Returns whether every task ended in time.
    pub async fn shutdown(mut self) -> bool {
        let mut clean = self.proxy.shutdown().await;
        for endpoint in &self.endpoints {
            clean &= endpoint.shutdown().await;
        }
        clean &= self.demo_tasks.shutdown(crate::proxy::SHUTDOWN_WAIT).await;
        clean &= self
            .status_tasks
            .shutdown(crate::proxy::SHUTDOWN_WAIT)
            .await;
        // The accept loops have returned; reap them.
        while self.tasks.join_next().await.is_some() {}
        clean
    }
}

async fn bind(address: SocketAddr, what: &'static str) -> Result<TcpListener, StartError> {
    // std's bind sets SO_REUSEADDR on Unix via tokio; an IPv6 socket is v6-only so that
    // 127.0.0.1 and ::1 can be bound side by side.
    let socket = if address.is_ipv6() {
        tokio::net::TcpSocket::new_v6()
    } else {
        tokio::net::TcpSocket::new_v4()
    }
    .map_err(|source| StartError::Bind {
        address,
        what,
        source,
    })?;
    let _ = socket.set_reuseaddr(true);
    if address.is_ipv6() {
        let _ = socket2::SockRef::from(&socket).set_only_v6(true);
    }
    socket
        .bind(address)
        .and_then(|()| socket.listen(1024))
        .map_err(|source| StartError::Bind {
            address,
            what,
            source,
        })
}

/// `ntlm, basic`, `anonymous`, plus the trusted load balancers, for the start-up log.
fn describe_access(access: &ListenerAccess) -> String {
    let mut parts: Vec<&str> = access
        .auth
        .methods
        .iter()
        .map(|m| m.config_name())
        .collect();
    if access.auth.anonymous {
        parts.push("anonymous");
    }
    let mut text = parts.join(", ");
    if access.trusted_proxies.is_enabled() {
        let nets: Vec<String> = access
            .trusted_proxies
            .0
            .iter()
            .map(ToString::to_string)
            .collect();
        text.push_str(&format!("; TLS offloaded by {}", nets.join(", ")));
    }
    text
}

/// Binds everything in `spec` and spawns the tasks.
pub async fn start(spec: GatewaySpec) -> Result<RunningGateway, StartError> {
    let mut tasks = JoinSet::new();
    let demo_tasks = TaskScope::new();

    let demo_addr = match spec.demo {
        Some(address) => {
            let listener = bind(address, "demo service").await?;
            let bound = listener.local_addr().unwrap_or(address);
            info!(address = %bound, "demo RPC service listening (ncacn_ip_tcp: mgmt, rpcecho)");
            let serving = demo_tasks.run(crate::demo::serve(listener));
            tasks.spawn(async move {
                if let Some(Err(e)) = serving.await {
                    tracing::error!("demo service stopped: {e}");
                }
            });
            Some(bound)
        }
        None => None,
    };

    let mut endpoints = Vec::new();
    let mut endpoint_addrs = Vec::new();
    for endpoint_spec in spec.endpoints {
        let mut settings = endpoint_spec.settings;
        settings.backend = match endpoint_spec.backend {
            BackendSpec::Demo => {
                let demo = demo_addr.ok_or(StartError::NoDemo)?;
                Backend {
                    host: demo.ip().to_string(),
                    port: demo.port(),
                }
            }
            BackendSpec::Tcp(backend) => backend,
        };
        let backend = settings.backend.clone();
        let endpoint = Endpoint::new(settings);
        let mut bound = Vec::new();
        let addresses = endpoint_spec.listen.len();
        for address in endpoint_spec.listen {
            let listener = match bind(address, "endpoint").await {
                Ok(listener) => listener,
                // A host without IPv6 cannot bind [::1]; the IPv4 listener still serves, and
                // the proxy tries every address of the name.
                Err(StartError::Bind { source, .. })
                    if address.is_ipv6()
                        && addresses > 1
                        && matches!(
                            source.kind(),
                            std::io::ErrorKind::AddrNotAvailable | std::io::ErrorKind::Unsupported
                        ) =>
                {
                    tracing::warn!(%address, "IPv6 is not available here; endpoint not listening on {address}: {source}");
                    continue;
                }
                Err(e) => return Err(e),
            };
            let local = listener.local_addr().unwrap_or(address);
            info!(address = %local, backend = %backend, "endpoint listening (ncacn_http)");
            bound.push(local);
            tasks.spawn(crate::endpoint::serve(listener, endpoint.clone()));
        }
        endpoints.push(endpoint);
        endpoint_addrs.push(bound);
    }

    let proxy = Proxy::new(spec.proxy, spec.valid_ports);
    if spec.in_process_endpoints {
        for (endpoint, addresses) in endpoints.iter().zip(&endpoint_addrs) {
            for address in addresses {
                proxy.local_endpoints.add(*address, endpoint.clone());
            }
        }
    }
    info!(valid_ports = %proxy.valid_ports(), "ValidPorts");
    let mut proxy_addrs = Vec::new();
    for listener_spec in spec.listeners {
        let listener = bind(listener_spec.address, "proxy").await?;
        let local = listener.local_addr().unwrap_or(listener_spec.address);
        let tls = listener_spec.tls.is_some();
        info!(
            url = %format!("{}://{local}/rpc/rpcproxy.dll", if tls { "https" } else { "http" }),
            auth = %describe_access(&listener_spec.access),
            "proxy listening"
        );
        proxy_addrs.push((local, tls));
        let policy = ListenerPolicy {
            tls: listener_spec.tls.map(TlsAcceptor::from),
            allow_anonymous: listener_spec.access.auth.anonymous,
        };
        tasks.spawn(crate::proxy::serve_with_access(
            listener,
            proxy.clone(),
            policy,
            Arc::new(listener_spec.access),
        ));
    }

    let status = crate::status::Sources::new(Some(proxy.clone()), endpoints.clone());
    let status_tasks = TaskScope::new();
    let status_addr = match spec.status {
        Some(address) => {
            let listener = bind(address, "status page").await?;
            let local = listener.local_addr().unwrap_or(address);
            info!(url = %format!("http://{local}/"), metrics = %format!("http://{local}/metrics"), "status page listening");
            let serving = crate::status::serve(listener, status.clone(), status_tasks.clone());
            tasks.spawn(serving);
            Some(local)
        }
        None => None,
    };

    Ok(RunningGateway {
        proxy,
        endpoints,
        proxy_addrs,
        endpoint_addrs,
        demo_addr,
        status_addr,
        status,
        demo_tasks,
        status_tasks,
        tasks,
    })
}
