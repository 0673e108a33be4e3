//! `[configurator]`: validation of the directory configurator's settings.

use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::schema::{self, OneOrMany};
use super::{ConfigError, Ctx};
use crate::configurator::{
    ConfiguratorConfig, DEFAULT_FILTER, DEFAULT_FQDN_ATTRIBUTE, DEFAULT_INTERVAL_MINUTES,
    DEFAULT_NETBIOS_ATTRIBUTE, DEFAULT_PORTS, DEFAULT_TIMEOUT_SECS, PasswordSource,
};
use crate::valid_ports::PortRange;

impl Ctx<'_> {
    pub(super) fn configurator(
        &self,
        raw: &schema::Configurator,
    ) -> Result<ConfiguratorConfig, ConfigError> {
        let (urls, starttls) = self.ldap_urls("configurator", &raw.url, &raw.starttls)?;
        let password = self.password_source(
            "configurator",
            &raw.bind_dn,
            &raw.password_file,
            &raw.password_env,
        )?;
        let nonempty = |value: &Spanned<String>, key: &str| {
            let text = value.get_ref().trim();
            if text.is_empty() {
                Err(self.invalid(
                    &format!("configurator.{key}"),
                    value.span(),
                    "must not be empty",
                ))
            } else {
                Ok(text.to_owned())
            }
        };
        let or_default = |value: &Option<Spanned<String>>, key: &str, default: &str| {
            value
                .as_ref()
                .map_or(Ok(default.to_owned()), |v| nonempty(v, key))
        };
        let filter = or_default(&raw.filter, "filter", DEFAULT_FILTER)?;
        if !(filter.starts_with('(') && filter.ends_with(')')) {
            let span = raw.filter.as_ref().map(Spanned::span).unwrap_or_default();
            return Err(self.invalid(
                "configurator.filter",
                span,
                "expected an LDAP filter in parentheses, e.g. \"(objectClass=computer)\"",
            ));
        }
        let ports_text = or_default(&raw.ports, "ports", DEFAULT_PORTS)?;
        let mut ports = Vec::new();
        for piece in ports_text
            .split(';')
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let range: PortRange = piece.parse().map_err(|e| {
                let span = raw.ports.as_ref().map(Spanned::span).unwrap_or_default();
                self.invalid(
                    "configurator.ports",
                    span,
                    format!("{piece:?}: {e}: expected ports such as \"6001-6002;6004\""),
                )
            })?;
            ports.push(range);
        }
        if ports.is_empty() {
            let span = raw.ports.as_ref().map(Spanned::span).unwrap_or_default();
            return Err(self.invalid("configurator.ports", span, "expected at least one port"));
        }
        let interval = match (&raw.interval_minutes, &raw.interval_secs) {
            (Some(_), Some(secs)) => {
                return Err(self.invalid(
                    "configurator.interval_secs",
                    secs.span(),
                    "give interval_minutes or interval_secs, not both",
                ));
            }
            (_, Some(_)) => Duration::from_secs(self.ranged(
                "configurator.interval_secs",
                &raw.interval_secs,
                0,
                0..=604_800,
            )?),
            _ => Duration::from_secs(
                60 * self.ranged(
                    "configurator.interval_minutes",
                    &raw.interval_minutes,
                    DEFAULT_INTERVAL_MINUTES,
                    0..=10_080,
                )?,
            ),
        };
        let timeout = Duration::from_secs(self.ranged(
            "configurator.timeout_secs",
            &raw.timeout_secs,
            DEFAULT_TIMEOUT_SECS,
            1..=600,
        )?);
        Ok(ConfiguratorConfig {
            urls,
            starttls,
            ca_file: raw.ca_file.as_ref().map(|f| f.get_ref().clone()),
            bind_dn: nonempty(&raw.bind_dn, "bind_dn")?,
            password,
            base_dn: nonempty(&raw.base_dn, "base_dn")?,
            filter,
            fqdn_attribute: or_default(
                &raw.fqdn_attribute,
                "fqdn_attribute",
                DEFAULT_FQDN_ATTRIBUTE,
            )?,
            netbios_attribute: or_default(
                &raw.netbios_attribute,
                "netbios_attribute",
                DEFAULT_NETBIOS_ATTRIBUTE,
            )?,
            group: raw
                .group
                .as_ref()
                .map(|g| nonempty(g, "group"))
                .transpose()?,
            ports,
            interval,
            timeout,
        })
    }

    /// `url` (one or a list) and `starttls` of an LDAP section: `ldaps://`, or `ldap://`
    /// with StartTLS or to a loopback server (a bind password must not travel in clear).
    pub(super) fn ldap_urls(
        &self,
        section: &str,
        url: &Spanned<OneOrMany>,
        starttls: &Option<Spanned<bool>>,
    ) -> Result<(Vec<String>, bool), ConfigError> {
        let (raw_url, raw_starttls) = (url, starttls);
        let starttls = raw_starttls.as_ref().is_some_and(|v| *v.get_ref());
        let urls = match raw_url.get_ref() {
            OneOrMany::One(url) => vec![url.trim().to_owned()],
            OneOrMany::Many(urls) => urls.iter().map(|u| u.trim().to_owned()).collect(),
        };
        if urls.is_empty() {
            return Err(self.invalid(
                &format!("{section}.url"),
                raw_url.span(),
                "expected at least one URL",
            ));
        }
        for url in &urls {
            let lower = url.to_ascii_lowercase();
            let Some(rest) = lower
                .strip_prefix("ldaps://")
                .or_else(|| lower.strip_prefix("ldap://"))
            else {
                return Err(self.invalid(
                    &format!("{section}.url"),
                    raw_url.span(),
                    format!("{url:?}: expected ldaps://host[:port] or ldap://host[:port]"),
                ));
            };
            let host = rest.split('/').next().unwrap_or_default();
            let host_only = if let Some(rest) = host.strip_prefix('[') {
                rest.split(']').next().unwrap_or_default()
            } else {
                host.rsplit_once(':').map_or(host, |(h, _)| h)
            };
            let loopback = host_only == "localhost"
                || host_only
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.to_canonical().is_loopback());
            if lower.starts_with("ldap://") && !starttls && !loopback {
                return Err(self.invalid(
                    &format!("{section}.url"),
                    raw_url.span(),
                    format!(
                        "{url:?}: plain ldap:// would send the password in clear: use ldaps://, \
                         set starttls = true, or use a loopback server"
                    ),
                ));
            }
            if lower.starts_with("ldaps://") && starttls {
                let span = raw_starttls.as_ref().map_or(raw_url.span(), Spanned::span);
                return Err(self.invalid(
                    &format!("{section}.starttls"),
                    span,
                    "starttls is for ldap:// URLs; ldaps:// is TLS already",
                ));
            }
        }
        Ok((urls, starttls))
    }

    /// `password_file` or `password_env` of an LDAP section (exactly one).
    pub(super) fn password_source(
        &self,
        section: &str,
        bind_dn: &Spanned<String>,
        password_file: &Option<Spanned<PathBuf>>,
        password_env: &Option<Spanned<String>>,
    ) -> Result<PasswordSource, ConfigError> {
        let password = match (password_file, password_env) {
            (Some(file), None) => PasswordSource::File(file.get_ref().clone()),
            (None, Some(var)) if !var.get_ref().trim().is_empty() => {
                PasswordSource::Env(var.get_ref().trim().to_owned())
            }
            (None, Some(var)) => {
                return Err(self.invalid(
                    &format!("{section}.password_env"),
                    var.span(),
                    "expected the name of an environment variable",
                ));
            }
            (Some(_), Some(var)) => {
                return Err(self.invalid(
                    &format!("{section}.password_env"),
                    var.span(),
                    "give password_file or password_env, not both",
                ));
            }
            (None, None) => {
                return Err(self.invalid(
                    &format!("{section}.bind_dn"),
                    bind_dn.span(),
                    "the bind password is missing: set password_file (a file holding it) or \
                     password_env (an environment variable holding it)",
                ));
            }
        };
        Ok(password)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::Config;
    use crate::configurator::PasswordSource;

    const BASE: &str = "[[proxy.listener]]\naddress = \"127.0.0.1:8080\"\ntls = false\n";

    fn parse(section: &str) -> Result<Config, String> {
        Config::from_toml_str(&format!("{BASE}\n[configurator]\n{section}"), "t.toml")
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_fit_active_directory() {
        let c = parse(
            "url = \"ldaps://dc1.x\"\nbind_dn = \"svc@x\"\npassword_env = \"PW\"\nbase_dn = \"DC=x\"\n",
        )
        .unwrap()
        .configurator
        .unwrap();
        assert_eq!(c.urls, ["ldaps://dc1.x"]);
        assert_eq!(c.filter, "(objectClass=computer)");
        assert_eq!(c.fqdn_attribute, "dNSHostName");
        assert_eq!(c.netbios_attribute, "sAMAccountName");
        assert_eq!(
            c.ports.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["6001-6002", "6004"]
        );
        assert_eq!(c.interval, Duration::from_secs(900));
        assert_eq!(c.password, PasswordSource::Env("PW".into()));
        assert_eq!(c.group, None);
        assert!(
            Config::from_toml_str(BASE, "t.toml")
                .unwrap()
                .configurator
                .is_none()
        );
    }

    #[test]
    fn everything_set() {
        let c = parse(
            "url = [\"ldap://127.0.0.1\", \"ldap://dc2.x\"]\nstarttls = true\nca_file = \"/ca.pem\"\n\
             bind_dn = \"CN=svc,DC=x\"\npassword_file = \"/pw\"\nbase_dn = \"DC=x\"\n\
             filter = \"(cn=mbx*)\"\ngroup = \"RPC Servers\"\nports = \"593;6001-6002\"\n\
             interval_secs = 2\ntimeout_secs = 3\n",
        )
        .unwrap()
        .configurator
        .unwrap();
        assert_eq!(c.urls.len(), 2);
        assert_eq!(c.interval, Duration::from_secs(2));
        assert_eq!(c.timeout, Duration::from_secs(3));
        assert_eq!(c.group.as_deref(), Some("RPC Servers"));
        assert_eq!(c.password, PasswordSource::File("/pw".into()));
        let off = parse(
            "url = \"ldaps://d\"\nbind_dn = \"b\"\npassword_env = \"P\"\nbase_dn = \"DC=x\"\ninterval_minutes = 0\n",
        )
        .unwrap();
        assert_eq!(off.configurator.unwrap().interval, Duration::ZERO);
    }

    #[test]
    fn mistakes_are_named() {
        let base = "bind_dn = \"b\"\npassword_env = \"P\"\nbase_dn = \"DC=x\"\n";
        let err = |extra: &str| parse(&format!("{base}{extra}")).unwrap_err();
        assert!(err("url = \"ldap://dc1.x\"\n").contains("configurator.url"));
        assert!(err("url = \"http://dc1.x\"\n").contains("expected ldaps://"));
        assert!(err("url = \"ldaps://d\"\nstarttls = true\n").contains("configurator.starttls"));
        assert!(err("url = \"ldaps://d\"\nports = \"6001-\"\n").contains("configurator.ports"));
        assert!(err("url = \"ldaps://d\"\nfilter = \"cn=x\"\n").contains("configurator.filter"));
        assert!(
            err("url = \"ldaps://d\"\ninterval_minutes = 1\ninterval_secs = 1\n")
                .contains("not both")
        );
        assert!(err("url = \"ldaps://d\"\nbogus = 1\n").contains("bogus"));
        let e = parse("url = \"ldaps://d\"\nbind_dn = \"b\"\nbase_dn = \"DC=x\"\n").unwrap_err();
        assert!(e.contains("password_file"), "{e}");
        assert!(e.contains("line"), "{e}");
    }
}
