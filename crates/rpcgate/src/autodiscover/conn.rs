//! One Autodiscover request on an authenticated proxy connection: read the bounded body,
//! answer, and say whether the connection can carry the next request.
//!
//! `POST` with a Content-Length of at most [`MAX_BODY`] is read (after `100 Continue` when
//! the client waits for it) and answered `200` with the document. A longer body is refused
//! with `413` and the 600 document without reading a byte of it, a chunked one with `411`
//! (the connection closes: where its body ends is not known). Other methods (`GET`, as
//! browsers and probes send) get the 600 document, as Exchange answers them.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, info};

use super::{ErrorCode, Facts, MAX_BODY, Outcome, Service};
use crate::auth::Identity;
use crate::http::{Method, RequestHead, response as http_response};

/// Serves the request whose head is `head`; returns whether to keep the connection.
pub async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    head: &RequestHead,
    service: &Service,
    identity: &Identity,
    ok_headers: &[(String, String)],
    read_timeout: Duration,
) -> bool {
    let facts = Facts::from_client_can_handle(head.header_values("x-clientcanhandle"));
    let length = head.content_length.unwrap_or(0);
    if head.chunked {
        let reply = http_response::status(411, "Length Required", false);
        let _ = stream.write_all(&reply).await;
        return false;
    }
    if length > MAX_BODY {
        info!(user = %identity.name, length, "autodiscover: body of {length} bytes refused (limit {MAX_BODY})");
        let body = service.error_document(ErrorCode::InvalidRequest, &facts);
        let reply = document(413, false, ok_headers, &body);
        let _ = stream.write_all(&reply).await;
        return false;
    }
    if head.method == Method::Post
        && head.expect_continue
        && stream
            .write_all(http_response::continue_100())
            .await
            .is_err()
    {
        return false;
    }
    let body = match tokio::time::timeout(read_timeout, read_body(stream, buf, length)).await {
        Ok(Ok(body)) => body,
        Ok(Err(e)) => {
            debug!("autodiscover: reading the body: {e}");
            return false;
        }
        Err(_) => {
            debug!("autodiscover: no body within {} s", read_timeout.as_secs());
            return false;
        }
    };
    let text = if head.method == Method::Post {
        let answer = service.answer(&body, &facts).await;
        info!(
            user = %identity.name,
            outcome = %describe(&answer.decided.outcome),
            "autodiscover: {}", answer.decided.reason
        );
        answer.xml
    } else {
        info!(user = %identity.name, method = %head.method, "autodiscover: not a POST, answered 600");
        service.error_document(ErrorCode::InvalidRequest, &facts)
    };
    let reply = document(200, head.keep_alive, ok_headers, &text);
    stream.write_all(&reply).await.is_ok() && head.keep_alive
}

/// For the log: `settings (EXCH mbx1)`, `redirectAddr x@y`, `error 500`.
fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Settings(user) => format!("settings (EXCH {})", user.exch_server),
        Outcome::Redirect(to) => format!("redirectAddr {to}"),
        Outcome::Error(code) => format!("error {}", code.number()),
    }
}

async fn read_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    length: u64,
) -> std::io::Result<Vec<u8>> {
    let length = usize::try_from(length).unwrap_or(usize::MAX);
    buf.reserve(length.saturating_sub(buf.len()));
    while buf.len() < length {
        if stream.read_buf(buf).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(buf.split_to(length).to_vec())
}

/// The response: status, XML content type, no caching, the body.
fn document(status: u16, keep_alive: bool, extra: &[(String, String)], body: &str) -> Vec<u8> {
    let mut headers: Vec<(&str, &str)> = extra
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    headers.push(("Cache-Control", "private"));
    headers.push(("Content-Type", "text/xml; charset=utf-8"));
    http_response::with_body(
        status,
        http_response::reason_phrase(status),
        keep_alive,
        &headers,
        body.as_bytes(),
    )
}
