//! `palisade run -c palisade.toml`: the daemon (first slice: a transparent
//! bridge between owned ports, filtered by pf.conf).
//!
//! The configuration is checked completely (TOML, ports, pf.conf) before
//! any interface is touched; a bad configuration leaves the machine as it
//! was. Owned ports are kept away from the kernel's own stack (IPv6 off, so
//! no router solicitations or neighbour discovery from the kernel); SIGTERM
//! and SIGINT put that back.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use palisade_conf::host::HostModel;
use palisade_conf::{parse_input, Input, ParseOptions};
use palisade_filter::{Engine, Filter};
use palisade_net::afpacket::{self, Port};
use palisade_net::config::Config;
use palisade_net::dataplane::{Dataplane, Mac};
use palisade_net::tap::Tap;

use crate::isolation::Isolation;

/// Read and check the daemon's configuration and its pf.conf; errors name
/// the file, the line and the problem. Nothing is touched.
pub fn load(path: &Path) -> Result<(Config, palisade_conf::ir::Config, HostModel), String> {
    let text = palisade_conf::files::read_text(path, palisade_conf::files::CONFIG)
        .map_err(|e| e.message(&path.display().to_string()))?;
    let cfg =
        Config::parse(path, &text, &|n| afpacket::ifindex(n).is_ok()).map_err(|e| e.to_string())?;
    let mut host = crate::sysmodel::from_system();
    host.interfaces = cfg.host_interfaces();
    let pf = path.parent().unwrap_or(Path::new(".")).join(&cfg.pf);
    let opts = ParseOptions {
        host: host.clone(),
        ..Default::default()
    };
    let out = parse_input(Input::File(&pf), &opts);
    if out.errors > 0 {
        return Err(out.stderr.join("\n"));
    }
    // A `set fingerprints` file must read and parse before anything starts.
    palisade_filter::osfp::FingerprintDb::from_options(&out.config.options)
        .map_err(|e| e.to_string())?;
    let unenforced = out.unenforced_warnings(&pf.display().to_string());
    for w in out
        .stderr
        .iter()
        .chain(&unenforced)
        .chain(&unknown_interfaces(&out.config, &host))
    {
        eprintln!("{w}");
    }
    Ok((cfg, out.config, host))
}

/// Warnings for interface names in rules (`on`, `received-on`) that no
/// interface or group of palisade.toml has. On OpenBSD an unknown name may
/// be an interface that appears later; here the interfaces are exactly
/// those palisade.toml defines, so such rules can never match.
pub fn unknown_interfaces(pf: &palisade_conf::ir::Config, host: &HostModel) -> Vec<String> {
    fn walk(
        rs: &palisade_conf::ir::Ruleset,
        known: &dyn Fn(&str) -> bool,
        out: &mut Vec<String>,
        seen: &mut std::collections::HashSet<(String, u32, String)>,
    ) {
        for r in &rs.rules {
            for (_, name) in [&r.ifname, &r.received_on].into_iter().flatten() {
                if !known(name) && seen.insert((r.file.clone(), r.line, name.clone())) {
                    out.push(format!(
                        "{}:{}: warning: no interface or group '{name}' in palisade.toml: this rule never matches on it",
                        r.file, r.line
                    ));
                }
            }
            if let Some(i) = &r.inline {
                walk(i, known, out, seen);
            }
        }
    }
    let known = |n: &str| {
        n == "any"
            || host
                .interfaces
                .iter()
                .any(|i| i.name == n || i.groups.iter().any(|g| g == n))
    };
    let mut out = Vec::new();
    let mut seen = Default::default();
    walk(&pf.main, &known, &mut out, &mut seen);
    for a in &pf.load_anchors {
        walk(&a.ruleset, &known, &mut out, &mut seen);
    }
    out
}

fn port_mac(name: &str) -> Result<Mac, String> {
    let t = std::fs::read_to_string(format!("/sys/class/net/{name}/address"))
        .map_err(|e| format!("port '{name}': cannot read its address: {e}"))?;
    let b: Vec<u8> = t
        .trim()
        .split(':')
        .filter_map(|x| u8::from_str_radix(x, 16).ok())
        .collect();
    b.try_into()
        .map_err(|_| format!("port '{name}': not an Ethernet interface"))
}

static STOP: AtomicBool = AtomicBool::new(false);
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

extern "C" fn on_hup(_: libc::c_int) {
    RELOAD.store(true, Ordering::SeqCst);
}

/// Logged packets to a pcap file (DLT_PFLOG, what tcpdump -r reads),
/// rotated by size: the full file becomes FILE.0 (replacing the older).
struct PflogFile {
    path: PathBuf,
    max: u64,
    written: u64,
    w: Option<pcap_file::pcap::PcapWriter<std::fs::File>>,
}

impl PflogFile {
    fn open(path: &Path, max: u64) -> Result<PflogFile, String> {
        let mut f = PflogFile {
            path: path.to_path_buf(),
            max,
            written: 0,
            w: None,
        };
        f.start()?;
        Ok(f)
    }

    fn start(&mut self) -> Result<(), String> {
        if let Some(d) = self.path.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        let file = std::fs::File::create(&self.path)
            .map_err(|e| format!("pflog {}: {e}", self.path.display()))?;
        let header = pcap_file::pcap::PcapHeader {
            datalink: pcap_file::DataLink::PFLOG,
            ..Default::default()
        };
        self.w = Some(
            pcap_file::pcap::PcapWriter::with_header(file, header)
                .map_err(|e| format!("pflog {}: {e}", self.path.display()))?,
        );
        self.written = 24;
        Ok(())
    }

    fn write(&mut self, recs: Vec<Vec<u8>>) {
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        for r in recs {
            if self.written + r.len() as u64 + 16 > self.max {
                let mut old = self.path.clone().into_os_string();
                old.push(".0");
                self.w = None;
                let _ = std::fs::rename(&self.path, &old);
                if let Err(e) = self.start() {
                    tracing::error!("{e}");
                    return;
                }
            }
            if let Some(w) = self.w.as_mut() {
                let p = pcap_file::pcap::PcapPacket::new(ts, r.len() as u32, &r);
                if let Err(e) = w.write_packet(&p) {
                    tracing::error!("pflog {}: {e}", self.path.display());
                    return;
                }
                self.written += r.len() as u64 + 16;
            }
        }
        // (PcapWriter writes straight to the file: nothing to flush.)
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Health {
    Up,
    Down,
    /// The interface no longer exists.
    Gone,
    /// An interface of that name exists again, not the one we opened.
    Replaced,
}

fn check_port(p: &Port) -> Health {
    match afpacket::ifindex(&p.name) {
        Err(_) => Health::Gone,
        Ok(ix) if ix != p.ifindex => Health::Replaced,
        Ok(_) => {
            let state = std::fs::read_to_string(format!("/sys/class/net/{}/operstate", p.name))
                .unwrap_or_default();
            match state.trim() {
                "down" | "lowerlayerdown" | "notpresent" => Health::Down,
                _ => Health::Up,
            }
        }
    }
}

/// What the workers share: the data plane (one lock per batch of frames),
/// the host interface and the clock.
pub struct Shared {
    dp: Mutex<Dataplane>,
    tap: Option<Tap>,
    host_port: usize,
    pub start: Instant,
    /// For reloads: the pf.conf, the host model it is read against, and
    /// the `set` options in force.
    pub pf_path: PathBuf,
    pub host: HostModel,
    pub options: String,
    /// `set limit` as configured (for `show limits`).
    pub limits: Vec<(String, u32)>,
    /// `palisade log --follow` clients: one line per logged packet each.
    followers: Mutex<Vec<std::sync::mpsc::SyncSender<String>>>,
    /// A pflog file is written (logging stays on without followers).
    pflog_file: bool,
}

impl Shared {
    /// Send what the data plane produced: per port in one batch (frames
    /// of a port keep their order), the host interface frame by frame.
    fn send(&self, ports: &[Port], outs: Vec<(usize, Vec<u8>)>) {
        for (i, port) in ports.iter().enumerate() {
            let batch: Vec<&[u8]> = outs
                .iter()
                .filter(|(p, _)| *p == i)
                .map(|(_, f)| f.as_slice())
                .collect();
            if batch.is_empty() {
                continue;
            }
            if let (_, Some(e)) = port.send_batch(&batch) {
                tracing::warn!("send on {}: {e}", port.name);
            }
        }
        if let Some(t) = &self.tap {
            for (_, f) in outs.iter().filter(|(p, _)| *p >= ports.len()) {
                if let Err(e) = t.send(f) {
                    tracing::warn!("send on the host interface: {e}");
                }
            }
        }
    }

    /// A new `log --follow` client.
    fn follow(&self) -> std::sync::mpsc::Receiver<String> {
        let (tx, rx) = std::sync::mpsc::sync_channel(4096);
        let mut f = self.followers.lock().unwrap_or_else(|e| e.into_inner());
        f.push(tx);
        self.dp().set_logging(true);
        rx
    }

    /// Give logged packets to the followers (a slow one loses lines; a
    /// gone one is dropped, and logging stops with the last of them unless
    /// a pflog file is written).
    fn to_followers(&self, recs: &[Vec<u8>]) {
        let mut f = self.followers.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_empty() {
            return;
        }
        let lines: Vec<String> = recs.iter().map(|r| crate::ops::log_line(r)).collect();
        f.retain(|tx| {
            lines.iter().all(|l| {
                !matches!(
                    tx.try_send(l.clone()),
                    Err(std::sync::mpsc::TrySendError::Disconnected(_))
                )
            })
        });
        if f.is_empty() && !self.pflog_file {
            self.dp().set_logging(false);
        }
    }

    pub fn dp(&self) -> std::sync::MutexGuard<'_, Dataplane> {
        // A worker that panicked holding the lock leaves the data plane as
        // it was between two frames; keep going.
        self.dp.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn open_ports(names: &[String], fanout: Option<u16>) -> Result<Vec<Port>, String> {
    let mut ports = Vec::new();
    for n in names {
        let p = Port::open(n).map_err(|e| format!("port '{n}': {e}"))?;
        // One group per interface, the same in every worker; a port that is
        // created again gets a new index, so a fresh group (the old one may
        // still hold the sockets of the vanished interface).
        if let Some(g) = fanout {
            p.join_fanout(g.wrapping_add(p.ifindex as u16))
                .map_err(|e| format!("port '{n}': PACKET_FANOUT: {e}"))?;
        }
        ports.push(p);
    }
    Ok(ports)
}

/// One worker: its own socket on every port (in the port's fanout group),
/// frames processed a batch at a time under the data plane's lock, sent
/// after it is released. Worker 0 also serves the host interface, the
/// timers and the ports' health.
fn worker(
    id: usize,
    sh: &Shared,
    mut ports: Vec<Port>,
    fanout: Option<u16>,
    mut isolation: Option<&mut Isolation>,
    mut pflog: Option<PflogFile>,
) {
    let mut fds: Vec<_> = ports.iter().map(|p| p.fd()).collect();
    if id == 0 {
        if let Some(t) = &sh.tap {
            fds.push(t.fd());
        }
    }
    let mut buf = vec![0u8; 65536];
    let mut last_tick = 0;
    let mut health = vec![Health::Up; ports.len()];
    let mut pulse = crate::notify::Pulse::new();
    while !STOP.load(Ordering::SeqCst) {
        if id == 0 {
            pulse.beat(sh);
        }
        let errs = match afpacket::wait_fds(&fds, 100) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("poll: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
                Vec::new()
            }
        };
        let now = sh.start.elapsed().as_millis() as u64;
        for i in errs.into_iter().filter(|&i| i < ports.len()) {
            if let Some(e) = ports[i].take_error() {
                if id == 0 && health[i] == Health::Up {
                    tracing::error!("port '{}': {e}", ports[i].name);
                }
            }
        }
        for i in 0..ports.len() {
            // Frames are handled as they come out of the ring and sent in
            // chunks: little memory in flight, one lock per frame.
            let mut outs = Vec::new();
            ports[i].recv_batch(|frame| {
                let o = sh.dp().input(i, frame, now);
                outs.extend(o);
                if outs.len() >= 64 {
                    sh.send(&ports, std::mem::take(&mut outs));
                }
            });
            sh.send(&ports, outs);
        }
        if id == 0 {
            if let Some(t) = &sh.tap {
                let mut frames = Vec::new();
                t.recv_all(&mut buf, |frame| frames.push(frame.to_vec()));
                if !frames.is_empty() {
                    let mut outs = Vec::new();
                    {
                        let mut dp = sh.dp();
                        for f in &frames {
                            outs.extend(dp.input(sh.host_port, f, now));
                        }
                    }
                    sh.send(&ports, outs);
                }
            }
        }
        if id == 0 {
            let recs = sh.dp().take_log();
            if !recs.is_empty() {
                sh.to_followers(&recs);
                if let Some(p) = pflog.as_mut() {
                    p.write(recs);
                }
            }
        }
        if now < last_tick + 1000 {
            continue;
        }
        last_tick = now;
        if id == 0 {
            let outs = sh.dp().tick(now);
            sh.send(&ports, outs);
        }
        // Ports that went down or away, and their return. Every worker
        // reopens its own sockets; worker 0 reports and re-announces.
        let mut announce = false;
        for i in 0..ports.len() {
            let name = ports[i].name.clone();
            let h = check_port(&ports[i]);
            match (health[i], h) {
                (a, b) if a == b && b != Health::Replaced => {}
                (_, Health::Gone) if id == 0 => {
                    tracing::warn!("port '{name}' is gone; waiting for it to come back")
                }
                (_, Health::Down) if id == 0 => tracing::warn!("port '{name}': link down"),
                (_, Health::Replaced) => {
                    let reopened = open_ports(std::slice::from_ref(&name), fanout);
                    match (reopened, port_mac(&name)) {
                        (Ok(mut p), Ok(mac)) => {
                            let p = p.remove(0);
                            fds[i] = p.fd();
                            ports[i] = p;
                            if id == 0 {
                                tracing::info!("port '{name}' is back");
                                sh.dp()
                                    .set_port_mac(i, palisade_net::dataplane::own_mac(mac));
                                if let Some(iso) = isolation.as_deref_mut() {
                                    if let Err(e) = iso.add_ports(std::slice::from_ref(&name)) {
                                        tracing::error!("port '{name}': {e}");
                                    }
                                }
                                announce = true;
                            }
                            health[i] = Health::Up;
                            continue;
                        }
                        (Err(e), _) | (_, Err(e)) => {
                            if id == 0 && health[i] != Health::Replaced {
                                tracing::error!("port '{name}' is back but cannot be opened: {e}");
                            }
                        }
                    }
                }
                (_, Health::Up) if id == 0 => {
                    tracing::info!("port '{name}': link up");
                    announce = true;
                }
                _ => {}
            }
            health[i] = h;
        }
        if announce {
            let outs = sh.dp().start(now);
            sh.send(&ports, outs);
        }
    }
}

/// A random seed for the data plane (pf's translation ports, sequence
/// numbers): from the kernel (getrandom), or the clock if that fails.
fn seed() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most the 8 bytes we pass.
    let n = unsafe { libc::getrandom(b.as_mut_ptr() as *mut libc::c_void, 8, 0) };
    if n == 8 {
        u64::from_ne_bytes(b)
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed)
    }
}

/// Logging: to journald when systemd started us with the journal on
/// stderr, else to stderr (one line per event, no colours).
fn init_logging() {
    use tracing_subscriber::prelude::*;
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(j) = tracing_journald::layer() {
            let _ = tracing_subscriber::registry()
                .with(j.with_syslog_identifier("palisade".into()))
                .try_init();
            return;
        }
    }
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_target(false)
        .try_init();
}

pub fn run(path: &Path) -> Result<(), String> {
    init_logging();
    let (cfg, pf, host) = load(path)?;
    let pf_path = path.parent().unwrap_or(Path::new(".")).join(&cfg.pf);
    let host_model = host.clone();
    let engine = Arc::new(Engine::new(&pf, host));
    let mut filter = Filter::new(engine, &pf, 1);
    // `set fingerprints "FILE"` replaces the built-in OS fingerprints.
    if let Some(db) = palisade_filter::osfp::FingerprintDb::from_options(&pf.options)
        .map_err(|e| e.to_string())?
    {
        filter.set_fingerprints(db);
    }
    let names: Vec<String> = cfg.ports.iter().map(|p| p.name.clone()).collect();
    let macs = names
        .iter()
        .map(|n| port_mac(n).map(palisade_net::dataplane::own_mac))
        .collect::<Result<Vec<_>, _>>()?;
    let workers = cfg.workers;
    let cfg_control = cfg.control.clone();
    let cfg_metrics = cfg.metrics;
    // Fanout group ids are per network namespace: derive them from our PID.
    let fanout = (workers > 1).then(|| (std::process::id() as u16).wrapping_mul(16));
    let mut sockets = Vec::new();
    for _ in 0..workers {
        sockets.push(open_ports(&names, fanout)?);
    }
    let mut isolation = Isolation::apply(&names, Path::new(crate::isolation::RUN_DIR))
        .map_err(|e| format!("cannot record the ports' settings before changing them: {e}"))?;
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
    let mut dp = Dataplane::with_seed(cfg, &macs, filter, seed());
    dp.set_logging(pflog.is_some());
    if let Some((mac, _)) = &host {
        dp.set_host(host_port, *mac);
    }
    let sh = Shared {
        dp: Mutex::new(dp),
        tap: host.map(|(_, t)| t),
        host_port,
        start: Instant::now(),
        pf_path,
        host: host_model,
        options: format!("{:?}", pf.options),
        limits: pf
            .options
            .iter()
            .filter_map(|o| match o {
                palisade_conf::ir::SetOption::Limit(n, v) => Some((n.clone(), *v)),
                _ => None,
            })
            .collect(),
        followers: Mutex::new(Vec::new()),
        pflog_file: pflog.is_some(),
    };
    tracing::info!(
        "running: {} ({} rules, {workers} worker{})",
        summary.join(" "),
        pf.main.rules.len(),
        if workers == 1 { "" } else { "s" }
    );
    let metrics = match cfg_metrics {
        Some(a) => {
            // Bound after the host interface has the firewall's addresses;
            // failing here undoes what was set up (Isolation, TAP drop).
            Some(std::net::TcpListener::bind(a).map_err(|e| format!("metrics listener {a}: {e}"))?)
        }
        None => None,
    };
    let control = match crate::control::bind(&cfg_control) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!("no control socket: {e}");
            None
        }
    };
    let first = sockets.remove(0);
    let outs = sh.dp().start(0);
    sh.send(&first, outs);
    std::thread::scope(|s| {
        if let Some(l) = &control {
            let sh = &sh;
            s.spawn(move || {
                crate::control::serve(
                    l,
                    || STOP.load(Ordering::SeqCst),
                    |req| {
                        if req["cmd"] == "log" {
                            crate::control::Reply::Stream(sh.follow())
                        } else {
                            crate::ops::reply(sh, req)
                        }
                    },
                )
            });
        }
        if let Some(l) = metrics {
            let sh = &sh;
            s.spawn(move || crate::metrics::serve(l, sh, || STOP.load(Ordering::SeqCst)));
        }
        // SIGHUP: reloads happen here, not on a worker, so that parsing and
        // compiling a big pf.conf never holds up forwarding.
        {
            let sh = &sh;
            let spawned = std::thread::Builder::new()
                .name("reload".into())
                .stack_size(8 << 20)
                .spawn_scoped(s, move || {
                    while !STOP.load(Ordering::SeqCst) {
                        if RELOAD.swap(false, Ordering::SeqCst) {
                            let (ok, msgs) = crate::ops::reload(sh, None);
                            for m in msgs {
                                if ok {
                                    tracing::info!("{m}");
                                } else {
                                    tracing::warn!("{m}");
                                }
                            }
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
        worker(0, &sh, first, fanout, Some(&mut isolation), pflog);
        crate::notify::stopping();
    });
    drop(isolation);
    if control.is_some() {
        let _ = std::fs::remove_file(&cfg_control);
    }
    tracing::info!("stopping: {:?}", sh.dp().counters);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::PflogFile;

    fn packets(p: &std::path::Path) -> usize {
        let f = std::fs::File::open(p).unwrap();
        let mut r = pcap_file::pcap::PcapReader::new(f).unwrap();
        assert_eq!(r.header().datalink, pcap_file::DataLink::PFLOG);
        let mut n = 0;
        while let Some(p) = r.next_packet() {
            p.unwrap();
            n += 1;
        }
        n
    }

    #[test]
    fn pflog_file_rotates_by_size() {
        let d = std::env::temp_dir().join(format!("palisade-pflog-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join("pflog");
        // Room for the file header and two 100-byte records (16 + 100 each).
        let mut f = PflogFile::open(&path, 24 + 2 * 116).unwrap();
        f.write(vec![vec![0u8; 100]; 5]);
        let old = d.join("pflog.0");
        assert!(old.exists(), "rotated");
        // 5 records: two rotations of two; the newest file holds the last one
        // and .0 the two before it.
        assert_eq!(packets(&path), 1);
        assert_eq!(packets(&old), 2);
        let _ = std::fs::remove_dir_all(&d);
    }
}
