//! RPC over HTTP v1 at the endpoint: a connection whose first PDU is not RTS carries plain
//! connection-oriented RPC (MS-RPCH 3.1); impacket's direct `ncacn_http:host[port]` transport
//! speaks exactly this. The endpoint relays it byte for byte to the backend.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

use super::Endpoint;
use crate::connect::{TCP_KEEPALIVE_IDLE, connect, tune_socket};

/// Relays one v1 connection to the backend until either side closes.
pub async fn relay(
    endpoint: Arc<Endpoint>,
    mut client: crate::leg_stream::LegStream,
    first: Bytes,
    leftover: BytesMut,
) {
    let backend = &endpoint.settings.backend;
    let mut server = match connect(
        &backend.host,
        backend.port,
        endpoint.settings.connect_timeout,
    )
    .await
    {
        Ok(connected) => connected.stream,
        Err(e) => {
            endpoint
                .stats
                .backend_failures
                .fetch_add(1, Ordering::Relaxed);
            warn!(backend = %backend, "RPC over HTTP v1: backend unreachable: {e}");
            return;
        }
    };
    tune_socket(&server, TCP_KEEPALIVE_IDLE);
    info!(backend = %backend, "RPC over HTTP v1 connection relayed to the backend");
    if server.write_all(&first).await.is_err() || server.write_all(&leftover).await.is_err() {
        return;
    }
    match tokio::io::copy_bidirectional(&mut client, &mut server).await {
        Ok((up, down)) => info!(
            bytes_to_backend = up + first.len() as u64 + leftover.len() as u64,
            bytes_to_client = down,
            "RPC over HTTP v1 connection closed"
        ),
        Err(e) => info!("RPC over HTTP v1 connection ended: {e}"),
    }
}
