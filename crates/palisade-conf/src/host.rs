//! What a pf.conf depends on outside itself: the machine's interfaces, their
//! addresses and groups, user and group ids, host names, and the name tables
//! (services, protocols, ICMP types) that pfctl takes from /etc.
//!
//! A `HostModel` is either read from the running machine (by the binary) or
//! loaded from a TOML file (`palisade check --host-model FILE`), so a
//! configuration can be validated far from the firewall it is meant for.
//! The format is documented in docs/host-model.md.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Deserialize;

use crate::ir::Af;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IfAddr {
    pub ip: IpAddr,
    pub bits: u8,
    pub peer: Option<IpAddr>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub groups: Vec<String>,
    pub loopback: bool,
    pub addrs: Vec<IfAddr>,
}

#[derive(Clone, Debug, Default)]
pub struct HostModel {
    pub interfaces: Vec<Interface>,
    pub users: BTreeMap<String, u32>,
    pub groups: BTreeMap<String, u32>,
    pub hosts: BTreeMap<String, Vec<IpAddr>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileModel {
    #[serde(default)]
    interface: Vec<FileIface>,
    #[serde(default)]
    users: BTreeMap<String, u32>,
    #[serde(default)]
    groups: BTreeMap<String, u32>,
    #[serde(default)]
    hosts: BTreeMap<String, Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIface {
    name: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    loopback: Option<bool>,
    #[serde(default)]
    addresses: Vec<String>,
}

/// Parse `ADDR[/BITS] [peer ADDR]`.
pub fn parse_ifaddr(s: &str) -> Result<IfAddr, String> {
    let mut parts = s.split_whitespace();
    let a = parts.next().ok_or_else(|| "empty address".to_string())?;
    let (ipstr, bits) = match a.split_once('/') {
        Some((ip, b)) => (
            ip,
            Some(
                b.parse::<u8>()
                    .map_err(|_| format!("bad prefix length in '{a}'"))?,
            ),
        ),
        None => (a, None),
    };
    let ip: IpAddr = ipstr
        .split('%')
        .next()
        .unwrap_or(ipstr)
        .parse()
        .map_err(|_| format!("'{ipstr}' is not an IP address"))?;
    let max = Af::of(&ip).max_bits();
    let bits = bits.unwrap_or(max);
    if bits > max {
        return Err(format!("prefix length {bits} too large in '{a}'"));
    }
    let peer = match (parts.next(), parts.next()) {
        (None, _) => None,
        (Some("peer"), Some(p)) => Some(
            p.parse::<IpAddr>()
                .map_err(|_| format!("'{p}' is not an IP address"))?,
        ),
        _ => return Err(format!("expected 'ADDR[/BITS] [peer ADDR]', got '{s}'")),
    };
    Ok(IfAddr { ip, bits, peer })
}

impl HostModel {
    /// Load a host model from TOML text; errors name the problem.
    pub fn from_toml(text: &str) -> Result<HostModel, String> {
        let f: FileModel = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut m = HostModel {
            users: f.users,
            groups: f.groups,
            ..Default::default()
        };
        for i in f.interface {
            let mut addrs = Vec::new();
            for a in &i.addresses {
                addrs.push(parse_ifaddr(a).map_err(|e| format!("interface {}: {e}", i.name))?);
            }
            let loopback = i.loopback.unwrap_or_else(|| i.name.starts_with("lo"));
            m.interfaces.push(Interface {
                name: i.name,
                groups: i.groups,
                loopback,
                addrs,
            });
        }
        for (name, list) in f.hosts {
            let mut v = Vec::new();
            for a in list {
                v.push(
                    a.parse::<IpAddr>()
                        .map_err(|_| format!("hosts.{name}: '{a}' is not an IP address"))?,
                );
            }
            m.hosts.insert(name, v);
        }
        Ok(m)
    }

    pub fn interface(&self, name: &str) -> Option<&Interface> {
        self.interfaces.iter().find(|i| i.name == name)
    }

    /// Interfaces that are `name` or belong to group `name` (pfctl's
    /// ifa_exists): interface names take precedence.
    pub fn members(&self, name: &str) -> Vec<&Interface> {
        if let Some(i) = self.interface(name) {
            return vec![i];
        }
        self.interfaces
            .iter()
            .filter(|i| i.groups.iter().any(|g| g == name))
            .collect()
    }

    pub fn exists(&self, name: &str) -> bool {
        !self.members(name).is_empty()
    }

    pub fn user(&self, name: &str) -> Option<u32> {
        self.users.get(name).copied()
    }

    pub fn group(&self, name: &str) -> Option<u32> {
        self.groups.get(name).copied()
    }

    pub fn resolve(&self, name: &str) -> Option<&[IpAddr]> {
        self.hosts.get(name).map(|v| v.as_slice())
    }
}

/// Well-known TCP/UDP service names (a built-in /etc/services).
const SERVICES: &[(&str, u16)] = &[
    ("tcpmux", 1),
    ("echo", 7),
    ("discard", 9),
    ("systat", 11),
    ("daytime", 13),
    ("netstat", 15),
    ("qotd", 17),
    ("chargen", 19),
    ("ftp-data", 20),
    ("ftp", 21),
    ("ssh", 22),
    ("telnet", 23),
    ("smtp", 25),
    ("time", 37),
    ("whois", 43),
    ("tacacs", 49),
    ("domain", 53),
    ("bootps", 67),
    ("bootpc", 68),
    ("tftp", 69),
    ("gopher", 70),
    ("finger", 79),
    ("www", 80),
    ("http", 80),
    ("kerberos", 88),
    ("pop3", 110),
    ("sunrpc", 111),
    ("auth", 113),
    ("ident", 113),
    ("nntp", 119),
    ("ntp", 123),
    ("epmap", 135),
    ("netbios-ns", 137),
    ("netbios-dgm", 138),
    ("netbios-ssn", 139),
    ("imap", 143),
    ("snmp", 161),
    ("snmp-trap", 162),
    ("bgp", 179),
    ("ldap", 389),
    ("https", 443),
    ("microsoft-ds", 445),
    ("isakmp", 500),
    ("submissions", 465),
    ("syslog", 514),
    ("printer", 515),
    ("submission", 587),
    ("ldaps", 636),
    ("rsync", 873),
    ("ftps-data", 989),
    ("ftps", 990),
    ("imaps", 993),
    ("pop3s", 995),
    ("socks", 1080),
    ("openvpn", 1194),
    ("radius", 1812),
    ("radius-acct", 1813),
    ("nfs", 2049),
    ("mysql", 3306),
    ("rdp", 3389),
    ("sip", 5060),
    ("postgresql", 5432),
    ("x11", 6000),
    ("http-alt", 8080),
];

pub fn service_port(name: &str) -> Option<u16> {
    SERVICES.iter().find(|(n, _)| *n == name).map(|&(_, p)| p)
}

/// IP protocol names as pfctl prints them (the first name of each entry
/// of OpenBSD's /etc/protocols), followed by accepted aliases.
const PROTOCOLS: &[(&str, u8)] = &[
    ("ip", 0),
    ("icmp", 1),
    ("igmp", 2),
    ("ggp", 3),
    ("ipencap", 4),
    ("st", 5),
    ("tcp", 6),
    ("egp", 8),
    ("igp", 9),
    ("pup", 12),
    ("udp", 17),
    ("hmp", 20),
    ("xns-idp", 22),
    ("rdp", 27),
    ("iso-tp4", 29),
    ("dccp", 33),
    ("xtp", 36),
    ("ddp", 37),
    ("idpr-cmtp", 38),
    ("ipv6", 41),
    ("ipv6-route", 43),
    ("ipv6-frag", 44),
    ("idrp", 45),
    ("rsvp", 46),
    ("gre", 47),
    ("esp", 50),
    ("ah", 51),
    ("mobile", 55),
    ("tlsp", 56),
    ("skip", 57),
    ("ipv6-icmp", 58),
    ("ipv6-nonxt", 59),
    ("ipv6-opts", 60),
    ("rspf", 73),
    ("vmtp", 81),
    ("ospf", 89),
    ("ipip", 94),
    ("encap", 98),
    ("pim", 103),
    ("ipcomp", 108),
    ("carp", 112),
    ("l2tp", 115),
    ("sctp", 132),
    ("udplite", 136),
    ("mpls-in-ip", 137),
    ("wesp", 141),
    ("rohc", 142),
    ("pfsync", 240),
    // aliases
    ("icmp6", 58),
    ("vrrp", 112),
    ("ipv4", 4),
    ("ospfigp", 89),
];

pub fn proto_name(p: u8) -> Option<&'static str> {
    PROTOCOLS.iter().find(|(_, n)| *n == p).map(|&(s, _)| s)
}

pub fn proto_number(name: &str) -> Option<u8> {
    PROTOCOLS.iter().find(|(n, _)| *n == name).map(|&(_, p)| p)
}

/// ICMP type names (pfctl's icmp_type table).
const ICMP_TYPES: &[(&str, u8)] = &[
    ("echoreq", 8),
    ("echorep", 0),
    ("unreach", 3),
    ("squench", 4),
    ("redir", 5),
    ("althost", 6),
    ("routeradv", 9),
    ("routersol", 10),
    ("timex", 11),
    ("paramprob", 12),
    ("timereq", 13),
    ("timerep", 14),
    ("inforeq", 15),
    ("inforep", 16),
    ("maskreq", 17),
    ("maskrep", 18),
    ("trace", 30),
    ("dataconv", 31),
    ("mobredir", 32),
    ("ipv6-where", 33),
    ("ipv6-here", 34),
    ("mobregreq", 35),
    ("mobregrep", 36),
    ("skip", 39),
    ("photuris", 40),
];

const ICMP6_TYPES: &[(&str, u8)] = &[
    ("unreach", 1),
    ("toobig", 2),
    ("timex", 3),
    ("paramprob", 4),
    ("echoreq", 128),
    ("echorep", 129),
    ("groupqry", 130),
    ("listqry", 130),
    ("grouprep", 131),
    ("listenrep", 131),
    ("groupterm", 132),
    ("listendone", 132),
    ("routersol", 133),
    ("routeradv", 134),
    ("neighbrsol", 135),
    ("neighbradv", 136),
    ("redir", 137),
    ("routrrenum", 138),
    ("wrureq", 139),
    ("wrurep", 140),
    ("fqdnreq", 139),
    ("fqdnrep", 140),
    ("niqry", 139),
    ("nirep", 140),
    ("mtraceresp", 200),
    ("mtrace", 201),
];

/// (type, name, code)
const ICMP_CODES: &[(u8, &str, u8)] = &[
    (3, "net-unr", 0),
    (3, "host-unr", 1),
    (3, "proto-unr", 2),
    (3, "port-unr", 3),
    (3, "needfrag", 4),
    (3, "srcfail", 5),
    (3, "net-unk", 6),
    (3, "host-unk", 7),
    (3, "isolate", 8),
    (3, "net-prohib", 9),
    (3, "host-prohib", 10),
    (3, "net-tos", 11),
    (3, "host-tos", 12),
    (3, "filter-prohib", 13),
    (3, "host-preced", 14),
    (3, "cutoff-preced", 15),
    (5, "redir-net", 0),
    (5, "redir-host", 1),
    (5, "redir-tos-net", 2),
    (5, "redir-tos-host", 3),
    (9, "normal-adv", 0),
    (9, "common-adv", 16),
    (11, "transit", 0),
    (11, "reassemb", 1),
    (12, "badhead", 0),
    (12, "optmiss", 1),
    (12, "badlen", 2),
    (40, "unknown-ind", 1),
    (40, "auth-fail", 2),
    (40, "decrypt-fail", 3),
];

const ICMP6_CODES: &[(u8, &str, u8)] = &[
    (1, "noroute-unr", 0),
    (1, "admin-unr", 1),
    (1, "beyond-unr", 2),
    (1, "addr-unr", 3),
    (1, "port-unr", 4),
    (3, "transit", 0),
    (3, "reassemb", 1),
    (4, "badhead", 0),
    (4, "nxthdr", 1),
    (137, "redironlink", 0),
    (137, "redirrouter", 1),
];

pub fn icmp_type_number(name: &str, v6: bool) -> Option<u8> {
    let t = if v6 { ICMP6_TYPES } else { ICMP_TYPES };
    t.iter().find(|(n, _)| *n == name).map(|&(_, v)| v)
}

pub fn icmp_type_name(ty: u8, v6: bool) -> Option<&'static str> {
    let t = if v6 { ICMP6_TYPES } else { ICMP_TYPES };
    t.iter().find(|(_, v)| *v == ty).map(|&(n, _)| n)
}

pub fn icmp_code_number(name: &str, v6: bool) -> Option<(u8, u8)> {
    let t = if v6 { ICMP6_CODES } else { ICMP_CODES };
    t.iter()
        .find(|(_, n, _)| *n == name)
        .map(|&(ty, _, c)| (ty, c))
}

pub fn icmp_code_name(ty: u8, code: u8, v6: bool) -> Option<&'static str> {
    let t = if v6 { ICMP6_CODES } else { ICMP_CODES };
    t.iter()
        .find(|(t0, _, c)| *t0 == ty && *c == code)
        .map(|&(_, n, _)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_from_toml() {
        let m = HostModel::from_toml(
            r#"
            [[interface]]
            name = "lo0"
            groups = ["lo"]
            addresses = ["::1", "fe80::1%lo0/64", "127.0.0.1/8"]
            [[interface]]
            name = "em0"
            addresses = ["192.0.2.1/24", "10.0.0.1/32 peer 10.0.0.2"]
            [users]
            root = 0
            [hosts]
            localhost = ["127.0.0.1", "::1"]
            "#,
        )
        .unwrap();
        assert_eq!(m.members("lo").len(), 1);
        assert!(m.interface("lo0").unwrap().loopback);
        assert!(!m.interface("em0").unwrap().loopback);
        assert_eq!(m.interface("lo0").unwrap().addrs[1].bits, 64);
        assert!(m.interface("em0").unwrap().addrs[1].peer.is_some());
        assert_eq!(m.user("root"), Some(0));
        assert_eq!(m.resolve("localhost").unwrap().len(), 2);
    }

    #[test]
    fn model_errors_name_the_problem() {
        let e = HostModel::from_toml("[[interface]]\nname='x'\naddresses=['1.2.3']\n").unwrap_err();
        assert!(e.contains("interface x"), "{e}");
        let e = HostModel::from_toml("bogus = 1\n").unwrap_err();
        assert!(e.contains("bogus"), "{e}");
    }

    #[test]
    fn names() {
        assert_eq!(service_port("www"), Some(80));
        assert_eq!(proto_name(58), Some("ipv6-icmp"));
        assert_eq!(proto_number("icmp6"), Some(58));
        assert_eq!(icmp_code_name(3, 4, false), Some("needfrag"));
        assert_eq!(icmp_type_name(1, true), Some("unreach"));
    }
}
