//! `rpcgate ping` against real proxies on loopback: every failure class produced for real
//! (wrong CA, wrong host name, expired certificate, wrong password, target not allowed,
//! endpoint down, IPv6-first name with an IPv4-only proxy, interface not served), asserting
//! the diagnosis and the exit code of the binary.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rpcgate::auth::ntlm::ServerNames;
use rpcgate::auth::throttle::ThrottleLimits;
use rpcgate::auth::{AuthCore, AuthSettings, ListenerAuth, Method, users};
use rpcgate::proxy::forwarded::TrustedProxies;
use rpcgate::proxy::{ListenerAccess, ListenerPolicy, Proxy};
use tokio::net::TcpListener;

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn dir(tag: &str) -> Dir {
    let d = std::env::temp_dir().join(format!("rpcgate-ping-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    Dir(d)
}

/// A CA, and a leaf for `names` signed by it (optionally already expired), written as PEM.
fn certificates(dir: &Path, names: &[&str], expired: bool) -> (PathBuf, PathBuf, PathBuf) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "ping test CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, names[0]);
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let leaf = params.signed_by(&key, &ca, &ca_key).unwrap();
    let (ca_pem, cert_pem, key_pem) = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    std::fs::write(&cert_pem, leaf.pem()).unwrap();
    std::fs::write(&key_pem, key.serialize_pem()).unwrap();
    (ca_pem, cert_pem, key_pem)
}

/// The demo service behind an endpoint; returns the endpoint's address.
async fn start_backend() -> SocketAddr {
    let demo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let demo_addr = demo.local_addr().unwrap();
    tokio::spawn(rpcgate::demo::serve(demo));
    common::start_endpoint(demo_addr).await.0
}

/// A proxy on 127.0.0.1 (TLS with `cert`/`key` when given; Basic and NTLM with
/// alice/Passw0rd when `auth`), allowing `valid`.
async fn start_proxy(valid: &str, tls: Option<(&Path, &Path)>, auth: Option<&Path>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let proxy = Proxy::new(common::proxy_settings(), common::valid_ports(valid));
    let tls = tls.map(|(cert, key)| {
        tokio_rustls::TlsAcceptor::from(rpcgate::tls::server_config(cert, key).unwrap())
    });
    let core = auth.map(|dir| {
        let users_file = dir.join("users");
        users::save(
            &users_file,
            &[users::new_user("alice", "Passw0rd", vec![], true).unwrap()],
        )
        .unwrap();
        AuthCore::new(AuthSettings {
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
        .unwrap()
    });
    let anonymous = core.is_none();
    let access = ListenerAccess {
        auth: ListenerAuth {
            methods: if anonymous {
                vec![]
            } else {
                vec![Method::Ntlm, Method::Basic]
            },
            anonymous,
            core,
        },
        trusted_proxies: TrustedProxies(vec![]),
        autodiscover: None,
    };
    tokio::spawn(rpcgate::proxy::serve_with_access(
        listener,
        proxy,
        ListenerPolicy {
            tls,
            allow_anonymous: anonymous,
        },
        Arc::new(access),
    ));
    addr
}

/// Runs the binary; returns (exit code, stdout).
async fn ping(args: &[&str]) -> (i32, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_rpcgate"))
        .arg("ping")
        .args(args)
        .args(["--timeout", "5"])
        .env_remove("RPCGATE_PASSWORD")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{text}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_success_then_wrong_ca_wrong_name_and_expired() {
    let d = dir("tls");
    let endpoint = start_backend().await;
    let target = endpoint.to_string();
    let valid = format!("127.0.0.1:{}", endpoint.port());
    let (ca, cert, key) = certificates(&d.0, &["gw.test"], false);
    let good = start_proxy(&valid, Some((&cert, &key)), None).await;
    let url = format!("https://gw.test:{}", good.port());
    let ca_s = ca.to_str().unwrap();

    let (code, out) = ping(&[
        &url,
        "-e",
        &target,
        "--resolve",
        "127.0.0.1",
        "--ca",
        ca_s,
        "--count",
        "5",
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    for needle in [
        "name     gw.test: matches the certificate",
        "trust    chain verified",
        "principal msstd:gw.test",
        "CONN/A3",
        "fragments: send",
        "mgmt inq_if_ids: 2 interface(s)",
        "5 calls: min",
    ] {
        assert!(out.contains(needle), "{needle:?} in {out}");
    }

    // Wrong CA: another CA file.
    let other = dir("tls-other");
    let (other_ca, _, _) = certificates(&other.0, &["x.test"], false);
    let (code, out) = ping(&[
        &url,
        "-e",
        &target,
        "--resolve",
        "127.0.0.1",
        "--ca",
        other_ca.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("is not trusted here"), "{out}");
    assert!(out.contains("pass --ca with the"), "{out}");

    // Wrong host name: the certificate is for other.test.
    let (ca2, cert2, key2) = certificates(&other.0, &["other.test"], false);
    let misnamed = start_proxy(&valid, Some((&cert2, &key2)), None).await;
    let url2 = format!("https://gw.test:{}", misnamed.port());
    let (code, out) = ping(&[
        &url2,
        "-e",
        &target,
        "--resolve",
        "127.0.0.1",
        "--ca",
        ca2.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 4, "{out}");
    assert!(
        out.contains("name     gw.test: NOT in the certificate"),
        "{out}"
    );
    assert!(
        out.contains(
            "certificate name mismatch: the certificate is for DNS:other.test, not gw.test"
        ),
        "{out}"
    );

    // Expired certificate.
    let old = dir("tls-expired");
    let (ca3, cert3, key3) = certificates(&old.0, &["gw.test"], true);
    let expired = start_proxy(&valid, Some((&cert3, &key3)), None).await;
    let url3 = format!("https://gw.test:{}", expired.port());
    let (code, out) = ping(&[
        &url3,
        "-E",
        "--resolve",
        "127.0.0.1",
        "--ca",
        ca3.to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("EXPIRED"), "{out}");
    assert!(out.contains("the proxy's certificate expired on"), "{out}");
    // --insecure goes on, saying so.
    let (code, out) = ping(&[&url3, "-E", "--resolve", "127.0.0.1", "--insecure"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("accepted because of --insecure"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_schemes_right_and_wrong_password() {
    let d = dir("auth");
    let endpoint = start_backend().await;
    let target = endpoint.to_string();
    let proxy = start_proxy(&format!("127.0.0.1:{}", endpoint.port()), None, Some(&d.0)).await;
    let url = format!("http://127.0.0.1:{}", proxy.port());
    let good = d.0.join("good");
    let bad = d.0.join("bad");
    std::fs::write(&good, "Passw0rd\n").unwrap();
    std::fs::write(&bad, "nope\n").unwrap();

    let (code, out) = ping(&[&url, "-E"]).await;
    assert_eq!(code, 9, "{out}");
    assert!(out.contains("401, offers NTLM, Basic"), "{out}");
    assert!(
        out.contains("the proxy requires authentication: pass --user"),
        "{out}"
    );

    for scheme in ["ntlm", "basic"] {
        let (code, out) = ping(&[
            &url,
            "-e",
            &target,
            "--user",
            "alice",
            "--password-file",
            good.to_str().unwrap(),
            "--auth",
            scheme,
        ])
        .await;
        assert_eq!(code, 0, "{out}");
        assert!(out.contains("authenticated as alice"), "{out}");
        assert!(out.contains("mgmt inq_if_ids"), "{out}");

        let (code, out) = ping(&[
            &url,
            "-E",
            "--user",
            "alice",
            "--password-file",
            bad.to_str().unwrap(),
            "--auth",
            scheme,
        ])
        .await;
        assert_eq!(code, 9, "{out}");
        assert!(
            out.contains("the proxy rejected these credentials"),
            "{out}"
        );
    }
    let (code, out) = ping(&[
        &url,
        "-E",
        "--user",
        "alice",
        "--password-file",
        good.to_str().unwrap(),
        "--auth",
        "negotiate",
    ])
    .await;
    assert_eq!(code, 9, "{out}");
    assert!(
        out.contains("the proxy offers only NTLM, Basic while negotiate was asked"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_targets_down_endpoints_and_unserved_interfaces() {
    let endpoint = start_backend().await;
    let target = endpoint.to_string();
    // A port that nothing listens on, but that ValidPorts allows.
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let valid = format!("127.0.0.1:{};127.0.0.1:{dead_port}", endpoint.port());
    let proxy = start_proxy(&valid, None, None).await;
    let url = format!("http://127.0.0.1:{}", proxy.port());

    let (code, out) = ping(&[&url, "-e", "127.0.0.1:1"]).await;
    assert_eq!(code, 5, "{out}");
    assert!(
        out.contains("503 RPC Error 6ba: 127.0.0.1:1 is not in the proxy's ValidPorts"),
        "{out}"
    );

    let dead_target = format!("127.0.0.1:{dead_port}");
    let (code, out) = ping(&[&url, "-e", &dead_target]).await;
    assert_eq!(code, 5, "{out}");
    assert!(
        out.contains("or the proxy cannot reach it (endpoint down"),
        "{out}"
    );

    let (code, out) = ping(&[
        &url,
        "-e",
        &target,
        "--interface",
        "12345778-1234-abcd-ef00-0123456789ab:1.0",
    ])
    .await;
    assert_eq!(code, 7, "{out}");
    assert!(
        out.contains("was reached but does not serve 12345778-1234-abcd-ef00-0123456789ab v1.0"),
        "{out}"
    );

    let (code, out) = ping(&[
        &url,
        "-e",
        &target,
        "--interface",
        "60a15ec5-4de8-11d7-a637-005056a20182:1.0",
    ])
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("rpcecho AddOne: AddOne(41) = 42"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_first_name_with_an_ipv4_only_proxy_shows_both_attempts() {
    let endpoint = start_backend().await;
    let target = endpoint.to_string();
    let proxy = start_proxy(&format!("127.0.0.1:{}", endpoint.port()), None, None).await;
    let url = format!("http://gw.test:{}", proxy.port());
    let (code, out) = ping(&[&url, "-e", &target, "--resolve", "::1,127.0.0.1"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("[::1]:{}  failed", proxy.port())),
        "{out}"
    );
    assert!(
        out.contains(&format!("127.0.0.1:{}  connected", proxy.port())),
        "{out}"
    );
    assert!(out.contains("1 of 2 address(es) failed"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lists_every_stage() {
    let proxy = start_proxy("127.0.0.1:1", None, None).await;
    let url = format!("http://127.0.0.1:{}", proxy.port());
    let (code, out) = ping(&[&url, "-e", "127.0.0.1:1", "--json"]).await;
    assert_eq!(code, 5);
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["exit_code"], 5);
    assert_eq!(v["failed_stage"], "channels");
    let names: Vec<&str> = v["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["stage"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["resolve", "tcp", "http", "echo", "channels"]);
    assert!(v["diagnosis"].as_str().unwrap().contains("ValidPorts"));
}
