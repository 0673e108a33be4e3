//! rpch-proto's RTS encodings against bytes real Windows peers put on the wire.
//!
//! The vectors are the RTS PDUs published in impacket's test suite
//! (`tests/SMB_RPC/test_rpch.py`, captured against Windows' RPC over HTTP proxy and server),
//! and the CONN/A3 and CONN/C2 bytes of the team's MS-RPCH notes (§1.7), which are the same.
//! Each PDU rpcgate sends is built with the values of the capture and must come out byte for
//! byte; each one it receives must decode to the values the capture carries.

#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::net::{IpAddr, Ipv4Addr};

use rpch_proto::Cookie;
use rpch_proto::codec::{from_hex, to_hex};
use rpch_proto::rts::{FlowControlAck, ForwardDestination, RtsCommand, RtsPdu, build, flags};

/// CONN/A3, outbound proxy -> client: ConnectionTimeout 120000 ms.
const CONN_A3: &str = "05001403100000001c000000000000000000010002000000c0d40100";

/// CONN/C2, outbound proxy -> client: Version 1, ReceiveWindowSize 65536,
/// ConnectionTimeout 120000 ms.
const CONN_C2: &str =
    "05001403100000002c00000000000000000003000600000001000000000000000000010002000000c0d40100";

/// Ping (Flags PING, no command).
const PING: &str = "0500140310000000140000000000000001000000";

/// FlowControlAckWithDestination received by a client: Destination FDClient, BytesReceived
/// 32914, AvailableWindow 65536, channel cookie e3796e7c....
const FLOW_CONTROL_ACK_WITH_DESTINATION: &str = "05001403100000003800000000000000020002000d00000000000000010000009280000000000100e3796e7cbc68a94dab8d8240a0057232";

/// CONN/A1, client -> outbound proxy: Version 1, VC and OUT channel cookies,
/// ReceiveWindowSize 262144.
const CONN_A1: &str = "05001403100000004c0000000000000000000400060000000100000003000000b0f6af3d776298079b21546eecf42253030000003a247a376dc1ed2c685d3435134643250000000000000400";

/// CONN/A2, outbound proxy -> server: Version 1, VC and OUT channel cookies,
/// ChannelLifetime 1 GiB, ReceiveWindowSize 65536.
const CONN_A2: &str = "050014031000000054000000000000001000050006000000010000000300000061ec8bb34028a846bafd90cf6d31dc2903000000bc381035a7f03d439c3f44856ef1c3b004000000000000400000000000000100";

/// CONN/B2, inbound proxy -> server, same virtual connection as CONN_A2: Version 1, VC and IN
/// cookies, ReceiveWindowSize 65536, ConnectionTimeout 120000, AssociationGroupId, and a
/// ClientAddress with 192.168.2.254 four bytes later than the specification's layout.
const CONN_B2: &str = "050014031000000080000000000000000800070006000000010000000300000061ec8bb34028a846bafd90cf6d31dc290300000020ce942230831b4594ea0d7e05d2a85a000000000000010002000000c0d401000c000000df28b42077a47042b1d14a03495f6b7b0b0000000000000000000000c0a802fe0000000000000000";

/// The Echo response body of the MS-RPCH notes §2.4 (Flags ECHO, no command).
const ECHO: &str = "0500140310000000140000000000000040000000";

fn hex(text: &str) -> Vec<u8> {
    from_hex(text).unwrap()
}

fn cookie(text: &str) -> Cookie {
    Cookie(hex(text).try_into().unwrap())
}

/// `pdu` encodes to exactly `expected`, and `expected` decodes to `pdu`.
fn assert_windows_bytes(pdu: &RtsPdu, expected: &str, name: &str) {
    assert_eq!(to_hex(&pdu.encode()), expected, "encoding of {name}");
    assert_eq!(pdu.encoded_len(), expected.len() / 2, "{name}");
    let decoded = RtsPdu::decode(&hex(expected)).unwrap();
    assert_eq!(&decoded, pdu, "decoding of {name}");
    assert_eq!(decoded.name(), name);
}

#[test]
fn conn_a3_is_the_windows_pdu() {
    let pdu = build::conn_a3(120_000);
    assert_windows_bytes(&pdu, CONN_A3, "CONN/A3");
    assert_eq!(pdu.flags, flags::NONE);
    assert_eq!(pdu.commands, [RtsCommand::ConnectionTimeout(120_000)]);
}

#[test]
fn conn_c2_is_the_windows_pdu() {
    let pdu = build::conn_c1_c2(1, 65_536, 120_000);
    assert_windows_bytes(&pdu, CONN_C2, "CONN/C1 or CONN/C2");
    assert_eq!(
        pdu.commands,
        [
            RtsCommand::Version(1),
            RtsCommand::ReceiveWindowSize(65_536),
            RtsCommand::ConnectionTimeout(120_000),
        ]
    );
}

#[test]
fn ping_is_the_windows_pdu() {
    let pdu = build::ping();
    assert_windows_bytes(&pdu, PING, "Ping");
    assert!(pdu.is_ping());
    assert_eq!(pdu.flags, flags::PING);
}

#[test]
fn echo_is_the_pdu_of_the_notes() {
    let pdu = build::echo();
    assert_windows_bytes(&pdu, ECHO, "Echo");
    assert_eq!(pdu.flags, flags::ECHO);
    assert!(pdu.commands.is_empty());
}

#[test]
fn flow_control_ack_with_destination_is_the_windows_pdu() {
    let ack = FlowControlAck {
        bytes_received: 32_914,
        available_window: 65_536,
        channel_cookie: cookie("e3796e7cbc68a94dab8d8240a0057232"),
    };
    let pdu = build::flow_control_ack_with_destination(ForwardDestination::Client, ack);
    assert_windows_bytes(
        &pdu,
        FLOW_CONTROL_ACK_WITH_DESTINATION,
        "FlowControlAckWithDestination",
    );
    assert_eq!(pdu.flags, flags::OTHER_CMD);
    assert_eq!(pdu.destination(), Some(ForwardDestination::Client));
    assert_eq!(pdu.flow_control_ack(), Some(ack));
}

#[test]
fn conn_a1_is_the_captured_pdu() {
    let pdu = build::conn_a1(
        cookie("b0f6af3d776298079b21546eecf42253"),
        cookie("3a247a376dc1ed2c685d343513464325"),
        262_144,
    );
    assert_windows_bytes(&pdu, CONN_A1, "CONN/A1");
}

#[test]
fn conn_a2_is_the_windows_pdu() {
    let pdu = build::conn_a2(
        1,
        cookie("61ec8bb34028a846bafd90cf6d31dc29"),
        cookie("bc381035a7f03d439c3f44856ef1c3b0"),
        1 << 30,
        65_536,
    );
    assert_windows_bytes(&pdu, CONN_A2, "CONN/A2");
    assert_eq!(pdu.flags, flags::OUT_CHANNEL);
}

/// Windows writes CONN/B2's ClientAddress 4 bytes later than the specification's layout
/// (address type, address, 12 bytes of padding). rpcgate decodes it by length and encodes the
/// specification's layout: every other byte is the same.
#[test]
fn conn_b2_matches_windows_except_where_windows_puts_the_client_address() {
    let windows = hex(CONN_B2);
    let decoded = RtsPdu::decode(&windows).unwrap();
    assert_eq!(decoded.name(), "CONN/B2");
    assert_eq!(decoded.flags, flags::IN_CHANNEL);
    let vc = cookie("61ec8bb34028a846bafd90cf6d31dc29");
    let in_channel = cookie("20ce942230831b4594ea0d7e05d2a85a");
    let association_group = cookie("df28b42077a47042b1d14a03495f6b7b");
    assert_eq!(
        decoded.commands[..6],
        [
            RtsCommand::Version(1),
            RtsCommand::Cookie(vc),
            RtsCommand::Cookie(in_channel),
            RtsCommand::ReceiveWindowSize(65_536),
            RtsCommand::ConnectionTimeout(120_000),
            RtsCommand::AssociationGroupId(association_group),
        ]
    );
    // Read where the specification puts the address, which Windows leaves zero.
    assert_eq!(
        decoded.commands[6],
        RtsCommand::ClientAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    );

    let address = IpAddr::V4(Ipv4Addr::new(192, 168, 2, 254));
    let ours = build::conn_b2(
        1,
        vc,
        in_channel,
        65_536,
        120_000,
        association_group,
        address,
    )
    .encode();
    assert_eq!(ours.len(), windows.len());
    // ClientAddress is the last command: 0b000000, AddressType 0 (IPv4), then 16 bytes.
    let body = windows.len() - 16;
    assert_eq!(ours[..body], windows[..body]);
    assert_eq!(ours[body..body + 4], [192, 168, 2, 254]);
    assert_eq!(windows[body + 4..body + 8], [192, 168, 2, 254]);
    assert!(ours[body + 4..].iter().all(|&b| b == 0));
    assert!(windows[body..body + 4].iter().all(|&b| b == 0));
}

/// The virtual-connection cookie sits at bytes 32..47 of the first PDU of both channels,
/// which is what a load balancer can hash for affinity (docs/deploy/haproxy.md).
#[test]
fn virtual_connection_cookie_is_at_offset_32_in_a2_and_b2() {
    let vc = hex("61ec8bb34028a846bafd90cf6d31dc29");
    assert_eq!(hex(CONN_A2)[32..48], vc[..]);
    assert_eq!(hex(CONN_B2)[32..48], vc[..]);
    assert_eq!(
        hex(CONN_A1)[32..48],
        hex("b0f6af3d776298079b21546eecf42253")[..]
    );
}
