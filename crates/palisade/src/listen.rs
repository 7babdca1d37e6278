//! Accepting clients without ever waiting for one: the control socket and
//! the metrics listener both serve each client on its own thread, a
//! bounded number at once, and refuse the rest at once.

use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How a listener's clients are served.
pub struct Bounds {
    /// Clients served at once; past this `refuse` answers at once.
    pub max: usize,
    /// The serving threads' name.
    pub name: &'static str,
    /// Their stack size (None: the default).
    pub stack: Option<usize>,
}

/// Accept from the non-blocking listener `fd` (with `accept`) until
/// `stop()`: every pending connection is taken at each wake-up; each is
/// served by `serve` on its own thread, at most `b.max` at once; past
/// that `refuse` answers it (it must not wait for the client).
pub fn serve<S: Send>(
    fd: RawFd,
    accept: impl Fn() -> std::io::Result<S>,
    b: Bounds,
    stop: &(impl Fn() -> bool + Sync),
    refuse: impl Fn(S),
    serve: &(impl Fn(S) + Sync),
) {
    let busy = AtomicUsize::new(0);
    // Several clients were served at once since the last trim.
    let mut crowd = false;
    std::thread::scope(|sc| {
        while !stop() {
            let mut p = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one pollfd we own, for at most 200 ms.
            unsafe { libc::poll(&mut p, 1, 200) };
            // A crowd gone: the allocator keeps what its threads used in
            // arenas of their own (a soak saw 30 MiB kept after 32 clients
            // at once, for good); given back now.
            if crowd && busy.load(Ordering::SeqCst) == 0 {
                crowd = false;
                trim();
            }
            loop {
                let s = match accept() {
                    Ok(s) => s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        // Out of descriptors or similar: let it pass.
                        std::thread::sleep(Duration::from_millis(20));
                        break;
                    }
                };
                if busy.load(Ordering::SeqCst) >= b.max {
                    refuse(s);
                    continue;
                }
                if busy.fetch_add(1, Ordering::SeqCst) + 1 >= CROWD {
                    crowd = true;
                }
                let busy = &busy;
                let mut t = std::thread::Builder::new().name(b.name.into());
                if let Some(n) = b.stack {
                    t = t.stack_size(n);
                }
                let spawned = t.spawn_scoped(sc, move || {
                    serve(s);
                    busy.fetch_sub(1, Ordering::SeqCst);
                });
                if spawned.is_err() {
                    busy.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
    });
}

/// Clients at once that make a crowd worth a trim afterwards.
const CROWD: usize = 4;

/// Give the allocator's free memory back to the system (glibc keeps it
/// in each thread's arena otherwise).
fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; no pointer is given.
    unsafe {
        libc::malloc_trim(0);
    }
}
