//! rpcgate: an RPC-over-HTTP (MS-RPCH v2) gateway, the tokio shell over `rpch-proto`.
//!
//! # Layout
//! - [`auth`]: authentication (Basic, NTLM, Negotiate), throttling and authorization.
//! - [`autodiscover`]: `POST /autodiscover/autodiscover.xml`, Outlook's client settings.
//! - [`serve`] / [`gateway`]: configuration to running listeners, and `rpcgate serve`.
//! - [`config`]: the TOML configuration file and the embedded default.
//! - [`configurator`]: ValidPorts entries kept current from the directory (LDAP).
//! - [`proxy`]: `/rpc/rpcproxy.dll`, the inbound and outbound proxy roles over HTTP(S).
//! - [`endpoint`]: the server role, pairing IN and OUT legs and bridging to a backend.
//! - [`demo`]: the built-in DCE/RPC service (mgmt, rpcecho) over ncacn_ip_tcp.
//! - [`http`]: request/response heads, request classification, response bytes.
//! - [`valid_ports`]: the allow-list of targets.
//! - [`tls`]: certificates (self-signed generation) and rustls configurations.
//! - [`rpch_client`]: rpcgate's own RPC-over-HTTP client transport.
//! - [`client_auth`]: HTTP authentication, the client side (Basic, NTLM).
//! - [`rpc_client`]: a DCE/RPC client (bind, calls) over any PDU transport.
//! - [`ping`]: `rpcgate ping`.
//! - [`bench`]: `rpcgate bench`, a load generator on the client role.
//! - [`framed`]: PDU framing over byte streams and writer tasks.
//! - [`connect`]: outgoing TCP with happy eyeballs over every address of a name.
//! - [`fd_limit`]: raising the file-descriptor limit to what the process will hold.
//! - [`ids`]: connection ids for logs.
//! - [`leg_stream`]: proxy-to-endpoint connections: TCP, or in process when both run here.
//! - [`status`]: the status page, `/metrics` and `/status.json`, and the live list behind them.
//! - [`tasks`]: task scopes, so that a component can be shut down with every task it spawned.
//! - [`user_admin`]: `rpcgate user add|remove|list`.
pub mod auth;
pub mod autodiscover;
pub mod bench;
pub mod client_auth;
pub mod config;
pub mod configurator;
pub mod connect;
pub mod demo;
pub mod endpoint;
pub mod fd_limit;
pub mod framed;
pub mod gateway;
pub mod http;
pub mod ids;
pub mod leg_stream;
pub mod ping;
pub mod proxy;
pub mod rpc_client;
pub mod rpch_client;
pub mod serve;
pub mod status;
pub mod tasks;
pub mod tls;
pub mod user_admin;
pub mod valid_ports;
