//! The SYNs seen, with what their fingerprints said (greylisting by OS,
//! `palisade osfp show`, the p0f query API).
//!
//! Keyed by the connection's source address and port (what a mail server
//! knows of its client), with the destination kept beside; and per source
//! address, as p0f keeps hosts: first and last seen, connections, the last
//! system positively matched and when it changed. Bounded in entries and
//! in age: the oldest go first.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;

use crate::osfp::{Fingerprint, SynOpt, SynSignature};

/// One SYN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynSeen {
    pub at_ms: u64,
    pub dst: IpAddr,
    pub dport: u16,
    pub ttl: u8,
    /// Hops, from the TTL the matched system starts with (or the next
    /// usual initial TTL: 32, 64, 128, 255).
    pub distance: u8,
    pub os: Option<Arc<Fingerprint>>,
    /// The SYN in pf.os's notation (window:ttl:df:size:options).
    pub signature: String,
}

/// One source address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostSeen {
    pub first_ms: u64,
    pub last_ms: u64,
    pub connections: u32,
    /// When the matched system last changed (0: never).
    pub changed_ms: u64,
    pub last: SynSeen,
    /// The last system positively matched (kept when a later SYN matched
    /// none, as p0f does).
    pub os: Option<Arc<Fingerprint>>,
}

#[derive(Debug)]
pub struct SynLog {
    cap: usize,
    max_age_ms: u64,
    conns: HashMap<(IpAddr, u16), SynSeen>,
    order: VecDeque<(u64, IpAddr, u16)>,
    hosts: HashMap<IpAddr, HostSeen>,
    host_order: VecDeque<(u64, IpAddr)>,
}

impl SynLog {
    /// At most `cap` connections and `cap` hosts, each forgotten after
    /// `max_age_ms` without a new SYN.
    pub fn new(cap: usize, max_age_ms: u64) -> SynLog {
        SynLog {
            cap: cap.max(1),
            max_age_ms,
            conns: HashMap::new(),
            order: VecDeque::new(),
            hosts: HashMap::new(),
            host_order: VecDeque::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    pub fn hosts(&self) -> usize {
        self.hosts.len()
    }

    /// Record a SYN from `src`:`sport` to `dst`:`dport`.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &mut self,
        now_ms: u64,
        src: IpAddr,
        sport: u16,
        dst: IpAddr,
        dport: u16,
        sig: &SynSignature,
        os: Option<Arc<Fingerprint>>,
    ) {
        self.expire(now_ms);
        let initial = os
            .as_ref()
            .map(|f| f.ttl())
            .filter(|t| *t >= sig.ttl)
            .unwrap_or_else(|| initial_ttl(sig.ttl));
        let seen = SynSeen {
            at_ms: now_ms,
            dst,
            dport,
            ttl: sig.ttl,
            distance: initial - sig.ttl,
            os: os.clone(),
            signature: pf_os_notation(sig),
        };
        self.conns.insert((src, sport), seen.clone());
        self.order.push_back((now_ms, src, sport));
        let h = self.hosts.entry(src).or_insert_with(|| HostSeen {
            first_ms: now_ms,
            last_ms: now_ms,
            connections: 0,
            changed_ms: 0,
            last: seen.clone(),
            os: None,
        });
        h.last_ms = now_ms;
        h.connections = h.connections.saturating_add(1);
        h.last = seen;
        if let Some(o) = os {
            if h.os.as_ref().is_some_and(|p| p.as_ref() != o.as_ref()) {
                h.changed_ms = now_ms;
            }
            h.os = Some(o);
        }
        self.host_order.push_back((now_ms, src));
        self.trim();
    }

    /// Forget what is older than the age limit.
    pub fn expire(&mut self, now_ms: u64) {
        let old = |t: u64| now_ms.saturating_sub(t) > self.max_age_ms;
        while let Some(&(t, a, p)) = self.order.front() {
            if !old(t) {
                break;
            }
            self.order.pop_front();
            if self.conns.get(&(a, p)).is_some_and(|s| s.at_ms == t) {
                self.conns.remove(&(a, p));
            }
        }
        while let Some(&(t, a)) = self.host_order.front() {
            if !old(t) {
                break;
            }
            self.host_order.pop_front();
            if self.hosts.get(&a).is_some_and(|h| h.last_ms == t) {
                self.hosts.remove(&a);
            }
        }
    }

    fn trim(&mut self) {
        while self.conns.len() > self.cap {
            let Some((t, a, p)) = self.order.pop_front() else {
                break;
            };
            if self.conns.get(&(a, p)).is_some_and(|s| s.at_ms == t) {
                self.conns.remove(&(a, p));
            }
        }
        // Entries superseded by a later SYN of the same key are skipped
        // lazily above; keep the queues from growing without bound.
        if self.order.len() > 2 * self.cap {
            let conns = &self.conns;
            self.order
                .retain(|(t, a, p)| conns.get(&(*a, *p)).is_some_and(|s| s.at_ms == *t));
        }
        while self.hosts.len() > self.cap {
            let Some((t, a)) = self.host_order.pop_front() else {
                break;
            };
            if self.hosts.get(&a).is_some_and(|h| h.last_ms == t) {
                self.hosts.remove(&a);
            }
        }
        if self.host_order.len() > 2 * self.cap {
            let hosts = &self.hosts;
            self.host_order
                .retain(|(t, a)| hosts.get(a).is_some_and(|h| h.last_ms == *t));
        }
    }

    /// The SYN of the connection from `src`:`sport`.
    pub fn connection(&self, src: IpAddr, sport: u16) -> Option<&SynSeen> {
        self.conns.get(&(src, sport))
    }

    /// What is known of the host `src`.
    pub fn host(&self, src: IpAddr) -> Option<&HostSeen> {
        self.hosts.get(&src)
    }
}

/// The usual initial TTLs; a TTL is taken to have started at the next one
/// up.
pub fn initial_ttl(ttl: u8) -> u8 {
    match ttl {
        0..=32 => 32,
        33..=64 => 64,
        65..=128 => 128,
        _ => 255,
    }
}

/// A SYN as a pf.os line's first five fields (`window:ttl:df:size:opts`),
/// with the initial TTL guessed: ready to paste into a database.
pub fn pf_os_notation(s: &SynSignature) -> String {
    let opts: Vec<String> = s
        .opts
        .iter()
        .map(|o| match o {
            SynOpt::Nop => "N".to_string(),
            SynOpt::Eol => "E".to_string(),
            SynOpt::Sack => "S".to_string(),
            SynOpt::Ts(0) => "T0".to_string(),
            SynOpt::Ts(_) => "T".to_string(),
            SynOpt::Mss(m) => format!("M{m}"),
            SynOpt::Ws(w) => format!("W{w}"),
            SynOpt::Other(k) => format!("?{k}"),
        })
        .collect();
    format!(
        "{}:{}:{}:{}:{}",
        s.window,
        initial_ttl(s.ttl),
        s.df as u8,
        s.size,
        if opts.is_empty() {
            ".".to_string()
        } else {
            opts.join(",")
        }
    )
}
