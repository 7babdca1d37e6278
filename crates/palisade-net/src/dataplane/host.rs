//! Host: the firewall's own Linux stack, behind a TAP device (the host
//! interface). Packets for our addresses that pf passed `in` are handed
//! to it (unless the control plane subscribed to their protocol: then
//! they are punted); what the stack sends through the TAP is routed and
//! filtered `out` as the firewall's own traffic. Without a host
//! interface, echo requests to our addresses are answered here and other
//! local traffic is dropped (`local_unserved`).
//!
//! Owns the TAP's port and MAC and local delivery. It does not configure
//! the TAP (crate::tap and the daemon do), and does not filter: pf ran
//! on the interface the packet arrived on.

use palisade_wire::build;
use palisade_wire::ethernet::{EtherType, EthernetRepr, Mac};
use palisade_wire::{parse_ip, IpInfo, L4};

use super::icmp_error::is_multicast_or_broadcast;
use super::{Dataplane, DropReason, HOST_PEER_MAC};

/// The host interface: its port index (after the configured ports) and
/// the TAP's MAC.
#[derive(Clone, Copy)]
pub(super) struct Host {
    pub(super) port: usize,
    pub(super) mac: Mac,
}

impl Dataplane {
    /// From the Linux stack through the host interface: the firewall's own
    /// traffic, routed and filtered `out` like any it sends.
    pub(super) fn host_in(&mut self, ethertype: EtherType, payload: &[u8], now: u64) {
        if !matches!(ethertype, EtherType::Ipv4 | EtherType::Ipv6) {
            self.counters.dropped(DropReason::UnsupportedEthertype);
            return;
        }
        let Ok(info) = parse_ip(payload) else {
            self.counters.dropped(DropReason::Malformed);
            return;
        };
        if is_multicast_or_broadcast(&info.dst) {
            self.counters.dropped(DropReason::MulticastNotRouted);
            return;
        }
        self.counters.host_out += 1;
        self.send_local_from(payload[..info.len].to_vec(), None, now, true);
    }

    /// The host stack's packet `pkt` is too big for the way out (`mtu`)
    /// and may not be fragmented: an ICMP "fragmentation needed" /
    /// ICMPv6 "packet too big" goes back to the stack through the host
    /// interface, from the packet's destination (a source the stack takes
    /// as remote: its own addresses would be martians), so that its path
    /// MTU cache learns the smaller MTU.
    pub(super) fn too_big_to_host(&mut self, pkt: &[u8], mtu: usize, now: u64) {
        let kind = super::icmp_error::Unreach::TooBig(mtu.min(usize::from(u16::MAX)) as u16);
        if let Some(e) = self.icmp_error_packet(pkt, now, kind, None) {
            let v6 = e.first().is_some_and(|b| b >> 4 == 6);
            let _ = self.hand_to_host(e, v6);
        }
    }

    /// Hand `pkt` to the host stack through the host interface; without
    /// one, `pkt` is given back.
    fn hand_to_host(&mut self, pkt: Vec<u8>, v6: bool) -> Option<Vec<u8>> {
        let Some(h) = self.host else {
            return Some(pkt);
        };
        let ethertype = if v6 { EtherType::Ipv6 } else { EtherType::Ipv4 };
        let eth = EthernetRepr {
            dst: h.mac,
            src: HOST_PEER_MAC,
            vlan: None,
            ethertype,
        };
        self.counters.host_in += 1;
        self.out.push((h.port, eth.frame(&pkt, 0)));
        None
    }

    /// A packet for one of our addresses, passed by pf `in` on interface
    /// `i` (from `src`): to a subscriber of its protocol, to the host
    /// interface, or answered here if it is an echo request.
    pub(super) fn local_in(&mut self, i: usize, src: Mac, pkt: Vec<u8>, info: &IpInfo, now: u64) {
        if self.control.subscribed(info.proto) {
            self.punt(i, src, pkt, info.proto);
            return;
        }
        let Some(pkt) = self.hand_to_host(pkt, info.is_v6()) else {
            return;
        };
        let echo = match info.l4 {
            L4::Icmp { ty: 8, code: 0, .. } => Some(0u8),
            L4::Icmp6 {
                ty: 128, code: 0, ..
            } => Some(129u8),
            _ => None,
        };
        let (Some(reply_ty), None) = (echo, info.frag) else {
            self.counters.dropped(DropReason::LocalUnserved);
            return;
        };
        let Some(l4) = pkt.get(info.l4_offset..info.len).filter(|m| m.len() >= 8) else {
            self.counters.dropped(DropReason::Malformed);
            return;
        };
        let m = build::icmp(reply_ty, 0, [l4[4], l4[5], l4[6], l4[7]], &l4[8..]);
        let proto = if info.is_v6() { 58 } else { 1 };
        self.counters.local_echo += 1;
        let reply = build::ip(info.dst, info.src, proto, 64, &m);
        self.send_local(reply, None, now);
    }
}
