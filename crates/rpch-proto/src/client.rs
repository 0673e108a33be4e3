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
//! ```
//!
//! Driving it: write [`ClientVc::poll_transmit_out`] into the OUT request body and
//! [`ClientVc::poll_transmit_in`] into the IN request body; feed OUT body PDUs to
//! [`ClientVc::handle_out_pdu`]; queue RPC PDUs with [`ClientVc::send`] and take received ones
//! with [`ClientVc::poll_received`]; run [`ClientVc::poll_timeout`]/[`ClientVc::handle_timeout`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::cookie::Cookie;
use crate::error::ProtocolError;
use crate::flow::{ReceiveWindow, SendWindow};
use crate::outbox::Outbox;
use crate::pdu::header::is_rts;
use crate::rts::{ForwardDestination, RtsCommand as C, RtsPdu, build, flags};

/// Settings and identity of a client virtual connection.
#[derive(Debug, Clone, Copy)]
pub struct ClientConfig {
    pub vc: Cookie,
    pub in_channel: Cookie,
    pub out_channel: Cookie,
    pub association_group: Cookie,
    /// Our receive window for the OUT channel (CONN/A1).
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

/// The client state machine for one virtual connection.
#[derive(Debug)]
pub struct ClientVc {
    config: ClientConfig,
    state: ClientState,
    params: ConnectionParams,
    to_in_window: SendWindow,
    from_out: ReceiveWindow,
    out_initial: Option<Bytes>,
    rts_to_in: Outbox,
    rpc_to_in: Outbox,
    received: VecDeque<Bytes>,
    last_in_write: Option<Instant>,
    pings_received: u64,
}

const OUT: &str = "OUT channel";

impl ClientVc {
    /// A new virtual connection; CONN/A1 and CONN/B1 are queued at once.
    pub fn new(config: ClientConfig) -> Self {
        let a1 = build::conn_a1(config.vc, config.out_channel, config.receive_window);
        let b1 = build::conn_b1(
            config.vc,
            config.in_channel,
            config.in_channel_lifetime,
            config.keepalive_ms,
            config.association_group,
        );
        let mut rts_to_in = Outbox::default();
        rts_to_in.push(b1.to_bytes());
        Self {
            config,
            state: ClientState::AwaitA3,
            params: ConnectionParams::default(),
            to_in_window: SendWindow::new(0),
            from_out: ReceiveWindow::new(config.receive_window),
            out_initial: Some(a1.to_bytes()),
            rts_to_in,
            rpc_to_in: Outbox::default(),
            received: VecDeque::new(),
            last_in_write: None,
            pings_received: 0,
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

    /// Bytes for the OUT request body (only CONN/A1).
    pub fn poll_transmit_out(&mut self) -> Option<Bytes> {
        self.out_initial.take()
    }

    /// Bytes for the IN request body: RTS first, then RPC PDUs within the window once open.
    pub fn poll_transmit_in(&mut self, now: Instant) -> Option<Bytes> {
        let pdu = if let Some(pdu) = self.rts_to_in.pop() {
            pdu
        } else {
            if self.state != ClientState::Opened {
                return None;
            }
            let len = self.rpc_to_in.front_len()?;
            if !self.to_in_window.can_send(len) {
                return None;
            }
            self.to_in_window.on_sent(len);
            self.rpc_to_in.pop()?
        };
        self.last_in_write = Some(now);
        Some(pdu)
    }

    /// Whether [`ClientVc::poll_transmit_in`] would return something.
    pub fn has_transmit_in(&self) -> bool {
        !self.rts_to_in.is_empty()
            || (self.state == ClientState::Opened
                && self
                    .rpc_to_in
                    .front_len()
                    .is_some_and(|len| self.to_in_window.can_send(len)))
    }

    /// Queues an RPC PDU for the server.
    pub fn send(&mut self, pdu: Bytes) {
        self.rpc_to_in.push(pdu);
    }

    /// RPC bytes queued and not yet written (back-pressure for callers).
    pub fn queued_bytes(&self) -> usize {
        self.rpc_to_in.bytes()
    }

    /// A framed PDU from the OUT response body.
    pub fn handle_out_pdu(&mut self, pdu: Bytes) -> Result<(), ProtocolError> {
        if !is_rts(&pdu) {
            if self.state != ClientState::Opened {
                return Err(self.unexpected("CONN/A3 or CONN/C2", "an RPC PDU".into()));
            }
            self.from_out.on_received(pdu.len(), OUT)?;
            self.received.push_back(pdu);
            return Ok(());
        }
        let rts = RtsPdu::decode(&pdu)?;
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
                self.to_in_window = SendWindow::new(*window);
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
                [
                    C::Destination(ForwardDestination::Client),
                    C::FlowControlAck(ack),
                ],
            ) => {
                if ack.channel_cookie == self.config.in_channel {
                    self.to_in_window.on_ack(ack);
                }
                Ok(())
            }
            (state, _, _) => Err(self.unexpected(
                match state {
                    ClientState::AwaitA3 => "CONN/A3",
                    ClientState::AwaitC2 => "CONN/C2",
                    ClientState::Opened => "RPC PDUs, Ping or FlowControlAckWithDestination",
                },
                rts.name().into(),
            )),
        }
    }

    /// The next RPC PDU received from the server; taking it consumes window and may queue an
    /// acknowledgement to the outbound proxy on the IN channel.
    pub fn poll_received(&mut self) -> Option<Bytes> {
        let pdu = self.received.pop_front()?;
        if let Some(ack) = self
            .from_out
            .on_consumed(pdu.len(), self.config.out_channel)
        {
            self.rts_to_in.push(
                build::flow_control_ack_with_destination(ForwardDestination::OutProxy, ack)
                    .to_bytes(),
            );
        }
        Some(pdu)
    }

    /// Whether a received RPC PDU is waiting for [`ClientVc::poll_received`].
    pub fn has_received(&self) -> bool {
        !self.received.is_empty()
    }

    /// Back-pressure: read the OUT channel only while this is true.
    pub fn wants_out_data(&self) -> bool {
        self.from_out.pending() < u64::from(self.config.receive_window)
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
            self.rts_to_in.push(build::ping().to_bytes());
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
