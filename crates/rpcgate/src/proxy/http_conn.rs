//! One HTTP connection to the proxy: reads request heads, answers echo and error requests with
//! keep-alive, and hands the connection to a channel driver on `RPC_IN_DATA` / `RPC_OUT_DATA`.
//!
//! Every wait is bounded: the first head by the handshake timeout, later heads by the
//! keep-alive timeout; a head larger than the parser's limit is refused. Echo request bodies
//! (0..16 bytes, Windows sends 4) are read exactly and never waited on beyond Content-Length.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, info};

use super::{ListenerPolicy, Proxy};
use crate::http::{RequestHead, RequestKind, classify, parse_request_head, response};

/// Reads a request head; `Ok(None)` when the peer closed cleanly between requests.
async fn read_head<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
) -> Result<Option<RequestHead>, String> {
    loop {
        match parse_request_head(buf) {
            Ok(Some((head, used))) => {
                let _ = buf.split_to(used);
                return Ok(Some(head));
            }
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        buf.reserve(4096);
        match stream.read_buf(buf).await {
            Ok(0) if buf.is_empty() => return Ok(None),
            Ok(0) => return Err("connection closed inside a request head".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Reads and drops exactly `len` body bytes (already-buffered ones first).
async fn discard_body<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    len: u64,
) -> std::io::Result<()> {
    let mut remaining = len;
    let from_buffer = remaining.min(buf.len() as u64);
    let _ = buf.split_to(from_buffer as usize);
    remaining -= from_buffer;
    let mut scratch = [0u8; 256];
    while remaining > 0 {
        let want = remaining.min(scratch.len() as u64) as usize;
        let n = stream
            .read(scratch.get_mut(..want).unwrap_or(&mut []))
            .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        remaining -= n as u64;
    }
    Ok(())
}

/// Largest body the proxy reads and discards to keep a connection alive after an error.
const MAX_DISCARD: u64 = 64 * 1024;

/// Serves requests on one connection until it closes or becomes a channel.
pub async fn serve_connection<S>(
    proxy: Arc<Proxy>,
    policy: ListenerPolicy,
    mut stream: S,
    peer: SocketAddr,
    conn_id: u64,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut buf = BytesMut::with_capacity(4096);
    let mut first = true;
    loop {
        let wait = if first {
            proxy.settings.handshake_timeout
        } else {
            proxy.settings.keepalive_timeout
        };
        first = false;
        let head = match tokio::time::timeout(wait, read_head(&mut stream, &mut buf)).await {
            Ok(Ok(Some(head))) => head,
            Ok(Ok(None)) => return,
            Ok(Err(why)) => {
                debug!("bad request: {why}");
                proxy.stats.http_errors.fetch_add(1, Ordering::Relaxed);
                let _ = stream
                    .write_all(&response::status(400, "Bad Request", false))
                    .await;
                return;
            }
            Err(_) => {
                debug!("no request within {} s", wait.as_secs());
                return;
            }
        };
        let kind = classify(&head);
        debug!(method = ?head.method, path = %head.path, ?kind, "request");
        // Authentication comes here; a listener that does not allow anonymous access refuses
        // everything until it exists (configuration validation keeps this from happening).
        if !policy.allow_anonymous {
            let _ = stream
                .write_all(&response::status(401, "Unauthorized", false))
                .await;
            return;
        }
        let keep_alive = head.keep_alive;
        let reply = match kind {
            RequestKind::Echo => {
                proxy.stats.echo_requests.fetch_add(1, Ordering::Relaxed);
                let len = head.content_length.unwrap_or(0);
                if discard_body(&mut stream, &mut buf, len).await.is_err() {
                    return;
                }
                if stream.write_all(&response::echo_response()).await.is_err() {
                    return;
                }
                if !keep_alive {
                    return;
                }
                continue;
            }
            RequestKind::InChannel { target } => {
                if head.expect_continue && stream.write_all(response::continue_100()).await.is_err()
                {
                    return;
                }
                super::inbound::run(proxy, stream, buf, head, target, peer, conn_id).await;
                return;
            }
            RequestKind::OutChannel { target } => {
                if head.expect_continue && stream.write_all(response::continue_100()).await.is_err()
                {
                    return;
                }
                super::outbound::run(proxy, stream, buf, head, target, peer, conn_id).await;
                return;
            }
            other => {
                let (code, reason) = other.http_status().unwrap_or((400, "Bad Request"));
                info!(status = code, "refused: {other:?}");
                response::status(code, reason, keep_alive)
            }
        };
        proxy.stats.http_errors.fetch_add(1, Ordering::Relaxed);
        if stream.write_all(&reply).await.is_err() {
            return;
        }
        let body = head.content_length.unwrap_or(0);
        if !keep_alive || head.chunked || body > MAX_DISCARD {
            return;
        }
        if discard_body(&mut stream, &mut buf, body).await.is_err() {
            return;
        }
    }
}
