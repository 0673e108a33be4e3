//! Byte-exact vectors built by hand from the C706 layouts, round trips, truncations and a
//! deterministic fuzz loop for the RPC PDU codecs.

use super::*;
use crate::codec::{from_hex, to_hex};
use crate::pdu::header::{PFC_DID_NOT_EXECUTE, PFC_PENDING_CANCEL};

fn hex(text: &str) -> Vec<u8> {
    from_hex(text).expect("test vector is valid hex")
}

fn mgmt() -> SyntaxId {
    "afa8bd80-7d8a-11c9-bef4-08002b102989 v1.0".parse().unwrap()
}

fn echo() -> SyntaxId {
    "60a15ec5-4de8-11d7-a637-005056a20182 v1.0".parse().unwrap()
}

/// impacket's `DCERPC_v5.bind(MSRPC_UUID_MGMT)`: one context, NDR20, 4280/4280, call_id 1.
fn impacket_mgmt_bind_bytes() -> Vec<u8> {
    vector(
        "
        05 00 0b 03                 # rpc_vers 5.0, PTYPE bind (11), FIRST|LAST
        10 00 00 00                 # packed_drep: little-endian, ASCII, IEEE
        48 00 00 00                 # frag_length 72, auth_length 0
        01 00 00 00                 # call_id 1
        b8 10 b8 10                 # max_xmit_frag 4280, max_recv_frag 4280
        00 00 00 00                 # assoc_group_id 0: a new association group
        01 00 00 00                 # n_context_elem 1, reserved, reserved2
        00 00 01 00                 # p_cont_id 0, n_transfer_syn 1, reserved
        80 bd a8 af 8a 7d c9 11     # abstract syntax afa8bd80-7d8a-11c9- (first three
        be f4 08 00 2b 10 29 89     #   fields little-endian) bef4-08002b102989
        01 00 00 00                 #   v1.0
        04 5d 88 8a eb 1c c9 11     # transfer syntax 8a885d04-1ceb-11c9-
        9f e8 08 00 2b 10 48 60     #   9fe8-08002b104860
        02 00 00 00                 #   v2.0
        ",
    )
}

/// Hex with `#` comments: everything after `#` on a line is dropped.
fn vector(text: &str) -> Vec<u8> {
    let stripped: Vec<&str> = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or(""))
        .collect();
    hex(&stripped.join(" "))
}

fn mgmt_bind() -> Bind {
    Bind {
        call_id: 1,
        pfc_flags: PFC_FIRST_FRAG | PFC_LAST_FRAG,
        max_xmit_frag: 4280,
        max_recv_frag: 4280,
        assoc_group_id: 0,
        contexts: vec![ContextElement {
            context_id: 0,
            abstract_syntax: mgmt(),
            transfer_syntaxes: vec![SyntaxId::NDR20],
        }],
        auth: None,
    }
}

fn sample_bind_ack() -> BindAck {
    BindAck {
        call_id: 1,
        pfc_flags: PFC_FIRST_FRAG | PFC_LAST_FRAG,
        max_xmit_frag: 4280,
        max_recv_frag: 4280,
        assoc_group_id: 0x1234_5678,
        secondary_address: "135".to_string(),
        results: vec![ContextResult {
            result: result::ACCEPTANCE,
            reason: reason::NOT_SPECIFIED,
            transfer_syntax: SyntaxId::NDR20,
        }],
        auth: None,
    }
}

fn sample_request(stub: Vec<u8>) -> Request {
    Request {
        call_id: 7,
        pfc_flags: PFC_FIRST_FRAG | PFC_LAST_FRAG,
        alloc_hint: stub.len() as u32,
        context_id: 1,
        opnum: 3,
        object: None,
        stub,
        auth: None,
    }
}

fn ntlm_like_verifier(pad: u8) -> AuthVerifier {
    AuthVerifier {
        auth_type: 10,
        auth_level: 6,
        auth_pad_length: pad,
        auth_context_id: 79231,
        auth_value: b"NTLMSSP\0\x01\0\0\0".to_vec(),
    }
}

/// One encoded sample of every PDU type, with and without verifiers.
fn samples() -> Vec<Vec<u8>> {
    let mut multi = mgmt_bind();
    multi.contexts.push(ContextElement {
        context_id: 1,
        abstract_syntax: echo(),
        transfer_syntaxes: vec![SyntaxId::NDR64, SyntaxId::NDR20],
    });
    multi.contexts.push(ContextElement {
        context_id: 2,
        abstract_syntax: echo(),
        transfer_syntaxes: vec![SyntaxId::bind_time_feature_negotiation(3)],
    });
    let mut with_object = sample_request(vec![1, 2, 3, 4, 5]);
    with_object.object = Some([0xaa; 16]);
    let mut authed = sample_request(vec![9; 5]);
    authed.auth = Some(ntlm_like_verifier(3));
    let mut authed_bind = mgmt_bind();
    authed_bind.auth = Some(ntlm_like_verifier(0));
    vec![
        mgmt_bind().encode(),
        multi.encode(),
        authed_bind.encode(),
        AlterContext(multi).encode(),
        sample_bind_ack().encode(),
        AlterContextResp(BindAck {
            secondary_address: String::new(),
            ..sample_bind_ack()
        })
        .encode(),
        BindNak {
            call_id: 1,
            reject_reason: reject_reason::PROTOCOL_VERSION_NOT_SUPPORTED,
            versions: vec![(5, 0), (5, 1)],
        }
        .encode(),
        sample_request(b"stub data".to_vec()).encode(),
        with_object.encode(),
        authed.encode(),
        Response {
            call_id: 7,
            pfc_flags: PFC_FIRST_FRAG | PFC_LAST_FRAG,
            alloc_hint: 8,
            context_id: 1,
            cancel_count: 0,
            stub: vec![0x11; 8],
            auth: None,
        }
        .encode(),
        Fault {
            call_id: 7,
            pfc_flags: PFC_FIRST_FRAG | PFC_LAST_FRAG | PFC_DID_NOT_EXECUTE,
            alloc_hint: 0,
            context_id: 1,
            cancel_count: 0,
            status: status::NCA_S_OP_RNG_ERROR,
        }
        .encode(),
        Shutdown { call_id: 0 }.encode(),
    ]
}

#[test]
fn bind_matches_what_impacket_sends_to_mgmt() {
    let expected = impacket_mgmt_bind_bytes();
    assert_eq!(expected.len(), 72);
    assert_eq!(to_hex(&mgmt_bind().encode()), to_hex(&expected));
    assert_eq!(Bind::decode(&expected).unwrap(), mgmt_bind());
    assert_eq!(
        Pdu::decode(&expected).unwrap(),
        Pdu::Bind(mgmt_bind()),
        "the generic decoder agrees"
    );
}

#[test]
fn bind_ack_layout_pads_the_secondary_address_to_four() {
    let expected = vector(
        "
        05 00 0c 03 10 00 00 00     # bind_ack, FIRST|LAST, little-endian
        3c 00 00 00 01 00 00 00     # frag_length 60, auth_length 0, call_id 1
        b8 10 b8 10                 # max_xmit_frag, max_recv_frag 4280
        78 56 34 12                 # assoc_group_id 0x12345678
        04 00 31 33 35 00           # sec_addr: length 4, \"135\\0\" (ends at offset 30)
        00 00                       # padding to offset 32
        01 00 00 00                 # n_results 1, reserved
        00 00 00 00                 # result acceptance, reason not specified
        04 5d 88 8a eb 1c c9 11 9f e8 08 00 2b 10 48 60 02 00 00 00  # NDR20 v2.0
        ",
    );
    assert_eq!(to_hex(&sample_bind_ack().encode()), to_hex(&expected));
    assert_eq!(BindAck::decode(&expected).unwrap(), sample_bind_ack());

    // An empty secondary address (alter_context_resp) is a bare zero length, then 2 bytes of
    // padding: offset 26 -> 28.
    let resp = AlterContextResp(BindAck {
        secondary_address: String::new(),
        ..sample_bind_ack()
    });
    let bytes = resp.encode();
    assert_eq!(bytes.get(2), Some(&15));
    assert_eq!(to_hex(bytes.get(24..32).unwrap()), "0000000001000000");
    assert_eq!(AlterContextResp::decode(&bytes).unwrap(), resp);
    assert!(BindAck::decode(&bytes).is_err(), "PTYPE is checked");
}

#[test]
fn fault_and_bind_nak_layouts() {
    let fault = Fault {
        call_id: 3,
        pfc_flags: PFC_FIRST_FRAG | PFC_LAST_FRAG | PFC_DID_NOT_EXECUTE,
        alloc_hint: 0,
        context_id: 0,
        cancel_count: 0,
        status: status::NCA_S_UNK_IF,
    };
    let expected = vector(
        "
        05 00 03 23 10 00 00 00     # fault, FIRST|LAST|DID_NOT_EXECUTE
        20 00 00 00 03 00 00 00     # frag_length 32, call_id 3
        00 00 00 00 00 00 00 00     # alloc_hint, p_cont_id, cancel_count, reserved
        03 00 01 1c 00 00 00 00     # status nca_s_unk_if, reserved2
        ",
    );
    assert_eq!(to_hex(&fault.encode()), to_hex(&expected));
    assert_eq!(Fault::decode(&expected).unwrap(), fault);
    // Some servers stop after the status word.
    let mut short = expected.get(..28).unwrap().to_vec();
    short[8] = 28;
    assert_eq!(Fault::decode(&short).unwrap(), fault);

    let nak = BindNak {
        call_id: 1,
        reject_reason: reject_reason::AUTHENTICATION_TYPE_NOT_RECOGNIZED,
        versions: vec![(5, 0)],
    };
    let expected = vector(
        "
        05 00 0d 03 10 00 00 00 18 00 00 00 01 00 00 00   # bind_nak, frag_length 24
        08 00                   # reason: authentication type not recognized
        01 05 00                # one supported version: 5.0
        00 00 00                # padding to 4
        ",
    );
    assert_eq!(to_hex(&nak.encode()), to_hex(&expected));
    assert_eq!(BindNak::decode(&expected).unwrap(), nak);
    // A bare reason (no version list) is accepted.
    let bare = hex("05000d0310000000120000000100000004 00");
    assert_eq!(
        BindNak::decode(&bare).unwrap(),
        BindNak {
            call_id: 1,
            reject_reason: 4,
            versions: vec![]
        }
    );
}

#[test]
fn request_layouts_with_and_without_object_uuid() {
    let plain = sample_request(vec![0xde, 0xad]);
    let expected = vector(
        "
        05 00 00 03 10 00 00 00     # request, FIRST|LAST
        1a 00 00 00 07 00 00 00     # frag_length 26, call_id 7
        02 00 00 00 01 00 03 00     # alloc_hint 2, p_cont_id 1, opnum 3
        de ad                       # stub
        ",
    );
    assert_eq!(to_hex(&plain.encode()), to_hex(&expected));
    assert_eq!(Request::decode(&expected).unwrap(), plain);

    let mut with_object = plain.clone();
    with_object.object = Some(mgmt().uuid);
    let bytes = with_object.encode();
    assert_eq!(bytes.len(), 42);
    assert_eq!(
        bytes.get(3),
        Some(&0x83),
        "PFC_OBJECT_UUID is set from `object`"
    );
    assert_eq!(bytes.get(24..40), Some(&mgmt().uuid[..]));
    let decoded = Request::decode(&bytes).unwrap();
    assert_eq!(decoded.stub, vec![0xde, 0xad]);
    assert_eq!(decoded.header_len(), 40);
    // The flag alone, without room for the UUID, is an error, not a short stub.
    let mut lying = expected.clone();
    lying[3] |= PFC_OBJECT_UUID;
    assert!(matches!(
        Request::decode(&lying),
        Err(DecodeError::Truncated { .. })
    ));
}

#[test]
fn auth_verifier_and_padding_are_skipped() {
    // A 5-byte stub, then 3 bytes of padding (0xff, as impacket pads) so the trailer lands on
    // a 4-byte boundary at offset 32, then the 8-byte trailer and a 12-byte auth value.
    let bytes = vector(
        "
        05 00 00 03 10 00 00 00     # request
        34 00 0c 00 07 00 00 00     # frag_length 52, auth_length 12, call_id 7
        05 00 00 00 01 00 03 00     # alloc_hint 5, p_cont_id 1, opnum 3
        09 09 09 09 09              # stub (5 bytes)
        ff ff ff                    # auth padding
        0a 06 03 00 7f 35 01 00     # NTLMSSP, privacy, pad 3, reserved, context 79231
        4e 54 4c 4d 53 53 50 00 01 00 00 00   # auth value
        ",
    );
    // 52 - 16 - 8 - 12 - 3 = 13 bytes of body = 8 of request header fields + 5 of stub.
    let decoded = Request::decode(&bytes).unwrap();
    assert_eq!(decoded.stub, vec![9; 5]);
    assert_eq!(decoded.auth, Some(ntlm_like_verifier(3)));
    let mut expected = sample_request(vec![9; 5]);
    expected.alloc_hint = 5;
    expected.auth = Some(ntlm_like_verifier(3));
    assert_eq!(decoded, expected);
    // Re-encoding writes zero padding; everything else is identical.
    let mut zero_pad = bytes.clone();
    zero_pad.splice(29..32, [0, 0, 0]);
    assert_eq!(to_hex(&decoded.encode()), to_hex(&zero_pad));

    // Padding longer than the body is rejected, as is an auth_length past the header.
    let mut bad_pad = bytes.clone();
    bad_pad[34] = 200;
    assert!(Request::decode(&bad_pad).is_err());
    let mut bad_len = bytes.clone();
    bad_len[10] = 40; // 40 + 8 > 52 - 16
    assert!(Request::decode(&bad_len).is_err());

    // A bind with a verifier still decodes its contexts.
    let mut bind = mgmt_bind();
    bind.auth = Some(ntlm_like_verifier(0));
    let bytes = bind.encode();
    assert_eq!(bytes.len(), 72 + 8 + 12);
    assert_eq!(bytes.get(10), Some(&12), "auth_length");
    assert_eq!(Bind::decode(&bytes).unwrap(), bind);
}

#[test]
fn every_sample_round_trips() {
    for bytes in samples() {
        let pdu = Pdu::decode(&bytes).unwrap();
        let again = match &pdu {
            Pdu::Bind(p) => p.encode(),
            Pdu::AlterContext(p) => p.encode(),
            Pdu::BindAck(p) => p.encode(),
            Pdu::AlterContextResp(p) => p.encode(),
            Pdu::BindNak(p) => p.encode(),
            Pdu::Request(p) => p.encode(),
            Pdu::Response(p) => p.encode(),
            Pdu::Fault(p) => p.encode(),
            Pdu::Shutdown(p) => p.encode(),
            Pdu::Other(h) => panic!("sample decoded as other: {h:?}"),
        };
        assert_eq!(to_hex(&again), to_hex(&bytes), "{pdu:?}");
        let header = CommonHeader::parse(&bytes).unwrap();
        assert_eq!(usize::from(header.frag_length), bytes.len());
        assert_eq!(pdu.call_id(), header.call_id);
    }
}

#[test]
fn multi_context_bind_keeps_every_transfer_syntax() {
    let bytes = samples().swap_remove(1);
    let bind = Bind::decode(&bytes).unwrap();
    assert_eq!(bind.contexts.len(), 3);
    assert_eq!(
        bind.contexts[1].transfer_syntaxes,
        vec![SyntaxId::NDR64, SyntaxId::NDR20]
    );
    assert_eq!(
        bind.contexts[2].transfer_syntaxes[0].bind_time_features(),
        Some([3, 0, 0, 0, 0, 0, 0, 0])
    );
}

#[test]
fn every_truncation_of_every_pdu_is_an_error() {
    for bytes in samples() {
        for len in 0..bytes.len() {
            let cut = bytes.get(..len).unwrap();
            assert!(Pdu::decode(cut).is_err(), "{len} of {}", to_hex(&bytes));
        }
        // Extra bytes after frag_length are refused too: the framer hands out exact PDUs.
        let mut long = bytes.clone();
        long.push(0);
        assert!(Pdu::decode(&long).is_err());
    }
}

#[test]
fn consistent_but_short_frames_are_errors() {
    // Shrinking frag_length with the bytes, below each PDU's fixed part, must fail too.
    let fixed_parts = [
        (mgmt_bind().encode(), 16 + 12),
        (sample_bind_ack().encode(), 16 + 10),
        (sample_request(vec![]).encode(), 24),
        (
            Response {
                call_id: 1,
                pfc_flags: 3,
                alloc_hint: 0,
                context_id: 0,
                cancel_count: 0,
                stub: vec![],
                auth: None,
            }
            .encode(),
            24,
        ),
        (samples().swap_remove(11), 28),
    ];
    for (bytes, fixed) in fixed_parts {
        for len in 16..fixed {
            let mut cut = bytes.get(..len).unwrap().to_vec();
            cut[8] = len as u8;
            cut[9] = 0;
            assert!(Pdu::decode(&cut).is_err(), "{len}: {}", to_hex(&cut));
        }
    }
}

#[test]
fn lying_counts_do_not_allocate() {
    // n_context_elem 255 in a 28-byte bind: refused before any allocation.
    let mut bytes = mgmt_bind().encode();
    bytes[24] = 255;
    assert!(matches!(
        Bind::decode(&bytes),
        Err(DecodeError::BadCount { .. })
    ));
    // n_transfer_syn 255 with one syntax present.
    let mut bytes = mgmt_bind().encode();
    bytes[30] = 255;
    assert!(matches!(
        Bind::decode(&bytes),
        Err(DecodeError::BadCount { .. })
    ));
    // A secondary address longer than the PDU.
    let mut bytes = sample_bind_ack().encode();
    bytes[24] = 0xff;
    bytes[25] = 0xff;
    assert!(BindAck::decode(&bytes).is_err());
}

#[test]
fn other_flags_survive() {
    let mut request = sample_request(vec![1]);
    request.pfc_flags = PFC_FIRST_FRAG | PFC_PENDING_CANCEL;
    let decoded = Request::decode(&request.encode()).unwrap();
    assert_eq!(decoded.pfc_flags, PFC_FIRST_FRAG | PFC_PENDING_CANCEL);
    assert!(matches!(
        Pdu::decode(&hex("05 00 10 03 10000000 1400 0000 0100 0000 00000000")).unwrap(),
        Pdu::Other(h) if h.ptype == PacketType::Auth3
    ));
}

/// xorshift64*: deterministic, dependency-free randomness for the fuzz loop.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Re-encodes a decoded PDU; a second decode must give the same value (decoders normalise
/// padding and trailing bytes, encoders are total).
fn reencode(pdu: &Pdu) -> Option<Vec<u8>> {
    Some(match pdu {
        Pdu::Bind(p) => p.encode(),
        Pdu::AlterContext(p) => p.encode(),
        Pdu::BindAck(p) => p.encode(),
        Pdu::AlterContextResp(p) => p.encode(),
        Pdu::BindNak(p) => p.encode(),
        Pdu::Request(p) => p.encode(),
        Pdu::Response(p) => p.encode(),
        Pdu::Fault(p) => p.encode(),
        Pdu::Shutdown(p) => p.encode(),
        _ => return None,
    })
}

#[test]
fn random_and_mutated_bytes_never_panic() {
    let seeds = samples();
    let mut rng = Rng(0x5eed_0fdc_e0dc_e123);
    let mut decoded_ok = 0;
    for round in 0..60_000 {
        let mut bytes = if round % 4 == 0 {
            // Random bytes behind a plausible header, so decoding gets past the first check.
            let len = 16 + rng.below(200);
            let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            b[0] = 5;
            b[1] = (rng.next() & 1) as u8;
            b[2] = [0u8, 2, 3, 11, 12, 13, 14, 15, 17][rng.below(9)];
            b[4] = 0x10;
            let frag = if rng.below(2) == 0 {
                len
            } else {
                rng.below(len + 8)
            };
            b[8..10].copy_from_slice(&(frag as u16).to_le_bytes());
            b[10..12].copy_from_slice(&(rng.below(48) as u16).to_le_bytes());
            b
        } else {
            let mut b = seeds[rng.below(seeds.len())].clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(b.len());
                match rng.below(4) {
                    0 => b[at] = rng.next() as u8,
                    1 => b[at] ^= 1 << rng.below(8),
                    2 => b[at] = [0, 1, 0x7f, 0x80, 0xff][rng.below(5)],
                    _ => b.truncate(at.max(1)),
                }
            }
            b
        };
        if round % 7 == 0 {
            bytes.extend((0..rng.below(16)).map(|_| rng.next() as u8));
        }
        if let Ok(pdu) = Pdu::decode(&bytes) {
            decoded_ok += 1;
            if let Some(again) = reencode(&pdu) {
                assert_eq!(Pdu::decode(&again).unwrap(), pdu, "{}", to_hex(&bytes));
            }
        }
    }
    // The mutations are mild enough that a good share still decodes.
    assert!(decoded_ok > 1000, "only {decoded_ok} decoded");
}
