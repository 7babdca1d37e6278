//! What the running daemon answers on its control socket: listings with
//! pfctl's meaning (`show rules|states|info|interfaces|tables|anchors|
//! timeouts|limits|memory`), table and anchor changes, killing states and
//! reloads. Each answer is `{"ok", "text", "data"}`: `text` is what the CLI
//! prints (pfctl's layout where pfctl has one), `data` what `--json`
//! prints. Everything here runs on the control thread and holds the data
//! plane's lock only while it reads or changes it.

use std::net::IpAddr;
use std::path::Path;

use palisade_conf::host::HostModel;
use palisade_conf::ir::{Addr, Direction, Timeout};
use palisade_conf::print::proto_str;
use palisade_conf::{parse_bytes, parse_input, Input, ParseOptions, ParseOutput};
use palisade_filter::osfp::FingerprintDb;
use palisade_filter::packet::RuleListing;
use palisade_filter::table::net_key;
use palisade_net::config::Prefix;
use serde_json::{json, Value};

use crate::control::Reply;
use crate::daemon::Shared;
use crate::request::{AnchorOp, Kill, Listing, Request, TableOp};
use crate::snapshot;

fn fail(text: impl Into<String>) -> Value {
    let mut t: String = text.into();
    if !t.ends_with('\n') {
        t.push('\n');
    }
    json!({"ok": false, "text": t})
}

fn done(text: String, data: Value) -> Value {
    json!({"ok": true, "text": text, "data": data})
}

/// Table entries are stamped in seconds of the data plane's clock (from
/// `daemon::clock_origin`), which `overload` uses for the entries it adds.
fn table_secs(sh: &Shared) -> u64 {
    sh.start.elapsed().as_secs()
}

/// One request, as the control socket answers it: listings that grow
/// with the traffic in parts, everything else at once.
pub fn reply<'a>(sh: &'a Shared, req: &Value) -> Reply<'a> {
    match Request::parse(req) {
        Err(e) => Reply::Once(fail(e)),
        Ok(Request::Show {
            what: Listing::States,
            level,
            ..
        }) => show_states(sh, level),
        Ok(r) => Reply::Once(answer(sh, &r)),
    }
}

/// One typed request (all but `show states`, answered in parts, and
/// `log`, a stream).
pub fn answer(sh: &Shared, req: &Request) -> Value {
    let v = answer_inner(sh, req);
    // States a request removed (kill, flush, a reload) leave the in-kernel
    // fast path at once.
    sh.dp().fast_reconcile();
    v
}

fn answer_inner(sh: &Shared, req: &Request) -> Value {
    match req {
        Request::Show {
            what,
            level,
            anchor,
        } => {
            let verbose = *level > 0;
            match what {
                Listing::Rules => show_rules(sh, anchor, *level),
                Listing::States => fail("show states: answered in parts (ops::reply)"),
                Listing::Info => show_info(sh),
                Listing::Interfaces => show_interfaces(sh, verbose),
                Listing::Tables => show_tables(sh, anchor, verbose),
                Listing::Anchors => show_anchors(sh, anchor),
                Listing::Timeouts => show_timeouts(sh),
                Listing::Limits => show_limits(sh),
                Listing::Memory => show_memory(sh),
                Listing::Osfp => show_osfp(sh),
                Listing::Neighbors => show_neighbors(sh),
                Listing::Fdb => show_fdb(sh),
                Listing::Routes => show_routes(sh),
                Listing::Labels => show_labels(sh, anchor),
                Listing::Sources => show_sources(sh),
            }
        }
        Request::Table { name, op } => table(sh, name, op),
        Request::Anchor { name, op, level } => anchor(sh, name, op, *level),
        Request::Kill(k) => kill(sh, k),
        Request::Reload { file } => {
            let (ok, msgs) = reload(sh, file.as_deref());
            // The log hears of it as of a SIGHUP's reload (run.rs): its
            // warnings, errors and outcome, not only the client.
            log_reload(ok, &msgs);
            json!({"ok": ok, "text": msgs.join("\n") + "\n"})
        }
        Request::Log => fail("log: a stream (answered by the control socket)"),
        Request::Carp(op) => crate::carp::answer(sh, op),
        Request::SyncShow => crate::pfsync::show(sh),
        Request::BridgeFlush { bridge, mac } => {
            let r = sh.dp().fdb_forget(bridge, mac.as_ref());
            match r {
                Ok(n) => {
                    tracing::info!(
                        "bridge {bridge}: {n} learnt address{} forgotten (by hand)",
                        if n == 1 { "" } else { "es" }
                    );
                    match mac {
                        Some(m) if n == 0 => fail(format!(
                            "bridge {bridge}: {} was not learnt (a static entry stays)",
                            palisade_wire::ethernet::mac_string(m)
                        )),
                        _ => done(
                            format!("{n} address{} forgotten\n", if n == 1 { "" } else { "es" }),
                            json!({"forgotten": n}),
                        ),
                    }
                }
                Err(e) => fail(format!("bridge {bridge}: {e}")),
            }
        }
        Request::NatLook { src, dst } => natlook(sh, *src, *dst),
        Request::TranslationAnchor { anchor } => {
            let legacy = sh.dp().filter.engine().calls_translation_anchor(anchor);
            done(
                format!("{}\n", if legacy { "yes" } else { "no" }),
                json!({"legacy": legacy}),
            )
        }
        Request::Osfp { addr, port } => osfp(sh, *addr, *port),
    }
}

/// The `osfp` answer's words when SYNs are not recorded (no `[osfp]`),
/// and when the address asked about was not seen: the greylist service
/// tells them apart.
pub const OSFP_NOT_RECORDED: &str = "SYNs are not recorded";
pub const OSFP_NOT_SEEN: &str = "no SYN from";

/// What the SYNs of a host (or of one of its connections) were taken for.
fn osfp(sh: &Shared, addr: std::net::IpAddr, port: Option<u16>) -> Value {
    let dp = sh.dp();
    let Some(log) = &dp.filter.synlog else {
        return fail(format!(
            "osfp: {OSFP_NOT_RECORDED} (add `[osfp]` with `record = true` to palisade.toml)"
        ));
    };
    let now = sh.start.elapsed().as_millis() as u64;
    let label = |o: &Option<std::sync::Arc<palisade_filter::osfp::Fingerprint>>| {
        o.as_deref()
            .map_or("unknown".to_string(), palisade_filter::filter::os_label)
    };
    let ago = |t: u64| now.saturating_sub(t) / 1000;
    let syn = |s: &palisade_filter::synlog::SynSeen| {
        json!({"os": label(&s.os), "description": s.os.as_ref().map(|o| o.description.clone()),
               "signature": s.signature, "ttl": s.ttl, "distance": s.distance,
               "dst": std::net::SocketAddr::new(s.dst, s.dport).to_string(), "seen_secs_ago": ago(s.at_ms)})
    };
    match port {
        Some(p) => match log.connection(addr, p) {
            Some(s) => {
                let from = std::net::SocketAddr::new(addr, p);
                json!({"ok": true,
                       "text": format!("{from} -> {}: {} (signature {}, distance {}, {} s ago)\n",
                                       std::net::SocketAddr::new(s.dst, s.dport), label(&s.os), s.signature, s.distance, ago(s.at_ms)),
                       "data": {"connection": syn(s)}})
            }
            None => fail(format!(
                "osfp: {OSFP_NOT_SEEN} {} recorded",
                std::net::SocketAddr::new(addr, p)
            )),
        },
        None => match log.host(addr) {
            Some(h) => json!({"ok": true,
                "text": format!("{addr}: {} (last SYN: {}, signature {}, distance {}); {} connection(s), first seen {} s ago, last {} s ago\n",
                                label(&h.os), label(&h.last.os), h.last.signature, h.last.distance,
                                h.connections, ago(h.first_ms), ago(h.last_ms)),
                "data": {"os": label(&h.os), "connections": h.connections,
                         "first_seen_secs_ago": ago(h.first_ms), "last_seen_secs_ago": ago(h.last_ms),
                         "changed_secs_ago": (h.changed_ms > 0).then(|| ago(h.changed_ms)),
                         "last": syn(&h.last)}}),
            None => fail(format!("osfp: {OSFP_NOT_SEEN} {addr} recorded")),
        },
    }
}

/// pf's DIOCNATLOOK for a TCP connection a local proxy accepted: where
/// it was going on the wire (before `rdr-to` / `divert-to`).
fn natlook(sh: &Shared, src: std::net::SocketAddr, dst: std::net::SocketAddr) -> Value {
    let seen = palisade_filter::state::FlowKey {
        proto: 6,
        src: src.ip(),
        dst: dst.ip(),
        sport: src.port(),
        dport: dst.port(),
    };
    let found = sh.dp().filter.states.natlook(&seen, Direction::In);
    match found {
        Some(k) => {
            let s = std::net::SocketAddr::new(k.src, k.sport);
            let d = std::net::SocketAddr::new(k.dst, k.dport);
            json!({"ok": true, "text": format!("{s} -> {d}\n"),
                   "data": {"src": s.to_string(), "dst": d.to_string()}})
        }
        None => fail(format!("natlook: no state translates {src} -> {dst} (tcp)")),
    }
}

/// Read pf.conf (or `file`) again; swap the ruleset in only if it parses
/// and compiles completely. States survive; so do tables that pf.conf
/// does not define (created at run time) and anchors loaded at run time.
/// A bad file changes nothing. Returns whether it was swapped and the
/// messages (every error, warnings, the outcome).
pub fn reload(sh: &Shared, file: Option<&Path>) -> (bool, Vec<String>) {
    // systemd hears of it (RELOADING=1, then READY=1 with the outcome).
    crate::notify::reloading();
    let (ok, msgs) = reload_ruleset(sh, file);
    let last = msgs.last().map(String::as_str).unwrap_or("");
    crate::notify::reloaded(sh, ok, last);
    (ok, msgs)
}

/// The warnings start-up prints about its pf.conf (load::load) that a
/// ruleset loaded while running earns as well: features parsed but not
/// enforced, interfaces palisade.toml lacks, `on` a CARP interface (the
/// running palisade.toml's), `to ::1`, OS names no fingerprint has. One
/// list for reloads and `anchor NAME load`, so that neither says less
/// than start-up (reloads left out the CARP one). palisade.toml's own
/// warnings (proxy ARP) are not repeated: a reload does not read it.
fn load_warnings(
    out: &ParseOutput,
    file: &str,
    host: &HostModel,
    cfg: &palisade_net::config::Config,
    db: &FingerprintDb,
) -> Vec<String> {
    let mut w = out.unenforced_warnings(file);
    w.extend(crate::load::unknown_interfaces(&out.config, host));
    w.extend(crate::load::carp_interface_rules(&out.config, cfg));
    w.extend(crate::load::member_translation_rules(&out.config, cfg));
    w.extend(crate::load::to_v6_loopback(&out.config));
    w.extend(crate::load::ftp_proxy_anchors(&out.config));
    w.extend(crate::load::anchor_only_tables(&out.config));
    w.extend(crate::load::unknown_os_in(&out.config, db));
    w
}

/// The `set` options a reload cannot change (pfsync's creator id, the
/// fingerprints file), as the daemon compares them.
pub fn restart_only_options(opts: &[palisade_conf::ir::SetOption]) -> String {
    use palisade_conf::ir::SetOption;
    let kept: Vec<&SetOption> = opts
        .iter()
        .filter(|o| matches!(o, SetOption::HostId(_) | SetOption::Fingerprints(_)))
        .collect();
    format!("{kept:?}")
}

fn reload_ruleset(sh: &Shared, file: Option<&Path>) -> (bool, Vec<String>) {
    let path = file.unwrap_or(&sh.pf_path);
    let opts = ParseOptions {
        host: sh.host.clone(),
        ..Default::default()
    };
    let out = parse_input(Input::File(path), &opts);
    let mut msgs = out.stderr.clone();
    if out.errors == 0 {
        let cfg = {
            let dp = sh.dp();
            msgs.extend(load_warnings(
                &out,
                &path.display().to_string(),
                &sh.host,
                &dp.cfg,
                dp.filter.fingerprints(),
            ));
            // A lower limit (or adaptive timeouts) acting on the states
            // there now: pf expires them as told, so it is said first.
            msgs.extend(dp.filter.states.options_warning(&out.config.options));
            (!dp.cfg.carp.is_empty() || dp.cfg.pfsync.is_some()).then(|| dp.cfg.clone())
        };
        // The whole ruleset (not an anchor's): whether it lets the pair's
        // CARP and pfsync through, as at start. It compiles the ruleset to
        // try it: without the data plane's lock.
        if let Some(cfg) = cfg {
            msgs.extend(crate::load::blocked_ha_traffic(&out.config, &cfg, &sh.host));
        }
    }
    if out.errors > 0 {
        msgs.push(format!(
            "palisade: reload of {} failed ({} error{}): the running ruleset stays",
            path.display(),
            out.errors,
            if out.errors == 1 { "" } else { "s" }
        ));
        return (false, msgs);
    }
    // Compiled without the data-plane lock; its tables and `load anchor`s
    // take effect at the swap. Tables created at run time and anchors
    // loaded at run time live beside the ruleset and stay.
    let current = sh.dp().filter.engine_arc();
    let next = current.successor(&out.config);
    {
        let mut dp = sh.dp();
        // pf.conf's tables with those made at run time must fit `set
        // limit tables` (pf's pool refuses the transaction; the parser
        // counted pf.conf's alone). Counted under the lock the commit
        // takes, so no table is made in between.
        let (need, limit) = (next.tables_after(), next.tables_limit());
        if need > limit {
            msgs.push(format!(
                "palisade: {}: {need} tables with those made at run time, over set limit tables {limit}: Cannot allocate memory",
                path.display()
            ));
            msgs.push(format!(
                "palisade: reload of {} failed (1 error): the running ruleset stays",
                path.display()
            ));
            return (false, msgs);
        }
        let engine = next.commit(table_secs(sh));
        dp.filter.set_engine(engine);
        // Timeouts, limits, state policy and defaults, skip: in force at
        // once, for the states already there too (as pfctl -f sets them).
        let skipped = dp.filter.skipped().clone();
        dp.filter.set_options(&out.config);
        // An interface pf now skips, or filters again: the in-kernel
        // program's flows were decided by passes that no longer happen
        // (or were not, on one side), and a routing option applied on
        // the way out is not applied on a skipped interface. Every flow
        // comes back to user space, which hands them over again as the
        // new ruleset decides them.
        if *dp.filter.skipped() != skipped {
            dp.fast_take_all_back();
        }
    }
    *sh.queues.lock().unwrap_or_else(|e| e.into_inner()) =
        out.config.queues.iter().map(|q| q.name.clone()).collect();
    let now_text = std::fs::read_to_string(&sh.config_path).ok();
    if sh.config_text.is_some() && now_text != sh.config_text {
        msgs.push(format!(
            "palisade: warning: {} changed since start: a reload reads pf.conf only; palisade.toml's changes (interfaces, addresses, proxy-arp, CARP, pfsync...) take effect at the next start",
            sh.config_path.display()
        ));
        // Checked now as the next start will read it (the ports need not
        // be there to be named): an error would stop that start.
        if let Some(t) = &now_text {
            if let Err(e) = palisade_net::config::Config::parse(&sh.config_path, t, &|_| true) {
                msgs.push(format!(
                    "palisade: warning: {} has an error, and the next start would refuse it: {e}",
                    sh.config_path.display()
                ));
            }
        }
    }
    if restart_only_options(&out.config.options) != sh.options {
        msgs.push(
            "palisade: warning: `set hostid` or `set fingerprints` changed; they take effect at the next start (the other `set` options are in force)".into(),
        );
    }
    msgs.push(format!(
        "palisade: reloaded {} ({} rules); states kept",
        path.display(),
        out.config.main.rules.len()
    ));
    (true, msgs)
}

/// A reload's messages in the log, as SIGHUP's and `palisade reload`'s
/// alike: warnings at WARN (a loaded ruleset's too), the outcome at INFO,
/// everything of a refused one at WARN. (`reload` logged a loaded
/// ruleset's warnings at INFO, SIGHUP at WARN: a journal filtered by
/// priority missed one of them.)
pub fn log_reload(ok: bool, msgs: &[String]) {
    for m in msgs {
        if ok && !m.contains("warning:") {
            tracing::info!("{m}");
        } else if !ok && !m.contains("warning:") {
            // A refused reload's errors and its outcome (the file the
            // next start reads is bad); its warnings stay warnings.
            tracing::error!("{m}");
        } else {
            // (The level says it: not "WARN warning: ...".)
            tracing::warn!("{}", m.strip_prefix("warning: ").unwrap_or(m));
        }
    }
}

fn rule_json(r: &RuleListing) -> Value {
    let (ev, p, b, s, st) = r.stats.snapshot();
    json!({
        "nr": r.nr,
        "rule": r.text,
        "evaluations": ev,
        "packets": p,
        "bytes": b,
        "states": s,
        "state_creations": st,
        "packets_in": r.stats.packets(Direction::In),
        "packets_out": r.stats.packets(Direction::Out),
        "bytes_in": r.stats.bytes(Direction::In),
        "bytes_out": r.stats.bytes(Direction::Out),
        "rules": r.inline.iter().map(rule_json).collect::<Vec<_>>(),
    })
}

/// Rules as pfctl -sr prints them; with -v each with its counters, with
/// -vv also its number.
fn rules_text(rules: &[RuleListing], depth: usize, level: u64, out: &mut String) {
    let ind = "  ".repeat(depth);
    let pid = std::process::id();
    for r in rules {
        if level >= 2 {
            out.push_str(&format!("{ind}@{} ", r.nr));
        } else {
            out.push_str(&ind);
        }
        out.push_str(&r.text);
        if !r.inline.is_empty() {
            out.push_str(" {");
        }
        out.push('\n');
        if level >= 1 {
            let (ev, p, b, s, st) = r.stats.snapshot();
            out.push_str(&format!(
                "{ind}  [ Evaluations: {ev:<8}  Packets: {p:<8}  Bytes: {b:<10}  States: {s:<6}]\n{ind}  [ Inserted: uid 0 pid {pid} State Creations: {st:<6}]\n"
            ));
        }
        if !r.inline.is_empty() {
            rules_text(&r.inline, depth + 1, level, out);
            out.push_str(&format!("{ind}}}\n"));
        }
    }
}

fn show_rules(sh: &Shared, anchor: &str, level: u64) -> Value {
    if anchor.trim_start_matches('/') == "*" {
        return show_everything(sh, level);
    }
    if let Some(prefix) = anchor.trim_start_matches('/').strip_suffix("/*") {
        return show_children(sh, prefix, level);
    }
    let engine = sh.dp().filter.engine_arc();
    let listing = engine.listing(anchor).or_else(|| {
        // Called by name, nothing loaded: empty, as pfctl shows it.
        let a = anchor.trim_start_matches('/');
        engine
            .called_anchors()
            .iter()
            .any(|c| c == a)
            .then(Vec::new)
    });
    let Some(l) = listing else {
        let below = format!("{}/", anchor.trim_matches('/'));
        // Direct children, as `PREFIX/*` shows and flushes them.
        let children = sh
            .dp()
            .filter
            .engine()
            .anchor_names()
            .iter()
            .any(|a| a.strip_prefix(&below).is_some_and(|r| !r.contains('/')));
        return fail(if children {
            format!("no anchor '{anchor}' is loaded; the anchors under it: '{below}*'")
        } else {
            format!("no anchor '{anchor}' is loaded")
        });
    };
    let mut text = String::new();
    rules_text(&l, 0, level, &mut text);
    done(text, l.iter().map(rule_json).collect())
}

/// `show rules -a '*'` (pfctl -a '*' -sr): the main ruleset, then every
/// anchor loaded (by pf.conf's `load anchor` or at run time), each with
/// its rules, in name order.
fn show_everything(sh: &Shared, level: u64) -> Value {
    let engine = sh.dp().filter.engine_arc();
    let main = engine.listing("").unwrap_or_default();
    let mut text = String::new();
    rules_text(&main, 0, level, &mut text);
    let mut items =
        vec![json!({"anchor": "", "rules": main.iter().map(rule_json).collect::<Vec<_>>()})];
    anchors_text(&engine, engine.anchor_names(), level, &mut text, &mut items);
    done(text, Value::Array(items))
}

/// `anchor "PREFIX/*" show` (pfctl -a 'PREFIX/*' -sr): the anchors
/// loaded under PREFIX (ftp-proxy's live sessions), each with its rules;
/// nothing when there is none.
fn show_children(sh: &Shared, prefix: &str, level: u64) -> Value {
    let engine = sh.dp().filter.engine_arc();
    let start = format!("{prefix}/");
    let names = engine
        .anchor_names()
        .into_iter()
        .filter(|n| n.strip_prefix(&start).is_some_and(|r| !r.contains('/')));
    let (mut text, mut items) = (String::new(), Vec::new());
    anchors_text(&engine, names, level, &mut text, &mut items);
    done(text, Value::Array(items))
}

/// Each named anchor's rules in a block (`anchor "NAME" { ... }`), and
/// as JSON; names with nothing loaded are passed over.
fn anchors_text(
    engine: &palisade_filter::Engine,
    names: impl IntoIterator<Item = String>,
    level: u64,
    text: &mut String,
    items: &mut Vec<Value>,
) {
    for name in names {
        let Some(l) = engine.listing(&name) else {
            continue;
        };
        *text += &format!("anchor \"{name}\" {{\n");
        rules_text(&l, 1, level, text);
        *text += "}\n";
        items.push(json!({"anchor": name, "rules": l.iter().map(rule_json).collect::<Vec<_>>()}));
    }
}

/// An endpoint as pfctl -ss prints it: `192.0.2.1:80`, `2001:db8::1[80]`.
/// As pfctl prints a state's endpoints: a port whenever it is not zero
/// (an ICMP query's id shows as its port).
fn flow(ip: &IpAddr, port: u16, _proto: u8) -> String {
    match (port != 0, ip.is_ipv6()) {
        (false, _) => ip.to_string(),
        (true, false) => format!("{ip}:{port}"),
        (true, true) => format!("{ip}[{port}]"),
    }
}

use crate::logline::hms;

/// One state, copied out of the table (formatting happens after the data
/// plane's lock is released).
struct Row {
    id: u64,
    creator: u32,
    key: palisade_filter::state::FlowKey,
    translated: Option<palisade_filter::state::FlowKey>,
    dir: Direction,
    iface: String,
    bound: bool,
    state: String,
    age: u64,
    expires: u64,
    packets: [u64; 2],
    bytes: [u64; 2],
    rule: Option<palisade_filter::RuleRef>,
    /// TCP: each side's window (pfctl -vv's `[seqlo + seqhi-seqlo]`).
    peers: Option<[palisade_filter::state::Peer; 2]>,
}

/// States are listed in parts of this many: the data plane's lock is held
/// only while one part is copied, and memory holds one part at a time.
const STATES_PER_PART: usize = 1000;

/// pfctl -ss; -v adds age, expiry, counters and the rule, -vv the id.
/// Sent in parts, whatever the number of states.
fn show_states(sh: &Shared, level: u64) -> Reply<'_> {
    let now = sh.start.elapsed().as_millis() as u64;
    let mut cursor = 0usize;
    Reply::Parts(Box::new(move || {
        let rows: Vec<Row> = {
            let dp = sh.dp();
            let st = &dp.filter.states;
            let mut rows = Vec::with_capacity(STATES_PER_PART);
            for (i, s) in st.iter_from(cursor).take(STATES_PER_PART) {
                cursor = i + 1;
                rows.push(Row {
                    id: s.id,
                    creator: s.creator,
                    key: s.key.clone(),
                    translated: st.translated(s),
                    dir: s.dir,
                    iface: st.iface_name(s).to_string(),
                    bound: s.bound,
                    state: s.state_str(),
                    age: now.saturating_sub(s.created_ms()) / 1000,
                    expires: st.expires_ms(s).saturating_sub(now) / 1000,
                    packets: s.packets,
                    bytes: s.bytes,
                    rule: st.rule_of(s),
                    peers: (s.key.proto == 6).then_some([s.src, s.dst]),
                });
            }
            rows
        };
        if rows.is_empty() {
            return None;
        }
        // Serialized straight from the rows: no JSON tree per state.
        let (text, items) = states_part(&rows, level);
        #[derive(serde::Serialize)]
        struct Part<'a> {
            text: String,
            items: Vec<StateItem<'a>>,
        }
        serde_json::to_string(&Part { text, items }).ok()
    }))
}

/// A state as `show states --json` gives it.
#[derive(serde::Serialize)]
struct StateItem<'a> {
    id: String,
    creator: String,
    proto: String,
    iface: &'a str,
    if_bound: bool,
    dir: &'static str,
    src: Ep,
    dst: Ep,
    nat_src: Option<Ep>,
    nat_dst: Option<Ep>,
    state: &'a str,
    age_s: u64,
    expires_s: u64,
    packets: u64,
    bytes: u64,
    packets_fwd: u64,
    packets_rev: u64,
    bytes_fwd: u64,
    bytes_rev: u64,
    rule: Option<RuleAt<'a>>,
    /// TCP: the initiator's side and the other's (pfctl -vv's windows).
    #[serde(skip_serializing_if = "Option::is_none")]
    windows: Option<[Window; 2]>,
}

/// One side of a TCP state: the lowest sequence number it is expected to
/// send, the highest the other side's window lets it send, its largest
/// window.
#[derive(serde::Serialize)]
struct Window {
    seqlo: u32,
    seqhi: u32,
    max_win: u32,
}

#[derive(serde::Serialize)]
struct Ep {
    addr: IpAddr,
    port: u16,
}

#[derive(serde::Serialize)]
struct RuleAt<'a> {
    anchor: &'a str,
    nr: u32,
}

/// One part of `show states`: its lines and its JSON items.
fn states_part(rows: &[Row], level: u64) -> (String, Vec<StateItem<'_>>) {
    let mut text = String::new();
    let mut list = Vec::with_capacity(rows.len());
    for r in rows {
        let k = &r.key;
        let t = r.translated.as_ref();
        let iface = if r.bound { r.iface.as_str() } else { "all" };
        // As pfctl -ss: an outbound state shows each endpoint as it is on
        // the wire with the original in parentheses when translated, an
        // inbound one as it is behind the firewall with the wire's.
        let left = t.unwrap_or(k);
        let (stack, wire) = if r.dir == Direction::Out {
            (k, left)
        } else {
            (left, k)
        };
        let ep = |src: bool| {
            let (s, w) = if src {
                ((stack.src, stack.sport), (wire.src, wire.sport))
            } else {
                ((stack.dst, stack.dport), (wire.dst, wire.dport))
            };
            let (shown, other) = if r.dir == Direction::Out {
                (w, s)
            } else {
                (s, w)
            };
            if shown == other {
                flow(&shown.0, shown.1, k.proto)
            } else {
                format!(
                    "{} ({})",
                    flow(&shown.0, shown.1, k.proto),
                    flow(&other.0, other.1, k.proto)
                )
            }
        };
        let line = if r.dir == Direction::In {
            format!("{} <- {}", ep(false), ep(true))
        } else {
            format!("{} -> {}", ep(true), ep(false))
        };
        text += &format!("{iface} {} {line}       {}\n", proto_str(k.proto), r.state);
        if level >= 1 {
            text += &format!(
                "   age {}, expires in {}, {}:{} pkts, {}:{} bytes{}\n",
                hms(r.age),
                hms(r.expires),
                r.packets[0],
                r.packets[1],
                r.bytes[0],
                r.bytes[1],
                match &r.rule {
                    Some(x) if x.anchor.is_empty() => format!(", rule {}", x.nr),
                    Some(x) => format!(", anchor {}, rule {}", x.anchor, x.nr),
                    None => String::new(),
                },
            );
        }
        if level >= 2 {
            if let Some([a, b]) = &r.peers {
                // As pfctl: each side's lowest expected sequence number
                // and the window above it; the scale when both use one.
                let side = |p: &palisade_filter::state::Peer| {
                    let mut t = format!("[{} + {}]", p.seqlo, p.seqhi.wrapping_sub(p.seqlo));
                    if let (Some(w), true) = (p.wscale, a.wscale.is_some() && b.wscale.is_some()) {
                        t += &format!(" wscale {w}");
                    }
                    t
                };
                text += &format!("   {}  {}\n", side(a), side(b));
            }
            text += &format!("   id: {:016x} creatorid: {:08x}\n", r.id, r.creator);
        }
        let ep = |ip: IpAddr, port: u16| Ep { addr: ip, port };
        list.push(StateItem {
            id: format!("{:016x}", r.id),
            creator: format!("{:08x}", r.creator),
            proto: proto_str(k.proto),
            iface: &r.iface,
            if_bound: r.bound,
            dir: if r.dir == Direction::In { "in" } else { "out" },
            src: ep(k.src, k.sport),
            dst: ep(k.dst, k.dport),
            nat_src: t
                .filter(|t| t.src != k.src || t.sport != k.sport)
                .map(|t| ep(t.src, t.sport)),
            nat_dst: t
                .filter(|t| t.dst != k.dst || t.dport != k.dport)
                .map(|t| ep(t.dst, t.dport)),
            state: &r.state,
            age_s: r.age,
            expires_s: r.expires,
            packets: r.packets[0] + r.packets[1],
            bytes: r.bytes[0] + r.bytes[1],
            packets_fwd: r.packets[0],
            packets_rev: r.packets[1],
            bytes_fwd: r.bytes[0],
            bytes_rev: r.bytes[1],
            rule: r.rule.as_ref().map(|x| RuleAt {
                anchor: &x.anchor,
                nr: x.nr,
            }),
            windows: r.peers.as_ref().map(|ps| {
                ps.each_ref().map(|p| Window {
                    seqlo: p.seqlo,
                    seqhi: p.seqhi,
                    max_win: p.max_win,
                })
            }),
        });
    }
    (text, list)
}

fn show_info(sh: &Shared) -> Value {
    let d = snapshot::info(sh);
    let up = d.uptime_s;
    let secs = up.max(1) as f64;
    let rate = |n: u64| n as f64 / secs;
    let mut text = format!(
        "Status: Enabled for {} days {}\n\nState Table                          Total             Rate\n",
        up / 86400,
        hms(up % 86400)
    );
    text += &format!("  {:<25} {:>14}\n", "current entries", d.states);
    text += &format!("  {:<25} {:>14}\n", "half-open tcp", d.states_halfopen);
    for (label, n) in [
        ("searches", d.state_searches),
        ("inserts", d.state_inserts),
        ("removals", d.state_removals),
    ] {
        text += &format!("  {label:<25} {n:>14} {:>14.1}/s\n", rate(n));
    }
    // In pfctl's order.
    text += "Counters\n";
    for (r, v) in &d.reasons.0 {
        text += &format!("  {r:<25} {v:>14} {:>14.1}/s\n", rate(*v));
    }
    text += &format!(
        "Syncookies ({})\n",
        if d.syncookies_active {
            "active"
        } else {
            "inactive"
        }
    );
    for (k, v) in &d.syncookies.0 {
        text += &format!("  {k:<25} {v:>14} {:>14.1}/s\n", rate(*v));
    }
    text += &format!(
        "Packets\n  {:<25} {:>14}\n  {:<25} {:>14}\n  {:<25} {:>14}\n",
        "evaluated", d.packets, "passed", d.passed, "blocked", d.blocked
    );
    text += &format!(
        "Fragments\n  {:<25} {:>14}\n  {:<25} {:>14}\n  {:<25} {:>14}\n  {:<25} {:>14}\n  {:<25} {:>14}\n",
        "held",
        d.fragments_held,
        "bytes held",
        d.fragment_bytes,
        // Whole datagrams, each of one or more fragments.
        "datagrams expired",
        d.fragments_expired,
        "datagrams evicted",
        d.fragments_evicted,
        "bad",
        d.fragments_bad
    );
    text += "Data plane\n";
    let mut events = d.dataplane.0.clone();
    events.sort();
    for (k, v) in events {
        text += &format!("  {k:<25} {v:>14}\n");
    }
    text += "Data plane drops\n";
    for (r, v) in &d.dataplane_drops.0 {
        text += &format!("  {r:<25} {v:>14} {:>14.1}/s\n", rate(*v));
    }
    if let Some(fp) = &d.fastpath {
        // What it forwarded is in the counters above too (packets,
        // routed, bridged, per interface), read back every second: a
        // probe took `routed` for user space's share.
        text += "Fast path (in the kernel; what it forwards is also counted above, read back every second)\n";
        for (k, v) in &fp.0 {
            text += &format!("  {k:<25} {v:>14}\n");
        }
    }
    done(text, json!(d))
}

/// Per interface: its configuration and what pf saw on it.
fn show_interfaces(sh: &Shared, verbose: bool) -> Value {
    let list = snapshot::interfaces(sh);
    let mut text = String::new();
    for i in &list {
        text += &format!(
            "{}{}{}{}\n",
            i.name,
            match (&i.port, i.vlan) {
                (Some(p), Some(v)) => format!(" (port {p} vlan {v})"),
                (Some(p), None) => format!(" (port {p})"),
                _ => " (bridge)".into(),
            },
            if i.addresses.is_empty() {
                String::new()
            } else {
                format!(" {}", i.addresses.join(" "))
            },
            if i.groups.is_empty() {
                String::new()
            } else {
                format!(" groups: {}", i.groups.join(" "))
            }
        );
        if let Some(m) = &i.mac {
            text += &format!("\tlladdr {m} (what ARP and NDP answers carry)\n");
        }
        if !i.proxy.is_empty() {
            // (OpenBSD's `arp -an` shows such entries as "published".)
            text += &format!(
                "\tproxy-arp {} (answered for, published)\n",
                i.proxy.join(" ")
            );
        }
        if verbose {
            for (fam, _) in snapshot::FAMILIES {
                for (dir, _) in snapshot::DIRS {
                    for (act, _) in snapshot::ACTIONS {
                        let c = i
                            .counters
                            .get(&format!("{fam}_{dir}_{act}"))
                            .copied()
                            .unwrap_or_default();
                        text += &format!(
                            "\t{}{}/{}:{}[ Packets: {:<18} Bytes: {:<18} ]\n",
                            if dir == "in" { "In" } else { "Out" },
                            if fam == "inet" { "4" } else { "6" },
                            if act == "pass" { "Pass" } else { "Block" },
                            if dir == "in" && act == "pass" {
                                "   "
                            } else if dir == "in" || act == "pass" {
                                "  "
                            } else {
                                " "
                            },
                            c.packets,
                            c.bytes
                        );
                    }
                }
            }
            text += &format!("\tErrors: {}\n", i.errors);
        }
    }
    done(text, json!(list))
}

/// Every table, an anchor's as ANCHOR/NAME; with `-a ANCHOR` (pfctl -a
/// ANCHOR -s Tables) that anchor's own, by their names in it.
fn show_tables(sh: &Shared, anchor: &str, verbose: bool) -> Value {
    let dp = sh.dp();
    let e = dp.filter.engine();
    let t = e.tables();
    let anchor = anchor.trim_matches('/');
    let mut names: Vec<(&str, &String)> = t
        .tables
        .keys()
        .filter_map(|n| {
            if anchor.is_empty() {
                Some((n.as_str(), n))
            } else {
                palisade_filter::table::of_anchor(n, anchor).then(|| (&n[anchor.len() + 1..], n))
            }
        })
        .collect();
    names.sort();
    let mut text = String::new();
    let mut list = Vec::new();
    for (shown, n) in names {
        let tab = &t.tables[n];
        if verbose {
            text += &format!("{shown}\t{} addresses\n", tab.len());
        } else {
            text += &format!("{shown}\n");
        }
        list.push(json!({"name": shown, "count": tab.len()}));
    }
    done(text, Value::Array(list))
}

/// The anchors (pfctl -sA), or with `-a P` those directly below P
/// (pfctl -a P -sA).
fn show_anchors(sh: &Shared, under: &str) -> Value {
    // Loaded ones, and those a rule calls by name with nothing loaded
    // (pf made them when it loaded the rule: pfctl -sA lists them).
    let engine = sh.dp().filter.engine_arc();
    let mut names = engine.anchor_names();
    for n in engine.called_anchors() {
        if !names.contains(&n) {
            names.push(n);
        }
    }
    let under = under.trim_matches('/');
    if !under.is_empty() {
        names.retain(|n| {
            n.strip_prefix(under)
                .and_then(|r| r.strip_prefix('/'))
                .is_some_and(|r| !r.is_empty() && !r.contains('/'))
        });
    }
    names.sort();
    let e_rules = |n: &str| {
        sh.dp()
            .filter
            .engine()
            .listing(n)
            .map(|l| l.len())
            .unwrap_or(0)
    };
    let mut text = String::new();
    let mut list = Vec::new();
    for n in &names {
        text += &format!("  {n}\n");
        list.push(json!({"name": n, "rules": e_rules(n)}));
    }
    done(text, Value::Array(list))
}

/// The data plane's neighbour cache, as OpenBSD's `arp -an` and `ndp -an`
/// list theirs: resolved neighbours with the time they stay valid, and
/// resolutions under way with the packets waiting for them.
fn show_neighbors(sh: &Shared) -> Value {
    // The workers' clock (worker.rs): ms since `daemon::clock_origin`.
    let now = sh.start.elapsed().as_millis() as u64;
    let rows = sh.dp().neighbours(now);
    let mut text = format!(
        "{:<40} {:<18} {:<10} {}\n",
        "Host", "Ethernet Address", "Netif", "Expire"
    );
    let mut list = Vec::new();
    for r in &rows {
        let (mac, state) = match (&r.mac, r.expires_ms) {
            (None, _) => ("(incomplete)".to_string(), "incomplete"),
            (Some(m), 0) => (palisade_wire::ethernet::mac_string(m), "expired"),
            (Some(m), _) => (palisade_wire::ethernet::mac_string(m), "reachable"),
        };
        let expire = match state {
            "incomplete" => format!(
                "{} in {}s, {} packet{} waiting",
                if r.tries_left == 0 {
                    "no answer: given up"
                } else {
                    "asking again"
                },
                r.expires_ms.div_ceil(1000),
                r.queued,
                if r.queued == 1 { "" } else { "s" }
            ),
            "expired" => "expired".to_string(),
            _ => format!("{}s", r.expires_ms.div_ceil(1000)),
        };
        text += &format!("{:<40} {mac:<18} {:<10} {expire}\n", r.ip, r.iface);
        list.push(json!({
            "interface": r.iface,
            "address": r.ip.to_string(),
            "mac": r.mac.as_ref().map(palisade_wire::ethernet::mac_string),
            "state": state,
            "expires_ms": r.expires_ms,
            "queued": r.queued,
            "tries_left": r.tries_left,
        }));
    }
    done(text, Value::Array(list))
}

/// The bridges' learnt addresses, as OpenBSD's `ifconfig bridge0 addr`
/// lists them: address, member, seconds since last seen.
fn show_fdb(sh: &Shared) -> Value {
    let now = sh.start.elapsed().as_millis() as u64;
    let rows = sh.dp().fdb(now);
    let mut text = String::new();
    let mut list = Vec::new();
    let mut bridge = None;
    for r in &rows {
        if bridge != Some(&r.bridge) {
            text += &format!("{}:\n", r.bridge);
            bridge = Some(&r.bridge);
        }
        let mac = palisade_wire::ethernet::mac_string(&r.mac);
        if r.fixed {
            text += &format!("  {mac} {:<10} static\n", r.member);
        } else {
            text += &format!(
                "  {mac} {:<10} seen {}s ago, forgotten in {}s\n",
                r.member,
                r.age_ms / 1000,
                r.expires_ms.div_ceil(1000)
            );
        }
        list.push(json!({
            "bridge": r.bridge,
            "mac": mac,
            "member": r.member,
            "age_ms": r.age_ms,
            "expires_ms": r.expires_ms,
            "static": r.fixed,
        }));
    }
    done(text, Value::Array(list))
}

/// The routing table the data plane looks up, as `netstat -rn` lists
/// one: flags C (connected) or S (static, palisade.toml's `[[route]]`),
/// G (through a gateway).
fn show_routes(sh: &Shared) -> Value {
    let rows = sh.dp().routes();
    let mut text = format!(
        "{:<44} {:<40} {:<6} {}\n",
        "Destination", "Gateway", "Flags", "Netif"
    );
    let mut list = Vec::new();
    for r in &rows {
        let gw = match (&r.via, &r.iface) {
            (Some(v), _) => v.to_string(),
            (None, Some(i)) => format!("link#{i}"),
            (None, None) => "-".into(),
        };
        let flags = format!(
            "{}{}",
            if r.connected { "C" } else { "S" },
            if r.via.is_some() { "G" } else { "" }
        );
        let iface = r
            .iface
            .clone()
            .unwrap_or_else(|| "(gateway unreachable)".into());
        text += &format!("{:<44} {gw:<40} {flags:<6} {iface}\n", r.to);
        list.push(json!({
            "destination": r.to,
            "gateway": r.via.map(|v| v.to_string()),
            "interface": r.iface,
            "connected": r.connected,
        }));
    }
    done(text, Value::Array(list))
}

fn show_timeouts(sh: &Shared) -> Value {
    let dp = sh.dp();
    let st = &dp.filter.states;
    let mut text = String::new();
    let mut m = serde_json::Map::new();
    for t in Timeout::SHOWN.iter() {
        // adaptive.start/end unset: pf's 60% and 120% of the state
        // limit apply, and are shown.
        let i = Timeout::ALL.iter().position(|x| x == t).unwrap_or(0);
        let v = match t {
            Timeout::AdaptiveStart => st.adaptive().0 as u32,
            Timeout::AdaptiveEnd => st.adaptive().1 as u32,
            _ => st.timeouts[i],
        };
        let unit = if matches!(t, Timeout::AdaptiveStart | Timeout::AdaptiveEnd) {
            " states"
        } else {
            "s"
        };
        text += &format!("{:<20} {v:>10}{unit}\n", t.name());
        m.insert(t.name().into(), json!(v));
    }
    done(text, Value::Object(m))
}

fn show_limits(sh: &Shared) -> Value {
    let dp = sh.dp();
    let states = dp.filter.states.limit as u64;
    let frags = dp.filter.frags.limit as u64;
    let src_nodes = dp.filter.states.src_node_limit as u64;
    let (tables, table_entries) = {
        let t = dp.filter.engine().tables();
        (t.tables_limit() as u64, t.limit() as u64)
    };
    // pf's pools, in `pfctl -sm`'s order, as the ruleset in force sets
    // them (a reload's too); all enforced.
    let rows = [
        ("states", states, true),
        ("src-nodes", src_nodes, true),
        ("frags", frags, true),
        ("tables", tables, true),
        ("table-entries", table_entries, true),
    ];
    let mut text = String::new();
    let mut m = serde_json::Map::new();
    for (n, v, enforced) in rows {
        text += &format!(
            "{n:<14}hard limit {v:>8}{}\n",
            if enforced { "" } else { "  (not enforced)" }
        );
        m.insert(n.into(), json!({"limit": v, "enforced": enforced}));
    }
    done(text, Value::Object(m))
}

fn rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let l = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = l.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `pfctl -s osfp`: the names `os` rules can use, from the fingerprints
/// in force (`set fingerprints`, or the built-in ones): each class, each
/// class and version, each class, version and subtype, once.
fn show_osfp(sh: &Shared) -> Value {
    let names = osfp_names(sh.dp().filter.fingerprints());
    let mut text =
        String::from("Class\tVersion\tSubtype(subversion)\n-----\t-------\t-------------------\n");
    for n in &names {
        text.push_str(&n.join("\t"));
        text.push('\n');
    }
    let list: Vec<String> = names.iter().map(|n| n.join(" ")).collect();
    done(text, json!({"names": list}))
}

/// The names a fingerprint database answers to, sorted: [class],
/// [class, version], [class, version, subtype].
fn osfp_names(db: &FingerprintDb) -> Vec<Vec<String>> {
    let mut set = std::collections::BTreeSet::new();
    for f in &db.entries {
        set.insert(vec![f.class.clone()]);
        if !f.version.is_empty() {
            set.insert(vec![f.class.clone(), f.version.clone()]);
            if !f.subtype.is_empty() {
                set.insert(vec![f.class.clone(), f.version.clone(), f.subtype.clone()]);
            }
        }
    }
    set.into_iter().collect()
}

fn show_memory(sh: &Shared) -> Value {
    let dp = sh.dp();
    let states = dp.filter.states.len() as u64;
    let state_size = std::mem::size_of::<palisade_filter::state::State>() as u64;
    let (entries, limit, refused) = {
        let e = dp.filter.engine();
        let t = e.tables();
        (t.entries() as u64, t.limit(), t.refused)
    };
    let rss = rss_bytes().unwrap_or(0);
    let text = format!(
        "process (resident)        {rss:>14} bytes\nstates                    {states:>14} (about {} bytes)\ntable entries             {entries:>14} (limit {limit}; overload refused {refused})\nfragments held            {:>14} ({} bytes)\n",
        states * (state_size + 48),
        dp.filter.frags.held(),
        dp.filter.frags.held_bytes()
    );
    done(
        text,
        json!({
            "rss_bytes": rss,
            "states": states,
            "state_bytes_estimate": states * (state_size + 48),
            "table_entries": entries,
            "table_entries_limit": limit,
            "overload_refused": refused,
            "fragments_held": dp.filter.frags.held(),
            "fragment_bytes": dp.filter.frags.held_bytes(),
        }),
    )
}

/// An address or network from the command line: `192.0.2.1`,
/// `2001:db8::/32`, `!192.0.2.5` (negated, for add/replace).
pub fn parse_net(s: &str) -> Result<(bool, Addr), String> {
    let (neg, rest) = match s.strip_prefix('!') {
        Some(r) => (true, r),
        None => (false, s),
    };
    let p = Prefix::parse(rest).map_err(|e| {
        format!("'{s}': not an address or network ({e}; e.g. 192.0.2.1, 2001:db8::/32)")
    })?;
    Ok((
        neg,
        Addr::Net {
            ip: p.ip,
            bits: p.bits,
        },
    ))
}

fn table(sh: &Shared, name: &str, top: &TableOp) -> Value {
    // An anchor's table (`ANCHOR/NAME`) may be named with the anchor's
    // leading '/', as anchors are.
    let name = if name.contains('/') {
        name.trim_start_matches('/')
    } else {
        name
    };
    let op = top.name();
    let mut addrs = Vec::new();
    for a in top.addrs() {
        match parse_net(a) {
            Ok(x) => addrs.push(x),
            Err(e) => return fail(format!("table {name} {op}: {e}")),
        }
    }
    let now = table_secs(sh);
    let dp = sh.dp();
    let e = dp.filter.engine();
    let mut ts = e.tables_mut();
    let exists = ts.tables.contains_key(name);
    let needs = |ok: bool| -> Option<Value> {
        (!ok).then(|| fail(format!("table <{name}>: no such table")))
    };
    // A `const` table is changed only by loading pf.conf again (pfctl
    // refuses: Operation not permitted).
    let changes = matches!(op, "add" | "delete" | "replace" | "flush" | "expire");
    if changes && ts.tables.get(name).is_some_and(|t| t.constant) {
        return fail(format!(
            "table <{name}> {op}: the table is const (pf.conf declares it so): Operation not permitted"
        ));
    }
    // `set limit table-entries`: a change that would pass it is refused
    // whole (pf's pool: Cannot allocate memory).
    let over = |ts: &palisade_filter::TableSet, more: usize| -> Option<Value> {
        // (A change that adds nothing is never refused, even over a limit
        // a reload lowered.)
        (more > 0 && !ts.room_for(more)).then(|| {
            fail(format!(
                "table <{name}> {op}: {more} more entries would pass the table-entries limit \
                 ({} in use of {}; set limit table-entries): Cannot allocate memory",
                ts.entries(),
                ts.limit()
            ))
        })
    };
    let no_room = |ts: &palisade_filter::TableSet, creates: bool| -> Option<Value> {
        (creates && !ts.room_for_table()).then(|| {
            fail(format!(
                "table <{name}> {op}: cannot create the table: {} tables of {} (set limit tables): Cannot allocate memory",
                ts.tables.len(),
                ts.tables_limit()
            ))
        })
    };
    match op {
        "add" => {
            let new: std::collections::HashSet<Option<(IpAddr, u8)>> = addrs
                .iter()
                .filter(|(_, a)| !ts.tables.get(name).is_some_and(|t| t.has_exact(a)))
                .map(|(_, a)| net_key(a))
                .collect();
            if let Some(f) = over(&ts, new.len()) {
                return f;
            }
            // A table no ruleset defines is made, and said so as pfctl
            // says it (a mistyped name must not pass unseen); not past
            // `set limit tables` (pf's pool refuses it).
            let created = !ts.tables.contains_key(name);
            if let Some(f) = no_room(&ts, created) {
                return f;
            }
            let t = ts
                .tables
                .entry(name.to_string())
                .or_insert_with(|| palisade_filter::AddrTable::born_at(now));
            // An entry already there keeps its age (and its negation, as
            // pfctl leaves it); a repeated address counts once.
            let mut added = 0;
            for (neg, a) in &addrs {
                if !t.has_exact(a) {
                    added += 1;
                    t.insert_at(a, *neg, now);
                }
            }
            done(
                format!(
                    "{}{added}/{} addresses added.\n",
                    if created { "1 table created.\n" } else { "" },
                    addrs.len()
                ),
                json!({"added": added, "given": addrs.len(), "created": created}),
            )
        }
        "delete" => {
            if let Some(f) = needs(exists) {
                return f;
            }
            let t = ts.tables.get_mut(name).expect("checked");
            let deleted = addrs.iter().filter(|(_, a)| t.remove(a)).count();
            done(
                format!("{deleted}/{} addresses deleted.\n", addrs.len()),
                json!({"deleted": deleted, "given": addrs.len()}),
            )
        }
        "replace" => {
            // The addresses asked for, each once (a file may repeat one).
            let mut seen = std::collections::HashSet::new();
            let wanted: Vec<(&Addr, bool, (bool, IpAddr, u8))> = addrs
                .iter()
                .filter_map(|(n, a)| net_key(a).map(|(ip, bits)| (a, *n, (*n, ip, bits))))
                .filter(|(_, _, k)| seen.insert(*k))
                .collect();
            let before: Vec<(bool, IpAddr, u8)> =
                ts.tables.get(name).map(|t| t.all()).unwrap_or_default();
            let had: std::collections::HashSet<(bool, IpAddr, u8)> =
                before.iter().copied().collect();
            let adds = wanted.iter().filter(|(_, _, k)| !had.contains(k)).count();
            let dels = before.iter().filter(|b| !seen.contains(*b)).count();
            if let Some(f) = over(&ts, adds.saturating_sub(dels)) {
                return f;
            }
            if let Some(f) = no_room(&ts, !exists) {
                return f;
            }
            let t = ts
                .tables
                .entry(name.to_string())
                .or_insert_with(|| palisade_filter::AddrTable::born_at(now));
            let mut deleted = 0;
            for (n, ip, bits) in &before {
                if !seen.contains(&(*n, *ip, *bits)) {
                    t.remove(&Addr::Net {
                        ip: *ip,
                        bits: *bits,
                    });
                    deleted += 1;
                }
            }
            let mut added = 0;
            for (a, neg, k) in &wanted {
                if !had.contains(k) {
                    added += 1;
                    t.insert_at(a, *neg, now);
                }
            }
            done(
                match (added, deleted) {
                    (0, 0) => "no changes.\n".to_string(),
                    (a, 0) => format!("{a} addresses added.\n"),
                    (0, d) => format!("{d} addresses deleted.\n"),
                    (a, d) => format!("{a} addresses added.\n{d} addresses deleted.\n"),
                },
                json!({"added": added, "deleted": deleted}),
            )
        }
        "show" => {
            if let Some(f) = needs(exists) {
                return f;
            }
            let t = &ts.tables[name];
            let mut text = String::new();
            let mut list = Vec::new();
            for (neg, ip, bits) in t.all() {
                let max = if ip.is_ipv4() { 32 } else { 128 };
                let s = if bits == max {
                    ip.to_string()
                } else {
                    format!("{ip}/{bits}")
                };
                let s = if neg { format!("!{s}") } else { s };
                text += &format!("   {s}\n");
                list.push(json!(s));
            }
            for (lo, hi, neg) in t.ranges() {
                let s = format!("{}{lo} - {hi}", if *neg { "!" } else { "" });
                text += &format!("   {s}\n");
                list.push(json!(s));
            }
            done(text, Value::Array(list))
        }
        "flush" => {
            if let Some(f) = needs(exists) {
                return f;
            }
            let n = ts.tables.get_mut(name).expect("checked").clear();
            done(format!("{n} addresses deleted.\n"), json!({"deleted": n}))
        }
        "test" => {
            if let Some(f) = needs(exists) {
                return f;
            }
            let t = &ts.tables[name];
            let mut matched = Vec::new();
            for (_, a) in &addrs {
                if let Addr::Net { ip, .. } = a {
                    if t.contains(ip) {
                        matched.push(ip.to_string());
                    }
                }
            }
            let all = matched.len() == addrs.len() && !addrs.is_empty();
            json!({
                "ok": all,
                "text": format!("{}/{} addresses match.\n", matched.len(), addrs.len()),
                "data": {"matched": matched, "given": addrs.len(), "all": all},
            })
        }
        "expire" => {
            if let Some(f) = needs(exists) {
                return f;
            }
            let TableOp::Expire(secs) = *top else {
                return fail(format!("table {name} expire: missing SECONDS"));
            };
            let gone = ts
                .tables
                .get_mut(name)
                .expect("checked")
                .expire(now.saturating_sub(secs));
            done(
                format!("{}/{} addresses expired.\n", gone.len(), gone.len()),
                json!({"expired": gone.iter().map(|(_, ip, b)| format!("{ip}/{b}")).collect::<Vec<_>>()}),
            )
        }
        o => fail(format!("table: unknown operation '{o}'")),
    }
}

fn anchor(sh: &Shared, name: &str, op: &AnchorOp, level: u64) -> Value {
    // `PREFIX/*` (pfctl -a 'PREFIX/*'): the anchors under PREFIX.
    let under = name.trim_start_matches('/').strip_suffix("/*");
    match op {
        AnchorOp::Load { .. } if under.is_some() => fail(format!(
            "anchor {name}: a wildcard names the anchors under {} (for show and flush); load into one of them (such as '{}/NAME')",
            under.unwrap_or(""),
            under.unwrap_or("")
        )),
        AnchorOp::Flush if under.is_some() => {
            let prefix = format!("{}/", under.unwrap_or(""));
            // (The marks under the same lock as the flush: `Flushed`.)
            let mut flushed = sh.flushed.lock().unwrap_or_else(|e| e.into_inner());
            let engine = sh.dp().filter.engine_arc();
            let mut cleared = Vec::new();
            // Every direct child there was is cleared (`flush_anchor`
            // says false for one pf.conf loaded, which it clears too).
            for a in engine.anchor_names() {
                let Some(rest) = a.strip_prefix(&prefix) else {
                    continue;
                };
                if !rest.contains('/') && !rest.contains('*') {
                    engine.flush_anchor(&a);
                    cleared.push(a);
                }
            }
            engine
                .tables_mut()
                .tables
                .retain(|n, t| !(t.anchor_load && cleared.iter().any(|a| palisade_filter::table::of_anchor(n, a))));
            for a in &cleared {
                flushed.note(a);
            }
            drop(flushed);
            done(
                format!(
                    "anchor {name}: {} anchor{} cleared\n",
                    cleared.len(),
                    if cleared.len() == 1 { "" } else { "s" }
                ),
                json!({"anchor": name, "cleared": cleared}),
            )
        }
        AnchorOp::Load { rules, file, files } => {
            let file = file.as_str();
            let opts = ParseOptions {
                host: sh.host.clone(),
                anchor: Some(name.to_string()),
                no_files: !files,
                queues: sh.queues.lock().unwrap_or_else(|e| e.into_inner()).clone(),
                ..Default::default()
            };
            let out = parse_bytes(file, None, rules.as_bytes().to_vec(), &opts);
            let mut msgs = out.stderr.clone();
            if out.errors > 0 {
                msgs.push(format!(
                    "palisade: anchor {name}: {} error{}: not loaded; the anchor keeps its rules",
                    out.errors,
                    if out.errors == 1 { "" } else { "s" }
                ));
                return fail(msgs.join("\n"));
            }
            if !out.config.options.is_empty() {
                msgs.push(format!(
                    "palisade: warning: anchor {name}: `set` options in {file} are not loaded (only rules and tables are)"
                ));
            }
            // A `load anchor` in the file would load anchors below this
            // one (pfctl -a A -f does): not done at run time yet, so
            // refused rather than dropped.
            if let Some(la) = out.config.load_anchors.first() {
                let target = match la.name.strip_prefix('/') {
                    Some(root) => root.to_string(),
                    None => format!("{}/{}", name.trim_matches('/'), la.name),
                };
                return fail(format!(
                    "palisade: anchor {name}: {file} loads anchor {} from \"{}\": a `load anchor` in a file loaded at run time is not supported (load it on its own: palisade anchor {target} load -f {}); not loaded, the anchor keeps its rules",
                    la.name, la.file, la.file
                ));
            }
            // ftp-proxy's anchors hold its sessions' rules only: its
            // unprivileged sessions' process, through the monitor, must
            // not add table entries past what the count of its anchors
            // bounds.
            if name.trim_start_matches('/').starts_with("ftp-proxy/")
                && !out.config.tables.is_empty()
            {
                return fail(format!(
                    "palisade: anchor {name}: tables are not loaded into ftp-proxy's anchors: not loaded; the anchor keeps its rules"
                ));
            }
            let n = out.config.main.rules.len();
            {
                let dp = sh.dp();
                msgs.extend(load_warnings(
                    &out,
                    file,
                    &sh.host,
                    &dp.cfg,
                    dp.filter.fingerprints(),
                ));
            }
            // The file's tables are the anchor's (`ANCHOR/NAME`, as a
            // `load anchor` file's), replaced with it as pfctl -a -f does;
            // in place before the rules that use them.
            let path = name.trim_start_matches('/');
            let mut cfg = palisade_conf::ir::Config {
                tables: out.config.tables.clone(),
                load_anchors: vec![palisade_conf::ir::LoadAnchor {
                    name: path.to_string(),
                    file: file.to_string(),
                    ruleset: out.config.main.clone(),
                }],
                ..Default::default()
            };
            for t in &mut cfg.tables {
                t.anchor = path.to_string();
            }
            let scoped = cfg.anchor_tables_scoped().into_owned();
            let tables = palisade_filter::table::TableSet::from_config(&scoped).tables;
            let nt = tables.len();
            let now = table_secs(sh);
            // Compiled outside the data-plane lock; swapped in atomically.
            let engine = sh.dp().filter.engine_arc();
            {
                let mut ts = engine.tables_mut();
                // The last load's tables this file no longer defines go;
                // the new ones must fit `set limit table-entries`.
                let old: Vec<String> = ts
                    .tables
                    .iter()
                    .filter(|(n, t)| t.anchor_load && palisade_filter::table::of_anchor(n, path))
                    .map(|(n, _)| n.clone())
                    .collect();
                let freed: usize = old.iter().map(|n| ts.tables[n].len()).sum();
                let added: usize = tables.values().map(|t| t.len()).sum();
                // A load that adds nothing is never refused, even over a
                // limit a reload lowered (as the table commands).
                if added > freed && ts.entries() - freed + added > ts.limit() {
                    return fail(format!(
                        "palisade: anchor {name}: the {added} entries of its tables would pass set limit table-entries ({}): not loaded; the anchor keeps its rules",
                        ts.limit()
                    ));
                }
                // And the tables themselves `set limit tables` (those it
                // replaces, of its last load or made by hand, counted once).
                let after = ts.tables.len()
                    + tables
                        .keys()
                        .filter(|n| !ts.tables.contains_key(*n))
                        .count();
                let gone = old.iter().filter(|n| !tables.contains_key(*n)).count();
                if after - gone > ts.tables.len() && after - gone > ts.tables_limit() {
                    return fail(format!(
                        "palisade: anchor {name}: its {nt} tables would pass set limit tables ({}; {} in use): Cannot allocate memory; not loaded, the anchor keeps its rules",
                        ts.tables_limit(),
                        ts.tables.len()
                    ));
                }
                let replaced: std::collections::HashMap<String, palisade_filter::AddrTable> = old
                    .iter()
                    .filter_map(|n| ts.tables.remove_entry(n))
                    .collect();
                for (tname, mut tab) in tables {
                    tab.born = now;
                    tab.anchor_load = true;
                    // An entry the table held before keeps its age (as
                    // pf's commit does); the new ones date from now.
                    if let Some(o) = replaced.get(&tname).or(ts.tables.get(&tname)) {
                        tab.keep_ages_of(o);
                    }
                    ts.tables.insert(tname, tab);
                }
            }
            let mut flushed = sh.flushed.lock().unwrap_or_else(|e| e.into_inner());
            engine.load_anchor(name, &scoped.load_anchors[0].ruleset);
            flushed.loaded(name.trim_start_matches('/'));
            drop(flushed);
            msgs.push(format!(
                "palisade: anchor {name}: {n} rule{} loaded{}",
                if n == 1 { "" } else { "s" },
                match nt {
                    0 => String::new(),
                    1 => ", 1 table".to_string(),
                    _ => format!(", {nt} tables"),
                }
            ));
            done(
                msgs.join("\n") + "\n",
                json!({"anchor": name, "rules": n, "tables": nt}),
            )
        }
        AnchorOp::Flush => {
            // An anchor pf.conf names (even empty) can be flushed; a name
            // nothing knows is an error, as pfctl says "Anchor does not
            // exist".
            let known = {
                let dp = sh.dp();
                let e = dp.filter.engine();
                let a = name.trim_start_matches('/');
                e.anchor_names().iter().any(|n| n == a)
                    || e.called_anchors().iter().any(|n| n == a)
            };
            let mut flushed = sh.flushed.lock().unwrap_or_else(|e| e.into_inner());
            let had = sh.dp().filter.engine().flush_anchor(name);
            // The tables its `anchor load` file defined go with its rules
            // (pf drops an anchor's tables no rule uses).
            {
                let a = name.trim_start_matches('/');
                let dp = sh.dp();
                let mut ts = dp.filter.engine().tables_mut();
                ts.tables
                    .retain(|n, t| !(t.anchor_load && palisade_filter::table::of_anchor(n, a)));
            }
            if !had && !known {
                return fail(format!("anchor {name}: no such anchor"));
            }
            flushed.note(name.trim_start_matches('/'));
            drop(flushed);
            done(
                format!("anchor {name}: rules cleared\n"),
                json!({"anchor": name, "was_loaded": had}),
            )
        }
        AnchorOp::Show => {
            let mut v = show_rules(sh, name, level);
            // The anchors flushed by request (and not loaded since) that
            // this show covers: ftp-proxy leaves those empty.
            let a = name.trim_start_matches('/');
            let flushed: Vec<String> = sh
                .flushed
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .recent()
                .filter(|f| match under {
                    Some(u) => f
                        .strip_prefix(u)
                        .and_then(|r| r.strip_prefix('/'))
                        .is_some_and(|r| !r.contains('/')),
                    None => *f == a,
                })
                .map(str::to_string)
                .collect();
            if let Some(o) = v.as_object_mut() {
                o.insert("flushed".into(), json!(flushed));
            }
            v
        }
    }
}

/// A host or network matcher for `state kill`.
fn net_match(spec: &str) -> Result<impl Fn(&IpAddr) -> bool, String> {
    let p = Prefix::parse(spec).map_err(|e| e.to_string())?;
    Ok(move |ip: &IpAddr| p.contains(ip))
}

/// pfctl -sl: each labelled rule (main ruleset, inline and loaded
/// anchors) with its evaluations, packets and bytes (both ways, in, out)
/// and the states it created.
/// pfctl -sl: each labelled rule's counters; with `-a A` (pfctl -a A
/// -sl) those of anchor A's rules only.
fn show_labels(sh: &Shared, anchor: &str) -> Value {
    let mut text = String::new();
    let mut items = Vec::new();
    let anchor = anchor.trim_matches('/');
    for r in snapshot::rules(sh) {
        let Some(label) = &r.label else {
            continue;
        };
        if !anchor.is_empty() && r.anchor.trim_matches('/') != anchor {
            continue;
        }
        text += &format!(
            "{label} {} {} {} {} {} {} {} {}\n",
            r.evaluations,
            r.packets,
            r.bytes,
            r.packets_in,
            r.bytes_in,
            r.packets_out,
            r.bytes_out,
            r.state_creations
        );
        items.push(json!({"label": label, "anchor": r.anchor, "nr": r.nr,
            "evaluations": r.evaluations, "packets": r.packets, "bytes": r.bytes,
            "packets_in": r.packets_in, "bytes_in": r.bytes_in,
            "packets_out": r.packets_out, "bytes_out": r.bytes_out,
            "state_creations": r.state_creations}));
    }
    done(text, Value::Array(items))
}

/// pfctl -sS: the source nodes (sources tracked for `max-src-*` and
/// `source-track`), each with its states, established connections and
/// connection rate (as `max-src-conn-rate` counts it now), its age and the
/// rule it is tracked for.
fn show_sources(sh: &Shared) -> Value {
    let now = sh.start.elapsed().as_millis() as u64;
    let nodes = sh.dp().filter.states.source_nodes(now);
    let mut text = String::new();
    let mut items = Vec::new();
    for n in &nodes {
        let age = now.saturating_sub(n.created_ms) / 1000;
        text += &format!(
            "{} ( states {}, connections {}, rate {}.{}/{}s )\n   age {}, ",
            n.addr,
            n.states,
            n.conns,
            n.rate_milli / 1000,
            n.rate_milli % 1000 / 100,
            n.rate_secs,
            hms(age)
        );
        // Without states: kept `src.track` seconds after the last one.
        let expires = n.expires_ms.map(|t| t.saturating_sub(now).div_ceil(1000));
        if let Some(e) = expires {
            text += &format!("expires in {}, ", hms(e));
        }
        match &n.rule {
            Some(r) if r.anchor.is_empty() => text += &format!("filter rule {}\n", r.nr),
            Some(r) => text += &format!("filter rule {} (anchor {})\n", r.nr, r.anchor),
            None => text += "global\n",
        }
        items.push(json!({"addr": n.addr.to_string(), "states": n.states,
            "connections": n.conns, "age_s": age, "expires_in_s": expires,
            "rate": {"connections": n.rate_milli as f64 / 1000.0, "seconds": n.rate_secs},
            "rule": n.rule.as_ref().map(|r| json!({"anchor": r.anchor.as_str(), "nr": r.nr}))}));
    }
    // Sticky addresses (pf keeps them in the client's source node; pfctl
    // -sS shows it as `client -> address`).
    let sticky = sh.dp().filter.sticky_addresses();
    for a in &sticky {
        let expires =
            (!a.in_use).then(|| (a.last_ms + a.keep_ms).saturating_sub(now).div_ceil(1000));
        text += &format!(
            "{} -> {} ( sticky-address, {} )\n   ",
            a.client,
            a.addr,
            if a.in_use { "in use" } else { "unused" }
        );
        if let Some(e) = expires {
            text += &format!("expires in {}, ", hms(e));
        }
        if a.rule.anchor.is_empty() {
            text += &format!("filter rule {}\n", a.rule.nr);
        } else {
            text += &format!("filter rule {} (anchor {})\n", a.rule.nr, a.rule.anchor);
        }
        items.push(
            json!({"addr": a.client.to_string(), "sticky_address": a.addr.to_string(),
            "in_use": a.in_use, "expires_in_s": expires,
            "rule": {"anchor": a.rule.anchor.as_str(), "nr": a.rule.nr}}),
        );
    }
    done(text, Value::Array(items))
}

fn kill(sh: &Shared, k: &Kill) -> Value {
    if let Kill::All = k {
        // pfctl -F states: every state goes without a delete for each;
        // the peer hears one clear of this node's states (lock order
        // pfsync, data plane).
        let mut sync = sh.pfsync();
        let n = sh.dp().filter.states.clear_all();
        if let Some(s) = sync.as_mut() {
            s.clear_own(sh.now_us());
        }
        drop(sync);
        sh.wake.wake();
        return done(format!("{n} states cleared\n"), json!({"killed": n}));
    }
    if let Kill::Sources(spec) = k {
        let m = match net_match(spec) {
            Ok(m) => m,
            Err(e) => return fail(format!("state kill: {e}")),
        };
        let n = sh.dp().filter.kill_source_nodes(m);
        return done(
            // As pfctl -K prints it.
            format!("killed {n} src nodes from 1 sources and 0 destinations\n"),
            json!({"killed_source_nodes": n}),
        );
    }
    // Lock order pfsync, data plane: the kill is remembered by pfsync
    // before a step could take a copy of the state back.
    let mut sync = sh.pfsync();
    let mut dp = sh.dp();
    let st = &mut dp.filter.states;
    let ids: Vec<u64> = match k {
        // A bare id names this firewall's own state (pfctl uses the host
        // id); a state a peer made needs its creator id.
        Kill::Id { id, creator } => st
            .get(*id)
            .filter(|s| s.creator == creator.unwrap_or(st.creator))
            .map(|s| s.id)
            .into_iter()
            .collect(),
        Kill::All | Kill::Sources(_) => unreachable!("answered above"),
        // The label of the rule that made each state (pf asks the
        // state's rule, even one a reload has replaced since).
        Kill::Label(l) => st
            .iter()
            .filter(|s| s.stats.as_ref().and_then(|r| r.label()) == Some(l.as_str()))
            .map(|s| s.id)
            .collect(),
        Kill::Hosts { host, to } => {
            let src = match net_match(host) {
                Ok(m) => m,
                Err(e) => return fail(format!("state kill: {e}")),
            };
            let dst = match to.as_deref().map(net_match) {
                None => None,
                Some(Ok(m)) => Some(m),
                Some(Err(e)) => return fail(format!("state kill: {e}")),
            };
            // The addresses the connection was opened with (pfctl -k): a
            // translated address would match every state behind a NAT.
            st.iter()
                .filter(|s| src(&s.key.src) && dst.as_ref().is_none_or(|d| d(&s.key.dst)))
                .map(|s| s.id)
                .collect()
        }
    };
    // pfsync remembers what was killed (the peer may miss the deletion
    // while the sync link is down, and send the state back).
    let refs: Vec<palisade_pfsync::StateRef> = ids
        .iter()
        .filter_map(|id| st.get(*id))
        .filter(|s| !s.no_sync())
        .map(|s| palisade_pfsync::StateRef {
            id: s.id,
            creatorid: s.creator,
        })
        .collect();
    for id in &ids {
        st.remove(*id);
    }
    drop(dp);
    if let Some(s) = sync.as_mut().filter(|_| !refs.is_empty()) {
        s.killed(refs, sh.now_us());
    }
    drop(sync);
    done(
        match k {
            // As pfctl -k prints it: one source, a destination or none.
            Kill::Hosts { to, .. } => format!(
                "killed {} states from 1 sources and {} destinations\n",
                ids.len(),
                to.is_some() as u8
            ),
            _ => format!("killed {} states\n", ids.len()),
        },
        json!({"killed": ids.len(), "ids": ids.iter().map(|i| format!("{i:016x}")).collect::<Vec<_>>()}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `show osfp` lists each class, class and version, and class,
    /// version and subtype once, sorted; every name it lists is one an
    /// `os` rule matches.
    #[test]
    fn osfp_names_are_those_os_rules_take() {
        let db = FingerprintDb::default_db();
        let names = osfp_names(&db);
        assert!(names.contains(&vec!["Windows".to_string()]));
        assert!(names.iter().any(|n| n.len() == 2 && n[0] == "Linux"));
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted, names);
        for n in &names {
            let name = n.join(" ");
            assert!(db.entries.iter().any(|f| f.matches_name(&name)), "{name}");
        }
    }

    /// A reload (and `anchor NAME load`) warns as start-up does, `on
    /// carp0` included: scenario S3's palisade.toml, a pf.conf with an
    /// unenforced feature and a rule on the CARP interface.
    #[test]
    fn reload_warns_as_start_up_does() {
        let cfg = palisade_net::config::Config::parse(
            Path::new("/etc/palisade/palisade.toml"),
            crate::lab::s3::FW_TOML[0],
            &|_| true,
        )
        .expect("the S3 lab's palisade.toml");
        let host = HostModel {
            interfaces: cfg.host_interfaces(),
            ..Default::default()
        };
        let opts = ParseOptions {
            host: host.clone(),
            ..Default::default()
        };
        let pf = "pass in on carp0 proto tcp\npass out on lan from (carp0)\npass in on lan proto tcp rtable 1\npass\n";
        let out = parse_bytes("pf.conf", None, pf.as_bytes().to_vec(), &opts);
        assert_eq!(out.errors, 0, "{:?}", out.stderr);
        let db = FingerprintDb::default_db();
        let w = load_warnings(&out, "pf.conf", &host, &cfg, &db);
        let all = w.join("\n");
        assert!(
            all.contains("pf.conf:1: warning: `on carp0` does not match yet"),
            "{all}"
        );
        assert!(!all.contains("pf.conf:2:"), "{all}");
        assert!(
            all.contains("pf.conf:3: warning: rtable is parsed but not enforced"),
            "{all}"
        );
    }
}
