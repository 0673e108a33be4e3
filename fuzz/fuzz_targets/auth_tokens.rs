//! The authentication token parsers on arbitrary bytes: NTLM NEGOTIATE and AUTHENTICATE
//! messages (MS-NLMP 2.2.1) and SPNEGO NegTokenInit/NegTokenResp (RFC 4178), as they arrive
//! base64-decoded from `Authorization: NTLM` / `Negotiate` headers before any credential check.
//!
//! Parsing must never panic. A NegTokenInit or NegTokenResp that parses is rebuilt from its
//! parts and must parse to the same token; an AUTHENTICATE that parses is verified against a
//! fixed NT hash (which must not panic whatever the response lengths).

#![no_main]

use libfuzzer_sys::fuzz_target;
use rpcgate::auth::{ntlm, spnego};

fuzz_target!(|data: &[u8]| {
    let _ = ntlm::message_type(data);
    let _ = ntlm::parse_negotiate(data);
    if let Ok(auth) = ntlm::parse_authenticate(data) {
        let hash = ntlm::nt_hash("password");
        let _ = ntlm::verify_v2(&auth, &hash, &[1; 8]);
        let _ = ntlm::verify_v1(&auth, &hash, &[1; 8]);
        let _ = (auth.is_anonymous(), ntlm::response_kind(&auth));
    }
    match spnego::parse_client_token(data) {
        Ok(spnego::ClientToken::Resp { response_token }) => {
            let rebuilt = spnego::build_resp(
                spnego::NegState::AcceptIncomplete,
                None,
                response_token.as_deref(),
            );
            assert_eq!(
                spnego::parse_client_token(&rebuilt),
                Ok(spnego::ClientToken::Resp { response_token }),
                "NegTokenResp round trip"
            );
        }
        Ok(spnego::ClientToken::Init { mech_token, .. }) => {
            let rebuilt = spnego::build_init(&[spnego::OID_NTLMSSP], mech_token.as_deref());
            match spnego::parse_client_token(&rebuilt) {
                Ok(spnego::ClientToken::Init {
                    mechs,
                    mech_token: again,
                }) => {
                    assert_eq!(mechs, [spnego::Mech::Ntlm]);
                    assert_eq!(again, mech_token, "NegTokenInit round trip");
                }
                other => panic!("rebuilt NegTokenInit does not parse: {other:?}"),
            }
        }
        Err(_) => {}
    }
});
