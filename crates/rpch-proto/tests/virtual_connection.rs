//! Client, inbound proxy, server and outbound proxy state machines wired together in memory,
//! with a virtual clock: deterministic tests of establishment, flow control on every leg,
//! keep-alive and timers, with no socket anywhere.

#![allow(clippy::panic, clippy::unwrap_used, clippy::indexing_slicing)]

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rpch_proto::client::{ClientConfig, ClientVc};
use rpch_proto::inbound::{InboundConfig, InboundEvent, InboundProxy, InboundState};
use rpch_proto::outbound::{OutboundConfig, OutboundEvent, OutboundProxy};
use rpch_proto::pdu::header::{CommonHeader, PFC_FIRST_FRAG, PFC_LAST_FRAG, PacketType};
use rpch_proto::server::{FirstPdu, Leg, ServerConfig, ServerVc, classify_first_pdu};
use rpch_proto::{Cookie, ProtocolError};

const CLIENT_ADDR: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7));

/// Which leg reaches the server first.
#[derive(Clone, Copy, PartialEq)]
enum Order {
    InFirst,
    OutFirst,
}

struct Windows {
    client: u32,
    in_proxy: u32,
    out_proxy: u32,
    server: u32,
}

/// All four roles plus an echoing backend, and the wires between them.
struct Pair {
    now: Instant,
    client: ClientVc,
    ip: InboundProxy,
    op: OutboundProxy,
    server: Option<ServerVc>,
    server_config: ServerConfig,
    /// PDUs that have left a proxy for the server but not reached it (first PDU of each leg
    /// is held here until the leg is "accepted").
    ip_to_server: VecDeque<Bytes>,
    op_to_server: VecDeque<Bytes>,
    in_leg_attached: bool,
    out_leg_attached: bool,
    order: Order,
    delivered: Vec<Bytes>,
    backend_seen: usize,
    out_bytes_to_client: u64,
}

fn cookie(n: u8) -> Cookie {
    Cookie([n; 16])
}

/// An RPC request PDU of exactly `len` bytes whose payload encodes `seq`.
fn rpc_pdu(seq: u32, len: usize) -> Bytes {
    let mut out = Vec::with_capacity(len);
    CommonHeader::new(
        PacketType::Request,
        PFC_FIRST_FRAG | PFC_LAST_FRAG,
        len as u16,
        seq,
    )
    .write(&mut out);
    out.extend(std::iter::repeat_n((seq % 251) as u8, len - out.len()));
    Bytes::from(out)
}

impl Pair {
    fn new(order: Order, w: Windows, timeout_ms: u32) -> Self {
        let client = ClientVc::new(ClientConfig {
            vc: cookie(1),
            in_channel: cookie(2),
            out_channel: cookie(3),
            association_group: cookie(4),
            receive_window: w.client,
            in_channel_lifetime: 0x4000_0000,
            keepalive_ms: 300_000,
        });
        Self {
            now: Instant::now(),
            client,
            ip: InboundProxy::new(InboundConfig {
                receive_window: w.in_proxy,
                connection_timeout_ms: timeout_ms,
            }),
            op: OutboundProxy::new(OutboundConfig {
                receive_window: w.out_proxy,
                connection_timeout_ms: timeout_ms,
                channel_lifetime: 0x4000_0000,
            }),
            server: None,
            server_config: ServerConfig {
                receive_window: w.server,
                setup_timeout: Duration::from_secs(60),
            },
            ip_to_server: VecDeque::new(),
            op_to_server: VecDeque::new(),
            in_leg_attached: false,
            out_leg_attached: false,
            order,
            delivered: Vec::new(),
            backend_seen: 0,
            out_bytes_to_client: 0,
        }
    }

    /// Hands the first PDU of a leg to the server (creating or completing the VC).
    fn attach(&mut self, first: Bytes) -> Result<(), ProtocolError> {
        let first = classify_first_pdu(&first)?;
        match self.server.as_mut() {
            None => self.server = Some(ServerVc::new(self.server_config, &first, self.now)?),
            Some(vc) => vc.complete(&first)?,
        }
        Ok(())
    }

    /// Moves every PDU that can move; returns whether anything moved.
    fn step(&mut self) -> Result<bool, ProtocolError> {
        let now = self.now;
        let mut moved = false;

        while let Some(pdu) = self.client.poll_transmit_out() {
            self.op.handle_client_pdu(pdu)?;
            moved = true;
        }
        while let Some(pdu) = self.client.poll_transmit_in(now) {
            self.ip.handle_client_pdu(pdu)?;
            moved = true;
        }
        while let Some(event) = self.ip.poll_event() {
            if let InboundEvent::ConnectRequested { .. } = event {
                self.ip.server_connected(CLIENT_ADDR);
            }
            moved = true;
        }
        while let Some(event) = self.op.poll_event() {
            if let OutboundEvent::ConnectRequested { .. } = event {
                self.op.server_connected();
            }
            moved = true;
        }
        while let Some(pdu) = self.ip.poll_transmit_to_server() {
            self.ip_to_server.push_back(pdu);
            moved = true;
        }
        while let Some(pdu) = self.op.poll_transmit_to_server() {
            self.op_to_server.push_back(pdu);
            moved = true;
        }

        // Legs reach the server in the chosen order.
        let in_may_attach = self.order == Order::InFirst || self.out_leg_attached;
        let out_may_attach = self.order == Order::OutFirst || self.in_leg_attached;
        if !self.in_leg_attached
            && in_may_attach
            && let Some(first) = self.ip_to_server.pop_front()
        {
            self.attach(first)?;
            self.in_leg_attached = true;
            moved = true;
        }
        if !self.out_leg_attached
            && out_may_attach
            && let Some(first) = self.op_to_server.pop_front()
        {
            self.attach(first)?;
            self.out_leg_attached = true;
            moved = true;
        }
        if let Some(server) = self.server.as_mut() {
            if self.in_leg_attached {
                while let Some(pdu) = self.ip_to_server.pop_front() {
                    server.handle_in_pdu(pdu)?;
                    moved = true;
                }
            }
            if self.out_leg_attached {
                while let Some(pdu) = self.op_to_server.pop_front() {
                    server.handle_out_pdu(pdu)?;
                    moved = true;
                }
            }
            // The backend echoes every RPC PDU it receives.
            while let Some(pdu) = server.poll_transmit(Leg::Backend) {
                self.backend_seen += 1;
                server.handle_backend_pdu(pdu)?;
                moved = true;
            }
            while let Some(pdu) = server.poll_transmit(Leg::In) {
                self.ip.handle_server_pdu(pdu)?;
                moved = true;
            }
            while let Some(pdu) = server.poll_transmit(Leg::Out) {
                self.op.handle_server_pdu(pdu)?;
                moved = true;
            }
        }
        while let Some(pdu) = self.op.poll_transmit_to_client(now) {
            self.out_bytes_to_client += pdu.len() as u64;
            self.client.handle_out_pdu(pdu)?;
            moved = true;
        }
        while let Some(pdu) = self.client.poll_received() {
            self.delivered.push(pdu);
            moved = true;
        }
        Ok(moved)
    }

    fn settle(&mut self) -> Result<(), ProtocolError> {
        for _ in 0..1_000_000 {
            if !self.step()? {
                return Ok(());
            }
        }
        panic!("the network never settled");
    }

    fn advance(&mut self, by: Duration) -> Result<(), ProtocolError> {
        self.now += by;
        self.op.handle_timeout(self.now);
        self.client.handle_timeout(self.now);
        if let Some(server) = self.server.as_mut() {
            server.handle_timeout(self.now)?;
        }
        self.settle()
    }
}

fn default_windows() -> Windows {
    Windows {
        client: 65_536,
        in_proxy: 65_536,
        out_proxy: 65_536,
        server: 65_536,
    }
}

#[test]
fn establishes_in_either_leg_order_with_the_right_values() {
    for order in [Order::InFirst, Order::OutFirst] {
        let mut pair = Pair::new(
            order,
            Windows {
                in_proxy: 32_768,
                ..default_windows()
            },
            120_000,
        );
        pair.settle().unwrap();
        assert!(pair.client.is_open());
        let params = pair.client.params();
        assert_eq!(params.out_proxy_timeout_ms, 120_000, "CONN/A3");
        assert_eq!(
            params.in_proxy_window, 32_768,
            "CONN/C2 carries the IN proxy window"
        );
        assert_eq!(params.in_proxy_timeout_ms, 120_000);
        assert_eq!(pair.ip.state(), InboundState::Opened);
        let server = pair.server.as_ref().unwrap();
        assert_eq!(server.client_address(), Some(CLIENT_ADDR));
        assert_eq!(server.vc_cookie(), cookie(1));
    }
}

#[test]
fn rpc_pdus_sent_before_the_channel_opens_are_held_not_lost() {
    let mut pair = Pair::new(Order::OutFirst, default_windows(), 120_000);
    // Queue before anything moved: the client holds them until CONN/C2.
    for seq in 0..10 {
        pair.client.send(rpc_pdu(seq, 100));
    }
    pair.settle().unwrap();
    assert_eq!(pair.delivered.len(), 10);
}

#[test]
fn many_megabytes_flow_through_small_windows_in_order() {
    for (order, windows) in [
        (
            Order::InFirst,
            Windows {
                client: 8_192,
                in_proxy: 8_192,
                out_proxy: 8_192,
                server: 8_192,
            },
        ),
        (Order::OutFirst, default_windows()),
        (
            Order::InFirst,
            Windows {
                client: 262_144,
                in_proxy: 16_384,
                out_proxy: 65_536,
                server: 12_000,
            },
        ),
    ] {
        let mut pair = Pair::new(order, windows, 120_000);
        pair.settle().unwrap();
        let mut expected = Vec::new();
        let mut total = 0usize;
        let mut seq = 0u32;
        while total < 6 * 1024 * 1024 {
            let len = 24 + (seq as usize * 7919) % 5_000;
            let pdu = rpc_pdu(seq, len);
            total += len;
            expected.push(pdu.clone());
            pair.client.send(pdu);
            seq += 1;
            // Interleave sending with moving, like a real pipelined client.
            if seq.is_multiple_of(16) {
                pair.settle().unwrap();
            }
        }
        pair.settle().unwrap();
        assert_eq!(pair.backend_seen, expected.len());
        assert_eq!(pair.delivered.len(), expected.len());
        assert!(
            pair.delivered == expected,
            "every PDU delivered once, in order, intact"
        );
    }
}

#[test]
fn idle_channels_are_pinged_and_ping_traffic_is_reported() {
    let mut pair = Pair::new(Order::InFirst, default_windows(), 120_000);
    pair.settle().unwrap();
    let before = pair.server.as_ref().unwrap().out_bytes_sent();
    // 60 idle minutes in 30-second steps.
    for _ in 0..120 {
        pair.advance(Duration::from_secs(30)).unwrap();
    }
    // The OUT proxy pings every 60 s of idleness.
    assert!(
        pair.op.pings_sent() >= 55,
        "pings sent: {}",
        pair.op.pings_sent()
    );
    assert_eq!(pair.client.pings_received(), pair.op.pings_sent());
    // Ping bytes reach the server's OUT-channel accounting via PingTrafficSentNotify.
    let reported = pair.server.as_ref().unwrap().out_bytes_sent() - before;
    assert!(reported >= 1000, "ping bytes reported: {reported}");
    // The channel still works afterwards.
    pair.client.send(rpc_pdu(1, 500));
    pair.settle().unwrap();
    assert_eq!(pair.delivered.len(), 1);
}

#[test]
fn no_ping_precedes_conn_c2() {
    let mut pair = Pair::new(Order::OutFirst, default_windows(), 120_000);
    // The IN channel never arrives, so CONN/C1 never comes.
    let _lost_b1 = pair.client.poll_transmit_in(pair.now);
    pair.settle().unwrap();
    assert_eq!(
        pair.client.state(),
        rpch_proto::client::ClientState::AwaitC2,
        "CONN/A3 arrived"
    );
    pair.now += Duration::from_secs(600);
    pair.op.handle_timeout(pair.now);
    assert_eq!(
        pair.op.poll_transmit_to_client(pair.now),
        None,
        "no Ping between A3 and C2"
    );
    assert_eq!(pair.op.pings_sent(), 0);
}

#[test]
fn a_half_open_virtual_connection_times_out() {
    let mut pair = Pair::new(Order::OutFirst, default_windows(), 120_000);
    // Only the OUT leg reaches the server.
    pair.in_leg_attached = false;
    pair.order = Order::OutFirst;
    let _ = pair.client.poll_transmit_in(pair.now); // the B1 is lost
    pair.settle().unwrap();
    let server = pair.server.as_mut().unwrap();
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
    let mut ip = InboundProxy::new(InboundConfig {
        receive_window: 8_192,
        connection_timeout_ms: 120_000,
    });
    let b1 = rpch_proto::rts::build::conn_b1(cookie(1), cookie(2), 0x4000_0000, 0, cookie(3));
    ip.handle_client_pdu(b1.to_bytes()).unwrap();
    assert_eq!(
        ip.poll_event(),
        Some(InboundEvent::ConnectRequested {
            vc: cookie(1),
            in_channel: cookie(2),
            association_group: cookie(3),
            client_keepalive_ms: 300_000,
        })
    );
    ip.server_connected(CLIENT_ADDR);
    // No CONN/B3 yet: everything is plugged. The window plus one PDU of slack is accepted...
    let mut sent = 0;
    let err = loop {
        match ip.handle_client_pdu(rpc_pdu(0, 4_096)) {
            Ok(()) => sent += 4_096,
            Err(e) => break e,
        }
        assert!(sent < 1_000_000, "the window was never enforced");
    };
    assert!(matches!(err, ProtocolError::WindowExceeded { .. }), "{err}");
    assert!(sent >= 8_192);
    assert!(
        !ip.wants_client_data(),
        "back-pressure engaged before the violation"
    );
}

#[test]
fn protocol_violations_are_errors_not_panics() {
    // An RPC PDU before CONN/B1.
    let mut ip = InboundProxy::new(InboundConfig {
        receive_window: 65_536,
        connection_timeout_ms: 120_000,
    });
    assert!(ip.handle_client_pdu(rpc_pdu(0, 64)).is_err());

    // CONN/A1 sent on the IN channel.
    let a1 = rpch_proto::rts::build::conn_a1(cookie(1), cookie(2), 65_536).to_bytes();
    let mut ip = InboundProxy::new(InboundConfig {
        receive_window: 65_536,
        connection_timeout_ms: 120_000,
    });
    assert!(ip.handle_client_pdu(a1.clone()).is_err());

    // An RPC PDU on the OUT request body.
    let mut op = OutboundProxy::new(OutboundConfig {
        receive_window: 65_536,
        connection_timeout_ms: 120_000,
        channel_lifetime: 0x4000_0000,
    });
    assert!(op.handle_client_pdu(rpc_pdu(0, 64)).is_err());
    op.handle_client_pdu(a1.clone()).unwrap();
    assert!(op.handle_client_pdu(a1).is_err(), "a second CONN/A1");

    // A server leg that opens with a Ping.
    let ping = rpch_proto::rts::build::ping().encode();
    assert!(classify_first_pdu(&ping).is_err());
    assert_eq!(
        classify_first_pdu(&rpc_pdu(0, 64)).unwrap(),
        FirstPdu::PlainRpc
    );

    // Pairing the wrong virtual connection.
    let b2 = |vc| {
        classify_first_pdu(
            &rpch_proto::rts::build::conn_b2(
                1,
                vc,
                cookie(2),
                65_536,
                120_000,
                cookie(3),
                CLIENT_ADDR,
            )
            .encode(),
        )
        .unwrap()
    };
    let a2 = classify_first_pdu(
        &rpch_proto::rts::build::conn_a2(1, cookie(9), cookie(8), 0x4000_0000, 65_536).encode(),
    )
    .unwrap();
    let config = ServerConfig {
        receive_window: 65_536,
        setup_timeout: Duration::from_secs(1),
    };
    let mut vc = ServerVc::new(config, &b2(cookie(1)), Instant::now()).unwrap();
    assert!(
        vc.complete(&a2).is_err(),
        "A2 of another virtual connection"
    );
    assert!(vc.complete(&b2(cookie(1))).is_err(), "a second IN leg");
}
