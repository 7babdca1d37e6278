//! What the daemon shows, typed. A snapshot is taken under the data
//! plane's lock, in one go; `ops` renders it as text (pfctl's layout) and
//! JSON for the control socket, `metrics` as Prometheus text. All three
//! read the same structures, so they cannot disagree, and none of them
//! goes through another's output.

use std::collections::BTreeMap;

use palisade_conf::ir::Direction;
use palisade_filter::packet::RuleListing;
use palisade_filter::Reason;
use palisade_net::dataplane::DropReason;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;

use crate::daemon::Shared;

/// Named counts, kept in their order (pf's, the data plane's), shown as
/// a JSON object.
#[derive(Clone, Debug, Default)]
pub struct Counts(pub Vec<(&'static str, u64)>);

impl Serialize for Counts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// `show info`: pf's status and counters, and the data plane's.
#[derive(Clone, Debug, Serialize)]
pub struct Info {
    pub status: &'static str,
    pub uptime_s: u64,
    pub states: usize,
    pub states_limit: u32,
    /// TCP states whose responder has not answered (pf's half-open).
    pub states_halfopen: usize,
    pub state_searches: u64,
    pub state_inserts: u64,
    pub state_removals: u64,
    pub packets: u64,
    pub passed: u64,
    pub blocked: u64,
    pub fragments_held: usize,
    pub fragment_bytes: usize,
    pub fragments_expired: u64,
    pub fragments_evicted: u64,
    pub fragments_bad: u64,
    /// pf's reasons in pf's order.
    pub reasons: Counts,
    /// Data-plane events (frames, forwarding, answers).
    pub dataplane: Counts,
    /// Data-plane drops by reason.
    pub dataplane_drops: Counts,
    /// The in-kernel fast path (`fastpath = true`): flows it has now,
    /// packets it forwarded, packets it gave back and why.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fastpath: Option<Counts>,
    /// `set syncookies`: whether cookies answer SYNs now, and pf's
    /// counters (synfloods detected, cookies sent, cookies validated).
    pub syncookies_active: bool,
    pub syncookies: Counts,
}

pub fn info(sh: &Shared) -> Info {
    let mut dp = sh.dp();
    let fastpath = dp.fastpath_status().map(|(flows, c)| {
        Counts(vec![
            ("flows", flows as u64),
            ("taken", c.taken),
            ("taken_super", c.taken_super),
            ("back_flags", c.back_flags),
            ("back_window", c.back_window),
            ("back_slow", c.back_slow),
            ("back_stale", c.back_stale),
            ("back_fence", c.back_fence),
            ("fence_forced", c.fence_forced),
            ("dropped", c.dropped),
        ])
    });
    let f = &dp.filter.counters;
    let c = &dp.counters;
    let frags = &dp.filter.frags;
    Info {
        status: "enabled",
        uptime_s: sh.started.elapsed().as_secs(),
        states: dp.filter.states.len(),
        states_limit: dp.filter.states.limit,
        states_halfopen: dp.filter.states.halfopen(),
        state_searches: f.state_searches,
        state_inserts: f.state_inserts,
        state_removals: dp.filter.states.removals,
        packets: f.packets,
        passed: f.passed,
        blocked: f.blocked,
        fragments_held: frags.held(),
        fragment_bytes: frags.held_bytes(),
        fragments_expired: frags.stats.expired,
        fragments_evicted: frags.stats.evicted,
        fragments_bad: frags.stats.bad,
        reasons: Counts(
            Reason::ALL
                .iter()
                .map(|r| (r.name(), f.reasons[*r as usize]))
                .collect(),
        ),
        dataplane: Counts(c.named().to_vec()),
        dataplane_drops: Counts(
            DropReason::ALL
                .iter()
                .map(|r| (r.name(), c.drops.get(*r)))
                .collect(),
        ),
        fastpath,
        syncookies_active: dp.filter.cookies.is_active(),
        syncookies: Counts(vec![
            ("synfloods detected", dp.filter.cookies.floods),
            ("syncookies sent", dp.filter.cookies.sent),
            ("syncookies validated", dp.filter.cookies.valid),
        ]),
    }
}

/// Packets and bytes.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Traffic {
    pub packets: u64,
    pub bytes: u64,
}

/// One interface as pf.conf names it.
#[derive(Clone, Debug, Serialize)]
pub struct Interface {
    pub name: String,
    pub port: Option<String>,
    pub vlan: Option<u16>,
    /// The bridge it is a member of (index), if any.
    pub bridge: Option<usize>,
    pub members: Vec<String>,
    pub addresses: Vec<String>,
    /// `proxy-arp`: what it answers ARP and NDP for, for others.
    pub proxy: Vec<String>,
    pub groups: Vec<String>,
    pub mac: Option<String>,
    pub packets_in: u64,
    pub packets_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub errors: u64,
    /// `inet_in_pass`, `inet6_out_block`, ...
    pub counters: BTreeMap<String, Traffic>,
}

/// The address families, directions and actions of the per-interface
/// counters, with their indices.
pub const FAMILIES: [(&str, usize); 2] = [("inet", 0), ("inet6", 1)];
pub const DIRS: [(&str, usize); 2] = [("in", 0), ("out", 1)];
pub const ACTIONS: [(&str, usize); 2] = [("pass", 0), ("block", 1)];

pub fn interfaces(sh: &Shared) -> Vec<Interface> {
    let dp = sh.dp();
    let cfg = &dp.cfg;
    // The groups as pf.conf sees them (egress, vlan and bridge included).
    let host = cfg.host_interfaces();
    let mut v = Vec::new();
    for (ix, i) in cfg.ifaces.iter().enumerate() {
        let st = dp.if_stats.get(ix).cloned().unwrap_or_default();
        let mut counters = BTreeMap::new();
        for (fam, a) in FAMILIES {
            for (dir, d) in DIRS {
                for (act, b) in ACTIONS {
                    counters.insert(
                        format!("{fam}_{dir}_{act}"),
                        Traffic {
                            packets: st.packets[a][d][b],
                            bytes: st.bytes[a][d][b],
                        },
                    );
                }
            }
        }
        let sum = |what: &[[[u64; 2]; 2]; 2], d: usize| -> u64 {
            (0..2).map(|a| what[a][d][0] + what[a][d][1]).sum()
        };
        v.push(Interface {
            name: i.name.clone(),
            port: i
                .port
                .and_then(|p| cfg.ports.get(p))
                .map(|p| p.name.clone()),
            vlan: i.vlan,
            bridge: i.bridge,
            members: i
                .members
                .iter()
                .filter_map(|m| cfg.ifaces.get(*m))
                .map(|m| m.name.clone())
                .collect(),
            addresses: i
                .addresses
                .iter()
                .map(|p| format!("{}/{}", p.ip, p.bits))
                .collect(),
            proxy: i
                .proxy
                .iter()
                .map(|p| format!("{}/{}", p.ip, p.bits))
                .collect(),
            groups: host.get(ix).map(|h| h.groups.clone()).unwrap_or_default(),
            mac: dp.mac(ix).map(|m| {
                m.iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":")
            }),
            packets_in: sum(&st.packets, 0),
            packets_out: sum(&st.packets, 1),
            bytes_in: sum(&st.bytes, 0),
            bytes_out: sum(&st.bytes, 1),
            errors: st.errors,
            counters,
        });
    }
    v
}

/// A rule's counters, with the anchor it is in (inline anchors as `@N`
/// under their parent).
#[derive(Clone, Debug)]
pub struct RuleCounts {
    pub anchor: String,
    pub nr: u32,
    pub text: String,
    pub evaluations: u64,
    pub packets: u64,
    pub bytes: u64,
    pub states: u64,
    pub state_creations: u64,
    pub label: Option<String>,
    pub packets_in: u64,
    pub bytes_in: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
}

/// Every rule of the main ruleset and of the loaded anchors, flattened.
pub fn rules(sh: &Shared) -> Vec<RuleCounts> {
    fn flatten(anchor: &str, rules: &[RuleListing], out: &mut Vec<RuleCounts>) {
        for r in rules {
            let (evaluations, packets, bytes, states, state_creations) = r.stats.snapshot();
            out.push(RuleCounts {
                anchor: anchor.to_string(),
                nr: r.nr,
                text: r.text.clone(),
                evaluations,
                packets,
                bytes,
                states,
                state_creations,
                label: r.label.clone(),
                packets_in: r.stats.packets(Direction::In),
                bytes_in: r.stats.bytes(Direction::In),
                packets_out: r.stats.packets(Direction::Out),
                bytes_out: r.stats.bytes(Direction::Out),
            });
            if !r.inline.is_empty() {
                let name = if anchor.is_empty() {
                    format!("@{}", r.nr)
                } else {
                    format!("{anchor}/@{}", r.nr)
                };
                flatten(&name, &r.inline, out);
            }
        }
    }
    // The ruleset is taken out of the lock: listings read its counters,
    // which the workers keep updating.
    let engine = sh.dp().filter.engine_arc();
    let mut out = Vec::new();
    if let Some(main) = engine.listing("") {
        flatten("", &main, &mut out);
    }
    for a in engine.anchor_names() {
        if let Some(l) = engine.listing(&a) {
            flatten(&a, &l, &mut out);
        }
    }
    out
}
