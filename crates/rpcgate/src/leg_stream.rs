//! The connection between a proxy and an endpoint: TCP, or an in-memory pipe when the target
//! is an endpoint of this same process (the usual single-box deployment, and the embedded
//! default). The pipe saves a loopback TCP round of syscalls and kernel copies per PDU in each
//! direction; both ends still speak the full wire protocol, so nothing else changes.
//!
//! The proxy decides per channel ([`crate::proxy::channel_start`]): ValidPorts is checked and
//! the target's name resolved first, exactly as for TCP, and only an address that an endpoint
//! of this process listens on is served in process ([`LocalEndpoints`]).

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use crate::endpoint::Endpoint;

/// Bytes an in-process pipe holds in each direction before the writer waits (the TCP
/// equivalent is the socket buffers).
pub const LOCAL_PIPE_BUFFER: usize = 256 * 1024;

/// A proxy-to-endpoint connection.
#[derive(Debug)]
pub enum LegStream {
    Tcp(TcpStream),
    /// An in-memory pipe to an endpoint of this process listening on `endpoint`.
    Local {
        pipe: DuplexStream,
        endpoint: SocketAddr,
    },
}

/// The read half of a [`LegStream`].
#[derive(Debug)]
pub enum LegRead {
    Tcp(OwnedReadHalf),
    Local(ReadHalf<DuplexStream>),
}

/// The write half of a [`LegStream`].
#[derive(Debug)]
pub enum LegWrite {
    Tcp(OwnedWriteHalf),
    Local(WriteHalf<DuplexStream>),
}

impl LegStream {
    pub fn into_split(self) -> (LegRead, LegWrite) {
        match self {
            LegStream::Tcp(tcp) => {
                let (r, w) = tcp.into_split();
                (LegRead::Tcp(r), LegWrite::Tcp(w))
            }
            LegStream::Local { pipe, .. } => {
                let (r, w) = tokio::io::split(pipe);
                (LegRead::Local(r), LegWrite::Local(w))
            }
        }
    }

    /// The other end's address: the TCP peer, or the endpoint's listening address.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        match self {
            LegStream::Tcp(tcp) => tcp.peer_addr().ok(),
            LegStream::Local { endpoint, .. } => Some(*endpoint),
        }
    }

    /// TCP keep-alive and no-delay on a TCP connection; nothing to tune on a pipe.
    pub fn tune(&self, keepalive_idle: Duration) {
        if let LegStream::Tcp(tcp) = self {
            crate::connect::tune_socket(tcp, keepalive_idle);
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, LegStream::Local { .. })
    }
}

macro_rules! delegate_read {
    ($ty:ty, $($variant:ident),+) => {
        impl AsyncRead for $ty {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $(Self::$variant(inner) => Pin::new(inner).poll_read(cx, buf),)+
                }
            }
        }
    };
}

macro_rules! delegate_write {
    ($ty:ty, $($variant:ident),+) => {
        impl AsyncWrite for $ty {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $(Self::$variant(inner) => Pin::new(inner).poll_write(cx, buf),)+
                }
            }
            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $(Self::$variant(inner) => Pin::new(inner).poll_write_vectored(cx, bufs),)+
                }
            }
            fn is_write_vectored(&self) -> bool {
                match self {
                    $(Self::$variant(inner) => inner.is_write_vectored(),)+
                }
            }
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $(Self::$variant(inner) => Pin::new(inner).poll_flush(cx),)+
                }
            }
            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $(Self::$variant(inner) => Pin::new(inner).poll_shutdown(cx),)+
                }
            }
        }
    };
}

delegate_read!(LegRead, Tcp, Local);
delegate_write!(LegWrite, Tcp, Local);

impl LegStream {
    /// The stream underneath, whichever it is.
    fn io(&mut self) -> &mut dyn crate::rpch_client::Io {
        match self {
            LegStream::Tcp(tcp) => tcp,
            LegStream::Local { pipe, .. } => pipe,
        }
    }
}

impl AsyncRead for LegStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io()).poll_read(cx, buf)
    }
}

impl AsyncWrite for LegStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(self.get_mut().io()).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io()).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(self.get_mut().io()).poll_shutdown(cx)
    }
}

/// The endpoints of this process, by the addresses they listen on.
#[derive(Debug, Default)]
pub struct LocalEndpoints {
    by_address: RwLock<HashMap<SocketAddr, Arc<Endpoint>>>,
}

impl LocalEndpoints {
    /// Records that `endpoint` listens on `address`.
    pub fn add(&self, address: SocketAddr, endpoint: Arc<Endpoint>) {
        let mut map = self
            .by_address
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.insert(address, endpoint);
    }

    /// The endpoint of this process that a connection to `address` would reach: one listening
    /// on exactly that address, or on the unspecified address of its family and port when
    /// `address` is loopback. A shut-down endpoint is never returned.
    pub fn find(&self, address: SocketAddr) -> Option<Arc<Endpoint>> {
        let map = self
            .by_address
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.is_empty() {
            return None;
        }
        let address = SocketAddr::new(address.ip().to_canonical(), address.port());
        let found = map.get(&address).or_else(|| {
            if !address.ip().is_loopback() {
                return None;
            }
            let unspecified: std::net::IpAddr = if address.is_ipv4() {
                std::net::Ipv4Addr::UNSPECIFIED.into()
            } else {
                std::net::Ipv6Addr::UNSPECIFIED.into()
            };
            map.get(&SocketAddr::new(unspecified, address.port()))
        })?;
        (!found.tasks.is_shut_down()).then(|| found.clone())
    }
}
