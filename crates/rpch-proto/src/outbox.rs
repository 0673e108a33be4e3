//! Queues of encoded PDUs waiting for a role's I/O shell to write them.
//!
//! Each role keeps RTS PDUs and RPC PDUs apart per destination: RTS PDUs are never held back by
//! flow control, RPC PDUs wait for the window. [`Outbox`] counts queued bytes so a role can
//! apply back-pressure (stop asking for input) before memory grows.

use std::collections::VecDeque;

use bytes::Bytes;

/// A FIFO of encoded PDUs with a running byte count.
#[derive(Debug, Default)]
pub struct Outbox {
    queue: VecDeque<Bytes>,
    bytes: usize,
}

impl Outbox {
    pub fn push(&mut self, pdu: Bytes) {
        self.bytes += pdu.len();
        self.queue.push_back(pdu);
    }

    pub fn pop(&mut self) -> Option<Bytes> {
        let pdu = self.queue.pop_front()?;
        self.bytes -= pdu.len();
        Some(pdu)
    }

    pub fn front_len(&self) -> Option<usize> {
        self.queue.front().map(Bytes::len)
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Replaces the last queued PDU with `pdu` if `matches` says so; false if nothing changed.
    pub fn replace_last_if(&mut self, pdu: Bytes, matches: impl FnOnce(&Bytes) -> bool) -> bool {
        match self.queue.back_mut() {
            Some(last) if matches(last) => {
                self.bytes = self.bytes - last.len() + pdu.len();
                *last = pdu;
                true
            }
            _ => false,
        }
    }

    pub fn clear(&mut self) {
        self.queue.clear();
        self.bytes = 0;
    }
}
