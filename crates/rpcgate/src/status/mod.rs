//! Status: what a running gateway is doing, for people and for Prometheus, on a listener of
//! its own (`[status] listen`, loopback by default: it names users and client addresses).
//!
//! `GET /` is a page that refreshes itself with every live channel and virtual connection
//! ([`live`]) and the main counters; `GET /metrics` the Prometheus exposition ([`metrics`]);
//! `GET /status.json` the page's data. Requests are bounded like the proxy's: one head of at
//! most the parser's limit, read within a timeout, one response, then the connection closes.

pub mod live;
pub mod metrics;
pub mod page;

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::configurator::Manager;
use crate::endpoint::Endpoint;
use crate::http::head::Method;
use crate::http::parse_request_head;
use crate::proxy::Proxy;
use crate::tasks::TaskScope;

/// How long a status client may take to send its request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Status requests served at once; more wait in the backlog.
const MAX_CLIENTS: usize = 16;

/// What the status listener reports on.
#[derive(Debug)]
pub struct Sources {
    pub proxy: Option<Arc<Proxy>>,
    pub endpoints: Vec<Arc<Endpoint>>,
    /// Set once the ValidPorts manager exists (it starts after the listeners).
    pub configurator: OnceLock<Arc<Manager>>,
    pub started: Instant,
}

impl Sources {
    pub fn new(proxy: Option<Arc<Proxy>>, endpoints: Vec<Arc<Endpoint>>) -> Arc<Self> {
        Arc::new(Self {
            proxy,
            endpoints,
            configurator: OnceLock::new(),
            started: Instant::now(),
        })
    }

    fn snapshot(&self) -> Snapshot<'_> {
        Snapshot {
            proxy: self.proxy.as_deref(),
            endpoints: &self.endpoints,
            configurator: self.configurator.get().map(|m| m.status()),
            uptime: self.started.elapsed(),
            tasks: tokio::runtime::Handle::try_current()
                .ok()
                .map(|h| h.metrics().num_alive_tasks()),
        }
    }
}

/// Everything a page or the metrics are rendered from, read once per request.
#[derive(Debug)]
pub struct Snapshot<'a> {
    pub proxy: Option<&'a Proxy>,
    pub endpoints: &'a [Arc<Endpoint>],
    pub configurator: Option<crate::configurator::Status>,
    pub uptime: Duration,
    pub tasks: Option<usize>,
}

pub(crate) fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The process's own numbers, from /proc (absent elsewhere).
pub(crate) mod process {
    #[derive(Debug, Default)]
    pub struct Process {
        pub resident_bytes: Option<u64>,
        pub open_fds: Option<usize>,
    }

    pub fn read() -> Process {
        // statm's second field is resident pages; pages are 4 KiB on every Linux we run on.
        let resident_bytes = std::fs::read_to_string("/proc/self/statm")
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
            .map(|pages| pages * 4096);
        let open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count().saturating_sub(1));
        Process {
            resident_bytes,
            open_fds,
        }
    }
}

/// The response to one request path.
fn respond(
    sources: &Sources,
    method: &Method,
    path: &str,
) -> (u16, &'static str, &'static str, String) {
    let head = matches!(method, Method::Other(m) if m == "HEAD");
    if *method != Method::Get && !head {
        return (405, "Method Not Allowed", "text/plain", "GET only\n".into());
    }
    match path {
        "/" => (
            200,
            "OK",
            "text/html; charset=utf-8",
            page::html(&sources.snapshot()),
        ),
        "/metrics" => (
            200,
            "OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics::render(&sources.snapshot()),
        ),
        "/status.json" => (
            200,
            "OK",
            "application/json",
            page::json(&sources.snapshot()),
        ),
        _ => (
            404,
            "Not Found",
            "text/plain",
            "not found; try /, /metrics or /status.json\n".into(),
        ),
    }
}

async fn serve_one(mut stream: TcpStream, sources: Arc<Sources>) {
    let mut buf = BytesMut::with_capacity(1024);
    let head = tokio::time::timeout(REQUEST_TIMEOUT, async {
        loop {
            match parse_request_head(&buf) {
                Ok(Some((head, _))) => return Some(head),
                Ok(None) => {}
                Err(e) => {
                    debug!("status: bad request: {e}");
                    return None;
                }
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    })
    .await;
    let (code, reason, content_type, body, head_only) = match head {
        Ok(Some(head)) => {
            let (code, reason, content_type, body) = respond(&sources, &head.method, &head.path);
            let head_only = matches!(&head.method, Method::Other(m) if m == "HEAD");
            (code, reason, content_type, body, head_only)
        }
        Ok(None) => (
            400,
            "Bad Request",
            "text/plain",
            "bad request\n".into(),
            false,
        ),
        Err(_) => return,
    };
    let mut response = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        response.extend_from_slice(body.as_bytes());
    }
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, stream.write_all(&response)).await;
    let _ = stream.shutdown().await;
}

/// Serves the status listener until `scope` shuts down.
pub async fn serve(listener: TcpListener, sources: Arc<Sources>, scope: TaskScope) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CLIENTS));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            () = scope.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let sources = sources.clone();
                scope.spawn(async move {
                    let _slot = slot;
                    serve_one(stream, sources).await;
                });
            }
            Err(e) => {
                warn!("status listener: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
