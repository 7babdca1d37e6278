//! pfsync in the daemon: the `palisade-pfsync` core, driven by worker 0
//! like CARP. The filter's state events (inserts, updates, deletes of
//! states that may be synced) go to the core, from every worker every few
//! frames (`feed`), so a fast transfer's copy on the peer lags by a few
//! frames and not by worker 0's next turn; its packets leave on the
//! sync interface (IP protocol 240, TTL 255, to 224.0.0.240 or the
//! configured peer) from that interface's IPv4 address; what arrives on
//! the sync interface (punted after pf passed it `in`: pf.conf must pass
//! `proto pfsync` there) is applied to the state table. At start the node
//! asks its peer for a bulk update and keeps CARP demoted by 32 until it
//! is done or a minute has passed.
//!
//! The sync link is a port Palisade owns (an `[[interface]]` of
//! palisade.toml), not a kernel interface: the packets go through the
//! same data plane and pf as everything else, so the sync link is
//! filtered by pf.conf exactly as on OpenBSD.

use std::net::{IpAddr, Ipv4Addr};

use palisade_filter::state::{StateEvent, StateId};
use palisade_net::config::PfsyncConfig;
use palisade_net::dataplane::{Dataplane, Out, Punted};
use palisade_pfsync::convert::{from_msg, from_upd_c, state_id, state_ref, to_msg, to_upd_c};
use palisade_pfsync::sync::{state_ref as state_ref_of, Auth, Event, Refused, Sync, SyncConfig};
use palisade_wire::ethernet::EtherType;

const GROUP: Ipv4Addr = palisade_pfsync::wire::GROUP_V4;

/// How long a change waits for others to share its packet (a full
/// packet leaves at once): 10 ms, not OpenBSD's second, so that a new
/// state is on the peer before the master can die with it; at most a
/// hundred small packets a second when changes trickle in.
const FLUSH_AFTER_US: u64 = 10_000;

/// Frames a worker handles between two `feed`s.
pub const FEED_EVERY: usize = 16;

pub struct SyncRuntime {
    sync: Sync,
    pub cfg: PfsyncConfig,
    pub creator: u32,
    pub applied: u64,
    pub apply_errors: u64,
    /// `apply_errors` by reason, and when each was last warned about.
    not_applied: std::collections::BTreeMap<&'static str, NotApplied>,
    /// `defer`: first packets held until the peer acknowledges their
    /// states, oldest first.
    deferred: std::collections::VecDeque<Deferral>,
    /// INS_ACKs that came before their packet was handed over.
    early_acks: std::collections::VecDeque<StateId>,
    pub defer_stats: DeferStats,
    /// Ports whose link is down (`port_link`).
    ports_down: std::collections::BTreeSet<usize>,
    /// The ruleset whose checksum the headers carry (`follow_ruleset`).
    ruleset: Option<std::sync::Arc<palisade_filter::Engine>>,
    /// Packets from a peer with another ruleset, as last warned about.
    other_ruleset_seen: u64,
    /// The peer's packets carried another checksum last (warned), and
    /// the packets received when last looked at.
    rulesets_differ: bool,
    received_seen: u64,
    /// Refused packets, for the rate-limited warnings.
    refused: RefusedLog,
    /// States taken back from the state file that the peer has not yet
    /// confirmed (`restored`): those its complete bulk update lacks were
    /// killed or closed there while this node was stopped, and go.
    restored: std::collections::HashSet<u64>,
    /// CARP runs beside pfsync (the master's table decides what of
    /// `restored` stays).
    with_carp: bool,
    /// The peer's complete bulk update came and `restored` still holds
    /// what it lacked: CARP decides (`peer_master`, `master`).
    await_master: bool,
    /// CARP has heard another node's advertisement (a master's).
    peer_was_master: bool,
    /// The states killed here by hand (`state kill`), the latest
    /// `GONE_MAX` of the last day, with when: a peer that missed the
    /// deletion (the sync link was down) and sends such a state back
    /// (whole: in its bulk update, or answering the request an update of
    /// it brings) is told to delete it instead of bringing it back, and
    /// each bulk update this node sends carries their deletions. Without
    /// them a connection killed during an outage of the sync link came
    /// back from the peer, here or there (an HA probe). Only kills: a
    /// state that merely expired here may live on with its creator (a
    /// review). A state created after the kill with the same id (ids come
    /// back) is a new one, and taken.
    gone: std::collections::VecDeque<(palisade_pfsync::StateRef, u64)>,
    gone_set: std::collections::HashMap<palisade_pfsync::StateRef, u64>,
    /// States the peer sent back that this node had removed.
    pub refused_gone: u64,
}

/// Killed states remembered (`gone`), at most, and for how long.
const GONE_MAX: usize = 65_536;
const GONE_FOR_US: u64 = 86_400 * 1_000_000;

/// Why a whole packet is refused (a BUS END that answers nothing is a
/// message, harmless: left at debug).
const PACKET_REFUSALS: [Refused; 5] = [
    Refused::Unauthenticated,
    Refused::Replayed,
    Refused::BadTtl,
    Refused::Malformed,
    Refused::ToGroup,
];

/// At most one warning a minute per reason.
const REFUSED_EVERY_US: u64 = 60_000_000;

/// Refused packets, warned about per reason: the first at once, then at
/// most once a minute with the count since. A peer with another `key`
/// has every packet refused, and the counter in `sync show` alone went
/// unnoticed while the states silently stopped crossing.
#[derive(Default)]
struct RefusedLog {
    seen: std::collections::BTreeMap<Refused, RefusedSeen>,
}

#[derive(Default)]
struct RefusedSeen {
    /// When the last warning went out.
    warned_at: Option<u64>,
    /// Refused since then, and the first few senders.
    count: u64,
    from: Vec<IpAddr>,
}

impl RefusedLog {
    fn note(&mut self, why: Refused, from: Option<IpAddr>, n: u64) {
        let s = self.seen.entry(why).or_default();
        s.count += n;
        if let Some(a) = from {
            if !s.from.contains(&a) && s.from.len() < 4 {
                s.from.push(a);
            }
        }
    }

    /// The warnings due at `now_us`.
    fn due(&mut self, now_us: u64) -> Vec<String> {
        let mut out = Vec::new();
        for (why, s) in &mut self.seen {
            if s.count == 0 || s.warned_at.is_some_and(|t| now_us < t + REFUSED_EVERY_US) {
                continue;
            }
            let n = s.count;
            let what = if n == 1 { "packet" } else { "packets" };
            let from = match s.from.len() {
                0 => String::new(),
                1..=3 => {
                    let a: Vec<String> = s.from.iter().map(|a| a.to_string()).collect();
                    format!(" from {}", a.join(", "))
                }
                _ => {
                    let a: Vec<String> = s.from[..3].iter().map(|a| a.to_string()).collect();
                    format!(" from {} and others", a.join(", "))
                }
            };
            let when = match s.warned_at {
                Some(t) => format!(" in the last {} s", (now_us - t) / 1_000_000),
                None => String::new(),
            };
            let reason = match why {
                Refused::Unauthenticated => {
                    "not authenticated (is [pfsync] key the same on both firewalls?)"
                }
                Refused::Replayed => {
                    "replayed (its counter is not above the last one taken from that sender)"
                }
                Refused::BadTtl => "TTL not 255 (pfsync is taken from the sync link only)",
                Refused::Malformed => "not a pfsync version 6 packet",
                Refused::StaleBus => "a bulk update's end that answers no request of ours",
                Refused::ToGroup => {
                    "sent to the pfsync group 224.0.0.240, but this node's [pfsync] peer is unicast: set `peer` on both firewalls, each naming the other's sync address, or on neither"
                }
            };
            out.push(format!("pfsync: {n} {what}{from} refused{when}: {reason}"));
            s.warned_at = Some(now_us);
            s.count = 0;
            s.from.clear();
        }
        out
    }
}

/// The peer's news this table did not take, of one reason.
#[derive(Default)]
struct NotApplied {
    total: u64,
    /// Since the last warning, and when that went out.
    since: u64,
    warned_at: Option<u64>,
    /// What the warning says (None: no warning).
    why: Option<&'static str>,
}

/// The reason a peer's record or update was not taken, as `sync show`
/// names it, and what the warning says of it (None: not warned about; two
/// firewalls that both saw a connection's first packet each made a state
/// for it).
fn not_applied_reason(
    e: &palisade_filter::state::ImportError,
) -> (&'static str, Option<&'static str>) {
    use palisade_filter::state::ImportError as E;
    match e {
        E::Full => (
            "table full",
            Some("the state table is full (set limit states)"),
        ),
        E::KeyInUse => ("key in use", None),
        E::OwnId => (
            "own id",
            Some("they name states of this firewall's own that it no longer has"),
        ),
        E::Unknown(_) => ("unknown", None),
        E::Invalid(_) => ("invalid", Some("the records are inconsistent")),
    }
}

/// A packet's frames held for its new states' INS_ACK.
struct Deferral {
    waiting: Vec<StateId>,
    frames: Vec<Out>,
    until_us: u64,
}

/// What `defer` did: packets held, and how each was let go.
#[derive(Clone, Copy, Debug, Default)]
pub struct DeferStats {
    pub held: u64,
    pub acked: u64,
    pub timed_out: u64,
    /// Let go early because too many were held.
    pub overflowed: u64,
    /// Let go because a later packet of the same connection came (it
    /// must not overtake the first: OpenBSD's pfsync_deferred from
    /// pfsync_update_state).
    pub followed: u64,
}

/// How long a first packet waits for INS_ACK (OpenBSD's 20 ms).
pub const DEFER_US: u64 = 20_000;
/// Packets held at most (OpenBSD's 128); the oldest goes beyond.
const DEFER_MAX: usize = 128;

impl SyncRuntime {
    /// The local table was flushed by hand: the peer removes this node's
    /// states (`Sync::clear_own`).
    pub fn clear_own(&mut self, now_us: u64) {
        self.sync.clear_own(now_us);
    }

    pub fn new(
        cfg: &PfsyncConfig,
        dp: &mut Dataplane,
        creator: u32,
    ) -> Result<SyncRuntime, String> {
        dp.subscribe(palisade_pfsync::wire::PROTO);
        // With a unicast peer too: what the other node sends to the group
        // (it has no `peer`, or another) is refused here, counted and
        // warned about with its sender, rather than lost unseen.
        dp.join_group(cfg.iface, IpAddr::V4(GROUP))
            .map_err(|e| format!("pfsync: {e:?}"))?;
        dp.filter.states.set_events(true);
        dp.filter.states.set_track_created(cfg.defer);
        dp.set_track_hits(cfg.defer);
        let counter_base = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(1);
        let sync = Sync::new(SyncConfig {
            creator,
            flush_after: FLUSH_AFTER_US,
            ack_inserts: cfg.defer,
            // The sync interface's (its port's, or a bridge's first
            // member's), followed while running (`follow_mtu`).
            mtu: dp.iface_mtu(cfg.iface),
            maxupd: cfg.maxupd.max(1),
            auth: cfg.key.as_ref().map(|k| Auth {
                key: k.as_bytes().to_vec(),
                counter_base,
            }),
            ..SyncConfig::default()
        });
        Ok(SyncRuntime {
            sync,
            cfg: cfg.clone(),
            creator,
            applied: 0,
            apply_errors: 0,
            not_applied: std::collections::BTreeMap::new(),
            deferred: std::collections::VecDeque::new(),
            early_acks: std::collections::VecDeque::new(),
            ports_down: std::collections::BTreeSet::new(),
            defer_stats: DeferStats::default(),
            ruleset: None,
            other_ruleset_seen: 0,
            rulesets_differ: false,
            received_seen: 0,
            restored: std::collections::HashSet::new(),
            with_carp: false,
            await_master: false,
            peer_was_master: false,
            refused: RefusedLog::default(),
            gone: Default::default(),
            gone_set: Default::default(),
            refused_gone: 0,
        })
        .map(|mut r| {
            r.follow_ruleset(dp);
            r
        })
    }

    /// The sync interface's MTU changed (`ip link set ... mtu`, followed
    /// by the data plane): packets are sized for the new one. (A packet
    /// sized for 1500 on a link of 1400 was not sent at all.)
    fn follow_mtu(&mut self, dp: &Dataplane) {
        let mtu = dp.iface_mtu(self.cfg.iface);
        if mtu != self.sync.mtu() {
            tracing::info!(
                "pfsync: the sync interface's MTU is now {mtu} (was {}): packets sized for it",
                self.sync.mtu()
            );
            self.sync.set_mtu(mtu);
        }
    }

    /// The headers carry the checksum of the ruleset in force; computed
    /// again after a load. A peer's states keep their rule numbers only
    /// when its checksum is ours (`palisade_pfsync::sync::ruleset_checksum`).
    fn follow_ruleset(&mut self, dp: &Dataplane) {
        let e = dp.filter.engine_arc();
        if self
            .ruleset
            .as_ref()
            .is_some_and(|r| std::sync::Arc::ptr_eq(r, &e))
        {
            return;
        }
        let rules = e.listing("").unwrap_or_default();
        self.sync
            .set_pfcksum(palisade_pfsync::sync::ruleset_checksum(
                rules.iter().map(|r| r.text.as_str()),
            ));
        self.ruleset = Some(e);
    }

    /// `defer`: the frames a packet produced wait until the peer has
    /// acknowledged the states it created (or `DEFER_US`); their INS
    /// leave now. Returns what can go now: the sync packets, and held
    /// frames let go (the oldest, when too many are held; these frames
    /// themselves, when the states went without a trace).
    /// Also says whether it held the frames.
    pub fn defer(
        &mut self,
        dp: &mut Dataplane,
        created: Vec<StateId>,
        frames: Vec<Out>,
        now_us: u64,
    ) -> (Vec<Out>, bool) {
        // With defer every INS asks for INS_ACK (the core sets the flag
        // when the state is drained, by whichever worker): the answer may
        // even have come already.
        self.drain_local(dp, now_us);
        let waiting: Vec<StateId> = created
            .into_iter()
            .filter(|sid| {
                let early = self.early_acks.iter().position(|a| a == sid);
                if let Some(i) = early {
                    self.early_acks.remove(i);
                }
                early.is_none()
            })
            .collect();
        let mut out = Vec::new();
        // Nothing to hold (the packet was punted, or queued for a
        // neighbour): nothing waits.
        // (Nor while the sync link is down: no INS_ACK can come.)
        let held = !waiting.is_empty() && !frames.is_empty() && self.sync.link_up();
        if !held {
            out.extend(frames);
        } else {
            self.defer_stats.held += 1;
            self.deferred.push_back(Deferral {
                waiting,
                frames,
                until_us: now_us + DEFER_US,
            });
            while self.deferred.len() > DEFER_MAX {
                if let Some(d) = self.deferred.pop_front() {
                    self.defer_stats.overflowed += 1;
                    out.extend(d.frames);
                }
            }
        }
        out.extend(self.transmit(dp, now_us));
        (out, held)
    }

    /// States killed by hand (`state kill`): remembered (`gone`).
    pub fn killed(&mut self, refs: Vec<palisade_pfsync::StateRef>, now_us: u64) {
        for r in refs {
            self.gone_set.insert(r, now_us);
            self.gone.push_back((r, now_us));
        }
        // The oldest go: past the count, past a day, or no longer in the
        // set at that time (killed again since, or an id back in use).
        while let Some((r, at)) = self.gone.front().copied() {
            let stale = self.gone_set.get(&r) != Some(&at);
            if stale || self.gone.len() > GONE_MAX || now_us >= at + GONE_FOR_US {
                self.gone.pop_front();
                if !stale {
                    self.gone_set.remove(&r);
                }
            } else {
                break;
            }
        }
    }

    /// Whether the peer's state `m` is one killed here before it was
    /// created (its age says when; a second's slack). One made after the
    /// kill reuses the id: it is new, and forgotten from `gone`.
    fn killed_before(&mut self, m: &palisade_pfsync::StateMsg, now_us: u64) -> bool {
        let r = state_ref_of(m);
        let Some(&at) = self.gone_set.get(&r) else {
            return false;
        };
        if now_us >= at + GONE_FOR_US {
            self.gone_set.remove(&r);
            return false;
        }
        let created = now_us.saturating_sub(m.creation as u64 * 1_000_000);
        if created > at + 1_000_000 {
            self.gone_set.remove(&r);
            return false;
        }
        true
    }

    /// The demotion the bulk update under way holds, if any.
    pub fn bulk_demote(&self) -> Option<i32> {
        self.sync.bulk_demote()
    }

    /// Whether any packet is held.
    pub fn holds(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// A packet matched the states `hits` (local ids): packets held for
    /// any of them go now, before it, so that a connection's packets keep
    /// their order (a second datagram sent right after the first would
    /// otherwise overtake it by up to 20 ms).
    pub fn followed(&mut self, hits: &[u64], out: &mut Vec<Out>) {
        let mut i = 0;
        while i < self.deferred.len() {
            let d = &self.deferred[i];
            if d.waiting.iter().any(|w| hits.contains(&w.id)) {
                if let Some(d) = self.deferred.remove(i) {
                    self.defer_stats.followed += 1;
                    out.extend(d.frames);
                }
            } else {
                i += 1;
            }
        }
    }

    /// Stopping: everything pending leaves now, held packets go.
    pub fn shutdown(&mut self, dp: &mut Dataplane, now_us: u64) -> Vec<Out> {
        self.drain_local(dp, now_us);
        self.sync.flush();
        let mut out: Vec<Out> = self.deferred.drain(..).flat_map(|d| d.frames).collect();
        out.extend(self.transmit(dp, now_us));
        out
    }

    /// The peer has `sid`: packets waiting only for it go. An answer
    /// that comes before its packet was handed over is kept (a few).
    fn acked(&mut self, sid: StateId, out: &mut Vec<Out>) {
        if !self.deferred.iter().any(|d| d.waiting.contains(&sid)) {
            if self.early_acks.len() >= DEFER_MAX {
                self.early_acks.pop_front();
            }
            self.early_acks.push_back(sid);
            return;
        }
        for d in self.deferred.iter_mut() {
            d.waiting.retain(|w| *w != sid);
        }
        let mut i = 0;
        while i < self.deferred.len() {
            if self.deferred[i].waiting.is_empty() {
                if let Some(d) = self.deferred.remove(i) {
                    self.defer_stats.acked += 1;
                    out.extend(d.frames);
                }
            } else {
                i += 1;
            }
        }
    }

    /// Held packets whose time is up go.
    fn expire_deferred(&mut self, now_us: u64, out: &mut Vec<Out>) {
        while self.deferred.front().is_some_and(|d| d.until_us <= now_us) {
            if let Some(d) = self.deferred.pop_front() {
                self.defer_stats.timed_out += 1;
                out.extend(d.frames);
            }
        }
    }

    pub fn start(&mut self, now_us: u64) {
        self.sync.start(now_us);
    }

    /// Port `port`'s link changed: if the sync interface is on it, the
    /// core hears of it (demoted while down, the peer's table asked for
    /// again when back).
    pub fn port_link(&mut self, dp: &Dataplane, port: usize, up: bool, now_us: u64) {
        if up {
            self.ports_down.remove(&port);
        } else {
            self.ports_down.insert(port);
        }
        // The sync interface's ports: its own, or a bridge's members'
        // (up while one of them is).
        let Some(ifc) = dp.cfg.ifaces.get(self.cfg.iface) else {
            return;
        };
        let ports: Vec<usize> = match ifc.port {
            Some(p) => vec![p],
            None => ifc
                .members
                .iter()
                .filter_map(|&m| dp.cfg.ifaces.get(m).and_then(|i| i.port))
                .collect(),
        };
        if !ports.contains(&port) {
            return;
        }
        let up = ports.iter().any(|p| !self.ports_down.contains(p));
        if up == self.sync.link_up() {
            return;
        }
        if up {
            tracing::info!("pfsync: sync link up: asking the peer for its whole table");
        } else {
            tracing::warn!("pfsync: sync link down: CARP demoted by {} until it is back and a bulk update has come", palisade_pfsync::sync::LINK_DEMOTE);
        }
        self.sync.set_link(now_us, up);
    }

    pub fn timeout_us(&self, now_us: u64) -> Option<u64> {
        let held = self.deferred.front().map(|d| d.until_us);
        self.sync
            .poll_timeout()
            .into_iter()
            .chain(held)
            .min()
            .map(|t| t.saturating_sub(now_us))
    }

    pub fn stats(&self) -> &palisade_pfsync::sync::Stats {
        self.sync.stats()
    }

    pub fn bulk_pending(&self) -> bool {
        self.sync.bulk_pending()
    }

    /// Feed what arrived and what the filter did, run the timers, apply
    /// the peer's news; returns the frames to send and CARP demotions.
    pub fn step(
        &mut self,
        dp: &mut Dataplane,
        now_us: u64,
        punted: Vec<Punted>,
    ) -> (Vec<Out>, Vec<(i32, &'static str)>) {
        let now_ms = now_us / 1000;
        self.follow_ruleset(dp);
        self.follow_mtu(dp);
        for p in punted {
            if p.iface != self.cfg.iface {
                continue;
            }
            let Ok(info) = palisade_wire::parse_ip(&p.packet) else {
                continue;
            };
            let end = info.len.min(p.packet.len());
            let payload = &p.packet[info.l4_offset.min(end)..end];
            // The core counts refusals by reason only: the sender is
            // known here, so the log can name it.
            let refused =
                |s: &Sync| PACKET_REFUSALS.map(|r| s.stats().drops.get(&r).copied().unwrap_or(0));
            let before = refused(&self.sync);
            if self.cfg.peer.is_some() && info.dst == IpAddr::V4(GROUP) {
                self.sync.handle_packet_to_group(info.ttl, payload);
            } else {
                self.sync
                    .handle_packet_from(now_us, Some(info.src), info.ttl, payload);
            }
            let after = refused(&self.sync);
            for (k, why) in PACKET_REFUSALS.iter().enumerate() {
                if after[k] > before[k] {
                    self.refused
                        .note(*why, Some(info.src), after[k] - before[k]);
                }
            }
        }
        for w in self.refused.due(now_us) {
            tracing::warn!("{w}");
        }
        let other = self.sync.stats().other_ruleset;
        let received = self.sync.stats().packets_received;
        if other == self.other_ruleset_seen && received > self.received_seen && self.rulesets_differ
        {
            // Packets with our checksum again (both reloaded the same
            // pf.conf): said, as the difference was.
            self.rulesets_differ = false;
            tracing::info!(
                "pfsync: the peer's ruleset is ours again (its checksum): its states keep their rules"
            );
        }
        self.received_seen = received;
        if other > self.other_ruleset_seen {
            if !self.rulesets_differ {
                self.rulesets_differ = true;
                tracing::warn!(
                    "pfsync: the peer's ruleset differs from ours (its checksum): its states take no rule here (default options and timeouts) until both run the same pf.conf (rules naming a firewall's own addresses, as `from em0` or `self`, differ between the two: name the CARP addresses or `(em0)` instead)"
                );
            }
            self.other_ruleset_seen = other;
        }
        self.drain_local(dp, now_us);
        let mut demote = Vec::new();
        let mut released = Vec::new();
        while let Some(e) = self.sync.poll_event() {
            match e {
                // A state killed here, sent back by a peer that missed
                // the deletion: deleted there instead (unless it was made
                // after the kill: an id in use again).
                Event::State(m) if self.killed_before(&m, now_us) => {
                    self.refused_gone += 1;
                    self.sync.delete(now_us, state_ref_of(&m));
                }
                // An update of one of ours killed here (our ids in `gone`
                // are exact: one back in use has left it).
                Event::Update(u)
                    if dp.filter.states.created_here(u.id)
                        && self.gone_set.contains_key(&palisade_pfsync::StateRef {
                            id: u.id,
                            creatorid: u.creatorid,
                        }) =>
                {
                    self.refused_gone += 1;
                    self.sync.delete(
                        now_us,
                        palisade_pfsync::StateRef {
                            id: u.id,
                            creatorid: u.creatorid,
                        },
                    );
                }
                Event::State(m) => match from_msg(&m) {
                    Ok(rec) => {
                        // A state we already have is merged (the more
                        // advanced side wins): the import does that, after
                        // the fast path gave back what it did with it.
                        dp.fast_state_touched(rec.id);
                        let r = dp.filter.import_state(&rec, now_ms).map(|_| ());
                        self.restored.remove(&rec.id);
                        // The sender holds its first packet until this
                        // table can pass the connection's answer: it took
                        // the state, or already has one with its key
                        // (both saw the packet: a multicast, say).
                        // OpenBSD answers only the first case.
                        let ack = matches!(
                            r,
                            Ok(()) | Err(palisade_filter::state::ImportError::KeyInUse)
                        );
                        if ack && m.state_flags & palisade_pfsync::wire::PFSTATE_ACK != 0 {
                            self.sync.ack(now_us, state_ref_of(&m));
                        }
                        match r {
                            Ok(()) => self.applied += 1,
                            Err(e) => {
                                tracing::debug!("pfsync: state {:016x}: {e:?}", rec.id);
                                self.not_applied(&e);
                            }
                        }
                    }
                    Err(e) => {
                        tracing::debug!("pfsync: {e}");
                        self.not_applied(&palisade_filter::state::ImportError::Invalid("record"));
                    }
                },
                Event::Update(u) => match from_upd_c(&u) {
                    Ok(up) => {
                        dp.fast_state_touched(up.sid.id);
                        self.restored.remove(&up.sid.id);
                        match dp.filter.states.merge_update(&up, now_ms) {
                            Ok(_) => self.applied += 1,
                            // One of ours that is gone here (removed while
                            // the peer's update was on its way): asking for
                            // it would only bring a record to refuse.
                            Err(palisade_filter::state::ImportError::Unknown(sid))
                                if dp.filter.states.created_here(sid.id) => {}
                            Err(palisade_filter::state::ImportError::Unknown(sid)) => {
                                self.sync.unknown(now_us, state_ref(&sid))
                            }
                            Err(e) => self.not_applied(&e),
                        }
                    }
                    Err(_) => {
                        self.not_applied(&palisade_filter::state::ImportError::Invalid("update"))
                    }
                },
                Event::Delete(r) => {
                    dp.fast_state_touched(state_id(&r).id);
                    if dp.filter.states.delete_from_peer(state_id(&r)) {
                        self.applied += 1;
                    }
                }
                Event::Clear(c) => {
                    self.applied += dp.filter.states.clear_creator(c.creatorid) as u64;
                    dp.fast_reconcile();
                }
                Event::StateWanted(r) => {
                    // (Not a state the state file gave back that the
                    // peer has not confirmed: see `restored`.)
                    if self.restored.contains(&r.id) {
                        continue;
                    }
                    if let Some(rec) = dp.filter.export_state(r.id, now_ms) {
                        // (Never a `no-sync` state.)
                        if rec.creator == r.creatorid && !rec.no_sync {
                            self.sync.send_state(now_us, to_msg(&rec));
                        }
                    }
                }
                Event::BulkRequested => {
                    let mut all = Vec::new();
                    let mut cursor = 0;
                    loop {
                        let (recs, next) = dp.filter.states.walk(cursor, 4096, now_ms);
                        // Not what the state file gave back and the peer
                        // has not confirmed (a connection killed while
                        // this node was stopped must not reach the peer
                        // this way either).
                        all.extend(
                            recs.iter()
                                .filter(|r| !self.restored.contains(&r.id))
                                .map(to_msg),
                        );
                        match next {
                            Some(c) => cursor = c,
                            None => break,
                        }
                    }
                    tracing::info!("pfsync: bulk update of {} states for the peer", all.len());
                    self.sync.bulk_send(now_us, all);
                    // And what this node removed: the peer may have missed
                    // it (its link was down).
                    // Ours are deleted outright (an id of ours back in use
                    // has left `gone`); the peer's are asked for, and their
                    // creation time decides (`killed_before`): the peer may
                    // have given the id to a new state meanwhile.
                    let live: Vec<_> = self
                        .gone
                        .iter()
                        .filter(|(r, at)| {
                            self.gone_set.get(r) == Some(at) && now_us < at + GONE_FOR_US
                        })
                        .map(|(r, _)| *r)
                        .collect();
                    for r in live {
                        if dp.filter.states.created_here(r.id) {
                            self.sync.delete(now_us, r);
                        } else {
                            self.sync.unknown(now_us, r);
                        }
                    }
                }
                Event::Demote(d, why) => demote.push((d, why)),
                Event::BulkDone { complete, .. } => {
                    if complete {
                        let took = self
                            .sync
                            .stats()
                            .last_bulk
                            .map_or(0.0, |(a, b, _)| b.saturating_sub(a) as f64 / 1e6);
                        tracing::info!(
                            "pfsync: bulk update received in {took:.3} s ({} states here now)",
                            dp.filter.states.len()
                        );
                        // What the state file gave back and the peer's
                        // table lacks: the peer's word decides if it is
                        // the master (it carried the connections while
                        // this node was stopped); if it restarted too,
                        // its table is no reference, and this node's
                        // states stay if it becomes master first. With
                        // CARP that is known at the first advertisement
                        // (`peer_master`, `master`); without, the peer's
                        // word decides now.
                        if !self.restored.is_empty() {
                            if self.peer_was_master {
                                self.forget_restored(dp, "the master's");
                            } else if self.with_carp {
                                self.await_master = true;
                            } else {
                                self.forget_restored(dp, "the peer's");
                            }
                        }
                    } else {
                        self.restored.clear();
                        tracing::warn!(
                            "pfsync: no bulk update from the peer: going on without (its table is asked for again when the peer is heard)"
                        );
                    }
                }
                Event::Acked(r) => self.acked(state_id(&r), &mut released),
                Event::Dropped(r) => tracing::debug!("pfsync: packet refused: {}", r.name()),
            }
        }
        self.warn_not_applied(now_us);
        self.expire_deferred(now_us, &mut released);
        released.extend(self.transmit(dp, now_us));
        (released, demote)
    }

    fn not_applied(&mut self, e: &palisade_filter::state::ImportError) {
        self.apply_errors += 1;
        let (reason, why) = not_applied_reason(e);
        let n = self.not_applied.entry(reason).or_default();
        n.why = why;
        n.total += 1;
        n.since += 1;
    }

    /// The peer's news not taken, warned about per reason: the first at
    /// once, then at most once a minute with the count since (only a
    /// counter in `sync show` said so before, while a restarted node
    /// refused every state the peer sent it).
    fn warn_not_applied(&mut self, now_us: u64) {
        for n in self.not_applied.values_mut() {
            if n.since == 0 || n.warned_at.is_some_and(|t| now_us < t + REFUSED_EVERY_US) {
                continue;
            }
            if let Some(why) = n.why {
                let when = match n.warned_at {
                    Some(t) => format!(" in the last {} s", (now_us - t) / 1_000_000),
                    None => String::new(),
                };
                tracing::warn!(
                    "pfsync: {} of the peer's states not taken{when}: {why}",
                    n.since
                );
            }
            n.warned_at = Some(now_us);
            n.since = 0;
        }
    }

    /// The states the state file gave back (their ids here): kept only
    /// if the peer's first complete bulk update has them. The peer
    /// carried the connections while this node was stopped; one it killed
    /// (`state kill`) or that closed meanwhile is not in its table, and
    /// must not come back through this node (and from it to the peer at
    /// the next failover). If no complete bulk update comes (no peer),
    /// they all stay.
    pub fn restored(&mut self, ids: Vec<u64>, with_carp: bool) {
        self.restored = ids.into_iter().collect();
        self.with_carp = with_carp;
    }

    /// CARP has heard another node's advertisement since the start: that
    /// node was master, and its table the reference. After its complete
    /// bulk update (or at it, if the advertisement came first), the
    /// states the state file gave back that it lacked go (see
    /// `restored`), even if this node preempted it on that very
    /// advertisement (a review's finding: the node kept them, and sent
    /// the peer back a connection it had killed).
    pub fn peer_master(&mut self, dp: &mut Dataplane) {
        self.peer_was_master = true;
        if self.await_master {
            self.forget_restored(dp, "the master's");
        }
    }

    fn forget_restored(&mut self, dp: &mut Dataplane, whose: &str) {
        self.await_master = false;
        let mut gone = 0;
        for id in std::mem::take(&mut self.restored) {
            dp.fast_state_touched(id);
            gone += dp.filter.states.forget_restored(id) as usize;
        }
        if gone > 0 {
            dp.fast_reconcile();
            tracing::info!(
                "pfsync: {gone} states taken back from the state file are not in {whose} table (killed or closed there meanwhile, or it restarted too and holds its own back): removed here"
            );
        }
    }

    /// CARP made this node master (`Sync::master`): the demotion to lift.
    /// Its table is now the reference: the states the state file gave
    /// back that the peer has not confirmed are kept (none came to say
    /// otherwise before the connections came here), and sent to the peer.
    pub fn master(
        &mut self,
        dp: &mut Dataplane,
        now_us: u64,
        all: bool,
    ) -> Option<(i32, &'static str)> {
        self.await_master = false;
        if !self.restored.is_empty() {
            let now_ms = now_us / 1000;
            let ids = std::mem::take(&mut self.restored);
            let mut sent = 0;
            for id in ids {
                if dp.filter.states.get(id).is_none_or(|s| s.no_sync()) {
                    continue;
                }
                if let Some(rec) = dp.filter.export_state(id, now_ms) {
                    self.sync.insert(now_us, to_msg(&rec));
                    sent += 1;
                }
            }
            tracing::info!(
                "pfsync: master: the {sent} states taken back from the state file are kept and sent to the peer"
            );
        }
        self.sync.master(all)
    }

    /// The local table's news to the core, its timers, what is due out:
    /// what any worker does every `FEED_EVERY` frames (the peer's news
    /// and CARP's demotions wait for worker 0's `step`).
    /// Also says whether the core's next deadline moved earlier (worker
    /// 0, which runs the timers, may be asleep until a later one).
    pub fn feed(&mut self, dp: &mut Dataplane, now_us: u64) -> (Vec<Out>, bool) {
        let before = self.sync.poll_timeout();
        if dp.filter.states.pending_events() == 0 && before.is_none_or(|t| t > now_us) {
            return (Vec::new(), false);
        }
        self.drain_local(dp, now_us);
        let after = self.sync.poll_timeout();
        let sooner = after.is_some_and(|a| before.is_none_or(|b| a < b));
        (self.transmit(dp, now_us), sooner)
    }

    /// The local table's news (a bounded number per call), then the
    /// timers.
    fn drain_local(&mut self, dp: &mut Dataplane, now_us: u64) {
        let now_ms = now_us / 1000;
        for e in dp.filter.states.drain_events(now_ms, 4096) {
            match e {
                StateEvent::Update(u) => self.sync.update(now_us, to_upd_c(&u)),
                StateEvent::Insert(r) => {
                    // An id of ours back in use: a new state.
                    self.gone_set.remove(&palisade_pfsync::StateRef {
                        id: r.id,
                        creatorid: r.creator,
                    });
                    self.sync.insert(now_us, to_msg(&r))
                }
                StateEvent::Delete(sid) => self.sync.delete(now_us, state_ref(&sid)),
            }
        }
        if self.sync.poll_timeout().is_some_and(|t| t <= now_us) {
            self.sync.handle_timeout(now_us);
        }
    }

    /// The packets the core has ready, as frames on the sync interface.
    fn transmit(&mut self, dp: &mut Dataplane, now_us: u64) -> Vec<Out> {
        let now_ms = now_us / 1000;
        let mut out = Vec::new();
        while let Some(payload) = self.sync.poll_transmit() {
            let dst = self.cfg.peer.unwrap_or(GROUP);
            let pkt = palisade_wire::build::ip(
                IpAddr::V4(self.cfg.source),
                IpAddr::V4(dst),
                palisade_pfsync::wire::PROTO,
                palisade_pfsync::wire::TTL,
                &payload,
            );
            let sent = if self.cfg.peer.is_some() {
                dp.send_to_neighbour(self.cfg.iface, IpAddr::V4(dst), pkt, now_ms)
            } else {
                let o = GROUP.octets();
                let mac = [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]];
                dp.inject_on(self.cfg.iface, mac, None, EtherType::Ipv4, &pkt)
            };
            match sent {
                Ok(o) => out.extend(o),
                Err(e) => tracing::warn!("pfsync: not sent: {e:?}"),
            }
        }
        out
    }

    /// How long the oldest change not yet sent has waited (µs).
    pub fn lag_us(&self, now_us: u64) -> u64 {
        self.sync.lag(now_us)
    }
}

/// `palisade sync show`: the sync interface and peer, the bulk update,
/// the counters.
pub fn show(sh: &crate::daemon::Shared) -> serde_json::Value {
    use serde_json::json;
    use std::fmt::Write as _;
    let Some(s) = sh.pfsync() else {
        return json!({"ok": false, "text": "sync: pfsync is not configured ([pfsync] in palisade.toml)\n"});
    };
    let now = sh.now_us();
    let st = s.stats().clone();
    let iface = sh
        .dp()
        .cfg
        .ifaces
        .get(s.cfg.iface)
        .map(|i| i.name.clone())
        .unwrap_or_default();
    let peer = s
        .cfg
        .peer
        .map_or_else(|| format!("{GROUP} (multicast)"), |p| p.to_string());
    let bulk = st.last_bulk.map(|(asked, ended, complete)| {
        json!({
            "asked_s_ago": now.saturating_sub(asked) as f64 / 1e6,
            "took_s": ended.saturating_sub(asked) as f64 / 1e6,
            "complete": complete,
        })
    });
    let mut t = String::new();
    let _ = writeln!(
        t,
        "pfsync: syncdev {iface} syncpeer {peer} maxupd {}{}",
        s.cfg.maxupd,
        if s.cfg.key.is_some() {
            " (authenticated)"
        } else {
            ""
        }
    );
    let _ = writeln!(t, "  source {}, creator id {:08x}", s.cfg.source, s.creator);
    match (&st.last_bulk, s.bulk_pending()) {
        (_, true) => {
            let _ = writeln!(
                t,
                "  bulk update: waiting for the peer{}",
                match s.sync.bulk_demote() {
                    Some(d) if d > 0 => format!(" (CARP demoted by {d})"),
                    _ => String::new(),
                }
            );
        }
        (Some((asked, ended, complete)), false) => {
            let _ = writeln!(
                t,
                "  bulk update: {} {:.1} s ago, took {:.3} s{}",
                if *complete { "received" } else { "given up" },
                now.saturating_sub(*ended) as f64 / 1e6,
                ended.saturating_sub(*asked) as f64 / 1e6,
                if s.sync.wants_table() {
                    " (asked for again when the peer is heard)"
                } else {
                    ""
                }
            );
        }
        (None, false) => {
            let _ = writeln!(t, "  bulk update: none");
        }
    }
    let _ = match s.sync.last_heard() {
        Some(h) => writeln!(
            t,
            "  peer last heard {:.1} s ago",
            now.saturating_sub(h) as f64 / 1e6
        ),
        None => writeln!(t, "  peer never heard since the start"),
    };
    if !s.sync.link_up() {
        let _ = writeln!(
            t,
            "  sync link: DOWN (CARP demoted by {}; changes are not sent until it is back)",
            palisade_pfsync::sync::LINK_DEMOTE
        );
    }
    let _ = writeln!(
        t,
        "  packets: {} sent, {} received{}; states applied {}, not applied {}; bulk updates sent {}",
        st.packets_sent,
        st.packets_received,
        if st.not_sent_link_down > 0 {
            format!(", {} not sent (sync link down)", st.not_sent_link_down)
        } else {
            String::new()
        },
        s.applied,
        if s.not_applied.is_empty() {
            s.apply_errors.to_string()
        } else {
            let by: Vec<String> = s
                .not_applied
                .iter()
                .map(|(k, n)| format!("{k} {}", n.total))
                .collect();
            format!("{} ({})", s.apply_errors, by.join(", "))
        },
        st.bulk_updates_sent
    );
    let line = |m: &std::collections::BTreeMap<&'static str, u64>| {
        m.iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        t,
        "  lag: {:.1} ms now, longest {:.1} ms; sent at once (a state moved 16 KB) {}",
        s.lag_us(now) as f64 / 1e3,
        st.max_lag as f64 / 1e3,
        st.pushes
    );
    let d = s.defer_stats;
    if s.cfg.defer {
        let _ = writeln!(
            t,
            "  defer: {} first packets held; let go on INS_ACK {}, after 20 ms {}, early (too many held) {}, before their connection's next packet {}",
            d.held, d.acked, d.timed_out, d.overflowed, d.followed
        );
    }
    if st.other_ruleset > 0 {
        let _ = writeln!(
            t,
            "  packets from a peer with another ruleset: {} (its states took no rule here){}",
            st.other_ruleset,
            if s.rulesets_differ {
                ""
            } else {
                "; the same ruleset now"
            }
        );
    }
    if s.refused_gone > 0 {
        let _ = writeln!(
            t,
            "  states the peer sent back that this node had removed: {} (deleted there instead)",
            s.refused_gone
        );
    }
    let _ = writeln!(t, "  messages sent: {}", line(&st.messages_sent));
    let _ = writeln!(t, "  messages received: {}", line(&st.messages_received));
    let drops: Vec<String> = st
        .drops
        .iter()
        .map(|(r, n)| format!("{} {n}", r.name()))
        .collect();
    let _ = writeln!(
        t,
        "  refused: {}",
        if drops.is_empty() {
            "none".into()
        } else {
            drops.join(", ")
        }
    );
    let mut refused = serde_json::Map::new();
    for (r, n) in &st.drops {
        refused.insert(r.name().into(), json!(n));
    }
    json!({"ok": true, "text": t, "data": {
        "syncdev": iface,
        "syncpeer": s.cfg.peer,
        "source": s.cfg.source,
        "creator": s.creator,
        "maxupd": s.cfg.maxupd,
        "authenticated": s.cfg.key.is_some(),
        "bulk_pending": s.bulk_pending(),
        "last_bulk": bulk,
        "packets_sent": st.packets_sent,
        "link_up": s.sync.link_up(),
        "peer_heard_s_ago": s.sync.last_heard().map(|h| now.saturating_sub(h) as f64 / 1e6),
        "not_sent_link_down": st.not_sent_link_down,
        "packets_received": st.packets_received,
        "messages_sent": st.messages_sent,
        "messages_received": st.messages_received,
        "refused": refused,
        "applied": s.applied,
        "not_applied": s.apply_errors,
        "not_applied_by": s
            .not_applied
            .iter()
            .map(|(k, n)| (k.replace(' ', "_"), n.total))
            .collect::<std::collections::BTreeMap<_, _>>(),
        "bulk_updates_sent": st.bulk_updates_sent,
        "lag_ms": s.lag_us(now) as f64 / 1e3,
        "max_lag_ms": st.max_lag as f64 / 1e3,
        "pushes": st.pushes,
        "other_ruleset": st.other_ruleset,
        "refused_gone": s.refused_gone,
        "defer": s.cfg.defer,
        "deferred": {
            "held": d.held,
            "acked": d.acked,
            "timed_out": d.timed_out,
            "overflowed": d.overflowed,
            "followed": d.followed,
        },
    }})
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A peer with another key: the first refusal is warned about at
    /// once, the next ones once a minute with their count and sender.
    #[test]
    fn refused_packets_are_warned_about_at_most_once_a_minute() {
        let peer: IpAddr = "198.18.255.2".parse().unwrap();
        let mut l = RefusedLog::default();
        assert!(l.due(0).is_empty(), "nothing refused, nothing said");
        l.note(Refused::Unauthenticated, Some(peer), 1);
        assert_eq!(
            l.due(5_000_000),
            ["pfsync: 1 packet from 198.18.255.2 refused: not authenticated (is [pfsync] key the same on both firewalls?)"]
        );
        for t in 1..=50u64 {
            l.note(Refused::Unauthenticated, Some(peer), 1);
            assert!(l.due(5_000_000 + t * 1_000_000).is_empty(), "{t} s later");
        }
        assert_eq!(
            l.due(65_000_000),
            ["pfsync: 50 packets from 198.18.255.2 refused in the last 60 s: not authenticated (is [pfsync] key the same on both firewalls?)"]
        );
        // Quiet: nothing more; another reason has its own minute.
        assert!(l.due(200_000_000).is_empty());
        l.note(Refused::BadTtl, None, 2);
        let w = l.due(200_000_000);
        assert_eq!(w.len(), 1);
        assert!(
            w[0].starts_with("pfsync: 2 packets refused: TTL not 255"),
            "{}",
            w[0]
        );
        // After a quiet minute the next refusal is warned about at once.
        l.note(Refused::Unauthenticated, Some(peer), 1);
        assert_eq!(l.due(200_000_001).len(), 1);
    }
}
