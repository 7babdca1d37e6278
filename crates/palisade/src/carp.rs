//! CARP in the daemon: the `palisade-carp` core, driven by worker 0 on the
//! data plane's hooks. Advertisements arrive punted (IP protocol 112, after
//! pf passed them `in`: pf.conf must pass `proto carp`), leave injected
//! from the virtual MAC with TTL 255, and every transition switches the
//! virtual host's MAC and addresses on (with gratuitous ARP and unsolicited
//! NA) or off. Link changes of a parent's port reach the core; the boot
//! demotion is lifted once worker 0 runs (ports open, rules loaded).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use palisade_carp::{CarpConfig, Event, Node, Options, Reject, State, Status, TransitionReason};
use palisade_net::config::Config;
use palisade_net::dataplane::{Dataplane, Mac, Out, Punted};
use palisade_wire::ethernet::EtherType;

/// What `carp show`, `carp group show` and the metrics read.
pub struct CarpView {
    pub vhosts: Vec<Status>,
    pub groups: Vec<(String, u32)>,
    pub rejects: Vec<(Reject, u64)>,
    /// Transitions by (interface, new state, reason).
    pub transitions: Vec<((String, State, TransitionReason), u64)>,
}

pub struct CarpRuntime {
    node: Node,
    transitions: BTreeMap<(String, State, TransitionReason), u64>,
    hook: Option<Hook>,
    /// Per CARP interface: its name, its parent (logical interface index)
    /// and its virtual MAC.
    vhosts: Vec<(String, usize, Mac)>,
    /// Logical interface names by index.
    names: Vec<String>,
    /// Each logical interface's own addresses (advertisements' sources).
    own: Vec<Vec<IpAddr>>,
    /// Each CARP address's prefix length, as palisade.toml gives it
    /// (`carp show` prints the netmask or prefixlen as ifconfig does).
    bits: BTreeMap<IpAddr, u8>,
    ready: bool,
    /// The boot demotion is lifted at this time (startup-delay).
    ready_at: u64,
    /// Refused advertisements said in the log, by where they came from
    /// and why: when last said, and how many since.
    refusals: BTreeMap<RefusalKey, (Option<u64>, u64)>,
}

/// Where a refused advertisement came from (parent, vhid, sender) and why.
type RefusalKey = (String, Option<u8>, IpAddr, &'static str);

/// A refused advertisement is said at once, then at most once a minute
/// per sender, vhid and reason (with the count since).
const REFUSAL_LOG_US: u64 = 60_000_000;

/// How many kinds of refusal (sender, vhid, reason) are remembered.
const REFUSAL_KINDS: usize = 256;

/// What a refusal most likely means, for the log.
fn refusal_hint(reason: palisade_carp::node::Reject, vhid: Option<u8>) -> String {
    use palisade_carp::node::Reject;
    match reason {
        Reject::BadHmac => format!(
            "the other firewall's vhid {} does not share this one's passphrase or virtual \
             addresses (both must be the same on the pair): both may be MASTER",
            vhid.map_or("?".into(), |v| v.to_string())
        ),
        Reject::UnknownVhid => format!(
            "no CARP interface here has vhid {}: if it is this pair's other firewall, its vhid \
             differs and both may be MASTER",
            vhid.map_or("?".into(), |v| v.to_string())
        ),
        Reject::BadTtl => "sent from off the link (TTL or hop limit not 255)".into(),
        Reject::Loop => "our own advertisement came back: a network loop?".into(),
        _ => "malformed".into(),
    }
}

/// The multicast MAC of an IP group (RFC 1112 6.4, RFC 2464 7).
fn group_mac(ip: &IpAddr) -> Mac {
    match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            [0x01, 0x00, 0x5e, o[1] & 0x7f, o[2], o[3]]
        }
        IpAddr::V6(a) => {
            let o = a.octets();
            [0x33, 0x33, o[12], o[13], o[14], o[15]]
        }
    }
}

impl CarpRuntime {
    /// The CARP of palisade.toml, hooked into the data plane; None when
    /// there is no CARP interface.
    pub fn new(
        cfg: &Config,
        dp: &mut Dataplane,
        seed: u64,
        now_us: u64,
    ) -> Result<Option<CarpRuntime>, String> {
        if cfg.carp.is_empty() {
            return Ok(None);
        }
        let names: Vec<String> = cfg.ifaces.iter().map(|i| i.name.clone()).collect();
        let own = cfg
            .ifaces
            .iter()
            .map(|i| i.addresses.iter().map(|p| p.ip).collect())
            .collect();
        let configs: Vec<CarpConfig> = cfg
            .carp
            .iter()
            .map(|c| CarpConfig {
                name: c.name.clone(),
                parent: names[c.parent].clone(),
                vhid: c.vhid,
                advbase: c.advbase,
                advskew: c.advskew,
                passphrase: c.passphrase.as_bytes().to_vec(),
                peers: c.peers.clone(),
                addrs: c.addresses.iter().map(|p| p.ip).collect(),
                groups: c.groups.clone(),
            })
            .collect();
        let opts = Options {
            preempt: cfg.carp_options.preempt,
            split_brain_repair: cfg.carp_options.split_brain_repair,
            ready: false,
        };
        // Parents whose port's link is down now (the data plane was told
        // before): their CARP interfaces start INIT, not BACKUP.
        let down: Vec<String> = cfg
            .carp
            .iter()
            .filter(|c| cfg.ifaces[c.parent].port.is_some_and(|p| !dp.link_up(p)))
            .map(|c| names[c.parent].clone())
            .collect();
        let node =
            Node::with_links_down(configs, opts, seed, now_us, &down).map_err(|e| e.to_string())?;
        dp.subscribe(palisade_carp::wire::PROTO);
        let mut vhosts = Vec::new();
        for c in &cfg.carp {
            let mac = palisade_carp::wire::virtual_mac(c.vhid);
            let addrs: Vec<IpAddr> = c.addresses.iter().map(|p| p.ip).collect();
            dp.add_virtual_mac(c.parent, mac, &addrs)
                .map_err(|e| format!("{}: {e:?}", c.name))?;
            if addrs.iter().any(|a| a.is_ipv4()) {
                dp.join_group(c.parent, IpAddr::V4(palisade_carp::wire::GROUP_V4))
                    .map_err(|e| format!("{}: {e:?}", c.name))?;
            }
            if addrs.iter().any(|a| a.is_ipv6()) {
                dp.join_group(c.parent, IpAddr::V6(palisade_carp::wire::GROUP_V6))
                    .map_err(|e| format!("{}: {e:?}", c.name))?;
            }
            vhosts.push((c.name.clone(), c.parent, mac));
        }
        let hook = cfg
            .carp_options
            .hook
            .clone()
            .map(|h| start_hook(h, cfg.carp_options.hook_timeout));
        let bits = cfg
            .carp
            .iter()
            .flat_map(|c| c.addresses.iter().map(|p| (p.ip, p.bits)))
            .collect();
        Ok(Some(CarpRuntime {
            node,
            transitions: BTreeMap::new(),
            hook,
            vhosts,
            names,
            own,
            bits,
            ready: false,
            ready_at: now_us + cfg.carp_options.startup_delay.as_micros() as u64,
            refusals: BTreeMap::new(),
        }))
    }

    /// Microseconds until the core's next deadline.
    pub fn timeout_us(&self, now_us: u64) -> Option<u64> {
        let ready = (!self.ready).then_some(self.ready_at);
        self.node
            .poll_timeout()
            .into_iter()
            .chain(ready)
            .min()
            .map(|t| t.saturating_sub(now_us))
    }

    /// Feed what the data plane has for CARP, run the timers, and carry
    /// out what the core decided; returns the frames to send.
    /// Change a group's demotion for a reason other than a command
    /// (pfsync's bulk update).
    pub fn demote_for(&mut self, now_us: u64, group: &str, delta: i32, why: &str) {
        self.node.demote(now_us, group, delta, why);
    }

    pub fn step(&mut self, dp: &mut Dataplane, now_us: u64, punted: Vec<Punted>) -> Vec<Out> {
        if !self.ready && now_us >= self.ready_at {
            self.ready = true;
            self.node.set_ready(now_us);
        }
        while let Some(ev) = dp.poll_link_event() {
            for ix in dp.interfaces_on_port(ev.port) {
                if let Some(name) = self.names.get(ix) {
                    self.node.set_link(now_us, name, ev.up);
                }
            }
        }
        for p in punted {
            if p.proto != palisade_carp::wire::PROTO {
                continue;
            }
            let Ok(info) = palisade_wire::parse_ip(&p.packet) else {
                continue;
            };
            let end = info.len.min(p.packet.len());
            let payload = &p.packet[info.l4_offset.min(end)..end];
            if let Some(parent) = self.names.get(p.iface) {
                self.node
                    .handle_advert(now_us, parent, info.src, info.ttl, payload);
            }
        }
        if self.node.poll_timeout().is_some_and(|t| t <= now_us) {
            self.node.handle_timeout(now_us);
        }
        self.drain(dp, now_us)
    }

    /// Whether this node is master of any virtual host.
    pub fn any_master(&self) -> bool {
        self.node.any_master()
    }

    /// Master of every virtual host (none down here, none backup).
    pub fn all_master(&self) -> bool {
        self.node.all_master()
    }

    /// Valid advertisements heard from other nodes (masters) since the
    /// start.
    pub fn adverts_heard(&self) -> u64 {
        self.node.adverts_heard()
    }

    /// What the commands and the metrics show.
    pub fn view(&self) -> CarpView {
        CarpView {
            vhosts: self.node.status(),
            groups: self
                .node
                .groups()
                .map(|(g, c)| (g.to_string(), c))
                .collect(),
            rejects: self.node.rejects().collect(),
            transitions: self
                .transitions
                .iter()
                .map(|(k, n)| (k.clone(), *n))
                .collect(),
        }
    }

    /// `carp demote GROUP N` (negative: undemote); the group's new count.
    /// Masters advertise the change when worker 0 next runs. Refused, as
    /// `ifconfig -g GROUP carpdemote N` refuses: a group no CARP interface
    /// is in (a typo would demote nothing), and a count that would leave
    /// 0 to 255.
    pub fn demote(&mut self, now_us: u64, group: &str, delta: i32) -> Result<u32, String> {
        // The rule palisade.toml applies to `groups`, so that every group
        // the file accepts can be demoted by hand.
        // A CARP interface's name where a group's belongs (ifconfig
        // demotes groups only): say which groups it is in.
        if let Some(v) = self.node.status().iter().find(|v| v.name == group) {
            let mut groups = vec!["carp".to_string()];
            groups.extend(v.groups.iter().cloned());
            return Err(format!(
                "{group} is a CARP interface, and demotion is per group (as ifconfig -g): \
                 demote one of its groups ({}), or put it in a group of its own with \
                 `carp group add {group} GROUP`",
                groups.join(", ")
            ));
        }
        if let Some(p) = palisade_net::config::group_name_problem(group) {
            return Err(p);
        }
        if !self.node.group_has_members(group) {
            return Err(format!(
                "no CARP interface is in group {group} (carp group show lists the groups; carp group add IFACE {group} puts one in)"
            ));
        }
        let now = self.node.group_demote(group).unwrap_or(0) as i64;
        let new = now + delta as i64;
        if !(0..=255).contains(&new) {
            let (verb, n) = if delta >= 0 {
                ("demote", delta as i64)
            } else {
                ("undemote", -(delta as i64))
            };
            return Err(format!(
                "{verb} {group} {n}: the count is {now}, and must stay within 0 to 255"
            ));
        }
        let why = if delta >= 0 {
            format!("carp demote {group} {delta} (by hand)")
        } else {
            format!("carp undemote {group} {} (by hand)", -delta)
        };
        self.node.demote_by_hand(now_us, group, delta, &why);
        Ok(self.node.group_demote(group).unwrap_or(0))
    }

    /// `carp group add|delete IFACE GROUP`: Err says why nothing changed.
    pub fn set_group(
        &mut self,
        now_us: u64,
        carp: &str,
        group: &str,
        member: bool,
    ) -> Result<(), String> {
        if !self.vhosts.iter().any(|v| v.0 == carp) {
            return Err(format!("{carp}: no such CARP interface"));
        }
        if group == "carp" {
            return Err(format!(
                "{carp}: every CARP interface is in group carp (it cannot be added or removed)"
            ));
        }
        // The rule palisade.toml applies: what the file refuses does not
        // get in at run time either.
        if let Some(p) = palisade_net::config::group_name_problem(group) {
            return Err(p);
        }
        if self.node.set_group(now_us, carp, group, member) {
            Ok(())
        } else if member {
            Err(format!("{carp} is already in group {group}"))
        } else {
            Err(format!("{carp} is not in group {group}"))
        }
    }

    /// `sysctl net.inet.carp.preempt`: logged.
    pub fn set_preempt(&mut self, on: bool) {
        if self.node.preempt() != on {
            tracing::info!("carp: preemption {}", if on { "on" } else { "off" });
        }
        self.node.set_preempt(on);
    }

    pub fn preempt(&self) -> bool {
        self.node.preempt()
    }

    /// `carp set IFACE advskew N advbase N` (ifconfig carp0 advskew N):
    /// the values as they are now, or why nothing changed. Until the next
    /// start: palisade.toml keeps them for good.
    pub fn set_timing(
        &mut self,
        now_us: u64,
        carp: &str,
        advbase: Option<u8>,
        advskew: Option<u8>,
    ) -> Result<(u8, u8), String> {
        if !self.vhosts.iter().any(|v| v.0 == carp) {
            return Err(format!("{carp}: no such CARP interface"));
        }
        if advskew == Some(255) {
            return Err(format!(
                "{carp}: advskew 255 is reserved (a master bowing out sends it): 0 to 254"
            ));
        }
        if advbase.is_none() && advskew.is_none() {
            return Err(format!("{carp}: nothing to set (advbase N, advskew N)"));
        }
        self.node.set_timing(now_us, carp, advbase, advskew);
        let v = self.view();
        let s = v
            .vhosts
            .iter()
            .find(|s| s.name == carp)
            .ok_or_else(|| format!("{carp}: no such CARP interface"))?;
        tracing::info!(
            "{carp}: advbase {} advskew {} (by hand)",
            s.advbase,
            s.advskew
        );
        Ok((s.advbase, s.advskew))
    }

    /// A CARP interface's virtual MAC.
    pub fn lladdr(&self, carp: &str) -> Option<Mac> {
        self.vhost(carp).map(|(_, mac)| mac)
    }

    /// Stopping, after `shutdown` and once worker 0 is done: let the
    /// transition hook run for what is queued (the bow-outs' MASTER ->
    /// INIT above all), one run at a time as always, for at most `bound`
    /// in all; each run keeps its own hook-timeout. Without this the
    /// daemon exited with the hook thread, which had run for the first
    /// vhid only. Returns the runs not done (0: all done).
    pub fn finish_hooks(&mut self, bound: Duration) -> usize {
        match self.hook.take() {
            Some(h) => h.finish(bound),
            None => 0,
        }
    }

    /// Stopping: masters bow out.
    pub fn shutdown(&mut self, dp: &mut Dataplane, now_us: u64) -> Vec<Out> {
        self.node.shutdown(now_us);
        self.drain(dp, now_us)
    }

    /// A CARP interface's parent and virtual MAC.
    fn vhost(&self, carp: &str) -> Option<(usize, Mac)> {
        self.vhosts
            .iter()
            .find(|v| v.0 == carp)
            .map(|&(_, parent, mac)| (parent, mac))
    }

    /// Whether a refusal is to be said now: the first of its kind at
    /// once, then (unless `once`) at most once a minute; Some(how many
    /// since it was last said, this one included). At most
    /// `REFUSAL_KINDS` kinds are remembered; beyond them, new kinds are
    /// only counted (in `carp show`), so a flood of forged senders cannot
    /// grow the memory or the log.
    fn refusal_to_log(&mut self, key: RefusalKey, now_us: u64, once: bool) -> Option<u64> {
        if !self.refusals.contains_key(&key) && self.refusals.len() >= REFUSAL_KINDS {
            return None;
        }
        let e = self.refusals.entry(key).or_insert((None, 0));
        e.1 += 1;
        match e.0 {
            Some(_) if once => None,
            Some(last) if now_us < last + REFUSAL_LOG_US => None,
            _ => {
                let n = e.1;
                *e = (Some(now_us), 0);
                Some(n)
            }
        }
    }

    fn drain(&mut self, dp: &mut Dataplane, now_us: u64) -> Vec<Out> {
        let mut out = Vec::new();
        while let Some(t) = self.node.poll_transmit() {
            let Some((parent, mac)) = self.vhost(&t.carp) else {
                continue;
            };
            let own = self
                .own
                .get(parent)
                .and_then(|a| a.iter().find(|a| a.is_ipv6() == t.dst.is_ipv6()))
                .copied();
            // A parent without an address of the family still advertises
            // (hosts use only the virtual address; OpenBSD's hostname.carp0
            // with a bare `up` parent): IPv4 from 0.0.0.0, as OpenBSD's
            // carp does, IPv6 from the link-local address the parent's MAC
            // gives (EUI-64), the address the kernel would have given it.
            let Some(src) = own.or_else(|| source_without_address(t.dst, dp.mac(parent))) else {
                self.node.send_result(now_us, &t.carp, false);
                continue;
            };
            let pkt = palisade_wire::build::ip(
                src,
                t.dst,
                palisade_carp::wire::PROTO,
                palisade_carp::wire::TTL,
                &t.payload,
            );
            let et = if t.dst.is_ipv6() {
                EtherType::Ipv6
            } else {
                EtherType::Ipv4
            };
            // To the group from the virtual MAC; to a unicast peer (carppeer)
            // as any packet to a neighbour, resolved by ARP / NDP.
            let sent = if t.dst.is_multicast() {
                dp.inject_on(parent, group_mac(&t.dst), Some(mac), et, &pkt)
            } else {
                dp.send_to_neighbour(parent, t.dst, pkt, now_us / 1000)
            };
            match sent {
                Ok(o) => {
                    out.extend(o);
                    self.node.send_result(now_us, &t.carp, true);
                }
                Err(e) => {
                    tracing::warn!("{}: advertisement not sent: {e:?}", t.carp);
                    self.node.send_result(now_us, &t.carp, false);
                }
            }
        }
        while let Some(e) = self.node.poll_event() {
            match e {
                Event::Transition {
                    carp,
                    vhid,
                    from,
                    to,
                    reason,
                    ..
                } => {
                    tracing::info!(
                        "{carp} (vhid {vhid}): {} -> {} ({})",
                        from.name(),
                        to.name(),
                        reason.name()
                    );
                    *self
                        .transitions
                        .entry((carp.clone(), to, reason))
                        .or_default() += 1;
                    if let Some((parent, mac)) = self.vhost(&carp) {
                        let _ = dp.set_virtual_mac(parent, mac, to == State::Master);
                    }
                    if let Some(h) = &self.hook {
                        let st = self.node.status();
                        let v = st.iter().find(|s| s.name == carp);
                        h.queue(HookJob {
                            carp: carp.clone(),
                            parent: v.map(|v| v.parent.clone()).unwrap_or_default(),
                            vhid,
                            addrs: v.map(|v| v.addrs.clone()).unwrap_or_default(),
                            from,
                            to,
                            reason,
                        });
                    }
                }
                Event::Announce { carp, .. } => {
                    if let Some((parent, mac)) = self.vhost(&carp) {
                        if let Ok(o) = dp.announce_virtual_mac(parent, mac) {
                            out.extend(o);
                        }
                    }
                }
                Event::Rejected {
                    parent,
                    vhid,
                    from,
                    reason,
                } => {
                    use palisade_carp::node::Reject;
                    // What a sender could forge from anywhere on the link
                    // is keyed without its address (one line per reason,
                    // however many sources); another pair's vhid on a
                    // shared segment is normal: said once, at info.
                    let (key_from, key_vhid) = match reason {
                        Reject::BadHmac | Reject::Loop => (from, vhid),
                        Reject::UnknownVhid => (IpAddr::from([0u8; 4]), vhid),
                        _ => (IpAddr::from([0u8; 4]), None),
                    };
                    let key = (parent.clone(), key_vhid, key_from, reason.name());
                    let once = reason == Reject::UnknownVhid;
                    if let Some(n) = self.refusal_to_log(key, now_us, once) {
                        let again = if n > 1 {
                            format!(" ({n} refused since it was last said)")
                        } else {
                            String::new()
                        };
                        let line = format!(
                            "carp advertisement from {from} on {parent} (vhid {}) refused: {}: {}{again}",
                            vhid.map_or("?".into(), |v| v.to_string()),
                            reason.name(),
                            refusal_hint(reason, vhid)
                        );
                        if once {
                            tracing::info!("{line} (said once; carp show counts them)");
                        } else {
                            tracing::warn!("{line}");
                        }
                    }
                }
                Event::Demoted {
                    group,
                    count,
                    reason,
                } => {
                    tracing::info!("carp group {group}: demote {count} ({reason})");
                }
            }
        }
        out
    }
}

/// One run of the transition hook.
struct HookJob {
    carp: String,
    parent: String,
    vhid: u8,
    addrs: Vec<IpAddr>,
    from: State,
    to: State,
    reason: TransitionReason,
}

/// How long a stopping daemon waits in all for the hook's queued runs
/// (each run is still killed at its own hook-timeout).
pub const HOOK_DRAIN: Duration = Duration::from_secs(10);

/// The transition hook's thread and what the stop needs to wait for it.
struct Hook {
    tx: mpsc::Sender<HookJob>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Runs queued and not finished (the stop says how many it cut).
    pending: Arc<AtomicUsize>,
    /// The running hook's process group, 0 when none runs: killed when
    /// the stop's bound is reached, so that no hook outlives the daemon.
    running: Arc<AtomicI32>,
    /// Set when the stop's bound is reached: no further run starts.
    give_up: Arc<AtomicBool>,
}

impl Hook {
    fn queue(&self, job: HookJob) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(job).is_err() {
            // No thread (it could not be started): nothing will run it.
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Close the queue and wait, at most `bound`, for the thread to run
    /// what is in it; past that, kill the running hook and drop the rest.
    /// Returns the runs not done.
    fn finish(mut self, bound: Duration) -> usize {
        let Some(thread) = self.thread.take() else {
            return 0;
        };
        let queued = self.pending.load(Ordering::SeqCst);
        // The thread's `for job in rx` ends after the last queued job.
        drop(self.tx);
        if queued > 0 {
            tracing::info!("carp hook: {queued} run(s) to finish before stopping");
        }
        let until = Instant::now() + bound;
        while !thread.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        if thread.is_finished() {
            let _ = thread.join();
            return 0;
        }
        let left = self.pending.load(Ordering::SeqCst);
        self.give_up.store(true, Ordering::SeqCst);
        // Kill what runs (it may have just started the next run: look
        // again until the thread, which now starts nothing, is done).
        let last = Instant::now() + Duration::from_millis(500);
        while !thread.is_finished() && Instant::now() < last {
            let pg = self.running.load(Ordering::SeqCst);
            if pg > 0 {
                // SAFETY: signalling the hook's own process group.
                unsafe { libc::kill(-pg, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        tracing::warn!(
            "carp hook: stopping after waiting {} s for it: {left} run(s) not done (the running one killed, the rest not run)",
            bound.as_secs_f32()
        );
        left
    }
}

/// The transition hook's thread: runs the hook once per transition, in
/// order, each run killed (its whole process group) after `limit`.
/// Worker 0 only queues: a slow hook never delays CARP.
fn start_hook(path: PathBuf, limit: Duration) -> Hook {
    let (tx, rx) = mpsc::channel::<HookJob>();
    let pending = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicI32::new(0));
    let give_up = Arc::new(AtomicBool::new(false));
    let (p, r, g) = (pending.clone(), running.clone(), give_up.clone());
    let spawned = std::thread::Builder::new()
        .name("carp-hook".into())
        .spawn(move || {
            for job in rx {
                if g.load(Ordering::SeqCst) {
                    break;
                }
                run_hook(&path, limit, &job, &r);
                p.fetch_sub(1, Ordering::SeqCst);
            }
        });
    let thread = match spawned {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::error!("carp hook: no thread to run it: {e}");
            None
        }
    };
    Hook {
        tx,
        thread,
        pending,
        running,
        give_up,
    }
}

/// Clears the running hook's process group when a run ends, however it
/// ends.
struct Done<'a>(&'a AtomicI32);

impl Drop for Done<'_> {
    fn drop(&mut self) {
        self.0.store(0, Ordering::SeqCst);
    }
}

/// One run; `running` holds its process group while it runs.
fn run_hook(path: &std::path::Path, limit: Duration, job: &HookJob, running: &AtomicI32) {
    use std::os::unix::process::CommandExt;
    let addrs: Vec<String> = job.addrs.iter().map(|a| a.to_string()).collect();
    let child = std::process::Command::new(path)
        .arg(&job.carp)
        .arg(job.to.name())
        .env("PALISADE_CARP_INTERFACE", &job.carp)
        .env("PALISADE_CARP_PARENT", &job.parent)
        .env("PALISADE_CARP_VHID", job.vhid.to_string())
        .env("PALISADE_CARP_ADDRESSES", addrs.join(" "))
        .env("PALISADE_CARP_STATE", job.to.name())
        .env("PALISADE_CARP_FROM", job.from.name())
        .env("PALISADE_CARP_REASON", job.reason.name())
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            tracing::error!("carp hook {}: cannot run it: {e}", path.display());
            return;
        }
    };
    running.store(child.id() as i32, Ordering::SeqCst);
    let _done = Done(running);
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(st)) if st.success() => {
                tracing::info!(
                    "carp hook {} {} {}: done in {} ms",
                    path.display(),
                    job.carp,
                    job.to.name(),
                    started.elapsed().as_millis()
                );
                return;
            }
            Ok(Some(st)) => {
                tracing::warn!(
                    "carp hook {} {} {}: {st}",
                    path.display(),
                    job.carp,
                    job.to.name()
                );
                return;
            }
            Ok(None) if started.elapsed() >= limit => {
                // SAFETY: signalling the hook's own process group.
                unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
                let _ = child.wait();
                tracing::warn!(
                    "carp hook {} {} {}: killed after {} s (hook-timeout)",
                    path.display(),
                    job.carp,
                    job.to.name(),
                    limit.as_secs()
                );
                return;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                tracing::error!("carp hook {}: {e}", path.display());
                return;
            }
        }
    }
}

/// The `carp` commands, answered on the control thread (holding CARP's
/// lock only, never the data plane's); a demotion wakes worker 0 so that
/// masters advertise it at once.
pub fn answer(sh: &crate::daemon::Shared, op: &crate::request::CarpOp) -> serde_json::Value {
    use crate::request::CarpOp;
    use serde_json::json;
    let Some(mut c) = sh.carp() else {
        return json!({"ok": false, "text": "carp: no CARP interface is configured ([[carp]] in palisade.toml)\n"});
    };
    let now = sh.now_us();
    match op {
        CarpOp::Show => {
            let v = c.view();
            let (mut text, mut data) = show(&c, &v, now);
            // Why group carp is demoted (OpenBSD's ifconfig says only how
            // much): the boot demotion, the administrator's, pfsync's
            // bulk update (lock order carp, pfsync), the rest (links
            // down, send errors).
            let total = c.node.group_demote("carp").unwrap_or(0);
            if total > 0 {
                let (boot, hand) = c.node.carp_shares();
                let bulk = sh
                    .pfsync()
                    .and_then(|s| s.bulk_demote())
                    .filter(|d| *d > 0)
                    .unwrap_or(0) as u32;
                let other = total.saturating_sub(boot + hand + bulk);
                let mut why = Vec::new();
                if boot > 0 {
                    why.push(format!(
                        "{boot} starting (not ready yet: startup-delay, pf.conf)"
                    ));
                }
                if bulk > 0 {
                    why.push(format!("{bulk} pfsync's bulk update under way"));
                }
                if hand > 0 {
                    why.push(format!("{hand} by hand (carp demote)"));
                }
                if other > 0 {
                    why.push(format!(
                        "{other} links down, send errors or the sync link (the log says which)"
                    ));
                }
                text += &format!("group carp demoted by {total}: {}\n", why.join("; "));
                data["carp_demotion"] = json!({"total": total, "starting": boot,
                    "bulk_update": bulk, "by_hand": hand, "other": other});
            }
            json!({"ok": true, "text": text, "data": data})
        }
        CarpOp::Demote { group, delta } => {
            let count = match c.demote(now, group, *delta) {
                Ok(n) => n,
                Err(e) => return json!({"ok": false, "text": format!("carp: {e}\n")}),
            };
            drop(c);
            sh.wake.wake();
            json!({"ok": true, "text": format!("{group}: carp demote count {count}\n"),
                   "data": {"group": group, "demote": count}})
        }
        CarpOp::Groups(which) => {
            let v = c.view();
            let groups: Vec<&(String, u32)> = v
                .groups
                .iter()
                .filter(|(g, _)| which.as_ref().is_none_or(|w| w == g))
                .collect();
            if let (Some(w), true) = (which, groups.is_empty()) {
                return json!({"ok": false, "text": format!("carp: no group {w}\n")});
            }
            let text: String = groups
                .iter()
                .map(|(g, n)| format!("{g}: carp demote count {n}\n"))
                .collect();
            let data: Vec<_> = groups
                .iter()
                .map(|(g, n)| {
                    let members: Vec<&str> = v
                        .vhosts
                        .iter()
                        .filter(|s| g == "carp" || s.groups.contains(g))
                        .map(|s| s.name.as_str())
                        .collect();
                    json!({"group": g, "demote": n, "members": members})
                })
                .collect();
            json!({"ok": true, "text": text, "data": data})
        }
        CarpOp::Set {
            iface,
            advbase,
            advskew,
        } => match c.set_timing(now, iface, *advbase, *advskew) {
            Ok((b, s)) => {
                drop(c);
                sh.wake.wake();
                json!({"ok": true, "text": format!("{iface}: advbase {b} advskew {s}\n"),
                       "data": {"iface": iface, "advbase": b, "advskew": s}})
            }
            Err(e) => json!({"ok": false, "text": format!("carp: {e}\n")}),
        },
        CarpOp::Preempt(on) => {
            c.set_preempt(*on);
            json!({"ok": true, "text": format!("net.inet.carp.preempt={}\n", *on as u8),
                   "data": {"preempt": on}})
        }
        CarpOp::Member { iface, group, add } => match c.set_group(now, iface, group, *add) {
            Ok(()) => {
                drop(c);
                sh.wake.wake();
                let what = if *add { "added to" } else { "removed from" };
                json!({"ok": true, "text": format!("{iface} {what} group {group}\n"),
                       "data": {"iface": iface, "group": group, "member": add}})
            }
            Err(e) => json!({"ok": false, "text": format!("carp: {e}\n")}),
        },
    }
}

fn mac_text(m: &Mac) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// `carp show`: per CARP interface in ifconfig's layout, then the groups
/// and the refused advertisements.
fn show(c: &CarpRuntime, v: &CarpView, now: u64) -> (String, serde_json::Value) {
    use serde_json::json;
    use std::fmt::Write as _;
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let mut text = String::new();
    let mut items = Vec::new();
    for s in &v.vhosts {
        let lladdr = c.lladdr(&s.name).map(|m| mac_text(&m)).unwrap_or_default();
        let mut groups = vec!["carp".to_string()];
        groups.extend(s.groups.iter().cloned());
        let _ = writeln!(text, "{}:", s.name);
        let _ = writeln!(text, "\tlladdr {lladdr}");
        let _ = writeln!(
            text,
            "\tcarp: {} carpdev {} vhid {} advbase {} advskew {}",
            s.state.name(),
            s.parent,
            s.vhid,
            s.advbase,
            s.advskew
        );
        let _ = writeln!(text, "\tgroups: {}", groups.join(" "));
        let _ = writeln!(
            text,
            "\tstatus: {}, demote {}",
            s.state.name().to_lowercase(),
            s.demote
        );
        for a in &s.addrs {
            // As ifconfig prints them: a netmask in hexadecimal and the
            // broadcast address, or the prefix length.
            let _ = match (a, c.bits.get(a)) {
                (IpAddr::V4(v4), Some(&b)) => {
                    let mask = u32::MAX.checked_shl(32 - b as u32).unwrap_or(0);
                    let bcast = std::net::Ipv4Addr::from(u32::from(*v4) | !mask);
                    writeln!(text, "\tinet {a} netmask 0x{mask:08x} broadcast {bcast}")
                }
                (IpAddr::V6(_), Some(&b)) => writeln!(text, "\tinet6 {a} prefixlen {b}"),
                (IpAddr::V4(_), None) => writeln!(text, "\tinet {a}"),
                (IpAddr::V6(_), None) => writeln!(text, "\tinet6 {a}"),
            };
        }
        if !s.masters.is_empty() {
            let m: Vec<String> = s.masters.iter().map(|a| a.to_string()).collect();
            let _ = writeln!(text, "\tmaster {}", m.join(", "));
        }
        let last = s.last.map(|(at, from, to, why)| {
            let ago = now.saturating_sub(at) as f64 / 1e6;
            let _ = writeln!(
                text,
                "\tlast transition {ago:.1} s ago: {} -> {} ({})",
                from.name(),
                to.name(),
                why.name()
            );
            json!({"from": from.name(), "to": to.name(), "reason": why.name(),
                   "ago_s": ago, "at": wall - ago})
        });
        let _ = writeln!(
            text,
            "\ttransitions {}, advertisements sent {}",
            s.transitions, s.sent
        );
        items.push(json!({
            "name": s.name,
            "carpdev": s.parent,
            "vhid": s.vhid,
            "state": s.state.name(),
            "advbase": s.advbase,
            "advskew": s.advskew,
            "demote": s.demote,
            "lladdr": lladdr,
            "groups": groups,
            "addresses": s.addrs,
            "master": s.master,
            "masters": s.masters,
            "last_transition": last,
            "transitions": s.transitions,
            "sent": s.sent,
        }));
    }
    let groups: Vec<_> = v
        .groups
        .iter()
        .map(|(g, n)| json!({"group": g, "demote": n}))
        .collect();
    let line: Vec<String> = v.groups.iter().map(|(g, n)| format!("{g} {n}")).collect();
    let _ = writeln!(text, "groups (demote count): {}", line.join(", "));
    let _ = writeln!(text, "net.inet.carp.preempt={}", c.preempt() as u8);
    let mut rejects = serde_json::Map::new();
    for (r, n) in &v.rejects {
        rejects.insert(r.name().into(), json!(n));
    }
    if !v.rejects.is_empty() {
        let line: Vec<String> = v
            .rejects
            .iter()
            .map(|(r, n)| format!("{} {n}", r.name()))
            .collect();
        let _ = writeln!(text, "advertisements refused: {}", line.join(", "));
    }
    (
        text,
        json!({"interfaces": items, "groups": groups, "rejects": rejects,
               "preempt": c.preempt()}),
    )
}

/// The source of an advertisement whose parent has no address of its
/// family: 0.0.0.0 for IPv4 (OpenBSD's carp_send_ad), the EUI-64
/// link-local address of the parent's MAC for IPv6.
fn source_without_address(dst: IpAddr, mac: Option<Mac>) -> Option<IpAddr> {
    match dst {
        IpAddr::V4(_) => Some(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        IpAddr::V6(_) => {
            let m = mac?;
            Some(IpAddr::V6(std::net::Ipv6Addr::new(
                0xfe80,
                0,
                0,
                0,
                u16::from_be_bytes([m[0] ^ 0x02, m[1]]),
                u16::from_be_bytes([m[2], 0xff]),
                u16::from_be_bytes([0xfe, m[3]]),
                u16::from_be_bytes([m[4], m[5]]),
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parent without an address advertises from 0.0.0.0 (IPv4) and
    /// from its MAC's EUI-64 link-local address (IPv6, RFC 4291 app. A).
    #[test]
    fn sources_of_a_parent_without_addresses() {
        let mac = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
        assert_eq!(
            source_without_address("224.0.0.18".parse().unwrap(), Some(mac)),
            Some("0.0.0.0".parse().unwrap())
        );
        assert_eq!(
            source_without_address("ff02::12".parse().unwrap(), Some(mac)),
            Some("fe80::5054:ff:fe12:3456".parse().unwrap())
        );
        assert_eq!(
            source_without_address("ff02::12".parse().unwrap(), None),
            None
        );
    }

    fn job() -> HookJob {
        HookJob {
            carp: "carp0".into(),
            parent: "lan".into(),
            vhid: 1,
            addrs: vec!["192.0.2.1".parse().unwrap(), "2001:db8::1".parse().unwrap()],
            from: State::Backup,
            to: State::Master,
            reason: TransitionReason::MasterDown,
        }
    }

    #[test]
    fn the_hook_is_told_the_transition_and_killed_at_its_time_limit() {
        let d = std::env::temp_dir().join(format!("palisade-hook-unit-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let out = d.join("out");
        let hook = d.join("hook.sh");
        std::fs::write(
            &hook,
            format!(
                "#!/bin/sh\necho \"$1 $2|$PALISADE_CARP_PARENT|$PALISADE_CARP_VHID|$PALISADE_CARP_ADDRESSES|$PALISADE_CARP_FROM|$PALISADE_CARP_REASON\" > {}\nsleep 30 &\nwait\n",
                out.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        let t = Instant::now();
        run_hook(&hook, Duration::from_secs(1), &job(), &AtomicI32::new(0));
        let took = t.elapsed();
        assert!(
            took >= Duration::from_secs(1) && took < Duration::from_secs(5),
            "{took:?}"
        );
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "carp0 MASTER|lan|1|192.0.2.1 2001:db8::1|BACKUP|master-down\n"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A hook script in a directory of its own that appends its
    /// interface to `out` after sleeping `secs`.
    fn slow_hook(name: &str, secs: &str) -> (PathBuf, PathBuf, PathBuf) {
        let d = std::env::temp_dir().join(format!("palisade-hook-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let out = d.join("out");
        let hook = d.join("hook.sh");
        std::fs::write(
            &hook,
            format!(
                "#!/bin/sh\nsleep {secs}\necho \"$1 $2\" >> {}\n",
                out.display()
            ),
        )
        .unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        (d, hook, out)
    }

    fn job_for(carp: &str) -> HookJob {
        HookJob {
            carp: carp.into(),
            from: State::Master,
            to: State::Init,
            reason: TransitionReason::Shutdown,
            ..job()
        }
    }

    /// SIGTERM with several masters: every bow-out's hook run is done,
    /// in order, before the daemon goes (it used to run for the first).
    #[test]
    fn a_stop_waits_for_every_queued_hook_run() {
        let (d, hook, out) = slow_hook("drain", "0.3");
        let h = start_hook(hook, Duration::from_secs(5));
        for c in ["carp0", "carp1", "carp5"] {
            h.queue(job_for(c));
        }
        assert_eq!(h.finish(Duration::from_secs(10)), 0);
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "carp0 INIT\ncarp1 INIT\ncarp5 INIT\n"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    /// The stop's bound holds however slow the hook: the running one is
    /// killed and the rest dropped, and the stop says how many.
    #[test]
    fn a_stop_waits_for_the_hook_no_longer_than_its_bound() {
        // (Each run takes 1 s and the bound is 1.5 s: the first is done
        // and the second cut short even if this thread is kept from
        // running for half a second on a loaded machine; with 0.4 s and
        // 0.6 s a CI run under a parallel build saw the second finish.)
        let (d, hook, out) = slow_hook("bound", "1.0");
        let h = start_hook(hook, Duration::from_secs(30));
        for c in ["carp0", "carp1", "carp5"] {
            h.queue(job_for(c));
        }
        let t = Instant::now();
        let left = h.finish(Duration::from_millis(1500));
        let took = t.elapsed();
        assert!(took < Duration::from_millis(3000), "{took:?}");
        assert_eq!(left, 2, "carp1 cut short, carp5 not run");
        std::thread::sleep(Duration::from_millis(1200));
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "carp0 INIT\n",
            "nothing ran on after the stop"
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    /// A CARP runtime over a data plane of palisade.toml `toml`.
    fn runtime(toml: &str) -> (CarpRuntime, Dataplane) {
        use palisade_conf::host::HostModel;
        let cfg = Config::parse(std::path::Path::new("t.toml"), toml, &|_| true).unwrap();
        let host = HostModel {
            interfaces: cfg.host_interfaces(),
            ..Default::default()
        };
        let out = palisade_conf::parse_bytes(
            "pf.conf",
            None,
            b"pass\n".to_vec(),
            &palisade_conf::ParseOptions {
                host: host.clone(),
                ..Default::default()
            },
        );
        assert_eq!(out.errors, 0, "{:?}", out.stderr);
        let f = palisade_filter::Filter::new(
            std::sync::Arc::new(palisade_filter::Engine::new(&out.config, host)),
            &out.config,
            1,
        );
        let mut dp = Dataplane::new(cfg.clone(), &[[2, 0, 0, 0, 0, 0x10]], f);
        let c = CarpRuntime::new(&cfg, &mut dp, 1, 0).unwrap().unwrap();
        (c, dp)
    }

    const ONE_VHID: &str = r#"
pf = "pf.conf"
[[port]]
name = "eth0"
[[interface]]
name = "lan"
port = "eth0"
addresses = ["198.18.0.2/24"]
[[carp]]
name = "carp0"
interface = "lan"
vhid = 1
addresses = ["198.18.0.1/24"]
groups = ["carp", "inside", "inside"]
"#;

    /// One rule for group names, palisade.toml's: a group the file
    /// accepts can be demoted, and a name it refuses is refused at run
    /// time too, in the same words.
    #[test]
    fn group_names_at_run_time_follow_palisade_toml() {
        let (mut c, _dp) = runtime(ONE_VHID);
        assert_eq!(c.demote(0, "inside", 1), Ok(1));
        assert_eq!(c.demote(0, "carp", 10), Ok(138), "boot demotion 128 + 10");
        // `groups = ["carp", ...]` counts group carp once.
        assert_eq!(c.view().vhosts[0].groups, ["inside"]);
        assert_eq!(c.view().vhosts[0].demote, 139);
        let long = "g".repeat(5000);
        for bad in ["bad group!", long.as_str(), "grp1"] {
            let want = palisade_net::config::group_name_problem(bad).unwrap();
            assert_eq!(c.set_group(0, "carp0", bad, true), Err(want.clone()));
            assert_eq!(c.demote(0, bad, 1), Err(want));
        }
        assert_eq!(c.set_group(0, "carp0", "outside", true), Ok(()));
        // The interface's own name: its groups are named.
        let e = c.demote(0, "carp0", 1).unwrap_err();
        assert!(
            e.contains("carp0 is a CARP interface") && e.contains("(carp, inside, outside)"),
            "{e}"
        );
    }

    /// A refused advertisement is said at once, then once a minute per
    /// sender, vhid and reason, with how many came since.
    #[test]
    fn refusals_are_said_once_a_minute() {
        let (mut c, _dp) = runtime(ONE_VHID);
        let from: IpAddr = "198.18.0.3".parse().unwrap();
        let k = |r: &'static str| ("lan".to_string(), Some(1), from, r);
        assert_eq!(c.refusal_to_log(k("bad-hmac"), 5, false), Some(1));
        assert_eq!(c.refusal_to_log(k("bad-hmac"), 1_000_000, false), None);
        assert_eq!(
            c.refusal_to_log(k("unknown-vhid"), 1_000_000, true),
            Some(1)
        );
        assert_eq!(c.refusal_to_log(k("bad-hmac"), 30_000_000, false), None);
        assert_eq!(c.refusal_to_log(k("bad-hmac"), 60_000_005, false), Some(3));
        assert_eq!(c.refusal_to_log(k("bad-hmac"), 60_000_006, false), None);
        // Said once only: another pair's vhid on the segment.
        assert_eq!(c.refusal_to_log(k("unknown-vhid"), 900_000_000, true), None);
        // Forged senders by the thousand: the memory stays bounded.
        for i in 0..10_000u32 {
            let f = IpAddr::from((0xc612_0000u32 + i).to_be_bytes());
            c.refusal_to_log(("lan".to_string(), Some(1), f, "bad-hmac"), 0, false);
        }
        assert!(c.refusals.len() <= REFUSAL_KINDS);
        assert!(refusal_hint(palisade_carp::node::Reject::BadHmac, Some(1)).contains("passphrase"));
    }
}
