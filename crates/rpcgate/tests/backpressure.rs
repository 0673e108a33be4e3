//! Back-pressure over real sockets: a client that stops reading its OUT channel makes the
//! whole path stop — its own sends block — instead of growing any buffer in the gateway. The
//! test has a binary of its own because it measures the process's resident memory, in which
//! the proxy and the endpoint run. Policies: docs/flow-control.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use rpcgate::rpch_client::{ClientOptions, open};

/// Resident set size of this process (the whole gateway runs in it), bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_stops_the_path_and_bounds_memory() {
    init_logging();
    let backend = start_echo_backend().await;
    let (endpoint_addr, _endpoint) = start_endpoint(backend).await;
    let target = format!("127.0.0.1:{}", endpoint_addr.port());
    let (addr, proxy) = start_proxy(&target).await;
    let url = format!("http://{addr}").parse().unwrap();
    let mut t = open(&url, &target, &ClientOptions::default())
        .await
        .unwrap();
    let len = 4_000usize;
    // Warm up: a few windows both ways, acknowledged, so the windows are enforced (a client
    // that has acknowledged once is never treated as a non-acking one).
    for seq in 0..64u32 {
        t.send(rpc_pdu(seq, len)).await.unwrap();
        assert_eq!(t.recv().await.unwrap(), rpc_pdu(seq, len));
    }
    let rss_before = rss();

    // Now send 256 MB and read nothing.
    let offered = 64_000usize;
    let sent = Arc::new(AtomicU64::new(0));
    let sender = t.sender();
    let counter = sent.clone();
    let task = tokio::spawn(async move {
        for seq in 64..64 + offered as u32 {
            if sender.send(rpc_pdu(seq, len)).await.is_err() {
                return;
            }
            counter.fetch_add(len as u64, Ordering::Relaxed);
        }
    });
    // Wait until sending has stopped: no progress for 2 s.
    let mut last = 0;
    let mut still_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(120);
    while still_since.elapsed() < Duration::from_secs(2) {
        assert!(Instant::now() < deadline, "sending never stopped");
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = sent.load(Ordering::Relaxed);
        if now != last {
            last = now;
            still_since = Instant::now();
        }
    }
    let stalled_at = sent.load(Ordering::Relaxed);
    let grown = rss().saturating_sub(rss_before);
    eprintln!(
        "sends blocked after {stalled_at} bytes of {}; RSS grew by {grown} bytes",
        offered * len
    );
    assert!(!task.is_finished(), "every send went through");
    // What the path may hold: the windows of its four legs, each writer queue (32 entries of
    // one PDU), the client's queues; the rest is in kernel socket buffers, not our memory.
    // Generous by a factor of several: an unbounded buffer would hold all of `stalled_at`.
    let bound = 16 * 1024 * 1024;
    assert!(grown < bound, "RSS grew by {grown} bytes");
    assert!(
        (stalled_at as usize) < offered * len / 4,
        "{stalled_at} bytes accepted while nothing was read"
    );
    assert_eq!(proxy.stats.out_window_advisory.load(Ordering::Relaxed), 0);

    // Reading again drains everything, in order.
    let received = stalled_at as usize / len;
    for seq in 64..64 + received.min(2_000) as u32 {
        let got = tokio::time::timeout(Duration::from_secs(20), t.recv())
            .await
            .unwrap_or_else(|_| panic!("PDU {seq} never came back"))
            .unwrap();
        assert_eq!(got, rpc_pdu(seq, len), "PDU {seq}");
    }
    task.abort();
}
