//! The endpoint's table of virtual connections waiting for their second leg.
//!
//! The first leg of a virtual connection (CONN/A2 or CONN/B2) registers its cookie here and
//! becomes the connection's driver; the second leg, which may come through another proxy
//! instance and arrive in either order, finds the entry and hands its socket over. Because
//! pairing happens here, in one process chosen by `server:port`, IN and OUT channels can never
//! be "split" across back ends the way the seed's DSProxy splits them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::BytesMut;
use rpch_proto::Cookie;
use rpch_proto::server::{FirstPdu, Leg};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// One accepted proxy leg, after its first PDU.
#[derive(Debug)]
pub struct LegConn {
    pub stream: TcpStream,
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
    next_generation: u64,
}

impl PairingTable {
    /// Pairs or registers `leg`, which is the `this_leg` leg of virtual connection `vc`.
    pub fn arrive(&self, vc: Cookie, this_leg: Leg, leg: LegConn) -> Arrival {
        let mut inner = match self.inner.lock() {
            Ok(inner) => inner,
            // A poisoned lock means a driver panicked mid-update; the map itself is intact.
            Err(poisoned) => poisoned.into_inner(),
        };
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
        let mut inner = match self.inner.lock() {
            Ok(inner) => inner,
            Err(poisoned) => poisoned.into_inner(),
        };
        if inner
            .waiting
            .get(vc)
            .is_some_and(|w| w.generation == generation)
        {
            inner.waiting.remove(vc);
        }
    }

    /// Virtual connections currently waiting for a leg.
    pub fn waiting(&self) -> usize {
        match self.inner.lock() {
            Ok(inner) => inner.waiting.len(),
            Err(poisoned) => poisoned.into_inner().waiting.len(),
        }
    }
}
