//! The directory configurator: ValidPorts entries kept current from LDAP (Active Directory,
//! Samba AD, OpenLDAP), without touching anyone else's entries.
//!
//! Every `interval` the [`ldap`] shell asks the directory for the backend servers; the
//! sans-I/O [`merge`] core turns them into entries for each server's FQDN and NetBIOS name
//! with the configured port set, merges them after the static entries (never changed), and
//! diffs them against the previous list. The [`Manager`] applies the result to the running
//! proxy in one swap (live channels keep running; new ones see the new list), logs the diff,
//! persists the discovered entries in the state directory (loaded again at start, so a restart
//! while the directory is down still serves), and keeps the last good list when the
//! directory fails, saying so.

pub mod ldap;
pub mod merge;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tracing::{error, info, warn};

use crate::proxy::Proxy;
use crate::valid_ports::{PortRange, ValidPorts};

pub use merge::{Diff, Server};

/// Default search filter: computer objects.
pub const DEFAULT_FILTER: &str = "(objectClass=computer)";
/// Default attribute holding a server's DNS name.
pub const DEFAULT_FQDN_ATTRIBUTE: &str = "dNSHostName";
/// Default attribute holding a server's NetBIOS name (a trailing `$` is removed).
pub const DEFAULT_NETBIOS_ATTRIBUTE: &str = "sAMAccountName";
/// Default port set (Exchange's: the mailbox store and DSProxy/NSPI).
pub const DEFAULT_PORTS: &str = "6001-6002;6004";
/// Default poll interval, minutes (0 turns polling off).
pub const DEFAULT_INTERVAL_MINUTES: u64 = 15;
/// Default timeout of one poll (connect, bind, search).
pub const DEFAULT_TIMEOUT_SECS: u64 = 10;
/// The file in the state directory holding the last good discovered list.
pub const STATE_FILE: &str = "configurator-validports.txt";

/// Where the bind password comes from. It is read at every poll, so a rotated password file
/// is picked up without a restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PasswordSource {
    /// `password_file`: the file's content, without trailing line breaks.
    File(PathBuf),
    /// `password_env`: an environment variable.
    Env(String),
}

impl PasswordSource {
    /// Reads the password.
    pub fn read(&self) -> Result<String, String> {
        let password = match self {
            Self::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the bind password file {}: {e}", path.display()))?
                .trim_end_matches(['\r', '\n'])
                .to_owned(),
            Self::Env(name) => std::env::var(name).map_err(|_| {
                format!("the environment variable {name} (password_env) is not set")
            })?,
        };
        if password.is_empty() {
            return Err("the bind password is empty".into());
        }
        Ok(password)
    }
}

/// `[configurator]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfiguratorConfig {
    /// `url`: one or more `ldaps://`, `ldap://` (StartTLS or loopback) URLs, tried in order.
    pub urls: Vec<String>,
    /// `starttls`: StartTLS on `ldap://` URLs.
    pub starttls: bool,
    /// `ca_file`: the CA (PEM) the directory's certificate must chain to; default system.
    pub ca_file: Option<PathBuf>,
    /// `bind_dn`: the identity bound as (a DN, `user@realm` or `DOMAIN\user`).
    pub bind_dn: String,
    /// `password_file` or `password_env`.
    pub password: PasswordSource,
    /// `base_dn`: where servers are searched (subtree).
    pub base_dn: String,
    /// `filter`: which objects are servers. Default `(objectClass=computer)`.
    pub filter: String,
    /// `fqdn_attribute`, default `dNSHostName`.
    pub fqdn_attribute: String,
    /// `netbios_attribute`, default `sAMAccountName` (a trailing `$` is removed).
    pub netbios_attribute: String,
    /// `group`: only members of this group (DN or CN, direct membership via `memberOf`).
    pub group: Option<String>,
    /// `ports`: the port set written for each name. Default `6001-6002;6004`.
    pub ports: Vec<PortRange>,
    /// `interval_minutes` (default 15) or `interval_secs`; zero turns polling off.
    pub interval: Duration,
    /// `timeout_secs`: one poll's connect + bind + search. Default 10 s.
    pub timeout: Duration,
}

/// Counters for the status page and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    /// When the directory last answered.
    pub last_success: Option<SystemTime>,
    /// When and why the directory last failed.
    pub last_error: Option<(SystemTime, String)>,
    /// Static entries in force.
    pub static_entries: usize,
    /// Directory entries in force.
    pub directory_entries: usize,
    /// Successful and failed polls since start.
    pub polls_ok: u64,
    /// Failed polls since start.
    pub polls_failed: u64,
}

/// Owns the effective ValidPorts of a running proxy: the static entries of the config and
/// the last good discovered list, applied together.
#[derive(Debug)]
pub struct Manager {
    proxy: Option<Arc<Proxy>>,
    state_file: PathBuf,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    statics: ValidPorts,
    discovered: ValidPorts,
    status: Status,
}

impl Manager {
    /// A manager for `proxy` (none: a command that only computes) with the config's static
    /// entries. With `load_state`, the persisted discovered list is loaded from `state_dir`
    /// (a missing file is an empty list; an unreadable one is logged and ignored). The
    /// effective list is applied at once.
    pub fn new(
        proxy: Option<Arc<Proxy>>,
        statics: ValidPorts,
        state_dir: &Path,
        load_state: bool,
    ) -> Self {
        let state_file = state_dir.join(STATE_FILE);
        let discovered = if load_state {
            match load_state_file(&state_file) {
                Ok(Some(list)) => {
                    info!(
                        file = %state_file.display(),
                        entries = list.len(),
                        "configurator: loaded the last good directory list"
                    );
                    list
                }
                Ok(None) => ValidPorts::new(),
                Err(e) => {
                    error!("configurator: ignoring {}: {e}", state_file.display());
                    ValidPorts::new()
                }
            }
        } else {
            ValidPorts::new()
        };
        let manager = Self {
            proxy,
            state_file,
            inner: Mutex::new(Inner {
                statics,
                discovered,
                status: Status::default(),
            }),
        };
        manager.apply(&mut manager.lock());
        manager
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn apply(&self, inner: &mut Inner) {
        let effective = merge::merge(&inner.statics, &inner.discovered);
        let (statics, directory) = merge::counts(&effective);
        inner.status.static_entries = statics;
        inner.status.directory_entries = directory;
        if let Some(proxy) = &self.proxy {
            proxy.set_valid_ports(effective);
        }
    }

    /// The effective list: static entries, then discovered ones.
    pub fn effective(&self) -> ValidPorts {
        let inner = self.lock();
        merge::merge(&inner.statics, &inner.discovered)
    }

    /// The counters.
    pub fn status(&self) -> Status {
        self.lock().status.clone()
    }

    /// Replaces the static entries (a reloaded config) and, with `keep_discovered` false
    /// (the configurator was removed from the config), forgets the discovered ones.
    pub fn set_statics(&self, statics: ValidPorts, keep_discovered: bool) {
        let mut inner = self.lock();
        let before = merge::merge(&inner.statics, &inner.discovered);
        inner.statics = statics;
        if !keep_discovered {
            inner.discovered = ValidPorts::new();
        }
        let after = merge::merge(&inner.statics, &inner.discovered);
        if before != after {
            info!(valid_ports = %after, "ValidPorts reloaded");
        }
        self.apply(&mut inner);
    }

    /// What a poll's answer would change, without applying it.
    pub fn preview(&self, servers: &[Server], ports: &[PortRange], now: SystemTime) -> Diff {
        let inner = self.lock();
        let (discovered, _) = merge::discover(servers, ports, now, &inner.discovered);
        merge::diff(&inner.discovered, &discovered)
    }

    /// Applies a poll's outcome: on success the new discovered list is merged, applied,
    /// logged and persisted (when it changed); on failure the last good list stays and the
    /// error is logged and counted. Returns the diff (empty on failure).
    pub fn poll_result(
        &self,
        result: Result<Vec<Server>, String>,
        ports: &[PortRange],
        now: SystemTime,
    ) -> Diff {
        let mut inner = self.lock();
        let servers = match result {
            Ok(servers) => servers,
            Err(e) => {
                inner.status.polls_failed += 1;
                inner.status.last_error = Some((now, e.clone()));
                error!(
                    "configurator: the directory poll failed: {e}; keeping the last good list \
                     ({} directory entries)",
                    inner.discovered.len()
                );
                return Diff::default();
            }
        };
        let (discovered, skipped) = merge::discover(&servers, ports, now, &inner.discovered);
        for s in &skipped {
            warn!(
                "configurator: skipping the name {:?} from the directory: {}",
                s.name, s.reason
            );
        }
        let diff = merge::diff(&inner.discovered, &discovered);
        inner.status.polls_ok += 1;
        inner.status.last_success = Some(now);
        if servers.is_empty() {
            warn!("configurator: the directory returned no servers");
        }
        if diff.is_empty() {
            info!(
                servers = servers.len(),
                "configurator: directory polled, no change"
            );
        } else {
            info!(
                servers = servers.len(),
                added = diff.added.len(),
                removed = diff.removed.len(),
                "configurator: ValidPorts changed: {diff}"
            );
        }
        inner.discovered = discovered;
        self.apply(&mut inner);
        if (!diff.is_empty() || !self.state_file.exists())
            && let Err(e) = save_state_file(&self.state_file, &inner.discovered)
        {
            error!(
                "configurator: cannot persist the list to {}: {e}",
                self.state_file.display()
            );
        }
        diff
    }
}

/// Reads the persisted list: `Ok(None)` when there is no file.
pub fn load_state_file(path: &Path) -> Result<Option<ValidPorts>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => merge::from_state_text(&text).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Writes the persisted list atomically (a temporary file renamed over the old one).
pub fn save_state_file(path: &Path, discovered: &ValidPorts) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, merge::to_state_text(discovered))?;
    std::fs::rename(&tmp, path)
}

/// Polls the directory now and then every `config.interval` (which must not be zero),
/// applying each answer through `manager`. Runs until dropped (abort the task to stop it).
pub async fn run(manager: Arc<Manager>, config: ConfiguratorConfig) {
    info!(
        urls = %config.urls.join(" "),
        base_dn = %config.base_dn,
        interval_secs = config.interval.as_secs(),
        "configurator: polling the directory"
    );
    loop {
        let result = ldap::poll(&config).await;
        manager.poll_result(result, &config.ports, SystemTime::now());
        tokio::time::sleep(config.interval).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::valid_ports::Origin;

    fn statics(text: &str) -> ValidPorts {
        ValidPorts::parse(
            text,
            &Origin::Static {
                source: "config file".into(),
            },
        )
        .unwrap()
    }

    fn ports() -> Vec<PortRange> {
        vec!["6004".parse().unwrap()]
    }

    fn servers(names: &[&str]) -> Vec<Server> {
        names
            .iter()
            .map(|n| Server::from_attributes(Some(&format!("{n}.x")), Some(&format!("{n}$"))))
            .collect()
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "rpcgate-configurator-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn last_good_list_is_kept_persisted_and_reloaded() {
        let dir = temp_dir("persist");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let m = Manager::new(None, statics("s:1"), &dir, true);
        assert_eq!(m.effective().to_string(), "s:1");
        let d = m.poll_result(Ok(servers(&["a"])), &ports(), now);
        assert_eq!(d.added, ["a.x:6004", "a:6004"]);
        assert_eq!(m.effective().to_string(), "s:1;a.x:6004;a:6004");
        // The directory fails: the list stays, the error is counted.
        let d = m.poll_result(Err("down".into()), &ports(), now);
        assert!(d.is_empty());
        assert_eq!(m.effective().to_string(), "s:1;a.x:6004;a:6004");
        let status = m.status();
        assert_eq!((status.polls_ok, status.polls_failed), (1, 1));
        assert_eq!(status.last_error.unwrap().1, "down");
        assert_eq!((status.static_entries, status.directory_entries), (1, 2));
        // A restart loads the persisted list, with the new statics.
        let m2 = Manager::new(None, statics("t:2"), &dir, true);
        assert_eq!(m2.effective().to_string(), "t:2;a.x:6004;a:6004");
        assert!(
            matches!(m2.effective().entries()[1].origin(), Origin::Directory { when } if *when == now)
        );
        // Without the configurator, nothing is loaded.
        assert_eq!(
            Manager::new(None, statics("t:2"), &dir, false)
                .effective()
                .to_string(),
            "t:2"
        );
        // A removed server goes; a reload keeps the discovered entries.
        m2.poll_result(Ok(servers(&["b"])), &ports(), now);
        m2.set_statics(statics("u:3"), true);
        assert_eq!(m2.effective().to_string(), "u:3;b.x:6004;b:6004");
        assert_eq!(
            m2.preview(&servers(&[]), &ports(), now).removed,
            ["b.x:6004", "b:6004"]
        );
        m2.set_statics(statics("u:3"), false);
        assert_eq!(m2.effective().to_string(), "u:3");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_corrupt_state_file_is_ignored() {
        let dir = temp_dir("corrupt");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(STATE_FILE), "garbage\n").unwrap();
        let m = Manager::new(None, statics("s:1"), &dir, true);
        assert_eq!(m.effective().to_string(), "s:1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn passwords_from_a_file_or_the_environment() {
        let dir = temp_dir("password");
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pw");
        std::fs::write(&file, "secret\n").unwrap();
        assert_eq!(PasswordSource::File(file.clone()).read().unwrap(), "secret");
        std::fs::write(&file, "\n").unwrap();
        assert!(PasswordSource::File(file).read().is_err());
        assert!(
            PasswordSource::Env("RPCGATE_TEST_SURELY_UNSET_VAR".into())
                .read()
                .is_err()
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
