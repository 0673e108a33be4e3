//! Keep-alive over real sockets: a virtual connection left idle for three times its
//! ConnectionTimeout (shortened to 2 s) survives an idle_timeout shorter than that, because the
//! outbound proxy pings the client every ConnectionTimeout/2 on OUT and the client pings the
//! inbound proxy every ConnectionTimeout/2 (the CONN/C2 value) on IN; a call afterwards works.

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
use rpcgate::rpch_client::{ClientOptions, open};

const CONNECTION_TIMEOUT_MS: u32 = 2_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_virtual_connection_lives_on_pings_for_three_connection_timeouts() {
    init_logging();
    let backend = start_echo_backend().await;
    let (endpoint_addr, endpoint) = start_endpoint(backend).await;
    let target = format!("127.0.0.1:{}", endpoint_addr.port());
    let mut settings = proxy_settings();
    settings.connection_timeout_ms = CONNECTION_TIMEOUT_MS;
    // Shorter than the idle period: only the pings (traffic both ways) keep the channels open.
    settings.idle_timeout = Duration::from_millis(u64::from(CONNECTION_TIMEOUT_MS) * 3 / 2);
    let (addr, proxy) = start_proxy_with(&target, settings).await;
    let url = format!("http://{addr}").parse().unwrap();
    let mut t = open(&url, &target, &ClientOptions::default())
        .await
        .unwrap();
    assert_eq!(t.info.params.in_proxy_timeout_ms, CONNECTION_TIMEOUT_MS);

    t.send(rpc_pdu(1, 200)).await.unwrap();
    assert_eq!(t.recv().await.unwrap(), rpc_pdu(1, 200));
    let pings_before = t.stats.pings_received.load(Ordering::Relaxed);

    tokio::time::sleep(Duration::from_millis(u64::from(CONNECTION_TIMEOUT_MS) * 3)).await;

    let pings = t.stats.pings_received.load(Ordering::Relaxed) - pings_before;
    // One ping per ConnectionTimeout/2 over 3 ConnectionTimeouts: about 6.
    assert!(pings >= 4, "{pings} pings in 3 ConnectionTimeouts");
    assert_eq!(proxy.stats.channels_active.load(Ordering::Relaxed), 2);
    assert_eq!(endpoint.stats.vcs_active.load(Ordering::Relaxed), 1);
    t.send(rpc_pdu(2, 300)).await.unwrap();
    let echo = tokio::time::timeout(Duration::from_secs(5), t.recv())
        .await
        .expect("no answer after the idle period")
        .unwrap();
    assert_eq!(echo, rpc_pdu(2, 300));
    eprintln!("{pings} pings received while idle");
}
