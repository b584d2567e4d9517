//! CIDR blocks (IPv4 and IPv6) as the blocklist sees them: parse, normalise, display, LPM key bytes.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

pub use subzero_common::BlockReason;

/// An IPv4 or IPv6 network: address with host bits cleared, plus prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cidr {
    /// `a.b.c.d/len`, `len <= 32`.
    V4 { addr: Ipv4Addr, prefix_len: u8 },
    /// `x::y/len`, `len <= 128`.
    V6 { addr: Ipv6Addr, prefix_len: u8 },
}

/// Why a CIDR string was rejected; the message names the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {input:?}: {why}")]
pub struct CidrError {
    /// The text that failed to parse.
    pub input: String,
    /// What was wrong with it.
    pub why: &'static str,
}

impl Cidr {
    /// A network from an address and prefix length; host bits are cleared.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Option<Cidr> {
        match addr {
            IpAddr::V4(a) if prefix_len <= 32 => {
                let mask = if prefix_len == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(prefix_len))
                };
                Some(Cidr::V4 {
                    addr: Ipv4Addr::from(u32::from(a) & mask),
                    prefix_len,
                })
            }
            IpAddr::V6(a) if prefix_len <= 128 => {
                let mask = if prefix_len == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(prefix_len))
                };
                Some(Cidr::V6 {
                    addr: Ipv6Addr::from(u128::from(a) & mask),
                    prefix_len,
                })
            }
            _ => None,
        }
    }

    /// The single-address network (/32 or /128).
    pub fn host(addr: IpAddr) -> Cidr {
        match addr {
            IpAddr::V4(addr) => Cidr::V4 {
                addr,
                prefix_len: 32,
            },
            IpAddr::V6(addr) => Cidr::V6 {
                addr,
                prefix_len: 128,
            },
        }
    }

    /// The prefix length in bits.
    pub fn prefix_len(&self) -> u8 {
        match *self {
            Cidr::V4 { prefix_len, .. } | Cidr::V6 { prefix_len, .. } => prefix_len,
        }
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        match *self {
            Cidr::V4 { addr, .. } => IpAddr::V4(addr),
            Cidr::V6 { addr, .. } => IpAddr::V6(addr),
        }
    }

    /// Whether `ip` lies inside this network.
    pub fn contains(&self, ip: IpAddr) -> bool {
        Cidr::new(ip, self.prefix_len()).is_some_and(|c| c == *self)
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Cidr, CidrError> {
        let err = |why| CidrError {
            input: s.to_owned(),
            why,
        };
        let text = s.trim();
        if text.is_empty() {
            return Err(err(
                "empty; expected an address like 10.0.0.0/8, 2001:db8::/32 or 192.0.2.7",
            ));
        }
        let (addr_text, len_text) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let addr: IpAddr = addr_text
            .parse()
            .map_err(|_| err("not an IPv4 or IPv6 address"))?;
        let Some(len_text) = len_text else {
            return Ok(Cidr::host(addr));
        };
        let prefix_len: u8 = len_text
            .parse()
            .map_err(|_| err("prefix length is not a number"))?;
        Cidr::new(addr, prefix_len).ok_or_else(|| {
            err(if addr.is_ipv4() {
                "prefix length must be 0..=32 for IPv4"
            } else {
                "prefix length must be 0..=128 for IPv6"
            })
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cidr::V4 { addr, prefix_len } => write!(f, "{addr}/{prefix_len}"),
            Cidr::V6 { addr, prefix_len } => write!(f, "{addr}/{prefix_len}"),
        }
    }
}

/// Parses a block reason label (`manual`, `threat`, `ratelimit`, `other`).
pub fn parse_block_reason(s: &str) -> Option<BlockReason> {
    BlockReason::ALL
        .into_iter()
        .find(|r| r.as_str().eq_ignore_ascii_case(s.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays() {
        for (input, shown) in [
            ("10.0.0.0/8", "10.0.0.0/8"),
            ("10.1.2.3/8", "10.0.0.0/8"),
            ("192.0.2.7", "192.0.2.7/32"),
            ("0.0.0.0/0", "0.0.0.0/0"),
            ("2001:db8::/32", "2001:db8::/32"),
            ("2001:db8:ffff::1/48", "2001:db8:ffff::/48"),
            ("::1", "::1/128"),
        ] {
            let c: Cidr = input.parse().unwrap();
            assert_eq!(c.to_string(), shown, "{input}");
            assert_eq!(shown.parse::<Cidr>().unwrap(), c);
        }
    }

    #[test]
    fn errors_name_the_input() {
        for bad in [
            "10.0.0.0/33",
            "2001:db8::/129",
            "10.0.0/8",
            "abc",
            "",
            "10.0.0.0/x",
        ] {
            let e = bad.parse::<Cidr>().unwrap_err();
            assert_eq!(e.input, bad);
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn contains() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
    }

    #[test]
    fn reasons() {
        assert_eq!(parse_block_reason("Threat"), Some(BlockReason::Threat));
        assert_eq!(parse_block_reason("nope"), None);
    }
}
