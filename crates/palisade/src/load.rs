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
    palisade_filter::osfp::FingerprintDb::from_options(&out.config.options).map_err(|e| {
        let at = out
            .fingerprints_line
            .map(|l| format!(":{l}"))
            .unwrap_or_default();
        format!("{}{at}: {e}", pf.display())
    })?;
    let unenforced = out.unenforced_warnings(&pf.display().to_string());
    for w in out
        .stderr
        .iter()
        .chain(&unenforced)
        .chain(&unknown_interfaces(&out.config, &host))
        .chain(&carp_interface_rules(&out.config, &cfg))
        .chain(&member_translation_rules(&out.config, &cfg))
        .chain(&blocked_ha_traffic(&out.config, &cfg, &host))
        .chain(&to_v6_loopback(&out.config))
        .chain(&ftp_proxy_anchors(&out.config))
        .chain(&anchor_only_tables(&out.config))
        .chain(&unknown_os(&out.config))
        .chain(&palisade_net::dataplane::proxy_warnings(&cfg))
        .chain(&kernel_port_use(
            &cfg,
            &crate::sysmodel::interfaces(),
            &|p| {
                // A bridge or a bond forwards frames itself; a VRF does not.
                std::fs::read_link(format!("/sys/class/net/{p}/master"))
                    .ok()
                    .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned()))
                    .filter(|m| {
                        ["bridge", "bonding"]
                            .iter()
                            .any(|k| Path::new(&format!("/sys/class/net/{m}/{k}")).exists())
                    })
            },
        ))
        .chain(&setup_warnings(&cfg))
        .chain(&mtu_warnings)
        .chain(&cfg.warnings())
    {
        eprintln!("{w}");
    }
    Ok((cfg, out.config, host))
}

/// What the kernel still does on a port, which goes past pf: an IPv4
/// address on it (the kernel accepts and answers traffic to that address
/// itself, and its ARP requests teach the neighbours its MAC for it),
/// or the port enslaved to a Linux bridge or bond (the kernel forwards
/// its frames itself). IPv6 addresses go when Palisade turns IPv6 off on
/// its ports. `master` says which device a port is enslaved to.
pub fn kernel_port_use(
    cfg: &palisade_net::config::Config,
    kernel: &[palisade_conf::host::Interface],
    master: &dyn Fn(&str) -> Option<String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for p in &cfg.ports {
        let v4: Vec<String> = kernel
            .iter()
            .filter(|i| i.name == p.name)
            .flat_map(|i| &i.addrs)
            .filter(|a| a.ip.is_ipv4())
            .map(|a| format!("{}/{}", a.ip, a.bits))
            .collect();
        if !v4.is_empty() {
            out.push(format!(
                "warning: port '{}': the kernel has {} on it: it accepts and answers traffic to that address itself, past pf, and its ARP can draw the neighbours' traffic away from Palisade; take it off (`ip addr flush dev {}`) and give the address to an [[interface]] in palisade.toml",
                p.name,
                v4.join(", "),
                p.name
            ));
        }
        if let Some(m) = master(&p.name) {
            out.push(format!(
                "warning: port '{}' is enslaved to '{m}' (a Linux bridge or bond): the kernel forwards its frames itself, past pf; take it out (`ip link set {} nomaster`) and use a [[bridge]] in palisade.toml",
                p.name, p.name
            ));
        }
    }
    out
}

/// palisade.toml set-ups that start but do not do what they seem to: no
/// port (nothing is filtered), a state file whose directory is missing
/// (the states would be lost at the stop).
pub fn setup_warnings(cfg: &palisade_net::config::Config) -> Vec<String> {
    let mut out = Vec::new();
    if cfg.ports.is_empty() {
        out.push(
            "warning: palisade.toml has no [[port]]: Palisade filters nothing (the packaged file has them commented out)"
                .to_string(),
        );
    }
    // Paths that exist as something else: the start or the stop fails
    // on them, which `run -n` (the unit's ExecStartPre) should say first.
    if let Some(f) = cfg.state_file.as_ref().filter(|f| f.is_dir()) {
        out.push(format!(
            "warning: state-file {}: a directory: the states cannot be saved at the stop (name a file in it)",
            f.display()
        ));
    }
    if let Some(f) = cfg.pflog.as_ref().filter(|f| f.is_dir()) {
        out.push(format!(
            "warning: pflog {}: a directory: the daemon cannot start (name a file in it)",
            f.display()
        ));
    }
    {
        use std::os::unix::fs::FileTypeExt;
        if let Ok(m) = std::fs::symlink_metadata(&cfg.control) {
            if !m.file_type().is_socket() {
                out.push(format!(
                    "warning: control {}: there is a file of that name that is not a socket: the daemon will refuse to start (it does not remove it)",
                    cfg.control.display()
                ));
            }
        }
    }
    if let Some(f) = &cfg.state_file {
        if let Some(d) = f.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !d.is_dir() {
                out.push(format!(
                    "warning: state-file {}: its directory {} does not exist: the states cannot be saved at the stop",
                    f.display(),
                    d.display()
                ));
            }
        }
    }
    out
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

/// Warnings for rules `on` a bridge member that translate or route
/// (nat-to, rdr-to, binat-to, af-to, route-to...) when the bridge itself
/// has addresses: packets the firewall routes through the bridge are
/// filtered on the bridge, not on its members, so such a rule translates
/// only what is bridged across the member. A probe's hide NAT written
/// `on $ext_if` (the habit from a routed firewall) let LAN addresses out
/// untranslated, and nothing said so.
pub fn member_translation_rules(pf: &palisade_conf::ir::Config, cfg: &Config) -> Vec<String> {
    fn walk(
        rs: &palisade_conf::ir::Ruleset,
        bridge_of: &dyn Fn(&str) -> Option<String>,
        bare_bridge: &dyn Fn(&str) -> Option<String>,
        out: &mut Vec<String>,
    ) {
        for r in &rs.rules {
            // `on bridge0` of a bridge without addresses: nothing is
            // routed there and bridged packets are filtered on the
            // members (pfSense admins write it; OpenBSD says nothing
            // either, but Palisade says so of unknown interfaces).
            if let Some((false, name)) = &r.ifname {
                if let Some(members) = bare_bridge(name) {
                    out.push(format!(
                        "{}:{}: warning: `on {name}`: {name} has no addresses, so nothing is routed through it and this rule never matches; bridged packets are filtered on its members ({members})",
                        r.file, r.line
                    ));
                }
            }
            let what = if r.nat.is_some() && r.rdr.is_some() {
                Some("binat-to")
            } else if r.nat.is_some() {
                Some("nat-to")
            } else if r.rdr.is_some() {
                Some("rdr-to")
            } else if r.af_to.is_some() {
                Some("af-to")
            } else if r.route.is_some() {
                Some("a routing option")
            } else {
                None
            };
            if let (Some(what), Some((false, name))) = (what, &r.ifname) {
                if let Some(bridge) = bridge_of(name) {
                    out.push(format!(
                        "{}:{}: warning: `on {name}` with {what}: {name} is a member of {bridge}, which routes; routed packets are filtered on {bridge}, not on its members, so this rule acts only on what is bridged across {name} (write `on {bridge}` for what is routed)",
                        r.file, r.line
                    ));
                }
            }
            if let Some(i) = &r.inline {
                walk(i, bridge_of, bare_bridge, out);
            }
        }
    }
    let bridge_of = |n: &str| -> Option<String> {
        let m = cfg.ifaces.iter().find(|i| i.name == n)?;
        let b = &cfg.ifaces[m.bridge?];
        (!b.addresses.is_empty()).then(|| b.name.clone())
    };
    let bare_bridge = |n: &str| -> Option<String> {
        let (ix, b) = cfg.ifaces.iter().enumerate().find(|(_, i)| i.name == n)?;
        let members: Vec<&str> = cfg
            .ifaces
            .iter()
            .filter(|i| i.bridge == Some(ix))
            .map(|i| i.name.as_str())
            .collect();
        (b.addresses.is_empty() && !members.is_empty()).then(|| members.join(", "))
    };
    let mut out = Vec::new();
    walk(&pf.main, &bridge_of, &bare_bridge, &mut out);
    for a in &pf.load_anchors {
        walk(&a.ruleset, &bridge_of, &bare_bridge, &mut out);
    }
    out
}

/// Warnings for a ruleset that blocks the pair's own traffic: CARP
/// advertisements on a CARP interface's parent, pfsync on the sync
/// interface, each way. Without them each firewall hears nothing from the
/// other and both become MASTER (found by a probe: nothing said so). Tried
/// as pf would decide a packet of each (from a neighbour on the link, or
/// to it), without states.
pub fn blocked_ha_traffic(
    pf: &palisade_conf::ir::Config,
    cfg: &Config,
    host: &HostModel,
) -> Vec<String> {
    use palisade_conf::ir::Direction;
    use std::net::IpAddr;
    if cfg.carp.is_empty() && cfg.pfsync.is_none() {
        return Vec::new();
    }
    let engine = palisade_filter::Engine::new(pf, host.clone());
    // `set skip on` an interface (or its group): pf leaves it alone.
    let mut skipped = std::collections::BTreeSet::new();
    for o in &pf.options {
        if let palisade_conf::ir::SetOption::Skip(names) = o {
            for n in names {
                skipped.insert(n.clone());
                skipped.extend(host.members(n).into_iter().map(|i| i.name.clone()));
            }
        }
    }
    // A pass rule written for the protocol: the user has seen to it (the
    // test packets come from an address made up here, which such a rule
    // may rightly not name).
    fn names_proto(rs: &palisade_conf::ir::Ruleset, proto: u8) -> bool {
        rs.rules.iter().any(|r| {
            (matches!(r.action, palisade_conf::ir::Action::Pass) && r.proto == Some(proto))
                || r.inline.as_ref().is_some_and(|i| names_proto(i, proto))
        })
    }
    let written = |proto: u8| {
        names_proto(&pf.main, proto)
            || pf
                .load_anchors
                .iter()
                .any(|a| names_proto(&a.ruleset, proto))
    };
    // (interface index, protocol, what it is, IPv6?, the unicast peer)
    let mut tries: Vec<(usize, u8, &str, bool, Option<IpAddr>)> = Vec::new();
    for c in &cfg.carp {
        for v6 in [false, true] {
            if c.addresses.iter().any(|a| a.ip.is_ipv6() == v6) {
                let peer = c.peers.iter().find(|p| p.is_ipv6() == v6).copied();
                tries.push((c.parent, 112, "CARP advertisements", v6, peer));
            }
        }
    }
    if let Some(p) = &cfg.pfsync {
        tries.push((
            p.iface,
            240,
            "pfsync packets",
            false,
            p.peer.map(IpAddr::V4),
        ));
    }
    // Every address of this firewall's (no neighbour can have one).
    let taken: Vec<IpAddr> = cfg
        .ifaces
        .iter()
        .flat_map(|i| i.addresses.iter().map(|a| a.ip))
        .chain(
            cfg.carp
                .iter()
                .flat_map(|c| c.addresses.iter().map(|a| a.ip)),
        )
        .collect();
    let mut out = Vec::new();
    let mut said = std::collections::BTreeSet::new();
    for (ix, proto, what, v6, peer) in tries {
        let Some(iface) = cfg.ifaces.get(ix) else {
            continue;
        };
        if skipped.contains(&iface.name) || written(proto) {
            continue;
        }
        let group: IpAddr = match (proto, v6) {
            (240, _) => IpAddr::V4(palisade_pfsync::wire::GROUP_V4),
            (_, false) => "224.0.0.18".parse().expect("address"),
            (_, true) => "ff02::12".parse().expect("address"),
        };
        // This side's address and another host's on the link (the other
        // firewall's, as pf sees it: not ours, or antispoof would block it).
        let Some(mine) = iface.addresses.iter().find(|a| a.ip.is_ipv6() == v6) else {
            continue;
        };
        let Some(other) = peer.or_else(|| neighbour(mine, &taken)) else {
            continue;
        };
        // (Only the way in: what the daemon sends leaves unfiltered,
        // palisade-pf.conf(5).)
        for dir in [Direction::In] {
            let (src, dst) = match dir {
                Direction::In => (other, if peer.is_some() { mine.ip } else { group }),
                Direction::Out => (mine.ip, peer.unwrap_or(group)),
            };
            let pkt = palisade_wire::build::ip(src, dst, proto, 255, &[0u8; 36]);
            let Ok(info) = palisade_wire::parse_ip(&pkt) else {
                continue;
            };
            let meta = palisade_filter::PacketMeta::from_ip(&info, &iface.name, dir);
            let v = engine.test(&meta);
            if !matches!(v.action, palisade_filter::VerdictAction::Block(_)) {
                continue;
            }
            let way = if dir == Direction::In { "in" } else { "out" };
            if !said.insert((iface.name.clone(), proto, way)) {
                continue;
            }
            let by = v.rule.as_ref().map_or("the default".to_string(), |r| {
                if r.anchor.is_empty() {
                    format!("rule @{}", r.nr)
                } else {
                    format!("rule @{} of anchor {}", r.nr, r.anchor)
                }
            });
            let (proto_name, harm) = if proto == 112 {
                (
                    "carp",
                    "this firewall cannot hear the other's advertisements and both may become MASTER",
                )
            } else {
                (
                    "pfsync",
                    "this firewall takes none of the other's states, and connections break when it takes over",
                )
            };
            out.push(format!(
                "warning: pf.conf blocks {what} {way} on '{}' ({by} decides them): {harm}; pass them, as \
                 OpenBSD's pf.conf does: `pass quick on {} proto {proto_name} keep state (no-sync)`",
                iface.name, iface.name
            ));
        }
    }
    out
}

/// Another host's address in `p`'s prefix, none of `taken`.
fn neighbour(
    p: &palisade_net::config::Prefix,
    taken: &[std::net::IpAddr],
) -> Option<std::net::IpAddr> {
    use std::net::IpAddr;
    let net = p.network();
    (1u32..64)
        .filter_map(|k| match net {
            IpAddr::V4(a) => {
                let ip = IpAddr::V4((u32::from(a).wrapping_add(k)).into());
                p.contains(&ip).then_some(ip)
            }
            IpAddr::V6(a) => {
                let ip = IpAddr::V6((u128::from(a).wrapping_add(k as u128)).into());
                p.contains(&ip).then_some(ip)
            }
        })
        .find(|ip| !taken.contains(ip))
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

/// Warnings for tables pf.conf's rules name that pf.conf does not define
/// but a `load anchor` file does: that table is the anchor's own
/// (`ANCHOR/NAME`), so the rule reads pf.conf's, which nothing fills (as
/// in pf; before 2026-12-05 Palisade merged the two).
pub fn anchor_only_tables(pf: &palisade_conf::ir::Config) -> Vec<String> {
    use std::collections::{BTreeMap, HashSet};
    let main: HashSet<&str> = pf
        .tables
        .iter()
        .filter(|t| t.anchor.is_empty())
        .map(|t| t.name.as_str())
        .collect();
    let mut anchored: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for t in pf.tables.iter().filter(|t| !t.anchor.is_empty()) {
        if !main.contains(t.name.as_str()) && !t.name.starts_with("__automatic_") {
            anchored
                .entry(t.name.as_str())
                .or_default()
                .push(t.anchor.as_str());
        }
    }
    if anchored.is_empty() {
        return Vec::new();
    }
    fn walk(
        rs: &palisade_conf::ir::Ruleset,
        anchored: &std::collections::BTreeMap<&str, Vec<&str>>,
        out: &mut Vec<String>,
    ) {
        for r in &rs.rules {
            let mut names = Vec::new();
            r.clone().for_each_table_mut(&mut |t| names.push(t.clone()));
            for n in names {
                if let Some(anchors) = anchored.get(n.as_str()) {
                    let w = format!(
                        "{}:{}: warning: table <{n}> is defined only in the file of anchor {}: that table is the anchor's own ({}/{n}), and this rule reads pf.conf's <{n}>, which nothing defines",
                        r.file,
                        r.line,
                        anchors.join(", "),
                        anchors[0]
                    );
                    if !out.contains(&w) {
                        out.push(w);
                    }
                }
            }
            if let Some(i) = &r.inline {
                walk(i, anchored, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(&pf.main, &anchored, &mut out);
    out
}

/// Warnings for an `ftp-proxy/*` setup that cannot work, each of which
/// otherwise shows only as data connections that time out: `nat-anchor`
/// without `rdr-anchor` or the reverse (the older syntax's proxy loads
/// both kinds of rules), either without `anchor` (the proxy's pass
/// rules are never read), and older-syntax `nat` rules with only
/// `anchor "ftp-proxy/*"` (they translate before the proxy's rules are
/// read, so an active-mode data connection no longer matches them).
pub fn ftp_proxy_anchors(pf: &palisade_conf::ir::Config) -> Vec<String> {
    use palisade_conf::ir::{Action, AnchorKind};
    let calls = |kind: AnchorKind| {
        pf.main.rules.iter().find(|r| {
            r.action == Action::Anchor(kind)
                && r.anchor_name.as_deref().map(|n| n.trim_start_matches('/'))
                    == Some("ftp-proxy/*")
        })
    };
    let (filter, nat, rdr) = (
        calls(AnchorKind::Filter),
        calls(AnchorKind::Nat),
        calls(AnchorKind::Rdr),
    );
    let at = |r: &palisade_conf::ir::Rule| format!("{}:{}", r.file, r.line);
    let mut out = Vec::new();
    match (nat, rdr) {
        (Some(n), None) => out.push(format!(
            "{}: warning: nat-anchor \"ftp-proxy/*\" without rdr-anchor \"ftp-proxy/*\": palisade ftp-proxy then loads the older syntax's nat and rdr rules, and the rdr ones are never read: its data connections will fail",
            at(n)
        )),
        (None, Some(r)) => out.push(format!(
            "{}: warning: rdr-anchor \"ftp-proxy/*\" without nat-anchor \"ftp-proxy/*\": palisade ftp-proxy then loads the older syntax's nat and rdr rules, and the nat ones are never read: its data connections will fail",
            at(r)
        )),
        _ => {}
    }
    if let (None, Some(r)) = (filter, nat.or(rdr)) {
        out.push(format!(
            "{}: warning: {} \"ftp-proxy/*\" without anchor \"ftp-proxy/*\": palisade ftp-proxy's pass rules are never read, so its data connections pass only if other rules pass them",
            at(r),
            if nat.is_some() { "nat-anchor" } else { "rdr-anchor" }
        ));
    }
    if let (Some(f), None, None) = (filter, nat, rdr) {
        if let Some(n) = pf
            .main
            .rules
            .iter()
            .find(|r| matches!(r.action, Action::LegacyNat { no: false }))
        {
            out.push(format!(
                "{}: warning: an older-syntax nat rule with anchor \"ftp-proxy/*\" ({}) and no nat-anchor / rdr-anchor \"ftp-proxy/*\": the nat rule translates before palisade ftp-proxy's rules are read, so active-mode (PORT/EPRT) data connections will not match them; add nat-anchor and rdr-anchor \"ftp-proxy/*\" before it (docs/ftp-proxy.md)",
                at(n),
                at(f)
            ));
        }
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
            for (neg, name) in [&r.ifname, &r.received_on].into_iter().flatten() {
                if !known(name) && seen.insert((r.file.clone(), r.line, name.clone())) {
                    // `on ! lo0` (a BSD name) matches every interface: said
                    // so, not that the rule never matches (a probe's
                    // pf.conf(5) example).
                    out.push(if *neg {
                        format!(
                            "{}:{}: warning: no interface or group '{name}' in palisade.toml: `! {name}` matches every interface",
                            r.file, r.line
                        )
                    } else {
                        format!(
                            "{}:{}: warning: no interface or group '{name}' in palisade.toml: this rule never matches on it",
                            r.file, r.line
                        )
                    });
                }
            }
            // A translation or routing option to `(name)`: an interface
            // that never has an address translates nothing (a probe's
            // `nat-to (carp9)`: its connections were dropped, counted
            // only as `translate`).
            let pools = [r.nat.as_ref(), r.rdr.as_ref()]
                .into_iter()
                .flatten()
                .chain(r.route.as_ref().map(|(_, p)| p))
                .chain(
                    r.af_to
                        .iter()
                        .flat_map(|(_, a, b)| std::iter::once(a).chain(b)),
                );
            for p in pools {
                if let palisade_conf::ir::Addr::Dynamic { ifname, .. } = &p.addr {
                    if ifname != "self"
                        && !known(ifname)
                        && seen.insert((r.file.clone(), r.line, ifname.clone()))
                    {
                        out.push(format!(
                            "{}:{}: warning: no interface or group '{ifname}' in palisade.toml: ({ifname}) never has an address, so nothing is translated or routed to it",
                            r.file, r.line
                        ));
                    }
                }
                // `route-to (em9 192.0.2.1)`: the interface to send by.
                let named = p
                    .ifname
                    .iter()
                    .chain(p.hop_ifnames.iter().flat_map(|h| h.iter().map(|(_, i)| i)));
                for ifname in named {
                    if !known(ifname) && seen.insert((r.file.clone(), r.line, ifname.clone())) {
                        out.push(format!(
                            "{}:{}: warning: no interface or group '{ifname}' in palisade.toml: nothing is routed by it",
                            r.file, r.line
                        ));
                    }
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
    let file = pf.main.rules.first().map_or("pf.conf", |r| r.file.as_str());
    // `set skip on` a name palisade.toml does not have skips nothing (a
    // typo, or an OpenBSD name). The loopback's names are left alone: the
    // data plane never sees it, so OpenBSD's `set skip on lo0` is moot.
    for o in &pf.options {
        if let palisade_conf::ir::SetOption::Skip(names) = o {
            for n in names {
                if !known(n) && n != "lo" && n != "lo0" {
                    out.push(format!(
                        "{file}: warning: set skip on {n}: no interface or group '{n}' in palisade.toml: nothing is skipped"
                    ));
                }
            }
        }
    }
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
    parse_mac(&t).ok_or_else(|| format!("port '{name}': not an Ethernet interface"))
}

/// A MAC written as Linux shows it (`aa:bb:cc:dd:ee:ff`).
pub fn parse_mac(t: &str) -> Option<Mac> {
    palisade_net::config::parse_mac(t.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAIR: &str = r#"
pf = "pf.conf"
[[port]]
name = "eth0"
[[port]]
name = "eth2"
[[interface]]
name = "wan"
port = "eth0"
addresses = ["203.0.113.2/24", "2001:db8:1::2/64"]
[[interface]]
name = "sync"
port = "eth2"
addresses = ["198.18.255.1/30"]
[[carp]]
name = "carp0"
interface = "wan"
vhid = 1
addresses = ["203.0.113.1/24", "2001:db8:1::1/64"]
[pfsync]
interface = "sync"
"#;

    /// The kernel's own use of a port is said: an IPv4 address on it (an
    /// IPv6 one goes with IPv6 off), its enslavement to a Linux bridge;
    /// so are no ports at all and a state file whose directory is
    /// missing.
    #[test]
    fn what_goes_past_pf_and_set_ups_that_do_nothing_are_warned_about() {
        use palisade_conf::host::{IfAddr, Interface};
        let (cfg, _, _) = read(PAIR, "pass\n");
        let kernel = vec![
            Interface {
                name: "eth0".into(),
                groups: vec![],
                loopback: false,
                addrs: vec![
                    IfAddr {
                        ip: "203.0.113.2".parse().unwrap(),
                        bits: 24,
                        peer: None,
                    },
                    IfAddr {
                        ip: "fe80::1".parse().unwrap(),
                        bits: 64,
                        peer: None,
                    },
                ],
            },
            Interface {
                name: "other".into(),
                groups: vec![],
                loopback: false,
                addrs: vec![IfAddr {
                    ip: "192.0.2.1".parse().unwrap(),
                    bits: 24,
                    peer: None,
                }],
            },
        ];
        let w = kernel_port_use(&cfg, &kernel, &|p| (p == "eth2").then(|| "br0".to_string()));
        assert_eq!(w.len(), 2, "{w:#?}");
        assert!(
            w[0].starts_with("warning: port 'eth0': the kernel has 203.0.113.2/24 on it"),
            "{w:#?}"
        );
        assert!(
            w[1].starts_with("warning: port 'eth2' is enslaved to 'br0'"),
            "{w:#?}"
        );
        assert!(kernel_port_use(&cfg, &[], &|_| None).is_empty());
        assert!(setup_warnings(&cfg).is_empty());
        let (none, _, _) = read(
            "pf = \"pf.conf\"\nstate-file = \"/nonexistent-dir/states\"\n",
            "pass\n",
        );
        let w = setup_warnings(&none);
        assert_eq!(w.len(), 2, "{w:#?}");
        assert!(w[0].contains("no [[port]]"), "{w:#?}");
        assert!(w[1].contains("/nonexistent-dir does not exist"), "{w:#?}");
        // Paths that are something else: a directory for a file, a file
        // where the control socket goes (run -n said ok; the start or
        // the stop failed).
        let d = std::env::temp_dir().join(format!("palisade-setup-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let plain = d.join("plain");
        std::fs::write(&plain, "x").unwrap();
        let (odd, _, _) = read(
            &format!(
                "pf = \"pf.conf\"\nstate-file = \"{0}\"\npflog = \"{0}\"\ncontrol = \"{1}\"\n",
                d.display(),
                plain.display()
            ),
            "pass\n",
        );
        let w = setup_warnings(&odd);
        assert_eq!(w.len(), 4, "{w:#?}");
        assert!(
            w[1].contains("state-file") && w[1].contains("a directory"),
            "{w:#?}"
        );
        assert!(
            w[2].contains("pflog") && w[2].contains("cannot start"),
            "{w:#?}"
        );
        assert!(w[3].contains("not a socket"), "{w:#?}");
        let _ = std::fs::remove_dir_all(&d);
    }

    /// palisade.toml `toml` and the pf.conf `rules` read against it (the
    /// rules must be valid), with its host model.
    fn read(toml: &str, rules: &str) -> (Config, palisade_conf::ir::Config, HostModel) {
        let cfg = Config::parse(Path::new("t.toml"), toml, &|_| true).unwrap();
        let host = HostModel {
            interfaces: cfg.host_interfaces(),
            ..Default::default()
        };
        let out = palisade_conf::parse_bytes(
            "pf.conf",
            None,
            rules.as_bytes().to_vec(),
            &ParseOptions {
                host: host.clone(),
                ..Default::default()
            },
        );
        assert_eq!(out.errors, 0, "{:?}", out.stderr);
        (cfg, out.config, host)
    }

    fn warnings(rules: &str) -> Vec<String> {
        let (cfg, pf, host) = read(PAIR, rules);
        blocked_ha_traffic(&pf, &cfg, &host)
    }

    /// `set skip on` a name palisade.toml lacks skips nothing: said, but
    /// not for the loopback's names (OpenBSD's `set skip on lo0` idiom).
    #[test]
    fn set_skip_on_an_unknown_interface_is_warned_about() {
        let (_, pf, host) = read(PAIR, "set skip on { lo0 lo em3 wan }\npass\n");
        let w = unknown_interfaces(&pf, &host);
        assert_eq!(
            w,
            ["pf.conf: warning: set skip on em3: no interface or group 'em3' in palisade.toml: nothing is skipped"],
            "{w:#?}"
        );
    }

    /// A rule on a name palisade.toml lacks never matches; negated
    /// (pf.conf(5)'s `on ! lo0`), it matches every interface: each said
    /// as it is.
    #[test]
    fn rules_on_unknown_interfaces_are_warned_about_as_they_match() {
        let (_, pf, host) = read(
            PAIR,
            "pass in on em7
block in on ! lo0 proto tcp to port 6000:6010
",
        );
        let w = unknown_interfaces(&pf, &host);
        assert_eq!(
            w,
            [
                "pf.conf:1: warning: no interface or group 'em7' in palisade.toml: this rule never matches on it",
                "pf.conf:2: warning: no interface or group 'lo0' in palisade.toml: `! lo0` matches every interface",
            ],
            "{w:#?}"
        );
    }

    /// A translation to `(name)` of an interface palisade.toml lacks is
    /// said (its connections would all be dropped); a CARP interface and
    /// a real one are not.
    #[test]
    fn a_translation_to_an_unknown_interface_is_warned_about() {
        let (_, pf, host) = read(
            PAIR,
            "pass out on wan nat-to (carp9)\npass out on wan nat-to (carp0)\n\
             pass out on wan nat-to (wan:0)\npass in on wan rdr-to (sync)\n\
             pass out on wan route-to (sync)\npass in on wan rdr-to (self)\n\
             pass in on wan route-to (em9 203.0.113.9)\npass in on wan route-to (wan 203.0.113.9)\n",
        );
        let w = unknown_interfaces(&pf, &host);
        assert_eq!(
            w,
            [
                "pf.conf:1: warning: no interface or group 'carp9' in palisade.toml: (carp9) never has an address, so nothing is translated or routed to it",
                "pf.conf:7: warning: no interface or group 'em9' in palisade.toml: nothing is routed by it",
            ],
            "{w:#?}"
        );
    }

    /// A pf.conf rule naming a table only an anchor file defines is said
    /// to read pf.conf's (empty) table; one pf.conf defines too is not.
    #[test]
    fn a_table_only_an_anchor_file_defines_is_warned_about() {
        let d = std::env::temp_dir().join(format!("palisade-load-aot-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("ssh.conf");
        std::fs::write(
            &f,
            "table <bruteforce> persist\ntable <both> persist\npass in proto tcp from { <bruteforce>, <both> } to port 22\n",
        )
        .unwrap();
        let rules = format!(
            "table <both> persist\nblock in quick from <bruteforce>\nblock in quick from <both>\n\
             anchor \"ssh\"\nload anchor \"ssh\" from \"{}\"\npass\n",
            f.display()
        );
        let (_, pf, _) = read(PAIR, &rules);
        std::fs::remove_dir_all(&d).unwrap();
        let w = anchor_only_tables(&pf);
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(
            w[0].starts_with("pf.conf:2: warning: table <bruteforce> is defined only in the file of anchor ssh: that table is the anchor's own (ssh/bruteforce)"),
            "{w:#?}"
        );
    }

    /// ftp-proxy's anchors called in a way its rules cannot work: one of
    /// nat-anchor / rdr-anchor, either without anchor, an older nat rule
    /// with only anchor; S5's lines and the newer syntax alone are fine.
    #[test]
    fn ftp_proxy_anchor_setups_that_cannot_work_are_warned_about() {
        let w = |rules: &str| {
            let (_, pf, _) = read(PAIR, rules);
            ftp_proxy_anchors(&pf)
        };
        let s5 = "rdr-anchor \"ftp-proxy/*\"\n\
                  rdr pass on wan proto tcp from any to wan port 21 -> 127.0.0.1 port 8021\n\
                  nat-anchor \"ftp-proxy/*\"\n\
                  nat on wan from sync:network to any -> (wan)\n\
                  anchor \"ftp-proxy/*\"\npass\n";
        assert!(w(s5).is_empty(), "{:#?}", w(s5));
        let newer = "anchor \"ftp-proxy/*\"\n\
                     pass in on wan proto tcp to port 21 divert-to 127.0.0.1 port 8021\n\
                     match out on wan inet from sync:network nat-to (wan)\n";
        assert!(w(newer).is_empty(), "{:#?}", w(newer));
        let only_nat = "nat-anchor \"ftp-proxy/*\"\nanchor \"ftp-proxy/*\"\npass\n";
        let got = w(only_nat);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(
            got[0].starts_with("pf.conf:1: warning: nat-anchor \"ftp-proxy/*\" without rdr-anchor"),
            "{got:#?}"
        );
        let no_filter = "rdr-anchor \"ftp-proxy/*\"\nnat-anchor \"ftp-proxy/*\"\npass\n";
        let got = w(no_filter);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(
            got[0].contains("without anchor \"ftp-proxy/*\""),
            "{got:#?}"
        );
        let old_nat =
            "nat on wan from sync:network to any -> (wan)\nanchor \"ftp-proxy/*\"\npass\n";
        let got = w(old_nat);
        assert_eq!(got.len(), 1, "{got:#?}");
        assert!(
            got[0].starts_with("pf.conf:1: warning: an older-syntax nat rule with anchor"),
            "{got:#?}"
        );
    }

    /// NAT or a port forward written `on` a member of a bridge that routes
    /// is said to act only on bridged traffic; `on` the bridge, or on a
    /// member of a bridge without addresses, is not.
    #[test]
    fn translation_on_a_member_of_a_routing_bridge_is_warned_about() {
        let toml = |addrs: &str| {
            format!(
                "pf = \"pf.conf\"\n[[port]]\nname = \"eth0\"\n[[port]]\nname = \"eth1\"\n\
                 [[interface]]\nname = \"wan\"\nport = \"eth0\"\n\
                 [[interface]]\nname = \"dmz\"\nport = \"eth1\"\n\
                 [[bridge]]\nname = \"bridge0\"\nmembers = [\"wan\", \"dmz\"]\naddresses = [{addrs}]\n"
            )
        };
        let run = |toml: &str, rules: &str| {
            let (cfg, pf, _) = read(toml, rules);
            member_translation_rules(&pf, &cfg)
        };
        let routed = toml("\"192.0.2.77/24\"");
        let rules = "match out on wan inet from 198.18.1.0/24 nat-to 192.0.2.77\n\
                     pass in on wan proto tcp to 192.0.2.77 port 8080 rdr-to 198.18.1.10 port 80\n\
                     match out on bridge0 inet from 198.18.1.0/24 nat-to 192.0.2.77\n\
                     pass out on wan\n";
        let w = run(&routed, rules);
        assert_eq!(w.len(), 2, "{w:#?}");
        assert!(
            w[0].starts_with("pf.conf:1: warning: `on wan` with nat-to: wan is a member of bridge0, which routes"),
            "{w:#?}"
        );
        assert!(
            w[1].starts_with("pf.conf:2: warning: `on wan` with rdr-to"),
            "{w:#?}"
        );
        // A bridge without addresses routes nothing: nothing said of its
        // members (only of the rule `on` it, below).
        let w = run(&toml(""), rules);
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(
            w[0].starts_with("pf.conf:3: warning: `on bridge0`"),
            "{w:#?}"
        );
        // And a rule `on` it never matches: said.
        let w = run(
            &toml(""),
            "pass in on bridge0 proto tcp to port 25\npass on wan\n",
        );
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(
            w[0].starts_with("pf.conf:1: warning: `on bridge0`: bridge0 has no addresses")
                && w[0].ends_with("filtered on its members (wan, dmz)"),
            "{w:#?}"
        );
        assert!(run(&routed, "pass in on bridge0\n").is_empty());
    }

    /// A ruleset that blocks the pair's own traffic is said, each way on
    /// each interface; S3's pf.conf (with antispoof) is not.
    #[test]
    fn blocked_carp_and_pfsync_are_warned_about() {
        let w = warnings("block all\n");
        // (What the daemon sends is not filtered: no warning `out`.)
        assert_eq!(w.len(), 2, "{w:#?}");
        assert!(
            w[0].contains("blocks CARP advertisements in on 'wan' (rule @0 decides them)"),
            "{w:#?}"
        );
        assert!(w[0].contains("both may become MASTER"), "{w:#?}");
        assert!(
            w[1].contains("blocks pfsync packets in on 'sync'"),
            "{w:#?}"
        );
        assert!(w[1].contains("takes none of the other's states"), "{w:#?}");
        let w = warnings(
            "block all\nantispoof for wan\n\
             pass quick on sync proto pfsync keep state (no-sync)\n\
             pass on wan proto carp keep state\n",
        );
        assert!(w.is_empty(), "{w:#?}");
        // Only inbound CARP blocked (IPv6 too: one line per way).
        let w = warnings("pass\nblock in on wan\n");
        assert_eq!(w.len(), 1, "{w:#?}");
        assert!(w[0].contains("CARP advertisements in on 'wan'"), "{w:#?}");
        // `set skip on sync` (a dedicated link pf leaves alone), and a
        // pass rule written for CARP from the real peer only: the user has
        // seen to them.
        let w = warnings(
            "set skip on sync
block all
pass in on wan proto carp from 203.0.113.3
             pass out on wan proto carp
",
        );
        assert!(w.is_empty(), "{w:#?}");
    }
}
