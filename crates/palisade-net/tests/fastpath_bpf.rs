//! The in-kernel fast path's program (bpf/fastpath.bpf.c) run by the
//! kernel (BPF_PROG_TEST_RUN) against the filter's own window check
//! (`palisade_filter::state::track_window`) on random segments and
//! super-packets, and what it does with everything it must give back.
//! Needs root (loading BPF programs), as CI runs.

use std::net::IpAddr;
use std::sync::Mutex;

use palisade_filter::state::{tcps, track_window, Peer, TcpSeg};
use palisade_net::fastpath::{
    FastPath, FpBump, FpDir, FpFlow, FpHalf, FpKey, FpPeer, FpRef, FpScrub, FpWay, FpWin,
    FPS_NO_DF, FPS_RANDOM_ID, FPS_TOS, FP_NAT, FP_ROUTE, TC_ACT_OK, TC_ACT_REDIRECT,
};

// One program and its maps per test, loaded one test at a time (each
// test owns the maps' contents while it runs).
static SERIAL: Mutex<()> = Mutex::new(());

fn load() -> FastPath {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "the fast path's tests load BPF programs: run as root, as CI does"
    );
    FastPath::load().expect("loading the fast path (clang and libbpf-dev at build time)")
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn u32(&mut self) -> u32 {
        self.next() as u32
    }
}

const CLIENT4: &str = "198.18.0.10";
const SERVER4: &str = "203.0.113.10";
const CLIENT6: &str = "2001:db8:1::10";
const SERVER6: &str = "2001:db8:2::10";

/// The destination MAC of the test frames (the firewall's, say).
const FW_MAC: [u8; 6] = [2, 0, 0, 0, 0, 0xb];
/// The way out's MTU the tests give (lo's, which the program once read).
const LO_MTU: u32 = 65536;

/// An Ethernet frame around an IP packet.
fn frame(ip: &[u8], v6: bool) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 0xb, 2, 0, 0, 0, 0, 1];
    f.extend_from_slice(if v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
    f.extend_from_slice(ip);
    f
}

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The program's key for a packet from `src` to `dst` on loopback (the
/// test run's interface).
fn key(proto: u8, src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> FpKey {
    FpKey::new(1, proto, src, dst, sport, dport).expect("one family")
}

fn fp_peer(p: &Peer) -> FpPeer {
    FpPeer::from(p)
}

fn tcp_packet(
    v6: bool,
    sender: usize,
    seq: u32,
    ack: u32,
    flags: u8,
    win: u16,
    payload: usize,
) -> Vec<u8> {
    let (c, s) = if v6 {
        (CLIENT6, SERVER6)
    } else {
        (CLIENT4, SERVER4)
    };
    let (src, dst, sp, dp) = if sender == 0 {
        (addr(c), addr(s), 40000, 80)
    } else {
        (addr(s), addr(c), 80, 40000)
    };
    let t = palisade_wire::build::tcp(sp, dp, seq, ack, flags, win, &[], &vec![0x5a; payload]);
    frame(&palisade_wire::build::ip(src, dst, 6, 64, &t), v6)
}

fn tcp_key(v6: bool, sender: usize) -> FpKey {
    let (c, s) = if v6 {
        (CLIENT6, SERVER6)
    } else {
        (CLIENT4, SERVER4)
    };
    if sender == 0 {
        key(6, addr(c), addr(s), 40000, 80)
    } else {
        key(6, addr(s), addr(c), 80, 40000)
    }
}

/// Two established sides with windows near each other's numbers.
fn peers(rng: &mut Rng) -> [Peer; 2] {
    let scaled = rng.below(3) != 0;
    let mut ps = [0, 1].map(|_| {
        let seqlo = rng.u32();
        Peer {
            seqlo,
            seqhi: seqlo.wrapping_add(rng.below(1 << 20) as u32),
            max_win: 1 + rng.below(65535) as u32,
            wscale: None,
            state: tcps::ESTABLISHED,
        }
    });
    for p in &mut ps {
        // Either both sides scale or neither does (a lone one counts as
        // neither, which the program must see too).
        p.wscale = match (scaled, rng.below(8)) {
            (true, _) => Some(rng.below(15) as u8),
            (false, 0) => Some(rng.below(15) as u8),
            _ => None,
        };
    }
    ps
}

/// Numbers near `base`: mostly inside a window of it, sometimes far.
fn near(rng: &mut Rng, base: u32) -> u32 {
    match rng.below(4) {
        0 => rng.u32(),
        1 => base.wrapping_sub(rng.below(1 << 17) as u32),
        _ => base.wrapping_add(rng.below(1 << 17) as u32),
    }
}

/// Apply `track_window` to each segment of a packet in turn (what the
/// filter does to a super-packet it decides whole, or to a packet):
/// whether all fit, and the sides after.
#[allow(clippy::too_many_arguments)]
fn filter_pass(
    ps: &[Peer; 2],
    sender: usize,
    seq: u32,
    ack: u32,
    flags: u8,
    win: u16,
    payload: u32,
    size: u32,
) -> (bool, [Peer; 2]) {
    let (mut src, mut dst) = (ps[sender], ps[1 - sender]);
    let mut off = 0u32;
    loop {
        let len = (payload - off).min(size);
        let seg = TcpSeg {
            seq: seq.wrapping_add(off),
            ack,
            flags,
            window: win,
            payload_len: len,
            wscale: None,
        };
        if track_window(&mut src, &mut dst, false, 0, &seg).is_err() {
            return (false, *ps);
        }
        off += len;
        if off >= payload {
            break;
        }
    }
    let mut after = *ps;
    after[sender] = src;
    after[1 - sender] = dst;
    (true, after)
}

fn half(ps: &[Peer; 2]) -> FpHalf {
    FpHalf {
        peer: [fp_peer(&ps[0]), fp_peer(&ps[1])],
        ..FpHalf::default()
    }
}

#[test]
fn window_check_is_the_filters_on_segments_and_super_packets() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut fp = load();
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    let (mut taken, mut refused, mut supers, mut pairs) = (0, 0, 0, 0);
    let mut supers_taken = 0u64;
    let mut abnormal = 0u64;
    for case in 0..20_000u32 {
        let v6 = rng.below(2) == 1;
        // The flow's states: the one pf in finds and, mostly, the one pf
        // out finds, which tracks the same connection (the same numbers,
        // now and then moved apart, its sides now and then swapped).
        let first = (peers(&mut rng), rng.below(2) as usize);
        let mut states = vec![first];
        if rng.below(4) != 0 {
            let (mut ps, mut side) = first;
            match rng.below(6) {
                0 => ps = peers(&mut rng),
                1 => ps[rng.below(2) as usize].seqhi = rng.u32(),
                2 => ps[rng.below(2) as usize].max_win = 1 + rng.below(65535) as u32,
                3 => {
                    ps.swap(0, 1);
                    side = 1 - side;
                }
                _ => {}
            }
            states.push((ps, side));
        }
        let (ps0, sender0) = states[0];
        let flags = [0x10, 0x18, 0x00, 0x30, 0x08][rng.below(5) as usize];
        let win = rng.below(65536) as u16;
        // A super-packet of a few segments (a test run takes one page),
        // or one segment, bare ack included.
        let gso =
            (rng.below(3) == 0).then(|| (48 + rng.below(400) as u32, 2 + rng.below(5) as u32));
        let payload = match gso {
            Some((size, segs)) => (size * (segs - 1) + 1 + rng.below(size as u64) as u32) as usize,
            None => [0, 1, 100, 1448][rng.below(4) as usize],
        };
        let (src0, dst0) = (ps0[sender0], ps0[1 - sender0]);
        let mut seq = near(&mut rng, src0.seqlo);
        let mut ack = near(&mut rng, dst0.seqlo);
        // A third of the cases sit on an edge of the check, or one past.
        let (sws, dws) = match (src0.wscale, dst0.wscale) {
            (Some(a), Some(b)) => (a as u32, b as u32),
            _ => (0, 0),
        };
        let one = rng.below(2) as u32;
        match rng.below(9) {
            0 => seq = src0.seqhi.wrapping_sub(payload as u32).wrapping_add(one),
            1 => {
                seq = src0
                    .seqlo
                    .wrapping_sub(dst0.max_win << dws)
                    .wrapping_sub(one)
            }
            2 => ack = dst0.seqlo.wrapping_add(0xffff + 1500).wrapping_add(one),
            3 => {
                ack = dst0
                    .seqlo
                    .wrapping_sub((0xffff + 1500) << sws)
                    .wrapping_sub(one)
            }
            _ => {}
        }
        // The filter: pf in, then pf out, each on the whole packet.
        let size = gso.map_or(payload as u32, |g| g.0).max(1);
        // Normalization first: a segment without ACK is refused there
        // (user space's, as SYN, FIN and RST are), windows unchecked.
        let normal = flags & 0x10 != 0;
        let mut fits = normal;
        let mut after = Vec::new();
        for (ps, sender) in &states {
            let (ok, a) = filter_pass(ps, *sender, seq, ack, flags, win, payload as u32, size);
            fits &= ok;
            after.push(a);
        }
        // The program.
        let slot = rng.below(1024) as u32;
        let mut flow = FpFlow {
            gen: case + 1,
            states: states.len() as u32,
            ..FpFlow::default()
        };
        for (k, (ps, _)) in states.iter().enumerate() {
            flow.state[k] = half(ps);
        }
        fp.set_flow(slot, &flow).unwrap();
        let mut side = [0u8; 2];
        for (k, (_, sender)) in states.iter().enumerate() {
            side[k] = *sender as u8;
        }
        let dir = FpDir {
            flow: slot,
            gen: case + 1,
            fwd: FpWay {
                out_ifindex: 1,
                side,
                in_dst: FW_MAC,
                mtu: LO_MTU,
                ..FpWay::default()
            },
            ..FpDir::default()
        };
        // The packet travels as the first state's sender sends it.
        fp.set_dir(&tcp_key(v6, sender0), &dir).unwrap();
        let pkt = tcp_packet(v6, sender0, seq, ack, flags, win, payload);
        let (verdict, out) = fp.test_run(&pkt, gso).unwrap();
        let got = fp.flow(slot).unwrap();
        let what = format!(
            "case {case}: v6 {v6} states {states:?} seq {seq} ack {ack} flags {flags:#x} win {win} payload {payload} gso {gso:?}"
        );
        if fits {
            taken += 1;
            assert_eq!(verdict, TC_ACT_REDIRECT, "{what}");
            assert_eq!(out, pkt, "a bridged packet leaves unchanged: {what}");
            assert_eq!(got.slow, 0, "{what}");
            let segs = gso.map_or(1, |g| g.1) as u64;
            if segs > 1 {
                supers_taken += 1;
            }
            let hdrs = if v6 { 40 + 20 } else { 20 + 20 };
            for (k, (_, sender)) in states.iter().enumerate() {
                let want = half(&after[k]);
                assert_eq!(got.state[k].peer, want.peer, "state {k}: {what}");
                let mut packets = [0, 0];
                packets[*sender] = segs;
                assert_eq!(got.state[k].packets, packets, "state {k}: {what}");
                assert_eq!(
                    got.state[k].bytes[*sender],
                    (pkt.len() - 14) as u64 + (segs - 1) * hdrs,
                    "state {k}: {what}"
                );
            }
            assert!(got.last_ns > 0, "{what}");
        } else {
            refused += 1;
            abnormal += u64::from(!normal);
            assert_eq!(verdict, TC_ACT_OK, "{what}");
            assert_eq!(got.state, flow.state, "nothing moves: {what}");
            assert_eq!(got.slow, 1, "{what}");
        }
        if gso.is_some() {
            supers += 1;
        }
        if states.len() == 2 {
            pairs += 1;
        }
        fp.remove_dir(&tcp_key(v6, sender0)).unwrap();
    }
    println!(
        "{taken} taken, {refused} given back, {supers} super-packets, {pairs} with two states"
    );
    // Both outcomes are well represented.
    assert!(taken > 3_000 && refused > 3_000, "{taken} / {refused}");
    let c = fp.counters().unwrap();
    assert_eq!(c.taken, taken as u64);
    assert_eq!(c.taken_super, supers_taken);
    assert!(supers_taken > 0);
    assert_eq!(c.back_flags, abnormal);
    assert_eq!(c.back_window, refused as u64 - abnormal);
}

/// A flow of one state (generation 7) whose sides start at 1000 and
/// 5000 with windows of 65535, unscaled.
fn one_state_flow() -> FpFlow {
    let p = |seqlo: u32| FpPeer {
        seqlo,
        seqhi: seqlo + 65535,
        max_win: 65535,
        wscale: 0,
        pad: [0; 3],
    };
    FpFlow {
        gen: 7,
        states: 1,
        state: [
            FpHalf {
                peer: [p(1000), p(5000)],
                ..FpHalf::default()
            },
            FpHalf::default(),
        ],
        ..FpFlow::default()
    }
}

/// A packet longer than the way out's MTU, or a super-packet whose
/// segments would be, goes to user space (ICMP, fragments), and the flow
/// turns slow; one that fits exactly is taken.
#[test]
fn too_big_for_the_way_out_goes_back() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut fp = load();
    let fresh = one_state_flow();
    // 140 bytes of IP: 40 of headers and 100 of payload.
    let pkt = tcp_packet(false, 0, 1000, 5000, 0x10, 1000, 100);
    for v6 in [false, true] {
        let pkt = if v6 {
            tcp_packet(true, 0, 1000, 5000, 0x10, 1000, 100)
        } else {
            pkt.clone()
        };
        let hdrs = if v6 { 60 } else { 40 };
        let cases = [
            // (MTU, gso (size, segs), taken)
            (hdrs + 100, None, true),
            (hdrs + 99, None, false),
            (hdrs + 50, Some((50, 2)), true),
            (hdrs + 49, Some((50, 2)), false),
        ];
        for (mtu, gso, taken) in cases {
            fp.set_flow(3, &fresh).unwrap();
            let dir = FpDir {
                flow: 3,
                gen: 7,
                fwd: FpWay {
                    out_ifindex: 1,
                    in_dst: FW_MAC,
                    mtu,
                    ..FpWay::default()
                },
                ..FpDir::default()
            };
            fp.set_dir(&tcp_key(v6, 0), &dir).unwrap();
            let verdict = fp.test_run(&pkt, gso).unwrap().0;
            let what = format!("v6 {v6} mtu {mtu} gso {gso:?}");
            if taken {
                assert_eq!(verdict, TC_ACT_REDIRECT, "{what}");
                assert_eq!(fp.flow(3).unwrap().slow, 0, "{what}");
            } else {
                assert_eq!(verdict, TC_ACT_OK, "{what}");
                assert_eq!(fp.flow(3).unwrap().slow, 1, "{what}");
            }
            fp.remove_dir(&tcp_key(v6, 0)).unwrap();
        }
    }
}

#[test]
fn flags_slowness_staleness_and_misses_go_back() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut fp = load();
    let fresh = one_state_flow();
    fp.set_flow(3, &fresh).unwrap();
    let dir = FpDir {
        flow: 3,
        gen: 7,
        fwd: FpWay {
            out_ifindex: 1,
            in_dst: FW_MAC,
            mtu: LO_MTU,
            ..FpWay::default()
        },
        ..FpDir::default()
    };
    fp.set_dir(&tcp_key(false, 0), &dir).unwrap();
    let ack = |flags: u8| tcp_packet(false, 0, 1000, 5000, flags, 1000, 10);
    // In the windows: taken.
    assert_eq!(fp.test_run(&ack(0x10), None).unwrap().0, TC_ACT_REDIRECT);
    // FIN, RST, SYN: back, and the state turns slow.
    for flags in [0x11, 0x14, 0x12] {
        fp.set_flow(3, &fresh).unwrap();
        assert_eq!(fp.test_run(&ack(flags), None).unwrap().0, TC_ACT_OK);
        let st = fp.flow(3).unwrap();
        assert_eq!(st.slow, 1, "flags {flags:#x}");
        // Then everything goes back, even what fits.
        assert_eq!(fp.test_run(&ack(0x10), None).unwrap().0, TC_ACT_OK);
    }
    // Handed back (user space clears the mark): taken again.
    fp.set_flow(3, &fresh).unwrap();
    assert_eq!(fp.test_run(&ack(0x10), None).unwrap().0, TC_ACT_REDIRECT);
    // The slot was given to another state meanwhile: back.
    fp.set_flow(3, &FpFlow { gen: 8, ..fresh }).unwrap();
    assert_eq!(fp.test_run(&ack(0x10), None).unwrap().0, TC_ACT_OK);
    // No direction: back; the other direction of the same state is not
    // handed over.
    fp.set_flow(3, &fresh).unwrap();
    assert_eq!(
        fp.test_run(&tcp_packet(false, 1, 5000, 1010, 0x10, 1000, 0), None)
            .unwrap()
            .0,
        TC_ACT_OK
    );
    fp.remove_dir(&tcp_key(false, 0)).unwrap();
    assert_eq!(fp.test_run(&ack(0x10), None).unwrap().0, TC_ACT_OK);
    // A frame for another MAC (a promiscuous port): back, and slow.
    fp.set_dir(&tcp_key(false, 0), &dir).unwrap();
    fp.set_flow(3, &fresh).unwrap();
    let mut other = ack(0x10);
    other[5] = 0x0c;
    assert_eq!(fp.test_run(&other, None).unwrap().0, TC_ACT_OK);
    assert_eq!(fp.flow(3).unwrap().slow, 1);
    // A bare ack padded to 60 bytes on the wire: its length is the IP
    // header's (no payload), as pf takes it.
    fp.set_flow(3, &fresh).unwrap();
    let mut bare = tcp_packet(false, 0, 1000, 5000, 0x10, 1000, 0);
    bare.resize(60, 0);
    assert_eq!(fp.test_run(&bare, None).unwrap().0, TC_ACT_REDIRECT);
    let st = fp.flow(3).unwrap();
    assert_eq!(st.state[0].peer[0].seqlo, 1000, "no payload: seqlo stays");
    assert_eq!(st.state[0].bytes[0], 40);
    // A frame shorter than its IP header says: back.
    let mut short = ack(0x10);
    short.truncate(short.len() - 1);
    assert_eq!(fp.test_run(&short, None).unwrap().0, TC_ACT_OK);
    // IP options and fragments: back, without a look at the state.
    let mut opts = ack(0x10);
    opts[14] = 0x46; // a 24-byte header: options
    assert_eq!(fp.test_run(&opts, None).unwrap().0, TC_ACT_OK);
    let mut frag = ack(0x10);
    frag[14 + 6] = 0x20; // more fragments
    assert_eq!(fp.test_run(&frag, None).unwrap().0, TC_ACT_OK);
    // A damaged IPv4 header (its checksum no longer adds up): back, for
    // user space to drop and count.
    let mut damaged = ack(0x10);
    damaged[14 + 8] ^= 0x01; // the TTL, checksum left as it was
    assert_eq!(fp.test_run(&damaged, None).unwrap().0, TC_ACT_OK);
    // What pf's normalization refuses or rewrites: back, and the state
    // turns slow (user space normalizes it): no ACK, a reserved bit, an
    // urgent pointer without URG.
    let with_tcp = |at: usize, v: u8| {
        let mut p = ack(0x10);
        p[14 + 20 + at] |= v;
        // (The TCP checksum is not the program's to check.)
        p
    };
    let psh = tcp_packet(false, 0, 1000, 5000, 0x08, 1000, 10);
    for odd in [psh, with_tcp(12, 0x01), with_tcp(19, 0x01)] {
        fp.set_flow(3, &fresh).unwrap();
        assert_eq!(fp.test_run(&odd, None).unwrap().0, TC_ACT_OK);
        assert_eq!(fp.flow(3).unwrap().slow, 1);
    }
    // URG with its pointer is pf's to pass: taken.
    let mut urg = with_tcp(19, 0x01);
    urg[14 + 20 + 13] |= 0x20;
    fp.set_flow(3, &fresh).unwrap();
    assert_eq!(fp.test_run(&urg, None).unwrap().0, TC_ACT_REDIRECT);
    assert_eq!(fp.flow(3).unwrap().slow, 0);
    let c = fp.counters().unwrap();
    assert_eq!(c.taken, 4);
    assert_eq!(c.back_flags, 7);
    assert_eq!(c.back_slow, 3);
    assert_eq!(c.back_stale, 1);
}

/// The MACs a routed way writes (destination, source).
const OUT_MACS: [u8; 12] = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 0xc];

/// A flow of two states in slot 9 (generation 1) whose windows take
/// `hello` from the client at sequence 1000 (as the slot's record, so
/// that a test can write it again), and the client's direction of
/// `proto` over `v6` or IPv4 to the server in it, leaving by ifindex 1
/// with `flags` (routed: `OUT_MACS`) and `scrub`: the direction's key,
/// the addresses and the transport header with `hello`.
fn wide_flow_toward_server(
    fp: &mut FastPath,
    v6: bool,
    proto: u8,
    flags: u8,
    scrub: [FpScrub; 2],
) -> (FpFlow, FpKey, IpAddr, IpAddr, Vec<u8>) {
    let peer = FpPeer {
        seqlo: 1000,
        seqhi: 100_000,
        max_win: 65535,
        ..FpPeer::default()
    };
    let h = FpHalf {
        peer: [peer, peer],
        ..FpHalf::default()
    };
    let st = FpFlow {
        gen: 1,
        states: 2,
        state: [h, h],
        ..FpFlow::default()
    };
    fp.set_flow(9, &st).unwrap();
    let (c, s) = if v6 {
        (CLIENT6, SERVER6)
    } else {
        (CLIENT4, SERVER4)
    };
    let k = key(proto, addr(c), addr(s), 40000, 80);
    fp.set_dir(
        &k,
        &FpDir {
            flow: 9,
            gen: 1,
            fwd: FpWay {
                out_ifindex: 1,
                side: [0, 0],
                flags,
                eth: OUT_MACS,
                in_dst: FW_MAC,
                mtu: LO_MTU,
                scrub,
                ..FpWay::default()
            },
            ..FpDir::default()
        },
    )
    .unwrap();
    let l4 = if proto == 6 {
        palisade_wire::build::tcp(40000, 80, 1000, 1000, 0x10, 1000, &[], b"hello")
    } else {
        palisade_wire::build::udp(40000, 80, b"hello")
    };
    (st, k, addr(c), addr(s), l4)
}

#[test]
fn routed_packets_get_their_way_out_and_expiring_ttls_go_back() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut fp = load();
    let mac = OUT_MACS;
    for v6 in [false, true] {
        for proto in [6u8, 17] {
            let (_, k, c, s, l4) =
                wide_flow_toward_server(&mut fp, v6, proto, FP_ROUTE, Default::default());
            for ttl in [64u8, 2, 1] {
                let pkt = frame(&palisade_wire::build::ip(c, s, proto, ttl, &l4), v6);
                let (verdict, out) = fp.test_run(&pkt, None).unwrap();
                let what = format!("v6 {v6} proto {proto} ttl {ttl}");
                if ttl == 1 {
                    assert_eq!(verdict, TC_ACT_OK, "{what}");
                    assert_eq!(out, pkt, "{what}");
                    assert_eq!(fp.flow(9).unwrap().slow, 1, "{what}");
                    continue;
                }
                assert_eq!(verdict, TC_ACT_REDIRECT, "{what}");
                assert_eq!(out[..12], mac, "{what}");
                let ip = &out[14..];
                let ttl_at = if v6 { 7 } else { 8 };
                assert_eq!(ip[ttl_at], ttl - 1, "{what}");
                // Everything else as it came, and the IPv4 checksum right.
                let mut want = pkt[14..].to_vec();
                want[ttl_at] = ttl - 1;
                if !v6 {
                    want[10..12].copy_from_slice(&[0, 0]);
                    let ck = palisade_wire::checksum::finish(palisade_wire::checksum::sum(
                        &want[..20],
                        0,
                    ));
                    want[10..12].copy_from_slice(&ck.to_be_bytes());
                }
                assert_eq!(ip, &want[..], "{what}");
            }
            let st = fp.flow(9).unwrap();
            assert_eq!(st.state[0].packets, [2, 0]);
            assert_eq!(st.state[1].packets, [2, 0]);
            fp.remove_dir(&k).unwrap();
        }
    }
}

/// A state's `scrub` (`no-df`, `random-id`, `min-ttl`, `set tos`) as
/// the program does it is what user space's rewrites give (the filter's
/// `normalize` uses these functions): the way-in state's, the hop, the
/// way-out state's, over random headers, IPv4 and IPv6, TCP and UDP,
/// routed and bridged. The identification `random-id` writes is the
/// program's own draw (compared as such, and seen to vary); a
/// super-packet of a `random-id` way goes back (user space cuts it).
#[test]
fn scrubbed_packets_leave_as_user_space_scrubs_them() {
    use palisade_wire::rewrite::scrub;
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut fp = load();
    let mut rng = Rng(0x5c7b_0bad_f00d_1234);
    let mac = OUT_MACS;
    let mut ids = std::collections::HashSet::new();
    let mut drawn = 0;
    let mut changed = 0;
    for trial in 0..1200 {
        let v6 = rng.below(2) == 0;
        let proto = if rng.below(2) == 0 { 6u8 } else { 17 };
        let routed = rng.below(3) != 0;
        let mut sc = [FpScrub::default(); 2];
        for s in &mut sc {
            if rng.below(2) == 0 {
                s.flags |= FPS_NO_DF;
            }
            if rng.below(3) == 0 {
                s.flags |= FPS_RANDOM_ID;
            }
            if rng.below(2) == 0 {
                s.flags |= FPS_TOS;
                s.tos = rng.next() as u8;
            }
            if rng.below(2) == 0 {
                s.min_ttl = rng.next() as u8;
            }
        }
        let flags = if routed { FP_ROUTE } else { 0 };
        let (st, k, c, s, l4) = wide_flow_toward_server(&mut fp, v6, proto, flags, sc);
        // Now and then a TTL that expires here unless the way-in state's
        // min-ttl raises it first.
        let ttl = if rng.below(8) == 0 {
            rng.below(2) as u8
        } else {
            2 + rng.below(254) as u8
        };
        let mut ip = palisade_wire::build::ip(c, s, proto, ttl, &l4);
        // A random TOS or traffic class, identification and DF bit.
        let tos = rng.next() as u8;
        if v6 {
            ip[0] = 0x60 | (tos >> 4);
            ip[1] = (ip[1] & 0x0f) | (tos << 4);
        } else {
            ip[1] = tos;
            ip[4..6].copy_from_slice(&(rng.next() as u16).to_be_bytes());
            if rng.below(2) == 0 {
                ip[6] &= !0x40;
            }
            ip[10..12].copy_from_slice(&[0, 0]);
            let ck = palisade_wire::checksum::finish(palisade_wire::checksum::sum(&ip[..20], 0));
            ip[10..12].copy_from_slice(&ck.to_be_bytes());
        }
        let pkt = frame(&ip, v6);
        let random = !v6 && (sc[0].flags | sc[1].flags) & FPS_RANDOM_ID != 0;
        let what = format!("trial {trial}: v6 {v6} proto {proto} routed {routed} ttl {ttl} {sc:?}");
        let fresh = |fp: &mut FastPath| fp.set_flow(9, &st).unwrap();
        // An IPv4 super-packet that must be cut (random-id: an
        // identification per segment; no-df on a DF one: GRO may have
        // merged it with a fixed identification) goes back and the flow
        // turns slow; a virtio device's leaves gso_segs 0. Others are
        // taken whole.
        let no_df = (sc[0].flags | sc[1].flags) & FPS_NO_DF != 0;
        let cut = !v6 && (random || (no_df && ip[6] & 0x40 != 0));
        for gso in [(5, 2), (5, 0)] {
            let (verdict, out) = fp.test_run(&pkt, Some(gso)).unwrap();
            let expires = routed && ttl.max(sc[0].min_ttl) <= 1;
            if cut || expires {
                assert_eq!(verdict, TC_ACT_OK, "{what}: super-packet {gso:?}");
                assert_eq!(out, pkt, "{what}");
                assert_eq!(fp.flow(9).unwrap().slow, 1, "{what}");
            } else {
                assert_eq!(verdict, TC_ACT_REDIRECT, "{what}: super-packet {gso:?}");
            }
            fresh(&mut fp);
        }
        if routed && ttl.max(sc[0].min_ttl) <= 1 {
            // Expires here: user space answers (ICMP).
            let (verdict, out) = fp.test_run(&pkt, None).unwrap();
            assert_eq!(verdict, TC_ACT_OK, "{what}");
            assert_eq!(out, pkt, "{what}");
            fp.remove_dir(&k).unwrap();
            continue;
        }
        let (verdict, out) = fp.test_run(&pkt, None).unwrap();
        assert_eq!(verdict, TC_ACT_REDIRECT, "{what}");
        let got = &out[14..14 + ip.len()];
        // What user space does: the way-in state's scrub, the hop, the
        // way-out state's.
        let mut want = ip.clone();
        let info = palisade_wire::parse_ip(&want).unwrap();
        let apply = |p: &mut Vec<u8>, s: &FpScrub| {
            if s.flags & FPS_NO_DF != 0 {
                scrub::clear_df(p, &info);
            }
            if s.flags & FPS_RANDOM_ID != 0 {
                scrub::set_id(p, &info, u16::from_be_bytes([got[4], got[5]]));
            }
            if s.min_ttl != 0 {
                scrub::raise_ttl(p, &info, s.min_ttl);
            }
            if s.flags & FPS_TOS != 0 {
                scrub::set_tos(p, &info, s.tos);
            }
        };
        apply(&mut want, &sc[0]);
        if routed {
            want[if v6 { 7 } else { 8 }] -= 1;
        }
        apply(&mut want, &sc[1]);
        if !v6 {
            want[10..12].copy_from_slice(&[0, 0]);
            let ck = palisade_wire::checksum::finish(palisade_wire::checksum::sum(&want[..20], 0));
            want[10..12].copy_from_slice(&ck.to_be_bytes());
            assert_eq!(
                palisade_wire::checksum::finish(palisade_wire::checksum::sum(&got[..20], 0)),
                0,
                "{what}: the header's checksum"
            );
            let (mut a, mut b) = (got.to_vec(), want.clone());
            a[10..12].copy_from_slice(&[0, 0]);
            b[10..12].copy_from_slice(&[0, 0]);
            assert_eq!(a, b, "{what}");
        } else {
            assert_eq!(got, &want[..], "{what}");
        }
        if got != &ip[..] {
            changed += 1;
        }
        if routed {
            assert_eq!(out[..12], mac, "{what}");
        } else {
            assert_eq!(out[..14], pkt[..14], "{what}");
        }
        if random {
            drawn += 1;
            ids.insert([got[4], got[5]]);
        }
        fp.remove_dir(&k).unwrap();
    }
    assert!(changed > 900, "{changed} of 1,200 packets rewritten");
    assert!(
        drawn > 100 && ids.len() > drawn * 9 / 10,
        "{} identifications of {drawn}",
        ids.len()
    );
}

/// A random address of the family, from the documentation ranges.
fn random_addr(rng: &mut Rng, v6: bool) -> IpAddr {
    if v6 {
        let mut o = [0u8; 16];
        o[..4].copy_from_slice(&[0x20, 0x01, 0x0d, 0xb8]);
        for b in &mut o[4..] {
            *b = rng.next() as u8;
        }
        IpAddr::from(o)
    } else {
        IpAddr::from([
            198,
            18 + rng.below(2) as u8,
            rng.next() as u8,
            rng.next() as u8,
        ])
    }
}

/// The translated packet the program writes is the packet built afresh
/// with the new addresses and ports (checksums computed from scratch),
/// routed or bridged, TCP or UDP, IPv4 or IPv6, whatever part of the
/// tuple changes; a UDP checksum that comes out 0 is written 0xffff and
/// an IPv4 UDP datagram without one stays without.
#[test]
fn translated_packets_leave_as_if_built_with_their_new_tuple() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut fp = load();
    let mut rng = Rng(0x0005_eed0_f4a7);
    let peer = FpPeer {
        seqlo: 1000,
        seqhi: 1_000_000,
        max_win: 65535,
        ..FpPeer::default()
    };
    let h = FpHalf {
        peer: [peer, peer],
        ..FpHalf::default()
    };
    let mac = OUT_MACS;
    let mut seen_mangled = 0;
    for case in 0..1200u32 {
        let v6 = rng.below(2) == 1;
        let proto = if rng.below(2) == 0 { 6u8 } else { 17 };
        let routed = rng.below(2) == 0;
        let (src, dst) = (random_addr(&mut rng, v6), random_addr(&mut rng, v6));
        let (sp, dpt) = (1 + rng.below(65535) as u16, 1 + rng.below(65535) as u16);
        // What pf changed: any of the four, at least one.
        let what = 1 + rng.below(15);
        let nsrc = if what & 1 != 0 {
            random_addr(&mut rng, v6)
        } else {
            src
        };
        let ndst = if what & 2 != 0 {
            random_addr(&mut rng, v6)
        } else {
            dst
        };
        let nsp = if what & 4 != 0 {
            1 + rng.below(65535) as u16
        } else {
            sp
        };
        let ndp = if what & 8 != 0 {
            1 + rng.below(65535) as u16
        } else {
            dpt
        };
        let mut payload: Vec<u8> = (0..rng.below(64) as usize + 2)
            .map(|_| rng.next() as u8)
            .collect();
        let l4 = |sp: u16, dp: u16, payload: &[u8]| {
            if proto == 6 {
                palisade_wire::build::tcp(sp, dp, 5000, 1000, 0x18, 1000, &[], payload)
            } else {
                palisade_wire::build::udp(sp, dp, payload)
            }
        };
        let ttl = 2 + rng.below(200) as u8;
        let out_ttl = if routed { ttl - 1 } else { ttl };
        let mut want =
            palisade_wire::build::ip(nsrc, ndst, proto, out_ttl, &l4(nsp, ndp, &payload));
        let ck_at = if v6 { 40 } else { 20 } + if proto == 6 { 16 } else { 6 };
        let mangled = proto == 17 && case % 3 == 0;
        if mangled {
            // Payload whose translated sum is all ones: the checksum
            // computes to 0, which UDP writes 0xffff. (With its first
            // word 0 the checksum is the complement of the sum of the
            // rest: that word makes it all ones.)
            payload[..2].copy_from_slice(&[0, 0]);
            want = palisade_wire::build::ip(nsrc, ndst, proto, out_ttl, &l4(nsp, ndp, &payload));
            let c = [want[ck_at], want[ck_at + 1]];
            payload[..2].copy_from_slice(&c);
            want = palisade_wire::build::ip(nsrc, ndst, proto, out_ttl, &l4(nsp, ndp, &payload));
            assert_eq!(want[ck_at..ck_at + 2], [0xff, 0xff]);
            seen_mangled += 1;
        }
        let mut pkt = palisade_wire::build::ip(src, dst, proto, ttl, &l4(sp, dpt, &payload));
        let no_sum = proto == 17 && !v6 && case % 3 == 1;
        if no_sum {
            pkt[ck_at..ck_at + 2].copy_from_slice(&[0, 0]);
            want[ck_at..ck_at + 2].copy_from_slice(&[0, 0]);
        }
        let slot = case % 64;
        fp.set_flow(
            slot,
            &FpFlow {
                gen: case + 1,
                states: 2,
                state: [h, h],
                ..FpFlow::default()
            },
        )
        .unwrap();
        let k = key(proto, src, dst, sp, dpt);
        let to = key(proto, nsrc, ndst, nsp, ndp);
        fp.set_dir(
            &k,
            &FpDir {
                flow: slot,
                gen: case + 1,
                fwd: FpWay {
                    out_ifindex: 1,
                    flags: FP_NAT | if routed { FP_ROUTE } else { 0 },
                    eth: mac,
                    in_dst: FW_MAC,
                    to_src: to.src,
                    to_dst: to.dst,
                    to_sport: to.sport,
                    to_dport: to.dport,
                    mtu: LO_MTU,
                    ..FpWay::default()
                },
                ..FpDir::default()
            },
        )
        .unwrap();
        if proto == 17 {
            // A length pf refuses (under the header, past the packet):
            // user space's, which drops it; the flow is not touched.
            let at = if v6 { 44 } else { 24 };
            for bad in [0u16, 7, pkt.len() as u16] {
                let mut b = pkt.clone();
                b[at..at + 2].copy_from_slice(&bad.to_be_bytes());
                assert_eq!(
                    fp.test_run(&frame(&b, v6), None).unwrap().0,
                    TC_ACT_OK,
                    "case {case}: UDP length {bad}"
                );
            }
        }
        let gso = (proto == 6 && rng.below(3) == 0).then_some((payload.len() as u32 / 2, 2));
        let (verdict, out) = fp.test_run(&frame(&pkt, v6), gso).unwrap();
        let about = format!(
            "case {case}: v6 {v6} proto {proto} routed {routed} {src}:{sp} > {dst}:{dpt} \
             as {nsrc}:{nsp} > {ndst}:{ndp} gso {gso:?}"
        );
        assert_eq!(verdict, TC_ACT_REDIRECT, "{about}");
        if routed {
            assert_eq!(out[..12], mac, "{about}");
        }
        let ip = &out[14..];
        // TCP's checksum has two forms of zero (0 and 0xffff), either
        // right: compared by verifying it; everything else byte for byte.
        let mut a = ip.to_vec();
        let mut b = want.clone();
        if proto == 6 {
            a[ck_at..ck_at + 2].copy_from_slice(&[0, 0]);
            b[ck_at..ck_at + 2].copy_from_slice(&[0, 0]);
        }
        assert_eq!(a, b, "{about}");
        assert!(palisade_wire::build::checksums_ok(ip), "{about}");
        fp.remove_dir(&k).unwrap();
    }
    assert!(seen_mangled > 50);
    assert_eq!(fp.counters().unwrap().dropped, 0);
}

/// Window edges user space moved (a packet it decided that the program
/// never saw) reach the record at the program's next packet, each edge
/// to the further of the two in sequence space, before that packet is
/// checked; once per bump, whatever the record does after.
#[test]
fn a_bump_merges_window_edges_once_before_the_next_check() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut fp = load();
    let peer = |seqlo: u32, seqhi: u32| FpPeer {
        seqlo,
        seqhi,
        max_win: 1000,
        ..FpPeer::default()
    };
    // The sender (side 0) may send up to 2,000; its next segment goes to
    // 2,500: not in the window until the bump.
    let half = FpHalf {
        peer: [peer(1000, 2000), peer(5000, 7000)],
        ..FpHalf::default()
    };
    let rec = FpFlow {
        gen: 4,
        states: 2,
        state: [half, half],
        ..FpFlow::default()
    };
    fp.set_flow(5, &rec).unwrap();
    let win = |seqlo, seqhi, max_win| FpWin {
        seqlo,
        seqhi,
        max_win,
    };
    let w = [
        // State 0: the sender's seqhi ahead (seqlo behind: kept), the
        // other side's seqlo half the sequence space away (behind).
        [
            win(900, 3000, 800),
            win(5000u32.wrapping_sub(1 << 31).wrapping_add(10), 7000, 2000),
        ],
        // State 1: the sender's seqhi too, and its max_win.
        [win(1000, 3000, 4000), win(5000, 7000, 1000)],
    ];
    let dir = FpDir {
        flow: 5,
        gen: 4,
        fwd: FpWay {
            out_ifindex: 1,
            in_dst: FW_MAC,
            mtu: LO_MTU,
            ..FpWay::default()
        },
        ..FpDir::default()
    };
    let k = tcp_key(false, 0);
    fp.set_dir(&k, &dir).unwrap();
    let mut bump = FpBump {
        lock: 0,
        id: 9,
        w,
        ..FpBump::default()
    };
    fp.set_bump(5, &bump).unwrap();
    let seg = tcp_packet(false, 0, 2000, 5000, 0x10, 1000, 500);
    let (verdict, _) = fp.test_run(&seg, None).unwrap();
    assert_eq!(verdict, TC_ACT_REDIRECT, "fits once the bump is in");
    let got = fp.flow(5).unwrap();
    assert_eq!(got.bump, 9);
    // State 0: seqhi from the bump, seqlo moved by the segment itself
    // (2,500), the larger max_win kept; the other side's seqlo is not
    // moved by an edge that is behind it.
    assert_eq!(got.state[0].peer[0].seqlo, 2500);
    assert_eq!(got.state[0].peer[0].seqhi, 3000);
    assert_eq!(got.state[0].peer[0].max_win, 1000);
    assert_eq!(got.state[0].peer[1].seqlo, 5000);
    assert_eq!(got.state[0].peer[1].max_win, 2000);
    assert_eq!(got.state[1].peer[0].max_win, 4000);
    // The same bump is not merged again: user space writes the record
    // back as it was (as at a hand-back, saying bump 9 is in).
    fp.set_flow(5, &FpFlow { bump: 9, ..rec }).unwrap();
    let (verdict, _) = fp.test_run(&seg, None).unwrap();
    assert_eq!(verdict, TC_ACT_OK, "bump 9 is in the record already");
    assert_eq!(fp.flow(5).unwrap().state[0].peer[0].seqhi, 2000);
    // A new bump is.
    fp.set_flow(5, &FpFlow { bump: 9, ..rec }).unwrap();
    bump.id = 10;
    fp.set_bump(5, &bump).unwrap();
    let (verdict, _) = fp.test_run(&seg, None).unwrap();
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(fp.flow(5).unwrap().bump, 10);
    // Not into a record of another generation (the slot reused).
    fp.set_flow(5, &FpFlow { gen: 6, ..rec }).unwrap();
    bump.id = 11;
    fp.set_bump(5, &bump).unwrap();
    let (verdict, _) = fp.test_run(&seg, None).unwrap();
    assert_eq!(verdict, TC_ACT_OK, "another generation: stale");
    let got = fp.flow(5).unwrap();
    assert_eq!((got.bump, got.state[0].peer[0].seqhi), (0, 2000));
    // From the responder's side too: its edges are the second of each
    // state's pair.
    let mut w2 = [[FpWin::default(); 2]; 2];
    w2[0][1] = win(5000, 9000, 1000);
    w2[1][1] = win(5000, 9000, 1000);
    fp.set_flow(5, &rec).unwrap();
    fp.set_bump(
        5,
        &FpBump {
            lock: 0,
            id: 12,
            w: w2,
            ..FpBump::default()
        },
    )
    .unwrap();
    let kr = tcp_key(false, 1);
    fp.set_dir(
        &kr,
        &FpDir {
            fwd: FpWay {
                side: [1, 1],
                ..dir.fwd
            },
            ..dir
        },
    )
    .unwrap();
    // The responder sends 5,000..8,000, beyond its 7,000 until the bump.
    let back = tcp_packet(false, 1, 5000, 2000, 0x10, 1000, 3000);
    let (verdict, _) = fp.test_run(&back, None).unwrap();
    assert_eq!(verdict, TC_ACT_REDIRECT, "the responder's edge merged");
    let got = fp.flow(5).unwrap();
    assert_eq!(got.state[0].peer[1].seqlo, 8000);
    // The initiator's edge: from the responder's ack (2,000 + 1,000),
    // not from the bump (whose initiator edges are 0, behind).
    assert_eq!(got.state[0].peer[0].seqhi, 3000);
    assert_eq!(got.state[0].peer[0].seqlo, 1000);
    fp.remove_dir(&k).unwrap();
    fp.remove_dir(&kr).unwrap();
}

/// A key's element that names a way of another key, or another
/// generation, or an empty slot (as when the map reused the element for
/// another key while a run held it, or a torn read of it mixes two) is
/// not used: the packet goes back, counted stale; the flow is untouched.
#[test]
fn a_direction_stored_under_another_key_is_not_used() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut fp = load();
    let half = FpHalf {
        peer: [FpPeer {
            seqlo: 1000,
            seqhi: 100_000,
            max_win: 65535,
            ..FpPeer::default()
        }; 2],
        ..FpHalf::default()
    };
    let rec = FpFlow {
        gen: 2,
        states: 1,
        state: [half, half],
        ..FpFlow::default()
    };
    fp.set_flow(6, &rec).unwrap();
    let dir = FpDir {
        flow: 6,
        gen: 2,
        fwd: FpWay {
            out_ifindex: 1,
            in_dst: FW_MAC,
            mtu: LO_MTU,
            ..FpWay::default()
        },
        ..FpDir::default()
    };
    // Both directions of the state: the first sender's as way 0, the
    // answer's as way 1.
    let (k, kr) = (tcp_key(false, 0), tcp_key(false, 1));
    let back = FpDir {
        way: 1,
        fwd: FpWay {
            side: [1, 1],
            ..dir.fwd
        },
        ..dir
    };
    fp.set_dirs(6, 2, &[(k, dir), (kr, back)]).unwrap();
    let seg = tcp_packet(false, 0, 1000, 1000, 0x10, 1000, 10);
    assert_eq!(fp.test_run(&seg, None).unwrap().0, TC_ACT_REDIRECT);
    let moved = fp.flow(6).unwrap();
    let stale = |fp: &mut FastPath, r: FpRef, what: &str| {
        fp.set_ref(&k, &r).unwrap();
        let before = fp.counters().unwrap().back_stale;
        assert_eq!(fp.test_run(&seg, None).unwrap().0, TC_ACT_OK, "{what}");
        assert_eq!(fp.counters().unwrap().back_stale, before + 1, "{what}");
        assert_eq!(fp.flow(6).unwrap(), moved, "{what}: the flow moved");
    };
    let good = FpRef {
        flow: 6,
        gen: 2,
        way: 0,
    };
    // The element names the other direction's way.
    stale(&mut fp, FpRef { way: 1, ..good }, "the other way");
    // Another generation of the slot (its flow gone, the slot reused).
    stale(&mut fp, FpRef { gen: 3, ..good }, "another generation");
    // Another slot, whose ways hold nothing (generation 0).
    fp.set_flow(7, &rec).unwrap();
    stale(&mut fp, FpRef { flow: 7, ..good }, "an empty slot");
    // Generation 0 never names a live way.
    fp.set_flow(7, &FpFlow { gen: 0, ..rec }).unwrap();
    stale(
        &mut fp,
        FpRef {
            flow: 7,
            gen: 0,
            way: 0,
        },
        "generation 0",
    );
    // The slot's ways written afresh for another generation: the old
    // element is stale even though its way has the same key (and the
    // flow's record, not yet written anew, still has the old one).
    fp.set_dirs(6, 5, &[(k, dir)]).unwrap();
    fp.set_ref(&k, &good).unwrap();
    let before = fp.counters().unwrap().back_stale;
    assert_eq!(fp.test_run(&seg, None).unwrap().0, TC_ACT_OK);
    assert_eq!(fp.counters().unwrap().back_stale, before + 1);
    // And the element as it should be is used again.
    fp.set_dirs(6, 2, &[(k, dir), (kr, back)]).unwrap();
    fp.set_ref(&k, &good).unwrap();
    assert_eq!(fp.test_run(&seg, None).unwrap().0, TC_ACT_REDIRECT);
    // A second direction added later (a UDP flow's) keeps the first.
    fp.set_dirs(6, 2, &[(k, dir)]).unwrap();
    fp.set_dir(&kr, &back).unwrap();
    assert_eq!(fp.test_run(&seg, None).unwrap().0, TC_ACT_REDIRECT);
    let answer = tcp_packet(false, 1, 1000, 1010, 0x10, 1000, 0);
    assert_eq!(fp.test_run(&answer, None).unwrap().0, TC_ACT_REDIRECT);
    fp.remove_dir(&k).unwrap();
    fp.remove_dir(&kr).unwrap();
}

/// The tick's batch read gives each slot's record as a read of that slot
/// alone does, from any starting slot, to the end of the array.
#[test]
fn records_read_in_batches_are_those_read_one_by_one() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut fp = load();
    let mut rng = Rng(0xba7c);
    for slot in [0u32, 1, 2, 4095, 4096, 4097, 9000] {
        let mut f = one_state_flow();
        f.gen = slot + 1;
        f.slow = slot % 2;
        f.state[0].packets = [rng.next() % 1000, slot as u64];
        f.state[0].bytes = [rng.next(), rng.next()];
        f.last_ns = rng.next();
        fp.set_flow(slot, &f).unwrap();
    }
    for (from, n) in [(0u32, 9001u32), (0, 3), (1, 4096), (4095, 3), (8999, 5)] {
        let mut got = Vec::new();
        while (got.len() as u32) < n {
            let at = from + got.len() as u32;
            let b = fp
                .flows_batch(at, (n - got.len() as u32).min(4096))
                .unwrap();
            assert!(!b.is_empty(), "nothing read at {at}");
            got.extend(b);
        }
        assert_eq!(got.len() as u32, n);
        for (i, r) in got.iter().enumerate() {
            let slot = from + i as u32;
            assert_eq!(*r, fp.flow(slot).unwrap(), "slot {slot} read from {from}");
        }
    }
    // The last slot: a batch asked past it gives what there is.
    let last = fp.flows_batch(131_071, 10).unwrap();
    assert_eq!(last.len(), 1);
    // Past the end: nothing (not the array again from its start).
    assert!(fp.flows_batch(131_072, 10).unwrap().is_empty());
}

/// The fence at the hand-over (docs/fastpath.md, "Order"): a fenced
/// way's packets go back, counted, until user space says (by a bump) it
/// has sent as many, at least one; the other way is not held by it;
/// `u32::MAX` lets the way go regardless.
#[test]
fn a_fenced_way_goes_back_counted_until_user_space_has_sent_as_many() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut fp = load();
    let fenced = FpFlow {
        fence: 1,
        ..one_state_flow()
    };
    let dir = |way: u8| FpDir {
        flow: 3,
        gen: 7,
        way,
        fwd: FpWay {
            out_ifindex: 1,
            in_dst: FW_MAC,
            mtu: LO_MTU,
            side: [way, way],
            ..FpWay::default()
        },
    };
    fp.set_dir(&tcp_key(false, 0), &dir(0)).unwrap();
    fp.set_dir(&tcp_key(false, 1), &dir(1)).unwrap();
    let ack = || tcp_packet(false, 0, 1000, 5000, 0x10, 1000, 10);
    let back_fence = |fp: &mut FastPath| fp.counters().unwrap().back_fence;
    let before = back_fence(&mut fp);
    let mut bump_id = 100;
    let mut release = |fp: &mut FastPath, rel: u32| {
        bump_id += 1;
        fp.set_bump(
            3,
            &FpBump {
                id: bump_id,
                w: [[FpWin::default(); 2]; 2],
                rel: [rel, 0],
                ..FpBump::default()
            },
        )
        .unwrap();
    };
    fp.set_bump(3, &FpBump::default()).unwrap();
    fp.set_flow(3, &fenced).unwrap();
    // Nothing said yet (0): back, however many were counted (none).
    release(&mut fp, 0);
    for n in 1..=2 {
        assert_eq!(fp.test_run(&ack(), None).unwrap().0, TC_ACT_OK);
        let st = fp.flow(3).unwrap();
        assert_eq!((st.fence, st.given[0]), (1, n));
    }
    // One sent of two given: back.
    release(&mut fp, 1);
    assert_eq!(fp.test_run(&ack(), None).unwrap().0, TC_ACT_OK);
    assert_eq!(fp.flow(3).unwrap().given[0], 3);
    // Nothing new said (no bump to merge): back.
    assert_eq!(fp.test_run(&ack(), None).unwrap().0, TC_ACT_OK);
    assert_eq!(fp.flow(3).unwrap().given[0], 4);
    // All four sent: taken, the fence gone.
    release(&mut fp, 4);
    assert_eq!(fp.test_run(&ack(), None).unwrap().0, TC_ACT_REDIRECT);
    let st = fp.flow(3).unwrap();
    assert_eq!((st.fence, st.given[0], st.slow), (0, 4, 0));
    assert_eq!(fp.test_run(&ack(), None).unwrap().0, TC_ACT_REDIRECT);
    assert_eq!(back_fence(&mut fp) - before, 4);
    // (Each case below starts as a hand-over does: no bump to merge.)
    // The other way's fence does not hold this one back.
    fp.set_bump(3, &FpBump::default()).unwrap();
    fp.set_flow(3, &FpFlow { fence: 2, ..fenced }).unwrap();
    assert_eq!(fp.test_run(&ack(), None).unwrap().0, TC_ACT_REDIRECT);
    let answer = tcp_packet(false, 1, 5000, 1010, 0x10, 1000, 0);
    assert_eq!(fp.test_run(&answer, None).unwrap().0, TC_ACT_OK);
    assert_eq!(fp.flow(3).unwrap().given, [0, 1]);
    // Let go regardless (its packets kept coming): taken.
    fp.set_bump(3, &FpBump::default()).unwrap();
    fp.set_flow(3, &fenced).unwrap();
    for _ in 0..3 {
        assert_eq!(fp.test_run(&ack(), None).unwrap().0, TC_ACT_OK);
    }
    release(&mut fp, u32::MAX);
    assert_eq!(fp.test_run(&ack(), None).unwrap().0, TC_ACT_REDIRECT);
    // A flow turned slow is the slow mark's, not the fence's: back
    // uncounted.
    fp.set_bump(3, &FpBump::default()).unwrap();
    fp.set_flow(3, &FpFlow { slow: 1, ..fenced }).unwrap();
    assert_eq!(fp.test_run(&ack(), None).unwrap().0, TC_ACT_OK);
    assert_eq!(fp.flow(3).unwrap().given[0], 0);
    fp.remove_dir(&tcp_key(false, 0)).unwrap();
    fp.remove_dir(&tcp_key(false, 1)).unwrap();
}
