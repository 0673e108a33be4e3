//! `rpcgate::http::parse_request_head` on arbitrary bytes, then what the proxy derives from a
//! head: the request kind (`classify`, with the `?server:port` target parser) and the pragmas.
//!
//! Nothing may panic, and a head must not depend on how the bytes were segmented: a head that
//! parses after `n` bytes parses the same from exactly those `n` bytes (the body is never
//! looked at), and a shorter read of it asks for more bytes rather than failing.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rpcgate::http::{MAX_HEAD_LEN, RequestKind, classify, parse_request_head};

fuzz_target!(|data: &[u8]| {
    let (head, used) = match parse_request_head(data) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            assert!(data.len() < MAX_HEAD_LEN, "incomplete head past the limit");
            return;
        }
        Err(e) => {
            let _ = (e.to_string(), e.http_status());
            return;
        }
    };
    assert!(
        used > 0 && used <= data.len().min(MAX_HEAD_LEN),
        "used {used} of {}",
        data.len()
    );

    let whole = data.get(..used).unwrap_or(data);
    assert_eq!(
        parse_request_head(whole),
        Ok(Some((head.clone(), used))),
        "the head depends on the bytes after it"
    );
    for short in [used - 1, used / 2] {
        let prefix = data.get(..short).unwrap_or(data);
        assert_eq!(
            parse_request_head(prefix),
            Ok(None),
            "a {short}-byte read of a {used}-byte head does not ask for more"
        );
    }

    assert!(
        head.headers
            .iter()
            .all(|(name, _)| *name == name.to_ascii_lowercase()),
        "header names are not lowercase"
    );
    let pragmas = head.pragmas();
    let _ = (pragmas.iter().count(), pragmas.min_conn_timeout_secs());

    let kind = classify(&head);
    match &kind {
        RequestKind::InChannel { target } | RequestKind::OutChannel { target } => {
            assert!(target.port != 0 && !target.host.is_empty(), "{target:?}");
            let _ = target.ip();
            assert!(kind.http_status().is_none());
        }
        RequestKind::Echo => assert!(kind.http_status().is_none()),
        _ => assert!(kind.http_status().is_some(), "{kind:?} has no error status"),
    }
});
