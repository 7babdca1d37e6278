//! Prints the IR exactly as `pfctl -nv` prints a loaded ruleset (pfctl(8),
//! pf.conf(5)): the format is a contract with users who diff it, and with the
//! conformance suite. Rules in the older translation syntax print in that
//! syntax, as FreeBSD's pfctl does.

use std::fmt::Write;

pub use crate::atoms::{addr_str, addrspec_str, proto_str, quoted, word};
use crate::ir::*;
use crate::keywords::{icmp_code_name, icmp_type_name, TCP_FLAGS};

/// A macro definition as `pfctl -v` prints it: `name = "value"`. A value
/// longer than one quoted string may be (the lexer's 8 KiB buffer) is split
/// at spaces into several quoted strings, which read back as the same value.
pub fn macro_def(name: &str, value: &str) -> String {
    let mut out = format!("{} =", word(name));
    let mut rest = value;
    loop {
        let cut = if rest.len() <= crate::lexer::MAX_TOKEN_LEN {
            rest.len()
        } else {
            // Values are words joined by single spaces, each word at most
            // MAX_TOKEN_LEN long, so a space is never further than that.
            rest.as_bytes()[..=crate::lexer::MAX_TOKEN_LEN]
                .iter()
                .rposition(|&b| b == b' ')
                .unwrap_or(rest.len())
        };
        out.push(' ');
        out.push_str(&quoted(&rest[..cut]));
        if cut >= rest.len() {
            return out;
        }
        rest = &rest[cut + 1..];
    }
}

pub fn op_str(op: &CmpOp) -> String {
    match *op {
        CmpOp::Eq(a) => format!("= {a}"),
        CmpOp::Ne(a) => format!("!= {a}"),
        CmpOp::Lt(a) => format!("< {a}"),
        CmpOp::Le(a) => format!("<= {a}"),
        CmpOp::Gt(a) => format!("> {a}"),
        CmpOp::Ge(a) => format!(">= {a}"),
        CmpOp::InsideExcl(a, b) => format!("{a} >< {b}"),
        CmpOp::Outside(a, b) => format!("{a} <> {b}"),
        CmpOp::Range(a, b) => format!("{a}:{b}"),
    }
}

/// `user`/`group` print like ports, but the "unknown" id prints by name.
fn ugid_str(op: &CmpOp) -> String {
    const UNKNOWN: u32 = u32::MAX;
    let f = |v: u32| {
        if v == UNKNOWN {
            "unknown".to_string()
        } else {
            v.to_string()
        }
    };
    match *op {
        CmpOp::Eq(a) => format!("= {}", f(a)),
        CmpOp::Ne(a) => format!("!= {}", f(a)),
        CmpOp::Lt(a) => format!("< {}", f(a)),
        CmpOp::Le(a) => format!("<= {}", f(a)),
        CmpOp::Gt(a) => format!("> {}", f(a)),
        CmpOp::Ge(a) => format!(">= {}", f(a)),
        CmpOp::InsideExcl(a, b) => format!("{} >< {}", f(a), f(b)),
        CmpOp::Outside(a, b) => format!("{} <> {}", f(a), f(b)),
        CmpOp::Range(a, b) => format!("{}:{}", f(a), f(b)),
    }
}

pub fn flags_str(f: u8) -> String {
    TCP_FLAGS
        .chars()
        .enumerate()
        .filter(|(i, _)| f & (1 << i) != 0)
        .map(|(_, c)| c)
        .collect()
}

fn fromto(r: &Rule, out: &mut String) {
    let any = |e: &Endpoint| {
        !e.addr.neg
            && e.port.is_none()
            && match &e.addr.addr {
                Addr::Any => true,
                Addr::Net { ip, bits } => *bits == 0 && ip.is_unspecified(),
                _ => false,
            }
    };
    if any(&r.src) && any(&r.dst) && r.os.is_none() {
        out.push_str(" all");
        return;
    }
    let _ = write!(out, " from {}", addrspec_str(&r.src.addr, r.af));
    if let Some(p) = &r.src.port {
        let _ = write!(out, " port {}", op_str(p));
    }
    if let Some(os) = &r.os {
        let _ = write!(out, " os {}", quoted(os));
    }
    let _ = write!(out, " to {}", addrspec_str(&r.dst.addr, r.af));
    if let Some(p) = &r.dst.port {
        let _ = write!(out, " port {}", op_str(p));
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PoolUse {
    Nat,
    Rdr,
    Route,
    Legacy,
}

pub fn pool_str(p: &Pool, af: Option<Af>, usage: PoolUse) -> String {
    let mut s = String::new();
    match (&p.ifname, &p.list) {
        (ifn, Some(list)) => {
            s.push_str("{ ");
            let v: Vec<String> = list
                .iter()
                .map(|a| match ifn {
                    Some(i) => format!("{}@{i}", addr_str(a, af)),
                    None => addr_str(a, af),
                })
                .collect();
            s.push_str(&v.join(", "));
            s.push_str(" }");
        }
        (Some(ifn), None) => {
            // A routing target with its interface prints as OpenBSD's
            // pfctl prints it, `address@ifname`, whichever form (that or
            // the older `(ifname address)`) it was written in.
            if matches!(p.addr, Addr::Any) {
                s.push_str(ifn);
            } else {
                let _ = write!(s, "{}@{}", addr_str(&p.addr, af), ifn);
            }
        }
        (None, None) => s.push_str(&addr_str(&p.addr, af)),
    }
    match usage {
        PoolUse::Nat => {
            if let Some((a, b)) = p.port {
                if a == b {
                    let _ = write!(s, " port {a}");
                } else {
                    let _ = write!(s, " port {a}:{b}");
                }
            }
        }
        PoolUse::Rdr | PoolUse::Legacy => {
            if let Some((a, b)) = p.port {
                let _ = write!(s, " port {a}");
                if b != a {
                    let _ = write!(s, ":{b}");
                }
            }
        }
        PoolUse::Route => {}
    }
    if let Some((off, len, id)) = p.map_e {
        let _ = write!(s, " map-e-portset {off}/{len}/{id}");
    }
    match p.kind {
        PoolType::None => {}
        PoolType::Bitmask => s.push_str(" bitmask"),
        PoolType::Random => s.push_str(" random"),
        PoolType::SourceHash(k) => {
            s.push_str(" source-hash 0x");
            for b in k {
                let _ = write!(s, "{b:02x}");
            }
        }
        PoolType::RoundRobin => s.push_str(" round-robin"),
        PoolType::LeastStates => s.push_str(" least-states"),
    }
    if p.sticky {
        s.push_str(" sticky-address");
    }
    if p.static_port {
        s.push_str(" static-port");
    }
    s
}

fn log_str(l: &LogOpts) -> String {
    let mut items = Vec::new();
    if l.all {
        items.push("all".to_string());
    }
    if l.matches {
        items.push("matches".to_string());
    }
    if l.user {
        items.push("user".to_string());
    }
    if let Some(t) = &l.to {
        items.push(format!("to {}", word(t)));
    }
    if items.is_empty() {
        " log".into()
    } else {
        format!(" log ({})", items.join(", "))
    }
}

fn icmp_code_item(v: (u8, u8), v6: bool) -> String {
    icmp_code_name(v.0, v.1, v6)
        .map(str::to_string)
        .unwrap_or_else(|| v.1.to_string())
}

fn block_str(p: &BlockPolicy, af: Option<Af>) -> String {
    match p {
        BlockPolicy::Drop => " drop".into(),
        BlockPolicy::Return => " return".into(),
        BlockPolicy::ReturnRst { ttl: 0 } => " return-rst".into(),
        BlockPolicy::ReturnRst { ttl } => format!(" return-rst(ttl {ttl})"),
        BlockPolicy::ReturnIcmp { v4, v6 } => match af {
            Some(Af::Inet) => format!(" return-icmp({})", icmp_code_item(*v4, false)),
            Some(Af::Inet6) => format!(" return-icmp6({})", icmp_code_item(*v6, true)),
            None => format!(
                " return-icmp({}, {})",
                icmp_code_item(*v4, false),
                icmp_code_item(*v6, true)
            ),
        },
    }
}

fn state_opts_str(o: &StateOpts) -> String {
    let mut v: Vec<String> = Vec::new();
    if let Some(m) = o.max {
        v.push(format!("max {m}"));
    }
    if o.no_sync {
        v.push("no-sync".into());
    }
    if o.pflow {
        v.push("pflow".into());
    }
    match o.source_track {
        Some(SourceTrack::Rule) => v.push("source-track rule".into()),
        Some(SourceTrack::Global) => v.push("source-track global".into()),
        None => {}
    }
    if let Some(m) = o.max_src_states {
        v.push(format!("max-src-states {m}"));
    }
    if let Some(m) = o.max_src_conn {
        v.push(format!("max-src-conn {m}"));
    }
    if let Some((a, b)) = o.max_src_conn_rate {
        v.push(format!("max-src-conn-rate {a}/{b}"));
    }
    if let Some(m) = o.max_src_nodes {
        v.push(format!("max-src-nodes {m}"));
    }
    if let Some(ov) = &o.overload {
        let mut s = format!("overload <{}>", ov.table);
        if ov.flush {
            s.push_str(" flush");
            if ov.global {
                s.push_str(" global");
            }
        }
        v.push(s);
    }
    if o.if_bound {
        v.push("if-bound".into());
    }
    if o.floating {
        v.push("floating".into());
    }
    if o.sloppy {
        v.push("sloppy".into());
    }
    for (t, secs) in &o.timeouts {
        v.push(format!("{} {secs}", t.name()));
    }
    v.join(", ")
}

fn scrub_str(s: &Scrub) -> String {
    let mut v: Vec<String> = Vec::new();
    if s.no_df {
        v.push("no-df".into());
    }
    if s.random_id {
        v.push("random-id".into());
    }
    if let Some(t) = s.min_ttl {
        v.push(format!("min-ttl {t}"));
    }
    if s.reassemble_tcp {
        v.push("reassemble tcp".into());
    }
    if let Some(m) = s.max_mss {
        v.push(format!("max-mss {m}"));
    }
    v.join(" ")
}

fn set_str(s: &SetOpts) -> String {
    let mut v: Vec<String> = Vec::new();
    if let Some((a, b)) = s.prio {
        if a == b {
            v.push(format!("prio {a}"));
        } else {
            v.push(format!("prio({a}, {b})"));
        }
    }
    if let Some((q, pq)) = &s.queue {
        match pq {
            Some(p) => v.push(format!("queue({}, {})", word(q), word(p))),
            None => v.push(format!("queue {}", word(q))),
        }
    }
    if let Some(t) = s.tos {
        v.push(format!("tos 0x{t:02x}"));
    }
    if let Some(d) = s.delay {
        v.push(format!("delay {d}"));
    }
    v.join(", ")
}

fn iface_prefix(r: &Rule, out: &mut String) {
    if let Some((neg, name)) = &r.ifname {
        // "any" is the keyword `on any` (pfctl keeps it as the name "any").
        let name = if name == "any" {
            "any".into()
        } else {
            word(name)
        };
        let _ = write!(out, " on {}{}", if *neg { "! " } else { "" }, name);
    }
    if let Some(d) = r.rdomain {
        let _ = write!(out, " on rdomain {d}");
    }
    if let Some(af) = r.af {
        let _ = write!(out, " {}", af.name());
    }
    if let Some(p) = r.proto {
        let _ = write!(out, " proto {}", proto_str(p));
    }
}

fn tags(r: &Rule, out: &mut String) {
    if let Some(t) = &r.tag {
        let _ = write!(out, " tag {}", word(t));
    }
    if let Some((neg, t)) = &r.tagged {
        if *neg {
            out.push_str(" !");
        }
        let _ = write!(out, " tagged {}", word(t));
    }
}

fn legacy_rule(r: &Rule, out: &mut String) {
    let (kw, no) = match &r.action {
        Action::LegacyNat { no } => ("nat", *no),
        Action::LegacyRdr { no } => ("rdr", *no),
        Action::LegacyBinat { no } => ("binat", *no),
        _ => unreachable!(),
    };
    if no {
        out.push_str("no ");
    }
    out.push_str(kw);
    if r.legacy_pass {
        out.push_str(" pass");
    }
    if let Some(l) = &r.log {
        out.push_str(&log_str(l));
    }
    iface_prefix(r, out);
    fromto(r, out);
    tags(r, out);
    let pool = r.nat.as_ref().or(r.rdr.as_ref());
    if let (false, Some(p)) = (no, pool) {
        let _ = write!(out, " -> {}", pool_str(p, r.af, PoolUse::Legacy));
    }
}

fn legacy_scrub(r: &Rule, out: &mut String) {
    out.push_str("scrub");
    if let Some(d) = r.dir {
        out.push_str(if d == Direction::In { " in" } else { " out" });
    }
    if let Some(l) = &r.log {
        out.push_str(&log_str(l));
    }
    iface_prefix(r, out);
    fromto(r, out);
    let s = scrub_str(&r.scrub);
    if !s.is_empty() {
        let _ = write!(out, " {s}");
    }
    if let Some(f) = &r.scrub.fragment {
        let _ = write!(out, " fragment {f}");
    }
    if let Some(t) = r.set.tos {
        let _ = write!(out, " set-tos 0x{t:02x}");
    }
}

/// One rule as pfctl prints it (inline anchors include their body).
pub fn rule_str(r: &Rule, depth: usize) -> String {
    let mut out = String::new();
    let indent = "  ".repeat(depth);
    out.push_str(&indent);
    match &r.action {
        Action::LegacyNat { .. } | Action::LegacyRdr { .. } | Action::LegacyBinat { .. } => {
            legacy_rule(r, &mut out);
            return out;
        }
        Action::LegacyScrub => {
            legacy_scrub(r, &mut out);
            return out;
        }
        Action::Pass => out.push_str("pass"),
        Action::Match => out.push_str("match"),
        Action::Block(p) => {
            out.push_str("block");
            out.push_str(&block_str(p, r.af));
        }
        Action::Anchor(k) => {
            out.push_str(match k {
                AnchorKind::Filter => "anchor",
                AnchorKind::Nat => "nat-anchor",
                AnchorKind::Rdr => "rdr-anchor",
                AnchorKind::Binat => "binat-anchor",
            });
            if let Some(n) = &r.anchor_name {
                let _ = write!(out, " {}", quoted(n));
            }
        }
    }
    let is_anchor = r.is_anchor();
    if let Some(d) = r.dir {
        out.push_str(if d == Direction::In { " in" } else { " out" });
    }
    if let Some(l) = &r.log {
        out.push_str(&log_str(l));
    }
    if r.quick {
        out.push_str(" quick");
    }
    iface_prefix(r, &mut out);
    fromto(r, &mut out);
    if let Some((neg, n)) = &r.received_on {
        let _ = write!(
            out,
            " {}received-on {}",
            if *neg { "! " } else { "" },
            word(n)
        );
    }
    if let Some(u) = &r.user {
        let _ = write!(out, " user {}", ugid_str(u));
    }
    if let Some(g) = &r.group {
        let _ = write!(out, " group {}", ugid_str(g));
    }
    if let Some((f, m)) = r.flags {
        let _ = write!(out, " flags {}/{}", flags_str(f), flags_str(m));
    } else if matches!(r.action, Action::Pass)
        && (r.proto.is_none() || r.proto == Some(6))
        && !r.fragment
        && !is_anchor
        && r.keep_state != KeepState::None
    {
        out.push_str(" flags any");
    }
    if let Some(ic) = &r.icmp {
        out.push_str(if ic.v6 { " icmp6-type" } else { " icmp-type" });
        match icmp_type_name(ic.ty, ic.v6) {
            Some(n) => {
                let _ = write!(out, " {n}");
            }
            None => {
                let _ = write!(out, " {}", ic.ty);
            }
        }
        if let Some(c) = ic.code {
            match icmp_code_name(ic.ty, c, ic.v6) {
                Some(n) => {
                    let _ = write!(out, " code {n}");
                }
                None => {
                    let _ = write!(out, " code {c}");
                }
            }
        }
    }
    if let Some(t) = r.tos {
        let _ = write!(out, " tos 0x{t:02x}");
    }
    if let Some(p) = r.prio {
        let _ = write!(out, " prio {p}");
    }
    if let Some((n, s)) = r.max_pkt_rate {
        let _ = write!(out, " max-pkt-rate {n}/{s}");
    }
    if !r.scrub.is_empty() {
        let _ = write!(out, " scrub ({})", scrub_str(&r.scrub));
    }
    if !r.set.is_empty() {
        let _ = write!(out, " set ({})", set_str(&r.set));
    }
    let has_opts = !r.state_opts.is_empty();
    match r.keep_state {
        KeepState::None => {
            if matches!(r.action, Action::Pass) && !is_anchor {
                out.push_str(" no state");
            }
        }
        KeepState::Keep => {
            if has_opts {
                out.push_str(" keep state");
            }
        }
        KeepState::Modulate => out.push_str(" modulate state"),
        KeepState::Synproxy => out.push_str(" synproxy state"),
    }
    if let Some(p) = r.probability {
        // pfctl stores probability as a fraction of UINT_MAX and prints it
        // with %g semantics.
        let pct = p as f64 * 100.0 / u32::MAX as f64;
        let _ = write!(out, " probability {}%", fmt_g(pct));
    }
    if has_opts {
        let _ = write!(out, " ({})", state_opts_str(&r.state_opts));
    }
    if r.fragment {
        out.push_str(" fragment");
    }
    if r.allow_opts {
        out.push_str(" allow-opts");
    }
    if let Some(l) = &r.label {
        let _ = write!(out, " label {}", quoted(l));
    }
    if let Some(n) = r.ridentifier {
        let _ = write!(out, " ridentifier {n}");
    }
    if let Some((pipe, a, b)) = r.dummynet {
        let kw = if pipe { "dnpipe" } else { "dnqueue" };
        match b {
            Some(b) => {
                let _ = write!(out, " {kw}({a}, {b})");
            }
            None => {
                let _ = write!(out, " {kw} {a}");
            }
        }
    }
    if r.once {
        out.push_str(" once");
    }
    tags(r, &mut out);
    if let Some(t) = r.rtable {
        let _ = write!(out, " rtable {t}");
    }
    match &r.divert {
        Some(Divert::To { addr, port }) => {
            let _ = write!(out, " divert-to {addr} port {port}");
        }
        Some(Divert::Reply) => out.push_str(" divert-reply"),
        Some(Divert::Packet { port }) => {
            let _ = write!(out, " divert-packet port {port}");
        }
        None => {}
    }
    if let Some((af, p, p2)) = &r.af_to {
        let _ = write!(
            out,
            " af-to {} from {}",
            af.name(),
            pool_str(p, Some(*af), PoolUse::Route)
        );
        if let Some(p2) = p2 {
            let _ = write!(out, " to {}", pool_str(p2, Some(*af), PoolUse::Route));
        }
    } else {
        if let Some(p) = &r.nat {
            let _ = write!(out, " nat-to {}", pool_str(p, r.af, PoolUse::Nat));
        }
        if let Some(p) = &r.rdr {
            let _ = write!(out, " rdr-to {}", pool_str(p, r.af, PoolUse::Rdr));
        }
    }
    if let Some((k, p)) = &r.route {
        let kw = match k {
            RouteKind::RouteTo => "route-to",
            RouteKind::ReplyTo => "reply-to",
            RouteKind::DupTo => "dup-to",
        };
        let _ = write!(out, " {kw} {}", pool_str(p, r.af, PoolUse::Route));
    }
    if let Some(rs) = &r.inline {
        out.push_str(" {\n");
        for c in &rs.rules {
            out.push_str(&rule_str(c, depth + 1));
            out.push('\n');
        }
        out.push_str(&indent);
        out.push('}');
    }
    out
}

/// C's `%g` for the probability percentages pfctl prints.
pub fn fmt_g(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let exp = v.abs().log10().floor() as i32;
    if !(-5..6).contains(&exp) {
        let s = format!("{:.5e}", v);
        return s;
    }
    let decimals = (5 - exp).max(0) as usize;
    let s = format!("{:.*}", decimals, v);
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    s
}

pub fn table_str(t: &Table) -> String {
    let mut s = format!("table <{}>", t.name);
    if t.constant {
        s.push_str(" const");
    }
    if t.persist {
        s.push_str(" persist");
    }
    if t.counters {
        s.push_str(" counters");
    }
    let mut i = 0;
    while i < t.init.len() {
        match &t.init[i] {
            TableInit::File { path, .. } => {
                let _ = write!(s, " file {}", quoted(path));
                i += 1;
            }
            TableInit::Inline(_) => {
                // Adjacent lists print as one, as pfctl merges them.
                s.push_str(" {");
                while let Some(TableInit::Inline(v)) = t.init.get(i) {
                    for e in v {
                        s.push(' ');
                        if e.neg {
                            s.push('!');
                        }
                        s.push_str(&addr_str(&e.addr, e.addr.af()));
                    }
                    i += 1;
                }
                s.push_str(" }");
            }
        }
    }
    s
}

pub fn option_str(o: &SetOption) -> String {
    match o {
        SetOption::Timeout(t, v) => format!("set timeout {} {v}", t.name()),
        SetOption::Limit(n, v) => format!("set limit {n} {v}"),
        SetOption::Optimization(s) => format!("set optimization {s}"),
        SetOption::RulesetOptimization(s) => format!("set ruleset-optimization {s}"),
        SetOption::LogInterface(Some(i)) => format!("set loginterface {i}"),
        SetOption::LogInterface(None) => "set loginterface none".into(),
        SetOption::HostId(h) => format!("set hostid 0x{h:08x}"),
        SetOption::BlockPolicy(BlockPolicy::Return) => "set block-policy return".into(),
        SetOption::BlockPolicy(_) => "set block-policy drop".into(),
        SetOption::FailPolicy(BlockPolicy::Return) => "set fail-policy return".into(),
        SetOption::FailPolicy(_) => "set fail-policy drop".into(),
        SetOption::StatePolicy(s) => format!("set state-policy {s}"),
        SetOption::StateDefaults(o) => format!("set state-defaults {}", state_opts_str(o)),
        SetOption::Fingerprints(f) => format!("set fingerprints {}", quoted(f)),
        SetOption::Skip(v) => {
            if v.len() == 1 {
                format!("set skip on {}", v[0])
            } else {
                format!("set skip on {{ {} }}", v.join(" "))
            }
        }
        SetOption::Debug(d) => format!("set debug {d}"),
        SetOption::KeepCounters => "set keepcounters".into(),
        // pfctl prints a space after yes/no even without no-df.
        SetOption::Reassemble { yes, no_df } => format!(
            "set reassemble {} {}",
            if *yes { "yes" } else { "no" },
            if *no_df { "no-df" } else { "" }
        ),
        SetOption::Syncookies(SyncookiesMode::Never) => "set syncookies never".into(),
        SetOption::Syncookies(SyncookiesMode::Always) => "set syncookies always".into(),
        SetOption::Syncookies(SyncookiesMode::Adaptive { start, end }) => {
            format!("set syncookies adaptive (start {start}, end {end})")
        }
    }
}

/// Bandwidth the way pfctl prints it: the largest unit that divides evenly.
pub fn rate_str(bps: u64) -> String {
    let units = [(1_000_000_000u64, "G"), (1_000_000, "M"), (1_000, "K")];
    for (div, u) in units {
        if bps >= div && bps % div == 0 {
            return format!("{}{u}", bps / div);
        }
    }
    format!("{bps}")
}

pub fn queue_str(q: &Queue) -> String {
    let mut s = format!("queue {}", q.name);
    if let Some(i) = &q.ifname {
        if q.parent.is_none() {
            let _ = write!(s, " on {i}");
        }
    }
    if let Some(p) = &q.parent {
        let _ = write!(s, " parent {p}");
    }
    if let Some(f) = q.flows {
        let _ = write!(s, " flows {f}");
    }
    if let Some(qu) = q.quantum {
        let _ = write!(s, " quantum {qu}");
    }
    // pfctl's print_queuespec: the service curves (`, min`, `, max` only
    // after a bandwidth), then default, then qlimit.
    let curve = |s: &mut String, prefix: &str, rate: u64, burst: Option<(u64, u32)>| {
        let _ = write!(s, "{prefix}{}", rate_str(rate));
        if let Some((b, ms)) = burst {
            let _ = write!(s, " burst {} for {ms}ms", rate_str(b));
        }
    };
    if let Some(b) = q.bandwidth {
        curve(&mut s, " bandwidth ", b, q.bandwidth_burst);
        if let Some(m) = q.min {
            curve(&mut s, ", min ", m, q.min_burst);
        }
        if let Some(m) = q.max {
            curve(&mut s, ", max ", m, q.max_burst);
        }
    }
    if q.default {
        s.push_str(" default");
    }
    if let Some(l) = q.qlimit {
        let _ = write!(s, " qlimit {l}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn g_format() {
        assert_eq!(fmt_g(50.0), "50");
        assert_eq!(fmt_g(0.8), "0.8");
        assert_eq!(fmt_g(33.333333), "33.3333");
    }

    #[test]
    fn rates() {
        assert_eq!(rate_str(1_000_000), "1M");
        assert_eq!(rate_str(750_000), "750K");
        assert_eq!(rate_str(1500), "1500");
    }

    #[test]
    fn addresses() {
        let a = Addr::Net {
            ip: "10.0.0.0".parse().unwrap(),
            bits: 8,
        };
        assert_eq!(addr_str(&a, Some(Af::Inet)), "10.0.0.0/8");
        let d = Addr::Dynamic {
            ifname: "self".into(),
            mods: IfMods::default(),
            bits: Some(40),
        };
        assert_eq!(addr_str(&d, Some(Af::Inet)), "(self)");
        assert_eq!(addr_str(&d, Some(Af::Inet6)), "(self)/40");
    }
}
