//! One virtual connection at the endpoint: pairs the two legs and bridges RPC PDUs between them
//! and one ncacn_ip_tcp connection to the backend, driving [`ServerVc`].
//!
//! The driver task is the first leg's task. It waits (bounded by the setup timeout) for the
//! second leg, opens the backend connection, registers the connection as live (so successor
//! legs from channel recycling reach it), then loops: feed PDUs read from the legs and the
//! backend into the state machine (reading the IN leg and the backend only while it wants
//! more, which is the back-pressure), hand whatever it has ready to each socket's writer task,
//! and follow recycling: attach successor legs, retire predecessors once their last PDUs are
//! written. Whichever side ends first ends every connection of the virtual connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use rpch_proto::Cookie;
use rpch_proto::server::{Dest, Leg, LegId, ServerConfig, ServerEvent, ServerVc};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;
use tokio::sync::{mpsc, oneshot};
use tracing::{Instrument, debug, info, info_span, warn};

use super::Endpoint;
use super::pairing::LegConn;
use crate::connect::{TCP_KEEPALIVE_IDLE, connect, tune_socket};
use crate::framed::{PduReader, ReadError, WriterTask, WriterTx, finish_writer, spawn_writer};
use crate::status::live::{Kind, LiveEntry, LiveGuard, NewEntry};

/// Drives the virtual connection whose first leg is `first`.
pub async fn drive(
    endpoint: Arc<Endpoint>,
    first: LegConn,
    this_leg: Leg,
    generation: u64,
    second: oneshot::Receiver<LegConn>,
) {
    let Some(vc_cookie) = first.first.vc() else {
        return;
    };
    let span = info_span!("vc", vc = %vc_cookie);
    async move {
        let config = ServerConfig {
            receive_window: endpoint.settings.receive_window,
            setup_timeout: endpoint.settings.setup_timeout,
        };
        let first_id = LegId(first.conn_id);
        let mut vc = match ServerVc::new(config, &first.first, first_id, Instant::now()) {
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
                    Leg::Out => "IN",
                },
                endpoint.settings.setup_timeout.as_secs()
            );
            return;
        };
        if let Err(e) = vc.complete(&second.first, LegId(second.conn_id)) {
            warn!("closing: pairing failed: {e}");
            return;
        }
        let (in_leg, out_leg) = match this_leg {
            Leg::In => (first, second),
            Leg::Out => (second, first),
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
        let (bridged, successors) = Bridged::open(
            &endpoint,
            NewEntry {
                conn_id: in_leg.conn_id,
                kind: Kind::VirtualConnection,
                vc: vc_cookie,
                peer: in_leg.peer,
                user: vc
                    .client_address()
                    .map_or_else(|| "-".into(), |a| a.to_string()),
                target: backend.to_string(),
            },
        );
        let started = Instant::now();
        let outcome = Bridge::new(
            vc_cookie,
            in_leg,
            out_leg,
            backend_stream,
            endpoint.settings.setup_timeout,
            bridged.live.entry.clone(),
        )
        .run(&mut vc, successors)
        .await;
        drop(bridged);
        let (in_recycles, out_recycles) = vc.recycles();
        info!(
            seconds = started.elapsed().as_secs_f64(),
            in_recycles, out_recycles, "virtual connection closed: {outcome}"
        );
    }
    .instrument(span)
    .await;
}

/// A virtual connection bridged to the backend: in the live table (successor legs find it
/// there), counted in `vcs_active` and listed on the status page until dropped, however its
/// task ends (closed, failed or cancelled by a shutdown).
struct Bridged {
    endpoint: Arc<Endpoint>,
    vc: Cookie,
    generation: u64,
    live: LiveGuard,
}

impl Bridged {
    fn open(endpoint: &Arc<Endpoint>, entry: NewEntry) -> (Self, mpsc::Receiver<Box<LegConn>>) {
        let vc = entry.vc;
        endpoint.stats.vcs_active.fetch_add(1, Ordering::Relaxed);
        let (generation, successors) = endpoint.table.register_live(vc);
        let live = endpoint.live.register(entry);
        let bridged = Self {
            endpoint: endpoint.clone(),
            vc,
            generation,
            live,
        };
        (bridged, successors)
    }
}

impl Drop for Bridged {
    fn drop(&mut self) {
        self.endpoint.table.forget_live(&self.vc, self.generation);
        self.endpoint
            .stats
            .vcs_active
            .fetch_sub(1, Ordering::Relaxed);
    }
}

type LegReader = PduReader<crate::leg_stream::LegRead>;

/// A reader slot: which leg it reads, if any.
type Slot = Option<(LegId, LegReader)>;

/// The sockets of one virtual connection.
struct Bridge {
    vc: Cookie,
    /// Readers: IN, IN successor, OUT, OUT successor, and the retired IN and OUT legs.
    slots: [Slot; 6],
    writers: HashMap<LegId, (WriterTx, WriterTask)>,
    /// Legs retired by recycling, with the time by which their proxy must have closed them.
    /// They stay open until then: an outbound proxy draining its old channel still needs
    /// the client's acknowledgements, which we forward to it.
    closing: Vec<(LegId, tokio::time::Instant)>,
    retire_grace: std::time::Duration,
    backend_reader: PduReader<OwnedReadHalf>,
    backend_tx: WriterTx,
    backend_task: WriterTask,
    /// The status page's entry: bytes each way, recyclings.
    live: Arc<LiveEntry>,
}

const IN: usize = 0;
const IN_NEXT: usize = 1;
const OUT: usize = 2;
const OUT_NEXT: usize = 3;
const IN_OLD: usize = 4;
const OUT_OLD: usize = 5;

async fn read_slot(slot: &mut Slot) -> (LegId, Result<Option<Bytes>, ReadError>) {
    match slot {
        Some((id, reader)) => (*id, reader.next().await),
        None => std::future::pending().await,
    }
}

impl Bridge {
    fn new(
        vc: Cookie,
        in_leg: LegConn,
        out_leg: LegConn,
        backend: TcpStream,
        retire_grace: std::time::Duration,
        live: Arc<LiveEntry>,
    ) -> Self {
        let (be_r, be_w) = backend.into_split();
        let (backend_tx, backend_task) = spawn_writer(be_w);
        let mut bridge = Self {
            vc,
            slots: [None, None, None, None, None, None],
            writers: HashMap::new(),
            closing: Vec::new(),
            retire_grace,
            backend_reader: PduReader::new(be_r, BytesMut::new()),
            backend_tx,
            backend_task,
            live,
        };
        bridge.add(IN, in_leg);
        bridge.add(OUT, out_leg);
        bridge
    }

    fn add(&mut self, slot: usize, leg: LegConn) {
        let id = LegId(leg.conn_id);
        let (r, w) = leg.stream.into_split();
        if let Some(s) = self.slots.get_mut(slot) {
            *s = Some((id, PduReader::new(r, leg.leftover)));
        }
        self.writers.insert(id, spawn_writer(w));
    }

    /// The reader slot of leg `id`.
    fn slot_of(&self, id: LegId) -> Option<usize> {
        self.slots
            .iter()
            .position(|s| s.as_ref().is_some_and(|(leg, _)| *leg == id))
    }

    /// Hands ready PDUs to writers without waiting. Returns a leg whose writer is full while
    /// the machine has more for it (to wait on), or an error if a writer died.
    fn flush(&mut self, vc: &mut ServerVc) -> Result<Option<(LegId, WriterTx)>, String> {
        // Handing one PDU on can make another ready (an ack for the IN leg when the backend
        // takes data, a recycling PDU): repeat until a pass moves nothing.
        loop {
            let (blocked, moved) = self.flush_pass(vc)?;
            if !moved {
                return Ok(blocked);
            }
        }
    }

    fn flush_pass(
        &mut self,
        vc: &mut ServerVc,
    ) -> Result<(Option<(LegId, WriterTx)>, bool), String> {
        let now = Instant::now();
        let mut blocked = None;
        let mut moved = false;
        for (id, (tx, _)) in &self.writers {
            while vc.has_transmit(Dest::Leg(*id)) {
                match tx.try_reserve() {
                    Ok(permit) => {
                        if let Some(pdu) = vc.poll_transmit(Dest::Leg(*id), now) {
                            permit.send(pdu);
                            moved = true;
                        }
                    }
                    Err(mpsc::error::TrySendError::Full(())) => {
                        blocked.get_or_insert((*id, tx.clone()));
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(())) => {
                        return Err(format!("writing to leg {} failed", id.0));
                    }
                }
            }
        }
        while vc.has_transmit(Dest::Backend) {
            match self.backend_tx.try_reserve() {
                Ok(permit) => {
                    if let Some(pdu) = vc.poll_transmit(Dest::Backend, now) {
                        self.live.add_up(pdu.len());
                        permit.send(pdu);
                        moved = true;
                    }
                }
                Err(mpsc::error::TrySendError::Full(())) => break,
                Err(mpsc::error::TrySendError::Closed(())) => {
                    return Err("writing to the backend failed".into());
                }
            }
        }
        // Retired legs whose proxy never closed them are closed at their deadline.
        let now = tokio::time::Instant::now();
        let overdue: Vec<LegId> = self
            .closing
            .iter()
            .filter(|(_, deadline)| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in overdue {
            self.close_retired(vc, id);
        }
        Ok((blocked, moved))
    }

    /// Drops a retired leg: its proxy closed it, or its time ran out.
    fn close_retired(&mut self, vc: &mut ServerVc, id: LegId) {
        self.closing.retain(|(c, _)| *c != id);
        if let Some((tx, task)) = self.writers.remove(&id) {
            drop(tx);
            crate::tasks::spawn(finish_writer(task));
        }
        if let Some(slot) = self.slot_of(id).and_then(|i| self.slots.get_mut(i)) {
            *slot = None;
        }
        let _ = vc.leg_closed(id);
        debug!(leg = id.0, "retired leg closed");
    }

    fn on_event(&mut self, event: ServerEvent) {
        match event {
            ServerEvent::CloseLeg(id) => {
                // Keep reading it (to see its proxy close it) in the retired slot.
                let retired_slot = match self.slot_of(id) {
                    Some(IN) | Some(IN_NEXT) | Some(IN_OLD) => IN_OLD,
                    _ => OUT_OLD,
                };
                let reader = self
                    .slot_of(id)
                    .and_then(|i| self.slots.get_mut(i))
                    .and_then(Option::take);
                if let Some(old) = self.slots.get_mut(retired_slot) {
                    // A still older retired leg is given up in favour of the newer one.
                    if let Some((older, _)) = old.take() {
                        self.closing.retain(|(c, _)| *c != older);
                        if let Some((tx, task)) = self.writers.remove(&older) {
                            drop(tx);
                            crate::tasks::spawn(finish_writer(task));
                        }
                    }
                    *old = reader;
                }
                self.closing
                    .push((id, tokio::time::Instant::now() + self.retire_grace));
            }
            ServerEvent::Recycled { leg, r1 } => {
                info!(leg = ?leg, r1, "channel recycled");
                self.live.recycled();
                let (current, next) = match leg {
                    Leg::In => (IN, IN_NEXT),
                    Leg::Out => (OUT, OUT_NEXT),
                };
                if r1 {
                    let successor = self.slots.get_mut(next).and_then(Option::take);
                    if let Some(slot) = self.slots.get_mut(current) {
                        *slot = successor;
                    }
                }
            }
        }
    }

    /// Bridges until one side ends; returns why it ended.
    async fn run(
        mut self,
        vc: &mut ServerVc,
        mut successors: mpsc::Receiver<Box<LegConn>>,
    ) -> String {
        let outcome = loop {
            while let Some(event) = vc.poll_event() {
                self.on_event(event);
            }
            let blocked = match self.flush(vc) {
                Ok(blocked) => blocked,
                Err(why) => break why,
            };
            let deadline = vc.poll_timeout().map(tokio::time::Instant::from_std);
            let wants_in = vc.wants_in_data();
            let wants_backend = vc.wants_backend_data();
            let closing_deadline = self.closing.iter().map(|(_, d)| *d).min();
            let [in_slot, in_next, out_slot, out_next, in_old, out_old] = &mut self.slots;
            let read = tokio::select! {
                read = read_slot(in_slot), if in_slot.is_some() && wants_in => read,
                read = read_slot(in_next), if in_next.is_some() => read,
                read = read_slot(out_slot), if out_slot.is_some() => read,
                read = read_slot(out_next), if out_next.is_some() => read,
                read = read_slot(in_old), if in_old.is_some() => read,
                read = read_slot(out_old), if out_old.is_some() => read,
                () = async {
                    match closing_deadline {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                }, if closing_deadline.is_some() => continue,
                read = self.backend_reader.next(), if wants_backend => {
                    match read {
                        Ok(Some(pdu)) => {
                            self.live.add_down(pdu.len());
                            match vc.handle_backend_pdu(pdu) {
                                Ok(()) => continue,
                                Err(e) => break format!("backend: {e}"),
                            }
                        }
                        Ok(None) => break "the backend closed the connection".into(),
                        Err(e) => break format!("backend: {e}"),
                    }
                }
                leg = successors.recv() => {
                    let Some(leg) = leg.map(|leg| *leg) else { continue };
                    let id = LegId(leg.conn_id);
                    let slot = match leg.first {
                        rpch_proto::server::FirstPdu::InR1A2(_) => IN_NEXT,
                        _ => OUT_NEXT,
                    };
                    if let Err(e) = vc.attach_leg(&leg.first, id, Instant::now()) {
                        break format!("successor leg from {}: {e}", leg.peer);
                    }
                    info!(leg = id.0, peer = %leg.peer, "successor leg attached (recycling through another proxy)");
                    self.add(slot, leg);
                    continue;
                }
                permit = async {
                    match &blocked {
                        Some((_, tx)) => tx.reserve().await,
                        None => std::future::pending().await,
                    }
                }, if blocked.is_some() => {
                    let Some((id, _)) = blocked else { continue };
                    match permit {
                        Ok(permit) => {
                            if let Some(pdu) = vc.poll_transmit(Dest::Leg(id), Instant::now()) {
                                permit.send(pdu);
                            }
                            continue;
                        }
                        Err(_) => break format!("writing to leg {} failed", id.0),
                    }
                }
                () = async {
                    match deadline {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                }, if deadline.is_some() => {
                    match vc.handle_timeout(Instant::now()) {
                        Ok(()) => continue,
                        Err(e) => break e.to_string(),
                    }
                }
            };
            let (leg, result) = read;
            match result {
                Ok(Some(pdu)) => {
                    if let Err(e) = vc.handle_pdu(leg, pdu) {
                        break format!("leg {}: {e}", leg.0);
                    }
                }
                Ok(None) | Err(_) => {
                    let why = match result {
                        Err(e) => e.to_string(),
                        _ => "closed".into(),
                    };
                    if self.closing.iter().any(|(c, _)| *c == leg) {
                        self.close_retired(vc, leg);
                        continue;
                    }
                    if let Some(slot) = self.slot_of(leg).and_then(|i| self.slots.get_mut(i)) {
                        *slot = None;
                    }
                    if let Err(e) = vc.leg_closed(leg) {
                        break format!("leg {} {why}: {e}", leg.0);
                    }
                }
            }
        };
        self.shutdown().await;
        let _ = self.vc;
        outcome
    }

    /// Lets each writer drain what it was given, then closes every socket.
    async fn shutdown(self) {
        drop(self.backend_tx);
        let mut tasks: Vec<WriterTask> = vec![self.backend_task];
        for (_, (tx, task)) in self.writers {
            drop(tx);
            tasks.push(task);
        }
        for task in tasks {
            finish_writer(task).await;
        }
    }
}
