//! What netfilter-mailcow makes of a rule's group 1: Python's
//! `ipaddress.ip_address`, then `is_private or is_loopback` → ignored.
//!
//! The private ranges are Python 3.12's `is_private` tables (which include
//! the documentation ranges such as 203.0.113.0/24). An IPv4-mapped IPv6
//! address counts as private as a whole (`::ffff:0:0/96`), as Python ≤ 3.12
//! has it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The verdict on a captured address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    /// Counts toward a ban.
    Public(IpAddr),
    /// Private or loopback: netfilter skips it.
    Private,
    /// `ip_address` raises: netfilter's watch loop exits with 2.
    NotAnAddress,
}

/// Classifies group 1 as netfilter would.
pub fn classify(text: &str) -> AddressClass {
    let Ok(ip) = text.parse::<IpAddr>() else {
        return AddressClass::NotAnAddress;
    };
    let private = match ip {
        IpAddr::V4(v4) => v4_private(v4),
        IpAddr::V6(v6) => v6_private(v6),
    };
    if private {
        AddressClass::Private
    } else {
        AddressClass::Public(ip)
    }
}

const V4_PRIVATE: &[(u32, u8)] = &[
    (0x0000_0000, 8),  // 0.0.0.0/8
    (0x0a00_0000, 8),  // 10.0.0.0/8
    (0x7f00_0000, 8),  // 127.0.0.0/8
    (0xa9fe_0000, 16), // 169.254.0.0/16
    (0xac10_0000, 12), // 172.16.0.0/12
    (0xc000_0000, 29), // 192.0.0.0/29
    (0xc000_00aa, 31), // 192.0.0.170/31
    (0xc000_0200, 24), // 192.0.2.0/24
    (0xc0a8_0000, 16), // 192.168.0.0/16
    (0xc612_0000, 15), // 198.18.0.0/15
    (0xc633_6400, 24), // 198.51.100.0/24
    (0xcb00_7100, 24), // 203.0.113.0/24
    (0xf000_0000, 4),  // 240.0.0.0/4
    (0xffff_ffff, 32), // 255.255.255.255/32
];

fn v4_private(ip: Ipv4Addr) -> bool {
    let bits = u32::from(ip);
    V4_PRIVATE
        .iter()
        .any(|&(net, len)| bits >> (32 - u32::from(len)) == net >> (32 - u32::from(len)))
}

const V6_PRIVATE: &[(u128, u8)] = &[
    (1, 128),                                        // ::1/128
    (0, 128),                                        // ::/128
    (0xffff_0000_0000, 96),                          // ::ffff:0:0/96
    (0x0100_0000_0000_0000_0000_0000_0000_0000, 64), // 100::/64
    (0x2001_0000_0000_0000_0000_0000_0000_0000, 23), // 2001::/23
    (0x2001_0db8_0000_0000_0000_0000_0000_0000, 32), // 2001:db8::/32
    (0xfc00_0000_0000_0000_0000_0000_0000_0000, 7),  // fc00::/7
    (0xfe80_0000_0000_0000_0000_0000_0000_0000, 10), // fe80::/10
];

fn v6_private(ip: Ipv6Addr) -> bool {
    let bits = u128::from(ip);
    V6_PRIVATE
        .iter()
        .any(|&(net, len)| bits >> (128 - u32::from(len)) == net >> (128 - u32::from(len)))
}

/// The network netfilter bans for `ip`: `netban_ipv4` / `netban_ipv6`
/// prefix bits (32 / 128 by default: the address itself). Its text is the
/// field of `F2B_ACTIVE_BANS` (`198.51.7.0/24`, `2a01:4f8::/64`); kept as
/// numbers, so that counting an attempt formats nothing.
///
/// `185.12.64.77` with `netban_ipv4 = 24` → `185.12.64.0/24`
pub fn ban_network(ip: IpAddr, netban_v4: u8, netban_v6: u8) -> IpNet {
    let prefix = match ip {
        IpAddr::V4(_) => netban_v4.min(32),
        IpAddr::V6(_) => netban_v6.min(128),
    };
    IpNet::new(ip, prefix).map_or(IpNet::from(ip), |net| net.trunc())
}

/// A network as Python's `ipaddress.ip_network(text, strict=False)` reads
/// it, the way netfilter reads the fields of `F2B_WHITELIST` and
/// `F2B_PERM_BANS`: an address (`/32`, `/128`), an address with a prefix
/// length, or for IPv4 with a netmask or a host mask; host bits are
/// cleared. `None` for anything else (netfilter takes that for a host
/// name).
///
/// `185.12.64.7/24` → `185.12.64.0/24`; `10.1.2.3/255.255.0.0` →
/// `10.1.0.0/16`; `2a01:4f8::1` → `2a01:4f8::1/128`
pub fn parse_network(text: &str) -> Option<IpNet> {
    let (address, mask) = match text.split_once('/') {
        Some((address, mask)) => (address, Some(mask)),
        None => (text, None),
    };
    let address: IpAddr = address.parse().ok()?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    let prefix = match mask {
        None => max,
        // Python takes decimal digits only (no sign, no spaces).
        Some(m) if !m.is_empty() && m.bytes().all(|b| b.is_ascii_digit()) => {
            m.parse::<u8>().ok().filter(|p| *p <= max)?
        }
        Some(m) if address.is_ipv4() => {
            let bits = u32::from(m.parse::<Ipv4Addr>().ok()?);
            // A netmask (ones, then zeros) or a host mask (zeros, then ones).
            if bits.leading_ones() + bits.trailing_zeros() == 32 {
                bits.leading_ones() as u8
            } else if bits.leading_zeros() + bits.trailing_ones() == 32 {
                bits.leading_zeros() as u8
            } else {
                return None;
            }
        }
        Some(_) => return None,
    };
    IpNet::new(address, prefix).ok().map(|net| net.trunc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_private_and_loopback_ranges_are_ignored() {
        for private in [
            "10.1.2.3",
            "127.0.0.1",
            "192.168.1.1",
            "172.22.1.5",
            "169.254.0.1",
            "203.0.113.5",
            "198.51.100.7",
            "192.0.2.1",
            "::1",
            "fe80::1",
            "fd4d:6169:6c63:6f77::1",
            "2001:db8::1",
            "::ffff:8.8.8.8",
            "0.0.0.0",
            "::",
        ] {
            assert_eq!(classify(private), AddressClass::Private, "{private}");
        }
        for public in [
            "8.8.8.8",
            "185.12.64.1",
            "2a01:4f8::1",
            "100.64.0.1",
            "172.32.0.1",
        ] {
            assert!(
                matches!(classify(public), AddressClass::Public(_)),
                "{public}"
            );
        }
        for bad in [
            "1.2.3",
            "01.2.3.4",
            "1.2.3.4.",
            ":::",
            "1.2.3.256",
            ".",
            "a.b",
        ] {
            assert_eq!(classify(bad), AddressClass::NotAnAddress, "{bad}");
        }
    }

    #[test]
    fn networks_are_read_as_pythons_ip_network_reads_them_not_strict() {
        let net = |text: &str| parse_network(text).map(|n| n.to_string());
        assert_eq!(net("185.12.64.7").as_deref(), Some("185.12.64.7/32"));
        assert_eq!(net("185.12.64.7/24").as_deref(), Some("185.12.64.0/24"));
        assert_eq!(net("10.1.2.3/255.255.0.0").as_deref(), Some("10.1.0.0/16"));
        assert_eq!(net("10.1.2.3/0.0.0.255").as_deref(), Some("10.1.2.0/24"));
        assert_eq!(net("10.1.2.3/0").as_deref(), Some("0.0.0.0/0"));
        assert_eq!(net("2a01:4f8::1").as_deref(), Some("2a01:4f8::1/128"));
        assert_eq!(
            net("2a01:4f8:1:2::5/64").as_deref(),
            Some("2a01:4f8:1:2::/64")
        );
        for bad in [
            "mail.example.org",
            "185.12.64.7/33",
            "185.12.64.7/",
            "185.12.64.7/+8",
            "185.12.64.7/255.0.255.0",
            "2a01::1/ffff::",
            "01.2.3.4",
            " 1.2.3.4",
            "",
        ] {
            assert_eq!(net(bad), None, "{bad}");
        }
    }

    #[test]
    fn ban_networks_use_the_netban_prefixes() {
        let v4: IpAddr = "185.12.64.77".parse().unwrap();
        let text = |ip, v4, v6| ban_network(ip, v4, v6).to_string();
        assert_eq!(text(v4, 32, 128), "185.12.64.77/32");
        assert_eq!(text(v4, 24, 128), "185.12.64.0/24");
        assert_eq!(text(v4, 0, 128), "0.0.0.0/0");
        assert_eq!(text(v4, 40, 128), "185.12.64.77/32");
        let v6: IpAddr = "2a01:4f8:1:2::5".parse().unwrap();
        assert_eq!(text(v6, 32, 64), "2a01:4f8:1:2::/64");
        assert_eq!(text(v6, 32, 0), "::/0");
        assert_eq!(text(v6, 32, 128), "2a01:4f8:1:2::5/128");
    }
}
