//! Demux: which logical interface a received frame belongs to. A port
//! and its 802.1Q tag (or none) name one interface; the host interface's
//! port is set apart. TCP super-packets larger than the port's MTU are
//! cut into segments here, before anything else looks at them.
//!
//! Owns the (port, VLAN) -> interface map and the ports' MTUs. It does not
//! decide what a frame is for (our MAC, a bridge, the router): that is the
//! next room's question, asked by `Dataplane::frame_in`.

use std::collections::HashMap;

use palisade_wire::build;
use palisade_wire::ethernet::{is_station, EtherType, EthernetFrame, Mac};

use super::DropReason;
use crate::config::Config;

/// Where a frame arrived, as far as the demux can tell.
pub(super) enum Arrival<'a> {
    /// From the Linux stack, through the host interface.
    Host {
        ethertype: EtherType,
        payload: &'a [u8],
    },
    /// On a logical interface (a port, or a port and VLAN).
    Iface {
        iface: usize,
        dst: Mac,
        src: Mac,
        ethertype: EtherType,
        payload: &'a [u8],
    },
}

pub(super) struct Demux {
    by_port_vlan: HashMap<(usize, Option<u16>), usize>,
    /// Ports whose untagged interface is a member of a bridge with
    /// `pass-tagged`: a tagged frame no VLAN interface claims is bridged
    /// there whole, tag and all, as any frame that is not IP (OpenBSD's
    /// bridge(4) and Linux's bridge without VLAN filtering do so).
    bridged: HashMap<usize, usize>,
    mtus: Vec<usize>,
    host_port: Option<usize>,
}

impl Demux {
    pub(super) fn new(cfg: &Config) -> Demux {
        let mut by_port_vlan = HashMap::new();
        let mut bridged = HashMap::new();
        for (ix, i) in cfg.ifaces.iter().enumerate() {
            if let Some(p) = i.port {
                by_port_vlan.insert((p, i.vlan), ix);
                if i.vlan.is_none() && i.bridge.is_some_and(|b| cfg.ifaces[b].pass_tagged) {
                    bridged.insert(p, ix);
                }
            }
        }
        Demux {
            by_port_vlan,
            bridged,
            mtus: cfg.ports.iter().map(|p| p.mtu as usize).collect(),
            host_port: None,
        }
    }

    /// Port `port` takes frames up to `mtu` from now on (its MTU changed
    /// while running).
    pub(super) fn set_mtu(&mut self, port: usize, mtu: usize) {
        if let Some(m) = self.mtus.get_mut(port) {
            *m = mtu;
        }
    }

    pub(super) fn set_host_port(&mut self, port: usize) {
        self.host_port = Some(port);
    }

    /// The logical interfaces on `port` (untagged and VLANs).
    pub(super) fn ifaces_on(&self, port: usize) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .by_port_vlan
            .iter()
            .filter(|((p, _), _)| *p == port)
            .map(|(_, i)| *i)
            .collect();
        v.sort_unstable();
        v
    }

    pub(super) fn classify<'a>(
        &self,
        port: usize,
        frame: &'a [u8],
    ) -> Result<Arrival<'a>, DropReason> {
        let f = EthernetFrame::new_checked(frame).map_err(|_| DropReason::Malformed)?;
        let ethertype = f.ethertype();
        let off = f.header_len();
        if self.host_port == Some(port) {
            return Ok(Arrival::Host {
                ethertype,
                payload: &frame[off..],
            });
        }
        // VLAN 0 is a priority tag (802.1Q): the frame is untagged
        // traffic, the port's own, and pf sees its packets. An 802.1ad
        // service tag (0x88a8) is no VLAN interface's (those are 802.1Q),
        // whatever its id: it was taken for one.
        let tag = f.vlan();
        let service = tag.is_some_and(|t| t.tpid == EtherType::QinQ);
        let vid = tag.map(|t| t.vid).filter(|v| *v != 0 || service);
        // Stacked tags (802.1ad): no interface is configured for them,
        // nor carried by a bridge when the outer tag is a VLAN interface's.
        let claimed = if ethertype.is_tag() || service {
            // (A service tag's id is no 802.1Q VLAN's: such a frame on a
            // `pass-tagged` member is carried whatever its id.)
            if !service && vid.is_some() && self.by_port_vlan.contains_key(&(port, vid)) {
                return Err(DropReason::UnknownVlan);
            }
            None
        } else {
            self.by_port_vlan.get(&(port, vid)).copied()
        };
        let (iface, ethertype, payload) = match claimed {
            Some(i) => (i, ethertype, &frame[off..]),
            // Tagged, for no interface, on a bridge member: bridged as
            // it is, its first tag's identifier as its EtherType.
            None => match (vid, self.bridged.get(&port)) {
                (Some(_), Some(&i)) => (i, f.outer_ethertype(), &frame[14..]),
                _ => return Err(DropReason::UnknownVlan),
            },
        };
        // A sender no station can be (zero, or a group address): dropped,
        // as Linux's bridge drops it, before a bridge or a neighbour
        // table learns it.
        let src = f.src_addr();
        if !is_station(&src) {
            return Err(DropReason::Malformed);
        }
        Ok(Arrival::Iface {
            iface,
            dst: f.dst_addr(),
            src,
            ethertype,
            payload,
        })
    }

    /// A frame larger than its port's MTU is a TCP super-packet a local
    /// stack (a VM, a veth peer) left to segmentation offload: its
    /// segments, each a frame with the same link header, as the NIC would
    /// have sent them. None: the frame fits (or is not IP; it goes on as
    /// it is). Err: oversized and not segmentable.
    pub(super) fn segment(
        &self,
        port: usize,
        frame: &[u8],
    ) -> Option<Result<Vec<Vec<u8>>, DropReason>> {
        let mtu = *self.mtus.get(port)?;
        // Not even an untagged frame's payload can exceed the MTU.
        if frame.len() <= mtu + 14 {
            return None;
        }
        let f = EthernetFrame::new_checked(frame).ok()?;
        let off = f.header_len();
        let ip = matches!(f.ethertype(), EtherType::Ipv4 | EtherType::Ipv6);
        if frame.len() - off <= mtu || !ip {
            return None;
        }
        let Some(segs) = build::segment_tcp(&frame[off..], mtu) else {
            // Only TCP is cut; anything else over the MTU is too long,
            // not broken (a TCP packet that will not cut is).
            let tcp = palisade_wire::parse_ip(&frame[off..])
                .is_ok_and(|i| matches!(i.l4, palisade_wire::L4::Tcp { .. }));
            return Some(Err(if tcp {
                DropReason::Malformed
            } else {
                DropReason::Oversized
            }));
        };
        Some(Ok(segs
            .into_iter()
            .map(|s| {
                let mut f = frame[..off].to_vec();
                f.extend_from_slice(&s);
                f
            })
            .collect()))
    }
}
