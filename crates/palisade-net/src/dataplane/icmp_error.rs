//! ICMP errors: time exceeded, destination / host unreachable,
//! fragmentation needed and packet too big (RFC 792, RFC 1812 4.3.2,
//! RFC 4443), at most 100 a second, never about an ICMP error, a
//! non-first fragment, or a multicast or unspecified address, quoting as
//! much as fits a minimum-MTU datagram.
//!
//! Owns the rate limit and the error's bytes. It does not send: the
//! router's error goes out as the firewall's own traffic (routed, pf
//! `out`), the bridge's back on the member the packet came from.

use std::net::IpAddr;

use palisade_wire::{build, parse_ip};

use super::{Dataplane, DropReason};

/// ICMP errors generated per second at most.
const ICMP_ERRORS_PER_SEC: u32 = 100;

#[derive(Clone, Copy)]
pub(super) enum Unreach {
    TimeExceeded,
    Net,
    Host,
    TooBig(u16),
}

/// The rate limit: errors sent in the current second.
#[derive(Default)]
pub(super) struct IcmpErrors {
    second: u64,
    sent: u32,
}

impl IcmpErrors {
    /// One more error may go out now.
    fn allow(&mut self, now: u64) -> bool {
        let sec = now / 1000;
        if self.second != sec {
            self.second = sec;
            self.sent = 0;
        }
        if self.sent >= ICMP_ERRORS_PER_SEC {
            return false;
        }
        self.sent += 1;
        true
    }
}

pub(super) fn is_multicast_or_broadcast(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_multicast(),
    }
}

impl Dataplane {
    /// Send an ICMP/ICMPv6 error about `pkt`, which arrived on, or could
    /// not leave by, interface `i`.
    pub(super) fn icmp_error(&mut self, i: usize, pkt: &[u8], now: u64, kind: Unreach) {
        if let Some(e) = self.icmp_error_packet(pkt, now, kind, Some(i)) {
            self.send_local(e, None, now);
        }
    }

    /// The ICMP/ICMPv6 error about `pkt` (rate-limited): from the address
    /// of interface `i` (a router), or without one from the packet's
    /// destination (a bridge, as OpenBSD's bridge answers).
    pub(super) fn icmp_error_packet(
        &mut self,
        pkt: &[u8],
        now: u64,
        kind: Unreach,
        i: Option<usize>,
    ) -> Option<Vec<u8>> {
        let info = parse_ip(pkt).ok()?;
        let is_err = info.is_icmp_error();
        if is_err
            || info.frag.is_some_and(|f| f.offset > 0)
            || is_multicast_or_broadcast(&info.dst)
            || is_multicast_or_broadcast(&info.src)
            || info.src.is_unspecified()
        {
            return None;
        }
        if !self.icmp.allow(now) {
            self.counters.dropped(DropReason::IcmpRateLimit);
            return None;
        }
        let v6 = info.is_v6();
        // A router's error leaves from an address of the interface it
        // leaves by, the way back to the packet's source (RFC 1812
        // 4.3.2.4, RFC 4443 2.2; Linux's default): not of the interface
        // where the packet met its fate (a VM's silence on an inside VLAN
        // gave the Internet an error from the VLAN's private address).
        let src = match i {
            Some(i) => {
                // (A link-local source is on the link the packet came
                // from: every link has fe80::/64.)
                let back = if super::local::is_link_local(&info.src) {
                    Some(i)
                } else {
                    super::router::lookup(&self.cfg, &info.src).map(|(e, _)| e)
                };
                back.and_then(|e| self.local.source_for(e, v6))
                    .or_else(|| self.local.source_for(i, v6))?
            }
            None => info.dst,
        };
        let (ty, code, rest) = match (kind, v6) {
            (Unreach::TimeExceeded, false) => (11, 0, [0; 4]),
            (Unreach::TimeExceeded, true) => (3, 0, [0; 4]),
            (Unreach::Net, false) => (3, 0, [0; 4]),
            (Unreach::Net, true) => (1, 0, [0; 4]),
            (Unreach::Host, false) => (3, 1, [0; 4]),
            (Unreach::Host, true) => (1, 3, [0; 4]),
            (Unreach::TooBig(m), false) => (3, 4, [0, 0, (m >> 8) as u8, m as u8]),
            (Unreach::TooBig(m), true) => (2, 0, (m as u32).to_be_bytes()),
        };
        // Quote as much as fits in a minimum-MTU datagram.
        let room = if v6 { 1280 - 48 } else { 576 - 28 };
        let quote = &pkt[..pkt.len().min(room)];
        let m = build::icmp(ty, code, rest, quote);
        let proto = if v6 { 58 } else { 1 };
        self.counters.icmp_errors += 1;
        Some(build::ip(src, info.src, proto, 64, &m))
    }
}
