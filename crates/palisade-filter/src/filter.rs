//! One packet's way through the filter: validate, look up state, evaluate
//! rules, create state. Reasons for drops carry pf's names (pfctl -si:
//! match, bad-offset, fragment, short, normalize, memory, bad-timestamp,
//! congestion, ip-option, proto-cksum, state-mismatch, state-insert,
//! state-limit, src-limit, synproxy) and are counted.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use palisade_conf::ir::{
    Addr, Af, BlockPolicy, Config, Direction, KeepState, Pool, PoolType, SetOption, Timeout,
};
use palisade_wire::{icmp_is_error, parse_ip, parse_quoted, tcp_wscale, IpInfo, L4};

use crate::engine::{Engine, LegacyKind};
use crate::frag::{Reassembler, Reassembly};
use crate::osfp::{FingerprintDb, SynSignature};
use crate::packet::{PacketMeta, RuleRef, ScrubActions, VerdictAction};
use crate::reason::Reason;
use crate::state::{tcps, FlowKey, Proxy, StateTable, TcpSeg};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateMatch {
    /// The packet created a state.
    New,
    /// The packet belongs to an existing state.
    Match,
    /// Decided by rules without a state.
    None,
}

impl StateMatch {
    pub fn name(self) -> &'static str {
        match self {
            StateMatch::New => "new",
            StateMatch::Match => "match",
            StateMatch::None => "none",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub action: VerdictAction,
    /// pf's reason: `Match` when a rule or state decided.
    pub reason: Reason,
    pub rule: Option<RuleRef>,
    pub state: StateMatch,
    pub state_id: Option<u64>,
    /// The packet's tag as it leaves this pass: the tag it brought (on
    /// the way out, pf `in`'s), or the last rule's that set one, or its
    /// state's (the tag of the rule that created it, given to every
    /// packet of the connection, as pf does).
    pub tag: Option<Arc<str>>,
    pub log: bool,
    /// Packets the filter sends itself, not filtered on their way out
    /// (pf tags them PF_TAG_GENERATED): `block return`'s TCP RST or ICMP,
    /// `synproxy state`'s answers to the client.
    pub generated: Vec<Vec<u8>>,
    /// Packets the filter sends itself that are filtered `out` like the
    /// firewall's own (pf does not mark them generated), with the
    /// state's tag (`tag`, as pf gives them): `synproxy state`'s SYN and
    /// ACK to the server, which the server's side's rules let out and
    /// whose state its answers then meet.
    pub generated_out: Vec<Vec<u8>>,
    /// The packet was translated: its tuple before and after.
    pub nat: Option<(FlowKey, FlowKey)>,
    /// A fragment held for reassembly: nothing is decided yet.
    pub held: bool,
    /// `log (matches)`: rules matched from the logging rule on, each to be
    /// logged with its own action.
    pub log_matched: Vec<(RuleRef, crate::packet::MatchAction)>,
    /// This fragment completed a datagram: the decision is the whole
    /// datagram's, and this is the datagram (rewritten if translated) to
    /// send instead of the fragment.
    pub reassembled: Option<Vec<u8>>,
    /// With `reassembled`: how the datagram was fragmented.
    pub refragment: Option<crate::frag::FragInfo>,
    /// pf's routing options for this packet (`route-to`, `reply-to`,
    /// `dup-to`), for the data plane to act on.
    pub route: Option<RouteTo>,
    /// The packet was changed: a description of it taken before no longer
    /// holds. (Found out by `process_parsed`, for callers that keep a
    /// description; `process` leaves it false.)
    pub modified: bool,
    /// Nothing was decided: the packet's state is in this other table
    /// (a table per worker, `Filter::join`), where the caller must decide
    /// the packet (`workers::Workers` does). The packet is unchanged,
    /// the filter counted nothing (in the rare race where another table
    /// made the state after this one missed, the rules were evaluated
    /// first: docs/workers.md), and when the packet was the last piece of a
    /// fragmented datagram, `reassembled` and `refragment` carry the
    /// datagram to decide there instead.
    pub elsewhere: Option<u8>,
}

/// Where a routing option sends a packet that passed: instead of where the
/// routing table would (`route-to`, and `reply-to` for a connection's
/// replies), or a copy besides (`dup-to`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteTo {
    /// A copy to send besides the packet (`dup-to`).
    pub dup: bool,
    /// The next hop.
    pub hop: IpAddr,
    /// The interface named with it, else the routing table's way to it.
    pub iface: Option<String>,
}

impl RouteTo {
    /// What a state's routing option does for a packet of it: `route-to`
    /// acts on the packets in the direction the state was created,
    /// `reply-to` on the others (pf.conf(5)); `dup-to` copies both (pf
    /// duplicates before it looks at the direction).
    pub fn for_packet(r: &crate::state::StateRoute, reply: bool) -> Option<RouteTo> {
        use palisade_conf::ir::RouteKind;
        let applies = match r.kind {
            RouteKind::RouteTo => !reply,
            RouteKind::ReplyTo => reply,
            RouteKind::DupTo => true,
        };
        applies.then(|| RouteTo {
            dup: r.kind == RouteKind::DupTo,
            hop: r.hop,
            iface: r.iface.clone(),
        })
    }
}

impl Decision {
    fn drop(reason: Reason) -> Decision {
        Decision {
            action: VerdictAction::Block(palisade_conf::ir::BlockPolicy::Drop),
            reason,
            rule: None,
            state: StateMatch::None,
            state_id: None,
            tag: None,
            log: false,
            generated: Vec::new(),
            generated_out: Vec::new(),
            nat: None,
            held: false,
            log_matched: Vec::new(),
            reassembled: None,
            refragment: None,
            route: None,
            modified: false,
            elsewhere: None,
        }
    }

    /// Undecided: the packet belongs to a state of table `t`.
    fn elsewhere(t: u8) -> Decision {
        let mut d = Decision::drop(Reason::Match);
        d.elsewhere = Some(t);
        d
    }

    pub fn passed(&self) -> bool {
        self.action == VerdictAction::Pass
    }
}

/// Counters like `pfctl -si`.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub packets: u64,
    pub passed: u64,
    pub blocked: u64,
    /// Decisions per reason, indexed by `Reason::code`.
    pub reasons: [u64; Reason::ALL.len()],
    pub state_searches: u64,
    pub state_inserts: u64,
}

pub struct Filter {
    engine: Arc<Engine>,
    pub states: StateTable,
    pub counters: Counters,
    last_expiry_ms: u64,
    /// Round-robin position of each translation pool.
    /// Keyed by rule and pool slot (`SLOT_*`).
    rr: HashMap<(RuleRef, u8), u64>,
    /// `sticky-address`: (rule, pool slot, client) -> (address, last use).
    sticky: HashMap<(RuleRef, u8, IpAddr), (IpAddr, u64)>,
    sticky_ms: u64,
    /// A pool's new sticky address was refused for `set limit
    /// src-nodes` (the packet is dropped `src-limit`, not `translate`).
    nodes_refused: bool,
    /// While a SYN that replaced a closed connection's state is decided:
    /// that state's key after translation, when it was translated and the
    /// SYN came the way it did (see `reopen_key`).
    reopened: Option<FlowKey>,
    pub frags: Reassembler,
    now_ms: u64,
    /// Fingerprints for `os` rules: `set fingerprints`, or the built-in ones.
    osdb: FingerprintDb,
    /// `set state-policy if-bound`: states bind to their interface unless
    /// a rule says `floating`.
    if_bound_default: bool,
    /// `set state-defaults`: options for stateful rules that give none.
    state_defaults: Option<Arc<palisade_conf::ir::StateOpts>>,
    /// The options made per rule by `state_opts_for` (see there).
    rule_opts: HashMap<(usize, Option<crate::packet::RuleRef>), Arc<palisade_conf::ir::StateOpts>>,
    /// The interface the packet being decided arrived on, for
    /// `received-on` (given per packet by `process_received`), when
    /// `received_on_set`: a buffer kept between packets, so that a packet
    /// that does not reach the rules costs no allocation.
    received_on: String,
    received_on_set: bool,
    /// The tag the packet being decided brought from pf `in`, when
    /// `tag_in_set` (given per packet, kept as `received_on` is).
    tag_in: String,
    tag_in_set: bool,
    /// `set skip on`: packets on these interfaces pass unfiltered.
    skip: std::collections::HashSet<String>,
    /// Fingerprint every state's SYN (`set_keep_os`).
    keep_os: bool,
    /// The SYNs that created inbound states, with their fingerprints
    /// (`record_syns`).
    pub synlog: Option<crate::synlog::SynLog>,
    /// With a table per worker: a packet whose state is in another
    /// table is handed back undecided (`Decision::elsewhere`). Off for
    /// the last try of a packet handed on (`set_redirects`).
    redirects: bool,
    /// `set syncookies` (syncookie.rs).
    pub cookies: crate::syncookie::Cookies,
    /// The packet being decided is a SYN rebuilt from a returned cookie:
    /// not answered with a cookie again, not fingerprinted.
    rebuilt_syn: bool,
}

/// A fingerprint's full name, as `pfctl -so` lists it: class, version
/// and subtype.
pub fn os_label(f: &crate::osfp::Fingerprint) -> String {
    let mut s = f.class.clone();
    for part in [&f.version, &f.subtype] {
        if !part.is_empty() {
            s.push(' ');
            s.push_str(part);
        }
    }
    s
}

/// The interface a routing pool's next hop `hop` leaves by: its list
/// entry's, when the entries name interfaces of their own (the first
/// entry that holds it), else the one the pool names, else none (the
/// routing table's way to the hop).
fn hop_iface(pool: &Pool, hop: &IpAddr) -> Option<String> {
    if let Some(hops) = &pool.hop_ifnames {
        let own = hops.iter().find(|(a, _)| match a {
            Addr::Net { ip, bits } => {
                ip.is_ipv4() == hop.is_ipv4() && {
                    let af = Af::of(hop);
                    let m = mask128(af, *bits);
                    ip_u128(ip) & m == ip_u128(hop) & m
                }
            }
            _ => false,
        });
        if let Some((_, i)) = own {
            return Some(i.clone());
        }
    }
    pool.ifname.clone()
}

/// A client's sticky address (`Filter::sticky_addresses`).
#[derive(Clone, Debug)]
pub struct StickyAddress {
    pub client: IpAddr,
    /// The translation address or next hop it keeps.
    pub addr: IpAddr,
    pub rule: RuleRef,
    /// States use it now.
    pub in_use: bool,
    /// When it was chosen or last seen in use (ms, the filter's clock).
    pub last_ms: u64,
    /// It goes this long after `last_ms` once unused (`src.track`).
    pub keep_ms: u64,
}

/// Pool slots: which choice of a rule's a round-robin position or a
/// sticky address belongs to.
const SLOT_RDR: u8 = 0;
const SLOT_NAT: u8 = 1;
const SLOT_ROUTE: u8 = 2;

/// Whether pf drops a packet that passed for its options: always for
/// those it never lets through, otherwise unless `allow-opts`.
fn opts_refused(ip: &[u8], info: &IpInfo, allow_opts: bool) -> bool {
    match palisade_wire::ip_options(ip, info) {
        palisade_wire::IpOptions::Fine => false,
        palisade_wire::IpOptions::Blocked => !allow_opts,
        palisade_wire::IpOptions::Dropped => true,
    }
}

fn payload_len(info: &IpInfo, header_len: u8) -> u32 {
    info.len
        .saturating_sub(info.l4_offset)
        .saturating_sub(header_len as usize) as u32
}

impl Filter {
    /// A filter for `engine`, with the global options (`set timeout`,
    /// `set limit states`) of `config`.
    pub fn new(engine: Arc<Engine>, config: &Config, creator: u32) -> Filter {
        let mut f = Filter {
            engine,
            states: StateTable::new(creator),
            counters: Counters::default(),
            last_expiry_ms: 0,
            rr: HashMap::new(),
            sticky: HashMap::new(),
            sticky_ms: 0,
            nodes_refused: false,
            reopened: None,
            frags: Reassembler::default(),
            osdb: FingerprintDb::default_db(),
            now_ms: 0,
            if_bound_default: false,
            state_defaults: None,
            rule_opts: HashMap::new(),
            received_on: String::new(),
            received_on_set: false,
            tag_in: String::new(),
            tag_in_set: false,
            skip: std::collections::HashSet::new(),
            keep_os: false,
            synlog: None,
            redirects: true,
            cookies: Default::default(),
            rebuilt_syn: false,
        };
        f.set_options(config);
        f
    }

    /// Become table `table` of those sharing `directory`, one per worker
    /// (`StateTable::join`): a packet whose state another table holds is
    /// then handed back undecided (`Decision::elsewhere`), and a new state
    /// is refused a key or translation port any table holds. For
    /// `workers::Workers`, which decides such packets where their state is.
    pub fn join(&mut self, directory: Arc<crate::state::directory::Directory>, table: u8) {
        self.states.join(directory, table);
    }

    /// Whether a packet whose state is in another table is handed back
    /// (`Decision::elsewhere`); when not, it is decided here as if no
    /// other table held it (a new state with a key another table holds
    /// is refused: `state-insert`).
    pub fn set_redirects(&mut self, on: bool) {
        self.redirects = on;
    }

    /// Take the global options of `config` (`set timeout`, `set limit
    /// states|frags`, `set state-policy`, `set state-defaults`, `set
    /// skip on`), each back to its default where `config` does not set
    /// it: at start, and at a reload (pfctl -f sets them again too). The
    /// states already there keep going under the new values (their
    /// timeouts, read per packet, and the limit, checked per new state).
    /// The interfaces `set skip` leaves alone (groups expanded).
    pub fn skipped(&self) -> &std::collections::HashSet<String> {
        &self.skip
    }

    pub fn set_options(&mut self, config: &Config) {
        self.states.apply_options(&config.options);
        let frag_defaults = Reassembler::default();
        self.frags.timeout_ms = frag_defaults.timeout_ms;
        self.frags.limit = frag_defaults.limit;
        self.if_bound_default = false;
        self.state_defaults = None;
        self.rule_opts.clear();
        self.skip.clear();
        self.cookies
            .set_mode(config.options.iter().rev().find_map(|o| match o {
                SetOption::Syncookies(m) => Some(m),
                _ => None,
            }));
        for o in &config.options {
            match o {
                SetOption::Timeout(Timeout::Frag, v) => self.frags.timeout_ms = *v as u64 * 1000,
                SetOption::Limit(n, v) if n == "frags" => self.frags.limit = *v as usize,
                SetOption::StatePolicy(p) => self.if_bound_default = p == "if-bound",
                SetOption::StateDefaults(o) => self.state_defaults = Some(Arc::new(o.clone())),
                // `set skip on`: interfaces and groups pf leaves alone.
                SetOption::Skip(names) => {
                    for n in names {
                        self.skip.insert(n.clone());
                        for i in self.engine.host().members(n) {
                            self.skip.insert(i.name.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        let src_track = self.states.timeouts[Timeout::ALL
            .iter()
            .position(|t| *t == Timeout::SrcTrack)
            .unwrap_or(0)];
        // pf keeps a sticky address in the client's source node, which
        // lives `src.track` seconds after its last state (0, the default:
        // it goes with it).
        self.sticky_ms = src_track as u64 * 1000;
    }

    /// The state options a state of the deciding rule gets: the rule's,
    /// else `set state-defaults`', made if-bound by `set state-policy
    /// if-bound`. One `Arc` per rule (kept until the options or the
    /// ruleset change), since a rule's states are counted under it (its
    /// `max`, its adaptive timeouts): a copy per state counted each
    /// alone, and one shared `state-defaults` counted every rule's
    /// states together (pfctl gives each rule its own copy).
    fn state_opts_for(
        &mut self,
        v: &crate::packet::Verdict,
    ) -> Option<Arc<palisade_conf::ir::StateOpts>> {
        let if_bound = |o: &Option<Arc<palisade_conf::ir::StateOpts>>| {
            self.if_bound_default && !o.as_ref().is_some_and(|o| o.floating || o.if_bound)
        };
        match &v.state_opts {
            Some(o) if !if_bound(&Some(o.clone())) => return Some(o.clone()),
            None if self.state_defaults.is_none() && !self.if_bound_default => return None,
            _ => {}
        }
        // Keyed by the rule's own options (they live as long as its
        // ruleset) or, for `state-defaults`, by the rule.
        let key = match (&v.state_opts, &v.rule) {
            (Some(o), _) => (Arc::as_ptr(o) as usize, None),
            (None, r) => (0, r.clone()),
        };
        if let Some(o) = self.rule_opts.get(&key) {
            return Some(o.clone());
        }
        let base = v.state_opts.clone().or_else(|| self.state_defaults.clone());
        let made = if if_bound(&base) {
            let mut o = base.as_deref().cloned().unwrap_or_default();
            o.if_bound = true;
            Arc::new(o)
        } else {
            Arc::new(base.as_deref().cloned().unwrap_or_default())
        };
        if self.rule_opts.len() >= 65_536 {
            self.rule_opts.clear();
        }
        self.rule_opts.insert(key, made.clone());
        Some(made)
    }

    /// The sticky addresses (`sticky-address`), each a part of its
    /// client's source node in pf (pfctl -sS shows it as `client ->
    /// address`): sorted by client.
    pub fn sticky_addresses(&self) -> Vec<StickyAddress> {
        let mut v: Vec<StickyAddress> = self
            .sticky
            .iter()
            .map(|((rule, _, client), (addr, last))| StickyAddress {
                client: *client,
                addr: *addr,
                rule: rule.clone(),
                in_use: self.states.sticky_in_use(client, addr),
                last_ms: *last,
                keep_ms: self.sticky_ms,
            })
            .collect();
        v.sort_by_key(|a| (a.client, a.rule.nr, a.addr));
        v
    }

    /// pfctl -K: forget the source nodes of the sources `src` matches,
    /// their sticky addresses with them (the next connection picks again);
    /// how many went.
    pub fn kill_source_nodes(&mut self, src: impl Fn(&IpAddr) -> bool) -> usize {
        let n = self.states.kill_source_nodes(&src);
        let before = self.sticky.len();
        self.sticky.retain(|(_, _, client), _| !src(client));
        self.states.sticky_nodes = self.sticky.len();
        n + (before - self.sticky.len())
    }

    /// Keep the OS fingerprint of every TCP SYN that creates a state
    /// (greylisting by OS asks for it), not only when a rule uses `os`.
    pub fn set_keep_os(&mut self, on: bool) {
        self.keep_os = on;
    }

    /// Fingerprint every TCP SYN that creates a state inbound and keep
    /// the last `cap` of them (and as many hosts) for `max_age_ms`
    /// (`palisade osfp show`, greylisting by OS). `cap` 0: stop.
    pub fn record_syns(&mut self, cap: usize, max_age_ms: u64) {
        self.keep_os = cap > 0;
        self.synlog = (cap > 0).then(|| crate::synlog::SynLog::new(cap, max_age_ms));
    }

    /// The record of a state, to send to a peer.
    pub fn export_state(&self, id: u64, now_ms: u64) -> Option<crate::state::StateRecord> {
        self.states.export(id, now_ms)
    }

    /// Take a peer's state: its rule is looked up in this ruleset by
    /// anchor and number (its state options and counters apply); a rule
    /// this ruleset lacks leaves the state without one, as pf's default
    /// rule. Records no event.
    pub fn import_state(
        &mut self,
        rec: &crate::state::StateRecord,
        now_ms: u64,
    ) -> Result<u64, crate::state::ImportError> {
        let rule = self.record_rule(rec);
        let before = self.states.len();
        let r = self.states.import(rec, now_ms, rule);
        // Counted as pf counts a state pfsync inserts (`pfctl -si`).
        self.counters.state_inserts += (self.states.len() > before) as u64;
        r
    }

    /// A record's rule in this ruleset (its state options and counters).
    fn record_rule(&self, rec: &crate::state::StateRecord) -> Option<crate::state::RuleForState> {
        rec.rule
            .as_ref()
            .and_then(|r| self.engine.rule_for_state(r))
            .map(|(o, st)| (o, Some(st)))
    }

    /// Take back a state this firewall saved before a restart (see
    /// `StateTable::restore`); its rule is looked up as `import_state`
    /// does. Returns its id here.
    pub fn restore_state(
        &mut self,
        rec: &crate::state::StateRecord,
        now_ms: u64,
    ) -> Result<u64, crate::state::ImportError> {
        let rule = self.record_rule(rec);
        let before = self.states.len();
        let r = self.states.restore(rec, now_ms, rule);
        self.counters.state_inserts += (self.states.len() > before) as u64;
        r
    }

    /// The original connection of one a local proxy accepted (pf's
    /// `DIOCNATLOOK`): see `StateTable::natlook`.
    pub fn natlook(&self, seen: &FlowKey, dir: Direction) -> Option<FlowKey> {
        self.states.natlook(seen, dir)
    }

    /// Use this fingerprint database (from `set fingerprints`).
    pub fn set_fingerprints(&mut self, db: FingerprintDb) {
        self.osdb = db;
    }

    /// The fingerprints `os` rules match against.
    pub fn fingerprints(&self) -> &FingerprintDb {
        &self.osdb
    }

    /// Swap in a new ruleset; states survive (pf keeps them across reloads).
    pub fn set_engine(&mut self, engine: Arc<Engine>) {
        self.engine = engine;
        // Keyed by the old rules' options: their addresses may be reused.
        self.rule_opts.clear();
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The ruleset in force, to keep using without the filter (compiling
    /// a successor, loading an anchor outside the data-plane lock).
    pub fn engine_arc(&self) -> Arc<Engine> {
        self.engine.clone()
    }

    /// The in-kernel fast path passed `packets` packets of a flow since
    /// its states were last read, each decided on `passes` passes (the
    /// way in and the way out): counted as the filter counts its own
    /// state hits.
    pub fn count_fast(&mut self, packets: u64, passes: u64) {
        let n = packets * passes;
        self.counters.state_searches += n;
        self.counters.packets += n;
        self.counters.passed += n;
    }

    #[inline(always)]
    fn count(&mut self, d: Decision) -> Decision {
        self.tally(&d);
        d
    }

    /// Count a decision (`pfctl -si`).
    #[inline(always)]
    fn tally(&mut self, d: &Decision) {
        let hit = d.state == StateMatch::Match && d.reason == Reason::Match;
        self.tally_parts(d.passed(), (!hit).then_some(d.reason));
    }

    /// `reason`: None for a packet a state passed (pf counts "match" only
    /// for packets its rules decided: REASON_SET in pf_test_rule).
    #[inline(always)]
    fn tally_parts(&mut self, passed: bool, reason: Option<Reason>) {
        self.counters.packets += 1;
        if passed {
            self.counters.passed += 1;
        } else {
            self.counters.blocked += 1;
        }
        if let Some(r) = reason {
            self.counters.reasons[r as usize] += 1;
        }
    }

    /// Decide one IP packet (no link-layer header) seen on `iface` in
    /// `dir`. The packet is rewritten in place when it is translated.
    pub fn process(&mut self, ip: &mut [u8], iface: &str, dir: Direction, now_ms: u64) -> Decision {
        self.process_with(ip, iface, dir, now_ms, 0)
    }

    /// What the packet brings from pf `in` to this pass: the interface
    /// it arrived on and its tag (for the next decision only).
    fn set_carried(&mut self, r: Option<&str>, tag: Option<&str>) {
        self.received_on_set = r.is_some();
        if let Some(r) = r {
            if self.received_on != r {
                self.received_on.clear();
                self.received_on.push_str(r);
            }
        }
        self.tag_in_set = tag.is_some();
        if let Some(t) = tag {
            if self.tag_in != t {
                self.tag_in.clear();
                self.tag_in.push_str(t);
            }
        }
    }

    fn clear_carried(&mut self) {
        self.received_on_set = false;
        self.tag_in_set = false;
    }

    /// As `process_with`, for a packet that arrived on `received_on`
    /// (what `received-on` rules match; an inbound packet arrived on the
    /// interface it is filtered on) and, on the way out, brings `tag`
    /// from pf `in` (what `tagged` rules match: `Decision::tag` of the
    /// packet's pass `in`).
    #[allow(clippy::too_many_arguments)]
    pub fn process_received(
        &mut self,
        ip: &mut [u8],
        iface: &str,
        dir: Direction,
        now_ms: u64,
        random: u32,
        received_on: Option<&str>,
        tag: Option<&str>,
    ) -> Decision {
        self.set_carried(received_on, tag);
        let d = self.process_with(ip, iface, dir, now_ms, random);
        self.clear_carried();
        d
    }

    /// As `process`, with the randomness `probability` rules and random
    /// translation pools use.
    pub fn process_with(
        &mut self,
        ip: &mut [u8],
        iface: &str,
        dir: Direction,
        now_ms: u64,
        random: u32,
    ) -> Decision {
        if let Some(d) = self.skipped_or_tick(iface, now_ms) {
            return d;
        }
        let info = match parse_ip(ip) {
            Ok(i) => i,
            Err(m) => {
                let reason = match m {
                    palisade_wire::Malformed::Short | palisade_wire::Malformed::BadUdp => {
                        Reason::Short
                    }
                    palisade_wire::Malformed::BadTcpHeader => Reason::BadOffset,
                    _ => Reason::Normalize,
                };
                // Logged whatever the rules say, as pf logs a packet it
                // cannot describe (PF_LOG_FORCE, the default rule's
                // number).
                let mut d = Decision::drop(reason);
                d.log = true;
                return self.count(d);
            }
        };
        self.decide_inner(ip, &info, iface, dir, now_ms, random)
    }

    /// As `process_received`, for a packet the caller has already parsed
    /// (`info` describes `ip`): a data plane describes a frame once and
    /// uses the description for both of pf's passes. `Decision::modified`
    /// says whether the packet changed (translated, normalized, shifted),
    /// after which the description no longer holds.
    #[allow(clippy::too_many_arguments)]
    pub fn process_parsed(
        &mut self,
        ip: &mut [u8],
        info: &IpInfo,
        iface: &str,
        dir: Direction,
        now_ms: u64,
        random: u32,
        received_on: Option<&str>,
        tag: Option<&str>,
    ) -> Decision {
        if let Some(d) = self.skipped_or_tick(iface, now_ms) {
            return d;
        }
        self.set_carried(received_on, tag);
        let d = self.decide(ip, info, iface, dir, now_ms, random);
        self.clear_carried();
        d
    }

    /// A TCP super-packet (`ip`, described by `info`) whose payload is
    /// cut into segments of `mss` bytes on the wire, decided whole when
    /// that is exactly what deciding each segment alone, in order, would
    /// do: it belongs to a state both of whose sides are established,
    /// every segment fits the state's windows in turn, and nothing about
    /// the state treats segments one by one (synproxy, modulated or
    /// reassembled sequence spaces, random IP ids, `log (all)`, routing
    /// options, a source's connection limit). The state then moves as if
    /// each segment had passed, and every count is per segment. None,
    /// with nothing changed: the caller cuts the packet and decides each
    /// segment alone (`process_parsed`).
    #[allow(clippy::too_many_arguments)]
    pub fn process_whole(
        &mut self,
        ip: &mut [u8],
        info: &IpInfo,
        iface: &str,
        dir: Direction,
        now_ms: u64,
        random: u32,
        // Only rules look at it, and a state hit asks none.
        _received_on: Option<&str>,
        mss: u16,
    ) -> Option<Decision> {
        let L4::Tcp {
            sport,
            dport,
            seq,
            ack,
            flags,
            window,
            header_len,
        } = info.l4
        else {
            return None;
        };
        let payload = payload_len(info, header_len);
        // Below Linux's smallest MSS (48) a sender is making mischief:
        // such a packet is cut (into at most 8,192 segments).
        if info.frag.is_some() || mss < 48 || payload <= mss as u32 || flags & 0x06 != 0 {
            return None;
        }
        // One pf's TCP normalization would drop or rewrite goes the way
        // of single segments, which apply it.
        if !matches!(tcp_norm(ip, info), TcpNorm::Keep) {
            return None;
        }
        // `set skip`, the clock, expiry: as for any packet (the split path
        // would do them).
        if let Some(d) = self.skipped_or_tick(iface, now_ms) {
            return Some(d);
        }
        let key = FlowKey {
            proto: 6,
            src: info.src,
            dst: info.dst,
            sport,
            dport,
        };
        let hit = self.states.lookup(&key, dir, iface)?;
        let s = self.states.get(hit.id)?;
        let ext_per_segment = s.ext.as_deref().is_some_and(|e| {
            e.seqdiff != 0 || e.seqdiff_dst != 0 || e.proxy.is_some() || e.route.is_some()
        });
        let allow_opts = s.ext.as_deref().is_some_and(|e| e.allow_opts);
        if ext_per_segment
            || s.log_all
            || s.scrub().random_id
            || s.scrub().reassemble_tcp
            || s.src.state != crate::state::tcps::ESTABLISHED
            || s.dst.state != crate::state::tcps::ESTABLISHED
            || opts_refused(ip, info, allow_opts)
        {
            return None;
        }
        // The segments as the kernel or the NIC cuts them: FIN and PSH
        // on the last only, CWR on the first only.
        let n = payload.div_ceil(mss as u32) as usize;
        let head = (info.l4_offset + header_len as usize) as u32;
        let segs: Vec<(TcpSeg, u32)> = (0..n)
            .map(|i| {
                let off = i as u32 * mss as u32;
                let plen = (payload - off).min(mss as u32);
                let mut f = flags;
                if i + 1 < n {
                    f &= !(0x01 | 0x08);
                }
                if i > 0 {
                    f &= !0x80;
                }
                let seg = TcpSeg {
                    seq: seq.wrapping_add(off),
                    ack,
                    flags: f,
                    window,
                    payload_len: plen,
                    wscale: None,
                };
                (seg, head + plen)
            })
            .collect();
        let only: Vec<TcpSeg> = segs.iter().map(|(s, _)| *s).collect();
        if !self.states.would_track_all(hit.id, hit.reply, &only) {
            return None;
        }
        // Committed: the same steps as each segment's, in order.
        let rule = self.states.get(hit.id).and_then(|s| self.states.rule_of(s));
        let scrub = self
            .states
            .get(hit.id)
            .map(|s| s.scrub())
            .unwrap_or_default();
        self.counters.state_searches += n as u64;
        for (seg, len) in &segs {
            if self
                .states
                .track_tcp(hit.id, hit.reply, seg, now_ms, *len)
                .is_err()
            {
                // Cannot happen (the same steps were just tried); refuse
                // the rest rather than pass what was not checked.
                return Some(self.count(Decision::drop(Reason::StateMismatch)));
            }
        }
        let before: Vec<u8> = ip[..head as usize].to_vec();
        let mut d = Decision::drop(Reason::Match);
        d.action = VerdictAction::Pass;
        d.state = StateMatch::Match;
        d.state_id = Some(hit.id);
        d.rule = rule;
        d.tag = self
            .states
            .get(hit.id)
            .and_then(|s| s.ext.as_deref())
            .and_then(|e| e.tag.clone());
        if let Some(new) = &hit.rewrite {
            apply(ip, info, &key, new);
            d.nat = Some((key.clone(), new.clone()));
        }
        normalize(ip, info, &scrub, random);
        d.modified = ip[..head as usize] != before[..];
        self.counters.packets += n as u64;
        self.counters.passed += n as u64;
        Some(d)
    }

    /// `set skip on` for this interface: the packet passes as pf lets it
    /// (not filtered, not counted, no state). Otherwise the clock moves
    /// and expiry runs.
    fn skipped_or_tick(&mut self, iface: &str, now_ms: u64) -> Option<Decision> {
        self.now_ms = now_ms;
        if !self.skip.is_empty() && self.skip.contains(iface) {
            let mut d = Decision::drop(Reason::Match);
            d.action = VerdictAction::Pass;
            return Some(d);
        }
        self.housekeeping(now_ms);
        None
    }

    /// The clock moves without a packet: expiry as a packet would run it
    /// (for a table no packet reaches for a while: a worker's own).
    /// Returns how many states expired.
    pub fn tick(&mut self, now_ms: u64) -> usize {
        self.now_ms = self.now_ms.max(now_ms);
        self.housekeeping(now_ms)
    }

    /// Expiry of states (a slice at a time), fragments and sticky
    /// addresses; how many states expired.
    fn housekeeping(&mut self, now_ms: u64) -> usize {
        let expired = self.states.purge(now_ms);
        if now_ms >= self.last_expiry_ms + 1000 {
            self.frags.expire(now_ms);
            // A client's sticky address lives while its states use it,
            // and `sticky_ms` after the last one went (seen in use here
            // once a second) or it was chosen.
            let (keep, now, states) = (self.sticky_ms, now_ms, &self.states);
            self.sticky.retain(|(_, _, client), (addr, last)| {
                if states.sticky_in_use(client, addr) {
                    *last = now;
                    true
                } else {
                    now < *last + keep
                }
            });
            self.states.sticky_nodes = self.sticky.len();
            self.last_expiry_ms = now_ms;
        }
        expired
    }

    /// Decide a parsed packet, noting whether it was changed.
    fn decide(
        &mut self,
        ip: &mut [u8],
        info: &IpInfo,
        iface: &str,
        dir: Direction,
        now_ms: u64,
        random: u32,
    ) -> Decision {
        // The headers as they came: every rewrite pf does changes them
        // (addresses, ports, sequence numbers, TTL, TOS, IDs, options, or
        // a checksum that covers what changed).
        let head = (info.l4_offset + 20).min(ip.len());
        let mut before = [0u8; 128];
        let snap = head <= before.len();
        if snap {
            before[..head].copy_from_slice(&ip[..head]);
        }
        let mut d = self.decide_inner(ip, info, iface, dir, now_ms, random);
        d.modified = !snap || d.reassembled.is_some() || ip[..head] != before[..head];
        d
    }

    fn decide_inner(
        &mut self,
        ip: &mut [u8],
        info: &IpInfo,
        iface: &str,
        dir: Direction,
        now_ms: u64,
        random: u32,
    ) -> Decision {
        let mut info = *info;
        if info.frag.is_some() {
            match self.frags.push(ip, &info, now_ms) {
                Reassembly::Held => {
                    let mut d = Decision::drop(Reason::Fragment);
                    d.action = VerdictAction::Pass;
                    d.held = true;
                    return d;
                }
                Reassembly::Dropped(r) => return self.count(Decision::drop(r)),
                Reassembly::Complete(mut whole, how) => {
                    let mut d = self.process_with(&mut whole, iface, dir, now_ms, random);
                    d.reassembled = Some(whole);
                    d.refragment = Some(how);
                    return d;
                }
                Reassembly::Whole => {}
            }
        }
        let len = info.len as u32;
        let mut tcp_seg = None;
        let key = match info.l4 {
            L4::Tcp {
                sport,
                dport,
                seq,
                ack,
                flags,
                window,
                header_len,
            } => {
                let t = &ip[info.l4_offset..info.len];
                tcp_seg = Some(TcpSeg {
                    seq,
                    ack,
                    flags,
                    window,
                    payload_len: payload_len(&info, header_len),
                    wscale: if flags & 0x02 != 0 {
                        tcp_wscale(t)
                    } else {
                        None
                    },
                });
                FlowKey {
                    proto: 6,
                    src: info.src,
                    dst: info.dst,
                    sport,
                    dport,
                }
            }
            L4::Udp { sport, dport } => FlowKey {
                proto: 17,
                src: info.src,
                dst: info.dst,
                sport,
                dport,
            },
            L4::Icmp { ty, id, .. } | L4::Icmp6 { ty, id, .. } => {
                let v6 = matches!(info.l4, L4::Icmp6 { .. });
                if icmp_is_error(v6, ty) {
                    if let Some(d) = self.icmp_error(ip, &info, iface, dir) {
                        if d.elsewhere.is_some() {
                            return d;
                        }
                        return self.count(d);
                    }
                }
                FlowKey {
                    proto: info.proto,
                    src: info.src,
                    dst: info.dst,
                    sport: id,
                    dport: id,
                }
            }
            L4::None => FlowKey {
                proto: info.proto,
                src: info.src,
                dst: info.dst,
                sport: 0,
                dport: 0,
            },
        };
        // SYN cookies (pf answers every SYN that arrives while they are
        // on, before looking for its state).
        if dir == Direction::In && !self.rebuilt_syn && self.cookies.enabled() {
            if let Some(seg) = &tcp_seg {
                if seg.flags & 0x12 == 0x02
                    && self
                        .cookies
                        .active(self.states.halfopen(), self.states.limit)
                {
                    // A SYN on a closed connection replaces its state (as
                    // below): gone now, or the ACK that returns the cookie
                    // would meet the old state and never get through.
                    if let Some(hit) = self.states.lookup(&key, dir, iface) {
                        let closed = self.states.get(hit.id).is_some_and(|s| {
                            s.src.state >= tcps::FIN_WAIT_2 && s.dst.state >= tcps::FIN_WAIT_2
                        });
                        if closed {
                            self.states.remove(hit.id);
                        }
                    }
                    return self.send_cookie(ip, &info, &key, seg, now_ms);
                }
            }
        }
        // pf's TCP normalization of every segment (pf_normalize_tcp,
        // after the SYN cookies and before the state lookup, scrub or
        // not): impossible flag combinations dropped, FIN cleared from a
        // SYN, reserved bits and a stray urgent pointer cleared. The rest
        // (state, rules) sees the segment as rewritten.
        if let Some(seg) = tcp_seg.as_mut() {
            match tcp_norm(ip, &info) {
                TcpNorm::Keep => {}
                TcpNorm::Drop => return self.count(Decision::drop(Reason::Normalize)),
                TcpNorm::Rewrite(flags) => {
                    palisade_wire::rewrite::scrub::tcp_flags(ip, &info, flags);
                    seg.flags = flags;
                    if let L4::Tcp { flags: f, .. } = &mut info.l4 {
                        *f = flags;
                    }
                }
            }
        }
        self.counters.state_searches += 1;
        if let Some(hit) = self.states.lookup(&key, dir, iface) {
            // A new SYN on a closed connection replaces the old state
            // (unless IP options the state's rule refuses block it first).
            // Decided here, so that a state's packet returns its decision
            // straight into the caller's: a `Decision` is large, and
            // moving it out of an `Option` cost a copy per packet.
            let syn = tcp_seg.as_ref().is_some_and(|seg| seg.flags & 0x12 == 0x02);
            let replaced = syn
                && self.states.get(hit.id).is_none_or(|s| {
                    s.src.state >= tcps::FIN_WAIT_2
                        && s.dst.state >= tcps::FIN_WAIT_2
                        && !opts_refused(ip, &info, s.ext.as_deref().is_some_and(|e| e.allow_opts))
                });
            if !replaced {
                return self.state_hit(ip, &info, &key, hit, tcp_seg.as_ref(), now_ms, len, random);
            }
            self.reopened = self.reopen_key(hit.id, &key, dir);
            self.states.remove(hit.id);
            let d = self.new_packet(ip, info, key, tcp_seg, iface, dir, now_ms, len, random);
            self.reopened = None;
            return d;
        } else if self.redirects {
            if let Some(t) = self.states.elsewhere(&key, dir, iface) {
                // Searched (and counted) where the state is.
                self.counters.state_searches -= 1;
                return Decision::elsewhere(t);
            }
        }
        // A bare ACK without a state may return a SYN cookie.
        if dir == Direction::In && !self.rebuilt_syn && self.cookies.enabled() {
            if let Some(seg) = tcp_seg.as_ref().filter(|s| s.flags & 0x3f == 0x10) {
                if let Some(c) = self.cookies.check(now_ms, &key, seg.seq, seg.ack) {
                    return self.cookie_returned(&info, &key, seg, c, iface, dir, now_ms, random);
                }
            }
        }
        self.new_packet(ip, info, key, tcp_seg, iface, dir, now_ms, len, random)
    }

    /// Answer a SYN with a cookie: our SYN+ACK (window 0, the MSS the
    /// cookie keeps), nothing kept; the SYN itself goes no further.
    fn send_cookie(
        &mut self,
        ip: &[u8],
        info: &IpInfo,
        key: &FlowKey,
        seg: &TcpSeg,
        now_ms: u64,
    ) -> Decision {
        let t = &ip[info.l4_offset..info.len];
        let mss = syn_mss(t).unwrap_or(536);
        let ours = self.cookies.issue(now_ms, key, seg.seq, mss, seg.wscale);
        let mut d = Decision::drop(Reason::Synproxy);
        d.generated
            .push(synack_to(key, ours, seg.seq, mss.max(536)));
        self.count(d)
    }

    /// The client returned a cookie: the SYN it sent is rebuilt and
    /// decided by the rules as any SYN (pf does the same); if that makes a
    /// state, the state goes on as `synproxy state` after the client's
    /// handshake: the firewall's SYN to the server. The ACK itself is not
    /// forwarded. None of it if the rules block the SYN or keep no state.
    #[allow(clippy::too_many_arguments)]
    fn cookie_returned(
        &mut self,
        info: &IpInfo,
        key: &FlowKey,
        seg: &TcpSeg,
        c: crate::syncookie::CookieSyn,
        iface: &str,
        dir: Direction,
        now_ms: u64,
        random: u32,
    ) -> Decision {
        let mut opts = vec![2, 4, (c.mss >> 8) as u8, c.mss as u8];
        if let Some(ws) = c.wscale {
            opts.extend_from_slice(&[1, 3, 3, ws]);
        }
        let t =
            palisade_wire::build::tcp(key.sport, key.dport, c.isn, 0, 0x02, seg.window, &opts, &[]);
        let mut syn = palisade_wire::build::ip(key.src, key.dst, 6, info.ttl, &t);
        let Ok(syn_info) = parse_ip(&syn) else {
            return self.count(Decision::drop(Reason::Synproxy));
        };
        let syn_seg = TcpSeg {
            seq: c.isn,
            ack: 0,
            flags: 0x02,
            window: seg.window,
            payload_len: 0,
            wscale: c.wscale,
        };
        let len = syn_info.len as u32;
        self.rebuilt_syn = true;
        let mut d = self.new_packet(
            &mut syn,
            syn_info,
            key.clone(),
            Some(syn_seg),
            iface,
            dir,
            now_ms,
            len,
            random,
        );
        self.rebuilt_syn = false;
        // The rules' answer to the SYN (a synproxy rule's SYN+ACK) is not
        // sent: the client has had ours, and is connected as far as it
        // knows. (A `block return` is answered to the ACK itself, by the
        // caller: a RST in the cookie's numbers, which the client takes.)
        d.generated.clear();
        d.generated_out.clear();
        d.nat = None;
        // The ACK is not the rule's packet: not logged as blocked by it.
        d.log = false;
        let Some(id) = d.state_id.filter(|&id| self.states.get(id).is_some()) else {
            // Blocked, or passed without state: the connection cannot go
            // on (pf drops the ACK too).
            if d.passed() {
                d.action = VerdictAction::Block(BlockPolicy::Drop);
                d.reason = Reason::Synproxy;
                self.tally(&d);
            }
            return d;
        };
        // The cookie is spent only now: replaying one the rules refuse
        // does not wear out the others of its secret.
        self.cookies.spent(c);
        // The proxy's numbers are the client's own: a `modulate state`
        // rule's shift would put the client's segments outside the
        // server's window (synproxy's SYN to the server carries the
        // client's ISN unshifted).
        self.states.set_seqdiff(id, 0);
        let p = Proxy {
            phase: 2,
            client_isn: c.isn,
            client_win: seg.window,
            mss: c.mss,
            our_isn: c.our_isn,
        };
        self.states.set_proxy(id, Some(p.clone()));
        if let Some(s) = self.proxy_syn(id, &p) {
            d.generated_out.push(s);
        }
        d.action = VerdictAction::Block(BlockPolicy::Drop);
        d.reason = Reason::Synproxy;
        self.count(d)
    }

    /// A packet of a known state (not a SYN replacing a closed one):
    /// track, translate, normalize.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn state_hit(
        &mut self,
        ip: &mut [u8],
        info: &IpInfo,
        key: &FlowKey,
        hit: crate::state::Hit,
        tcp_seg: Option<&TcpSeg>,
        now_ms: u64,
        len: u32,
        random: u32,
    ) -> Decision {
        let id = hit.id;
        // What the state says about its packets.
        let Some(s) = self.states.get(id) else {
            // `lookup` just found it: not reached.
            return self.count(Decision::drop(Reason::StateMismatch));
        };
        let (rule, log_all, scrub) = (self.states.rule_of(s), s.log_all, s.scrub());
        let ext = s.ext.as_deref();
        let (seqdiff, seqdiff_dst) = ext.map_or((0, 0), |e| (e.seqdiff, e.seqdiff_dst));
        let proxy = ext.and_then(|e| e.proxy.clone());
        let route = ext
            .and_then(|e| e.route.as_ref())
            .and_then(|r| RouteTo::for_packet(r, hit.reply));
        let allow_opts = ext.is_some_and(|e| e.allow_opts);
        let tag = ext.and_then(|e| e.tag.clone());
        // IP options block every packet of a connection whose rule does
        // not allow them (pf: the state's rule).
        if opts_refused(ip, info, allow_opts) {
            let mut d = Decision::drop(Reason::IpOption);
            d.rule = rule;
            d.state_id = Some(id);
            // Logged whatever the rule says (pf: PF_LOG_FORCE).
            d.log = true;
            self.tally(&d);
            return d;
        }
        // The decision is built last, as the value returned: it is
        // large, and building it first then moving it out cost a copy.
        let hit_decision = |action, reason, rule, route, nat| Decision {
            action,
            reason,
            rule,
            state: StateMatch::Match,
            state_id: Some(id),
            tag: tag.clone(),
            log: log_all,
            generated: Vec::new(),
            generated_out: Vec::new(),
            nat,
            held: false,
            log_matched: Vec::new(),
            reassembled: None,
            refragment: None,
            route,
            modified: false,
            elsewhere: None,
        };
        let outcome = match tcp_seg {
            Some(seg) => {
                if let Some(p) = proxy {
                    let d = hit_decision(VerdictAction::Pass, Reason::Match, rule, route, None);
                    let d = self.synproxy_step(id, hit.reply, seg, &p, d);
                    return self.count(d);
                }
                // Shifted sequence spaces (modulate, synproxy): acks name
                // the other side's shifted numbers; track in the original
                // space, then shift what leaves.
                let (own, other) = if hit.reply {
                    (seqdiff_dst, seqdiff)
                } else {
                    (seqdiff, seqdiff_dst)
                };
                let mut seg = *seg;
                if other != 0 && seg.flags & 0x10 != 0 {
                    seg.ack = seg.ack.wrapping_sub(other);
                }
                match self.states.track_tcp(id, hit.reply, &seg, now_ms, len) {
                    Ok(()) => {
                        use palisade_wire::rewrite::tcpseq;
                        if other != 0 {
                            if seg.flags & 0x10 != 0 {
                                tcpseq::set_ack(ip, info, seg.ack);
                            }
                            tcpseq::unshift_sack(ip, info, other);
                        }
                        if own != 0 {
                            tcpseq::set_seq(ip, info, seg.seq.wrapping_add(own));
                        }
                        Reason::Match
                    }
                    Err(crate::state::TrackError::Mismatch) => Reason::StateMismatch,
                    Err(crate::state::TrackError::SrcLimit) => {
                        self.overload(id);
                        Reason::SrcLimit
                    }
                }
            }
            None => {
                self.states.track_pseudo(id, hit.reply, now_ms, len);
                Reason::Match
            }
        };
        let passed = outcome == Reason::Match;
        let mut nat = None;
        if passed {
            if let Some(new) = hit.rewrite {
                apply(ip, info, key, &new);
                nat = Some((key.clone(), new));
            }
            normalize(ip, info, &scrub, random);
            if scrub.reassemble_tcp && tcp_seg.is_some() {
                self.reassemble_tcp(ip, info, id, hit.reply, random);
            }
        }
        self.tally_parts(passed, (outcome != Reason::Match).then_some(outcome));
        let action = if passed {
            VerdictAction::Pass
        } else {
            VerdictAction::Block(BlockPolicy::Drop)
        };
        hit_decision(action, outcome, rule, route, nat)
    }

    /// A packet without a state: older-syntax translation, rules, a new
    /// state, translation.
    #[allow(clippy::too_many_arguments)]
    #[inline(never)]
    fn new_packet(
        &mut self,
        ip: &mut [u8],
        info: IpInfo,
        key: FlowKey,
        tcp_seg: Option<TcpSeg>,
        iface: &str,
        dir: Direction,
        now_ms: u64,
        len: u32,
        random: u32,
    ) -> Decision {
        let mut meta = PacketMeta::from_ip(&info, iface, dir);
        meta.received_on = match dir {
            Direction::In => Some(iface.to_string()),
            Direction::Out => self.received_on_set.then(|| self.received_on.clone()),
        };
        meta.tag = self.tag_in_set.then(|| self.tag_in.clone());
        meta.random = random;
        meta.now_ms = now_ms;
        // Older-syntax translation (nat/rdr/binat) comes before filtering,
        // and the filter rules see the translated packet.
        let mut after = key.clone();
        let mut legacy_pass = None;
        // The older `scrub` rules see the packet as it came, before an
        // older-syntax translation (pf normalizes first).
        let pre_scrub = self.engine.legacy_scrub(&meta);
        if self.engine.has_legacy() {
            if let Some(h) = self.engine.legacy_translate(&meta) {
                if !h.no {
                    if let Some(pool) = &h.pool {
                        let source = matches!(h.kind, LegacyKind::Nat | LegacyKind::BinatOut);
                        if self
                            .translate(pool, &h.rule, &key, &mut after, source, dir, random)
                            .is_none()
                        {
                            return self.count(Decision::drop(Reason::Translate));
                        }
                        meta.src = after.src;
                        meta.dst = after.dst;
                        if meta.sport.is_some() {
                            meta.sport = Some(after.sport);
                            meta.dport = Some(after.dport);
                        }
                    }
                }
                if h.pass {
                    legacy_pass = Some(h);
                }
            }
        }
        let mut syn_sig = None;
        // A SYN rebuilt from a cookie has only the options the cookie
        // kept: its fingerprint would be ours, not the client's.
        if (self.keep_os || self.engine.uses_os()) && !self.rebuilt_syn {
            if let Some(seg) = &tcp_seg {
                // Only a SYN without ACK carries a fingerprint (pf).
                if seg.flags & 0x12 == 0x02 {
                    let t = &ip[info.l4_offset..info.len];
                    // IPv6 as pf reads it: DF taken as set, the size as
                    // the IPv4 packet's would be (a 20-byte header).
                    let (df, size) = match info.src {
                        std::net::IpAddr::V6(_) => (true, info.len.saturating_sub(20) as u16),
                        std::net::IpAddr::V4(_) => (info.dont_fragment, info.len as u16),
                    };
                    let sig = SynSignature::from_tcp(t, info.ttl, df, size);
                    meta.os = sig
                        .as_ref()
                        .and_then(|s| self.osdb.identify(s).cloned())
                        .map(Arc::new);
                    if self.synlog.is_some() && dir == Direction::In {
                        syn_sig = sig;
                    }
                }
            }
        }
        let v = match &legacy_pass {
            // `nat pass` / `rdr pass`: no filter rules, a state.
            Some(h) => {
                let mut v = crate::packet::Verdict::default_pass();
                v.rule = Some(h.rule.clone());
                v.keep_state = KeepState::Keep;
                v.log = h.log;
                v.stats = Some(h.stats.clone());
                v.scrub = pre_scrub;
                v
            }
            None => self.engine.test_with(&meta, pre_scrub, &*self),
        };
        if let Some(st) = &v.stats {
            st.count(dir, len as u64);
        }
        for st in &v.match_stats {
            st.count(dir, len as u64);
        }
        let mut d = Decision {
            action: v.action,
            reason: Reason::Match,
            rule: v.rule.clone(),
            state: StateMatch::None,
            state_id: None,
            tag: v.tag.as_deref().map(Arc::from),
            log: v.log,
            generated: Vec::new(),
            generated_out: Vec::new(),
            nat: None,
            held: false,
            log_matched: v.log_matched.clone(),
            reassembled: None,
            refragment: None,
            route: None,
            modified: false,
            elsewhere: None,
        };
        if let VerdictAction::Block(p) = v.action {
            d.generated = return_packet(ip, &info, p).into_iter().collect();
            return self.count(d);
        }
        // pf blocks IP options (and IPv6 routing headers) unless the
        // deciding rule says `allow-opts`.
        if opts_refused(ip, &info, v.allow_opts) {
            d.action = VerdictAction::Block(BlockPolicy::Drop);
            d.reason = Reason::IpOption;
            // Logged whatever the rule says (pf: PF_LOG_FORCE).
            d.log = true;
            return self.count(d);
        }
        // Translation chosen now, kept in the state for the connection.
        // (A sticky address refused for `set limit src-nodes`: dropped
        // `src-limit`, as pf's source-node pool refuses it.)
        self.nodes_refused = false;
        let untranslated = |f: &Filter| {
            Decision::drop(if f.nodes_refused {
                Reason::SrcLimit
            } else {
                Reason::Translate
            })
        };
        let base = after.clone();
        if let (Some(pool), Some(r)) = (&v.nat_pool, &v.nat) {
            match self.translate(pool, r, &base, &mut after, true, dir, random) {
                Some(()) => {}
                None => return self.count(untranslated(self)),
            }
        }
        if let (Some(pool), Some(r)) = (&v.rdr_pool, &v.rdr) {
            let base = after.clone();
            match self.translate(pool, r, &base, &mut after, false, dir, random) {
                Some(()) => {}
                None => return self.count(untranslated(self)),
            }
        }
        let translated = (after != key).then(|| after.clone());
        use crate::state::flag;
        let sticky = [
            (
                v.nat_pool.as_ref().is_some_and(|p| p.sticky),
                flag::STICKY_NAT,
            ),
            (
                v.rdr_pool.as_ref().is_some_and(|p| p.sticky),
                flag::STICKY_RDR,
            ),
            (
                v.route.as_ref().is_some_and(|(_, (_, p))| p.sticky),
                flag::STICKY_ROUTE,
            ),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .fold(0u8, |m, (_, f)| m | f);
        // Routing options: the next hop is chosen now (from the packet as
        // translated) and kept in the state for the connection.
        // (No next hop of the packet's family: routed normally.)
        let route = match &v.route {
            Some((r, (kind, pool))) => {
                self.pool_addr(pool, r, &after, SLOT_ROUTE, random)
                    .map(|hop| crate::state::StateRoute {
                        kind: *kind,
                        hop,
                        iface: hop_iface(pool, &hop),
                    })
            }
            None => None,
        };
        if self.nodes_refused {
            return self.count(Decision::drop(Reason::SrcLimit));
        }
        // An ICMP error that met no state passes or not by the rules, but
        // never makes a state (pf_test_rule: no state when state_icmp): one
        // would let any later error between the two hosts through, whatever
        // its type.
        let icmp_error = info.is_icmp_error();
        if v.keep_state != KeepState::None && !icmp_error {
            let opts = self.state_opts_for(&v);
            self.states.sticky_nodes = self.sticky.len();
            match self.states.insert(
                key.clone(),
                translated.clone(),
                dir,
                iface,
                v.rule.clone(),
                v.keep_state,
                opts,
                now_ms,
                tcp_seg.as_ref(),
                len,
            ) {
                Ok(id) => {
                    self.counters.state_inserts += 1;
                    d.state = StateMatch::New;
                    d.state_id = Some(id);
                    self.states.set_log_all(id, v.log_all);
                    if let Some(os) = &meta.os {
                        self.states.set_os(id, &os_label(os));
                    }
                    if let (Some(log), Some(sig)) = (&mut self.synlog, &syn_sig) {
                        log.record(
                            now_ms,
                            key.src,
                            key.sport,
                            key.dst,
                            key.dport,
                            sig,
                            meta.os.clone(),
                        );
                    }
                    self.states.set_stats(id, v.stats.clone());
                    self.states.set_scrub(id, v.scrub);
                    // Every packet of the connection gets the tag (pf's
                    // state tag), in whichever pass it meets the state.
                    if let Some(t) = &d.tag {
                        self.states.set_tag(id, t.clone());
                    }
                    if let Some(r) = &route {
                        self.states.set_route(id, r.clone());
                    }
                    if sticky != 0 {
                        self.states.mark_sticky(id, sticky);
                    }
                    if v.allow_opts {
                        self.states.set_allow_opts(id);
                    }
                    // pf proxies only on the way in: a synproxy rule's
                    // state made on the way out (the proxy's own SYN to
                    // the server, a `pass out` rule) is a plain one.
                    if v.keep_state == KeepState::Synproxy && dir == Direction::In {
                        if let Some(seg) = &tcp_seg {
                            if seg.flags & 0x12 == 0x02 {
                                // Answer the client ourselves, with a zero
                                // window until the server is connected.
                                let t = &ip[info.l4_offset..info.len];
                                let mss = syn_mss(t).unwrap_or(536);
                                let our_isn = mix(random as u64 ^ seg.seq as u64 ^ 0x5ca1) as u32;
                                self.states.set_proxy(
                                    id,
                                    Some(Proxy {
                                        phase: 1,
                                        client_isn: seg.seq,
                                        client_win: seg.window,
                                        mss,
                                        our_isn,
                                    }),
                                );
                                d.generated.push(synack_to(&key, our_isn, seg.seq, mss));
                                d.action = VerdictAction::Block(BlockPolicy::Drop);
                                d.reason = Reason::Synproxy;
                                return self.count(d);
                            }
                        }
                    }
                    if v.keep_state == KeepState::Modulate {
                        if let Some(seg) = &tcp_seg {
                            if seg.flags & 0x12 == 0x02 {
                                // A random initial sequence number for the
                                // initiator, as seen by the responder.
                                let diff =
                                    (mix(random as u64 ^ seg.seq as u64 ^ 0x5eed) as u32) | 1;
                                self.states.set_seqdiff(id, diff);
                                palisade_wire::rewrite::tcpseq::set_seq(
                                    ip,
                                    &info,
                                    seg.seq.wrapping_add(diff),
                                );
                            }
                        }
                    }
                }
                Err(reason) => {
                    // Another worker's table took the key since this one
                    // looked (both directions' first packets at once):
                    // the packet is that state's, decided there. Nothing
                    // was changed yet; only the rule's counters saw it.
                    if reason == Reason::StateInsert && self.redirects {
                        if let Some(t) = self.states.elsewhere(&key, dir, iface) {
                            return Decision::elsewhere(t);
                        }
                    }
                    d.action = VerdictAction::Block(BlockPolicy::Drop);
                    d.reason = reason;
                    return self.count(d);
                }
            }
        }
        // The creating packet travels in the rule's direction.
        d.route = route.as_ref().and_then(|r| RouteTo::for_packet(r, false));
        if let Some(t) = translated {
            apply(ip, &info, &key, &t);
            d.nat = Some((key, t));
        }
        normalize(ip, &info, &v.scrub, random);
        if let (true, Some(id), true) = (v.scrub.reassemble_tcp, d.state_id, tcp_seg.is_some()) {
            self.reassemble_tcp(ip, &info, id, false, random);
        }
        self.count(d)
    }

    /// `scrub (reassemble tcp)`: raise the TTL to the highest this side
    /// has used, and shift timestamps so they do not reveal uptimes.
    fn reassemble_tcp(&mut self, ip: &mut [u8], info: &IpInfo, id: u64, reply: bool, random: u32) {
        let seed = mix(random as u64 ^ id) as u32;
        if let Some((ttl, val, ecr)) = self.states.tcp_normalize(id, reply, info.ttl, seed) {
            palisade_wire::rewrite::scrub::raise_ttl(ip, info, ttl);
            palisade_wire::rewrite::tcpts::shift(ip, info, val, ecr);
        }
    }

    /// One step of a synproxy handshake (pf.conf(5) "synproxy state"): the
    /// packets of both handshakes are answered or generated here and never
    /// forwarded themselves.
    fn synproxy_step(
        &mut self,
        id: u64,
        reply: bool,
        seg: &TcpSeg,
        p: &Proxy,
        mut d: Decision,
    ) -> Decision {
        use palisade_wire::build;
        d.action = VerdictAction::Block(BlockPolicy::Drop);
        d.reason = Reason::Synproxy;
        let Some(key) = self.states.get(id).map(|s| s.key.clone()) else {
            return d;
        };
        let srv = self.proxy_server(id).unwrap_or_else(|| key.clone());
        let syn = || proxy_syn_to(&srv, p);
        match (p.phase, reply) {
            (1, false) if seg.flags & 0x16 == 0x10 && seg.ack == p.our_isn.wrapping_add(1) => {
                // The client completed its handshake: connect to the server.
                let mut np = p.clone();
                np.phase = 2;
                self.states.set_proxy(id, Some(np));
                d.generated_out.push(syn());
            }
            (2, false)
                if seg.flags & 0x16 == 0x10
                    && seg.ack == p.our_isn.wrapping_add(1)
                    && seg.seq == p.client_isn.wrapping_add(1) =>
            {
                // The client, connected as it thinks, sends again while
                // the server has not answered: the SYN may have been
                // lost, send it again (as pf does).
                d.generated_out.push(syn());
            }
            (1, false) if seg.flags & 0x12 == 0x02 => {
                // A retransmitted SYN: answer again.
                d.generated
                    .push(synack_to(&key, p.our_isn, p.client_isn, p.mss));
            }
            (2, true) if seg.flags & 0x16 == 0x12 && seg.ack == p.client_isn.wrapping_add(1) => {
                // The server answered: acknowledge it, and open the
                // client's window with an ACK in the firewall's numbers.
                let to_server = build::tcp(
                    srv.sport,
                    srv.dport,
                    p.client_isn.wrapping_add(1),
                    seg.seq.wrapping_add(1),
                    0x10,
                    p.client_win,
                    &[],
                    &[],
                );
                let to_client = build::tcp(
                    key.dport,
                    key.sport,
                    p.our_isn.wrapping_add(1),
                    p.client_isn.wrapping_add(1),
                    0x10,
                    seg.window,
                    &[],
                    &[],
                );
                d.generated_out
                    .push(build::ip(srv.src, srv.dst, 6, 64, &to_server));
                d.generated
                    .push(build::ip(key.dst, key.src, 6, 64, &to_client));
                self.states.synproxy_established(id, seg.seq, seg.window);
            }
            _ => {}
        }
        d
    }

    /// The server's side of a proxied state: a translated state's has the
    /// translated addresses and ports (pf sends there with the state's
    /// other key).
    fn proxy_server(&self, id: u64) -> Option<FlowKey> {
        let s = self.states.get(id)?;
        Some(self.states.translated(s).unwrap_or_else(|| s.key.clone()))
    }

    /// The proxy's SYN to the server of state `id`.
    fn proxy_syn(&self, id: u64, p: &Proxy) -> Option<Vec<u8>> {
        Some(proxy_syn_to(&self.proxy_server(id)?, p))
    }

    /// A source went over its connection limits: put it in the overload
    /// table, flush its states if asked, and drop this connection.
    fn overload(&mut self, id: u64) {
        let Some(s) = self.states.get(id) else {
            return;
        };
        let (src, dir) = (s.key.src, s.dir);
        let rule = s.rule;
        if let Some(ov) = s.opts.as_ref().and_then(|o| o.overload.clone()) {
            let bits = Af::of(&src).max_bits();
            self.engine
                .table_add(&ov.table, &Addr::Net { ip: src, bits }, self.now_ms / 1000);
            if ov.flush {
                self.states
                    .kill_source(src, dir, if ov.global { None } else { Some(rule) });
            }
        }
        self.states.remove(id);
    }

    /// An ICMP error passes when the packet it quotes belongs to a state;
    /// under translation both the error and its quote are rewritten.
    fn icmp_error(
        &mut self,
        ip: &mut [u8],
        info: &IpInfo,
        iface: &str,
        dir: Direction,
    ) -> Option<Decision> {
        let inner = ip.get(info.l4_offset + 8..info.len)?;
        let q = parse_quoted(inner)?;
        // An error about a fragment other than the first names no
        // connection (no ports in it): it matches no state, and the rules
        // decide it as any ICMP packet (pf's state lookup refuses it and
        // pf_test then runs the rules).
        if q.later_fragment {
            return None;
        }
        let quoted = FlowKey {
            proto: q.proto,
            src: q.src,
            dst: q.dst,
            sport: q.sport,
            dport: q.dport,
        };
        let Some(hit) = self.states.lookup_quoted(&quoted, dir, iface) else {
            return self
                .states
                .elsewhere_quoted(&quoted, dir, iface)
                .filter(|_| self.redirects)
                .map(Decision::elsewhere);
        };
        let rule = self.states.get(hit.id).and_then(|s| self.states.rule_of(s));
        // A quoted TCP segment must lie in its sender's window as the
        // state knows it (pf's "BAD ICMP"): an error forged with the
        // right addresses and ports but a made-up sequence number is
        // refused as a state mismatch. Its number, when shifted
        // (`modulate state`, synproxy), is taken back.
        let mut demodulated = None;
        if q.proto == 6 {
            let at = info.l4_offset + 8 + q.l4_offset;
            // Within the quote: `parse_quoted` took its first 8 bytes.
            let b = ip.get(at + 4..at + 8)?;
            let seq = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
            match self.states.check_quoted_tcp(hit.id, hit.reply, seq) {
                Ok(s) => demodulated = (s != seq).then_some(s),
                Err(_) => {
                    let mut d = Decision::drop(Reason::StateMismatch);
                    d.rule = rule;
                    d.state = StateMatch::Match;
                    d.state_id = Some(hit.id);
                    return Some(d);
                }
            }
        }
        if let Some(seq) = demodulated {
            palisade_wire::rewrite::set_quoted_tcp_seq(ip, info, seq);
        }
        let mut nat = None;
        if let (Some(_), Some(inner)) = (&hit.outer, &hit.inner) {
            // The error's own addresses follow the quote's, as pf_icmp
            // changes them: a quoted source translated back (the error
            // goes back to the connection's initiator) changes the error's
            // destination; a quoted destination translated back changes
            // its source. Nothing else: an error from a router on the
            // way keeps the router's address (traceroute through NAT).
            // (An ICMP query's key holds its identifier as both ports:
            // only the source side has it.)
            let icmp = matches!(quoted.proto, 1 | 58);
            let src_moved = inner.src != quoted.src || inner.sport != quoted.sport;
            let dst_moved = inner.dst != quoted.dst || (!icmp && inner.dport != quoted.dport);
            let dst = (src_moved && inner.src != info.dst).then_some((inner.src, 0));
            let src = (dst_moved && inner.dst != info.src).then_some((inner.dst, 0));
            palisade_wire::rewrite::rewrite(ip, info, src, dst);
            if let Ok(info2) = parse_ip(ip) {
                let isrc = (inner.src != quoted.src || inner.sport != quoted.sport)
                    .then_some((inner.src, inner.sport));
                let idst = (inner.dst != quoted.dst || inner.dport != quoted.dport)
                    .then_some((inner.dst, inner.dport));
                palisade_wire::rewrite::rewrite_quoted(ip, &info2, isrc, idst);
            }
            nat = Some((quoted.clone(), inner.clone()));
        }
        Some(Decision {
            action: VerdictAction::Pass,
            reason: Reason::Match,
            rule,
            state: StateMatch::Match,
            state_id: Some(hit.id),
            tag: None,
            log: false,
            generated: Vec::new(),
            generated_out: Vec::new(),
            nat,
            held: false,
            log_matched: Vec::new(),
            reassembled: None,
            refragment: None,
            route: None,
            modified: false,
            elsewhere: None,
        })
    }

    /// Candidate networks of a pool for address family `af`.
    fn pool_nets(&self, pool: &Pool, af: Af) -> Vec<(IpAddr, u8)> {
        self.engine.pool_nets(pool, af)
    }

    /// Whether `ip` is one of the addresses `pool` gives.
    fn in_pool(&self, pool: &Pool, ip: &IpAddr) -> bool {
        let af = Af::of(ip);
        self.pool_nets(pool, af).iter().any(|(net, bits)| {
            let m = mask128(af, *bits);
            ip_u128(net) & m == ip_u128(ip) & m
        })
    }

    /// When a SYN replaces the state of a closed connection (same
    /// addresses and ports, the same way): where that connection was
    /// translated to. The new state is given the same source address and
    /// port if they are free (they are: the old state held them until
    /// now), as the kernel's NAT does for a reopened connection. The
    /// server may still hold the old connection in TIME_WAIT: seeing the
    /// same client port reopen it with later sequence numbers or
    /// timestamps, it accepts the SYN; the port given to some other
    /// client instead, that client's SYN would meet the TIME_WAIT and
    /// fail. pf drops the reopening SYN and translates its retransmission
    /// afresh (a second's delay, and the port free for anyone).
    fn reopen_key(&self, id: u64, key: &FlowKey, dir: Direction) -> Option<FlowKey> {
        let s = self.states.get(id)?;
        (s.dir == dir && s.key == *key)
            .then(|| self.states.translated(s))
            .flatten()
    }

    /// Choose an address of a pool for a new connection: a translation
    /// (`slot` SLOT_NAT, SLOT_RDR) or a next hop (SLOT_ROUTE).
    fn pool_addr(
        &mut self,
        pool: &Pool,
        rule: &RuleRef,
        key: &FlowKey,
        slot: u8,
        random: u32,
    ) -> Option<IpAddr> {
        let af = key.af();
        let nets = self.pool_nets(pool, af);
        if nets.is_empty() {
            return None;
        }
        let orig = if slot == SLOT_NAT { key.src } else { key.dst };
        let sticky_key = (rule.clone(), slot, key.src);
        let remembered = self.remembered(pool, &sticky_key);
        let rr = match (remembered, pool.kind) {
            (None, PoolType::RoundRobin | PoolType::LeastStates) => {
                let c = self.rr.entry((rule.clone(), slot)).or_insert(0);
                let n = *c;
                *c += 1;
                n
            }
            _ => 0,
        };
        // A client's first sticky address is a new source node: `set
        // limit src-nodes` reached, pf's pool refuses it.
        if pool.sticky && remembered.is_none() && !self.sticky.contains_key(&sticky_key) {
            self.states.sticky_nodes = self.sticky.len();
            if self.states.src_nodes_full() {
                self.nodes_refused = true;
                return None;
            }
        }
        let addr = choose_addr(&nets, pool, &key.src, &orig, random, rr, remembered);
        if pool.sticky {
            self.sticky.insert(sticky_key, (addr, self.now_ms));
        }
        Some(addr)
    }

    /// The address `sticky-address` keeps for this client, while it holds.
    fn remembered(&self, pool: &Pool, sticky_key: &(RuleRef, u8, IpAddr)) -> Option<IpAddr> {
        if !pool.sticky {
            return None;
        }
        self.sticky
            .get(sticky_key)
            .filter(|(a, last)| {
                self.now_ms < last + self.sticky_ms || self.states.sticky_in_use(&sticky_key.2, a)
            })
            .map(|(a, _)| *a)
    }

    /// Choose the translated address (and port) for a new connection.
    #[allow(clippy::too_many_arguments)]
    fn translate(
        &mut self,
        pool: &Pool,
        rule: &RuleRef,
        key: &FlowKey,
        after: &mut FlowKey,
        source: bool,
        dir: Direction,
        random: u32,
    ) -> Option<()> {
        let slot = if source { SLOT_NAT } else { SLOT_RDR };
        let mut addr = self.pool_addr(pool, rule, key, slot, random)?;
        // A connection reopened on the same ports keeps the source the
        // closed one had, if this pool can give it (below: its port too).
        let reopened = self.reopened.clone().filter(|_| source);
        if let Some(old) = &reopened {
            if old.src != addr && self.in_pool(pool, &old.src) {
                addr = old.src;
                // The client's sticky address is the one it goes on with.
                if pool.sticky {
                    self.sticky
                        .insert((rule.clone(), SLOT_NAT, key.src), (addr, self.now_ms));
                }
            }
        }
        let orig = if source { key.src } else { key.dst };
        let seed = mix(random as u64 ^ ip_u128(&orig) as u64);
        if source {
            after.src = addr;
        } else {
            after.dst = addr;
        }
        let has_ports = matches!(key.proto, 6 | 17);
        let icmp_query = matches!(key.proto, 1 | 58);
        if !source {
            if has_ports {
                if let Some(p) = rdr_port(pool, key.dport) {
                    after.dport = p;
                }
            }
            return Some(());
        }
        if !(has_ports || icmp_query) || pool.static_port {
            return Some(());
        }
        // Source port (or ICMP id): pf's proxy range unless given, the first
        // free one from a random start.
        let (lo, hi) = pool.port.unwrap_or((50001, 65535));
        let (lo, hi) = (lo.min(hi), lo.max(hi));
        let n = (hi - lo) as u32 + 1;
        let mut start = (seed as u32) % n;
        if let Some(old) = reopened.filter(|o| o.src == addr && (lo..=hi).contains(&o.sport)) {
            start = (old.sport - lo) as u32;
        }
        for k in 0..n {
            let p = lo + ((start + k) % n) as u16;
            let mut cand = after.clone();
            cand.sport = p;
            if icmp_query {
                cand.dport = p;
            }
            let wire = match dir {
                Direction::In => crate::state::norm(&cand, dir),
                Direction::Out => crate::state::norm(&cand, dir),
            };
            if !self.states.wire_in_use(&wire) {
                *after = cand;
                return Some(());
            }
        }
        None
    }
}

/// The firewall's SYN+ACK to the client of `key` (the client's view:
/// its source is the client): our initial sequence number, the client's
/// acknowledged, window zero until the server is connected, the MSS
/// option (synproxy's answer, and a SYN cookie's).
fn synack_to(key: &FlowKey, our_isn: u32, client_isn: u32, mss: u16) -> Vec<u8> {
    let opts = [2, 4, (mss >> 8) as u8, mss as u8];
    let t = palisade_wire::build::tcp(
        key.dport,
        key.sport,
        our_isn,
        client_isn.wrapping_add(1),
        0x12,
        0,
        &opts,
        &[],
    );
    palisade_wire::build::ip(key.dst, key.src, 6, 64, &t)
}

/// The proxy's SYN to the server `srv`, with the client's own initial
/// sequence number, window and MSS.
fn proxy_syn_to(srv: &FlowKey, p: &Proxy) -> Vec<u8> {
    let mss_opt = [2, 4, (p.mss >> 8) as u8, p.mss as u8];
    let t = palisade_wire::build::tcp(
        srv.sport,
        srv.dport,
        p.client_isn,
        0,
        0x02,
        p.client_win,
        &mss_opt,
        &[],
    );
    palisade_wire::build::ip(srv.src, srv.dst, 6, 64, &t)
}

/// The MSS option of a TCP SYN header.
fn syn_mss(tcp: &[u8]) -> Option<u16> {
    palisade_wire::tcp_options(tcp).find_map(|(k, o, l)| {
        (k == 2 && l == 4).then(|| u16::from_be_bytes([tcp[o + 2], tcp[o + 3]]))
    })
}

/// What pf's TCP normalization (pf_normalize_tcp, applied to every TCP
/// segment whether or not a scrub rule asks) does to a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TcpNorm {
    Keep,
    /// Refused (pf's PFRES_NORM, "normalize").
    Drop,
    /// Passes with these flags, its reserved bits cleared and, without
    /// URG, its urgent pointer zeroed.
    Rewrite(u8),
}

/// pf_normalize_tcp's rules: SYN with RST is dropped; SYN with FIN loses
/// the FIN; a segment that is not a SYN needs ACK or RST; without ACK,
/// FIN, PUSH and URG are refused (after the FIN is taken off a SYN);
/// the reserved bits beside the data offset are cleared, and the urgent
/// pointer when URG is not set.
#[inline]
fn tcp_norm(ip: &[u8], info: &IpInfo) -> TcpNorm {
    const FIN: u8 = 0x01;
    const SYN: u8 = 0x02;
    const RST: u8 = 0x04;
    const PUSH: u8 = 0x08;
    const ACK: u8 = 0x10;
    const URG: u8 = 0x20;
    let L4::Tcp { flags, .. } = info.l4 else {
        return TcpNorm::Keep;
    };
    let t = info.l4_offset;
    let (Some(&off), Some(urp)) = (ip.get(t + 12), ip.get(t + 18..t + 20)) else {
        return TcpNorm::Keep;
    };
    let mut f = flags;
    if f & SYN != 0 {
        if f & RST != 0 {
            return TcpNorm::Drop;
        }
        f &= !FIN;
    } else if f & (ACK | RST) == 0 {
        return TcpNorm::Drop;
    }
    if f & ACK == 0 && f & (FIN | PUSH | URG) != 0 {
        return TcpNorm::Drop;
    }
    if f != flags || off & 0x0f != 0 || (f & URG == 0 && urp != [0, 0]) {
        TcpNorm::Rewrite(f)
    } else {
        TcpNorm::Keep
    }
}

/// `scrub`'s rewrites of a packet that passed (most have none: tested
/// here, inline, so that they pay no call).
#[inline]
fn normalize(ip: &mut [u8], info: &IpInfo, sc: &ScrubActions, random: u32) {
    if !sc.is_empty() {
        normalize_with(ip, info, sc, random);
    }
}

/// Apply `scrub` normalizations to a passing packet.
#[inline(never)]
fn normalize_with(ip: &mut [u8], info: &IpInfo, sc: &ScrubActions, random: u32) {
    use palisade_wire::rewrite::scrub::*;
    if sc.no_df {
        clear_df(ip, info);
    }
    if sc.random_id {
        set_id(ip, info, (mix(random as u64 ^ 0x9e37_79b9) >> 17) as u16);
    }
    if let Some(t) = sc.min_ttl {
        raise_ttl(ip, info, t);
    }
    if let Some(t) = sc.tos {
        set_tos(ip, info, t);
    }
    if let Some(m) = sc.max_mss {
        clamp_mss(ip, info, m);
    }
}

pub(crate) fn is_linklocal(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V6(x) if (x.segments()[0] & 0xffc0) == 0xfe80)
}

pub(crate) fn ip_u128(ip: &IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u32::from(*a) as u128,
        IpAddr::V6(a) => u128::from(*a),
    }
}

pub(crate) fn from_u128(af: Af, v: u128) -> IpAddr {
    match af {
        Af::Inet => IpAddr::V4(std::net::Ipv4Addr::from(v as u32)),
        Af::Inet6 => IpAddr::V6(std::net::Ipv6Addr::from(v)),
    }
}

pub(crate) fn mask128(af: Af, bits: u8) -> u128 {
    let w = af.max_bits() as u32;
    let bits = (bits as u32).min(w);
    if bits == 0 {
        0
    } else {
        let full = if w == 32 { u32::MAX as u128 } else { u128::MAX };
        (full << (w - bits)) & full
    }
}

/// What a match rule's translation gives a packet, for the rules after
/// it: the address this filter's pool will give it (its round-robin
/// position, the client's sticky address).
impl crate::engine::TransPreview for Filter {
    fn preview(
        &self,
        pool: &Pool,
        rule: &RuleRef,
        source: bool,
        pkt: &PacketMeta,
    ) -> Option<IpAddr> {
        let nets = self.pool_nets(pool, pkt.af);
        if nets.is_empty() {
            return None;
        }
        let slot = if source { SLOT_NAT } else { SLOT_RDR };
        let orig = if source { pkt.src } else { pkt.dst };
        let remembered = self.remembered(pool, &(rule.clone(), slot, pkt.src));
        let rr = match (remembered, pool.kind) {
            (None, PoolType::RoundRobin | PoolType::LeastStates) => {
                self.rr.get(&(rule.clone(), slot)).copied().unwrap_or(0)
            }
            _ => 0,
        };
        Some(choose_addr(
            &nets, pool, &pkt.src, &orig, pkt.random, rr, remembered,
        ))
    }
}

/// The address a pool gives: `remembered` (sticky-address) if any, else
/// by the pool's kind: `rr` is the round-robin position, `random` the
/// packet's randomness, `orig` the address translated (the source for
/// nat-to, the destination for rdr-to), `src` the client's.
pub(crate) fn choose_addr(
    nets: &[(IpAddr, u8)],
    pool: &Pool,
    src: &IpAddr,
    orig: &IpAddr,
    random: u32,
    rr: u64,
    remembered: Option<IpAddr>,
) -> IpAddr {
    if let Some(a) = remembered {
        return a;
    }
    let af = Af::of(&nets[0].0);
    let seed = mix(random as u64 ^ ip_u128(orig) as u64);
    match pool.kind {
        PoolType::Bitmask => {
            let (net, bits) = nets[0];
            let m = mask128(af, bits);
            from_u128(af, (ip_u128(&net) & m) | (ip_u128(orig) & !m))
        }
        PoolType::Random => host_in(nets, seed),
        PoolType::SourceHash(k) => {
            let mut h = 0xcbf29ce484222325u64;
            for b in k.iter().chain(ip_u128(src).to_be_bytes().iter()) {
                h = (h ^ *b as u64).wrapping_mul(0x100000001b3);
            }
            host_in(nets, h)
        }
        // `least-states` counts no states per address here (warned at
        // load): its addresses are taken in turn, as round-robin's,
        // rather than the first one always.
        PoolType::RoundRobin | PoolType::LeastStates => host_in(nets, rr),
        PoolType::None => nets[0].0,
    }
}

/// The destination port `rdr-to ... port` gives `dport` (a range maps
/// onto a range from `port_base`); None: the port stays.
pub(crate) fn rdr_port(pool: &Pool, dport: u16) -> Option<u16> {
    let (lo, hi) = pool.port?;
    Some(match pool.port_base {
        Some(base) if dport >= base => lo.saturating_add(dport - base).min(hi),
        _ => lo,
    })
}

/// The `n`-th address (modulo) across the pool's networks.
fn host_in(nets: &[(IpAddr, u8)], n: u64) -> IpAddr {
    let (net, bits) = nets[(n as usize) % nets.len()];
    let af = Af::of(&net);
    let host_bits = af.max_bits() as u32 - bits as u32;
    if host_bits == 0 {
        return net;
    }
    let size: u128 = if host_bits >= 64 {
        u64::MAX as u128
    } else {
        1u128 << host_bits
    };
    let base = ip_u128(&net) & mask128(af, bits);
    from_u128(af, base + ((n / nets.len() as u64) as u128 % size))
}

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x
}

/// Rewrite the packet from tuple `from` to tuple `to`.
fn apply(ip: &mut [u8], info: &IpInfo, from: &FlowKey, to: &FlowKey) {
    if apply_v4_ports(ip, info, from, to) {
        return;
    }
    let icmp = matches!(info.l4, L4::Icmp { .. } | L4::Icmp6 { .. });
    let src = (from.src != to.src || from.sport != to.sport).then_some((to.src, to.sport));
    let dst =
        (from.dst != to.dst || (!icmp && from.dport != to.dport)).then_some((to.dst, to.dport));
    palisade_wire::rewrite::rewrite(ip, info, src, dst);
    if icmp && src.is_none() && from.dport != to.dport {
        // A reply's identifier is the destination side of the key.
        palisade_wire::rewrite::rewrite(ip, info, Some((to.src, to.dport)), None);
    }
}

/// `apply` for a whole IPv4 TCP or UDP datagram (nearly every packet of a
/// translated connection): the changed addresses and ports written
/// straight, the header's checksum and the transport checksum updated
/// once each from the sum of the changes (RFC 1624: HC' = ~(~HC + ~m +
/// m')). False, with nothing changed, for anything else (the general path).
#[inline]
fn apply_v4_ports(ip: &mut [u8], info: &IpInfo, from: &FlowKey, to: &FlowKey) -> bool {
    let (ck, udp) = match info.l4 {
        L4::Tcp { .. } => (16, false),
        L4::Udp { .. } => (6, true),
        _ => return false,
    };
    let (IpAddr::V4(fs), IpAddr::V4(fd), IpAddr::V4(ts), IpAddr::V4(td)) =
        (from.src, from.dst, to.src, to.dst)
    else {
        return false;
    };
    let l4 = info.l4_offset;
    if info.frag.is_some() || info.len > ip.len() || l4 < 20 || l4 + ck + 2 > info.len {
        return false;
    }
    // The IP header's fixed part and the transport header's first eight
    // bytes (the ports), each bounds-checked once.
    let (head, tail) = ip.split_at_mut(l4);
    let (Ok(h), Ok(t)) = (
        <&mut [u8; 20]>::try_from(&mut head[..20]),
        <&mut [u8; 8]>::try_from(&mut tail[..8]),
    ) else {
        return false;
    };
    let mut sums = Sums::default();
    if fs != ts || from.sport != to.sport {
        sums.swap(h, t, 12, 0, ts.to_bits(), to.sport);
    }
    if fd != td || from.dport != to.dport {
        sums.swap(h, t, 16, 2, td.to_bits(), to.dport);
    }
    if !sums.changed {
        return true;
    }
    if sums.addrs != 0 {
        let c = u16::from_be_bytes([h[10], h[11]]);
        h[10..12]
            .copy_from_slice(&palisade_wire::checksum::update_delta(c, sums.addrs).to_be_bytes());
    }
    let c = u16::from_be_bytes([tail[ck], tail[ck + 1]]);
    // A UDP checksum of zero means "none": left so.
    if !(udp && c == 0) {
        let mut n = palisade_wire::checksum::update_delta(c, sums.addrs + sums.ports);
        if udp && n == 0 {
            n = 0xffff;
        }
        tail[ck..ck + 2].copy_from_slice(&n.to_be_bytes());
    }
    true
}

/// What `apply_v4_ports` changed: RFC 1624's `~m + m'` summed over the
/// addresses' words (for both checksums) and the ports' (the transport's).
#[derive(Default)]
struct Sums {
    addrs: u32,
    ports: u32,
    changed: bool,
}

impl Sums {
    /// One side: the address at `a` of the IP header, the port at `p` of
    /// the transport header (its first eight bytes are there), where they
    /// differ from the new ones. The old values are the packet's own.
    #[inline(always)]
    fn swap(
        &mut self,
        h: &mut [u8; 20],
        t: &mut [u8; 8],
        a: usize,
        p: usize,
        addr: u32,
        port: u16,
    ) {
        let old = u32::from_be_bytes([h[a], h[a + 1], h[a + 2], h[a + 3]]);
        if old != addr {
            h[a..a + 4].copy_from_slice(&addr.to_be_bytes());
            let n = !old;
            self.addrs += (n >> 16) + (n & 0xffff) + (addr >> 16) + (addr & 0xffff);
            self.changed = true;
        }
        let old = u16::from_be_bytes([t[p], t[p + 1]]);
        if old != port {
            t[p..p + 2].copy_from_slice(&port.to_be_bytes());
            self.ports += (!old) as u32 + port as u32;
            self.changed = true;
        }
    }
}

/// The answer `block return`, `return-rst` and `return-icmp` send for a
/// blocked packet (pf.conf(5) "block return"): a RST for TCP, an ICMP or
/// ICMPv6 unreachable for others, nothing for RSTs and ICMP errors. The
/// answer is sent from the blocked packet's destination.
pub fn return_packet(ip: &[u8], info: &IpInfo, p: BlockPolicy) -> Option<Vec<u8>> {
    use palisade_wire::build;
    let v6 = info.is_v6();
    // No answer to a packet for a group (multicast, the limited
    // broadcast), nor to a source that is not one host: the answer would
    // come from the group, or go to many (RFC 1122 3.2.2, RFC 4443 2.4).
    let not_one = |a: &IpAddr| match a {
        IpAddr::V4(a) => a.is_multicast() || a.is_broadcast() || a.is_unspecified(),
        IpAddr::V6(a) => a.is_multicast() || a.is_unspecified(),
    };
    if not_one(&info.dst) || not_one(&info.src) {
        return None;
    }
    let rst = |ttl: u8| -> Option<Vec<u8>> {
        let L4::Tcp {
            sport,
            dport,
            seq,
            ack,
            flags,
            header_len,
            ..
        } = info.l4
        else {
            return None;
        };
        if flags & 0x04 != 0 {
            return None;
        }
        let mut len = payload_len(info, header_len);
        if flags & 0x02 != 0 {
            len += 1;
        }
        if flags & 0x01 != 0 {
            len += 1;
        }
        let (s, a, f) = if flags & 0x10 != 0 {
            (ack, 0, 0x04)
        } else {
            (0, seq.wrapping_add(len), 0x14)
        };
        let t = build::tcp(dport, sport, s, a, f, 0, &[], &[]);
        Some(build::ip(
            info.dst,
            info.src,
            6,
            if ttl == 0 { 64 } else { ttl },
            &t,
        ))
    };
    let icmp = |(ty, code): (u8, u8)| -> Option<Vec<u8>> {
        // As pf_return: ICMP is answered only for its query and reply
        // types (echo, timestamp, router and mask messages: ICMP_INFOTYPE),
        // ICMPv6 only from echo request (128) up, redirects excepted;
        // never an error, nor a type pf does not know as a query.
        let answered = match info.l4 {
            L4::Icmp { ty, .. } => matches!(ty, 0 | 8 | 9 | 10 | 13 | 14 | 15 | 16 | 17 | 18),
            L4::Icmp6 { ty, .. } => ty >= 128 && ty != 137,
            _ => true,
        };
        if !answered {
            return None;
        }
        // Quote the IP header and the first 8 bytes (IPv4), or as much as
        // keeps the answer within the IPv6 minimum MTU.
        let quote = if v6 {
            &ip[..info.len.min(1280 - 48)]
        } else {
            &ip[..(info.l4_offset + 8).min(info.len)]
        };
        let proto = if v6 { 58 } else { 1 };
        Some(build::ip(
            info.dst,
            info.src,
            proto,
            64,
            &build::icmp(ty, code, [0; 4], quote),
        ))
    };
    let default_icmp = if v6 { (1u8, 4u8) } else { (3u8, 3u8) };
    match p {
        BlockPolicy::Drop => None,
        BlockPolicy::ReturnRst { ttl } => rst(ttl),
        BlockPolicy::Return => {
            if info.proto == 6 {
                rst(0)
            } else {
                icmp(default_icmp)
            }
        }
        // return-icmp answers with ICMP even for TCP.
        BlockPolicy::ReturnIcmp { v4, v6: c6 } => icmp(if v6 { c6 } else { v4 }),
    }
}

/// The pflog records (header + the packet as it arrived) a decision asks
/// for: one per rule matched under `log (matches)`, then the deciding
/// rule's when it logs. `pkt` is the packet before translation.
///
/// A rule inside an anchor is logged as pf logs it: `rulenr` the number
/// of the `anchor` rule that called the anchor (`caller`, from
/// `Engine::anchor_caller`), `subrulenr` the rule's number inside it,
/// `ruleset` the anchor's own name (its last component); tcpdump prints
/// `rule 4.NAME.0/`. A rule of the main ruleset: its number, no subrule.
pub fn pflog_records(
    d: &Decision,
    pkt: &[u8],
    iface: &str,
    dir: Direction,
    caller: &dyn Fn(&str) -> Option<u32>,
) -> Vec<Vec<u8>> {
    use crate::packet::MatchAction;
    use palisade_wire::pflog::*;
    if !d.log && d.log_matched.is_empty() {
        return Vec::new();
    }
    let mut records: Vec<(Option<&RuleRef>, u8)> = d
        .log_matched
        .iter()
        .map(|(r, a)| {
            let a = match a {
                MatchAction::Pass => action::PASS,
                MatchAction::Block => action::DROP,
                MatchAction::Match => action::MATCH,
            };
            (Some(r), a)
        })
        .collect();
    let final_action = if d.action == VerdictAction::Pass {
        action::PASS
    } else {
        action::DROP
    };
    if d.log && !records.iter().any(|(r, _)| *r == d.rule.as_ref()) {
        records.push((d.rule.as_ref(), final_action));
    }
    records
        .into_iter()
        .map(|(rule, act)| {
            let (ruleset, rulenr, subrulenr) = match rule {
                Some(r) if !r.anchor.is_empty() => (
                    r.anchor.rsplit('/').next().unwrap_or("").to_string(),
                    caller(&r.anchor).unwrap_or(u32::MAX),
                    r.nr,
                ),
                Some(r) => (String::new(), r.nr, u32::MAX),
                None => (String::new(), u32::MAX, u32::MAX),
            };
            let h = PflogHeader {
                af: if pkt.first().is_some_and(|b| b >> 4 == 6) {
                    AF_INET6
                } else {
                    AF_INET
                },
                action: act,
                reason: d.reason.code(),
                ifname: iface.to_string(),
                ruleset,
                rulenr,
                subrulenr,
                dir: if dir == Direction::In { 1 } else { 2 },
                rewritten: d.nat.is_some(),
            };
            let mut rec = h.emit();
            rec.extend_from_slice(pkt);
            rec
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_wire::build;

    /// The IPv4 TCP/UDP lane of `apply` writes exactly what the general
    /// rewrite does, and leaves valid checksums: every combination of
    /// changed source, destination, ports, on TCP, UDP and UDP without a
    /// checksum, over addresses that stress the carries.
    #[test]
    fn the_ipv4_lane_rewrites_as_the_general_path_does() {
        let addrs: [u32; 5] = [0xc000_0201, 0xffff_ffff, 0, 0xcb00_7109, 0x0001_ffff];
        let ports: [u16; 4] = [80, 0xffff, 0, 40000];
        let v4 = |a: u32| IpAddr::V4(std::net::Ipv4Addr::from(a));
        let (mut checked, mut skipped) = (0, 0);
        for proto in [6u8, 17, 0] {
            for (i, &s) in addrs.iter().enumerate() {
                let d = addrs[(i + 3) % addrs.len()];
                for (j, &sp) in ports.iter().enumerate() {
                    let dp = ports[(j + 1) % ports.len()];
                    if proto != 6 && dp == 0 {
                        // UDP to port 0: dropped before pf (parse_ip).
                        skipped += 5;
                        continue;
                    }
                    let l4 = match proto {
                        6 => build::tcp(sp, dp, 1000, 2000, 0x10, 512, &[], b"payload!"),
                        _ => build::udp(sp, dp, b"payload"),
                    };
                    let mut pkt =
                        build::ip(v4(s), v4(d), if proto == 0 { 17 } else { proto }, 64, &l4);
                    if proto == 0 {
                        // UDP without a checksum (IPv4 allows it).
                        pkt[26] = 0;
                        pkt[27] = 0;
                    }
                    let info = parse_ip(&pkt).unwrap();
                    let from = FlowKey {
                        proto: info.proto,
                        src: v4(s),
                        dst: v4(d),
                        sport: sp,
                        dport: dp,
                    };
                    for (ts, td, tsp, tdp) in [
                        (addrs[(i + 1) % 5], d, ports[(j + 2) % 4], dp),
                        (s, addrs[(i + 2) % 5], sp, ports[(j + 3) % 4]),
                        (addrs[(i + 4) % 5], addrs[(i + 1) % 5], sp, dp),
                        (s, d, sp, dp),
                        (s, d, ports[(j + 2) % 4], ports[(j + 3) % 4]),
                    ] {
                        let to = FlowKey {
                            proto: info.proto,
                            src: v4(ts),
                            dst: v4(td),
                            sport: tsp,
                            dport: tdp,
                        };
                        if proto != 6 && tdp == 0 {
                            skipped += 1;
                            continue;
                        }
                        let mut lane = pkt.clone();
                        assert!(apply_v4_ports(&mut lane, &info, &from, &to));
                        let mut general = pkt.clone();
                        let src = (from.src != to.src || from.sport != to.sport)
                            .then_some((to.src, to.sport));
                        let dst = (from.dst != to.dst || from.dport != to.dport)
                            .then_some((to.dst, to.dport));
                        palisade_wire::rewrite::rewrite(&mut general, &info, src, dst);
                        assert_eq!(lane, general, "{from:?} -> {to:?}");
                        let after = parse_ip(&lane).unwrap();
                        assert_eq!((after.src, after.dst), (to.src, to.dst));
                        assert_eq!((after.sport(), after.dport()), (Some(tsp), Some(tdp)));
                        if proto == 0 {
                            assert_eq!(&lane[26..28], &[0, 0], "no checksum stays none");
                        } else {
                            assert!(build::checksums_ok(&lane), "{from:?} -> {to:?}");
                        }
                        checked += 1;
                    }
                }
            }
        }
        assert_eq!(checked + skipped, 3 * 5 * 4 * 5);
        assert!(checked > 200, "{checked}");
    }

    /// Not the lane's: IPv6, ICMP, fragments go the general way.
    #[test]
    fn the_ipv4_lane_leaves_the_rest_to_the_general_path() {
        let six = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut p6 = build::ip(
            six("2001:db8::1"),
            six("2001:db8::2"),
            6,
            64,
            &build::tcp(1, 2, 0, 0, 0x10, 1, &[], &[]),
        );
        let info = parse_ip(&p6).unwrap();
        let k = |a: &str, b: &str| FlowKey {
            proto: 6,
            src: six(a),
            dst: six(b),
            sport: 1,
            dport: 2,
        };
        let before = p6.clone();
        assert!(!apply_v4_ports(
            &mut p6,
            &info,
            &k("2001:db8::1", "2001:db8::2"),
            &k("2001:db8::9", "2001:db8::2")
        ));
        assert_eq!(p6, before);
        let mut frag = build::ip(
            six("192.0.2.1"),
            six("192.0.2.2"),
            17,
            64,
            &build::udp(1, 2, b"x"),
        );
        frag[6] = 0x20; // more fragments
        let info = parse_ip(&frag).unwrap();
        let before = frag.clone();
        let from = FlowKey {
            proto: 17,
            ..k("192.0.2.1", "192.0.2.2")
        };
        let to = FlowKey {
            proto: 17,
            ..k("198.51.100.1", "192.0.2.2")
        };
        assert!(!apply_v4_ports(&mut frag, &info, &from, &to));
        assert_eq!(frag, before);
    }
}
