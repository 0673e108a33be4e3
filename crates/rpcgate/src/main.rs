//! The `rpcgate` command: a thin front over the library (argument parsing and exit codes).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// RPC over HTTP (MS-RPCH v2) gateway: proxy, endpoint, demo service and diagnostics.
#[derive(Debug, Parser)]
#[command(name = "rpcgate", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (the embedded default configuration when no --config is given).
    Serve {
        /// Configuration file (TOML).
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Walk the path to an RPC server stage by stage (DNS, TCP, TLS, HTTP auth, echo, channels,
    /// RTS, bind, call) and say where it fails and what to change. Exit codes: 0 ok, 2 usage,
    /// 3 unreachable (DNS/TCP), 4 TLS, 5 proxy refused (503 RPC Error, HTTP), 6 RTS, 7 bind,
    /// 8 call, 9 authentication, 10 Autodiscover answered an error.
    Ping {
        /// The proxy: https://host[:port], http://host:port, or a bare host name (HTTPS, 443).
        /// With --autodiscover: where to ask (default https://autodiscover.<domain>).
        #[arg(required_unless_present = "autodiscover")]
        proxy: Option<String>,
        /// The RPC server behind the proxy, as server:port (with --autodiscover, a bare port
        /// goes with the discovered server; default 6001).
        #[arg(
            short = 'e',
            long = "endpoint",
            value_name = "SERVER:PORT",
            required_unless_present_any = ["proxy_only", "autodiscover"]
        )]
        endpoint: Option<String>,
        /// Ask Autodiscover for EMAIL first and ping the proxy, auth package and RPC server it
        /// names.
        #[arg(long, value_name = "EMAIL")]
        autodiscover: Option<String>,
        /// Ping only the RPC proxy (an echo request), like rpcping -E.
        #[arg(short = 'E', long = "proxy-only", conflicts_with = "endpoint")]
        proxy_only: bool,
        /// Interface to bind, UUID[:MAJOR.MINOR] (default: the DCE management interface;
        /// rpcecho's 60a15ec5-4de8-11d7-a637-005056a20182 calls AddOne).
        #[arg(long, value_name = "UUID[:VERSION]")]
        interface: Option<String>,
        /// User for the proxy's HTTP authentication (DOMAIN\user or user@domain for NTLM).
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// File whose first line is the password (else $RPCGATE_PASSWORD).
        #[arg(long, value_name = "FILE")]
        password_file: Option<PathBuf>,
        /// HTTP authentication scheme (default: NTLM if offered, else Basic).
        #[arg(long, value_parser = ["basic", "ntlm", "negotiate"])]
        auth: Option<String>,
        /// Calls to make; with more than one, latency min / mean / p99 / max.
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// One JSON object with every stage, instead of text.
        #[arg(long)]
        json: bool,
        /// Use these addresses for the proxy's host name (comma-separated), like curl --resolve.
        #[arg(long, value_name = "IP,IP...", value_delimiter = ',')]
        resolve: Vec<std::net::IpAddr>,
        /// Accept any TLS certificate (testing only).
        #[arg(long)]
        insecure: bool,
        /// Trust this CA certificate (PEM) for the proxy's TLS certificate.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// Seconds allowed for each stage.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Load generator: virtual connections through the proxy (or plain ncacn_ip_tcp with
    /// --direct) making rpcecho calls; closed loop, open loop, set-up rate or idle scale.
    /// Exit codes: 0 ok, 1 calls failed, 2 usage, 3 no connection.
    Bench(rpcgate::bench::BenchCli),
    /// Run the built-in demo DCE/RPC service (mgmt, rpcecho) alone over ncacn_ip_tcp, e.g. as
    /// the backend of a benchmark; prints the address it listens on.
    Demo {
        /// Address to listen on (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: std::net::SocketAddr,
        /// Connections served at once.
        #[arg(long, default_value_t = 256)]
        max_connections: usize,
        /// Seconds a connection may stay silent before it is closed.
        #[arg(long, default_value_t = 120)]
        idle_timeout: u64,
        /// Log filter (tracing EnvFilter syntax), on stderr.
        #[arg(long, default_value = "warn")]
        log: String,
    },
    /// Print the effective ValidPorts allow-list (static entries and the configurator's
    /// persisted directory list), one entry per line with its origin.
    Validports {
        /// Configuration file (TOML).
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Poll the directory for ValidPorts entries ([configurator]) and print what changes.
    Configurator {
        /// Configuration file (TOML).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Poll once and exit (required: the gateway itself runs the periodic poll).
        #[arg(long, required = true)]
        once: bool,
        /// Print the diff only; do not write the state directory's list.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the Autodiscover answer a client asking for EMAIL would receive (the XML on
    /// standard output, a summary on standard error); exit code 1 for an error answer.
    Autodiscover {
        /// The e-mail address asked for.
        email: String,
        /// Configuration file (TOML).
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Answer as for a client that sends X-ClientCanHandle: Negotiate.
        #[arg(long)]
        negotiate: bool,
    },
    /// Print the embedded default configuration (a starting point for a config file).
    DefaultConfig,
    /// Manage the local user file (Basic and NTLM accounts).
    User {
        #[command(subcommand)]
        action: UserAction,
        /// The user file (default: auth.users_file of the configuration).
        #[arg(long, global = true, value_name = "FILE")]
        file: Option<PathBuf>,
        /// Configuration file whose auth.users_file to use.
        #[arg(short, long, global = true, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum UserAction {
    /// Add a user; the password is prompted for, or read as one line from standard input.
    Add {
        name: String,
        /// Groups, comma-separated (for auth.allow rules).
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// Store no NT hash: the user can use Basic but not NTLM (the NT hash is
        /// password-equivalent for NTLM).
        #[arg(long)]
        no_nt_hash: bool,
        /// Replace an existing user.
        #[arg(long)]
        force: bool,
    },
    /// Remove a user.
    Remove { name: String },
    /// List users (names, NTLM yes/no, groups).
    List,
}

fn user_command(
    action: UserAction,
    file: Option<PathBuf>,
    config: Option<PathBuf>,
) -> anyhow::Result<String> {
    let path = rpcgate::user_admin::resolve_file(file, config)?;
    match action {
        UserAction::Add {
            name,
            groups,
            no_nt_hash,
            force,
        } => {
            rpcgate::auth::users::check_name(&name, "user")?;
            let password = rpcgate::user_admin::read_password(&name)?;
            rpcgate::user_admin::add(&path, &name, &password, groups, !no_nt_hash, force)
        }
        UserAction::Remove { name } => rpcgate::user_admin::remove(&path, &name),
        UserAction::List => rpcgate::user_admin::list(&path),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("rpcgate: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Serve { config } => match rpcgate::serve::reexec_for_keytab(config.as_deref())
            .and_then(|()| runtime.block_on(rpcgate::serve::run(config)))
        {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rpcgate: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Ping {
            proxy,
            endpoint,
            autodiscover,
            proxy_only,
            insecure,
            ca,
            timeout,
            interface,
            user,
            password_file,
            auth,
            count,
            json,
            resolve,
        } => {
            let usage = |message: String| {
                eprintln!("rpcgate ping: {message}");
                ExitCode::from(rpcgate::ping::exit::USAGE as u8)
            };
            let interface = match interface.map(|i| rpcgate::ping::parse_interface(&i)) {
                Some(Err(e)) => return usage(e),
                Some(Ok(i)) => Some(i),
                None => None,
            };
            let password = match password_file {
                Some(path) => match std::fs::read_to_string(&path) {
                    Ok(text) => Some(text.lines().next().unwrap_or_default().to_string()),
                    Err(e) => return usage(format!("{}: {e}", path.display())),
                },
                None => std::env::var("RPCGATE_PASSWORD").ok(),
            };
            if user.is_some() && password.is_none() {
                return usage("--user needs --password-file or RPCGATE_PASSWORD".into());
            }
            let proxy = match (&autodiscover, proxy) {
                (Some(email), given) => rpcgate::ping::autodiscover_url(given.as_deref(), email),
                (None, Some(given)) => given.parse(),
                (None, None) => Err("give the proxy URL (or --autodiscover EMAIL)".to_owned()),
            };
            let proxy = match proxy {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("rpcgate ping: {e}");
                    return ExitCode::from(rpcgate::ping::exit::USAGE as u8);
                }
            };
            let args = rpcgate::ping::PingArgs {
                proxy,
                endpoint,
                proxy_only,
                autodiscover,
                insecure,
                ca,
                timeout: Duration::from_secs(timeout.max(1)),
                interface,
                user,
                password,
                auth,
                count: count.max(1),
                json,
                resolve: (!resolve.is_empty()).then(|| {
                    resolve
                        .iter()
                        .map(|ip| std::net::SocketAddr::new(*ip, 0))
                        .collect()
                }),
            };
            let code = runtime.block_on(rpcgate::ping::run(args));
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Command::Bench(cli) => {
            let code = runtime.block_on(rpcgate::bench::main(cli));
            ExitCode::from(u8::try_from(code).unwrap_or(1))
        }
        Command::Demo {
            listen,
            max_connections,
            idle_timeout,
            log,
        } => {
            let limits = rpcgate::demo::Limits {
                max_connections,
                idle_timeout: Duration::from_secs(idle_timeout.max(1)),
                ..rpcgate::demo::Limits::default()
            };
            match runtime.block_on(rpcgate::demo::run_standalone(listen, limits, &log)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("rpcgate demo: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Validports { config } => match rpcgate::serve::print_valid_ports(config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rpcgate: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Configurator {
            config,
            once: _,
            dry_run,
        } => match runtime.block_on(rpcgate::serve::configurator_once(config, dry_run)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("rpcgate configurator: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::User {
            action,
            file,
            config,
        } => match user_command(action, file, config) {
            Ok(message) => {
                println!("{message}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("rpcgate user: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Autodiscover {
            email,
            config,
            negotiate,
        } => match runtime.block_on(rpcgate::autodiscover::cli::run(config, &email, negotiate)) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("rpcgate autodiscover: {e:#}");
                ExitCode::from(2)
            }
        },
        Command::DefaultConfig => {
            print!("{}", rpcgate::config::EMBEDDED_DEFAULT);
            ExitCode::SUCCESS
        }
    }
}
