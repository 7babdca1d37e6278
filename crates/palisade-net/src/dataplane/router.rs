//! Router: IP packets on routed interfaces (and bridge interfaces, for
//! frames to the bridge's own MAC). pf `in` on the arrival interface,
//! then local delivery, the control plane (multicast it subscribed to),
//! or forwarding: pf's routing options (`route-to`, `reply-to`,
//! `dup-to`), TTL / hop limit, the longest-prefix route, pf `out` on the
//! leaving interface, the MTU (fragment, or answer "too big"), and the
//! neighbour. The firewall's own packets (ICMP errors, echo replies, what
//! the host interface sends) take the same way out.
//!
//! Owns route lookup and the forwarding steps. It does not resolve
//! neighbours (the neighbour room queues the packet), does not build
//! ICMP errors (icmp_error) and does not know which addresses are ours
//! (`Local`).

use std::net::IpAddr;

use palisade_conf::ir::Direction;
use palisade_filter::frag::FragInfo;
use palisade_filter::RouteTo;
use palisade_wire::checksum::update16;
use palisade_wire::ethernet::Mac;
use palisade_wire::{build, parse_ip, IpInfo, L4};

use super::icmp_error::{is_multicast_or_broadcast, Unreach};
use super::{Dataplane, DropReason};
use crate::config::Config;

/// A forwarded packet's way: from interface `from` out of `e` to
/// neighbour `nh`, whose MTU is `mtu`.
#[derive(Clone, Copy)]
pub(super) struct Way {
    pub from: usize,
    pub e: usize,
    pub nh: IpAddr,
    pub mtu: usize,
}

/// One hop: the TTL (hop limit) taken down, the IPv4 header checksum
/// updated. Returns the packet's new description.
pub(super) fn hop(pkt: &mut [u8], info: &IpInfo) -> IpInfo {
    let mut out_info = *info;
    out_info.ttl -= 1;
    if info.is_v6() {
        pkt[7] -= 1;
    } else {
        let old = u16::from_be_bytes([pkt[8], pkt[9]]);
        pkt[8] -= 1;
        let new = u16::from_be_bytes([pkt[8], pkt[9]]);
        let c = update16(u16::from_be_bytes([pkt[10], pkt[11]]), old, new);
        pkt[10..12].copy_from_slice(&c.to_be_bytes());
    }
    out_info
}

/// Longest-prefix match over connected subnets and routes: the interface
/// and next hop for `dst`. Connected subnets win ties.
pub(super) fn lookup(cfg: &Config, dst: &IpAddr) -> Option<(usize, IpAddr)> {
    let mut best: Option<(u8, usize, IpAddr)> = None;
    for (ix, p) in cfg.connected_prefixes() {
        if p.contains(dst) && best.is_none_or(|(b, _, _)| p.bits > b) {
            best = Some((p.bits, ix, *dst));
        }
    }
    for r in &cfg.routes {
        if !r.to.contains(dst) || best.is_some_and(|(b, _, _)| r.to.bits <= b) {
            continue;
        }
        let hop = match (r.via, r.iface) {
            (None, Some(i)) => Some((i, *dst)),
            (Some(gw), Some(i)) => Some((i, gw)),
            (Some(gw), None) => route_gateway(cfg, &gw).map(|i| (i, gw)),
            (None, None) => None,
        };
        if let Some((i, nh)) = hop {
            best = Some((r.to.bits, i, nh));
        }
    }
    best.map(|(_, i, nh)| (i, nh))
}

/// Warnings for `proxy-arp` prefixes the firewall has no route to, or
/// whose route leads back out the interface that answers for them through
/// a gateway: it would draw their traffic in only to send it back the way
/// it came (or drop it). Linux's proxy_arp answers only for addresses
/// routed through another interface; Palisade answers for what it is
/// told, so it warns. An address on the answering interface's own subnet
/// is not warned about: the usual extra public address that pf then
/// translates (`rdr-to`, `binat-to`) before any route is looked up. A
/// prefix covering that whole subnet is: it answers for every neighbour
/// (a route's gateway excepted, which is never answered for).
pub fn proxy_warnings(cfg: &Config) -> Vec<String> {
    let mut w = Vec::new();
    let gateways = cfg.gateways();
    for (ix, i) in cfg.ifaces.iter().enumerate() {
        for p in &i.proxy {
            match lookup(cfg, &p.ip) {
                None => w.push(format!(
                    "palisade: warning: interface {}: proxy-arp {}/{}: no route to it (its traffic would be drawn in and dropped)",
                    i.name, p.ip, p.bits
                )),
                Some((out, hop)) if out == ix && hop != p.ip => w.push(format!(
                    "palisade: warning: interface {}: proxy-arp {}/{}: the route to it leads back out {} (its traffic would be sent back the way it came)",
                    i.name, p.ip, p.bits, i.name
                )),
                Some(_) => {}
            }
            // Covering the interface's own subnet: every neighbour there
            // would be answered for (Linux's proxy_arp answers only for
            // what is routed elsewhere); the route gateways are left out.
            if let Some(own) = i
                .addresses
                .iter()
                .find(|a| a.ip.is_ipv4() == p.ip.is_ipv4() && p.bits <= a.bits && p.contains(&a.ip))
            {
                w.push(format!(
                    "palisade: warning: interface {}: proxy-arp {}/{} covers its own subnet {}/{}: the firewall answers for every other host there{}",
                    i.name,
                    p.ip,
                    p.bits,
                    own.ip,
                    own.bits,
                    match gateways.get(ix).map(|g| g.iter().filter(|g| p.contains(g)).collect::<Vec<_>>()) {
                        Some(g) if !g.is_empty() => format!(
                            " (not for the gateway{} {}, which it asks for)",
                            if g.len() > 1 { "s" } else { "" },
                            g.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ")
                        ),
                        _ => String::new(),
                    }
                ));
            }
        }
    }
    w
}

/// The interface through which gateway `gw` is reached directly.
pub(super) fn route_gateway(cfg: &Config, gw: &IpAddr) -> Option<usize> {
    if let Some(i) = cfg.connected(gw) {
        return Some(i);
    }
    cfg.routes
        .iter()
        .filter(|r| r.via.is_none() && r.to.contains(gw))
        .max_by_key(|r| r.to.bits)
        .and_then(|r| r.iface)
}

/// Interface `i`'s MTU: its port's, a bridge's first member's.
pub(super) fn mtu(cfg: &Config, i: usize) -> usize {
    let ifc = &cfg.ifaces[i];
    let p = ifc
        .port
        .or_else(|| ifc.members.first().and_then(|m| cfg.ifaces[*m].port));
    let port = p
        .and_then(|p| cfg.ports.get(p))
        .map(|p| p.mtu as usize)
        .unwrap_or(1500);
    // An interface's own `mtu` lowers it (a VLAN of a smaller MTU).
    ifc.mtu.map_or(port, |m| port.min(m as usize))
}

impl Dataplane {
    pub(super) fn mtu(&self, i: usize) -> usize {
        mtu(&self.cfg, i)
    }

    /// An IP packet to us (our MAC, or a group) on interface `i`, from `src`.
    pub(super) fn ip_in(&mut self, i: usize, src: Mac, mut pkt: Vec<u8>, now: u64) {
        let info = match parse_ip(&pkt) {
            Ok(x) => x,
            Err(_) => {
                self.counters.dropped(DropReason::Malformed);
                return;
            }
        };
        pkt.truncate(info.len);
        // A neighbour advertisement from one of our own addresses (a host
        // configured with it says so) is a martian source below, and
        // dropped; the conflict is reported first.
        // (Hop limit 255 as RFC 4861 requires: not one forged from off
        // the link.)
        if matches!(info.l4, L4::Icmp6 { ty: 136, .. })
            && info.ttl == 255
            && self.local.conflicts(i, &info.src, &src)
        {
            self.conflict(i, info.src, src);
        }
        if let Some(r) = self.refused_on_arrival(i, &pkt, &info) {
            self.counters.dropped(r);
            return;
        }
        if let L4::Icmp6 { ty, .. } = info.l4 {
            if (135..=136).contains(&ty) {
                self.nd_in(i, src, &pkt, &info, now);
                return;
            }
            if ty == crate::ra::RS && self.rs_in(i, &pkt, &info, now) {
                return;
            }
            if (133..=134).contains(&ty) || (130..=132).contains(&ty) || ty == 143 {
                // Router discovery and MLD: not for an interface without
                // router advertisements.
                self.counters.dropped(DropReason::Icmp6Unhandled);
                return;
            }
        }
        let mut d = self.pf(&mut pkt, Some(&info), i, Direction::In, None, None, now);
        for g in std::mem::take(&mut d.generated) {
            self.send_generated(g, now);
        }
        // Synproxy's SYN and ACK to the server carry their state's tag
        // (the decision's, of a packet that met the state), as pf's do.
        for g in std::mem::take(&mut d.generated_out) {
            self.send_local(g, d.tag.clone(), now);
        }
        if d.held {
            return;
        }
        if !d.passed() {
            self.counters.blocked += 1;
            return;
        }
        let refrag = d.refragment;
        let route = d.route.take();
        let modified = d.modified;
        let pkt = d.reassembled.unwrap_or(pkt);
        // Described again only if pf changed it.
        let info = if modified {
            match parse_ip(&pkt) {
                Ok(i) => i,
                Err(_) => {
                    self.counters.dropped(DropReason::Malformed);
                    return;
                }
            }
        } else {
            info
        };
        self.after_in(i, src, pkt, &info, refrag, route, now);
    }

    /// What comes after pf `in` passed a packet: routing options, local
    /// delivery, the control plane's groups, forwarding.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn after_in(
        &mut self,
        i: usize,
        src: Mac,
        pkt: Vec<u8>,
        info: &IpInfo,
        refrag: Option<FragInfo>,
        route: Option<RouteTo>,
        now: u64,
    ) {
        let info = *info;
        // pf's routing options on the way in: `dup-to` sends a copy, and
        // `route-to` / `reply-to` forward by the given next hop whatever
        // the destination.
        let via = match route {
            Some(r) if r.dup => {
                self.dup_to(&r, &pkt, refrag, now);
                None
            }
            Some(r) => match self.hop_way(&r) {
                Some(w) => {
                    self.fast_rerouted(w.0);
                    Some(w)
                }
                None => {
                    self.counters.dropped(DropReason::NoRoute);
                    return;
                }
            },
            None => None,
        };
        if let Some(w) = via {
            self.forward(i, pkt, &info, refrag, Some(w), now);
            return;
        }
        if self.local.is_ours_at(i, &info.dst) || (self.host.is_some() && info.dst.is_loopback()) {
            self.local_in(i, src, pkt, &info, now);
            return;
        }
        if is_multicast_or_broadcast(&info.dst) || self.local.is_directed_broadcast(&info.dst) {
            if self.control.wants_group(i, info.proto, &info.dst) {
                self.punt(i, src, pkt, info.proto);
            } else {
                self.counters.dropped(DropReason::MulticastNotRouted);
            }
            return;
        }
        self.forward(i, pkt, &info, refrag, None, now);
    }

    /// The interface and neighbour a routing option's next hop is reached
    /// by: the interface named with it, else the routing table's way to
    /// it (its gateway when it is not on a connected subnet).
    fn hop_way(&self, r: &RouteTo) -> Option<(usize, IpAddr)> {
        match &r.iface {
            Some(name) => self
                .cfg
                .ifaces
                .iter()
                .position(|i| i.name == *name)
                .map(|e| (e, r.hop)),
            None => lookup(&self.cfg, &r.hop),
        }
    }

    /// `dup-to`: a copy of the packet to the next hop, as it is (not
    /// filtered again, its TTL unchanged).
    fn dup_to(&mut self, r: &RouteTo, pkt: &[u8], refrag: Option<FragInfo>, now: u64) {
        if parse_ip(pkt).is_ok_and(|i| not_routable_v6(&i)) {
            self.counters.dropped(DropReason::LinkLocalNotForwarded);
            return;
        }
        match self.hop_way(r) {
            Some((e, nh)) => {
                let mtu = self.mtu(e);
                match self.fit(pkt.to_vec(), mtu, refrag) {
                    Ok(frags) => {
                        self.counters.duplicated += 1;
                        for f in frags {
                            self.l3_out(e, nh, f, now);
                        }
                    }
                    Err(_) => self.counters.dropped(DropReason::TooBig),
                }
            }
            None => self.counters.dropped(DropReason::NoRoute),
        }
    }

    /// pf `out` decided the packet leaves by `route`: the interface and
    /// neighbour it goes to instead. It is not filtered again: it was
    /// filtered (and translated) on the way out already (pf_route runs pf
    /// again only for what was decided on the way in, which `forward`
    /// filters `out` on its new interface anyway).
    fn reroute(&mut self, route: &RouteTo) -> Option<(usize, IpAddr)> {
        let way = self.hop_way(route);
        if way.is_none() {
            self.counters.dropped(DropReason::NoRoute);
        }
        way
    }

    /// `pkt`, ready to leave through an interface with this MTU: as it is,
    /// or in fragments: IPv4 without DF to the MTU, IPv6 that arrived in
    /// fragments (`refrag`) as it arrived (pf's pf_refragment6). Err with
    /// the packet when it cannot be sent and an ICMP error is owed.
    pub(super) fn fit(
        &mut self,
        pkt: Vec<u8>,
        mtu: usize,
        refrag: Option<FragInfo>,
    ) -> Result<Vec<Vec<u8>>, Vec<u8>> {
        self.fit_as(pkt, mtu, refrag, false)
    }

    /// As `fit`, for a packet this machine is the source of (the host
    /// stack's own, which may be fragmented smaller: a source may
    /// fragment IPv6). In transit (`fit`), IPv6 fragments leave as the
    /// sender made them or not at all: a router does not fragment IPv6
    /// (RFC 8200 5); a fragment too big for the way out is answered
    /// "packet too big", as pf_refragment6 then ip6_forward do.
    pub(super) fn fit_as(
        &mut self,
        pkt: Vec<u8>,
        mtu: usize,
        refrag: Option<FragInfo>,
        source: bool,
    ) -> Result<Vec<Vec<u8>>, Vec<u8>> {
        let v6 = pkt.first().is_some_and(|b| b >> 4 == 6);
        // IPv6 that arrived in fragments leaves in fragments of the size it
        // came in, whatever the MTU here (pf_refragment6): the sender's
        // path MTU may be smaller than ours.
        let refragment_v6 = v6 && refrag.is_some_and(|r| pkt.len() > 40 + r.max_len as usize);
        if pkt.len() <= mtu && !refragment_v6 {
            return Ok(vec![pkt]);
        }
        let frags = match (v6, refrag) {
            (false, _) => build::fragment_v4(&pkt, mtu),
            (true, Some(r)) if source => build::fragment_v6(&pkt, r.id, mtu, r.max_len as usize),
            (true, Some(r)) => {
                build::fragment_v6(&pkt, r.id, usize::from(u16::MAX), r.max_len as usize)
                    .filter(|f| f.iter().all(|x| x.len() <= mtu))
            }
            (true, None) => None,
        };
        match frags {
            Some(f) => {
                self.counters.fragmented += 1;
                Ok(f)
            }
            None => Err(pkt),
        }
    }

    /// Forward a packet that arrived on `i`: by the routing table, or by
    /// `via` (a routing option's interface and next hop).
    fn forward(
        &mut self,
        i: usize,
        mut pkt: Vec<u8>,
        info: &IpInfo,
        refrag: Option<FragInfo>,
        via: Option<(usize, IpAddr)>,
        now: u64,
    ) {
        if info.ttl <= 1 {
            self.counters.dropped(DropReason::TtlExceeded);
            self.icmp_error(i, &pkt, now, Unreach::TimeExceeded);
            return;
        }
        let Some((e, nh)) = via.or_else(|| lookup(&self.cfg, &info.dst)) else {
            self.counters.dropped(DropReason::NoRoute);
            self.icmp_error(i, &pkt, now, Unreach::Net);
            return;
        };
        let mtu = self.mtu(e);
        let can_fragment = if info.is_v6() {
            refrag.is_some()
        } else {
            !info.dont_fragment
        };
        // Too big for the way the routing table gives, and not to be
        // fragmented: the error, if the packet still is after pf (a
        // routing option may send it by a larger MTU), quotes it as it
        // arrived, before translation.
        // (IPv6 that came in fragments too: in transit it leaves as the
        // sender fragmented it or not at all, and the error must go to
        // the sender, not to what pf `out` may translate it to.)
        let arrived = (pkt.len() > mtu && (!can_fragment || info.is_v6())).then(|| pkt.clone());
        let out_info = hop(&mut pkt, info);
        let way = Way {
            from: i,
            e,
            nh,
            mtu,
        };
        self.forward_out(way, pkt, &out_info, refrag, arrived, now);
    }

    /// pf `out` on interface `way.e` for a packet forwarded from
    /// `way.from` (its TTL already taken down), then routing options, the
    /// MTU and the neighbour. `arrived`: the packet as it arrived, when
    /// it did not fit the MTU and may not be fragmented (for the error).
    pub(super) fn forward_out(
        &mut self,
        way: Way,
        mut pkt: Vec<u8>,
        out_info: &IpInfo,
        refrag: Option<FragInfo>,
        arrived: Option<Vec<u8>>,
        now: u64,
    ) {
        let Way {
            from: i,
            e,
            nh,
            mtu,
        } = way;
        // A link-local source or destination stays on its link (RFC
        // 4291 2.5.6), and the unspecified address is no packet's source
        // to route (Linux's ip6_forward refuses both): routing it would
        // let a neighbour on one side spoof fe80:: into another. (Here,
        // where every routed packet passes: per packet, a super-packet's
        // too.)
        if not_routable_v6(out_info) {
            self.counters.dropped(DropReason::LinkLocalNotForwarded);
            return;
        }
        let tag = self.in_tag.clone();
        let mut d = self.pf(
            &mut pkt,
            Some(out_info),
            e,
            Direction::Out,
            Some(i),
            tag,
            now,
        );
        for g in std::mem::take(&mut d.generated) {
            self.send_generated(g, now);
        }
        for g in std::mem::take(&mut d.generated_out) {
            self.send_local(g, d.tag.clone(), now);
        }
        if d.held {
            return;
        }
        if !d.passed() {
            self.counters.blocked += 1;
            return;
        }
        self.counters.routed += 1;
        let refrag = d.refragment.or(refrag);
        let route = d.route.take();
        let pkt = d.reassembled.unwrap_or(pkt);
        // pf's routing options on the way out.
        let (e, nh, mtu) = match route {
            Some(r) if r.dup => {
                self.dup_to(&r, &pkt, refrag, now);
                (e, nh, mtu)
            }
            Some(r) => match self.reroute(&r) {
                Some((e2, nh2)) => {
                    self.fast_rerouted(e2);
                    (e2, nh2, self.mtu(e2))
                }
                None => return,
            },
            None => (e, nh, mtu),
        };
        match self.fit(pkt, mtu, refrag) {
            Ok(frags) => {
                for f in frags {
                    self.l3_out(e, nh, f, now);
                }
            }
            Err(pkt) => {
                self.counters.dropped(DropReason::TooBig);
                let quote = arrived.unwrap_or(pkt);
                self.icmp_error(i, &quote, now, Unreach::TooBig(mtu as u16));
            }
        }
    }

    /// The way out a forwarded packet takes.
    pub(super) fn way(&self, from: usize, dst: &IpAddr) -> Option<Way> {
        lookup(&self.cfg, dst).map(|(e, nh)| Way {
            from,
            e,
            nh,
            mtu: self.mtu(e),
        })
    }

    /// A packet pf itself made (`block return` answers, synproxy's
    /// handshakes): routed, not filtered, as pf tags its own packets
    /// (PF_TAG_GENERATED) and lets them pass. Filtered `out`, the
    /// synproxy's SYN+ACK met its own state and was dropped.
    pub(super) fn send_generated(&mut self, pkt: Vec<u8>, now: u64) {
        self.send_generated_to(pkt, now, None);
    }

    /// As `send_generated`; `host`: the source of a packet the host
    /// stack sent. What pf made of it that goes to that address is an
    /// answer for the stack, whatever the address; the rest (synproxy's
    /// or a SYN cookie's ACK to the client of a service of ours) is sent
    /// on its way.
    fn send_generated_to(&mut self, mut pkt: Vec<u8>, now: u64, host: Option<IpAddr>) {
        let Ok(mut info) = parse_ip(&pkt) else {
            self.counters.dropped(DropReason::Malformed);
            return;
        };
        // Not from or to one of our networks' broadcast addresses (an
        // answer to a packet sent to 192.0.2.255, say): pf's answers go
        // from one host to one host (`return_packet` refuses groups).
        if [info.src, info.dst]
            .iter()
            .any(|a| self.is_subnet_broadcast(a))
        {
            return;
        }
        // The answer to a packet of the host stack's own (`block return
        // out` on its way out): back to the host stack, as a kernel loops
        // it, so that the application fails at once. Routed, it went out
        // of a port towards our own address and was never seen.
        if host == Some(info.dst) || self.ours_as_sent(&info) {
            let i = lookup(&self.cfg, &info.dst).map_or(0, |(e, _)| e);
            let mac = self.local.mac(i);
            self.local_in(i, mac, pkt, &info, now);
            return;
        }
        // pf sends its ICMP answers as the stack's own errors (icmp_error,
        // icmp6_error): from the blocked packet's destination when that is
        // ours, else from an address of the interface on the way back to
        // its source. Only its RSTs speak in the destination's name.
        let is_err = info.is_icmp_error();
        if is_err && !self.local.is_ours(&info.src) {
            let v6 = info.is_v6();
            // (The address on the next hop's subnet, as the route's
            // rt_ifa is; else the interface's first.)
            let from = self.route_own(&info).and_then(|(e, nh)| {
                self.local
                    .address_on(e, &nh)
                    .or_else(|| self.local.source_for(e, v6))
            });
            if let Some(from) = from {
                pkt = build::ip(
                    from,
                    info.dst,
                    info.proto,
                    info.ttl,
                    &pkt[info.l4_offset..info.len.min(pkt.len())],
                );
                match parse_ip(&pkt) {
                    Ok(i) => info = i,
                    Err(_) => return,
                }
            }
        }
        let Some((e, nh)) = self.route_own(&info) else {
            self.counters.dropped(DropReason::NoRoute);
            return;
        };
        let mtu = self.mtu(e);
        match self.fit(pkt, mtu, None) {
            Ok(frags) => {
                for f in frags {
                    self.l3_out(e, nh, f, now);
                }
            }
            Err(_) => self.counters.dropped(DropReason::TooBig),
        }
    }

    /// What a routed interface refuses before pf sees a packet (so that
    /// no state is made for it), whole or a super-packet alike: an IPv4
    /// header with a bad checksum; a source no host can have; a unicast
    /// packet for another host that came in a broadcast or multicast
    /// frame (`in_group_frame`). `i`: the interface it arrived on.
    pub(super) fn refused_on_arrival(
        &self,
        i: usize,
        pkt: &[u8],
        info: &IpInfo,
    ) -> Option<DropReason> {
        if !v4_header_checksum_ok(pkt, info) {
            return Some(DropReason::BadChecksum);
        }
        if self.martian_source(i, &info.src) {
            return Some(DropReason::MartianSource);
        }
        if self.in_group_frame
            && !is_multicast_or_broadcast(&info.dst)
            && !self.local.is_directed_broadcast(&info.dst)
            && !self.local.is_ours_at(i, &info.dst)
        {
            return Some(DropReason::UnicastInGroupFrame);
        }
        None
    }

    /// A source no host can have (Linux's martian sources, ip6_rcv's
    /// IPv4-mapped check): loopback, unspecified or 0/8, multicast,
    /// limited or one of our subnets' broadcast, IPv4-mapped IPv6, or one
    /// of our own addresses (with Linux's accept_local off; a link-local
    /// one only if it is the arrival interface `i`'s: another link's
    /// fe80::1 is another host).
    fn martian_source(&self, i: usize, src: &IpAddr) -> bool {
        let impossible = match src {
            IpAddr::V4(a) => {
                a.is_loopback() || a.octets()[0] == 0 || a.is_multicast() || a.is_broadcast()
            }
            IpAddr::V6(a) => a.is_loopback() || a.is_multicast() || a.to_ipv4_mapped().is_some(),
        };
        impossible || self.is_subnet_broadcast(src) || self.local.is_ours_at(i, src)
    }

    /// Whether `a` is the broadcast address of one of the interfaces'
    /// IPv4 networks.
    fn is_subnet_broadcast(&self, a: &IpAddr) -> bool {
        let IpAddr::V4(a) = a else {
            return false;
        };
        self.cfg.ifaces.iter().flat_map(|i| &i.addresses).any(|p| {
            let IpAddr::V4(n) = p.ip else {
                return false;
            };
            p.bits < 31 && {
                let host = u32::MAX >> p.bits;
                u32::from(n) & !host | host == u32::from(*a)
            }
        })
    }

    /// Where a packet of the firewall's own goes. To an IPv6 link-local
    /// address, which every link has a network of (fe80::/64 on each
    /// interface with a link-local address: a route lookup would take the
    /// first): out of the one interface whose address the packet comes
    /// from, else (the same link-local address on several, or none) out
    /// of one that knows the destination as a neighbour, else by the
    /// routes. Anything else by the routes.
    fn route_own(&self, info: &IpInfo) -> Option<(usize, IpAddr)> {
        if super::local::is_link_local(&info.dst) {
            let owners = self.local.owners(&info.src);
            if let [e] = owners[..] {
                return Some((e, info.dst));
            }
            let known = (0..self.cfg.ifaces.len())
                .filter(|e| owners.is_empty() || owners.contains(e))
                .find(|&e| self.neigh.contains(e, &info.dst));
            if let Some(e) = known {
                return Some((e, info.dst));
            }
        }
        lookup(&self.cfg, &info.dst)
    }

    /// Whether a packet of the firewall's own is for the firewall itself:
    /// to one of its addresses; a link-local one only if it is the
    /// address on the interface the packet would leave by (the gateway
    /// fe80::1 upstream is not the firewall's fe80::1 on the LAN).
    fn ours_as_sent(&self, info: &IpInfo) -> bool {
        if super::local::is_link_local(&info.dst) {
            return self
                .route_own(info)
                .is_some_and(|(e, _)| self.local.is_ours_at(e, &info.dst));
        }
        self.local.is_ours(&info.dst)
    }

    /// A packet the firewall itself sends: routed, filtered `out`, with
    /// `tag` (None but for synproxy's packets to the server).
    pub(super) fn send_local(&mut self, pkt: Vec<u8>, tag: Option<std::sync::Arc<str>>, now: u64) {
        self.send_local_from(pkt, tag, now, false);
    }

    /// As `send_local`; `from_host`: the host stack sent it through the
    /// host interface (it is told when the packet is too big).
    pub(super) fn send_local_from(
        &mut self,
        mut pkt: Vec<u8>,
        tag: Option<std::sync::Arc<str>>,
        now: u64,
        from_host: bool,
    ) {
        let Ok(info) = parse_ip(&pkt) else {
            self.counters.dropped(DropReason::Malformed);
            return;
        };
        // To one of our own addresses (synproxy's or a SYN cookie's SYN
        // and ACK to a service of the firewall itself): to the host stack,
        // as a kernel loops it back, not out of a port towards ourselves
        // (where it waited for a neighbour that never answers).
        if !from_host && self.ours_as_sent(&info) {
            let i = lookup(&self.cfg, &info.dst).map_or(0, |(e, _)| e);
            let mac = self.local.mac(i);
            self.local_in(i, mac, pkt, &info, now);
            return;
        }
        let Some((e, nh)) = self.route_own(&info) else {
            self.counters.dropped(DropReason::NoRoute);
            return;
        };
        let mut d = self.pf(&mut pkt, Some(&info), e, Direction::Out, None, tag, now);
        // pf's own packets, also for a packet it blocks (`block return`).
        for g in std::mem::take(&mut d.generated) {
            self.send_generated_to(g, now, from_host.then_some(info.src));
        }
        for g in std::mem::take(&mut d.generated_out) {
            self.send_local(g, d.tag.clone(), now);
        }
        if !d.passed() || d.held {
            self.counters.blocked += u64::from(!d.held);
            return;
        }
        let refrag = d.refragment;
        let route = d.route.take();
        // A datagram the host's stack sent in fragments leaves whole
        // from pf, and in fragments again below.
        let pkt = d.reassembled.unwrap_or(pkt);
        let (e, nh) = match route {
            Some(r) if r.dup => {
                self.dup_to(&r, &pkt, refrag, now);
                (e, nh)
            }
            Some(r) => match self.reroute(&r) {
                Some(w) => w,
                None => return,
            },
            None => (e, nh),
        };
        let mtu = self.mtu(e);
        match self.fit_as(pkt, mtu, refrag, true) {
            Ok(frags) => {
                for f in frags {
                    self.l3_out(e, nh, f, now);
                }
            }
            Err(pkt) => {
                self.counters.dropped(DropReason::TooBig);
                // The host stack's own packet (DF set, or IPv6 it did not
                // fragment): it hears "too big" as from the way out, so
                // that it lowers its path MTU (ping -M do, tracepath and
                // TCP learn it as from a local interface's MTU); dropped
                // silently, its TCP stalled.
                if from_host {
                    self.too_big_to_host(&pkt, mtu, now);
                }
            }
        }
    }
}

/// An IPv4 header's checksum verifies (IPv6 has none): a header damaged
/// on the way is dropped, as ip_input and Linux's ip_rcv drop it, before
/// pf makes a state from it.
pub(super) fn v4_header_checksum_ok(pkt: &[u8], info: &IpInfo) -> bool {
    if info.is_v6() {
        return true;
    }
    let ihl = usize::from(pkt.first().map_or(0, |b| b & 0x0f)) * 4;
    pkt.get(..ihl)
        .is_some_and(|h| palisade_wire::checksum::finish(palisade_wire::checksum::sum(h, 0)) == 0)
}

/// fe80::/10.
fn is_v6_link_local(a: &IpAddr) -> bool {
    matches!(a, IpAddr::V6(v) if v.segments()[0] & 0xffc0 == 0xfe80)
}

/// An IPv6 packet a router does not send to another link: a link-local
/// source or destination, or the unspecified source.
pub(super) fn not_routable_v6(info: &IpInfo) -> bool {
    info.is_v6()
        && (is_v6_link_local(&info.src) || is_v6_link_local(&info.dst) || info.src.is_unspecified())
}
