//! Samba's test interface `rpcecho` (60a15ec5-4de8-11d7-a637-005056a20182 v1.0), opnums 0-3,
//! marshalled exactly as pidl does for Samba's `echo.idl`, so that Samba's
//! `samba.dcerpc.echo` client (or smbtorture's rpc.echo) can call the demo. Both sides of
//! every stub live here.
//!
//! ```text
//! 0 AddOne(in_data)            in:  u32                     out: u32 (in_data + 1, wrapping)
//! 1 EchoData(len, in_data)     in:  len | max_count=len | bytes
//!                              out: max_count=len | the same bytes
//! 2 SinkData(len, data)        in:  len | max_count=len | bytes      out: (empty)
//! 3 SourceData(len)            in:  len                     out: max_count=len | i & 0xff ...
//! ```
//!
//! The byte pattern of SourceData is Samba's reference server's (`data[i] = i` in a `uint8`).

use rpch_proto::DecodeError;
use rpch_proto::codec::{Put, Reader};
use rpch_proto::pdu::rpc::SyntaxId;
use rpch_proto::pdu::rpc::status::{NCA_S_OP_RNG_ERROR, NCA_S_OUT_ARGS_TOO_BIG};

use super::association::CallError;
use super::ndr;

/// `60a15ec5-4de8-11d7-a637-005056a20182 v1.0`.
pub const INTERFACE: SyntaxId = SyntaxId::from_fields(
    0x60a1_5ec5,
    0x4de8,
    0x11d7,
    [0xa6, 0x37, 0x00, 0x50, 0x56, 0xa2, 0x01, 0x82],
    1,
    0,
);

/// The rpcecho interface id.
pub fn interface() -> SyntaxId {
    INTERFACE
}

/// Operation numbers.
pub mod opnum {
    pub const ADD_ONE: u16 = 0;
    pub const ECHO_DATA: u16 = 1;
    pub const SINK_DATA: u16 = 2;
    pub const SOURCE_DATA: u16 = 3;
}

/// Runs one rpcecho call. `max_out` bounds the response stub (SourceData's length is the
/// caller's word).
pub(super) fn call(opnum: u16, stub: &[u8], max_out: usize) -> Result<Vec<u8>, CallError> {
    let mut r = Reader::new(stub);
    match opnum {
        opnum::ADD_ONE => {
            let v = r.u32("in_data")?;
            Ok(v.wrapping_add(1).to_le_bytes().to_vec())
        }
        opnum::ECHO_DATA => {
            let len = r.u32("len")?;
            let data = ndr::read_conformant_bytes(&mut r, len, "in_data")?;
            let mut out = Vec::with_capacity(4 + data.len());
            ndr::put_conformant_bytes(&mut out, data);
            Ok(out)
        }
        opnum::SINK_DATA => {
            let len = r.u32("len")?;
            ndr::read_conformant_bytes(&mut r, len, "data")?;
            Ok(Vec::new())
        }
        opnum::SOURCE_DATA => {
            let len = r.u32("len")?;
            let n = usize::try_from(len).unwrap_or(usize::MAX);
            if n > max_out.saturating_sub(4) {
                return Err(CallError::Fault(NCA_S_OUT_ARGS_TOO_BIG));
            }
            let mut out = Vec::with_capacity(4 + n);
            out.put_u32(len);
            out.extend((0..n).map(|i| i as u8));
            Ok(out)
        }
        _ => Err(CallError::Fault(NCA_S_OP_RNG_ERROR)),
    }
}

/// AddOne request.
pub fn encode_add_one(v: u32) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// AddOne response.
pub fn decode_add_one(stub: &[u8]) -> Result<u32, DecodeError> {
    Reader::new(stub).u32("out_data")
}

/// EchoData and SinkData requests: `len`, then the conformant array.
pub fn encode_data(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + data.len());
    out.put_u32(u32::try_from(data.len()).unwrap_or(u32::MAX));
    ndr::put_conformant_bytes(&mut out, data);
    out
}

/// EchoData and SourceData responses: a conformant array of `expected_len` bytes.
pub fn decode_data(stub: &[u8], expected_len: u32) -> Result<Vec<u8>, DecodeError> {
    ndr::read_conformant_bytes(&mut Reader::new(stub), expected_len, "out_data").map(<[u8]>::to_vec)
}

/// SourceData request.
pub fn encode_source_data(len: u32) -> Vec<u8> {
    len.to_le_bytes().to_vec()
}

/// The bytes SourceData returns for `len`.
pub fn source_pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| i as u8).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpch_proto::codec::to_hex;

    #[test]
    fn add_one_wraps() {
        // Samba's own test: request 00000000 -> 01000000.
        assert_eq!(call(opnum::ADD_ONE, &[0; 4], 1024).unwrap(), [1, 0, 0, 0]);
        let out = call(opnum::ADD_ONE, &encode_add_one(u32::MAX), 1024).unwrap();
        assert_eq!(decode_add_one(&out).unwrap(), 0);
        assert!(matches!(
            call(opnum::ADD_ONE, &[1, 2, 3], 1024),
            Err(CallError::BadStub(_))
        ));
    }

    #[test]
    fn echo_and_sink_data_layouts() {
        let request = encode_data(b"hi!");
        assert_eq!(to_hex(&request), "0300000003000000686921");
        let out = call(opnum::ECHO_DATA, &request, 1024).unwrap();
        assert_eq!(to_hex(&out), "03000000686921");
        assert_eq!(decode_data(&out, 3).unwrap(), b"hi!");
        assert!(decode_data(&out, 4).is_err());
        assert_eq!(call(opnum::SINK_DATA, &request, 1024).unwrap(), b"");
        // len and max_count must agree, and the bytes must be there.
        assert!(
            call(
                opnum::ECHO_DATA,
                &[3, 0, 0, 0, 4, 0, 0, 0, 1, 2, 3, 4],
                1024
            )
            .is_err()
        );
        assert!(call(opnum::ECHO_DATA, &[9, 0, 0, 0, 9, 0, 0, 0, 1], 1024).is_err());
        let empty = call(opnum::ECHO_DATA, &encode_data(&[]), 1024).unwrap();
        assert_eq!(empty, [0, 0, 0, 0]);
    }

    #[test]
    fn source_data_pattern_and_bound() {
        let out = call(opnum::SOURCE_DATA, &encode_source_data(300), 1024).unwrap();
        let data = decode_data(&out, 300).unwrap();
        assert_eq!(data, source_pattern(300));
        assert_eq!((data[255], data[256], data[299]), (255, 0, 43));
        assert_eq!(
            call(opnum::SOURCE_DATA, &encode_source_data(u32::MAX), 1 << 20),
            Err(CallError::Fault(NCA_S_OUT_ARGS_TOO_BIG))
        );
        assert_eq!(
            call(9, &[], 1024),
            Err(CallError::Fault(NCA_S_OP_RNG_ERROR))
        );
    }
}
