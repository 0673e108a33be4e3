//! The local user file: one account per line, managed with `rpcgate user add|remove|list`.
//!
//! ```text
//! # name:argon2id PHC string:NT hash (32 hex digits, or -):groups (comma-separated)
//! alice:$argon2id$v=19$m=19456,t=2,p=1$...$...:8846f7eaee8fb117ad06bdd830b7586c:rpc-users
//! ```
//!
//! The argon2id hash verifies Basic passwords. The NT hash (MD4 of the UTF-16LE password) is
//! what NTLM needs: NTLM proves knowledge of exactly that value, so it is *password-equivalent
//! for NTLM* — anyone who reads the file can authenticate as the user with NTLM (not with
//! Basic). The file is therefore written with mode 0600, and `user add --no-nt-hash` leaves it
//! out for accounts that only use Basic. Names are compared case-insensitively, as Windows
//! does. The proxy re-reads the file when its modification time changes, so accounts added
//! while rpcgate runs work at once.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Argon2, PasswordHash};

/// Longest user or group name accepted.
pub const MAX_NAME_LEN: usize = 256;

/// One account.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// NT hash, if stored.
    pub nt_hash: Option<[u8; 16]>,
    pub groups: Vec<String>,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("nt_hash", &self.nt_hash.map(|_| "<stored>"))
            .field("groups", &self.groups)
            .finish_non_exhaustive()
    }
}

/// Why the user file could not be read or changed. The administrator is at fault.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsersError {
    #[error("cannot read user file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write user file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("user file {}, line {line}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Checks a user or group name: non-empty, at most [`MAX_NAME_LEN`] bytes, no `:`, `,`,
/// whitespace or control characters.
pub fn check_name(name: &str, what: &str) -> Result<(), UsersError> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(UsersError::Invalid(format!(
            "{what} name must be 1..={MAX_NAME_LEN} bytes"
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| *c == ':' || *c == ',' || c.is_whitespace() || c.is_control())
    {
        return Err(UsersError::Invalid(format!(
            "{what} name {name:?} contains {bad:?}: ':' ',' spaces and control characters are not allowed"
        )));
    }
    Ok(())
}

/// Parses the text of a user file.
pub fn parse(text: &str, path: &Path) -> Result<Vec<User>, UsersError> {
    let mut users: Vec<User> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let syntax = |message: String| UsersError::Syntax {
            path: path.to_owned(),
            line: index + 1,
            message,
        };
        let parts: Vec<&str> = line.split(':').collect();
        let [name, hash, nt, groups] = parts.as_slice() else {
            return Err(syntax(format!(
                "expected name:argon2id-hash:nt-hash:groups (4 fields), found {}",
                parts.len()
            )));
        };
        check_name(name, "user").map_err(|e| syntax(e.to_string()))?;
        if PasswordHash::new(hash).is_err() {
            return Err(syntax(format!(
                "the password hash of {name} is not a PHC string"
            )));
        }
        let nt_hash = match *nt {
            "" | "-" => None,
            hex => Some(
                parse_hex16(hex)
                    .ok_or_else(|| syntax(format!("the NT hash of {name} is not 32 hex digits")))?,
            ),
        };
        let groups: Vec<String> = groups
            .split(',')
            .map(str::trim)
            .filter(|g| !g.is_empty())
            .map(str::to_owned)
            .collect();
        if users.iter().any(|u| u.name.eq_ignore_ascii_case(name)) {
            return Err(syntax(format!("user {name} is listed twice")));
        }
        users.push(User {
            name: (*name).to_owned(),
            password_hash: (*hash).to_owned(),
            nt_hash,
            groups,
        });
    }
    Ok(users)
}

/// The text of a user file.
pub fn format(users: &[User]) -> String {
    let mut text = String::from(
        "# rpcgate user file: name:argon2id hash:NT hash (or -):groups\n\
         # Managed with `rpcgate user add|remove|list`. The NT hash is password-equivalent\n\
         # for NTLM: keep this file private (mode 0600).\n",
    );
    for user in users {
        let nt = user.nt_hash.map_or_else(|| "-".to_owned(), |h| to_hex(&h));
        text.push_str(&format!(
            "{}:{}:{}:{}\n",
            user.name,
            user.password_hash,
            nt,
            user.groups.join(",")
        ));
    }
    text
}

/// Reads a user file; a missing file is an empty list.
pub fn load(path: &Path) -> Result<Vec<User>, UsersError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(UsersError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Writes a user file atomically (a temporary file renamed over it), mode 0600.
pub fn save(path: &Path, users: &[User]) -> Result<(), UsersError> {
    let write_err = |source| UsersError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(write_err)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = options.open(&tmp).and_then(|mut file| {
        file.write_all(format(users).as_bytes())?;
        file.sync_all()
    });
    if let Err(e) = result.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(write_err(e));
    }
    Ok(())
}

/// A new account from a password: argon2id (default parameters, random salt) and, unless
/// `with_nt_hash` is false, the NT hash.
pub fn new_user(
    name: &str,
    password: &str,
    groups: Vec<String>,
    with_nt_hash: bool,
) -> Result<User, UsersError> {
    check_name(name, "user")?;
    for group in &groups {
        check_name(group, "group")?;
    }
    if password.is_empty() {
        return Err(UsersError::Invalid("the password must not be empty".into()));
    }
    let hash = Argon2::default()
        .hash_password(password.as_bytes())
        .map_err(|e| UsersError::Invalid(format!("argon2: {e}")))?
        .to_string();
    Ok(User {
        name: name.to_owned(),
        password_hash: hash,
        nt_hash: with_nt_hash.then(|| super::ntlm::nt_hash(password)),
        groups,
    })
}

/// Verifies a password against a PHC string (argon2 compares in constant time).
pub fn verify_password(hash: &str, password: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash that verifies nothing, checked against when a user does not exist so that the
/// answer takes as long as for a wrong password.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        Argon2::default()
            .hash_password(b"rpcgate: no such user")
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// The user file as the proxy uses it: loaded at start, reloaded when it changes on disk.
#[derive(Debug)]
pub struct UserStore {
    path: PathBuf,
    state: Mutex<(Option<SystemTime>, std::sync::Arc<Vec<User>>)>,
}

impl UserStore {
    /// Loads the file (a missing file is an empty store; a malformed one is an error).
    pub fn open(path: &Path) -> Result<Self, UsersError> {
        let users = load(path)?;
        Ok(Self {
            path: path.to_owned(),
            state: Mutex::new((modified(path), std::sync::Arc::new(users))),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The accounts now; re-reads the file if its modification time changed. A file that
    /// became malformed keeps the previous accounts (and says so in the log).
    pub fn users(&self) -> std::sync::Arc<Vec<User>> {
        let now = modified(&self.path);
        let mut state = match self.state.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if now != state.0 {
            match load(&self.path) {
                Ok(users) => {
                    tracing::info!(file = %self.path.display(), users = users.len(), "user file reloaded");
                    *state = (now, std::sync::Arc::new(users));
                }
                Err(e) => {
                    tracing::warn!("{e}; keeping the previous accounts");
                    state.0 = now;
                }
            }
        }
        state.1.clone()
    }

    /// The account called `name` (case-insensitive).
    pub fn find(&self, name: &str) -> Option<User> {
        self.users()
            .iter()
            .find(|u| u.name.eq_ignore_ascii_case(name))
            .cloned()
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn parse_hex16(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_format_parse_verify() {
        let user = new_user("alice", "s3cret", vec!["rpc".into()], true).unwrap();
        assert!(user.password_hash.starts_with("$argon2id$"));
        let text = format(std::slice::from_ref(&user));
        let parsed = parse(&text, Path::new("f")).unwrap();
        assert_eq!(parsed, vec![user.clone()]);
        assert!(verify_password(&parsed[0].password_hash, "s3cret"));
        assert!(!verify_password(&parsed[0].password_hash, "s3cre"));
        assert_eq!(
            parsed[0].nt_hash,
            Some(crate::auth::ntlm::nt_hash("s3cret"))
        );
        assert!(!format!("{user:?}").contains(&user.password_hash));
        let basic_only = new_user("bob", "pw", vec![], false).unwrap();
        assert!(format(&[basic_only]).contains(":-:"));
    }

    #[test]
    fn bad_lines_name_the_line() {
        let err = parse("# c\n\nalice:x\n", Path::new("users")).unwrap_err();
        assert!(err.to_string().contains("users, line 3"), "{err}");
        let err = parse("a:notphc:-:\n", Path::new("u")).unwrap_err();
        assert!(err.to_string().contains("PHC"), "{err}");
        let user = new_user("a", "p", vec![], false).unwrap();
        let twice = format(&[
            user.clone(),
            User {
                name: "A".into(),
                ..user
            },
        ]);
        assert!(
            parse(&twice, Path::new("u"))
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
        assert!(check_name("a:b", "user").is_err());
        assert!(check_name("a b", "user").is_err());
        assert!(check_name("", "user").is_err());
        assert!(new_user("a", "", vec![], true).is_err());
    }

    #[test]
    fn store_reloads_and_saves_private() {
        let dir = std::env::temp_dir().join(format!("rpcgate-users-{}", std::process::id()));
        let path = dir.join("users");
        let store = UserStore::open(&path).unwrap();
        assert!(store.find("alice").is_none());
        save(&path, &[new_user("alice", "pw", vec![], true).unwrap()]).unwrap();
        assert!(store.find("ALICE").is_some());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}
