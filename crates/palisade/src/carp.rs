//! CARP in the daemon: the `palisade-carp` core, driven by worker 0 on the
//! data plane's hooks. Advertisements arrive punted (IP protocol 112, after
//! pf passed them `in`: pf.conf must pass `proto carp`), leave injected
//! from the virtual MAC with TTL 255, and every transition switches the
//! virtual host's MAC and addresses on (with gratuitous ARP and unsolicited
//! NA) or off. Link changes of a parent's port reach the core; the boot
//! demotion is lifted once worker 0 runs (ports open, rules loaded).

use std::net::IpAddr;

use palisade_carp::{CarpConfig, Event, Node, Options, State};
use palisade_net::config::Config;
use palisade_net::dataplane::{Dataplane, Mac, Out};
use palisade_wire::ethernet::EtherType;

pub struct CarpRuntime {
    node: Node,
    /// Per CARP interface: its name, its parent (logical interface index)
    /// and its virtual MAC.
    vhosts: Vec<(String, usize, Mac)>,
    /// Logical interface names by index.
    names: Vec<String>,
    /// Each logical interface's own addresses (advertisements' sources).
    own: Vec<Vec<IpAddr>>,
    ready: bool,
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
        let node = Node::new(configs, opts, seed, now_us).map_err(|e| e.to_string())?;
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
        Ok(Some(CarpRuntime {
            node,
            vhosts,
            names,
            own,
            ready: false,
        }))
    }

    /// Milliseconds until the core's next deadline (rounded up).
    pub fn timeout_ms(&self, now_us: u64) -> Option<u64> {
        self.node
            .poll_timeout()
            .map(|t| t.saturating_sub(now_us).div_ceil(1000))
    }

    /// Feed what the data plane has for CARP, run the timers, and carry
    /// out what the core decided; returns the frames to send.
    pub fn step(&mut self, dp: &mut Dataplane, now_us: u64) -> Vec<Out> {
        if !self.ready {
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
        while let Some(p) = dp.poll_punted() {
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

    fn drain(&mut self, dp: &mut Dataplane, now_us: u64) -> Vec<Out> {
        let mut out = Vec::new();
        while let Some(t) = self.node.poll_transmit() {
            let Some((parent, mac)) = self.vhost(&t.carp) else {
                continue;
            };
            let Some(src) = self
                .own
                .get(parent)
                .and_then(|a| a.iter().find(|a| a.is_ipv6() == t.dst.is_ipv6()))
            else {
                tracing::warn!(
                    "{}: no address of the advertisement's family on its interface",
                    t.carp
                );
                self.node.send_result(now_us, &t.carp, false);
                continue;
            };
            let pkt = palisade_wire::build::ip(
                *src,
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
            // A unicast peer's MAC is not known here: multicast MACs reach
            // it on the link as well.
            let group = if t.dst.is_ipv6() {
                IpAddr::V6(palisade_carp::wire::GROUP_V6)
            } else {
                IpAddr::V4(palisade_carp::wire::GROUP_V4)
            };
            let dst_mac = if t.dst.is_multicast() {
                group_mac(&t.dst)
            } else {
                group_mac(&group)
            };
            match dp.inject_on(parent, dst_mac, Some(mac), et, &pkt) {
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
                    if let Some((parent, mac)) = self.vhost(&carp) {
                        let _ = dp.set_virtual_mac(parent, mac, to == State::Master);
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
                    tracing::debug!(
                        "carp advertisement from {from} on {parent} (vhid {vhid:?}) refused: {}",
                        reason.name()
                    );
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
