//! Admission: who may connect, and how many at once, for every listener
//! that accepts connections (the TCP inputs, Fluent's TCP and unix
//! sockets, GELF over HTTP, the metrics endpoint).
//!
//! One accept loop ([`accept::serve`]) does it for all of them: it checks
//! the [`Allowlist`], takes a [`Slot`] in the listener's [`Pool`] and runs
//! the connection in a tracing span (`input`, `peer`); an accept error
//! (out of file descriptors) backs off, doubling, instead of spinning.
//!
//! Slots are shared fairly between [`Source`]s (an IPv4 address, an IPv6
//! /64): when a pool is full, a newcomer from a source holding fewer
//! connections than the largest holder gets in, and the largest holder's
//! longest-idle connection closes; see [`slots`]. "Idle" counts from the
//! last frame that parsed, not from the last byte, so a connection kept
//! open with empty lines is idle.

pub mod accept;
pub mod slots;

use std::net::IpAddr;

use ipnet::IpNet;

pub use accept::{Gate, Listen, Peer};
pub use slots::{Activity, Pool, Slot, Slots};

/// Networks allowed to connect or send.
#[derive(Debug, Clone)]
pub struct Allowlist(Vec<IpNet>);

impl Allowlist {
    /// An allowlist of `networks`.
    pub fn new(networks: Vec<IpNet>) -> Allowlist {
        Allowlist(networks)
    }

    /// Whether `ip` may send (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// Who holds connections, for the fair share of slots: an IPv4 address,
/// an IPv6 /64 (one host is usually given a whole /64, so keying by the
/// full address would give one attacker 2^64 sources), or the local
/// peers of a unix socket together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// An IPv4 address (an IPv4-mapped IPv6 address counts as one).
    V4(u32),
    /// The first 64 bits of an IPv6 address.
    V6Prefix(u64),
    /// Peers of a unix socket (its file permissions decided who may connect).
    Local,
}

impl Source {
    /// The source `ip` belongs to.
    pub fn of(ip: IpAddr) -> Source {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Source::V4(u32::from(v4)),
            IpAddr::V6(v6) => Source::V6Prefix((u128::from(v6) >> 64) as u64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv4_is_checked_as_ipv4() {
        let allow = Allowlist::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        assert!(allow.allows("10.1.2.3".parse().unwrap()));
        assert!(allow.allows("::ffff:10.1.2.3".parse().unwrap()));
        assert!(allow.allows("::1".parse().unwrap()));
        assert!(!allow.allows("11.0.0.1".parse().unwrap()));
        assert!(!Allowlist::new(vec![]).allows("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn an_ipv6_source_is_its_slash_64_and_an_ipv4_source_its_address() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            Source::of(ip("2001:db8:1:2::1")),
            Source::of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
        );
        assert_ne!(
            Source::of(ip("2001:db8:1:2::1")),
            Source::of(ip("2001:db8:1:3::1"))
        );
        assert_eq!(
            Source::of(ip("::ffff:10.0.0.1")),
            Source::of(ip("10.0.0.1"))
        );
        assert_ne!(Source::of(ip("10.0.0.1")), Source::of(ip("10.0.0.2")));
    }
}
