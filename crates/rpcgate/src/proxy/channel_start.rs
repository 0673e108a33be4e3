//! What every channel request goes through before its role's driver takes over: reading its
//! first PDU (bounded by the handshake timeout), handing a successor (IN_Rx/A1, OUT_Rx/A3) to
//! the task that runs its predecessor on this proxy (R2), and, once the driver asks to, checking
//! ValidPorts and connecting to the server, with `503 RPC Error: 6ba` on refusal or failure.
//! Both the inbound and the outbound driver use it, so the two sides cannot drift apart.

use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use rpch_proto::Cookie;
use rpch_proto::rts::{RtsCommand as C, RtsPdu, flags};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tracing::{debug, info, warn};

use super::Proxy;
use super::registry::{ClientRead, ClientWrite, Direction, Successor};
use crate::connect::{connect_addrs, resolve};
use crate::framed::PduReader;
use crate::http::{Target, response};
use crate::leg_stream::LegStream;

/// A channel request that is to be served here: its body reader (positioned after the first
/// PDU), its response writer and its first PDU.
pub(crate) struct Started {
    pub reader: PduReader<ClientRead>,
    pub write: ClientWrite,
    pub first: Bytes,
}

impl Successor {
    /// The successor as a channel of its own: what is left of its body, and its writer.
    pub(crate) fn into_started(self) -> Started {
        let remaining = self.body_length.saturating_sub(self.first.len() as u64);
        Started {
            reader: PduReader::new(self.read, self.leftover).with_body_length(remaining),
            write: self.write,
            first: self.first,
        }
    }
}

/// The virtual connection a successor's first PDU names: IN_R1/A1 = IN_R2/A1 on an IN channel,
/// OUT_R1/A3 = OUT_R2/A3 on an OUT channel.
fn recycled_vc(first: &[u8], direction: Direction) -> Option<Cookie> {
    let rts = RtsPdu::decode(first).ok()?;
    match (direction, rts.flags, rts.commands.as_slice()) {
        (
            Direction::In,
            flags::RECYCLE_CHANNEL,
            [C::Version(_), C::Cookie(vc), C::Cookie(_), C::Cookie(_)],
        )
        | (
            Direction::Out,
            flags::RECYCLE_CHANNEL,
            [
                C::Version(_),
                C::Cookie(vc),
                C::Cookie(_),
                C::Cookie(_),
                C::ReceiveWindowSize(_),
            ],
        ) => Some(*vc),
        _ => None,
    }
}

/// Reads a channel request's first PDU; hands a successor to its predecessor's task when that
/// runs here. `None` when there is nothing left to serve (handed over, closed, timed out).
pub(crate) async fn start<S>(
    proxy: &Proxy,
    stream: S,
    leftover: BytesMut,
    body_length: u64,
    direction: Direction,
    conn_id: u64,
) -> Option<Started>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let name = match direction {
        Direction::In => "IN",
        Direction::Out => "OUT",
    };
    let (read, write) = tokio::io::split(stream);
    let read: ClientRead = Box::new(read);
    let write: ClientWrite = Box::new(write);
    let mut reader = PduReader::new(read, leftover).with_body_length(body_length);
    let timeout = proxy.settings.handshake_timeout;
    let first = match tokio::time::timeout(timeout, reader.next()).await {
        Ok(Ok(Some(pdu))) => pdu,
        Ok(Ok(None)) => {
            info!("{name} channel closed before its first PDU");
            return None;
        }
        Ok(Err(e)) => {
            warn!("{name} channel: {e}");
            return None;
        }
        Err(_) => {
            warn!("{name} channel: no first PDU within {timeout:?}");
            return None;
        }
    };
    let counter = match direction {
        Direction::In => &proxy.stats.in_channels,
        Direction::Out => &proxy.stats.out_channels,
    };
    let Some(vc) = recycled_vc(&first, direction) else {
        counter.fetch_add(1, Ordering::Relaxed);
        return Some(Started {
            reader,
            write,
            first,
        });
    };
    let (read, leftover) = reader.into_parts();
    let successor = Successor {
        read,
        write,
        leftover,
        first,
        body_length,
        conn_id,
    };
    match proxy.channels.hand_over(vc, direction, successor) {
        Ok(()) => {
            tracing::Span::current().record("vc", tracing::field::display(vc));
            info!("{name} channel successor handed to its predecessor on this proxy (R2)");
            None
        }
        // R1: the predecessor runs on another proxy; this one is a channel of its own.
        Err(back) => {
            counter.fetch_add(1, Ordering::Relaxed);
            Some(back.into_started())
        }
    }
}

/// Connects to the target once ValidPorts allows it (checked before any name resolution):
/// over an in-memory pipe when an address of the target is an endpoint of this process
/// ([`crate::leg_stream`]), over TCP (every address, happy eyeballs) otherwise. On refusal or
/// failure answers `503 RPC Error: 6ba` on the client connection and returns `None`.
pub(crate) async fn connect_target<W: AsyncWrite + Unpin>(
    proxy: &Proxy,
    target: &Target,
    client: &mut W,
) -> Option<LegStream> {
    if !proxy.check_target(target) {
        warn!("refused: {target} is not allowed by ValidPorts");
    } else {
        let timeout = proxy.settings.connect_timeout;
        let connected = match resolve(&target.host, target.port).await {
            Ok(addrs) => {
                let local = addrs
                    .iter()
                    .find_map(|a| proxy.local_endpoints.find(*a).map(|e| (*a, e)));
                match local {
                    Some((address, endpoint)) => {
                        debug!(%address, "the target is an endpoint of this process: in-process leg");
                        proxy.stats.in_process_legs.fetch_add(1, Ordering::Relaxed);
                        return Some(endpoint.accept_local(address));
                    }
                    None => connect_addrs(&target.host, target.port, &addrs, timeout).await,
                }
            }
            Err(e) => Err(e),
        };
        match connected {
            Ok(connected) => return Some(LegStream::Tcp(connected.stream)),
            Err(e) => {
                proxy
                    .stats
                    .server_unreachable
                    .fetch_add(1, Ordering::Relaxed);
                warn!("server unreachable: {e}");
            }
        }
    }
    let _ = client
        .write_all(&response::rpc_error(response::RPC_S_SERVER_UNAVAILABLE))
        .await;
    None
}
