//! `rpch_proto::pdu::rpc::Pdu::decode` on arbitrary bytes: bind, alter_context, their acks,
//! bind_nak, request, response, fault and shutdown (C706 12.6.4).
//!
//! Decoding must never panic. A PDU that decodes must survive a round trip: encoding it and
//! decoding the result gives the same PDU, and encoding that again gives the same bytes (the
//! first encoding may differ from the input, which can carry bytes the decoder skips).

#![no_main]

use std::fmt::Debug;

use libfuzzer_sys::fuzz_target;
use rpch_proto::DecodeError;
use rpch_proto::pdu::CommonHeader;
use rpch_proto::pdu::rpc::{
    AlterContext, AlterContextResp, Bind, BindAck, BindNak, Fault, Pdu, Request, Response, Shutdown,
};

fn round_trip<T: PartialEq + Debug>(
    value: &T,
    encode: fn(&T) -> Vec<u8>,
    decode: fn(&[u8]) -> Result<T, DecodeError>,
) {
    let encoded = encode(value);
    let again = match decode(&encoded) {
        Ok(again) => again,
        Err(e) => panic!("re-encoded {value:?} does not decode: {e}"),
    };
    assert_eq!(value, &again, "round trip changed the PDU");
    assert_eq!(encoded, encode(&again), "encoding is not stable");
}

fuzz_target!(|data: &[u8]| {
    let Ok(pdu) = Pdu::decode(data) else {
        return;
    };
    let header = match CommonHeader::parse(data) {
        Ok(header) => header,
        Err(e) => panic!("{pdu:?} decoded from bytes whose header does not: {e}"),
    };
    assert_eq!(pdu.call_id(), header.call_id);
    assert_eq!(
        usize::from(header.frag_length),
        data.len(),
        "not an exact frame"
    );

    match &pdu {
        Pdu::Bind(p) => round_trip(p, Bind::encode, Bind::decode),
        Pdu::AlterContext(p) => round_trip(p, AlterContext::encode, AlterContext::decode),
        Pdu::BindAck(p) => round_trip(p, BindAck::encode, BindAck::decode),
        Pdu::AlterContextResp(p) => {
            round_trip(p, AlterContextResp::encode, AlterContextResp::decode)
        }
        Pdu::BindNak(p) => round_trip(p, BindNak::encode, BindNak::decode),
        Pdu::Request(p) => round_trip(p, Request::encode, Request::decode),
        Pdu::Response(p) => round_trip(p, Response::encode, Response::decode),
        Pdu::Fault(p) => round_trip(p, Fault::encode, Fault::decode),
        Pdu::Shutdown(p) => round_trip(p, Shutdown::encode, Shutdown::decode),
        Pdu::Other(h) => assert_eq!(h, &header),
        // Pdu is #[non_exhaustive]: a new variant should get its round trip here.
        _ => {}
    }
});
