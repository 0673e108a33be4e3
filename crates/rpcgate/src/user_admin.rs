//! `rpcgate user add|remove|list`: managing the local user file ([`crate::auth::users`]).
//!
//! The file is the one given with `--file`, else `auth.users_file` of `--config`, else that of
//! the embedded default (`<state_dir>/users`). Passwords are never taken from the command
//! line (it shows in `ps` and shell history): `add` prompts twice on a terminal, or reads one
//! line from standard input (`printf '%s\n' "$pw" | rpcgate user add alice`).

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::auth::users::{self, User};

/// Which user file to use.
pub fn resolve_file(file: Option<PathBuf>, config: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(file) = file {
        return Ok(file);
    }
    Ok(crate::serve::load_config(config)?.auth.users_file)
}

/// Reads the new password: twice from a terminal, or one line from standard input.
pub fn read_password(name: &str) -> anyhow::Result<String> {
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password(format!("Password for {name}: "))?;
        let second = rpassword::prompt_password("Again: ")?;
        if first != second {
            bail!("the passwords differ");
        }
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        bail!("no password on standard input (give it as one line)");
    }
    Ok(password)
}

/// `user add`.
pub fn add(
    path: &Path,
    name: &str,
    password: &str,
    groups: Vec<String>,
    with_nt_hash: bool,
    force: bool,
) -> anyhow::Result<String> {
    let mut all = users::load(path)?;
    let existing = all.iter().position(|u| u.name.eq_ignore_ascii_case(name));
    if existing.is_some() && !force {
        bail!(
            "user {name} exists in {}: use --force to replace it",
            path.display()
        );
    }
    let user = users::new_user(name, password, groups, with_nt_hash)?;
    let verb = match existing {
        Some(index) => {
            if let Some(slot) = all.get_mut(index) {
                *slot = user;
            }
            "replaced"
        }
        None => {
            all.push(user);
            "added"
        }
    };
    users::save(path, &all)?;
    Ok(format!(
        "{verb} {name} in {}{}",
        path.display(),
        if with_nt_hash {
            " (argon2id for Basic, NT hash for NTLM)"
        } else {
            " (argon2id for Basic only; no NTLM)"
        }
    ))
}

/// `user remove`.
pub fn remove(path: &Path, name: &str) -> anyhow::Result<String> {
    let mut all = users::load(path)?;
    let before = all.len();
    all.retain(|u| !u.name.eq_ignore_ascii_case(name));
    if all.len() == before {
        bail!("no user {name} in {}", path.display());
    }
    users::save(path, &all)?;
    Ok(format!("removed {name} from {}", path.display()))
}

/// `user list`: names, whether NTLM works, groups (never hashes).
pub fn list(path: &Path) -> anyhow::Result<String> {
    let all: Vec<User> = users::load(path)?;
    if all.is_empty() {
        return Ok(format!("no users in {}", path.display()));
    }
    let mut out = format!("{:<24} {:<6} groups\n", "user", "ntlm");
    for user in all {
        out.push_str(&format!(
            "{:<24} {:<6} {}\n",
            user.name,
            if user.nt_hash.is_some() { "yes" } else { "no" },
            user.groups.join(",")
        ));
    }
    Ok(out.trim_end().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_list_remove() {
        let dir = std::env::temp_dir().join(format!("rpcgate-useradmin-{}", std::process::id()));
        let path = dir.join("users");
        add(&path, "alice", "pw", vec!["g1".into()], true, false).unwrap();
        assert!(add(&path, "ALICE", "pw2", vec![], true, false).is_err());
        add(&path, "ALICE", "pw2", vec![], false, true).unwrap();
        add(&path, "bob", "pw", vec![], true, false).unwrap();
        let listing = list(&path).unwrap();
        assert!(
            listing.contains("ALICE") && listing.contains("bob"),
            "{listing}"
        );
        assert!(!listing.contains("argon2"));
        remove(&path, "bob").unwrap();
        assert!(remove(&path, "bob").is_err());
        assert!(!list(&path).unwrap().contains("bob"));
        let _ = std::fs::remove_dir_all(dir);
    }
}
