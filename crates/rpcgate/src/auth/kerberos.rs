//! Kerberos for `Negotiate`: a GSS-API acceptor with the service's keytab.
//!
//! Built only with the cargo feature `kerberos` (it links MIT Kerberos' libgssapi_krb5 through
//! the `libgssapi` crate, whose build needs libkrb5-dev and libclang). Without it, a config
//! that names a keytab is refused at start-up with a message that says so, and Negotiate
//! still offers NTLM inside SPNEGO.
//!
//! The whole Negotiate token goes to `gss_accept_sec_context` with the default mechanism, so
//! MIT's own SPNEGO unwraps it and checks its MIC; rpcgate only looks inside first to decide
//! between Kerberos (here) and NTLM (its own code, which MIT's SPNEGO cannot do without the
//! gss-ntlmssp plugin). The keytab reaches GSS-API through `KRB5_KTNAME`: the `libgssapi` crate
//! has no `gss_acquire_cred_from`, and this crate forbids `unsafe`, so `rpcgate serve` sets
//! the variable by re-executing itself once at start ([`keytab_env`]).

use std::path::PathBuf;

/// `[auth.kerberos]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KerberosConfig {
    /// The keytab with the service's keys (`HTTP/host@REALM`).
    pub keytab: PathBuf,
    /// The acceptor principal (`HTTP/gw.example.com`); `None` accepts any key in the keytab.
    pub principal: Option<String>,
}

/// One step of an acceptor context.
#[derive(Debug)]
pub enum Step {
    /// Send this token in a 401 and wait for the next one.
    Continue(Vec<u8>),
    /// Authenticated as `principal`; `token` (mutual authentication) goes on the 200.
    Done {
        principal: String,
        token: Option<Vec<u8>>,
    },
}

#[cfg(not(feature = "kerberos"))]
mod imp {
    use super::{KerberosConfig, Step};

    /// The acceptor (not built in).
    #[derive(Debug)]
    pub struct Acceptor(());

    /// One handshake (not built in).
    #[derive(Debug)]
    pub struct Context(());

    impl Acceptor {
        pub fn new(_config: &KerberosConfig) -> Result<Self, String> {
            Err(
                "auth.kerberos is configured, but this rpcgate was built without Kerberos \
                 (cargo feature `kerberos`, which needs libkrb5-dev and libclang-dev)"
                    .into(),
            )
        }

        pub fn new_context(&self) -> Context {
            Context(())
        }
    }

    impl Context {
        pub fn step(&mut self, _token: &[u8]) -> Result<Step, String> {
            Err("Kerberos is not built in".into())
        }
    }
}

#[cfg(feature = "kerberos")]
mod imp {
    use libgssapi::context::{SecurityContext, ServerCtx};
    use libgssapi::credential::{Cred, CredUsage};
    use libgssapi::name::Name;
    use libgssapi::oid::{GSS_MECH_KRB5, GSS_MECH_SPNEGO, GSS_NT_HOSTBASED_SERVICE, OidSet};

    use super::{KerberosConfig, Step};

    /// The acceptor's credentials (keys from the keytab).
    #[derive(Debug)]
    pub struct Acceptor {
        cred: Cred,
    }

    /// One handshake.
    pub struct Context(ServerCtx);

    impl std::fmt::Debug for Context {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("kerberos::Context")
        }
    }

    impl Acceptor {
        pub fn new(config: &KerberosConfig) -> Result<Self, String> {
            let wanted = format!("FILE:{}", config.keytab.display());
            let env = std::env::var("KRB5_KTNAME").unwrap_or_default();
            if env != wanted {
                return Err(format!(
                    "the keytab must be passed to GSS-API as KRB5_KTNAME={wanted} (rpcgate serve \
                     sets it itself; found {env:?})"
                ));
            }
            if !config.keytab.exists() {
                return Err(format!("keytab {} does not exist", config.keytab.display()));
            }
            let name = match &config.principal {
                Some(principal) => {
                    // HTTP/host (a host-based service name) as GSS-API spells it: HTTP@host.
                    let service = principal
                        .split('@')
                        .next()
                        .unwrap_or(principal)
                        .replacen('/', "@", 1);
                    Some(
                        Name::new(service.as_bytes(), Some(GSS_NT_HOSTBASED_SERVICE))
                            .map_err(|e| format!("principal {principal}: {e}"))?,
                    )
                }
                None => None,
            };
            // Krb5 and SPNEGO (which wraps the client's tokens).
            let mut mechs = OidSet::new();
            mechs.add(GSS_MECH_KRB5).map_err(|e| e.to_string())?;
            mechs.add(GSS_MECH_SPNEGO).map_err(|e| e.to_string())?;
            let cred = Cred::acquire(name.as_ref(), None, CredUsage::Accept, Some(&mechs))
                .map_err(|e| {
                    format!(
                        "no acceptor credentials in {}: {e}",
                        config.keytab.display()
                    )
                })?;
            Ok(Self { cred })
        }

        pub fn new_context(&self) -> Context {
            Context(ServerCtx::new(Some(self.cred.clone())))
        }
    }

    impl Context {
        pub fn step(&mut self, token: &[u8]) -> Result<Step, String> {
            let out = self.0.step(token, None).map_err(|e| e.to_string())?;
            let out = out.map(|buf| buf.to_vec());
            if !self.0.is_complete() {
                return Ok(Step::Continue(out.unwrap_or_default()));
            }
            let principal = self.0.source_name().map_err(|e| e.to_string())?.to_string();
            Ok(Step::Done {
                principal,
                token: out,
            })
        }
    }
}

pub use imp::{Acceptor, Context};

/// The `KRB5_KTNAME` value for a keytab.
pub fn keytab_env(config: &KerberosConfig) -> String {
    format!("FILE:{}", config.keytab.display())
}
