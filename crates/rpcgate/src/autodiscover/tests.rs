//! Golden files (`tests/data/autodiscover/`): requests shaped as MS-OXDSCLI documents them,
//! and hostile ones, through [`decide`], [`conclude`] and [`response::render`] with a fixed
//! clock, compared byte for byte with the expected documents. `RPCGATE_BLESS=1` rewrites the
//! expected files from the current output (review the diff before committing it).

use std::path::PathBuf;
use std::time::Duration;

use super::client::{Discovered, ProtocolSettings, parse_response};
use super::*;

const STAMP: Stamp = Stamp {
    time_of_day: Duration::new(16 * 3600 + 56 * 60 + 32, 616_402_700),
    id: 1_054_084_152,
};

fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/autodiscover")
        .join(name)
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(data(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn settings() -> Settings {
    Settings {
        external_host: "mail.contoso.com".into(),
        ssl: true,
        auth_package: Method::Ntlm,
        cert_principal_name: Some("msstd:mail.contoso.com".into()),
        service: AutodiscoverConfig {
            domains: vec!["contoso.com".into()],
            server: None,
            users: vec![],
            redirect_domains: vec![("fabrikam.com".into(), "contoso.com".into())],
            ldap: None,
        },
    }
}

/// The directory of these tests: user@contoso.com on MBX01, moved@contoso.com elsewhere.
fn directory(address: &str) -> Lookup {
    match address.to_ascii_lowercase().as_str() {
        "user@contoso.com" => Lookup::Found(Entry {
            display_name: Some("User Name".into()),
            smtp: Some("user@contoso.com".into()),
            legacy_dn: None,
            server: Some("MBX01.internal.contoso.com".into()),
            redirect: None,
        }),
        "moved@contoso.com" => Lookup::Found(Entry {
            redirect: Some("moved@tailspintoys.com".into()),
            ..Entry::default()
        }),
        "noserver@contoso.com" => Lookup::Found(Entry::default()),
        "twice@contoso.com" => Lookup::Ambiguous(2),
        "down@contoso.com" => Lookup::Unavailable("test".into()),
        _ => Lookup::NotFound,
    }
}

fn answer(body: &[u8], settings: &Settings, facts: &Facts) -> (Outcome, String) {
    let decided = match decide(body, &settings.service) {
        Ok(address) => conclude(&address, directory(&address), &settings.service),
        Err(decided) => decided,
    };
    let xml = response::render(&decided.outcome, &settings.expr(facts), &STAMP);
    (decided.outcome, xml)
}

fn request_for(address: &str) -> Vec<u8> {
    client::request_body(address).into_bytes()
}

/// Compares with (or, blessing, writes) the expected document.
fn golden(name: &str, actual: &str) {
    let path = data(name);
    if std::env::var_os("RPCGATE_BLESS").is_some() {
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(actual, expected, "{name} differs");
}

#[test]
fn documented_request_gets_settings() {
    let (outcome, xml) = answer(&read("outlook-request.xml"), &settings(), &Facts::default());
    assert!(matches!(outcome, Outcome::Settings(_)), "{outcome:?}");
    golden("settings-response.xml", &xml);
    // What a client reads back from it.
    let Discovered::Settings {
        display_name,
        smtp_address,
        expr,
        exch,
    } = parse_response(xml.as_bytes()).unwrap()
    else {
        panic!("not settings");
    };
    assert_eq!(display_name.as_deref(), Some("User Name"));
    assert_eq!(smtp_address.as_deref(), Some("user@contoso.com"));
    assert_eq!(
        expr,
        Some(ProtocolSettings {
            server: Some("mail.contoso.com".into()),
            ssl: Some(true),
            auth_package: Some("Ntlm".into()),
            cert_principal_name: Some("msstd:mail.contoso.com".into()),
        })
    );
    assert_eq!(
        exch.and_then(|e| e.server).as_deref(),
        Some("MBX01.internal.contoso.com")
    );
}

#[test]
fn negotiate_only_for_clients_that_can_handle_it() {
    let mut s = settings();
    s.auth_package = Method::Negotiate;
    let body = read("outlook-request.xml");
    let (_, plain) = answer(&body, &s, &Facts::default());
    assert!(plain.contains("<AuthPackage>Ntlm</AuthPackage>"), "{plain}");
    let facts = Facts::from_client_can_handle(["Capabilities, Negotiate"]);
    let (_, xml) = answer(&body, &s, &facts);
    golden("settings-negotiate-response.xml", &xml);
    s.auth_package = Method::Basic;
    s.ssl = false;
    s.cert_principal_name = None;
    let (_, basic) = answer(&body, &s, &facts);
    assert!(
        basic.contains("<AuthPackage>Basic</AuthPackage>"),
        "{basic}"
    );
    assert!(basic.contains("<SSL>Off</SSL>"), "{basic}");
    assert!(!basic.contains("CertPrincipalName"), "{basic}");
}

#[test]
fn redirects() {
    let (outcome, xml) = answer(
        &request_for("user@fabrikam.com"),
        &settings(),
        &Facts::default(),
    );
    assert_eq!(outcome, Outcome::Redirect("user@contoso.com".into()));
    golden("redirect-response.xml", &xml);
    assert_eq!(
        parse_response(xml.as_bytes()).unwrap(),
        Discovered::Redirect("user@contoso.com".into())
    );
    let (outcome, _) = answer(
        &request_for("moved@contoso.com"),
        &settings(),
        &Facts::default(),
    );
    assert_eq!(outcome, Outcome::Redirect("moved@tailspintoys.com".into()));
}

#[test]
fn errors() {
    let s = settings();
    let f = Facts::default();
    for (request, code, file) in [
        (
            read("mobilesync-request.xml"),
            601,
            Some("error-601-response.xml"),
        ),
        (
            read("malformed-request.xml"),
            600,
            Some("error-600-response.xml"),
        ),
        (
            request_for("nobody@contoso.com"),
            500,
            Some("error-500-response.xml"),
        ),
        (read("outlook-request-legacydn.xml"), 500, None),
        (request_for("user@other.org"), 500, None),
        (request_for("noserver@contoso.com"), 602, None),
        (request_for("twice@contoso.com"), 602, None),
        (request_for("down@contoso.com"), 603, None),
        (read("entity-bomb.xml"), 600, None),
        (read("external-entity.xml"), 600, None),
        (read("undeclared-entity.xml"), 600, None),
        (b"".to_vec(), 600, None),
        (b"\xff\xfe<\0a\0/\0>\0".to_vec(), 600, None),
        (b"GET / HTTP/1.1".to_vec(), 600, None),
    ] {
        let (outcome, xml) = answer(&request, &s, &f);
        let Outcome::Error(got) = outcome else {
            panic!("{}: {outcome:?}", String::from_utf8_lossy(&request));
        };
        assert_eq!(got.number(), code, "{}", String::from_utf8_lossy(&request));
        if let Some(file) = file {
            golden(file, &xml);
        }
        let Discovered::Error {
            code: read_back, ..
        } = parse_response(xml.as_bytes()).unwrap()
        else {
            panic!("not an error");
        };
        assert_eq!(read_back, code);
    }
}

#[test]
fn an_exchange_response_is_understood() {
    let Discovered::Settings { expr, exch, .. } =
        parse_response(&read("exchange-response.xml")).unwrap()
    else {
        panic!("not settings");
    };
    let expr = expr.unwrap();
    assert_eq!(expr.server.as_deref(), Some("mail.contoso.com"));
    assert_eq!(expr.auth_package.as_deref(), Some("Basic"));
    assert_eq!(expr.ssl, Some(true));
    assert_eq!(
        exch.unwrap().server.as_deref(),
        Some("MBX01.internal.contoso.com")
    );
}

#[test]
fn directory_values_cannot_inject_markup() {
    let outcome = conclude(
        "a@contoso.com",
        Lookup::Found(Entry {
            display_name: Some("</DisplayName><Protocol><Server>evil</Server>".into()),
            server: Some("mbx1".into()),
            ..Entry::default()
        }),
        &settings().service,
    )
    .outcome;
    let xml = response::render(&outcome, &settings().expr(&Facts::default()), &STAMP);
    assert!(
        xml.contains("&lt;/DisplayName&gt;&lt;Protocol&gt;"),
        "{xml}"
    );
    assert!(xml::parse(xml.as_bytes()).is_ok());
    assert_eq!(xml.matches("<Protocol>").count(), 2);
}

#[test]
fn mangled_requests_never_panic() {
    let base = read("outlook-request.xml");
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = |n: usize| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x % n as u64) as usize
    };
    let s = settings();
    for _ in 0..5_000 {
        let mut body = base.clone();
        for _ in 0..1 + next(4) {
            let at = next(body.len());
            match next(3) {
                0 => body[at] = b"<>&;/\"'x\0"[next(9)],
                1 => {
                    body.remove(at);
                }
                _ => body.truncate(at),
            }
            if body.is_empty() {
                break;
            }
        }
        let (outcome, xml) = answer(&body, &s, &Facts::default());
        if !matches!(outcome, Outcome::Error(_)) {
            assert!(xml::parse(xml.as_bytes()).is_ok());
        }
    }
}
