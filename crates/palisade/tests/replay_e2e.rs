//! A real TCP download between two namespaces, captured with tcpdump,
//! replayed through a pf.conf: every packet of the connection must be
//! matched to its state. Then the capture is tampered with (an
//! out-of-window RST, a segment beyond the window, a stray SYN/ACK) and
//! those must be blocked with reason state-mismatch.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

fn palisade() -> &'static str {
    env!("CARGO_BIN_EXE_palisade")
}

/// A fresh path for `name`: the tests of this file run in parallel in one
/// process, so each call gets its own (they once shared dl4.pcap).
fn tmp(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("palisade-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(format!("{n}-{name}"))
}

fn replay(rules: &str, pcap: &PathBuf, extra: &[&str]) -> Vec<serde_json::Value> {
    let conf = tmp("replay.conf");
    std::fs::write(&conf, rules).unwrap();
    let model = tmp("host.toml");
    std::fs::write(
        &model,
        "[[interface]]\nname = \"em0\"\naddresses = [\"198.18.0.1/24\", \"2001:db8::1/64\"]\n",
    )
    .unwrap();
    let o = Command::new(palisade())
        .args(["replay", "--json", "--host-model"])
        .arg(&model)
        .arg("-f")
        .arg(&conf)
        .arg("--pcap")
        .arg(pcap)
        .args(["--iface", "em0"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

/// Capture a download of `size` bytes from server to client over `family`.
fn capture_download(size: usize, v6: bool) -> PathBuf {
    let ns = Netns::new("replay", 2);
    let (c, s) = (ns.names[0].clone(), ns.names[1].clone());
    ns.veth(&c, "cli0", &s, "srv0");
    let (caddr, saddr, url_host) = if v6 {
        ("2001:db8::1/64", "2001:db8::2/64", "[2001:db8::2]")
    } else {
        ("198.18.0.1/24", "198.18.0.2/24", "198.18.0.2")
    };
    ns.exec(&c, &["ip", "addr", "add", caddr, "dev", "cli0", "nodad"]);
    ns.exec(&s, &["ip", "addr", "add", saddr, "dev", "srv0", "nodad"]);
    let bind = if v6 {
        "[2001:db8::2]:8080"
    } else {
        "198.18.0.2:8080"
    };
    let listener = in_netns(&s, move || {
        TcpListener::bind(bind).expect("bind in namespace")
    })
    .join()
    .unwrap();
    listener.set_nonblocking(false).unwrap();
    let server = std::thread::spawn(move || {
        let (mut sock, _) = listener.accept().expect("accept");
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 1024];
        let _ = sock.read(&mut buf);
        let body = vec![b'p'; size];
        let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {size}\r\n\r\n");
        sock.write_all(head.as_bytes()).unwrap();
        sock.write_all(&body).unwrap();
    });
    let pcap = tmp(if v6 { "dl6.pcap" } else { "dl4.pcap" });
    let mut dump = ns.spawn(
        &c,
        &[
            "tcpdump",
            "-i",
            "any",
            "-U",
            "-n",
            "-w",
            pcap.to_str().unwrap(),
            "tcp port 8080",
        ],
    );
    wait_until("tcpdump to start", Duration::from_secs(10), || {
        pcap.exists() && pcap.metadata().map(|m| m.len() > 0).unwrap_or(false)
    });
    std::thread::sleep(Duration::from_millis(300));
    let out = ns.exec(
        &c,
        &[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{size_download}",
            "--max-time",
            "10",
            &format!("http://{url_host}:8080/"),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), size.to_string());
    server.join().unwrap();
    // tcpdump gets packets a ring block at a time, a block when it is full
    // or after its timeout (1 s): a short download's packets sit in an
    // unfinished block, lost if SIGTERM comes first.
    std::thread::sleep(Duration::from_millis(1500));
    let _ = dump.stop();
    pcap
}

const RULES: &str = "block all\npass out on em0 proto tcp to port 8080\n";

fn assert_all_matched(lines: &[serde_json::Value]) {
    // (With the hosts' offloads on, PALISADE_TEST_OFFLOADS=on, the capture
    // holds their super-packets: a few dozen packets, not hundreds.)
    assert!(lines.len() > 12, "only {} packets captured", lines.len());
    assert_eq!(lines[0]["state"], "new", "{}", lines[0]);
    assert_eq!(lines[0]["rule"], 1);
    for l in &lines[1..] {
        assert_eq!(l["action"], "pass", "{l}");
        assert_eq!(l["state"], "match", "{l}");
    }
}

#[test]
fn real_download_replays_with_every_packet_in_its_state() {
    require_root();
    for v6 in [false, true] {
        let pcap = capture_download(300_000, v6);
        let lines = replay(RULES, &pcap, &[]);
        assert_all_matched(&lines);
        // Both directions were seen, as the cooked capture records them.
        assert!(lines.iter().any(|l| l["dir"] == "in"));
        assert!(lines.iter().any(|l| l["dir"] == "out"));
    }
}

/// Rewrite a captured download with injected bad segments, via the raw IP
/// output of replay and the wire builder.
#[test]
fn injected_bad_segments_are_state_mismatches() {
    require_root();
    let pcap = capture_download(50_000, false);
    // Replay once to get the raw IP packets (`--out` writes what passed).
    let raw = tmp("raw.pcap");
    let lines = replay(RULES, &pcap, &["--out", raw.to_str().unwrap()]);
    assert_all_matched(&lines);
    let f = std::fs::File::open(&raw).unwrap();
    let mut r = pcap_file::pcap::PcapReader::new(f).unwrap();
    let mut pkts: Vec<(Duration, Vec<u8>)> = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.unwrap();
        pkts.push((p.timestamp, p.data.to_vec()));
    }
    // Find the server's first data segment to copy its addressing.
    let (ts, seg) = pkts
        .iter()
        .find(|(_, p)| {
            let i = palisade_wire::parse_ip(p).unwrap();
            i.sport() == Some(8080) && i.len > i.l4_offset + 32
        })
        .cloned()
        .unwrap();
    let i = palisade_wire::parse_ip(&seg).unwrap();
    let palisade_wire::L4::Tcp { seq, ack, .. } = i.l4 else {
        panic!()
    };
    let mk = |seq: u32, ack: u32, flags: u8, data: &[u8]| {
        palisade_wire::build::ip(
            i.src,
            i.dst,
            6,
            64,
            &palisade_wire::build::tcp(8080, i.dport().unwrap(), seq, ack, flags, 500, &[], data),
        )
    };
    let bad = [
        mk(seq.wrapping_add(40_000_000), 0, 0x04, b""), // RST far outside
        mk(seq.wrapping_add(3_000_000), ack, 0x10, b"beyond"), // beyond the window
        mk(0x1234_5678, ack.wrapping_add(900_000), 0x12, b""), // stray SYN/ACK
    ];
    // Insert them right after that segment; they arrive from the server.
    let pos = pkts.iter().position(|(_, p)| *p == seg).unwrap() + 1;
    for (k, b) in bad.iter().enumerate() {
        pkts.insert(pos + k, (ts, b.clone()));
    }
    // Write it as a Linux cooked capture, which records each packet's
    // direction: outgoing (4) from the client, to-us (0) from the server.
    let tampered = tmp("tampered.pcap");
    {
        let f = std::fs::File::create(&tampered).unwrap();
        let h = pcap_file::pcap::PcapHeader {
            datalink: pcap_file::DataLink::LINUX_SLL,
            ..Default::default()
        };
        let mut w = pcap_file::pcap::PcapWriter::with_header(f, h).unwrap();
        for (t, p) in &pkts {
            let from_client = palisade_wire::parse_ip(p).unwrap().src == i.dst;
            let mut fr = vec![
                0,
                if from_client { 4 } else { 0 },
                0,
                1,
                0,
                6,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0,
                0x08,
                0x00,
            ];
            fr.extend_from_slice(p);
            w.write_packet(&pcap_file::pcap::PcapPacket::new(*t, fr.len() as u32, &fr))
                .unwrap();
        }
    }
    let lines = replay(RULES, &tampered, &[]);
    let mut mismatches = 0;
    for (k, line) in lines.iter().enumerate() {
        if k >= pos && k < pos + 3 {
            assert_eq!(line["action"], "block", "{line}");
            assert_eq!(line["reason"], "state-mismatch", "{line}");
            mismatches += 1;
        } else {
            assert_eq!(line["action"], "pass", "{line}");
            assert_eq!(
                line["state"],
                if k == 0 { "new" } else { "match" },
                "{line}"
            );
        }
    }
    assert_eq!(mismatches, 3);
}

/// `--json` gives every frame its line: one that is not IP says it was
/// skipped, as the text output does (it was silently left out).
#[test]
fn json_reports_skipped_frames() {
    use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
    let pcap = tmp("nonip.pcap");
    let f = std::fs::File::create(&pcap).unwrap();
    let mut w = PcapWriter::with_header(
        f,
        PcapHeader {
            datalink: pcap_file::DataLink::ETHERNET,
            ..Default::default()
        },
    )
    .unwrap();
    let eth = |ethertype: u16, payload: &[u8]| {
        let mut fr = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        fr.extend_from_slice(&ethertype.to_be_bytes());
        fr.extend_from_slice(payload);
        fr
    };
    let udp = palisade_wire::build::ip(
        "198.18.0.5".parse().unwrap(),
        "198.18.0.1".parse().unwrap(),
        17,
        64,
        &palisade_wire::build::udp(1000, 53, b"q"),
    );
    for (i, fr) in [eth(0x0806, &[0u8; 28]), eth(0x0800, &udp)]
        .iter()
        .enumerate()
    {
        let ts = std::time::Duration::from_millis(i as u64);
        w.write_packet(&PcapPacket::new(ts, fr.len() as u32, fr))
            .unwrap();
    }
    drop(w);
    let lines = replay("pass all\n", &pcap, &["--dir", "in"]);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["frame"], 1);
    assert_eq!(lines[0]["action"], "skip");
    assert_eq!(lines[0]["reason"], "not IPv4/IPv6");
    assert_eq!(lines[1]["frame"], 2);
    assert_eq!(lines[1]["action"], "pass");
}
