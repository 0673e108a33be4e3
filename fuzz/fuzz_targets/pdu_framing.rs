//! Stream framing: bytes arrive in arbitrary pieces, `split_pdu` takes whole PDUs off the front
//! of the buffer, and each PDU's header and body (RTS or RPC) is decoded, as the I/O shell does.
//!
//! Input layout: byte 0 gives how many chunk-size bytes follow (1..=8); each of those gives one
//! chunk size (1..=256 bytes), used in turn; everything after them is the byte stream.
//!
//! Nothing may panic, and the framing must keep its promises: every PDU it yields is as long as
//! its header's `frag_length`, at least a header long, and no byte is lost or duplicated.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rpch_proto::pdu::rpc::Pdu;
use rpch_proto::pdu::{COMMON_HEADER_LEN, CommonHeader, is_rts, pdu_length, split_pdu};
use rpch_proto::rts::RtsPdu;

fuzz_target!(|data: &[u8]| {
    let Some((&count, rest)) = data.split_first() else {
        return;
    };
    let count = usize::from(count % 8) + 1;
    if rest.len() < count {
        return;
    }
    let (sizes, stream) = rest.split_at(count);
    let sizes: Vec<usize> = sizes.iter().map(|&b| usize::from(b) + 1).collect();

    let mut buf = BytesMut::new();
    let mut fed = 0usize;
    let mut framed = 0usize;
    let mut remaining = stream;
    'stream: for &size in sizes.iter().cycle() {
        if remaining.is_empty() {
            break;
        }
        let (chunk, tail) = remaining.split_at(size.min(remaining.len()));
        remaining = tail;
        buf.extend_from_slice(chunk);
        fed += chunk.len();
        loop {
            let before = buf.len();
            let expected = pdu_length(&buf);
            match split_pdu(&mut buf) {
                Ok(Some(pdu)) => {
                    assert_eq!(
                        expected,
                        Ok(Some(pdu.len())),
                        "split_pdu and pdu_length disagree"
                    );
                    assert!(
                        pdu.len() >= COMMON_HEADER_LEN,
                        "PDU shorter than its header"
                    );
                    assert_eq!(before, pdu.len() + buf.len(), "split_pdu lost bytes");
                    framed += pdu.len();
                    let header = match CommonHeader::parse(&pdu) {
                        Ok(header) => header,
                        Err(e) => panic!("framed PDU has a bad header: {e}"),
                    };
                    assert_eq!(usize::from(header.frag_length), pdu.len());
                    if is_rts(&pdu) {
                        let _ = RtsPdu::decode(&pdu);
                    } else {
                        let _ = Pdu::decode(&pdu);
                    }
                }
                Ok(None) => {
                    assert_eq!(expected, Ok(None));
                    assert_eq!(before, buf.len(), "split_pdu consumed bytes without a PDU");
                    break;
                }
                // A real shell closes the connection here: no later byte can be framed.
                Err(_) => break 'stream,
            }
        }
    }
    assert_eq!(
        fed,
        framed + buf.len(),
        "bytes fed != bytes framed + bytes buffered"
    );
});
