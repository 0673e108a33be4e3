//! A DCE/RPC connection-oriented client over any PDU transport: plain TCP
//! ([`TcpPduTransport`], ncacn_ip_tcp) or an RPC-over-HTTP virtual connection. `rpcgate ping`,
//! `rpcgate bench` and the tests use it to talk to the demo service (or any server).
//!
//! ```text
//!   RpcClient::new(transport)
//!   .bind(iface)            bind -> bind_ack (later binds: alter_context -> alter_context_resp)
//!   .call(opnum, stub)      request fragments (<= server's max_recv_frag) -> response
//!                           fragments, reassembled under a bound, or a fault
//!   .mgmt_* / .echo_*       typed calls to the demo interfaces (binding them on first use)
//! ```
//!
//! One call at a time; every wait for the server is bounded by the client's timeout
//! ([`DEFAULT_TIMEOUT`] unless set with [`RpcClient::with_timeout`]). The client is anonymous
//! and speaks NDR 2.0 only.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rpch_proto::DecodeError;
use rpch_proto::dcerpc::{Reassembler, ReassemblyError, fragment_request};
use rpch_proto::pdu::header::{PFC_FIRST_FRAG, PFC_LAST_FRAG};
use rpch_proto::pdu::rpc::{
    AlterContext, Bind, ContextElement, Pdu, Response, SyntaxId, reason, reject_reason, result,
    status,
};
use rpch_proto::pdu::{CommonHeader, split_pdu};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, ToSocketAddrs};

use crate::demo::{echo, mgmt};

/// How long the client waits for the server by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The fragment sizes the client offers (what Windows and impacket offer).
pub const DEFAULT_MAX_FRAG: u16 = 4280;
/// Largest response stub reassembled by default.
pub const DEFAULT_MAX_RESPONSE_STUB: usize = 64 * 1024 * 1024;

/// Moves whole PDUs: `send` writes one, `recv` returns the next one received.
pub trait PduTransport {
    fn send(&mut self, pdu: Bytes) -> impl Future<Output = io::Result<()>> + Send;
    fn recv(&mut self) -> impl Future<Output = io::Result<Bytes>> + Send;
}

/// ncacn_ip_tcp: PDUs back to back on a TCP stream, framed by `frag_length`.
#[derive(Debug)]
pub struct TcpPduTransport {
    reader: OwnedReadHalf,
    writer: OwnedWriteHalf,
    buf: BytesMut,
}

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;

impl TcpPduTransport {
    /// Connects to `address` (e.g. `"127.0.0.1:135"`).
    pub async fn connect(address: impl ToSocketAddrs) -> io::Result<Self> {
        Ok(Self::new(TcpStream::connect(address).await?))
    }

    /// Uses a connected stream.
    pub fn new(stream: TcpStream) -> Self {
        // Requests are written whole; waiting for more data to coalesce only adds latency.
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        Self {
            reader,
            writer,
            buf: BytesMut::with_capacity(READ_CHUNK),
        }
    }
}

impl PduTransport for TcpPduTransport {
    async fn send(&mut self, pdu: Bytes) -> io::Result<()> {
        self.writer.write_all(&pdu).await
    }

    async fn recv(&mut self) -> io::Result<Bytes> {
        loop {
            if let Some(pdu) = split_pdu(&mut self.buf)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?
            {
                return Ok(pdu);
            }
            self.buf.reserve(READ_CHUNK);
            if self.reader.read_buf(&mut self.buf).await? == 0 {
                let what = if self.buf.is_empty() {
                    "the server closed the connection"
                } else {
                    "the server closed the connection in the middle of a PDU"
                };
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, what));
            }
        }
    }
}

/// What a successful bind or alter_context negotiated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindInfo {
    pub interface: SyntaxId,
    /// The presentation context the client uses for this interface.
    pub context_id: u16,
    /// Largest fragment the client sends (the server's max_recv_frag).
    pub max_xmit_frag: u16,
    /// Largest fragment the client receives (the server's max_xmit_frag).
    pub max_recv_frag: u16,
    pub assoc_group_id: u32,
    /// The bind_ack's secondary address (a port for TCP); empty after alter_context.
    pub secondary_address: String,
}

/// Why an RPC exchange failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RpcClientError {
    /// The server refused the association (bind_nak).
    #[error("bind refused (bind_nak): reason {reason} ({})", reject_reason::name(*reason))]
    BindNak { reason: u16 },
    /// The association is fine but the server does not offer this interface (or syntax).
    #[error(
        "presentation context for {interface} rejected: result {result}, reason {reason} ({})",
        reason::name(*reason)
    )]
    ContextRejected {
        interface: SyntaxId,
        result: u16,
        reason: u16,
    },
    /// The call failed on the server.
    #[error("server fault {status:#010x} ({})", status::name(*status).unwrap_or("unknown status"))]
    Fault { status: u32 },
    /// The call ran but its return status says it failed.
    #[error("{call} returned status {status:#x}")]
    CallStatus { call: &'static str, status: u32 },
    /// A PDU from the server that does not decode.
    #[error("malformed PDU from the server: {0}")]
    Decode(#[from] DecodeError),
    /// A response stub that does not decode as the call's output.
    #[error("bad stub data in the answer to {call}: {source}")]
    Stub {
        call: &'static str,
        source: DecodeError,
    },
    /// Response fragments that do not form one call, or one too large.
    #[error("bad response fragments: {0}")]
    Reassembly(#[from] ReassemblyError),
    /// A well-formed PDU where the protocol does not allow it.
    #[error("protocol violation by the server: {0}")]
    Protocol(String),
    /// A call before any bind.
    #[error("not bound to any interface")]
    NotBound,
    #[error("no answer within {after:?} while waiting for {what}")]
    Timeout { what: &'static str, after: Duration },
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
}

/// Negotiated association parameters.
#[derive(Debug, Clone, Copy)]
struct Association {
    max_xmit_frag: u16,
    max_recv_frag: u16,
    assoc_group_id: u32,
}

/// A DCE/RPC client; see the module documentation.
#[derive(Debug)]
pub struct RpcClient<T> {
    transport: T,
    timeout: Duration,
    max_response_stub: usize,
    next_call_id: u32,
    association: Option<Association>,
    /// Context id per bound interface.
    contexts: HashMap<SyntaxId, u16>,
    /// The interface `call` uses: the last one bound.
    current: Option<BindInfo>,
}

impl<T: PduTransport> RpcClient<T> {
    pub fn new(transport: T) -> Self {
        Self {
            transport,
            timeout: DEFAULT_TIMEOUT,
            max_response_stub: DEFAULT_MAX_RESPONSE_STUB,
            next_call_id: 1,
            association: None,
            contexts: HashMap::new(),
            current: None,
        }
    }

    /// Bounds every wait for the server (default [`DEFAULT_TIMEOUT`]).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Bounds response stubs (default [`DEFAULT_MAX_RESPONSE_STUB`]).
    pub fn with_max_response_stub(mut self, bytes: usize) -> Self {
        self.max_response_stub = bytes;
        self
    }

    /// The interface [`call`](Self::call) uses, if any.
    pub fn bound(&self) -> Option<&BindInfo> {
        self.current.as_ref()
    }

    /// Gives the transport back (e.g. to close it).
    pub fn into_transport(self) -> T {
        self.transport
    }

    /// Binds `interface` with NDR 2.0: a bind on a new association, an alter_context on a bound
    /// one. The interface becomes the one [`call`](Self::call) uses.
    pub async fn bind(&mut self, interface: SyntaxId) -> Result<BindInfo, RpcClientError> {
        let call_id = self.call_id();
        let context_id = u16::try_from(self.contexts.len()).unwrap_or(u16::MAX);
        let bind = Bind {
            call_id,
            pfc_flags: PFC_FIRST_FRAG | PFC_LAST_FRAG,
            max_xmit_frag: DEFAULT_MAX_FRAG,
            max_recv_frag: DEFAULT_MAX_FRAG,
            assoc_group_id: self.association.map_or(0, |a| a.assoc_group_id),
            contexts: vec![ContextElement {
                context_id,
                abstract_syntax: interface,
                transfer_syntaxes: vec![SyntaxId::NDR20],
            }],
            auth: None,
        };
        let pdu = match self.association {
            None => bind.encode(),
            Some(_) => AlterContext(bind).encode(),
        };
        self.send(Bytes::from(pdu)).await?;
        let answer = self.recv("the bind answer").await?;
        let ack = match Pdu::decode(&answer)? {
            Pdu::BindAck(ack) if self.association.is_none() => ack,
            Pdu::AlterContextResp(resp) if self.association.is_some() => resp.0,
            Pdu::BindNak(nak) => {
                return Err(RpcClientError::BindNak {
                    reason: nak.reject_reason,
                });
            }
            Pdu::Fault(fault) => {
                return Err(RpcClientError::Fault {
                    status: fault.status,
                });
            }
            other => {
                return Err(RpcClientError::Protocol(format!(
                    "answered the bind with {}",
                    describe(&other)
                )));
            }
        };
        if ack.call_id != call_id {
            return Err(RpcClientError::Protocol(format!(
                "bind answer for call {} instead of {call_id}",
                ack.call_id
            )));
        }
        let association = *self.association.get_or_insert(Association {
            max_xmit_frag: ack.max_recv_frag,
            max_recv_frag: ack.max_xmit_frag,
            assoc_group_id: ack.assoc_group_id,
        });
        let Some(verdict) = ack.results.first() else {
            return Err(RpcClientError::Protocol(
                "bind answer without a context result".into(),
            ));
        };
        if verdict.result != result::ACCEPTANCE {
            return Err(RpcClientError::ContextRejected {
                interface,
                result: verdict.result,
                reason: verdict.reason,
            });
        }
        if verdict.transfer_syntax != SyntaxId::NDR20 {
            return Err(RpcClientError::Protocol(format!(
                "accepted with transfer syntax {} although only NDR20 was offered",
                verdict.transfer_syntax
            )));
        }
        self.contexts.insert(interface, context_id);
        let info = BindInfo {
            interface,
            context_id,
            max_xmit_frag: association.max_xmit_frag,
            max_recv_frag: association.max_recv_frag,
            assoc_group_id: association.assoc_group_id,
            secondary_address: ack.secondary_address,
        };
        self.current = Some(info.clone());
        Ok(info)
    }

    /// Calls `opnum` of the interface bound last with `stub`; returns the response stub.
    pub async fn call(&mut self, opnum: u16, stub: &[u8]) -> Result<Vec<u8>, RpcClientError> {
        let context_id = self
            .current
            .as_ref()
            .ok_or(RpcClientError::NotBound)?
            .context_id;
        self.call_on(context_id, opnum, stub).await
    }

    /// The demo's (or any server's) interfaces, from mgmt inq_if_ids.
    pub async fn mgmt_inq_if_ids(&mut self) -> Result<Vec<SyntaxId>, RpcClientError> {
        const CALL: &str = "mgmt inq_if_ids";
        let stub = self
            .call_interface(mgmt::INTERFACE, mgmt::opnum::INQ_IF_IDS, &[])
            .await?;
        let (ids, status) = mgmt::decode_inq_if_ids(&stub).map_err(stub_error(CALL))?;
        check_status(CALL, status)?;
        Ok(ids)
    }

    /// The server's counters (calls in, calls out, packets in, packets out).
    pub async fn mgmt_inq_stats(&mut self) -> Result<Vec<u32>, RpcClientError> {
        const CALL: &str = "mgmt inq_stats";
        let request = mgmt::encode_inq_stats_request(mgmt::STATS_ARRAY_MAX_SIZE);
        let stub = self
            .call_interface(mgmt::INTERFACE, mgmt::opnum::INQ_STATS, &request)
            .await?;
        let (values, status) = mgmt::decode_inq_stats(&stub).map_err(stub_error(CALL))?;
        check_status(CALL, status)?;
        Ok(values)
    }

    /// mgmt is_server_listening.
    pub async fn mgmt_is_server_listening(&mut self) -> Result<bool, RpcClientError> {
        const CALL: &str = "mgmt is_server_listening";
        let stub = self
            .call_interface(mgmt::INTERFACE, mgmt::opnum::IS_SERVER_LISTENING, &[])
            .await?;
        let (status, listening) =
            mgmt::decode_is_server_listening(&stub).map_err(stub_error(CALL))?;
        check_status(CALL, status)?;
        Ok(listening)
    }

    /// mgmt inq_princ_name for `authn_proto`, in a buffer of `size` characters.
    pub async fn mgmt_inq_princ_name(
        &mut self,
        authn_proto: u32,
        size: u32,
    ) -> Result<String, RpcClientError> {
        const CALL: &str = "mgmt inq_princ_name";
        let request = mgmt::encode_inq_princ_name_request(authn_proto, size);
        let stub = self
            .call_interface(mgmt::INTERFACE, mgmt::opnum::INQ_PRINC_NAME, &request)
            .await?;
        let (name, status) = mgmt::decode_inq_princ_name(&stub).map_err(stub_error(CALL))?;
        check_status(CALL, status)?;
        Ok(name)
    }

    /// rpcecho AddOne.
    pub async fn echo_add_one(&mut self, v: u32) -> Result<u32, RpcClientError> {
        let stub = self
            .call_interface(
                echo::INTERFACE,
                echo::opnum::ADD_ONE,
                &echo::encode_add_one(v),
            )
            .await?;
        echo::decode_add_one(&stub).map_err(stub_error("echo AddOne"))
    }

    /// rpcecho EchoData: the server returns `data`.
    pub async fn echo_data(&mut self, data: &[u8]) -> Result<Vec<u8>, RpcClientError> {
        let len = u32::try_from(data.len())
            .map_err(|_| RpcClientError::Protocol("EchoData takes at most 4 GiB".into()))?;
        let stub = self
            .call_interface(
                echo::INTERFACE,
                echo::opnum::ECHO_DATA,
                &echo::encode_data(data),
            )
            .await?;
        echo::decode_data(&stub, len).map_err(stub_error("echo EchoData"))
    }

    /// rpcecho SinkData: the server discards `data`.
    pub async fn sink_data(&mut self, data: &[u8]) -> Result<(), RpcClientError> {
        self.call_interface(
            echo::INTERFACE,
            echo::opnum::SINK_DATA,
            &echo::encode_data(data),
        )
        .await
        .map(drop)
    }

    /// rpcecho SourceData: `len` bytes of the server's pattern (`i & 0xff`).
    pub async fn source_data(&mut self, len: u32) -> Result<Vec<u8>, RpcClientError> {
        let request = echo::encode_source_data(len);
        let stub = self
            .call_interface(echo::INTERFACE, echo::opnum::SOURCE_DATA, &request)
            .await?;
        echo::decode_data(&stub, len).map_err(stub_error("echo SourceData"))
    }

    /// Calls `opnum` of `interface`, binding it first if this association has not.
    async fn call_interface(
        &mut self,
        interface: SyntaxId,
        opnum: u16,
        stub: &[u8],
    ) -> Result<Vec<u8>, RpcClientError> {
        let context_id = match self.contexts.get(&interface) {
            Some(&id) => id,
            None => self.bind(interface).await?.context_id,
        };
        self.call_on(context_id, opnum, stub).await
    }

    async fn call_on(
        &mut self,
        context_id: u16,
        opnum: u16,
        stub: &[u8],
    ) -> Result<Vec<u8>, RpcClientError> {
        let association = self.association.ok_or(RpcClientError::NotBound)?;
        let call_id = self.call_id();
        for fragment in
            fragment_request(call_id, context_id, opnum, stub, association.max_xmit_frag)
        {
            self.send(fragment).await?;
        }
        let mut reassembler = Reassembler::<Response>::new(self.max_response_stub);
        loop {
            let pdu = self.recv("the response").await?;
            if pdu.len() > usize::from(association.max_recv_frag) {
                return Err(RpcClientError::Protocol(format!(
                    "{}-byte fragment exceeds the negotiated {}",
                    pdu.len(),
                    association.max_recv_frag
                )));
            }
            match Pdu::decode(&pdu)? {
                Pdu::Response(response) if response.call_id == call_id => {
                    if let Some(done) = reassembler.push(response)? {
                        return Ok(done.stub);
                    }
                }
                Pdu::Fault(fault) if fault.call_id == call_id => {
                    return Err(RpcClientError::Fault {
                        status: fault.status,
                    });
                }
                other => {
                    return Err(RpcClientError::Protocol(format!(
                        "{} while waiting for call {call_id}",
                        describe(&other)
                    )));
                }
            }
        }
    }

    fn call_id(&mut self) -> u32 {
        let id = self.next_call_id;
        self.next_call_id = self.next_call_id.wrapping_add(1).max(1);
        id
    }

    async fn send(&mut self, pdu: Bytes) -> Result<(), RpcClientError> {
        let after = self.timeout;
        tokio::time::timeout(after, self.transport.send(pdu))
            .await
            .map_err(|_| RpcClientError::Timeout {
                what: "the server to accept a request",
                after,
            })?
            .map_err(RpcClientError::Io)
    }

    async fn recv(&mut self, what: &'static str) -> Result<Bytes, RpcClientError> {
        let after = self.timeout;
        let pdu = tokio::time::timeout(after, self.transport.recv())
            .await
            .map_err(|_| RpcClientError::Timeout { what, after })??;
        // Transports hand out framed PDUs; a short one is their bug, not a panic here.
        CommonHeader::parse(&pdu)?;
        Ok(pdu)
    }
}

fn stub_error(call: &'static str) -> impl FnOnce(DecodeError) -> RpcClientError {
    move |source| RpcClientError::Stub { call, source }
}

fn check_status(call: &'static str, status: u32) -> Result<(), RpcClientError> {
    if status == 0 {
        Ok(())
    } else {
        Err(RpcClientError::CallStatus { call, status })
    }
}

/// A short description of a PDU for protocol-violation messages.
fn describe(pdu: &Pdu) -> String {
    let name = match pdu {
        Pdu::Bind(_) => "bind",
        Pdu::AlterContext(_) => "alter_context",
        Pdu::BindAck(_) => "bind_ack",
        Pdu::AlterContextResp(_) => "alter_context_resp",
        Pdu::BindNak(_) => "bind_nak",
        Pdu::Request(_) => "request",
        Pdu::Response(_) => "response",
        Pdu::Fault(_) => "fault",
        Pdu::Shutdown(_) => "shutdown",
        Pdu::Other(header) => return format!("PTYPE {:?} (call {})", header.ptype, header.call_id),
        _ => "PDU",
    };
    format!("{name} (call {})", pdu.call_id())
}

#[cfg(test)]
mod tests;
