//! systemd's readiness protocol (sd_notify(3)): one datagram of
//! `NAME=value` lines to the Unix socket named by $NOTIFY_SOCKET (a path,
//! or an abstract name when it starts with '@'). Nothing is sent when the
//! variable is unset, so the daemon behaves the same outside systemd.
//!
//! What the daemon says (the unit is `Type=notify`):
//! - READY=1 once the ports are open, the rules compiled and the control
//!   socket listening, and again after each reload;
//! - RELOADING=1 with MONOTONIC_USEC when a reload starts (what systemd's
//!   `Type=notify-reload` expects);
//! - STOPPING=1 when it begins to shut down;
//! - STATUS= a one-line summary (rules, states, interfaces, last reload);
//! - WATCHDOG=1 from the data plane's worker 0 at half of $WATCHDOG_USEC,
//!   so that a data plane that stops turning gets the service restarted.
//!
//! The protocol is a few lines over std's UnixDatagram; a crate for it
//! would add more than it saves.

use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::daemon::Shared;

/// Where to send, read once from the environment.
fn target() -> Option<&'static str> {
    static T: OnceLock<Option<String>> = OnceLock::new();
    T.get_or_init(|| {
        std::env::var("NOTIFY_SOCKET")
            .ok()
            .filter(|s| s.starts_with('/') || s.starts_with('@'))
    })
    .as_deref()
}

/// Send one message (lines `NAME=value`); errors are ignored, as
/// sd_notify's callers do: the service manager may be gone.
pub fn send(msg: &str) -> bool {
    let Some(t) = target() else {
        return false;
    };
    let Ok(s) = UnixDatagram::unbound() else {
        return false;
    };
    if let Some(name) = t.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        match std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()) {
            Ok(a) => s.send_to_addr(msg.as_bytes(), &a).is_ok(),
            Err(_) => false,
        }
    } else {
        s.send_to(msg.as_bytes(), t).is_ok()
    }
}

/// A socket connected to the service manager's now, to send on later
/// from where its path cannot be reached (after a chroot): None outside
/// systemd or when it cannot connect.
pub fn connect() -> Option<UnixDatagram> {
    let t = target()?;
    let s = UnixDatagram::unbound().ok()?;
    if let Some(name) = t.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let a = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).ok()?;
        s.connect_addr(&a).ok()?;
    } else {
        s.connect(t).ok()?;
    }
    Some(s)
}

/// CLOCK_MONOTONIC in microseconds (what MONOTONIC_USEC carries).
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// Rules in the main ruleset now (set at start and at each reload).
static RULES: AtomicUsize = AtomicUsize::new(0);
/// The last reload's outcome, for STATUS.
static LAST: Mutex<String> = Mutex::new(String::new());

/// The one-line summary: rules, states, interfaces (and a failed reload).
pub fn status(sh: &Shared) -> String {
    let (states, ifaces) = {
        let dp = sh.dp();
        let names: Vec<&str> = dp.cfg.ifaces.iter().map(|i| i.name.as_str()).collect();
        (dp.filter.states.len(), names.join(" "))
    };
    let rules = RULES.load(Ordering::Relaxed);
    let last = LAST.lock().unwrap_or_else(|e| e.into_inner()).clone();
    format!(
        "{rules} rule{}, {states} state{}, interfaces {ifaces}{last}",
        if rules == 1 { "" } else { "s" },
        if states == 1 { "" } else { "s" },
    )
}

/// Rules in the main ruleset in force (read at start and reload only: it
/// copies the listing).
fn count_rules(sh: &Shared) -> usize {
    let dp = sh.dp();
    dp.filter.engine().listing("").map_or(0, |l| l.len())
}

/// The daemon is up: ports open, rules loaded.
pub fn ready(sh: &Shared) {
    if target().is_none() {
        return;
    }
    RULES.store(count_rules(sh), Ordering::Relaxed);
    send(&format!("READY=1\nSTATUS={}", status(sh)));
}

/// A reload begins.
pub fn reloading() {
    send(&format!("RELOADING=1\nMONOTONIC_USEC={}", monotonic_usec()));
}

/// A reload ended (`ok`: the new rules are in force); `msg` is the
/// reload's last line (what happened).
pub fn reloaded(sh: &Shared, ok: bool, msg: &str) {
    if target().is_none() {
        return;
    }
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if ok {
        RULES.store(count_rules(sh), Ordering::Relaxed);
        last.clear();
    } else {
        *last = format!("; {}", msg.trim_start_matches("palisade: "));
    }
    drop(last);
    send(&format!("READY=1\nSTATUS={}", status(sh)));
}

/// The daemon is stopping.
pub fn stopping() {
    send("STOPPING=1");
}

/// The watchdog's period (half of $WATCHDOG_USEC), if systemd asked for
/// one for this process.
fn watchdog_every() -> Option<Duration> {
    static W: OnceLock<Option<Duration>> = OnceLock::new();
    *W.get_or_init(|| {
        target()?;
        if let Ok(pid) = std::env::var("WATCHDOG_PID") {
            if pid.parse::<u32>().ok() != Some(std::process::id()) {
                return None;
            }
        }
        let us: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
        (us > 0).then(|| Duration::from_micros(us / 2))
    })
}

/// Called on every turn of worker 0's loop: WATCHDOG=1 at half the
/// watchdog's period, and STATUS refreshed every 10 s (the state count
/// moves). Costs a clock read when it is not time yet.
pub struct Pulse {
    last_watchdog: Instant,
    last_status: Instant,
}

impl Pulse {
    pub fn new() -> Pulse {
        Pulse {
            last_watchdog: Instant::now(),
            last_status: Instant::now(),
        }
    }

    pub fn beat(&mut self, sh: &Shared) {
        if target().is_none() {
            return;
        }
        if let Some(every) = watchdog_every() {
            if self.last_watchdog.elapsed() >= every {
                send("WATCHDOG=1");
                self.last_watchdog = Instant::now();
            }
        }
        if self.last_status.elapsed() >= Duration::from_secs(10) {
            send(&format!("STATUS={}", status(sh)));
            self.last_status = Instant::now();
        }
    }
}
