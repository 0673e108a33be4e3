//! Where a user's RPC server is, according to the directory (`[autodiscover.ldap]`): one
//! search by address over LDAP (Active Directory, Samba AD, OpenLDAP), the same connection
//! settings as the configurator's.
//!
//! The address is matched against `mail`, `proxyAddresses` (`smtp:` prefixed, which in AD
//! matches the primary `SMTP:` value too) and `userPrincipalName`, LDAP-escaped. The entry's
//! `server_attribute` gives the EXCH server; an Exchange legacy DN (`/o=.../cn=MBX1`) or an
//! LDAP DN (`CN=MBX1,...`) there is reduced to the server's name. `displayName`, `mail`,
//! `legacyExchangeDN` and `targetAddress` (a mailbox elsewhere: redirect) are read too.
//! Every URL is tried in order, each bounded by the timeout; a failed search is
//! [`Lookup::Unavailable`], never "not found".

use std::path::PathBuf;
use std::time::Duration;

use ldap3::{Scope, SearchEntry};

use crate::auth::ldap::escape_filter_value;
use crate::configurator::PasswordSource;

/// Default attribute holding a user's server (Exchange's schema).
pub const DEFAULT_SERVER_ATTRIBUTE: &str = "msExchHomeServerName";
/// Default timeout of one lookup.
pub const DEFAULT_TIMEOUT_SECS: u64 = 5;

/// `[autodiscover.ldap]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryConfig {
    /// `url`: `ldaps://`, or `ldap://` with StartTLS or on loopback; tried in order.
    pub urls: Vec<String>,
    /// `starttls`: StartTLS on `ldap://` URLs.
    pub starttls: bool,
    /// `ca_file`: the CA (PEM) of the directory's certificate; default: the system's.
    pub ca_file: Option<PathBuf>,
    /// `bind_dn`: who searches.
    pub bind_dn: String,
    /// `password_file` or `password_env`.
    pub password: PasswordSource,
    /// `base_dn`: where users are searched (subtree).
    pub base_dn: String,
    /// `server_attribute`: the attribute holding the user's RPC server.
    pub server_attribute: String,
    /// `timeout_secs`: connect + bind + search, per URL.
    pub timeout: Duration,
}

/// A directory entry's facts (every field optional).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    pub display_name: Option<String>,
    /// The primary SMTP address.
    pub smtp: Option<String>,
    pub legacy_dn: Option<String>,
    /// The EXCH server.
    pub server: Option<String>,
    /// A mailbox elsewhere (`targetAddress`, without its `SMTP:`).
    pub redirect: Option<String>,
}

/// The result of a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(Entry),
    NotFound,
    /// More than one entry carries the address.
    Ambiguous(usize),
    /// The directory could not be asked.
    Unavailable(String),
}

/// The search filter for an address.
pub fn filter(address: &str) -> String {
    let value = escape_filter_value(address);
    format!("(|(mail={value})(proxyAddresses=smtp:{value})(userPrincipalName={value}))")
}

/// Looks `address` up.
pub async fn lookup(config: &DirectoryConfig, address: &str) -> Lookup {
    let password = match config.password.read() {
        Ok(p) => p,
        Err(e) => return Lookup::Unavailable(e),
    };
    let mut errors = Vec::new();
    for url in &config.urls {
        match tokio::time::timeout(config.timeout, search(config, url, &password, address)).await {
            Ok(Ok(entries)) => return from_entries(config, entries),
            Ok(Err(e)) => errors.push(format!("{url}: {e}")),
            Err(_) => errors.push(format!(
                "{url}: no answer within {} s",
                config.timeout.as_secs()
            )),
        }
    }
    Lookup::Unavailable(errors.join("; "))
}

type Attributes = Vec<(String, Vec<String>)>;

async fn search(
    config: &DirectoryConfig,
    url: &str,
    password: &str,
    address: &str,
) -> Result<Vec<Attributes>, String> {
    let mut ldap = crate::configurator::ldap::bind(
        &crate::configurator::ldap::Bind {
            url,
            timeout: config.timeout,
            starttls: config.starttls,
            ca_file: config.ca_file.as_deref(),
            bind_dn: &config.bind_dn,
            password,
        },
        "autodiscover",
    )
    .await?;
    let attributes = vec![
        "displayName",
        "mail",
        "legacyExchangeDN",
        "targetAddress",
        config.server_attribute.as_str(),
    ];
    let searched = ldap
        .search(
            &config.base_dn,
            Scope::Subtree,
            &filter(address),
            attributes,
        )
        .await
        .and_then(|r| r.success());
    let _ = ldap.unbind().await;
    let (entries, _) =
        searched.map_err(|e| format!("LDAP search under {}: {e}", config.base_dn))?;
    Ok(entries
        .into_iter()
        .map(|e| SearchEntry::construct(e).attrs.into_iter().collect())
        .collect())
}

/// The lookup result from the entries found (each a list of attribute values).
pub fn from_entries(config: &DirectoryConfig, entries: Vec<Attributes>) -> Lookup {
    match entries.len() {
        0 => Lookup::NotFound,
        1 => {
            let attrs = entries.into_iter().next().unwrap_or_default();
            let value = |name: &str| {
                attrs
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .and_then(|(_, v)| v.first())
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
            };
            Lookup::Found(Entry {
                display_name: value("displayName"),
                smtp: value("mail"),
                legacy_dn: value("legacyExchangeDN"),
                server: value(&config.server_attribute).and_then(|v| server_name(&v)),
                redirect: value("targetAddress").map(|t| {
                    let lower = t.to_ascii_lowercase();
                    if lower.starts_with("smtp:") {
                        t.get(5..).unwrap_or_default().to_owned()
                    } else {
                        t
                    }
                }),
            })
        }
        n => Lookup::Ambiguous(n),
    }
}

/// The server's name from an attribute value: a legacy DN's last `cn=`, an LDAP DN's first
/// RDN value, or the value itself; `None` when that is not a plausible host name.
pub fn server_name(value: &str) -> Option<String> {
    let value = value.trim();
    let name = if value.starts_with('/') {
        let lower = value.to_ascii_lowercase();
        let at = lower.rfind("/cn=")?;
        value.get(at + 4..)?
    } else if let Some((first, _)) = value.split_once(',')
        && let Some((attr, name)) = first.split_once('=')
        && !attr.trim().is_empty()
        && attr.trim().chars().all(|c| c.is_ascii_alphabetic())
    {
        name
    } else {
        value
    };
    let name = name.trim();
    let plausible = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '@'));
    plausible.then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DirectoryConfig {
        DirectoryConfig {
            urls: vec!["ldaps://dc".into()],
            starttls: false,
            ca_file: None,
            bind_dn: "svc".into(),
            password: PasswordSource::Env("X".into()),
            base_dn: "DC=x".into(),
            server_attribute: "msExchHomeServerName".into(),
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn filter_is_escaped() {
        assert_eq!(
            filter("a*)(uid=*)@x.org"),
            "(|(mail=a\\2a\\29\\28uid=\\2a\\29@x.org)(proxyAddresses=smtp:a\\2a\\29\\28uid=\\2a\\29@x.org)(userPrincipalName=a\\2a\\29\\28uid=\\2a\\29@x.org))"
        );
    }

    #[test]
    fn server_names() {
        assert_eq!(
            server_name("/o=Contoso/ou=Exchange Administrative Group (FYDIBOHF23SPDLT)/cn=Configuration/cn=Servers/cn=MBX1").as_deref(),
            Some("MBX1")
        );
        assert_eq!(
            server_name("CN=mbx2,CN=Servers,DC=x").as_deref(),
            Some("mbx2")
        );
        assert_eq!(
            server_name(" mbx3.contoso.com ").as_deref(),
            Some("mbx3.contoso.com")
        );
        assert_eq!(server_name("https://evil/"), None);
        assert_eq!(server_name("a b"), None);
        assert_eq!(server_name(""), None);
    }

    #[test]
    fn entries() {
        let c = config();
        assert_eq!(from_entries(&c, vec![]), Lookup::NotFound);
        assert_eq!(from_entries(&c, vec![vec![], vec![]]), Lookup::Ambiguous(2));
        let one = vec![vec![
            ("displayName".to_owned(), vec!["Alice A".to_owned()]),
            ("mail".to_owned(), vec!["alice@x.org".to_owned()]),
            (
                "msexchhomeservername".to_owned(),
                vec!["/o=x/cn=MBX1".to_owned()],
            ),
            (
                "targetAddress".to_owned(),
                vec!["SMTP:alice@y.org".to_owned()],
            ),
        ]];
        assert_eq!(
            from_entries(&c, one),
            Lookup::Found(Entry {
                display_name: Some("Alice A".into()),
                smtp: Some("alice@x.org".into()),
                legacy_dn: None,
                server: Some("MBX1".into()),
                redirect: Some("alice@y.org".into()),
            })
        );
    }
}
