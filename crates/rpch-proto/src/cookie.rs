//! 16-byte RTS cookies (MS-RPCH 2.2.3.1): virtual-connection, channel and association-group ids.
//!
//! Cookies are compared as raw bytes. Their text form is a GUID, which is mixed-endian (the
//! first three fields little-endian on the wire), so that a cookie printed by rpcgate reads the
//! same as the GUID a Windows client logs and the `SessionId` pragma FreeRDP sends.

use std::fmt;

/// An opaque 16-byte cookie.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Cookie(pub [u8; 16]);

impl Cookie {
    /// The raw wire bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            b[3],
            b[2],
            b[1],
            b[0],
            b[5],
            b[4],
            b[7],
            b[6],
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }
}

impl fmt::Debug for Cookie {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cookie({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_as_a_mixed_endian_guid() {
        // The virtual-connection cookie of the impacket capture in client-bytes.md.
        let bytes = crate::codec::from_hex("8896a71e9633b9589f63ec5f5f8b9824").unwrap();
        let cookie = Cookie(bytes.try_into().unwrap());
        assert_eq!(cookie.to_string(), "1ea79688-3396-58b9-9f63-ec5f5f8b9824");
    }
}
