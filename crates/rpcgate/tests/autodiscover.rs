//! Autodiscover over real sockets: a proxy listener with Basic and NTLM users answers
//! `POST /autodiscover/autodiscover.xml` behind its authentication, with keep-alive, and
//! refuses what it must (malformed XML, entity bombs, oversize and chunked bodies, wrong
//! schema, unknown users) with the documented error and no crash; `rpcgate autodiscover`
//! prints the same document from a config file; `rpcgate ping --autodiscover` takes the
//! proxy, auth package and RPC server from the answer and goes all the way to a call.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use rpcgate::auth::ntlm::ServerNames;
use rpcgate::auth::throttle::ThrottleLimits;
use rpcgate::auth::{AuthCore, AuthSettings, ListenerAuth, Method, users};
use rpcgate::autodiscover::{AutodiscoverConfig, Service, Settings};
use rpcgate::http::parse_response_head;
use rpcgate::proxy::forwarded::TrustedProxies;
use rpcgate::proxy::{ListenerAccess, ListenerPolicy, Proxy};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PATH: &str = "/autodiscover/autodiscover.xml";

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(tag: &str) -> Dir {
    let d = std::env::temp_dir().join(format!("rpcgate-ad-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    Dir(d)
}

fn data(name: &str) -> Vec<u8> {
    std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/autodiscover")
            .join(name),
    )
    .unwrap()
}

fn service() -> Service {
    service_for("mail.contoso.com", "mbx1.contoso.com")
}

fn service_for(external_host: &str, server: &str) -> Service {
    Service::new(Settings {
        external_host: external_host.into(),
        ssl: true,
        auth_package: Method::Ntlm,
        cert_principal_name: Some(format!("msstd:{external_host}")),
        service: AutodiscoverConfig {
            domains: vec!["contoso.com".into()],
            server: None,
            users: vec![("user@contoso.com".into(), server.into())],
            redirect_domains: vec![("fabrikam.com".into(), "contoso.com".into())],
            ldap: None,
        },
    })
}

/// A plain-HTTP proxy on loopback with alice/Passw0rd (Basic, NTLM); Autodiscover on it when
/// `autodiscover`.
async fn start(d: &Dir, autodiscover: bool) -> SocketAddr {
    start_with(d, autodiscover.then(service), "", None).await
}

/// A proxy on loopback (TLS with `tls` = (cert, key)) allowing `valid`, with alice/Passw0rd.
async fn start_with(
    d: &Dir,
    autodiscover: Option<Service>,
    valid: &str,
    tls: Option<(&std::path::Path, &std::path::Path)>,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let proxy = Proxy::new(common::proxy_settings(), common::valid_ports(valid));
    let users_file = d.0.join("users");
    users::save(
        &users_file,
        &[users::new_user("alice", "Passw0rd", vec![], true).unwrap()],
    )
    .unwrap();
    let core = AuthCore::new(AuthSettings {
        users_file,
        realm: "rpcgate".into(),
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
            per_user: 100,
            per_address: 100,
            window: Duration::from_secs(60),
        },
        rules: vec![],
    })
    .unwrap();
    let access = ListenerAccess {
        auth: ListenerAuth {
            methods: vec![Method::Ntlm, Method::Basic],
            anonymous: false,
            core: Some(core),
        },
        trusted_proxies: TrustedProxies(vec![]),
        autodiscover: autodiscover.map(Arc::new),
    };
    let tls = tls.map(|(cert, key)| {
        tokio_rustls::TlsAcceptor::from(rpcgate::tls::server_config(cert, key).unwrap())
    });
    tokio::spawn(rpcgate::proxy::serve_with_access(
        listener,
        proxy,
        ListenerPolicy {
            tls,
            allow_anonymous: false,
        },
        Arc::new(access),
    ));
    addr
}

fn basic() -> String {
    format!(
        "Authorization: Basic {}\r\n",
        base64::engine::general_purpose::STANDARD.encode("alice:Passw0rd")
    )
}

/// A request with `body`, Basic credentials and keep-alive.
fn post(path: &str, body: &[u8], extra: &str) -> Vec<u8> {
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nHost: autodiscover.contoso.com\r\n{}Content-Type: text/xml\r\n\
         {extra}Content-Length: {}\r\n\r\n",
        basic(),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(body);
    out
}

/// Reads one response: status, headers (lowercase names) and body.
async fn response(stream: &mut TcpStream) -> (u16, Vec<(String, String)>, String) {
    let mut buf = Vec::new();
    loop {
        if let Some((head, used)) = parse_response_head(&buf).unwrap() {
            let length = head.content_length.unwrap_or(0) as usize;
            let mut body = buf[used..].to_vec();
            while body.len() < length {
                let mut chunk = [0u8; 4096];
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "closed inside the body");
                body.extend_from_slice(&chunk[..n]);
            }
            return (
                head.status,
                head.headers.clone(),
                String::from_utf8(body).unwrap(),
            );
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed before a response");
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Whether the server closed the connection (EOF within a second).
async fn closed(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

fn error_code(body: &str) -> Option<u16> {
    let start = body.find("<ErrorCode>")? + "<ErrorCode>".len();
    let end = body[start..].find('<')? + start;
    body[start..end].parse().ok()
}

#[tokio::test]
async fn answers_behind_authentication_with_keep_alive() {
    let d = dir("keepalive");
    let addr = start(&d, true).await;
    let request = data("outlook-request.xml");

    // No credentials: the listener's challenge, nothing about the user.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let anonymous = format!(
        "POST {PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        request.len()
    );
    s.write_all(anonymous.as_bytes()).await.unwrap();
    s.write_all(&request).await.unwrap();
    let (status, headers, body) = response(&mut s).await;
    assert_eq!(status, 401);
    assert!(!body.contains("mbx1"));
    assert!(
        headers
            .iter()
            .any(|(n, v)| n == "www-authenticate" && v == "NTLM")
    );

    // With credentials: settings, then more requests on the same connection.
    s.write_all(&post(PATH, &request, "")).await.unwrap();
    let (status, headers, body) = response(&mut s).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        headers
            .iter()
            .any(|(n, v)| n == "content-type" && v.starts_with("text/xml"))
    );
    for needle in [
        "<Type>EXCH</Type>",
        "<Server>mbx1.contoso.com</Server>",
        "<Type>EXPR</Type>",
        "<Server>mail.contoso.com</Server>",
        "<SSL>On</SSL>",
        "<AuthPackage>Ntlm</AuthPackage>",
        "<CertPrincipalName>msstd:mail.contoso.com</CertPrincipalName>",
        "<AutoDiscoverSMTPAddress>user@contoso.com</AutoDiscoverSMTPAddress>",
    ] {
        assert!(body.contains(needle), "{needle} in {body}");
    }
    // The path is case-insensitive; Negotiate only for clients that can handle it.
    let mut s2 = TcpStream::connect(addr).await.unwrap();
    s2.write_all(&post(
        "/AutoDiscover/AutoDiscover.xml",
        &request,
        "X-ClientCanHandle: Capabilities, Negotiate\r\n",
    ))
    .await
    .unwrap();
    assert_eq!(response(&mut s2).await.0, 200);

    // GET (a browser, a probe) gets 600, as from Exchange.
    let get = format!("GET {PATH} HTTP/1.1\r\nHost: x\r\n{}\r\n", basic());
    s.write_all(get.as_bytes()).await.unwrap();
    let (status, _, body) = response(&mut s).await;
    assert_eq!((status, error_code(&body)), (200, Some(600)), "{body}");

    // Expect: 100-continue is honoured.
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nHost: x\r\n{}Expect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        basic(),
        request.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (status, _, _) = response(&mut s).await;
    assert_eq!(status, 100);
    s.write_all(&request).await.unwrap();
    let (status, _, body) = response(&mut s).await;
    assert_eq!(status, 200);
    assert!(body.contains("<Action>settings</Action>"));
}

#[tokio::test]
async fn hostile_and_wrong_requests_get_their_error() {
    let d = dir("errors");
    let addr = start(&d, true).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let for_address = |a: &str| rpcgate::autodiscover::client::request_body(a).into_bytes();
    for (body, code) in [
        (data("malformed-request.xml"), 600),
        (data("entity-bomb.xml"), 600),
        (data("external-entity.xml"), 600),
        (data("undeclared-entity.xml"), 600),
        (data("mobilesync-request.xml"), 601),
        (for_address("nobody@contoso.com"), 500),
        (for_address("user@elsewhere.org"), 500),
        (b"\x00\x01\x02 not xml at all".to_vec(), 600),
        (b"<a>".repeat(20_000), 600),
    ] {
        s.write_all(&post(PATH, &body, "")).await.unwrap();
        let (status, _, text) = response(&mut s).await;
        assert_eq!(status, 200);
        assert_eq!(
            error_code(&text),
            Some(code),
            "{}: {text}",
            String::from_utf8_lossy(&body[..body.len().min(80)])
        );
    }
    // Still serving on the same connection after all that.
    s.write_all(&post(PATH, &for_address("user@fabrikam.com"), ""))
        .await
        .unwrap();
    let (_, _, text) = response(&mut s).await;
    assert!(
        text.contains("<RedirectAddr>user@contoso.com</RedirectAddr>"),
        "{text}"
    );

    // An oversize body is refused unread: 413 with the 600 document, connection closed.
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nHost: x\r\n{}Content-Length: {}\r\n\r\n",
        basic(),
        rpcgate::autodiscover::MAX_BODY + 1
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let (status, _, text) = response(&mut s).await;
    assert_eq!((status, error_code(&text)), (413, Some(600)));
    assert!(closed(&mut s).await);

    // A chunked body: 411, closed.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let chunked = format!(
        "POST {PATH} HTTP/1.1\r\nHost: x\r\n{}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        basic()
    );
    s.write_all(chunked.as_bytes()).await.unwrap();
    assert_eq!(response(&mut s).await.0, 411);
    assert!(closed(&mut s).await);

    // A body announced but never sent: the connection is dropped after the timeout, and the
    // listener goes on serving others.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {PATH} HTTP/1.1\r\nHost: x\r\n{}Content-Length: 100\r\n\r\n<Auto",
        basic()
    );
    stalled.write_all(head.as_bytes()).await.unwrap();
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&post(PATH, &data("outlook-request.xml"), ""))
        .await
        .unwrap();
    assert_eq!(response(&mut s).await.0, 200);
}

#[tokio::test]
async fn not_configured_is_not_found() {
    let d = dir("off");
    let addr = start(&d, false).await;
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&post(PATH, &data("outlook-request.xml"), ""))
        .await
        .unwrap();
    assert_eq!(response(&mut s).await.0, 404);
}

#[tokio::test]
async fn command_prints_what_a_client_would_receive() {
    let d = dir("cli");
    let config = d.0.join("rpcgate.toml");
    std::fs::write(
        &config,
        format!(
            "state_dir = \"{}\"\n[[proxy.listener]]\naddress = \"127.0.0.1:0\"\ntls = false\n\
             [client]\nexternal_host = \"gw.contoso.com\"\nauth_package = \"basic\"\n\
             cert_principal_name = \"gw.contoso.com\"\n\
             [autodiscover]\ndomains = [\"contoso.com\"]\n\
             users = {{ \"carol@contoso.com\" = \"mbx7.contoso.com\" }}\n",
            d.0.display()
        ),
    )
    .unwrap();
    let run = |email: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rpcgate"))
            .args(["autodiscover", email, "--config"])
            .arg(&config)
            .output()
            .unwrap()
    };
    let out = run("Carol@contoso.com");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("<Server>mbx7.contoso.com</Server>"),
        "{stdout}"
    );
    assert!(
        stdout.contains("<AuthPackage>Basic</AuthPackage>"),
        "{stdout}"
    );
    assert!(
        stdout.contains("<CertPrincipalName>msstd:gw.contoso.com</CertPrincipalName>"),
        "{stdout}"
    );
    assert!(stderr.contains("EXCH mbx7.contoso.com"), "{stderr}");
    let out = run("dave@contoso.com");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("<ErrorCode>500</ErrorCode>"));
}

/// A CA and a leaf for `name` signed by it, as PEM files: (ca, cert, key).
fn certificates(dir: &std::path::Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "autodiscover test CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let leaf = params.signed_by(&key, &ca, &ca_key).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, leaf.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    paths
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_takes_its_settings_from_autodiscover() {
    let d = dir("ping");
    let demo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let demo_addr = demo.local_addr().unwrap();
    tokio::spawn(rpcgate::demo::serve(demo));
    let (endpoint, _) = common::start_endpoint(demo_addr).await;
    let (ca, cert, key) = certificates(&d.0, "gw.test");
    let proxy = start_with(
        &d,
        Some(service_for("gw.test", "127.0.0.1")),
        &format!("127.0.0.1:{}", endpoint.port()),
        Some((&cert, &key)),
    )
    .await;
    let password = d.0.join("password");
    std::fs::write(&password, "Passw0rd\n").unwrap();
    let url = format!("https://gw.test:{}", proxy.port());
    let port = endpoint.port().to_string();
    let ping = |email: &str, password: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_rpcgate"))
            .args(["ping", "--autodiscover", email, &url, "-e", &port])
            .args(["--resolve", "127.0.0.1", "--ca", ca.to_str().unwrap()])
            .args([
                "--user",
                "alice",
                "--password-file",
                password.to_str().unwrap(),
            ])
            .args(["--timeout", "5"])
            .env_remove("RPCGATE_PASSWORD")
            .output()
            .unwrap()
    };
    let out = tokio::task::block_in_place(|| ping("user@contoso.com", &password));
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!("{text}");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        "rpcgate ping --autodiscover user@contoso.com via https://gw.test:",
        "autodiscover",
        "EXPR     gw.test (SSL On, Ntlm, msstd:gw.test)",
        "EXCH     127.0.0.1",
        &format!(
            "-> https://gw.test:{}/rpc/rpcproxy.dll -> 127.0.0.1:{port}",
            proxy.port()
        ),
        "authenticated as alice with NTLM",
        "mgmt inq_if_ids: 2 interface(s)",
    ] {
        assert!(text.contains(needle), "{needle:?} in {text}");
    }

    let out = tokio::task::block_in_place(|| ping("nobody@contoso.com", &password));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(10), "{text}");
    assert!(text.contains("error 500"), "{text}");

    let wrong = d.0.join("wrong");
    std::fs::write(&wrong, "nope\n").unwrap();
    let out = tokio::task::block_in_place(|| ping("user@contoso.com", &wrong));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(9), "{text}");
}
