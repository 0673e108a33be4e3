//! HTTP/1.x message heads: parsing request heads on the proxy and response heads in rpcgate's
//! own client, with hard limits and the framing decisions (body length, keep-alive,
//! `100-continue`) taken once, here.
//!
//! Parsing is two-step as in a framed protocol: `Ok(None)` means "the head is not complete
//! yet, read more" and is not an error; a complete head is checked for every ambiguity that
//! could let two HTTP implementations disagree about where the body ends (duplicate or
//! conflicting `Content-Length`, `Transfer-Encoding` next to `Content-Length`, obsolete line
//! folding) and rejected with an [`HttpError`] that says what is wrong. Bodies are never
//! touched: RPC over HTTP bodies are long-lived byte streams handled by the shells.

use std::fmt;

/// The longest request or response head accepted, request line and blank line included.
/// Real clients send about 300 bytes (plus an NTLM or Kerberos token); 16 KiB leaves room for
/// large Negotiate tokens while bounding what an unauthenticated peer can make us buffer.
pub const MAX_HEAD_LEN: usize = 16 * 1024;

/// The most header fields accepted in one head (real clients send fewer than 15).
pub const MAX_HEADERS: usize = 64;

/// A request method. Methods are case-sensitive tokens (RFC 9110 §9.1), so `rpc_in_data` is
/// [`Method::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    /// `RPC_IN_DATA`: an IN channel or an echo request (MS-RPCH 2.1.2.1.1).
    RpcInData,
    /// `RPC_OUT_DATA`: an OUT channel or an echo request (MS-RPCH 2.1.2.1.2).
    RpcOutData,
    /// `RPC_CONNECT`: RPC over HTTP v1 (notes §9).
    RpcConnect,
    /// `GET` (status page, metrics).
    Get,
    /// `POST` (Autodiscover).
    Post,
    /// Any other method token, as sent.
    Other(String),
}

impl Method {
    /// Maps a method token to a `Method`.
    pub fn from_token(token: &str) -> Self {
        match token {
            "RPC_IN_DATA" => Self::RpcInData,
            "RPC_OUT_DATA" => Self::RpcOutData,
            "RPC_CONNECT" => Self::RpcConnect,
            "GET" => Self::Get,
            "POST" => Self::Post,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The method token as it appears on the request line.
    pub fn as_str(&self) -> &str {
        match self {
            Self::RpcInData => "RPC_IN_DATA",
            Self::RpcOutData => "RPC_OUT_DATA",
            Self::RpcConnect => "RPC_CONNECT",
            Self::Get => "GET",
            Self::Post => "POST",
            Self::Other(token) => token,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The HTTP version of a message. Only 1.0 and 1.1 exist on the wire for RPC over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HttpVersion {
    /// `HTTP/1.0` (Samba's `dcerpc_roh`, and the version MS-RPCH says clients should use).
    V10,
    /// `HTTP/1.1`.
    V11,
}

impl HttpVersion {
    /// The version as written on a start line.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V10 => "HTTP/1.0",
            Self::V11 => "HTTP/1.1",
        }
    }

    fn from_minor(minor: Option<u8>) -> Result<Self, HttpError> {
        match minor {
            Some(0) => Ok(Self::V10),
            Some(1) => Ok(Self::V11),
            // httparse only reports 0 or 1 for a complete head; anything else is a bug there,
            // answered as a malformed version rather than a panic.
            _ => Err(HttpError::Malformed {
                what: "unsupported HTTP version",
            }),
        }
    }
}

impl fmt::Display for HttpVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a head was rejected. Unless stated otherwise the peer is at fault; the proxy answers
/// with [`HttpError::http_status`] and closes the connection, because after a framing error
/// the position of the next request in the byte stream is unknown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// The head did not end within [`MAX_HEAD_LEN`] bytes.
    #[error("HTTP head longer than {limit} bytes")]
    HeadTooLarge {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// More than [`MAX_HEADERS`] header fields.
    #[error("more than {limit} header fields in the HTTP head")]
    TooManyHeaders {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// The start line or a header line breaks the HTTP/1.1 grammar.
    #[error("malformed HTTP head: {what}")]
    Malformed {
        /// Which part of the grammar was violated.
        what: &'static str,
    },
    /// A header line starts with whitespace, continuing the previous one (obs-fold, which
    /// RFC 9112 §5.2 says a server must reject or replace; no RPC client sends it).
    #[error("obsolete line folding (header continuation line) on line {line} of the HTTP head")]
    ObsoleteLineFolding {
        /// 1-based line number within the head.
        line: usize,
    },
    /// `Content-Length` is not a plain decimal number (or does not fit in 64 bits).
    #[error("Content-Length {value:?} is not a decimal number of bytes")]
    InvalidContentLength {
        /// The offending value as received.
        value: String,
    },
    /// `Content-Length` given more than once with the same value. RFC 9112 lets a recipient
    /// accept this; we do not, since no client sends it and intermediaries disagree about it.
    #[error("Content-Length given more than once (value {value})")]
    DuplicateContentLength {
        /// The repeated value.
        value: u64,
    },
    /// `Content-Length` given more than once with different values.
    #[error("conflicting Content-Length values {first} and {second}")]
    ConflictingContentLength {
        /// The first value seen.
        first: u64,
        /// The first different value seen.
        second: u64,
    },
    /// Both `Content-Length` and `Transfer-Encoding` (the classic request-smuggling shape).
    #[error("both Content-Length and Transfer-Encoding are present")]
    ContentLengthWithTransferEncoding,
    /// A `Transfer-Encoding` other than a single final `chunked`.
    #[error("unsupported Transfer-Encoding {value:?} (only \"chunked\" is understood)")]
    UnsupportedTransferEncoding {
        /// The transfer codings as received.
        value: String,
    },
    /// `Transfer-Encoding` in an HTTP/1.0 message, where it does not exist (RFC 9112 §6.1).
    #[error("Transfer-Encoding in an HTTP/1.0 message")]
    TransferEncodingInHttp10,
    /// An HTTP/1.1 request without `Host` (RFC 9112 §3.2 requires a 400).
    #[error("HTTP/1.1 request without a Host header")]
    MissingHost,
    /// A header that must appear at most once appeared more than once.
    #[error("header {name} given more than once")]
    DuplicateHeader {
        /// The header's lowercase name.
        name: &'static str,
    },
}

impl HttpError {
    /// The status code and reason phrase that answer this error. Only used for requests;
    /// a bad response head makes rpcgate's client give up instead.
    pub fn http_status(&self) -> (u16, &'static str) {
        match self {
            Self::HeadTooLarge { .. } | Self::TooManyHeaders { .. } => {
                (431, "Request Header Fields Too Large")
            }
            Self::UnsupportedTransferEncoding { .. } => (501, "Not Implemented"),
            _ => (400, "Bad Request"),
        }
    }
}

/// A parsed request head. Header names are lowercase; values are trimmed and decoded as
/// UTF-8 with invalid bytes replaced (no header this proxy interprets may contain them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// The method.
    pub method: Method,
    /// The request target's path, without the query. For an absolute-form target
    /// (`http://host/path`) the scheme and authority are removed; an authority-form or
    /// asterisk-form target is kept whole.
    pub path: String,
    /// What follows the first `?` of the target, if there is a `?` (possibly empty).
    pub query: Option<String>,
    /// The HTTP version of the request line.
    pub version: HttpVersion,
    /// Every header field in order: (lowercase name, value).
    pub headers: Vec<(String, String)>,
    /// The body length from `Content-Length`, if given (validated: one decimal value).
    pub content_length: Option<u64>,
    /// The client waits for `100 Continue` before sending its body (impacket does, on both
    /// channels). Always false for HTTP/1.0, where RFC 9110 §10.1.1 says to ignore it.
    pub expect_continue: bool,
    /// The client wants the connection kept open after this exchange: HTTP/1.1 unless
    /// `Connection: close`; HTTP/1.0 only with `Connection: keep-alive` (Samba sends it).
    pub keep_alive: bool,
    /// The body is `Transfer-Encoding: chunked` (no RPC client does this; notes §2.5).
    pub chunked: bool,
}

impl RequestHead {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// Every value of a header, by case-insensitive name, in order.
    pub fn header_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The `Pragma` directives of all `Pragma` headers (notes §2.3).
    pub fn pragmas(&self) -> Pragmas<'_> {
        Pragmas::parse(self.header_values("pragma"))
    }
}

/// One `Pragma` directive: `No-cache`, `MinConnTimeout=120`, `SessionId=<guid>`...
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pragma<'a> {
    /// The directive name as sent.
    pub name: &'a str,
    /// The value after `=`, surrounding quotes removed; `None` for a bare directive.
    pub value: Option<&'a str>,
}

/// The `Pragma` directives of a request. MS-RPCH 2.2.3.3 defines `MinConnTimeout`,
/// `ResourceTypeUuid` and `SessionId`; FreeRDP sends two of them comma-separated in one header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pragmas<'a> {
    items: Vec<Pragma<'a>>,
}

impl<'a> Pragmas<'a> {
    fn parse(values: impl Iterator<Item = &'a str>) -> Self {
        let items = values
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| match item.split_once('=') {
                Some((name, value)) => Pragma {
                    name: name.trim(),
                    value: Some(unquote(value.trim())),
                },
                None => Pragma {
                    name: item,
                    value: None,
                },
            })
            .collect();
        Self { items }
    }

    /// All directives in order.
    pub fn iter(&self) -> impl Iterator<Item = &Pragma<'a>> {
        self.items.iter()
    }

    /// Whether a directive with this name (case-insensitive) is present, with or without value.
    pub fn contains(&self, name: &str) -> bool {
        self.items.iter().any(|p| p.name.eq_ignore_ascii_case(name))
    }

    /// The value of the first directive with this name (case-insensitive) that has one.
    pub fn get(&self, name: &str) -> Option<&'a str> {
        self.items
            .iter()
            .filter(|p| p.name.eq_ignore_ascii_case(name))
            .find_map(|p| p.value)
    }

    /// `MinConnTimeout` in seconds, if present and a decimal number. The range (120..=14400)
    /// is the outbound proxy's to enforce, since what to do out of range is its policy.
    pub fn min_conn_timeout_secs(&self) -> Option<u32> {
        self.get("MinConnTimeout")
            .and_then(parse_decimal)
            .and_then(|v| u32::try_from(v).ok())
    }
}

/// A parsed response head (rpcgate's own client: `ping`, `bench`, tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// The HTTP version of the status line.
    pub version: HttpVersion,
    /// The status code (three digits).
    pub status: u16,
    /// The reason phrase (empty if it contained non-ASCII bytes).
    pub reason: String,
    /// Every header field in order: (lowercase name, value).
    pub headers: Vec<(String, String)>,
    /// The body length from `Content-Length`, if given.
    pub content_length: Option<u64>,
    /// The body is `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// The server keeps the connection open (same rules as for requests).
    pub keep_alive: bool,
}

impl ResponseHead {
    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The Windows error code of an `RPC Error: <hex>` reason phrase (notes §7.1), e.g.
    /// `0x6ba` for `503 RPC Error: 6ba, EEInfo: ...`.
    pub fn rpc_error_code(&self) -> Option<u32> {
        let rest = self.reason.strip_prefix("RPC Error:")?.trim_start();
        let hex: &str = rest
            .split(|c: char| !c.is_ascii_hexdigit())
            .next()
            .unwrap_or_default();
        if hex.is_empty() || hex.len() > 8 {
            return None;
        }
        u32::from_str_radix(hex, 16).ok()
    }
}

/// Parses a request head at the start of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete (and shorter than [`MAX_HEAD_LEN`]),
/// `Ok(Some((head, n)))` when the head ends after `n` bytes (the body, if any, starts at
/// `buf[n..]`), or the reason the head is unacceptable.
pub fn parse_request_head(buf: &[u8]) -> Result<Option<(RequestHead, usize)>, HttpError> {
    let window = limit_window(buf);
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut slots);
    let consumed = match request.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return incomplete(buf),
        Err(e) => return Err(map_parse_error(e, window)),
    };
    let version = HttpVersion::from_minor(request.version)?;
    let method = Method::from_token(request.method.unwrap_or_default());
    let (path, query) = split_target(request.path.unwrap_or_default());
    let headers = owned_headers(request.headers);
    let framing = Framing::from_headers(&headers, version)?;

    let host_count = headers.iter().filter(|(n, _)| n == "host").count();
    if host_count > 1 {
        return Err(HttpError::DuplicateHeader { name: "host" });
    }
    if host_count == 0 && version == HttpVersion::V11 {
        return Err(HttpError::MissingHost);
    }
    let expect_continue = version == HttpVersion::V11
        && find_header(&headers, "expect")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"));

    let head = RequestHead {
        method,
        path,
        query,
        version,
        content_length: framing.content_length,
        expect_continue,
        keep_alive: framing.keep_alive,
        chunked: framing.chunked,
        headers,
    };
    Ok(Some((head, consumed)))
}

/// Parses a response head at the start of `buf`; same contract as [`parse_request_head`].
/// Interim responses (`100 Continue`) are returned like any other; the caller loops.
pub fn parse_response_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HttpError> {
    let window = limit_window(buf);
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut slots);
    let consumed = match response.parse(window) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return incomplete(buf),
        Err(e) => return Err(map_parse_error(e, window)),
    };
    let version = HttpVersion::from_minor(response.version)?;
    let status = response.code.ok_or(HttpError::Malformed {
        what: "missing status code",
    })?;
    let reason = response.reason.unwrap_or_default().to_owned();
    let headers = owned_headers(response.headers);
    let framing = Framing::from_headers(&headers, version)?;
    let head = ResponseHead {
        version,
        status,
        reason,
        content_length: framing.content_length,
        chunked: framing.chunked,
        keep_alive: framing.keep_alive,
        headers,
    };
    Ok(Some((head, consumed)))
}

/// Only the first [`MAX_HEAD_LEN`] bytes are ever parsed, so a complete head is within the
/// limit by construction and an incomplete one is detected as too large without scanning
/// further.
fn limit_window(buf: &[u8]) -> &[u8] {
    buf.get(..MAX_HEAD_LEN).unwrap_or(buf)
}

fn incomplete<T>(buf: &[u8]) -> Result<Option<T>, HttpError> {
    if buf.len() >= MAX_HEAD_LEN {
        Err(HttpError::HeadTooLarge {
            limit: MAX_HEAD_LEN,
        })
    } else {
        Ok(None)
    }
}

fn map_parse_error(error: httparse::Error, window: &[u8]) -> HttpError {
    // httparse reports a folded line as a bad header name; say what it really is.
    if let Some(line) = obs_fold_line(window) {
        return HttpError::ObsoleteLineFolding { line };
    }
    let what = match error {
        httparse::Error::TooManyHeaders => {
            return HttpError::TooManyHeaders { limit: MAX_HEADERS };
        }
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid byte in a header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status code",
        httparse::Error::Token => "invalid method or request target",
        httparse::Error::Version => "invalid or unsupported HTTP version (need HTTP/1.0 or 1.1)",
    };
    HttpError::Malformed { what }
}

/// The 1-based line number of the first header line (after the start line, before the
/// blank line) that begins with a space or tab.
fn obs_fold_line(window: &[u8]) -> Option<usize> {
    let mut lines = window.split(|&b| b == b'\n');
    // Leading empty lines before the start line are tolerated by httparse (RFC 9112 §2.2).
    let mut number = 0;
    for line in lines.by_ref() {
        number += 1;
        if !is_blank(line) {
            break;
        }
    }
    for line in lines {
        number += 1;
        if is_blank(line) {
            return None;
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            return Some(number);
        }
    }
    None
}

fn is_blank(line: &[u8]) -> bool {
    line.is_empty() || line == b"\r"
}

fn owned_headers(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).trim().to_owned(),
            )
        })
        .collect()
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn split_target(target: &str) -> (String, Option<String>) {
    let target = strip_scheme_and_authority(target);
    match target.split_once('?') {
        Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
        None => (target.to_owned(), None),
    }
}

/// Absolute-form targets (`http://proxy/rpc/rpcproxy.dll?x:1`) are what a client sends when
/// it believes it talks to a forward proxy; the path is what matters to us.
fn strip_scheme_and_authority(target: &str) -> &str {
    for scheme in ["http://", "https://"] {
        let has_scheme = target
            .get(..scheme.len())
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case(scheme));
        if has_scheme {
            let rest = target.get(scheme.len()..).unwrap_or_default();
            return match rest.find(['/', '?']) {
                Some(start) => rest.get(start..).unwrap_or("/"),
                None => "/",
            };
        }
    }
    target
}

/// The body framing and connection persistence decided from the headers.
struct Framing {
    content_length: Option<u64>,
    chunked: bool,
    keep_alive: bool,
}

impl Framing {
    fn from_headers(headers: &[(String, String)], version: HttpVersion) -> Result<Self, HttpError> {
        let content_length = content_length(headers)?;
        let chunked = transfer_encoding_chunked(headers, version)?;
        if chunked && content_length.is_some() {
            return Err(HttpError::ContentLengthWithTransferEncoding);
        }
        let mut close = false;
        let mut keep_alive_token = false;
        for (_, value) in headers.iter().filter(|(n, _)| n == "connection") {
            for token in value.split(',').map(str::trim) {
                close |= token.eq_ignore_ascii_case("close");
                keep_alive_token |= token.eq_ignore_ascii_case("keep-alive");
            }
        }
        let keep_alive = match version {
            HttpVersion::V10 => keep_alive_token && !close,
            HttpVersion::V11 => !close,
        };
        Ok(Self {
            content_length,
            chunked,
            keep_alive,
        })
    }
}

fn content_length(headers: &[(String, String)]) -> Result<Option<u64>, HttpError> {
    let mut found: Option<u64> = None;
    let values = headers
        .iter()
        .filter(|(n, _)| n == "content-length")
        // A list value (`5, 5`) is the same as repeated fields (RFC 9110 §8.6).
        .flat_map(|(_, v)| v.split(','));
    for raw in values {
        let raw = raw.trim();
        let value = parse_decimal(raw).ok_or_else(|| HttpError::InvalidContentLength {
            value: raw.to_owned(),
        })?;
        match found {
            None => found = Some(value),
            Some(first) if first == value => {
                return Err(HttpError::DuplicateContentLength { value });
            }
            Some(first) => {
                return Err(HttpError::ConflictingContentLength {
                    first,
                    second: value,
                });
            }
        }
    }
    Ok(found)
}

fn transfer_encoding_chunked(
    headers: &[(String, String)],
    version: HttpVersion,
) -> Result<bool, HttpError> {
    let values: Vec<&str> = headers
        .iter()
        .filter(|(n, _)| n == "transfer-encoding")
        .map(|(_, v)| v.as_str())
        .collect();
    if values.is_empty() {
        return Ok(false);
    }
    if version == HttpVersion::V10 {
        return Err(HttpError::TransferEncodingInHttp10);
    }
    let codings: Vec<&str> = values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    // Only a lone `chunked` is accepted: other codings (gzip, ...) are never used by RPC
    // clients and would need decoding we do not do.
    match codings.as_slice() {
        [only] if only.eq_ignore_ascii_case("chunked") => Ok(true),
        _ => Err(HttpError::UnsupportedTransferEncoding {
            value: values.join(", "),
        }),
    }
}

/// A non-empty run of ASCII digits (no sign, no spaces) that fits in a `u64`.
fn parse_decimal(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
}

#[cfg(test)]
#[path = "head_tests.rs"]
mod tests;
