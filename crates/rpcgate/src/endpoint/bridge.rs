//! One virtual connection at the endpoint: pairs the two legs and bridges RPC PDUs between them
//! and one ncacn_ip_tcp connection to the backend, driving [`ServerVc`].
//!
//! The driver task is the first leg's task. It waits (bounded by the setup timeout) for the
//! second leg, opens the backend connection, then loops: feed PDUs read from the IN leg, the
//! OUT leg and the backend into the state machine (reading only while it wants more, which is
//! the back-pressure), and hand whatever it has ready to each socket's writer task. Whichever
//! side ends first ends all three connections.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rpch_proto::server::{Leg, ServerConfig, ServerVc};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, info, info_span, warn};

use super::Endpoint;
use super::pairing::LegConn;
use crate::connect::{TCP_KEEPALIVE_IDLE, connect, tune_socket};
use crate::framed::{PduReader, WriterTx, spawn_writer};

/// Drives the virtual connection whose first leg is `first`.
pub async fn drive(
    endpoint: Arc<Endpoint>,
    first: LegConn,
    this_leg: Leg,
    generation: u64,
    second: oneshot::Receiver<LegConn>,
) {
    let Some(vc_cookie) = vc_of(&first) else {
        return;
    };
    let span = info_span!("vc", vc = %vc_cookie);
    async move {
        let config = ServerConfig {
            receive_window: endpoint.settings.receive_window,
            setup_timeout: endpoint.settings.setup_timeout,
        };
        let mut vc = match ServerVc::new(config, &first.first, Instant::now()) {
            Ok(vc) => vc,
            Err(e) => {
                endpoint.table.forget(&vc_cookie, generation);
                warn!("cannot start virtual connection: {e}");
                return;
            }
        };
        let second = tokio::select! {
            second = second => second.ok(),
            () = tokio::time::sleep(endpoint.settings.setup_timeout) => None,
        };
        endpoint.table.forget(&vc_cookie, generation);
        let Some(second) = second else {
            endpoint
                .stats
                .vcs_setup_timeouts
                .fetch_add(1, Ordering::Relaxed);
            warn!(
                "closing: the {} leg never arrived within {} s",
                match this_leg {
                    Leg::In => "OUT",
                    _ => "IN",
                },
                endpoint.settings.setup_timeout.as_secs()
            );
            return;
        };
        if let Err(e) = vc.complete(&second.first) {
            warn!("closing: pairing failed: {e}");
            return;
        }
        let (in_leg, out_leg) = match this_leg {
            Leg::In => (first, second),
            _ => (second, first),
        };
        info!(
            in_peer = %in_leg.peer, in_conn = in_leg.conn_id,
            out_peer = %out_leg.peer, out_conn = out_leg.conn_id,
            client = ?vc.client_address(),
            "virtual connection paired"
        );
        let backend = &endpoint.settings.backend;
        let backend_stream = match connect(
            &backend.host,
            backend.port,
            endpoint.settings.connect_timeout,
        )
        .await
        {
            Ok(c) => c.stream,
            Err(e) => {
                endpoint
                    .stats
                    .backend_failures
                    .fetch_add(1, Ordering::Relaxed);
                warn!(backend = %backend, "closing: backend unreachable: {e}");
                return;
            }
        };
        tune_socket(&backend_stream, TCP_KEEPALIVE_IDLE);
        endpoint.stats.vcs_opened.fetch_add(1, Ordering::Relaxed);
        endpoint.stats.vcs_active.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let outcome = run(&mut vc, in_leg, out_leg, backend_stream).await;
        endpoint.stats.vcs_active.fetch_sub(1, Ordering::Relaxed);
        info!(
            seconds = started.elapsed().as_secs_f64(),
            out_bytes = vc.out_bytes_sent(),
            "virtual connection closed: {outcome}"
        );
    }
    .instrument(span)
    .await;
}

fn vc_of(leg: &LegConn) -> Option<rpch_proto::Cookie> {
    match &leg.first {
        rpch_proto::server::FirstPdu::ConnA2(a2) => Some(a2.vc),
        rpch_proto::server::FirstPdu::ConnB2(b2) => Some(b2.vc),
        _ => None,
    }
}

/// Hands `vc`'s ready PDUs for `leg` to its writer without waiting; false if the writer died.
fn flush(vc: &mut ServerVc, leg: Leg, tx: &WriterTx) -> bool {
    while vc.has_transmit(leg) {
        match tx.try_reserve() {
            Ok(permit) => {
                if let Some(pdu) = vc.poll_transmit(leg) {
                    permit.send(pdu);
                }
            }
            Err(mpsc::error::TrySendError::Full(())) => return true,
            Err(mpsc::error::TrySendError::Closed(())) => return false,
        }
    }
    true
}

/// Bridges until one side ends; returns why it ended.
async fn run(vc: &mut ServerVc, in_leg: LegConn, out_leg: LegConn, backend: TcpStream) -> String {
    let (in_r, in_w) = in_leg.stream.into_split();
    let (out_r, out_w) = out_leg.stream.into_split();
    let (be_r, be_w) = backend.into_split();
    let mut in_reader = PduReader::new(in_r, in_leg.leftover);
    let mut out_reader = PduReader::new(out_r, out_leg.leftover);
    let mut backend_reader = PduReader::new(be_r, bytes::BytesMut::new());
    let (in_tx, in_task) = spawn_writer(in_w);
    let (out_tx, out_task) = spawn_writer(out_w);
    let (be_tx, be_task) = spawn_writer(be_w);

    let outcome = loop {
        if !(flush(vc, Leg::In, &in_tx)
            && flush(vc, Leg::Out, &out_tx)
            && flush(vc, Leg::Backend, &be_tx))
        {
            break "a connection failed while writing".to_string();
        }
        tokio::select! {
            read = in_reader.next(), if vc.wants_in_data() => match read {
                Ok(Some(pdu)) => if let Err(e) = vc.handle_in_pdu(pdu) { break format!("IN leg: {e}") },
                Ok(None) => break "the IN leg closed".into(),
                Err(e) => break format!("IN leg: {e}"),
            },
            read = out_reader.next() => match read {
                Ok(Some(pdu)) => if let Err(e) = vc.handle_out_pdu(pdu) { break format!("OUT leg: {e}") },
                Ok(None) => break "the OUT leg closed".into(),
                Err(e) => break format!("OUT leg: {e}"),
            },
            read = backend_reader.next(), if vc.wants_backend_data() => match read {
                Ok(Some(pdu)) => if let Err(e) = vc.handle_backend_pdu(pdu) { break format!("backend: {e}") },
                Ok(None) => break "the backend closed the connection".into(),
                Err(e) => break format!("backend: {e}"),
            },
            permit = in_tx.reserve(), if vc.has_transmit(Leg::In) => match permit {
                Ok(permit) => if let Some(pdu) = vc.poll_transmit(Leg::In) { permit.send(pdu) },
                Err(_) => break "the IN leg failed".into(),
            },
            permit = out_tx.reserve(), if vc.has_transmit(Leg::Out) => match permit {
                Ok(permit) => if let Some(pdu) = vc.poll_transmit(Leg::Out) { permit.send(pdu) },
                Err(_) => break "the OUT leg failed".into(),
            },
            permit = be_tx.reserve(), if vc.has_transmit(Leg::Backend) => match permit {
                Ok(permit) => if let Some(pdu) = vc.poll_transmit(Leg::Backend) { permit.send(pdu) },
                Err(_) => break "the backend connection failed".into(),
            },
        }
    };
    // Let each writer drain what it was given, then close every socket.
    drop((in_tx, out_tx, be_tx));
    for task in [in_task, out_task, be_task] {
        crate::framed::finish_writer(task).await;
    }
    outcome
}
