//! The built-in demo DCE/RPC server over ncacn_ip_tcp: the DCE management interface and
//! Samba's rpcecho, anonymous, NDR 2.0, so that a gateway can be tried end to end (and tested)
//! without a Windows server behind it.
//!
//! # Layout
//! - [`association`]: the sans-IO per-connection machine (bind, contexts, calls, faults).
//! - [`mgmt`], [`echo`]: the two interfaces, both sides of every stub.
//! - [`ndr`]: the NDR building blocks they share.
//! - this module: the tokio shell. [`serve`] accepts connections (at most
//!   [`Limits::max_connections`] at once) and runs one task per connection, which frames PDUs
//!   with [`split_pdu`], feeds them to the association and writes its answers. Every log line
//!   of a connection carries its `conn` id and peer.
//!
//! Each connection is bounded: PDUs are at most 64 KiB by construction of `frag_length` and at
//! most the negotiated fragment size after bind, a call's stub at most [`Limits::max_stub`]
//! both ways, and a connection idle (no PDU read or written) for [`Limits::idle_timeout`] is
//! closed.

pub mod association;
pub mod echo;
pub mod mgmt;
pub mod ndr;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rpch_proto::pdu::split_pdu;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{Instrument, debug, info, info_span, warn};

use association::{Association, Shared, refuse_unreadable_header};

pub use association::interfaces;

/// The fragment size the demo advertises and accepts (what Windows and impacket use).
pub const MAX_FRAG: u16 = 4280;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;

/// How long `serve` waits after a failed accept (out of file descriptors, ...) before trying
/// again, so a persistent error does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Per-server bounds. A connection holds at most about three times `max_stub` at once (a
/// request being reassembled, or an answer's stub and its fragments), so the defaults bound the
/// demo to roughly 3 GiB under a deliberate flood of maximal calls, and to very little in use.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request stub reassembled and largest response stub produced, in bytes.
    pub max_stub: usize,
    /// A connection with nothing read or written for this long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_stub: 4 * 1024 * 1024,
            idle_timeout: Duration::from_secs(120),
            max_connections: 256,
        }
    }
}

/// Serves the demo interfaces on `listener` with default [`Limits`] until the task is dropped
/// (its connections live on) or the task scope it runs in shuts down (they end too).
pub async fn serve(listener: TcpListener) -> std::io::Result<()> {
    serve_with(listener, Limits::default()).await
}

/// `rpcgate demo`: logs to stderr with the `log` filter, listens on `address` and prints
/// the bound address on stdout (a script's way to learn the port picked for port 0), then
/// serves until the process ends.
pub async fn run_standalone(
    address: std::net::SocketAddr,
    limits: Limits,
    log: &str,
) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(log)
        .map_err(|e| anyhow::anyhow!("log filter {log:?}: {e}"))?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {address}: {e}"))?;
    println!("{}", listener.local_addr()?);
    serve_with(listener, limits).await?;
    Ok(())
}

/// Serves the demo interfaces on `listener` with the given limits. Returns only if the
/// listener's address cannot be read; failed accepts are logged and retried.
pub async fn serve_with(listener: TcpListener, limits: Limits) -> std::io::Result<()> {
    let local = listener.local_addr()?;
    let shared = Arc::new(Shared::new(local.port()));
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    info!(address = %local, interfaces = ?interfaces(), "demo RPC service ready");
    loop {
        // Wait for a free slot before accepting, so excess clients queue in the backlog.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return Ok(()); // the semaphore is never closed
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!("demo accept failed: {e}");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let conn = crate::ids::next_conn_id();
        let span = info_span!("demo", conn, %peer);
        let shared = shared.clone();
        let limits = limits.clone();
        // In the caller's task scope, if any: the gateway (and tests) stop the service with
        // every connection by shutting that scope down.
        crate::tasks::spawn(
            async move {
                let _slot = slot;
                match run_connection(stream, shared, limits).await {
                    Ok(reason) => info!("connection closed: {reason}"),
                    Err(e) => info!("connection ended: {e}"),
                }
            }
            .instrument(span),
        );
    }
}

/// Why a connection ended other than by the client closing it cleanly.
#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("idle for {0:?}")]
    Idle(Duration),
    #[error("malformed PDU header: {0}")]
    Framing(rpch_proto::DecodeError),
    #[error("connection closed in the middle of a PDU ({0} bytes buffered)")]
    Truncated(usize),
}

async fn run_connection(
    stream: TcpStream,
    shared: Arc<Shared>,
    limits: Limits,
) -> Result<String, ConnError> {
    let _ = stream.set_nodelay(true);
    let idle = limits.idle_timeout;
    let (mut reader, mut writer) = stream.into_split();
    let mut association = Association::new(shared, limits);
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    debug!("connection accepted");
    loop {
        let pdu = match split_pdu(&mut buf) {
            Ok(Some(pdu)) => pdu,
            Ok(None) => {
                buf.reserve(READ_CHUNK);
                let read = tokio::time::timeout(idle, reader.read_buf(&mut buf)).await;
                match read.map_err(|_| ConnError::Idle(idle))?? {
                    0 if buf.is_empty() => return Ok("client closed".into()),
                    0 => return Err(ConnError::Truncated(buf.len())),
                    _ => continue,
                }
            }
            Err(e) => {
                if let Some(nak) = refuse_unreadable_header(&buf) {
                    write_all(&mut writer, &[nak], idle).await?;
                }
                return Err(ConnError::Framing(e));
            }
        };
        let outcome = association.handle(&pdu);
        write_all(&mut writer, &outcome.send, idle).await?;
        if let Some(reason) = outcome.close {
            let _ = writer.shutdown().await;
            return Ok(reason);
        }
    }
}

/// Bytes gathered before each write: a fragmented answer is many small PDUs, written in few
/// syscalls without copying the whole answer once more.
const WRITE_CHUNK: usize = 64 * 1024;

/// Writes PDUs in order, coalesced into chunks, each write within the idle bound.
async fn write_all(
    writer: &mut tokio::net::tcp::OwnedWriteHalf,
    pdus: &[bytes::Bytes],
    idle: Duration,
) -> Result<(), ConnError> {
    let mut chunk = Vec::with_capacity(WRITE_CHUNK.min(pdus.iter().map(|p| p.len()).sum()));
    let mut pdus = pdus.iter().peekable();
    while let Some(pdu) = pdus.next() {
        chunk.extend_from_slice(pdu);
        let full = pdus
            .peek()
            .is_none_or(|next| chunk.len() + next.len() > WRITE_CHUNK);
        if full {
            tokio::time::timeout(idle, writer.write_all(&chunk))
                .await
                .map_err(|_| ConnError::Idle(idle))??;
            chunk.clear();
        }
    }
    Ok(())
}
