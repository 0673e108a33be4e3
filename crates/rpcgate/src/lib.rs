//! rpcgate: an RPC-over-HTTP (MS-RPCH v2) gateway, the tokio shell over `rpch-proto`.
//!
//! # Layout
//! - [`framed`]: PDU framing over byte streams and writer tasks.
//! - [`connect`]: outgoing TCP with happy eyeballs over every address of a name.
pub mod config;
pub mod connect;
pub mod demo;
pub mod endpoint;
pub mod framed;
pub mod http;
pub mod ids;
pub mod proxy;
pub mod rpc_client;
pub mod rpch_client;
pub mod tls;
pub mod valid_ports;
