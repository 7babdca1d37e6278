//! Reading the daemon's configuration: palisade.toml and its pf.conf,
//! checked completely before anything is touched, and the facts about the
//! machine the configuration needs (port MAC addresses).

use std::path::Path;

use palisade_conf::host::HostModel;
use palisade_conf::{parse_input, Input, ParseOptions};
use palisade_net::afpacket;
use palisade_net::config::Config;
use palisade_net::dataplane::Mac;

/// Read and check the daemon's configuration and its pf.conf; errors name
/// the file, the line and the problem. Nothing is touched.
pub fn load(path: &Path) -> Result<(Config, palisade_conf::ir::Config, HostModel), String> {
    let text = palisade_conf::files::read_text(path, palisade_conf::files::CONFIG)
        .map_err(|e| e.message(&path.display().to_string()))?;
    let mut cfg =
        Config::parse(path, &text, &|n| afpacket::ifindex(n).is_ok()).map_err(|e| e.to_string())?;
    // The ports' MTUs are the kernel's unless palisade.toml says less.
    let mtu_warnings = cfg.fit_mtus(&|n| {
        std::fs::read_to_string(format!("/sys/class/net/{n}/mtu"))
            .ok()
            .and_then(|t| t.trim().parse().ok())
    });
    let mut host = crate::sysmodel::from_system();
    host.interfaces = cfg.host_interfaces();
    host.routes = cfg.host_routes();
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
        .chain(&carp_interface_rules(&out.config, &cfg))
        .chain(&to_v6_loopback(&out.config))
        .chain(&unknown_os(&out.config))
        .chain(&palisade_net::dataplane::proxy_warnings(&cfg))
        .chain(&mtu_warnings)
        .chain(&cfg.warnings())
    {
        eprintln!("{w}");
    }
    Ok((cfg, out.config, host))
}

/// Warnings for rules that name a CARP interface (or group `carp`) with
/// `on`: Palisade filters CARP's traffic on the parent interface, so such
/// rules do not match it yet (on OpenBSD traffic to the virtual MAC is
/// seen on the CARP interface). Addresses (`(carp0)`, `nat-to (carp0)`)
/// work.
pub fn carp_interface_rules(pf: &palisade_conf::ir::Config, cfg: &Config) -> Vec<String> {
    fn walk(rs: &palisade_conf::ir::Ruleset, carp: &dyn Fn(&str) -> bool, out: &mut Vec<String>) {
        for r in &rs.rules {
            if let Some((_, name)) = &r.ifname {
                if carp(name) {
                    out.push(format!(
                        "{}:{}: warning: `on {name}` does not match yet: Palisade filters CARP traffic on the CARP interface's parent (use its name)",
                        r.file, r.line
                    ));
                }
            }
            if let Some(i) = &r.inline {
                walk(i, carp, out);
            }
        }
    }
    if cfg.carp.is_empty() {
        return Vec::new();
    }
    let carp = |n: &str| n == "carp" || cfg.carp.iter().any(|c| c.name == n);
    let mut out = Vec::new();
    walk(&pf.main, &carp, &mut out);
    for a in &pf.load_anchors {
        walk(&a.ruleset, &carp, &mut out);
    }
    out
}

/// Warnings for `os "NAME"` that no fingerprint of the database (`set
/// fingerprints`, or the built-in one) is named: such a rule never
/// matches (a typo). A file that does not load gives none here (it is
/// an error of its own).
pub fn unknown_os(pf: &palisade_conf::ir::Config) -> Vec<String> {
    let Ok(db) = palisade_filter::osfp::FingerprintDb::from_options(&pf.options) else {
        return Vec::new();
    };
    let db = db.unwrap_or_else(palisade_filter::osfp::FingerprintDb::default_db);
    unknown_os_in(pf, &db)
}

/// The same against `db` (a running daemon's: `set fingerprints` is read
/// at its start, not at reloads or anchor loads).
pub fn unknown_os_in(
    pf: &palisade_conf::ir::Config,
    db: &palisade_filter::osfp::FingerprintDb,
) -> Vec<String> {
    fn walk(
        rs: &palisade_conf::ir::Ruleset,
        db: &palisade_filter::osfp::FingerprintDb,
        out: &mut Vec<String>,
    ) {
        for r in &rs.rules {
            if let Some(n) = &r.os {
                if !n.eq_ignore_ascii_case("unknown")
                    && !db.entries.iter().any(|f| f.matches_name(n))
                {
                    out.push(format!(
                        "{}:{}: warning: no OS fingerprint is named \"{n}\": this rule never matches (a name is a fingerprint's class, class and version, or all three)",
                        r.file, r.line
                    ));
                }
            }
            if let Some(i) = &r.inline {
                walk(i, db, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&pf.main, db, &mut out);
    for a in &pf.load_anchors {
        walk(&a.ruleset, db, &mut out);
    }
    out
}

/// Warnings for rules that redirect or divert to ::1: Linux never takes
/// ::1 from outside its loopback device (IPv6 has no route_localnet), so
/// such connections can only fail.
pub fn to_v6_loopback(pf: &palisade_conf::ir::Config) -> Vec<String> {
    fn walk(rs: &palisade_conf::ir::Ruleset, out: &mut Vec<String>) {
        let v6lo = std::net::IpAddr::V6(std::net::Ipv6Addr::LOCALHOST);
        for r in &rs.rules {
            let rdr = r.rdr.as_ref().is_some_and(
                |p| matches!(p.addr, palisade_conf::ir::Addr::Net { ip, .. } if ip == v6lo),
            );
            let divert = matches!(r.divert, Some(palisade_conf::ir::Divert::To { addr, .. }) if addr == v6lo);
            if rdr || divert {
                out.push(format!(
                    "{}:{}: warning: {} to ::1, which Linux does not accept from the host interface: these connections will fail; use one of the firewall's own IPv6 addresses (and `palisade ftp-proxy -6 -b` on it)",
                    r.file,
                    r.line,
                    if rdr { "redirects" } else { "diverts" }
                ));
            }
            if let Some(i) = &r.inline {
                walk(i, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&pf.main, &mut out);
    for a in &pf.load_anchors {
        walk(&a.ruleset, &mut out);
    }
    out
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

pub fn port_mac(name: &str) -> Result<Mac, String> {
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
