//! The Autodiscover readers on arbitrary bytes: the bounded XML reader, the Outlook request
//! parser and the decision it leads to (as a proxy listener runs them on an authenticated
//! request body), and the response parser of `rpcgate ping --autodiscover`.
//!
//! Nothing may panic. What the reader accepts respects its limits; an answer rendered for any
//! body is itself well-formed XML that the response parser reads back with the same outcome.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use rpcgate::auth::Method;
use rpcgate::autodiscover::client::{Discovered, parse_response};
use rpcgate::autodiscover::{
    AutodiscoverConfig, Entry, Facts, Lookup, Outcome, Settings, Stamp, conclude, decide, response,
    xml,
};

fuzz_target!(|data: &[u8]| {
    if let Ok(root) = xml::parse(data) {
        let mut stack = vec![(&root, 1usize)];
        let mut count = 0;
        while let Some((element, depth)) = stack.pop() {
            count += 1;
            assert!(depth <= xml::MAX_DEPTH);
            assert!(element.text.chars().count() <= xml::MAX_TEXT);
            stack.extend(element.children.iter().map(|c| (c, depth + 1)));
        }
        assert!(count <= xml::MAX_ELEMENTS);
    }
    let _ = parse_response(data);
    let settings = Settings {
        external_host: "mail.contoso.com".into(),
        ssl: true,
        auth_package: Method::Negotiate,
        cert_principal_name: Some("msstd:mail.contoso.com".into()),
        service: AutodiscoverConfig {
            domains: vec!["contoso.com".into()],
            server: Some("mbx1.contoso.com".into()),
            users: vec![],
            redirect_domains: vec![("fabrikam.com".into(), "contoso.com".into())],
            ldap: None,
        },
    };
    let decided = match decide(data, &settings.service) {
        Ok(address) => conclude(&address, Lookup::Found(Entry::default()), &settings.service),
        Err(decided) => decided,
    };
    let stamp = Stamp {
        time_of_day: Duration::from_secs(1),
        id: 1,
    };
    let text = response::render(&decided.outcome, &settings.expr(&Facts::default()), &stamp);
    let read = parse_response(text.as_bytes()).expect("a rendered answer reads back");
    match (&decided.outcome, read) {
        (Outcome::Settings(user), Discovered::Settings { exch, .. }) => {
            assert_eq!(exch.and_then(|e| e.server), Some(user.exch_server.clone()));
        }
        (Outcome::Redirect(to), Discovered::Redirect(read)) => assert_eq!(*to, read),
        (Outcome::Error(code), Discovered::Error { code: read, .. }) => {
            assert_eq!(code.number(), read)
        }
        (outcome, read) => panic!("{outcome:?} read back as {read:?}"),
    }
});
