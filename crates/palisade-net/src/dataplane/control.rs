//! The control plane's door into the data plane: what it subscribed to
//! (IP protocols, such as CARP's 112 and pfsync's 240, and multicast
//! groups per interface, such as 224.0.0.18 and ff02::12), the packets of
//! those protocols addressed to us waiting for it (punted), the frames it
//! sends (injected), and the ports' link state with the changes it has
//! not read yet. Everything is polled: the data plane runs no threads and
//! waits on nobody.
//!
//! Owns the subscriptions and the two queues (punted packets, link
//! events), both bounded. It does not decide what is addressed to us
//! (the router asks `Local`, then `wants_group` here), does not filter
//! (a punted packet has passed pf `in`, as CARP and pfsync packets do on
//! OpenBSD before carp_input / pfsync_input), and does not speak CARP or
//! pfsync.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::net::IpAddr;

use palisade_wire::ethernet::{EtherType, EthernetFrame, Mac};

use super::{Dataplane, DropReason, Out};

/// Punted packets waiting for the control plane, at most.
const PUNT_QUEUE: usize = 1024;
/// Link changes kept until read (older ones are dropped first: the
/// current state is always `link_up`).
const LINK_EVENTS: usize = 256;

/// A packet for the control plane: an IP packet of a protocol it
/// subscribed to, addressed to one of our addresses or to a group it
/// joined on the interface, after pf passed it `in`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Punted {
    /// The logical interface it arrived on.
    pub iface: usize,
    /// The sender's MAC.
    pub src_mac: Mac,
    /// The IP protocol (after IPv6 extension headers).
    pub proto: u8,
    /// The IP packet, from its IP header (reassembled if it came in
    /// fragments).
    pub packet: Vec<u8>,
}

/// A port's link went up or down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkEvent {
    pub port: usize,
    pub up: bool,
}

/// Why the control plane's request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlError {
    NoSuchPort(usize),
    NoSuchInterface(usize),
    /// `join_group` with an address that is not a multicast group.
    NotMulticast(IpAddr),
    /// An injected frame without a whole Ethernet header.
    Malformed,
    /// An injected frame larger than the port takes.
    TooLong {
        len: usize,
        max: usize,
    },
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::NoSuchPort(p) => write!(f, "no port {p}"),
            ControlError::NoSuchInterface(i) => write!(f, "no interface {i}"),
            ControlError::NotMulticast(a) => write!(f, "{a} is not a multicast group"),
            ControlError::Malformed => {
                f.write_str("not an Ethernet frame (shorter than its header)")
            }
            ControlError::TooLong { len, max } => {
                write!(f, "a {len}-byte frame on a port that takes {max} at most")
            }
        }
    }
}

impl std::error::Error for ControlError {}

pub(super) struct ControlPlane {
    protos: [bool; 256],
    groups: HashSet<(usize, IpAddr)>,
    punted: VecDeque<Punted>,
    links: Vec<bool>,
    link_events: VecDeque<LinkEvent>,
}

impl ControlPlane {
    pub(super) fn new(ports: usize) -> ControlPlane {
        ControlPlane {
            protos: [false; 256],
            groups: HashSet::new(),
            punted: VecDeque::new(),
            // Until told otherwise, a port is up.
            links: vec![true; ports],
            link_events: VecDeque::new(),
        }
    }

    pub(super) fn subscribed(&self, proto: u8) -> bool {
        self.protos[proto as usize]
    }

    /// A packet of `proto` to group `dst` on interface `i` is punted.
    pub(super) fn wants_group(&self, i: usize, proto: u8, dst: &IpAddr) -> bool {
        self.subscribed(proto) && self.groups.contains(&(i, *dst))
    }
}

impl Dataplane {
    /// Hand a packet to the control plane (or count it lost).
    pub(super) fn punt(&mut self, iface: usize, src_mac: Mac, packet: Vec<u8>, proto: u8) {
        if self.control.punted.len() >= PUNT_QUEUE {
            self.counters.dropped(DropReason::PuntQueueFull);
            return;
        }
        self.counters.punted += 1;
        self.control.punted.push_back(Punted {
            iface,
            src_mac,
            proto,
            packet,
        });
    }

    /// Packets of IP protocol `proto` addressed to us (one of our
    /// addresses, or a group joined with `join_group`) go to the control
    /// plane (`poll_punted`) instead of the host interface.
    pub fn subscribe(&mut self, proto: u8) {
        self.control.protos[proto as usize] = true;
    }

    pub fn unsubscribe(&mut self, proto: u8) {
        self.control.protos[proto as usize] = false;
    }

    /// Accept multicast group `group` on interface `iface` for the
    /// protocols subscribed to (frames to group MACs are always taken in;
    /// without this their packets are dropped as `multicast_not_routed`).
    pub fn join_group(&mut self, iface: usize, group: IpAddr) -> Result<(), ControlError> {
        if iface >= self.cfg.ifaces.len() {
            return Err(ControlError::NoSuchInterface(iface));
        }
        if !group.is_multicast() {
            return Err(ControlError::NotMulticast(group));
        }
        self.control.groups.insert((iface, group));
        Ok(())
    }

    pub fn leave_group(&mut self, iface: usize, group: IpAddr) {
        self.control.groups.remove(&(iface, group));
    }

    /// Packets (or link events) wait for the control plane.
    pub fn has_punted(&self) -> bool {
        !self.control.punted.is_empty() || !self.control.link_events.is_empty()
    }

    /// The oldest packet punted to the control plane, if any.
    pub fn poll_punted(&mut self) -> Option<Punted> {
        self.control.punted.pop_front()
    }

    /// Send `frame`, built whole by the control plane (Ethernet header,
    /// its VLAN tag if any), out of `port` as it is: not filtered (like
    /// ARP and neighbour discovery), padded to 60 bytes.
    pub fn inject(&mut self, port: usize, frame: &[u8]) -> Result<Vec<Out>, ControlError> {
        let mtu = self
            .cfg
            .ports
            .get(port)
            .ok_or(ControlError::NoSuchPort(port))?
            .mtu as usize;
        let f = EthernetFrame::new_checked(frame).map_err(|_| ControlError::Malformed)?;
        let max = mtu + f.header_len();
        if frame.len() > max {
            return Err(ControlError::TooLong {
                len: frame.len(),
                max,
            });
        }
        let mut f = frame.to_vec();
        if f.len() < 60 {
            f.resize(60, 0);
        }
        self.counters.injected += 1;
        self.counters.frames_out += 1;
        Ok(vec![(port, f)])
    }

    /// Send `payload` out of logical interface `iface` in a frame to
    /// `dst`, from `src` (a virtual MAC, say; default the interface's
    /// own), tagged if the interface is a VLAN, by the learnt member (or
    /// all members) if it is a bridge. Not filtered.
    pub fn inject_on(
        &mut self,
        iface: usize,
        dst: Mac,
        src: Option<Mac>,
        ethertype: EtherType,
        payload: &[u8],
    ) -> Result<Vec<Out>, ControlError> {
        self.check_injected(iface, payload.len())?;
        self.emit(iface, dst, src, ethertype, payload);
        Ok(self.take_injected())
    }

    /// What the control plane sends on `iface`: an interface we have, a
    /// packet within its MTU.
    fn check_injected(&self, iface: usize, len: usize) -> Result<(), ControlError> {
        if iface >= self.cfg.ifaces.len() {
            return Err(ControlError::NoSuchInterface(iface));
        }
        let max = self.mtu(iface);
        if len > max {
            return Err(ControlError::TooLong { len, max });
        }
        Ok(())
    }

    /// The frames an injection produced, counted.
    fn take_injected(&mut self) -> Vec<Out> {
        let out = std::mem::take(&mut self.out);
        self.counters.injected += out.len() as u64;
        self.counters.frames_out += out.len() as u64;
        out
    }

    /// Send IP packet `packet` out of logical interface `iface` to the
    /// neighbour `to` (on the link), from the interface's own MAC,
    /// resolving `to` with ARP / neighbour discovery first if need be
    /// (the packet waits, as routed packets do). `now` in milliseconds, the
    /// clock of `input`. Not filtered. For CARP's unicast peers.
    pub fn send_to_neighbour(
        &mut self,
        iface: usize,
        to: IpAddr,
        packet: Vec<u8>,
        now: u64,
    ) -> Result<Vec<Out>, ControlError> {
        self.check_injected(iface, packet.len())?;
        self.l3_out(iface, to, packet, now);
        Ok(self.take_injected())
    }

    /// Port `port`'s link is up or down (the daemon watches the ports). A
    /// change is queued for `poll_link_event`.
    pub fn set_link(&mut self, port: usize, up: bool) -> Result<(), ControlError> {
        let l = self
            .control
            .links
            .get_mut(port)
            .ok_or(ControlError::NoSuchPort(port))?;
        if *l == up {
            return Ok(());
        }
        *l = up;
        if self.control.link_events.len() >= LINK_EVENTS {
            self.control.link_events.pop_front();
        }
        self.control.link_events.push_back(LinkEvent { port, up });
        Ok(())
    }

    /// The MTU interface `iface` sends with: its port's, or for a bridge
    /// its first member's (1500 when it has none).
    pub fn iface_mtu(&self, iface: usize) -> usize {
        self.mtu(iface)
    }

    /// The MTU port `port` forwards with.
    pub fn port_mtu(&self, port: usize) -> Option<u16> {
        self.cfg.ports.get(port).map(|p| p.mtu)
    }

    /// The kernel's MTU of port `port` is now `kernel` (it changed while
    /// running: `ip link set ... mtu`). A port without `mtu` in
    /// palisade.toml follows it; one with `mtu` takes it when it is lower
    /// (a frame over the kernel's MTU cannot be sent), and its own again
    /// when the kernel's comes back above it. Returns the MTU it forwards
    /// with now, if that changed. Packets too big for it are answered
    /// with "too big" as before; the fast path's flows out by the port
    /// come back to be handed over with the new MTU.
    pub fn kernel_mtu(&mut self, port: usize, kernel: u16) -> Option<u16> {
        let p = self.cfg.ports.get_mut(port)?;
        let want = if p.mtu_set {
            kernel.min(p.mtu_conf)
        } else {
            kernel
        };
        if want == p.mtu || want < 576 {
            return None;
        }
        p.mtu = want;
        // Frames in are measured against it too (a raised MTU lets the
        // bigger frames in; they were dropped as oversized).
        self.demux.set_mtu(port, want as usize);
        self.fast_port_mtu_changed(port);
        Some(want)
    }

    /// Port `port`'s link as last set (up until told otherwise).
    pub fn link_up(&self, port: usize) -> bool {
        self.control.links.get(port).copied().unwrap_or(false)
    }

    /// The oldest link change not read yet.
    pub fn poll_link_event(&mut self) -> Option<LinkEvent> {
        self.control.link_events.pop_front()
    }

    /// The logical interfaces on port `port` (those a link change
    /// concerns).
    pub fn interfaces_on_port(&self, port: usize) -> Vec<usize> {
        self.demux.ifaces_on(port)
    }
}
