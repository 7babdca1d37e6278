//! replay --log writes pflog records tshark decodes (rule, action,
//! direction, interface); --out holds the packets as they leave, translated
//! and with the RST/ICMP answers of `block return`, all checksums valid by
//! tshark's own verification.

use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use palisade_wire::build;

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("palisade-log-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A Linux cooked capture: (outgoing?, IP packet) per frame.
fn write_sll(path: &PathBuf, pkts: &[(bool, Vec<u8>)]) {
    let f = std::fs::File::create(path).unwrap();
    let h = pcap_file::pcap::PcapHeader {
        datalink: pcap_file::DataLink::LINUX_SLL,
        ..Default::default()
    };
    let mut w = pcap_file::pcap::PcapWriter::with_header(f, h).unwrap();
    for (i, (out, p)) in pkts.iter().enumerate() {
        let et: u16 = if p[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
        let mut fr = vec![
            0,
            if *out { 4 } else { 0 },
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
        ];
        fr.extend_from_slice(&et.to_be_bytes());
        fr.extend_from_slice(p);
        w.write_packet(&pcap_file::pcap::PcapPacket::new(
            Duration::from_millis(1000 + i as u64),
            fr.len() as u32,
            &fr,
        ))
        .unwrap();
    }
}

fn tshark(args: &[&str]) -> String {
    let o = Command::new("tshark")
        .args(args)
        .output()
        .expect("tshark (apt install tshark)");
    assert!(
        o.status.success(),
        "tshark {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const BAD: &str = "ip.checksum.status==0 || udp.checksum.status==0 || tcp.checksum.status==0 || icmp.checksum.status==0 || icmpv6.checksum.status==0";

fn bad_checksums(pcap: &str) -> String {
    tshark(&[
        "-r",
        pcap,
        "-o",
        "ip.check_checksum:TRUE",
        "-o",
        "udp.check_checksum:TRUE",
        "-o",
        "tcp.check_checksum:TRUE",
        "-Y",
        BAD,
    ])
}

#[test]
fn pflog_and_out_files_read_by_tshark() {
    let conf = tmp("pf.conf");
    std::fs::write(
        &conf,
        "block log all\n\
         block return in log on em0 proto tcp to port 23\n\
         block return in on em0 proto udp to port 69\n\
         match out on em0 inet from 10.0.0.0/24 nat-to 203.0.113.2\n\
         pass out log (all) on em0 proto udp to port 53\n",
    )
    .unwrap();
    let model = tmp("host.toml");
    std::fs::write(
        &model,
        "[[interface]]\nname = \"em0\"\naddresses = [\"203.0.113.2/24\"]\n",
    )
    .unwrap();
    // A DNS query from the inside (translated), its answer, an ICMP error
    // about it, a telnet SYN (RST answer), a TFTP packet (ICMP answer).
    let mut q = build::ip(
        ip("10.0.0.5"),
        ip("198.51.100.53"),
        17,
        64,
        &build::udp(5353, 53, b"query"),
    );
    // What the server will see (and quote): replay tells us the port.
    let capture = tmp("in.pcap");
    write_sll(&capture, &[(true, q.clone())]);
    let out0 = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["replay", "--json", "--iface", "em0", "-f"])
        .arg(&conf)
        .arg("--host-model")
        .arg(&model)
        .arg("--pcap")
        .arg(&capture)
        .output()
        .unwrap();
    let first: serde_json::Value =
        serde_json::from_slice(out0.stdout.split(|b| *b == b'\n').next().unwrap()).unwrap();
    let nat = first["nat"].as_str().expect("translated").to_string();
    let port: u16 = nat
        .split(" => ")
        .nth(1)
        .unwrap()
        .split(" -> ")
        .next()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let wire_q = build::ip(
        ip("203.0.113.2"),
        ip("198.51.100.53"),
        17,
        64,
        &build::udp(port, 53, b"query"),
    );
    let answer = build::ip(
        ip("198.51.100.53"),
        ip("203.0.113.2"),
        17,
        64,
        &build::udp(53, port, b"answer"),
    );
    let err = build::ip(
        ip("198.51.100.53"),
        ip("203.0.113.2"),
        1,
        64,
        &build::icmp(3, 3, [0; 4], &wire_q[..28]),
    );
    let telnet = build::ip(
        ip("198.51.100.9"),
        ip("203.0.113.2"),
        6,
        64,
        &build::tcp(4000, 23, 77, 0, 0x02, 1000, &[], b""),
    );
    let tftp = build::ip(
        ip("198.51.100.9"),
        ip("203.0.113.2"),
        17,
        64,
        &build::udp(4001, 69, b"rrq"),
    );
    q[0] = 0x45;
    write_sll(
        &capture,
        &[
            (true, q),
            (false, answer),
            (false, err),
            (false, telnet),
            (false, tftp),
        ],
    );
    let (log, out) = (tmp("log.pcap"), tmp("out.pcap"));
    let o = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["replay", "--json", "--iface", "em0", "-f"])
        .arg(&conf)
        .arg("--host-model")
        .arg(&model)
        .arg("--pcap")
        .arg(&capture)
        .arg("--log")
        .arg(&log)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let actions: Vec<&str> = lines
        .iter()
        .map(|l| l["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["pass", "pass", "pass", "block", "block"],
        "{lines:?}"
    );
    assert_eq!(
        lines[2]["state"], "match",
        "the ICMP error belongs to the DNS state"
    );
    assert!(lines[3]["generated"].as_bool().unwrap() && lines[4]["generated"].as_bool().unwrap());

    // pflog: rule number, action and direction as tshark decodes them.
    let fields = tshark(&[
        "-r",
        log.to_str().unwrap(),
        "-T",
        "fields",
        "-e",
        "pflog.rulenr",
        "-e",
        "pflog.action",
        "-e",
        "pflog.dir",
        "-e",
        "pflog.ifname",
    ]);
    let rows: Vec<&str> = fields.lines().collect();
    // query (rule 4, log all), answer (same state), telnet block (rule 1).
    assert_eq!(
        rows,
        ["4\t0\t2\tem0", "4\t0\t1\tem0", "1\t1\t1\tem0"],
        "{fields}"
    );
    let verbose = tshark(&["-r", log.to_str().unwrap(), "-V"]);
    assert!(
        verbose.contains("PF Log IPv4 pass on em0 by rule 4"),
        "{verbose}"
    );

    // --out: passed packets translated, answers generated; tshark finds no
    // bad checksum, and would find one if there were.
    let summary = tshark(&["-r", out.to_str().unwrap()]);
    assert_eq!(summary.lines().count(), 5, "{summary}");
    assert!(
        summary.contains("203.0.113.2") && summary.contains("10.0.0.5"),
        "{summary}"
    );
    assert!(
        summary.contains("RST") && summary.contains("Port unreachable"),
        "{summary}"
    );
    assert_eq!(
        bad_checksums(out.to_str().unwrap()),
        "",
        "bad checksums in --out"
    );
    let mut corrupt = std::fs::read(&out).unwrap();
    let n = corrupt.len();
    corrupt[n - 1] ^= 0x5a;
    let bad = tmp("corrupt.pcap");
    std::fs::write(&bad, corrupt).unwrap();
    assert_ne!(
        bad_checksums(bad.to_str().unwrap()),
        "",
        "the checksum check must be able to fail"
    );
}
