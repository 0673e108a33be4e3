//! Byte-level reading and writing shared by every PDU codec.
//!
//! [`Reader`] is a cursor over an untrusted byte slice: every read checks the remaining length
//! first and returns [`DecodeError::Truncated`] instead of slicing out of bounds, so no input can
//! make a decoder panic. Writing goes straight into a `Vec<u8>` through the [`Put`] helpers;
//! every integer on the wire is little-endian (NDR with `drep[0] = 0x10`), the only data
//! representation MS-RPCH allows for RTS PDUs and the one this project emits.

use crate::error::DecodeError;

/// A bounds-checked cursor over a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading at the beginning of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The unread tail, without consuming it.
    pub fn rest(&self) -> &'a [u8] {
        self.buf.get(self.pos..).unwrap_or(&[])
    }

    /// Takes exactly `n` bytes; `what` names the field for the error message.
    pub fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or(DecodeError::Truncated {
                what,
                needed: n,
                available: self.remaining(),
            })?;
        let out = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated {
            what,
            needed: n,
            available: self.remaining(),
        })?;
        self.pos = end;
        Ok(out)
    }

    /// Skips `n` bytes.
    pub fn skip(&mut self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        self.take(n, what).map(|_| ())
    }

    /// Skips padding so that the position becomes a multiple of `align` (relative to the start
    /// of the slice, which for stub data is the start of the NDR stream).
    pub fn align(&mut self, align: usize) -> Result<(), DecodeError> {
        let pad = (align - self.pos % align) % align;
        self.skip(pad, "alignment padding")
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(what)?))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    pub fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Takes a fixed-size array.
    pub fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }
}

/// Little-endian writers for `Vec<u8>`.
pub trait Put {
    fn put_u8(&mut self, v: u8);
    fn put_u16(&mut self, v: u16);
    fn put_u32(&mut self, v: u32);
    fn put_u64(&mut self, v: u64);
    fn put_bytes(&mut self, v: &[u8]);
    /// Appends zero bytes until the length is a multiple of `align`.
    fn pad_to(&mut self, align: usize);
}

impl Put for Vec<u8> {
    fn put_u8(&mut self, v: u8) {
        self.push(v);
    }
    fn put_u16(&mut self, v: u16) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u32(&mut self, v: u32) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_u64(&mut self, v: u64) {
        self.extend_from_slice(&v.to_le_bytes());
    }
    fn put_bytes(&mut self, v: &[u8]) {
        self.extend_from_slice(v);
    }
    fn pad_to(&mut self, align: usize) {
        while !self.len().is_multiple_of(align) {
            self.push(0);
        }
    }
}

/// Lower-case hex of `bytes`, for logs and test vectors.
pub fn to_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// Parses hex, ignoring ASCII whitespace; `None` on any other character or an odd digit count.
pub fn from_hex(text: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|pair| {
            let s = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(s, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reader_refuses_to_read_past_the_end() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert_eq!(r.u16("a").unwrap(), 0x0201);
        let err = r.u32("field").unwrap_err();
        assert_eq!(
            err,
            DecodeError::Truncated {
                what: "field",
                needed: 4,
                available: 1
            }
        );
        assert_eq!(r.u8("b").unwrap(), 3);
        assert!(r.take(usize::MAX, "huge").is_err());
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(from_hex("0a ff\n10").unwrap(), vec![0x0a, 0xff, 0x10]);
        assert_eq!(to_hex(&[0x0a, 0xff]), "0aff");
        assert!(from_hex("abc").is_none());
        assert!(from_hex("zz").is_none());
    }
}
