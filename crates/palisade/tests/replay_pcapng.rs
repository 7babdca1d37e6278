//! replay takes interface names from pcapng interface blocks and the
//! direction from each packet's flags, without --iface or --dir.

use std::borrow::Cow;
use std::net::IpAddr;
use std::process::Command;
use std::time::Duration;

use palisade_wire::build;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::PcapNgWriter;
use pcap_file::DataLink;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn pcapng_interfaces_and_directions() {
    let dir = std::env::temp_dir().join(format!("palisade-ng-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("two-ifaces.pcapng");
    {
        let f = std::fs::File::create(&pcap).unwrap();
        let mut w = PcapNgWriter::new(f).unwrap();
        for name in ["lan0", "wan0"] {
            w.write_pcapng_block(InterfaceDescriptionBlock {
                linktype: DataLink::RAW,
                snaplen: 65535,
                options: vec![InterfaceDescriptionOption::IfName(Cow::Owned(name.into()))],
            })
            .unwrap();
        }
        // A query arriving on lan0 (in), leaving on wan0 (out), and the
        // answer coming back on wan0 (in).
        let q = build::ip(
            ip("192.0.2.10"),
            ip("198.51.100.53"),
            17,
            64,
            &build::udp(5353, 53, b"q"),
        );
        let a = build::ip(
            ip("198.51.100.53"),
            ip("192.0.2.10"),
            17,
            64,
            &build::udp(53, 5353, b"a"),
        );
        for (iface, flags, p) in [(0u32, 1u32, &q), (1, 2, &q), (1, 1, &a)] {
            w.write_pcapng_block(EnhancedPacketBlock {
                interface_id: iface,
                timestamp: Duration::from_secs(1),
                original_len: p.len() as u32,
                data: Cow::Borrowed(p),
                options: vec![EnhancedPacketOption::Flags(flags)],
            })
            .unwrap();
        }
    }
    let conf = dir.join("pf.conf");
    std::fs::write(
        &conf,
        "block all\npass in on lan0 proto udp\npass out on wan0 proto udp\n",
    )
    .unwrap();
    let model = dir.join("host.toml");
    std::fs::write(&model, "").unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(["replay", "--json", "-f"])
        .arg(&conf)
        .arg("--host-model")
        .arg(&model)
        .arg("--pcap")
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<(String, String, String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["iface"].as_str().unwrap().into(),
                l["dir"].as_str().unwrap().into(),
                l["action"].as_str().unwrap().into(),
                l["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    let want = [
        ("lan0", "in", "pass", "new"),
        ("wan0", "out", "pass", "new"),
        ("wan0", "in", "pass", "match"),
    ];
    let want: Vec<(String, String, String, String)> = want
        .iter()
        .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(lines[0]["rule"], 1);
    assert_eq!(lines[1]["rule"], 2);
}
