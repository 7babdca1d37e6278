//! Network ports on AF_PACKET with a receive ring: TPACKET_V2 (a slot
//! per frame) by default, TPACKET_V3 (blocks) on request.
//!
//! Why V2: a V3 block reaches user space when it is full or when its
//! timer (1 ms at least) runs out, so at low rates every frame waited up
//! to 1 ms for its block: a UDP request and its answer through the
//! firewall took 1.9 ms against the kernel's 0.09 (`palisade-bench
//! forward`). A V2 slot is the frame's as soon as it is written, and the
//! socket wakes its reader then. Frames larger than a slot (TCP
//! super-packets, jumbo frames) are also queued whole on the socket
//! (PACKET_COPY_THRESH; the kernel queues a reference to the same
//! buffer) and their slot, which holds only their start, says so
//! (TP_STATUS_COPY); they are read (copied) from there, in their place
//! in the ring's order. That costs a system call and a copy per such
//! frame, which V3 did not (measured: TCP through user space with
//! offloads on was no slower). A socket whose receive buffer cannot be
//! raised for those frames (no CAP_NET_ADMIN) keeps V3 blocks, as does
//! every socket with `PALISADE_RX_RING=blocks` (to compare).
//!
//! Written on `libc` directly: the crates that wrap AF_PACKET either lack
//! the ring versions used here or hide the VLAN metadata the ring carries, and the few
//! system calls needed are simple enough to own. Every `unsafe` block says
//! what it relies on.
//!
//! The kernel strips 802.1Q tags from received frames and reports them in
//! the ring's metadata (TP_STATUS_VLAN_VALID, tp_vlan_tci); `recv_batch`
//! puts the tag back into the frame, so the rest of Palisade sees frames as
//! they were on the wire.
//!
//! Super-packets (`Port::open_offload`): with PACKET_VNET_HDR every frame
//! received is preceded by a `virtio_net_hdr` saying whether it is a
//! TCP super-packet (GRO-merged, or sent unsegmented by a local stack) and
//! its segment size, and every frame sent starts with one, so a
//! super-packet leaves whole and the kernel (or the NIC) cuts it. See
//! docs/offload.md.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const BLOCK_SIZE: u32 = 1 << 17;
/// Frames (slots) of a receiving ring by default (palisade.toml's
/// `ring-frames`): 64 blocks of 64.
pub const RING_FRAMES: u32 = 4096;
const BLOCK_NR: u32 = RING_FRAMES / FRAMES_PER_BLOCK;
/// Slots of FRAME_SIZE in a block.
pub const FRAMES_PER_BLOCK: u32 = BLOCK_SIZE / FRAME_SIZE;
/// The ring of a split port's socket for what is neither IPv4 nor IPv6
/// (ARP, what a bridge forwards that is not IP): less traffic (1,024
/// slots of V2, about 4,000 small frames of V3).
const OTHER_BLOCK_NR: u32 = 16;
const FRAME_SIZE: u32 = 2048;

/// One receiving socket and its ring.
struct Ring {
    fd: OwnedFd,
    map: *mut u8,
    len: usize,
    blocks: u32,
    /// TPACKET_V2: a slot of FRAME_SIZE per frame (else V3 blocks).
    frames: bool,
    /// The next block (V3) or slot (V2) to read.
    next_block: std::cell::Cell<u32>,
}

/// The largest frame read whole from a socket's queue (a TCP
/// super-packet is at most 64 KiB; BIG TCP's larger ones are cut and
/// dropped).
const COPY_MAX: usize = 256 * 1024;

/// Which ring: TPACKET_V2 unless `PALISADE_RX_RING=blocks`.
fn frame_rings() -> bool {
    std::env::var("PALISADE_RX_RING").map_or(true, |v| v != "blocks")
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmapping the ring we mapped; the socket closes with fd
        // (which also ends promiscuous mode).
        unsafe { libc::munmap(self.map as *mut libc::c_void, self.len) };
    }
}

/// A network port Palisade owns.
pub struct Port {
    pub name: String,
    pub ifindex: i32,
    /// Frames carry a virtio_net_hdr (`open_offload`).
    pub vnet: bool,
    /// When the interface last refused a super-packet (no segmentation
    /// offload, and the kernel does not cut for a socket that bypasses
    /// the qdisc layer): for a second, super-packets are cut here.
    refused_whole: std::cell::Cell<Option<std::time::Instant>>,
    /// Super-packets the interface refused whole, since the last
    /// `take_refusals`.
    refusals: std::cell::Cell<u64>,
    /// `recv_batch` is under way: a nested call would hand out a second
    /// `&mut` to a frame of the slot or block not yet given back.
    receiving: std::cell::Cell<bool>,
    /// One ring, every frame (ETH_P_ALL); or, split (`open_split`), one
    /// for IPv4, one for IPv6 and one for the rest. The last one sends.
    rings: Vec<Ring>,
    /// Where a frame larger than a V2 slot is read whole (made at the
    /// first such frame).
    copy: std::cell::RefCell<Vec<u8>>,
    /// Frames cut short by the ring and not read whole (dropped).
    cut: std::cell::Cell<u64>,
    /// The frame `recv_batch` is handing out carries the fast path's
    /// fence mark (`rx_fenced`).
    fenced: std::cell::Cell<bool>,
}

// SAFETY: the ring is only touched by the thread that owns the Port (it is
// not Sync: `next_block` is a Cell).
unsafe impl Send for Port {}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn setsockopt<T>(fd: RawFd, level: i32, name: i32, v: &T) -> io::Result<()> {
    // SAFETY: v points to a live value of the size passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            v as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

pub fn ifindex(name: &str) -> io::Result<i32> {
    let c =
        CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "bad name"))?;
    // SAFETY: c is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no network interface named '{name}'"),
        ));
    }
    Ok(i as i32)
}

impl Port {
    /// Open `name`: bind a packet socket to it, map a receive ring, turn on
    /// promiscuous mode (for the socket's lifetime), ignore our own sends.
    pub fn open(name: &str) -> io::Result<Port> {
        Port::open_with(name, false)
    }

    /// As `open`, with segmentation offload: TCP super-packets are
    /// received whole with their `Gso` description (`recv_batch`), and
    /// `send_batch` sends frames that start with a `VnetHdr`.
    pub fn open_offload(name: &str) -> io::Result<Port> {
        Port::open_with(name, true)
    }

    /// As `open_offload`, with IPv4 and IPv6 received on sockets of
    /// their own (bound to ETH_P_IP and ETH_P_IPV6), which the kernel
    /// serves after tc ingress: what the in-kernel fast path's program
    /// there takes never reaches them (docs/fastpath.md), and what it
    /// gives back reaches them with its 802.1Q tag, if any, in the frame.
    /// A third socket (ETH_P_ALL, served before tc) takes the rest (ARP,
    /// on a VLAN too) and sends. Only for a port with the program on it:
    /// without it, tagged IP would reach no socket with its tag.
    pub fn open_split(name: &str) -> io::Result<Port> {
        Port::open_split_frames(name, RING_FRAMES)
    }

    /// As `open_split`, the IPv4 and IPv6 rings with `frames` slots
    /// (a multiple of `FRAMES_PER_BLOCK`).
    pub fn open_split_frames(name: &str, frames: u32) -> io::Result<Port> {
        let ifindex = ifindex(name)?;
        let blocks = (frames / FRAMES_PER_BLOCK).max(1);
        let rings = vec![
            open_ring(ifindex, libc::ETH_P_IP as u16, true, blocks, false)?,
            open_ring(ifindex, libc::ETH_P_IPV6 as u16, true, blocks, false)?,
            open_ring(ifindex, libc::ETH_P_ALL as u16, true, OTHER_BLOCK_NR, true)?,
        ];
        Ok(Port::with_rings(name, ifindex, true, rings))
    }

    /// As `open_offload`, the ring with `frames` slots (a multiple of
    /// `FRAMES_PER_BLOCK`).
    pub fn open_offload_frames(name: &str, frames: u32) -> io::Result<Port> {
        Port::open_blocks(name, true, (frames / FRAMES_PER_BLOCK).max(1))
    }

    fn open_with(name: &str, vnet: bool) -> io::Result<Port> {
        Port::open_blocks(name, vnet, BLOCK_NR)
    }

    fn open_blocks(name: &str, vnet: bool, blocks: u32) -> io::Result<Port> {
        let ifindex = ifindex(name)?;
        let ring = open_ring(ifindex, libc::ETH_P_ALL as u16, vnet, blocks, false)?;
        Ok(Port::with_rings(name, ifindex, vnet, vec![ring]))
    }

    fn with_rings(name: &str, ifindex: i32, vnet: bool, rings: Vec<Ring>) -> Port {
        Port {
            name: name.to_string(),
            ifindex,
            vnet,
            refused_whole: std::cell::Cell::new(None),
            receiving: std::cell::Cell::new(false),
            refusals: std::cell::Cell::new(0),
            rings,
            copy: std::cell::RefCell::new(Vec::new()),
            cut: std::cell::Cell::new(0),
            fenced: std::cell::Cell::new(false),
        }
    }

    /// During `recv_batch`'s call of its closure: whether the frame handed
    /// out was given back by the fast path's program during its flow's
    /// fence at the hand-over (docs/fastpath.md, "Order"): its packet
    /// type is one its destination MAC never gives (`fence_marked`).
    pub fn rx_fenced(&self) -> bool {
        self.fenced.get()
    }

    /// Whether IPv4 and IPv6 come on sockets of their own (`open_split`).
    pub fn split(&self) -> bool {
        self.rings.len() > 1
    }

    /// The descriptors to wait on (every ring's socket).
    pub fn fds(&self) -> Vec<RawFd> {
        self.rings.iter().map(|r| r.fd.as_raw_fd()).collect()
    }

    /// The socket that sends (and, unsplit, receives everything).
    pub fn fd(&self) -> RawFd {
        self.rings[self.rings.len() - 1].fd.as_raw_fd()
    }

    /// Share this port's traffic with the other sockets of fanout `group`
    /// by flow hash: every packet of a flow reaches the same socket (and
    /// so the same worker), which keeps each flow in order.
    /// A split port's sockets join one group each (a group takes sockets
    /// of one protocol): `group`, `group ^ 0x4000`, `group ^ 0x8000`.
    pub fn join_fanout(&self, group: u16) -> io::Result<()> {
        for (k, r) in self.rings.iter().enumerate() {
            let g = group ^ ((k as u16) << 14);
            let v: libc::c_int =
                (g as libc::c_int) | ((libc::PACKET_FANOUT_HASH as libc::c_int) << 16);
            setsockopt(r.fd.as_raw_fd(), libc::SOL_PACKET, libc::PACKET_FANOUT, &v)?;
        }
        Ok(())
    }

    /// The socket's pending error, cleared (the interface went down or
    /// away: ENETDOWN, ENXIO, ...). Without clearing it poll() would
    /// report it again at once.
    pub fn take_error(&self) -> Option<io::Error> {
        let mut first = None;
        for r in &self.rings {
            let mut e: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: SO_ERROR writes an int into e.
            let ok = unsafe {
                libc::getsockopt(
                    r.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_ERROR,
                    &mut e as *mut libc::c_int as *mut libc::c_void,
                    &mut len,
                )
            };
            if ok == 0 && e != 0 && first.is_none() {
                first = Some(io::Error::from_raw_os_error(e));
            }
        }
        first
    }

    /// Frames the kernel dropped because this socket's ring was full,
    /// and frames larger than a slot that could not be read whole (its
    /// receive buffer full), since the last call (PACKET_STATISTICS;
    /// reading resets them).
    pub fn ring_drops(&self) -> u64 {
        let mut drops = self.cut.replace(0);
        for r in &self.rings {
            // struct tpacket_stats (V2) or tpacket_stats_v3 (tp_packets,
            // tp_drops, then V3's tp_freeze_q_cnt): the kernel writes the
            // one of the ring's version.
            let mut st = [0u32; 3];
            let mut len = std::mem::size_of_val(&st) as libc::socklen_t;
            // SAFETY: PACKET_STATISTICS writes at most `len` bytes into st.
            let ok = unsafe {
                libc::getsockopt(
                    r.fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_STATISTICS,
                    st.as_mut_ptr() as *mut libc::c_void,
                    &mut len,
                )
            };
            if ok == 0 {
                drops += st[1] as u64;
            }
        }
        drops
    }

    /// Hand every frame the kernel has filled in (slots or blocks) to `f`
    /// (with its super-packet description, on a port opened with
    /// `open_offload`), then give them back. Returns the number of
    /// frames. A frame is handed where it lies, writable (it may be
    /// rewritten and sent from there before `f` returns): in the ring,
    /// or in the port's buffer for one larger than a slot; a copy if its
    /// 802.1Q tag must be put back.
    /// A call from inside `f` on the same port returns 0 at once.
    pub fn recv_batch(&self, mut f: impl FnMut(&mut [u8], Option<Gso>)) -> usize {
        if self.receiving.replace(true) {
            return 0;
        }
        // Cleared however `f` returns (a panic included).
        struct Done<'a>(&'a std::cell::Cell<bool>);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.set(false);
            }
        }
        let _done = Done(&self.receiving);
        self.rings
            .iter()
            .map(|r| {
                if r.frames {
                    self.recv_frames(r, &mut f)
                } else {
                    self.recv_blocks(r, &mut f)
                }
            })
            .sum()
    }

    /// `recv_batch` on a TPACKET_V2 ring: every slot the kernel filled,
    /// in order, each given back once handed.
    fn recv_frames(&self, r: &Ring, f: &mut impl FnMut(&mut [u8], Option<Gso>)) -> usize {
        let mut n = 0;
        let mut frame = Vec::new();
        let per_block = BLOCK_SIZE / FRAME_SIZE;
        let total = per_block * r.blocks;
        // At most one turn of the ring per call, so that the other rings
        // and ports get theirs.
        for _ in 0..total {
            let i = r.next_block.get();
            let off = ((i / per_block) * BLOCK_SIZE + (i % per_block) * FRAME_SIZE) as usize;
            // SAFETY: off is a slot of the ring (i < total); each slot
            // starts with a tpacket2_hdr.
            let hdr = unsafe { &mut *(r.map.add(off) as *mut libc::tpacket2_hdr) };
            // SAFETY: reading the status the kernel writes, as it may.
            let status = unsafe { std::ptr::read_volatile(&hdr.tp_status) };
            if status & libc::TP_STATUS_USER == 0 {
                return n;
            }
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            let mac = hdr.tp_mac as usize;
            let len = hdr.tp_snaplen as usize;
            let meta = Meta {
                status,
                tci: hdr.tp_vlan_tci,
                tpid: hdr.tp_vlan_tpid,
                // SAFETY: the kernel writes the frame's sockaddr_ll after
                // the header, inside the slot (its first bytes).
                pkttype: unsafe {
                    *r.map
                        .add(off + sll_at(std::mem::size_of::<libc::tpacket2_hdr>()) + SLL_PKTTYPE)
                },
            };
            if status & libc::TP_STATUS_COPY != 0 {
                // The whole frame waits on the socket, in this place.
                let mut buf = self.copy.borrow_mut();
                if buf.len() < COPY_MAX {
                    buf.resize(COPY_MAX, 0);
                }
                // SAFETY: recv into a buffer of buf.len() bytes; MSG_TRUNC
                // makes it return the frame's real length.
                let got = unsafe {
                    libc::recv(
                        r.fd.as_raw_fd(),
                        buf.as_mut_ptr() as *mut libc::c_void,
                        buf.len(),
                        libc::MSG_DONTWAIT | libc::MSG_TRUNC,
                    )
                };
                let hl = if self.vnet { VNET_HDR_LEN } else { 0 };
                // The frame read must be this slot's (its length): were
                // they ever out of step, no frame goes out with another's
                // description (its VLAN, say).
                if got > hl as isize
                    && got as usize <= buf.len()
                    && got as usize - hl == hdr.tp_len as usize
                {
                    let got = got as usize;
                    let vh = if self.vnet {
                        VnetHdr::parse(&buf[..VNET_HDR_LEN])
                    } else {
                        VnetHdr::default()
                    };
                    let data = &mut buf[hl..got];
                    self.hand(data, vh, meta, &mut frame, f);
                    n += 1;
                } else {
                    self.cut.set(self.cut.get() + 1);
                }
            } else if hdr.tp_len == hdr.tp_snaplen && mac + len <= FRAME_SIZE as usize {
                // SAFETY: the slot starts at off, the frame at mac in it.
                let vh = unsafe { self.vnet_before(r.map.add(off), mac) };
                // SAFETY: bounds checked just above; the slot is ours
                // (TP_STATUS_USER) until we give it back, and nothing else
                // refers to this frame.
                let data = unsafe { std::slice::from_raw_parts_mut(r.map.add(off + mac), len) };
                self.hand(data, vh, meta, &mut frame, f);
                n += 1;
            } else {
                // Cut short and not queued whole (the socket's queue was
                // full): it cannot be forwarded.
                self.cut.set(self.cut.get() + 1);
            }
            std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
            // SAFETY: giving the slot back to the kernel.
            unsafe { std::ptr::write_volatile(&mut hdr.tp_status, libc::TP_STATUS_KERNEL) };
            r.next_block.set((i + 1) % total);
        }
        n
    }

    /// The virtio header of the frame `mac` bytes after `at` (a slot or
    /// a V3 packet header) in the ring; an empty one without
    /// PACKET_VNET_HDR.
    ///
    /// # Safety
    /// `at..at + mac` must be within the mapped ring and ours (given to
    /// user space by its status).
    unsafe fn vnet_before(&self, at: *const u8, mac: usize) -> VnetHdr {
        if !self.vnet || mac < VNET_HDR_LEN {
            return VnetHdr::default();
        }
        // SAFETY: the kernel writes the header just before the frame,
        // inside what the caller vouches for.
        VnetHdr::parse(unsafe {
            std::slice::from_raw_parts(at.add(mac - VNET_HDR_LEN), VNET_HDR_LEN)
        })
    }

    /// Hand one frame to `f`: `data` where it lies (or was read whole),
    /// `vh` its virtio header, `m` what the ring said of it. The 802.1Q
    /// tag the kernel took out is put back (in a copy, `frame`); a
    /// checksum left to offload by a local sender is completed.
    fn hand(
        &self,
        data: &mut [u8],
        vh: VnetHdr,
        m: Meta,
        frame: &mut Vec<u8>,
        f: &mut impl FnMut(&mut [u8], Option<Gso>),
    ) {
        let gso = vh.gso();
        self.fenced.set(fence_marked(m.pkttype, data));
        let tagged = m.status & libc::TP_STATUS_VLAN_VALID != 0;
        let frame: &mut [u8] = if tagged && data.len() >= 12 {
            frame.clear();
            let tpid = if m.status & libc::TP_STATUS_VLAN_TPID_VALID != 0 && m.tpid != 0 {
                m.tpid
            } else {
                0x8100
            };
            frame.extend_from_slice(&data[..12]);
            frame.extend_from_slice(&tpid.to_be_bytes());
            frame.extend_from_slice(&m.tci.to_be_bytes());
            frame.extend_from_slice(&data[12..]);
            &mut frame[..]
        } else {
            data
        };
        if gso.is_none() && m.status & libc::TP_STATUS_CSUMNOTREADY != 0 {
            if let Some((_, _, off)) = palisade_wire::link::ethernet(frame) {
                palisade_wire::build::complete_l4_checksum(&mut frame[off..]);
            }
        }
        f(frame, gso);
    }

    fn recv_blocks(&self, r: &Ring, f: &mut impl FnMut(&mut [u8], Option<Gso>)) -> usize {
        let mut n = 0;
        let mut frame = Vec::with_capacity(2048);
        let ring = r.map;
        loop {
            let off = (r.next_block.get() * BLOCK_SIZE) as usize;
            // SAFETY: off is inside the ring (block < r.blocks); the block
            // descriptor is at the start of each block.
            let bd = unsafe { &mut *(ring.add(off) as *mut libc::tpacket_block_desc) };
            // SAFETY: the union holds the V1 header for TPACKET_V3 rings.
            let h1 = unsafe { &mut bd.hdr.bh1 };
            let status = unsafe { std::ptr::read_volatile(&h1.block_status) };
            if status & libc::TP_STATUS_USER == 0 {
                return n;
            }
            std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
            let mut p = h1.offset_to_first_pkt as usize;
            for _ in 0..h1.num_pkts {
                // SAFETY: the kernel placed a tpacket3_hdr at p within this block.
                let hdr = unsafe { &*(ring.add(off + p) as *const libc::tpacket3_hdr) };
                let mac = hdr.tp_mac as usize;
                let len = hdr.tp_snaplen as usize;
                // SAFETY: the packet's header starts at off + p in the
                // block, the frame at mac from it.
                let vh = unsafe { self.vnet_before(ring.add(off + p), mac) };
                let gso = vh.gso();
                // A super-packet cut short by the ring (larger than a
                // block) cannot be forwarded whole nor segmented.
                let whole = hdr.tp_len == hdr.tp_snaplen || gso.is_none();
                if whole && p + mac + len <= BLOCK_SIZE as usize {
                    // SAFETY: bounds checked just above; the block is ours
                    // (TP_STATUS_USER) until we give it back, and nothing
                    // else refers to this frame.
                    let data =
                        unsafe { std::slice::from_raw_parts_mut(ring.add(off + p + mac), len) };
                    let meta = Meta {
                        status: hdr.tp_status,
                        tci: hdr.hv1.tp_vlan_tci as u16,
                        tpid: hdr.hv1.tp_vlan_tpid,
                        // SAFETY: the kernel writes the packet's
                        // sockaddr_ll after its header, before the frame
                        // (checked inside the block just above).
                        pkttype: unsafe {
                            *ring.add(
                                off + p
                                    + sll_at(std::mem::size_of::<libc::tpacket3_hdr>())
                                    + SLL_PKTTYPE,
                            )
                        },
                    };
                    self.hand(data, vh, meta, &mut frame, f);
                    n += 1;
                }
                if hdr.tp_next_offset == 0 {
                    break;
                }
                p += hdr.tp_next_offset as usize;
            }
            std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
            // SAFETY: giving the block back to the kernel.
            unsafe { std::ptr::write_volatile(&mut h1.block_status, libc::TP_STATUS_KERNEL) };
            r.next_block.set((r.next_block.get() + 1) % r.blocks);
        }
    }

    /// Send frames out of this port, many per system call (sendmmsg).
    /// On a port opened with `open_offload` a frame ends with its
    /// `VnetHdr` (its last `VNET_HDR_LEN` bytes, sent first) when
    /// `with_hdr` says so; the others get an empty one.
    /// Returns how many were sent; the error is that of the first frame
    /// that could not be.
    pub fn send_batch(&self, frames: &[(&[u8], bool)]) -> (usize, Option<io::Error>) {
        let zero = [0u8; VNET_HDR_LEN];
        let mut sent = 0;
        let mut done = 0;
        let mut first_err = None;
        while done < frames.len() {
            let sent_before = done;
            let chunk = &frames[sent_before..frames.len().min(sent_before + 256)];
            // Two iovecs per frame: its virtio_net_hdr (the frame's
            // trailer, or an empty one) and the frame; without
            // PACKET_VNET_HDR the frame and nothing.
            let mut iov: Vec<[libc::iovec; 2]> = chunk
                .iter()
                .map(|&(f, with_hdr)| {
                    let iov = |b: &[u8]| libc::iovec {
                        iov_base: b.as_ptr() as *mut libc::c_void,
                        iov_len: b.len(),
                    };
                    match (self.vnet, with_hdr) {
                        (true, false) => [iov(&zero), iov(f)],
                        (true, true) if f.len() >= VNET_HDR_LEN => {
                            let (frame, hdr) = f.split_at(f.len() - VNET_HDR_LEN);
                            [iov(hdr), iov(frame)]
                        }
                        (true, true) => [iov(&zero), iov(f)],
                        (false, _) => [iov(f), iov(&[])],
                    }
                })
                .collect();
            let mut msgs: Vec<libc::mmsghdr> = iov
                .iter_mut()
                .map(|v| {
                    // SAFETY: a zeroed msghdr is valid; we set the iovecs.
                    let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
                    h.msg_iov = v.as_mut_ptr();
                    h.msg_iovlen = 2;
                    libc::mmsghdr {
                        msg_hdr: h,
                        msg_len: 0,
                    }
                })
                .collect();
            // SAFETY: msgs points to chunk.len() headers whose iovecs point
            // into frames (and `zero`) that outlive the call; the kernel
            // only reads them.
            let r = unsafe { libc::sendmmsg(self.fd(), msgs.as_mut_ptr(), msgs.len() as u32, 0) };
            if r <= 0 {
                // Skip the frame that failed and go on with the rest.
                first_err.get_or_insert_with(io::Error::last_os_error);
                done += 1;
                continue;
            }
            sent += r as usize;
            done += r as usize;
        }
        (sent, first_err)
    }

    /// Send a TCP super-packet whole, for the kernel or the NIC to cut
    /// (`hdr` says how), or cut it here and send its segments when the
    /// interface cannot take it whole: one without segmentation offload
    /// (a veth or a tap with TSO off) makes the kernel refuse it
    /// (ENOBUFS: a socket that bypasses the qdisc layer gets no software
    /// segmentation). Then, for a second, super-packets are cut here
    /// without trying.
    pub fn send_super(&self, hdr: &[u8; VNET_HDR_LEN], frame: &[u8]) -> io::Result<()> {
        let recent = self
            .refused_whole
            .get()
            .is_some_and(|t| t.elapsed() < std::time::Duration::from_secs(1));
        if !recent {
            match self.send_vnet(hdr, frame) {
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    self.refusals.set(self.refusals.get() + 1);
                    self.refused_whole.set(Some(std::time::Instant::now()));
                }
                r => return r,
            }
        }
        let h = VnetHdr::parse(hdr);
        let segments = palisade_wire::link::ethernet(frame).and_then(|(_, _, off)| {
            let segs = palisade_wire::build::segment_tcp_mss(&frame[off..], h.gso_size as usize)?;
            Some(
                segs.into_iter()
                    .map(|s| {
                        let mut f = frame[..off].to_vec();
                        f.extend_from_slice(&s);
                        f
                    })
                    .collect::<Vec<_>>(),
            )
        });
        let Some(segments) = segments else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a super-packet that cannot be cut",
            ));
        };
        let batch: Vec<(&[u8], bool)> = segments.iter().map(|f| (&f[..], false)).collect();
        match self.send_batch(&batch) {
            (_, Some(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Super-packets the interface refused whole since the last call (each
    /// was cut and sent in segments).
    pub fn take_refusals(&self) -> u64 {
        self.refusals.replace(0)
    }

    /// Send a frame that starts after its virtio_net_hdr `hdr` (on a port
    /// opened with `open_offload`).
    pub fn send_vnet(&self, hdr: &[u8; VNET_HDR_LEN], frame: &[u8]) -> io::Result<()> {
        let mut iov = [
            libc::iovec {
                iov_base: hdr.as_ptr() as *mut libc::c_void,
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: frame.as_ptr() as *mut libc::c_void,
                iov_len: frame.len(),
            },
        ];
        // SAFETY: a zeroed msghdr is valid; its iovecs point into buffers
        // that outlive the call, which only reads them.
        let mut h: libc::msghdr = unsafe { std::mem::zeroed() };
        h.msg_iov = iov.as_mut_ptr();
        h.msg_iovlen = if self.vnet { 2 } else { 1 };
        if !self.vnet {
            h.msg_iov = iov[1..].as_mut_ptr();
        }
        // SAFETY: h is a valid msghdr; the socket is bound.
        let r = unsafe { libc::sendmsg(self.fd(), &h, 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Send one frame out of this port (on an offload port, with an
    /// empty virtio_net_hdr in front).
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        if self.vnet {
            let (_, e) = self.send_batch(&[(frame, false)]);
            return e.map_or(Ok(()), Err);
        }
        // SAFETY: frame is a valid buffer of the length passed; the socket is bound.
        let r = unsafe {
            libc::send(
                self.fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// A socket on interface `ifindex` receiving `proto` (host order) into a
/// ring of `blocks` blocks; with `other`, a filter keeps out IPv4 and
/// IPv6, tagged or not (a split port's third socket). The first socket of a
/// port asks for promiscuous mode (every socket does: harmless).
fn open_ring(ifindex: i32, proto: u16, vnet: bool, blocks: u32, other: bool) -> io::Result<Ring> {
    let proto = proto.to_be() as i32;
    // SAFETY: plain socket creation.
    let raw = cvt(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) })?;
    // SAFETY: raw is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    // V2 slots need room on the socket for the frames larger than a
    // slot (a ring's worth of super-packets): without the privilege to
    // give it (CAP_NET_ADMIN), such frames would be lost: V3 then.
    let room: libc::c_int = 32 << 20;
    let frames =
        frame_rings() && setsockopt(raw, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &room).is_ok();
    let version = if frames {
        libc::tpacket_versions::TPACKET_V2
    } else {
        libc::tpacket_versions::TPACKET_V3
    } as libc::c_int;
    setsockopt(raw, libc::SOL_PACKET, libc::PACKET_VERSION, &version)?;
    if vnet {
        // Before the ring: the kernel refuses it once a ring exists.
        let one: libc::c_int = 1;
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_VNET_HDR, &one)?;
    }
    if other {
        // Classic BPF, before bind so that nothing slips in: refuse IPv4
        // and IPv6, tagged or not (the other sockets get them: the fast
        // path's program puts a tag the kernel took out back into the
        // frame for them), accept the rest. A tag the kernel took out
        // is not in the bytes the filter reads: [12] is the EtherType
        // inside it.
        let code = [
            // ldh [12]
            libc::sock_filter {
                code: 0x28,
                jt: 0,
                jf: 0,
                k: 12,
            },
            // jeq #0x0800 / #0x86dd: refuse
            libc::sock_filter {
                code: 0x15,
                jt: 2,
                jf: 0,
                k: 0x0800,
            },
            libc::sock_filter {
                code: 0x15,
                jt: 1,
                jf: 0,
                k: 0x86dd,
            },
            // accept: the whole frame
            libc::sock_filter {
                code: 0x06,
                jt: 0,
                jf: 0,
                k: u32::MAX,
            },
            // refuse
            libc::sock_filter {
                code: 0x06,
                jt: 0,
                jf: 0,
                k: 0,
            },
        ];
        let prog = libc::sock_fprog {
            len: code.len() as u16,
            filter: code.as_ptr() as *mut libc::sock_filter,
        };
        setsockopt(raw, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)?;
    }
    if frames {
        // Frames larger than a slot are queued whole on the socket as
        // well (a reference to the same buffer), within the room given
        // above.
        let one: libc::c_int = 1;
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_COPY_THRESH, &one)?;
        let req = libc::tpacket_req {
            tp_block_size: BLOCK_SIZE,
            tp_block_nr: blocks,
            tp_frame_size: FRAME_SIZE,
            tp_frame_nr: BLOCK_SIZE / FRAME_SIZE * blocks,
        };
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)?;
    } else {
        let req = libc::tpacket_req3 {
            tp_block_size: BLOCK_SIZE,
            tp_block_nr: blocks,
            tp_frame_size: FRAME_SIZE,
            tp_frame_nr: BLOCK_SIZE / FRAME_SIZE * blocks,
            // A block is handed to user space when full or this many ms
            // after it opened: the wait of a lone packet (a handshake, a
            // command on a control connection). 1 ms, the least: an FTP
            // directory listing through ftp-proxy took 28-41 ms with 2,
            // 15-22 ms with 1 (the kernel's helper: 6 ms).
            tp_retire_blk_tov: 1,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)?;
    }
    let len = (BLOCK_SIZE * blocks) as usize;
    // SAFETY: mapping the ring the kernel just set up for this socket.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_LOCKED,
            raw,
            0,
        )
    };
    if map == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let ring = Ring {
        fd,
        map: map as *mut u8,
        len,
        blocks,
        frames,
        next_block: std::cell::Cell::new(0),
    };
    let one: libc::c_int = 1;
    // Do not receive what we send ourselves (Linux 4.20+).
    let _ = setsockopt(raw, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one);
    // Send straight to the driver, past the qdisc layer: we are the
    // forwarding path, not a local application.
    let _ = setsockopt(raw, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &one);
    let mreq = libc::packet_mreq {
        mr_ifindex: ifindex,
        mr_type: libc::PACKET_MR_PROMISC as u16,
        mr_alen: 0,
        mr_address: [0; 8],
    };
    setsockopt(raw, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)?;
    // SAFETY: zeroed sockaddr_ll is a valid starting value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = proto as u16;
    sll.sll_ifindex = ifindex;
    // SAFETY: sll is a valid sockaddr_ll of the size passed.
    cvt(unsafe {
        libc::bind(
            raw,
            &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })?;
    Ok(ring)
}

/// What a ring says of a frame besides its bytes.
#[derive(Clone, Copy)]
struct Meta {
    status: u32,
    tci: u16,
    tpid: u16,
    /// `sll_pkttype` of the sockaddr_ll the kernel writes after the
    /// header (PACKET_HOST, PACKET_OTHERHOST...).
    pkttype: u8,
}

/// Where the kernel writes a frame's sockaddr_ll in a slot or block: after
/// the ring header of `hdr_len` bytes, aligned as TPACKET_ALIGN does.
const fn sll_at(hdr_len: usize) -> usize {
    (hdr_len + 15) & !15
}

/// Whether a frame's packet type is the fast path's fence mark: one its
/// destination MAC would never give it (the kernel takes the type from
/// the MAC): PACKET_MULTICAST on a unicast or the broadcast MAC,
/// PACKET_BROADCAST on another group MAC.
fn fence_marked(pkttype: u8, frame: &[u8]) -> bool {
    let Some(dst) = frame.get(..6) else {
        return false;
    };
    let natural = if dst[0] & 1 == 0 {
        None
    } else if dst == [0xff; 6] {
        Some(libc::PACKET_BROADCAST)
    } else {
        Some(libc::PACKET_MULTICAST)
    };
    (pkttype == libc::PACKET_MULTICAST || pkttype == libc::PACKET_BROADCAST)
        && natural != Some(pkttype)
}

/// `sll_pkttype`'s offset in a sockaddr_ll.
const SLL_PKTTYPE: usize = std::mem::offset_of!(libc::sockaddr_ll, sll_pkttype);

/// The legacy virtio_net_hdr AF_PACKET uses (10 bytes, host byte order).
pub const VNET_HDR_LEN: usize = 10;

const VNET_NEEDS_CSUM: u8 = 1;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_UDP_L4: u8 = 5;
const GSO_ECN: u8 = 0x80;

/// A super-packet as the kernel describes it: the segment size its
/// payload is cut into, and whether its checksum is left to offload (it
/// then holds only the pseudo-header's sum). TCP, or (`udp`) a UDP
/// datagram to be cut into datagrams of `size` bytes (UDP_SEGMENT, as
/// QUIC servers send).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gso {
    pub size: u16,
    pub csum_partial: bool,
    pub udp: bool,
}

/// struct virtio_net_hdr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    pub fn parse(b: &[u8]) -> VnetHdr {
        let u = |o: usize| u16::from_ne_bytes([b[o], b[o + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        }
    }

    pub fn bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
        b
    }

    /// A super-packet (TCP or UDP, IPv4 or IPv6), or None.
    pub fn gso(&self) -> Option<Gso> {
        let t = self.gso_type & !GSO_ECN;
        ((t == GSO_TCPV4 || t == GSO_TCPV6 || t == GSO_UDP_L4) && self.gso_size > 0).then_some(
            Gso {
                size: self.gso_size,
                csum_partial: self.flags & VNET_NEEDS_CSUM != 0,
                udp: t == GSO_UDP_L4,
            },
        )
    }

    /// The header for a TCP super-packet leaving whole: its link header is
    /// `l3` bytes long, its TCP header starts at `l4` and its payload at
    /// `payload` (offsets in the frame); the TCP checksum holds the
    /// pseudo-header's sum; CWR set on it asks for ECN's handling.
    pub fn tcp(v6: bool, l4: usize, payload: usize, size: u16, cwr: bool) -> VnetHdr {
        let mut t = if v6 { GSO_TCPV6 } else { GSO_TCPV4 };
        if cwr {
            t |= GSO_ECN;
        }
        VnetHdr {
            flags: VNET_NEEDS_CSUM,
            gso_type: t,
            hdr_len: payload as u16,
            gso_size: size,
            csum_start: l4 as u16,
            csum_offset: 16,
        }
    }
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
/// ethtool commands: get/set generic receive offload.
pub const ETHTOOL_GGRO: u32 = 0x2b;
pub const ETHTOOL_SGRO: u32 = 0x2c;

/// Read (`set` None) or write an ethtool value of interface `name`.
pub fn ethtool(name: &str, cmd: u32, set: Option<u32>) -> io::Result<u32> {
    // SAFETY: plain socket creation for the ioctl.
    let raw = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) })?;
    // SAFETY: raw is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut val: [u32; 2] = [set.map_or(cmd, |_| cmd), set.unwrap_or(0)];
    let mut ifr = [0u8; 40];
    if name.len() >= 16 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "name too long"));
    }
    ifr[..name.len()].copy_from_slice(name.as_bytes());
    let ptr = val.as_mut_ptr() as usize;
    ifr[16..16 + std::mem::size_of::<usize>()].copy_from_slice(&ptr.to_ne_bytes());
    // SAFETY: SIOCETHTOOL with an ifreq whose data points at a live
    // struct ethtool_value (cmd, data).
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), SIOCETHTOOL as _, ifr.as_mut_ptr()) })?;
    Ok(val[1])
}

/// Interface `name`'s flags (SIOCGIFFLAGS), and the socket to change them.
fn if_flags(name: &str) -> io::Result<(OwnedFd, [u8; 40])> {
    if name.len() >= 16 {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "name too long"));
    }
    // SAFETY: plain socket creation for the ioctl.
    let raw = cvt(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) })?;
    // SAFETY: raw is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut ifr = [0u8; 40];
    ifr[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: SIOCGIFFLAGS fills ifr_flags (a short after the name) of
    // the ifreq we pass, which is larger than struct ifreq needs.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS as _, ifr.as_mut_ptr()) })?;
    Ok((fd, ifr))
}

/// Is interface `name` administratively up (IFF_UP)?
pub fn if_up(name: &str) -> io::Result<bool> {
    let (_, ifr) = if_flags(name)?;
    let flags = i16::from_ne_bytes([ifr[16], ifr[17]]);
    Ok(flags & libc::IFF_UP as i16 != 0)
}

/// Set interface `name` administratively up or down (as `ip link set`).
pub fn set_if_up(name: &str, up: bool) -> io::Result<()> {
    let (fd, mut ifr) = if_flags(name)?;
    let mut flags = i16::from_ne_bytes([ifr[16], ifr[17]]);
    if up {
        flags |= libc::IFF_UP as i16;
    } else {
        flags &= !(libc::IFF_UP as i16);
    }
    ifr[16..18].copy_from_slice(&flags.to_ne_bytes());
    // SAFETY: SIOCSIFFLAGS reads ifr_name and ifr_flags of our ifreq.
    cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS as _, ifr.as_mut_ptr()) })?;
    Ok(())
}

/// Set interface `name`'s hardware address (SIOCSIFHWADDR, as `ip link
/// set NAME address`). Tried while the interface is up first; a driver
/// that cannot change it live (EBUSY) gets it with the interface down,
/// then set up again.
pub fn set_mac(name: &str, mac: [u8; 6]) -> io::Result<()> {
    let (fd, mut ifr) = if_flags(name)?;
    let flags = i16::from_ne_bytes([ifr[16], ifr[17]]);
    // ifr_hwaddr: a struct sockaddr (family ARPHRD_ETHER, then the
    // address) where the flags were.
    ifr[16..18].copy_from_slice(&libc::ARPHRD_ETHER.to_ne_bytes());
    ifr[18..24].copy_from_slice(&mac);
    ifr[24..32].fill(0);
    let set = |ifr: &mut [u8; 40]| {
        // SAFETY: SIOCSIFHWADDR reads ifr_name and ifr_hwaddr of our ifreq.
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFHWADDR as _, ifr.as_mut_ptr()) })
            .map(|_| ())
    };
    match set(&mut ifr) {
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) && flags & libc::IFF_UP as i16 != 0 => {
            set_if_up(name, false)?;
            let r = set(&mut ifr);
            set_if_up(name, true)?;
            r
        }
        r => r,
    }
}

/// Wait until one of `fds` is readable (bounded by `timeout`). Returns
/// the indexes of the descriptors that reported an error, and whether
/// the one at index `watch` is readable.
pub fn wait_fds(
    fds: &[RawFd],
    timeout: std::time::Duration,
    watch: Option<usize>,
) -> io::Result<(Vec<usize>, bool)> {
    let mut fds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // ppoll: the timeout to the microsecond (CARP's timers at advbase 0
    // are a few milliseconds; poll's would round them).
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: fds is a valid array of pollfd of the length passed; ts
    // lives across the call; no signal mask is given.
    let r = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            &ts,
            std::ptr::null(),
        )
    };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let ready = watch
        .and_then(|i| fds.get(i))
        .is_some_and(|p| p.revents & libc::POLLIN != 0);
    let errors = fds
        .iter()
        .enumerate()
        .filter(|(_, p)| p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0)
        .map(|(i, _)| i)
        .collect();
    Ok((errors, ready))
}

#[cfg(test)]
mod tests {
    use super::fence_marked;

    #[test]
    fn the_fence_mark_is_a_type_the_destination_never_gives() {
        let (host, other, bcast, mcast) = (
            libc::PACKET_HOST,
            libc::PACKET_OTHERHOST,
            libc::PACKET_BROADCAST,
            libc::PACKET_MULTICAST,
        );
        let unicast = [2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 8, 0];
        let all = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0, 0, 2, 8, 0];
        let group = [1, 0, 0x5e, 0, 0, 1, 2, 0, 0, 0, 0, 2, 8, 0];
        // As the kernel types them: not marked.
        for (t, f) in [
            (host, &unicast),
            (other, &unicast),
            (bcast, &all),
            (mcast, &group),
        ] {
            assert!(!fence_marked(t, f), "type {t} on {:x?}", &f[..6]);
        }
        // As the program marks them.
        assert!(fence_marked(mcast, &unicast));
        assert!(fence_marked(mcast, &all));
        assert!(fence_marked(bcast, &group));
        // Outgoing copies, and a frame too short to have a MAC: not.
        assert!(!fence_marked(libc::PACKET_OUTGOING, &unicast));
        assert!(!fence_marked(mcast, &unicast[..5]));
    }
}
