//! Network ports on AF_PACKET with a TPACKET_V3 receive ring.
//!
//! Written on `libc` directly: the crates that wrap AF_PACKET either lack
//! TPACKET_V3 or hide the VLAN metadata the ring carries, and the few
//! system calls needed are simple enough to own. Every `unsafe` block says
//! what it relies on.
//!
//! The kernel strips 802.1Q tags from received frames and reports them in
//! the ring's metadata (TP_STATUS_VLAN_VALID, tp_vlan_tci); `recv_batch`
//! puts the tag back into the frame, so the rest of Palisade sees frames as
//! they were on the wire.
//!
//! Super-packets (`Port::open_offload`): with PACKET_VNET_HDR every frame
//! in the ring is preceded by a `virtio_net_hdr` saying whether it is a
//! TCP super-packet (GRO-merged, or sent unsegmented by a local stack) and
//! its segment size, and every frame sent starts with one, so a
//! super-packet leaves whole and the kernel (or the NIC) cuts it. See
//! docs/offload.md.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const BLOCK_SIZE: u32 = 1 << 17;
const BLOCK_NR: u32 = 64;
const FRAME_SIZE: u32 = 2048;

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
    /// `&mut` to a frame of the block not yet given back.
    receiving: std::cell::Cell<bool>,
    fd: OwnedFd,
    ring: *mut u8,
    ring_len: usize,
    next_block: std::cell::Cell<u32>,
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

    fn open_with(name: &str, vnet: bool) -> io::Result<Port> {
        let ifindex = ifindex(name)?;
        let proto = (libc::ETH_P_ALL as u16).to_be() as i32;
        // SAFETY: plain socket creation.
        let raw = cvt(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto) })?;
        // SAFETY: raw is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let v3: libc::c_int = libc::tpacket_versions::TPACKET_V3 as libc::c_int;
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_VERSION, &v3)?;
        if vnet {
            // Before the ring: the kernel refuses it once a ring exists.
            let one: libc::c_int = 1;
            setsockopt(raw, libc::SOL_PACKET, libc::PACKET_VNET_HDR, &one)?;
        }
        let req = libc::tpacket_req3 {
            tp_block_size: BLOCK_SIZE,
            tp_block_nr: BLOCK_NR,
            tp_frame_size: FRAME_SIZE,
            tp_frame_nr: BLOCK_SIZE / FRAME_SIZE * BLOCK_NR,
            tp_retire_blk_tov: 2,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(raw, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)?;
        let ring_len = (BLOCK_SIZE * BLOCK_NR) as usize;
        // SAFETY: mapping the ring the kernel just set up for this socket.
        let ring = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                ring_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_LOCKED,
                raw,
                0,
            )
        };
        if ring == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
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
        Ok(Port {
            name: name.to_string(),
            ifindex,
            vnet,
            refused_whole: std::cell::Cell::new(None),
            receiving: std::cell::Cell::new(false),
            refusals: std::cell::Cell::new(0),
            fd,
            ring: ring as *mut u8,
            ring_len,
            next_block: std::cell::Cell::new(0),
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Share this port's traffic with the other sockets of fanout `group`
    /// by flow hash: every packet of a flow reaches the same socket (and
    /// so the same worker), which keeps each flow in order.
    pub fn join_fanout(&self, group: u16) -> io::Result<()> {
        let v: libc::c_int =
            (group as libc::c_int) | ((libc::PACKET_FANOUT_HASH as libc::c_int) << 16);
        setsockopt(self.fd(), libc::SOL_PACKET, libc::PACKET_FANOUT, &v)
    }

    /// The socket's pending error, cleared (the interface went down or
    /// away: ENETDOWN, ENXIO, ...). Without clearing it poll() would
    /// report it again at once.
    pub fn take_error(&self) -> Option<io::Error> {
        let mut e: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: SO_ERROR writes an int into e.
        let r = unsafe {
            libc::getsockopt(
                self.fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                &mut e as *mut libc::c_int as *mut libc::c_void,
                &mut len,
            )
        };
        (r == 0 && e != 0).then(|| io::Error::from_raw_os_error(e))
    }

    /// Frames the kernel dropped because this socket's ring was full,
    /// since the last call (PACKET_STATISTICS; reading resets them).
    pub fn ring_drops(&self) -> u64 {
        // struct tpacket_stats_v3: tp_packets, tp_drops, tp_freeze_q_cnt.
        let mut st = [0u32; 3];
        let mut len = std::mem::size_of_val(&st) as libc::socklen_t;
        // SAFETY: PACKET_STATISTICS writes at most `len` bytes into st.
        let r = unsafe {
            libc::getsockopt(
                self.fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                st.as_mut_ptr() as *mut libc::c_void,
                &mut len,
            )
        };
        if r == 0 {
            st[1] as u64
        } else {
            0
        }
    }

    /// Hand every frame of the blocks the kernel has filled to `f` (with
    /// its super-packet description, on a port opened with
    /// `open_offload`), then give the blocks back. Returns the number of
    /// frames. A frame is handed where it lies in the ring, writable (it
    /// may be rewritten and sent from there before `f` returns), unless
    /// its 802.1Q tag must be put back: then it is a copy.
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
        self.recv_blocks(&mut f)
    }

    fn recv_blocks(&self, f: &mut impl FnMut(&mut [u8], Option<Gso>)) -> usize {
        let mut n = 0;
        let mut frame = Vec::with_capacity(2048);
        loop {
            let off = (self.next_block.get() * BLOCK_SIZE) as usize;
            // SAFETY: off is inside the ring (block < BLOCK_NR); the block
            // descriptor is at the start of each block.
            let bd = unsafe { &mut *(self.ring.add(off) as *mut libc::tpacket_block_desc) };
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
                let hdr = unsafe { &*(self.ring.add(off + p) as *const libc::tpacket3_hdr) };
                let mac = hdr.tp_mac as usize;
                let len = hdr.tp_snaplen as usize;
                let vh = if self.vnet && mac >= VNET_HDR_LEN {
                    // SAFETY: with PACKET_VNET_HDR the kernel writes the
                    // header just before the frame, inside the block.
                    let b = unsafe {
                        std::slice::from_raw_parts(
                            self.ring.add(off + p + mac - VNET_HDR_LEN),
                            VNET_HDR_LEN,
                        )
                    };
                    VnetHdr::parse(b)
                } else {
                    VnetHdr::default()
                };
                let gso = vh.gso();
                // A super-packet cut short by the ring (larger than a
                // block) cannot be forwarded whole nor segmented.
                let whole = hdr.tp_len == hdr.tp_snaplen || gso.is_none();
                if whole && p + mac + len <= BLOCK_SIZE as usize {
                    // SAFETY: bounds checked just above; the block is ours
                    // (TP_STATUS_USER) until we give it back, and nothing
                    // else refers to this frame.
                    let data = unsafe {
                        std::slice::from_raw_parts_mut(self.ring.add(off + p + mac), len)
                    };
                    let tagged = hdr.tp_status & libc::TP_STATUS_VLAN_VALID != 0;
                    let frame: &mut [u8] = if tagged && data.len() >= 12 {
                        frame.clear();
                        // Put the 802.1Q tag the kernel took out back in.
                        let tpid = if hdr.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0
                            && hdr.hv1.tp_vlan_tpid != 0
                        {
                            hdr.hv1.tp_vlan_tpid
                        } else {
                            0x8100
                        };
                        frame.extend_from_slice(&data[..12]);
                        frame.extend_from_slice(&tpid.to_be_bytes());
                        frame.extend_from_slice(&(hdr.hv1.tp_vlan_tci as u16).to_be_bytes());
                        frame.extend_from_slice(&data[12..]);
                        &mut frame[..]
                    } else {
                        data
                    };
                    if gso.is_none() && hdr.tp_status & libc::TP_STATUS_CSUMNOTREADY != 0 {
                        // Sent by a local stack that left the checksum to
                        // offload: complete it before it goes anywhere.
                        if let Some((_, _, off)) = palisade_wire::link::ethernet(frame) {
                            palisade_wire::build::complete_l4_checksum(&mut frame[off..]);
                        }
                    }
                    f(frame, gso);
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
            self.next_block.set((self.next_block.get() + 1) % BLOCK_NR);
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

impl Drop for Port {
    fn drop(&mut self) {
        // SAFETY: unmapping the ring we mapped; the socket closes with fd
        // (which also ends promiscuous mode).
        unsafe { libc::munmap(self.ring as *mut libc::c_void, self.ring_len) };
    }
}

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

/// Wait until one of `fds` is readable (bounded by `timeout`). Returns
/// the indexes of the descriptors that reported an error.
pub fn wait_fds(fds: &[RawFd], timeout: std::time::Duration) -> io::Result<Vec<usize>> {
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
    Ok(fds
        .iter()
        .enumerate()
        .filter(|(_, p)| p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0)
        .map(|(i, _)| i)
        .collect())
}
