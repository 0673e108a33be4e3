//! Receive-window flow control (MS-RPCH 3.2.1.1.4, 3.2.4.1.x): the accounting each sending and
//! receiving hop keeps for one channel instance.
//!
//! Only RPC PDUs count, by `frag_length`; RTS PDUs bypass windows entirely so that a starved
//! channel can still ping, acknowledge and recycle. A receiver acknowledges once the window the
//! sender believes it has drops below half, reporting the bytes received and the free window;
//! the sender then recomputes `available = AvailableWindow - (BytesSent - BytesReceived)`.
//!
//! ```text
//!  sender                                   receiver
//!  SendWindow::on_sent(len)  --RPC PDU-->   ReceiveWindow::on_received(len)   (enforced)
//!                                           ReceiveWindow::on_consumed(len) -> Some(ack)
//!  SendWindow::on_ack(ack)   <--ack-----    (FlowControlAck[WithDestination])
//! ```

use crate::cookie::Cookie;
use crate::error::ProtocolError;
use crate::rts::FlowControlAck;

/// Largest connection-oriented PDU (`frag_length` is a u16). A receiver tolerates this much
/// beyond its window, because a sender may always send one PDU when nothing is in flight
/// (otherwise a window smaller than a negotiated fragment would deadlock).
pub const MAX_PDU_LEN: u64 = 0xFFFF;

/// Smallest receive window MS-RPCH allows (8 KiB).
pub const MIN_WINDOW: u32 = 8 * 1024;

/// What the sender side of a hop may still send.
#[derive(Debug, Clone)]
pub struct SendWindow {
    peer_window: u32,
    available: u64,
    bytes_sent: u64,
    acks_seen: u64,
}

impl SendWindow {
    /// Starts with the window the peer advertised.
    pub fn new(peer_window: u32) -> Self {
        Self {
            peer_window,
            available: peer_window.into(),
            bytes_sent: 0,
            acks_seen: 0,
        }
    }

    /// Bytes that may be sent now.
    pub fn available(&self) -> u64 {
        self.available
    }

    /// RPC bytes sent on this channel instance.
    pub fn bytes_sent(&self) -> u64 {
        self.bytes_sent
    }

    /// How many acknowledgements the peer has sent.
    pub fn acks_seen(&self) -> u64 {
        self.acks_seen
    }

    /// The window the peer advertised.
    pub fn peer_window(&self) -> u32 {
        self.peer_window
    }

    /// Whether an RPC PDU of `len` bytes may go now. A PDU larger than the whole window may go
    /// when the window is fully open, so that nothing can deadlock on a small window.
    pub fn can_send(&self, len: usize) -> bool {
        let len = len as u64;
        self.available >= len || self.available >= u64::from(self.peer_window)
    }

    /// Records `len` RPC bytes sent.
    pub fn on_sent(&mut self, len: usize) {
        self.bytes_sent += len as u64;
        self.available = self.available.saturating_sub(len as u64);
    }

    /// Applies an acknowledgement. Returns false (and changes nothing) for an ack that claims
    /// more bytes than were sent, which no honest peer produces.
    pub fn on_ack(&mut self, ack: &FlowControlAck) -> bool {
        // BytesReceived is a u32 running total; compare within the low 32 bits.
        let sent_low = self.bytes_sent as u32;
        let in_flight = sent_low.wrapping_sub(ack.bytes_received);
        if u64::from(in_flight) > self.bytes_sent {
            return false;
        }
        self.acks_seen += 1;
        self.available = u64::from(ack.available_window).saturating_sub(u64::from(in_flight));
        true
    }
}

/// What the receiver side of a hop has taken in and what it has told the sender.
#[derive(Debug, Clone)]
pub struct ReceiveWindow {
    window: u32,
    bytes_received: u64,
    bytes_consumed: u64,
    /// Total bytes the sender has been allowed to send so far (BytesReceived + AvailableWindow
    /// of the last acknowledgement, or the initial window).
    limit: u64,
}

impl ReceiveWindow {
    /// A receiver advertising `window` bytes.
    pub fn new(window: u32) -> Self {
        Self {
            window,
            bytes_received: 0,
            bytes_consumed: 0,
            limit: window.into(),
        }
    }

    /// The advertised window.
    pub fn window(&self) -> u32 {
        self.window
    }

    /// RPC bytes received and not yet consumed.
    pub fn pending(&self) -> u64 {
        self.bytes_received - self.bytes_consumed
    }

    /// RPC bytes received on this channel instance.
    pub fn bytes_received(&self) -> u64 {
        self.bytes_received
    }

    /// Records an RPC PDU of `len` bytes arriving; refuses a peer that ignores the window.
    pub fn on_received(&mut self, len: usize, channel: &'static str) -> Result<(), ProtocolError> {
        let total = self.bytes_received + len as u64;
        if total > self.limit + MAX_PDU_LEN {
            return Err(ProtocolError::WindowExceeded {
                channel,
                limit: self.limit,
                received: total,
            });
        }
        self.bytes_received = total;
        Ok(())
    }

    /// Records `len` bytes handed on (to the next hop or the RPC layer). Returns the
    /// acknowledgement to send when the sender's view of the window has fallen below half.
    pub fn on_consumed(&mut self, len: usize, channel_cookie: Cookie) -> Option<FlowControlAck> {
        self.bytes_consumed = (self.bytes_consumed + len as u64).min(self.bytes_received);
        let sender_view = self.limit.saturating_sub(self.bytes_received);
        let available = u64::from(self.window).saturating_sub(self.pending());
        let new_limit = self.bytes_received + available;
        if sender_view < u64::from(self.window / 2) && new_limit > self.limit {
            self.limit = new_limit;
            Some(FlowControlAck {
                bytes_received: self.bytes_received as u32,
                available_window: available as u32,
                channel_cookie,
            })
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(bytes_received: u32, available_window: u32) -> FlowControlAck {
        FlowControlAck {
            bytes_received,
            available_window,
            channel_cookie: Cookie::default(),
        }
    }

    #[test]
    fn spec_worked_example() {
        // MS-RPCH 3.2.1.1.4 example with a 1000-byte window.
        let mut send = SendWindow::new(1000);
        send.on_sent(250);
        send.on_sent(500);
        assert_eq!(send.available(), 250);
        assert!(send.on_ack(&ack(250, 850)));
        assert_eq!(send.available(), 350);
    }

    #[test]
    fn sender_blocks_at_the_window_but_never_deadlocks_on_a_big_pdu() {
        let mut send = SendWindow::new(8192);
        assert!(
            send.can_send(10_000),
            "an open window lets one oversized PDU through"
        );
        send.on_sent(10_000);
        assert!(!send.can_send(1));
        assert!(send.on_ack(&ack(10_000, 8192)));
        assert!(send.can_send(8192));
    }

    #[test]
    fn bogus_ack_is_ignored() {
        let mut send = SendWindow::new(1000);
        send.on_sent(100);
        assert!(!send.on_ack(&ack(500, 1000)));
        assert_eq!(send.available(), 900);
    }

    #[test]
    fn receiver_acks_below_half_and_enforces_the_window() {
        let mut recv = ReceiveWindow::new(1000);
        recv.on_received(400, "test").unwrap();
        assert_eq!(
            recv.on_consumed(400, Cookie::default()),
            None,
            "600 left: above half"
        );
        recv.on_received(200, "test").unwrap();
        let a = recv.on_consumed(200, Cookie::default()).unwrap();
        assert_eq!((a.bytes_received, a.available_window), (600, 1000));
        // The sender may now send up to 1600 in total (+ one PDU of slack).
        recv.on_received(1000, "test").unwrap();
        let err = recv
            .on_received(MAX_PDU_LEN as usize + 1, "test")
            .unwrap_err();
        assert!(matches!(err, ProtocolError::WindowExceeded { .. }));
    }

    #[test]
    fn sender_and_receiver_agree_over_a_long_transfer() {
        let mut send = SendWindow::new(65_536);
        let mut recv = ReceiveWindow::new(65_536);
        let mut in_flight = std::collections::VecDeque::new();
        let mut delivered = 0u64;
        for step in 0..100_000u64 {
            let len = 1 + (step * 7919 % 5000) as usize;
            if send.can_send(len) {
                send.on_sent(len);
                recv.on_received(len, "test").unwrap();
                in_flight.push_back(len);
            }
            if step % 3 == 0
                && let Some(len) = in_flight.pop_front()
            {
                delivered += len as u64;
                if let Some(a) = recv.on_consumed(len, Cookie::default()) {
                    assert!(send.on_ack(&a));
                }
            }
        }
        assert!(delivered > 10_000_000, "flow kept moving: {delivered}");
    }
}
