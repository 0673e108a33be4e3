//! The server role (MS-RPCH 3.2.5): the ncacn_http end of a virtual connection.
//!
//! Each proxy leg is its own TCP connection. The shell greets it with the legacy string,
//! classifies its first PDU with [`classify_first_pdu`], and pairs the IN leg (CONN/B2) and the
//! OUT leg (CONN/A2) of one virtual connection by cookie; they arrive in either order, possibly
//! from different proxy instances. A [`ServerVc`] is created from the first leg and completed by
//! the second; it then bridges RPC PDUs between the legs and a backend RPC engine, and runs
//! channel recycling: it starts OUT recycling itself when the OUT channel nears its lifetime,
//! and follows the client's IN recycling.
//!
//! ```text
//!  inbound proxy              server (ServerVc)                outbound proxy
//!    |--CONN/B2---------------->|  ServerVc::new / complete()     |
//!    |                          |<---------------------CONN/A2----|
//!    |<--CONN/B3----------------|--CONN/C1----------------------->|   opened
//!    |--RPC PDUs (our window)-->|--> backend --> RPC PDUs ------->|   (OP's window)
//!    |<--FlowControlAck---------|<------------------FlowControlAck|
//!    |--FCAwD(FDClient|FDOutProxy) forwarded unchanged ---------->|
//!
//!  recycling, the server's part (3.2.5.5.x):
//!    IN_R2:  A2 (cookie) on the IN leg -> A3 to the client via OUT
//!    IN_R1:  A2 on a new leg -> A3 via OUT; A6 then B1 on the old leg -> B2 on the new, switch
//!    OUT_*:  near the lifetime, OUT_R2/A1 via OUT; then either
//!      R2:  A4 on the OUT leg -> A5; A8 on IN -> B1 (ANCE), new cookie on the same leg
//!      R1:  A4 on a new leg -> A5 on the old; A8 on IN -> A9 on the old, switch to the new
//! ```
//!
//! Driving it: [`ServerVc::handle_pdu`] takes framed PDUs from a leg (by [`LegId`]) and
//! [`ServerVc::handle_backend_pdu`] from the backend; [`ServerVc::poll_transmit`] yields what to
//! write to a leg or the backend; [`ServerVc::poll_event`] says when to close a leg;
//! [`ServerVc::poll_timeout`] / [`ServerVc::handle_timeout`] run the setup and recycling timers.

mod first;

use std::collections::VecDeque;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::cookie::Cookie;
use crate::error::ProtocolError;
use crate::flow::{ReceiveWindow, SendWindow};
use crate::outbox::Outbox;
use crate::pdu::header::is_rts;
use crate::rts::{ForwardDestination, RtsCommand as C, RtsPdu, build, flags};

pub use first::{ConnA2, ConnB2, FirstPdu, InR1A2, OutR1A4, classify_first_pdu};

/// The 14-byte legacy server response sent on every accepted connection (MS-RPCH 2.1.2.1.x).
pub const LEGACY_GREETING: &[u8; 14] = b"ncacn_http/1.0";

/// Bytes kept free at the end of an OUT channel for the RTS PDUs that finish recycling.
const RTS_RESERVE: u64 = 8 * 1024;

/// Settings of the server role.
#[derive(Debug, Clone, Copy)]
pub struct ServerConfig {
    /// Our receive window for inbound proxy -> server RPC bytes (CONN/B3, IN_R1/B2).
    pub receive_window: u32,
    /// How long the first leg waits for the second, and each recycling stage for its next PDU.
    pub setup_timeout: Duration,
}

/// A shell-assigned id for one TCP leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LegId(pub u64);

/// Where [`ServerVc::poll_transmit`] output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dest {
    Leg(LegId),
    /// The RPC engine behind the server (an ncacn_ip_tcp backend for rpcgate's endpoint).
    Backend,
}

/// Which of the two legs a new virtual connection still misses, or which a leg is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Leg {
    In,
    Out,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// Write what is queued for this leg, then close it (a recycled predecessor).
    CloseLeg(LegId),
    /// A recycling finished.
    Recycled { leg: Leg, r1: bool },
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

#[derive(Debug)]
struct InLeg {
    id: LegId,
    cookie: Cookie,
    window: ReceiveWindow,
}

#[derive(Debug)]
struct OutLeg {
    id: LegId,
    cookie: Cookie,
    /// The cookie before an OUT_R2 switch: acks may still name it.
    previous_cookie: Option<Cookie>,
    window: SendWindow,
    lifetime: u64,
    bytes_sent: u64,
}

#[derive(Debug)]
enum InRecycle {
    Idle,
    /// IN_R1: the successor leg is attached, waiting for IN_R1/A6 on the old leg.
    R1AwaitA6 {
        successor: InLeg,
        deadline: Instant,
    },
    /// IN_R1: A6 seen, waiting for IN_R1/B1 (the old leg's last PDU).
    R1AwaitB1 {
        successor: InLeg,
        deadline: Instant,
    },
}

#[derive(Debug)]
enum OutRecycle {
    Idle,
    /// OUT_R2/A1 sent, waiting for OUT_R2/A4 (same proxy) or OUT_R1/A4 (new leg).
    AwaitA4 {
        deadline: Instant,
    },
    /// OUT_R2: A5 sent, waiting for OUT_R2/A8 via the IN leg.
    R2AwaitA8 {
        successor: Cookie,
        deadline: Instant,
    },
    /// OUT_R1: A5 sent on the old leg, waiting for OUT_R1/A8 via the IN leg.
    R1AwaitA8 {
        successor: OutLeg,
        deadline: Instant,
    },
}

/// The server state machine for one virtual connection.
#[derive(Debug)]
pub struct ServerVc {
    config: ServerConfig,
    state: ServerState,
    vc: Cookie,
    version: u32,
    b2: Option<ConnB2>,
    in_leg: Option<InLeg>,
    out_leg: Option<OutLeg>,
    in_recycle: InRecycle,
    out_recycle: OutRecycle,
    setup_deadline: Instant,
    rts: Vec<(LegId, Outbox)>,
    rpc_to_out: Outbox,
    to_backend: Outbox,
    events: VecDeque<ServerEvent>,
    recycles: (u64, u64),
    /// Legs replaced by recycling that may still deliver a last ack; forgotten when closed.
    retired: Vec<LegId>,
    /// OUT_R1: the predecessor OUT leg and its channel cookie while its proxy drains; the
    /// client's acknowledgements for that channel must still reach it.
    retired_out: Option<(LegId, Cookie)>,
    /// The latest time the shell told us about (timers for recycling stages start from it).
    now: Instant,
}

const IN_LEG: &str = "IN leg";
const OUT_LEG: &str = "OUT leg";

impl ServerVc {
    /// Starts a virtual connection from its first leg's PDU (CONN/A2 or CONN/B2).
    pub fn new(
        config: ServerConfig,
        first: &FirstPdu,
        leg: LegId,
        now: Instant,
    ) -> Result<Self, ProtocolError> {
        let mut vc = Self {
            config,
            state: ServerState::AwaitA2,
            vc: Cookie::default(),
            version: crate::rts::RTS_VERSION,
            b2: None,
            in_leg: None,
            out_leg: None,
            in_recycle: InRecycle::Idle,
            out_recycle: OutRecycle::Idle,
            setup_deadline: now + config.setup_timeout,
            rts: Vec::new(),
            rpc_to_out: Outbox::default(),
            to_backend: Outbox::default(),
            events: VecDeque::new(),
            recycles: (0, 0),
            retired: Vec::new(),
            retired_out: None,
            now,
        };
        match first {
            FirstPdu::ConnA2(a2) => {
                vc.state = ServerState::AwaitB2;
                vc.vc = a2.vc;
                vc.set_a2(a2, leg);
            }
            FirstPdu::ConnB2(b2) => {
                vc.state = ServerState::AwaitA2;
                vc.vc = b2.vc;
                vc.set_b2(b2, leg);
            }
            other => {
                return Err(ProtocolError::Unexpected {
                    channel: "server leg",
                    state: "Open_Start",
                    expected: "CONN/A2 or CONN/B2",
                    got: other.name().into(),
                });
            }
        }
        Ok(vc)
    }

    fn set_a2(&mut self, a2: &ConnA2, leg: LegId) {
        self.version = self.version.min(a2.version);
        self.out_leg = Some(OutLeg {
            id: leg,
            cookie: a2.out_channel,
            previous_cookie: None,
            window: SendWindow::new(a2.proxy_window),
            lifetime: a2.channel_lifetime.into(),
            bytes_sent: 0,
        });
    }

    fn set_b2(&mut self, b2: &ConnB2, leg: LegId) {
        self.version = self.version.min(b2.version);
        self.b2 = Some(*b2);
        self.in_leg = Some(InLeg {
            id: leg,
            cookie: b2.in_channel,
            window: ReceiveWindow::new(self.config.receive_window),
        });
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

    /// Bytes sent on the current OUT channel, including the ping bytes the proxy reported.
    pub fn out_bytes_sent(&self) -> u64 {
        self.out_leg.as_ref().map_or(0, |o| o.bytes_sent)
    }

    /// Completed recyclings: (IN, OUT).
    pub fn recycles(&self) -> (u64, u64) {
        self.recycles
    }

    /// The legs this virtual connection currently uses (defaults and successors).
    pub fn legs(&self) -> Vec<LegId> {
        let mut legs: Vec<LegId> = self.in_leg.iter().map(|l| l.id).collect();
        legs.extend(self.out_leg.iter().map(|l| l.id));
        match &self.in_recycle {
            InRecycle::R1AwaitA6 { successor, .. } | InRecycle::R1AwaitB1 { successor, .. } => {
                legs.push(successor.id)
            }
            InRecycle::Idle => {}
        }
        if let OutRecycle::R1AwaitA8 { successor, .. } = &self.out_recycle {
            legs.push(successor.id);
        }
        legs
    }

    fn rts_to(&mut self, leg: LegId, pdu: Bytes) {
        if let Some((_, outbox)) = self.rts.iter_mut().find(|(id, _)| *id == leg) {
            outbox.push(pdu);
        } else {
            let mut outbox = Outbox::default();
            outbox.push(pdu);
            self.rts.push((leg, outbox));
        }
    }

    fn rts_to_out(&mut self, pdu: Bytes) -> Result<(), ProtocolError> {
        let leg = self
            .out_leg
            .as_ref()
            .map(|o| o.id)
            .ok_or(ProtocolError::LimitExceeded {
                what: "an RTS PDU for an OUT leg that does not exist",
            })?;
        self.rts_to(leg, pdu);
        Ok(())
    }

    /// The second leg arrived: pair it and open (MS-RPCH 3.2.5.5.x: CONN/C1 on the OUT leg,
    /// CONN/B3 on the IN leg).
    pub fn complete(&mut self, second: &FirstPdu, leg: LegId) -> Result<(), ProtocolError> {
        match (self.state, second) {
            (ServerState::AwaitB2, FirstPdu::ConnB2(b2)) if b2.vc == self.vc => {
                self.set_b2(b2, leg)
            }
            (ServerState::AwaitA2, FirstPdu::ConnA2(a2)) if a2.vc == self.vc => {
                self.set_a2(a2, leg)
            }
            _ => {
                return Err(ProtocolError::Unexpected {
                    channel: "server leg",
                    state: self.state.name(),
                    expected: match self.state {
                        ServerState::AwaitB2 => "CONN/B2 of the same virtual connection",
                        _ => "CONN/A2 of the same virtual connection",
                    },
                    got: second.name().into(),
                });
            }
        }
        let (Some(b2), Some(in_leg), Some(out_leg)) = (self.b2, &self.in_leg, &self.out_leg) else {
            return Err(ProtocolError::LimitExceeded {
                what: "virtual connection without both legs",
            });
        };
        let (in_id, out_id) = (in_leg.id, out_leg.id);
        let c1 = build::conn_c1_c2(self.version, b2.proxy_window, b2.connection_timeout_ms);
        self.rts_to(out_id, c1.to_bytes());
        let b3 = build::conn_b3(self.config.receive_window, self.version);
        self.rts_to(in_id, b3.to_bytes());
        self.state = ServerState::Opened;
        Ok(())
    }

    /// A successor leg from another proxy (IN_R1/A2 or OUT_R1/A4) arrived on a new connection.
    pub fn attach_leg(
        &mut self,
        first: &FirstPdu,
        leg: LegId,
        now: Instant,
    ) -> Result<(), ProtocolError> {
        self.expect_opened("new leg")?;
        let deadline = now + self.config.setup_timeout;
        match first {
            FirstPdu::InR1A2(a2) if a2.vc == self.vc => {
                let current = self.in_leg.as_ref().map(|l| l.cookie);
                if !matches!(self.in_recycle, InRecycle::Idle) || current != Some(a2.predecessor) {
                    return Err(cookie_mismatch(
                        "IN_R1/A2 predecessor",
                        current,
                        a2.predecessor,
                    ));
                }
                // 3.2.5.5.x: tell the client (via OUT) the new proxy's window and timeout.
                self.rts_to_out(
                    build::in_r1_a3(a2.proxy_window, a2.connection_timeout_ms).to_bytes(),
                )?;
                self.in_recycle = InRecycle::R1AwaitA6 {
                    successor: InLeg {
                        id: leg,
                        cookie: a2.successor,
                        window: ReceiveWindow::new(self.config.receive_window),
                    },
                    deadline,
                };
                Ok(())
            }
            FirstPdu::OutR1A4(a4) if a4.vc == self.vc => {
                let current = self.out_leg.as_ref().map(|l| l.cookie);
                if !matches!(self.out_recycle, OutRecycle::AwaitA4 { .. })
                    || current != Some(a4.predecessor)
                {
                    return Err(cookie_mismatch(
                        "OUT_R1/A4 predecessor",
                        current,
                        a4.predecessor,
                    ));
                }
                // A5 goes on the predecessor leg, to reach the client on the old channel.
                self.rts_to_out(build::out_r1_a5(a4.connection_timeout_ms).to_bytes())?;
                self.out_recycle = OutRecycle::R1AwaitA8 {
                    successor: OutLeg {
                        id: leg,
                        cookie: a4.successor,
                        previous_cookie: None,
                        window: SendWindow::new(a4.proxy_window),
                        lifetime: a4.channel_lifetime.into(),
                        bytes_sent: 0,
                    },
                    deadline,
                };
                Ok(())
            }
            other => Err(ProtocolError::Unexpected {
                channel: "new leg",
                state: "Opened",
                expected: "IN_R1/A2 or OUT_R1/A4 of this virtual connection",
                got: other.name().into(),
            }),
        }
    }

    /// A framed PDU from leg `leg`.
    pub fn handle_pdu(&mut self, leg: LegId, pdu: Bytes) -> Result<(), ProtocolError> {
        if self.in_leg.as_ref().is_some_and(|l| l.id == leg) {
            self.handle_in_pdu(pdu, false)
        } else if self.in_successor() == Some(leg) {
            // The client switched to the new IN channel before the old proxy finished; the
            // new proxy holds RPC PDUs until IN_R1/B2 but forwards RTS ones at once.
            self.handle_in_pdu(pdu, true)
        } else if self.out_leg.as_ref().is_some_and(|l| l.id == leg) {
            self.handle_out_pdu(pdu)
        } else if self.retired.contains(&leg)
            && is_rts(&pdu)
            && RtsPdu::decode(&pdu).is_ok_and(|r| r.flags == flags::OTHER_CMD)
        {
            // A predecessor outbound proxy acknowledging the data it flushed after OUT_R1/A9,
            // or reporting pings: about a channel that is gone, so nothing to do.
            Ok(())
        } else {
            // Successor legs are plugged at their proxy until we unplug them, and retired legs
            // have nothing more to say.
            Err(ProtocolError::Unexpected {
                channel: "successor or retired leg",
                state: self.state.name(),
                expected: "nothing",
                got: describe(&pdu),
            })
        }
    }

    /// A leg's connection ended. Fine for a retired leg; fatal for one in use.
    pub fn leg_closed(&mut self, leg: LegId) -> Result<(), ProtocolError> {
        self.retired.retain(|l| *l != leg);
        if self.retired_out.is_some_and(|(l, _)| l == leg) {
            self.retired_out = None;
        }
        if self.legs().contains(&leg) {
            Err(ProtocolError::Unexpected {
                channel: if self.in_leg.as_ref().is_some_and(|l| l.id == leg) {
                    IN_LEG
                } else {
                    OUT_LEG
                },
                state: self.state.name(),
                expected: "the leg to stay open",
                got: "end of connection".into(),
            })
        } else {
            Ok(())
        }
    }

    fn in_successor(&self) -> Option<LegId> {
        match &self.in_recycle {
            InRecycle::R1AwaitA6 { successor, .. } | InRecycle::R1AwaitB1 { successor, .. } => {
                Some(successor.id)
            }
            InRecycle::Idle => None,
        }
    }

    fn handle_in_pdu(&mut self, pdu: Bytes, successor_leg: bool) -> Result<(), ProtocolError> {
        self.expect_opened(IN_LEG)?;
        if successor_leg && !is_rts(&pdu) {
            return Err(ProtocolError::Unexpected {
                channel: "successor IN leg",
                state: "IN_R1",
                expected: "no RPC PDU before IN_R1/B2",
                got: "an RPC PDU".into(),
            });
        }
        if !is_rts(&pdu) {
            if let Some(leg) = self.in_leg.as_mut() {
                leg.window.on_received(pdu.len(), IN_LEG)?;
            }
            self.to_backend.push(pdu);
            return Ok(());
        }
        let rts = RtsPdu::decode(&pdu)?;
        match (rts.flags, rts.commands.as_slice()) {
            // OUT_R2/A8 or OUT_R1/A8 (forwarded by the inbound proxy from A7; the R2 form may
            // still carry A7's Version).
            (
                flags::OUT_CHANNEL,
                [
                    C::Destination(ForwardDestination::Server),
                    C::Cookie(successor),
                ]
                | [
                    C::Destination(ForwardDestination::Server),
                    C::Cookie(successor),
                    C::Version(_),
                ],
            ) => self.out_a8(*successor),
            // IN_R2/A2 (same inbound proxy) or IN_R1/A6 (predecessor inbound proxy).
            (flags::NONE, [C::Cookie(successor)]) if !successor_leg => {
                self.in_cookie_pdu(*successor)
            }
            // IN_R1/B1: the predecessor inbound proxy's last PDU.
            (flags::NONE, [C::Empty]) if !successor_leg => self.in_r1_b1(),
            _ => match rts.destination() {
                // Acks for the client (from the inbound proxy) and for the outbound proxy (from
                // the client) continue on the OUT leg unchanged (forwarding table 3.2.5.5.x).
                Some(ForwardDestination::Client | ForwardDestination::OutProxy) => {
                    self.forward_to_out(pdu, &rts)
                }
                _ => Err(ProtocolError::Unexpected {
                    channel: IN_LEG,
                    state: self.state.name(),
                    expected: "RPC PDUs, recycling PDUs or RTS PDUs to forward",
                    got: rts.name().into(),
                }),
            },
        }
    }

    /// Forwards an RTS PDU to the OUT leg. Flow-control acks are cumulative, so an ack still
    /// queued is replaced by a newer one for the same destination and channel: the OUT channel
    /// must not fill up with acks while it waits to be recycled.
    fn forward_to_out(&mut self, pdu: Bytes, rts: &RtsPdu) -> Result<(), ProtocolError> {
        // An ack for the OUT channel being retired goes to the proxy that is draining it.
        if let (Some(ack), Some((leg, cookie))) = (rts.flow_control_ack(), self.retired_out)
            && rts.destination() == Some(ForwardDestination::OutProxy)
            && ack.channel_cookie == cookie
        {
            self.rts_to(leg, pdu);
            return Ok(());
        }
        if let (Some(ack), Some(out)) = (rts.flow_control_ack(), self.out_leg.as_ref()) {
            let id = out.id;
            if let Some((_, outbox)) = self.rts.iter_mut().find(|(leg, _)| *leg == id)
                && outbox.replace_last_if(pdu.clone(), |queued| {
                    RtsPdu::decode(queued).is_ok_and(|q| {
                        q.destination() == rts.destination()
                            && q.flow_control_ack()
                                .is_some_and(|a| a.channel_cookie == ack.channel_cookie)
                    })
                })
            {
                return Ok(());
            }
        }
        self.rts_to_out(pdu)
    }

    fn in_cookie_pdu(&mut self, successor: Cookie) -> Result<(), ProtocolError> {
        match std::mem::replace(&mut self.in_recycle, InRecycle::Idle) {
            InRecycle::R1AwaitA6 {
                successor: leg,
                deadline,
            } => {
                if leg.cookie != successor {
                    return Err(cookie_mismatch("IN_R1/A6", Some(leg.cookie), successor));
                }
                self.in_recycle = InRecycle::R1AwaitB1 {
                    successor: leg,
                    deadline,
                };
                Ok(())
            }
            InRecycle::Idle => {
                // IN_R2/A2: the same inbound proxy continues on the same leg under a new
                // channel cookie; tell the client (IN_R2/A3 -> A4).
                if let Some(leg) = self.in_leg.as_mut() {
                    leg.cookie = successor;
                }
                self.rts_to_out(build::in_r2_a3().to_bytes())?;
                self.recycles.0 += 1;
                self.events.push_back(ServerEvent::Recycled {
                    leg: Leg::In,
                    r1: false,
                });
                Ok(())
            }
            other => {
                self.in_recycle = other;
                Err(ProtocolError::Unexpected {
                    channel: IN_LEG,
                    state: "IN_R1 B1W",
                    expected: "IN_R1/B1",
                    got: "a Cookie PDU".into(),
                })
            }
        }
    }

    fn in_r1_b1(&mut self) -> Result<(), ProtocolError> {
        match std::mem::replace(&mut self.in_recycle, InRecycle::Idle) {
            InRecycle::R1AwaitB1 { successor, .. } => {
                let new_id = successor.id;
                if let Some(old) = self.in_leg.replace(successor) {
                    self.retire(old.id);
                }
                // Unplug the successor inbound proxy with our window (IN_R1/B2).
                self.rts_to(
                    new_id,
                    build::in_r1_b2(self.config.receive_window).to_bytes(),
                );
                self.recycles.0 += 1;
                self.events.push_back(ServerEvent::Recycled {
                    leg: Leg::In,
                    r1: true,
                });
                Ok(())
            }
            other => {
                self.in_recycle = other;
                Err(ProtocolError::Unexpected {
                    channel: IN_LEG,
                    state: self.state.name(),
                    expected: "IN_R1/B1 only during IN_R1 recycling",
                    got: "IN_R1/B1".into(),
                })
            }
        }
    }

    fn out_a8(&mut self, successor: Cookie) -> Result<(), ProtocolError> {
        match std::mem::replace(&mut self.out_recycle, OutRecycle::Idle) {
            OutRecycle::R2AwaitA8 {
                successor: expected,
                ..
            } => {
                if expected != successor {
                    self.rts_to_out(build::out_r2_b2().to_bytes())?;
                    return Err(cookie_mismatch("OUT_R2/A8", Some(expected), successor));
                }
                // OUT_R2/B1: the outbound proxy switches its client channel; the leg stays.
                self.rts_to_out(build::ance().to_bytes())?;
                if let Some(leg) = self.out_leg.as_mut() {
                    leg.previous_cookie = Some(leg.cookie);
                    leg.cookie = successor;
                    leg.bytes_sent = 0;
                }
                self.recycles.1 += 1;
                self.events.push_back(ServerEvent::Recycled {
                    leg: Leg::Out,
                    r1: false,
                });
                Ok(())
            }
            OutRecycle::R1AwaitA8 { successor: leg, .. } => {
                if leg.cookie != successor {
                    return Err(cookie_mismatch("OUT_R1/A8", Some(leg.cookie), successor));
                }
                // OUT_R1/A9 ends the old channel; everything from now on uses the new leg.
                self.rts_to_out(build::ance().to_bytes())?;
                if let Some(old) = self.out_leg.replace(leg) {
                    self.retired_out = Some((old.id, old.cookie));
                    self.retire(old.id);
                }
                self.recycles.1 += 1;
                self.events.push_back(ServerEvent::Recycled {
                    leg: Leg::Out,
                    r1: true,
                });
                Ok(())
            }
            other => {
                self.out_recycle = other;
                Err(ProtocolError::Unexpected {
                    channel: IN_LEG,
                    state: self.state.name(),
                    expected: "OUT_R1/A8 or OUT_R2/A8 only during OUT recycling",
                    got: "OUT_Rx/A8".into(),
                })
            }
        }
    }

    fn retire(&mut self, leg: LegId) {
        // Bounded: a leg leaves this list when the shell reports it closed, and the shell
        // closes it after writing its last queued PDUs.
        if self.retired.len() >= 8 {
            self.retired.remove(0);
        }
        self.retired.push(leg);
        self.events.push_back(ServerEvent::CloseLeg(leg));
    }

    fn handle_out_pdu(&mut self, pdu: Bytes) -> Result<(), ProtocolError> {
        self.expect_opened(OUT_LEG)?;
        let state = self.state.name();
        let unexpected = |got: String| ProtocolError::Unexpected {
            channel: OUT_LEG,
            state,
            expected: "FlowControlAck, PingTrafficSentNotify or OUT_R2/A4",
            got,
        };
        if !is_rts(&pdu) {
            return Err(unexpected("an RPC PDU".into()));
        }
        let rts = RtsPdu::decode(&pdu)?;
        match (rts.flags, rts.commands.as_slice()) {
            (flags::OTHER_CMD, [C::FlowControlAck(ack)]) => {
                if let Some(leg) = self.out_leg.as_mut()
                    && (leg.cookie == ack.channel_cookie
                        || leg.previous_cookie == Some(ack.channel_cookie))
                {
                    leg.window.on_ack(ack);
                }
                Ok(())
            }
            (flags::OTHER_CMD, [C::PingTrafficSentNotify(bytes)]) => {
                if let Some(leg) = self.out_leg.as_mut() {
                    leg.bytes_sent += u64::from(*bytes);
                }
                self.maybe_start_out_recycling(self.now);
                Ok(())
            }
            // OUT_R2/A4: the same outbound proxy got the client's successor channel.
            (flags::NONE, [C::Cookie(successor)])
                if matches!(self.out_recycle, OutRecycle::AwaitA4 { .. }) =>
            {
                let deadline = match self.out_recycle {
                    OutRecycle::AwaitA4 { deadline } => deadline,
                    _ => self.setup_deadline,
                };
                self.rts_to_out(build::out_r2_a5().to_bytes())?;
                self.out_recycle = OutRecycle::R2AwaitA8 {
                    successor: *successor,
                    deadline,
                };
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

    /// Starts OUT recycling once the current OUT channel nears its lifetime (3.2.5.5.x:
    /// OUT_R2/A1 whether R1 or R2 follows).
    fn maybe_start_out_recycling(&mut self, now: Instant) {
        let Some(leg) = self.out_leg.as_ref() else {
            return;
        };
        if !matches!(self.out_recycle, OutRecycle::Idle) || self.state != ServerState::Opened {
            return;
        }
        // Recycle a quarter before the end (at most 1 MiB before), so that data keeps flowing
        // on the old channel while the client sets up the new one.
        let margin = (leg.lifetime / 4).min(1024 * 1024);
        if leg.bytes_sent + margin >= leg.lifetime {
            let id = leg.id;
            self.rts_to(id, build::out_r1_a1().to_bytes());
            self.out_recycle = OutRecycle::AwaitA4 {
                deadline: now + self.config.setup_timeout,
            };
        }
    }

    /// The next PDU to write to `dest`, if one is ready.
    pub fn poll_transmit(&mut self, dest: Dest, now: Instant) -> Option<Bytes> {
        match dest {
            Dest::Leg(leg) => {
                if let Some(pdu) = self
                    .rts
                    .iter_mut()
                    .find(|(id, _)| *id == leg)
                    .and_then(|(_, outbox)| outbox.pop())
                {
                    self.now = self.now.max(now);
                    if let Some(out) = self.out_leg.as_mut().filter(|o| o.id == leg) {
                        out.bytes_sent += pdu.len() as u64;
                    }
                    self.rts.retain(|(_, outbox)| !outbox.is_empty());
                    self.maybe_start_out_recycling(self.now);
                    return Some(pdu);
                }
                self.now = self.now.max(now);
                if self.state != ServerState::Opened
                    || self.out_leg.as_ref().is_none_or(|o| o.id != leg)
                {
                    return None;
                }
                let len = self.rpc_to_out.front_len()?;
                let out = self.out_leg.as_mut()?;
                // Never run the channel past its Content-Length: hold data for the successor.
                if out.bytes_sent + len as u64 + RTS_RESERVE > out.lifetime
                    || !out.window.can_send(len)
                {
                    return None;
                }
                out.window.on_sent(len);
                out.bytes_sent += len as u64;
                let pdu = self.rpc_to_out.pop();
                self.maybe_start_out_recycling(now);
                pdu
            }
            Dest::Backend => {
                let pdu = self.to_backend.pop()?;
                if let Some(leg) = self.in_leg.as_mut()
                    && let Some(ack) = leg.window.on_consumed(pdu.len(), leg.cookie)
                {
                    let id = leg.id;
                    self.rts_to(id, build::flow_control_ack(ack).to_bytes());
                }
                Some(pdu)
            }
        }
    }

    /// Whether [`ServerVc::poll_transmit`] would return something for `dest`.
    pub fn has_transmit(&self, dest: Dest) -> bool {
        match dest {
            Dest::Leg(leg) => {
                self.rts
                    .iter()
                    .any(|(id, outbox)| *id == leg && !outbox.is_empty())
                    || (self.state == ServerState::Opened
                        && self.out_leg.as_ref().is_some_and(|o| {
                            o.id == leg
                                && self.rpc_to_out.front_len().is_some_and(|len| {
                                    o.bytes_sent + len as u64 + RTS_RESERVE <= o.lifetime
                                        && o.window.can_send(len)
                                })
                        }))
            }
            Dest::Backend => !self.to_backend.is_empty(),
        }
    }

    /// Back-pressure on the backend: read from it only while this is true.
    pub fn wants_backend_data(&self) -> bool {
        self.rpc_to_out.bytes() < self.config.receive_window as usize
    }

    /// Whether to read the IN leg.
    pub fn wants_in_data(&self) -> bool {
        // Our receive window bounds what the inbound proxy may send, and RTS PDUs behind its
        // data must not wait for the backend.
        true
    }

    /// What [`ServerVc::handle_timeout`] waits for next: pairing or a recycling stage.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state != ServerState::Opened {
            return Some(self.setup_deadline);
        }
        let in_deadline = match &self.in_recycle {
            InRecycle::R1AwaitA6 { deadline, .. } | InRecycle::R1AwaitB1 { deadline, .. } => {
                Some(*deadline)
            }
            InRecycle::Idle => None,
        };
        let out_deadline = match &self.out_recycle {
            OutRecycle::AwaitA4 { deadline }
            | OutRecycle::R2AwaitA8 { deadline, .. }
            | OutRecycle::R1AwaitA8 { deadline, .. } => Some(*deadline),
            OutRecycle::Idle => None,
        };
        in_deadline.into_iter().chain(out_deadline).min()
    }

    /// Time passed: a missing leg or a stalled recycling tears the connection down.
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ProtocolError> {
        self.now = self.now.max(now);
        match self.poll_timeout() {
            Some(deadline) if now >= deadline => Err(ProtocolError::Timeout {
                what: match (self.state, &self.in_recycle) {
                    (ServerState::AwaitB2, _) => "the IN leg (CONN/B2) of the virtual connection",
                    (ServerState::AwaitA2, _) => "the OUT leg (CONN/A2) of the virtual connection",
                    (_, InRecycle::R1AwaitA6 { .. } | InRecycle::R1AwaitB1 { .. }) => {
                        "the predecessor inbound proxy to finish IN channel recycling"
                    }
                    _ => "the client to finish OUT channel recycling",
                },
            }),
            _ => Ok(()),
        }
    }

    pub fn poll_event(&mut self) -> Option<ServerEvent> {
        self.events.pop_front()
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

fn cookie_mismatch(what: &'static str, expected: Option<Cookie>, got: Cookie) -> ProtocolError {
    ProtocolError::CookieMismatch {
        what,
        expected: expected.map_or_else(|| "none".into(), |c| c.to_string()),
        got: got.to_string(),
    }
}

fn describe(pdu: &[u8]) -> String {
    if is_rts(pdu) {
        RtsPdu::decode(pdu).map_or_else(|e| format!("a bad RTS PDU ({e})"), |r| r.name().into())
    } else {
        "an RPC PDU".into()
    }
}
