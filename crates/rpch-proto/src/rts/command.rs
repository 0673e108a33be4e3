//! RTS commands (MS-RPCH 2.2.3.5): the typed body of every RTS PDU.
//!
//! Each command starts with a u32 CommandType and has a fixed size, except Padding (its own
//! conformance count) and ClientAddress (its address type). An unknown CommandType makes the
//! rest of the PDU unreadable, so it is an error rather than something to skip.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::codec::{Put, Reader};
use crate::cookie::Cookie;
use crate::error::DecodeError;

/// Largest Padding conformance count the spec allows (MS-RPCH 2.2.3.5.8).
pub const MAX_PADDING: u32 = 0xFFFF;

/// MS-RPCH 2.2.3.3: where a forwarded RTS PDU is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ForwardDestination {
    Client = 0,
    InProxy = 1,
    Server = 2,
    OutProxy = 3,
}

impl ForwardDestination {
    fn from_u32(v: u32) -> Result<Self, DecodeError> {
        Ok(match v {
            0 => Self::Client,
            1 => Self::InProxy,
            2 => Self::Server,
            3 => Self::OutProxy,
            other => return Err(DecodeError::BadDestination(other)),
        })
    }
}

/// MS-RPCH 2.2.3.4: the body of a FlowControlAck command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowControlAck {
    /// Total RPC bytes received on the acknowledged channel instance.
    pub bytes_received: u32,
    /// The receiver's free window when it sent the ack.
    pub available_window: u32,
    /// Cookie of the channel being acknowledged.
    pub channel_cookie: Cookie,
}

/// One RTS command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtsCommand {
    /// 0x00, 2.2.3.5.1: receive window in bytes.
    ReceiveWindowSize(u32),
    /// 0x01, 2.2.3.5.2.
    FlowControlAck(FlowControlAck),
    /// 0x02, 2.2.3.5.3: milliseconds.
    ConnectionTimeout(u32),
    /// 0x03, 2.2.3.5.4: meaning depends on position.
    Cookie(Cookie),
    /// 0x04, 2.2.3.5.5: bytes.
    ChannelLifetime(u32),
    /// 0x05, 2.2.3.5.6: milliseconds, 0 meaning 300 000.
    ClientKeepalive(u32),
    /// 0x06, 2.2.3.5.7.
    Version(u32),
    /// 0x07, 2.2.3.5.8.
    Empty,
    /// 0x08, 2.2.3.5.9: this many (ignored) padding bytes.
    Padding(u32),
    /// 0x09, 2.2.3.5.10.
    NegativeAnce,
    /// 0x0A, 2.2.3.5.11.
    Ance,
    /// 0x0B, 2.2.3.5.12: the client's address as seen by the inbound proxy.
    ClientAddress(IpAddr),
    /// 0x0C, 2.2.3.5.13.
    AssociationGroupId(Cookie),
    /// 0x0D, 2.2.3.5.14.
    Destination(ForwardDestination),
    /// 0x0E, 2.2.3.5.15: ping bytes the outbound proxy sent to the client.
    PingTrafficSentNotify(u32),
}

impl RtsCommand {
    /// The CommandType value.
    pub fn command_type(&self) -> u32 {
        match self {
            Self::ReceiveWindowSize(_) => 0x00,
            Self::FlowControlAck(_) => 0x01,
            Self::ConnectionTimeout(_) => 0x02,
            Self::Cookie(_) => 0x03,
            Self::ChannelLifetime(_) => 0x04,
            Self::ClientKeepalive(_) => 0x05,
            Self::Version(_) => 0x06,
            Self::Empty => 0x07,
            Self::Padding(_) => 0x08,
            Self::NegativeAnce => 0x09,
            Self::Ance => 0x0A,
            Self::ClientAddress(_) => 0x0B,
            Self::AssociationGroupId(_) => 0x0C,
            Self::Destination(_) => 0x0D,
            Self::PingTrafficSentNotify(_) => 0x0E,
        }
    }

    /// Encoded size in bytes, CommandType included.
    pub fn encoded_len(&self) -> usize {
        match self {
            Self::FlowControlAck(_) => 28,
            Self::Cookie(_) | Self::AssociationGroupId(_) => 20,
            Self::Empty | Self::NegativeAnce | Self::Ance => 4,
            Self::Padding(n) => 8 + *n as usize,
            Self::ClientAddress(IpAddr::V4(_)) => 24,
            Self::ClientAddress(IpAddr::V6(_)) => 36,
            _ => 8,
        }
    }

    /// Reads one command.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let command_type = r.u32("RTS CommandType")?;
        Ok(match command_type {
            0x00 => Self::ReceiveWindowSize(r.u32("ReceiveWindowSize")?),
            0x01 => Self::FlowControlAck(FlowControlAck {
                bytes_received: r.u32("FlowControlAck BytesReceived")?,
                available_window: r.u32("FlowControlAck AvailableWindow")?,
                channel_cookie: Cookie(r.array("FlowControlAck ChannelCookie")?),
            }),
            0x02 => Self::ConnectionTimeout(r.u32("ConnectionTimeout")?),
            0x03 => Self::Cookie(Cookie(r.array("Cookie")?)),
            0x04 => Self::ChannelLifetime(r.u32("ChannelLifetime")?),
            0x05 => Self::ClientKeepalive(r.u32("ClientKeepalive")?),
            0x06 => Self::Version(r.u32("Version")?),
            0x07 => Self::Empty,
            0x08 => {
                let count = r.u32("Padding ConformanceCount")?;
                if count > MAX_PADDING {
                    return Err(DecodeError::BadValue {
                        what: "Padding ConformanceCount",
                        value: count.into(),
                    });
                }
                r.skip(count as usize, "Padding bytes")?;
                Self::Padding(count)
            }
            0x09 => Self::NegativeAnce,
            0x0A => Self::Ance,
            0x0B => {
                // Parse by length only: Windows puts the IPv4 address 4 bytes later than the
                // spec layout (ms-rpch-notes 1.4), so the address read here may be zero.
                let address_type = r.u32("ClientAddress AddressType")?;
                let address = match address_type {
                    0 => IpAddr::V4(Ipv4Addr::from(r.array::<4>("ClientAddress IPv4")?)),
                    1 => IpAddr::V6(Ipv6Addr::from(r.array::<16>("ClientAddress IPv6")?)),
                    other => return Err(DecodeError::BadAddressType(other)),
                };
                r.skip(12, "ClientAddress padding")?;
                Self::ClientAddress(address)
            }
            0x0C => Self::AssociationGroupId(Cookie(r.array("AssociationGroupId")?)),
            0x0D => Self::Destination(ForwardDestination::from_u32(r.u32("Destination")?)?),
            0x0E => Self::PingTrafficSentNotify(r.u32("PingTrafficSentNotify")?),
            other => return Err(DecodeError::UnknownRtsCommand(other)),
        })
    }

    /// Appends the encoded command.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.put_u32(self.command_type());
        match self {
            Self::ReceiveWindowSize(v)
            | Self::ConnectionTimeout(v)
            | Self::ChannelLifetime(v)
            | Self::ClientKeepalive(v)
            | Self::Version(v)
            | Self::PingTrafficSentNotify(v) => out.put_u32(*v),
            Self::FlowControlAck(ack) => {
                out.put_u32(ack.bytes_received);
                out.put_u32(ack.available_window);
                out.put_bytes(ack.channel_cookie.as_bytes());
            }
            Self::Cookie(c) | Self::AssociationGroupId(c) => out.put_bytes(c.as_bytes()),
            Self::Empty | Self::NegativeAnce | Self::Ance => {}
            Self::Padding(n) => {
                out.put_u32(*n);
                out.resize(out.len() + *n as usize, 0);
            }
            Self::ClientAddress(IpAddr::V4(a)) => {
                out.put_u32(0);
                out.put_bytes(&a.octets());
                out.put_bytes(&[0; 12]);
            }
            Self::ClientAddress(IpAddr::V6(a)) => {
                out.put_u32(1);
                out.put_bytes(&a.octets());
                out.put_bytes(&[0; 12]);
            }
            Self::Destination(d) => out.put_u32(*d as u32),
        }
    }
}
