//! Sans-IO core of rpcgate: the DCE/RPC connection-oriented wire format and the MS-RPCH
//! (RPC over HTTP v2) protocol roles, with no sockets, no async runtime and no clock reads.
//!
//! # Layout
//! - [`codec`]: bounds-checked [`codec::Reader`] and little-endian writers.
//! - [`error`]: [`DecodeError`] (bad bytes) and [`ProtocolError`] (good bytes, wrong moment).
//! - [`cookie`]: the 16-byte virtual-connection, channel and association-group cookies.
//! - [`pdu`]: the common header, stream framing, and the RPC PDUs (bind, request, ...).
//! - [`rts`]: RTS commands and PDUs with a constructor for each PDU of the spec's catalogue.
//! - [`flow`]: receive-window accounting for the sending and receiving side of a hop.
//! - [`outbox`]: queues of encoded PDUs a role has ready for its shell.
//! - [`client`], [`inbound`], [`outbound`], [`server`]: the four MS-RPCH roles, each a state
//!   machine fed framed PDUs and time, yielding PDUs to write, events and deadlines.
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
pub mod flow;
pub mod outbox;

pub mod client;
pub mod dcerpc;
pub mod inbound;
pub mod outbound;
pub mod server;
