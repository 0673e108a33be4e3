//! The inbound proxy role (MS-RPCH 3.2.3): the proxy end of IN channels.
//!
//! It receives the client's RTS and RPC PDUs from `RPC_IN_DATA` request bodies and forwards
//! them over its TCP leg to the server. It never answers the client on success (the IN request
//! has no response); acknowledgements for the client travel via the server and the OUT channel.
//!
//! ```text
//!  client                 inbound proxy                       server
//!    |--CONN/B1------------->|  event ConnectRequested          |
//!    |                       |  (shell checks ValidPorts, connects)
//!    |                       |  server_connected() --CONN/B2--->|
//!    |--RPC PDUs (plugged)-->|                                  |
//!    |                       |<----------------------CONN/B3----|  opened: unplug
//!    |--RPC PDUs------------>|--RPC PDUs (server's window)----->|
//!    |                       |--FCAwD(FDClient) (our window)--->|--> OUT channel --> client
//!    |                       |<--FlowControlAck (server window)-|
//!
//!  recycling (3.2.3.5.x), the client opens a successor IN request starting with IN_Rx/A1:
//!    R2, this proxy knows the VC: attach_successor() --IN_R2/A2--> server; the client's
//!        IN_R2/A5 on the old channel switches reading to the successor.
//!    R1, another proxy had it: a fresh InboundProxy sends IN_R1/A2 on a new leg and waits,
//!        plugged, for IN_R1/B2; the old proxy, on IN_R1/A5, sends IN_R1/A6, flushes, sends
//!        IN_R1/B1 and finishes.
//! ```
//!
//! Driving it: feed framed PDUs with [`InboundProxy::handle_client_pdu`] (saying which client
//! channel they came from) and [`InboundProxy::handle_server_pdu`]; on
//! [`InboundEvent::ConnectRequested`] connect and call [`InboundProxy::server_connected`];
//! write what [`InboundProxy::poll_transmit_to_server`] returns; read a client channel only
//! while [`InboundProxy::wants_client_data`] says so.

use std::collections::VecDeque;
use std::net::IpAddr;

use bytes::Bytes;

use crate::cookie::Cookie;
use crate::error::ProtocolError;
use crate::flow::{ReceiveWindow, SendWindow};
use crate::outbox::Outbox;
use crate::pdu::header::is_rts;
use crate::rts::{ForwardDestination, RtsCommand as C, RtsPdu, build, flags};

/// A shell-assigned id for one client HTTP channel (one `RPC_IN_DATA` request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelId(pub u64);

/// Settings of the inbound proxy role.
#[derive(Debug, Clone, Copy)]
pub struct InboundConfig {
    /// Our receive window for client -> proxy RPC bytes (CONN/B2 ReceiveWindowSize).
    pub receive_window: u32,
    /// Our ConnectionTimeout in milliseconds (CONN/B2).
    pub connection_timeout_ms: u32,
}

/// Where the inbound proxy is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundState {
    /// Waiting for CONN/B1 or IN_R1/A1 (Open_Start).
    AwaitFirst,
    /// The first PDU was seen; the shell is connecting to the server.
    AwaitConnect,
    /// CONN/B2 sent; client PDUs are queued until CONN/B3 (B3W).
    AwaitB3,
    /// IN_R1/A2 sent; client PDUs are queued until IN_R1/B2 (Wait_B2).
    AwaitB2,
    /// Forwarding.
    Opened,
    /// IN_R1 predecessor after IN_R1/A5: flushing, then IN_R1/B1, then done.
    Draining,
    /// Nothing more to do; close once the server leg is written out.
    Finished,
}

impl InboundState {
    fn name(self) -> &'static str {
        match self {
            Self::AwaitFirst => "Open_Start",
            Self::AwaitConnect => "connecting",
            Self::AwaitB3 => "B3W",
            Self::AwaitB2 => "Wait_B2",
            Self::Opened => "Opened",
            Self::Draining => "draining (IN_R1 predecessor)",
            Self::Finished => "finished",
        }
    }
}

/// What the shell must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundEvent {
    /// The first PDU arrived: check the target and connect to the server.
    ConnectRequested {
        vc: Cookie,
        /// IN_R1 successor: a recycled channel whose predecessor was on another proxy.
        recycled: bool,
        /// Interval for TCP keep-alive on the server leg (0 in CONN/B1 means 300 000 ms).
        client_keepalive_ms: u32,
    },
    /// The channel is open (CONN/B3 or IN_R1/B2 arrived).
    Opened { server_window: u32 },
    /// A Keep-Alive PDU changed the keep-alive interval.
    KeepAliveChanged { client_keepalive_ms: u32 },
    /// IN_R2: reading moved to the successor; this (predecessor) channel is done: close it.
    CloseClientChannel(ChannelId),
    /// IN_R1 predecessor: everything is handed to the server; close both sides.
    Finished,
}

#[derive(Debug, Clone, Copy)]
struct Channel {
    vc: Cookie,
    association_group: Cookie,
    version: u32,
}

#[derive(Debug, Clone, Copy)]
struct ClientChannel {
    id: ChannelId,
    cookie: Cookie,
}

/// The inbound proxy state machine for one virtual connection's IN side on this proxy.
#[derive(Debug)]
pub struct InboundProxy {
    config: InboundConfig,
    state: InboundState,
    channel: Option<Channel>,
    /// The channel being read.
    current: ClientChannel,
    /// IN_R2: a successor attached and plugged until IN_R2/A5 arrives on `current`.
    successor: Option<ClientChannel>,
    /// IN_R2: RPC PDUs the client already sent on the successor, held until the switch.
    successor_rpc: Outbox,
    successor_window: ReceiveWindow,
    /// IN_R1 successor: the predecessor cookie for IN_R1/A2.
    predecessor_cookie: Option<Cookie>,
    from_client: ReceiveWindow,
    to_server: Option<SendWindow>,
    /// Cookies acks from the server may name (the current one and, after IN_R2, the new one).
    server_ack_cookies: [Option<Cookie>; 2],
    rts_to_server: Outbox,
    rpc_to_server: Outbox,
    events: VecDeque<InboundEvent>,
    recycles: u64,
}

const CHANNEL: &str = "IN channel (client side)";

fn keepalive_or_default(ms: u32) -> u32 {
    if ms == 0 { 300_000 } else { ms }
}

impl InboundProxy {
    /// A new IN channel; `channel` is the shell's id for its HTTP request.
    pub fn new(config: InboundConfig, channel: ChannelId) -> Self {
        Self {
            config,
            state: InboundState::AwaitFirst,
            channel: None,
            current: ClientChannel {
                id: channel,
                cookie: Cookie::default(),
            },
            successor: None,
            successor_rpc: Outbox::default(),
            successor_window: ReceiveWindow::new(config.receive_window),
            predecessor_cookie: None,
            from_client: ReceiveWindow::new(config.receive_window),
            to_server: None,
            server_ack_cookies: [None, None],
            rts_to_server: Outbox::default(),
            rpc_to_server: Outbox::default(),
            events: VecDeque::new(),
            recycles: 0,
        }
    }

    pub fn state(&self) -> InboundState {
        self.state
    }

    /// The virtual-connection cookie, once the first PDU has arrived.
    pub fn vc_cookie(&self) -> Option<Cookie> {
        self.channel.map(|c| c.vc)
    }

    /// The client channel currently read.
    pub fn current_channel(&self) -> ChannelId {
        self.current.id
    }

    /// IN_R2 recyclings completed on this proxy.
    pub fn recycles(&self) -> u64 {
        self.recycles
    }

    /// A framed PDU from client channel `from`.
    pub fn handle_client_pdu(&mut self, from: ChannelId, pdu: Bytes) -> Result<(), ProtocolError> {
        if self.successor.is_some_and(|s| s.id == from) {
            return self.handle_successor_pdu(pdu);
        }
        if from != self.current.id {
            return Err(ProtocolError::Unexpected {
                channel: CHANNEL,
                state: self.state.name(),
                expected: "PDUs on the current or successor IN channel",
                got: "a PDU on an unknown channel".into(),
            });
        }
        if !is_rts(&pdu) {
            return self.handle_client_rpc(pdu);
        }
        let rts = RtsPdu::decode(&pdu)?;
        match (self.state, rts.flags, rts.commands.as_slice()) {
            (
                InboundState::AwaitFirst,
                flags::NONE,
                [
                    C::Version(version),
                    C::Cookie(vc),
                    C::Cookie(in_channel),
                    C::ChannelLifetime(_),
                    C::ClientKeepalive(keepalive),
                    C::AssociationGroupId(association_group),
                ],
            ) => {
                self.channel = Some(Channel {
                    vc: *vc,
                    association_group: *association_group,
                    version: (*version).min(crate::rts::RTS_VERSION),
                });
                self.current.cookie = *in_channel;
                self.state = InboundState::AwaitConnect;
                self.events.push_back(InboundEvent::ConnectRequested {
                    vc: *vc,
                    recycled: false,
                    client_keepalive_ms: keepalive_or_default(*keepalive),
                });
                Ok(())
            }
            // IN_R1/A1 on a fresh proxy: the predecessor lives on another proxy (IN_R1).
            (
                InboundState::AwaitFirst,
                flags::RECYCLE_CHANNEL,
                [
                    C::Version(version),
                    C::Cookie(vc),
                    C::Cookie(predecessor),
                    C::Cookie(successor),
                ],
            ) => {
                self.channel = Some(Channel {
                    vc: *vc,
                    association_group: Cookie::default(),
                    version: (*version).min(crate::rts::RTS_VERSION),
                });
                self.current.cookie = *successor;
                self.predecessor_cookie = Some(*predecessor);
                self.state = InboundState::AwaitConnect;
                self.events.push_back(InboundEvent::ConnectRequested {
                    vc: *vc,
                    recycled: true,
                    client_keepalive_ms: 300_000,
                });
                Ok(())
            }
            (InboundState::AwaitFirst, _, _) => Err(self.unexpected("CONN/B1 or IN_R1/A1", &rts)),
            // Pings keep the HTTP connection alive; they go no further.
            (_, flags::PING, []) => Ok(()),
            (_, flags::OTHER_CMD, [C::ClientKeepalive(ms)]) => {
                self.events.push_back(InboundEvent::KeepAliveChanged {
                    client_keepalive_ms: keepalive_or_default(*ms),
                });
                Ok(())
            }
            // IN_R1/A5 or IN_R2/A5: the client's last PDU on this (predecessor) channel.
            (InboundState::Opened, flags::NONE, [C::Cookie(successor)]) => {
                self.predecessor_done(*successor)
            }
            // PDUs for the server or the outbound proxy are forwarded unchanged (3.2.3.5.x):
            // flow-control acks for the OUT channel, OUT recycling PDUs (A7 -> A8, whose
            // Version the inbound proxy drops).
            (_, _, _)
                if matches!(
                    rts.destination(),
                    Some(ForwardDestination::Server | ForwardDestination::OutProxy)
                ) =>
            {
                self.forward_client_rts(pdu, &rts);
                Ok(())
            }
            _ => Err(self.unexpected("Ping, Keep-Alive, IN_Rx/A5 or a PDU to forward", &rts)),
        }
    }

    /// IN_R2: the client switched before we did. RTS PDUs (acks for the OUT channel above
    /// all) go on at once, or the two directions could wait on each other; RPC PDUs wait for
    /// IN_R2/A5 on the predecessor so that their order is kept.
    fn handle_successor_pdu(&mut self, pdu: Bytes) -> Result<(), ProtocolError> {
        if !is_rts(&pdu) {
            self.successor_window.on_received(pdu.len(), CHANNEL)?;
            self.successor_rpc.push(pdu);
            return Ok(());
        }
        let rts = RtsPdu::decode(&pdu)?;
        match (rts.flags, rts.commands.as_slice()) {
            (flags::PING, []) | (flags::OTHER_CMD, [C::ClientKeepalive(_)]) => Ok(()),
            _ if matches!(
                rts.destination(),
                Some(ForwardDestination::Server | ForwardDestination::OutProxy)
            ) =>
            {
                self.forward_client_rts(pdu, &rts);
                Ok(())
            }
            _ => Err(self.unexpected("Ping or a PDU to forward on a successor", &rts)),
        }
    }

    /// Forwards a client RTS PDU to the server (OUT_R2/A7 loses its Version on the way: A8).
    fn forward_client_rts(&mut self, pdu: Bytes, rts: &RtsPdu) {
        let forwarded = match (rts.flags, rts.commands.as_slice()) {
            (
                flags::OUT_CHANNEL,
                [
                    C::Destination(ForwardDestination::Server),
                    C::Cookie(c),
                    C::Version(_),
                ],
            ) => build::out_r1_a7(*c).to_bytes(),
            _ => pdu,
        };
        self.rts_to_server.push(forwarded);
    }

    fn predecessor_done(&mut self, successor: Cookie) -> Result<(), ProtocolError> {
        match self.successor {
            // IN_R2: switch to the successor channel on this proxy; same server leg.
            Some(next) if next.cookie == successor => {
                self.events
                    .push_back(InboundEvent::CloseClientChannel(self.current.id));
                self.current = next;
                self.successor = None;
                self.from_client = std::mem::replace(
                    &mut self.successor_window,
                    ReceiveWindow::new(self.config.receive_window),
                );
                while let Some(pdu) = self.successor_rpc.pop() {
                    self.rpc_to_server.push(pdu);
                }
                self.recycles += 1;
                Ok(())
            }
            Some(next) => Err(ProtocolError::CookieMismatch {
                what: "IN_R2/A5 successor",
                expected: next.cookie.to_string(),
                got: successor.to_string(),
            }),
            // IN_R1: the successor is on another proxy. Tell the server, hand over what is
            // queued, then say goodbye with IN_R1/B1.
            None => {
                self.rts_to_server
                    .push(build::successor_cookie(successor).to_bytes());
                self.state = InboundState::Draining;
                self.finish_draining();
                Ok(())
            }
        }
    }

    fn finish_draining(&mut self) {
        if self.state == InboundState::Draining && self.rpc_to_server.is_empty() {
            self.rts_to_server.push(build::in_r1_b1().to_bytes());
            self.state = InboundState::Finished;
            self.events.push_back(InboundEvent::Finished);
        }
    }

    fn handle_client_rpc(&mut self, pdu: Bytes) -> Result<(), ProtocolError> {
        if matches!(
            self.state,
            InboundState::AwaitFirst | InboundState::Draining | InboundState::Finished
        ) {
            return Err(ProtocolError::Unexpected {
                channel: CHANNEL,
                state: self.state.name(),
                expected: "RTS PDUs only",
                got: "an RPC PDU".into(),
            });
        }
        self.from_client.on_received(pdu.len(), CHANNEL)?;
        self.rpc_to_server.push(pdu);
        Ok(())
    }

    /// IN_R2: a successor IN request for this virtual connection arrived at this proxy with
    /// IN_R2/A1 as its first PDU.
    pub fn attach_successor(
        &mut self,
        channel: ChannelId,
        first: &[u8],
    ) -> Result<(), ProtocolError> {
        let rts = RtsPdu::decode(first)?;
        let (vc, predecessor, successor) = match (rts.flags, rts.commands.as_slice()) {
            (
                flags::RECYCLE_CHANNEL,
                [
                    C::Version(_),
                    C::Cookie(vc),
                    C::Cookie(predecessor),
                    C::Cookie(successor),
                ],
            ) => (*vc, *predecessor, *successor),
            _ => return Err(self.unexpected("IN_R2/A1", &rts)),
        };
        if self.state != InboundState::Opened || self.successor.is_some() {
            return Err(self.unexpected("IN_R2/A1 only on an open channel, once", &rts));
        }
        if self.channel.is_none_or(|c| c.vc != vc) || predecessor != self.current.cookie {
            return Err(ProtocolError::CookieMismatch {
                what: "IN_R2/A1 predecessor",
                expected: self.current.cookie.to_string(),
                got: predecessor.to_string(),
            });
        }
        self.successor = Some(ClientChannel {
            id: channel,
            cookie: successor,
        });
        self.server_ack_cookies = [Some(self.current.cookie), Some(successor)];
        self.rts_to_server
            .push(build::successor_cookie(successor).to_bytes());
        Ok(())
    }

    /// The shell connected to the server: send CONN/B2 (or IN_R1/A2) and wait for the answer.
    pub fn server_connected(&mut self, client_address: IpAddr) {
        let Some(channel) = self.channel else { return };
        if self.state != InboundState::AwaitConnect {
            return;
        }
        if let Some(predecessor) = self.predecessor_cookie {
            let a2 = build::in_r1_a2(
                channel.vc,
                predecessor,
                self.current.cookie,
                self.config.receive_window,
                self.config.connection_timeout_ms,
            );
            self.rts_to_server.push(a2.to_bytes());
            self.state = InboundState::AwaitB2;
        } else {
            let b2 = build::conn_b2(
                channel.version,
                channel.vc,
                self.current.cookie,
                self.config.receive_window,
                self.config.connection_timeout_ms,
                channel.association_group,
                client_address,
            );
            self.rts_to_server.push(b2.to_bytes());
            self.state = InboundState::AwaitB3;
        }
        self.server_ack_cookies = [Some(self.current.cookie), None];
    }

    /// A framed PDU from the server leg.
    pub fn handle_server_pdu(&mut self, pdu: Bytes) -> Result<(), ProtocolError> {
        if !is_rts(&pdu) {
            // 3.2.3.5.x: an RPC PDU from the server on the IN leg is a protocol error.
            return Err(ProtocolError::Unexpected {
                channel: "IN channel (server side)",
                state: self.state.name(),
                expected: "an RTS PDU",
                got: "an RPC PDU".into(),
            });
        }
        let rts = RtsPdu::decode(&pdu)?;
        match (self.state, rts.flags, rts.commands.as_slice()) {
            (InboundState::AwaitB3, flags::NONE, [C::ReceiveWindowSize(window), C::Version(_)])
            | (InboundState::AwaitB2, flags::NONE, [C::ReceiveWindowSize(window)]) => {
                self.to_server = Some(SendWindow::new(*window));
                self.state = InboundState::Opened;
                self.events.push_back(InboundEvent::Opened {
                    server_window: *window,
                });
                Ok(())
            }
            (
                InboundState::Opened | InboundState::Draining | InboundState::Finished,
                flags::OTHER_CMD,
                [C::FlowControlAck(ack)],
            ) => {
                // Acks for another channel instance are dropped, as the spec says.
                if self.server_ack_cookies.contains(&Some(ack.channel_cookie))
                    && let Some(window) = self.to_server.as_mut()
                {
                    window.on_ack(ack);
                }
                Ok(())
            }
            _ => Err(ProtocolError::Unexpected {
                channel: "IN channel (server side)",
                state: self.state.name(),
                expected: "CONN/B3, IN_R1/B2 or FlowControlAck",
                got: rts.name().into(),
            }),
        }
    }

    /// The next PDU to write to the server: RTS first, then RPC PDUs the window allows.
    pub fn poll_transmit_to_server(&mut self) -> Option<Bytes> {
        if let Some(pdu) = self.rts_to_server.pop() {
            return Some(pdu);
        }
        let window = self.to_server.as_mut()?;
        let len = self.rpc_to_server.front_len()?;
        if !window.can_send(len) {
            return None;
        }
        let pdu = self.rpc_to_server.pop()?;
        window.on_sent(len);
        // Handing the PDU on consumes it from the client's window (3.2.3.4.x).
        if self.state == InboundState::Opened
            && let Some(ack) = self.from_client.on_consumed(len, self.current.cookie)
        {
            let ack = build::flow_control_ack_with_destination(ForwardDestination::Client, ack);
            self.rts_to_server.push(ack.to_bytes());
        }
        self.finish_draining();
        Some(pdu)
    }

    /// Whether anything is ready for the server right now.
    pub fn has_transmit_to_server(&self) -> bool {
        !self.rts_to_server.is_empty()
            || (self.to_server.as_ref())
                .zip(self.rpc_to_server.front_len())
                .is_some_and(|(w, len)| w.can_send(len))
    }

    /// Whether to read client channel `channel`.
    ///
    /// The client's send window bounds what it may send, and a client that ignores it is cut
    /// off, so both the current and a successor channel are always read: an RTS PDU behind
    /// data must never wait for the data to drain.
    pub fn wants_client_data(&self, channel: ChannelId) -> bool {
        (channel == self.current.id
            && !matches!(self.state, InboundState::Draining | InboundState::Finished))
            || self.successor.is_some_and(|s| s.id == channel)
    }

    /// Bytes queued for the server.
    pub fn queued_bytes(&self) -> usize {
        self.rpc_to_server.bytes() + self.rts_to_server.bytes()
    }

    pub fn poll_event(&mut self) -> Option<InboundEvent> {
        self.events.pop_front()
    }

    fn unexpected(&self, expected: &'static str, rts: &RtsPdu) -> ProtocolError {
        ProtocolError::Unexpected {
            channel: CHANNEL,
            state: self.state.name(),
            expected,
            got: rts.name().into(),
        }
    }
}
