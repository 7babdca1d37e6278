//! The greylisting service's store: redb with a journal in front.
//!
//! No answer the service gives goes before the decision behind it is
//! written to the journal; with `answer-after = "sync"` it also waits
//! until the decision is on disk ([`AnswerAfter`]). A redb commit costs
//! several page writes in different places of the file plus an fsync
//! (0.3-0.5 ms on the project's machine), and one thread commits for
//! everybody, so the commit rate would bound the request rate. Here the
//! records of a batch of decisions are instead appended to a small
//! preallocated journal file, and the changes are kept in memory over
//! redb until a checkpoint applies them all to redb in one transaction.
//! redb stays the store: the journal only holds what was decided since
//! the last checkpoint. No crate does this for redb (it has no
//! write-ahead log of its own), hence this module.
//!
//! [`AnswerAfter::Write`] (the default): the service thread writes each
//! batch's records (buffered) and answers; a sync thread syncs the
//! journal behind it, at most every 10 ms while batches come.
//!
//! [`AnswerAfter::Sync`]: a sync thread writes the journal (whole
//! blocks, direct I/O where the file system allows it: no page-cache
//! writeback, no metadata) and syncs it, while the next batch is
//! decided; batches that queue up during a sync share the next one. A
//! third thread sends the answers, so that the next sync starts at once.
//! (Two journals synced by two threads at once were tried: on this
//! project's disk concurrent syncs slowed each other, 200 µs instead of
//! 130-150.) An answer that rests on nothing not yet on disk need not
//! wait: a request that changed nothing and read no key whose last
//! change is still on its way to the disk (a system not greylisted, a
//! retry too early whose first attempt is synced) is answered at once
//! ([`Batch::rests_on_disk`]). The store numbers the batches it hands to
//! the syncer and the syncer says up to which one they are durable; the
//! keys changed by the others are remembered with their batch's number.
//!
//! Journal format: the file has two regions of 4 MiB; a generation's
//! records go one after another from the start of region `generation %
//! 2`, each `[u32 length][u32 crc][body]` (little-endian), the CRC-32
//! taken over the generation (u64) and the body; body = `[op u8][key
//! length u16][key][entry]` with op 1 = put (then [`Entry::SIZE`] bytes),
//! 2 = delete. The generation in redb (table `meta`) is the oldest whose
//! records redb may not hold; each checkpoint raises it, in the same
//! transaction as the changes, so records of earlier generations left in
//! a reused region no longer check out. A routine checkpoint runs in a
//! thread of its own: the pending changes are handed to it, and the next
//! generation is written to the other region meanwhile (a region is
//! reused only once redb holds what it had). Opening replays the records
//! of redb's generation, then those of the next (a checkpoint that did
//! not commit), each until the first record that does not check out (a
//! torn tail: never answered), then checkpoints. A journal written before
//! the regions (records of any generation from offset 0) replays too.
//! Replaying twice is harmless: records carry whole values.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use palisade_greylist::grey::{Entry, Store};
use redb::{ReadableTable, TableDefinition, TableHandle};

// Keys are bytes (UTF-8 written, checked when read): redb decodes a `&str`
// key with `unwrap`, so one damaged byte in a key made every read that
// met it panic, and the service with it.
const TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("greylist-v2");
const META: TableDefinition<&[u8], u64> = TableDefinition::new("meta-v2");
const GENERATION: &[u8] = b"journal-generation";
// The tables of databases made before: moved into the above at open.
const OLD_TABLE: TableDefinition<&str, &[u8]> = TableDefinition::new("greylist");
const OLD_META: TableDefinition<&str, u64> = TableDefinition::new("meta");

thread_local! {
    /// A guarded call is under way on this thread: its panic is no crash.
    static GUARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f`, taking a panic inside it (redb asserts on some damage
/// instead of returning an error) as `None`. Its message is held back:
/// it would read as Palisade's own crash. Only for reads and for opening:
/// a write transaction that panics is left open inside redb.
fn guarded<T>(f: impl FnOnce() -> T) -> Option<T> {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(|g| g.get()) {
                previous(info)
            }
        }));
    });
    let was = GUARDED.with(|g| g.replace(true));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(was));
    r.ok()
}

/// A record that cannot be read, said as the database's damage.
fn damaged(what: &str) -> String {
    format!("database: damaged ({what}): move the file aside to start a new one")
}

/// The journal's preallocated size.
const JOURNAL_SIZE: u64 = 8 << 20;
/// The journal's two regions: a generation's records go to region
/// `generation % 2` ([`region_base`]), so that a checkpoint can run in a
/// thread of its own while the next generation is written to the other.
const REGION: u64 = JOURNAL_SIZE / 2;
/// A checkpoint follows a batch once the region is this full...
const CHECKPOINT_AT: u64 = REGION / 2;
/// ...or once changes have waited this long.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(60);

const PUT: u8 = 1;
const DELETE: u8 = 2;

/// Where generation `g`'s records start in the journal.
fn region_base(g: u64) -> u64 {
    (g % 2) * REGION
}

/// The journal of a database: `<database>.journal`.
pub fn journal_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".journal");
    PathBuf::from(p)
}

/// redb with a journal in front; see the module's text.
pub struct GreyDb {
    /// None while it is being opened again ([`GreyDb::reopen`]).
    db: Option<Arc<redb::Database>>,
    /// redb's file, and whether it must be closed and opened again before
    /// it is used: after a failed write redb refuses every operation
    /// ("Previous I/O error occurred"), even once the disk has room again.
    db_path: PathBuf,
    reopen: bool,
    /// The journal's path, and the file (buffered).
    path: PathBuf,
    journal: File,
    generation: u64,
    /// Where the next batch goes in the journal.
    at: u64,
    /// Offsets of damaged journal records passed over at open.
    damaged: Vec<u64>,
    /// Changes in the journal and not yet in redb (None: deleted).
    pending: BTreeMap<String, Option<Entry>>,
    /// A checkpoint in a thread of its own ([`GreyDb::maybe_checkpoint`]):
    /// the changes it writes to redb (the previous generation's), read
    /// under `pending` until it is over, and its result.
    frozen: Option<Arc<Changes>>,
    running: Option<Running>,
    /// Changes of the batch being decided: (key, value before the batch),
    /// to undo the batch if it cannot be written.
    undo: Vec<(String, Option<Option<Entry>>)>,
    /// The batch's records.
    buf: Vec<u8>,
    since: Instant,
    syncer: Option<Syncer>,
    /// Batches committed (handed to the syncer), and up to which of them
    /// (counted the same way) everything is durable.
    handed: u64,
    synced: Arc<AtomicU64>,
    /// Keys changed by batches not known to be durable, with the number
    /// of the last such batch; in order of the change, to forget them.
    unsynced: HashMap<String, u64>,
    unsynced_order: VecDeque<(u64, String)>,
    /// Checkpoints that failed in a row (a full or failing disk), and
    /// when [`GreyDb::maybe_checkpoint`] tries again: not at every turn,
    /// which would cost a redb transaction and a log line per request.
    failures: u32,
    retry_at: Option<Instant>,
    /// How many times redb was opened again, and when it was last tried.
    reopened: u64,
    reopen_tried: Option<Instant>,
    /// Tests: fail this many checkpoints.
    #[cfg(test)]
    fail_checkpoints: u32,
}

/// How long [`GreyDb::maybe_checkpoint`] waits after `failures`
/// checkpoints failed in a row: 100 ms, doubling, at most 30 s.
fn checkpoint_backoff(failures: u32) -> Duration {
    let max = Duration::from_secs(30);
    Duration::from_millis(100)
        .checked_mul(1u32 << failures.saturating_sub(1).min(16))
        .map_or(max, |d| d.min(max))
}

/// Open (or make) redb's file. redb asserts on some damage (a file cut
/// short) instead of returning an error: taken as one, naming the file;
/// the file is left as it is, for the admin. (Its panic message would
/// read as Palisade's own crash: the default hook is held back for the
/// call.)
fn open_redb(path: &Path, wait_lock: Duration) -> Result<redb::Database, String> {
    let name = path.display().to_string();
    // A service killed a moment ago may hold the file's lock while the
    // kernel tears it down: a start right after `kill -9` found the
    // database "already open" (a probe, 4 times of 4). At the start it
    // is waited for, 5 s at most (`wait_lock`); another service really
    // running keeps it and is said.
    let mut waited = Duration::ZERO;
    let opened = loop {
        match guarded(|| redb::Database::create(path)) {
            Some(Err(redb::DatabaseError::DatabaseAlreadyOpen)) if waited < wait_lock => {
                std::thread::sleep(Duration::from_millis(100));
                waited += Duration::from_millis(100);
            }
            other => break other,
        }
    };
    match opened {
        Some(Err(redb::DatabaseError::DatabaseAlreadyOpen)) => Err(format!(
            "{name}: the database is open in another process (another `palisade greylist \
             run` with this database?): its lock was not released"
        )),
        Some(r) => r.map_err(|e| err(&name, e)),
        None => Err(format!(
            "{name}: the database is damaged (cut short?): not opened, left as it is; \
             move it aside to start a new one"
        )),
    }
}

/// Changes by key (None: deleted).
type Changes = BTreeMap<String, Option<Entry>>;

/// A checkpoint under way in its thread.
struct Running {
    result: mpsc::Receiver<Result<(), String>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Write `changes` to redb with the journal's `generation`, in one
/// transaction (committed: on disk).
fn commit_changes(db: &redb::Database, changes: &Changes, generation: u64) -> Result<(), String> {
    let tx = db.begin_write().map_err(|e| err("database", e))?;
    {
        let mut t = tx.open_table(TABLE).map_err(|e| err("database", e))?;
        for (k, v) in changes {
            match v {
                Some(e) => {
                    t.insert(k.as_bytes(), e.encode().as_slice())
                        .map_err(|e| err("database", e))?;
                }
                None => {
                    t.remove(k.as_bytes()).map_err(|e| err("database", e))?;
                }
            }
        }
        let mut meta = tx.open_table(META).map_err(|e| err("database", e))?;
        meta.insert(GENERATION, generation)
            .map_err(|e| err("database", e))?;
    }
    tx.commit().map_err(|e| err("database", e))
}

/// A database made before the tables had byte keys: its entries and
/// generation read (guarded: damage is an error, not a panic), then
/// written into the new tables and the old ones deleted, in one
/// transaction.
fn migrate(db: &redb::Database, path: &Path) -> Result<(), String> {
    let name = path.display().to_string();
    let old = {
        let tx = db.begin_read().map_err(|e| err(&name, e))?;
        let has = tx
            .list_tables()
            .map_err(|e| err(&name, e))?
            .any(|t| t.name() == "greylist");
        if !has {
            return Ok(());
        }
        type Old = (Vec<(String, Vec<u8>)>, u64);
        let read = || -> Result<Old, String> {
            let t = tx.open_table(OLD_TABLE).map_err(|e| err(&name, e))?;
            let mut all = Vec::new();
            let mut lost = 0usize;
            for item in t.iter().map_err(|e| err(&name, e))? {
                let (k, v) = item.map_err(|e| err(&name, e))?;
                // redb decodes a `&str` key with unwrap: a damaged one
                // cannot be read (it goes with the old table), the others
                // are moved.
                match guarded(|| k.value().to_string()) {
                    Some(k) => all.push((k, v.value().to_vec())),
                    None => lost += 1,
                }
            }
            if lost > 0 {
                tracing::warn!(
                    "greylist database {name}: {lost} damaged entries (keys that are not UTF-8) could not be read and are dropped"
                );
            }
            let generation = match tx.open_table(OLD_META) {
                Ok(m) => m
                    .get("journal-generation")
                    .map_err(|e| err(&name, e))?
                    .map_or(0, |v| v.value()),
                Err(redb::TableError::TableDoesNotExist(_)) => 0,
                Err(e) => return Err(err(&name, e)),
            };
            Ok((all, generation))
        };
        guarded(read).unwrap_or_else(|| {
            Err(format!(
                "{name}: the database is damaged (its entries cannot be read): not opened, \
                 left as it is; move it aside to start a new one"
            ))
        })?
    };
    let (entries, generation) = old;
    let tx = db.begin_write().map_err(|e| err(&name, e))?;
    {
        let mut t = tx.open_table(TABLE).map_err(|e| err(&name, e))?;
        for (k, v) in &entries {
            t.insert(k.as_bytes(), v.as_slice())
                .map_err(|e| err(&name, e))?;
        }
        let mut meta = tx.open_table(META).map_err(|e| err(&name, e))?;
        meta.insert(GENERATION, generation)
            .map_err(|e| err(&name, e))?;
    }
    tx.delete_table(OLD_TABLE).map_err(|e| err(&name, e))?;
    tx.delete_table(OLD_META).map_err(|e| err(&name, e))?;
    tx.commit().map_err(|e| err(&name, e))?;
    tracing::info!(
        "greylist database {name}: {} entries moved to the byte-keyed table",
        entries.len()
    );
    Ok(())
}

fn err(what: &str, e: impl std::fmt::Display) -> String {
    format!("{what}: {e}")
}

/// What runs once a batch is durable (or could not be made so).
pub type Done = Box<dyn FnOnce(Result<(), String>) + Send>;

enum SyncItem {
    /// A batch: its records (none if it wrote nothing) and what runs
    /// once they are durable.
    Batch { records: Vec<u8>, done: Done },
    /// The journal goes on at this offset (a new generation's region,
    /// after a checkpoint).
    Reset(u64),
    /// Answered once everything before it is durable.
    Barrier(mpsc::SyncSender<()>),
    /// [`AnswerAfter::Write`]: a batch was written while the sync thread
    /// slept.
    Wake,
}

/// The thread that writes and syncs the journal while the next batch is
/// decided.
struct Syncer {
    tx: mpsc::Sender<SyncItem>,
    /// A write or sync failed: what reached the disk is unknown.
    broken: Arc<AtomicBool>,
    /// [`AnswerAfter::Write`]: the service thread writes each batch
    /// (buffered) and answers; this thread only syncs behind it.
    behind: Option<Arc<Behind>>,
    /// Joined when the store closes: the last sync, and the answers
    /// queued behind it, are done before the process may exit.
    thread: Option<std::thread::JoinHandle<()>>,
}

/// When an answer that rests on a change goes: once the change's record
/// is on disk, or once it is written to the journal (in the kernel's
/// page cache: a restart or a kill -9 of the service loses nothing, a
/// power cut or a kernel crash can lose what the sync that follows at
/// once had not finished). docs/greylist.md says why `Write` is the
/// default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AnswerAfter {
    #[default]
    Write,
    Sync,
}

/// How often [`AnswerAfter::Write`]'s syncs follow the writes at most.
const SYNC_BEHIND_EVERY: Duration = Duration::from_millis(10);

/// What the service thread and [`AnswerAfter::Write`]'s sync thread
/// share: batches written, and whether the sync thread sleeps until the
/// next (woken by a message then; otherwise a write costs no system call
/// beyond its own).
#[derive(Default)]
struct Behind {
    written: AtomicU64,
    sleeping: AtomicBool,
}

/// [`AnswerAfter::Write`]'s sync thread: the service thread writes each
/// batch; this syncs the journal at most every `SYNC_BEHIND_EVERY` while
/// batches come, and at once for a barrier (a checkpoint, a close).
fn sync_behind_loop(
    file: File,
    rx: mpsc::Receiver<SyncItem>,
    broken: Arc<AtomicBool>,
    behind: Arc<Behind>,
) {
    let mut synced = 0u64;
    let mut last = Instant::now()
        .checked_sub(SYNC_BEHIND_EVERY)
        .unwrap_or_else(Instant::now);
    let mut barriers = Vec::new();
    let take = |i: SyncItem, barriers: &mut Vec<mpsc::SyncSender<()>>| match i {
        SyncItem::Barrier(tx) => barriers.push(tx),
        // Not sent in this mode; its answers need nothing more.
        SyncItem::Batch { done, .. } => done(Ok(())),
        SyncItem::Reset(_) | SyncItem::Wake => {}
    };
    // The channel closed (the database is gone): what was written is
    // synced before the thread ends.
    let last_sync = |synced: u64| {
        if behind.written.load(Ordering::SeqCst) != synced {
            if let Err(e) = file.sync_data() {
                tracing::error!("greylist journal: sync: {e}");
            }
        }
    };
    loop {
        if behind.written.load(Ordering::SeqCst) == synced && barriers.is_empty() {
            behind.sleeping.store(true, Ordering::SeqCst);
            // A write after the store above either is seen here or sees
            // `sleeping` and sends a message.
            if behind.written.load(Ordering::SeqCst) == synced {
                match rx.recv() {
                    Ok(i) => take(i, &mut barriers),
                    Err(_) => return last_sync(synced),
                }
            }
            behind.sleeping.store(false, Ordering::SeqCst);
            if behind.written.load(Ordering::SeqCst) == synced && barriers.is_empty() {
                // A stray wake: nothing to sync.
                continue;
            }
        }
        // Let writes gather, unless a barrier waits.
        while barriers.is_empty() {
            let wait = SYNC_BEHIND_EVERY.saturating_sub(last.elapsed());
            if wait.is_zero() {
                break;
            }
            match rx.recv_timeout(wait) {
                Ok(i) => take(i, &mut barriers),
                Err(mpsc::RecvTimeoutError::Timeout) => break,
                Err(mpsc::RecvTimeoutError::Disconnected) => return last_sync(synced),
            }
        }
        while let Ok(i) = rx.try_recv() {
            take(i, &mut barriers);
        }
        let upto = behind.written.load(Ordering::SeqCst);
        last = Instant::now();
        if upto == synced {
            // Only barriers wait, and nothing was written since the last
            // sync: they are answered without one.
        } else if let Err(e) = file.sync_data() {
            // The next batch goes through a checkpoint (redb, synced).
            tracing::error!("greylist journal: sync: {e}");
            broken.store(true, Ordering::SeqCst);
        }
        synced = upto;
        for b in barriers.drain(..) {
            let _ = b.send(());
        }
    }
}

/// Direct I/O works in whole, aligned blocks.
const BLOCK: usize = 4096;

/// The journal as the syncer writes it: whole blocks, with direct I/O
/// where the file system allows it (no page-cache writeback: cheaper in
/// CPU and time than a buffered write and `fdatasync`). The last partial
/// block is kept in memory and written again with what follows it.
struct BlockJournal {
    file: File,
    /// Offset of the block `data` starts.
    block_at: u64,
    /// The last partial block and the records not yet written.
    data: Vec<u8>,
    /// Backing store of an aligned buffer.
    raw: Vec<u8>,
}

impl BlockJournal {
    fn open(path: &Path, at: u64, tail: &[u8]) -> Result<BlockJournal, String> {
        let name = path.display().to_string();
        let direct = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path);
        let file = match direct {
            Ok(f) => f,
            Err(e) => {
                tracing::debug!("greylist journal: no direct I/O ({e}); buffered writes");
                OpenOptions::new()
                    .write(true)
                    .open(path)
                    .map_err(|e| err(&name, e))?
            }
        };
        let block_at = at / BLOCK as u64 * BLOCK as u64;
        Ok(BlockJournal {
            file,
            block_at,
            data: tail[block_at as usize..at as usize].to_vec(),
            raw: Vec::new(),
        })
    }

    /// Write `data` padded to whole blocks and sync it.
    fn flush(&mut self) -> Result<(), String> {
        let len = self.data.len();
        let padded = len.div_ceil(BLOCK) * BLOCK;
        if self.block_at + padded as u64 > JOURNAL_SIZE {
            return Err("greylist journal: full".into());
        }
        if self.raw.len() < padded + BLOCK {
            self.raw.resize(padded + BLOCK, 0);
        }
        let off = self.raw.as_ptr().align_offset(BLOCK);
        let buf = &mut self.raw[off..off + padded];
        buf[..len].copy_from_slice(&self.data);
        buf[len..].fill(0);
        self.file
            .write_all_at(buf, self.block_at)
            .and_then(|_| self.file.sync_data())
            .map_err(|e| err("greylist journal", e))?;
        let whole = len / BLOCK * BLOCK;
        self.block_at += whole as u64;
        self.data.drain(..whole);
        Ok(())
    }
}

/// Write and sync the queued batches' records, then have their `done`
/// run (in a thread of its own, so that the next sync starts at once):
/// batches that queued up while a sync ran share the next one.
fn sync_loop(
    mut j: BlockJournal,
    rx: mpsc::Receiver<SyncItem>,
    broken: Arc<AtomicBool>,
    synced: Arc<AtomicU64>,
    handed: u64,
) {
    let (answer, answers) = mpsc::channel::<(Vec<Done>, Result<(), String>)>();
    let answerer = std::thread::Builder::new()
        .name("greylist-answer".into())
        .spawn(move || {
            for (dones, res) in answers {
                for d in dones {
                    d(res.clone());
                }
            }
        });
    let mut dones: Vec<Done> = Vec::new();
    let mut dirty = false;
    // Batches received (counted on from those committed before this
    // thread started): once a flush succeeds, all are durable.
    let mut received = handed;
    let flush = |j: &mut BlockJournal, dirty: &mut bool, dones: &mut Vec<Done>, received: u64| {
        let res = if *dirty { j.flush() } else { Ok(()) };
        // After a failed write the records are still in `data`: the next
        // batch (even one that wrote nothing) writes them again before
        // its answers go, rather than answer on records not on disk.
        *dirty = res.is_err();
        if res.is_err() {
            broken.store(true, Ordering::SeqCst);
        } else {
            synced.store(received, Ordering::Release);
        }
        if !dones.is_empty() {
            // Should the answer thread be gone, answer here rather than
            // never.
            if let Err(mpsc::SendError((dones, res))) = answer.send((std::mem::take(dones), res)) {
                for d in dones {
                    d(res.clone());
                }
            }
        }
    };
    while let Ok(first) = rx.recv() {
        let mut items = vec![first];
        while let Ok(i) = rx.try_recv() {
            items.push(i);
        }
        for i in items {
            match i {
                SyncItem::Batch { records, done } => {
                    received += 1;
                    if !records.is_empty() {
                        j.data.extend_from_slice(&records);
                        dirty = true;
                    }
                    dones.push(done);
                }
                SyncItem::Reset(base) => {
                    flush(&mut j, &mut dirty, &mut dones, received);
                    j.block_at = base;
                    j.data.clear();
                }
                SyncItem::Barrier(tx) => {
                    flush(&mut j, &mut dirty, &mut dones, received);
                    let _ = tx.send(());
                }
                SyncItem::Wake => {}
            }
        }
        flush(&mut j, &mut dirty, &mut dones, received);
    }
    // The store closed: the answers queued go before this thread ends.
    drop(answer);
    if let Ok(t) = answerer {
        let _ = t.join();
    }
}

impl GreyDb {
    /// Open (or create) the database and its journal, replay what the
    /// journal holds and checkpoint it.
    pub fn open(path: &Path) -> Result<GreyDb, String> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        if let Some(dir) = dir {
            std::fs::create_dir_all(dir).map_err(|e| err(&dir.display().to_string(), e))?;
        }
        if path.as_os_str().is_empty() {
            return Err("greylist database: an empty path (`database` in [greylist])".into());
        }
        let new = !path.exists();
        let name = path.display().to_string();
        // An empty file where a database was (a crash as it was made, or
        // emptied by hand): begun afresh, but said.
        let empty = !new && std::fs::metadata(path).is_ok_and(|m| m.len() == 0);
        if empty {
            tracing::warn!(
                "greylist database {name}: the file is empty: a new database is made in it (no entries, no whitelist)"
            );
        }
        // A new database starts its generations at 0 again: the journal
        // of the one it replaces (moved aside by the admin, or emptied)
        // must not replay into it, now or when the generations meet.
        let jpath = journal_path(path);
        if (new || empty) && std::fs::metadata(&jpath).is_ok_and(|m| m.len() > 0) {
            let aside = crate::aside::kept_aside(&jpath, ".old");
            std::fs::rename(&jpath, &aside).map_err(|e| err(&jpath.display().to_string(), e))?;
            tracing::warn!(
                "greylist journal {}: belongs to another database (this one is new): moved to {}",
                jpath.display(),
                aside.display()
            );
        }
        let db = open_redb(path, Duration::from_secs(5))?;
        // The entries name senders and recipients: a new database is the
        // owner's only, as the journal is (one the admin made otherwise
        // keeps its mode).
        if new {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                .map_err(|e| err(&path.display().to_string(), e))?;
        }
        migrate(&db, path)?;
        let generation = {
            let tx = db.begin_write().map_err(|e| err("database", e))?;
            tx.open_table(TABLE).map_err(|e| err("database", e))?;
            let g = {
                let meta = tx.open_table(META).map_err(|e| err("database", e))?;
                let g = meta.get(GENERATION).map_err(|e| err("database", e))?;
                g.map_or(0, |v| v.value())
            };
            tx.commit().map_err(|e| err("database", e))?;
            g
        };
        let jname = jpath.display().to_string();
        let journal = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&jpath)
            .map_err(|e| err(&jname, e))?;
        let mut me = GreyDb {
            db: Some(Arc::new(db)),
            db_path: path.to_path_buf(),
            reopen: false,
            path: jpath.clone(),
            journal,
            generation,
            at: 0,
            pending: BTreeMap::new(),
            frozen: None,
            running: None,
            undo: Vec::new(),
            buf: Vec::new(),
            since: Instant::now(),
            syncer: None,
            handed: 0,
            synced: Arc::new(AtomicU64::new(0)),
            unsynced: HashMap::new(),
            unsynced_order: VecDeque::new(),
            failures: 0,
            retry_at: None,
            reopened: 0,
            reopen_tried: None,
            damaged: Vec::new(),
            #[cfg(test)]
            fail_checkpoints: 0,
        };
        let mut text = Vec::new();
        std::io::Read::read_to_end(&mut me.journal, &mut text).map_err(|e| err(&jname, e))?;
        // The current generation's records, then the next one's (written
        // while a checkpoint that did not commit ran). Generation g's
        // region starts at offset 0 or REGION; a journal written before
        // regions has every record from 0, so 0 is read for g too.
        let mut n = me.replay(&text, 0, generation);
        if region_base(generation) != 0 {
            n += me.replay(&text, region_base(generation), generation);
        }
        n += me.replay(&text, region_base(generation + 1), generation + 1);
        // The checkpoint below starts generation + 2: no region holds a
        // record of it yet.
        me.generation = generation + 1;
        if n > 0 {
            tracing::info!("greylist: {n} change(s) replayed from {jname}");
        }
        if !me.damaged.is_empty() {
            // Kept as it was, for a look, before it is written over.
            let copy = crate::aside::kept_aside(&jpath, ".damaged");
            // (Mode 0600, as the journal: it names senders.)
            let kept = {
                use std::os::unix::fs::OpenOptionsExt;
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&copy)
                    .and_then(|mut f| std::io::Write::write_all(&mut f, &text))
            };
            tracing::warn!(
                "greylist journal {jname}: {} damaged record(s) passed over (at byte {:?}), the records after them replayed; a copy of the journal {}",
                me.damaged.len(),
                me.damaged,
                match kept {
                    Ok(()) => format!("is kept as {}", copy.display()),
                    Err(e) => format!("could not be kept: {e}"),
                }
            );
        }
        // Preallocate with written zeros: later syncs then write data
        // blocks only.
        let len = me.journal.metadata().map_err(|e| err(&jname, e))?.len();
        if len < JOURNAL_SIZE {
            let zeros = vec![0u8; (JOURNAL_SIZE - len) as usize];
            me.journal
                .write_all_at(&zeros, len)
                .and_then(|_| me.journal.sync_all())
                .map_err(|e| err(&jname, e))?;
            if let Some(dir) = dir {
                File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(|e| err(&dir.display().to_string(), e))?;
            }
        }
        me.checkpoint()?;
        Ok(me)
    }

    /// Apply the records of `generation` from offset `from` on to
    /// `pending`, up to the first that does not check out: how many.
    fn replay(&mut self, text: &[u8], from: u64, generation: u64) -> usize {
        let mut at = from as usize;
        let mut n = 0;
        loop {
            let parsed = record(text, at, generation)
                .and_then(|(len, body)| parse_body(body).map(|kv| (len, kv)));
            match parsed {
                Some((len, (key, value))) => {
                    self.pending.insert(key.to_string(), value);
                    at += len;
                    n += 1;
                }
                None => {
                    // A record that does not check out, followed by one
                    // that does: damaged in place (a disk's bad sector),
                    // not torn by a crash (a torn record is the last).
                    // It is passed over and said; what follows replays.
                    let next = text
                        .get(at..at + 4)
                        .map(|h| u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize)
                        .filter(|&l| l > 0)
                        .map(|l| at + 8 + l);
                    match next.filter(|&nx| record(text, nx, generation).is_some()) {
                        Some(nx) => {
                            self.damaged.push(at as u64);
                            at = nx;
                        }
                        None => break,
                    }
                }
            }
        }
        self.at = at as u64;
        n
    }

    /// Run `f` over the store as (part of) a batch of decisions;
    /// [`GreyDb::commit`] makes them durable.
    pub fn batch<T>(&mut self, f: impl FnOnce(&mut Batch<'_>) -> T) -> Result<T, String> {
        let synced = self.synced.load(Ordering::Acquire);
        while let Some((n, _)) = self.unsynced_order.front() {
            if *n > synced {
                break;
            }
            let (n, k) = self.unsynced_order.pop_front().expect("a front");
            if self.unsynced.get(&k) == Some(&n) {
                self.unsynced.remove(&k);
            }
        }
        let tx = self.handle()?.begin_read().map_err(|e| {
            self.reopen = true;
            err("database", e)
        })?;
        let table = tx.open_table(TABLE).map_err(|e| err("database", e))?;
        let mut b = Batch {
            table,
            generation: self.generation,
            pending: &mut self.pending,
            frozen: self.frozen.as_deref(),
            undo: &mut self.undo,
            buf: &mut self.buf,
            unsynced: &mut self.unsynced,
            unsynced_order: &mut self.unsynced_order,
            this: self.handed + 1,
            synced,
            wrote: false,
            read_unsynced: false,
        };
        Ok(f(&mut b))
    }

    /// From now on, [`GreyDb::commit_then`] syncs in a thread of its own,
    /// so that the next batch is decided meanwhile; with
    /// [`AnswerAfter::Sync`] that thread writes the records too and the
    /// answers wait for its sync, with [`AnswerAfter::Write`] the caller
    /// writes them and answers at once.
    pub fn start_syncer(&mut self, after: AnswerAfter) -> Result<(), String> {
        if after == AnswerAfter::Write {
            let file = self
                .journal
                .try_clone()
                .map_err(|e| err("greylist journal", e))?;
            let (tx, rx) = mpsc::channel();
            let broken = Arc::new(AtomicBool::new(false));
            let b = broken.clone();
            let behind = Arc::new(Behind::default());
            let bh = behind.clone();
            let thread = std::thread::Builder::new()
                .name("greylist-sync".into())
                .spawn(move || sync_behind_loop(file, rx, b, bh))
                .map_err(|e| err("greylist journal", e))?;
            self.syncer = Some(Syncer {
                tx,
                broken,
                behind: Some(behind),
                thread: Some(thread),
            });
            return Ok(());
        }
        let mut text = vec![0u8; self.at as usize];
        self.journal
            .read_exact_at(&mut text, 0)
            .map_err(|e| err("greylist journal", e))?;
        let j = BlockJournal::open(&self.path, self.at, &text)?;
        let (tx, rx) = mpsc::channel();
        let broken = Arc::new(AtomicBool::new(false));
        let b = broken.clone();
        let synced = self.synced.clone();
        let handed = self.handed;
        let thread = std::thread::Builder::new()
            .name("greylist-sync".into())
            .spawn(move || sync_loop(j, rx, b, synced, handed))
            .map_err(|e| err("greylist journal", e))?;
        self.syncer = Some(Syncer {
            tx,
            broken,
            behind: None,
            thread: Some(thread),
        });
        Ok(())
    }

    /// Wait until everything queued for the syncer is durable.
    fn barrier(&self) {
        if let Some(s) = &self.syncer {
            let (tx, rx) = mpsc::sync_channel(1);
            if s.tx.send(SyncItem::Barrier(tx)).is_ok() {
                let _ = rx.recv();
            }
        }
    }

    /// Forget the batch being decided (its changes undone, its records
    /// dropped): an operation that failed halfway.
    pub fn discard(&mut self) {
        self.undo_batch();
        self.buf.clear();
    }

    fn undo_batch(&mut self) {
        undo_to(&mut self.pending, &mut self.undo, 0);
    }

    /// The last batch's records and their offset in the journal; none if
    /// it wrote nothing or if the journal, full or in doubt, was
    /// checkpointed instead (the records are then in redb). The batch is
    /// undone if that checkpoint fails; `undo` is kept for the caller.
    fn take_records(&mut self) -> Result<(u64, Vec<u8>), String> {
        if self.buf.is_empty() {
            return Ok((self.at, Vec::new()));
        }
        let end = region_base(self.generation) + REGION;
        if self.sync_failed() || self.at + self.buf.len() as u64 > end {
            self.buf.clear();
            if let Err(e) = self.checkpoint() {
                self.undo_batch();
                // What reached the file is unknown: the next batch goes
                // through a checkpoint too.
                self.at = JOURNAL_SIZE;
                return Err(e);
            }
            return Ok((0, Vec::new()));
        }
        let at = self.at;
        self.at += self.buf.len() as u64;
        Ok((at, std::mem::take(&mut self.buf)))
    }

    /// Make the last batch durable now. True if it wrote anything.
    pub fn commit(&mut self) -> Result<bool, String> {
        let wrote = !self.buf.is_empty();
        if self.syncer.is_some() {
            let (tx, rx) = mpsc::sync_channel(1);
            self.commit_then(Box::new(move |r| {
                let _ = tx.send(r);
            }));
            rx.recv()
                .map_err(|_| "greylist journal: the sync thread is gone".to_string())??;
            return Ok(wrote);
        }
        let (at, records) = self.take_records()?;
        if !records.is_empty() {
            let res = self
                .journal
                .write_all_at(&records, at)
                .and_then(|_| self.journal.sync_data());
            if let Err(e) = res {
                self.undo_batch();
                self.at = JOURNAL_SIZE;
                self.handed += 1;
                return Err(err("greylist journal", e));
            }
        }
        self.undo.clear();
        self.handed += 1;
        self.synced.store(self.handed, Ordering::Release);
        Ok(wrote)
    }

    /// Make the last batch durable, then run `done`: with the syncer
    /// started, in its threads, once a sync that covers the batch is
    /// over. A batch that wrote nothing still waits for the syncs before
    /// it (its answers may rest on their changes).
    pub fn commit_then(&mut self, done: Done) {
        let Some(s) = &self.syncer else {
            return done(self.commit().map(|_| ()));
        };
        let broken = s.broken.clone();
        if s.behind.is_some() {
            return done(self.write_behind());
        }
        // Every batch item the syncer receives counts, as it counts them.
        self.handed += 1;
        match self.take_records() {
            // The error goes behind the answers already queued, so that
            // a client's answers keep their order.
            Err(e) => {
                let s = self.syncer.as_ref().expect("the syncer");
                let item = SyncItem::Batch {
                    records: Vec::new(),
                    done: Box::new(move |_| done(Err(e))),
                };
                if let Err(mpsc::SendError(SyncItem::Batch { done, .. })) = s.tx.send(item) {
                    done(Ok(()));
                }
            }
            Ok((_, records)) => {
                self.undo.clear();
                let s = self.syncer.as_ref().expect("the syncer");
                if let Err(mpsc::SendError(SyncItem::Batch { done, .. })) =
                    s.tx.send(SyncItem::Batch { records, done })
                {
                    broken.store(true, Ordering::SeqCst);
                    done(Err("greylist journal: the sync thread is gone".into()));
                }
            }
        }
    }

    /// [`AnswerAfter::Write`]: write the last batch's records (buffered)
    /// and have the syncer sync them behind; what is written counts as
    /// durable for the answers.
    fn write_behind(&mut self) -> Result<(), String> {
        let (at, records) = self.take_records()?;
        if !records.is_empty() {
            if let Err(e) = self.journal.write_all_at(&records, at) {
                // Part of the records may have reached the file, whole
                // and valid: clear the first one's header so that a replay
                // stops before them (best effort; the next batch goes
                // through a checkpoint, which starts a new generation).
                let _ = self.journal.write_all_at(&[0u8; 8], at);
                self.undo_batch();
                // What reached the file is unknown: the next batch goes
                // through a checkpoint.
                self.at = JOURNAL_SIZE;
                return Err(err("greylist journal", e));
            }
            if let Some(s) = &self.syncer {
                if let Some(b) = &s.behind {
                    b.written.fetch_add(1, Ordering::SeqCst);
                    if b.sleeping.swap(false, Ordering::SeqCst)
                        && s.tx.send(SyncItem::Wake).is_err()
                    {
                        s.broken.store(true, Ordering::SeqCst);
                    }
                }
            }
        }
        self.undo.clear();
        self.handed += 1;
        self.synced.store(self.handed, Ordering::Release);
        Ok(())
    }

    /// A write or sync of the syncer failed: what reached the disk is
    /// unknown until a checkpoint.
    fn sync_failed(&self) -> bool {
        self.syncer
            .as_ref()
            .is_some_and(|s| s.broken.load(Ordering::SeqCst))
    }

    /// Checkpoint if the journal's region is half full or changes have
    /// waited long: in a thread of its own ([`GreyDb::start_background`]),
    /// so that requests go on meanwhile (a checkpoint of 20,000 changes
    /// takes a tenth of a second or more), unless the journal is in doubt
    /// (a failed sync) or the last checkpoint failed: then here, as
    /// [`GreyDb::checkpoint`]. After a failure, the next try waits
    /// ([`checkpoint_backoff`]); the error says when it comes. Batches
    /// that must write meanwhile still try one each (their answers
    /// depend on it).
    pub fn maybe_checkpoint(&mut self) -> Result<(), String> {
        self.maybe_checkpoint_at(Instant::now())
    }

    fn maybe_checkpoint_at(&mut self, now: Instant) -> Result<(), String> {
        if let Some(e) = self.finish_background(false, now) {
            return Err(e);
        }
        // A sync failed: what reached the disk is unknown until the
        // changes are in redb.
        let used = self.at.saturating_sub(region_base(self.generation));
        let due = self.sync_failed()
            || self.reopen
            || used >= CHECKPOINT_AT
            || (!self.pending.is_empty() && self.since.elapsed() >= CHECKPOINT_EVERY);
        if !due || self.retry_at.is_some_and(|t| now < t) || self.running.is_some() {
            return Ok(());
        }
        // In Sync mode the syncer first writes what it holds, so that the
        // switch to the other region drops nothing unwritten: a write
        // that fails there shows as a failed sync, checkpointed in turn.
        if self.syncer.as_ref().is_some_and(|s| s.behind.is_none()) {
            self.barrier();
        }
        // `at` at the journal's end: a write failed and what reached the
        // file is unknown (its records must not replay): in turn.
        let in_doubt = self.sync_failed() || self.reopen || self.at == JOURNAL_SIZE;
        if !in_doubt && self.failures == 0 && self.undo.is_empty() && self.buf.is_empty() {
            self.start_background();
            return Ok(());
        }
        self.checkpoint().map_err(|e| {
            // Counted here only: a batch's own checkpoint (which fails
            // its requests) does not lengthen the turns' wait.
            self.failures = self.failures.saturating_add(1);
            let wait = checkpoint_backoff(self.failures);
            self.retry_at = Some(now + wait);
            format!(
                "{e} ({} failure(s) in a row; next try in {} ms)",
                self.failures,
                wait.as_millis()
            )
        })
    }

    /// Hand the pending changes (this generation's) to a checkpoint in a
    /// thread of its own, and go on in the next generation, in the other
    /// region of the journal. The region the generation after that will
    /// reuse is the one just frozen, which is only written again once
    /// this checkpoint has committed (no background checkpoint starts
    /// before the last one succeeded; a synchronous one commits before
    /// its generation writes). A crash before the commit leaves both
    /// regions' records to replay, the older first.
    fn start_background(&mut self) {
        // Not open (`reopen` is then set, and checkpoints run in turn):
        // the changes stay pending.
        let Ok(db) = self.handle() else {
            return;
        };
        let frozen = Arc::new(std::mem::take(&mut self.pending));
        let next = self.generation + 1;
        self.generation = next;
        self.enter_region();
        let (tx, rx) = mpsc::channel();
        #[cfg(test)]
        let fail = if self.fail_checkpoints > 0 {
            self.fail_checkpoints -= 1;
            true
        } else {
            false
        };
        #[cfg(not(test))]
        let fail = false;
        let changes = frozen.clone();
        let job_db = db.clone();
        let job = move || {
            let r = if fail {
                Err("database: injected failure".to_string())
            } else {
                commit_changes(&job_db, &changes, next)
            };
            let _ = tx.send(r);
        };
        let thread = match std::thread::Builder::new()
            .name("greylist-checkpoint".into())
            .spawn(job)
        {
            Ok(t) => Some(t),
            Err(e) => {
                // No thread: the checkpoint runs here.
                tracing::warn!("greylist: no checkpoint thread ({e}); checkpointing in turn");
                let r = commit_changes(&db, &frozen, next);
                let (tx, rx2) = mpsc::channel();
                let _ = tx.send(r);
                self.frozen = Some(frozen);
                self.running = Some(Running {
                    result: rx2,
                    thread: None,
                });
                return;
            }
        };
        self.frozen = Some(frozen);
        self.running = Some(Running { result: rx, thread });
    }

    /// The result of a checkpoint under way in its thread, if it is over
    /// (`wait`: once it is). Success: its changes are in redb. Failure:
    /// they go back under the newer pending ones, for the next
    /// checkpoint, which then runs in turn (its region was not freed).
    fn finish_background(&mut self, wait: bool, now: Instant) -> Option<String> {
        let run = self.running.as_ref()?;
        let r = if wait {
            run.result
                .recv()
                .unwrap_or_else(|_| Err("database: the checkpoint thread is gone".into()))
        } else {
            match run.result.try_recv() {
                Ok(r) => r,
                Err(mpsc::TryRecvError::Empty) => return None,
                Err(mpsc::TryRecvError::Disconnected) => {
                    Err("database: the checkpoint thread is gone".into())
                }
            }
        };
        let mut run = self.running.take().expect("a checkpoint under way");
        if let Some(t) = run.thread.take() {
            let _ = t.join();
        }
        let frozen = self.frozen.take().unwrap_or_default();
        match r {
            Ok(()) => {
                self.failures = 0;
                self.retry_at = None;
                None
            }
            Err(e) => {
                self.reopen = true;
                let frozen = Arc::try_unwrap(frozen).unwrap_or_else(|a| (*a).clone());
                for (k, v) in frozen {
                    match self.pending.entry(k) {
                        std::collections::btree_map::Entry::Occupied(o) => {
                            // Changed since by the batch being decided:
                            // what an undo of it restores is now the
                            // frozen value (it was "not pending", which
                            // would read redb's older one).
                            for (uk, before) in self.undo.iter_mut() {
                                if uk == o.key() && before.is_none() {
                                    *before = Some(v);
                                }
                            }
                        }
                        std::collections::btree_map::Entry::Vacant(e) => {
                            e.insert(v);
                        }
                    }
                }
                self.failures = self.failures.saturating_add(1);
                let wait = checkpoint_backoff(self.failures);
                self.retry_at = Some(now + wait);
                Some(format!(
                    "{e} ({} failure(s) in a row; next try in {} ms)",
                    self.failures,
                    wait.as_millis()
                ))
            }
        }
    }

    /// redb's handle, unless it could not be opened again.
    fn handle(&self) -> Result<Arc<redb::Database>, String> {
        self.db.clone().ok_or_else(|| {
            format!(
                "database {}: not open (it is opened again at the next checkpoint)",
                self.db_path.display()
            )
        })
    }

    /// Close redb and open it again: after a failed write it refuses
    /// everything until then. What it holds is what its last commit
    /// wrote; the changes since are in the journal and in `pending`.
    /// (Called with no checkpoint under way: the handle is then this
    /// store's alone, and redb lets a file be opened once at a time.)
    fn reopen_db(&mut self) -> Result<(), String> {
        if self.running.is_some() {
            return Err("database: a checkpoint is under way".into());
        }
        // At most once a second: while the disk stays full every batch
        // that must write tries a checkpoint, and an open may read the
        // whole file (redb's repair after a failed write).
        let now = Instant::now();
        if self.db.is_some()
            && self
                .reopen_tried
                .is_some_and(|t| now < t + Duration::from_secs(1))
        {
            return Ok(());
        }
        self.reopen_tried = Some(now);
        self.db = None;
        // (Not waited for: a write batch is waiting.)
        let db = open_redb(&self.db_path, Duration::ZERO)?;
        self.db = Some(Arc::new(db));
        self.reopen = false;
        self.reopened += 1;
        tracing::info!(
            "greylist: database {} opened again after a failed write",
            self.db_path.display()
        );
        Ok(())
    }

    /// Apply every pending change to redb and start a new generation of
    /// the journal, in one transaction (once the syncer has written what
    /// it holds, and a checkpoint under way in its thread is over).
    pub fn checkpoint(&mut self) -> Result<(), String> {
        if let Some(e) = self.finish_background(true, Instant::now()) {
            tracing::warn!("greylist: checkpoint: {e}; its changes go with this one");
        }
        let r = self.checkpoint_once();
        if r.is_ok() {
            self.failures = 0;
            self.retry_at = None;
        } else {
            // redb may refuse everything after a failed write: opened
            // again before the next try.
            self.reopen = true;
        }
        r
    }

    fn checkpoint_once(&mut self) -> Result<(), String> {
        self.barrier();
        #[cfg(test)]
        if self.fail_checkpoints > 0 {
            self.fail_checkpoints -= 1;
            return Err("database: injected failure".into());
        }
        if self.reopen {
            self.reopen_db()?;
        }
        let db = self.handle()?;
        commit_changes(&db, &self.pending, self.generation + 1)?;
        // The handle writes: not opened again (should the last try have
        // been put off).
        self.reopen = false;
        self.generation += 1;
        self.pending.clear();
        // Everything is in redb now: no key waits for the journal (this
        // also bounds the list while the journal is failing).
        self.unsynced.clear();
        self.unsynced_order.clear();
        self.enter_region();
        if let Some(s) = &self.syncer {
            s.broken.store(false, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Write the current generation from the start of its region on (the
    /// syncer told where, in the mode where it writes).
    fn enter_region(&mut self) {
        self.at = region_base(self.generation);
        self.since = Instant::now();
        if let Some(s) = &self.syncer {
            // The write mode's syncer keeps no offset.
            if s.behind.is_none() {
                let _ = s.tx.send(SyncItem::Reset(self.at));
            }
        }
    }
}

impl Drop for GreyDb {
    fn drop(&mut self) {
        if let Some(e) = self.finish_background(true, Instant::now()) {
            tracing::warn!("greylist: checkpoint at close: {e}");
        }
        if !self.pending.is_empty() {
            if let Err(e) = self.checkpoint() {
                tracing::warn!(
                    "greylist: checkpoint at close: {e} (the journal keeps the changes)"
                );
            }
        }
        // The sync thread ends once its channel closes, after its last
        // sync and the answers behind it.
        if let Some(mut s) = self.syncer.take() {
            let thread = s.thread.take();
            drop(s);
            if let Some(t) = thread {
                let _ = t.join();
            }
        }
    }
}

/// The record at `at` if it is whole and of `generation`: (its length,
/// its body).
fn record(text: &[u8], at: usize, generation: u64) -> Option<(usize, &[u8])> {
    let head = text.get(at..at + 8)?;
    let len = u32::from_le_bytes(head[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(head[4..].try_into().ok()?);
    if len == 0 {
        return None;
    }
    let body = text.get(at + 8..(at + 8).checked_add(len)?)?;
    let mut h = crc32fast::Hasher::new();
    h.update(&generation.to_le_bytes());
    h.update(body);
    (h.finalize() == crc).then_some((8 + len, body))
}

fn parse_body(body: &[u8]) -> Option<(&str, Option<Entry>)> {
    let (&op, rest) = body.split_first()?;
    let klen = u16::from_le_bytes(rest.get(..2)?.try_into().ok()?) as usize;
    let key = std::str::from_utf8(rest.get(2..2 + klen)?).ok()?;
    let value = &rest[2 + klen..];
    match op {
        PUT => Some((key, Some(Entry::decode(value)?))),
        DELETE if value.is_empty() => Some((key, None)),
        _ => None,
    }
}

fn push_record(buf: &mut Vec<u8>, generation: u64, key: &str, value: Option<&Entry>) {
    let start = buf.len();
    buf.extend_from_slice(&[0; 8]);
    buf.push(if value.is_some() { PUT } else { DELETE });
    // Keys are bounded well below 64 KiB (grey::normalize).
    let klen = key.len().min(u16::MAX as usize);
    buf.extend_from_slice(&(klen as u16).to_le_bytes());
    buf.extend_from_slice(&key.as_bytes()[..klen]);
    if let Some(e) = value {
        buf.extend_from_slice(&e.encode());
    }
    let len = (buf.len() - start - 8) as u32;
    let mut h = crc32fast::Hasher::new();
    h.update(&generation.to_le_bytes());
    h.update(&buf[start + 8..]);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&h.finalize().to_le_bytes());
}

/// Undo the changes recorded in `undo` past its first `len`, latest
/// first, restoring `pending` as it was.
fn undo_to(
    pending: &mut BTreeMap<String, Option<Entry>>,
    undo: &mut Vec<(String, Option<Option<Entry>>)>,
    len: usize,
) {
    while undo.len() > len {
        let (k, before) = undo.pop().expect("an undo entry");
        match before {
            Some(v) => pending.insert(k, v),
            None => pending.remove(&k),
        };
    }
}

/// A point in a batch to go back to ([`Batch::rollback`]).
#[derive(Clone, Copy, Debug)]
pub struct Savepoint {
    undo: usize,
    buf: usize,
}

/// One batch's view of the store: pending changes over redb.
pub struct Batch<'a> {
    table: redb::ReadOnlyTable<&'static [u8], &'static [u8]>,
    generation: u64,
    pending: &'a mut BTreeMap<String, Option<Entry>>,
    /// A checkpoint's changes while it runs (between `pending` and redb).
    frozen: Option<&'a Changes>,
    undo: &'a mut Vec<(String, Option<Option<Entry>>)>,
    buf: &'a mut Vec<u8>,
    unsynced: &'a mut HashMap<String, u64>,
    unsynced_order: &'a mut VecDeque<(u64, String)>,
    /// This batch's number once committed, and the last durable one.
    this: u64,
    synced: u64,
    /// Since [`Batch::start_request`]: a change was made; a key was read
    /// whose last change is not known durable.
    wrote: bool,
    read_unsynced: bool,
}

impl Batch<'_> {
    fn set(&mut self, key: &str, value: Option<Entry>) {
        push_record(self.buf, self.generation, key, value.as_ref());
        let before = self.pending.insert(key.to_string(), value);
        self.undo.push((key.to_string(), before));
        self.wrote = true;
        self.unsynced.insert(key.to_string(), self.this);
        self.unsynced_order.push_back((self.this, key.to_string()));
    }

    /// Where the batch stands: `rollback` undoes what follows.
    pub fn savepoint(&self) -> Savepoint {
        Savepoint {
            undo: self.undo.len(),
            buf: self.buf.len(),
        }
    }

    /// Undo the changes made since `sp` (their records too): an
    /// operation that failed halfway leaves nothing of itself.
    pub fn rollback(&mut self, sp: Savepoint) {
        undo_to(self.pending, self.undo, sp.undo);
        self.buf.truncate(sp.buf);
    }

    /// What follows is one request's decision (see `rests_on_disk`).
    pub fn start_request(&mut self) {
        self.wrote = false;
        self.read_unsynced = false;
    }

    /// Since `start_request`, nothing was changed and nothing read that
    /// is not on disk yet: the answer may go before this batch's sync
    /// (it would be the same after a crash and a restart).
    pub fn rests_on_disk(&self) -> bool {
        !self.wrote && !self.read_unsynced
    }
}

impl Store for Batch<'_> {
    type Error = String;
    fn get(&mut self, key: &str) -> Result<Option<Entry>, String> {
        if self.unsynced.get(key).is_some_and(|n| *n > self.synced) {
            self.read_unsynced = true;
        }
        if let Some(v) = self.pending.get(key) {
            return Ok(*v);
        }
        if let Some(v) = self.frozen.and_then(|f| f.get(key)) {
            return Ok(*v);
        }
        let table = &self.table;
        guarded(|| {
            Ok(table
                .get(key.as_bytes())
                .map_err(|e| err("database", e))?
                .and_then(|v| Entry::decode(v.value())))
        })
        .unwrap_or_else(|| Err(damaged("a record on the way to a key")))
    }
    fn put(&mut self, key: &str, e: Entry) -> Result<(), String> {
        self.set(key, Some(e));
        Ok(())
    }
    fn delete(&mut self, key: &str) -> Result<bool, String> {
        let existed = self.get(key)?.is_some();
        if existed {
            self.set(key, None);
        }
        Ok(existed)
    }
    fn scan(&mut self, prefix: &str) -> Result<Vec<(String, Entry)>, String> {
        self.read_unsynced = true;
        let table = &self.table;
        // A key that is not UTF-8 was damaged on disk: left out, as an
        // entry that does not decode is.
        let mut all: BTreeMap<String, Entry> = guarded(|| {
            let mut all = BTreeMap::new();
            let from = prefix.as_bytes();
            for item in table.range(from..).map_err(|e| err("database", e))? {
                let (k, v) = item.map_err(|e| err("database", e))?;
                if !k.value().starts_with(from) {
                    break;
                }
                if let (Ok(k), Some(e)) = (std::str::from_utf8(k.value()), Entry::decode(v.value()))
                {
                    all.insert(k.to_string(), e);
                }
            }
            Ok::<_, String>(all)
        })
        .unwrap_or_else(|| Err(damaged("a record among the keys scanned")))?;
        let frozen = self.frozen.into_iter().flat_map(|f| {
            f.range(prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(prefix))
        });
        let pending = self
            .pending
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix));
        // The checkpoint's changes over redb, the newer ones over them.
        for (k, v) in frozen.chain(pending) {
            match v {
                Some(e) => all.insert(k.clone(), *e),
                None => all.remove(k),
            };
        }
        Ok(all.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(first: u64) -> Entry {
        Entry {
            first,
            last: first,
            count: 0,
            manual: false,
        }
    }

    /// How many files beside the database have `part` in their names.
    fn files_named(db: &Path, part: &str) -> usize {
        std::fs::read_dir(db.parent().unwrap())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().contains(part))
            .count()
    }

    /// A database whose lock another handle still holds for a moment (a
    /// service being torn down after `kill -9`) is opened once it is let
    /// go, not refused at once.
    #[test]
    fn a_lock_let_go_a_moment_later_is_waited_for() {
        let path = tmp("lockwait");
        let d = path.parent().unwrap().to_path_buf();
        std::fs::create_dir_all(&d).unwrap();
        let held = redb::Database::create(&path).unwrap();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(400));
            drop(held);
        });
        let started = std::time::Instant::now();
        let db = open_redb(&path, Duration::from_secs(5));
        t.join().unwrap();
        assert!(db.is_ok(), "{:?}", db.err());
        assert!(started.elapsed() >= Duration::from_millis(300));
        let _ = std::fs::remove_dir_all(&d);
    }

    fn tmp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("greystore-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d.join("grey.redb")
    }

    fn put(db: &mut GreyDb, k: &str, e: Option<Entry>) {
        db.batch(|b| match e {
            Some(e) => b.put(k, e).unwrap(),
            None => {
                b.delete(k).unwrap();
            }
        })
        .unwrap();
    }

    fn get(db: &mut GreyDb, k: &str) -> Option<Entry> {
        db.batch(|b| b.get(k).unwrap()).unwrap()
    }

    /// Journaled changes, as a process killed before any checkpoint
    /// leaves them (the journal written and synced, redb untouched), are
    /// replayed at the next open; a torn record at the end is not.
    #[test]
    fn journal_replays_after_a_kill_and_stops_at_a_torn_record() {
        let path = tmp("replay");
        {
            let mut db = GreyDb::open(&path).unwrap();
            put(&mut db, "a", Some(entry(1)));
            assert!(db.commit().unwrap());
            put(&mut db, "b", Some(entry(2)));
            put(&mut db, "a", None);
            assert!(db.commit().unwrap());
            // Nothing written: nothing to sync.
            assert_eq!(get(&mut db, "b"), Some(entry(2)));
            assert!(!db.commit().unwrap());
            // A torn third batch: half of its record reached the file.
            put(&mut db, "c", Some(entry(3)));
            let half = db.buf.len() / 2;
            db.journal.write_all_at(&db.buf[..half], db.at).unwrap();
            // The kill: the memory is lost, no checkpoint at drop.
            db.pending.clear();
        }
        let mut db = GreyDb::open(&path).unwrap();
        assert_eq!(get(&mut db, "a"), None);
        assert_eq!(get(&mut db, "b"), Some(entry(2)));
        assert_eq!(get(&mut db, "c"), None);
        // Opening checkpointed: redb holds it, the journal starts over
        // (in its generation's region).
        assert!(db.pending.is_empty());
        assert_eq!(db.at, region_base(db.generation));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// A record damaged in place (a byte changed inside it) with whole
    /// records after it: passed over, said, the journal kept aside, and
    /// the records after it replayed (a probe saw them all dropped).
    #[test]
    fn a_damaged_record_in_the_journal_is_passed_over_and_the_rest_replayed() {
        let path = tmp("damaged");
        let first;
        {
            let mut db = GreyDb::open(&path).unwrap();
            first = db.at;
            for (k, n) in [("a", 1), ("b", 2), ("c", 3), ("d", 4)] {
                put(&mut db, k, Some(entry(n)));
                assert!(db.commit().unwrap());
            }
            db.pending.clear();
        }
        // Record "b": the second, after "a"'s.
        let jpath = journal_path(&path);
        let mut j = std::fs::read(&jpath).unwrap();
        let a_len = u32::from_le_bytes(j[first as usize..first as usize + 4].try_into().unwrap());
        let b_at = first as usize + 8 + a_len as usize;
        j[b_at + 12] ^= 0xff;
        std::fs::write(&jpath, &j).unwrap();
        let mut db = GreyDb::open(&path).unwrap();
        assert_eq!(get(&mut db, "a"), Some(entry(1)));
        assert_eq!(get(&mut db, "b"), None, "the damaged one is lost");
        assert_eq!(get(&mut db, "c"), Some(entry(3)));
        assert_eq!(get(&mut db, "d"), Some(entry(4)));
        assert_eq!(db.damaged, [b_at as u64]);
        let kept = files_named(&path, ".journal.damaged-");
        assert_eq!(kept, 1);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// A new database beside an old journal (the old database moved
    /// aside): the journal is moved aside too, so that its records never
    /// replay into the new one.
    #[test]
    fn a_new_database_does_not_take_an_old_journal() {
        let path = tmp("newdb");
        {
            let mut db = GreyDb::open(&path).unwrap();
            put(&mut db, "old", Some(entry(1)));
            assert!(db.commit().unwrap());
            db.pending.clear();
        }
        std::fs::rename(&path, path.with_extension("aside")).unwrap();
        let mut db = GreyDb::open(&path).unwrap();
        assert_eq!(get(&mut db, "old"), None, "not replayed into the new one");
        let aside = files_named(&path, ".journal.old-");
        assert_eq!(aside, 1);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// A database file cut short (redb asserts on it): an error naming the
    /// file, not a panic, and the file left as it was.
    #[test]
    fn a_database_cut_short_is_refused_by_name() {
        let path = tmp("cut");
        {
            let mut db = GreyDb::open(&path).unwrap();
            for i in 0..2000 {
                put(&mut db, &format!("key{i}"), Some(entry(i)));
            }
            assert!(db.commit().unwrap());
        }
        let len = std::fs::metadata(&path).unwrap().len();
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len / 2).unwrap();
        drop(f);
        let e = GreyDb::open(&path).err().expect("refused");
        assert!(
            e.contains(&path.display().to_string()) && e.contains("damaged"),
            "{e}"
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            len / 2,
            "left as it was"
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// Records of an earlier generation, left in the reused journal, are
    /// not replayed over newer changes.
    #[test]
    fn old_generations_in_the_journal_are_not_replayed() {
        let path = tmp("generation");
        {
            let mut db = GreyDb::open(&path).unwrap();
            // Generation 1: two records of the same size.
            put(&mut db, "k0", Some(entry(1)));
            put(&mut db, "k1", Some(entry(1)));
            db.commit().unwrap();
            db.checkpoint().unwrap();
            // Generation 2 (the other region) changes k1.
            put(&mut db, "k1", Some(entry(5)));
            db.commit().unwrap();
            db.checkpoint().unwrap();
            // Generation 3, in generation 1's region: one record, over
            // k0's old one; k1's old record of generation 1 follows it.
            put(&mut db, "k0", Some(entry(7)));
            db.commit().unwrap();
            db.pending.clear();
        }
        let mut db = GreyDb::open(&path).unwrap();
        assert_eq!(get(&mut db, "k0"), Some(entry(7)));
        assert_eq!(get(&mut db, "k1"), Some(entry(5)));
        drop(db);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// A journal of garbage (a disk's bad day) replays nothing and
    /// panics nowhere.
    #[test]
    fn garbage_in_the_journal_replays_nothing() {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        for n in [0usize, 7, 8, 9, 100, 5000] {
            let text: Vec<u8> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let path = tmp(&format!("garbage{n}"));
            drop(GreyDb::open(&path).unwrap());
            std::fs::write(journal_path(&path), &text).unwrap();
            let mut db = GreyDb::open(&path).unwrap();
            assert_eq!(db.batch(|b| b.scan("").unwrap()).unwrap(), vec![]);
            drop(db);
            let _ = std::fs::remove_dir_all(path.parent().unwrap());
        }
    }

    /// A scan sees redb's entries with the pending changes over them.
    #[test]
    fn scan_merges_pending_changes_over_the_database() {
        let path = tmp("scan");
        let mut db = GreyDb::open(&path).unwrap();
        for k in ["p/1", "p/2", "p/3", "q/1"] {
            put(&mut db, k, Some(entry(1)));
        }
        db.commit().unwrap();
        db.checkpoint().unwrap();
        put(&mut db, "p/2", None);
        put(&mut db, "p/4", Some(entry(4)));
        put(&mut db, "p/1", Some(entry(9)));
        db.commit().unwrap();
        let got = db.batch(|b| b.scan("p/").unwrap()).unwrap();
        assert_eq!(
            got,
            vec![
                ("p/1".to_string(), entry(9)),
                ("p/3".to_string(), entry(1)),
                ("p/4".to_string(), entry(4))
            ]
        );
        drop(db);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// An operation rolled back to a savepoint leaves nothing: not its
    /// changes, not its records in the journal.
    #[test]
    fn a_rollback_undoes_changes_and_their_records() {
        let path = tmp("rollback");
        {
            let mut db = GreyDb::open(&path).unwrap();
            db.batch(|b| {
                b.put("a", entry(1)).unwrap();
                let sp = b.savepoint();
                b.put("b", entry(2)).unwrap();
                b.put("a", entry(3)).unwrap();
                b.delete("a").unwrap();
                b.rollback(sp);
                b.put("c", entry(4)).unwrap();
            })
            .unwrap();
            db.commit().unwrap();
            assert_eq!(get(&mut db, "a"), Some(entry(1)));
            assert_eq!(get(&mut db, "b"), None);
            // The kill: the memory is lost, no checkpoint at drop; the
            // journal alone tells.
            db.pending.clear();
        }
        let mut db = GreyDb::open(&path).unwrap();
        assert_eq!(get(&mut db, "a"), Some(entry(1)));
        assert_eq!(get(&mut db, "b"), None);
        assert_eq!(get(&mut db, "c"), Some(entry(4)));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// A request may be answered before the batch's sync only if it
    /// changed nothing and read nothing whose last change is not durable.
    #[test]
    fn answers_rest_on_disk_only_once_what_they_read_is_synced() {
        let path = tmp("rests");
        let mut db = GreyDb::open(&path).unwrap();
        put(&mut db, "old", Some(entry(1)));
        db.commit().unwrap();
        let free = |db: &mut GreyDb, f: &dyn Fn(&mut Batch<'_>)| {
            db.batch(|b| {
                b.start_request();
                f(b);
                b.rests_on_disk()
            })
            .unwrap()
        };
        // Read a durable key, or a missing one: free.
        assert!(free(&mut db, &|b| assert!(b.get("old").unwrap().is_some())));
        assert!(free(&mut db, &|b| assert!(b
            .get("none")
            .unwrap()
            .is_none())));
        // A change: not free; nor a read of a key changed in this batch
        // or in one not synced yet.
        assert!(!free(&mut db, &|b| b.put("new", entry(2)).unwrap()));
        assert!(!free(&mut db, &|b| {
            b.get("new").unwrap();
        }));
        db.start_syncer(AnswerAfter::Sync).unwrap();
        assert!(!free(&mut db, &|b| {
            b.get("new").unwrap();
        }));
        let (tx, rx) = mpsc::channel();
        db.commit_then(Box::new(move |r| tx.send(r).unwrap()));
        rx.recv().unwrap().unwrap();
        // Synced: free again (the batch after the sync sees it).
        assert!(free(&mut db, &|b| {
            b.get("new").unwrap();
        }));
        // A batch in flight while the next is decided: its keys are not
        // free until its sync is over.
        put(&mut db, "late", Some(entry(3)));
        let (tx, rx) = mpsc::channel();
        let (hold_tx, hold_rx) = mpsc::channel::<()>();
        // Hold the answer thread so that the test sees the batch before
        // and after its sync: `done` runs after the sync, in order.
        db.commit_then(Box::new(move |r| {
            tx.send(r).unwrap();
            let _ = hold_rx.recv();
        }));
        let before = free(&mut db, &|b| {
            b.get("late").unwrap();
        });
        rx.recv().unwrap().unwrap();
        let after = free(&mut db, &|b| {
            b.get("late").unwrap();
        });
        drop(hold_tx);
        // `before` may have raced the sync (then true, which is right);
        // after the sync it is free for certain.
        assert!(after, "{before}");
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// With the syncer, `done` runs after the sync (or the write), in
    /// order; a full journal checkpoints instead.
    #[test]
    fn the_syncer_runs_done_in_order_and_a_full_journal_checkpoints() {
        for after in [AnswerAfter::Sync, AnswerAfter::Write] {
            syncer_in_order(after);
        }
    }

    fn syncer_in_order(after: AnswerAfter) {
        let path = tmp(&format!("syncer-{after:?}"));
        let mut db = GreyDb::open(&path).unwrap();
        db.start_syncer(after).unwrap();
        let (tx, rx) = mpsc::channel();
        let key = "k".repeat(1000);
        let mut gen0 = db.generation;
        let mut checkpoints = 0;
        for i in 0..20_000u64 {
            put(&mut db, &format!("{key}{i}"), Some(entry(i)));
            let tx = tx.clone();
            db.commit_then(Box::new(move |r| tx.send((i, r)).unwrap()));
            if db.generation != gen0 {
                checkpoints += 1;
                gen0 = db.generation;
            }
        }
        drop(tx);
        let got: Vec<_> = rx.iter().take(20_000).collect();
        assert!(got.iter().all(|(_, r)| r.is_ok()));
        assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
        assert!(checkpoints >= 2, "{after:?}: {checkpoints}");
        drop(db);
        let mut db = GreyDb::open(&path).unwrap();
        assert_eq!(get(&mut db, &format!("{key}19999")), Some(entry(19_999)));
        assert_eq!(get(&mut db, &format!("{key}0")), Some(entry(0)));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// `AnswerAfter::Write`: once `done` has run, the batch is in the
    /// journal file, so a kill of the process right then loses nothing
    /// (the next open replays it); what is read meanwhile counts as
    /// durable.
    #[test]
    fn answered_after_the_write_survives_a_kill() {
        let path = tmp("behind");
        {
            let mut db = GreyDb::open(&path).unwrap();
            db.start_syncer(AnswerAfter::Write).unwrap();
            for i in 0..100u64 {
                put(&mut db, &format!("k{i}"), Some(entry(i)));
                let (tx, rx) = mpsc::channel();
                db.commit_then(Box::new(move |r| tx.send(r).unwrap()));
                // Answered at once, from this thread.
                rx.try_recv().unwrap().unwrap();
                let free = db
                    .batch(|b| {
                        b.start_request();
                        b.get(&format!("k{i}")).unwrap();
                        b.rests_on_disk()
                    })
                    .unwrap();
                assert!(free);
            }
            // The kill: the memory is lost, no checkpoint at drop.
            db.pending.clear();
        }
        let mut db = GreyDb::open(&path).unwrap();
        for i in 0..100u64 {
            assert_eq!(get(&mut db, &format!("k{i}")), Some(entry(i)));
        }
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// A checkpoint that fails (a full disk) is tried again after a wait
    /// that doubles, not at every turn; a success clears the wait.
    #[test]
    fn failed_checkpoints_are_retried_after_a_growing_wait() {
        assert_eq!(checkpoint_backoff(1), Duration::from_millis(100));
        assert_eq!(checkpoint_backoff(2), Duration::from_millis(200));
        assert_eq!(checkpoint_backoff(9), Duration::from_millis(25_600));
        assert_eq!(checkpoint_backoff(10), Duration::from_secs(30));
        assert_eq!(checkpoint_backoff(u32::MAX), Duration::from_secs(30));
        let path = tmp("backoff");
        let mut db = GreyDb::open(&path).unwrap();
        db.start_syncer(AnswerAfter::Write).unwrap();
        put(&mut db, "a", Some(entry(1)));
        db.commit().unwrap();
        let gen0 = db.generation;
        // A checkpoint is due (a sync failed) and the next two fail.
        let broken = |db: &GreyDb| {
            db.syncer
                .as_ref()
                .unwrap()
                .broken
                .store(true, Ordering::SeqCst)
        };
        broken(&db);
        db.fail_checkpoints = 2;
        let t0 = Instant::now();
        let e = db.maybe_checkpoint_at(t0).unwrap_err();
        assert!(
            e.contains("injected") && e.contains("next try in 100 ms"),
            "{e}"
        );
        // Not tried again before the wait is over: no error, no attempt.
        db.maybe_checkpoint_at(t0 + Duration::from_millis(99))
            .unwrap();
        assert_eq!(db.fail_checkpoints, 1);
        let e = db
            .maybe_checkpoint_at(t0 + Duration::from_millis(100))
            .unwrap_err();
        assert!(
            e.contains("2 failure(s) in a row; next try in 200 ms"),
            "{e}"
        );
        db.maybe_checkpoint_at(t0 + Duration::from_millis(299))
            .unwrap();
        assert_eq!(db.generation, gen0);
        db.maybe_checkpoint_at(t0 + Duration::from_millis(300))
            .unwrap();
        assert_eq!(db.generation, gen0 + 1);
        assert!(db.pending.is_empty());
        // redb was closed and opened again before that try (after a
        // failed write it refuses everything until then), and reads.
        assert_eq!(db.reopened, 1);
        assert!(!db.reopen);
        assert_eq!(get(&mut db, "a"), Some(entry(1)));
        // A success clears the wait: the next failure waits 100 ms again.
        put(&mut db, "b", Some(entry(2)));
        db.commit().unwrap();
        broken(&db);
        db.fail_checkpoints = 1;
        let e = db.maybe_checkpoint_at(t0).unwrap_err();
        assert!(
            e.contains("1 failure(s) in a row; next try in 100 ms"),
            "{e}"
        );
        drop(db);
        let mut db = GreyDb::open(&path).unwrap();
        assert_eq!(get(&mut db, "a"), Some(entry(1)));
        assert_eq!(get(&mut db, "b"), Some(entry(2)));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// Changes until the region is due for a checkpoint; how many.
    fn fill(db: &mut GreyDb, key: &str) -> u64 {
        let mut i = 0u64;
        while db.at - region_base(db.generation) < CHECKPOINT_AT {
            // Fifty changes a batch: fewer syncs.
            for _ in 0..50 {
                put(db, &format!("{key}{i}"), Some(entry(i)));
                i += 1;
            }
            db.commit().unwrap();
        }
        i
    }

    /// Wait for the checkpoint in its thread to be over.
    fn settle(db: &mut GreyDb) -> Result<(), String> {
        let t = Instant::now();
        while db.running.is_some() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the checkpoint hangs"
            );
            db.maybe_checkpoint()?;
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    }

    /// A due checkpoint runs in its own thread: requests go on meanwhile,
    /// reading its changes under the newer ones, the next generation
    /// written to the other region; afterwards redb holds its changes and
    /// the journal the newer ones, and a kill loses none.
    #[test]
    fn a_checkpoint_in_its_thread_keeps_every_change() {
        for after in [AnswerAfter::Sync, AnswerAfter::Write] {
            let path = tmp(&format!("background-{after:?}"));
            let mut db = GreyDb::open(&path).unwrap();
            db.start_syncer(after).unwrap();
            let key = "k".repeat(200);
            let n = fill(&mut db, &key);
            let gen0 = db.generation;
            db.maybe_checkpoint().unwrap();
            assert!(db.running.is_some() && db.frozen.is_some(), "{after:?}");
            assert_eq!(db.generation, gen0 + 1);
            assert_eq!(db.at, region_base(gen0 + 1));
            assert_ne!(region_base(gen0), region_base(gen0 + 1));
            assert!(db.pending.is_empty());
            assert_eq!(get(&mut db, &format!("{key}0")), Some(entry(0)));
            put(&mut db, "new", Some(entry(7)));
            put(&mut db, &format!("{key}1"), None);
            db.commit().unwrap();
            assert_eq!(get(&mut db, &format!("{key}1")), None, "{after:?}");
            let all = db.batch(|b| b.scan("").unwrap()).unwrap();
            assert_eq!(all.len() as u64, n, "{after:?}");
            settle(&mut db).unwrap();
            assert!(db.frozen.is_none());
            assert_eq!(db.pending.len(), 2, "{after:?}");
            // The kill: the memory is lost, no checkpoint at drop.
            db.pending.clear();
            drop(db);
            let mut db = GreyDb::open(&path).unwrap();
            assert_eq!(get(&mut db, &format!("{key}0")), Some(entry(0)));
            assert_eq!(get(&mut db, &format!("{key}1")), None, "{after:?}");
            assert_eq!(get(&mut db, &format!("{key}{}", n - 1)), Some(entry(n - 1)));
            assert_eq!(get(&mut db, "new"), Some(entry(7)), "{after:?}");
            let _ = std::fs::remove_dir_all(path.parent().unwrap());
        }
    }

    /// A kill while the checkpoint in its thread has not committed (as
    /// one that failed leaves the disk): the next open replays both
    /// regions, the older generation first.
    #[test]
    fn a_kill_before_the_checkpoint_commits_loses_nothing() {
        for after in [AnswerAfter::Sync, AnswerAfter::Write] {
            let path = tmp(&format!("uncommitted-{after:?}"));
            let mut db = GreyDb::open(&path).unwrap();
            db.start_syncer(after).unwrap();
            let key = "k".repeat(200);
            let n = fill(&mut db, &key);
            db.fail_checkpoints = 1;
            db.maybe_checkpoint().unwrap();
            assert!(db.running.is_some(), "{after:?}");
            put(&mut db, &format!("{key}0"), Some(entry(100)));
            put(&mut db, "new", Some(entry(7)));
            db.commit().unwrap();
            // The kill: the memory is lost, the checkpoint never came
            // (its thread, which failed, is let go of redb first).
            if let Some(t) = db.running.take().and_then(|mut r| r.thread.take()) {
                t.join().unwrap();
            }
            db.frozen = None;
            db.pending.clear();
            drop(db);
            let mut db = GreyDb::open(&path).unwrap();
            assert_eq!(
                get(&mut db, &format!("{key}0")),
                Some(entry(100)),
                "{after:?}"
            );
            assert_eq!(get(&mut db, &format!("{key}1")), Some(entry(1)));
            assert_eq!(get(&mut db, &format!("{key}{}", n - 1)), Some(entry(n - 1)));
            assert_eq!(get(&mut db, "new"), Some(entry(7)));
            let _ = std::fs::remove_dir_all(path.parent().unwrap());
        }
    }

    /// A checkpoint in its thread that fails: its changes go back under
    /// the newer ones, the error says when the next try comes, and that
    /// one runs in turn (the failed one's region holds changes redb does
    /// not have: not reused before they are in).
    #[test]
    fn a_failed_checkpoint_in_its_thread_is_retried_in_turn() {
        let path = tmp("background-failed");
        let mut db = GreyDb::open(&path).unwrap();
        db.start_syncer(AnswerAfter::Write).unwrap();
        let key = "k".repeat(200);
        let n = fill(&mut db, &key);
        let gen0 = db.generation;
        db.fail_checkpoints = 1;
        db.maybe_checkpoint().unwrap();
        put(&mut db, &format!("{key}0"), Some(entry(100)));
        db.commit().unwrap();
        let e = settle(&mut db).unwrap_err();
        assert!(
            e.contains("injected") && e.contains("next try in 100 ms"),
            "{e}"
        );
        assert!(db.frozen.is_none() && db.running.is_none());
        assert_eq!(db.pending.len() as u64, n);
        assert_eq!(get(&mut db, &format!("{key}0")), Some(entry(100)));
        assert_eq!(db.generation, gen0 + 1);
        // The next, once due and after the wait, runs in turn (not in a
        // thread: the failed one's region still holds changes redb does
        // not have): everything in redb, the journal in a new generation.
        db.since = Instant::now()
            .checked_sub(CHECKPOINT_EVERY)
            .expect("a clock past a minute");
        let r = db.retry_at.expect("a wait after the failure");
        db.maybe_checkpoint_at(r - Duration::from_millis(1))
            .unwrap();
        assert_eq!(db.generation, gen0 + 1, "tried again before the wait");
        db.maybe_checkpoint_at(r).unwrap();
        assert!(db.running.is_none(), "a second checkpoint in a thread");
        assert!(db.pending.is_empty());
        assert_eq!(db.reopened, 1, "redb opened again after the failure");
        assert_eq!(db.generation, gen0 + 2);
        assert_eq!(db.failures, 0);
        drop(db);
        let mut db = GreyDb::open(&path).unwrap();
        assert_eq!(get(&mut db, &format!("{key}0")), Some(entry(100)));
        assert_eq!(get(&mut db, &format!("{key}1")), Some(entry(1)));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// A checkpoint in its thread fails, a batch then changes one of its
    /// keys, and that batch's own checkpoint (a failed sync) fails too:
    /// undoing the batch restores the frozen value, not redb's older one.
    #[test]
    fn undoing_a_batch_after_a_failed_checkpoint_keeps_the_frozen_value() {
        let path = tmp("undo-frozen");
        let mut db = GreyDb::open(&path).unwrap();
        put(&mut db, "k", Some(entry(1)));
        db.commit().unwrap();
        db.checkpoint().unwrap();
        db.start_syncer(AnswerAfter::Write).unwrap();
        let key = "k".repeat(200);
        put(&mut db, "k", Some(entry(2)));
        db.commit().unwrap();
        fill(&mut db, &key);
        // The checkpoint in its thread, then the batch's own: both fail.
        db.fail_checkpoints = 2;
        db.maybe_checkpoint().unwrap();
        put(&mut db, "k", Some(entry(3)));
        db.syncer
            .as_ref()
            .unwrap()
            .broken
            .store(true, Ordering::SeqCst);
        assert!(db.commit().is_err());
        assert_eq!(get(&mut db, "k"), Some(entry(2)));
        drop(db);
        let mut db = GreyDb::open(&path).unwrap();
        assert_eq!(get(&mut db, "k"), Some(entry(2)));
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// A journal written before the regions (every record from offset 0,
    /// whatever the generation) is replayed.
    #[test]
    fn a_journal_from_before_the_regions_is_replayed() {
        for generation in [4u64, 5] {
            let path = tmp(&format!("legacy{generation}"));
            drop(GreyDb::open(&path).unwrap());
            {
                let db = redb::Database::create(&path).unwrap();
                commit_changes(&db, &Changes::new(), generation).unwrap();
            }
            let mut text = Vec::new();
            push_record(&mut text, generation, "a", Some(&entry(1)));
            push_record(&mut text, generation, "b", Some(&entry(2)));
            std::fs::write(journal_path(&path), &text).unwrap();
            let mut db = GreyDb::open(&path).unwrap();
            assert_eq!(get(&mut db, "a"), Some(entry(1)), "{generation}");
            assert_eq!(get(&mut db, "b"), Some(entry(2)), "{generation}");
            drop(db);
            let _ = std::fs::remove_dir_all(path.parent().unwrap());
        }
    }

    /// A failed sync (`broken`) makes the next turn checkpoint, even with
    /// no batch that writes: the changes go to redb, and the journal
    /// starts a new generation.
    #[test]
    fn a_failed_sync_checkpoints_at_the_next_turn() {
        for after in [AnswerAfter::Sync, AnswerAfter::Write] {
            let path = tmp(&format!("broken-{after:?}"));
            let mut db = GreyDb::open(&path).unwrap();
            db.start_syncer(after).unwrap();
            put(&mut db, "a", Some(entry(1)));
            db.commit().unwrap();
            db.maybe_checkpoint().unwrap();
            let gen0 = db.generation;
            assert!(!db.pending.is_empty(), "{after:?}");
            // What the sync thread does when fdatasync fails.
            db.syncer
                .as_ref()
                .unwrap()
                .broken
                .store(true, Ordering::SeqCst);
            db.maybe_checkpoint().unwrap();
            assert_eq!(db.generation, gen0 + 1, "{after:?}");
            assert!(db.pending.is_empty(), "{after:?}");
            assert!(!db.syncer.as_ref().unwrap().broken.load(Ordering::SeqCst));
            // Nothing else to do: no more checkpoints.
            db.maybe_checkpoint().unwrap();
            assert_eq!(db.generation, gen0 + 1, "{after:?}");
            drop(db);
            let mut db = GreyDb::open(&path).unwrap();
            assert_eq!(get(&mut db, "a"), Some(entry(1)), "{after:?}");
            let _ = std::fs::remove_dir_all(path.parent().unwrap());
        }
    }
    /// A database made before the byte-keyed tables: its entries and the
    /// journal's generation are moved over at open, the old tables gone.
    #[test]
    fn a_database_with_the_old_tables_is_moved_over() {
        let path = tmp("old-tables");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        {
            let db = redb::Database::create(&path).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut t = tx.open_table(OLD_TABLE).unwrap();
                t.insert("a", entry(1).encode().as_slice()).unwrap();
                t.insert("b", entry(2).encode().as_slice()).unwrap();
                t.insert("s1@example.com", entry(3).encode().as_slice())
                    .unwrap();
                let mut m = tx.open_table(OLD_META).unwrap();
                m.insert("journal-generation", 7).unwrap();
            }
            tx.commit().unwrap();
        }
        // One key damaged on disk: redb's `&str` decoding panics on it.
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes
            .windows(14)
            .position(|w| w == b"s1@example.com")
            .expect("the key on disk");
        bytes[at + 2] = 0x80;
        std::fs::write(&path, &bytes).unwrap();
        let mut db = GreyDb::open(&path).unwrap();
        let all = db.batch(|b| b.scan("")).unwrap().unwrap();
        assert_eq!(all.len(), 2, "the damaged one left behind: {all:?}");
        assert!(db.generation >= 7, "{}", db.generation);
        assert_eq!(get(&mut db, "a"), Some(entry(1)));
        assert_eq!(get(&mut db, "b"), Some(entry(2)));
        drop(db);
        let db = redb::Database::create(&path).unwrap();
        let tx = db.begin_read().unwrap();
        let names: Vec<String> = tx
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_string())
            .collect();
        assert!(
            !names.iter().any(|n| n == "greylist" || n == "meta"),
            "{names:?}"
        );
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }

    /// A key damaged on disk (a byte that makes it no UTF-8) is left out of
    /// what is read, and nothing panics (redb's `&str` keys unwrapped
    /// their decoding: a probe's one flipped byte killed the service).
    #[test]
    fn a_damaged_key_on_disk_is_left_out_not_a_panic() {
        let path = tmp("damaged-key");
        let mut db = GreyDb::open(&path).unwrap();
        for k in ["s0@example.com", "s1@example.com", "s2@example.com"] {
            put(&mut db, k, Some(entry(1)));
        }
        db.commit().unwrap();
        db.checkpoint().unwrap();
        drop(db);
        let mut bytes = std::fs::read(&path).unwrap();
        let at = bytes
            .windows(14)
            .position(|w| w == b"s1@example.com")
            .expect("the key on disk");
        // No UTF-8 (a lone continuation byte), in the keys' order still.
        bytes[at + 2] = 0x80;
        std::fs::write(&path, &bytes).unwrap();
        let mut db = GreyDb::open(&path).unwrap();
        let all = db.batch(|b| b.scan("")).unwrap().unwrap();
        let keys: Vec<&str> = all.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["s0@example.com", "s2@example.com"]);
        assert_eq!(get(&mut db, "s2@example.com"), Some(entry(1)));
        assert_eq!(get(&mut db, "s1@example.com"), None);
        drop(db);
        let _ = std::fs::remove_dir_all(path.parent().unwrap());
    }
}
