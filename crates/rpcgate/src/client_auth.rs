//! HTTP authentication, the client side: Basic (RFC 7617) and NTLM (MS-NTHT over MS-NLMP,
//! NTLMv2 only), for rpcgate's own client (`rpcgate ping`, tests).
//!
//! ```text
//!  client                                              proxy
//!    │ RPC_IN_DATA, Content-Length: 0,                   │
//!    │   Authorization: NTLM <NEGOTIATE_MESSAGE>         │
//!    │──────────────────────────────────────────────────▶│
//!    │ 401, WWW-Authenticate: NTLM <CHALLENGE_MESSAGE>   │  (same connection)
//!    │◀──────────────────────────────────────────────────│
//!    │ the real request, Authorization: NTLM <AUTHENTICATE_MESSAGE>
//!    │──────────────────────────────────────────────────▶│
//! ```
//!
//! NTLM authenticates the connection, so the handshake runs on the stream the channel then
//! uses. Basic needs no round trip.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use md5::Md5;

use crate::auth::ntlm::{self, SIGNATURE, flags};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Credentials and the scheme to present them with.
#[derive(Clone, PartialEq, Eq)]
pub enum HttpAuth {
    Basic { user: String, password: String },
    Ntlm { user: String, password: String },
}

impl std::fmt::Debug for HttpAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({})", self.scheme(), self.user())
    }
}

impl HttpAuth {
    /// The scheme name as it appears in `WWW-Authenticate`.
    pub fn scheme(&self) -> &'static str {
        match self {
            Self::Basic { .. } => "Basic",
            Self::Ntlm { .. } => "NTLM",
        }
    }

    /// The user name as given (`DOMAIN\user`, `user@domain` or `user`).
    pub fn user(&self) -> &str {
        match self {
            Self::Basic { user, .. } | Self::Ntlm { user, .. } => user,
        }
    }

    /// `Authorization: Basic ...`; `None` for NTLM, which needs [`ntlm_negotiate_header`] first.
    pub fn basic_header(&self) -> Option<String> {
        match self {
            Self::Basic { user, password } => Some(format!(
                "Authorization: Basic {}\r\n",
                B64.encode(format!("{user}:{password}"))
            )),
            Self::Ntlm { .. } => None,
        }
    }
}

/// `Authorization: NTLM <NEGOTIATE_MESSAGE>`.
pub fn ntlm_negotiate_header() -> String {
    format!(
        "Authorization: NTLM {}\r\n",
        B64.encode(negotiate_message())
    )
}

/// The NEGOTIATE_MESSAGE (MS-NLMP 2.2.1.1): Unicode, NTLM, extended session security.
pub fn negotiate_message() -> Vec<u8> {
    let mut out = Vec::with_capacity(32);
    out.extend_from_slice(SIGNATURE);
    out.extend_from_slice(&1u32.to_le_bytes());
    let wanted = flags::UNICODE
        | flags::REQUEST_TARGET
        | flags::NTLM
        | flags::ALWAYS_SIGN
        | flags::EXTENDED_SESSIONSECURITY
        | flags::N128;
    out.extend_from_slice(&wanted.to_le_bytes());
    out.extend_from_slice(&[0; 16]);
    out
}

/// The token of an `NTLM <base64>` challenge among `WWW-Authenticate` values.
pub fn ntlm_challenge<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<Vec<u8>> {
    values.into_iter().find_map(|v| {
        let (scheme, token) = v.trim().split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("NTLM") {
            return None;
        }
        B64.decode(token.trim()).ok()
    })
}

/// `Authorization: NTLM <AUTHENTICATE_MESSAGE>` answering `challenge` (a CHALLENGE_MESSAGE).
pub fn ntlm_authenticate_header(
    user: &str,
    password: &str,
    challenge: &[u8],
) -> Result<String, String> {
    let msg = authenticate_message(user, password, challenge)?;
    Ok(format!("Authorization: NTLM {}\r\n", B64.encode(msg)))
}

/// Splits `DOMAIN\user` or `user@domain`; a bare name has the empty domain.
fn split_user(user: &str) -> (String, String) {
    if let Some((domain, name)) = user.split_once('\\') {
        (domain.to_string(), name.to_string())
    } else if let Some((name, domain)) = user.split_once('@') {
        (domain.to_string(), name.to_string())
    } else {
        (String::new(), user.to_string())
    }
}

/// A field of the CHALLENGE_MESSAGE: (length, offset) at `at`, then the bytes.
fn field(msg: &[u8], at: usize) -> Option<&[u8]> {
    let len = u16::from_le_bytes(msg.get(at..at + 2)?.try_into().ok()?) as usize;
    let off = u32::from_le_bytes(msg.get(at + 4..at + 8)?.try_into().ok()?) as usize;
    msg.get(off..off.checked_add(len)?)
}

/// The AUTHENTICATE_MESSAGE (MS-NLMP 2.2.1.3) with an NTLMv2 response (3.3.2).
pub fn authenticate_message(
    user: &str,
    password: &str,
    challenge: &[u8],
) -> Result<Vec<u8>, String> {
    if challenge.get(..8) != Some(SIGNATURE.as_slice()) || ntlm::message_type(challenge) != Ok(2) {
        return Err("the proxy's NTLM challenge is not a CHALLENGE_MESSAGE".into());
    }
    let server_challenge = challenge.get(24..32).ok_or("short CHALLENGE_MESSAGE")?;
    let target_info = field(challenge, 40).unwrap_or_default();
    let (domain, name) = split_user(user);

    let mut client_challenge = [0u8; 8];
    let _ = getrandom::fill(&mut client_challenge);
    let mut blob = vec![1, 1, 0, 0, 0, 0, 0, 0];
    blob.extend(ntlm::filetime_now().to_le_bytes());
    blob.extend(client_challenge);
    blob.extend([0; 4]);
    blob.extend(target_info);
    blob.extend([0; 4]);
    let key = ntlm::ntowf_v2(&ntlm::nt_hash(password), &name, &domain);
    let mut mac = Hmac::<Md5>::new_from_slice(&key).map_err(|e| e.to_string())?;
    mac.update(server_challenge);
    mac.update(&blob);
    let mut nt = mac.finalize().into_bytes().to_vec();
    nt.extend(&blob);

    let payload: [Vec<u8>; 6] = [
        vec![0; 24],
        nt,
        ntlm::utf16le(&domain),
        ntlm::utf16le(&name),
        ntlm::utf16le("RPCGATE-PING"),
        Vec::new(),
    ];
    let flags = flags::UNICODE | flags::NTLM | flags::EXTENDED_SESSIONSECURITY;
    let mut out = Vec::new();
    out.extend_from_slice(SIGNATURE);
    out.extend_from_slice(&3u32.to_le_bytes());
    let mut offset = 64u32;
    for item in &payload {
        let len = u16::try_from(item.len()).map_err(|_| "NTLM field too long")?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&offset.to_le_bytes());
        offset += u32::from(len);
    }
    out.extend_from_slice(&flags.to_le_bytes());
    for item in &payload {
        out.extend_from_slice(item);
    }
    Ok(out)
}

/// The schemes of `WWW-Authenticate` values (`Negotiate`, `NTLM`, `Basic realm=...`).
pub fn offered_schemes<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    values
        .into_iter()
        .filter_map(|v| v.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn authenticate_verifies_against_the_server_side() {
        let names = ntlm::ServerNames {
            nb_domain: "RPCH".into(),
            nb_computer: "GATE".into(),
            dns_domain: "rpch.test".into(),
            dns_computer: "gate.rpch.test".into(),
        };
        let negotiate = ntlm::parse_negotiate(&negotiate_message()).unwrap();
        let server_challenge = [7u8; 8];
        let challenge = ntlm::build_challenge(
            &names,
            negotiate.flags,
            server_challenge,
            ntlm::filetime_now(),
        );
        let msg = authenticate_message("RPCH\\alice", "Passw0rd", &challenge).unwrap();
        let auth = ntlm::parse_authenticate(&msg).unwrap();
        assert_eq!(
            (auth.user.as_str(), auth.domain.as_str()),
            ("alice", "RPCH")
        );
        let hash = ntlm::nt_hash("Passw0rd");
        assert!(ntlm::verify_v2(&auth, &hash, &server_challenge));
        assert!(!ntlm::verify_v2(
            &auth,
            &ntlm::nt_hash("wrong"),
            &server_challenge
        ));
    }

    #[test]
    fn schemes_of_challenges() {
        assert_eq!(
            offered_schemes(["Negotiate", "NTLM", "Basic realm=\"x\""]),
            ["Negotiate", "NTLM", "Basic"]
        );
        assert_eq!(
            ntlm_challenge(["Basic realm=x", "NTLM AAEC"]),
            Some(vec![0, 1, 2])
        );
    }
}
