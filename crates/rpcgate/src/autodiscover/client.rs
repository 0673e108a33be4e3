//! The client side, for `rpcgate ping --autodiscover`: the Outlook request, one `POST` to an
//! Autodiscover URL (with Basic or NTLM, on its own connection), and the settings read back
//! from the 2006a response.

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::request::{OUTLOOK_RESPONSE_NS, REQUEST_NS, same_namespace};
use super::response::{RESPONSE_NS, escape};
use super::xml;
use crate::client_auth::{self, HttpAuth};
use crate::http::{ResponseHead, parse_response_head};
use crate::rpch_client::{ClientError, ClientOptions, ProxyUrl, open_stream, www_authenticate};

/// The largest response body read.
pub const MAX_RESPONSE: usize = 256 * 1024;

/// The Outlook request for `email`.
pub fn request_body(email: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<Autodiscover xmlns=\"{REQUEST_NS}\">\n  \
         <Request>\n    <EMailAddress>{}</EMailAddress>\n    \
         <AcceptableResponseSchema>{OUTLOOK_RESPONSE_NS}</AcceptableResponseSchema>\n  \
         </Request>\n</Autodiscover>\n",
        escape(email)
    )
}

/// One `Protocol` block of the response.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProtocolSettings {
    pub server: Option<String>,
    pub ssl: Option<bool>,
    pub auth_package: Option<String>,
    pub cert_principal_name: Option<String>,
}

/// What a response says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Discovered {
    /// `Action settings`.
    Settings {
        display_name: Option<String>,
        smtp_address: Option<String>,
        /// The proxy (EXPR).
        expr: Option<ProtocolSettings>,
        /// The RPC server (EXCH).
        exch: Option<ProtocolSettings>,
    },
    /// `Action redirectAddr`.
    Redirect(String),
    /// An error response: code and message.
    Error { code: u16, message: String },
}

/// Reads a response document.
pub fn parse_response(body: &[u8]) -> Result<Discovered, String> {
    let root = xml::parse(body).map_err(|e| e.to_string())?;
    if root.name != "Autodiscover" || !same_namespace(&root.namespace, RESPONSE_NS) {
        return Err(format!(
            "not an Autodiscover response (root {{{}}}{})",
            root.namespace, root.name
        ));
    }
    let response = root.child("Response").ok_or("no Response element")?;
    let error = response
        .child("Error")
        .or_else(|| response.child("Account").and_then(|a| a.child("Error")));
    if let Some(error) = error {
        return Ok(Discovered::Error {
            code: error
                .child_text("ErrorCode")
                .and_then(|c| c.parse().ok())
                .unwrap_or(0),
            message: error.child_text("Message").unwrap_or_default().to_owned(),
        });
    }
    let account = response.child("Account").ok_or("no Account element")?;
    match account.child_text("Action") {
        Some(action) if action.eq_ignore_ascii_case("redirectAddr") => {
            let to = account
                .child_text("RedirectAddr")
                .filter(|a| !a.is_empty())
                .ok_or("redirectAddr without RedirectAddr")?;
            Ok(Discovered::Redirect(to.to_owned()))
        }
        Some(action) if action.eq_ignore_ascii_case("settings") => {
            let protocol = |kind: &str| {
                account
                    .children_named("Protocol")
                    .find(|p| {
                        p.child_text("Type")
                            .is_some_and(|t| t.eq_ignore_ascii_case(kind))
                    })
                    .map(|p| ProtocolSettings {
                        server: p.child_text("Server").map(str::to_owned),
                        ssl: p.child_text("SSL").map(|s| !s.eq_ignore_ascii_case("off")),
                        auth_package: p.child_text("AuthPackage").map(str::to_owned),
                        cert_principal_name: p.child_text("CertPrincipalName").map(str::to_owned),
                    })
            };
            let user = response.child("User");
            let text = |name: &str| {
                user.and_then(|u| u.child_text(name))
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned)
            };
            Ok(Discovered::Settings {
                display_name: text("DisplayName"),
                smtp_address: text("AutoDiscoverSMTPAddress"),
                expr: protocol("EXPR"),
                exch: protocol("EXCH"),
            })
        }
        other => Err(format!("unknown Action {other:?}")),
    }
}

/// `POST`s the request for `email` to `url` (its path the Autodiscover path); returns the
/// response head and body. Credentials in `options.auth` are presented as the server asks
/// (Basic at once, NTLM through its handshake on the same connection).
pub async fn fetch(
    url: &ProxyUrl,
    email: &str,
    options: &ClientOptions,
) -> Result<(ResponseHead, Vec<u8>), ClientError> {
    let mut stream = open_stream(url, options).await?;
    let body = request_body(email);
    let authorization = match &options.auth {
        None => String::new(),
        Some(auth @ HttpAuth::Basic { .. }) => auth.basic_header().unwrap_or_default(),
        Some(HttpAuth::Ntlm { user, password }) => {
            let negotiate = client_auth::ntlm_negotiate_header();
            let (head, _) = exchange(&mut stream, url, &negotiate, "", options).await?;
            if head.status != 401 {
                return Ok((head, Vec::new()));
            }
            let values = www_authenticate(&head);
            let challenge = client_auth::ntlm_challenge(values.iter().map(String::as_str))
                .ok_or_else(|| ClientError::Unauthorized {
                    offered: client_auth::offered_schemes(values.iter().map(String::as_str)),
                })?;
            client_auth::ntlm_authenticate_header(user, password, &challenge)
                .map_err(ClientError::Protocol)?
        }
    };
    exchange(&mut stream, url, &authorization, &body, options).await
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    url: &ProxyUrl,
    authorization: &str,
    body: &str,
    options: &ClientOptions,
) -> Result<(ResponseHead, Vec<u8>), ClientError> {
    let host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    let request = format!(
        "POST {} HTTP/1.1\r\nHost: {host}:{}\r\nUser-Agent: rpcgate-ping\r\n\
         Content-Type: text/xml; charset=utf-8\r\nConnection: Keep-Alive\r\n\
         {authorization}Content-Length: {}\r\n\r\n{body}",
        url.path,
        url.port,
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    tokio::time::timeout(options.timeout, read_response(stream))
        .await
        .map_err(|_| ClientError::Timeout {
            what: "the Autodiscover response",
            after: options.timeout,
        })?
}

async fn read_response<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<(ResponseHead, Vec<u8>), ClientError> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if let Some((head, used)) = parse_response_head(&buf)
            .map_err(|e| ClientError::Protocol(format!("bad response: {e}")))?
        {
            let _ = buf.split_to(used);
            if head.status == 100 {
                continue;
            }
            let length = head.content_length.unwrap_or(0);
            let length = usize::try_from(length)
                .ok()
                .filter(|l| *l <= MAX_RESPONSE)
                .ok_or_else(|| {
                    ClientError::Protocol(format!("response body of {length} bytes is too long"))
                })?;
            while buf.len() < length {
                if stream.read_buf(&mut buf).await? == 0 {
                    return Err(ClientError::Protocol(
                        "the server closed the connection inside the response body".into(),
                    ));
                }
            }
            return Ok((head, buf.split_to(length).to_vec()));
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(ClientError::Protocol(
                "the server closed the connection without a response".into(),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_through_the_server_parser() {
        for address in ["alice@x.org", "o'neil&co@x.org"] {
            let body = request_body(address);
            let parsed = super::super::request::parse(body.as_bytes()).unwrap();
            assert_eq!(parsed.email.as_deref(), Some(address));
        }
    }
}
