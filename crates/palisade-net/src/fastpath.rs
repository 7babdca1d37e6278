//! The in-kernel fast path (docs/fastpath.md): the program at tc ingress
//! (bpf/fastpath.bpf.c, compiled by build.rs) and its maps, loaded with
//! `aya`. User space hands it the directions of states that need nothing
//! per packet and reads their windows and counters back; the program
//! forwards their packets after pf's window check and gives everything
//! else back to the kernel, where Palisade's sockets receive it.
//! The data plane decides what to hand over (dataplane/fast.rs); the
//! program is tested against the filter's own window check and
//! translation (tests/fastpath_bpf.rs).

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use aya::programs::SchedClassifier;

/// One direction of a state as it arrives on a port (`struct fp_key`).
/// Addresses as on the wire (an IPv4 address in the first four bytes of
/// `src`/`dst`), ports in network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FpKey {
    pub ifindex: u32,
    /// 4 or 6.
    pub family: u8,
    /// 6 (TCP) or 17 (UDP).
    pub proto: u8,
    /// `FP_TAGGED | VLAN id` when the frame came with an 802.1Q tag; 0
    /// untagged (`with_vlan`).
    pub vlan: u16,
    pub src: [u8; 16],
    pub dst: [u8; 16],
    pub sport: u16,
    pub dport: u16,
}

impl FpKey {
    /// The key of a packet from `src`:`sport` to `dst`:`dport` arriving
    /// on interface `ifindex`; None when the families differ.
    pub fn new(
        ifindex: u32,
        proto: u8,
        src: std::net::IpAddr,
        dst: std::net::IpAddr,
        sport: u16,
        dport: u16,
    ) -> Option<FpKey> {
        use std::net::IpAddr::{V4, V6};
        let mut k = FpKey {
            ifindex,
            proto,
            sport: sport.to_be(),
            dport: dport.to_be(),
            ..FpKey::default()
        };
        match (src, dst) {
            (V4(a), V4(b)) => {
                k.family = 4;
                k.src[..4].copy_from_slice(&a.octets());
                k.dst[..4].copy_from_slice(&b.octets());
            }
            (V6(a), V6(b)) => {
                k.family = 6;
                k.src = a.octets();
                k.dst = b.octets();
            }
            _ => return None,
        }
        Some(k)
    }

    /// The key of the same packet arriving with an 802.1Q tag of VLAN
    /// `vid` (None: untagged).
    pub fn with_vlan(self, vid: Option<u16>) -> FpKey {
        FpKey {
            vlan: vid.map_or(0, |v| FP_TAGGED | (v & 0x0fff)),
            ..self
        }
    }
}

/// `FpKey.vlan`, `FpWay.out_vlan`: a tag (of the VLAN in the low 12 bits;
/// VLAN 0 too, a priority tag).
pub const FP_TAGGED: u16 = 0x1000;

/// `FpWay.flags`: decrement the TTL or hop limit and write `eth`.
pub const FP_ROUTE: u8 = 1;
/// `FpWay.flags`: write the addresses and ports `to_*` (pf translates
/// this direction).
pub const FP_NAT: u8 = 2;

/// A direction as user space hands it over: the flow slot's way `way`
/// (`struct fp_way` in `fp_ways`, under the lock) and, under the
/// packet's key, where to find it (`struct fp_ref`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FpDir {
    /// The flow's slot in the flows array, and its generation.
    pub flow: u32,
    pub gen: u32,
    /// Which of the slot's two ways (0 or 1).
    pub way: u8,
    /// Where it goes (its `key` is written by `set_dir`/`set_dirs` from
    /// the one they are given).
    pub fwd: FpWay,
}

/// Where a direction goes, as the program reads it (`struct fp_way`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FpWay {
    /// The packet's key, checked under the lock.
    pub key: FpKey,
    pub out_ifindex: u32,
    /// Per pf state of the flow: 0 when this direction is from the
    /// state's initiator, 1 from its responder.
    pub side: [u8; 2],
    /// `FP_ROUTE`, `FP_NAT`.
    pub flags: u8,
    /// Destination and source MAC written when `FP_ROUTE`.
    pub eth: [u8; 12],
    /// The destination MAC the flow's frames arrive with (the firewall's
    /// when routed, the host's when bridged): others are not taken.
    pub in_dst: [u8; 6],
    pub pad: u8,
    /// `FP_TAGGED | VLAN id`: the 802.1Q tag the packet leaves with
    /// (0: none).
    pub out_vlan: u16,
    /// With `FP_NAT`: the addresses and ports the packet leaves with, as
    /// in `FpKey` (same family as the key).
    pub to_src: [u8; 16],
    pub to_dst: [u8; 16],
    pub to_sport: u16,
    pub to_dport: u16,
    /// The way out's MTU: longer packets (a super-packet's longer
    /// segments) go to user space (ICMP, fragments).
    pub mtu: u32,
    /// The `scrub` of the state the packet meets on the way in, then of
    /// the one on the way out (`struct fp_scrub`), done in that order
    /// around the hop (the TTL or hop limit taken down between them).
    pub scrub: [FpScrub; 2],
}

/// `FpScrub.flags`: clear IPv4's don't-fragment bit (`no-df`).
pub const FPS_NO_DF: u8 = 1;
/// `FpScrub.flags`: a random IPv4 identification (`random-id`); an IPv4
/// super-packet goes to user space, which cuts it (each segment its own),
/// as does one with DF set when a state has `no-df`.
pub const FPS_RANDOM_ID: u8 = 2;
/// `FpScrub.flags`: write `tos` (`set tos`).
pub const FPS_TOS: u8 = 4;

/// A state's `scrub` as the program does it (`struct fp_scrub`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FpScrub {
    /// `FPS_NO_DF`, `FPS_RANDOM_ID`, `FPS_TOS`.
    pub flags: u8,
    /// `min-ttl`: the TTL or hop limit raised to it (0: none).
    pub min_ttl: u8,
    /// With `FPS_TOS`: the type of service or traffic class to write.
    pub tos: u8,
    pub pad: u8,
}

impl FpWay {
    fn of(key: &FpKey, d: &FpDir) -> FpWay {
        FpWay { key: *key, ..d.fwd }
    }
}

/// A flow slot's directions (`struct fp_ways`): written by user space
/// only, under the program's lock.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FpWays {
    /// The program's `bpf_spin_lock`.
    pub lock: u32,
    pub gen: u32,
    pub way: [FpWay; 2],
}

/// A direction's element in `fp_dirs` (`struct fp_ref`): where its way
/// is. The program checks under the ways' lock that the slot's
/// generation is `gen` and the way's key the packet's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FpRef {
    pub flow: u32,
    pub gen: u32,
    pub way: u32,
}

/// Window edges of a side (`struct fp_win`): seqlo, seqhi, max_win.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FpWin {
    pub seqlo: u32,
    pub seqhi: u32,
    pub max_win: u32,
}

/// Window edges user space moved while the program had the flow (a
/// packet it decided that the program never saw), merged by the program
/// into the record once: each edge to the further of the two. `id` 0:
/// nothing (`struct fp_bump`, one per flow slot, beside the record).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FpBump {
    /// The program's `bpf_spin_lock`.
    pub lock: u32,
    pub id: u32,
    /// Per state of the flow, per side (initiator first).
    pub w: [[FpWin; 2]; 2],
    /// The fence's release, per way (`FpFlow::fence`): how many of the
    /// packets the program gave back marked user space has sent on (0:
    /// none yet; `u32::MAX`: go on regardless).
    pub rel: [u32; 2],
}

/// A side's window record (`struct fp_peer`), as the filter's `Peer`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FpPeer {
    pub seqlo: u32,
    pub seqhi: u32,
    pub max_win: u32,
    /// 0x80 | the shift when the side's SYN carried the option, else 0.
    pub wscale: u8,
    pub pad: [u8; 3],
}

impl From<&palisade_filter::state::Peer> for FpPeer {
    /// A side of a state as the program keeps it.
    fn from(p: &palisade_filter::state::Peer) -> FpPeer {
        FpPeer {
            seqlo: p.seqlo,
            seqhi: p.seqhi,
            max_win: p.max_win,
            wscale: p.wscale.map_or(0, |w| 0x80 | w),
            pad: [0; 3],
        }
    }
}

/// One pf state as the flow's packets move it (`struct fp_half`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FpHalf {
    pub peer: [FpPeer; 2],
    /// Per side (initiator, responder) of the state.
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
}

/// A forwarded flow (`struct fp_flow`): the states pf meets on the way
/// in and on the way out (one when both passes find the same), shared by
/// both directions.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FpFlow {
    /// The program's `bpf_spin_lock`: the kernel skips it when copying.
    pub lock: u32,
    pub gen: u32,
    /// Set by the program when it gave a packet of the flow to user
    /// space: every later one goes there too until this is cleared.
    pub slow: u32,
    /// 1 or 2.
    pub states: u32,
    /// The last `FpBump` the program merged.
    pub bump: u32,
    pub pad: u32,
    pub state: [FpHalf; 2],
    pub last_ns: u64,
    /// Ways (bit 0, bit 1: `FpDir::way`) still fenced after the hand-over:
    /// their packets go to user space marked (`Port::rx_fenced`) and
    /// counted in `given` until `rel` (from the last `FpBump`), at least
    /// 1, covers them (docs/fastpath.md, "Order").
    pub fence: u32,
    pub given: [u32; 2],
    pub rel: [u32; 2],
    pub pad2: u32,
}

// SAFETY: plain `repr(C)` integers and arrays of them, no padding the
// compiler adds (sizes checked below against the C layout), valid for
// any bit pattern.
unsafe impl aya::Pod for FpKey {}
// SAFETY: as above.
unsafe impl aya::Pod for FpWay {}
// SAFETY: as above.
unsafe impl aya::Pod for FpWays {}
// SAFETY: as above.
unsafe impl aya::Pod for FpRef {}
// SAFETY: as above.
unsafe impl aya::Pod for FpFlow {}
// SAFETY: as above.
unsafe impl aya::Pod for FpBump {}

const _: () = assert!(std::mem::size_of::<FpKey>() == 44);
const _: () = assert!(std::mem::size_of::<FpBump>() == 64);
const _: () = assert!(std::mem::size_of::<FpWay>() == 120);
const _: () = assert!(std::mem::size_of::<FpWays>() == 248);
const _: () = assert!(std::mem::size_of::<FpRef>() == 12);
const _: () = assert!(std::mem::size_of::<FpFlow>() == 184);

/// The program's counters (`enum fp_counter`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FpCounters {
    pub taken: u64,
    /// SYN, FIN or RST; a TTL that expires; too big for the way out; a
    /// frame addressed to another MAC; a super-packet scrub must cut
    /// (`random-id`, `no-df`).
    pub back_flags: u64,
    pub back_window: u64,
    pub back_slow: u64,
    pub back_stale: u64,
    /// Dropped half rewritten (a checksum or store helper failed).
    pub dropped: u64,
    /// Of `taken`: super-packets (GSO, several segments), taken whole.
    pub taken_super: u64,
    /// Given back marked: the way was still fenced after its hand-over.
    pub back_fence: u64,
    /// User space's, not the program's: fences let go regardless after
    /// their way's packets kept coming for a while (a flood), or marked
    /// ones were lost (docs/fastpath.md, "Order").
    pub fence_forced: u64,
}

/// tc's verdicts as the program returns them.
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_REDIRECT: u32 = 7;

/// `BPF_F_LOCK`: read or write a value under its spin lock.
const BPF_F_LOCK: u64 = 4;

#[cfg(palisade_bpf)]
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fastpath.bpf.o"));

/// The loaded program and its maps.
pub struct FastPath {
    ebpf: aya::Ebpf,
}

fn err(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("fast path: {what}: {e}"))
}

impl FastPath {
    /// Load the program and create its maps (root, or CAP_BPF,
    /// CAP_PERFMON — its packet-pointer arithmetic — and CAP_NET_ADMIN).
    /// Nothing is attached yet.
    pub fn load() -> io::Result<FastPath> {
        #[cfg(not(palisade_bpf))]
        {
            Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!(
                    "fast path: built without its program: {}",
                    option_env!("PALISADE_BPF_WHY").unwrap_or("clang missing")
                ),
            ))
        }
        #[cfg(palisade_bpf)]
        {
            let mut ebpf = aya::Ebpf::load(OBJECT).map_err(|e| err("load", e))?;
            let prog: &mut SchedClassifier = ebpf
                .program_mut("fastpath_in")
                .ok_or_else(|| err("program", "fastpath_in missing"))?
                .try_into()
                .map_err(|e| err("program", e))?;
            prog.load().map_err(|e| err("verifier", e))?;
            Ok(FastPath { ebpf })
        }
    }

    fn prog(&mut self) -> io::Result<&mut SchedClassifier> {
        self.ebpf
            .program_mut("fastpath_in")
            .ok_or_else(|| err("program", "fastpath_in missing"))?
            .try_into()
            .map_err(|e| err("program", e))
    }

    /// Attach the program at tc ingress of `port`: a TCX link on Linux
    /// 6.6 and later (gone when the program's last descriptor closes, so
    /// nothing stays behind when Palisade stops), else a filter on a
    /// clsact qdisc, added if the port has none.
    pub fn attach(&mut self, port: &str) -> io::Result<()> {
        let ingress = aya::programs::TcAttachType::Ingress;
        if self.prog()?.attach(port, ingress).is_ok() {
            return Ok(());
        }
        // Already there is not an error.
        let _ = aya::programs::tc::qdisc_add_clsact(port);
        self.prog()?
            .attach(port, ingress)
            .map_err(|e| err(&format!("attach to {port}"), e))?;
        Ok(())
    }

    fn dirs(&mut self) -> io::Result<HashMap<&mut MapData, FpKey, FpRef>> {
        HashMap::try_from(
            self.ebpf
                .map_mut("fp_dirs")
                .ok_or_else(|| err("map", "fp_dirs missing"))?,
        )
        .map_err(|e| err("fp_dirs", e))
    }

    fn ways(&mut self) -> io::Result<Array<&mut MapData, FpWays>> {
        Array::try_from(
            self.ebpf
                .map_mut("fp_ways")
                .ok_or_else(|| err("map", "fp_ways missing"))?,
        )
        .map_err(|e| err("fp_ways", e))
    }

    fn flows(&mut self) -> io::Result<Array<&mut MapData, FpFlow>> {
        Array::try_from(
            self.ebpf
                .map_mut("fp_flows")
                .ok_or_else(|| err("map", "fp_flows missing"))?,
        )
        .map_err(|e| err("fp_flows", e))
    }

    /// Hand the directions of a flow to the program (its record must be
    /// written first): the slot's ways for generation `gen`, written
    /// afresh under their lock, then each key's element.
    pub fn set_dirs(&mut self, slot: u32, gen: u32, dirs: &[(FpKey, FpDir)]) -> io::Result<()> {
        let mut ways = FpWays {
            gen,
            ..FpWays::default()
        };
        for (k, d) in dirs {
            ways.way[(d.way & 1) as usize] = FpWay::of(k, d);
        }
        self.ways()?
            .set(slot, ways, BPF_F_LOCK)
            .map_err(|e| err("fp_ways set", e))?;
        for (k, d) in dirs {
            self.set_ref(
                k,
                &FpRef {
                    flow: slot,
                    gen,
                    way: (d.way & 1) as u32,
                },
            )?;
        }
        Ok(())
    }

    /// Hand one more direction of a flow to the program (a UDP flow's
    /// second), its way added to the slot's for generation `dir.gen`
    /// (the others kept; none of another generation).
    pub fn set_dir(&mut self, key: &FpKey, dir: &FpDir) -> io::Result<()> {
        let mut ways = self
            .ways()?
            .get(&dir.flow, BPF_F_LOCK)
            .map_err(|e| err("fp_ways get", e))?;
        if ways.gen != dir.gen {
            ways = FpWays {
                gen: dir.gen,
                ..FpWays::default()
            };
        }
        ways.way[(dir.way & 1) as usize] = FpWay::of(key, dir);
        self.ways()?
            .set(dir.flow, ways, BPF_F_LOCK)
            .map_err(|e| err("fp_ways set", e))?;
        self.set_ref(
            key,
            &FpRef {
                flow: dir.flow,
                gen: dir.gen,
                way: (dir.way & 1) as u32,
            },
        )
    }

    /// Store a key's element exactly as given (also the program's tests:
    /// an element that names another key's way, or another generation).
    pub fn set_ref(&mut self, key: &FpKey, r: &FpRef) -> io::Result<()> {
        self.dirs()?
            .insert(key, *r, 0)
            .map_err(|e| err("fp_dirs insert", e))
    }

    /// Write a flow slot's window bump, under its lock.
    pub fn set_bump(&mut self, slot: u32, b: &FpBump) -> io::Result<()> {
        let mut m: Array<&mut MapData, FpBump> = Array::try_from(
            self.ebpf
                .map_mut("fp_bumps")
                .ok_or_else(|| err("map", "fp_bumps missing"))?,
        )
        .map_err(|e| err("fp_bumps", e))?;
        m.set(slot, b, BPF_F_LOCK)
            .map_err(|e| err("fp_bumps set", e))
    }

    /// Take a direction back. Absent is not an error.
    pub fn remove_dir(&mut self, key: &FpKey) -> io::Result<()> {
        match self.dirs()?.remove(key) {
            Ok(()) => Ok(()),
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(err("fp_dirs remove", e)),
        }
    }

    /// Write a flow's record, under its lock.
    pub fn set_flow(&mut self, slot: u32, f: &FpFlow) -> io::Result<()> {
        self.flows()?
            .set(slot, f, BPF_F_LOCK)
            .map_err(|e| err("fp_flows set", e))
    }

    /// Read the records of slots `from..from + n`, each under its lock,
    /// in one system call (BPF_MAP_LOOKUP_BATCH; aya has no call for it):
    /// what a tick reads back, where a call per flow would cost a few µs
    /// each with the worker waiting. Fewer when the array ends first.
    pub fn flows_batch(&mut self, from: u32, n: u32) -> io::Result<Vec<FpFlow>> {
        use std::os::fd::{AsFd, AsRawFd};
        let map = self
            .ebpf
            .map("fp_flows")
            .ok_or_else(|| err("map", "fp_flows missing"))?;
        // The typed view checks the map's key and value sizes (u32,
        // FpFlow): the kernel writes `n` of each into the buffers below.
        let typed: Array<&MapData, FpFlow> =
            Array::try_from(map).map_err(|e| err("fp_flows", e))?;
        let max = typed.len();
        if from >= max {
            return Ok(Vec::new());
        }
        let n = n.min(max - from);
        let aya::maps::Map::Array(data) = map else {
            return Err(err("fp_flows", "not an array"));
        };
        let fd = data.fd().as_fd().as_raw_fd();
        let mut keys = vec![0u32; n as usize];
        let mut values = vec![FpFlow::default(); n as usize];
        // The kernel starts after `in_batch` (the last key of a previous
        // batch), or at the first key without one.
        let in_batch: u32 = from.wrapping_sub(1);
        let mut out_batch: u32 = 0;
        // union bpf_attr, the batch commands' part.
        #[repr(C)]
        struct Batch {
            in_batch: u64,
            out_batch: u64,
            keys: u64,
            values: u64,
            count: u32,
            map_fd: u32,
            elem_flags: u64,
            flags: u64,
        }
        let mut attr = Batch {
            in_batch: if from == 0 {
                0
            } else {
                &in_batch as *const u32 as u64
            },
            out_batch: &mut out_batch as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: n,
            map_fd: fd as u32,
            elem_flags: BPF_F_LOCK,
            flags: 0,
        };
        const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
        // SAFETY: the attribute points at buffers of `n` keys and `n`
        // values of the map's key and value sizes (checked by the typed
        // view above), and at the two batch cursors, all alive for the
        // call; `n` does not run past the array.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut Batch,
                std::mem::size_of::<Batch>(),
            )
        };
        // ENOENT: the array ended within the batch (`count` says how far).
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ENOENT) {
                return Err(err("fp_flows lookup batch", e));
            }
        }
        values.truncate(attr.count.min(n) as usize);
        Ok(values)
    }

    /// Read a flow's record, under its lock.
    pub fn flow(&mut self, slot: u32) -> io::Result<FpFlow> {
        self.flows()?
            .get(&slot, BPF_F_LOCK)
            .map_err(|e| err("fp_flows get", e))
    }

    /// The program's counters, summed over the CPUs.
    pub fn counters(&mut self) -> io::Result<FpCounters> {
        let m: PerCpuArray<&mut MapData, u64> = PerCpuArray::try_from(
            self.ebpf
                .map_mut("fp_counters")
                .ok_or_else(|| err("map", "fp_counters missing"))?,
        )
        .map_err(|e| err("fp_counters", e))?;
        let mut v = [0u64; 8];
        for (i, x) in v.iter_mut().enumerate() {
            *x = m
                .get(&(i as u32), 0)
                .map_err(|e| err("fp_counters get", e))?
                .iter()
                .sum();
        }
        Ok(FpCounters {
            taken: v[0],
            back_flags: v[1],
            back_window: v[2],
            back_slow: v[3],
            back_stale: v[4],
            dropped: v[5],
            taken_super: v[6],
            back_fence: v[7],
            ..FpCounters::default()
        })
    }

    /// Run the program once on `frame` without sending anything (the
    /// kernel's BPF_PROG_TEST_RUN), as if it arrived on the loopback
    /// interface (ifindex 1); `gso` = (segment size, segments) makes it a
    /// super-packet. Returns the verdict and the frame as the program
    /// left it.
    pub fn test_run(
        &mut self,
        frame: &[u8],
        gso: Option<(u32, u32)>,
    ) -> io::Result<(u32, Vec<u8>)> {
        let fd = self.prog()?.fd().map_err(|e| err("program fd", e))?;
        let raw = fd.as_fd().as_raw_fd();
        // struct __sk_buff (192 bytes): only the fields the kernel lets a
        // test set; gso_segs at 164, gso_size at 176.
        let mut ctx = [0u8; 192];
        if let Some((size, segs)) = gso {
            ctx[164..168].copy_from_slice(&segs.to_ne_bytes());
            ctx[176..180].copy_from_slice(&size.to_ne_bytes());
        }
        let mut out = vec![0u8; frame.len() + 256];
        let mut attr = TestRun {
            prog_fd: raw as u32,
            data_size_in: frame.len() as u32,
            data_size_out: out.len() as u32,
            data_in: frame.as_ptr() as u64,
            data_out: out.as_mut_ptr() as u64,
            repeat: 1,
            ctx_size_in: ctx.len() as u32,
            ctx_in: ctx.as_ptr() as u64,
            ..TestRun::default()
        };
        // SAFETY: attr is a valid union bpf_attr prefix for
        // BPF_PROG_TEST_RUN (10) whose pointers live across the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                10,
                &mut attr as *mut TestRun,
                std::mem::size_of::<TestRun>(),
            )
        };
        if r < 0 {
            return Err(err("test run", io::Error::last_os_error()));
        }
        out.truncate(attr.data_size_out as usize);
        Ok((attr.retval, out))
    }
}

/// `union bpf_attr`'s member for BPF_PROG_TEST_RUN.
#[repr(C)]
#[derive(Default)]
struct TestRun {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    pad: u32,
}
