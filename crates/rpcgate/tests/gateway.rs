//! A whole gateway as `rpcgate serve` runs it (demo service, endpoint, HTTPS and HTTP proxy
//! listeners, generated certificate), driven through real sockets by rpcgate's own client.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::time::Duration;

use rpcgate::config::Config;
use rpcgate::gateway::{RunningGateway, start};
use rpcgate::rpc_client::RpcClient;
use rpcgate::rpch_client::{ClientOptions, ProxyUrl, open};

/// The embedded default, moved to free ports and a temporary state directory.
async fn start_default_like(tag: &str) -> (RunningGateway, tempdir::TempDir) {
    start_default_like_with(tag, "").await
}

/// The same, with `proxy_keys` added to the `[proxy]` section.
async fn start_default_like_with(
    tag: &str,
    proxy_keys: &str,
) -> (RunningGateway, tempdir::TempDir) {
    let dir = tempdir::TempDir::new(tag);
    let text = rpcgate::config::EMBEDDED_DEFAULT
        .replace("[proxy]\n", &format!("[proxy]\n{proxy_keys}\n"))
        .replace("127.0.0.1:8443", "127.0.0.1:0")
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:9180", "127.0.0.1:0")
        .replace(
            "listen = [\"127.0.0.1:6001\", \"[::1]:6001\"]",
            "listen = [\"127.0.0.1:0\"]",
        )
        .replace(
            "# state_dir = \"/var/lib/rpcgate\"",
            &format!("state_dir = {:?}", dir.path().display().to_string()),
        );
    let config = Config::from_toml_str(&text, "test config").unwrap();
    let mut spec = rpcgate::serve::spec_from_config(&config).unwrap();
    // ValidPorts must name the endpoint's real port.
    spec.valid_ports = rpcgate::valid_ports::ValidPorts::parse(
        "placeholder:1",
        &rpcgate::valid_ports::Origin::Static {
            source: "test".into(),
        },
    )
    .unwrap();
    let gateway = start(spec).await.unwrap();
    let port = gateway.endpoint_addrs[0][0].port();
    gateway.proxy.set_valid_ports(
        rpcgate::valid_ports::ValidPorts::parse(
            &format!("localhost:{port};127.0.0.1:{port}"),
            &rpcgate::valid_ports::Origin::Static {
                source: "test".into(),
            },
        )
        .unwrap(),
    );
    (gateway, dir)
}

mod tempdir {
    /// A directory removed when dropped.
    pub struct TempDir(std::path::PathBuf);
    impl TempDir {
        pub fn new(tag: &str) -> Self {
            let path = std::env::temp_dir().join(format!(
                "rpcgate-test-{tag}-{}-{:?}",
                std::process::id(),
                std::time::SystemTime::now()
            ));
            std::fs::create_dir_all(&path).unwrap();
            Self(path)
        }
        pub fn path(&self) -> &std::path::Path {
            &self.0
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn https_options(gateway_dir: &std::path::Path) -> ClientOptions {
    // Trust exactly the certificate the gateway generated.
    let tls = rpcgate::tls::client_config(Some(&gateway_dir.join("cert.pem")), false).unwrap();
    ClientOptions {
        tls: Some(tls),
        timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    }
}

#[tokio::test]
async fn one_mebibyte_calls_through_https_are_fragmented_and_come_back_intact() {
    let (gateway, dir) = start_default_like("mib").await;
    let proxy: ProxyUrl = format!("https://localhost:{}", gateway.https_addr().unwrap().port())
        .parse()
        .unwrap();
    let target = format!("localhost:{}", gateway.endpoint_addrs[0][0].port());
    let transport = open(&proxy, &target, &https_options(dir.path()))
        .await
        .unwrap();
    let mut client = RpcClient::new(transport);
    client.bind(rpcgate::demo::echo::interface()).await.unwrap();
    // 1 MiB and a bit, not a multiple of any fragment or window size.
    let data: Vec<u8> = (0..(1024 * 1024 + 4321))
        .map(|i: u32| (i * 7 % 251) as u8)
        .collect();
    let echoed = client.echo_data(&data).await.unwrap();
    assert!(echoed == data, "EchoData returned different bytes");
    assert_eq!(client.echo_add_one(41).await.unwrap(), 42);
    let sourced = client.source_data(300_000).await.unwrap();
    assert_eq!(sourced, rpcgate::demo::echo::source_pattern(300_000));
    client.sink_data(&data).await.unwrap();
}

#[tokio::test]
async fn the_demo_interfaces_are_listed_over_plain_http() {
    let (gateway, _dir) = start_default_like("http").await;
    let proxy: ProxyUrl = format!("http://127.0.0.1:{}", gateway.http_addr().unwrap().port())
        .parse()
        .unwrap();
    let target = format!("localhost:{}", gateway.endpoint_addrs[0][0].port());
    let transport = open(&proxy, &target, &ClientOptions::default())
        .await
        .unwrap();
    let mut client = RpcClient::new(transport);
    client.bind(rpcgate::demo::mgmt::interface()).await.unwrap();
    let ids = client.mgmt_inq_if_ids().await.unwrap();
    assert!(ids.contains(&rpcgate::demo::mgmt::interface()));
    assert!(ids.contains(&rpcgate::demo::echo::interface()));
}

/// `GET path` on the status listener; returns the status code and the body.
async fn status_get(address: std::net::SocketAddr, method: &str, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(format!("{method} {path} HTTP/1.1\r\nHost: status\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(5), stream.read_to_string(&mut response))
        .await
        .unwrap()
        .unwrap();
    let code = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

#[tokio::test]
async fn the_status_page_and_metrics_show_a_live_virtual_connection_and_its_end() {
    let (gateway, _dir) = start_default_like("status").await;
    let status = gateway
        .status_addr
        .expect("the default config serves a status page");
    let proxy: ProxyUrl = format!("http://127.0.0.1:{}", gateway.http_addr().unwrap().port())
        .parse()
        .unwrap();
    let target = format!("localhost:{}", gateway.endpoint_addrs[0][0].port());
    let transport = open(&proxy, &target, &ClientOptions::default())
        .await
        .unwrap();
    let vc = transport.info.vc.to_string();
    let mut client = RpcClient::new(transport);
    client.bind(rpcgate::demo::echo::interface()).await.unwrap();
    client.echo_data(&[7u8; 10_000]).await.unwrap();

    let (code, page) = status_get(status, "GET", "/").await;
    assert_eq!(code, 200);
    for expected in [
        vc.as_str(),
        "IN channel",
        "OUT channel",
        "virtual connection",
        "anonymous",
    ] {
        assert!(
            page.contains(expected),
            "{expected:?} not on the page:\n{page}"
        );
    }

    let (code, metrics) = status_get(status, "GET", "/metrics").await;
    assert_eq!(code, 200);
    let backend = gateway.demo_addr.unwrap();
    for expected in [
        "rpcgate_proxy_channels_active 2".to_owned(),
        "rpcgate_proxy_channels_total{direction=\"in\"} 1".to_owned(),
        format!("rpcgate_endpoint_virtual_connections_active{{backend=\"{backend}\"}} 1"),
    ] {
        assert!(
            metrics.lines().any(|l| l == expected),
            "{expected:?} not in the metrics:\n{metrics}"
        );
    }
    // Every sample belongs to a family announced by # TYPE.
    let typed: Vec<&str> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    for sample in metrics.lines().filter(|l| !l.starts_with('#')) {
        let name = sample.split(['{', ' ']).next().unwrap();
        assert!(typed.contains(&name), "{name} has no # TYPE");
    }

    let (code, json) = status_get(status, "GET", "/status.json").await;
    assert_eq!(code, 200);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let live = json["live"].as_array().unwrap();
    assert_eq!(live.len(), 3, "{json}");
    assert!(live.iter().all(|e| e["vc"] == vc.as_str()));
    let to_backend = live
        .iter()
        .find(|e| e["kind"] == "virtual connection")
        .unwrap()["bytes_to_server"]
        .as_u64()
        .unwrap();
    assert!(to_backend > 10_000, "{json}");

    assert_eq!(status_get(status, "GET", "/nothing").await.0, 404);
    assert_eq!(status_get(status, "POST", "/metrics").await.0, 405);

    // The virtual connection ends: it leaves the page and the gauges.
    drop(client);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, json) = status_get(status, "GET", "/status.json").await;
        let json: serde_json::Value = serde_json::from_str(&json).unwrap();
        if json["live"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still listed after the client went away: {json}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, metrics) = status_get(status, "GET", "/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l == "rpcgate_proxy_channels_active 0")
    );
    assert!(gateway.shutdown().await);
}

#[tokio::test]
async fn the_proxy_reaches_its_own_endpoint_in_process_and_calls_work_both_ways() {
    // In process (the default) and over loopback TCP (in_process_endpoints = false): the
    // same calls, the same answers; only the leg between proxy and endpoint differs.
    for in_process in [true, false] {
        let (gateway, _dir) = if in_process {
            start_default_like("inproc").await
        } else {
            start_default_like_with("tcp", "in_process_endpoints = false").await
        };
        let proxy: ProxyUrl = format!("http://127.0.0.1:{}", gateway.http_addr().unwrap().port())
            .parse()
            .unwrap();
        let target = format!("localhost:{}", gateway.endpoint_addrs[0][0].port());
        let transport = open(&proxy, &target, &ClientOptions::default())
            .await
            .unwrap();
        let mut client = RpcClient::new(transport);
        client.bind(rpcgate::demo::echo::interface()).await.unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        assert!(client.echo_data(&data).await.unwrap() == data);
        let legs = gateway
            .proxy
            .stats
            .in_process_legs
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            legs,
            if in_process { 2 } else { 0 },
            "in_process={in_process}"
        );
        drop(client);
        assert!(gateway.shutdown().await);
    }
}
