//! The Outlook Autodiscover request (MS-OXDSCLI 2.2.3, "POX"), read from the body bytes.
//!
//! ```text
//! <Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006">
//!   <Request>
//!     <EMailAddress>user@contoso.com</EMailAddress>          (or <LegacyDN>)
//!     <AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>
//!   </Request>
//! </Autodiscover>
//! ```
//!
//! Anything that is not this shape is an invalid request (error 600); a well-formed request
//! asking for another response schema (mobile sync, a future Outlook schema) gets "provider
//! is not available" (601), as Exchange answers. Unknown extra elements are ignored.

use super::ErrorCode;
use super::xml::{self, Element, XmlError};

/// The Outlook request namespace (MS-OXDSCLI 2.2.3).
pub const REQUEST_NS: &str =
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/requestschema/2006";
/// The only response schema rpcgate provides (MS-OXDSCLI 2.2.4): Outlook's 2006a.
pub const OUTLOOK_RESPONSE_NS: &str =
    "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a";
/// The longest e-mail address accepted (RFC 5321's path limit).
pub const MAX_ADDRESS_LEN: usize = 320;

/// A valid request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `EMailAddress`, checked to be `local@domain`; `None` when only `LegacyDN` is given.
    pub email: Option<String>,
    /// `LegacyDN`, if given.
    pub legacy_dn: Option<String>,
}

/// Why a request was refused. The client is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// Not well-formed, or refused by the XML limits (DOCTYPE, entities, size, depth).
    #[error("{0}")]
    Xml(#[from] XmlError),
    /// The root is not `Autodiscover` in the Outlook request namespace.
    #[error("the root element is {{{namespace}}}{name}, not the Outlook request's Autodiscover")]
    WrongRoot { namespace: String, name: String },
    /// No `Request` element.
    #[error("no Request element")]
    NoRequest,
    /// No `AcceptableResponseSchema`.
    #[error("no AcceptableResponseSchema")]
    NoSchema,
    /// A response schema other than Outlook's 2006a.
    #[error("response schema {0:?} is not provided (only Outlook's 2006a)")]
    UnsupportedSchema(String),
    /// Neither `EMailAddress` nor `LegacyDN`.
    #[error("neither EMailAddress nor LegacyDN")]
    NoAddress,
    /// `EMailAddress` is not `local@domain`.
    #[error("EMailAddress {0:?} is not an e-mail address")]
    BadAddress(String),
}

impl RequestError {
    /// The Autodiscover error this answers with.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::UnsupportedSchema(_) => ErrorCode::ProviderUnavailable,
            _ => ErrorCode::InvalidRequest,
        }
    }
}

/// Parses and checks a request body.
pub fn parse(body: &[u8]) -> Result<Request, RequestError> {
    let root = xml::parse(body)?;
    if root.name != "Autodiscover" || !same_namespace(&root.namespace, REQUEST_NS) {
        return Err(RequestError::WrongRoot {
            namespace: root.namespace.chars().take(120).collect(),
            name: root.name.chars().take(60).collect(),
        });
    }
    let request = child(&root, "Request").ok_or(RequestError::NoRequest)?;
    let schema = child(request, "AcceptableResponseSchema")
        .map(|e| e.text.trim())
        .ok_or(RequestError::NoSchema)?;
    if !same_namespace(schema, OUTLOOK_RESPONSE_NS) {
        return Err(RequestError::UnsupportedSchema(
            schema.chars().take(120).collect(),
        ));
    }
    let legacy_dn = child(request, "LegacyDN")
        .map(|e| e.text.trim().to_owned())
        .filter(|dn| !dn.is_empty());
    let email = match child(request, "EMailAddress").map(|e| e.text.trim()) {
        Some(address) if !address.is_empty() => Some(check_address(address)?),
        _ => None,
    };
    if email.is_none() && legacy_dn.is_none() {
        return Err(RequestError::NoAddress);
    }
    Ok(Request { email, legacy_dn })
}

/// A child in the request namespace (the default namespace of every real request).
fn child<'a>(parent: &'a Element, name: &str) -> Option<&'a Element> {
    parent
        .children
        .iter()
        .find(|c| c.name == name && same_namespace(&c.namespace, REQUEST_NS))
}

/// Namespace names compare exactly, except that Microsoft's own documentation writes them
/// with `https://` in places, which some clients copied: both schemes are accepted.
pub fn same_namespace(given: &str, wanted: &str) -> bool {
    let strip = |s: &str| {
        s.strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"))
            .map(str::to_owned)
    };
    given == wanted || (strip(given).is_some() && strip(given) == strip(wanted))
}

/// `local@domain`: one `@`, both sides non-empty, no whitespace or control characters, a
/// domain of dot-separated labels. The address is a lookup key only: it never becomes a host
/// that rpcgate connects to.
pub fn check_address(address: &str) -> Result<String, RequestError> {
    let bad = || RequestError::BadAddress(address.chars().take(120).collect());
    if address.len() > MAX_ADDRESS_LEN
        || address
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '<' | '>' | '"'))
    {
        return Err(bad());
    }
    let (local, domain) = address.rsplit_once('@').ok_or_else(bad)?;
    if local.is_empty()
        || local.contains('@')
        || domain.is_empty()
        || domain
            .split('.')
            .any(|label| label.is_empty() || label.starts_with('-') || label.ends_with('-'))
        || !domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.')
    {
        return Err(bad());
    }
    Ok(address.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(inner: &str) -> String {
        format!("<Autodiscover xmlns=\"{REQUEST_NS}\"><Request>{inner}</Request></Autodiscover>")
    }

    const SCHEMA: &str = "<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a</AcceptableResponseSchema>";

    #[test]
    fn addresses_and_legacy_dn() {
        let r =
            parse(body(&format!("{SCHEMA}<EMailAddress> a.b@x.org </EMailAddress>")).as_bytes())
                .unwrap();
        assert_eq!(r.email.as_deref(), Some("a.b@x.org"));
        let r = parse(body(&format!("<LegacyDN>/o=x/cn=a</LegacyDN>{SCHEMA}")).as_bytes()).unwrap();
        assert_eq!((r.email, r.legacy_dn.as_deref()), (None, Some("/o=x/cn=a")));
    }

    #[test]
    fn errors_and_their_codes() {
        let wrong_schema = body(
            "<EMailAddress>a@x.org</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006</AcceptableResponseSchema>",
        );
        let e = parse(wrong_schema.as_bytes()).unwrap_err();
        assert_eq!(e.code(), ErrorCode::ProviderUnavailable, "{e}");
        for (doc, expected) in [
            (
                body("<EMailAddress>a@x.org</EMailAddress>"),
                RequestError::NoSchema,
            ),
            (body(SCHEMA), RequestError::NoAddress),
            (
                "<Autodiscover><Request/></Autodiscover>".to_owned(),
                RequestError::WrongRoot {
                    namespace: String::new(),
                    name: "Autodiscover".into(),
                },
            ),
            (
                format!("<Autodiscover xmlns=\"{REQUEST_NS}\"/>"),
                RequestError::NoRequest,
            ),
        ] {
            let e = parse(doc.as_bytes()).unwrap_err();
            assert_eq!(e, expected);
            assert_eq!(e.code(), ErrorCode::InvalidRequest);
        }
        for address in [
            "nobody",
            "@x.org",
            "a@",
            "a@b@x.org",
            "a b@x.org",
            "a@x..org",
            "a@-x.org",
            "a@x.org/evil",
            "a@x.org:443",
            "a@[127.0.0.1]",
        ] {
            let doc = body(&format!("{SCHEMA}<EMailAddress>{address}</EMailAddress>"));
            assert!(
                matches!(parse(doc.as_bytes()), Err(RequestError::BadAddress(_))),
                "{address}"
            );
        }
    }

    #[test]
    fn namespace_schemes() {
        assert!(same_namespace(
            "https://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a",
            OUTLOOK_RESPONSE_NS
        ));
        assert!(!same_namespace("urn:x", OUTLOOK_RESPONSE_NS));
        assert!(!same_namespace("", OUTLOOK_RESPONSE_NS));
    }
}
