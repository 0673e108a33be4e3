//! The proxy's table of the channels it runs, by virtual-connection cookie and direction, so
//! that a successor channel request (channel recycling) reaching this proxy instance can be
//! handed to the task that runs its predecessor (IN_R2 / OUT_R2). A successor that finds no
//! entry here runs as an R1 successor of its own.

use std::collections::HashMap;
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use rpch_proto::Cookie;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

/// The read half of a client connection, whatever its transport (TCP or TLS).
pub type ClientRead = Box<dyn AsyncRead + Unpin + Send>;
/// The write half of a client connection.
pub type ClientWrite = Box<dyn AsyncWrite + Unpin + Send>;

/// A successor channel request handed to its predecessor's task.
pub struct Successor {
    pub read: ClientRead,
    pub write: ClientWrite,
    /// Bytes read past the successor's first PDU.
    pub leftover: BytesMut,
    /// The first PDU of the successor's body (IN_R2/A1 or OUT_R2/A3).
    pub first: Bytes,
    /// The request's Content-Length.
    pub body_length: u64,
    pub conn_id: u64,
}

impl std::fmt::Debug for Successor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Successor")
            .field("conn_id", &self.conn_id)
            .finish()
    }
}

/// Where a running channel's task receives its successors.
type SuccessorTx = mpsc::Sender<Box<Successor>>;

/// Which side of a virtual connection a channel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    In,
    Out,
}

/// A successor handed to a task that was already finishing: it must run on its own.
#[derive(Debug)]
pub struct Orphan {
    pub successor: Successor,
    pub direction: Direction,
    pub target: crate::http::Target,
    pub peer: std::net::SocketAddr,
    /// The user its predecessor was authenticated as.
    pub user: String,
}

/// Channels running on this proxy instance.
#[derive(Debug)]
pub struct ChannelTable {
    inner: Mutex<Inner>,
    orphans: mpsc::UnboundedSender<Orphan>,
    /// Taken by the first listener, which runs orphaned successors.
    pub orphan_queue: Mutex<Option<mpsc::UnboundedReceiver<Orphan>>>,
}

impl Default for ChannelTable {
    fn default() -> Self {
        let (orphans, queue) = mpsc::unbounded_channel();
        Self {
            inner: Mutex::default(),
            orphans,
            orphan_queue: Mutex::new(Some(queue)),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Boxed: an mpsc channel allocates its slots 32 at a time, and a successor is large.
    channels: HashMap<(Cookie, Direction), (u64, SuccessorTx)>,
    next_generation: u64,
}

impl ChannelTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(inner) => inner,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Registers a running channel; successors for it arrive on the returned receiver.
    pub fn register(
        &self,
        vc: Cookie,
        direction: Direction,
    ) -> (u64, mpsc::Receiver<Box<Successor>>) {
        let mut inner = self.lock();
        inner.next_generation += 1;
        let generation = inner.next_generation;
        let (tx, rx) = mpsc::channel(2);
        inner.channels.insert((vc, direction), (generation, tx));
        (generation, rx)
    }

    /// Hands a successor to its predecessor's task; gives it back if there is none here.
    pub fn hand_over(
        &self,
        vc: Cookie,
        direction: Direction,
        successor: Successor,
    ) -> Result<(), Successor> {
        let sender = self
            .lock()
            .channels
            .get(&(vc, direction))
            .map(|(_, tx)| tx.clone());
        match sender {
            Some(tx) => tx.try_send(Box::new(successor)).map_err(|e| match e {
                mpsc::error::TrySendError::Full(s) | mpsc::error::TrySendError::Closed(s) => *s,
            }),
            None => Err(successor),
        }
    }

    /// Removes the caller's own registration.
    pub fn forget(&self, vc: &Cookie, direction: Direction, generation: u64) {
        let mut inner = self.lock();
        if inner
            .channels
            .get(&(*vc, direction))
            .is_some_and(|(g, _)| *g == generation)
        {
            inner.channels.remove(&(*vc, direction));
        }
    }

    /// Runs a successor that reached a finishing task as a channel of its own (the race
    /// between a successor's arrival and its predecessor leaving the table).
    pub fn adopt(&self, orphan: Orphan) {
        let _ = self.orphans.send(orphan);
    }

    /// Channels registered now.
    pub fn len(&self) -> usize {
        self.lock().channels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
