//! RTS (Request To Send) PDUs: MS-RPCH's control messages, which carry no RPC data and set up,
//! flow-control, keep alive and recycle the channels of a virtual connection.

pub mod command;
pub mod pdu;

pub use command::{FlowControlAck, ForwardDestination, RtsCommand};
pub use pdu::{RTS_HEADER_LEN, RTS_VERSION, RtsPdu, build, flags};

#[cfg(test)]
mod tests;
