//! Local: which MACs and addresses are this firewall's. Per logical
//! interface its own MAC (its port's, for a bridge its first member's),
//! its configured addresses and its proxy-ARP/NDP prefixes.
//!
//! Owns the answers to "is this frame / address for us, and with which
//! MAC do we answer for it". It does not answer (the neighbour room
//! sends ARP replies and advertisements).

use std::net::IpAddr;

use palisade_wire::ethernet::Mac;

use crate::config::{Config, Prefix};

/// How we answer ARP / neighbour solicitation for an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// Ours: answered with this MAC, with authority (the NA override
    /// flag).
    Own(Mac),
    /// In a proxy-ARP/NDP prefix: answered with the interface's MAC,
    /// without override (RFC 4861 7.2.8).
    Proxy(Mac),
}

pub(super) struct Local {
    macs: Vec<Mac>,
    /// The port each interface takes its MAC from.
    mac_port: Vec<Option<usize>>,
    addresses: Vec<Vec<Prefix>>,
    proxy: Vec<Vec<Prefix>>,
}

impl Local {
    pub(super) fn new(cfg: &Config, port_macs: &[Mac]) -> Local {
        let mac_port: Vec<Option<usize>> = cfg
            .ifaces
            .iter()
            .map(|i| match i.port {
                Some(p) => Some(p),
                None => i
                    .members
                    .first()
                    .and_then(|m| cfg.ifaces.get(*m))
                    .map(|m| m.port.unwrap_or(0)),
            })
            .collect();
        Local {
            macs: mac_port
                .iter()
                .map(|p| {
                    p.and_then(|p| port_macs.get(p).copied())
                        .unwrap_or_default()
                })
                .collect(),
            mac_port,
            addresses: cfg.ifaces.iter().map(|i| i.addresses.clone()).collect(),
            proxy: cfg.ifaces.iter().map(|i| i.proxy.clone()).collect(),
        }
    }

    /// Interface `i`'s own MAC.
    pub(super) fn mac(&self, i: usize) -> Mac {
        self.macs.get(i).copied().unwrap_or_default()
    }

    pub(super) fn get_mac(&self, i: usize) -> Option<Mac> {
        self.macs.get(i).copied()
    }

    /// A port has a new MAC: for its interfaces and a bridge that took its
    /// MAC from it.
    pub(super) fn set_port_mac(&mut self, port: usize, mac: Mac) {
        for (m, p) in self.macs.iter_mut().zip(&self.mac_port) {
            if *p == Some(port) {
                *m = mac;
            }
        }
    }

    /// A unicast frame to `dst` on interface `i` is for us: its own MAC.
    pub(super) fn accepts(&self, i: usize, dst: &Mac) -> bool {
        self.macs.get(i) == Some(dst)
    }

    /// Interface `i` takes IP for itself: it has addresses.
    pub(super) fn has_addresses(&self, i: usize) -> bool {
        self.addresses.get(i).is_some_and(|a| !a.is_empty())
    }

    /// How ARP / NDP for `ip` on interface `i` is answered, if at all.
    pub(super) fn answer(&self, i: usize, ip: &IpAddr) -> Option<Answer> {
        if self.addresses.get(i)?.iter().any(|p| p.ip == *ip) {
            return Some(Answer::Own(self.mac(i)));
        }
        self.proxy[i]
            .iter()
            .any(|p| p.contains(ip))
            .then(|| Answer::Proxy(self.mac(i)))
    }

    /// `ip` is one of our addresses, on any interface.
    pub(super) fn is_ours(&self, ip: &IpAddr) -> bool {
        self.addresses.iter().flatten().any(|p| p.ip == *ip)
    }

    /// A source address for what interface `i` sends of `ip`'s family:
    /// one of its own, else one of any interface's.
    pub(super) fn source_for(&self, i: usize, v6: bool) -> Option<IpAddr> {
        let fam = |p: &&Prefix| p.ip.is_ipv6() == v6;
        self.addresses
            .get(i)
            .and_then(|a| a.iter().find(fam))
            .or_else(|| self.addresses.iter().flatten().find(fam))
            .map(|p| p.ip)
    }

    /// The broadcast address of one of our IPv4 subnets.
    pub(super) fn is_directed_broadcast(&self, ip: &IpAddr) -> bool {
        let IpAddr::V4(a) = ip else { return false };
        self.addresses.iter().flatten().any(|p| {
            p.ip.is_ipv4() && p.bits < 31 && {
                let host = u32::MAX >> p.bits;
                p.contains(ip) && u32::from(*a) & host == host
            }
        })
    }

    /// The configured addresses of interface `i`.
    pub(super) fn addresses(&self, i: usize) -> Vec<IpAddr> {
        self.addresses
            .get(i)
            .map(|a| a.iter().map(|p| p.ip).collect())
            .unwrap_or_default()
    }
}
