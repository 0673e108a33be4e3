//! Byte-exact vectors: captures from real clients (shared captures of impacket, Samba, FreeRDP)
//! and the Windows bytes published with impacket's test suite.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;
use crate::codec::{from_hex, to_hex};
use crate::cookie::Cookie;
use crate::error::DecodeError;

fn hex(s: &str) -> Vec<u8> {
    from_hex(s).unwrap()
}

fn cookie(s: &str) -> Cookie {
    Cookie(hex(s).try_into().unwrap())
}

const VC: &str = "8896a71e9633b9589f63ec5f5f8b9824";

/// CONN/A1 exactly as impacket 0.13.1 sent it.
const CONN_A1_IMPACKET: &str = "05001403100000004c00000000000000000004000600000001000000030000008896a71e9633b9589f63ec5f5f8b982403000000ce6c1f39c4ff8f2815915330f5f943140000000000000400";
/// CONN/B1 of the same virtual connection.
const CONN_B1_IMPACKET: &str = "05001403100000006800000000000000000006000600000001000000030000008896a71e9633b9589f63ec5f5f8b982403000000f1ec355419253b1c662d3a13f556c960040000000000004005000000e09304000c0000002f820a2cd632933ee7e87848af24b803";

#[test]
fn real_conn_a1_decodes_and_re_encodes_byte_for_byte() {
    let bytes = hex(CONN_A1_IMPACKET);
    let pdu = RtsPdu::decode(&bytes).unwrap();
    assert_eq!(pdu.name(), "CONN/A1");
    assert_eq!(
        pdu,
        build::conn_a1(
            cookie(VC),
            cookie("ce6c1f39c4ff8f2815915330f5f94314"),
            262_144
        )
    );
    assert_eq!(to_hex(&pdu.encode()), CONN_A1_IMPACKET);
}

#[test]
fn real_conn_b1_decodes_and_re_encodes_byte_for_byte() {
    let bytes = hex(CONN_B1_IMPACKET);
    let pdu = RtsPdu::decode(&bytes).unwrap();
    assert_eq!(pdu.name(), "CONN/B1");
    assert_eq!(
        pdu,
        build::conn_b1(
            cookie(VC),
            cookie("f1ec355419253b1c662d3a13f556c960"),
            0x4000_0000,
            300_000,
            cookie("2f820a2cd632933ee7e87848af24b803"),
        )
    );
    assert_eq!(to_hex(&pdu.encode()), CONN_B1_IMPACKET);
    // The VC cookie sits at offset 32..48 in both legs: the load-balancer hash key.
    assert_eq!(&bytes[32..48], &hex(VC)[..]);
    assert_eq!(&hex(CONN_A1_IMPACKET)[32..48], &hex(VC)[..]);
}

#[test]
fn encodings_match_windows_bytes() {
    let cases: &[(RtsPdu, &str)] = &[
        (build::ping(), "0500140310000000140000000000000001000000"),
        (build::echo(), "0500140310000000140000000000000040000000"),
        // CONN/A3 and CONN/C2 are byte-identical to Windows captures in impacket's tests.
        (
            build::conn_a3(120_000),
            "05001403100000001c00000000000000000001000200 0000c0d40100",
        ),
        (
            build::conn_c1_c2(1, 65_536, 120_000),
            "05001403100000002c000000000000000000030006000000010000000000000000000100 02000000c0d40100",
        ),
        // The C2 the shared captures show clients accepting (window 262144).
        (
            build::conn_c1_c2(1, 262_144, 120_000),
            "05001403100000002c00000000000000000003000600000001000000000000000000040002000000c0d40100",
        ),
        (
            build::out_r1_a1(),
            "05001403100000001c00000000000000040001000d00000000000000",
        ),
        (
            build::out_r2_b3(),
            "05001403100000001800000000000000200001000a000000",
        ),
        (
            build::out_r2_c1(),
            "050014031000000018000000000000000100010007000000",
        ),
    ];
    for (pdu, expected) in cases {
        let expected = hex(expected);
        assert_eq!(
            to_hex(&pdu.encode()),
            to_hex(&expected),
            "encoding of {}",
            pdu.name()
        );
        assert_eq!(&RtsPdu::decode(&expected).unwrap(), pdu);
    }
}

#[test]
fn flow_control_ack_with_destination_matches_windows() {
    // Windows -> client: Flags 0x0002, Destination FDClient, BytesReceived 32914,
    // AvailableWindow 65536, then the channel cookie.
    let channel = cookie("f1ec355419253b1c662d3a13f556c960");
    let pdu = build::flow_control_ack_with_destination(
        ForwardDestination::Client,
        FlowControlAck {
            bytes_received: 32_914,
            available_window: 65_536,
            channel_cookie: channel,
        },
    );
    let bytes = pdu.encode();
    assert_eq!(bytes.len(), 56);
    assert_eq!(
        to_hex(&bytes),
        format!(
            "05001403100000003800000000000000020002000d00000000000000010000009280000000000100{}",
            to_hex(channel.as_bytes())
        )
    );
    let decoded = RtsPdu::decode(&bytes).unwrap();
    assert_eq!(decoded.name(), "FlowControlAckWithDestination");
    assert_eq!(decoded.destination(), Some(ForwardDestination::Client));
    assert_eq!(decoded.flow_control_ack().unwrap().bytes_received, 32_914);
}

#[test]
fn catalogue_sizes_match_the_spec() {
    let c = Cookie([7; 16]);
    let v4 = IpAddr::V4(Ipv4Addr::new(192, 168, 2, 254));
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let ack = FlowControlAck {
        bytes_received: 1,
        available_window: 2,
        channel_cookie: c,
    };
    let sizes: Vec<(RtsPdu, usize)> = vec![
        (build::conn_a1(c, c, 1), 76),
        (build::conn_a2(1, c, c, 1, 1), 84),
        (build::conn_a3(1), 28),
        (build::conn_b1(c, c, 1, 1, c), 104),
        (build::conn_b2(1, c, c, 1, 1, c, v4), 128),
        (build::conn_b2(1, c, c, 1, 1, c, v6), 140),
        (build::conn_b3(1, 1), 36),
        (build::conn_c1_c2(1, 1, 1), 44),
        (build::in_r1_a1(c, c, c), 88),
        (build::in_r1_a2(c, c, c, 1, 1), 104),
        (build::in_r1_a3(1, 1), 52),
        (build::successor_cookie(c), 40),
        (build::in_r1_b1(), 24),
        (build::in_r1_b2(1), 28),
        (build::in_r2_a3(), 28),
        (build::out_r1_a1(), 28),
        (build::out_r1_a3(c, c, c, 1), 96),
        (build::out_r1_a4(c, c, c, 1, 1, 1), 112),
        (build::out_r1_a5(1), 44),
        (build::out_r1_a7(c), 48),
        (build::out_r2_a7(c), 56),
        (build::ance(), 24),
        (build::out_r2_a5(), 32),
        (build::out_r2_b2(), 24),
        (build::out_r2_b3(), 24),
        (build::out_r2_c1(), 24),
        (build::keep_alive(1), 28),
        (build::ping_traffic_sent_notify(1), 28),
        (build::echo(), 20),
        (build::ping(), 20),
        (build::flow_control_ack(ack), 48),
        (
            build::flow_control_ack_with_destination(ForwardDestination::OutProxy, ack),
            56,
        ),
    ];
    for (pdu, size) in sizes {
        let bytes = pdu.encode();
        assert_eq!(bytes.len(), size, "{}", pdu.name());
        assert_eq!(pdu.encoded_len(), size);
        assert_eq!(usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), size);
        assert_eq!(RtsPdu::decode(&bytes).unwrap(), pdu, "{}", pdu.name());
        assert_ne!(pdu.name(), "unrecognised RTS PDU");
    }
}

#[test]
fn windows_client_address_quirk_is_parsed_by_length() {
    // A Windows CONN/B2's ClientAddress: 192.168.2.254 sits 4 bytes later than the spec layout.
    let mut pdu = build::conn_b2(
        1,
        Cookie([1; 16]),
        Cookie([2; 16]),
        65_536,
        120_000,
        Cookie([3; 16]),
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
    )
    .encode();
    let address_at = pdu.len() - 16;
    pdu[address_at + 4..address_at + 8].copy_from_slice(&[0xc0, 0xa8, 0x02, 0xfe]);
    let decoded = RtsPdu::decode(&pdu).unwrap();
    assert_eq!(decoded.name(), "CONN/B2");
    assert_eq!(
        decoded.commands[6],
        RtsCommand::ClientAddress(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
    );
}

#[test]
fn hostile_rts_is_rejected_with_typed_errors() {
    let ping = build::ping().encode();

    // NumberOfCommands larger than the bytes could hold: no allocation, a typed error.
    let mut many = ping.clone();
    many[18] = 0xff;
    many[19] = 0xff;
    assert!(matches!(
        RtsPdu::decode(&many),
        Err(DecodeError::BadCount { .. })
    ));

    // Unknown command type.
    let mut unknown = build::conn_a3(1).encode();
    unknown[20] = 0x42;
    assert_eq!(
        RtsPdu::decode(&unknown),
        Err(DecodeError::UnknownRtsCommand(0x42))
    );

    // Trailing bytes inside frag_length.
    let mut trailing = build::ping().encode();
    trailing.extend_from_slice(&[0; 4]);
    trailing[8] = 24;
    assert!(matches!(
        RtsPdu::decode(&trailing),
        Err(DecodeError::TrailingBytes { extra: 4, .. })
    ));

    // frag_length beyond the buffer.
    let mut long = ping.clone();
    long[8] = 200;
    assert!(RtsPdu::decode(&long).is_err());

    // Padding count over the limit.
    let mut padding = RtsPdu::new(flags::PING, vec![RtsCommand::Padding(4)]).encode();
    padding[24..28].copy_from_slice(&0x10000u32.to_le_bytes());
    assert!(matches!(
        RtsPdu::decode(&padding),
        Err(DecodeError::BadValue { .. })
    ));

    // A bind is not an RTS PDU.
    let mut bind = ping;
    bind[2] = 11;
    assert!(matches!(
        RtsPdu::decode(&bind),
        Err(DecodeError::WrongPacketType { .. })
    ));

    // Every truncation of a valid PDU fails cleanly.
    let b1 = hex(CONN_B1_IMPACKET);
    for len in 0..b1.len() {
        assert!(RtsPdu::decode(&b1[..len]).is_err(), "prefix of {len} bytes");
    }
}
