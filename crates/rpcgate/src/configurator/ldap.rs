//! The configurator's directory shell: bind and search over LDAP (the `ldap3` crate, as the
//! Basic-over-LDAP authentication uses), the result as [`Server`]s.
//!
//! Every URL is tried in order until one answers; the whole poll (connect, TLS, bind,
//! search) is bounded by the configured timeout per URL. A directory that refuses the bind,
//! or a search that does not succeed completely (a size limit included), is an error: the
//! caller then keeps its last good list rather than acting on a partial answer. [`bind`] is
//! shared with Autodiscover's directory lookups.

use std::sync::Arc;

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry};

use super::ConfiguratorConfig;
use super::merge::{Server, in_group};

/// Asks the directory for the servers.
pub async fn poll(config: &ConfiguratorConfig) -> Result<Vec<Server>, String> {
    let password = config.password.read()?;
    let mut errors = Vec::new();
    for url in &config.urls {
        match tokio::time::timeout(config.timeout, poll_one(config, url, &password)).await {
            Ok(Ok(servers)) => return Ok(servers),
            Ok(Err(e)) => errors.push(format!("{url}: {e}")),
            Err(_) => errors.push(format!(
                "{url}: no answer within {} s",
                config.timeout.as_secs()
            )),
        }
    }
    Err(errors.join("; "))
}

/// How to reach and bind to a directory with a service account (the configurator's and
/// Autodiscover's lookups).
#[derive(Debug)]
pub(crate) struct Bind<'a> {
    pub url: &'a str,
    pub timeout: std::time::Duration,
    pub starttls: bool,
    pub ca_file: Option<&'a std::path::Path>,
    pub bind_dn: &'a str,
    pub password: &'a str,
}

/// Connects (LDAPS, StartTLS or plain as configured; the connection driver runs in the
/// caller's task scope, named `what` in its log line) and binds; a refused bind is an error
/// that says why, with a hint when the directory wants TLS.
pub(crate) async fn bind(target: &Bind<'_>, what: &'static str) -> Result<ldap3::Ldap, String> {
    let mut settings = LdapConnSettings::new()
        .set_conn_timeout(target.timeout)
        .set_starttls(target.starttls);
    if target.url.to_ascii_lowercase().starts_with("ldaps://") || target.starttls {
        let tls = crate::tls::client_config(target.ca_file, false)
            .map_err(|e| format!("LDAP TLS configuration: {e}"))?;
        let mut tls = (*tls).clone();
        tls.alpn_protocols.clear();
        settings = settings.set_config(Arc::new(tls));
    }
    let (conn, mut ldap) = LdapConnAsync::with_settings(settings, target.url)
        .await
        .map_err(|e| format!("cannot reach the directory: {e}"))?;
    crate::tasks::spawn(async move {
        if let Err(e) = conn.drive().await {
            tracing::debug!("{what} LDAP connection ended: {e}");
        }
    });
    let bound = ldap
        .simple_bind(target.bind_dn, target.password)
        .await
        .map_err(|e| format!("LDAP bind: {e}"))?;
    if bound.rc != 0 {
        let _ = ldap.unbind().await;
        let hint = if bound.rc == 8 || bound.rc == 13 {
            ": the directory wants TLS (use ldaps:// or starttls = true)"
        } else {
            ""
        };
        return Err(format!(
            "bind as {} refused (LDAP result {}){hint}",
            target.bind_dn, bound.rc
        ));
    }
    Ok(ldap)
}

async fn poll_one(
    config: &ConfiguratorConfig,
    url: &str,
    password: &str,
) -> Result<Vec<Server>, String> {
    let mut ldap = bind(
        &Bind {
            url,
            timeout: config.timeout,
            starttls: config.starttls,
            ca_file: config.ca_file.as_deref(),
            bind_dn: &config.bind_dn,
            password,
        },
        "configurator",
    )
    .await?;
    let mut attributes = vec![
        config.fqdn_attribute.as_str(),
        config.netbios_attribute.as_str(),
    ];
    if config.group.is_some() {
        attributes.push("memberOf");
    }
    let searched = ldap
        .search(&config.base_dn, Scope::Subtree, &config.filter, attributes)
        .await
        .and_then(|r| r.success());
    let _ = ldap.unbind().await;
    let (entries, _) =
        searched.map_err(|e| format!("LDAP search under {}: {e}", config.base_dn))?;
    let mut servers = Vec::new();
    for entry in entries {
        let entry = SearchEntry::construct(entry);
        let value = |name: &str| {
            entry
                .attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .and_then(|(_, v)| v.first().map(String::as_str))
        };
        if let Some(group) = &config.group {
            let member_of = entry
                .attrs
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case("memberOf"))
                .map(|(_, v)| v.as_slice())
                .unwrap_or_default();
            if !in_group(member_of, group) {
                continue;
            }
        }
        let server = Server::from_attributes(
            value(&config.fqdn_attribute),
            value(&config.netbios_attribute),
        );
        if server.names().next().is_some() {
            servers.push(server);
        }
    }
    Ok(servers)
}
