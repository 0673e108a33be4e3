//! The connection-oriented DCE/RPC PDUs a client and a server exchange (C706 12.6.4): bind,
//! alter_context and their answers, request, response, fault and shutdown, each with one
//! `encode` and one `decode`.
//!
//! Every decoder takes one framed PDU (exactly `frag_length` bytes, as
//! [`split_pdu`](super::split_pdu) hands them out), checks each length against the bytes that
//! are really there before slicing, and sizes every allocation from the input, never from a
//! count field alone. Any PDU may end with an authentication verifier (C706 13.2.6.1): when
//! `auth_length > 0`, the 8-byte `sec_trailer` sits `auth_length` bytes before the end, and
//! `auth_pad_length` bytes of padding sit between the body and the trailer, so
//!
//! ```text
//! body length = frag_length - 16 (header) - 8 (sec_trailer) - auth_length - auth_pad_length
//! ```
//!
//! Encoders write the header with the right `frag_length`/`auth_length`, little-endian only.

mod syntax;
#[cfg(test)]
mod tests;

pub use syntax::{BIND_TIME_FEATURE_PREFIX, SyntaxId, SyntaxIdParseError, features};

use crate::codec::{Put, Reader};
use crate::error::DecodeError;

use super::header::{
    COMMON_HEADER_LEN, CommonHeader, PFC_FIRST_FRAG, PFC_LAST_FRAG, PFC_OBJECT_UUID, PacketType,
};

/// Size of the `sec_trailer` that precedes an auth value.
pub const SEC_TRAILER_LEN: usize = 8;
/// Header size of a request without an object UUID: common header, alloc_hint, p_cont_id,
/// opnum.
pub const REQUEST_HEADER_LEN: usize = 24;
/// Header size of a response: common header, alloc_hint, p_cont_id, cancel_count, reserved.
pub const RESPONSE_HEADER_LEN: usize = 24;
/// C706 12.6.3.1 MustRecvFragSize: every implementation receives fragments this large.
pub const MUST_RECV_FRAG_SIZE: u16 = 1432;

/// `p_cont_def_result_t` (C706 12.6.3.1), plus MS-RPCE's negotiate_ack.
pub mod result {
    pub const ACCEPTANCE: u16 = 0;
    pub const USER_REJECTION: u16 = 1;
    pub const PROVIDER_REJECTION: u16 = 2;
    /// MS-RPCE 3.3.1.5.3: answer to a bind-time feature negotiation context.
    pub const NEGOTIATE_ACK: u16 = 3;
}

/// `p_provider_reason_t` (C706 12.6.3.1): why a presentation context was rejected.
pub mod reason {
    pub const NOT_SPECIFIED: u16 = 0;
    pub const ABSTRACT_SYNTAX_NOT_SUPPORTED: u16 = 1;
    pub const PROPOSED_TRANSFER_SYNTAXES_NOT_SUPPORTED: u16 = 2;
    pub const LOCAL_LIMIT_EXCEEDED: u16 = 3;

    /// The symbolic name of a reason, for error messages.
    pub fn name(reason: u16) -> &'static str {
        match reason {
            NOT_SPECIFIED => "reason_not_specified",
            ABSTRACT_SYNTAX_NOT_SUPPORTED => "abstract_syntax_not_supported",
            PROPOSED_TRANSFER_SYNTAXES_NOT_SUPPORTED => "proposed_transfer_syntaxes_not_supported",
            LOCAL_LIMIT_EXCEEDED => "local_limit_exceeded",
            _ => "unknown reason",
        }
    }
}

/// `p_reject_reason_t` (C706 12.6.3.1, extended by MS-RPCE 2.2.2.5): why a bind was refused.
pub mod reject_reason {
    pub const NOT_SPECIFIED: u16 = 0;
    pub const TEMPORARY_CONGESTION: u16 = 1;
    pub const LOCAL_LIMIT_EXCEEDED: u16 = 2;
    pub const CALLED_PADDR_UNKNOWN: u16 = 3;
    pub const PROTOCOL_VERSION_NOT_SUPPORTED: u16 = 4;
    pub const DEFAULT_CONTEXT_NOT_SUPPORTED: u16 = 5;
    pub const USER_DATA_NOT_READABLE: u16 = 6;
    pub const NO_PSAP_AVAILABLE: u16 = 7;
    pub const AUTHENTICATION_TYPE_NOT_RECOGNIZED: u16 = 8;
    pub const INVALID_CHECKSUM: u16 = 9;

    /// The symbolic name of a reject reason, for error messages.
    pub fn name(reason: u16) -> &'static str {
        match reason {
            NOT_SPECIFIED => "reason_not_specified",
            TEMPORARY_CONGESTION => "temporary_congestion",
            LOCAL_LIMIT_EXCEEDED => "local_limit_exceeded",
            CALLED_PADDR_UNKNOWN => "called_paddr_unknown",
            PROTOCOL_VERSION_NOT_SUPPORTED => "protocol_version_not_supported",
            DEFAULT_CONTEXT_NOT_SUPPORTED => "default_context_not_supported",
            USER_DATA_NOT_READABLE => "user_data_not_readable",
            NO_PSAP_AVAILABLE => "no_psap_available",
            AUTHENTICATION_TYPE_NOT_RECOGNIZED => "authentication_type_not_recognized",
            INVALID_CHECKSUM => "invalid_checksum",
            _ => "unknown reason",
        }
    }
}

/// Fault statuses (C706 appendix E, and the Windows codes seen in the same field).
pub mod status {
    pub const RPC_S_ACCESS_DENIED: u32 = 0x0000_0005;
    pub const RPC_S_UNKNOWN_AUTHN_SERVICE: u32 = 0x0000_06d3;
    pub const RPC_X_BAD_STUB_DATA: u32 = 0x0000_06f7;
    pub const NCA_S_OP_RNG_ERROR: u32 = 0x1c01_0002;
    pub const NCA_S_UNK_IF: u32 = 0x1c01_0003;
    pub const NCA_S_PROTO_ERROR: u32 = 0x1c01_000b;
    pub const NCA_S_OUT_ARGS_TOO_BIG: u32 = 0x1c01_0013;
    pub const NCA_S_SERVER_TOO_BUSY: u32 = 0x1c01_0014;
    pub const NCA_S_FAULT_REMOTE_NO_MEMORY: u32 = 0x1c00_001b;

    /// The symbolic name of a status, for error messages.
    pub fn name(status: u32) -> Option<&'static str> {
        Some(match status {
            RPC_S_ACCESS_DENIED => "rpc_s_access_denied",
            RPC_S_UNKNOWN_AUTHN_SERVICE => "rpc_s_unknown_authn_service",
            RPC_X_BAD_STUB_DATA => "rpc_x_bad_stub_data",
            NCA_S_OP_RNG_ERROR => "nca_s_op_rng_error",
            NCA_S_UNK_IF => "nca_s_unk_if",
            NCA_S_PROTO_ERROR => "nca_s_proto_error",
            NCA_S_OUT_ARGS_TOO_BIG => "nca_s_out_args_too_big",
            NCA_S_SERVER_TOO_BUSY => "nca_s_server_too_busy",
            NCA_S_FAULT_REMOTE_NO_MEMORY => "nca_s_fault_remote_no_memory",
            _ => return None,
        })
    }
}

/// The authentication verifier at the end of a PDU: `sec_trailer` plus auth value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthVerifier {
    pub auth_type: u8,
    pub auth_level: u8,
    /// Padding between the body and the trailer. The decoder skips this many bytes; the
    /// encoder writes this many zero bytes, so a sender picks it to align the trailer (to 4
    /// bytes, or 16 for some security providers).
    pub auth_pad_length: u8,
    pub auth_context_id: u32,
    pub auth_value: Vec<u8>,
}

/// One element of a bind's `p_context_elem` list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextElement {
    pub context_id: u16,
    pub abstract_syntax: SyntaxId,
    pub transfer_syntaxes: Vec<SyntaxId>,
}

/// One element of a bind_ack's `p_result_list`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContextResult {
    /// See [`result`].
    pub result: u16,
    /// See [`reason`]; for a negotiate_ack, the accepted feature bits.
    pub reason: u16,
    pub transfer_syntax: SyntaxId,
}

/// C706 12.6.4.3: bind (client -> server), opening an association with its presentation
/// contexts. [`AlterContext`] has the same body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub call_id: u32,
    pub pfc_flags: u8,
    pub max_xmit_frag: u16,
    pub max_recv_frag: u16,
    pub assoc_group_id: u32,
    pub contexts: Vec<ContextElement>,
    pub auth: Option<AuthVerifier>,
}

/// C706 12.6.4.1: alter_context (client -> server), adding contexts to a bound association.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterContext(pub Bind);

/// C706 12.6.4.4: bind_ack (server -> client). [`AlterContextResp`] has the same body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindAck {
    pub call_id: u32,
    pub pfc_flags: u8,
    pub max_xmit_frag: u16,
    pub max_recv_frag: u16,
    pub assoc_group_id: u32,
    /// `port_spec` of the secondary address, without its terminating NUL; empty when the
    /// length field is 0 (alter_context_resp).
    pub secondary_address: String,
    pub results: Vec<ContextResult>,
    pub auth: Option<AuthVerifier>,
}

/// C706 12.6.4.2: alter_context_resp (server -> client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlterContextResp(pub BindAck);

/// C706 12.6.4.5: bind_nak (server -> client), refusing the whole association.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindNak {
    pub call_id: u32,
    /// See [`reject_reason`].
    pub reject_reason: u16,
    /// `p_rt_versions_supported_t`: the (major, minor) protocol versions the server speaks;
    /// some servers omit the list, which decodes as empty.
    pub versions: Vec<(u8, u8)>,
}

/// C706 12.6.4.9: request (client -> server), one fragment of a call's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub call_id: u32,
    /// PFC_OBJECT_UUID is derived from `object` when encoding.
    pub pfc_flags: u8,
    pub alloc_hint: u32,
    pub context_id: u16,
    pub opnum: u16,
    /// Present when PFC_OBJECT_UUID is set, in wire order.
    pub object: Option<[u8; 16]>,
    pub stub: Vec<u8>,
    pub auth: Option<AuthVerifier>,
}

/// C706 12.6.4.10: response (server -> client), one fragment of a call's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub call_id: u32,
    pub pfc_flags: u8,
    pub alloc_hint: u32,
    pub context_id: u16,
    pub cancel_count: u8,
    pub stub: Vec<u8>,
    pub auth: Option<AuthVerifier>,
}

/// C706 12.6.4.7: fault (server -> client), a call that failed with `status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub call_id: u32,
    pub pfc_flags: u8,
    pub alloc_hint: u32,
    pub context_id: u16,
    pub cancel_count: u8,
    /// See [`status`].
    pub status: u32,
}

/// C706 12.6.4.11: shutdown (server -> client), asking the client to end the association.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shutdown {
    pub call_id: u32,
}

/// Any connection-oriented PDU, for a receiver that does not know what comes next.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Pdu {
    Bind(Bind),
    AlterContext(AlterContext),
    BindAck(BindAck),
    AlterContextResp(AlterContextResp),
    BindNak(BindNak),
    Request(Request),
    Response(Response),
    Fault(Fault),
    Shutdown(Shutdown),
    /// A well-formed header of a type this module does not decode (auth3, co_cancel,
    /// orphaned, RTS, connectionless types).
    Other(CommonHeader),
}

impl Pdu {
    /// Decodes whatever PDU `pdu` holds.
    pub fn decode(pdu: &[u8]) -> Result<Self, DecodeError> {
        let header = CommonHeader::parse(pdu)?;
        Ok(match header.ptype {
            PacketType::Bind => Pdu::Bind(Bind::decode(pdu)?),
            PacketType::AlterContext => Pdu::AlterContext(AlterContext::decode(pdu)?),
            PacketType::BindAck => Pdu::BindAck(BindAck::decode(pdu)?),
            PacketType::AlterContextResp => Pdu::AlterContextResp(AlterContextResp::decode(pdu)?),
            PacketType::BindNak => Pdu::BindNak(BindNak::decode(pdu)?),
            PacketType::Request => Pdu::Request(Request::decode(pdu)?),
            PacketType::Response => Pdu::Response(Response::decode(pdu)?),
            PacketType::Fault => Pdu::Fault(Fault::decode(pdu)?),
            PacketType::Shutdown => Pdu::Shutdown(Shutdown::decode(pdu)?),
            _ => {
                // Still insist on a whole, exact frame so callers can rely on it.
                Frame::split(pdu, header.ptype, "PDU")?;
                Pdu::Other(header)
            }
        })
    }

    /// The call this PDU belongs to.
    pub fn call_id(&self) -> u32 {
        match self {
            Pdu::Bind(p) | Pdu::AlterContext(AlterContext(p)) => p.call_id,
            Pdu::BindAck(p) | Pdu::AlterContextResp(AlterContextResp(p)) => p.call_id,
            Pdu::BindNak(p) => p.call_id,
            Pdu::Request(p) => p.call_id,
            Pdu::Response(p) => p.call_id,
            Pdu::Fault(p) => p.call_id,
            Pdu::Shutdown(p) => p.call_id,
            Pdu::Other(h) => h.call_id,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Framing shared by every PDU: header, body, optional auth verifier.

/// A PDU split into its header, its body (between header and auth padding) and its verifier.
struct Frame<'a> {
    header: CommonHeader,
    body: &'a [u8],
    auth: Option<AuthVerifier>,
}

impl<'a> Frame<'a> {
    /// Checks the header, that `pdu` is exactly one fragment, and locates the verifier.
    fn split(pdu: &'a [u8], ptype: PacketType, what: &'static str) -> Result<Self, DecodeError> {
        let header = CommonHeader::parse(pdu)?;
        if header.ptype != ptype {
            return Err(DecodeError::WrongPacketType {
                expected: what,
                got: header.ptype.to_u8(),
            });
        }
        let frag_length = usize::from(header.frag_length);
        if pdu.len() < frag_length {
            return Err(DecodeError::Truncated {
                what,
                needed: frag_length,
                available: pdu.len(),
            });
        }
        if pdu.len() > frag_length {
            return Err(DecodeError::TrailingBytes {
                what,
                extra: pdu.len() - frag_length,
            });
        }
        let bad_auth = DecodeError::BadAuthLength {
            auth_length: header.auth_length,
            frag_length: header.frag_length,
        };
        let auth_length = usize::from(header.auth_length);
        let (body_end, auth) = if auth_length == 0 {
            (frag_length, None)
        } else {
            let trailer_at = frag_length
                .checked_sub(auth_length + SEC_TRAILER_LEN)
                .filter(|&at| at >= COMMON_HEADER_LEN)
                .ok_or(bad_auth.clone())?;
            let mut r = Reader::new(pdu.get(trailer_at..).unwrap_or(&[]));
            let auth_type = r.u8("auth_type")?;
            let auth_level = r.u8("auth_level")?;
            let auth_pad_length = r.u8("auth_pad_length")?;
            let _reserved = r.u8("auth_reserved")?;
            let auth_context_id = r.u32("auth_context_id")?;
            let auth_value = r.take(auth_length, "auth_value")?.to_vec();
            let body_end = trailer_at
                .checked_sub(usize::from(auth_pad_length))
                .filter(|&end| end >= COMMON_HEADER_LEN)
                .ok_or(DecodeError::BadValue {
                    what: "auth_pad_length (larger than the PDU body)",
                    value: u64::from(auth_pad_length),
                })?;
            (
                body_end,
                Some(AuthVerifier {
                    auth_type,
                    auth_level,
                    auth_pad_length,
                    auth_context_id,
                    auth_value,
                }),
            )
        };
        let body = pdu.get(COMMON_HEADER_LEN..body_end).ok_or(bad_auth)?;
        Ok(Self { header, body, auth })
    }
}

/// Writes a whole PDU: header (lengths patched in at the end), body, then the verifier.
fn encode_pdu(
    ptype: PacketType,
    pfc_flags: u8,
    call_id: u32,
    auth: Option<&AuthVerifier>,
    body: impl FnOnce(&mut Vec<u8>),
) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    CommonHeader::new(ptype, pfc_flags, 0, call_id).write(&mut out);
    body(&mut out);
    let mut auth_length = 0usize;
    if let Some(a) = auth {
        out.resize(out.len() + usize::from(a.auth_pad_length), 0);
        out.put_u8(a.auth_type);
        out.put_u8(a.auth_level);
        out.put_u8(a.auth_pad_length);
        out.put_u8(0);
        out.put_u32(a.auth_context_id);
        out.put_bytes(&a.auth_value);
        auth_length = a.auth_value.len();
    }
    // Callers keep PDUs within a fragment (the fragmenter does); saturating keeps this total,
    // and a peer rejects the inconsistent frame rather than us panicking.
    debug_assert!(
        out.len() <= usize::from(u16::MAX),
        "PDU larger than a fragment"
    );
    let frag_length = u16::try_from(out.len()).unwrap_or(u16::MAX);
    let auth_length = u16::try_from(auth_length).unwrap_or(u16::MAX);
    if let Some(slot) = out.get_mut(8..10) {
        slot.copy_from_slice(&frag_length.to_le_bytes());
    }
    if let Some(slot) = out.get_mut(10..12) {
        slot.copy_from_slice(&auth_length.to_le_bytes());
    }
    out
}

/// Pre-allocation for `count` items of at least `item_len` bytes each: never more than the
/// bytes left could hold, so a lying count cannot make us allocate.
fn checked_count(
    r: &Reader<'_>,
    count: usize,
    item_len: usize,
    what: &'static str,
) -> Result<usize, DecodeError> {
    if count.saturating_mul(item_len) > r.remaining() {
        return Err(DecodeError::BadCount {
            what,
            count: u32::try_from(count).unwrap_or(u32::MAX),
            available: r.remaining(),
        });
    }
    Ok(count)
}

fn u8_len(len: usize) -> u8 {
    u8::try_from(len).unwrap_or(u8::MAX)
}

// ---------------------------------------------------------------------------------------------
// bind / alter_context

impl Bind {
    /// Encodes a bind PDU.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_as(PacketType::Bind)
    }

    /// Decodes a bind PDU.
    pub fn decode(pdu: &[u8]) -> Result<Self, DecodeError> {
        Self::decode_as(pdu, PacketType::Bind, "bind")
    }

    fn encode_as(&self, ptype: PacketType) -> Vec<u8> {
        encode_pdu(
            ptype,
            self.pfc_flags,
            self.call_id,
            self.auth.as_ref(),
            |out| {
                out.put_u16(self.max_xmit_frag);
                out.put_u16(self.max_recv_frag);
                out.put_u32(self.assoc_group_id);
                // n_context_elem is a u8: more than 255 contexts cannot be expressed.
                let contexts = self
                    .contexts
                    .get(..self.contexts.len().min(255))
                    .unwrap_or(&[]);
                out.put_u8(u8_len(contexts.len()));
                out.put_u8(0);
                out.put_u16(0);
                for element in contexts {
                    let syntaxes = element
                        .transfer_syntaxes
                        .get(..element.transfer_syntaxes.len().min(255))
                        .unwrap_or(&[]);
                    out.put_u16(element.context_id);
                    out.put_u8(u8_len(syntaxes.len()));
                    out.put_u8(0);
                    element.abstract_syntax.write(out);
                    for syntax in syntaxes {
                        syntax.write(out);
                    }
                }
            },
        )
    }

    fn decode_as(pdu: &[u8], ptype: PacketType, what: &'static str) -> Result<Self, DecodeError> {
        let frame = Frame::split(pdu, ptype, what)?;
        let mut r = Reader::new(frame.body);
        let max_xmit_frag = r.u16("max_xmit_frag")?;
        let max_recv_frag = r.u16("max_recv_frag")?;
        let assoc_group_id = r.u32("assoc_group_id")?;
        let n_context_elem = usize::from(r.u8("n_context_elem")?);
        r.skip(3, "p_context_elem reserved")?;
        // Each element is at least p_cont_id, n_transfer_syn, reserved and one syntax.
        let n = checked_count(&r, n_context_elem, 4 + SyntaxId::LEN, "p_context_elem")?;
        let mut contexts = Vec::with_capacity(n);
        for _ in 0..n {
            let context_id = r.u16("p_cont_id")?;
            let n_transfer_syn = usize::from(r.u8("n_transfer_syn")?);
            r.skip(1, "p_cont_elem reserved")?;
            let abstract_syntax = SyntaxId::read(&mut r)?;
            let n = checked_count(&r, n_transfer_syn, SyntaxId::LEN, "transfer_syntaxes")?;
            let mut transfer_syntaxes = Vec::with_capacity(n);
            for _ in 0..n {
                transfer_syntaxes.push(SyntaxId::read(&mut r)?);
            }
            contexts.push(ContextElement {
                context_id,
                abstract_syntax,
                transfer_syntaxes,
            });
        }
        // Bytes left over are tolerated: some clients pad the body before the verifier.
        Ok(Self {
            call_id: frame.header.call_id,
            pfc_flags: frame.header.pfc_flags,
            max_xmit_frag,
            max_recv_frag,
            assoc_group_id,
            contexts,
            auth: frame.auth,
        })
    }
}

impl AlterContext {
    /// Encodes an alter_context PDU.
    pub fn encode(&self) -> Vec<u8> {
        self.0.encode_as(PacketType::AlterContext)
    }

    /// Decodes an alter_context PDU.
    pub fn decode(pdu: &[u8]) -> Result<Self, DecodeError> {
        Bind::decode_as(pdu, PacketType::AlterContext, "alter_context").map(Self)
    }
}

// ---------------------------------------------------------------------------------------------
// bind_ack / alter_context_resp / bind_nak

impl BindAck {
    /// Encodes a bind_ack PDU.
    pub fn encode(&self) -> Vec<u8> {
        self.encode_as(PacketType::BindAck)
    }

    /// Decodes a bind_ack PDU.
    pub fn decode(pdu: &[u8]) -> Result<Self, DecodeError> {
        Self::decode_as(pdu, PacketType::BindAck, "bind_ack")
    }

    fn encode_as(&self, ptype: PacketType) -> Vec<u8> {
        encode_pdu(
            ptype,
            self.pfc_flags,
            self.call_id,
            self.auth.as_ref(),
            |out| {
                out.put_u16(self.max_xmit_frag);
                out.put_u16(self.max_recv_frag);
                out.put_u32(self.assoc_group_id);
                // port_any_t: u16 length including the NUL, the string, then padding to 4.
                let port = self.secondary_address.as_bytes();
                let port = port
                    .get(..port.len().min(usize::from(u16::MAX) - 1))
                    .unwrap_or(&[]);
                if port.is_empty() {
                    out.put_u16(0);
                } else {
                    out.put_u16(u16::try_from(port.len() + 1).unwrap_or(u16::MAX));
                    out.put_bytes(port);
                    out.put_u8(0);
                }
                out.pad_to(4);
                let results = self
                    .results
                    .get(..self.results.len().min(255))
                    .unwrap_or(&[]);
                out.put_u8(u8_len(results.len()));
                out.put_u8(0);
                out.put_u16(0);
                for result in results {
                    out.put_u16(result.result);
                    out.put_u16(result.reason);
                    result.transfer_syntax.write(out);
                }
            },
        )
    }

    fn decode_as(pdu: &[u8], ptype: PacketType, what: &'static str) -> Result<Self, DecodeError> {
        let frame = Frame::split(pdu, ptype, what)?;
        // The body starts at offset 16, so aligning relative to it aligns relative to the PDU.
        let mut r = Reader::new(frame.body);
        let max_xmit_frag = r.u16("max_xmit_frag")?;
        let max_recv_frag = r.u16("max_recv_frag")?;
        let assoc_group_id = r.u32("assoc_group_id")?;
        let port_len = usize::from(r.u16("sec_addr length")?);
        let port = r.take(port_len, "sec_addr port_spec")?;
        let port = port.strip_suffix(&[0]).unwrap_or(port);
        let secondary_address = String::from_utf8_lossy(port).into_owned();
        r.align(4)?;
        let n_results = usize::from(r.u8("n_results")?);
        r.skip(3, "p_result_list reserved")?;
        let n = checked_count(&r, n_results, 4 + SyntaxId::LEN, "p_results")?;
        let mut results = Vec::with_capacity(n);
        for _ in 0..n {
            results.push(ContextResult {
                result: r.u16("result")?,
                reason: r.u16("reason")?,
                transfer_syntax: SyntaxId::read(&mut r)?,
            });
        }
        Ok(Self {
            call_id: frame.header.call_id,
            pfc_flags: frame.header.pfc_flags,
            max_xmit_frag,
            max_recv_frag,
            assoc_group_id,
            secondary_address,
            results,
            auth: frame.auth,
        })
    }
}

impl AlterContextResp {
    /// Encodes an alter_context_resp PDU.
    pub fn encode(&self) -> Vec<u8> {
        self.0.encode_as(PacketType::AlterContextResp)
    }

    /// Decodes an alter_context_resp PDU.
    pub fn decode(pdu: &[u8]) -> Result<Self, DecodeError> {
        BindAck::decode_as(pdu, PacketType::AlterContextResp, "alter_context_resp").map(Self)
    }
}

impl BindNak {
    /// Encodes a bind_nak PDU (FIRST|LAST, no verifier), padded to 4 bytes.
    pub fn encode(&self) -> Vec<u8> {
        encode_pdu(
            PacketType::BindNak,
            PFC_FIRST_FRAG | PFC_LAST_FRAG,
            self.call_id,
            None,
            |out| {
                out.put_u16(self.reject_reason);
                let versions = self
                    .versions
                    .get(..self.versions.len().min(255))
                    .unwrap_or(&[]);
                out.put_u8(u8_len(versions.len()));
                for &(major, minor) in versions {
                    out.put_u8(major);
                    out.put_u8(minor);
                }
                out.pad_to(4);
            },
        )
    }

    /// Decodes a bind_nak PDU; the version list is optional.
    pub fn decode(pdu: &[u8]) -> Result<Self, DecodeError> {
        let frame = Frame::split(pdu, PacketType::BindNak, "bind_nak")?;
        let mut r = Reader::new(frame.body);
        let reject_reason = r.u16("provider_reject_reason")?;
        let mut versions = Vec::new();
        if r.remaining() > 0 {
            let n = usize::from(r.u8("n_protocols")?);
            let n = checked_count(&r, n, 2, "p_protocols")?;
            versions.reserve_exact(n);
            for _ in 0..n {
                versions.push((r.u8("rpc_vers")?, r.u8("rpc_vers_minor")?));
            }
        }
        Ok(Self {
            call_id: frame.header.call_id,
            reject_reason,
            versions,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// request / response / fault / shutdown

impl Request {
    /// Size of the header before the stub: 24, or 40 with an object UUID.
    pub fn header_len(&self) -> usize {
        REQUEST_HEADER_LEN + if self.object.is_some() { 16 } else { 0 }
    }

    /// Encodes a request PDU.
    pub fn encode(&self) -> Vec<u8> {
        let flags = match self.object {
            Some(_) => self.pfc_flags | PFC_OBJECT_UUID,
            None => self.pfc_flags & !PFC_OBJECT_UUID,
        };
        encode_pdu(
            PacketType::Request,
            flags,
            self.call_id,
            self.auth.as_ref(),
            |out| {
                out.reserve(8 + 16 + self.stub.len());
                out.put_u32(self.alloc_hint);
                out.put_u16(self.context_id);
                out.put_u16(self.opnum);
                if let Some(object) = &self.object {
                    out.put_bytes(object);
                }
                out.put_bytes(&self.stub);
            },
        )
    }

    /// Decodes a request PDU.
    pub fn decode(pdu: &[u8]) -> Result<Self, DecodeError> {
        let frame = Frame::split(pdu, PacketType::Request, "request")?;
        let mut r = Reader::new(frame.body);
        let alloc_hint = r.u32("alloc_hint")?;
        let context_id = r.u16("p_cont_id")?;
        let opnum = r.u16("opnum")?;
        let object = if frame.header.pfc_flags & PFC_OBJECT_UUID != 0 {
            Some(r.array("object UUID")?)
        } else {
            None
        };
        Ok(Self {
            call_id: frame.header.call_id,
            pfc_flags: frame.header.pfc_flags,
            alloc_hint,
            context_id,
            opnum,
            object,
            stub: r.rest().to_vec(),
            auth: frame.auth,
        })
    }
}

impl Response {
    /// Encodes a response PDU.
    pub fn encode(&self) -> Vec<u8> {
        encode_pdu(
            PacketType::Response,
            self.pfc_flags,
            self.call_id,
            self.auth.as_ref(),
            |out| {
                out.reserve(8 + self.stub.len());
                out.put_u32(self.alloc_hint);
                out.put_u16(self.context_id);
                out.put_u8(self.cancel_count);
                out.put_u8(0);
                out.put_bytes(&self.stub);
            },
        )
    }

    /// Decodes a response PDU.
    pub fn decode(pdu: &[u8]) -> Result<Self, DecodeError> {
        let frame = Frame::split(pdu, PacketType::Response, "response")?;
        let mut r = Reader::new(frame.body);
        let alloc_hint = r.u32("alloc_hint")?;
        let context_id = r.u16("p_cont_id")?;
        let cancel_count = r.u8("cancel_count")?;
        r.skip(1, "response reserved")?;
        Ok(Self {
            call_id: frame.header.call_id,
            pfc_flags: frame.header.pfc_flags,
            alloc_hint,
            context_id,
            cancel_count,
            stub: r.rest().to_vec(),
            auth: frame.auth,
        })
    }
}

impl Fault {
    /// Encodes a fault PDU (no verifier, no stub): 32 bytes.
    pub fn encode(&self) -> Vec<u8> {
        encode_pdu(
            PacketType::Fault,
            self.pfc_flags,
            self.call_id,
            None,
            |out| {
                out.put_u32(self.alloc_hint);
                out.put_u16(self.context_id);
                out.put_u8(self.cancel_count);
                out.put_u8(0);
                out.put_u32(self.status);
                // reserved2: C706 keeps the (optional) stub 8-byte aligned.
                out.put_u32(0);
            },
        )
    }

    /// Decodes a fault PDU. The reserved word and any stub after the status are ignored:
    /// some implementations omit the former.
    pub fn decode(pdu: &[u8]) -> Result<Self, DecodeError> {
        let frame = Frame::split(pdu, PacketType::Fault, "fault")?;
        let mut r = Reader::new(frame.body);
        let alloc_hint = r.u32("alloc_hint")?;
        let context_id = r.u16("p_cont_id")?;
        let cancel_count = r.u8("cancel_count")?;
        r.skip(1, "fault reserved")?;
        let status = r.u32("status")?;
        Ok(Self {
            call_id: frame.header.call_id,
            pfc_flags: frame.header.pfc_flags,
            alloc_hint,
            context_id,
            cancel_count,
            status,
        })
    }
}

impl Shutdown {
    /// Encodes a shutdown PDU (header only).
    pub fn encode(&self) -> Vec<u8> {
        encode_pdu(
            PacketType::Shutdown,
            PFC_FIRST_FRAG | PFC_LAST_FRAG,
            self.call_id,
            None,
            |_| {},
        )
    }

    /// Decodes a shutdown PDU; a body or verifier, which C706 does not define, is ignored.
    pub fn decode(pdu: &[u8]) -> Result<Self, DecodeError> {
        let frame = Frame::split(pdu, PacketType::Shutdown, "shutdown")?;
        Ok(Self {
            call_id: frame.header.call_id,
        })
    }
}
