//! The 16-byte connection-oriented common header (C706 12.6.3.1) and stream framing.
//!
//! Every channel body and every TCP leg carries PDUs back to back with no delimiter: a reader
//! takes 16 bytes, reads `frag_length`, then waits for the rest. [`pdu_length`] answers "is a
//! whole PDU buffered?" (`Ok(None)` means keep reading, which is normal), and [`split_pdu`]
//! takes one off a `BytesMut`, so the I/O shell never parses anything itself.

use bytes::{Bytes, BytesMut};

use crate::codec::{Put, Reader};
use crate::error::DecodeError;

/// Size of the common header.
pub const COMMON_HEADER_LEN: usize = 16;
/// `packed_drep` for little-endian integers, ASCII characters and IEEE floats.
pub const DREP_LE: [u8; 4] = [0x10, 0, 0, 0];

/// PFC_FIRST_FRAG: first fragment of a call.
pub const PFC_FIRST_FRAG: u8 = 0x01;
/// PFC_LAST_FRAG: last fragment of a call.
pub const PFC_LAST_FRAG: u8 = 0x02;
/// PFC_PENDING_CANCEL on requests; PFC_SUPPORT_HEADER_SIGN on bind/bind_ack.
pub const PFC_PENDING_CANCEL: u8 = 0x04;
/// PFC_CONC_MPX: concurrent multiplexing supported.
pub const PFC_CONC_MPX: u8 = 0x10;
/// PFC_DID_NOT_EXECUTE on faults.
pub const PFC_DID_NOT_EXECUTE: u8 = 0x20;
/// PFC_MAYBE: maybe semantics.
pub const PFC_MAYBE: u8 = 0x40;
/// PFC_OBJECT_UUID: an object UUID follows the request header.
pub const PFC_OBJECT_UUID: u8 = 0x80;

/// Connection-oriented PDU types (C706 12.6.4 plus MS-RPCH's RTS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PacketType {
    Request,
    Ping,
    Response,
    Fault,
    Working,
    Nocall,
    Reject,
    Ack,
    ClCancel,
    Fack,
    CancelAck,
    Bind,
    BindAck,
    BindNak,
    AlterContext,
    AlterContextResp,
    Auth3,
    Shutdown,
    CoCancel,
    Orphaned,
    Rts,
}

impl PacketType {
    /// Maps the PTYPE byte; unknown values are an error, not a panic.
    pub fn from_u8(value: u8) -> Result<Self, DecodeError> {
        use PacketType::*;
        Ok(match value {
            0 => Request,
            1 => Ping,
            2 => Response,
            3 => Fault,
            4 => Working,
            5 => Nocall,
            6 => Reject,
            7 => Ack,
            8 => ClCancel,
            9 => Fack,
            10 => CancelAck,
            11 => Bind,
            12 => BindAck,
            13 => BindNak,
            14 => AlterContext,
            15 => AlterContextResp,
            16 => Auth3,
            17 => Shutdown,
            18 => CoCancel,
            19 => Orphaned,
            20 => Rts,
            other => return Err(DecodeError::UnknownPacketType(other)),
        })
    }

    /// The PTYPE byte.
    pub fn to_u8(self) -> u8 {
        use PacketType::*;
        match self {
            Request => 0,
            Ping => 1,
            Response => 2,
            Fault => 3,
            Working => 4,
            Nocall => 5,
            Reject => 6,
            Ack => 7,
            ClCancel => 8,
            Fack => 9,
            CancelAck => 10,
            Bind => 11,
            BindAck => 12,
            BindNak => 13,
            AlterContext => 14,
            AlterContextResp => 15,
            Auth3 => 16,
            Shutdown => 17,
            CoCancel => 18,
            Orphaned => 19,
            Rts => 20,
        }
    }
}

/// The common header of a connection-oriented PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommonHeader {
    pub rpc_vers_minor: u8,
    pub ptype: PacketType,
    pub pfc_flags: u8,
    pub drep: [u8; 4],
    pub frag_length: u16,
    pub auth_length: u16,
    pub call_id: u32,
}

impl CommonHeader {
    /// A little-endian header for `ptype` with the given lengths (minor version 0).
    pub fn new(ptype: PacketType, pfc_flags: u8, frag_length: u16, call_id: u32) -> Self {
        Self {
            rpc_vers_minor: 0,
            ptype,
            pfc_flags,
            drep: DREP_LE,
            frag_length,
            auth_length: 0,
            call_id,
        }
    }

    /// Reads and validates the header. Only little-endian PDUs are accepted: every client in
    /// the field sends them, and RTS requires them.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let major = r.u8("rpc_vers")?;
        let minor = r.u8("rpc_vers_minor")?;
        if major != 5 || minor > 1 {
            return Err(DecodeError::BadVersion { major, minor });
        }
        let ptype = PacketType::from_u8(r.u8("PTYPE")?)?;
        let pfc_flags = r.u8("pfc_flags")?;
        let drep: [u8; 4] = r.array("packed_drep")?;
        if drep[0] & 0xf0 != 0x10 {
            return Err(DecodeError::BadDataRepresentation { drep });
        }
        let frag_length = r.u16("frag_length")?;
        let auth_length = r.u16("auth_length")?;
        let call_id = r.u32("call_id")?;
        if usize::from(frag_length) < COMMON_HEADER_LEN {
            return Err(DecodeError::BadFragLength {
                frag_length,
                what: "a PDU",
            });
        }
        if usize::from(auth_length) + COMMON_HEADER_LEN > usize::from(frag_length) {
            return Err(DecodeError::BadAuthLength {
                auth_length,
                frag_length,
            });
        }
        Ok(Self {
            rpc_vers_minor: minor,
            ptype,
            pfc_flags,
            drep,
            frag_length,
            auth_length,
            call_id,
        })
    }

    /// Decodes the header at the start of `pdu`.
    pub fn parse(pdu: &[u8]) -> Result<Self, DecodeError> {
        Self::read(&mut Reader::new(pdu))
    }

    /// Appends the 16 header bytes.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.put_u8(5);
        out.put_u8(self.rpc_vers_minor);
        out.put_u8(self.ptype.to_u8());
        out.put_u8(self.pfc_flags);
        out.put_bytes(&self.drep);
        out.put_u16(self.frag_length);
        out.put_u16(self.auth_length);
        out.put_u32(self.call_id);
    }

    pub fn is_first_frag(&self) -> bool {
        self.pfc_flags & PFC_FIRST_FRAG != 0
    }

    pub fn is_last_frag(&self) -> bool {
        self.pfc_flags & PFC_LAST_FRAG != 0
    }
}

/// Returns the length of the PDU at the start of `buf` once it is entirely buffered.
///
/// `Ok(None)` means more bytes are needed. The header is validated as soon as its 16 bytes are
/// present, so garbage is rejected without waiting for a length that will never come.
pub fn pdu_length(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    if buf.len() < COMMON_HEADER_LEN {
        return Ok(None);
    }
    let header = CommonHeader::parse(buf)?;
    let len = usize::from(header.frag_length);
    Ok((buf.len() >= len).then_some(len))
}

/// Takes one whole PDU off the front of `buf`, if one is buffered.
pub fn split_pdu(buf: &mut BytesMut) -> Result<Option<Bytes>, DecodeError> {
    Ok(pdu_length(buf)?.map(|len| buf.split_to(len).freeze()))
}

/// True when `pdu` starts with the RTS PTYPE (the caller has framed it already).
pub fn is_rts(pdu: &[u8]) -> bool {
    pdu.get(2) == Some(&PacketType::Rts.to_u8())
}

/// The `call_id` of a framed PDU, or 0 if it is too short to have one.
pub fn call_id(pdu: &[u8]) -> u32 {
    pdu.get(12..16)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = CommonHeader::new(PacketType::Bind, PFC_FIRST_FRAG | PFC_LAST_FRAG, 72, 7);
        let mut out = Vec::new();
        h.write(&mut out);
        assert_eq!(out.len(), 16);
        assert_eq!(CommonHeader::parse(&out).unwrap(), h);
    }

    #[test]
    fn framing_waits_for_the_whole_pdu_and_rejects_garbage() {
        let ping = crate::codec::from_hex("05001403100000001400000000000000 01000000").unwrap();
        assert_eq!(pdu_length(&ping[..10]).unwrap(), None);
        assert_eq!(pdu_length(&ping[..19]).unwrap(), None);
        assert_eq!(pdu_length(&ping).unwrap(), Some(20));

        let mut buf = BytesMut::from(&[ping.clone(), ping.clone()].concat()[..]);
        buf.extend_from_slice(&ping[..3]);
        assert_eq!(split_pdu(&mut buf).unwrap().unwrap().len(), 20);
        assert_eq!(split_pdu(&mut buf).unwrap().unwrap().len(), 20);
        assert_eq!(split_pdu(&mut buf).unwrap(), None);

        let mut http = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
        http.resize(16, 0);
        assert!(matches!(
            pdu_length(&http),
            Err(DecodeError::BadVersion { .. })
        ));

        let mut short = ping.clone();
        short[8] = 4; // frag_length 4 < 16
        assert!(matches!(
            pdu_length(&short),
            Err(DecodeError::BadFragLength { .. })
        ));

        let mut big_endian = ping;
        big_endian[4] = 0x00;
        assert!(matches!(
            pdu_length(&big_endian),
            Err(DecodeError::BadDataRepresentation { .. })
        ));
    }
}
