//! RTS PDUs (MS-RPCH 2.2.4): the 20-byte RTS header, its command list, and a constructor for
//! every PDU of the protocol's catalogue.
//!
//! A PDU is identified by its Flags, its ordered command types and the channel it arrives on;
//! several share a shape (`[Cookie]` is IN_R1/A5, IN_R1/A6, IN_R2/A2, IN_R2/A5 and OUT_R2/A4),
//! so the role state machines match on `(flags, commands)` where they know the context, and
//! [`RtsPdu::name`] gives the best context-free name for logs.

use std::net::IpAddr;

use bytes::Bytes;

use super::command::{FlowControlAck, ForwardDestination, RtsCommand};
use crate::codec::{Put, Reader};
use crate::cookie::Cookie;
use crate::error::DecodeError;
use crate::pdu::header::{CommonHeader, PFC_FIRST_FRAG, PFC_LAST_FRAG, PacketType};

/// Size of the RTS header: common header + Flags + NumberOfCommands.
pub const RTS_HEADER_LEN: usize = 20;

/// RTS header flag values (MS-RPCH 2.2.3.6.1).
pub mod flags {
    pub const NONE: u16 = 0x0000;
    pub const PING: u16 = 0x0001;
    pub const OTHER_CMD: u16 = 0x0002;
    pub const RECYCLE_CHANNEL: u16 = 0x0004;
    pub const IN_CHANNEL: u16 = 0x0008;
    pub const OUT_CHANNEL: u16 = 0x0010;
    pub const EOF: u16 = 0x0020;
    pub const ECHO: u16 = 0x0040;
}

/// Protocol version rpcgate speaks and sends in Version commands.
pub const RTS_VERSION: u32 = 1;

/// A decoded RTS PDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtsPdu {
    pub flags: u16,
    pub commands: Vec<RtsCommand>,
}

use RtsCommand as C;

impl RtsPdu {
    pub fn new(flags: u16, commands: Vec<RtsCommand>) -> Self {
        Self { flags, commands }
    }

    /// Decodes a whole, framed RTS PDU. Every byte must be accounted for.
    pub fn decode(pdu: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(pdu);
        let header = CommonHeader::read(&mut r)?;
        if header.ptype != PacketType::Rts {
            return Err(DecodeError::WrongPacketType {
                expected: "RTS",
                got: header.ptype.to_u8(),
            });
        }
        let frag_length = usize::from(header.frag_length);
        if frag_length < RTS_HEADER_LEN || frag_length > pdu.len() || header.auth_length != 0 {
            return Err(DecodeError::BadFragLength {
                frag_length: header.frag_length,
                what: "an RTS PDU",
            });
        }
        let mut r = Reader::new(pdu.get(..frag_length).unwrap_or(pdu));
        r.skip(16, "RTS common header")?;
        let flags = r.u16("RTS Flags")?;
        let count = r.u16("RTS NumberOfCommands")?;
        // Each command is at least 4 bytes, which bounds the allocation by the input size.
        if usize::from(count) * 4 > r.remaining() {
            return Err(DecodeError::BadCount {
                what: "RTS NumberOfCommands",
                count: count.into(),
                available: r.remaining(),
            });
        }
        let mut commands = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            commands.push(RtsCommand::read(&mut r)?);
        }
        if r.remaining() != 0 {
            return Err(DecodeError::TrailingBytes {
                what: "RTS command",
                extra: r.remaining(),
            });
        }
        Ok(Self { flags, commands })
    }

    /// Encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        RTS_HEADER_LEN
            + self
                .commands
                .iter()
                .map(RtsCommand::encoded_len)
                .sum::<usize>()
    }

    /// Encodes the PDU (call_id 0, little-endian, FIRST|LAST).
    pub fn encode(&self) -> Vec<u8> {
        let len = self.encoded_len();
        let mut out = Vec::with_capacity(len);
        let frag_length = u16::try_from(len).unwrap_or(u16::MAX);
        CommonHeader::new(
            PacketType::Rts,
            PFC_FIRST_FRAG | PFC_LAST_FRAG,
            frag_length,
            0,
        )
        .write(&mut out);
        out.put_u16(self.flags);
        out.put_u16(u16::try_from(self.commands.len()).unwrap_or(u16::MAX));
        for command in &self.commands {
            command.write(&mut out);
        }
        out
    }

    /// Encodes into `Bytes`, the form the role state machines queue.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(self.encode())
    }

    /// The Destination command, if the PDU carries one (it is always the first command in
    /// the PDUs that are forwarded).
    pub fn destination(&self) -> Option<ForwardDestination> {
        self.commands.iter().find_map(|c| match c {
            C::Destination(d) => Some(*d),
            _ => None,
        })
    }

    /// The flow-control acknowledgement carried by a FlowControlAck(WithDestination) PDU.
    pub fn flow_control_ack(&self) -> Option<FlowControlAck> {
        match (self.flags, self.commands.as_slice()) {
            (flags::OTHER_CMD, [C::FlowControlAck(ack)])
            | (flags::OTHER_CMD, [C::Destination(_), C::FlowControlAck(ack)]) => Some(*ack),
            _ => None,
        }
    }

    pub fn is_ping(&self) -> bool {
        self.flags & flags::PING != 0 && self.commands.is_empty()
    }

    /// A context-free name for logs ("CONN/B1", "Ping", "FlowControlAckWithDestination"...).
    pub fn name(&self) -> &'static str {
        use flags::*;
        match (self.flags, self.commands.as_slice()) {
            (
                NONE,
                [
                    C::Version(_),
                    C::Cookie(_),
                    C::Cookie(_),
                    C::ReceiveWindowSize(_),
                ],
            ) => "CONN/A1",
            (
                OUT_CHANNEL,
                [
                    C::Version(_),
                    C::Cookie(_),
                    C::Cookie(_),
                    C::ChannelLifetime(_),
                    C::ReceiveWindowSize(_),
                ],
            ) => "CONN/A2",
            (NONE, [C::ConnectionTimeout(_)]) => "CONN/A3",
            (
                NONE,
                [
                    C::Version(_),
                    C::Cookie(_),
                    C::Cookie(_),
                    C::ChannelLifetime(_),
                    C::ClientKeepalive(_),
                    C::AssociationGroupId(_),
                ],
            ) => "CONN/B1",
            (
                IN_CHANNEL,
                [
                    C::Version(_),
                    C::Cookie(_),
                    C::Cookie(_),
                    C::ReceiveWindowSize(_),
                    C::ConnectionTimeout(_),
                    C::AssociationGroupId(_),
                    C::ClientAddress(_),
                ],
            ) => "CONN/B2",
            (NONE, [C::ReceiveWindowSize(_), C::Version(_)]) => "CONN/B3",
            (
                NONE,
                [
                    C::Version(_),
                    C::ReceiveWindowSize(_),
                    C::ConnectionTimeout(_),
                ],
            ) => "CONN/C1 or CONN/C2",
            (RECYCLE_CHANNEL, [C::Version(_), C::Cookie(_), C::Cookie(_), C::Cookie(_)]) => {
                "IN_R1/A1 (IN_R2/A1)"
            }
            (
                0x000C,
                [
                    C::Version(_),
                    C::Cookie(_),
                    C::Cookie(_),
                    C::Cookie(_),
                    C::ReceiveWindowSize(_),
                    C::ConnectionTimeout(_),
                ],
            ) => "IN_R1/A2",
            (
                NONE,
                [
                    C::Destination(_),
                    C::Version(_),
                    C::ReceiveWindowSize(_),
                    C::ConnectionTimeout(_),
                ],
            ) => "IN_R1/A3 or IN_R1/A4",
            (NONE, [C::Cookie(_)]) => "IN_R1/A5, IN_R1/A6, IN_R2/A2, IN_R2/A5 or OUT_R2/A4",
            (NONE, [C::Empty]) => "IN_R1/B1",
            (NONE, [C::ReceiveWindowSize(_)]) => "IN_R1/B2",
            (NONE, [C::Destination(_)]) => "IN_R2/A3 or IN_R2/A4",
            (RECYCLE_CHANNEL, [C::Destination(_)]) => "OUT_R1/A1 or OUT_R1/A2",
            (
                RECYCLE_CHANNEL,
                [
                    C::Version(_),
                    C::Cookie(_),
                    C::Cookie(_),
                    C::Cookie(_),
                    C::ReceiveWindowSize(_),
                ],
            ) => "OUT_R1/A3 (OUT_R2/A3)",
            (
                0x0014,
                [
                    C::Version(_),
                    C::Cookie(_),
                    C::Cookie(_),
                    C::Cookie(_),
                    C::ChannelLifetime(_),
                    C::ReceiveWindowSize(_),
                    C::ConnectionTimeout(_),
                ],
            ) => "OUT_R1/A4",
            (OUT_CHANNEL, [C::Destination(_), C::Version(_), C::ConnectionTimeout(_)]) => {
                "OUT_R1/A5 or OUT_R1/A6"
            }
            (OUT_CHANNEL, [C::Destination(_), C::Cookie(_)]) => "OUT_R1/A7, OUT_R1/A8 or OUT_R2/A8",
            (OUT_CHANNEL, [C::Destination(_), C::Cookie(_), C::Version(_)]) => "OUT_R2/A7",
            (NONE, [C::Ance]) => "ANCE (OUT_R1/A9..A11, OUT_R2/B1)",
            (NONE, [C::Destination(_), C::Ance]) => "OUT_R2/A5 or OUT_R2/A6",
            (NONE, [C::NegativeAnce]) => "OUT_R2/B2",
            (EOF, [C::Ance]) => "OUT_R2/B3",
            (PING, [C::Empty] | [C::Padding(_)]) => "OUT_R2/C1",
            (OTHER_CMD, [C::ClientKeepalive(_)]) => "Keep-Alive",
            (OTHER_CMD, [C::PingTrafficSentNotify(_)]) => "PingTrafficSentNotify",
            (ECHO, []) => "Echo",
            (PING, []) => "Ping",
            (OTHER_CMD, [C::FlowControlAck(_)]) => "FlowControlAck",
            (OTHER_CMD, [C::Destination(_), C::FlowControlAck(_)]) => {
                "FlowControlAckWithDestination"
            }
            _ => "unrecognised RTS PDU",
        }
    }
}

/// Constructors for each PDU of MS-RPCH 2.2.4, named as in the spec.
pub mod build {
    use super::*;
    use flags::*;

    /// 2.2.4.2 CONN/A1: client -> outbound proxy, the first bytes of an OUT channel.
    pub fn conn_a1(vc: Cookie, out_channel: Cookie, client_window: u32) -> RtsPdu {
        RtsPdu::new(
            NONE,
            vec![
                C::Version(RTS_VERSION),
                C::Cookie(vc),
                C::Cookie(out_channel),
                C::ReceiveWindowSize(client_window),
            ],
        )
    }

    /// 2.2.4.3 CONN/A2: outbound proxy -> server.
    pub fn conn_a2(
        version: u32,
        vc: Cookie,
        out_channel: Cookie,
        channel_lifetime: u32,
        proxy_window: u32,
    ) -> RtsPdu {
        RtsPdu::new(
            OUT_CHANNEL,
            vec![
                C::Version(version),
                C::Cookie(vc),
                C::Cookie(out_channel),
                C::ChannelLifetime(channel_lifetime),
                C::ReceiveWindowSize(proxy_window),
            ],
        )
    }

    /// 2.2.4.4 CONN/A3: outbound proxy -> client, right after the 200 header.
    pub fn conn_a3(connection_timeout_ms: u32) -> RtsPdu {
        RtsPdu::new(NONE, vec![C::ConnectionTimeout(connection_timeout_ms)])
    }

    /// 2.2.4.5 CONN/B1: client -> inbound proxy, the first bytes of an IN channel.
    pub fn conn_b1(
        vc: Cookie,
        in_channel: Cookie,
        channel_lifetime: u32,
        client_keepalive_ms: u32,
        association_group: Cookie,
    ) -> RtsPdu {
        RtsPdu::new(
            NONE,
            vec![
                C::Version(RTS_VERSION),
                C::Cookie(vc),
                C::Cookie(in_channel),
                C::ChannelLifetime(channel_lifetime),
                C::ClientKeepalive(client_keepalive_ms),
                C::AssociationGroupId(association_group),
            ],
        )
    }

    /// 2.2.4.6 CONN/B2: inbound proxy -> server.
    pub fn conn_b2(
        version: u32,
        vc: Cookie,
        in_channel: Cookie,
        proxy_window: u32,
        connection_timeout_ms: u32,
        association_group: Cookie,
        client_address: IpAddr,
    ) -> RtsPdu {
        RtsPdu::new(
            IN_CHANNEL,
            vec![
                C::Version(version),
                C::Cookie(vc),
                C::Cookie(in_channel),
                C::ReceiveWindowSize(proxy_window),
                C::ConnectionTimeout(connection_timeout_ms),
                C::AssociationGroupId(association_group),
                C::ClientAddress(client_address),
            ],
        )
    }

    /// 2.2.4.7 CONN/B3: server -> inbound proxy.
    pub fn conn_b3(server_window: u32, version: u32) -> RtsPdu {
        RtsPdu::new(
            NONE,
            vec![C::ReceiveWindowSize(server_window), C::Version(version)],
        )
    }

    /// 2.2.4.8 CONN/C1 (server -> outbound proxy) and 2.2.4.9 CONN/C2 (outbound proxy ->
    /// client) share one layout.
    pub fn conn_c1_c2(version: u32, window: u32, connection_timeout_ms: u32) -> RtsPdu {
        RtsPdu::new(
            NONE,
            vec![
                C::Version(version),
                C::ReceiveWindowSize(window),
                C::ConnectionTimeout(connection_timeout_ms),
            ],
        )
    }

    /// 2.2.4.10 IN_R1/A1 = 2.2.4.21 IN_R2/A1: client -> inbound proxy on a successor IN channel.
    pub fn in_r1_a1(vc: Cookie, predecessor: Cookie, successor: Cookie) -> RtsPdu {
        RtsPdu::new(
            RECYCLE_CHANNEL,
            vec![
                C::Version(RTS_VERSION),
                C::Cookie(vc),
                C::Cookie(predecessor),
                C::Cookie(successor),
            ],
        )
    }

    /// 2.2.4.11 IN_R1/A2: successor inbound proxy -> server on a new leg.
    pub fn in_r1_a2(
        vc: Cookie,
        predecessor: Cookie,
        successor: Cookie,
        proxy_window: u32,
        connection_timeout_ms: u32,
    ) -> RtsPdu {
        RtsPdu::new(
            IN_CHANNEL | RECYCLE_CHANNEL,
            vec![
                C::Version(RTS_VERSION),
                C::Cookie(vc),
                C::Cookie(predecessor),
                C::Cookie(successor),
                C::ReceiveWindowSize(proxy_window),
                C::ConnectionTimeout(connection_timeout_ms),
            ],
        )
    }

    /// 2.2.4.12 IN_R1/A3 (server -> outbound proxy) = 2.2.4.13 IN_R1/A4 (forwarded to client).
    pub fn in_r1_a3(proxy_window: u32, connection_timeout_ms: u32) -> RtsPdu {
        RtsPdu::new(
            NONE,
            vec![
                C::Destination(ForwardDestination::Client),
                C::Version(RTS_VERSION),
                C::ReceiveWindowSize(proxy_window),
                C::ConnectionTimeout(connection_timeout_ms),
            ],
        )
    }

    /// The one-Cookie PDUs: IN_R1/A5, IN_R1/A6, IN_R2/A2, IN_R2/A5 and OUT_R2/A4.
    pub fn successor_cookie(successor: Cookie) -> RtsPdu {
        RtsPdu::new(NONE, vec![C::Cookie(successor)])
    }

    /// 2.2.4.16 IN_R1/B1: predecessor inbound proxy -> server, its last PDU.
    pub fn in_r1_b1() -> RtsPdu {
        RtsPdu::new(NONE, vec![C::Empty])
    }

    /// 2.2.4.17 IN_R1/B2: server -> successor inbound proxy.
    pub fn in_r1_b2(server_window: u32) -> RtsPdu {
        RtsPdu::new(NONE, vec![C::ReceiveWindowSize(server_window)])
    }

    /// 2.2.4.23 IN_R2/A3 (server -> outbound proxy) = IN_R2/A4 (forwarded to client).
    pub fn in_r2_a3() -> RtsPdu {
        RtsPdu::new(NONE, vec![C::Destination(ForwardDestination::Client)])
    }

    /// 2.2.4.26 OUT_R1/A1 = OUT_R2/A1 (server -> outbound proxy) = A2 (forwarded to client).
    pub fn out_r1_a1() -> RtsPdu {
        RtsPdu::new(
            RECYCLE_CHANNEL,
            vec![C::Destination(ForwardDestination::Client)],
        )
    }

    /// 2.2.4.28 OUT_R1/A3 = OUT_R2/A3: client -> outbound proxy on a successor OUT channel.
    pub fn out_r1_a3(
        vc: Cookie,
        predecessor: Cookie,
        successor: Cookie,
        client_window: u32,
    ) -> RtsPdu {
        RtsPdu::new(
            RECYCLE_CHANNEL,
            vec![
                C::Version(RTS_VERSION),
                C::Cookie(vc),
                C::Cookie(predecessor),
                C::Cookie(successor),
                C::ReceiveWindowSize(client_window),
            ],
        )
    }

    /// 2.2.4.29 OUT_R1/A4: successor outbound proxy -> server on a new leg.
    pub fn out_r1_a4(
        vc: Cookie,
        predecessor: Cookie,
        successor: Cookie,
        channel_lifetime: u32,
        proxy_window: u32,
        connection_timeout_ms: u32,
    ) -> RtsPdu {
        RtsPdu::new(
            RECYCLE_CHANNEL | OUT_CHANNEL,
            vec![
                C::Version(RTS_VERSION),
                C::Cookie(vc),
                C::Cookie(predecessor),
                C::Cookie(successor),
                C::ChannelLifetime(channel_lifetime),
                C::ReceiveWindowSize(proxy_window),
                C::ConnectionTimeout(connection_timeout_ms),
            ],
        )
    }

    /// 2.2.4.30 OUT_R1/A5 (server -> predecessor outbound proxy) = A6 (forwarded to client).
    pub fn out_r1_a5(connection_timeout_ms: u32) -> RtsPdu {
        RtsPdu::new(
            OUT_CHANNEL,
            vec![
                C::Destination(ForwardDestination::Client),
                C::Version(RTS_VERSION),
                C::ConnectionTimeout(connection_timeout_ms),
            ],
        )
    }

    /// 2.2.4.32 OUT_R1/A7 (client -> inbound proxy) = A8 and OUT_R2/A8 (forwarded to server).
    pub fn out_r1_a7(successor: Cookie) -> RtsPdu {
        RtsPdu::new(
            OUT_CHANNEL,
            vec![
                C::Destination(ForwardDestination::Server),
                C::Cookie(successor),
            ],
        )
    }

    /// 2.2.4.40 OUT_R2/A7: client -> inbound proxy (carries a Version that A8 drops).
    pub fn out_r2_a7(successor: Cookie) -> RtsPdu {
        RtsPdu::new(
            OUT_CHANNEL,
            vec![
                C::Destination(ForwardDestination::Server),
                C::Cookie(successor),
                C::Version(RTS_VERSION),
            ],
        )
    }

    /// ANCE alone: OUT_R1/A9, A10, A11 and OUT_R2/B1.
    pub fn ance() -> RtsPdu {
        RtsPdu::new(NONE, vec![C::Ance])
    }

    /// 2.2.4.38 OUT_R2/A5 (server -> outbound proxy) = A6 (forwarded to client).
    pub fn out_r2_a5() -> RtsPdu {
        RtsPdu::new(
            NONE,
            vec![C::Destination(ForwardDestination::Client), C::Ance],
        )
    }

    /// 2.2.4.43 OUT_R2/B2: server -> outbound proxy, successor refused.
    pub fn out_r2_b2() -> RtsPdu {
        RtsPdu::new(NONE, vec![C::NegativeAnce])
    }

    /// 2.2.4.44 OUT_R2/B3: the last PDU on a predecessor OUT channel.
    pub fn out_r2_b3() -> RtsPdu {
        RtsPdu::new(EOF, vec![C::Ance])
    }

    /// 2.2.4.45 OUT_R2/C1: client -> outbound proxy on the successor OUT channel.
    pub fn out_r2_c1() -> RtsPdu {
        RtsPdu::new(PING, vec![C::Empty])
    }

    /// 2.2.4.46 Keep-Alive: client -> inbound proxy.
    pub fn keep_alive(client_keepalive_ms: u32) -> RtsPdu {
        RtsPdu::new(OTHER_CMD, vec![C::ClientKeepalive(client_keepalive_ms)])
    }

    /// 2.2.4.47 Ping Traffic Sent Notify: outbound proxy -> server.
    pub fn ping_traffic_sent_notify(bytes: u32) -> RtsPdu {
        RtsPdu::new(OTHER_CMD, vec![C::PingTrafficSentNotify(bytes)])
    }

    /// 2.2.4.48 Echo: the body of an echo response.
    pub fn echo() -> RtsPdu {
        RtsPdu::new(ECHO, vec![])
    }

    /// 2.2.4.49 Ping.
    pub fn ping() -> RtsPdu {
        RtsPdu::new(PING, vec![])
    }

    /// 2.2.4.50 FlowControlAck: a direct acknowledgement on a proxy <-> server leg.
    pub fn flow_control_ack(ack: FlowControlAck) -> RtsPdu {
        RtsPdu::new(OTHER_CMD, vec![C::FlowControlAck(ack)])
    }

    /// 2.2.4.51 FlowControlAckWithDestination: an acknowledgement forwarded to `destination`.
    pub fn flow_control_ack_with_destination(
        destination: ForwardDestination,
        ack: FlowControlAck,
    ) -> RtsPdu {
        RtsPdu::new(
            OTHER_CMD,
            vec![C::Destination(destination), C::FlowControlAck(ack)],
        )
    }
}
