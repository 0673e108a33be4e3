//! The verdicts of `ListenerAuth::authenticate` over whole handshakes, with client tokens
//! built here the way NTLM and SPNEGO clients build them.

use std::net::IpAddr;
use std::time::Duration;

use super::*;
use crate::http::parse_request_head;

const CLIENT: &str = "192.0.2.10";

fn client() -> IpAddr {
    CLIENT.parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
}

struct Fixture {
    auth: ListenerAuth,
    dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fixture(tag: &str, methods: Vec<Method>, rules: Vec<AllowRule>) -> Fixture {
    let dir = std::env::temp_dir().join(format!("rpcgate-auth-{tag}-{}", std::process::id()));
    let users_file = dir.join("users");
    users::save(
        &users_file,
        &[
            users::new_user("alice", "Passw0rd", vec!["rpc-users".into()], true).unwrap(),
            users::new_user("bob", "basic-only", vec![], false).unwrap(),
        ],
    )
    .unwrap();
    let settings = AuthSettings {
        users_file,
        realm: "test".into(),
        names: ServerNames {
            nb_domain: "RPCH".into(),
            nb_computer: "GATE".into(),
            dns_domain: "rpch.test".into(),
            dns_computer: "gate.rpch.test".into(),
        },
        allow_ntlmv1: false,
        ldap: None,
        ntlm_helper: None,
        kerberos: None,
        throttle: ThrottleLimits {
            per_user: 3,
            per_address: 100,
            window: Duration::from_secs(60),
        },
        rules,
    };
    Fixture {
        auth: ListenerAuth {
            methods,
            anonymous: false,
            core: Some(AuthCore::new(settings).unwrap()),
        },
        dir,
    }
}

fn request(authorization: Option<&str>) -> RequestHead {
    let mut text =
        String::from("RPC_IN_DATA /rpc/rpcproxy.dll HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n");
    if let Some(value) = authorization {
        text.push_str(&format!("Authorization: {value}\r\n"));
    }
    text.push_str("\r\n");
    parse_request_head(text.as_bytes()).unwrap().unwrap().0
}

async fn ask(auth: &ListenerAuth, conn: &mut ConnAuth, authorization: Option<&str>) -> Verdict {
    auth.authenticate(&request(authorization), conn, client())
        .await
}

fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", B64.encode(format!("{user}:{password}")))
}

/// The server challenge and the token of a `401`'s `WWW-Authenticate: <scheme> <token>`.
fn challenge_of(verdict: &Verdict, scheme: &str) -> Vec<u8> {
    let Verdict::Continue { headers } = verdict else {
        panic!("expected a 401 continuation, got {verdict:?}");
    };
    let value = &headers[0].1;
    let token = value.strip_prefix(scheme).unwrap().trim();
    B64.decode(token).unwrap()
}

/// An NTLMv2 AUTHENTICATE_MESSAGE answering `challenge` for `user`/`password`.
fn ntlmv2_answer(challenge: &[u8], domain: &str, user: &str, password: &str) -> Vec<u8> {
    let server_challenge = &challenge[24..32];
    let mut blob = vec![1, 1, 0, 0, 0, 0, 0, 0];
    blob.extend(ntlm::filetime_now().to_le_bytes());
    blob.extend([0x55; 8]);
    blob.extend([0; 4]);
    blob.extend([0; 4]);
    let key = ntlm::ntowf_v2(&ntlm::nt_hash(password), user, domain);
    let mut mac = <hmac::Hmac<md5::Md5> as hmac::KeyInit>::new_from_slice(&key).unwrap();
    hmac::Mac::update(&mut mac, server_challenge);
    hmac::Mac::update(&mut mac, &blob);
    let mut nt = hmac::Mac::finalize(mac).into_bytes().to_vec();
    nt.extend(&blob);
    ntlm::tests::authenticate_message(
        ntlm::flags::UNICODE | ntlm::flags::NTLM,
        &[0; 24],
        &nt,
        domain,
        user,
    )
}

const NEGOTIATE: &[u8] = b"NTLMSSP\0\x01\0\0\0\x07\x82\x08\xa2\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

fn ntlm_header(token: &[u8]) -> String {
    format!("NTLM {}", B64.encode(token))
}

#[tokio::test]
async fn no_credentials_get_the_challenges_in_order() {
    let f = fixture(
        "order",
        vec![Method::Negotiate, Method::Ntlm, Method::Basic],
        vec![],
    );
    let mut conn = ConnAuth::default();
    assert!(matches!(
        ask(&f.auth, &mut conn, None).await,
        Verdict::Deny(Denial::NoCredentials)
    ));
    let values: Vec<String> = f.auth.challenges().into_iter().map(|(_, v)| v).collect();
    assert_eq!(values, ["Negotiate", "NTLM", "Basic realm=\"test\""]);
    // A scheme the listener does not offer is no credentials at all.
    let f = fixture("order2", vec![Method::Ntlm], vec![]);
    assert!(matches!(
        ask(&f.auth, &mut conn, Some(&basic("alice", "Passw0rd"))).await,
        Verdict::Deny(Denial::NoCredentials)
    ));
    let anonymous = ListenerAuth::anonymous_only();
    assert!(matches!(
        ask(&anonymous, &mut conn, None).await,
        Verdict::Allow { .. }
    ));
    // An anonymous listener ignores credentials it does not ask for (impacket sends Basic
    // at once), but checks those it does.
    assert!(matches!(
        ask(&anonymous, &mut conn, Some(&basic("anyone", "anything"))).await,
        Verdict::Allow { .. }
    ));
    let mut f = fixture("order3", vec![Method::Basic], vec![]);
    f.auth.anonymous = true;
    assert!(matches!(
        ask(&f.auth, &mut conn, None).await,
        Verdict::Allow { .. }
    ));
    assert!(matches!(
        ask(&f.auth, &mut conn, Some(&basic("alice", "wrong"))).await,
        Verdict::Deny(Denial::Failed)
    ));
}

#[tokio::test]
async fn basic_right_wrong_unknown_and_throttled() {
    let f = fixture("basic", vec![Method::Basic], vec![]);
    let mut conn = ConnAuth::default();
    let Verdict::Allow { identity, .. } =
        ask(&f.auth, &mut conn, Some(&basic("RPCH\\alice", "Passw0rd"))).await
    else {
        panic!("alice should be allowed");
    };
    assert_eq!(
        (identity.name.as_str(), identity.method),
        ("alice", "basic")
    );
    assert_eq!(identity.groups, ["rpc-users"]);
    // Basic is per request: nothing stays with the connection.
    assert!(matches!(
        ask(&f.auth, &mut conn, None).await,
        Verdict::Deny(Denial::NoCredentials)
    ));
    assert!(matches!(
        ask(&f.auth, &mut conn, Some(&basic("bob", "basic-only"))).await,
        Verdict::Allow { .. }
    ));
    for (user, password) in [
        ("OTHER\\alice", "Passw0rd"),
        ("nobody", "x"),
        ("alice", "wrong"),
    ] {
        assert!(
            matches!(
                ask(&f.auth, &mut conn, Some(&basic(user, password))).await,
                Verdict::Deny(Denial::Failed)
            ),
            "{user}"
        );
    }
    ask(&f.auth, &mut conn, Some(&basic("alice", "wrong"))).await;
    ask(&f.auth, &mut conn, Some(&basic("alice", "wrong"))).await;
    // Three failures for alice: locked, even with the right password.
    assert!(matches!(
        ask(&f.auth, &mut conn, Some(&basic("alice", "Passw0rd"))).await,
        Verdict::Deny(Denial::Throttled)
    ));
    assert!(matches!(
        ask(&f.auth, &mut conn, Some("Basic !!!")).await,
        Verdict::Deny(Denial::Failed)
    ));
}

#[tokio::test]
async fn ntlm_handshake_stays_with_the_connection() {
    let f = fixture("ntlm", vec![Method::Ntlm], vec![]);
    let mut conn = ConnAuth::default();
    let challenge = challenge_of(
        &ask(&f.auth, &mut conn, Some(&ntlm_header(NEGOTIATE))).await,
        "NTLM",
    );
    assert_eq!(ntlm::message_type(&challenge), Ok(2));
    let answer = ntlmv2_answer(&challenge, "RPCH", "alice", "Passw0rd");
    let Verdict::Allow { identity, .. } =
        ask(&f.auth, &mut conn, Some(&ntlm_header(&answer))).await
    else {
        panic!("NTLMv2 should verify");
    };
    assert_eq!((identity.name.as_str(), identity.method), ("alice", "ntlm"));
    // Wine and Windows: the channel request that follows carries no Authorization.
    assert!(matches!(
        ask(&f.auth, &mut conn, None).await,
        Verdict::Allow { .. }
    ));
    // A replayed AUTHENTICATE on a new connection has no challenge to answer.
    let mut other = ConnAuth::default();
    assert!(matches!(
        ask(&f.auth, &mut other, Some(&ntlm_header(&answer))).await,
        Verdict::Deny(Denial::Failed)
    ));
    assert!(matches!(
        ask(&f.auth, &mut other, None).await,
        Verdict::Deny(Denial::NoCredentials)
    ));
}

#[tokio::test]
async fn ntlm_wrong_password_v1_and_no_nt_hash_fail() {
    let f = fixture("ntlm-bad", vec![Method::Ntlm], vec![]);
    let cases: [(&str, &str, bool); 3] = [
        ("alice", "wrong", false),
        ("bob", "basic-only", false),
        ("alice", "Passw0rd", true),
    ];
    for (user, password, v1) in cases {
        let mut conn = ConnAuth::default();
        let challenge = challenge_of(
            &ask(&f.auth, &mut conn, Some(&ntlm_header(NEGOTIATE))).await,
            "NTLM",
        );
        let answer = if v1 {
            ntlm::tests::authenticate_message(ntlm::flags::UNICODE, &[0; 24], &[7; 24], "", user)
        } else {
            ntlmv2_answer(&challenge, "", user, password)
        };
        assert!(
            matches!(
                ask(&f.auth, &mut conn, Some(&ntlm_header(&answer))).await,
                Verdict::Deny(Denial::Failed)
            ),
            "{user}"
        );
        assert!(matches!(
            ask(&f.auth, &mut conn, None).await,
            Verdict::Deny(Denial::NoCredentials)
        ));
    }
}

#[tokio::test]
async fn negotiate_carries_ntlm_in_spnego() {
    let f = fixture("spnego", vec![Method::Negotiate], vec![]);
    let mut conn = ConnAuth::default();
    // Kerberos first (no keytab here), NTLM second: rpcgate selects NTLM and waits.
    let init = spnego::build_init(
        &[spnego::OID_KRB5, spnego::OID_NTLMSSP],
        Some(b"krb5 AP-REQ"),
    );
    let selected = challenge_of(
        &ask(
            &f.auth,
            &mut conn,
            Some(&format!("Negotiate {}", B64.encode(init))),
        )
        .await,
        "Negotiate",
    );
    assert_eq!(
        selected,
        spnego::build_resp(
            spnego::NegState::AcceptIncomplete,
            Some(spnego::OID_NTLMSSP),
            None
        )
    );
    let resp = spnego::build_resp(spnego::NegState::AcceptIncomplete, None, Some(NEGOTIATE));
    let wrapped = challenge_of(
        &ask(
            &f.auth,
            &mut conn,
            Some(&format!("Negotiate {}", B64.encode(resp))),
        )
        .await,
        "Negotiate",
    );
    let spnego::ClientToken::Resp {
        response_token: Some(challenge),
    } = spnego::parse_client_token(&wrapped).unwrap()
    else {
        panic!("a NegTokenResp with the NTLM challenge");
    };
    let answer = ntlmv2_answer(&challenge, "RPCH", "alice", "Passw0rd");
    let resp = spnego::build_resp(spnego::NegState::AcceptIncomplete, None, Some(&answer));
    let Verdict::Allow { identity, headers } = ask(
        &f.auth,
        &mut conn,
        Some(&format!("Negotiate {}", B64.encode(resp))),
    )
    .await
    else {
        panic!("NTLM in SPNEGO should verify");
    };
    assert_eq!(identity.method, "negotiate-ntlm");
    let done = B64.encode(spnego::build_resp(
        spnego::NegState::AcceptCompleted,
        None,
        None,
    ));
    assert_eq!(
        headers,
        [("WWW-Authenticate".to_owned(), format!("Negotiate {done}"))]
    );

    // NTLM as the optimistic mechanism, and raw NTLM under the Negotiate scheme.
    let mut conn = ConnAuth::default();
    let init = spnego::build_init(&[spnego::OID_NTLMSSP], Some(NEGOTIATE));
    let wrapped = challenge_of(
        &ask(
            &f.auth,
            &mut conn,
            Some(&format!("Negotiate {}", B64.encode(init))),
        )
        .await,
        "Negotiate",
    );
    assert!(spnego::parse_client_token(&wrapped).is_ok());
    let mut conn = ConnAuth::default();
    let raw = challenge_of(
        &ask(
            &f.auth,
            &mut conn,
            Some(&format!("Negotiate {}", B64.encode(NEGOTIATE))),
        )
        .await,
        "Negotiate",
    );
    assert_eq!(ntlm::message_type(&raw), Ok(2));
    // Kerberos only, without a keytab: refused.
    let mut conn = ConnAuth::default();
    let init = spnego::build_init(&[spnego::OID_KRB5], Some(b"x"));
    assert!(matches!(
        ask(
            &f.auth,
            &mut conn,
            Some(&format!("Negotiate {}", B64.encode(init)))
        )
        .await,
        Verdict::Deny(Denial::Failed)
    ));
}

#[test]
fn authorization_rules() {
    let targets = |text: &str| {
        ValidPorts::parse(
            text,
            &crate::valid_ports::Origin::Static { source: "t".into() },
        )
        .unwrap()
    };
    let rules = vec![
        AllowRule {
            users: vec!["alice".into()],
            groups: vec![],
            targets: targets("mbx1:6001-6002"),
        },
        AllowRule {
            users: vec![],
            groups: vec!["Domain Admins".into()],
            targets: targets("dc*:593"),
        },
    ];
    let target = |host: &str, port| Target {
        host: host.into(),
        port,
    };
    let alice = Identity {
        name: "RPCH\\alice".into(),
        account: "alice".into(),
        groups: vec![],
        method: "ntlm",
    };
    let admin = Identity {
        name: "bob".into(),
        account: "bob".into(),
        groups: vec!["domain admins".into()],
        method: "basic",
    };
    assert!(authorize(&rules, &alice, &target("MBX1", 6002)));
    assert!(!authorize(&rules, &alice, &target("mbx1", 6004)));
    assert!(!authorize(&rules, &alice, &target("dc1", 593)));
    assert!(authorize(&rules, &admin, &target("dc1", 593)));
    assert!(!authorize(
        &rules,
        &Identity::anonymous(),
        &target("mbx1", 6001)
    ));
    assert!(authorize(
        &[],
        &Identity::anonymous(),
        &target("mbx1", 6001)
    ));
}
