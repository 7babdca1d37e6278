//! One packet's way through the filter: validate, look up state, evaluate
//! rules, create state. Reasons for drops carry pf's names (pfctl -si:
//! match, bad-offset, fragment, short, normalize, memory, bad-timestamp,
//! congestion, ip-option, proto-cksum, state-mismatch, state-insert,
//! state-limit, src-limit, synproxy) and are counted.

use std::collections::BTreeMap;
use std::sync::Arc;

use palisade_conf::ir::{BlockPolicy, Config, Direction, KeepState, SetOption, Timeout};
use palisade_wire::{icmp_is_error, parse_ip, parse_quoted, tcp_wscale, IpInfo, L4};

use crate::engine::Engine;
use crate::packet::{PacketMeta, RuleRef, VerdictAction};
use crate::state::{tcps, FlowKey, StateTable, TcpSeg};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateMatch {
    /// The packet created a state.
    New,
    /// The packet belongs to an existing state.
    Match,
    /// Decided by rules without a state.
    None,
}

impl StateMatch {
    pub fn name(self) -> &'static str {
        match self {
            StateMatch::New => "new",
            StateMatch::Match => "match",
            StateMatch::None => "none",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub action: VerdictAction,
    /// pf's reason: "match" when a rule or state decided.
    pub reason: &'static str,
    pub rule: Option<RuleRef>,
    pub state: StateMatch,
    pub state_id: Option<u64>,
    pub tag: Option<String>,
    pub log: bool,
    /// A packet the filter sends back (`block return`: TCP RST or ICMP).
    pub generated: Option<Vec<u8>>,
}

impl Decision {
    fn drop(reason: &'static str) -> Decision {
        Decision {
            action: VerdictAction::Block(palisade_conf::ir::BlockPolicy::Drop),
            reason,
            rule: None,
            state: StateMatch::None,
            state_id: None,
            tag: None,
            log: false,
            generated: None,
        }
    }
    pub fn passed(&self) -> bool {
        self.action == VerdictAction::Pass
    }
}

/// Counters like `pfctl -si`.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    pub packets: u64,
    pub passed: u64,
    pub blocked: u64,
    pub reasons: BTreeMap<&'static str, u64>,
    pub state_searches: u64,
    pub state_inserts: u64,
}

pub struct Filter {
    engine: Arc<Engine>,
    pub states: StateTable,
    pub counters: Counters,
    last_expiry_ms: u64,
}

fn payload_len(info: &IpInfo, header_len: u8) -> u32 {
    info.len
        .saturating_sub(info.l4_offset)
        .saturating_sub(header_len as usize) as u32
}

impl Filter {
    /// A filter for `engine`, with the global options (`set timeout`,
    /// `set limit states`) of `config`.
    pub fn new(engine: Arc<Engine>, config: &Config, creator: u32) -> Filter {
        let mut states = StateTable::new(creator);
        for o in &config.options {
            match o {
                SetOption::Timeout(t, v) => {
                    if let Some(i) = Timeout::ALL.iter().position(|x| x == t) {
                        states.timeouts[i] = *v;
                    }
                }
                SetOption::Limit(n, v) if n == "states" => states.limit = *v,
                _ => {}
            }
        }
        Filter {
            engine,
            states,
            counters: Counters::default(),
            last_expiry_ms: 0,
        }
    }

    /// Swap in a new ruleset; states survive (pf keeps them across reloads).
    pub fn set_engine(&mut self, engine: Arc<Engine>) {
        self.engine = engine;
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn count(&mut self, d: Decision) -> Decision {
        self.counters.packets += 1;
        if d.passed() {
            self.counters.passed += 1;
        } else {
            self.counters.blocked += 1;
        }
        *self.counters.reasons.entry(d.reason).or_default() += 1;
        d
    }

    /// Decide one IP packet (no link-layer header) seen on `iface` in `dir`.
    pub fn process(&mut self, ip: &[u8], iface: &str, dir: Direction, now_ms: u64) -> Decision {
        self.process_with(ip, iface, dir, now_ms, 0)
    }

    /// As `process`, with the randomness `probability` rules use.
    pub fn process_with(
        &mut self,
        ip: &[u8],
        iface: &str,
        dir: Direction,
        now_ms: u64,
        random: u32,
    ) -> Decision {
        if now_ms >= self.last_expiry_ms + 1000 {
            self.states.expire(now_ms);
            self.last_expiry_ms = now_ms;
        }
        let info = match parse_ip(ip) {
            Ok(i) => i,
            Err(m) => {
                let reason = match m {
                    palisade_wire::Malformed::Short => "short",
                    palisade_wire::Malformed::BadTcpHeader => "bad-offset",
                    _ => "normalize",
                };
                return self.count(Decision::drop(reason));
            }
        };
        if info.frag.is_some_and(|f| f.offset != 0) {
            // Reassembly is not implemented yet: without it a later
            // fragment cannot be matched to ports, rules or states.
            return self.count(Decision::drop("fragment"));
        }
        let len = info.len as u32;
        let mut tcp_seg = None;
        let key = match info.l4 {
            L4::Tcp {
                sport,
                dport,
                seq,
                ack,
                flags,
                window,
                header_len,
            } => {
                let t = &ip[info.l4_offset..info.len];
                tcp_seg = Some(TcpSeg {
                    seq,
                    ack,
                    flags,
                    window,
                    payload_len: payload_len(&info, header_len),
                    wscale: if flags & 0x02 != 0 {
                        tcp_wscale(t)
                    } else {
                        None
                    },
                });
                FlowKey {
                    proto: 6,
                    src: info.src,
                    dst: info.dst,
                    sport,
                    dport,
                }
            }
            L4::Udp { sport, dport } => FlowKey {
                proto: 17,
                src: info.src,
                dst: info.dst,
                sport,
                dport,
            },
            L4::Icmp { ty, id, .. } | L4::Icmp6 { ty, id, .. } => {
                let v6 = matches!(info.l4, L4::Icmp6 { .. });
                if icmp_is_error(v6, ty) {
                    if let Some(d) = self.icmp_error(ip, &info, iface, dir) {
                        return self.count(d);
                    }
                }
                FlowKey {
                    proto: info.proto,
                    src: info.src,
                    dst: info.dst,
                    sport: id,
                    dport: id,
                }
            }
            L4::None => FlowKey {
                proto: info.proto,
                src: info.src,
                dst: info.dst,
                sport: 0,
                dport: 0,
            },
        };
        self.counters.state_searches += 1;
        if let Some((id, reply)) = self.states.lookup(&key, dir, iface) {
            let rule = self.states.get(id).and_then(|s| s.rule.clone());
            let mut d = Decision {
                action: VerdictAction::Pass,
                reason: "match",
                rule,
                state: StateMatch::Match,
                state_id: Some(id),
                tag: None,
                log: false,
                generated: None,
            };
            match &tcp_seg {
                Some(seg) => {
                    // A new SYN on a closed connection replaces the old state.
                    let closed = self.states.get(id).is_some_and(|s| {
                        s.src.state >= tcps::FIN_WAIT_2 && s.dst.state >= tcps::FIN_WAIT_2
                    });
                    if closed && seg.flags & 0x12 == 0x02 {
                        self.states.remove(id);
                    } else {
                        if self.states.track_tcp(id, reply, seg, now_ms, len).is_err() {
                            d.action = VerdictAction::Block(palisade_conf::ir::BlockPolicy::Drop);
                            d.reason = "state-mismatch";
                        }
                        return self.count(d);
                    }
                }
                None => {
                    self.states.track_pseudo(id, reply, now_ms, len);
                    return self.count(d);
                }
            }
        }
        let mut meta = PacketMeta::from_ip(&info, iface, dir);
        meta.random = random;
        let v = self.engine.test(&meta);
        let mut d = Decision {
            action: v.action,
            reason: "match",
            rule: v.rule.clone(),
            state: StateMatch::None,
            state_id: None,
            tag: v.tag.clone(),
            log: v.log,
            generated: None,
        };
        if let VerdictAction::Block(p) = v.action {
            d.generated = return_packet(ip, &info, p);
        }
        if v.action == VerdictAction::Pass && v.keep_state != KeepState::None {
            match self.states.insert(
                key,
                dir,
                iface,
                v.rule.clone(),
                v.keep_state,
                v.state_opts.clone(),
                now_ms,
                tcp_seg.as_ref(),
                len,
            ) {
                Ok(id) => {
                    self.counters.state_inserts += 1;
                    d.state = StateMatch::New;
                    d.state_id = Some(id);
                }
                Err(reason) => {
                    d.action = VerdictAction::Block(palisade_conf::ir::BlockPolicy::Drop);
                    d.reason = reason;
                }
            }
        }
        self.count(d)
    }

    /// An ICMP error passes when the packet it quotes belongs to a state.
    fn icmp_error(
        &mut self,
        ip: &[u8],
        info: &IpInfo,
        iface: &str,
        dir: Direction,
    ) -> Option<Decision> {
        let inner = ip.get(info.l4_offset + 8..info.len)?;
        let q = parse_quoted(inner)?;
        // The quoted packet went the other way.
        if q.src != info.dst {
            return None;
        }
        let key = FlowKey {
            proto: q.proto,
            src: q.src,
            dst: q.dst,
            sport: q.sport,
            dport: q.dport,
        };
        let (id, _) = self
            .states
            .lookup(&key, crate::state::opposite(dir), iface)?;
        let rule = self.states.get(id).and_then(|s| s.rule.clone());
        Some(Decision {
            action: VerdictAction::Pass,
            reason: "match",
            rule,
            state: StateMatch::Match,
            state_id: Some(id),
            tag: None,
            log: false,
            generated: None,
        })
    }
}

/// The answer `block return`, `return-rst` and `return-icmp` send for a
/// blocked packet (pf.conf(5) "block return"): a RST for TCP, an ICMP or
/// ICMPv6 unreachable for others, nothing for RSTs and ICMP errors. The
/// answer is sent from the blocked packet's destination.
pub fn return_packet(ip: &[u8], info: &IpInfo, p: BlockPolicy) -> Option<Vec<u8>> {
    use palisade_wire::build;
    let v6 = info.is_v6();
    let rst = |ttl: u8| -> Option<Vec<u8>> {
        let L4::Tcp {
            sport,
            dport,
            seq,
            ack,
            flags,
            header_len,
            ..
        } = info.l4
        else {
            return None;
        };
        if flags & 0x04 != 0 {
            return None;
        }
        let mut len = payload_len(info, header_len);
        if flags & 0x02 != 0 {
            len += 1;
        }
        if flags & 0x01 != 0 {
            len += 1;
        }
        let (s, a, f) = if flags & 0x10 != 0 {
            (ack, 0, 0x04)
        } else {
            (0, seq.wrapping_add(len), 0x14)
        };
        let t = build::tcp(dport, sport, s, a, f, 0, &[], &[]);
        Some(build::ip(
            info.dst,
            info.src,
            6,
            if ttl == 0 { 64 } else { ttl },
            &t,
        ))
    };
    let icmp = |(ty, code): (u8, u8)| -> Option<Vec<u8>> {
        if matches!(info.l4, L4::Icmp { ty, .. } | L4::Icmp6 { ty, .. } if icmp_is_error(v6, ty)) {
            return None;
        }
        // Quote the IP header and the first 8 bytes (IPv4), or as much as
        // keeps the answer within the IPv6 minimum MTU.
        let quote = if v6 {
            &ip[..info.len.min(1280 - 48)]
        } else {
            &ip[..(info.l4_offset + 8).min(info.len)]
        };
        let proto = if v6 { 58 } else { 1 };
        Some(build::ip(
            info.dst,
            info.src,
            proto,
            64,
            &build::icmp(ty, code, [0; 4], quote),
        ))
    };
    let default_icmp = if v6 { (1u8, 4u8) } else { (3u8, 3u8) };
    match p {
        BlockPolicy::Drop => None,
        BlockPolicy::ReturnRst { ttl } => rst(ttl),
        BlockPolicy::Return => {
            if info.proto == 6 {
                rst(0)
            } else {
                icmp(default_icmp)
            }
        }
        // return-icmp answers with ICMP even for TCP.
        BlockPolicy::ReturnIcmp { v4, v6: c6 } => icmp(if v6 { c6 } else { v4 }),
    }
}
