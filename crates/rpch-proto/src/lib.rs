//! Sans-IO core of rpcgate: the DCE/RPC connection-oriented wire format and the MS-RPCH
//! (RPC over HTTP v2) protocol roles, with no sockets, no async runtime and no clock reads.
//!
//! # Layout
//! - [`codec`]: bounds-checked [`codec::Reader`] and little-endian writers.
//! - [`error`]: [`DecodeError`] (bad bytes) and [`ProtocolError`] (good bytes, wrong moment).
//! - [`cookie`]: the 16-byte virtual-connection, channel and association-group cookies.
//! - [`pdu`]: the common header, stream framing, and the RPC PDUs (bind, request, ...).
//! - [`rts`]: RTS commands and PDUs with a constructor for each PDU of the spec's catalogue.
//!
//! The I/O shell (the `rpcgate` crate) reads bytes, frames them with [`pdu::split_pdu`], hands
//! whole PDUs to a role state machine, and writes whatever the machine asks it to write.

#![forbid(unsafe_code)]

pub mod codec;
pub mod cookie;
pub mod error;
pub mod pdu;
pub mod rts;

pub use cookie::Cookie;
pub use error::{DecodeError, ProtocolError};
