//! Shared helpers for rpcgate's real-socket tests: start proxies and endpoints on 127.0.0.1:0,
//! build RPC PDUs, and an echo backend that returns every PDU it receives.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rpcgate::endpoint::{Backend, Endpoint, EndpointSettings};
use rpcgate::framed::{PduReader, spawn_writer};
use rpcgate::proxy::{ListenerPolicy, Proxy, ProxySettings};
use rpcgate::valid_ports::{Origin, ValidPorts};
use rpch_proto::pdu::header::{CommonHeader, PFC_FIRST_FRAG, PFC_LAST_FRAG, PacketType};
use tokio::net::TcpListener;

pub fn proxy_settings() -> ProxySettings {
    ProxySettings {
        receive_window: 65_536,
        connection_timeout_ms: 120_000,
        out_channel_lifetime: 0x4000_0000,
        connect_timeout: Duration::from_secs(2),
        handshake_timeout: Duration::from_secs(10),
        keepalive_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(300),
        max_connections: 10_000,
    }
}

pub fn valid_ports(text: &str) -> ValidPorts {
    ValidPorts::parse(
        text,
        &Origin::Static {
            source: "test".into(),
        },
    )
    .unwrap()
}

/// Starts a plain-HTTP anonymous proxy; returns its address and handle.
pub async fn start_proxy(valid: &str) -> (SocketAddr, Arc<Proxy>) {
    start_proxy_with(valid, proxy_settings()).await
}

/// Starts a plain-HTTP anonymous proxy with `settings`.
pub async fn start_proxy_with(valid: &str, settings: ProxySettings) -> (SocketAddr, Arc<Proxy>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let proxy = Proxy::new(settings, valid_ports(valid));
    tokio::spawn(rpcgate::proxy::serve(
        listener,
        proxy.clone(),
        ListenerPolicy {
            tls: None,
            allow_anonymous: true,
        },
    ));
    (addr, proxy)
}

/// Starts an endpoint in front of `backend`.
pub async fn start_endpoint(backend: SocketAddr) -> (SocketAddr, Arc<Endpoint>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let endpoint = Endpoint::new(EndpointSettings {
        backend: Backend {
            host: backend.ip().to_string(),
            port: backend.port(),
        },
        receive_window: 65_536,
        setup_timeout: Duration::from_secs(10),
        first_pdu_timeout: Duration::from_secs(10),
        connect_timeout: Duration::from_secs(2),
    });
    tokio::spawn(rpcgate::endpoint::serve(listener, endpoint.clone()));
    (addr, endpoint)
}

/// A backend that sends every PDU it receives straight back.
pub async fn start_echo_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (r, w) = stream.into_split();
                let mut reader = PduReader::new(r, BytesMut::new());
                let (tx, _task) = spawn_writer(w);
                while let Ok(Some(pdu)) = reader.next().await {
                    if tx.send(pdu).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// An RPC request PDU of exactly `len` bytes whose payload encodes `seq`.
pub fn rpc_pdu(seq: u32, len: usize) -> Bytes {
    let mut out = Vec::with_capacity(len);
    CommonHeader::new(
        PacketType::Request,
        PFC_FIRST_FRAG | PFC_LAST_FRAG,
        len as u16,
        seq,
    )
    .write(&mut out);
    let mut x = seq.wrapping_mul(2_654_435_761);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        out.push(x as u8);
    }
    Bytes::from(out)
}

/// Logs to the test's output when RUST_LOG is set (e.g. `RUST_LOG=debug cargo test ...`).
pub fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}
