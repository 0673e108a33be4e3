//! The DCE remote management interface (`mgmt`, afa8bd80-7d8a-11c9-bef4-08002b102989 v1.0,
//! C706 appendix Q), served by the demo and called by [`crate::rpc_client`]: both sides of
//! every stub live here, in the NDR 2.0 layouts impacket's `mgmt.py` and Samba's `mgmt.idl`
//! decode.
//!
//! ```text
//! opnum 0 inq_if_ids           -> [unique] rpc_if_id_vector_t*, status
//!         referent | max_count count | referent x count | (uuid16 major16 minor16) x count | status
//! opnum 1 inq_stats(count)     -> count | max_count | u32 x count | status
//! opnum 2 is_server_listening  -> status | boolean32
//! opnum 3 stop_server_listening-> status (always rpc_s_access_denied here)
//! opnum 4 inq_princ_name(authn_proto, princ_name_size)
//!                              -> [string, size_is(princ_name_size)] char[] | status
//! ```

use std::sync::atomic::{AtomicU32, Ordering};

use rpch_proto::DecodeError;
use rpch_proto::codec::{Put, Reader};
use rpch_proto::pdu::rpc::status::{NCA_S_OP_RNG_ERROR, RPC_S_ACCESS_DENIED};
use rpch_proto::pdu::rpc::{SyntaxId, status::RPC_S_UNKNOWN_AUTHN_SERVICE};

use super::association::CallError;
use super::ndr::{self, FIRST_REFERENT_ID};

/// `afa8bd80-7d8a-11c9-bef4-08002b102989 v1.0`.
pub const INTERFACE: SyntaxId = SyntaxId::from_fields(
    0xafa8_bd80,
    0x7d8a,
    0x11c9,
    [0xbe, 0xf4, 0x08, 0x00, 0x2b, 0x10, 0x29, 0x89],
    1,
    0,
);

/// The management interface id.
pub fn interface() -> SyntaxId {
    INTERFACE
}

/// Operation numbers.
pub mod opnum {
    pub const INQ_IF_IDS: u16 = 0;
    pub const INQ_STATS: u16 = 1;
    pub const IS_SERVER_LISTENING: u16 = 2;
    pub const STOP_SERVER_LISTENING: u16 = 3;
    pub const INQ_PRINC_NAME: u16 = 4;
}

/// `rpc_c_stats_*`: the four counters inq_stats reports, in this order.
pub const STATS_ARRAY_MAX_SIZE: u32 = 4;

/// `rpc_c_authn_none`: the only authentication service the anonymous demo has a (empty)
/// principal name for.
pub const AUTHN_NONE: u32 = 0;

/// Win32 ERROR_INSUFFICIENT_BUFFER: inq_princ_name with no room even for the terminator.
pub const ERROR_INSUFFICIENT_BUFFER: u32 = 122;

/// The server-wide counters behind inq_stats (calls in, calls out, packets in, packets out).
#[derive(Debug, Default)]
pub struct Stats {
    pub calls_in: AtomicU32,
    pub calls_out: AtomicU32,
    pub pkts_in: AtomicU32,
    pub pkts_out: AtomicU32,
}

impl Stats {
    /// The counters in `rpc_c_stats_*` order.
    pub fn snapshot(&self) -> [u32; 4] {
        [
            self.calls_in.load(Ordering::Relaxed),
            self.calls_out.load(Ordering::Relaxed),
            self.pkts_in.load(Ordering::Relaxed),
            self.pkts_out.load(Ordering::Relaxed),
        ]
    }
}

/// Runs one management call: the response stub, or the fault status.
pub(super) fn call(
    opnum: u16,
    stub: &[u8],
    served: &[SyntaxId],
    stats: &Stats,
) -> Result<Vec<u8>, CallError> {
    let mut r = Reader::new(stub);
    match opnum {
        opnum::INQ_IF_IDS => Ok(encode_inq_if_ids(served)),
        opnum::INQ_STATS => {
            let wanted = r.u32("inq_stats count")?;
            let values = stats.snapshot();
            let n = wanted.min(STATS_ARRAY_MAX_SIZE) as usize;
            Ok(encode_inq_stats(values.get(..n).unwrap_or(&[])))
        }
        opnum::IS_SERVER_LISTENING => {
            let mut out = Vec::with_capacity(8);
            out.put_u32(0); // status: rpc_s_ok
            out.put_u32(1); // boolean32: true, we are listening (we answered)
            Ok(out)
        }
        opnum::STOP_SERVER_LISTENING => {
            // Remote clients may not stop the demo; Windows answers the same.
            Ok(RPC_S_ACCESS_DENIED.to_le_bytes().to_vec())
        }
        opnum::INQ_PRINC_NAME => {
            let authn_proto = r.u32("authn_proto")?;
            let size = r.u32("princ_name_size")?;
            // The demo is anonymous: its only principal, for rpc_c_authn_none, has the empty
            // name, which fits any buffer that holds a terminator (impacket asks for 1 byte).
            let status = if authn_proto != AUTHN_NONE {
                RPC_S_UNKNOWN_AUTHN_SERVICE
            } else if size == 0 {
                ERROR_INSUFFICIENT_BUFFER
            } else {
                0
            };
            let mut out = Vec::with_capacity(20);
            ndr::put_varying_string(&mut out, size, "");
            out.put_u32(status);
            Ok(out)
        }
        _ => Err(CallError::Fault(NCA_S_OP_RNG_ERROR)),
    }
}

/// inq_if_ids response: the vector behind a unique pointer, then status 0.
pub fn encode_inq_if_ids(ids: &[SyntaxId]) -> Vec<u8> {
    let count = u32::try_from(ids.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(20 + 24 * ids.len());
    out.put_u32(FIRST_REFERENT_ID); // if_id_vector
    out.put_u32(count); // max_count, hoisted before the conformant struct
    out.put_u32(count); // count
    // The array holds pointers; their targets follow the array (deferred), in order.
    for i in 0..count {
        out.put_u32(FIRST_REFERENT_ID.wrapping_add(4 * (i + 1)));
    }
    for id in ids {
        out.put_bytes(&id.uuid);
        out.put_u16(id.major());
        out.put_u16(id.minor());
    }
    out.put_u32(0);
    out
}

/// Decodes an inq_if_ids response: the interface ids and the status.
pub fn decode_inq_if_ids(stub: &[u8]) -> Result<(Vec<SyntaxId>, u32), DecodeError> {
    let mut r = Reader::new(stub);
    let mut ids = Vec::new();
    if r.u32("if_id_vector pointer")? != 0 {
        let max_count = r.u32("if_id max_count")?;
        let count = r.u32("if_id count")?;
        if count > max_count {
            return Err(DecodeError::BadCount {
                what: "if_id",
                count,
                available: max_count as usize,
            });
        }
        // Each entry costs at least its 4-byte pointer: check before allocating.
        let n = count as usize;
        if n.saturating_mul(4) > r.remaining() {
            return Err(DecodeError::BadCount {
                what: "if_id",
                count,
                available: r.remaining(),
            });
        }
        let mut present = Vec::with_capacity(n);
        for _ in 0..n {
            present.push(r.u32("if_id pointer")? != 0);
        }
        ids.reserve(
            present
                .iter()
                .filter(|&&p| p)
                .count()
                .min(r.remaining() / 20),
        );
        for _ in present.iter().filter(|&&p| p) {
            let uuid = r.array("if_id uuid")?;
            let major = r.u16("if_id major")?;
            let minor = r.u16("if_id minor")?;
            ids.push(SyntaxId {
                uuid,
                version: u32::from(major) | u32::from(minor) << 16,
            });
        }
    }
    let status = r.u32("status")?;
    Ok((ids, status))
}

/// inq_stats request.
pub fn encode_inq_stats_request(count: u32) -> Vec<u8> {
    count.to_le_bytes().to_vec()
}

/// inq_stats response: `[in,out] count`, then the conformant array, then status 0.
pub fn encode_inq_stats(values: &[u32]) -> Vec<u8> {
    let count = u32::try_from(values.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(12 + 4 * values.len());
    out.put_u32(count);
    out.put_u32(count);
    for v in values {
        out.put_u32(*v);
    }
    out.put_u32(0);
    out
}

/// Decodes an inq_stats response: the counters and the status.
pub fn decode_inq_stats(stub: &[u8]) -> Result<(Vec<u32>, u32), DecodeError> {
    let mut r = Reader::new(stub);
    let count = r.u32("count")?;
    let max_count = r.u32("statistics max_count")?;
    let n = max_count as usize;
    if n.saturating_mul(4) > r.remaining() || count > max_count {
        return Err(DecodeError::BadCount {
            what: "statistics",
            count: max_count,
            available: r.remaining(),
        });
    }
    let mut values = Vec::with_capacity(n);
    for _ in 0..n {
        values.push(r.u32("statistic")?);
    }
    values.truncate(count as usize);
    Ok((values, r.u32("status")?))
}

/// Decodes an is_server_listening response: (status, listening).
pub fn decode_is_server_listening(stub: &[u8]) -> Result<(u32, bool), DecodeError> {
    let mut r = Reader::new(stub);
    let status = r.u32("status")?;
    let listening = r.u32("boolean32")? != 0;
    Ok((status, listening))
}

/// inq_princ_name request.
pub fn encode_inq_princ_name_request(authn_proto: u32, princ_name_size: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(8);
    out.put_u32(authn_proto);
    out.put_u32(princ_name_size);
    out
}

/// Decodes an inq_princ_name response: (name, status).
pub fn decode_inq_princ_name(stub: &[u8]) -> Result<(String, u32), DecodeError> {
    let mut r = Reader::new(stub);
    let name = ndr::read_varying_string(&mut r, "princ_name")?;
    Ok((name, r.u32("status")?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpch_proto::codec::{from_hex, to_hex};

    fn echo() -> SyntaxId {
        super::super::echo::INTERFACE
    }

    #[test]
    fn inq_if_ids_layout() {
        let stub = call(
            opnum::INQ_IF_IDS,
            &[],
            &[INTERFACE, echo()],
            &Stats::default(),
        )
        .unwrap();
        let expected = from_hex(
            "00000200                 # if_id_vector referent
             02000000 02000000        # max_count, count
             04000200 08000200        # two if_id pointers
             80bda8af8a7dc911bef408002b102989 0100 0000   # mgmt v1.0
             c55ea160e84dd711a637005056a20182 0100 0000   # rpcecho v1.0
             00000000                 # status"
                .lines()
                .map(|l| l.split('#').next().unwrap_or(""))
                .collect::<String>()
                .as_str(),
        )
        .unwrap();
        assert_eq!(to_hex(&stub), to_hex(&expected));
        assert_eq!(
            decode_inq_if_ids(&stub).unwrap(),
            (vec![INTERFACE, echo()], 0)
        );
        // A null vector decodes as empty; lying counts are refused.
        assert_eq!(
            decode_inq_if_ids(&[0, 0, 0, 0, 5, 0, 0, 0]).unwrap(),
            (vec![], 5)
        );
        let mut lying = stub.clone();
        lying[4..12].copy_from_slice(&[0xff; 8]);
        assert!(decode_inq_if_ids(&lying).is_err());
        for len in 0..stub.len() {
            assert!(decode_inq_if_ids(&stub[..len]).is_err());
        }
    }

    #[test]
    fn inq_stats_answers_at_most_what_was_asked() {
        let stats = Stats::default();
        stats.calls_in.store(7, Ordering::Relaxed);
        stats.pkts_in.store(9, Ordering::Relaxed);
        let stub = call(opnum::INQ_STATS, &4u32.to_le_bytes(), &[], &stats).unwrap();
        assert_eq!(
            to_hex(&stub),
            "04000000040000000700000000000000090000000000000000000000"
        );
        assert_eq!(decode_inq_stats(&stub).unwrap(), (vec![7, 0, 9, 0], 0));
        let stub = call(opnum::INQ_STATS, &40u32.to_le_bytes(), &[], &stats).unwrap();
        assert_eq!(decode_inq_stats(&stub).unwrap().0.len(), 4);
        let stub = call(opnum::INQ_STATS, &2u32.to_le_bytes(), &[], &stats).unwrap();
        assert_eq!(decode_inq_stats(&stub).unwrap(), (vec![7, 0], 0));
        assert!(matches!(
            call(opnum::INQ_STATS, &[1, 2], &[], &stats),
            Err(CallError::BadStub(_))
        ));
    }

    #[test]
    fn listening_princ_name_and_unknown_opnums() {
        let stats = Stats::default();
        let stub = call(opnum::IS_SERVER_LISTENING, &[], &[], &stats).unwrap();
        assert_eq!(decode_is_server_listening(&stub).unwrap(), (0, true));
        let stub = call(opnum::STOP_SERVER_LISTENING, &[], &[], &stats).unwrap();
        assert_eq!(stub, RPC_S_ACCESS_DENIED.to_le_bytes());

        let request = encode_inq_princ_name_request(AUTHN_NONE, 1);
        let stub = call(opnum::INQ_PRINC_NAME, &request, &[], &stats).unwrap();
        assert_eq!(to_hex(&stub), "0100000000000000010000000000000000000000");
        assert_eq!(decode_inq_princ_name(&stub).unwrap(), (String::new(), 0));
        let request = encode_inq_princ_name_request(10, 32);
        let stub = call(opnum::INQ_PRINC_NAME, &request, &[], &stats).unwrap();
        assert_eq!(
            decode_inq_princ_name(&stub).unwrap(),
            (String::new(), RPC_S_UNKNOWN_AUTHN_SERVICE)
        );
        let request = encode_inq_princ_name_request(AUTHN_NONE, 0);
        let stub = call(opnum::INQ_PRINC_NAME, &request, &[], &stats).unwrap();
        assert_eq!(
            decode_inq_princ_name(&stub).unwrap().1,
            ERROR_INSUFFICIENT_BUFFER
        );

        assert_eq!(
            call(5, &[], &[], &stats),
            Err(CallError::Fault(NCA_S_OP_RNG_ERROR))
        );
    }
}
