//! The data plane: frames in from ports, frames out to ports, every IP
//! packet filtered by pf. `Dataplane` owns the rooms below and routes a
//! frame through them; it does no I/O itself (the daemon feeds it from
//! AF_PACKET rings), reads no clock and no randomness (both passed in),
//! so it is tested on frames in memory and fuzzed whole. docs/dataplane.md
//! draws a frame's way; docs/design-net.md says where pf runs.
//!
//! - `demux`: port + 802.1Q tag -> logical interface; TCP super-packets
//!   segmented.
//! - `offload`: TCP super-packets decided whole when that is exact.
//! - `local`: which MACs and addresses are ours (own, virtual, proxied).
//! - `bridge`: MAC learning and bridged frames.
//! - `router`: routed IP: pf, local delivery, forwarding.
//! - `neigh`: ARP/NDP cache, resolution queue, answers, announcements.
//! - `icmp_error`: ICMP errors and their rate limit.
//! - `host`: the host interface (TAP) and local delivery.
//! - `control`: punt to and inject from the control plane, link state.
//! - `pflog`: pflog records waiting to be written.
//! - `drop`: why a frame was dropped, counted.
//!
//! This file owns the wiring (`input`, `tick`, `start`), sending a frame
//! out of an interface (`emit`), the call into pf, the counters and the
//! seeded random source. It owns no table of its own.

mod adverts;
mod bridge;
mod control;
mod demux;
mod drop;
mod fast;
mod host;
mod icmp_error;
mod local;
mod neigh;
mod offload;
pub mod pflog;
mod router;
pub use router::proxy_warnings;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_offload;
#[cfg(test)]
mod tests_rooms;

use std::net::IpAddr;
use std::sync::Arc;

use palisade_conf::ir::Direction;
use palisade_filter::Filter;
use palisade_wire::ethernet::{is_multicast, EtherType, EthernetRepr, VlanTag};
use palisade_wire::{parse_ip, IpInfo};

use crate::config::Config;

pub use crate::afpacket::Gso;
pub use control::{ControlError, LinkEvent, Punted};
pub use drop::{DropCounts, DropReason};
pub use local::VirtualMacError;
pub use offload::{InPlace, OUT_VNET};
pub use palisade_wire::ethernet::{Mac, BROADCAST};

/// Counters of what the data plane did. The drops are in `drops`, by
/// reason; the older fields that count a kind of drop (`malformed`,
/// `unknown_vlan`, `no_route`, `ttl_exceeded`, `too_big`,
/// `neigh_dropped`, `local_dropped`) keep counting it, for the metrics
/// and dashboards that read them.
#[derive(Default, Debug, Clone)]
pub struct Counters {
    pub frames_in: u64,
    pub frames_out: u64,
    /// TCP super-packets (segmentation offload) segmented on arrival.
    pub segmented: u64,
    /// TCP super-packets that passed pf `in` whole (`input_offload`).
    pub offload_whole: u64,
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
    /// Requests sent to a neighbour in use near its end (to renew it).
    pub neigh_probes: u64,
    /// Neighbours given up to make room in a full table (past their time,
    /// or never sent to since learnt).
    pub neigh_evicted: u64,
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
    /// Packets handed to the control plane, and frames it sent.
    pub punted: u64,
    pub injected: u64,
    /// Router advertisements sent, and solicitations answered.
    pub ra_sent: u64,
    pub rs_received: u64,
    /// Every drop, by reason.
    pub drops: DropCounts,
}

impl Counters {
    /// Every counter by the name `show info`, the metrics and the stop's
    /// log line use, in that order.
    pub fn named(&self) -> [(&'static str, u64); 32] {
        [
            ("frames_in", self.frames_in),
            ("frames_out", self.frames_out),
            ("segmented", self.segmented),
            ("offload_whole", self.offload_whole),
            ("unknown_vlan", self.unknown_vlan),
            ("malformed", self.malformed),
            ("bridged", self.bridged),
            ("flooded", self.flooded),
            ("routed", self.routed),
            ("blocked", self.blocked),
            ("no_route", self.no_route),
            ("ttl_exceeded", self.ttl_exceeded),
            ("too_big", self.too_big),
            ("fragmented", self.fragmented),
            ("duplicated", self.duplicated),
            ("arp_replies", self.arp_replies),
            ("nd_replies", self.nd_replies),
            ("neigh_queued", self.neigh_queued),
            ("neigh_dropped", self.neigh_dropped),
            ("neigh_probes", self.neigh_probes),
            ("neigh_evicted", self.neigh_evicted),
            ("local_echo", self.local_echo),
            ("local_dropped", self.local_dropped),
            ("host_in", self.host_in),
            ("host_out", self.host_out),
            ("icmp_errors", self.icmp_errors),
            ("table_full", self.table_full),
            ("log_dropped", self.log_dropped),
            ("punted", self.punted),
            ("injected", self.injected),
            ("ra_sent", self.ra_sent),
            ("rs_received", self.rs_received),
        ]
    }

    /// Frames the kernel dropped before we saw them (full receive rings).
    pub fn ring_dropped(&mut self, n: u64) {
        self.drops.add_n(DropReason::RingFull, n);
    }

    /// Count a drop.
    pub(crate) fn dropped(&mut self, r: DropReason) {
        self.drops.add(r);
        match r {
            DropReason::Malformed => self.malformed += 1,
            DropReason::UnknownVlan => self.unknown_vlan += 1,
            DropReason::NoRoute => self.no_route += 1,
            DropReason::TtlExceeded => self.ttl_exceeded += 1,
            DropReason::TooBig => self.too_big += 1,
            DropReason::NeighQueueFull | DropReason::NeighUnresolved => self.neigh_dropped += 1,
            DropReason::LocalUnserved => self.local_dropped += 1,
            _ => {}
        }
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

/// One frame to send: port index and bytes.
pub type Out = (usize, Vec<u8>);

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

/// Randomness for pf (translation ports, `probability`, modulated and
/// synproxy sequence numbers): splitmix64 over the caller's seed. Without
/// a fresh seed at each start translation ports would repeat after a
/// restart, and collide with connections the servers still hold.
struct Rng(u64);

impl Rng {
    /// What `next_u32` will return, without taking it.
    fn peek_u32(&self) -> u32 {
        Rng(self.0).next_u32()
    }

    fn next_u32(&mut self) -> u32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) as u32
    }
}

/// The seed `Dataplane::new` uses: fixed, for tests and fuzzing. The
/// daemon passes one from the kernel to `with_seed`.
const TEST_SEED: u64 = 0x5eed_5eed_5eed_5eed;

/// A neighbour as `palisade show neighbors` lists it (OpenBSD's `arp -an`
/// and `ndp -an`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighRow {
    pub iface: String,
    pub ip: IpAddr,
    /// None: being resolved (requests sent, no answer yet).
    pub mac: Option<Mac>,
    /// Resolved: ms it stays valid without an answer to a new request;
    /// being resolved: ms to the next request.
    pub expires_ms: u64,
    /// Packets waiting for the resolution.
    pub queued: usize,
    /// Being resolved: requests still to send (0: the last one is out,
    /// and at `expires_ms` the resolution is given up).
    pub tries_left: u32,
}

/// A learnt address of a bridge, as `palisade show fdb` lists it
/// (OpenBSD's `ifconfig bridge0 addr`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FdbRow {
    pub bridge: String,
    pub mac: Mac,
    /// The member interface it was last seen on.
    pub member: String,
    /// ms since a frame from it was last seen.
    pub age_ms: u64,
    /// ms until it is forgotten (frames to it then flood) unless seen again.
    pub expires_ms: u64,
    /// A static entry (palisade.toml): never aged nor moved.
    pub fixed: bool,
}

/// A route as `palisade show routes` lists it (`netstat -rn`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteRow {
    /// The network, as address/bits with the host part cleared.
    pub to: String,
    /// The gateway; None for a connected subnet or an interface route.
    pub via: Option<IpAddr>,
    /// The interface the route leaves by; None when its gateway is on no
    /// connected subnet nor interface route (the route is not used).
    pub iface: Option<String>,
    /// A connected subnet (an address's, a CARP address's on its parent)
    /// rather than a `[[route]]` of palisade.toml.
    pub connected: bool,
}

pub struct Dataplane {
    pub cfg: Config,
    pub filter: Filter,
    pub counters: Counters,
    /// Per logical interface: what pf saw, as `pfctl -vvsI` counts it.
    pub if_stats: Vec<IfStats>,
    names: Vec<Arc<str>>,
    demux: demux::Demux,
    local: local::Local,
    fdb: bridge::Fdb,
    neigh: neigh::Neighbours,
    icmp: icmp_error::IcmpErrors,
    host: Option<host::Host>,
    control: control::ControlPlane,
    pflog: pflog::LogBuffer,
    rng: Rng,
    /// Frames produced by the call under way.
    out: Vec<Out>,
    /// A super-packet to send from the caller's buffer (`offload`).
    in_place: Option<offload::InPlace>,
    /// pfsync's `defer`: the states the packets matched since the last
    /// `take_hits` (their held first packets must leave before them).
    track_hits: bool,
    hits: Vec<u64>,
    /// The in-kernel fast path (`set_fastpath`), and what the packet
    /// under way showed of its flow.
    fast: Option<fast::Offloads>,
    trace: fast::Trace,
    /// The tag pf `in` gave the packet under way (set by every pass `in`),
    /// which its passes `out` see (`tagged`), as pf's tag travels with
    /// the packet from one pass to the other.
    in_tag: Option<Arc<str>>,
    /// The frame under way came to a broadcast or multicast MAC: its
    /// packet is not routed unless its IP destination is a group too.
    in_group_frame: bool,
    /// Router advertisements, per interface that sends them.
    adverts: Vec<adverts::Advertiser>,
    /// Other stations seen claiming one of our own addresses (ARP, or a
    /// neighbour advertisement): interface, address, their MAC; for the
    /// daemon to log (`take_conflicts`), at most `CONFLICTS_KEPT`.
    conflicts: Vec<(usize, IpAddr, Mac)>,
    /// When the next of them is due (ms; u64::MAX: none), for the worker
    /// that sends them to read without the data plane's lock
    /// (`adverts_clock`).
    ra_next: Arc<std::sync::atomic::AtomicU64>,
}

/// Address conflicts kept between two `take_conflicts`.
const CONFLICTS_KEPT: usize = 16;

impl Dataplane {
    /// `port_macs[i]` is the hardware address of `cfg.ports[i]`. The
    /// random source has a fixed seed: for tests and fuzzing; a firewall
    /// uses `with_seed`.
    pub fn new(cfg: Config, port_macs: &[Mac], filter: Filter) -> Dataplane {
        Dataplane::with_seed(cfg, port_macs, filter, TEST_SEED)
    }

    /// As `new`, with pf's randomness seeded by the caller (from the
    /// kernel's getrandom, say).
    pub fn with_seed(cfg: Config, port_macs: &[Mac], filter: Filter, seed: u64) -> Dataplane {
        let n_ifaces = cfg.ifaces.len();
        let local = local::Local::new(&cfg, port_macs);
        let adverts = adverts::advertisers(&cfg, |i| local.mac(i), seed);
        Dataplane {
            names: cfg.ifaces.iter().map(|i| i.name.as_str().into()).collect(),
            demux: demux::Demux::new(&cfg),
            local,
            conflicts: Vec::new(),
            ra_next: Arc::new(std::sync::atomic::AtomicU64::new(adverts::first_due(
                &adverts,
            ))),
            adverts,
            fdb: bridge::Fdb::with_statics(&cfg),
            neigh: neigh::Neighbours::default(),
            icmp: icmp_error::IcmpErrors::default(),
            host: None,
            control: control::ControlPlane::new(cfg.ports.len()),
            pflog: pflog::LogBuffer::default(),
            rng: Rng(seed),
            out: Vec::new(),
            in_place: None,
            track_hits: false,
            hits: Vec::new(),
            fast: None,
            trace: fast::Trace::default(),
            in_tag: None,
            in_group_frame: false,
            if_stats: vec![IfStats::default(); n_ifaces],
            counters: Counters::default(),
            filter,
            cfg,
        }
    }

    /// Attach the host interface (a TAP with MAC `mac`) as port `port`:
    /// traffic for the firewall's own addresses goes there, and what the
    /// Linux stack sends through it is routed like the firewall's own.
    pub fn set_host(&mut self, port: usize, mac: Mac) {
        self.host = Some(host::Host { port, mac });
        self.demux.set_host_port(port);
    }

    /// Keep pflog records of what rules log (for a pflog file).
    pub fn set_logging(&mut self, on: bool) {
        self.pflog.set(on);
    }

    /// The pflog records (DLT_PFLOG) gathered since the last call, each
    /// with the time it was logged.
    pub fn take_log(&mut self) -> Vec<pflog::LogRecord> {
        self.pflog.take()
    }

    /// Interface `i`'s name for listings (`#i` if there is none).
    fn iface_name(&self, i: usize) -> String {
        self.names
            .get(i)
            .map_or_else(|| format!("#{i}"), |n| n.to_string())
    }

    /// The neighbour cache (ARP and neighbour discovery), by interface
    /// (in palisade.toml's order) and address. `now` as for `tick`.
    pub fn neighbours(&self, now: u64) -> Vec<NeighRow> {
        let mut v = self.neigh.entries(now);
        v.sort_by_key(|a| (a.0, a.1));
        v.into_iter()
            .map(|(i, ip, mac, left, queued, tries_left)| NeighRow {
                iface: self.iface_name(i),
                ip,
                mac,
                expires_ms: left,
                queued,
                tries_left,
            })
            .collect()
    }

    /// The routing table the router looks up (longest prefix; a connected
    /// subnet wins a tie): connected subnets, then palisade.toml's routes.
    pub fn routes(&self) -> Vec<RouteRow> {
        let name = |i: usize| self.names.get(i).map(|n| n.to_string());
        let net = |p: &crate::config::Prefix| format!("{}/{}", p.network(), p.bits);
        let mut v: Vec<RouteRow> = self
            .cfg
            .connected_prefixes()
            .map(|(i, p)| RouteRow {
                to: net(p),
                via: None,
                iface: name(i),
                connected: true,
            })
            .fold(Vec::new(), |mut v, r| {
                // Once per subnet and interface (two addresses in one
                // subnet, a CARP address in the parent's).
                if !v.contains(&r) {
                    v.push(r);
                }
                v
            });
        for r in &self.cfg.routes {
            let iface = match (r.via, r.iface) {
                (_, Some(i)) => name(i),
                (Some(gw), None) => router::route_gateway(&self.cfg, &gw).and_then(name),
                (None, None) => None,
            };
            v.push(RouteRow {
                to: net(&r.to),
                via: r.via,
                iface,
                connected: false,
            });
        }
        v
    }

    /// The bridges' learnt addresses, by bridge, member and address.
    /// `now` as for `tick`.
    pub fn fdb(&self, now: u64) -> Vec<FdbRow> {
        let mut v: Vec<(usize, Mac, usize, Option<u64>)> = self
            .fdb
            .entries(now)
            .into_iter()
            .map(|(b, mac, m, seen)| (b, mac, m, Some(seen)))
            .chain(
                self.fdb
                    .static_entries()
                    .into_iter()
                    .map(|(b, mac, m)| (b, mac, m, None)),
            )
            .collect();
        v.sort_by_key(|&(b, mac, m, _)| (b, m, mac));
        v.into_iter()
            .map(|(b, mac, m, seen)| FdbRow {
                bridge: self.iface_name(b),
                mac,
                member: self.iface_name(m),
                age_ms: seen.map_or(0, |s| now.saturating_sub(s)),
                expires_ms: seen.map_or(0, |s| (s + bridge::FDB_AGING_MS).saturating_sub(now)),
                fixed: seen.is_none(),
            })
            .collect()
    }

    /// `bridge flush` / `bridge deladdr`: forget what bridge `name`
    /// learnt (only `mac`, if given); static entries stay. How many went,
    /// or why not.
    pub fn fdb_forget(&mut self, name: &str, mac: Option<&Mac>) -> Result<usize, String> {
        let Some(b) = self
            .cfg
            .ifaces
            .iter()
            .position(|i| i.name == name && !i.members.is_empty())
        else {
            return Err(format!("'{name}' is not a bridge"));
        };
        // The fast path's flows first: taking them back reads their last
        // counts, which would learn the addresses again.
        for m in self.fdb.learnt_macs(b, mac) {
            self.fast_host_forgotten(b, m);
        }
        Ok(self.fdb.forget(b, mac).len())
    }

    /// The MAC address interface `i` answers with (ARP, NDP) and sends
    /// from, as the daemon gives it: `own_mac` of its port's MAC, or with
    /// `mac = "port"` the port's own.
    pub fn mac(&self, i: usize) -> Option<Mac> {
        self.local.get_mac(i)
    }

    /// A port was replaced (deleted and created again): its new MAC, for
    /// its interfaces and a bridge that took its address from it.
    pub fn set_port_mac(&mut self, port: usize, mac: Mac) {
        self.local.set_port_mac(port, mac);
    }

    /// Longest-prefix match over connected subnets and routes: the
    /// interface and next hop for `dst`. Connected subnets win ties.
    pub fn route(&self, dst: &IpAddr) -> Option<(usize, IpAddr)> {
        router::lookup(&self.cfg, dst)
    }

    /// Announce every address (gratuitous ARP, unsolicited NA), those of
    /// the virtual MACs that are on included, and the single addresses
    /// (/32, /128) this router answers for by proxy: a router that takes
    /// over from another (S2: the cloud's virtual router) would otherwise
    /// leave the upstream router sending the VMs' traffic to the old
    /// MAC until its ARP entries age out (hours on some).
    pub fn start(&mut self, now: u64) -> Vec<Out> {
        let _ = now;
        for i in 0..self.cfg.ifaces.len() {
            if self.cfg.ifaces[i].bridge.is_some() {
                continue;
            }
            let mut addrs = self.local.addresses(i);
            // (Those it would answer for: not one routed back out this
            // interface. Not on a CARP parent, where a backup would pull
            // the traffic to itself.)
            if !self.local.has_virtuals(i) {
                let hosts = self.local.proxied_hosts(i);
                addrs.extend(hosts.into_iter().filter(|ip| self.proxies(i, ip, false)));
            }
            self.announce(i, self.local.mac(i), &addrs);
        }
        for (i, mac, addrs) in self.local.active_virtuals() {
            self.announce(i, mac, &addrs);
        }
        // (Not in `frames_out`, which has never counted them.)
        std::mem::take(&mut self.out)
    }

    /// A frame received on port `port`: what to send.
    pub fn input(&mut self, port: usize, frame: &[u8], now: u64) -> Vec<Out> {
        self.counters.frames_in += 1;
        self.fast_begin(port, frame, now);
        match self.demux.segment(port, frame) {
            None => self.frame_in(port, frame, now),
            Some(Ok(segments)) => {
                self.counters.segmented += 1;
                for f in segments {
                    self.frame_in(port, &f, now);
                }
            }
            Some(Err(r)) => self.counters.dropped(r),
        }
        self.fast_end(now);
        let out = std::mem::take(&mut self.out);
        self.counters.frames_out += out.len() as u64;
        out
    }

    /// Address conflicts seen since the last call: (interface name,
    /// address, the other station's MAC), each once.
    pub fn take_conflicts(&mut self) -> Vec<(String, IpAddr, Mac)> {
        std::mem::take(&mut self.conflicts)
            .into_iter()
            .map(|(i, ip, mac)| (self.names[i].to_string(), ip, mac))
            .collect()
    }

    /// Another station claims one of interface `i`'s own addresses.
    fn conflict(&mut self, i: usize, ip: IpAddr, mac: Mac) {
        if self.conflicts.len() < CONFLICTS_KEPT && !self.conflicts.contains(&(i, ip, mac)) {
            self.conflicts.push((i, ip, mac));
        }
    }

    /// Timers: neighbour retries and give-ups, aging. Call about once a second.
    pub fn tick(&mut self, now: u64) -> Vec<Out> {
        let expired = self.neigh.expire(now);
        for (iface, ip) in expired.retry {
            self.solicit(iface, ip);
        }
        // A neighbour near its end that is in use (packets went to it,
        // or the fast path sends to its MAC) is asked again; its answer
        // renews it before it lapses.
        for (iface, ip, mac, used) in expired.probe {
            if used || self.fast_sends_to(mac) {
                self.counters.neigh_probes += 1;
                self.solicit_at(iface, ip, Some(mac));
            }
        }
        // A lapsed neighbour is resolved again before packets go to it:
        // the fast path's flows to its MAC come back for that.
        for (iface, mac) in expired.lapsed {
            self.fast_neigh_gone(iface, mac);
        }
        self.counters.neigh_evicted = self.neigh.evicted;
        for (iface, queue) in expired.gave_up {
            for p in queue {
                self.counters.dropped(DropReason::NeighUnresolved);
                self.icmp_error(iface, &p, now, icmp_error::Unreach::Host);
            }
        }
        self.fdb.age(now);
        self.ra_tick(now);
        self.fast_tick(now);
        // Expired states go on the clock, as pf's purge thread removes
        // them, not only when a packet comes: an idle firewall's state
        // count, listing and metrics would show them for ever.
        // (After `fast_tick`, which refreshed the states the program
        // carries and took back the flows of states already gone: what
        // expired now leaves the program too.)
        if self.filter.tick(now) > 0 {
            self.fast_reconcile();
        }
        let out = std::mem::take(&mut self.out);
        self.counters.frames_out += out.len() as u64;
        out
    }

    /// One frame (a segment, if it came as a super-packet) through the
    /// rooms: demux, then the bridge, or (for our MACs and groups) ARP and
    /// IP on a routed interface.
    fn frame_in(&mut self, port: usize, frame: &[u8], now: u64) {
        match self.demux.classify(port, frame) {
            Err(r) => self.counters.dropped(r),
            Ok(demux::Arrival::Host { ethertype, payload }) => {
                self.host_in(ethertype, payload, now)
            }
            Ok(demux::Arrival::Iface {
                iface,
                dst,
                src,
                ethertype,
                payload,
            }) => {
                if let Some(b) = self.cfg.ifaces[iface].bridge {
                    self.bridge_in(b, iface, dst, src, ethertype, payload, now);
                } else if self.local.accepts(iface, &dst) || is_multicast(&dst) {
                    self.l3_in(iface, src, ethertype, payload, is_multicast(&dst), now);
                } else {
                    self.counters.dropped(DropReason::NotForUs);
                }
            }
        }
    }

    /// A frame for us on interface `i` (a routed interface or a bridge's).
    /// `group`: the frame came to a broadcast or multicast MAC.
    fn l3_in(
        &mut self,
        i: usize,
        src: Mac,
        ethertype: EtherType,
        payload: &[u8],
        group: bool,
        now: u64,
    ) {
        match ethertype {
            EtherType::Arp => self.arp_in(i, src, payload, now),
            EtherType::Ipv4 | EtherType::Ipv6 => {
                // The EtherType says which IP (an IPv4 packet in an IPv6
                // frame went round filters that look at EtherTypes).
                let version = if ethertype == EtherType::Ipv4 { 4 } else { 6 };
                if payload.first().map(|b| b >> 4) != Some(version) {
                    self.counters.dropped(DropReason::Malformed);
                    return;
                }
                self.in_group_frame = group;
                self.ip_in(i, src, payload.to_vec(), now);
                self.in_group_frame = false;
            }
            _ => self.counters.dropped(DropReason::UnsupportedEthertype),
        }
    }

    /// Build and queue a frame out of interface `i` (tagged if it is a
    /// VLAN; by the learnt member, or every member, if it is a bridge).
    fn emit(&mut self, i: usize, dst: Mac, src: Option<Mac>, ethertype: EtherType, payload: &[u8]) {
        let src = src.unwrap_or(self.local.mac(i));
        let ifc = &self.cfg.ifaces[i];
        let Some(port) = ifc.port else {
            let member = if is_multicast(&dst) {
                None
            } else {
                self.fdb.learnt(i, &dst)
            };
            match member {
                Some(m) => self.emit(m, dst, Some(src), ethertype, payload),
                None => {
                    for m in self.cfg.ifaces[i].members.clone() {
                        self.emit(m, dst, Some(src), ethertype, payload);
                    }
                }
            }
            return;
        };
        let eth = EthernetRepr {
            dst,
            src,
            vlan: ifc.vlan.map(VlanTag::dot1q),
            ethertype,
        };
        if self.trace_on() {
            let mut macs = [0u8; 12];
            macs[..6].copy_from_slice(&dst);
            macs[6..].copy_from_slice(&src);
            self.fast_sent(port, macs, ifc.vlan, payload);
        }
        self.out.push((port, eth.frame(payload, 60)));
    }

    /// Is a packet's way being traced for the fast path?
    fn trace_on(&self) -> bool {
        self.fast.is_some()
    }

    /// pf on one packet; what its rules log is kept for `take_log` (the
    /// packet as it leaves pf: when translated, the pflog header says so).
    /// `from`: the interface an outbound packet arrived on (for
    /// `received-on`), None for the firewall's own. `tag`: the tag the
    /// packet brings to an `out` pass (a forwarded one: its pass `in`'s;
    /// synproxy's packets to the server: their state's). `info`: the packet's
    /// description when the caller has one (a frame is described once and
    /// the description serves both passes unless pf changed the packet:
    /// `Decision::modified`).
    #[allow(clippy::too_many_arguments)]
    fn pf(
        &mut self,
        pkt: &mut [u8],
        info: Option<&IpInfo>,
        ix: usize,
        dir: Direction,
        from: Option<usize>,
        tag: Option<Arc<str>>,
        now: u64,
    ) -> palisade_filter::Decision {
        let name = self.names[ix].clone();
        let iface: &str = &name;
        let random = self.rng.next_u32();
        let from = from.and_then(|f| self.names.get(f).cloned());
        let tag = tag.filter(|_| dir == Direction::Out);
        let d = match info {
            Some(info) => self.filter.process_parsed(
                pkt,
                info,
                iface,
                dir,
                now,
                random,
                from.as_deref(),
                tag.as_deref(),
            ),
            None => {
                let mut d = self.filter.process_received(
                    pkt,
                    iface,
                    dir,
                    now,
                    random,
                    from.as_deref(),
                    tag.as_deref(),
                );
                d.modified = true;
                d
            }
        };
        if dir == Direction::In {
            self.in_tag = d.tag.clone();
        }
        if self.track_hits && d.state == palisade_filter::StateMatch::Match {
            // (Only this firewall's own states are ever held.)
            if let Some(id) = d.state_id.filter(|id| self.filter.states.created_here(*id)) {
                self.hits.push(id);
            }
        }
        if let Some(st) = self.if_stats.get_mut(ix) {
            let v6 = pkt.first().is_some_and(|b| b >> 4 == 6) as usize;
            let out = (dir == Direction::Out) as usize;
            let blocked = !d.passed() as usize;
            st.packets[v6][out][blocked] += 1;
            st.bytes[v6][out][blocked] += pkt.len() as u64;
            if matches!(
                d.reason,
                palisade_filter::Reason::Short
                    | palisade_filter::Reason::BadOffset
                    | palisade_filter::Reason::Normalize
            ) {
                st.errors += 1;
            }
        }
        if self.pflog.is_on() && (d.log || !d.log_matched.is_empty()) {
            let len = parse_ip(pkt)
                .map(|i| i.len)
                .unwrap_or(pkt.len())
                .min(pkt.len());
            let engine = self.filter.engine_arc();
            let caller = |p: &str| engine.anchor_caller(p);
            for r in palisade_filter::filter::pflog_records(&d, &pkt[..len], iface, dir, &caller) {
                if self.pflog.push(r).is_err() {
                    self.counters.log_dropped += 1;
                }
            }
        }
        self.fast_pass(ix, dir, &d);
        d
    }
}
