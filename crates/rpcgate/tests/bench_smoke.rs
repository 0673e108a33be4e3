//! `rpcgate bench` works: every mode, against the demo service directly and through a proxy
//! and an endpoint on real sockets, makes calls and reports no error. No speed is asserted
//! (`bench/compare` and BENCHMARKS.md are where speed is measured).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use rpcgate::bench::conn::{CallKind, Target};
use rpcgate::bench::progress::Progress;
use rpcgate::bench::{BenchArgs, Mode, run};
use tokio::net::TcpListener;

async fn start_demo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(rpcgate::demo::serve(listener));
    addr
}

fn args(target: Target, mode: Mode, call: CallKind, size: usize) -> BenchArgs {
    BenchArgs {
        target,
        mode,
        call,
        size,
        connections: 2,
        outstanding: 2,
        rate: 200.0,
        duration: Duration::from_millis(400),
        warmup: Duration::from_millis(100),
        hold: Duration::from_millis(200),
        gateway_pids: vec![std::process::id()],
        source_addresses: None,
        open_concurrency: 4,
        timeout: Duration::from_secs(10),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_mode_runs_through_the_gateway_and_directly() {
    common::init_logging();
    let demo = start_demo().await;
    let (endpoint, _endpoint) = common::start_endpoint(demo).await;
    let target_name = format!("127.0.0.1:{}", endpoint.port());
    let (proxy, _proxy) = common::start_proxy(&target_name).await;
    let http = Target::Http {
        proxy: format!("http://{proxy}").parse().unwrap(),
        endpoint: target_name,
        options: Box::default(),
    };
    let direct = Target::direct(&demo.to_string()).await.unwrap();

    let runs = [
        (http.clone(), Mode::Closed, CallKind::Echo, 65_536),
        (http.clone(), Mode::Closed, CallKind::Sink, 10_000),
        (http.clone(), Mode::Closed, CallKind::Source, 10_000),
        (http.clone(), Mode::Open, CallKind::Echo, 64),
        (http.clone(), Mode::Setup, CallKind::Echo, 64),
        (http, Mode::Idle, CallKind::Echo, 64),
        (direct.clone(), Mode::Closed, CallKind::Echo, 65_536),
        (direct.clone(), Mode::Setup, CallKind::Echo, 64),
        (direct, Mode::Idle, CallKind::Echo, 64),
    ];
    for (target, mode, call, size) in runs {
        let what = format!("{} {mode:?} {call:?} {size}", target.transport());
        let outcome = run(&args(target, mode, call, size), &Progress::silent())
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(outcome.errors, 0, "{what}: {:?}", outcome.error_samples);
        assert!(outcome.calls > 0, "{what}: no call made");
        match mode {
            Mode::Closed | Mode::Open => {
                assert!(outcome.latency_us.is_some(), "{what}: no latency");
                assert!(outcome.mb_per_s > 0.0, "{what}");
            }
            Mode::Setup => assert!(outcome.setups.unwrap() > 0, "{what}"),
            Mode::Idle => {
                let idle = outcome.idle.as_ref().unwrap();
                assert_eq!((idle.held, idle.alive), (2, 2), "{what}");
                assert!(idle.rss_after > 0, "{what}");
            }
        }
        // Both outputs render.
        let json: serde_json::Value = serde_json::from_str(&outcome.to_json()).unwrap();
        assert_eq!(json["errors"], 0);
        assert!(outcome.to_text().contains("errors       0"), "{what}");
    }
}
