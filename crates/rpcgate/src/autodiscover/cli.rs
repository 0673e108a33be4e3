//! `rpcgate autodiscover EMAIL [--config FILE]`: the document a client asking for `EMAIL`
//! would receive from this configuration (directory lookup included), on standard output,
//! with a one-line summary and the reason on standard error.

use std::path::PathBuf;

use super::{Facts, Outcome, service_from_config};

/// Runs the command; `Ok(true)` when the answer is settings or a redirect.
pub async fn run(config: Option<PathBuf>, email: &str, negotiate: bool) -> anyhow::Result<bool> {
    let config = crate::serve::load_config(config)?;
    let Some(service) = service_from_config(&config)? else {
        anyhow::bail!(
            "{}: Autodiscover is not configured (no [autodiscover] section)",
            config.source
        );
    };
    let facts = Facts {
        client_can_handle_negotiate: negotiate,
    };
    let answer = service.answer_address(email, &facts).await;
    let expr = service.settings().expr(&facts);
    let summary = match &answer.decided.outcome {
        Outcome::Settings(user) => format!(
            "{email}: settings for {} <{}>: EXCH {}, EXPR {} (SSL {}, {}{})",
            user.display_name,
            user.smtp_address,
            user.exch_server,
            expr.server,
            if expr.ssl { "On" } else { "Off" },
            expr.auth_package,
            expr.cert_principal_name
                .as_deref()
                .map(|n| format!(", {n}"))
                .unwrap_or_default()
        ),
        Outcome::Redirect(to) => format!("{email}: redirectAddr {to}"),
        Outcome::Error(code) => format!("{email}: error {} ({})", code.number(), code.message()),
    };
    eprintln!("{summary}\n  because: {}", answer.decided.reason);
    print!("{}", answer.xml);
    Ok(!matches!(answer.decided.outcome, Outcome::Error(_)))
}
