//! Offload: TCP super-packets (a local stack's unsegmented send, or what
//! GRO merged) taken through the router or a bridge whole when pf's
//! decision for the whole is exactly its decision for each segment, and
//! cut into segments otherwise. docs/offload.md says why and how.
//!
//! A super-packet arrives with its segment size (`Gso`). It goes whole
//! through pf `in` and pf `out` only by `Filter::process_whole`, which
//! refuses (changing nothing) unless the packet belongs to an
//! established state whose windows accept every segment in turn. Whole,
//! it leaves with a virtio_net_hdr that lets the kernel or the NIC cut it
//! (`InPlace`, or `Out` with `OUT_VNET`). Where the whole cannot go on, it is cut as the
//! sender's NIC would have cut it and each segment continues alone from
//! the step it reached: before pf `in` (everything per segment), after pf
//! `in` (local delivery, routing options, a smaller MTU, an unknown
//! neighbour), or after pf `out` refused the whole.
//!
//! Owns none of the tables; it only chooses between the whole and the
//! segments.

use palisade_conf::ir::Direction;
use palisade_wire::ethernet::{EtherType, EthernetRepr, VlanTag};
use palisade_wire::{build, parse_ip, IpInfo, L4};

use super::icmp_error::is_multicast_or_broadcast;
use super::router::{hop, Way};
use super::{demux, Dataplane, DropReason, Out};
use crate::afpacket::{Gso, VnetHdr};
use palisade_wire::ethernet::{is_multicast, Mac};

/// Set in an `Out`'s port index when its frame carries a virtio_net_hdr
/// in its last `VNET_HDR_LEN` bytes (to be sent first): a TCP
/// super-packet leaving whole, for a port opened with segmentation
/// offload, whose link header grew or shrank (a VLAN tag). Only
/// `Dataplane::input_offload` makes them.
pub const OUT_VNET: usize = 1 << 30;

/// A super-packet leaving whole from the buffer it arrived in: the first
/// `len` bytes of the frame given to `input_offload`, rewritten in place
/// (link header included), sent out of `port` after the virtio_net_hdr
/// `hdr`. The frame is not copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InPlace {
    pub port: usize,
    pub len: usize,
    pub hdr: [u8; crate::afpacket::VNET_HDR_LEN],
}

impl Dataplane {
    /// A frame received on `port` with its offload description: a TCP
    /// super-packet when `gso` says so (see the module's text), any other
    /// frame as `input` takes it. What to send; frames whose port index
    /// has `OUT_VNET` end with their virtio_net_hdr. A super-packet that
    /// leaves whole is rewritten in `frame` and sent from there: the
    /// caller sends it (`take_in_place`) after the frames of earlier
    /// calls and before those of later ones.
    pub fn input_offload(
        &mut self,
        port: usize,
        frame: &mut [u8],
        gso: Option<Gso>,
        now: u64,
    ) -> Vec<Out> {
        self.in_place = None;
        let Some(g) = gso else {
            return self.input(port, frame, now);
        };
        self.counters.frames_in += 1;
        self.fast_begin(port, frame, now);
        if g.udp || !self.super_in(port, frame, g, now) {
            // Decided segment by segment from the start.
            match segment(frame, g) {
                Some(segments) => {
                    self.counters.segmented += 1;
                    for f in segments {
                        self.frame_in(port, &f, now);
                    }
                }
                None => self.counters.dropped(DropReason::Malformed),
            }
        }
        self.fast_end(now);
        let out = std::mem::take(&mut self.out);
        self.counters.frames_out += out.len() as u64 + self.in_place.is_some() as u64;
        out
    }

    /// The super-packet `input_offload` rewrote to leave whole from its
    /// own buffer, if the last call made one.
    pub fn take_in_place(&mut self) -> Option<InPlace> {
        self.in_place.take()
    }

    /// Keep the ids of the states packets match (pfsync's `defer`: a
    /// held first packet leaves before the next packet of its
    /// connection).
    pub fn set_track_hits(&mut self, on: bool) {
        self.track_hits = on;
        self.hits.clear();
    }

    /// The states matched since the last call.
    pub fn take_hits(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.hits)
    }

    /// The super-packet through the router as far as it can go whole.
    /// False, with nothing done: cut it before anything.
    fn super_in(&mut self, port: usize, frame: &mut [u8], g: Gso, now: u64) -> bool {
        let Ok(demux::Arrival::Iface {
            iface: i,
            dst,
            src,
            ethertype,
            payload,
        }) = self.demux.classify(port, frame)
        else {
            return false;
        };
        if !matches!(ethertype, EtherType::Ipv4 | EtherType::Ipv6) {
            return false;
        }
        // The IP packet is rewritten where it lies, after its link header.
        let l2 = frame.len() - payload.len();
        if let Some(b) = self.cfg.ifaces[i].bridge {
            return self.bridge_whole(b, i, dst, src, frame, l2, g, now);
        }
        if !self.local.accepts(i, &dst) {
            return false;
        }
        let Ok(info) = parse_ip(&frame[l2..]) else {
            return false;
        };
        // What the router refuses before pf, as for a single packet.
        if let Some(r) = self.refused_on_arrival(i, &frame[l2..l2 + info.len], &info) {
            self.counters.dropped(r);
            return true;
        }
        // (Not asked yet whether it is for the firewall: a reply to a
        // translated connection is addressed to it until pf `in` gives it
        // its real destination. If it still is for the firewall after pf,
        // its segments are delivered one by one below.)
        let pkt = &mut frame[l2..];
        let d = match self.pf_whole(pkt, &info, i, Direction::In, None, now, g) {
            Whole::Pass(d) => d,
            Whole::Cut => return false,
            Whole::Dropped => return true,
        };
        // From here the packet has passed pf `in` whole.
        self.counters.offload_whole += 1;
        let frame = &mut frame[..l2 + info.len];
        let pkt = &frame[l2..];
        let info = if d.modified {
            match parse_ip(pkt) {
                Ok(x) => x,
                Err(_) => {
                    self.counters.dropped(DropReason::Malformed);
                    return true;
                }
            }
        } else {
            info
        };
        let way = self.way(i, &info.dst);
        let simple = !self.local.is_ours_at(i, &info.dst)
            && !info.dst.is_loopback()
            && !is_multicast_or_broadcast(&info.dst)
            && !self.local.is_directed_broadcast(&info.dst)
            && !super::router::not_routable_v6(&info)
            && info.ttl > 1;
        match way {
            Some(w) if simple && segment_len(&info) + g.size as usize <= w.mtu => {
                self.forward_whole(w, frame, l2, &info, g, now)
            }
            _ => {
                // Each segment goes on alone from after pf `in`.
                for (k, (seg, seg_info)) in self.cut(pkt, g).into_iter().enumerate() {
                    self.draw_for_in(k);
                    self.after_in(i, src, seg, &seg_info, None, None, now);
                }
            }
        }
        true
    }

    /// Cut after pf `in` passed the whole: segment `k` draws the random
    /// number its own pf `in` would have drawn unmerged (the first
    /// segment's was the whole's), so that what pf `out` draws for each
    /// (`random-id`, ...) is what it would have drawn for the segments
    /// arriving one by one.
    fn draw_for_in(&mut self, k: usize) {
        if k > 0 {
            self.rng.next_u32();
        }
    }

    /// Passed pf `in` and `out` whole: the numbers the segments' other
    /// passes would have drawn unmerged (two each, less the two drawn),
    /// so that later packets draw what they would have.
    fn draw_for_whole(&mut self, info: &IpInfo, g: Gso) {
        for _ in 0..2 * (cut_count(info, g) - 1) {
            self.rng.next_u32();
        }
    }

    /// Forward a super-packet that passed pf `in` whole by `w`: TTL, pf
    /// `out` (whole, or each segment alone), the neighbour. The packet is
    /// `frame[l2..]`.
    fn forward_whole(
        &mut self,
        w: Way,
        frame: &mut [u8],
        l2: usize,
        info: &IpInfo,
        g: Gso,
        now: u64,
    ) {
        let pkt = &mut frame[l2..];
        let out_info = hop(pkt, info);
        let d = match self.pf_whole(pkt, &out_info, w.e, Direction::Out, Some(w.from), now, g) {
            Whole::Pass(d) => {
                self.draw_for_whole(&out_info, g);
                d
            }
            Whole::Dropped => return,
            Whole::Cut => {
                for (k, (seg, seg_info)) in self.cut(pkt, g).into_iter().enumerate() {
                    self.draw_for_in(k);
                    self.forward_out(w, seg, &seg_info, None, None, now);
                }
                return;
            }
        };
        self.counters.routed += 1;
        let info = if d.modified {
            match parse_ip(pkt) {
                Ok(x) => x,
                Err(_) => {
                    self.counters.dropped(DropReason::Malformed);
                    return;
                }
            }
        } else {
            out_info
        };
        let (Some(mac), Some(port)) = (self.neigh.reachable(w.e, &w.nh, now), self.port_of(w.e))
        else {
            // An unknown neighbour queues what waits for it, a routed
            // bridge floods: both take segments.
            for (seg, _) in self.cut(pkt, g) {
                self.l3_out(w.e, w.nh, seg, now);
            }
            return;
        };
        let src = self.local.mac(w.e);
        self.send_whole(frame, l2, w.e, port, mac, src, &info, g);
    }

    /// The port interface `e` sends on, unless it is the host interface's
    /// (or a bridge, which has none).
    fn port_of(&self, e: usize) -> Option<usize> {
        let host = self.host.as_ref().map(|h| h.port);
        self.cfg.ifaces[e].port.filter(|p| Some(*p) != host)
    }

    /// A bridged super-packet from member `m` of bridge `b`, to a
    /// destination learnt on another member: pf `in` on `m` and `out` on
    /// that member, whole, as `bridge_in` does for a frame. False, with
    /// nothing done: cut it before anything (a group or unknown
    /// destination is flooded, a frame for the bridge's own MAC routed).
    #[allow(clippy::too_many_arguments)]
    fn bridge_whole(
        &mut self,
        b: usize,
        m: usize,
        dst: Mac,
        src: Mac,
        frame: &mut [u8],
        l2: usize,
        g: Gso,
        now: u64,
    ) -> bool {
        // (A frame from its own destination would be learnt there first,
        // and go nowhere.)
        if is_multicast(&dst) || src == dst || self.local.accepts(b, &dst) {
            return false;
        }
        let Some(p) = self.fdb.fresh(b, &dst, now).filter(|&p| p != m) else {
            return false;
        };
        let Ok(info) = parse_ip(&frame[l2..]) else {
            return false;
        };
        // A damaged IPv4 header makes no state, as for a single packet.
        if !super::router::v4_header_checksum_ok(&frame[l2..l2 + info.len], &info) {
            self.counters.dropped(DropReason::BadChecksum);
            return true;
        }
        let ethertype = if info.is_v6() {
            EtherType::Ipv6
        } else {
            EtherType::Ipv4
        };
        let pkt = &mut frame[l2..];
        let d = match self.pf_whole(pkt, &info, m, Direction::In, None, now, g) {
            Whole::Pass(d) => d,
            Whole::Cut => return false,
            Whole::Dropped => return true,
        };
        // Passed pf `in` whole: what `bridge_in` did before pf, once.
        self.counters.offload_whole += 1;
        if !is_multicast(&src) && !self.cfg.ifaces[m].no_learn {
            self.fdb_learn(b, src, m, now);
        }
        self.counters.bridged += 1;
        let frame = &mut frame[..l2 + info.len];
        let pkt = &mut frame[l2..];
        let Some(info) = described(pkt, info, d.modified) else {
            self.counters.dropped(DropReason::Malformed);
            return true;
        };
        let port = self.port_of(p);
        let whole = port.is_some() && segment_len(&info) + g.size as usize <= self.mtu(p);
        let verdict = if whole {
            self.pf_whole(pkt, &info, p, Direction::Out, Some(m), now, g)
        } else {
            Whole::Cut
        };
        let d = match verdict {
            Whole::Pass(d) => {
                self.draw_for_whole(&info, g);
                d
            }
            Whole::Dropped => return true,
            Whole::Cut => {
                // Each segment out alone: pf `out`, the MTU.
                for (k, (seg, seg_info)) in self.cut(pkt, g).into_iter().enumerate() {
                    self.draw_for_in(k);
                    self.bridge_out(p, m, dst, src, ethertype, seg, Some(&seg_info), None, now);
                }
                return true;
            }
        };
        // (Passed whole only with a port.)
        let Some(port) = port else {
            return true;
        };
        let Some(info) = described(pkt, info, d.modified) else {
            self.counters.dropped(DropReason::Malformed);
            return true;
        };
        self.send_whole(frame, l2, p, port, dst, src, &info, g);
        true
    }

    /// Send the super-packet `frame[l2..]` whole out of interface `e`
    /// (port `port`) from `src` to `dst`: its link header rewritten in
    /// place (copied only when a VLAN tag comes or goes), its TCP checksum
    /// left to offload, a virtio_net_hdr asking for segments of `g.size`.
    #[allow(clippy::too_many_arguments)]
    fn send_whole(
        &mut self,
        frame: &mut [u8],
        l2: usize,
        e: usize,
        port: usize,
        dst: Mac,
        src: Mac,
        info: &IpInfo,
        g: Gso,
    ) {
        let L4::Tcp {
            flags, header_len, ..
        } = info.l4
        else {
            return;
        };
        build::tcp_partial_checksum(&mut frame[l2..]);
        let ifc = &self.cfg.ifaces[e];
        let eth = EthernetRepr {
            dst,
            src,
            vlan: ifc.vlan.map(VlanTag::dot1q),
            ethertype: if info.is_v6() {
                EtherType::Ipv6
            } else {
                EtherType::Ipv4
            },
        };
        if self.trace_on() {
            let mut macs = [0u8; 12];
            macs[..6].copy_from_slice(&dst);
            macs[6..].copy_from_slice(&src);
            self.fast_sent(port, macs, ifc.vlan, &frame[l2..]);
        }
        // The new link header in place of the old; a copy only when one
        // is tagged and the other not.
        let head = eth.frame(&[], 0);
        let l4 = head.len() + info.l4_offset;
        let vh = VnetHdr::tcp(
            info.is_v6(),
            l4,
            l4 + header_len as usize,
            g.size,
            flags & 0x80 != 0,
        )
        .bytes();
        if head.len() == l2 {
            frame[..l2].copy_from_slice(&head);
            self.in_place = Some(InPlace {
                port,
                len: frame.len(),
                hdr: vh,
            });
        } else {
            let mut f = Vec::with_capacity(head.len() + frame.len() - l2 + vh.len());
            f.extend_from_slice(&head);
            f.extend_from_slice(&frame[l2..]);
            f.extend_from_slice(&vh);
            self.out.push((port | OUT_VNET, f));
        }
    }

    /// pf on a super-packet, whole (`Filter::process_whole`), counted per
    /// segment on the interface.
    #[allow(clippy::too_many_arguments)]
    fn pf_whole(
        &mut self,
        pkt: &mut [u8],
        info: &IpInfo,
        ix: usize,
        dir: Direction,
        from: Option<usize>,
        now: u64,
        g: Gso,
    ) -> Whole {
        let name = self.names[ix].clone();
        // Taken only if the packet goes whole: cut, its first segment
        // gets this number, as it would have unmerged.
        let random = self.rng.peek_u32();
        let from = from.and_then(|f| self.names.get(f).cloned());
        let Some(d) =
            self.filter
                .process_whole(pkt, info, &name, dir, now, random, from.as_deref(), g.size)
        else {
            return Whole::Cut;
        };
        self.rng.next_u32();
        if dir == Direction::In {
            // What its segments' passes `out` see, as `pf` does.
            self.in_tag = d.tag.clone();
        }
        if !d.passed() {
            // Only when the state changed under the check (cannot happen):
            // the state has moved, so the packet is not decided again.
            self.counters.blocked += 1;
            return Whole::Dropped;
        }
        if let Some(st) = self.if_stats.get_mut(ix) {
            let v6 = info.is_v6() as usize;
            let out = (dir == Direction::Out) as usize;
            let n = cut_count(info, g);
            st.packets[v6][out][0] += n as u64;
            st.bytes[v6][out][0] += (info.len + (n - 1) * segment_len(info)) as u64;
        }
        self.fast_pass(ix, dir, &d);
        Whole::Pass(d)
    }
}

/// What pf made of a super-packet whole. (Returned once per pass; a Box
/// would allocate for every super-packet.)
#[allow(clippy::large_enum_variant)]
enum Whole {
    /// Passed whole.
    Pass(palisade_filter::Decision),
    /// Not decided (nothing changed): cut it, decide each segment.
    Cut,
    /// Decided and dropped: nothing more to do.
    Dropped,
}

/// `pkt`'s description: `info` unless pf changed the packet.
fn described(pkt: &[u8], info: IpInfo, modified: bool) -> Option<IpInfo> {
    if modified {
        parse_ip(pkt).ok()
    } else {
        Some(info)
    }
}

/// The bytes in front of a TCP packet's payload: IP and TCP headers.
fn segment_len(info: &IpInfo) -> usize {
    match info.l4 {
        L4::Tcp { header_len, .. } => info.l4_offset + header_len as usize,
        _ => info.l4_offset,
    }
}

/// How many segments `g` cuts the packet into.
fn cut_count(info: &IpInfo, g: Gso) -> usize {
    let payload = info.len.saturating_sub(segment_len(info));
    payload.div_ceil(g.size.max(1) as usize).max(1)
}

impl Dataplane {
    /// The IP packet `pkt` cut into its segments, each described; none,
    /// counted as malformed, if it cannot be cut (a packet that passed
    /// `process_whole` always can).
    fn cut(&mut self, pkt: &[u8], g: Gso) -> Vec<(Vec<u8>, IpInfo)> {
        let v: Vec<(Vec<u8>, IpInfo)> = build::segment_tcp_mss(pkt, g.size as usize)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| parse_ip(&s).ok().map(|i| (s, i)))
            .collect();
        if v.is_empty() {
            self.counters.dropped(DropReason::Malformed);
        }
        v
    }
}

/// A received super-packet frame cut into frames of one segment (or
/// datagram) each, with its link header.
fn segment(frame: &[u8], g: Gso) -> Option<Vec<Vec<u8>>> {
    let (_, _, off) = palisade_wire::link::ethernet(frame)?;
    let segs = if g.udp {
        build::segment_udp(&frame[off..], g.size as usize)?
    } else {
        build::segment_tcp_mss(&frame[off..], g.size as usize)?
    };
    Some(
        segs.into_iter()
            .map(|s| {
                let mut f = frame[..off].to_vec();
                f.extend_from_slice(&s);
                f
            })
            .collect(),
    )
}
