//! The daemon's shared state: the data plane (one lock), the host
//! interface, the clock, what reloads need, and the `log --follow`
//! clients; and the flags the signal handlers set. Everything the
//! threads share is here; `run` starts and stops the threads.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use palisade_conf::host::HostModel;
use palisade_net::afpacket::Port;
use palisade_net::dataplane::Dataplane;
use palisade_net::tap::Tap;

/// Set by SIGTERM and SIGINT: every thread stops.
pub static STOP: AtomicBool = AtomicBool::new(false);
/// Set by SIGHUP: the reload thread reads pf.conf again.
pub static RELOAD: AtomicBool = AtomicBool::new(false);

pub extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
    // Wake worker 0 at once (it bows out of CARP mastership): otherwise it
    // notices only at its next poll, up to 100 ms later.
    let fd = WAKE_FD.load(Ordering::SeqCst);
    if fd >= 0 {
        let one = 1u64.to_ne_bytes();
        // SAFETY: write(2) is async-signal-safe; 8 bytes from a valid
        // buffer to the eventfd `WAKE_FD` names while it is open.
        let _ = unsafe { libc::write(fd, one.as_ptr() as *const libc::c_void, 8) };
    }
}

/// The eventfd that wakes worker 0 (`Shared::wake`), while it is open; -1
/// otherwise. The stop signal writes to it.
pub static WAKE_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

pub extern "C" fn on_hup(_: libc::c_int) {
    RELOAD.store(true, Ordering::SeqCst);
}

/// How far ahead of the daemon's start its clock begins: longer than any
/// state may have left (pfsync's and the state file's expiry is capped at
/// seven days) and than the ages worth keeping (a state's age is kept
/// up to this). A state taken back with less time left than its timeout
/// class is kept as last seen that much before now; with a clock starting
/// at 0 that moment would be before 0, and such a state got its class's
/// whole timeout again (an idle established TCP state 24 hours more,
/// after a restart or on a freshly started pfsync peer).
pub const CLOCK_AHEAD: std::time::Duration = std::time::Duration::from_secs(100 * 24 * 3600);

/// The origin of the daemon's clock: `CLOCK_AHEAD` before now. Instants
/// before the boot are fine on Linux (CLOCK_MONOTONIC counts from the
/// boot; an Instant is a signed count); if one cannot be made, now.
pub fn clock_origin() -> Instant {
    let now = Instant::now();
    now.checked_sub(CLOCK_AHEAD).unwrap_or(now)
}

/// Is the daemon stopping?
pub fn stopping() -> bool {
    STOP.load(Ordering::SeqCst)
}

/// What the workers share: the data plane (one lock per batch of frames),
/// the host interface and the clock.
pub struct Shared {
    pub(crate) dp: Mutex<Dataplane>,
    pub(crate) tap: Option<Tap>,
    pub(crate) host_port: usize,
    /// The clock's origin (`clock_origin`): what the data plane, CARP
    /// and pfsync are told is the time since.
    pub start: Instant,
    /// When the daemon started (uptime).
    pub started: Instant,
    /// For reloads: the pf.conf, the host model it is read against, and
    /// the `set` options in force.
    pub pf_path: PathBuf,
    /// palisade.toml and its text as it was read at start: a reload reads
    /// pf.conf only, and says so when palisade.toml changed since.
    pub config_path: PathBuf,
    pub config_text: Option<String>,
    pub host: HostModel,
    pub options: String,
    /// The running ruleset's queue names, which rules loaded into an
    /// anchor may name (`ftp-proxy -q`); replaced at each reload.
    pub queues: Mutex<Vec<String>>,
    /// Anchors emptied by a `flush` request since the start (until loaded
    /// again): `anchor ... show` lists them as `flushed`, so that
    /// ftp-proxy, finding its anchor empty, tells an operator's flush
    /// (left alone, as pfctl -F rules is) from a daemon that restarted
    /// (its rules loaded again).
    /// (Those of the last `FLUSHED_FOR`, `FLUSHED_KEPT` at most: ftp-proxy
    /// flushes each session's anchor as it ends, and those names never
    /// come back; the proxy looks every second.)
    pub flushed: Mutex<Flushed>,
    /// `palisade log --follow` clients: one line per logged packet each.
    pub(crate) followers: Mutex<Vec<std::sync::mpsc::SyncSender<String>>>,
    /// A pflog file is written (logging stays on without followers).
    pub(crate) pflog_file: bool,
    /// CARP (worker 0 drives it; the control thread shows and demotes).
    /// Lock order: this before the data plane.
    pub(crate) carp: Option<Mutex<crate::carp::CarpRuntime>>,
    /// pfsync (worker 0 drives it too). Lock order: CARP, pfsync, the
    /// data plane.
    pub(crate) pfsync: Option<Mutex<crate::pfsync::SyncRuntime>>,
    /// Wakes worker 0 (a demotion to advertise now).
    pub(crate) wake: Wake,
}

/// An eventfd that wakes worker 0 out of its poll.
pub struct Wake(std::os::fd::OwnedFd);

impl Wake {
    pub fn new() -> Result<Wake, String> {
        use std::os::fd::FromRawFd;
        // SAFETY: eventfd returns a new descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(format!("eventfd: {}", std::io::Error::last_os_error()));
        }
        // SAFETY: fd is ours, just created.
        Ok(Wake(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
    }

    pub fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.0.as_raw_fd()
    }

    pub fn wake(&self) {
        let one = 1u64.to_ne_bytes();
        // SAFETY: writing 8 bytes from a valid buffer to our eventfd.
        let _ = unsafe { libc::write(self.fd(), one.as_ptr() as *const libc::c_void, 8) };
    }

    /// Clear it (after a poll).
    pub fn clear(&self) {
        let mut b = [0u8; 8];
        // SAFETY: reading 8 bytes into a valid buffer; non-blocking.
        let _ = unsafe { libc::read(self.fd(), b.as_mut_ptr() as *mut libc::c_void, 8) };
    }
}

/// A failed send on a port is said at once, then at most every 10 s per
/// port with how many failed since: a port without carrier fails every
/// frame, and a log line per frame said nothing more.
pub(crate) fn warn_send(port: &str, e: &std::io::Error) {
    use std::collections::HashMap;
    use std::sync::OnceLock;
    static SAID: OnceLock<Mutex<HashMap<String, (Instant, u64)>>> = OnceLock::new();
    let now = Instant::now();
    let mut said = SAID
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(n) = send_warning_due(&mut said, port, now) {
        if n > 1 {
            tracing::warn!("send on {port}: {e} ({n} failed sends since the last warning)");
        } else {
            tracing::warn!("send on {port}: {e}");
        }
    }
}

/// Whether a failed send on `port` is to be said now (Some(failures
/// since the last warning, this one included)).
fn send_warning_due(
    said: &mut std::collections::HashMap<String, (Instant, u64)>,
    port: &str,
    now: Instant,
) -> Option<u64> {
    const EVERY: Duration = Duration::from_secs(10);
    match said.get_mut(port) {
        Some((last, n)) if now.duration_since(*last) < EVERY => {
            *n += 1;
            None
        }
        Some((last, n)) => {
            let total = *n + 1;
            *last = now;
            *n = 0;
            Some(total)
        }
        None => {
            said.insert(port.to_string(), (now, 0));
            Some(1)
        }
    }
}

/// How many flushed anchors `Shared::flushed` remembers, and for how long.
pub const FLUSHED_KEPT: usize = 1024;
pub const FLUSHED_FOR: std::time::Duration = std::time::Duration::from_secs(60);

/// Anchors flushed by request, with when (`Shared::flushed`). Noted under
/// the same lock as the flush or load itself is done, so that a flush
/// and its mark are one step for whoever reads them.
#[derive(Default)]
pub struct Flushed(std::collections::VecDeque<(String, Instant)>);

impl Flushed {
    /// Anchor `name` was flushed by a request.
    pub fn note(&mut self, name: &str) {
        let now = Instant::now();
        self.0
            .retain(|(n, t)| n != name && now.duration_since(*t) < FLUSHED_FOR);
        self.0.push_back((name.to_string(), now));
        while self.0.len() > FLUSHED_KEPT {
            self.0.pop_front();
        }
    }

    /// Anchor `name` was loaded: no longer one flushed.
    pub fn loaded(&mut self, name: &str) {
        self.0.retain(|(n, _)| n != name);
    }

    /// The anchors flushed within `FLUSHED_FOR` and not loaded since.
    pub fn recent(&self) -> impl Iterator<Item = &str> {
        let now = Instant::now();
        self.0
            .iter()
            .filter(move |(_, t)| now.duration_since(*t) < FLUSHED_FOR)
            .map(|(n, _)| n.as_str())
    }
}

impl Shared {
    /// Send what the data plane produced: per port in one batch (frames
    /// of a port keep their order), the host interface frame by frame.
    /// A port index with `OUT_VNET` marks a frame that ends with its
    /// virtio_net_hdr (a super-packet leaving whole).
    pub(crate) fn send(&self, ports: &[Port], outs: Vec<(usize, Vec<u8>)>) {
        use palisade_net::afpacket::VNET_HDR_LEN;
        use palisade_net::dataplane::OUT_VNET;
        for (i, port) in ports.iter().enumerate() {
            // Runs of ordinary frames in one batch each; a super-packet
            // between them alone (it may have to be cut here).
            let mut batch: Vec<(&[u8], bool)> = Vec::new();
            let flush = |batch: &mut Vec<(&[u8], bool)>| {
                if let (_, Some(e)) = port.send_batch(batch) {
                    warn_send(&port.name, &e);
                }
                batch.clear();
            };
            for (p, f) in outs.iter().filter(|(p, _)| *p & !OUT_VNET == i) {
                if *p & OUT_VNET == 0 {
                    batch.push((f.as_slice(), false));
                    continue;
                }
                flush(&mut batch);
                if f.len() < VNET_HDR_LEN {
                    continue;
                }
                let (frame, hdr) = f.split_at(f.len() - VNET_HDR_LEN);
                let hdr: &[u8; VNET_HDR_LEN] = hdr.try_into().expect("header length");
                if let Err(e) = port.send_super(hdr, frame) {
                    warn_send(&port.name, &e);
                }
            }
            if !batch.is_empty() {
                flush(&mut batch);
            }
        }
        if let Some(t) = &self.tap {
            for (_, f) in outs.iter().filter(|(p, _)| *p & !OUT_VNET >= ports.len()) {
                if let Err(e) = t.send(f) {
                    tracing::warn!("send on the host interface: {e}");
                }
            }
        }
    }

    /// A new `log --follow` client.
    pub(crate) fn follow(&self) -> std::sync::mpsc::Receiver<String> {
        let (tx, rx) = std::sync::mpsc::sync_channel(4096);
        let mut f = self.followers.lock().unwrap_or_else(|e| e.into_inner());
        f.push(tx);
        self.dp().set_logging(true);
        rx
    }

    /// Give logged packets to the followers (a slow one loses lines; a
    /// gone one is dropped, and logging stops with the last of them unless
    /// a pflog file is written).
    pub(crate) fn to_followers(&self, recs: &[palisade_net::dataplane::pflog::LogRecord]) {
        let mut f = self.followers.lock().unwrap_or_else(|e| e.into_inner());
        if f.is_empty() {
            return;
        }
        let lines: Vec<String> = recs
            .iter()
            .map(|(ts, r)| crate::logline::log_line_at(*ts, r))
            .collect();
        f.retain(|tx| {
            lines.iter().all(|l| {
                !matches!(
                    tx.try_send(l.clone()),
                    Err(std::sync::mpsc::TrySendError::Disconnected(_))
                )
            })
        });
        if f.is_empty() && !self.pflog_file {
            self.dp().set_logging(false);
        }
    }

    /// CARP, if configured (worker 0 holds it while it steps the core).
    pub(crate) fn carp(&self) -> Option<std::sync::MutexGuard<'_, crate::carp::CarpRuntime>> {
        self.carp
            .as_ref()
            .map(|c| c.lock().unwrap_or_else(|e| e.into_inner()))
    }

    pub(crate) fn pfsync(&self) -> Option<std::sync::MutexGuard<'_, crate::pfsync::SyncRuntime>> {
        self.pfsync
            .as_ref()
            .map(|c| c.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Microseconds since `clock_origin`: CARP's and pfsync's clock.
    pub(crate) fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    pub fn dp(&self) -> std::sync::MutexGuard<'_, Dataplane> {
        // A worker that panicked holding the lock leaves the data plane as
        // it was between two frames; keep going.
        self.dp.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod send_warning_tests {
    use super::*;

    /// A port that fails every send is said once, then every 10 s with
    /// the count; each port on its own.
    #[test]
    fn failed_sends_are_said_every_ten_seconds() {
        let mut said = std::collections::HashMap::new();
        let t0 = Instant::now();
        assert_eq!(send_warning_due(&mut said, "eth2", t0), Some(1));
        for i in 1..=30u64 {
            let at = t0 + Duration::from_millis(300 * i);
            assert_eq!(send_warning_due(&mut said, "eth2", at), None);
        }
        assert_eq!(send_warning_due(&mut said, "eth0", t0), Some(1));
        assert_eq!(
            send_warning_due(&mut said, "eth2", t0 + Duration::from_secs(10)),
            Some(31)
        );
        assert_eq!(
            send_warning_due(&mut said, "eth2", t0 + Duration::from_secs(11)),
            None
        );
    }
}
