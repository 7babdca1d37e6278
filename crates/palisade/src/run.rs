//! `palisade run -c palisade.toml`: the daemon (first slice: a transparent
//! bridge between owned ports, filtered by pf.conf).
//!
//! The configuration is checked completely (TOML, ports, pf.conf) before
//! any interface is touched; a bad configuration leaves the machine as it
//! was. Owned ports are kept away from the kernel's own stack (IPv6 off, so
//! no router solicitations or neighbour discovery from the kernel); SIGTERM
//! and SIGINT put that back.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use palisade_filter::{Engine, Filter};
use palisade_net::dataplane::Dataplane;
use palisade_net::tap::Tap;

use crate::daemon::{on_hup, on_signal, stopping, Shared, RELOAD};
use crate::isolation::Isolation;
use crate::load::{load, port_mac};
use crate::worker::{open_ports, seed, worker, PflogFile};

/// Logging: to journald when systemd started us with the journal on
/// stderr, else to stderr (one line per event, no colours).
/// The log level: `RUST_LOG` (or `PALISADE_LOG`) naming one of error,
/// warn, info, debug, trace (info when unset; a value that names none is
/// said and ignored).
pub fn log_level() -> (tracing_subscriber::filter::LevelFilter, Option<String>) {
    use tracing_subscriber::filter::LevelFilter;
    let Some(v) = std::env::var("PALISADE_LOG")
        .ok()
        .or_else(|| std::env::var("RUST_LOG").ok())
        .filter(|v| !v.trim().is_empty())
    else {
        return (LevelFilter::INFO, None);
    };
    match v.trim().to_ascii_lowercase().parse::<LevelFilter>() {
        Ok(l) => (l, None),
        Err(_) => (
            LevelFilter::INFO,
            Some(format!(
                "log level '{v}' (RUST_LOG or PALISADE_LOG) is none of error, warn, info, debug, trace, off: info"
            )),
        ),
    }
}

fn init_logging() {
    use tracing_subscriber::prelude::*;
    let (level, bad) = log_level();
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(j) = tracing_journald::layer() {
            let _ = tracing_subscriber::registry()
                .with(
                    j.with_syslog_identifier("palisade".into())
                        .with_filter(level),
                )
                .try_init();
            if let Some(b) = bad {
                tracing::warn!("{b}");
            }
            return;
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .with_max_level(level)
        .try_init();
    if let Some(b) = bad {
        tracing::warn!("{b}");
    }
}

pub fn run(path: &Path) -> Result<(), String> {
    init_logging();
    let (cfg, pf, host) = load(path)?;
    let config_text = std::fs::read_to_string(path).ok();
    // Before anything is touched: no other daemon runs here (held until
    // this one ends).
    let _one = crate::isolation::lock(Path::new(crate::isolation::RUN_DIR))?;
    let pf_path = path.parent().unwrap_or(Path::new(".")).join(&cfg.pf);
    let host_model = host.clone();
    // The data plane's clock (ms since `start`, which is `CLOCK_AHEAD`
    // before now) starts here: before the tables are stamped and the
    // states taken back, the fast path reads its epoch, CARP and pfsync
    // their first time.
    let started = Instant::now();
    let start = crate::daemon::clock_origin();
    let now_ms = || start.elapsed().as_millis() as u64;
    let now_us = || start.elapsed().as_micros() as u64;
    let engine = Arc::new(Engine::new_at(&pf, host, start.elapsed().as_secs()));
    // pfsync's creator id: `set hostid` if pf.conf sets it, else random
    // (never 0), so that two firewalls' states never share an identity.
    let creator = pf
        .options
        .iter()
        .find_map(|o| match o {
            palisade_conf::ir::SetOption::HostId(h) => Some(*h),
            _ => None,
        })
        .filter(|h| *h != 0)
        .unwrap_or_else(|| (seed() as u32) | 1);
    let mut filter = Filter::new(engine, &pf, creator);
    // The states' ids: of this start alone (a fixed `set hostid` would
    // otherwise give new states the ids a pfsync peer still holds for
    // those of before the restart; see `StateTable::set_epoch`).
    filter.states.set_epoch((seed() as u32) | 1);
    // `set fingerprints "FILE"` replaces the built-in OS fingerprints.
    if let Some(db) = palisade_filter::osfp::FingerprintDb::from_options(&pf.options)
        .map_err(|e| e.to_string())?
    {
        filter.set_fingerprints(db);
    }
    if let Some((entries, secs)) = cfg.osfp {
        filter.record_syns(entries, secs * 1000);
    }
    // The states the last run saved when it stopped (`state-file`).
    let mut restored_ids = Vec::new();
    if let Some(path) = &cfg.state_file {
        if let Some(r) = crate::statefile::restore(path, &mut filter, now_ms()) {
            restored_ids = r.ids.clone();
            tracing::info!(
                "state-file {}: {} states taken back (saved {:.1} s ago; {} expired meanwhile, {} refused){}",
                path.display(),
                r.taken,
                r.stopped_ms as f64 / 1000.0,
                r.expired,
                r.refused,
                if r.other_ruleset {
                    "; the ruleset changed, so they keep no rule (default options and timeouts)"
                } else {
                    ""
                }
            );
        }
    }
    let state_file = cfg.state_file.clone();
    let names: Vec<String> = cfg.ports.iter().map(|p| p.name.clone()).collect();
    let workers = cfg.workers;
    // The in-kernel fast path: loaded and attached before the ports are
    // opened split (without its program, split sockets would see tagged
    // frames twice); if that fails, Palisade runs without it.
    let fastpath = if cfg.fastpath {
        match attach_fastpath(&names) {
            Ok(fp) => {
                tracing::info!("fastpath: attached to every port (docs/fastpath.md)");
                Some(fp)
            }
            Err(e) => {
                tracing::error!("fastpath: {e}; running without it");
                None
            }
        }
    } else {
        None
    };
    let split = fastpath.is_some();
    let cfg_control = cfg.control.clone();
    let cfg_metrics = cfg.metrics;
    // Fanout group ids are per network namespace: derive them from our PID.
    let fanout = (workers > 1).then(|| (std::process::id() as u16).wrapping_mul(16));
    let mut sockets = Vec::new();
    for _ in 0..workers {
        sockets.push(open_ports(&names, fanout, split, cfg.ring_frames)?);
    }
    let mac_ports: Vec<String> = cfg
        .ports
        .iter()
        .filter(|p| p.mac_port)
        .map(|p| p.name.clone())
        .collect();
    let mut isolation = Isolation::apply(&names, &mac_ports, Path::new(crate::isolation::RUN_DIR))
        .map_err(|e| format!("cannot record the ports' settings before changing them: {e}"))?;
    // The MAC Palisade answers with on each port (`mac = "port"`: the
    // port's own, the kernel's moved aside just now).
    let macs = names
        .iter()
        .map(|n| isolation.answer_mac(n))
        .collect::<Result<Vec<_>, _>>()?;
    // SAFETY: installing an async-signal-safe handler that only stores a flag.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGHUP, on_hup as *const () as libc::sighandler_t);
    }
    let summary: Vec<String> = cfg
        .ifaces
        .iter()
        .map(|i| {
            let a: Vec<String> = i
                .addresses
                .iter()
                .map(|p| format!("{}/{}", p.ip, p.bits))
                .collect();
            format!("{}[{}]", i.name, a.join(","))
        })
        .collect();
    let host = match &cfg.host {
        Some(name) => {
            let t = Tap::create(name).map_err(|e| format!("host interface '{name}': {e}"))?;
            for w in t.configure(&cfg) {
                tracing::warn!("{w}");
            }
            Some((port_mac(name)?, t))
        }
        None => None,
    };
    let logging_rules = pf.main.rules.iter().filter(|r| r.log.is_some()).count();
    let pflog = match &cfg.pflog {
        Some(p) => Some(PflogFile::open(p, cfg.pflog_size)?),
        None => {
            if logging_rules > 0 {
                tracing::warn!(
                    "{logging_rules} rule(s) log, but no pflog file is configured (pflog = \"/var/log/pflog\" in palisade.toml): logged packets are not written anywhere"
                );
            }
            None
        }
    };
    let host_port = names.len();
    let ifindexes: Vec<u32> = names
        .iter()
        .map(|n| palisade_net::afpacket::ifindex(n).map(|i| i as u32))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let mut dp = Dataplane::with_seed(cfg, &macs, filter, seed());
    if let Some(fp) = fastpath {
        dp.set_fastpath(fp, ifindexes, now_ms());
    }
    let dp_cfg = dp.cfg.clone();
    // The ports' links as they are, before CARP starts (it would take a
    // link it has not heard of for up, and report a link-up first).
    let mut down_at_start = Vec::new();
    for (i, p) in dp_cfg.ports.iter().enumerate() {
        if !crate::worker::link_is_up(&p.name) {
            tracing::warn!("port '{}': link down at start", p.name);
            let _ = dp.set_link(i, false);
            down_at_start.push(i);
        }
    }
    let carp = crate::carp::CarpRuntime::new(&dp_cfg, &mut dp, seed(), now_us())?;
    let pfsync = match &dp_cfg.pfsync {
        Some(p) => {
            let mut s = crate::pfsync::SyncRuntime::new(p, &mut dp, creator)?;
            // What the state file gave back stays if the peer has it.
            s.restored(std::mem::take(&mut restored_ids), carp.is_some());
            s.start(now_us());
            // A sync link down at start is down as any other: CARP
            // demoted by its share, and the start's bulk update waits for
            // the link with its own demotion (this node has none of the
            // peer's states), the peer's table asked for when it comes up.
            for &i in &down_at_start {
                s.port_link(&dp, i, false, now_us());
            }
            Some(s)
        }
        None => None,
    };
    let wake = crate::daemon::Wake::new()?;
    dp.set_logging(pflog.is_some());
    if let Some((mac, _)) = &host {
        dp.set_host(host_port, *mac);
    }
    let sh = Shared {
        dp: Mutex::new(dp),
        tap: host.map(|(_, t)| t),
        host_port,
        start,
        started,
        pf_path,
        config_path: path.to_path_buf(),
        config_text,
        host: host_model,
        options: crate::ops::restart_only_options(&pf.options),
        queues: Mutex::new(pf.queues.iter().map(|q| q.name.clone()).collect()),
        flushed: Mutex::new(Default::default()),
        followers: Mutex::new(Vec::new()),
        pflog_file: pflog.is_some(),
        carp: carp.map(Mutex::new),
        pfsync: pfsync.map(Mutex::new),
        wake,
    };
    let metrics = match cfg_metrics {
        Some(a) => {
            // Bound after the host interface has the firewall's addresses;
            // failing here undoes what was set up (Isolation, TAP drop).
            Some(std::net::TcpListener::bind(a).map_err(|e| format!("metrics listener {a}: {e}"))?)
        }
        None => None,
    };
    // Without its control socket nothing could reload, show or stop the
    // daemon cleanly (another daemon holds the path, or it is not a
    // socket): refused as the metrics listener is, undoing the set-up.
    let control = crate::control::bind(&cfg_control).map_err(|e| format!("control socket: {e}"))?;
    // Said once the listeners are bound (a daemon that then failed on
    // one said "running" first: an ops probe).
    tracing::info!(
        "running: {} ({} rules, {workers} worker{})",
        summary.join(" "),
        pf.main.rules.len(),
        if workers == 1 { "" } else { "s" }
    );
    let first = sockets.remove(0);
    let outs = sh.dp().start(now_ms());
    sh.send(&first, outs);
    std::thread::scope(|s| {
        {
            let (sh, l) = (&sh, &control);
            s.spawn(move || {
                crate::control::serve(l, crate::daemon::stopping, |req| {
                    if req["cmd"] == "log" {
                        crate::control::Reply::Stream(sh.follow())
                    } else {
                        crate::ops::reply(sh, req)
                    }
                })
            });
        }
        if let Some(l) = metrics {
            let sh = &sh;
            s.spawn(move || crate::metrics::serve(l, sh, crate::daemon::stopping));
        }
        // SIGHUP: reloads happen here, not on a worker, so that parsing and
        // compiling a big pf.conf never holds up forwarding.
        {
            let sh = &sh;
            let spawned = std::thread::Builder::new()
                .name("reload".into())
                .stack_size(8 << 20)
                .spawn_scoped(s, move || {
                    while !stopping() {
                        if RELOAD.swap(false, Ordering::SeqCst) {
                            let (ok, msgs) = crate::ops::reload(sh, None);
                            crate::ops::log_reload(ok, &msgs);
                        }
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                });
            if let Err(e) = spawned {
                tracing::error!("no reload thread (SIGHUP will not reload): {e}");
            }
        }
        for (k, ports) in sockets.into_iter().enumerate() {
            let sh = &sh;
            s.spawn(move || worker(k + 1, sh, ports, fanout, None, None));
        }
        // Ports open, rules compiled, control and metrics listening.
        crate::notify::ready(&sh);
        // Up: the saved states are in the table, the file goes.
        if let Some(path) = &state_file {
            crate::statefile::taken(path);
        }
        crate::daemon::WAKE_FD.store(sh.wake.fd(), Ordering::SeqCst);
        worker(0, &sh, first, fanout, Some(&mut isolation), pflog);
        crate::daemon::WAKE_FD.store(-1, Ordering::SeqCst);
        crate::notify::stopping();
    });
    // Every worker has stopped: the states as they stand (with what the
    // fast path did, its flows taken back first) are saved for the next
    // start.
    let mut lost = None;
    if let Some(path) = &state_file {
        let mut dp = sh.dp();
        dp.fast_take_all_back();
        let now_ms = start.elapsed().as_millis() as u64;
        match crate::statefile::save(path, &dp.filter, now_ms) {
            Ok(n) => tracing::info!("state-file {}: {n} states saved", path.display()),
            Err(e) => {
                tracing::error!("{e}: the states are lost");
                // The stop finishes (ports given back), then says so in
                // its exit status.
                lost = Some(format!("{e}: the states are lost"));
            }
        }
    }
    drop(isolation);
    drop(control);
    crate::control::remove_socket(&cfg_control);
    // The hook's queued runs (the bow-outs' MASTER -> INIT) finish before
    // the process goes, which would end the hook thread mid-queue; after
    // the ports are put back, so that a slow hook does not hold them.
    if let Some(mut c) = sh.carp() {
        c.finish_hooks(crate::carp::HOOK_DRAIN);
    }
    tracing::info!("stopping: {}", stop_summary(&sh.dp().counters));
    if let Some((flows, c)) = sh.dp().fastpath_status() {
        tracing::info!(
            "fastpath: {flows} flows handed over; taken {} ({} super-packets), dropped {}, given back: flags {}, window {}, slow {}, stale {}, fence {}",
            c.taken,
            c.taken_super,
            c.dropped,
            c.back_flags,
            c.back_window,
            c.back_slow,
            c.back_stale,
            c.back_fence
        );
    }
    match lost {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Load the fast path's program and attach it at tc ingress of every port.
fn attach_fastpath(names: &[String]) -> Result<palisade_net::fastpath::FastPath, String> {
    let mut fp = palisade_net::fastpath::FastPath::load().map_err(|e| e.to_string())?;
    for n in names {
        fp.attach(n).map_err(|e| e.to_string())?;
    }
    Ok(fp)
}

/// The data plane's counters as the stop's log line says them: every
/// counter by the name `show info` uses (`name N`, comma-separated), then
/// the drop reasons that are not zero.
fn stop_summary(c: &palisade_net::dataplane::Counters) -> String {
    use palisade_net::dataplane::DropReason;
    let all = c.named();
    let mut out = all
        .iter()
        .map(|(name, n)| format!("{name} {n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let drops: Vec<String> = DropReason::ALL
        .iter()
        .map(|r| (r.name(), c.drops.get(*r)))
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    out.push_str("; dropped: ");
    out.push_str(&if drops.is_empty() {
        "none".to_string()
    } else {
        drops.join(", ")
    });
    out
}

#[cfg(test)]
mod stop_tests {
    #[test]
    fn the_stop_line_names_its_counters() {
        use palisade_net::dataplane::{Counters, DropReason};
        let mut c = Counters {
            frames_in: 10,
            frames_out: 7,
            routed: 3,
            ..Default::default()
        };
        c.ring_dropped(2);
        let s = super::stop_summary(&c);
        assert!(
            s.starts_with("frames_in 10, frames_out 7, segmented 0,"),
            "{s}"
        );
        assert!(
            s.contains(", routed 3, ") && s.contains(", bridged 0, "),
            "{s}"
        );
        assert!(
            s.contains(&format!("; dropped: {} 2", DropReason::RingFull.name())),
            "{s}"
        );
        assert!(!s.contains("Counters"), "{s}");
        assert!(super::stop_summary(&Counters::default()).ends_with("; dropped: none"));
    }
}
