//! EXPR `CertPrincipalName`: `msstd:` and the name Outlook must find in the proxy's
//! certificate ("Only connect to proxy servers that have this principal name in their
//! certificate").
//!
//! Windows XP compared it with the certificate's subject CN only; later Windows accepts any
//! subject alternative name. So the name is the external host when the CN is that host or a
//! SAN covers it exactly, the certificate's wildcard name when only a wildcard covers it
//! (`msstd:*.contoso.com`, the documented form), and otherwise the CN (or the first DNS SAN):
//! a certificate that does not cover the external host at all is worth a warning at start.

use std::path::Path;

use x509_parser::prelude::*;

/// The names of a certificate: subject CN and DNS subject alternative names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertNames {
    pub common_name: Option<String>,
    pub dns_names: Vec<String>,
}

/// The names in the first certificate of a PEM file.
pub fn names_from_pem_file(path: &Path) -> Result<CertNames, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let der = rustls_pemfile::certs(&mut pem.as_slice())
        .next()
        .ok_or_else(|| format!("{}: no certificate", path.display()))?
        .map_err(|e| format!("{}: {e}", path.display()))?;
    names_from_der(&der)
        .ok_or_else(|| format!("{}: the certificate does not parse", path.display()))
}

/// The names of a DER certificate.
pub fn names_from_der(der: &[u8]) -> Option<CertNames> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let common_name = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned);
    let mut dns_names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(d) = name {
                dns_names.push((*d).to_owned());
            }
        }
    }
    Some(CertNames {
        common_name,
        dns_names,
    })
}

/// The principal name for `external_host` and a certificate's names, and whether the
/// certificate covers the host at all.
pub fn principal_name(names: &CertNames, external_host: &str) -> Option<(String, bool)> {
    let host = external_host.trim_end_matches('.').to_ascii_lowercase();
    let same = |n: &str| n.trim_end_matches('.').eq_ignore_ascii_case(&host);
    let wildcard = |n: &str| {
        n.to_ascii_lowercase()
            .strip_prefix("*.")
            .is_some_and(|rest| host.split_once('.').is_some_and(|(_, tail)| tail == rest))
    };
    let cn = names.common_name.as_deref();
    if cn.is_some_and(same) || names.dns_names.iter().any(|n| same(n)) {
        return Some((format!("msstd:{external_host}"), true));
    }
    if let Some(w) = cn.filter(|n| wildcard(n)).or_else(|| {
        names
            .dns_names
            .iter()
            .map(String::as_str)
            .find(|n| wildcard(n))
    }) {
        return Some((format!("msstd:{w}"), true));
    }
    cn.or(names.dns_names.first().map(String::as_str))
        .map(|n| (format!("msstd:{n}"), false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(cn: Option<&str>, dns: &[&str]) -> CertNames {
        CertNames {
            common_name: cn.map(str::to_owned),
            dns_names: dns.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    #[test]
    fn choices() {
        let p = |n: &CertNames| principal_name(n, "mail.contoso.com");
        assert_eq!(
            p(&names(Some("mail.contoso.com"), &[])),
            Some(("msstd:mail.contoso.com".into(), true))
        );
        assert_eq!(
            p(&names(Some("gw"), &["MAIL.contoso.com"])),
            Some(("msstd:mail.contoso.com".into(), true))
        );
        assert_eq!(
            p(&names(Some("*.contoso.com"), &[])),
            Some(("msstd:*.contoso.com".into(), true))
        );
        assert_eq!(
            p(&names(Some("other.org"), &["x.org"])),
            Some(("msstd:other.org".into(), false))
        );
        assert_eq!(
            p(&names(None, &["x.org"])),
            Some(("msstd:x.org".into(), false))
        );
        assert_eq!(p(&names(None, &[])), None);
    }
}
