//! A transparent learning bridge (scenario S1): members have no addresses;
//! frames are switched by MAC address; IPv4/IPv6 packets are filtered on
//! the member they enter by (`in`) and on each member they leave by
//! (`out`), as pf filters on bridge members; other frames (ARP...) cross.
//!
//! Pure: frames in, frames out, time passed in.

use std::collections::HashMap;

use palisade_conf::ir::Direction;
use palisade_filter::Filter;
use palisade_wire::link;

/// How long a learned address stays (the common default, 300 s).
pub const AGING_MS: u64 = 300_000;

pub type Mac = [u8; 6];

pub struct Bridge {
    /// Member port names, by index.
    pub members: Vec<String>,
    table: HashMap<Mac, (usize, u64)>,
    pub aging_ms: u64,
    pub counters: BridgeCounters,
}

#[derive(Clone, Debug, Default)]
pub struct BridgeCounters {
    pub frames: u64,
    pub flooded: u64,
    pub blocked_in: u64,
    pub blocked_out: u64,
    pub non_ip: u64,
}

/// A frame to send and the member index to send it from.
pub type Out = (usize, Vec<u8>);

fn mac(b: &[u8]) -> Mac {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[..6]);
    m
}

impl Bridge {
    pub fn new(members: Vec<String>) -> Bridge {
        Bridge {
            members,
            table: HashMap::new(),
            aging_ms: AGING_MS,
            counters: BridgeCounters::default(),
        }
    }

    /// Where a destination address was last seen (if not aged out).
    pub fn lookup(&self, m: &Mac, now_ms: u64) -> Option<usize> {
        self.table
            .get(m)
            .filter(|(_, t)| now_ms < t + self.aging_ms)
            .map(|(p, _)| *p)
    }

    /// One frame received on member `ingress`: the frames to send.
    pub fn input(
        &mut self,
        filter: &mut Filter,
        ingress: usize,
        frame: &mut [u8],
        now_ms: u64,
    ) -> Vec<Out> {
        self.counters.frames += 1;
        if frame.len() < 14 {
            return Vec::new();
        }
        let dst = mac(&frame[0..6]);
        let src = mac(&frame[6..12]);
        // Learn the source (never a multicast/broadcast address).
        if src[0] & 1 == 0 {
            self.table.insert(src, (ingress, now_ms));
        }
        let egress: Vec<usize> = match (dst[0] & 1 == 0)
            .then(|| self.lookup(&dst, now_ms))
            .flatten()
        {
            Some(p) if p == ingress => return Vec::new(),
            Some(p) => vec![p],
            None => {
                self.counters.flooded += 1;
                (0..self.members.len()).filter(|&p| p != ingress).collect()
            }
        };
        let Some((ethertype, _, off)) = link::ethernet(frame) else {
            return Vec::new();
        };
        let is_ip = ethertype == link::ETH_IPV4 || ethertype == link::ETH_IPV6;
        if !is_ip {
            self.counters.non_ip += 1;
            return egress.into_iter().map(|p| (p, frame.to_vec())).collect();
        }
        // pf: in on the ingress member, then out on each egress member.
        let d = filter.process(
            &mut frame[off..],
            &self.members[ingress],
            Direction::In,
            now_ms,
        );
        if !d.passed() || d.held {
            self.counters.blocked_in += 1;
            return Vec::new();
        }
        let mut out = Vec::new();
        for p in egress {
            let mut f = frame.to_vec();
            let d = filter.process(&mut f[off..], &self.members[p], Direction::Out, now_ms);
            if d.passed() && !d.held {
                out.push((p, f));
            } else {
                self.counters.blocked_out += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_conf::host::HostModel;
    use palisade_conf::{parse_bytes, ParseOptions};
    use palisade_wire::build;
    use std::sync::Arc;

    fn filter(rules: &str) -> Filter {
        let host = HostModel::default();
        let out = parse_bytes(
            "t",
            None,
            rules.as_bytes().to_vec(),
            &ParseOptions {
                host: host.clone(),
                ..Default::default()
            },
        );
        assert_eq!(out.errors, 0, "{:?}", out.stderr);
        Filter::new(
            Arc::new(palisade_filter::Engine::new(&out.config, host)),
            &out.config,
            1,
        )
    }

    fn eth(dst: Mac, src: Mac, ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&src);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    const A: Mac = [2, 0, 0, 0, 0, 0xa];
    const B: Mac = [2, 0, 0, 0, 0, 0xb];
    const BCAST: Mac = [0xff; 6];

    #[test]
    fn learns_floods_and_filters_per_member() {
        let mut br = Bridge::new(vec!["wan".into(), "dmz".into(), "lan".into()]);
        // if-bound: with floating states (the default) the state made by the
        // copy sent out on dmz would also pass the flooded copy on lan.
        let mut f = filter("set state-policy if-bound\nblock all\npass in on wan proto udp\npass out on dmz proto udp\n");
        // ARP broadcast from A on wan floods to both others, unfiltered.
        let mut arp = eth(BCAST, A, link::ETH_ARP, &[0u8; 28]);
        let out = br.input(&mut f, 0, &mut arp, 0);
        assert_eq!(out.iter().map(|o| o.0).collect::<Vec<_>>(), [1, 2]);
        // B answers from dmz: now both are known.
        let mut reply = eth(A, B, link::ETH_ARP, &[0u8; 28]);
        assert_eq!(
            br.input(&mut f, 1, &mut reply, 1)
                .iter()
                .map(|o| o.0)
                .collect::<Vec<_>>(),
            [0]
        );
        // UDP from A to B: known destination, passes in on wan and out on dmz.
        let ip = build::ip(
            "198.18.0.1".parse().unwrap(),
            "198.18.0.2".parse().unwrap(),
            17,
            64,
            &build::udp(1, 53, b"q"),
        );
        let mut fr = eth(B, A, link::ETH_IPV4, &ip);
        let out = br.input(&mut f, 0, &mut fr, 2);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].0, 1);
        // TCP is blocked in on wan.
        let t = build::ip(
            "198.18.0.1".parse().unwrap(),
            "198.18.0.2".parse().unwrap(),
            6,
            64,
            &build::tcp(1, 25, 1, 0, 2, 100, &[], b""),
        );
        let mut fr = eth(B, A, link::ETH_IPV4, &t);
        assert!(br.input(&mut f, 0, &mut fr, 3).is_empty());
        assert_eq!(br.counters.blocked_in, 1);
        // Aging: after 300 s the destination is unknown again: flooded.
        let mut fr = eth(B, A, link::ETH_IPV4, &ip);
        let out = br.input(&mut f, 0, &mut fr, 400_000);
        assert_eq!(
            out.iter().map(|o| o.0).collect::<Vec<_>>(),
            [1],
            "lan is blocked out"
        );
        assert_eq!(br.counters.blocked_out, 1);
    }
}
