//! Validation of the client-facing settings: `[client]` (what Autodiscover tells clients about
//! the proxy) and `[autodiscover]` (whom it answers and where their RPC server is), kept apart
//! from what the proxy itself accepts.

use std::collections::BTreeMap;
use std::time::Duration;

use toml::Spanned;

use super::auth::parse_method;
use super::{ConfigError, Ctx, schema};
use crate::auth::Method;
use crate::autodiscover::directory::{DEFAULT_SERVER_ATTRIBUTE, DEFAULT_TIMEOUT_SECS};
use crate::autodiscover::{AutodiscoverConfig, DirectoryConfig, request};

/// `[client]`: what Autodiscover tells clients (client-facing; not used by the proxy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    /// `external_host`: the proxy's name as clients reach it (EXPR `Server`).
    pub external_host: Option<String>,
    /// `auth_package`: the method clients are told to use (default `ntlm`); `negotiate` only
    /// to clients that send `X-ClientCanHandle: Negotiate`, the others are told `ntlm`.
    pub auth_package: Method,
    /// `ssl` (default true): EXPR `SSL On`.
    pub ssl: bool,
    /// `cert_principal_name`: EXPR `CertPrincipalName` as written (`msstd:name` or `None`);
    /// `None` here means: from the served certificate.
    pub cert_principal_name: Option<String>,
}

impl Ctx<'_> {
    pub(super) fn client(&self, raw: &schema::Client) -> Result<ClientConfig, ConfigError> {
        let auth_package = match &raw.auth_package {
            None => Method::Ntlm,
            Some(p) => parse_method(p.get_ref()).ok_or_else(|| {
                self.invalid(
                    "client.auth_package",
                    p.span(),
                    "expected \"basic\", \"ntlm\" or \"negotiate\"",
                )
            })?,
        };
        let external_host = raw
            .external_host
            .as_ref()
            .map(|h| self.host_name("client.external_host", h))
            .transpose()?;
        let cert_principal_name = match &raw.cert_principal_name {
            None => None,
            Some(value) => {
                let text = value.get_ref().trim();
                let name = text.strip_prefix("msstd:").unwrap_or(text);
                if text.eq_ignore_ascii_case("none") {
                    Some("None".to_owned())
                } else if name.is_empty()
                    || !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '*'))
                {
                    return Err(self.invalid(
                        "client.cert_principal_name",
                        value.span(),
                        "expected \"msstd:\" and the name in the proxy's certificate (such as \
                         \"msstd:mail.contoso.com\"), a bare name, or \"none\"",
                    ));
                } else {
                    Some(format!("msstd:{name}"))
                }
            }
        };
        Ok(ClientConfig {
            external_host,
            auth_package,
            ssl: raw.ssl.as_ref().is_none_or(|v| *v.get_ref()),
            cert_principal_name,
        })
    }

    /// A host name as clients and proxies use it: letters, digits, `-`, `.`, `_` (and `@`
    /// for Exchange's `mailbox-guid@domain` servers), no scheme, port or path.
    fn host_name(&self, key: &str, value: &Spanned<String>) -> Result<String, ConfigError> {
        let text = value.get_ref().trim();
        let plausible = !text.is_empty()
            && text.len() <= 255
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '@'));
        if plausible {
            Ok(text.to_owned())
        } else {
            Err(self.invalid(
                key,
                value.span(),
                format!(
                    "{text:?}: expected a host name such as \"mail.contoso.com\" (no scheme, \
                     port or path)"
                ),
            ))
        }
    }

    pub(super) fn autodiscover(
        &self,
        raw: &schema::Autodiscover,
        client: &ClientConfig,
    ) -> Result<AutodiscoverConfig, ConfigError> {
        if client.external_host.is_none() {
            return Err(self.invalid_nowhere(
                "client.external_host",
                "[autodiscover] needs client.external_host: the proxy's name as clients reach \
                 it, which Autodiscover tells them",
            ));
        }
        let domain = |key: &str, text: &str, span| {
            let lower = text.trim().trim_end_matches('.').to_ascii_lowercase();
            if request::check_address(&format!("x@{lower}")).is_ok() {
                Ok(lower)
            } else {
                Err(self.invalid(
                    key,
                    span,
                    format!("{text:?}: expected a mail domain such as \"contoso.com\""),
                ))
            }
        };
        let mut domains = Vec::new();
        if let Some(list) = &raw.domains {
            for d in list.get_ref() {
                domains.push(domain("autodiscover.domains", d, list.span())?);
            }
        }
        let server = raw
            .server
            .as_ref()
            .map(|s| self.host_name("autodiscover.server", s))
            .transpose()?;
        let entries = |value: &Option<Spanned<BTreeMap<String, String>>>| {
            value.as_ref().map_or_else(Vec::new, |m| {
                m.get_ref()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone(), m.span()))
                    .collect::<Vec<_>>()
            })
        };
        let mut users = Vec::new();
        for (address, host, span) in entries(&raw.users) {
            let address = request::check_address(address.trim()).map_err(|_| {
                self.invalid(
                    "autodiscover.users",
                    span.clone(),
                    format!("{address:?}: expected an e-mail address as the key"),
                )
            })?;
            let host = self.host_name(
                "autodiscover.users",
                &Spanned::new(span.clone(), host.clone()),
            )?;
            users.push((address.to_ascii_lowercase(), host));
        }
        let mut redirect_domains = Vec::new();
        for (from, to, span) in entries(&raw.redirect_domains) {
            let key = "autodiscover.redirect_domains";
            redirect_domains.push((
                domain(key, &from, span.clone())?,
                domain(key, &to, span.clone())?,
            ));
        }
        let ldap = raw.ldap.as_ref().map(|l| self.directory(l)).transpose()?;
        Ok(AutodiscoverConfig {
            domains,
            server,
            users,
            redirect_domains,
            ldap,
        })
    }

    fn directory(&self, raw: &schema::AutodiscoverLdap) -> Result<DirectoryConfig, ConfigError> {
        let section = "autodiscover.ldap";
        let (urls, starttls) = self.ldap_urls(section, &raw.url, &raw.starttls)?;
        let password =
            self.password_source(section, &raw.bind_dn, &raw.password_file, &raw.password_env)?;
        let nonempty = |value: &Spanned<String>, key: &str| {
            let text = value.get_ref().trim();
            if text.is_empty() {
                Err(self.invalid(
                    &format!("{section}.{key}"),
                    value.span(),
                    "must not be empty",
                ))
            } else {
                Ok(text.to_owned())
            }
        };
        Ok(DirectoryConfig {
            urls,
            starttls,
            ca_file: raw.ca_file.as_ref().map(|f| f.get_ref().clone()),
            bind_dn: nonempty(&raw.bind_dn, "bind_dn")?,
            password,
            base_dn: nonempty(&raw.base_dn, "base_dn")?,
            server_attribute: raw
                .server_attribute
                .as_ref()
                .map_or(Ok(DEFAULT_SERVER_ATTRIBUTE.to_owned()), |a| {
                    nonempty(a, "server_attribute")
                })?,
            timeout: Duration::from_secs(self.ranged(
                "autodiscover.ldap.timeout_secs",
                &raw.timeout_secs,
                DEFAULT_TIMEOUT_SECS,
                1..=120,
            )?),
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::auth::Method;
    use crate::config::Config;
    use crate::configurator::PasswordSource;

    const BASE: &str = "[[proxy.listener]]\naddress = \"127.0.0.1:8080\"\ntls = false\n";

    fn parse(text: &str) -> Result<Config, String> {
        Config::from_toml_str(&format!("{BASE}\n{text}"), "t.toml").map_err(|e| e.to_string())
    }

    #[test]
    fn everything_set() {
        let c = parse(
            "[client]\nexternal_host = \"mail.contoso.com\"\nauth_package = \"negotiate\"\n\
             ssl = false\ncert_principal_name = \"mail.contoso.com\"\n\
             [autodiscover]\ndomains = [\"Contoso.com\"]\nserver = \"mbx1.contoso.com\"\n\
             users = { \"Alice@contoso.com\" = \"mbx2.contoso.com\" }\n\
             redirect_domains = { \"fabrikam.com\" = \"contoso.com\" }\n\
             [autodiscover.ldap]\nurl = [\"ldaps://dc1\", \"ldap://127.0.0.1\"]\n\
             bind_dn = \"svc@contoso.com\"\npassword_env = \"PW\"\nbase_dn = \"DC=contoso,DC=com\"\n\
             server_attribute = \"info\"\ntimeout_secs = 3\n",
        )
        .unwrap();
        assert_eq!(c.client.auth_package, Method::Negotiate);
        assert!(!c.client.ssl);
        assert_eq!(
            c.client.cert_principal_name.as_deref(),
            Some("msstd:mail.contoso.com")
        );
        let a = c.autodiscover.unwrap();
        assert_eq!(a.domains, ["contoso.com"]);
        assert_eq!(a.server.as_deref(), Some("mbx1.contoso.com"));
        assert_eq!(
            a.users,
            [(
                "alice@contoso.com".to_owned(),
                "mbx2.contoso.com".to_owned()
            )]
        );
        assert_eq!(
            a.redirect_domains,
            [("fabrikam.com".to_owned(), "contoso.com".to_owned())]
        );
        let ldap = a.ldap.unwrap();
        assert_eq!(ldap.urls.len(), 2);
        assert_eq!(ldap.server_attribute, "info");
        assert_eq!(ldap.password, PasswordSource::Env("PW".into()));
        let none =
            parse("[client]\nexternal_host = \"m\"\ncert_principal_name = \"None\"\n").unwrap();
        assert_eq!(none.client.cert_principal_name.as_deref(), Some("None"));
        assert!(none.client.ssl);
        assert!(none.autodiscover.is_none());
    }

    #[test]
    fn mistakes_are_named() {
        let err = |text: &str| parse(text).unwrap_err();
        let host = "[client]\nexternal_host = \"mail.contoso.com\"\n";
        for (text, needle) in [
            ("[autodiscover]\n".to_owned(), "client.external_host"),
            (
                "[client]\nexternal_host = \"https://mail/\"\n".to_owned(),
                "client.external_host",
            ),
            (
                "[client]\ncert_principal_name = \"a b\"\n".to_owned(),
                "client.cert_principal_name",
            ),
            (format!("{host}[autodiscover]\nbogus = 1\n"), "bogus"),
            (format!("{host}[client.x]\n"), "x"),
            (
                format!("{host}[autodiscover]\ndomains = [\"a b\"]\n"),
                "autodiscover.domains",
            ),
            (
                format!("{host}[autodiscover]\nusers = {{ \"nobody\" = \"m\" }}\n"),
                "autodiscover.users",
            ),
            (
                format!("{host}[autodiscover]\nserver = \"m:6001\"\n"),
                "autodiscover.server",
            ),
            (
                format!(
                    "{host}[autodiscover]\n[autodiscover.ldap]\nurl = \"ldap://dc1\"\n\
                     bind_dn = \"b\"\npassword_env = \"P\"\nbase_dn = \"DC=x\"\n"
                ),
                "autodiscover.ldap.url",
            ),
            (
                format!(
                    "{host}[autodiscover]\n[autodiscover.ldap]\nurl = \"ldaps://dc1\"\n\
                     bind_dn = \"b\"\nbase_dn = \"DC=x\"\n"
                ),
                "password_file",
            ),
            (
                format!(
                    "{host}[autodiscover]\n[autodiscover.ldap]\nurl = \"ldaps://dc1\"\n\
                     bind_dn = \"b\"\npassword_env = \"P\"\nbase_dn = \"DC=x\"\nfilter = \"x\"\n"
                ),
                "filter",
            ),
        ] {
            let e = err(&text);
            assert!(e.contains(needle), "{needle:?} in {e}");
        }
    }
}
