//! One HTTP connection to the proxy: reads request heads, answers echo, Autodiscover and error
//! requests with keep-alive, and hands the connection to a channel driver on `RPC_IN_DATA` /
//! `RPC_OUT_DATA`.
//!
//! Every wait is bounded: the first head by the handshake timeout, later heads by the
//! keep-alive timeout; a head larger than the parser's limit is refused. Echo request bodies
//! (0..16 bytes, Windows sends 4) are read exactly and never waited on beyond Content-Length.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, info, warn};

use super::{ListenerAccess, Proxy};
use crate::auth::{ConnAuth, Denial, Identity, Verdict};
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
///
/// Every request is authenticated first ([`crate::auth`]): a `401` (with `Content-Length: 0`)
/// keeps the connection when the client can go on with it, and NTLM/Negotiate state stays
/// with the connection, so a handshake finished on an echo request covers the channel
/// request that follows. A channel whose user may not reach its target is refused with
/// `503 RPC Error: 5`. On a TLS-offloaded listener only trusted load balancers are served and
/// the client address comes from `X-Forwarded-For` ([`super::forwarded`]).
pub async fn serve_connection<S>(
    proxy: Arc<Proxy>,
    access: Arc<ListenerAccess>,
    mut stream: S,
    peer: SocketAddr,
    conn_id: u64,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer_ip = super::client_address(peer);
    let offloaded = access.trusted_proxies.is_enabled();
    if offloaded && !access.trusted_proxies.trusts(peer_ip) {
        warn!("refused: {peer_ip} is not one of this listener's trusted_proxies");
        proxy
            .stats
            .refused_untrusted
            .fetch_add(1, Ordering::Relaxed);
        let _ = stream
            .write_all(&response::status(403, "Forbidden", false))
            .await;
        return;
    }
    let mut conn_auth = ConnAuth::default();
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
        let client_ip = if offloaded {
            let client = access
                .trusted_proxies
                .client(peer_ip, head.header_values("x-forwarded-for"));
            tracing::Span::current().record("client", tracing::field::display(client));
            client
        } else {
            peer_ip
        };
        let kind = classify(&head);
        debug!(method = ?head.method, path = %head.path, ?kind, "request");
        let keep_alive = head.keep_alive;
        // Authentication and Autodiscover are boxed: their states (directory binds, password
        // hashing, XML) would otherwise size every idle connection's future.
        let (identity, ok_headers) =
            match Box::pin(access.auth.authenticate(&head, &mut conn_auth, client_ip)).await {
                Verdict::Allow { identity, headers } => (identity, headers),
                Verdict::Continue { headers } => {
                    if !unauthorized(&mut stream, &mut buf, &head, &headers).await {
                        return;
                    }
                    continue;
                }
                Verdict::Deny(denial) => {
                    let counter = match denial {
                        Denial::NoCredentials => &proxy.stats.auth_challenges,
                        Denial::Failed => &proxy.stats.auth_failures,
                        Denial::Throttled => &proxy.stats.auth_throttled,
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    if !unauthorized(&mut stream, &mut buf, &head, &access.auth.challenges()).await
                    {
                        return;
                    }
                    continue;
                }
            };
        tracing::Span::current().record("user", tracing::field::display(&identity.name));
        let inbound = matches!(kind, RequestKind::InChannel { .. });
        let reply = match kind {
            RequestKind::Echo => {
                proxy.stats.echo_requests.fetch_add(1, Ordering::Relaxed);
                let len = head.content_length.unwrap_or(0);
                if discard_body(&mut stream, &mut buf, len).await.is_err() {
                    return;
                }
                let echo = response::echo_response_with_headers(&ok_headers);
                if stream.write_all(&echo).await.is_err() {
                    return;
                }
                if !keep_alive {
                    return;
                }
                continue;
            }
            RequestKind::Autodiscover if let Some(service) = &access.autodiscover => {
                let keep = Box::pin(crate::autodiscover::conn::serve(
                    &mut stream,
                    &mut buf,
                    &head,
                    service,
                    &identity,
                    &ok_headers,
                    proxy.settings.handshake_timeout,
                ))
                .await;
                if !keep {
                    return;
                }
                continue;
            }
            RequestKind::InChannel { target } | RequestKind::OutChannel { target }
                if !authorized(&access, &identity, &target) =>
            {
                proxy
                    .stats
                    .denied_by_authorization
                    .fetch_add(1, Ordering::Relaxed);
                warn!(user = %identity.name, "refused: {} may not reach {target} (auth.allow)", identity.name);
                let _ = stream
                    .write_all(&response::rpc_error(response::ERROR_ACCESS_DENIED))
                    .await;
                return;
            }
            RequestKind::InChannel { target } | RequestKind::OutChannel { target } => {
                if head.expect_continue && stream.write_all(response::continue_100()).await.is_err()
                {
                    return;
                }
                let request = super::ChannelRequest {
                    head,
                    target,
                    peer: SocketAddr::new(client_ip, peer.port()),
                    conn_id,
                    user: identity.name,
                };
                // Boxed, so that this connection's future is sized for reading heads, not for
                // the largest thing it may become; an empty head buffer is let go.
                let leftover = if buf.is_empty() { BytesMut::new() } else { buf };
                if inbound {
                    Box::pin(super::inbound::run(proxy, stream, leftover, request)).await;
                } else {
                    Box::pin(super::outbound::run(proxy, stream, leftover, request)).await;
                }
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

fn authorized(access: &ListenerAccess, identity: &Identity, target: &crate::http::Target) -> bool {
    access
        .auth
        .core
        .as_ref()
        .is_none_or(|core| core.authorize(identity, target))
}

/// Writes a `401` with `headers`; returns whether the connection can carry the next request.
/// It can when the client wants keep-alive and its body (if any) is small and on its way: a
/// client waiting for `100 Continue` never sends its body after a final response, and a
/// channel body is never drained.
async fn unauthorized<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    head: &RequestHead,
    headers: &[(String, String)],
) -> bool {
    let body = head.content_length.unwrap_or(0);
    let keep = head.keep_alive
        && !head.chunked
        && (body == 0 || (!head.expect_continue && body <= MAX_DISCARD));
    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let reply = response::status_with_headers(401, "Unauthorized", keep, &pairs);
    if stream.write_all(&reply).await.is_err() {
        return false;
    }
    keep && discard_body(stream, buf, body).await.is_ok()
}
