//! The daemon's configuration (`palisade.toml`): what OpenBSD keeps in
//! hostname.if(5), mygate and sysctl.conf. Parsed and checked completely
//! before anything is touched; every error names the file, the line and
//! the problem.
//!
//! ```toml
//! pf = "pf.conf"
//! workers = 2              # threads (default: CPUs, at most 4)
//! control = "/run/palisade.sock"   # the control socket (the default)
//! pflog = "/var/log/pflog"  # logged packets (pcap, DLT_PFLOG); none if absent
//! pflog-size-mb = 16        # rotated at this size (one old file, .0)
//! state-file = "/var/lib/palisade/states"  # states kept across a restart
//! metrics = "127.0.0.1:9101"  # Prometheus text on http://ADDR/metrics (off if absent)
//! fastpath = false         # established TCP through an in-kernel program (docs/fastpath.md)
//! [[port]]                 # a Linux interface Palisade owns
//! name = "eth1"
//! mac = "port"             # answer with the port's own MAC (default "derived")
//! [[interface]]            # a logical interface, named as pf.conf names it
//! name = "vlan1234"
//! port = "eth1"
//! vlan = 1234              # optional 802.1Q id
//! addresses = ["192.0.2.1/24", "2001:db8:1::1/64"]
//! groups = ["lan"]
//! proxy-arp = ["198.51.100.16/28"]   # answer ARP/NDP for these here
//! [[bridge]]
//! name = "bridge0"
//! members = ["wan", "dmz"]
//! addresses = ["203.0.113.2/24"]     # optional
//! [host]                   # the TAP to the Linux stack (default: on, "pal0")
//! name = "pal0"
//! [[route]]
//! to = "default"           # or a prefix
//! via = "203.0.113.1"      # a gateway, or:
//! interface = "wan"        # directly reachable through that interface
//! ```

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct Raw {
    pf: Spanned<String>,
    #[serde(default)]
    port: Vec<RawPort>,
    #[serde(default)]
    interface: Vec<RawIface>,
    #[serde(default)]
    bridge: Vec<RawBridge>,
    #[serde(default)]
    route: Vec<RawRoute>,
    host: Option<RawHost>,
    workers: Option<Spanned<i64>>,
    ring_frames: Option<Spanned<i64>>,
    control: Option<Spanned<String>>,
    pflog: Option<Spanned<String>>,
    pflog_size_mb: Option<Spanned<i64>>,
    state_file: Option<Spanned<String>>,
    metrics: Option<Spanned<String>>,
    fastpath: Option<bool>,
    #[serde(default)]
    carp: Vec<RawCarp>,
    carp_options: Option<RawCarpOptions>,
    pfsync: Option<RawPfsync>,
    osfp: Option<RawOsfp>,
    /// `palisade greylist` reads this section itself; the daemon lets it
    /// be so that one file serves both.
    #[allow(dead_code)]
    greylist: Option<toml::Value>,
}

/// `[osfp]`: record the fingerprint of every inbound SYN that creates a
/// state (`palisade osfp show`, greylisting by OS).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawOsfp {
    record: Option<bool>,
    entries: Option<Spanned<i64>>,
    max_age: Option<Spanned<i64>>,
}

/// A CARP interface (carp(4), ifconfig(8) `carpdev`, `vhid`, `advbase`,
/// `advskew`, `pass`, `carppeer`).
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawCarp {
    name: Spanned<String>,
    /// The logical interface it rides on (OpenBSD's carpdev, which
    /// names it too).
    #[serde(alias = "carpdev")]
    interface: Spanned<String>,
    vhid: Spanned<i64>,
    advbase: Option<Spanned<i64>>,
    advskew: Option<Spanned<i64>>,
    /// Also `pass`, as ifconfig(8) names it.
    #[serde(alias = "pass")]
    passphrase: Option<Spanned<String>>,
    #[serde(default)]
    peer: Vec<Spanned<String>>,
    #[serde(default)]
    addresses: Vec<Spanned<String>>,
    #[serde(default)]
    groups: Vec<Spanned<String>>,
}

/// pfsync(4): `syncdev`, `syncpeer`, `maxupd`; `key` beyond OpenBSD.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPfsync {
    interface: Spanned<String>,
    peer: Option<Spanned<String>>,
    maxupd: Option<Spanned<i64>>,
    key: Option<Spanned<String>>,
    defer: Option<bool>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawCarpOptions {
    preempt: Option<bool>,
    split_brain_repair: Option<bool>,
    hook: Option<Spanned<String>>,
    hook_timeout: Option<Spanned<i64>>,
    startup_delay: Option<Spanned<i64>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawHost {
    enabled: Option<bool>,
    name: Option<Spanned<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawPort {
    name: Spanned<String>,
    mtu: Option<Spanned<i64>>,
    mac: Option<Spanned<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawIface {
    name: Spanned<String>,
    port: Spanned<String>,
    vlan: Option<Spanned<i64>>,
    #[serde(default)]
    addresses: Vec<Spanned<String>>,
    #[serde(default)]
    groups: Vec<Spanned<String>>,
    #[serde(default)]
    proxy_arp: Vec<Spanned<String>>,
    /// The most this interface sends, below its port's (a VLAN of a
    /// smaller MTU than the others on the trunk)
    mtu: Option<Spanned<i64>>,
    router_advertisements: Option<Spanned<RawRa>>,
}

/// `[interface.router-advertisements]`: rad(8)'s job for this interface.
#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRa {
    lifetime: Option<Spanned<i64>>,
    interval: Option<Spanned<i64>>,
    #[serde(default)]
    dns: Vec<Spanned<String>>,
    mtu: Option<bool>,
    /// A CARP interface on this one (with a link-local address) whose
    /// link-local address and virtual MAC advertise, while it is master
    carp: Option<Spanned<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawBridge {
    name: Spanned<String>,
    members: Spanned<Vec<Spanned<String>>>,
    /// Members that take and get no frames but IPv4, IPv6, ARP and
    /// RARP (brconfig's `blocknonip`).
    #[serde(default)]
    blocknonip: Vec<Spanned<String>>,
    /// Carry VLAN-tagged frames no [[interface]] claims, unfiltered.
    #[serde(default)]
    pass_tagged: bool,
    /// Static learning-table entries, "MEMBER MAC" (brconfig's `static`):
    /// never aged, never moved by a frame from another member.
    #[serde(default)]
    r#static: Vec<Spanned<String>>,
    /// Members whose senders are not learnt (brconfig's `-learn`).
    #[serde(default)]
    nolearn: Vec<Spanned<String>>,
    #[serde(default)]
    addresses: Vec<Spanned<String>>,
    #[serde(default)]
    groups: Vec<Spanned<String>>,
    #[serde(default)]
    proxy_arp: Vec<Spanned<String>>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawRoute {
    to: Spanned<String>,
    via: Option<Spanned<String>>,
    interface: Option<Spanned<String>>,
}

/// Where the control socket is unless `control = "..."` says otherwise.
pub const DEFAULT_CONTROL: &str = "/run/palisade.sock";

/// Why `ADDR[/BITS]` was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("'{0}' is not an address")]
    NotAnAddress(String),
    #[error("'{text}': prefix length must be 0..{max}")]
    Length { text: String, max: u8 },
}

/// Why palisade.toml was refused: where (the file, and the line from 1; 0
/// when toml cannot say) and what is wrong there.
#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {problem}")]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub problem: ConfigProblem,
}

/// What is wrong in palisade.toml, with the names involved.
#[derive(Debug, thiserror::Error)]
pub enum ConfigProblem {
    /// Not TOML, or a key or value palisade.toml does not have.
    #[error("{}", .0.message())]
    Toml(toml::de::Error),
    #[error("port '{0}' is listed twice")]
    PortTwice(String),
    #[error("port '{0}': no network interface of that name")]
    NoSuchPort(String),
    #[error("mtu must be 576..9216")]
    Mtu,
    #[error("mtu {0}: an interface with IPv6 addresses needs 1280 at least (RFC 8200)")]
    MtuV6(u16),
    #[error("mac = \"{0}\": use \"port\" (answer with the port's own MAC; the kernel's is moved aside while Palisade runs) or \"derived\" (the default: a MAC of Palisade's own, the port's with the locally administered bit)")]
    Mac(String),
    #[error(transparent)]
    Prefix(#[from] PrefixError),
    #[error("address {address} is already on interface '{owner}'")]
    AddressTaken { address: IpAddr, owner: String },
    #[error("'{0}' is not a usable interface name (letters, digits, . _ -; at most 15)")]
    BadName(String),
    #[error("interface '{0}' is defined twice")]
    InterfaceTwice(String),
    #[error("interface '{interface}': '{port}' is not a [[port]]")]
    NotAPort { interface: String, port: String },
    #[error("VLAN id {0} out of range (1..4094)")]
    VlanRange(i64),
    /// A port, or one VLAN of it, given to two interfaces.
    #[error("{} is already interface '{owner}'", port_or_vlan(.port, .vlan))]
    PortTaken {
        port: String,
        vlan: Option<u16>,
        owner: String,
    },
    #[error("bridge '{bridge}': '{member}' is not an interface")]
    NoSuchMember { bridge: String, member: String },
    #[error("'{0}' is listed twice")]
    MemberTwice(String),
    #[error("'{member}' is already a member of bridge '{bridge}'")]
    AlreadyMember { member: String, bridge: String },
    #[error("a bridge cannot be a member of a bridge")]
    BridgeInBridge,
    #[error("bridge member '{member}' has addresses; give them to the bridge '{bridge}'")]
    MemberHasAddresses { member: String, bridge: String },
    #[error("a bridge needs at least two members")]
    BridgeTooSmall,
    #[error("bridge '{bridge}': blocknonip '{member}' is not one of its members")]
    BlockNonIpNotMember { bridge: String, member: String },
    #[error("bridge '{bridge}': nolearn '{member}' is not one of its members")]
    NoLearnNotMember { bridge: String, member: String },
    #[error("bridge '{bridge}': static \"{entry}\": {why} (write \"MEMBER MAC\", e.g. \"wan 02:00:00:00:01:01\")")]
    BadStatic {
        bridge: String,
        entry: String,
        why: String,
    },
    #[error("'{0}' is not an interface")]
    NoSuchInterface(String),
    #[error("'{0}' is a bridge member; route through the bridge")]
    RouteThroughMember(String),
    #[error("'{0}' is not an address")]
    GatewayNotAnAddress(String),
    #[error("a route needs `via` (a gateway) or `interface`")]
    RouteNeedsNextHop,
    #[error("a default route through an interface needs `via` to know its family")]
    DefaultRouteNeedsVia,
    #[error("gateway and destination are of different address families")]
    RouteFamilies,
    #[error(
        "gateway {0} is not reachable: no interface's subnet contains it and no \
         `interface =` route leads to it (an address written without /N is a /{bits})",
        bits = if .0.is_ipv6() { 128 } else { 32 }
    )]
    GatewayUnreachable(IpAddr),
    #[error("a second route to {}/{}", .0.ip, .0.bits)]
    RouteTwice(Prefix),
    #[error(
        "route to {}/{}: host bits set (the network is {}/{})",
        .0.ip, .0.bits, .1.ip, .1.bits
    )]
    RouteHostBits(Prefix, Prefix),
    #[error("host interface '{0}' is already a port or interface")]
    HostNameTaken(String),
    #[error("workers must be 1..64")]
    Workers,
    #[error("ring-frames must be a multiple of 64 from 1024 to 262144")]
    RingFrames,
    #[error("control must be an absolute path")]
    ControlNotAbsolute,
    #[error("pflog must be an absolute path")]
    PflogNotAbsolute,
    #[error("state-file must be an absolute path")]
    StateFileNotAbsolute,
    #[error("pflog-size-mb must be 1..65536")]
    PflogSize,
    #[error("metrics must be ADDRESS:PORT (e.g. \"127.0.0.1:9101\" or \"[2001:db8::1]:9101\")")]
    Metrics,
    #[error("carp '{carp}': '{interface}' is not an interface{hint}")]
    CarpParent {
        carp: String,
        interface: String,
        hint: String,
    },
    #[error("vhid {0} out of range (1..255)")]
    CarpVhid(i64),
    #[error("vhid {vhid} is already used on '{interface}' by '{other}'")]
    CarpVhidTaken {
        vhid: u8,
        interface: String,
        other: String,
    },
    #[error("advbase {0} out of range (0..255 seconds)")]
    CarpAdvbase(i64),
    #[error("advskew {0} out of range (0..254)")]
    CarpAdvskew(i64),
    #[error("the passphrase has {0} bytes: at most 19 (ifconfig keeps 19)")]
    CarpPassphrase(usize),
    #[error("pfsync: '{0}' is not an interface{1}")]
    PfsyncInterface(String, String),
    #[error("pfsync: interface '{0}' has no IPv4 address (pfsync speaks IPv4)")]
    PfsyncNoAddress(String),
    #[error("pfsync peer '{0}': not an IPv4 address")]
    PfsyncPeer(String),
    #[error("pfsync maxupd {0}: 0 to 255")]
    PfsyncMaxupd(i64),
    #[error("pfsync key: empty")]
    PfsyncKey,
    #[error("carp hook '{0}': {1}")]
    CarpHook(String, &'static str),
    #[error("carp hook-timeout {0}: 1 to 3600 seconds")]
    CarpHookTimeout(i64),
    #[error("carp startup-delay {0}: 0 to 3600 seconds")]
    CarpStartupDelay(i64),
    #[error("carp '{0}' has no address")]
    CarpNoAddress(String),
    #[error("'{0}' is not an address")]
    CarpPeer(String),
    #[error("address {address}: {why}")]
    UnusableAddress { address: String, why: &'static str },
    #[error(
        "interface '{0}': router advertisements are sent from a link-local address: \
         add one to its addresses (e.g. \"fe80::1/64\")"
    )]
    RaNeedsLinkLocal(String),
    #[error("router-advertisements carp: {0}")]
    RaCarp(String),
    #[error("router-advertisements lifetime {0}: 0 to 9000 seconds (0: not a default router)")]
    RaLifetime(i64),
    #[error("router-advertisements interval {0}: 4 to 1800 seconds")]
    RaInterval(i64),
    #[error("router-advertisements dns '{0}': not an IPv6 address")]
    RaDns(String),
    #[error("router-advertisements lifetime {0}: less than interval {1} (RFC 4861: 0, or interval to 9000)")]
    RaLifetimeUnderInterval(u16, u32),
    #[error("router-advertisements dns: at most 8 servers")]
    RaDnsMany,
    #[error("carp '{carp}': peer {peer} is this firewall's own address (the peer is the other firewall)")]
    CarpPeerOwn { carp: String, peer: IpAddr },
    /// "carp 'carp0': peer P is not on interface 'wan' (prefixes)".
    #[error("{0}: advertisements go to the peer on the link, so it must be there")]
    CarpPeerOffLink(String),
    /// "pfsync peer P: is not on interface 'sync' (prefixes)".
    #[error("{0}: the sync packets go to the peer on the sync link")]
    PfsyncPeerOffLink(String),
    /// carppeer takes one peer; a second of a family was never sent to.
    #[error("carp '{carp}': a second IPv{} peer {peer} (already {other}): one peer per address family", if .peer.is_ipv6() { 6 } else { 4 })]
    CarpPeerTwice {
        carp: String,
        peer: IpAddr,
        other: IpAddr,
    },
    #[error("carp '{carp}': peer {peer}: no virtual address of its family to advertise (add an IPv{} address to `addresses`, or drop the peer)", if .peer.is_ipv6() { 6 } else { 4 })]
    CarpPeerFamily { carp: String, peer: IpAddr },
    /// The whole problem, as `group_name_problem` words it.
    #[error("{0}")]
    BadGroup(String),
    #[error("osfp entries {0}: 1 to 10000000")]
    OsfpEntries(i64),
    #[error("osfp max-age {0}: 1 to 604800 seconds")]
    OsfpMaxAge(i64),
}

/// Why `name` cannot be an interface group, or None. ifconfig(8)'s rule,
/// the one place for it: palisade.toml's `groups` and the run-time
/// `palisade carp group add|delete` and `carp demote|undemote` apply it
/// alike, so that every group the file accepts can be demoted by hand and
/// nothing the file refuses gets in at run time. At most IFNAMSIZ-1 (15)
/// bytes; letters, digits, `.`, `_`, `-`; not ending in a digit (pf.conf
/// would read such a name as an interface's).
pub fn group_name_problem(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
        && !name.ends_with(|c: char| c.is_ascii_digit());
    if ok {
        return None;
    }
    // A name pasted by mistake can be long: show its start only.
    let shown = if name.chars().count() > 20 {
        let head: String = name.chars().take(20).collect();
        format!("'{head}...' ({} bytes)", name.len())
    } else {
        format!("'{name}'")
    };
    Some(format!(
        "{shown} is not a usable group name (letters, digits, . _ -; at most 15; not ending in a digit, as ifconfig(8) wants)"
    ))
}

fn port_or_vlan(port: &str, vlan: &Option<u16>) -> String {
    match vlan {
        Some(v) => format!("VLAN {v} of port '{port}'"),
        None => format!("port '{port}' (untagged)"),
    }
}

/// An address with its prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Prefix {
    pub ip: IpAddr,
    pub bits: u8,
}

/// When a name given as an interface is a port's: which interfaces are on
/// that port (the names pf.conf and CARP use), for the error.
fn port_hint(name: &str, ports: &[PortConf], ifaces: &[Iface]) -> String {
    let Some(ix) = ports.iter().position(|p| p.name == name) else {
        return String::new();
    };
    let on: Vec<String> = ifaces
        .iter()
        .filter(|i| i.port == Some(ix))
        .map(|i| format!("'{}'", i.name))
        .collect();
    if on.is_empty() {
        format!(" ('{name}' is a [[port]]: name an [[interface]] on it)")
    } else {
        format!(
            " ('{name}' is a [[port]]; the interface on it is {})",
            on.join(" or ")
        )
    }
}

/// Prefixes as a config names them: "198.18.0.2/24, 2001:db8::2/64".
fn prefix_list(l: &[&Prefix]) -> String {
    l.iter()
        .map(|p| format!("{}/{}", p.ip, p.bits))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Why an interface (or CARP) address cannot be one: addresses no host
/// can have, and the prefix's own network and broadcast addresses.
/// DNS servers one advertisement carries at most.
const RA_DNS_MAX: usize = 8;

/// `[interface.router-advertisements]` checked: rad's defaults, and a
/// link-local address to send from.
fn ra_conf(
    cx: &Ctx,
    r: &Spanned<RawRa>,
    iface: &str,
    addresses: &[Prefix],
) -> Result<RaConf, ConfigError> {
    let raw = r.get_ref();
    let link_local = addresses
        .iter()
        .any(|p| matches!(p.ip, IpAddr::V6(a) if a.is_unicast_link_local()));
    // (With `carp`, the CARP interface's link-local address sends: checked
    // once the CARP interfaces are read.)
    if !link_local && raw.carp.is_none() {
        return Err(cx.err(r, ConfigProblem::RaNeedsLinkLocal(iface.to_string())));
    }
    let lifetime = match &raw.lifetime {
        Some(l) if !(0..=9000).contains(l.get_ref()) => {
            return Err(cx.err(l, ConfigProblem::RaLifetime(*l.get_ref())))
        }
        Some(l) => *l.get_ref() as u16,
        None => 1800,
    };
    let interval = match &raw.interval {
        Some(v) if !(4..=1800).contains(v.get_ref()) => {
            return Err(cx.err(v, ConfigProblem::RaInterval(*v.get_ref())))
        }
        Some(v) => *v.get_ref() as u32,
        None => 600,
    };
    // RFC 4861 6.2.1: a default router's lifetime covers the time
    // between advertisements (hosts would lose their route in between).
    if let Some(l) = &raw.lifetime {
        if lifetime != 0 && u32::from(lifetime) < interval {
            return Err(cx.err(
                l,
                ConfigProblem::RaLifetimeUnderInterval(lifetime, interval),
            ));
        }
    }
    if raw.dns.len() > RA_DNS_MAX {
        return Err(cx.err(&raw.dns[RA_DNS_MAX], ConfigProblem::RaDnsMany));
    }
    let mut dns = Vec::new();
    for d in &raw.dns {
        match d.get_ref().parse::<std::net::Ipv6Addr>() {
            Ok(a) if !a.is_unspecified() && !a.is_multicast() => dns.push(a),
            _ => return Err(cx.err(d, ConfigProblem::RaDns(d.get_ref().clone()))),
        }
    }
    Ok(RaConf {
        lifetime,
        interval,
        dns,
        mtu: raw.mtu.unwrap_or(false),
        carp: None,
    })
}

pub fn unusable_address(p: &Prefix) -> Option<&'static str> {
    if p.ip.is_unspecified() {
        return Some("the unspecified address is no interface's");
    }
    if p.ip.is_multicast() {
        return Some("a multicast address is no interface's");
    }
    if p.ip.is_loopback() {
        return Some("a loopback address belongs to lo");
    }
    if p.bits == 0 {
        return Some("a /0 prefix would make every address a neighbour");
    }
    if let IpAddr::V4(a) = p.ip {
        if a.is_broadcast() {
            return Some("the limited broadcast address is no interface's");
        }
        if p.bits <= 30 {
            let host = u32::from(a) & (u32::MAX >> p.bits);
            if host == 0 {
                return Some("the network address of its prefix (a host needs another)");
            }
            if host == u32::MAX >> p.bits {
                return Some("the broadcast address of its prefix (a host needs another)");
            }
        }
    }
    None
}

impl Prefix {
    pub fn parse(s: &str) -> Result<Prefix, PrefixError> {
        let (a, b) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let ip: IpAddr = a
            .parse()
            .map_err(|_| PrefixError::NotAnAddress(s.to_string()))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let bits =
            match b {
                Some(b) => b.parse::<u8>().ok().filter(|&n| n <= max).ok_or_else(|| {
                    PrefixError::Length {
                        text: s.to_string(),
                        max,
                    }
                })?,
                None => max,
            };
        Ok(Prefix { ip, bits })
    }

    /// The prefix's network address (host bits cleared).
    pub fn network(&self) -> IpAddr {
        match self.ip {
            IpAddr::V4(a) => {
                let m = if self.bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.bits)
                };
                IpAddr::V4((u32::from(a) & m).into())
            }
            IpAddr::V6(a) => {
                let m = if self.bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.bits)
                };
                IpAddr::V6((u128::from(a) & m).into())
            }
        }
    }

    pub fn contains(&self, ip: &IpAddr) -> bool {
        match (self.ip, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let m = if self.bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - self.bits)
                };
                u32::from(n) & m == u32::from(*a) & m
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let m = if self.bits == 0 {
                    0
                } else {
                    u128::MAX << (128 - self.bits)
                };
                u128::from(n) & m == u128::from(*a) & m
            }
            _ => false,
        }
    }
}

/// A logical interface: a port, a port + VLAN, or a bridge.
#[derive(Clone, Debug)]
pub struct Iface {
    pub name: String,
    /// Index into `Config::ports`; None for a bridge.
    pub port: Option<usize>,
    pub vlan: Option<u16>,
    pub addresses: Vec<Prefix>,
    pub groups: Vec<String>,
    pub proxy: Vec<Prefix>,
    /// For a member: its bridge (index into `ifaces`).
    pub bridge: Option<usize>,
    /// For a bridge: its members.
    pub members: Vec<usize>,
    /// For a member: `blocknonip` (only IPv4, IPv6, ARP and RARP frames
    /// come in by it or go out by it; VLAN-tagged frames are not IP).
    pub block_non_ip: bool,
    /// For a bridge: `pass-tagged` (VLAN-tagged frames no interface
    /// claims cross it as they are, unfiltered; else they are dropped).
    pub pass_tagged: bool,
    /// For a member: `nolearn` (its senders are not learnt: frames to
    /// them are flooded unless a static entry says where they are).
    pub no_learn: bool,
    /// For a bridge: static learning-table entries (member, MAC).
    pub fdb_static: Vec<(usize, [u8; 6])>,
    /// Router advertisements sent on it (`[interface.router-advertisements]`).
    pub ra: Option<RaConf>,
    /// `mtu` under [[interface]]: the most it sends, when below its
    /// port's (`router::mtu` takes the smaller).
    pub mtu: Option<u16>,
}

/// Router advertisements on an interface (rad(8), RFC 4861): the
/// prefixes of its global IPv6 addresses, from its link-local address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RaConf {
    /// Router lifetime (0: hosts do not take the firewall as default
    /// router). rad's default: 1800 s.
    pub lifetime: u16,
    /// Most seconds between unsolicited advertisements (RFC 4861's
    /// MaxRtrAdvInterval; 600).
    pub interval: u32,
    /// DNS servers (RDNSS, RFC 8106).
    pub dns: Vec<std::net::Ipv6Addr>,
    /// Advertise the interface's MTU.
    pub mtu: bool,
    /// `carp = "carp0"`: advertise from that CARP interface's link-local
    /// address and virtual MAC, and only while it is master (the pair
    /// then looks like one router to the hosts, which follows CARP).
    pub carp: Option<(String, std::net::Ipv6Addr)>,
}

#[derive(Clone, Debug)]
pub struct Route {
    pub to: Prefix,
    pub via: Option<IpAddr>,
    /// Index into `ifaces` (for `interface =` routes).
    pub iface: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct PortConf {
    pub name: String,
    /// `mac = "port"`: Palisade answers with the port's own MAC (a
    /// provider that accepts only it), and the kernel's interface gets
    /// the derived one while Palisade runs (`isolation`), so the kernel
    /// never takes the frames to it. Else Palisade answers with the
    /// derived MAC (`dataplane::own_mac`) and the kernel's is untouched.
    pub mac_port: bool,
    pub mtu: u16,
    /// `mtu` was given in palisade.toml (else the kernel's is taken at
    /// start: `fit_mtus`, and followed while running).
    pub mtu_set: bool,
    /// The `mtu` palisade.toml gives (1500 without one): what a port
    /// whose kernel MTU fell below it and rose again comes back to.
    pub mtu_conf: u16,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub pf: PathBuf,
    pub ports: Vec<PortConf>,
    pub ifaces: Vec<Iface>,
    pub routes: Vec<Route>,
    /// The host interface (a TAP device to the Linux stack), if enabled.
    pub host: Option<String>,
    /// Worker threads (PACKET_FANOUT by flow hash across them).
    pub workers: usize,
    /// `ring-frames`: slots of each receiving socket's ring (2 KiB each;
    /// a socket per port per worker, two with the fast path): what a
    /// burst may bring before user space reads it.
    pub ring_frames: u32,
    /// The control socket's path.
    pub control: PathBuf,
    /// Where logged packets go (a pcap file, DLT_PFLOG), rotated at
    /// `pflog_size` bytes (one old file kept, with `.0` appended).
    pub pflog: Option<PathBuf>,
    pub pflog_size: u64,
    /// `state-file`: the state table is written here when the daemon
    /// stops and taken back when it starts (docs/daemon.md).
    pub state_file: Option<PathBuf>,
    /// The metrics listener (HTTP, Prometheus text), off unless set.
    pub metrics: Option<std::net::SocketAddr>,
    /// `fastpath = true`: the ports' IPv4 and IPv6 come on sockets of
    /// their own, behind the in-kernel fast path's program at tc ingress
    /// (docs/fastpath.md).
    pub fastpath: bool,
    /// CARP interfaces (virtual hosts), and the options of all of them.
    pub carp: Vec<CarpIface>,
    pub carp_options: CarpOptions,
    /// State synchronisation, if configured.
    pub pfsync: Option<PfsyncConfig>,
    /// Record SYN fingerprints: at most this many connections (and hosts),
    /// each kept this many seconds.
    pub osfp: Option<(usize, u64)>,
}

/// `[pfsync]`: the sync interface (a logical interface, syncdev), an
/// optional unicast peer (syncpeer), maxupd, and an optional key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PfsyncConfig {
    pub iface: usize,
    /// Its IPv4 address: the packets' source.
    pub source: std::net::Ipv4Addr,
    pub peer: Option<std::net::Ipv4Addr>,
    pub maxupd: u32,
    pub key: Option<String>,
    /// pfsync(4) `defer`: a new state's first packet waits for the
    /// peer's INS_ACK (or 20 ms).
    pub defer: bool,
}

/// A CARP interface as palisade.toml gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarpIface {
    pub name: String,
    /// Index into `Config::ifaces`: the interface it rides on.
    pub parent: usize,
    pub vhid: u8,
    pub advbase: u8,
    pub advskew: u8,
    pub passphrase: String,
    pub peers: Vec<IpAddr>,
    pub addresses: Vec<Prefix>,
    pub groups: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CarpOptions {
    /// net.inet.carp.preempt (off by default, as on OpenBSD).
    pub preempt: bool,
    /// Beyond OpenBSD: a master that hears one it outranks answers at once.
    pub split_brain_repair: bool,
    /// Beyond OpenBSD: a program run on every transition (to MASTER, to
    /// BACKUP, to INIT), its environment naming the interface, vhid,
    /// addresses and states.
    pub hook: Option<PathBuf>,
    /// How long the hook may run before it is killed.
    pub hook_timeout: std::time::Duration,
    /// Keep the boot demotion this long after the daemon is up (as
    /// keepalived's vrrp_startup_delay; OpenBSD's rc lifts it at the end
    /// of boot): time for routes, links and peers to settle.
    pub startup_delay: std::time::Duration,
}

impl Default for CarpOptions {
    fn default() -> CarpOptions {
        CarpOptions {
            preempt: false,
            split_brain_repair: false,
            hook: None,
            hook_timeout: std::time::Duration::from_secs(DEFAULT_HOOK_TIMEOUT as u64),
            startup_delay: std::time::Duration::ZERO,
        }
    }
}

/// Seconds a CARP transition hook may run.
pub const DEFAULT_HOOK_TIMEOUT: i64 = 30;

fn line_of(text: &str, pos: usize) -> usize {
    text[..pos.min(text.len())].matches('\n').count() + 1
}

struct Ctx<'a> {
    file: String,
    text: &'a str,
}

impl Ctx<'_> {
    fn err<T>(&self, s: &Spanned<T>, problem: impl Into<ConfigProblem>) -> ConfigError {
        ConfigError {
            file: self.file.clone(),
            line: line_of(self.text, s.span().start),
            problem: problem.into(),
        }
    }
}

impl Config {
    /// Parse and check `text` (the contents of `path`). `port_exists`
    /// says whether a Linux interface of that name exists.
    pub fn parse(
        path: &Path,
        text: &str,
        port_exists: &dyn Fn(&str) -> bool,
    ) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let raw: Raw = toml::from_str(text).map_err(|e| ConfigError {
            file: file.clone(),
            line: e.span().map(|s| line_of(text, s.start)).unwrap_or(0),
            problem: ConfigProblem::Toml(e),
        })?;
        let cx = Ctx { file, text };
        let mut ports = Vec::new();
        let mut port_ix = HashMap::new();
        for p in &raw.port {
            let name = p.name.get_ref();
            if port_ix.insert(name.clone(), ports.len()).is_some() {
                return Err(cx.err(&p.name, ConfigProblem::PortTwice(name.clone())));
            }
            if !port_exists(name) {
                return Err(cx.err(&p.name, ConfigProblem::NoSuchPort(name.clone())));
            }
            let mtu = match &p.mtu {
                Some(m) if !(576..=9216).contains(m.get_ref()) => {
                    return Err(cx.err(m, ConfigProblem::Mtu));
                }
                Some(m) => *m.get_ref() as u16,
                None => 1500,
            };
            let mac_port = match &p.mac {
                None => false,
                Some(m) => match m.get_ref().as_str() {
                    "port" => true,
                    "derived" => false,
                    other => return Err(cx.err(m, ConfigProblem::Mac(other.to_string()))),
                },
            };
            ports.push(PortConf {
                name: name.clone(),
                mac_port,
                mtu,
                mtu_set: p.mtu.is_some(),
                mtu_conf: mtu,
            });
        }
        let mut ifaces: Vec<Iface> = Vec::new();
        let mut if_ix: HashMap<String, usize> = HashMap::new();
        let mut seen_addr: HashMap<(IpAddr, String), String> = HashMap::new();
        let mut addrs = |cx: &Ctx, list: &[Spanned<String>], owner: &str| {
            let mut out = Vec::new();
            for a in list {
                let p = Prefix::parse(a.get_ref()).map_err(|e| cx.err(a, e))?;
                if let Some(why) = unusable_address(&p) {
                    return Err(cx.err(
                        a,
                        ConfigProblem::UnusableAddress {
                            address: a.get_ref().clone(),
                            why,
                        },
                    ));
                }
                // (An IPv6 link-local address is the link's: the same one,
                // fe80::1 say, may be on every interface, as on Linux and
                // OpenBSD.)
                let link_local = matches!(p.ip, IpAddr::V6(a) if a.is_unicast_link_local());
                let key = if link_local {
                    (p.ip, owner.to_string())
                } else {
                    (p.ip, String::new())
                };
                if let Some(o) = seen_addr.insert(key, owner.to_string()) {
                    return Err(cx.err(
                        a,
                        ConfigProblem::AddressTaken {
                            address: p.ip,
                            owner: o,
                        },
                    ));
                }
                out.push(p);
            }
            Ok::<_, ConfigError>(out)
        };
        let prefixes = |cx: &Ctx, list: &[Spanned<String>]| {
            list.iter()
                .map(|a| Prefix::parse(a.get_ref()).map_err(|e| cx.err(a, e)))
                .collect::<Result<Vec<_>, _>>()
        };
        let names_ok = |cx: &Ctx, n: &Spanned<String>| {
            let s = n.get_ref();
            if s.is_empty()
                || s.len() > 15
                || !s
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
                || s.chars().next().is_some_and(|c| c.is_ascii_digit())
            {
                return Err(cx.err(n, ConfigProblem::BadName(s.clone())));
            }
            Ok(())
        };
        // Interface groups: ifconfig(8)'s rule, and each group once (a
        // group listed twice is the same membership).
        let groups_ok = |cx: &Ctx, gs: &[Spanned<String>]| {
            let mut out: Vec<String> = Vec::new();
            for g in gs {
                if let Some(p) = group_name_problem(g.get_ref()) {
                    return Err(cx.err(g, ConfigProblem::BadGroup(p)));
                }
                if !out.contains(g.get_ref()) {
                    out.push(g.get_ref().clone());
                }
            }
            Ok(out)
        };
        let mut port_vlan: HashMap<(usize, Option<u16>), String> = HashMap::new();
        for i in &raw.interface {
            names_ok(&cx, &i.name)?;
            let name = i.name.get_ref().clone();
            if if_ix.contains_key(&name) {
                return Err(cx.err(&i.name, ConfigProblem::InterfaceTwice(name)));
            }
            let Some(&port) = port_ix.get(i.port.get_ref()) else {
                return Err(cx.err(
                    &i.port,
                    ConfigProblem::NotAPort {
                        interface: name,
                        port: i.port.get_ref().clone(),
                    },
                ));
            };
            let vlan = match &i.vlan {
                Some(v) if !(1..=4094).contains(v.get_ref()) => {
                    return Err(cx.err(v, ConfigProblem::VlanRange(*v.get_ref())));
                }
                Some(v) => Some(*v.get_ref() as u16),
                None => None,
            };
            if let Some(o) = port_vlan.insert((port, vlan), name.clone()) {
                return Err(cx.err(
                    &i.port,
                    ConfigProblem::PortTaken {
                        port: ports[port].name.clone(),
                        vlan,
                        owner: o,
                    },
                ));
            }
            let addresses = addrs(&cx, &i.addresses, &name)?;
            let mtu = match &i.mtu {
                Some(m) if !(576..=9216).contains(m.get_ref()) => {
                    return Err(cx.err(m, ConfigProblem::Mtu));
                }
                Some(m) if *m.get_ref() < 1280 && addresses.iter().any(|a| a.ip.is_ipv6()) => {
                    return Err(cx.err(m, ConfigProblem::MtuV6(*m.get_ref() as u16)));
                }
                Some(m) => Some(*m.get_ref() as u16),
                None => None,
            };
            let ra = match &i.router_advertisements {
                Some(r) => Some(ra_conf(&cx, r, &name, &addresses)?),
                None => None,
            };
            if_ix.insert(name.clone(), ifaces.len());
            ifaces.push(Iface {
                name,
                port: Some(port),
                vlan,
                addresses,
                groups: groups_ok(&cx, &i.groups)?,
                proxy: prefixes(&cx, &i.proxy_arp)?,
                bridge: None,
                members: Vec::new(),
                block_non_ip: false,
                pass_tagged: false,
                no_learn: false,
                fdb_static: Vec::new(),
                ra,
                mtu,
            });
        }
        // A port listed without an [[interface]] is an interface of its own name.
        for (pi, p) in ports.iter().enumerate() {
            if !port_vlan.keys().any(|(q, _)| *q == pi) && !if_ix.contains_key(&p.name) {
                if_ix.insert(p.name.clone(), ifaces.len());
                ifaces.push(Iface {
                    name: p.name.clone(),
                    port: Some(pi),
                    vlan: None,
                    addresses: Vec::new(),
                    groups: Vec::new(),
                    proxy: Vec::new(),
                    bridge: None,
                    members: Vec::new(),
                    block_non_ip: false,
                    pass_tagged: false,
                    no_learn: false,
                    fdb_static: Vec::new(),
                    ra: None,
                    mtu: None,
                });
            }
        }
        for b in &raw.bridge {
            names_ok(&cx, &b.name)?;
            let name = b.name.get_ref().clone();
            if if_ix.contains_key(&name) {
                return Err(cx.err(&b.name, ConfigProblem::InterfaceTwice(name)));
            }
            let bi = ifaces.len();
            let mut members = Vec::new();
            for m in b.members.get_ref() {
                let Some(&mi) = if_ix.get(m.get_ref()) else {
                    return Err(cx.err(
                        m,
                        ConfigProblem::NoSuchMember {
                            bridge: name,
                            member: m.get_ref().clone(),
                        },
                    ));
                };
                if members.contains(&mi) {
                    return Err(cx.err(m, ConfigProblem::MemberTwice(m.get_ref().clone())));
                }
                if let Some(o) = ifaces[mi].bridge {
                    return Err(cx.err(
                        m,
                        ConfigProblem::AlreadyMember {
                            member: m.get_ref().clone(),
                            bridge: ifaces[o].name.clone(),
                        },
                    ));
                }
                if ifaces[mi].port.is_none() {
                    return Err(cx.err(m, ConfigProblem::BridgeInBridge));
                }
                if !ifaces[mi].addresses.is_empty() {
                    return Err(cx.err(
                        m,
                        ConfigProblem::MemberHasAddresses {
                            member: m.get_ref().clone(),
                            bridge: name,
                        },
                    ));
                }
                ifaces[mi].bridge = Some(bi);
                members.push(mi);
            }
            if members.len() < 2 {
                return Err(cx.err(&b.members, ConfigProblem::BridgeTooSmall));
            }
            // `blocknonip` and `nolearn` name members of this bridge.
            let member_of = |m: &Spanned<String>| {
                if_ix
                    .get(m.get_ref())
                    .copied()
                    .filter(|mi| members.contains(mi))
            };
            for m in &b.blocknonip {
                let Some(mi) = member_of(m) else {
                    return Err(cx.err(
                        m,
                        ConfigProblem::BlockNonIpNotMember {
                            bridge: name,
                            member: m.get_ref().clone(),
                        },
                    ));
                };
                ifaces[mi].block_non_ip = true;
            }
            for m in &b.nolearn {
                let Some(mi) = member_of(m) else {
                    return Err(cx.err(
                        m,
                        ConfigProblem::NoLearnNotMember {
                            bridge: name,
                            member: m.get_ref().clone(),
                        },
                    ));
                };
                ifaces[mi].no_learn = true;
            }
            let mut fdb_static = Vec::new();
            for e in &b.r#static {
                let bad = |why: &str| {
                    cx.err(
                        e,
                        ConfigProblem::BadStatic {
                            bridge: name.clone(),
                            entry: e.get_ref().clone(),
                            why: why.to_string(),
                        },
                    )
                };
                let mut words = e.get_ref().split_whitespace();
                let (Some(member), Some(mac), None) = (words.next(), words.next(), words.next())
                else {
                    return Err(bad("not a member and a MAC"));
                };
                let Some(&mi) = if_ix.get(member).filter(|mi| members.contains(mi)) else {
                    return Err(bad(&format!("'{member}' is not one of its members")));
                };
                let Some(mac) = parse_mac(mac) else {
                    return Err(bad(&format!("'{mac}' is not a MAC address")));
                };
                if mac[0] & 1 != 0 {
                    return Err(bad("a group (multicast) address cannot be learnt"));
                }
                if fdb_static.iter().any(|(_, m)| *m == mac) {
                    return Err(bad("that MAC has a static entry already"));
                }
                fdb_static.push((mi, mac));
            }
            let addresses = addrs(&cx, &b.addresses, &name)?;
            if_ix.insert(name.clone(), bi);
            ifaces.push(Iface {
                name,
                port: None,
                vlan: None,
                addresses,
                groups: groups_ok(&cx, &b.groups)?,
                proxy: prefixes(&cx, &b.proxy_arp)?,
                bridge: None,
                members,
                block_non_ip: false,
                pass_tagged: b.pass_tagged,
                no_learn: false,
                fdb_static,
                ra: None,
                mtu: None,
            });
        }
        let mut routes = Vec::new();
        for r in &raw.route {
            let to = match r.to.get_ref().as_str() {
                "default" => None,
                s => Some(Prefix::parse(s).map_err(|e| cx.err(&r.to, e))?),
            };
            // A destination with host bits set (`ip route` refuses it
            // too): a typo for the network, or for an address's own /N.
            if let Some(p) = &to {
                let net = p.network();
                if net != p.ip {
                    return Err(cx.err(
                        &r.to,
                        ConfigProblem::RouteHostBits(
                            *p,
                            Prefix {
                                ip: net,
                                bits: p.bits,
                            },
                        ),
                    ));
                }
            }
            let iface = match &r.interface {
                Some(n) => {
                    let Some(&i) = if_ix.get(n.get_ref()) else {
                        return Err(cx.err(n, ConfigProblem::NoSuchInterface(n.get_ref().clone())));
                    };
                    if ifaces[i].bridge.is_some() {
                        return Err(
                            cx.err(n, ConfigProblem::RouteThroughMember(n.get_ref().clone()))
                        );
                    }
                    Some(i)
                }
                None => None,
            };
            let via = match &r.via {
                Some(v) => Some(v.get_ref().parse::<IpAddr>().map_err(|_| {
                    cx.err(v, ConfigProblem::GatewayNotAnAddress(v.get_ref().clone()))
                })?),
                None => None,
            };
            if via.is_none() && iface.is_none() {
                return Err(cx.err(&r.to, ConfigProblem::RouteNeedsNextHop));
            }
            let fam_v6 = match (&to, via) {
                (Some(p), _) => p.ip.is_ipv6(),
                (None, Some(v)) => v.is_ipv6(),
                (None, None) => return Err(cx.err(&r.to, ConfigProblem::DefaultRouteNeedsVia)),
            };
            if let Some(v) = via {
                if v.is_ipv6() != fam_v6 {
                    return Err(cx.err(r.via.as_ref().unwrap(), ConfigProblem::RouteFamilies));
                }
            }
            let to = to.unwrap_or(Prefix {
                ip: if fam_v6 {
                    IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
                } else {
                    IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
                },
                bits: 0,
            });
            routes.push((r, Route { to, via, iface }));
        }
        // Every gateway must be reachable: on a connected subnet (a CARP
        // address's included) or through an interface route (`route add
        // -net GW -iface em0`).
        let carp_nets: Vec<Prefix> = raw
            .carp
            .iter()
            .flat_map(|c| c.addresses.iter())
            .filter_map(|a| Prefix::parse(a.get_ref()).ok())
            .collect();
        for (r, rt) in &routes {
            let Some(gw) = rt.via else { continue };
            let connected = ifaces
                .iter()
                .any(|i| i.bridge.is_none() && i.addresses.iter().any(|p| p.contains(&gw)))
                || carp_nets.iter().any(|p| p.contains(&gw));
            let by_iface = routes
                .iter()
                .any(|(_, o)| o.via.is_none() && o.iface.is_some() && o.to.contains(&gw));
            let pinned = rt.iface.is_some();
            if !connected && !by_iface && !pinned {
                return Err(cx.err(
                    r.via.as_ref().unwrap(),
                    ConfigProblem::GatewayUnreachable(gw),
                ));
            }
        }
        let mut seen_routes = HashSet::new();
        for (r, rt) in &routes {
            if !seen_routes.insert(rt.to) {
                return Err(cx.err(&r.to, ConfigProblem::RouteTwice(rt.to)));
            }
        }
        let host = match &raw.host {
            Some(RawHost {
                enabled: Some(false),
                ..
            }) => None,
            Some(RawHost { name: Some(n), .. }) => {
                names_ok(&cx, n)?;
                if port_ix.contains_key(n.get_ref()) || if_ix.contains_key(n.get_ref()) {
                    return Err(cx.err(n, ConfigProblem::HostNameTaken(n.get_ref().clone())));
                }
                Some(n.get_ref().clone())
            }
            _ => Some("pal0".to_string()),
        };
        let workers = match &raw.workers {
            Some(w) if !(1..=64).contains(w.get_ref()) => {
                return Err(cx.err(w, ConfigProblem::Workers));
            }
            Some(w) => *w.get_ref() as usize,
            None => std::thread::available_parallelism()
                .map(|n| n.get().min(4))
                .unwrap_or(1),
        };
        let ring_frames = match &raw.ring_frames {
            Some(r) if !(1024..=262_144).contains(r.get_ref()) || r.get_ref() % 64 != 0 => {
                return Err(cx.err(r, ConfigProblem::RingFrames));
            }
            Some(r) => *r.get_ref() as u32,
            None => crate::afpacket::RING_FRAMES,
        };
        let control = match &raw.control {
            Some(c) if !c.get_ref().starts_with('/') => {
                return Err(cx.err(c, ConfigProblem::ControlNotAbsolute));
            }
            Some(c) => PathBuf::from(c.get_ref()),
            None => PathBuf::from(DEFAULT_CONTROL),
        };
        let pflog = match &raw.pflog {
            Some(c) if !c.get_ref().starts_with('/') => {
                return Err(cx.err(c, ConfigProblem::PflogNotAbsolute));
            }
            Some(c) => Some(PathBuf::from(c.get_ref())),
            None => None,
        };
        let state_file = match &raw.state_file {
            Some(c) if !c.get_ref().starts_with('/') => {
                return Err(cx.err(c, ConfigProblem::StateFileNotAbsolute));
            }
            Some(c) => Some(PathBuf::from(c.get_ref())),
            None => None,
        };
        let pflog_size = match &raw.pflog_size_mb {
            Some(m) if !(1..=65536).contains(m.get_ref()) => {
                return Err(cx.err(m, ConfigProblem::PflogSize));
            }
            Some(m) => *m.get_ref() as u64 * 1024 * 1024,
            None => 16 * 1024 * 1024,
        };
        let mut carp: Vec<CarpIface> = Vec::new();
        for c in &raw.carp {
            names_ok(&cx, &c.name)?;
            let name = c.name.get_ref().clone();
            if if_ix.contains_key(&name) || carp.iter().any(|o| o.name == name) {
                return Err(cx.err(&c.name, ConfigProblem::InterfaceTwice(name)));
            }
            let Some(&parent) = if_ix.get(c.interface.get_ref()) else {
                return Err(cx.err(
                    &c.interface,
                    ConfigProblem::CarpParent {
                        carp: name,
                        interface: c.interface.get_ref().clone(),
                        hint: port_hint(c.interface.get_ref(), &ports, &ifaces),
                    },
                ));
            };
            let vhid = match *c.vhid.get_ref() {
                v @ 1..=255 => v as u8,
                v => return Err(cx.err(&c.vhid, ConfigProblem::CarpVhid(v))),
            };
            if let Some(o) = carp.iter().find(|o| o.parent == parent && o.vhid == vhid) {
                return Err(cx.err(
                    &c.vhid,
                    ConfigProblem::CarpVhidTaken {
                        vhid,
                        interface: c.interface.get_ref().clone(),
                        other: o.name.clone(),
                    },
                ));
            }
            let advbase = match &c.advbase {
                Some(a) if !(0..=255).contains(a.get_ref()) => {
                    return Err(cx.err(a, ConfigProblem::CarpAdvbase(*a.get_ref())));
                }
                Some(a) => *a.get_ref() as u8,
                None => 1,
            };
            let advskew = match &c.advskew {
                Some(a) if !(0..=254).contains(a.get_ref()) => {
                    return Err(cx.err(a, ConfigProblem::CarpAdvskew(*a.get_ref())));
                }
                Some(a) => *a.get_ref() as u8,
                None => 0,
            };
            let passphrase = match &c.passphrase {
                Some(p) if p.get_ref().len() > 19 => {
                    return Err(cx.err(p, ConfigProblem::CarpPassphrase(p.get_ref().len())));
                }
                Some(p) => p.get_ref().clone(),
                None => String::new(),
            };
            if c.addresses.is_empty() {
                return Err(cx.err(&c.name, ConfigProblem::CarpNoAddress(name)));
            }
            let addresses = addrs(&cx, &c.addresses, &name)?;
            let mut peers: Vec<IpAddr> = Vec::new();
            for p in &c.peer {
                let ip: IpAddr = p
                    .get_ref()
                    .parse()
                    .map_err(|_| cx.err(p, ConfigProblem::CarpPeer(p.get_ref().clone())))?;
                // As OpenBSD's carppeer: one peer (per family here). The
                // core advertises to the first of a family only, so a
                // second would silently get nothing.
                if let Some(&other) = peers.iter().find(|o| o.is_ipv6() == ip.is_ipv6()) {
                    return Err(cx.err(
                        p,
                        ConfigProblem::CarpPeerTwice {
                            carp: name,
                            peer: ip,
                            other,
                        },
                    ));
                }
                // Advertisements of a family go only where the vhid has an
                // address of it: a peer of the other family would never
                // hear from us (and the core refuses it at start, where
                // `run -n` does not look).
                if !addresses.iter().any(|a| a.ip.is_ipv6() == ip.is_ipv6()) {
                    return Err(cx.err(
                        p,
                        ConfigProblem::CarpPeerFamily {
                            carp: name,
                            peer: ip,
                        },
                    ));
                }
                let own = &ifaces[parent].addresses;
                if own.iter().chain(addresses.iter()).any(|a| a.ip == ip) {
                    return Err(cx.err(
                        p,
                        ConfigProblem::CarpPeerOwn {
                            carp: name,
                            peer: ip,
                        },
                    ));
                }
                // On the parent's link: inside one of its prefixes of the
                // family, its CARP addresses' or an `interface =` route's
                // through it (as a gateway is; an IPv6 link-local peer
                // always is; a parent without an address of the family
                // cannot be checked).
                let fam: Vec<&Prefix> = own
                    .iter()
                    .chain(addresses.iter())
                    .chain(
                        carp.iter()
                            .filter(|o| o.parent == parent)
                            .flat_map(|o| o.addresses.iter()),
                    )
                    .chain(
                        routes
                            .iter()
                            .filter(|(_, r)| r.via.is_none() && r.iface == Some(parent))
                            .map(|(_, r)| &r.to),
                    )
                    .filter(|a| a.ip.is_ipv6() == ip.is_ipv6())
                    .collect();
                let link_local = matches!(ip, IpAddr::V6(v) if v.segments()[0] & 0xffc0 == 0xfe80);
                if !fam.is_empty() && !link_local && !fam.iter().any(|a| a.contains(&ip)) {
                    return Err(cx.err(
                        p,
                        ConfigProblem::CarpPeerOffLink(format!(
                            "carp '{name}': peer {ip} is not on interface '{}' ({})",
                            c.interface.get_ref(),
                            prefix_list(&fam)
                        )),
                    ));
                }
                peers.push(ip);
            }
            // `carp` is implicit (every CARP interface is in it); OpenBSD's
            // ifconfig lists it (`groups: carp`) and users copy that, so it
            // is accepted and ignored rather than refused. Counted twice, it
            // showed twice and doubled a demotion of group carp.
            let groups: Vec<String> = groups_ok(&cx, &c.groups)?
                .into_iter()
                .filter(|g| g != "carp")
                .collect();
            carp.push(CarpIface {
                name,
                parent,
                vhid,
                advbase,
                advskew,
                passphrase,
                peers,
                addresses,
                groups,
            });
        }
        // Advertisements that follow a CARP interface: one on this
        // interface, with a link-local address to send from.
        for ri in &raw.interface {
            let Some(r) = &ri.router_advertisements else {
                continue;
            };
            let Some(cn) = &r.get_ref().carp else {
                continue;
            };
            let Some(&i) = if_ix.get(ri.name.get_ref()) else {
                continue;
            };
            let Some(c) = carp.iter().find(|c| c.name == *cn.get_ref()) else {
                return Err(cx.err(
                    cn,
                    ConfigProblem::RaCarp(format!("no CARP interface '{}'", cn.get_ref())),
                ));
            };
            if c.parent != i {
                return Err(cx.err(
                    cn,
                    ConfigProblem::RaCarp(format!(
                        "CARP interface '{}' is on '{}', not on '{}'",
                        c.name, ifaces[c.parent].name, ifaces[i].name
                    )),
                ));
            }
            let Some(ll) = c.addresses.iter().find_map(|p| match p.ip {
                IpAddr::V6(a) if a.is_unicast_link_local() => Some(a),
                _ => None,
            }) else {
                return Err(cx.err(cn, ConfigProblem::RaCarp(format!(
                    "CARP interface '{}' has no IPv6 link-local address to advertise from (add one, e.g. \"fe80::1/64\", the same on both firewalls)",
                    c.name
                ))));
            };
            if let Some(ra) = ifaces[i].ra.as_mut() {
                ra.carp = Some((c.name.clone(), ll));
            }
        }
        let mut carp_options = CarpOptions::default();
        if let Some(o) = &raw.carp_options {
            carp_options.preempt = o.preempt.unwrap_or(false);
            carp_options.split_brain_repair = o.split_brain_repair.unwrap_or(false);
            if let Some(h) = &o.hook {
                let path = PathBuf::from(h.get_ref());
                if !path.is_absolute() {
                    return Err(cx.err(
                        h,
                        ConfigProblem::CarpHook(h.get_ref().clone(), "not an absolute path"),
                    ));
                }
                use std::os::unix::fs::PermissionsExt;
                match std::fs::metadata(&path) {
                    // Run as is (it is executed, not given to a shell):
                    // without an execute bit every transition failed.
                    Ok(m) if m.is_file() && m.permissions().mode() & 0o111 == 0 => {
                        return Err(cx.err(
                            h,
                            ConfigProblem::CarpHook(
                                h.get_ref().clone(),
                                "not executable (chmod +x it)",
                            ),
                        ))
                    }
                    Ok(m) if m.is_file() => {}
                    Ok(_) => {
                        return Err(cx.err(
                            h,
                            ConfigProblem::CarpHook(h.get_ref().clone(), "not a file"),
                        ))
                    }
                    Err(_) => {
                        return Err(cx.err(
                            h,
                            ConfigProblem::CarpHook(h.get_ref().clone(), "no such file"),
                        ))
                    }
                }
                carp_options.hook = Some(path);
            }
            if let Some(t) = &o.hook_timeout {
                match *t.get_ref() {
                    s @ 1..=3600 => {
                        carp_options.hook_timeout = std::time::Duration::from_secs(s as u64)
                    }
                    s => return Err(cx.err(t, ConfigProblem::CarpHookTimeout(s))),
                }
            }
            if let Some(t) = &o.startup_delay {
                match *t.get_ref() {
                    s @ 0..=3600 => {
                        carp_options.startup_delay = std::time::Duration::from_secs(s as u64)
                    }
                    s => return Err(cx.err(t, ConfigProblem::CarpStartupDelay(s))),
                }
            }
        }
        let metrics = match &raw.metrics {
            Some(m) => Some(
                m.get_ref()
                    .parse()
                    .map_err(|_| cx.err(m, ConfigProblem::Metrics))?,
            ),
            None => None,
        };
        let pfsync = match &raw.pfsync {
            None => None,
            Some(p) => {
                let name = p.interface.get_ref();
                let Some(&ix) = if_ix.get(name.as_str()) else {
                    return Err(cx.err(
                        &p.interface,
                        ConfigProblem::PfsyncInterface(
                            name.clone(),
                            port_hint(name, &ports, &ifaces),
                        ),
                    ));
                };
                let source = match ifaces[ix].addresses.iter().find_map(|a| match a.ip {
                    IpAddr::V4(v) => Some(v),
                    IpAddr::V6(_) => None,
                }) {
                    Some(a) => a,
                    None => {
                        return Err(
                            cx.err(&p.interface, ConfigProblem::PfsyncNoAddress(name.clone()))
                        )
                    }
                };
                let peer = match &p.peer {
                    Some(s) => {
                        let peer = s.get_ref().parse::<std::net::Ipv4Addr>().map_err(|_| {
                            cx.err(s, ConfigProblem::PfsyncPeer(s.get_ref().clone()))
                        })?;
                        let own: Vec<&Prefix> = ifaces[ix]
                            .addresses
                            .iter()
                            .chain(
                                carp.iter()
                                    .filter(|o| o.parent == ix)
                                    .flat_map(|o| o.addresses.iter()),
                            )
                            .chain(
                                routes
                                    .iter()
                                    .filter(|(_, r)| r.via.is_none() && r.iface == Some(ix))
                                    .map(|(_, r)| &r.to),
                            )
                            .filter(|a| a.ip.is_ipv4())
                            .collect();
                        let why = if ifaces[ix]
                            .addresses
                            .iter()
                            .any(|a| a.ip == IpAddr::V4(peer))
                        {
                            Some("is the address of this firewall's")
                        } else if !own.iter().any(|a| a.contains(&IpAddr::V4(peer))) {
                            Some("is not on")
                        } else if ifaces[ix].addresses.iter().any(|a| {
                            a.contains(&IpAddr::V4(peer))
                                && a.bits <= 30
                                && matches!(u32::from(peer) & (u32::MAX >> a.bits), 0)
                        }) {
                            // (Of the interface's own prefixes: those the
                            // data plane treats as subnets' broadcasts.)
                            Some("is the network address of a prefix of")
                        } else if ifaces[ix].addresses.iter().any(|a| {
                            a.contains(&IpAddr::V4(peer))
                                && a.bits <= 30
                                && u32::from(peer) & (u32::MAX >> a.bits) == u32::MAX >> a.bits
                        }) {
                            Some("is the broadcast address of a prefix of")
                        } else {
                            None
                        };
                        if let Some(why) = why {
                            return Err(cx.err(
                                s,
                                ConfigProblem::PfsyncPeerOffLink(format!(
                                    "pfsync peer {peer}: {why} interface '{name}' ({})",
                                    prefix_list(&own)
                                )),
                            ));
                        }
                        Some(peer)
                    }
                    None => None,
                };
                let maxupd = match &p.maxupd {
                    Some(m) => match *m.get_ref() {
                        v @ 0..=255 => v as u32,
                        v => return Err(cx.err(m, ConfigProblem::PfsyncMaxupd(v))),
                    },
                    None => 128,
                };
                let key = match &p.key {
                    Some(k) if k.get_ref().is_empty() => {
                        return Err(cx.err(k, ConfigProblem::PfsyncKey))
                    }
                    Some(k) => Some(k.get_ref().clone()),
                    None => None,
                };
                Some(PfsyncConfig {
                    iface: ix,
                    source,
                    peer,
                    maxupd,
                    key,
                    defer: p.defer.unwrap_or(false),
                })
            }
        };
        let osfp = match &raw.osfp {
            Some(o) if o.record.unwrap_or(true) => {
                let entries = match &o.entries {
                    Some(e) if !(1..=10_000_000).contains(e.get_ref()) => {
                        return Err(cx.err(e, ConfigProblem::OsfpEntries(*e.get_ref())))
                    }
                    Some(e) => *e.get_ref() as usize,
                    None => 65_536,
                };
                let age = match &o.max_age {
                    Some(a) if !(1..=604_800).contains(a.get_ref()) => {
                        return Err(cx.err(a, ConfigProblem::OsfpMaxAge(*a.get_ref())))
                    }
                    Some(a) => *a.get_ref() as u64,
                    None => 3600,
                };
                Some((entries, age))
            }
            _ => None,
        };
        Ok(Config {
            fastpath: raw.fastpath.unwrap_or(false),
            osfp,
            pfsync,
            pflog,
            pflog_size,
            state_file,
            metrics,
            control,
            workers,
            ring_frames,
            host,
            pf: PathBuf::from(raw.pf.into_inner()),
            ports,
            ifaces,
            routes: routes.into_iter().map(|(_, r)| r).collect(),
            carp,
            carp_options,
        })
    }

    /// What is accepted but probably not meant: a port no interface is
    /// on (its frames are all dropped); router advertisements on an
    /// interface with CARP, or with no prefix to advertise.
    pub fn warnings(&self) -> Vec<String> {
        let mut w: Vec<String> = (0..self.ports.len())
            .filter(|&p| {
                !self.ifaces.iter().any(|i| {
                    i.port == Some(p)
                })
            })
            .map(|p| {
                format!(
                    "palisade: warning: port '{}' has no [[interface]]: every frame on it is dropped (unknown_vlan)",
                    self.ports[p].name
                )
            })
            .collect();
        // An interface named as a pf.conf keyword (`out`, `in`...): pf.conf
        // must quote it (`on "out"`); unquoted, its rules are syntax errors
        // that do not say why (a probe's `[[interface]] name = "out"`).
        // `any` cannot be named at all: quoted too, it is the wildcard.
        for ifc in &self.ifaces {
            if ifc.name == "any" {
                w.push(
                    "palisade: warning: interface 'any': pf.conf's `on any` (quoted or not) means every interface, so rules cannot name this one: give it another name".to_string(),
                );
            } else if palisade_conf::keywords::is_keyword(&ifc.name) {
                w.push(format!(
                    "palisade: warning: interface '{0}' is a pf.conf keyword: pf.conf must write it quoted (`on \"{0}\"`), unquoted it is a syntax error; another name spares that",
                    ifc.name
                ));
            }
        }
        // The same subnet on two interfaces (192.0.2.1/24 on one,
        // 192.0.2.5/24 on another: a probe's typo of a VLAN's block):
        // routing picks the first for the whole subnet, and the second's
        // hosts are never reached by it. OpenBSD refuses the second
        // address ("File exists"); a longer prefix inside another
        // interface's (a routed sub-block) is ordinary and not said.
        // Link-local prefixes are every link's own.
        let mut seen: Vec<(IpAddr, u8, usize)> = Vec::new();
        for (ix, p) in self.connected_prefixes() {
            if match p.ip {
                IpAddr::V6(a) => a.is_unicast_link_local(),
                IpAddr::V4(a) => a.is_link_local(),
            } {
                continue;
            }
            let net = p.network();
            match seen.iter().find(|(n, b, _)| *n == net && *b == p.bits) {
                Some(&(_, _, first)) if first != ix => w.push(format!(
                    "palisade: warning: interfaces '{}' and '{}' both have {net}/{}: routing sends it out of '{}' (the first), and reaches on '{}' only what a longer prefix or route names (OpenBSD refuses such an address: \"File exists\")",
                    self.ifaces[first].name, self.ifaces[ix].name, p.bits,
                    self.ifaces[first].name, self.ifaces[ix].name
                )),
                Some(_) => {}
                None => seen.push((net, p.bits, ix)),
            }
        }
        for (i, ifc) in self.ifaces.iter().enumerate() {
            if ifc.ra.is_none() {
                continue;
            }
            if self.carp.iter().any(|c| c.parent == i)
                && ifc.ra.as_ref().is_some_and(|r| r.carp.is_none())
            {
                w.push(format!(
                    "palisade: warning: interface '{}' has CARP and router advertisements: each firewall of the pair advertises itself from its own link-local address, so hosts keep both as default routers and move to the other only when neighbour unreachability detection gives up on one (tens of seconds), not at CARP's takeover (`carp = \"CARPIF\"` under [interface.router-advertisements] advertises from the CARP interface's link-local address, only while it is master)",
                    ifc.name
                ));
            }
            let global = ifc
                .addresses
                .iter()
                .any(|p| matches!(p.ip, IpAddr::V6(a) if !a.is_unicast_link_local()));
            if !global {
                w.push(format!(
                    "palisade: warning: interface '{}' has router advertisements but no global IPv6 address: no prefix is advertised (hosts get a default router, not addresses)",
                    ifc.name
                ));
            }
            let prefixes = ifc
                .addresses
                .iter()
                .filter(|p| matches!(p.ip, IpAddr::V6(a) if !a.is_unicast_link_local()))
                .count();
            if prefixes > crate::ra::PREFIXES_MAX {
                w.push(format!(
                    "palisade: warning: interface '{}' has {prefixes} global IPv6 addresses: router advertisements carry the first {} prefixes",
                    ifc.name,
                    crate::ra::PREFIXES_MAX
                ));
            }
        }
        w
    }

    /// Fit the ports' MTUs to the kernel's (`kernel(name)`, None when it
    /// cannot be read): a port without `mtu` takes the kernel's; one whose
    /// `mtu` is larger than the kernel's is lowered to it (a frame over
    /// the kernel's MTU is refused by the send, silently lost) and said
    /// in the returned warnings.
    pub fn fit_mtus(&mut self, kernel: &dyn Fn(&str) -> Option<u32>) -> Vec<String> {
        let mut w = Vec::new();
        for p in &mut self.ports {
            let Some(k) = kernel(&p.name) else { continue };
            let k = k.clamp(576, 9216) as u16;
            if !p.mtu_set {
                p.mtu = k;
            } else if k < p.mtu {
                w.push(format!(
                    "palisade: warning: port '{}': mtu {} in palisade.toml, but the kernel's is {k}: {k} is used (set the interface's MTU to {} first, or mtu = {k})",
                    p.name, p.mtu, p.mtu
                ));
                p.mtu = k;
            }
        }
        w
    }

    pub fn iface(&self, name: &str) -> Option<usize> {
        self.ifaces.iter().position(|i| i.name == name)
    }

    /// Per interface, the next hops (`via`) of the routes that leave by
    /// it: the firewall asks for them, and never answers for them as a
    /// proxy (it would draw their neighbours' traffic to itself).
    pub fn gateways(&self) -> Vec<Vec<IpAddr>> {
        let mut g = vec![Vec::new(); self.ifaces.len()];
        for r in &self.routes {
            let Some(via) = r.via else { continue };
            if let Some(i) = r.iface.or_else(|| self.connected(&via)) {
                if let Some(v) = g.get_mut(i) {
                    if !v.contains(&via) {
                        v.push(via);
                    }
                }
            }
        }
        g
    }

    /// The routing table as pf's `no-route` and `urpf-failed` see it
    /// (for `palisade_conf`'s host model; the interfaces' own subnets are
    /// connected routes there already): each `[[route]]` with the
    /// interface it leaves by (named, or the one its gateway is reached
    /// by), and each CARP address's subnet on its parent.
    pub fn host_routes(&self) -> Vec<palisade_conf::host::HostRoute> {
        let via = |g: IpAddr| {
            self.connected(&g).or_else(|| {
                self.routes
                    .iter()
                    .filter(|x| x.via.is_none() && x.to.contains(&g))
                    .max_by_key(|x| x.to.bits)
                    .and_then(|x| x.iface)
            })
        };
        let mut out = Vec::new();
        for r in &self.routes {
            if let Some(i) = r.iface.or_else(|| r.via.and_then(via)) {
                out.push(palisade_conf::host::HostRoute {
                    to: r.to.ip,
                    bits: r.to.bits,
                    iface: self.ifaces[i].name.clone(),
                });
            }
        }
        for c in &self.carp {
            for p in &c.addresses {
                out.push(palisade_conf::host::HostRoute {
                    to: p.ip,
                    bits: p.bits,
                    iface: self.ifaces[c.parent].name.clone(),
                });
            }
        }
        out
    }

    /// The interfaces as pf.conf sees them (for `palisade_conf`'s host
    /// model): logical interfaces and bridges with their addresses and
    /// groups; `egress` is the group of the interfaces with a default route.
    pub fn host_interfaces(&self) -> Vec<palisade_conf::host::Interface> {
        let mut egress = HashSet::new();
        for r in &self.routes {
            if r.to.bits != 0 {
                continue;
            }
            // The default route's interface: named, or the one its gateway
            // is on (a connected subnet, or an `interface =` route to it).
            let via = |g: IpAddr| {
                self.connected(&g).or_else(|| {
                    self.routes
                        .iter()
                        .find(|x| x.to.bits != 0 && x.to.contains(&g) && x.iface.is_some())
                        .and_then(|x| x.iface)
                })
            };
            if let Some(i) = r.iface.or_else(|| r.via.and_then(via)) {
                egress.insert(i);
            }
        }
        self.ifaces
            .iter()
            .enumerate()
            .map(|(ix, i)| {
                let mut groups = i.groups.clone();
                if egress.contains(&ix) && !groups.iter().any(|g| g == "egress") {
                    groups.push("egress".into());
                }
                if i.port.is_none() {
                    groups.push("bridge".into());
                } else if i.vlan.is_some() {
                    groups.push("vlan".into());
                }
                palisade_conf::host::Interface {
                    name: i.name.clone(),
                    groups,
                    loopback: false,
                    addrs: i
                        .addresses
                        .iter()
                        .map(|p| palisade_conf::host::IfAddr {
                            ip: p.ip,
                            bits: p.bits,
                            peer: None,
                        })
                        .collect(),
                }
            })
            // CARP interfaces after the others (indices of `ifaces` stay
            // those of the host model), in group `carp` as on OpenBSD.
            .chain(self.carp.iter().map(|c| {
                let mut groups = vec!["carp".to_string()];
                groups.extend(c.groups.iter().filter(|g| *g != "carp").cloned());
                palisade_conf::host::Interface {
                    name: c.name.clone(),
                    groups,
                    loopback: false,
                    addrs: c
                        .addresses
                        .iter()
                        .map(|p| palisade_conf::host::IfAddr {
                            ip: p.ip,
                            bits: p.bits,
                            peer: None,
                        })
                        .collect(),
                }
            }))
            // The loopback interface pf.conf files name (`set skip on lo`,
            // `antispoof for lo`, `self` includes its addresses), in group
            // `lo` as on OpenBSD; the data plane never sees its packets.
            .chain((!self.ifaces.iter().any(|i| i.name == "lo")).then(|| {
                palisade_conf::host::Interface {
                    name: "lo".into(),
                    groups: vec!["lo".into()],
                    loopback: true,
                    addrs: vec![
                        palisade_conf::host::IfAddr {
                            ip: IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
                            bits: 8,
                            peer: None,
                        },
                        palisade_conf::host::IfAddr {
                            ip: IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
                            bits: 128,
                            peer: None,
                        },
                    ],
                }
            }))
            .collect()
    }

    /// The interface whose subnet contains `ip`.
    pub fn connected(&self, ip: &IpAddr) -> Option<usize> {
        self.connected_prefixes()
            .find(|(_, p)| p.contains(ip))
            .map(|(i, _)| i)
    }

    /// The connected subnets, each with its interface: every address's
    /// prefix on an interface (not a bridge member), and every CARP
    /// address's on its parent (as `inet 198.18.5.1/24 vhid 6` on carp5
    /// gives OpenBSD a connected route, whether or not the parent has an
    /// address in it).
    pub fn connected_prefixes(&self) -> impl Iterator<Item = (usize, &Prefix)> {
        let own = self
            .ifaces
            .iter()
            .enumerate()
            .filter(|(_, i)| i.bridge.is_none())
            .flat_map(|(ix, i)| i.addresses.iter().map(move |p| (ix, p)));
        let carp = self
            .carp
            .iter()
            .filter(|c| {
                self.ifaces
                    .get(c.parent)
                    .is_some_and(|i| i.bridge.is_none())
            })
            .flat_map(|c| c.addresses.iter().map(move |p| (c.parent, p)));
        own.chain(carp)
    }
}

/// "02:00:00:00:01:01" (or with dashes) as six bytes.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    if parts.len() != 6 {
        return None;
    }
    let mut m = [0u8; 6];
    for (b, p) in m.iter_mut().zip(&parts) {
        if p.is_empty() || p.len() > 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A route's destination with host bits set is refused (naming the
    /// network); a port no interface is on is warned about.
    #[test]
    fn route_host_bits_and_unused_ports() {
        let e = parse(
            "pf = \"pf.conf\"\n[[port]]\nname = \"eth0\"\n[[interface]]\nname = \"a\"\nport = \"eth0\"\naddresses = [\"192.0.2.1/24\"]\n[[route]]\nto = \"198.51.100.5/24\"\nvia = \"192.0.2.254\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("route to 198.51.100.5/24: host bits set (the network is 198.51.100.0/24)")
                && e.contains(":9:"),
            "{e}"
        );
        let c = parse(
            "pf = \"pf.conf\"\n[[port]]\nname = \"eth0\"\n[[port]]\nname = \"eth1\"\n[[interface]]\nname = \"eth1\"\nport = \"eth0\"\n",
        )
        .unwrap();
        assert_eq!(
            c.warnings(),
            ["palisade: warning: port 'eth1' has no [[interface]]: every frame on it is dropped (unknown_vlan)"]
        );
        // Interfaces named as pf.conf keywords (a probe's `out`).
        for (name, said) in [
            (
                "out",
                "interface 'out' is a pf.conf keyword: pf.conf must write it quoted (`on \"out\"`)",
            ),
            (
                "any",
                "interface 'any': pf.conf's `on any` (quoted or not) means every interface",
            ),
        ] {
            let c = parse(&format!(
                "pf = \"pf.conf\"\n[[port]]\nname = \"eth0\"\n[[interface]]\nname = \"{name}\"\nport = \"eth0\"\n"
            ))
            .unwrap();
            assert!(
                c.warnings().iter().any(|w| w.contains(said)),
                "{:?}",
                c.warnings()
            );
        }
        // The same subnet on two interfaces is said (a probe's
        // 192.0.2.5/24 beside 192.0.2.1/24); a sub-block routed to
        // another interface, and link-local prefixes, are not.
        let two = |a: &str, b: &str| {
            parse(&format!(
                "pf = \"pf.conf\"\n[[port]]\nname = \"eth0\"\n[[port]]\nname = \"eth1\"\n\
                 [[interface]]\nname = \"wan\"\nport = \"eth0\"\naddresses = [{a}]\n\
                 [[interface]]\nname = \"lan\"\nport = \"eth1\"\naddresses = [{b}]\n"
            ))
            .unwrap()
            .warnings()
        };
        let w = two("\"192.0.2.1/24\"", "\"192.0.2.5/24\"");
        assert_eq!(
            w,
            ["palisade: warning: interfaces 'wan' and 'lan' both have 192.0.2.0/24: routing sends it out of 'wan' (the first), and reaches on 'lan' only what a longer prefix or route names (OpenBSD refuses such an address: \"File exists\")"]
        );
        let w = two("\"2001:db8::1/64\"", "\"2001:db8::2/64\"");
        assert!(
            w.len() == 1 && w[0].contains("both have 2001:db8::/64"),
            "{w:?}"
        );
        assert!(two(
            "\"203.0.113.2/24\", \"fe80::1/64\", \"169.254.0.1/16\"",
            "\"203.0.113.33/27\", \"fe80::1/64\", \"169.254.0.2/16\""
        )
        .is_empty());
    }

    /// `ring-frames`: a multiple of 64 from 1024 to 262144, said with its
    /// line otherwise; 4096 by default.
    #[test]
    fn ring_frames_is_checked() {
        let with = |extra: &str| {
            parse(&format!(
                "pf = \"pf.conf\"\n{extra}[[port]]\nname = \"eth0\"\n[[interface]]\nname = \"a\"\nport = \"eth0\"\n"
            ))
        };
        assert_eq!(with("").unwrap().ring_frames, 4096);
        assert_eq!(with("ring-frames = 16384\n").unwrap().ring_frames, 16384);
        for bad in [
            "ring-frames = 100\n",
            "ring-frames = 5000\n",
            "ring-frames = 524288\n",
        ] {
            let e = with(bad).unwrap_err().to_string();
            assert!(
                e.contains(":2:")
                    && e.contains("ring-frames must be a multiple of 64 from 1024 to 262144"),
                "{bad}: {e}"
            );
        }
    }

    /// `blocknonip` names members of its bridge, and only those.
    #[test]
    fn blocknonip_names_members() {
        let base = "pf = \"pf.conf\"\n[[port]]\nname = \"eth0\"\n[[port]]\nname = \"eth1\"\n[[port]]\nname = \"eth2\"\n[[bridge]]\nname = \"bridge0\"\nmembers = [\"eth0\", \"eth1\"]\n";
        let c = parse(&format!("{base}blocknonip = [\"eth1\"]\n")).unwrap();
        let flags: Vec<bool> = c.ifaces.iter().map(|i| i.block_non_ip).collect();
        assert_eq!(flags, [false, true, false, false]);
        let e = parse(&format!("{base}blocknonip = [\"eth2\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(":11:")
                && e.contains("bridge 'bridge0': blocknonip 'eth2' is not one of its members"),
            "{e}"
        );
    }

    /// `static` entries name a member and a unicast MAC, once each;
    /// `nolearn` names members.
    #[test]
    fn bridge_static_entries_and_nolearn() {
        let base = "pf = \"pf.conf\"\n[[port]]\nname = \"eth0\"\n[[port]]\nname = \"eth1\"\n[[port]]\nname = \"eth2\"\n[[bridge]]\nname = \"bridge0\"\nmembers = [\"eth0\", \"eth1\"]\n";
        let c = parse(&format!(
            "{base}static = [\"eth0 02:00:00:00:01:01\", \"eth1 02-00-00-00-0a-01\"]\nnolearn = [\"eth1\"]\n"
        ))
        .unwrap();
        let b = c.ifaces.iter().find(|i| i.name == "bridge0").unwrap();
        assert_eq!(
            b.fdb_static,
            [(0, [2, 0, 0, 0, 1, 1]), (1, [2, 0, 0, 0, 0xa, 1])]
        );
        let flags: Vec<bool> = c.ifaces.iter().map(|i| i.no_learn).collect();
        assert_eq!(flags, [false, true, false, false]);
        for (entry, why) in [
            ("eth2 02:00:00:00:01:01", "'eth2' is not one of its members"),
            (
                "eth0 02:00:00:00:01",
                "'02:00:00:00:01' is not a MAC address",
            ),
            ("eth0", "not a member and a MAC"),
            ("eth0 01:00:5e:00:00:01", "a group (multicast) address"),
        ] {
            let e = parse(&format!("{base}static = [\"{entry}\"]\n"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(":11:") && e.contains(&format!("static \"{entry}\": {why}")),
                "{e}"
            );
        }
        let e = parse(&format!(
            "{base}static = [\"eth0 02:00:00:00:01:01\", \"eth1 02:00:00:00:01:01\"]\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("a static entry already"), "{e}");
        let e = parse(&format!("{base}nolearn = [\"eth2\"]\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("nolearn 'eth2' is not one of its members"),
            "{e}"
        );
    }

    /// A port without `mtu` takes the kernel's; one with a larger `mtu`
    /// than the kernel's is lowered to it, with a warning.
    #[test]
    fn port_mtus_fit_the_kernels() {
        let mut c = parse(
            "pf = \"pf.conf\"\n[[port]]\nname = \"eth0\"\n[[port]]\nname = \"eth1\"\nmtu = 9000\n[[port]]\nname = \"eth2\"\nmtu = 1400\n\
             [[interface]]\nname = \"a\"\nport = \"eth0\"\n[[interface]]\nname = \"b\"\nport = \"eth1\"\n[[interface]]\nname = \"c\"\nport = \"eth2\"\n",
        )
        .unwrap();
        let w = c.fit_mtus(&|n| match n {
            "eth0" => Some(1400),
            _ => Some(1500),
        });
        let mtus: Vec<u16> = c.ports.iter().map(|p| p.mtu).collect();
        assert_eq!(mtus, [1400, 1500, 1400]);
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("port 'eth1': mtu 9000 in palisade.toml, but the kernel's is 1500"),
            "{w:?}"
        );
    }

    /// `mtu` under [[interface]]: 576..9216, 1280 at least with IPv6
    /// addresses; kept for the data plane (`router::mtu` takes the
    /// smaller of it and the port's).
    #[test]
    fn an_interface_mtu_is_checked() {
        let toml = |mtu: &str, addr: &str| {
            format!(
                "pf = \"pf.conf\"\n[[port]]\nname = \"eth0\"\n\
                 [[interface]]\nname = \"v7\"\nport = \"eth0\"\nvlan = 7\nmtu = {mtu}\naddresses = [\"{addr}\"]\n"
            )
        };
        let c = parse(&toml("1400", "192.0.2.1/24")).unwrap();
        assert_eq!(c.ifaces[0].mtu, Some(1400));
        let e = parse(&toml("100", "192.0.2.1/24")).unwrap_err().to_string();
        assert!(e.contains("mtu must be 576..9216"), "{e}");
        assert!(parse(&toml("1000", "192.0.2.1/24")).is_ok());
        let e = parse(&toml("1000", "2001:db8::1/64"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("mtu 1000: an interface with IPv6 addresses needs 1280"),
            "{e}"
        );
    }

    /// pf.conf files name the loopback interface (the PF FAQ's home
    /// network: `set skip on lo`, `antispoof quick for { lo $int_if }`):
    /// it is in the host model, in group `lo`, with 127.0.0.1 and ::1.
    #[test]
    fn the_loopback_interface_is_in_the_host_model() {
        let c = parse(
            "pf = \"pf.conf\"\n[[port]]\nname = \"eth0\"\n[[interface]]\nname = \"em1\"\nport = \"eth0\"\naddresses = [\"192.0.2.1/24\"]\n",
        )
        .unwrap();
        let host = palisade_conf::host::HostModel {
            interfaces: c.host_interfaces(),
            ..Default::default()
        };
        let out = palisade_conf::parse_bytes(
            "pf.conf",
            None,
            b"set skip on lo\nint_if = \"em1\"\nantispoof quick for { lo $int_if }\nblock in from no-route\n"
                .to_vec(),
            &palisade_conf::ParseOptions {
                host,
                ..Default::default()
            },
        );
        assert_eq!(out.errors, 0, "{:?}", out.stderr);
        let lo = c
            .host_interfaces()
            .into_iter()
            .find(|i| i.name == "lo")
            .unwrap();
        assert!(lo.loopback && lo.groups == ["lo"], "{lo:?}");
    }

    fn parse(t: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("p.toml"), t, &|n| n.starts_with("eth"))
    }

    /// S1: the default gateway is reached through an interface route on
    /// the bridge, which is therefore in `egress`.
    #[test]
    fn egress_through_an_interface_route() {
        let c = Config::parse(
            Path::new("palisade.toml"),
            include_str!("../../../examples/s1/palisade.toml"),
            &|_| true,
        )
        .unwrap();
        let hi = c.host_interfaces();
        let br = hi.iter().find(|i| i.name == "bridge0").unwrap();
        assert!(br.groups.iter().any(|g| g == "egress"), "{:?}", br.groups);
        assert!(hi
            .iter()
            .filter(|i| i.name != "bridge0")
            .all(|i| !i.groups.iter().any(|g| g == "egress")));
    }

    const GOOD: &str = r#"
pf = "pf.conf"
[[port]]
name = "eth0"
[[port]]
name = "eth1"
[[port]]
name = "eth2"
[[interface]]
name = "wan"
port = "eth0"
[[interface]]
name = "dmz"
port = "eth1"
[[interface]]
name = "vlan1234"
port = "eth2"
vlan = 1234
addresses = ["192.0.2.1/24", "2001:db8:1::1/64"]
proxy-arp = ["198.51.100.16/28"]
groups = ["lan"]
[[bridge]]
name = "bridge0"
members = ["wan", "dmz"]
addresses = ["203.0.113.2/32"]
[[route]]
to = "203.0.113.1/32"
interface = "bridge0"
[[route]]
to = "default"
via = "203.0.113.1"
"#;

    #[test]
    fn good_config() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.ports.len(), 3);
        assert_eq!(c.ifaces.len(), 4);
        let b = c.iface("bridge0").unwrap();
        assert_eq!(c.ifaces[b].members.len(), 2);
        assert_eq!(c.ifaces[c.iface("wan").unwrap()].bridge, Some(b));
        assert_eq!(c.routes[1].to.bits, 0);
        let h = c.host_interfaces();
        let v = h.iter().find(|i| i.name == "vlan1234").unwrap();
        assert!(v.groups.contains(&"lan".to_string()));
        assert!(v.groups.contains(&"vlan".to_string()));
    }

    fn err(t: &str) -> String {
        parse(t).expect_err("must be refused").to_string()
    }

    #[test]
    fn metrics_listener_address() {
        assert_eq!(parse(GOOD).unwrap().metrics, None, "off by default");
        let c = parse(&format!("metrics = \"[2001:db8::1]:9101\"\n{GOOD}")).unwrap();
        assert_eq!(c.metrics, Some("[2001:db8::1]:9101".parse().unwrap()));
        let e = err(&format!("metrics = \"localhost\"\n{GOOD}"));
        assert!(
            e.starts_with("p.toml:1:") && e.contains("metrics must be ADDRESS:PORT"),
            "{e}"
        );
    }

    /// `mac = "port"` on a port; "derived" is the default; anything else
    /// is refused with its line and the two choices.
    #[test]
    fn a_port_answers_with_its_own_mac_when_told() {
        let c = parse(GOOD).unwrap();
        assert!(c.ports.iter().all(|p| !p.mac_port), "derived by default");
        let c = parse(&GOOD.replace("name = \"eth2\"", "name = \"eth2\"\nmac = \"port\"")).unwrap();
        let eth2 = c.ports.iter().find(|p| p.name == "eth2").unwrap();
        assert!(eth2.mac_port);
        assert_eq!(c.ports.iter().filter(|p| p.mac_port).count(), 1);
        let c =
            parse(&GOOD.replace("name = \"eth2\"", "name = \"eth2\"\nmac = \"derived\"")).unwrap();
        assert!(c.ports.iter().all(|p| !p.mac_port));
        let e = err(&GOOD.replace(
            "name = \"eth2\"",
            "name = \"eth2\"\nmac = \"02:00:00:00:00:01\"",
        ));
        assert!(
            e.starts_with("p.toml:9:") && e.contains("use \"port\"") && e.contains("\"derived\""),
            "{e}"
        );
    }

    #[test]
    fn errors_name_line_and_problem() {
        let e = err(&GOOD.replace("name = \"eth2\"", "name = \"nope2\""));
        assert!(
            e.starts_with("p.toml:8:") && e.contains("no network interface"),
            "{e}"
        );
        let e = err(&GOOD.replace("vlan = 1234", "vlan = 4095"));
        assert!(
            e.starts_with("p.toml:18:") && e.contains("out of range"),
            "{e}"
        );
        let e = err(&GOOD.replace("\"203.0.113.2/32\"", "\"192.0.2.1/32\""));
        assert!(
            e.contains("192.0.2.1 is already on interface 'vlan1234'"),
            "{e}"
        );
        let e = err(&GOOD.replace("interface = \"bridge0\"", "via = \"198.18.0.1\""));
        assert!(e.contains("gateway 198.18.0.1 is not reachable"), "{e}");
        let e = err(&GOOD.replace(
            "to = \"203.0.113.1/32\"\ninterface = \"bridge0\"\n",
            "to = \"198.18.0.0/16\"\ninterface = \"bridge0\"\n",
        ));
        assert!(
            e.contains("gateway 203.0.113.1 is not reachable") && e.contains(":31:"),
            "{e}"
        );
        let e = err(&GOOD.replace("groups = [\"lan\"]", "grups = [\"lan\"]"));
        assert!(e.starts_with("p.toml:21:") && e.contains("grups"), "{e}");
        let e = err(&GOOD.replace(
            "members = [\"wan\", \"dmz\"]",
            "members = [\"wan\", \"lan0\"]",
        ));
        assert!(e.contains("'lan0' is not an interface"), "{e}");
        let e = err(&GOOD
            .replace("port = \"eth2\"", "port = \"eth0\"")
            .replace("vlan = 1234\n", ""));
        assert!(e.contains("already interface 'wan'"), "{e}");
        let e = err(&GOOD.replace("\"192.0.2.1/24\"", "\"192.0.2.1/33\""));
        assert!(e.contains("prefix length"), "{e}");
    }

    const CARP: &str = r#"
pf = "pf.conf"
[[port]]
name = "eth0"
[[port]]
name = "eth1"
[[interface]]
name = "wan"
port = "eth0"
addresses = ["203.0.113.2/24"]
[[interface]]
name = "lan"
port = "eth1"
addresses = ["198.18.0.2/24", "2001:db8:1::2/64"]
[carp-options]
preempt = true
[[carp]]
name = "carp0"
interface = "wan"
vhid = 1
advskew = 100
passphrase = "s3cret"
addresses = ["203.0.113.1/24"]
[[carp]]
name = "carp1"
interface = "lan"
vhid = 2
addresses = ["198.18.0.1/24", "2001:db8:1::1/64"]
groups = ["inside"]
"#;

    #[test]
    fn carp_interfaces_are_read_and_are_interfaces_of_group_carp() {
        let c = parse(CARP).unwrap();
        assert_eq!(c.carp.len(), 2);
        assert_eq!(
            (c.carp[0].vhid, c.carp[0].advbase, c.carp[0].advskew),
            (1, 1, 100)
        );
        assert_eq!(c.ifaces[c.carp[1].parent].name, "lan");
        assert!(c.carp_options.preempt && !c.carp_options.split_brain_repair);
        let hi = c.host_interfaces();
        let carp1 = hi.iter().find(|i| i.name == "carp1").unwrap();
        assert_eq!(carp1.groups, ["carp", "inside"]);
        assert_eq!(carp1.addrs.len(), 2);
        assert_eq!(hi[0].name, "wan", "the other interfaces keep their places");
    }

    #[test]
    fn carp_takes_openbsds_names_carpdev_and_pass() {
        let c = parse(
            &CARP
                .replace(
                    "interface = \"wan\"\nvhid = 1",
                    "carpdev = \"wan\"\nvhid = 1",
                )
                .replace("passphrase = ", "pass = "),
        )
        .unwrap();
        assert_eq!(c.ifaces[c.carp[0].parent].name, "wan");
        assert_eq!(c.carp[0].passphrase, "s3cret");
    }

    #[test]
    fn pfsync_is_read_and_checked_with_its_line() {
        let c = parse(&format!(
            "{CARP}[pfsync]\ninterface = \"wan\"\npeer = \"203.0.113.3\"\nkey = \"k\"\n"
        ))
        .unwrap();
        let p = c.pfsync.unwrap();
        assert_eq!(c.ifaces[p.iface].name, "wan");
        assert_eq!(p.source.to_string(), "203.0.113.2");
        assert_eq!(
            p.peer.map(|a| a.to_string()).as_deref(),
            Some("203.0.113.3")
        );
        assert_eq!((p.maxupd, p.key.as_deref()), (128, Some("k")));
        assert!(!p.defer, "defer is off by default");
        let c = parse(&format!(
            "{CARP}[pfsync]\ninterface = \"wan\"\ndefer = true\n"
        ))
        .unwrap();
        assert!(c.pfsync.unwrap().defer);
        for (tail, want) in [
            ("interface = \"dmz\"\n", "pfsync: 'dmz' is not an interface"),
            (
                "interface = \"eth1\"\n",
                "pfsync: 'eth1' is not an interface ('eth1' is a [[port]]; the interface on it is 'lan')",
            ),
            (
                "interface = \"wan\"\npeer = \"2001:db8::1\"\n",
                "not an IPv4 address",
            ),
            (
                "interface = \"wan\"\nmaxupd = 300\n",
                "maxupd 300: 0 to 255",
            ),
            ("interface = \"wan\"\nkey = \"\"\n", "pfsync key: empty"),
            // The peer's address on another interface (found by a probe):
            // nothing reached it, and nothing said so.
            (
                "interface = \"wan\"\npeer = \"198.18.0.3\"\n",
                "pfsync peer 198.18.0.3: is not on interface 'wan' (203.0.113.2/24, 203.0.113.1/24)",
            ),
            (
                "interface = \"wan\"\npeer = \"203.0.113.2\"\n",
                "pfsync peer 203.0.113.2: is the address of this firewall's interface 'wan'",
            ),
            // The sync link's network or broadcast address (a probe: the
            // node heard nothing and took over with an empty table).
            (
                "interface = \"wan\"\npeer = \"203.0.113.0\"\n",
                "pfsync peer 203.0.113.0: is the network address of a prefix of interface 'wan'",
            ),
            (
                "interface = \"wan\"\npeer = \"203.0.113.255\"\n",
                "pfsync peer 203.0.113.255: is the broadcast address of a prefix of interface 'wan'",
            ),
        ] {
            let e = parse(&format!("{CARP}[pfsync]\n{tail}")).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
            assert!(e.line > 30, "{e}");
        }
    }

    /// `carp = ...` under the advertisements: a CARP interface on this
    /// one, with a link-local address (then the interface needs none of
    /// its own); said otherwise, with the line.
    #[test]
    fn advertisements_that_follow_carp_are_checked() {
        let base = "pf = \"pf.conf\"\n[[port]]\nname = \"eth1\"\n[[port]]\nname = \"eth2\"\n\
                    [[interface]]\nname = \"vms\"\nport = \"eth1\"\naddresses = [\"2001:db8:3::2/64\"]\n\
                    [interface.router-advertisements]\ncarp = \"carp1\"\n\
                    [[interface]]\nname = \"wan\"\nport = \"eth2\"\naddresses = [\"203.0.113.2/24\"]\n";
        let carp = |iface: &str, addrs: &str| {
            format!(
                "[[carp]]\nname = \"carp1\"\ninterface = \"{iface}\"\nvhid = 1\naddresses = [{addrs}]\n"
            )
        };
        let c = parse(&format!(
            "{base}{}",
            carp("vms", "\"fe80::1/64\", \"2001:db8:3::1/64\"")
        ))
        .unwrap();
        assert_eq!(
            c.ifaces[0].ra.as_ref().unwrap().carp,
            Some(("carp1".to_string(), "fe80::1".parse().unwrap()))
        );
        assert!(c
            .warnings()
            .iter()
            .all(|w| !w.contains("has CARP and router advertisements")));
        for (tail, want) in [
            (
                carp("vms", "\"2001:db8:3::1/64\""),
                "router-advertisements carp: CARP interface 'carp1' has no IPv6 link-local address",
            ),
            (
                carp("wan", "\"203.0.113.1/24\", \"fe80::1/64\""),
                "router-advertisements carp: CARP interface 'carp1' is on 'wan', not on 'vms'",
            ),
            (
                String::new(),
                "router-advertisements carp: no CARP interface 'carp1'",
            ),
        ] {
            let e = parse(&format!("{base}{tail}")).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
            assert_eq!(e.line, 11, "{e}");
        }
    }

    #[test]
    fn router_advertisements_are_read_and_checked() {
        let base = "pf = \"pf.conf\"\n[[port]]\nname = \"eth1\"\n[[interface]]\nname = \"vms\"\nport = \"eth1\"\n";
        let c = parse(&format!(
            "{base}addresses = [\"2001:db8:3::1/64\", \"fe80::1/64\"]\n[interface.router-advertisements]\n"
        ))
        .unwrap();
        assert_eq!(
            c.ifaces[0].ra,
            Some(RaConf {
                lifetime: 1800,
                interval: 600,
                dns: Vec::new(),
                mtu: false,
                carp: None,
            }),
            "rad's defaults"
        );
        let c = parse(&format!(
            "{base}addresses = [\"fe80::1/64\"]\nrouter-advertisements = {{ lifetime = 0, interval = 30, dns = [\"2001:db8::53\"], mtu = true }}\n"
        ))
        .unwrap();
        let r = c.ifaces[0].ra.clone().unwrap();
        assert_eq!((r.lifetime, r.interval, r.mtu), (0, 30, true));
        assert_eq!(
            r.dns,
            ["2001:db8::53".parse::<std::net::Ipv6Addr>().unwrap()]
        );
        for (tail, want, line) in [
            (
                "addresses = [\"2001:db8:3::1/64\"]\n[interface.router-advertisements]\n",
                "interface 'vms': router advertisements are sent from a link-local address: add one to its addresses (e.g. \"fe80::1/64\")",
                8,
            ),
            (
                "addresses = [\"fe80::1/64\"]\n[interface.router-advertisements]\nlifetime = 9001\n",
                "lifetime 9001: 0 to 9000 seconds",
                9,
            ),
            (
                "addresses = [\"fe80::1/64\"]\n[interface.router-advertisements]\ninterval = 2\n",
                "interval 2: 4 to 1800 seconds",
                9,
            ),
            (
                "addresses = [\"fe80::1/64\"]\n[interface.router-advertisements]\ndns = [\"192.0.2.53\"]\n",
                "dns '192.0.2.53': not an IPv6 address",
                9,
            ),
            (
                "addresses = [\"fe80::1/64\"]\n[interface.router-advertisements]\nprefix = \"2001:db8::/64\"\n",
                "unknown field `prefix`",
                9,
            ),
            (
                "addresses = [\"fe80::1/64\"]\n[interface.router-advertisements]\nlifetime = 60\n",
                "lifetime 60: less than interval 600",
                9,
            ),
            (
                "addresses = [\"fe80::1/64\"]\n[interface.router-advertisements]\ndns = [\"2001:db8::1\", \"2001:db8::2\", \"2001:db8::3\", \"2001:db8::4\", \"2001:db8::5\", \"2001:db8::6\", \"2001:db8::7\", \"2001:db8::8\", \"2001:db8::9\"]\n",
                "at most 8 servers",
                9,
            ),
        ] {
            let e = parse(&format!("{base}{tail}")).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
            assert_eq!(e.line, line, "{e}");
        }
    }

    #[test]
    fn carp_groups_carp_and_repeats_are_ignored() {
        // OpenBSD's ifconfig shows `groups: carp`; copied into
        // palisade.toml it must not count group carp twice.
        let c = parse(&CARP.replace(
            "groups = [\"inside\"]",
            "groups = [\"carp\", \"inside\", \"inside\"]",
        ))
        .unwrap();
        assert_eq!(c.carp[1].groups, ["inside"]);
        let hi = c.host_interfaces();
        let carp1 = hi.iter().find(|i| i.name == "carp1").unwrap();
        assert_eq!(carp1.groups, ["carp", "inside"]);
    }

    #[test]
    fn group_names_follow_ifconfig() {
        for ok in ["inside", "grp", "a.b_c-d", "fifteen-chars-x", "carp"] {
            assert_eq!(group_name_problem(ok), None, "{ok}");
        }
        for bad in ["", "grp1", "bad group!", "sixteen-chars-xx", "grp/x"] {
            let p = group_name_problem(bad).expect(bad);
            assert!(p.contains("not a usable group name"), "{p}");
        }
        // A huge name is shown by its start and length, not whole.
        let p = group_name_problem(&"g".repeat(5000)).unwrap();
        assert!(p.len() < 200 && p.contains("5000 bytes"), "{p}");
    }

    /// A peer reached through an `interface =` route (an address with a
    /// /32 and the gateway's network routed to the interface, as S1's
    /// failover addresses are set up) is on the link.
    #[test]
    fn a_peer_behind_an_interface_route_is_on_the_link() {
        let text = CARP
            .replacen(
                "addresses = [\"203.0.113.2/24\"]",
                "addresses = [\"203.0.113.2/32\"]",
                1,
            )
            .replacen(
                "addresses = [\"203.0.113.1/24\"]",
                "addresses = [\"203.0.113.1/32\"]",
                1,
            )
            .replacen(
                "passphrase = \"s3cret\"",
                "passphrase = \"s3cret\"\npeer = [\"203.0.113.3\"]",
                1,
            )
            .replacen(
                "[carp-options]",
                "[[route]]\nto = \"203.0.113.0/29\"\ninterface = \"wan\"\n[carp-options]",
                1,
            );
        let c = parse(&text).unwrap();
        assert_eq!(c.carp[0].peers, ["203.0.113.3".parse::<IpAddr>().unwrap()]);
        // Without the route: not on the link.
        let e = parse(&text.replacen(
            "[[route]]\nto = \"203.0.113.0/29\"\ninterface = \"wan\"\n",
            "",
            1,
        ))
        .unwrap_err();
        assert!(e.to_string().contains("is not on interface 'wan'"), "{e}");
    }

    /// A hook without an execute bit is refused before anything starts
    /// (it used to fail at every transition, in the log only).
    #[test]
    fn a_hook_that_cannot_run_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let d = std::env::temp_dir().join(format!("palisade-hookmode-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let hook = d.join("hook.sh");
        std::fs::write(&hook, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o644)).unwrap();
        let text = CARP.replacen(
            "preempt = true",
            &format!("preempt = true\nhook = \"{}\"", hook.display()),
            1,
        );
        let e = parse(&text).unwrap_err();
        assert!(
            e.to_string().contains("not executable (chmod +x it)"),
            "{e}"
        );
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert!(parse(&text).is_ok());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn bad_carp_interfaces_are_refused_with_their_line() {
        let with = |from: &str, to: &str| CARP.replacen(from, to, 1);
        for (text, line, want) in [
            // The same vhid twice on one interface.
            (
                with(
                    "interface = \"lan\"\nvhid = 2",
                    "interface = \"wan\"\nvhid = 1",
                ),
                27,
                "vhid 1 is already used on 'wan' by 'carp0'",
            ),
            (
                with("advskew = 100", "advskew = 255"),
                21,
                "advskew 255 out of range",
            ),
            (
                with(
                    "passphrase = \"s3cret\"",
                    "passphrase = \"01234567890123456789\"",
                ),
                22,
                "the passphrase has 20 bytes: at most 19",
            ),
            (
                with("interface = \"lan\"\nvhid", "interface = \"dmz\"\nvhid"),
                26,
                "carp 'carp1': 'dmz' is not an interface",
            ),
            (with("vhid = 2", "vhid = 0"), 27, "vhid 0 out of range"),
            // The Linux port's name where the interface's belongs.
            (
                with("interface = \"wan\"\nvhid = 1", "interface = \"eth0\"\nvhid = 1"),
                19,
                "carp 'carp0': 'eth0' is not an interface ('eth0' is a [[port]]; the interface on it is 'wan')",
            ),
            // A peer no advertisement goes to: IPv6 on an IPv4-only vhid.
            (
                with(
                    "passphrase = \"s3cret\"",
                    "passphrase = \"s3cret\"\npeer = [\"2001:db8:20::3\"]",
                ),
                23,
                "carp 'carp0': peer 2001:db8:20::3: no virtual address of its family",
            ),
            // carppeer takes one peer: a second of a family was ignored.
            (
                with(
                    "passphrase = \"s3cret\"",
                    "passphrase = \"s3cret\"\npeer = [\"203.0.113.3\",\n  \"203.0.113.4\"]",
                ),
                24,
                "a second IPv4 peer 203.0.113.4 (already 203.0.113.3): one peer per address family",
            ),
            // A peer off the parent's link, or the firewall itself:
            // nothing would reach the other firewall (found by a probe).
            (
                with(
                    "passphrase = \"s3cret\"",
                    "passphrase = \"s3cret\"\npeer = [\"192.0.2.9\"]",
                ),
                23,
                "carp 'carp0': peer 192.0.2.9 is not on interface 'wan' (203.0.113.2/24, 203.0.113.1/24)",
            ),
            (
                with(
                    "passphrase = \"s3cret\"",
                    "passphrase = \"s3cret\"\npeer = [\"203.0.113.2\"]",
                ),
                23,
                "peer 203.0.113.2 is this firewall's own address",
            ),
            // Addresses no interface can have.
            (
                with(
                    "addresses = [\"203.0.113.1/24\"]",
                    "addresses = [\"224.0.0.18/24\"]",
                ),
                23,
                "address 224.0.0.18/24: a multicast address",
            ),
            (
                with(
                    "addresses = [\"203.0.113.1/24\"]",
                    "addresses = [\"203.0.113.255/24\"]",
                ),
                23,
                "the broadcast address of its prefix",
            ),
            (
                with(
                    "addresses = [\"203.0.113.2/24\"]",
                    "addresses = [\"203.0.113.0/24\"]",
                ),
                10,
                "the network address of its prefix",
            ),
            (
                with(
                    "addresses = [\"203.0.113.2/24\"]",
                    "addresses = [\"0.0.0.0/0\"]",
                ),
                10,
                "the unspecified address",
            ),
            (
                with(
                    "addresses = [\"203.0.113.2/24\"]",
                    "addresses = [\"127.0.0.2/8\"]",
                ),
                10,
                "a loopback address belongs to lo",
            ),
            // Group names as ifconfig(8) takes them (and as `carp demote`
            // and `carp group add` take them at run time).
            (
                with("groups = [\"inside\"]", "groups = [\"grp1\"]"),
                29,
                "'grp1' is not a usable group name",
            ),
            (
                with("groups = [\"inside\"]", "groups = [\"bad group!\"]"),
                29,
                "'bad group!' is not a usable group name",
            ),
            (
                with(
                    "addresses = [\"203.0.113.2/24\"]",
                    "addresses = [\"203.0.113.2/24\"]\ngroups = [\"wan0\"]",
                ),
                11,
                "'wan0' is not a usable group name",
            ),
            (
                with(
                    "addresses = [\"203.0.113.1/24\"]",
                    "addresses = [\"203.0.113.2/24\"]",
                ),
                23,
                "already on interface 'wan'",
            ),
            (
                with("preempt = true", "preempt = true\nhook = \"hook.sh\""),
                17,
                "carp hook 'hook.sh': not an absolute path",
            ),
            (
                with(
                    "preempt = true",
                    "preempt = true\nhook = \"/nonexistent/palisade-hook\"",
                ),
                17,
                "no such file",
            ),
            (
                with("preempt = true", "preempt = true\nhook-timeout = 0"),
                17,
                "carp hook-timeout 0: 1 to 3600 seconds",
            ),
            (
                with("preempt = true", "preempt = true\nstartup-delay = -1"),
                17,
                "carp startup-delay -1: 0 to 3600 seconds",
            ),
        ] {
            let e = parse(&text).unwrap_err();
            assert_eq!(e.line, line, "{e}");
            assert!(e.to_string().contains(want), "{e}");
        }
    }
}
