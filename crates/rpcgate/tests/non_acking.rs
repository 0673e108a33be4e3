//! A client that never acknowledges its OUT channel (as Samba's) still gets its data through
//! the default 64 KiB windows: the outbound proxy makes the window advisory, once, and TCP
//! back-pressure bounds what it buffers. Policies: docs/flow-control.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use rpcgate::rpch_client::{ClientOptions, open};

const WINDOW: usize = 65_536;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_acknowledges_gets_many_windows_of_data() {
    init_logging();
    let backend = start_echo_backend().await;
    let (endpoint_addr, _endpoint) = start_endpoint(backend).await;
    let target = format!("127.0.0.1:{}", endpoint_addr.port());
    let (addr, proxy) = start_proxy(&target).await;
    assert_eq!(proxy.settings.receive_window as usize, WINDOW);
    let url = format!("http://{addr}").parse().unwrap();
    let options = ClientOptions {
        never_acknowledge: true,
        ..ClientOptions::default()
    };
    let mut t = open(&url, &target, &options).await.unwrap();
    let started = Instant::now();
    let sender = t.sender();
    let count = 1_000u32;
    let len = 4_000usize; // 4 MB in all: 61 windows
    let task = tokio::spawn(async move {
        for seq in 0..count {
            sender.send(rpc_pdu(seq, len)).await.unwrap();
        }
    });
    for seq in 0..count {
        let got = tokio::time::timeout(Duration::from_secs(20), t.recv())
            .await
            .unwrap_or_else(|_| panic!("PDU {seq} never came back"))
            .unwrap();
        assert_eq!(got, rpc_pdu(seq, len), "PDU {seq}");
    }
    task.await.unwrap();
    let moved = count as usize * len;
    assert!(moved > 10 * WINDOW);
    // The outbound proxy noticed once, and went on under TCP back-pressure.
    assert_eq!(proxy.stats.out_window_advisory.load(Ordering::Relaxed), 1);
    eprintln!(
        "{moved} bytes ({} windows) to a non-acking client in {:?}",
        moved / WINDOW,
        started.elapsed()
    );
}
