//! NTLM, the server side (MS-NLMP), as HTTP's connection-based `NTLM` scheme (MS-NTHT) and as
//! the NTLM mechanism inside SPNEGO.
//!
//! ```text
//!  client                                         rpcgate
//!    │ NEGOTIATE_MESSAGE (type 1: flags)              │
//!    │───────────────────────────────────────────────▶│  new random 8-byte server challenge
//!    │ CHALLENGE_MESSAGE (type 2: challenge, target   │
//!    │   info AV pairs: NetBIOS/DNS names, timestamp) │
//!    │◀───────────────────────────────────────────────│
//!    │ AUTHENTICATE_MESSAGE (type 3: user, domain,    │
//!    │   NTLMv2 response = NTProofStr ‖ client blob)  │
//!    │───────────────────────────────────────────────▶│  HMAC-MD5 over the challenge and the
//!    │                                                │  blob with the user's NT hash (MS-NLMP 3.3.2)
//! ```
//!
//! Only verification is done here: the session key and the MIC are not needed by HTTP
//! authentication (there is no NTLM signing or sealing of HTTP traffic) and are not checked.
//! NTLMv1 (24-byte responses, with or without extended session security) is verified only when
//! the caller allows it; LM responses alone are never accepted. Every parser checks lengths
//! and offsets before slicing and never panics.

use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;
use subtle::ConstantTimeEq;

/// `NTLMSSP\0`, the first 8 bytes of every NTLM message.
pub const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";

/// NegotiateFlags bits (MS-NLMP 2.2.2.5) that rpcgate reads or sets.
pub mod flags {
    pub const UNICODE: u32 = 0x0000_0001;
    pub const OEM: u32 = 0x0000_0002;
    pub const REQUEST_TARGET: u32 = 0x0000_0004;
    pub const SIGN: u32 = 0x0000_0010;
    pub const SEAL: u32 = 0x0000_0020;
    pub const NTLM: u32 = 0x0000_0200;
    pub const ANONYMOUS: u32 = 0x0000_0800;
    pub const ALWAYS_SIGN: u32 = 0x0000_8000;
    pub const TARGET_TYPE_DOMAIN: u32 = 0x0001_0000;
    pub const EXTENDED_SESSIONSECURITY: u32 = 0x0008_0000;
    pub const TARGET_INFO: u32 = 0x0080_0000;
    pub const VERSION: u32 = 0x0200_0000;
    pub const N128: u32 = 0x2000_0000;
    pub const KEY_EXCH: u32 = 0x4000_0000;
    pub const N56: u32 = 0x8000_0000;
}

/// AV pair ids of the target info (MS-NLMP 2.2.2.1).
mod av {
    pub const EOL: u16 = 0;
    pub const NB_COMPUTER_NAME: u16 = 1;
    pub const NB_DOMAIN_NAME: u16 = 2;
    pub const DNS_COMPUTER_NAME: u16 = 3;
    pub const DNS_DOMAIN_NAME: u16 = 4;
    pub const TIMESTAMP: u16 = 7;
}

/// Why an NTLM message was not accepted. The client is at fault (or is not NTLM at all).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NtlmError {
    #[error("not an NTLM message (no NTLMSSP signature)")]
    NotNtlm,
    #[error("NTLM message type {got}, expected {expected}")]
    WrongType { expected: u32, got: u32 },
    #[error("NTLM message truncated or a field points outside it ({what})")]
    Malformed { what: &'static str },
}

/// The server's names, announced in the CHALLENGE_MESSAGE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerNames {
    /// NetBIOS domain name (the TargetName and MsvAvNbDomainName).
    pub nb_domain: String,
    /// NetBIOS computer name (MsvAvNbComputerName; impacket uses it as the default RPC server
    /// name when none is given, so it should be a name ValidPorts allows).
    pub nb_computer: String,
    /// DNS domain name (MsvAvDnsDomainName).
    pub dns_domain: String,
    /// DNS computer name (MsvAvDnsComputerName).
    pub dns_computer: String,
}

/// A parsed NEGOTIATE_MESSAGE (type 1): only its flags matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiate {
    pub flags: u32,
}

/// Reads the message type of an NTLM message (1, 2 or 3).
pub fn message_type(msg: &[u8]) -> Result<u32, NtlmError> {
    if msg.get(..8) != Some(SIGNATURE.as_slice()) {
        return Err(NtlmError::NotNtlm);
    }
    u32_at(msg, 8).ok_or(NtlmError::Malformed {
        what: "message type",
    })
}

/// Parses a NEGOTIATE_MESSAGE (MS-NLMP 2.2.1.1).
pub fn parse_negotiate(msg: &[u8]) -> Result<Negotiate, NtlmError> {
    expect_type(msg, 1)?;
    let flags = u32_at(msg, 12).ok_or(NtlmError::Malformed { what: "flags" })?;
    Ok(Negotiate { flags })
}

/// The flags of the CHALLENGE_MESSAGE for a client that sent `client` flags: the client's
/// requests that the server can honour, plus what rpcgate always announces.
pub fn challenge_flags(client: u32) -> u32 {
    use flags::*;
    let echoed = client
        & (UNICODE | SIGN | SEAL | ALWAYS_SIGN | EXTENDED_SESSIONSECURITY | N128 | N56 | KEY_EXCH);
    let charset = if client & UNICODE != 0 { 0 } else { OEM };
    echoed | charset | REQUEST_TARGET | NTLM | TARGET_TYPE_DOMAIN | TARGET_INFO | VERSION
}

/// Builds a CHALLENGE_MESSAGE (MS-NLMP 2.2.1.2) with target info AV pairs.
/// `timestamp` is a Windows FILETIME (100 ns since 1601-01-01).
pub fn build_challenge(
    names: &ServerNames,
    negotiate_flags: u32,
    server_challenge: [u8; 8],
    timestamp: u64,
) -> Vec<u8> {
    let flags = challenge_flags(negotiate_flags);
    let unicode = flags & flags::UNICODE != 0;
    let target_name = encode_str(&names.nb_domain, unicode);
    let mut info = Vec::new();
    let mut pair = |id: u16, value: &[u8]| {
        info.extend_from_slice(&id.to_le_bytes());
        info.extend_from_slice(&u16::try_from(value.len()).unwrap_or(0).to_le_bytes());
        if value.len() <= usize::from(u16::MAX) {
            info.extend_from_slice(value);
        }
    };
    // AV pair values are always UTF-16LE, whatever the negotiated charset.
    pair(av::NB_DOMAIN_NAME, &utf16le(&names.nb_domain));
    pair(av::NB_COMPUTER_NAME, &utf16le(&names.nb_computer));
    pair(av::DNS_DOMAIN_NAME, &utf16le(&names.dns_domain));
    pair(av::DNS_COMPUTER_NAME, &utf16le(&names.dns_computer));
    pair(av::TIMESTAMP, &timestamp.to_le_bytes());
    pair(av::EOL, &[]);

    const HEADER: usize = 56;
    let mut out = Vec::with_capacity(HEADER + target_name.len() + info.len());
    out.extend_from_slice(SIGNATURE);
    out.extend_from_slice(&2u32.to_le_bytes());
    push_fields(&mut out, target_name.len(), HEADER);
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&server_challenge);
    out.extend_from_slice(&[0; 8]);
    push_fields(&mut out, info.len(), HEADER + target_name.len());
    // Version: 10.0 build 20348, NTLMSSP_REVISION_W2K3 (15).
    out.extend_from_slice(&[10, 0, 0x5c, 0x4f, 0, 0, 0, 15]);
    out.extend_from_slice(&target_name);
    out.extend_from_slice(&info);
    out
}

/// A parsed AUTHENTICATE_MESSAGE (MS-NLMP 2.2.1.3).
#[derive(Clone, PartialEq, Eq)]
pub struct Authenticate {
    pub flags: u32,
    pub lm_response: Vec<u8>,
    pub nt_response: Vec<u8>,
    pub domain: String,
    pub user: String,
    pub workstation: String,
}

impl std::fmt::Debug for Authenticate {
    // Responses are derived from the password: never printed.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticate")
            .field("flags", &format_args!("{:#010x}", self.flags))
            .field("domain", &self.domain)
            .field("user", &self.user)
            .field("workstation", &self.workstation)
            .field("nt_response_len", &self.nt_response.len())
            .finish_non_exhaustive()
    }
}

impl Authenticate {
    /// An anonymous AUTHENTICATE_MESSAGE (empty user and responses), never accepted.
    pub fn is_anonymous(&self) -> bool {
        self.user.is_empty()
            || (self.nt_response.is_empty() && self.lm_response.iter().all(|b| *b == 0))
    }
}

/// Parses an AUTHENTICATE_MESSAGE.
pub fn parse_authenticate(msg: &[u8]) -> Result<Authenticate, NtlmError> {
    expect_type(msg, 3)?;
    let lm_response = field(msg, 12, "LmChallengeResponse")?.to_vec();
    let nt_response = field(msg, 20, "NtChallengeResponse")?.to_vec();
    let domain = field(msg, 28, "DomainName")?;
    let user = field(msg, 36, "UserName")?;
    let workstation = field(msg, 44, "Workstation")?;
    // The flags follow the session key fields; very old clients end the header before them
    // and are Unicode.
    let flags = u32_at(msg, 60).unwrap_or(flags::UNICODE);
    let unicode = flags & flags::UNICODE != 0;
    Ok(Authenticate {
        flags,
        lm_response,
        nt_response,
        domain: decode_str(domain, unicode),
        user: decode_str(user, unicode),
        workstation: decode_str(workstation, unicode),
    })
}

/// Which kind of response an AUTHENTICATE_MESSAGE carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseKind {
    /// NTLMv2: NTProofStr and a client blob.
    V2,
    /// NTLMv1 (24 bytes), possibly with extended session security.
    V1,
    /// Only an LM response (or nothing usable).
    LmOnly,
}

/// The response kind of `auth`.
pub fn response_kind(auth: &Authenticate) -> ResponseKind {
    match auth.nt_response.len() {
        n if n > 24 => ResponseKind::V2,
        24 => ResponseKind::V1,
        _ => ResponseKind::LmOnly,
    }
}

/// The NT hash of a password: MD4 of its UTF-16LE encoding (MS-NLMP 3.3.1, NTOWFv1).
pub fn nt_hash(password: &str) -> [u8; 16] {
    use md4::{Digest, Md4};
    let digest = Md4::digest(utf16le(password));
    let mut out = [0u8; 16];
    out.copy_from_slice(digest.as_slice());
    out
}

/// NTOWFv2 (MS-NLMP 3.3.2): HMAC-MD5 keyed with the NT hash over UTF-16LE(UPPER(user) ‖
/// domain).
pub fn ntowf_v2(nt_hash: &[u8; 16], user: &str, domain: &str) -> [u8; 16] {
    let mut text = user.to_uppercase();
    text.push_str(domain);
    hmac_md5(nt_hash, &[&utf16le(&text)])
}

/// Verifies an NTLMv2 response against the user's NT hash. The domain the client used is
/// tried first, then its upper-case form and the empty domain (as Samba does), each with a
/// constant-time comparison.
pub fn verify_v2(auth: &Authenticate, nt_hash: &[u8; 16], server_challenge: &[u8; 8]) -> bool {
    let (Some(proof), Some(blob)) = (auth.nt_response.get(..16), auth.nt_response.get(16..)) else {
        return false;
    };
    let upper = auth.domain.to_uppercase();
    let mut ok = subtle::Choice::from(0u8);
    for domain in [auth.domain.as_str(), upper.as_str(), ""] {
        let key = ntowf_v2(nt_hash, &auth.user, domain);
        let expected = hmac_md5(&key, &[server_challenge, blob]);
        ok |= expected.ct_eq(proof);
    }
    ok.into()
}

/// Verifies an NTLMv1 response (DESL of the NT hash over the server challenge, or with
/// extended session security over MD5(server challenge ‖ client challenge)[..8]).
pub fn verify_v1(auth: &Authenticate, nt_hash: &[u8; 16], server_challenge: &[u8; 8]) -> bool {
    if auth.nt_response.len() != 24 {
        return false;
    }
    let mut challenge = *server_challenge;
    if auth.flags & flags::EXTENDED_SESSIONSECURITY != 0 {
        let Some(client_challenge) = auth.lm_response.get(..8) else {
            return false;
        };
        use md5::Digest;
        let digest = Md5::new()
            .chain_update(server_challenge)
            .chain_update(client_challenge)
            .finalize();
        if let Some(first) = digest.get(..8) {
            challenge.copy_from_slice(first);
        }
    }
    let expected = desl(nt_hash, &challenge);
    expected.ct_eq(auth.nt_response.as_slice()).into()
}

/// DESL (MS-NLMP 6): the 16-byte key padded to 21 bytes, three DES keys of 7 bytes each.
fn desl(key: &[u8; 16], data: &[u8; 8]) -> [u8; 24] {
    use des::cipher::{BlockCipherEncrypt, KeyInit as _};
    let mut padded = [0u8; 21];
    padded[..16].copy_from_slice(key);
    let mut out = [0u8; 24];
    for (chunk, dst) in padded.chunks(7).zip(out.chunks_mut(8)) {
        let mut key7 = [0u8; 7];
        key7.copy_from_slice(chunk);
        let cipher = des::Des::new(&des_key(key7).into());
        let mut block = (*data).into();
        cipher.encrypt_block(&mut block);
        dst.copy_from_slice(block.as_slice());
    }
    out
}

/// Spreads 56 key bits over 8 bytes (the low bit of each byte is DES parity, ignored).
fn des_key(k: [u8; 7]) -> [u8; 8] {
    [
        k[0],
        (k[0] << 7) | (k[1] >> 1),
        (k[1] << 6) | (k[2] >> 2),
        (k[2] << 5) | (k[3] >> 3),
        (k[3] << 4) | (k[4] >> 4),
        (k[4] << 3) | (k[5] >> 5),
        (k[5] << 2) | (k[6] >> 6),
        k[6] << 1,
    ]
}

fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    let mut mac = match <Hmac<Md5> as KeyInit>::new_from_slice(key) {
        Ok(mac) => mac,
        // HMAC takes keys of any length; this cannot happen.
        Err(_) => return [0; 16],
    };
    for part in parts {
        mac.update(part);
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(mac.finalize().into_bytes().as_slice());
    out
}

/// The current time as a Windows FILETIME.
pub fn filetime_now() -> u64 {
    const UNIX_TO_1601_SECS: u64 = 11_644_473_600;
    let since_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (since_unix.as_secs() + UNIX_TO_1601_SECS) * 10_000_000
        + u64::from(since_unix.subsec_nanos()) / 100
}

fn expect_type(msg: &[u8], expected: u32) -> Result<(), NtlmError> {
    let got = message_type(msg)?;
    if got != expected {
        return Err(NtlmError::WrongType { expected, got });
    }
    Ok(())
}

fn u16_at(msg: &[u8], at: usize) -> Option<u16> {
    let bytes = msg.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([*bytes.first()?, *bytes.get(1)?]))
}

fn u32_at(msg: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = msg.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

/// A (length, max length, offset) field and the bytes it points at.
fn field<'a>(msg: &'a [u8], at: usize, what: &'static str) -> Result<&'a [u8], NtlmError> {
    let malformed = NtlmError::Malformed { what };
    let len = usize::from(u16_at(msg, at).ok_or(malformed.clone())?);
    let offset = u32_at(msg, at + 4).ok_or(malformed.clone())? as usize;
    if len == 0 {
        return Ok(&[]);
    }
    msg.get(offset..offset.checked_add(len).ok_or(malformed.clone())?)
        .ok_or(malformed)
}

fn push_fields(out: &mut Vec<u8>, len: usize, offset: usize) {
    let len = u16::try_from(len).unwrap_or(0);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&u32::try_from(offset).unwrap_or(0).to_le_bytes());
}

/// UTF-16LE bytes of a string.
pub fn utf16le(text: &str) -> Vec<u8> {
    text.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn encode_str(text: &str, unicode: bool) -> Vec<u8> {
    if unicode {
        utf16le(text)
    } else {
        text.chars()
            .map(|c| u8::try_from(c).unwrap_or(b'?'))
            .collect()
    }
}

fn decode_str(bytes: &[u8], unicode: bool) -> String {
    if unicode {
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .filter_map(|pair| <[u8; 2]>::try_from(pair).ok().map(u16::from_le_bytes))
            .collect();
        String::from_utf16_lossy(&units)
    } else {
        bytes.iter().map(|&b| char::from(b)).collect()
    }
}

#[cfg(test)]
pub(crate) mod tests;
