//! Channel recycling over real sockets: 128 KiB channel lifetimes (the spec minimum) force IN
//! and OUT recycling every few dozen PDUs, through two proxy instances so that both R1 (the
//! successor lands on the other proxy) and R2 (on the same one) happen, in both directions, at
//! the same time. Every PDU is checked: none lost, duplicated or reordered.

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
use rpcgate::proxy::{ListenerPolicy, Proxy};
use rpcgate::rpch_client::{ClientOptions, ProxyUrl, open};
use tokio::net::TcpListener;

const LIFETIME: u32 = 128 * 1024;

async fn start_small_lifetime_proxy(valid: &str) -> (ProxyUrl, std::sync::Arc<Proxy>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut settings = proxy_settings();
    settings.out_channel_lifetime = LIFETIME;
    let proxy = Proxy::new(settings, valid_ports(valid));
    tokio::spawn(rpcgate::proxy::serve(
        listener,
        proxy.clone(),
        ListenerPolicy {
            tls: None,
            allow_anonymous: true,
        },
    ));
    (format!("http://{addr}").parse().unwrap(), proxy)
}

/// Sends `total` bytes of PDUs through `t` while receiving the echoes, checking each one.
async fn pump(t: &mut rpcgate::rpch_client::HttpTransport, total: usize) -> usize {
    let sender = t.sender();
    let mut pdus = Vec::new();
    let mut sent = 0usize;
    let mut seq = 0u32;
    while sent < total {
        let len = 64 + (seq as usize * 7919) % 5_000;
        pdus.push((seq, len));
        sent += len;
        seq += 1;
    }
    let count = pdus.len();
    let expected: Vec<_> = pdus.clone();
    let task = tokio::spawn(async move {
        for (seq, len) in pdus {
            sender.send(rpc_pdu(seq, len)).await.unwrap();
        }
    });
    for (seq, len) in expected {
        let got = tokio::time::timeout(Duration::from_secs(30), t.recv())
            .await
            .unwrap_or_else(|_| panic!("PDU {seq} never came back"))
            .unwrap();
        assert_eq!(got, rpc_pdu(seq, len), "PDU {seq}");
    }
    task.await.unwrap();
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_and_out_recycle_hundreds_of_times_through_two_proxies_losing_nothing() {
    init_logging();
    let backend = start_echo_backend().await;
    let (endpoint_addr, endpoint) = start_endpoint(backend).await;
    let target = format!("127.0.0.1:{}", endpoint_addr.port());
    let (a, proxy_a) = start_small_lifetime_proxy(&target).await;
    let (b, proxy_b) = start_small_lifetime_proxy(&target).await;
    let options = ClientOptions {
        out_proxy: Some(b.clone()),
        in_channel_lifetime: LIFETIME,
        // Successors alternate between the proxies with different periods, so that some land
        // on the proxy that runs the predecessor (R2) and some on the other one (R1).
        in_recycle_proxies: vec![b.clone(), b.clone(), a.clone()],
        out_recycle_proxies: vec![b.clone(), a.clone(), a.clone()],
        ..ClientOptions::default()
    };
    let mut t = open(&a, &target, &options).await.unwrap();
    let total = std::env::var("RPCGATE_RECYCLE_MIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(256)
        * 1024
        * 1024;
    let started = std::time::Instant::now();
    let pdus = pump(&mut t, total).await;
    let in_recycles = t.stats.in_recycles.load(Ordering::Relaxed);
    let out_recycles = t.stats.out_recycles.load(Ordering::Relaxed);
    eprintln!(
        "{} MiB each way, {pdus} PDUs, {in_recycles} IN and {out_recycles} OUT recyclings in {:?}",
        total / (1024 * 1024),
        started.elapsed()
    );
    let expected = (total as u64 / u64::from(LIFETIME)) / 2;
    assert!(in_recycles >= expected, "IN recycled {in_recycles} times");
    assert!(
        out_recycles >= expected,
        "OUT recycled {out_recycles} times"
    );
    // R1 and R2 both happened, in both directions.
    let sum = |f: fn(&rpcgate::proxy::ProxyStats) -> &std::sync::atomic::AtomicU64| {
        f(&proxy_a.stats).load(Ordering::Relaxed) + f(&proxy_b.stats).load(Ordering::Relaxed)
    };
    let (in_r1, in_r2) = (sum(|s| &s.in_r1), sum(|s| &s.in_r2));
    let (out_r1, out_r2) = (sum(|s| &s.out_r1), sum(|s| &s.out_r2));
    eprintln!("IN: {in_r1} R1, {in_r2} R2; OUT: {out_r1} R1, {out_r2} R2");
    assert!(in_r1 >= 100 && in_r2 >= 100, "IN: {in_r1} R1, {in_r2} R2");
    assert!(
        out_r1 >= 100 && out_r2 >= 100,
        "OUT: {out_r1} R1, {out_r2} R2"
    );
    // Both proxies carried channels of this one virtual connection.
    assert!(proxy_a.stats.in_channels.load(Ordering::Relaxed) > 1);
    assert!(proxy_b.stats.out_channels.load(Ordering::Relaxed) > 1);
    assert_eq!(endpoint.stats.vcs_opened.load(Ordering::Relaxed), 1);
    drop(t);
    // Everything is torn down once the client goes away.
    for _ in 0..100 {
        if endpoint.stats.vcs_active.load(Ordering::Relaxed) == 0
            && proxy_a.stats.channels_active.load(Ordering::Relaxed) == 0
            && proxy_b.stats.channels_active.load(Ordering::Relaxed) == 0
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(endpoint.stats.vcs_active.load(Ordering::Relaxed), 0);
    assert_eq!(proxy_a.stats.channels_active.load(Ordering::Relaxed), 0);
    assert_eq!(proxy_b.stats.channels_active.load(Ordering::Relaxed), 0);
    assert!(proxy_a.channels.is_empty() && proxy_b.channels.is_empty());
}
