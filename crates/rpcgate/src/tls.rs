//! TLS material and rustls configurations: the proxy's server side, rpcgate's own client
//! side, and the self-signed certificate that lets the embedded default run HTTPS with no
//! setup.
//!
//! Everything uses the ring provider, TLS 1.2 and 1.3 (Windows clients of the RPC over HTTP
//! era still negotiate 1.2), and ALPN `http/1.1` only: MS-RPCH is an HTTP/1.x protocol, and
//! offering `h2` would invite clients to speak a framing the channels cannot use. Errors name
//! the file and what is wrong with it (missing, not PEM, no key, key not matching).
//! The client side trusts a given CA file, else the system bundle; accepting any certificate
//! is possible only through the explicitly named [`danger`] verifier.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The certificate file name in the state directory.
pub const CERT_FILE: &str = "cert.pem";
/// The private key file name in the state directory.
pub const KEY_FILE: &str = "key.pem";
/// The system CA bundle tried when no CA file is given (Debian, Ubuntu, Alpine, Arch).
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
/// The ALPN protocols offered and accepted.
pub const ALPN_HTTP11: &[u8] = b"http/1.1";

/// Why TLS material or a TLS configuration could not be set up. Unless stated otherwise the
/// administrator (file paths, file contents) is at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The state directory could not be created.
    #[error("cannot create state directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A file could not be read (missing, permissions).
    #[error("cannot read {what} file {}: {source}", path.display())]
    Read {
        /// What the file should hold: "certificate", "private key", "CA".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A generated file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file has no PEM block at all (perhaps DER, or the wrong file).
    #[error(
        "{what} file {} is not PEM (no -----BEGIN ...----- block found; DER files must be \
         converted)",
        path.display()
    )]
    NotPem {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// A PEM block is damaged.
    #[error("{what} file {} has a damaged PEM block: {source}", path.display())]
    BadPem {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        #[source]
        source: io::Error,
    },
    /// PEM, but no CERTIFICATE block.
    #[error(
        "{what} file {} contains no certificate (expected a -----BEGIN CERTIFICATE----- block)",
        path.display()
    )]
    NoCertificate {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// PEM, but no private key block.
    #[error(
        "private key file {} contains no private key (expected PRIVATE KEY, RSA PRIVATE KEY \
         or EC PRIVATE KEY)",
        path.display()
    )]
    NoPrivateKey {
        /// The file.
        path: PathBuf,
    },
    /// The key is unusable or does not belong to the certificate.
    #[error(
        "certificate {} and private key {} cannot be used together: {source}",
        cert.display(),
        key.display()
    )]
    CertKey {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' complaint.
        #[source]
        source: rustls::Error,
    },
    /// None of the certificates in a CA file could be used as a trust anchor.
    #[error(
        "CA file {} holds no usable CA certificate ({invalid} could not be parsed)",
        path.display()
    )]
    NoUsableCa {
        /// The file.
        path: PathBuf,
        /// How many certificates were rejected.
        invalid: usize,
    },
    /// No CA file given, not insecure, and no system bundle.
    #[error(
        "no CA certificates to verify the server with: give a CA file, or install the system \
         bundle {SYSTEM_CA_BUNDLE}, or (for tests only) accept any certificate"
    )]
    NoTrustAnchors,
    /// Generating the self-signed certificate failed (a bug or an unusable host name).
    #[error("cannot generate a self-signed certificate: {source}")]
    Generate {
        /// rcgen's complaint.
        #[source]
        source: rcgen::Error,
    },
    /// rustls refused the protocol configuration (a bug).
    #[error("TLS configuration rejected: {source}")]
    Config {
        /// rustls' complaint.
        #[source]
        source: rustls::Error,
    },
}

/// A certificate and key pair on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPair {
    /// The certificate chain, PEM.
    pub cert: PathBuf,
    /// The private key, PEM.
    pub key: PathBuf,
    /// Whether it was generated by this call (false: an existing pair was reused).
    pub generated: bool,
}

/// The self-signed pair in `state_dir` (`cert.pem`, `key.pem`): reused when both files are
/// present and form a usable pair, generated (and written, key mode 0600) otherwise. The
/// directory is created with mode 0700 if missing. Names in the certificate: `localhost`,
/// `127.0.0.1`, `::1` and this machine's host name.
pub fn load_or_generate_self_signed(state_dir: &Path) -> Result<CertPair, TlsError> {
    let cert = state_dir.join(CERT_FILE);
    let key = state_dir.join(KEY_FILE);
    if cert.exists() && key.exists() {
        match server_config(&cert, &key) {
            Ok(_) => {
                restrict_key_permissions(&key)?;
                return Ok(CertPair {
                    cert,
                    key,
                    generated: false,
                });
            }
            // The pair lives in our own state directory, so a broken one is ours to replace.
            Err(e) => tracing::warn!(
                "replacing unusable self-signed pair in {}: {e}",
                state_dir.display()
            ),
        }
    }
    create_state_dir(state_dir)?;
    let (cert_pem, key_pem) = generate_self_signed(&self_signed_names())?;
    // Key first: a reader never sees a new certificate with an old key.
    write_atomically(&key, key_pem.as_bytes(), true)?;
    write_atomically(&cert, cert_pem.as_bytes(), false)?;
    Ok(CertPair {
        cert,
        key,
        generated: true,
    })
}

/// The proxy's TLS server configuration from a PEM certificate chain and private key.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_certificates(cert, "certificate")?;
    let private_key = read_private_key(key)?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|source| TlsError::Config { source })?
        .with_no_client_auth()
        .with_single_cert(chain, private_key)
        .map_err(|source| TlsError::CertKey {
            cert: cert.to_owned(),
            key: key.to_owned(),
            source,
        })?;
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// rpcgate's TLS client configuration (ping, bench, tests). With `insecure`, any server
/// certificate is accepted ([`danger::AcceptAnyServerCert`]) and `ca` is ignored; otherwise
/// the server must chain to a certificate in `ca` (a PEM file), or, with no `ca`, to the
/// system bundle [`SYSTEM_CA_BUNDLE`].
pub fn client_config(ca: Option<&Path>, insecure: bool) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|source| TlsError::Config { source })?;
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(danger::AcceptAnyServerCert::new(provider)))
            .with_no_client_auth()
    } else {
        let roots = match ca {
            Some(path) => root_store(path)?,
            None => {
                let system = Path::new(SYSTEM_CA_BUNDLE);
                if !system.exists() {
                    return Err(TlsError::NoTrustAnchors);
                }
                root_store(system)?
            }
        };
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    config.alpn_protocols = vec![ALPN_HTTP11.to_vec()];
    Ok(Arc::new(config))
}

/// A verifier that accepts any server certificate, for `--insecure` only.
pub mod danger {
    use std::sync::Arc;

    use rustls::DigitallySignedStruct;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    /// Accepts every certificate chain and name: no protection against an active attacker.
    /// The handshake signatures are still checked, so the peer does hold the key of the
    /// certificate it sent; only who that is goes unchecked.
    #[derive(Debug)]
    pub struct AcceptAnyServerCert {
        provider: Arc<CryptoProvider>,
    }

    impl AcceptAnyServerCert {
        /// A verifier checking signatures with `provider`'s algorithms.
        pub fn new(provider: Arc<CryptoProvider>) -> Self {
            Self { provider }
        }
    }

    impl ServerCertVerifier for AcceptAnyServerCert {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls12_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            verify_tls13_signature(
                message,
                cert,
                dss,
                &self.provider.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The PEM items of a file; errors name the file and `what` it should hold.
fn read_pem(path: &Path, what: &'static str) -> Result<Vec<rustls_pemfile::Item>, TlsError> {
    let bytes = fs::read(path).map_err(|source| TlsError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    let items = rustls_pemfile::read_all(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::BadPem {
            what,
            path: path.to_owned(),
            source,
        })?;
    if items.is_empty() {
        return Err(TlsError::NotPem {
            what,
            path: path.to_owned(),
        });
    }
    Ok(items)
}

fn read_certificates(
    path: &Path,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = read_pem(path, what)?
        .into_iter()
        .filter_map(|item| match item {
            rustls_pemfile::Item::X509Certificate(cert) => Some(cert),
            _ => None,
        })
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            what,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    read_pem(path, "private key")?
        .into_iter()
        .find_map(|item| match item {
            rustls_pemfile::Item::Pkcs8Key(key) => Some(PrivateKeyDer::Pkcs8(key)),
            rustls_pemfile::Item::Pkcs1Key(key) => Some(PrivateKeyDer::Pkcs1(key)),
            rustls_pemfile::Item::Sec1Key(key) => Some(PrivateKeyDer::Sec1(key)),
            _ => None,
        })
        .ok_or_else(|| TlsError::NoPrivateKey {
            path: path.to_owned(),
        })
}

fn root_store(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    let (valid, invalid) = roots.add_parsable_certificates(read_certificates(path, "CA")?);
    if valid == 0 {
        return Err(TlsError::NoUsableCa {
            path: path.to_owned(),
            invalid,
        });
    }
    Ok(roots)
}

/// `localhost`, the loopback addresses, and the host name if it is a usable DNS name.
fn self_signed_names() -> Vec<String> {
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Some(host) = host_name()
        && !names.iter().any(|n| n.eq_ignore_ascii_case(&host))
    {
        names.push(host);
    }
    names
}

/// The machine's host name, read from the kernel (no libc call needed), if it is a DNS name.
fn host_name() -> Option<String> {
    let raw = fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .ok()?;
    let name = raw.trim().to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !name.starts_with(['-', '.']);
    valid.then_some(name)
}

/// A new ECDSA P-256 key and a certificate for `names`, both PEM.
fn generate_self_signed(names: &[String]) -> Result<(String, String), TlsError> {
    let generate = |source| TlsError::Generate { source };
    let key_pair = rcgen::KeyPair::generate().map_err(generate)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(generate)?;
    let mut subject = rcgen::DistinguishedName::new();
    subject.push(rcgen::DnType::CommonName, "rpcgate self-signed");
    subject.push(rcgen::DnType::OrganizationName, "rpcgate");
    params.distinguished_name = subject;
    let cert = params.self_signed(&key_pair).map_err(generate)?;
    Ok((cert.pem(), key_pair.serialize_pem()))
}

fn create_state_dir(dir: &Path) -> Result<(), TlsError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| TlsError::CreateDir {
        path: dir.to_owned(),
        source,
    })
}

/// Writes through a temporary file and a rename, so that a concurrent start never reads a
/// half-written file; `secret` files are created with mode 0600 from the start.
fn write_atomically(path: &Path, contents: &[u8], secret: bool) -> Result<(), TlsError> {
    use std::io::Write as _;

    let write_error = |source| TlsError::Write {
        path: path.to_owned(),
        source,
    };
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(".tmp-{}", std::process::id()));
    let temporary = PathBuf::from(temporary);
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let result = options
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(contents)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&temporary, path));
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result.map_err(write_error)
}

/// An existing key file readable by others is tightened to 0600 (it is ours, in our state
/// directory).
fn restrict_key_permissions(key: &Path) -> Result<(), TlsError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let metadata = fs::metadata(key).map_err(|source| TlsError::Read {
            what: "private key",
            path: key.to_owned(),
            source,
        })?;
        if metadata.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "private key {} was readable by others; setting mode 0600",
                key.display()
            );
            fs::set_permissions(key, fs::Permissions::from_mode(0o600)).map_err(|source| {
                TlsError::Write {
                    path: key.to_owned(),
                    source,
                }
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
