//! Validation of the authentication settings: `[auth]` (how credentials are verified, shared
//! by the listeners), and each listener's `auth` and `trusted_proxies`. What clients are told
//! (`[client]`) is kept apart, in [`super::client`].

use std::path::Path;
use std::time::Duration;

use toml::Spanned;

use super::{Ctx, schema};
use crate::auth::ldap::LdapConfig;
use crate::auth::ntlm::ServerNames;
use crate::auth::throttle::ThrottleLimits;
use crate::auth::{AllowRule, AuthSettings, Method, kerberos::KerberosConfig};
use crate::config::ConfigError;
use crate::proxy::forwarded::{IpNet, TrustedProxies};
use crate::valid_ports::{Origin, ValidPorts};

/// Default Basic realm.
pub const DEFAULT_REALM: &str = "rpcgate";
/// Default NetBIOS domain and computer name announced by NTLM.
pub const DEFAULT_NETBIOS_NAME: &str = "RPCGATE";
/// Default failures per user within the window before it is throttled.
pub const DEFAULT_MAX_FAILURES_PER_USER: u64 = 5;
/// Default failures per client address within the window before it is throttled.
pub const DEFAULT_MAX_FAILURES_PER_ADDRESS: u64 = 20;
/// Default throttling window (and lock-out), seconds.
pub const DEFAULT_FAILURE_WINDOW_SECS: u64 = 300;
/// Default LDAP timeout, seconds.
pub const DEFAULT_LDAP_TIMEOUT_SECS: u64 = 5;
/// Default LDAP user filter.
pub const DEFAULT_USER_FILTER: &str = "(sAMAccountName={user})";
/// The user file's name in the state directory when `users_file` is not given.
pub const DEFAULT_USERS_FILE: &str = "users";

/// A listener's authentication, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerAuthConfig {
    /// Methods in challenge order.
    pub methods: Vec<Method>,
    /// Unauthenticated requests are served.
    pub anonymous: bool,
    /// Load balancers this (TLS-offloaded) listener trusts; empty: none.
    pub trusted_proxies: TrustedProxies,
}

impl Ctx<'_> {
    pub(super) fn auth(
        &self,
        raw: &schema::Auth,
        state_dir: &Path,
    ) -> Result<AuthSettings, ConfigError> {
        let text = |value: &Option<Spanned<String>>,
                    key: &str,
                    default: &str|
         -> Result<String, ConfigError> {
            match value {
                None => Ok(default.to_owned()),
                Some(v)
                    if v.get_ref().trim().is_empty()
                        || v.get_ref().chars().any(char::is_control) =>
                {
                    Err(self.invalid(&format!("auth.{key}"), v.span(), "must be a non-empty name"))
                }
                Some(v) => Ok(v.get_ref().trim().to_owned()),
            }
        };
        let nb_domain = text(&raw.netbios_domain, "netbios_domain", DEFAULT_NETBIOS_NAME)?;
        let nb_computer = text(&raw.netbios_name, "netbios_name", DEFAULT_NETBIOS_NAME)?;
        let names = ServerNames {
            dns_domain: text(&raw.dns_domain, "dns_domain", &nb_domain.to_lowercase())?,
            dns_computer: text(&raw.dns_name, "dns_name", &nb_computer.to_lowercase())?,
            nb_domain,
            nb_computer,
        };
        let ntlm_helper = match &raw.ntlm_helper {
            Some(cmd) if cmd.get_ref().is_empty() => {
                return Err(self.invalid(
                    "auth.ntlm_helper",
                    cmd.span(),
                    "expected a command line as a list, e.g. [\"/usr/bin/ntlm_auth\", \
                     \"--helper-protocol=squid-2.5-ntlmssp\"]",
                ));
            }
            Some(cmd) => Some(cmd.get_ref().clone()),
            None => None,
        };
        let count = |key: &str, value: &Option<Spanned<schema::Count>>, default: u64| {
            self.ranged(&format!("auth.{key}"), value, default, 0..=1_000_000)
        };
        let throttle = ThrottleLimits {
            per_user: count(
                "max_failures_per_user",
                &raw.max_failures_per_user,
                DEFAULT_MAX_FAILURES_PER_USER,
            )? as u32,
            per_address: count(
                "max_failures_per_address",
                &raw.max_failures_per_address,
                DEFAULT_MAX_FAILURES_PER_ADDRESS,
            )? as u32,
            window: Duration::from_secs(self.ranged(
                "auth.failure_window_secs",
                &raw.failure_window_secs,
                DEFAULT_FAILURE_WINDOW_SECS,
                1..=86_400,
            )?),
        };
        let ldap = raw.ldap.as_ref().map(|l| self.ldap(l)).transpose()?;
        let kerberos = raw.kerberos.as_ref().map(|k| KerberosConfig {
            keytab: k.keytab.get_ref().clone(),
            principal: k.principal.as_ref().map(|p| p.get_ref().clone()),
        });
        let mut rules = Vec::new();
        for (index, allow) in raw.allow.iter().enumerate() {
            let key = format!("auth.allow[{index}].targets");
            if allow.users.is_empty() && allow.groups.is_empty() {
                return Err(self.invalid(
                    &key,
                    allow.targets.span(),
                    "the rule names no users and no groups",
                ));
            }
            let origin = Origin::Static {
                source: format!("auth.allow[{index}]"),
            };
            let targets = ValidPorts::parse(allow.targets.get_ref(), &origin)
                .map_err(|e| self.invalid(&key, allow.targets.span(), e.to_string()))?;
            rules.push(AllowRule {
                users: allow.users.clone(),
                groups: allow.groups.clone(),
                targets,
            });
        }
        Ok(AuthSettings {
            users_file: raw.users_file.as_ref().map_or_else(
                || state_dir.join(DEFAULT_USERS_FILE),
                |f| f.get_ref().clone(),
            ),
            realm: text(&raw.realm, "realm", DEFAULT_REALM)?,
            names,
            allow_ntlmv1: raw.allow_ntlmv1.as_ref().is_some_and(|v| *v.get_ref()),
            ldap,
            ntlm_helper,
            kerberos,
            throttle,
            rules,
        })
    }

    fn ldap(&self, raw: &schema::Ldap) -> Result<LdapConfig, ConfigError> {
        let url = raw.url.get_ref().trim().to_owned();
        let lower = url.to_ascii_lowercase();
        let starttls = raw.starttls.as_ref().is_some_and(|v| *v.get_ref());
        let host = lower
            .strip_prefix("ldaps://")
            .or_else(|| lower.strip_prefix("ldap://"))
            .ok_or_else(|| {
                self.invalid(
                    "auth.ldap.url",
                    raw.url.span(),
                    "expected ldaps://host[:port] or ldap://host[:port]",
                )
            })?;
        let host = host.split('/').next().unwrap_or_default();
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
                "auth.ldap.url",
                raw.url.span(),
                "plain ldap:// would send passwords in clear: use ldaps://, set starttls = true, \
                 or use a loopback server",
            ));
        }
        if lower.starts_with("ldaps://") && starttls {
            let span = raw.starttls.as_ref().map_or(raw.url.span(), Spanned::span);
            return Err(self.invalid(
                "auth.ldap.starttls",
                span,
                "starttls is for ldap:// URLs; ldaps:// is TLS already",
            ));
        }
        if !raw.bind_dn.get_ref().contains("{user}") {
            return Err(self.invalid(
                "auth.ldap.bind_dn",
                raw.bind_dn.span(),
                "expected a template containing {user}, e.g. \"{user}@samdom.example.com\" or \
                 \"uid={user},ou=people,dc=example,dc=org\"",
            ));
        }
        let user_filter = raw
            .user_filter
            .as_ref()
            .map_or(DEFAULT_USER_FILTER.to_owned(), |f| f.get_ref().clone());
        if !user_filter.contains("{user}") {
            let span = raw.user_filter.as_ref().map_or(0..0, Spanned::span);
            return Err(self.invalid(
                "auth.ldap.user_filter",
                span,
                "expected a filter containing {user}",
            ));
        }
        if let Some(group) = &raw.require_group
            && raw.base_dn.is_none()
        {
            return Err(self.invalid(
                "auth.ldap.require_group",
                group.span(),
                "needs base_dn, where the user's entry (and its memberOf) is searched",
            ));
        }
        let opt = |v: &Option<Spanned<String>>| v.as_ref().map(|s| s.get_ref().trim().to_owned());
        Ok(LdapConfig {
            url,
            starttls,
            ca_file: raw.ca_file.as_ref().map(|f| f.get_ref().clone()),
            bind_dn: raw.bind_dn.get_ref().clone(),
            domain: opt(&raw.domain),
            upn_suffix: opt(&raw.upn_suffix),
            base_dn: opt(&raw.base_dn),
            user_filter,
            require_group: opt(&raw.require_group),
            timeout: Duration::from_secs(self.ranged(
                "auth.ldap.timeout_secs",
                &raw.timeout_secs,
                DEFAULT_LDAP_TIMEOUT_SECS,
                1..=120,
            )?),
        })
    }

    /// A listener's `auth`, `allow_anonymous` and `trusted_proxies`, with the rules that tie
    /// them to its address and TLS.
    pub(super) fn listener_auth(
        &self,
        index: usize,
        raw: &schema::Listener,
        loopback: bool,
        tls: bool,
    ) -> Result<ListenerAuthConfig, ConfigError> {
        let key = |name: &str| format!("proxy.listener[{index}].{name}");
        let address = raw.address.get_ref().0;
        let allow_anonymous = raw.allow_anonymous.as_ref().is_some_and(|a| *a.get_ref());
        let mut trusted = Vec::new();
        if let Some(list) = &raw.trusted_proxies {
            if list.get_ref().is_empty() {
                return Err(self.invalid(
                    &key("trusted_proxies"),
                    list.span(),
                    "expected at least one address or network",
                ));
            }
            for entry in list.get_ref() {
                trusted.push(
                    IpNet::parse(entry)
                        .map_err(|e| self.invalid(&key("trusted_proxies"), list.span(), e))?,
                );
            }
        }
        let trusted_proxies = TrustedProxies(trusted);
        if !tls && !loopback && !trusted_proxies.is_enabled() && !allow_anonymous {
            let span = raw.tls.as_ref().map_or(raw.address.span(), Spanned::span);
            return Err(self.invalid(
                &key("tls"),
                span,
                format!(
                    "plain HTTP is only allowed on loopback addresses and {address} is not one: \
                     set tls = true, listen on 127.0.0.1 / [::1], or name the TLS-offloading \
                     load balancers in trusted_proxies"
                ),
            ));
        }
        let (mut methods, mut anonymous) = (Vec::new(), false);
        match &raw.auth {
            None => {
                if !loopback && !allow_anonymous {
                    let span = raw
                        .allow_anonymous
                        .as_ref()
                        .map_or(raw.address.span(), Spanned::span);
                    return Err(self.invalid(
                        &key("allow_anonymous"),
                        span,
                        format!(
                            "{address} is not a loopback address and no authentication is \
                             configured: set auth = [\"ntlm\", \"basic\"] (or other methods), \
                             or allow_anonymous = true to accept anonymous clients from the network"
                        ),
                    ));
                }
                anonymous = true;
            }
            Some(list) => {
                if list.get_ref().is_empty() {
                    return Err(self.invalid(&key("auth"), list.span(), "expected at least one of \"negotiate\", \"ntlm\", \"basic\", \"anonymous\""));
                }
                for name in list.get_ref() {
                    if name.eq_ignore_ascii_case("anonymous") {
                        if anonymous {
                            return Err(self.invalid(
                                &key("auth"),
                                list.span(),
                                "\"anonymous\" is listed twice",
                            ));
                        }
                        anonymous = true;
                        continue;
                    }
                    let method = parse_method(name).ok_or_else(|| {
                        self.invalid(
                            &key("auth"),
                            list.span(),
                            format!("unknown method {name:?}: expected \"negotiate\", \"ntlm\", \"basic\" or \"anonymous\""),
                        )
                    })?;
                    if methods.contains(&method) {
                        return Err(self.invalid(
                            &key("auth"),
                            list.span(),
                            format!("{name:?} is listed twice"),
                        ));
                    }
                    methods.push(method);
                }
                if anonymous && !loopback && !allow_anonymous {
                    return Err(self.invalid(
                        &key("auth"),
                        list.span(),
                        format!("\"anonymous\" on {address}, which is not a loopback address, needs allow_anonymous = true"),
                    ));
                }
                if allow_anonymous && !anonymous {
                    let span = raw
                        .allow_anonymous
                        .as_ref()
                        .map_or(list.span(), Spanned::span);
                    return Err(self.invalid(
                        &key("allow_anonymous"),
                        span,
                        "allow_anonymous = true has no effect unless auth lists \"anonymous\"",
                    ));
                }
            }
        }
        if methods.contains(&Method::Basic) && !tls && !loopback && !trusted_proxies.is_enabled() {
            return Err(self.invalid(
                &key("auth"),
                raw.auth.as_ref().map_or(raw.address.span(), Spanned::span),
                "Basic sends passwords in clear: offer it on TLS listeners, loopback listeners \
                 or behind TLS-offloading trusted_proxies only",
            ));
        }
        Ok(ListenerAuthConfig {
            methods,
            anonymous,
            trusted_proxies,
        })
    }
}

/// A method name of the config file.
pub fn parse_method(name: &str) -> Option<Method> {
    [Method::Negotiate, Method::Ntlm, Method::Basic]
        .into_iter()
        .find(|m| m.config_name().eq_ignore_ascii_case(name.trim()))
}
