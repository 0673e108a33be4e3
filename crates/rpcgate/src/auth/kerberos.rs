//! Kerberos for `Negotiate`: a GSS-API acceptor with the service's keytab.
//!
//! Built only with the cargo feature `kerberos` (it links MIT Kerberos' libgssapi_krb5 through
//! the `libgssapi` crate, whose build needs libkrb5-dev and libclang). Without it, a config
//! that names a keytab is refused at start-up with a message that says so, and Negotiate
//! still offers NTLM inside SPNEGO.

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

pub use imp::{Acceptor, Context};
