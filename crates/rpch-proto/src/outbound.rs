//! The outbound proxy role (MS-RPCH 3.2.4): the proxy end of an OUT channel.
//!
//! It reads CONN/A1 from the `RPC_OUT_DATA` request body, opens its TCP leg to the server, and
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
//! ```
//!
//! The 200 header itself is the shell's to write, right before the first bytes that
//! [`OutboundProxy::poll_transmit_to_client`] returns (CONN/A3). Nothing but CONN/A3 precedes
//! CONN/C2: impacket and Samba accept no Ping in between.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::cookie::Cookie;
use crate::error::ProtocolError;
use crate::flow::{ReceiveWindow, SendWindow};
use crate::outbox::Outbox;
use crate::pdu::header::is_rts;
use crate::rts::{ForwardDestination, RtsCommand as C, RtsPdu, build, flags};

/// Windows reports ping traffic to the server once more than this many bytes accumulated.
const PING_REPORT_THRESHOLD: u32 = 1031;

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
    /// Waiting for CONN/A1 (Open_Start).
    AwaitA1,
    /// CONN/A1 seen; the shell is connecting to the server.
    AwaitConnect,
    /// CONN/A2 and CONN/A3 sent; waiting for CONN/C1 (C1W).
    AwaitC1,
    /// Streaming.
    Opened,
}

impl OutboundState {
    fn name(self) -> &'static str {
        match self {
            Self::AwaitA1 => "Open_Start",
            Self::AwaitConnect => "connecting",
            Self::AwaitC1 => "C1W",
            Self::Opened => "Opened",
        }
    }
}

/// What the shell must act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutboundEvent {
    /// CONN/A1 arrived: check the target and connect to the server.
    ConnectRequested { vc: Cookie, out_channel: Cookie },
    /// CONN/C2 was queued: the virtual connection is open.
    Opened,
}

#[derive(Debug, Clone, Copy)]
struct Channel {
    vc: Cookie,
    out_channel: Cookie,
    version: u32,
}

/// The outbound proxy state machine for one OUT channel.
#[derive(Debug)]
pub struct OutboundProxy {
    config: OutboundConfig,
    state: OutboundState,
    channel: Option<Channel>,
    from_server: ReceiveWindow,
    to_client: SendWindow,
    rts_to_client: Outbox,
    rpc_to_client: Outbox,
    to_server: Outbox,
    events: VecDeque<OutboundEvent>,
    last_client_write: Option<Instant>,
    ping_bytes_unreported: u32,
    pings_sent: u64,
}

const CHANNEL: &str = "OUT channel (client side)";
const SERVER_CHANNEL: &str = "OUT channel (server side)";

impl OutboundProxy {
    pub fn new(config: OutboundConfig) -> Self {
        Self {
            config,
            state: OutboundState::AwaitA1,
            channel: None,
            from_server: ReceiveWindow::new(config.receive_window),
            to_client: SendWindow::new(0),
            rts_to_client: Outbox::default(),
            rpc_to_client: Outbox::default(),
            to_server: Outbox::default(),
            events: VecDeque::new(),
            last_client_write: None,
            ping_bytes_unreported: 0,
            pings_sent: 0,
        }
    }

    pub fn state(&self) -> OutboundState {
        self.state
    }

    pub fn vc_cookie(&self) -> Option<Cookie> {
        self.channel.map(|c| c.vc)
    }

    /// Pings sent to the client so far.
    pub fn pings_sent(&self) -> u64 {
        self.pings_sent
    }

    /// The ConnectionTimeout announced in CONN/A3, in milliseconds.
    pub fn connection_timeout_ms(&self) -> u32 {
        self.config.connection_timeout_ms
    }

    /// A framed PDU from the client's OUT request body.
    pub fn handle_client_pdu(&mut self, pdu: Bytes) -> Result<(), ProtocolError> {
        if !is_rts(&pdu) {
            return Err(ProtocolError::Unexpected {
                channel: CHANNEL,
                state: self.state.name(),
                expected: "an RTS PDU",
                got: "an RPC PDU".into(),
            });
        }
        let rts = RtsPdu::decode(&pdu)?;
        match (self.state, rts.flags, rts.commands.as_slice()) {
            (
                OutboundState::AwaitA1,
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
                    out_channel: *out_channel,
                    version: (*version).min(crate::rts::RTS_VERSION),
                });
                self.to_client = SendWindow::new(*client_window);
                self.state = OutboundState::AwaitConnect;
                self.events.push_back(OutboundEvent::ConnectRequested {
                    vc: *vc,
                    out_channel: *out_channel,
                });
                Ok(())
            }
            _ => Err(ProtocolError::Unexpected {
                channel: CHANNEL,
                state: self.state.name(),
                expected: "CONN/A1",
                got: rts.name().into(),
            }),
        }
    }

    /// The shell connected to the server: send CONN/A2, and CONN/A3 after the 200 header.
    pub fn server_connected(&mut self) {
        let Some(channel) = self.channel else { return };
        if self.state != OutboundState::AwaitConnect {
            return;
        }
        let a2 = build::conn_a2(
            channel.version,
            channel.vc,
            channel.out_channel,
            self.config.channel_lifetime,
            self.config.receive_window,
        );
        self.to_server.push(a2.to_bytes());
        self.rts_to_client
            .push(build::conn_a3(self.config.connection_timeout_ms).to_bytes());
        self.state = OutboundState::AwaitC1;
    }

    /// A framed PDU from the server leg.
    pub fn handle_server_pdu(&mut self, pdu: Bytes) -> Result<(), ProtocolError> {
        if !is_rts(&pdu) {
            if self.state != OutboundState::Opened {
                return Err(ProtocolError::Unexpected {
                    channel: SERVER_CHANNEL,
                    state: self.state.name(),
                    expected: "CONN/C1",
                    got: "an RPC PDU".into(),
                });
            }
            self.from_server.on_received(pdu.len(), SERVER_CHANNEL)?;
            self.rpc_to_client.push(pdu);
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
                self.rts_to_client.push(c2.to_bytes());
                self.state = OutboundState::Opened;
                self.events.push_back(OutboundEvent::Opened);
                Ok(())
            }
            (
                OutboundState::Opened,
                flags::OTHER_CMD,
                [C::Destination(dest), C::FlowControlAck(ack)],
            ) => {
                match dest {
                    // The client's acknowledgement of the OUT channel, forwarded by the server.
                    ForwardDestination::OutProxy => {
                        if self
                            .channel
                            .is_some_and(|c| c.out_channel == ack.channel_cookie)
                        {
                            self.to_client.on_ack(ack);
                        }
                    }
                    // The inbound proxy's acknowledgement for the client: pass it on.
                    ForwardDestination::Client => self.rts_to_client.push(pdu),
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
            (OutboundState::Opened, _, _)
                if rts.destination() == Some(ForwardDestination::Client) =>
            {
                self.rts_to_client.push(pdu);
                Ok(())
            }
            _ => Err(ProtocolError::Unexpected {
                channel: SERVER_CHANNEL,
                state: self.state.name(),
                expected: "CONN/C1, RPC PDUs or PDUs for the client",
                got: rts.name().into(),
            }),
        }
    }

    /// The next bytes for the client's response body: RTS first, then RPC within the window.
    pub fn poll_transmit_to_client(&mut self, now: Instant) -> Option<Bytes> {
        let pdu = if let Some(pdu) = self.rts_to_client.pop() {
            pdu
        } else {
            let len = self.rpc_to_client.front_len()?;
            if self.state != OutboundState::Opened || !self.to_client.can_send(len) {
                return None;
            }
            let pdu = self.rpc_to_client.pop()?;
            self.to_client.on_sent(len);
            if let Some(channel) = self.channel
                && let Some(ack) = self.from_server.on_consumed(len, channel.out_channel)
            {
                self.to_server.push(build::flow_control_ack(ack).to_bytes());
            }
            pdu
        };
        self.last_client_write = Some(now);
        Some(pdu)
    }

    /// Whether anything is ready for the client right now.
    pub fn has_transmit_to_client(&self) -> bool {
        !self.rts_to_client.is_empty()
            || (self.state == OutboundState::Opened
                && self
                    .rpc_to_client
                    .front_len()
                    .is_some_and(|len| self.to_client.can_send(len)))
    }

    /// The next PDU for the server leg.
    pub fn poll_transmit_to_server(&mut self) -> Option<Bytes> {
        self.to_server.pop()
    }

    pub fn has_transmit_to_server(&self) -> bool {
        !self.to_server.is_empty()
    }

    /// Back-pressure: read more from the server only while this is true.
    pub fn wants_server_data(&self) -> bool {
        self.rpc_to_client.bytes() < self.config.receive_window as usize
    }

    /// Bytes queued for the client.
    pub fn queued_bytes(&self) -> usize {
        self.rpc_to_client.bytes() + self.rts_to_client.bytes()
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
        self.last_client_write.map(|t| t + self.ping_interval())
    }

    /// Time passed: ping the client if the channel has been idle (MS-RPCH 3.2.4.5.x).
    pub fn handle_timeout(&mut self, now: Instant) {
        let Some(deadline) = self.poll_timeout() else {
            return;
        };
        if now < deadline {
            return;
        }
        let ping = build::ping().to_bytes();
        self.ping_bytes_unreported += ping.len() as u32;
        self.pings_sent += 1;
        self.rts_to_client.push(ping);
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
}
