//! Failed-authentication throttling, per user name and per client address.
//!
//! Each failure is counted against the user name (lower-cased) and the client address; a key
//! that reaches its limit within the window is locked for the rest of the window: requests
//! carrying credentials for it are answered 401 without being verified (so a password guess
//! during the lock-out learns nothing and costs the directory nothing). Successes do not reset
//! the address counter, only the user's. The table is bounded: when it is full, expired
//! entries are dropped, then the oldest ones.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys remembered at once.
const MAX_KEYS: usize = 100_000;

/// Limits; 0 disables a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ThrottleLimits {
    /// Failures per user name within the window before it is locked.
    pub per_user: u32,
    /// Failures per client address within the window before it is locked.
    pub per_address: u32,
    /// Length of the window, and of the lock-out it starts.
    pub window: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    since: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Address(IpAddr),
}

/// What is locked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Locked {
    User,
    Address,
}

/// The throttle table.
#[derive(Debug)]
pub struct Throttle {
    limits: ThrottleLimits,
    table: Mutex<HashMap<Key, Entry>>,
}

impl Throttle {
    pub fn new(limits: ThrottleLimits) -> Self {
        Self {
            limits,
            table: Mutex::new(HashMap::new()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        match self.table.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn over(&self, table: &HashMap<Key, Entry>, key: &Key, limit: u32, now: Instant) -> bool {
        limit > 0
            && table.get(key).is_some_and(|e| {
                e.failures >= limit && now.duration_since(e.since) < self.limits.window
            })
    }

    /// Whether the address, or the user if known, is locked now.
    pub fn check(&self, address: IpAddr, user: Option<&str>, now: Instant) -> Option<Locked> {
        let table = self.table();
        if self.over(&table, &Key::Address(address), self.limits.per_address, now) {
            return Some(Locked::Address);
        }
        if let Some(user) = user
            && self.over(
                &table,
                &Key::User(user.to_lowercase()),
                self.limits.per_user,
                now,
            )
        {
            return Some(Locked::User);
        }
        None
    }

    /// Counts a failure; returns what became (or stays) locked.
    pub fn failure(&self, address: IpAddr, user: Option<&str>, now: Instant) -> Option<Locked> {
        let mut table = self.table();
        if table.len() >= MAX_KEYS {
            let window = self.limits.window;
            table.retain(|_, e| now.duration_since(e.since) < window);
            if table.len() >= MAX_KEYS {
                table.clear();
            }
        }
        let mut bump = |key: Key| {
            let entry = table.entry(key).or_insert(Entry {
                failures: 0,
                since: now,
            });
            if now.duration_since(entry.since) >= self.limits.window {
                *entry = Entry {
                    failures: 0,
                    since: now,
                };
            }
            entry.failures = entry.failures.saturating_add(1);
        };
        bump(Key::Address(address));
        if let Some(user) = user {
            bump(Key::User(user.to_lowercase()));
        }
        drop(table);
        self.check(address, user, now)
    }

    /// A success clears the user's failures.
    pub fn success(&self, user: &str) {
        self.table().remove(&Key::User(user.to_lowercase()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_user_and_address_and_expires() {
        let t = Throttle::new(ThrottleLimits {
            per_user: 3,
            per_address: 5,
            window: Duration::from_secs(60),
        });
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let now = Instant::now();
        assert_eq!(t.failure(a, Some("Alice"), now), None);
        assert_eq!(t.failure(b, Some("alice"), now), None);
        assert_eq!(t.failure(a, Some("alice"), now), Some(Locked::User));
        assert_eq!(t.check(b, Some("ALICE"), now), Some(Locked::User));
        assert_eq!(t.check(b, Some("bob"), now), None);
        t.failure(a, Some("x"), now);
        assert_eq!(t.check(a, None, now), None);
        t.failure(a, Some("z"), now);
        assert_eq!(t.failure(a, Some("y"), now), Some(Locked::Address));
        assert_eq!(t.check(a, None, now), Some(Locked::Address));
        let later = now + Duration::from_secs(61);
        assert_eq!(t.check(a, Some("alice"), later), None);
        t.success("alice");
        assert_eq!(t.check(b, Some("alice"), now), None);
    }
}
