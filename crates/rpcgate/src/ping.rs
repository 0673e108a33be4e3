//! `rpcgate ping`: opens a virtual connection through a proxy to an endpoint, binds to the DCE
//! management interface and lists the interfaces the server offers, printing each stage with
//! its timing as it completes and, on failure, what it means and what to change.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::rpc_client::RpcClient;
use crate::rpch_client::{ClientError, ClientOptions, ProxyUrl, open};

/// What to ping.
#[derive(Debug, Clone)]
pub struct PingArgs {
    pub proxy: ProxyUrl,
    /// `server:port` behind the proxy.
    pub endpoint: String,
    pub insecure: bool,
    pub ca: Option<PathBuf>,
    pub timeout: Duration,
}

/// Exit codes, one per class of failing stage.
pub mod exit {
    pub const OK: i32 = 0;
    pub const USAGE: i32 = 2;
    pub const CONNECT: i32 = 3;
    pub const TLS: i32 = 4;
    pub const PROXY_REFUSED: i32 = 5;
    pub const RTS: i32 = 6;
    pub const BIND: i32 = 7;
    pub const CALL: i32 = 8;
}

struct Printer {
    started: Instant,
}

impl Printer {
    fn ok(&self, stage: &str, detail: &str) {
        println!(
            "  ok    {stage:<22} {:>7.1} ms  {detail}",
            self.started.elapsed().as_secs_f64() * 1000.0
        );
    }

    fn fail(&self, stage: &str, detail: &str, hint: &str) {
        println!(
            "  FAIL  {stage:<22} {:>7.1} ms  {detail}",
            self.started.elapsed().as_secs_f64() * 1000.0
        );
        if !hint.is_empty() {
            println!("        -> {hint}");
        }
    }
}

fn explain(err: &ClientError) -> (&'static str, i32, String) {
    match err {
        ClientError::Connect { .. } => (
            "connect to proxy",
            exit::CONNECT,
            "the proxy is not reachable: check the URL's host and port and that `rpcgate serve` runs".into(),
        ),
        ClientError::Tls { message, .. } => (
            "TLS",
            exit::TLS,
            if message.contains("UnknownIssuer") || message.contains("certificate") {
                "the proxy's certificate is not trusted: pass --ca with its CA (or --insecure to test)".into()
            } else {
                "the TLS handshake failed: is this an HTTPS listener?".into()
            },
        ),
        ClientError::RpcError { code: 0x6ba, .. } => (
            "channels",
            exit::PROXY_REFUSED,
            "503 RPC Error 6ba: the target is not in the proxy's ValidPorts, or the proxy cannot reach it".into(),
        ),
        ClientError::RpcError { code: 5, .. } => (
            "channels",
            exit::PROXY_REFUSED,
            "503 RPC Error 5: access denied for this user to this target".into(),
        ),
        ClientError::RpcError { .. } | ClientError::HttpStatus { .. } => (
            "channels",
            exit::PROXY_REFUSED,
            "the proxy refused the channel request".into(),
        ),
        ClientError::Timeout { .. } | ClientError::Protocol(_) | ClientError::Io(_) => (
            "RTS handshake",
            exit::RTS,
            "the proxy accepted the channels but the virtual connection did not open: is the \
             target an ncacn_http endpoint (rpcgate endpoint or a Windows RPC server)?"
                .into(),
        ),
    }
}

/// Runs the ping; returns the process exit code.
pub async fn run(args: PingArgs) -> i32 {
    let printer = Printer {
        started: Instant::now(),
    };
    println!(
        "rpcgate ping {} -> {} (RPC over HTTP v2)",
        args.proxy, args.endpoint
    );
    let tls = if args.proxy.tls {
        match crate::tls::client_config(args.ca.as_deref(), args.insecure) {
            Ok(config) => Some(config),
            Err(e) => {
                printer.fail("TLS settings", &e.to_string(), "");
                return exit::USAGE;
            }
        }
    } else {
        None
    };
    let options = ClientOptions {
        tls,
        timeout: args.timeout,
        ..ClientOptions::default()
    };
    let transport = match open(&args.proxy, &args.endpoint, &options).await {
        Ok(t) => t,
        Err(e) => {
            let (stage, code, hint) = explain(&e);
            printer.fail(stage, &e.to_string(), &hint);
            return code;
        }
    };
    let params = transport.info.params;
    printer.ok(
        "virtual connection",
        &format!(
            "vc {} (CONN/A3 timeout {} s; CONN/C2 window {}, timeout {} s)",
            transport.info.vc,
            params.out_proxy_timeout_ms / 1000,
            params.in_proxy_window,
            params.in_proxy_timeout_ms / 1000
        ),
    );
    let mut client = RpcClient::new(transport);
    let mgmt = crate::demo::mgmt::interface();
    match client.bind(mgmt).await {
        Ok(info) => printer.ok(
            "bind mgmt",
            &format!(
                "{mgmt} (max fragments {}/{})",
                info.max_xmit_frag, info.max_recv_frag
            ),
        ),
        Err(e) => {
            printer.fail(
                "bind mgmt",
                &e.to_string(),
                "the endpoint answered but refused the DCE management interface",
            );
            return exit::BIND;
        }
    }
    match client.mgmt_inq_if_ids().await {
        Ok(ids) => {
            printer.ok("mgmt inq_if_ids", &format!("{} interfaces", ids.len()));
            for id in ids {
                println!("        {id}");
            }
            exit::OK
        }
        Err(e) => {
            printer.fail(
                "mgmt inq_if_ids",
                &e.to_string(),
                "the call failed on the server",
            );
            exit::CALL
        }
    }
}
