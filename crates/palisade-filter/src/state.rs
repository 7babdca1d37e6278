//! The state table: connections pf keeps, looked up before any rule.
//!
//! A state is created by a packet on an interface in a direction. It matches
//! later packets of the connection that travel the same way (forward) and
//! replies that travel the other way, as pf does: a state made by `pass in`
//! on em1 does not also let the packet out of em0 unless a rule there passes
//! it too (that makes a second state). Floating states (the default) match on
//! any interface; `if-bound` states only on the interface that created them.
//!
//! TCP is tracked with pf's sequence-window algorithm (after G. van Rooij,
//! "Real Stateful TCP Packet Filtering in IP Filter"): each side's lowest
//! unacknowledged sequence number, highest sequence number the other side's
//! window allows, largest window seen and scaling factor; a segment outside
//! them is a state mismatch. Timeouts follow pf.conf(5) "set timeout",
//! scaled adaptively when the table fills. Time is passed in (milliseconds);
//! nothing here reads a clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use hashbrown::DefaultHashBuilder;
use hashbrown::HashTable;
use std::hash::BuildHasher;

use palisade_conf::ir::{Af, Direction, KeepState, SetOption, StateOpts, Timeout};

use crate::packet::RuleRef;

pub mod directory;
mod replica;
pub use replica::{
    ImportError, Merged, RuleForState, StateEvent, StateId, StateRecord, StateUpdate,
    DEFAULT_EVENT_LIMIT,
};

/// A connection's addresses as one packet sees them.
#[derive(Clone, Debug, Eq)]
pub struct FlowKey {
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Ports; for ICMP queries the identifier in both.
    pub sport: u16,
    pub dport: u16,
}

/// Compared field by field, addresses as integers.
impl PartialEq for FlowKey {
    #[inline]
    fn eq(&self, o: &FlowKey) -> bool {
        self.proto == o.proto
            && self.sport == o.sport
            && self.dport == o.dport
            && addr_eq(&self.src, &o.src)
            && addr_eq(&self.dst, &o.dst)
    }
}

/// Hashed as two words (IPv4) or three (IPv6), not field by field as
/// the derived hash does (each address's family, then its octets as a
/// slice with its length): a state lookup hashes a key per packet.
impl std::hash::Hash for FlowKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let rest = (self.proto as u64) << 32 | (self.sport as u64) << 16 | self.dport as u64;
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                h.write_u64((u32::from(s) as u64) << 32 | u32::from(d) as u64);
                h.write_u64(rest);
            }
            (s, d) => {
                let bits = |a: IpAddr| match a {
                    IpAddr::V4(a) => a.to_ipv6_mapped().to_bits(),
                    IpAddr::V6(a) => a.to_bits(),
                };
                h.write_u128(bits(s));
                h.write_u128(bits(d));
                h.write_u64(rest);
            }
        }
    }
}

/// Two addresses compared as integers (the derived comparison of an
/// IPv6 address calls `memcmp`).
#[inline(always)]
fn addr_eq(a: &IpAddr, b: &IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.to_bits() == b.to_bits(),
        (IpAddr::V6(a), IpAddr::V6(b)) => a.to_bits() == b.to_bits(),
        _ => false,
    }
}

impl FlowKey {
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
        }
    }
    pub fn af(&self) -> Af {
        if self.src.is_ipv4() {
            Af::Inet
        } else {
            Af::Inet6
        }
    }
}

const WIRE_SIDE: u32 = 1;
const STACK_SIDE: u32 = 2;

/// A key oriented as an inbound packet carries it.
pub fn norm(t: &FlowKey, dir: Direction) -> FlowKey {
    match dir {
        Direction::In => t.clone(),
        Direction::Out => t.reversed(),
    }
}

/// A packet's state, and the tuple it must be rewritten to (translation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hit {
    pub id: u64,
    pub reply: bool,
    pub rewrite: Option<FlowKey>,
}

/// The state of a quoted packet, and the rewrites for the quote and for
/// the ICMP error's own addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuotedHit {
    pub id: u64,
    /// The quoted packet was the responder's (it went the other way from
    /// the state's creating packet).
    pub reply: bool,
    pub inner: Option<FlowKey>,
    pub outer: Option<FlowKey>,
}

pub fn opposite(d: Direction) -> Direction {
    match d {
        Direction::In => Direction::Out,
        Direction::Out => Direction::In,
    }
}

/// TCP states of one side, in the order pf compares them (tcp_fsm.h).
pub mod tcps {
    pub const CLOSED: u8 = 0;
    pub const LISTEN: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const SYN_RECEIVED: u8 = 3;
    pub const ESTABLISHED: u8 = 4;
    pub const CLOSE_WAIT: u8 = 5;
    pub const FIN_WAIT_1: u8 = 6;
    /// pf uses CLOSING for "this side has sent a FIN".
    pub const CLOSING: u8 = 7;
    pub const LAST_ACK: u8 = 8;
    pub const FIN_WAIT_2: u8 = 9;
    pub const TIME_WAIT: u8 = 10;

    pub fn name(s: u8) -> &'static str {
        [
            "CLOSED",
            "LISTEN",
            "SYN_SENT",
            "SYN_RCVD",
            "ESTABLISHED",
            "CLOSE_WAIT",
            "FIN_WAIT_1",
            "CLOSING",
            "LAST_ACK",
            "FIN_WAIT_2",
            "TIME_WAIT",
        ]
        .get(s as usize)
        .copied()
        .unwrap_or("?")
    }
}

/// UDP and other protocols: has this side sent anything?
pub mod pseudo {
    pub const NO_TRAFFIC: u8 = 0;
    pub const SINGLE: u8 = 1;
    pub const MULTIPLE: u8 = 2;
    pub fn name(s: u8) -> &'static str {
        ["NO_TRAFFIC", "SINGLE", "MULTIPLE"]
            .get(s as usize)
            .copied()
            .unwrap_or("?")
    }
}

/// One side of a connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Peer {
    pub seqlo: u32,
    pub seqhi: u32,
    pub max_win: u32,
    /// Window scale from the SYN, if the option was present.
    pub wscale: Option<u8>,
    pub state: u8,
}

/// Interned interface name.
pub type IfId = u16;
/// Interned rule reference: its position in the table's list, plus one
/// (so that a state's `Option<RuleId>` takes four bytes).
pub type RuleId = std::num::NonZeroU32;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// 64-bit id and the id of the firewall that created it (pfsync). For
    /// local states the low 32 bits are the slot and a generation.
    pub id: u64,
    pub creator: u32,
    /// The creating packet as it arrived, and as it left after translation.
    pub key: FlowKey,
    /// The key after translation, as what differs from `key` (eight
    /// bytes; the table resolves it: `StateTable::translated`). Most
    /// states are not translated; pf, too, keeps a second key only for
    /// those that are.
    pub xlat: Option<Xlat>,
    pub dir: Direction,
    /// The interface that created it, and whether the state is bound to it
    /// (if-bound) or floating.
    pub iface: IfId,
    pub bound: bool,
    /// The initiator's side and the responder's.
    pub src: Peer,
    pub dst: Peer,
    pub rule: Option<RuleId>,
    pub keep: KeepState,
    pub opts: Option<Arc<StateOpts>>,
    /// Created at this time, in seconds (`created_ms`): only ages are
    /// shown or sent (pfsync's creation is in seconds).
    pub created_s: u32,
    pub last_ms: u64,
    pub timeout: Timeout,
    /// Packets and bytes, initiator to responder and back.
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    /// `no-sync`, and source tracking's marks (`flag`).
    pub flags: u8,
    pub sloppy: bool,
    /// TCP: sides (bit 0 the initiator's, bit 1 the responder's) whose
    /// window a pfsync peer wrote last and no packet of this firewall has
    /// fitted since (0 for other protocols). While any is set, TCP is tracked liberally (only a RST must
    /// fall near the window): the peer's last word may lag the connection
    /// by more than pf's slack, and a connection moved by a failover must
    /// not die of it. Each side's first packet that fits strictly clears
    /// its bit.
    pub unverified: u8,
    /// Log every packet of this state (`log (all)`).
    pub log_all: bool,
    /// What only modulate, synproxy and `reassemble tcp` states need,
    /// boxed so that ordinary states stay small.
    pub ext: Option<Box<StateExt>>,
    /// The creating rule's counters: the state's packets count there too.
    pub stats: Option<Arc<crate::packet::RuleStats>>,
    /// The operating system the SYN's fingerprint named: 1 + its position
    /// in the filter's fingerprint database, 0 when unknown or not taken.
    pub os: u16,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateExt {
    /// `modulate state`: added to the initiator's sequence numbers on
    /// the wire (and taken off the responder's acks).
    pub seqdiff: u32,
    /// Added to the responder's sequence numbers on the initiator's side
    /// (synproxy bridges its own ISN and the server's).
    pub seqdiff_dst: u32,
    /// `scrub (reassemble tcp)`: highest TTL seen from each side, and each
    /// side's timestamp offset.
    pub ttl_max: [u8; 2],
    pub ts_offset: [u32; 2],
    /// `synproxy state` while the handshakes are under way.
    pub proxy: Option<Proxy>,
    /// `route-to`, `reply-to`, `dup-to`: the next hop chosen when the
    /// state was created, for every packet of the connection.
    pub route: Option<StateRoute>,
    /// The creating rule says `allow-opts`.
    pub allow_opts: bool,
    /// Normalizations for every packet of the connection (`State::scrub`).
    pub scrub: crate::packet::ScrubActions,
    /// The tag every packet of the connection gets (the creating rule's;
    /// pf's state tag). Not replicated: pfsync's state carries none.
    pub tag: Option<Arc<str>>,
}

/// A state's routing option and the next hop its pool gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateRoute {
    pub kind: palisade_conf::ir::RouteKind,
    pub hop: IpAddr,
    /// The interface named with the hop (`(em1 192.0.2.1)`), else the
    /// routing table's way to the hop.
    pub iface: Option<String>,
}

/// A synproxy handshake in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proxy {
    /// 1: answered the client's SYN, waiting for its ACK; 2: sent the SYN
    /// to the server, waiting for its SYN/ACK.
    pub phase: u8,
    /// The client's initial sequence number and window, and the MSS it sent.
    pub client_isn: u32,
    pub client_win: u16,
    pub mss: u16,
    /// The ISN the firewall used towards the client.
    pub our_isn: u32,
}

/// Bits of `State::flags`.
pub mod flag {
    /// `no-sync`: pfsync does not send it.
    pub const NO_SYNC: u8 = 1;
    /// Counted in a source node (source tracking).
    pub const TRACKED: u8 = 2;
    /// Counted as an established connection of its source node.
    pub const CONN_COUNTED: u8 = 4;
    /// Its source translation, destination translation or next hop came
    /// from a `sticky-address` pool: counted in `sticky_refs` under the
    /// client and that address (`StateTable::sticky_keys`).
    pub const STICKY_NAT: u8 = 8;
    pub const STICKY_RDR: u8 = 16;
    pub const STICKY_ROUTE: u8 = 32;
    pub const STICKY: u8 = STICKY_NAT | STICKY_RDR | STICKY_ROUTE;
}

/// A translated state's second key, as what differs from its first: the
/// new addresses (interned in the table, shared by every state that
/// translates to them: a `nat-to` address is one entry) and both ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Xlat {
    addrs: std::num::NonZeroU32,
    sport: u16,
    dport: u16,
}

/// The interned addresses of translations: each entry the new source
/// and the new destination (None: unchanged), counted by the states
/// that use it, reused once none does.
#[derive(Default)]
struct XlatAddrs {
    entries: Vec<(Option<IpAddr>, Option<IpAddr>, u32)>,
    ids: HashMap<(Option<IpAddr>, Option<IpAddr>), u32>,
    free: Vec<u32>,
}

impl XlatAddrs {
    /// The translation of `key` to `to`, counted once more.
    fn intern(&mut self, key: &FlowKey, to: &FlowKey) -> Xlat {
        let pair = (
            (to.src != key.src).then_some(to.src),
            (to.dst != key.dst).then_some(to.dst),
        );
        let i = match self.ids.get(&pair) {
            Some(&i) => i,
            None => {
                let i = match self.free.pop() {
                    Some(i) => {
                        self.entries[i as usize] = (pair.0, pair.1, 0);
                        i
                    }
                    None => {
                        self.entries.push((pair.0, pair.1, 0));
                        (self.entries.len() - 1) as u32
                    }
                };
                self.ids.insert(pair, i);
                i
            }
        };
        self.entries[i as usize].2 += 1;
        Xlat {
            addrs: std::num::NonZeroU32::new(i + 1).expect("index + 1"),
            sport: to.sport,
            dport: to.dport,
        }
    }

    /// A state using `x` is gone.
    fn release(&mut self, x: Xlat) {
        let i = x.addrs.get() - 1;
        let e = &mut self.entries[i as usize];
        e.2 -= 1;
        if e.2 == 0 {
            self.ids.remove(&(e.0, e.1));
            self.free.push(i);
        }
    }

    /// The key `key` is translated to by `x`.
    fn apply(&self, key: &FlowKey, x: Xlat) -> FlowKey {
        let (src, dst, _) = self.entries[x.addrs.get() as usize - 1];
        FlowKey {
            proto: key.proto,
            src: src.unwrap_or(key.src),
            dst: dst.unwrap_or(key.dst),
            sport: x.sport,
            dport: x.dport,
        }
    }

    /// The state's key after translation (its key when not translated).
    fn after<'a>(&self, s: &'a State) -> std::borrow::Cow<'a, FlowKey> {
        match s.xlat {
            None => std::borrow::Cow::Borrowed(&s.key),
            Some(x) => std::borrow::Cow::Owned(self.apply(&s.key, x)),
        }
    }

    /// The keys as seen on the wire and by the stack, both oriented as
    /// an inbound packet carries them (pf's PF_SK_WIRE and PF_SK_STACK).
    fn wire(&self, s: &State) -> FlowKey {
        match s.dir {
            Direction::In => norm(&s.key, s.dir),
            Direction::Out => norm(&self.after(s), s.dir),
        }
    }
    fn stack(&self, s: &State) -> FlowKey {
        match s.dir {
            Direction::In => norm(&self.after(s), s.dir),
            Direction::Out => norm(&s.key, s.dir),
        }
    }

    /// Does `k` equal the state's wire (or stack) key? Compared field by
    /// field; the translated key is built only when it is the one asked.
    fn key_is(&self, s: &State, k: &FlowKey, wire: bool) -> bool {
        // Which tuple the side is, and whether it is stored reversed.
        let first = matches!(
            (s.dir, wire),
            (Direction::In, true) | (Direction::Out, false)
        );
        // The side's addresses and ports as the creating packet carried
        // them (the translated ones read in place, not built).
        let key = &s.key;
        let (src, dst, sport, dport) = match (first, s.xlat) {
            (false, Some(x)) => {
                let (src, dst, _) = &self.entries[x.addrs.get() as usize - 1];
                (
                    src.as_ref().unwrap_or(&key.src),
                    dst.as_ref().unwrap_or(&key.dst),
                    x.sport,
                    x.dport,
                )
            }
            _ => (&key.src, &key.dst, key.sport, key.dport),
        };
        if k.proto != key.proto {
            return false;
        }
        if s.dir == Direction::Out {
            k.sport == dport && k.dport == sport && addr_eq(&k.src, dst) && addr_eq(&k.dst, src)
        } else {
            k.sport == sport && k.dport == dport && addr_eq(&k.src, src) && addr_eq(&k.dst, dst)
        }
    }
}

/// The wire and stack keys of a state with key `key` (and `after`
/// translation) created in `dir`, before it is stored.
fn keys_of(key: &FlowKey, after: &FlowKey, dir: Direction) -> (FlowKey, FlowKey) {
    match dir {
        Direction::In => (norm(key, dir), norm(after, dir)),
        Direction::Out => (norm(after, dir), norm(key, dir)),
    }
}

impl State {
    /// A bit of `flags`.
    pub fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    fn set(&mut self, f: u8, on: bool) {
        if on {
            self.flags |= f;
        } else {
            self.flags &= !f;
        }
    }

    /// `no-sync`.
    pub fn no_sync(&self) -> bool {
        self.has(flag::NO_SYNC)
    }

    /// When it was created (to the second), in the caller's clock.
    pub fn created_ms(&self) -> u64 {
        self.created_s as u64 * 1000
    }

    /// One more packet of `len` bytes from the initiator's side (or the
    /// responder's, `reply`), on the state and on its rule's counters.
    fn count(&mut self, reply: bool, len: u32) {
        let d = reply as usize;
        self.packets[d] += 1;
        self.bytes[d] += len as u64;
        if let Some(st) = &self.stats {
            let out = (self.dir == Direction::Out) != reply;
            st.count(if out { Direction::Out } else { Direction::In }, len as u64);
        }
    }

    /// Normalizations for every packet of the connection (kept in
    /// `StateExt`: most states have none).
    pub fn scrub(&self) -> crate::packet::ScrubActions {
        self.ext.as_deref().map(|e| e.scrub).unwrap_or_default()
    }
}

impl State {
    /// `ESTABLISHED:ESTABLISHED`, `MULTIPLE:SINGLE`... as pfctl -ss prints.
    pub fn state_str(&self) -> String {
        if matches!(self.key.proto, 1 | 58) {
            // pfctl prints ICMP states' numbers: pf keeps none for them.
            return "0:0".into();
        }
        if self.key.proto == 6 {
            format!(
                "{}:{}",
                tcps::name(self.src.state),
                tcps::name(self.dst.state)
            )
        } else {
            format!(
                "{}:{}",
                pseudo::name(self.src.state),
                pseudo::name(self.dst.state)
            )
        }
    }
}

/// Why tracking refused a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackError {
    /// Outside the windows (pf's PFRES_BADSTATE, "state-mismatch").
    Mismatch,
    /// The connection just established goes over `max-src-conn` or
    /// `max-src-conn-rate` (pf's PFRES_SRCLIMIT, "src-limit").
    SrcLimit,
}

/// pf's decaying counter for connection rates: each event adds 1000; the
/// count decays linearly to zero over the configured seconds.
#[derive(Clone, Copy, Debug, Default)]
struct Threshold {
    count: u64,
    last_ms: u64,
}

const THRESHOLD_MULT: u64 = 1000;

impl Threshold {
    /// The count as the next `add` at `now_ms` would find it, before
    /// adding (thousandths of a connection).
    fn at(&self, now_ms: u64, seconds: u32) -> u64 {
        let span = seconds as u64 * 1000;
        let diff = now_ms.saturating_sub(self.last_ms);
        if span == 0 || diff >= span {
            0
        } else {
            self.count - self.count * diff / span
        }
    }
    fn add(&mut self, now_ms: u64, seconds: u32) {
        let span = seconds as u64 * 1000;
        let diff = now_ms.saturating_sub(self.last_ms);
        if span == 0 || diff >= span {
            self.count = 0;
        } else {
            self.count -= self.count * diff / span;
        }
        self.count += THRESHOLD_MULT;
        self.last_ms = now_ms;
    }
    fn over(&self, limit: u32) -> bool {
        self.count > limit as u64 * THRESHOLD_MULT
    }
}

/// A source node as `source_nodes` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceNode {
    pub addr: IpAddr,
    /// The rule it is tracked for; None when tracked globally.
    pub rule: Option<RuleRef>,
    pub states: u32,
    pub conns: u32,
    /// When the node was made (the state table's clock, milliseconds).
    pub created_ms: u64,
    /// The connection rate `max-src-conn-rate` counts, as of the listing,
    /// in thousandths of a connection, over `rate_secs` seconds (0 / 0:
    /// no rate counted).
    pub rate_milli: u64,
    pub rate_secs: u32,
    /// A node whose last state went: when it goes too (`src.track`
    /// after that state; pfctl -sS's "expires in").
    pub expires_ms: Option<u64>,
}

/// A source address's counters (pf's source nodes), per rule or global.
#[derive(Clone, Copy, Debug, Default)]
struct SrcNode {
    states: u32,
    conns: u32,
    rate: Threshold,
    rate_secs: u32,
    created_ms: u64,
    /// Its last state went: kept until then (`src.track` seconds later,
    /// pf's source-tracking timeout), for the next connections of the
    /// source to count with what it did before (its rate, its node).
    idle_until: Option<u64>,
}

type SrcKey = (Option<RuleId>, IpAddr);

/// The source tracking a rule asks for: explicit, or per rule when it sets
/// any per-source limit (pfctl adds `source-track rule` for the connection
/// limits; Palisade also does for max-src-states and max-src-nodes).
pub fn effective_tracking(o: &StateOpts) -> Option<palisade_conf::ir::SourceTrack> {
    use palisade_conf::ir::SourceTrack;
    o.source_track.or_else(|| {
        if o.max_src_nodes.is_some() || o.max_src_conn.is_some() || o.max_src_conn_rate.is_some() {
            Some(SourceTrack::Rule)
        } else {
            o.max_src_states.map(|_| SourceTrack::Global)
        }
    })
}

fn src_scope(s: &State) -> Option<Option<RuleId>> {
    let st = effective_tracking(s.opts.as_ref()?)?;
    Some(match st {
        palisade_conf::ir::SourceTrack::Rule => s.rule,
        palisade_conf::ir::SourceTrack::Global => None,
    })
}

/// What the tracker needs of a TCP segment.
#[derive(Clone, Copy, Debug)]
pub struct TcpSeg {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    pub payload_len: u32,
    pub wscale: Option<u8>,
}

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;
const MAX_ACK_WINDOW: i64 = 0xffff + 1500;
const MAX_WSCALE: u8 = 14;

fn seq_geq(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) >= 0
}

fn seq_gt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// The state table: states in a slab, indexed by key in a hash table of
/// slot numbers (4 bytes an entry) and by id through the slot encoded in
/// local ids.
pub struct StateTable {
    slab: Slab,
    gens: Vec<u8>,
    free: Vec<u32>,
    /// Entries: slot | side << 30 (side bit 1 wire, 2 stack).
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
    /// States created by other firewalls (pfsync): id -> slot.
    foreign: HashMap<u64, u32>,
    live: usize,
    pub creator: u32,
    /// The high 32 bits of the ids of the states this table creates (the
    /// rest: generation and slot). `creator` at first; the daemon draws a
    /// new one at every start (`set_epoch`), so that a firewall restarted
    /// under a fixed `set hostid` never gives a new state an id its pfsync
    /// peer still holds for one of before the restart (OpenBSD seeds its
    /// state ids from the time at start for the same reason). States of
    /// this table's own creator with ids of another epoch (taken back
    /// from the state file, or from the peer) are kept by id as another
    /// firewall's are.
    epoch: u32,
    /// New states refused because the table was full (counted `memory`
    /// with the fragments' refusals; this for the daemon's log).
    pub refused_full: u64,
    events: replica::EventQueue,
    /// Global timeouts (seconds), indexed like `Timeout::ALL`.
    pub timeouts: [u32; 20],
    /// `set limit states`.
    pub limit: u32,
    /// `set limit src-nodes`: source nodes at most, those of source
    /// tracking (`src_nodes`) and the sticky addresses the filter keeps
    /// (`sticky_nodes`) together, as pf's one pool holds both.
    pub src_node_limit: u32,
    /// The filter's sticky addresses (`sticky-address`), counted against
    /// `src_node_limit` (the filter says how many before an insert).
    pub sticky_nodes: usize,
    /// `set timeout` gave adaptive.start or adaptive.end: the two are
    /// taken as they are (an end of 0 turns the scaling off), not derived
    /// from the limit (pfctl derives them only when neither is set).
    pub adaptive_set: bool,
    /// TCP states whose responder has not answered yet (pf's half-open
    /// states: `set syncookies adaptive` measures them).
    halfopen: usize,
    /// States removed since the table was made, for any reason (pfctl
    /// -si's removals).
    pub removals: u64,
    /// Record events only for a consumer (pfsync): `set_events`.
    events_enabled: bool,
    /// pfsync `defer`: the syncable states created since the caller last
    /// asked (`take_created`).
    track_created: bool,
    created: Vec<replica::StateId>,
    /// Where the next purge slice starts, and when the last one ran.
    purge_cursor: usize,
    purge_ms: u64,
    /// The latest time the table was told (a removal by id is not told
    /// one): when a source node left without states starts its
    /// `src.track`.
    clock_ms: u64,
    /// When idle source nodes were last swept.
    nodes_swept_ms: u64,
    /// States per creating rule with `max`, keyed by the rule's compiled
    /// state options (one allocation per rule as loaded: a rule loaded
    /// again, an anchor ftp-proxy refills, starts from none, as in pf;
    /// the states hold the allocation, so the key is not reused while
    /// counted).
    per_rule: HashMap<usize, u32>,
    src_nodes: HashMap<SrcKey, SrcNode>,
    /// Per client and sticky address: the states that use it
    /// (`flag::STICKY`).
    sticky_refs: HashMap<(IpAddr, IpAddr), u32>,
    nodes_per_scope: HashMap<Option<RuleId>, u32>,
    ifaces: Vec<String>,
    iface_ids: HashMap<String, IfId>,
    rules: Vec<RuleRef>,
    rule_ids: HashMap<RuleRef, RuleId>,
    /// Interned operating-system names of fingerprinted SYNs.
    os_names: Vec<String>,
    /// Interned addresses of translated states.
    xlat: XlatAddrs,
    /// With a table per worker (`join`): where the others' keys are, and
    /// this table's number among them.
    directory: Option<Arc<directory::Directory>>,
    table: u8,
}

/// The states' slots, in chunks of `CHUNK`: a table of a million states
/// neither keeps up to a million empty slots after its last doubling nor
/// copies every state while it grows (as a Vec would).
#[derive(Default)]
struct Slab {
    chunks: Vec<Box<[Option<State>]>>,
    len: usize,
}

const CHUNK: usize = 1024;

impl Slab {
    fn len(&self) -> usize {
        self.len
    }

    fn get(&self, i: usize) -> Option<&Option<State>> {
        (i < self.len).then(|| &self.chunks[i / CHUNK][i % CHUNK])
    }

    fn get_mut(&mut self, i: usize) -> Option<&mut Option<State>> {
        (i < self.len).then(|| &mut self.chunks[i / CHUNK][i % CHUNK])
    }

    /// A new empty slot at the end.
    fn push_empty(&mut self) {
        if self.len % CHUNK == 0 {
            self.chunks.push((0..CHUNK).map(|_| None).collect());
        }
        self.len += 1;
    }

    fn iter(&self) -> impl Iterator<Item = &Option<State>> {
        self.chunks.iter().flat_map(|c| c.iter()).take(self.len)
    }
}

impl std::ops::Index<usize> for Slab {
    type Output = Option<State>;
    fn index(&self, i: usize) -> &Option<State> {
        self.get(i).expect("slot in the slab")
    }
}

impl std::ops::IndexMut<usize> for Slab {
    fn index_mut(&mut self, i: usize) -> &mut Option<State> {
        self.get_mut(i).expect("slot in the slab")
    }
}

/// Ask the CPU for every cache line of a state at once. A state spans
/// three or four lines and a hit reads all of them (its key, then its
/// peers, counters and timers); fetched one after the other, each line
/// is a miss of its own once the table outgrows the cache.
#[inline(always)]
fn prefetch_state(entry: &Option<State>) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let p = entry as *const Option<State> as *const i8;
        let size = std::mem::size_of::<Option<State>>();
        let mut off = 0;
        while off < size + 63 {
            // SAFETY: prefetching is a hint and never faults; the address
            // is within (or one line past the start of the last line of)
            // the slot, which `entry` borrows.
            unsafe { _mm_prefetch(p.wrapping_add(off.min(size - 1)), _MM_HINT_T0) };
            off += 64;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = entry;
}

/// `now_ms` in whole seconds, as a state's creation time keeps it.
fn secs_of(now_ms: u64) -> u32 {
    (now_ms / 1000).min(u32::MAX as u64) as u32
}

/// pf's default state limit.
pub const DEFAULT_STATE_LIMIT: u32 = 100_000;
/// pf's default `set limit src-nodes` (PFSNODE_HIWAT).
pub const DEFAULT_SRC_NODE_LIMIT: u32 = 10_000;
/// Local ids keep the slot in 24 bits (the parser refuses a `set limit
/// states` above it).
const MAX_SLOTS: usize = palisade_conf::MAX_STATES as usize;
const SLOT_MASK: u32 = (1 << 30) - 1;

impl StateTable {
    pub fn new(creator: u32) -> StateTable {
        let mut timeouts = [0u32; 20];
        for (i, t) in Timeout::ALL.iter().enumerate() {
            timeouts[i] = t.default_secs();
        }
        StateTable {
            slab: Slab::default(),
            gens: Vec::new(),
            free: Vec::new(),
            index: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            foreign: HashMap::new(),
            live: 0,
            creator,
            epoch: creator,
            events: Default::default(),
            timeouts,
            limit: DEFAULT_STATE_LIMIT,
            src_node_limit: DEFAULT_SRC_NODE_LIMIT,
            sticky_nodes: 0,
            adaptive_set: false,
            halfopen: 0,
            removals: 0,
            events_enabled: false,
            track_created: false,
            created: Vec::new(),
            purge_cursor: 0,
            purge_ms: 0,
            clock_ms: 0,
            nodes_swept_ms: 0,
            refused_full: 0,
            per_rule: HashMap::new(),
            src_nodes: HashMap::new(),
            sticky_refs: HashMap::new(),
            nodes_per_scope: HashMap::new(),
            ifaces: Vec::new(),
            iface_ids: HashMap::new(),
            rules: Vec::new(),
            rule_ids: HashMap::new(),
            os_names: Vec::new(),
            xlat: XlatAddrs::default(),
            directory: None,
            table: 0,
        }
    }

    /// Become table `table` of those sharing `directory` (one per
    /// worker): its keys are then recorded there, a key or translation
    /// port taken in another table counts as taken here, `set limit
    /// states` and the adaptive timeouts count the states of all tables,
    /// and the ids of its states name it (their slot numbers are
    /// `local * tables + table`). Only for an empty table.
    pub fn join(&mut self, directory: Arc<directory::Directory>, table: u8) {
        assert!(self.slab.len() == 0, "join: the table has states");
        assert!(table < directory.tables(), "join: no such table");
        self.directory = Some(directory);
        self.table = table;
    }

    /// Draw the ids of the states this table creates from `epoch` (their
    /// high 32 bits; see the field). Only for a table that has created
    /// no state yet.
    pub fn set_epoch(&mut self, epoch: u32) {
        debug_assert!(self.slab.len() == 0, "set_epoch: the table has states");
        self.epoch = epoch;
    }

    /// Whether `id` is of a state this table created (since its start).
    #[inline]
    pub fn created_here(&self, id: u64) -> bool {
        (id >> 32) as u32 == self.epoch
    }

    /// The table's number among those sharing a directory (0 alone).
    pub fn table(&self) -> u8 {
        self.table
    }

    /// How many tables share this one's directory (1 alone).
    fn stride(&self) -> u32 {
        self.directory.as_ref().map_or(1, |d| d.tables() as u32)
    }

    /// States in this table and those it shares a directory with.
    fn live_all(&self) -> usize {
        self.directory.as_ref().map_or(self.live, |d| d.live())
    }

    /// Another table holding the state of a packet with key `tuple` seen
    /// in `dir` on `iface`, which this one lacks (`lookup` missed).
    pub fn elsewhere(&self, tuple: &FlowKey, dir: Direction, iface: &str) -> Option<u8> {
        let need = if dir == Direction::In {
            WIRE_SIDE
        } else {
            STACK_SIDE
        };
        self.directory
            .as_ref()?
            .elsewhere(self.table, &norm(tuple, dir), need as u8, iface)
    }

    /// As `elsewhere`, for the packet quoted in an ICMP error travelling
    /// in `dir` (`lookup_quoted` missed).
    pub fn elsewhere_quoted(&self, quoted: &FlowKey, dir: Direction, iface: &str) -> Option<u8> {
        let need = if dir == Direction::In {
            WIRE_SIDE
        } else {
            STACK_SIDE
        };
        self.directory.as_ref()?.elsewhere(
            self.table,
            &norm(quoted, opposite(dir)),
            need as u8,
            iface,
        )
    }

    /// The table a state's id names (0 for another firewall's states and
    /// for tables without a directory).
    pub fn table_of_id(&self, id: u64) -> u8 {
        if !self.created_here(id) {
            return 0;
        }
        ((id as u32 & 0x00ff_ffff) % self.stride()) as u8
    }

    pub fn len(&self) -> usize {
        self.live
    }

    /// TCP states whose responder has not answered (pf's half-open
    /// count, `pfctl -si`).
    pub fn halfopen(&self) -> usize {
        self.halfopen
    }

    /// The half-open count taken afresh, state by state (tests check the
    /// kept count against it).
    pub fn halfopen_recount(&self) -> usize {
        self.iter().filter(|s| is_halfopen(s)).count()
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    fn slot_of(&self, id: u64) -> Option<u32> {
        if self.created_here(id) {
            let slot = self.local_slot((id as u32) & 0x00ff_ffff)?;
            let gen = (id as u32 >> 24) as u8;
            (self.gens.get(slot as usize) == Some(&gen)).then_some(slot)
        } else {
            self.foreign.get(&id).copied()
        }
    }

    /// This table's slot for the slot number an own id carries (None
    /// when the id names another table).
    #[inline]
    fn local_slot(&self, n: u32) -> Option<u32> {
        // A table of its own (no directory, or the only one): every slot
        // number is its own, without the division (this runs for every
        // state hit, twice, and a division costs tens of cycles).
        let Some(d) = self.directory.as_ref() else {
            return (self.table == 0).then_some(n);
        };
        let stride = d.tables() as u32;
        if stride.is_power_of_two() {
            let shift = stride.trailing_zeros();
            return (n & (stride - 1) == self.table as u32).then_some(n >> shift);
        }
        (n % stride == self.table as u32).then_some(n / stride)
    }

    pub fn get(&self, id: u64) -> Option<&State> {
        let slot = self.slot_of(id)?;
        self.slab
            .get(slot as usize)?
            .as_ref()
            .filter(|s| s.id == id)
    }

    fn get_mut(&mut self, id: u64) -> Option<&mut State> {
        let slot = self.slot_of(id)?;
        self.slab
            .get_mut(slot as usize)?
            .as_mut()
            .filter(|s| s.id == id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &State> {
        self.slab.iter().filter_map(|s| s.as_ref())
    }

    /// The interface name of a state.
    /// States from slab position `from` on, each with its position: a
    /// listing taken in parts starts each part after the last position
    /// it saw, so no part needs more than its own states.
    pub fn iter_from(&self, from: usize) -> impl Iterator<Item = (usize, &State)> {
        self.slab
            .iter()
            .enumerate()
            .skip(from)
            .filter_map(|(i, s)| s.as_ref().map(|s| (i, s)))
    }

    pub fn iface_name(&self, s: &State) -> &str {
        self.ifaces
            .get(s.iface as usize)
            .map(String::as_str)
            .unwrap_or("")
    }

    /// The rule that created a state.
    pub fn rule_of(&self, s: &State) -> Option<RuleRef> {
        s.rule
            .and_then(|r| self.rules.get(r.get() as usize - 1).cloned())
    }

    fn intern_iface(&mut self, name: &str) -> IfId {
        if let Some(&i) = self.iface_ids.get(name) {
            return i;
        }
        let i = self.ifaces.len() as IfId;
        self.ifaces.push(name.to_string());
        self.iface_ids.insert(name.to_string(), i);
        i
    }

    pub(super) fn intern_rule(&mut self, r: &RuleRef) -> RuleId {
        if let Some(&i) = self.rule_ids.get(r) {
            return i;
        }
        let i = RuleId::MIN.saturating_add(self.rules.len() as u32);
        self.rules.push(r.clone());
        self.rule_ids.insert(r.clone(), i);
        i
    }

    fn hash(&self, k: &FlowKey) -> u64 {
        self.hasher.hash_one(k)
    }

    /// The slot of a state with key `k` on `need`'s side usable on `iface`.
    fn find(&self, k: &FlowKey, need: u32, iface: &str) -> Option<u32> {
        let h = self.hash(k);
        let mut found = None;
        // Several entries can share a key (if-bound states of one
        // connection on different interfaces): check each.
        for &e in self.index.iter_hash(h) {
            let slot = e & SLOT_MASK;
            let side = e >> 30;
            if side & need == 0 {
                continue;
            }
            let Some(entry) = self.slab.get(slot as usize) else {
                continue;
            };
            prefetch_state(entry);
            let Some(s) = entry else {
                continue;
            };
            if !self.xlat.key_is(s, k, need & WIRE_SIDE != 0) {
                continue;
            }
            if s.bound && self.ifaces.get(s.iface as usize).map(String::as_str) != Some(iface) {
                continue;
            }
            found = Some(slot);
            break;
        }
        found
    }

    /// A state's keys as seen on the wire and by the stack, both oriented
    /// as an inbound packet carries them (pf's PF_SK_WIRE and
    /// PF_SK_STACK). `s` must be a state of this table.
    pub fn wire(&self, s: &State) -> FlowKey {
        self.xlat.wire(s)
    }
    pub fn stack(&self, s: &State) -> FlowKey {
        self.xlat.stack(s)
    }

    /// The key a state's packets are translated to, as the creating
    /// packet left (None when not translated).
    pub fn translated(&self, s: &State) -> Option<FlowKey> {
        s.xlat.map(|x| self.xlat.apply(&s.key, x))
    }

    /// Find the state a packet belongs to (pf's pf_find_state): an inbound
    /// packet must carry a state's wire key, an outbound one its stack key.
    pub fn lookup(&self, tuple: &FlowKey, dir: Direction, iface: &str) -> Option<Hit> {
        let need = if dir == Direction::In {
            WIRE_SIDE
        } else {
            STACK_SIDE
        };
        let slot = self.find(&norm(tuple, dir), need, iface)?;
        let s = self.slab[slot as usize].as_ref()?;
        let new = match s.xlat {
            None => None,
            Some(x) => {
                // The key the packet leaves with (an inbound packet the
                // stack key, an outbound one the wire key), as it
                // carries it: a packet going the way the state was
                // created left with the translated key; one coming back
                // is restored to the state's key, reversed.
                let new = if dir == s.dir {
                    self.xlat.apply(&s.key, x)
                } else {
                    s.key.reversed()
                };
                (new != *tuple).then_some(new)
            }
        };
        Some(Hit {
            id: s.id,
            reply: dir != s.dir,
            rewrite: new,
        })
    }

    /// Find the state of the packet quoted in an ICMP error travelling in
    /// `dir`: the quoted packet went the other way, in the form the
    /// error's side of the firewall saw it.
    pub fn lookup_quoted(
        &self,
        quoted: &FlowKey,
        dir: Direction,
        iface: &str,
    ) -> Option<QuotedHit> {
        let need = if dir == Direction::In {
            WIRE_SIDE
        } else {
            STACK_SIDE
        };
        let inner_dir = opposite(dir);
        let slot = self.find(&norm(quoted, inner_dir), need, iface)?;
        let s = self.slab[slot as usize].as_ref()?;
        let target = if dir == Direction::In {
            self.xlat.stack(s)
        } else {
            self.xlat.wire(s)
        };
        let new_inner = norm(&target, inner_dir);
        let new_outer = norm(&target, dir);
        let translated = new_inner != *quoted;
        Some(QuotedHit {
            id: s.id,
            reply: inner_dir != s.dir,
            inner: translated.then_some(new_inner),
            outer: translated.then_some(new_outer),
        })
    }

    /// pf's check of the TCP segment an ICMP error quotes
    /// (pf_test_state_icmp): the quoted sequence number, taken out of a
    /// modulated space (`modulate state`, synproxy) back into the one the
    /// state tracks, must lie where its sender (the initiator, or the
    /// responder when `reply`) may have sent: no further on than the
    /// sender's seqhi, no further back than its seqlo less the receiver's
    /// largest window, scaled. The quote was seen after the firewall, so
    /// it carries the shifted number. Ok with the number in the state's
    /// space (the quote is to be rewritten to it when it differs, as pf
    /// does); Err(Mismatch) outside (pf's "BAD ICMP", PFRES_BADSTATE).
    /// `sloppy` states are not checked (pf's PFSTATE_SLOPPY); a state
    /// whose windows a pfsync peer wrote and no packet has confirmed is
    /// checked as liberally as its RSTs are (`State::unverified`).
    pub fn check_quoted_tcp(&self, id: u64, reply: bool, seq: u32) -> Result<u32, TrackError> {
        let Some(s) = self.get(id) else {
            return Err(TrackError::Mismatch);
        };
        let (seqdiff, seqdiff_dst) = s
            .ext
            .as_deref()
            .map_or((0, 0), |e| (e.seqdiff, e.seqdiff_dst));
        let (src, dst, shift) = if reply {
            (&s.dst, &s.src, seqdiff_dst)
        } else {
            (&s.src, &s.dst, seqdiff)
        };
        let seq = seq.wrapping_sub(shift);
        if s.key.proto != 6 || s.sloppy {
            return Ok(seq);
        }
        let (sws, dws) = match (src.wscale, dst.wscale) {
            (Some(a), Some(b)) => (a as u32, b as u32),
            _ => (0, 0),
        };
        let dwin = ((dst.max_win as u64) << dws) as u32;
        let (below, above) = if s.unverified != 0 {
            let span = ((MAX_ACK_WINDOW as u64) << sws.max(dws)).max(dwin as u64) as u32;
            (dwin.max(span), span)
        } else {
            (dwin, 0)
        };
        if seq_geq(src.seqhi.wrapping_add(above), seq)
            && seq_geq(seq, src.seqlo.wrapping_sub(below))
        {
            Ok(seq)
        } else {
            Err(TrackError::Mismatch)
        }
    }

    /// Is this wire key taken (for choosing translation ports)?
    pub fn wire_in_use(&self, wire: &FlowKey) -> bool {
        let h = self.hash(wire);
        self.index.iter_hash(h).any(|&e| {
            e >> 30 & WIRE_SIDE != 0
                && self.slab[(e & SLOT_MASK) as usize]
                    .as_ref()
                    .is_some_and(|s| self.xlat.key_is(s, wire, true))
        }) || self.directory.as_ref().is_some_and(|d| {
            d.taken_elsewhere(self.table, wire, WIRE_SIDE as u8, false, "")
                .is_some()
        })
    }

    fn timeout_secs(&self, s: &State, t: Timeout) -> u32 {
        self.timeout_secs_of(s.opts.as_deref(), t)
    }

    /// Timeout `t` in seconds under a rule's state options.
    fn timeout_secs_of(&self, opts: Option<&StateOpts>, t: Timeout) -> u32 {
        let i = Timeout::ALL.iter().position(|x| *x == t).unwrap_or(0);
        if let Some(o) = opts {
            if let Some((_, v)) = o.timeouts.iter().find(|(x, _)| *x == t) {
                return *v;
            }
        }
        self.timeouts[i]
    }

    /// When the state expires: its timeout after the last packet, scaled
    /// down linearly between adaptive.start and adaptive.end states.
    pub fn expires_ms(&self, s: &State) -> u64 {
        let base = self.timeout_secs(s, s.timeout) as u64 * 1000;
        // A rule's own adaptive.start (pfctl gives one to every rule with
        // `max N`: 60% and 120% of N) scales by the rule's own states, as
        // pf_state_expires does; else the global ones by all states.
        let own = s.opts.as_ref().and_then(|o| {
            let get = |t: Timeout| o.timeouts.iter().find(|(x, _)| *x == t).map(|(_, v)| *v);
            let start = get(Timeout::AdaptiveStart).filter(|v| *v > 0)?;
            let end = get(Timeout::AdaptiveEnd).unwrap_or(0);
            let n = max_key(Some(o)).and_then(|k| self.per_rule.get(&k).copied())?;
            Some((start as u64, end as u64, n as u64))
        });
        let (start, end, n) = own.unwrap_or_else(|| {
            let (start, end) = self.adaptive();
            (start, end, self.live_all() as u64)
        });
        // (pf_state_expires: no scaling with an end of 0.)
        let scaled = if end > start && n > start {
            if n >= end {
                0
            } else {
                base * (end - n) / (end - start)
            }
        } else {
            base
        };
        s.last_ms + scaled
    }

    /// The timeouts and the state limit of pf.conf's `set` options, each
    /// back to its default where they do not set it (at start and at a
    /// reload, as pfctl -f sets them again).
    pub fn apply_options(&mut self, options: &[SetOption]) {
        let defaults = StateTable::new(0);
        self.timeouts = defaults.timeouts;
        self.limit = defaults.limit;
        self.src_node_limit = defaults.src_node_limit;
        self.adaptive_set = false;
        let at = |t: Timeout| Timeout::ALL.iter().position(|x| *x == t).unwrap_or(0);
        let (start, end) = (Timeout::AdaptiveStart, Timeout::AdaptiveEnd);
        let mut given = [false; 2];
        for o in options {
            match o {
                SetOption::Timeout(t, v) => {
                    self.timeouts[at(*t)] = *v;
                    given[0] |= *t == start;
                    given[1] |= *t == end;
                }
                SetOption::Limit(n, v) if n == "states" => self.limit = *v,
                SetOption::Limit(n, v) if n == "src-nodes" => self.src_node_limit = *v,
                _ => {}
            }
        }
        // adaptive.start or .end given: the other keeps pf's default
        // (60,000 / 120,000 states), as pfctl loads it.
        if given[0] || given[1] {
            self.adaptive_set = true;
            if !given[0] {
                self.timeouts[at(start)] = 60_000;
            }
            if !given[1] {
                self.timeouts[at(end)] = 120_000;
            }
        }
    }

    /// What `options` would make of a table holding `live` states: a
    /// warning when they would cut its states' lives short (the limit
    /// under them, or adaptive timeouts scaling them down), as a reload
    /// to a lower `set limit states` does at once.
    /// Nothing when they give the limit and adaptive values `self` has
    /// (a busy table's every reload would say the same).
    pub fn options_warning(&self, options: &[SetOption]) -> Option<String> {
        let live = self.live_all();
        let mut t = StateTable::new(0);
        t.apply_options(options);
        let (start, end) = t.adaptive();
        if (t.limit, (start, end)) == (self.limit, self.adaptive()) {
            return None;
        }
        let n = live as u64;
        let scaled = end > start && n > start;
        if !scaled && n <= t.limit as u64 {
            return None;
        }
        let mut w = format!(
            "warning: set limit states {}: the table holds {live} states",
            t.limit
        );
        if scaled && n >= end {
            w += &format!(
                ", at or over adaptive.end ({end}): every timeout is 0 and they all expire now"
            );
        } else if scaled {
            w += &format!(
                ", over adaptive.start ({start}): their timeouts shrink to {}%",
                100 * (end - n) / (end - start)
            );
        }
        if n > t.limit as u64 {
            w += ", more than the limit: no new state until they fall under it";
        }
        Some(w)
    }

    /// The adaptive timeouts' start and end (state counts) in force.
    pub fn adaptive(&self) -> (u64, u64) {
        let get = |t: Timeout| {
            let i = Timeout::ALL.iter().position(|x| *x == t).unwrap_or(0);
            self.timeouts[i] as u64
        };
        if self.adaptive_set {
            (get(Timeout::AdaptiveStart), get(Timeout::AdaptiveEnd))
        } else {
            // pfctl's: 60% and 120% of the state limit, counted in tenths
            // (a limit under 10 has none).
            let tenth = self.limit as u64 / 10;
            (tenth * 6, tenth * 12)
        }
    }

    pub fn set_log_all(&mut self, id: u64, on: bool) {
        if let Some(s) = self.get_mut(id) {
            s.log_all = on;
        }
    }

    /// The source nodes (pfctl -sS): each tracked source with the rule it
    /// is tracked for (None: global tracking), its states and its
    /// established connections, sorted by address.
    pub fn source_nodes(&self, now_ms: u64) -> Vec<SourceNode> {
        let mut v: Vec<SourceNode> = self
            .src_nodes
            .iter()
            .map(|((scope, addr), n)| SourceNode {
                addr: *addr,
                rule: scope.and_then(|r| self.rules.get(r.get() as usize - 1).cloned()),
                states: n.states,
                conns: n.conns,
                created_ms: n.created_ms,
                rate_milli: n.rate.at(now_ms, n.rate_secs),
                rate_secs: n.rate_secs,
                expires_ms: n.idle_until,
            })
            .collect();
        v.sort_by(|a, b| {
            (a.addr, a.rule.as_ref().map(|r| r.nr)).cmp(&(b.addr, b.rule.as_ref().map(|r| r.nr)))
        });
        v
    }

    /// Forget the source nodes of the sources `src` matches (pfctl -K):
    /// their counters (states, connections, rate) start again from
    /// nothing; the states stay. Returns how many went.
    pub fn kill_source_nodes(&mut self, src: impl Fn(&IpAddr) -> bool) -> usize {
        let gone: Vec<SrcKey> = self
            .src_nodes
            .keys()
            .filter(|(_, a)| src(a))
            .copied()
            .collect();
        // Their states no longer count on a node (as pf unlinks them):
        // a node made afresh for the source counts only what comes after.
        for i in 0..self.slab.len() {
            if let Some(Some(st)) = self.slab.get_mut(i) {
                if st.has(flag::TRACKED) && src(&st.key.src) {
                    st.set(flag::TRACKED, false);
                    st.set(flag::CONN_COUNTED, false);
                }
            }
        }
        for k in &gone {
            self.src_nodes.remove(k);
            if let Some(c) = self.nodes_per_scope.get_mut(&k.0) {
                *c -= 1;
                if *c == 0 {
                    self.nodes_per_scope.remove(&k.0);
                }
            }
        }
        gone.len()
    }

    /// Remove the states of a source that went over its limits in a state
    /// of direction `dir`: all of them, or only those created by `rule`
    /// (`overload ... flush` with / without `global`). As pf_src_connlimit
    /// compares: the outer end of each state's wire key (an inbound
    /// state's source, an outbound one's destination) for an inbound
    /// offender, the inner end for an outbound one; so the states of
    /// connections the firewall's side opened to that host go too.
    pub fn kill_source(
        &mut self,
        src: IpAddr,
        dir: Direction,
        rule: Option<Option<RuleId>>,
    ) -> usize {
        let ids: Vec<u64> = self
            .iter()
            .filter(|s| {
                let w = self.wire(s);
                let end = match dir {
                    Direction::In => w.src,
                    Direction::Out => w.dst,
                };
                end == src && rule.is_none_or(|r| s.rule == r)
            })
            .map(|s| s.id)
            .collect();
        for id in &ids {
            self.remove(*id);
        }
        ids.len()
    }

    /// `reassemble tcp` for one packet from side `reply`: returns the TTL
    /// to raise it to and the (TSval, TSecr) shifts.
    pub fn tcp_normalize(
        &mut self,
        id: u64,
        reply: bool,
        ttl: u8,
        seed: u32,
    ) -> Option<(u8, u32, u32)> {
        let s = self.get_mut(id)?;
        if !s.scrub().reassemble_tcp {
            return None;
        }
        let e = s.ext.get_or_insert_with(Default::default);
        if e.ts_offset == [0, 0] {
            e.ts_offset = [seed | 1, seed.rotate_left(16) | 1];
        }
        let side = reply as usize;
        e.ttl_max[side] = e.ttl_max[side].max(ttl);
        Some((e.ttl_max[side], e.ts_offset[side], e.ts_offset[1 - side]))
    }

    pub fn set_proxy(&mut self, id: u64, p: Option<Proxy>) {
        if let Some(s) = self.get_mut(id) {
            s.ext.get_or_insert_with(Default::default).proxy = p;
        }
    }

    /// Both synproxy handshakes are done: the connection is established
    /// with the client's sequence space on both sides and the server's
    /// shifted to the firewall's ISN on the client's side.
    pub fn synproxy_established(&mut self, id: u64, server_isn: u32, server_win: u16) {
        let Some(s) = self.get_mut(id) else {
            return;
        };
        let Some(p) = s.ext.as_mut().and_then(|e| e.proxy.take()) else {
            return;
        };
        let was = is_halfopen(s);
        s.src.seqlo = p.client_isn.wrapping_add(1);
        s.src.seqhi = s.src.seqlo.wrapping_add((server_win as u32).max(1));
        s.src.max_win = (p.client_win as u32).max(1);
        s.src.wscale = None;
        s.src.state = tcps::ESTABLISHED;
        s.dst.seqlo = server_isn.wrapping_add(1);
        s.dst.seqhi = s.dst.seqlo.wrapping_add((p.client_win as u32).max(1));
        s.dst.max_win = (server_win as u32).max(1);
        s.dst.wscale = None;
        s.dst.state = tcps::ESTABLISHED;
        s.timeout = Timeout::TcpEstablished;
        s.ext.get_or_insert_with(Default::default).seqdiff_dst = p.our_isn.wrapping_sub(server_isn);
        self.halfopen = self.halfopen.saturating_sub(was as usize);
    }

    pub fn set_allow_opts(&mut self, id: u64) {
        if let Some(s) = self.get_mut(id) {
            s.ext.get_or_insert_with(Default::default).allow_opts = true;
        }
    }

    pub fn set_route(&mut self, id: u64, r: StateRoute) {
        if let Some(s) = self.get_mut(id) {
            s.ext.get_or_insert_with(Default::default).route = Some(r);
        }
    }

    pub fn set_seqdiff(&mut self, id: u64, d: u32) {
        if let Some(s) = self.get_mut(id) {
            s.ext.get_or_insert_with(Default::default).seqdiff = d;
        }
    }

    /// Attach the creating rule's counters (a state of theirs now).
    pub fn set_stats(&mut self, id: u64, stats: Option<Arc<crate::packet::RuleStats>>) {
        if let (Some(s), Some(st)) = (self.get_mut(id), stats) {
            st.state_created();
            if let Some(old) = s.stats.replace(st) {
                old.state_gone();
            }
        }
    }

    /// The tag every packet of the state gets.
    pub fn set_tag(&mut self, id: u64, tag: Arc<str>) {
        if let Some(s) = self.get_mut(id) {
            s.ext.get_or_insert_with(Default::default).tag = Some(tag);
        }
    }

    pub fn set_scrub(&mut self, id: u64, sc: crate::packet::ScrubActions) {
        if let Some(s) = self.get_mut(id) {
            if sc != Default::default() || s.ext.is_some() {
                s.ext.get_or_insert_with(Default::default).scrub = sc;
            }
        }
    }

    /// Create a state for the packet that passed a stateful rule.
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &mut self,
        key: FlowKey,
        translated: Option<FlowKey>,
        dir: Direction,
        iface: &str,
        rule: Option<RuleRef>,
        keep: KeepState,
        opts: Option<Arc<StateOpts>>,
        now_ms: u64,
        tcp: Option<&TcpSeg>,
        len: u32,
    ) -> Result<u64, crate::Reason> {
        self.clock_ms = self.clock_ms.max(now_ms);
        // The table full (`set limit states`): pf's state pool refuses
        // the allocation and counts `memory`; `state-limit` is a rule's
        // own `max`.
        if self.live_all() as u64 >= self.limit as u64
            || self.live >= MAX_SLOTS / self.stride() as usize
        {
            self.refused_full += 1;
            return Err(crate::Reason::Memory);
        }
        let rule_id = rule.as_ref().map(|r| self.intern_rule(r));
        let max_key = max_key(opts.as_ref());
        if let (Some(m), Some(k)) = (opts.as_ref().and_then(|o| o.max), max_key) {
            if self.per_rule.get(&k).copied().unwrap_or(0) >= m {
                return Err(crate::Reason::StateLimit);
            }
        }
        // Source tracking: per-source limits on states and nodes.
        let src_key: Option<SrcKey> = opts.as_ref().and_then(|o| effective_tracking(o)).map(|st| {
            let scope = match st {
                palisade_conf::ir::SourceTrack::Rule => rule_id,
                palisade_conf::ir::SourceTrack::Global => None,
            };
            (scope, key.src)
        });
        if let (Some(k), Some(o)) = (&src_key, opts.as_ref()) {
            match self.src_nodes.get(k) {
                Some(n) => {
                    if o.max_src_states.is_some_and(|m| n.states >= m) {
                        return Err(crate::Reason::SrcLimit);
                    }
                }
                None => {
                    let nodes = self.nodes_per_scope.get(&k.0).copied().unwrap_or(0);
                    if o.max_src_nodes.is_some_and(|m| nodes >= m) {
                        return Err(crate::Reason::SrcLimit);
                    }
                    // `set limit src-nodes` reached: pf's source-node
                    // pool refuses the node, and the state with it.
                    if self.src_nodes_full() {
                        return Err(crate::Reason::SrcLimit);
                    }
                    if o.max_src_states == Some(0) {
                        return Err(crate::Reason::SrcLimit);
                    }
                }
            }
        }
        let bound = opts.as_ref().is_some_and(|o| o.if_bound);
        let translated = translated.filter(|t| *t != key);
        let (mut src, mut dst) = (Peer::default(), Peer::default());
        let timeout;
        if let Some(t) = tcp {
            // The initiator's sequence space: from its ISN to just past
            // what this segment occupies (a SYN and a FIN count one each).
            src.seqlo = t.seq;
            src.seqhi = t.seq.wrapping_add(t.payload_len).wrapping_add(1);
            src.max_win = (t.window as u32).max(1);
            if t.flags & SYN != 0 {
                src.seqhi = src.seqhi.wrapping_add(1);
                src.wscale = t.wscale.map(|w| w.min(MAX_WSCALE));
                if let Some(ws) = src.wscale {
                    // Windows are kept in scaled units; the SYN's is not scaled.
                    src.max_win = (src.max_win + (1 << ws) - 1) >> ws;
                }
            }
            if t.flags & FIN != 0 {
                src.seqhi = src.seqhi.wrapping_add(1);
            }
            dst.seqhi = 1;
            dst.max_win = 1;
            src.state = tcps::SYN_SENT;
            dst.state = tcps::CLOSED;
            timeout = Timeout::TcpFirst;
        } else {
            src.state = pseudo::SINGLE;
            dst.state = pseudo::NO_TRAFFIC;
            timeout = match key.proto {
                17 => Timeout::UdpFirst,
                1 | 58 => Timeout::IcmpFirst,
                _ => Timeout::OtherFirst,
            };
        }
        let iface_id = self.intern_iface(iface);
        let no_sync = opts.as_ref().is_some_and(|o| o.no_sync);
        // A node counts its rate over the rule's seconds from the start
        // (pfctl -sS shows "rate 0.0/30s" before any connection).
        let rate_secs = opts
            .as_ref()
            .and_then(|o| o.max_src_conn_rate)
            .map_or(0, |(_, secs)| secs);
        let (wire, stack) = keys_of(&key, translated.as_ref().unwrap_or(&key), dir);
        if self.key_taken(&wire, WIRE_SIDE, bound, iface_id)
            || self.key_taken(&stack, STACK_SIDE, bound, iface_id)
            || !self.claim_keys(&wire, &stack, bound, iface_id)
        {
            return Err(crate::Reason::StateInsert);
        }
        let xlat = translated.map(|t| self.xlat.intern(&key, &t));
        let s = State {
            id: 0,
            creator: self.creator,
            key,
            xlat,
            dir,
            iface: iface_id,
            bound,
            src,
            dst,
            rule: rule_id,
            keep,
            sloppy: opts.as_ref().is_some_and(|o| o.sloppy),
            unverified: 0,
            flags: if no_sync { flag::NO_SYNC } else { 0 },
            opts,
            created_s: secs_of(now_ms),
            last_ms: now_ms,
            timeout,
            packets: [1, 0],
            bytes: [len as u64, 0],
            log_all: false,
            ext: None,
            stats: None,
            os: 0,
        };
        let slot = self.store(s, &wire, &stack);
        let id = self.slab[slot as usize].as_ref().map_or(0, |s| s.id);
        if let Some(k) = max_key {
            *self.per_rule.entry(k).or_default() += 1;
        }
        if let Some(k) = src_key {
            let node = self.src_nodes.entry(k).or_insert_with(|| {
                *self.nodes_per_scope.entry(k.0).or_default() += 1;
                SrcNode {
                    created_ms: now_ms,
                    rate_secs,
                    ..SrcNode::default()
                }
            });
            node.states += 1;
            node.idle_until = None;
            if let Some(Some(s)) = self.slab.get_mut(slot as usize) {
                s.set(flag::TRACKED, true);
            }
        }
        self.live += 1;
        self.record_event(id, self.creator, no_sync, replica::Pending::Insert);
        Ok(id)
    }

    /// Source nodes in use: those of source tracking and the filter's
    /// sticky addresses (`set limit src-nodes` counts both).
    pub fn src_nodes_in_use(&self) -> usize {
        self.src_nodes.len() + self.sticky_nodes
    }

    /// Would one more source node pass `set limit src-nodes`?
    pub fn src_nodes_full(&self) -> bool {
        self.src_nodes_in_use() >= self.src_node_limit as usize
    }

    /// Is `k` a key of another state on `need`'s side (for a state bound
    /// to `iface` when `bound`)?
    fn key_taken(&self, k: &FlowKey, need: u32, bound: bool, iface: IfId) -> bool {
        let h = self.hash(k);
        self.index.iter_hash(h).any(|&e| {
            let side = e >> 30;
            let Some(Some(o)) = self.slab.get((e & SLOT_MASK) as usize) else {
                return false;
            };
            let okey = if side & WIRE_SIDE != 0 {
                self.xlat.wire(o)
            } else {
                self.xlat.stack(o)
            };
            side & need != 0 && okey == *k && (!bound || !o.bound || o.iface == iface)
        })
    }

    /// With a table per worker: record a new state's keys in the
    /// directory, unless another table holds one it clashes with (false:
    /// the state must not be made). Checked and recorded at once.
    fn claim_keys(&self, wire: &FlowKey, stack: &FlowKey, bound: bool, iface: IfId) -> bool {
        let Some(d) = &self.directory else {
            return true;
        };
        let name = bound.then(|| self.ifaces.get(iface as usize).map_or("", String::as_str));
        d.claim(self.table, wire, stack, name).is_ok()
    }

    /// Put a state in a free slot and index its keys; returns the slot.
    /// A local state (id 0) gets its id from the slot.
    fn store(&mut self, s: State, wire: &FlowKey, stack: &FlowKey) -> u32 {
        self.store_in(s, wire, stack, None)
    }

    /// Reserve the slot an own id names, with that id's generation, if
    /// it is free (a state taken back after a restart keeps its id, so
    /// that a pfsync peer's copy stays the same state). False if taken.
    pub(crate) fn reserve_own_slot(&mut self, id: u64) -> Option<u32> {
        let slot = self.local_slot((id as u32) & 0x00ff_ffff)?;
        let gen = (id as u32 >> 24) as u8;
        if slot as usize >= MAX_SLOTS / self.stride() as usize {
            return None;
        }
        while self.slab.len() <= slot as usize {
            self.slab.push_empty();
            self.gens.push(0);
            let x = (self.slab.len() - 1) as u32;
            if x != slot {
                self.free.push(x);
            }
            if x == slot {
                self.gens[slot as usize] = gen;
                return Some(slot);
            }
        }
        if self.slab[slot as usize].is_some() {
            return None;
        }
        let at = self.free.iter().rposition(|&x| x == slot)?;
        self.free.swap_remove(at);
        self.gens[slot as usize] = gen;
        Some(slot)
    }

    /// As `store`, into `slot` when given (reserved by
    /// `reserve_own_slot`; the state carries its id).
    fn store_in(
        &mut self,
        mut s: State,
        wire: &FlowKey,
        stack: &FlowKey,
        slot: Option<u32>,
    ) -> u32 {
        let slot = match slot.or_else(|| self.free.pop()) {
            Some(x) => x,
            None => {
                self.slab.push_empty();
                self.gens.push(0);
                (self.slab.len() - 1) as u32
            }
        };
        if s.id == 0 {
            let gen = self.gens[slot as usize];
            let n = slot * self.stride() + self.table as u32;
            s.id = (self.epoch as u64) << 32 | (gen as u64) << 24 | n as u64;
        }
        self.halfopen += is_halfopen(&s) as usize;
        // The state is stored before its keys are indexed: growing the
        // index rehashes every entry from its state, this one's included.
        self.slab[slot as usize] = Some(s);
        if wire == stack {
            self.index_insert(wire, slot | (WIRE_SIDE | STACK_SIDE) << 30);
        } else {
            self.index_insert(wire, slot | WIRE_SIDE << 30);
            self.index_insert(stack, slot | STACK_SIDE << 30);
        }
        slot
    }

    /// Index `key` for the entry `e` (slot and sides), whose state is
    /// already stored in the slab.
    fn index_insert(&mut self, key: &FlowKey, e: u32) {
        let hasher = &self.hasher;
        let slab = &self.slab;
        let xlat = &self.xlat;
        let rehash = |e: &u32| match slab[(e & SLOT_MASK) as usize].as_ref() {
            Some(st) if e >> 30 & WIRE_SIDE != 0 => hasher.hash_one(xlat.wire(st)),
            Some(st) => hasher.hash_one(xlat.stack(st)),
            // Every indexed slot holds its state (stored first, removed
            // from the index before it is taken); tests catch a breach.
            None => {
                debug_assert!(false, "index entry for an empty slot");
                0
            }
        };
        self.index.insert_unique(hasher.hash_one(key), e, rehash);
    }

    /// The state's source translation, destination translation or next
    /// hop (`which`: `flag::STICKY_*`, set after its route) came from a
    /// `sticky-address` pool: while it lives, the client's sticky address
    /// does (as pf's source node lives while states use it).
    pub fn mark_sticky(&mut self, id: u64, which: u8) {
        let Some(s) = self.get_mut(id) else { return };
        let new = which & flag::STICKY & !s.flags;
        if new == 0 {
            return;
        }
        s.flags |= new;
        let keys = self
            .get(id)
            .map(|s| self.sticky_keys(s, new))
            .unwrap_or_default();
        for k in keys {
            *self.sticky_refs.entry(k).or_default() += 1;
        }
    }

    /// The (client, sticky address) pairs a state with the `which` marks
    /// uses, as the filter's sticky entries name them: the client as the
    /// pool saw it (for a next hop, after the source translation), the
    /// translated source, the translated destination, the next hop.
    fn sticky_keys(&self, s: &State, which: u8) -> Vec<(IpAddr, IpAddr)> {
        let after = self.translated(s).unwrap_or_else(|| s.key.clone());
        let mut v = Vec::new();
        if which & flag::STICKY_NAT != 0 {
            v.push((s.key.src, after.src));
        }
        if which & flag::STICKY_RDR != 0 {
            v.push((s.key.src, after.dst));
        }
        if which & flag::STICKY_ROUTE != 0 {
            if let Some(r) = s.ext.as_ref().and_then(|e| e.route.as_ref()) {
                v.push((after.src, r.hop));
            }
        }
        v
    }

    /// Whether a state uses `addr` as `client`'s sticky address.
    pub fn sticky_in_use(&self, client: &IpAddr, addr: &IpAddr) -> bool {
        self.sticky_refs.contains_key(&(*client, *addr))
    }

    /// Remove a state; whether it was there. (The state itself is not
    /// handed back: its translation is interned in the table and gone
    /// with it.)
    pub fn remove(&mut self, id: u64) -> bool {
        let Some(s) = self.remove_quietly(id) else {
            return false;
        };
        self.record_event(s.id, s.creator, s.no_sync(), replica::Pending::Delete);
        true
    }

    /// Remove a state without recording an event (a peer's news).
    fn remove_quietly(&mut self, id: u64) -> Option<State> {
        let slot = self.slot_of(id)?;
        if self.slab.get(slot as usize)?.as_ref()?.id != id {
            return None;
        }
        let s = self.slab[slot as usize].as_ref()?;
        let (wire, stack) = (self.xlat.wire(s), self.xlat.stack(s));
        // (Before its translation is released.)
        let sticky = if s.has(flag::STICKY) {
            self.sticky_keys(s, s.flags & flag::STICKY)
        } else {
            Vec::new()
        };
        if let Some(d) = &self.directory {
            let bound = s.bound.then(|| self.ifaces[s.iface as usize].as_str());
            d.remove(self.table, &wire, &stack, bound);
        }
        for k in [wire, stack] {
            let h = self.hasher.hash_one(&k);
            while let Ok(e) = self.index.find_entry(h, |&e| e & SLOT_MASK == slot) {
                e.remove();
            }
        }
        let s = self.slab[slot as usize].take()?;
        self.halfopen = self.halfopen.saturating_sub(is_halfopen(&s) as usize);
        if let Some(x) = s.xlat {
            self.xlat.release(x);
        }
        if self.created_here(id) {
            self.gens[slot as usize] = self.gens[slot as usize].wrapping_add(1);
        } else {
            self.foreign.remove(&id);
        }
        self.free.push(slot);
        self.live -= 1;
        self.removals += 1;
        if let Some(st) = &s.stats {
            st.state_gone();
        }
        if let Some(k) = max_key(s.opts.as_ref()) {
            if let Some(n) = self.per_rule.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    self.per_rule.remove(&k);
                }
            }
        }
        for k in sticky {
            if let Some(n) = self.sticky_refs.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    self.sticky_refs.remove(&k);
                }
            }
        }
        if s.has(flag::TRACKED) {
            if let Some(scope) = src_scope(&s) {
                let k = (scope, s.key.src);
                // pf keeps a node `src.track` seconds after its last state
                // (the rule's timeout, which `max-src-conn-rate` sets to
                // its window, else the global one; 0: it goes at once).
                let keep = self.timeout_secs_of(s.opts.as_deref(), Timeout::SrcTrack) as u64 * 1000;
                let now = self.clock_ms;
                if let Some(n) = self.src_nodes.get_mut(&k) {
                    n.states = n.states.saturating_sub(1);
                    if s.has(flag::CONN_COUNTED) {
                        n.conns = n.conns.saturating_sub(1);
                    }
                    if n.states == 0 {
                        if keep > 0 {
                            n.idle_until = Some(now + keep);
                        } else {
                            self.forget_node(k);
                        }
                    }
                }
            }
        }
        Some(s)
    }

    /// Remove every state that has expired by `now_ms`, then the source
    /// nodes whose `src.track` ran out; returns how many states went.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        self.clock_ms = self.clock_ms.max(now_ms);
        let dead: Vec<u64> = self
            .iter()
            .filter(|s| self.expires_ms(s) <= now_ms)
            .map(|s| s.id)
            .collect();
        for id in &dead {
            self.remove(*id);
        }
        self.sweep_nodes(now_ms);
        dead.len()
    }

    /// Forget source node `k` and its count in its scope.
    fn forget_node(&mut self, k: SrcKey) {
        if self.src_nodes.remove(&k).is_none() {
            return;
        }
        if let Some(c) = self.nodes_per_scope.get_mut(&k.0) {
            *c -= 1;
            if *c == 0 {
                self.nodes_per_scope.remove(&k.0);
            }
        }
    }

    /// Remove the source nodes without states whose `src.track` ended by
    /// `now_ms`.
    fn sweep_nodes(&mut self, now_ms: u64) {
        self.nodes_swept_ms = now_ms;
        let gone: Vec<SrcKey> = self
            .src_nodes
            .iter()
            .filter(|(_, n)| n.states == 0 && n.idle_until.is_none_or(|t| t <= now_ms))
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            self.forget_node(k);
        }
    }

    /// Expire a slice of the table instead of all of it at once: called
    /// for every packet, it runs at most every 100 ms and looks at as many
    /// slots as the time since the last slice is a part of a second (at
    /// least 256), so the whole table is walked about once a second, as
    /// the full scan used to be, without a pause proportional to its size.
    /// Returns how many states it removed.
    pub fn purge(&mut self, now_ms: u64) -> usize {
        self.clock_ms = self.clock_ms.max(now_ms);
        let elapsed = now_ms.saturating_sub(self.purge_ms);
        if elapsed < 100 {
            return 0;
        }
        self.purge_ms = now_ms;
        if now_ms.saturating_sub(self.nodes_swept_ms) >= 1000 && !self.src_nodes.is_empty() {
            self.sweep_nodes(now_ms);
        }
        let n = self.slab.len();
        if n == 0 {
            return 0;
        }
        let budget = ((n as u128 * elapsed as u128 / 1000) as usize).clamp(256.min(n), n);
        let mut dead = Vec::new();
        let mut pos = self.purge_cursor;
        for _ in 0..budget {
            if pos >= n {
                pos = 0;
            }
            if let Some(s) = &self.slab[pos] {
                if self.expires_ms(s) <= now_ms {
                    dead.push(s.id);
                }
            }
            pos += 1;
        }
        self.purge_cursor = pos;
        for id in &dead {
            self.remove(*id);
        }
        dead.len()
    }

    /// Account a non-TCP packet to its state.
    pub fn track_pseudo(&mut self, id: u64, reply: bool, now_ms: u64, len: u32) {
        let Some(s) = self.get_mut(id) else {
            return;
        };
        let (src, dst) = if reply {
            (&mut s.dst, &mut s.src)
        } else {
            (&mut s.src, &mut s.dst)
        };
        if src.state < pseudo::SINGLE {
            src.state = pseudo::SINGLE;
        }
        if dst.state == pseudo::SINGLE {
            dst.state = pseudo::MULTIPLE;
        }
        let both = s.src.state == pseudo::MULTIPLE && s.dst.state == pseudo::MULTIPLE;
        s.timeout = match (s.key.proto, both) {
            (17, true) => Timeout::UdpMultiple,
            (17, false) => Timeout::UdpSingle,
            (1 | 58, _) => Timeout::IcmpFirst,
            (_, true) => Timeout::OtherMultiple,
            (_, false) => Timeout::OtherSingle,
        };
        s.last_ms = now_ms;
        s.count(reply, len);
        let (creator, no_sync) = (s.creator, s.no_sync());
        self.record_event(id, creator, no_sync, replica::Pending::Update);
    }

    /// Whether `track_tcp` would accept each of `segs` in turn (the
    /// segments of one super-packet, in order), tried on copies of the
    /// state's windows: nothing changes. False too when a segment could
    /// make the state count an established connection for its source
    /// (`max-src-conn`), whose limit may refuse it.
    pub fn would_track_all(&self, id: u64, reply: bool, segs: &[TcpSeg]) -> bool {
        let Some(s) = self.get(id) else {
            return false;
        };
        let counts_conn = s.has(flag::TRACKED)
            && !s.has(flag::CONN_COUNTED)
            && s.opts
                .as_ref()
                .is_some_and(|o| o.max_src_conn.is_some() || o.max_src_conn_rate.is_some());
        if counts_conn {
            return false;
        }
        let (mut src, mut dst) = if reply {
            (s.dst, s.src)
        } else {
            (s.src, s.dst)
        };
        let side_bit: u8 = if reply { 2 } else { 1 };
        let mut unverified = s.unverified;
        for seg in segs {
            match track_window(&mut src, &mut dst, s.sloppy, unverified, seg) {
                Ok(true) => unverified &= !side_bit,
                Ok(false) => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// pf's TCP window tracking for a segment of a known connection.
    pub fn track_tcp(
        &mut self,
        id: u64,
        reply: bool,
        seg: &TcpSeg,
        now_ms: u64,
        len: u32,
    ) -> Result<(), TrackError> {
        let Some(slot) = self.slot_of(id) else {
            return Err(TrackError::Mismatch);
        };
        let Some(s) = self.slab.get_mut(slot as usize).and_then(|x| x.as_mut()) else {
            return Err(TrackError::Mismatch);
        };
        let side_bit: u8 = if reply { 2 } else { 1 };
        let was = is_halfopen(s);
        let (sloppy, unverified) = (s.sloppy, s.unverified);
        let (src, dst) = if reply {
            (&mut s.dst, &mut s.src)
        } else {
            (&mut s.src, &mut s.dst)
        };
        let in_window = track_window(src, dst, sloppy, unverified, seg)?;
        if in_window {
            s.unverified &= !side_bit;
        }
        let (a, b) = (s.src.state, s.dst.state);
        s.timeout = if a >= tcps::FIN_WAIT_2 && b >= tcps::FIN_WAIT_2 {
            Timeout::TcpClosed
        } else if a >= tcps::CLOSING && b >= tcps::CLOSING {
            Timeout::TcpFinWait
        } else if a < tcps::ESTABLISHED || b < tcps::ESTABLISHED {
            Timeout::TcpOpening
        } else if a >= tcps::CLOSING || b >= tcps::CLOSING {
            Timeout::TcpClosing
        } else {
            Timeout::TcpEstablished
        };
        s.last_ms = now_ms;
        s.count(reply, len);
        // The handshake completed: count the connection for its source.
        let mut over = false;
        if s.has(flag::TRACKED)
            && !s.has(flag::CONN_COUNTED)
            && a == tcps::ESTABLISHED
            && b == tcps::ESTABLISHED
        {
            if let (Some(o), Some(scope)) = (s.opts.clone(), src_scope(s)) {
                if o.max_src_conn.is_some() || o.max_src_conn_rate.is_some() {
                    s.set(flag::CONN_COUNTED, true);
                    if let Some(n) = self.src_nodes.get_mut(&(scope, s.key.src)) {
                        n.conns += 1;
                        if let Some((lim, secs)) = o.max_src_conn_rate {
                            n.rate.add(now_ms, secs);
                            n.rate_secs = secs;
                            over |= n.rate.over(lim);
                        }
                        over |= o.max_src_conn.is_some_and(|m| n.conns > m);
                    }
                }
            }
        }
        let (creator, no_sync) = (s.creator, s.no_sync());
        let now_halfopen = is_halfopen(s);
        self.halfopen = (self.halfopen + now_halfopen as usize).saturating_sub(was as usize);
        self.record_event(id, creator, no_sync, replica::Pending::Update);
        if over {
            return Err(TrackError::SrcLimit);
        }
        Ok(())
    }
}

/// What the in-kernel fast path needs of a state it may take over
/// (docs/fastpath.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FastView {
    /// The direction the state was created in: a packet in the same
    /// direction on a pass is from its initiator (side 0).
    pub dir: Direction,
    /// The initiator's side and the responder's.
    pub peers: [Peer; 2],
    /// The state's timeout is the one its sides give it (UDP: after the
    /// first datagram pf moves it from udp.first even when the sides stay;
    /// until then a datagram would still move it).
    pub timeout_settled: bool,
    /// Packets the state passed, initiator to responder and back.
    pub packets: [u64; 2],
    /// What the state's `scrub` does to each packet it passes (the
    /// program does it too; `reassemble tcp` keeps a TCP state out).
    pub scrub: crate::packet::ScrubActions,
}

impl StateTable {
    /// A state the fast path may take over: TCP with both sides
    /// established, or UDP (the fast path takes only directions whose
    /// packets leave the sides' states as they are), and nothing that
    /// must see each packet (`log (all)`, `scrub (reassemble tcp)` on
    /// TCP, modulate, synproxy, `dup-to`, sloppy tracking, windows a
    /// pfsync peer wrote). A translation is the same for every packet of
    /// a direction: the fast path writes it as user space did; so is a
    /// `route-to` or `reply-to` gateway, chosen when the state was made.
    pub fn fast_view(&self, id: u64) -> Option<FastView> {
        let s = self.get(id)?;
        let per_packet = s.ext.as_deref().is_some_and(|e| {
            e.seqdiff != 0
                || e.seqdiff_dst != 0
                || e.proxy.is_some()
                || e.route
                    .as_ref()
                    .is_some_and(|r| r.kind == palisade_conf::ir::RouteKind::DupTo)
        });
        let proto_ok = match s.key.proto {
            6 => s.src.state == tcps::ESTABLISHED && s.dst.state == tcps::ESTABLISHED,
            17 => true,
            _ => false,
        };
        let ok = proto_ok
            && !s.log_all
            && !s.sloppy
            && s.unverified == 0
            // `reassemble tcp` follows each side's TTL and timestamps;
            // the other scrub actions are the same for every packet
            // (max-mss touches only SYNs, which the program gives back).
            && (s.key.proto != 6 || !s.scrub().reassemble_tcp)
            && !per_packet;
        let timeout_settled = match s.key.proto {
            17 => {
                let both = s.src.state == pseudo::MULTIPLE && s.dst.state == pseudo::MULTIPLE;
                s.timeout
                    == if both {
                        Timeout::UdpMultiple
                    } else {
                        Timeout::UdpSingle
                    }
            }
            _ => true,
        };
        ok.then_some(FastView {
            dir: s.dir,
            peers: [s.src, s.dst],
            timeout_settled,
            packets: s.packets,
            scrub: s.scrub(),
        })
    }

    /// What the fast path did to a state since it was last read: the
    /// windows it moved to (seqlo, seqhi, max_win per side), the packets
    /// and bytes it passed per side, and the time of the last one.
    ///
    /// The windows merge: each edge becomes the further of the state's
    /// and the program's (the larger `max_win`). For established segments
    /// without flags pf only ever moves them that way, so the result is
    /// the same whichever of the two saw a packet first: a packet user
    /// space decided while the program had the flow (one queued before
    /// the hand-over) is not lost.
    ///
    /// "Further" is measured from `since`, the program's record as last
    /// read (or as handed over): how far each moved on from there. A
    /// comparison of the two edges alone (sequence numbers modulo 2^32,
    /// the later one within half the space) reads them the wrong way round
    /// once a flow moves more than 2 GiB between two reads, which a
    /// single stream does in one tick at about 17 Gbit/s (veths here
    /// carry 20-40): the state then stayed where it was, and the next
    /// packet user space decided (the connection's FIN) was refused as
    /// outside the window, and every retransmission after it.
    pub fn fast_sync(
        &mut self,
        id: u64,
        windows: [(u32, u32, u32); 2],
        since: [(u32, u32, u32); 2],
        packets: [u64; 2],
        bytes: [u64; 2],
        last_ms: u64,
    ) {
        let Some(slot) = self.slot_of(id) else {
            return;
        };
        let Some(s) = self
            .slab
            .get_mut(slot as usize)
            .and_then(|x| x.as_mut())
            .filter(|s| s.id == id)
        else {
            return;
        };
        let mut moved = packets[0] + packets[1] > 0;
        // The edge that moved further from where the record last was; a
        // state behind that (not expected: it was merged with it) takes
        // the program's.
        let further = |state: u32, program: u32, base: u32| {
            let (s, p) = (state.wrapping_sub(base), program.wrapping_sub(base));
            if s > 1 << 31 || p > s {
                program
            } else {
                state
            }
        };
        for ((p, (seqlo, seqhi, max_win)), (lo0, hi0, _)) in
            [&mut s.src, &mut s.dst].into_iter().zip(windows).zip(since)
        {
            let lo = further(p.seqlo, seqlo, lo0);
            if lo != p.seqlo {
                p.seqlo = lo;
                moved = true;
            }
            let hi = further(p.seqhi, seqhi, hi0);
            if hi != p.seqhi {
                p.seqhi = hi;
                moved = true;
            }
            if max_win > p.max_win {
                p.max_win = max_win;
                moved = true;
            }
        }
        for side in 0..2 {
            s.packets[side] += packets[side];
            s.bytes[side] += bytes[side];
            if let Some(st) = &s.stats {
                let out = (s.dir == Direction::Out) != (side == 1);
                let d = if out { Direction::Out } else { Direction::In };
                st.count_many(d, packets[side], bytes[side]);
            }
        }
        s.last_ms = s.last_ms.max(last_ms);
        // pfsync hears of it as of a packet's change: one update per
        // state per read (every tick while the program carries it). Not
        // when the queue is half full: user space's inserts and deletes
        // keep the other half (a state the program carries moves again by
        // the next read, and is sent then).
        let (creator, no_sync) = (s.creator, s.no_sync());
        if moved && self.pending_events() < self.event_limit() / 2 {
            self.record_event(id, creator, no_sync, replica::Pending::Update);
        }
    }
}

/// pf's window check and update for one segment from `src` to `dst`:
/// Ok(true) when it fitted strictly, Ok(false) when it passed only
/// loosely (sloppy, closing, or an unverified state), Err when it is
/// refused. Public for the in-kernel fast path's tests, which check its
/// program against this.
pub fn track_window(
    src: &mut Peer,
    dst: &mut Peer,
    sloppy: bool,
    unverified: u8,
    seg: &TcpSeg,
) -> Result<bool, TrackError> {
    let flags = seg.flags;
    let mut seq = seg.seq;
    let orig_seq = seq;
    let mut ack = seg.ack;
    // Window scaling applies only when both SYNs carried the option.
    let (mut sws, mut dws) = match (src.wscale, dst.wscale) {
        (Some(a), Some(b)) => (a, b),
        _ => (0, 0),
    };
    // Windows are unscaled here and shifted where they are used.
    let mut win = seg.window as u32;
    let mut end;
    if src.seqlo == 0 && src.state < tcps::SYN_SENT {
        // First packet from this side (typically the SYN/ACK).
        if flags & SYN != 0 && dst.wscale.is_some() {
            src.wscale = seg.wscale.map(|w| w.min(MAX_WSCALE));
            match src.wscale {
                Some(ws) => {
                    sws = ws;
                    win = (win + (1 << ws) - 1) >> ws;
                    dws = dst.wscale.unwrap_or(0);
                }
                None => {
                    // The other side asked for scaling in vain.
                    dst.max_win <<= dst.wscale.unwrap_or(0);
                    dst.wscale = None;
                }
            }
        }
        end = seq.wrapping_add(seg.payload_len);
        if flags & SYN != 0 {
            end = end.wrapping_add(1);
        }
        if flags & FIN != 0 {
            end = end.wrapping_add(1);
        }
        src.seqlo = seq;
        if src.state < tcps::SYN_SENT {
            src.state = tcps::SYN_SENT;
        }
        let lim = end.wrapping_add(((dst.max_win as u64) << dws).max(1) as u32);
        if src.seqhi == 1 || seq_geq(lim, src.seqhi) {
            src.seqhi = lim;
        }
        if win > src.max_win {
            src.max_win = win;
        }
    } else {
        if flags & SYN != 0 {
            // A retransmitted SYN carries an unscaled window.
            sws = 0;
            dws = 0;
        }
        end = seq.wrapping_add(seg.payload_len);
        if flags & SYN != 0 {
            end = end.wrapping_add(1);
        }
        if flags & FIN != 0 {
            end = end.wrapping_add(1);
        }
    }
    // No ACK, a RST|ACK with a zero ack (broken stacks), or an ack
    // before the other side has sent anything: skip the ack check.
    if flags & ACK == 0
        || (ack == 0 && flags & (ACK | RST) == (ACK | RST))
        || dst.state < tcps::SYN_SENT
    {
        ack = dst.seqlo;
    }
    if seq == end {
        // No data: ease the sequence restrictions.
        seq = src.seqlo;
        end = seq;
    }
    let ackskew = dst.seqlo.wrapping_sub(ack) as i32 as i64;
    let dwin = ((dst.max_win as u64) << dws) as u32;
    let in_window = seq_geq(src.seqhi, end)
        && seq_geq(seq, src.seqlo.wrapping_sub(dwin))
        && ackskew >= -MAX_ACK_WINDOW
        && ackskew <= (MAX_ACK_WINDOW << sws)
        && (flags & RST == 0
            || orig_seq == src.seqlo
            || orig_seq == src.seqlo.wrapping_add(1)
            || orig_seq.wrapping_add(1) == src.seqlo);
    let loose = (dst.state < tcps::SYN_SENT
        || dst.state >= tcps::FIN_WAIT_2
        || src.state >= tcps::FIN_WAIT_2)
        && seq_geq(src.seqhi.wrapping_add(MAX_ACK_WINDOW as u32), end)
        && seq_geq(seq, src.seqlo.wrapping_sub(MAX_ACK_WINDOW as u32));
    // A state the pfsync peer wrote (see `State::unverified`):
    // liberal, as Linux tracks a connection it picked up; only a RST
    // must still fall within a window of what is known.
    let liberal = !in_window
        && unverified != 0
        && (flags & RST == 0 || {
            let span = ((MAX_ACK_WINDOW as u64) << sws.max(dws)).max(dwin as u64) as u32;
            seq_geq(orig_seq, src.seqlo.wrapping_sub(span))
                && seq_geq(src.seqhi.wrapping_add(span), orig_seq)
        });
    // Accepted fully, or (`loose`: a side closing or not yet heard
    // from) only to move the windows, FIN and RST, not the handshake's
    // states.
    let full = in_window || sloppy || liberal;
    if !full && !loose {
        return Err(TrackError::Mismatch);
    }
    if src.max_win < win {
        src.max_win = win;
    }
    if seq_gt(end, src.seqlo) {
        src.seqlo = end;
    }
    if flags & ACK != 0 {
        let lim = ack.wrapping_add(((win as u64) << sws).max(1) as u32);
        if seq_geq(lim, dst.seqhi) {
            dst.seqhi = lim;
        }
    }
    if full && flags & SYN != 0 && src.state < tcps::SYN_SENT {
        src.state = tcps::SYN_SENT;
    }
    if flags & FIN != 0 && src.state < tcps::CLOSING {
        src.state = tcps::CLOSING;
    }
    if full && flags & ACK != 0 {
        if dst.state == tcps::SYN_SENT {
            dst.state = tcps::ESTABLISHED;
        } else if dst.state == tcps::CLOSING {
            dst.state = tcps::FIN_WAIT_2;
        }
    }
    if flags & RST != 0 {
        src.state = tcps::TIME_WAIT;
        dst.state = tcps::TIME_WAIT;
    }
    Ok(in_window)
}

/// A TCP state whose initiator's side has not reached ESTABLISHED: its
/// responder has not answered (pf moves the initiator's side there at
/// the responder's first ACK).
fn is_halfopen(s: &State) -> bool {
    s.key.proto == 6 && s.src.state < tcps::ESTABLISHED
}

/// The key a rule's states are counted under (pf's `states_cur`, for
/// `max` and for the rule's own adaptive timeouts): its compiled state
/// options, one `Arc` per rule, when they set either.
fn max_key(opts: Option<&Arc<StateOpts>>) -> Option<usize> {
    opts.filter(|o| {
        o.max.is_some()
            || o.timeouts
                .iter()
                .any(|(t, v)| *t == Timeout::AdaptiveStart && *v > 0)
    })
    .map(|o| Arc::as_ptr(o) as *const () as usize)
}

#[cfg(test)]
mod size_tests {
    /// The memory goal (<= 200 bytes per state with the index, issue 16)
    /// depends on this; rare features go in `StateExt`. (232 once states
    /// pointed at their rule's counters; 184 since the translated key,
    /// the normalizations and the rule's reference shrank.)
    #[test]
    fn state_stays_small() {
        assert!(std::mem::size_of::<Option<super::State>>() <= 176);
    }

    /// Translated states share their interned addresses, counted: the
    /// entry goes when its last state does, and is reused.
    #[test]
    fn translation_addresses_are_shared_and_released() {
        use super::{FlowKey, StateTable};
        use palisade_conf::ir::{Direction, KeepState};
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let mut t = StateTable::new(1);
        let mut ids = Vec::new();
        for i in 0..3u16 {
            let key = FlowKey {
                proto: 17,
                src: ip("198.18.0.1"),
                dst: ip("203.0.113.9"),
                sport: 1000 + i,
                dport: 53,
            };
            let to = FlowKey {
                src: ip("203.0.113.2"),
                sport: 50001 + i,
                ..key.clone()
            };
            let id = t
                .insert(
                    key,
                    Some(to.clone()),
                    Direction::Out,
                    "em0",
                    None,
                    KeepState::Keep,
                    None,
                    0,
                    None,
                    1,
                )
                .unwrap();
            assert_eq!(t.translated(t.get(id).unwrap()), Some(to));
            ids.push(id);
        }
        assert_eq!(t.xlat.ids.len(), 1);
        assert_eq!(t.xlat.entries[0].2, 3);
        t.remove(ids[0]);
        t.remove(ids[1]);
        assert_eq!(t.xlat.entries[0].2, 1);
        t.remove(ids[2]);
        assert!(t.xlat.ids.is_empty());
        assert_eq!(t.xlat.free, vec![0]);
        // Another translation takes the freed entry.
        let key = FlowKey {
            proto: 6,
            src: ip("2001:db8::1"),
            dst: ip("2001:db8:1::1"),
            sport: 40000,
            dport: 80,
        };
        let to = FlowKey {
            dst: ip("2001:db8:2::1"),
            dport: 8080,
            ..key.clone()
        };
        let id = t
            .insert(
                key,
                Some(to.clone()),
                Direction::In,
                "em0",
                None,
                KeepState::Keep,
                None,
                0,
                None,
                1,
            )
            .unwrap();
        assert_eq!(t.xlat.entries.len(), 1);
        let s = t.get(id).unwrap();
        assert_eq!(t.translated(s), Some(to.clone()));
        assert_eq!(t.stack(s), to);
        assert_eq!(
            t.lookup(&to.reversed(), Direction::Out, "em0").unwrap().id,
            id
        );
    }
}
