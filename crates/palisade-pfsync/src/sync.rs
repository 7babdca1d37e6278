//! The sync core: what one firewall's pfsync does, without sockets,
//! clocks or a state table. The caller
//!
//! - reports its state table's changes (`insert` a full record, `update`
//!   what changed, `delete`) (the core sends what pfsync(4) sends: INS for a new
//!   state, UPD_C for a change, DEL_C for a deletion, gathered into
//!   packets that leave within `flush_after` or when one is full; a state
//!   changed `maxupd` times is sent at once; so is every pending change
//!   as soon as a TCP state's sequence numbers moved `push_bytes` since
//!   it was last sent, which keeps the peer's
//!   windows close enough to take over a fast transfer; a state inserted
//!   and deleted before it was sent is never sent);
//! - feeds what arrives (`handle_packet`, with the IP TTL) and applies the
//!   events that come out (`poll_event`): states to insert or merge,
//!   compressed updates, deletions, clears; it says `unknown` for an
//!   update of a state it does not have, and the core asks the peer for it
//!   (UPD_REQ); it answers `StateWanted` with `send_state`;
//! - starts with `start`: the core asks the peer for its whole table (a
//!   bulk update: UPD_REQ with id 0 and creator 0), retries while nobody
//!   answers, and keeps CARP demoted by 32 (`Event::Demote`) until the
//!   peer's BUS END arrives or `bulk_timeout` passes (later while the
//!   update is seen coming) — a silent peer never keeps a node demoted
//!   for ever; on `BulkRequested` it hands the core
//!   its states (`bulk_send`), which go out paced between BUS START and
//!   BUS END;
//! - says when the sync interface's link goes down or comes back
//!   (`set_link`), as pfsync(4) watches its syncdev: while it is down
//!   CARP is demoted by 1, what was pending is dropped and a bulk update
//!   under way given up, except the start's: a node that has never had
//!   the peer's table keeps its 32 while the link is down (its timeout
//!   runs only while the link is up); when it is back the peer's whole
//!   table is asked for again (what changed meanwhile never arrived), and
//!   the demotion lifts when that bulk update ends;
//! - takes out packets (`poll_transmit`: pfsync payloads for IP protocol
//!   240, TTL 255) and runs the timers (`poll_timeout`, `handle_timeout`).
//!
//! Time is microseconds from an origin the caller chooses.

use std::collections::{BTreeMap, HashMap, VecDeque};

use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;

use crate::wire::{
    self, BusMsg, BusStatus, ClrMsg, Message, Packet, PacketBuilder, StateMsg, StateRef, UpdCMsg,
    CKSUM_LEN,
};

pub type Micros = u64;

const SECOND: Micros = 1_000_000;

/// `push_bytes` by default: a quarter of pf's acknowledgement slack.
pub const DEFAULT_PUSH_BYTES: u32 = 16 * 1024;

/// States whose last sent values are remembered at most (for
/// `push_bytes`); past it the memory is cleared and starts again.
const MAX_MARKS: usize = 1 << 20;

/// What the peer last heard of a state's progress: each side's seqlo and
/// seqhi.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Mark {
    seq: [u32; 4],
}

impl Mark {
    fn of(src: &wire::StatePeer, dst: &wire::StatePeer) -> Mark {
        Mark {
            seq: [src.seqlo, src.seqhi, dst.seqlo, dst.seqhi],
        }
    }

    /// Has `now` moved at least `bytes` on some sequence number? A side
    /// not seen yet (seqlo 0: before its first packet) is not progress:
    /// the handshake would otherwise push every new connection.
    fn far(&self, now: &Mark, bytes: u32) -> bool {
        [(0, 1), (2, 3)].into_iter().any(|(lo, hi)| {
            self.seq[lo] != 0
                && [lo, hi]
                    .into_iter()
                    .any(|i| now.seq[i].wrapping_sub(self.seq[i]) as i32 >= bytes as i32)
        })
    }
}

/// The demotion CARP keeps while the bulk update runs (OpenBSD's).
pub const BULK_DEMOTE: i32 = 32;

/// A bulk update seen coming is waited for at most this many times
/// `bulk_timeout` (10 minutes by default: some 24 million states at the
/// default pace).
const BULK_MAX_FACTOR: u64 = 10;

/// States asked for one by one, remembered at most (past it the memory
/// is cleared: their answers then count as the bulk update's).
const MAX_ASKED: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncConfig {
    /// Our creator id (random, not 0): the states we create carry it.
    pub creator: u32,
    /// Updates to a state before it is sent at once (pfsync(4) maxupd).
    pub maxupd: u32,
    /// The sync interface's MTU (an IPv4 header included).
    pub mtu: usize,
    /// How long a change may wait for others to share its packet.
    pub flush_after: Micros,
    /// Beyond OpenBSD: a state whose sequence numbers (either side's
    /// `seqlo` or `seqhi`) moved this many bytes since it was last sent
    /// makes every pending change leave
    /// at once. pf accepts an acknowledgement at most about 64 KB ahead
    /// of what it saw, so a peer that lags less than that can take over a
    /// transfer of any speed. 0: only `maxupd` and `flush_after` apply.
    pub push_bytes: u32,
    /// Ask again for a bulk update after this long without an answer.
    pub bulk_retry: Micros,
    /// Give up waiting for the bulk update (and lift the demotion) after
    /// this long.
    pub bulk_timeout: Micros,
    /// A bulk update sends this many packets per `bulk_tick`.
    pub bulk_pace: usize,
    pub bulk_tick: Micros,
    /// The ruleset checksum put in every header (`ruleset_checksum`,
    /// kept current by the caller with `set_pfcksum`). A state from a
    /// peer whose checksum differs keeps no rule number: the numbers name
    /// other rules there (pfsync(4): the rule is used only when the
    /// rulesets match).
    pub pfcksum: [u8; CKSUM_LEN],
    /// Authenticate every packet (beyond OpenBSD; off by default).
    pub auth: Option<Auth>,
    /// `defer`: every INS asks for INS_ACK and leaves at once (the
    /// caller holds the state's first packet meanwhile).
    pub ack_inserts: bool,
}

/// Beyond OpenBSD: every packet ends with a section of action
/// `AUTH_ACTION` (a number OpenBSD skips) holding a counter and an
/// HMAC-SHA1 over the whole packet (the MAC's bytes zeroed); a receiver
/// with a key takes only packets whose MAC is right and whose counter is
/// above the last it took, so a forged or replayed packet changes
/// nothing. A receiver without a key skips the section.
#[derive(Clone, PartialEq, Eq)]
pub struct Auth {
    pub key: Vec<u8>,
    /// The first counter sent: the caller gives one that grows across
    /// restarts (the wall clock in microseconds, say).
    pub counter_base: u64,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Auth {{ key: <{} bytes>, counter_base: {} }}",
            self.key.len(),
            self.counter_base
        )
    }
}

/// The authentication section's action number (unused by OpenBSD).
pub const AUTH_ACTION: u8 = 0xf1;
/// Its one message: an 8-byte counter and a 20-byte HMAC-SHA1.
const AUTH_MSG_LEN: usize = 28;
const AUTH_LEN: usize = wire::SUBHEADER_LEN + AUTH_MSG_LEN;

impl Default for SyncConfig {
    fn default() -> SyncConfig {
        SyncConfig {
            creator: 1,
            maxupd: wire::DEFAULT_MAXUPD as u32,
            mtu: wire::DEFAULT_MTU,
            flush_after: SECOND,
            push_bytes: DEFAULT_PUSH_BYTES,
            bulk_retry: 5 * SECOND,
            bulk_timeout: 60 * SECOND,
            bulk_pace: 8,
            bulk_tick: 1_000,
            pfcksum: [0; CKSUM_LEN],
            auth: None,
            ack_inserts: false,
        }
    }
}

/// Why a packet or a message was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Refused {
    /// IP TTL not 255 (sent from off the link).
    BadTtl,
    /// Not a pfsync version 6 packet, or a malformed one.
    Malformed,
    /// A BUS END that does not answer our request.
    StaleBus,
    /// Authentication is on and the packet has no section for it, or its
    /// MAC is wrong.
    Unauthenticated,
    /// Its counter is not above the last one taken.
    Replayed,
    /// Sent to the pfsync group (224.0.0.240) while this node has a
    /// unicast peer (`syncpeer`), and one it would otherwise take (with
    /// a key, authenticated): the two disagree on `peer`. On OpenBSD such
    /// a packet never reaches pfsync (the node has not joined the group);
    /// counted here (`handle_packet_to_group`) so that it shows.
    ToGroup,
}

impl Refused {
    pub fn name(self) -> &'static str {
        match self {
            Refused::BadTtl => "bad-ttl",
            Refused::Malformed => "malformed",
            Refused::StaleBus => "stale-bus",
            Refused::Unauthenticated => "unauthenticated",
            Refused::Replayed => "replayed",
            Refused::ToGroup => "to-group",
        }
    }
}

/// What the caller must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A whole state from the peer (INS, UPD, or part of a bulk update):
    /// insert it, or merge it into the one with its id (the more advanced
    /// wins).
    State(Box<StateMsg>),
    /// A compressed update; say `unknown` if there is no such state.
    Update(UpdCMsg),
    Delete(StateRef),
    /// Remove the states of `creatorid` (on `ifname`, or all if empty).
    Clear(ClrMsg),
    /// The peer wants this state in full: answer with `send_state`.
    StateWanted(StateRef),
    /// The peer acknowledged a state (for `defer`).
    Acked(StateRef),
    /// The peer wants our whole table: answer with `bulk_send`.
    BulkRequested,
    /// Change CARP's demotion (group carp) by this much, for this reason.
    Demote(i32, &'static str),
    /// The bulk update we asked for is complete, or we gave up on it.
    BulkDone {
        complete: bool,
        at: Micros,
    },
    Dropped(Refused),
}

/// Counters for `sync show` and the metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub packets_sent: u64,
    /// Packets not sent because the sync link was down (what they held
    /// is lost, as pfsync(4) loses it; the peers catch up with a bulk
    /// update, or an update request for a state they lack).
    pub not_sent_link_down: u64,
    pub packets_received: u64,
    pub messages_sent: BTreeMap<&'static str, u64>,
    pub messages_received: BTreeMap<&'static str, u64>,
    pub drops: BTreeMap<Refused, u64>,
    pub bulk_requests_sent: u64,
    pub bulk_updates_sent: u64,
    /// The last bulk update received: when it was asked for, when it
    /// ended, and whether it completed.
    pub last_bulk: Option<(Micros, Micros, bool)>,
    /// Changes sent at once because a state moved `push_bytes`, and the
    /// longest a change waited before it
    /// left (microseconds).
    pub pushes: u64,
    pub max_lag: Micros,
    /// Packets received from a peer with another ruleset (their
    /// checksums differ): its states took no rule of ours.
    pub other_ruleset: u64,
}

enum Pending {
    Ins(Box<StateMsg>),
    Upd(UpdCMsg, u32),
    Del,
}

impl Pending {
    /// Its message's bytes on the wire.
    fn wire_len(&self) -> usize {
        match self {
            Pending::Ins(_) => wire::STATE_LEN,
            Pending::Upd(..) => wire::UPD_C_LEN,
            Pending::Del => wire::STATE_REF_LEN,
        }
    }
}

/// Our bulk update request.
enum Bulk {
    Idle,
    Requesting {
        started: Micros,
        /// The request last sent (for BUS END's check) and the next try.
        sent: Micros,
        next: Micros,
        /// When it is given up: `bulk_timeout` after the start, later
        /// while the peer's update is seen coming (`bulk_progress`).
        deadline: Micros,
        /// CARP's demotion this request holds (lifted when it ends).
        demote: i32,
    },
}

/// The demotion while the sync link is down (pfsync(4)'s).
pub const LINK_DEMOTE: i32 = 1;

pub struct Sync {
    cfg: SyncConfig,
    pending: BTreeMap<StateRef, Pending>,
    /// Their messages' bytes.
    pending_bytes: usize,
    /// When the pending changes must leave, and since when the oldest
    /// of them waits.
    flush_at: Option<Micros>,
    pending_since: Option<Micros>,
    /// What the peer last heard (or will hear, for a pending insert) of
    /// each state's progress (for `push_bytes`).
    marks: HashMap<StateRef, Mark>,
    /// Sent now, whatever the timer says (maxupd reached, answers).
    urgent: Vec<Message>,
    bulk: Bulk,
    /// The peer's BUS START answered our last bulk request.
    bulk_answered: bool,
    /// Our last bulk update was given up: the peer's table is asked for
    /// again as soon as a packet of the peer's is heard.
    want_table: bool,
    /// Bulk updates given up in a row, and when the table may be asked
    /// for again (the first time at once, then after a minute, two,
    /// four..., at most an hour: a peer that never answers is not asked
    /// every time it is heard).
    bulk_failures: u32,
    retry_table_at: Micros,
    /// States we asked for one by one (UPD_REQ): their answers (full
    /// UPD) are not the bulk update coming (at most `MAX_ASKED`).
    asked: std::collections::HashSet<StateRef>,
    last_heard: Option<Micros>,
    /// A bulk update we send: the messages left, and the next tick.
    bulk_out: VecDeque<Message>,
    bulk_out_at: Option<Micros>,
    /// When the bulk update under way was exported (`bulk_send`).
    bulk_began: Micros,
    /// When the peer's bulk request arrived (for BUS's endtime).
    bulk_req_received: Micros,
    /// A bulk request read while the link was down (its time): answered
    /// when the link comes up, unless older than `bulk_retry` (the peer
    /// asks again by then).
    bulk_owed: Option<Micros>,
    out: VecDeque<Vec<u8>>,
    events: VecDeque<Event>,
    stats: Stats,
    /// Authentication: the last counter sent, those taken from each
    /// sender (by source address: several nodes may share a key).
    counter: u64,
    replay: HashMap<Option<std::net::IpAddr>, ReplayWindow>,
    /// The sync interface's link is up (`set_link`), and the demotion
    /// its last fall holds (`LINK_DEMOTE` from the fall until the bulk
    /// update asked for on its return ends).
    link_up: bool,
    link_demote: i32,
}

/// A ruleset's checksum for the pfsync header: the first 16 bytes of
/// SHA-1 over its main rules as listed (one per line). Two firewalls
/// with the same main ruleset agree; OpenBSD hashes other fields (MD5),
/// so with an OpenBSD peer the checksums differ and states take the
/// default rule, which is the safe reading.
pub fn ruleset_checksum<'a>(rules: impl IntoIterator<Item = &'a str>) -> [u8; CKSUM_LEN] {
    use sha1::Digest;
    let mut h = sha1::Sha1::new();
    for r in rules {
        h.update(r.as_bytes());
        h.update(b"\n");
    }
    let d = h.finalize();
    let mut c = [0u8; CKSUM_LEN];
    c.copy_from_slice(&d[..CKSUM_LEN]);
    c
}

impl Sync {
    /// The ruleset changed (a load): what the headers say from now on,
    /// and what a peer's must say for its states' rule numbers to count.
    pub fn set_pfcksum(&mut self, c: [u8; CKSUM_LEN]) {
        self.cfg.pfcksum = c;
    }

    pub fn new(cfg: SyncConfig) -> Sync {
        let counter = cfg.auth.as_ref().map_or(0, |a| a.counter_base);
        Sync {
            counter,
            replay: HashMap::new(),
            cfg,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            flush_at: None,
            pending_since: None,
            marks: HashMap::new(),
            urgent: Vec::new(),
            bulk: Bulk::Idle,
            bulk_out: VecDeque::new(),
            bulk_out_at: None,
            bulk_began: 0,
            bulk_req_received: 0,
            bulk_owed: None,
            bulk_answered: false,
            want_table: false,
            bulk_failures: 0,
            retry_table_at: 0,
            asked: Default::default(),
            last_heard: None,
            out: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            link_up: true,
            link_demote: 0,
        }
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The bulk update we asked for is still awaited.
    pub fn bulk_pending(&self) -> bool {
        matches!(self.bulk, Bulk::Requesting { .. })
    }

    /// Start: ask the peer for its whole table, demoted until it is here.
    pub fn start(&mut self, now: Micros) {
        if self.bulk_pending() {
            return;
        }
        self.events
            .push_back(Event::Demote(BULK_DEMOTE, "pfsync: bulk update under way"));
        self.begin_bulk(now, BULK_DEMOTE);
    }

    fn begin_bulk(&mut self, now: Micros, demote: i32) {
        self.bulk_answered = false;
        self.bulk = Bulk::Requesting {
            started: now,
            sent: now,
            next: now + self.cfg.bulk_retry,
            deadline: now + self.cfg.bulk_timeout,
            demote,
        };
        self.request_bulk();
    }

    /// The sync interface's link went down (`up` false) or came back.
    /// Down: CARP is demoted by `LINK_DEMOTE`, the changes not yet sent
    /// are dropped (they could not leave; the peer asks for our whole
    /// table when it sees its own link come back, and a state it lacks is
    /// asked for with the next change the peer hears of), and a bulk
    /// update under way is given up, unless it is the start's (it holds
    /// `BULK_DEMOTE`): that one waits, its demotion kept, for the link.
    /// A node with none of the peer's states must not preempt it: with
    /// a crossover cable the peer loses its carrier too and is demoted
    /// by the link's 1 as well, so that 1 alone decides nothing (a probe
    /// saw the restarted node take over in 0.65 s with an empty table).
    /// Back: the peer's whole table is asked for (the start's update
    /// again, its timeout counted from now), and the link's demotion
    /// lifts when that bulk update ends (complete or given up).
    pub fn set_link(&mut self, now: Micros, up: bool) {
        if up == self.link_up {
            return;
        }
        self.link_up = up;
        let owed = self.bulk_owed.take();
        if up && owed.is_some_and(|t| now.saturating_sub(t) <= self.cfg.bulk_retry) {
            self.bulk_req_received = now;
            self.events.push_back(Event::BulkRequested);
        }
        if !up {
            if self.link_demote == 0 {
                self.link_demote = LINK_DEMOTE;
                self.events
                    .push_back(Event::Demote(LINK_DEMOTE, "pfsync: sync link down"));
            }
            // The start's update (it holds a demotion) waits for the
            // link; one the link's return asked for is given up (a new
            // one is asked for at the next return).
            if let Bulk::Requesting { demote: 0, .. } = self.bulk {
                self.bulk = Bulk::Idle;
            }
            self.pending.clear();
            self.pending_bytes = 0;
            self.flush_at = None;
            self.pending_since = None;
            self.marks.clear();
            self.urgent.clear();
            self.bulk_out.clear();
            self.bulk_out_at = None;
            self.out.clear();
            return;
        }
        match self.bulk {
            Bulk::Requesting { demote, .. } => self.begin_bulk(now, demote),
            Bulk::Idle if self.link_demote > 0 => self.begin_bulk(now, 0),
            Bulk::Idle => {}
        }
    }

    /// CARP made this node master (`all`: of every virtual host it
    /// runs): a start's bulk update still under way gives up
    /// its demotion when it waits for the sync link, or, with the link
    /// up, when this node carries every virtual host (the peer went away
    /// in the middle of sending it). The master's table is then the
    /// reference; kept, the demotion would let a peer starting later
    /// preempt this node before either has the other's table (a probe saw
    /// both at 32, and the preferred one preempt 52 ms after its start).
    /// Master of only some (one the peer does not run), the peer still
    /// carries the others with its whole table: the 32 stays until the
    /// update ends (a review's finding). The table is still asked for.
    /// The demotion to lift, if any.
    pub fn master(&mut self, all: bool) -> Option<(i32, &'static str)> {
        let link_up = self.link_up;
        match &mut self.bulk {
            Bulk::Requesting { demote, .. } if *demote != 0 && (all || !link_up) => {
                let d = std::mem::take(demote);
                Some((
                    -d,
                    if link_up {
                        "pfsync: master before its bulk update ended (its table is the reference)"
                    } else {
                        "pfsync: master with the sync link down (its table is the reference)"
                    },
                ))
            }
            _ => None,
        }
    }

    /// The demotion the bulk update under way holds (None: none under
    /// way).
    pub fn bulk_demote(&self) -> Option<i32> {
        match self.bulk {
            Bulk::Requesting { demote, .. } => Some(demote),
            Bulk::Idle => None,
        }
    }

    /// A given-up bulk update waits for the peer to be heard.
    pub fn wants_table(&self) -> bool {
        self.want_table
    }

    /// When the peer's last packet was taken (None: never).
    pub fn last_heard(&self) -> Option<Micros> {
        self.last_heard
    }

    /// How many senders have a replay window (authentication).
    pub fn replay_senders(&self) -> usize {
        self.replay.len()
    }

    /// Whether the sync interface's link is up (as last told).
    pub fn link_up(&self) -> bool {
        self.link_up
    }

    fn request_bulk(&mut self) {
        self.stats.bulk_requests_sent += 1;
        self.urgent.push(Message::UpdReq(StateRef {
            id: 0,
            creatorid: 0,
        }));
        self.flush_urgent();
    }

    fn arm(&mut self, now: Micros) {
        if self.flush_at.is_none() {
            self.flush_at = Some(now + self.cfg.flush_after);
        }
        if self.pending_since.is_none() {
            self.pending_since = Some(now);
        }
    }

    /// Everything pending leaves at the next `handle_timeout` (now).
    fn push(&mut self, now: Micros) {
        self.stats.pushes += 1;
        self.arm(now);
        self.flush_at = Some(now);
    }

    /// Add a pending change; a packet's worth of them leaves at once.
    fn put(&mut self, r: StateRef, p: Pending) {
        self.pending_bytes += p.wire_len();
        if let Some(old) = self.pending.insert(r, p) {
            self.pending_bytes -= old.wire_len();
        }
        if self.pending_bytes >= self.packet_room() {
            // Due at once (time 0 is past whatever the clock says).
            self.flush_at = Some(0);
        }
    }

    fn take(&mut self, r: &StateRef) -> Option<Pending> {
        let p = self.pending.remove(r)?;
        self.pending_bytes -= p.wire_len();
        Some(p)
    }

    /// The sync interface's MTU changed (an IPv4 header included): the
    /// packets built from now on fit it. What is pending leaves at once if
    /// it fills a packet of the new size.
    pub fn set_mtu(&mut self, mtu: usize) {
        self.cfg.mtu = mtu;
        if !self.pending.is_empty() && self.pending_bytes >= self.packet_room() {
            self.flush();
        }
    }

    /// The MTU packets are built for.
    pub fn mtu(&self) -> usize {
        self.cfg.mtu
    }

    /// Room for messages in one packet (IP and pfsync headers, a few
    /// subheaders and the authentication taken off).
    fn packet_room(&self) -> usize {
        let auth = if self.cfg.auth.is_some() { AUTH_LEN } else { 0 };
        self.cfg.mtu.saturating_sub(
            wire::IPV4_HEADER_LEN + wire::HEADER_LEN + 3 * wire::SUBHEADER_LEN + auth,
        )
    }

    /// How long the oldest change not yet sent has waited.
    pub fn lag(&self, now: Micros) -> Micros {
        self.pending_since.map_or(0, |t| now.saturating_sub(t))
    }

    /// Remember what the peer hears of a state (bounded).
    fn mark(&mut self, r: StateRef, m: Mark) {
        if self.marks.len() >= MAX_MARKS && !self.marks.contains_key(&r) {
            self.marks.clear();
        }
        self.marks.insert(r, m);
    }

    /// Is this news far enough from what the peer heard to go at once?
    /// A state the peer has heard nothing of from us (one it created,
    /// now moving here after a takeover) goes at once the first time.
    fn far(&self, r: &StateRef, now: &Mark) -> bool {
        self.cfg.push_bytes != 0
            && self
                .marks
                .get(r)
                .is_none_or(|m| m.far(now, self.cfg.push_bytes))
    }

    /// A new state in the local table (not `no-sync`: the caller keeps
    /// those to itself).
    pub fn insert(&mut self, now: Micros, mut s: StateMsg) {
        let r = state_ref(&s);
        self.mark(r, Mark::of(&s.src, &s.dst));
        if self.cfg.ack_inserts {
            s.state_flags |= wire::PFSTATE_ACK;
        }
        self.put(r, Pending::Ins(Box::new(s)));
        self.arm(now);
        if self.cfg.ack_inserts {
            // The first packet waits for the answer: no batching.
            self.flush_at = Some(now);
        }
    }

    /// A state changed (its packets moved its peers, its expiry): what
    /// changed, as a compressed update.
    pub fn update(&mut self, now: Micros, u: UpdCMsg) {
        let r = StateRef {
            id: u.id,
            creatorid: u.creatorid,
        };
        let far = self.far(&r, &Mark::of(&u.src, &u.dst));
        let n = match self.take(&r) {
            Some(Pending::Ins(mut s)) => {
                // Not sent yet: the insert carries the news.
                s.src = u.src;
                s.dst = u.dst;
                s.expire = u.expire;
                s.timeout = u.timeout;
                self.put(r, Pending::Ins(s));
                if far {
                    self.push(now);
                } else {
                    self.arm(now);
                }
                return;
            }
            Some(Pending::Del) => {
                self.put(r, Pending::Del);
                return;
            }
            Some(Pending::Upd(_, n)) => n + 1,
            None => 1,
        };
        if n >= self.cfg.maxupd {
            // Changed maxupd times since last sent: it goes now.
            self.mark(r, Mark::of(&u.src, &u.dst));
            self.urgent.push(Message::UpdC(u));
            self.flush_urgent();
        } else {
            self.put(r, Pending::Upd(u, n));
            if far {
                self.push(now);
            } else {
                self.arm(now);
            }
        }
    }

    /// A state left the local table.
    pub fn delete(&mut self, now: Micros, r: StateRef) {
        self.marks.remove(&r);
        match self.take(&r) {
            // Never told anyone: nothing to take back.
            Some(Pending::Ins(_)) => {}
            _ => {
                self.put(r, Pending::Del);
                self.arm(now);
            }
        }
    }

    /// The local table was flushed (pfctl -F states): the peer removes
    /// the states this node created (one CLR for its creator id, at
    /// once); what was waiting to be sent of them is dropped, so that no
    /// insert or update arriving after the clear brings one back. The
    /// peer's own states are not touched on the peer.
    pub fn clear_own(&mut self, _now: Micros) {
        let me = self.cfg.creator;
        self.pending.retain(|r, _| r.creatorid != me);
        self.marks.retain(|r, _| r.creatorid != me);
        // A bulk update being sent: its own states are gone too.
        self.bulk_out
            .retain(|m| !matches!(m, Message::Upd(s) if s.creatorid == me));
        self.urgent.push(Message::Clr(ClrMsg {
            ifname: Default::default(),
            creatorid: me,
        }));
        self.flush_urgent();
    }

    /// `defer`: the caller holds the first packet of this new state until
    /// the peer acknowledges it. Its INS (not yet sent) asks for INS_ACK
    /// and leaves at once with everything pending; `Event::Acked` says
    /// when the answer came. False if there is no such insert waiting
    /// (then there is nothing to wait for).
    pub fn want_ack(&mut self, now: Micros, r: StateRef) -> bool {
        match self.pending.get_mut(&r) {
            Some(Pending::Ins(s)) => {
                s.state_flags |= wire::PFSTATE_ACK;
                self.arm(now);
                self.flush_at = Some(now);
                true
            }
            _ => false,
        }
    }

    /// The caller took a state whose INS asked for an acknowledgement:
    /// INS_ACK goes at once.
    pub fn ack(&mut self, _now: Micros, r: StateRef) {
        self.urgent.push(Message::InsAck(r));
        self.flush_urgent();
    }

    /// The caller has no state for an update that arrived: ask for it.
    pub fn unknown(&mut self, _now: Micros, r: StateRef) {
        if self.asked.len() >= MAX_ASKED {
            self.asked.clear();
        }
        self.asked.insert(r);
        self.urgent.push(Message::UpdReq(r));
        self.flush_urgent();
    }

    /// Answer `StateWanted`: the state in full.
    pub fn send_state(&mut self, _now: Micros, s: StateMsg) {
        self.urgent.push(Message::Upd(Box::new(s)));
        self.flush_urgent();
    }

    /// Answer `BulkRequested`: every state, paced, between BUS START and
    /// BUS END.
    pub fn bulk_send(&mut self, now: Micros, states: Vec<StateMsg>) {
        self.stats.bulk_updates_sent += 1;
        self.bulk_out.clear();
        self.bulk_out.push_back(Message::Bus(BusMsg {
            creatorid: self.cfg.creator,
            endtime: 0,
            status: BusStatus::Start,
        }));
        self.bulk_out
            .extend(states.into_iter().map(|s| Message::Upd(Box::new(s))));
        // (BUS END is added when the states are out: its endtime says how
        // long the update took.)
        self.bulk_out_at = Some(now);
        self.bulk_began = now;
    }

    /// A pfsync packet (the IP payload) arrived with IP TTL `ttl`.
    pub fn handle_packet(&mut self, now: Micros, ttl: u8, payload: &[u8]) {
        self.handle_packet_from(now, None, ttl, payload)
    }

    /// A pfsync packet sent to the group (224.0.0.240) that reached a
    /// node with a unicast peer: not taken. Counted as `ToGroup` if it is
    /// one this node would otherwise take (TTL 255, well formed, and with
    /// a `key`, authenticated with it: the partner, whose `peer` differs);
    /// anything else of the kind is left unsaid, as on OpenBSD, where the
    /// node has not joined the group (another pair sharing the link).
    pub fn handle_packet_to_group(&mut self, ttl: u8, payload: &[u8]) {
        if ttl != wire::TTL {
            return;
        }
        let Ok(p) = Packet::from_bytes(payload) else {
            return;
        };
        if let Some(a) = &self.cfg.auth {
            // (No replay window: nothing of it is taken.)
            if check_auth(a, payload, &p).is_err() {
                return;
            }
        }
        self.drop_event(Refused::ToGroup);
    }

    /// The same, from source address `src` (authentication keeps one
    /// replay window per sender).
    pub fn handle_packet_from(
        &mut self,
        now: Micros,
        src: Option<std::net::IpAddr>,
        ttl: u8,
        payload: &[u8],
    ) {
        if ttl != wire::TTL {
            return self.drop_packet(Refused::BadTtl);
        }
        let Ok(p) = Packet::from_bytes(payload) else {
            return self.drop_packet(Refused::Malformed);
        };
        if let Some(a) = &self.cfg.auth {
            // A sender gets a replay window only once its MAC is right:
            // forged packets from many addresses must not grow the map.
            let replay = &mut self.replay;
            if let Err(r) =
                check_auth(a, payload, &p).and_then(|c| replay.entry(src).or_default().take(c))
            {
                return self.drop_packet(r);
            }
        }
        self.stats.packets_received += 1;
        self.last_heard = Some(now);
        // A bulk update was given up (the peer unheard for its whole
        // timeout: its side of the sync link down, its pfsync blocked):
        // the peer is heard again, so its table is asked for again (it
        // may hold connections this node lacks; nothing else would bring
        // them, as the peer has no reason to send them).
        if self.want_table
            && self.link_up
            && matches!(self.bulk, Bulk::Idle)
            && now >= self.retry_table_at
        {
            self.want_table = false;
            self.begin_bulk(now, 0);
        }
        // Another ruleset: its rule numbers name other rules here.
        let same_rules = p.pfcksum == self.cfg.pfcksum;
        if !same_rules {
            self.stats.other_ruleset += 1;
        }
        for mut m in p.messages {
            if let (false, Message::Ins(s) | Message::Upd(s)) = (same_rules, &mut m) {
                s.rule = wire::NO_RULE;
            }
            *self
                .stats
                .messages_received
                .entry(m.action().name())
                .or_default() += 1;
            match m {
                Message::Upd(s) => {
                    // A state we asked for alone is no sign of the bulk
                    // update coming (a busy peer answers many while the
                    // update has stopped).
                    if !self.asked.remove(&state_ref(&s)) {
                        self.bulk_progress(now);
                    }
                    self.events.push_back(Event::State(s))
                }
                Message::Ins(s) => self.events.push_back(Event::State(s)),
                Message::UpdC(u) => self.events.push_back(Event::Update(u)),
                Message::Del(s) => {
                    self.marks.remove(&state_ref(&s));
                    self.events.push_back(Event::Delete(state_ref(&s)))
                }
                Message::DelC(r) => {
                    self.marks.remove(&r);
                    self.events.push_back(Event::Delete(r))
                }
                Message::Clr(c) => {
                    self.marks.retain(|r, _| r.creatorid != c.creatorid);
                    self.events.push_back(Event::Clear(c))
                }
                Message::InsAck(r) => self.events.push_back(Event::Acked(r)),
                Message::UpdReq(r) if r.id == 0 && r.creatorid == 0 => {
                    if self.link_up {
                        self.bulk_req_received = now;
                        self.events.push_back(Event::BulkRequested);
                    } else {
                        // Read before this node's own link-up event (both
                        // ends of a cable come up together): answered,
                        // whole (the table and the kills to repeat), once
                        // the link is up (`set_link`).
                        self.bulk_owed = Some(now);
                    }
                }
                Message::UpdReq(r) => self.events.push_back(Event::StateWanted(r)),
                Message::Bus(b) => self.bus(now, b),
            }
        }
    }

    /// The peer's bulk update is coming (its BUS START, or a full state
    /// after it): not asked for again while it keeps coming, and not
    /// given up before `bulk_retry` of silence, up to `BULK_MAX_FACTOR`
    /// times `bulk_timeout` in all. A table the peer cannot send within
    /// `bulk_retry` (about 200,000 states at the default pace) would
    /// otherwise be asked for again, and sent again from its start, every
    /// `bulk_retry` until `bulk_timeout`, and never arrive whole. OpenBSD
    /// likewise stretches its failure timeout when BUS START arrives.
    fn bulk_progress(&mut self, now: Micros) {
        let Bulk::Requesting {
            started,
            ref mut next,
            ref mut deadline,
            ..
        } = self.bulk
        else {
            return;
        };
        if !self.bulk_answered {
            return;
        }
        let quiet = now + self.cfg.bulk_retry;
        *next = (*next).max(quiet);
        let cap = started + BULK_MAX_FACTOR * self.cfg.bulk_timeout;
        *deadline = (*deadline).max(quiet.min(cap));
    }

    fn bus(&mut self, now: Micros, b: BusMsg) {
        let Bulk::Requesting { started, sent, .. } = self.bulk else {
            return;
        };
        if b.status == BusStatus::Start {
            self.bulk_answered = true;
            self.bulk_progress(now);
        }
        match b.status {
            BusStatus::End => {
                // The update answers our (last) request if it began after
                // we sent it (endtime: seconds it took).
                let began = now.saturating_sub(b.endtime as u64 * SECOND);
                if began + SECOND < sent {
                    return self.drop_event(Refused::StaleBus);
                }
                self.finish_bulk(now, started, true);
            }
            BusStatus::Start | BusStatus::Other(_) => {}
        }
    }

    fn finish_bulk(&mut self, now: Micros, started: Micros, complete: bool) {
        let demote = match self.bulk {
            Bulk::Requesting { demote, .. } => demote,
            Bulk::Idle => 0,
        };
        self.bulk = Bulk::Idle;
        self.want_table = !complete;
        if complete {
            self.bulk_failures = 0;
        } else {
            self.bulk_failures += 1;
            let wait = match self.bulk_failures {
                1 => 0,
                n => ((60 * SECOND) << (n - 2).min(6)).min(3600 * SECOND),
            };
            self.retry_table_at = now + wait;
        }
        self.stats.last_bulk = Some((started, now, complete));
        self.events.push_back(Event::BulkDone { complete, at: now });
        if demote != 0 {
            self.events
                .push_back(Event::Demote(-demote, "pfsync: bulk update over"));
        }
        if self.link_up && self.link_demote > 0 {
            self.events.push_back(Event::Demote(
                -self.link_demote,
                "pfsync: sync link up, bulk update over",
            ));
            self.link_demote = 0;
        }
    }

    fn drop_packet(&mut self, d: Refused) {
        self.drop_event(d);
    }

    fn drop_event(&mut self, d: Refused) {
        *self.stats.drops.entry(d).or_default() += 1;
        self.events.push_back(Event::Dropped(d));
    }

    /// The next time `handle_timeout` has work.
    pub fn poll_timeout(&self) -> Option<Micros> {
        let bulk = match self.bulk {
            // Waiting for the link: nothing to send, no timeout running.
            Bulk::Requesting { .. } if !self.link_up => None,
            Bulk::Requesting { next, deadline, .. } => Some(next.min(deadline)),
            Bulk::Idle => None,
        };
        // An answer to the peer's bulk request waits for the link too.
        let bulk_out = self.bulk_out_at.filter(|_| self.link_up);
        [self.flush_at, bulk_out, bulk].into_iter().flatten().min()
    }

    pub fn handle_timeout(&mut self, now: Micros) {
        if self.flush_at.is_some_and(|t| t <= now) {
            let lag = self.lag(now);
            self.stats.max_lag = self.stats.max_lag.max(lag);
            self.flush();
        }
        // (The start's update waits while the link is down: `set_link`.)
        if let (
            true,
            Bulk::Requesting {
                started,
                ref mut next,
                ref mut sent,
                deadline,
                ..
            },
        ) = (self.link_up, &mut self.bulk)
        {
            let started = *started;
            if now >= *deadline {
                self.finish_bulk(now, started, false);
            } else if *next <= now {
                *sent = now;
                *next = now + self.cfg.bulk_retry;
                // A new request: the peer starts its update again.
                self.bulk_answered = false;
                self.request_bulk();
            }
        }
        // A bulk request can arrive while this node still thinks its link
        // down: both ends of a cable come up together, and the peer's
        // request (sent when it saw its own link come back) may be read
        // before this node's link event. Its answer waits for the link
        // rather than being built and dropped (the peer would wait for
        // its retry, 5 s, with CARP demoted, and its backup preempt in
        // the meantime: a probe saw 2 of 6 cable flaps do that).
        if self.link_up && self.bulk_out_at.is_some_and(|t| t <= now) {
            self.pace_bulk(now);
        }
    }

    /// Send up to `bulk_pace` packets of the bulk update.
    fn pace_bulk(&mut self, now: Micros) {
        for _ in 0..self.cfg.bulk_pace {
            if self.bulk_out.is_empty() {
                break;
            }
            let mut b = self.builder();
            while let Some(m) = self.bulk_out.front() {
                if !b.fits(m) {
                    break;
                }
                if let Some(mut m) = self.bulk_out.pop_front() {
                    // Aged by the pacing: as if made now (OpenBSD exports
                    // each state as it sends it), so that a peer reading
                    // its creation time sees the right one.
                    if let Message::Upd(st) = &mut m {
                        let waited = (now.saturating_sub(self.bulk_began) / SECOND) as u32;
                        st.creation = st.creation.saturating_add(waited);
                        st.expire = st.expire.saturating_sub(waited);
                    }
                    self.count_sent(&m);
                    let _ = b.push(&m);
                }
            }
            if b.is_empty() {
                // A message larger than the MTU allows: cannot be sent.
                self.bulk_out.pop_front();
                continue;
            }
            self.emit(b);
        }
        if self.bulk_out.is_empty() {
            let took = now.saturating_sub(self.bulk_req_received) / SECOND;
            let end = Message::Bus(BusMsg {
                creatorid: self.cfg.creator,
                endtime: took as u32,
                status: BusStatus::End,
            });
            self.urgent.push(end);
            self.flush_urgent();
            self.bulk_out_at = None;
        } else {
            self.bulk_out_at = Some(now + self.cfg.bulk_tick);
        }
    }

    /// Everything pending leaves now, in packets of the MTU.
    pub fn flush(&mut self) {
        self.flush_at = None;
        self.pending_since = None;
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        let mut msgs = Vec::with_capacity(pending.len());
        for (r, p) in pending {
            msgs.push(match p {
                Pending::Ins(s) => {
                    self.mark(r, Mark::of(&s.src, &s.dst));
                    Message::Ins(s)
                }
                Pending::Upd(u, _) => {
                    self.mark(r, Mark::of(&u.src, &u.dst));
                    Message::UpdC(u)
                }
                Pending::Del => Message::DelC(r),
            });
        }
        self.send_all(msgs);
    }

    fn flush_urgent(&mut self) {
        let msgs = std::mem::take(&mut self.urgent);
        self.send_all(msgs);
    }

    fn send_all(&mut self, msgs: Vec<Message>) {
        let mut b = self.builder();
        for m in msgs {
            if !b.fits(&m) && !b.is_empty() {
                let full = std::mem::replace(&mut b, self.builder());
                self.emit(full);
            }
            if b.push(&m).is_ok() {
                self.count_sent(&m);
            }
        }
        if !b.is_empty() {
            self.emit(b);
        }
    }

    fn count_sent(&mut self, m: &Message) {
        // What is built while the link is down is not sent (`emit`).
        if !self.link_up {
            return;
        }
        *self
            .stats
            .messages_sent
            .entry(m.action().name())
            .or_default() += 1;
    }

    /// A packet to fill: the MTU's room, less the authentication's.
    fn builder(&self) -> PacketBuilder {
        let room = if self.cfg.auth.is_some() { AUTH_LEN } else { 0 };
        PacketBuilder::for_mtu(self.cfg.mtu.saturating_sub(room), self.cfg.pfcksum)
    }

    fn emit(&mut self, b: PacketBuilder) {
        if !self.link_up {
            self.stats.not_sent_link_down += 1;
            return;
        }
        self.stats.packets_sent += 1;
        let mut p = b.finish();
        if let Some(a) = &self.cfg.auth {
            self.counter += 1;
            sign(a, &mut p, self.counter);
        }
        self.out.push_back(p);
    }

    /// A pfsync payload to send (IP protocol 240, TTL 255, to the group
    /// or the sync peer).
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }
}

pub fn state_ref(s: &StateMsg) -> StateRef {
    StateRef {
        id: s.id,
        creatorid: s.creatorid,
    }
}

/// The compressed update of a state: its peers, expiry and timeout.
pub fn upd_c(s: &StateMsg) -> UpdCMsg {
    UpdCMsg {
        id: s.id,
        src: s.src,
        dst: s.dst,
        creatorid: s.creatorid,
        expire: s.expire,
        timeout: s.timeout,
        state_flags: s.state_flags as u8,
    }
}

/// HMAC-SHA1 keyed with `key` (HMAC takes keys of any length: None
/// does not happen).
fn mac(key: &[u8]) -> Option<Hmac<Sha1>> {
    <Hmac<Sha1> as KeyInit>::new_from_slice(key).ok()
}

/// Append the authentication section to a finished packet.
fn sign(a: &Auth, p: &mut Vec<u8>, counter: u64) {
    p.extend_from_slice(&[AUTH_ACTION, (AUTH_MSG_LEN / 4) as u8, 0, 1]);
    p.extend_from_slice(&counter.to_be_bytes());
    let at = p.len();
    p.extend_from_slice(&[0; 20]);
    let len = p.len() as u16;
    p[2..4].copy_from_slice(&len.to_be_bytes());
    if let Some(mut m) = mac(&a.key) {
        m.update(p);
        let tag = m.finalize().into_bytes();
        p[at..at + 20].copy_from_slice(&tag);
    }
}

/// The packet's counter if its last section authenticates it with our
/// key and the counter is new.
fn check_auth(a: &Auth, payload: &[u8], p: &Packet) -> Result<u64, Refused> {
    let len = u16::from_be_bytes([payload[2], payload[3]]) as usize;
    let s = p
        .skipped
        .last()
        .filter(|s| {
            s.action == AUTH_ACTION
                && s.count == 1
                && s.msg_len == AUTH_MSG_LEN
                && s.offset + AUTH_LEN == len
        })
        .ok_or(Refused::Unauthenticated)?;
    let body = &payload[s.offset + wire::SUBHEADER_LEN..len];
    let counter = u64::from_be_bytes(body[..8].try_into().map_err(|_| Refused::Unauthenticated)?);
    let mut copy = payload[..len].to_vec();
    copy[len - 20..].fill(0);
    let mut m = mac(&a.key).ok_or(Refused::Unauthenticated)?;
    m.update(&copy);
    m.verify_slice(&body[8..28])
        .map_err(|_| Refused::Unauthenticated)?;
    Ok(counter)
}

/// Counters taken, as IPsec's anti-replay window (RFC 4303, 3.4.3): the
/// highest, and which of the 1023 below it. Packets a sender's threads put
/// on the wire out of order (one flush can be hundreds of packets) are
/// all taken; each counter once.
#[derive(Clone, Copy, Debug, Default)]
struct ReplayWindow {
    top: Option<u64>,
    /// Bit i: counter top - i was taken.
    seen: [u64; 16],
}

impl ReplayWindow {
    const SIZE: u64 = 1024;

    fn bit(&self, d: u64) -> bool {
        self.seen[(d / 64) as usize] & (1 << (d % 64)) != 0
    }

    fn set(&mut self, d: u64) {
        self.seen[(d / 64) as usize] |= 1 << (d % 64);
    }

    /// Move the window up by `shift` counters.
    fn slide(&mut self, shift: u64) {
        if shift >= Self::SIZE {
            self.seen = [0; 16];
            return;
        }
        let (words, bits) = ((shift / 64) as usize, (shift % 64) as u32);
        let old = self.seen;
        for i in (0..16usize).rev() {
            let lo = i.checked_sub(words).map_or(0, |j| old[j]);
            let below = i.checked_sub(words + 1).map_or(0, |j| old[j]);
            self.seen[i] = if bits == 0 {
                lo
            } else {
                (lo << bits) | (below >> (64 - bits))
            };
        }
    }

    /// Take `c` if it was never taken and is not too old.
    fn take(&mut self, c: u64) -> Result<(), Refused> {
        let Some(top) = self.top else {
            self.top = Some(c);
            self.seen = [0; 16];
            self.set(0);
            return Ok(());
        };
        if c > top {
            self.slide(c - top);
            self.set(0);
            self.top = Some(c);
            return Ok(());
        }
        let d = top - c;
        if d >= Self::SIZE || self.bit(d) {
            return Err(Refused::Replayed);
        }
        self.set(d);
        Ok(())
    }
}
