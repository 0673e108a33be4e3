//! Presentation syntax identifiers (C706 12.6.3.1 `p_syntax_id_t`): an interface or transfer
//! syntax UUID plus its version, as they travel in bind PDUs, in their GUID text form, and the
//! well-known transfer syntaxes (NDR20, NDR64, MS-RPCE bind-time feature negotiation).
//!
//! The UUID is kept in wire order. Its text form is the Windows GUID form, whose first three
//! fields are little-endian on the wire while the last eight bytes are written as they are;
//! getting this wrong swaps bytes in logs and breaks interface matching, so both directions
//! live here and nowhere else.

use std::fmt;
use std::str::FromStr;

use crate::codec::{Put, Reader};
use crate::error::DecodeError;

/// An abstract or transfer syntax: a UUID in wire order and `major | minor << 16`.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SyntaxId {
    pub uuid: [u8; 16],
    pub version: u32,
}

/// Text that is not `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx[ vMAJOR.MINOR]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid interface id {text:?}: expected xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx vMAJOR.MINOR"
)]
pub struct SyntaxIdParseError {
    pub text: String,
}

/// The first eight wire bytes of every bind-time feature negotiation syntax
/// (MS-RPCE 3.3.1.5.3: UUID prefix `6CB71C2C-9812-4540`).
pub const BIND_TIME_FEATURE_PREFIX: [u8; 8] = [0x2c, 0x1c, 0xb7, 0x6c, 0x12, 0x98, 0x40, 0x45];

/// MS-RPCE 2.2.2.14 BindTimeFeatureNegotiationBitmask bits (first octet).
pub mod features {
    /// SecurityContextMultiplexingSupported.
    pub const SECURITY_CONTEXT_MULTIPLEXING: u8 = 0x01;
    /// KeepConnectionOnOrphanSupported.
    pub const KEEP_CONNECTION_ON_ORPHAN: u8 = 0x02;
}

impl SyntaxId {
    /// Encoded size: 16-byte UUID + u32 version.
    pub const LEN: usize = 20;

    /// All zeroes: the transfer syntax of a rejected context or a negotiate_ack.
    pub const NULL: SyntaxId = SyntaxId {
        uuid: [0; 16],
        version: 0,
    };

    /// NDR 2.0, `8a885d04-1ceb-11c9-9fe8-08002b104860 v2.0`.
    pub const NDR20: SyntaxId = SyntaxId::from_fields(
        0x8a88_5d04,
        0x1ceb,
        0x11c9,
        [0x9f, 0xe8, 0x08, 0x00, 0x2b, 0x10, 0x48, 0x60],
        2,
        0,
    );

    /// NDR64, `71710533-beba-4937-8319-b5dbef9ccc36 v1.0`.
    pub const NDR64: SyntaxId = SyntaxId::from_fields(
        0x7171_0533,
        0xbeba,
        0x4937,
        [0x83, 0x19, 0xb5, 0xdb, 0xef, 0x9c, 0xcc, 0x36],
        1,
        0,
    );

    /// Builds an id from the GUID's fields as written in text (`data1-data2-data3-data4`).
    pub const fn from_fields(
        data1: u32,
        data2: u16,
        data3: u16,
        data4: [u8; 8],
        major: u16,
        minor: u16,
    ) -> Self {
        let a = data1.to_le_bytes();
        let b = data2.to_le_bytes();
        let c = data3.to_le_bytes();
        let d = data4;
        Self {
            uuid: [
                a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5],
                d[6], d[7],
            ],
            version: major as u32 | (minor as u32) << 16,
        }
    }

    /// Builds an id from GUID text (`8a885d04-1ceb-11c9-9fe8-08002b104860`) and a version.
    pub fn from_guid(guid: &str, major: u16, minor: u16) -> Result<Self, SyntaxIdParseError> {
        let uuid = parse_guid(guid).ok_or_else(|| SyntaxIdParseError {
            text: guid.to_string(),
        })?;
        Ok(Self {
            uuid,
            version: u32::from(major) | u32::from(minor) << 16,
        })
    }

    pub fn major(&self) -> u16 {
        (self.version & 0xffff) as u16
    }

    pub fn minor(&self) -> u16 {
        (self.version >> 16) as u16
    }

    /// The UUID in Windows GUID text form, lower case.
    pub fn guid(&self) -> String {
        let u = &self.uuid;
        let data1 = u32::from_le_bytes([u[0], u[1], u[2], u[3]]);
        let data2 = u16::from_le_bytes([u[4], u[5]]);
        let data3 = u16::from_le_bytes([u[6], u[7]]);
        format!(
            "{data1:08x}-{data2:04x}-{data3:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]
        )
    }

    /// The bind-time feature negotiation syntax offering `bits` (MS-RPCE 3.3.1.5.3), v1.0.
    pub fn bind_time_feature_negotiation(bits: u8) -> Self {
        let mut uuid = [0u8; 16];
        let (prefix, bitmask) = uuid.split_at_mut(8);
        prefix.copy_from_slice(&BIND_TIME_FEATURE_PREFIX);
        if let Some(first) = bitmask.first_mut() {
            *first = bits;
        }
        Self { uuid, version: 1 }
    }

    /// The 8-octet BindTimeFeatureNegotiationBitmask when this is a feature negotiation
    /// transfer syntax (recognised by its 8-byte prefix alone, as Windows does), else `None`.
    pub fn bind_time_features(&self) -> Option<[u8; 8]> {
        let (prefix, bitmask) = self.uuid.split_at(8);
        if prefix != BIND_TIME_FEATURE_PREFIX {
            return None;
        }
        bitmask.try_into().ok()
    }

    /// Reads the 20 wire bytes.
    pub fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(Self {
            uuid: r.array("syntax UUID")?,
            version: r.u32("syntax version")?,
        })
    }

    /// Appends the 20 wire bytes.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.put_bytes(&self.uuid);
        out.put_u32(self.version);
    }
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx vMAJOR.MINOR`.
impl fmt::Display for SyntaxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} v{}.{}", self.guid(), self.major(), self.minor())
    }
}

impl fmt::Debug for SyntaxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SyntaxId({self})")
    }
}

/// Parses the [`Display`](fmt::Display) form; a missing version means v1.0 and a missing
/// minor means `.0` (`... v2` is v2.0), which is how interface ids are usually written.
impl FromStr for SyntaxId {
    type Err = SyntaxIdParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || SyntaxIdParseError {
            text: text.to_string(),
        };
        let mut parts = text.split_whitespace();
        let guid = parts.next().ok_or_else(err)?;
        let (major, minor) = match parts.next() {
            None => (1, 0),
            Some(v) => {
                let v = v.strip_prefix('v').ok_or_else(err)?;
                let (major, minor) = v.split_once('.').unwrap_or((v, "0"));
                (
                    major.parse().map_err(|_| err())?,
                    minor.parse().map_err(|_| err())?,
                )
            }
        };
        if parts.next().is_some() {
            return Err(err());
        }
        Self::from_guid(guid, major, minor)
    }
}

/// Parses GUID text into wire order; `None` on any deviation from 8-4-4-4-12 hex digits.
fn parse_guid(text: &str) -> Option<[u8; 16]> {
    let text = text
        .strip_prefix('{')
        .and_then(|t| t.strip_suffix('}'))
        .unwrap_or(text);
    let groups: Vec<&str> = text.split('-').collect();
    let [g1, g2, g3, g4, g5] = groups.as_slice() else {
        return None;
    };
    if g1.len() != 8 || g2.len() != 4 || g3.len() != 4 || g4.len() != 4 || g5.len() != 12 {
        return None;
    }
    if !text.bytes().all(|b| b == b'-' || b.is_ascii_hexdigit()) {
        return None;
    }
    let data1 = u32::from_str_radix(g1, 16).ok()?;
    let data2 = u16::from_str_radix(g2, 16).ok()?;
    let data3 = u16::from_str_radix(g3, 16).ok()?;
    let tail = crate::codec::from_hex(&format!("{g4}{g5}"))?;
    let data4: [u8; 8] = tail.try_into().ok()?;
    Some(SyntaxId::from_fields(data1, data2, data3, data4, 0, 0).uuid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn well_known_syntaxes_have_their_wire_bytes() {
        let mut out = Vec::new();
        SyntaxId::NDR20.write(&mut out);
        assert_eq!(
            crate::codec::to_hex(&out),
            "045d888aeb1cc9119fe808002b10486002000000"
        );
        assert_eq!(
            SyntaxId::NDR20.to_string(),
            "8a885d04-1ceb-11c9-9fe8-08002b104860 v2.0"
        );
        assert_eq!(
            SyntaxId::NDR64.to_string(),
            "71710533-beba-4937-8319-b5dbef9ccc36 v1.0"
        );
        assert_eq!(
            SyntaxId::from_guid("71710533-BEBA-4937-8319-B5DBEF9CCC36", 1, 0).unwrap(),
            SyntaxId::NDR64
        );
    }

    #[test]
    fn text_round_trips_and_rejects_garbage() {
        let mgmt: SyntaxId = "afa8bd80-7d8a-11c9-bef4-08002b102989 v1.0".parse().unwrap();
        assert_eq!(
            crate::codec::to_hex(&mgmt.uuid),
            "80bda8af8a7dc911bef408002b102989"
        );
        assert_eq!(mgmt.major(), 1);
        assert_eq!(mgmt.minor(), 0);
        assert_eq!(mgmt.to_string().parse::<SyntaxId>().unwrap(), mgmt);
        let v = "{12345778-1234-abcd-ef00-0123456789ac} v3.2"
            .parse::<SyntaxId>()
            .unwrap();
        assert_eq!((v.major(), v.minor()), (3, 2));
        assert_eq!(v.version, 0x0002_0003);
        assert_eq!(
            "12345778-1234-abcd-ef00-0123456789ac v7"
                .parse::<SyntaxId>()
                .unwrap()
                .version,
            7
        );
        for bad in [
            "",
            "8a885d04-1ceb-11c9-9fe8-08002b10486",
            "8a885d04-1ceb-11c9-9fe8-08002b1048600",
            "8a885d041ceb-11c9-9fe8-08002b104860",
            "8a885d04-1ceb-11c9-9fe8-08002b10486g",
            "+a885d04-1ceb-11c9-9fe8-08002b104860",
            "8a885d04-1ceb-11c9-9fe8-08002b104860 2.0",
            "8a885d04-1ceb-11c9-9fe8-08002b104860 v2.x",
            "8a885d04-1ceb-11c9-9fe8-08002b104860 v2.0 extra",
        ] {
            assert!(bad.parse::<SyntaxId>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn feature_negotiation_syntax_is_recognised_by_prefix() {
        let offer = SyntaxId::bind_time_feature_negotiation(
            features::SECURITY_CONTEXT_MULTIPLEXING | features::KEEP_CONNECTION_ON_ORPHAN,
        );
        assert_eq!(
            offer.to_string(),
            "6cb71c2c-9812-4540-0300-000000000000 v1.0"
        );
        assert_eq!(offer.bind_time_features(), Some([3, 0, 0, 0, 0, 0, 0, 0]));
        let other_bits: SyntaxId = "6cb71c2c-9812-4540-0100-000000000000 v1.0".parse().unwrap();
        assert_eq!(
            other_bits.bind_time_features(),
            Some([1, 0, 0, 0, 0, 0, 0, 0])
        );
        assert_eq!(SyntaxId::NDR20.bind_time_features(), None);
        assert_eq!(SyntaxId::NULL.bind_time_features(), None);
    }
}
