//! Router advertisements on the interfaces palisade.toml gives them
//! (`[interface.router-advertisements]`): [`crate::ra`]'s schedule and
//! message, sent here from the interface's link-local address to
//! all-nodes, and solicitations fed in. Neighbour discovery: sent and
//! taken before pf, as NS/NA are (docs/design-net.md).

use std::net::{IpAddr, Ipv6Addr};

use palisade_wire::ethernet::EtherType;
use palisade_wire::IpInfo;

use super::Dataplane;
use crate::config::Config;
use crate::ra::{self, Advert, Schedule};

/// All-nodes, where advertisements go (RFC 4861 6.2.2).
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

pub(super) struct Advertiser {
    iface: usize,
    /// The interface's (first) link-local address, the sender; or the
    /// CARP interface's (`carp`).
    src: Ipv6Addr,
    /// `carp = ...`: sent from the CARP interface's link-local address
    /// and virtual MAC, and only while that MAC is on (master).
    carp: bool,
    advert: Advert,
    schedule: Schedule,
}

/// The advertisers of `cfg`'s interfaces (their MACs from `mac`), the
/// first advertisement due at once.
pub(super) fn advertisers(
    cfg: &Config,
    mac: impl Fn(usize) -> [u8; 6],
    seed: u64,
) -> Vec<Advertiser> {
    let mut out = Vec::new();
    for (i, ifc) in cfg.ifaces.iter().enumerate() {
        let Some(rc) = &ifc.ra else { continue };
        let v6 = ifc.addresses.iter().filter_map(|p| match p.ip {
            IpAddr::V6(a) => Some((a, p.bits)),
            IpAddr::V4(_) => None,
        });
        let own = v6
            .clone()
            .map(|(a, _)| a)
            .find(|a| a.is_unicast_link_local());
        let Some(src) = rc.carp.as_ref().map(|(_, ll)| *ll).or(own) else {
            continue;
        };
        let mut prefixes: Vec<(Ipv6Addr, u8)> = Vec::new();
        // (Not a /128: an address alone is no prefix a host could take
        // one from or find on the link, and rad(8) leaves it out too.)
        for (a, bits) in v6.filter(|(a, bits)| !a.is_unicast_link_local() && *bits < 128) {
            let p = (ra::network(a, bits), bits);
            if !prefixes.contains(&p) {
                prefixes.push(p);
            }
        }
        // What fits one advertisement in the smallest IPv6 MTU with the
        // other options (rad sends one message too).
        prefixes.truncate(crate::ra::PREFIXES_MAX);
        out.push(Advertiser {
            iface: i,
            src,
            carp: rc.carp.is_some(),
            advert: Advert {
                lifetime: rc.lifetime,
                prefixes,
                dns: rc.dns.clone(),
                dns_lifetime: 3 * rc.interval,
                mtu: None,
                mac: mac(i),
            },
            schedule: Schedule::new(0, rc.interval, seed ^ (i as u64).wrapping_mul(0x9e37_79b9)),
        });
    }
    out
}

/// When the first of `adverts` is due (u64::MAX: none).
pub(super) fn first_due(adverts: &[Advertiser]) -> u64 {
    adverts
        .iter()
        .map(|a| a.schedule.poll_timeout())
        .min()
        .unwrap_or(u64::MAX)
}

/// An ICMPv6 message's checksum over its IPv6 pseudo-header verifies.
fn icmp6_checksum_ok(pkt: &[u8], icmp: &[u8]) -> bool {
    use palisade_wire::checksum::{finish, pseudo_header, sum};
    if pkt.len() < 40 {
        return false;
    }
    let ph = pseudo_header(&pkt[8..24], &pkt[24..40], 58, icmp.len() as u32);
    finish(sum(icmp, ph)) == 0
}

impl Dataplane {
    /// Advertisements due at `now` go out.
    pub(super) fn ra_tick(&mut self, now: u64) {
        for k in 0..self.adverts.len() {
            if self.adverts[k].schedule.due(now) {
                self.send_ra(k, None);
            }
        }
        self.ra_rescheduled();
    }

    /// The advertisements due at `now`, sent (the once-a-second `tick`
    /// sends them too): for the worker that watches `adverts_clock`, so
    /// that a solicitation is answered within RFC 4861's half second
    /// rather than at the next tick.
    pub fn adverts_due(&mut self, now: u64) -> Vec<super::Out> {
        self.ra_tick(now);
        let out = std::mem::take(&mut self.out);
        self.counters.frames_out += out.len() as u64;
        out
    }

    /// When the next advertisement is due (ms since the data plane's
    /// clock began; u64::MAX: none), readable without the data plane's
    /// lock.
    pub fn adverts_clock(&self) -> std::sync::Arc<std::sync::atomic::AtomicU64> {
        self.ra_next.clone()
    }

    fn ra_rescheduled(&self) {
        let next = first_due(&self.adverts);
        self.ra_next
            .store(next, std::sync::atomic::Ordering::Relaxed);
    }

    /// When the next advertisement is due (ms), if any interface sends
    /// them.
    pub fn ra_timeout(&self) -> Option<u64> {
        self.adverts.iter().map(|a| a.schedule.poll_timeout()).min()
    }

    /// A router solicitation (ICMPv6 133) on interface `i`: true when the
    /// interface advertises (it is answered, if valid); false leaves it
    /// to the caller (not a router on that link).
    pub(super) fn rs_in(&mut self, i: usize, pkt: &[u8], info: &IpInfo, now: u64) -> bool {
        let Some(k) = self.adverts.iter().position(|a| a.iface == i) else {
            return false;
        };
        let icmp = &pkt[info.l4_offset.min(pkt.len())..info.len.min(pkt.len())];
        if !icmp6_checksum_ok(pkt, icmp) {
            self.counters.dropped(super::DropReason::BadChecksum);
            return true;
        }
        if ra::valid_solicitation(info.ttl, info.src.is_unspecified(), icmp) {
            self.counters.rs_received += 1;
            self.adverts[k].schedule.solicited(now);
            self.ra_rescheduled();
        } else {
            self.counters.dropped(super::DropReason::Malformed);
        }
        true
    }

    /// The stop: every interface says once more that this router is
    /// leaving (router lifetime 0, RFC 4861 6.2.5), so hosts drop it as
    /// their default router at once rather than after the lifetime.
    pub fn ra_leave(&mut self) -> Vec<super::Out> {
        for k in 0..self.adverts.len() {
            // (Not for one that follows CARP: the peer takes the same
            // router address over, and hosts must keep it.)
            if !self.adverts[k].carp {
                self.send_ra(k, Some(0));
            }
        }
        let out = std::mem::take(&mut self.out);
        self.counters.frames_out += out.len() as u64;
        out
    }

    /// The advertisements that follow the CARP interface whose virtual
    /// MAC on `iface` has just come on (a new master): one goes at once,
    /// so that hosts learn the router's MAC moved with it.
    pub(super) fn ra_takeover(&mut self, iface: usize, addresses: &[IpAddr]) {
        for k in 0..self.adverts.len() {
            let a = &self.adverts[k];
            if a.carp && a.iface == iface && addresses.contains(&IpAddr::V6(a.src)) {
                self.send_ra(k, None);
            }
        }
    }

    fn send_ra(&mut self, k: usize, lifetime: Option<u16>) {
        let a = &self.adverts[k];
        let i = a.iface;
        let mut advert = a.advert.clone();
        // The interface's MAC now (a port made again may have another);
        // following CARP, the virtual MAC, and nothing while it is off (a
        // backup is silent: hosts see one router, the master).
        let from = if a.carp {
            match self.local.virtual_with(i, &IpAddr::V6(a.src)) {
                Some((true, mac)) => Some(mac),
                _ => return,
            }
        } else {
            None
        };
        advert.mac = from.unwrap_or_else(|| self.local.mac(i));
        if self.cfg.ifaces[i].ra.as_ref().is_some_and(|r| r.mtu) {
            advert.mtu = Some(self.mtu(i) as u32);
        }
        let msg = advert.message(lifetime);
        let pkt = palisade_wire::build::ip(IpAddr::V6(a.src), IpAddr::V6(ALL_NODES), 58, 255, &msg);
        let o = ALL_NODES.octets();
        let mac = [0x33, 0x33, o[12], o[13], o[14], o[15]];
        self.counters.ra_sent += 1;
        self.emit(i, mac, from, EtherType::Ipv6, &pkt);
    }
}
