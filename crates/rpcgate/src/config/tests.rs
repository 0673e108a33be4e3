use std::ffi::OsString;

use super::*;

fn parse(text: &str) -> Config {
    Config::from_toml_str_with_env(text, "test.toml", &|_| None).unwrap()
}

fn error(text: &str) -> ConfigError {
    Config::from_toml_str_with_env(text, "test.toml", &|_| None).unwrap_err()
}

/// (key, line, message) of a syntax or validation error.
fn parts(error: &ConfigError) -> (Option<String>, Option<usize>, String) {
    match error {
        ConfigError::Syntax {
            key,
            location,
            message,
            ..
        } => (key.clone(), location.map(|l| l.line), message.clone()),
        ConfigError::Invalid {
            key,
            location,
            message,
            ..
        } => (Some(key.clone()), location.map(|l| l.line), message.clone()),
        other => panic!("unexpected {other:?}"),
    }
}

const ENDPOINT_ONLY: &str = "[[endpoint]]\nlisten = \"127.0.0.1:6001\"\nbackend = \"demo\"\n";

#[test]
fn embedded_default() {
    let config = Config::embedded_default().unwrap();
    assert_eq!(config.source, EMBEDDED_DEFAULT_NAME);
    assert_eq!(config.log.level, "info");

    let proxy = &config.proxy;
    assert_eq!(proxy.listeners.len(), 2);
    let https = &proxy.listeners[0];
    assert_eq!(https.address, "127.0.0.1:8443".parse().unwrap());
    assert_eq!(https.tls, ListenerTls::SelfSigned);
    assert!(https.is_loopback() && https.anonymous_allowed() && !https.allow_anonymous);
    let http = &proxy.listeners[1];
    assert_eq!(http.address, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(http.tls, ListenerTls::Plain);

    assert_eq!(proxy.valid_ports.to_string(), "localhost:6001");
    let entry = proxy.valid_ports.allows("LOCALHOST", 6001).unwrap();
    assert_eq!(
        entry.origin(),
        &Origin::Static {
            source: "config file".into()
        }
    );
    assert!(proxy.valid_ports.allows("localhost", 6002).is_none());
    assert_eq!(proxy.receive_window, 65_536);
    assert_eq!(proxy.connection_timeout, Duration::from_secs(120));
    assert_eq!(proxy.connection_timeout_ms(), 120_000);
    assert_eq!(proxy.out_channel_lifetime, 1_073_741_824);
    assert_eq!(proxy.connect_timeout, Duration::from_millis(2_000));
    assert_eq!(proxy.handshake_timeout, Duration::from_secs(30));
    assert_eq!(proxy.idle_timeout, Duration::from_secs(900));
    assert_eq!(proxy.max_connections, 20_000);

    assert_eq!(config.endpoints.len(), 1);
    let endpoint = &config.endpoints[0];
    assert_eq!(
        endpoint.listen,
        vec![
            "127.0.0.1:6001".parse::<SocketAddr>().unwrap(),
            "[::1]:6001".parse().unwrap()
        ]
    );
    assert_eq!(endpoint.backend, Backend::Demo);
    assert_eq!(endpoint.receive_window, 65_536);
    assert_eq!(endpoint.setup_timeout, Duration::from_secs(60));
    assert_eq!(config.demo.listen, DEFAULT_DEMO_LISTEN);
}

#[test]
fn full_schema() {
    let config = parse(
        r#"
state_dir = "/var/lib/rpcgate"
[log]
level = "info,rpcgate=debug"
[proxy]
valid_ports = "localhost:6001;Data*:4000-8000"
receive_window = 262144
connection_timeout_secs = 900
out_channel_lifetime = 2147483648
connect_timeout_ms = 500
handshake_timeout_secs = 10
idle_timeout_secs = 3600
max_connections = 10
[[proxy.valid_port]]
host = "mbx1"
ports = "6001-6002"
[[proxy.valid_port]]
host = "mbx1"
ports = 6004
[[proxy.listener]]
address = "0.0.0.0:443"
cert = "/etc/rpcgate/cert.pem"
key = "/etc/rpcgate/key.pem"
allow_anonymous = true
[[proxy.listener]]
address = "[::1]:8080"
tls = false
[[endpoint]]
listen = "[::]:6001"
backend = "samba-dc.corp:49153"
receive_window = 8192
setup_timeout_secs = 900
[[endpoint]]
listen = ["127.0.0.1:6004"]
backend = "[::1]:135"
[demo]
listen = "127.0.0.1:1135"
"#,
    );
    assert_eq!(config.state_dir, PathBuf::from("/var/lib/rpcgate"));
    assert_eq!(config.log.level, "info,rpcgate=debug");
    let proxy = &config.proxy;
    assert_eq!(
        proxy.valid_ports.to_string(),
        "localhost:6001;Data*:4000-8000;mbx1:6001-6002;mbx1:6004"
    );
    assert_eq!(proxy.receive_window, 262_144);
    assert_eq!(proxy.connection_timeout_ms(), 900_000);
    assert_eq!(proxy.out_channel_lifetime, 2_147_483_648);
    assert_eq!(proxy.connect_timeout, Duration::from_millis(500));
    assert_eq!(proxy.handshake_timeout, Duration::from_secs(10));
    assert_eq!(proxy.idle_timeout, Duration::from_secs(3600));
    assert_eq!(proxy.max_connections, 10);
    assert_eq!(
        proxy.listeners[0],
        ListenerConfig {
            address: "0.0.0.0:443".parse().unwrap(),
            tls: ListenerTls::Files {
                cert: "/etc/rpcgate/cert.pem".into(),
                key: "/etc/rpcgate/key.pem".into(),
            },
            allow_anonymous: true,
            auth: ListenerAuthConfig {
                methods: Vec::new(),
                anonymous: true,
                trusted_proxies: Default::default(),
            },
        }
    );
    assert!(!proxy.listeners[0].is_loopback() && proxy.listeners[0].anonymous_allowed());
    assert_eq!(proxy.listeners[1].tls, ListenerTls::Plain);
    assert_eq!(
        config.endpoints[0].listen,
        vec!["[::]:6001".parse().unwrap()]
    );
    assert_eq!(
        config.endpoints[0].backend.to_string(),
        "samba-dc.corp:49153"
    );
    assert_eq!(config.endpoints[0].receive_window, 8192);
    assert_eq!(config.endpoints[0].setup_timeout, Duration::from_secs(900));
    assert_eq!(
        config.endpoints[1].backend,
        Backend::Remote(Target {
            host: "::1".into(),
            port: 135
        })
    );
    assert_eq!(config.demo.listen, "127.0.0.1:1135".parse().unwrap());
}

#[test]
fn unknown_keys_are_named_with_their_path_and_line() {
    let text = "[[proxy.listener]]\naddress = \"127.0.0.1:1\"\n\n[[proxy.listener]]\naddress = \"127.0.0.1:2\"\ntsl = false\n";
    let failure = error(text);
    let (key, line, message) = parts(&failure);
    assert_eq!(key.as_deref(), Some("proxy.listener[1].tsl"));
    assert_eq!(line, Some(6));
    assert!(message.contains("unknown field `tsl`"), "{message}");
    assert!(message.contains("`tls`"), "expected keys listed: {message}");
    let shown = failure.to_string();
    assert!(
        shown.starts_with("test.toml: line 6, column 1: proxy.listener[1].tsl: unknown field"),
        "{shown}"
    );

    for (text, key) in [
        ("colour = 1\n", "colour"),
        ("[log]\nlevl = \"x\"\n", "log.levl"),
        ("[proxy]\nvalid_port_list = \"\"\n", "proxy.valid_port_list"),
        ("[demo]\nlisten = \"127.0.0.1:0\"\nport = 3\n", "demo.port"),
        (
            "[[endpoint]]\nlisten = \"127.0.0.1:1\"\nbackend = \"demo\"\nbackends = 1\n",
            "endpoint[0].backends",
        ),
    ] {
        let (found, _, message) = parts(&error(text));
        assert_eq!(found.as_deref(), Some(key), "{text}: {message}");
        assert!(message.contains("unknown field"), "{message}");
    }
}

#[test]
fn wrong_types_say_what_was_expected() {
    let (key, line, message) = parts(&error("[proxy]\n\nreceive_window = \"big\"\n"));
    assert_eq!(key.as_deref(), Some("proxy.receive_window"));
    assert_eq!(line, Some(3));
    assert_eq!(
        message,
        "invalid type: string \"big\", expected a whole number without quotes, such as 65536"
    );

    let (key, _, message) = parts(&error("[[proxy.listener]]\naddress = \"localhost:8443\"\n"));
    assert_eq!(key.as_deref(), Some("proxy.listener[0].address"));
    assert!(message.contains("\"127.0.0.1:8443\""), "{message}");

    let (key, _, message) = parts(&error(
        "[[endpoint]]\nlisten = [\n  \"127.0.0.1:1\",\n  \"nope\",\n]\nbackend = \"demo\"\n",
    ));
    assert_eq!(key.as_deref(), Some("endpoint[0].listen"));
    assert!(message.contains("nope"), "{message}");

    let (key, _, message) = parts(&error(
        "[[proxy.valid_port]]\nhost = \"a\"\nports = \"9-1\"\n",
    ));
    assert_eq!(key.as_deref(), Some("proxy.valid_port[0].ports"));
    assert!(message.contains("reversed"), "{message}");

    let (key, _, message) = parts(&error(
        "[[proxy.valid_port]]\nhost = \"a\"\nports = 70000\n",
    ));
    assert_eq!(key.as_deref(), Some("proxy.valid_port[0].ports"));
    assert!(message.contains("out of range"), "{message}");

    let (_, _, message) = parts(&error("[[proxy.listener]]\ntls = true\n"));
    assert!(message.contains("missing field `address`"), "{message}");

    let (_, line, _) = parts(&error("[proxy\n"));
    assert_eq!(line, Some(1));
}

#[test]
fn ranges_are_enforced_with_the_expected_range() {
    for (key, bad) in [
        ("receive_window", "8191"),
        ("receive_window", "1073741825"),
        ("connection_timeout_secs", "119"),
        ("connection_timeout_secs", "14401"),
        ("out_channel_lifetime", "131071"),
        ("out_channel_lifetime", "2147483649"),
        ("connect_timeout_ms", "0"),
        ("handshake_timeout_secs", "0"),
        ("idle_timeout_secs", "86401"),
        ("max_connections", "0"),
    ] {
        let text = format!("{ENDPOINT_ONLY}[proxy]\n{key} = {bad}\n");
        let failure = error(&text);
        let (found, line, message) = parts(&failure);
        assert!(matches!(failure, ConfigError::Invalid { .. }));
        assert_eq!(found, Some(format!("proxy.{key}")));
        assert_eq!(line, Some(5), "{key}");
        assert!(message.contains("out of range: expected"), "{message}");
    }
    let (key, _, message) = parts(&error(
        "[[endpoint]]\nlisten = \"127.0.0.1:1\"\nbackend = \"demo\"\nsetup_timeout_secs = 901\n",
    ));
    assert_eq!(key.as_deref(), Some("endpoint[0].setup_timeout_secs"));
    assert!(message.contains("1..=900"), "{message}");
    let (_, _, message) = parts(&error("[proxy]\nreceive_window = -1\n"));
    assert!(message.contains("-1"), "{message}");
}

#[test]
fn plain_http_only_on_loopback() {
    let error =
        error("[[proxy.listener]]\naddress = \"192.0.2.1:80\"\ntls = false\nauth = [\"ntlm\"]\n");
    let (key, line, message) = parts(&error);
    assert_eq!(key.as_deref(), Some("proxy.listener[0].tls"));
    assert_eq!(line, Some(3));
    assert!(message.contains("plain HTTP"), "{message}");
    let config = parse("[[proxy.listener]]\naddress = \"[::1]:80\"\ntls = false\n");
    assert_eq!(config.proxy.listeners[0].tls, ListenerTls::Plain);
}

#[test]
fn anonymous_off_loopback_must_be_written() {
    let (key, _, message) = parts(&error("[[proxy.listener]]\naddress = \"0.0.0.0:443\"\n"));
    assert_eq!(key.as_deref(), Some("proxy.listener[0].allow_anonymous"));
    assert!(message.contains("allow_anonymous = true"), "{message}");
    let (key, line, _) = parts(&error(
        "[[proxy.listener]]\naddress = \"0.0.0.0:443\"\nallow_anonymous = false\n",
    ));
    assert_eq!(
        (key.as_deref(), line),
        (Some("proxy.listener[0].allow_anonymous"), Some(3))
    );
    let config = parse("[[proxy.listener]]\naddress = \"0.0.0.0:443\"\nallow_anonymous = true\n");
    assert!(config.proxy.listeners[0].anonymous_allowed());
    let config = parse("[[proxy.listener]]\naddress = \"127.0.0.1:443\"\n");
    assert!(config.proxy.listeners[0].anonymous_allowed());
}

#[test]
fn cert_and_key_go_together() {
    let (key, _, _) = parts(&error(
        "[[proxy.listener]]\naddress = \"127.0.0.1:1\"\ncert = \"c.pem\"\n",
    ));
    assert_eq!(key.as_deref(), Some("proxy.listener[0].cert"));
    let (key, _, _) = parts(&error(
        "[[proxy.listener]]\naddress = \"127.0.0.1:1\"\nkey = \"k.pem\"\n",
    ));
    assert_eq!(key.as_deref(), Some("proxy.listener[0].key"));
    let (key, _, message) = parts(&error(
        "[[proxy.listener]]\naddress = \"127.0.0.1:1\"\ntls = false\ncert = \"c.pem\"\nkey = \"k.pem\"\n",
    ));
    assert_eq!(key.as_deref(), Some("proxy.listener[0].cert"));
    assert!(message.contains("tls = false"), "{message}");
}

#[test]
fn something_must_run() {
    let (key, _, message) = parts(&error(""));
    assert_eq!(key.as_deref(), Some("proxy.listener, endpoint"));
    assert!(message.contains("nothing to run"), "{message}");
    let (_, _, message) = parts(&error("[proxy]\nvalid_ports = \"a:1\"\n"));
    assert!(message.contains("nothing to run"), "{message}");
    let config = parse(ENDPOINT_ONLY);
    assert!(config.proxy.listeners.is_empty());
    assert!(config.proxy.valid_ports.is_empty());
}

#[test]
fn endpoint_rules() {
    let (key, _, message) = parts(&error("[[endpoint]]\nlisten = []\nbackend = \"demo\"\n"));
    assert_eq!(key.as_deref(), Some("endpoint[0].listen"));
    assert!(message.contains("at least one"), "{message}");
    for backend in ["", "mbx1", "mbx1:0", "Demo", "a b:1"] {
        let text = format!("[[endpoint]]\nlisten = \"127.0.0.1:1\"\nbackend = \"{backend}\"\n");
        let (key, line, message) = parts(&error(&text));
        assert_eq!(key.as_deref(), Some("endpoint[0].backend"), "{backend}");
        assert_eq!(line, Some(3));
        assert!(message.contains("expected \"demo\""), "{message}");
    }
    let (_, _, message) = parts(&error("[[endpoint]]\nlisten = \"127.0.0.1:1\"\n"));
    assert!(message.contains("missing field `backend`"), "{message}");
}

#[test]
fn valid_ports_errors_point_at_the_entry() {
    let text = format!("{ENDPOINT_ONLY}[proxy]\nvalid_ports = \"a:1;[::1]:593\"\n");
    let (key, line, message) = parts(&error(&text));
    assert_eq!(key.as_deref(), Some("proxy.valid_ports"));
    assert_eq!(line, Some(5));
    assert!(message.contains("entry 2"), "{message}");
    assert!(message.contains("use a host name"), "{message}");

    let text = format!(
        "{ENDPOINT_ONLY}[[proxy.valid_port]]\nhost = \"a\"\nports = 1\n[[proxy.valid_port]]\nhost = \"b c\"\nports = 2\n"
    );
    let (key, line, _) = parts(&error(&text));
    assert_eq!(key.as_deref(), Some("proxy.valid_port[1].host"));
    assert_eq!(line, Some(8));
}

#[test]
fn addresses_cannot_be_used_twice() {
    let (key, _, message) = parts(&error(
        "[[proxy.listener]]\naddress = \"127.0.0.1:6001\"\n[[endpoint]]\nlisten = [\"[::1]:6001\", \"127.0.0.1:6001\"]\nbackend = \"demo\"\n",
    ));
    assert_eq!(key.as_deref(), Some("endpoint[0].listen"));
    assert!(message.contains("proxy.listener[0].address"), "{message}");
    // Port 0 means "any free port" and never collides.
    parse(
        "[[endpoint]]\nlisten = \"127.0.0.1:0\"\nbackend = \"demo\"\n[demo]\nlisten = \"127.0.0.1:0\"\n",
    );
    let (key, _, _) = parts(&error(
        "[[endpoint]]\nlisten = \"127.0.0.1:7\"\nbackend = \"demo\"\n[demo]\nlisten = \"127.0.0.1:7\"\n",
    ));
    assert_eq!(key.as_deref(), Some("demo.listen"));
}

#[test]
fn log_level_is_checked() {
    let text = format!("{ENDPOINT_ONLY}[log]\nlevel = \"info,[[[\"\n");
    let (key, line, message) = parts(&error(&text));
    assert_eq!(key.as_deref(), Some("log.level"));
    assert_eq!(line, Some(5));
    assert!(message.contains("expected a tracing filter"), "{message}");
}

#[test]
fn state_dir_defaults() {
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |name: &str| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| OsString::from(v))
        }
    };
    assert_eq!(
        default_state_dir_with(&env(&[
            ("RPCGATE_STATE_DIR", "/srv/rg"),
            ("XDG_STATE_HOME", "/x"),
            ("HOME", "/h")
        ])),
        PathBuf::from("/srv/rg")
    );
    assert_eq!(
        default_state_dir_with(&env(&[
            ("RPCGATE_STATE_DIR", ""),
            ("XDG_STATE_HOME", "/x"),
            ("HOME", "/h")
        ])),
        PathBuf::from("/x/rpcgate")
    );
    assert_eq!(
        default_state_dir_with(&env(&[("XDG_STATE_HOME", "relative"), ("HOME", "/h")])),
        PathBuf::from("/h/.local/state/rpcgate")
    );
    assert_eq!(
        default_state_dir_with(&env(&[])),
        PathBuf::from("rpcgate-state")
    );
    let config =
        Config::from_toml_str_with_env(ENDPOINT_ONLY, "t", &env(&[("HOME", "/h")])).unwrap();
    assert_eq!(config.state_dir, PathBuf::from("/h/.local/state/rpcgate"));
    let (key, _, _) = parts(&error(&format!("state_dir = \"\"\n{ENDPOINT_ONLY}")));
    assert_eq!(key.as_deref(), Some("state_dir"));
}

#[test]
fn load_names_the_file() {
    let dir = std::env::temp_dir().join(format!("rpcgate-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.toml");
    let error = Config::load(&missing).unwrap_err();
    assert!(matches!(error, ConfigError::Read { .. }));
    assert!(error.to_string().contains("missing.toml"), "{error}");

    let path = dir.join("rpcgate.toml");
    std::fs::write(&path, format!("{ENDPOINT_ONLY}[log]\nlevel = 3\n")).unwrap();
    let error = Config::load(&path).unwrap_err().to_string();
    assert!(
        error.starts_with(&format!("{}: line 5", path.display())),
        "{error}"
    );
    assert!(error.contains("log.level"), "{error}");

    std::fs::write(&path, ENDPOINT_ONLY).unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(config.source, path.display().to_string());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn loopback_detection() {
    for (address, loopback) in [
        ("127.0.0.1:1", true),
        ("127.1.2.3:1", true),
        ("[::1]:1", true),
        ("[::ffff:127.0.0.1]:1", true),
        ("0.0.0.0:1", false),
        ("[::]:1", false),
        ("192.0.2.1:1", false),
        ("[2001:db8::1]:1", false),
    ] {
        let address: SocketAddr = address.parse().unwrap();
        assert_eq!(
            Config::listener_is_loopback(&address),
            loopback,
            "{address}"
        );
    }
}

#[test]
fn key_path_heuristic() {
    let text = "a = 1\n[x]\nb = [\n 1,\n 2,\n]\n[[y.z]]\n[[y.z]]\n# c = 1\nd = 2\n";
    let at = |needle: &str| key_path_at(text, text.find(needle).unwrap());
    assert_eq!(at("1\n[x]"), Some("a".into()));
    assert_eq!(at(" 2,"), Some("x.b".into()));
    assert_eq!(at("d = 2"), Some("y.z[1].d".into()));
    assert_eq!(key_path_at(text, 10_000), None);
}

#[test]
fn auth_settings_and_listener_methods() {
    let config = parse(
        r#"
state_dir = "/var/lib/rpcgate"
[[proxy.listener]]
address = "0.0.0.0:443"
auth = ["negotiate", "ntlm", "basic"]
[[proxy.listener]]
address = "10.0.0.2:80"
tls = false
auth = ["ntlm", "basic"]
trusted_proxies = ["10.0.0.5", "10.1.0.0/24"]
[[proxy.listener]]
address = "127.0.0.1:8080"
tls = false
auth = ["ntlm", "anonymous"]
[auth]
netbios_domain = "SAMDOM"
max_failures_per_user = 0
ntlm_helper = ["/usr/bin/ntlm_auth", "--helper-protocol=squid-2.5-ntlmssp"]
[auth.ldap]
url = "ldap://dc1.samdom.example.com"
starttls = true
bind_dn = "{user}@samdom.example.com"
base_dn = "DC=samdom,DC=example,DC=com"
require_group = "RPC Users"
[auth.kerberos]
keytab = "/etc/rpcgate/http.keytab"
[[auth.allow]]
groups = ["RPC Users"]
targets = "mbx1:6001-6004"
[client]
external_host = "mail.example.com"
auth_package = "negotiate"
"#,
    );
    use crate::auth::Method;
    let listeners = &config.proxy.listeners;
    assert_eq!(
        listeners[0].auth.methods,
        [Method::Negotiate, Method::Ntlm, Method::Basic]
    );
    assert!(!listeners[0].auth.anonymous);
    assert!(listeners[1].auth.trusted_proxies.is_enabled());
    assert!(listeners[2].auth.anonymous && listeners[2].auth.methods == [Method::Ntlm]);
    let auth = &config.auth;
    assert_eq!(auth.users_file, PathBuf::from("/var/lib/rpcgate/users"));
    assert_eq!(auth.names.nb_domain, "SAMDOM");
    assert_eq!(auth.names.dns_domain, "samdom");
    assert_eq!(auth.names.nb_computer, "RPCGATE");
    assert_eq!(auth.throttle.per_user, 0);
    assert_eq!(auth.throttle.per_address, 20);
    assert!(auth.ntlm_helper.is_some());
    let ldap = auth.ldap.as_ref().unwrap();
    assert!(ldap.starttls);
    assert_eq!(ldap.user_filter, "(sAMAccountName={user})");
    assert_eq!(auth.rules.len(), 1);
    assert_eq!(config.client.auth_package, Method::Negotiate);
    assert_eq!(
        config.client.external_host.as_deref(),
        Some("mail.example.com")
    );
}

#[test]
fn auth_errors_name_the_key() {
    let cases = [
        (
            "[[proxy.listener]]\naddress = \"0.0.0.0:443\"\nauth = [\"kerberos\"]\n",
            "proxy.listener[0].auth",
            "unknown method",
        ),
        (
            "[[proxy.listener]]\naddress = \"0.0.0.0:443\"\nauth = [\"ntlm\", \"anonymous\"]\n",
            "proxy.listener[0].auth",
            "allow_anonymous = true",
        ),
        (
            "[[proxy.listener]]\naddress = \"0.0.0.0:443\"\nauth = [\"ntlm\"]\nallow_anonymous = true\n",
            "proxy.listener[0].allow_anonymous",
            "no effect",
        ),
        (
            "[[proxy.listener]]\naddress = \"0.0.0.0:80\"\ntls = false\nallow_anonymous = true\nauth = [\"basic\", \"anonymous\"]\n",
            "proxy.listener[0].auth",
            "Basic sends passwords in clear",
        ),
        (
            "[[proxy.listener]]\naddress = \"0.0.0.0:80\"\ntls = false\nauth = [\"ntlm\"]\ntrusted_proxies = [\"lb\"]\n",
            "proxy.listener[0].trusted_proxies",
            "not an IP address",
        ),
        (
            "[[proxy.listener]]\naddress = \"127.0.0.1:1\"\n[auth.ldap]\nurl = \"ldap://dc1.example.com\"\nbind_dn = \"{user}@x\"\n",
            "auth.ldap.url",
            "in clear",
        ),
        (
            "[[proxy.listener]]\naddress = \"127.0.0.1:1\"\n[auth.ldap]\nurl = \"ldaps://dc1\"\nbind_dn = \"cn=admin\"\n",
            "auth.ldap.bind_dn",
            "{user}",
        ),
        (
            "[[proxy.listener]]\naddress = \"127.0.0.1:1\"\n[[auth.allow]]\ntargets = \"x:1\"\n",
            "auth.allow[0].targets",
            "no users and no groups",
        ),
        (
            "[[proxy.listener]]\naddress = \"127.0.0.1:1\"\n[client]\nauth_package = \"kerberos\"\n",
            "client.auth_package",
            "expected",
        ),
    ];
    for (text, key, words) in cases {
        let (got_key, line, message) = parts(&error(text));
        assert_eq!(got_key.as_deref(), Some(key), "{text}: {message}");
        assert!(line.is_some(), "{text}");
        assert!(message.contains(words), "{text}: {message}");
    }
    // A plain-HTTP listener off loopback is fine behind trusted TLS-offloading proxies.
    let config = parse(
        "[[proxy.listener]]\naddress = \"0.0.0.0:80\"\ntls = false\nauth = [\"basic\"]\ntrusted_proxies = [\"10.0.0.5\"]\n",
    );
    assert!(config.proxy.listeners[0].auth.trusted_proxies.is_enabled());
}
