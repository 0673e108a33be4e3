//! SPNEGO (RFC 4178) as HTTP's `Negotiate` scheme (RFC 4559) carries it: just enough DER to
//! read a NegTokenInit or NegTokenResp and to write a NegTokenResp.
//!
//! ```text
//!  NegotiationToken ::= CHOICE {
//!      negTokenInit  [APPLICATION 0] { OID 1.3.6.1.5.5.2, [0] NegTokenInit }   (0x60 ...)
//!      negTokenResp  [1] NegTokenResp }                                         (0xa1 ...)
//!  NegTokenInit ::= SEQUENCE { mechTypes [0] SEQUENCE OF OID, reqFlags [1] OPTIONAL,
//!                              mechToken [2] OCTET STRING OPTIONAL, mechListMIC [3] OPTIONAL }
//!  NegTokenResp ::= SEQUENCE { negState [0] ENUMERATED OPTIONAL, supportedMech [1] OID OPTIONAL,
//!                              responseToken [2] OCTET STRING OPTIONAL, mechListMIC [3] OPTIONAL }
//! ```
//!
//! rpcgate decides the mechanism itself (NTLM here, Kerberos through GSS-API where built in)
//! and wraps the mechanism's tokens; the parser accepts only definite lengths of at most four
//! bytes and never reads outside its input.

/// DER content of the SPNEGO OID, 1.3.6.1.5.5.2.
pub const OID_SPNEGO: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x02];
/// DER content of the NTLMSSP OID, 1.3.6.1.4.1.311.2.2.10.
pub const OID_NTLMSSP: &[u8] = &[0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0x37, 0x02, 0x02, 0x0a];
/// DER content of the Kerberos 5 OID, 1.2.840.113554.1.2.2.
pub const OID_KRB5: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02];
/// DER content of Microsoft's legacy Kerberos OID, 1.2.840.48018.1.2.2.
pub const OID_MS_KRB5: &[u8] = &[0x2a, 0x86, 0x48, 0x82, 0xf7, 0x12, 0x01, 0x02, 0x02];

/// The mechanism a token or OID stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mech {
    Ntlm,
    Kerberos,
    Other,
}

impl Mech {
    fn from_oid(oid: &[u8]) -> Self {
        if oid == OID_NTLMSSP {
            Self::Ntlm
        } else if oid == OID_KRB5 || oid == OID_MS_KRB5 {
            Self::Kerberos
        } else {
            Self::Other
        }
    }
}

/// negState (RFC 4178 4.2.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NegState {
    AcceptCompleted = 0,
    AcceptIncomplete = 1,
    Reject = 2,
    RequestMic = 3,
}

/// A parsed NegotiationToken from a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientToken {
    /// The first token: the mechanisms the client offers, in preference order, and the
    /// optimistic token for the first of them.
    Init {
        mechs: Vec<Mech>,
        mech_token: Option<Vec<u8>>,
    },
    /// A continuation: the next token of the chosen mechanism.
    Resp { response_token: Option<Vec<u8>> },
}

/// Why a token is not SPNEGO as rpcgate understands it. The client is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed SPNEGO token: {0}")]
pub struct SpnegoError(&'static str);

/// Parses a client's NegotiationToken.
pub fn parse_client_token(token: &[u8]) -> Result<ClientToken, SpnegoError> {
    let (tag, body, _) = tlv(token).ok_or(SpnegoError("outer TLV"))?;
    match tag {
        0x60 => {
            let (oid_tag, oid, rest) = tlv(body).ok_or(SpnegoError("mech OID"))?;
            if oid_tag != 0x06 || oid != OID_SPNEGO {
                return Err(SpnegoError("not the SPNEGO OID"));
            }
            let (ctx_tag, init, _) = tlv(rest).ok_or(SpnegoError("NegTokenInit"))?;
            if ctx_tag != 0xa0 {
                return Err(SpnegoError("NegTokenInit tag"));
            }
            let (seq_tag, mut fields, _) = tlv(init).ok_or(SpnegoError("NegTokenInit"))?;
            if seq_tag != 0x30 {
                return Err(SpnegoError("NegTokenInit sequence"));
            }
            let mut mechs = Vec::new();
            let mut mech_token = None;
            while !fields.is_empty() {
                let (field_tag, value, rest) = tlv(fields).ok_or(SpnegoError("field"))?;
                fields = rest;
                match field_tag {
                    0xa0 => {
                        let (list_tag, mut list, _) = tlv(value).ok_or(SpnegoError("mechTypes"))?;
                        if list_tag != 0x30 {
                            return Err(SpnegoError("mechTypes sequence"));
                        }
                        while !list.is_empty() {
                            let (t, oid, rest) = tlv(list).ok_or(SpnegoError("mech OID"))?;
                            if t != 0x06 {
                                return Err(SpnegoError("mech OID tag"));
                            }
                            mechs.push(Mech::from_oid(oid));
                            list = rest;
                        }
                    }
                    0xa2 => mech_token = Some(octet_string(value)?),
                    _ => {}
                }
            }
            Ok(ClientToken::Init { mechs, mech_token })
        }
        0xa1 => {
            let (seq_tag, mut fields, _) = tlv(body).ok_or(SpnegoError("NegTokenResp"))?;
            if seq_tag != 0x30 {
                return Err(SpnegoError("NegTokenResp sequence"));
            }
            let mut response_token = None;
            while !fields.is_empty() {
                let (field_tag, value, rest) = tlv(fields).ok_or(SpnegoError("field"))?;
                fields = rest;
                if field_tag == 0xa2 {
                    response_token = Some(octet_string(value)?);
                }
            }
            Ok(ClientToken::Resp { response_token })
        }
        _ => Err(SpnegoError("neither NegTokenInit nor NegTokenResp")),
    }
}

/// Builds a NegTokenResp.
pub fn build_resp(state: NegState, mech: Option<&[u8]>, token: Option<&[u8]>) -> Vec<u8> {
    let mut fields = Vec::new();
    fields.extend(der(0xa0, &der(0x0a, &[state as u8])));
    if let Some(oid) = mech {
        fields.extend(der(0xa1, &der(0x06, oid)));
    }
    if let Some(token) = token {
        fields.extend(der(0xa2, &der(0x04, token)));
    }
    der(0xa1, &der(0x30, &fields))
}

/// Builds a NegTokenInit (used by tests and by rpcgate's own client side).
pub fn build_init(mechs: &[&[u8]], token: Option<&[u8]>) -> Vec<u8> {
    let oids: Vec<u8> = mechs.iter().flat_map(|oid| der(0x06, oid)).collect();
    let mut fields = der(0xa0, &der(0x30, &oids));
    if let Some(token) = token {
        fields.extend(der(0xa2, &der(0x04, token)));
    }
    let mut body = der(0x06, OID_SPNEGO);
    body.extend(der(0xa0, &der(0x30, &fields)));
    der(0x60, &body)
}

fn octet_string(value: &[u8]) -> Result<Vec<u8>, SpnegoError> {
    match tlv(value) {
        Some((0x04, bytes, _)) => Ok(bytes.to_vec()),
        _ => Err(SpnegoError("OCTET STRING")),
    }
}

/// One DER TLV at the start of `input`: (tag, value, rest).
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 {
            return None;
        }
        let (bytes, after) = (rest.get(..count)?, rest.get(count..)?);
        rest = after;
        bytes.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b))
    };
    Some((tag, rest.get(..len)?, rest.get(len..)?))
}

/// A DER TLV with a definite length.
fn der(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = value.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        let significant = bytes.get(skip..).unwrap_or_default();
        out.push(0x80 | significant.len() as u8);
        out.extend_from_slice(significant);
    }
    out.extend_from_slice(value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_round_trip() {
        let token = vec![7u8; 300];
        let init = build_init(&[OID_KRB5, OID_NTLMSSP], Some(&token));
        assert_eq!(
            parse_client_token(&init).unwrap(),
            ClientToken::Init {
                mechs: vec![Mech::Kerberos, Mech::Ntlm],
                mech_token: Some(token)
            }
        );
    }

    #[test]
    fn resp_round_trip() {
        let resp = build_resp(NegState::AcceptIncomplete, Some(OID_NTLMSSP), Some(b"abc"));
        assert_eq!(
            parse_client_token(&resp).unwrap(),
            ClientToken::Resp {
                response_token: Some(b"abc".to_vec())
            }
        );
        // Exact bytes of a short NegTokenResp (as Windows sends it).
        assert_eq!(
            build_resp(NegState::AcceptCompleted, None, None),
            [0xa1, 0x07, 0x30, 0x05, 0xa0, 0x03, 0x0a, 0x01, 0x00]
        );
    }

    #[test]
    fn garbage_is_an_error() {
        let init = build_init(&[OID_NTLMSSP], Some(&[1, 2, 3]));
        for len in 0..init.len() {
            assert!(parse_client_token(&init[..len]).is_err());
        }
        assert!(parse_client_token(&[0x60, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(parse_client_token(b"NTLMSSP\0").is_err());
    }
}
