//! The compiled ruleset and its evaluation.
//!
//! Rules are compiled into flat predicates (addresses as masked integers,
//! dynamic addresses resolved against the current interfaces, tables by
//! index). Each ruleset carries a candidate index: for each of protocol,
//! destination port, source port, destination address, source address and
//! interface, the rules that can match a given value (a hash bucket), plus
//! the rules that do not constrain that field (a wildcard list). A packet's
//! candidates on one field are `wildcard ∪ bucket(value)`, a superset of the
//! rules that can match it; evaluation picks the field with the fewest
//! candidates and tests only those, in rule order. Because the candidate set
//! contains every matching rule and order is kept, last-match, `quick`,
//! `match` rules and tags behave exactly as in a linear walk; the
//! differential tests check this against `reference`. The cost depends on
//! how many rules can match a packet, not on how many rules there are.

use std::collections::BTreeMap;

// hashbrown's default hasher (foldhash) is several times cheaper than
// std's SipHash for the index's small keys, looked up for every new
// connection.
use hashbrown::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use palisade_conf::host::HostModel;
use palisade_conf::ir::*;

use crate::packet::*;
use crate::table::TableSet;

#[derive(Clone, Debug)]
enum CAddr {
    Any,
    /// (is_v6, network, mask) — IPv4 in the low 32 bits.
    Nets(Vec<(bool, u128, u128)>),
    Range(IpAddr, IpAddr),
    /// A table by name; in an anchor, the anchor's table of that name
    /// (`ANCHOR/NAME`) first when it exists (pf looks in the rule's
    /// ruleset, then in the main one), so that a table the anchor gets
    /// later (`palisade table A/NAME add`, an earlier `anchor A load`)
    /// is the one its rules read.
    Table(String, Option<String>),
    /// `no-route`: no route covers the address (the host model's table).
    NoRoute,
    /// `urpf-failed`: the route back to the address does not leave by
    /// the interface the packet is on.
    UrpfFailed,
    Never,
}

#[derive(Clone, Debug)]
struct CAddrSpec {
    neg: bool,
    addr: CAddr,
}

#[derive(Clone, Debug)]
enum Target {
    Inline(Box<CRuleset>),
    Named(String),
    Wildcard(String),
}

#[derive(Clone, Debug)]
enum Kind {
    Pass,
    Block(BlockPolicy),
    Match,
    Anchor(Target),
}

#[derive(Clone, Debug)]
struct CRule {
    nr: u32,
    kind: Kind,
    quick: bool,
    log: bool,
    log_all: bool,
    log_matches: bool,
    dir: Option<Direction>,
    iface: Option<(bool, String)>,
    af: Option<Af>,
    proto: Option<u8>,
    src: CAddrSpec,
    dst: CAddrSpec,
    sport: Option<CmpOp>,
    dport: Option<CmpOp>,
    os: Option<String>,
    user: Option<CmpOp>,
    group: Option<CmpOp>,
    flags: Option<(u8, u8)>,
    icmp: Option<IcmpSpec>,
    tos: Option<u8>,
    prio: Option<u8>,
    tagged: Option<(bool, String)>,
    tag: Option<String>,
    received_on: Option<(bool, String)>,
    probability: Option<u32>,
    never: bool,
    nat_pool: Option<Arc<Pool>>,
    rdr_pool: Option<Arc<Pool>>,
    route: Option<crate::packet::RoutePool>,
    allow_opts: bool,
    keep: KeepState,
    state_opts: Option<std::sync::Arc<StateOpts>>,
    scrub: ScrubActions,
    /// `once`: set when the rule has decided a packet; it then never matches.
    once: Option<Arc<std::sync::atomic::AtomicBool>>,
    /// `max-pkt-rate N/S`: the rule stops matching above N packets per S s.
    pkt_rate: Option<(u32, u32, Arc<std::sync::Mutex<PktRate>>)>,
    stats: Arc<RuleStats>,
}

/// pf's decaying packet counter for `max-pkt-rate`.
#[derive(Debug, Default)]
struct PktRate {
    count: u64,
    last_ms: u64,
}

impl PktRate {
    /// Count one packet; false when the rate is exceeded.
    fn admit(&mut self, now_ms: u64, limit: u32, seconds: u32) -> bool {
        let span = seconds.max(1) as u64 * 1000;
        let diff = now_ms.saturating_sub(self.last_ms);
        if diff >= span {
            self.count = 0;
        } else {
            self.count -= self.count * diff / span;
        }
        self.last_ms = now_ms;
        // As pf: every packet counts, and the rule stops matching once the
        // count goes over the limit.
        self.count += 1000;
        self.count <= limit as u64 * 1000
    }
}

fn key(ip: &IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(a) => (false, u32::from(*a) as u128),
        IpAddr::V6(a) => (true, u128::from(*a)),
    }
}

fn mask_of(v6: bool, bits: u8) -> u128 {
    let width = if v6 { 128 } else { 32 };
    let bits = bits.min(width) as u32;
    if bits == 0 {
        0
    } else if v6 {
        u128::MAX << (128 - bits)
    } else {
        ((u32::MAX as u128) << (32 - bits)) & 0xffff_ffff
    }
}

/// Index of the rules of one ruleset by one field.
#[derive(Clone, Debug, Default)]
struct FieldIndex<K: std::hash::Hash + Eq> {
    any: Vec<u32>,
    buckets: HashMap<K, Vec<u32>>,
}

impl<K: std::hash::Hash + Eq> FieldIndex<K> {
    fn add(&mut self, k: Option<K>, i: u32) {
        match k {
            Some(k) => self.buckets.entry(k).or_default().push(i),
            None => self.any.push(i),
        }
    }
    fn bucket(&self, k: &K) -> &[u32] {
        self.buckets.get(k).map(|v| v.as_slice()).unwrap_or(&[])
    }
}

/// The rules whose address is one prefix of a given family and length,
/// bucketed by masked network.
#[derive(Clone, Debug)]
struct PrefixLen {
    v6: bool,
    bits: u8,
    mask: u128,
    buckets: HashMap<u128, Vec<u32>>,
}

/// Prefix buckets per (family, prefix length).
#[derive(Clone, Debug, Default)]
struct PrefixIndex {
    any: Vec<u32>,
    lens: Vec<PrefixLen>,
}

impl PrefixIndex {
    fn add(&mut self, a: &CAddrSpec, i: u32) {
        if let (false, CAddr::Nets(n)) = (a.neg, &a.addr) {
            if n.len() == 1 {
                let (v6, net, mask) = n[0];
                let bits = mask.count_ones() as u8;
                let pos = match self.lens.iter().position(|l| l.v6 == v6 && l.bits == bits) {
                    Some(p) => p,
                    None => {
                        self.lens.push(PrefixLen {
                            v6,
                            bits,
                            mask,
                            buckets: HashMap::new(),
                        });
                        self.lens.len() - 1
                    }
                };
                self.lens[pos].buckets.entry(net).or_default().push(i);
                return;
            }
        }
        self.any.push(i);
    }

    fn candidates<'a>(&'a self, ip: &IpAddr, out: &mut Vec<&'a [u32]>) -> usize {
        let (v6, k) = key(ip);
        let mut n = self.any.len();
        out.push(&self.any);
        for l in &self.lens {
            if l.v6 == v6 {
                if let Some(v) = l.buckets.get(&(k & l.mask)) {
                    n += v.len();
                    out.push(v);
                }
            }
        }
        n
    }
}

#[derive(Clone, Debug, Default)]
struct Index {
    proto: FieldIndex<u8>,
    dport: FieldIndex<u16>,
    sport: FieldIndex<u16>,
    iface: FieldIndex<String>,
    dst: PrefixIndex,
    src: PrefixIndex,
}

/// Which way an older translation rule applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LegacyKind {
    /// `nat`: outbound, source translated.
    Nat,
    /// `rdr`: inbound, destination translated.
    Rdr,
    /// `binat`, outbound half: source translated.
    BinatOut,
    /// `binat`, inbound half: destination translated back.
    BinatIn,
}

/// An older-syntax translation rule (or a nat-/rdr-anchor call), with the
/// filter predicates of `CRule` for matching.
#[derive(Clone, Debug)]
struct LRule {
    m: CRule,
    kind: LegacyKind,
    /// `no nat` / `no rdr` / `no binat`.
    no: bool,
    pass: bool,
    pool: Option<Arc<Pool>>,
    /// A nat-anchor / rdr-anchor / binat-anchor call.
    anchor: Option<String>,
}

/// The result of older-syntax translation for one packet.
#[derive(Clone, Debug)]
pub struct LegacyHit {
    pub rule: RuleRef,
    pub kind: LegacyKind,
    pub no: bool,
    pub pass: bool,
    pub pool: Option<Arc<Pool>>,
    pub log: bool,
    pub stats: Arc<RuleStats>,
}

#[derive(Clone, Debug, Default)]
struct CRuleset {
    path: String,
    /// Some rule (here or in an inline anchor) matches on `os`.
    uses_os: bool,
    rules: Vec<CRule>,
    index: Index,
    /// Every rule's position, for rulesets small enough that walking them
    /// all costs less than consulting the index.
    all: Vec<u32>,
    legacy: Vec<LRule>,
    /// The older syntax's `scrub` rules (FreeBSD, pfSense), in order: the
    /// first that matches a packet gives its normalization, before the
    /// filter rules run (pf's scrub ruleset, first match).
    scrubs: Vec<CRule>,
    /// Every rule of the source ruleset, for `show rules`.
    listing: Vec<RuleListing>,
}

/// What changes at run time without a reload, shared by the compiled
/// rulesets that replace each other at reloads: the tables (`overload`,
/// `palisade table add`...) and the anchors loaded by `anchor load`
/// (ftp-proxy keeps one per session) or by pf.conf's `load anchor`.
/// Keeping them here, not inside a ruleset, is what lets a reload swap the
/// ruleset by pointer without copying them by hand.
pub struct Runtime {
    /// Readers take the lock for one lookup.
    tables: std::sync::RwLock<TableSet>,
    /// Each anchor is replaced as a whole (atomically, without touching
    /// the rest): evaluation takes its own reference.
    anchors: std::sync::RwLock<BTreeMap<String, Arc<CRuleset>>>,
    /// The anchors pf.conf's `load anchor` loaded: a reload replaces
    /// these, and keeps those loaded at run time.
    from_config: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Some loaded anchor matches on `os`.
    anchors_use_os: std::sync::atomic::AtomicBool,
    /// An inline anchor's rules were replaced (or flushed) at run time:
    /// evaluation looks for the replacement (else it runs the inline
    /// rules without a lookup).
    inline_replaced: std::sync::atomic::AtomicBool,
}

impl Runtime {
    /// Does a loaded anchor match on `os` (SYNs must be fingerprinted)?
    fn recount_os(&self, anchors: &BTreeMap<String, Arc<CRuleset>>) {
        self.anchors_use_os.store(
            anchors.values().any(|a| a.uses_os),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// The packet filter's ruleset, compiled and immutable, over the run-time
/// tables and anchors it shares with its predecessors and successors.
pub struct Engine {
    host: HostModel,
    main: CRuleset,
    runtime: Arc<Runtime>,
    /// The groups each interface belongs to (for `on GROUP`).
    groups: HashMap<String, Vec<String>>,
    /// Some rule of the main ruleset matches on `os`.
    uses_os: bool,
}

/// A ruleset compiled to replace a running one (`Engine::successor`):
/// the tables and `load anchor`s of its pf.conf take effect at `commit`.
pub struct Successor {
    engine: Engine,
    tables: TableSet,
    anchors: Vec<(String, Arc<CRuleset>)>,
}

impl Successor {
    /// Is `tab` (named `name`) a table an `anchor A load` made that this
    /// pf.conf's `load anchor A` replaces?
    fn replaces_loaded(&self, name: &str, tab: &crate::table::AddrTable) -> bool {
        tab.anchor_load
            && self
                .anchors
                .iter()
                .any(|(a, _)| crate::table::of_anchor(name, a))
    }

    /// How many tables there will be once committed: pf.conf's, and
    /// those made at run time that stay.
    pub fn tables_after(&self) -> usize {
        let t = self
            .engine
            .runtime
            .tables
            .read()
            .unwrap_or_else(|e| e.into_inner());
        let kept = t
            .tables
            .iter()
            .filter(|(n, tab)| {
                !self.tables.tables.contains_key(*n) && !self.replaces_loaded(n, tab)
            })
            .count();
        kept + self.tables.tables.len()
    }

    /// The ruleset's `set limit tables` (pf's 1,000 without it).
    pub fn tables_limit(&self) -> usize {
        self.tables.tables_limit()
    }

    /// Make the successor's tables and anchors current (pf.conf's tables
    /// replace those of the same name, their new entries stamped `now_s`
    /// and those they held before keeping their age, except those it
    /// defines without addresses, which keep their entries; tables created at
    /// run time stay; pf.conf's `load anchor`s replace those of the last
    /// pf.conf, anchors loaded at run time stay unless pf.conf loads one
    /// of the same name), and return the ruleset to swap in. Call it just
    /// before the swap, under the lock the swap takes.
    pub fn commit(self, now_s: u64) -> Arc<Engine> {
        let rt = &self.engine.runtime;
        {
            let mut t = rt.tables.write().unwrap_or_else(|e| e.into_inner());
            t.entries_limit = self.tables.entries_limit;
            t.tables_limit = self.tables.tables_limit;
            // pf.conf's `load anchor A` replaces what `anchor A load` put
            // there, the tables of its file too.
            t.tables
                .retain(|name, tab| !self.replaces_loaded(name, tab));
            for (name, mut tab) in self.tables.tables {
                // Defined without addresses: what the running table holds
                // stays (pfctl), only its flags are the new definition's.
                if self.tables.defined_empty.contains(&name) {
                    if let Some(old) = t.tables.get_mut(&name).filter(|o| !o.anchor_load) {
                        old.constant = tab.constant;
                        continue;
                    }
                }
                // Its entries that were there before keep their age
                // (`table expire`); the new ones date from now, as pf's
                // commit stamps only what it adds.
                tab.born = now_s;
                if let Some(old) = t.tables.get(&name) {
                    tab.keep_ages_of(old);
                }
                t.tables.insert(name, tab);
            }
        }
        {
            let mut from = rt.from_config.lock().unwrap_or_else(|e| e.into_inner());
            let mut a = rt.anchors.write().unwrap_or_else(|e| e.into_inner());
            for old in std::mem::take(&mut *from) {
                a.remove(&old);
            }
            // pf.conf defines its inline anchors again: what replaced
            // them at run time goes.
            fn inline_paths(rs: &CRuleset, out: &mut Vec<String>) {
                for r in &rs.rules {
                    if let Kind::Anchor(Target::Inline(c)) = &r.kind {
                        out.push(c.path.clone());
                        inline_paths(c, out);
                    }
                }
            }
            let mut inline = Vec::new();
            inline_paths(&self.engine.main, &mut inline);
            for p in &inline {
                a.remove(p);
            }
            for (p, c) in self.anchors {
                a.insert(p.clone(), c);
                from.insert(p);
            }
            rt.recount_os(&a);
        }
        Arc::new(self.engine)
    }
}

struct St {
    tag: Option<String>,
    decided: Option<crate::packet::Decided>,
    keep: (KeepState, Option<std::sync::Arc<StateOpts>>),
    log_all: bool,
    /// A `match` rule said `log (all)`.
    match_log_all: bool,
    /// The deciding rule logs.
    decided_log: bool,
    scrub: ScrubActions,
    decided_scrub: ScrubActions,
    decided_once: Option<Arc<std::sync::atomic::AtomicBool>>,
    decided_stats: Option<Arc<RuleStats>>,
    match_stats: Vec<Arc<RuleStats>>,
    log_matches_on: bool,
    log_matched: Vec<(RuleRef, MatchAction)>,
    nat: Option<(RuleRef, Arc<Pool>)>,
    rdr: Option<(RuleRef, Arc<Pool>)>,
    route: Option<(RuleRef, crate::packet::RoutePool)>,
    decided_allow_opts: bool,
    log: bool,
    evaluations: u32,
    /// The packet as the rules after a translating `match` rule see it
    /// (None: as it came).
    view: Option<Arc<PacketMeta>>,
}

/// What a `match` rule's nat-to / rdr-to gives a packet, for the rules
/// after it: pf translates at the match (pf_get_transaddr) and tests the
/// later rules against the translated addresses (`pd->nsaddr`,
/// `pd->ndaddr`), so that `match in ... rdr-to $web port 80` followed by
/// `pass in ... to $web port 80` passes the connection. The filter
/// answers with the address its pool will give (its round-robin position
/// and sticky addresses included); without one, `Stateless` answers from
/// the pool alone.
pub trait TransPreview {
    /// The address `pool` (of rule `rule`) gives `pkt`: its source's
    /// replacement when `source`, else its destination's.
    fn preview(
        &self,
        pool: &Pool,
        rule: &RuleRef,
        source: bool,
        pkt: &PacketMeta,
    ) -> Option<IpAddr>;
}

/// A preview from the pool alone: the first round-robin address, no
/// sticky address.
pub struct Stateless<'a>(pub &'a Engine);

impl TransPreview for Stateless<'_> {
    fn preview(
        &self,
        pool: &Pool,
        _rule: &RuleRef,
        source: bool,
        pkt: &PacketMeta,
    ) -> Option<IpAddr> {
        let nets = self.0.pool_nets(pool, pkt.af);
        if nets.is_empty() {
            return None;
        }
        let orig = if source { pkt.src } else { pkt.dst };
        Some(crate::filter::choose_addr(
            &nets, pool, &pkt.src, &orig, pkt.random, 0, None,
        ))
    }
}

/// `pkt` as a match rule's translation leaves it for the later rules:
/// the new source (nat-to; its port is chosen only when the state is
/// made, so the later rules see the old one), the new destination and
/// port (rdr-to).
pub(crate) fn translated_view(
    pkt: &PacketMeta,
    nat: Option<&Pool>,
    rdr: Option<&Pool>,
    rule: &RuleRef,
    pv: &dyn TransPreview,
) -> Option<PacketMeta> {
    let mut v = None::<PacketMeta>;
    if let Some(p) = nat {
        if let Some(a) = pv.preview(p, rule, true, pkt) {
            v.get_or_insert_with(|| pkt.clone()).src = a;
        }
    }
    if let Some(p) = rdr {
        // (With both on one rule, the destination is chosen for the
        // translated source, as the filter then translates it.)
        let seen = v.as_ref().unwrap_or(pkt);
        if let Some(a) = pv.preview(p, rule, false, seen) {
            let v = v.get_or_insert_with(|| pkt.clone());
            v.dst = a;
            if let Some(port) = v.dport.and_then(|d| crate::filter::rdr_port(p, d)) {
                v.dport = Some(port);
            }
        }
    }
    v
}

fn same_view(a: &Option<Arc<PacketMeta>>, b: &Option<Arc<PacketMeta>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => Arc::ptr_eq(x, y),
        _ => false,
    }
}

impl Engine {
    pub fn new(config: &Config, host: HostModel) -> Engine {
        Engine::new_at(config, host, 0)
    }

    /// As `new`, its tables loaded at `now_s` on the caller's clock (the
    /// daemon's starts days ahead: tables dated 0 would look that old to
    /// `table expire`).
    pub fn new_at(config: &Config, host: HostModel, now_s: u64) -> Engine {
        let runtime = Arc::new(Runtime {
            tables: std::sync::RwLock::new(TableSet::default()),
            anchors: Default::default(),
            from_config: Default::default(),
            anchors_use_os: Default::default(),
            inline_replaced: Default::default(),
        });
        let next = Engine::compile_over(config, host, runtime);
        let e = next.commit(now_s);
        Arc::try_unwrap(e).unwrap_or_else(|_| unreachable!("a new engine has one owner"))
    }

    /// A ruleset compiled from `config` to replace this one, over the same
    /// run-time tables and anchors: nothing changes until its `commit`.
    pub fn successor(&self, config: &Config) -> Successor {
        Engine::compile_over(config, self.host.clone(), self.runtime.clone())
    }

    fn compile_over(config: &Config, host: HostModel, runtime: Arc<Runtime>) -> Successor {
        let config = &*config.anchor_tables_scoped();
        let groups = host
            .interfaces
            .iter()
            .map(|i| (i.name.clone(), i.groups.clone()))
            .collect();
        let main = compile(&config.main, "", &host);
        let anchors = config
            .load_anchors
            .iter()
            .map(|la| {
                let p = la.name.trim_start_matches('/').to_string();
                let c = Arc::new(compile(&la.ruleset, &p, &host));
                (p, c)
            })
            .collect();
        Successor {
            engine: Engine {
                host,
                main,
                runtime,
                groups,
                uses_os: uses_os(&config.main),
            },
            tables: TableSet::from_config(config),
            anchors,
        }
    }

    /// Candidate networks of a translation pool for address family `af`
    /// (the older syntax keeps a list in the pool, `-> { a b }`: each of
    /// its addresses, in order).
    pub fn pool_nets(&self, pool: &Pool, af: Af) -> Vec<(IpAddr, u8)> {
        match &pool.list {
            Some(list) => list.iter().flat_map(|a| self.addr_nets(a, af)).collect(),
            None => self.addr_nets(&pool.addr, af),
        }
    }

    /// The networks of one pool address of family `af`.
    fn addr_nets(&self, addr: &Addr, af: Af) -> Vec<(IpAddr, u8)> {
        let fam = |ip: &IpAddr| Af::of(ip) == af;
        match addr {
            Addr::Net { ip, bits } if fam(ip) => vec![(*ip, *bits)],
            Addr::Table(t) => self
                .tables()
                .tables
                .get(t)
                .map(|tab| {
                    tab.entries()
                        .into_iter()
                        .filter(|(ip, _)| fam(ip))
                        .collect()
                })
                .unwrap_or_default(),
            Addr::Dynamic { ifname, mods, .. } => {
                let host = self.host();
                let ifs: Vec<_> = if ifname == "self" {
                    host.interfaces.iter().collect()
                } else {
                    host.members(ifname)
                };
                let mut v = Vec::new();
                for i in ifs {
                    for a in &i.addrs {
                        if fam(&a.ip) && !(af == Af::Inet6 && crate::filter::is_linklocal(&a.ip)) {
                            v.push((a.ip, af.max_bits()));
                            if mods.noalias {
                                break;
                            }
                        }
                    }
                }
                v
            }
            _ => Vec::new(),
        }
    }

    /// Does any rule match on the operating system?
    pub fn uses_os(&self) -> bool {
        self.uses_os
            || self
                .runtime
                .anchors_use_os
                .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn host(&self) -> &HostModel {
        &self.host
    }

    /// The tables, for reading (a lock is held while the guard lives).
    pub fn tables(&self) -> std::sync::RwLockReadGuard<'_, TableSet> {
        self.runtime
            .tables
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// The tables, for changing them in place.
    pub fn tables_mut(&self) -> std::sync::RwLockWriteGuard<'_, TableSet> {
        self.runtime
            .tables
            .write()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Add an address to a table at time `now_s` (seconds, the caller's
    /// clock, for `expire`), creating the table if needed (as pf does for
    /// `overload <t>`). Returns whether it was new; an address already
    /// matching keeps its entry and its age.
    pub fn table_add(&self, name: &str, addr: &Addr, now_s: u64) -> bool {
        let mut t = self.tables_mut();
        // No table made past `set limit tables` (pf's pool refuses it).
        if !t.tables.contains_key(name) && !t.room_for_table() {
            t.refused += 1;
            return false;
        }
        let full = !t.room_for(1);
        let tab = t
            .tables
            .entry(name.to_string())
            .or_insert_with(|| crate::table::AddrTable::born_at(now_s));
        let was = match addr {
            Addr::Net { ip, .. } => tab.contains(ip),
            _ => false,
        };
        if was {
            return false;
        }
        if full {
            // `set limit table-entries` reached: pf's pool refuses it.
            t.refused += 1;
            return false;
        }
        tab.insert_at(addr, false, now_s);
        true
    }

    fn anchors_read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<CRuleset>>> {
        self.runtime
            .anchors
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Replace the rules of one anchor (ftp-proxy keeps one per session),
    /// atomically; the rest of the ruleset is untouched and packets being
    /// evaluated keep the rules they started with.
    pub fn load_anchor(&self, path: &str, rules: &Ruleset) {
        let p = path.trim_start_matches('/').to_string();
        let c = Arc::new(compile(rules, &p, &self.host));
        let inline = self.inline_listing(&p).is_some();
        let mut from = self
            .runtime
            .from_config
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        from.remove(&p);
        let mut a = self
            .runtime
            .anchors
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if inline {
            self.runtime
                .inline_replaced
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        a.insert(p, c);
        self.runtime.recount_os(&a);
    }

    /// The rules listed for the inline anchor (`anchor "name" { ... }`)
    /// at `path`, defined in pf.conf or in an anchor loaded at run time.
    /// (Takes the anchors' lock: not to be called with it held.)
    fn inline_listing(&self, path: &str) -> Option<Vec<RuleListing>> {
        fn find<'a>(rs: &'a CRuleset, path: &str) -> Option<&'a CRuleset> {
            rs.rules.iter().find_map(|r| match &r.kind {
                Kind::Anchor(Target::Inline(c)) if c.path == path => Some(&**c),
                Kind::Anchor(Target::Inline(c)) if path.starts_with(&format!("{}/", c.path)) => {
                    find(c, path)
                }
                _ => None,
            })
        }
        if let Some(c) = find(&self.main, path) {
            return Some(c.listing.clone());
        }
        self.anchors_read()
            .values()
            .find_map(|rs| find(rs, path).map(|c| c.listing.clone()))
    }

    /// What runs for an inline anchor: its rules, unless they were
    /// replaced at run time (`anchor NAME load` or `flush`, as pfctl -a
    /// NAME replaces an anchor pf.conf defined inline).
    fn inline_or_replaced(&self, child: &CRuleset) -> Option<Arc<CRuleset>> {
        if !self
            .runtime
            .inline_replaced
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            return None;
        }
        self.anchor(&child.path)
    }

    /// Remove an anchor's rules; returns whether it had been loaded at run
    /// time (not by pf.conf).
    pub fn flush_anchor(&self, path: &str) -> bool {
        let p = path.trim_start_matches('/');
        let inline = self.inline_listing(p).is_some();
        let from_config = self
            .runtime
            .from_config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(p);
        let mut a = self
            .runtime
            .anchors
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let had = a.remove(p).is_some();
        if inline {
            // pf.conf's inline rules stay compiled: an empty replacement
            // stands for the flush until pf.conf is loaded again.
            a.insert(
                p.to_string(),
                Arc::new(compile(&Ruleset::default(), p, &self.host)),
            );
            self.runtime
                .inline_replaced
                .store(true, std::sync::atomic::Ordering::Relaxed);
            self.runtime.recount_os(&a);
            return true;
        }
        self.runtime.recount_os(&a);
        had && !from_config
    }

    /// The rules of the main ruleset (`""`) or of an anchor, with their
    /// counters; None when no such anchor is loaded. Inline anchors are
    /// found under their parent (`show rules` lists them nested).
    pub fn listing(&self, anchor: &str) -> Option<Vec<RuleListing>> {
        let a = anchor.trim_start_matches('/');
        if a.is_empty() {
            return Some(self.main.listing.clone());
        }
        self.anchor(a)
            .map(|c| c.listing.clone())
            .or_else(|| self.inline_listing(a))
    }

    /// What a state created by rule `r` takes from it: its state options
    /// and its counters (for a state imported from a peer, whose rule is
    /// named by anchor path and number). None when no such rule exists.
    pub fn rule_for_state(&self, r: &RuleRef) -> Option<(Option<Arc<StateOpts>>, Arc<RuleStats>)> {
        fn find(rs: &CRuleset, r: &RuleRef) -> Option<(Option<Arc<StateOpts>>, Arc<RuleStats>)> {
            if rs.path == r.anchor {
                if let Some(c) = rs.rules.iter().find(|c| c.nr == r.nr) {
                    return Some((c.state_opts.clone(), c.stats.clone()));
                }
                return rs
                    .listing
                    .get(r.nr as usize)
                    .map(|l| (None, l.stats.clone()));
            }
            rs.rules.iter().find_map(|c| match &c.kind {
                Kind::Anchor(Target::Inline(child)) if r.anchor.starts_with(&child.path) => {
                    find(child, r)
                }
                _ => None,
            })
        }
        let a = r.anchor.trim_start_matches('/');
        if a.is_empty() {
            return find(&self.main, r);
        }
        find(&self.main, r).or_else(|| self.anchors_read().values().find_map(|rs| find(rs, r)))
    }

    pub fn anchor_names(&self) -> Vec<String> {
        self.anchors_read().keys().cloned().collect()
    }

    /// The anchors the rulesets call by name (`anchor "spam"`), whether or
    /// not anything is loaded into them: pf makes each such ruleset when
    /// it loads the rule, so pfctl lists it (-sA), shows it empty and
    /// flushes it. Not the `PREFIX/*` calls, nor inline anchors.
    pub fn called_anchors(&self) -> Vec<String> {
        fn walk(rs: &CRuleset, out: &mut Vec<String>, depth: usize) {
            if depth > palisade_conf::MAX_ANCHOR_DEPTH {
                return;
            }
            for r in &rs.rules {
                match &r.kind {
                    Kind::Anchor(Target::Named(p)) => {
                        let p = p.trim_start_matches('/').to_string();
                        if !out.contains(&p) {
                            out.push(p);
                        }
                    }
                    Kind::Anchor(Target::Inline(c)) => walk(c, out, depth + 1),
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.main, &mut out, 0);
        for a in self.anchors_read().values() {
            walk(a, &mut out, 1);
        }
        out.sort();
        out
    }

    fn anchor(&self, path: &str) -> Option<Arc<CRuleset>> {
        self.anchors_read().get(path).cloned()
    }

    /// The direct children of `prefix/*`, in name order.
    fn anchor_children(&self, prefix: &str) -> Vec<Arc<CRuleset>> {
        let start = format!("{prefix}/");
        self.anchors_read()
            .range(start.clone()..)
            .take_while(|(p, _)| p.starts_with(&start))
            .filter(|(p, _)| !p[start.len()..].contains('/'))
            .map(|(_, a)| a.clone())
            .collect()
    }

    /// The number of the filter `anchor` rule that calls the anchor at
    /// `path`, in the ruleset that holds that rule (pflog's `rulenr` for
    /// a rule inside an anchor, as pf fills it): a rule naming the path,
    /// a `PREFIX/*` whose direct child it is, or an inline anchor. The
    /// first such rule, searching the main ruleset, its inline anchors
    /// and the loaded ones.
    pub fn anchor_caller(&self, path: &str) -> Option<u32> {
        fn calls(t: &Target, path: &str) -> bool {
            match t {
                Target::Named(p) => p == path,
                Target::Wildcard(prefix) => path
                    .strip_prefix(prefix.as_str())
                    .and_then(|r| r.strip_prefix('/'))
                    .is_some_and(|name| !name.is_empty() && !name.contains('/')),
                Target::Inline(c) => c.path == path,
            }
        }
        fn search(rs: &CRuleset, path: &str, depth: usize) -> Option<u32> {
            if depth > palisade_conf::MAX_ANCHOR_DEPTH {
                return None;
            }
            for r in &rs.rules {
                if let Kind::Anchor(t) = &r.kind {
                    if calls(t, path) {
                        return Some(r.nr);
                    }
                    if let Target::Inline(c) = t {
                        if let Some(n) = search(c, path, depth + 1) {
                            return Some(n);
                        }
                    }
                }
            }
            None
        }
        search(&self.main, path, 0).or_else(|| {
            self.anchors_read()
                .values()
                .find_map(|a| search(a, path, 1))
        })
    }

    /// Does the main ruleset call `target` (as written: `ftp-proxy/*`)
    /// from a `nat-anchor`, `rdr-anchor` or `binat-anchor` rule, the older
    /// syntax's translation anchors? (ftp-proxy asks, per session, which
    /// rules to load.)
    pub fn calls_translation_anchor(&self, target: &str) -> bool {
        self.main
            .legacy
            .iter()
            .any(|l| l.anchor.as_deref() == Some(target))
    }

    /// Does the ruleset use the older translation syntax?
    pub fn has_legacy(&self) -> bool {
        !self.main.legacy.is_empty() || self.anchors_read().values().any(|a| !a.legacy.is_empty())
    }

    /// Older-syntax translation (pf.conf(5) of FreeBSD: nat/rdr/binat):
    /// evaluated before filtering, first match wins; outbound packets try
    /// nat and binat, inbound ones rdr and binat.
    pub fn legacy_translate(&self, pkt: &PacketMeta) -> Option<LegacyHit> {
        self.legacy_in(&self.main, pkt, 0)
    }

    fn legacy_in(&self, rs: &CRuleset, pkt: &PacketMeta, depth: usize) -> Option<LegacyHit> {
        if depth > 16 {
            return None;
        }
        for l in &rs.legacy {
            let applies = match l.kind {
                LegacyKind::Nat | LegacyKind::BinatOut => pkt.dir == Direction::Out,
                LegacyKind::Rdr | LegacyKind::BinatIn => pkt.dir == Direction::In,
            };
            if !applies {
                continue;
            }
            l.m.stats.evaluated();
            if !self.matches(&l.m, &rs.path, pkt, None) {
                continue;
            }
            if let Some(target) = &l.anchor {
                let found = if let Some(prefix) = target.strip_suffix("/*") {
                    self.anchor_children(prefix)
                        .iter()
                        .find_map(|a| self.legacy_in(a, pkt, depth + 1))
                } else {
                    self.anchor(target)
                        .and_then(|a| self.legacy_in(&a, pkt, depth + 1))
                };
                if found.is_some() {
                    return found;
                }
                continue;
            }
            return Some(LegacyHit {
                rule: RuleRef {
                    anchor: rs.path.as_str().into(),
                    nr: l.m.nr,
                },
                kind: l.kind,
                no: l.no,
                pass: l.pass,
                pool: l.pool.clone(),
                log: l.m.log,
                stats: l.m.stats.clone(),
            });
        }
        None
    }

    /// Evaluate the rules for one packet (no state lookup yet).
    pub fn test(&self, pkt: &PacketMeta) -> Verdict {
        self.test_scrubbed(pkt, self.legacy_scrub(pkt))
    }

    /// The normalization the older syntax's `scrub` rules give a packet:
    /// the first that matches (pf's scrub ruleset, evaluated before any
    /// translation); none when none does.
    pub fn legacy_scrub(&self, pkt: &PacketMeta) -> ScrubActions {
        for r in &self.main.scrubs {
            if !self.skip_fields(r, pkt) {
                continue;
            }
            r.stats.evaluated();
            if self.rest_matches(r, &self.main.path, pkt, pkt.tag.as_deref()) {
                return r.scrub;
            }
        }
        ScrubActions::default()
    }

    /// As `test`, with `scrub` what the older `scrub` rules gave the
    /// packet (`legacy_scrub`, taken before an older-syntax translation).
    pub fn test_scrubbed(&self, pkt: &PacketMeta, scrub: ScrubActions) -> Verdict {
        self.test_with(pkt, scrub, &Stateless(self))
    }

    /// As `test_scrubbed`, with `pv` saying what a match rule's
    /// translation gives the packet (the filter's pools).
    pub fn test_with(
        &self,
        pkt: &PacketMeta,
        scrub: ScrubActions,
        pv: &dyn TransPreview,
    ) -> Verdict {
        let mut st = St {
            tag: pkt.tag.clone(),
            decided: None,
            keep: (KeepState::None, None),
            log_all: false,
            match_log_all: false,
            decided_log: false,
            scrub: ScrubActions::default(),
            decided_scrub: ScrubActions::default(),
            decided_once: None,
            decided_stats: None,
            match_stats: Vec::new(),
            log_matches_on: false,
            log_matched: Vec::new(),
            nat: None,
            rdr: None,
            route: None,
            decided_allow_opts: false,
            log: false,
            evaluations: 0,
            view: None,
        };
        st.scrub.merge(&scrub);
        self.run(&self.main, pkt, &mut st, 0, pv);
        let mut v = Verdict::default_pass();
        v.evaluations = st.evaluations;
        v.tag = st.tag;
        v.log = st.log;
        let (mut nat, mut rdr) = (st.nat.clone(), st.rdr.clone());
        let mut route = st.route.take();
        if let Some((a, r, np, rp, rt)) = st.decided {
            v.action = a;
            if let Some(p) = np {
                nat = Some((r.clone(), p));
            }
            if let Some(p) = rp {
                rdr = Some((r.clone(), p));
            }
            if let Some(x) = rt {
                route = Some((r.clone(), x));
            }
            v.rule = Some(r);
            v.allow_opts = st.decided_allow_opts;
            v.keep_state = st.keep.0;
            v.state_opts = st.keep.1;
            v.log_all = st.log_all || st.match_log_all;
            v.log |= st.decided_log;
            v.stats = st.decided_stats.take();
            st.scrub.merge(&st.decided_scrub);
            if let Some(f) = &st.decided_once {
                f.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        v.scrub = st.scrub;
        v.match_stats = std::mem::take(&mut st.match_stats);
        v.log_matched = std::mem::take(&mut st.log_matched);
        v.nat = nat.as_ref().map(|x| x.0.clone());
        v.nat_pool = nat.map(|x| x.1);
        v.rdr = rdr.as_ref().map(|x| x.0.clone());
        v.rdr_pool = rdr.map(|x| x.1);
        // Routing applies to what passes.
        v.route = route.filter(|_| v.action == VerdictAction::Pass);
        v
    }

    fn run(
        &self,
        rs: &CRuleset,
        pkt: &PacketMeta,
        st: &mut St,
        depth: usize,
        pv: &dyn TransPreview,
    ) -> bool {
        if depth > palisade_conf::MAX_ANCHOR_DEPTH || rs.rules.is_empty() {
            return false;
        }
        // `pkt` is the packet as the caller's rules saw it last (its
        // view); a match rule here or in an anchor called from here may
        // translate it for the rules after (`St::view`).
        let mut seen = st.view.clone();
        let mut cur: Option<Arc<PacketMeta>> = None;
        let mut last: Option<u32> = None;
        let merged: Vec<u32>;
        let mut order: &[u32] = if rs.rules.len() <= LINEAR {
            &rs.all
        } else {
            let mut lists: Vec<&[u32]> = Vec::with_capacity(8);
            let n = self.candidates(rs, pkt, &mut lists);
            // With one list it is already in rule order; otherwise merge.
            if lists.len() == 1 {
                lists[0]
            } else {
                let mut v = Vec::with_capacity(n);
                for l in &lists {
                    v.extend_from_slice(l);
                }
                v.sort_unstable();
                merged = v;
                &merged
            }
        };
        let mut k = 0;
        while k < order.len() {
            if !same_view(&seen, &st.view) {
                seen = st.view.clone();
                cur = seen.clone();
                // The indexes chose the candidates for the packet as it
                // was: the rules after the last one go in order now.
                if !std::ptr::eq(order.as_ptr(), rs.all.as_ptr()) {
                    order = &rs.all;
                    k = last.map_or(0, |l| l as usize + 1);
                    if k >= order.len() {
                        break;
                    }
                }
            }
            let i = order[k];
            k += 1;
            last = Some(i);
            let pkt: &PacketMeta = cur.as_deref().unwrap_or(pkt);
            let r = &rs.rules[i as usize];
            if !self.skip_fields(r, pkt) {
                continue;
            }
            st.evaluations += 1;
            r.stats.evaluated();
            if !self.rest_matches(r, &rs.path, pkt, st.tag.as_deref()) {
                continue;
            }
            if let Some(t) = &r.tag {
                st.tag = Some(t.clone());
            }
            let me = || RuleRef {
                anchor: rs.path.as_str().into(),
                nr: r.nr,
            };
            if !matches!(r.kind, Kind::Anchor(_)) {
                st.log_matches_on |= r.log_matches;
                if st.log_matches_on {
                    let a = match r.kind {
                        Kind::Pass => MatchAction::Pass,
                        Kind::Block(_) => MatchAction::Block,
                        _ => MatchAction::Match,
                    };
                    st.log_matched.push((me(), a));
                }
            }
            match &r.kind {
                Kind::Anchor(t) => {
                    let before = st.decided.as_ref().map(|d| d.1.clone());
                    let stop = match t {
                        Target::Inline(child) => match self.inline_or_replaced(child) {
                            Some(r) => self.run(&r, pkt, st, depth + 1, pv),
                            None => self.run(child, pkt, st, depth + 1, pv),
                        },
                        Target::Named(p) => match self.anchor(p) {
                            Some(child) => self.run(&child, pkt, st, depth + 1, pv),
                            None => false,
                        },
                        Target::Wildcard(prefix) => {
                            let mut stop = false;
                            for child in self.anchor_children(prefix) {
                                // (Each child sees what the one before
                                // it translated.)
                                let view = st.view.clone();
                                let p = view.as_deref().unwrap_or(pkt);
                                if self.run(&child, p, st, depth + 1, pv) {
                                    stop = true;
                                    break;
                                }
                            }
                            stop
                        }
                    };
                    if stop {
                        return true;
                    }
                    let after = st.decided.as_ref().map(|d| d.1.clone());
                    if r.quick && after != before {
                        return true;
                    }
                    continue;
                }
                Kind::Match => {
                    st.match_stats.push(r.stats.clone());
                    if let Some(p) = &r.nat_pool {
                        st.nat = Some((me(), p.clone()));
                    }
                    if let Some(p) = &r.rdr_pool {
                        st.rdr = Some((me(), p.clone()));
                    }
                    if r.nat_pool.is_some() || r.rdr_pool.is_some() {
                        if let Some(v) = translated_view(
                            pkt,
                            r.nat_pool.as_deref(),
                            r.rdr_pool.as_deref(),
                            &me(),
                            pv,
                        ) {
                            st.view = Some(Arc::new(v));
                        }
                    }
                    if let Some(rt) = &r.route {
                        st.route = Some((me(), rt.clone()));
                    }
                    // `match log`: its own record, as a match (pf logs it
                    // when it matches, under its number); the deciding
                    // rule logs only if it says `log` too. Its `log (all)`
                    // goes to the state the packet makes.
                    if r.log && !st.log_matches_on {
                        st.log_matched.push((me(), MatchAction::Match));
                    }
                    st.match_log_all |= r.log_all;
                    st.scrub.merge(&r.scrub);
                }
                Kind::Pass => {
                    st.decided = Some((
                        VerdictAction::Pass,
                        me(),
                        r.nat_pool.clone(),
                        r.rdr_pool.clone(),
                        r.route.clone(),
                    ));
                    st.keep = (r.keep, r.state_opts.clone());
                    st.log_all = r.log_all;
                    st.decided_log = r.log;
                    st.decided_scrub = r.scrub;
                    st.decided_once = r.once.clone();
                    st.decided_stats = Some(r.stats.clone());
                    st.decided_allow_opts = r.allow_opts;
                }
                Kind::Block(p) => {
                    st.decided = Some((VerdictAction::Block(*p), me(), None, None, None));
                    st.keep = (KeepState::None, None);
                    st.log_all = r.log_all;
                    st.decided_log = r.log;
                    st.decided_scrub = r.scrub;
                    st.decided_once = r.once.clone();
                    st.decided_stats = Some(r.stats.clone());
                }
            }
            if r.quick {
                return true;
            }
        }
        false
    }

    /// Fill `lists` with the smallest candidate set; returns its size.
    fn candidates<'a>(
        &'a self,
        rs: &'a CRuleset,
        pkt: &PacketMeta,
        lists: &mut Vec<&'a [u32]>,
    ) -> usize {
        let ix = &rs.index;
        let mut best: (usize, Vec<&'a [u32]>) = (usize::MAX, Vec::new());
        let mut consider = |n: usize, v: Vec<&'a [u32]>| {
            if n < best.0 {
                best = (n, v);
            }
        };
        let b = ix.proto.bucket(&pkt.proto);
        consider(ix.proto.any.len() + b.len(), vec![&ix.proto.any, b]);
        if let Some(p) = pkt.dport {
            let b = ix.dport.bucket(&p);
            consider(ix.dport.any.len() + b.len(), vec![&ix.dport.any, b]);
        } else {
            consider(ix.dport.any.len(), vec![&ix.dport.any]);
        }
        if let Some(p) = pkt.sport {
            let b = ix.sport.bucket(&p);
            consider(ix.sport.any.len() + b.len(), vec![&ix.sport.any, b]);
        } else {
            consider(ix.sport.any.len(), vec![&ix.sport.any]);
        }
        let mut v = Vec::new();
        let n = ix.dst.candidates(&pkt.dst, &mut v);
        consider(n, v);
        let mut v = Vec::new();
        let n = ix.src.candidates(&pkt.src, &mut v);
        consider(n, v);
        let mut v: Vec<&'a [u32]> = vec![&ix.iface.any, ix.iface.bucket(&pkt.iface)];
        let mut n = ix.iface.any.len() + ix.iface.bucket(&pkt.iface).len();
        if let Some(gs) = self.groups.get(&pkt.iface) {
            for g in gs {
                let b = ix.iface.bucket(g);
                n += b.len();
                v.push(b);
            }
        }
        consider(n, v);
        let (n, v) = best;
        lists.extend(v.into_iter().filter(|l| !l.is_empty()));
        if lists.is_empty() {
            lists.push(&[]);
        }
        n
    }

    fn on_iface(&self, iface: &str, name: &str) -> bool {
        iface == name
            || self
                .groups
                .get(iface)
                .is_some_and(|g| g.iter().any(|x| x == name))
            // `on any`: every interface but loopback ones (pf's
            // PFI_IFLAG_ANY).
            || (name == "any" && !self.host.interface(iface).is_some_and(|i| i.loopback))
    }

    fn addr_ok(&self, a: &CAddrSpec, ip: &IpAddr, iface: &str) -> bool {
        let m = match &a.addr {
            CAddr::Any => true,
            CAddr::Nets(n) => {
                let (v6, k) = key(ip);
                n.iter()
                    .any(|(nv6, net, mask)| *nv6 == v6 && k & mask == *net)
            }
            CAddr::Range(lo, hi) => lo.is_ipv4() == ip.is_ipv4() && lo <= ip && ip <= hi,
            CAddr::Table(t, scoped) => {
                let ts = self.tables();
                scoped
                    .as_deref()
                    .and_then(|s| ts.tables.get(s))
                    .or_else(|| ts.tables.get(t))
                    .is_some_and(|tab| tab.contains(ip))
            }
            CAddr::NoRoute => !self.host.routable(ip),
            CAddr::UrpfFailed => !self.host.urpf_ok(ip, iface),
            CAddr::Never => false,
        };
        m != a.neg
    }

    /// The fields pf's skip steps jump on: interface, direction, family,
    /// protocol, addresses, ports. A rule counts an evaluation only when a
    /// packet gets past them (whether a linear walk or the index brought
    /// it there), as pf's skip steps keep most such rules from being
    /// visited. Cheapest and most often failing first.
    fn skip_fields(&self, r: &CRule, pkt: &PacketMeta) -> bool {
        if r.never {
            return false;
        }
        if r.dir.is_some_and(|d| d != pkt.dir) {
            return false;
        }
        if r.af.is_some_and(|a| a != pkt.af) || r.proto.is_some_and(|p| p != pkt.proto) {
            return false;
        }
        if let Some(op) = &r.dport {
            if !pkt.dport.is_some_and(|p| op.matches(p as u32)) {
                return false;
            }
        }
        if let Some(op) = &r.sport {
            if !pkt.sport.is_some_and(|p| op.matches(p as u32)) {
                return false;
            }
        }
        if let Some((neg, name)) = &r.iface {
            if self.on_iface(&pkt.iface, name) == *neg {
                return false;
            }
        }
        self.addr_ok(&r.dst, &pkt.dst, &pkt.iface) && self.addr_ok(&r.src, &pkt.src, &pkt.iface)
    }

    fn matches(&self, r: &CRule, path: &str, pkt: &PacketMeta, tag: Option<&str>) -> bool {
        self.skip_fields(r, pkt) && self.rest_matches(r, path, pkt, tag)
    }

    /// The predicates beyond [`Engine::skip_fields`]; the ones with side
    /// effects (probability, once, rates) last.
    fn rest_matches(&self, r: &CRule, path: &str, pkt: &PacketMeta, tag: Option<&str>) -> bool {
        if let Some(os) = &r.os {
            if !os_matches(os, pkt.os.as_deref()) {
                return false;
            }
        }
        if let Some(op) = &r.user {
            if !op.matches_id(pkt.uid.unwrap_or(u32::MAX)) {
                return false;
            }
        }
        if let Some(op) = &r.group {
            if !op.matches_id(pkt.gid.unwrap_or(u32::MAX)) {
                return false;
            }
        }
        if let Some((set, mask)) = r.flags {
            if pkt.proto == 6 && pkt.tcp_flags & mask != set {
                return false;
            }
        }
        if let Some(ic) = &r.icmp {
            let want = if ic.v6 { 58 } else { 1 };
            match pkt.icmp {
                Some((t, c))
                    if pkt.proto == want && t == ic.ty && ic.code.is_none_or(|x| x == c) => {}
                _ => return false,
            }
        }
        if r.tos.is_some_and(|t| t != pkt.tos) {
            return false;
        }
        if r.prio.is_some_and(|p| p != crate::packet::PACKET_PRIO) {
            return false;
        }
        if let Some((neg, t)) = &r.tagged {
            if (tag == Some(t.as_str())) == *neg {
                return false;
            }
        }
        if let Some((neg, name)) = &r.received_on {
            let on = pkt
                .received_on
                .as_deref()
                .is_some_and(|i| self.on_iface(i, name));
            if on == *neg {
                return false;
            }
        }
        if let Some(p) = r.probability {
            let me = RuleRef {
                anchor: path.into(),
                nr: r.nr,
            };
            if !probability_hit(pkt.random, &me, p) {
                return false;
            }
        }
        if r.once
            .as_ref()
            .is_some_and(|f| f.load(std::sync::atomic::Ordering::Relaxed))
        {
            return false;
        }
        if let Some((n, secs, rate)) = &r.pkt_rate {
            let mut g = rate.lock().unwrap_or_else(|e| e.into_inner());
            if !g.admit(pkt.now_ms, *n, *secs) {
                return false;
            }
        }
        true
    }
}

/// A rule's match predicates alone (for older translation rules).
fn compile_matcher(r: &Rule, nr: usize, host: &HostModel) -> CRule {
    CRule {
        nr: nr as u32,
        kind: Kind::Match,
        quick: false,
        log: r.log.is_some(),
        log_all: false,
        log_matches: false,
        dir: r.dir,
        iface: r.ifname.clone(),
        af: r.af,
        proto: r.proto,
        src: compile_addr(&r.src.addr, host),
        dst: compile_addr(&r.dst.addr, host),
        sport: r.src.port,
        dport: r.dst.port,
        os: None,
        user: None,
        group: None,
        flags: None,
        icmp: None,
        tos: None,
        prio: None,
        tagged: r.tagged.clone(),
        tag: r.tag.clone(),
        received_on: None,
        probability: None,
        never: false,
        nat_pool: None,
        rdr_pool: None,
        route: None,
        allow_opts: false,
        keep: KeepState::None,
        state_opts: None,
        scrub: ScrubActions::default(),
        once: None,
        pkt_rate: None,
        stats: Arc::new(RuleStats::default()),
    }
}

/// A rule's text for listings: pfctl's form, an inline anchor without
/// its body (its rules are listed under it).
fn listing_text(r: &Rule) -> String {
    if r.inline.is_some() {
        let mut head = r.clone();
        head.inline = None;
        palisade_conf::print::rule_str(&head, 0)
    } else {
        palisade_conf::print::rule_str(r, 0)
    }
}

fn uses_os(rs: &Ruleset) -> bool {
    rs.rules
        .iter()
        .any(|r| r.os.is_some() || r.inline.as_ref().is_some_and(uses_os))
}

fn compile_addr(a: &AddrSpec, host: &HostModel) -> CAddrSpec {
    let addr = match &a.addr {
        Addr::Any => CAddr::Any,
        Addr::Net { ip, bits } => {
            let (v6, k) = key(ip);
            let m = mask_of(v6, *bits);
            CAddr::Nets(vec![(v6, k & m, m)])
        }
        Addr::Range { lo, hi } => CAddr::Range(*lo, *hi),
        Addr::Dynamic { ifname, mods, bits } => {
            let ifs: Vec<_> = if ifname == "self" {
                host.interfaces.iter().collect()
            } else {
                host.members(ifname)
            };
            let mut nets = Vec::new();
            for i in ifs {
                let (mut s4, mut s6) = (false, false);
                for ad in &i.addrs {
                    let v6 = ad.ip.is_ipv6();
                    if mods.noalias {
                        let seen = if v6 { &mut s6 } else { &mut s4 };
                        if *seen {
                            continue;
                        }
                        *seen = true;
                    }
                    let full = if v6 { 128 } else { 32 };
                    let (ip, b) = if mods.peer {
                        match ad.peer {
                            Some(p) => (p, full),
                            None => continue,
                        }
                    } else if mods.broadcast {
                        match ad.ip {
                            IpAddr::V4(x) if ad.bits < 31 => (
                                IpAddr::V4((u32::from(x) | (u32::MAX >> ad.bits)).into()),
                                32,
                            ),
                            _ => continue,
                        }
                    } else if mods.network {
                        (ad.ip, ad.bits)
                    } else {
                        (ad.ip, full)
                    };
                    let b = bits.unwrap_or(b);
                    let (kv6, k) = key(&ip);
                    let m = mask_of(kv6, b);
                    nets.push((kv6, k & m, m));
                }
            }
            CAddr::Nets(nets)
        }
        Addr::Table(t) => CAddr::Table(t.clone(), None),
        Addr::NoRoute => CAddr::NoRoute,
        Addr::UrpfFailed => CAddr::UrpfFailed,
        // Route labels: Linux routes carry none (warned at load).
        Addr::RouteLabel(_) => CAddr::Never,
    };
    CAddrSpec { neg: a.neg, addr }
}

/// The path of the ruleset anchor rule `nr` of the ruleset at `parent`
/// calls: its name relative to the caller, from the root when it starts
/// with "/", and `_N` for an unnamed inline anchor (pf.conf(5), ANCHORS).
/// The reference evaluator resolves paths on its own, so that the
/// differential tests compare two readings of the man page, not one.
fn called_path(parent: &str, nr: usize, name: Option<&str>) -> String {
    let own = name.map_or_else(|| format!("_{nr}"), str::to_string);
    match own.strip_prefix('/') {
        Some(from_root) => from_root.to_string(),
        None => [parent, own.as_str()]
            .into_iter()
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()
            .join("/"),
    }
}

/// Rulesets of at most this many rules are walked whole: six index
/// lookups cost more than testing a few rules.
const LINEAR: usize = 16;

fn compile(rs: &Ruleset, path: &str, host: &HostModel) -> CRuleset {
    let mut out = CRuleset {
        path: path.to_string(),
        uses_os: uses_os(rs),
        rules: Vec::new(),
        index: Index::default(),
        all: Vec::new(),
        legacy: Vec::new(),
        scrubs: Vec::new(),
        listing: Vec::new(),
    };
    for (nr, r) in rs.rules.iter().enumerate() {
        let stats = Arc::new(RuleStats::labelled(r.label.as_deref()));
        out.listing.push(RuleListing {
            nr: nr as u32,
            text: listing_text(r),
            label: r.label.clone(),
            stats: stats.clone(),
            inline: Vec::new(),
        });
        let kind = match &r.action {
            Action::Pass => Kind::Pass,
            Action::Block(p) => Kind::Block(*p),
            Action::Match => Kind::Match,
            Action::Anchor(AnchorKind::Filter) => {
                let target = called_path(path, nr, r.anchor_name.as_deref());
                if let Some(inline) = &r.inline {
                    let child = compile(inline, &target, host);
                    if let Some(l) = out.listing.last_mut() {
                        l.inline = child.listing.clone();
                    }
                    Kind::Anchor(Target::Inline(Box::new(child)))
                } else if let Some(prefix) = target.strip_suffix("/*") {
                    Kind::Anchor(Target::Wildcard(prefix.to_string()))
                } else {
                    Kind::Anchor(Target::Named(target))
                }
            }
            Action::LegacyNat { no } | Action::LegacyRdr { no } | Action::LegacyBinat { no } => {
                let mut m = compile_matcher(r, nr, host);
                m.stats = stats.clone();
                let pool = r.nat.clone().or_else(|| r.rdr.clone()).map(Arc::new);
                let pass = r.legacy_pass;
                let no = *no;
                match &r.action {
                    Action::LegacyNat { .. } => out.legacy.push(LRule {
                        m,
                        kind: LegacyKind::Nat,
                        no,
                        pass,
                        pool,
                        anchor: None,
                    }),
                    Action::LegacyRdr { .. } => out.legacy.push(LRule {
                        m,
                        kind: LegacyKind::Rdr,
                        no,
                        pass,
                        pool,
                        anchor: None,
                    }),
                    _ => {
                        // The inbound half matches the reverse: from the
                        // rule's destination to the translated address.
                        let mut back = m.clone();
                        back.src = m.dst.clone();
                        back.sport = m.dport;
                        back.dport = m.sport;
                        back.dst = match &pool {
                            Some(p) => compile_addr(
                                &AddrSpec {
                                    neg: false,
                                    addr: p.addr.clone(),
                                },
                                host,
                            ),
                            None => CAddrSpec {
                                neg: false,
                                addr: CAddr::Any,
                            },
                        };
                        let orig = Arc::new(Pool {
                            addr: r.src.addr.addr.clone(),
                            ifname: None,
                            port: None,
                            kind: PoolType::Bitmask,
                            sticky: false,
                            static_port: true,
                            map_e: None,
                            list: None,
                            port_base: None,
                            hop_ifnames: None,
                        });
                        let mut outm = m.clone();
                        outm.dir = Some(Direction::Out);
                        back.dir = Some(Direction::In);
                        out.legacy.push(LRule {
                            m: outm,
                            kind: LegacyKind::BinatOut,
                            no,
                            pass,
                            pool: pool.clone().map(|p| {
                                Arc::new(Pool {
                                    static_port: true,
                                    kind: PoolType::Bitmask,
                                    ..(*p).clone()
                                })
                            }),
                            anchor: None,
                        });
                        out.legacy.push(LRule {
                            m: back,
                            kind: LegacyKind::BinatIn,
                            no,
                            pass,
                            pool: Some(orig),
                            anchor: None,
                        });
                    }
                }
                continue;
            }
            Action::Anchor(k) => {
                let target = called_path(path, nr, r.anchor_name.as_deref());
                let mut m = compile_matcher(r, nr, host);
                m.stats = stats.clone();
                let kinds: &[LegacyKind] = match k {
                    AnchorKind::Nat => &[LegacyKind::Nat],
                    AnchorKind::Rdr => &[LegacyKind::Rdr],
                    _ => &[LegacyKind::BinatOut, LegacyKind::BinatIn],
                };
                for kind in kinds {
                    out.legacy.push(LRule {
                        m: m.clone(),
                        kind: *kind,
                        no: false,
                        pass: false,
                        pool: None,
                        anchor: Some(target.clone()),
                    });
                }
                continue;
            }
            // Older scrub rules are normalization, not filtering: kept
            // apart, tried first (below).
            Action::LegacyScrub => Kind::Match,
        };
        let mut c = CRule {
            nr: nr as u32,
            kind,
            quick: r.quick,
            log: r.log.is_some(),
            log_all: r.log.as_ref().is_some_and(|l| l.all),
            log_matches: r.log.as_ref().is_some_and(|l| l.matches),
            dir: r.dir,
            iface: r.ifname.clone(),
            af: r.af,
            proto: r.proto,
            src: compile_addr(&r.src.addr, host),
            dst: compile_addr(&r.dst.addr, host),
            sport: r.src.port,
            dport: r.dst.port,
            os: r.os.clone(),
            user: r.user,
            group: r.group,
            flags: r.flags,
            icmp: r.icmp,
            tos: r.tos,
            prio: r.prio,
            tagged: r.tagged.clone(),
            tag: r.tag.clone(),
            received_on: r.received_on.clone(),
            probability: r.probability,
            never: r.rdomain.is_some_and(|d| d != 0),
            nat_pool: r.nat.clone().map(Arc::new),
            rdr_pool: rdr_pool(r).map(Arc::new),
            route: r.route.clone().map(|(k, p)| (k, Arc::new(p))),
            allow_opts: r.allow_opts,
            keep: r.keep_state,
            state_opts: (!r.state_opts.is_empty())
                .then(|| std::sync::Arc::new(r.state_opts.clone())),
            scrub: ScrubActions::from_rule(&r.scrub, r.set.tos),
            once: r
                .once
                .then(|| Arc::new(std::sync::atomic::AtomicBool::new(false))),
            pkt_rate: r
                .max_pkt_rate
                .map(|(n, s)| (n, s, Arc::new(std::sync::Mutex::new(PktRate::default())))),
            stats,
        };
        if matches!(r.action, Action::LegacyScrub) {
            scope_tables(&mut c, path);
            out.scrubs.push(c);
            continue;
        }
        let i = out.rules.len() as u32;
        let ix = &mut out.index;
        ix.proto.add(c.proto, i);
        ix.dport.add(
            match c.dport {
                Some(CmpOp::Eq(p)) => Some(p as u16),
                _ => None,
            },
            i,
        );
        ix.sport.add(
            match c.sport {
                Some(CmpOp::Eq(p)) => Some(p as u16),
                _ => None,
            },
            i,
        );
        ix.iface.add(
            match &c.iface {
                // `on any` can match on any interface: a candidate for all.
                Some((false, n)) if n != "any" => Some(n.clone()),
                _ => None,
            },
            i,
        );
        scope_tables(&mut c, path);
        ix.dst.add(&c.dst, i);
        ix.src.add(&c.src, i);
        out.rules.push(c);
    }
    for l in &mut out.legacy {
        scope_tables(&mut l.m, path);
    }
    out.all = (0..out.rules.len() as u32).collect();
    out
}

/// In an anchor, a rule's tables are the anchor's when it has them
/// (`CAddr::Table`); a name already the anchor's (`A/NAME`, a `load
/// anchor` file's own table) stays as it is.
fn scope_tables(c: &mut CRule, path: &str) {
    if path.is_empty() {
        return;
    }
    for spec in [&mut c.src, &mut c.dst] {
        if let CAddr::Table(t, scoped @ None) = &mut spec.addr {
            if !t.contains('/') {
                *scoped = Some(format!("{path}/{t}"));
            }
        }
    }
}

/// A rule's redirection: `rdr-to`, or `divert-to ADDR port P`, which
/// Palisade carries out as a redirection to ADDR port P on the firewall
/// (delivered through the host interface; the program there learns the
/// original destination from the state table, `natlook`, as pf's
/// DIOCNATLOOK; OpenBSD leaves the addresses alone and the socket sees
/// them, which Linux cannot do without TPROXY).
pub(crate) fn rdr_pool(r: &palisade_conf::ir::Rule) -> Option<palisade_conf::ir::Pool> {
    use palisade_conf::ir::{Addr, Divert, Pool, PoolType};
    if let Some(p) = &r.rdr {
        return Some(p.clone());
    }
    match r.divert {
        Some(Divert::To { addr, port }) => Some(Pool {
            addr: Addr::Net {
                ip: addr,
                bits: if addr.is_ipv4() { 32 } else { 128 },
            },
            ifname: None,
            port: Some((port, port)),
            kind: PoolType::None,
            sticky: false,
            static_port: false,
            map_e: None,
            list: None,
            port_base: None,
            hop_ifnames: None,
        }),
        _ => None,
    }
}
