//! netfilter's counting, as pure state: per ban network, attempts within
//! `retry_window` of each other add up; a longer quiet starts the count
//! again; an allowlisted address is seen but not counted. The table is
//! bounded (least recently seen evicted). No clock, no lock, no metrics:
//! the caller passes the time and counts what [`Offenders::record`] says.

use std::net::IpAddr;
use std::num::NonZeroUsize;

use ipnet::IpNet;

use super::Options;
use super::address::ban_network;

/// One ban network's record.
#[derive(Debug, Clone, PartialEq)]
pub struct Offender {
    /// netfilter's count: attempts in the current window.
    pub attempts: u64,
    /// Every match, allowlisted or not.
    pub total: u64,
    /// Epoch seconds.
    pub first_seen: f64,
    /// The last counted attempt (the window runs from it).
    pub last_attempt: f64,
    /// Epoch seconds.
    pub last_seen: f64,
    /// Bit `i`: rule `i` matched (rules past 64 share bit 63).
    pub rules: u64,
    /// On netfilter's allowlist at the last match: not counted.
    pub allowlisted: bool,
}

/// What [`Offenders::record`] did with a match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counted {
    /// Counted as an attempt toward a ban.
    Attempt,
    /// Seen, not counted: the address is on the allowlist.
    Allowlisted,
}

/// The recent offenders; see the module docs.
pub struct Offenders {
    table: lru::LruCache<IpNet, Offender>,
}

impl Offenders {
    /// A table of at most `max` ban networks.
    pub fn new(max: NonZeroUsize) -> Offenders {
        Offenders {
            table: lru::LruCache::new(max),
        }
    }

    /// Records that rule `rule` matched public address `ip` at `now`
    /// (epoch seconds), as netfilter's `ban()` counts it.
    pub fn record(
        &mut self,
        ip: IpAddr,
        rule: usize,
        now: f64,
        options: &Options,
        allowlist: &[IpNet],
    ) -> Counted {
        let allowlisted = allowlist.iter().any(|net| net.contains(&ip));
        let network = ban_network(ip, options.netban_ipv4, options.netban_ipv6);
        let bit = 1u64 << rule.min(63);
        match self.table.get_mut(&network) {
            Some(offender) => {
                if !allowlisted {
                    // A gap longer than the window restarts the count.
                    if now - offender.last_attempt > options.retry_window as f64 {
                        offender.attempts = 0;
                    }
                    offender.attempts += 1;
                    offender.last_attempt = now;
                }
                offender.total += 1;
                offender.last_seen = now;
                offender.rules |= bit;
                offender.allowlisted = allowlisted;
            }
            None => {
                self.table.put(
                    network,
                    Offender {
                        attempts: u64::from(!allowlisted),
                        total: 1,
                        first_seen: now,
                        last_attempt: now,
                        last_seen: now,
                        rules: bit,
                        allowlisted,
                    },
                );
            }
        }
        if allowlisted {
            Counted::Allowlisted
        } else {
            Counted::Attempt
        }
    }

    /// Ban networks tracked.
    pub fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether none is tracked.
    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The `n` with the most attempts (the most recent first among equals).
    pub fn top(&self, n: usize) -> Vec<(&IpNet, &Offender)> {
        let mut all: Vec<(&IpNet, &Offender)> = self.table.iter().collect();
        all.sort_by(|a, b| {
            b.1.attempts
                .cmp(&a.1.attempts)
                .then(b.1.last_attempt.total_cmp(&a.1.last_attempt))
        });
        all.truncate(n);
        all
    }

    /// One network's record, if tracked.
    pub fn get(&self, network: &IpNet) -> Option<&Offender> {
        self.table.peek(network)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn net(text: &str) -> IpNet {
        text.parse().unwrap()
    }

    #[test]
    fn attempts_within_the_window_add_up_and_a_longer_quiet_starts_again() {
        let options = Options::default();
        let mut offenders = Offenders::new(NonZeroUsize::new(10).unwrap());
        for t in 0..3 {
            offenders.record(ip("8.8.8.8"), 0, 100.0 + f64::from(t), &options, &[]);
        }
        let seen = offenders.get(&net("8.8.8.8/32")).unwrap();
        assert_eq!((seen.attempts, seen.total), (3, 3));
        // Just past the window after the last attempt: counted from 1.
        let later = 102.0 + options.retry_window as f64 + 1.0;
        offenders.record(ip("8.8.8.8"), 1, later, &options, &[]);
        let seen = offenders.get(&net("8.8.8.8/32")).unwrap();
        assert_eq!((seen.attempts, seen.total, seen.rules), (1, 4, 0b11));
        assert_eq!(seen.first_seen, 100.0);
    }

    #[test]
    fn an_allowlisted_address_is_seen_but_not_counted() {
        let options = Options::default();
        let allow = [net("8.8.8.0/24")];
        let mut offenders = Offenders::new(NonZeroUsize::new(10).unwrap());
        assert_eq!(
            offenders.record(ip("8.8.8.8"), 0, 1.0, &options, &allow),
            Counted::Allowlisted
        );
        assert_eq!(
            offenders.record(ip("8.8.8.8"), 0, 2.0, &options, &allow),
            Counted::Allowlisted
        );
        let seen = offenders.get(&net("8.8.8.8/32")).unwrap();
        assert_eq!((seen.attempts, seen.total, seen.allowlisted), (0, 2, true));
    }

    #[test]
    fn addresses_count_toward_their_ban_network_and_the_table_stays_bounded() {
        let options = Options {
            netban_ipv4: 24,
            ..Options::default()
        };
        let mut offenders = Offenders::new(NonZeroUsize::new(2).unwrap());
        offenders.record(ip("8.8.8.1"), 0, 1.0, &options, &[]);
        offenders.record(ip("8.8.8.2"), 0, 2.0, &options, &[]);
        assert_eq!(offenders.get(&net("8.8.8.0/24")).unwrap().attempts, 2);
        offenders.record(ip("1.1.1.1"), 0, 3.0, &options, &[]);
        offenders.record(ip("9.9.9.9"), 0, 4.0, &options, &[]);
        // The least recently seen (8.8.8.0/24) made room.
        assert_eq!(offenders.len(), 2);
        assert!(offenders.get(&net("8.8.8.0/24")).is_none());
        let top = offenders.top(5);
        assert_eq!(top[0].0, &net("9.9.9.0/24"));
    }
}
