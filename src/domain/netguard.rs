//! Where a webhook may go (issue 16): an address is refused when it is loopback,
//! link-local, private, CGNAT, unspecified, multicast, broadcast or reserved (and the
//! IPv4-mapped IPv6 forms of those), unless it lies in `WEBHOOK_ALLOWED_NETWORKS`.
//! Pure: the caller resolves the host and asks about every address it got.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The networks an operator allowed on top of the public Internet
/// (`WEBHOOK_ALLOWED_NETWORKS`, comma-separated CIDRs; empty: none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedNetworks(Vec<IpNet>);

impl AllowedNetworks {
    /// `"192.168.1.0/24, 127.0.0.0/8"`; a bare address counts as a /32 (or /128).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let net = match part.parse::<IpNet>() {
                Ok(net) => net.trunc(),
                Err(_) => match part.parse::<IpAddr>() {
                    Ok(ip) => IpNet::from(ip),
                    Err(_) => {
                        return Err(format!(
                            "{part:?} is not a network; expected comma-separated CIDRs such as 192.168.1.0/24,127.0.0.0/8"
                        ))
                    }
                },
            };
            nets.push(net);
        }
        Ok(Self(nets))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` (or the IPv4 address an IPv4-mapped `ip` carries) is in one of them.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let mapped = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.0
            .iter()
            .any(|net| net.contains(&ip) || mapped.is_some_and(|v4| net.contains(&v4)))
    }
}

/// Why `ip` may not be a webhook target by default (`None`: a public address).
pub fn refused_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => refused_v6(v6),
    }
}

fn refused_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b) {
        _ if ip.is_broadcast() => "broadcast",
        (0, _) => "unspecified",
        (127, _) => "loopback",
        (10, _) | (172, 16..=31) | (192, 168) => "private",
        (169, 254) => "link-local",
        (100, 64..=127) => "CGNAT",
        (224..=239, _) => "multicast",
        // IETF protocol assignments (192.0.0.0/24) and the reserved 240.0.0.0/4.
        (192, 0) if c == 0 => "reserved",
        (240..=255, _) => "reserved",
        _ => return None,
    })
}

fn refused_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return refused_v4(v4);
    }
    let s = ip.segments();
    Some(match s[0] {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        0xfe80..=0xfebf => "link-local",
        // Site-local (fec0::/10) is deprecated, but still private where it is used.
        0xfec0..=0xfeff | 0xfc00..=0xfdff => "private",
        0xff00..=0xffff => "multicast",
        // The NAT64 prefix (64:ff9b::/96) and the deprecated IPv4-compatible form
        // (::a.b.c.d) carry an IPv4 address: judged as that address.
        0x64 if s[1] == 0xff9b && s[2..6] == [0; 4] => return refused_v4(embedded_v4(&s)),
        0 if s[1..6] == [0; 5] => return refused_v4(embedded_v4(&s)),
        _ => return None,
    })
}

fn embedded_v4(s: &[u16; 8]) -> Ipv4Addr {
    Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8)
}

/// `Ok` when a webhook may be sent to `ip`; else why not, for the operator.
pub fn check(ip: IpAddr, allowed: &AllowedNetworks) -> Result<(), String> {
    if allowed.contains(ip) {
        return Ok(());
    }
    match refused_kind(ip) {
        None => Ok(()),
        Some(kind) => Err(format!(
            "{ip} is a {kind} address, which WEBHOOK_ALLOWED_NETWORKS does not allow"
        )),
    }
}

/// A URL as logs and audit events may show it: scheme and host (and port) only, since
/// the path or query of a webhook URL is often its secret. Anything unparsable gives
/// `"(invalid URL)"`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(invalid URL)".to_string();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    // Credentials (user:password@) are secrets too.
    let host = authority.rsplit('@').next().unwrap_or_default();
    if scheme.is_empty() || host.is_empty() {
        return "(invalid URL)".to_string();
    }
    format!("{scheme}://{host}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn refused_and_public_addresses() {
        let table: &[(&str, Option<&str>)] = &[
            ("127.0.0.1", Some("loopback")),
            ("127.255.255.254", Some("loopback")),
            ("0.0.0.0", Some("unspecified")),
            ("0.1.2.3", Some("unspecified")),
            ("10.0.0.1", Some("private")),
            ("172.16.0.1", Some("private")),
            ("172.31.255.255", Some("private")),
            ("172.32.0.1", None),
            ("172.15.255.255", None),
            ("192.168.1.1", Some("private")),
            ("192.169.0.1", None),
            ("169.254.169.254", Some("link-local")),
            ("100.64.0.1", Some("CGNAT")),
            ("100.127.255.255", Some("CGNAT")),
            ("100.128.0.1", None),
            ("100.63.255.255", None),
            ("224.0.0.1", Some("multicast")),
            ("239.255.255.250", Some("multicast")),
            ("255.255.255.255", Some("broadcast")),
            ("240.0.0.1", Some("reserved")),
            ("192.0.0.8", Some("reserved")),
            ("192.0.2.1", None),
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("::", Some("unspecified")),
            ("::1", Some("loopback")),
            ("fe80::1", Some("link-local")),
            ("febf::1", Some("link-local")),
            ("fc00::1", Some("private")),
            ("fd12:3456::1", Some("private")),
            ("fec0::1", Some("private")),
            ("ff02::1", Some("multicast")),
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:169.254.169.254", Some("link-local")),
            ("::ffff:10.1.2.3", Some("private")),
            ("::ffff:100.64.0.1", Some("CGNAT")),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some("loopback")),
            ("64:ff9b::a00:1", Some("private")),
            ("64:ff9b::808:808", None),
            ("2001:4860:4860::8888", None),
            ("2606:4700::1111", None),
        ];
        for (addr, want) in table {
            assert_eq!(refused_kind(ip(addr)), *want, "{addr}");
            assert_eq!(
                check(ip(addr), &AllowedNetworks::default()).is_ok(),
                want.is_none(),
                "{addr}"
            );
        }
    }

    #[test]
    fn allowed_networks_open_refused_ranges_and_nothing_else() {
        let allowed = AllowedNetworks::parse("127.0.0.0/8, 192.168.1.0/24,fd00::/8").unwrap();
        assert!(check(ip("127.0.0.1"), &allowed).is_ok());
        assert!(check(ip("::ffff:127.0.0.1"), &allowed).is_ok());
        assert!(check(ip("192.168.1.20"), &allowed).is_ok());
        assert!(check(ip("fd00::5"), &allowed).is_ok());
        assert!(check(ip("192.168.2.20"), &allowed).is_err());
        assert!(check(ip("::1"), &allowed).is_err());
        assert!(check(ip("169.254.169.254"), &allowed).is_err());
        let err = check(ip("10.0.0.1"), &allowed).unwrap_err();
        assert!(err.contains("private") && err.contains("WEBHOOK_ALLOWED_NETWORKS"));
    }

    #[test]
    fn allowed_networks_parse() {
        assert!(AllowedNetworks::parse("").unwrap().is_empty());
        assert!(AllowedNetworks::parse(" , ").unwrap().is_empty());
        // Host bits are dropped; a bare address is one host.
        let a = AllowedNetworks::parse("10.1.2.3/8,192.168.0.7").unwrap();
        assert!(a.contains(ip("10.200.0.1")));
        assert!(a.contains(ip("192.168.0.7")));
        assert!(!a.contains(ip("192.168.0.8")));
        for bad in ["10.0.0.0/33", "lan", "10.0.0/8", "::1/129"] {
            let err = AllowedNetworks::parse(bad).unwrap_err();
            assert!(err.contains(bad), "{err}");
        }
    }

    #[test]
    fn redacted_urls_keep_scheme_and_host_only() {
        let cases = [
            (
                "https://hooks.example.com/T0/B1/secret?token=x",
                "https://hooks.example.com",
            ),
            ("http://user:pw@10.0.0.1:8080/x", "http://10.0.0.1:8080"),
            ("http://[::1]:9/a#frag", "http://[::1]:9"),
            ("https://example.com?key=1", "https://example.com"),
            ("example.com/x", "(invalid URL)"),
            ("https:///x", "(invalid URL)"),
        ];
        for (url, want) in cases {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    proptest! {
        /// Every IPv4 address is judged the same in its IPv4-mapped IPv6 form, and an
        /// allowed network always wins.
        #[test]
        fn mapped_forms_are_judged_as_their_ipv4_address(raw in any::<u32>()) {
            let v4 = Ipv4Addr::from(raw);
            let mapped = IpAddr::V6(v4.to_ipv6_mapped());
            prop_assert_eq!(refused_kind(IpAddr::V4(v4)), refused_kind(mapped));
            let allowed = AllowedNetworks::parse(&format!("{v4}/32")).unwrap();
            prop_assert!(check(IpAddr::V4(v4), &allowed).is_ok());
            prop_assert!(check(mapped, &allowed).is_ok());
        }

        /// The standard library's own classes are always refused.
        #[test]
        fn std_classes_are_refused(raw in any::<u32>(), raw6 in any::<u128>()) {
            let v4 = Ipv4Addr::from(raw);
            if v4.is_loopback() || v4.is_private() || v4.is_link_local() || v4.is_multicast()
                || v4.is_broadcast() || v4.is_unspecified() {
                prop_assert!(refused_kind(IpAddr::V4(v4)).is_some());
            }
            let v6 = Ipv6Addr::from(raw6);
            if v6.is_loopback() || v6.is_multicast() || v6.is_unspecified()
                || v6.is_unique_local() || v6.is_unicast_link_local() {
                prop_assert!(refused_kind(IpAddr::V6(v6)).is_some());
            }
        }

        /// Redaction never keeps a path, query or fragment.
        #[test]
        fn redaction_drops_everything_after_the_host(path in "[a-zA-Z0-9/?#=&]{0,30}") {
            let shown = redact_url(&format!("https://h.example/{path}"));
            prop_assert_eq!(shown, "https://h.example");
        }
    }
}
