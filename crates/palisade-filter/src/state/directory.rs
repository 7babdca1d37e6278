//! Which state table holds a key, when each worker has its own table
//! (docs/workers.md).
//!
//! A worker looks a packet up in its own table first, with no lock but
//! its own; the directory answers only what that table cannot: whether
//! another worker's table holds a state with the packet's key (a
//! translated connection's reply, whose tuple the kernel's fanout hash
//! may send to the other worker), whether a key or a translation port is
//! taken in any table, and how many states there are in all (`set limit
//! states`, adaptive timeouts). It is written when a state is made or
//! goes, never for a packet of a known state, and is split into shards,
//! each behind its own lock, so that two workers making states rarely
//! wait for each other.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use super::FlowKey;

const SHARDS: usize = 64;

/// One table's entry for a key: which table, on which side (wire 1,
/// stack 2, both 3), and the interface an if-bound state is bound to.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    table: u8,
    sides: u8,
    bound: Option<Arc<str>>,
}

type Shard = HashMap<FlowKey, Vec<Entry>>;

pub struct Directory {
    shards: Box<[Mutex<Shard>]>,
    hasher: hashbrown::DefaultHashBuilder,
    live: AtomicUsize,
    tables: u8,
}

impl Directory {
    /// A directory for `tables` state tables (at most 255).
    pub fn new(tables: u8) -> Directory {
        Directory {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: Default::default(),
            live: AtomicUsize::new(0),
            tables: tables.max(1),
        }
    }

    /// How many tables share it.
    pub fn tables(&self) -> u8 {
        self.tables
    }

    /// States in all tables.
    pub fn live(&self) -> usize {
        self.live.load(Relaxed)
    }

    fn shard_of(&self, k: &FlowKey) -> usize {
        self.hasher.hash_one(k) as usize % SHARDS
    }

    fn lock(&self, i: usize) -> std::sync::MutexGuard<'_, Shard> {
        // A worker that panicked while holding a shard left it whole
        // (every change is one insert or remove): carry on with it.
        self.shards[i]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn shard(&self, k: &FlowKey) -> std::sync::MutexGuard<'_, Shard> {
        self.lock(self.shard_of(k))
    }

    /// Record a new state of `table` with these keys (one entry when they
    /// are the same), bound to `bound` when if-bound, unless another
    /// table holds a state one of them clashes with
    /// (`StateTable::key_taken`'s rule): then Err(that table), and
    /// nothing is recorded. Checked and recorded under the keys' shards'
    /// locks (both, taken in index order), so that two workers making a
    /// state with the same key at once cannot both succeed.
    pub(super) fn claim(
        &self,
        table: u8,
        wire: &FlowKey,
        stack: &FlowKey,
        bound: Option<&str>,
    ) -> Result<(), u8> {
        let keys: Vec<(&FlowKey, u8)> = if wire == stack {
            vec![(wire, 3)]
        } else {
            vec![(wire, 1), (stack, 2)]
        };
        let (a, b) = (self.shard_of(wire), self.shard_of(stack));
        let (lo, hi) = (a.min(b), a.max(b));
        let mut first = self.lock(lo);
        let mut second = (hi != lo).then(|| self.lock(hi));
        let clash = |sh: &Shard, k: &FlowKey, sides: u8| {
            sh.get(k)?
                .iter()
                .find(|e| {
                    e.table != table
                        && e.sides & sides != 0
                        && (bound.is_none() || e.bound.is_none() || e.bound.as_deref() == bound)
                })
                .map(|e| e.table)
        };
        for &(k, sides) in &keys {
            let sh = match &second {
                Some(s) if self.shard_of(k) == hi => &**s,
                _ => &*first,
            };
            if let Some(t) = clash(sh, k, sides) {
                return Err(t);
            }
        }
        let bound: Option<Arc<str>> = bound.map(Arc::from);
        for &(k, sides) in &keys {
            let sh = match &mut second {
                Some(s) if self.shard_of(k) == hi => &mut **s,
                _ => &mut *first,
            };
            sh.entry(k.clone()).or_default().push(Entry {
                table,
                sides,
                bound: bound.clone(),
            });
        }
        self.live.fetch_add(1, Relaxed);
        Ok(())
    }

    /// The state `add` recorded is gone.
    pub(super) fn remove(&self, table: u8, wire: &FlowKey, stack: &FlowKey, bound: Option<&str>) {
        let keys: &[(&FlowKey, u8)] = if wire == stack {
            &[(wire, 3)]
        } else {
            &[(wire, 1), (stack, 2)]
        };
        for &(k, sides) in keys {
            let mut sh = self.shard(k);
            if let Some(v) = sh.get_mut(k) {
                if let Some(i) = v.iter().position(|e| {
                    e.table == table && e.sides == sides && e.bound.as_deref() == bound
                }) {
                    v.swap_remove(i);
                }
                if v.is_empty() {
                    sh.remove(k);
                }
            }
        }
        self.live.fetch_sub(1, Relaxed);
    }

    /// Another table than `own` holding a state a packet with key `k`
    /// (as indexed: `norm`ed) on `need`'s side, seen on `iface`, belongs
    /// to, as `StateTable::lookup` would find it there.
    pub(super) fn elsewhere(&self, own: u8, k: &FlowKey, need: u8, iface: &str) -> Option<u8> {
        let sh = self.shard(k);
        sh.get(k)?
            .iter()
            .find(|e| {
                e.table != own
                    && e.sides & need != 0
                    && e.bound.as_deref().is_none_or(|b| b == iface)
            })
            .map(|e| e.table)
    }

    /// Is `k` a key on `need`'s side of a state in another table than
    /// `own` that a new state (bound to `iface` when `bound`) would
    /// clash with (`StateTable::key_taken`'s rule)? A hint only (a
    /// translation port another table holds is passed over); `claim`
    /// decides.
    pub(super) fn taken_elsewhere(
        &self,
        own: u8,
        k: &FlowKey,
        need: u8,
        bound: bool,
        iface: &str,
    ) -> Option<u8> {
        let sh = self.shard(k);
        sh.get(k)?
            .iter()
            .find(|e| {
                e.table != own
                    && e.sides & need != 0
                    && (!bound || e.bound.as_deref().is_none_or(|b| b == iface))
            })
            .map(|e| e.table)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(sport: u16) -> FlowKey {
        FlowKey {
            proto: 6,
            src: "192.0.2.1".parse().unwrap(),
            dst: "198.51.100.1".parse().unwrap(),
            sport,
            dport: 80,
        }
    }

    #[test]
    fn entries_come_and_go_with_their_sides_and_bindings() {
        let d = Directory::new(2);
        let (w, s) = (key(1), key(2));
        assert_eq!(d.claim(0, &w, &s, None), Ok(()));
        assert_eq!(d.claim(1, &key(3), &key(3), Some("em0")), Ok(()));
        // The same keys from another table: refused, nothing recorded.
        assert_eq!(d.claim(1, &w, &key(9), None), Err(0));
        assert_eq!(d.claim(0, &key(8), &key(3), None), Err(1));
        // Bound to another interface: no clash with a bound state.
        assert_eq!(d.claim(0, &key(7), &key(3), Some("em1")), Ok(()));
        d.remove(0, &key(7), &key(3), Some("em1"));
        assert_eq!(d.live(), 2);
        // Found from the other table only, on the right side.
        assert_eq!(d.elsewhere(1, &w, 1, "em1"), Some(0));
        assert_eq!(d.elsewhere(0, &w, 1, "em1"), None);
        assert_eq!(d.elsewhere(1, &w, 2, "em1"), None);
        assert_eq!(d.elsewhere(1, &s, 2, "em1"), Some(0));
        // A bound state is found on its interface only; a bound new state
        // on another interface does not clash with it, a floating one does.
        assert_eq!(d.elsewhere(0, &key(3), 1, "em1"), None);
        assert_eq!(d.elsewhere(0, &key(3), 2, "em0"), Some(1));
        assert_eq!(d.taken_elsewhere(0, &key(3), 1, true, "em1"), None);
        assert_eq!(d.taken_elsewhere(0, &key(3), 1, false, "em1"), Some(1));
        d.remove(0, &w, &s, None);
        d.remove(1, &key(3), &key(3), Some("em0"));
        assert_eq!(d.live(), 0);
        assert_eq!(d.elsewhere(1, &w, 1, "em1"), None);
        assert!(d.shards.iter().all(|s| s.lock().unwrap().is_empty()));
    }
}
