//! A firewall's CARP: its virtual hosts (one per CARP interface, each a
//! vhid on a parent interface), the interface groups that demote them, and
//! the election, as carp(4) describes it and OpenBSD's ip_carp.c runs it.
//!
//! Each virtual host is INIT (its parent link is down, or it stopped),
//! BACKUP (it listens; when no master is heard for the master-down
//! interval it takes over) or MASTER (it advertises every interval and
//! owns the virtual addresses and MAC). Timers, in OpenBSD's terms:
//!
//! - the advertisement interval is advbase + advskew/256 seconds (1/256 s
//!   when both are 0: advbase 0 is how sub-second failover is asked for);
//! - master down is 3 × advbase + advskew/256 seconds (with advbase 0:
//!   3 × advskew/256, or 3/256 when advskew is 0 too).
//!
//! Election. A virtual host's demotion is the sum of the demote counters
//! of its interface's groups (every CARP interface is in group `carp`),
//! at most 255, and is advertised. A lower demotion wins; between equal
//! demotions, the shorter interval (advbase, advskew) wins, in both
//! states (as OpenBSD's carp_proto_input_c decides). A backup takes over
//! at once from a master with a higher demotion, from one that bowed out
//! (advbase and advskew 255, sent when it stops), and from one whose
//! interval exceeds its own master-down time (so it would time out
//! anyway); from a master it merely
//! outranks only with `preempt` (net.inet.carp.preempt). Every
//! advertisement carries the same random counter, chosen at start: one
//! that comes back with our own counter is a loop ("replay or network
//! loop detected").
//!
//! Demotion, as OpenBSD: a parent link going down puts its virtual hosts
//! in INIT and demotes their interfaces' groups by 1 until it is back;
//! three failed sends in a row demote by 1 until three succeed; group
//! `carp` starts demoted by 128 until the caller says the firewall is
//! ready (ports open, rules loaded, states synced), so a node that just
//! booted does not take over. A change of demotion is advertised at once
//! by every master.
//!
//! Beyond OpenBSD (off by default): split-brain repair — a master that
//! hears a master it outranks advertises and announces its addresses at
//! once, so that neighbours follow it as soon as a partition heals.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

use crate::wire::{self, CarpPacket, CarpRepr, WireError};

/// Time, in microseconds from any origin the caller chooses.
pub type Micros = u64;

const SECOND: u64 = 1_000_000;

/// One CARP interface: a virtual host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarpConfig {
    /// Its name (`carp0`).
    pub name: String,
    /// The interface it rides on.
    pub parent: String,
    /// 1 to 255.
    pub vhid: u8,
    /// Seconds (0 to 255).
    pub advbase: u8,
    /// 0 to 254 (255 is the bow-out).
    pub advskew: u8,
    /// At most 19 bytes (as ifconfig keeps it).
    pub passphrase: Vec<u8>,
    /// `carppeer`: send to these (one per address family) instead of the
    /// multicast group.
    pub peers: Vec<IpAddr>,
    /// The virtual addresses.
    pub addrs: Vec<IpAddr>,
    /// Interface groups besides `carp`.
    pub groups: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Take over from a master this node outranks (carp(4) preempt).
    pub preempt: bool,
    /// A master that hears a master it outranks answers at once.
    pub split_brain_repair: bool,
    /// Start ready: no boot demotion of group `carp`.
    pub ready: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    Init,
    Backup,
    Master,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Init => "INIT",
            State::Backup => "BACKUP",
            State::Master => "MASTER",
        }
    }
}

/// Why a virtual host changed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TransitionReason {
    /// Its parent link is up: it starts as BACKUP.
    LinkUp,
    /// Its parent link went down.
    LinkDown,
    /// No advertisement from a master within master down.
    MasterDown,
    /// A master with a lower demotion, or as demoted and advertising at
    /// least as often, was heard.
    BetterMaster,
    /// The master heard has a higher demotion.
    MasterDemoted,
    /// Preemption: the master heard advertises less often.
    Preempt,
    /// The master advertises more slowly than three of our advbase.
    MasterTooSlow,
    /// The master said it is stopping.
    MasterBowedOut,
    /// This node is stopping (it bowed out first if it was master).
    Shutdown,
}

impl TransitionReason {
    pub fn name(self) -> &'static str {
        match self {
            TransitionReason::LinkUp => "link-up",
            TransitionReason::LinkDown => "link-down",
            TransitionReason::MasterDown => "master-down",
            TransitionReason::BetterMaster => "better-master",
            TransitionReason::MasterDemoted => "master-demoted",
            TransitionReason::Preempt => "preempt",
            TransitionReason::MasterTooSlow => "master-too-slow",
            TransitionReason::MasterBowedOut => "master-bowed-out",
            TransitionReason::Shutdown => "shutdown",
        }
    }
}

/// Why an advertisement was not taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Reject {
    /// IP TTL / hop limit not 255 (sent from off the link).
    BadTtl,
    TooShort,
    BadVersion,
    BadType,
    BadAuthLen,
    BadChecksum,
    /// No virtual host with that vhid on the interface.
    UnknownVhid,
    BadHmac,
    /// Our own counter came back: "replay or network loop detected".
    Loop,
}

impl Reject {
    pub const ALL: [Reject; 9] = [
        Reject::BadTtl,
        Reject::TooShort,
        Reject::BadVersion,
        Reject::BadType,
        Reject::BadAuthLen,
        Reject::BadChecksum,
        Reject::UnknownVhid,
        Reject::BadHmac,
        Reject::Loop,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Reject::BadTtl => "bad-ttl",
            Reject::TooShort => "too-short",
            Reject::BadVersion => "bad-version",
            Reject::BadType => "bad-type",
            Reject::BadAuthLen => "bad-authlen",
            Reject::BadChecksum => "bad-checksum",
            Reject::UnknownVhid => "unknown-vhid",
            Reject::BadHmac => "bad-hmac",
            Reject::Loop => "loop",
        }
    }
}

/// What the caller must act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Transition {
        carp: String,
        vhid: u8,
        from: State,
        to: State,
        reason: TransitionReason,
        at: Micros,
    },
    /// Send gratuitous ARP and unsolicited neighbour advertisements for
    /// the virtual addresses from the virtual MAC (on becoming master,
    /// and again two advertisements later).
    Announce { carp: String, vhid: u8 },
    Rejected {
        parent: String,
        vhid: Option<u8>,
        from: IpAddr,
        reason: Reject,
    },
    /// A group's demote counter changed.
    Demoted {
        group: String,
        count: u32,
        reason: String,
    },
}

/// An advertisement to send: `payload` in an IP packet to `dst` with TTL
/// (hop limit) 255 from the parent's own address of that family, in an
/// Ethernet frame from `src_mac`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub carp: String,
    pub parent: String,
    pub vhid: u8,
    pub src_mac: [u8; 6],
    pub dst: IpAddr,
    pub payload: Vec<u8>,
}

/// A refused configuration, naming the interface and the problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub carp: String,
    pub problem: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.carp, self.problem)
    }
}

impl std::error::Error for ConfigError {}

/// A virtual host as `carp show` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    pub name: String,
    pub parent: String,
    pub vhid: u8,
    pub state: State,
    pub advbase: u8,
    pub advskew: u8,
    pub demote: u8,
    pub addrs: Vec<IpAddr>,
    /// Its interface groups besides `carp`.
    pub groups: Vec<String>,
    /// The master last heard (BACKUP), if any: by its IPv4 address when
    /// its IPv4 advertisements are heard, else by its IPv6 one.
    pub master: Option<IpAddr>,
    /// The master's addresses heard (BACKUP), one per family, IPv4 first
    /// (a master advertises from each family it has addresses in).
    pub masters: Vec<IpAddr>,
    /// The last transition: when, from, to, why.
    pub last: Option<(Micros, State, State, TransitionReason)>,
    pub transitions: u64,
    pub sent: u64,
}

impl Vhost {
    fn heard_master(&mut self, src: IpAddr, now: Micros) {
        self.master[src.is_ipv6() as usize] = Some((src, now));
    }

    /// The master's addresses heard, IPv4 first: a family not heard for
    /// a master-down interval after the other was is dropped (another
    /// master that advertises in one family only took over).
    fn masters(&self) -> Vec<IpAddr> {
        let newest = self.master.iter().flatten().map(|m| m.1).max().unwrap_or(0);
        let md = master_down(self.cfg.advbase, self.cfg.advskew);
        self.master
            .iter()
            .flatten()
            .filter(|m| newest - m.1 <= md)
            .map(|m| m.0)
            .collect()
    }
}

struct Vhost {
    cfg: CarpConfig,
    state: State,
    link_up: bool,
    /// Next advertisement (MASTER), master down (BACKUP).
    ad_at: Option<Micros>,
    md_at: Option<Micros>,
    /// Our counter: constant, random.
    cookie: u64,
    /// The master's source address heard last, per family (IPv4, IPv6),
    /// and when.
    master: [Option<(IpAddr, Micros)>; 2],
    last: Option<(Micros, State, State, TransitionReason)>,
    transitions: u64,
    sent: u64,
    /// Announce again after this many more advertisements.
    delayed_announce: u8,
    /// MASTER: when it last answered a bow-out out of turn (None since
    /// it became master: the first answer goes at once), and an answer
    /// held back until `BOW_OUT_ANSWER_GAP` after that.
    answered_at: Option<Micros>,
    answer_at: Option<Micros>,
    /// MASTER: when it became master.
    master_since: Option<Micros>,
    send_errors: u32,
    send_ok: u32,
    /// Demoted by send errors (until three sends succeed).
    error_demoted: bool,
}

/// Failed sends in a row that demote, and successes that lift it
/// (OpenBSD's CARP_SENDAD_MAX_ERRORS and CARP_SENDAD_MIN_SUCCESS).
const SEND_ERRORS: u32 = 3;
const SEND_SUCCESSES: u32 = 3;
/// A master answers bow-outs at most this often: the ones of a stopping
/// master arrive together (one per address family) and each later one
/// is answered in one go; replays of a captured one cannot make it send
/// more than this allows.
const BOW_OUT_ANSWER_GAP: Micros = 10_000;
/// For this long after becoming master, an advertisement from a node
/// this one outranks is the master it replaced still on the wire (a
/// demoted or preempted master's advertisement of its other address
/// family, sent from the virtual MAC): answered as a bow-out is.
const STALE_MASTER_WINDOW: Micros = 1_000_000;
/// The boot interlock on group `carp`.
pub const BOOT_DEMOTE: i32 = 128;

fn tv(advbase: u8, advskew: u8) -> u64 {
    advbase as u64 * SECOND + advskew as u64 * SECOND / 256
}

/// The advertisement interval.
fn interval(advbase: u8, advskew: u8) -> u64 {
    if advbase == 0 && advskew == 0 {
        SECOND / 256
    } else {
        tv(advbase, advskew)
    }
}

/// How long a backup waits for a master.
fn master_down(advbase: u8, advskew: u8) -> u64 {
    match (advbase, advskew) {
        (0, 0) => 3 * SECOND / 256,
        (0, s) => 3 * s as u64 * SECOND / 256,
        (b, s) => 3 * b as u64 * SECOND + s as u64 * SECOND / 256,
    }
}

/// The CARP of one firewall.
pub struct Node {
    vhosts: Vec<Vhost>,
    groups: BTreeMap<String, u32>,
    opts: Options,
    out: VecDeque<Transmit>,
    events: VecDeque<Event>,
    rejects: BTreeMap<Reject, u64>,
    /// Valid advertisements heard from other nodes (only a master sends
    /// them), whatever this node's state then and after.
    adverts_heard: u64,
    ready: bool,
    /// What is left of the boot demotion in group `carp`'s counter:
    /// `set_ready` takes off this much. An administrator who lowers the
    /// counter lowers it too (never above the counter), so that a
    /// demotion made by hand after lifting the boot one is not lifted with
    /// it, and a part lifted by hand is not taken twice.
    boot_left: u32,
    /// What of group `carp`'s counter an administrator put there
    /// (`demote_by_hand`): undone first when they lift some by hand.
    hand_carp: u32,
}

impl Node {
    /// A node with these CARP interfaces, each starting as BACKUP (its
    /// link assumed up) at `now`. `seed` gives the counters.
    pub fn new(
        configs: Vec<CarpConfig>,
        opts: Options,
        seed: u64,
        now: Micros,
    ) -> Result<Node, ConfigError> {
        Node::with_links_down(configs, opts, seed, now, &[])
    }

    /// As `new`, knowing the parents whose link is down at `now`: their
    /// CARP interfaces stay INIT (and demote their groups by 1, as a link
    /// going down does) until `set_link` says the link is up, rather than
    /// becoming BACKUP for a link-up that never was.
    pub fn with_links_down(
        configs: Vec<CarpConfig>,
        opts: Options,
        seed: u64,
        now: Micros,
        down: &[String],
    ) -> Result<Node, ConfigError> {
        check(&configs)?;
        let mut n = Node {
            vhosts: Vec::new(),
            groups: BTreeMap::new(),
            opts,
            out: VecDeque::new(),
            events: VecDeque::new(),
            rejects: BTreeMap::new(),
            adverts_heard: 0,
            ready: opts.ready,
            boot_left: 0,
            hand_carp: 0,
        };
        n.groups.insert("carp".into(), 0);
        let mut x = seed;
        for mut cfg in configs {
            // Each group once, and `carp` (implicit) not again: every
            // group a vhost lists adds its counter to the vhost's demotion,
            // so `groups: carp` copied from OpenBSD's ifconfig doubled a
            // demotion of group carp.
            let mut seen = std::collections::BTreeSet::new();
            cfg.groups.retain(|g| g != "carp" && seen.insert(g.clone()));
            for g in &cfg.groups {
                n.groups.entry(g.clone()).or_insert(0);
            }
            x = splitmix(x);
            n.vhosts.push(Vhost {
                cfg,
                state: State::Init,
                link_up: true,
                ad_at: None,
                md_at: None,
                cookie: x,
                master: [None; 2],
                last: None,
                transitions: 0,
                sent: 0,
                delayed_announce: 0,
                answered_at: None,
                answer_at: None,
                master_since: None,
                send_errors: 0,
                send_ok: 0,
                error_demoted: false,
            });
        }
        if !opts.ready {
            n.demote(now, "carp", BOOT_DEMOTE, "starting: not ready yet");
            n.boot_left = BOOT_DEMOTE as u32;
        }
        for i in 0..n.vhosts.len() {
            if down.contains(&n.vhosts[i].cfg.parent) {
                n.vhosts[i].link_up = false;
                let why = format!(
                    "{}: {} link down at start",
                    n.vhosts[i].cfg.name, n.vhosts[i].cfg.parent
                );
                n.demote_vhost(now, i, 1, &why);
            } else {
                n.become_backup(i, now, TransitionReason::LinkUp);
            }
        }
        Ok(n)
    }

    /// The firewall is ready (ports open, rules loaded, states synced):
    /// lift the boot demotion.
    pub fn set_ready(&mut self, now: Micros) {
        if !self.ready {
            self.ready = true;
            let left = std::mem::take(&mut self.boot_left);
            if left > 0 {
                self.demote(now, "carp", -(left as i32), "ready");
            }
        }
    }

    /// Change a group's demote counter by `delta` (never below 0), as
    /// `ifconfig -g GROUP carpdemote N`; masters advertise the change at
    /// once. Unknown groups are created.
    pub fn demote(&mut self, now: Micros, group: &str, delta: i32, reason: &str) {
        let c = self.groups.entry(group.to_string()).or_insert(0);
        let new = (*c as i64 + delta as i64).clamp(0, u32::MAX as i64) as u32;
        if new == *c {
            return;
        }
        *c = new;
        // The boot demotion's and the administrator's shares never
        // exceed the counter (what is lifted by hand is taken from them:
        // `demote_by_hand`).
        if group == "carp" {
            self.boot_left = self.boot_left.min(new);
            self.hand_carp = self.hand_carp.min(new - self.boot_left);
        }
        self.events.push_back(Event::Demoted {
            group: group.to_string(),
            count: new,
            reason: reason.to_string(),
        });
        self.advertise_masters(now);
    }

    /// As `demote`, by an administrator (`ifconfig -g carp -carpdemote
    /// 128`, what OpenBSD's rc does once services are up): what it lifts
    /// of group `carp` is taken from the boot demotion first, so that the
    /// boot demotion lifted by hand is not lifted again when the node
    /// becomes ready, and what others hold meanwhile (pfsync's bulk
    /// update, a link down) stays theirs. (Other changes only keep the
    /// boot share within the counter.)
    pub fn demote_by_hand(&mut self, now: Micros, group: &str, delta: i32, reason: &str) {
        if group == "carp" {
            let count = self.groups.get(group).copied().unwrap_or(0);
            if delta >= 0 {
                self.hand_carp = self.hand_carp.saturating_add(delta as u32);
            } else {
                // Undone first what was put by hand, then the boot share.
                let lifted = delta.unsigned_abs().min(count);
                let own = lifted.min(self.hand_carp);
                self.hand_carp -= own;
                self.boot_left = self.boot_left.saturating_sub(lifted - own);
            }
        }
        self.demote(now, group, delta, reason);
    }

    /// Change a CARP interface's advbase or advskew at run time, as
    /// `ifconfig carp0 advskew N` does: a master advertises the new
    /// values at once (a backup that now ranks better takes over if it
    /// preempts), a backup waits the new master-down time from now.
    /// False if there is no such interface; the caller checks the values
    /// (advskew 255 is the bow-out's).
    pub fn set_timing(
        &mut self,
        now: Micros,
        carp: &str,
        advbase: Option<u8>,
        advskew: Option<u8>,
    ) -> bool {
        let Some(i) = self.vhosts.iter().position(|v| v.cfg.name == carp) else {
            return false;
        };
        let v = &mut self.vhosts[i];
        if let Some(b) = advbase {
            v.cfg.advbase = b;
        }
        if let Some(s) = advskew {
            v.cfg.advskew = s;
        }
        let (b, s) = (v.cfg.advbase, v.cfg.advskew);
        match v.state {
            State::Master => {
                self.advertise(i, false);
                self.vhosts[i].ad_at = Some(now + interval(b, s));
            }
            State::Backup => self.vhosts[i].md_at = Some(now + master_down(b, s)),
            _ => {}
        }
        true
    }

    /// `sysctl net.inet.carp.preempt=0|1` at run time: whether a backup
    /// takes over from a master it outranks (it does at the next
    /// advertisement it hears).
    pub fn set_preempt(&mut self, on: bool) {
        self.opts.preempt = on;
    }

    pub fn preempt(&self) -> bool {
        self.opts.preempt
    }

    /// Whether a CARP interface is in `group` (every one is in `carp`).
    pub fn group_has_members(&self, group: &str) -> bool {
        group == "carp"
            || self
                .vhosts
                .iter()
                .any(|v| v.cfg.groups.iter().any(|g| g == group))
    }

    /// A group's demote counter.
    /// Of group `carp`'s demote count: the boot demotion still held
    /// (until the node is ready) and what an administrator put there.
    pub fn carp_shares(&self) -> (u32, u32) {
        (self.boot_left, self.hand_carp)
    }

    pub fn group_demote(&self, group: &str) -> Option<u32> {
        self.groups.get(group).copied()
    }

    /// Every group and its counter.
    pub fn groups(&self) -> impl Iterator<Item = (&str, u32)> {
        self.groups.iter().map(|(g, c)| (g.as_str(), *c))
    }

    /// Add a CARP interface to a group, or take it out (`carp group
    /// add|delete IFACE GROUP`); false when there is no such interface or
    /// nothing changes. Group `carp` cannot be left.
    pub fn set_group(&mut self, now: Micros, carp: &str, group: &str, member: bool) -> bool {
        if group == "carp" {
            return false;
        }
        let Some(v) = self.vhosts.iter_mut().find(|v| v.cfg.name == carp) else {
            return false;
        };
        let has = v.cfg.groups.iter().any(|g| g == group);
        if has == member {
            return false;
        }
        // What the interface itself holds against its groups (its link
        // down, its sends failing) goes with it: a group it joins gets
        // it, one it leaves gives it back (else the link's return would
        // lift what the new group never got, or leave the old one
        // demoted for good).
        let held = (!v.link_up) as i32 + v.error_demoted as i32;
        let why = format!(
            "{carp}: {} group {group}",
            if member { "joins" } else { "leaves" }
        );
        if member {
            v.cfg.groups.push(group.to_string());
            self.groups.entry(group.to_string()).or_insert(0);
            if held > 0 {
                self.demote(now, group, held, &why);
            }
        } else {
            v.cfg.groups.retain(|g| g != group);
            if held > 0 {
                self.demote(now, group, -held, &why);
            }
            // A group its last member left is gone, its counter with it
            // (as OpenBSD frees an interface group): joining it again
            // starts from 0.
            if !self.group_has_members(group) {
                self.groups.remove(group);
            }
        }
        self.advertise_masters(now);
        true
    }

    /// A virtual host's demotion: the sum over its groups, at most 255.
    fn demotion(&self, i: usize) -> u8 {
        let v = &self.vhosts[i];
        let sum: u64 = std::iter::once("carp")
            .chain(v.cfg.groups.iter().map(String::as_str))
            .map(|g| self.groups.get(g).copied().unwrap_or(0) as u64)
            .sum();
        sum.min(255) as u8
    }

    /// Demote every group of a virtual host's interface.
    fn demote_vhost(&mut self, now: Micros, i: usize, delta: i32, reason: &str) {
        let groups: Vec<String> = std::iter::once("carp".to_string())
            .chain(self.vhosts[i].cfg.groups.iter().cloned())
            .collect();
        for g in groups {
            self.demote(now, &g, delta, reason);
        }
    }

    /// A parent interface's link went down or came up.
    pub fn set_link(&mut self, now: Micros, parent: &str, up: bool) {
        for i in 0..self.vhosts.len() {
            let v = &self.vhosts[i];
            if v.cfg.parent != parent || v.link_up == up {
                continue;
            }
            let why = format!(
                "{}: {} link {}",
                v.cfg.name,
                parent,
                if up { "up" } else { "down" }
            );
            self.vhosts[i].link_up = up;
            if up {
                self.demote_vhost(now, i, -1, &why);
                self.become_backup(i, now, TransitionReason::LinkUp);
            } else {
                self.enter(i, now, State::Init, TransitionReason::LinkDown);
                self.demote_vhost(now, i, 1, &why);
            }
        }
    }

    /// The result of sending an advertisement of `carp`: three failures
    /// in a row demote its groups by 1, until three sends succeed.
    pub fn send_result(&mut self, now: Micros, carp: &str, ok: bool) {
        let Some(i) = self.vhosts.iter().position(|v| v.cfg.name == carp) else {
            return;
        };
        let v = &mut self.vhosts[i];
        if ok {
            // Counted once it left (`carp show`'s "advertisements sent").
            v.sent += 1;
            v.send_errors = 0;
            if v.error_demoted {
                v.send_ok += 1;
                if v.send_ok >= SEND_SUCCESSES {
                    v.error_demoted = false;
                    v.send_ok = 0;
                    let why = format!("{carp}: sends succeed again");
                    self.demote_vhost(now, i, -1, &why);
                }
            }
        } else {
            v.send_ok = 0;
            v.send_errors += 1;
            if v.send_errors >= SEND_ERRORS && !v.error_demoted {
                v.error_demoted = true;
                let why = format!("{carp}: {SEND_ERRORS} sends failed");
                self.demote_vhost(now, i, 1, &why);
            }
        }
    }

    /// Stop: masters bow out (an advertisement with advbase and advskew
    /// 255, which a backup takes over from at once); all go to INIT.
    pub fn shutdown(&mut self, now: Micros) {
        for i in 0..self.vhosts.len() {
            if self.vhosts[i].state == State::Master {
                self.advertise(i, true);
            }
            self.enter(i, now, State::Init, TransitionReason::Shutdown);
        }
    }

    /// An advertisement received on `parent` from `src` with IP TTL (hop
    /// limit) `ttl`.
    pub fn handle_advert(
        &mut self,
        now: Micros,
        parent: &str,
        src: IpAddr,
        ttl: u8,
        payload: &[u8],
    ) {
        let vhid = payload.get(1).copied();
        let reject = |n: &mut Node, reason: Reject, vhid: Option<u8>| {
            *n.rejects.entry(reason).or_default() += 1;
            n.events.push_back(Event::Rejected {
                parent: parent.to_string(),
                vhid,
                from: src,
                reason,
            });
        };
        if ttl != wire::TTL {
            return reject(self, Reject::BadTtl, vhid);
        }
        let repr = match CarpPacket::new_checked(payload).and_then(|p| CarpRepr::parse(&p)) {
            Ok(r) => r,
            Err(e) => {
                let r = match e {
                    WireError::TooShort => Reject::TooShort,
                    WireError::BadVersion(_) => Reject::BadVersion,
                    WireError::BadType(_) => Reject::BadType,
                    WireError::BadAuthLen(_) => Reject::BadAuthLen,
                    WireError::BadChecksum => Reject::BadChecksum,
                };
                return reject(self, r, vhid);
            }
        };
        let Some(i) = self
            .vhosts
            .iter()
            .position(|v| v.cfg.parent == parent && v.cfg.vhid == repr.vhid)
        else {
            return reject(self, Reject::UnknownVhid, vhid);
        };
        let v = &self.vhosts[i];
        if !wire::hmac_ok(
            &v.cfg.passphrase,
            repr.vhid,
            &v.cfg.addrs,
            repr.counter,
            &repr.md,
        ) {
            return reject(self, Reject::BadHmac, vhid);
        }
        if repr.counter == v.cookie {
            return reject(self, Reject::Loop, vhid);
        }
        self.adverts_heard += 1;
        let ours = self.demotion(i);
        let v = &self.vhosts[i];
        let (state, advbase, advskew) = (v.state, v.cfg.advbase, v.cfg.advskew);
        let (our_tv, their_tv) = (tv(advbase, advskew), tv(repr.advbase, repr.advskew));
        match state {
            State::Init => {}
            State::Master => {
                let bow_out = repr.advbase == 255 && repr.advskew == 255;
                // A master that bows out is never the better one, however
                // little it was demoted.
                let better =
                    !bow_out && (repr.demote < ours || (repr.demote == ours && their_tv <= our_tv));
                if better {
                    self.become_backup(i, now, TransitionReason::BetterMaster);
                    self.vhosts[i].heard_master(src, now);
                } else if bow_out
                    || self.vhosts[i]
                        .master_since
                        .is_some_and(|t| now < t + STALE_MASTER_WINDOW)
                {
                    // A bow-out heard as master (VRRP, RFC 5798 6.4.3: an
                    // advertisement of priority 0 is answered with one at
                    // once): the stopping master sends one per address
                    // family from the virtual MAC, and the first made this
                    // node master; switches learn the MAC back on the
                    // stopping master's port from the later ones. Be heard
                    // after them, or they send it there until the next
                    // advertisement. The same holds for the other family's
                    // advertisement of a master that was demoted or
                    // preempted, heard just after this node took over.
                    let v = &mut self.vhosts[i];
                    match v.answered_at {
                        Some(t) if now < t + BOW_OUT_ANSWER_GAP => {
                            v.answer_at = Some(t + BOW_OUT_ANSWER_GAP);
                        }
                        _ => self.answer_out_of_turn(i, now),
                    }
                } else if self.opts.split_brain_repair {
                    // Another master we outrank: be heard now.
                    self.advertise(i, false);
                    self.announce(i);
                    self.vhosts[i].ad_at = Some(now + interval(advbase, advskew));
                }
            }
            State::Backup => {
                self.vhosts[i].heard_master(src, now);
                let bow_out = repr.advbase == 255 && repr.advskew == 255;
                if bow_out {
                    self.become_master(i, now, TransitionReason::MasterBowedOut);
                } else if repr.demote > ours {
                    self.become_master(i, now, TransitionReason::MasterDemoted);
                } else if self.opts.preempt && repr.demote == ours && our_tv < their_tv {
                    self.become_master(i, now, TransitionReason::Preempt);
                } else if advbase > 0 && their_tv > master_down(advbase, advskew) {
                    // (OpenBSD: 3 x advbase seconds, its advskew/256 left in
                    // the fraction: the master would time out anyway.)
                    self.become_master(i, now, TransitionReason::MasterTooSlow);
                } else {
                    self.vhosts[i].md_at = Some(now + master_down(advbase, advskew));
                }
            }
        }
    }

    /// Run the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Micros) {
        for i in 0..self.vhosts.len() {
            let v = &self.vhosts[i];
            match v.state {
                State::Master if v.answer_at.is_some_and(|t| t <= now) => {
                    self.answer_out_of_turn(i, now);
                }
                State::Master if v.ad_at.is_some_and(|t| t <= now) => {
                    self.advertise(i, false);
                    let v = &mut self.vhosts[i];
                    v.ad_at = Some(now + interval(v.cfg.advbase, v.cfg.advskew));
                    if v.delayed_announce > 0 {
                        v.delayed_announce -= 1;
                        if v.delayed_announce == 0 {
                            self.announce(i);
                        }
                    }
                }
                State::Backup if v.md_at.is_some_and(|t| t <= now) => {
                    self.become_master(i, now, TransitionReason::MasterDown);
                }
                _ => {}
            }
        }
    }

    /// The next time `handle_timeout` has work.
    pub fn poll_timeout(&self) -> Option<Micros> {
        self.vhosts
            .iter()
            .filter_map(|v| match v.state {
                State::Master => match (v.ad_at, v.answer_at) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                },
                State::Backup => v.md_at,
                State::Init => None,
            })
            .min()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Advertisements refused, by reason.
    pub fn rejects(&self) -> impl Iterator<Item = (Reject, u64)> + '_ {
        self.rejects.iter().map(|(r, n)| (*r, *n))
    }

    /// Whether this node is master of any virtual host.
    pub fn any_master(&self) -> bool {
        self.vhosts.iter().any(|v| v.state == State::Master)
    }

    /// Whether this node is master of every virtual host it runs: no
    /// other node carries any of them. One whose interface is down here
    /// (INIT) may be carried by another node: not all then (a review's
    /// finding).
    pub fn all_master(&self) -> bool {
        !self.vhosts.is_empty() && self.vhosts.iter().all(|v| v.state == State::Master)
    }

    /// Valid advertisements heard from other nodes since the start: each
    /// was a master's (backups do not advertise). Counted whatever the
    /// transitions they cause: one that makes this node preempt at once
    /// was a master's all the same.
    pub fn adverts_heard(&self) -> u64 {
        self.adverts_heard
    }

    pub fn status(&self) -> Vec<Status> {
        (0..self.vhosts.len())
            .map(|i| {
                let v = &self.vhosts[i];
                let masters: Vec<IpAddr> = match v.state {
                    State::Backup => v.masters(),
                    _ => Vec::new(),
                };
                Status {
                    name: v.cfg.name.clone(),
                    parent: v.cfg.parent.clone(),
                    vhid: v.cfg.vhid,
                    state: v.state,
                    advbase: v.cfg.advbase,
                    advskew: v.cfg.advskew,
                    demote: self.demotion(i),
                    addrs: v.cfg.addrs.clone(),
                    groups: v.cfg.groups.clone(),
                    master: masters.first().copied(),
                    masters,
                    last: v.last,
                    transitions: v.transitions,
                    sent: v.sent,
                }
            })
            .collect()
    }

    /// The state of the CARP interface `carp`.
    pub fn state(&self, carp: &str) -> Option<State> {
        self.vhosts
            .iter()
            .find(|v| v.cfg.name == carp)
            .map(|v| v.state)
    }

    fn enter(&mut self, i: usize, now: Micros, to: State, reason: TransitionReason) {
        let v = &mut self.vhosts[i];
        let from = v.state;
        v.state = to;
        if to != State::Master {
            v.ad_at = None;
            v.delayed_announce = 0;
            v.answered_at = None;
            v.answer_at = None;
            v.master_since = None;
        }
        if to != State::Backup {
            v.md_at = None;
        }
        if from != to {
            // Whoever was heard as master belongs to the old state.
            v.master = [None; 2];
            v.transitions += 1;
            v.last = Some((now, from, to, reason));
            self.events.push_back(Event::Transition {
                carp: v.cfg.name.clone(),
                vhid: v.cfg.vhid,
                from,
                to,
                reason,
                at: now,
            });
        }
    }

    fn become_backup(&mut self, i: usize, now: Micros, reason: TransitionReason) {
        if !self.vhosts[i].link_up {
            return;
        }
        self.enter(i, now, State::Backup, reason);
        let c = &self.vhosts[i].cfg;
        let md = master_down(c.advbase, c.advskew);
        self.vhosts[i].md_at = Some(now + md);
    }

    fn become_master(&mut self, i: usize, now: Micros, reason: TransitionReason) {
        self.enter(i, now, State::Master, reason);
        self.advertise(i, false);
        self.announce(i);
        let v = &mut self.vhosts[i];
        v.delayed_announce = 2;
        v.master_since = Some(now);
        v.ad_at = Some(now + interval(v.cfg.advbase, v.cfg.advskew));
    }

    /// Advertise and announce now (a bow-out, or the replaced master's
    /// last advertisement, heard as master); the next
    /// advertisement follows a whole interval later.
    fn answer_out_of_turn(&mut self, i: usize, now: Micros) {
        self.advertise(i, false);
        self.announce(i);
        let v = &mut self.vhosts[i];
        v.answered_at = Some(now);
        v.answer_at = None;
        v.ad_at = Some(now + interval(v.cfg.advbase, v.cfg.advskew));
    }

    fn announce(&mut self, i: usize) {
        let v = &self.vhosts[i];
        self.events.push_back(Event::Announce {
            carp: v.cfg.name.clone(),
            vhid: v.cfg.vhid,
        });
    }

    /// Every master advertises now (its demotion changed).
    fn advertise_masters(&mut self, now: Micros) {
        for i in 0..self.vhosts.len() {
            if self.vhosts[i].state == State::Master {
                self.advertise(i, false);
                let v = &mut self.vhosts[i];
                v.ad_at = Some(now + interval(v.cfg.advbase, v.cfg.advskew));
            }
        }
    }

    /// Queue an advertisement per address family of the virtual host.
    fn advertise(&mut self, i: usize, bow_out: bool) {
        let demote = self.demotion(i);
        let v = &mut self.vhosts[i];
        let (advbase, advskew) = if bow_out {
            (255, 255)
        } else {
            (v.cfg.advbase, v.cfg.advskew)
        };
        let repr = CarpRepr {
            vhid: v.cfg.vhid,
            advskew,
            demote,
            advbase,
            counter: v.cookie,
            md: wire::hmac(&v.cfg.passphrase, v.cfg.vhid, &v.cfg.addrs, v.cookie, false),
        };
        let payload = repr.to_bytes();
        for v6 in [false, true] {
            if !v.cfg.addrs.iter().any(|a| a.is_ipv6() == v6) {
                continue;
            }
            let dst = v
                .cfg
                .peers
                .iter()
                .find(|p| p.is_ipv6() == v6)
                .copied()
                .unwrap_or(if v6 {
                    IpAddr::V6(wire::GROUP_V6)
                } else {
                    IpAddr::V4(wire::GROUP_V4)
                });
            self.out.push_back(Transmit {
                carp: v.cfg.name.clone(),
                parent: v.cfg.parent.clone(),
                vhid: v.cfg.vhid,
                src_mac: wire::virtual_mac(v.cfg.vhid),
                dst,
                payload: payload.clone(),
            });
        }
    }
}

fn splitmix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What ifconfig(8) and carp(4) refuse, checked before anything runs.
pub fn check(configs: &[CarpConfig]) -> Result<(), ConfigError> {
    let err = |c: &CarpConfig, p: String| ConfigError {
        carp: c.name.clone(),
        problem: p,
    };
    for (n, c) in configs.iter().enumerate() {
        if c.vhid == 0 {
            return Err(err(c, "vhid 0: use 1 to 255".into()));
        }
        if c.advskew > 254 {
            return Err(err(c, format!("advskew {}: at most 254", c.advskew)));
        }
        if c.passphrase.len() > wire::MAX_PASSPHRASE {
            return Err(err(
                c,
                format!(
                    "the passphrase has {} bytes: at most {} (as ifconfig keeps it)",
                    c.passphrase.len(),
                    wire::MAX_PASSPHRASE
                ),
            ));
        }
        if c.addrs.is_empty() {
            return Err(err(c, "no virtual address".into()));
        }
        if let Some(p) = c
            .peers
            .iter()
            .find(|p| !c.addrs.iter().any(|a| a.is_ipv6() == p.is_ipv6()))
        {
            return Err(err(
                c,
                format!("peer {p}: no virtual address of its family to advertise"),
            ));
        }
        // OpenBSD's carppeer takes one peer; advertisements of a family go
        // to its first peer only, so a second would silently get nothing.
        for (k, p) in c.peers.iter().enumerate() {
            if let Some(o) = c.peers[..k].iter().find(|o| o.is_ipv6() == p.is_ipv6()) {
                return Err(err(
                    c,
                    format!("peer {p}: already {o}: one peer per address family"),
                ));
            }
        }
        for o in &configs[..n] {
            if o.name == c.name {
                return Err(err(c, "defined twice".into()));
            }
            if o.parent == c.parent && o.vhid == c.vhid {
                return Err(err(
                    c,
                    format!(
                        "vhid {} is already used on {} by {}",
                        c.vhid, c.parent, o.name
                    ),
                ));
            }
        }
    }
    Ok(())
}
