//! Address tables: longest-prefix match with negated entries (pf.conf(5)
//! TABLES: "the most specific entry wins; a negated entry means no match").

use std::collections::HashMap;
use std::net::IpAddr;

use palisade_conf::ir::{Addr, Config, TableEntry};

/// One table. Addresses are keyed per family by prefix length.
#[derive(Clone, Debug, Default)]
pub struct AddrTable {
    v4: HashMap<u8, HashMap<u32, bool>>,
    v6: HashMap<u8, HashMap<u128, bool>>,
    /// Prefix lengths present, longest first.
    v4_lens: Vec<u8>,
    v6_lens: Vec<u8>,
    /// Ranges (a - b) are kept aside; tables rarely hold them.
    ranges: Vec<(IpAddr, IpAddr, bool)>,
}

fn mask4(b: u8) -> u32 {
    if b == 0 {
        0
    } else {
        u32::MAX << (32 - b as u32)
    }
}

fn mask6(b: u8) -> u128 {
    if b == 0 {
        0
    } else {
        u128::MAX << (128 - b as u32)
    }
}

impl AddrTable {
    pub fn insert(&mut self, addr: &Addr, neg: bool) {
        match addr {
            Addr::Net {
                ip: IpAddr::V4(a),
                bits,
            } => {
                let k = u32::from(*a) & mask4(*bits);
                self.v4.entry(*bits).or_default().insert(k, neg);
                if !self.v4_lens.contains(bits) {
                    self.v4_lens.push(*bits);
                    self.v4_lens.sort_unstable_by(|a, b| b.cmp(a));
                }
            }
            Addr::Net {
                ip: IpAddr::V6(a),
                bits,
            } => {
                let k = u128::from(*a) & mask6(*bits);
                self.v6.entry(*bits).or_default().insert(k, neg);
                if !self.v6_lens.contains(bits) {
                    self.v6_lens.push(*bits);
                    self.v6_lens.sort_unstable_by(|a, b| b.cmp(a));
                }
            }
            Addr::Range { lo, hi } => self.ranges.push((*lo, *hi, neg)),
            _ => {}
        }
    }

    pub fn remove(&mut self, addr: &Addr) -> bool {
        match addr {
            Addr::Net {
                ip: IpAddr::V4(a),
                bits,
            } => self
                .v4
                .get_mut(bits)
                .and_then(|m| m.remove(&(u32::from(*a) & mask4(*bits))))
                .is_some(),
            Addr::Net {
                ip: IpAddr::V6(a),
                bits,
            } => self
                .v6
                .get_mut(bits)
                .and_then(|m| m.remove(&(u128::from(*a) & mask6(*bits))))
                .is_some(),
            _ => false,
        }
    }

    pub fn len(&self) -> usize {
        self.v4.values().map(|m| m.len()).sum::<usize>()
            + self.v6.values().map(|m| m.len()).sum::<usize>()
            + self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The non-negated networks, for picking translation addresses.
    pub fn entries(&self) -> Vec<(IpAddr, u8)> {
        let mut v: Vec<(IpAddr, u8)> = Vec::new();
        for (b, m) in &self.v4 {
            for (k, neg) in m {
                if !neg {
                    v.push((IpAddr::V4((*k).into()), *b));
                }
            }
        }
        for (b, m) in &self.v6 {
            for (k, neg) in m {
                if !neg {
                    v.push((IpAddr::V6((*k).into()), *b));
                }
            }
        }
        v.sort();
        v
    }

    /// Does the table match `ip` (most specific entry, not negated)?
    pub fn contains(&self, ip: &IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => {
                let x = u32::from(*a);
                for &b in &self.v4_lens {
                    if let Some(neg) = self.v4.get(&b).and_then(|m| m.get(&(x & mask4(b)))) {
                        return !neg;
                    }
                }
            }
            IpAddr::V6(a) => {
                let x = u128::from(*a);
                for &b in &self.v6_lens {
                    if let Some(neg) = self.v6.get(&b).and_then(|m| m.get(&(x & mask6(b)))) {
                        return !neg;
                    }
                }
            }
        }
        self.ranges
            .iter()
            .find(|(lo, hi, _)| lo <= ip && ip <= hi && lo.is_ipv4() == ip.is_ipv4())
            .is_some_and(|(_, _, neg)| !neg)
    }
}

/// All tables of a configuration, by name.
#[derive(Clone, Debug, Default)]
pub struct TableSet {
    pub tables: HashMap<String, AddrTable>,
}

impl TableSet {
    pub fn from_config(c: &Config) -> TableSet {
        let mut ts = TableSet::default();
        for t in &c.tables {
            let tab = ts.tables.entry(t.name.clone()).or_default();
            for TableEntry { neg, addr } in t.entries() {
                tab.insert(addr, *neg);
            }
        }
        ts
    }

    pub fn contains(&self, name: &str, ip: &IpAddr) -> bool {
        self.tables.get(name).is_some_and(|t| t.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Addr {
        let (a, b) = s.split_once('/').unwrap();
        Addr::Net {
            ip: a.parse().unwrap(),
            bits: b.parse().unwrap(),
        }
    }

    #[test]
    fn longest_prefix_with_negation() {
        let mut t = AddrTable::default();
        t.insert(&net("10.0.0.0/8"), false);
        t.insert(&net("10.1.0.0/16"), true);
        t.insert(&net("10.1.2.0/24"), false);
        t.insert(&net("2001:db8::/32"), false);
        assert!(t.contains(&"10.9.9.9".parse().unwrap()));
        assert!(!t.contains(&"10.1.9.9".parse().unwrap()));
        assert!(t.contains(&"10.1.2.3".parse().unwrap()));
        assert!(!t.contains(&"11.0.0.1".parse().unwrap()));
        assert!(t.contains(&"2001:db8::5".parse().unwrap()));
        assert!(!t.contains(&"2001:db9::5".parse().unwrap()));
        assert!(t.remove(&net("10.1.0.0/16")));
        assert!(t.contains(&"10.1.9.9".parse().unwrap()));
    }
}
