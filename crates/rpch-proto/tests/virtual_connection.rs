//! Client, inbound proxy, server and outbound proxy state machines wired together in memory,
//! with a virtual clock: deterministic tests of establishment, flow control on every leg,
//! keep-alive and timers, with no socket anywhere.

#![allow(clippy::panic, clippy::unwrap_used, clippy::indexing_slicing)]

mod harness;

use std::time::{Duration, Instant};

use harness::{CLIENT_ADDR, Kind, Net, Settings, cookie, rpc_pdu};
use rpch_proto::ProtocolError;
use rpch_proto::client::ChannelId;
use rpch_proto::inbound::{InboundConfig, InboundEvent, InboundProxy, InboundState};
use rpch_proto::outbound::{OutboundConfig, OutboundProxy};
use rpch_proto::rts::build;
use rpch_proto::server::{FirstPdu, Leg, LegId, ServerConfig, ServerVc, classify_first_pdu};

#[test]
fn establishes_in_either_leg_order_with_the_right_values() {
    for hold in [Kind::In, Kind::Out] {
        let mut net = Net::new(Settings {
            proxy_window: 32_768,
            ..Settings::default()
        });
        // One leg is held back until the other has reached the server.
        net.hold = Some(hold);
        net.settle().unwrap();
        assert!(!net.client.is_open());
        assert_eq!(
            net.server.as_ref().unwrap().missing_leg(),
            Some(match hold {
                Kind::In => Leg::In,
                Kind::Out => Leg::Out,
            })
        );
        net.hold = None;
        net.settle().unwrap();
        assert!(net.client.is_open());
        let params = net.client.params();
        assert_eq!(params.out_proxy_timeout_ms, 120_000, "CONN/A3");
        assert_eq!(
            params.in_proxy_window, 32_768,
            "CONN/C2 carries the IN proxy window"
        );
        assert_eq!(params.in_proxy_timeout_ms, 120_000);
        assert_eq!(net.ip(0).unwrap().state(), InboundState::Opened);
        let server = net.server.as_ref().unwrap();
        assert_eq!(server.client_address(), Some(CLIENT_ADDR));
        assert_eq!(server.vc_cookie(), cookie(1));
    }
}

#[test]
fn rpc_pdus_sent_before_the_channel_opens_are_held_not_lost() {
    let mut net = Net::new(Settings::default());
    for seq in 0..10 {
        net.client.send(rpc_pdu(seq, 100));
    }
    net.settle().unwrap();
    assert_eq!(net.delivered.len(), 10);
}

fn transfer(net: &mut Net, total: usize) -> Vec<bytes::Bytes> {
    let mut expected = Vec::new();
    let mut sent = 0usize;
    let mut seq = 0u32;
    while sent < total {
        let len = 24 + (seq as usize * 7919) % 5_000;
        let pdu = rpc_pdu(seq, len);
        sent += len;
        expected.push(pdu.clone());
        net.client.send(pdu);
        seq += 1;
        // Interleave sending with moving, like a real pipelined client.
        if seq.is_multiple_of(16) {
            net.settle().unwrap();
        }
    }
    net.settle().unwrap();
    expected
}

#[test]
fn many_megabytes_flow_through_small_windows_in_order() {
    for settings in [
        Settings {
            client_window: 8_192,
            proxy_window: 8_192,
            server_window: 8_192,
            ..Settings::default()
        },
        Settings::default(),
        Settings {
            client_window: 262_144,
            proxy_window: 16_384,
            server_window: 12_000,
            ..Settings::default()
        },
    ] {
        let mut net = Net::new(settings);
        net.settle().unwrap();
        let expected = transfer(&mut net, 6 * 1024 * 1024);
        assert_eq!(net.backend_seen, expected.len());
        assert_eq!(net.delivered.len(), expected.len());
        assert!(
            net.delivered == expected,
            "every PDU delivered once, in order, intact"
        );
    }
}

#[test]
fn idle_channels_are_pinged_and_ping_traffic_is_reported() {
    let mut net = Net::new(Settings::default());
    net.settle().unwrap();
    let before = net.server.as_ref().unwrap().out_bytes_sent();
    // 60 idle minutes in 30-second steps.
    for _ in 0..120 {
        net.advance(Duration::from_secs(30)).unwrap();
    }
    let pings = net.op(0).unwrap().pings_sent();
    // The OUT proxy pings every 60 s of idleness.
    assert!(pings >= 55, "pings sent: {pings}");
    assert_eq!(net.client.pings_received(), pings);
    // Ping bytes reach the server's OUT-channel accounting via PingTrafficSentNotify.
    let reported = net.server.as_ref().unwrap().out_bytes_sent() - before;
    assert!(reported >= 1000, "ping bytes reported: {reported}");
    // The channel still works afterwards.
    net.client.send(rpc_pdu(1, 500));
    net.settle().unwrap();
    assert_eq!(net.delivered.len(), 1);
}

#[test]
fn no_ping_precedes_conn_c2() {
    let mut net = Net::new(Settings::default());
    // The IN channel never reaches the server, so CONN/C1 never comes.
    net.hold = Some(Kind::In);
    net.settle().unwrap();
    assert_eq!(
        net.client.state(),
        rpch_proto::client::ClientState::AwaitC2,
        "CONN/A3 arrived"
    );
    net.now += Duration::from_secs(600);
    let now = net.now;
    let op = net.op_mut(0).unwrap();
    op.handle_timeout(now);
    assert_eq!(
        op.poll_transmit_to_client(ChannelId(2), now),
        None,
        "no Ping between A3 and C2"
    );
    assert_eq!(op.pings_sent(), 0);
}

#[test]
fn a_half_open_virtual_connection_times_out() {
    let mut net = Net::new(Settings::default());
    net.hold = Some(Kind::In);
    net.settle().unwrap();
    let server = net.server.as_mut().unwrap();
    assert_eq!(server.missing_leg(), Some(Leg::In));
    let deadline = server.poll_timeout().unwrap();
    assert!(
        server
            .handle_timeout(deadline - Duration::from_millis(1))
            .is_ok()
    );
    assert!(matches!(
        server.handle_timeout(deadline),
        Err(ProtocolError::Timeout { .. })
    ));
}

#[test]
fn a_client_ignoring_the_window_is_refused() {
    let ch = ChannelId(1);
    let mut ip = InboundProxy::new(
        InboundConfig {
            receive_window: 8_192,
            connection_timeout_ms: 120_000,
        },
        ch,
    );
    let b1 = build::conn_b1(cookie(1), cookie(2), 0x4000_0000, 0, cookie(3));
    ip.handle_client_pdu(ch, b1.to_bytes()).unwrap();
    assert_eq!(
        ip.poll_event(),
        Some(InboundEvent::ConnectRequested {
            vc: cookie(1),
            recycled: false,
            client_keepalive_ms: 300_000,
        })
    );
    ip.server_connected(CLIENT_ADDR);
    // No CONN/B3 yet: everything is plugged. The window plus one PDU of slack is accepted...
    let mut sent = 0;
    let err = loop {
        match ip.handle_client_pdu(ch, rpc_pdu(0, 4_096)) {
            Ok(()) => sent += 4_096,
            Err(e) => break e,
        }
        assert!(sent < 1_000_000, "the window was never enforced");
    };
    assert!(matches!(err, ProtocolError::WindowExceeded { .. }), "{err}");
    assert!(sent >= 8_192);
    // What was accepted and queued stays within the window and one PDU of slack.
    assert!(ip.queued_bytes() as u64 <= 8_192 + rpch_proto::flow::MAX_PDU_LEN + 200);
}

#[test]
fn protocol_violations_are_errors_not_panics() {
    let ch = ChannelId(1);
    let ip_config = InboundConfig {
        receive_window: 65_536,
        connection_timeout_ms: 120_000,
    };
    // An RPC PDU before CONN/B1.
    let mut ip = InboundProxy::new(ip_config, ch);
    assert!(ip.handle_client_pdu(ch, rpc_pdu(0, 64)).is_err());

    // CONN/A1 sent on the IN channel.
    let a1 = build::conn_a1(cookie(1), cookie(2), 65_536).to_bytes();
    let mut ip = InboundProxy::new(ip_config, ch);
    assert!(ip.handle_client_pdu(ch, a1.clone()).is_err());

    // An RPC PDU on the OUT request body.
    let mut op = OutboundProxy::new(
        OutboundConfig {
            receive_window: 65_536,
            connection_timeout_ms: 120_000,
            channel_lifetime: 0x4000_0000,
        },
        ch,
    );
    assert!(op.handle_client_pdu(ch, rpc_pdu(0, 64)).is_err());
    op.handle_client_pdu(ch, a1.clone()).unwrap();
    assert!(op.handle_client_pdu(ch, a1).is_err(), "a second CONN/A1");

    // A server leg that opens with a Ping.
    let ping = build::ping().encode();
    assert!(classify_first_pdu(&ping).is_err());
    assert_eq!(
        classify_first_pdu(&rpc_pdu(0, 64)).unwrap(),
        FirstPdu::PlainRpc
    );

    // Pairing the wrong virtual connection.
    let b2 = |vc| {
        classify_first_pdu(
            &build::conn_b2(1, vc, cookie(2), 65_536, 120_000, cookie(3), CLIENT_ADDR).encode(),
        )
        .unwrap()
    };
    let a2 =
        classify_first_pdu(&build::conn_a2(1, cookie(9), cookie(8), 0x4000_0000, 65_536).encode())
            .unwrap();
    let config = ServerConfig {
        receive_window: 65_536,
        setup_timeout: Duration::from_secs(1),
    };
    let mut vc = ServerVc::new(config, &b2(cookie(1)), LegId(1), Instant::now()).unwrap();
    assert!(
        vc.complete(&a2, LegId(2)).is_err(),
        "A2 of another virtual connection"
    );
    assert!(
        vc.complete(&b2(cookie(1)), LegId(3)).is_err(),
        "a second IN leg"
    );
}
