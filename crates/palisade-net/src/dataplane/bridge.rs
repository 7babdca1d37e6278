//! Bridge: transparent bridges between member interfaces. The MAC
//! learning table (`Fdb`: per bridge, address -> member and when last
//! seen, aged after 300 s, bounded), and a bridged frame's way: learn the
//! source, pick the member(s) it leaves by, pf `in` on the member it came
//! from and `out` on each it leaves by, fragment again or answer "too
//! big" as OpenBSD's bridge does.
//!
//! Owns the learning table and the bridging step. It does not route: a
//! frame for the bridge's own MAC (or a virtual MAC on it that is on)
//! goes to the router as arriving on the bridge interface, and routed
//! packets leave through `Dataplane::emit`, which asks `Fdb::learnt` for
//! the member.

use std::collections::HashMap;

use palisade_conf::ir::Direction;
use palisade_wire::ethernet::{is_multicast, EtherType, Mac};

use super::icmp_error::Unreach;
use super::{Dataplane, DropReason};

/// Reverse ARP: `blocknonip` lets it through with IP and ARP.
const ETHERTYPE_RARP: u16 = 0x8035;

/// How long a learnt address stays valid.
pub(super) const FDB_AGING_MS: u64 = 300_000;
/// Learnt addresses per bridge (beyond, new ones are not learnt: a flood
/// of spoofed senders cannot exhaust memory).
pub(super) const FDB_MAX: usize = 65_536;

/// The table is full: the address was not learnt.
pub(super) struct TableFull;

#[derive(Default)]
pub(super) struct Fdb {
    /// Per bridge interface: address -> (member interface, last seen).
    tables: HashMap<usize, HashMap<Mac, (usize, u64)>>,
    /// Per bridge: palisade.toml's static entries (brconfig's `static`),
    /// address -> member: never aged, and a frame from that address on
    /// another member moves nothing (a host cannot take the gateway's
    /// address over by sending one frame from it).
    statics: HashMap<usize, HashMap<Mac, usize>>,
}

impl Fdb {
    /// The static entries of every bridge of `cfg`.
    pub(super) fn with_statics(cfg: &crate::config::Config) -> Fdb {
        let mut f = Fdb::default();
        for (b, i) in cfg.ifaces.iter().enumerate() {
            for (m, mac) in &i.fdb_static {
                f.statics.entry(b).or_default().insert(*mac, *m);
            }
        }
        f
    }

    fn static_of(&self, b: usize, mac: &Mac) -> Option<usize> {
        self.statics.get(&b).and_then(|t| t.get(mac)).copied()
    }

    /// What bridge `b` learnt (only `mac`, if given and learnt).
    pub(super) fn learnt_macs(&self, b: usize, mac: Option<&Mac>) -> Vec<Mac> {
        let Some(t) = self.tables.get(&b) else {
            return Vec::new();
        };
        match mac {
            Some(m) => t.contains_key(m).then_some(*m).into_iter().collect(),
            None => t.keys().copied().collect(),
        }
    }

    /// Forget what was learnt (`bridge flush`): every address of bridge
    /// `b`, or only `mac`. Static entries stay. The addresses that went.
    pub(super) fn forget(&mut self, b: usize, mac: Option<&Mac>) -> Vec<Mac> {
        let Some(t) = self.tables.get_mut(&b) else {
            return Vec::new();
        };
        match mac {
            Some(m) => t.remove(m).map(|_| vec![*m]).unwrap_or_default(),
            None => t.drain().map(|(m, _)| m).collect(),
        }
    }

    /// `src` was seen on member `m` of bridge `b`. True when that is
    /// news: the address was not known, or known on another member.
    pub(super) fn learn(
        &mut self,
        b: usize,
        src: Mac,
        m: usize,
        now: u64,
    ) -> Result<bool, TableFull> {
        if self.static_of(b, &src).is_some() {
            return Ok(false);
        }
        let t = self.tables.entry(b).or_default();
        if t.len() < FDB_MAX || t.contains_key(&src) {
            let before = t.insert(src, (m, now));
            Ok(before.is_none_or(|(was, _)| was != m))
        } else {
            Err(TableFull)
        }
    }

    /// The member `dst` was learnt on, if it was seen in the last 300 s.
    pub(super) fn fresh(&self, b: usize, dst: &Mac, now: u64) -> Option<usize> {
        if let Some(m) = self.static_of(b, dst) {
            return Some(m);
        }
        self.tables
            .get(&b)
            .and_then(|t| t.get(dst))
            .filter(|(_, seen)| now < seen + FDB_AGING_MS)
            .map(|(m, _)| *m)
    }

    /// The member `dst` was learnt on (until `age` removes it).
    pub(super) fn learnt(&self, b: usize, dst: &Mac) -> Option<usize> {
        if let Some(m) = self.static_of(b, dst) {
            return Some(m);
        }
        self.tables
            .get(&b)
            .and_then(|t| t.get(dst))
            .map(|(m, _)| *m)
    }

    /// `src` sent frames through member `m` until `when` that user space
    /// did not see (the fast path forwarded them): its entry stays fresh.
    /// Only where it is (or, forgotten meanwhile, was) learnt on `m`, and
    /// never back in time: a host seen on another member since has moved,
    /// and the program's count, read later, must not move it back.
    pub(super) fn refresh(&mut self, b: usize, src: Mac, m: usize, when: u64) {
        if self.static_of(b, &src).is_some() {
            return;
        }
        let t = self.tables.entry(b).or_default();
        let room = t.len() < FDB_MAX;
        match t.get_mut(&src) {
            Some((at, seen)) if *at == m => *seen = (*seen).max(when),
            Some(_) => {}
            None if room => {
                t.insert(src, (m, when));
            }
            None => {}
        }
    }

    /// Every learnt address still in use at `now`: bridge, address,
    /// member, when it was last seen.
    pub(super) fn entries(&self, now: u64) -> Vec<(usize, Mac, usize, u64)> {
        self.tables
            .iter()
            .flat_map(|(&b, t)| t.iter().map(move |(&mac, &(m, seen))| (b, mac, m, seen)))
            .filter(|&(_, _, _, seen)| now < seen + FDB_AGING_MS)
            .collect()
    }

    /// The static entries: bridge, address, member.
    pub(super) fn static_entries(&self) -> Vec<(usize, Mac, usize)> {
        self.statics
            .iter()
            .flat_map(|(&b, t)| t.iter().map(move |(&mac, &m)| (b, mac, m)))
            .collect()
    }

    pub(super) fn age(&mut self, now: u64) {
        for t in self.tables.values_mut() {
            t.retain(|_, (_, seen)| now < *seen + FDB_AGING_MS);
        }
    }

    /// Learnt addresses, all bridges together.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.tables.values().map(|t| t.len()).sum()
    }
}

impl Dataplane {
    /// `src` was seen on member `m` of bridge `b`; where it is news, the
    /// fast path's flows to it through another member come back.
    pub(super) fn fdb_learn(&mut self, b: usize, src: Mac, m: usize, now: u64) {
        match self.fdb.learn(b, src, m, now) {
            Ok(true) => self.fast_host_at(b, src, m),
            Ok(false) => {}
            Err(TableFull) => self.counters.table_full += 1,
        }
    }

    /// A frame on member `m` of bridge `b`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn bridge_in(
        &mut self,
        b: usize,
        m: usize,
        dst: Mac,
        src: Mac,
        ethertype: EtherType,
        payload: &[u8],
        now: u64,
    ) {
        if !is_multicast(&src) && !self.cfg.ifaces[m].no_learn {
            self.fdb_learn(b, src, m, now);
        }
        if is_link_reserved(&dst) {
            self.counters.dropped(DropReason::LinkReserved);
            return;
        }
        let ip_kind = matches!(
            ethertype,
            EtherType::Ipv4 | EtherType::Ipv6 | EtherType::Arp | EtherType::Unknown(ETHERTYPE_RARP)
        );
        if !ip_kind && self.cfg.ifaces[m].block_non_ip {
            self.counters.dropped(DropReason::NonIpBlocked);
            return;
        }
        if self.local.accepts(b, &dst) {
            // For the bridge's own interface: routed/local, filtered on the bridge.
            self.l3_in(b, src, ethertype, payload, is_multicast(&dst), now);
            return;
        }
        let egress: Vec<usize> = if is_multicast(&dst) {
            None
        } else {
            self.fdb.fresh(b, &dst, now)
        }
        .map(|p| vec![p])
        .unwrap_or_else(|| {
            self.counters.flooded += 1;
            self.cfg.ifaces[b].members.clone()
        });
        let egress: Vec<usize> = egress.into_iter().filter(|&p| p != m).collect();
        let before = egress.len();
        let egress: Vec<usize> = egress
            .into_iter()
            .filter(|&p| ip_kind || !self.cfg.ifaces[p].block_non_ip)
            .collect();
        // Withheld from a `blocknonip` member: counted, also when the
        // frame goes on to other members (a flood).
        if egress.len() < before {
            self.counters.dropped(DropReason::NonIpBlocked);
        }
        if before > 0 && egress.is_empty() {
            return;
        }
        // A group frame the bridge's own interface takes too: what it
        // speaks (ARP, IP). Other EtherTypes are only bridged, not
        // counted as dropped by it.
        let local = is_multicast(&dst)
            && self.local.has_addresses(b)
            && matches!(
                ethertype,
                EtherType::Arp | EtherType::Ipv4 | EtherType::Ipv6
            );
        if local {
            self.l3_in(b, src, ethertype, payload, true, now);
        }
        if egress.is_empty() {
            if !local {
                // Its destination is on the segment it came from.
                self.counters.dropped(DropReason::NotForUs);
            }
            return;
        }
        self.counters.bridged += 1;
        if !matches!(ethertype, EtherType::Ipv4 | EtherType::Ipv6) {
            for p in egress {
                self.emit(p, dst, Some(src), ethertype, payload);
            }
            return;
        }
        let mut pkt = payload.to_vec();
        // Described once; the description serves every member's `out`
        // pass unless pf `in` changed the packet.
        let info = palisade_wire::parse_ip(&pkt).ok();
        if info
            .as_ref()
            .is_some_and(|i| !super::router::v4_header_checksum_ok(&pkt, i))
        {
            self.counters.dropped(DropReason::BadChecksum);
            return;
        }
        let d = self.pf(&mut pkt, info.as_ref(), m, Direction::In, None, None, now);
        if d.held || !d.passed() {
            self.counters.blocked += u64::from(!d.held);
            // Answers (`block return`, synproxy's to the client) go back
            // where the packet came from, unfiltered; never to a frame
            // sent to a group (the answer would come from the group's
            // MAC).
            for g in d.generated {
                if !is_multicast(&dst) {
                    self.emit(m, src, Some(dst), ethertype, &g);
                }
            }
            // Synproxy's SYN to the server goes the packet's way,
            // filtered `out` on each member.
            for g in d.generated_out {
                for &p in &egress {
                    self.bridge_out(p, m, dst, src, ethertype, g.clone(), None, None, now);
                }
            }
            return;
        }
        let refrag = d.refragment;
        let info = if d.modified { None } else { info };
        let pkt = d.reassembled.unwrap_or(pkt);
        for p in egress {
            self.bridge_out(
                p,
                m,
                dst,
                src,
                ethertype,
                pkt.clone(),
                info.as_ref(),
                refrag,
                now,
            );
        }
    }

    /// A bridged IP packet that passed pf `in` on member `m`, out of
    /// member `p`: pf `out`, then the MTU (fragments, or "too big" back
    /// to the sender).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn bridge_out(
        &mut self,
        p: usize,
        m: usize,
        dst: Mac,
        src: Mac,
        ethertype: EtherType,
        mut q: Vec<u8>,
        info: Option<&palisade_wire::IpInfo>,
        refrag: Option<palisade_filter::frag::FragInfo>,
        now: u64,
    ) {
        let tag = self.in_tag.clone();
        let mut d = self.pf(&mut q, info, p, Direction::Out, Some(m), tag, now);
        // What pf made on the way out, unfiltered: `block return`'s
        // answer to the sender, or synproxy's to the client when the
        // server's SYN+ACK reaches the client's member; synproxy's ACK to
        // the server goes back the way the packet came, filtered `out`
        // there.
        // `block return` on the way out answers the sender instead.
        let sender = palisade_wire::parse_ip(&q).ok().map(|i| i.src);
        for g in std::mem::take(&mut d.generated) {
            let to_sender = palisade_wire::parse_ip(&g).is_ok_and(|i| Some(i.dst) == sender);
            if is_multicast(&dst) {
                continue;
            }
            if to_sender {
                self.emit(m, src, Some(dst), ethertype, &g);
            } else {
                self.emit(p, dst, Some(src), ethertype, &g);
            }
        }
        for g in std::mem::take(&mut d.generated_out) {
            self.bridge_out(m, p, src, dst, ethertype, g, None, None, now);
        }
        if d.passed() && !d.held {
            let refrag = d.refragment.or(refrag);
            let q = d.reassembled.unwrap_or(q);
            let mtu = self.mtu(p);
            match self.fit(q, mtu, refrag) {
                Ok(frames) => {
                    for f in frames {
                        self.emit(p, dst, Some(src), ethertype, &f);
                    }
                }
                Err(q) => {
                    // What a bridge owes the sender (DF set, or IPv6
                    // that did not arrive in fragments): an ICMP error
                    // from the destination's address, sent back on the
                    // member the packet came from.
                    self.counters.dropped(DropReason::TooBig);
                    // (Sent from the destination's MAC: never a group's.)
                    let e = if is_multicast(&dst) {
                        None
                    } else {
                        self.icmp_error_packet(&q, now, Unreach::TooBig(mtu as u16), None)
                    };
                    if let Some(e) = e {
                        self.emit(m, src, Some(dst), ethertype, &e);
                    }
                }
            }
        } else if !d.held {
            self.counters.blocked += 1;
        }
    }
}

/// An IEEE 802.1D reserved link-local group address (01:80:c2:00:00:00
/// to 0f), which a bridge does not forward.
pub(super) fn is_link_reserved(dst: &Mac) -> bool {
    dst[..5] == [0x01, 0x80, 0xc2, 0x00, 0x00] && dst[5] <= 0x0f
}

#[cfg(test)]
mod fdb_tests {
    use super::*;

    /// The bridge tells the fast path when a host is news: unknown
    /// before, or seen on another member; not when it is seen again
    /// where it was.
    #[test]
    fn a_host_is_news_when_new_or_moved() {
        let mut f = Fdb::default();
        let h = [2, 0, 0, 0, 0, 9];
        assert!(f.learn(0, h, 1, 0).ok().unwrap());
        assert!(!f.learn(0, h, 1, 10).ok().unwrap());
        assert!(f.learn(0, h, 2, 20).ok().unwrap());
        f.age(20 + FDB_AGING_MS);
        assert!(f.learn(0, h, 2, 30 + FDB_AGING_MS).ok().unwrap());
    }

    /// The fast path's traffic keeps a host's entry fresh where it is,
    /// brings a forgotten one back, and never moves a host nor its time
    /// back.
    #[test]
    fn the_fast_paths_traffic_refreshes_where_a_host_is() {
        let mut f = Fdb::default();
        let h = [2, 0, 0, 0, 0, 9];
        assert!(f.learn(0, h, 1, 0).is_ok());
        f.refresh(0, h, 1, 200_000);
        // Without the refresh it would be stale at 300 s.
        assert_eq!(f.fresh(0, &h, 400_000), Some(1));
        f.refresh(0, h, 1, 100_000);
        assert_eq!(f.entries(499_999), [(0, h, 1, 200_000)]);
        // Seen on member 2 since: the older count does not move it back.
        assert!(f.learn(0, h, 2, 450_000).is_ok());
        f.refresh(0, h, 1, 440_000);
        assert_eq!(f.fresh(0, &h, 460_000), Some(2));
        // Forgotten, then counted: learnt again where its frames came in.
        f.age(450_000 + FDB_AGING_MS);
        assert_eq!(f.fresh(0, &h, 450_000 + FDB_AGING_MS), None);
        f.refresh(0, h, 2, 460_000 + FDB_AGING_MS);
        assert_eq!(f.fresh(0, &h, 470_000 + FDB_AGING_MS), Some(2));
    }
}
