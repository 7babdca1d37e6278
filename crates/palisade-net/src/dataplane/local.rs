//! Local: which MACs and addresses are this firewall's. Per logical
//! interface its own MAC (its port's, for a bridge its first member's)
//! and configured addresses, its proxy-ARP/NDP prefixes, and virtual MACs
//! (CARP's 00:00:5e:00:01:VHID) switched on and off at run time, each with
//! addresses of its own that are ours only while it is on.
//!
//! Owns the answers to "is this frame / address for us, and with which
//! MAC do we answer for it". It does not answer (the neighbour room
//! sends ARP replies and advertisements), and does not decide who is
//! master (the control plane switches virtual MACs).

use std::fmt;
use std::net::IpAddr;

use palisade_wire::ethernet::{is_multicast, Mac};

use super::{Dataplane, Out};
use crate::config::{Config, Prefix};

/// How we answer ARP / neighbour solicitation for an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// Ours (configured, or of a virtual MAC that is on): answered with
    /// this MAC, with authority (the NA override flag).
    Own(Mac),
    /// In a proxy-ARP/NDP prefix: answered with the interface's MAC,
    /// without override (RFC 4861 7.2.8).
    Proxy(Mac),
}

/// A virtual MAC on an interface and the addresses that go with it.
#[derive(Debug, Clone)]
struct VirtualMac {
    iface: usize,
    mac: Mac,
    addresses: Vec<IpAddr>,
    on: bool,
}

/// Why a virtual MAC cannot be added or switched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VirtualMacError {
    NoSuchInterface(usize),
    /// Bridge members carry no addresses: put it on the bridge interface.
    BridgeMember(String),
    /// A group address (the low bit of the first byte set).
    Multicast(Mac),
    /// The interface's own MAC, or a virtual MAC it already has.
    Duplicate(Mac),
    /// `set_virtual_mac` / `announce` for a MAC never added.
    Unknown(Mac),
    /// `announce_virtual_mac` for a MAC switched off.
    Off(Mac),
}

impl fmt::Display for VirtualMacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = |m: &Mac| palisade_wire::ethernet::mac_string(m);
        match self {
            VirtualMacError::NoSuchInterface(i) => write!(f, "no interface {i}"),
            VirtualMacError::BridgeMember(n) => write!(
                f,
                "'{n}' is a bridge member: give the virtual MAC to its bridge"
            ),
            VirtualMacError::Multicast(x) => {
                write!(f, "{} is a group address, not a station's", m(x))
            }
            VirtualMacError::Duplicate(x) => write!(f, "{} is already on this interface", m(x)),
            VirtualMacError::Unknown(x) => write!(f, "{} was not added to this interface", m(x)),
            VirtualMacError::Off(x) => write!(f, "{} is switched off: not announced", m(x)),
        }
    }
}

impl std::error::Error for VirtualMacError {}

pub(super) struct Local {
    macs: Vec<Mac>,
    /// The port each interface takes its MAC from.
    mac_port: Vec<Option<usize>>,
    names: Vec<String>,
    addresses: Vec<Vec<Prefix>>,
    proxy: Vec<Vec<Prefix>>,
    /// Route next hops per interface: never answered for as a proxy.
    gateways: Vec<Vec<IpAddr>>,
    members: Vec<bool>,
    virtuals: Vec<VirtualMac>,
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
            names: cfg.ifaces.iter().map(|i| i.name.clone()).collect(),
            addresses: cfg.ifaces.iter().map(|i| i.addresses.clone()).collect(),
            proxy: cfg.ifaces.iter().map(|i| i.proxy.clone()).collect(),
            gateways: cfg.gateways(),
            members: cfg.ifaces.iter().map(|i| i.bridge.is_some()).collect(),
            virtuals: Vec::new(),
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

    /// A unicast frame to `dst` on interface `i` is for us: its own MAC or
    /// a virtual MAC that is on.
    pub(super) fn accepts(&self, i: usize, dst: &Mac) -> bool {
        self.macs.get(i) == Some(dst)
            || self
                .virtuals
                .iter()
                .any(|v| v.on && v.iface == i && v.mac == *dst)
    }

    /// Interface `i` takes IP for itself: it has addresses (configured, or
    /// of a virtual MAC that is on).
    pub(super) fn has_addresses(&self, i: usize) -> bool {
        self.addresses.get(i).is_some_and(|a| !a.is_empty())
            || self
                .virtuals
                .iter()
                .any(|v| v.on && v.iface == i && !v.addresses.is_empty())
    }

    /// How ARP / NDP for `ip` on interface `i` is answered, if at all.
    pub(super) fn answer(&self, i: usize, ip: &IpAddr) -> Option<Answer> {
        if self.addresses.get(i)?.iter().any(|p| p.ip == *ip) {
            return Some(Answer::Own(self.mac(i)));
        }
        if let Some(v) = self
            .virtuals
            .iter()
            .find(|v| v.on && v.iface == i && v.addresses.contains(ip))
        {
            return Some(Answer::Own(v.mac));
        }
        // A gateway of ours on this link is its own station, whatever
        // prefix covers it.
        if self.gateways.get(i).is_some_and(|g| g.contains(ip)) {
            return None;
        }
        self.proxy[i]
            .iter()
            .any(|p| p.contains(ip))
            .then(|| Answer::Proxy(self.mac(i)))
    }

    /// `ip` is a virtual address of interface `i`, its MAC on or off (a
    /// backup's standby address).
    pub(super) fn is_virtual_address(&self, i: usize, ip: &IpAddr) -> bool {
        self.virtuals
            .iter()
            .any(|v| v.iface == i && v.addresses.contains(ip))
    }

    /// Another station claims `ip` on interface `i`, from `mac`: `ip` is
    /// one of the interface's own addresses (not a CARP address, which a
    /// peer announces in a takeover) or a single address it answers for
    /// by proxy (the router it replaced still answering, say), and `mac`
    /// none of ours.
    pub(super) fn conflicts(&self, i: usize, ip: &IpAddr, mac: &Mac) -> bool {
        (self
            .addresses
            .get(i)
            .is_some_and(|a| a.iter().any(|p| p.ip == *ip))
            || (self.proxy.get(i).is_some_and(|p| {
                p.iter()
                    .any(|p| p.ip == *ip && p.bits == if ip.is_ipv4() { 32 } else { 128 })
            }) && !self.gateways.get(i).is_some_and(|g| g.contains(ip))))
            && !self.macs.contains(mac)
            && !self.virtuals.iter().any(|v| v.mac == *mac)
    }

    /// `ip` is one of our addresses, on any interface.
    pub(super) fn is_ours(&self, ip: &IpAddr) -> bool {
        self.addresses.iter().flatten().any(|p| p.ip == *ip)
            || self
                .virtuals
                .iter()
                .any(|v| v.on && v.addresses.contains(ip))
    }

    /// `ip` is one of our addresses as seen on interface `i`: an IPv6
    /// link-local address only if it is `i`'s (each link has its own
    /// fe80::/10: the firewall's fe80::1 on one link is not the gateway
    /// fe80::1 on another), any other on any interface.
    pub(super) fn is_ours_at(&self, i: usize, ip: &IpAddr) -> bool {
        if !is_link_local(ip) {
            return self.is_ours(ip);
        }
        self.addresses
            .get(i)
            .is_some_and(|a| a.iter().any(|p| p.ip == *ip))
            || self
                .virtuals
                .iter()
                .any(|v| v.on && v.iface == i && v.addresses.contains(ip))
    }

    /// The interfaces that have `ip` as an address of their own (or a
    /// virtual address they hold as master).
    pub(super) fn owners(&self, ip: &IpAddr) -> Vec<usize> {
        (0..self.addresses.len())
            .filter(|&i| {
                self.addresses[i].iter().any(|p| p.ip == *ip)
                    || self
                        .virtuals
                        .iter()
                        .any(|v| v.on && v.iface == i && v.addresses.contains(ip))
            })
            .collect()
    }

    /// Interface `i`'s address whose subnet holds `ip` (not link-local).
    pub(super) fn address_on(&self, i: usize, ip: &IpAddr) -> Option<IpAddr> {
        self.addresses.get(i)?.iter().find_map(|p| {
            let ll = matches!(p.ip, IpAddr::V6(a) if a.is_unicast_link_local());
            (!ll && p.ip.is_ipv6() == ip.is_ipv6() && p.contains(ip)).then_some(p.ip)
        })
    }

    /// A source address for what interface `i` sends of `ip`'s family:
    /// one of its own, else a virtual (CARP) address it holds as master
    /// (a parent without an address of its own), else one of any
    /// interface's.
    /// (An IPv6 link-local address is no source for what may leave the
    /// link: one the interface has for router advertisements is skipped,
    /// so that an ICMPv6 error to an off-link sender gets an answer.)
    pub(super) fn source_for(&self, i: usize, v6: bool) -> Option<IpAddr> {
        let fam = |p: &&Prefix| {
            p.ip.is_ipv6() == v6 && !matches!(p.ip, IpAddr::V6(a) if a.is_unicast_link_local())
        };
        self.addresses
            .get(i)
            .and_then(|a| a.iter().find(fam))
            .map(|p| p.ip)
            .or_else(|| {
                self.virtuals
                    .iter()
                    .filter(|v| v.on && v.iface == i)
                    .flat_map(|v| v.addresses.iter())
                    .find(|a| a.is_ipv6() == v6)
                    .copied()
            })
            .or_else(|| self.addresses.iter().flatten().find(fam).map(|p| p.ip))
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

    /// The proxy entries of interface `i` that name one address (/32,
    /// /128), except a gateway of ours on that link (never answered for).
    pub(super) fn proxied_hosts(&self, i: usize) -> Vec<IpAddr> {
        let Some(p) = self.proxy.get(i) else {
            return Vec::new();
        };
        p.iter()
            .filter(|p| p.bits == if p.ip.is_ipv4() { 32 } else { 128 })
            .map(|p| p.ip)
            .filter(|ip| !self.gateways.get(i).is_some_and(|g| g.contains(ip)))
            .collect()
    }

    /// Whether interface `i` is a CARP parent (has virtual addresses).
    pub(super) fn has_virtuals(&self, i: usize) -> bool {
        self.virtuals.iter().any(|v| v.iface == i)
    }

    /// The configured addresses of interface `i`.
    pub(super) fn addresses(&self, i: usize) -> Vec<IpAddr> {
        self.addresses
            .get(i)
            .map(|a| a.iter().map(|p| p.ip).collect())
            .unwrap_or_default()
    }

    pub(super) fn add_virtual(
        &mut self,
        iface: usize,
        mac: Mac,
        addresses: &[IpAddr],
    ) -> Result<(), VirtualMacError> {
        if iface >= self.macs.len() {
            return Err(VirtualMacError::NoSuchInterface(iface));
        }
        if self.members[iface] {
            return Err(VirtualMacError::BridgeMember(self.names[iface].clone()));
        }
        if is_multicast(&mac) {
            return Err(VirtualMacError::Multicast(mac));
        }
        if self.macs[iface] == mac || self.find(iface, &mac).is_some() {
            return Err(VirtualMacError::Duplicate(mac));
        }
        self.virtuals.push(VirtualMac {
            iface,
            mac,
            addresses: addresses.to_vec(),
            on: false,
        });
        Ok(())
    }

    fn find(&self, iface: usize, mac: &Mac) -> Option<usize> {
        self.virtuals
            .iter()
            .position(|v| v.iface == iface && v.mac == *mac)
    }

    pub(super) fn remove_virtual(&mut self, iface: usize, mac: &Mac) -> bool {
        match self.find(iface, mac) {
            Some(x) => {
                self.virtuals.remove(x);
                true
            }
            None => false,
        }
    }

    pub(super) fn switch_virtual(
        &mut self,
        iface: usize,
        mac: &Mac,
        on: bool,
    ) -> Result<(), VirtualMacError> {
        let x = self
            .find(iface, mac)
            .ok_or(VirtualMacError::Unknown(*mac))?;
        self.virtuals[x].on = on;
        Ok(())
    }

    /// A virtual MAC: whether it is on, and its addresses.
    pub(super) fn virtual_mac(&self, iface: usize, mac: &Mac) -> Option<(bool, Vec<IpAddr>)> {
        self.find(iface, mac)
            .map(|x| (self.virtuals[x].on, self.virtuals[x].addresses.clone()))
    }

    /// The virtual MAC of interface `i` that has `ip`: whether it is on,
    /// and the MAC.
    pub(super) fn virtual_with(&self, i: usize, ip: &IpAddr) -> Option<(bool, Mac)> {
        self.virtuals
            .iter()
            .find(|v| v.iface == i && v.addresses.contains(ip))
            .map(|v| (v.on, v.mac))
    }

    /// The virtual MACs that are on, with their interface and addresses.
    pub(super) fn active_virtuals(&self) -> Vec<(usize, Mac, Vec<IpAddr>)> {
        self.virtuals
            .iter()
            .filter(|v| v.on)
            .map(|v| (v.iface, v.mac, v.addresses.clone()))
            .collect()
    }
}

impl Dataplane {
    /// Give logical interface `iface` (a routed interface or a bridge's,
    /// not a bridge member) a virtual MAC with addresses of its own,
    /// switched off.
    pub fn add_virtual_mac(
        &mut self,
        iface: usize,
        mac: Mac,
        addresses: &[IpAddr],
    ) -> Result<(), VirtualMacError> {
        self.local.add_virtual(iface, mac, addresses)
    }

    /// Forget a virtual MAC; false if `iface` had none such.
    pub fn remove_virtual_mac(&mut self, iface: usize, mac: Mac) -> bool {
        self.fast_virtual_off(mac);
        self.local.remove_virtual(iface, &mac)
    }

    /// Switch a virtual MAC on or off. On: ARP requests and neighbour
    /// solicitations for its addresses are answered with it, frames to it
    /// are taken as addressed to us, and its addresses are ours (local
    /// delivery, punt). Off: none of these (its frames are `not_for_us`),
    /// and the fast path's flows that came to it or left from it are taken
    /// back first (a backup must not forward what still reaches it).
    /// Switching on sends nothing: `announce_virtual_mac` does.
    pub fn set_virtual_mac(
        &mut self,
        iface: usize,
        mac: Mac,
        on: bool,
    ) -> Result<(), VirtualMacError> {
        if !on
            && self
                .local
                .virtual_mac(iface, &mac)
                .is_some_and(|(was, _)| was)
        {
            self.fast_virtual_off(mac);
        }
        self.local.switch_virtual(iface, &mac, on)
    }

    /// A virtual MAC of `iface`: whether it is on, and its addresses.
    pub fn virtual_mac(&self, iface: usize, mac: Mac) -> Option<(bool, Vec<IpAddr>)> {
        self.local.virtual_mac(iface, &mac)
    }

    /// What a new master sends (RFC 5798 6.4.1, carp(4)): a gratuitous ARP
    /// for each IPv4 address of the virtual MAC and an unsolicited
    /// neighbour advertisement (override set) for each IPv6 one, from the
    /// virtual MAC, so that neighbours and switches move to it.
    pub fn announce_virtual_mac(
        &mut self,
        iface: usize,
        mac: Mac,
    ) -> Result<Vec<Out>, VirtualMacError> {
        let (on, addresses) = self
            .local
            .virtual_mac(iface, &mac)
            .ok_or(VirtualMacError::Unknown(mac))?;
        if !on {
            return Err(VirtualMacError::Off(mac));
        }
        self.announce(iface, mac, &addresses);
        self.ra_takeover(iface, &addresses);
        let out = std::mem::take(&mut self.out);
        self.counters.frames_out += out.len() as u64;
        Ok(out)
    }
}

/// An IPv6 link-local address (fe80::/10).
pub(super) fn is_link_local(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(a) if a.is_unicast_link_local())
}
