//! rpcgate's one configuration file (TOML): its typed form, its defaults, and its validation.
//!
//! [`Config::load`] reads a file, [`Config::from_toml_str`] parses text, and
//! [`Config::embedded_default`] parses the embedded default ([`EMBEDDED_DEFAULT`], the file
//! `default.toml` next to this one, which doubles as the commented example) through the same
//! code. Reading happens in two steps: serde reads the file into the schema in
//! `schema` (unknown keys rejected), then this module applies defaults, checks ranges and
//! cross-field rules, and builds the typed [`Config`]. Every error names the file, the line
//! and column when known, the key path (`proxy.listener[1].tls`) and what was expected.

mod auth;
mod client;
mod configurator;
mod schema;

pub use auth::ListenerAuthConfig;
pub use client::ClientConfig;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::ops::{Range, RangeInclusive};
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;

use crate::http::classify::{Target, parse_target};
use crate::valid_ports::{Entry, Origin, ValidPorts};

/// The embedded default configuration text.
pub const EMBEDDED_DEFAULT: &str = include_str!("default.toml");
/// The source name of the embedded default in errors and logs.
pub const EMBEDDED_DEFAULT_NAME: &str = "embedded default config";
/// The origin recorded on ValidPorts entries written in the config.
pub const VALID_PORTS_SOURCE: &str = "config file";

/// Default log filter.
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// Default receive window of the proxy roles and of endpoints (Windows' default, 64 KiB).
pub const DEFAULT_RECEIVE_WINDOW: u32 = 65_536;
/// Accepted receive windows (Windows: 8 KiB to 1 GiB, notes §8.1).
pub const RECEIVE_WINDOW_RANGE: RangeInclusive<u64> = 8_192..=1_073_741_824;
/// Default ConnectionTimeout announced in CONN/A3 and CONN/B2 (captures show 120 s).
pub const DEFAULT_CONNECTION_TIMEOUT_SECS: u64 = 120;
/// Accepted ConnectionTimeout (MS-RPCH: 120 s to 4 h, as `MinConnTimeout`).
pub const CONNECTION_TIMEOUT_SECS_RANGE: RangeInclusive<u64> = 120..=14_400;
/// Default OUT channel Content-Length (1 GiB, Windows' DefaultChannelLifetime).
pub const DEFAULT_OUT_CHANNEL_LIFETIME: u32 = 1_073_741_824;
/// Accepted OUT channel Content-Length (MS-RPCH: 128 KiB to 2 GiB).
pub const OUT_CHANNEL_LIFETIME_RANGE: RangeInclusive<u64> = 131_072..=2_147_483_648;
/// Default timeout of one TCP connection attempt to a backend address.
pub const DEFAULT_CONNECT_TIMEOUT_MS: u64 = 2_000;
/// Accepted connect timeouts.
pub const CONNECT_TIMEOUT_MS_RANGE: RangeInclusive<u64> = 10..=60_000;
/// Default time allowed from accept to an established channel.
pub const DEFAULT_HANDSHAKE_TIMEOUT_SECS: u64 = 30;
/// Accepted handshake timeouts.
pub const HANDSHAKE_TIMEOUT_SECS_RANGE: RangeInclusive<u64> = 1..=600;
/// Default time a connection may carry no traffic at all.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 900;
/// Accepted idle timeouts.
pub const IDLE_TIMEOUT_SECS_RANGE: RangeInclusive<u64> = 10..=86_400;
/// Default limit of open client connections.
pub const DEFAULT_MAX_CONNECTIONS: u64 = 20_000;
/// Accepted connection limits.
pub const MAX_CONNECTIONS_RANGE: RangeInclusive<u64> = 1..=1_000_000;
/// Default wait of an endpoint for the second leg of a virtual connection.
pub const DEFAULT_SETUP_TIMEOUT_SECS: u64 = 60;
/// Accepted setup timeouts (up to the spec's 15 minutes).
pub const SETUP_TIMEOUT_SECS_RANGE: RangeInclusive<u64> = 1..=900;
/// Default address of the demo service: loopback, any free port.
pub const DEFAULT_DEMO_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0));

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from (a file path or [`EMBEDDED_DEFAULT_NAME`]).
    pub source: String,
    /// `state_dir`: where generated state lives (the self-signed certificate). Default:
    /// `$RPCGATE_STATE_DIR`, else `$XDG_STATE_HOME/rpcgate`, else `~/.local/state/rpcgate`,
    /// else `./rpcgate-state`. Relative paths are relative to the working directory.
    pub state_dir: PathBuf,
    /// `[log]`
    pub log: LogConfig,
    /// `[proxy]`: the RPC over HTTP proxy. It runs if it has at least one listener.
    pub proxy: ProxyConfig,
    /// `[[endpoint]]`: ncacn_http endpoints, each bridging to one backend.
    pub endpoints: Vec<EndpointConfig>,
    /// `[demo]`: the built-in demo DCE/RPC service.
    pub demo: DemoConfig,
    /// `[status]`: the status page and Prometheus metrics; `None` without the section.
    pub status: Option<StatusConfig>,
    /// `[auth]`: how the proxy verifies credentials (server-facing; listeners pick methods).
    pub auth: crate::auth::AuthSettings,
    /// `[client]`: what clients will be told (client-facing, for Autodiscover).
    pub client: ClientConfig,
    /// `[autodiscover]`: Autodiscover is answered when the section is present.
    pub autodiscover: Option<crate::autodiscover::AutodiscoverConfig>,
    /// `[configurator]`: ValidPorts entries read from the directory; `None` without the
    /// section.
    pub configurator: Option<crate::configurator::ConfiguratorConfig>,
}

/// `[log]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `level`: a tracing `EnvFilter` directive string such as `info` or
    /// `info,rpcgate::proxy=debug` (checked at load time). Default `info`.
    pub level: String,
}

/// `[proxy]`: the server-facing settings of the RPC over HTTP proxy.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// `valid_ports` (Windows syntax) and `[[proxy.valid_port]]` entries (`host`, `ports` as
    /// `"6001-6002"` or `6004`), merged in that order. Empty (the default) allows nothing.
    pub valid_ports: ValidPorts,
    /// `receive_window`: bytes, the inbound and outbound proxy receive windows announced to
    /// peers. 8 KiB..=1 GiB, default 64 KiB.
    pub receive_window: u32,
    /// `connection_timeout_secs`: the ConnectionTimeout sent in CONN/A3 and CONN/B2, after
    /// which peers expect traffic or a ping. 120..=14400 s, default 120 s.
    pub connection_timeout: Duration,
    /// `out_channel_lifetime`: the Content-Length of the OUT channel response, the number of
    /// bytes after which the channel must be recycled. 128 KiB..=2 GiB, default 1 GiB.
    pub out_channel_lifetime: u32,
    /// `connect_timeout_ms`: timeout of one TCP connection attempt to one backend address
    /// (every address of a name is tried, happy eyeballs). 10..=60000 ms, default 2000 ms.
    pub connect_timeout: Duration,
    /// `handshake_timeout_secs`: the time a client gets from accept to an established
    /// channel (request head, authentication, first RTS PDU, CONN stages). 1..=600 s,
    /// default 30 s.
    pub handshake_timeout: Duration,
    /// `idle_timeout_secs`: a channel that carries no traffic at all (not even pings) for
    /// this long is closed. 10..=86400 s, default 900 s.
    pub idle_timeout: Duration,
    /// `max_connections`: open client connections (TCP) at most. 1..=1000000, default 20000.
    pub max_connections: usize,
    /// `in_process_endpoints` (default true): a channel whose target is an endpoint of this
    /// same process reaches it over an in-memory pipe instead of loopback TCP (ValidPorts
    /// applies exactly as before). `false` forces TCP, for comparison or debugging.
    pub in_process_endpoints: bool,
    /// `[[proxy.listener]]`: where the proxy accepts clients. None: the proxy does not run.
    pub listeners: Vec<ListenerConfig>,
}

impl ProxyConfig {
    /// [`ProxyConfig::connection_timeout`] in milliseconds, as CONN/A3 and CONN/B2 carry it.
    pub fn connection_timeout_ms(&self) -> u32 {
        u32::try_from(self.connection_timeout.as_millis()).unwrap_or(u32::MAX)
    }
}

/// `[[proxy.listener]]`: one address the proxy accepts clients on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerConfig {
    /// `address`: IP address and port (no names), e.g. `"0.0.0.0:443"` or `"[::]:443"`.
    pub address: SocketAddr,
    /// `tls` (default true), `cert` and `key` (PEM files, both or neither).
    pub tls: ListenerTls,
    /// `allow_anonymous` (default false): accept unauthenticated clients (and plain HTTP) on a
    /// non-loopback address, as Windows' AllowAnonymous.
    pub allow_anonymous: bool,
    /// `auth` (methods in challenge order, and whether `"anonymous"` is accepted) and
    /// `trusted_proxies` (TLS-offloading load balancers).
    pub auth: ListenerAuthConfig,
}

impl ListenerConfig {
    /// Whether the listener is on a loopback address.
    pub fn is_loopback(&self) -> bool {
        Config::listener_is_loopback(&self.address)
    }

    /// Whether unauthenticated clients are accepted here.
    pub fn anonymous_allowed(&self) -> bool {
        self.auth.anonymous
    }
}

/// How a listener does TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerTls {
    /// `tls = false`: plain HTTP (loopback only).
    Plain,
    /// `tls = true` without `cert`/`key`: a self-signed pair generated in `state_dir`.
    SelfSigned,
    /// `tls = true` with `cert` and `key` PEM files.
    Files {
        /// Certificate chain, PEM.
        cert: PathBuf,
        /// Private key, PEM.
        key: PathBuf,
    },
}

/// `[[endpoint]]`: one ncacn_http endpoint (the server role of MS-RPCH).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// `listen`: one address or a list (IP literals and ports), where proxies connect.
    pub listen: Vec<SocketAddr>,
    /// `backend`: `"demo"` or the `host:port` of an ncacn_ip_tcp DCE/RPC server.
    pub backend: Backend,
    /// `receive_window`: bytes, the server receive window announced on the IN leg.
    /// 8 KiB..=1 GiB, default 64 KiB.
    pub receive_window: u32,
    /// `setup_timeout_secs`: how long one leg of a virtual connection waits for the other.
    /// 1..=900 s, default 60 s.
    pub setup_timeout: Duration,
}

/// Where an endpoint bridges to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The built-in demo service.
    Demo,
    /// A DCE/RPC server over TCP; every address of the name is tried.
    Remote(Target),
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Demo => f.write_str("demo"),
            Self::Remote(target) => target.fmt(f),
        }
    }
}

/// `[demo]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoConfig {
    /// `listen`: the demo service's own ncacn_ip_tcp address. Default `127.0.0.1:0` (any
    /// free port; endpoints with `backend = "demo"` find it without the network).
    pub listen: SocketAddr,
}

/// `[status]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusConfig {
    /// `listen`: the address of the status page (`/`), `/metrics` and `/status.json`. A
    /// non-loopback address needs `allow_remote = true`: the page names users and client
    /// addresses, and has no authentication of its own.
    pub listen: SocketAddr,
}

/// A position in a config file (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    /// Line number.
    pub line: usize,
    /// Column, in characters.
    pub column: usize,
}

/// Why a configuration could not be loaded. The administrator is at fault; the message says
/// where and what was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read (missing, unreadable, not UTF-8).
    #[error("cannot read config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML, an unknown key, or a value of the wrong type or shape.
    #[error("{source_name}{}: {}{message}", at(location), key_prefix(key.as_deref()))]
    Syntax {
        /// The file (or [`EMBEDDED_DEFAULT_NAME`]).
        source_name: String,
        /// Where, if known.
        location: Option<Location>,
        /// The key path, e.g. `proxy.listener[0].tls`, when it could be determined.
        key: Option<String>,
        /// What is wrong and what was expected.
        message: String,
    },
    /// Well-formed, but a value is out of range or contradicts another.
    #[error("{source_name}{}: {key}: {message}", at(location))]
    Invalid {
        /// The file (or [`EMBEDDED_DEFAULT_NAME`]).
        source_name: String,
        /// Where, if known.
        location: Option<Location>,
        /// The key path, e.g. `proxy.receive_window`.
        key: String,
        /// What is wrong and what was expected.
        message: String,
    },
}

fn at(location: &Option<Location>) -> String {
    location
        .map(|l| format!(": line {}, column {}", l.line, l.column))
        .unwrap_or_default()
}

fn key_prefix(key: Option<&str>) -> String {
    key.map(|k| format!("{k}: ")).unwrap_or_default()
}

impl Config {
    /// Reads and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// Parses and validates config text; `source_name` names it in errors.
    pub fn from_toml_str(text: &str, source_name: &str) -> Result<Config, ConfigError> {
        Self::from_toml_str_with_env(text, source_name, &|name| std::env::var_os(name))
    }

    /// The embedded default ([`EMBEDDED_DEFAULT`]).
    pub fn embedded_default() -> Result<Config, ConfigError> {
        Self::from_toml_str(EMBEDDED_DEFAULT, EMBEDDED_DEFAULT_NAME)
    }

    /// Whether a listening address is loopback (`127.0.0.0/8`, `::1`, or IPv4-mapped
    /// loopback). Unspecified addresses (`0.0.0.0`, `::`) are not: they accept the network.
    pub fn listener_is_loopback(address: &SocketAddr) -> bool {
        address.ip().to_canonical().is_loopback()
    }

    fn from_toml_str_with_env(
        text: &str,
        source_name: &str,
        env: &dyn Fn(&str) -> Option<OsString>,
    ) -> Result<Config, ConfigError> {
        let file: schema::File =
            toml::from_str(text).map_err(|e| syntax_error(text, source_name, &e))?;
        let ctx = Ctx { text, source_name };
        let state_dir = match &file.state_dir {
            Some(dir) if dir.get_ref().as_os_str().is_empty() => {
                return Err(ctx.invalid("state_dir", dir.span(), "must not be empty"));
            }
            Some(dir) => dir.get_ref().clone(),
            None => default_state_dir_with(env),
        };
        let auth = ctx.auth(&file.auth, &state_dir)?;
        let client = ctx.client(&file.client)?;
        let autodiscover = file
            .autodiscover
            .as_ref()
            .map(|a| ctx.autodiscover(a, &client))
            .transpose()?;
        let configurator = file
            .configurator
            .as_ref()
            .map(|c| ctx.configurator(c))
            .transpose()?;
        let config = Config {
            source: source_name.to_owned(),
            auth,
            client,
            autodiscover,
            configurator,
            state_dir,
            log: ctx.log(&file.log)?,
            proxy: ctx.proxy(&file.proxy)?,
            endpoints: file
                .endpoint
                .iter()
                .enumerate()
                .map(|(index, endpoint)| ctx.endpoint(index, endpoint))
                .collect::<Result<_, _>>()?,
            demo: DemoConfig {
                listen: file
                    .demo
                    .listen
                    .as_ref()
                    .map_or(DEFAULT_DEMO_LISTEN, |l| l.get_ref().0),
            },
            status: file.status.as_ref().map(|s| ctx.status(s)).transpose()?,
        };
        ctx.cross_checks(&config, &file)?;
        Ok(config)
    }
}

/// The default state directory from the process environment (see [`Config::state_dir`]).
pub fn default_state_dir() -> PathBuf {
    default_state_dir_with(&|name| std::env::var_os(name))
}

fn default_state_dir_with(env: &dyn Fn(&str) -> Option<OsString>) -> PathBuf {
    let var = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(dir) = var("RPCGATE_STATE_DIR") {
        return dir;
    }
    // The XDG base directory spec says to ignore a relative XDG_STATE_HOME.
    if let Some(dir) = var("XDG_STATE_HOME").filter(|d| d.is_absolute()) {
        return dir.join("rpcgate");
    }
    if let Some(home) = var("HOME") {
        return home.join(".local/state/rpcgate");
    }
    PathBuf::from("rpcgate-state")
}

/// The text being validated, for error locations.
struct Ctx<'a> {
    text: &'a str,
    source_name: &'a str,
}

impl Ctx<'_> {
    fn status(&self, status: &schema::Status) -> Result<StatusConfig, ConfigError> {
        let listen = status.listen.get_ref().0;
        if !Config::listener_is_loopback(&listen) && status.allow_remote != Some(true) {
            return Err(self.invalid(
                "status.listen",
                status.listen.span(),
                format!(
                    "{listen} is not a loopback address: the status page names users and client \
                     addresses and has no authentication; set allow_remote = true to serve it there"
                ),
            ));
        }
        Ok(StatusConfig { listen })
    }

    fn invalid(&self, key: &str, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            source_name: self.source_name.to_owned(),
            location: location(self.text, span.start),
            key: key.to_owned(),
            message: message.into(),
        }
    }

    fn invalid_nowhere(&self, key: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            source_name: self.source_name.to_owned(),
            location: None,
            key: key.to_owned(),
            message: message.into(),
        }
    }

    /// An optional number with a default and an accepted range.
    fn ranged(
        &self,
        key: &str,
        value: &Option<Spanned<schema::Count>>,
        default: u64,
        range: RangeInclusive<u64>,
    ) -> Result<u64, ConfigError> {
        let Some(value) = value else {
            return Ok(default);
        };
        let number = value.get_ref().0;
        if range.contains(&number) {
            Ok(number)
        } else {
            Err(self.invalid(
                key,
                value.span(),
                format!(
                    "{number} is out of range: expected {}..={} (default {default})",
                    range.start(),
                    range.end()
                ),
            ))
        }
    }

    fn ranged_u32(
        &self,
        key: &str,
        value: &Option<Spanned<schema::Count>>,
        default: u32,
        range: RangeInclusive<u64>,
    ) -> Result<u32, ConfigError> {
        let number = self.ranged(key, value, u64::from(default), range)?;
        // Every u32 setting's range ends below u32::MAX, so this cannot fail; say so anyway.
        u32::try_from(number).map_err(|_| self.invalid_nowhere(key, "does not fit in 32 bits"))
    }

    fn log(&self, log: &schema::Log) -> Result<LogConfig, ConfigError> {
        let Some(level) = &log.level else {
            return Ok(LogConfig {
                level: DEFAULT_LOG_LEVEL.to_owned(),
            });
        };
        tracing_subscriber::EnvFilter::try_new(level.get_ref()).map_err(|e| {
            self.invalid(
                "log.level",
                level.span(),
                format!(
                    "{e}: expected a tracing filter such as \"info\" or \"warn,rpcgate=debug\""
                ),
            )
        })?;
        Ok(LogConfig {
            level: level.get_ref().clone(),
        })
    }

    fn proxy(&self, proxy: &schema::Proxy) -> Result<ProxyConfig, ConfigError> {
        let origin = Origin::Static {
            source: VALID_PORTS_SOURCE.to_owned(),
        };
        let mut valid_ports = ValidPorts::new();
        if let Some(text) = &proxy.valid_ports {
            valid_ports = ValidPorts::parse(text.get_ref(), &origin)
                .map_err(|e| self.invalid("proxy.valid_ports", text.span(), e.to_string()))?;
        }
        for (index, entry) in proxy.valid_port.iter().enumerate() {
            let built =
                Entry::new(entry.host.get_ref(), entry.ports, origin.clone()).map_err(|e| {
                    self.invalid(
                        &format!("proxy.valid_port[{index}].host"),
                        entry.host.span(),
                        e.to_string(),
                    )
                })?;
            valid_ports.push(built);
        }
        let secs = |key: &str, value, default, range| {
            self.ranged(&format!("proxy.{key}"), value, default, range)
                .map(Duration::from_secs)
        };
        Ok(ProxyConfig {
            valid_ports,
            receive_window: self.ranged_u32(
                "proxy.receive_window",
                &proxy.receive_window,
                DEFAULT_RECEIVE_WINDOW,
                RECEIVE_WINDOW_RANGE,
            )?,
            connection_timeout: secs(
                "connection_timeout_secs",
                &proxy.connection_timeout_secs,
                DEFAULT_CONNECTION_TIMEOUT_SECS,
                CONNECTION_TIMEOUT_SECS_RANGE,
            )?,
            out_channel_lifetime: self.ranged_u32(
                "proxy.out_channel_lifetime",
                &proxy.out_channel_lifetime,
                DEFAULT_OUT_CHANNEL_LIFETIME,
                OUT_CHANNEL_LIFETIME_RANGE,
            )?,
            connect_timeout: Duration::from_millis(self.ranged(
                "proxy.connect_timeout_ms",
                &proxy.connect_timeout_ms,
                DEFAULT_CONNECT_TIMEOUT_MS,
                CONNECT_TIMEOUT_MS_RANGE,
            )?),
            handshake_timeout: secs(
                "handshake_timeout_secs",
                &proxy.handshake_timeout_secs,
                DEFAULT_HANDSHAKE_TIMEOUT_SECS,
                HANDSHAKE_TIMEOUT_SECS_RANGE,
            )?,
            idle_timeout: secs(
                "idle_timeout_secs",
                &proxy.idle_timeout_secs,
                DEFAULT_IDLE_TIMEOUT_SECS,
                IDLE_TIMEOUT_SECS_RANGE,
            )?,
            max_connections: usize::try_from(self.ranged(
                "proxy.max_connections",
                &proxy.max_connections,
                DEFAULT_MAX_CONNECTIONS,
                MAX_CONNECTIONS_RANGE,
            )?)
            .unwrap_or(usize::MAX),
            in_process_endpoints: proxy.in_process_endpoints.unwrap_or(true),
            listeners: proxy
                .listener
                .iter()
                .enumerate()
                .map(|(index, listener)| self.listener(index, listener))
                .collect::<Result<_, _>>()?,
        })
    }

    fn listener(
        &self,
        index: usize,
        raw: &schema::Listener,
    ) -> Result<ListenerConfig, ConfigError> {
        let key = |name: &str| format!("proxy.listener[{index}].{name}");
        let address = raw.address.get_ref().0;
        let tls_on = raw.tls.as_ref().is_none_or(|t| *t.get_ref());
        let tls = match (tls_on, &raw.cert, &raw.key) {
            (true, None, None) => ListenerTls::SelfSigned,
            (true, Some(cert), Some(key_file)) => ListenerTls::Files {
                cert: cert.get_ref().clone(),
                key: key_file.get_ref().clone(),
            },
            (true, Some(cert), None) => {
                return Err(self.invalid(
                    &key("cert"),
                    cert.span(),
                    "cert is given without key: give both PEM files, or neither for a \
                     self-signed certificate",
                ));
            }
            (true, None, Some(key_file)) => {
                return Err(self.invalid(
                    &key("key"),
                    key_file.span(),
                    "key is given without cert: give both PEM files, or neither for a \
                     self-signed certificate",
                ));
            }
            (false, cert, key_file) => {
                if let Some(file) = cert.as_ref().or(key_file.as_ref()) {
                    return Err(self.invalid(
                        &key(if cert.is_some() { "cert" } else { "key" }),
                        file.span(),
                        "cert/key given but tls = false: remove them or set tls = true",
                    ));
                }
                ListenerTls::Plain
            }
        };
        let loopback = Config::listener_is_loopback(&address);
        let allow_anonymous = raw.allow_anonymous.as_ref().is_some_and(|a| *a.get_ref());
        let auth = self.listener_auth(index, raw, loopback, tls != ListenerTls::Plain)?;
        Ok(ListenerConfig {
            address,
            tls,
            allow_anonymous,
            auth,
        })
    }

    fn endpoint(
        &self,
        index: usize,
        raw: &schema::Endpoint,
    ) -> Result<EndpointConfig, ConfigError> {
        let key = |name: &str| format!("endpoint[{index}].{name}");
        let listen = raw.listen.get_ref().0.clone();
        if listen.is_empty() {
            return Err(self.invalid(
                &key("listen"),
                raw.listen.span(),
                "expected at least one address",
            ));
        }
        let backend_text = raw.backend.get_ref().trim();
        let backend = if backend_text == "demo" {
            Backend::Demo
        } else {
            Backend::Remote(parse_target(backend_text).map_err(|e| {
                self.invalid(
                    &key("backend"),
                    raw.backend.span(),
                    format!("{e}: expected \"demo\" or the host:port of a DCE/RPC server over TCP"),
                )
            })?)
        };
        Ok(EndpointConfig {
            listen,
            backend,
            receive_window: self.ranged_u32(
                &key("receive_window"),
                &raw.receive_window,
                DEFAULT_RECEIVE_WINDOW,
                RECEIVE_WINDOW_RANGE,
            )?,
            setup_timeout: Duration::from_secs(self.ranged(
                &key("setup_timeout_secs"),
                &raw.setup_timeout_secs,
                DEFAULT_SETUP_TIMEOUT_SECS,
                SETUP_TIMEOUT_SECS_RANGE,
            )?),
        })
    }

    fn cross_checks(&self, config: &Config, file: &schema::File) -> Result<(), ConfigError> {
        if config.proxy.listeners.is_empty() && config.endpoints.is_empty() {
            return Err(self.invalid_nowhere(
                "proxy.listener, endpoint",
                "nothing to run: configure at least one [[proxy.listener]] or [[endpoint]]",
            ));
        }
        // Two listeners on one address would fail at bind time with a vaguer message.
        let mut seen: HashMap<SocketAddr, String> = HashMap::new();
        let mut claim = |address: SocketAddr, key: String, span: Range<usize>| {
            if address.port() == 0 {
                return Ok(());
            }
            match seen.get(&address) {
                Some(first) => {
                    Err(self.invalid(&key, span, format!("{address} is already used by {first}")))
                }
                None => {
                    seen.insert(address, key);
                    Ok(())
                }
            }
        };
        for (index, listener) in file.proxy.listener.iter().enumerate() {
            claim(
                listener.address.get_ref().0,
                format!("proxy.listener[{index}].address"),
                listener.address.span(),
            )?;
        }
        for (index, endpoint) in file.endpoint.iter().enumerate() {
            for address in &endpoint.listen.get_ref().0 {
                claim(
                    *address,
                    format!("endpoint[{index}].listen"),
                    endpoint.listen.span(),
                )?;
            }
        }
        if let Some(listen) = &file.demo.listen {
            claim(listen.get_ref().0, "demo.listen".to_owned(), listen.span())?;
        }
        if let Some(status) = &file.status {
            claim(
                status.listen.get_ref().0,
                "status.listen".to_owned(),
                status.listen.span(),
            )?;
        }
        Ok(())
    }
}

/// Line and column of a byte offset.
fn location(text: &str, offset: usize) -> Option<Location> {
    let before = text.get(..offset)?;
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..)?.chars().count() + 1;
    Some(Location { line, column })
}

fn syntax_error(text: &str, source_name: &str, error: &toml::de::Error) -> ConfigError {
    let offset = error.span().map(|s| s.start);
    ConfigError::Syntax {
        source_name: source_name.to_owned(),
        location: offset.and_then(|o| location(text, o)),
        key: offset.and_then(|o| key_path_at(text, o)),
        message: error.message().trim().replace('\n', "; "),
    }
}

/// The key path at a byte offset, for errors from the TOML reader, which knows the position
/// but not the path: the last table header before the offset (with the index of an array of
/// tables), then the key of the nearest `key = ` line since that header. A heuristic for
/// messages only; multi-line strings containing headers can mislead it.
fn key_path_at(text: &str, offset: usize) -> Option<String> {
    let line_end = text
        .get(offset..)?
        .find('\n')
        .map_or(text.len(), |i| offset + i);
    let mut table: Option<String> = None;
    let mut key: Option<String> = None;
    let mut array_counts: HashMap<String, usize> = HashMap::new();
    for line in text.get(..line_end)?.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("[[") {
            let name = rest
                .split("]]")
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            let count = array_counts.entry(name.clone()).or_insert(0);
            table = Some(format!("{name}[{count}]"));
            *count += 1;
            key = None;
        } else if let Some(rest) = line.strip_prefix('[') {
            table = Some(rest.split(']').next().unwrap_or_default().trim().to_owned());
            key = None;
        } else if let Some((name, _)) = line.split_once('=')
            && !line.starts_with('#')
        {
            key = Some(name.trim().trim_matches('"').to_owned());
        }
    }
    match (table, key) {
        (Some(table), Some(key)) => Some(format!("{table}.{key}")),
        (table, key) => table.or(key),
    }
}

#[cfg(test)]
mod tests;
