//! Why the data plane dropped a frame or packet: one `DropReason` per
//! early return, each with a stable snake_case name (what `show info`
//! prints and the metrics label carry), and their counters.
//!
//! Owns the list of reasons and the counting. It does not own pf's
//! reasons: a packet pf blocks is pf's (`Filter::counters`, pfctl's
//! names), and a fragment pf holds for reassembly is not dropped. Events
//! that are not drops (a table full, so an address is not learnt; a
//! pflog record lost) stay plain counters in `Counters`.

use std::fmt;

/// One reason for the data plane to drop what it received, or what it
/// would have sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// A frame or packet that does not parse (Ethernet, ARP, IP, NDP), a
    /// frame, ARP or neighbour discovery message whose sender's hardware
    /// address is no station's (zero, or a group address), or a TCP
    /// super-packet that cannot be segmented (a bad header).
    Malformed,
    /// On a port/VLAN no interface is configured for, or with stacked
    /// tags.
    UnknownVlan,
    /// Nothing for this firewall: unicast to another MAC on a routed
    /// interface (or a virtual MAC switched off), a bridged frame whose
    /// destination is on the member it came from, ARP / neighbour
    /// discovery for addresses that are not ours and teach us nothing.
    NotForUs,
    /// An EtherType neither IP nor ARP sent to us (bridges carry them).
    UnsupportedEthertype,
    /// IPv4 or IPv6 multicast or broadcast that passed pf and that no
    /// subscriber takes: a router does not forward it.
    MulticastNotRouted,
    /// Router discovery and multicast listener messages: a router that
    /// sends no advertisements has no use for them.
    Icmp6Unhandled,
    /// Neighbour discovery that RFC 4861 section 7.1 says to discard (hop
    /// limit other than 255, a code other than 0, a bad option).
    NdInvalid,
    /// Neighbour discovery with a wrong ICMPv6 checksum.
    BadChecksum,
    /// No route to the destination (or to a routing option's next hop).
    NoRoute,
    /// TTL or hop limit would reach 0 (time exceeded is sent).
    TtlExceeded,
    /// Too big for the way out and not to be fragmented (the ICMP error
    /// is sent).
    TooBig,
    /// The queue of packets waiting for a neighbour's address is full.
    NeighQueueFull,
    /// Waited for a neighbour that never answered (host unreachable is
    /// sent).
    NeighUnresolved,
    /// An ICMP error not sent: more than 100 a second.
    IcmpRateLimit,
    /// For one of our addresses, with no host interface to take it and
    /// not an echo request answered here.
    LocalUnserved,
    /// For the control plane, whose queue is full (it is not polling).
    PuntQueueFull,
    /// Dropped by the kernel before Palisade saw it: a worker's receive
    /// ring was full (the worker fell behind).
    RingFull,
    /// A frame to an IEEE 802.1D reserved link-local group address
    /// (01:80:c2:00:00:00 to 0f: STP, LACP, 802.1X, LLDP): a bridge never
    /// forwards these (802.1D 7.12.6; OpenBSD's bridge and Linux's do not).
    LinkReserved,
    /// A bridged frame that is not IPv4, IPv6, ARP or RARP (a VLAN-tagged
    /// frame is not) coming in by, or only able to leave by, a member
    /// marked `blocknonip`.
    NonIpBlocked,
    /// A frame longer than its port's MTU allows that is not a TCP
    /// super-packet to cut into segments (a UDP datagram or another
    /// protocol's packet over the MTU: a jumbo frame from a host whose
    /// MTU is larger than the port's).
    Oversized,
    /// An IPv6 packet to be routed whose source or destination is
    /// link-local (fe80::/10): a router never forwards it to another
    /// link (RFC 4291 section 2.5.6).
    LinkLocalNotForwarded,
    /// A packet to be routed whose source no host can have: loopback,
    /// unspecified or `0/8`, multicast, a broadcast address, IPv4-mapped
    /// IPv6, or one of the firewall's own addresses (Linux's "martian
    /// source"; OpenBSD drops these too).
    MartianSource,
    /// A unicast IP packet that came in a broadcast or multicast frame:
    /// not routed (RFC 1122 3.3.6; Linux's ip_forward drops it).
    UnicastInGroupFrame,
}

impl DropReason {
    /// Every reason, in the order `show info` lists them.
    pub const ALL: [DropReason; 23] = [
        DropReason::Malformed,
        DropReason::UnknownVlan,
        DropReason::NotForUs,
        DropReason::UnsupportedEthertype,
        DropReason::MulticastNotRouted,
        DropReason::Icmp6Unhandled,
        DropReason::NdInvalid,
        DropReason::BadChecksum,
        DropReason::NoRoute,
        DropReason::TtlExceeded,
        DropReason::TooBig,
        DropReason::NeighQueueFull,
        DropReason::NeighUnresolved,
        DropReason::IcmpRateLimit,
        DropReason::LocalUnserved,
        DropReason::PuntQueueFull,
        DropReason::RingFull,
        DropReason::LinkReserved,
        DropReason::NonIpBlocked,
        DropReason::Oversized,
        DropReason::LinkLocalNotForwarded,
        DropReason::MartianSource,
        DropReason::UnicastInGroupFrame,
    ];

    /// The stable name (show info, metrics).
    pub fn name(self) -> &'static str {
        match self {
            DropReason::Malformed => "malformed",
            DropReason::UnknownVlan => "unknown_vlan",
            DropReason::NotForUs => "not_for_us",
            DropReason::UnsupportedEthertype => "unsupported_ethertype",
            DropReason::MulticastNotRouted => "multicast_not_routed",
            DropReason::Icmp6Unhandled => "icmp6_unhandled",
            DropReason::NdInvalid => "nd_invalid",
            DropReason::BadChecksum => "bad_checksum",
            DropReason::NoRoute => "no_route",
            DropReason::TtlExceeded => "ttl_exceeded",
            DropReason::TooBig => "too_big",
            DropReason::NeighQueueFull => "neigh_queue_full",
            DropReason::NeighUnresolved => "neigh_unresolved",
            DropReason::IcmpRateLimit => "icmp_rate_limit",
            DropReason::LocalUnserved => "local_unserved",
            DropReason::PuntQueueFull => "punt_queue_full",
            DropReason::RingFull => "ring_full",
            DropReason::LinkReserved => "link_reserved",
            DropReason::NonIpBlocked => "non_ip_blocked",
            DropReason::Oversized => "oversized",
            DropReason::LinkLocalNotForwarded => "link_local_not_forwarded",
            DropReason::MartianSource => "martian_source",
            DropReason::UnicastInGroupFrame => "unicast_in_group_frame",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One counter per reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropCounts([u64; DropReason::ALL.len()]);

impl DropCounts {
    pub fn get(&self, r: DropReason) -> u64 {
        self.0[r.index()]
    }

    pub(super) fn add(&mut self, r: DropReason) {
        self.0[r.index()] += 1;
    }

    pub(super) fn add_n(&mut self, r: DropReason, n: u64) {
        self.0[r.index()] += n;
    }

    /// Every reason with its count, zeros included, in `ALL`'s order.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|&r| (r, self.get(r)))
    }

    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_snake_case_and_indices_match() {
        let mut seen = std::collections::BTreeSet::new();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i, "{r}: ALL is in declaration order");
            let n = r.name();
            assert!(n
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()));
            assert!(seen.insert(n), "{n} twice");
        }
    }
}
