//! The metrics listener: off unless `metrics = "ADDR:PORT"` is in
//! palisade.toml; answers `GET /metrics` with Prometheus's text format
//! (version 0.0.4): per-rule counters, states and their limit, drop
//! reasons and per-interface packets, bytes and errors. The figures come
//! from the same place as `show info`, `show rules` and `show interfaces`.
//!
//! A few lines of HTTP/1.0 over std's TcpListener: one short request per
//! connection, each client on its own thread (a few at once, each bounded
//! in time), which is all a scraper needs; a web framework would be most
//! of the daemon's dependencies for this.

use std::fmt::Write as _;
use std::io::Write;
use std::net::TcpListener;
use std::time::Duration;

use crate::daemon::Shared;
use crate::snapshot;

/// A label value with `\`, `"` and newlines escaped.
fn label(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The whole exposition, from the same typed snapshot `show info`,
/// `show interfaces` and `show rules` render.
pub fn render(sh: &Shared) -> String {
    let info = snapshot::info(sh);
    let mut out = String::new();
    for (name, kind, help, v) in [
        (
            "palisade_states",
            "gauge",
            "Current states.",
            info.states as u64,
        ),
        (
            "palisade_states_limit",
            "gauge",
            "The state table's limit (set limit states).",
            info.states_limit as u64,
        ),
        (
            "palisade_states_halfopen",
            "gauge",
            "TCP states whose responder has not answered (set syncookies adaptive measures them).",
            info.states_halfopen as u64,
        ),
        (
            "palisade_syncookies_active",
            "gauge",
            "1 while SYN cookies answer SYNs (set syncookies).",
            info.syncookies_active as u64,
        ),
        (
            "palisade_state_searches_total",
            "counter",
            "State lookups.",
            info.state_searches,
        ),
        (
            "palisade_state_inserts_total",
            "counter",
            "States created.",
            info.state_inserts,
        ),
        (
            "palisade_state_removals_total",
            "counter",
            "States removed (expired, closed, killed, flushed, or deleted by the pfsync peer).",
            info.state_removals,
        ),
    ] {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
    // pfctl -si's synfloods detected, syncookies sent and validated.
    for (label, v) in &info.syncookies.0 {
        let name = format!("palisade_{}_total", label.replace(' ', "_"));
        family(&mut out, &name, "counter", &format!("pfctl -si's {label}."));
        let _ = writeln!(out, "{name} {v}");
    }
    family(
        &mut out,
        "palisade_packets_total",
        "counter",
        "Packets pf decided, by outcome.",
    );
    for (action, v) in [("pass", info.passed), ("block", info.blocked)] {
        let _ = writeln!(out, "palisade_packets_total{{action=\"{action}\"}} {v}");
    }
    family(
        &mut out,
        "palisade_reason_total",
        "counter",
        "pf's counters by reason, as pfctl -si lists them (match, short, state-mismatch, ...).",
    );
    for (r, n) in &info.reasons.0 {
        let _ = writeln!(out, "palisade_reason_total{{reason=\"{}\"}} {n}", label(r));
    }
    family(
        &mut out,
        "palisade_dataplane_total",
        "counter",
        "Data plane events (frames, forwarding, drops).",
    );
    let mut events = info.dataplane.0.clone();
    events.sort();
    for (k, n) in events {
        let _ = writeln!(out, "palisade_dataplane_total{{event=\"{k}\"}} {n}");
    }
    family(
        &mut out,
        "palisade_dataplane_drops_total",
        "counter",
        "Frames and packets the data plane dropped, by reason (pf's own drops are palisade_reason_total).",
    );
    for (r, n) in &info.dataplane_drops.0 {
        let _ = writeln!(
            out,
            "palisade_dataplane_drops_total{{reason=\"{}\"}} {n}",
            label(r)
        );
    }
    // The in-kernel fast path (`fastpath = true`): the flows it has, what
    // it forwarded, what it gave back to user space and why.
    if let Some(fp) = &info.fastpath {
        let get = |k: &str| fp.0.iter().find(|(n, _)| *n == k).map_or(0, |(_, v)| *v);
        family(
            &mut out,
            "palisade_fastpath_flows",
            "gauge",
            "Flows the in-kernel fast path forwards now.",
        );
        let _ = writeln!(out, "palisade_fastpath_flows {}", get("flows"));
        family(
            &mut out,
            "palisade_fastpath_packets_total",
            "counter",
            "Packets the fast path's program forwarded (taken), dropped, or gave back to user space, by reason.",
        );
        for k in [
            "taken",
            "dropped",
            "back_flags",
            "back_window",
            "back_slow",
            "back_stale",
            "back_fence",
        ] {
            let _ = writeln!(
                out,
                "palisade_fastpath_packets_total{{result=\"{k}\"}} {}",
                get(k)
            );
        }
        family(
            &mut out,
            "palisade_fastpath_super_packets_total",
            "counter",
            "Of the packets taken: super-packets (GSO) forwarded whole.",
        );
        let _ = writeln!(
            out,
            "palisade_fastpath_super_packets_total {}",
            get("taken_super")
        );
    }
    let ifs = snapshot::interfaces(sh);
    for (name, bytes, help) in [
        (
            "palisade_interface_packets_total",
            false,
            "Packets through pf per interface.",
        ),
        (
            "palisade_interface_bytes_total",
            true,
            "Bytes through pf per interface.",
        ),
    ] {
        family(&mut out, name, "counter", help);
        for i in &ifs {
            for (k, c) in &i.counters {
                // Keys are FAMILY_DIR_ACTION (inet_in_pass).
                let mut p = k.split('_');
                let (af, dir, act) = (
                    p.next().unwrap_or(""),
                    p.next().unwrap_or(""),
                    p.next().unwrap_or(""),
                );
                let _ = writeln!(
                    out,
                    "{name}{{interface=\"{}\",af=\"{af}\",dir=\"{dir}\",action=\"{act}\"}} {}",
                    label(&i.name),
                    if bytes { c.bytes } else { c.packets }
                );
            }
        }
    }
    family(
        &mut out,
        "palisade_interface_errors_total",
        "counter",
        "Malformed packets dropped per interface.",
    );
    for i in &ifs {
        let _ = writeln!(
            out,
            "palisade_interface_errors_total{{interface=\"{}\"}} {}",
            label(&i.name),
            i.errors
        );
    }
    // Per rule, one family at a time (the text format wants each metric's
    // lines together).
    let rules = snapshot::rules(sh);
    type Get = fn(&snapshot::RuleCounts) -> u64;
    let families: [(&str, Get, &str, &str); 5] = [
        (
            "palisade_rule_evaluations_total",
            |r| r.evaluations,
            "counter",
            "Times the rule was evaluated.",
        ),
        (
            "palisade_rule_packets_total",
            |r| r.packets,
            "counter",
            "Packets the rule decided, and those of its states.",
        ),
        (
            "palisade_rule_bytes_total",
            |r| r.bytes,
            "counter",
            "Bytes the rule decided, and those of its states.",
        ),
        (
            "palisade_rule_states",
            |r| r.states,
            "gauge",
            "Current states the rule created.",
        ),
        (
            "palisade_rule_state_creations_total",
            |r| r.state_creations,
            "counter",
            "States the rule created.",
        ),
    ];
    for (m, get, kind, help) in families {
        family(&mut out, m, kind, help);
        for r in &rules {
            let _ = writeln!(
                out,
                "{m}{{anchor=\"{}\",nr=\"{}\",rule=\"{}\"}} {}",
                label(&r.anchor),
                r.nr,
                label(&r.text),
                get(r)
            );
        }
    }
    let carp = sh.carp().map(|c| c.view());
    if let Some(v) = carp {
        carp_metrics(&mut out, &v);
    }
    let now = sh.now_us();
    let sync = sh.pfsync().map(|s| {
        (
            s.stats().clone(),
            s.applied,
            s.apply_errors,
            s.bulk_pending(),
            s.lag_us(now),
            s.defer_stats,
        )
    });
    if let Some((st, applied, errors, pending, lag, d)) = sync {
        pfsync_metrics(&mut out, &st, applied, errors, pending, lag);
        family(
            &mut out,
            "palisade_pfsync_deferred_total",
            "counter",
            "First packets held for the peer's INS_ACK (defer), by how they were let go.",
        );
        for (how, n) in [
            ("acked", d.acked),
            ("timeout", d.timed_out),
            ("overflow", d.overflowed),
            ("followed", d.followed),
        ] {
            let _ = writeln!(
                out,
                "palisade_pfsync_deferred_total{{outcome=\"{how}\"}} {n}"
            );
        }
    }
    out
}

/// pfsync: packets and messages each way, refusals, states applied, the
/// bulk update awaited.
fn pfsync_metrics(
    out: &mut String,
    st: &palisade_pfsync::sync::Stats,
    applied: u64,
    errors: u64,
    pending: bool,
    lag_us: u64,
) {
    family(
        out,
        "palisade_pfsync_packets_total",
        "counter",
        "pfsync packets sent and received.",
    );
    let _ = writeln!(
        out,
        "palisade_pfsync_packets_total{{direction=\"out\"}} {}",
        st.packets_sent
    );
    let _ = writeln!(
        out,
        "palisade_pfsync_packets_total{{direction=\"in\"}} {}",
        st.packets_received
    );
    family(
        out,
        "palisade_pfsync_messages_total",
        "counter",
        "pfsync messages sent and received, by action.",
    );
    for (dir, m) in [("out", &st.messages_sent), ("in", &st.messages_received)] {
        for (action, n) in m {
            let _ = writeln!(
                out,
                "palisade_pfsync_messages_total{{direction=\"{dir}\",action=\"{action}\"}} {n}"
            );
        }
    }
    family(
        out,
        "palisade_pfsync_refused_total",
        "counter",
        "pfsync packets refused, by reason.",
    );
    for (r, n) in &st.drops {
        let _ = writeln!(
            out,
            "palisade_pfsync_refused_total{{reason=\"{}\"}} {n}",
            r.name()
        );
    }
    family(
        out,
        "palisade_pfsync_states_applied_total",
        "counter",
        "The peer's states and changes applied to the table, and those that could not be.",
    );
    let _ = writeln!(
        out,
        "palisade_pfsync_states_applied_total{{result=\"ok\"}} {applied}"
    );
    let _ = writeln!(
        out,
        "palisade_pfsync_states_applied_total{{result=\"failed\"}} {errors}"
    );
    family(
        out,
        "palisade_pfsync_bulk_pending",
        "gauge",
        "1 while this node waits for its peer's bulk update (CARP demoted).",
    );
    let _ = writeln!(out, "palisade_pfsync_bulk_pending {}", u8::from(pending));
    family(
        out,
        "palisade_pfsync_lag_seconds",
        "gauge",
        "How long the oldest state change not yet sent to the peer has waited.",
    );
    let _ = writeln!(out, "palisade_pfsync_lag_seconds {}", lag_us as f64 / 1e6);
    family(
        out,
        "palisade_pfsync_lag_max_seconds",
        "gauge",
        "The longest a state change waited before it was sent, since the start.",
    );
    let _ = writeln!(
        out,
        "palisade_pfsync_lag_max_seconds {}",
        st.max_lag as f64 / 1e6
    );
    family(
        out,
        "palisade_pfsync_pushes_total",
        "counter",
        "Times pending changes were sent at once because a TCP state moved 16 KB.",
    );
    let _ = writeln!(out, "palisade_pfsync_pushes_total {}", st.pushes);
}

/// CARP: state per vhid, demote per group, transitions and refused
/// advertisements by reason.
fn carp_metrics(out: &mut String, v: &crate::carp::CarpView) {
    use palisade_carp::State;
    family(
        out,
        "palisade_carp_state",
        "gauge",
        "A CARP interface's state: 0 INIT, 1 BACKUP, 2 MASTER.",
    );
    for s in &v.vhosts {
        let n = match s.state {
            State::Init => 0,
            State::Backup => 1,
            State::Master => 2,
        };
        let _ = writeln!(
            out,
            "palisade_carp_state{{interface=\"{}\",carpdev=\"{}\",vhid=\"{}\"}} {n}",
            label(&s.name),
            label(&s.parent),
            s.vhid
        );
    }
    family(
        out,
        "palisade_carp_demote",
        "gauge",
        "An interface group's carp demote count.",
    );
    for (g, n) in &v.groups {
        let _ = writeln!(out, "palisade_carp_demote{{group=\"{}\"}} {n}", label(g));
    }
    family(
        out,
        "palisade_carp_transitions_total",
        "counter",
        "CARP state changes, by interface, new state and reason.",
    );
    for ((iface, to, why), n) in &v.transitions {
        let _ = writeln!(
            out,
            "palisade_carp_transitions_total{{interface=\"{}\",to=\"{}\",reason=\"{}\"}} {n}",
            label(iface),
            to.name(),
            why.name()
        );
    }
    family(
        out,
        "palisade_carp_rejects_total",
        "counter",
        "CARP advertisements refused, by reason.",
    );
    for (r, n) in &v.rejects {
        let _ = writeln!(
            out,
            "palisade_carp_rejects_total{{reason=\"{}\"}} {n}",
            r.name()
        );
    }
}

/// A request's head (up to the blank line), read within 2 s in all and
/// 16 KiB: a slow or endless client is dropped, not waited for.
fn read_head(mut s: &std::net::TcpStream) -> Option<String> {
    use std::io::Read;
    let _ = s.set_nonblocking(false);
    let _ = s.set_write_timeout(Some(Duration::from_secs(2)));
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && !head.windows(2).any(|w| w == b"\n\n") {
        let left = deadline.checked_duration_since(std::time::Instant::now())?;
        if left.is_zero() || head.len() > 16 * 1024 {
            return None;
        }
        let _ = s.set_read_timeout(Some(left));
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(_) => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Scrapes served at once; past that a client gets 503 at once.
pub const MAX_SCRAPERS: usize = 64;

/// Answer one client.
fn answer(s: std::net::TcpStream, sh: &Shared) {
    let Some(head) = read_head(&s) else {
        return;
    };
    let first = head.lines().next().unwrap_or("");
    let mut parts = first.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            render_cached(sh).to_string(),
        ),
        ("GET", "/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            "Palisade: metrics at /metrics\n".to_string(),
        ),
        ("GET", _) => (
            "404 Not Found",
            "text/plain",
            "not found: try /metrics\n".into(),
        ),
        _ => ("405 Method Not Allowed", "text/plain", "only GET\n".into()),
    };
    let head = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // The answer is written within 5 s in all, or the client is dropped.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let _ = write_by(&s, head.as_bytes(), deadline)
        .and_then(|_| write_by(&s, body.as_bytes(), deadline));
}

/// Write all of `data` by `deadline` (a client that takes a little now
/// and then cannot hold the thread longer).
fn write_by(
    mut s: &std::net::TcpStream,
    mut data: &[u8],
    deadline: std::time::Instant,
) -> std::io::Result<()> {
    while !data.is_empty() {
        let left = deadline
            .checked_duration_since(std::time::Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::TimedOut))?;
        s.set_write_timeout(Some(left))?;
        match s.write(data) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The exposition, rendered at most once a second whatever the number of
/// scrapers (each render takes the data plane's lock for its listings).
fn render_cached(sh: &Shared) -> std::sync::Arc<String> {
    use std::sync::{Arc, Mutex};
    static CACHE: Mutex<Option<(std::time::Instant, Arc<String>)>> = Mutex::new(None);
    let mut c = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    match &*c {
        Some((at, text)) if at.elapsed() < Duration::from_secs(1) => text.clone(),
        _ => {
            let text = Arc::new(render(sh));
            *c = Some((std::time::Instant::now(), text.clone()));
            text
        }
    }
}

/// Serve until `stop()`: each client on its own thread, at most
/// `MAX_SCRAPERS` at once, each bounded in time (2 s for its request, 5 s
/// in all for the answer); the accepting thread never waits for a client,
/// and the exposition is rendered at most once a second.
pub fn serve(l: TcpListener, sh: &Shared, stop: impl Fn() -> bool + Sync) {
    use std::os::fd::AsRawFd;
    let _ = l.set_nonblocking(true);
    crate::listen::serve(
        l.as_raw_fd(),
        || l.accept().map(|(s, _)| s),
        crate::listen::Bounds {
            max: MAX_SCRAPERS,
            name: "metrics",
            stack: None,
        },
        &stop,
        |s| {
            let _ = s.set_nonblocking(true);
            let mut w = &s;
            let _ = w.write_all(
                b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        },
        &|s| answer(s, sh),
    );
}
