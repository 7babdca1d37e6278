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

/// Send the four frames from `tx`, then read `rx` until they came (5 s
/// at most): what came, as (ethertype, length, segment size).
fn exchange(ns: &str) -> Vec<(u16, usize, Option<u16>, Vec<u8>)> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).unwrap();
        // SAFETY: setns on this thread only, with a namespace fd.
        assert_eq!(unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) }, 0);
        let rx = Port::open_offload("r0").expect("open r0");
        let tx = Port::open_offload("r1").expect("open r1");
        let none = VnetHdr::default().bytes();
        let (h, sp) = super_packet();
        tx.send_vnet(&none, &marked(1, 100)).unwrap();
        tx.send_vnet(&none, &marked(2, 6000)).unwrap();
        tx.send_vnet(&h.bytes(), &sp).unwrap();
        tx.send_vnet(&none, &marked(3, 200)).unwrap();
        let mut got = Vec::new();
        let t = Instant::now();
        while got.len() < 4 && t.elapsed() < Duration::from_secs(5) {
            let _ = wait_fds(&rx.fds(), Duration::from_millis(100));
            rx.recv_batch(|frame, gso| {
                let et = u16::from_be_bytes([frame[12], frame[13]]);
                // Only what the test sent (not the kernel's own IPv6
                // chatter on a new link).
                if et == 0x88b5 || (et == 0x0800 && frame[14 + 9] == 6) {
                    got.push((et, frame.len(), gso.map(|g| g.size), frame.to_vec()));
                }
            });
        }
        got
    })
    .join()
    .unwrap()
}

fn check(got: &[(u16, usize, Option<u16>, Vec<u8>)]) {
    let (_, sp) = super_packet();
    let shape: Vec<(u16, usize, Option<u16>)> = got.iter().map(|g| (g.0, g.1, g.2)).collect();
    assert_eq!(
        shape,
        vec![
            (0x88b5, 114, None),
            (0x88b5, 6014, None),
            (0x0800, sp.len(), Some(1400)),
            (0x88b5, 214, None),
        ]
    );
    assert_eq!(got[0].3, marked(1, 100));
    assert_eq!(got[1].3, marked(2, 6000));
    assert_eq!(&got[2].3[54..], &sp[54..], "the super-packet's payload");
    assert_eq!(got[3].3, marked(3, 200));
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
    // read whole from the socket.
    check(&exchange(&ns.0));
    // V3 blocks (PALISADE_RX_RING=blocks): the same frames. The variable
    // is read when a port opens; this test's other half runs after the
    // first's ports are closed.
    std::env::set_var("PALISADE_RX_RING", "blocks");
    let v3 = exchange(&ns.0);
    std::env::remove_var("PALISADE_RX_RING");
    check(&v3);
}
