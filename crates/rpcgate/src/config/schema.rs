//! The TOML schema of the config file, as serde reads it, before defaults and validation.
//!
//! Every table rejects unknown keys (`deny_unknown_fields`), so a misspelt key is an error
//! that names it rather than a setting silently ignored. Values that validation may reject
//! are wrapped in [`Spanned`] so that its errors can point at the line; absent values are
//! `None` and get their defaults in [`super`]. The meaning of each key is documented on the
//! typed structs in [`super`] and in the embedded default file.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use toml::Spanned;

use crate::valid_ports::PortRange;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct File {
    pub state_dir: Option<Spanned<PathBuf>>,
    #[serde(default)]
    pub log: Log,
    #[serde(default)]
    pub proxy: Proxy,
    #[serde(default)]
    pub endpoint: Vec<Endpoint>,
    #[serde(default)]
    pub demo: Demo,
    pub status: Option<Status>,
    #[serde(default)]
    pub auth: Auth,
    #[serde(default)]
    pub client: Client,
    pub autodiscover: Option<Autodiscover>,
    pub configurator: Option<Configurator>,
}

/// `[configurator]`: ValidPorts entries read from the directory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Configurator {
    pub url: Spanned<OneOrMany>,
    pub starttls: Option<Spanned<bool>>,
    pub ca_file: Option<Spanned<PathBuf>>,
    pub bind_dn: Spanned<String>,
    pub password_file: Option<Spanned<PathBuf>>,
    pub password_env: Option<Spanned<String>>,
    pub base_dn: Spanned<String>,
    pub filter: Option<Spanned<String>>,
    pub fqdn_attribute: Option<Spanned<String>>,
    pub netbios_attribute: Option<Spanned<String>>,
    pub group: Option<Spanned<String>>,
    pub ports: Option<Spanned<String>>,
    pub interval_minutes: Option<Spanned<Count>>,
    pub interval_secs: Option<Spanned<Count>>,
    pub timeout_secs: Option<Spanned<Count>>,
}

/// One string or a list of strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// `[log]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Log {
    pub level: Option<Spanned<String>>,
}

/// `[proxy]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Proxy {
    pub valid_ports: Option<Spanned<String>>,
    #[serde(default)]
    pub valid_port: Vec<ValidPort>,
    pub receive_window: Option<Spanned<Count>>,
    pub connection_timeout_secs: Option<Spanned<Count>>,
    pub out_channel_lifetime: Option<Spanned<Count>>,
    pub connect_timeout_ms: Option<Spanned<Count>>,
    pub handshake_timeout_secs: Option<Spanned<Count>>,
    pub idle_timeout_secs: Option<Spanned<Count>>,
    pub max_connections: Option<Spanned<Count>>,
    pub in_process_endpoints: Option<bool>,
    #[serde(default)]
    pub listener: Vec<Listener>,
}

/// `[[proxy.valid_port]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ValidPort {
    pub host: Spanned<String>,
    pub ports: PortRange,
}

/// `[[proxy.listener]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Listener {
    pub address: Spanned<ListenAddr>,
    pub tls: Option<Spanned<bool>>,
    pub cert: Option<Spanned<PathBuf>>,
    pub key: Option<Spanned<PathBuf>>,
    pub allow_anonymous: Option<Spanned<bool>>,
    pub auth: Option<Spanned<Vec<String>>>,
    pub trusted_proxies: Option<Spanned<Vec<String>>>,
}

/// `[auth]`: how credentials are verified (server-facing).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Auth {
    pub users_file: Option<Spanned<PathBuf>>,
    pub realm: Option<Spanned<String>>,
    pub netbios_domain: Option<Spanned<String>>,
    pub netbios_name: Option<Spanned<String>>,
    pub dns_domain: Option<Spanned<String>>,
    pub dns_name: Option<Spanned<String>>,
    pub allow_ntlmv1: Option<Spanned<bool>>,
    pub ntlm_helper: Option<Spanned<Vec<String>>>,
    pub max_failures_per_user: Option<Spanned<Count>>,
    pub max_failures_per_address: Option<Spanned<Count>>,
    pub failure_window_secs: Option<Spanned<Count>>,
    pub ldap: Option<Ldap>,
    pub kerberos: Option<Kerberos>,
    #[serde(default)]
    pub allow: Vec<Allow>,
}

/// `[auth.ldap]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Ldap {
    pub url: Spanned<String>,
    pub starttls: Option<Spanned<bool>>,
    pub ca_file: Option<Spanned<PathBuf>>,
    pub bind_dn: Spanned<String>,
    pub domain: Option<Spanned<String>>,
    pub upn_suffix: Option<Spanned<String>>,
    pub base_dn: Option<Spanned<String>>,
    pub user_filter: Option<Spanned<String>>,
    pub require_group: Option<Spanned<String>>,
    pub timeout_secs: Option<Spanned<Count>>,
}

/// `[auth.kerberos]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Kerberos {
    pub keytab: Spanned<PathBuf>,
    pub principal: Option<Spanned<String>>,
}

/// `[[auth.allow]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Allow {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    pub targets: Spanned<String>,
}

/// `[client]`: what clients are told (Autodiscover), apart from what the proxy accepts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Client {
    pub external_host: Option<Spanned<String>>,
    pub auth_package: Option<Spanned<String>>,
    pub ssl: Option<Spanned<bool>>,
    pub cert_principal_name: Option<Spanned<String>>,
}

/// `[autodiscover]`: whom Autodiscover answers and where their RPC server is.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Autodiscover {
    pub domains: Option<Spanned<Vec<String>>>,
    pub server: Option<Spanned<String>>,
    pub users: Option<Spanned<BTreeMap<String, String>>>,
    pub redirect_domains: Option<Spanned<BTreeMap<String, String>>>,
    pub ldap: Option<AutodiscoverLdap>,
}

/// `[autodiscover.ldap]`: the directory lookup of a user's RPC server.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AutodiscoverLdap {
    pub url: Spanned<OneOrMany>,
    pub starttls: Option<Spanned<bool>>,
    pub ca_file: Option<Spanned<PathBuf>>,
    pub bind_dn: Spanned<String>,
    pub password_file: Option<Spanned<PathBuf>>,
    pub password_env: Option<Spanned<String>>,
    pub base_dn: Spanned<String>,
    pub server_attribute: Option<Spanned<String>>,
    pub timeout_secs: Option<Spanned<Count>>,
}

/// `[[endpoint]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Endpoint {
    pub listen: Spanned<ListenList>,
    pub backend: Spanned<String>,
    pub receive_window: Option<Spanned<Count>>,
    pub setup_timeout_secs: Option<Spanned<Count>>,
}

/// `[status]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Status {
    pub listen: Spanned<ListenAddr>,
    pub allow_remote: Option<bool>,
}

/// `[demo]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Demo {
    pub listen: Option<Spanned<ListenAddr>>,
}

/// A socket address to listen on: an IP literal and a port, no name resolution (a listener
/// bound to whatever a name resolves to at start-up is a surprise waiting to happen).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ListenAddr(pub SocketAddr);

const ADDRESS_EXPECTED: &str =
    "an IP address and port such as \"127.0.0.1:8443\" or \"[::1]:8443\" (names are not resolved)";

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AddrVisitor;

        impl Visitor<'_> for AddrVisitor {
            type Value = ListenAddr;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(ADDRESS_EXPECTED)
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<ListenAddr, E> {
                text.trim().parse().map(ListenAddr).map_err(|_| {
                    E::custom(format!(
                        "invalid address {text:?}: expected {ADDRESS_EXPECTED}"
                    ))
                })
            }
        }

        deserializer.deserialize_str(AddrVisitor)
    }
}

/// One address or a list of them (`listen = "127.0.0.1:6001"` or `listen = ["...", "..."]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ListenList(pub Vec<SocketAddr>);

impl<'de> Deserialize<'de> for ListenList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor;

        impl<'de> Visitor<'de> for ListVisitor {
            type Value = ListenList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{ADDRESS_EXPECTED}, or a list of them")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<ListenList, E> {
                let ListenAddr(address) =
                    ListenAddr::deserialize(de::value::StrDeserializer::<E>::new(text))?;
                Ok(ListenList(vec![address]))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ListenList, A::Error> {
                let mut addresses = Vec::new();
                while let Some(ListenAddr(address)) = seq.next_element()? {
                    addresses.push(address);
                }
                Ok(ListenList(addresses))
            }
        }

        deserializer.deserialize_any(ListVisitor)
    }
}

/// A non-negative whole number; its own type so that a wrong value says so in words rather
/// than as "expected u64".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Count(pub u64);

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CountVisitor;

        impl Visitor<'_> for CountVisitor {
            type Value = Count;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a whole number without quotes, such as 65536")
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<Count, E> {
                Ok(Count(value))
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<Count, E> {
                u64::try_from(value).map(Count).map_err(|_| {
                    E::invalid_value(
                        de::Unexpected::Signed(value),
                        &"a number that is not negative",
                    )
                })
            }
        }

        deserializer.deserialize_any(CountVisitor)
    }
}
