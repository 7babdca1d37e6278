//! The reference evaluator: pf's rule semantics written as plainly as
//! possible, walking the IR rule by rule with no precomputation. It is the
//! oracle for the compiled engine (differential tests) and the baseline of
//! the rule-evaluation benchmark. Do not optimize it.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use palisade_conf::host::HostModel;
use palisade_conf::ir::*;

use crate::packet::*;
use crate::table::TableSet;

pub struct RefCtx<'a> {
    pub host: &'a HostModel,
    pub tables: &'a TableSet,
    /// Anchors loaded at run time, by path.
    pub anchors: &'a BTreeMap<String, Ruleset>,
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
    log_matches_on: bool,
    log_matched: Vec<(RuleRef, MatchAction)>,
    nat: Option<(RuleRef, Arc<Pool>)>,
    rdr: Option<(RuleRef, Arc<Pool>)>,
    route: Option<(RuleRef, crate::packet::RoutePool)>,
    decided_allow_opts: bool,
    log: bool,
    evaluations: u32,
    /// The packet as the rules after a translating match rule see it.
    view: Option<PacketMeta>,
}

/// pf tests the rules after a match rule's nat-to / rdr-to against the
/// translated addresses: the address the pool gives, from the pool alone
/// (the first round-robin address, no sticky address).
struct RefPreview<'a, 'b>(&'a RefCtx<'b>);

impl crate::engine::TransPreview for RefPreview<'_, '_> {
    fn preview(
        &self,
        pool: &Pool,
        _rule: &RuleRef,
        source: bool,
        pkt: &PacketMeta,
    ) -> Option<IpAddr> {
        let mut nets = Vec::new();
        let addrs: Vec<&Addr> = match &pool.list {
            Some(l) => l.iter().collect(),
            None => vec![&pool.addr],
        };
        let fam = |ip: &IpAddr| ip.is_ipv6() == (pkt.af == Af::Inet6);
        for a in addrs {
            match a {
                Addr::Net { ip, bits } if fam(ip) => nets.push((*ip, *bits)),
                Addr::Table(t) => {
                    if let Some(tab) = self.0.tables.tables.get(t) {
                        nets.extend(tab.entries().into_iter().filter(|(ip, _)| fam(ip)));
                    }
                }
                Addr::Dynamic { ifname, mods, .. } => {
                    let ifs: Vec<_> = if ifname == "self" {
                        self.0.host.interfaces.iter().collect()
                    } else {
                        self.0.host.members(ifname)
                    };
                    for i in ifs {
                        for x in &i.addrs {
                            let ll = matches!(x.ip, IpAddr::V6(v) if (v.segments()[0] & 0xffc0) == 0xfe80);
                            if fam(&x.ip) && !ll {
                                nets.push((x.ip, pkt.af.max_bits()));
                                if mods.noalias {
                                    break;
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
        if nets.is_empty() {
            return None;
        }
        let orig = if source { pkt.src } else { pkt.dst };
        Some(crate::filter::choose_addr(
            &nets, pool, &pkt.src, &orig, pkt.random, 0, None,
        ))
    }
}

pub fn evaluate(main: &Ruleset, ctx: &RefCtx, pkt: &PacketMeta) -> Verdict {
    let mut st = St {
        tag: pkt.tag.clone(),
        decided: None,
        keep: (KeepState::None, None),
        log_all: false,
        match_log_all: false,
        decided_log: false,
        scrub: ScrubActions::default(),
        decided_scrub: ScrubActions::default(),
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
    // The older syntax's `scrub` rules, a ruleset of their own: the first
    // that matches gives the packet's normalization (FreeBSD's pf).
    for (nr, r) in main.rules.iter().enumerate() {
        if !matches!(r.action, Action::LegacyScrub) {
            continue;
        }
        st.evaluations += 1;
        let me = RuleRef {
            anchor: "".into(),
            nr: nr as u32,
        };
        if rule_matches(r, &me, ctx, pkt, st.tag.as_deref()) {
            st.scrub
                .merge(&ScrubActions::from_rule(&r.scrub, r.set.tos));
            break;
        }
    }
    ruleset(main, "", ctx, pkt, &mut st, 0);
    let mut v = Verdict::default_pass();
    v.evaluations = st.evaluations;
    v.tag = st.tag.clone();
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
        st.scrub.merge(&st.decided_scrub);
    }
    v.scrub = st.scrub;
    v.log_matched = std::mem::take(&mut st.log_matched);
    v.nat = nat.as_ref().map(|x| x.0.clone());
    v.nat_pool = nat.map(|x| x.1);
    v.rdr = rdr.as_ref().map(|x| x.0.clone());
    v.rdr_pool = rdr.map(|x| x.1);
    v.route = route.filter(|_| v.action == VerdictAction::Pass);
    v
}

/// The path of the ruleset an anchor rule calls (pf.conf(5) ANCHORS: names
/// are relative to the calling anchor unless they start with "/").
pub fn anchor_path(parent: &str, nr: usize, name: Option<&str>) -> String {
    let name = match name {
        Some(n) => n.to_string(),
        None => format!("_{nr}"),
    };
    if let Some(abs) = name.strip_prefix('/') {
        abs.to_string()
    } else if parent.is_empty() {
        name
    } else {
        format!("{parent}/{name}")
    }
}

/// Returns true when evaluation must stop (a quick rule matched).
fn ruleset(
    rs: &Ruleset,
    path: &str,
    ctx: &RefCtx,
    pkt: &PacketMeta,
    st: &mut St,
    depth: usize,
) -> bool {
    if depth > palisade_conf::MAX_ANCHOR_DEPTH {
        return false;
    }
    for (nr, r) in rs.rules.iter().enumerate() {
        let is_filter = matches!(
            r.action,
            Action::Pass | Action::Block(_) | Action::Match | Action::Anchor(AnchorKind::Filter)
        );
        if !is_filter {
            continue;
        }
        // As the rules before left the packet.
        let view = st.view.clone();
        let pkt = view.as_ref().unwrap_or(pkt);
        st.evaluations += 1;
        let me = RuleRef {
            anchor: path.into(),
            nr: nr as u32,
        };
        if !rule_matches(r, &me, ctx, pkt, st.tag.as_deref()) {
            continue;
        }
        if let Some(t) = &r.tag {
            st.tag = Some(t.clone());
        }
        if !matches!(r.action, Action::Anchor(_)) {
            if r.log.as_ref().is_some_and(|l| l.matches) {
                st.log_matches_on = true;
            }
            if st.log_matches_on {
                let a = match r.action {
                    Action::Pass => MatchAction::Pass,
                    Action::Block(_) => MatchAction::Block,
                    _ => MatchAction::Match,
                };
                st.log_matched.push((me.clone(), a));
            }
        }
        match &r.action {
            Action::Anchor(_) => {
                let before = st.decided.as_ref().map(|d| d.1.clone());
                let target = anchor_path(path, nr, r.anchor_name.as_deref());
                let mut children: Vec<(String, &Ruleset)> = Vec::new();
                if let Some(inline) = &r.inline {
                    // Rules loaded into it at run time replace pf.conf's
                    // inline ones (pfctl -a NAME -f).
                    let rs = ctx.anchors.get(&target).unwrap_or(inline);
                    children.push((target.clone(), rs));
                } else if let Some(prefix) = target.strip_suffix("/*") {
                    for (p, rs) in ctx.anchors.iter() {
                        if let Some(rest) = p.strip_prefix(prefix).and_then(|x| x.strip_prefix('/'))
                        {
                            if !rest.contains('/') {
                                children.push((p.clone(), rs));
                            }
                        }
                    }
                } else if let Some(rs) = ctx.anchors.get(&target) {
                    children.push((target.clone(), rs));
                }
                for (p, child) in children {
                    if ruleset(child, &p, ctx, pkt, st, depth + 1) {
                        return true;
                    }
                }
                let after = st.decided.as_ref().map(|d| d.1.clone());
                if r.quick && after != before {
                    return true;
                }
                continue;
            }
            Action::Match => {
                if let Some(p) = &r.nat {
                    st.nat = Some((me.clone(), Arc::new(p.clone())));
                }
                let rdr = crate::engine::rdr_pool(r);
                if let Some(p) = &rdr {
                    st.rdr = Some((me.clone(), Arc::new(p.clone())));
                }
                if let Some(v) = crate::engine::translated_view(
                    pkt,
                    r.nat.as_ref(),
                    rdr.as_ref(),
                    &me,
                    &RefPreview(ctx),
                ) {
                    st.view = Some(v);
                }
                if let Some((k, p)) = &r.route {
                    st.route = Some((me.clone(), (*k, Arc::new(p.clone()))));
                }
                if r.log.is_some() && !st.log_matches_on {
                    st.log_matched.push((me.clone(), MatchAction::Match));
                }
                st.match_log_all |= r.log.as_ref().is_some_and(|l| l.all);
                st.scrub
                    .merge(&ScrubActions::from_rule(&r.scrub, r.set.tos));
            }
            Action::Pass => {
                st.decided = Some((
                    VerdictAction::Pass,
                    me.clone(),
                    r.nat.clone().map(Arc::new),
                    crate::engine::rdr_pool(r).map(Arc::new),
                    r.route.clone().map(|(k, p)| (k, Arc::new(p))),
                ));
                st.keep = (
                    r.keep_state,
                    (!r.state_opts.is_empty()).then(|| std::sync::Arc::new(r.state_opts.clone())),
                );
                st.log_all = r.log.as_ref().is_some_and(|l| l.all);
                st.decided_log = r.log.is_some();
                st.decided_scrub = ScrubActions::from_rule(&r.scrub, r.set.tos);
                st.decided_allow_opts = r.allow_opts;
            }
            Action::Block(p) => {
                st.decided = Some((VerdictAction::Block(*p), me.clone(), None, None, None));
                st.keep = (KeepState::None, None);
                st.log_all = r.log.as_ref().is_some_and(|l| l.all);
                st.decided_log = r.log.is_some();
                st.decided_scrub = ScrubActions::from_rule(&r.scrub, r.set.tos);
            }
            _ => {}
        }
        if r.quick {
            return true;
        }
    }
    false
}

fn on_iface(host: &HostModel, iface: &str, name: &str) -> bool {
    if name == "any" {
        // Every interface but loopback ones.
        return !host.interface(iface).is_some_and(|i| i.loopback);
    }
    iface == name
        || host
            .interface(iface)
            .is_some_and(|i| i.groups.iter().any(|g| g == name))
}

fn mask_eq(a: &IpAddr, b: &IpAddr, bits: u8) -> bool {
    match (a, b) {
        (IpAddr::V4(x), IpAddr::V4(y)) => {
            let m = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits.min(32) as u32)
            };
            u32::from(*x) & m == u32::from(*y) & m
        }
        (IpAddr::V6(x), IpAddr::V6(y)) => {
            let m = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits.min(128) as u32)
            };
            u128::from(*x) & m == u128::from(*y) & m
        }
        _ => false,
    }
}

/// The addresses a dynamic `(ifname[:mods])` stands for right now.
fn dynamic_addrs(host: &HostModel, ifname: &str, mods: &IfMods) -> Vec<(IpAddr, u8)> {
    let ifs: Vec<_> = if ifname == "self" {
        host.interfaces.iter().collect()
    } else {
        host.members(ifname)
    };
    let mut out = Vec::new();
    for i in ifs {
        let (mut v4, mut v6) = (false, false);
        for a in &i.addrs {
            let full = if a.ip.is_ipv4() { 32 } else { 128 };
            if mods.noalias {
                let seen = if a.ip.is_ipv4() { &mut v4 } else { &mut v6 };
                if *seen {
                    continue;
                }
                *seen = true;
            }
            if mods.peer {
                if let Some(p) = a.peer {
                    out.push((p, full));
                }
            } else if mods.broadcast {
                if let IpAddr::V4(x) = a.ip {
                    if a.bits < 31 {
                        let b = u32::from(x) | (u32::MAX >> a.bits);
                        out.push((IpAddr::V4(b.into()), 32));
                    }
                }
            } else if mods.network {
                out.push((a.ip, a.bits));
            } else {
                out.push((a.ip, full));
            }
        }
    }
    out
}

/// A rule in anchor `anchor` naming table `name` reads the anchor's own
/// table of that name when the anchor has one, else the main ruleset's
/// (pf attaches a table to the rule's ruleset, backed by the root's).
fn table_has(ctx: &RefCtx, anchor: &str, name: &str, ip: &IpAddr) -> bool {
    if !anchor.is_empty() && !name.contains('/') {
        if let Some(own) = ctx.tables.tables.get(&format!("{anchor}/{name}")) {
            return own.contains(ip);
        }
    }
    ctx.tables.contains(name, ip)
}

fn addr_matches(spec: &AddrSpec, ip: &IpAddr, iface: &str, anchor: &str, ctx: &RefCtx) -> bool {
    let m = match &spec.addr {
        Addr::Any => true,
        Addr::Net { ip: net, bits } => mask_eq(net, ip, *bits),
        Addr::Range { lo, hi } => lo.is_ipv4() == ip.is_ipv4() && lo <= ip && ip <= hi,
        Addr::Dynamic { ifname, mods, bits } => dynamic_addrs(ctx.host, ifname, mods)
            .iter()
            .any(|(a, b)| mask_eq(a, ip, bits.unwrap_or(*b))),
        Addr::Table(t) => table_has(ctx, anchor, t, ip),
        // pf_routable: some route covers it; with the interface, the
        // route back leaves by it (the unicast reverse-path check).
        Addr::NoRoute => !ctx.host.routable(ip),
        Addr::UrpfFailed => !ctx.host.urpf_ok(ip, iface),
        Addr::RouteLabel(_) => false,
    };
    m != spec.neg
}

fn rule_matches(r: &Rule, me: &RuleRef, ctx: &RefCtx, pkt: &PacketMeta, tag: Option<&str>) -> bool {
    if let Some(d) = r.dir {
        if d != pkt.dir {
            return false;
        }
    }
    if let Some((neg, name)) = &r.ifname {
        if on_iface(ctx.host, &pkt.iface, name) == *neg {
            return false;
        }
    }
    if r.rdomain.is_some_and(|d| d != 0) {
        return false;
    }
    if let Some(af) = r.af {
        if af != pkt.af {
            return false;
        }
    }
    if let Some(p) = r.proto {
        if p != pkt.proto {
            return false;
        }
    }
    if !addr_matches(&r.src.addr, &pkt.src, &pkt.iface, &me.anchor, ctx) {
        return false;
    }
    if let Some(op) = &r.src.port {
        match pkt.sport {
            Some(p) if op.matches(p as u32) => {}
            _ => return false,
        }
    }
    if !addr_matches(&r.dst.addr, &pkt.dst, &pkt.iface, &me.anchor, ctx) {
        return false;
    }
    if let Some(op) = &r.dst.port {
        match pkt.dport {
            Some(p) if op.matches(p as u32) => {}
            _ => return false,
        }
    }
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
            Some((t, c)) if pkt.proto == want && t == ic.ty && ic.code.is_none_or(|x| x == c) => {}
            _ => return false,
        }
    }
    if let Some(t) = r.tos {
        if t != pkt.tos {
            return false;
        }
    }
    // Every packet has pf's default priority: `set prio` is not enforced.
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
            .is_some_and(|i| on_iface(ctx.host, i, name));
        if on == *neg {
            return false;
        }
    }
    if let Some(p) = r.probability {
        if !probability_hit(pkt.random, me, p) {
            return false;
        }
    }
    true
}
