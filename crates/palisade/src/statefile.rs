//! The state table across a restart (`state-file` in palisade.toml).
//!
//! pf keeps its states in the kernel, so reloading rules keeps them, but
//! Palisade keeps them in its own process: without this a restart (an
//! upgrade, `systemctl restart`) would forget every connection, and a
//! ruleset that blocks by default would then stall them all. A user coming
//! from nftables and conntrack, whose states live in the kernel, would not
//! expect that. So the daemon writes its states when it stops and takes
//! them back when it starts, as a pfsync peer would hand them over: each
//! state as a pfsync state record (`palisade_pfsync::convert`), the
//! same mapping and the same limits as a failover (docs/pfsync.md says
//! what a record does not carry).
//!
//! The file, all numbers big-endian:
//!
//! ```text
//!  0..16   "PALISADE-STATES" and a version byte (1)
//! 16..32   the ruleset's checksum (pfsync's): rule numbers are kept
//!          only when the ruleset is the same at start
//! 32..40   when it was written (ms since the Unix epoch)
//! 40..48   the number of records, N
//! 48..     N state records, `StateMsg::LEN` bytes each
//! then     CRC-32 of everything before it
//! ```
//!
//! Written to a temporary file beside it, synced, then renamed over the
//! old one, so a crash while writing leaves the previous file or none.
//! Taken back at start only if whole (length and checksum); then removed,
//! so that a later crash does not bring back states that old. Time spent
//! stopped counts against each state's expiry; those that expired in the
//! meantime are left out.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use palisade_filter::Filter;
use palisade_pfsync::convert::{from_msg, to_msg};
use palisade_pfsync::wire::StateMsg;

const MAGIC: &[u8; 16] = b"PALISADE-STATES\x01";
const HEADER: usize = 48;

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The checksum of the main ruleset, as pfsync computes it.
pub fn ruleset_checksum(f: &Filter) -> [u8; 16] {
    let rules = f.engine().listing("").unwrap_or_default();
    palisade_pfsync::sync::ruleset_checksum(rules.iter().map(|r| r.text.as_str()))
}

/// The bytes of the file for `filter`'s states (every one, `no-sync` too).
pub fn encode(filter: &Filter, now_ms: u64, wall_ms: u64) -> (Vec<u8>, usize) {
    let mut recs = Vec::new();
    let mut cursor = 0;
    loop {
        let (r, next) = filter.states.walk_with(cursor, 4096, now_ms, true);
        // Not those already expired, that the next slice of the expiry
        // would have removed (they came back counted as "expired
        // meanwhile", however short the stop: a soak's finding).
        recs.extend(r.into_iter().filter(|r| r.expire_ms > 0));
        match next {
            Some(c) => cursor = c,
            None => break,
        }
    }
    let mut out = Vec::with_capacity(HEADER + recs.len() * StateMsg::LEN + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&ruleset_checksum(filter));
    out.extend_from_slice(&wall_ms.to_be_bytes());
    out.extend_from_slice(&(recs.len() as u64).to_be_bytes());
    for r in &recs {
        to_msg(r).emit(&mut out);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    (out, recs.len())
}

/// Write the states to `path` (atomically). Returns how many.
pub fn save(path: &Path, filter: &Filter, now_ms: u64) -> Result<usize, String> {
    let (bytes, n) = encode(filter, now_ms, unix_ms());
    let tmp = tmp_path(path);
    let write = || -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        // Every connection is in it: root's only.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent() {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("state-file {}: {e}", path.display())
    })?;
    Ok(n)
}

fn tmp_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".new");
    PathBuf::from(s)
}

/// The daemon is up with the states `restore` took: the file goes, so
/// that a later crash (which writes nothing) cannot bring back states
/// that old.
/// A `PATH.new` a crash left while writing (never taken: the rename did
/// not happen) goes too: it holds every connection, and nothing else
/// removed it.
pub fn taken(path: &Path) {
    for p in [path.to_path_buf(), tmp_path(path)] {
        if let Err(e) = std::fs::remove_file(&p) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!("state-file {}: cannot remove it: {e}", p.display());
            }
        }
    }
}

/// What `restore` took back.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    pub taken: usize,
    /// Expired while the daemon was stopped.
    pub expired: usize,
    /// Refused by the table (a key in use, the table full, a record that
    /// does not convert).
    pub refused: usize,
    /// The ruleset had changed: states kept no rule (pf's default rule).
    pub other_ruleset: bool,
    /// Milliseconds between writing and reading.
    pub stopped_ms: u64,
    /// The ids the states taken back have here (with pfsync, those the
    /// peer's bulk update does not confirm are removed: `SyncRuntime`).
    pub ids: Vec<u64>,
}

/// Take the states in `bytes` into `filter`. A file that is not whole is
/// refused as a whole (Err says why); nothing is taken from it.
pub fn decode_into(
    bytes: &[u8],
    filter: &mut Filter,
    now_ms: u64,
    wall_ms: u64,
) -> Result<Restored, String> {
    if bytes.len() < HEADER + 4 || &bytes[..16] != MAGIC {
        return Err("not a Palisade state file (or another version)".into());
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_be_bytes() != crc {
        return Err("its checksum is wrong (cut short or damaged)".into());
    }
    let n = u64::from_be_bytes(body[40..48].try_into().expect("8 bytes"));
    let expect = (body.len() - HEADER) as u64;
    if n.checked_mul(StateMsg::LEN as u64) != Some(expect) {
        return Err(format!("{n} records announced, {expect} bytes of records"));
    }
    let written = u64::from_be_bytes(body[32..40].try_into().expect("8 bytes"));
    let stopped_ms = wall_ms.saturating_sub(written);
    let same_rules = body[16..32] == ruleset_checksum(filter);
    let mut r = Restored {
        other_ruleset: !same_rules,
        stopped_ms,
        ..Restored::default()
    };
    for chunk in body[HEADER..].chunks_exact(StateMsg::LEN) {
        let Some(m) = StateMsg::parse(chunk) else {
            r.refused += 1;
            continue;
        };
        let Ok(mut rec) = from_msg(&m) else {
            r.refused += 1;
            continue;
        };
        if rec.expire_ms <= stopped_ms {
            r.expired += 1;
            continue;
        }
        rec.expire_ms -= stopped_ms;
        rec.age_ms = rec.age_ms.saturating_add(stopped_ms);
        if !same_rules {
            rec.rule = None;
        }
        match filter.restore_state(&rec, now_ms) {
            Ok(id) => {
                r.taken += 1;
                r.ids.push(id);
            }
            Err(e) => {
                tracing::debug!("state-file: state {:016x} refused: {e:?}", rec.id);
                r.refused += 1;
            }
        }
    }
    Ok(r)
}

/// Take back the states saved at `path`, if there is a file (`taken`
/// removes it once the daemon is up: a start that fails before keeps it
/// for the next). A file that cannot be read whole is moved aside to
/// `PATH.bad` (and said so); the daemon starts without its states.
pub fn restore(path: &Path, filter: &mut Filter, now_ms: u64) -> Option<Restored> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(
                "state-file {}: {e}: starting without saved states",
                path.display()
            );
            return None;
        }
    };
    match decode_into(&bytes, filter, now_ms, unix_ms()) {
        Ok(r) => Some(r),
        Err(why) => {
            let mut bad = path.as_os_str().to_owned();
            bad.push(".bad");
            // An earlier damaged file is not written over.
            let bad = if Path::new(&bad).symlink_metadata().is_ok() {
                crate::aside::kept_aside(path, ".bad")
            } else {
                bad.into()
            };
            let _ = std::fs::rename(path, &bad);
            tracing::warn!(
                "state-file {}: {why}: starting without saved states (the file is now {})",
                path.display(),
                bad.display()
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_conf::ir::Direction::{In, Out};
    use std::net::IpAddr;

    fn filter(rules: &str, creator: u32) -> Filter {
        let host = palisade_conf::host::HostModel::from_toml(
            "[[interface]]\nname = \"em0\"\naddresses = [\"203.0.113.2/24\"]\n",
        )
        .expect("host model");
        let out = palisade_conf::parse_bytes(
            "pf.conf",
            None,
            rules.as_bytes().to_vec(),
            &palisade_conf::ParseOptions {
                host: host.clone(),
                ..Default::default()
            },
        );
        assert_eq!(out.errors, 0, "{:?}", out.stderr);
        Filter::new(
            std::sync::Arc::new(palisade_filter::Engine::new(&out.config, host)),
            &out.config,
            creator,
        )
    }

    fn tcp(src: &str, dst: &str, sp: u16, dp: u16, seq: u32, ack: u32, flags: u8) -> Vec<u8> {
        let (s, d): (IpAddr, IpAddr) = (src.parse().unwrap(), dst.parse().unwrap());
        palisade_wire::build::ip(
            s,
            d,
            6,
            64,
            &palisade_wire::build::tcp(sp, dp, seq, ack, flags, 65535, &[], b""),
        )
    }

    const RULES: &str = "block all\npass out on em0 proto tcp\npass out on em0 proto tcp to port 22 keep state (no-sync)\n";

    /// An outbound connection through `f` (IPv4 and IPv6 to port 80, and
    /// one to port 22 of a `no-sync` rule), established.
    fn connect(f: &mut Filter) {
        for (c, s, port) in [
            ("198.51.100.10", "192.0.2.80", 80),
            ("2001:db8::10", "2001:db8:1::80", 80),
            ("198.51.100.10", "192.0.2.80", 22),
        ] {
            for (mut p, d) in [
                (tcp(c, s, 40000, port, 1000, 0, 0x02), Out),
                (tcp(s, c, port, 40000, 5000, 1001, 0x12), In),
                (tcp(c, s, 40000, port, 1001, 5001, 0x10), Out),
            ] {
                assert!(f.process(&mut p, "em0", d, 1000).passed());
            }
        }
    }

    /// The server's next segment, which only a state lets in.
    fn answer_passes(f: &mut Filter, c: &str, s: &str, port: u16, now: u64) -> bool {
        let mut p = tcp(s, c, port, 40000, 5001, 1001, 0x10);
        f.process(&mut p, "em0", In, now).passed()
    }

    /// Saved by one filter, taken back by a new one (another creator id,
    /// as a restart without `set hostid` has): the connections' answers
    /// pass, as they do not without the file; `no-sync` states are kept
    /// too, and stay `no-sync`.
    /// Once the daemon is up the file goes, and so does a `.new` a crash
    /// while writing left behind (a probe found a 5 MB one, every
    /// connection in it, that nothing removed).
    #[test]
    fn taken_removes_the_file_and_a_leftover_new() {
        let d = std::env::temp_dir().join(format!("palisade-sf-taken-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join("states");
        std::fs::write(&path, "x").unwrap();
        std::fs::write(d.join("states.new"), "y").unwrap();
        taken(&path);
        assert!(!path.exists() && !d.join("states.new").exists());
        taken(&path);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn states_survive_a_restart() {
        let mut a = filter(RULES, 7);
        connect(&mut a);
        assert_eq!(a.states.len(), 3);
        let (bytes, n) = encode(&a, 2000, 1_000_000);
        assert_eq!(n, 3);
        let mut fresh = filter(RULES, 9);
        assert!(!answer_passes(
            &mut fresh,
            "198.51.100.10",
            "192.0.2.80",
            80,
            10
        ));
        let mut b = filter(RULES, 9);
        let r = decode_into(&bytes, &mut b, 0, 1_004_000).unwrap();
        // The states' ids here, for pfsync to confirm (`restored`).
        assert_eq!(r.ids.len(), 3);
        assert!(r.ids.iter().all(|id| b.states.get(*id).is_some()));
        assert_eq!(
            r,
            Restored {
                taken: 3,
                stopped_ms: 4000,
                ids: r.ids.clone(),
                ..Restored::default()
            }
        );
        assert!(answer_passes(&mut b, "198.51.100.10", "192.0.2.80", 80, 10));
        assert!(answer_passes(
            &mut b,
            "2001:db8::10",
            "2001:db8:1::80",
            80,
            10
        ));
        assert!(answer_passes(&mut b, "198.51.100.10", "192.0.2.80", 22, 10));
        // The no-sync state is not offered to a peer.
        let (synced, _) = b.states.walk(0, 100, 10);
        assert_eq!(synced.len(), 2);
        // Its rule kept: the next new connection to port 22 is counted
        // with the restored one.
        let (all, _) = b.states.walk_with(0, 100, 10, true);
        assert!(all.iter().all(|r| r.rule.is_some()), "{all:?}");
    }

    /// With `set hostid` the creator is the same after the restart: the
    /// states keep their ids (a pfsync peer knows them by those), and a
    /// state made afterwards does not collide with them.
    #[test]
    fn own_creator_states_keep_their_ids() {
        let mut a = filter(RULES, 7);
        // Slots used and freed first: the saved ids have generations
        // above 0 and slots out of order.
        for i in 0..5u16 {
            let mut syn = tcp("198.51.100.50", "192.0.2.80", 30000 + i, 80, 1, 0, 0x02);
            assert!(a.process(&mut syn, "em0", Out, 500).passed());
        }
        let (early, _) = a.states.walk_with(0, 100, 500, true);
        for r in early.iter().take(4) {
            assert!(a.states.remove(r.id));
        }
        connect(&mut a);
        let (bytes, _) = encode(&a, 2000, 1_000_000);
        let (saved, _) = a.states.walk_with(0, 100, 10, true);
        assert!(saved.iter().any(|r| (r.id as u32) >> 24 > 0), "{saved:?}");
        let mut b = filter(RULES, 7);
        let r = decode_into(&bytes, &mut b, 0, 1_000_000).unwrap();
        assert_eq!(r.taken, 4, "{r:?}");
        let (back, _) = b.states.walk_with(0, 100, 10, true);
        let ids = |v: &[palisade_filter::state::StateRecord]| {
            let mut i: Vec<u64> = v.iter().map(|r| r.id).collect();
            i.sort_unstable();
            i
        };
        assert_eq!(ids(&back), ids(&saved));
        for r in &saved {
            assert!(b.states.get(r.id).is_some(), "{:016x}", r.id);
        }
        let mut syn = tcp("198.51.100.99", "192.0.2.80", 40001, 80, 1, 0, 0x02);
        assert!(b.process(&mut syn, "em0", Out, 20).passed());
        let (all, _) = b.states.walk_with(0, 100, 20, true);
        let mut i = ids(&all);
        i.dedup();
        assert_eq!(i.len(), 5, "{all:?}");
        assert!(answer_passes(&mut b, "198.51.100.10", "192.0.2.80", 80, 30));
    }

    /// As the daemon restarts (the same creator, a new epoch for its
    /// ids): every state comes back with its id, even one whose slot a
    /// state made before the file was read holds, and the states made
    /// after take ids of the new epoch, none a saved one's.
    #[test]
    fn a_new_epoch_keeps_every_saved_id_and_gives_new_states_new_ones() {
        let mut a = filter(RULES, 7);
        connect(&mut a);
        let (bytes, _) = encode(&a, 2000, 1_000_000);
        let (saved, _) = a.states.walk_with(0, 100, 10, true);
        let mut b = filter(RULES, 7);
        b.states.set_epoch(0x5eed_0001);
        let mut syn = tcp("198.51.100.99", "192.0.2.80", 40001, 80, 1, 0, 0x02);
        assert!(b.process(&mut syn, "em0", Out, 0).passed());
        let r = decode_into(&bytes, &mut b, 0, 1_000_000).unwrap();
        assert_eq!(r.taken, 3, "{r:?}");
        let mut want: Vec<u64> = saved.iter().map(|r| r.id).collect();
        let mut got = r.ids.clone();
        want.sort_unstable();
        got.sort_unstable();
        assert_eq!(got, want);
        for r in &saved {
            assert_eq!(b.states.get(r.id).map(|s| s.creator), Some(7));
        }
        let mut syn = tcp("198.51.100.98", "192.0.2.80", 40002, 80, 1, 0, 0x02);
        let id = b.process(&mut syn, "em0", Out, 20).state_id.unwrap();
        assert_eq!(id >> 32, 0x5eed_0001);
        assert!(!want.contains(&id));
        assert!(answer_passes(&mut b, "198.51.100.10", "192.0.2.80", 80, 30));
    }

    /// When the slot an own id names is taken (a state made before the
    /// file was read), the state gets a new id rather than a duplicate.
    #[test]
    fn own_creator_states_get_new_ids_when_their_slot_is_taken() {
        let mut a = filter(RULES, 7);
        connect(&mut a);
        let (bytes, _) = encode(&a, 2000, 1_000_000);
        let mut b = filter(RULES, 7);
        // A state made before the restore takes slot 0 with an id a saved
        // one had.
        let mut syn = tcp("198.51.100.99", "192.0.2.80", 40001, 80, 1, 0, 0x02);
        assert!(b.process(&mut syn, "em0", Out, 0).passed());
        let r = decode_into(&bytes, &mut b, 0, 1_000_000).unwrap();
        assert_eq!(r.taken, 3, "{r:?}");
        let (all, _) = b.states.walk_with(0, 100, 10, true);
        let mut ids: Vec<u64> = all.iter().map(|r| r.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 4, "{all:?}");
        assert!(answer_passes(&mut b, "198.51.100.10", "192.0.2.80", 80, 10));
    }

    /// Time stopped counts: states whose expiry passed meanwhile are
    /// left out; a changed ruleset keeps the states without their rules.
    #[test]
    fn expired_states_and_a_changed_ruleset() {
        let mut a = filter(RULES, 7);
        connect(&mut a);
        let (bytes, _) = encode(&a, 2000, 1_000_000);
        // States already expired when the file is written (not yet
        // removed by the expiry's slices) are not written.
        let (_, n) = encode(&a, 2 * 86_400_000, 1_000_000);
        assert_eq!(n, 0);
        // tcp.established is 24 hours: two days later all have gone.
        let mut b = filter(RULES, 9);
        let r = decode_into(&bytes, &mut b, 0, 1_000_000 + 2 * 86_400_000).unwrap();
        assert_eq!((r.taken, r.expired), (0, 3), "{r:?}");
        let mut c = filter("block all\npass out on em0 proto tcp to port 80\n", 9);
        let r = decode_into(&bytes, &mut c, 0, 1_000_000).unwrap();
        assert!(r.other_ruleset && r.taken == 3, "{r:?}");
        let (all, _) = c.states.walk_with(0, 100, 10, true);
        assert!(all.iter().all(|r| r.rule.is_none()), "{all:?}");
        assert!(answer_passes(&mut c, "198.51.100.10", "192.0.2.80", 80, 10));
        // The `no-sync` state stays `no-sync` without its rule (its mark
        // is in the file): pfsync must not send it after the restart.
        let no_sync: Vec<u16> = c
            .states
            .iter()
            .filter(|s| s.no_sync())
            .map(|s| s.key.dport)
            .collect();
        assert_eq!(no_sync, vec![22], "{all:?}");
        let (synced, _) = c.states.walk(0, 100, 10);
        assert_eq!(synced.len(), 2, "{synced:?}");
    }

    /// A file cut short, damaged, or of another kind is refused whole:
    /// nothing is taken from it.
    #[test]
    fn damaged_files_are_refused_whole() {
        let mut a = filter(RULES, 7);
        connect(&mut a);
        let (bytes, _) = encode(&a, 2000, 1_000_000);
        let mut cut = bytes.clone();
        cut.truncate(bytes.len() - 100);
        let mut flipped = bytes.clone();
        flipped[HEADER + 20] ^= 1;
        let mut other = bytes.clone();
        other[15] = 2;
        for (what, b) in [
            ("cut", cut),
            ("flipped", flipped),
            ("other", other),
            ("empty", Vec::new()),
        ] {
            let mut f = filter(RULES, 9);
            assert!(decode_into(&b, &mut f, 0, 1_000_000).is_err(), "{what}");
            assert_eq!(f.states.len(), 0, "{what}");
        }
    }

    /// `save` and `restore` on disk: the file is removed once read; a
    /// damaged one is moved aside to `.bad`.
    #[test]
    fn save_and_restore_on_disk() {
        let dir = std::env::temp_dir().join(format!("palisade-statefile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("states");
        let mut a = filter(RULES, 7);
        connect(&mut a);
        assert_eq!(save(&path, &a, 2000).unwrap(), 3);
        let mut b = filter(RULES, 9);
        let r = restore(&path, &mut b, 0).unwrap();
        assert_eq!(r.taken, 3);
        // Kept until the daemon is up (a start that fails reads it again).
        assert!(path.exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "root's only");
        taken(&path);
        assert!(!path.exists());
        assert!(restore(&path, &mut b, 0).is_none());
        std::fs::write(&path, b"PALISADE-STATES\x01 short").unwrap();
        let mut c = filter(RULES, 9);
        assert!(restore(&path, &mut c, 0).is_none());
        assert!(dir.join("states.bad").exists());
        // A second damaged one does not write over the first.
        std::fs::write(&path, b"PALISADE-STATES\x01 short again").unwrap();
        assert!(restore(&path, &mut c, 0).is_none());
        assert_eq!(
            std::fs::read(dir.join("states.bad")).unwrap(),
            b"PALISADE-STATES\x01 short"
        );
        let again = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with("states.bad-"))
            .count();
        assert_eq!(again, 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
