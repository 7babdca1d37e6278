//! One filter per worker, each with its own state table, deciding as one
//! filter would (docs/workers.md).
//!
//! A data-plane worker receives the packets the kernel's fanout hash
//! gives it: both directions of a 4-tuple, so most connections' packets
//! all reach one worker, whose own table holds their state and whose own
//! lock is the only one a packet takes. A translated connection's reply
//! carries another tuple and may reach another worker; its table misses,
//! the shared directory names the table that has the state, and the
//! packet is decided there (`Decision::elsewhere`), under that table's
//! lock, taken after the worker has let go of its own (so no two locks
//! are ever held together and no order between them is needed).
//!
//! Exactness: a connection has one state whatever worker its packets
//! reach (a new state's keys are claimed in the directory, checked and
//! recorded at once, and refused if any table holds them; a translation
//! port another table holds is passed over), `set limit states` and the
//! adaptive timeouts count all tables' states. What counts per source, per rule or per pool across
//! connections (`max`, source tracking and its limits and overload
//! tables, `sticky-address`, `round-robin` and `least-states` pools)
//! would need one count for every table: a ruleset that uses any of them
//! gets one table for all workers, which then take turns as before.
//! Also per worker, so not exact: `set limit frags` (each worker's
//! reassembler holds up to the limit; a datagram's fragments all reach
//! one worker, hashed on its addresses).

use std::sync::{Arc, Mutex, MutexGuard};

use palisade_conf::ir::{Config, Direction, PoolType, Ruleset, SetOption, StateOpts};

use crate::filter::{Decision, Filter};
use crate::state::directory::Directory;

/// How often a packet is handed on before it is decided where it is
/// (a state that moved twice while the packet was on its way).
const MAX_HOPS: u32 = 3;

pub struct Workers {
    filters: Vec<Padded>,
    directory: Option<Arc<Directory>>,
}

/// A worker's filter on cache lines of its own: the filters' per-packet
/// counters and their locks, side by side in one vector, would otherwise
/// share lines between workers.
#[repr(align(128))]
struct Padded(Mutex<Filter>);

impl Workers {
    /// Filters for `n` workers (at most 255), made by `make` (each as
    /// `Filter::new` makes one, for the same engine and options). One
    /// filter for all of them when `n` is 1 or the ruleset needs one
    /// table (`needs_one_table`).
    pub fn new(n: usize, config: &Config, mut make: impl FnMut() -> Filter) -> Workers {
        let n = n.clamp(1, 255);
        if n == 1 || needs_one_table(config) {
            return Workers {
                filters: vec![Padded(Mutex::new(make()))],
                directory: None,
            };
        }
        let d = Arc::new(Directory::new(n as u8));
        let filters = (0..n)
            .map(|t| {
                let mut f = make();
                f.join(d.clone(), t as u8);
                Padded(Mutex::new(f))
            })
            .collect();
        Workers {
            filters,
            directory: Some(d),
        }
    }

    /// How many tables (filters) there are: one, or one per worker.
    pub fn tables(&self) -> usize {
        self.filters.len()
    }

    /// The table of worker `w`'s packets.
    pub fn table_of(&self, worker: usize) -> usize {
        worker % self.filters.len()
    }

    /// Filter `t`, locked (a worker locks its own for a batch, and then
    /// hands the packets decided `elsewhere` to `finish`, after letting
    /// go of it).
    pub fn lock(&self, t: usize) -> MutexGuard<'_, Filter> {
        self.filters[t]
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The clock moves for every table (each expires its states when its
    /// worker's packets come, and a table no packet reaches would keep
    /// them: the daemon's timer calls this).
    pub fn tick(&self, now_ms: u64) {
        for t in 0..self.filters.len() {
            self.lock(t).tick(now_ms);
        }
    }

    /// The table holding a state of this id (pfsync, `state kill --id`).
    pub fn table_of_id(&self, id: u64) -> usize {
        let t = self.lock(0).states.table_of_id(id) as usize;
        t % self.filters.len()
    }

    /// States in all tables.
    pub fn states(&self) -> usize {
        match &self.directory {
            Some(d) => d.live(),
            None => self.lock(0).states.len(),
        }
    }

    /// Decide a packet worker `worker` received, as
    /// `Filter::process_received` does.
    #[allow(clippy::too_many_arguments)]
    pub fn process(
        &self,
        worker: usize,
        ip: &mut [u8],
        iface: &str,
        dir: Direction,
        now_ms: u64,
        random: u32,
        received_on: Option<&str>,
        tag: Option<&str>,
    ) -> Decision {
        let d = self.lock(self.table_of(worker)).process_received(
            ip,
            iface,
            dir,
            now_ms,
            random,
            received_on,
            tag,
        );
        self.finish(d, ip, iface, dir, now_ms, random, received_on, tag)
    }

    /// A decision as it came from a worker's filter: when it is
    /// `elsewhere`, the packet (or the datagram it completed) decided in
    /// the table that holds its state. To be called with no filter
    /// locked.
    #[allow(clippy::too_many_arguments)]
    pub fn finish(
        &self,
        mut d: Decision,
        ip: &mut [u8],
        iface: &str,
        dir: Direction,
        now_ms: u64,
        random: u32,
        received_on: Option<&str>,
        tag: Option<&str>,
    ) -> Decision {
        let mut hops = 0;
        while let Some(t) = d.elsewhere {
            hops += 1;
            let mut f = self.lock(t as usize % self.filters.len());
            f.set_redirects(hops < MAX_HOPS);
            let next = match d.reassembled.take() {
                Some(mut whole) => {
                    let mut n = f.process_received(
                        &mut whole,
                        iface,
                        dir,
                        now_ms,
                        random,
                        received_on,
                        tag,
                    );
                    n.reassembled = Some(whole);
                    n.refragment = d.refragment.take();
                    n
                }
                None => f.process_received(ip, iface, dir, now_ms, random, received_on, tag),
            };
            f.set_redirects(true);
            d = next;
        }
        d
    }
}

/// Does the ruleset count something across connections that every
/// table would have to share (see the module's note)? `set
/// state-defaults` counts as its rules'.
pub fn needs_one_table(config: &Config) -> bool {
    fn opts_global(o: &StateOpts) -> bool {
        // (A rule's own adaptive timeouts count its states, as `max`.)
        o.max.is_some()
            || o.timeouts
                .iter()
                .any(|(t, v)| *t == palisade_conf::ir::Timeout::AdaptiveStart && *v > 0)
            || o.source_track.is_some()
            || o.max_src_states.is_some()
            || o.max_src_conn.is_some()
            || o.max_src_conn_rate.is_some()
            || o.max_src_nodes.is_some()
            || o.overload.is_some()
    }
    fn pool_global(p: &palisade_conf::ir::Pool) -> bool {
        p.sticky || matches!(p.kind, PoolType::RoundRobin | PoolType::LeastStates)
    }
    fn ruleset(rs: &Ruleset) -> bool {
        rs.rules.iter().any(|r| {
            opts_global(&r.state_opts)
                || r.nat.as_ref().is_some_and(pool_global)
                || r.rdr.as_ref().is_some_and(pool_global)
                || r.route.as_ref().is_some_and(|(_, p)| pool_global(p))
                || r.af_to
                    .as_ref()
                    .is_some_and(|(_, a, b)| pool_global(a) || b.as_ref().is_some_and(pool_global))
                || r.inline.as_ref().is_some_and(ruleset)
        })
    }
    config.options.iter().any(|o| match o {
        SetOption::StateDefaults(o) => opts_global(o),
        _ => false,
    }) || ruleset(&config.main)
        || config.load_anchors.iter().any(|a| ruleset(&a.ruleset))
}
