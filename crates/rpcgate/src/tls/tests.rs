use std::os::unix::fs::PermissionsExt;

use rustls::Connection;
use rustls::pki_types::ServerName;

use super::*;

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("rpcgate-tls-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Runs a TLS handshake in memory; returns the negotiated ALPN protocol.
fn handshake(
    client: Arc<ClientConfig>,
    server: Arc<ServerConfig>,
    name: &str,
) -> Result<Option<Vec<u8>>, rustls::Error> {
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let mut client = Connection::Client(rustls::ClientConnection::new(client, name)?);
    let mut server = Connection::Server(rustls::ServerConnection::new(server)?);
    for _ in 0..10 {
        if !client.is_handshaking() && !server.is_handshaking() {
            return Ok(client.alpn_protocol().map(<[u8]>::to_vec));
        }
        transfer(&mut client, &mut server)?;
        transfer(&mut server, &mut client)?;
    }
    panic!("handshake did not finish");
}

fn transfer(from: &mut Connection, to: &mut Connection) -> Result<(), rustls::Error> {
    let mut bytes = Vec::new();
    while from.wants_write() {
        from.write_tls(&mut bytes).unwrap();
    }
    let mut rest = bytes.as_slice();
    while !rest.is_empty() {
        to.read_tls(&mut rest).unwrap();
    }
    to.process_new_packets().map(|_| ())
}

#[test]
fn generates_then_reuses() {
    let dir = TempDir::new("generate");
    let state = dir.0.join("state/nested");
    let first = load_or_generate_self_signed(&state).unwrap();
    assert!(first.generated);
    assert_eq!(first.cert, state.join("cert.pem"));
    assert_eq!(first.key, state.join("key.pem"));
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&first.key), 0o600);
    assert_eq!(mode(&state), 0o700);
    let cert_text = fs::read_to_string(&first.cert).unwrap();
    assert!(cert_text.starts_with("-----BEGIN CERTIFICATE-----"));

    let second = load_or_generate_self_signed(&state).unwrap();
    assert!(!second.generated);
    assert_eq!(fs::read_to_string(&second.cert).unwrap(), cert_text);
    // No temporary files left behind.
    let mut names: Vec<_> = fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["cert.pem", "key.pem"]);
}

#[test]
fn reuse_tightens_key_permissions_and_broken_pairs_are_replaced() {
    let dir = TempDir::new("replace");
    let pair = load_or_generate_self_signed(&dir.0).unwrap();
    fs::set_permissions(&pair.key, fs::Permissions::from_mode(0o644)).unwrap();
    assert!(!load_or_generate_self_signed(&dir.0).unwrap().generated);
    assert_eq!(
        fs::metadata(&pair.key).unwrap().permissions().mode() & 0o777,
        0o600
    );

    fs::write(&pair.cert, "garbage").unwrap();
    let again = load_or_generate_self_signed(&dir.0).unwrap();
    assert!(again.generated);
    server_config(&again.cert, &again.key).unwrap();

    fs::remove_file(&pair.key).unwrap();
    assert!(load_or_generate_self_signed(&dir.0).unwrap().generated);
}

#[test]
fn self_signed_names_cover_loopback_and_verify() {
    let names = self_signed_names();
    assert_eq!(&names[..3], ["localhost", "127.0.0.1", "::1"]);

    let dir = TempDir::new("verify");
    let pair = load_or_generate_self_signed(&dir.0).unwrap();
    let server = server_config(&pair.cert, &pair.key).unwrap();
    assert_eq!(server.alpn_protocols, vec![b"http/1.1".to_vec()]);
    // The certificate is its own CA: a client trusting it verifies every loopback name.
    let client = client_config(Some(&pair.cert), false).unwrap();
    for name in ["localhost", "127.0.0.1", "::1"] {
        let alpn = handshake(client.clone(), server.clone(), name).unwrap();
        assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]), "{name}");
    }
    if let Some(host) = names.get(3) {
        handshake(client.clone(), server.clone(), host).unwrap();
    }
    // ... but not other names.
    let error = handshake(client, server.clone(), "mbx1.contoso.com").unwrap_err();
    assert!(
        matches!(error, rustls::Error::InvalidCertificate(_)),
        "{error:?}"
    );
    // The insecure client accepts any name.
    let insecure = client_config(None, true).unwrap();
    handshake(insecure, server, "mbx1.contoso.com").unwrap();
}

#[test]
fn a_client_with_another_ca_rejects_the_certificate() {
    let one = TempDir::new("ca-one");
    let two = TempDir::new("ca-two");
    let first = load_or_generate_self_signed(&one.0).unwrap();
    let second = load_or_generate_self_signed(&two.0).unwrap();
    let server = server_config(&first.cert, &first.key).unwrap();
    let client = client_config(Some(&second.cert), false).unwrap();
    assert!(handshake(client, server, "localhost").is_err());
}

#[test]
fn tls12_and_tls13_are_both_offered() {
    let dir = TempDir::new("versions");
    let pair = load_or_generate_self_signed(&dir.0).unwrap();
    let server = server_config(&pair.cert, &pair.key).unwrap();
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let client = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[version])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(
                danger::AcceptAnyServerCert::new(provider()),
            ))
            .with_no_client_auth();
        // No ALPN offered by the client (like every RPC client): still fine.
        assert_eq!(
            handshake(Arc::new(client), server.clone(), "localhost").unwrap(),
            None
        );
    }
}

#[test]
fn file_errors_name_the_file_and_the_problem() {
    let dir = TempDir::new("errors");
    let pair = load_or_generate_self_signed(&dir.0.join("good")).unwrap();
    let other = load_or_generate_self_signed(&dir.0.join("other")).unwrap();
    let missing = dir.0.join("missing.pem");
    let der = dir.0.join("cert.der");
    fs::write(&der, [0x30, 0x82, 0x01, 0x00]).unwrap();
    let damaged = dir.0.join("damaged.pem");
    fs::write(
        &damaged,
        "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
    )
    .unwrap();

    let error = server_config(&missing, &pair.key).unwrap_err();
    assert!(
        matches!(
            error,
            TlsError::Read {
                what: "certificate",
                ..
            }
        ),
        "{error}"
    );
    assert!(error.to_string().contains("missing.pem"), "{error}");

    let error = server_config(&der, &pair.key).unwrap_err();
    assert!(matches!(error, TlsError::NotPem { .. }), "{error}");
    assert!(error.to_string().contains("cert.der"), "{error}");

    let error = server_config(&damaged, &pair.key).unwrap_err();
    assert!(matches!(error, TlsError::BadPem { .. }), "{error}");

    let error = server_config(&pair.key, &pair.key).unwrap_err();
    assert!(matches!(error, TlsError::NoCertificate { .. }), "{error}");

    let error = server_config(&pair.cert, &pair.cert).unwrap_err();
    assert!(matches!(error, TlsError::NoPrivateKey { .. }), "{error}");
    assert!(error.to_string().contains("cert.pem"), "{error}");

    let error = server_config(&pair.cert, &other.key).unwrap_err();
    assert!(matches!(error, TlsError::CertKey { .. }), "{error}");

    let error = client_config(Some(&pair.key), false).unwrap_err();
    assert!(
        matches!(error, TlsError::NoCertificate { what: "CA", .. }),
        "{error}"
    );
    let error = client_config(Some(&missing), false).unwrap_err();
    assert!(
        matches!(error, TlsError::Read { what: "CA", .. }),
        "{error}"
    );
    // Insecure ignores the CA file entirely.
    client_config(Some(&missing), true).unwrap();
}

#[test]
fn system_bundle_or_a_clear_error() {
    match client_config(None, false) {
        Ok(config) => {
            assert!(Path::new(SYSTEM_CA_BUNDLE).exists());
            assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        }
        Err(error) => {
            assert!(!Path::new(SYSTEM_CA_BUNDLE).exists(), "{error}");
            assert!(matches!(error, TlsError::NoTrustAnchors));
        }
    }
}

#[test]
fn state_dir_that_cannot_be_created() {
    let dir = TempDir::new("blocked");
    let file = dir.0.join("a-file");
    fs::write(&file, "x").unwrap();
    let error = load_or_generate_self_signed(&file.join("state")).unwrap_err();
    assert!(matches!(error, TlsError::CreateDir { .. }), "{error}");
    assert!(error.to_string().contains("a-file"), "{error}");
}
