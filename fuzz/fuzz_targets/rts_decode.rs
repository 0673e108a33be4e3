//! `RtsPdu::decode` on arbitrary bytes (MS-RPCH 2.2.4).
//!
//! Decoding must never panic. A PDU that decodes must survive a round trip: encoding it and
//! decoding the result gives the same PDU, and encoding that again gives the same bytes.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rpch_proto::rts::RtsPdu;

fuzz_target!(|data: &[u8]| {
    let Ok(pdu) = RtsPdu::decode(data) else {
        return;
    };
    let encoded = pdu.encode();
    assert_eq!(
        encoded.len(),
        pdu.encoded_len(),
        "encoded_len disagrees with encode"
    );
    let again = match RtsPdu::decode(&encoded) {
        Ok(again) => again,
        Err(e) => panic!("re-encoded {pdu:?} does not decode: {e}"),
    };
    assert_eq!(pdu, again, "RTS round trip changed the PDU");
    assert_eq!(encoded, again.encode(), "RTS encoding is not stable");
    // Context-free accessors must not panic either.
    let _ = (
        pdu.name(),
        pdu.destination(),
        pdu.flow_control_ack(),
        pdu.is_ping(),
    );
});
