//! The data path over real sockets: rpcgate's client -> proxy (IN and OUT, possibly on two
//! different proxy instances) -> endpoint -> backend, and the refusals the proxy must make.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use rpcgate::rpch_client::{ClientError, ClientOptions, ProxyUrl, open};
use tokio::net::TcpListener;

fn url(addr: std::net::SocketAddr) -> ProxyUrl {
    format!("http://{addr}").parse().unwrap()
}

#[tokio::test]
async fn pdus_round_trip_through_proxy_and_endpoint() {
    let backend = start_echo_backend().await;
    let (endpoint_addr, endpoint) = start_endpoint(backend).await;
    let target = format!("localhost:{}", endpoint_addr.port());
    let (proxy_addr, _proxy) = start_proxy(&target).await;

    let mut t = open(&url(proxy_addr), &target, &ClientOptions::default())
        .await
        .unwrap();
    assert_eq!(t.info.params.in_proxy_window, 65_536);
    assert_eq!(t.info.params.out_proxy_timeout_ms, 120_000);
    for seq in 0..50 {
        let pdu = rpc_pdu(seq, 100 + seq as usize * 10);
        t.send(pdu.clone()).await.unwrap();
        assert_eq!(t.recv().await.unwrap(), pdu);
    }
    assert_eq!(endpoint.stats.vcs_opened.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn megabytes_larger_than_every_window_flow_both_ways_through_two_proxies() {
    let backend = start_echo_backend().await;
    let (endpoint_addr, endpoint) = start_endpoint(backend).await;
    let target = format!("127.0.0.1:{}", endpoint_addr.port());
    let (in_proxy, in_stats) = start_proxy(&target).await;
    let (out_proxy, out_stats) = start_proxy(&target).await;
    let options = ClientOptions {
        out_proxy: Some(url(out_proxy)),
        ..ClientOptions::default()
    };
    let mut t = open(&url(in_proxy), &target, &options).await.unwrap();
    // IN went through one proxy and OUT through the other; the endpoint paired them.
    assert_eq!(in_stats.stats.in_channels.load(Ordering::Relaxed), 1);
    assert_eq!(in_stats.stats.out_channels.load(Ordering::Relaxed), 0);
    assert_eq!(out_stats.stats.out_channels.load(Ordering::Relaxed), 1);
    assert_eq!(endpoint.stats.vcs_opened.load(Ordering::Relaxed), 1);

    // 4 MiB each way, pipelined: the sender runs ahead of the receiver by far more than any
    // window, so every hop's flow control and back-pressure is exercised.
    let tx = t.sender();
    let pdus: Vec<_> = (0..800u32)
        .map(|seq| rpc_pdu(seq, 5_000 + (seq as usize % 7) * 11))
        .collect();
    let expected = pdus.clone();
    let sender = tokio::spawn(async move {
        for pdu in pdus {
            tx.send(pdu).await.unwrap();
        }
    });
    for want in expected {
        let got = tokio::time::timeout(Duration::from_secs(20), t.recv())
            .await
            .expect("PDU arrives")
            .unwrap();
        assert_eq!(got, want);
    }
    sender.await.unwrap();
}

#[tokio::test]
async fn two_hundred_concurrent_virtual_connections_without_cross_talk() {
    let backend = start_echo_backend().await;
    let (endpoint_addr, endpoint) = start_endpoint(backend).await;
    let target = format!("localhost:{}", endpoint_addr.port());
    let (proxy_addr, _proxy) = start_proxy(&target).await;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..200u32 {
        let target = target.clone();
        tasks.spawn(async move {
            let mut t = open(&url(proxy_addr), &target, &ClientOptions::default())
                .await
                .unwrap();
            for i in 0..5 {
                let pdu = rpc_pdu(n * 1000 + i, 64 + (n as usize % 50) * 8);
                t.send(pdu.clone()).await.unwrap();
                assert_eq!(
                    t.recv().await.unwrap(),
                    pdu,
                    "VC {n} got someone else's PDU"
                );
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert_eq!(endpoint.stats.vcs_opened.load(Ordering::Relaxed), 200);
    // Every virtual connection is torn down once its client goes away.
    for _ in 0..100 {
        if endpoint.stats.vcs_active.load(Ordering::Relaxed) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(endpoint.stats.vcs_active.load(Ordering::Relaxed), 0);
    assert_eq!(endpoint.table.waiting(), 0);
}

#[tokio::test]
async fn a_target_not_in_valid_ports_gets_503_and_is_never_connected() {
    // A listener that records whether anyone connected.
    let bait = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bait_port = bait.local_addr().unwrap().port();
    let (proxy_addr, proxy) = start_proxy("localhost:1").await;
    let err = open(
        &url(proxy_addr),
        &format!("127.0.0.1:{bait_port}"),
        &ClientOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(err, ClientError::RpcError { code: 0x6ba, .. }),
        "{err}"
    );
    assert!(proxy.stats.denied_by_valid_ports.load(Ordering::Relaxed) >= 1);
    let accepted = tokio::time::timeout(Duration::from_millis(300), bait.accept()).await;
    assert!(
        accepted.is_err(),
        "the proxy connected to a target ValidPorts does not allow"
    );
}

#[tokio::test]
async fn a_backend_name_listening_on_ipv4_only_is_reached() {
    // The endpoint listens on 127.0.0.1 only; `localhost` resolves to ::1 first on many hosts.
    let backend = start_echo_backend().await;
    let (endpoint_addr, _endpoint) = start_endpoint(backend).await;
    let target = format!("localhost:{}", endpoint_addr.port());
    let (proxy_addr, _proxy) = start_proxy(&target).await;
    let mut t = open(&url(proxy_addr), &target, &ClientOptions::default())
        .await
        .unwrap();
    let pdu = rpc_pdu(7, 300);
    t.send(pdu.clone()).await.unwrap();
    assert_eq!(t.recv().await.unwrap(), pdu);
}

#[tokio::test]
async fn a_server_that_is_down_gets_503_6ba_promptly() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let target = format!("localhost:{port}");
    let (proxy_addr, proxy) = start_proxy(&target).await;
    let started = std::time::Instant::now();
    let err = open(&url(proxy_addr), &target, &ClientOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::RpcError { code: 0x6ba, .. }),
        "{err}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    // Both channels (IN and OUT) tried and failed.
    assert!(proxy.stats.server_unreachable.load(Ordering::Relaxed) >= 1);
}
