//! The exact bytes of every HTTP response the proxy writes (notes §2.4 and §7).
//!
//! Clients match these byte for byte (impacket checks `HTTP/1.0 503 RPC Error` and the
//! `100 Continue` text literally; FreeRDP and Samba read the OUT body straight after the
//! head), so the responses are built here from fixed text and nowhere else. Responses that
//! clients have been seen to accept are reproduced exactly; `Server: rpcgate` is only added to
//! error responses, where no client parses beyond the status line and the headers.

use std::fmt::Write as _;

/// RPC_S_SERVER_UNAVAILABLE (1722): target not allowed, unresolvable or unreachable.
pub const RPC_S_SERVER_UNAVAILABLE: u32 = 0x6ba;
/// ERROR_ACCESS_DENIED (5): the user may not reach this target.
pub const ERROR_ACCESS_DENIED: u32 = 5;
/// RPC_S_PROTOCOL_ERROR (1728): the peer broke the protocol.
pub const RPC_S_PROTOCOL_ERROR: u32 = 0x6c0;

/// The `Server` header on error responses.
pub const SERVER: &str = "rpcgate";

/// The echo response (MS-RPCH 2.1.2.1.1, 2.2.4.48): a fixed head and the 20-byte Echo RTS
/// PDU. Sent for every echo request; the connection stays open.
pub fn echo_response() -> Vec<u8> {
    echo_response_with_headers(&[])
}

/// [`echo_response`] with extra header fields before the others (the final
/// `WWW-Authenticate: Negotiate` token of a handshake that completed on an echo request).
/// Control characters are removed as in [`status_with_headers`].
pub fn echo_response_with_headers(headers: &[(String, String)]) -> Vec<u8> {
    let pdu = rpch_proto::rts::build::echo().encode();
    let mut text = String::from("HTTP/1.1 200 Success\r\n");
    for (name, value) in headers {
        let _ = write!(text, "{}: {}\r\n", clean(name), clean(value));
    }
    let _ = write!(
        text,
        "Connection: Keep-Alive\r\nContent-Length: {}\r\nContent-Type: application/rpc\r\n\r\n",
        pdu.len()
    );
    let mut out = text.into_bytes();
    out.extend_from_slice(&pdu);
    out
}

/// The interim response that releases a client waiting on `Expect: 100-continue`. It must be
/// written on its own, not coalesced with anything (impacket reads exactly this line).
pub fn continue_100() -> &'static [u8] {
    b"HTTP/1.1 100 Continue\r\n\r\n"
}

/// The OUT channel's success head (MS-RPCH 3.2.3.5.2 / 3.2.4.5.2), followed by the response
/// body stream (CONN/A3, CONN/C2, PDUs). `content_length` is the channel lifetime the proxy
/// announces; the body is never chunked.
pub fn out_channel_ok(content_length: u64) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 Success\r\nContent-Type: application/rpc\r\n\
         Content-Length: {content_length}\r\n\r\n"
    )
    .into_bytes()
}

/// The RPC error response (notes §7.1): `HTTP/1.0 503 RPC Error: <lowercase hex>`, no body,
/// and the connection is closed after it.
pub fn rpc_error(code: u32) -> Vec<u8> {
    format!(
        "HTTP/1.0 503 RPC Error: {code:x}\r\nServer: {SERVER}\r\nContent-Length: 0\r\n\
         Connection: close\r\n\r\n"
    )
    .into_bytes()
}

/// A plain error response with an empty body (400, 401, 404, 405, 413, 431, 501...).
/// A 405 carries the `Allow` header RFC 9110 §15.5.6 requires.
pub fn status(code: u16, reason: &str, keep_alive: bool) -> Vec<u8> {
    status_with_headers(code, reason, keep_alive, &[])
}

/// [`status`] with extra header fields, e.g. `WWW-Authenticate` on a 401. CR, LF and other
/// control characters are removed from every piece, so that no caller can split the head.
pub fn status_with_headers(
    code: u16,
    reason: &str,
    keep_alive: bool,
    headers: &[(&str, &str)],
) -> Vec<u8> {
    let mut text = String::with_capacity(128);
    // Writing into a String cannot fail; the results are ignored for that reason.
    let _ = write!(
        text,
        "HTTP/1.1 {code} {}\r\nServer: {SERVER}\r\n",
        clean(reason)
    );
    if code == 405 {
        text.push_str("Allow: RPC_IN_DATA, RPC_OUT_DATA\r\n");
    }
    for (name, value) in headers {
        let _ = write!(text, "{}: {}\r\n", clean(name), clean(value));
    }
    let connection = if keep_alive { "Keep-Alive" } else { "close" };
    let _ = write!(
        text,
        "Content-Length: 0\r\nConnection: {connection}\r\n\r\n"
    );
    text.into_bytes()
}

/// A response with a body (Autodiscover's XML): the status line, `Server`, `headers`,
/// `Content-Length` and `Connection`, then `body`. Control characters are removed from the
/// head's pieces as in [`status_with_headers`].
pub fn with_body(
    code: u16,
    reason: &str,
    keep_alive: bool,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut text = String::with_capacity(256);
    let _ = write!(
        text,
        "HTTP/1.1 {code} {}\r\nServer: {SERVER}\r\n",
        clean(reason)
    );
    for (name, value) in headers {
        let _ = write!(text, "{}: {}\r\n", clean(name), clean(value));
    }
    let connection = if keep_alive { "Keep-Alive" } else { "close" };
    let _ = write!(
        text,
        "Content-Length: {}\r\nConnection: {connection}\r\n\r\n",
        body.len()
    );
    let mut out = text.into_bytes();
    out.extend_from_slice(body);
    out
}

/// The standard reason phrase of a status code this proxy sends.
pub fn reason_phrase(code: u16) -> &'static str {
    match code {
        100 => "Continue",
        200 => "Success",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Error",
    }
}

fn clean(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::head::parse_response_head;

    #[test]
    fn echo_response_is_exact() {
        let bytes = echo_response();
        let head = b"HTTP/1.1 200 Success\r\nConnection: Keep-Alive\r\nContent-Length: 20\r\nContent-Type: application/rpc\r\n\r\n";
        assert_eq!(&bytes[..head.len()], head);
        // Echo RTS PDU: RTS header with Flags 0x0040 (RTS_FLAG_ECHO) and no commands.
        assert_eq!(
            &bytes[head.len()..],
            &[
                0x05, 0x00, 0x14, 0x03, 0x10, 0x00, 0x00, 0x00, 0x14, 0x00, 0x00, 0x00, 0x00, 0x00,
                0x00, 0x00, 0x40, 0x00, 0x00, 0x00
            ]
        );
        let (parsed, used) = parse_response_head(&bytes).unwrap().unwrap();
        assert_eq!(parsed.content_length, Some(20));
        assert_eq!(bytes.len() - used, 20);
    }

    #[test]
    fn continue_is_exact() {
        assert_eq!(continue_100(), b"HTTP/1.1 100 Continue\r\n\r\n");
        // impacket compares bytes 9..22 of the status line.
        assert_eq!(&continue_100()[9..21], b"100 Continue");
    }

    #[test]
    fn out_channel_head_is_exact() {
        assert_eq!(
            out_channel_ok(1_073_741_824),
            b"HTTP/1.1 200 Success\r\nContent-Type: application/rpc\r\nContent-Length: 1073741824\r\n\r\n"
        );
    }

    #[test]
    fn rpc_error_lines() {
        let bytes = rpc_error(RPC_S_SERVER_UNAVAILABLE);
        assert!(bytes.starts_with(b"HTTP/1.0 503 RPC Error: 6ba\r\n"));
        let (head, used) = parse_response_head(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(head.content_length, Some(0));
        assert!(!head.keep_alive);
        assert_eq!(head.rpc_error_code(), Some(RPC_S_SERVER_UNAVAILABLE));
        assert!(rpc_error(ERROR_ACCESS_DENIED).starts_with(b"HTTP/1.0 503 RPC Error: 5\r\n"));
        assert!(rpc_error(RPC_S_PROTOCOL_ERROR).starts_with(b"HTTP/1.0 503 RPC Error: 6c0\r\n"));
    }

    #[test]
    fn plain_statuses() {
        for code in [400, 401, 404, 405, 413, 431, 501] {
            for keep_alive in [true, false] {
                let bytes = status(code, reason_phrase(code), keep_alive);
                let (head, used) = parse_response_head(&bytes).unwrap().unwrap();
                assert_eq!(used, bytes.len());
                assert_eq!(head.status, code);
                assert_eq!(head.reason, reason_phrase(code));
                assert_eq!(head.content_length, Some(0));
                assert_eq!(head.keep_alive, keep_alive);
                assert_eq!(head.header("server"), Some("rpcgate"));
                assert_eq!(head.header("allow").is_some(), code == 405);
            }
        }
    }

    #[test]
    fn extra_headers_cannot_split_the_head() {
        let bytes = status_with_headers(
            401,
            "Unauthorized\r\nX-Evil: 1",
            true,
            &[
                ("WWW-Authenticate", "NTLM"),
                ("WWW-Authenticate", "Basic realm=\"x\"\r\n\r\nboom"),
            ],
        );
        let (head, used) = parse_response_head(&bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(head.reason, "UnauthorizedX-Evil: 1");
        let schemes: Vec<_> = head
            .headers
            .iter()
            .filter(|(n, _)| n == "www-authenticate")
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(schemes, ["NTLM", "Basic realm=\"x\"boom"]);
    }
}
