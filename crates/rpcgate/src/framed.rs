//! Moving whole PDUs over byte streams: the only place the shell turns bytes into PDUs.
//!
//! [`PduReader`] reads from any `AsyncRead`, buffers at most one PDU (64 KiB, the largest a
//! u16 `frag_length` allows) plus one read, and hands out framed PDUs; it optionally skips the
//! 14-byte `ncacn_http/1.0` legacy greeting a server leg may start with, and optionally stops at
//! an HTTP body's Content-Length. [`spawn_writer`] runs a task that writes queued PDUs in order,
//! coalescing whatever is queued into few writes, so a slow peer never blocks reading elsewhere.

use bytes::{Bytes, BytesMut};
use rpch_proto::DecodeError;
use rpch_proto::pdu::split_pdu;
use rpch_proto::server::LEGACY_GREETING;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Bytes asked of the socket per read at first, and the most asked when reads keep filling
/// the buffer (bulk transfer). Starting small keeps an idle connection's reader at a few KiB:
/// a gateway holds thousands of them, each mostly carrying pings.
const READ_MIN: usize = 2 * 1024;
const READ_MAX: usize = 64 * 1024;
/// An empty read buffer larger than this is given back rather than kept for the next read.
const READ_KEEP: usize = READ_MIN;
/// Bytes (and buffers) a writer gathers into one write.
const WRITE_BATCH: usize = 256 * 1024;
const WRITE_BATCH_BUFFERS: usize = 16;

/// Why a PDU stream ended or failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed PDU: {0}")]
    Decode(#[from] DecodeError),
    #[error("connection closed in the middle of a PDU ({0} bytes buffered)")]
    TruncatedPdu(usize),
    #[error("a PDU would run past the end of the HTTP body (Content-Length {0})")]
    PastBodyEnd(u64),
    #[error("the server leg did not start with a PDU or the ncacn_http/1.0 greeting")]
    BadGreeting,
}

/// A framing reader over one direction of a connection.
#[derive(Debug)]
pub struct PduReader<R> {
    inner: R,
    buf: BytesMut,
    /// Body bytes still allowed (HTTP Content-Length), if bounded.
    body_remaining: Option<u64>,
    body_length: u64,
    skip_greeting: bool,
    bytes_read: u64,
    /// Bytes the next read asks for: doubles while reads fill it, halves when they do not.
    read_size: usize,
}

impl<R: AsyncRead + Unpin> PduReader<R> {
    /// Reads PDUs from `inner`, starting with `leftover` bytes already read past an HTTP head.
    pub fn new(inner: R, leftover: BytesMut) -> Self {
        Self {
            inner,
            buf: leftover,
            body_remaining: None,
            body_length: 0,
            skip_greeting: false,
            bytes_read: 0,
            read_size: READ_MIN,
        }
    }

    /// Stops at `content_length` bytes (counting the leftover bytes too).
    pub fn with_body_length(mut self, content_length: u64) -> Self {
        self.body_remaining = Some(content_length);
        self.body_length = content_length;
        self
    }

    /// Tolerates the 14-byte legacy greeting before the first PDU (server legs).
    pub fn skipping_legacy_greeting(mut self) -> Self {
        self.skip_greeting = true;
        self
    }

    /// Bytes of PDUs handed out so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read
    }

    /// The next whole PDU; `Ok(None)` on a clean end (EOF or the body's end at a PDU boundary).
    pub async fn next(&mut self) -> Result<Option<Bytes>, ReadError> {
        loop {
            if self.skip_greeting && !self.buf.is_empty() {
                // A PDU starts with 0x05; the greeting with 'n'. Either is fine, once.
                if self.buf.first() == Some(&LEGACY_GREETING[0]) {
                    if self.buf.len() < LEGACY_GREETING.len() {
                        if !self.fill().await? {
                            return Err(ReadError::BadGreeting);
                        }
                        continue;
                    }
                    if self.buf.get(..LEGACY_GREETING.len()) != Some(&LEGACY_GREETING[..]) {
                        return Err(ReadError::BadGreeting);
                    }
                    let _ = self.buf.split_to(LEGACY_GREETING.len());
                }
                self.skip_greeting = false;
                continue;
            }
            if self.body_remaining == Some(0) {
                // The body is complete; anything buffered belongs to the next request.
                return Ok(None);
            }
            if let Some(pdu) = split_pdu(&mut self.buf)? {
                let len = pdu.len() as u64;
                if let Some(remaining) = self.body_remaining.as_mut() {
                    if len > *remaining {
                        return Err(ReadError::PastBodyEnd(self.body_length));
                    }
                    *remaining -= len;
                }
                self.bytes_read += len;
                return Ok(Some(pdu));
            }
            if !self.fill().await? {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(ReadError::TruncatedPdu(self.buf.len()))
                };
            }
        }
    }

    /// Reads more bytes; false on EOF.
    async fn fill(&mut self) -> Result<bool, ReadError> {
        if self.buf.is_empty() && self.buf.capacity() > READ_KEEP {
            // Everything read was handed out: let the allocation go with those PDUs rather
            // than pin it to a connection that may now sit idle for hours.
            self.buf = BytesMut::new();
        }
        self.buf.reserve(self.read_size);
        let room = self.buf.capacity() - self.buf.len();
        let n = self.inner.read_buf(&mut self.buf).await?;
        if n >= room {
            self.read_size = (self.read_size * 2).min(READ_MAX);
        } else if n < self.read_size / 4 {
            self.read_size = (self.read_size / 2).max(READ_MIN);
        }
        Ok(n > 0)
    }

    /// After the body is complete: waits for the peer to close. `Ok(true)` on a clean close,
    /// `Ok(false)` if it sent more bytes instead (a protocol violation for a channel body).
    pub async fn wait_closed(&mut self) -> std::io::Result<bool> {
        if !self.buf.is_empty() {
            return Ok(false);
        }
        let mut scratch = [0u8; 64];
        let n = self.inner.read(&mut scratch).await?;
        Ok(n == 0)
    }

    /// Whether the body (if bounded) has been read completely.
    pub fn body_done(&self) -> bool {
        self.body_remaining == Some(0)
    }

    /// Gives back the reader and anything buffered but not yet handed out.
    pub fn into_parts(self) -> (R, BytesMut) {
        (self.inner, self.buf)
    }
}

/// A handle to a writer task: send PDUs (or any bytes) to be written in order.
pub type WriterTx = mpsc::Sender<Bytes>;

/// Number of queued writes per writer; each is at most one PDU (64 KiB) or an HTTP head.
pub const WRITER_QUEUE: usize = 32;

/// A writer task: bytes written, or the write error; `None` when its scope shut it down.
pub type WriterTask = JoinHandle<Option<std::io::Result<u64>>>;

/// Spawns a task that writes everything sent to the returned sender, in order, then shuts the
/// stream down when the sender is dropped. The task ends early on a write error; senders then
/// see a closed channel. It belongs to the calling task's scope ([`crate::tasks`]).
///
/// Whatever is already queued goes out in one vectored write (no copy), or, on a stream that
/// cannot write vectors, copied into one buffer: fewer syscalls and TLS records either way.
pub fn spawn_writer<W>(mut writer: W) -> (WriterTx, WriterTask)
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (tx, mut rx) = mpsc::channel::<Bytes>(WRITER_QUEUE);
    let task = crate::tasks::spawn(async move {
        let mut written = 0u64;
        let mut queue: Vec<Bytes> = Vec::new();
        let mut copy = BytesMut::new();
        let vectored = writer.is_write_vectored();
        while let Some(first) = rx.recv().await {
            let mut queued = first.len();
            queue.push(first);
            while queued < WRITE_BATCH && queue.len() < WRITE_BATCH_BUFFERS {
                match rx.try_recv() {
                    Ok(more) => {
                        queued += more.len();
                        queue.push(more);
                    }
                    Err(_) => break,
                }
            }
            if vectored || queue.len() == 1 {
                write_all_vectored(&mut writer, &mut queue).await?;
            } else {
                for bytes in queue.drain(..) {
                    copy.extend_from_slice(&bytes);
                }
                writer.write_all(&copy).await?;
                copy = BytesMut::new();
            }
            writer.flush().await?;
            written += queued as u64;
            queue.clear();
        }
        let _ = writer.shutdown().await;
        Ok(written)
    });
    (tx, task)
}

/// Writes every buffer of `bufs`, in order, with as few vectored writes as the stream takes.
async fn write_all_vectored<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bufs: &mut [Bytes],
) -> std::io::Result<()> {
    let mut first = 0;
    loop {
        while bufs.get(first).is_some_and(Bytes::is_empty) {
            first += 1;
        }
        let mut slices = [std::io::IoSlice::new(&[]); WRITE_BATCH_BUFFERS];
        let mut count = 0;
        for (slot, buf) in slices.iter_mut().zip(bufs.iter().skip(first)) {
            *slot = std::io::IoSlice::new(buf);
            count += 1;
        }
        if count == 0 {
            return Ok(());
        }
        let mut n = writer
            .write_vectored(slices.get(..count).unwrap_or_default())
            .await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while let Some(head) = bufs.get_mut(first) {
            if n >= head.len() {
                n -= head.len();
                first += 1;
            } else {
                bytes::Buf::advance(head, n);
                break;
            }
        }
    }
}

/// Logs an RTS PDU by name at debug level, with `direction` (RPC PDUs are too many to log):
/// `RUST_LOG=rpcgate=debug` then shows every handshake and recycling step.
pub fn log_rts(direction: &str, pdu: &[u8]) {
    if rpch_proto::pdu::is_rts(pdu) && tracing::enabled!(tracing::Level::DEBUG) {
        let name = rpch_proto::rts::RtsPdu::decode(pdu).map_or("bad RTS", |r| r.name());
        tracing::debug!("{direction}: {name}");
    }
}

/// How long a closing connection may take to write out what it was given.
pub const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits for a writer whose sender was dropped to drain and close, at most [`DRAIN_TIMEOUT`]
/// (a peer that stopped reading must not keep the task alive); aborts it after that.
pub async fn finish_writer(task: WriterTask) {
    let abort = task.abort_handle();
    match tokio::time::timeout(DRAIN_TIMEOUT, task).await {
        Ok(Ok(Some(Err(e)))) => tracing::debug!("writer ended with {e}"),
        Ok(_) => {}
        Err(_) => abort.abort(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rpch_proto::rts::build;

    #[tokio::test]
    async fn reads_pdus_across_reads_and_skips_the_greeting() {
        let ping = build::ping().encode();
        let mut wire = LEGACY_GREETING.to_vec();
        wire.extend_from_slice(&ping);
        wire.extend_from_slice(&ping);
        let (mut a, b) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            for chunk in wire.chunks(3) {
                a.write_all(chunk).await.unwrap();
            }
        });
        let mut reader = PduReader::new(b, BytesMut::new()).skipping_legacy_greeting();
        assert_eq!(reader.next().await.unwrap().unwrap(), ping);
        assert_eq!(reader.next().await.unwrap().unwrap(), ping);
        writer.await.unwrap();
        assert!(reader.next().await.unwrap().is_none());
    }

    #[tokio::test]
    async fn a_greeting_is_optional_and_garbage_is_refused() {
        let ping = build::ping().encode();
        let mut reader = PduReader::new(&ping[..], BytesMut::new()).skipping_legacy_greeting();
        assert_eq!(reader.next().await.unwrap().unwrap(), ping);

        let mut reader =
            PduReader::new(&b"nonsense-and-more"[..], BytesMut::new()).skipping_legacy_greeting();
        assert!(matches!(reader.next().await, Err(ReadError::BadGreeting)));

        let mut reader = PduReader::new(&ping[..10], BytesMut::new());
        assert!(matches!(
            reader.next().await,
            Err(ReadError::TruncatedPdu(10))
        ));
    }

    #[tokio::test]
    async fn stops_at_the_body_length() {
        let ping = build::ping().encode();
        let twice = [ping.clone(), ping.clone()].concat();
        let mut reader = PduReader::new(&twice[..], BytesMut::new()).with_body_length(20);
        assert!(reader.next().await.unwrap().is_some());
        assert!(reader.next().await.unwrap().is_none());

        let mut reader = PduReader::new(&twice[..], BytesMut::new()).with_body_length(30);
        assert!(reader.next().await.unwrap().is_some());
        assert!(matches!(
            reader.next().await,
            Err(ReadError::PastBodyEnd(30))
        ));
    }

    #[tokio::test]
    async fn writer_writes_in_order_and_shuts_down() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let (tx, task) = spawn_writer(a);
        for i in 0..100u8 {
            tx.send(Bytes::from(vec![i; 1000])).await.unwrap();
        }
        drop(tx);
        assert_eq!(task.await.unwrap().unwrap().unwrap(), 100_000);
        let mut all = Vec::new();
        b.read_to_end(&mut all).await.unwrap();
        assert_eq!(all.len(), 100_000);
        assert!(
            all.chunks(1000)
                .enumerate()
                .all(|(i, c)| c.iter().all(|&x| x == i as u8))
        );
    }

    /// Accepts at most 7 bytes per write, vectored or not, and records them.
    struct Trickle(Vec<u8>);

    impl AsyncWrite for Trickle {
        fn poll_write(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &[u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let n = buf.len().min(7);
            self.0.extend_from_slice(&buf[..n]);
            std::task::Poll::Ready(Ok(n))
        }
        fn poll_write_vectored(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            bufs: &[std::io::IoSlice<'_>],
        ) -> std::task::Poll<std::io::Result<usize>> {
            let mut budget = 7;
            for buf in bufs {
                let n = buf.len().min(budget);
                self.0.extend_from_slice(&buf[..n]);
                budget -= n;
            }
            std::task::Poll::Ready(Ok(7 - budget))
        }
        fn is_write_vectored(&self) -> bool {
            true
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_shutdown(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn vectored_writes_survive_partial_writes_and_empty_buffers() {
        let mut bufs: Vec<Bytes> = vec![
            Bytes::new(),
            Bytes::from_static(b"abc"),
            Bytes::from_static(b"defghijklmnop"),
            Bytes::new(),
            Bytes::from_static(b"q"),
            Bytes::from(vec![b'z'; 100]),
        ];
        let expected: Vec<u8> = bufs.iter().flat_map(|b| b.to_vec()).collect();
        let mut out = Trickle(Vec::new());
        write_all_vectored(&mut out, &mut bufs).await.unwrap();
        assert_eq!(out.0, expected);
    }
}
