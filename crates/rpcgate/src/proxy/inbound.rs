//! The inbound proxy's tokio driver: one `RPC_IN_DATA` request for the life of its channel.
//!
//! Reads CONN/B1, checks ValidPorts, connects to the server (every address), and then moves
//! PDUs from the request body to the server leg under [`InboundProxy`]'s flow control. On
//! failure before the channel opens it answers `503 RPC Error` on the IN connection (most
//! clients only notice the OUT side, which fails the same way); afterwards it just closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use rpch_proto::inbound::{InboundConfig, InboundEvent, InboundProxy};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tracing::{Instrument, info, info_span, warn};

use super::{Proxy, client_address};
use crate::connect::{connect, tune_socket};
use crate::framed::{PduReader, finish_writer, spawn_writer};
use crate::http::{RequestHead, Target, response};

/// Runs one IN channel to completion.
pub async fn run<S>(
    proxy: Arc<Proxy>,
    stream: S,
    leftover: BytesMut,
    head: RequestHead,
    target: Target,
    peer: SocketAddr,
    conn_id: u64,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let span = info_span!("in", target = %target, vc = tracing::field::Empty);
    let settings = proxy.settings.clone();
    async move {
        proxy.stats.in_channels.fetch_add(1, Ordering::Relaxed);
        let (client_r, mut client_w) = tokio::io::split(stream);
        let body_length = head.content_length.unwrap_or(0);
        let mut client = PduReader::new(client_r, leftover).with_body_length(body_length);
        let mut machine = InboundProxy::new(InboundConfig {
            receive_window: settings.receive_window,
            connection_timeout_ms: settings.connection_timeout_ms,
        });

        let first = match tokio::time::timeout(settings.handshake_timeout, client.next()).await {
            Ok(Ok(Some(pdu))) => pdu,
            Ok(Ok(None)) => return info!("IN channel closed before CONN/B1"),
            Ok(Err(e)) => return warn!("IN channel: {e}"),
            Err(_) => return warn!("IN channel: no CONN/B1 within {:?}", settings.handshake_timeout),
        };
        if let Err(e) = machine.handle_client_pdu(first) {
            warn!("IN channel: {e}");
            let _ = client_w
                .write_all(&response::rpc_error(response::RPC_S_PROTOCOL_ERROR))
                .await;
            return;
        }
        let Some(InboundEvent::ConnectRequested { vc, client_keepalive_ms, .. }) = machine.poll_event()
        else {
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
        tune_socket(&server, Duration::from_millis(client_keepalive_ms.into()));
        let server_addr = server.peer_addr().ok();
        machine.server_connected(client_address(peer));
        info!(server = ?server_addr, client_conn = conn_id, "IN channel connected to the server");

        proxy.stats.channels_active.fetch_add(1, Ordering::Relaxed);
        let (server_r, server_w) = server.into_split();
        let mut server_reader = PduReader::new(server_r, BytesMut::new()).skipping_legacy_greeting();
        let (server_tx, server_task) = spawn_writer(server_w);
        let opened_by = tokio::time::Instant::now() + settings.handshake_timeout;
        let mut idle_deadline = tokio::time::Instant::now() + settings.idle_timeout;

        let outcome: String = loop {
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
                if let InboundEvent::Opened { server_window } = event {
                    info!(server_window, "IN channel opened");
                }
            }
            let opening = machine.state() != rpch_proto::inbound::InboundState::Opened;
            tokio::select! {
                read = client.next(), if machine.wants_client_data() => match read {
                    Ok(Some(pdu)) => {
                        idle_deadline = tokio::time::Instant::now() + settings.idle_timeout;
                        if let Err(e) = machine.handle_client_pdu(pdu) { break format!("client: {e}") }
                    }
                    Ok(None) => break "the client ended the IN channel".into(),
                    Err(e) => break format!("client: {e}"),
                },
                read = server_reader.next() => match read {
                    Ok(Some(pdu)) => {
                        idle_deadline = tokio::time::Instant::now() + settings.idle_timeout;
                        if let Err(e) = machine.handle_server_pdu(pdu) { break format!("server: {e}") }
                    }
                    Ok(None) => break "the server closed the IN leg".into(),
                    Err(e) => break format!("server: {e}"),
                },
                permit = server_tx.reserve(), if machine.has_transmit_to_server() => match permit {
                    Ok(permit) => if let Some(pdu) = machine.poll_transmit_to_server() { permit.send(pdu) },
                    Err(_) => break "writing to the server failed".into(),
                },
                () = tokio::time::sleep_until(opened_by), if opening => {
                    break "the server did not answer CONN/B2 in time".into();
                }
                () = tokio::time::sleep_until(idle_deadline) => {
                    break format!("no traffic for {} s (idle_timeout)", settings.idle_timeout.as_secs());
                }
            }
        };
        proxy.stats.channels_active.fetch_sub(1, Ordering::Relaxed);
        drop(server_tx);
        finish_writer(server_task).await;
        info!(bytes_from_client = client.bytes_read(), "IN channel closed: {outcome}");
    }
    .instrument(span)
    .await;
}
