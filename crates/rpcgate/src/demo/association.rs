//! One association of the demo server as a sans-IO machine: bind and alter_context
//! negotiation, the presentation contexts, request reassembly, dispatch to the interfaces and
//! fragmentation of the answers. The connection task feeds it framed PDUs
//! ([`Association::handle`]) and writes whatever [`Outcome`] says, closing when told to.
//!
//! ```text
//!  client                               demo
//!    bind [ctx0 mgmt/NDR20, ctx1 echo/NDR64, ctx2 echo/feature-neg] ->
//!                 <- bind_ack [accept NDR20, reject (2, transfer syntaxes), negotiate_ack 0x02]
//!    alter_context [ctx3 echo/NDR20]   ->
//!                 <- alter_context_resp [accept]
//!    request ctx0 opnum 0 (FIRST..LAST) ->
//!                 <- response (FIRST..LAST, each <= the client's max_recv_frag)
//!    request ctx9 / unknown opnum      ->
//!                 <- fault nca_s_unk_if / nca_s_op_rng_error
//! ```
//!
//! Refusals: a bind with a verifier gets bind_nak(authentication type not recognized) because
//! the demo is anonymous; a bind of another RPC version gets bind_nak(protocol version not
//! supported) (see [`refuse_unreadable_header`]); a request before bind, a second bind, a
//! fragment beyond the negotiated size or any malformed PDU closes the connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use rpch_proto::DecodeError;
use rpch_proto::dcerpc::{Reassembler, ReassemblyError, fragment_response};
use rpch_proto::pdu::PacketType;
use rpch_proto::pdu::header::{PFC_DID_NOT_EXECUTE, PFC_FIRST_FRAG, PFC_LAST_FRAG, PFC_MAYBE};
use rpch_proto::pdu::rpc::{
    AlterContext, AlterContextResp, Bind, BindAck, BindNak, ContextElement, ContextResult,
    MUST_RECV_FRAG_SIZE, Pdu, Request, SyntaxId, features, reason, reject_reason, result, status,
};
use tracing::{debug, warn};

use super::mgmt::{self, Stats};
use super::{Limits, MAX_FRAG, echo};

/// Protocol versions the demo speaks, as listed in a bind_nak.
const SUPPORTED_VERSIONS: [(u8, u8); 2] = [(5, 0), (5, 1)];

/// Bind-time features the demo accepts: it keeps the connection after an orphaned PDU (it
/// simply drops the call); it has no security contexts to multiplex.
const ACCEPTED_FEATURES: u8 = features::KEEP_CONNECTION_ON_ORPHAN;

/// How an interface answers a call when it does not produce a response stub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
    /// Answer with a fault carrying this status.
    Fault(u32),
    /// The request stub did not decode: answered with rpc_x_bad_stub_data.
    BadStub(DecodeError),
}

impl From<DecodeError> for CallError {
    fn from(e: DecodeError) -> Self {
        CallError::BadStub(e)
    }
}

/// The interfaces the demo serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Served {
    Mgmt,
    Echo,
}

const SERVED: [(SyntaxId, Served); 2] = [
    (mgmt::INTERFACE, Served::Mgmt),
    (echo::INTERFACE, Served::Echo),
];

/// The interface ids the demo serves, in inq_if_ids order.
pub fn interfaces() -> Vec<SyntaxId> {
    SERVED.iter().map(|(id, _)| *id).collect()
}

/// State shared by every association of one demo server.
#[derive(Debug)]
pub(super) struct Shared {
    pub stats: Stats,
    /// The bind_ack's secondary address: the listening port, as Windows sends it for TCP.
    pub secondary_address: String,
    next_assoc_group: AtomicU32,
}

impl Shared {
    pub fn new(port: u16) -> Self {
        Self {
            stats: Stats::default(),
            secondary_address: port.to_string(),
            next_assoc_group: AtomicU32::new(0x0001_0000),
        }
    }
}

/// What the connection task does after one PDU.
#[derive(Debug, Default)]
pub(super) struct Outcome {
    /// PDUs to write, in order.
    pub send: Vec<Bytes>,
    /// Close the connection (after writing `send`), for this reason.
    pub close: Option<String>,
}

impl Outcome {
    fn send(pdus: Vec<Bytes>) -> Self {
        Self {
            send: pdus,
            close: None,
        }
    }

    fn one(pdu: Vec<u8>) -> Self {
        Self::send(vec![Bytes::from(pdu)])
    }

    fn close(reason: impl Into<String>) -> Self {
        Self {
            send: Vec::new(),
            close: Some(reason.into()),
        }
    }
}

#[derive(Debug)]
struct Bound {
    /// Largest fragment we send: the client's max_recv_frag, capped at ours.
    max_xmit_frag: u16,
    /// Largest fragment we accept: the client's max_xmit_frag, capped at ours.
    max_recv_frag: u16,
    assoc_group_id: u32,
    contexts: HashMap<u16, Served>,
}

/// One client connection's association; see the module documentation.
#[derive(Debug)]
pub(super) struct Association {
    shared: Arc<Shared>,
    limits: Limits,
    bound: Option<Bound>,
    reassembler: Reassembler<Request>,
    /// A call whose stub went over the limit: its remaining fragments are dropped and the
    /// fault is sent when its last fragment arrives (clients read only after sending).
    /// (call_id, p_cont_id) of that call.
    discarding: Option<(u32, u16)>,
}

impl Association {
    pub fn new(shared: Arc<Shared>, limits: Limits) -> Self {
        Self {
            reassembler: Reassembler::new(limits.max_stub),
            shared,
            limits,
            bound: None,
            discarding: None,
        }
    }

    /// Handles one framed PDU from the client.
    pub fn handle(&mut self, pdu: &[u8]) -> Outcome {
        self.shared.stats.pkts_in.fetch_add(1, Ordering::Relaxed);
        let outcome = match Pdu::decode(pdu) {
            Err(e) => Outcome::close(format!("malformed PDU: {e}")),
            Ok(Pdu::Bind(bind)) => self.on_bind(bind),
            Ok(Pdu::AlterContext(AlterContext(alter))) => self.on_alter_context(alter),
            Ok(Pdu::Request(request)) => self.on_request(request, pdu.len()),
            Ok(Pdu::Other(header)) if header.ptype == PacketType::Orphaned => {
                // The client abandoned its call: forget it, keep the connection (we said so
                // in the feature negotiation).
                self.reassembler.reset();
                self.discarding = None;
                Outcome::default()
            }
            Ok(Pdu::Other(header)) if header.ptype == PacketType::CoCancel => {
                // Calls run to completion at once; there is nothing to cancel.
                Outcome::default()
            }
            Ok(other) => Outcome::close(format!("unexpected {other:?} from a client")),
        };
        let sent = u32::try_from(outcome.send.len()).unwrap_or(u32::MAX);
        self.shared
            .stats
            .pkts_out
            .fetch_add(sent, Ordering::Relaxed);
        outcome
    }

    fn on_bind(&mut self, bind: Bind) -> Outcome {
        if self.bound.is_some() {
            return Outcome::close("a second bind on a bound association");
        }
        if bind.auth.is_some() {
            debug!(call_id = bind.call_id, "refusing an authenticated bind");
            return Outcome::one(
                BindNak {
                    call_id: bind.call_id,
                    reject_reason: reject_reason::AUTHENTICATION_TYPE_NOT_RECOGNIZED,
                    versions: SUPPORTED_VERSIONS.to_vec(),
                }
                .encode(),
            );
        }
        // C706 12.6.3.1: every client receives at least MustRecvFragSize, so a smaller offer
        // is raised to it rather than refused.
        let max_xmit_frag = bind.max_recv_frag.clamp(MUST_RECV_FRAG_SIZE, MAX_FRAG);
        let max_recv_frag = bind.max_xmit_frag.clamp(MUST_RECV_FRAG_SIZE, MAX_FRAG);
        let assoc_group_id = if bind.assoc_group_id != 0 {
            // The demo keeps no groups; joining the client's named group is harmless.
            bind.assoc_group_id
        } else {
            self.shared.next_assoc_group.fetch_add(1, Ordering::Relaxed)
        };
        let mut bound = Bound {
            max_xmit_frag,
            max_recv_frag,
            assoc_group_id,
            contexts: HashMap::new(),
        };
        let results = negotiate(&bind.contexts, &mut bound.contexts);
        debug!(
            call_id = bind.call_id,
            max_xmit_frag,
            max_recv_frag,
            assoc_group_id,
            ?results,
            "bind"
        );
        self.bound = Some(bound);
        Outcome::one(
            BindAck {
                call_id: bind.call_id,
                pfc_flags: PFC_FIRST_FRAG | PFC_LAST_FRAG,
                max_xmit_frag,
                max_recv_frag,
                assoc_group_id,
                secondary_address: self.shared.secondary_address.clone(),
                results,
                auth: None,
            }
            .encode(),
        )
    }

    fn on_alter_context(&mut self, alter: Bind) -> Outcome {
        let Some(bound) = self.bound.as_mut() else {
            return Outcome::close("alter_context before bind");
        };
        if alter.auth.is_some() {
            // alter_context has no nak: refuse the security context with a fault.
            return Outcome::one(fault(alter.call_id, 0, status::RPC_S_UNKNOWN_AUTHN_SERVICE));
        }
        let results = negotiate(&alter.contexts, &mut bound.contexts);
        debug!(call_id = alter.call_id, ?results, "alter_context");
        Outcome::one(
            AlterContextResp(BindAck {
                call_id: alter.call_id,
                pfc_flags: PFC_FIRST_FRAG | PFC_LAST_FRAG,
                max_xmit_frag: bound.max_xmit_frag,
                max_recv_frag: bound.max_recv_frag,
                assoc_group_id: bound.assoc_group_id,
                // Windows leaves the secondary address empty in alter_context_resp.
                secondary_address: String::new(),
                results,
                auth: None,
            })
            .encode(),
        )
    }

    fn on_request(&mut self, request: Request, frag_length: usize) -> Outcome {
        let Some(bound) = self.bound.as_ref() else {
            return Outcome::close("request before bind");
        };
        if frag_length > usize::from(bound.max_recv_frag) {
            return Outcome::close(format!(
                "request fragment of {frag_length} bytes exceeds the negotiated {}",
                bound.max_recv_frag
            ));
        }
        if request.auth.is_some() {
            return Outcome::close("authenticated request on an anonymous association");
        }
        if let Some((call_id, context_id)) = self.discarding {
            if call_id == request.call_id && request.pfc_flags & PFC_FIRST_FRAG == 0 {
                if request.pfc_flags & PFC_LAST_FRAG == 0 {
                    return Outcome::default();
                }
                self.discarding = None;
                return Outcome::one(fault(
                    call_id,
                    context_id,
                    status::NCA_S_FAULT_REMOTE_NO_MEMORY,
                ));
            }
            self.discarding = None;
        }
        let last = request.pfc_flags & PFC_LAST_FRAG != 0;
        let (call_id, context_id) = (request.call_id, request.context_id);
        match self.reassembler.push(request) {
            Ok(None) => Outcome::default(),
            Ok(Some(call)) => self.dispatch(call),
            Err(ReassemblyError::TooLarge { limit, total, .. }) => {
                warn!(
                    call_id,
                    limit, total, "request stub over the limit, refusing the call"
                );
                self.reassembler.reset();
                if last {
                    Outcome::one(fault(
                        call_id,
                        context_id,
                        status::NCA_S_FAULT_REMOTE_NO_MEMORY,
                    ))
                } else {
                    self.discarding = Some((call_id, context_id));
                    Outcome::default()
                }
            }
            Err(e) => Outcome::close(format!("bad request fragment: {e}")),
        }
    }

    fn dispatch(&mut self, call: Request) -> Outcome {
        let Some(bound) = self.bound.as_ref() else {
            return Outcome::close("request before bind");
        };
        let maybe = call.pfc_flags & PFC_MAYBE != 0;
        let Some(&served) = bound.contexts.get(&call.context_id) else {
            debug!(
                call.call_id,
                call.context_id, "request on an unknown context"
            );
            return Outcome::one(fault(call.call_id, call.context_id, status::NCA_S_UNK_IF));
        };
        self.shared.stats.calls_in.fetch_add(1, Ordering::Relaxed);
        let answer = match served {
            Served::Mgmt => mgmt::call(call.opnum, &call.stub, &interfaces(), &self.shared.stats),
            Served::Echo => echo::call(call.opnum, &call.stub, self.limits.max_stub),
        };
        debug!(
            call.call_id,
            call.context_id,
            call.opnum,
            ?served,
            stub_in = call.stub.len(),
            stub_out = answer.as_ref().map(Vec::len).ok(),
            "call"
        );
        let status = match answer {
            Ok(_) if maybe => return Outcome::default(),
            Ok(stub) => {
                return Outcome::send(fragment_response(
                    call.call_id,
                    call.context_id,
                    &stub,
                    bound.max_xmit_frag,
                ));
            }
            Err(CallError::Fault(status)) => status,
            Err(CallError::BadStub(e)) => {
                debug!(call.call_id, "bad stub data: {e}");
                status::RPC_X_BAD_STUB_DATA
            }
        };
        Outcome::one(fault(call.call_id, call.context_id, status))
    }
}

/// Answers each presentation context of a bind or alter_context, recording accepted ones.
fn negotiate(
    elements: &[ContextElement],
    contexts: &mut HashMap<u16, Served>,
) -> Vec<ContextResult> {
    elements
        .iter()
        .map(|element| {
            let rejected = |reason| ContextResult {
                result: result::PROVIDER_REJECTION,
                reason,
                transfer_syntax: SyntaxId::NULL,
            };
            // MS-RPCE 3.3.1.5.3: the feature negotiation element is answered with the
            // features we accept, whatever its abstract syntax.
            if let Some(bits) = element
                .transfer_syntaxes
                .iter()
                .find_map(SyntaxId::bind_time_features)
            {
                let offered = bits.first().copied().unwrap_or(0);
                return ContextResult {
                    result: result::NEGOTIATE_ACK,
                    reason: u16::from(offered & ACCEPTED_FEATURES),
                    transfer_syntax: SyntaxId::NULL,
                };
            }
            let wanted = element.abstract_syntax;
            // C706: same UUID and major version, client minor <= ours.
            let Some(&(_, served)) = SERVED.iter().find(|(id, _)| {
                id.uuid == wanted.uuid
                    && id.major() == wanted.major()
                    && wanted.minor() <= id.minor()
            }) else {
                return rejected(reason::ABSTRACT_SYNTAX_NOT_SUPPORTED);
            };
            if !element.transfer_syntaxes.contains(&SyntaxId::NDR20) {
                return rejected(reason::PROPOSED_TRANSFER_SYNTAXES_NOT_SUPPORTED);
            }
            contexts.insert(element.context_id, served);
            ContextResult {
                result: result::ACCEPTANCE,
                reason: reason::NOT_SPECIFIED,
                transfer_syntax: SyntaxId::NDR20,
            }
        })
        .collect()
}

/// A fault for a call the demo did not execute.
fn fault(call_id: u32, context_id: u16, status: u32) -> Vec<u8> {
    rpch_proto::pdu::rpc::Fault {
        call_id,
        pfc_flags: PFC_FIRST_FRAG | PFC_LAST_FRAG | PFC_DID_NOT_EXECUTE,
        alloc_hint: 0,
        context_id,
        cancel_count: 0,
        status,
    }
    .encode()
}

/// The answer to a header the framer refused: a bind of an RPC version other than 5.0/5.1
/// gets bind_nak(protocol version not supported) listing ours, as C706 12.6.4.5 asks;
/// anything else gets nothing (the connection is closed).
pub(super) fn refuse_unreadable_header(buf: &[u8]) -> Option<Bytes> {
    let (&major, &minor, &ptype) = (buf.first()?, buf.get(1)?, buf.get(2)?);
    if ptype != PacketType::Bind.to_u8() || (major == 5 && minor <= 1) {
        return None;
    }
    let call_id = u32::from_le_bytes(buf.get(12..16)?.try_into().ok()?);
    Some(Bytes::from(
        BindNak {
            call_id,
            reject_reason: reject_reason::PROTOCOL_VERSION_NOT_SUPPORTED,
            versions: SUPPORTED_VERSIONS.to_vec(),
        }
        .encode(),
    ))
}

#[cfg(test)]
mod tests;
