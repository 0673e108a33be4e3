//! `rpcgate serve`: load the configuration (or the embedded default), set up logging and TLS,
//! turn the configuration into a [`GatewaySpec`], start it and run until interrupted.
//!
//! The start-up log says what listens where, which certificate is served (and whether it was
//! just generated), and what ValidPorts allows, so an administrator sees the whole shape of the
//! gateway in the first lines.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

use crate::config::{Backend, Config, ListenerTls};
use crate::configurator::{ConfiguratorConfig, Manager};
use crate::endpoint::EndpointSettings;
use crate::gateway::{BackendSpec, EndpointSpec, GatewaySpec, ProxyListenerSpec, start};
use crate::proxy::ProxySettings;

/// Loads `path`, or the embedded default when `None`.
pub fn load_config(path: Option<PathBuf>) -> anyhow::Result<Config> {
    Ok(match path {
        Some(path) => Config::load(&path)?,
        None => Config::embedded_default()?,
    })
}

/// With `[auth.kerberos]`, GSS-API must find the keytab in `KRB5_KTNAME` (see
/// [`crate::auth::kerberos`]): when the variable is not already right, re-executes this
/// program with it set, once. Returns only when nothing needs doing (or on error).
pub fn reexec_for_keytab(path: Option<&std::path::Path>) -> anyhow::Result<()> {
    let config = load_config(path.map(ToOwned::to_owned))?;
    let Some(kerberos) = &config.auth.kerberos else {
        return Ok(());
    };
    let wanted = crate::auth::kerberos::keytab_env(kerberos);
    if std::env::var_os("KRB5_KTNAME").is_some_and(|v| v == wanted.as_str()) {
        return Ok(());
    }
    if std::env::var_os(REEXEC_GUARD).is_some() {
        anyhow::bail!("KRB5_KTNAME is still not {wanted} after re-executing");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().context("finding this program to re-execute it")?;
        let error = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("KRB5_KTNAME", &wanted)
            .env(REEXEC_GUARD, "1")
            .exec();
        Err(anyhow::anyhow!(
            "re-executing with KRB5_KTNAME={wanted}: {error}"
        ))
    }
    #[cfg(not(unix))]
    anyhow::bail!("set KRB5_KTNAME={wanted} in rpcgate's environment")
}

/// Set while re-executing for [`reexec_for_keytab`], so that it happens once.
const REEXEC_GUARD: &str = "RPCGATE_KEYTAB_REEXEC";

/// How long a new endpoint leg may take to send its first PDU.
const FIRST_PDU_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds the runnable spec (and TLS material) from a configuration.
pub fn spec_from_config(config: &Config) -> anyhow::Result<GatewaySpec> {
    let proxy = &config.proxy;
    let settings = ProxySettings {
        receive_window: proxy.receive_window,
        connection_timeout_ms: proxy.connection_timeout_ms(),
        out_channel_lifetime: proxy.out_channel_lifetime,
        connect_timeout: proxy.connect_timeout,
        handshake_timeout: proxy.handshake_timeout,
        keepalive_timeout: proxy.handshake_timeout.max(Duration::from_secs(120)),
        idle_timeout: proxy.idle_timeout,
        max_connections: proxy.max_connections,
    };
    let auth_core = crate::auth::AuthCore::new(config.auth.clone())
        .map_err(|e| anyhow::anyhow!("{}: [auth]: {e}", config.source))?;
    let mut listeners = Vec::new();
    for listener in &proxy.listeners {
        let tls = match &listener.tls {
            ListenerTls::Plain => None,
            ListenerTls::SelfSigned => {
                let pair = crate::tls::load_or_generate_self_signed(&config.state_dir)
                    .context("self-signed certificate")?;
                info!(
                    cert = %pair.cert.display(),
                    generated = pair.generated,
                    "TLS certificate (self-signed) for {}", listener.address
                );
                Some(crate::tls::server_config(&pair.cert, &pair.key)?)
            }
            ListenerTls::Files { cert, key } => {
                info!(cert = %cert.display(), "TLS certificate for {}", listener.address);
                Some(crate::tls::server_config(cert, key)?)
            }
        };
        if listener.allow_anonymous && !listener.is_loopback() {
            warn!(
                "listener {} accepts ANONYMOUS clients off loopback (allow_anonymous = true): \
                 anyone who reaches it can use every ValidPorts target{}",
                listener.address,
                if config.auth.rules.is_empty() {
                    ""
                } else {
                    " that auth.allow grants to \"anonymous\""
                }
            );
        }
        if listener.allow_anonymous && tls.is_none() && !listener.is_loopback() {
            warn!(
                "listener {} serves plain HTTP off loopback (allow_anonymous = true): traffic \
                 is not encrypted",
                listener.address
            );
        }
        listeners.push(ProxyListenerSpec {
            address: listener.address,
            tls,
            access: crate::proxy::ListenerAccess {
                auth: crate::auth::ListenerAuth {
                    methods: listener.auth.methods.clone(),
                    anonymous: listener.auth.anonymous,
                    core: Some(auth_core.clone()),
                },
                trusted_proxies: listener.auth.trusted_proxies.clone(),
                autodiscover: None,
            },
        });
    }
    // After the listeners: the self-signed certificate exists now, for CertPrincipalName.
    let autodiscover = crate::autodiscover::service_from_config(config)?.map(Arc::new);
    for listener in &mut listeners {
        listener.access.autodiscover = autodiscover.clone();
    }
    let mut uses_demo = false;
    let endpoints = config
        .endpoints
        .iter()
        .map(|endpoint| {
            let backend = match &endpoint.backend {
                Backend::Demo => {
                    uses_demo = true;
                    BackendSpec::Demo
                }
                Backend::Remote(target) => BackendSpec::Tcp(crate::endpoint::Backend {
                    host: target.host.clone(),
                    port: target.port,
                }),
            };
            EndpointSpec {
                listen: endpoint.listen.clone(),
                backend,
                settings: EndpointSettings {
                    backend: crate::endpoint::Backend {
                        host: String::new(),
                        port: 0,
                    },
                    receive_window: endpoint.receive_window,
                    setup_timeout: endpoint.setup_timeout,
                    first_pdu_timeout: FIRST_PDU_TIMEOUT,
                    connect_timeout: proxy.connect_timeout,
                },
            }
        })
        .collect();
    Ok(GatewaySpec {
        in_process_endpoints: proxy.in_process_endpoints,
        proxy: settings,
        valid_ports: proxy.valid_ports.clone(),
        listeners,
        endpoints,
        demo: uses_demo.then_some(config.demo.listen),
        status: config.status.as_ref().map(|s| s.listen),
    })
}

fn init_logging(level: &str) {
    // RUST_LOG overrides the configured level, for one-off debugging.
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::env::var_os("NO_COLOR").is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}

/// Runs the gateway until Ctrl-C or SIGTERM; SIGHUP reloads the config file.
pub async fn run(path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = load_config(path.clone())?;
    init_logging(&config.log.level);
    info!(config = %config.source, state_dir = %config.state_dir.display(), "rpcgate {} starting", env!("CARGO_PKG_VERSION"));
    let spec = spec_from_config(&config)?;
    // Each client connection may pair with a server-side socket (and an endpoint's legs and
    // backend connection): ask for room for twice max_connections.
    let wanted = (config.proxy.max_connections as u64).saturating_mul(2);
    match crate::fd_limit::raise(wanted) {
        (limit, None) => info!(limit, "file descriptor limit"),
        (limit, Some(short)) => warn!(limit, "file descriptor limit: {short}"),
    }
    let mut gateway = start(spec).await?;
    let manager = Arc::new(Manager::new(
        Some(gateway.proxy.clone()),
        config.proxy.valid_ports.clone(),
        &config.state_dir,
        config.configurator.is_some(),
    ));
    let _ = gateway.status.configurator.set(manager.clone());
    let mut configurator = start_configurator(&manager, config.configurator.clone());
    info!(
        "rpcgate is running; try: rpcgate ping https://127.0.0.1:8443 -e localhost:6001 --insecure"
    );
    let terminate = async {
        #[cfg(unix)]
        {
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                term.recv().await;
                return;
            }
        }
        std::future::pending::<()>().await;
    };
    tokio::pin!(terminate);
    #[cfg(unix)]
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut current = config;
    loop {
        #[cfg(unix)]
        let reload = async {
            match hangup.as_mut() {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let reload = std::future::pending::<()>();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => { info!("interrupted; stopping"); break; }
            () = &mut terminate => { info!("terminated; stopping"); break; }
            () = gateway.wait() => { warn!("a listener task ended; stopping"); break; }
            () = reload => {
                if let Some(new) = reload_config(path.as_deref(), &current) {
                    manager.set_statics(new.proxy.valid_ports.clone(), new.configurator.is_some());
                    if new.configurator != current.configurator {
                        if let Some(task) = configurator.take() {
                            task.abort();
                        }
                        configurator = start_configurator(&manager, new.configurator.clone());
                    }
                    current = new;
                }
            }
        }
    }
    if let Some(task) = configurator {
        task.abort();
    }
    let channels = gateway
        .proxy
        .stats
        .channels_active
        .load(std::sync::atomic::Ordering::Relaxed);
    info!(channels, "closing every connection");
    if gateway.shutdown().await {
        info!("stopped");
    } else {
        warn!("stopped; some connections did not close in time");
    }
    Ok(())
}

/// Starts the configurator task when it is configured with a non-zero interval.
fn start_configurator(
    manager: &Arc<Manager>,
    config: Option<ConfiguratorConfig>,
) -> Option<tokio::task::JoinHandle<()>> {
    match config {
        Some(config) if !config.interval.is_zero() => Some(tokio::spawn(crate::configurator::run(
            manager.clone(),
            config,
        ))),
        Some(_) => {
            info!("configurator: interval 0, polling is off (the persisted list is served)");
            None
        }
        None => None,
    }
}

/// SIGHUP: the config file read again. A config that does not load is logged and `None`
/// returned (the old one stays). What can change without a restart: ValidPorts (static
/// entries) and `[configurator]`; the rest is logged as needing a restart.
fn reload_config(path: Option<&std::path::Path>, current: &Config) -> Option<Config> {
    let Some(path) = path else {
        info!("SIGHUP: running on the embedded default config, nothing to reload");
        return None;
    };
    match Config::load(path) {
        Ok(new) => {
            info!(config = %path.display(), "SIGHUP: config reloaded (ValidPorts and [configurator] applied)");
            let restart_needed = format!(
                "{:?}{:?}{:?}{:?}{:?}",
                new.proxy.listeners, new.endpoints, new.auth, new.demo, new.log
            ) != format!(
                "{:?}{:?}{:?}{:?}{:?}",
                current.proxy.listeners, current.endpoints, current.auth, current.demo, current.log
            );
            if restart_needed {
                warn!(
                    "SIGHUP: listeners, endpoints, [auth], [demo] or [log] changed too: those \
                     take effect at the next restart"
                );
            }
            Some(new)
        }
        Err(e) => {
            error!("SIGHUP: keeping the running config, the new one does not load: {e}");
            None
        }
    }
}

/// `rpcgate validports`: the effective allow-list (static entries and the persisted
/// directory list) with the origin of each entry.
pub fn print_valid_ports(path: Option<PathBuf>) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let manager = Manager::new(
        None,
        config.proxy.valid_ports.clone(),
        &config.state_dir,
        config.configurator.is_some(),
    );
    let valid_ports = manager.effective();
    if valid_ports.is_empty() {
        println!("ValidPorts is empty: the proxy refuses every target.");
        return Ok(());
    }
    println!("{:<40} {:<13} origin", "host", "ports");
    for entry in valid_ports.entries() {
        println!(
            "{:<40} {:<13} {}",
            entry.host(),
            entry.ports().to_string(),
            entry.origin()
        );
    }
    println!("\nas a registry value: {valid_ports}");
    Ok(())
}

/// `rpcgate configurator --once [--dry-run]`: polls the directory once and prints the diff
/// against the persisted list; without `--dry-run` the new list is persisted (a running
/// gateway serves it at its next start; its own poll applies it live).
pub async fn configurator_once(path: Option<PathBuf>, dry_run: bool) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let Some(settings) = config.configurator.clone() else {
        anyhow::bail!("{}: no [configurator] section", config.source);
    };
    let manager = Manager::new(
        None,
        config.proxy.valid_ports.clone(),
        &config.state_dir,
        true,
    );
    let servers = crate::configurator::ldap::poll(&settings)
        .await
        .map_err(|e| anyhow::anyhow!("the directory poll failed: {e}"))?;
    let now = std::time::SystemTime::now();
    let diff = if dry_run {
        manager.preview(&servers, &settings.ports, now)
    } else {
        manager.poll_result(Ok(servers.clone()), &settings.ports, now)
    };
    println!("{} servers in the directory", servers.len());
    for entry in &diff.added {
        println!("+ {entry}");
    }
    for entry in &diff.removed {
        println!("- {entry}");
    }
    if diff.is_empty() {
        println!("no change");
    }
    if dry_run {
        println!("(dry run: nothing written)");
    }
    Ok(())
}
