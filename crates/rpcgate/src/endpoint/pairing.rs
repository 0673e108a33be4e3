//! The endpoint's table of virtual connections waiting for their second leg.
//!
//! The first leg of a virtual connection (CONN/A2 or CONN/B2) registers its cookie here and
//! becomes the connection's driver; the second leg, which may come through another proxy
//! instance and arrive in either order, finds the entry and hands its socket over. Because
//! pairing happens here, in one process chosen by `server:port`, IN and OUT channels can never
//! be "split" across back ends the way the seed's DSProxy splits them.
//!
//! Once paired, the driver registers the connection as live, so that successor legs from
//! channel recycling through another proxy (IN_R1/A2, OUT_R1/A4) find it too.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use rpch_proto::Cookie;
use rpch_proto::server::{FirstPdu, Leg};
use tokio::sync::{mpsc, oneshot};

/// One accepted proxy leg, after its first PDU.
#[derive(Debug)]
pub struct LegConn {
    pub stream: crate::leg_stream::LegStream,
    /// Bytes read past the first PDU.
    pub leftover: BytesMut,
    pub first: FirstPdu,
    pub peer: SocketAddr,
    pub conn_id: u64,
}

#[derive(Debug)]
struct Waiting {
    /// The leg the registered connection still needs.
    needs: Leg,
    /// Tells a registration apart from a later one under the same cookie.
    generation: u64,
    deliver: oneshot::Sender<LegConn>,
}

/// What became of an arriving leg.
#[derive(Debug)]
pub enum Arrival {
    /// First of its pair: the caller drives the connection and waits on `second`.
    First {
        leg: LegConn,
        generation: u64,
        second: oneshot::Receiver<LegConn>,
    },
    /// Second of its pair: handed to the driver.
    Delivered,
    /// A leg of the same kind already waits under this cookie: refused.
    Duplicate(LegConn),
}

/// Virtual connections with one leg, keyed by virtual-connection cookie.
#[derive(Debug, Clone, Default)]
pub struct PairingTable {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    waiting: HashMap<Cookie, Waiting>,
    /// Boxed: an mpsc channel allocates its slots 32 at a time, and a leg is large.
    live: HashMap<Cookie, (u64, mpsc::Sender<Box<LegConn>>)>,
    next_generation: u64,
}

/// Successor legs queued for one live virtual connection at most.
const SUCCESSOR_QUEUE: usize = 4;

impl PairingTable {
    /// Pairs or registers `leg`, which is the `this_leg` leg of virtual connection `vc`.
    pub fn arrive(&self, vc: Cookie, this_leg: Leg, leg: LegConn) -> Arrival {
        let mut inner = self.lock();
        let mut leg = leg;
        if let Some(waiting) = inner.waiting.remove(&vc) {
            if waiting.needs != this_leg {
                inner.waiting.insert(vc, waiting);
                return Arrival::Duplicate(leg);
            }
            match waiting.deliver.send(leg) {
                Ok(()) => return Arrival::Delivered,
                // The driver gave up in the meantime: this leg starts afresh.
                Err(returned) => leg = returned,
            }
        }
        inner.next_generation += 1;
        let generation = inner.next_generation;
        let (deliver, second) = oneshot::channel();
        let needs = match this_leg {
            Leg::In => Leg::Out,
            _ => Leg::In,
        };
        inner.waiting.insert(
            vc,
            Waiting {
                needs,
                generation,
                deliver,
            },
        );
        Arrival::First {
            leg,
            generation,
            second,
        }
    }

    /// Removes the entry of a driver that stopped waiting (only its own registration).
    pub fn forget(&self, vc: &Cookie, generation: u64) {
        let mut inner = self.lock();
        if inner
            .waiting
            .get(vc)
            .is_some_and(|w| w.generation == generation)
        {
            inner.waiting.remove(vc);
        }
    }

    /// Registers a paired virtual connection so that recycled legs can reach its driver.
    pub fn register_live(&self, vc: Cookie) -> (u64, mpsc::Receiver<Box<LegConn>>) {
        let mut inner = self.lock();
        inner.next_generation += 1;
        let generation = inner.next_generation;
        let (tx, rx) = mpsc::channel(SUCCESSOR_QUEUE);
        inner.live.insert(vc, (generation, tx));
        (generation, rx)
    }

    /// Hands a successor leg to the live virtual connection `vc`; gives it back if none.
    #[allow(clippy::result_large_err)] // the leg comes back only on the rare refusal
    pub fn route_successor(&self, vc: Cookie, leg: LegConn) -> Result<(), LegConn> {
        let sender = self.lock().live.get(&vc).map(|(_, tx)| tx.clone());
        match sender {
            Some(tx) => tx.try_send(Box::new(leg)).map_err(|e| match e {
                mpsc::error::TrySendError::Full(leg) | mpsc::error::TrySendError::Closed(leg) => {
                    *leg
                }
            }),
            None => Err(leg),
        }
    }

    /// Removes a live registration (only the caller's own).
    pub fn forget_live(&self, vc: &Cookie, generation: u64) {
        let mut inner = self.lock();
        if inner.live.get(vc).is_some_and(|(g, _)| *g == generation) {
            inner.live.remove(vc);
        }
    }

    /// Virtual connections currently paired and running.
    pub fn live(&self) -> usize {
        self.lock().live.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(inner) => inner,
            // A poisoned lock means a driver panicked mid-update; the maps are intact.
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Virtual connections currently waiting for a leg.
    pub fn waiting(&self) -> usize {
        self.lock().waiting.len()
    }
}
