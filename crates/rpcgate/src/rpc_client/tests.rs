//! The client against a scripted transport: what it sends and how it reads each answer.

use std::collections::VecDeque;

use rpch_proto::dcerpc::fragment_response;
use rpch_proto::pdu::rpc::{AlterContextResp, BindAck, BindNak, ContextResult, Fault, Request};

use super::*;

/// Records what the client sends and answers with queued PDUs; with nothing queued, `recv`
/// never completes (the client's timeout must fire).
#[derive(Default)]
struct Scripted {
    answers: VecDeque<Bytes>,
    sent: Vec<Bytes>,
}

impl Scripted {
    fn answering(answers: Vec<Vec<u8>>) -> Self {
        Self {
            answers: answers.into_iter().map(Bytes::from).collect(),
            sent: Vec::new(),
        }
    }
}

impl PduTransport for Scripted {
    async fn send(&mut self, pdu: Bytes) -> io::Result<()> {
        self.sent.push(pdu);
        Ok(())
    }

    async fn recv(&mut self) -> io::Result<Bytes> {
        match self.answers.pop_front() {
            Some(pdu) => Ok(pdu),
            None => std::future::pending().await,
        }
    }
}

fn ack(call_id: u32, max_xmit: u16, max_recv: u16, verdict: (u16, u16)) -> BindAck {
    BindAck {
        call_id,
        pfc_flags: PFC_FIRST_FRAG | PFC_LAST_FRAG,
        max_xmit_frag: max_xmit,
        max_recv_frag: max_recv,
        assoc_group_id: 0x55,
        secondary_address: "49152".into(),
        results: vec![ContextResult {
            result: verdict.0,
            reason: verdict.1,
            transfer_syntax: if verdict.0 == result::ACCEPTANCE {
                SyntaxId::NDR20
            } else {
                SyntaxId::NULL
            },
        }],
        auth: None,
    }
}

#[tokio::test]
async fn bind_sends_ndr20_and_reports_the_negotiated_sizes() {
    let transport = Scripted::answering(vec![ack(1, 2000, 1432, (0, 0)).encode()]);
    let mut client = RpcClient::new(transport);
    let info = client.bind(mgmt::INTERFACE).await.unwrap();
    assert_eq!(
        info,
        BindInfo {
            interface: mgmt::INTERFACE,
            context_id: 0,
            max_xmit_frag: 1432,
            max_recv_frag: 2000,
            assoc_group_id: 0x55,
            secondary_address: "49152".into(),
        }
    );
    let transport = client.into_transport();
    let bind = Bind::decode(&transport.sent[0]).unwrap();
    assert_eq!((bind.max_xmit_frag, bind.max_recv_frag), (4280, 4280));
    assert_eq!(bind.contexts[0].abstract_syntax, mgmt::INTERFACE);
    assert_eq!(bind.contexts[0].transfer_syntaxes, vec![SyntaxId::NDR20]);
}

#[tokio::test]
async fn later_binds_are_alter_contexts_and_rejections_are_typed() {
    let rejected = AlterContextResp(ack(2, 4280, 4280, (2, 1)));
    let transport =
        Scripted::answering(vec![ack(1, 4280, 4280, (0, 0)).encode(), rejected.encode()]);
    let mut client = RpcClient::new(transport);
    client.bind(mgmt::INTERFACE).await.unwrap();
    let err = client.bind(echo::INTERFACE).await.unwrap_err();
    assert!(
        matches!(
            err,
            RpcClientError::ContextRejected {
                result: 2,
                reason: 1,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("abstract_syntax_not_supported"));
    // `call` still uses the interface bound successfully.
    assert_eq!(client.bound().unwrap().interface, mgmt::INTERFACE);
    let transport = client.into_transport();
    let alter = AlterContext::decode(&transport.sent[1]).unwrap();
    assert_eq!(alter.0.contexts[0].context_id, 1);
    assert_eq!(alter.0.assoc_group_id, 0x55);
}

#[tokio::test]
async fn bind_nak_and_faults_are_typed() {
    let nak = BindNak {
        call_id: 1,
        reject_reason: 8,
        versions: vec![(5, 0)],
    };
    let mut client = RpcClient::new(Scripted::answering(vec![nak.encode()]));
    let err = client.bind(mgmt::INTERFACE).await.unwrap_err();
    assert!(matches!(err, RpcClientError::BindNak { reason: 8 }));
    assert!(
        err.to_string()
            .contains("authentication_type_not_recognized")
    );

    let fault = Fault {
        call_id: 2,
        pfc_flags: 0x23,
        alloc_hint: 0,
        context_id: 0,
        cancel_count: 0,
        status: status::NCA_S_OP_RNG_ERROR,
    };
    let mut client = RpcClient::new(Scripted::answering(vec![
        ack(1, 4280, 4280, (0, 0)).encode(),
        fault.encode(),
    ]));
    client.bind(mgmt::INTERFACE).await.unwrap();
    let err = client.call(77, &[]).await.unwrap_err();
    assert!(matches!(
        err,
        RpcClientError::Fault {
            status: 0x1c01_0002
        }
    ));
    assert!(err.to_string().contains("nca_s_op_rng_error"));
}

#[tokio::test]
async fn requests_respect_the_servers_size_and_responses_are_reassembled() {
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 253) as u8).collect();
    let mut answer = Vec::new();
    let mut stub = Vec::new();
    stub.extend_from_slice(&(data.len() as u32).to_le_bytes());
    stub.extend_from_slice(&data);
    for frag in fragment_response(2, 0, &stub, 3000) {
        answer.push(frag.to_vec());
    }
    let mut script = vec![ack(1, 3000, 1432, (0, 0)).encode()];
    script.extend(answer);
    let mut client = RpcClient::new(Scripted::answering(script));
    client.bind(echo::INTERFACE).await.unwrap();
    assert!(client.echo_data(&data).await.unwrap() == data);
    let transport = client.into_transport();
    let requests = &transport.sent[1..];
    assert!(requests.len() > 60);
    assert!(requests.iter().all(|r| r.len() <= 1432));
    let first = Request::decode(&requests[0]).unwrap();
    assert_eq!((first.opnum, first.context_id, first.call_id), (1, 0, 2));
}

#[tokio::test]
async fn oversized_fragments_and_foreign_calls_are_protocol_errors() {
    let big = fragment_response(2, 0, &[0; 3000], 4280);
    let mut client = RpcClient::new(Scripted::answering(vec![
        ack(1, 2000, 4280, (0, 0)).encode(),
        big[0].to_vec(),
    ]));
    client.bind(mgmt::INTERFACE).await.unwrap();
    let err = client.call(0, &[]).await.unwrap_err();
    assert!(
        err.to_string().contains("exceeds the negotiated 2000"),
        "{err}"
    );

    let other_call = fragment_response(9, 0, &[1, 2, 3, 4], 4280);
    let mut client = RpcClient::new(Scripted::answering(vec![
        ack(1, 4280, 4280, (0, 0)).encode(),
        other_call[0].to_vec(),
    ]));
    client.bind(mgmt::INTERFACE).await.unwrap();
    let err = client.call(0, &[]).await.unwrap_err();
    assert!(
        matches!(&err, RpcClientError::Protocol(m) if m.contains("response (call 9)")),
        "{err}"
    );
}

#[tokio::test]
async fn response_size_is_bounded() {
    let mut script = vec![ack(1, 4280, 4280, (0, 0)).encode()];
    script.extend(
        fragment_response(2, 0, &[0; 50_000], 4280)
            .iter()
            .map(|f| f.to_vec()),
    );
    let mut client = RpcClient::new(Scripted::answering(script)).with_max_response_stub(10_000);
    client.bind(mgmt::INTERFACE).await.unwrap();
    assert!(matches!(
        client.call(0, &[]).await,
        Err(RpcClientError::Reassembly(ReassemblyError::TooLarge { .. }))
    ));
}

#[tokio::test]
async fn calls_need_a_bind() {
    let mut client = RpcClient::new(Scripted::default());
    assert!(matches!(
        client.call(0, &[]).await,
        Err(RpcClientError::NotBound)
    ));
}

#[tokio::test]
async fn a_silent_server_times_out() {
    let mut client = RpcClient::new(Scripted::default()).with_timeout(Duration::from_millis(200));
    let err = client.bind(mgmt::INTERFACE).await.unwrap_err();
    assert!(
        matches!(err, RpcClientError::Timeout { after, .. } if after == Duration::from_millis(200)),
        "{err}"
    );
}
