//! Neighbours: ARP (RFC 826) and IPv6 neighbour discovery (RFC 4861).
//! The cache of resolved neighbours (`Neighbours`: per interface and
//! address, a MAC valid for 30 seconds, asked again in its last three
//! seconds when in use, or a resolution under way with
//! the packets waiting for it, 16 per neighbour and 1,024 in all, three
//! requests a second apart), and the messages: answering requests and
//! solicitations for our addresses, virtual addresses that are on and
//! proxy prefixes; learning from answers; asking; announcing (gratuitous
//! ARP, unsolicited NA) at start and when a virtual MAC takes over.
//!
//! Owns the cache, the queue and the ARP/NDP exchange, built and read
//! with palisade-wire's views. It does not know which addresses are ours
//! (`Local` answers that) nor where a packet goes (the router gives it
//! the interface and next hop).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv6Addr};

use palisade_wire::arp::{ArpPacket, ArpRepr, Operation};
use palisade_wire::build;
use palisade_wire::ethernet::{ipv6_multicast_mac, is_multicast, EtherType, Mac, BROADCAST};
use palisade_wire::ndp::{self, NaFlags, NdpPacket, NdpRepr};
use palisade_wire::IpInfo;

use super::local::Answer;
use super::{Dataplane, DropReason};

/// How long a resolved neighbour stays valid: Linux's base reachable
/// time. A host that moved (a VM to another server, a failover address
/// to another machine) without announcing itself is found again within
/// about this long: the probes to its old MAC go unanswered, the entry
/// lapses, and the next packet asks the whole link. (It was 10 minutes:
/// a probe found a moved VM unreachable for 8 of them.)
pub(super) const NEIGH_REACHABLE_MS: u64 = 30_000;
/// A neighbour in use is asked again (a request to its MAC, as Linux's
/// unicast probes) once a second in its last this many ms: its answer
/// renews it in place, so that traffic to it (the fast path's flows,
/// packets waiting for a resolution) never stops for a lapse.
const NEIGH_PROBE_MS: u64 = 3_000;
/// Resolution: requests sent, one per second, before giving up.
const NEIGH_TRIES: u32 = 3;
/// Packets waiting for one neighbour, and in all. (Linux keeps about
/// 212 KB per neighbour, a hundred or more small packets; OpenBSD 10. A
/// burst to a host not yet resolved, the first answers of a busy NAT
/// after a start, lost 140 of 12,000 datagrams to a queue of 16.)
pub(super) const NEIGH_QUEUE: usize = 64;
pub(super) const NEIGH_QUEUE_TOTAL: usize = 4096;
/// Neighbours in all (beyond, new entries are not learnt).
const NEIGH_MAX: usize = 65_536;

enum Neigh {
    Reachable {
        mac: Mac,
        until: u64,
        /// A packet was sent to it since it was learnt.
        used: bool,
        /// A packet was ever sent to it (kept across renewals, unlike
        /// `used`): a full table keeps it.
        ever_used: bool,
    },
    Incomplete {
        queue: VecDeque<Vec<u8>>,
        tries: u32,
        next: u64,
    },
}

/// What to do with a packet for a neighbour.
pub(super) enum Resolve {
    /// Known: send it to this MAC.
    Send(Mac, Vec<u8>),
    /// Queued behind a resolution under way.
    Queued,
    /// Queued, and a resolution starts: ask for the neighbour.
    Solicit,
    /// No room: dropped.
    Full,
}

/// The cache is full: the neighbour was not learnt.
pub(super) struct TableFull;

/// What the timers found.
pub(super) struct Expired {
    /// Resolutions to ask again for.
    pub(super) retry: Vec<(usize, IpAddr)>,
    /// Resolutions given up, with the packets that waited.
    pub(super) gave_up: Vec<(usize, VecDeque<Vec<u8>>)>,
    /// Resolved neighbours that lapsed: interface and MAC.
    pub(super) lapsed: Vec<(usize, Mac)>,
    /// Resolved neighbours near their end: interface, address, MAC, and
    /// whether a packet went to them since they were learnt.
    pub(super) probe: Vec<(usize, IpAddr, Mac, bool)>,
}

#[derive(Default)]
pub(super) struct Neighbours {
    map: HashMap<(usize, IpAddr), Neigh>,
    queued: usize,
    /// Resolved entries past their time that a new resolution replaced
    /// before the timers saw them, or that `make_room` took out: reported
    /// as lapsed at the next tick.
    stale: Vec<(usize, Mac)>,
    /// When `make_room` last swept a full table.
    last_sweep: Option<u64>,
    /// Entries `make_room` took out.
    pub(super) evicted: u64,
}

impl Neighbours {
    /// Every entry, for `Dataplane::neighbours`: interface, address, MAC
    /// (None while being resolved), ms left (of its validity, or to the
    /// next request, or to giving up), packets waiting, requests still to
    /// send.
    pub(super) fn entries(&self, now: u64) -> Vec<(usize, IpAddr, Option<Mac>, u64, usize, u32)> {
        self.map
            .iter()
            .map(|(&(i, ip), n)| match n {
                Neigh::Reachable { mac, until, .. } => {
                    (i, ip, Some(*mac), until.saturating_sub(now), 0, 0)
                }
                Neigh::Incomplete { queue, next, tries } => (
                    i,
                    ip,
                    None,
                    next.saturating_sub(now),
                    queue.len(),
                    NEIGH_TRIES.saturating_sub(*tries),
                ),
            })
            .collect()
    }

    /// Known or being resolved on interface `i`.
    pub(super) fn contains(&self, i: usize, ip: &IpAddr) -> bool {
        self.map.contains_key(&(i, *ip))
    }

    /// The MAC of `ip` on interface `i`, if it is known and fresh (what
    /// `resolve` would send to at once).
    pub(super) fn reachable(&self, i: usize, ip: &IpAddr, now: u64) -> Option<Mac> {
        match self.map.get(&(i, *ip)) {
            Some(Neigh::Reachable { mac, until, .. }) if *until > now => Some(*mac),
            _ => None,
        }
    }

    /// `ip` is at `mac` on interface `i`: the packets that waited for it,
    /// and the MAC it was at before if that was another.
    pub(super) fn learn(
        &mut self,
        i: usize,
        ip: IpAddr,
        mac: Mac,
        now: u64,
        keep: &dyn Fn(&Mac) -> bool,
    ) -> Result<(VecDeque<Vec<u8>>, Option<Mac>), TableFull> {
        if !self.map.contains_key(&(i, ip)) && !self.make_room(now, keep) {
            return Err(TableFull);
        }
        let (waited, ever_used) = match self.map.get(&(i, ip)) {
            Some(Neigh::Incomplete { queue, .. }) => (!queue.is_empty(), !queue.is_empty()),
            Some(Neigh::Reachable {
                used, ever_used, ..
            }) => (false, *used || *ever_used),
            None => (false, false),
        };
        let prev = self.map.insert(
            (i, ip),
            Neigh::Reachable {
                mac,
                until: now + NEIGH_REACHABLE_MS,
                // The packets that waited go to it now.
                used: waited,
                ever_used,
            },
        );
        match prev {
            Some(Neigh::Incomplete { queue, .. }) => {
                self.queued -= queue.len();
                Ok((queue, None))
            }
            Some(Neigh::Reachable { mac: was, .. }) if was != mac => {
                Ok((VecDeque::new(), Some(was)))
            }
            _ => Ok((VecDeque::new(), None)),
        }
    }

    pub(super) fn resolve(
        &mut self,
        e: usize,
        nh: IpAddr,
        pkt: Vec<u8>,
        now: u64,
        keep: &dyn Fn(&Mac) -> bool,
    ) -> Resolve {
        let lapsed = match self.map.get(&(e, nh)) {
            Some(Neigh::Reachable { mac, until, .. }) if *until <= now => Some(*mac),
            _ => None,
        };
        match self.map.get_mut(&(e, nh)) {
            Some(Neigh::Reachable {
                mac, until, used, ..
            }) if *until > now => {
                *used = true;
                Resolve::Send(*mac, pkt)
            }
            Some(Neigh::Incomplete { queue, .. }) => {
                if queue.len() < NEIGH_QUEUE && self.queued < NEIGH_QUEUE_TOTAL {
                    queue.push_back(pkt);
                    self.queued += 1;
                    Resolve::Queued
                } else {
                    Resolve::Full
                }
            }
            _ => {
                if self.queued >= NEIGH_QUEUE_TOTAL || !self.make_room(now, keep) {
                    return Resolve::Full;
                }
                self.queued += 1;
                if let Some(mac) = lapsed {
                    self.stale.push((e, mac));
                }
                self.map.insert(
                    (e, nh),
                    Neigh::Incomplete {
                        queue: VecDeque::from([pkt]),
                        tries: 1,
                        next: now + 1000,
                    },
                );
                Resolve::Solicit
            }
        }
    }

    /// Room for one more entry: a full table (a flood of solicitations
    /// from made-up neighbours fills it in a second) gives up, at most
    /// once a second, its entries past their time and those nothing was
    /// ever sent to, by us or by the fast path (`keep`: the MACs it sends
    /// to); neighbours in use stay. (Refusing every new entry instead cut
    /// the firewall off from a neighbour it had to resolve again until the
    /// junk expired.)
    fn make_room(&mut self, now: u64, keep: &dyn Fn(&Mac) -> bool) -> bool {
        if self.map.len() < NEIGH_MAX {
            return true;
        }
        if self.last_sweep.is_some_and(|t| now < t + 1000) {
            return false;
        }
        self.last_sweep = Some(now);
        let before = self.map.len();
        let stale = &mut self.stale;
        self.map.retain(|k, n| match n {
            Neigh::Reachable {
                mac,
                until,
                used,
                ever_used,
            } => {
                let stays = *until > now && (*used || *ever_used || keep(mac));
                if !stays {
                    stale.push((k.0, *mac));
                }
                stays
            }
            Neigh::Incomplete { .. } => true,
        });
        self.evicted += (before - self.map.len()) as u64;
        self.map.len() < NEIGH_MAX
    }

    /// Timers: expire stale entries, retry or give up resolutions.
    pub(super) fn expire(&mut self, now: u64) -> Expired {
        let mut retry = Vec::new();
        let mut gave_up = Vec::new();
        let mut lapsed = std::mem::take(&mut self.stale);
        let mut probe = Vec::new();
        self.map.retain(|k, n| match n {
            Neigh::Reachable {
                until, mac, used, ..
            } => {
                if *until > now {
                    if *until <= now + NEIGH_PROBE_MS {
                        probe.push((k.0, k.1, *mac, *used));
                    }
                    true
                } else {
                    lapsed.push((k.0, *mac));
                    false
                }
            }
            Neigh::Incomplete { tries, next, queue } if *next <= now => {
                if *tries >= NEIGH_TRIES {
                    gave_up.push((k.0, std::mem::take(queue)));
                    false
                } else {
                    *tries += 1;
                    *next = now + 1000;
                    retry.push(*k);
                    true
                }
            }
            _ => true,
        });
        for (_, q) in &gave_up {
            self.queued -= q.len();
        }
        Expired {
            retry,
            gave_up,
            lapsed,
            probe,
        }
    }
}

fn ethertype_of(ip: &IpAddr) -> EtherType {
    if ip.is_ipv6() {
        EtherType::Ipv6
    } else {
        EtherType::Ipv4
    }
}

impl Dataplane {
    pub(super) fn arp_in(&mut self, i: usize, src: Mac, a: &[u8], now: u64) {
        let Ok(req) = ArpPacket::new_checked(a).and_then(|p| ArpRepr::parse(&p)) else {
            self.counters.dropped(DropReason::Malformed);
            return;
        };
        let sip = req.source_protocol_addr;
        let tip = req.target_protocol_addr;
        let smac = req.source_hardware_addr;
        if !palisade_wire::ethernet::is_station(&smac) {
            // A sender no station can be: neither learnt nor answered.
            self.counters.dropped(DropReason::Malformed);
            return;
        }
        let t = IpAddr::V4(tip);
        let answer = self.local.answer(i, &t);
        let ours = matches!(answer, Some(Answer::Own(_)));
        // Learn a sender we are resolving or that is talking to us (not
        // every sender on the wire: the table would grow without bound),
        // including to a virtual address we stand by for: a backup that
        // takes over then answers and forwards without asking first.
        let s = IpAddr::V4(sip);
        if self.local.conflicts(i, &s, &smac) {
            self.conflict(i, s, smac);
        }
        // A sender claiming one of our own addresses (a gratuitous ARP
        // from a conflicting or spoofing host) is not learnt: it was, at
        // the claimant's MAC.
        let learns = !sip.is_unspecified()
            && !is_multicast(&smac)
            && !self.local.is_ours(&s)
            && (self.neigh.contains(i, &s)
                || ((ours || self.local.is_virtual_address(i, &t)) && self.on_link(i, &s)));
        if learns {
            self.learn(i, s, smac, now);
        }
        if req.operation != Operation::Request || req.is_announcement() {
            if !learns {
                self.counters.dropped(DropReason::NotForUs);
            }
            return;
        }
        let mac = match answer {
            Some(Answer::Own(mac)) => mac,
            Some(Answer::Proxy(mac)) if self.proxies(i, &t, sip.is_unspecified()) => mac,
            _ => {
                self.counters.dropped(DropReason::NotForUs);
                return;
            }
        };
        let reply = ArpRepr::reply_to(&req, mac).to_bytes();
        self.counters.arp_replies += 1;
        self.emit(i, src, Some(mac), EtherType::Arp, &reply);
    }

    /// Whether a proxy answer for `target` is given on interface `i`:
    /// never to a duplicate-address probe (an ARP from 0.0.0.0, a
    /// solicitation from ::, sent by a host about to take the address:
    /// answered, it gives the address up), and, as Linux's proxy_arp,
    /// not for an address routed out of `i` itself (a VM's route: its
    /// owner is on that link and answers) unless the proxy range covers
    /// `i`'s own subnet, where answering for the neighbours is what was
    /// asked for (and warned about at start).
    pub(super) fn proxies(&self, i: usize, target: &IpAddr, probe: bool) -> bool {
        if probe {
            return false;
        }
        match self.route(target) {
            Some((out, _)) if out == i => self
                .cfg
                .ifaces
                .get(i)
                .is_some_and(|f| f.addresses.iter().any(|a| a.contains(target))),
            _ => true,
        }
    }

    /// Whether `ip` is reached on interface `i` directly (a connected
    /// subnet, or an `interface =` route), as a sender worth learning
    /// must be: one on no subnet of the link would never be sent to
    /// (packets to it go by its route's gateway), and a flood of such
    /// made-up senders filled the table (OpenBSD and Linux learn neither).
    /// An IPv6 link-local sender is on every link.
    fn on_link(&self, i: usize, ip: &IpAddr) -> bool {
        matches!(ip, IpAddr::V6(a) if a.is_unicast_link_local())
            || matches!(self.route(ip), Some((e, nh)) if e == i && nh == *ip)
    }

    /// `ip` is at `mac` on interface `i`: remember it and send what waited.
    pub(super) fn learn(&mut self, i: usize, ip: IpAddr, mac: Mac, now: u64) {
        // An ARP or neighbour discovery message naming no station (zero,
        // or a group address) for its sender teaches nothing: learnt, it
        // would send every packet for that address nowhere.
        if !palisade_wire::ethernet::is_station(&mac) {
            self.counters.dropped(DropReason::Malformed);
            return;
        }
        let fast = self.fast.as_ref();
        let keep = |m: &Mac| super::fast::program_sends_to(fast, m);
        match self.neigh.learn(i, ip, mac, now, &keep) {
            Ok((waiting, moved)) => {
                // The address moved: what the fast path sends to the MAC
                // it left comes back (and is learnt again with the new).
                if let Some(was) = moved {
                    self.fast_neigh_gone(i, was);
                }
                for p in waiting {
                    self.emit(i, mac, None, ethertype_of(&ip), &p);
                }
            }
            Err(TableFull) => self.counters.table_full += 1,
        }
    }

    /// A neighbour solicitation or advertisement (`pkt` is the IPv6
    /// packet, cut to its length).
    pub(super) fn nd_in(&mut self, i: usize, src: Mac, pkt: &[u8], info: &IpInfo, now: u64) {
        let (IpAddr::V6(s), IpAddr::V6(d)) = (info.src, info.dst) else {
            self.counters.dropped(DropReason::Malformed);
            return;
        };
        // RFC 4861 7.1: from this link only.
        if info.ttl != 255 {
            self.counters.dropped(DropReason::NdInvalid);
            return;
        }
        let Some(l4) = pkt.get(info.l4_offset..info.len) else {
            self.counters.dropped(DropReason::Malformed);
            return;
        };
        let Ok(view) = NdpPacket::new_checked(l4) else {
            self.counters.dropped(DropReason::Malformed);
            return;
        };
        if !view.verify_checksum(&s, &d) {
            self.counters.dropped(DropReason::BadChecksum);
            return;
        }
        let repr = match NdpRepr::parse(&view) {
            Ok(r) => r,
            Err(_) => {
                self.counters.dropped(DropReason::NdInvalid);
                return;
            }
        };
        match repr {
            NdpRepr::NeighborSolicit { target, lladdr } => {
                if lladdr.is_some_and(|m| !palisade_wire::ethernet::is_station(&m)) {
                    // A sender no station can be: neither learnt nor
                    // answered (the answer would go to that address).
                    self.counters.dropped(DropReason::Malformed);
                    return;
                }
                // From the unspecified address (duplicate address
                // detection) a solicitation carries no link-layer address:
                // one that does is discarded (RFC 4861 7.1.1).
                if s.is_unspecified() && lladdr.is_some() {
                    self.counters.dropped(DropReason::Malformed);
                    return;
                }
                if !s.is_unspecified()
                    && self.on_link(i, &IpAddr::V6(s))
                    && !self.local.is_ours_at(i, &IpAddr::V6(s))
                {
                    if let Some(m) = lladdr {
                        self.learn(i, IpAddr::V6(s), m, now);
                    }
                }
                let t = IpAddr::V6(target);
                let (mac, own) = match self.local.answer(i, &t) {
                    Some(Answer::Own(mac)) => (mac, true),
                    Some(Answer::Proxy(mac))
                        if info.src != t && self.proxies(i, &t, s.is_unspecified()) =>
                    {
                        (mac, false)
                    }
                    _ => {
                        self.counters.dropped(DropReason::NotForUs);
                        return;
                    }
                };
                let (dst, dmac) = if s.is_unspecified() {
                    (ndp::ALL_NODES, ipv6_multicast_mac(ndp::ALL_NODES))
                } else {
                    (s, lladdr.unwrap_or(src))
                };
                let flags = NaFlags {
                    router: true,
                    solicited: !s.is_unspecified(),
                    // Only for our own addresses (RFC 4861 7.2.8).
                    override_: own,
                };
                let na = advertisement(flags, target, dst, mac);
                self.counters.nd_replies += 1;
                self.emit(i, dmac, Some(mac), EtherType::Ipv6, &na);
            }
            NdpRepr::NeighborAdvert { target, lladdr, .. } => {
                let t = IpAddr::V6(target);
                let claimant = lladdr.unwrap_or(src);
                if self.local.conflicts(i, &t, &claimant) {
                    self.conflict(i, t, claimant);
                }
                if self.neigh.contains(i, &t) {
                    self.learn(i, t, lladdr.unwrap_or(src), now);
                } else {
                    self.counters.dropped(DropReason::NotForUs);
                }
            }
        }
    }

    /// Ask for `ip`'s link-layer address on interface `i`.
    pub(super) fn solicit(&mut self, i: usize, ip: IpAddr) {
        self.solicit_at(i, ip, None);
    }

    /// Ask for `ip` on interface `i`: of everybody, or (a neighbour near
    /// its end, `at` its MAC) of the neighbour itself: an ARP request to
    /// its MAC, a neighbour solicitation to its address (RFC 4861 7.3.3's
    /// unicast probe).
    pub(super) fn solicit_at(&mut self, i: usize, ip: IpAddr, at: Option<Mac>) {
        let mac = self.local.mac(i);
        match ip {
            IpAddr::V4(t) => {
                let Some(IpAddr::V4(s)) = self.local.source_for(i, false) else {
                    return;
                };
                let arp = ArpRepr::request(mac, s, t).to_bytes();
                self.emit(i, at.unwrap_or(BROADCAST), None, EtherType::Arp, &arp);
            }
            IpAddr::V6(t) => {
                let Some(IpAddr::V6(s)) = self.local.source_for(i, true) else {
                    return;
                };
                let (dst, dmac) = match at {
                    Some(m) => (t, m),
                    None => {
                        let sn = ndp::solicited_node(&t);
                        (sn, ipv6_multicast_mac(sn))
                    }
                };
                let ns = NdpRepr::NeighborSolicit {
                    target: t,
                    lladdr: Some(mac),
                }
                .to_bytes(&s, &dst);
                let p = build::ip(IpAddr::V6(s), IpAddr::V6(dst), 58, 255, &ns);
                self.emit(i, dmac, None, EtherType::Ipv6, &p);
            }
        }
    }

    /// Tell the link that `addresses` are at `mac` on interface `i`:
    /// gratuitous ARP (an announcement, RFC 5227 2.3) for IPv4, an
    /// unsolicited advertisement to all nodes with the override flag for
    /// IPv6 (RFC 4861 7.2.6).
    pub(super) fn announce(&mut self, i: usize, mac: Mac, addresses: &[IpAddr]) {
        for a in addresses {
            match a {
                IpAddr::V4(a) => {
                    let arp = ArpRepr::announcement(mac, *a).to_bytes();
                    self.emit(i, BROADCAST, Some(mac), EtherType::Arp, &arp);
                }
                IpAddr::V6(a) => {
                    let flags = NaFlags {
                        router: true,
                        solicited: false,
                        override_: true,
                    };
                    let na = advertisement(flags, *a, ndp::ALL_NODES, mac);
                    self.emit(
                        i,
                        ipv6_multicast_mac(ndp::ALL_NODES),
                        Some(mac),
                        EtherType::Ipv6,
                        &na,
                    );
                }
            }
        }
    }

    /// Send `pkt` to neighbour `nh` on interface `e`, resolving it first
    /// if need be.
    pub(super) fn l3_out(&mut self, e: usize, nh: IpAddr, pkt: Vec<u8>, now: u64) {
        let fast = self.fast.as_ref();
        let keep = |m: &Mac| super::fast::program_sends_to(fast, m);
        match self.neigh.resolve(e, nh, pkt, now, &keep) {
            Resolve::Send(mac, pkt) => self.emit(e, mac, None, ethertype_of(&nh), &pkt),
            Resolve::Queued => self.counters.neigh_queued += 1,
            Resolve::Solicit => {
                self.counters.neigh_queued += 1;
                self.solicit(e, nh);
            }
            Resolve::Full => self.counters.dropped(DropReason::NeighQueueFull),
        }
    }
}

/// A neighbour advertisement for `target` at `mac`, from `target` to
/// `dst`, as an IPv6 packet.
pub(super) fn advertisement(flags: NaFlags, target: Ipv6Addr, dst: Ipv6Addr, mac: Mac) -> Vec<u8> {
    let m = NdpRepr::NeighborAdvert {
        flags,
        target,
        lladdr: Some(mac),
    }
    .to_bytes(&target, &dst);
    build::ip(IpAddr::V6(target), IpAddr::V6(dst), 58, 255, &m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the fast path is told: an address that moves gives its old
    /// MAC, one learnt again at the same MAC or for the first time none;
    /// an entry that lapses gives its interface and MAC.
    #[test]
    fn moves_and_lapses_are_reported() {
        let ip: IpAddr = "198.19.0.1".parse().unwrap();
        let (m1, m2) = ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let mut n = Neighbours::default();
        assert_eq!(n.learn(1, ip, m1, 0, &|_| false).ok().unwrap().1, None);
        assert_eq!(n.learn(1, ip, m1, 10, &|_| false).ok().unwrap().1, None);
        assert_eq!(n.learn(1, ip, m2, 20, &|_| false).ok().unwrap().1, Some(m1));
        assert!(n.expire(20 + NEIGH_REACHABLE_MS - 1).lapsed.is_empty());
        assert_eq!(n.expire(20 + NEIGH_REACHABLE_MS).lapsed, vec![(1, m2)]);
        assert!(!n.contains(1, &ip));
        // Past its time but not yet seen by the timers, then resolved
        // again (a packet for it): still reported as lapsed, at the next
        // tick, and the answer is not taken for a move.
        n.learn(1, ip, m1, 0, &|_| false).ok().unwrap();
        let late = NEIGH_REACHABLE_MS + 5;
        assert!(matches!(
            n.resolve(1, ip, vec![0], late, &|_| false),
            Resolve::Solicit
        ));
        assert_eq!(n.learn(1, ip, m2, late, &|_| false).ok().unwrap().1, None);
        assert_eq!(n.expire(late + 1).lapsed, vec![(1, m1)]);
    }
}
