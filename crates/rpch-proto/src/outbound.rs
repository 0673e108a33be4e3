//! The outbound proxy role (MS-RPCH 3.2.4): the proxy end of OUT channels.
//!
//! It reads CONN/A1 from an `RPC_OUT_DATA` request body, opens its TCP leg to the server, and
//! from then on streams everything the server sends into the response body, within the window
//! the client advertised, keeping the channel alive with Pings when it is idle.
//!
//! ```text
//!  client                     outbound proxy                      server
//!    |--CONN/A1------------------>|  event ConnectRequested           |
//!    |                            |  server_connected() --CONN/A2---->|
//!    |<--200 Success + CONN/A3----|                                   |
//!    |                            |<-------------------------CONN/C1--|
//!    |<--CONN/C2------------------|                                   |  opened
//!    |<--RPC PDUs (client window)-|<--RPC PDUs (our window)-----------|
//!    |                            |--FlowControlAck (our window)----->|
//!    |   FCAwD(FDOutProxy) from the client arrives via IN -> server -->|
//!    |<--Ping when idle-----------|--PingTrafficSentNotify----------->|
//!
//!  recycling (3.2.4.5.x), after the server's OUT_R2/A1 reaches the client, the client opens
//!  a successor OUT request (Content-Length 120) starting with OUT_Rx/A3:
//!    R2, this proxy knows the VC: attach_successor() --OUT_R2/A4--> server; on OUT_R2/B1
//!        the old channel gets what is queued, then OUT_R2/B3 (EOF), and the successor its
//!        200 header once the client's OUT_R2/C1 is in.
//!    R1, another proxy had it: a fresh OutboundProxy sends OUT_R1/A4 on a new leg and holds
//!        the successor until the client's OUT_R1/A11; the old proxy, on OUT_R1/A9, flushes,
//!        sends OUT_R1/A10 and finishes.
//! ```
//!
//! [`OutboundProxy::poll_transmit_to_client`] yields [`ToClient::ResponseHead`] where the
//! shell must write the `200 Success` response head, so it always precedes the channel's PDUs. Nothing but
//! CONN/A3 precedes CONN/C2: impacket and Samba accept no Ping in between.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

pub use crate::inbound::ChannelId;

use crate::cookie::Cookie;
use crate::error::ProtocolError;
use crate::flow::{ReceiveWindow, SendWindow};
use crate::outbox::Outbox;
use crate::pdu::header::is_rts;
use crate::rts::{ForwardDestination, RtsCommand as C, RtsPdu, build, flags};

/// Windows reports ping traffic to the server once more than this many bytes accumulated.
const PING_REPORT_THRESHOLD: u32 = 1031;

/// How long a client that has never acknowledged may stall a full window before the window is
/// treated as advisory (Samba's client never sends FlowControlAck; notes 4.4).
pub const NO_ACK_GRACE: Duration = Duration::from_secs(2);

/// Settings of the outbound proxy role.
#[derive(Debug, Clone, Copy)]
pub struct OutboundConfig {
    /// Our receive window for server -> proxy RPC bytes (CONN/A2 ReceiveWindowSize).
    pub receive_window: u32,
    /// ConnectionTimeout in milliseconds (CONN/A3); a `MinConnTimeout` pragma overrides it.
    pub connection_timeout_ms: u32,
    /// The OUT response Content-Length (CONN/A2 ChannelLifetime).
    pub channel_lifetime: u32,
}

/// Where the outbound proxy is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboundState {
    /// Waiting for CONN/A1 or OUT_R1/A3 (Open_Start).
    AwaitFirst,
    /// The first PDU was seen; the shell is connecting to the server.
    AwaitConnect,
    /// CONN/A2 and CONN/A3 sent; waiting for CONN/C1 (C1W).
    AwaitC1,
    /// OUT_R1 successor: OUT_R1/A4 sent; holding everything until the client's OUT_R1/A11.
    AwaitA11,
    /// Streaming.
    Opened,
    /// OUT_R1 predecessor after OUT_R1/A9: flushing, then OUT_R1/A10, then done.
    Draining,
    /// Nothing more to do.
    Finished,
}

impl OutboundState {
    fn name(self) -> &'static str {
        match self {
            Self::AwaitFirst => "Open_Start",
            Self::AwaitConnect => "connecting",
            Self::AwaitC1 => "C1W",
            Self::AwaitA11 => "A11W",
            Self::Opened => "Opened",
            Self::Draining => "draining (OUT_R1 predecessor)",
            Self::Finished => "finished",
        }
    }
}

/// What to write on a client OUT channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToClient {
    /// The `200 Success` response head (the shell knows the Content-Length to announce).
    ResponseHead,
    /// Bytes of the response body.
    Pdu(Bytes),
}

/// What the shell must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundEvent {
    /// The first PDU arrived: check the target and connect to the server.
    ConnectRequested { vc: Cookie, recycled: bool },
    /// CONN/C2 (or the successor's unplugging) was queued: the channel is open.
    Opened,
    /// This channel is done (a recycled predecessor): write what is queued, then close it.
    CloseClientChannel(ChannelId),
    /// OUT_R1 predecessor: everything is written; close both sides.
    Finished,
    /// A client that never acknowledges was detected; its window is now advisory.
    WindowAdvisory,
}

#[derive(Debug, Clone, Copy)]
struct Channel {
    vc: Cookie,
    version: u32,
}

/// One client OUT request.
#[derive(Debug)]
struct ClientChannel {
    id: ChannelId,
    cookie: Cookie,
    window: SendWindow,
    rts: Outbox,
    /// Ack-less client detection: when the window last ran dry with no ack ever seen.
    stalled_since: Option<Instant>,
    advisory: bool,
    /// The 200 header went out: nothing may be written before it.
    head_sent: bool,
    /// The head is due before anything else on this channel.
    head_due: bool,
}

impl ClientChannel {
    fn new(id: ChannelId, cookie: Cookie, window: u32) -> Self {
        Self {
            id,
            cookie,
            window: SendWindow::new(window),
            rts: Outbox::default(),
            stalled_since: None,
            advisory: false,
            head_sent: false,
            head_due: false,
        }
    }

    fn can_send(&self, len: usize) -> bool {
        self.advisory || self.window.can_send(len)
    }
}

/// OUT_R2 progress on this proxy.
#[derive(Debug)]
struct R2 {
    successor: ClientChannel,
    c1_seen: bool,
    /// OUT_R2/B1 arrived: data from the server now belongs to the successor.
    b1_seen: bool,
}

/// The outbound proxy state machine for one virtual connection's OUT side on this proxy.
#[derive(Debug)]
pub struct OutboundProxy {
    config: OutboundConfig,
    state: OutboundState,
    channel: Option<Channel>,
    current: ClientChannel,
    r2: Option<R2>,
    /// OUT_R2: the predecessor channel after the switch, until its last RTS (B3) is written.
    retired: Option<ClientChannel>,
    /// OUT_R1 successor: (predecessor cookie, client window) for OUT_R1/A4.
    r1_predecessor: Option<Cookie>,
    from_server: ReceiveWindow,
    /// RPC PDUs for the current channel.
    rpc_to_client: Outbox,
    /// OUT_R2 after B1: RPC PDUs for the successor, held until it becomes current.
    rpc_for_successor: Outbox,
    to_server: Outbox,
    events: VecDeque<OutboundEvent>,
    last_client_write: Option<Instant>,
    ping_bytes_unreported: u32,
    pings_sent: u64,
    recycles: u64,
}

const CHANNEL: &str = "OUT channel (client side)";
const SERVER_CHANNEL: &str = "OUT channel (server side)";

impl OutboundProxy {
    /// A new OUT channel; `channel` is the shell's id for its HTTP request.
    pub fn new(config: OutboundConfig, channel: ChannelId) -> Self {
        Self {
            config,
            state: OutboundState::AwaitFirst,
            channel: None,
            current: ClientChannel::new(channel, Cookie::default(), 0),
            r2: None,
            retired: None,
            r1_predecessor: None,
            from_server: ReceiveWindow::new(config.receive_window),
            rpc_to_client: Outbox::default(),
            rpc_for_successor: Outbox::default(),
            to_server: Outbox::default(),
            events: VecDeque::new(),
            last_client_write: None,
            ping_bytes_unreported: 0,
            pings_sent: 0,
            recycles: 0,
        }
    }

    pub fn state(&self) -> OutboundState {
        self.state
    }

    pub fn vc_cookie(&self) -> Option<Cookie> {
        self.channel.map(|c| c.vc)
    }

    /// The client channel currently written.
    pub fn current_channel(&self) -> ChannelId {
        self.current.id
    }

    /// Pings sent to the client so far.
    pub fn pings_sent(&self) -> u64 {
        self.pings_sent
    }

    /// OUT_R2 recyclings completed on this proxy.
    pub fn recycles(&self) -> u64 {
        self.recycles
    }

    /// The ConnectionTimeout announced in CONN/A3, in milliseconds.
    pub fn connection_timeout_ms(&self) -> u32 {
        self.config.connection_timeout_ms
    }

    /// A framed PDU from client channel `from`'s request body.
    pub fn handle_client_pdu(&mut self, from: ChannelId, pdu: Bytes) -> Result<(), ProtocolError> {
        if !is_rts(&pdu) {
            return Err(ProtocolError::Unexpected {
                channel: CHANNEL,
                state: self.state.name(),
                expected: "an RTS PDU",
                got: "an RPC PDU".into(),
            });
        }
        let rts = RtsPdu::decode(&pdu)?;
        if let Some(r2) = self.r2.as_mut().filter(|r2| r2.successor.id == from) {
            // OUT_R2/C1: the rest of the successor's 120-byte body.
            return match (rts.flags, rts.commands.as_slice()) {
                (flags::PING, [C::Empty] | [C::Padding(_)]) if !r2.c1_seen => {
                    r2.c1_seen = true;
                    self.advance_r2();
                    Ok(())
                }
                _ => Err(self.unexpected("OUT_R2/C1", &rts)),
            };
        }
        if from != self.current.id {
            return Err(self.unexpected("nothing on an unknown channel", &rts));
        }
        match (self.state, rts.flags, rts.commands.as_slice()) {
            (
                OutboundState::AwaitFirst,
                flags::NONE,
                [
                    C::Version(version),
                    C::Cookie(vc),
                    C::Cookie(out_channel),
                    C::ReceiveWindowSize(client_window),
                ],
            ) => {
                self.channel = Some(Channel {
                    vc: *vc,
                    version: (*version).min(crate::rts::RTS_VERSION),
                });
                self.current = ClientChannel::new(self.current.id, *out_channel, *client_window);
                self.state = OutboundState::AwaitConnect;
                self.events.push_back(OutboundEvent::ConnectRequested {
                    vc: *vc,
                    recycled: false,
                });
                Ok(())
            }
            // OUT_R1/A3 on a fresh proxy: the predecessor lives on another proxy (OUT_R1).
            (
                OutboundState::AwaitFirst,
                flags::RECYCLE_CHANNEL,
                [
                    C::Version(version),
                    C::Cookie(vc),
                    C::Cookie(predecessor),
                    C::Cookie(successor),
                    C::ReceiveWindowSize(client_window),
                ],
            ) => {
                self.channel = Some(Channel {
                    vc: *vc,
                    version: (*version).min(crate::rts::RTS_VERSION),
                });
                self.current = ClientChannel::new(self.current.id, *successor, *client_window);
                self.r1_predecessor = Some(*predecessor);
                self.state = OutboundState::AwaitConnect;
                self.events.push_back(OutboundEvent::ConnectRequested {
                    vc: *vc,
                    recycled: true,
                });
                Ok(())
            }
            // OUT_R1/A11: the client switched to this (successor) channel: unplug.
            (OutboundState::AwaitA11, flags::NONE, [C::Ance]) => {
                self.current.head_due = true;
                self.state = OutboundState::Opened;
                self.events.push_back(OutboundEvent::Opened);
                Ok(())
            }
            _ => Err(self.unexpected("CONN/A1, OUT_R1/A3 or OUT_R1/A11", &rts)),
        }
    }

    /// OUT_R2: a successor OUT request for this virtual connection arrived at this proxy with
    /// OUT_R2/A3 as its first PDU.
    pub fn attach_successor(
        &mut self,
        channel: ChannelId,
        first: &[u8],
    ) -> Result<(), ProtocolError> {
        let rts = RtsPdu::decode(first)?;
        let (vc, predecessor, successor, window) = match (rts.flags, rts.commands.as_slice()) {
            (
                flags::RECYCLE_CHANNEL,
                [
                    C::Version(_),
                    C::Cookie(vc),
                    C::Cookie(p),
                    C::Cookie(s),
                    C::ReceiveWindowSize(w),
                ],
            ) => (*vc, *p, *s, *w),
            _ => return Err(self.unexpected("OUT_R2/A3", &rts)),
        };
        if self.state != OutboundState::Opened || self.r2.is_some() {
            return Err(self.unexpected("OUT_R2/A3 only on an open channel, once", &rts));
        }
        if self.channel.is_none_or(|c| c.vc != vc) || predecessor != self.current.cookie {
            return Err(ProtocolError::CookieMismatch {
                what: "OUT_R2/A3 predecessor",
                expected: self.current.cookie.to_string(),
                got: predecessor.to_string(),
            });
        }
        self.r2 = Some(R2 {
            successor: ClientChannel::new(channel, successor, window),
            c1_seen: false,
            b1_seen: false,
        });
        self.to_server
            .push(build::successor_cookie(successor).to_bytes());
        Ok(())
    }

    /// The shell connected to the server: CONN/A2 (+ 200 header and CONN/A3), or OUT_R1/A4.
    pub fn server_connected(&mut self) {
        let Some(channel) = self.channel else { return };
        if self.state != OutboundState::AwaitConnect {
            return;
        }
        if let Some(predecessor) = self.r1_predecessor {
            self.to_server.push(
                build::out_r1_a4(
                    channel.vc,
                    predecessor,
                    self.current.cookie,
                    self.config.channel_lifetime,
                    self.config.receive_window,
                    self.config.connection_timeout_ms,
                )
                .to_bytes(),
            );
            self.state = OutboundState::AwaitA11;
            return;
        }
        let a2 = build::conn_a2(
            channel.version,
            channel.vc,
            self.current.cookie,
            self.config.channel_lifetime,
            self.config.receive_window,
        );
        self.to_server.push(a2.to_bytes());
        self.current.head_due = true;
        self.current
            .rts
            .push(build::conn_a3(self.config.connection_timeout_ms).to_bytes());
        self.state = OutboundState::AwaitC1;
    }

    /// A framed PDU from the server leg.
    pub fn handle_server_pdu(&mut self, pdu: Bytes) -> Result<(), ProtocolError> {
        if !is_rts(&pdu) {
            if !matches!(self.state, OutboundState::Opened | OutboundState::AwaitA11) {
                return Err(ProtocolError::Unexpected {
                    channel: SERVER_CHANNEL,
                    state: self.state.name(),
                    expected: "RTS PDUs only",
                    got: "an RPC PDU".into(),
                });
            }
            self.from_server.on_received(pdu.len(), SERVER_CHANNEL)?;
            if self.r2.as_ref().is_some_and(|r2| r2.b1_seen) {
                self.rpc_for_successor.push(pdu);
            } else {
                self.rpc_to_client.push(pdu);
            }
            return Ok(());
        }
        let rts = RtsPdu::decode(&pdu)?;
        match (self.state, rts.flags, rts.commands.as_slice()) {
            (
                OutboundState::AwaitC1,
                flags::NONE,
                [
                    C::Version(version),
                    C::ReceiveWindowSize(window),
                    C::ConnectionTimeout(timeout),
                ],
            ) => {
                // CONN/C2 carries the inbound proxy's window and timeout, copied from C1.
                let c2 = build::conn_c1_c2(*version, *window, *timeout);
                self.current.rts.push(c2.to_bytes());
                self.state = OutboundState::Opened;
                self.events.push_back(OutboundEvent::Opened);
                Ok(())
            }
            (
                OutboundState::Opened
                | OutboundState::AwaitA11
                | OutboundState::Draining
                | OutboundState::Finished,
                flags::OTHER_CMD,
                [C::Destination(dest), C::FlowControlAck(ack)],
            ) => {
                match dest {
                    // The client's acknowledgement of an OUT channel, forwarded by the server.
                    ForwardDestination::OutProxy => {
                        if self.current.cookie == ack.channel_cookie {
                            self.current.window.on_ack(ack);
                            self.current.stalled_since = None;
                        } else if let Some(r2) = self
                            .r2
                            .as_mut()
                            .filter(|r2| r2.successor.cookie == ack.channel_cookie)
                        {
                            r2.successor.window.on_ack(ack);
                        }
                    }
                    // The inbound proxy's acknowledgement for the client: pass it on.
                    ForwardDestination::Client => self.queue_for_client(pdu, true),
                    _ => {
                        return Err(ProtocolError::Unexpected {
                            channel: SERVER_CHANNEL,
                            state: self.state.name(),
                            expected: "a flow-control ack for the client or this proxy",
                            got: format!("an ack for {dest:?}"),
                        });
                    }
                }
                Ok(())
            }
            // OUT_R2/B1 (same proxy) or OUT_R1/A9 (predecessor proxy).
            (OutboundState::Opened, flags::NONE, [C::Ance]) => {
                if let Some(r2) = self.r2.as_mut() {
                    r2.b1_seen = true;
                    self.advance_r2();
                } else {
                    self.state = OutboundState::Draining;
                    self.finish_draining();
                }
                Ok(())
            }
            // OUT_R2/B2: the server refused the successor.
            (OutboundState::Opened, flags::NONE, [C::NegativeAnce]) => {
                if let Some(r2) = self.r2.take() {
                    self.events
                        .push_back(OutboundEvent::CloseClientChannel(r2.successor.id));
                }
                Ok(())
            }
            // Everything addressed to the client is delivered unchanged (3.2.4.5.x):
            // OUT_R2/A1 -> A2, OUT_R2/A5 -> A6, OUT_R1/A5 -> A6, IN_Rx/A3 -> A4.
            (OutboundState::Opened | OutboundState::AwaitA11, _, _)
                if rts.destination() == Some(ForwardDestination::Client) =>
            {
                self.queue_for_client(pdu, false);
                Ok(())
            }
            _ => Err(ProtocolError::Unexpected {
                channel: SERVER_CHANNEL,
                state: self.state.name(),
                expected: "CONN/C1, RPC PDUs, recycling PDUs or PDUs for the client",
                got: rts.name().into(),
            }),
        }
    }

    /// Queues an RTS PDU the server forwarded to the client. After OUT_R2/B1 the server counts
    /// what it sends against the successor channel, so it goes there; a flow-control ack
    /// replaces one still queued (acks are cumulative), so acks cannot pile up in a channel
    /// that waits for the client.
    fn queue_for_client(&mut self, pdu: Bytes, is_ack: bool) {
        let channel = match self.r2.as_mut() {
            Some(r2) if r2.b1_seen => &mut r2.successor,
            _ => &mut self.current,
        };
        if is_ack
            && channel.rts.replace_last_if(pdu.clone(), |queued| {
                RtsPdu::decode(queued).is_ok_and(|q| q.flow_control_ack().is_some())
            })
        {
            return;
        }
        channel.rts.push(pdu);
    }

    /// OUT_R2 step 10: once B1 has come and the old channel's data is out, end the old channel
    /// with OUT_R2/B3 and make the successor current (its header once its C1 is in).
    fn advance_r2(&mut self) {
        let Some(r2) = self.r2.as_ref() else { return };
        if !r2.b1_seen || !self.rpc_to_client.is_empty() || !r2.c1_seen {
            return;
        }
        let Some(r2) = self.r2.take() else { return };
        self.current.rts.push(build::out_r2_b3().to_bytes());
        let old = std::mem::replace(&mut self.current, r2.successor);
        // The old channel's RTS queue (ending in B3) still has to be written.
        self.retired = Some(old);
        self.rpc_to_client = std::mem::take(&mut self.rpc_for_successor);
        self.current.head_due = true;
        self.recycles += 1;
    }

    fn finish_draining(&mut self) {
        if self.state == OutboundState::Draining && self.rpc_to_client.is_empty() {
            self.current.rts.push(build::ance().to_bytes());
            self.state = OutboundState::Finished;
            self.events.push_back(OutboundEvent::Finished);
        }
    }

    /// The next bytes for client channel `channel`: RTS first, then RPC within the window.
    pub fn poll_transmit_to_client(
        &mut self,
        channel: ChannelId,
        now: Instant,
    ) -> Option<ToClient> {
        if channel == self.current.id && self.current.head_due {
            self.current.head_due = false;
            self.current.head_sent = true;
            return Some(ToClient::ResponseHead);
        }
        self.poll_pdu_to_client(channel, now).map(ToClient::Pdu)
    }

    fn poll_pdu_to_client(&mut self, channel: ChannelId, now: Instant) -> Option<Bytes> {
        if let Some(old) = self.retired.as_mut().filter(|old| old.id == channel) {
            let pdu = old.rts.pop();
            if old.rts.is_empty() {
                let id = old.id;
                self.retired = None;
                self.events.push_back(OutboundEvent::CloseClientChannel(id));
            }
            return pdu;
        }
        if channel != self.current.id || !self.current.head_sent {
            return None;
        }
        let pdu = if let Some(pdu) = self.current.rts.pop() {
            pdu
        } else {
            let len = self.rpc_to_client.front_len()?;
            if !matches!(self.state, OutboundState::Opened | OutboundState::Draining) {
                return None;
            }
            if !self.current.can_send(len) {
                self.note_stall(now);
                return None;
            }
            let pdu = self.rpc_to_client.pop()?;
            self.current.window.on_sent(len);
            if let Some(ack) = self.from_server.on_consumed(len, self.current.cookie) {
                self.to_server.push(build::flow_control_ack(ack).to_bytes());
            }
            self.advance_r2();
            self.finish_draining();
            pdu
        };
        self.last_client_write = Some(now);
        Some(pdu)
    }

    /// Samba's client never acknowledges: after a full window and [`NO_ACK_GRACE`] without a
    /// single ack, stop enforcing the window for this channel and rely on TCP back-pressure
    /// (the shell writes only as fast as the socket drains).
    fn note_stall(&mut self, now: Instant) {
        let channel = &mut self.current;
        if channel.advisory || channel.window.acks_seen() > 0 {
            return;
        }
        match channel.stalled_since {
            None => channel.stalled_since = Some(now),
            Some(since) if now.duration_since(since) >= NO_ACK_GRACE => {
                channel.advisory = true;
                self.events.push_back(OutboundEvent::WindowAdvisory);
            }
            Some(_) => {}
        }
    }

    /// Whether anything is ready for client channel `channel` right now.
    pub fn has_transmit_to_client(&self, channel: ChannelId) -> bool {
        if let Some(old) = self.retired.as_ref().filter(|old| old.id == channel) {
            return !old.rts.is_empty();
        }
        channel == self.current.id
            && (self.current.head_due || self.current.head_sent)
            && (!self.current.rts.is_empty()
                || self.current.head_due
                || (matches!(self.state, OutboundState::Opened | OutboundState::Draining)
                    && self
                        .rpc_to_client
                        .front_len()
                        .is_some_and(|len| self.current.can_send(len))))
    }

    /// The next PDU for the server leg.
    pub fn poll_transmit_to_server(&mut self) -> Option<Bytes> {
        self.to_server.pop()
    }

    pub fn has_transmit_to_server(&self) -> bool {
        !self.to_server.is_empty()
    }

    /// Whether to read the server leg.
    pub fn wants_server_data(&self) -> bool {
        // Our receive window bounds what the server may send (one that ignores it is cut off),
        // and RTS PDUs queued behind its data must be read without waiting for the client.
        true
    }

    /// Bytes queued for the client.
    pub fn queued_bytes(&self) -> usize {
        self.rpc_to_client.bytes() + self.rpc_for_successor.bytes() + self.current.rts.bytes()
    }

    /// Idle interval after which a Ping keeps the OUT channel alive: half the timeout.
    fn ping_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.config.connection_timeout_ms) / 2)
    }

    /// When [`OutboundProxy::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state != OutboundState::Opened {
            return None;
        }
        let ping = self.last_client_write.map(|t| t + self.ping_interval());
        let stall = self
            .current
            .stalled_since
            .filter(|_| !self.current.advisory && self.current.window.acks_seen() == 0)
            .map(|t| t + NO_ACK_GRACE);
        ping.into_iter().chain(stall).min()
    }

    /// Time passed: ping the client if the channel has been idle (MS-RPCH 3.2.4.5.x).
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.state != OutboundState::Opened {
            return;
        }
        // A shell polls only when `has_transmit_to_client` says so, which a full window never
        // does: the stall is noticed here, on the first timeout or input after it.
        let blocked_by_window = self.current.head_sent
            && self
                .rpc_to_client
                .front_len()
                .is_some_and(|len| !self.current.can_send(len));
        if blocked_by_window {
            self.note_stall(now);
        } else {
            // The grace runs over one continuous stall.
            self.current.stalled_since = None;
        }
        let Some(last) = self.last_client_write else {
            return;
        };
        if now < last + self.ping_interval() {
            return;
        }
        let ping = build::ping().to_bytes();
        self.ping_bytes_unreported += ping.len() as u32;
        self.pings_sent += 1;
        self.current.rts.push(ping);
        // Windows reports accumulated ping bytes past ~1 KiB so the server can count them
        // against the channel lifetime.
        if self.ping_bytes_unreported > PING_REPORT_THRESHOLD {
            self.to_server
                .push(build::ping_traffic_sent_notify(self.ping_bytes_unreported).to_bytes());
            self.ping_bytes_unreported = 0;
        }
        self.last_client_write = Some(now);
    }

    pub fn poll_event(&mut self) -> Option<OutboundEvent> {
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
