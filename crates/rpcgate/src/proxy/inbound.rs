//! The inbound proxy's tokio driver: one task per virtual connection's IN side on this proxy,
//! started by an `RPC_IN_DATA` request and living as long as its channel (and, with IN_R2
//! recycling, its successors on this proxy).
//!
//! Reads CONN/B1 (or IN_R1/A1 for an R1 successor), checks ValidPorts, connects to the server
//! (every address), and then moves PDUs from the request body to the server leg under
//! [`InboundProxy`]'s flow control. A successor request for the same virtual connection that
//! reaches this proxy is handed to this task through the proxy's channel table. On failure
//! before the channel opens it answers `503 RPC Error` on the IN connection (most clients only
//! notice the OUT side, which fails the same way); afterwards it just closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use rpch_proto::inbound::{ChannelId, InboundConfig, InboundEvent, InboundProxy, InboundState};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tracing::{Instrument, debug, info, info_span, warn};

use super::channel_start::{Started, connect_target, start};
use super::registry::{ClientRead, ClientWrite, Direction, Orphan};
use super::{ActiveChannel, ChannelRequest, Proxy, client_address};
use crate::framed::{PduReader, ReadError, finish_writer, spawn_writer};
use crate::http::{Target, response};
use crate::status::live::{Kind, NewEntry};

/// One client IN request being read.
struct ClientSide {
    id: ChannelId,
    reader: PduReader<ClientRead>,
    /// Held so the connection stays open; an IN request gets no response on success.
    _write: ClientWrite,
}

async fn read_client(
    side: &mut Option<ClientSide>,
) -> (ChannelId, Result<Option<bytes::Bytes>, ReadError>) {
    match side {
        Some(side) => (side.id, side.reader.next().await),
        None => std::future::pending().await,
    }
}

/// Runs one IN channel (and its same-proxy successors) to completion.
pub async fn run<S>(proxy: Arc<Proxy>, stream: S, leftover: BytesMut, request: ChannelRequest)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let ChannelRequest {
        head,
        target,
        peer,
        conn_id,
        user,
    } = request;
    let span = info_span!("in", target = %target, vc = tracing::field::Empty);
    async move {
        let body_length = head.content_length.unwrap_or(0);
        if let Some(started) = start(
            &proxy,
            stream,
            leftover,
            body_length,
            Direction::In,
            conn_id,
        )
        .await
        {
            serve_channel(proxy, started, target, peer, conn_id, user).await;
        }
    }
    .instrument(span)
    .await;
}

/// Runs a successor that its predecessor's task could no longer take, as an IN_R1 successor.
pub async fn run_orphan(proxy: Arc<Proxy>, orphan: Orphan) {
    let conn_id = orphan.successor.conn_id;
    let started = orphan.successor.into_started();
    serve_channel(
        proxy,
        started,
        orphan.target,
        orphan.peer,
        conn_id,
        orphan.user,
    )
    .await;
}

async fn serve_channel(
    proxy: Arc<Proxy>,
    started: Started,
    target: Target,
    peer: SocketAddr,
    conn_id: u64,
    user: String,
) {
    let Started {
        reader,
        write: mut client_w,
        first,
    } = started;
    let settings = proxy.settings.clone();
    let first_channel = ChannelId(conn_id);
    let mut machine = InboundProxy::new(
        InboundConfig {
            receive_window: settings.receive_window,
            connection_timeout_ms: settings.connection_timeout_ms,
        },
        first_channel,
    );
    if let Err(e) = machine.handle_client_pdu(first_channel, first) {
        warn!("IN channel: {e}");
        let _ = client_w
            .write_all(&response::rpc_error(response::RPC_S_PROTOCOL_ERROR))
            .await;
        return;
    }
    let Some(InboundEvent::ConnectRequested {
        vc,
        recycled,
        client_keepalive_ms,
    }) = machine.poll_event()
    else {
        return;
    };
    tracing::Span::current().record("vc", tracing::field::display(vc));

    let Some(server) = connect_target(&proxy, &target, &mut client_w).await else {
        return;
    };
    server.tune(Duration::from_millis(client_keepalive_ms.into()));
    let server_addr = server.peer_addr();
    machine.server_connected(client_address(peer));
    if recycled {
        proxy.stats.in_r1.fetch_add(1, Ordering::Relaxed);
    }
    debug!(server = ?server_addr, in_process = server.is_local(), client_conn = conn_id, recycled, "IN channel connected to the server");

    let (active, mut successors) = ActiveChannel::open(
        &proxy,
        Direction::In,
        NewEntry {
            conn_id,
            kind: Kind::InChannel,
            vc,
            peer,
            user: user.clone(),
            target: target.to_string(),
        },
    );
    let live = active.live.entry.clone();
    let mut registered = true;
    let (server_r, server_w) = server.into_split();
    let mut server_reader = PduReader::new(server_r, BytesMut::new()).skipping_legacy_greeting();
    let (server_tx, server_task) = spawn_writer(server_w);
    let mut opened_by = Some(tokio::time::Instant::now() + settings.handshake_timeout);
    let mut idle_deadline = tokio::time::Instant::now() + settings.idle_timeout;
    let mut current = Some(ClientSide {
        id: first_channel,
        reader,
        _write: client_w,
    });
    // IN_R2: the successor, plugged until IN_R2/A5 arrives on the current channel.
    let mut next: Option<ClientSide> = None;
    let mut bytes_from_client = 0u64;
    let mut server_open = true;

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
        let mut finished = false;
        while let Some(event) = machine.poll_event() {
            match event {
                InboundEvent::Opened { server_window } => {
                    opened_by = None;
                    info!(server_window, "IN channel opened");
                }
                InboundEvent::CloseClientChannel(old) => {
                    // IN_R2 complete: the successor becomes the channel read.
                    if current.as_ref().is_some_and(|c| c.id == old) {
                        if let Some(side) = current.take() {
                            bytes_from_client += side.reader.bytes_read();
                        }
                        current = next.take();
                    }
                    proxy.stats.in_r2.fetch_add(1, Ordering::Relaxed);
                    live.recycled();
                    info!("IN channel recycled on this proxy (IN_R2)");
                }
                InboundEvent::Finished => finished = true,
                InboundEvent::KeepAliveChanged { .. } | InboundEvent::ConnectRequested { .. } => {}
            }
        }
        // A draining predecessor no longer owns the virtual connection's IN side here: a new
        // successor reaching this proxy must start afresh (IN_R1), not be handed to us.
        if registered
            && matches!(
                machine.state(),
                InboundState::Draining | InboundState::Finished
            )
        {
            active.forget();
            registered = false;
        }
        if finished && !machine.has_transmit_to_server() {
            break "handed over to the successor inbound proxy (IN_R1)".into();
        }
        let reading = current
            .as_ref()
            .is_some_and(|c| machine.wants_client_data(c.id));
        tokio::select! {
            (channel, read) = read_client(&mut current), if reading => match read {
                Ok(Some(pdu)) => {
                    live.add_up(pdu.len());
                    idle_deadline = tokio::time::Instant::now() + settings.idle_timeout;
                    if let Err(e) = machine.handle_client_pdu(channel, pdu) { break format!("client: {e}") }
                }
                Ok(None) => {
                    if matches!(machine.state(), InboundState::Draining | InboundState::Finished) {
                        current = None;
                        continue;
                    }
                    let body_done = current.as_ref().is_some_and(|c| c.reader.body_done());
                    break if body_done {
                        "the client used up the IN request's Content-Length".into()
                    } else {
                        format!("the client closed the IN channel (state {:?})", machine.state())
                    };
                }
                Err(e) => break format!("client: {e}"),
            },
            // IN_R2: the successor is read too (its RTS PDUs go on at once).
            (channel, read) = read_client(&mut next), if next.is_some() => match read {
                Ok(Some(pdu)) => {
                    live.add_up(pdu.len());
                    if let Err(e) = machine.handle_client_pdu(channel, pdu) { break format!("client (successor): {e}") }
                }
                Ok(None) => break "the client closed its successor IN channel".into(),
                Err(e) => break format!("client (successor): {e}"),
            },
            read = server_reader.next(), if server_open => match read {
                Ok(Some(pdu)) => {
                    idle_deadline = tokio::time::Instant::now() + settings.idle_timeout;
                    if let Err(e) = machine.handle_server_pdu(pdu) { break format!("server: {e}") }
                }
                // After IN_R1/B1 the server may close this leg while we finish writing.
                Ok(None) if matches!(machine.state(), InboundState::Draining | InboundState::Finished) => {
                    server_open = false;
                }
                Ok(None) => break "the server closed the IN leg".into(),
                Err(e) => break format!("server: {e}"),
            },
            successor = successors.recv() => {
                let Some(successor) = successor.map(|s| *s) else { continue };
                let id = ChannelId(successor.conn_id);
                if let Err(e) = machine.attach_successor(id, &successor.first) {
                    // We were finishing as it arrived: it runs on its own, as an IN_R1
                    // successor would.
                    info!(successor_conn = successor.conn_id, "IN successor not attached here ({e}); running it on its own");
                    proxy.channels.adopt(Orphan { successor, direction: Direction::In, target: target.clone(), peer, user: user.clone() });
                    continue;
                }
                info!(successor_conn = successor.conn_id, "IN channel successor attached (IN_R2)");
                let started = successor.into_started();
                next = Some(ClientSide {
                    id,
                    reader: started.reader,
                    _write: started.write,
                });
            }
            permit = server_tx.reserve(), if machine.has_transmit_to_server() => match permit {
                Ok(permit) => if let Some(pdu) = machine.poll_transmit_to_server() { permit.send(pdu) },
                Err(_) => break "writing to the server failed".into(),
            },
            () = sleep_until_opt(opened_by), if opened_by.is_some() => {
                break "the server did not answer in time".into();
            }
            () = tokio::time::sleep_until(idle_deadline) => {
                break format!("no traffic for {} s (idle_timeout)", settings.idle_timeout.as_secs());
            }
        }
    };
    drop(active);
    drop(server_tx);
    finish_writer(server_task).await;
    if let Some(side) = current {
        bytes_from_client += side.reader.bytes_read();
    }
    info!(bytes_from_client, "IN channel closed: {outcome}");
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
