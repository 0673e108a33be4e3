//! The TLS stage of `rpcgate ping`: one handshake that records the proxy's certificate chain
//! and the verdict a strict client would reach (trust, name, validity), so that a failure
//! can be explained with the certificate's own fields.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// What the handshake showed.
#[derive(Debug, Clone, Default)]
pub struct TlsFacts {
    pub version: String,
    pub cipher: String,
    pub subject: String,
    pub common_name: Option<String>,
    pub sans: Vec<String>,
    pub issuer: String,
    pub not_before: String,
    pub not_after: String,
    /// Seconds until expiry (negative once expired).
    pub expires_in_secs: i64,
    pub not_yet_valid: bool,
    /// The host name is covered by a SAN (or, with no SAN, the CN).
    pub name_matches: bool,
    /// The strict verdict: `None` when trusted, else why not.
    pub verdict: Option<rustls::Error>,
    /// Trust could not be checked (no CA given and no system bundle).
    pub unchecked: Option<String>,
}

#[derive(Debug)]
struct Recording {
    strict: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    seen: Mutex<Option<(Vec<u8>, Option<rustls::Error>)>>,
}

impl ServerCertVerifier for Recording {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verdict = self.strict.as_ref().and_then(|v| {
            v.verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
                .err()
        });
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some((end_entity.to_vec(), verdict));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
        rustls::crypto::verify_tls13_signature(
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

fn roots(ca: Option<&Path>) -> Result<RootCertStore, String> {
    let path = ca.unwrap_or(Path::new(crate::tls::SYSTEM_CA_BUNDLE));
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut store = RootCertStore::empty();
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .filter_map(Result::ok)
        .collect();
    let (valid, _) = store.add_parsable_certificates(certs);
    if valid == 0 {
        return Err(format!("{}: no usable CA certificate", path.display()));
    }
    Ok(store)
}

/// Runs a handshake with `host` over `stream`; the stream is returned for the HTTP stage.
pub async fn handshake(
    stream: TcpStream,
    host: &str,
    ca: Option<&Path>,
    timeout: std::time::Duration,
) -> Result<(TlsStream<TcpStream>, TlsFacts), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let (strict, unchecked) = match roots(ca) {
        Ok(store) => {
            match WebPkiServerVerifier::builder_with_provider(Arc::new(store), provider.clone())
                .build()
            {
                Ok(v) => (Some(v), None),
                Err(e) => (None, Some(e.to_string())),
            }
        }
        Err(e) => (None, Some(e)),
    };
    let recording = Arc::new(Recording {
        strict,
        provider: provider.clone(),
        seen: Mutex::new(None),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(recording.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = ServerName::try_from(host.to_string()).map_err(|e| format!("{host}: {e}"))?;
    let tls = tokio::time::timeout(
        timeout,
        TlsConnector::from(Arc::new(config)).connect(name, stream),
    )
    .await
    .map_err(|_| format!("no TLS handshake within {timeout:?}"))?
    .map_err(|e| e.to_string())?;
    let (_, conn) = tls.get_ref();
    let mut facts = TlsFacts {
        version: conn
            .protocol_version()
            .map(|v| format!("{v:?}").replace("TLSv1_", "TLS 1."))
            .unwrap_or_default(),
        cipher: conn
            .negotiated_cipher_suite()
            .map(|c| format!("{:?}", c.suite()))
            .unwrap_or_default(),
        unchecked,
        ..TlsFacts::default()
    };
    let seen = recording.seen.lock().ok().and_then(|mut s| s.take());
    if let Some((der, verdict)) = seen {
        facts.verdict = verdict;
        describe(&der, host, &mut facts);
    }
    Ok((tls, facts))
}

fn describe(der: &[u8], host: &str, facts: &mut TlsFacts) {
    use x509_parser::prelude::*;
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        facts.subject = "(certificate does not parse)".into();
        return;
    };
    facts.subject = cert.subject().to_string();
    facts.issuer = cert.issuer().to_string();
    facts.common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_string);
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                GeneralName::DNSName(d) => facts.sans.push(format!("DNS:{d}")),
                GeneralName::IPAddress(ip) => facts.sans.push(match ip.len() {
                    4 => format!(
                        "IP:{}",
                        std::net::Ipv4Addr::from(<[u8; 4]>::try_from(*ip).unwrap_or_default())
                    ),
                    16 => format!(
                        "IP:{}",
                        std::net::Ipv6Addr::from(<[u8; 16]>::try_from(*ip).unwrap_or_default())
                    ),
                    _ => "IP:?".into(),
                }),
                other => facts.sans.push(format!("{other}")),
            }
        }
    }
    let validity = cert.validity();
    facts.not_before = validity.not_before.to_string();
    facts.not_after = validity.not_after.to_string();
    let now = ASN1Time::now().timestamp();
    facts.expires_in_secs = validity.not_after.timestamp() - now;
    facts.not_yet_valid = validity.not_before.timestamp() > now;
    facts.name_matches = name_matches(host, &facts.sans, facts.common_name.as_deref());
}

/// Whether `host` is covered by the SANs (DNS names with a leftmost `*` label, IP
/// addresses), or by the CN when there is no SAN at all.
pub fn name_matches(host: &str, sans: &[String], cn: Option<&str>) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    let dns_match = |pattern: &str| {
        let pattern = pattern.trim_end_matches('.').to_ascii_lowercase();
        if let Some(rest) = pattern.strip_prefix("*.") {
            host.split_once('.')
                .is_some_and(|(first, tail)| !first.is_empty() && tail == rest)
        } else {
            pattern == host
        }
    };
    if sans.is_empty() {
        return cn.is_some_and(dns_match);
    }
    let host_ip: Option<std::net::IpAddr> = host.parse().ok();
    sans.iter().any(|san| {
        if let Some(d) = san.strip_prefix("DNS:") {
            dns_match(d)
        } else if let Some(ip) = san.strip_prefix("IP:") {
            host_ip.is_some_and(|h| ip.parse() == Ok(h))
        } else {
            false
        }
    })
}

/// Lines describing the certificate.
pub fn details(facts: &TlsFacts, host: &str) -> Vec<String> {
    let mut out = vec![
        format!("subject  {}", facts.subject),
        format!(
            "SANs     {}",
            if facts.sans.is_empty() {
                "(none)".into()
            } else {
                facts.sans.join(", ")
            }
        ),
        format!("issuer   {}", facts.issuer),
        format!("expires  {} ({})", facts.not_after, expiry_text(facts)),
        format!(
            "name     {host}: {}",
            if facts.name_matches {
                "matches the certificate"
            } else {
                "NOT in the certificate"
            }
        ),
        format!(
            "trust    {}",
            match (&facts.verdict, &facts.unchecked) {
                (_, Some(why)) => format!("not checked ({why})"),
                (None, None) => "chain verified".into(),
                (Some(e), None) => format!("NOT trusted: {e}"),
            }
        ),
    ];
    if let Some(cn) = &facts.common_name {
        let same = cn.eq_ignore_ascii_case(host);
        out.push(format!(
            "principal msstd:{cn}{}",
            if same {
                ""
            } else {
                " (Outlook's \"msstd:\" check expects the proxy name: it differs)"
            }
        ));
    }
    out
}

fn expiry_text(facts: &TlsFacts) -> String {
    let days = facts.expires_in_secs / 86_400;
    if facts.expires_in_secs < 0 {
        format!("EXPIRED {} days ago", -days)
    } else if facts.not_yet_valid {
        format!("NOT YET VALID, from {}", facts.not_before)
    } else {
        format!("in {days} days")
    }
}

/// Why a strict client would refuse this certificate, and what to do; `None` if it would not.
pub fn diagnosis(facts: &TlsFacts, host: &str, addr: SocketAddr) -> Option<String> {
    if facts.unchecked.is_some() {
        return None;
    }
    let error = facts.verdict.as_ref()?;
    let cert_error = match error {
        rustls::Error::InvalidCertificate(e) => Some(e),
        _ => None,
    };
    let names = if facts.sans.is_empty() {
        facts.common_name.clone().unwrap_or_default()
    } else {
        facts.sans.join(", ")
    };
    Some(match cert_error {
        Some(CertificateError::Expired | CertificateError::ExpiredContext { .. }) => format!(
            "the proxy's certificate expired on {}: install a renewed certificate on the proxy \
             at {addr} (cert/key of its listener) and restart it",
            facts.not_after
        ),
        Some(CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. }) => {
            format!(
                "the proxy's certificate is not valid before {}: check the clock of this machine \
                 and of the issuer",
                facts.not_before
            )
        }
        Some(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "certificate name mismatch: the certificate is for {names}, not {host}; connect \
             with a name the certificate covers, or issue a certificate that includes {host}"
        ),
        Some(CertificateError::UnknownIssuer) => format!(
            "the certificate's issuer ({}) is not trusted here: pass --ca with the issuing CA \
             certificate (or install it in the system trust store)",
            facts.issuer
        ),
        Some(CertificateError::BadSignature) => format!(
            "the certificate's issuer ({}) is not trusted here: a CA of that name is trusted but \
             did not sign it (a different or re-issued CA); pass --ca with the CA that issued \
             this certificate",
            facts.issuer
        ),
        _ if facts.expires_in_secs < 0 => format!(
            "the proxy's certificate expired on {}: install a renewed certificate",
            facts.not_after
        ),
        _ => format!("the certificate is not acceptable ({error}): check it with the issuer"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_match_sans_and_wildcards() {
        let sans = vec!["DNS:*.contoso.com".to_string(), "IP:127.0.0.1".to_string()];
        assert!(name_matches("mail.contoso.com", &sans, None));
        assert!(name_matches("MAIL.contoso.com.", &sans, None));
        assert!(!name_matches("a.mail.contoso.com", &sans, None));
        assert!(!name_matches("contoso.com", &sans, None));
        assert!(name_matches("127.0.0.1", &sans, None));
        assert!(!name_matches("gw", &sans, Some("gw")));
        assert!(name_matches("gw", &[], Some("gw")));
    }
}
