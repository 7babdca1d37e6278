//! What a rule matches on, and what evaluation decides.

use std::net::IpAddr;

use std::sync::Arc;

use palisade_conf::ir::{Af, BlockPolicy, Direction, KeepState, Pool, StateOpts};
use palisade_wire::{IpInfo, L4};

/// The facts about one packet on one interface in one direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketMeta {
    pub iface: String,
    pub dir: Direction,
    pub af: Af,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    pub sport: Option<u16>,
    pub dport: Option<u16>,
    pub tcp_flags: u8,
    /// ICMP or ICMPv6 (type, code).
    pub icmp: Option<(u8, u8)>,
    pub tos: u8,
    /// Owner of the local socket, when the packet is the firewall's own.
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// The interface the packet came in on (for `received-on` on output).
    pub received_on: Option<String>,
    /// The tag the packet carries into this pass (the one pf `in` gave
    /// it, seen by `tagged` on the way out; None on the way in).
    pub tag: Option<String>,
    /// Randomness for `probability`, supplied by the caller so evaluation
    /// stays deterministic.
    pub random: u32,
    /// The operating system a TCP SYN was fingerprinted as (None: unknown).
    pub os: Option<Arc<crate::osfp::Fingerprint>>,
    /// The time, in milliseconds (for `max-pkt-rate`).
    pub now_ms: u64,
}

impl PacketMeta {
    pub fn from_ip(info: &IpInfo, iface: &str, dir: Direction) -> PacketMeta {
        let (tcp_flags, icmp) = match info.l4 {
            L4::Tcp { flags, .. } => (flags, None),
            L4::Icmp { ty, code, .. } | L4::Icmp6 { ty, code, .. } => (0, Some((ty, code))),
            _ => (0, None),
        };
        PacketMeta {
            iface: iface.to_string(),
            dir,
            af: if info.is_v6() { Af::Inet6 } else { Af::Inet },
            src: info.src,
            dst: info.dst,
            proto: info.proto,
            sport: info.sport(),
            dport: info.dport(),
            tcp_flags,
            icmp,
            tos: info.tos,
            uid: None,
            gid: None,
            received_on: None,
            tag: None,
            random: 0,
            os: None,
            now_ms: 0,
        }
    }
}

/// Does `os NAME` match the packet's fingerprint (pf.conf(5) "os")?
pub fn os_matches(name: &str, fp: Option<&crate::osfp::Fingerprint>) -> bool {
    match fp {
        None => name.eq_ignore_ascii_case("unknown"),
        Some(f) => f.matches_name(name),
    }
}

/// Normalizations a packet gets (`scrub (...)`, `set tos`): from `match`
/// rules and the deciding rule, then from the state for the connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScrubActions {
    pub no_df: bool,
    pub random_id: bool,
    pub min_ttl: Option<u8>,
    pub max_mss: Option<u16>,
    pub tos: Option<u8>,
    /// `reassemble tcp`: TTLs never decrease, timestamps are modulated.
    pub reassemble_tcp: bool,
}

impl ScrubActions {
    pub fn from_rule(s: &palisade_conf::ir::Scrub, tos: Option<u8>) -> ScrubActions {
        ScrubActions {
            no_df: s.no_df,
            random_id: s.random_id,
            min_ttl: s.min_ttl,
            max_mss: s.max_mss,
            tos,
            reassemble_tcp: s.reassemble_tcp,
        }
    }
    /// pf's pf_rule_to_actions: flags add up, values of later rules win.
    pub fn merge(&mut self, o: &ScrubActions) {
        self.no_df |= o.no_df;
        self.random_id |= o.random_id;
        self.reassemble_tcp |= o.reassemble_tcp;
        if o.min_ttl.is_some() {
            self.min_ttl = o.min_ttl;
        }
        if o.max_mss.is_some() {
            self.max_mss = o.max_mss;
        }
        if o.tos.is_some() {
            self.tos = o.tos;
        }
    }
    pub fn is_empty(&self) -> bool {
        *self == ScrubActions::default()
    }
}

/// A rule: its anchor path ("" for the main ruleset) and number in it, the
/// `@N` that `palisade check -vv` prints. Every state hit copies its
/// rule's into the decision: the path is a `CompactString`, kept inline
/// up to 24 bytes (`ftp-proxy/4711.1` is 16), so that the copy allocates
/// nothing, as a `String` did for every packet of an anchor's state.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RuleRef {
    pub anchor: compact_str::CompactString,
    pub nr: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VerdictAction {
    Pass,
    Block(BlockPolicy),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub action: VerdictAction,
    /// The deciding rule; None when no rule matched (pf's default pass).
    pub rule: Option<RuleRef>,
    /// The packet's tag after evaluation.
    pub tag: Option<String>,
    /// Some matching rule asked for logging.
    pub log: bool,
    /// The deciding rule logs every packet of its state (`log (all)`).
    pub log_all: bool,
    /// `log (matches)`: the rules that matched from that rule on, each
    /// logged with its action (pass, block, match).
    pub log_matched: Vec<(RuleRef, MatchAction)>,
    /// Rules whose `nat-to` / `rdr-to` apply (the last matching one wins).
    pub nat: Option<RuleRef>,
    pub rdr: Option<RuleRef>,
    pub nat_pool: Option<Arc<Pool>>,
    pub rdr_pool: Option<Arc<Pool>>,
    /// `route-to`, `reply-to`, `dup-to` of the deciding rule (or, when it
    /// has none, of the last `match` rule that had one), and that rule.
    pub route: Option<(RuleRef, RoutePool)>,
    /// The deciding rule says `allow-opts`: IP options do not block.
    pub allow_opts: bool,
    /// Normalizations to apply.
    pub scrub: ScrubActions,
    /// State to create when the deciding rule passes the packet.
    pub keep_state: KeepState,
    pub state_opts: Option<Arc<StateOpts>>,
    /// How many rules were tested (for statistics and benchmarks).
    pub evaluations: u32,
    /// The deciding rule's counters.
    pub stats: Option<Arc<RuleStats>>,
    /// The counters of the `match` rules that matched (they count the
    /// packets they matched during evaluation).
    pub match_stats: Vec<Arc<RuleStats>>,
}

impl Verdict {
    pub fn default_pass() -> Verdict {
        Verdict {
            action: VerdictAction::Pass,
            rule: None,
            tag: None,
            log: false,
            log_all: false,
            log_matched: Vec::new(),
            nat: None,
            rdr: None,
            nat_pool: None,
            rdr_pool: None,
            route: None,
            allow_opts: false,
            scrub: ScrubActions::default(),
            keep_state: KeepState::None,
            state_opts: None,
            evaluations: 0,
            stats: None,
            match_stats: Vec::new(),
        }
    }
}

/// A rule's counters, as `pfctl -vsr` shows them: how often it was
/// evaluated, the packets and bytes it decided (and those of the states it
/// created), index 0 inbound and 1 outbound, its current states and the
/// states it ever created. Shared between the compiled rule, the verdicts
/// it gives and its states; a reload starts new rules at zero.
///
/// Kept in `LANES` lanes, each on its own cache line: a thread counts in
/// the lane `set_lane` gave it (a data-plane worker its own), so that two
/// workers passing packets of one rule's states do not pass the counters'
/// cache line back and forth for every packet (measured: that alone cost
/// the two-thread engine bench a fifth of its rate). Readers add the lanes
/// up; a count taken in one lane and given back in another (a state made
/// by one worker and removed by another) wraps in each and adds up right.
#[derive(Debug, Default)]
pub struct RuleStats {
    lanes: [Lane; LANES],
    /// The rule's `label`: a state's rule is known by its counters, so
    /// `state kill --label` (pfctl -k label) asks them, whatever the
    /// ruleset loaded since.
    label: Option<Box<str>>,
}

/// The queueing priority every packet has, as `prio` rules match it:
/// pf's default (3), since `set prio` is not enforced (its rules warn).
pub const PACKET_PRIO: u8 = 3;

/// Lanes per rule: workers beyond this share lanes (correct, only slower).
pub const LANES: usize = 4;

#[derive(Debug, Default)]
#[repr(align(64))]
struct Lane {
    evaluations: std::sync::atomic::AtomicU64,
    packets: [std::sync::atomic::AtomicU64; 2],
    bytes: [std::sync::atomic::AtomicU64; 2],
    states_cur: std::sync::atomic::AtomicU64,
    states_tot: std::sync::atomic::AtomicU64,
}

thread_local! {
    static LANE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// The lane this thread counts rules in from now on (a worker's index;
/// taken modulo `LANES`). Threads that never call it use lane 0.
pub fn set_lane(i: usize) {
    LANE.with(|l| l.set(i % LANES));
}

/// Counters are observations, not part of what a rule decides: verdicts
/// compare equal whatever their rules have counted (the differential tests
/// compare the engine's verdicts with the reference's, which has none).
impl PartialEq for RuleStats {
    fn eq(&self, _: &RuleStats) -> bool {
        true
    }
}

impl Eq for RuleStats {}

impl RuleStats {
    /// A rule's counters, knowing its label.
    pub fn labelled(label: Option<&str>) -> RuleStats {
        RuleStats {
            label: label.map(Into::into),
            ..Default::default()
        }
    }

    pub fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }

    fn lane(&self) -> &Lane {
        &self.lanes[LANE.with(|l| l.get())]
    }

    fn sum(&self, f: impl Fn(&Lane) -> &std::sync::atomic::AtomicU64) -> u64 {
        use std::sync::atomic::Ordering::Relaxed;
        self.lanes
            .iter()
            .fold(0u64, |a, l| a.wrapping_add(f(l).load(Relaxed)))
    }

    /// Count one packet of `len` bytes travelling in `dir`.
    pub fn count(&self, dir: Direction, len: u64) {
        self.count_many(dir, 1, len);
    }

    /// `packets` packets of `bytes` bytes in all (what the in-kernel fast
    /// path passed for a state since it was last read).
    pub fn count_many(&self, dir: Direction, packets: u64, bytes: u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let i = (dir == Direction::Out) as usize;
        let l = self.lane();
        l.packets[i].fetch_add(packets, Relaxed);
        l.bytes[i].fetch_add(bytes, Relaxed);
    }

    /// One more evaluation of the rule.
    pub fn evaluated(&self) {
        self.lane()
            .evaluations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// One more state of the rule's (and one more created).
    pub fn state_created(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let l = self.lane();
        l.states_cur.fetch_add(1, Relaxed);
        l.states_tot.fetch_add(1, Relaxed);
    }

    /// One state of the rule's fewer.
    pub fn state_gone(&self) {
        self.lane()
            .states_cur
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Packets counted in `dir`.
    pub fn packets(&self, dir: Direction) -> u64 {
        let i = (dir == Direction::Out) as usize;
        self.sum(|l| &l.packets[i])
    }

    /// Bytes counted in `dir`.
    pub fn bytes(&self, dir: Direction) -> u64 {
        let i = (dir == Direction::Out) as usize;
        self.sum(|l| &l.bytes[i])
    }

    /// (evaluations, packets, bytes, current states, states created).
    pub fn snapshot(&self) -> (u64, u64, u64, u64, u64) {
        (
            self.sum(|l| &l.evaluations),
            self.packets(Direction::In)
                .wrapping_add(self.packets(Direction::Out)),
            self.bytes(Direction::In)
                .wrapping_add(self.bytes(Direction::Out)),
            // Lanes read one after the other may see a state's removal
            // in one and not yet its creation in another: never below 0.
            (self.sum(|l| &l.states_cur) as i64).max(0) as u64,
            self.sum(|l| &l.states_tot),
        )
    }
}

/// One rule of a ruleset as listed by `show rules`: its number, its text
/// as pfctl prints it, its counters and, for an inline anchor, its rules.
#[derive(Clone, Debug)]
pub struct RuleListing {
    pub nr: u32,
    pub text: String,
    /// Its `label`, as pfctl -sl shows it.
    pub label: Option<String>,
    pub stats: Arc<RuleStats>,
    pub inline: Vec<RuleListing>,
}

/// The rule that decided so far: its action, reference and pools.
pub(crate) type Decided = (
    VerdictAction,
    RuleRef,
    Option<Arc<Pool>>,
    Option<Arc<Pool>>,
    Option<RoutePool>,
);

/// A rule's `route-to`, `reply-to` or `dup-to`, and the pool of next hops.
pub type RoutePool = (palisade_conf::ir::RouteKind, Arc<Pool>);

/// The action of a rule that matched, for `log (matches)` records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MatchAction {
    Pass,
    Block,
    Match,
}

/// Deterministic per-rule coin for `probability`: both evaluators use it.
pub fn probability_hit(random: u32, rule: &RuleRef, p: u32) -> bool {
    let mut h: u64 = 0xcbf29ce484222325 ^ random as u64;
    for b in rule
        .anchor
        .as_bytes()
        .iter()
        .chain(rule.nr.to_le_bytes().iter())
    {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    ((h >> 32) as u32) <= p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts taken by threads in different lanes add up, and a state
    /// counted in one lane and given back in another leaves none current.
    #[test]
    fn rule_counters_add_up_across_lanes() {
        let st = Arc::new(RuleStats::default());
        let handles: Vec<_> = (0..LANES + 1)
            .map(|i| {
                let st = st.clone();
                std::thread::spawn(move || {
                    set_lane(i);
                    for _ in 0..1000 {
                        st.count(Direction::In, 10);
                        st.evaluated();
                    }
                    st.count(Direction::Out, 7);
                    st.state_created();
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let n = (LANES + 1) as u64;
        assert_eq!(st.packets(Direction::In), 1000 * n);
        assert_eq!(st.bytes(Direction::Out), 7 * n);
        assert_eq!(st.snapshot(), (1000 * n, 1001 * n, 10_007 * n, n, n));
        // Every state goes, each from a lane other than its creator's.
        for i in 0..n as usize {
            let st = st.clone();
            std::thread::spawn(move || {
                set_lane(i + 1);
                st.state_gone();
            })
            .join()
            .unwrap();
        }
        assert_eq!(st.snapshot().3, 0);
        assert_eq!(st.snapshot().4, n);
    }
}
