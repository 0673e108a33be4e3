//! The server role (MS-RPCH 3.2.5): the ncacn_http end of a virtual connection.
//!
//! Each proxy leg is its own TCP connection. The shell greets it with the legacy string,
//! classifies its first PDU with [`classify_first_pdu`], and pairs the IN leg (CONN/B2) and the
//! OUT leg (CONN/A2) of one virtual connection by cookie; they arrive in either order, possibly
//! from different proxy instances. A [`ServerVc`] is created from the first leg and completed by
//! the second; it then bridges RPC PDUs between the legs and a backend RPC engine.
//!
//! ```text
//!  inbound proxy              server (ServerVc)                outbound proxy
//!    |--CONN/B2---------------->|  ServerVc::new / complete()     |
//!    |                          |<---------------------CONN/A2----|
//!    |<--CONN/B3----------------|--CONN/C1----------------------->|   opened
//!    |--RPC PDUs (our window)-->|--> backend --> RPC PDUs ------->|   (OP's window)
//!    |<--FlowControlAck---------|<------------------FlowControlAck|
//!    |--FCAwD(FDClient|FDOutProxy) forwarded unchanged ---------->|
//! ```
//!
//! Driving it: [`ServerVc::handle_in_pdu`], [`ServerVc::handle_out_pdu`] and
//! [`ServerVc::handle_backend_pdu`] take framed PDUs; [`ServerVc::poll_transmit`] yields what to
//! write on each [`Leg`]; [`ServerVc::poll_timeout`] / [`ServerVc::handle_timeout`] run the
//! connection-setup timer.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::cookie::Cookie;
use crate::error::ProtocolError;
use crate::flow::{ReceiveWindow, SendWindow};
use crate::outbox::Outbox;
use crate::pdu::header::is_rts;
use crate::rts::{ForwardDestination, RtsCommand as C, RtsPdu, build, flags};

/// The 14-byte legacy server response sent on every accepted connection (MS-RPCH 2.1.2.1.x).
pub const LEGACY_GREETING: &[u8; 14] = b"ncacn_http/1.0";

/// CONN/A2 as the server sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnA2 {
    pub version: u32,
    pub vc: Cookie,
    pub out_channel: Cookie,
    pub channel_lifetime: u32,
    /// The outbound proxy's receive window for server -> proxy bytes.
    pub proxy_window: u32,
}

/// CONN/B2 as the server sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnB2 {
    pub version: u32,
    pub vc: Cookie,
    pub in_channel: Cookie,
    /// The inbound proxy's receive window for client -> proxy bytes (goes to C1, then C2).
    pub proxy_window: u32,
    pub connection_timeout_ms: u32,
    pub association_group: Cookie,
    pub client_address: IpAddr,
}

/// What the first PDU on a new server connection says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstPdu {
    /// An OUT leg of a new virtual connection.
    ConnA2(ConnA2),
    /// An IN leg of a new virtual connection.
    ConnB2(ConnB2),
    /// IN_R1/A2 or OUT_R1/A4: a successor leg from another proxy (channel recycling).
    Recycle { vc: Cookie, name: &'static str },
    /// Not RTS: RPC over HTTP v1, a plain connection-oriented RPC stream (MS-RPCH 3.1).
    PlainRpc,
}

/// Classifies the first PDU of a server connection.
pub fn classify_first_pdu(pdu: &[u8]) -> Result<FirstPdu, ProtocolError> {
    if !is_rts(pdu) {
        return Ok(FirstPdu::PlainRpc);
    }
    let rts = RtsPdu::decode(pdu)?;
    match (rts.flags, rts.commands.as_slice()) {
        (
            flags::OUT_CHANNEL,
            [
                C::Version(version),
                C::Cookie(vc),
                C::Cookie(out_channel),
                C::ChannelLifetime(channel_lifetime),
                C::ReceiveWindowSize(proxy_window),
            ],
        ) => Ok(FirstPdu::ConnA2(ConnA2 {
            version: *version,
            vc: *vc,
            out_channel: *out_channel,
            channel_lifetime: *channel_lifetime,
            proxy_window: *proxy_window,
        })),
        (
            flags::IN_CHANNEL,
            [
                C::Version(version),
                C::Cookie(vc),
                C::Cookie(in_channel),
                C::ReceiveWindowSize(proxy_window),
                C::ConnectionTimeout(connection_timeout_ms),
                C::AssociationGroupId(association_group),
                C::ClientAddress(client_address),
            ],
        ) => Ok(FirstPdu::ConnB2(ConnB2 {
            version: *version,
            vc: *vc,
            in_channel: *in_channel,
            proxy_window: *proxy_window,
            connection_timeout_ms: *connection_timeout_ms,
            association_group: *association_group,
            client_address: *client_address,
        })),
        (0x000C, [C::Version(_), C::Cookie(vc), ..]) => Ok(FirstPdu::Recycle {
            vc: *vc,
            name: "IN_R1/A2",
        }),
        (0x0014, [C::Version(_), C::Cookie(vc), ..]) => Ok(FirstPdu::Recycle {
            vc: *vc,
            name: "OUT_R1/A4",
        }),
        _ => Err(ProtocolError::Unexpected {
            channel: "server leg",
            state: "Open_Start",
            expected: "CONN/A2, CONN/B2, IN_R1/A2 or OUT_R1/A4",
            got: rts.name().into(),
        }),
    }
}

/// Settings of the server role.
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    /// Our receive window for inbound proxy -> server RPC bytes (CONN/B3).
    pub receive_window: u32,
    /// How long the first leg waits for the second (the connection setup timer).
    pub setup_timeout: Duration,
}

/// The legs a server writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    /// The TCP connection from the inbound proxy.
    In,
    /// The TCP connection from the outbound proxy.
    Out,
    /// The RPC engine behind the server (an ncacn_ip_tcp backend for rpcgate's endpoint).
    Backend,
}

/// Where a virtual connection is in its setup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerState {
    /// The OUT leg is here, the IN leg is awaited (B2W).
    AwaitB2,
    /// The IN leg is here, the OUT leg is awaited (A2W).
    AwaitA2,
    Opened,
}

impl ServerState {
    fn name(self) -> &'static str {
        match self {
            Self::AwaitB2 => "B2W",
            Self::AwaitA2 => "A2W",
            Self::Opened => "Opened",
        }
    }
}

/// The server state machine for one virtual connection.
#[derive(Debug)]
pub struct ServerVc {
    config: ServerConfig,
    state: ServerState,
    vc: Cookie,
    a2: Option<ConnA2>,
    b2: Option<ConnB2>,
    setup_deadline: Instant,
    from_in: ReceiveWindow,
    to_out: SendWindow,
    to_in: Outbox,
    rts_to_out: Outbox,
    rpc_to_out: Outbox,
    to_backend: Outbox,
    out_bytes_sent: u64,
}

const IN_LEG: &str = "IN leg";
const OUT_LEG: &str = "OUT leg";

impl ServerVc {
    /// Starts a virtual connection from its first leg's PDU (CONN/A2 or CONN/B2).
    pub fn new(
        config: ServerConfig,
        first: &FirstPdu,
        now: Instant,
    ) -> Result<Self, ProtocolError> {
        let (state, vc, a2, b2) = match first {
            FirstPdu::ConnA2(a2) => (ServerState::AwaitB2, a2.vc, Some(*a2), None),
            FirstPdu::ConnB2(b2) => (ServerState::AwaitA2, b2.vc, None, Some(*b2)),
            other => {
                return Err(ProtocolError::Unexpected {
                    channel: "server leg",
                    state: "Open_Start",
                    expected: "CONN/A2 or CONN/B2",
                    got: format!("{other:?}"),
                });
            }
        };
        Ok(Self {
            config,
            state,
            vc,
            a2,
            b2,
            setup_deadline: now + config.setup_timeout,
            from_in: ReceiveWindow::new(config.receive_window),
            to_out: SendWindow::new(a2.map_or(0, |a| a.proxy_window)),
            to_in: Outbox::default(),
            rts_to_out: Outbox::default(),
            rpc_to_out: Outbox::default(),
            to_backend: Outbox::default(),
            out_bytes_sent: 0,
        })
    }

    pub fn vc_cookie(&self) -> Cookie {
        self.vc
    }

    pub fn state(&self) -> ServerState {
        self.state
    }

    /// The leg that is still missing, if any.
    pub fn missing_leg(&self) -> Option<Leg> {
        match self.state {
            ServerState::AwaitB2 => Some(Leg::In),
            ServerState::AwaitA2 => Some(Leg::Out),
            ServerState::Opened => None,
        }
    }

    /// The client address the inbound proxy reported in CONN/B2.
    pub fn client_address(&self) -> Option<IpAddr> {
        self.b2.map(|b| b.client_address)
    }

    /// The OUT channel's lifetime from CONN/A2.
    pub fn out_channel_lifetime(&self) -> Option<u32> {
        self.a2.map(|a| a.channel_lifetime)
    }

    /// Bytes sent on the OUT leg, including the ping bytes the outbound proxy reported.
    pub fn out_bytes_sent(&self) -> u64 {
        self.out_bytes_sent
    }

    /// The second leg arrived: pair it and open (MS-RPCH 3.2.5.5.x: CONN/C1 on the OUT leg,
    /// CONN/B3 on the IN leg).
    pub fn complete(&mut self, second: &FirstPdu) -> Result<(), ProtocolError> {
        match (self.state, second) {
            (ServerState::AwaitB2, FirstPdu::ConnB2(b2)) if b2.vc == self.vc => {
                self.b2 = Some(*b2);
            }
            (ServerState::AwaitA2, FirstPdu::ConnA2(a2)) if a2.vc == self.vc => {
                self.a2 = Some(*a2);
                self.to_out = SendWindow::new(a2.proxy_window);
            }
            _ => {
                return Err(ProtocolError::Unexpected {
                    channel: "server leg",
                    state: self.state.name(),
                    expected: match self.state {
                        ServerState::AwaitB2 => "CONN/B2 of the same virtual connection",
                        _ => "CONN/A2 of the same virtual connection",
                    },
                    got: format!("{second:?}"),
                });
            }
        }
        let (Some(a2), Some(b2)) = (self.a2, self.b2) else {
            return Err(ProtocolError::LimitExceeded {
                what: "virtual connection without both legs",
            });
        };
        let version = a2.version.min(b2.version).min(crate::rts::RTS_VERSION);
        self.rts_to_out
            .push(build::conn_c1_c2(version, b2.proxy_window, b2.connection_timeout_ms).to_bytes());
        self.to_in
            .push(build::conn_b3(self.config.receive_window, version).to_bytes());
        self.state = ServerState::Opened;
        Ok(())
    }

    /// A framed PDU from the IN leg.
    pub fn handle_in_pdu(&mut self, pdu: Bytes) -> Result<(), ProtocolError> {
        self.expect_opened(IN_LEG)?;
        if !is_rts(&pdu) {
            self.from_in.on_received(pdu.len(), IN_LEG)?;
            self.to_backend.push(pdu);
            return Ok(());
        }
        let rts = RtsPdu::decode(&pdu)?;
        match rts.destination() {
            // Acks for the client (from the inbound proxy) and for the outbound proxy (from
            // the client) continue on the OUT leg unchanged (3.2.5.5.x forwarding table).
            Some(ForwardDestination::Client | ForwardDestination::OutProxy) => {
                self.rts_to_out.push(pdu);
                Ok(())
            }
            _ => Err(ProtocolError::Unexpected {
                channel: IN_LEG,
                state: self.state.name(),
                expected: "RPC PDUs or RTS PDUs to forward",
                got: rts.name().into(),
            }),
        }
    }

    /// A framed PDU from the OUT leg.
    pub fn handle_out_pdu(&mut self, pdu: Bytes) -> Result<(), ProtocolError> {
        self.expect_opened(OUT_LEG)?;
        let unexpected = |got: String| ProtocolError::Unexpected {
            channel: OUT_LEG,
            state: "Opened",
            expected: "FlowControlAck or PingTrafficSentNotify",
            got,
        };
        if !is_rts(&pdu) {
            return Err(unexpected("an RPC PDU".into()));
        }
        let rts = RtsPdu::decode(&pdu)?;
        match (rts.flags, rts.commands.as_slice()) {
            (flags::OTHER_CMD, [C::FlowControlAck(ack)]) => {
                if self.a2.is_some_and(|a| a.out_channel == ack.channel_cookie) {
                    self.to_out.on_ack(ack);
                }
                Ok(())
            }
            (flags::OTHER_CMD, [C::PingTrafficSentNotify(bytes)]) => {
                self.out_bytes_sent += u64::from(*bytes);
                Ok(())
            }
            _ => Err(unexpected(rts.name().into())),
        }
    }

    /// A framed PDU from the backend, bound for the client.
    pub fn handle_backend_pdu(&mut self, pdu: Bytes) -> Result<(), ProtocolError> {
        if is_rts(&pdu) {
            return Err(ProtocolError::Unexpected {
                channel: "backend",
                state: self.state.name(),
                expected: "RPC PDUs",
                got: "an RTS PDU".into(),
            });
        }
        self.rpc_to_out.push(pdu);
        Ok(())
    }

    /// The next PDU to write on `leg`, if one is ready.
    pub fn poll_transmit(&mut self, leg: Leg) -> Option<Bytes> {
        match leg {
            Leg::In => self.to_in.pop(),
            Leg::Out => {
                if let Some(pdu) = self.rts_to_out.pop() {
                    self.out_bytes_sent += pdu.len() as u64;
                    return Some(pdu);
                }
                if self.state != ServerState::Opened {
                    return None;
                }
                let len = self.rpc_to_out.front_len()?;
                if !self.to_out.can_send(len) {
                    return None;
                }
                self.to_out.on_sent(len);
                self.out_bytes_sent += len as u64;
                self.rpc_to_out.pop()
            }
            Leg::Backend => {
                let pdu = self.to_backend.pop()?;
                if let Some(b2) = self.b2
                    && let Some(ack) = self.from_in.on_consumed(pdu.len(), b2.in_channel)
                {
                    self.to_in.push(build::flow_control_ack(ack).to_bytes());
                }
                Some(pdu)
            }
        }
    }

    /// Whether [`ServerVc::poll_transmit`] would return something for `leg`.
    pub fn has_transmit(&self, leg: Leg) -> bool {
        match leg {
            Leg::In => !self.to_in.is_empty(),
            Leg::Out => {
                !self.rts_to_out.is_empty()
                    || (self.state == ServerState::Opened
                        && self
                            .rpc_to_out
                            .front_len()
                            .is_some_and(|len| self.to_out.can_send(len)))
            }
            Leg::Backend => !self.to_backend.is_empty(),
        }
    }

    /// Back-pressure on the backend: read from it only while this is true.
    pub fn wants_backend_data(&self) -> bool {
        self.rpc_to_out.bytes() < self.config.receive_window as usize
    }

    /// Back-pressure on the IN leg: read from it only while this is true.
    pub fn wants_in_data(&self) -> bool {
        self.to_backend.bytes() < self.config.receive_window as usize
    }

    /// The connection-setup deadline while a leg is missing.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.state != ServerState::Opened).then_some(self.setup_deadline)
    }

    /// Time passed: a virtual connection still missing a leg at its deadline is torn down.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ProtocolError> {
        match self.poll_timeout() {
            Some(deadline) if now >= deadline => Err(ProtocolError::Timeout {
                what: match self.state {
                    ServerState::AwaitB2 => "the IN leg (CONN/B2) of the virtual connection",
                    _ => "the OUT leg (CONN/A2) of the virtual connection",
                },
            }),
            _ => Ok(()),
        }
    }

    fn expect_opened(&self, channel: &'static str) -> Result<(), ProtocolError> {
        if self.state == ServerState::Opened {
            Ok(())
        } else {
            Err(ProtocolError::Unexpected {
                channel,
                state: self.state.name(),
                expected: "nothing until both legs are paired",
                got: "a PDU".into(),
            })
        }
    }
}
