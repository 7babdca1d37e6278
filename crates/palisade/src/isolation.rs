//! Per-port kernel settings Palisade changes while it owns the ports, and
//! puts back when it stops: the kernel must not talk on them (no IPv6, no
//! ARP answers, no forwarding), must not merge received frames (GRO), and
//! the port is up (IFF_UP, set last). A port whose MAC Palisade answers
//! with (`mac = "port"`) gives the kernel's interface the derived MAC
//! meanwhile: the kernel would otherwise take IP packets sent to that
//! MAC for its own local addresses (the weak host model) and answer them.
//! TCP super-packets that hosts send (TSO/GSO) arrive with their segment
//! size and are decided whole or cut (docs/offload.md), but GRO also
//! merges tunnelled TCP (GRE, IPIP), which the kernel reports as plain TCP
//! and which could be neither decided whole nor cut here.
//!
//! The original values are written to a file under /run before anything
//! is changed (`/run/palisade/ports-<netns>.json`, one per network
//! namespace; written to a temporary file, synced and renamed, so it is
//! whole or absent). After a crash (kill -9, power loss of the daemon but
//! not of the machine) the ports keep Palisade's values; the next start
//! finds the file and takes the originals from it instead of reading
//! Palisade's own values back as originals, so a later clean stop restores
//! the true ones. A clean stop restores and removes the file. Entries are
//! keyed by interface index too: an interface that was deleted and
//! created again meanwhile has its own originals.

use std::path::{Path, PathBuf};

use palisade_net::afpacket;
use palisade_wire::ethernet::{mac_string, Mac};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
struct Setting {
    port: String,
    ifindex: i32,
    /// A sysctl file, "gro" for the ethtool flag, "up" for IFF_UP, or
    /// "mac" for the hardware address.
    what: String,
    value: String,
}

#[derive(Serialize, Deserialize, Default)]
struct Record {
    settings: Vec<Setting>,
}

/// The sysctls changed per port, and the value Palisade sets.
fn sysctls(p: &str) -> [(String, &'static str); 3] {
    [
        (format!("/proc/sys/net/ipv6/conf/{p}/disable_ipv6"), "1"),
        (format!("/proc/sys/net/ipv4/conf/{p}/arp_ignore"), "8"),
        (format!("/proc/sys/net/ipv4/conf/{p}/forwarding"), "0"),
    ]
}

/// An identifier of this network namespace that no other namespace has
/// had since boot: its cookie (SO_NETNS_COOKIE, Linux 5.14), else the
/// inode of /proc/self/ns/net.
pub fn netns_id() -> String {
    /// SO_NETNS_COOKIE on the architectures Palisade builds for (the
    /// generic socket option numbers).
    const SO_NETNS_COOKIE: libc::c_int = 71;
    // SAFETY: a plain socket, closed below.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_DGRAM, 0) };
    if fd >= 0 {
        let mut cookie = 0u64;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        // SAFETY: the option writes a u64 of the length we pass.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                SO_NETNS_COOKIE,
                &mut cookie as *mut u64 as *mut libc::c_void,
                &mut len,
            )
        };
        // SAFETY: closing the socket opened above.
        unsafe { libc::close(fd) };
        if r == 0 {
            return format!("c{cookie}");
        }
    }
    use std::os::unix::fs::MetadataExt;
    // (The calling thread's: a thread that entered another namespace
    // asks for that one's.)
    match std::fs::metadata("/proc/thread-self/ns/net") {
        Ok(m) => format!("i{}", m.ino()),
        Err(_) => "default".into(),
    }
}

/// One daemon per network namespace: a lock (flock on
/// `ports-<namespace>.lock`) held for the daemon's whole run, taken
/// before anything is touched. A second `palisade run` in the namespace
/// is refused: it would take a running daemon's record for a crashed
/// run's, give the ports back to the kernel under it, replace its fast
/// path's programs and forward every frame a second time. A crashed
/// daemon's lock goes with it (the kernel drops it), so its record is
/// then taken for what it is. A daemon that stops removes the file
/// while it still holds the lock (namespaces come and go: the files
/// would pile up); a daemon that opened the file just before and locks
/// it just after then finds it no longer at the path, and starts over
/// with the path's new file.
pub fn lock(dir: &Path) -> Result<NetnsLock, String> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = lock_path(dir);
    for _ in 0..10 {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(format!(
                    "another palisade is running in this network namespace (it holds {}): stop it first (systemctl stop palisade), or run this one in its own namespace",
                    path.display()
                ));
            }
            return Err(format!("{}: {e}", path.display()));
        }
        let held = f
            .metadata()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let same =
            std::fs::metadata(&path).is_ok_and(|m| m.dev() == held.dev() && m.ino() == held.ino());
        if same {
            return Ok(NetnsLock { _file: f, path });
        }
    }
    Err(format!(
        "{}: removed and made again under us ten times",
        path.display()
    ))
}

/// The held lock of [`lock`]; its file goes when it is dropped.
pub struct NetnsLock {
    /// Held open (and so locked) until after `drop` has removed the path.
    _file: std::fs::File,
    path: PathBuf,
}

impl Drop for NetnsLock {
    fn drop(&mut self) {
        // Removed while still held (see `lock`); the file closes after.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The lock file of the namespace the calling thread is in.
pub fn lock_path(dir: &Path) -> PathBuf {
    dir.join(format!("ports-{}.lock", netns_id()))
}

/// Where this namespace's record is kept.
pub fn record_path(dir: &Path) -> PathBuf {
    dir.join(format!("ports-{}.json", netns_id()))
}

/// The directory of the records.
pub const RUN_DIR: &str = "/run/palisade";

pub struct Isolation {
    path: PathBuf,
    record: Record,
    /// The ports whose own MAC Palisade answers with (`mac = "port"`).
    mac_ports: Vec<String>,
}

impl Isolation {
    /// Isolate `ports`: note their settings (from a crashed run's record
    /// where it has them), write the record, then change them. Those in
    /// `mac_ports` also give the kernel the derived MAC.
    pub fn apply(ports: &[String], mac_ports: &[String], dir: &Path) -> Result<Isolation, String> {
        let path = record_path(dir);
        let leftover: Option<Record> = match std::fs::read(&path) {
            Ok(b) => match serde_json::from_slice(&b) {
                Ok(r) => {
                    tracing::warn!(
                        "{}: the last run did not stop cleanly; the ports' original settings are taken from it",
                        path.display()
                    );
                    Some(r)
                }
                Err(e) => {
                    tracing::warn!("{}: unreadable ({e}); ignored", path.display());
                    None
                }
            },
            Err(_) => None,
        };
        let mut iso = Isolation {
            path,
            record: Record::default(),
            mac_ports: mac_ports.to_vec(),
        };
        iso.add(ports, leftover.as_ref())?;
        // What the crashed run changed and this one does not (a port it
        // owned and this one does not, a MAC it moved aside and this one
        // answers with no longer): `add` kept it in the record, so that
        // a crash or a failure before this point still has it; given back
        // now, then dropped from the record.
        let held = |s: &Setting| {
            ports.contains(&s.port) && (s.what != "mac" || iso.mac_ports.contains(&s.port))
        };
        let gone: Vec<Setting> = iso
            .record
            .settings
            .iter()
            .filter(|s| !held(s))
            .cloned()
            .collect();
        if !gone.is_empty() {
            for st in gone.iter().rev() {
                restore(st);
            }
            iso.record.settings.retain(|s| !gone.contains(s));
            iso.save()?;
        }
        Ok(iso)
    }

    /// Isolate more ports (one that came back): their current settings
    /// are their originals.
    pub fn add_ports(&mut self, ports: &[String]) -> Result<(), String> {
        self.add(ports, None)
    }

    /// Note `ports`' settings (a crashed run's originals, from `leftover`,
    /// where it has them), write the record (with whatever else
    /// `leftover` holds, for `apply` to give back), then change them. A
    /// change the kernel refuses is logged and the others are made; a
    /// MAC that cannot be moved aside is dropped from the record, so that
    /// Palisade answers with the derived MAC there (`answer_mac`).
    fn add(&mut self, ports: &[String], leftover: Option<&Record>) -> Result<(), String> {
        let mut changes = Vec::new();
        for p in ports {
            let ifindex = afpacket::ifindex(p).unwrap_or(0);
            let recorded = |what: &str| {
                leftover.and_then(|r| {
                    r.settings
                        .iter()
                        .find(|s| s.port == *p && s.ifindex == ifindex && s.what == what)
                        .map(|s| s.value.clone())
                })
            };
            // (what, its original, Palisade's value)
            let mut notes: Vec<(String, String, String)> = Vec::new();
            let gro = afpacket::ethtool(p, afpacket::ETHTOOL_GGRO, None).ok();
            if let Some(g) = gro {
                notes.push(("gro".into(), g.to_string(), "0".into()));
            }
            for (f, v) in sysctls(p) {
                if let Ok(cur) = std::fs::read_to_string(&f) {
                    notes.push((f, cur.trim().to_string(), v.into()));
                }
            }
            // The MAC after IPv6 is off (the kernel sends nothing from
            // the derived MAC) and before the port is set up; given back
            // before IPv6 is (the record is undone in reverse).
            if self.mac_ports.contains(p) {
                if let Ok(cur) = crate::load::port_mac(p) {
                    // A crashed run's original holds only while the port
                    // still has the MAC that run gave it; one set since
                    // (`ip link set ... address`) is the original now.
                    let original = recorded("mac")
                        .and_then(|r| crate::load::parse_mac(&r))
                        .filter(|&o| palisade_net::dataplane::own_mac(o) == cur)
                        .unwrap_or(cur);
                    notes.push((
                        "mac".into(),
                        mac_string(&original),
                        mac_string(&palisade_net::dataplane::own_mac(original)),
                    ));
                }
            }
            // Up, last (the kernel's IPv6 is off by then): a port
            // palisade.toml names is in use, as OpenBSD's hostname.if
            // says `up`; a port found down is set down again at the stop.
            if let Ok(up) = afpacket::if_up(p) {
                notes.push(("up".into(), (up as u8).to_string(), "1".into()));
            }
            for (what, current, new) in notes {
                let original = if what == "mac" {
                    current
                } else {
                    recorded(&what).unwrap_or(current)
                };
                self.record
                    .settings
                    .retain(|s| !(s.port == *p && s.what == what));
                self.record.settings.push(Setting {
                    port: p.clone(),
                    ifindex,
                    what: what.clone(),
                    value: original,
                });
                changes.push((p.clone(), what, new));
            }
        }
        // The crashed run's other settings, kept until `apply` gives them
        // back.
        if let Some(old) = leftover {
            for st in &old.settings {
                let noted = self
                    .record
                    .settings
                    .iter()
                    .any(|s| s.port == st.port && s.what == st.what);
                if !noted {
                    self.record.settings.push(st.clone());
                }
            }
        }
        self.save()?;
        let mut mac_failed = Vec::new();
        for (p, what, v) in changes {
            if what == "gro" {
                let _ = afpacket::ethtool(&p, afpacket::ETHTOOL_SGRO, Some(0));
            } else if what == "mac" {
                let set = crate::load::parse_mac(&v).map(|m| afpacket::set_mac(&p, m));
                if let Some(Err(e)) = set {
                    tracing::error!(
                        "port '{p}': cannot move the kernel's MAC aside for mac = \"port\" ({e}): Palisade answers there with the derived MAC"
                    );
                    mac_failed.push(p);
                }
            } else if what == "up" {
                if let Err(e) = afpacket::set_if_up(&p, v == "1") {
                    tracing::error!("port '{p}': cannot set it up: {e}");
                }
            } else {
                let _ = std::fs::write(&what, v);
            }
        }
        if !mac_failed.is_empty() {
            self.record
                .settings
                .retain(|s| !(s.what == "mac" && mac_failed.contains(&s.port)));
            self.save()?;
        }
        Ok(())
    }

    /// The MAC Palisade answers with on `port`: its own, as it was before
    /// Palisade moved the kernel's aside (`mac = "port"`), else the
    /// derived one (`dataplane::own_mac`).
    pub fn answer_mac(&self, port: &str) -> Result<Mac, String> {
        if self.mac_ports.iter().any(|p| p == port) {
            if let Some(m) = self
                .record
                .settings
                .iter()
                .find(|s| s.port == port && s.what == "mac")
                .and_then(|s| crate::load::parse_mac(&s.value))
            {
                return Ok(m);
            }
        }
        crate::load::port_mac(port).map(palisade_net::dataplane::own_mac)
    }

    /// Write the record whole: a temporary file, synced, renamed.
    fn save(&self) -> Result<(), String> {
        use std::io::Write;
        let err = |e: std::io::Error| format!("{}: {e}", self.path.display());
        if let Some(d) = self.path.parent() {
            std::fs::create_dir_all(d).map_err(err)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        let text = serde_json::to_vec_pretty(&self.record).map_err(|e| e.to_string())?;
        f.write_all(&text).map_err(err)?;
        f.sync_all().map_err(err)?;
        std::fs::rename(&tmp, &self.path).map_err(err)?;
        if let Some(d) = self.path.parent() {
            if let Ok(d) = std::fs::File::open(d) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

/// Put one setting back, on the interface it belongs to only.
fn restore(s: &Setting) {
    if afpacket::ifindex(&s.port).ok() != Some(s.ifindex) {
        return;
    }
    if s.what == "gro" {
        if let Ok(v) = s.value.parse() {
            let _ = afpacket::ethtool(&s.port, afpacket::ETHTOOL_SGRO, Some(v));
        }
    } else if s.what == "mac" {
        if let Some(m) = crate::load::parse_mac(&s.value) {
            if let Err(e) = afpacket::set_mac(&s.port, m) {
                tracing::error!("port '{}': cannot give its MAC back: {e}", s.port);
            }
        }
    } else if s.what == "up" {
        let _ = afpacket::set_if_up(&s.port, s.value == "1");
    } else {
        let _ = std::fs::write(&s.what, &s.value);
    }
}

impl Drop for Isolation {
    fn drop(&mut self) {
        for s in self.record.settings.iter().rev() {
            restore(s);
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One holder at a time; the holder's drop removes the file, and the
    /// next start makes it again. (The start that locks a file just
    /// removed, and tries again, is a race this test cannot stage.)
    #[test]
    fn the_lock_is_exclusive_and_its_file_goes_with_it() {
        let d = std::env::temp_dir().join(format!("palisade-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        let first = lock(&d).unwrap();
        let e = lock(&d).err().expect("a second holder");
        assert!(e.contains("another palisade is running"), "{e}");
        drop(first);
        assert!(!lock_path(&d).exists(), "the file outlived its lock");
        let again = lock(&d).unwrap();
        assert!(lock_path(&d).exists());
        drop(again);
        let _ = std::fs::remove_dir_all(&d);
    }
}
