//! Listeners: sockets in, frames to the [`crate::pipeline::Processor`].
//!
//! The sender allowlist is checked before a byte is parsed.

pub mod http;
pub mod tcp;
pub mod udp;

use std::net::IpAddr;

use ipnet::IpNet;

/// Networks allowed to send.
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
}
