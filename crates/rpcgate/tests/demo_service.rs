//! The demo service over real loopback sockets, driven by `RpcClient` over ncacn_ip_tcp (and,
//! for the refusals a well-behaved client never provokes, by raw PDUs).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;

use bytes::Bytes;
use rpcgate::demo::{self, echo, mgmt};
use rpcgate::rpc_client::{PduTransport, RpcClient, RpcClientError, TcpPduTransport};
use rpch_proto::dcerpc::fragment_request;
use rpch_proto::pdu::rpc::{AuthVerifier, Bind, BindNak, ContextElement, SyntaxId};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};

const MIB: usize = 1024 * 1024;

async fn start() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(demo::serve(listener));
    address
}

async fn client(address: SocketAddr) -> RpcClient<TcpPduTransport> {
    RpcClient::new(TcpPduTransport::connect(address).await.unwrap())
}

fn bind_pdu(interface: SyntaxId) -> Bind {
    Bind {
        call_id: 1,
        pfc_flags: 3,
        max_xmit_frag: 4280,
        max_recv_frag: 4280,
        assoc_group_id: 0,
        contexts: vec![ContextElement {
            context_id: 0,
            abstract_syntax: interface,
            transfer_syntaxes: vec![SyntaxId::NDR20],
        }],
        auth: None,
    }
}

#[tokio::test]
async fn mgmt_lists_both_interfaces_and_answers_every_call() {
    let address = start().await;
    let mut client = client(address).await;
    let info = client.bind(mgmt::interface()).await.unwrap();
    assert_eq!((info.max_xmit_frag, info.max_recv_frag), (4280, 4280));
    assert_eq!(info.secondary_address, address.port().to_string());
    assert_ne!(info.assoc_group_id, 0);

    let ids = client.mgmt_inq_if_ids().await.unwrap();
    assert_eq!(ids, vec![mgmt::interface(), echo::interface()]);
    assert_eq!(ids, demo::interfaces());
    assert!(client.mgmt_is_server_listening().await.unwrap());
    assert_eq!(client.mgmt_inq_princ_name(0, 1).await.unwrap(), "");
    let stats = client.mgmt_inq_stats().await.unwrap();
    assert_eq!(stats.len(), 4);
    assert!(stats[0] >= 4, "calls in: {stats:?}");
    assert!(stats[2] >= 5, "packets in: {stats:?}");
    // stop_server_listening is refused in its status, not with a fault.
    let stub = client
        .call(mgmt::opnum::STOP_SERVER_LISTENING, &[])
        .await
        .unwrap();
    assert_eq!(stub, 5u32.to_le_bytes());
}

#[tokio::test]
async fn rpcecho_calls() {
    let address = start().await;
    let mut client = client(address).await;
    client.bind(echo::interface()).await.unwrap();
    assert_eq!(client.echo_add_one(41).await.unwrap(), 42);
    assert_eq!(client.echo_add_one(u32::MAX).await.unwrap(), 0);
    assert_eq!(client.echo_data(b"hello").await.unwrap(), b"hello");
    assert_eq!(client.echo_data(&[]).await.unwrap(), b"");
    client.sink_data(&[7; 100_000]).await.unwrap();
    let pattern = client.source_data(70_000).await.unwrap();
    assert_eq!(pattern, echo::source_pattern(70_000));
    assert_eq!(
        &pattern[250..260],
        &[250, 251, 252, 253, 254, 255, 0, 1, 2, 3]
    );
}

#[tokio::test]
async fn one_mebibyte_echo_is_fragmented_both_ways_byte_for_byte() {
    let address = start().await;
    let mut client = client(address).await;
    let info = client.bind(echo::interface()).await.unwrap();
    let data: Vec<u8> = (0..MIB + 17).map(|i| (i * 31 + i / 4093) as u8).collect();
    // 1 MiB is ~250 request fragments of at most 4280 bytes and as many response fragments,
    // which the client checks against its max_recv_frag.
    assert!(data.len() / usize::from(info.max_xmit_frag) > 200);
    let echoed = client.echo_data(&data).await.unwrap();
    assert_eq!(echoed.len(), data.len());
    assert!(echoed == data, "echoed bytes differ");
    let sourced = client.source_data(2 * MIB as u32).await.unwrap();
    assert!(sourced == echo::source_pattern(2 * MIB));
    // The connection is still good for more calls.
    assert_eq!(client.echo_add_one(1).await.unwrap(), 2);
}

#[tokio::test]
async fn faults_and_rejections_are_reported() {
    let address = start().await;
    let mut client = client(address).await;
    client.bind(mgmt::interface()).await.unwrap();
    let err = client.call(42, &[]).await.unwrap_err();
    assert!(
        matches!(
            err,
            RpcClientError::Fault {
                status: 0x1c01_0002
            }
        ),
        "{err}"
    );
    // Bad stub data.
    let err = client.call(mgmt::opnum::INQ_STATS, &[1]).await.unwrap_err();
    assert!(
        matches!(err, RpcClientError::Fault { status: 0x6f7 }),
        "{err}"
    );

    let unknown: SyntaxId = "12345778-1234-abcd-ef00-0123456789ac v1.0".parse().unwrap();
    let err = client.bind(unknown).await.unwrap_err();
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
    // The association survives a rejected context.
    assert_eq!(client.echo_add_one(1).await.unwrap(), 2);

    // As the very first bind too.
    let mut client = self::client(address).await;
    let err = client.bind(unknown).await.unwrap_err();
    assert!(matches!(
        err,
        RpcClientError::ContextRejected {
            result: 2,
            reason: 1,
            ..
        }
    ));
    assert_eq!(client.mgmt_inq_if_ids().await.unwrap().len(), 2);
}

#[tokio::test]
async fn refusals_on_the_wire() {
    let address = start().await;

    // An authenticated bind: bind_nak(authentication type not recognized).
    let mut transport = TcpPduTransport::connect(address).await.unwrap();
    let mut bind = bind_pdu(mgmt::interface());
    bind.auth = Some(AuthVerifier {
        auth_type: 10,
        auth_level: 6,
        auth_pad_length: 0,
        auth_context_id: 0,
        auth_value: b"NTLMSSP\0\x01\0\0\0\x07\x82\x08\xa2".to_vec(),
    });
    transport.send(Bytes::from(bind.encode())).await.unwrap();
    let nak = BindNak::decode(&transport.recv().await.unwrap()).unwrap();
    assert_eq!(nak.reject_reason, 8);

    // A bind of RPC version 4.0: bind_nak(protocol version not supported), then close.
    let mut transport = TcpPduTransport::connect(address).await.unwrap();
    let mut bytes = bind_pdu(mgmt::interface()).encode();
    bytes[0] = 4;
    transport.send(Bytes::from(bytes)).await.unwrap();
    let nak = BindNak::decode(&transport.recv().await.unwrap()).unwrap();
    assert_eq!((nak.reject_reason, nak.versions), (4, vec![(5, 0), (5, 1)]));
    assert!(transport.recv().await.is_err(), "closed after the nak");

    // A request before bind: the connection is closed without an answer.
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = fragment_request(1, 0, 0, &[], 4280);
    tokio::io::AsyncWriteExt::write_all(&mut stream, &request[0])
        .await
        .unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_clients() {
    let address = start().await;
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..50u32 {
        tasks.spawn(async move {
            let mut client = client(address).await;
            assert_eq!(client.mgmt_inq_if_ids().await.unwrap().len(), 2);
            for i in 0..10 {
                assert_eq!(
                    client.echo_add_one(n * 100 + i).await.unwrap(),
                    n * 100 + i + 1
                );
            }
            let data = vec![n as u8; 20_000 + n as usize * 100];
            assert_eq!(client.echo_data(&data).await.unwrap(), data);
            n
        });
    }
    let mut done = 0;
    while let Some(result) = tasks.join_next().await {
        result.unwrap();
        done += 1;
    }
    assert_eq!(done, 50);
}
