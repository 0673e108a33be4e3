//! The `autodiscover` stage of `rpcgate ping --autodiscover EMAIL`: ask the Autodiscover
//! service as Outlook would, and take the proxy (EXPR), its auth package and the RPC server
//! (EXCH) from the answer as the settings of the stages that follow.
//!
//! The Autodiscover URL is the proxy URL given on the command line (its host, port and
//! scheme, with the Autodiscover path), or `https://autodiscover.<domain of EMAIL>`, the
//! name Outlook tries. The proxy is EXPR's server, on the Autodiscover URL's port when it is
//! the same host (else 443, or 80 with `SSL Off`); the endpoint is EXCH's server on port
//! 6001 (Exchange's store), or on the port given with `-e PORT`; `-e server:port` replaces it.
//! A `redirectAddr` is followed (at most [`MAX_REDIRECTS`] times).

use super::report::Report;
use super::{PingArgs, exit};
use crate::autodiscover::PATH;
use crate::autodiscover::client::{Discovered, fetch, parse_response};
use crate::client_auth::HttpAuth;
use crate::rpch_client::{ClientError, ClientOptions, ProxyUrl};

/// Redirects followed before giving up (Outlook stops at 10).
pub const MAX_REDIRECTS: usize = 5;
/// The endpoint port when `-e` gives none: the Exchange store's RPC over HTTP port.
pub const DEFAULT_ENDPOINT_PORT: u16 = 6001;

/// The Autodiscover URL: `given` (host, port, scheme) with the Autodiscover path, or
/// `https://autodiscover.<domain>` from the address.
pub fn url(given: Option<&str>, email: &str) -> Result<ProxyUrl, String> {
    let mut url: ProxyUrl = match given {
        Some(text) => text.parse()?,
        None => {
            let domain = email
                .rsplit_once('@')
                .map(|(_, d)| d)
                .filter(|d| !d.is_empty())
                .ok_or_else(|| format!("{email:?} is not an e-mail address"))?;
            format!("https://autodiscover.{domain}").parse()?
        }
    };
    url.path = PATH.to_owned();
    Ok(url)
}

/// Runs the stage; returns the arguments for the stages that follow, or the exit code.
pub async fn stage(args: &PingArgs, email: &str, report: &mut Report) -> Result<PingArgs, i32> {
    let tls = if args.proxy.tls {
        match crate::tls::client_config(args.ca.as_deref(), args.insecure) {
            Ok(config) => Some(config),
            Err(e) => {
                report.fail(
                    "autodiscover",
                    e.to_string(),
                    vec![],
                    "fix the TLS settings (--ca)",
                );
                return Err(exit::USAGE);
            }
        }
    } else {
        None
    };
    let mut options = ClientOptions {
        tls,
        timeout: args.timeout,
        addresses: args.resolve.clone(),
        ..ClientOptions::default()
    };
    let mut address = email.to_owned();
    let mut lines = Vec::new();
    for _ in 0..=MAX_REDIRECTS {
        let (head, body) = match ask(args, &address, &mut options).await {
            Ok(answer) => answer,
            Err(e) => return Err(fetch_failure(report, args, &e, lines)),
        };
        if head.status == 401 {
            let offered = crate::client_auth::offered_schemes(
                crate::rpch_client::www_authenticate(&head)
                    .iter()
                    .map(String::as_str),
            );
            report.fail(
                "autodiscover",
                format!("401, offers {}", offered.join(", ")),
                lines,
                "Autodiscover is behind the proxy's authentication: pass --user and \
                 --password-file (or RPCGATE_PASSWORD), and check them",
            );
            return Err(exit::AUTH);
        }
        if head.status != 200 {
            let why = if head.status == 404 {
                format!(
                    "{} does not serve Autodiscover: configure [autodiscover] (and \
                     client.external_host) on that rpcgate, or give the right URL",
                    args.proxy
                )
            } else {
                format!("the Autodiscover URL {} refused the request", args.proxy)
            };
            report.fail(
                "autodiscover",
                format!("HTTP {} {}", head.status, head.reason),
                lines,
                why,
            );
            return Err(exit::PROXY_REFUSED);
        }
        let discovered = match parse_response(&body) {
            Ok(d) => d,
            Err(e) => {
                report.fail(
                    "autodiscover",
                    format!("unreadable answer: {e}"),
                    lines,
                    "the URL answered but not with an Autodiscover document",
                );
                return Err(exit::AUTODISCOVER);
            }
        };
        match discovered {
            Discovered::Redirect(to) => {
                lines.push(format!("{address}: redirectAddr {to}"));
                address = to;
            }
            Discovered::Error { code, message } => {
                let why = match code {
                    500 => format!(
                        "Autodiscover does not know {address}: check the address, \
                         autodiscover.domains, and that the directory has it in mail, \
                         proxyAddresses or userPrincipalName"
                    ),
                    602 => "the user is known but has no RPC server: set \
                            autodiscover.server, or the directory's server attribute"
                        .to_owned(),
                    603 => "the Autodiscover service could not ask its directory: see its log"
                        .to_owned(),
                    _ => "the Autodiscover service refused the request".to_owned(),
                };
                report.fail(
                    "autodiscover",
                    format!("error {code}: {message}"),
                    lines,
                    why,
                );
                return Err(exit::AUTODISCOVER);
            }
            Discovered::Settings {
                display_name,
                smtp_address,
                expr,
                exch,
            } => {
                let expr = expr.unwrap_or_default();
                let (Some(proxy_host), Some(exch_server)) =
                    (expr.server.clone(), exch.and_then(|e| e.server))
                else {
                    report.fail(
                        "autodiscover",
                        "settings without an EXPR or EXCH server",
                        lines,
                        "the answer has no Outlook Anywhere (EXPR) proxy or no RPC server \
                         (EXCH): check client.external_host and the user's server",
                    );
                    return Err(exit::AUTODISCOVER);
                };
                let next = follow(
                    args,
                    &proxy_host,
                    expr.ssl,
                    &exch_server,
                    &expr.auth_package,
                );
                lines.push(format!(
                    "user     {} <{}>",
                    display_name.as_deref().unwrap_or("?"),
                    smtp_address.as_deref().unwrap_or(&address)
                ));
                lines.push(format!(
                    "EXPR     {proxy_host} (SSL {}, {}{})",
                    if expr.ssl.unwrap_or(true) {
                        "On"
                    } else {
                        "Off"
                    },
                    expr.auth_package.as_deref().unwrap_or("no AuthPackage"),
                    expr.cert_principal_name
                        .as_deref()
                        .map(|n| format!(", {n}"))
                        .unwrap_or_default()
                ));
                lines.push(format!("EXCH     {exch_server}"));
                let target = next.endpoint.as_deref().unwrap_or("(proxy only)");
                lines.push(format!("-> {} -> {target}", next.proxy));
                report.ok(
                    "autodiscover",
                    format!("settings for {address} from {}", args.proxy),
                    lines,
                );
                return Ok(next);
            }
        }
    }
    report.fail(
        "autodiscover",
        format!("more than {MAX_REDIRECTS} redirects"),
        lines,
        "the redirects loop: check autodiscover.redirect_domains and targetAddress values",
    );
    Err(exit::AUTODISCOVER)
}

/// One request with the credentials: the scheme asked for, else NTLM, falling back to
/// Basic when NTLM is not offered.
async fn ask(
    args: &PingArgs,
    address: &str,
    options: &mut ClientOptions,
) -> Result<(crate::http::ResponseHead, Vec<u8>), ClientError> {
    let (Some(user), Some(password)) = (&args.user, &args.password) else {
        return fetch(&args.proxy, address, options).await;
    };
    let basic = HttpAuth::Basic {
        user: user.clone(),
        password: password.clone(),
    };
    let ntlm = HttpAuth::Ntlm {
        user: user.clone(),
        password: password.clone(),
    };
    if options.auth.is_none() {
        options.auth = Some(match args.auth.as_deref() {
            Some("basic") => basic.clone(),
            _ => ntlm,
        });
    }
    match fetch(&args.proxy, address, options).await {
        Err(ClientError::Unauthorized { offered })
            if offered.iter().any(|s| s.eq_ignore_ascii_case("Basic")) && args.auth.is_none() =>
        {
            options.auth = Some(basic);
            fetch(&args.proxy, address, options).await
        }
        other => other,
    }
}

/// The arguments of the following stages.
fn follow(
    args: &PingArgs,
    proxy_host: &str,
    ssl: Option<bool>,
    exch_server: &str,
    auth_package: &Option<String>,
) -> PingArgs {
    let tls = ssl.unwrap_or(true);
    let port = if proxy_host.eq_ignore_ascii_case(&args.proxy.host) && tls == args.proxy.tls {
        args.proxy.port
    } else if tls {
        443
    } else {
        80
    };
    let endpoint = if args.endpoint.is_none() && args.proxy_only {
        None
    } else {
        Some(match args.endpoint.as_deref() {
            Some(port) if port.parse::<u16>().is_ok() => join(exch_server, port),
            Some(full) => full.to_owned(),
            None => join(exch_server, &DEFAULT_ENDPOINT_PORT.to_string()),
        })
    };
    let auth = args.auth.clone().or_else(|| {
        auth_package
            .as_deref()
            .map(str::to_ascii_lowercase)
            .filter(|p| p == "basic" || p == "ntlm")
    });
    let resolve = if proxy_host.eq_ignore_ascii_case(&args.proxy.host) {
        args.resolve.clone()
    } else {
        None
    };
    PingArgs {
        proxy: ProxyUrl {
            tls,
            host: proxy_host.to_owned(),
            port,
            path: "/rpc/rpcproxy.dll".to_owned(),
        },
        endpoint,
        auth,
        resolve,
        autodiscover: None,
        ..args.clone()
    }
}

fn join(host: &str, port: &str) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

fn fetch_failure(report: &mut Report, args: &PingArgs, e: &ClientError, lines: Vec<String>) -> i32 {
    let (code, why) = match e {
        ClientError::Connect { .. } => (
            exit::CONNECT,
            format!(
                "cannot reach the Autodiscover URL {}: Outlook tries \
                 https://autodiscover.<domain> (give the URL of an rpcgate proxy to ask it \
                 directly)",
                args.proxy
            ),
        ),
        ClientError::Tls { .. } => (
            exit::TLS,
            "TLS with the Autodiscover server failed: pass --ca with its CA (or check its \
             name)"
                .to_owned(),
        ),
        ClientError::Unauthorized { offered } => (
            exit::AUTH,
            format!(
                "the server offers {} and ping speaks Basic and NTLM",
                offered.join(", ")
            ),
        ),
        _ => (
            exit::PROXY_REFUSED,
            "no usable HTTP answer from the Autodiscover URL".to_owned(),
        ),
    };
    report.fail("autodiscover", e.to_string(), lines, why);
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = url(None, "alice@contoso.com").unwrap();
        assert_eq!(
            u.to_string(),
            "https://autodiscover.contoso.com:443/autodiscover/autodiscover.xml"
        );
        let u = url(Some("https://127.0.0.1:8443"), "a@x").unwrap();
        assert_eq!(
            u.to_string(),
            "https://127.0.0.1:8443/autodiscover/autodiscover.xml"
        );
        assert!(url(None, "nobody").is_err());
    }
}
