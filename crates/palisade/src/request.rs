//! The control protocol's requests, typed. The CLI builds a `Request` and
//! sends its JSON form (one object per line, `{"cmd": ...}`); the control
//! socket parses what arrives into a `Request`, answering malformed ones
//! with an error that says what was wrong; `ops` answers the typed
//! request. Nothing here touches the daemon's state.

use std::path::PathBuf;

use serde_json::{json, Value};

/// What `show` lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listing {
    Rules,
    States,
    Info,
    Interfaces,
    Tables,
    Anchors,
    Timeouts,
    Limits,
    Memory,
    Osfp,
    Neighbors,
    Fdb,
    Routes,
    Labels,
    Sources,
}

impl Listing {
    pub const ALL: [Listing; 15] = [
        Listing::Rules,
        Listing::States,
        Listing::Info,
        Listing::Interfaces,
        Listing::Tables,
        Listing::Anchors,
        Listing::Timeouts,
        Listing::Limits,
        Listing::Memory,
        Listing::Osfp,
        Listing::Neighbors,
        Listing::Fdb,
        Listing::Routes,
        Listing::Labels,
        Listing::Sources,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Listing::Rules => "rules",
            Listing::States => "states",
            Listing::Info => "info",
            Listing::Interfaces => "interfaces",
            Listing::Tables => "tables",
            Listing::Anchors => "anchors",
            Listing::Timeouts => "timeouts",
            Listing::Limits => "limits",
            Listing::Memory => "memory",
            Listing::Osfp => "osfp",
            Listing::Neighbors => "neighbors",
            Listing::Fdb => "fdb",
            Listing::Routes => "routes",
            Listing::Labels => "labels",
            Listing::Sources => "sources",
        }
    }

    pub fn from_name(s: &str) -> Option<Listing> {
        Listing::ALL.into_iter().find(|l| l.name() == s)
    }

    /// "rules, states, ...", for messages.
    pub fn names() -> String {
        Listing::ALL.map(Listing::name).join(", ")
    }
}

/// What `table NAME` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TableOp {
    Add(Vec<String>),
    Delete(Vec<String>),
    Replace(Vec<String>),
    Show,
    Flush,
    Test(Vec<String>),
    /// Remove entries older than this many seconds.
    Expire(u64),
}

impl TableOp {
    pub fn name(&self) -> &'static str {
        match self {
            TableOp::Add(_) => "add",
            TableOp::Delete(_) => "delete",
            TableOp::Replace(_) => "replace",
            TableOp::Show => "show",
            TableOp::Flush => "flush",
            TableOp::Test(_) => "test",
            TableOp::Expire(_) => "expire",
        }
    }

    /// The addresses the operation names (none for show, flush, expire).
    pub fn addrs(&self) -> &[String] {
        match self {
            TableOp::Add(a) | TableOp::Delete(a) | TableOp::Replace(a) | TableOp::Test(a) => a,
            _ => &[],
        }
    }
}

/// What `anchor NAME` does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnchorOp {
    /// Replace the anchor's rules with `rules` (read from `file`, which
    /// messages name).
    Load {
        rules: String,
        file: String,
        /// Whether the rules may read files (`include`, `table file`,
        /// `load anchor from`): not for ftp-proxy's sessions.
        files: bool,
    },
    Flush,
    Show,
}

/// Which states `state kill` removes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Kill {
    /// One state by its id and creator id (pfctl -k id -k ID[/CREATORID]);
    /// None: this firewall's own, as pfctl takes a bare id.
    Id { id: u64, creator: Option<u32> },
    /// Every state (pfctl -F states).
    All,
    /// The states of the rules with this label (pfctl -k label -k L).
    Label(String),
    /// The source nodes of these sources, not their states (pfctl -K).
    Sources(String),
    /// States opened from `host` (and to `to`), as addresses or networks.
    Hosts { host: String, to: Option<String> },
}

/// What `carp` does (ifconfig(8)'s carp and group settings).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CarpOp {
    /// Every CARP interface (ifconfig carp0), groups and counters.
    Show,
    /// `ifconfig -g GROUP carpdemote N` (positive) or `-carpdemote N`.
    Demote { group: String, delta: i32 },
    /// `ifconfig -g GROUP`: one group's demote count, or all.
    Groups(Option<String>),
    /// `ifconfig carp0 [-]group GROUP`.
    Member {
        iface: String,
        group: String,
        add: bool,
    },
    /// `sysctl net.inet.carp.preempt=0|1`.
    Preempt(bool),
    /// `ifconfig carp0 advbase N advskew N` (either or both).
    Set {
        iface: String,
        advbase: Option<u8>,
        advskew: Option<u8>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// `level`: 0, 1 (-v) or 2 (-vv). `anchor` only for rules.
    Show {
        what: Listing,
        level: u64,
        anchor: String,
    },
    Table {
        name: String,
        op: TableOp,
    },
    Anchor {
        name: String,
        op: AnchorOp,
        level: u64,
    },
    Kill(Kill),
    Reload {
        file: Option<PathBuf>,
    },
    /// Follow the log (one line per logged packet).
    Log,
    Carp(CarpOp),
    /// `sync show`: pfsync's peer, bulk update and counters.
    SyncShow,
    /// `bridge flush` (every learnt address of the bridge) or `bridge
    /// deladdr` (only `mac`).
    BridgeFlush {
        bridge: String,
        mac: Option<[u8; 6]>,
    },
    /// pf's DIOCNATLOOK: a TCP connection as a local proxy sees it (its
    /// peer `src`, its own end `dst`, after `rdr-to` or `divert-to`), and
    /// the answer: the connection as it was on the wire.
    NatLook {
        src: std::net::SocketAddr,
        dst: std::net::SocketAddr,
    },
    /// Does the main ruleset call `anchor` from `nat-anchor` /
    /// `rdr-anchor` (the older syntax)? ftp-proxy asks it per session.
    TranslationAnchor {
        anchor: String,
    },
    /// What a host's TCP SYNs were taken for (`osfp show ADDRESS[:PORT]`):
    /// the connection from that port, or the host's latest.
    Osfp {
        addr: std::net::IpAddr,
        port: Option<u16>,
    },
}

/// How verbose a listing is: -v (1) or -vv (2); `true` counts as -v.
fn level(req: &Value) -> u64 {
    req["verbose"]
        .as_u64()
        .or_else(|| req["verbose"].as_bool().map(u64::from))
        .unwrap_or(0)
}

/// Addresses as given; `what` names the request in the error.
fn strings(v: &Value, what: &str) -> Result<Vec<String>, String> {
    v.as_array()
        .map(|a| a.as_slice())
        .unwrap_or(&[])
        .iter()
        .map(|a| {
            a.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{what}: addresses must be strings"))
        })
        .collect()
}

/// A state id as `show states -vv` prints it (16 hex digits), or
/// pfctl's `ID/CREATORID` (the creator id as `-vv` prints it too).
fn state_id(text: &str) -> Result<(u64, Option<u32>), String> {
    let bad = || {
        format!(
            "state kill: '{}': not a state id (hex, as show states -vv prints it, or ID/CREATORID)",
            shortened(text)
        )
    };
    let hex = |t: &str| u64::from_str_radix(t.trim_start_matches("0x"), 16).map_err(|_| bad());
    match text.split_once('/') {
        None => Ok((hex(text)?, None)),
        Some((id, creator)) => {
            let creator = u32::try_from(hex(creator)?).map_err(|_| bad())?;
            Ok((hex(id)?, Some(creator)))
        }
    }
}

/// A name from a request as an error message quotes it: at most 64
/// characters (a 39 MiB name was echoed back whole).
fn shortened(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s.to_string(),
    }
}

impl Request {
    /// The request a JSON object carries, or what is wrong with it.
    pub fn parse(req: &Value) -> Result<Request, String> {
        if !req.is_object() {
            return Err(
                "bad request: expected a JSON object such as {\"cmd\": \"show\", \"what\": \"info\"}"
                    .into(),
            );
        }
        let level = level(req);
        match req["cmd"].as_str() {
            Some("show") => {
                let what = match (req["what"].as_str(), &req["what"]) {
                    (Some(w), _) => Listing::from_name(w).ok_or_else(|| {
                        format!(
                            "show: unknown listing '{}' (one of {})",
                            shortened(w),
                            Listing::names()
                        )
                    })?,
                    (None, Value::Null) => return Err("show: missing \"what\"".into()),
                    (None, _) => return Err("show: \"what\" must be a string".into()),
                };
                Ok(Request::Show {
                    what,
                    level,
                    anchor: req["anchor"].as_str().unwrap_or("").to_string(),
                })
            }
            Some("table") => {
                let Some(name) = req["name"].as_str().filter(|n| !n.is_empty()) else {
                    return Err("table: missing the table's name".into());
                };
                // As in pf.conf: a name pf could not keep (an anchor's
                // table, ANCHOR/NAME: its anchor's path and its own name).
                let (anchor, own) = name.rsplit_once('/').unwrap_or(("", name));
                palisade_conf::names::Name::Table
                    .check(own)
                    .map_err(|e| e.to_string())?;
                palisade_conf::names::Name::Anchor
                    .check(anchor)
                    .map_err(|e| e.to_string())?;
                let o = req["op"].as_str().unwrap_or("");
                let addrs = strings(&req["addrs"], &format!("table {name} {o}"))?;
                let op = match o {
                    "add" => TableOp::Add(addrs),
                    "delete" => TableOp::Delete(addrs),
                    "replace" => TableOp::Replace(addrs),
                    "show" => TableOp::Show,
                    "flush" => TableOp::Flush,
                    "test" => TableOp::Test(addrs),
                    "expire" => match req["seconds"].as_u64() {
                        Some(s) => TableOp::Expire(s),
                        None => return Err(format!("table {name} expire: missing SECONDS")),
                    },
                    "" => return Err(
                        "table: missing the operation (add, delete, replace, show, flush, test, expire)"
                            .into(),
                    ),
                    o => {
                        return Err(format!(
                            "table: unknown operation '{}' (add, delete, replace, show, flush, test, expire)",
                            shortened(o)
                        ))
                    }
                };
                Ok(Request::Table {
                    name: name.to_string(),
                    op,
                })
            }
            Some("anchor") => {
                let Some(name) = req["name"]
                    .as_str()
                    .map(|n| n.trim_matches('/'))
                    .filter(|n| !n.is_empty())
                else {
                    return Err("anchor: missing the anchor's name".into());
                };
                let op = match req["op"].as_str() {
                    Some("load") => {
                        let Some(rules) = req["rules"].as_str() else {
                            return Err("anchor load: missing the rules".into());
                        };
                        AnchorOp::Load {
                            rules: rules.to_string(),
                            file: req["file"].as_str().unwrap_or("stdin").to_string(),
                            files: req["files"] != false,
                        }
                    }
                    Some("flush") => AnchorOp::Flush,
                    Some("show") => AnchorOp::Show,
                    Some(o) => {
                        return Err(format!(
                            "anchor: unknown operation '{}' (load, flush, show)",
                            shortened(o)
                        ))
                    }
                    None => return Err("anchor: missing the operation (load, flush, show)".into()),
                };
                if !matches!(op, AnchorOp::Show) && palisade_conf::parser::reserved_anchor(name) {
                    return Err(
                        "anchor names beginning with '_' cannot be modified from the command line"
                            .into(),
                    );
                }
                Ok(Request::Anchor {
                    name: name.to_string(),
                    op,
                    level,
                })
            }
            Some("kill") => {
                if let Some(id) = req["id"].as_str() {
                    state_id(id).map(|(id, creator)| Request::Kill(Kill::Id { id, creator }))
                } else if req["all"] == true {
                    Ok(Request::Kill(Kill::All))
                } else if let Some(l) = req["label"].as_str() {
                    Ok(Request::Kill(Kill::Label(l.to_string())))
                } else if let Some(n) = req["source_nodes"].as_str() {
                    Ok(Request::Kill(Kill::Sources(n.to_string())))
                } else if let Some(h) = req["host"].as_str() {
                    Ok(Request::Kill(Kill::Hosts {
                        host: h.to_string(),
                        to: req["to"].as_str().map(str::to_string),
                    }))
                } else {
                    Err(
                        "state kill: say which: --host ADDR[/BITS] [--to ADDR[/BITS]], --id ID[/CREATORID], --label LABEL or --source-nodes ADDR[/BITS]"
                            .into(),
                    )
                }
            }
            Some("reload") => Ok(Request::Reload {
                file: req["file"].as_str().map(PathBuf::from),
            }),
            Some("log") => Ok(Request::Log),
            Some("sync") => Ok(Request::SyncShow),
            Some("bridge") => {
                let bridge = req["bridge"]
                    .as_str()
                    .filter(|b| !b.is_empty())
                    .ok_or("bridge: no \"bridge\"")?
                    .to_string();
                let mac = match &req["mac"] {
                    Value::Null => None,
                    m => Some(
                        m.as_str()
                            .and_then(palisade_net::config::parse_mac)
                            .ok_or_else(|| {
                                format!(
                                    "'{}' is not a MAC address",
                                    shortened(m.as_str().unwrap_or("?"))
                                )
                            })?,
                    ),
                };
                Ok(Request::BridgeFlush { bridge, mac })
            }
            Some("osfp") => {
                let addr = req["addr"]
                    .as_str()
                    .and_then(|a| a.parse().ok())
                    .ok_or("osfp: \"addr\" must be an IPv4 or IPv6 address")?;
                let port = match &req["port"] {
                    Value::Null => None,
                    p => Some(
                        p.as_u64()
                            .and_then(|p| u16::try_from(p).ok())
                            .ok_or("osfp: \"port\" must be a port number")?,
                    ),
                };
                Ok(Request::Osfp { addr, port })
            }
            Some("translation-anchor") => Ok(Request::TranslationAnchor {
                anchor: req["anchor"]
                    .as_str()
                    .filter(|a| !a.is_empty())
                    .ok_or("translation-anchor: no \"anchor\"")?
                    .to_string(),
            }),
            Some("natlook") => {
                let addr = |k: &str| {
                    req[k]
                        .as_str()
                        .and_then(|s| s.parse::<std::net::SocketAddr>().ok())
                        .ok_or_else(|| format!("natlook: \"{k}\" must be ADDRESS:PORT ([v6]:PORT)"))
                };
                Ok(Request::NatLook {
                    src: addr("src")?,
                    dst: addr("dst")?,
                })
            }
            Some("carp") => {
                let group = |what: &str| {
                    req["group"]
                        .as_str()
                        .filter(|g| !g.is_empty())
                        .map(str::to_string)
                        .ok_or_else(|| format!("carp {what}: missing the group"))
                };
                let op = match req["op"].as_str() {
                    Some("show") => CarpOp::Show,
                    Some(o @ ("demote" | "undemote")) => {
                        let n = match &req["count"] {
                            Value::Null => 1,
                            v => v
                                .as_u64()
                                .filter(|n| *n <= 255)
                                .ok_or_else(|| format!("carp {o}: the count must be 0 to 255"))?,
                        } as i32;
                        CarpOp::Demote {
                            group: group(o)?,
                            delta: if o == "demote" { n } else { -n },
                        }
                    }
                    Some("groups") => CarpOp::Groups(req["group"].as_str().map(str::to_string)),
                    Some(o @ ("group-add" | "group-delete")) => CarpOp::Member {
                        iface: req["iface"]
                            .as_str()
                            .filter(|i| !i.is_empty())
                            .ok_or_else(|| format!("carp {o}: missing the interface"))?
                            .to_string(),
                        group: group(o)?,
                        add: o == "group-add",
                    },
                    Some("preempt") => match req["on"].as_bool() {
                        Some(on) => CarpOp::Preempt(on),
                        None => return Err("carp preempt: say on or off".into()),
                    },
                    Some("set") => {
                        let val = |k: &str| -> Result<Option<u8>, String> {
                            match &req[k] {
                                Value::Null => Ok(None),
                                v => v
                                    .as_u64()
                                    .and_then(|n| u8::try_from(n).ok())
                                    .map(Some)
                                    .ok_or_else(|| format!("carp set: {k} must be 0 to 255")),
                            }
                        };
                        CarpOp::Set {
                            iface: req["iface"]
                                .as_str()
                                .filter(|i| !i.is_empty())
                                .ok_or("carp set: missing the interface")?
                                .to_string(),
                            advbase: val("advbase")?,
                            advskew: val("advskew")?,
                        }
                    }
                    Some(o) => {
                        return Err(format!(
                            "carp: unknown operation '{}' (show, demote, undemote, groups, group-add, group-delete, set, preempt)",
                            shortened(o)
                        ))
                    }
                    None => return Err("carp: missing the operation".into()),
                };
                Ok(Request::Carp(op))
            }
            Some(c) => Err(format!(
                "unknown command '{}' (one of show, table, anchor, kill, reload, log, carp, sync)",
                shortened(c)
            )),
            None => Err("bad request: missing \"cmd\"".into()),
        }
    }

    /// The JSON object the control socket reads.
    pub fn to_json(&self) -> Value {
        match self {
            Request::Show {
                what,
                level,
                anchor,
            } => {
                json!({"cmd": "show", "what": what.name(), "verbose": level, "anchor": anchor})
            }
            Request::Table { name, op } => {
                let mut v = json!({"cmd": "table", "name": name, "op": op.name()});
                match op {
                    TableOp::Expire(s) => v["seconds"] = json!(s),
                    op => v["addrs"] = json!(op.addrs()),
                }
                v
            }
            Request::Anchor { name, op, level } => {
                let o = match op {
                    AnchorOp::Load { .. } => "load",
                    AnchorOp::Flush => "flush",
                    AnchorOp::Show => "show",
                };
                let mut v = json!({"cmd": "anchor", "name": name, "op": o, "verbose": level});
                if let AnchorOp::Load { rules, file, files } = op {
                    v["rules"] = json!(rules);
                    v["file"] = json!(file);
                    if !files {
                        v["files"] = json!(false);
                    }
                }
                v
            }
            Request::Kill(Kill::Id { id, creator }) => json!({"cmd": "kill", "id": match creator {
                Some(c) => format!("{id:016x}/{c:08x}"),
                None => format!("{id:016x}"),
            }}),
            Request::Kill(Kill::All) => json!({"cmd": "kill", "all": true}),
            Request::Kill(Kill::Label(l)) => json!({"cmd": "kill", "label": l}),
            Request::Kill(Kill::Sources(n)) => json!({"cmd": "kill", "source_nodes": n}),
            Request::Kill(Kill::Hosts { host, to }) => {
                json!({"cmd": "kill", "host": host, "to": to})
            }
            Request::Reload { file } => json!({"cmd": "reload", "file": file}),
            Request::Log => json!({"cmd": "log"}),
            Request::SyncShow => json!({"cmd": "sync", "op": "show"}),
            Request::BridgeFlush { bridge, mac } => json!({
                "cmd": "bridge",
                "bridge": bridge,
                "mac": mac.map(|m| palisade_wire::ethernet::mac_string(&m)),
            }),
            Request::Osfp { addr, port } => {
                json!({"cmd": "osfp", "addr": addr.to_string(), "port": port})
            }
            Request::NatLook { src, dst } => {
                json!({"cmd": "natlook", "src": src.to_string(), "dst": dst.to_string()})
            }
            Request::TranslationAnchor { anchor } => {
                json!({"cmd": "translation-anchor", "anchor": anchor})
            }
            Request::Carp(CarpOp::Show) => json!({"cmd": "carp", "op": "show"}),
            Request::Carp(CarpOp::Demote { group, delta }) => json!({
                "cmd": "carp",
                "op": if *delta >= 0 { "demote" } else { "undemote" },
                "group": group,
                "count": delta.unsigned_abs(),
            }),
            Request::Carp(CarpOp::Groups(g)) => json!({"cmd": "carp", "op": "groups", "group": g}),
            Request::Carp(CarpOp::Preempt(on)) => json!({"cmd": "carp", "op": "preempt", "on": on}),
            Request::Carp(CarpOp::Member { iface, group, add }) => json!({
                "cmd": "carp",
                "op": if *add { "group-add" } else { "group-delete" },
                "iface": iface,
                "group": group,
            }),
            Request::Carp(CarpOp::Set {
                iface,
                advbase,
                advskew,
            }) => json!({
                "cmd": "carp",
                "op": "set",
                "iface": iface,
                "advbase": advbase,
                "advskew": advskew,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_request_reads_back_from_its_json() {
        let all = [
            Request::Show {
                what: Listing::States,
                level: 2,
                anchor: String::new(),
            },
            Request::Show {
                what: Listing::Rules,
                level: 0,
                anchor: "ftp-proxy/*".into(),
            },
            Request::Table {
                name: "bad".into(),
                op: TableOp::Add(vec!["192.0.2.1".into(), "2001:db8::/64".into()]),
            },
            Request::Table {
                name: "bad".into(),
                op: TableOp::Expire(3600),
            },
            Request::Table {
                name: "bad".into(),
                op: TableOp::Flush,
            },
            Request::Anchor {
                name: "a/b".into(),
                op: AnchorOp::Load {
                    rules: "pass\n".into(),
                    file: "x.conf".into(),
                    files: true,
                },
                level: 0,
            },
            Request::Anchor {
                name: "ftp-proxy/1.2".into(),
                op: AnchorOp::Load {
                    rules: "pass\n".into(),
                    file: "ftp-proxy".into(),
                    files: false,
                },
                level: 0,
            },
            Request::Anchor {
                name: "a".into(),
                op: AnchorOp::Show,
                level: 1,
            },
            Request::Kill(Kill::Id {
                id: 0x0a00_0000_0000_0001,
                creator: None,
            }),
            Request::Kill(Kill::Id {
                id: 0x5a00_0000_0000_0007,
                creator: Some(0x1234_abcd),
            }),
            Request::Kill(Kill::All),
            Request::Kill(Kill::Label("ssh".into())),
            Request::Kill(Kill::Sources("198.51.100.0/24".into())),
            Request::Kill(Kill::Hosts {
                host: "198.18.0.0/15".into(),
                to: Some("192.0.2.1".into()),
            }),
            Request::Reload {
                file: Some("/etc/pf.conf".into()),
            },
            Request::Reload { file: None },
            Request::Log,
            Request::Carp(CarpOp::Show),
            Request::SyncShow,
            Request::BridgeFlush {
                bridge: "bridge0".into(),
                mac: None,
            },
            Request::BridgeFlush {
                bridge: "bridge0".into(),
                mac: Some([2, 0, 0, 0, 1, 1]),
            },
            Request::Osfp {
                addr: "2001:db8::7".parse().unwrap(),
                port: Some(40123),
            },
            Request::Osfp {
                addr: "192.0.2.7".parse().unwrap(),
                port: None,
            },
            Request::NatLook {
                src: "203.0.113.50:40000".parse().unwrap(),
                dst: "[2001:db8::1]:8021".parse().unwrap(),
            },
            Request::TranslationAnchor {
                anchor: "ftp-proxy/*".into(),
            },
            Request::Carp(CarpOp::Demote {
                group: "carp".into(),
                delta: 128,
            }),
            Request::Carp(CarpOp::Demote {
                group: "uplinks".into(),
                delta: -3,
            }),
            Request::Carp(CarpOp::Groups(None)),
            Request::Carp(CarpOp::Groups(Some("carp".into()))),
            Request::Carp(CarpOp::Member {
                iface: "carp0".into(),
                group: "uplinks".into(),
                add: true,
            }),
            Request::Carp(CarpOp::Member {
                iface: "carp0".into(),
                group: "uplinks".into(),
                add: false,
            }),
            Request::Carp(CarpOp::Preempt(false)),
            Request::Carp(CarpOp::Set {
                iface: "carp0".into(),
                advbase: None,
                advskew: Some(100),
            }),
            Request::Carp(CarpOp::Set {
                iface: "carp1".into(),
                advbase: Some(0),
                advskew: Some(0),
            }),
        ];
        for r in all {
            assert_eq!(Request::parse(&r.to_json()), Ok(r.clone()), "{r:?}");
        }
    }

    /// An anchor's table is named ANCHOR/NAME: the 31 characters are
    /// its own name's, not the path's.
    #[test]
    fn an_anchors_table_is_named_with_its_path() {
        let long =
            json!({"cmd": "table", "name": "blocklists/spamhaus/drop_networks_v4", "op": "show"});
        assert!(Request::parse(&long).is_ok());
        let too =
            json!({"cmd": "table", "name": format!("blocklists/{}", "t".repeat(32)), "op": "show"});
        let e = Request::parse(&too).expect_err("refused");
        assert!(e.contains("table name too long"), "{e}");
    }

    #[test]
    fn malformed_requests_say_what_is_wrong() {
        for (v, want) in [
            (json!([1]), "expected a JSON object"),
            (json!({}), "missing \"cmd\""),
            (json!({"cmd": "dance"}), "unknown command 'dance'"),
            (json!({"cmd": "show", "what": "x"}), "unknown listing 'x'"),
            (json!({"cmd": "show"}), "missing \"what\""),
            (json!({"cmd": "show", "what": 5}), "\"what\" must be a string"),
            (
                json!({"cmd": "show", "what": "y".repeat(100_000)}),
                "unknown listing 'yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy...'",
            ),
            (
                json!({"cmd": "table", "name": "t", "op": "add", "addrs": [1]}),
                "addresses must be strings",
            ),
            (
                json!({"cmd": "table", "name": "t", "op": "expire"}),
                "missing SECONDS",
            ),
            (
                json!({"cmd": "anchor", "name": "/", "op": "show"}),
                "missing the anchor's name",
            ),
            (
                json!({"cmd": "anchor", "name": "_x", "op": "flush"}),
                "cannot be modified from the command line",
            ),
            (
                json!({"cmd": "anchor", "name": "a/_b", "op": "load", "rules": "pass\n"}),
                "cannot be modified from the command line",
            ),
            (
                json!({"cmd": "table", "name": "t".repeat(32), "op": "show"}),
                "table name too long, max 31 chars",
            ),
            (json!({"cmd": "kill", "id": "zz"}), "not a state id"),
            (json!({"cmd": "kill"}), "say which"),
            (json!({"cmd": "carp", "op": "demote"}), "missing the group"),
            (
                json!({"cmd": "carp", "op": "demote", "group": "carp", "count": 256}),
                "0 to 255",
            ),
            (
                json!({"cmd": "carp", "op": "fly"}),
                "unknown operation 'fly'",
            ),
            (
                json!({"cmd": "carp", "op": "group-add", "group": "g"}),
                "missing the interface",
            ),
        ] {
            let e = Request::parse(&v).unwrap_err();
            assert!(e.contains(want), "{v}: {e}");
        }
    }
}
