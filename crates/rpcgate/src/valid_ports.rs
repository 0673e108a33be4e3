//! The proxy's allow-list of RPC servers (`ValidPorts`, notes §8.2): which `server:port`
//! targets a channel request may reach.
//!
//! The Windows registry syntax is accepted as is (`Rosco:593;Rosco:2000-8000;Data*:4000-8000`:
//! entries separated by `;`, empty entries and surrounding whitespace ignored, a trailing `*`
//! making the name a prefix), next to a structured form ([`ValidPortsEntry`]) for TOML. The
//! list denies by default. Matching is what Windows does: literal (no DNS, so
//! `rosco.microsoft.com` does not match `Rosco`), ASCII case-insensitive, a trailing dot on
//! either side ignored, the port inside an inclusive range. Every entry remembers where it came
//! from ([`Origin`]) so that the configurator can replace its own entries without touching
//! anyone else's, and so that logs and the status page can say why a target was allowed.

use std::fmt;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// The longest host name accepted in an entry (the same bound as a request target's).
pub const MAX_HOST_LEN: usize = 1023;

/// An inclusive range of ports, `low..=high`, with `1 <= low <= high`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    low: u16,
    high: u16,
}

impl PortRange {
    /// A range from `low` to `high` inclusive.
    pub fn new(low: u16, high: u16) -> Result<Self, EntryError> {
        if low == 0 {
            return Err(EntryError::PortZero);
        }
        if low > high {
            return Err(EntryError::ReversedRange { low, high });
        }
        Ok(Self { low, high })
    }

    /// The range holding one port.
    pub fn single(port: u16) -> Result<Self, EntryError> {
        Self::new(port, port)
    }

    /// The first port of the range.
    pub fn low(&self) -> u16 {
        self.low
    }

    /// The last port of the range.
    pub fn high(&self) -> u16 {
        self.high
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.low..=self.high).contains(&port)
    }
}

impl FromStr for PortRange {
    type Err = EntryError;

    /// `6004` or `6001-6002` (whitespace around the numbers is ignored).
    fn from_str(text: &str) -> Result<Self, EntryError> {
        match text.split_once('-') {
            Some((low, high)) => Self::new(parse_port(low)?, parse_port(high)?),
            None => Self::single(parse_port(text)?),
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.low == self.high {
            write!(f, "{}", self.low)
        } else {
            write!(f, "{}-{}", self.low, self.high)
        }
    }
}

/// TOML accepts a range as a string (`"6001-6002"`, `"6004"`) or a port as an integer.
impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RangeVisitor;

        impl Visitor<'_> for RangeVisitor {
            type Value = PortRange;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port (6004) or a port range string (\"6001-6002\")")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<PortRange, E> {
                text.parse().map_err(E::custom)
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<PortRange, E> {
                let port = u16::try_from(value).map_err(|_| {
                    E::custom(EntryError::PortOutOfRange {
                        text: value.to_string(),
                    })
                })?;
                PortRange::single(port).map_err(E::custom)
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<PortRange, E> {
                let value = i64::try_from(value).unwrap_or(i64::MAX);
                self.visit_i64(value)
            }
        }

        deserializer.deserialize_any(RangeVisitor)
    }
}

/// One entry in structured form, as written in TOML (`[[proxy.valid_port]]`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidPortsEntry {
    /// The server name: a NetBIOS name, an FQDN, an IPv4 literal, or a prefix ending in `*`.
    pub host: String,
    /// The allowed ports.
    pub ports: PortRange,
}

/// Where an entry came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Written by an administrator: the config file, a command line option...
    Static {
        /// What it was written in, e.g. `config file`.
        source: String,
    },
    /// Written by the directory configurator at the given time.
    Directory {
        /// When the configurator wrote it.
        when: SystemTime,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Static { source } => f.write_str(source),
            Self::Directory { when } => {
                f.write_str("directory configurator, ")?;
                write_utc(f, *when)
            }
        }
    }
}

/// One allow-list entry: a host name or name prefix, a port range, and its origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    host: String,
    pattern: HostPattern,
    ports: PortRange,
    origin: Origin,
}

/// The normalised form of an entry's host used for matching.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// Lowercase, trailing dot removed.
    Exact(String),
    /// Lowercase text before the `*`.
    Prefix(String),
}

impl Entry {
    /// An entry for `host` (as written, checked) and `ports`.
    pub fn new(host: &str, ports: PortRange, origin: Origin) -> Result<Self, EntryError> {
        let host = host.trim();
        let pattern = parse_host(host)?;
        Ok(Self {
            host: host.to_owned(),
            pattern,
            ports,
            origin,
        })
    }

    /// The host as written.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The allowed ports.
    pub fn ports(&self) -> PortRange {
        self.ports
    }

    /// Where the entry came from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Whether the host is a prefix (`Data*`) rather than an exact name.
    pub fn is_wildcard(&self) -> bool {
        matches!(self.pattern, HostPattern::Prefix(_))
    }

    /// Whether this entry allows `host:port`.
    pub fn matches(&self, host: &str, port: u16) -> bool {
        self.ports.contains(port) && self.matches_host(&normalise(host))
    }

    fn matches_host(&self, normalised: &str) -> bool {
        match &self.pattern {
            HostPattern::Exact(name) => name == normalised,
            HostPattern::Prefix(prefix) => normalised.starts_with(prefix.as_str()),
        }
    }
}

impl fmt::Display for Entry {
    /// The entry in Windows syntax, `host:port` or `host:low-high`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.ports)
    }
}

/// The allow-list. Empty allows nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidPorts {
    entries: Vec<Entry>,
}

impl ValidPorts {
    /// An empty list, which denies every target.
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses the Windows registry syntax (`name:port[-port];...`), every entry getting
    /// `origin`.
    pub fn parse(text: &str, origin: &Origin) -> Result<Self, ValidPortsError> {
        let mut entries = Vec::new();
        let pieces = text.split(';').map(str::trim).filter(|p| !p.is_empty());
        for (index, piece) in pieces.enumerate() {
            let error = |kind| ValidPortsError {
                index: index + 1,
                entry: piece.to_owned(),
                kind,
            };
            // The last `:` separates the ports, so an IPv6 literal leaves colons in the host
            // and is reported as such by `Entry::new`.
            let (host, ports) = piece
                .rsplit_once(':')
                .ok_or_else(|| error(EntryError::MissingPort))?;
            let ports = ports.parse().map_err(error)?;
            entries.push(Entry::new(host, ports, origin.clone()).map_err(error)?);
        }
        Ok(Self { entries })
    }

    /// Builds the list from structured entries, every entry getting `origin`.
    pub fn from_entries<'a>(
        entries: impl IntoIterator<Item = &'a ValidPortsEntry>,
        origin: &Origin,
    ) -> Result<Self, ValidPortsError> {
        let mut list = Self::new();
        for (index, entry) in entries.into_iter().enumerate() {
            let built = Entry::new(&entry.host, entry.ports, origin.clone()).map_err(|kind| {
                ValidPortsError {
                    index: index + 1,
                    entry: format!("{}:{}", entry.host, entry.ports),
                    kind,
                }
            })?;
            list.entries.push(built);
        }
        Ok(list)
    }

    /// Appends one entry.
    pub fn push(&mut self, entry: Entry) {
        self.entries.push(entry);
    }

    /// Appends every entry of `other`.
    pub fn extend(&mut self, other: ValidPorts) {
        self.entries.extend(other.entries);
    }

    /// Keeps only the entries for which `keep` is true (the configurator drops its own
    /// entries this way before writing new ones).
    pub fn retain(&mut self, keep: impl FnMut(&Entry) -> bool) {
        self.entries.retain(keep);
    }

    /// The entries in order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the list is empty (and so denies everything).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The first entry that allows `host:port`, or `None` if the target is denied.
    pub fn allows(&self, host: &str, port: u16) -> Option<&Entry> {
        let host = normalise(host);
        self.entries
            .iter()
            .find(|e| e.ports.contains(port) && e.matches_host(&host))
    }
}

impl fmt::Display for ValidPorts {
    /// The list in Windows registry syntax; parsing it again gives the same entries.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, entry) in self.entries.iter().enumerate() {
            if index > 0 {
                f.write_str(";")?;
            }
            write!(f, "{entry}")?;
        }
        Ok(())
    }
}

/// A bad entry in a Windows-syntax list or a structured list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ValidPorts entry {index} ({entry:?}): {kind}")]
pub struct ValidPortsError {
    /// 1-based position of the entry, empty entries not counted.
    pub index: usize,
    /// The entry as written.
    pub entry: String,
    /// What is wrong with it.
    pub kind: EntryError,
}

/// What is wrong with one entry. Whoever wrote the list is at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// No `:port` after the name.
    #[error("no port: write name:port or name:low-high")]
    MissingPort,
    /// Nothing before the `:`.
    #[error("empty server name")]
    EmptyHost,
    /// The name is longer than [`MAX_HOST_LEN`].
    #[error("server name is {len} characters long (the limit is {MAX_HOST_LEN})")]
    HostTooLong {
        /// The name's length.
        len: usize,
    },
    /// An IPv6 literal, which Windows' ValidPorts does not support either.
    #[error(
        "IPv6 literal {host:?} is not supported in ValidPorts (Windows does not support it \
         either); use a host name that resolves to the address"
    )]
    Ipv6Literal {
        /// The name as written.
        host: String,
    },
    /// A `*` that is not the last character.
    #[error("{host:?}: `*` is only allowed at the end of a name (prefix match, e.g. Data*)")]
    WildcardNotAtEnd {
        /// The name as written.
        host: String,
    },
    /// A character that no server name contains.
    #[error("server name {host:?} contains {ch:?}")]
    InvalidChar {
        /// The name as written.
        host: String,
        /// The first offending character.
        ch: char,
    },
    /// The port is not a decimal number.
    #[error("port {text:?} is not a decimal number")]
    InvalidPort {
        /// The port as written.
        text: String,
    },
    /// The port is above 65535.
    #[error("port {text} is out of range (1..=65535)")]
    PortOutOfRange {
        /// The port as written.
        text: String,
    },
    /// Port 0.
    #[error("port 0 is not a valid port")]
    PortZero,
    /// `high` below `low`.
    #[error("port range {low}-{high} is reversed (write the lower port first)")]
    ReversedRange {
        /// The first port as written.
        low: u16,
        /// The second port as written.
        high: u16,
    },
}

fn parse_port(text: &str) -> Result<u16, EntryError> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(EntryError::InvalidPort {
            text: text.to_owned(),
        });
    }
    // A run of digits that does not fit in a u64 is out of range too.
    match text.parse::<u64>().ok().and_then(|v| u16::try_from(v).ok()) {
        Some(0) => Err(EntryError::PortZero),
        Some(port) => Ok(port),
        None => Err(EntryError::PortOutOfRange {
            text: text.to_owned(),
        }),
    }
}

fn parse_host(host: &str) -> Result<HostPattern, EntryError> {
    if host.is_empty() {
        return Err(EntryError::EmptyHost);
    }
    if host.len() > MAX_HOST_LEN {
        return Err(EntryError::HostTooLong { len: host.len() });
    }
    if host.contains(':') || host.starts_with('[') {
        return Err(EntryError::Ipv6Literal {
            host: host.to_owned(),
        });
    }
    let invalid = host.chars().find(|&c| {
        c.is_control()
            || c.is_whitespace()
            || !c.is_ascii()
            || matches!(c, '[' | ']' | '/' | '\\' | '?' | '#' | ';')
    });
    if let Some(ch) = invalid {
        return Err(EntryError::InvalidChar {
            host: host.to_owned(),
            ch,
        });
    }
    match host.find('*') {
        None => Ok(HostPattern::Exact(normalise(host))),
        Some(at) if at + 1 == host.len() => Ok(HostPattern::Prefix(
            host.get(..at).unwrap_or_default().to_ascii_lowercase(),
        )),
        Some(_) => Err(EntryError::WildcardNotAtEnd {
            host: host.to_owned(),
        }),
    }
}

/// Lowercase with one trailing dot removed: `MBX1.contoso.com.` and `mbx1.Contoso.com` are
/// the same name.
fn normalise(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

/// Writes `when` as an RFC 3339 UTC timestamp (seconds).
fn write_utc(f: &mut fmt::Formatter<'_>, when: SystemTime) -> fmt::Result {
    let Ok(since) = when.duration_since(UNIX_EPOCH) else {
        return f.write_str("before 1970");
    };
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rest = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    write!(
        f,
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config() -> Origin {
        Origin::Static {
            source: "config file".into(),
        }
    }

    fn list(text: &str) -> ValidPorts {
        ValidPorts::parse(text, &config()).unwrap()
    }

    fn kind(text: &str) -> EntryError {
        ValidPorts::parse(text, &config()).unwrap_err().kind
    }

    #[test]
    fn microsoft_example() {
        let ports = list("Rosco:593;Rosco:2000-8000;Data*:4000-8000");
        assert_eq!(ports.len(), 3);
        assert_eq!(ports.allows("Rosco", 593).unwrap().to_string(), "Rosco:593");
        assert_eq!(
            ports.allows("rosco", 2000).unwrap().to_string(),
            "Rosco:2000-8000"
        );
        assert_eq!(
            ports.allows("ROSCO.", 8000).unwrap().to_string(),
            "Rosco:2000-8000"
        );
        assert!(ports.allows("Rosco", 594).is_none());
        assert!(ports.allows("Rosco", 8001).is_none());
        // Literal matching: no DNS canonicalisation.
        assert!(ports.allows("rosco.microsoft.com", 593).is_none());
        assert!(ports.allows("66.77.88.99", 593).is_none());
        // Prefix wildcard.
        let data = ports.allows("DataServer7.contoso.com", 4000).unwrap();
        assert!(data.is_wildcard());
        assert_eq!(data.host(), "Data*");
        assert!(ports.allows("data", 8000).is_some());
        assert!(ports.allows("mydata", 4000).is_none());
        assert!(ports.allows("Data1", 3999).is_none());
        assert_eq!(
            ports.to_string(),
            "Rosco:593;Rosco:2000-8000;Data*:4000-8000"
        );
    }

    #[test]
    fn exchange_example() {
        let text = "mbx1:6001-6002;mbx1:6004;mbx1.contoso.com:6001-6002;mbx1.contoso.com:6004";
        let ports = list(text);
        assert_eq!(ports.to_string(), text);
        for host in ["mbx1", "MBX1", "mbx1.contoso.com", "MBX1.Contoso.Com."] {
            for port in [6001, 6002, 6004] {
                assert!(ports.allows(host, port).is_some(), "{host}:{port}");
            }
            assert!(ports.allows(host, 6003).is_none(), "{host}:6003");
        }
        assert!(ports.allows("mbx1.contoso", 6001).is_none());
        assert!(ports.allows("mbx2", 6001).is_none());
        assert_eq!(ports.allows("mbx1", 6004).unwrap().origin(), &config());
    }

    #[test]
    fn deny_by_default() {
        assert!(ValidPorts::new().allows("localhost", 6001).is_none());
        assert!(list("").is_empty());
        assert!(list(" ; ;; ").allows("x", 1).is_none());
    }

    #[test]
    fn lenient_syntax() {
        let ports = list("  a:1 ;; b : 2 - 3 ;\t");
        assert_eq!(ports.to_string(), "a:1;b:2-3");
        // An entry's trailing dot is ignored too.
        assert!(
            list("mbx1.contoso.com.:6001")
                .allows("mbx1.contoso.com", 6001)
                .is_some()
        );
    }

    #[test]
    fn star_only_where_written() {
        assert!(list("mbx1:6001").allows("anything", 6001).is_none());
        let all = list("*:593");
        assert!(all.allows("anything.example", 593).is_some());
        assert!(all.allows("::1", 593).is_some());
        assert!(all.allows("anything", 594).is_none());
    }

    #[test]
    fn errors_name_the_entry() {
        let error = ValidPorts::parse("a:1;;b:x", &config()).unwrap_err();
        assert_eq!(error.index, 2);
        assert_eq!(error.entry, "b:x");
        assert_eq!(
            error.to_string(),
            "ValidPorts entry 2 (\"b:x\"): port \"x\" is not a decimal number"
        );
        assert_eq!(kind("mbx1"), EntryError::MissingPort);
        assert_eq!(kind(":6001"), EntryError::EmptyHost);
        assert_eq!(kind("a:0"), EntryError::PortZero);
        assert_eq!(kind("a:0-5"), EntryError::PortZero);
        assert_eq!(
            kind("a:65536"),
            EntryError::PortOutOfRange {
                text: "65536".into()
            }
        );
        assert_eq!(
            kind("a:99999999999999999999999"),
            EntryError::PortOutOfRange {
                text: "99999999999999999999999".into()
            }
        );
        assert_eq!(
            kind("a:8000-2000"),
            EntryError::ReversedRange {
                low: 8000,
                high: 2000
            }
        );
        assert_eq!(kind("a:1-"), EntryError::InvalidPort { text: "".into() });
        assert_eq!(kind("a:-1"), EntryError::InvalidPort { text: "".into() });
        assert_eq!(kind("a:+1"), EntryError::InvalidPort { text: "+1".into() });
        assert_eq!(
            kind("Da*ta:1"),
            EntryError::WildcardNotAtEnd {
                host: "Da*ta".into()
            }
        );
        assert_eq!(
            kind("a b:1"),
            EntryError::InvalidChar {
                host: "a b".into(),
                ch: ' '
            }
        );
        assert_eq!(
            kind(&format!("{}:1", "a".repeat(1024))),
            EntryError::HostTooLong { len: 1024 }
        );
    }

    #[test]
    fn ipv6_literals_are_rejected_with_advice() {
        for text in ["::1:593", "[::1]:593", "fe80::1", "2001:db8::7:6001-6002"] {
            let error = ValidPorts::parse(text, &config()).unwrap_err();
            assert!(
                matches!(error.kind, EntryError::Ipv6Literal { .. }),
                "{text}: {error}"
            );
            assert!(error.to_string().contains("use a host name"), "{error}");
        }
    }

    #[test]
    fn structured_entries_and_merging() {
        let structured: Vec<ValidPortsEntry> = vec![
            ValidPortsEntry {
                host: "mbx1".into(),
                ports: "6001-6002".parse().unwrap(),
            },
            ValidPortsEntry {
                host: "mbx1".into(),
                ports: PortRange::single(6004).unwrap(),
            },
        ];
        let mut ports = list("localhost:6001");
        ports.extend(ValidPorts::from_entries(&structured, &config()).unwrap());
        assert_eq!(ports.to_string(), "localhost:6001;mbx1:6001-6002;mbx1:6004");

        let bad = [ValidPortsEntry {
            host: "[::1]".into(),
            ports: PortRange::single(1).unwrap(),
        }];
        let error = ValidPorts::from_entries(&bad, &config()).unwrap_err();
        assert_eq!((error.index, error.entry.as_str()), (1, "[::1]:1"));
    }

    #[test]
    fn origins_and_retain() {
        let when = UNIX_EPOCH + Duration::from_secs(1_714_564_800 + 3661);
        let directory = Origin::Directory { when };
        assert_eq!(
            directory.to_string(),
            "directory configurator, 2024-05-01T13:01:01Z"
        );
        assert_eq!(config().to_string(), "config file");
        let mut ports = list("static:1");
        ports.extend(ValidPorts::parse("dc1:6001;dc1.corp:6001", &directory).unwrap());
        assert_eq!(ports.allows("dc1", 6001).unwrap().origin(), &directory);
        ports.retain(|e| !matches!(e.origin(), Origin::Directory { .. }));
        assert_eq!(ports.to_string(), "static:1");
    }

    #[test]
    fn calendar() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_844), (2024, 5, 1));
    }

    #[test]
    fn port_range_parsing() {
        let range: PortRange = "6001-6002".parse().unwrap();
        assert_eq!((range.low(), range.high()), (6001, 6002));
        assert!(range.contains(6001) && range.contains(6002) && !range.contains(6003));
        assert_eq!(range.to_string(), "6001-6002");
        assert_eq!("6004".parse::<PortRange>().unwrap().to_string(), "6004");
        assert_eq!("5-5".parse::<PortRange>().unwrap().to_string(), "5");
        assert_eq!(PortRange::new(1, 65535).unwrap().to_string(), "1-65535");
    }

    #[test]
    fn round_trip_and_hostile_input() {
        let alphabet = b"aZ.*:;-0159 \t[]\x01";
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 20) as usize;
            let text: String = (0..len)
                .map(|i| alphabet[((state >> (i * 3)) as usize + i) % alphabet.len()] as char)
                .collect();
            if let Ok(ports) = ValidPorts::parse(&text, &config()) {
                let again = ValidPorts::parse(&ports.to_string(), &config()).unwrap();
                assert_eq!(again, ports, "{text:?}");
                let _ = ports.allows(&text, 1);
            }
        }
    }
}
