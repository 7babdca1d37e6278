//! Between the filter's portable state records (`palisade-filter`'s
//! `StateRecord`, `StateUpdate`) and pfsync's wire messages.
//!
//! Mapping, field by field (OpenBSD's meaning on the right):
//!
//! - keys: the wire key and the stack key, each as an inbound packet
//!   carries it (`addr[0]`, `port[0]` its source) — pf's own orientation;
//!   the af is OpenBSD's number (AF_INET6 is 24);
//! - interface: the bound interface's name (a logical name from the
//!   configuration, so two firewalls whose kernel names differ agree), or
//!   `all` for a floating state, as OpenBSD names its catch-all interface;
//! - peers: sequence numbers, window, state level; the window scale with
//!   pf's "offered" bit (0x80); the scrub part carries the `reassemble tcp`
//!   memory (highest TTL, timestamp offset, flag VALID);
//! - rule: the number of the creating rule in the main ruleset (`NO_RULE`
//!   for the default rule and for rules inside anchors, whose numbers mean
//!   nothing on another ruleset);
//! - timeout: pf's PFTM_* numbering, which `Timeout::ALL` follows;
//! - creation and expire: seconds of age and seconds left;
//! - state_flags: ALLOWOPTS, SLOPPY, NODF, SETTOS, RANDOMID, SCRUB_TCP;
//!   log: PF_LOG, PF_LOG_ALL.
//!
//! Not carried (OpenBSD has no field for them): the route-to interface,
//! the OS fingerprint, `keep state` versus `modulate state` (a state with
//! a sequence modulator is taken as modulated), a synproxy handshake in
//! progress.

use std::net::IpAddr;

use palisade_conf::ir::{Direction, KeepState, RouteKind, Timeout};
use palisade_filter::packet::{RuleRef, ScrubActions};
use palisade_filter::state::{FlowKey, Peer, StateId, StateRecord, StateRoute, StateUpdate};

use crate::wire::{
    IfName, StateKey, StateMsg, StatePeer, StateRef, StateScrub, UpdCMsg, AF_INET, AF_INET6,
    NO_RULE,
};

pub const PFSTATE_ALLOWOPTS: u16 = 0x0001;
pub const PFSTATE_SLOPPY: u16 = 0x0002;
/// `no-sync` (pfsync does not send such states; the state file carries
/// the mark).
pub const PFSTATE_NOSYNC: u16 = 0x0008;
pub const PFSTATE_NODF: u16 = 0x0020;
pub const PFSTATE_SETTOS: u16 = 0x0040;
pub const PFSTATE_RANDOMID: u16 = 0x0080;
pub const PFSTATE_SCRUB_TCP: u16 = 0x0100;
pub const PF_LOG: u8 = 0x01;
pub const PF_LOG_ALL: u8 = 0x02;
const PF_IN: u8 = 1;
const PF_OUT: u8 = 2;
const PF_ROUTETO: u8 = 1;
const PF_DUPTO: u8 = 2;
const PF_REPLYTO: u8 = 3;
/// pf's flag in `wscale`: the option was offered.
const WSCALE_FLAG: u8 = 0x80;
const WSCALE_MASK: u8 = 0x0f;
const SCRUB_FLAG_VALID: u8 = 0x01;
/// OpenBSD's name for "any interface" (a floating state).
pub const FLOATING: &str = "all";

/// Why a message cannot become a state here.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("state {0:016x}: address family {1} (neither AF_INET nor AF_INET6)")]
    Family(u64, u8),
    #[error("state {0:016x}: direction {1}")]
    Direction(u64, u8),
    #[error("state {0:016x}: timeout {1} is not one of pf's")]
    Timeout(u64, u8),
    #[error("state {0:016x}: interface name is not UTF-8")]
    IfName(u64),
}

fn af_of(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() {
        AF_INET
    } else {
        AF_INET6
    }
}

fn key_msg(k: &FlowKey) -> StateKey {
    StateKey {
        addr: [k.src, k.dst],
        port: [k.sport, k.dport],
        rdomain: 0,
        af: af_of(&k.src),
    }
}

fn key_of(k: &StateKey, proto: u8) -> FlowKey {
    FlowKey {
        proto,
        src: k.addr[0],
        dst: k.addr[1],
        sport: k.port[0],
        dport: k.port[1],
    }
}

fn peer_msg(p: &Peer, seqdiff: u32, ttl: u8, ts: u32, scrubbed: bool) -> StatePeer {
    StatePeer {
        scrub: if scrubbed {
            StateScrub {
                flags: 0,
                ttl,
                scrub_flag: SCRUB_FLAG_VALID,
                ts_mod: ts,
            }
        } else {
            StateScrub::default()
        },
        seqlo: p.seqlo,
        seqhi: p.seqhi,
        seqdiff,
        max_win: p.max_win.min(u16::MAX as u32) as u16,
        mss: 0,
        state: p.state,
        wscale: p.wscale.map_or(0, |w| WSCALE_FLAG | (w & WSCALE_MASK)),
    }
}

fn peer_of(p: &StatePeer) -> Peer {
    Peer {
        seqlo: p.seqlo,
        seqhi: p.seqhi,
        max_win: p.max_win as u32,
        wscale: (p.wscale & WSCALE_FLAG != 0).then_some(p.wscale & WSCALE_MASK),
        state: p.state,
    }
}

fn timeout_of(id: u64, t: u8) -> Result<Timeout, ConvertError> {
    Timeout::ALL
        .get(t as usize)
        .copied()
        .ok_or(ConvertError::Timeout(id, t))
}

fn timeout_num(t: Timeout) -> u8 {
    Timeout::ALL.iter().position(|x| *x == t).unwrap_or(0) as u8
}

/// A state record as pfsync sends it (INS, UPD, a bulk update).
pub fn to_msg(r: &StateRecord) -> StateMsg {
    let scrubbed = r.scrub.reassemble_tcp;
    let mut flags = 0;
    for (on, f) in [
        (r.allow_opts, PFSTATE_ALLOWOPTS),
        (r.sloppy, PFSTATE_SLOPPY),
        (r.no_sync, PFSTATE_NOSYNC),
        (r.scrub.no_df, PFSTATE_NODF),
        (r.scrub.tos.is_some(), PFSTATE_SETTOS),
        (r.scrub.random_id, PFSTATE_RANDOMID),
        (scrubbed, PFSTATE_SCRUB_TCP),
    ] {
        if on {
            flags |= f;
        }
    }
    let (rt, rt_addr) = match &r.route {
        Some(StateRoute { kind, hop, .. }) => (
            match kind {
                RouteKind::RouteTo => PF_ROUTETO,
                RouteKind::DupTo => PF_DUPTO,
                RouteKind::ReplyTo => PF_REPLYTO,
            },
            *hop,
        ),
        None => (0, unspecified(&r.wire.src)),
    };
    let rule = match &r.rule {
        Some(RuleRef { anchor, nr }) if anchor.is_empty() => *nr,
        _ => NO_RULE,
    };
    StateMsg {
        id: r.id,
        creatorid: r.creator,
        ifname: IfName::new(if r.bound { &r.iface } else { FLOATING }).unwrap_or_default(),
        key: [key_msg(&r.wire), key_msg(&r.stack)],
        src: peer_msg(&r.src, r.seqdiff, r.ttl_max[0], r.ts_offset[0], scrubbed),
        dst: peer_msg(
            &r.dst,
            r.seqdiff_dst,
            r.ttl_max[1],
            r.ts_offset[1],
            scrubbed,
        ),
        rt_addr,
        rule,
        anchor: NO_RULE,
        nat_rule: NO_RULE,
        creation: (r.age_ms / 1000).min(u32::MAX as u64) as u32,
        expire: r.expire_ms.div_ceil(1000).min(u32::MAX as u64) as u32,
        packets: r.packets,
        bytes: r.bytes,
        rtableid: [0, 0],
        max_mss: r.scrub.max_mss.unwrap_or(0),
        af: af_of(&r.wire.src),
        proto: r.wire.proto,
        direction: match r.dir {
            Direction::In => PF_IN,
            Direction::Out => PF_OUT,
        },
        log: if r.log_all { PF_LOG | PF_LOG_ALL } else { 0 },
        rt,
        timeout: timeout_num(r.timeout),
        sync_flags: 0,
        updates: 0,
        min_ttl: r.scrub.min_ttl.unwrap_or(0),
        set_tos: r.scrub.tos.unwrap_or(0),
        state_flags: flags,
        set_prio: [0, 0],
    }
}

fn unspecified(like: &IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

/// A state from a peer, as the filter imports it.
pub fn from_msg(m: &StateMsg) -> Result<StateRecord, ConvertError> {
    if m.af != AF_INET && m.af != AF_INET6 {
        return Err(ConvertError::Family(m.id, m.af));
    }
    let dir = match m.direction {
        PF_IN => Direction::In,
        PF_OUT => Direction::Out,
        d => return Err(ConvertError::Direction(m.id, d)),
    };
    let timeout = timeout_of(m.id, m.timeout)?;
    let ifname = std::str::from_utf8(m.ifname.as_bytes())
        .map_err(|_| ConvertError::IfName(m.id))?
        .to_string();
    let bound = !ifname.is_empty() && ifname != FLOATING;
    let scrubbed = m.state_flags & PFSTATE_SCRUB_TCP != 0;
    let route = match m.rt {
        PF_ROUTETO | PF_DUPTO | PF_REPLYTO => Some(StateRoute {
            kind: match m.rt {
                PF_ROUTETO => RouteKind::RouteTo,
                PF_DUPTO => RouteKind::DupTo,
                _ => RouteKind::ReplyTo,
            },
            hop: m.rt_addr,
            iface: None,
        }),
        _ => None,
    };
    Ok(StateRecord {
        id: m.id,
        creator: m.creatorid,
        // A floating state keeps OpenBSD's name for any interface.
        iface: if ifname.is_empty() {
            FLOATING.to_string()
        } else {
            ifname
        },
        bound,
        rule: (m.rule != NO_RULE).then(|| RuleRef {
            anchor: Default::default(),
            nr: m.rule,
        }),
        dir,
        wire: key_of(&m.key[0], m.proto),
        stack: key_of(&m.key[1], m.proto),
        src: peer_of(&m.src),
        dst: peer_of(&m.dst),
        keep: if m.src.seqdiff != 0 {
            KeepState::Modulate
        } else {
            KeepState::Keep
        },
        timeout,
        age_ms: m.creation as u64 * 1000,
        expire_ms: m.expire as u64 * 1000,
        packets: m.packets,
        bytes: m.bytes,
        sloppy: m.state_flags & PFSTATE_SLOPPY != 0,
        log_all: m.log & PF_LOG_ALL != 0,
        no_sync: m.state_flags & PFSTATE_NOSYNC != 0,
        scrub: ScrubActions {
            no_df: m.state_flags & PFSTATE_NODF != 0,
            random_id: m.state_flags & PFSTATE_RANDOMID != 0,
            min_ttl: (m.min_ttl != 0).then_some(m.min_ttl),
            max_mss: (m.max_mss != 0).then_some(m.max_mss),
            tos: (m.state_flags & PFSTATE_SETTOS != 0).then_some(m.set_tos),
            reassemble_tcp: scrubbed,
        },
        seqdiff: m.src.seqdiff,
        seqdiff_dst: m.dst.seqdiff,
        ttl_max: [m.src.scrub.ttl, m.dst.scrub.ttl],
        ts_offset: [m.src.scrub.ts_mod, m.dst.scrub.ts_mod],
        route,
        allow_opts: m.state_flags & PFSTATE_ALLOWOPTS != 0,
        os: None,
    })
}

/// The filter's update event as a compressed update (UPD_C).
pub fn to_upd_c(u: &StateUpdate) -> UpdCMsg {
    UpdCMsg {
        id: u.sid.id,
        src: peer_msg(&u.src, 0, 0, 0, false),
        dst: peer_msg(&u.dst, u.seqdiff_dst, 0, 0, false),
        creatorid: u.sid.creator,
        expire: u.expire_ms.div_ceil(1000).min(u32::MAX as u64) as u32,
        timeout: timeout_num(u.timeout),
        state_flags: 0,
    }
}

/// A peer's compressed update, for the filter's `merge_update`.
pub fn from_upd_c(u: &UpdCMsg) -> Result<StateUpdate, ConvertError> {
    Ok(StateUpdate {
        sid: StateId {
            id: u.id,
            creator: u.creatorid,
        },
        src: peer_of(&u.src),
        dst: peer_of(&u.dst),
        timeout: timeout_of(u.id, u.timeout)?,
        expire_ms: u.expire as u64 * 1000,
        seqdiff_dst: u.dst.seqdiff,
    })
}

pub fn state_id(r: &StateRef) -> StateId {
    StateId {
        id: r.id,
        creator: r.creatorid,
    }
}

pub fn state_ref(s: &StateId) -> StateRef {
    StateRef {
        id: s.id,
        creatorid: s.creator,
    }
}
