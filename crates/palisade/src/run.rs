//! `palisade run -c palisade.toml`: the daemon (first slice: a transparent
//! bridge between owned ports, filtered by pf.conf).
//!
//! The configuration is checked completely (TOML, ports, pf.conf) before
//! any interface is touched; a bad configuration leaves the machine as it
//! was. Owned ports are kept away from the kernel's own stack (IPv6 off, so
//! no router solicitations or neighbour discovery from the kernel); SIGTERM
//! and SIGINT put that back.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use serde::Deserialize;

use palisade_conf::{parse_input, Input, ParseOptions};
use palisade_filter::{Engine, Filter};
use palisade_net::afpacket::{self, Port};
use palisade_net::bridge::Bridge;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The pf.conf, relative to this file.
    pub pf: PathBuf,
    #[serde(default)]
    pub port: Vec<PortConf>,
    pub bridge: Option<BridgeConf>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct PortConf {
    pub name: String,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
pub struct BridgeConf {
    #[serde(default = "default_bridge_name")]
    pub name: String,
    pub members: Vec<String>,
}

fn default_bridge_name() -> String {
    "bridge0".into()
}

/// Read and check the daemon's configuration; errors name the file, the
/// key or line, and the problem.
pub fn load(path: &Path) -> Result<(Config, palisade_conf::ir::Config), String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "{}: cannot read: {}",
            path.display(),
            palisade_conf::io_reason(&e)
        )
    })?;
    let cfg: Config = toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut names = HashSet::new();
    for p in &cfg.port {
        if !names.insert(p.name.clone()) {
            return Err(format!(
                "{}: port '{}' is listed twice",
                path.display(),
                p.name
            ));
        }
        afpacket::ifindex(&p.name)
            .map_err(|e| format!("{}: port '{}': {e}", path.display(), p.name))?;
    }
    let Some(br) = &cfg.bridge else {
        return Err(format!(
            "{}: nothing to do: no [bridge] (the router comes later)",
            path.display()
        ));
    };
    if br.members.len() < 2 {
        return Err(format!(
            "{}: bridge.members needs at least two ports",
            path.display()
        ));
    }
    let mut seen = HashSet::new();
    for m in &br.members {
        if !seen.insert(m) {
            return Err(format!(
                "{}: bridge.members: '{m}' is listed twice",
                path.display()
            ));
        }
        if !names.contains(m) {
            return Err(format!(
                "{}: bridge.members: '{m}' is not a [[port]]",
                path.display()
            ));
        }
    }
    let pf = path.parent().unwrap_or(Path::new(".")).join(&cfg.pf);
    let opts = ParseOptions {
        host: crate::sysmodel::from_system(),
        ..Default::default()
    };
    let out = parse_input(Input::File(&pf), &opts);
    if out.errors > 0 {
        return Err(out.stderr.join("\n"));
    }
    Ok((cfg, out.config))
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// Per-port kernel settings we change and put back.
struct Isolation {
    saved: Vec<(PathBuf, String)>,
}

impl Isolation {
    fn apply(ports: &[String]) -> Isolation {
        let mut saved = Vec::new();
        for p in ports {
            let f = PathBuf::from(format!("/proc/sys/net/ipv6/conf/{p}/disable_ipv6"));
            if let Ok(old) = std::fs::read_to_string(&f) {
                if std::fs::write(&f, "1").is_ok() {
                    saved.push((f, old.trim().to_string()));
                }
            }
        }
        Isolation { saved }
    }
}

impl Drop for Isolation {
    fn drop(&mut self) {
        for (f, v) in &self.saved {
            let _ = std::fs::write(f, v);
        }
    }
}

pub fn run(path: &Path) -> Result<(), String> {
    let (cfg, pf) = load(path)?;
    let br = cfg.bridge.expect("checked in load");
    let engine = Arc::new(Engine::new(&pf, crate::sysmodel::from_system()));
    let mut filter = Filter::new(engine, &pf, 1);
    let mut ports = Vec::new();
    for m in &br.members {
        ports.push(Port::open(m).map_err(|e| format!("port '{m}': {e}"))?);
    }
    let _iso = Isolation::apply(&br.members);
    // SAFETY: installing an async-signal-safe handler that only stores a flag.
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
    let mut bridge = Bridge::new(br.members.clone());
    eprintln!(
        "palisade: {} bridging {} ({} rules)",
        br.name,
        br.members.join(" "),
        pf.main.rules.len()
    );
    let start = Instant::now();
    while !STOP.load(Ordering::SeqCst) {
        afpacket::wait(&ports, 200).map_err(|e| format!("poll: {e}"))?;
        let now = start.elapsed().as_millis() as u64;
        for i in 0..ports.len() {
            let mut outs = Vec::new();
            ports[i].recv_batch(|frame| outs.extend(bridge.input(&mut filter, i, frame, now)));
            for (p, f) in outs {
                if let Err(e) = ports[p].send(&f) {
                    eprintln!("palisade: send on {}: {e}", ports[p].name);
                }
            }
        }
    }
    eprintln!(
        "palisade: stopping ({} frames, {} passed, {} blocked)",
        bridge.counters.frames, filter.counters.passed, filter.counters.blocked
    );
    Ok(())
}
