//! `palisade replay`: run a capture through a pf.conf on a virtual clock
//! taken from the capture's timestamps and report, per packet, what the
//! filter decided and why.
//!
//! Input: pcap or pcapng. Link types: Ethernet (with 802.1Q/802.1ad tags),
//! raw IP, BSD loopback, Linux cooked capture v1 and v2. Interface and
//! direction come from pcapng interface blocks and packet flags, from the
//! packet type of Linux cooked captures (`tcpdump -i any`), or from
//! `--iface`/`--dir`. Frames that are not IPv4/IPv6 are reported and skipped
//! (with `--json`, as `"action": "skip"`).

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapReader, PcapWriter};
use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketOption;
use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionOption;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::DataLink;
use serde::Serialize;

use palisade_conf::host::HostModel;
use palisade_conf::ir::Direction;
use palisade_conf::{parse_input, Input, ParseOptions};
use palisade_filter::{Engine, Filter, VerdictAction};

pub struct ReplayArgs {
    pub rules: PathBuf,
    pub host: HostModel,
    pub pcap: PathBuf,
    pub iface: Option<String>,
    pub dir: Option<Direction>,
    pub out: Option<PathBuf>,
    /// pflog capture (DLT_PFLOG) of the packets rules asked to log.
    pub log: Option<PathBuf>,
    pub json: bool,
}

/// One captured frame, with what the capture says about where it was seen.
struct Frame {
    ts: Duration,
    linktype: DataLink,
    data: Vec<u8>,
    iface: Option<String>,
    dir: Option<Direction>,
}

#[derive(Serialize)]
struct Line<'a> {
    frame: usize,
    time: f64,
    iface: &'a str,
    dir: &'a str,
    proto: u8,
    src: String,
    dst: String,
    action: &'a str,
    rule: Option<u32>,
    anchor: Option<&'a str>,
    state: &'a str,
    state_id: Option<String>,
    reason: &'a str,
    nat: Option<String>,
    generated: bool,
}

fn read_frames(path: &Path) -> Result<Vec<Frame>, String> {
    let mut f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut magic = [0u8; 4];
    f.read_exact(&mut magic)
        .map_err(|e| format!("{}: not a capture file: {e}", path.display()))?;
    let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let r = BufReader::new(f);
    let mut frames = Vec::new();
    if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
        let mut ng =
            PcapNgReader::new(r).map_err(|e| format!("{}: bad pcapng: {e}", path.display()))?;
        let mut ifaces: Vec<(DataLink, Option<String>)> = Vec::new();
        while let Some(b) = ng.next_block() {
            let b = b.map_err(|e| format!("{}: bad pcapng block: {e}", path.display()))?;
            match b {
                Block::InterfaceDescription(idb) => {
                    let name = idb.options.iter().find_map(|o| match o {
                        InterfaceDescriptionOption::IfName(n) => Some(n.to_string()),
                        _ => None,
                    });
                    ifaces.push((idb.linktype, name));
                }
                Block::EnhancedPacket(epb) => {
                    let (lt, name) =
                        ifaces
                            .get(epb.interface_id as usize)
                            .cloned()
                            .ok_or_else(|| {
                                format!("{}: packet before its interface block", path.display())
                            })?;
                    let dir = epb.options.iter().find_map(|o| match o {
                        EnhancedPacketOption::Flags(fl) => match fl & 3 {
                            1 => Some(Direction::In),
                            2 => Some(Direction::Out),
                            _ => None,
                        },
                        _ => None,
                    });
                    frames.push(Frame {
                        ts: epb.timestamp,
                        linktype: lt,
                        data: epb.data.to_vec(),
                        iface: name,
                        dir,
                    });
                }
                Block::SimplePacket(spb) => {
                    let (lt, name) = ifaces.first().cloned().ok_or_else(|| {
                        format!("{}: packet before its interface block", path.display())
                    })?;
                    frames.push(Frame {
                        ts: Duration::ZERO,
                        linktype: lt,
                        data: spb.data.to_vec(),
                        iface: name,
                        dir: None,
                    });
                }
                _ => {}
            }
        }
    } else {
        let mut pr =
            PcapReader::new(r).map_err(|e| format!("{}: bad pcap: {e}", path.display()))?;
        let lt = pr.header().datalink;
        while let Some(p) = pr.next_packet() {
            let p = p.map_err(|e| format!("{}: bad pcap record: {e}", path.display()))?;
            frames.push(Frame {
                ts: p.timestamp,
                linktype: lt,
                data: p.data.to_vec(),
                iface: None,
                dir: None,
            });
        }
    }
    Ok(frames)
}

/// The IP packet inside a frame, and the direction the link layer records.
fn ip_of(f: &Frame) -> Option<(&[u8], Option<Direction>)> {
    let d = &f.data;
    let ethertype_ip = |t: u16| t == 0x0800 || t == 0x86dd;
    match f.linktype {
        DataLink::ETHERNET => palisade_wire::link::ip_in_ethernet(d).map(|p| (p, None)),
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => Some((&d[..], None)),
        DataLink::NULL | DataLink::LOOP => d.get(4..).map(|x| (x, None)),
        DataLink::LINUX_SLL => {
            let ptype = u16::from_be_bytes([*d.first()?, *d.get(1)?]);
            let t = u16::from_be_bytes([*d.get(14)?, *d.get(15)?]);
            let dir = if ptype == 4 {
                Direction::Out
            } else {
                Direction::In
            };
            ethertype_ip(t).then(|| (&d[16..], Some(dir)))
        }
        DataLink::LINUX_SLL2 => {
            let t = u16::from_be_bytes([*d.first()?, *d.get(1)?]);
            let ptype = *d.get(10)?;
            let dir = if ptype == 4 {
                Direction::Out
            } else {
                Direction::In
            };
            ethertype_ip(t).then(|| (&d[20..], Some(dir)))
        }
        _ => None,
    }
}

pub fn run(a: ReplayArgs) -> Result<bool, String> {
    let opts = ParseOptions {
        host: a.host.clone(),
        ..Default::default()
    };
    let parsed = parse_input(Input::File(&a.rules), &opts);
    if parsed.errors > 0 {
        for l in &parsed.stderr {
            eprintln!("{l}");
        }
        return Err(format!("{}: ruleset not loaded", a.rules.display()));
    }
    let engine = Arc::new(Engine::new(&parsed.config, a.host.clone()));
    let mut filter = Filter::new(engine, &parsed.config, 1);
    // `set fingerprints "FILE"` replaces the built-in OS fingerprints.
    if let Some(db) = palisade_filter::osfp::FingerprintDb::from_options(&parsed.config.options)
        .map_err(|e| e.to_string())?
    {
        filter.set_fingerprints(db);
    }
    let frames = read_frames(&a.pcap)?;
    let mut out = match &a.out {
        Some(p) => {
            let f = File::create(p).map_err(|e| format!("{}: {e}", p.display()))?;
            let h = PcapHeader {
                datalink: DataLink::RAW,
                ..Default::default()
            };
            Some(
                PcapWriter::with_header(BufWriter::new(f), h)
                    .map_err(|e| format!("{}: {e}", p.display()))?,
            )
        }
        None => None,
    };
    let mut log = match &a.log {
        Some(p) => {
            let f = File::create(p).map_err(|e| format!("{}: {e}", p.display()))?;
            let h = PcapHeader {
                datalink: DataLink::PFLOG,
                ..Default::default()
            };
            Some(
                PcapWriter::with_header(BufWriter::new(f), h)
                    .map_err(|e| format!("{}: {e}", p.display()))?,
            )
        }
        None => None,
    };
    let stdout = std::io::stdout();
    let mut so = BufWriter::new(stdout.lock());
    let t0 = frames.first().map(|f| f.ts).unwrap_or_default();
    for (i, fr) in frames.iter().enumerate() {
        let n = i + 1;
        let Some((ip, link_dir)) = ip_of(fr) else {
            if a.json {
                // Every frame gets its line, as in the text output.
                let line = serde_json::json!({
                    "frame": n,
                    "time": fr.ts.saturating_sub(t0).as_secs_f64(),
                    "action": "skip",
                    "reason": "not IPv4/IPv6",
                });
                let _ = writeln!(so, "{line}");
            } else {
                let _ = writeln!(so, "frame {n}: not IPv4/IPv6, skipped");
            }
            continue;
        };
        let iface = fr
            .iface
            .clone()
            .or_else(|| a.iface.clone())
            .ok_or_else(|| {
                format!("frame {n}: the capture does not name the interface: give --iface")
            })?;
        let dir = fr.dir.or(link_dir).or(a.dir).ok_or_else(|| {
            format!("frame {n}: the capture does not say the direction: give --dir")
        })?;
        let now = fr.ts.saturating_sub(t0).as_millis() as u64;
        // Deterministic randomness for `probability`: the frame number.
        let mut pkt = ip.to_vec();
        let d = filter.process_with(&mut pkt, &iface, dir, now, n as u32);
        if let Some(w) = log.as_mut() {
            let engine = filter.engine_arc();
            let caller = |p: &str| engine.anchor_caller(p);
            for rec in palisade_filter::filter::pflog_records(&d, ip, &iface, dir, &caller) {
                w.write_packet(&PcapPacket::new(fr.ts, rec.len() as u32, &rec))
                    .map_err(|e| format!("writing log: {e}"))?;
            }
        }
        let ip = &pkt[..];
        let passed = d.action == VerdictAction::Pass;
        if let Some(w) = out.as_mut() {
            let mut write = |data: &[u8]| -> Result<(), String> {
                w.write_packet(&PcapPacket::new(fr.ts, data.len() as u32, data))
                    .map(|_| ())
                    .map_err(|e| format!("writing output: {e}"))
            };
            if passed {
                let len = palisade_wire::parse_ip(ip)
                    .map(|i| i.len)
                    .unwrap_or(ip.len());
                write(&ip[..len.min(ip.len())])?;
            }
            for g in d.generated.iter().chain(&d.generated_out) {
                write(g)?;
            }
        }
        let dir_s = if dir == Direction::In { "in" } else { "out" };
        let action = if d.held {
            "hold"
        } else if passed {
            "pass"
        } else {
            "block"
        };
        if a.json {
            let (proto, src, dst) = match palisade_wire::parse_ip(ip) {
                Ok(i) => {
                    let ep = |a: std::net::IpAddr, p: Option<u16>| match p {
                        Some(p) if a.is_ipv6() => format!("[{a}]:{p}"),
                        Some(p) => format!("{a}:{p}"),
                        None => a.to_string(),
                    };
                    (i.proto, ep(i.src, i.sport()), ep(i.dst, i.dport()))
                }
                Err(_) => (0, String::new(), String::new()),
            };
            let line = Line {
                frame: n,
                time: fr.ts.saturating_sub(t0).as_secs_f64(),
                iface: &iface,
                dir: dir_s,
                proto,
                src,
                dst,
                action,
                rule: d.rule.as_ref().map(|r| r.nr),
                anchor: d
                    .rule
                    .as_ref()
                    .map(|r| r.anchor.as_str())
                    .filter(|a| !a.is_empty()),
                state: d.state.name(),
                state_id: d.state_id.map(|x| format!("{x:016x}")),
                reason: d.reason.name(),
                nat: d.nat.as_ref().map(|(a, b)| {
                    let ep = |ip: std::net::IpAddr, p: u16| {
                        if ip.is_ipv6() {
                            format!("[{ip}]:{p}")
                        } else {
                            format!("{ip}:{p}")
                        }
                    };
                    format!(
                        "{} -> {} => {} -> {}",
                        ep(a.src, a.sport),
                        ep(a.dst, a.dport),
                        ep(b.src, b.sport),
                        ep(b.dst, b.dport)
                    )
                }),
                generated: !d.generated.is_empty() || !d.generated_out.is_empty(),
            };
            let _ = serde_json::to_writer(&mut so, &line);
            let _ = writeln!(so);
        } else {
            let rule = match &d.rule {
                Some(r) if r.anchor.is_empty() => format!("@{}", r.nr),
                Some(r) => format!("{}@{}", r.anchor, r.nr),
                None => "default".into(),
            };
            let _ = writeln!(
                so,
                "frame {n}: {iface} {dir_s} {action} rule {rule} state {} reason {}{}",
                d.state.name(),
                d.reason,
                if !d.generated.is_empty() || !d.generated_out.is_empty() {
                    " (answered)"
                } else {
                    ""
                }
            );
        }
    }
    let _ = so.flush();
    Ok(true)
}
