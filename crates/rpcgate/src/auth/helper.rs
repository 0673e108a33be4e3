//! NTLM for domain accounts through Samba winbind's `ntlm_auth` helper.
//!
//! rpcgate cannot verify an NTLM response for a domain account itself: that needs the
//! account's NT hash, which only the domain controller has, and asking a DC to check a
//! response needs the NETLOGON secure channel of a joined machine. winbind has both, and
//! `ntlm_auth --helper-protocol=squid-2.5-ntlmssp` exposes them as a line protocol:
//!
//! ```text
//!  rpcgate -> ntlm_auth   YR <base64 NEGOTIATE_MESSAGE>
//!  ntlm_auth -> rpcgate   TT <base64 CHALLENGE_MESSAGE>
//!  rpcgate -> ntlm_auth   KK <base64 AUTHENTICATE_MESSAGE>
//!  ntlm_auth -> rpcgate   AF DOMAIN\user            (or NA <reason>)
//! ```
//!
//! One helper process serves one handshake (it keeps the NTLM state), started on the
//! NEGOTIATE_MESSAGE and killed when the handshake ends or the connection goes away.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long the helper may take for one answer.
const HELPER_TIMEOUT: Duration = Duration::from_secs(10);

/// Helpers running at once. Every NEGOTIATE_MESSAGE, authenticated or not, starts one, so the
/// number is bounded; past it, NTLM works for local accounts only until one ends.
pub const MAX_HELPERS: usize = 64;

/// A running helper in the middle of a handshake.
#[derive(Debug)]
pub struct Helper {
    _permit: OwnedSemaphorePermit,
    _child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

/// The helper's verdict on an AUTHENTICATE_MESSAGE.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HelperVerdict {
    /// `AF`: the account, as `DOMAIN\user`.
    Authenticated(String),
    /// `NA` (or anything unexpected), with the helper's reason.
    Refused(String),
}

impl Helper {
    /// Starts `command` (program and arguments) and sends it the NEGOTIATE_MESSAGE; returns the
    /// helper and its CHALLENGE_MESSAGE.
    pub async fn start(
        command: &[String],
        negotiate: &[u8],
        limit: &Arc<Semaphore>,
    ) -> Result<(Self, Vec<u8>), String> {
        let permit = limit
            .clone()
            .try_acquire_owned()
            .map_err(|_| format!("{MAX_HELPERS} helpers are running already"))?;
        let (program, args) = command
            .split_first()
            .ok_or_else(|| "ntlm_helper is empty".to_owned())?;
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(format!("{program}: no pipes"));
        };
        let mut helper = Self {
            _permit: permit,
            _child: child,
            stdin,
            stdout: BufReader::new(stdout),
        };
        let answer = helper.ask("YR", negotiate).await?;
        match answer.split_once(' ') {
            Some(("TT", token)) => B64
                .decode(token.trim())
                .map(|challenge| (helper, challenge))
                .map_err(|_| "the helper's TT answer is not base64".to_owned()),
            _ => Err(format!(
                "unexpected helper answer to YR: {}",
                first_word(&answer)
            )),
        }
    }

    /// Sends the AUTHENTICATE_MESSAGE and reads the verdict.
    pub async fn finish(mut self, authenticate: &[u8]) -> Result<HelperVerdict, String> {
        let answer = self.ask("KK", authenticate).await?;
        Ok(match answer.split_once(' ') {
            Some(("AF", user)) => HelperVerdict::Authenticated(user.trim().to_owned()),
            Some(("NA", reason)) => HelperVerdict::Refused(reason.trim().to_owned()),
            _ => HelperVerdict::Refused(format!("helper answered {}", first_word(&answer))),
        })
    }

    async fn ask(&mut self, verb: &str, token: &[u8]) -> Result<String, String> {
        let line = format!("{verb} {}\n", B64.encode(token));
        let exchange = async {
            self.stdin
                .write_all(line.as_bytes())
                .await
                .map_err(|e| format!("writing to the helper: {e}"))?;
            self.stdin
                .flush()
                .await
                .map_err(|e| format!("writing to the helper: {e}"))?;
            let mut answer = String::new();
            match self.stdout.read_line(&mut answer).await {
                Ok(0) => Err("the helper exited".to_owned()),
                Ok(_) => Ok(answer.trim_end().to_owned()),
                Err(e) => Err(format!("reading from the helper: {e}")),
            }
        };
        tokio::time::timeout(HELPER_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no answer from the helper within {HELPER_TIMEOUT:?}"))?
    }
}

/// The first word of a helper line, for logs (never the token after it).
fn first_word(line: &str) -> &str {
    line.split_whitespace().next().unwrap_or("(empty)")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in helper: a shell script that speaks the protocol.
    #[tokio::test]
    async fn speaks_the_line_protocol() {
        let script = r#"read a b; echo "TT VGVzdA=="; read c d; printf 'AF DOM\\alice\n'"#;
        let command = vec!["/bin/sh".to_owned(), "-c".to_owned(), script.to_owned()];
        let limit = Arc::new(Semaphore::new(1));
        let (helper, challenge) = Helper::start(&command, b"one", &limit).await.unwrap();
        // The one permit is taken while the helper runs.
        assert!(Helper::start(&command, b"one", &limit).await.is_err());
        assert_eq!(challenge, b"Test");
        assert_eq!(
            helper.finish(b"three").await.unwrap(),
            HelperVerdict::Authenticated("DOM\\alice".into())
        );
        let refuse = vec![
            "/bin/sh".into(),
            "-c".into(),
            "read a b; echo 'BH broken'".into(),
        ];
        assert!(Helper::start(&refuse, b"x", &limit).await.is_err());
    }
}
