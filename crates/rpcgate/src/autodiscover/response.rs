//! The response documents (MS-OXDSCLI 2.2.4): Outlook settings, an address redirect, and the
//! error forms, as exact text.
//!
//! ```text
//! <Autodiscover xmlns=".../responseschema/2006">
//!   <Response xmlns=".../outlook/responseschema/2006a">
//!     <User> DisplayName, LegacyDN?, AutoDiscoverSMTPAddress </User>
//!     <Account> AccountType email, Action settings,
//!       <Protocol> EXCH: the user's RPC server </Protocol>
//!       <Protocol> EXPR: the proxy (Server, SSL, AuthPackage, ServerExclusiveConnect,
//!                  CertPrincipalName) </Protocol>
//!     </Account>            (or: Action redirectAddr, RedirectAddr)
//!   </Response>
//! </Autodiscover>
//! ```
//!
//! A request that cannot be read gets an error in the 2006 namespace only (600 invalid
//! request, 601 provider not available); an address that cannot be answered gets one inside
//! the 2006a response (500 not found, 602 bad address, 603 internal error). Every value is
//! escaped, and characters XML 1.0 cannot carry are dropped, so no directory content can
//! change the document's structure.

use std::fmt::Write as _;
use std::time::Duration;

use super::request::OUTLOOK_RESPONSE_NS;
use super::{ErrorCode, Expr, Outcome, UserSettings};

/// The Autodiscover response namespace (MS-OXDSCLI 2.2.4).
pub const RESPONSE_NS: &str =
    "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006";

/// What varies from one error response to the next: the `Time` and `Id` attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// Time of day (UTC) the answer was made.
    pub time_of_day: Duration,
    /// Identifies the answering server (Exchange uses a hash of its name).
    pub id: u32,
}

impl Stamp {
    /// `HH:MM:SS.fffffff`, as Exchange writes `Time`.
    fn time(&self) -> String {
        let secs = self.time_of_day.as_secs() % 86_400;
        let ticks = self.time_of_day.subsec_nanos() / 100;
        format!(
            "{:02}:{:02}:{:02}.{ticks:07}",
            secs / 3600,
            secs / 60 % 60,
            secs % 60
        )
    }
}

/// The whole response document for `outcome`.
pub fn render(outcome: &Outcome, expr: &Expr, stamp: &Stamp) -> String {
    let mut out = String::with_capacity(1024);
    out.push_str("<?xml version=\"1.0\" encoding=\"utf-8\"?>\n");
    let _ = writeln!(out, "<Autodiscover xmlns=\"{RESPONSE_NS}\">");
    match outcome {
        Outcome::Error(code) if !code.in_outlook_schema() => {
            out.push_str("  <Response>\n");
            error(&mut out, *code, stamp);
        }
        Outcome::Error(code) => {
            let _ = writeln!(out, "  <Response xmlns=\"{OUTLOOK_RESPONSE_NS}\">");
            error(&mut out, *code, stamp);
        }
        Outcome::Redirect(address) => {
            let _ = writeln!(out, "  <Response xmlns=\"{OUTLOOK_RESPONSE_NS}\">");
            out.push_str("    <Account>\n");
            element(&mut out, 6, "AccountType", "email");
            element(&mut out, 6, "Action", "redirectAddr");
            element(&mut out, 6, "RedirectAddr", address);
            out.push_str("    </Account>\n");
        }
        Outcome::Settings(user) => {
            let _ = writeln!(out, "  <Response xmlns=\"{OUTLOOK_RESPONSE_NS}\">");
            settings(&mut out, user, expr);
        }
    }
    out.push_str("  </Response>\n</Autodiscover>\n");
    out
}

fn settings(out: &mut String, user: &UserSettings, expr: &Expr) {
    out.push_str("    <User>\n");
    element(out, 6, "DisplayName", &user.display_name);
    if let Some(dn) = &user.legacy_dn {
        element(out, 6, "LegacyDN", dn);
    }
    element(out, 6, "AutoDiscoverSMTPAddress", &user.smtp_address);
    out.push_str("    </User>\n    <Account>\n");
    element(out, 6, "AccountType", "email");
    element(out, 6, "Action", "settings");
    out.push_str("      <Protocol>\n");
    element(out, 8, "Type", "EXCH");
    element(out, 8, "Server", &user.exch_server);
    out.push_str("      </Protocol>\n      <Protocol>\n");
    element(out, 8, "Type", "EXPR");
    element(out, 8, "Server", &expr.server);
    element(out, 8, "SSL", if expr.ssl { "On" } else { "Off" });
    element(out, 8, "AuthPackage", expr.auth_package);
    element(out, 8, "ServerExclusiveConnect", "On");
    if let Some(name) = &expr.cert_principal_name {
        element(out, 8, "CertPrincipalName", name);
    }
    out.push_str("      </Protocol>\n    </Account>\n");
}

fn error(out: &mut String, code: ErrorCode, stamp: &Stamp) {
    let _ = writeln!(
        out,
        "    <Error Time=\"{}\" Id=\"{}\">",
        stamp.time(),
        stamp.id
    );
    element(out, 6, "ErrorCode", &code.number().to_string());
    element(out, 6, "Message", code.message());
    out.push_str("      <DebugData />\n    </Error>\n");
}

fn element(out: &mut String, indent: usize, name: &str, value: &str) {
    let _ = writeln!(out, "{:indent$}<{name}>{}</{name}>", "", escape(value));
}

/// Escapes markup characters and drops characters XML 1.0 does not allow.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if c.is_control() || matches!(c, '\u{fffe}' | '\u{ffff}') => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_cannot_change_structure() {
        assert_eq!(
            escape("a<b>&\"'\u{1}\u{7f}é"),
            "a&lt;b&gt;&amp;&quot;&apos;é"
        );
    }

    #[test]
    fn time_format() {
        let stamp = Stamp {
            time_of_day: Duration::new(16 * 3600 + 56 * 60 + 32, 616_402_700),
            id: 1,
        };
        assert_eq!(stamp.time(), "16:56:32.6164027");
    }
}
