//! The inbound proxy role (MS-RPCH 3.2.3): the proxy end of an IN channel.
//!
//! It receives the client's RTS and RPC PDUs from the `RPC_IN_DATA` request body and forwards
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
//! ```
//!
//! Driving it: feed framed PDUs with [`InboundProxy::handle_client_pdu`] and
//! [`InboundProxy::handle_server_pdu`]; after [`InboundEvent::ConnectRequested`] connect and call
//! [`InboundProxy::server_connected`]; write what [`InboundProxy::poll_transmit_to_server`]
//! returns; read from the client only while [`InboundProxy::wants_client_data`] is true.

use std::collections::VecDeque;
use std::net::IpAddr;

use bytes::Bytes;

use crate::cookie::Cookie;
use crate::error::ProtocolError;
use crate::flow::{ReceiveWindow, SendWindow};
use crate::outbox::Outbox;
use crate::pdu::header::is_rts;
use crate::rts::{ForwardDestination, RtsCommand as C, RtsPdu, build, flags};

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
    /// Waiting for CONN/B1 (Open_Start).
    AwaitB1,
    /// CONN/B1 seen; the shell is connecting to the server.
    AwaitConnect,
    /// CONN/B2 sent; client PDUs are queued until CONN/B3 (B3W).
    AwaitB3,
    /// Forwarding.
    Opened,
}

impl InboundState {
    fn name(self) -> &'static str {
        match self {
            Self::AwaitB1 => "Open_Start",
            Self::AwaitConnect => "connecting",
            Self::AwaitB3 => "B3W",
            Self::Opened => "Opened",
        }
    }
}

/// What the shell must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundEvent {
    /// CONN/B1 arrived: check the target and connect to the server.
    ConnectRequested {
        vc: Cookie,
        in_channel: Cookie,
        association_group: Cookie,
        /// Interval for TCP keep-alive on the server leg (0 in the PDU means 300 000 ms).
        client_keepalive_ms: u32,
    },
    /// CONN/B3 arrived: the channel is open.
    Opened { server_window: u32 },
    /// A Keep-Alive PDU changed the keep-alive interval.
    KeepAliveChanged { client_keepalive_ms: u32 },
}

/// Identity of the channel, known after CONN/B1.
#[derive(Debug, Clone, Copy)]
struct Channel {
    vc: Cookie,
    in_channel: Cookie,
    association_group: Cookie,
    version: u32,
}

/// The inbound proxy state machine for one IN channel.
#[derive(Debug)]
pub struct InboundProxy {
    config: InboundConfig,
    state: InboundState,
    channel: Option<Channel>,
    from_client: ReceiveWindow,
    to_server: Option<SendWindow>,
    rts_to_server: Outbox,
    rpc_to_server: Outbox,
    events: VecDeque<InboundEvent>,
}

const CHANNEL: &str = "IN channel (client side)";

fn keepalive_or_default(ms: u32) -> u32 {
    if ms == 0 { 300_000 } else { ms }
}

impl InboundProxy {
    pub fn new(config: InboundConfig) -> Self {
        Self {
            config,
            state: InboundState::AwaitB1,
            channel: None,
            from_client: ReceiveWindow::new(config.receive_window),
            to_server: None,
            rts_to_server: Outbox::default(),
            rpc_to_server: Outbox::default(),
            events: VecDeque::new(),
        }
    }

    pub fn state(&self) -> InboundState {
        self.state
    }

    /// The virtual-connection cookie, once CONN/B1 has arrived.
    pub fn vc_cookie(&self) -> Option<Cookie> {
        self.channel.map(|c| c.vc)
    }

    /// A framed PDU from the client's IN request body.
    pub fn handle_client_pdu(&mut self, pdu: Bytes) -> Result<(), ProtocolError> {
        if !is_rts(&pdu) {
            return self.handle_client_rpc(pdu);
        }
        let rts = RtsPdu::decode(&pdu)?;
        match (self.state, rts.flags, rts.commands.as_slice()) {
            (
                InboundState::AwaitB1,
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
                    in_channel: *in_channel,
                    association_group: *association_group,
                    version: (*version).min(crate::rts::RTS_VERSION),
                });
                self.state = InboundState::AwaitConnect;
                self.events.push_back(InboundEvent::ConnectRequested {
                    vc: *vc,
                    in_channel: *in_channel,
                    association_group: *association_group,
                    client_keepalive_ms: keepalive_or_default(*keepalive),
                });
                Ok(())
            }
            (InboundState::AwaitB1, _, _) => Err(self.unexpected("CONN/B1", &rts)),
            // Pings keep the HTTP connection alive; they go no further.
            (_, flags::PING, []) => Ok(()),
            (_, flags::OTHER_CMD, [C::ClientKeepalive(ms)]) => {
                self.events.push_back(InboundEvent::KeepAliveChanged {
                    client_keepalive_ms: keepalive_or_default(*ms),
                });
                Ok(())
            }
            // PDUs for the server or the outbound proxy are forwarded unchanged (3.2.3.5.x):
            // flow-control acks for the OUT channel, OUT recycling PDUs.
            (_, _, _)
                if matches!(
                    rts.destination(),
                    Some(ForwardDestination::Server | ForwardDestination::OutProxy)
                ) =>
            {
                self.rts_to_server.push(pdu);
                Ok(())
            }
            _ => Err(self.unexpected("Ping, Keep-Alive or a PDU to forward", &rts)),
        }
    }

    fn handle_client_rpc(&mut self, pdu: Bytes) -> Result<(), ProtocolError> {
        if matches!(self.state, InboundState::AwaitB1) {
            return Err(ProtocolError::Unexpected {
                channel: CHANNEL,
                state: self.state.name(),
                expected: "CONN/B1",
                got: "an RPC PDU".into(),
            });
        }
        self.from_client.on_received(pdu.len(), CHANNEL)?;
        self.rpc_to_server.push(pdu);
        Ok(())
    }

    /// The shell connected to the server: send CONN/B2 and wait for CONN/B3.
    pub fn server_connected(&mut self, client_address: IpAddr) {
        let Some(channel) = self.channel else { return };
        if self.state != InboundState::AwaitConnect {
            return;
        }
        let b2 = build::conn_b2(
            channel.version,
            channel.vc,
            channel.in_channel,
            self.config.receive_window,
            self.config.connection_timeout_ms,
            channel.association_group,
            client_address,
        );
        self.rts_to_server.push(b2.to_bytes());
        self.state = InboundState::AwaitB3;
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
            (InboundState::AwaitB3, flags::NONE, [C::ReceiveWindowSize(window), C::Version(_)]) => {
                self.to_server = Some(SendWindow::new(*window));
                self.state = InboundState::Opened;
                self.events.push_back(InboundEvent::Opened {
                    server_window: *window,
                });
                Ok(())
            }
            (InboundState::Opened, flags::OTHER_CMD, [C::FlowControlAck(ack)]) => {
                if let Some(window) = self.to_server.as_mut() {
                    // Acks for another channel instance are dropped, as the spec says.
                    if self
                        .channel
                        .is_some_and(|c| c.in_channel == ack.channel_cookie)
                    {
                        window.on_ack(ack);
                    }
                }
                Ok(())
            }
            _ => Err(ProtocolError::Unexpected {
                channel: "IN channel (server side)",
                state: self.state.name(),
                expected: "CONN/B3 or FlowControlAck",
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
        if let Some(channel) = self.channel
            && let Some(ack) = self.from_client.on_consumed(len, channel.in_channel)
        {
            let ack = build::flow_control_ack_with_destination(ForwardDestination::Client, ack);
            self.rts_to_server.push(ack.to_bytes());
        }
        Some(pdu)
    }

    /// Whether anything is ready for the server right now.
    pub fn has_transmit_to_server(&self) -> bool {
        !self.rts_to_server.is_empty()
            || (self.to_server.as_ref())
                .zip(self.rpc_to_server.front_len())
                .is_some_and(|(w, len)| w.can_send(len))
    }

    /// Back-pressure: read more from the client only while this is true.
    pub fn wants_client_data(&self) -> bool {
        self.rpc_to_server.bytes() < self.config.receive_window as usize
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
