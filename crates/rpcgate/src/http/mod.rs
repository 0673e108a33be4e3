//! The proxy's HTTP/1.0 and HTTP/1.1 layer for RPC over HTTP, without an HTTP framework.
//!
//! MS-RPCH uses HTTP in a way general-purpose stacks handle badly: two requests per virtual
//! connection whose bodies (1 GiB announced, streamed forever) and response bodies are byte
//! pipes, custom methods (`RPC_IN_DATA`, `RPC_OUT_DATA`), HTTP/1.0 clients that keep the
//! connection alive, `100 Continue` that must be sent by hand, and error responses that
//! clients match byte for byte. This module owns only the request and response *heads* and
//! the decisions taken from them; bodies are raw bytes handled by the connection shells.
//! - [`head`]: parsing request heads (server side) and response heads (rpcgate's own client),
//!   with size limits and the framing checks (Content-Length, Transfer-Encoding, keep-alive).
//! - [`classify`](mod@classify): what a request is (echo, IN channel, OUT channel, v1, an
//!   error) and the `?server:port` target parser (notes §2.1, §2.2).
//! - [`response`]: the exact bytes of every response the proxy sends (notes §2.4, §7).

pub mod classify;
pub mod head;
pub mod response;

pub use classify::{RequestKind, Target, TargetError, classify, parse_target};
pub use head::{
    HttpError, HttpVersion, MAX_HEAD_LEN, MAX_HEADERS, Method, Pragma, Pragmas, RequestHead,
    ResponseHead, parse_request_head, parse_response_head,
};

#[cfg(test)]
mod fixtures;
