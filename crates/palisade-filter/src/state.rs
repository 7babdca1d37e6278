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

use palisade_conf::ir::{Af, Direction, KeepState, StateOpts, Timeout};

use crate::packet::RuleRef;

/// A connection's addresses as one packet sees them.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub proto: u8,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Ports; for ICMP queries the identifier in both.
    pub sport: u16,
    pub dport: u16,
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

const WIRE: u8 = 1;
const STACK: u8 = 2;

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

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// 64-bit id and the id of the firewall that created it (pfsync).
    pub id: u64,
    pub creator: u32,
    /// The creating packet as it arrived, and as it left after translation.
    pub key: FlowKey,
    pub translated: Option<FlowKey>,
    /// The keys as seen on the wire and by the stack, both oriented as an
    /// inbound packet would carry them (pf's PF_SK_WIRE and PF_SK_STACK).
    pub wire: FlowKey,
    pub stack: FlowKey,
    pub dir: Direction,
    /// The interface it is bound to (if-bound), or None for floating.
    pub bound: Option<String>,
    /// The interface that created it.
    pub iface: String,
    /// The initiator's side and the responder's.
    pub src: Peer,
    pub dst: Peer,
    pub rule: Option<RuleRef>,
    pub keep: KeepState,
    pub opts: Option<Arc<StateOpts>>,
    pub created_ms: u64,
    pub last_ms: u64,
    pub timeout: Timeout,
    /// Packets and bytes, initiator to responder and back.
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub no_sync: bool,
    pub sloppy: bool,
    /// Log every packet of this state (`log (all)`).
    pub log_all: bool,
}

impl State {
    /// `ESTABLISHED:ESTABLISHED`, `MULTIPLE:SINGLE`... as pfctl -ss prints.
    pub fn state_str(&self) -> String {
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

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateEvent {
    Insert(u64),
    Update(u64),
    Delete(u64),
}

/// Why tracking refused a packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackError {
    /// Outside the windows (pf's PFRES_BADSTATE, "state-mismatch").
    Mismatch,
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

/// The state table.
pub struct StateTable {
    states: HashMap<u64, State>,
    /// Normalized key -> states with that wire key (bit 1) and/or stack key
    /// (bit 2). Several states when if-bound states of one connection live
    /// on different interfaces.
    keys: HashMap<FlowKey, Vec<(u64, u8)>>,
    next: u64,
    pub creator: u32,
    events: Vec<StateEvent>,
    /// Global timeouts (seconds), indexed like `Timeout::ALL`.
    pub timeouts: [u32; 19],
    /// `set limit states`.
    pub limit: u32,
}

/// pf's default state limit.
pub const DEFAULT_STATE_LIMIT: u32 = 100_000;

impl StateTable {
    pub fn new(creator: u32) -> StateTable {
        let mut timeouts = [0u32; 19];
        for (i, t) in Timeout::ALL.iter().enumerate() {
            timeouts[i] = t.default_secs();
        }
        StateTable {
            states: HashMap::new(),
            keys: HashMap::new(),
            next: 1,
            creator,
            events: Vec::new(),
            timeouts,
            limit: DEFAULT_STATE_LIMIT,
        }
    }

    pub fn len(&self) -> usize {
        self.states.len()
    }

    pub fn is_empty(&self) -> bool {
        self.states.is_empty()
    }

    pub fn get(&self, id: u64) -> Option<&State> {
        self.states.get(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &State> {
        self.states.values()
    }

    /// Events since the last call (inserts, updates, deletes), for pfsync.
    pub fn drain_events(&mut self) -> Vec<StateEvent> {
        std::mem::take(&mut self.events)
    }

    fn find(&self, k: &FlowKey, need: u8, iface: &str) -> Option<u64> {
        self.keys.get(k)?.iter().find_map(|&(id, side)| {
            let s = self.states.get(&id)?;
            (side & need != 0 && s.bound.as_deref().is_none_or(|b| b == iface)).then_some(id)
        })
    }

    /// Find the state a packet belongs to (pf's pf_find_state): an inbound
    /// packet must carry a state's wire key, an outbound one its stack key.
    pub fn lookup(&self, tuple: &FlowKey, dir: Direction, iface: &str) -> Option<Hit> {
        let need = if dir == Direction::In { WIRE } else { STACK };
        let id = self.find(&norm(tuple, dir), need, iface)?;
        let s = self.states.get(&id)?;
        let target = if dir == Direction::In {
            &s.stack
        } else {
            &s.wire
        };
        let new = norm(target, dir);
        Some(Hit {
            id,
            reply: dir != s.dir,
            rewrite: (new != *tuple).then_some(new),
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
        let need = if dir == Direction::In { WIRE } else { STACK };
        let inner_dir = opposite(dir);
        let id = self.find(&norm(quoted, inner_dir), need, iface)?;
        let s = self.states.get(&id)?;
        let target = if dir == Direction::In {
            &s.stack
        } else {
            &s.wire
        };
        let new_inner = norm(target, inner_dir);
        let new_outer = norm(target, dir);
        let translated = new_inner != *quoted;
        Some(QuotedHit {
            id,
            inner: translated.then_some(new_inner),
            outer: translated.then_some(new_outer),
        })
    }

    /// Is this wire key taken (for choosing translation ports)?
    pub fn wire_in_use(&self, wire: &FlowKey) -> bool {
        self.keys
            .get(wire)
            .is_some_and(|v| v.iter().any(|(_, side)| side & WIRE != 0))
    }

    fn timeout_secs(&self, s: &State, t: Timeout) -> u32 {
        let i = Timeout::ALL.iter().position(|x| *x == t).unwrap_or(0);
        if let Some(o) = &s.opts {
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
        let (start, end) = self.adaptive();
        let n = self.states.len() as u64;
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

    fn adaptive(&self) -> (u64, u64) {
        let get = |t: Timeout| {
            let i = Timeout::ALL.iter().position(|x| *x == t).unwrap_or(0);
            self.timeouts[i] as u64
        };
        let (s, e) = (get(Timeout::AdaptiveStart), get(Timeout::AdaptiveEnd));
        if s == 0 && e == 0 {
            // pf's defaults: 60% and 120% of the state limit.
            (self.limit as u64 * 6 / 10, self.limit as u64 * 12 / 10)
        } else {
            (s, e)
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
    ) -> Result<u64, &'static str> {
        if self.states.len() as u64 >= self.limit as u64 {
            return Err("state-limit");
        }
        if let Some(m) = opts.as_ref().and_then(|o| o.max) {
            let used = self
                .states
                .values()
                .filter(|s| s.rule.is_some() && s.rule == rule)
                .count();
            if used as u32 >= m {
                return Err("state-limit");
            }
        }
        let bound_here = opts.as_ref().is_some_and(|o| o.if_bound);
        let after = translated.clone().unwrap_or_else(|| key.clone());
        let (wire, stack) = match dir {
            Direction::In => (norm(&key, dir), norm(&after, dir)),
            Direction::Out => (norm(&after, dir), norm(&key, dir)),
        };
        let clash = |k: &FlowKey, need: u8| {
            self.keys.get(k).is_some_and(|v| {
                v.iter().any(|(id, side)| {
                    side & need != 0
                        && self
                            .states
                            .get(id)
                            .is_some_and(|s| match (&s.bound, bound_here) {
                                (Some(b), true) => b == iface,
                                _ => true,
                            })
                })
            })
        };
        if clash(&wire, WIRE) || clash(&stack, STACK) {
            return Err("state-insert");
        }
        let id = (self.creator as u64) << 32 | (self.next & 0xffff_ffff);
        self.next += 1;
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
        let sloppy = opts.as_ref().is_some_and(|o| o.sloppy);
        let no_sync = opts.as_ref().is_some_and(|o| o.no_sync);
        let bound = opts
            .as_ref()
            .is_some_and(|o| o.if_bound)
            .then(|| iface.to_string());
        let s = State {
            id,
            creator: self.creator,
            key: key.clone(),
            translated: translated.filter(|t| *t != key),
            wire: wire.clone(),
            stack: stack.clone(),
            dir,
            bound,
            iface: iface.to_string(),
            src,
            dst,
            rule,
            keep,
            opts,
            created_ms: now_ms,
            last_ms: now_ms,
            timeout,
            packets: [1, 0],
            bytes: [len as u64, 0],
            no_sync,
            sloppy,
            log_all: false,
        };
        if wire == stack {
            self.keys.entry(wire).or_default().push((id, WIRE | STACK));
        } else {
            self.keys.entry(wire).or_default().push((id, WIRE));
            self.keys.entry(stack).or_default().push((id, STACK));
        }
        self.states.insert(id, s);
        self.events.push(StateEvent::Insert(id));
        Ok(id)
    }

    pub fn set_log_all(&mut self, id: u64, on: bool) {
        if let Some(s) = self.states.get_mut(&id) {
            s.log_all = on;
        }
    }

    pub fn remove(&mut self, id: u64) -> Option<State> {
        let s = self.states.remove(&id)?;
        for k in [&s.wire, &s.stack] {
            if let Some(v) = self.keys.get_mut(k) {
                v.retain(|x| x.0 != id);
                if v.is_empty() {
                    self.keys.remove(k);
                }
            }
        }
        self.events.push(StateEvent::Delete(id));
        Some(s)
    }

    /// Remove every state that has expired by `now_ms`; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        let dead: Vec<u64> = self
            .states
            .values()
            .filter(|s| self.expires_ms(s) <= now_ms)
            .map(|s| s.id)
            .collect();
        for id in &dead {
            self.remove(*id);
        }
        dead.len()
    }

    /// Account a non-TCP packet to its state.
    pub fn track_pseudo(&mut self, id: u64, reply: bool, now_ms: u64, len: u32) {
        let Some(s) = self.states.get_mut(&id) else {
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
        let d = reply as usize;
        s.packets[d] += 1;
        s.bytes[d] += len as u64;
        self.events.push(StateEvent::Update(id));
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
        let Some(s) = self.states.get_mut(&id) else {
            return Err(TrackError::Mismatch);
        };
        let sloppy = s.sloppy;
        let (src, dst) = if reply {
            (&mut s.dst, &mut s.src)
        } else {
            (&mut s.src, &mut s.dst)
        };
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
        if in_window || sloppy {
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
            if flags & SYN != 0 && src.state < tcps::SYN_SENT {
                src.state = tcps::SYN_SENT;
            }
            if flags & FIN != 0 && src.state < tcps::CLOSING {
                src.state = tcps::CLOSING;
            }
            if flags & ACK != 0 {
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
        } else if loose {
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
            if flags & FIN != 0 && src.state < tcps::CLOSING {
                src.state = tcps::CLOSING;
            }
            if flags & RST != 0 {
                src.state = tcps::TIME_WAIT;
                dst.state = tcps::TIME_WAIT;
            }
        } else {
            return Err(TrackError::Mismatch);
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
        let d = reply as usize;
        s.packets[d] += 1;
        s.bytes[d] += len as u64;
        self.events.push(StateEvent::Update(id));
        Ok(())
    }
}
