//! The normalized ruleset: what `palisade check` prints and what the packet
//! filter consumes.
//!
//! Every list in the source has been expanded (one `Rule` per combination, as
//! pfctl loads them), macros are gone, interface names used as addresses are
//! resolved, defaults pfctl applies (`flags S/SA`, `keep state`, block policy,
//! adaptive timeouts...) are explicit. Each rule keeps the source line it came
//! from. Nothing here touches the network or the clock.

use std::net::IpAddr;

/// How deeply anchors may nest, counting the components of an anchor's
/// path and inline anchors inside it: pf's anchor stack
/// (PF_ANCHOR_STACK_MAX), beyond which pf evaluates nothing. The parser
/// refuses deeper rulesets, so nothing that walks a ruleset (compiling,
/// printing, listing, evaluating) goes deeper.
pub const MAX_ANCHOR_DEPTH: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Af {
    Inet,
    Inet6,
}

impl Af {
    pub fn of(ip: &IpAddr) -> Af {
        match ip {
            IpAddr::V4(_) => Af::Inet,
            IpAddr::V6(_) => Af::Inet6,
        }
    }
    pub fn max_bits(self) -> u8 {
        match self {
            Af::Inet => 32,
            Af::Inet6 => 128,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Af::Inet => "inet",
            Af::Inet6 => "inet6",
        }
    }
}

/// Modifiers of an interface used as an address: `:network`, `:broadcast`,
/// `:peer`, `:0`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct IfMods {
    pub network: bool,
    pub broadcast: bool,
    pub peer: bool,
    pub noalias: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Addr {
    /// `any`: no address family.
    Any,
    /// An address with a prefix length; the address is already masked.
    /// `0.0.0.0/0` prints as `any` but keeps its family.
    Net {
        ip: IpAddr,
        bits: u8,
    },
    /// `a - b`
    Range {
        lo: IpAddr,
        hi: IpAddr,
    },
    /// `(ifname[:mods])[/bits]`: follows the interface's addresses at run time.
    Dynamic {
        ifname: String,
        mods: IfMods,
        bits: Option<u8>,
    },
    Table(String),
    NoRoute,
    UrpfFailed,
    RouteLabel(String),
}

impl Addr {
    pub fn af(&self) -> Option<Af> {
        match self {
            Addr::Net { ip, .. } => Some(Af::of(ip)),
            Addr::Range { lo, .. } => Some(Af::of(lo)),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AddrSpec {
    pub neg: bool,
    pub addr: Addr,
}

impl AddrSpec {
    pub fn any() -> Self {
        AddrSpec {
            neg: false,
            addr: Addr::Any,
        }
    }
}

/// Port, uid and gid comparisons.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpOp {
    Eq(u32),
    Ne(u32),
    Lt(u32),
    Le(u32),
    Gt(u32),
    Ge(u32),
    /// `a >< b`: strictly between.
    InsideExcl(u32, u32),
    /// `a <> b`: outside.
    Outside(u32, u32),
    /// `a:b`: inclusive range.
    Range(u32, u32),
}

impl CmpOp {
    /// `user` / `group`: a packet without a socket has the unknown id
    /// (u32::MAX, `user unknown`), which only `=` and `!=` compare, as
    /// pf's pf_match_uid does (`user > 1000` does not match it).
    pub fn matches_id(&self, v: u32) -> bool {
        if v == u32::MAX && !matches!(self, CmpOp::Eq(_) | CmpOp::Ne(_)) {
            return false;
        }
        self.matches(v)
    }

    pub fn matches(&self, v: u32) -> bool {
        match *self {
            CmpOp::Eq(a) => v == a,
            CmpOp::Ne(a) => v != a,
            CmpOp::Lt(a) => v < a,
            CmpOp::Le(a) => v <= a,
            CmpOp::Gt(a) => v > a,
            CmpOp::Ge(a) => v >= a,
            CmpOp::InsideExcl(a, b) => v > a && v < b,
            CmpOp::Outside(a, b) => v < a || v > b,
            CmpOp::Range(a, b) => v >= a && v <= b,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Endpoint {
    pub addr: AddrSpec,
    pub port: Option<CmpOp>,
}

impl Endpoint {
    pub fn any() -> Self {
        Endpoint {
            addr: AddrSpec::any(),
            port: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BlockPolicy {
    Drop,
    /// `block return`: RST for TCP, ICMP unreachable otherwise.
    Return,
    ReturnRst {
        ttl: u8,
    },
    /// `return-icmp`/`return-icmp6`: (type, code) for IPv4 and IPv6.
    ReturnIcmp {
        v4: (u8, u8),
        v6: (u8, u8),
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Pass,
    Block(BlockPolicy),
    Match,
    /// `anchor`, `nat-anchor`, `rdr-anchor`, `binat-anchor`.
    Anchor(AnchorKind),
    /// Older translation syntax (`nat`, `rdr`, `binat`, with `->`).
    /// Translation happens before filtering; the first match wins.
    LegacyNat {
        no: bool,
    },
    LegacyRdr {
        no: bool,
    },
    LegacyBinat {
        no: bool,
    },
    /// Older `scrub` rule.
    LegacyScrub,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AnchorKind {
    Filter,
    Nat,
    Rdr,
    Binat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    In,
    Out,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct LogOpts {
    pub all: bool,
    pub matches: bool,
    pub user: bool,
    pub to: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeepState {
    None,
    Keep,
    Modulate,
    Synproxy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SourceTrack {
    Rule,
    Global,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct StateOpts {
    pub max: Option<u32>,
    pub no_sync: bool,
    pub pflow: bool,
    pub source_track: Option<SourceTrack>,
    pub max_src_states: Option<u32>,
    pub max_src_conn: Option<u32>,
    pub max_src_conn_rate: Option<(u32, u32)>,
    pub max_src_nodes: Option<u32>,
    pub overload: Option<Overload>,
    pub if_bound: bool,
    pub floating: bool,
    pub sloppy: bool,
    /// Per-rule timeouts, in `Timeout::ALL` order.
    pub timeouts: Vec<(Timeout, u32)>,
}

impl StateOpts {
    pub fn is_empty(&self) -> bool {
        *self == StateOpts::default()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Overload {
    pub table: String,
    pub flush: bool,
    pub global: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timeout {
    TcpFirst,
    TcpOpening,
    TcpEstablished,
    TcpClosing,
    TcpFinWait,
    TcpClosed,
    /// TCP timestamps' allowed difference (pf's scrub reassemble tcp):
    /// parsed and shown, not enforced.
    TcpTsDiff,
    UdpFirst,
    UdpSingle,
    UdpMultiple,
    IcmpFirst,
    IcmpError,
    OtherFirst,
    OtherSingle,
    OtherMultiple,
    Frag,
    Interval,
    AdaptiveStart,
    AdaptiveEnd,
    SrcTrack,
}

impl Timeout {
    /// In pf's PFTM_* numbering (a state's timeout crosses pfsync and
    /// the state file by its index here): tcp.tsdiff is the last, 19.
    pub const ALL: [Timeout; 20] = [
        Timeout::TcpFirst,
        Timeout::TcpOpening,
        Timeout::TcpEstablished,
        Timeout::TcpClosing,
        Timeout::TcpFinWait,
        Timeout::TcpClosed,
        Timeout::UdpFirst,
        Timeout::UdpSingle,
        Timeout::UdpMultiple,
        Timeout::IcmpFirst,
        Timeout::IcmpError,
        Timeout::OtherFirst,
        Timeout::OtherSingle,
        Timeout::OtherMultiple,
        Timeout::Frag,
        Timeout::Interval,
        Timeout::AdaptiveStart,
        Timeout::AdaptiveEnd,
        Timeout::SrcTrack,
        Timeout::TcpTsDiff,
    ];

    /// The order pfctl -st prints them in.
    pub const SHOWN: [Timeout; 20] = [
        Timeout::TcpFirst,
        Timeout::TcpOpening,
        Timeout::TcpEstablished,
        Timeout::TcpClosing,
        Timeout::TcpFinWait,
        Timeout::TcpClosed,
        Timeout::TcpTsDiff,
        Timeout::UdpFirst,
        Timeout::UdpSingle,
        Timeout::UdpMultiple,
        Timeout::IcmpFirst,
        Timeout::IcmpError,
        Timeout::OtherFirst,
        Timeout::OtherSingle,
        Timeout::OtherMultiple,
        Timeout::Frag,
        Timeout::Interval,
        Timeout::AdaptiveStart,
        Timeout::AdaptiveEnd,
        Timeout::SrcTrack,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Timeout::TcpFirst => "tcp.first",
            Timeout::TcpOpening => "tcp.opening",
            Timeout::TcpEstablished => "tcp.established",
            Timeout::TcpClosing => "tcp.closing",
            Timeout::TcpFinWait => "tcp.finwait",
            Timeout::TcpClosed => "tcp.closed",
            Timeout::TcpTsDiff => "tcp.tsdiff",
            Timeout::UdpFirst => "udp.first",
            Timeout::UdpSingle => "udp.single",
            Timeout::UdpMultiple => "udp.multiple",
            Timeout::IcmpFirst => "icmp.first",
            Timeout::IcmpError => "icmp.error",
            Timeout::OtherFirst => "other.first",
            Timeout::OtherSingle => "other.single",
            Timeout::OtherMultiple => "other.multiple",
            Timeout::Frag => "frag",
            Timeout::Interval => "interval",
            Timeout::AdaptiveStart => "adaptive.start",
            Timeout::AdaptiveEnd => "adaptive.end",
            Timeout::SrcTrack => "src.track",
        }
    }
    pub fn from_name(s: &str) -> Option<Timeout> {
        Timeout::ALL.iter().copied().find(|t| t.name() == s)
    }
    /// pf's default, in seconds (pf.conf(5) "set timeout").
    pub fn default_secs(self) -> u32 {
        match self {
            Timeout::TcpFirst => 120,
            Timeout::TcpOpening => 30,
            Timeout::TcpEstablished => 24 * 3600,
            Timeout::TcpClosing => 900,
            Timeout::TcpFinWait => 45,
            Timeout::TcpClosed => 90,
            Timeout::TcpTsDiff => 30,
            Timeout::UdpFirst => 60,
            Timeout::UdpSingle => 30,
            Timeout::UdpMultiple => 60,
            Timeout::IcmpFirst => 20,
            Timeout::IcmpError => 10,
            Timeout::OtherFirst => 60,
            Timeout::OtherSingle => 30,
            Timeout::OtherMultiple => 60,
            Timeout::Frag => 60,
            Timeout::Interval => 10,
            Timeout::AdaptiveStart => 0,
            Timeout::AdaptiveEnd => 0,
            Timeout::SrcTrack => 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PoolType {
    None,
    Bitmask,
    Random,
    SourceHash([u8; 16]),
    RoundRobin,
    LeastStates,
}

/// A translation or routing target: addresses plus how to pick one.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Pool {
    pub addr: Addr,
    /// For route-to/reply-to/dup-to: the interface to send through.
    pub ifname: Option<String>,
    /// nat-to: source port range; rdr-to: destination port (range).
    pub port: Option<(u16, u16)>,
    pub kind: PoolType,
    pub sticky: bool,
    /// nat-to: keep the source port (`static-port`).
    pub static_port: bool,
    /// FreeBSD `map-e-portset psid-offset/psid-len/psid`.
    pub map_e: Option<(u8, u8, u16)>,
    /// Several addresses were given in braces (legacy syntax prints them so).
    /// Shared by the rules the list's rule expands into, which may be many.
    pub list: Option<std::sync::Arc<[Addr]>>,
    /// rdr-to with a port range: the first port of the rule's destination
    /// range, which maps onto the first port of `port`.
    pub port_base: Option<u16>,
    /// A list of routing targets that name interfaces of their own
    /// (`route-to { (em0 192.0.2.1) (em1 198.51.100.1) }`, as pf keeps an
    /// interface with each entry of the list's table): each entry's
    /// address and interface. The hop chosen leaves by its entry's
    /// interface; an entry without one by the routing table's way.
    pub hop_ifnames: Option<std::sync::Arc<[(Addr, String)]>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteKind {
    RouteTo,
    ReplyTo,
    DupTo,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Divert {
    To { addr: IpAddr, port: u16 },
    Reply,
    Packet { port: u16 },
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Scrub {
    pub no_df: bool,
    pub random_id: bool,
    pub min_ttl: Option<u8>,
    pub max_mss: Option<u16>,
    pub reassemble_tcp: bool,
    /// Older `scrub` rules: `fragment reassemble` etc.
    pub fragment: Option<String>,
}

impl Scrub {
    pub fn is_empty(&self) -> bool {
        *self == Scrub::default()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SetOpts {
    pub prio: Option<(u8, u8)>,
    pub queue: Option<(String, Option<String>)>,
    pub tos: Option<u8>,
    pub delay: Option<u16>,
}

impl SetOpts {
    pub fn is_empty(&self) -> bool {
        *self == SetOpts::default()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IcmpSpec {
    pub v6: bool,
    pub ty: u8,
    pub code: Option<u8>,
}

/// One loaded rule, after expansion.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    pub action: Action,
    pub dir: Option<Direction>,
    pub log: Option<LogOpts>,
    pub quick: bool,
    /// `on [!] ifname` (an interface or a group).
    pub ifname: Option<(bool, String)>,
    pub rdomain: Option<u32>,
    pub af: Option<Af>,
    pub proto: Option<u8>,
    pub src: Endpoint,
    pub dst: Endpoint,
    /// `os "..."` fingerprint class.
    pub os: Option<String>,
    pub received_on: Option<(bool, String)>,
    pub user: Option<CmpOp>,
    pub group: Option<CmpOp>,
    /// TCP flags (bits of FSRPAUEW) and mask.
    pub flags: Option<(u8, u8)>,
    pub icmp: Option<IcmpSpec>,
    pub tos: Option<u8>,
    /// `prio N`: only packets of this queueing priority (a match
    /// criterion; `set prio` assigns one).
    pub prio: Option<u8>,
    pub scrub: Scrub,
    pub set: SetOpts,
    pub keep_state: KeepState,
    /// pfctl prints `keep state` only when the user wrote it with options.
    pub probability: Option<u32>,
    pub state_opts: StateOpts,
    pub fragment: bool,
    pub allow_opts: bool,
    pub label: Option<String>,
    /// FreeBSD's `ridentifier N` (pfSense writes one on every rule): a
    /// number that names the rule across reloads, in listings and logs.
    pub ridentifier: Option<u32>,
    /// FreeBSD's dummynet limiters: `dnpipe N`, `dnqueue N`, or `(N, M)`
    /// for the two directions; `true` for a pipe, `false` a queue.
    pub dummynet: Option<(bool, u16, Option<u16>)>,
    pub once: bool,
    pub tag: Option<String>,
    pub tagged: Option<(bool, String)>,
    pub max_pkt_rate: Option<(u32, u32)>,
    pub rtable: Option<u32>,
    pub divert: Option<Divert>,
    pub nat: Option<Pool>,
    pub rdr: Option<Pool>,
    pub af_to: Option<(Af, Pool, Option<Pool>)>,
    pub route: Option<(RouteKind, Pool)>,
    /// Older syntax: `nat pass`/`rdr pass` also pass the packet.
    pub legacy_pass: bool,
    /// Anchor name (None for an unnamed inline anchor).
    pub anchor_name: Option<String>,
    /// Rules of an inline anchor `{ ... }`.
    pub inline: Option<Ruleset>,
    /// Source position: (file name, line).
    pub file: String,
    pub line: u32,
}

impl Rule {
    /// Every table name the rule refers to (addresses, pools, `overload`),
    /// not those of an inline anchor's rules.
    pub fn for_each_table_mut(&mut self, f: &mut dyn FnMut(&mut String)) {
        for a in [&mut self.src.addr.addr, &mut self.dst.addr.addr] {
            if let Addr::Table(t) = a {
                f(t);
            }
        }
        let pools = [self.nat.as_mut(), self.rdr.as_mut()]
            .into_iter()
            .flatten()
            .chain(self.route.as_mut().map(|(_, p)| p))
            .chain(
                self.af_to
                    .iter_mut()
                    .flat_map(|(_, a, b)| std::iter::once(a).chain(b.as_mut())),
            );
        for p in pools {
            if let Addr::Table(t) = &mut p.addr {
                f(t);
            }
            // A list's tables (`-> { <t>, 198.51.100.1 }`).
            if let Some(list) = &mut p.list {
                if list.iter().any(|a| matches!(a, Addr::Table(_))) {
                    let mut v = list.to_vec();
                    for a in &mut v {
                        if let Addr::Table(t) = a {
                            f(t);
                        }
                    }
                    *list = v.into();
                }
            }
        }
        if let Some(o) = &mut self.state_opts.overload {
            f(&mut o.table);
        }
    }

    pub fn new(action: Action, file: &str, line: u32) -> Rule {
        Rule {
            action,
            dir: None,
            log: None,
            quick: false,
            ifname: None,
            rdomain: None,
            af: None,
            proto: None,
            src: Endpoint::any(),
            dst: Endpoint::any(),
            os: None,
            received_on: None,
            user: None,
            group: None,
            flags: None,
            icmp: None,
            tos: None,
            prio: None,
            scrub: Scrub::default(),
            set: SetOpts::default(),
            keep_state: KeepState::None,
            probability: None,
            state_opts: StateOpts::default(),
            fragment: false,
            allow_opts: false,
            label: None,
            ridentifier: None,
            dummynet: None,
            once: false,
            tag: None,
            tagged: None,
            max_pkt_rate: None,
            rtable: None,
            divert: None,
            nat: None,
            rdr: None,
            af_to: None,
            route: None,
            legacy_pass: false,
            anchor_name: None,
            inline: None,
            file: file.to_string(),
            line,
        }
    }

    pub fn is_anchor(&self) -> bool {
        matches!(self.action, Action::Anchor(_))
    }

    pub fn is_legacy_translation(&self) -> bool {
        matches!(
            self.action,
            Action::LegacyNat { .. } | Action::LegacyRdr { .. } | Action::LegacyBinat { .. }
        )
    }
}

/// A ruleset: the main one or an anchor's.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Ruleset {
    pub rules: Vec<Rule>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TableEntry {
    pub neg: bool,
    pub addr: Addr,
}

/// One `{ ... }` list or `file "..."` in a table definition, in source order.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum TableInit {
    Inline(Vec<TableEntry>),
    File {
        path: String,
        entries: Vec<TableEntry>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Table {
    pub name: String,
    /// The `load anchor` whose file defined it ("" for pf.conf's own):
    /// pf makes an anchor's tables its own (see
    /// `Config::anchor_tables_scoped`).
    pub anchor: String,
    pub persist: bool,
    pub constant: bool,
    pub counters: bool,
    pub init: Vec<TableInit>,
    pub line: u32,
}

impl Table {
    pub fn entries(&self) -> impl Iterator<Item = &TableEntry> {
        self.init.iter().flat_map(|i| match i {
            TableInit::Inline(v) => v.iter(),
            TableInit::File { entries, .. } => entries.iter(),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Queue {
    pub name: String,
    pub ifname: Option<String>,
    pub parent: Option<String>,
    pub bandwidth: Option<u64>,
    pub min: Option<u64>,
    pub max: Option<u64>,
    /// `bandwidth X burst Y for Nms` (and likewise for `min`, `max`): the
    /// burst rate and how long it may last, in milliseconds (the curve's
    /// first segment, m1 and d, in pf's service curve).
    pub bandwidth_burst: Option<(u64, u32)>,
    pub min_burst: Option<(u64, u32)>,
    pub max_burst: Option<(u64, u32)>,
    pub flows: Option<u32>,
    pub quantum: Option<u32>,
    pub qlimit: Option<u32>,
    pub default: bool,
    pub line: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SyncookiesMode {
    Never,
    Always,
    Adaptive { start: String, end: String },
}

/// A `set` option, as written (in order).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum SetOption {
    Timeout(Timeout, u32),
    Limit(String, u32),
    Optimization(String),
    RulesetOptimization(String),
    LogInterface(Option<String>),
    HostId(u32),
    BlockPolicy(BlockPolicy),
    StatePolicy(String),
    StateDefaults(StateOpts),
    Fingerprints(String),
    Skip(Vec<String>),
    Debug(String),
    Reassemble {
        yes: bool,
        no_df: bool,
    },
    Syncookies(SyncookiesMode),
    /// FreeBSD's `set keepcounters`: rule counters kept across reloads.
    KeepCounters,
    /// FreeBSD's `set fail-policy`: what a rule that should pass a packet
    /// but cannot (no state or source node, an empty pool) does.
    FailPolicy(BlockPolicy),
}

/// A rule the parser accepted but Palisade does not enforce yet. `check`
/// warns about each one so nobody believes it is in force.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Unenforced {
    pub line: u32,
    pub what: String,
}

/// `load anchor NAME from FILE`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LoadAnchor {
    pub name: String,
    pub file: String,
    pub ruleset: Ruleset,
}

/// Everything one pf.conf defines.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Config {
    pub macros: Vec<(String, String)>,
    pub options: Vec<SetOption>,
    pub tables: Vec<Table>,
    pub queues: Vec<Queue>,
    pub main: Ruleset,
    pub load_anchors: Vec<LoadAnchor>,
}

impl Config {
    /// The configuration with each `load anchor` file's tables apart from
    /// pf.conf's, as pf keeps them: a table the file defines is named
    /// `ANCHOR/NAME`, and the file's rules refer to it by that name. A
    /// name the file does not define still means pf.conf's table.
    /// (Rules of an inline anchor inside the file see the file's tables
    /// too, as Palisade's inline anchors see pf.conf's; pf would look in
    /// the inline anchor's own tables, then in the main ruleset's.)
    /// Borrowed when no anchor file defines a table.
    pub fn anchor_tables_scoped(&self) -> std::borrow::Cow<'_, Config> {
        if self.tables.iter().all(|t| t.anchor.is_empty()) {
            return std::borrow::Cow::Borrowed(self);
        }
        let mut c = self.clone();
        for la in &mut c.load_anchors {
            let path = la.name.trim_start_matches('/');
            let own: std::collections::HashSet<&str> = self
                .tables
                .iter()
                .filter(|t| t.anchor == path)
                .map(|t| t.name.as_str())
                .collect();
            fn scope(rs: &mut Ruleset, path: &str, own: &std::collections::HashSet<&str>) {
                for r in &mut rs.rules {
                    r.for_each_table_mut(&mut |name| {
                        if own.contains(name.as_str()) {
                            *name = format!("{path}/{name}");
                        }
                    });
                    if let Some(inline) = &mut r.inline {
                        scope(inline, path, own);
                    }
                }
            }
            scope(&mut la.ruleset, path, &own);
        }
        for t in &mut c.tables {
            if !t.anchor.is_empty() {
                t.name = format!("{}/{}", t.anchor, t.name);
            }
        }
        std::borrow::Cow::Owned(c)
    }

    /// The effective value of a global timeout (the last `set timeout`, or pf's default).
    pub fn timeout(&self, t: Timeout) -> u32 {
        self.options
            .iter()
            .rev()
            .find_map(|o| match o {
                SetOption::Timeout(x, v) if *x == t => Some(*v),
                _ => None,
            })
            .unwrap_or(t.default_secs())
    }
}

#[cfg(test)]
mod timeout_numbers {
    use super::Timeout::{self, *};

    /// `Timeout::ALL` is pf's PFTM_* numbering (pfvar.h): pfsync and the
    /// state file carry a state's timeout as this number, so an entry
    /// out of place would restore or hand over states with another
    /// timeout.
    #[test]
    fn all_follows_pfs_numbers() {
        let pftm = [
            (TcpFirst, 0),
            (TcpOpening, 1),
            (TcpEstablished, 2),
            (TcpClosing, 3),
            (TcpFinWait, 4),
            (TcpClosed, 5),
            (UdpFirst, 6),
            (UdpSingle, 7),
            (UdpMultiple, 8),
            (IcmpFirst, 9),
            (IcmpError, 10),
            (OtherFirst, 11),
            (OtherSingle, 12),
            (OtherMultiple, 13),
            (Frag, 14),
            (Interval, 15),
            (AdaptiveStart, 16),
            (AdaptiveEnd, 17),
            (SrcTrack, 18),
            (TcpTsDiff, 19),
        ];
        for (t, n) in pftm {
            assert_eq!(
                Timeout::ALL.iter().position(|x| *x == t),
                Some(n),
                "{}",
                t.name()
            );
        }
        let mut shown = Timeout::SHOWN.to_vec();
        shown.sort();
        let mut all = Timeout::ALL.to_vec();
        all.sort();
        assert_eq!(shown, all, "SHOWN lists each once");
    }
}
