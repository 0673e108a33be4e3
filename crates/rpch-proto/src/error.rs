//! Error types of the protocol core.
//!
//! [`DecodeError`] is what a codec returns when bytes from the network do not form a valid PDU;
//! the peer that sent them is at fault. [`ProtocolError`] is what a role state machine returns
//! when a well-formed PDU arrives where the protocol does not allow it. Both carry enough
//! context (what was expected, what arrived) for a log line an administrator can act on.

use thiserror::Error;

/// Bytes that do not decode as the PDU they claim to be.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the field needs.
    #[error("truncated {what}: needed {needed} bytes, {available} available")]
    Truncated {
        what: &'static str,
        needed: usize,
        available: usize,
    },
    /// `rpc_vers` / `rpc_vers_minor` are not 5.0 or 5.1.
    #[error("unsupported DCE/RPC version {major}.{minor} (expected 5.0 or 5.1)")]
    BadVersion { major: u8, minor: u8 },
    /// The data representation is not one this implementation reads.
    #[error(
        "unsupported data representation {drep:02x?} (only little-endian ASCII/IEEE is accepted)"
    )]
    BadDataRepresentation { drep: [u8; 4] },
    /// `frag_length` is smaller than the header or inconsistent with the PDU's parts.
    #[error("invalid frag_length {frag_length} for {what}")]
    BadFragLength {
        frag_length: u16,
        what: &'static str,
    },
    /// `auth_length` does not fit inside the fragment.
    #[error("auth_length {auth_length} does not fit in a {frag_length}-byte fragment")]
    BadAuthLength { auth_length: u16, frag_length: u16 },
    /// A PTYPE outside the connection-oriented set.
    #[error("unknown PDU type {0}")]
    UnknownPacketType(u8),
    /// A PDU of another type was handed to a decoder.
    #[error("expected a {expected} PDU, got PTYPE {got}")]
    WrongPacketType { expected: &'static str, got: u8 },
    /// An RTS command type outside MS-RPCH 2.2.3.5; its length is unknowable, so the PDU is lost.
    #[error("unknown RTS command type {0:#x}")]
    UnknownRtsCommand(u32),
    /// A ClientAddress command with an address type other than IPv4 (0) or IPv6 (1).
    #[error("unknown RTS ClientAddress type {0}")]
    BadAddressType(u32),
    /// A Destination command with a value outside FDClient..FDOutProxy.
    #[error("unknown RTS forward destination {0}")]
    BadDestination(u32),
    /// The commands of an RTS PDU do not add up to its frag_length.
    #[error("{extra} unexpected bytes after the last {what}")]
    TrailingBytes { what: &'static str, extra: usize },
    /// A count field that cannot be right for the space available.
    #[error("{what} count {count} exceeds what {available} bytes can hold")]
    BadCount {
        what: &'static str,
        count: u32,
        available: usize,
    },
    /// A value outside the range the field allows.
    #[error("invalid {what}: {value}")]
    BadValue { what: &'static str, value: u64 },
}

/// A PDU that is well formed but not allowed in the current state of a role.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ProtocolError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The PDU is valid on the wire but not expected here.
    #[error("unexpected {got} in state {state} on the {channel} (expected {expected})")]
    Unexpected {
        channel: &'static str,
        state: &'static str,
        expected: &'static str,
        got: String,
    },
    /// A cookie that does not belong to this virtual connection or channel.
    #[error("{what} cookie {got} does not match {expected}")]
    CookieMismatch {
        what: &'static str,
        expected: String,
        got: String,
    },
    /// The peer sent more RPC bytes than the receive window it was given.
    #[error(
        "flow control violated on the {channel}: peer may send up to {limit} bytes in total, sent {received}"
    )]
    WindowExceeded {
        channel: &'static str,
        limit: u64,
        received: u64,
    },
    /// A timer ran out.
    #[error("timed out waiting for {what}")]
    Timeout { what: &'static str },
    /// A bound on buffered data or on some count was reached.
    #[error("limit reached: {what}")]
    LimitExceeded { what: &'static str },
}
