//! Slowing down token guessing: an address that sent `http.max_auth_failures` wrong bearer
//! tokens within `http.auth_lockout` is answered 429 for `http.auth_lockout`, its token not
//! even checked. The table is bounded: past [`CAPACITY`] addresses, the stale ones go, and if
//! none is stale every address not yet in the table shares one entry, so a guesser spread over
//! many addresses is slowed down as one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// Addresses remembered at most.
pub const CAPACITY: usize = 10_000;

/// Who a failure is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    /// An IPv4 address, or the /64 network of an IPv6 one (one host holds a whole /64).
    Ip(IpAddr),
    /// Every address the full table has no room for; also a request without a peer address.
    Shared,
}

impl Client {
    pub fn of(ip: Option<IpAddr>) -> Self {
        match ip.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V6(v6)) => {
                let net = u128::from(v6) & !((1u128 << 64) - 1);
                Self::Ip(IpAddr::V6(net.into()))
            }
            Some(v4) => Self::Ip(v4),
            None => Self::Shared,
        }
    }
}

#[derive(Debug)]
struct Entry {
    failures: u32,
    first: DateTime<Utc>,
    locked_until: Option<DateTime<Utc>>,
}

#[derive(Debug)]
pub struct Lockout {
    max_failures: u32,
    period: chrono::TimeDelta,
    capacity: usize,
    entries: Mutex<HashMap<Client, Entry>>,
}

impl Lockout {
    pub fn new(max_failures: u32, period: Duration) -> Self {
        Self::with_capacity(max_failures, period, CAPACITY)
    }

    pub fn with_capacity(max_failures: u32, period: Duration, capacity: usize) -> Self {
        Self {
            max_failures: max_failures.max(1),
            period: chrono::TimeDelta::from_std(period).unwrap_or(chrono::TimeDelta::MAX),
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<Client, Entry>> {
        // A panic while holding the lock leaves counters, which stay usable.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The client as the table counts it: itself if it is known or fits, else [`Client::Shared`].
    fn slot(
        &self,
        table: &mut HashMap<Client, Entry>,
        client: Client,
        now: DateTime<Utc>,
    ) -> Client {
        if table.contains_key(&client) || table.len() < self.capacity {
            return client;
        }
        table.retain(|_, e| !self.stale(e, now));
        if table.len() < self.capacity {
            client
        } else {
            Client::Shared
        }
    }

    fn stale(&self, e: &Entry, now: DateTime<Utc>) -> bool {
        match e.locked_until {
            Some(until) => now >= until,
            None => now - e.first >= self.period,
        }
    }

    /// How long `client` must still wait, if it is locked out.
    pub fn locked(&self, client: Client, now: DateTime<Utc>) -> Option<Duration> {
        let mut table = self.table();
        let client = if table.contains_key(&client) || table.len() < self.capacity {
            client
        } else {
            Client::Shared
        };
        let entry = table.get(&client)?;
        let until = entry.locked_until?;
        if now < until {
            (until - now).to_std().ok()
        } else {
            table.remove(&client);
            None
        }
    }

    /// Counts a wrong token; true when this failure starts a lockout.
    pub fn failed(&self, client: Client, now: DateTime<Utc>) -> bool {
        let mut table = self.table();
        let client = self.slot(&mut table, client, now);
        let entry = table.entry(client).or_insert(Entry {
            failures: 0,
            first: now,
            locked_until: None,
        });
        if self.stale(entry, now) {
            *entry = Entry {
                failures: 0,
                first: now,
                locked_until: None,
            };
        }
        entry.failures += 1;
        if entry.failures >= self.max_failures && entry.locked_until.is_none() {
            entry.locked_until = Some(now + self.period);
            return true;
        }
        false
    }

    /// A right token: the client's earlier mistakes are forgotten.
    pub fn succeeded(&self, client: Client) {
        if client != Client::Shared {
            self.table().remove(&client);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.table().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u32) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + i64::from(s), 0).unwrap()
    }

    fn ip(s: &str) -> Client {
        Client::of(Some(s.parse().unwrap()))
    }

    #[test]
    fn the_nth_failure_locks_out_for_the_period_then_it_is_forgotten() {
        let l = Lockout::new(3, Duration::from_secs(60));
        let a = ip("192.0.2.1");
        assert!(!l.failed(a, at(0)));
        assert!(!l.failed(a, at(1)));
        assert_eq!(l.locked(a, at(2)), None);
        assert!(l.failed(a, at(2)));
        assert_eq!(l.locked(a, at(3)), Some(Duration::from_secs(59)));
        assert_eq!(l.locked(ip("192.0.2.2"), at(3)), None);
        assert_eq!(l.locked(a, at(62)), None);
        // A fresh count after the lockout.
        assert!(!l.failed(a, at(62)));
        assert_eq!(l.locked(a, at(63)), None);
    }

    #[test]
    fn failures_older_than_the_period_do_not_count() {
        let l = Lockout::new(2, Duration::from_secs(60));
        let a = ip("192.0.2.1");
        assert!(!l.failed(a, at(0)));
        assert!(!l.failed(a, at(60)));
        assert!(l.failed(a, at(61)));
    }

    #[test]
    fn a_right_token_forgets_the_mistakes() {
        let l = Lockout::new(2, Duration::from_secs(60));
        let a = ip("192.0.2.1");
        assert!(!l.failed(a, at(0)));
        l.succeeded(a);
        assert!(!l.failed(a, at(1)));
    }

    #[test]
    fn one_ipv6_network_is_one_client_and_mapped_ipv4_is_ipv4() {
        assert_eq!(ip("2001:db8::1"), ip("2001:db8::ffff:1"));
        assert_ne!(ip("2001:db8::1"), ip("2001:db8:0:1::1"));
        assert_eq!(ip("::ffff:192.0.2.1"), ip("192.0.2.1"));
    }

    #[test]
    fn a_full_table_drops_stale_entries_then_shares_one() {
        let l = Lockout::with_capacity(2, Duration::from_secs(60), 3);
        for i in 1..=3 {
            l.failed(ip(&format!("192.0.2.{i}")), at(0));
        }
        assert_eq!(l.len(), 3);
        // No room, nothing stale: the newcomers share one entry and lock it together.
        assert!(!l.failed(ip("198.51.100.1"), at(1)));
        assert!(l.failed(ip("198.51.100.2"), at(2)));
        assert_eq!(l.len(), 4);
        assert!(l.locked(ip("198.51.100.3"), at(3)).is_some());
        assert!(l.locked(ip("192.0.2.1"), at(3)).is_none());
        // Once the old entries are stale, a newcomer has its own again.
        assert!(!l.failed(ip("203.0.113.9"), at(70)));
        assert!(l.len() <= 4, "{}", l.len());
        assert!(l.locked(ip("203.0.113.9"), at(71)).is_none());
    }
}
