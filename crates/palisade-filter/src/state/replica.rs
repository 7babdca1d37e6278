//! States that can leave the machine: portable records, the events a
//! replication protocol (pfsync) sends, and the import of a peer's states.
//!
//! A `State` in the table holds handles that mean something only here: an
//! interned interface number, an interned rule number, `Arc`s to this
//! ruleset's options and counters, times on this process's clock. A
//! [`StateRecord`] carries the same state in terms another firewall can
//! resolve: the interface by name, the rule by anchor path and number,
//! both keys (wire and stack, as pf's `PF_SK_WIRE`/`PF_SK_STACK`), both
//! peers with their TCP windows, the expiry relative to now, and the
//! 64-bit id with the id of the firewall that created the state.
//!
//! Events ([`StateEvent`]) are recorded only while a consumer asked for
//! them (`events_enabled`) and only for states that may be synced (not
//! `no-sync`). They are kept per state, not per packet: a state has at most
//! one pending event, and its contents are read from the table when the
//! consumer drains the queue, so a million updates to one state leave one
//! pending update carrying the latest windows. The queue is bounded; when
//! it is full, new events are dropped and counted, and `overflowed` tells
//! the consumer that only a bulk transfer (`walk`) can bring the peer up to
//! date again.
//!
//! What comes from a peer (`import`, `merge_update`, `delete_from_peer`,
//! `clear_creator`) changes the table without recording events: a peer's
//! news is never echoed back to it. Packets this firewall later processes
//! for an imported state do record updates, as pfsync does after a
//! failover.
//!
//! Not carried: source-tracking nodes (an imported state does not count
//! against `max-src-*` limits) and synproxy handshakes in progress.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use palisade_conf::ir::{Direction, KeepState, StateOpts, Timeout};

use super::{
    norm, seq_gt, FlowKey, Peer, State, StateExt, StateRoute, StateTable, SLOT_MASK, STACK_SIDE,
    WIRE_SIDE,
};
use crate::packet::{RuleRef, RuleStats, ScrubActions};

/// A state's identity across firewalls: its id and its creator's id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StateId {
    pub id: u64,
    pub creator: u32,
}

/// A state as another firewall can take it over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateRecord {
    pub id: u64,
    pub creator: u32,
    /// The interface that created it, and whether the state is bound to it.
    pub iface: String,
    pub bound: bool,
    /// The creating rule; None for pf's default rule, or when the peer's
    /// ruleset has no such rule.
    pub rule: Option<RuleRef>,
    pub dir: Direction,
    /// The keys as seen on the wire and by the stack, each oriented as an
    /// inbound packet carries it; they differ when the state translates.
    pub wire: FlowKey,
    pub stack: FlowKey,
    /// The initiator's side and the responder's.
    pub src: Peer,
    pub dst: Peer,
    pub keep: KeepState,
    pub timeout: Timeout,
    /// Milliseconds since the state was created, and until it expires.
    pub age_ms: u64,
    pub expire_ms: u64,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    pub sloppy: bool,
    pub log_all: bool,
    /// `no-sync` (pfsync never sends these; the state file keeps them,
    /// so that a restart under a changed ruleset keeps the mark).
    pub no_sync: bool,
    pub scrub: ScrubActions,
    /// Sequence-number shifts (`modulate state`, synproxy) and the
    /// `reassemble tcp` normalizer's memory.
    pub seqdiff: u32,
    pub seqdiff_dst: u32,
    pub ttl_max: [u8; 2],
    pub ts_offset: [u32; 2],
    pub route: Option<StateRoute>,
    pub allow_opts: bool,
    /// The operating system the SYN's fingerprint named.
    pub os: Option<String>,
}

impl StateRecord {
    /// The key of the creating packet as it arrived, and as it left when
    /// translated.
    pub fn keys(&self) -> (FlowKey, Option<FlowKey>) {
        let (key, after) = match self.dir {
            Direction::In => (self.wire.clone(), self.stack.clone()),
            Direction::Out => (self.stack.reversed(), self.wire.reversed()),
        };
        let translated = (after != key).then_some(after);
        (key, translated)
    }
}

/// What changes in a state as its packets pass: the windows and the
/// expiry (pfsync's compressed update).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateUpdate {
    pub sid: StateId,
    pub src: Peer,
    pub dst: Peer,
    pub timeout: Timeout,
    pub expire_ms: u64,
    /// Set when a synproxy handshake completes.
    pub seqdiff_dst: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateEvent {
    Insert(Box<StateRecord>),
    Update(StateUpdate),
    Delete(StateId),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Pending {
    Insert,
    Update,
    Delete,
    /// Deleted, then a new state took the same id (a reused slot): both
    /// are sent, in that order.
    DeleteInsert,
}

/// The pending events: one per state, in the order states first changed.
#[derive(Debug)]
pub(super) struct EventQueue {
    order: VecDeque<StateId>,
    pending: HashMap<StateId, Pending>,
    pub(super) limit: usize,
    pub(super) dropped: u64,
    pub(super) overflowed: bool,
}

/// The longest expiry taken from a peer (a week): larger values (or a
/// peer's "never") are cut to it.
const MAX_EXPIRE_MS: u64 = 7 * 24 * 3600 * 1000;

/// Pending events kept at most, by default.
pub const DEFAULT_EVENT_LIMIT: usize = 1 << 16;

impl Default for EventQueue {
    fn default() -> Self {
        EventQueue {
            order: VecDeque::new(),
            pending: HashMap::new(),
            limit: DEFAULT_EVENT_LIMIT,
            dropped: 0,
            overflowed: false,
        }
    }
}

impl EventQueue {
    pub(super) fn push(&mut self, sid: StateId, kind: Pending) {
        if let Some(p) = self.pending.get_mut(&sid) {
            match (*p, kind) {
                // The insert, read at drain time, carries the latest values.
                (Pending::Insert, Pending::Update) | (Pending::Update, Pending::Update) => {}
                // Created and gone before anyone heard of it.
                (Pending::Insert, Pending::Delete) => {
                    self.pending.remove(&sid);
                }
                (Pending::Delete, Pending::Insert) => *p = Pending::DeleteInsert,
                (Pending::DeleteInsert, Pending::Update) => {}
                (Pending::DeleteInsert, Pending::Delete) => *p = Pending::Delete,
                (_, k) => *p = k,
            }
            return;
        }
        if self.pending.len() >= self.limit {
            self.dropped += 1;
            self.overflowed = true;
            return;
        }
        self.pending.insert(sid, kind);
        self.order.push_back(sid);
        // Cancelled entries stay in `order` until drained; keep it bounded.
        if self.order.len() > 2 * self.limit + 64 {
            let pending = &self.pending;
            let mut seen = std::collections::HashSet::new();
            self.order
                .retain(|s| pending.contains_key(s) && seen.insert(*s));
        }
    }

    pub(super) fn len(&self) -> usize {
        self.pending.len()
    }

    /// Forget what is pending for a state (a peer's news replaced it).
    pub(super) fn forget(&mut self, sid: &StateId) {
        self.pending.remove(sid);
    }

    fn pop(&mut self) -> Option<(StateId, Pending)> {
        while let Some(sid) = self.order.pop_front() {
            if let Some(k) = self.pending.remove(&sid) {
                return Some((sid, k));
            }
        }
        None
    }
}

/// Why a peer's state or update was not taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImportError {
    /// The state table is full (`set limit states`).
    Full,
    /// Another state already has one of its keys (both firewalls created
    /// a state for the same connection).
    KeyInUse,
    /// The record claims to be this firewall's own state, or its id would
    /// be taken for one.
    OwnId,
    /// An update or delete names a state this table does not have.
    Unknown(StateId),
    /// The record is inconsistent (keys of different protocols or address
    /// families).
    Invalid(&'static str),
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImportError::Full => write!(f, "the state table is full"),
            ImportError::KeyInUse => write!(f, "another state has the same key"),
            ImportError::OwnId => write!(f, "the id is one of this firewall's own states"),
            ImportError::Unknown(s) => {
                write!(f, "no state {:016x} from creator {:08x}", s.id, s.creator)
            }
            ImportError::Invalid(why) => write!(f, "invalid state record: {why}"),
        }
    }
}

impl std::error::Error for ImportError {}

/// What a state takes from its rule: state options and counters.
pub type RuleForState = (Option<Arc<StateOpts>>, Option<Arc<RuleStats>>);

/// What `merge_update` did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Merged {
    /// The peer's view was as new or newer, and was taken.
    Taken,
    /// This table's view is newer on at least one side (the peer missed
    /// packets this firewall saw): kept; the caller may send its own.
    Stale,
}

/// Is `a` ahead of `b` (pfsync's test for a side's progress)?
fn peer_ahead(a: &Peer, b: &Peer, tcp: bool) -> bool {
    if a.state != b.state {
        return a.state > b.state;
    }
    tcp && seq_gt(a.seqlo, b.seqlo)
}

impl StateTable {
    /// Ask for events (a consumer such as pfsync is attached), or stop and
    /// forget the pending ones.
    pub fn set_events(&mut self, on: bool) {
        self.events_enabled = on;
        if !on {
            // Forget what is pending; keep the limit and the counts.
            self.events.order.clear();
            self.events.pending.clear();
        }
    }

    /// How many pending events to keep at most.
    pub fn set_event_limit(&mut self, limit: usize) {
        self.events.limit = limit.max(1);
    }

    /// Pending events (at most one per state).
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    /// How many pending events are kept at most (`set_event_limit`).
    pub fn event_limit(&self) -> usize {
        self.events.limit
    }

    /// Events dropped because the queue was full, and whether any were
    /// since the last `take_overflow` (a bulk transfer is then needed).
    pub fn events_dropped(&self) -> u64 {
        self.events.dropped
    }
    pub fn take_overflow(&mut self) -> bool {
        std::mem::take(&mut self.events.overflowed)
    }

    pub(super) fn record_event(&mut self, s_id: u64, creator: u32, no_sync: bool, kind: Pending) {
        if self.events_enabled && !no_sync {
            let sid = StateId { id: s_id, creator };
            self.events.push(sid, kind);
            if kind == Pending::Insert && self.track_created {
                self.created.push(sid);
            }
        }
    }

    /// Keep the ids of the syncable states created since the last
    /// `take_created` (pfsync's `defer` holds their first packet).
    pub fn set_track_created(&mut self, on: bool) {
        self.track_created = on;
        self.created.clear();
    }

    /// The syncable states created since the last call (at most the few
    /// one packet creates, when the caller takes them after each packet).
    pub fn take_created(&mut self) -> Vec<StateId> {
        std::mem::take(&mut self.created)
    }

    /// Up to `max` pending events, oldest first, with the states' current
    /// contents.
    pub fn drain_events(&mut self, now_ms: u64, max: usize) -> Vec<StateEvent> {
        let mut out = Vec::new();
        while out.len() < max {
            let Some((sid, kind)) = self.events.pop() else {
                break;
            };
            let current = self.get(sid.id).filter(|s| s.creator == sid.creator);
            match (kind, current) {
                // The state is back (a peer sent it again): no delete.
                (Pending::Delete, Some(_)) => {}
                (Pending::Delete, None) => out.push(StateEvent::Delete(sid)),
                (Pending::DeleteInsert, Some(s)) => {
                    out.push(StateEvent::Delete(sid));
                    out.push(StateEvent::Insert(Box::new(self.record(s, now_ms))));
                }
                (Pending::DeleteInsert, None) => out.push(StateEvent::Delete(sid)),
                (Pending::Insert, Some(s)) => {
                    out.push(StateEvent::Insert(Box::new(self.record(s, now_ms))))
                }
                (Pending::Update, Some(s)) => out.push(StateEvent::Update(StateUpdate {
                    sid,
                    src: s.src,
                    dst: s.dst,
                    timeout: s.timeout,
                    expire_ms: self.expires_ms(s).saturating_sub(now_ms),
                    seqdiff_dst: s.ext.as_ref().map_or(0, |e| e.seqdiff_dst),
                })),
                // Gone without a recorded delete (a no-sync change): nothing.
                (_, None) => {}
            }
        }
        out
    }

    /// The portable record of a state.
    pub fn record(&self, s: &State, now_ms: u64) -> StateRecord {
        let ext = s.ext.as_deref();
        StateRecord {
            id: s.id,
            creator: s.creator,
            iface: self.iface_name(s).to_string(),
            bound: s.bound,
            rule: self.rule_of(s),
            dir: s.dir,
            wire: self.wire(s),
            stack: self.stack(s),
            src: s.src,
            dst: s.dst,
            keep: s.keep,
            timeout: s.timeout,
            age_ms: now_ms.saturating_sub(s.created_ms()),
            expire_ms: self.expires_ms(s).saturating_sub(now_ms),
            packets: s.packets,
            bytes: s.bytes,
            sloppy: s.sloppy,
            log_all: s.log_all,
            no_sync: s.no_sync(),
            scrub: s.scrub(),
            seqdiff: ext.map_or(0, |e| e.seqdiff),
            seqdiff_dst: ext.map_or(0, |e| e.seqdiff_dst),
            ttl_max: ext.map_or([0, 0], |e| e.ttl_max),
            ts_offset: ext.map_or([0, 0], |e| e.ts_offset),
            route: ext.and_then(|e| e.route.clone()),
            allow_opts: ext.is_some_and(|e| e.allow_opts),
            os: self.os_name(s).map(str::to_string),
        }
    }

    /// The record of the state with this id.
    pub fn export(&self, id: u64, now_ms: u64) -> Option<StateRecord> {
        self.get(id).map(|s| self.record(s, now_ms))
    }

    /// Records of the syncable states from slab position `cursor` on, at
    /// most `max` of them, and the cursor to continue from (None at the
    /// end): a bulk transfer walks the table a slice at a time.
    pub fn walk(
        &self,
        cursor: usize,
        max: usize,
        now_ms: u64,
    ) -> (Vec<StateRecord>, Option<usize>) {
        self.walk_with(cursor, max, now_ms, false)
    }

    /// As `walk`, and with `no_sync` also the states that are never
    /// sent to a peer (saving the table for a restart takes them all).
    pub fn walk_with(
        &self,
        cursor: usize,
        max: usize,
        now_ms: u64,
        no_sync: bool,
    ) -> (Vec<StateRecord>, Option<usize>) {
        let mut out = Vec::new();
        for (pos, s) in self.iter_from(cursor) {
            if out.len() >= max {
                return (out, Some(pos));
            }
            if no_sync || !s.no_sync() {
                out.push(self.record(s, now_ms));
            }
        }
        (out, None)
    }

    /// Take a peer's state. `rule` is what the record's rule resolves to
    /// in this firewall's ruleset (its state options and counters). A
    /// state already known under the same id is updated instead. Records
    /// no event.
    pub fn import(
        &mut self,
        rec: &StateRecord,
        now_ms: u64,
        rule: Option<RuleForState>,
    ) -> Result<u64, ImportError> {
        if self.created_here(rec.id) {
            // A state this table created that the peer sends back: merged,
            // the more advanced side winning, as pfsync updates take it.
            // One we do not have (we removed it) is not made again from
            // the peer's word. (A state of our creator id from before a
            // restart, which the peer carried meanwhile, has an id of
            // another epoch: taken as any peer's state, by its id.)
            return match self.get(rec.id) {
                Some(s) if self.same_state(s, rec) => self.merge_record(rec, now_ms),
                _ => Err(ImportError::OwnId),
            };
        }
        self.take_record(rec, now_ms, rule, false)
    }

    /// `s` is the state `rec` describes: same creator, same keys.
    fn same_state(&self, s: &State, rec: &StateRecord) -> bool {
        s.creator == rec.creator && self.wire(s) == rec.wire && self.stack(s) == rec.stack
    }

    /// A record of a state the table has: its windows and expiry merged
    /// (`merge_update`: the more advanced side wins).
    fn merge_record(&mut self, rec: &StateRecord, now_ms: u64) -> Result<u64, ImportError> {
        let up = StateUpdate {
            sid: StateId {
                id: rec.id,
                creator: rec.creator,
            },
            src: rec.src,
            dst: rec.dst,
            timeout: rec.timeout,
            expire_ms: rec.expire_ms,
            seqdiff_dst: rec.seqdiff_dst,
        };
        self.merge_update(&up, now_ms)?;
        Ok(rec.id)
    }

    /// Take back a state this firewall saved before it restarted
    /// (`state-file`): as `import` (kept by its id), except that a state
    /// whose id is of this table's own epoch (only when the epoch did not
    /// change: the daemon draws a new one at every start) goes back to
    /// the slot its id names, keeping the id, or, if that slot is taken,
    /// gets a new id from another. Returns the state's id here.
    pub fn restore(
        &mut self,
        rec: &StateRecord,
        now_ms: u64,
        rule: Option<RuleForState>,
    ) -> Result<u64, ImportError> {
        self.take_record(rec, now_ms, rule, true)
    }

    fn take_record(
        &mut self,
        rec: &StateRecord,
        now_ms: u64,
        rule: Option<RuleForState>,
        restoring: bool,
    ) -> Result<u64, ImportError> {
        // (Ids of this table's epoch only: the daemon draws a new one at
        // every start, so what the state file gives back is kept by id as
        // a peer's state is, and keeps its id.)
        let own = restoring && self.created_here(rec.id);
        if rec.id == 0 {
            return Err(ImportError::Invalid("state id 0"));
        }
        if rec.wire.proto != rec.stack.proto {
            return Err(ImportError::Invalid("the keys' protocols differ"));
        }
        if rec.wire.src.is_ipv4() != rec.wire.dst.is_ipv4()
            || rec.stack.src.is_ipv4() != rec.stack.dst.is_ipv4()
        {
            return Err(ImportError::Invalid("a key mixes address families"));
        }
        if let Some(s) = self.get(rec.id).filter(|_| !own) {
            if self.same_state(s, rec) {
                return self.merge_record(rec, now_ms);
            }
            return Err(ImportError::KeyInUse);
        }
        if self.live_all() as u64 >= self.limit as u64
            || self.live >= super::MAX_SLOTS / self.stride() as usize
        {
            return Err(ImportError::Full);
        }
        let (key, translated) = rec.keys();
        let iface = self.intern_iface(&rec.iface);
        // A rule this ruleset lacks: none, as pf's default rule.
        let rule_id = match (&rule, &rec.rule) {
            (Some(_), Some(r)) => Some(self.intern_rule(r)),
            _ => None,
        };
        let (opts, stats) = rule.unwrap_or((None, None));
        let s_opts = opts.clone();
        let os = rec.os.as_deref().map_or(0, |n| self.intern_os(n));
        let ext = StateExt {
            seqdiff: rec.seqdiff,
            seqdiff_dst: rec.seqdiff_dst,
            ttl_max: rec.ttl_max,
            ts_offset: rec.ts_offset,
            proxy: None,
            route: rec.route.clone(),
            allow_opts: rec.allow_opts,
            scrub: rec.scrub,
            tag: None,
        };
        let base_ms = self.timeout_secs_of(opts.as_deref(), rec.timeout) as u64 * 1000;
        let tcp = key.proto == 6;
        let s = State {
            // Own: a new id from the slot it gets.
            id: if own { 0 } else { rec.id },
            creator: if own { self.creator } else { rec.creator },
            key,
            xlat: None,
            dir: rec.dir,
            iface,
            bound: rec.bound,
            src: rec.src,
            dst: rec.dst,
            rule: rule_id,
            keep: rec.keep,
            opts,
            created_s: super::secs_of(now_ms.saturating_sub(rec.age_ms)),
            // Expires `expire_ms` from now under the unscaled timeout (as
            // OpenBSD's pfsync reads it).
            last_ms: now_ms
                .saturating_add(rec.expire_ms.min(MAX_EXPIRE_MS))
                .saturating_sub(base_ms),
            timeout: rec.timeout,
            packets: rec.packets,
            bytes: rec.bytes,
            // A restored state is `no-sync` again if it was, or if its
            // rule says so (a peer never sends those).
            flags: if restoring && (rec.no_sync || s_opts.as_ref().is_some_and(|o| o.no_sync)) {
                super::flag::NO_SYNC
            } else {
                0
            },
            sloppy: rec.sloppy,
            // Windows only TCP has (a UDP or ICMP state would never see a
            // packet clear the bits, and the fast path takes no state
            // with them set).
            unverified: if tcp { 3 } else { 0 },
            log_all: rec.log_all,
            ext: (ext != StateExt::default()).then(|| Box::new(ext)),
            stats: None,
            os,
        };
        let (wire, stack) = super::keys_of(&s.key, translated.as_ref().unwrap_or(&s.key), s.dir);
        if self.key_taken(&wire, WIRE_SIDE, s.bound, iface)
            || self.key_taken(&stack, STACK_SIDE, s.bound, iface)
            || !self.claim_keys(&wire, &stack, s.bound, iface)
        {
            return Err(ImportError::KeyInUse);
        }
        let mut s = s;
        s.xlat = translated
            .filter(|t| *t != s.key)
            .map(|t| self.xlat.intern(&s.key, &t));
        // Own, taken back after a restart: its old id and slot if free
        // (a pfsync peer knows it by that id), else a new one.
        let at = if own {
            let at = self.reserve_own_slot(rec.id);
            if at.is_some() {
                s.id = rec.id;
            }
            at
        } else {
            None
        };
        let slot = self.store_in(s, &wire, &stack, at);
        let id = if own {
            self.slab[slot as usize].as_ref().map_or(0, |s| s.id)
        } else {
            self.foreign.insert(rec.id, slot);
            // Whatever was pending for this state (its delete, if it had
            // gone here) is replaced by the peer's news.
            self.events.forget(&StateId {
                id: rec.id,
                creator: rec.creator,
            });
            rec.id
        };
        if let Some(k) = super::max_key(s_opts.as_ref()) {
            *self.per_rule.entry(k).or_default() += 1;
        }
        self.live += 1;
        if stats.is_some() {
            self.set_stats(id, stats);
        }
        Ok(id)
    }

    /// Take a peer's news of a state's windows and expiry, side by side:
    /// a side where the peer saw more (a later TCP state, or the same one
    /// with a higher sequence number) is taken, one where this table saw
    /// more is kept. Records no event.
    pub fn merge_update(&mut self, up: &StateUpdate, now_ms: u64) -> Result<Merged, ImportError> {
        let Some(slot) = self.slot_of(up.sid.id) else {
            return Err(ImportError::Unknown(up.sid));
        };
        let base_ms = match self.slab.get(slot as usize).and_then(|s| s.as_ref()) {
            Some(s) if s.id == up.sid.id && s.creator == up.sid.creator => {
                self.timeout_secs_of(s.opts.as_deref(), up.timeout) as u64 * 1000
            }
            _ => return Err(ImportError::Unknown(up.sid)),
        };
        let Some(Some(s)) = self.slab.get_mut(slot as usize) else {
            return Err(ImportError::Unknown(up.sid));
        };
        let tcp = s.key.proto == 6;
        let was = super::is_halfopen(s);
        let mut stale = false;
        for (bit, ours, theirs) in [(1, &mut s.src, &up.src), (2, &mut s.dst, &up.dst)] {
            if peer_ahead(ours, theirs, tcp) {
                stale = true;
            } else {
                if *ours != *theirs && tcp {
                    s.unverified |= bit;
                }
                *ours = *theirs;
            }
        }
        if !stale {
            s.timeout = up.timeout;
            s.last_ms = now_ms
                .saturating_add(up.expire_ms.min(MAX_EXPIRE_MS))
                .saturating_sub(base_ms);
            if up.seqdiff_dst != 0 {
                s.ext.get_or_insert_with(Default::default).seqdiff_dst = up.seqdiff_dst;
            }
        }
        let now_halfopen = super::is_halfopen(s);
        self.halfopen = (self.halfopen + now_halfopen as usize).saturating_sub(was as usize);
        Ok(if stale { Merged::Stale } else { Merged::Taken })
    }

    /// Remove a state taken back from the state file that the peer's
    /// bulk update did not have (killed or closed there meanwhile),
    /// recording no event (the peer has nothing to delete); a `no-sync`
    /// state (the peer never had it) stays. Whether it went.
    pub fn forget_restored(&mut self, id: u64) -> bool {
        if self
            .get(id)
            .is_some_and(|s| s.flags & super::flag::NO_SYNC == 0)
        {
            self.remove_quietly(id).is_some()
        } else {
            false
        }
    }

    /// A peer says its state is gone. Records no event.
    pub fn delete_from_peer(&mut self, sid: StateId) -> bool {
        if self.get(sid.id).is_some_and(|s| s.creator == sid.creator) {
            self.remove_quietly(sid.id).is_some()
        } else {
            false
        }
    }

    /// Remove every state, the peer's too, recording no event (pfctl -F
    /// states: pf marks them no-sync and sends one clear for its own
    /// creator id instead, `Sync::clear_own`); returns how many.
    pub fn clear_all(&mut self) -> usize {
        let ids: Vec<u64> = self.iter().map(|s| s.id).collect();
        for id in &ids {
            self.remove_quietly(*id);
        }
        ids.len()
    }

    /// Remove every state `creator` created (pfsync's clear); returns how
    /// many. Records no event.
    pub fn clear_creator(&mut self, creator: u32) -> usize {
        let ids: Vec<u64> = self
            .iter()
            .filter(|s| s.creator == creator)
            .map(|s| s.id)
            .collect();
        for id in &ids {
            self.remove_quietly(*id);
        }
        ids.len()
    }

    /// pf's `DIOCNATLOOK`: given a connection as a local proxy sees it
    /// (after `rdr-to` or `nat-to`), the connection as its packets carried
    /// it on the wire. `seen` is oriented as a packet travelling in `dir`
    /// carries it; so is the answer. Interface binding is ignored.
    pub fn natlook(&self, seen: &FlowKey, dir: Direction) -> Option<FlowKey> {
        let k = norm(seen, dir);
        let h = self.hash(&k);
        self.index.iter_hash(h).find_map(|&e| {
            if (e >> 30) & STACK_SIDE == 0 {
                return None;
            }
            let s = self.slab.get((e & SLOT_MASK) as usize)?.as_ref()?;
            (self.stack(s) == k).then(|| norm(&self.wire(s), dir))
        })
    }

    /// The operating system a state's SYN was fingerprinted as.
    pub fn os_name(&self, s: &State) -> Option<&str> {
        (s.os != 0)
            .then(|| self.os_names.get(s.os as usize - 1).map(String::as_str))
            .flatten()
    }

    /// Keep `name` as the fingerprint of state `id`.
    pub fn set_os(&mut self, id: u64, name: &str) {
        let os = self.intern_os(name);
        if let Some(s) = self.get_mut(id) {
            s.os = os;
        }
    }

    pub(super) fn intern_os(&mut self, name: &str) -> u16 {
        if let Some(i) = self.os_names.iter().position(|n| n == name) {
            return i as u16 + 1;
        }
        if self.os_names.len() >= u16::MAX as usize - 1 {
            return 0;
        }
        self.os_names.push(name.to_string());
        self.os_names.len() as u16
    }
}
