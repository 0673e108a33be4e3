//! Connection-oriented DCE/RPC PDUs (C706 chapter 12) and their framing.

pub mod header;

pub use header::{COMMON_HEADER_LEN, CommonHeader, PacketType, is_rts, pdu_length, split_pdu};
pub mod rpc;

pub use rpc::{Pdu, SyntaxId};
