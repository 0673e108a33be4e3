//! Classifying the first PDU on a new server connection (MS-RPCH 3.2.5.5.1): which leg of
//! which virtual connection it is, or RPC over HTTP v1 when it is not RTS at all.

use std::net::IpAddr;

use crate::cookie::Cookie;
use crate::error::ProtocolError;
use crate::pdu::header::is_rts;
use crate::rts::{RtsCommand as C, RtsPdu, flags};

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

/// IN_R1/A2: a successor IN channel arriving through another inbound proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InR1A2 {
    pub vc: Cookie,
    pub predecessor: Cookie,
    pub successor: Cookie,
    pub proxy_window: u32,
    pub connection_timeout_ms: u32,
}

/// OUT_R1/A4: a successor OUT channel arriving through another outbound proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutR1A4 {
    pub vc: Cookie,
    pub predecessor: Cookie,
    pub successor: Cookie,
    pub channel_lifetime: u32,
    pub proxy_window: u32,
    pub connection_timeout_ms: u32,
}

/// What the first PDU on a new server connection says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FirstPdu {
    /// An OUT leg of a new virtual connection.
    ConnA2(ConnA2),
    /// An IN leg of a new virtual connection.
    ConnB2(ConnB2),
    /// A successor IN leg (channel recycling across inbound proxies).
    InR1A2(InR1A2),
    /// A successor OUT leg (channel recycling across outbound proxies).
    OutR1A4(OutR1A4),
    /// Not RTS: RPC over HTTP v1, a plain connection-oriented RPC stream (MS-RPCH 3.1).
    PlainRpc,
}

impl FirstPdu {
    /// The virtual connection the leg belongs to.
    pub fn vc(&self) -> Option<Cookie> {
        match self {
            Self::ConnA2(a) => Some(a.vc),
            Self::ConnB2(b) => Some(b.vc),
            Self::InR1A2(a) => Some(a.vc),
            Self::OutR1A4(a) => Some(a.vc),
            Self::PlainRpc => None,
        }
    }

    /// The PDU's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Self::ConnA2(_) => "CONN/A2",
            Self::ConnB2(_) => "CONN/B2",
            Self::InR1A2(_) => "IN_R1/A2",
            Self::OutR1A4(_) => "OUT_R1/A4",
            Self::PlainRpc => "an RPC PDU (RPC over HTTP v1)",
        }
    }
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
        (
            0x000C,
            [
                C::Version(_),
                C::Cookie(vc),
                C::Cookie(predecessor),
                C::Cookie(successor),
                C::ReceiveWindowSize(proxy_window),
                C::ConnectionTimeout(connection_timeout_ms),
            ],
        ) => Ok(FirstPdu::InR1A2(InR1A2 {
            vc: *vc,
            predecessor: *predecessor,
            successor: *successor,
            proxy_window: *proxy_window,
            connection_timeout_ms: *connection_timeout_ms,
        })),
        (
            0x0014,
            [
                C::Version(_),
                C::Cookie(vc),
                C::Cookie(predecessor),
                C::Cookie(successor),
                C::ChannelLifetime(channel_lifetime),
                C::ReceiveWindowSize(proxy_window),
                C::ConnectionTimeout(connection_timeout_ms),
            ],
        ) => Ok(FirstPdu::OutR1A4(OutR1A4 {
            vc: *vc,
            predecessor: *predecessor,
            successor: *successor,
            channel_lifetime: *channel_lifetime,
            proxy_window: *proxy_window,
            connection_timeout_ms: *connection_timeout_ms,
        })),
        _ => Err(ProtocolError::Unexpected {
            channel: "server leg",
            state: "Open_Start",
            expected: "CONN/A2, CONN/B2, IN_R1/A2 or OUT_R1/A4",
            got: rts.name().into(),
        }),
    }
}
