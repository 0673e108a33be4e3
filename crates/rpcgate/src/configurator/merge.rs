//! The configurator's sans-I/O core: servers found in the directory → ValidPorts entries,
//! merged with the static entries, compared with the previous list, and persisted as text.
//!
//! Nothing here reads the clock, the network or the disk: callers pass the time and the
//! bytes. The rules:
//! - every server contributes an entry per name (FQDN and NetBIOS name) per port range;
//! - static entries (the config file's) are never changed, removed or reordered, and come
//!   first, so a target both lists allow is reported as static;
//! - a discovered entry that repeats a static one (same name and ports) is left out;
//! - an entry that was already discovered keeps its first `when`, so the diff and the origins
//!   show when the directory first listed it.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::valid_ports::{Entry, Origin, PortRange, ValidPorts};

/// One server as the directory describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// The DNS name (`dNSHostName`), if the object has one.
    pub fqdn: Option<String>,
    /// The NetBIOS name (`sAMAccountName` without its trailing `$`), if any.
    pub netbios: Option<String>,
}

impl Server {
    /// A server from the raw attribute values: the account name loses one trailing `$`
    /// (computer accounts end in it), empty values count as absent.
    pub fn from_attributes(fqdn: Option<&str>, account: Option<&str>) -> Self {
        let clean = |v: Option<&str>| {
            v.map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let netbios = clean(account.map(|a| a.trim().strip_suffix('$').unwrap_or(a.trim())));
        Self {
            fqdn: clean(fqdn),
            netbios,
        }
    }

    /// The names to allow, FQDN first.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.fqdn
            .iter()
            .chain(self.netbios.iter())
            .map(String::as_str)
    }
}

/// Whether `group` names one of `member_of` (DNs): the DN itself or its first CN, ASCII
/// case-insensitive.
pub fn in_group(member_of: &[String], group: &str) -> bool {
    let group = group.trim();
    member_of.iter().any(|dn| {
        dn.trim().eq_ignore_ascii_case(group)
            || first_cn(dn).is_some_and(|cn| cn.eq_ignore_ascii_case(group))
    })
}

fn first_cn(dn: &str) -> Option<&str> {
    let (attr, value) = dn.split(',').next()?.trim().split_once('=')?;
    attr.trim().eq_ignore_ascii_case("cn").then(|| value.trim())
}

/// A name the directory gave that cannot be an entry (a `*`, a colon...), with why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The name as the directory gave it.
    pub name: String,
    /// Why it was left out.
    pub reason: String,
}

/// Builds the discovered list: each server's names × `ports`, duplicates removed, every
/// entry with origin `Directory { when }` unless `previous` (the last discovered list) has
/// the same entry, whose time is kept. Names that are not valid entries are skipped and
/// returned. Names containing `*` are skipped too: the directory must not be able to write
/// a wildcard.
pub fn discover(
    servers: &[Server],
    ports: &[PortRange],
    when: SystemTime,
    previous: &ValidPorts,
) -> (ValidPorts, Vec<Skipped>) {
    let mut list = ValidPorts::new();
    let mut skipped = Vec::new();
    let mut seen = HashSet::new();
    for server in servers {
        for name in server.names() {
            if name.contains('*') {
                skipped.push(Skipped {
                    name: name.to_owned(),
                    reason: "a directory name may not contain '*'".into(),
                });
                continue;
            }
            for range in ports {
                let key = entry_key(name, *range);
                if !seen.insert(key.clone()) {
                    continue;
                }
                let origin = previous
                    .entries()
                    .iter()
                    .find(|e| entry_key(e.host(), e.ports()) == key)
                    .map_or(Origin::Directory { when }, |e| e.origin().clone());
                match Entry::new(name, *range, origin) {
                    Ok(entry) => list.push(entry),
                    Err(e) => {
                        skipped.push(Skipped {
                            name: name.to_owned(),
                            reason: e.to_string(),
                        });
                        break;
                    }
                }
            }
        }
    }
    (list, skipped)
}

/// The comparison key of an entry: lowercase name without a trailing dot, and the ports.
fn entry_key(host: &str, ports: PortRange) -> String {
    let host = host.trim().trim_end_matches('.').to_ascii_lowercase();
    format!("{host}:{ports}")
}

/// The effective list: every static entry of `statics` as is and in order, then the entries
/// of `discovered` that no static entry already states.
pub fn merge(statics: &ValidPorts, discovered: &ValidPorts) -> ValidPorts {
    let mut effective = ValidPorts::new();
    let mut static_keys = HashSet::new();
    for entry in statics.entries() {
        if matches!(entry.origin(), Origin::Static { .. }) {
            static_keys.insert(entry_key(entry.host(), entry.ports()));
            effective.push(entry.clone());
        }
    }
    for entry in discovered.entries() {
        if matches!(entry.origin(), Origin::Directory { .. })
            && !static_keys.contains(&entry_key(entry.host(), entry.ports()))
        {
            effective.push(entry.clone());
        }
    }
    effective
}

/// What a poll changed in the discovered entries, as `host:ports` strings in list order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Entries the new list has and the old one did not.
    pub added: Vec<String>,
    /// Entries the old list had and the new one does not.
    pub removed: Vec<String>,
}

impl Diff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

impl std::fmt::Display for Diff {
    /// `added: a:1, b:2; removed: c:3` or `no change`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_empty() {
            return f.write_str("no change");
        }
        let list = |v: &[String]| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(", ")
            }
        };
        write!(
            f,
            "added: {}; removed: {}",
            list(&self.added),
            list(&self.removed)
        )
    }
}

/// The directory entries added and removed between two lists (static entries are ignored:
/// the configurator never changes them).
pub fn diff(old: &ValidPorts, new: &ValidPorts) -> Diff {
    let directory = |list: &ValidPorts| -> Vec<(String, String)> {
        list.entries()
            .iter()
            .filter(|e| matches!(e.origin(), Origin::Directory { .. }))
            .map(|e| (entry_key(e.host(), e.ports()), e.to_string()))
            .collect()
    };
    let old = directory(old);
    let new = directory(new);
    let old_keys: HashSet<&String> = old.iter().map(|(k, _)| k).collect();
    let new_keys: HashSet<&String> = new.iter().map(|(k, _)| k).collect();
    Diff {
        added: new
            .iter()
            .filter(|(k, _)| !old_keys.contains(k))
            .map(|(_, s)| s.clone())
            .collect(),
        removed: old
            .iter()
            .filter(|(k, _)| !new_keys.contains(k))
            .map(|(_, s)| s.clone())
            .collect(),
    }
}

/// The first line of the state file.
pub const STATE_HEADER: &str = "# rpcgate configurator: the last good list read from the directory (seconds since the epoch, entry)";

/// The discovered entries as the state file's text: the header, then `seconds host:ports`
/// per line.
pub fn to_state_text(discovered: &ValidPorts) -> String {
    let mut text = String::from(STATE_HEADER);
    text.push('\n');
    for entry in discovered.entries() {
        if let Origin::Directory { when } = entry.origin() {
            let secs = when
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs();
            text.push_str(&format!("{secs} {entry}\n"));
        }
    }
    text
}

/// Parses the state file's text back into directory entries. Lines starting with `#` and
/// blank lines are ignored; any other malformed line is an error naming its line number.
pub fn from_state_text(text: &str) -> Result<ValidPorts, String> {
    let mut list = ValidPorts::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |why: &str| format!("line {}: {why}: {line:?}", index + 1);
        let (secs, entry) = line
            .split_once(' ')
            .ok_or_else(|| bad("expected `seconds host:ports`"))?;
        let secs: u64 = secs.parse().map_err(|_| bad("bad time"))?;
        let when = UNIX_EPOCH + Duration::from_secs(secs);
        let parsed = ValidPorts::parse(entry.trim(), &Origin::Directory { when })
            .map_err(|e| bad(&e.to_string()))?;
        if parsed.len() != 1 || parsed.entries().iter().any(Entry::is_wildcard) {
            return Err(bad("expected one entry without '*'"));
        }
        list.extend(parsed);
    }
    Ok(list)
}

/// Counts of entries by origin.
pub fn counts(list: &ValidPorts) -> (usize, usize) {
    let statics = list
        .entries()
        .iter()
        .filter(|e| matches!(e.origin(), Origin::Static { .. }))
        .count();
    (statics, list.len() - statics)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports(text: &str) -> Vec<PortRange> {
        text.split(';').map(|p| p.parse().unwrap()).collect()
    }

    fn statics(text: &str) -> ValidPorts {
        ValidPorts::parse(
            text,
            &Origin::Static {
                source: "config file".into(),
            },
        )
        .unwrap()
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn server(fqdn: &str, account: &str) -> Server {
        Server::from_attributes(Some(fqdn), Some(account))
    }

    #[test]
    fn attributes_become_names() {
        let s = server("mbx1.contoso.com", "MBX1$");
        assert_eq!(s.names().collect::<Vec<_>>(), ["mbx1.contoso.com", "MBX1"]);
        let s = Server::from_attributes(None, Some(" SRV$ "));
        assert_eq!(s.names().collect::<Vec<_>>(), ["SRV"]);
        let s = Server::from_attributes(Some(""), Some("$"));
        assert_eq!(s.names().count(), 0);
        // Only one `$` goes.
        assert_eq!(
            Server::from_attributes(None, Some("A$$"))
                .netbios
                .as_deref(),
            Some("A$")
        );
    }

    #[test]
    fn every_name_gets_every_port_range() {
        let (list, skipped) = discover(
            &[server("mbx1.contoso.com", "MBX1$")],
            &ports("6001-6002;6004"),
            at(100),
            &ValidPorts::new(),
        );
        assert!(skipped.is_empty());
        assert_eq!(
            list.to_string(),
            "mbx1.contoso.com:6001-6002;mbx1.contoso.com:6004;MBX1:6001-6002;MBX1:6004"
        );
        assert!(
            list.entries()
                .iter()
                .all(|e| *e.origin() == Origin::Directory { when: at(100) })
        );
        assert!(list.allows("mbx1", 6002).is_some());
        assert!(list.allows("MBX1.contoso.com.", 6004).is_some());
        assert!(list.allows("mbx1", 6003).is_none());
    }

    #[test]
    fn duplicates_wildcards_and_bad_names_are_left_out() {
        let (list, skipped) = discover(
            &[
                server("a.x", "A$"),
                server("A.X.", "a$"),
                server("evil*", "B$"),
                server("bad:name", "C$"),
            ],
            &ports("6004"),
            at(1),
            &ValidPorts::new(),
        );
        assert_eq!(list.to_string(), "a.x:6004;A:6004;B:6004;C:6004");
        assert_eq!(
            skipped.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["evil*", "bad:name"]
        );
    }

    #[test]
    fn known_entries_keep_their_first_time() {
        let (first, _) = discover(
            &[server("a.x", "A$")],
            &ports("6004"),
            at(10),
            &ValidPorts::new(),
        );
        let (second, _) = discover(
            &[server("a.x", "A$"), server("b.x", "B$")],
            &ports("6004"),
            at(20),
            &first,
        );
        let times: Vec<_> = second
            .entries()
            .iter()
            .map(|e| e.origin().clone())
            .collect();
        assert_eq!(
            times,
            [
                Origin::Directory { when: at(10) },
                Origin::Directory { when: at(10) },
                Origin::Directory { when: at(20) },
                Origin::Directory { when: at(20) },
            ]
        );
    }

    #[test]
    fn static_entries_are_never_touched() {
        let statics = statics("mbx1:6001-6002;Data*:4000-8000;keep.x:593");
        let (discovered, _) = discover(
            &[server("mbx2.x", "MBX2$"), server("keep.x", "MBX1$")],
            &ports("6001-6002;593"),
            at(5),
            &ValidPorts::new(),
        );
        let effective = merge(&statics, &discovered);
        // Statics first, unchanged; repeats of a static entry left out.
        assert_eq!(&effective.entries()[..3], statics.entries());
        assert_eq!(
            effective.to_string(),
            "mbx1:6001-6002;Data*:4000-8000;keep.x:593;mbx2.x:6001-6002;mbx2.x:593;\
             MBX2:6001-6002;MBX2:593;keep.x:6001-6002;MBX1:593"
        );
        assert!(matches!(
            effective.allows("mbx1", 6001).unwrap().origin(),
            Origin::Static { .. }
        ));
        // An empty directory answer leaves exactly the statics.
        assert_eq!(merge(&statics, &ValidPorts::new()), statics);
        // Merging an effective list again (statics from the old effective list) is stable:
        // old directory entries are dropped, not kept as static.
        assert_eq!(merge(&effective, &ValidPorts::new()), statics);
    }

    #[test]
    fn the_diff_names_added_and_removed_directory_entries() {
        let statics = statics("s:1");
        let (old, _) = discover(
            &[server("a.x", "A$"), server("b.x", "B$")],
            &ports("6004"),
            at(1),
            &ValidPorts::new(),
        );
        let (new, _) = discover(
            &[server("B.X", "b$"), server("c.x", "C$")],
            &ports("6004"),
            at(2),
            &old,
        );
        let d = diff(&merge(&statics, &old), &merge(&statics, &new));
        assert_eq!(d.added, ["c.x:6004", "C:6004"]);
        assert_eq!(d.removed, ["a.x:6004", "A:6004"]);
        assert_eq!(
            d.to_string(),
            "added: c.x:6004, C:6004; removed: a.x:6004, A:6004"
        );
        assert!(diff(&old, &old).is_empty());
        assert_eq!(diff(&old, &old).to_string(), "no change");
        // Static changes are not the configurator's diff.
        assert!(diff(&statics, &self::statics("t:2")).is_empty());
    }

    #[test]
    fn the_state_file_round_trips() {
        let (list, _) = discover(
            &[server("a.x", "A$")],
            &ports("6001-6002;6004"),
            at(1_700_000_000),
            &ValidPorts::new(),
        );
        let text = to_state_text(&list);
        assert!(text.starts_with(STATE_HEADER));
        assert!(text.contains("1700000000 a.x:6001-6002\n"));
        assert_eq!(from_state_text(&text).unwrap(), list);
        assert_eq!(from_state_text("").unwrap(), ValidPorts::new());
        assert!(from_state_text("12 x*:1\n").unwrap_err().contains("line 1"));
        assert!(
            from_state_text("# c\nnot-a-time a:1\n")
                .unwrap_err()
                .contains("line 2")
        );
        assert!(from_state_text("1 a:1;b:2\n").is_err());
    }

    #[test]
    fn group_membership_by_dn_or_cn() {
        let member_of = vec!["CN=RPC Servers,CN=Users,DC=x".to_owned()];
        assert!(in_group(&member_of, "rpc servers"));
        assert!(in_group(&member_of, "cn=rpc servers,cn=users,dc=x"));
        assert!(!in_group(&member_of, "Domain Controllers"));
        assert!(!in_group(&[], "RPC Servers"));
    }

    #[test]
    fn counts_by_origin() {
        let (d, _) = discover(
            &[server("a.x", "A$")],
            &ports("1"),
            at(1),
            &ValidPorts::new(),
        );
        assert_eq!(counts(&merge(&statics("s:1;t:2"), &d)), (2, 2));
    }
}
