//! The live list behind the status page: one entry per channel a proxy runs and per virtual
//! connection an endpoint bridges, with who, where to, since when and how many bytes.
//!
//! An entry is listed for exactly as long as its [`LiveGuard`] lives; the guard belongs to the
//! task that runs the channel, so a channel that ends in any way (closed, failed, cancelled by
//! a shutdown) leaves the list. Byte counters are relaxed atomics bumped once per PDU.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Instant, SystemTime};

use rpch_proto::cookie::Cookie;

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// An IN channel on a proxy (client to server bytes).
    InChannel,
    /// An OUT channel on a proxy (server to client bytes).
    OutChannel,
    /// A virtual connection bridged by an endpoint to its backend.
    VirtualConnection,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::InChannel => "IN channel",
            Kind::OutChannel => "OUT channel",
            Kind::VirtualConnection => "virtual connection",
        }
    }
}

/// One live channel or virtual connection.
#[derive(Debug)]
pub struct LiveEntry {
    /// The connection id its log lines carry (`conn=`).
    pub conn_id: u64,
    pub kind: Kind,
    pub vc: Cookie,
    /// Who: the HTTP client (proxy) or the proxy of the IN leg (endpoint).
    pub peer: SocketAddr,
    /// The authenticated user (proxy), or the client address CONN/B2 reported (endpoint).
    pub user: String,
    /// The RPC server (proxy) or the backend (endpoint).
    pub target: String,
    pub since: SystemTime,
    pub started: Instant,
    /// Bytes towards the server, and towards the client.
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    /// Channels recycled so far (both directions at an endpoint).
    pub recycles: AtomicU64,
}

impl LiveEntry {
    pub fn add_up(&self, bytes: usize) {
        self.bytes_up.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn add_down(&self, bytes: usize) {
        self.bytes_down.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn recycled(&self) {
        self.recycles.fetch_add(1, Ordering::Relaxed);
    }
}

/// Live entries of one proxy or endpoint, by connection id.
#[derive(Debug, Default)]
pub struct LiveTable {
    entries: Mutex<BTreeMap<u64, Arc<LiveEntry>>>,
}

/// Keeps its entry listed until dropped.
#[derive(Debug)]
pub struct LiveGuard {
    table: Arc<LiveTable>,
    pub entry: Arc<LiveEntry>,
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.table.lock().remove(&self.entry.conn_id);
    }
}

/// What a new entry is about.
#[derive(Debug, Clone)]
pub struct NewEntry {
    pub conn_id: u64,
    pub kind: Kind,
    pub vc: Cookie,
    pub peer: SocketAddr,
    pub user: String,
    pub target: String,
}

impl LiveTable {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Arc<LiveEntry>>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Lists an entry until the returned guard is dropped.
    pub fn register(self: &Arc<Self>, new: NewEntry) -> LiveGuard {
        let entry = Arc::new(LiveEntry {
            conn_id: new.conn_id,
            kind: new.kind,
            vc: new.vc,
            peer: new.peer,
            user: new.user,
            target: new.target,
            since: SystemTime::now(),
            started: Instant::now(),
            bytes_up: AtomicU64::new(0),
            bytes_down: AtomicU64::new(0),
            recycles: AtomicU64::new(0),
        });
        self.lock().insert(entry.conn_id, entry.clone());
        LiveGuard {
            table: self.clone(),
            entry,
        }
    }

    /// The entries now, oldest connection first.
    pub fn snapshot(&self) -> Vec<Arc<LiveEntry>> {
        self.lock().values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_listed_while_its_guard_lives() {
        let table = Arc::new(LiveTable::default());
        let guard = table.register(NewEntry {
            conn_id: 7,
            kind: Kind::InChannel,
            vc: Cookie([1; 16]),
            peer: "127.0.0.1:5000".parse().unwrap(),
            user: "alice".into(),
            target: "mbx1:6001".into(),
        });
        guard.entry.add_up(100);
        guard.entry.add_up(20);
        let listed = table.snapshot();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].bytes_up.load(Ordering::Relaxed), 120);
        drop(guard);
        assert!(table.is_empty());
    }
}
