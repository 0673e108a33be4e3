//! Authentication at the proxy over real sockets: 401s that keep the connection, no server
//! leg for a wrong password, authorization's `503 RPC Error: 5`, and TLS offloading (trusted
//! load balancers only, X-Forwarded-For into CONN/B2's ClientAddress).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use base64::Engine as _;
use rpcgate::auth::ntlm::ServerNames;
use rpcgate::auth::throttle::ThrottleLimits;
use rpcgate::auth::{AllowRule, AuthCore, AuthSettings, ListenerAuth, Method, users};
use rpcgate::proxy::forwarded::{IpNet, TrustedProxies};
use rpcgate::proxy::{ListenerAccess, ListenerPolicy, Proxy};
use rpch_proto::cookie::Cookie;
use rpch_proto::rts::command::RtsCommand;
use rpch_proto::rts::pdu::{RtsPdu, build};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

struct Setup {
    addr: SocketAddr,
    proxy: Arc<Proxy>,
    dir: std::path::PathBuf,
}

impl Drop for Setup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A plain-HTTP proxy on 127.0.0.1 with `alice`/`Passw0rd` in its user file.
async fn start(
    tag: &str,
    methods: Vec<Method>,
    anonymous: bool,
    rules: Vec<AllowRule>,
    trusted: &[&str],
    valid: &str,
) -> Setup {
    let dir = std::env::temp_dir().join(format!("rpcgate-authtest-{tag}-{}", std::process::id()));
    let users_file = dir.join("users");
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
        rules,
    })
    .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let proxy = Proxy::new(common::proxy_settings(), common::valid_ports(valid));
    let access = ListenerAccess {
        auth: ListenerAuth {
            methods,
            anonymous,
            core: Some(core),
        },
        trusted_proxies: TrustedProxies(trusted.iter().map(|t| IpNet::parse(t).unwrap()).collect()),
        autodiscover: None,
    };
    tokio::spawn(rpcgate::proxy::serve_with_access(
        listener,
        proxy.clone(),
        ListenerPolicy {
            tls: None,
            allow_anonymous: anonymous,
        },
        Arc::new(access),
    ));
    Setup { addr, proxy, dir }
}

/// Reads one response head (up to the blank line).
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut byte))
            .await
            .expect("response in time")
            .unwrap();
        if n == 0 {
            break;
        }
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

fn basic(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Authorization: Basic {token}\r\n")
}

fn echo_request(extra: &str) -> String {
    format!(
        "RPC_IN_DATA /rpc/rpcproxy.dll HTTP/1.1\r\nHost: gw\r\nContent-Length: 0\r\n{extra}\r\n"
    )
}

fn in_channel_request(target: SocketAddr, extra: &str) -> String {
    format!(
        "RPC_IN_DATA /rpc/rpcproxy.dll?127.0.0.1:{} HTTP/1.1\r\nHost: gw\r\n\
         Content-Length: 1073741824\r\n{extra}\r\n",
        target.port()
    )
}

fn conn_b1() -> Vec<u8> {
    build::conn_b1(
        Cookie([1; 16]),
        Cookie([2; 16]),
        0x4000_0000,
        300_000,
        Cookie([3; 16]),
    )
    .encode()
}

#[tokio::test]
async fn unauthenticated_requests_get_401s_that_keep_the_connection() {
    let setup = start(
        "anon",
        vec![Method::Ntlm, Method::Basic],
        false,
        vec![],
        &[],
        "nothing:1",
    )
    .await;
    let mut stream = TcpStream::connect(setup.addr).await.unwrap();
    for _ in 0..2 {
        stream.write_all(echo_request("").as_bytes()).await.unwrap();
        let head = read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{head}");
        assert!(head.contains("Content-Length: 0\r\n"), "{head}");
        assert!(head.contains("Connection: Keep-Alive\r\n"), "{head}");
        let ntlm = head.find("WWW-Authenticate: NTLM\r\n").unwrap();
        let basic = head
            .find("WWW-Authenticate: Basic realm=\"rpcgate\"\r\n")
            .unwrap();
        assert!(ntlm < basic, "challenges in the configured order: {head}");
    }
    // A channel request without credentials: 401, and the connection closes (its gigabyte
    // body is never drained).
    let target: SocketAddr = "127.0.0.1:9".parse().unwrap();
    stream
        .write_all(in_channel_request(target, "").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 401 "), "{head}");
    assert!(head.contains("Connection: close\r\n"), "{head}");
    assert_eq!(setup.proxy.stats.in_channels.load(Ordering::Relaxed), 0);
    assert_eq!(setup.proxy.stats.auth_challenges.load(Ordering::Relaxed), 3);
}

#[tokio::test]
async fn a_wrong_password_opens_no_leg_and_the_right_one_does() {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let valid = format!("127.0.0.1:{}", server_addr.port());
    let setup = start("wrong", vec![Method::Basic], false, vec![], &[], &valid).await;

    let mut stream = TcpStream::connect(setup.addr).await.unwrap();
    let request = in_channel_request(server_addr, &basic("RPCH\\alice", "wrong"));
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(&conn_b1()).await.unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 401 "), "{head}");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), server.accept())
            .await
            .is_err(),
        "a leg was opened to the server"
    );
    assert_eq!(setup.proxy.stats.in_channels.load(Ordering::Relaxed), 0);
    assert_eq!(setup.proxy.stats.auth_failures.load(Ordering::Relaxed), 1);

    let mut stream = TcpStream::connect(setup.addr).await.unwrap();
    let request = in_channel_request(server_addr, &basic("alice", "Passw0rd"));
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(&conn_b1()).await.unwrap();
    let (mut leg, _) = tokio::time::timeout(Duration::from_secs(5), server.accept())
        .await
        .expect("the right password opens the IN leg")
        .unwrap();
    let b2 = read_pdu(&mut leg).await;
    assert!(
        b2.commands
            .iter()
            .any(|c| matches!(c, RtsCommand::ClientAddress(_)))
    );
    assert_eq!(setup.proxy.stats.in_channels.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn authorization_refuses_a_target_with_503_rpc_error_5() {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let valid = format!("127.0.0.1:{}", server_addr.port());
    let rules = vec![AllowRule {
        users: vec!["alice".into()],
        groups: vec![],
        targets: common::valid_ports("mbx1:6001-6004"),
    }];
    let setup = start("authz", vec![Method::Basic], false, rules, &[], &valid).await;
    let mut stream = TcpStream::connect(setup.addr).await.unwrap();
    let request = in_channel_request(server_addr, &basic("alice", "Passw0rd"));
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.0 503 RPC Error: 5\r\n"), "{head}");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), server.accept())
            .await
            .is_err()
    );
    assert_eq!(
        setup
            .proxy
            .stats
            .denied_by_authorization
            .load(Ordering::Relaxed),
        1
    );
}

/// Reads one PDU from a server leg (after the legacy greeting, which the proxy does not send).
async fn read_pdu(leg: &mut TcpStream) -> RtsPdu {
    let mut header = [0u8; 16];
    leg.read_exact(&mut header).await.unwrap();
    let len = u16::from_le_bytes([header[8], header[9]]) as usize;
    let mut pdu = header.to_vec();
    pdu.resize(len, 0);
    leg.read_exact(&mut pdu[16..]).await.unwrap();
    RtsPdu::decode(&pdu).unwrap()
}

#[tokio::test]
async fn offloaded_listener_takes_the_client_address_from_x_forwarded_for() {
    let server = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server_addr = server.local_addr().unwrap();
    let valid = format!("127.0.0.1:{}", server_addr.port());
    let setup = start("xff", vec![], true, vec![], &["127.0.0.0/8"], &valid).await;
    let mut stream = TcpStream::connect(setup.addr).await.unwrap();
    // The client's own entry (left) is not believed; the load balancer's (right) is.
    let request = in_channel_request(
        server_addr,
        "X-Forwarded-For: 198.51.100.66\r\nX-Forwarded-For: 203.0.113.9\r\n",
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.write_all(&conn_b1()).await.unwrap();
    let (mut leg, _) = tokio::time::timeout(Duration::from_secs(5), server.accept())
        .await
        .unwrap()
        .unwrap();
    let b2 = read_pdu(&mut leg).await;
    let client: IpAddr = "203.0.113.9".parse().unwrap();
    assert!(
        b2.commands.contains(&RtsCommand::ClientAddress(client)),
        "{:?}",
        b2.commands
    );

    // A listener that trusts only 10.0.0.0/8 refuses a connection from 127.0.0.1.
    let setup = start("untrusted", vec![], true, vec![], &["10.0.0.0/8"], &valid).await;
    let mut stream = TcpStream::connect(setup.addr).await.unwrap();
    stream.write_all(echo_request("").as_bytes()).await.unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{head}");
    assert_eq!(
        setup.proxy.stats.refused_untrusted.load(Ordering::Relaxed),
        1
    );
}
