//! The outbound proxy's tokio driver: one `RPC_OUT_DATA` request whose response body streams
//! everything the server sends, for the life of the channel.
//!
//! Reads CONN/A1, checks ValidPorts, connects, writes CONN/A2 to the server and only then the
//! `200 Success` header and CONN/A3 to the client (the spec's order; a failure before that is
//! answered with `503 RPC Error: 6ba`). Then it streams under [`OutboundProxy`]'s flow control,
//! pings the client when idle, and never writes past the Content-Length it announced.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rpch_proto::outbound::{OutboundConfig, OutboundEvent, OutboundProxy, OutboundState};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{Instrument, info, info_span, warn};

use super::Proxy;
use crate::connect::{TCP_KEEPALIVE_IDLE, connect, tune_socket};
use crate::framed::{PduReader, finish_writer, spawn_writer};
use crate::http::{RequestHead, Target, response};

/// Runs one OUT channel to completion.
pub async fn run<S>(
    proxy: Arc<Proxy>,
    stream: S,
    leftover: BytesMut,
    head: RequestHead,
    target: Target,
    _peer: SocketAddr,
    conn_id: u64,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let span = info_span!("out", target = %target, vc = tracing::field::Empty);
    let settings = proxy.settings.clone();
    async move {
        proxy.stats.out_channels.fetch_add(1, Ordering::Relaxed);
        // MinConnTimeout (seconds, 120..14400) overrides our ConnectionTimeout (3.2.4.1.x).
        let connection_timeout_ms = head
            .pragmas()
            .min_conn_timeout_secs()
            .map(|secs| secs.clamp(120, 14_400) * 1000)
            .unwrap_or(settings.connection_timeout_ms);
        let (client_r, mut client_w) = tokio::io::split(stream);
        let body_length = head.content_length.unwrap_or(0);
        let mut client = PduReader::new(client_r, leftover).with_body_length(body_length);
        let mut machine = OutboundProxy::new(OutboundConfig {
            receive_window: settings.receive_window,
            connection_timeout_ms,
            channel_lifetime: settings.out_channel_lifetime,
        });

        let first = match tokio::time::timeout(settings.handshake_timeout, client.next()).await {
            Ok(Ok(Some(pdu))) => pdu,
            Ok(Ok(None)) => return info!("OUT channel closed before CONN/A1"),
            Ok(Err(e)) => return warn!("OUT channel: {e}"),
            Err(_) => return warn!("OUT channel: no CONN/A1 within {:?}", settings.handshake_timeout),
        };
        if let Err(e) = machine.handle_client_pdu(first) {
            warn!("OUT channel: {e}");
            let _ = client_w
                .write_all(&response::rpc_error(response::RPC_S_PROTOCOL_ERROR))
                .await;
            return;
        }
        let Some(OutboundEvent::ConnectRequested { vc, .. }) = machine.poll_event() else {
            return;
        };
        tracing::Span::current().record("vc", tracing::field::display(vc));

        if !proxy.check_target(&target) {
            warn!("refused: {target} is not allowed by ValidPorts");
            let _ = client_w
                .write_all(&response::rpc_error(response::RPC_S_SERVER_UNAVAILABLE))
                .await;
            return;
        }
        let server = match connect(&target.host, target.port, settings.connect_timeout).await {
            Ok(connected) => connected.stream,
            Err(e) => {
                proxy.stats.server_unreachable.fetch_add(1, Ordering::Relaxed);
                warn!("server unreachable: {e}");
                let _ = client_w
                    .write_all(&response::rpc_error(response::RPC_S_SERVER_UNAVAILABLE))
                    .await;
                return;
            }
        };
        tune_socket(&server, TCP_KEEPALIVE_IDLE);
        let server_addr = server.peer_addr().ok();
        machine.server_connected();
        info!(server = ?server_addr, client_conn = conn_id, "OUT channel connected to the server");

        proxy.stats.channels_active.fetch_add(1, Ordering::Relaxed);
        let (server_r, server_w) = server.into_split();
        let mut server_reader = PduReader::new(server_r, BytesMut::new()).skipping_legacy_greeting();
        let (server_tx, server_task) = spawn_writer(server_w);
        // CONN/A2 goes out before the 200 header (spec order).
        if let Some(a2) = machine.poll_transmit_to_server() {
            let _ = server_tx.send(a2).await;
        }
        let (client_tx, client_task) = spawn_writer(client_w);
        let lifetime = u64::from(settings.out_channel_lifetime);
        let _ = client_tx
            .send(Bytes::from(response::out_channel_ok(lifetime)))
            .await;
        let mut body_sent = 0u64;
        let mut body_sent_before = 0u64;
        let (mut client_r, _) = client.into_parts();
        let mut scratch = [0u8; 64];
        let opened_by = tokio::time::Instant::now() + settings.handshake_timeout;
        let mut idle_deadline = tokio::time::Instant::now() + settings.idle_timeout;

        let outcome: String = loop {
            let now = Instant::now();
            machine.handle_timeout(now);
            while machine.has_transmit_to_client() {
                match client_tx.try_reserve() {
                    Ok(permit) => {
                        if let Some(pdu) = machine.poll_transmit_to_client(now) {
                            body_sent += pdu.len() as u64;
                            permit.send(pdu);
                        }
                    }
                    Err(_) => break,
                }
            }
            while machine.has_transmit_to_server() {
                match server_tx.try_reserve() {
                    Ok(permit) => {
                        if let Some(pdu) = machine.poll_transmit_to_server() {
                            permit.send(pdu);
                        }
                    }
                    Err(_) => break,
                }
            }
            while let Some(event) = machine.poll_event() {
                if event == OutboundEvent::Opened {
                    info!("OUT channel opened");
                }
            }
            if body_sent != body_sent_before {
                // Our pings count as traffic: an idle Outlook keeps its channels for hours,
                // and a dead client is found by the failing writes and TCP keep-alive.
                idle_deadline = tokio::time::Instant::now() + settings.idle_timeout;
                body_sent_before = body_sent;
            }
            if body_sent > lifetime {
                // Recycling would have started long before; without it the channel is over.
                break "the OUT channel's Content-Length is used up".into();
            }
            let opening = machine.state() != OutboundState::Opened;
            let ping_at = machine.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                read = server_reader.next(), if machine.wants_server_data() => match read {
                    Ok(Some(pdu)) => {
                        idle_deadline = tokio::time::Instant::now() + settings.idle_timeout;
                        if let Err(e) = machine.handle_server_pdu(pdu) { break format!("server: {e}") }
                    }
                    Ok(None) => break "the server closed the OUT leg".into(),
                    Err(e) => break format!("server: {e}"),
                },
                // After CONN/A1 the request body is complete; the client only ever closes.
                read = client_r.read(&mut scratch) => match read {
                    Ok(0) => break "the client closed the OUT channel".into(),
                    Ok(_) => break "the client sent data after its OUT request body".into(),
                    Err(e) => break format!("client: {e}"),
                },
                permit = client_tx.reserve(), if machine.has_transmit_to_client() => match permit {
                    Ok(permit) => if let Some(pdu) = machine.poll_transmit_to_client(Instant::now()) {
                        body_sent += pdu.len() as u64;
                        permit.send(pdu);
                    },
                    Err(_) => break "writing to the client failed".into(),
                },
                permit = server_tx.reserve(), if machine.has_transmit_to_server() => match permit {
                    Ok(permit) => if let Some(pdu) = machine.poll_transmit_to_server() { permit.send(pdu) },
                    Err(_) => break "writing to the server failed".into(),
                },
                () = tokio::time::sleep_until(ping_at.unwrap_or(opened_by)), if ping_at.is_some() => {}
                () = tokio::time::sleep_until(opened_by), if opening => {
                    break "the server did not answer CONN/A2 in time".into();
                }
                () = tokio::time::sleep_until(idle_deadline) => {
                    break format!("no traffic for {} s (idle_timeout)", settings.idle_timeout.as_secs());
                }
            }
        };
        proxy.stats.channels_active.fetch_sub(1, Ordering::Relaxed);
        drop(server_tx);
        drop(client_tx);
        finish_writer(server_task).await;
        finish_writer(client_task).await;
        info!(bytes_to_client = body_sent, pings = machine.pings_sent(), "OUT channel closed: {outcome}");
    }
    .instrument(span)
    .await;
}
