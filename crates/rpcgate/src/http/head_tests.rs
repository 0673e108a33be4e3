use super::*;
use crate::http::fixtures::{self, Rng};

fn parse(bytes: &[u8]) -> RequestHead {
    let (head, used) = parse_request_head(bytes).unwrap().unwrap();
    assert_eq!(used, bytes.len());
    head
}

fn error(bytes: &[u8]) -> HttpError {
    parse_request_head(bytes).unwrap_err()
}

#[test]
fn impacket_in_channel() {
    let head = parse(fixtures::IMPACKET_IN);
    assert_eq!(head.method, Method::RpcInData);
    assert_eq!(head.path, "/rpc/rpcproxy.dll");
    assert_eq!(head.query.as_deref(), Some("127.0.0.1:6001"));
    assert_eq!(head.version, HttpVersion::V11);
    assert_eq!(head.content_length, Some(1_073_741_824));
    assert!(head.expect_continue);
    assert!(head.keep_alive);
    assert!(!head.chunked);
    assert_eq!(head.header("HOST"), Some("127.0.0.1:18080"));
    assert_eq!(
        head.header("authorization"),
        Some("Basic UlBDSFxBZG1pbmlzdHJhdG9yOnB3")
    );
    assert!(
        head.headers
            .iter()
            .all(|(n, _)| *n == n.to_ascii_lowercase())
    );
    assert!(head.pragmas().contains("no-cache"));
    assert_eq!(head.pragmas().min_conn_timeout_secs(), None);
}

#[test]
fn impacket_ntlm_negotiate_leg_has_no_query() {
    let head = parse(fixtures::IMPACKET_NTLM_NEGOTIATE);
    assert_eq!(head.path, "/rpc/rpcproxy.dll");
    assert_eq!(head.query, None);
    assert_eq!(head.content_length, Some(0));
    assert!(head.expect_continue);
}

#[test]
fn samba_http10_keep_alive_host_without_port() {
    let head = parse(fixtures::SAMBA_OUT);
    assert_eq!(head.method, Method::RpcOutData);
    assert_eq!(head.version, HttpVersion::V10);
    assert!(
        head.keep_alive,
        "HTTP/1.0 with Connection: keep-alive stays open"
    );
    assert!(!head.expect_continue);
    assert_eq!(head.header("host"), Some("127.0.0.1"));
    assert_eq!(head.content_length, Some(76));
}

#[test]
fn freerdp_pragmas() {
    let head = parse(fixtures::FREERDP_IN);
    let pragmas = head.pragmas();
    assert_eq!(
        pragmas.get("resourcetypeuuid"),
        Some("44e265dd-7daf-42cd-8560-3cdb6e7a2729")
    );
    assert_eq!(
        pragmas.get("SessionId"),
        Some("fbd9c34f-397d-471d-a73f-f84a4d3e1f5a")
    );
    assert_eq!(pragmas.iter().count(), 2);
    assert!(!head.expect_continue);
}

#[test]
fn pragma_min_conn_timeout_and_quotes_across_headers() {
    let head = parse(
        b"RPC_OUT_DATA /rpc/rpcproxy.dll?a:1 HTTP/1.1\r\nHost: h\r\n\
          Pragma: No-cache\r\nPragma: MinConnTimeout=300, SessionId=\"abc\"\r\n\r\n",
    );
    let pragmas = head.pragmas();
    assert_eq!(pragmas.min_conn_timeout_secs(), Some(300));
    assert_eq!(pragmas.get("sessionid"), Some("abc"));
    assert_eq!(pragmas.get("No-cache"), None, "bare directive has no value");
    assert!(pragmas.contains("NO-CACHE"));
    let bad = parse(b"GET / HTTP/1.1\r\nHost: h\r\nPragma: MinConnTimeout=12x\r\n\r\n");
    assert_eq!(bad.pragmas().min_conn_timeout_secs(), None);
}

#[test]
fn incomplete_heads_ask_for_more() {
    let full = fixtures::IMPACKET_IN;
    for cut in 0..full.len() {
        assert_eq!(parse_request_head(&full[..cut]), Ok(None), "cut at {cut}");
    }
}

#[test]
fn body_bytes_after_the_head_are_not_consumed() {
    let mut bytes = fixtures::WINDOWS_ECHO.to_vec();
    bytes.extend_from_slice(&[0xf8, 0xe8, 0x18, 0x08]);
    let (head, used) = parse_request_head(&bytes).unwrap().unwrap();
    assert_eq!(used, fixtures::WINDOWS_ECHO.len());
    assert_eq!(head.content_length, Some(4));
    assert_eq!(&bytes[used..], &[0xf8, 0xe8, 0x18, 0x08]);
}

#[test]
fn keep_alive_rules() {
    let cases: &[(&[u8], bool)] = &[
        (b"GET / HTTP/1.1\r\nHost: h\r\n\r\n", true),
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
            false,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, Close\r\n\r\n",
            false,
        ),
        (b"GET / HTTP/1.0\r\n\r\n", false),
        (b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
        (
            b"GET / HTTP/1.0\r\nConnection: TE, keep-alive\r\n\r\n",
            true,
        ),
    ];
    for (bytes, keep_alive) in cases {
        assert_eq!(
            parse(bytes).keep_alive,
            *keep_alive,
            "{}",
            String::from_utf8_lossy(bytes)
        );
    }
}

#[test]
fn expect_continue_is_ignored_in_http10() {
    let head = parse(b"RPC_IN_DATA / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n");
    assert!(!head.expect_continue);
    let head = parse(b"RPC_IN_DATA / HTTP/1.1\r\nHost: h\r\nExpect: 100-Continue \r\n\r\n");
    assert!(head.expect_continue);
}

#[test]
fn methods() {
    for (token, method) in [
        ("RPC_IN_DATA", Method::RpcInData),
        ("RPC_OUT_DATA", Method::RpcOutData),
        ("RPC_CONNECT", Method::RpcConnect),
        ("GET", Method::Get),
        ("POST", Method::Post),
        ("rpc_in_data", Method::Other("rpc_in_data".into())),
    ] {
        let bytes = format!("{token} /x HTTP/1.1\r\nHost: h\r\n\r\n");
        let head = parse(bytes.as_bytes());
        assert_eq!(head.method, method);
        assert_eq!(head.method.as_str(), token);
    }
}

#[test]
fn target_forms() {
    let head = parse(
        b"GET http://proxy.example:80/rpc/rpcproxy.dll?mbx1:6001 HTTP/1.1\r\nHost: h\r\n\r\n",
    );
    assert_eq!(head.path, "/rpc/rpcproxy.dll");
    assert_eq!(head.query.as_deref(), Some("mbx1:6001"));
    let head = parse(b"GET HTTPS://proxy HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!((head.path.as_str(), head.query), ("/", None));
    let head = parse(b"RPC_CONNECT mbx1:593 HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(head.path, "mbx1:593");
    let head = parse(b"GET /rpc/rpcproxy.dll? HTTP/1.1\r\nHost: h\r\n\r\n");
    assert_eq!(head.query.as_deref(), Some(""));
}

#[test]
fn content_length_errors() {
    assert_eq!(
        error(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n"),
        HttpError::DuplicateContentLength { value: 5 }
    );
    assert_eq!(
        error(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n"),
        HttpError::DuplicateContentLength { value: 5 }
    );
    assert_eq!(
        error(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n"),
        HttpError::ConflictingContentLength {
            first: 5,
            second: 7
        }
    );
    for bad in [
        "+5",
        "-1",
        "0x10",
        "1 2",
        "",
        "5.0",
        "99999999999999999999999",
    ] {
        let bytes = format!("GET / HTTP/1.1\r\nHost: h\r\nContent-Length: {bad}\r\n\r\n");
        assert_eq!(
            error(bytes.as_bytes()),
            HttpError::InvalidContentLength {
                value: bad.to_owned()
            },
            "{bad:?}"
        );
    }
    assert_eq!(
        parse(b"GET / HTTP/1.1\r\nHost: h\r\nContent-Length: 18446744073709551615\r\n\r\n")
            .content_length,
        Some(u64::MAX)
    );
}

#[test]
fn transfer_encoding_rules() {
    let head = parse(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: Chunked\r\n\r\n");
    assert!(head.chunked);
    assert_eq!(head.content_length, None);
    assert_eq!(
        error(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"),
        HttpError::ContentLengthWithTransferEncoding
    );
    assert_eq!(
        error(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
        HttpError::UnsupportedTransferEncoding {
            value: "gzip, chunked".into()
        }
    );
    assert_eq!(
        error(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"),
        HttpError::UnsupportedTransferEncoding {
            value: "chunked, chunked".into()
        }
    );
    assert_eq!(
        error(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
        HttpError::TransferEncodingInHttp10
    );
}

#[test]
fn host_rules() {
    assert_eq!(error(b"GET / HTTP/1.1\r\n\r\n"), HttpError::MissingHost);
    assert_eq!(
        error(b"GET / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n"),
        HttpError::DuplicateHeader { name: "host" }
    );
    assert_eq!(parse(b"GET / HTTP/1.0\r\n\r\n").header("host"), None);
}

#[test]
fn obsolete_line_folding_is_named() {
    assert_eq!(
        error(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: one\r\n two\r\n\r\n"),
        HttpError::ObsoleteLineFolding { line: 4 }
    );
    assert_eq!(
        error(b"GET / HTTP/1.1\r\nHost: h\r\nX-A: one\r\n\ttwo\r\n\r\n"),
        HttpError::ObsoleteLineFolding { line: 4 }
    );
}

#[test]
fn malformed_heads() {
    for bad in [
        &b"GET / HTTP/2.0\r\nHost: h\r\n\r\n"[..],
        b"GET / FOO/1.1\r\n\r\n",
        b"GET  HTTP/1.1\r\n\r\n",
        b"G(T / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x01b\r\n\r\n",
    ] {
        assert!(
            matches!(error(bad), HttpError::Malformed { .. }),
            "{:?} -> {:?}",
            String::from_utf8_lossy(bad),
            error(bad)
        );
    }
}

#[test]
fn head_size_limit() {
    let mut big = b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ".to_vec();
    big.resize(MAX_HEAD_LEN, b'a');
    assert_eq!(
        parse_request_head(&big),
        Err(HttpError::HeadTooLarge {
            limit: MAX_HEAD_LEN
        })
    );
    // One byte less is still "incomplete", not an error.
    assert_eq!(parse_request_head(&big[..MAX_HEAD_LEN - 1]), Ok(None));
    // A head ending exactly at the limit is accepted.
    let mut exact = b"GET / HTTP/1.1\r\nHost: h\r\nX-Pad: ".to_vec();
    exact.resize(MAX_HEAD_LEN - 4, b'a');
    exact.extend_from_slice(b"\r\n\r\n");
    let (_, used) = parse_request_head(&exact).unwrap().unwrap();
    assert_eq!(used, MAX_HEAD_LEN);
}

#[test]
fn header_count_limit() {
    let mut ok = b"GET / HTTP/1.1\r\nHost: h\r\n".to_vec();
    for i in 1..MAX_HEADERS {
        ok.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    let mut too_many = ok.clone();
    ok.extend_from_slice(b"\r\n");
    assert_eq!(parse(&ok).headers.len(), MAX_HEADERS);
    too_many.extend_from_slice(b"X-last: v\r\n\r\n");
    assert_eq!(
        error(&too_many),
        HttpError::TooManyHeaders { limit: MAX_HEADERS }
    );
}

#[test]
fn non_utf8_header_values_are_replaced_not_fatal() {
    let head = parse(b"GET / HTTP/1.1\r\nHost: h\r\nUser-Agent: caf\xe9\r\n\r\n");
    assert_eq!(head.header("user-agent"), Some("caf\u{fffd}"));
}

#[test]
fn error_statuses() {
    assert_eq!(HttpError::MissingHost.http_status().0, 400);
    assert_eq!(HttpError::HeadTooLarge { limit: 1 }.http_status().0, 431);
    assert_eq!(
        HttpError::UnsupportedTransferEncoding { value: "x".into() }
            .http_status()
            .0,
        501
    );
}

#[test]
fn response_heads() {
    let (head, used) = parse_response_head(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200")
        .unwrap()
        .unwrap();
    assert_eq!(
        (head.status, head.reason.as_str(), used),
        (100, "Continue", 25)
    );

    let bytes = b"HTTP/1.1 200 Success\r\nContent-Type: application/rpc\r\nContent-Length: 1073741824\r\n\r\n\x05\x00";
    let (head, used) = parse_response_head(bytes).unwrap().unwrap();
    assert_eq!(head.status, 200);
    assert_eq!(head.content_length, Some(1_073_741_824));
    assert_eq!(head.header("content-type"), Some("application/rpc"));
    assert!(head.keep_alive);
    assert_eq!(&bytes[used..], b"\x05\x00");

    let bytes = b"HTTP/1.0 503 RPC Error: 6ba, EEInfo: AAAA\r\nContent-Length: 0\r\n\r\n";
    let (head, _) = parse_response_head(bytes).unwrap().unwrap();
    assert_eq!(head.version, HttpVersion::V10);
    assert_eq!(head.status, 503);
    assert_eq!(head.rpc_error_code(), Some(0x6ba));
    assert!(!head.keep_alive);

    assert_eq!(parse_response_head(b"HTTP/1.1 20"), Ok(None));
    assert!(parse_response_head(b"HTTP/1.1 2x0 OK\r\n\r\n").is_err());
    assert!(matches!(
        parse_response_head(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
        Err(HttpError::ConflictingContentLength { .. })
    ));
}

#[test]
fn rpc_error_code_parsing() {
    let head = |reason: &str| ResponseHead {
        version: HttpVersion::V10,
        status: 503,
        reason: reason.to_owned(),
        headers: Vec::new(),
        content_length: None,
        chunked: false,
        keep_alive: false,
    };
    assert_eq!(head("RPC Error: 5").rpc_error_code(), Some(5));
    assert_eq!(head("RPC Error:6C0").rpc_error_code(), Some(0x6c0));
    assert_eq!(head("RPC Error: ").rpc_error_code(), None);
    assert_eq!(head("RPC Error: 123456789").rpc_error_code(), None);
    assert_eq!(head("Service Unavailable").rpc_error_code(), None);
}

/// Random and mutated input must never panic, and whatever is accepted must be within limits.
#[test]
fn hostile_bytes_never_panic() {
    let mut rng = Rng::new(0x5eed_1234);
    for _ in 0..20_000 {
        let bytes = rng.http_like();
        if let Ok(Some((head, used))) = parse_request_head(&bytes) {
            assert!(used <= bytes.len() && used <= MAX_HEAD_LEN);
            assert!(head.headers.len() <= MAX_HEADERS);
            let _ = head.pragmas().min_conn_timeout_secs();
            let _ = crate::http::classify(&head);
        }
        if let Ok(Some((head, used))) = parse_response_head(&bytes) {
            assert!(used <= bytes.len());
            let _ = head.rpc_error_code();
        }
    }
    for len in [0, 1, 100, MAX_HEAD_LEN + 100] {
        let noise: Vec<u8> = (0..len).map(|_| rng.byte()).collect();
        let _ = parse_request_head(&noise);
        let _ = parse_response_head(&noise);
    }
}
