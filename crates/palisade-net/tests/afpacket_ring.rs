//! The receive ring on a real interface: a veth pair in a namespace of
//! the test's own. Frames that fit a ring slot, frames larger than a
//! slot (read whole from the socket's queue) and a TCP super-packet with
//! its segment size come out whole, with their bytes, and in the order
//! they were sent, with either ring (TPACKET_V2 slots, the default, and
//! V3 blocks). Needs root (namespaces, packet sockets), as CI runs.

use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::{Duration, Instant};

use palisade_net::afpacket::{wait_fds, Port, VnetHdr};

/// A namespace of this test run, deleted however the test ends.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn sh(args: &[&str]) {
    let ok = Command::new(args[0])
        .args(&args[1..])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "{args:?}");
}

/// An Ethernet frame of the local experimental type 0x88b5, `len`
/// payload bytes of `fill`.
fn marked(fill: u8, len: usize) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x88, 0xb5];
    f.extend(std::iter::repeat_n(fill, len));
    f
}

/// A TCP super-packet: 20,000 bytes of payload to be cut in segments of
/// 1,400, as a local stack hands one to its interface.
fn super_packet() -> (VnetHdr, Vec<u8>) {
    let payload: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let tcp = palisade_wire::build::tcp(40000, 80, 1, 1, 0x18, 512, &[], &payload);
    let mut ip = palisade_wire::build::ip(
        "198.18.0.1".parse().unwrap(),
        "198.18.0.2".parse().unwrap(),
        6,
        64,
        &tcp,
    );
    assert!(palisade_wire::build::tcp_partial_checksum(&mut ip));
    let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2, 0x08, 0x00];
    f.extend_from_slice(&ip);
    (VnetHdr::tcp(false, 34, 54, 1400, false), f)
}

/// `f` with an 802.1Q tag for VLAN `vid` after its addresses.
fn tagged(vid: u16, f: &[u8]) -> Vec<u8> {
    let mut t = f[..12].to_vec();
    t.extend_from_slice(&[0x81, 0x00]);
    t.extend_from_slice(&vid.to_be_bytes());
    t.extend_from_slice(&f[12..]);
    t
}

/// What the test sends, in order: frames that fit a slot, larger ones,
/// tagged ones of both sizes, a TCP super-packet.
fn sent() -> Vec<(VnetHdr, Vec<u8>)> {
    let none = VnetHdr::default();
    vec![
        (none, marked(1, 100)),
        (none, marked(2, 6000)),
        super_packet(),
        (none, tagged(7, &marked(4, 5000))),
        (none, tagged(8, &marked(5, 60))),
        (none, marked(3, 200)),
    ]
}

/// A frame as received: its bytes and its segment size.
type Got = (Vec<u8>, Option<u16>);

/// Send `sent()` from r1, then read r0 (opened by `open`) until they
/// came (5 s at most). Also the ring drops the port counted.
fn exchange(ns: &str, open: fn(&str) -> std::io::Result<Port>) -> (Vec<Got>, u64) {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on this thread only, with a namespace fd.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let rx = open("r0").expect("open r0");
        let tx = Port::open_offload("r1").expect("open r1");
        let frames = sent();
        for (h, f) in &frames {
            tx.send_vnet(&h.bytes(), f).unwrap();
        }
        let mut got = Vec::new();
        let t = Instant::now();
        while got.len() < frames.len() && t.elapsed() < Duration::from_secs(5) {
            let _ = wait_fds(&rx.fds(), Duration::from_millis(100), None);
            rx.recv_batch(|frame, gso| {
                let et = u16::from_be_bytes([frame[12], frame[13]]);
                // Only what the test sent (not the kernel's own IPv6
                // chatter on a new link).
                if et == 0x88b5 || et == 0x8100 || (et == 0x0800 && frame[14 + 9] == 6) {
                    got.push((frame.to_vec(), gso.map(|g| g.size)));
                }
            });
        }
        (got, rx.ring_drops())
    })
    .join()
    .unwrap()
}

/// Every frame came whole, with its tag, in the order sent (`ordered`;
/// else as a set: a split port's sockets are read one after the other);
/// the super-packet with its segment size where the port reads it
/// (`vnet`); nothing dropped.
fn check((got, drops): (Vec<Got>, u64), ordered: bool, vnet: bool) {
    let mut want: Vec<Got> = sent()
        .into_iter()
        .map(|(h, f)| {
            let gso = (vnet && h.gso_size > 0).then_some(h.gso_size);
            (f, gso)
        })
        .collect();
    let mut got = got;
    let shape =
        |v: &[Got]| -> Vec<(usize, Option<u16>)> { v.iter().map(|g| (g.0.len(), g.1)).collect() };
    if !ordered {
        want.sort();
        got.sort();
    }
    assert_eq!(shape(&got), shape(&want));
    for (g, w) in got.iter().zip(&want) {
        if g.0[12..14] == [0x08, 0x00] {
            // The super-packet: its checksum field is the kernel's.
            assert_eq!(&g.0[54..], &w.0[54..], "the super-packet's payload");
        } else {
            assert!(g.0 == w.0, "a frame changed: {} bytes", w.0.len());
        }
    }
    assert_eq!(drops, 0, "frames dropped or cut");
}

#[test]
fn frames_of_every_size_come_whole_and_in_order() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "namespaces and packet sockets: run as root, as CI does"
    );
    let ns = Netns(format!("pal-ring-{}", std::process::id()));
    sh(&["ip", "netns", "add", &ns.0]);
    sh(&[
        "ip", "-n", &ns.0, "link", "add", "r0", "mtu", "9000", "type", "veth", "peer", "name",
        "r1", "mtu", "9000",
    ]);
    for i in ["r0", "r1"] {
        sh(&["ip", "-n", &ns.0, "link", "set", i, "up"]);
    }
    // The default ring: TPACKET_V2 slots of 2 KiB, the larger frames
    // read whole from the socket; a port with and without virtio
    // headers, and a split one (three sockets).
    check(exchange(&ns.0, Port::open_offload), true, true);
    check(exchange(&ns.0, Port::open), true, false);
    check(exchange(&ns.0, Port::open_split), false, true);
    // V3 blocks (PALISADE_RX_RING=blocks): the same. The variable is
    // read when a port opens, and no other thread runs meanwhile.
    std::env::set_var("PALISADE_RX_RING", "blocks");
    let v3 = exchange(&ns.0, Port::open_offload);
    std::env::remove_var("PALISADE_RX_RING");
    check(v3, true, true);
}
