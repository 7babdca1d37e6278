//! Handing forwarded flows to the in-kernel fast path and taking them
//! back (docs/fastpath.md).
//!
//! A flow is learnt from the packets the data plane forwards itself: each
//! one that passes pf on the way in and on the way out by two state hits
//! and leaves as one frame, untagged, tells where its direction goes
//! (`Trace`). Once both directions are known (TCP) and both states need
//! nothing per packet (`StateTable::fast_view`), the flow's record (both
//! states' windows) and its two directions are written to the program's
//! maps. UDP: a direction whose packets leave pf's UDP states as they are
//! (`udp_settled`) is handed over alone, the other joins when it is
//! settled too, and the program stops when pf moves the states so that a
//! direction it has would move them further (`fast_udp_unsettled`).
//!
//! From then on the program owns the record while its `slow` mark is
//! clear, and user space only reads it (every tick: windows, counters,
//! the last packet's time into the states). When the program gives a
//! packet of the flow back it sets the mark; user space reads the record
//! before pf sees that packet, owns it from then on, and hands it back a
//! tick after the last packet it saw, or takes the flow away for good
//! (the states closing, gone, killed). Taking away removes the
//! directions first, so the program no longer finds the flow.
//!
//! A hand-over fences both ways: the program gives their packets back,
//! counted and marked, until user space has sent as many (`fast_commit`
//! says so), so that none queued in user space at the hand-over is
//! overtaken; a way that never lets the counts agree goes free after
//! `FENCE_FORCE_MS` (docs/fastpath.md, "Order").

use std::collections::HashMap;

use palisade_conf::ir::Direction;
use palisade_filter::state::{pseudo, FastView, Peer};
use palisade_wire::{IpInfo, L4};

use super::Dataplane;
use crate::fastpath::{
    FastPath, FpBump, FpDir, FpFlow, FpHalf, FpKey, FpPeer, FpWay, FpWin, FP_NAT, FP_ROUTE,
    FP_TAGGED,
};

/// What the packet under way has shown so far.
#[derive(Default)]
pub(super) struct Trace {
    active: bool,
    port: usize,
    /// pf's passes: interface, direction, state.
    passes: Vec<(usize, Direction, u64)>,
    sends: u32,
    /// The packet's key as the program sees it on the way in.
    in_key: Option<FpKey>,
    /// The one frame sent: port, its destination and source MAC, its
    /// 802.1Q VLAN, the packet's addresses and ports as it leaves (in a
    /// key of the way in: equal to `in_key` unless pf translated it).
    out: Option<(usize, [u8; 12], Option<u16>, FpKey)>,
    /// The destination MAC the packet arrived with, and its 802.1Q VLAN.
    in_dst: [u8; 6],
    in_vlan: Option<u16>,
    bad: bool,
    /// The packet belongs to a flow the program has, and the program did
    /// not see it (it was queued before the hand-over; or has IP
    /// options): the flow, and its record as read before pf decided it.
    unseen: Option<([u64; 2], FpFlow)>,
    /// The program gave the packet back during its way's fence (marked):
    /// the flow, the way, and the worker deciding it.
    fenced: Option<([u64; 2], usize, usize)>,
    /// The interface a forwarded packet left by, when a routing option
    /// (`route-to`, `reply-to`) chose it over the way out pf filtered it
    /// on.
    via: Option<usize>,
}

struct Learnt {
    key: FpKey,
    dir: FpDir,
    /// Logical interfaces in and out (where pf filtered it: the
    /// counters), and the family.
    in_ix: usize,
    out_ix: usize,
    v6: bool,
    /// The interface it leaves by: `out_ix`, or a routing option's.
    sent_ix: usize,
}

struct Flow {
    slot: u32,
    gen: u32,
    /// The states (the same twice when both passes found one).
    ids: [u64; 2],
    /// By the side of `ids[0]` that sends.
    dirs: [Option<Learnt>; 2],
    handed: bool,
    /// User space owns the record (the program marked it slow).
    slow: bool,
    slow_seen: u64,
    /// The record as last read: counters since are new.
    base: FpFlow,
    /// The last window bump written to the flow's slot (0: none), and
    /// its edges (a bump that would say the same is not written again).
    bump: u32,
    bump_w: [[FpWin; 2]; 2],
    /// The fence at the hand-over (`FpFlow::fence`), per way (`dirs`'
    /// index, the program's way): the marked packets user space has sent
    /// on, and what the last bump said of them (`FpBump::rel`).
    done: [u32; 2],
    rel: [u32; 2],
    /// When the way's first marked packet was seen (ms; 0: none yet), and
    /// whether its fence is let go regardless (`FENCE_FORCE_MS`).
    fence_first: [u64; 2],
    forced: [bool; 2],
}

impl Flow {
    /// The window edges the states have now and the fence's release, for
    /// the program to merge (`FpBump`, its id still to set).
    fn bump_of(&self, views: &[FastView]) -> FpBump {
        let win = |p: &Peer| FpWin {
            seqlo: p.seqlo,
            seqhi: p.seqhi,
            max_win: p.max_win,
        };
        let mut bump = FpBump {
            rel: self.rel,
            ..FpBump::default()
        };
        for (k, v) in views.iter().enumerate().take(2) {
            bump.w[k] = [win(&v.peers[0]), win(&v.peers[1])];
        }
        bump
    }
}

/// A way whose packets keep coming faster than user space sends them on
/// (a flood; an exchange between hosts on this machine, `fast_end`), or
/// some of whose marked packets never reached user space (a full ring
/// dropped them), never finds the fence's counts equal: from its first
/// marked packet user space sees this long (ms) after the first, the
/// program takes it regardless (the packets then in user space may be
/// overtaken, as before the fence).
const FENCE_FORCE_MS: u64 = 200;

/// Whether the fast path (if any) sends to `mac`: a full neighbour
/// table keeps such a neighbour (a free function, so that the table can
/// ask while the data plane lends it out).
pub(super) fn program_sends_to(fast: Option<&Offloads>, mac: &[u8; 6]) -> bool {
    fast.is_some_and(|o| o.by_mac.contains_key(mac))
}

pub(super) struct Offloads {
    fp: FastPath,
    /// Interface index of each port, and whether the program is on it (a
    /// port created again may not take it: then no flow crosses it).
    ifindex: Vec<u32>,
    program: Vec<bool>,
    flows: HashMap<[u64; 2], Flow>,
    by_key: HashMap<FpKey, [u64; 2]>,
    /// The flows whose learnt directions send to a MAC (a routed
    /// direction's next hop, a bridged one's host): what a neighbour or a
    /// host that moves takes back, without a scan. May name flows gone
    /// or learnt again since (checked on use).
    by_mac: HashMap<[u8; 6], Vec<[u64; 2]>>,
    /// The flow each state belongs to (a packet user space passed names
    /// its states: their UDP flow may have to stop).
    by_state: HashMap<u64, [u64; 2]>,
    free: Vec<u32>,
    /// Slots freed this tick, and the tick before: reused a whole tick
    /// later (a program run that found an old direction just before it
    /// went finds the record dead, and checks the generation under the
    /// lock besides).
    cooling: Vec<u32>,
    cooled: Vec<u32>,
    /// Flows taken back because user space met one of their packets the
    /// program had not seen (queued before the hand-over): not learnt
    /// again before this time (ms), so that the queue drains first.
    retry_after: HashMap<[u64; 2], u64>,
    /// Flows ready to be handed over (`fast_commit`).
    to_hand: Vec<[u64; 2]>,
    /// Marked packets decided and not yet known sent: the worker whose
    /// frames they are, the flow, the way (`fast_frames_sent` counts a
    /// worker's once its frames are out; another worker's may still wait
    /// in its batch).
    pending: Vec<(usize, [u64; 2], usize)>,
    /// The frame about to be input came marked by the fence, to the
    /// worker given (`Dataplane::note_fenced`).
    rx_fenced: Option<usize>,
    /// Fences let go after `FENCE_FORCE_MS` (`show info`).
    fences_forced: u64,
    next_slot: u32,
    next_gen: u32,
    next_bump: u32,
    /// CLOCK_MONOTONIC at the data plane's 0 ms (the program reads the
    /// coarse variant of the same clock, a tick behind at most). Before
    /// the boot, and so negative, when the daemon's clock starts ahead
    /// (`daemon::clock_origin`).
    epoch_ns: i128,
}

/// Flows the program's array holds (`FP_MAX_FLOWS`).
const MAX_FLOWS: u32 = 131_072;

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn fp_peer(p: &Peer) -> FpPeer {
    FpPeer::from(p)
}

/// The MAC a learnt direction's frames go to: a routed one's next hop,
/// a bridged one's host.
fn sends_to(l: &Learnt) -> [u8; 6] {
    let mut m = [0u8; 6];
    if l.dir.fwd.flags & FP_ROUTE != 0 {
        m.copy_from_slice(&l.dir.fwd.eth[..6]);
    } else {
        m = l.dir.fwd.in_dst;
    }
    m
}

fn key_of(ifindex: u32, info: &IpInfo) -> Option<FpKey> {
    let (proto, sport, dport) = match info.l4 {
        L4::Tcp { sport, dport, .. } => (6, sport, dport),
        L4::Udp { sport, dport } => (17, sport, dport),
        _ => return None,
    };
    FpKey::new(ifindex, proto, info.src, info.dst, sport, dport)
}

/// The key of the flow an ICMP or ICMPv6 error arriving on `ifindex` is
/// about: its quoted packet reversed (the quote is of a packet that left
/// towards the error's sender; its flow's answers arrive where the error
/// does). None for anything else.
fn quoted_flow(ifindex: u32, ip: &[u8], info: &IpInfo) -> Option<FpKey> {
    let err = info.is_icmp_error();
    if !err {
        return None;
    }
    let q = palisade_wire::parse_quoted(ip.get(info.l4_offset + 8..info.len)?)?;
    if q.later_fragment || !matches!(q.proto, 6 | 17) {
        return None;
    }
    FpKey::new(ifindex, q.proto, q.dst, q.src, q.dport, q.sport)
}

/// A frame's 802.1Q VLAN (None: untagged) and where its EtherType's
/// payload starts; None for a frame the program never takes (shorter
/// than a header, another kind of tag, two tags).
fn frame_vlan(frame: &[u8]) -> Option<(Option<u16>, usize)> {
    let t = |at: usize| Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]));
    match t(12)? {
        0x8100 => {
            let inner = t(16)?;
            (inner != 0x8100 && inner != 0x88a8).then_some((Some(t(14)? & 0x0fff), 18))
        }
        0x88a8 => None,
        _ => Some((None, 14)),
    }
}

/// Whether a UDP packet from `side` of a state leaves its sides as they
/// are: pf moves a sender that has sent nothing to SINGLE, and a SINGLE
/// receiver (one that has sent) to MULTIPLE; the program does neither,
/// so it takes only directions whose packets move nothing.
/// (Nor its timeout: pf moves it from udp.first at the second datagram.)
fn udp_settled(v: &FastView, side: u8) -> bool {
    let s = (side & 1) as usize;
    v.timeout_settled
        && v.peers[s].state >= pseudo::SINGLE
        && v.peers[s ^ 1].state != pseudo::SINGLE
}

/// A flow's record as user space hands it to the program: the states'
/// windows as they are now, counters from zero, not slow, the
/// directions' last bump (`bump`) already in, the ways in `fence`
/// fenced.
fn fresh_record(gen: u32, ids: [u64; 2], views: &[FastView], bump: u32, fence: u32) -> FpFlow {
    let mut rec = FpFlow {
        gen,
        bump,
        fence,
        states: if ids[0] == ids[1] { 1 } else { 2 },
        ..FpFlow::default()
    };
    for (k, v) in views.iter().enumerate().take(2) {
        rec.state[k] = FpHalf {
            peer: [fp_peer(&v.peers[0]), fp_peer(&v.peers[1])],
            ..FpHalf::default()
        };
    }
    rec
}

impl Offloads {
    pub(super) fn new(fp: FastPath, ifindex: Vec<u32>, now_ms: u64) -> Offloads {
        Offloads {
            fp,
            program: vec![true; ifindex.len()],
            ifindex,
            flows: HashMap::new(),
            by_key: HashMap::new(),
            by_mac: HashMap::new(),
            by_state: HashMap::new(),
            free: Vec::new(),
            cooling: Vec::new(),
            cooled: Vec::new(),
            retry_after: HashMap::new(),
            to_hand: Vec::new(),
            pending: Vec::new(),
            rx_fenced: None,
            fences_forced: 0,
            next_slot: 0,
            next_gen: 1,
            next_bump: 1,
            epoch_ns: monotonic_ns() as i128 - now_ms as i128 * 1_000_000,
        }
    }

    fn ms(&self, ns: u64) -> u64 {
        ((ns as i128 - self.epoch_ns).max(0) / 1_000_000) as u64
    }
}

impl Dataplane {
    /// Use the in-kernel fast path (already attached to the ports, whose
    /// interface indexes these are, in port order).
    pub fn set_fastpath(&mut self, fp: FastPath, ifindex: Vec<u32>, now_ms: u64) {
        self.fast = Some(Offloads::new(fp, ifindex, now_ms));
    }

    /// Port `port` is (again) interface `name`: whether its sockets are
    /// to be split (the program is on it). The first worker to ask after
    /// the interface was created again does the work, once: flows in or
    /// out of the old interface are taken away, the new index is used and
    /// the program goes on the new interface; if it cannot, no flow is
    /// handed over through that port (Err says why, once). False when the
    /// fast path is off.
    pub fn fast_port_ready(&mut self, port: usize, name: &str) -> Result<bool, String> {
        let Some(o) = self.fast.as_ref() else {
            return Ok(false);
        };
        let (Some(old), Some(on)) = (o.ifindex.get(port).copied(), o.program.get(port).copied())
        else {
            return Ok(false);
        };
        let new = crate::afpacket::ifindex(name).map_err(|e| e.to_string())? as u32;
        if new == old {
            return Ok(on);
        }
        self.fast_drop_where(|l| l.key.ifindex == old || l.dir.fwd.out_ifindex == old);
        let Some(o) = self.fast.as_mut() else {
            return Ok(false);
        };
        o.ifindex[port] = new;
        match o.fp.attach(name) {
            Ok(()) => {
                o.program[port] = true;
                Ok(true)
            }
            Err(e) => {
                o.program[port] = false;
                Err(format!("fastpath: {e}; its sockets are opened unsplit"))
            }
        }
    }

    /// Whether the in-kernel fast path is in use (`set_fastpath`).
    pub fn fastpath_on(&self) -> bool {
        self.fast.is_some()
    }

    /// Flows the program has now, and its counters.
    pub fn fastpath_status(&mut self) -> Option<(usize, crate::fastpath::FpCounters)> {
        let o = self.fast.as_mut()?;
        let handed = o.flows.values().filter(|f| f.handed).count();
        let mut c = o.fp.counters().unwrap_or_default();
        c.fence_forced = o.fences_forced;
        Some((handed, c))
    }

    /// The frame about to be input (`input`, `input_offload`) by worker
    /// `worker` came marked by the fast path's fence
    /// (`afpacket::Port::rx_fenced`).
    pub fn note_fenced(&mut self, worker: usize) {
        if let Some(o) = self.fast.as_mut() {
            o.rx_fenced = Some(worker);
        }
    }

    /// A frame arrives on `port`: if it belongs to a flow the program
    /// has, what the program did goes into the states first (pf decides
    /// the packet from them); and the trace of this packet starts.
    pub(super) fn fast_begin(&mut self, port: usize, frame: &[u8], now: u64) {
        let Some(o) = self.fast.as_mut() else {
            return;
        };
        let marked = std::mem::take(&mut o.rx_fenced);
        let mut in_dst = [0u8; 6];
        if let Some(d) = frame.get(..6) {
            in_dst.copy_from_slice(d);
        }
        self.trace = Trace {
            active: true,
            port,
            in_dst,
            ..Trace::default()
        };
        // The program's key holds the frame's 802.1Q tag, if any (another
        // kind of tag, or two, it never takes).
        let Some((vlan, l2)) = frame_vlan(frame) else {
            return;
        };
        self.trace.in_vlan = vlan;
        let ethertype = u16::from_be_bytes([frame[l2 - 2], frame[l2 - 1]]);
        if ethertype != 0x0800 && ethertype != 0x86dd {
            return;
        }
        let Ok(info) = palisade_wire::parse_ip(&frame[l2..]) else {
            return;
        };
        let Some(ix) = o.ifindex.get(port).copied() else {
            return;
        };
        // An ICMP error about a flow the program has (a router beyond
        // saying "too big" of its segments): pf checks the quoted
        // sequence number against the state's windows, which must be
        // read first (they were up to a tick old: the first errors were
        // refused as state-mismatch, and the sender learnt the path MTU a
        // tick late). Its flow is the quoted packet's answer, as it
        // arrives here.
        // A priority tag (VLAN 0) is the untagged interface's frame: the
        // program never takes it (its key has the tag), but it may belong
        // to an untagged flow the program has, whose record pf needs.
        // (`in_vlan` keeps the tag: no direction is learnt from it.)
        let vlan = vlan.filter(|v| *v != 0);
        let quoted = quoted_flow(ix, &frame[l2..], &info).map(|k| k.with_vlan(vlan));
        let Some(key) = key_of(ix, &info).map(|k| k.with_vlan(vlan)).or(quoted) else {
            return;
        };
        if quoted.is_none() {
            self.trace.in_key = Some(key);
        }
        let Some(ids) = o.by_key.get(&key).copied() else {
            return;
        };
        if let Some(f) = o.flows.get_mut(&ids) {
            if let (Some(worker), None) = (marked, quoted) {
                // The way whose fence held this packet back.
                if let Some(d) = (0..2).find(|&d| f.dirs[d].as_ref().is_some_and(|l| l.key == key))
                {
                    self.trace.fenced = Some((ids, d, worker));
                }
            }
            if f.slow {
                // Ours already: nothing moved since it was read.
                f.slow_seen = now;
                return;
            }
        }
        match self.fast_pull(ids) {
            Some(rec) if rec.slow != 0 => {
                // The program gave this packet back: user space owns the
                // flow until it hands it back.
                if let Some(f) = self.fast.as_mut().and_then(|o| o.flows.get_mut(&ids)) {
                    f.slow = true;
                    f.slow_seen = now;
                }
            }
            Some(rec) => {
                // A packet the program did not see as the flow's (it was
                // queued before the flow was handed over, or is one the
                // program never looks up: IP options). pf decides it from
                // the states as the program left them; if that changes
                // them, the flow is taken away (`fast_end`).
                self.trace.unseen = Some((ids, rec));
            }
            None => {
                self.fast_drop(ids);
                if let Some(o) = self.fast.as_mut() {
                    o.retry_after.insert(ids, now + 100);
                }
            }
        }
    }

    /// pf decided a pass of the packet under way.
    pub(super) fn fast_pass(&mut self, ix: usize, dir: Direction, d: &palisade_filter::Decision) {
        if !self.trace.active {
            return;
        }
        // A routing option is the state's own (its gateway chosen once,
        // when it was made): the way it sends by is learnt from the frame
        // as for any other. `dup-to` copies every packet: never taken.
        match d.state_id {
            Some(id) if d.passed() && !d.route.as_ref().is_some_and(|r| r.dup) => {
                self.trace.passes.push((ix, dir, id))
            }
            _ => self.trace.bad = true,
        }
    }

    /// A routing option (`route-to`, `reply-to`) sends the packet under
    /// way out of interface `e` (the routing table's way may be the
    /// same, or another).
    pub(super) fn fast_rerouted(&mut self, e: usize) {
        if self.trace.active {
            self.trace.via = Some(e);
        }
    }

    /// The packet under way leaves as a frame out of `port`.
    /// `vlan`: the 802.1Q tag it leaves with.
    pub(super) fn fast_sent(&mut self, port: usize, eth: [u8; 12], vlan: Option<u16>, ip: &[u8]) {
        if !self.trace.active {
            return;
        }
        self.trace.sends += 1;
        let Some(o) = self.fast.as_ref() else {
            return;
        };
        let Some(ix) = o.ifindex.get(self.trace.port).copied() else {
            self.trace.bad = true;
            return;
        };
        match palisade_wire::parse_ip(ip)
            .ok()
            .and_then(|i| key_of(ix, &i))
        {
            Some(k) => self.trace.out = Some((port, eth, vlan, k.with_vlan(self.trace.in_vlan))),
            None => self.trace.bad = true,
        }
    }

    /// The packet under way is done: learn its direction, and hand the
    /// flow over when both are known.
    pub(super) fn fast_end(&mut self, now: u64) {
        let t = std::mem::take(&mut self.trace);
        if let Some((ids, rec)) = t.unseen {
            self.fast_unseen_decided(ids, &rec, now);
        }
        if let Some((ids, d, worker)) = t.fenced {
            // One more of the way's marked packets is through pf: the
            // program is told once the worker's frames are out
            // (`fast_frames_sent`).
            // (Told before, as soon as user space had decided the last
            // packet the program had given back, an exchange would let
            // the fence down at once, but a burst's next packet, coming
            // before the batch is sent, was seen to overtake it: 81 of
            // 57,600 datagrams in the bursts test. Told after, an
            // exchange on this machine's veths never sees the counts
            // agree: the answer's receiver wakes on the sending CPU, and
            // the next request reaches the program before the worker
            // runs again. Over a wire its round trip is longer than that:
            // here `FENCE_FORCE_MS` ends such a fence.)
            if let Some(o) = self.fast.as_mut() {
                if let Some(f) = o.flows.get_mut(&ids) {
                    if f.fence_first[d] == 0 {
                        f.fence_first[d] = now.max(1);
                    }
                    if now >= f.fence_first[d] + FENCE_FORCE_MS && !f.forced[d] {
                        f.forced[d] = true;
                        o.fences_forced += 1;
                    }
                    o.pending.push((worker, ids, d));
                }
            }
        }
        // A UDP flow the program has, a packet of which user space passed
        // (another direction's, one the program gave back, a datagram cut
        // from a super-packet, one pf let in but not out): if pf moved
        // its sides so that a direction the program takes would move
        // them further, the program stops.
        let mut seen: Vec<[u64; 2]> = Vec::new();
        if let Some(o) = self.fast.as_ref() {
            for (_, _, id) in &t.passes {
                if let Some(ids) = o.by_state.get(id) {
                    if !seen.contains(ids) {
                        seen.push(*ids);
                    }
                }
            }
        }
        for ids in seen {
            if self.fast_udp_unsettled(ids) {
                self.fast_drop(ids);
            }
        }
        if !t.active || t.bad || t.sends != 1 || t.passes.len() != 2 {
            return;
        }
        let (Some((out_port, eth, out_vlan, to)), Some(key)) = (t.out, t.in_key) else {
            return;
        };
        // What pf translated (the state's translation, the same for every
        // packet of this direction); never the family.
        let nat = to != key;
        if to.family != key.family || to.proto != key.proto {
            return;
        }
        let ((in_ix, Direction::In, in_id), (out_ix, Direction::Out, out_id)) =
            (t.passes[0], t.passes[1])
        else {
            return;
        };
        // The frames' tags are their interfaces' VLANs (not a priority
        // tag, nor a frame a bridge passes with a tag of its own): the
        // program keys on the tag in and writes the way out's.
        // The interface it left by: pf's way out, unless a routing
        // option sent it by another.
        let sent_ix = t.via.unwrap_or(out_ix);
        let vlan_of = |i: usize| self.cfg.ifaces.get(i).map(|f| f.vlan);
        if vlan_of(in_ix) != Some(t.in_vlan) || vlan_of(sent_ix) != Some(out_vlan) {
            return;
        }
        let (Some(vin), Some(vout)) = (
            self.filter.states.fast_view(in_id),
            self.filter.states.fast_view(out_id),
        ) else {
            return;
        };
        let routed = self.cfg.ifaces[in_ix].bridge.is_none();
        // The flow's states in a fixed order, and this direction's side of
        // each (0: sent by the state's initiator).
        let side = |v: &FastView, pass: Direction| (v.dir != pass) as u8;
        let (ids, sides, views) = if in_id <= out_id {
            (
                [in_id, out_id],
                [side(&vin, Direction::In), side(&vout, Direction::Out)],
                [vin, vout],
            )
        } else {
            (
                [out_id, in_id],
                [side(&vout, Direction::Out), side(&vin, Direction::In)],
                [vout, vin],
            )
        };
        // UDP: only a direction whose packets leave the states as they
        // are (TCP: both sides established, checked by fast_view), and
        // that has sent more than one: a query and its answer (DNS on a
        // new source port each time) would otherwise be handed over
        // after the answer, the map writes (and, a second later, the
        // reads, and after the states expire the removal) spent on a flow
        // that sends nothing more.
        let udp = key.proto == 17;
        if udp
            && !(udp_settled(&views[0], sides[0])
                && udp_settled(&views[1], sides[1])
                && views[0].packets[sides[0] as usize & 1] >= 2
                && views[1].packets[sides[1] as usize & 1] >= 2)
        {
            return;
        }
        // A flow that holds one of these states with another (an if-bound
        // state made again after a route changed) goes first: each state
        // belongs to one flow, the one a change of the state
        // (`fast_state_touched`) takes back.
        let older: Vec<[u64; 2]> = self.fast.as_ref().map_or_else(Vec::new, |o| {
            ids.iter()
                .filter_map(|id| o.by_state.get(id).copied())
                .filter(|x| *x != ids)
                .collect()
        });
        for x in older {
            self.fast_drop(x);
        }
        let Some(o) = self.fast.as_mut() else {
            return;
        };
        if o.retry_after.get(&ids).is_some_and(|&t| now < t) {
            return;
        }
        // Both ports must have the program.
        let on = |p: usize| o.program.get(p).copied().unwrap_or(false);
        if !on(t.port) || !on(out_port) {
            return;
        }
        let Some(out_ifindex) = o.ifindex.get(out_port).copied() else {
            return;
        };
        // The MTU user space forwards this direction with: its out
        // interface's (a bridge's, its first member's port's).
        let out_mtu = super::router::mtu(&self.cfg, sent_ix) as u32;
        if !o.flows.contains_key(&ids) {
            let slot = match o.free.pop() {
                Some(s) => s,
                None if o.next_slot < MAX_FLOWS => {
                    o.next_slot += 1;
                    o.next_slot - 1
                }
                None => return,
            };
            for id in ids {
                o.by_state.insert(id, ids);
            }
            o.flows.insert(
                ids,
                Flow {
                    slot,
                    gen: 0,
                    ids,
                    dirs: [None, None],
                    handed: false,
                    slow: false,
                    slow_seen: 0,
                    base: FpFlow::default(),
                    bump: 0,
                    bump_w: Default::default(),
                    done: [0; 2],
                    rel: [0; 2],
                    fence_first: [0; 2],
                    forced: [false; 2],
                },
            );
        }
        let f = o.flows.get_mut(&ids).expect("just inserted");
        let d = (sides[0] & 1) as usize;
        if f.handed && (!udp || f.dirs[d].is_some()) {
            return;
        }
        f.dirs[d] = Some(Learnt {
            key,
            dir: FpDir {
                flow: f.slot,
                gen: 0,
                way: d as u8,
                fwd: FpWay {
                    key,
                    out_ifindex,
                    side: sides,
                    flags: if routed { FP_ROUTE } else { 0 } | if nat { FP_NAT } else { 0 },
                    eth,
                    in_dst: t.in_dst,
                    out_vlan: out_vlan.map_or(0, |v| FP_TAGGED | (v & 0x0fff)),
                    to_src: to.src,
                    to_dst: to.dst,
                    to_sport: to.sport,
                    to_dport: to.dport,
                    mtu: out_mtu,
                    scrub: [fp_scrub(&vin.scrub), fp_scrub(&vout.scrub)],
                    ..FpWay::default()
                },
            },
            in_ix,
            out_ix,
            v6: key.family == 6,
            sent_ix,
        });
        if let Some(l) = &f.dirs[d] {
            let list = o.by_mac.entry(sends_to(l)).or_default();
            if !list.contains(&ids) {
                list.push(ids);
            }
        }
        if f.handed {
            // A UDP flow's second direction, settled too: the program
            // takes it as well, into the same record.
            let (slot, gen) = (f.slot, f.gen);
            let Some(l) = f.dirs[d].as_mut() else {
                return;
            };
            l.dir.gen = gen;
            let (k, dir) = (l.key, l.dir);
            debug_assert_eq!(dir.flow, slot);
            if let Some(other) = o.by_key.get(&k).copied().filter(|x| *x != ids) {
                self.fast_drop(other);
            }
            let Some(o) = self.fast.as_mut() else {
                return;
            };
            if o.fp.set_dir(&k, &dir).is_ok() {
                o.by_key.insert(k, ids);
            } else if let Some(f) = o.flows.get_mut(&ids) {
                f.dirs[d] = None;
            }
            return;
        }
        // TCP: once both directions are known. UDP: one settled direction
        // is enough (a stream one way has no other). Written to the maps
        // by `fast_commit`, once this packet's frames are sent: the
        // system calls (a few µs each) would otherwise delay it, and a
        // new connection's first answer is what a request waits for.
        if (udp || f.dirs.iter().all(Option::is_some)) && !o.to_hand.contains(&ids) {
            o.to_hand.push(ids);
        }
    }

    /// Worker `worker`'s frames are sent: the marked packets it decided
    /// are counted as sent (`Flow::done`), and the program told.
    pub fn fast_frames_sent(&mut self, worker: usize) {
        let Some(o) = self.fast.as_mut() else {
            return;
        };
        if o.pending.is_empty() {
            return;
        }
        let mut moved: Vec<[u64; 2]> = Vec::new();
        o.pending.retain(|&(w, ids, d)| {
            if w != worker {
                return true;
            }
            if let Some(f) = o.flows.get_mut(&ids) {
                f.done[d] = f.done[d].wrapping_add(1);
                if !moved.contains(&ids) {
                    moved.push(ids);
                }
            }
            false
        });
        for ids in moved {
            let Some(f) = self.fast.as_ref().and_then(|o| o.flows.get(&ids)) else {
                continue;
            };
            if !f.handed || f.slow {
                continue;
            }
            let rel: [u32; 2] = std::array::from_fn(|d| match (f.forced[d], f.done[d]) {
                (true, _) => u32::MAX,
                (false, 0) => f.rel[d],
                (false, n) => n,
            });
            if rel != f.rel {
                self.fast_release(ids, rel);
            }
        }
    }

    /// Hand over the flows the packets since the last call made ready,
    /// as their states are now (the caller's frames are sent first).
    pub fn fast_commit(&mut self) {
        let Some(o) = self.fast.as_mut() else {
            return;
        };
        if o.to_hand.is_empty() {
            return;
        }
        for ids in std::mem::take(&mut o.to_hand) {
            let Some(o) = self.fast.as_ref() else {
                return;
            };
            let Some(f) = o.flows.get(&ids) else {
                continue;
            };
            // Handed meanwhile; or TCP with a direction not (or no
            // longer) known: a flow dropped and learnt again since.
            let udp = f.dirs.iter().flatten().any(|l| l.key.proto == 17);
            if f.handed || !(udp || f.dirs.iter().all(Option::is_some)) {
                continue;
            }
            let (Some(v0), Some(v1)) = (
                self.filter.states.fast_view(ids[0]),
                self.filter.states.fast_view(ids[1]),
            ) else {
                continue;
            };
            // A key another flow still holds (its states not yet found
            // gone, the ports reused): that one goes first.
            let others: Vec<[u64; 2]> = f
                .dirs
                .iter()
                .flatten()
                .filter_map(|l| o.by_key.get(&l.key).copied())
                .filter(|other| *other != ids)
                .collect();
            for other in others {
                self.fast_drop(other);
            }
            self.fast_hand_over(ids, [v0, v1]);
        }
    }

    /// pf decided a packet of a handed flow that the program had not
    /// seen, from the states as the program had left them (`rec`). If
    /// that moved a window edge, the program merges the states' edges
    /// into its record at its next packet (`FpBump`: each edge to the
    /// further of the two, which is what pf's updates of established
    /// sides come to in any order; `fast_sync` merges the same way the
    /// other way). If it moved more (the TCP state: a FIN, a RST) or the
    /// states are gone, the flow is taken away and learnt again later.
    /// Else the program goes on from a record that is pf's own.
    fn fast_unseen_decided(&mut self, ids: [u64; 2], rec: &FpFlow, now: u64) {
        let states = if ids[0] == ids[1] { 1 } else { 2 };
        let Some(views) = self.fast_views(ids) else {
            self.fast_drop(ids);
            if let Some(o) = self.fast.as_mut() {
                o.retry_after.insert(ids, now + 100);
            }
            return;
        };
        let Some(mut bump) = self
            .fast
            .as_ref()
            .and_then(|o| o.flows.get(&ids))
            .map(|f| f.bump_of(&views))
        else {
            return;
        };
        let same = (0..states).all(|k| {
            (0..2).all(|s| {
                let r = &rec.state[k].peer[s];
                bump.w[k][s]
                    == FpWin {
                        seqlo: r.seqlo,
                        seqhi: r.seqhi,
                        max_win: r.max_win,
                    }
            })
        });
        if same {
            return;
        }
        let Some(o) = self.fast.as_mut() else {
            return;
        };
        let Some(f) = o.flows.get_mut(&ids) else {
            return;
        };
        if f.bump != 0 && f.bump_w == bump.w {
            // Said already (the program merges it at its next packet).
            return;
        }
        bump.id = o.next_bump;
        o.next_bump = o.next_bump.wrapping_add(1).max(1);
        if o.fp.set_bump(f.slot, &bump).is_ok() {
            f.bump = bump.id;
            f.bump_w = bump.w;
        } else {
            self.fast_drop(ids);
        }
    }

    /// The flow's states as the fast path sees them (one when both
    /// passes found the same), None if any is gone or no longer the
    /// program's to take.
    fn fast_views(&self, ids: [u64; 2]) -> Option<Vec<FastView>> {
        let states = if ids[0] == ids[1] { 1 } else { 2 };
        ids.iter()
            .take(states)
            .map(|&id| self.filter.states.fast_view(id))
            .collect()
    }

    /// Tell the program how far the fences of a flow's ways have come
    /// (`rel`, per way: `FpBump::rel`), with the states' window edges as
    /// they are now (what pf made of the marked packets).
    fn fast_release(&mut self, ids: [u64; 2], rel: [u32; 2]) {
        let Some(views) = self.fast_views(ids) else {
            self.fast_drop(ids);
            return;
        };
        let Some(o) = self.fast.as_mut() else {
            return;
        };
        let id = o.next_bump;
        o.next_bump = o.next_bump.wrapping_add(1).max(1);
        let Some(f) = o.flows.get_mut(&ids) else {
            return;
        };
        f.rel = rel;
        let mut bump = f.bump_of(&views);
        bump.id = id;
        if o.fp.set_bump(f.slot, &bump).is_ok() {
            f.bump = bump.id;
            f.bump_w = bump.w;
        } else {
            self.fast_drop(ids);
        }
    }

    /// A UDP flow the program has, one of whose directions would now move
    /// the states' sides (or whose states are gone).
    fn fast_udp_unsettled(&self, ids: [u64; 2]) -> bool {
        let Some(f) = self.fast.as_ref().and_then(|o| o.flows.get(&ids)) else {
            return false;
        };
        let mut dirs = f.dirs.iter().flatten().peekable();
        if !f.handed || dirs.peek().is_none_or(|l| l.key.proto != 17) {
            return false;
        }
        let views = ids.map(|id| self.filter.states.fast_view(id));
        let (Some(a), Some(b)) = (views[0], views[1]) else {
            return true;
        };
        dirs.any(|l| !(udp_settled(&a, l.dir.fwd.side[0]) && udp_settled(&b, l.dir.fwd.side[1])))
    }

    /// Write a flow whose directions are known (TCP: both; UDP: one or
    /// both): its record, then its directions.
    fn fast_hand_over(&mut self, ids: [u64; 2], views: [FastView; 2]) {
        let Some(o) = self.fast.as_mut() else {
            return;
        };
        let Some(f) = o.flows.get_mut(&ids) else {
            return;
        };
        // UDP: a direction learnt earlier (a hand-over that failed) may
        // have become unsettled since.
        for d in f.dirs.iter_mut() {
            if d.as_ref().is_some_and(|l| {
                l.key.proto == 17
                    && !(udp_settled(&views[0], l.dir.fwd.side[0])
                        && udp_settled(&views[1], l.dir.fwd.side[1]))
            }) {
                *d = None;
            }
        }
        if f.dirs.iter().all(Option::is_none) {
            return;
        }
        {
            let gen = o.next_gen;
            o.next_gen = o.next_gen.wrapping_add(1).max(1);
            // The slot's bump from an earlier flow is not this one's.
            f.bump = 0;
            f.bump_w = Default::default();
            if o.fp.set_bump(f.slot, &FpBump::default()).is_err() {
                return;
            }
            // Both ways fenced (one not yet learnt too: a UDP flow's other
            // direction joins later, with its own packets in user space).
            let rec = fresh_record(gen, ids, &views, 0, 3);
            if o.fp.set_flow(f.slot, &rec).is_err() {
                return;
            }
            f.gen = gen;
            f.base = rec;
            f.done = [0; 2];
            f.rel = [0; 2];
            f.fence_first = [0; 2];
            f.forced = [false; 2];
            let mut dirs = Vec::with_capacity(2);
            for l in f.dirs.iter_mut().flatten() {
                l.dir.gen = gen;
                dirs.push((l.key, l.dir));
                o.by_key.insert(l.key, ids);
            }
            let ok = o.fp.set_dirs(f.slot, gen, &dirs).is_ok();
            f.handed = ok;
            if !ok {
                for l in f.dirs.iter().flatten() {
                    let _ = o.fp.remove_dir(&l.key);
                    o.by_key.remove(&l.key);
                }
            }
        }
    }

    /// Read a handed flow's record and put what the program did since
    /// the last read into the states and the counters. The record.
    fn fast_pull(&mut self, ids: [u64; 2]) -> Option<FpFlow> {
        self.fast_pull_read(ids, None)
    }

    /// As `fast_pull`, with the record already read (`read`, by the
    /// tick's batch) if given.
    fn fast_pull_read(&mut self, ids: [u64; 2], read: Option<FpFlow>) -> Option<FpFlow> {
        let o = self.fast.as_mut()?;
        let f = o.flows.get_mut(&ids)?;
        // Not the program's (never handed, or user space owns it: the
        // states are ahead of the record, which must not roll them back).
        if !f.handed || f.slow {
            return None;
        }
        let rec = match read {
            Some(r) => r,
            None => o.fp.flow(f.slot).ok()?,
        };
        if rec.gen != f.gen {
            return None;
        }
        let base = std::mem::replace(&mut f.base, rec);
        let last_ms = o.ms(rec.last_ns);
        let states = if ids[0] == ids[1] { 1 } else { 2 };
        let mut moved = [0u64; 2];
        for (k, &id) in ids.iter().enumerate().take(states) {
            let (now, then) = (&rec.state[k], &base.state[k]);
            let windows =
                [0, 1].map(|s| (now.peer[s].seqlo, now.peer[s].seqhi, now.peer[s].max_win));
            let since =
                [0, 1].map(|s| (then.peer[s].seqlo, then.peer[s].seqhi, then.peer[s].max_win));
            let packets = [0, 1].map(|s| now.packets[s].saturating_sub(then.packets[s]));
            let bytes = [0, 1].map(|s| now.bytes[s].saturating_sub(then.bytes[s]));
            if k == 0 {
                moved = packets;
            }
            let last = if packets[0] + packets[1] > 0 {
                last_ms
            } else {
                0
            };
            self.filter
                .states
                .fast_sync(id, windows, since, packets, bytes, last);
        }
        // Per direction (by the first state's side): its interfaces count
        // what passed, as pf's passes would have.
        let n = moved[0] + moved[1];
        if n > 0 {
            self.filter.count_fast(n, 2);
            self.counters.frames_in += n;
            self.counters.frames_out += n;
            #[allow(clippy::type_complexity)]
            let dirs: Vec<(usize, usize, bool, u64, u64, Option<[u8; 6]>)> = self
                .fast
                .as_ref()
                .and_then(|o| o.flows.get(&ids))
                .map(|f| {
                    f.dirs
                        .iter()
                        .enumerate()
                        .filter_map(|(d, l)| {
                            let l = l.as_ref()?;
                            let b = rec.state[0].bytes[d].saturating_sub(base.state[0].bytes[d]);
                            // Bridged unchanged (leaving with the
                            // destination it came with): its source is
                            // the sending host's.
                            let src = (l.dir.fwd.eth[..6] == l.dir.fwd.in_dst).then(|| {
                                let mut m = [0u8; 6];
                                m.copy_from_slice(&l.dir.fwd.eth[6..12]);
                                m
                            });
                            Some((l.in_ix, l.out_ix, l.v6, moved[d], b, src))
                        })
                        .collect()
                })
                .unwrap_or_default();
            for (in_ix, out_ix, v6, p, b, src) in dirs {
                let bridge = self.cfg.ifaces.get(in_ix).and_then(|i| i.bridge);
                match bridge {
                    None => self.counters.routed += p,
                    Some(br) => {
                        self.counters.bridged += p;
                        // The sender's frames kept coming in on this member
                        // (a bridged flow's frames leave with the source
                        // they came with): its entry stays fresh, as user
                        // space's own learning would have kept it.
                        let learns = self.cfg.ifaces.get(in_ix).is_some_and(|i| !i.no_learn);
                        if let (true, Some(src), true) = (p > 0, src, learns) {
                            self.fdb.refresh(br, src, in_ix, last_ms);
                        }
                    }
                }
                for (ix, out) in [(in_ix, 0), (out_ix, 1)] {
                    if let Some(st) = self.if_stats.get_mut(ix) {
                        st.packets[v6 as usize][out][0] += p;
                        st.bytes[v6 as usize][out][0] += b;
                    }
                }
            }
        }
        Some(rec)
    }

    /// Take a flow away from the program: its directions first, then
    /// what it did last; the slot is free again.
    fn fast_drop(&mut self, ids: [u64; 2]) {
        let handed = {
            let Some(o) = self.fast.as_mut() else {
                return;
            };
            let Some(f) = o.flows.get(&ids) else {
                return;
            };
            if f.handed {
                // Only the keys this flow holds (a new flow may have the
                // same one).
                for l in f.dirs.iter().flatten() {
                    if o.by_key.get(&l.key) == Some(&ids) {
                        let _ = o.fp.remove_dir(&l.key);
                        o.by_key.remove(&l.key);
                    }
                }
            }
            f.handed
        };
        let rec = if handed { self.fast_pull(ids) } else { None };
        if let Some(o) = self.fast.as_mut() {
            // Taken away with marked packets user space has not read yet
            // (the program's count above what it decided): they wait in a
            // ring. Learnt again at once, the flow would
            // count them as its new fence's (`fast_begin` finds it by
            // their key) and let that down early: not before they are
            // read.
            let decided = |d: usize| {
                let pending = o.pending.iter().filter(|p| p.1 == ids && p.2 == d).count();
                o.flows
                    .get(&ids)
                    .map_or(0, |f| f.done[d].wrapping_add(pending as u32))
            };
            // (Its fence bit may be down already, let go by the forced
            // release with marked packets still unread.)
            let unread = rec.is_some_and(|r| (0..2).any(|d| r.given[d] > decided(d)));
            if unread {
                let now = o.ms(monotonic_ns());
                let t = o.retry_after.entry(ids).or_insert(0);
                *t = (*t).max(now + FENCE_FORCE_MS);
            }
            o.pending.retain(|p| p.1 != ids);
            o.to_hand.retain(|x| *x != ids);
            for id in ids {
                if o.by_state.get(&id) == Some(&ids) {
                    o.by_state.remove(&id);
                }
            }
            if let Some(f) = o.flows.remove(&ids) {
                for l in f.dirs.iter().flatten() {
                    let mac = sends_to(l);
                    if let Some(v) = o.by_mac.get_mut(&mac) {
                        v.retain(|x| *x != ids);
                        if v.is_empty() {
                            o.by_mac.remove(&mac);
                        }
                    }
                }
                if handed {
                    // A dead record: a program run already past the
                    // direction's lookup gives its packet back.
                    let dead = FpFlow {
                        gen: 0,
                        slow: 1,
                        ..FpFlow::default()
                    };
                    let _ = o.fp.set_flow(f.slot, &dead);
                }
                o.cooling.push(f.slot);
            }
        }
    }

    /// Interface `i`'s neighbour at `mac` moved to another MAC or lapsed:
    /// routed flows the program sends to `mac` there are taken back, so
    /// that user space resolves the next hop again before handing them
    /// over anew.
    /// Does the program send any flow to `mac`?
    pub(super) fn fast_sends_to(&self, mac: [u8; 6]) -> bool {
        program_sends_to(self.fast.as_ref(), &mac)
    }

    /// Port `port`'s MTU changed: the flows the program sends out by it
    /// (their directions carry the MTU they were handed over with) come
    /// back, to be handed over again with the new one.
    pub(super) fn fast_port_mtu_changed(&mut self, port: usize) {
        let Some(o) = self.fast.as_ref() else {
            return;
        };
        let ifaces = &self.cfg.ifaces;
        let leaves_by = |ix: usize| {
            ifaces.get(ix).is_some_and(|f| {
                f.port == Some(port)
                    || f.members
                        .iter()
                        .any(|m| ifaces.get(*m).and_then(|x| x.port) == Some(port))
            })
        };
        let gone: Vec<[u64; 2]> = o
            .flows
            .iter()
            .filter(|(_, f)| f.dirs.iter().flatten().any(|l| leaves_by(l.sent_ix)))
            .map(|(ids, _)| *ids)
            .collect();
        for ids in gone {
            self.fast_drop(ids);
        }
    }

    pub(super) fn fast_neigh_gone(&mut self, i: usize, mac: [u8; 6]) {
        self.fast_drop_to(mac, |l| l.dir.fwd.flags & FP_ROUTE != 0 && l.sent_ix == i);
    }

    /// Bridge `b` learnt host `mac` on member `m` afresh (it was unknown,
    /// or on another member): flows the program sends to it through the
    /// bridge (bridged, or routed to it as next hop) out of another port
    /// are taken back.
    pub(super) fn fast_host_at(&mut self, b: usize, mac: [u8; 6], m: usize) {
        // Nearly always no flow sends there (a new source on the wire):
        // nothing to work out.
        let Some(o) = self.fast.as_ref().filter(|o| o.by_mac.contains_key(&mac)) else {
            return;
        };
        let at = self
            .cfg
            .ifaces
            .get(m)
            .and_then(|f| f.port)
            .and_then(|p| o.ifindex.get(p).copied());
        let ifaces = &self.cfg.ifaces;
        let through: Vec<usize> = (0..ifaces.len())
            .filter(|&x| x == b || ifaces[x].bridge == Some(b))
            .collect();
        self.fast_drop_to(mac, |l| {
            through.contains(&l.sent_ix) && Some(l.dir.fwd.out_ifindex) != at
        });
    }

    /// `mac` was forgotten by hand from bridge `b`'s learning table
    /// (`bridge flush` / `deladdr`): the flows the program sends to it
    /// through the bridge come back to user space, which floods until the
    /// host is heard again (and their counts cannot learn it back).
    pub(super) fn fast_host_forgotten(&mut self, b: usize, mac: [u8; 6]) {
        if !self
            .fast
            .as_ref()
            .is_some_and(|o| o.by_mac.contains_key(&mac))
        {
            return;
        }
        let ifaces = &self.cfg.ifaces;
        let through: Vec<usize> = (0..ifaces.len())
            .filter(|&x| x == b || ifaces[x].bridge == Some(b))
            .collect();
        self.fast_drop_to(mac, |l| through.contains(&l.sent_ix));
    }

    /// Take away the flows one of whose learnt directions sends to `mac`
    /// and `hit` names (found through `by_mac`, which is pruned of flows
    /// that no longer send there).
    fn fast_drop_to(&mut self, mac: [u8; 6], hit: impl Fn(&Learnt) -> bool) {
        let Some(o) = self.fast.as_mut() else {
            return;
        };
        let Some(list) = o.by_mac.get_mut(&mac) else {
            return;
        };
        let flows = &o.flows;
        let sends = |ids: &[u64; 2], also: &dyn Fn(&Learnt) -> bool| {
            flows.get(ids).is_some_and(|f| {
                f.dirs
                    .iter()
                    .flatten()
                    .any(|l| sends_to(l) == mac && also(l))
            })
        };
        list.retain(|ids| sends(ids, &|_| true));
        let gone: Vec<[u64; 2]> = list
            .iter()
            .filter(|ids| sends(ids, &hit))
            .copied()
            .collect();
        if list.is_empty() {
            o.by_mac.remove(&mac);
        }
        for ids in gone {
            self.fast_drop(ids);
        }
    }

    /// A virtual MAC (CARP) goes off: every flow whose packets came to it
    /// or left from it is taken back, so that the program of a node no
    /// longer master forwards nothing that still reaches it (a switch
    /// that has not moved yet, a flood). Flows through the interface's
    /// own MAC stay.
    pub(super) fn fast_virtual_off(&mut self, mac: [u8; 6]) {
        self.fast_drop_where(|l| l.dir.fwd.in_dst == mac || l.dir.fwd.eth[6..12] == mac);
    }

    /// Every flow one of whose learnt directions `hit` names is taken
    /// back (a scan of all flows).
    fn fast_drop_where(&mut self, hit: impl Fn(&Learnt) -> bool) {
        let Some(o) = self.fast.as_ref() else {
            return;
        };
        let gone: Vec<[u64; 2]> = o
            .flows
            .iter()
            .filter(|(_, f)| f.dirs.iter().flatten().any(&hit))
            .map(|(ids, _)| *ids)
            .collect();
        for ids in gone {
            self.fast_drop(ids);
        }
    }

    /// A state changed by something other than its own packets (the
    /// pfsync peer's update or whole state merged into it): its flow, if
    /// the program has it, is taken back (what the program did is read
    /// into the state first; both merges keep the further window edges),
    /// and learnt again from the packets user space decides next.
    pub fn fast_state_touched(&mut self, id: u64) {
        let Some(ids) = self
            .fast
            .as_ref()
            .and_then(|o| o.by_state.get(&id).copied())
        else {
            return;
        };
        self.fast_drop(ids);
    }

    /// Every flow taken back from the program, what it did read into the
    /// states first (stopping: the states are saved as they stand).
    pub fn fast_take_all_back(&mut self) {
        let Some(o) = self.fast.as_ref() else {
            return;
        };
        let all: Vec<[u64; 2]> = o.flows.keys().copied().collect();
        for ids in all {
            self.fast_drop(ids);
        }
    }

    /// Flows whose states are gone (expired, killed, flushed) are taken
    /// away from the program at once.
    pub fn fast_reconcile(&mut self) {
        let Some(o) = self.fast.as_ref() else {
            return;
        };
        let gone: Vec<[u64; 2]> = o
            .flows
            .keys()
            .filter(|ids| ids.iter().any(|&id| self.filter.states.get(id).is_none()))
            .copied()
            .collect();
        for ids in gone {
            self.fast_drop(ids);
        }
    }

    /// Every tick: what the program did into the states (their counters,
    /// and their last packet's time for expiry), flows handed back or
    /// taken away.
    pub(super) fn fast_tick(&mut self, now: u64) {
        self.fast_commit();
        if let Some(o) = self.fast.as_mut() {
            let cooled = std::mem::replace(&mut o.cooled, std::mem::take(&mut o.cooling));
            o.free.extend(cooled);
            o.retry_after.retain(|_, t| *t > now);
        }
        self.fast_reconcile();
        let Some(o) = self.fast.as_ref() else {
            return;
        };
        let all: Vec<([u64; 2], bool, bool, u64, u32)> = o
            .flows
            .values()
            .map(|f| (f.ids, f.handed, f.slow, f.slow_seen, f.slot))
            .collect();
        // The records the program has, read in batches (a system call
        // per 4,096 slots, not one per flow).
        let used = o.next_slot;
        // (After a peak, when few flows are left in a long array, they
        // are read one by one instead.)
        let pulled = all.iter().filter(|a| a.1 && !a.2).count() as u32;
        let read: Vec<FpFlow> = if pulled > 0 && pulled.saturating_mul(16) >= used {
            let Some(o) = self.fast.as_mut() else {
                return;
            };
            let mut v = Vec::with_capacity(used as usize);
            while (v.len() as u32) < used {
                let from = v.len() as u32;
                match o.fp.flows_batch(from, (used - from).min(4096)) {
                    Ok(b) if !b.is_empty() => v.extend(b),
                    _ => break,
                }
            }
            v
        } else {
            Vec::new()
        };
        for (ids, handed, slow, seen, slot) in all {
            if !handed {
                // Learnt one way and never the other: forget it after a
                // while (it is learnt again if it comes back).
                if ids
                    .iter()
                    .any(|&id| self.filter.states.fast_view(id).is_none())
                {
                    self.fast_drop(ids);
                }
                continue;
            }
            if !slow {
                // (A slot the batch did not reach is read alone.)
                self.fast_pull_read(ids, read.get(slot as usize).copied());
                // (Every packet user space passed is checked; this is the
                // net under that.)
                if self.fast_udp_unsettled(ids) {
                    self.fast_drop(ids);
                }
                continue;
            }
            if now < seen + 200 {
                continue;
            }
            // Back to the program, as the states are now, if they still
            // need nothing per packet; else taken away.
            let Some(views) = self.fast_views(ids) else {
                self.fast_drop(ids);
                continue;
            };
            if self.fast_udp_unsettled(ids) {
                self.fast_drop(ids);
                continue;
            }
            let Some(o) = self.fast.as_mut() else {
                return;
            };
            let Some(f) = o.flows.get_mut(&ids) else {
                continue;
            };
            // The flow was quiet for a while: nothing of it is left in
            // user space, and no way it has needs a fence. One it has not
            // (a UDP flow's other direction) keeps its own.
            let fence = (0..2)
                .filter(|&d| f.dirs[d].is_none())
                .fold(0, |m, d| m | 1 << d);
            let rec = fresh_record(f.gen, ids, &views, f.bump, fence);
            if o.fp.set_flow(f.slot, &rec).is_ok() {
                f.base = rec;
                f.slow = false;
            }
        }
    }
}

/// A state's `scrub` as the program does it to each packet (`max-mss`
/// touches only SYNs, which the program gives back; `reassemble tcp`
/// keeps a TCP state from the program: `StateTable::fast_view`).
fn fp_scrub(sc: &palisade_filter::packet::ScrubActions) -> crate::fastpath::FpScrub {
    use crate::fastpath::{FPS_NO_DF, FPS_RANDOM_ID, FPS_TOS};
    crate::fastpath::FpScrub {
        flags: if sc.no_df { FPS_NO_DF } else { 0 }
            | if sc.random_id { FPS_RANDOM_ID } else { 0 }
            | if sc.tos.is_some() { FPS_TOS } else { 0 },
        min_ttl: sc.min_ttl.unwrap_or(0),
        tos: sc.tos.unwrap_or(0),
        pad: 0,
    }
}
