//! Two sync cores on a virtual clock, each with a toy state table that
//! applies the other's events: replication of inserts, updates and
//! deletes, batching and maxupd, repair of a lost message by UPD_REQ, the
//! bulk update after a restart with CARP's demotion lifted at BUS END, a
//! silent peer that cannot keep a node demoted, the sync link's fall and
//! return (demoted while down, the table asked for again when back),
//! refused packets counted.

use std::collections::BTreeMap;

use palisade_pfsync::sync::{
    state_ref, upd_c, Auth, Event, Refused, Sync, SyncConfig, BULK_DEMOTE, LINK_DEMOTE,
};
use palisade_pfsync::{StateMsg, StateRef};

const MS: u64 = 1_000;
const S: u64 = 1_000_000;

/// A firewall: its core, its table, the demotion CARP would see.
struct Node {
    sync: Sync,
    table: BTreeMap<StateRef, StateMsg>,
    demote: i32,
    done: Vec<bool>,
    drops: Vec<Refused>,
    acked: Vec<StateRef>,
}

impl Node {
    fn new(creator: u32) -> Node {
        Node {
            sync: Sync::new(SyncConfig {
                creator,
                ..SyncConfig::default()
            }),
            table: BTreeMap::new(),
            demote: 0,
            done: Vec::new(),
            drops: Vec::new(),
            acked: Vec::new(),
        }
    }

    fn state(&self, id: u64) -> StateMsg {
        self.table[&StateRef {
            id,
            creatorid: self.creator(),
        }]
    }

    fn creator(&self) -> u32 {
        // (every test node's creator is its first state's)
        self.table.keys().next().map(|r| r.creatorid).unwrap_or(0)
    }

    /// A local state appears / changes / goes.
    fn insert(&mut self, now: u64, s: StateMsg) {
        self.table.insert(state_ref(&s), s);
        self.sync.insert(now, s);
    }
    fn update(&mut self, now: u64, s: StateMsg) {
        self.table.insert(state_ref(&s), s);
        self.sync.update(now, upd_c(&s));
    }
    fn delete(&mut self, now: u64, r: StateRef) {
        self.table.remove(&r);
        self.sync.delete(now, r);
    }

    /// Apply what the core says.
    fn events(&mut self, now: u64) {
        while let Some(e) = self.sync.poll_event() {
            match e {
                Event::State(s) => {
                    self.table.insert(state_ref(&s), *s);
                    if s.state_flags & palisade_pfsync::wire::PFSTATE_ACK != 0 {
                        self.sync.ack(now, state_ref(&s));
                    }
                }
                Event::Update(u) => {
                    let r = StateRef {
                        id: u.id,
                        creatorid: u.creatorid,
                    };
                    match self.table.get_mut(&r) {
                        Some(s) => {
                            s.src = u.src;
                            s.dst = u.dst;
                            s.expire = u.expire;
                        }
                        None => self.sync.unknown(now, r),
                    }
                }
                Event::Delete(r) => {
                    self.table.remove(&r);
                }
                Event::Clear(c) => self.table.retain(|r, _| r.creatorid != c.creatorid),
                Event::StateWanted(r) => {
                    if let Some(s) = self.table.get(&r) {
                        let s = *s;
                        self.sync.send_state(now, s);
                    }
                }
                Event::BulkRequested => {
                    let all: Vec<StateMsg> = self.table.values().copied().collect();
                    self.sync.bulk_send(now, all);
                }
                Event::Demote(d, _) => self.demote += d,
                Event::BulkDone { complete, .. } => self.done.push(complete),
                Event::Dropped(d) => self.drops.push(d),
                Event::Acked(r) => self.acked.push(r),
            }
        }
    }
}

/// The two tables hold the same states, whatever their ages (a paced
/// bulk update ages each state by the time it waited to be sent).
fn same_states(a: &BTreeMap<StateRef, StateMsg>, b: &BTreeMap<StateRef, StateMsg>) -> bool {
    let strip = |t: &BTreeMap<StateRef, StateMsg>| -> Vec<StateMsg> {
        t.values()
            .map(|s| StateMsg {
                creation: 0,
                expire: 0,
                ..*s
            })
            .collect()
    };
    a.keys().eq(b.keys()) && strip(a) == strip(b)
}

fn state(creator: u32, id: u64, seq: u32) -> StateMsg {
    let mut s = StateMsg {
        id,
        creatorid: creator,
        proto: 6,
        expire: 86_400,
        ..StateMsg::default()
    };
    s.src.seqlo = seq;
    s
}

/// Two nodes on a link; `lose` drops the next packets a sends.
struct Pair {
    a: Node,
    b: Node,
    now: u64,
    /// Packets each way, for the tests to look at.
    a_sent: Vec<Vec<u8>>,
    b_sent: Vec<Vec<u8>>,
    lose_from_a: usize,
    b_up: bool,
}

impl Pair {
    fn new() -> Pair {
        Pair {
            a: Node::new(0xa),
            b: Node::new(0xb),
            now: 0,
            a_sent: Vec::new(),
            b_sent: Vec::new(),
            lose_from_a: 0,
            b_up: true,
        }
    }

    /// Run until `until`, in steps of 1 ms: timers, packets, events.
    fn run(&mut self, until: u64) {
        while self.now <= until {
            let now = self.now;
            for n in [&mut self.a, &mut self.b] {
                if n.sync.poll_timeout().is_some_and(|t| t <= now) {
                    n.sync.handle_timeout(now);
                }
            }
            for _ in 0..100 {
                let mut moved = false;
                while let Some(p) = self.a.sync.poll_transmit() {
                    moved = true;
                    self.a_sent.push(p.clone());
                    if self.lose_from_a > 0 {
                        self.lose_from_a -= 1;
                    } else if self.b_up {
                        self.b.sync.handle_packet(now, 255, &p);
                    }
                }
                while let Some(p) = self.b.sync.poll_transmit() {
                    moved = true;
                    self.b_sent.push(p.clone());
                    self.a.sync.handle_packet(now, 255, &p);
                }
                self.a.events(now);
                self.b.events(now);
                if !moved {
                    break;
                }
            }
            self.now += MS;
        }
    }
}

#[test]
fn inserts_updates_and_deletes_reach_the_peer_within_a_second() {
    let mut p = Pair::new();
    for id in 1..=3 {
        p.a.insert(0, state(0xa, id, 100));
    }
    p.run(900 * MS);
    assert!(p.b.table.is_empty(), "batched: nothing before flush_after");
    p.run(1_001 * MS);
    assert_eq!(p.b.table.len(), 3);
    assert_eq!(p.a_sent.len(), 1);
    // A packet's worth (5 states of 264 bytes in 1500) leaves at once.
    let t = p.now;
    for id in 4..=23 {
        p.a.insert(t, state(0xa, id, 100));
    }
    p.run(t);
    assert_eq!(p.b.table.len(), 23);
    assert_eq!(p.b.table, p.a.table);
    assert_eq!(p.a_sent.len(), 5, "{:?}", p.a.sync.stats());
    // Updates go as UPD_C, deletions as DEL_C.
    let t = p.now;
    p.a.update(t, state(0xa, 3, 555));
    p.a.delete(
        t,
        StateRef {
            id: 7,
            creatorid: 0xa,
        },
    );
    p.run(t + 1_100 * MS);
    assert_eq!(p.b.table, p.a.table);
    assert_eq!(p.b.state(3).src.seqlo, 555);
    let st = p.a.sync.stats();
    assert_eq!(st.messages_sent["UPD_C"], 1, "{st:?}");
    assert_eq!(st.messages_sent["DEL_C"], 1, "{st:?}");
    assert_eq!(p.b.sync.stats().messages_received["INS"], 23);
}

#[test]
fn a_state_inserted_and_deleted_before_it_was_sent_is_never_sent() {
    let mut p = Pair::new();
    p.a.insert(0, state(0xa, 1, 1));
    p.a.update(10 * MS, state(0xa, 1, 2));
    p.a.delete(
        20 * MS,
        StateRef {
            id: 1,
            creatorid: 0xa,
        },
    );
    p.run(2 * S);
    assert!(p.a_sent.is_empty());
    assert!(p.b.table.is_empty());
}

#[test]
fn maxupd_changes_send_the_state_at_once() {
    let mut p = Pair::new();
    p.a.insert(0, state(0xa, 1, 0));
    p.run(1_100 * MS);
    let before = p.a_sent.len();
    // maxupd (128) updates within a few ms: sent without waiting.
    let t = p.now;
    for k in 1..=128 {
        p.a.update(t, state(0xa, 1, k));
    }
    p.run(t + 5 * MS);
    assert_eq!(p.a_sent.len(), before + 1);
    assert_eq!(p.b.state(1).src.seqlo, 128);
}

#[test]
fn a_state_that_moved_push_bytes_goes_at_once_with_the_rest() {
    let mut p = Pair::new();
    p.a.insert(0, state(0xa, 1, 1000));
    p.a.insert(0, state(0xa, 2, 1000));
    p.a.insert(0, state(0xa, 3, u32::MAX - 100));
    p.run(1_100 * MS);
    let before = p.a_sent.len();
    let t = p.now;
    // Less than push_bytes (16 KB) since it was sent: it waits.
    p.a.update(t, state(0xa, 1, 1000 + 16_383));
    p.run(t + 5 * MS);
    assert_eq!(p.a_sent.len(), before);
    assert_eq!(p.b.state(1).src.seqlo, 1000);
    assert_eq!(p.a.sync.lag(t + 5 * MS), 5 * MS, "the change waits");
    // 16 KB: it goes at once, and the other pending change with it.
    let t = t + 6 * MS;
    p.a.update(t, state(0xa, 2, 1050));
    p.a.update(t, state(0xa, 1, 1000 + 16_384));
    p.run(t);
    assert_eq!(p.a_sent.len(), before + 1);
    assert_eq!(p.b.state(1).src.seqlo, 17_384);
    assert_eq!(p.b.state(2).src.seqlo, 1050);
    assert_eq!(p.a.sync.lag(t), 0);
    // The distance counts from what was last sent; across the wrap too.
    let t = t + 10 * MS;
    p.a.update(t, state(0xa, 1, 17_384 + 16_000));
    p.a.update(t, state(0xa, 3, 16_284));
    p.run(t);
    assert_eq!(p.a_sent.len(), before + 2);
    assert_eq!(p.b.state(3).src.seqlo, 16_284);
    assert_eq!(p.b.state(1).src.seqlo, 33_384);
    // A TCP state change alone waits (as any small change).
    let t = t + 10 * MS;
    let mut s = state(0xa, 2, 1051);
    s.src.state = 4;
    p.a.update(t, s);
    p.run(t + 5 * MS);
    assert_eq!(p.a_sent.len(), before + 2);
    assert_eq!(p.a.sync.stats().pushes, 2);
    // An insert not sent yet that moved 16 KB goes at once too.
    let t = t + 10 * MS;
    p.a.insert(t, state(0xa, 4, 5));
    p.a.update(t + MS, state(0xa, 4, 5 + 20_000));
    p.run(t + 2 * MS);
    assert_eq!(p.b.state(4).src.seqlo, 20_005);
    assert!(p.a.sync.stats().max_lag >= MS);
}

#[test]
fn a_taken_over_state_goes_back_to_its_creator_at_the_first_change() {
    let mut p = Pair::new();
    p.a.insert(0, state(0xa, 1, 1000));
    p.run(1_100 * MS);
    // b moves the state on (it took over): a hears at once, not in a
    // second, so a can take the connection back.
    let t = p.now;
    let mut s = p.b.table[&StateRef {
        id: 1,
        creatorid: 0xa,
    }];
    s.src.seqlo = 1001;
    p.b.table.insert(state_ref(&s), s);
    p.b.sync.update(t, upd_c(&s));
    p.run(t + MS);
    assert_eq!(
        p.a.table[&StateRef {
            id: 1,
            creatorid: 0xa
        }]
            .src
            .seqlo,
        1001
    );
}

#[test]
fn a_lost_insert_is_repaired_by_update_request() {
    let mut p = Pair::new();
    p.lose_from_a = 1;
    p.a.insert(0, state(0xa, 9, 1));
    p.run(1_100 * MS);
    assert!(p.b.table.is_empty(), "the INS was lost");
    // The next update of that state is unknown to b: it asks (UPD_REQ),
    // a answers with the whole state.
    let t = p.now;
    p.a.update(t, state(0xa, 9, 2));
    p.run(t + 1_100 * MS);
    assert_eq!(p.b.table, p.a.table);
    assert_eq!(p.b.sync.stats().messages_sent["UPD_REQ"], 1);
    assert_eq!(p.a.sync.stats().messages_sent["UPD"], 1);
}

#[test]
fn a_restarted_node_bulk_updates_and_is_demoted_until_bus_end() {
    let mut p = Pair::new();
    for id in 1..=1000 {
        p.a.insert(0, state(0xa, id, id as u32));
    }
    p.run(1_100 * MS);
    assert_eq!(p.b.table.len(), 1000);
    // b restarts with an empty table and asks for everything.
    p.b = Node::new(0xb);
    let t = p.now;
    p.b.sync.start(t);
    p.b.events(t);
    assert_eq!(
        p.b.demote, BULK_DEMOTE,
        "demoted while the bulk update runs"
    );
    p.run(t + 3 * MS);
    assert!(p.b.table.len() < 1000, "paced, not all at once");
    assert_eq!(p.b.demote, BULK_DEMOTE);
    p.run(t + 500 * MS);
    assert_eq!(p.b.table, p.a.table);
    assert_eq!(p.b.demote, 0, "lifted at BUS END");
    assert_eq!(p.b.done, [true]);
    let (asked, ended, complete) = p.b.sync.stats().last_bulk.unwrap();
    assert!(complete && asked == t && ended > t, "{asked} {ended}");
    assert_eq!(p.a.sync.stats().bulk_updates_sent, 1);
}

/// A table the peer needs longer than `bulk_retry` (5 s) to send: the
/// requester, hearing BUS START and then the states coming, does not ask
/// again (each request made the peer start over, so such a table never
/// arrived whole and the demotion lifted at the timeout with part of it).
#[test]
fn a_bulk_update_longer_than_the_retry_is_not_asked_for_again() {
    let mut p = Pair::new();
    // a sends 5 states per 10 ms: 4,000 states take 8 s.
    p.a.sync = Sync::new(SyncConfig {
        creator: 0xa,
        bulk_pace: 1,
        bulk_tick: 10 * MS,
        ..SyncConfig::default()
    });
    for id in 1..=4000 {
        p.a.insert(0, state(0xa, id, id as u32));
    }
    p.run(1_100 * MS);
    p.b = Node::new(0xb);
    let t = p.now;
    p.b.sync.start(t);
    p.b.events(t);
    p.run(t + 6 * S);
    assert!(p.b.table.len() < 4000, "still coming");
    assert_eq!(p.b.demote, BULK_DEMOTE);
    p.run(t + 10 * S);
    assert!(same_states(&p.b.table, &p.a.table));
    assert_eq!(p.b.demote, 0, "lifted at BUS END");
    assert_eq!(p.b.done, [true], "complete");
    assert_eq!(p.b.sync.stats().bulk_requests_sent, 1);
    assert_eq!(p.a.sync.stats().bulk_updates_sent, 1, "never started over");
    // Each state aged by the time it waited to be sent: the last ones,
    // sent some 8 s after the export, are 7 s or more older than exported.
    let last = &p.b.table[&StateRef {
        id: 4000,
        creatorid: 0xa,
    }];
    assert!(last.creation >= 7, "{}", last.creation);
    assert!(last.expire <= 86_400 - 7, "{}", last.expire);
}

/// A start's bulk update given up (the peer's side of the sync link was
/// down: it heard the request but its answer never came) is asked for
/// again as soon as a packet of the peer's is heard: the peer may carry
/// connections this node lacks, and nothing else would bring them.
#[test]
fn a_given_up_bulk_update_is_asked_for_again_when_the_peer_is_heard() {
    let mut p = Pair::new();
    for id in 1..=20 {
        p.a.insert(0, state(0xa, id, id as u32));
    }
    p.run(1_100 * MS);
    p.b = Node::new(0xb);
    p.b_up = false;
    let t = p.now;
    p.b.sync.start(t);
    p.b.events(t);
    p.run(t + 61 * S);
    assert_eq!(p.b.done, [false], "given up at the timeout");
    assert_eq!(p.b.demote, 0);
    assert!(p.b.table.is_empty());
    assert_eq!(p.b.sync.last_heard(), None);
    // The peer's side comes back; its next packet (a new state's) is
    // heard, and b asks for the whole table again.
    p.b_up = true;
    let t = p.now;
    p.a.insert(t, state(0xa, 21, 21));
    p.run(t + 2 * S);
    assert!(p.b.sync.last_heard().is_some());
    assert_eq!(p.b.table, p.a.table, "the whole table, not only the news");
    assert_eq!(p.b.done, [false, true]);
    assert_eq!(p.b.demote, 0, "no demotion for the second request");
    // Once complete, hearing the peer asks for nothing more.
    let asked = p.b.sync.stats().bulk_requests_sent;
    let t = p.now;
    p.a.insert(t, state(0xa, 22, 22));
    p.run(t + 2 * S);
    assert_eq!(p.b.sync.stats().bulk_requests_sent, asked);
}

/// A peer that never answers (its pfsync blocked on the way in, its own
/// packets still heard) is asked again after each give-up at growing
/// intervals (at once, then a minute, two...), not every time it is heard.
#[test]
fn a_peer_that_never_answers_is_asked_again_less_and_less_often() {
    let mut b = Node::new(0xb);
    let mut a = Node::new(0xa);
    a.insert(0, state(0xa, 1, 1));
    b.sync.start(0);
    b.events(0);
    let mut now = 0;
    let mut starts = vec![0u64];
    let mut pending = true;
    while now <= 400 * S {
        // a's news reaches b every second; b's requests never reach a.
        if now % S == 0 {
            a.update(now, state(0xa, 1, (now / S) as u32 + 2));
            a.sync.flush();
            while let Some(pk) = a.sync.poll_transmit() {
                b.sync.handle_packet(now, 255, &pk);
            }
        }
        if b.sync.poll_timeout().is_some_and(|t| t <= now) {
            b.sync.handle_timeout(now);
        }
        while b.sync.poll_transmit().is_some() {}
        b.events(now);
        if b.sync.bulk_pending() && !pending {
            starts.push(now / S);
        }
        pending = b.sync.bulk_pending();
        now += 100 * MS;
    }
    // Given up at 60 s, asked again at once (given up at 120 s), then
    // after a minute (at 180 s, given up at 240 s), then after two (at
    // 360 s).
    assert_eq!(b.done, [false, false, false], "{starts:?}");
    // (Each at the first packet heard after its time.)
    assert_eq!(starts, [0, 61, 181, 361]);
}

/// A bulk update that stopped (the peer's sync link flapped: its update
/// under way is dropped) is asked for again after 5 s, even while the
/// peer answers the states asked for one by one (full UPDs too, but not
/// the update: a review found they kept the request from being repeated
/// for up to ten minutes).
#[test]
fn answers_to_single_requests_do_not_keep_a_stopped_bulk_update_alive() {
    let mut p = Pair::new();
    p.a.sync = Sync::new(SyncConfig {
        creator: 0xa,
        bulk_pace: 1,
        bulk_tick: 10 * MS,
        ..SyncConfig::default()
    });
    for id in 1..=2000 {
        p.a.insert(0, state(0xa, id, id as u32));
    }
    p.run(1_100 * MS);
    p.b = Node::new(0xb);
    let t = p.now;
    p.b.sync.start(t);
    p.b.events(t);
    p.run(t + 500 * MS);
    // a's link flaps: the update it was sending is dropped.
    p.a.sync.set_link(p.now, false);
    p.a.sync.set_link(p.now, true);
    // a's states keep changing: b, lacking most, asks for each (UPD_REQ)
    // and gets it whole (UPD).
    for k in 0..60u64 {
        let now = p.now;
        for id in (1500 + k * 5)..(1505 + k * 5) {
            p.a.update(now, state(0xa, id, 10_000 + id as u32));
        }
        let until = now + 100 * MS;
        p.run(until);
    }
    assert!(p.b.sync.stats().messages_sent["UPD_REQ"] > 10);
    assert!(
        p.b.sync.stats().bulk_requests_sent >= 2,
        "asked again: {}",
        p.b.sync.stats().bulk_requests_sent
    );
    let t2 = p.now;
    p.run(t2 + 10 * S);
    assert_eq!(p.b.done, [true]);
    // Every state is there (the toy table lets a bulk update's older copy
    // overwrite a newer change; the daemon merges per side).
    assert!(
        p.b.table.keys().eq(p.a.table.keys()),
        "{} of {} states",
        p.b.table.len(),
        p.a.table.len()
    );
}

/// A bulk update that stops coming (its packets lost) is asked for again
/// after `bulk_retry` of silence, and the second one completes.
#[test]
fn a_bulk_update_that_stops_coming_is_asked_for_again() {
    let mut p = Pair::new();
    p.a.sync = Sync::new(SyncConfig {
        creator: 0xa,
        bulk_pace: 1,
        bulk_tick: 10 * MS,
        ..SyncConfig::default()
    });
    for id in 1..=1000 {
        p.a.insert(0, state(0xa, id, id as u32));
    }
    p.run(1_100 * MS);
    p.b = Node::new(0xb);
    let t = p.now;
    p.b.sync.start(t);
    p.b.events(t);
    p.run(t + 500 * MS);
    // a's packets stop reaching b (b's link stays up: it does not know).
    p.b_up = false;
    p.run(t + 4 * S);
    assert_eq!(p.b.sync.stats().bulk_requests_sent, 1, "silent < 5 s");
    p.b_up = true;
    p.run(t + 10 * S);
    assert_eq!(p.b.sync.stats().bulk_requests_sent, 2, "asked again");
    p.run(t + 14 * S);
    assert!(same_states(&p.b.table, &p.a.table));
    assert_eq!(p.b.done, [true]);
    assert_eq!(p.b.demote, 0);
}

/// b's sync link goes down (pfsync(4) watches its syncdev): b is demoted
/// by 1 and what a sends meanwhile never reaches it; back up, b asks a
/// for its whole table, gets the states made during the outage, and the
/// demotion lifts at BUS END.
#[test]
fn a_sync_link_back_up_asks_for_the_table_and_then_lifts_the_demotion() {
    let mut p = Pair::new();
    p.a.insert(0, state(0xa, 1, 1));
    p.run(1_100 * MS);
    assert_eq!(p.b.table.len(), 1);
    p.b_up = false;
    let t = p.now;
    p.b.sync.set_link(t, false);
    p.b.sync.set_link(t, false);
    p.b.events(t);
    assert_eq!(p.b.demote, LINK_DEMOTE, "demoted once, however often told");
    assert!(!p.b.sync.link_up());
    p.a.insert(t, state(0xa, 2, 2));
    // b's own news meanwhile is not sent (it would fail on a link without
    // carrier, once per packet): counted instead.
    let sent = p.b.sync.stats().packets_sent;
    p.b.insert(t, state(0xb, 3, 3));
    p.run(t + 2 * S);
    assert_eq!(
        p.b.sync.stats().packets_sent,
        sent,
        "nothing sent while down"
    );
    assert!(p.b.sync.stats().not_sent_link_down > 0);
    assert_eq!(p.b.table.len(), 2, "the outage's state never arrived");
    assert_eq!(p.b.demote, LINK_DEMOTE);
    p.b_up = true;
    let t = p.now;
    p.b.sync.set_link(t, true);
    p.b.events(t);
    assert_eq!(p.b.demote, LINK_DEMOTE, "until the bulk update has come");
    p.run(t + 500 * MS);
    assert!(
        p.a.table.keys().all(|k| p.b.table.contains_key(k)),
        "the outage's state came with it"
    );
    assert_eq!(p.b.demote, 0, "lifted at BUS END");
    assert_eq!(p.b.done, [true]);
    assert_eq!(p.a.sync.stats().bulk_updates_sent, 1);
}

/// A link that falls during the start's bulk update (or is down at the
/// start): that update waits for the link with its 32 kept, the link's 1
/// added, and no timeout runs meanwhile (a node with none of the peer's
/// states must not preempt it; with a crossover cable the peer is
/// demoted by the link's 1 too). Back up, the table is asked for at
/// once, and a peer that stays silent cannot keep the node demoted:
/// everything is lifted at the bulk timeout, counted from the return.
#[test]
fn the_starts_bulk_update_waits_for_a_fallen_sync_link() {
    let mut n = Node::new(0xa);
    n.sync.start(0);
    n.events(0);
    assert_eq!(n.demote, BULK_DEMOTE);
    n.sync.set_link(S, false);
    n.events(S);
    assert_eq!(
        n.demote,
        BULK_DEMOTE + LINK_DEMOTE,
        "the 32 kept, the link's 1 added"
    );
    assert!(n.sync.bulk_pending());
    while n.sync.poll_transmit().is_some() {}
    // Down for longer than the bulk timeout: nothing asked, nothing given up.
    assert_eq!(n.sync.poll_timeout(), None);
    n.sync.handle_timeout(100 * S);
    n.events(100 * S);
    assert!(n.sync.poll_transmit().is_none());
    assert_eq!(n.demote, BULK_DEMOTE + LINK_DEMOTE);
    n.sync.set_link(100 * S, true);
    n.events(100 * S);
    assert!(n.sync.bulk_pending(), "the table asked for again");
    let mut requests = 0;
    while n.sync.poll_transmit().is_some() {
        requests += 1;
    }
    assert_eq!(requests, 1, "asked at once");
    let mut now = 100 * S;
    while now <= 170 * S {
        if n.sync.poll_timeout().is_some_and(|t| t <= now) {
            n.sync.handle_timeout(now);
        }
        while n.sync.poll_transmit().is_some() {
            requests += 1;
        }
        n.events(now);
        if now < 159 * S {
            assert_eq!(n.demote, BULK_DEMOTE + LINK_DEMOTE, "at {now}");
        }
        now += 100 * MS;
    }
    assert!(requests >= 3, "{requests}");
    assert_eq!(n.demote, 0, "lifted at the bulk timeout after the return");
    assert_eq!(n.done, [false]);
}

/// A link that flaps while the bulk update its return asked for runs:
/// that update holds no demotion of its own (nothing lifted twice), the
/// link's 1 stays through every fall, and the last return's update lifts
/// it once.
#[test]
fn a_flapping_sync_link_keeps_one_demotion_and_lifts_it_once() {
    let mut p = Pair::new();
    p.a.insert(0, state(0xa, 1, 1));
    p.run(1_100 * MS);
    for _ in 0..3 {
        p.b_up = false;
        let t = p.now;
        p.b.sync.set_link(t, false);
        p.b.events(t);
        assert_eq!(p.b.demote, LINK_DEMOTE);
        p.b.sync.set_link(t + MS, true);
        p.b.events(t + MS);
        assert!(p.b.sync.bulk_pending());
        assert_eq!(p.b.demote, LINK_DEMOTE);
        // Down again before the peer answered (the update is given up:
        // it held nothing).
        p.b.sync.set_link(t + 2 * MS, false);
        p.b.events(t + 2 * MS);
        assert!(!p.b.sync.bulk_pending());
        assert_eq!(p.b.demote, LINK_DEMOTE);
        p.run(t + 100 * MS);
    }
    p.b_up = true;
    let t = p.now;
    p.b.sync.set_link(t, true);
    p.b.events(t);
    p.run(t + 500 * MS);
    assert_eq!(p.b.demote, 0, "lifted once, at BUS END");
    assert_eq!(p.b.done, [true]);
}

#[test]
fn a_silent_peer_cannot_keep_a_node_demoted() {
    // a starts while b does not answer (its link is down: b never hears).
    let mut lonely = Node::new(0xa);
    lonely.sync.start(0);
    lonely.events(0);
    assert_eq!(lonely.demote, BULK_DEMOTE);
    let mut now = 0;
    let mut requests = 0;
    while now <= 61 * S {
        if lonely.sync.poll_timeout().is_some_and(|t| t <= now) {
            lonely.sync.handle_timeout(now);
        }
        while lonely.sync.poll_transmit().is_some() {
            requests += 1;
        }
        lonely.events(now);
        now += 100 * MS;
    }
    assert_eq!(lonely.demote, 0, "lifted at the bulk timeout");
    assert_eq!(lonely.done, [false]);
    // Asked again every 5 s until then.
    assert_eq!(requests, 12, "{requests}");
}

#[test]
fn packets_with_a_bad_ttl_or_malformed_are_dropped_and_counted() {
    let mut p = Pair::new();
    p.a.insert(0, state(0xa, 1, 1));
    p.a.sync.flush();
    let pkt = p.a.sync.poll_transmit().unwrap();
    p.b.sync.handle_packet(0, 64, &pkt);
    p.b.sync.handle_packet(0, 255, &pkt[..10]);
    let mut bad = pkt.clone();
    bad[0] = 5;
    p.b.sync.handle_packet(0, 255, &bad);
    p.b.events(0);
    assert!(p.b.table.is_empty());
    assert_eq!(
        p.b.drops,
        [Refused::BadTtl, Refused::Malformed, Refused::Malformed]
    );
    assert_eq!(p.b.sync.stats().drops[&Refused::Malformed], 2);
    // The good one is taken.
    p.b.sync.handle_packet(0, 255, &pkt);
    p.b.events(0);
    assert_eq!(p.b.table.len(), 1);
}

fn with_key(creator: u32, key: &[u8], base: u64) -> Node {
    let mut n = Node::new(creator);
    n.sync = Sync::new(SyncConfig {
        creator,
        auth: Some(Auth {
            key: key.to_vec(),
            counter_base: base,
        }),
        ..SyncConfig::default()
    });
    n
}

#[test]
fn with_authentication_forged_replayed_and_unsigned_packets_change_nothing() {
    let mut p = Pair::new();
    p.a = with_key(0xa, b"sync-secret", 1_000);
    p.b = with_key(0xb, b"sync-secret", 5_000);
    for id in 1..=7 {
        p.a.insert(0, state(0xa, id, 1));
    }
    p.run(1_100 * MS);
    assert_eq!(p.b.table, p.a.table, "signed packets are taken");
    let good = p.a_sent[0].clone();

    // A third party with another key: refused, counted.
    let mut mallory = with_key(0xc, b"guessed", 9_999_999);
    mallory.insert(0, state(0xc, 66, 1));
    mallory.sync.flush();
    let forged = mallory.sync.poll_transmit().unwrap();
    // Without any authentication section.
    let mut plain = Node::new(0xc);
    plain.insert(0, state(0xc, 67, 1));
    plain.sync.flush();
    let unsigned = plain.sync.poll_transmit().unwrap();
    // A signed packet with one byte changed.
    let mut tampered = good.clone();
    tampered[30] ^= 1;
    let t = p.now;
    for pkt in [&forged, &unsigned, &tampered, &good] {
        p.b.sync.handle_packet(t, 255, pkt);
    }
    p.b.events(t);
    assert_eq!(p.b.table, p.a.table, "nothing changed");
    assert_eq!(
        p.b.drops,
        [
            Refused::Unauthenticated,
            Refused::Unauthenticated,
            Refused::Unauthenticated,
            Refused::Replayed
        ]
    );
    let st = p.b.sync.stats();
    assert_eq!(st.drops[&Refused::Unauthenticated], 3);
    assert_eq!(st.drops[&Refused::Replayed], 1);
    // Forged packets from many source addresses leave no trace (a replay
    // window is kept only for a sender whose MAC was right).
    let senders = p.b.sync.replay_senders();
    for i in 0..50u8 {
        let src = std::net::IpAddr::from([198, 51, 100, i]);
        p.b.sync.handle_packet_from(t, Some(src), 255, &forged);
    }
    assert_eq!(p.b.sync.replay_senders(), senders);

    // A peer without a key skips the section and takes the messages (the
    // format stays OpenBSD's).
    let mut open = Node::new(0xd);
    open.sync.handle_packet(t, 255, &good);
    open.events(t);
    assert_eq!(open.table.len(), 5, "the first packet's five states");
}

#[test]
fn signed_packets_a_little_out_of_order_are_taken_once_each() {
    // Several threads of the sender put packets on the wire: a few may
    // swap places. Each is taken once; one far older than the newest is
    // refused as a replay.
    let mut a = with_key(0xa, b"k", 1_000);
    let mut b = with_key(0xb, b"k", 9_000);
    let mut pkts = Vec::new();
    for id in 1..=70 {
        a.insert(0, state(0xa, id, 1));
        a.sync.flush();
        pkts.push(a.sync.poll_transmit().unwrap());
    }
    // 2, 1, 4, 3, ... then 1 again and 2 again.
    for pair in pkts.chunks(2) {
        for p in pair.iter().rev() {
            b.sync.handle_packet(0, 255, p);
        }
    }
    b.events(0);
    assert_eq!(b.table.len(), 70, "{:?}", b.drops);
    assert!(b.drops.is_empty());
    for p in [&pkts[69], &pkts[68], &pkts[0]] {
        b.sync.handle_packet(0, 255, p);
    }
    b.events(0);
    assert_eq!(b.drops, [Refused::Replayed; 3]);
}

#[test]
fn defer_an_insert_asks_for_ins_ack_and_leaves_at_once() {
    let mut p = Pair::new();
    let r = StateRef {
        id: 1,
        creatorid: 0xa,
    };
    p.a.insert(0, state(0xa, 2, 1));
    p.a.insert(0, state(0xa, 1, 1));
    assert!(p.a.sync.want_ack(0, r));
    // At once (not after flush_after), with the other pending insert.
    p.run(0);
    assert_eq!(p.a_sent.len(), 1);
    assert_eq!(p.b.table.len(), 2);
    // Only the deferred state asked; b answered INS_ACK, a heard it.
    assert_eq!(p.b.sync.stats().messages_sent["INS_ACK"], 1);
    assert_eq!(p.a.acked, [r]);
    // Nothing waits for a state already sent (or unknown).
    assert!(!p.a.sync.want_ack(MS, r));
    assert!(!p.a.sync.want_ack(
        MS,
        StateRef {
            id: 9,
            creatorid: 0xa
        }
    ));
    // A peer that is down never answers: the caller's timer lets go.
    p.b_up = false;
    p.a.insert(2 * MS, state(0xa, 3, 1));
    assert!(p.a.sync.want_ack(
        2 * MS,
        StateRef {
            id: 3,
            creatorid: 0xa
        }
    ));
    p.run(100 * MS);
    assert_eq!(p.a.acked.len(), 1);
}

#[test]
fn the_replay_window_spans_1024_counters_per_sender() {
    let mut a = with_key(0xa, b"k", 1_000);
    let mut c = with_key(0xc, b"k", 9_000_000);
    let mut b = with_key(0xb, b"k", 5);
    let mut pkts = Vec::new();
    for id in 1..=1100 {
        a.sync.insert(0, state(0xa, id, 1));
        a.sync.flush();
        pkts.push(a.sync.poll_transmit().unwrap());
    }
    let from_a = Some("198.18.255.1".parse().unwrap());
    // The newest first, then one 1000 behind it (taken), one 1030
    // behind (too old), the newest again (a replay).
    for i in [1099, 99, 69, 1099] {
        b.sync.handle_packet_from(0, from_a, 255, &pkts[i]);
    }
    b.events(0);
    assert_eq!(b.table.len(), 2);
    assert_eq!(b.drops, [Refused::Replayed; 2]);
    // Another sender with the same key and a far higher counter has a
    // window of its own: a's packets still count.
    c.sync.insert(0, state(0xc, 1, 1));
    c.sync.flush();
    let pc = c.sync.poll_transmit().unwrap();
    b.sync
        .handle_packet_from(0, Some("198.18.255.3".parse().unwrap()), 255, &pc);
    b.sync.handle_packet_from(0, from_a, 255, &pkts[1098]);
    b.events(0);
    assert_eq!(b.table.len(), 4, "{:?}", b.drops);
}

#[test]
fn with_defer_every_insert_asks_for_an_ack_at_once() {
    let mut p = Pair::new();
    p.a.sync = Sync::new(SyncConfig {
        creator: 0xa,
        ack_inserts: true,
        ..SyncConfig::default()
    });
    p.a.insert(0, state(0xa, 1, 1));
    p.run(0);
    assert_eq!(p.a_sent.len(), 1, "sent at once, not batched");
    assert_eq!(
        p.a.acked,
        [StateRef {
            id: 1,
            creatorid: 0xa
        }]
    );
}

#[test]
fn the_handshake_of_a_new_connection_does_not_push() {
    let mut p = Pair::new();
    // A new state: the responder's side not seen yet (seqlo 0).
    p.a.insert(0, state(0xa, 1, 1000));
    p.run(1_100 * MS);
    let before = (p.a_sent.len(), p.a.sync.stats().pushes);
    // Its SYN-ACK: the responder's random sequence number appears.
    let t = p.now;
    let mut s = state(0xa, 1, 1000);
    s.dst.seqlo = 0x8000_0000;
    s.dst.seqhi = 0x8001_0000;
    p.a.update(t, s);
    p.run(t + MS);
    assert_eq!((p.a_sent.len(), p.a.sync.stats().pushes), before);
}

/// A state's rule number names the creating rule of the sender's
/// ruleset: it is kept only when the header's ruleset checksum is the
/// receiver's (pfsync(4)); from a peer with another ruleset (a pf.conf
/// changed on one firewall first) the state takes no rule.
#[test]
fn rule_numbers_count_only_between_the_same_rulesets() {
    use palisade_pfsync::sync::ruleset_checksum;
    let one = ruleset_checksum(["block all", "pass out all flags S/SA"]);
    let two = ruleset_checksum([
        "block all",
        "pass in on em0 proto tcp",
        "pass out all flags S/SA",
    ]);
    assert_ne!(one, two);
    assert_eq!(
        one,
        ruleset_checksum(["block all", "pass out all flags S/SA"])
    );
    for (theirs, kept) in [(one, true), (two, false)] {
        let mut p = Pair::new();
        p.a.sync.set_pfcksum(theirs);
        p.b.sync.set_pfcksum(one);
        let mut s = state(0xa, 1, 100);
        s.rule = 1;
        p.a.insert(0, s);
        p.run(1_100 * MS);
        let got = p.b.table.values().next().expect("the state reached b").rule;
        if kept {
            assert_eq!(got, 1);
            assert_eq!(p.b.sync.stats().other_ruleset, 0);
        } else {
            assert_eq!(got, palisade_pfsync::wire::NO_RULE);
            assert!(p.b.sync.stats().other_ruleset > 0);
        }
    }
}

/// pfctl -F states on one node: it clears its table and sends one CLR of
/// its creator id; the peer drops the states that node made and keeps its
/// own; an insert of the flushed node still waiting is not sent after the
/// clear (it would bring a state back).
#[test]
fn a_flush_clears_the_flushed_nodes_states_on_the_peer_and_no_more() {
    let mut p = Pair::new();
    for id in 1..=3 {
        p.a.insert(0, state(0xa, id, 100));
        p.b.insert(0, state(0xb, id, 100));
    }
    p.run(1_100 * MS);
    assert_eq!(p.a.table.len(), 6);
    assert_eq!(p.b.table.len(), 6);
    let t = p.now;
    // A new state of a's, not yet sent, then the flush.
    p.a.insert(t, state(0xa, 9, 100));
    p.a.table.clear();
    p.a.sync.clear_own(t);
    p.run(t + 1_100 * MS);
    let left: Vec<u32> = p.b.table.keys().map(|r| r.creatorid).collect();
    assert_eq!(left, [0xb, 0xb, 0xb], "b keeps its own states only");
    let st = p.a.sync.stats();
    assert_eq!(st.messages_sent["CLR"], 1, "{st:?}");
    assert_eq!(
        st.messages_sent["INS"], 3,
        "the waiting insert was dropped: {st:?}"
    );
}

/// The sync link's MTU changes: every packet built after fits the new
/// one (IP header included), and a smaller MTU sends the same states in
/// more packets.
#[test]
fn packets_follow_the_sync_links_mtu() {
    let mut p = Pair::new();
    assert_eq!(p.a.sync.mtu(), 1500);
    for id in 1..=20 {
        p.a.insert(0, state(0xa, id, 100));
    }
    p.run(1_100 * MS);
    let at_1500 = p.a_sent.len();
    assert!(p.a_sent.iter().all(|x| x.len() + 20 <= 1500));
    assert!(p.a_sent.iter().any(|x| x.len() + 20 > 1000), "full packets");
    p.a_sent.clear();
    p.a.sync.set_mtu(1000);
    let t = p.now;
    for id in 21..=40 {
        p.a.insert(t, state(0xa, id, 100));
    }
    p.run(t + 1_100 * MS);
    assert_eq!(p.b.table, p.a.table);
    assert!(
        p.a_sent.iter().all(|x| x.len() + 20 <= 1000),
        "{:?}",
        p.a_sent.iter().map(|x| x.len()).collect::<Vec<_>>()
    );
    assert!(p.a_sent.len() > at_1500, "{} vs {at_1500}", p.a_sent.len());
}

/// A node whose start's bulk update waits for the sync link and that
/// CARP makes master (no one else advertises) gives up that update's 32:
/// its table is now the reference, and a peer starting later must not
/// preempt it before either has the other's table. The table is still
/// asked for when the link is back; the link's 1 lifts at its end.
#[test]
fn a_master_gives_up_the_waiting_starts_demotion() {
    let mut n = Node::new(0xa);
    n.sync.start(0);
    n.sync.set_link(S, false);
    n.events(S);
    assert_eq!(n.demote, BULK_DEMOTE + LINK_DEMOTE);
    // (Master of only some virtual hosts: with the link down, the same.)
    let (d, _) = n.sync.master(false).expect("the 32 to lift");
    n.demote += d;
    assert_eq!(n.demote, LINK_DEMOTE);
    assert_eq!(n.sync.master(true), None, "once");
    while n.sync.poll_transmit().is_some() {}
    n.sync.set_link(10 * S, true);
    n.events(10 * S);
    assert!(
        n.sync.bulk_pending(),
        "the table asked for at the link's return"
    );
    assert!(n.sync.poll_transmit().is_some());
    assert_eq!(n.demote, LINK_DEMOTE);
    // Nothing more to lift.
    assert_eq!(n.sync.master(true), None);
}

/// A node made master of every virtual host while its start's bulk
/// update is under way with the link up (the peer bowed out in the
/// middle of sending it) gives up that update's 32 too, and still takes
/// the table when the peer sends it; master of only some, it keeps it. Kept, the only firewall stayed demoted, and the peer restarting
/// (32 as well) preempted it before having its table (a probe of S3).
#[test]
fn a_master_gives_up_its_starts_demotion_with_the_link_up() {
    let mut p = Pair::new();
    p.b.sync.start(p.now);
    p.b.events(p.now);
    assert_eq!(p.b.demote, BULK_DEMOTE);
    assert!(p.b.sync.bulk_pending());
    // Master of a virtual host the peer does not run, the peer carrying
    // the others: the 32 stays.
    assert_eq!(p.b.sync.master(false), None);
    let (d, why) = p.b.sync.master(true).expect("the 32 to lift");
    assert!(why.contains("before its bulk update ended"), "{why}");
    p.b.demote += d;
    assert_eq!(p.b.demote, 0);
    assert_eq!(p.b.sync.master(true), None, "once");
    // The update still comes in, and its end lifts nothing more.
    p.a.insert(p.now, state(0xa, 1, 100));
    p.run(p.now + 2 * S);
    assert!(!p.b.sync.bulk_pending());
    assert_eq!(p.b.table, p.a.table);
    assert_eq!(p.b.demote, 0);
}

/// A cable between the two comes back: both ends see their link up
/// together, but a's bulk request reaches b a moment before b's own link
/// event. b answers once its link is up (the answer waits, rather than
/// being built and dropped as sent on a dead link): a's demotion lifts
/// within milliseconds, not at its retry 5 s later, during which its
/// peer, with the link's demotion gone, would preempt it (a probe saw 2
/// of 6 cable flaps fail over twice for nothing).
#[test]
fn a_bulk_request_read_before_the_link_event_is_answered_once_the_link_is_up() {
    let mut p = Pair::new();
    p.a.insert(0, state(0xa, 1, 1));
    p.b.insert(0, state(0xb, 2, 2));
    p.run(1_100 * MS);
    let t = p.now;
    for n in [&mut p.a, &mut p.b] {
        n.sync.set_link(t, false);
        n.events(t);
    }
    p.b.insert(t, state(0xb, 3, 3));
    p.run(t + S);
    let t = p.now;
    // a sees its link first and asks; b reads the request and its timers
    // run, then its link event comes 2 ms later.
    p.a.sync.set_link(t, true);
    p.a.events(t);
    p.run(t + 2 * MS);
    assert!(!p.b.sync.link_up());
    assert_eq!(
        p.b.sync.stats().bulk_updates_sent,
        0,
        "b answers with its link up: the table (and the kills to repeat) then"
    );
    let t = p.now;
    p.b.sync.set_link(t, true);
    p.b.events(t);
    p.run(t + 500 * MS);
    assert!(
        p.b.table.keys().all(|k| p.a.table.contains_key(k)),
        "a has b's outage state: {:?}",
        p.a.table.keys().collect::<Vec<_>>()
    );
    assert_eq!(p.a.demote, 0, "a's link demotion lifted at b's BUS END");
    assert_eq!(p.a.sync.stats().bulk_requests_sent, 1, "no retry needed");
    assert_eq!(p.b.demote, 0);
}

/// A bulk request read while the link is down, the link then staying
/// down longer than the peer's retry: not answered when it comes back
/// (the peer has asked again by then, or will: an old snapshot would
/// bring back what this node removed meanwhile).
#[test]
fn a_bulk_request_read_long_before_the_link_is_up_is_not_answered() {
    let mut p = Pair::new();
    p.run(1_100 * MS);
    let t = p.now;
    p.b.sync.set_link(t, false);
    p.b.events(t);
    // a asks (its own link came back), b reads it with its link down.
    p.a.sync.set_link(t, false);
    p.a.events(t);
    p.a.sync.set_link(t + MS, true);
    p.a.events(t + MS);
    p.lose_from_a = 0;
    p.run(t + 3 * MS);
    assert_eq!(p.b.sync.stats().bulk_updates_sent, 0);
    // a's link falls again, unseen by b, for longer than a's retry.
    p.a.sync.set_link(p.now, false);
    p.a.events(p.now);
    p.b_up = false;
    p.run(p.now + 10 * S);
    let t = p.now;
    p.b.sync.set_link(t, true);
    p.b.events(t);
    assert_eq!(
        p.b.sync.stats().bulk_updates_sent,
        0,
        "a request older than the retry is not answered"
    );
}
