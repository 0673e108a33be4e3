//! MS-NLMP section 4.2 test vectors, and round trips of the messages rpcgate builds.

use super::*;

fn hex(text: &str) -> Vec<u8> {
    let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    (0..clean.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&clean[i..i + 2], 16).unwrap())
        .collect()
}

const CHALLENGE: [u8; 8] = [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef];

/// An AUTHENTICATE_MESSAGE as a client builds it (Unicode, with the session key fields).
pub(crate) fn authenticate_message(
    flags: u32,
    lm: &[u8],
    nt: &[u8],
    domain: &str,
    user: &str,
) -> Vec<u8> {
    let payload: Vec<Vec<u8>> = vec![
        lm.to_vec(),
        nt.to_vec(),
        utf16le(domain),
        utf16le(user),
        utf16le("WORKSTATION"),
        Vec::new(),
    ];
    let mut out = Vec::new();
    out.extend_from_slice(SIGNATURE);
    out.extend_from_slice(&3u32.to_le_bytes());
    let mut offset = 64 + 8;
    for item in &payload {
        push_fields(&mut out, item.len(), offset);
        offset += item.len();
    }
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&[0; 8]);
    for item in &payload {
        out.extend_from_slice(item);
    }
    out
}

#[test]
fn nt_hash_of_password() {
    assert_eq!(
        nt_hash("Password").to_vec(),
        hex("a4f49c406510bdcab6824ee7c30fd852")
    );
}

#[test]
fn ntowf_v2_vector() {
    assert_eq!(
        ntowf_v2(&nt_hash("Password"), "User", "Domain").to_vec(),
        hex("0c868a403bfd7a93a3001ef22ef02e3f")
    );
}

fn v2_response() -> Vec<u8> {
    let mut temp = hex("0101000000000000 0000000000000000 aaaaaaaaaaaaaaaa 00000000");
    temp.extend(hex(
        "02000c0044006f006d00610069006e00 01000c005300650072007600650072000000 0000",
    ));
    temp.extend(hex("00000000"));
    let mut response = hex("68cd0ab851e51c96aabc927bebef6a1c");
    response.extend(temp);
    response
}

#[test]
fn ntlmv2_vector_verifies_and_wrong_password_does_not() {
    let msg = authenticate_message(
        flags::UNICODE | flags::NTLM | flags::EXTENDED_SESSIONSECURITY,
        &[0; 24],
        &v2_response(),
        "Domain",
        "User",
    );
    let auth = parse_authenticate(&msg).unwrap();
    assert_eq!(auth.user, "User");
    assert_eq!(auth.domain, "Domain");
    assert_eq!(auth.workstation, "WORKSTATION");
    assert_eq!(response_kind(&auth), ResponseKind::V2);
    assert!(verify_v2(&auth, &nt_hash("Password"), &CHALLENGE));
    assert!(!verify_v2(&auth, &nt_hash("password"), &CHALLENGE));
    let mut other = CHALLENGE;
    other[0] ^= 1;
    assert!(!verify_v2(&auth, &nt_hash("Password"), &other));
    // The debug form shows no response bytes.
    assert!(!format!("{auth:?}").contains("104"));
}

#[test]
fn ntlmv2_user_name_case_does_not_matter_but_domain_variants_are_tried() {
    // NTOWFv2 upper-cases the user; the empty domain is tried as a fallback.
    let blob = hex("0101000000000000 0000000000000000 aaaaaaaaaaaaaaaa 00000000 00000000");
    let key = ntowf_v2(&nt_hash("pw"), "alice", "");
    let proof = hmac_md5(&key, &[&CHALLENGE, &blob]);
    let mut nt = proof.to_vec();
    nt.extend(&blob);
    let msg = authenticate_message(flags::UNICODE, &[], &nt, "WHATEVER", "Alice");
    let auth = parse_authenticate(&msg).unwrap();
    assert!(verify_v2(&auth, &nt_hash("pw"), &CHALLENGE));
}

#[test]
fn ntlmv1_vectors() {
    let msg = authenticate_message(
        flags::UNICODE | flags::NTLM,
        &[0; 24],
        &hex("67c43011f30298a2ad35ece64f16331c44bdbed927841f94"),
        "Domain",
        "User",
    );
    let auth = parse_authenticate(&msg).unwrap();
    assert_eq!(response_kind(&auth), ResponseKind::V1);
    assert!(verify_v1(&auth, &nt_hash("Password"), &CHALLENGE));
    assert!(!verify_v1(&auth, &nt_hash("Passwort"), &CHALLENGE));
    assert!(!verify_v2(&auth, &nt_hash("Password"), &CHALLENGE));

    // With extended session security (MS-NLMP 4.2.3).
    let mut lm = vec![0xaa; 8];
    lm.extend([0; 16]);
    let msg = authenticate_message(
        flags::UNICODE | flags::NTLM | flags::EXTENDED_SESSIONSECURITY,
        &lm,
        &hex("7537f803ae367128ca458204bde7caf81e97ed2683267232"),
        "Domain",
        "User",
    );
    let auth = parse_authenticate(&msg).unwrap();
    assert!(verify_v1(&auth, &nt_hash("Password"), &CHALLENGE));
}

#[test]
fn challenge_carries_names_and_timestamp() {
    let names = ServerNames {
        nb_domain: "RPCH".into(),
        nb_computer: "GATE".into(),
        dns_domain: "rpch.test".into(),
        dns_computer: "gate.rpch.test".into(),
    };
    let negotiate_flags = flags::UNICODE | flags::NTLM | flags::EXTENDED_SESSIONSECURITY;
    let msg = build_challenge(&names, negotiate_flags, CHALLENGE, 0x0102_0304_0506_0708);
    assert_eq!(message_type(&msg).unwrap(), 2);
    assert_eq!(&msg[24..32], &CHALLENGE);
    let flags_out = u32_at(&msg, 20).unwrap();
    assert_ne!(flags_out & flags::TARGET_INFO, 0);
    assert_ne!(flags_out & flags::EXTENDED_SESSIONSECURITY, 0);
    assert_eq!(field(&msg, 12, "t").unwrap(), utf16le("RPCH").as_slice());
    let info = field(&msg, 40, "i").unwrap();
    // Walk the AV pairs.
    let mut pairs = Vec::new();
    let mut at = 0;
    loop {
        let id = u16_at(info, at).unwrap();
        let len = usize::from(u16_at(info, at + 2).unwrap());
        pairs.push((id, info[at + 4..at + 4 + len].to_vec()));
        at += 4 + len;
        if id == 0 {
            break;
        }
    }
    assert_eq!(at, info.len());
    assert!(pairs.contains(&(1, utf16le("GATE"))));
    assert!(pairs.contains(&(2, utf16le("RPCH"))));
    assert!(pairs.contains(&(3, utf16le("gate.rpch.test"))));
    assert!(pairs.contains(&(7, 0x0102_0304_0506_0708u64.to_le_bytes().to_vec())));
}

#[test]
fn malformed_messages_are_errors_not_panics() {
    assert_eq!(message_type(b"NTLMSS"), Err(NtlmError::NotNtlm));
    assert!(parse_negotiate(b"NTLMSSP\0\x01\0\0\0").is_err());
    assert!(parse_authenticate(b"NTLMSSP\0\x01\0\0\0\0\0\0\0").is_err());
    let mut msg = authenticate_message(flags::UNICODE, &[], &[1; 40], "D", "U");
    // Point the user name outside the message.
    msg[40..44].copy_from_slice(&0xffff_fff0u32.to_le_bytes());
    assert!(parse_authenticate(&msg).is_err());
    for len in 0..msg.len() {
        let _ = parse_authenticate(&msg[..len]);
    }
}

#[test]
fn anonymous_is_recognised() {
    let msg = authenticate_message(flags::UNICODE | flags::ANONYMOUS, &[0], &[], "", "");
    assert!(parse_authenticate(&msg).unwrap().is_anonymous());
}
