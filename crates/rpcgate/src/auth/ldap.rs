//! Basic credentials checked with an LDAP simple bind against a directory (Active Directory,
//! Samba AD, OpenLDAP), optionally requiring membership of a group.
//!
//! The user name arrives as `user`, `DOMAIN\user` or `user@upn.suffix`. A domain or suffix,
//! when given, must be the configured one; the bare name is then put into `bind_dn` (a
//! template with `{user}`: `{user}@samdom.example.com`, `SAMDOM\{user}`, or
//! `uid={user},ou=people,dc=example,dc=org`), DN-escaped when the template is a DN. An empty
//! password is refused before anything is sent: LDAP treats a simple bind with an empty
//! password as an *unauthenticated* bind that succeeds. After a successful bind the user's
//! entry is searched (`user_filter`, LDAP-escaped) for `memberOf`, which gives the groups used
//! by `require_group` and by authorization rules.
//!
//! Transport: `ldaps://` (TLS from the start) or `ldap://` with `starttls = true`; plain
//! `ldap://` without StartTLS is accepted by the configuration only for loopback servers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use ldap3::{LdapConnAsync, LdapConnSettings, Scope, SearchEntry};

use super::names::UserName;

/// `[auth.ldap]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LdapConfig {
    /// `ldaps://host[:port]` or `ldap://host[:port]`.
    pub url: String,
    /// Use StartTLS on an `ldap://` URL.
    pub starttls: bool,
    /// CA certificate (PEM) the server's certificate must chain to; default: system bundle.
    pub ca_file: Option<PathBuf>,
    /// Bind DN template with `{user}`.
    pub bind_dn: String,
    /// The NetBIOS domain accepted in `DOMAIN\user` (case-insensitive); `None` accepts none.
    pub domain: Option<String>,
    /// The UPN suffix accepted in `user@suffix`; `None` accepts none.
    pub upn_suffix: Option<String>,
    /// Search base for the user's entry (needed for groups).
    pub base_dn: Option<String>,
    /// Filter template with `{user}`, default `(sAMAccountName={user})`.
    pub user_filter: String,
    /// DN (or CN) of a group the user must be a direct member of.
    pub require_group: Option<String>,
    /// Connect + bind + search timeout.
    pub timeout: Duration,
}

/// The outcome of an LDAP check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LdapOutcome {
    /// Bound (and in the required group): the canonical name and the groups (DNs and CNs).
    Ok { name: String, groups: Vec<String> },
    /// Wrong credentials, unknown user, or not in the required group.
    Denied(String),
    /// The directory could not be asked (network, TLS, timeout): not the user's fault.
    Unavailable(String),
}

/// Checks `user`/`password` with a simple bind.
pub async fn check(config: &LdapConfig, user: &UserName, password: &str) -> LdapOutcome {
    let Some(bare) = accepts(config, user) else {
        return LdapOutcome::Denied(format!("{user} is not in the directory's domain"));
    };
    if password.is_empty() {
        return LdapOutcome::Denied("empty password".into());
    }
    match tokio::time::timeout(config.timeout, bind_and_search(config, &bare, password)).await {
        Ok(outcome) => outcome,
        Err(_) => LdapOutcome::Unavailable(format!(
            "no answer from {} within {} s",
            config.url,
            config.timeout.as_secs()
        )),
    }
}

/// The bare user name if the domain or UPN suffix given (if any) is this directory's.
fn accepts(config: &LdapConfig, user: &UserName) -> Option<String> {
    let matches = |given: &Option<String>, wanted: &Option<String>| match (given, wanted) {
        (None, _) => true,
        (Some(g), Some(w)) => g.eq_ignore_ascii_case(w),
        (Some(_), None) => false,
    };
    (matches(&user.domain, &config.domain) && matches(&user.upn_suffix, &config.upn_suffix))
        .then(|| user.name.clone())
}

/// The bind DN for a bare user name.
pub fn bind_dn(template: &str, user: &str) -> String {
    let is_dn = template.contains('=');
    let value = if is_dn {
        escape_dn_value(user)
    } else {
        user.to_owned()
    };
    template.replace("{user}", &value)
}

async fn bind_and_search(config: &LdapConfig, user: &str, password: &str) -> LdapOutcome {
    let mut settings = LdapConnSettings::new()
        .set_conn_timeout(config.timeout)
        .set_starttls(config.starttls);
    if config.url.to_ascii_lowercase().starts_with("ldaps://") || config.starttls {
        match crate::tls::client_config(config.ca_file.as_deref(), false) {
            Ok(tls) => {
                let mut tls = (*tls).clone();
                tls.alpn_protocols.clear();
                settings = settings.set_config(Arc::new(tls));
            }
            Err(e) => return LdapOutcome::Unavailable(format!("LDAP TLS configuration: {e}")),
        }
    }
    let (conn, mut ldap) = match LdapConnAsync::with_settings(settings, &config.url).await {
        Ok(pair) => pair,
        Err(e) => return LdapOutcome::Unavailable(format!("cannot reach {}: {e}", config.url)),
    };
    crate::tasks::spawn(async move {
        if let Err(e) = conn.drive().await {
            tracing::debug!("LDAP connection ended: {e}");
        }
    });
    let dn = bind_dn(&config.bind_dn, user);
    let bound = match ldap.simple_bind(&dn, password).await {
        Ok(result) => result,
        Err(e) => return LdapOutcome::Unavailable(format!("LDAP bind: {e}")),
    };
    // strongerAuthRequired, confidentialityRequired: the directory wants TLS (Samba and AD
    // refuse simple binds on plain connections by default). Not the user's fault.
    if bound.rc == 8 || bound.rc == 13 {
        let _ = ldap.unbind().await;
        return LdapOutcome::Unavailable(format!(
            "{} refuses simple binds without TLS (LDAP result {}): use ldaps:// or starttls = true",
            config.url, bound.rc
        ));
    }
    if bound.rc != 0 {
        let _ = ldap.unbind().await;
        // 49 invalidCredentials; anything else is reported with its code.
        return LdapOutcome::Denied(format!("bind as {dn} refused (LDAP result {})", bound.rc));
    }
    let mut groups = Vec::new();
    if let Some(base) = &config.base_dn {
        let filter = config
            .user_filter
            .replace("{user}", &escape_filter_value(user));
        match ldap
            .search(base, Scope::Subtree, &filter, vec!["memberOf"])
            .await
            .and_then(|r| r.success())
        {
            Ok((entries, _)) => {
                for entry in entries {
                    let entry = SearchEntry::construct(entry);
                    for dn in entry.attrs.get("memberOf").into_iter().flatten() {
                        groups.push(dn.clone());
                        if let Some(cn) = first_cn(dn) {
                            groups.push(cn);
                        }
                    }
                }
            }
            Err(e) => {
                let _ = ldap.unbind().await;
                return LdapOutcome::Unavailable(format!("LDAP search for {user}: {e}"));
            }
        }
    }
    let _ = ldap.unbind().await;
    if let Some(required) = &config.require_group
        && !groups.iter().any(|g| g.eq_ignore_ascii_case(required))
    {
        return LdapOutcome::Denied(format!("{user} is not a member of {required}"));
    }
    LdapOutcome::Ok {
        name: user.to_owned(),
        groups,
    }
}

/// The value of the first `CN=` RDN of a DN.
fn first_cn(dn: &str) -> Option<String> {
    let first = dn.split(',').next()?.trim();
    let (attr, value) = first.split_once('=')?;
    attr.trim()
        .eq_ignore_ascii_case("cn")
        .then(|| value.trim().to_owned())
}

/// RFC 4514 escaping of an attribute value.
pub fn escape_dn_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let last = value.chars().count().saturating_sub(1);
    for (i, c) in value.chars().enumerate() {
        match c {
            ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '#' | ' ' if i == 0 => {
                out.push('\\');
                out.push(c);
            }
            ' ' if i == last => out.push_str("\\ "),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

/// RFC 4515 escaping of a filter value.
pub fn escape_filter_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '*' => out.push_str("\\2a"),
            '(' => out.push_str("\\28"),
            ')' => out.push_str("\\29"),
            '\\' => out.push_str("\\5c"),
            '\0' => out.push_str("\\00"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> LdapConfig {
        LdapConfig {
            url: "ldaps://dc.samdom.example.com".into(),
            starttls: false,
            ca_file: None,
            bind_dn: "{user}@samdom.example.com".into(),
            domain: Some("SAMDOM".into()),
            upn_suffix: Some("samdom.example.com".into()),
            base_dn: None,
            user_filter: "(sAMAccountName={user})".into(),
            require_group: None,
            timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn user_forms_and_domains() {
        let c = config();
        assert_eq!(accepts(&c, &UserName::parse("alice")), Some("alice".into()));
        assert_eq!(
            accepts(&c, &UserName::parse("samdom\\alice")),
            Some("alice".into())
        );
        assert_eq!(
            accepts(&c, &UserName::parse("alice@SAMDOM.example.com")),
            Some("alice".into())
        );
        assert_eq!(accepts(&c, &UserName::parse("OTHER\\alice")), None);
        assert_eq!(accepts(&c, &UserName::parse("alice@other.org")), None);
    }

    #[test]
    fn escaping() {
        assert_eq!(
            bind_dn("uid={user},ou=people,dc=x", "a,b=c"),
            "uid=a\\,b\\=c,ou=people,dc=x"
        );
        assert_eq!(bind_dn("{user}@x.org", "a,b"), "a,b@x.org");
        assert_eq!(escape_dn_value(" #a "), "\\ #a\\ ");
        assert_eq!(escape_filter_value("a*)(x=1"), "a\\2a\\29\\28x=1");
        assert_eq!(
            first_cn("CN=RPC Users,CN=Users,DC=x"),
            Some("RPC Users".into())
        );
    }

    #[tokio::test]
    async fn empty_password_is_refused_without_a_connection() {
        let outcome = check(&config(), &UserName::parse("alice"), "").await;
        assert!(matches!(outcome, LdapOutcome::Denied(_)), "{outcome:?}");
    }
}
