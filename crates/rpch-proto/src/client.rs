//! The client role (MS-RPCH 3.2.2): one virtual connection as an RPC client drives it.
//!
//! The client opens an IN channel (`RPC_IN_DATA`, request body = PDUs to the server) and an
//! OUT channel (`RPC_OUT_DATA`, response body = PDUs from the server), sends CONN/A1 and
//! CONN/B1, waits for CONN/A3 and CONN/C2 on the OUT channel, and is then open: RPC PDUs go out
//! on IN within the inbound proxy's window and come in on OUT, acknowledged to the outbound
//! proxy with FlowControlAckWithDestination(FDOutProxy) on the IN channel.
//!
//! ```text
//!  client                                   proxies / server
//!    |--CONN/A1 (OUT body)-------------------->|
//!    |--CONN/B1 (IN body)--------------------->|
//!    |<--CONN/A3 (OUT)-------------------------|
//!    |<--CONN/C2 (OUT)-------------------------|  opened
//!    |--RPC PDUs (IN, window from C2)--------->|
//!    |<--RPC PDUs (OUT)------------------------|
//!    |--FCAwD(FDOutProxy) (IN)---------------->|
//!    |<--FCAwD(FDClient) (OUT)-----------------|
//!    |--Ping (IN) when idle------------------->|
//!
//!  recycling (3.2.2.5.x):
//!    IN, near the IN lifetime: new IN request with IN_R1/A1; on IN_R1/A4 or IN_R2/A4 (via
//!        OUT) send IN_Rx/A5 as the last PDU on the old request and continue on the new one.
//!    OUT, on OUT_R1/A2 = OUT_R2/A2: new OUT request (Content-Length 120) with OUT_R1/A3; then
//!        R2: OUT_R2/A6 -> OUT_R2/A7 on IN and OUT_R2/C1 on the new request; OUT_R2/B3 ends
//!            the old channel;
//!        R1: OUT_R1/A6 -> OUT_R1/A7 on IN; OUT_R1/A10 ends the old channel -> OUT_R1/A11 on
//!            the new request.
//! ```
//!
//! Driving it: channels are the shell's HTTP requests, named by [`ChannelId`]. Write
//! [`ClientVc::poll_transmit`] output into each request body; feed OUT response-body PDUs to
//! [`ClientVc::handle_out_pdu`]; act on [`ClientEvent`]s (open a successor request, switch
//! reading to a new OUT channel, close an old one); queue RPC PDUs with [`ClientVc::send`]
//! and take received ones with [`ClientVc::poll_received`]; run the timers.

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

/// Bytes kept free at the end of an IN request body for the PDUs that finish recycling.
const IN_RESERVE: u64 = 1024;
/// Size of a Ping RTS PDU.
const RTS_PING_LEN: usize = 20;

/// Settings and identity of a client virtual connection.
#[derive(Debug, Clone, Copy)]
pub struct ClientConfig {
    pub vc: Cookie,
    pub in_channel: Cookie,
    pub out_channel: Cookie,
    pub association_group: Cookie,
    /// Our receive window for the OUT channel (CONN/A1, OUT_R1/A3).
    pub receive_window: u32,
    /// IN channel lifetime (CONN/B1), i.e. the IN request's Content-Length.
    pub in_channel_lifetime: u32,
    /// ClientKeepalive (CONN/B1), milliseconds.
    pub keepalive_ms: u32,
}

/// Where the client is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// A1/B1 sent, waiting for CONN/A3.
    AwaitA3,
    /// Waiting for CONN/C2.
    AwaitC2,
    Opened,
}

impl ClientState {
    fn name(self) -> &'static str {
        match self {
            Self::AwaitA3 => "A3W",
            Self::AwaitC2 => "C2W",
            Self::Opened => "Opened",
        }
    }
}

/// What CONN/A3 and CONN/C2 told the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConnectionParams {
    /// ConnectionTimeout of the outbound proxy (CONN/A3), ms.
    pub out_proxy_timeout_ms: u32,
    /// Version from CONN/C2.
    pub version: u32,
    /// The inbound proxy's receive window (CONN/C2).
    pub in_proxy_window: u32,
    /// ConnectionTimeout of the inbound proxy (CONN/C2), ms.
    pub in_proxy_timeout_ms: u32,
}

/// What the shell must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    /// Open a new `RPC_IN_DATA` request (Content-Length = the IN lifetime), then call
    /// [`ClientVc::in_successor_opened`].
    OpenInSuccessor,
    /// Open a new `RPC_OUT_DATA` request (Content-Length 120), then call
    /// [`ClientVc::out_successor_opened`].
    OpenOutSuccessor,
    /// Read the OUT channel `to` from now on (its response head first); `from` is done.
    SwitchOut { from: ChannelId, to: ChannelId },
    /// Write what is queued for this IN request, then close it.
    CloseIn(ChannelId),
}

#[derive(Debug)]
struct InChannel {
    id: ChannelId,
    cookie: Cookie,
    window: SendWindow,
    /// Bytes written into this request's body (RTS and RPC).
    written: u64,
    rts: Outbox,
}

#[derive(Debug)]
enum InRecycle {
    Idle,
    /// Waiting for the shell to open the successor request.
    Opening,
    /// IN_R1/A1 queued on the successor; waiting for IN_Rx/A4 on OUT.
    AwaitA4 {
        successor: InChannel,
    },
}

#[derive(Debug)]
enum OutRecycle {
    Idle,
    Opening,
    /// OUT_R1/A3 sent on the successor; waiting for OUT_R2/A6 or OUT_R1/A6.
    AwaitA6 {
        successor: ChannelId,
        cookie: Cookie,
    },
    /// R2: waiting for OUT_R2/B3 on the old channel.
    AwaitB3 {
        successor: ChannelId,
        cookie: Cookie,
    },
    /// R1: waiting for OUT_R1/A10 on the old channel.
    AwaitA10 {
        successor: ChannelId,
        cookie: Cookie,
    },
}

/// The client state machine for one virtual connection.
#[derive(Debug)]
pub struct ClientVc {
    config: ClientConfig,
    state: ClientState,
    params: ConnectionParams,
    in_channel: InChannel,
    out_channel: ChannelId,
    out_cookie: Cookie,
    from_out: ReceiveWindow,
    /// RTS for OUT request bodies (A1, successor A3, C1/A11).
    out_rts: Vec<(ChannelId, Outbox)>,
    /// Retired IN requests still writing their last PDUs (IN_Rx/A5).
    retired_in: Vec<InChannel>,
    rpc_to_in: Outbox,
    received: VecDeque<Bytes>,
    events: VecDeque<ClientEvent>,
    in_recycle: InRecycle,
    out_recycle: OutRecycle,
    last_in_write: Option<Instant>,
    pings_received: u64,
    recycles: (u64, u64),
    cookie_seq: u64,
    /// The latest acknowledgement for the outbound proxy not yet written. Acks are cumulative,
    /// so a newer one replaces an unsent older one; near the end of an IN request it waits for
    /// the successor instead of eating the room recycling needs.
    pending_ack: Option<Bytes>,
    /// Behave like Samba's client: never acknowledge OUT data, never hold the outbound proxy
    /// to our window (see [`ClientVc::set_never_acknowledge`]).
    never_acknowledge: bool,
}

const OUT: &str = "OUT channel";

impl ClientVc {
    /// A new virtual connection on IN request `in_id` and OUT request `out_id`; CONN/A1 and
    /// CONN/B1 are queued at once.
    pub fn new(config: ClientConfig, in_id: ChannelId, out_id: ChannelId) -> Self {
        let a1 = build::conn_a1(config.vc, config.out_channel, config.receive_window);
        let b1 = build::conn_b1(
            config.vc,
            config.in_channel,
            config.in_channel_lifetime,
            config.keepalive_ms,
            config.association_group,
        );
        let mut in_rts = Outbox::default();
        in_rts.push(b1.to_bytes());
        let mut a1_box = Outbox::default();
        a1_box.push(a1.to_bytes());
        Self {
            config,
            state: ClientState::AwaitA3,
            params: ConnectionParams::default(),
            in_channel: InChannel {
                id: in_id,
                cookie: config.in_channel,
                window: SendWindow::new(0),
                written: 0,
                rts: in_rts,
            },
            out_channel: out_id,
            out_cookie: config.out_channel,
            from_out: ReceiveWindow::new(config.receive_window),
            out_rts: vec![(out_id, a1_box)],
            retired_in: Vec::new(),
            rpc_to_in: Outbox::default(),
            received: VecDeque::new(),
            events: VecDeque::new(),
            in_recycle: InRecycle::Idle,
            out_recycle: OutRecycle::Idle,
            last_in_write: None,
            pings_received: 0,
            recycles: (0, 0),
            cookie_seq: 0,
            pending_ack: None,
            never_acknowledge: false,
        }
    }

    pub fn state(&self) -> ClientState {
        self.state
    }

    pub fn is_open(&self) -> bool {
        self.state == ClientState::Opened
    }

    /// Values from CONN/A3 and CONN/C2 (zero until they arrive).
    pub fn params(&self) -> ConnectionParams {
        self.params
    }

    pub fn config(&self) -> &ClientConfig {
        &self.config
    }

    /// Pings received on the OUT channel.
    pub fn pings_received(&self) -> u64 {
        self.pings_received
    }

    /// Completed recyclings: (IN, OUT).
    pub fn recycles(&self) -> (u64, u64) {
        self.recycles
    }

    /// The IN request currently written and the OUT request currently read.
    pub fn channels(&self) -> (ChannelId, ChannelId) {
        (self.in_channel.id, self.out_channel)
    }

    /// A fresh channel cookie, distinct from every other of this connection.
    fn next_cookie(&mut self) -> Cookie {
        // The virtual-connection cookie is random; deriving channel cookies from it with a
        // counter keeps them unique without a random source in the protocol core.
        self.cookie_seq += 1;
        let mut bytes = *self.config.vc.as_bytes();
        for (b, s) in bytes.iter_mut().zip(self.cookie_seq.to_le_bytes()) {
            *b ^= s;
        }
        if let Some(last) = bytes.last_mut() {
            *last ^= 0xA5;
        }
        Cookie(bytes)
    }

    /// Bytes for request `channel`'s body, if any are ready.
    pub fn poll_transmit(&mut self, channel: ChannelId, now: Instant) -> Option<Bytes> {
        if let Some((_, outbox)) = self.out_rts.iter_mut().find(|(id, _)| *id == channel) {
            let pdu = outbox.pop();
            self.out_rts.retain(|(_, outbox)| !outbox.is_empty());
            return pdu;
        }
        if let InRecycle::AwaitA4 { successor } = &mut self.in_recycle
            && successor.id == channel
        {
            return successor.rts.pop();
        }
        if let Some(index) = self.retired_in.iter().position(|c| c.id == channel) {
            let old = self.retired_in.get_mut(index)?;
            let pdu = old.rts.pop();
            if old.rts.is_empty() {
                let id = old.id;
                self.retired_in.remove(index);
                self.events.push_back(ClientEvent::CloseIn(id));
            }
            return pdu;
        }
        if channel != self.in_channel.id {
            return None;
        }
        let pdu = if let Some(pdu) = self.in_channel.rts.pop() {
            pdu
        } else if let Some(ack) = self.pending_ack.take_if(|ack| {
            self.in_channel.written + ack.len() as u64 + IN_RESERVE / 2
                <= u64::from(self.config.in_channel_lifetime)
        }) {
            ack
        } else {
            if self.state != ClientState::Opened {
                return None;
            }
            let len = self.rpc_to_in.front_len()?;
            if !self.in_may_carry(len) || !self.in_channel.window.can_send(len) {
                return None;
            }
            self.in_channel.window.on_sent(len);
            self.rpc_to_in.pop()?
        };
        self.in_channel.written += pdu.len() as u64;
        self.last_in_write = Some(now);
        self.maybe_start_in_recycling();
        Some(pdu)
    }

    /// Whether an RPC PDU of `len` bytes still fits in the current IN request.
    fn in_may_carry(&self, len: usize) -> bool {
        self.in_channel.written + len as u64 + IN_RESERVE
            <= u64::from(self.config.in_channel_lifetime)
    }

    fn maybe_start_in_recycling(&mut self) {
        if !matches!(self.in_recycle, InRecycle::Idle) || self.state != ClientState::Opened {
            return;
        }
        // Windows recycles with 4 KiB left; leave room for a whole fragment besides.
        let lifetime = u64::from(self.config.in_channel_lifetime);
        let margin = (lifetime / 4).min(1024 * 1024);
        if self.in_channel.written + margin >= lifetime {
            self.in_recycle = InRecycle::Opening;
            self.events.push_back(ClientEvent::OpenInSuccessor);
        }
    }

    /// Whether [`ClientVc::poll_transmit`] would return something for `channel`.
    pub fn has_transmit(&self, channel: ChannelId) -> bool {
        if self
            .out_rts
            .iter()
            .any(|(id, o)| *id == channel && !o.is_empty())
        {
            return true;
        }
        if let Some(old) = self.retired_in.iter().find(|c| c.id == channel) {
            return !old.rts.is_empty();
        }
        if let InRecycle::AwaitA4 { successor } = &self.in_recycle
            && successor.id == channel
        {
            return !successor.rts.is_empty();
        }
        channel == self.in_channel.id
            && (!self.in_channel.rts.is_empty()
                || self.pending_ack.as_ref().is_some_and(|ack| {
                    self.in_channel.written + ack.len() as u64 + IN_RESERVE / 2
                        <= u64::from(self.config.in_channel_lifetime)
                })
                || (self.state == ClientState::Opened
                    && self.rpc_to_in.front_len().is_some_and(|len| {
                        self.in_may_carry(len) && self.in_channel.window.can_send(len)
                    })))
    }

    /// Queues an RPC PDU for the server.
    pub fn send(&mut self, pdu: Bytes) {
        self.rpc_to_in.push(pdu);
    }

    /// RPC bytes queued and not yet written (back-pressure for callers).
    pub fn queued_bytes(&self) -> usize {
        self.rpc_to_in.bytes()
    }

    /// The shell opened the successor IN request: it starts with IN_R1/A1.
    pub fn in_successor_opened(&mut self, channel: ChannelId) {
        if !matches!(self.in_recycle, InRecycle::Opening) {
            return;
        }
        let cookie = self.next_cookie();
        let mut rts = Outbox::default();
        let a1 = build::in_r1_a1(self.config.vc, self.in_channel.cookie, cookie).to_bytes();
        let written = a1.len() as u64;
        rts.push(a1);
        self.in_recycle = InRecycle::AwaitA4 {
            successor: InChannel {
                id: channel,
                cookie,
                window: SendWindow::new(0),
                written,
                rts,
            },
        };
    }

    /// The shell opened the successor OUT request: its body starts with OUT_R1/A3.
    pub fn out_successor_opened(&mut self, channel: ChannelId) {
        if !matches!(self.out_recycle, OutRecycle::Opening) {
            return;
        }
        let cookie = self.next_cookie();
        let a3 = build::out_r1_a3(
            self.config.vc,
            self.out_cookie,
            cookie,
            self.config.receive_window,
        );
        self.push_out_rts(channel, a3.to_bytes());
        self.out_recycle = OutRecycle::AwaitA6 {
            successor: channel,
            cookie,
        };
    }

    fn push_out_rts(&mut self, channel: ChannelId, pdu: Bytes) {
        if let Some((_, outbox)) = self.out_rts.iter_mut().find(|(id, _)| *id == channel) {
            outbox.push(pdu);
        } else {
            let mut outbox = Outbox::default();
            outbox.push(pdu);
            self.out_rts.push((channel, outbox));
        }
    }

    /// A framed PDU from the OUT response body of the channel being read.
    pub fn handle_out_pdu(&mut self, pdu: Bytes) -> Result<(), ProtocolError> {
        if !is_rts(&pdu) {
            if self.state != ClientState::Opened {
                return Err(self.unexpected("CONN/A3 or CONN/C2", "an RPC PDU".into()));
            }
            if !self.never_acknowledge {
                self.from_out.on_received(pdu.len(), OUT)?;
            }
            self.received.push_back(pdu);
            return Ok(());
        }
        let rts = RtsPdu::decode(&pdu)?;
        use ForwardDestination::Client as ToClient;
        match (self.state, rts.flags, rts.commands.as_slice()) {
            (ClientState::AwaitA3, flags::NONE, [C::ConnectionTimeout(ms)]) => {
                self.params.out_proxy_timeout_ms = *ms;
                self.state = ClientState::AwaitC2;
                Ok(())
            }
            (
                ClientState::AwaitC2,
                flags::NONE,
                [
                    C::Version(version),
                    C::ReceiveWindowSize(window),
                    C::ConnectionTimeout(ms),
                ],
            ) => {
                self.params.version = *version;
                self.params.in_proxy_window = *window;
                self.params.in_proxy_timeout_ms = *ms;
                self.in_channel.window = SendWindow::new(*window);
                self.state = ClientState::Opened;
                Ok(())
            }
            (ClientState::Opened, flags::PING, []) => {
                self.pings_received += 1;
                Ok(())
            }
            (
                ClientState::Opened,
                flags::OTHER_CMD,
                [C::Destination(ToClient), C::FlowControlAck(ack)],
            ) => {
                if ack.channel_cookie == self.in_channel.cookie {
                    self.in_channel.window.on_ack(ack);
                }
                Ok(())
            }
            // IN_R1/A4 (new proxy's window and timeout) or IN_R2/A4.
            (
                ClientState::Opened,
                flags::NONE,
                [
                    C::Destination(ToClient),
                    C::Version(_),
                    C::ReceiveWindowSize(window),
                    C::ConnectionTimeout(ms),
                ],
            ) => self.in_a4(Some((*window, *ms))),
            (ClientState::Opened, flags::NONE, [C::Destination(ToClient)]) => self.in_a4(None),
            // OUT_R1/A2 = OUT_R2/A2: the server wants a new OUT channel.
            (ClientState::Opened, flags::RECYCLE_CHANNEL, [C::Destination(ToClient)]) => {
                if !matches!(self.out_recycle, OutRecycle::Idle) {
                    return Err(self.unexpected("no second OUT_Rx/A2", rts.name().into()));
                }
                self.out_recycle = OutRecycle::Opening;
                self.events.push_back(ClientEvent::OpenOutSuccessor);
                Ok(())
            }
            // OUT_R2/A6: same proxy; A7 on IN, C1 on the successor.
            (ClientState::Opened, flags::NONE, [C::Destination(ToClient), C::Ance]) => {
                match self.out_recycle {
                    OutRecycle::AwaitA6 { successor, cookie } => {
                        self.in_channel
                            .rts
                            .push(build::out_r2_a7(cookie).to_bytes());
                        self.push_out_rts(successor, build::out_r2_c1().to_bytes());
                        self.out_recycle = OutRecycle::AwaitB3 { successor, cookie };
                        Ok(())
                    }
                    _ => Err(self.unexpected("OUT_R2/A6 only while recycling", rts.name().into())),
                }
            }
            // OUT_R1/A6: another proxy; A7 on IN.
            (
                ClientState::Opened,
                flags::OUT_CHANNEL,
                [
                    C::Destination(ToClient),
                    C::Version(_),
                    C::ConnectionTimeout(_),
                ],
            ) => match self.out_recycle {
                OutRecycle::AwaitA6 { successor, cookie } => {
                    self.in_channel
                        .rts
                        .push(build::out_r1_a7(cookie).to_bytes());
                    self.out_recycle = OutRecycle::AwaitA10 { successor, cookie };
                    Ok(())
                }
                _ => Err(self.unexpected("OUT_R1/A6 only while recycling", rts.name().into())),
            },
            // OUT_R2/B3: the old channel ends here.
            (ClientState::Opened, flags::EOF, [C::Ance]) => match self.out_recycle {
                OutRecycle::AwaitB3 { successor, cookie } => {
                    self.switch_out(successor, cookie);
                    Ok(())
                }
                _ => Err(self.unexpected("OUT_R2/B3 only while recycling", rts.name().into())),
            },
            // OUT_R1/A10: the old channel ends here; tell the new proxy with A11.
            (ClientState::Opened, flags::NONE, [C::Ance]) => match self.out_recycle {
                OutRecycle::AwaitA10 { successor, cookie } => {
                    self.push_out_rts(successor, build::ance().to_bytes());
                    self.switch_out(successor, cookie);
                    Ok(())
                }
                _ => Err(self.unexpected("OUT_R1/A10 only while recycling", rts.name().into())),
            },
            (state, _, _) => Err(self.unexpected(
                match state {
                    ClientState::AwaitA3 => "CONN/A3",
                    ClientState::AwaitC2 => "CONN/C2",
                    ClientState::Opened => "RPC PDUs, Ping, acks or recycling PDUs",
                },
                rts.name().into(),
            )),
        }
    }

    fn switch_out(&mut self, successor: ChannelId, cookie: Cookie) {
        let from = self.out_channel;
        self.out_channel = successor;
        self.out_cookie = cookie;
        self.from_out = ReceiveWindow::new(self.config.receive_window);
        self.out_recycle = OutRecycle::Idle;
        self.recycles.1 += 1;
        self.events.push_back(ClientEvent::SwitchOut {
            from,
            to: successor,
        });
    }

    fn in_a4(&mut self, new_proxy: Option<(u32, u32)>) -> Result<(), ProtocolError> {
        let InRecycle::AwaitA4 { .. } = self.in_recycle else {
            return Err(self.unexpected("IN_Rx/A4 only while recycling", "IN_Rx/A4".into()));
        };
        let InRecycle::AwaitA4 { mut successor } =
            std::mem::replace(&mut self.in_recycle, InRecycle::Idle)
        else {
            return Ok(());
        };
        // IN_Rx/A5: the last PDU on the old request.
        self.in_channel
            .rts
            .push(build::successor_cookie(successor.cookie).to_bytes());
        let window = match new_proxy {
            Some((window, ms)) => {
                self.params.in_proxy_window = window;
                self.params.in_proxy_timeout_ms = ms;
                window
            }
            None => self.in_channel.window.peer_window(),
        };
        successor.window = SendWindow::new(window);
        // Anything the successor still has to write (its A1) stays ahead of new PDUs.
        let old = std::mem::replace(&mut self.in_channel, successor);
        self.retired_in.push(old);
        self.recycles.0 += 1;
        Ok(())
    }

    /// The next RPC PDU received from the server; taking it consumes window and may queue an
    /// acknowledgement to the outbound proxy on the IN channel.
    pub fn poll_received(&mut self) -> Option<Bytes> {
        let pdu = self.received.pop_front()?;
        if self.never_acknowledge {
            return Some(pdu);
        }
        if let Some(ack) = self.from_out.on_consumed(pdu.len(), self.out_cookie) {
            self.pending_ack = Some(
                build::flow_control_ack_with_destination(ForwardDestination::OutProxy, ack)
                    .to_bytes(),
            );
        }
        Some(pdu)
    }

    /// Test and diagnostic mode: never send FlowControlAck for the OUT channel and accept
    /// whatever the outbound proxy sends, as Samba's client does (MS-RPCH notes 4.4). The
    /// outbound proxy then treats our window as advisory after its grace period.
    pub fn set_never_acknowledge(&mut self, on: bool) {
        self.never_acknowledge = on;
    }

    /// Whether a received RPC PDU is waiting for [`ClientVc::poll_received`].
    pub fn has_received(&self) -> bool {
        !self.received.is_empty()
    }

    /// Whether to read the OUT channel: always, since our receive window bounds what the
    /// outbound proxy may send, and recycling PDUs behind its data must not wait.
    pub fn wants_out_data(&self) -> bool {
        true
    }

    pub fn poll_event(&mut self) -> Option<ClientEvent> {
        self.events.pop_front()
    }

    /// Idle interval after which the client pings the inbound proxy: half its timeout.
    fn ping_interval(&self) -> Option<Duration> {
        (self.params.in_proxy_timeout_ms > 0)
            .then(|| Duration::from_millis(u64::from(self.params.in_proxy_timeout_ms) / 2))
    }

    /// When [`ClientVc::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.state != ClientState::Opened {
            return None;
        }
        Some(self.last_in_write? + self.ping_interval()?)
    }

    /// Time passed: ping the IN channel if it has been idle.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.poll_timeout().is_some_and(|deadline| now >= deadline) {
            // A channel about to be recycled has no room to spare; the successor will be busy.
            if self.in_may_carry(RTS_PING_LEN) {
                self.in_channel.rts.push(build::ping().to_bytes());
            }
            self.last_in_write = Some(now);
        }
    }

    fn unexpected(&self, expected: &'static str, got: String) -> ProtocolError {
        ProtocolError::Unexpected {
            channel: OUT,
            state: self.state.name(),
            expected,
            got,
        }
    }
}
