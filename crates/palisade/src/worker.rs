//! The workers: each has its own socket on every port (in the port's
//! fanout group) and processes frames a batch at a time under the data
//! plane's lock; worker 0 also serves the host interface, the timers, the
//! ports' health and the pflog file.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use palisade_net::afpacket::{self, Port};

use crate::daemon::{stopping, Shared};
use crate::isolation::Isolation;
use crate::load::port_mac;

/// Logged packets to a pcap file (DLT_PFLOG, what tcpdump -r reads),
/// rotated by size: the full file becomes FILE.0 (replacing the older).
pub struct PflogFile {
    path: PathBuf,
    max: u64,
    /// The file's length: where the next record goes.
    written: u64,
    w: Option<pcap_file::pcap::PcapWriter<Appending>>,
    /// Records not written since the last error was logged, and when it
    /// was (an error is logged at most every 10 s, with the count).
    unlogged: u64,
    said_at: Option<std::time::Instant>,
    /// Not open: when to try again.
    retry_at: Option<std::time::Instant>,
    /// The last error that was not "not open" (said with it).
    last_error: String,
}

/// The pflog file as the pcap writer sees it: a writer that has already
/// written `skip` bytes (the header of a file being appended to, which
/// the writer writes again and this drops).
struct Appending {
    file: std::fs::File,
    skip: usize,
    /// Tests: the bytes the "disk" still takes (None: no limit); past
    /// them, writes fail as on a full disk.
    #[cfg(test)]
    room: Option<usize>,
}

impl Appending {
    fn new(file: std::fs::File, skip: usize) -> Appending {
        Appending {
            file,
            skip,
            #[cfg(test)]
            room: None,
        }
    }
}

impl std::io::Write for Appending {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.skip > 0 {
            let n = self.skip.min(buf.len());
            self.skip -= n;
            return Ok(n);
        }
        #[cfg(test)]
        if let Some(room) = self.room.as_mut() {
            if *room == 0 {
                return Err(std::io::Error::from_raw_os_error(libc::ENOSPC));
            }
            let n = self.file.write(&buf[..buf.len().min(*room)])?;
            *room -= n;
            return Ok(n);
        }
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

/// Where appending to an existing pflog file may start.
enum PflogEnd {
    /// Every record whole: after the last one.
    Whole(pcap_file::pcap::PcapHeader, u64),
    /// The last record cut short (a crash while writing it): after the
    /// last whole one, the rest (this many bytes) to be trimmed.
    CutShort(pcap_file::pcap::PcapHeader, u64, u64),
    /// A record with a length no record has, at this offset, with data
    /// after it: damaged, not to be trimmed (whole records follow).
    Damaged(u64),
}

/// Scan an existing pflog file: None if it is not a pcap file of our
/// pflog records.
fn pflog_end(f: &mut std::fs::File) -> Option<PflogEnd> {
    use std::io::{Read, Seek, SeekFrom};
    let len = f.metadata().ok()?.len();
    let mut head = [0u8; 24];
    f.seek(SeekFrom::Start(0)).ok()?;
    f.read_exact(&mut head).ok()?;
    let (_, header) = pcap_file::pcap::PcapHeader::from_slice(&head).ok()?;
    // Pflog records, each whole: a capture cut to a shorter length (a
    // pflogd's, snaplen 160) could not take ours.
    if header.datalink != pcap_file::DataLink::PFLOG || header.snaplen < 65_535 {
        return None;
    }
    let big = header.endianness == pcap_file::Endianness::Big;
    let mut pos = 24u64;
    let mut rec = [0u8; 16];
    while pos + 16 <= len {
        f.seek(SeekFrom::Start(pos)).ok()?;
        f.read_exact(&mut rec).ok()?;
        let b = [rec[8], rec[9], rec[10], rec[11]];
        let incl = if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        } as u64;
        if incl > header.snaplen.max(65_535) as u64 {
            return Some(PflogEnd::Damaged(pos));
        }
        if pos + 16 + incl > len {
            break;
        }
        pos += 16 + incl;
    }
    let max_record = 16 + header.snaplen.max(65_535) as u64;
    Some(if pos == len {
        PflogEnd::Whole(header, pos)
    } else if len - pos > max_record {
        // More than one record's worth after the stop: not a record torn
        // by a crash, but a length out of step (damaged).
        PflogEnd::Damaged(pos)
    } else {
        PflogEnd::CutShort(header, pos, len - pos)
    })
}

impl PflogFile {
    pub fn open(path: &Path, max: u64) -> Result<PflogFile, String> {
        let mut f = PflogFile {
            path: path.to_path_buf(),
            max,
            written: 0,
            w: None,
            unlogged: 0,
            said_at: None,
            retry_at: None,
            last_error: String::new(),
        };
        f.start()?;
        Ok(f)
    }

    /// Open the file: a pflog file already there is appended to (as
    /// pflogd does: a restart keeps what was logged), after its last
    /// whole record; anything else there is moved aside to FILE.0 (said
    /// in the log) and a new file begun.
    fn start(&mut self) -> Result<(), String> {
        use std::io::{Seek, SeekFrom};
        if let Some(d) = self.path.parent() {
            let _ = std::fs::create_dir_all(d);
        }
        let err = |e: std::io::Error| format!("pflog {}: {e}", self.path.display());
        // (Shorter than a header: a start cut short; nothing to keep.)
        let existing = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.path)
            .ok()
            .filter(|f| f.metadata().is_ok_and(|m| m.len() >= 24));
        if let Some(mut f) = existing {
            let end = match pflog_end(&mut f) {
                Some(PflogEnd::Whole(h, end)) => Some((h, end)),
                Some(PflogEnd::CutShort(h, end, cut)) => {
                    tracing::warn!(
                        "pflog {}: its last record was cut short (a crash while writing it): {cut} bytes trimmed",
                        self.path.display()
                    );
                    Some((h, end))
                }
                Some(PflogEnd::Damaged(at)) => {
                    tracing::warn!(
                        "pflog {}: a damaged record at byte {at}, with records after it: the file is kept aside, not appended to",
                        self.path.display()
                    );
                    None
                }
                None => None,
            };
            match end {
                Some((header, end)) => {
                    f.set_len(end).map_err(err)?;
                    f.seek(SeekFrom::Start(end)).map_err(err)?;
                    self.w = Some(
                        pcap_file::pcap::PcapWriter::with_header(Appending::new(f, 24), header)
                            .map_err(|e| format!("pflog {}: {e}", self.path.display()))?,
                    );
                    self.written = end;
                    return Ok(());
                }
                None => {
                    // Kept under a name of its own (FILE.0 is the last
                    // rotated log, not to be overwritten).
                    let old = crate::aside::kept_aside(&self.path, ".moved");
                    tracing::warn!(
                        "pflog {}: not a pcap file of whole pflog records (or damaged): moved to {}",
                        self.path.display(),
                        old.display()
                    );
                    std::fs::rename(&self.path, &old).map_err(err)?;
                }
            }
        }
        let file = std::fs::File::create(&self.path).map_err(err)?;
        let header = pcap_file::pcap::PcapHeader {
            datalink: pcap_file::DataLink::PFLOG,
            ..Default::default()
        };
        self.w = Some(
            pcap_file::pcap::PcapWriter::with_header(Appending::new(file, 0), header)
                .map_err(|e| format!("pflog {}: {e}", self.path.display()))?,
        );
        self.written = 24;
        Ok(())
    }

    /// Write the records; returns how many could not be written (the
    /// caller counts them as `log_dropped`). A record the disk took only
    /// in part (full) is trimmed off, so that the file stays whole records
    /// and the next ones, once there is room, are read after it.
    pub(crate) fn write(&mut self, recs: Vec<palisade_net::dataplane::pflog::LogRecord>) -> u64 {
        let total = recs.len() as u64;
        // Not open (a start or a trim that failed): tried again, at most
        // once a second.
        if self.w.is_none() {
            let now = std::time::Instant::now();
            if self.retry_at.is_some_and(|t| now < t) {
                let why = format!("not open (last: {})", self.last_error);
                return self.failed(why, total);
            }
            if let Err(e) = self.start() {
                self.retry_at = Some(now + std::time::Duration::from_secs(1));
                return self.failed(e, total);
            }
        }
        for (done, (ts, r)) in recs.into_iter().enumerate() {
            if self.written + r.len() as u64 + 16 > self.max {
                // Only the live file, whole, becomes FILE.0 (one left
                // empty by a failed start would replace the last log).
                let mut old = self.path.clone().into_os_string();
                old.push(".0");
                self.w = None;
                let _ = std::fs::rename(&self.path, &old);
                if let Err(e) = self.start() {
                    self.retry_at =
                        Some(std::time::Instant::now() + std::time::Duration::from_secs(1));
                    return self.failed(e, total - done as u64);
                }
            }
            let Some(w) = self.w.as_mut() else {
                return self.failed("not open".into(), total - done as u64);
            };
            let p = pcap_file::pcap::PcapPacket::new(ts, r.len() as u32, &r);
            if let Err(e) = w.write_packet(&p) {
                let why = match e {
                    pcap_file::PcapError::IoError(io) => io.to_string(),
                    e => e.to_string(),
                };
                if let Err(e) = self.trim() {
                    self.w = None;
                    return self.failed(format!("{why}; and then {e}"), total - done as u64);
                }
                return self.failed(why, total - done as u64);
            }
            self.written += r.len() as u64 + 16;
        }
        // Writing again after failures: what went unwritten since the
        // last message is said now (it was only counted), and the next
        // failure is said at once.
        if self.said_at.take().is_some() && self.unlogged > 0 {
            tracing::warn!(
                "pflog {}: writing again; {} logged packets were not written (counted as log_dropped)",
                self.path.display(),
                self.unlogged
            );
        }
        self.unlogged = 0;
        // (PcapWriter writes straight to the file: nothing to flush.)
        0
    }

    /// Cut the file back to its last whole record after a failed write,
    /// and write on from there.
    fn trim(&mut self) -> Result<(), String> {
        use std::io::{Seek, SeekFrom};
        let w = self.w.take().ok_or("not open")?;
        let header = pcap_file::pcap::PcapHeader {
            datalink: pcap_file::DataLink::PFLOG,
            endianness: w.endianness(),
            snaplen: w.snaplen(),
            ts_resolution: w.ts_resolution(),
            ..Default::default()
        };
        let mut a = w.into_writer();
        a.file
            .set_len(self.written)
            .and_then(|_| a.file.seek(SeekFrom::Start(self.written)))
            .map_err(|e| format!("cannot cut back its last record: {e}"))?;
        a.skip = 24;
        self.w =
            Some(pcap_file::pcap::PcapWriter::with_header(a, header).map_err(|e| e.to_string())?);
        Ok(())
    }

    /// Tests: what the "disk" takes from now on (see `Appending::room`).
    #[cfg(test)]
    fn set_room(&mut self, room: Option<usize>) {
        let w = self.w.take().unwrap();
        let header = pcap_file::pcap::PcapHeader {
            datalink: pcap_file::DataLink::PFLOG,
            endianness: w.endianness(),
            ..Default::default()
        };
        let mut a = w.into_writer();
        a.room = room;
        a.skip = 24;
        self.w = Some(pcap_file::pcap::PcapWriter::with_header(a, header).unwrap());
    }

    /// `lost` records not written: said at most every 10 s (a full disk
    /// fails every write), with how many went unwritten since.
    fn failed(&mut self, why: String, lost: u64) -> u64 {
        if !why.starts_with("not open") {
            self.last_error = why.clone();
        }
        self.unlogged += lost;
        let now = std::time::Instant::now();
        if self
            .said_at
            .is_none_or(|t| now.duration_since(t) >= std::time::Duration::from_secs(10))
        {
            tracing::error!(
                "pflog {}: cannot write: {why}: {} logged packets not written since the last such message (counted as log_dropped)",
                self.path.display(),
                self.unlogged
            );
            self.unlogged = 0;
            self.said_at = Some(now);
        }
        lost
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Health {
    Up,
    Down,
    /// The interface no longer exists.
    Gone,
    /// An interface of that name exists again, not the one we opened.
    Replaced,
}

fn check_port(p: &Port) -> Health {
    match afpacket::ifindex(&p.name) {
        Err(_) => Health::Gone,
        Ok(ix) if ix != p.ifindex => Health::Replaced,
        Ok(_) if link_is_up(&p.name) => Health::Up,
        Ok(_) => Health::Down,
    }
}

/// Whether interface `name`'s link is up: its carrier as the driver has
/// it now. (Its operational state follows the carrier only when the
/// kernel's link watch runs, up to a second later: a port whose link had
/// just come up still read "down", and every start of a lab said so.) An
/// interface that is administratively down has no carrier to read.
pub fn link_is_up(name: &str) -> bool {
    std::fs::read_to_string(format!("/sys/class/net/{name}/carrier")).is_ok_and(|c| c.trim() == "1")
}

/// A port's MTU as the kernel has it now.
fn kernel_mtu(name: &str) -> Option<u16> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/mtu"))
        .ok()?
        .trim()
        .parse::<u32>()
        .ok()
        .map(|m| m.clamp(576, 9216) as u16)
}

/// How many times a port's carrier went on or off: a link that fell and
/// came back between two checks (once a second) still moved it.
fn carrier_changes(name: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/sys/class/net/{name}/carrier_changes"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// News of the namespace's links: a netlink socket in the group of link
/// changes (RTMGRP_LINK). Worker 0 polls it with the ports, so that a
/// link that goes down or comes back is checked at once rather than at
/// the next once-a-second check (CARP's takeover after a failed
/// interface waited up to a second for it). The messages are not parsed:
/// any of them (or an overflow of the socket) means "check the ports
/// now", and `check_port` reads the state as before. Written on libc
/// directly: a wake-up needs no netlink message parsing.
pub struct LinkWatch {
    fd: std::os::fd::OwnedFd,
}

impl LinkWatch {
    pub fn open() -> std::io::Result<LinkWatch> {
        use std::os::fd::FromRawFd;
        // SAFETY: plain socket(2); the descriptor is owned at once.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor nothing else owns.
        let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
        // SAFETY: an all-zero sockaddr_nl is valid; the fields are set below.
        let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        sa.nl_groups = libc::RTMGRP_LINK as u32;
        use std::os::fd::AsRawFd;
        // SAFETY: `sa` is a sockaddr_nl of the size passed.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &sa as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(LinkWatch { fd })
    }

    pub fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.fd.as_raw_fd()
    }

    /// Read what came; whether anything did (a message, or news lost
    /// to a full socket, which counts as news).
    pub fn drain(&self) -> bool {
        let mut buf = [0u8; 8192];
        let mut news = false;
        loop {
            // SAFETY: recv into a buffer of the length passed.
            let n = unsafe {
                libc::recv(
                    self.fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n > 0 {
                news = true;
                continue;
            }
            if n == 0 {
                return news;
            }
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ENOBUFS) => news = true,
                _ => return news,
            }
        }
    }
}

/// Whether a port fell and came back between two checks, each given as
/// (health, carrier changes): up at both, and its carrier moved.
fn fell_unseen(before: (Health, Option<u64>), now: (Health, Option<u64>)) -> bool {
    match (before, now) {
        ((Health::Up, Some(a)), (Health::Up, Some(b))) => a != b,
        _ => false,
    }
}

/// Every port's sockets for one worker; `split`: IPv4 and IPv6 on
/// sockets of their own, behind the fast path's program (`Port::open_split`).
/// `frames`: the slots of each receiving ring (palisade.toml's
/// `ring-frames`).
pub fn open_ports(
    names: &[String],
    fanout: Option<u16>,
    split: bool,
    frames: u32,
) -> Result<Vec<Port>, String> {
    let mut ports = Vec::new();
    for n in names {
        let p = if split {
            Port::open_split_frames(n, frames)
        } else {
            Port::open_offload_frames(n, frames)
        }
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ENOMEM) {
                format!("port '{n}': {e} (palisade.toml's ring-frames = {frames}: each ring takes 2 KiB per slot)")
            } else {
                format!("port '{n}': {e}")
            }
        })?;
        // One group per interface, the same in every worker; a port that is
        // created again gets a new index, so a fresh group (the old one may
        // still hold the sockets of the vanished interface).
        if let Some(g) = fanout {
            p.join_fanout(g.wrapping_add(p.ifindex as u16))
                .map_err(|e| format!("port '{n}': PACKET_FANOUT: {e}"))?;
        }
        ports.push(p);
    }
    Ok(ports)
}

/// What one frame did (with `defer`): the syncable states it created,
/// and the states it matched.
#[derive(Default)]
struct Touched {
    created: Vec<palisade_filter::state::StateId>,
    hits: Vec<u64>,
}

/// One frame through the data plane: what it sends, and (with `defer`)
/// the states it touched.
fn input(
    sh: &Shared,
    port: usize,
    frame: &mut [u8],
    gso: Option<palisade_net::dataplane::Gso>,
    now: u64,
    defer: bool,
    fenced: Option<usize>,
) -> (
    Vec<palisade_net::dataplane::Out>,
    Touched,
    Option<palisade_net::dataplane::InPlace>,
) {
    let mut dp = sh.dp();
    if let Some(w) = fenced {
        dp.note_fenced(w);
    }
    if !defer {
        let o = dp.input_offload(port, frame, gso, now);
        return (o, Touched::default(), dp.take_in_place());
    }
    // Only what this frame does (not what the firewall's own packets did
    // meanwhile).
    dp.filter.states.take_created();
    dp.take_hits();
    let o = dp.input_offload(port, frame, gso, now);
    let touched = Touched {
        created: dp.filter.states.take_created(),
        hits: dp.take_hits(),
    };
    (o, touched, dp.take_in_place())
}

/// A packet's frames go out, unless it created states pfsync must
/// announce first (`defer`): then they wait for the peer's INS_ACK or
/// 20 ms, which worker 0 watches (woken, if another worker held them).
/// A packet of a connection whose first packet is held lets that one go
/// first.
fn held_or_out(
    sh: &Shared,
    id: usize,
    touched: Touched,
    frames: Vec<palisade_net::dataplane::Out>,
    outs: &mut Vec<palisade_net::dataplane::Out>,
) {
    let Touched { created, hits } = touched;
    if !hits.is_empty() {
        if let Some(mut s) = sh.pfsync() {
            if s.holds() {
                s.followed(&hits, outs);
            }
        }
    }
    if created.is_empty() {
        outs.extend(frames);
        return;
    }
    let held = if let Some(mut s) = sh.pfsync() {
        let now_us = sh.now_us();
        let mut dp = sh.dp();
        let (o, held) = s.defer(&mut dp, created, frames, now_us);
        outs.extend(o);
        held
    } else {
        outs.extend(frames);
        false
    };
    if held && id != 0 {
        sh.wake.wake();
    }
}

/// The filter's news to pfsync (any worker; lock order pfsync, data
/// plane).
fn feed_pfsync(sh: &Shared, id: usize, outs: &mut Vec<palisade_net::dataplane::Out>) {
    let sooner = if let Some(mut s) = sh.pfsync() {
        let now_us = sh.now_us();
        let mut dp = sh.dp();
        let (o, sooner) = s.feed(&mut dp, now_us);
        outs.extend(o);
        sooner
    } else {
        false
    };
    // Worker 0 runs the core's timers: it must not sleep past the batch
    // this feed started (10 ms).
    if sooner && id != 0 {
        sh.wake.wake();
    }
}

/// One worker: its own socket on every port (in the port's fanout group),
/// frames processed a batch at a time under the data plane's lock, sent
/// after it is released. Worker 0 also serves the host interface, the
/// timers and the ports' health.
pub fn worker(
    id: usize,
    sh: &Shared,
    mut ports: Vec<Port>,
    fanout: Option<u16>,
    mut isolation: Option<&mut Isolation>,
    mut pflog: Option<PflogFile>,
) {
    // Rule counters in this worker's own lane (cache line).
    palisade_filter::packet::set_lane(id);
    // Every socket of every port (a split port has three), then the
    // host interface and the wake-up (worker 0).
    let mut extra = Vec::new();
    // Worker 0 hears of the links' changes as they happen (the others
    // reopen a replaced port's sockets at their once-a-second check).
    let links = if id == 0 {
        match LinkWatch::open() {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(
                    "cannot watch the links' changes ({e}): the ports are checked once a second"
                );
                None
            }
        }
    } else {
        None
    };
    if id == 0 {
        if let Some(t) = &sh.tap {
            extra.push(t.fd());
        }
        extra.push(sh.wake.fd());
        if let Some(w) = &links {
            extra.push(w.fd());
        }
    }
    let wait_list = |ports: &[Port]| -> (Vec<std::os::fd::RawFd>, Vec<usize>) {
        let (mut fds, mut owner) = (Vec::new(), Vec::new());
        for (i, p) in ports.iter().enumerate() {
            for fd in p.fds() {
                fds.push(fd);
                owner.push(i);
            }
        }
        fds.extend(&extra);
        (fds, owner)
    };
    let (mut fds, mut fd_port) = wait_list(&ports);
    let drives_carp = id == 0 && (sh.carp.is_some() || sh.pfsync.is_some());
    let defer = sh.pfsync().is_some_and(|s| s.cfg.defer);
    let fast = sh.dp().fastpath_on();
    // Router advertisements (worker 0 sends them): when the next is due,
    // read without the data plane's lock.
    let adverts = (id == 0).then(|| sh.dp().adverts_clock());
    // The other workers watch it too: a solicitation one of them answers
    // brings the next advertisement closer, and worker 0 may be asleep
    // for another 100 ms.
    let ra_clock = (id != 0).then(|| sh.dp().adverts_clock());
    let mut buf = vec![0u8; 65536];
    let mut last_tick = 0;
    // As the data plane was told at start (run.rs read the links).
    let mut health: Vec<Health> = (0..ports.len())
        .map(|i| {
            if sh.dp().link_up(i) {
                Health::Up
            } else {
                Health::Down
            }
        })
        .collect();
    let mut carrier: Vec<Option<u64>> = ports.iter().map(|p| carrier_changes(&p.name)).collect();
    // Per port: when refusals were last logged (ms, 0: never), and how
    // many came since.
    let mut refusals = vec![(0u64, 0u64); ports.len()];
    let mut pulse = crate::notify::Pulse::new();
    let mut said_conflicts = Conflicts::default();
    let mut full = TableFull::default();
    while !stopping() {
        if id == 0 {
            pulse.beat(sh);
        }
        // CARP's timers may be due well within the usual 100 ms.
        let wait = if drives_carp {
            let now = sh.now_us();
            let c = sh.carp().and_then(|c| c.timeout_us(now));
            let p = sh.pfsync().and_then(|p| p.timeout_us(now));
            c.into_iter().chain(p).min()
        } else {
            None
        }
        .map_or(100_000, |t| t.min(100_000));
        // A solicited advertisement is due within half a second.
        let wait = match adverts.as_ref().map(|a| a.load(Ordering::Relaxed)) {
            Some(at) if at != u64::MAX => {
                let now_ms = sh.now_us() / 1000;
                wait.min(at.saturating_sub(now_ms) * 1000)
            }
            _ => wait,
        };
        let wait = std::time::Duration::from_micros(wait);
        // The link watch, when there is one, is the last descriptor.
        let watch = links.as_ref().map(|_| fds.len() - 1);
        let (errs, link_ready) = match afpacket::wait_fds(&fds, wait, watch) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("poll: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
                (Vec::new(), false)
            }
        };
        if id == 0 {
            sh.wake.clear();
        }
        let now = sh.start.elapsed().as_millis() as u64;
        if adverts
            .as_ref()
            .is_some_and(|a| now >= a.load(Ordering::Relaxed))
        {
            let outs = sh.dp().adverts_due(now);
            sh.send(&ports, outs);
        }
        let mut errs: Vec<usize> = errs
            .into_iter()
            .filter_map(|i| fd_port.get(i).copied())
            .collect();
        errs.dedup();
        for i in errs {
            if let Some(e) = ports[i].take_error() {
                // A link that falls reports itself so (the link watch
                // says "link down" on its own, a warning): not an error.
                if e.raw_os_error() == Some(libc::ENETDOWN) {
                    tracing::debug!("port '{}': {e}", ports[i].name);
                } else if id == 0 && health[i] == Health::Up {
                    tracing::error!("port '{}': {e}", ports[i].name);
                }
            }
        }
        let ra_before = ra_clock.as_ref().map(|a| a.load(Ordering::Relaxed));
        for i in 0..ports.len() {
            // Frames are handled as they come out of the ring and sent in
            // chunks: little memory in flight, one lock per frame. pfsync
            // hears of the states' changes every few frames.
            let mut outs = Vec::new();
            let mut frames = 0;
            ports[i].recv_batch(|frame, gso| {
                let fenced = ports[i].rx_fenced().then_some(id);
                let (o, touched, in_place) = input(sh, i, frame, gso, now, defer, fenced);
                held_or_out(sh, id, touched, o, &mut outs);
                if let Some(s) = in_place {
                    // A super-packet leaving whole from the ring: after
                    // what came before it, before the block is given back.
                    sh.send(&ports, std::mem::take(&mut outs));
                    if let Some(p) = ports.get(s.port) {
                        if let Err(e) = p.send_super(&s.hdr, &frame[..s.len]) {
                            crate::daemon::warn_send(&p.name, &e);
                        }
                    }
                }
                frames += 1;
                if frames % crate::pfsync::FEED_EVERY == 0 {
                    feed_pfsync(sh, id, &mut outs);
                }
                if outs.len() >= 64 {
                    sh.send(&ports, std::mem::take(&mut outs));
                }
            });
            if frames % crate::pfsync::FEED_EVERY != 0 {
                feed_pfsync(sh, id, &mut outs);
            }
            sh.send(&ports, outs);
            // Flows these frames made ready go to the fast path now that
            // the frames are out (its map writes are system calls).
            // (Its fenced flows' counts first: its own frames are out,
            // another worker's may not be.)
            if fast && frames > 0 {
                let mut dp = sh.dp();
                dp.fast_frames_sent(id);
                dp.fast_commit();
            }
        }
        if let (Some(a), Some(before)) = (&ra_clock, ra_before) {
            if a.load(Ordering::Relaxed) < before {
                sh.wake.wake();
            }
        }
        // CARP advertisements this worker received wait for worker 0:
        // wake it now (master down is counted from their arrival).
        if id != 0 && (sh.carp.is_some() || sh.pfsync.is_some()) && sh.dp().has_punted() {
            sh.wake.wake();
        }
        if id == 0 {
            if let Some(t) = &sh.tap {
                let mut frames = Vec::new();
                t.recv_all(&mut buf, |frame| frames.push(frame.to_vec()));
                if !frames.is_empty() {
                    let mut outs = Vec::new();
                    for f in &mut frames {
                        let (o, touched, _) = input(sh, sh.host_port, f, None, now, defer, None);
                        held_or_out(sh, id, touched, o, &mut outs);
                    }
                    sh.send(&ports, outs);
                }
            }
        }
        if drives_carp {
            let now_us = sh.now_us();
            let mut carp = sh.carp();
            let mut sync = sh.pfsync();
            let mut dp = sh.dp();
            let mut for_carp = Vec::new();
            let mut for_sync = Vec::new();
            while let Some(p) = dp.poll_punted() {
                if p.proto == palisade_pfsync::wire::PROTO {
                    for_sync.push(p);
                } else {
                    for_carp.push(p);
                }
            }
            let mut outs = Vec::new();
            if let Some(s) = sync.as_mut() {
                let (o, demote) = s.step(&mut dp, now_us, for_sync);
                outs.extend(o);
                if let Some(c) = carp.as_mut() {
                    for (d, why) in demote {
                        c.demote_for(now_us, "carp", d, why);
                    }
                }
            }
            if let Some(c) = carp.as_mut() {
                outs.extend(c.step(&mut dp, now_us, for_carp));
                // A master was heard (before this node may have become
                // master on that very advertisement): told first.
                if c.adverts_heard() > 0 {
                    if let Some(s) = sync.as_mut() {
                        s.peer_master(&mut dp);
                    }
                }
                if c.any_master() {
                    let all = c.all_master();
                    if let Some((d, why)) =
                        sync.as_mut().and_then(|s| s.master(&mut dp, now_us, all))
                    {
                        c.demote_for(now_us, "carp", d, why);
                    }
                }
            }
            drop(dp);
            drop(sync);
            drop(carp);
            sh.send(&ports, outs);
        }
        if id == 0 {
            let recs = sh.dp().take_log();
            if !recs.is_empty() {
                sh.to_followers(&recs);
                if let Some(p) = pflog.as_mut() {
                    let lost = p.write(recs);
                    if lost > 0 {
                        sh.dp().counters.log_dropped += lost;
                    }
                }
            }
        }
        // A link changed (worker 0): the ports are checked now, not at
        // the next second.
        // (Read only when poll said so: no system call per pass.)
        let link_news = link_ready && links.as_ref().is_some_and(LinkWatch::drain);
        let second = now >= last_tick + 1000;
        if !second && !link_news {
            continue;
        }
        if second {
            last_tick = now;
            if id == 0 {
                let outs = sh.dp().tick(now);
                sh.send(&ports, outs);
                let conflicts = sh.dp().take_conflicts();
                said_conflicts.say(conflicts, now);
                let (refused, limit) = {
                    let dp = sh.dp();
                    (dp.filter.states.refused_full, dp.filter.states.limit)
                };
                full.say(refused, limit, now);
            }
        }
        // Super-packets a port could not send whole (cut and sent in
        // segments instead; see `Port::send_super`): said at once, then
        // at most once a minute per port with what came meanwhile.
        for (i, p) in ports.iter().enumerate() {
            let (last, pending) = &mut refusals[i];
            *pending += p.take_refusals();
            if *pending > 0 && (*last == 0 || now >= *last + 60_000) {
                tracing::info!(
                    "port '{}': {} super-packets refused whole{} (no segmentation offload, or a full queue): cut and sent in segments, and for a second after each refusal",
                    p.name,
                    *pending,
                    if *last == 0 { "" } else { " in the last minute" }
                );
                *last = now.max(1);
                *pending = 0;
            }
        }
        // What the kernel dropped for want of room in our rings.
        let lost: u64 = ports.iter().map(|p| p.ring_drops()).sum();
        if lost > 0 {
            sh.dp().counters.ring_dropped(lost);
        }
        // Ports that went down or away, and their return. Every worker
        // reopens its own sockets; worker 0 reports and re-announces.
        let mut announce = false;
        for i in 0..ports.len() {
            let name = ports[i].name.clone();
            let h = check_port(&ports[i]);
            // A fall too short for the check to see: pfsync still lost
            // what it sent meanwhile, so it hears of the fall and the
            // return (and asks for a bulk update). CARP does not: its
            // advertisements resume by themselves, and taking the fall
            // late would step a master down for nothing.
            // The kernel's MTU changed while running (ip link set ... mtu):
            // forwarded by it from now on, as a router reads its
            // interface's MTU, so that packets over it are answered "too
            // big" instead of failing in the send.
            if id == 0 && h == Health::Up {
                if let Some(k) = kernel_mtu(&name) {
                    let was = sh.dp().port_mtu(i);
                    if let Some(now_mtu) = sh.dp().kernel_mtu(i, k) {
                        tracing::info!(
                            "port '{name}': the kernel's MTU is {k}: forwarding with {now_mtu} (was {})",
                            was.unwrap_or(0)
                        );
                    }
                }
            }
            let changes = carrier_changes(&name);
            let flapped = fell_unseen((health[i], carrier[i]), (h, changes));
            carrier[i] = changes;
            if flapped && id == 0 {
                tracing::warn!("port '{name}': the link fell and came back since the last check");
                sync_link(sh, i, false);
                sync_link(sh, i, true);
            }
            match (health[i], h) {
                (a, b) if a == b && b != Health::Replaced => {}
                (_, Health::Gone) if id == 0 => {
                    tracing::warn!("port '{name}' is gone; waiting for it to come back");
                    // Subscribers (CARP) hear of it as a link down.
                    let _ = sh.dp().set_link(i, false);
                    sync_link(sh, i, false);
                }
                (_, Health::Down) if id == 0 => {
                    tracing::warn!("port '{name}': link down");
                    let _ = sh.dp().set_link(i, false);
                    sync_link(sh, i, false);
                }
                (_, Health::Replaced) => {
                    // A new interface. With the fast path, the program
                    // goes on it first (whichever worker asks first; one
                    // decision for every worker): split sockets without
                    // it would take tagged frames twice.
                    let split = match sh.dp().fast_port_ready(i, &name) {
                        Ok(split) => split,
                        Err(e) => {
                            tracing::error!("port '{name}': {e}");
                            false
                        }
                    };
                    let frames = sh.dp().cfg.ring_frames;
                    let reopened = open_ports(std::slice::from_ref(&name), fanout, split, frames);
                    match (reopened, port_mac(&name)) {
                        (Ok(mut p), Ok(mac)) => {
                            ports[i] = p.remove(0);
                            (fds, fd_port) = wait_list(&ports);
                            if id == 0 {
                                tracing::info!("port '{name}' is back");
                                let _ = sh.dp().set_link(i, true);
                                sync_link(sh, i, true);
                                // Its settings taken over first: with
                                // `mac = "port"` the MAC to answer with
                                // is the one it came back with.
                                let mut answer = palisade_net::dataplane::own_mac(mac);
                                if let Some(iso) = isolation.as_deref_mut() {
                                    if let Err(e) = iso.add_ports(std::slice::from_ref(&name)) {
                                        tracing::error!("port '{name}': {e}");
                                    }
                                    match iso.answer_mac(&name) {
                                        Ok(m) => answer = m,
                                        Err(e) => tracing::error!("port '{name}': {e}"),
                                    }
                                }
                                sh.dp().set_port_mac(i, answer);
                                announce = true;
                            }
                            health[i] = Health::Up;
                            continue;
                        }
                        (Err(e), _) | (_, Err(e)) => {
                            if id == 0 && health[i] != Health::Replaced {
                                tracing::error!("port '{name}' is back but cannot be opened: {e}");
                            }
                        }
                    }
                }
                (_, Health::Up) if id == 0 => {
                    tracing::info!("port '{name}': link up");
                    let _ = sh.dp().set_link(i, true);
                    sync_link(sh, i, true);
                    announce = true;
                }
                _ => {}
            }
            health[i] = h;
        }
        if announce {
            let outs = sh.dp().start(now);
            sh.send(&ports, outs);
        }
    }
    // Stopping: masters bow out, so that backups take over at once.
    if drives_carp {
        if let Some(s) = sh.pfsync().as_mut() {
            // What is pending leaves before we go (held packets too).
            let o = s.shutdown(&mut sh.dp(), sh.now_us());
            sh.send(&ports, o);
        }
        if let Some(mut c) = sh.carp() {
            let outs = c.shutdown(&mut sh.dp(), sh.now_us());
            drop(c);
            sh.send(&ports, outs);
        }
    }
    // Router advertisements say this router is leaving (lifetime 0):
    // hosts stop sending to it at once.
    if id == 0 {
        let outs = sh.dp().ra_leave();
        sh.send(&ports, outs);
    }
}

/// Port `port`'s link went down or came back: pfsync hears of it if its
/// sync interface is on that port (lock order pfsync, data plane).
fn sync_link(sh: &Shared, port: usize, up: bool) {
    if let Some(mut s) = sh.pfsync() {
        let now_us = sh.now_us();
        let dp = sh.dp();
        s.port_link(&dp, port, up, now_us);
    }
}

/// A random seed for the data plane (pf's translation ports, sequence
/// numbers): from the kernel (getrandom), or the clock if that fails.
pub fn seed() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most the 8 bytes we pass.
    let n = unsafe { libc::getrandom(b.as_mut_ptr() as *mut libc::c_void, 8, 0) };
    if n == 8 {
        u64::from_ne_bytes(b)
    } else {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed)
    }
}

#[cfg(test)]
mod tests {
    /// Records logged at the epoch (the file's tests look at their bytes).
    fn at0(v: Vec<Vec<u8>>) -> Vec<palisade_net::dataplane::pflog::LogRecord> {
        v.into_iter()
            .map(|r| (std::time::Duration::ZERO, r))
            .collect()
    }

    use super::*;

    fn records(path: &Path) -> usize {
        let f = std::fs::File::open(path).unwrap();
        let mut r = pcap_file::pcap::PcapReader::new(f).unwrap();
        let mut n = 0;
        while let Some(p) = r.next_packet() {
            p.unwrap();
            n += 1;
        }
        n
    }

    /// A restart appends to the pflog file (pflogd does), after its last
    /// whole record; a file that is not pflog's is moved aside.
    #[test]
    fn the_pflog_file_is_appended_to_across_restarts() {
        // The files a start kept aside.
        let kept_aside = |dir: &std::path::Path| -> Vec<std::path::PathBuf> {
            std::fs::read_dir(dir)
                .unwrap()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("pflog.moved-"))
                .map(|e| e.path())
                .collect()
        };
        let dir =
            std::env::temp_dir().join(format!("palisade-pflog-append-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("pflog");
        let mut f = PflogFile::open(&path, 1 << 20).unwrap();
        f.write(at0(vec![vec![1u8; 40], vec![2u8; 50]]));
        drop(f);
        assert_eq!(records(&path), 2);
        let mut f = PflogFile::open(&path, 1 << 20).unwrap();
        f.write(at0(vec![vec![3u8; 60]]));
        drop(f);
        assert_eq!(records(&path), 3, "appended, not emptied");
        // A record cut short (a crash while writing) is dropped first.
        let len = std::fs::metadata(&path).unwrap().len();
        {
            use std::io::Write;
            let mut raw = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap();
            // A record header saying 100 bytes, and 4 of them (in the
            // file's byte order, as its magic number says).
            let be = std::fs::read(&path).unwrap()[..4] == [0xa1, 0xb2, 0xc3, 0xd4];
            let n = if be {
                100u32.to_be_bytes()
            } else {
                100u32.to_le_bytes()
            };
            let mut cut = vec![0u8; 8];
            cut.extend_from_slice(&n);
            cut.extend_from_slice(&n);
            cut.extend_from_slice(&[9u8; 4]);
            raw.write_all(&cut).unwrap();
        }
        let mut f = PflogFile::open(&path, 1 << 20).unwrap();
        assert_eq!(f.written, len);
        f.write(at0(vec![vec![4u8; 10]]));
        drop(f);
        assert_eq!(records(&path), 4);
        // Not a pflog file: kept under a name of its own (not FILE.0, the
        // last rotated log), a new file begun.
        std::fs::write(dir.join("pflog.0"), b"rotated").unwrap();
        std::fs::write(&path, b"not a capture at all, but long enough").unwrap();
        let mut f = PflogFile::open(&path, 1 << 20).unwrap();
        f.write(at0(vec![vec![5u8; 10]]));
        drop(f);
        assert_eq!(records(&path), 1);
        assert_eq!(std::fs::read(dir.join("pflog.0")).unwrap(), b"rotated");
        let moved = kept_aside(&dir);
        assert_eq!(moved.len(), 1);
        assert_eq!(
            std::fs::read(&moved[0]).unwrap(),
            b"not a capture at all, but long enough"
        );
        // A pflog capture cut to 160 bytes a record (pflogd's): moved too.
        let header = pcap_file::pcap::PcapHeader {
            datalink: pcap_file::DataLink::PFLOG,
            snaplen: 160,
            ..Default::default()
        };
        let file = std::fs::File::create(&path).unwrap();
        drop(pcap_file::pcap::PcapWriter::with_header(file, header).unwrap());
        let mut f = PflogFile::open(&path, 1 << 20).unwrap();
        f.write(at0(vec![vec![6u8; 400]]));
        drop(f);
        assert_eq!(records(&path), 1, "a new file takes a 400-byte record");
        // A damaged record in the middle (a length no record has), whole
        // records after it: kept aside whole, not cut there (a probe saw
        // 7,831 records cut to 100).
        for m in kept_aside(&dir) {
            std::fs::remove_file(m).unwrap();
        }
        std::fs::remove_file(&path).unwrap();
        let mut f = PflogFile::open(&path, 1 << 20).unwrap();
        f.write(at0(vec![vec![7u8; 30], vec![8u8; 30], vec![9u8; 30]]));
        drop(f);
        let mut bytes = std::fs::read(&path).unwrap();
        // The second record's captured length (after the 24-byte file
        // header and the first record, 16 + 30 bytes): its high byte.
        let at = 24 + 46 + 8;
        let be = bytes[..4] == [0xa1, 0xb2, 0xc3, 0xd4];
        bytes[if be { at } else { at + 3 }] = 0x7f;
        std::fs::write(&path, &bytes).unwrap();
        let mut f = PflogFile::open(&path, 1 << 20).unwrap();
        f.write(at0(vec![vec![10u8; 10]]));
        drop(f);
        assert_eq!(records(&path), 1, "a new file");
        let moved = kept_aside(&dir);
        assert_eq!(moved.len(), 1);
        assert_eq!(std::fs::read(&moved[0]).unwrap(), bytes, "kept whole");
        let _ = std::fs::remove_dir_all(&dir);
    }
    #[test]
    fn a_fall_between_two_checks_is_seen_by_the_carrier() {
        use super::{fell_unseen, Health};
        let up = Health::Up;
        // Down and up again between the checks: the count moved by two.
        assert!(fell_unseen((up, Some(4)), (up, Some(6))));
        assert!(!fell_unseen((up, Some(4)), (up, Some(4))));
        // A fall the check saw, or a port just back or replaced: the
        // transitions say it already.
        assert!(!fell_unseen((Health::Down, Some(5)), (up, Some(6))));
        assert!(!fell_unseen((up, Some(4)), (Health::Down, Some(5))));
        assert!(!fell_unseen((up, Some(4)), (Health::Replaced, Some(0))));
        // No count to compare (a kernel without it, a port gone).
        assert!(!fell_unseen((up, None), (up, Some(3))));
        assert!(!fell_unseen((up, Some(3)), (up, None)));
    }

    use super::PflogFile;

    fn packets(p: &std::path::Path) -> usize {
        let f = std::fs::File::open(p).unwrap();
        let mut r = pcap_file::pcap::PcapReader::new(f).unwrap();
        assert_eq!(r.header().datalink, pcap_file::DataLink::PFLOG);
        let mut n = 0;
        while let Some(p) = r.next_packet() {
            p.unwrap();
            n += 1;
        }
        n
    }

    /// A full disk: the record it took only in part is cut off, the
    /// records not written are counted, and once there is room again the
    /// next ones follow the last whole one (a probe's tcpdump stopped at
    /// a torn record, and everything logged after space came back was
    /// unreadable).
    #[test]
    fn a_record_the_full_disk_cut_is_trimmed_and_logging_goes_on() {
        let d = std::env::temp_dir().join(format!("palisade-pflog-full-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join("pflog");
        let mut f = PflogFile::open(&path, 1 << 20).unwrap();
        // Room for one 40-byte record and part of the next.
        f.set_room(Some(16 + 40 + 30));
        assert_eq!(
            f.write(at0(vec![vec![1u8; 40], vec![2u8; 50], vec![3u8; 60]])),
            2
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 24 + 16 + 40);
        assert_eq!(f.write(at0(vec![vec![4u8; 10]])), 1, "still full");
        assert_eq!(f.unlogged, 1, "the second failure, within 10 s: counted");
        f.set_room(None);
        assert_eq!(f.write(at0(vec![vec![5u8; 70]])), 0);
        // Said at the recovery, and the next failure is said at once.
        assert_eq!((f.unlogged, f.said_at), (0, None));
        assert_eq!(packets(&path), 2);
        assert_eq!(
            std::fs::metadata(&path).unwrap().len(),
            24 + 16 + 40 + 16 + 70
        );
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Each record carries the time its packet was logged, not the time
    /// the batch is written (a probe's packets 37 ms apart read as one).
    #[test]
    fn pflog_records_keep_their_own_times() {
        let d = std::env::temp_dir().join(format!("palisade-pflog-ts-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join("pflog");
        let mut f = PflogFile::open(&path, 1 << 20).unwrap();
        let at = |ms: u64| std::time::Duration::from_millis(ms);
        f.write(vec![(at(5_000), vec![1u8; 40]), (at(5_037), vec![2u8; 40])]);
        let mut r = pcap_file::pcap::PcapReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let mut times = Vec::new();
        while let Some(p) = r.next_packet() {
            times.push(p.unwrap().timestamp);
        }
        assert_eq!(times, [at(5_000), at(5_037)]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn pflog_file_rotates_by_size() {
        let d = std::env::temp_dir().join(format!("palisade-pflog-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let path = d.join("pflog");
        // Room for the file header and two 100-byte records (16 + 100 each).
        let mut f = PflogFile::open(&path, 24 + 2 * 116).unwrap();
        f.write(at0(vec![vec![0u8; 100]; 5]));
        let old = d.join("pflog.0");
        assert!(old.exists(), "rotated");
        // 5 records: two rotations of two; the newest file holds the last one
        // and .0 the two before it.
        assert_eq!(packets(&path), 1);
        assert_eq!(packets(&old), 2);
        let _ = std::fs::remove_dir_all(&d);
    }
}

/// Address conflicts as the log says them: each (interface, address,
/// claimant) at most once a minute, as OpenBSD's "duplicate IP address"
/// message (a host on the link configured with the firewall's address, or
/// spoofing it: hosts there may send to either).
#[derive(Default)]
struct Conflicts {
    said: std::collections::HashMap<(String, std::net::IpAddr, [u8; 6]), u64>,
}

impl Conflicts {
    fn say(&mut self, seen: Vec<(String, std::net::IpAddr, [u8; 6])>, now: u64) {
        self.said.retain(|_, at| now < *at + 3_600_000);
        for (iface, ip, mac) in seen {
            let key = (iface, ip, mac);
            if self.said.get(&key).is_some_and(|at| now < at + 60_000) {
                continue;
            }
            tracing::warn!(
                "interface '{}': duplicate address {} claimed by {} (an address the firewall has or answers for by proxy; hosts on that link may send to either)",
                key.0,
                key.1,
                palisade_wire::ethernet::mac_string(&key.2)
            );
            self.said.insert(key, now);
        }
    }
}

/// A full state table, as the log says it: at the first refusal, then
/// at most once a minute with the refusals since (pf only counts them:
/// `memory` in pfctl -si; new connections fail silently otherwise).
#[derive(Default)]
struct TableFull {
    /// Refusals counted when last said, and when (ms; None: never).
    said: u64,
    at: Option<u64>,
}

impl TableFull {
    fn say(&mut self, refused: u64, limit: u32, now: u64) {
        if refused <= self.said || self.at.is_some_and(|at| now < at + 60_000) {
            return;
        }
        tracing::warn!(
            "state table full ({limit} states, set limit states): {} new connection{} refused{}",
            refused - self.said,
            if refused - self.said == 1 { "" } else { "s" },
            if self.at.is_some() {
                " since the last message"
            } else {
                ""
            }
        );
        self.said = refused;
        self.at = Some(now);
    }
}
