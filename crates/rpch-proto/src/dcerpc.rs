//! Fragmentation and reassembly of DCE/RPC calls (C706 12.6.2, 12.6.3.2): cutting a call's
//! stub into request or response fragments that fit the negotiated `max_xmit_frag`, and
//! collecting the fragments of one call back into one stub under a size bound.
//!
//! ```text
//!   stub (any size) --fragment_*--> [FIRST] [ ] [ ] ... [LAST]   each <= max frag, each stub
//!                                                                 a multiple of 8 but the last
//!   fragments --Reassembler::push--> None, None, ..., Some(whole call)  (one call at a time)
//! ```
//!
//! Keeping every stub fragment but the last a multiple of 8 bytes means NDR alignment, which is
//! relative to the start of the whole stub, is the same inside each fragment; Windows and Samba
//! do the same. `alloc_hint` carries the bytes still to come, including the fragment's own, as
//! Windows sends it.

use bytes::Bytes;
use thiserror::Error;

use crate::pdu::header::{PFC_FIRST_FRAG, PFC_LAST_FRAG};
use crate::pdu::rpc::{REQUEST_HEADER_LEN, RESPONSE_HEADER_LEN, Request, Response};

/// Stub bytes per fragment when a fragment of `max_frag` bytes has a `header`-byte header:
/// rounded down to a multiple of 8, and never less than 8 so that progress is always made
/// (a peer offering less than 32-byte fragments cannot be served within its limit anyway;
/// C706 guarantees 1432).
fn stub_per_fragment(max_frag: u16, header: usize) -> usize {
    (usize::from(max_frag).saturating_sub(header) & !7).max(8)
}

/// `alloc_hint` for a fragment with `remaining` stub bytes still to send.
fn alloc_hint(remaining: usize) -> u32 {
    u32::try_from(remaining).unwrap_or(u32::MAX)
}

/// Cuts `stub` into chunks with FIRST/LAST flags; an empty stub is one empty fragment.
fn chunks(stub: &[u8], per_fragment: usize) -> impl Iterator<Item = (u8, usize, &[u8])> {
    let count = stub.len().div_ceil(per_fragment).max(1);
    (0..count).map(move |i| {
        let start = i * per_fragment;
        let end = (start + per_fragment).min(stub.len());
        let mut flags = 0;
        if i == 0 {
            flags |= PFC_FIRST_FRAG;
        }
        if i + 1 == count {
            flags |= PFC_LAST_FRAG;
        }
        let chunk = stub.get(start..end).unwrap_or(&[]);
        (flags, stub.len().saturating_sub(start), chunk)
    })
}

/// The request fragments of one call: every one at most `max_xmit_frag` bytes (the value the
/// server's bind_ack put in `max_recv_frag`), all but the last carrying a multiple of 8 stub
/// bytes.
pub fn fragment_request(
    call_id: u32,
    context_id: u16,
    opnum: u16,
    stub: &[u8],
    max_xmit_frag: u16,
) -> Vec<Bytes> {
    let per = stub_per_fragment(max_xmit_frag, REQUEST_HEADER_LEN);
    chunks(stub, per)
        .map(|(pfc_flags, remaining, chunk)| {
            Bytes::from(
                Request {
                    call_id,
                    pfc_flags,
                    alloc_hint: alloc_hint(remaining),
                    context_id,
                    opnum,
                    object: None,
                    stub: chunk.to_vec(),
                    auth: None,
                }
                .encode(),
            )
        })
        .collect()
}

/// The response fragments of one call: every one at most `max_xmit_frag` bytes (the client's
/// `max_recv_frag`, as negotiated), all but the last carrying a multiple of 8 stub bytes.
pub fn fragment_response(
    call_id: u32,
    context_id: u16,
    stub: &[u8],
    max_xmit_frag: u16,
) -> Vec<Bytes> {
    let per = stub_per_fragment(max_xmit_frag, RESPONSE_HEADER_LEN);
    chunks(stub, per)
        .map(|(pfc_flags, remaining, chunk)| {
            Bytes::from(
                Response {
                    call_id,
                    pfc_flags,
                    alloc_hint: alloc_hint(remaining),
                    context_id,
                    cancel_count: 0,
                    stub: chunk.to_vec(),
                    auth: None,
                }
                .encode(),
            )
        })
        .collect()
}

/// Why a fragment could not be added to the call being reassembled. The peer that sent the
/// fragments is at fault in every case.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ReassemblyError {
    /// A middle or last fragment with no call in progress.
    #[error("fragment of call {call_id} without PFC_FIRST_FRAG and no call in progress")]
    MissingFirstFragment { call_id: u32 },
    /// A fragment of another call (or a new first fragment) while a call is in progress; this
    /// implementation does not multiplex calls on one connection.
    #[error("fragment of call {got} (flags {flags:#04x}) while call {in_progress} is incomplete")]
    Interleaved {
        in_progress: u32,
        got: u32,
        flags: u8,
    },
    /// A later fragment names another context or operation than the first.
    #[error("fragment of call {call_id} changes {what} from {first} to {got}")]
    Inconsistent {
        call_id: u32,
        what: &'static str,
        first: u16,
        got: u16,
    },
    /// The call's stub would exceed the configured bound.
    #[error("call {call_id} stub exceeds the {limit}-byte limit ({total} bytes so far)")]
    TooLarge {
        call_id: u32,
        limit: usize,
        total: usize,
    },
}

/// A request or response fragment, as far as reassembly is concerned.
pub trait CallFragment {
    fn call_id(&self) -> u32;
    fn pfc_flags(&self) -> u8;
    fn set_pfc_flags(&mut self, flags: u8);
    fn alloc_hint(&self) -> u32;
    /// The first field (name, value in `first`, value here) in which this fragment differs from
    /// the first fragment of its call, among those that must not change within a call.
    fn mismatch(&self, first: &Self) -> Option<(&'static str, u16, u16)>;
    fn stub_mut(&mut self) -> &mut Vec<u8>;
}

impl CallFragment for Request {
    fn call_id(&self) -> u32 {
        self.call_id
    }
    fn pfc_flags(&self) -> u8 {
        self.pfc_flags
    }
    fn set_pfc_flags(&mut self, flags: u8) {
        self.pfc_flags = flags;
    }
    fn alloc_hint(&self) -> u32 {
        self.alloc_hint
    }
    fn mismatch(&self, first: &Self) -> Option<(&'static str, u16, u16)> {
        if self.context_id != first.context_id {
            return Some(("p_cont_id", first.context_id, self.context_id));
        }
        (self.opnum != first.opnum).then_some(("opnum", first.opnum, self.opnum))
    }
    fn stub_mut(&mut self) -> &mut Vec<u8> {
        &mut self.stub
    }
}

impl CallFragment for Response {
    fn call_id(&self) -> u32 {
        self.call_id
    }
    fn pfc_flags(&self) -> u8 {
        self.pfc_flags
    }
    fn set_pfc_flags(&mut self, flags: u8) {
        self.pfc_flags = flags;
    }
    fn alloc_hint(&self) -> u32 {
        self.alloc_hint
    }
    fn mismatch(&self, first: &Self) -> Option<(&'static str, u16, u16)> {
        (self.context_id != first.context_id).then_some((
            "p_cont_id",
            first.context_id,
            self.context_id,
        ))
    }
    fn stub_mut(&mut self) -> &mut Vec<u8> {
        &mut self.stub
    }
}

/// How much of `alloc_hint` is trusted for pre-allocation: the hint is the peer's word, so a
/// large one only pays off as real fragments arrive.
const MAX_PREALLOCATION: usize = 256 * 1024;

/// Collects the fragments of one call at a time (FIRST_FRAG .. LAST_FRAG, same call_id) into
/// the first fragment, whose stub grows to the whole call's, with a bound on the total.
///
/// Feed every request (or response) fragment of a connection to [`push`](Self::push); it
/// returns `Ok(None)` while the call is incomplete and the whole call, flagged FIRST|LAST, when
/// the last fragment arrives. After an error the call in progress is dropped, so the caller may
/// answer with a fault and go on, or close the connection.
#[derive(Debug)]
pub struct Reassembler<F> {
    limit: usize,
    in_progress: Option<F>,
}

impl<F: CallFragment> Reassembler<F> {
    /// A reassembler that refuses calls whose stub exceeds `max_stub` bytes.
    pub fn new(max_stub: usize) -> Self {
        Self {
            limit: max_stub,
            in_progress: None,
        }
    }

    /// The bound given to [`new`](Self::new).
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The call id of the call being collected, if any.
    pub fn in_progress(&self) -> Option<u32> {
        self.in_progress.as_ref().map(CallFragment::call_id)
    }

    /// Drops the call in progress, if any.
    pub fn reset(&mut self) {
        self.in_progress = None;
    }

    /// Adds one fragment; see the type's documentation.
    pub fn push(&mut self, mut fragment: F) -> Result<Option<F>, ReassemblyError> {
        let flags = fragment.pfc_flags();
        let call_id = fragment.call_id();
        let first = flags & PFC_FIRST_FRAG != 0;
        let last = flags & PFC_LAST_FRAG != 0;
        let Some(mut call) = self.in_progress.take() else {
            if !first {
                return Err(ReassemblyError::MissingFirstFragment { call_id });
            }
            let total = fragment.stub_mut().len();
            if total > self.limit {
                return Err(ReassemblyError::TooLarge {
                    call_id,
                    limit: self.limit,
                    total,
                });
            }
            if last {
                return Ok(Some(fragment));
            }
            let hint = usize::try_from(fragment.alloc_hint()).unwrap_or(usize::MAX);
            let reserve = hint.min(self.limit).min(MAX_PREALLOCATION);
            let stub = fragment.stub_mut();
            stub.reserve(reserve.saturating_sub(stub.len()));
            self.in_progress = Some(fragment);
            return Ok(None);
        };
        if first || call_id != call.call_id() {
            return Err(ReassemblyError::Interleaved {
                in_progress: call.call_id(),
                got: call_id,
                flags,
            });
        }
        if let Some((what, first, got)) = fragment.mismatch(&call) {
            return Err(ReassemblyError::Inconsistent {
                call_id,
                what,
                first,
                got,
            });
        }
        let total = call
            .stub_mut()
            .len()
            .saturating_add(fragment.stub_mut().len());
        if total > self.limit {
            return Err(ReassemblyError::TooLarge {
                call_id,
                limit: self.limit,
                total,
            });
        }
        call.stub_mut().append(fragment.stub_mut());
        if last {
            call.set_pfc_flags(call.pfc_flags() | PFC_LAST_FRAG);
            return Ok(Some(call));
        }
        self.in_progress = Some(call);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pdu::header::CommonHeader;

    const MIB: usize = 1024 * 1024;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn request_fragments_fit_and_are_eight_aligned() {
        let stub = pattern(MIB + 13);
        for max in [4280u16, 1432, 5840, 65535, 33] {
            let frags = fragment_request(9, 1, 2, &stub, max);
            let mut total = 0;
            for (i, frag) in frags.iter().enumerate() {
                assert!(frag.len() <= usize::from(max), "{} > {max}", frag.len());
                let req = Request::decode(frag).unwrap();
                assert_eq!(req.pfc_flags & PFC_FIRST_FRAG != 0, i == 0);
                assert_eq!(req.pfc_flags & PFC_LAST_FRAG != 0, i + 1 == frags.len());
                assert_eq!(req.alloc_hint as usize, stub.len() - total);
                if i + 1 < frags.len() {
                    assert_eq!(req.stub.len() % 8, 0);
                    // As full as the limit allows: the next multiple of 8 would not fit.
                    assert!(frag.len() + 8 > usize::from(max));
                }
                assert_eq!((req.call_id, req.context_id, req.opnum), (9, 1, 2));
                total += req.stub.len();
            }
            assert_eq!(total, stub.len());
        }
        // 4280 - 24 = 4256 = 532 * 8: fragments are exactly the limit.
        let frags = fragment_request(1, 0, 0, &stub, 4280);
        assert_eq!(frags[0].len(), 4280);
        assert_eq!(frags.len(), stub.len().div_ceil(4256));
    }

    #[test]
    fn empty_and_exact_stubs() {
        let frags = fragment_response(3, 0, &[], 4280);
        assert_eq!(frags.len(), 1);
        let header = CommonHeader::parse(&frags[0]).unwrap();
        assert_eq!(header.pfc_flags, PFC_FIRST_FRAG | PFC_LAST_FRAG);
        assert_eq!(header.frag_length, 24);

        let frags = fragment_response(3, 0, &[0; 4256 * 2], 4280);
        assert_eq!(frags.len(), 2, "no empty trailing fragment");
        assert!(frags.iter().all(|f| f.len() == 4280));
    }

    #[test]
    fn one_mebibyte_round_trips_through_the_reassembler() {
        for len in [MIB, MIB + 1, 3 * MIB + 5] {
            let stub = pattern(len);
            let mut reassembler = Reassembler::new(4 * MIB);
            let frags = fragment_response(77, 4, &stub, 5840);
            let mut done = None;
            for (i, frag) in frags.iter().enumerate() {
                let out = reassembler.push(Response::decode(frag).unwrap()).unwrap();
                assert_eq!(out.is_some(), i + 1 == frags.len());
                done = out;
            }
            let call = done.unwrap();
            assert_eq!(call.stub.len(), stub.len());
            assert!(call.stub == stub, "stub differs");
            assert_eq!(call.pfc_flags, PFC_FIRST_FRAG | PFC_LAST_FRAG);
            assert_eq!((call.call_id, call.context_id), (77, 4));
            assert_eq!(reassembler.in_progress(), None);

            let mut reassembler = Reassembler::new(4 * MIB);
            let mut last = None;
            for frag in fragment_request(78, 1, 1, &stub, 4280) {
                last = reassembler.push(Request::decode(&frag).unwrap()).unwrap();
            }
            assert!(last.unwrap().stub == stub);
        }
    }

    #[test]
    fn the_bound_is_enforced_and_the_reassembler_recovers() {
        let stub = pattern(MIB + 1);
        let mut reassembler = Reassembler::new(MIB);
        let mut error = None;
        for frag in fragment_request(5, 0, 1, &stub, 4280) {
            match reassembler.push(Request::decode(&frag).unwrap()) {
                Ok(_) => {}
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        assert_eq!(
            error,
            Some(ReassemblyError::TooLarge {
                call_id: 5,
                limit: MIB,
                total: MIB + 1
            })
        );
        // Exactly at the limit is fine, and the call after the failed one goes through.
        reassembler.reset();
        let mut last = None;
        for frag in fragment_request(6, 0, 1, &stub[..MIB], 4280) {
            last = reassembler.push(Request::decode(&frag).unwrap()).unwrap();
        }
        assert_eq!(last.unwrap().stub.len(), MIB);
        // A single oversized fragment is refused too.
        let mut tiny = Reassembler::new(4);
        let single = Request::decode(&fragment_request(1, 0, 0, &[0; 5], 4280)[0]).unwrap();
        assert!(matches!(
            tiny.push(single),
            Err(ReassemblyError::TooLarge { .. })
        ));
    }

    #[test]
    fn out_of_order_and_interleaved_fragments_are_errors() {
        let frags: Vec<Request> = fragment_request(10, 0, 1, &pattern(10_000), 1432)
            .iter()
            .map(|f| Request::decode(f).unwrap())
            .collect();
        assert!(frags.len() >= 3);

        let mut r = Reassembler::new(MIB);
        assert_eq!(
            r.push(frags[1].clone()),
            Err(ReassemblyError::MissingFirstFragment { call_id: 10 })
        );

        let mut r = Reassembler::new(MIB);
        r.push(frags[0].clone()).unwrap();
        let mut other = frags[1].clone();
        other.call_id = 11;
        assert!(matches!(
            r.push(other),
            Err(ReassemblyError::Interleaved {
                in_progress: 10,
                got: 11,
                ..
            })
        ));

        let mut r = Reassembler::new(MIB);
        r.push(frags[0].clone()).unwrap();
        assert!(matches!(
            r.push(frags[0].clone()),
            Err(ReassemblyError::Interleaved { .. })
        ));

        let mut r = Reassembler::new(MIB);
        r.push(frags[0].clone()).unwrap();
        let mut changed = frags[1].clone();
        changed.opnum = 2;
        assert!(matches!(
            r.push(changed),
            Err(ReassemblyError::Inconsistent { what: "opnum", .. })
        ));
    }

    #[test]
    fn a_lying_alloc_hint_does_not_preallocate_much() {
        let mut first = Request::decode(&fragment_request(1, 0, 0, &[0; 64], 4280)[0]).unwrap();
        first.pfc_flags = PFC_FIRST_FRAG;
        first.alloc_hint = u32::MAX;
        let mut r = Reassembler::new(usize::MAX);
        r.push(first).unwrap();
        let call = r.in_progress.as_mut().unwrap();
        assert!(call.stub.capacity() <= MAX_PREALLOCATION);
    }
}
