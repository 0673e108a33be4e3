//! Runs the demo DCE/RPC service alone, for interop checks by hand:
//!
//! ```text
//! cargo run -p rpcgate --example demo_server -- 127.0.0.1:4135
//! .venv/bin/python interop/impacket_demo_tcp.py 127.0.0.1 4135
//! ```
//!
//! The address defaults to 127.0.0.1:0 (a free port); the one bound is printed on stdout.
//! Logs go to stderr (`RUST_LOG=debug` for every call).

use std::io::IsTerminal;

use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_string());
    let listener = TcpListener::bind(&address).await?;
    println!("listening on {}", listener.local_addr()?);
    rpcgate::demo::serve(listener).await
}
