//! Autodiscover: rpcgate answers Outlook's `POST /autodiscover/autodiscover.xml` (MS-OXDSCLI,
//! the "POX" Outlook request and the 2006a response) on its proxy listeners, behind their
//! authentication, from its own `[client]` settings (EXPR: the external host name, SSL, the
//! client-facing auth package, the certificate principal) and from where the user's RPC
//! server is (EXCH: a static map, the directory, or a default), and answers users of other
//! domains with an address redirect. It never makes a request whose target comes from the
//! request: the only outbound connection is the configured directory, and the requested
//! address is only ever a search value (LDAP-escaped), never a host, URL or path. Bodies are
//! bounded ([`MAX_BODY`]), DTDs and entities refused ([`xml`]).
//!
//! ```text
//!  body ─ request::parse ─ decide ─┬─ answer now (600/601, 500, redirect by domain)
//!                                  └─ Service::lookup (static map, directory, default)
//!                                       ─ conclude ─ response::render
//! ```
//!
//! [`decide`] and [`conclude`] are pure; [`Service`] adds the lookup and the clock. The proxy
//! connection calls [`conn::serve`]; `rpcgate autodiscover` ([`cli`]) calls
//! [`Service::answer_address`];
//! `rpcgate ping --autodiscover` uses [`client`].

pub mod cert;
pub mod cli;
pub mod client;
pub mod conn;
pub mod directory;
pub mod request;
pub mod response;
pub mod xml;

use std::time::{Duration, SystemTime};

use tracing::warn;

use crate::auth::Method;
pub use directory::{DirectoryConfig, Entry, Lookup};
pub use response::Stamp;

/// The request path (compared case-insensitively, as IIS does).
pub const PATH: &str = "/autodiscover/autodiscover.xml";
/// The largest request body read; a longer one is refused without being read.
pub const MAX_BODY: u64 = 64 * 1024;

/// Whether `path` is the Autodiscover path.
pub fn is_autodiscover_path(path: &str) -> bool {
    path.eq_ignore_ascii_case(PATH)
}

/// Autodiscover error codes (MS-OXDSCLI 2.2.4.1.1.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 500: no configuration for this address (unknown user, domain not served).
    NotFound,
    /// 600: the request is not a valid Outlook request.
    InvalidRequest,
    /// 601: the response schema asked for is not provided.
    ProviderUnavailable,
    /// 602: the address is known but cannot be configured (no RPC server, ambiguous).
    BadAddress,
    /// 603: the directory could not be asked.
    InternalError,
}

impl ErrorCode {
    /// The number in `ErrorCode`.
    pub fn number(self) -> u16 {
        match self {
            Self::NotFound => 500,
            Self::InvalidRequest => 600,
            Self::ProviderUnavailable => 601,
            Self::BadAddress => 602,
            Self::InternalError => 603,
        }
    }

    /// The text in `Message`.
    pub fn message(self) -> &'static str {
        match self {
            Self::NotFound => "The e-mail address cannot be found.",
            Self::InvalidRequest => "Invalid Request",
            Self::ProviderUnavailable => "Provider is not available",
            Self::BadAddress => "Bad Address",
            Self::InternalError => "Internal Server Error",
        }
    }

    /// Whether the error goes inside the Outlook (2006a) response: the errors about an
    /// address. Errors about the request itself use the 2006 namespace only.
    pub fn in_outlook_schema(self) -> bool {
        !matches!(self, Self::InvalidRequest | Self::ProviderUnavailable)
    }
}

/// `[autodiscover]`, validated: whom Autodiscover answers and where their RPC server is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AutodiscoverConfig {
    /// `domains`: the e-mail domains answered, lower case; empty answers every domain.
    pub domains: Vec<String>,
    /// `server`: the EXCH server of users with no other (no directory, or no value there).
    pub server: Option<String>,
    /// `users`: address (lower case) to EXCH server, consulted before the directory.
    pub users: Vec<(String, String)>,
    /// `redirect_domains`: domain (lower case) to domain; an address in the first gets a
    /// `redirectAddr` to the same local part in the second.
    pub redirect_domains: Vec<(String, String)>,
    /// `[autodiscover.ldap]`: the directory lookup.
    pub ldap: Option<DirectoryConfig>,
}

/// Everything an answer depends on besides the request: `[client]` and `[autodiscover]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// EXPR `Server`: `client.external_host`.
    pub external_host: String,
    /// EXPR `SSL`: `client.ssl`.
    pub ssl: bool,
    /// EXPR `AuthPackage`: `client.auth_package`.
    pub auth_package: Method,
    /// EXPR `CertPrincipalName` (`msstd:name` or `None`); `None` leaves the element out.
    pub cert_principal_name: Option<String>,
    /// `[autodiscover]`.
    pub service: AutodiscoverConfig,
}

/// What the request's headers say, beyond its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Facts {
    /// `X-ClientCanHandle` lists `Negotiate`: Exchange tells only such clients to use it.
    pub client_can_handle_negotiate: bool,
}

impl Facts {
    /// From the values of every `X-ClientCanHandle` header (comma-separated capabilities).
    pub fn from_client_can_handle<'a>(values: impl IntoIterator<Item = &'a str>) -> Self {
        Self {
            client_can_handle_negotiate: values
                .into_iter()
                .flat_map(|v| v.split(','))
                .any(|c| c.trim().eq_ignore_ascii_case("Negotiate")),
        }
    }
}

/// The EXPR protocol block as it will be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expr {
    pub server: String,
    pub ssl: bool,
    /// `Basic`, `Ntlm` or `Negotiate`, spelt as Exchange does.
    pub auth_package: &'static str,
    pub cert_principal_name: Option<String>,
}

impl Settings {
    /// The EXPR block for a client with these `facts`. `negotiate` is offered only to clients
    /// that say they can handle it; the others are told `Ntlm`, as Exchange does.
    pub fn expr(&self, facts: &Facts) -> Expr {
        let auth_package = match self.auth_package {
            Method::Basic => "Basic",
            Method::Ntlm => "Ntlm",
            Method::Negotiate if facts.client_can_handle_negotiate => "Negotiate",
            Method::Negotiate => "Ntlm",
        };
        Expr {
            server: self.external_host.clone(),
            ssl: self.ssl,
            auth_package,
            cert_principal_name: self.cert_principal_name.clone(),
        }
    }
}

/// A user's settings (the `User` element and the EXCH server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSettings {
    pub display_name: String,
    pub smtp_address: String,
    pub legacy_dn: Option<String>,
    pub exch_server: String,
}

/// What the answer says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Settings for the user.
    Settings(UserSettings),
    /// `redirectAddr`: ask again for this address.
    Redirect(String),
    /// An error response.
    Error(ErrorCode),
}

/// An outcome with the reason behind it, for the log (never sent: `DebugData` stays empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decided {
    pub outcome: Outcome,
    pub reason: String,
}

fn decided(outcome: Outcome, reason: impl Into<String>) -> Decided {
    Decided {
        outcome,
        reason: reason.into(),
    }
}

/// From the request body to an answer (`Err`) or to the address to look up (`Ok`).
pub fn decide(body: &[u8], config: &AutodiscoverConfig) -> Result<String, Decided> {
    let request = request::parse(body)
        .map_err(|e| decided(Outcome::Error(e.code()), format!("request refused: {e}")))?;
    let Some(address) = request.email else {
        return Err(decided(
            Outcome::Error(ErrorCode::NotFound),
            "LegacyDN-only requests are not resolved",
        ));
    };
    route(&address, config)
}

/// The domain checks for an address: redirected domain, domain not served, or look it up.
pub fn route(address: &str, config: &AutodiscoverConfig) -> Result<String, Decided> {
    let (local, domain) = address.rsplit_once('@').unwrap_or((address, ""));
    let domain = domain.to_ascii_lowercase();
    if let Some((_, to)) = config
        .redirect_domains
        .iter()
        .find(|(from, _)| *from == domain)
    {
        let target = format!("{local}@{to}");
        return Err(decided(
            Outcome::Redirect(target.clone()),
            format!("domain {domain} is redirected: {target}"),
        ));
    }
    if !config.domains.is_empty() && !config.domains.contains(&domain) {
        return Err(decided(
            Outcome::Error(ErrorCode::NotFound),
            format!("domain {domain} is not served (autodiscover.domains)"),
        ));
    }
    Ok(address.to_owned())
}

/// From a lookup's result to the answer.
pub fn conclude(address: &str, lookup: Lookup, config: &AutodiscoverConfig) -> Decided {
    let entry = match lookup {
        Lookup::Found(entry) => entry,
        Lookup::NotFound => {
            return decided(Outcome::Error(ErrorCode::NotFound), "no such user");
        }
        Lookup::Ambiguous(n) => {
            return decided(
                Outcome::Error(ErrorCode::BadAddress),
                format!("{n} directory entries carry this address"),
            );
        }
        Lookup::Unavailable(why) => {
            return decided(
                Outcome::Error(ErrorCode::InternalError),
                format!("directory unavailable: {why}"),
            );
        }
    };
    if let Some(target) = &entry.redirect {
        let domain = target
            .rsplit_once('@')
            .map(|(_, d)| d.to_ascii_lowercase())
            .unwrap_or_default();
        let elsewhere = if config.domains.is_empty() {
            !target.eq_ignore_ascii_case(address)
        } else {
            !config.domains.contains(&domain)
        };
        if elsewhere && request::check_address(target).is_ok() {
            return decided(
                Outcome::Redirect(target.clone()),
                format!("the user's mailbox is in another domain: {target}"),
            );
        }
    }
    let Some(server) = entry.server.clone().or_else(|| config.server.clone()) else {
        return decided(
            Outcome::Error(ErrorCode::BadAddress),
            "the user has no RPC server (no directory value and no autodiscover.server)",
        );
    };
    let local = address.rsplit_once('@').map_or(address, |(l, _)| l);
    decided(
        Outcome::Settings(UserSettings {
            display_name: entry.display_name.unwrap_or_else(|| local.to_owned()),
            smtp_address: entry.smtp.unwrap_or_else(|| address.to_owned()),
            legacy_dn: entry.legacy_dn,
            exch_server: server.clone(),
        }),
        format!("EXCH {server}"),
    )
}

/// An answer: what it says, why, and the document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub decided: Decided,
    pub xml: String,
}

/// The Autodiscover service of a running gateway (or of `rpcgate autodiscover`).
#[derive(Debug)]
pub struct Service {
    settings: Settings,
    id: u32,
}

impl Service {
    pub fn new(settings: Settings) -> Self {
        let id = fnv1a(settings.external_host.to_ascii_lowercase().as_bytes());
        Self { settings, id }
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Answers a request body.
    pub async fn answer(&self, body: &[u8], facts: &Facts) -> Answer {
        let decided = match decide(body, &self.settings.service) {
            Ok(address) => self.resolve(&address).await,
            Err(decided) => decided,
        };
        self.render(decided, facts)
    }

    /// Answers for an address, as if requested (`rpcgate autodiscover EMAIL`).
    pub async fn answer_address(&self, address: &str, facts: &Facts) -> Answer {
        let decided = match request::check_address(address.trim()) {
            Err(e) => decided(Outcome::Error(ErrorCode::InvalidRequest), e.to_string()),
            Ok(address) => match route(&address, &self.settings.service) {
                Ok(address) => self.resolve(&address).await,
                Err(decided) => decided,
            },
        };
        self.render(decided, facts)
    }

    async fn resolve(&self, address: &str) -> Decided {
        let lookup = self.lookup(address).await;
        conclude(address, lookup, &self.settings.service)
    }

    /// Where the user is: the static map, else the directory, else the default server.
    pub async fn lookup(&self, address: &str) -> Lookup {
        let config = &self.settings.service;
        let lower = address.to_ascii_lowercase();
        if let Some((_, server)) = config.users.iter().find(|(a, _)| *a == lower) {
            return Lookup::Found(Entry {
                server: Some(server.clone()),
                ..Entry::default()
            });
        }
        match &config.ldap {
            Some(ldap) => {
                let lookup = directory::lookup(ldap, address).await;
                if let Lookup::Unavailable(why) = &lookup {
                    warn!("autodiscover: the directory did not answer: {why}");
                }
                lookup
            }
            None if config.server.is_some() => Lookup::Found(Entry::default()),
            None => Lookup::NotFound,
        }
    }

    /// The document for an error found without a lookup (600 for a refused body).
    pub fn error_document(&self, code: ErrorCode, facts: &Facts) -> String {
        self.render(decided(Outcome::Error(code), ""), facts).xml
    }

    fn render(&self, decided: Decided, facts: &Facts) -> Answer {
        let since_midnight = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| Duration::new(d.as_secs() % 86_400, d.subsec_nanos()))
            .unwrap_or_default();
        let stamp = Stamp {
            time_of_day: since_midnight,
            id: self.id,
        };
        let xml = response::render(&decided.outcome, &self.settings.expr(facts), &stamp);
        Answer { decided, xml }
    }
}

/// The service `config` describes, or `None` without `[autodiscover]`. `CertPrincipalName`
/// is `client.cert_principal_name`, else taken from the certificates the TLS listeners serve
/// (the one covering the external host first; see [`cert`]); a self-signed certificate not
/// generated yet is skipped.
pub fn service_from_config(config: &crate::config::Config) -> anyhow::Result<Option<Service>> {
    use crate::config::ListenerTls;
    let Some(service) = &config.autodiscover else {
        return Ok(None);
    };
    let external_host = config.client.external_host.clone().ok_or_else(|| {
        anyhow::anyhow!(
            "{}: [autodiscover] needs client.external_host",
            config.source
        )
    })?;
    let cert_principal_name = match &config.client.cert_principal_name {
        Some(name) => Some(name.clone()),
        None => {
            let mut candidates = Vec::new();
            for listener in &config.proxy.listeners {
                let path = match &listener.tls {
                    ListenerTls::Plain => continue,
                    ListenerTls::SelfSigned => config.state_dir.join(crate::tls::CERT_FILE),
                    ListenerTls::Files { cert, .. } => cert.clone(),
                };
                if !path.exists() {
                    continue;
                }
                let names = cert::names_from_pem_file(&path).map_err(anyhow::Error::msg)?;
                if let Some(choice) = cert::principal_name(&names, &external_host) {
                    candidates.push((choice, path));
                }
            }
            let covering = candidates.iter().position(|((_, covers), _)| *covers);
            match covering.or((!candidates.is_empty()).then_some(0)) {
                Some(i) => {
                    let ((name, covers), path) = candidates.swap_remove(i);
                    if !covers {
                        warn!(
                            cert = %path.display(),
                            "autodiscover: no served certificate names {external_host} \
                             (client.external_host); clients are told {name}"
                        );
                    }
                    Some(name)
                }
                None => None,
            }
        }
    };
    Ok(Some(Service::new(Settings {
        external_host,
        ssl: config.client.ssl,
        auth_package: config.client.auth_package,
        cert_principal_name,
        service: service.clone(),
    })))
}

/// FNV-1a, 32 bits: the `Id` of error responses, stable for a host name.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, b| {
        (hash ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests;
