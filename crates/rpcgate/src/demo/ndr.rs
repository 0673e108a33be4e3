//! The few NDR 2.0 (little-endian) building blocks the demo interfaces marshal, shared by the
//! demo server and [`crate::rpc_client`]: conformant byte arrays, conformant-varying strings
//! and unique-pointer referent ids (C706 chapter 14).
//!
//! Every reader checks a conformance against the bytes actually present (and against the
//! caller's expectation) before slicing, so a lying `max_count` costs nothing.

use rpch_proto::DecodeError;
use rpch_proto::codec::{Put, Reader};

/// First referent id of a stub, then +4 per pointer, the numbering Windows and Samba use.
/// Any non-zero value means "present"; only the null pointer (0) is special.
pub const FIRST_REFERENT_ID: u32 = 0x0002_0000;

/// A u32 that must equal `expected` (a conformance that repeats a length argument).
pub fn expect_u32(
    r: &mut Reader<'_>,
    what: &'static str,
    expected: u32,
) -> Result<(), DecodeError> {
    let got = r.u32(what)?;
    if got != expected {
        return Err(DecodeError::BadValue {
            what,
            value: u64::from(got),
        });
    }
    Ok(())
}

/// `[size_is(len)] uint8 data[]` as a top-level argument: u32 max_count then the bytes. The
/// count must equal `len`, as pidl-generated code insists.
pub fn read_conformant_bytes<'a>(
    r: &mut Reader<'a>,
    len: u32,
    what: &'static str,
) -> Result<&'a [u8], DecodeError> {
    expect_u32(r, what, len)?;
    let n = usize::try_from(len).map_err(|_| DecodeError::BadValue {
        what,
        value: u64::from(len),
    })?;
    r.take(n, what)
}

/// Appends a conformant byte array: u32 max_count then the bytes (no trailing padding: the
/// next field aligns itself).
pub fn put_conformant_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.put_u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
    out.put_bytes(bytes);
}

/// Appends a conformant-varying `[string]` of 8-bit characters: max_count, offset 0,
/// actual_count, the characters with their NUL when `max_count` leaves room for them, padding
/// to 4. `text` must not contain NUL; it is cut to fit `max_count`.
pub fn put_varying_string(out: &mut Vec<u8>, max_count: u32, text: &str) {
    let room = usize::try_from(max_count).unwrap_or(usize::MAX);
    let mut chars: Vec<u8> = text.bytes().take(room.saturating_sub(1)).collect();
    if room > 0 {
        chars.push(0);
    }
    out.put_u32(max_count);
    out.put_u32(0);
    out.put_u32(u32::try_from(chars.len()).unwrap_or(u32::MAX));
    out.put_bytes(&chars);
    out.pad_to(4);
}

/// Reads a conformant-varying 8-bit string; returns the text without its NUL.
pub fn read_varying_string(r: &mut Reader<'_>, what: &'static str) -> Result<String, DecodeError> {
    let max_count = r.u32(what)?;
    let offset = r.u32(what)?;
    let actual = r.u32(what)?;
    if offset != 0 || u64::from(offset) + u64::from(actual) > u64::from(max_count) {
        return Err(DecodeError::BadValue {
            what,
            value: u64::from(actual),
        });
    }
    let bytes = r.take(usize::try_from(actual).unwrap_or(usize::MAX), what)?;
    r.align(4)?;
    let text = bytes.split(|&b| b == 0).next().unwrap_or(&[]);
    Ok(String::from_utf8_lossy(text).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpch_proto::codec::to_hex;

    #[test]
    fn conformant_bytes_check_their_count() {
        let mut out = Vec::new();
        put_conformant_bytes(&mut out, b"abc");
        assert_eq!(to_hex(&out), "03000000616263");
        assert_eq!(
            read_conformant_bytes(&mut Reader::new(&out), 3, "data").unwrap(),
            b"abc"
        );
        assert!(read_conformant_bytes(&mut Reader::new(&out), 2, "data").is_err());
        let lying = [0xff, 0xff, 0xff, 0xff, 1];
        assert!(read_conformant_bytes(&mut Reader::new(&lying), u32::MAX, "data").is_err());
    }

    #[test]
    fn varying_strings_fit_their_buffer() {
        let mut out = Vec::new();
        put_varying_string(&mut out, 1, "");
        assert_eq!(
            to_hex(&out),
            "01000000 00000000 01000000 00000000".replace(' ', "")
        );
        let mut out = Vec::new();
        put_varying_string(&mut out, 4, "rpcgate");
        assert_eq!(
            read_varying_string(&mut Reader::new(&out), "s").unwrap(),
            "rpc"
        );
        let mut out = Vec::new();
        put_varying_string(&mut out, 0, "x");
        assert_eq!(out.len(), 12);
        assert_eq!(
            read_varying_string(&mut Reader::new(&out), "s").unwrap(),
            ""
        );
        let mut out = Vec::new();
        put_varying_string(&mut out, 32, "rpcgate-demo");
        assert_eq!(out.len(), 12 + 16);
        assert_eq!(
            read_varying_string(&mut Reader::new(&out), "s").unwrap(),
            "rpcgate-demo"
        );
        // actual_count beyond max_count is refused.
        let bad = [1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0];
        assert!(read_varying_string(&mut Reader::new(&bad), "s").is_err());
    }
}
