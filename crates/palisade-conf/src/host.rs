//! What a pf.conf depends on outside itself: the machine's interfaces, their
//! addresses and groups, user and group ids, host names, and the name tables
//! (services, protocols) that pfctl takes from /etc.
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
    /// The machine's services database (/etc/services, or `[services]` of
    /// a host model): name or alias -> (TCP port, UDP port), the first
    /// entry of each transport. Consulted after OpenBSD's.
    pub services: BTreeMap<String, (Option<u16>, Option<u16>)>,
    /// The machine's protocols database (/etc/protocols, or `[protocols]`
    /// of a host model): name or alias -> number. Consulted after OpenBSD's.
    pub protocols: BTreeMap<String, u8>,
    /// The routing table beyond the interfaces' own subnets (which are
    /// connected routes): for `no-route` and `urpf-failed`.
    pub routes: Vec<HostRoute>,
}

/// A route: destination prefix and the interface it leaves by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRoute {
    pub to: IpAddr,
    pub bits: u8,
    pub iface: String,
}

fn prefix_contains(net: &IpAddr, bits: u8, ip: &IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let m = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits.min(32))
            };
            u32::from(*n) & m == u32::from(*a) & m
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let m = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits.min(128))
            };
            u128::from(*n) & m == u128::from(*a) & m
        }
        _ => false,
    }
}

/// A `[services]` value in a host model: a port for both TCP and UDP, or
/// "PORT/tcp", "PORT/udp", or a list of those.
#[derive(Deserialize)]
#[serde(untagged)]
enum FileService {
    Port(u16),
    One(String),
    Many(Vec<String>),
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
    #[serde(default)]
    services: BTreeMap<String, FileService>,
    #[serde(default)]
    protocols: BTreeMap<String, u8>,
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

/// Why an interface address (`ADDR[/BITS] [peer ADDR]`) was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IfAddrError {
    #[error("empty address")]
    Empty,
    /// The text after `/` (in the whole `ADDR/BITS`) is not a number.
    #[error("bad prefix length in '{0}'")]
    BadPrefixLength(String),
    #[error("'{0}' is not an IP address")]
    NotAnAddress(String),
    #[error("prefix length {bits} too large in '{addr}'")]
    PrefixTooLong { bits: u8, addr: String },
    /// Words after the address other than `peer ADDR`.
    #[error("expected 'ADDR[/BITS] [peer ADDR]', got '{0}'")]
    Syntax(String),
}

/// Why a host model was refused: the entry and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum HostModelError {
    /// Not TOML, or not shaped as a host model (toml's message, which
    /// gives the line and column).
    #[error(transparent)]
    Toml(#[from] toml::de::Error),
    #[error("interface {interface}: {source}")]
    Address {
        interface: String,
        source: IfAddrError,
    },
    #[error("hosts.{name}: '{addr}' is not an IP address")]
    HostAddress { name: String, addr: String },
    #[error("services.{name}: expected PORT, \"PORT/tcp\" or \"PORT/udp\", got '{entry}'")]
    Service { name: String, entry: String },
}

/// Parse `ADDR[/BITS] [peer ADDR]`.
pub fn parse_ifaddr(s: &str) -> Result<IfAddr, IfAddrError> {
    let mut parts = s.split_whitespace();
    let a = parts.next().ok_or(IfAddrError::Empty)?;
    let (ipstr, bits) = match a.split_once('/') {
        Some((ip, b)) => (
            ip,
            Some(
                b.parse::<u8>()
                    .map_err(|_| IfAddrError::BadPrefixLength(a.to_string()))?,
            ),
        ),
        None => (a, None),
    };
    let ip: IpAddr = ipstr
        .split('%')
        .next()
        .unwrap_or(ipstr)
        .parse()
        .map_err(|_| IfAddrError::NotAnAddress(ipstr.to_string()))?;
    let max = Af::of(&ip).max_bits();
    let bits = bits.unwrap_or(max);
    if bits > max {
        return Err(IfAddrError::PrefixTooLong {
            bits,
            addr: a.to_string(),
        });
    }
    let peer = match (parts.next(), parts.next()) {
        (None, _) => None,
        (Some("peer"), Some(p)) => Some(
            p.parse::<IpAddr>()
                .map_err(|_| IfAddrError::NotAnAddress(p.to_string()))?,
        ),
        _ => return Err(IfAddrError::Syntax(s.to_string())),
    };
    Ok(IfAddr { ip, bits, peer })
}

impl HostModel {
    /// The interface the routing table sends `ip` out of: the longest
    /// prefix among the interfaces' subnets (connected routes, which win
    /// ties) and `routes`; None when no route covers it.
    pub fn route_iface(&self, ip: &IpAddr) -> Option<&str> {
        let mut best: Option<(u8, &str)> = None;
        // (A CARP interface's subnets are routes on its parent, in
        // `routes`: traffic is filtered on the parent, and OpenBSD's
        // pf_routable takes a route through a CARP interface for one
        // through its parent.)
        for i in self
            .interfaces
            .iter()
            .filter(|i| !i.groups.iter().any(|g| g == "carp"))
        {
            for a in &i.addrs {
                if prefix_contains(&a.ip, a.bits, ip) && best.is_none_or(|(b, _)| a.bits > b) {
                    best = Some((a.bits, &i.name));
                }
            }
        }
        for r in &self.routes {
            if prefix_contains(&r.to, r.bits, ip) && best.is_none_or(|(b, _)| r.bits > b) {
                best = Some((r.bits, &r.iface));
            }
        }
        best.map(|(_, i)| i)
    }

    /// pf's `no-route` is the negation: some route covers `ip`. An IPv6
    /// link-local address counts as routable (pf skips addresses with a
    /// scope).
    pub fn routable(&self, ip: &IpAddr) -> bool {
        is_link_local_v6(ip) || self.route_iface(ip).is_some()
    }

    /// pf's unicast reverse-path check (`urpf-failed` is the negation):
    /// the route back to `src` leaves by `iface`, the interface the packet
    /// is on.
    pub fn urpf_ok(&self, src: &IpAddr, iface: &str) -> bool {
        is_link_local_v6(src) || self.route_iface(src) == Some(iface)
    }

    /// Load a host model from TOML text; errors name the problem.
    pub fn from_toml(text: &str) -> Result<HostModel, HostModelError> {
        let f: FileModel = toml::from_str(text)?;
        let mut m = HostModel {
            users: f.users,
            groups: f.groups,
            ..Default::default()
        };
        for i in f.interface {
            let mut addrs = Vec::new();
            for a in &i.addresses {
                addrs.push(parse_ifaddr(a).map_err(|source| HostModelError::Address {
                    interface: i.name.clone(),
                    source,
                })?);
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
                let Ok(ip) = a.parse::<IpAddr>() else {
                    return Err(HostModelError::HostAddress { name, addr: a });
                };
                v.push(ip);
            }
            m.hosts.insert(name, v);
        }
        for (name, spec) in f.services {
            let items = match spec {
                FileService::Port(p) => vec![format!("{p}/tcp"), format!("{p}/udp")],
                FileService::One(s) => vec![s],
                FileService::Many(v) => v,
            };
            for it in items {
                let bad = || HostModelError::Service {
                    name: name.clone(),
                    entry: it.clone(),
                };
                let (port, proto) = it.split_once('/').ok_or_else(bad)?;
                let port: u16 = port.parse().map_err(|_| bad())?;
                if !m.add_service(&name, port, proto) {
                    return Err(bad());
                }
            }
        }
        m.protocols = f.protocols;
        Ok(m)
    }

    /// Record `name` as `port/proto` in the host's services database unless
    /// an earlier entry gave it that transport already (the first entry
    /// wins, as getservbyname finds it). False for a transport other than
    /// tcp or udp.
    pub fn add_service(&mut self, name: &str, port: u16, proto: &str) -> bool {
        let e = self.services.entry(name.to_string()).or_default();
        match proto {
            "tcp" => {
                e.0.get_or_insert(port);
            }
            "udp" => {
                e.1.get_or_insert(port);
            }
            _ => return false,
        }
        true
    }

    /// The port the host's own services database gives `name` (TCP first,
    /// then UDP, as pfctl asks).
    pub fn service(&self, name: &str) -> Option<u16> {
        self.services.get(name).and_then(|&(t, u)| t.or(u))
    }

    /// The number the host's own protocols database gives `name`.
    pub fn protocol(&self, name: &str) -> Option<u8> {
        self.protocols.get(name).copied()
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

/// Port and protocol names as OpenBSD's pfctl knows them (its built-in
/// databases); the host's own are in [`HostModel::services`] and
/// [`HostModel::protocols`].
pub use crate::netdb::{proto_name, proto_number, service_port};

fn is_link_local_v6(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(a) if a.segments()[0] & 0xffc0 == 0xfe80)
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
        let e = HostModel::from_toml("[[interface]]\nname='x'\naddresses=['1.2.3']\n")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "interface x: '1.2.3' is not an IP address");
        let e = HostModel::from_toml("bogus = 1\n").unwrap_err().to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = HostModel::from_toml("[services]\nx = \"80/sctp\"\n")
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "services.x: expected PORT, \"PORT/tcp\" or \"PORT/udp\", got '80/sctp'"
        );
    }

    #[test]
    fn names() {
        assert_eq!(service_port("www"), Some(80));
        assert_eq!(proto_name(58), Some("ipv6-icmp"));
        assert_eq!(proto_number("icmp6"), Some(58));
    }
}
