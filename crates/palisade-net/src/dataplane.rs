//! The data plane: frames in from ports, frames out to ports. Logical
//! interfaces (a port or port + 802.1Q VLAN), learning bridges, and a
//! router (longest-prefix routes, ARP/NDP with a bounded queue, proxy
//! ARP/NDP, TTL/hop limit, ICMP errors), every IP packet filtered by pf.
//!
//! It does no I/O itself, so it is tested with frames in memory; the
//! daemon feeds it from AF_PACKET rings. See docs/design-net.md for where
//! pf runs on which path.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use palisade_conf::ir::Direction;
use palisade_filter::{Filter, Reason};
use palisade_wire::checksum::update16;
use palisade_wire::link::{self, ETH_ARP, ETH_IPV4, ETH_IPV6, ETH_VLAN};
use palisade_wire::{build, parse_ip, IpInfo, L4};

use crate::config::{Config, Prefix};

pub type Mac = [u8; 6];
pub const BROADCAST: Mac = [0xff; 6];

/// How long a learnt bridge address and a resolved neighbour stay valid.
const FDB_AGING_MS: u64 = 300_000;
const NEIGH_REACHABLE_MS: u64 = 600_000;
/// Resolution: requests sent, one per second, before giving up.
const NEIGH_TRIES: u32 = 3;
/// Packets waiting for one neighbour, and in all.
const NEIGH_QUEUE: usize = 16;
const NEIGH_QUEUE_TOTAL: usize = 1024;
/// Table sizes: learnt bridge addresses per bridge, neighbours in all
/// (beyond, new entries are not learnt: a flood of spoofed senders cannot
/// exhaust memory).
const FDB_MAX: usize = 65_536;
const NEIGH_MAX: usize = 65_536;
/// ICMP errors generated per second at most.
const ICMP_ERRORS_PER_SEC: u32 = 100;

#[derive(Default, Debug, Clone)]
pub struct Counters {
    pub frames_in: u64,
    pub frames_out: u64,
    /// TCP super-packets (segmentation offload) segmented on arrival.
    pub segmented: u64,
    /// Frames on a port/VLAN no interface is configured for.
    pub unknown_vlan: u64,
    pub malformed: u64,
    pub bridged: u64,
    pub flooded: u64,
    pub routed: u64,
    pub blocked: u64,
    pub no_route: u64,
    pub ttl_exceeded: u64,
    pub too_big: u64,
    /// IPv4 datagrams fragmented on the way out.
    pub fragmented: u64,
    /// Copies sent by `dup-to`.
    pub duplicated: u64,
    pub arp_replies: u64,
    pub nd_replies: u64,
    pub neigh_queued: u64,
    pub neigh_dropped: u64,
    pub local_echo: u64,
    /// Traffic for the firewall itself that nothing here serves (no host
    /// interface).
    pub local_dropped: u64,
    /// Packets given to / received from the Linux stack (host interface).
    pub host_in: u64,
    pub host_out: u64,
    pub icmp_errors: u64,
    /// Addresses not learnt because a table was full.
    pub table_full: u64,
    /// pflog records lost because the writer fell behind.
    pub log_dropped: u64,
}

/// A random seed from the kernel (getrandom), or the clock if that fails.
fn seed() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most the 8 bytes we pass.
    let n = unsafe { libc::getrandom(b.as_mut_ptr() as *mut libc::c_void, 8, 0) };
    if n == 8 {
        u64::from_ne_bytes(b)
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed)
    }
}

/// One interface's packets and bytes through pf, indexed [IPv4, IPv6]
/// [in, out] [passed, blocked], and the malformed packets dropped on it.
#[derive(Clone, Debug, Default)]
pub struct IfStats {
    pub packets: [[[u64; 2]; 2]; 2],
    pub bytes: [[[u64; 2]; 2]; 2],
    pub errors: u64,
}

enum Neigh {
    Reachable {
        mac: Mac,
        until: u64,
    },
    Incomplete {
        queue: VecDeque<Vec<u8>>,
        tries: u32,
        next: u64,
    },
}

/// One frame to send: port index and bytes.
pub type Out = (usize, Vec<u8>);

pub struct Dataplane {
    pub cfg: Config,
    /// Per interface: its MAC (a bridge takes its first member's).
    macs: Vec<Mac>,
    by_port_vlan: HashMap<(usize, Option<u16>), usize>,
    /// Per bridge interface: address -> (member interface, last seen).
    fdb: HashMap<usize, HashMap<Mac, (usize, u64)>>,
    neigh: HashMap<(usize, IpAddr), Neigh>,
    queued: usize,
    pub filter: Filter,
    pub counters: Counters,
    icmp_budget: (u64, u32),
    out: Vec<Out>,
    /// The host interface: its port index (after the configured ports) and
    /// the TAP's MAC.
    host: Option<(usize, Mac)>,
    names: Vec<std::sync::Arc<str>>,
    /// Per logical interface: what pf saw, as `pfctl -vvsI` counts it.
    pub if_stats: Vec<IfStats>,
    rng: u64,
    logging: bool,
    log: Vec<Vec<u8>>,
}

/// pflog records waiting to be written, at most.
const LOG_MAX: usize = 65_536;

/// The MAC Palisade answers to on a port: the port's own MAC with one bit
/// changed (and locally administered). Not the port's: the kernel accepts
/// IP packets addressed to the port's MAC for any of its local addresses
/// (the weak host model), and the firewall's addresses are local to it on
/// the host interface; frames to another MAC are "other host" to the
/// kernel and never reach its stack.
pub fn own_mac(port_mac: Mac) -> Mac {
    let mut m = port_mac;
    m[0] = (m[0] | 0x02) & !0x01;
    if m == port_mac {
        m[0] ^= 0x04;
    }
    m
}

/// The MAC Palisade uses on its side of the host interface.
pub const HOST_PEER_MAC: Mac = [0x02, 0x70, 0x61, 0x6c, 0x30, 0x01];

fn mac_at(b: &[u8]) -> Mac {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[..6]);
    m
}

fn multicast(m: &Mac) -> bool {
    m[0] & 1 == 1
}

fn solicited_node(ip: &Ipv6Addr) -> Ipv6Addr {
    let o = ip.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | o[13] as u16,
        u16::from_be_bytes([o[14], o[15]]),
    )
}

fn v6_multicast_mac(ip: &Ipv6Addr) -> Mac {
    let o = ip.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

impl Dataplane {
    /// `port_macs[i]` is the hardware address of `cfg.ports[i]`.
    pub fn new(cfg: Config, port_macs: &[Mac], filter: Filter) -> Dataplane {
        let mut macs = Vec::new();
        let mut by_port_vlan = HashMap::new();
        for (ix, i) in cfg.ifaces.iter().enumerate() {
            let m = match i.port {
                Some(p) => port_macs[p],
                None => port_macs[cfg.ifaces[i.members[0]].port.unwrap_or(0)],
            };
            macs.push(m);
            if let Some(p) = i.port {
                by_port_vlan.insert((p, i.vlan), ix);
            }
        }
        let cfg_names = cfg.ifaces.iter().map(|i| i.name.as_str().into()).collect();
        let n_ifaces = cfg.ifaces.len();
        Dataplane {
            cfg,
            macs,
            by_port_vlan,
            fdb: HashMap::new(),
            neigh: HashMap::new(),
            queued: 0,
            filter,
            counters: Counters::default(),
            icmp_budget: (0, 0),
            out: Vec::new(),
            host: None,
            names: cfg_names,
            if_stats: vec![IfStats::default(); n_ifaces],
            rng: seed(),
            logging: false,
            log: Vec::new(),
        }
    }

    /// Attach the host interface (a TAP with MAC `mac`) as port `port`:
    /// traffic for the firewall's own addresses goes there, and what the
    /// Linux stack sends through it is routed like the firewall's own.
    pub fn set_host(&mut self, port: usize, mac: Mac) {
        self.host = Some((port, mac));
    }

    /// pf on one packet; what its rules log is kept for `take_log` (the
    /// packet as it leaves pf: when translated, the pflog header says so).
    /// `from`: the interface an outbound packet arrived on (for
    /// `received-on`), None for the firewall's own.
    fn pf(
        &mut self,
        pkt: &mut [u8],
        ix: usize,
        dir: Direction,
        from: Option<usize>,
        now: u64,
    ) -> palisade_filter::Decision {
        let name = self.names[ix].clone();
        let iface: &str = &name;
        let random = self.random();
        let from = from.and_then(|f| self.names.get(f).cloned());
        let d = self
            .filter
            .process_received(pkt, iface, dir, now, random, from.as_deref());
        if let Some(st) = self.if_stats.get_mut(ix) {
            let v6 = pkt.first().is_some_and(|b| b >> 4 == 6) as usize;
            let out = (dir == Direction::Out) as usize;
            let blocked = !d.passed() as usize;
            st.packets[v6][out][blocked] += 1;
            st.bytes[v6][out][blocked] += pkt.len() as u64;
            if matches!(
                d.reason,
                Reason::Short | Reason::BadOffset | Reason::Normalize
            ) {
                st.errors += 1;
            }
        }
        if self.logging && (d.log || !d.log_matched.is_empty()) {
            let len = parse_ip(pkt)
                .map(|i| i.len)
                .unwrap_or(pkt.len())
                .min(pkt.len());
            for r in palisade_filter::filter::pflog_records(&d, &pkt[..len], iface, dir) {
                if self.log.len() < LOG_MAX {
                    self.log.push(r);
                } else {
                    self.counters.log_dropped += 1;
                }
            }
        }
        d
    }

    /// Randomness for pf (translation ports, `probability`, modulated and
    /// synproxy sequence numbers): splitmix64 over a seed from the kernel.
    /// Without it translation ports would repeat after states go, and
    /// collide with connections the servers still hold.
    fn random(&mut self) -> u32 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as u32
    }

    /// Keep pflog records of what rules log (for a pflog file).
    pub fn set_logging(&mut self, on: bool) {
        self.logging = on;
    }

    /// The pflog records (DLT_PFLOG) gathered since the last call.
    pub fn take_log(&mut self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.log)
    }

    /// The MAC address interface `i` answers with (ARP, NDP) and sends
    /// from (`own_mac` of its port's MAC, as the daemon gives it).
    pub fn mac(&self, i: usize) -> Option<Mac> {
        self.macs.get(i).copied()
    }

    /// A port was replaced (deleted and created again): its new MAC, for
    /// its interfaces and a bridge that took its address from it.
    pub fn set_port_mac(&mut self, port: usize, mac: Mac) {
        for (ix, i) in self.cfg.ifaces.iter().enumerate() {
            let first = i.members.first().and_then(|m| self.cfg.ifaces[*m].port);
            if i.port == Some(port) || (i.port.is_none() && first == Some(port)) {
                self.macs[ix] = mac;
            }
        }
    }

    /// Announce every address (gratuitous ARP, unsolicited NA).
    pub fn start(&mut self, now: u64) -> Vec<Out> {
        for i in 0..self.cfg.ifaces.len() {
            if self.cfg.ifaces[i].bridge.is_some() {
                continue;
            }
            for p in self.cfg.ifaces[i].addresses.clone() {
                match p.ip {
                    IpAddr::V4(a) => {
                        let arp = self.arp_packet(i, 1, a, [0; 6], a);
                        self.emit(i, BROADCAST, None, ETH_ARP, &arp);
                    }
                    IpAddr::V6(a) => {
                        let na = self.na_packet(
                            i,
                            a,
                            a,
                            Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1),
                            false,
                        );
                        self.emit(
                            i,
                            v6_multicast_mac(&Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)),
                            None,
                            ETH_IPV6,
                            &na,
                        );
                    }
                }
            }
        }
        let _ = now;
        std::mem::take(&mut self.out)
    }

    /// A frame received on port `port`: what to send.
    pub fn input(&mut self, port: usize, frame: &[u8], now: u64) -> Vec<Out> {
        self.counters.frames_in += 1;
        match self.oversize(port, frame) {
            Some(frames) => {
                for f in frames {
                    self.frame_in(port, &f, now);
                }
            }
            None => self.frame_in(port, frame, now),
        }
        let out = std::mem::take(&mut self.out);
        self.counters.frames_out += out.len() as u64;
        out
    }

    /// Timers: neighbour retries and give-ups, aging. Call about once a second.
    pub fn tick(&mut self, now: u64) -> Vec<Out> {
        let mut retry = Vec::new();
        let mut give_up = Vec::new();
        self.neigh.retain(|k, n| match n {
            Neigh::Reachable { until, .. } => *until > now,
            Neigh::Incomplete { tries, next, .. } if *next <= now => {
                if *tries >= NEIGH_TRIES {
                    give_up.push((
                        *k,
                        std::mem::replace(
                            n,
                            Neigh::Reachable {
                                mac: [0; 6],
                                until: 0,
                            },
                        ),
                    ));
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
        for (iface, ip) in retry {
            self.solicit(iface, ip);
        }
        for ((iface, _), n) in give_up {
            if let Neigh::Incomplete { queue, .. } = n {
                self.queued -= queue.len();
                for p in queue {
                    self.counters.neigh_dropped += 1;
                    self.icmp_error(iface, &p, now, Unreach::Host);
                }
            }
        }
        for t in self.fdb.values_mut() {
            t.retain(|_, (_, seen)| now < *seen + FDB_AGING_MS);
        }
        let out = std::mem::take(&mut self.out);
        self.counters.frames_out += out.len() as u64;
        out
    }

    /// A frame larger than its port's MTU is a TCP super-packet a local
    /// stack (a VM, a veth peer) left to segmentation offload: segment it
    /// as the NIC would. Other oversized frames are dropped and counted.
    fn oversize(&mut self, port: usize, frame: &[u8]) -> Option<Vec<Vec<u8>>> {
        let mtu = self.cfg.ports.get(port)?.mtu as usize;
        // Not even an untagged frame's payload can exceed the MTU.
        if frame.len() <= mtu + 14 {
            return None;
        }
        let (ethertype, _, off) = link::ethernet(frame)?;
        if frame.len() - off <= mtu || (ethertype != ETH_IPV4 && ethertype != ETH_IPV6) {
            return None;
        }
        let Some(segs) = build::segment_tcp(&frame[off..], mtu) else {
            self.counters.malformed += 1;
            return Some(Vec::new());
        };
        self.counters.segmented += 1;
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

    fn frame_in(&mut self, port: usize, frame: &[u8], now: u64) {
        let Some((ethertype, vlans, off)) = link::ethernet(frame) else {
            self.counters.malformed += 1;
            return;
        };
        if self.host.is_some_and(|(p, _)| p == port) {
            self.host_in(ethertype, &frame[off..], now);
            return;
        }
        if vlans.len() > 1 {
            self.counters.unknown_vlan += 1;
            return;
        }
        let Some(&iface) = self.by_port_vlan.get(&(port, vlans.first().copied())) else {
            self.counters.unknown_vlan += 1;
            return;
        };
        let dst = mac_at(&frame[0..6]);
        let src = mac_at(&frame[6..12]);
        let payload = &frame[off..];
        if let Some(b) = self.cfg.ifaces[iface].bridge {
            self.bridge_in(b, iface, dst, src, ethertype, payload, now);
        } else if dst == self.macs[iface] || multicast(&dst) {
            self.l3_in(iface, src, ethertype, payload, now);
        }
    }

    /// Build and queue a frame out of interface `i` (tagged if it is a VLAN).
    fn emit(&mut self, i: usize, dst: Mac, src: Option<Mac>, ethertype: u16, payload: &[u8]) {
        let ifc = &self.cfg.ifaces[i];
        if ifc.port.is_none() {
            // A bridge: to the member the destination was learnt on, or all.
            let member = if multicast(&dst) {
                None
            } else {
                self.fdb.get(&i).and_then(|t| t.get(&dst)).map(|(m, _)| *m)
            };
            let src = src.unwrap_or(self.macs[i]);
            match member {
                Some(m) => self.emit(m, dst, Some(src), ethertype, payload),
                None => {
                    for m in self.cfg.ifaces[i].members.clone() {
                        self.emit(m, dst, Some(src), ethertype, payload);
                    }
                }
            }
            return;
        }
        let port = ifc.port.unwrap();
        let mut f = Vec::with_capacity(payload.len() + 18);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&src.unwrap_or(self.macs[i]));
        if let Some(v) = ifc.vlan {
            f.extend_from_slice(&ETH_VLAN.to_be_bytes());
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        if f.len() < 60 {
            f.resize(60, 0);
        }
        self.out.push((port, f));
    }

    #[allow(clippy::too_many_arguments)]
    fn bridge_in(
        &mut self,
        b: usize,
        m: usize,
        dst: Mac,
        src: Mac,
        ethertype: u16,
        payload: &[u8],
        now: u64,
    ) {
        if !multicast(&src) {
            let t = self.fdb.entry(b).or_default();
            if t.len() < FDB_MAX || t.contains_key(&src) {
                t.insert(src, (m, now));
            } else {
                self.counters.table_full += 1;
            }
        }
        if dst == self.macs[b] {
            // For the bridge's own interface: routed/local, filtered on the bridge.
            self.l3_in(b, src, ethertype, payload, now);
            return;
        }
        let egress: Vec<usize> = if multicast(&dst) {
            None
        } else {
            self.fdb
                .get(&b)
                .and_then(|t| t.get(&dst))
                .filter(|(_, seen)| now < seen + FDB_AGING_MS)
                .map(|(p, _)| *p)
        }
        .map(|p| vec![p])
        .unwrap_or_else(|| {
            self.counters.flooded += 1;
            self.cfg.ifaces[b].members.clone()
        });
        let egress: Vec<usize> = egress.into_iter().filter(|&p| p != m).collect();
        if multicast(&dst) && !self.cfg.ifaces[b].addresses.is_empty() {
            self.l3_in(b, src, ethertype, payload, now);
        }
        if egress.is_empty() {
            return;
        }
        self.counters.bridged += 1;
        if ethertype != ETH_IPV4 && ethertype != ETH_IPV6 {
            for p in egress {
                self.emit(p, dst, Some(src), ethertype, payload);
            }
            return;
        }
        let mut pkt = payload.to_vec();
        let d = self.pf(&mut pkt, m, Direction::In, None, now);
        if d.held || !d.passed() {
            self.counters.blocked += u64::from(!d.held);
            // Answers of `block return` go back where the packet came from.
            for g in d.generated {
                self.emit(m, src, Some(dst), ethertype, &g);
            }
            return;
        }
        let refrag = d.refragment;
        let pkt = d.reassembled.unwrap_or(pkt);
        for p in egress {
            let mut q = pkt.clone();
            let d = self.pf(&mut q, p, Direction::Out, Some(m), now);
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
                        self.counters.too_big += 1;
                        // (Sent from the destination's MAC: never a group's.)
                        let e = if multicast(&dst) {
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

    /// `pkt`, ready to leave through an interface with this MTU: as it is,
    /// or in fragments: IPv4 without DF to the MTU, IPv6 that arrived in
    /// fragments (`refrag`) as it arrived (pf's pf_refragment6). Err with
    /// the packet when it cannot be sent and an ICMP error is owed.
    fn fit(
        &mut self,
        pkt: Vec<u8>,
        mtu: usize,
        refrag: Option<palisade_filter::frag::FragInfo>,
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
            (true, Some(r)) => build::fragment_v6(&pkt, r.id, mtu, r.max_len as usize),
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

    fn own_address(&self, ip: &IpAddr) -> Option<usize> {
        self.cfg
            .ifaces
            .iter()
            .position(|i| i.addresses.iter().any(|p| p.ip == *ip))
    }

    fn proxies(&self, i: usize, ip: &IpAddr) -> bool {
        self.cfg.ifaces[i].proxy.iter().any(|p| p.contains(ip))
    }

    /// An address of interface `i` (else of any interface) of `ip`'s family.
    fn source_for(&self, i: usize, v6: bool) -> Option<IpAddr> {
        let fam = |p: &&Prefix| p.ip.is_ipv6() == v6;
        self.cfg.ifaces[i]
            .addresses
            .iter()
            .find(fam)
            .or_else(|| {
                self.cfg
                    .ifaces
                    .iter()
                    .flat_map(|x| x.addresses.iter())
                    .find(fam)
            })
            .map(|p| p.ip)
    }

    fn l3_in(&mut self, i: usize, src: Mac, ethertype: u16, payload: &[u8], now: u64) {
        match ethertype {
            ETH_ARP => self.arp_in(i, src, payload, now),
            ETH_IPV4 | ETH_IPV6 => self.ip_in(i, src, payload.to_vec(), now),
            _ => {}
        }
    }

    // ---- ARP -------------------------------------------------------------

    fn arp_packet(
        &self,
        i: usize,
        op: u16,
        sender: Ipv4Addr,
        target_mac: Mac,
        target: Ipv4Addr,
    ) -> Vec<u8> {
        let mut a = vec![0, 1, 8, 0, 6, 4];
        a.extend_from_slice(&op.to_be_bytes());
        a.extend_from_slice(&self.macs[i]);
        a.extend_from_slice(&sender.octets());
        a.extend_from_slice(&target_mac);
        a.extend_from_slice(&target.octets());
        a
    }

    fn arp_in(&mut self, i: usize, src: Mac, a: &[u8], now: u64) {
        if a.len() < 28 || a[0..6] != [0, 1, 8, 0, 6, 4] {
            self.counters.malformed += 1;
            return;
        }
        let op = u16::from_be_bytes([a[6], a[7]]);
        let smac = mac_at(&a[8..14]);
        let sip = Ipv4Addr::new(a[14], a[15], a[16], a[17]);
        let tip = Ipv4Addr::new(a[24], a[25], a[26], a[27]);
        let t = IpAddr::V4(tip);
        let ours = self.cfg.ifaces[i].addresses.iter().any(|p| p.ip == t);
        // Learn a sender we are resolving or that is talking to us (not
        // every sender on the wire: the table would grow without bound).
        let s = IpAddr::V4(sip);
        if !sip.is_unspecified() && !multicast(&smac) && (ours || self.neigh.contains_key(&(i, s)))
        {
            self.learn(i, s, smac, now);
        }
        if op != 1 || sip == tip {
            return;
        }
        if ours || (self.proxies(i, &t) && sip != tip) {
            let reply = self.arp_packet(i, 2, tip, smac, sip);
            self.counters.arp_replies += 1;
            self.emit(i, src, None, ETH_ARP, &reply);
        }
    }

    fn learn(&mut self, i: usize, ip: IpAddr, mac: Mac, now: u64) {
        if self.neigh.len() >= NEIGH_MAX && !self.neigh.contains_key(&(i, ip)) {
            self.counters.table_full += 1;
            return;
        }
        let prev = self.neigh.insert(
            (i, ip),
            Neigh::Reachable {
                mac,
                until: now + NEIGH_REACHABLE_MS,
            },
        );
        if let Some(Neigh::Incomplete { queue, .. }) = prev {
            self.queued -= queue.len();
            let ethertype = if ip.is_ipv6() { ETH_IPV6 } else { ETH_IPV4 };
            for p in queue {
                self.emit(i, mac, None, ethertype, &p);
            }
        }
    }

    // ---- NDP -------------------------------------------------------------

    fn na_packet(
        &self,
        i: usize,
        target: Ipv6Addr,
        src: Ipv6Addr,
        dst: Ipv6Addr,
        solicited: bool,
    ) -> Vec<u8> {
        let own = self.cfg.ifaces[i]
            .addresses
            .iter()
            .any(|p| p.ip == IpAddr::V6(target));
        // Router; Solicited; Override only for our own addresses (RFC 4861 7.2.8).
        let flags = 0x80 | if solicited { 0x40 } else { 0 } | if own { 0x20 } else { 0 };
        let mut body = target.octets().to_vec();
        body.extend_from_slice(&[2, 1]);
        body.extend_from_slice(&self.macs[i]);
        let m = build::icmp(136, 0, [flags, 0, 0, 0], &body);
        build::ip(IpAddr::V6(src), IpAddr::V6(dst), 58, 255, &m)
    }

    fn nd_in(&mut self, i: usize, src: Mac, pkt: &[u8], info: &IpInfo, ty: u8, now: u64) {
        let l4 = &pkt[info.l4_offset..info.len];
        if info.ttl != 255 || l4.len() < 24 {
            return;
        }
        let mut target = [0u8; 16];
        target.copy_from_slice(&l4[8..24]);
        let target = Ipv6Addr::from(target);
        let mut lladdr = None;
        let mut o = &l4[24..];
        while o.len() >= 8 {
            let len = o[1] as usize * 8;
            if len == 0 || len > o.len() {
                break;
            }
            if (ty == 135 && o[0] == 1) || (ty == 136 && o[0] == 2) {
                lladdr = Some(mac_at(&o[2..8]));
            }
            o = &o[len..];
        }
        let IpAddr::V6(s) = info.src else { return };
        match ty {
            135 => {
                if !s.is_unspecified() {
                    if let Some(m) = lladdr {
                        self.learn(i, IpAddr::V6(s), m, now);
                    }
                }
                let t = IpAddr::V6(target);
                let ours = self.cfg.ifaces[i].addresses.iter().any(|p| p.ip == t);
                if ours || (self.proxies(i, &t) && info.src != t) {
                    let (dst, dmac) = if s.is_unspecified() {
                        let all = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
                        (all, v6_multicast_mac(&all))
                    } else {
                        (s, lladdr.unwrap_or(src))
                    };
                    let na = self.na_packet(i, target, target, dst, !s.is_unspecified());
                    self.counters.nd_replies += 1;
                    self.emit(i, dmac, None, ETH_IPV6, &na);
                }
            }
            136 => {
                let m = lladdr.unwrap_or(src);
                if self.neigh.contains_key(&(i, IpAddr::V6(target))) {
                    self.learn(i, IpAddr::V6(target), m, now);
                }
            }
            _ => {}
        }
    }

    /// Ask for `ip`'s link-layer address on interface `i`.
    fn solicit(&mut self, i: usize, ip: IpAddr) {
        match ip {
            IpAddr::V4(t) => {
                let Some(IpAddr::V4(s)) = self.source_for(i, false) else {
                    return;
                };
                let arp = self.arp_packet(i, 1, s, [0; 6], t);
                self.emit(i, BROADCAST, None, ETH_ARP, &arp);
            }
            IpAddr::V6(t) => {
                let Some(IpAddr::V6(s)) = self.source_for(i, true) else {
                    return;
                };
                let sn = solicited_node(&t);
                let mut body = t.octets().to_vec();
                body.extend_from_slice(&[1, 1]);
                body.extend_from_slice(&self.macs[i]);
                let m = build::icmp(135, 0, [0; 4], &body);
                let p = build::ip(IpAddr::V6(s), IpAddr::V6(sn), 58, 255, &m);
                self.emit(i, v6_multicast_mac(&sn), None, ETH_IPV6, &p);
            }
        }
    }

    // ---- IP --------------------------------------------------------------

    fn ip_in(&mut self, i: usize, src: Mac, mut pkt: Vec<u8>, now: u64) {
        let info = match parse_ip(&pkt) {
            Ok(x) => x,
            Err(_) => {
                self.counters.malformed += 1;
                return;
            }
        };
        pkt.truncate(info.len);
        if let L4::Icmp6 { ty, .. } = info.l4 {
            if (135..=136).contains(&ty) {
                self.nd_in(i, src, &pkt, &info, ty, now);
                return;
            }
            if (133..=134).contains(&ty) || (130..=132).contains(&ty) || ty == 143 {
                return; // router discovery and MLD: not for a router without RA
            }
        }
        let mut d = self.pf(&mut pkt, i, Direction::In, None, now);
        for g in std::mem::take(&mut d.generated) {
            self.send_local(g, now);
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
        let pkt = d.reassembled.unwrap_or(pkt);
        let Ok(info) = parse_ip(&pkt) else { return };
        // pf's routing options on the way in: `dup-to` sends a copy, and
        // `route-to` / `reply-to` forward by the given next hop whatever
        // the destination.
        let via = match route {
            Some(r) if r.dup => {
                self.dup_to(&r, &pkt, refrag, now);
                None
            }
            Some(r) => match self.hop_way(&r) {
                Some(w) => Some(w),
                None => {
                    self.counters.no_route += 1;
                    return;
                }
            },
            None => None,
        };
        if let Some(w) = via {
            self.forward(i, pkt, &info, refrag, Some(w), now);
            return;
        }
        if self.own_address(&info.dst).is_some() || (self.host.is_some() && is_loopback(&info.dst))
        {
            self.local_in(pkt, &info, now);
            return;
        }
        if is_multicast_or_broadcast(&info.dst) || self.is_directed_broadcast(&info.dst) {
            return;
        }
        self.forward(i, pkt, &info, refrag, None, now);
    }

    /// The interface and neighbour a routing option's next hop is reached
    /// by: the interface named with it, else the routing table's way to
    /// it (its gateway when it is not on a connected subnet).
    fn hop_way(&self, r: &palisade_filter::RouteTo) -> Option<(usize, IpAddr)> {
        match &r.iface {
            Some(name) => self
                .cfg
                .ifaces
                .iter()
                .position(|i| i.name == *name)
                .map(|e| (e, r.hop)),
            None => self.route(&r.hop),
        }
    }

    /// `dup-to`: a copy of the packet to the next hop, as it is (not
    /// filtered again, its TTL unchanged).
    fn dup_to(
        &mut self,
        r: &palisade_filter::RouteTo,
        pkt: &[u8],
        refrag: Option<palisade_filter::frag::FragInfo>,
        now: u64,
    ) {
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
                    Err(_) => self.counters.too_big += 1,
                }
            }
            None => self.counters.no_route += 1,
        }
    }

    /// pf `out` decided the packet leaves by `route`: the interface and
    /// neighbour it goes to instead. It is not filtered again: it was
    /// filtered (and translated) on the way out already (pf_route runs pf
    /// again only for what was decided on the way in, which `forward`
    /// filters `out` on its new interface anyway).
    fn reroute(&mut self, route: &palisade_filter::RouteTo) -> Option<(usize, IpAddr)> {
        let way = self.hop_way(route);
        if way.is_none() {
            self.counters.no_route += 1;
        }
        way
    }

    fn is_directed_broadcast(&self, ip: &IpAddr) -> bool {
        let IpAddr::V4(a) = ip else { return false };
        self.cfg
            .ifaces
            .iter()
            .flat_map(|i| i.addresses.iter())
            .any(|p| {
                p.ip.is_ipv4() && p.bits < 31 && {
                    let host = u32::MAX >> p.bits;
                    p.contains(ip) && u32::from(*a) & host == host
                }
            })
    }

    /// From the Linux stack through the host interface: the firewall's own
    /// traffic, routed and filtered `out` like any it sends.
    fn host_in(&mut self, ethertype: u16, payload: &[u8], now: u64) {
        if ethertype != ETH_IPV4 && ethertype != ETH_IPV6 {
            return;
        }
        let Ok(info) = parse_ip(payload) else {
            self.counters.malformed += 1;
            return;
        };
        if is_multicast_or_broadcast(&info.dst) {
            return;
        }
        self.counters.host_out += 1;
        self.send_local(payload[..info.len].to_vec(), now);
    }

    fn local_in(&mut self, pkt: Vec<u8>, info: &IpInfo, now: u64) {
        if let Some((port, mac)) = self.host {
            let ethertype = if info.is_v6() { ETH_IPV6 } else { ETH_IPV4 };
            let mut f = mac.to_vec();
            f.extend_from_slice(&HOST_PEER_MAC);
            f.extend_from_slice(&ethertype.to_be_bytes());
            f.extend_from_slice(&pkt);
            self.counters.host_in += 1;
            self.out.push((port, f));
            return;
        }
        let echo = match info.l4 {
            L4::Icmp { ty: 8, code: 0, .. } => Some(0u8),
            L4::Icmp6 {
                ty: 128, code: 0, ..
            } => Some(129u8),
            _ => None,
        };
        let (Some(reply_ty), None) = (echo, info.frag) else {
            self.counters.local_dropped += 1;
            return;
        };
        let l4 = &pkt[info.l4_offset..info.len];
        let m = build::icmp(reply_ty, 0, [l4[4], l4[5], l4[6], l4[7]], &l4[8..]);
        let proto = if info.is_v6() { 58 } else { 1 };
        self.counters.local_echo += 1;
        let reply = build::ip(info.dst, info.src, proto, 64, &m);
        self.send_local(reply, now);
    }

    /// Longest-prefix match over connected subnets and routes: the
    /// interface and next hop for `dst`. Connected subnets win ties.
    pub fn route(&self, dst: &IpAddr) -> Option<(usize, IpAddr)> {
        let mut best: Option<(u8, usize, IpAddr)> = None;
        for (ix, i) in self.cfg.ifaces.iter().enumerate() {
            if i.bridge.is_some() {
                continue;
            }
            for p in &i.addresses {
                if p.contains(dst) && best.is_none_or(|(b, _, _)| p.bits > b) {
                    best = Some((p.bits, ix, *dst));
                }
            }
        }
        for r in &self.cfg.routes {
            if !r.to.contains(dst) || best.is_some_and(|(b, _, _)| r.to.bits <= b) {
                continue;
            }
            let hop = match (r.via, r.iface) {
                (None, Some(i)) => Some((i, *dst)),
                (Some(gw), Some(i)) => Some((i, gw)),
                (Some(gw), None) => self.route_gateway(&gw).map(|i| (i, gw)),
                (None, None) => None,
            };
            if let Some((i, nh)) = hop {
                best = Some((r.to.bits, i, nh));
            }
        }
        best.map(|(_, i, nh)| (i, nh))
    }

    /// The interface through which gateway `gw` is reached directly.
    fn route_gateway(&self, gw: &IpAddr) -> Option<usize> {
        if let Some(i) = self.cfg.connected(gw) {
            return Some(i);
        }
        self.cfg
            .routes
            .iter()
            .filter(|r| r.via.is_none() && r.to.contains(gw))
            .max_by_key(|r| r.to.bits)
            .and_then(|r| r.iface)
    }

    fn mtu(&self, i: usize) -> usize {
        let ifc = &self.cfg.ifaces[i];
        let p = ifc
            .port
            .or_else(|| ifc.members.first().and_then(|m| self.cfg.ifaces[*m].port));
        p.map(|p| self.cfg.ports[p].mtu as usize).unwrap_or(1500)
    }

    /// Forward a packet that arrived on `i`: by the routing table, or by
    /// `via` (a routing option's interface and next hop).
    fn forward(
        &mut self,
        i: usize,
        mut pkt: Vec<u8>,
        info: &IpInfo,
        refrag: Option<palisade_filter::frag::FragInfo>,
        via: Option<(usize, IpAddr)>,
        now: u64,
    ) {
        if info.ttl <= 1 {
            self.counters.ttl_exceeded += 1;
            self.icmp_error(i, &pkt, now, Unreach::TimeExceeded);
            return;
        }
        let Some((e, nh)) = via.or_else(|| self.route(&info.dst)) else {
            self.counters.no_route += 1;
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
        let arrived = (pkt.len() > mtu && !can_fragment).then(|| pkt.clone());
        if info.is_v6() {
            pkt[7] -= 1;
        } else {
            let old = u16::from_be_bytes([pkt[8], pkt[9]]);
            pkt[8] -= 1;
            let new = u16::from_be_bytes([pkt[8], pkt[9]]);
            let c = update16(u16::from_be_bytes([pkt[10], pkt[11]]), old, new);
            pkt[10..12].copy_from_slice(&c.to_be_bytes());
        }
        let mut d = self.pf(&mut pkt, e, Direction::Out, Some(i), now);
        for g in std::mem::take(&mut d.generated) {
            self.send_local(g, now);
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
                Some((e2, nh2)) => (e2, nh2, self.mtu(e2)),
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
                self.counters.too_big += 1;
                let quote = arrived.unwrap_or(pkt);
                self.icmp_error(i, &quote, now, Unreach::TooBig(mtu as u16));
            }
        }
    }

    /// A packet the firewall itself sends: routed, filtered `out`.
    fn send_local(&mut self, mut pkt: Vec<u8>, now: u64) {
        let Ok(info) = parse_ip(&pkt) else { return };
        let Some((e, nh)) = self.route(&info.dst) else {
            self.counters.no_route += 1;
            return;
        };
        let mut d = self.pf(&mut pkt, e, Direction::Out, None, now);
        if !d.passed() || d.held {
            self.counters.blocked += u64::from(!d.held);
            return;
        }
        for g in std::mem::take(&mut d.generated) {
            self.send_local(g, now);
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
        match self.fit(pkt, mtu, refrag) {
            Ok(frags) => {
                for f in frags {
                    self.l3_out(e, nh, f, now);
                }
            }
            Err(_) => self.counters.too_big += 1,
        }
    }

    fn l3_out(&mut self, e: usize, nh: IpAddr, pkt: Vec<u8>, now: u64) {
        let ethertype = if nh.is_ipv6() { ETH_IPV6 } else { ETH_IPV4 };
        match self.neigh.get_mut(&(e, nh)) {
            Some(Neigh::Reachable { mac, until }) if *until > now => {
                let mac = *mac;
                self.emit(e, mac, None, ethertype, &pkt);
            }
            Some(Neigh::Incomplete { queue, .. }) => {
                if queue.len() < NEIGH_QUEUE && self.queued < NEIGH_QUEUE_TOTAL {
                    queue.push_back(pkt);
                    self.queued += 1;
                    self.counters.neigh_queued += 1;
                } else {
                    self.counters.neigh_dropped += 1;
                }
            }
            _ => {
                if self.queued >= NEIGH_QUEUE_TOTAL || self.neigh.len() >= NEIGH_MAX {
                    self.counters.neigh_dropped += 1;
                    return;
                }
                self.queued += 1;
                self.counters.neigh_queued += 1;
                self.neigh.insert(
                    (e, nh),
                    Neigh::Incomplete {
                        queue: VecDeque::from([pkt]),
                        tries: 1,
                        next: now + 1000,
                    },
                );
                self.solicit(e, nh);
            }
        }
    }

    /// Send an ICMP/ICMPv6 error about `pkt`, which arrived on interface `i`.
    fn icmp_error(&mut self, i: usize, pkt: &[u8], now: u64, kind: Unreach) {
        if let Some(e) = self.icmp_error_packet(pkt, now, kind, Some(i)) {
            self.send_local(e, now);
        }
    }

    /// The ICMP/ICMPv6 error about `pkt` (rate-limited): from the address
    /// of interface `i` (a router), or without one from the packet's
    /// destination (a bridge, as OpenBSD's bridge answers).
    fn icmp_error_packet(
        &mut self,
        pkt: &[u8],
        now: u64,
        kind: Unreach,
        i: Option<usize>,
    ) -> Option<Vec<u8>> {
        let info = parse_ip(pkt).ok()?;
        // Never about an ICMP error, a non-first fragment, or multicast.
        let is_err = match info.l4 {
            L4::Icmp { ty, .. } => palisade_wire::icmp_is_error(false, ty),
            L4::Icmp6 { ty, .. } => palisade_wire::icmp_is_error(true, ty),
            _ => false,
        };
        if is_err
            || info.frag.is_some_and(|f| f.offset > 0)
            || is_multicast_or_broadcast(&info.dst)
            || is_multicast_or_broadcast(&info.src)
            || info.src.is_unspecified()
        {
            return None;
        }
        let sec = now / 1000;
        if self.icmp_budget.0 != sec {
            self.icmp_budget = (sec, 0);
        }
        if self.icmp_budget.1 >= ICMP_ERRORS_PER_SEC {
            return None;
        }
        self.icmp_budget.1 += 1;
        let v6 = info.is_v6();
        let src = match i {
            Some(i) => self.source_for(i, v6)?,
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

#[derive(Clone, Copy)]
enum Unreach {
    TimeExceeded,
    Net,
    Host,
    TooBig(u16),
}

fn is_loopback(ip: &IpAddr) -> bool {
    ip.is_loopback()
}

fn is_multicast_or_broadcast(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_multicast(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_conf::host::HostModel;
    use palisade_conf::{parse_bytes, ParseOptions};
    use std::path::Path;
    use std::sync::Arc;

    const M0: Mac = [2, 0, 0, 0, 0, 0x10];
    const M1: Mac = [2, 0, 0, 0, 0, 0x11];
    const M2: Mac = [2, 0, 0, 0, 0, 0x12];
    const A: Mac = [2, 0, 0, 0, 0, 0xa];
    const B: Mac = [2, 0, 0, 0, 0, 0xb];

    fn dp(toml: &str, rules: &str) -> Dataplane {
        let cfg = Config::parse(Path::new("t.toml"), toml, &|_| true).unwrap();
        let host = HostModel {
            interfaces: cfg.host_interfaces(),
            ..Default::default()
        };
        let out = parse_bytes(
            "pf.conf",
            None,
            rules.as_bytes().to_vec(),
            &ParseOptions {
                host: host.clone(),
                ..Default::default()
            },
        );
        assert_eq!(out.errors, 0, "{:?}", out.stderr);
        let f = Filter::new(
            Arc::new(palisade_filter::Engine::new(&out.config, host)),
            &out.config,
            1,
        );
        Dataplane::new(cfg, &[M0, M1, M2], f)
    }

    fn eth(dst: Mac, src: Mac, vlan: Option<u16>, ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        if let Some(v) = vlan {
            f.extend_from_slice(&[0x81, 0, (v >> 8) as u8, v as u8]);
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    fn arp(op: u16, smac: Mac, sip: &str, tip: &str) -> Vec<u8> {
        let mut a = vec![0, 1, 8, 0, 6, 4];
        a.extend_from_slice(&op.to_be_bytes());
        a.extend_from_slice(&smac);
        a.extend_from_slice(&sip.parse::<Ipv4Addr>().unwrap().octets());
        a.extend_from_slice(&[0; 6]);
        a.extend_from_slice(&tip.parse::<Ipv4Addr>().unwrap().octets());
        a
    }

    fn udp(src: &str, dst: &str, ttl: u8) -> Vec<u8> {
        build::ip(
            src.parse().unwrap(),
            dst.parse().unwrap(),
            17,
            ttl,
            &build::udp(1000, 53, b"q"),
        )
    }

    const BRIDGE: &str = r#"
pf = "pf.conf"
[[port]]
name = "eth0"
[[port]]
name = "eth1"
[[port]]
name = "eth2"
[[interface]]
name = "wan"
port = "eth0"
[[interface]]
name = "dmz"
port = "eth1"
[[interface]]
name = "lan"
port = "eth2"
[[bridge]]
name = "bridge0"
members = ["wan", "dmz", "lan"]
"#;

    fn ports(o: &[Out]) -> Vec<usize> {
        o.iter().map(|x| x.0).collect()
    }

    /// A datagram as the sender fragmented it (`size` data bytes each).
    fn fragments(big: &[u8], size: usize) -> Vec<Vec<u8>> {
        if big[0] >> 4 == 6 {
            build::fragment_v6(big, 0x1234, size + 48, size).unwrap()
        } else {
            let mut p = big.to_vec();
            p[6] = 0; // DF off, as a sender that fragments sends it
            p[10] = 0;
            p[11] = 0;
            let c = palisade_wire::checksum::checksum(&p[..20]);
            p[10..12].copy_from_slice(&c.to_be_bytes());
            build::fragment_v4(&p, size + 20).unwrap()
        }
    }

    #[test]
    fn bridged_datagrams_larger_than_the_mtu_are_fragmented_again() {
        // pf reassembles on the way in; what leaves must fit the member's
        // MTU (1500): IPv4 fragmented to it, IPv6 as the sender did.
        for (a, b, size) in [
            ("198.18.0.1", "198.18.0.2", 1480),
            ("2001:db8::1", "2001:db8::2", 1232),
        ] {
            let mut d = dp(BRIDGE, "pass all\n");
            d.input(1, &eth(A, B, None, ETH_ARP, &[0u8; 28]), 0);
            let data: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
            let big = build::ip(
                a.parse().unwrap(),
                b.parse().unwrap(),
                17,
                64,
                &build::udp(9, 9, &data),
            );
            let et = if big[0] >> 4 == 6 { ETH_IPV6 } else { ETH_IPV4 };
            let mut out = Vec::new();
            for f in fragments(&big, size) {
                out.extend(d.input(0, &eth(B, A, None, et, &f), 1));
            }
            assert!(out.len() >= 3, "{a}: {} frames", out.len());
            let mut joined = Vec::new();
            for (port, f) in &out {
                assert_eq!(*port, 1);
                assert!(f.len() <= 1514, "{a}: a {}-byte frame", f.len());
                let ip = &f[14..];
                let info = parse_ip(ip).unwrap();
                let fr = info.frag.expect("a fragment");
                assert_eq!(fr.offset as usize, joined.len());
                joined.extend_from_slice(&ip[info.l4_offset..info.len]);
            }
            let hl = if a.contains(':') { 40 } else { 20 };
            assert_eq!(joined, big[hl..], "{a}");
            assert_eq!(d.counters.fragmented, 1);
        }
    }

    #[test]
    fn bridged_df_datagrams_too_big_get_the_icmp_error() {
        // IPv4 with DF larger than the member's MTU (a jumbo port): pf
        // passes it, the bridge cannot send it, and answers as a bridge
        // does, from the destination's address back on the way it came.
        let toml = BRIDGE.replace("name = \"eth0\"\n", "name = \"eth0\"\nmtu = 9000\n");
        let mut d = dp(&toml, "pass all\n");
        d.input(1, &eth(A, B, None, ETH_ARP, &[0u8; 28]), 0);
        let big = build::ip(
            "198.18.0.1".parse().unwrap(),
            "198.18.0.2".parse().unwrap(),
            17,
            64,
            &build::udp(9, 9, &[0u8; 3000]),
        );
        let o = d.input(0, &eth(B, A, None, ETH_IPV4, &big), 1);
        assert_eq!(o.len(), 1, "{o:?}");
        let (port, f) = &o[0];
        assert_eq!(*port, 0);
        assert_eq!((&f[0..6], &f[6..12]), (&A[..], &B[..]));
        let info = parse_ip(&f[14..]).unwrap();
        assert_eq!(info.src, "198.18.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(info.dst, "198.18.0.1".parse::<IpAddr>().unwrap());
        let icmp = &f[14 + info.l4_offset..];
        assert_eq!((icmp[0], icmp[1]), (3, 4));
        assert_eq!(u16::from_be_bytes([icmp[6], icmp[7]]), 1500);
        assert!(build::checksums_ok(&f[14..]));
        assert_eq!(d.counters.too_big, 1);
    }

    #[test]
    fn bridge_learns_floods_and_filters_per_member() {
        // if-bound: with floating states (the default) the state made by the
        // copy sent out on dmz would also pass the flooded copy on lan.
        let mut d = dp(
            BRIDGE,
            "set state-policy if-bound\nblock all\npass in on wan proto udp\npass out on dmz proto udp\n",
        );
        // ARP broadcast from A on wan floods to both others, unfiltered.
        let o = d.input(0, &eth(BROADCAST, A, None, ETH_ARP, &[0u8; 28]), 0);
        assert_eq!(ports(&o), [1, 2]);
        // B answers from dmz: now both are known.
        let o = d.input(1, &eth(A, B, None, ETH_ARP, &[0u8; 28]), 1);
        assert_eq!(ports(&o), [0]);
        // UDP from A to B: passes in on wan and out on dmz, frame unchanged.
        let f = eth(B, A, None, ETH_IPV4, &udp("198.18.0.1", "198.18.0.2", 64));
        let o = d.input(0, &f, 2);
        assert_eq!(ports(&o), [1]);
        assert_eq!(
            o[0].1[..f.len()],
            f[..],
            "padded to 60 bytes, else unchanged"
        );
        assert_eq!(o[0].1.len(), 60);
        // TCP is blocked in on wan.
        let t = build::ip(
            "198.18.0.1".parse().unwrap(),
            "198.18.0.2".parse().unwrap(),
            6,
            64,
            &build::tcp(1, 25, 1, 0, 2, 100, &[], b""),
        );
        assert!(d.input(0, &eth(B, A, None, ETH_IPV4, &t), 3).is_empty());
        assert_eq!(d.counters.blocked, 1);
        // Aging: after 300 s B is unknown again: flooded, and lan blocks out.
        let o = d.input(0, &f, 400_000);
        assert_eq!(ports(&o), [1]);
        assert_eq!(d.counters.blocked, 2);
    }

    const ROUTER: &str = r#"
pf = "pf.conf"
[[port]]
name = "eth0"
mtu = 9000
[[port]]
name = "eth1"
[[port]]
name = "eth2"
[[interface]]
name = "wan"
port = "eth0"
addresses = ["203.0.113.2/24", "2001:db8:ff::2/64"]
proxy-arp = ["203.0.113.16/28"]
[[interface]]
name = "vlan7"
port = "eth1"
vlan = 7
addresses = ["192.0.2.1/24", "2001:db8:1::1/64"]
[[route]]
to = "203.0.113.16/28"
interface = "vlan7"
[[route]]
to = "198.51.100.0/24"
via = "192.0.2.254"
[[route]]
to = "default"
via = "203.0.113.1"
"#;

    const UPLINKS: &str = r#"
pf = "pf.conf"
[[port]]
name = "eth0"
[[port]]
name = "eth1"
[[port]]
name = "eth2"
[[interface]]
name = "wan1"
port = "eth0"
addresses = ["192.0.2.2/24", "2001:db8:1::2/64"]
[[interface]]
name = "wan2"
port = "eth1"
addresses = ["198.51.100.2/24", "2001:db8:2::2/64"]
[[interface]]
name = "lan"
port = "eth2"
addresses = ["198.18.0.1/24", "2001:db8:3::1/64"]
[[route]]
to = "default"
via = "192.0.2.1"
[[route]]
to = "::/0"
via = "2001:db8:1::1"
"#;

    /// The ARP request `o` holds for `ip` on port `port`, answered from B.
    fn answer_arp(d: &mut Dataplane, port: usize, ip: &str, our: Mac, now: u64) -> Vec<Out> {
        let a = arp(2, B, ip, "0.0.0.0");
        d.input(port, &eth(our, B, None, ETH_ARP, &a), now)
    }

    #[test]
    fn route_to_on_the_way_out_keeps_the_translation() {
        // pf out on wan1 translates and sends by wan2: the packet leaves
        // by wan2, translated, and is not filtered a second time (which
        // found no state for the translated packet and failed to insert
        // one with the same key).
        let mut d = dp(
            UPLINKS,
            "block all
pass in on lan
\
             pass out on wan1 from 198.18.0.0/24 route-to (wan2 198.51.100.1) nat-to 198.51.100.2\n",
        );
        let p = udp("198.18.0.5", "203.0.113.9", 64);
        let o = d.input(2, &eth(M2, A, None, ETH_IPV4, &p), 0);
        assert_eq!(ports(&o), [1], "ARP for the second gateway: {o:?}");
        let o = answer_arp(&mut d, 1, "198.51.100.1", M1, 1);
        assert_eq!(ports(&o), [1], "{o:?}");
        let ip = parse_ip(&o[0].1[14..]).unwrap();
        assert_eq!(ip.src, "198.51.100.2".parse::<IpAddr>().unwrap());
        assert_eq!(&o[0].1[0..6], &B[..]);
        assert_eq!(d.filter.counters.reasons[Reason::StateInsert as usize], 0);
    }

    #[test]
    fn ipv6_reassembled_leaves_as_it_came_whatever_the_mtu() {
        // 1,400 bytes sent as 1,232 + 168 (a 1,280 path): pf reassembles,
        // and the datagram leaves in fragments of the same size although
        // 1,500 would take it whole (pf_refragment6).
        let mut d = dp(UPLINKS, "pass\n");
        let data: Vec<u8> = (0..1392u32).map(|i| i as u8).collect();
        let big = build::ip(
            "2001:db8:3::5".parse().unwrap(),
            "2001:db8:1::9".parse().unwrap(),
            17,
            64,
            &build::udp(9, 9, &data),
        );
        assert_eq!(big.len(), 1440);
        let mut o = Vec::new();
        for f in fragments(&big, 1232) {
            o.extend(d.input(2, &eth(M2, A, None, ETH_IPV6, &f), 0));
        }
        // Neighbour discovery for 2001:db8:1::9 on wan1 first.
        assert!(!o.is_empty());
        let na = {
            let target: Ipv6Addr = "2001:db8:1::9".parse().unwrap();
            let mut m = vec![136u8, 0, 0, 0, 0x60, 0, 0, 0];
            m.extend_from_slice(&target.octets());
            m.extend_from_slice(&[2, 1]);
            m.extend_from_slice(&B);
            let mut p = build::ip(
                "2001:db8:1::9".parse().unwrap(),
                "2001:db8:1::2".parse().unwrap(),
                58,
                255,
                &m,
            );
            palisade_wire::build::complete_l4_checksum(&mut p);
            p
        };
        let o = d.input(0, &eth(M0, B, None, ETH_IPV6, &na), 1);
        let frames: Vec<&Vec<u8>> = o.iter().filter(|x| x.0 == 0).map(|x| &x.1).collect();
        assert_eq!(frames.len(), 2, "{o:?}");
        for f in &frames {
            let info = parse_ip(&f[14..]).unwrap();
            assert!(info.frag.is_some());
            assert!(f.len() - 14 <= 1280, "{}", f.len());
        }
    }

    #[test]
    fn routes_longest_prefix() {
        let d = dp(ROUTER, "pass\n");
        let r = |s: &str| {
            d.route(&s.parse().unwrap())
                .map(|(i, nh)| (d.cfg.ifaces[i].name.clone(), nh.to_string()))
        };
        assert_eq!(r("203.0.113.5"), Some(("wan".into(), "203.0.113.5".into())));
        assert_eq!(
            r("203.0.113.17"),
            Some(("vlan7".into(), "203.0.113.17".into()))
        );
        assert_eq!(
            r("198.51.100.9"),
            Some(("vlan7".into(), "192.0.2.254".into()))
        );
        assert_eq!(r("8.8.8.8"), Some(("wan".into(), "203.0.113.1".into())));
        assert_eq!(
            r("2001:db8:1::5"),
            Some(("vlan7".into(), "2001:db8:1::5".into()))
        );
        assert_eq!(r("2001:db8:2::5"), None, "no IPv6 default route");
    }

    #[test]
    fn arp_answers_own_and_proxied_only() {
        let mut d = dp(ROUTER, "pass\n");
        for (tip, answered) in [
            ("203.0.113.2", true),
            ("203.0.113.20", true),
            ("203.0.113.99", false),
        ] {
            let o = d.input(
                0,
                &eth(BROADCAST, A, None, ETH_ARP, &arp(1, A, "203.0.113.1", tip)),
                0,
            );
            assert_eq!(o.len(), usize::from(answered), "{tip}");
            if answered {
                let f = &o[0].1;
                assert_eq!(&f[0..6], &A);
                assert_eq!(&f[6..12], &M0);
                assert_eq!(&f[22..28], &M0, "sender hardware address");
                assert_eq!(&f[28..32], &tip.parse::<Ipv4Addr>().unwrap().octets());
            }
        }
        // On the VLAN: tagged request, tagged answer; untagged is not ours.
        let req = arp(1, B, "192.0.2.10", "192.0.2.1");
        assert!(d
            .input(1, &eth(BROADCAST, B, None, ETH_ARP, &req), 0)
            .is_empty());
        assert_eq!(d.counters.unknown_vlan, 1);
        let o = d.input(1, &eth(BROADCAST, B, Some(7), ETH_ARP, &req), 0);
        assert_eq!(o.len(), 1);
        assert_eq!(&o[0].1[12..16], &[0x81, 0, 0, 7]);
    }

    #[test]
    fn forwards_after_resolution_with_ttl_and_errors() {
        let mut d = dp(ROUTER, "block all\npass inet proto icmp\npass proto udp\n");
        // From upstream to a VM on the VLAN: first an ARP request there.
        let p = udp("198.18.0.9", "203.0.113.17", 64);
        let o = d.input(0, &eth(M0, A, None, ETH_IPV4, &p), 0);
        assert_eq!(o.len(), 1);
        assert_eq!(&o[0].1[0..6], &BROADCAST);
        assert_eq!(&o[0].1[16..18], &ETH_ARP.to_be_bytes());
        // The VM answers: the queued packet leaves, tagged, TTL 63, valid sum.
        let o = d.input(
            1,
            &eth(
                M1,
                B,
                Some(7),
                ETH_ARP,
                &arp(2, B, "203.0.113.17", "192.0.2.1"),
            ),
            10,
        );
        assert_eq!(o.len(), 1);
        let f = &o[0].1;
        assert_eq!(
            (o[0].0, &f[0..6], &f[12..16]),
            (1, &B[..], &[0x81, 0, 0, 7][..])
        );
        let ip = &f[18..18 + p.len()];
        assert_eq!(ip[8], 63);
        assert!(build::checksums_ok(ip));
        // TTL 1: time exceeded back to the sender (through the default route,
        // whose gateway is then resolved).
        let o = d.input(
            0,
            &eth(M0, A, None, ETH_IPV4, &udp("198.18.0.9", "203.0.113.17", 1)),
            20,
        );
        assert_eq!(d.counters.ttl_exceeded, 1);
        assert_eq!(o.len(), 1, "ARP for the gateway");
        let o = d.input(
            0,
            &eth(
                M0,
                A,
                None,
                ETH_ARP,
                &arp(2, A, "203.0.113.1", "203.0.113.2"),
            ),
            30,
        );
        assert_eq!(o.len(), 1);
        let icmp = &o[0].1[14..];
        let info = parse_ip(icmp).unwrap();
        assert_eq!(info.src.to_string(), "203.0.113.2");
        assert_eq!(info.dst.to_string(), "198.18.0.9");
        assert!(matches!(
            info.l4,
            L4::Icmp {
                ty: 11,
                code: 0,
                ..
            }
        ));
        assert!(build::checksums_ok(icmp));
        // Unresolvable neighbour: three requests, then host unreachable.
        let p = udp("198.18.0.9", "203.0.113.18", 64);
        assert_eq!(d.input(0, &eth(M0, A, None, ETH_IPV4, &p), 100).len(), 1);
        assert_eq!(d.tick(1200).len(), 1);
        assert_eq!(d.tick(2300).len(), 1);
        let o = d.tick(3400);
        assert_eq!(d.counters.neigh_dropped, 1);
        let info = parse_ip(&o[0].1[14..]).unwrap();
        assert!(matches!(info.l4, L4::Icmp { ty: 3, code: 1, .. }));
        // Too big for the way out (wan takes jumbo frames, the VLAN does
        // not), DF set: fragmentation needed, with the MTU.
        let big = build::ip(
            "198.18.0.9".parse().unwrap(),
            "203.0.113.17".parse().unwrap(),
            17,
            64,
            &build::udp(1000, 53, &[0u8; 1600]),
        );
        let o = d.input(0, &eth(M0, A, None, ETH_IPV4, &big), 4000);
        let info = parse_ip(&o[0].1[14..]).unwrap();
        assert!(matches!(info.l4, L4::Icmp { ty: 3, code: 4, .. }));
        assert_eq!(&o[0].1[14 + 26..14 + 28], &1500u16.to_be_bytes());
        // Without DF: fragmented on the way out, tagged, each valid.
        let mut nodf = big.clone();
        nodf[6] = 0;
        nodf[10] = 0;
        nodf[11] = 0;
        let c = palisade_wire::checksum::checksum(&nodf[..20]);
        nodf[10..12].copy_from_slice(&c.to_be_bytes());
        let o = d.input(0, &eth(M0, A, None, ETH_IPV4, &nodf), 4100);
        assert_eq!(ports(&o), [1, 1]);
        assert_eq!(d.counters.fragmented, 1);
        for (_, f) in &o {
            assert!(f.len() <= 18 + 1500);
            let info = parse_ip(&f[18..]).unwrap();
            assert!(info.frag.is_some());
        }
        // Blocked by pf: TCP is not passed.
        let t = build::ip(
            "198.18.0.9".parse().unwrap(),
            "203.0.113.17".parse().unwrap(),
            6,
            64,
            &build::tcp(1, 25, 1, 0, 2, 100, &[], b""),
        );
        assert!(d.input(0, &eth(M0, A, None, ETH_IPV4, &t), 5000).is_empty());
        assert_eq!(d.counters.blocked, 1);
    }

    #[test]
    fn ndp_answers_and_resolves() {
        let mut d = dp(ROUTER, "pass\n");
        // NS from a host on the VLAN for our address: NA back, tagged.
        let target: Ipv6Addr = "2001:db8:1::1".parse().unwrap();
        let src: Ipv6Addr = "2001:db8:1::10".parse().unwrap();
        let sn = solicited_node(&target);
        let mut body = target.octets().to_vec();
        body.extend_from_slice(&[1, 1]);
        body.extend_from_slice(&B);
        let ns = build::ip(
            IpAddr::V6(src),
            IpAddr::V6(sn),
            58,
            255,
            &build::icmp(135, 0, [0; 4], &body),
        );
        let o = d.input(1, &eth(v6_multicast_mac(&sn), B, Some(7), ETH_IPV6, &ns), 0);
        assert_eq!(o.len(), 1);
        let f = &o[0].1;
        assert_eq!(&f[0..6], &B);
        let info = parse_ip(&f[18..]).unwrap();
        assert!(matches!(info.l4, L4::Icmp6 { ty: 136, .. }));
        assert!(build::checksums_ok(&f[18..]));
        assert_eq!(f[18 + 40 + 4] & 0xe0, 0xe0, "router, solicited, override");
        // Hop limit other than 255: ignored (RFC 4861 7.1.1).
        let mut bad = ns.clone();
        bad[7] = 64;
        assert!(d
            .input(
                1,
                &eth(v6_multicast_mac(&sn), B, Some(7), ETH_IPV6, &bad),
                0
            )
            .is_empty());
        // Forwarding to that host now needs no resolution (learnt from the NS).
        let p = build::ip(
            "2001:db8:ff::9".parse().unwrap(),
            IpAddr::V6(src),
            17,
            64,
            &build::udp(1, 2, b"x"),
        );
        let o = d.input(0, &eth(M0, A, None, ETH_IPV6, &p), 1);
        assert_eq!(o.len(), 1);
        assert_eq!(&o[0].1[0..6], &B);
        assert_eq!(o[0].1[18 + 7], 63, "hop limit decremented");
    }

    const S1: &str = include_str!("../../../examples/s1/palisade.toml");

    #[test]
    fn routed_through_bridge_with_nat() {
        let mut d = dp(
            S1,
            "block all\npass inet proto icmp\nmatch out on bridge0 from 198.18.1.0/24 nat-to (bridge0)\npass in on lan\npass out on bridge0\n",
        );
        // The upstream router asks for the firewall's address on the bridge.
        let o = d.input(
            0,
            &eth(
                BROADCAST,
                A,
                None,
                ETH_ARP,
                &arp(1, A, "203.0.113.1", "198.51.100.7"),
            ),
            0,
        );
        assert_eq!(ports(&o), [0, 1], "answered on wan, flooded to dmz");
        // Ping from the LAN, hidden behind 198.51.100.7.
        let echo = build::ip(
            "198.18.1.10".parse().unwrap(),
            "203.0.113.1".parse().unwrap(),
            1,
            64,
            &build::icmp(8, 0, [0, 7, 0, 1], b"ping"),
        );
        let o = d.input(2, &eth(M2, B, None, ETH_IPV4, &echo), 1);
        assert_eq!(ports(&o), [0], "{:?}", d.counters);
        assert_eq!(&o[0].1[0..6], &A);
        let out = parse_ip(&o[0].1[14..]).unwrap();
        assert_eq!(out.src.to_string(), "198.51.100.7");
        // The reply comes back to the bridge's MAC and reaches the LAN host.
        let L4::Icmp { id, .. } = out.l4 else {
            panic!()
        };
        let reply = build::ip(
            "203.0.113.1".parse().unwrap(),
            "198.51.100.7".parse().unwrap(),
            1,
            64,
            &build::icmp(0, 0, [(id >> 8) as u8, id as u8, 0, 1], b"ping"),
        );
        let o = d.input(0, &eth(M0, A, None, ETH_IPV4, &reply), 2);
        assert_eq!(d.counters.blocked, 0, "{:?}", d.counters);
        assert_eq!(ports(&o), [2], "{:?}", d.counters);
    }

    #[test]
    fn host_interface_carries_local_traffic_through_pf() {
        let mut d = dp(
            ROUTER,
            "block all\npass in on wan proto tcp to (wan) port 22\npass out on wan proto tcp\n",
        );
        const TAP: Mac = [2, 0, 0, 0, 0, 0x77];
        d.set_host(3, TAP);
        let syn = |port: u16| {
            build::ip(
                "203.0.113.1".parse().unwrap(),
                "203.0.113.2".parse().unwrap(),
                6,
                64,
                &build::tcp(40000, port, 1, 0, 2, 1000, &[], b""),
            )
        };
        // ssh to the firewall: handed to the Linux stack, untouched.
        let o = d.input(0, &eth(M0, A, None, ETH_IPV4, &syn(22)), 0);
        assert_eq!(ports(&o), [3]);
        assert_eq!(&o[0].1[0..6], &TAP);
        assert_eq!(&o[0].1[14..], &syn(22)[..]);
        // telnet: pf blocks it before the stack sees it.
        assert!(d
            .input(0, &eth(M0, A, None, ETH_IPV4, &syn(23)), 0)
            .is_empty());
        // The stack's answer comes back through the TAP and leaves on wan
        // (the sender's MAC is known from the neighbour table after ARP).
        d.input(
            0,
            &eth(
                BROADCAST,
                A,
                None,
                ETH_ARP,
                &arp(1, A, "203.0.113.1", "203.0.113.2"),
            ),
            0,
        );
        let synack = build::ip(
            "203.0.113.2".parse().unwrap(),
            "203.0.113.1".parse().unwrap(),
            6,
            64,
            &build::tcp(22, 40000, 9, 2, 0x12, 1000, &[], b""),
        );
        let o = d.input(3, &eth(HOST_PEER_MAC, TAP, None, ETH_IPV4, &synack), 1);
        assert_eq!(ports(&o), [0]);
        assert_eq!(&o[0].1[0..6], &A);
        assert_eq!(d.counters.host_out, 1);
    }

    #[test]
    fn tables_are_bounded() {
        let mut d = dp(BRIDGE, "pass\n");
        let n = FDB_MAX + 100;
        for i in 0..n {
            let b = (i as u32).to_be_bytes();
            let src = [2, 0xee, b[0], b[1], b[2], b[3]];
            d.input(0, &eth(BROADCAST, src, None, ETH_ARP, &[0u8; 28]), 0);
        }
        assert_eq!(d.counters.table_full, 100);
        assert_eq!(d.fdb.values().map(|t| t.len()).sum::<usize>(), FDB_MAX);
    }

    #[test]
    fn malformed_frames_are_counted_not_fatal() {
        let mut d = dp(ROUTER, "pass\n");
        for f in [
            vec![],
            vec![0u8; 10],
            eth(M0, A, None, ETH_IPV4, &[0x45, 0, 0]),
            eth(M0, A, None, ETH_ARP, &[0, 1]),
            eth(M0, A, None, ETH_IPV6, &[0x60; 39]),
        ] {
            assert!(d.input(0, &f, 0).is_empty());
        }
        assert_eq!(d.counters.malformed, 5);
    }
}
