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
    /// When entries were added at run time (seconds on the caller's clock),
    /// for `expire`; entries without a stamp date from `born`.
    stamps: HashMap<(IpAddr, u8), u64>,
    pub born: u64,
    /// Declared `const` in pf.conf: the table commands may not change it
    /// (pfctl: Operation not permitted); a reload replaces it.
    pub constant: bool,
    /// Defined by a file given to `anchor A load`: goes with the anchor's
    /// rules (its flush, or a load whose file no longer defines it).
    pub anchor_load: bool,
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

/// A network's key in a table (and for its time stamp): the address
/// masked to its prefix length, and the length.
pub fn net_key(addr: &Addr) -> Option<(IpAddr, u8)> {
    match addr {
        Addr::Net {
            ip: IpAddr::V4(a),
            bits,
        } => Some((IpAddr::V4((u32::from(*a) & mask4(*bits)).into()), *bits)),
        Addr::Net {
            ip: IpAddr::V6(a),
            bits,
        } => Some((IpAddr::V6((u128::from(*a) & mask6(*bits)).into()), *bits)),
        _ => None,
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
        if let Some(k) = net_key(addr) {
            self.stamps.remove(&k);
        }
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

    /// An empty table created at time `now` (seconds).
    pub fn born_at(now: u64) -> AddrTable {
        AddrTable {
            born: now,
            ..Default::default()
        }
    }

    /// Is exactly this network (address and prefix length) an entry?
    pub fn has_exact(&self, addr: &Addr) -> bool {
        match addr {
            Addr::Net {
                ip: IpAddr::V4(a),
                bits,
            } => self
                .v4
                .get(bits)
                .is_some_and(|m| m.contains_key(&(u32::from(*a) & mask4(*bits)))),
            Addr::Net {
                ip: IpAddr::V6(a),
                bits,
            } => self
                .v6
                .get(bits)
                .is_some_and(|m| m.contains_key(&(u128::from(*a) & mask6(*bits)))),
            _ => false,
        }
    }

    /// Add or replace an entry at time `now` (seconds).
    pub fn insert_at(&mut self, addr: &Addr, neg: bool, now: u64) {
        self.insert(addr, neg);
        if let Some(k) = net_key(addr) {
            self.stamps.insert(k, now);
        }
    }

    /// The negation of exactly this network's entry, if it is one.
    fn neg_of(&self, ip: &IpAddr, bits: u8) -> Option<bool> {
        match ip {
            IpAddr::V4(a) => self.v4.get(&bits)?.get(&u32::from(*a)).copied(),
            IpAddr::V6(a) => self.v6.get(&bits)?.get(&u128::from(*a)).copied(),
        }
    }

    /// Take the ages of `old`'s entries that this table, replacing it,
    /// holds too (the same network, negated alike): pf's commit of a
    /// table's new contents keeps such an entry with its time, and only
    /// the entries it adds (or turns) date from the commit (`born`).
    pub fn keep_ages_of(&mut self, old: &AddrTable) {
        // Without sorting, and stamping only the minority: the entries of
        // a big list reloaded unchanged share the old table's `born` and
        // need no stamp each (the first version stamped every kept entry,
        // a map as large as the table, built under the data plane's lock).
        let now = self.born;
        let kept_age = |neg: bool, ip: IpAddr, bits: u8| {
            (old.neg_of(&ip, bits) == Some(neg))
                .then(|| *old.stamps.get(&(ip, bits)).unwrap_or(&old.born))
        };
        let mut entries: Vec<(bool, IpAddr, u8)> = Vec::with_capacity(self.len());
        for (b, m) in &self.v4 {
            entries.extend(m.iter().map(|(k, n)| (*n, IpAddr::V4((*k).into()), *b)));
        }
        for (b, m) in &self.v6 {
            entries.extend(m.iter().map(|(k, n)| (*n, IpAddr::V6((*k).into()), *b)));
        }
        let ages: Vec<Option<u64>> = entries
            .iter()
            .map(|&(neg, ip, bits)| kept_age(neg, ip, bits))
            .collect();
        let kept = ages.iter().filter(|a| a.is_some()).count();
        // The commonest age is `born`; the others are stamped.
        let born = if kept * 2 >= entries.len() {
            old.born
        } else {
            now
        };
        self.born = born;
        for (&(_, ip, bits), age) in entries.iter().zip(ages) {
            let at = age.unwrap_or(now);
            if at != born {
                self.stamps.insert((ip, bits), at);
            }
        }
    }

    /// Remove the entries added before `cutoff` (seconds); returns them.
    pub fn expire(&mut self, cutoff: u64) -> Vec<(bool, IpAddr, u8)> {
        let old: Vec<(bool, IpAddr, u8)> = self
            .all()
            .into_iter()
            .filter(|(_, ip, b)| *self.stamps.get(&(*ip, *b)).unwrap_or(&self.born) < cutoff)
            .collect();
        for (_, ip, bits) in &old {
            self.remove(&Addr::Net {
                ip: *ip,
                bits: *bits,
            });
        }
        old
    }

    /// Every network entry, negated ones included, in address order.
    pub fn all(&self) -> Vec<(bool, IpAddr, u8)> {
        let mut v: Vec<(bool, IpAddr, u8)> = Vec::new();
        for (b, m) in &self.v4 {
            v.extend(m.iter().map(|(k, n)| (*n, IpAddr::V4((*k).into()), *b)));
        }
        for (b, m) in &self.v6 {
            v.extend(m.iter().map(|(k, n)| (*n, IpAddr::V6((*k).into()), *b)));
        }
        v.sort_by_key(|(_, ip, b)| (*ip, *b));
        v
    }

    /// The address ranges (`a - b`), which `all` leaves out.
    pub fn ranges(&self) -> &[(IpAddr, IpAddr, bool)] {
        &self.ranges
    }

    /// Remove every entry.
    pub fn clear(&mut self) -> usize {
        let n = self.len();
        let (born, constant, anchor_load) = (self.born, self.constant, self.anchor_load);
        *self = AddrTable::default();
        self.born = born;
        self.constant = constant;
        self.anchor_load = anchor_load;
        n
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

/// pf's default `set limit table-entries`.
pub const DEFAULT_TABLE_ENTRIES: usize = 200_000;
/// pf's default `set limit tables` (PFR_KTABLE_HIWAT).
pub const DEFAULT_TABLES: usize = 1_000;

/// All tables of a configuration, by name.
#[derive(Clone, Debug, Default)]
pub struct TableSet {
    pub tables: HashMap<String, AddrTable>,
    /// `set limit table-entries` (None: pf's 200,000): entries added at
    /// run time (table commands, `overload`) stop there, as pf's pool
    /// refuses them; pf.conf's own tables always load.
    pub entries_limit: Option<usize>,
    /// `set limit tables` (None: pf's 1,000): a ruleset needing more is
    /// refused at load, and no table is made at run time past it.
    pub tables_limit: Option<usize>,
    /// Entries `overload` could not add for the limit.
    pub refused: u64,
    /// Tables pf.conf defines without addresses (no `{ }` list, no
    /// `file`): a reload keeps what they hold, as pfctl loads them
    /// without PFR_FLAG_ADDRSTOO (`table <bruteforce> persist` keeps the
    /// addresses `overload` put there).
    pub defined_empty: std::collections::HashSet<String>,
}

impl TableSet {
    /// Entries in every table.
    pub fn entries(&self) -> usize {
        self.tables.values().map(AddrTable::len).sum()
    }

    pub fn limit(&self) -> usize {
        self.entries_limit.unwrap_or(DEFAULT_TABLE_ENTRIES)
    }

    pub fn tables_limit(&self) -> usize {
        self.tables_limit.unwrap_or(DEFAULT_TABLES)
    }

    /// Whether one more table stays within `set limit tables`.
    pub fn room_for_table(&self) -> bool {
        self.tables.len() < self.tables_limit()
    }

    /// Whether `n` more entries stay within the limit.
    pub fn room_for(&self, n: usize) -> bool {
        self.entries().saturating_add(n) <= self.limit()
    }

    pub fn from_config(c: &Config) -> TableSet {
        let mut ts = TableSet {
            entries_limit: c.options.iter().rev().find_map(|o| match o {
                palisade_conf::ir::SetOption::Limit(n, v) if n == "table-entries" => {
                    Some(*v as usize)
                }
                _ => None,
            }),
            tables_limit: c.options.iter().rev().find_map(|o| match o {
                palisade_conf::ir::SetOption::Limit(n, v) if n == "tables" => Some(*v as usize),
                _ => None,
            }),
            ..Default::default()
        };
        let mut with_addresses = std::collections::HashSet::new();
        for t in &c.tables {
            let tab = ts.tables.entry(t.name.clone()).or_default();
            tab.constant |= t.constant;
            for TableEntry { neg, addr } in t.entries() {
                tab.insert(addr, *neg);
            }
            if t.init.is_empty() {
                ts.defined_empty.insert(t.name.clone());
            } else {
                with_addresses.insert(t.name.clone());
            }
        }
        ts.defined_empty.retain(|n| !with_addresses.contains(n));
        ts
    }

    pub fn contains(&self, name: &str, ip: &IpAddr) -> bool {
        self.tables.get(name).is_some_and(|t| t.contains(ip))
    }
}

/// Whether `table` is anchor `anchor`'s own (`ANCHOR/NAME`, not a table
/// of an anchor below it).
pub fn of_anchor(table: &str, anchor: &str) -> bool {
    table
        .strip_prefix(anchor)
        .and_then(|r| r.strip_prefix('/'))
        .is_some_and(|r| !r.contains('/'))
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

    /// A flushed table stays what it was (`const`, an anchor load's):
    /// only its entries go.
    #[test]
    fn clear_keeps_what_the_table_is() {
        let mut t = AddrTable::born_at(7);
        t.insert(&net("192.0.2.0/24"), false);
        t.constant = true;
        t.anchor_load = true;
        assert_eq!(t.clear(), 1);
        assert!(t.constant && t.anchor_load && t.born == 7 && t.is_empty());
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
        assert!(t.has_exact(&net("10.0.0.0/8")) && !t.has_exact(&net("10.0.0.0/9")));
    }

    #[test]
    fn expire_by_age() {
        let mut t = AddrTable {
            born: 100,
            ..Default::default()
        };
        t.insert(&net("192.0.2.0/24"), false);
        t.insert_at(&net("198.51.100.1/32"), false, 150);
        t.insert_at(&net("2001:db8::1/128"), true, 200);
        // Entries from before 160: the loaded one (born at 100) and one added.
        let gone = t.expire(160);
        assert_eq!(gone.len(), 2);
        assert_eq!(t.all(), vec![(true, "2001:db8::1".parse().unwrap(), 128)]);
        assert_eq!(t.clear(), 1);
        assert!(t.is_empty());
    }

    /// A list reloaded unchanged keeps its entries' age with no stamp
    /// each (a review: every kept entry was stamped, a map as large as
    /// the table); a new entry dates from the reload; an entry turned
    /// (negated now) is new; expiry sees each age.
    #[test]
    fn kept_ages_cost_no_stamp_per_entry() {
        let mut old = AddrTable::born_at(100);
        for i in 0..200u32 {
            old.insert(&net(&format!("198.18.{}.{}/32", i / 250, i % 250)), false);
        }
        old.insert_at(&net("192.0.2.7/32"), false, 150);
        let mut new = AddrTable::born_at(300);
        for i in 0..200u32 {
            new.insert(&net(&format!("198.18.{}.{}/32", i / 250, i % 250)), false);
        }
        new.insert(&net("192.0.2.7/32"), false);
        new.insert(&net("203.0.113.1/32"), false);
        new.keep_ages_of(&old);
        assert_eq!(new.born, 100);
        assert_eq!(new.stamps.len(), 2, "{:?}", new.stamps);
        let mut e = new.clone();
        assert_eq!(e.expire(101).len(), 200, "the 200 from 100");
        assert_eq!(e.expire(151).len(), 1, "the one added at 150");
        assert_eq!(e.expire(301).len(), 1, "the new one");
        // Mostly new: `born` is the reload's, the kept few stamped.
        let mut fresh = AddrTable::born_at(300);
        for i in 0..50u32 {
            fresh.insert(&net(&format!("203.0.113.{i}/32")), false);
        }
        fresh.insert(&net("198.18.0.1/32"), false);
        fresh.insert(&net("198.18.0.2/32"), true);
        fresh.keep_ages_of(&old);
        assert_eq!(fresh.born, 300);
        assert_eq!(
            fresh.stamps.len(),
            1,
            "only the kept one: {:?}",
            fresh.stamps
        );
        assert_eq!(fresh.clone().expire(101).len(), 1);
    }
}
