//! Authentication and authorization at the proxy: who may open a channel, and to which
//! targets.
//!
//! A listener offers methods in a configured order ([`Method`]: `Negotiate`, `NTLM`,
//! `Basic`), each as one `WWW-Authenticate` challenge on a `401` that has `Content-Length: 0`
//! and keeps the connection open (notes §2.4, §2.6). [`ListenerAuth::authenticate`] looks at
//! one request head and the connection's [`ConnAuth`] and returns a [`Verdict`]:
//!
//! - **Basic** (`Authorization: Basic base64(user:password)`) is checked on every request
//!   against the local user file ([`users`]: argon2id) or an LDAP simple bind ([`ldap`]).
//! - **NTLM** is connection-based (MS-NTHT): the NEGOTIATE leg gets a `401` carrying the
//!   CHALLENGE, the AUTHENTICATE leg is verified ([`ntlm`]) and the result stays with the TCP
//!   connection. So both client patterns work: the final token on the channel request itself
//!   (impacket, FreeRDP, Samba), and authentication on an echo request followed by a channel
//!   request without `Authorization` on the same connection (Windows, Wine). Local accounts
//!   are verified with the NT hash of the user file; accounts of another domain go to
//!   winbind's `ntlm_auth` ([`helper`]) when one is configured.
//! - **Negotiate** is SPNEGO ([`spnego`]) carrying NTLM, handled as above, or Kerberos,
//!   which needs GSS-API and a keytab ([`kerberos`]).
//!
//! Failures are throttled per user and per client address ([`throttle`]); secrets are
//! compared in constant time (argon2's verifier, `subtle` for NTLM) and never logged: log lines
//! carry the user name, the method and the client address, nothing from a token.
//! Authorization ([`Authorization`]) optionally limits which ValidPorts targets a user may
//! reach; a refusal is answered `503 RPC Error: 5` (ERROR_ACCESS_DENIED) by the caller.

pub mod helper;
pub mod kerberos;
pub mod ldap;
pub mod names;
pub mod ntlm;
pub mod spnego;
pub mod throttle;
pub mod users;

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tracing::{info, warn};

use crate::http::{RequestHead, Target};
use crate::valid_ports::ValidPorts;
use names::UserName;
use ntlm::ServerNames;
use throttle::{Throttle, ThrottleLimits};
use users::UserStore;

/// An HTTP authentication method a listener offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `Negotiate` (SPNEGO: Kerberos or NTLM).
    Negotiate,
    /// `NTLM`.
    Ntlm,
    /// `Basic`.
    Basic,
}

impl Method {
    /// The scheme name on the wire.
    pub fn scheme(self) -> &'static str {
        match self {
            Self::Negotiate => "Negotiate",
            Self::Ntlm => "NTLM",
            Self::Basic => "Basic",
        }
    }

    /// The name in the config file.
    pub fn config_name(self) -> &'static str {
        match self {
            Self::Negotiate => "negotiate",
            Self::Ntlm => "ntlm",
            Self::Basic => "basic",
        }
    }
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The account as logged: `alice`, `SAMDOM\alice`, or `anonymous`.
    pub name: String,
    /// The bare account name (for authorization rules).
    pub account: String,
    /// Groups: from the user file, or the directory's `memberOf` (DNs and CNs).
    pub groups: Vec<String>,
    /// How: `anonymous`, `basic`, `ntlm`, `negotiate-ntlm`, `negotiate-kerberos`.
    pub method: &'static str,
}

impl Identity {
    /// The identity of an unauthenticated request on a listener that accepts them.
    pub fn anonymous() -> Self {
        Self {
            name: "anonymous".into(),
            account: "anonymous".into(),
            groups: Vec::new(),
            method: "anonymous",
        }
    }
}

/// `[auth]`, validated: everything about verifying credentials that is shared by listeners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// The local user file.
    pub users_file: PathBuf,
    /// The Basic realm.
    pub realm: String,
    /// Names announced in NTLM challenges; local accounts accept these as their domain.
    pub names: ServerNames,
    /// Accept NTLMv1 responses (never LM alone).
    pub allow_ntlmv1: bool,
    /// LDAP simple bind for Basic.
    pub ldap: Option<ldap::LdapConfig>,
    /// winbind's `ntlm_auth` command line for NTLM with domain accounts.
    pub ntlm_helper: Option<Vec<String>>,
    /// Kerberos (Negotiate) acceptor settings.
    pub kerberos: Option<kerberos::KerberosConfig>,
    /// Failed-authentication limits.
    pub throttle: ThrottleLimits,
    /// Authorization rules (empty: every authenticated user may reach every target).
    pub rules: Vec<AllowRule>,
}

/// `[[auth.allow]]`: users and groups, and the targets they may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    pub users: Vec<String>,
    pub groups: Vec<String>,
    pub targets: ValidPorts,
}

/// Verifies credentials; one per gateway, shared by its listeners.
#[derive(Debug)]
pub struct AuthCore {
    pub settings: AuthSettings,
    users: UserStore,
    throttle: Throttle,
    kerberos: Option<kerberos::Acceptor>,
    /// One permit per running `ntlm_auth` (each unauthenticated NEGOTIATE starts one).
    helpers: Arc<tokio::sync::Semaphore>,
}

impl AuthCore {
    /// Opens the user file and prepares the Kerberos acceptor.
    pub fn new(settings: AuthSettings) -> Result<Arc<Self>, String> {
        let users = UserStore::open(&settings.users_file).map_err(|e| e.to_string())?;
        let kerberos = match &settings.kerberos {
            Some(config) => Some(kerberos::Acceptor::new(config)?),
            None => None,
        };
        Ok(Arc::new(Self {
            throttle: Throttle::new(settings.throttle),
            helpers: Arc::new(tokio::sync::Semaphore::new(helper::MAX_HELPERS)),
            users,
            kerberos,
            settings,
        }))
    }

    /// Whether `identity` may reach `target` under the authorization rules.
    pub fn authorize(&self, identity: &Identity, target: &Target) -> bool {
        authorize(&self.settings.rules, identity, target)
    }

    /// Whether a domain (or UPN suffix) given with a user name means a local account.
    fn is_local(&self, user: &UserName) -> bool {
        let n = &self.settings.names;
        let ours = |given: &str| {
            [&n.nb_domain, &n.nb_computer, &n.dns_domain, &n.dns_computer]
                .iter()
                .any(|name| !name.is_empty() && name.eq_ignore_ascii_case(given))
        };
        user.domain.as_deref().is_none_or(ours) && user.upn_suffix.as_deref().is_none_or(ours)
    }
}

/// Whether `identity` may reach `target` under `rules` (no rules: yes).
pub fn authorize(rules: &[AllowRule], identity: &Identity, target: &Target) -> bool {
    if rules.is_empty() {
        return true;
    }
    rules.iter().any(|rule| {
        let user_match = rule.users.iter().any(|u| {
            u.eq_ignore_ascii_case(&identity.account) || u.eq_ignore_ascii_case(&identity.name)
        });
        let group_match = rule.groups.iter().any(|g| {
            identity
                .groups
                .iter()
                .any(|have| have.eq_ignore_ascii_case(g))
        });
        (user_match || group_match) && rule.targets.allows(&target.host, target.port).is_some()
    })
}

/// A listener's authentication: what it offers and whether it accepts anonymous requests.
#[derive(Clone)]
pub struct ListenerAuth {
    /// Methods in challenge order.
    pub methods: Vec<Method>,
    /// Requests without credentials are served (as [`Identity::anonymous`]).
    pub anonymous: bool,
    /// The verifier; `None` when the listener offers no method.
    pub core: Option<Arc<AuthCore>>,
}

impl fmt::Debug for ListenerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenerAuth")
            .field("methods", &self.methods)
            .field("anonymous", &self.anonymous)
            .finish()
    }
}

/// The authentication state of one TCP connection (NTLM and Negotiate are connection-based).
#[derive(Debug, Default)]
pub struct ConnAuth {
    pending: Option<Pending>,
    /// Who the connection authenticated as with NTLM or Negotiate.
    identity: Option<Identity>,
}

impl ConnAuth {
    /// The identity the connection authenticated as, if any.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_ref()
    }
}

/// A handshake between its legs.
enum Pending {
    Ntlm {
        /// How the tokens travel: `NTLM` raw, or inside SPNEGO under `Negotiate`.
        wrap: Wrap,
        server_challenge: [u8; 8],
        /// The winbind helper that made the challenge, if one did.
        helper: Option<Box<helper::Helper>>,
    },
    /// Negotiate asked the client to switch to NTLM; its NEGOTIATE_MESSAGE comes next.
    SpnegoNtlmSelected,
    Kerberos(kerberos::Context),
}

impl fmt::Debug for Pending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ntlm { wrap, helper, .. } => f
                .debug_struct("Ntlm")
                .field("wrap", wrap)
                .field("helper", &helper.is_some())
                .finish_non_exhaustive(),
            Self::SpnegoNtlmSelected => f.write_str("SpnegoNtlmSelected"),
            Self::Kerberos(_) => f.write_str("Kerberos"),
        }
    }
}

/// How NTLM tokens are carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wrap {
    /// `Authorization: NTLM <token>`.
    Ntlm,
    /// `Authorization: Negotiate <raw NTLM token>` (some clients skip SPNEGO).
    NegotiateRaw,
    /// `Authorization: Negotiate <SPNEGO token>`.
    Spnego,
}

/// Why a request was not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denial {
    /// No credentials (or a scheme this listener does not offer): not a failure.
    NoCredentials,
    /// Wrong credentials, unknown user, or a broken handshake: counted and throttled.
    Failed,
    /// The user or address is locked out by throttling; nothing was verified.
    Throttled,
}

/// What to do with a request.
#[derive(Debug)]
pub enum Verdict {
    /// Serve it as `identity`; `headers` go on a `200` response if one is written (the final
    /// Negotiate token).
    Allow {
        identity: Identity,
        headers: Vec<(String, String)>,
    },
    /// Answer `401` with these headers (the next leg of a handshake).
    Continue { headers: Vec<(String, String)> },
    /// Answer `401` with the listener's challenges.
    Deny(Denial),
}

impl ListenerAuth {
    /// A listener that serves everyone without credentials.
    pub fn anonymous_only() -> Self {
        Self {
            methods: Vec::new(),
            anonymous: true,
            core: None,
        }
    }

    /// The `WWW-Authenticate` headers of a plain `401`, in the configured order.
    pub fn challenges(&self) -> Vec<(String, String)> {
        let realm = self
            .core
            .as_ref()
            .map_or("rpcgate", |c| c.settings.realm.as_str());
        self.methods
            .iter()
            .map(|m| {
                let value = match m {
                    Method::Basic => format!("Basic realm=\"{}\"", realm.replace('"', "")),
                    other => other.scheme().to_owned(),
                };
                ("WWW-Authenticate".to_owned(), value)
            })
            .collect()
    }

    /// Decides about one request. `client` is the client's address (after X-Forwarded-For).
    pub async fn authenticate(
        &self,
        head: &RequestHead,
        conn: &mut ConnAuth,
        client: IpAddr,
    ) -> Verdict {
        let Some(header) = head.header("authorization") else {
            if let Some(identity) = &conn.identity {
                return Verdict::Allow {
                    identity: identity.clone(),
                    headers: Vec::new(),
                };
            }
            if self.anonymous {
                return Verdict::Allow {
                    identity: Identity::anonymous(),
                    headers: Vec::new(),
                };
            }
            return Verdict::Deny(Denial::NoCredentials);
        };
        let (scheme, token) = match header.split_once(' ') {
            Some((scheme, token)) => (scheme, token.trim()),
            None => (header, ""),
        };
        let method = self
            .methods
            .iter()
            .copied()
            .find(|m| m.scheme().eq_ignore_ascii_case(scheme));
        let (Some(method), Some(core)) = (method, self.core.as_ref()) else {
            // Credentials for a scheme this listener does not offer are ignored, as IIS
            // does: an anonymous listener serves the request (impacket sends Basic at once
            // whatever the listener wants), any other asks for what it offers.
            conn.pending = None;
            let known = conn.identity.clone();
            if let Some(identity) = known.or_else(|| self.anonymous.then(Identity::anonymous)) {
                return Verdict::Allow {
                    identity,
                    headers: Vec::new(),
                };
            }
            return Verdict::Deny(Denial::NoCredentials);
        };
        let Ok(token) = B64.decode(token) else {
            conn.pending = None;
            info!(%client, method = method.config_name(), "authentication failed: the token is not base64");
            return Verdict::Deny(Denial::Failed);
        };
        match method {
            Method::Basic => basic(core, &token, client).await,
            Method::Ntlm => connection_based(core, conn, Wrap::Ntlm, &token, client).await,
            Method::Negotiate => negotiate(core, conn, &token, client).await,
        }
    }
}

fn failed(core: &AuthCore, client: IpAddr, user: Option<&str>, method: &str, why: &str) -> Verdict {
    let locked = core.throttle.failure(client, user, Instant::now());
    warn!(
        %client,
        user = user.unwrap_or("-"),
        method,
        "authentication failed: {why}{}",
        match locked {
            Some(throttle::Locked::User) => " (user now throttled)",
            Some(throttle::Locked::Address) => " (address now throttled)",
            None => "",
        }
    );
    Verdict::Deny(Denial::Failed)
}

fn throttled(core: &AuthCore, client: IpAddr, user: Option<&str>, method: &str) -> Option<Verdict> {
    let locked = core.throttle.check(client, user, Instant::now())?;
    warn!(
        %client,
        user = user.unwrap_or("-"),
        method,
        "authentication refused without checking: too many failures for this {}",
        match locked {
            throttle::Locked::User => "user",
            throttle::Locked::Address => "address",
        }
    );
    Some(Verdict::Deny(Denial::Throttled))
}

fn allowed(
    core: &AuthCore,
    identity: Identity,
    client: IpAddr,
    headers: Vec<(String, String)>,
) -> Verdict {
    core.throttle.success(&identity.account);
    info!(%client, user = %identity.name, method = identity.method, "authenticated");
    Verdict::Allow { identity, headers }
}

async fn basic(core: &AuthCore, token: &[u8], client: IpAddr) -> Verdict {
    let text = match std::str::from_utf8(token) {
        Ok(text) => text.to_owned(),
        // RFC 7617 leaves the charset open; old clients send Latin-1.
        Err(_) => token.iter().map(|&b| char::from(b)).collect(),
    };
    let Some((user_text, password)) = text.split_once(':') else {
        return failed(core, client, None, "basic", "no ':' in the credentials");
    };
    let user = UserName::parse(user_text);
    if let Some(verdict) = throttled(core, client, Some(&user.name), "basic") {
        return verdict;
    }
    let local = core
        .is_local(&user)
        .then(|| core.users.find(&user.name))
        .flatten();
    if let Some(account) = local {
        let hash = account.password_hash.clone();
        let password = password.to_owned();
        let ok = tokio::task::spawn_blocking(move || users::verify_password(&hash, &password))
            .await
            .unwrap_or(false);
        if ok {
            let identity = Identity {
                name: account.name.clone(),
                account: account.name.clone(),
                groups: account.groups.clone(),
                method: "basic",
            };
            return allowed(core, identity, client, Vec::new());
        }
        return failed(
            core,
            client,
            Some(&user.name),
            "basic",
            "wrong password (user file)",
        );
    }
    if let Some(config) = &core.settings.ldap {
        return match ldap::check(config, &user, password).await {
            ldap::LdapOutcome::Ok { name, groups } => {
                let display = match &config.domain {
                    Some(domain) => format!("{domain}\\{name}"),
                    None => name.clone(),
                };
                let identity = Identity {
                    name: display,
                    account: name,
                    groups,
                    method: "basic-ldap",
                };
                allowed(core, identity, client, Vec::new())
            }
            ldap::LdapOutcome::Denied(why) => failed(core, client, Some(&user.name), "basic", &why),
            ldap::LdapOutcome::Unavailable(why) => {
                // Not the user's fault: not counted against them.
                warn!(%client, user = %user, "authentication impossible: the directory is unavailable: {why}");
                Verdict::Deny(Denial::Failed)
            }
        };
    }
    // Spend the time a real verification takes, so that timing does not reveal which users
    // exist.
    let password = password.to_owned();
    let _ =
        tokio::task::spawn_blocking(move || users::verify_password(users::dummy_hash(), &password))
            .await;
    failed(core, client, Some(&user.name), "basic", "no such user")
}

/// The `WWW-Authenticate` header carrying `token` the way the client's tokens travel.
fn wrapped(wrap: Wrap, token: &[u8], state: spnego::NegState) -> (String, String) {
    let value = match wrap {
        Wrap::Ntlm => format!("NTLM {}", B64.encode(token)),
        Wrap::NegotiateRaw => format!("Negotiate {}", B64.encode(token)),
        Wrap::Spnego => {
            let mech = (state == spnego::NegState::AcceptIncomplete).then_some(spnego::OID_NTLMSSP);
            let resp = spnego::build_resp(state, mech, (!token.is_empty()).then_some(token));
            format!("Negotiate {}", B64.encode(resp))
        }
    };
    ("WWW-Authenticate".to_owned(), value)
}

async fn negotiate(core: &AuthCore, conn: &mut ConnAuth, token: &[u8], client: IpAddr) -> Verdict {
    if token.starts_with(ntlm::SIGNATURE) {
        return connection_based(core, conn, Wrap::NegotiateRaw, token, client).await;
    }
    let parsed = match spnego::parse_client_token(token) {
        Ok(parsed) => parsed,
        Err(e) => {
            conn.pending = None;
            return failed(core, client, None, "negotiate", &e.to_string());
        }
    };
    match parsed {
        spnego::ClientToken::Init { mechs, mech_token } => {
            conn.pending = None;
            conn.identity = None;
            let first = mechs.first().copied();
            if first == Some(spnego::Mech::Kerberos)
                && let (Some(acceptor), Some(_)) = (&core.kerberos, &mech_token)
            {
                // GSS-API's own SPNEGO handles the whole token (and its MIC).
                return kerberos_step(core, conn, acceptor.new_context(), token, client);
            }
            if !mechs.contains(&spnego::Mech::Ntlm) {
                return failed(
                    core,
                    client,
                    None,
                    "negotiate",
                    "the client offers neither NTLM nor usable Kerberos",
                );
            }
            match mech_token {
                Some(inner) if first == Some(spnego::Mech::Ntlm) => {
                    connection_based(core, conn, Wrap::Spnego, &inner, client).await
                }
                // The optimistic token is for another mechanism: select NTLM and wait for its
                // first token (RFC 4178 3.2).
                _ => {
                    conn.pending = Some(Pending::SpnegoNtlmSelected);
                    Verdict::Continue {
                        headers: vec![wrapped(
                            Wrap::Spnego,
                            &[],
                            spnego::NegState::AcceptIncomplete,
                        )],
                    }
                }
            }
        }
        spnego::ClientToken::Resp { response_token } => {
            let inner = response_token.unwrap_or_default();
            match conn.pending.take() {
                Some(Pending::Kerberos(context)) => {
                    kerberos_step(core, conn, context, token, client)
                }
                Some(pending @ (Pending::Ntlm { .. } | Pending::SpnegoNtlmSelected)) => {
                    conn.pending = Some(pending);
                    connection_based(core, conn, Wrap::Spnego, &inner, client).await
                }
                None => failed(
                    core,
                    client,
                    None,
                    "negotiate",
                    "a continuation token without a handshake",
                ),
            }
        }
    }
}

fn kerberos_step(
    core: &AuthCore,
    conn: &mut ConnAuth,
    mut context: kerberos::Context,
    token: &[u8],
    client: IpAddr,
) -> Verdict {
    match context.step(token) {
        Ok(kerberos::Step::Continue(out)) => {
            conn.pending = Some(Pending::Kerberos(context));
            Verdict::Continue {
                headers: vec![(
                    "WWW-Authenticate".into(),
                    format!("Negotiate {}", B64.encode(out)),
                )],
            }
        }
        Ok(kerberos::Step::Done {
            principal,
            token: out,
        }) => {
            let (account, groups) = (
                principal.split('@').next().unwrap_or(&principal).to_owned(),
                Vec::new(),
            );
            if let Some(verdict) = throttled(core, client, Some(&account), "negotiate") {
                return verdict;
            }
            let identity = Identity {
                name: principal.clone(),
                account,
                groups,
                method: "negotiate-kerberos",
            };
            conn.identity = Some(identity.clone());
            let headers = out
                .map(|t| {
                    vec![(
                        "WWW-Authenticate".to_owned(),
                        format!("Negotiate {}", B64.encode(t)),
                    )]
                })
                .unwrap_or_default();
            allowed(core, identity, client, headers)
        }
        Err(e) => failed(core, client, None, "negotiate", &format!("Kerberos: {e}")),
    }
}

/// One NTLM leg (raw or inside SPNEGO).
async fn connection_based(
    core: &AuthCore,
    conn: &mut ConnAuth,
    wrap: Wrap,
    token: &[u8],
    client: IpAddr,
) -> Verdict {
    let method = if wrap == Wrap::Ntlm {
        "ntlm"
    } else {
        "negotiate"
    };
    match ntlm::message_type(token) {
        Ok(1) => {
            conn.identity = None;
            conn.pending = None;
            let Ok(negotiate) = ntlm::parse_negotiate(token) else {
                return failed(
                    core,
                    client,
                    None,
                    method,
                    "malformed NTLM NEGOTIATE_MESSAGE",
                );
            };
            let (challenge, server_challenge, helper) = match &core.settings.ntlm_helper {
                Some(command) => match helper::Helper::start(command, token, &core.helpers).await {
                    Ok((helper, challenge)) => {
                        let mut server_challenge = [0u8; 8];
                        match challenge.get(24..32) {
                            Some(bytes) if ntlm::message_type(&challenge) == Ok(2) => {
                                server_challenge.copy_from_slice(bytes)
                            }
                            _ => {
                                warn!(
                                    "ntlm_helper answered with something that is not an NTLM challenge"
                                );
                                return Verdict::Deny(Denial::Failed);
                            }
                        }
                        (challenge, server_challenge, Some(Box::new(helper)))
                    }
                    Err(e) => {
                        warn!("ntlm_helper failed, NTLM works for local accounts only: {e}");
                        own_challenge(core, negotiate.flags)
                    }
                },
                None => own_challenge(core, negotiate.flags),
            };
            conn.pending = Some(Pending::Ntlm {
                wrap,
                server_challenge,
                helper,
            });
            Verdict::Continue {
                headers: vec![wrapped(
                    wrap,
                    &challenge,
                    spnego::NegState::AcceptIncomplete,
                )],
            }
        }
        Ok(3) => {
            let Some(Pending::Ntlm {
                server_challenge,
                helper,
                ..
            }) = conn.pending.take()
            else {
                return failed(
                    core,
                    client,
                    None,
                    method,
                    "NTLM AUTHENTICATE_MESSAGE without a challenge on this connection",
                );
            };
            let Ok(auth) = ntlm::parse_authenticate(token) else {
                return failed(
                    core,
                    client,
                    None,
                    method,
                    "malformed NTLM AUTHENTICATE_MESSAGE",
                );
            };
            let user = UserName::from_ntlm(&auth.user, &auth.domain);
            if auth.is_anonymous() {
                return failed(core, client, None, method, "anonymous NTLM");
            }
            if let Some(verdict) = throttled(core, client, Some(&user.name), method) {
                return verdict;
            }
            let identity = if core.is_local(&user) && core.users.find(&user.name).is_some() {
                verify_local(core, &auth, &user, &server_challenge)
            } else if let Some(helper) = helper {
                match helper.finish(token).await {
                    Ok(helper::HelperVerdict::Authenticated(name)) => {
                        let account = UserName::parse(&name).name;
                        Ok(Identity {
                            name,
                            account,
                            groups: Vec::new(),
                            method: ntlm_method(wrap),
                        })
                    }
                    Ok(helper::HelperVerdict::Refused(why)) => Err(format!("winbind: {why}")),
                    Err(e) => Err(format!("ntlm_helper: {e}")),
                }
            } else {
                Err("no such local user".to_owned())
            };
            match identity {
                Ok(mut identity) => {
                    identity.method = ntlm_method(wrap);
                    conn.identity = Some(identity.clone());
                    let headers = if wrap == Wrap::Spnego {
                        vec![wrapped(wrap, &[], spnego::NegState::AcceptCompleted)]
                    } else {
                        Vec::new()
                    };
                    allowed(core, identity, client, headers)
                }
                Err(why) => failed(core, client, Some(&user.name), method, &why),
            }
        }
        Ok(other) => {
            conn.pending = None;
            failed(
                core,
                client,
                None,
                method,
                &format!("unexpected NTLM message type {other}"),
            )
        }
        Err(e) => {
            conn.pending = None;
            failed(core, client, None, method, &e.to_string())
        }
    }
}

fn ntlm_method(wrap: Wrap) -> &'static str {
    match wrap {
        Wrap::Ntlm => "ntlm",
        Wrap::NegotiateRaw | Wrap::Spnego => "negotiate-ntlm",
    }
}

fn own_challenge(core: &AuthCore, flags: u32) -> (Vec<u8>, [u8; 8], Option<Box<helper::Helper>>) {
    let mut server_challenge = [0u8; 8];
    if getrandom::fill(&mut server_challenge).is_err() {
        // No randomness: refuse rather than use a predictable challenge. An all-zero
        // challenge can never match since the handshake is failed below.
        warn!("no random numbers for an NTLM challenge");
    }
    let message = ntlm::build_challenge(
        &core.settings.names,
        flags,
        server_challenge,
        ntlm::filetime_now(),
    );
    (message, server_challenge, None)
}

fn verify_local(
    core: &AuthCore,
    auth: &ntlm::Authenticate,
    user: &UserName,
    server_challenge: &[u8; 8],
) -> Result<Identity, String> {
    let account = core
        .users
        .find(&user.name)
        .ok_or_else(|| "no such local user".to_owned())?;
    let Some(nt_hash) = account.nt_hash else {
        return Err("the user file has no NT hash for this user (added with --no-nt-hash)".into());
    };
    if server_challenge == &[0u8; 8] {
        return Err("no server challenge".into());
    }
    let ok = match ntlm::response_kind(auth) {
        ntlm::ResponseKind::V2 => ntlm::verify_v2(auth, &nt_hash, server_challenge),
        ntlm::ResponseKind::V1 if core.settings.allow_ntlmv1 => {
            ntlm::verify_v1(auth, &nt_hash, server_challenge)
        }
        ntlm::ResponseKind::V1 => {
            return Err("NTLMv1 response refused (auth.allow_ntlmv1 = false)".into());
        }
        ntlm::ResponseKind::LmOnly => return Err("LM-only response refused".into()),
    };
    if !ok {
        return Err("wrong password (user file)".into());
    }
    Ok(Identity {
        name: account.name.clone(),
        account: account.name.clone(),
        groups: account.groups.clone(),
        method: "ntlm",
    })
}

#[cfg(test)]
mod tests;
