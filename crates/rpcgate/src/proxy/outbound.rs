//! The outbound proxy's tokio driver: one task per virtual connection's OUT side on this proxy,
//! started by an `RPC_OUT_DATA` request whose response body streams everything the server
//! sends, for the life of the channel (and, with OUT_R2 recycling, its successors here).
//!
//! Reads CONN/A1 (or OUT_R1/A3 for an R1 successor), checks ValidPorts, connects, writes
//! CONN/A2 to the server and only then the `200 Success` header and CONN/A3 to the client (the
//! spec's order; a failure before that is answered with `503 RPC Error: 6ba`). Then it streams
//! under [`OutboundProxy`]'s flow control, pings the client when idle, follows recycling, and
//! never writes past the Content-Length it announced.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rpch_proto::outbound::{
    ChannelId, OutboundConfig, OutboundEvent, OutboundProxy, OutboundState, ToClient,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tracing::{Instrument, debug, info, info_span, warn};

use super::channel_start::{Started, connect_target, start};
use super::registry::{ClientRead, Direction, Orphan};
use super::{ActiveChannel, ChannelRequest, Proxy};
use crate::connect::TCP_KEEPALIVE_IDLE;
use crate::framed::{PduReader, WriterTask, WriterTx, finish_writer, spawn_writer};
use crate::http::{Target, response};
use crate::status::live::{Kind, NewEntry};

/// What reading a client OUT request can yield: body PDUs, then only its end.
enum ClientRead_ {
    Pdu(Bytes),
    Closed,
    Failed(String),
}

/// One client OUT request: its body reader and its response writer.
struct ClientSide {
    reader: PduReader<ClientRead>,
    writer: WriterTx,
    task: WriterTask,
    /// Response body bytes written (must stay within the announced Content-Length).
    sent: u64,
}

async fn read_side(id: ChannelId, side: Option<&mut ClientSide>) -> (ChannelId, ClientRead_) {
    let Some(side) = side else {
        return std::future::pending().await;
    };
    if !side.reader.body_done() {
        return match side.reader.next().await {
            Ok(Some(pdu)) => (id, ClientRead_::Pdu(pdu)),
            // The body is complete; from now on the client only ever closes.
            Ok(None) => match side.reader.wait_closed().await {
                Ok(true) => (id, ClientRead_::Closed),
                Ok(false) => (
                    id,
                    ClientRead_::Failed("data after the request body".into()),
                ),
                Err(e) => (id, ClientRead_::Failed(e.to_string())),
            },
            Err(e) => (id, ClientRead_::Failed(e.to_string())),
        };
    }
    match side.reader.wait_closed().await {
        Ok(true) => (id, ClientRead_::Closed),
        Ok(false) => (
            id,
            ClientRead_::Failed("data after the request body".into()),
        ),
        Err(e) => (id, ClientRead_::Failed(e.to_string())),
    }
}

/// Runs one OUT channel (and its same-proxy successors) to completion.
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
    let span = info_span!("out", target = %target, vc = tracing::field::Empty);
    let settings = proxy.settings.clone();
    async move {
        // MinConnTimeout (seconds, 120..14400) overrides our ConnectionTimeout (3.2.4.1.x).
        let connection_timeout_ms = head
            .pragmas()
            .min_conn_timeout_secs()
            .map(|secs| secs.clamp(120, 14_400) * 1000)
            .unwrap_or(settings.connection_timeout_ms);
        let body_length = head.content_length.unwrap_or(0);
        if let Some(started) = start(
            &proxy,
            stream,
            leftover,
            body_length,
            Direction::Out,
            conn_id,
        )
        .await
        {
            let channel = Channel {
                proxy,
                connection_timeout_ms,
                target,
                conn_id,
                peer,
                user,
            };
            channel.serve(started).await;
        }
    }
    .instrument(span)
    .await;
}

/// Runs a successor that its predecessor's task could no longer take, as an OUT_R1 successor.
pub async fn run_orphan(proxy: Arc<Proxy>, orphan: Orphan) {
    let channel = Channel {
        connection_timeout_ms: proxy.settings.connection_timeout_ms,
        proxy,
        target: orphan.target,
        conn_id: orphan.successor.conn_id,
        peer: orphan.peer,
        user: orphan.user,
    };
    channel.serve(orphan.successor.into_started()).await;
}

struct Channel {
    proxy: Arc<Proxy>,
    connection_timeout_ms: u32,
    target: Target,
    conn_id: u64,
    /// The client and its user, for the status page.
    peer: SocketAddr,
    user: String,
}

impl Channel {
    async fn serve(self, started: Started) {
        let Started {
            reader,
            write: mut client_w,
            first,
        } = started;
        let Channel {
            proxy,
            connection_timeout_ms,
            target,
            conn_id,
            peer,
            user,
        } = self;
        let settings = proxy.settings.clone();
        let first_channel = ChannelId(conn_id);
        let mut machine = OutboundProxy::new(
            OutboundConfig {
                receive_window: settings.receive_window,
                connection_timeout_ms,
                channel_lifetime: settings.out_channel_lifetime,
            },
            first_channel,
        );
        if let Err(e) = machine.handle_client_pdu(first_channel, first) {
            warn!("OUT channel: {e}");
            let _ = client_w
                .write_all(&response::rpc_error(response::RPC_S_PROTOCOL_ERROR))
                .await;
            return;
        }
        let Some(OutboundEvent::ConnectRequested { vc, recycled }) = machine.poll_event() else {
            return;
        };
        tracing::Span::current().record("vc", tracing::field::display(vc));

        let Some(server) = connect_target(&proxy, &target, &mut client_w).await else {
            return;
        };
        server.tune(TCP_KEEPALIVE_IDLE);
        let server_addr = server.peer_addr();
        machine.server_connected();
        if recycled {
            proxy.stats.out_r1.fetch_add(1, Ordering::Relaxed);
        }
        debug!(server = ?server_addr, in_process = server.is_local(), client_conn = conn_id, recycled, "OUT channel connected to the server");

        let (active, mut successors) = ActiveChannel::open(
            &proxy,
            Direction::Out,
            NewEntry {
                conn_id,
                kind: Kind::OutChannel,
                vc,
                peer,
                user: user.clone(),
                target: target.to_string(),
            },
        );
        let live = active.live.entry.clone();
        let mut registered = true;
        let (server_r, server_w) = server.into_split();
        let mut server_reader =
            PduReader::new(server_r, BytesMut::new()).skipping_legacy_greeting();
        let (server_tx, server_task) = spawn_writer(server_w);
        // CONN/A2 (or OUT_R1/A4) goes out before the 200 header (spec order).
        while let Some(pdu) = machine.poll_transmit_to_server() {
            let _ = server_tx.send(pdu).await;
        }
        let mut sides: HashMap<ChannelId, ClientSide> = HashMap::new();
        let (writer, task) = spawn_writer(client_w);
        sides.insert(
            first_channel,
            ClientSide {
                reader,
                writer,
                task,
                sent: 0,
            },
        );
        let lifetime = u64::from(settings.out_channel_lifetime);
        let mut opened_by = Some(tokio::time::Instant::now() + settings.handshake_timeout);
        let mut idle_deadline = tokio::time::Instant::now() + settings.idle_timeout;
        let mut total_sent = 0u64;
        let mut finished = false;
        let mut server_open = true;

        let outcome: String = 'outer: loop {
            let now = Instant::now();
            machine.handle_timeout(now);
            // One pass can make more ready (a switch of channels, an ack for the server):
            // the passes below repeat until nothing moves.
            let mut moved = true;
            while moved {
                moved = false;
                // Events first: a 200 header must precede its channel's first bytes.
                while let Some(event) = machine.poll_event() {
                    match event {
                        OutboundEvent::Opened => {
                            opened_by = None;
                            info!("OUT channel opened");
                        }
                        OutboundEvent::CloseClientChannel(id) => {
                            if let Some(side) = sides.remove(&id) {
                                total_sent += side.sent;
                                drop(side.writer);
                                crate::tasks::spawn(finish_writer(side.task));
                            }
                            proxy.stats.out_r2.fetch_add(1, Ordering::Relaxed);
                            live.recycled();
                            info!("OUT channel recycled on this proxy (OUT_R2)");
                        }
                        OutboundEvent::Finished => finished = true,
                        OutboundEvent::WindowAdvisory => {
                            proxy
                                .stats
                                .out_window_advisory
                                .fetch_add(1, Ordering::Relaxed);
                            info!(
                                "the client never acknowledges (as Samba's does not): its window \
                                 is advisory from now on, TCP back-pressure bounds what is buffered"
                            );
                        }
                        OutboundEvent::ConnectRequested { .. } => {}
                    }
                }
                for (id, side) in &mut sides {
                    while machine.has_transmit_to_client(*id) {
                        match side.writer.try_reserve() {
                            Ok(permit) => {
                                if let Some(out) = machine.poll_transmit_to_client(*id, now) {
                                    let bytes = to_wire(out, lifetime, &mut side.sent);
                                    idle_deadline =
                                        tokio::time::Instant::now() + settings.idle_timeout;
                                    permit.send(bytes);
                                    moved = true;
                                }
                            }
                            Err(_) => break,
                        }
                    }
                    if side.sent > lifetime {
                        break 'outer "an OUT channel's Content-Length is used up".into();
                    }
                }
                while machine.has_transmit_to_server() {
                    match server_tx.try_reserve() {
                        Ok(permit) => {
                            if let Some(pdu) = machine.poll_transmit_to_server() {
                                permit.send(pdu);
                                moved = true;
                            }
                        }
                        Err(_) => break,
                    }
                }
            }
            // A draining predecessor no longer owns the OUT side here: a new successor reaching
            // this proxy must start afresh (OUT_R1), not be handed to us.
            if registered
                && matches!(
                    machine.state(),
                    OutboundState::Draining | OutboundState::Finished
                )
            {
                active.forget();
                registered = false;
            }
            if finished
                && !machine.has_transmit_to_client(machine.current_channel())
                && !machine.has_transmit_to_server()
            {
                break "handed over to the successor outbound proxy (OUT_R1)".into();
            }
            let current = machine.current_channel();
            // A channel whose writer is full while the machine has more for it.
            let blocked = sides
                .iter()
                .find(|(id, side)| {
                    machine.has_transmit_to_client(**id) && side.writer.capacity() == 0
                })
                .map(|(id, side)| (*id, side.writer.clone()));
            let other = sides.keys().copied().find(|id| *id != current);
            let ping_at = machine.poll_timeout().map(tokio::time::Instant::from_std);
            let (current_side, other_side) = split_two(&mut sides, current, other);
            tokio::select! {
                read = server_reader.next(), if server_open && machine.wants_server_data() => match read {
                    Ok(Some(pdu)) => {
                        live.add_down(pdu.len());
                        crate::framed::log_rts("from server", &pdu);
                        idle_deadline = tokio::time::Instant::now() + settings.idle_timeout;
                        if let Err(e) = machine.handle_server_pdu(pdu) { break format!("server: {e}") }
                    }
                    // After OUT_R1/A9 the server is done with this leg; we still flush to the
                    // client and send OUT_R1/A10.
                    Ok(None) if matches!(machine.state(), OutboundState::Draining | OutboundState::Finished) => {
                        server_open = false;
                    }
                    Ok(None) => break "the server closed the OUT leg".into(),
                    Err(e) => break format!("server: {e}"),
                },
                (id, read) = read_side(current, current_side) => match read {
                    ClientRead_::Pdu(pdu) => {
                        crate::framed::log_rts("from client", &pdu);
                        if let Err(e) = machine.handle_client_pdu(id, pdu) { break format!("client: {e}") }
                    }
                    ClientRead_::Closed if machine.state() == OutboundState::Finished => {
                        break "the client closed the old OUT channel (OUT_R1)".into();
                    }
                    ClientRead_::Closed => break "the client closed the OUT channel".into(),
                    ClientRead_::Failed(e) => break format!("client: {e}"),
                },
                (id, read) = read_side(other.unwrap_or(current), other_side) => match read {
                    ClientRead_::Pdu(pdu) => {
                        crate::framed::log_rts("from client (successor)", &pdu);
                        if let Err(e) = machine.handle_client_pdu(id, pdu) { break format!("client: {e}") }
                    }
                    // A successor or retired request closing is the client's business.
                    ClientRead_::Closed | ClientRead_::Failed(_) => {
                        if let Some(side) = sides.remove(&id) {
                            drop(side.writer);
                            crate::tasks::spawn(finish_writer(side.task));
                        }
                    }
                },
                successor = successors.recv() => {
                    let Some(successor) = successor.map(|s| *s) else { continue };
                    let id = ChannelId(successor.conn_id);
                    if let Err(e) = machine.attach_successor(id, &successor.first) {
                        // We were finishing as it arrived: it runs on its own, as an OUT_R1
                        // successor would.
                        info!(successor_conn = successor.conn_id, "OUT successor not attached here ({e}); running it on its own");
                        proxy.channels.adopt(Orphan {
                            successor,
                            direction: Direction::Out,
                            target: target.clone(),
                            peer,
                            user: user.clone(),
                        });
                        continue;
                    }
                    info!(successor_conn = successor.conn_id, "OUT channel successor attached (OUT_R2)");
                    let started = successor.into_started();
                    let (writer, task) = spawn_writer(started.write);
                    sides.insert(id, ClientSide {
                        reader: started.reader,
                        writer,
                        task,
                        sent: 0,
                    });
                }
                permit = async {
                    match &blocked {
                        Some((_, tx)) => tx.reserve().await,
                        None => std::future::pending().await,
                    }
                }, if blocked.is_some() => {
                    let Some((id, _)) = blocked else { continue };
                    match permit {
                        Ok(permit) => if let Some(out) = machine.poll_transmit_to_client(id, Instant::now()) {
                            let mut sent = 0;
                            let bytes = to_wire(out, lifetime, &mut sent);
                            if let Some(side) = sides.get_mut(&id) { side.sent += sent; }
                            permit.send(bytes);
                        },
                        Err(_) => break "writing to the client failed".into(),
                    }
                }
                permit = server_tx.reserve(), if machine.has_transmit_to_server() => match permit {
                    Ok(permit) => if let Some(pdu) = machine.poll_transmit_to_server() { permit.send(pdu) },
                    Err(_) => break "writing to the server failed".into(),
                },
                () = sleep_until_opt(ping_at), if ping_at.is_some() => {}
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
        for (_, side) in sides {
            total_sent += side.sent;
            drop(side.writer);
            finish_writer(side.task).await;
        }
        info!(
            bytes_to_client = total_sent,
            pings = machine.pings_sent(),
            recycles = machine.recycles(),
            "OUT channel closed: {outcome}"
        );
    }
}

/// The bytes for one client transmit; body bytes are counted against the Content-Length.
fn to_wire(out: ToClient, lifetime: u64, sent: &mut u64) -> Bytes {
    match out {
        ToClient::ResponseHead => Bytes::from(response::out_channel_ok(lifetime)),
        ToClient::Pdu(pdu) => {
            crate::framed::log_rts("to client", &pdu);
            *sent += pdu.len() as u64;
            pdu
        }
    }
}

/// Two distinct entries of the map, mutably.
fn split_two(
    sides: &mut HashMap<ChannelId, ClientSide>,
    first: ChannelId,
    second: Option<ChannelId>,
) -> (Option<&mut ClientSide>, Option<&mut ClientSide>) {
    let mut a = None;
    let mut b = None;
    for (id, side) in sides.iter_mut() {
        if *id == first {
            a = Some(side);
        } else if Some(*id) == second {
            b = Some(side);
        }
    }
    (a, b)
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
