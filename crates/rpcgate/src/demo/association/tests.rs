//! The association driven with raw PDUs, no sockets.

use super::*;
use rpch_proto::dcerpc::fragment_request;
use rpch_proto::pdu::CommonHeader;
use rpch_proto::pdu::rpc::{AuthVerifier, Fault, Response};

const MIB: usize = 1024 * 1024;

fn association() -> Association {
    association_with(Limits::default())
}

fn association_with(limits: Limits) -> Association {
    Association::new(Arc::new(Shared::new(135)), limits)
}

fn unknown_iface() -> SyntaxId {
    "12345778-1234-abcd-ef00-0123456789ac v1.0".parse().unwrap()
}

fn element(context_id: u16, abstract_syntax: SyntaxId, ts: &[SyntaxId]) -> ContextElement {
    ContextElement {
        context_id,
        abstract_syntax,
        transfer_syntaxes: ts.to_vec(),
    }
}

fn bind(contexts: Vec<ContextElement>) -> Bind {
    Bind {
        call_id: 1,
        pfc_flags: PFC_FIRST_FRAG | PFC_LAST_FRAG,
        max_xmit_frag: 4280,
        max_recv_frag: 4280,
        assoc_group_id: 0,
        contexts,
        auth: None,
    }
}

/// Binds mgmt on context 0 and echo on context 1.
fn bound() -> Association {
    bound_with(Limits::default(), 4280)
}

fn bound_with(limits: Limits, max_recv_frag: u16) -> Association {
    let mut a = association_with(limits);
    let mut b = bind(vec![
        element(0, mgmt::INTERFACE, &[SyntaxId::NDR20]),
        element(1, echo::INTERFACE, &[SyntaxId::NDR20]),
    ]);
    b.max_recv_frag = max_recv_frag;
    let out = a.handle(&b.encode());
    assert!(out.close.is_none());
    a
}

fn single(out: Outcome) -> Vec<u8> {
    assert!(out.close.is_none(), "closed: {:?}", out.close);
    assert_eq!(out.send.len(), 1, "{out:?}");
    out.send[0].to_vec()
}

/// Sends one call (fragmented at 4280) and collects the answer: the response stub or the fault.
fn call(
    a: &mut Association,
    call_id: u32,
    ctx: u16,
    opnum: u16,
    stub: &[u8],
) -> Result<Vec<u8>, u32> {
    let mut sent = Vec::new();
    for frag in fragment_request(call_id, ctx, opnum, stub, 4280) {
        let out = a.handle(&frag);
        assert!(out.close.is_none(), "closed: {:?}", out.close);
        sent.extend(out.send);
    }
    answer(&sent, call_id)
}

fn answer(sent: &[Bytes], call_id: u32) -> Result<Vec<u8>, u32> {
    let mut reassembler = Reassembler::<Response>::new(64 * MIB);
    for pdu in sent {
        match Pdu::decode(pdu).unwrap() {
            Pdu::Fault(f) => {
                assert_eq!(f.call_id, call_id);
                assert_eq!(sent.len(), 1);
                return Err(f.status);
            }
            Pdu::Response(r) => {
                assert_eq!(r.call_id, call_id);
                if let Some(done) = reassembler.push(r).unwrap() {
                    return Ok(done.stub);
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    panic!("no complete answer in {} PDUs", sent.len())
}

#[test]
fn bind_answers_every_context() {
    let mut a = association();
    let b = bind(vec![
        element(0, mgmt::INTERFACE, &[SyntaxId::NDR20]),
        element(1, echo::INTERFACE, &[SyntaxId::NDR64]),
        element(2, unknown_iface(), &[SyntaxId::NDR20]),
        element(
            3,
            echo::INTERFACE,
            &[SyntaxId::bind_time_feature_negotiation(3)],
        ),
        element(4, echo::INTERFACE, &[SyntaxId::NDR64, SyntaxId::NDR20]),
        // Higher minor than ours: not the same interface.
        element(
            5,
            "60a15ec5-4de8-11d7-a637-005056a20182 v1.1".parse().unwrap(),
            &[SyntaxId::NDR20],
        ),
    ]);
    let ack = BindAck::decode(&single(a.handle(&b.encode()))).unwrap();
    assert_eq!((ack.max_xmit_frag, ack.max_recv_frag), (4280, 4280));
    assert_eq!(ack.secondary_address, "135");
    assert_ne!(ack.assoc_group_id, 0);
    let summary: Vec<(u16, u16)> = ack.results.iter().map(|r| (r.result, r.reason)).collect();
    assert_eq!(
        summary,
        vec![(0, 0), (2, 2), (2, 1), (3, 0x0002), (0, 0), (2, 1)]
    );
    assert_eq!(ack.results[0].transfer_syntax, SyntaxId::NDR20);
    assert_eq!(ack.results[1].transfer_syntax, SyntaxId::NULL);
    assert_eq!(ack.results[3].transfer_syntax, SyntaxId::NULL);
    assert_eq!(ack.results[4].transfer_syntax, SyntaxId::NDR20);
    // Contexts 0 and 4 work; 1 (rejected) is unknown.
    assert_eq!(
        call(&mut a, 2, 4, echo::opnum::ADD_ONE, &echo::encode_add_one(1)),
        Ok(vec![2, 0, 0, 0])
    );
    assert!(call(&mut a, 3, 0, mgmt::opnum::INQ_IF_IDS, &[]).is_ok());
    assert_eq!(
        call(&mut a, 4, 1, echo::opnum::ADD_ONE, &[0; 4]),
        Err(status::NCA_S_UNK_IF)
    );
}

#[test]
fn fragment_sizes_are_negotiated() {
    let mut a = association();
    let mut b = bind(vec![element(0, mgmt::INTERFACE, &[SyntaxId::NDR20])]);
    b.max_xmit_frag = 5840;
    b.max_recv_frag = 1000; // below C706's floor: raised to 1432
    let ack = BindAck::decode(&single(a.handle(&b.encode()))).unwrap();
    assert_eq!((ack.max_xmit_frag, ack.max_recv_frag), (1432, 4280));

    let mut a = association();
    b.max_xmit_frag = 2048;
    b.max_recv_frag = 3000;
    let ack = BindAck::decode(&single(a.handle(&b.encode()))).unwrap();
    assert_eq!((ack.max_xmit_frag, ack.max_recv_frag), (3000, 2048));
    // A request fragment above what we accept closes the connection.
    let frags = fragment_request(2, 0, 0, &[0; 4000], 4280);
    let out = a.handle(&frags[0]);
    assert!(out.close.unwrap().contains("exceeds the negotiated 2048"));
}

#[test]
fn authenticated_bind_is_refused_but_the_connection_stays_usable() {
    let mut a = association();
    let mut b = bind(vec![element(0, mgmt::INTERFACE, &[SyntaxId::NDR20])]);
    b.auth = Some(AuthVerifier {
        auth_type: 10,
        auth_level: 2,
        auth_pad_length: 0,
        auth_context_id: 0,
        auth_value: b"NTLMSSP\0\x01\0\0\0".to_vec(),
    });
    let nak = BindNak::decode(&single(a.handle(&b.encode()))).unwrap();
    assert_eq!(
        nak.reject_reason,
        reject_reason::AUTHENTICATION_TYPE_NOT_RECOGNIZED
    );
    assert_eq!(nak.versions, vec![(5, 0), (5, 1)]);
    b.auth = None;
    assert!(BindAck::decode(&single(a.handle(&b.encode()))).is_ok());
}

#[test]
fn requests_before_bind_second_binds_and_garbage_close() {
    let mut a = association();
    let request = fragment_request(1, 0, 0, &[], 4280);
    assert_eq!(a.handle(&request[0]).close.unwrap(), "request before bind");
    let mut a = association();
    let alter = AlterContext(bind(vec![])).encode();
    assert_eq!(a.handle(&alter).close.unwrap(), "alter_context before bind");

    let mut a = bound();
    let again = bind(vec![element(0, mgmt::INTERFACE, &[SyntaxId::NDR20])]);
    assert!(a.handle(&again.encode()).close.is_some());

    let mut a = bound();
    assert!(
        a.handle(&[5, 0, 0, 3])
            .close
            .unwrap()
            .starts_with("malformed PDU")
    );
    let mut a = bound();
    let response = rpch_proto::dcerpc::fragment_response(1, 0, &[], 4280);
    assert!(
        a.handle(&response[0]).close.is_some(),
        "clients do not send responses"
    );
}

#[test]
fn faults_for_unknown_contexts_opnums_and_bad_stubs() {
    let mut a = bound();
    assert_eq!(call(&mut a, 2, 7, 0, &[]), Err(status::NCA_S_UNK_IF));
    assert_eq!(call(&mut a, 3, 0, 99, &[]), Err(status::NCA_S_OP_RNG_ERROR));
    assert_eq!(call(&mut a, 4, 1, 99, &[]), Err(status::NCA_S_OP_RNG_ERROR));
    assert_eq!(
        call(&mut a, 5, 1, echo::opnum::ECHO_DATA, &[9, 0, 0, 0]),
        Err(status::RPC_X_BAD_STUB_DATA)
    );
    // Faults are flagged did-not-execute, and the association goes on.
    let out = a.handle(&fragment_request(6, 0, 99, &[], 4280)[0]);
    let fault = Fault::decode(&single(out)).unwrap();
    assert_eq!(
        fault.pfc_flags,
        PFC_FIRST_FRAG | PFC_LAST_FRAG | PFC_DID_NOT_EXECUTE
    );
    assert_eq!(
        call(&mut a, 7, 1, 0, &echo::encode_add_one(41)),
        Ok(vec![42, 0, 0, 0])
    );
}

#[test]
fn one_mebibyte_echo_is_fragmented_both_ways_within_the_clients_size() {
    let mut a = bound_with(Limits::default(), 2000);
    let data: Vec<u8> = (0..MIB + 3).map(|i| (i % 251) as u8).collect();
    let mut sent = Vec::new();
    let frags = fragment_request(
        9,
        1,
        echo::opnum::ECHO_DATA,
        &echo::encode_data(&data),
        4280,
    );
    assert!(frags.len() > 200);
    for frag in &frags {
        let out = a.handle(frag);
        assert!(out.close.is_none());
        sent.extend(out.send);
    }
    assert!(sent.len() > 500, "answered in {} fragments", sent.len());
    for pdu in &sent {
        assert!(pdu.len() <= 2000);
        let header = CommonHeader::parse(pdu).unwrap();
        assert_eq!(usize::from(header.frag_length), pdu.len());
    }
    let stub = answer(&sent, 9).unwrap();
    assert!(echo::decode_data(&stub, data.len() as u32).unwrap() == data);
}

#[test]
fn oversized_calls_get_a_fault_after_their_last_fragment() {
    let limits = Limits {
        max_stub: 10_000,
        ..Limits::default()
    };
    let mut a = bound_with(limits, 4280);
    let frags = fragment_request(
        3,
        1,
        echo::opnum::SINK_DATA,
        &echo::encode_data(&[7; 30_000]),
        4280,
    );
    let mut sent = Vec::new();
    for (i, frag) in frags.iter().enumerate() {
        let out = a.handle(frag);
        assert!(out.close.is_none());
        if i + 1 < frags.len() {
            assert!(out.send.is_empty(), "nothing before the last fragment");
        }
        sent.extend(out.send);
    }
    assert_eq!(answer(&sent, 3), Err(status::NCA_S_FAULT_REMOTE_NO_MEMORY));
    // A single oversized fragment is answered at once; the next call is served.
    let mut a = bound_with(
        Limits {
            max_stub: 100,
            ..Limits::default()
        },
        4280,
    );
    assert_eq!(
        call(
            &mut a,
            4,
            1,
            echo::opnum::SINK_DATA,
            &echo::encode_data(&[1; 200])
        ),
        Err(status::NCA_S_FAULT_REMOTE_NO_MEMORY)
    );
    assert_eq!(
        call(
            &mut a,
            5,
            1,
            echo::opnum::SINK_DATA,
            &echo::encode_data(&[1; 20])
        ),
        Ok(vec![])
    );
    // SourceData beyond the bound is refused without allocating it.
    assert_eq!(
        call(
            &mut a,
            6,
            1,
            echo::opnum::SOURCE_DATA,
            &echo::encode_source_data(1 << 30)
        ),
        Err(status::NCA_S_OUT_ARGS_TOO_BIG)
    );
}

#[test]
fn alter_context_adds_contexts_and_refuses_auth() {
    let mut a = association();
    single(a.handle(&bind(vec![element(0, mgmt::INTERFACE, &[SyntaxId::NDR20])]).encode()));
    let mut alter = bind(vec![element(5, echo::INTERFACE, &[SyntaxId::NDR20])]);
    alter.call_id = 2;
    let resp =
        AlterContextResp::decode(&single(a.handle(&AlterContext(alter.clone()).encode()))).unwrap();
    assert_eq!(resp.0.results[0].result, result::ACCEPTANCE);
    assert_eq!(resp.0.secondary_address, "");
    assert_eq!((resp.0.max_xmit_frag, resp.0.max_recv_frag), (4280, 4280));
    assert_eq!(
        call(&mut a, 3, 5, 0, &echo::encode_add_one(1)),
        Ok(vec![2, 0, 0, 0])
    );

    alter.auth = Some(AuthVerifier {
        auth_type: 9,
        auth_level: 6,
        auth_pad_length: 0,
        auth_context_id: 1,
        auth_value: vec![1, 2, 3, 4],
    });
    let fault = Fault::decode(&single(a.handle(&AlterContext(alter).encode()))).unwrap();
    assert_eq!(fault.status, status::RPC_S_UNKNOWN_AUTHN_SERVICE);
}

#[test]
fn maybe_calls_get_no_answer_and_orphans_reset_the_call() {
    let mut a = bound();
    let mut request = Request::decode(&fragment_request(2, 1, 0, &[0; 4], 4280)[0]).unwrap();
    request.pfc_flags |= PFC_MAYBE;
    let out = a.handle(&request.encode());
    assert!(out.send.is_empty() && out.close.is_none());

    // Half a call, then orphaned: the next call starts cleanly.
    let frags = fragment_request(
        3,
        1,
        echo::opnum::SINK_DATA,
        &echo::encode_data(&[0; 10_000]),
        4280,
    );
    assert!(a.handle(&frags[0]).send.is_empty());
    let orphaned = [5, 0, 19, 3, 0x10, 0, 0, 0, 16, 0, 0, 0, 3, 0, 0, 0];
    let out = a.handle(&orphaned);
    assert!(out.send.is_empty() && out.close.is_none());
    assert_eq!(
        call(&mut a, 4, 1, 0, &echo::encode_add_one(9)),
        Ok(vec![10, 0, 0, 0])
    );
}

#[test]
fn inq_stats_counts_what_the_association_saw() {
    let mut a = bound(); // 1 packet in, 1 out
    call(&mut a, 2, 1, 0, &echo::encode_add_one(0)).unwrap(); // 1 call, 1 in, 1 out
    let stub = call(&mut a, 3, 0, mgmt::opnum::INQ_STATS, &4u32.to_le_bytes()).unwrap();
    let (values, status) = mgmt::decode_inq_stats(&stub).unwrap();
    assert_eq!(status, 0);
    // calls_in includes this call; packets out do not include its own answer yet.
    assert_eq!(values, vec![2, 0, 3, 2]);
}

#[test]
fn binds_of_other_versions_get_a_nak() {
    let mut b = bind(vec![]).encode();
    b[0] = 4;
    b[12] = 9;
    let nak = BindNak::decode(&refuse_unreadable_header(&b).unwrap()).unwrap();
    assert_eq!(
        (nak.call_id, nak.reject_reason),
        (9, reject_reason::PROTOCOL_VERSION_NOT_SUPPORTED)
    );
    b[0] = 5;
    b[1] = 2;
    assert!(refuse_unreadable_header(&b).is_some());
    b[1] = 0;
    assert!(
        refuse_unreadable_header(&b).is_none(),
        "a readable header is not refused here"
    );
    b[0] = 4;
    b[2] = 0; // a request of another version is just closed
    assert!(refuse_unreadable_header(&b).is_none());
    assert!(refuse_unreadable_header(&b[..10]).is_none());
}
