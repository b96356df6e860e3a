//! Which region a client belongs to: its explicit hint, else its IP through the CIDR table,
//! else the default region.

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;
use ipnet::IpNet;

use crate::config::CidrRegion;

/// Longest region name accepted (in config and in hints); names become metric labels.
const MAX_REGION_LEN: usize = 64;

/// Region names are short tokens: letters, digits, `_`, `-`, `.`.
pub fn check_region_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must name a region".into());
    }
    if name.len() > MAX_REGION_LEN {
        return Err(format!("region name longer than {MAX_REGION_LEN} bytes"));
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err(format!(
            "`{name}` is not a region name (letters, digits, `_`, `-`, `.`)"
        ));
    }
    Ok(())
}

/// How the client's region was decided (logged, and handy in tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionSource {
    Hint,
    Cidr,
    Default,
}

/// The CIDR table and the default region.
#[derive(Debug, Clone)]
pub struct RegionMap {
    /// Sorted longest prefix first, so the first match is the most specific.
    cidrs: Vec<(IpNet, String)>,
    default_region: String,
}

impl RegionMap {
    pub fn new(rows: &[CidrRegion], default_region: &str) -> Self {
        let mut cidrs: Vec<(IpNet, String)> = rows
            .iter()
            .map(|row| (row.cidr.trunc(), row.region.clone()))
            .collect();
        // Stable sort: among equal prefixes the first configured row wins.
        cidrs.sort_by_key(|(net, _)| std::cmp::Reverse(net.prefix_len()));
        RegionMap {
            cidrs,
            default_region: default_region.to_owned(),
        }
    }

    /// The client's region. `hint` must already be a valid region name.
    pub fn resolve(&self, hint: Option<&str>, ip: Option<IpAddr>) -> (String, RegionSource) {
        if let Some(hint) = hint.filter(|h| !h.is_empty()) {
            return (hint.to_owned(), RegionSource::Hint);
        }
        if let Some(region) = ip.and_then(|ip| self.lookup(ip)) {
            return (region.to_owned(), RegionSource::Cidr);
        }
        (self.default_region.clone(), RegionSource::Default)
    }

    /// The region of the most specific range holding `ip`.
    pub fn lookup(&self, ip: IpAddr) -> Option<&str> {
        // Dual-stack sockets report IPv4 clients as `::ffff:a.b.c.d`.
        let ip = ip.to_canonical();
        self.cidrs
            .iter()
            .find(|(net, _)| net.contains(&ip))
            .map(|(_, region)| region.as_str())
    }

    pub fn regions(&self) -> impl Iterator<Item = &str> {
        self.cidrs
            .iter()
            .map(|(_, r)| r.as_str())
            .chain([self.default_region.as_str()])
    }
}

/// The client's IP: the first parseable `X-Forwarded-For` entry when the proxy in front is
/// trusted, else the socket peer.
///
/// Taking the leftmost entry lets a client choose its own IP, which is harmless here: the
/// region hint already lets any client choose its region.
pub fn client_ip(
    headers: &HeaderMap,
    peer: Option<SocketAddr>,
    trust_forwarded_for: bool,
) -> Option<IpAddr> {
    if trust_forwarded_for {
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .find_map(|item| item.trim().parse::<IpAddr>().ok());
        if forwarded.is_some() {
            return forwarded;
        }
    }
    peer.map(|peer| peer.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> RegionMap {
        let row = |cidr: &str, region: &str| CidrRegion {
            cidr: cidr.parse().unwrap(),
            region: region.into(),
        };
        RegionMap::new(
            &[
                row("10.0.0.0/8", "A"),
                row("10.2.0.0/16", "B"),
                row("2001:db8::/32", "C"),
            ],
            "D",
        )
    }

    #[test]
    fn hint_beats_cidr_beats_default() {
        let map = map();
        let ip = Some("10.2.3.4".parse().unwrap());
        assert_eq!(map.resolve(Some("C"), ip), ("C".into(), RegionSource::Hint));
        assert_eq!(map.resolve(None, ip), ("B".into(), RegionSource::Cidr));
        assert_eq!(map.resolve(Some(""), ip), ("B".into(), RegionSource::Cidr));
        assert_eq!(
            map.resolve(None, Some("10.9.0.1".parse().unwrap())),
            ("A".into(), RegionSource::Cidr)
        );
        assert_eq!(
            map.resolve(None, Some("192.168.0.1".parse().unwrap())),
            ("D".into(), RegionSource::Default)
        );
        assert_eq!(map.resolve(None, None), ("D".into(), RegionSource::Default));
    }

    #[test]
    fn cidr_handles_ipv6_and_mapped_ipv4() {
        let map = map();
        assert_eq!(map.lookup("2001:db8::1".parse().unwrap()), Some("C"));
        assert_eq!(map.lookup("::ffff:10.2.0.9".parse().unwrap()), Some("B"));
        assert_eq!(map.lookup("::1".parse().unwrap()), None);
    }

    #[test]
    fn forwarded_for_only_when_trusted() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "garbage, 10.2.0.1, 172.16.0.1".parse().unwrap(),
        );
        let peer = Some(SocketAddr::from(([127, 0, 0, 1], 5000)));
        assert_eq!(
            client_ip(&headers, peer, true),
            Some("10.2.0.1".parse().unwrap())
        );
        assert_eq!(
            client_ip(&headers, peer, false),
            Some("127.0.0.1".parse().unwrap())
        );
        assert_eq!(
            client_ip(&HeaderMap::new(), peer, true),
            Some("127.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn region_names() {
        assert!(check_region_name("eu-west-1").is_ok());
        assert!(check_region_name("").is_err());
        assert!(check_region_name("a b").is_err());
        assert!(check_region_name(&"x".repeat(65)).is_err());
    }
}
