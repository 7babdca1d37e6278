#![allow(dead_code)]
// Shared by the packet-path fuzz targets: a filter with states, NAT,
// anchors and tables, kept across inputs so states accumulate.

use std::sync::{Arc, Mutex, OnceLock};

use palisade_conf::host::HostModel;
use palisade_conf::ir::Direction;
use palisade_conf::{parse_bytes, ParseOptions};
use palisade_filter::{Engine, Filter, VerdictAction};
use palisade_wire::build::checksums_ok;

const RULES: &str = "
table <bad> { 198.51.100.0/25 !198.51.100.7 2001:db8:bad::/48 }
block return log all
block in quick from <bad>
match out on em0 inet from 10.0.0.0/8 nat-to (em0:0)
match out on em0 inet6 from 2001:db8:1::/64 nat-to 2001:db8::2
pass in on em0 proto tcp to port { 22 80 } rdr-to 10.0.0.10 port 8080 keep state (max 1000, tcp.established 60)
pass out keep state (if-bound)
pass in proto udp keep state (sloppy)
pass in inet proto icmp icmp-type echoreq
pass in inet6 proto icmp6
pass in on em0 proto tcp to port 443 synproxy state
pass in on em0 proto tcp to port 8443 rdr-to 10.0.0.11 port 443 synproxy state
anchor \"a\" in on em1 {
  pass quick proto tcp from any to any flags S/SA modulate state
  block return-rst proto tcp to port 23
}
";

/// A filter on em0 and em1 with `rules`, at most 10,000 states.
fn make_filter(rules: &str) -> Filter {
    let host = HostModel::from_toml(
        "[[interface]]\nname = \"em0\"\naddresses = [\"203.0.113.2/24\", \"2001:db8::2/64\"]\n\
         [[interface]]\nname = \"em1\"\naddresses = [\"10.0.0.1/24\", \"2001:db8:1::1/64\"]\n",
    )
    .expect("host model");
    let out = parse_bytes("fuzz", None, rules.as_bytes().to_vec(), &ParseOptions { host: host.clone(), ..Default::default() });
    assert_eq!(out.errors, 0, "{:?}", out.stderr);
    let mut f = Filter::new(Arc::new(Engine::new(&out.config, host)), &out.config, 7);
    f.states.limit = 10_000;
    f
}

fn filter() -> &'static Mutex<Filter> {
    static F: OnceLock<Mutex<Filter>> = OnceLock::new();
    F.get_or_init(|| Mutex::new(make_filter(RULES)))
}

/// Run one IP packet through the filter on both interfaces and directions;
/// check what must hold whatever the input.
pub fn run_ip(data: &[u8]) {
    let mut f = filter().lock().unwrap_or_else(|e| e.into_inner());
    let valid_in = checksums_ok(data);
    for (i, (iface, dir)) in [("em0", Direction::In), ("em1", Direction::Out), ("em1", Direction::In), ("em0", Direction::Out)]
        .into_iter()
        .enumerate()
    {
        let mut p = data.to_vec();
        let now = (data.len() as u64) * 7 + i as u64;
        let d = f.process_with(&mut p, iface, dir, now, data.len() as u32);
        if d.action == VerdictAction::Pass && valid_in {
            assert!(checksums_ok(&p), "a valid packet left with a bad checksum: {d:?}");
        }
        for g in d.generated.iter().chain(&d.generated_out) {
            assert!(checksums_ok(g), "generated packet with a bad checksum");
        }
        assert_eq!(p.len(), data.len(), "rewriting must not change the length");
    }
}

/// The same rules behind `set syncookies always`.
fn cookie_filter() -> &'static Mutex<Filter> {
    static F: OnceLock<Mutex<Filter>> = OnceLock::new();
    F.get_or_init(|| {
        let f = make_filter(&format!("set syncookies always\n{RULES}"));
        assert!(f.cookies.is_active());
        Mutex::new(f)
    })
}

/// One packet through the filter, checked as `run_ip` checks; what it
/// made (to the sender, and to send on).
fn checked(f: &mut Filter, p: &mut [u8], iface: &str, dir: Direction, now: u64) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let valid_in = checksums_ok(p);
    let len = p.len();
    let d = f.process_with(p, iface, dir, now, len as u32);
    if d.action == VerdictAction::Pass && valid_in {
        assert!(checksums_ok(p), "a valid packet left with a bad checksum: {d:?}");
    }
    for g in d.generated.iter().chain(&d.generated_out) {
        assert!(checksums_ok(g), "generated packet with a bad checksum: {d:?}");
    }
    assert_eq!(p.len(), len, "rewriting must not change the length");
    (d.generated, d.generated_out)
}

/// A TCP packet's offset of its header and its sequence number.
fn tcp_at(p: &[u8]) -> Option<(usize, u32)> {
    let info = palisade_wire::parse_ip(p).ok()?;
    if info.proto != 6 || info.frag.is_some() || info.l4_offset + 20 > p.len().min(info.len) {
        return None;
    }
    let o = info.l4_offset;
    Some((o, u32::from_be_bytes([p[o + 4], p[o + 5], p[o + 6], p[o + 7]])))
}

/// `p` (a TCP packet) with new sequence and acknowledgement numbers and
/// flags, its checksum computed again.
fn renumbered(p: &[u8], seq: u32, ack: u32, flags: u8) -> Option<Vec<u8>> {
    let (o, _) = tcp_at(p)?;
    let mut q = p.to_vec();
    q[o + 4..o + 8].copy_from_slice(&seq.to_be_bytes());
    q[o + 8..o + 12].copy_from_slice(&ack.to_be_bytes());
    q[o + 13] = flags;
    palisade_wire::build::complete_l4_checksum(&mut q).then_some(q)
}

/// A hostile client's SYN (`data`), its ACK returning the cookie, the
/// server's SYN+ACK and the client's data; `sel` varies the server's
/// numbers and what the client keeps of its flags.
pub fn run_cookie(data: &[u8], sel: u8) {
    let mut f = cookie_filter().lock().unwrap_or_else(|e| e.into_inner());
    cookie_steps(&mut f, data, sel);
    // Each input starts from an empty table: states kept from earlier
    // inputs (limits, `max`, a clock that goes back) would stop later
    // inputs before their cookie's ACK.
    let ids: Vec<u64> = f.states.iter().map(|s| s.id).collect();
    for id in ids {
        f.states.remove(id);
    }
}

fn cookie_steps(f: &mut Filter, data: &[u8], sel: u8) {
    let now = (data.len() as u64) * 11 + sel as u64;
    let mut p = data.to_vec();
    let (to_client, _) = checked(f, &mut p, "em0", Direction::In, now);
    let Some((o, cseq)) = tcp_at(data) else {
        return;
    };
    for synack in to_client {
        let Some((_, cookie)) = tcp_at(&synack) else {
            continue;
        };
        // The ACK: the input's other flags kept when `sel` says so.
        let keep = if sel & 2 != 0 { data[o + 13] & !0x12 } else { 0 };
        let Some(mut ack) = renumbered(data, cseq.wrapping_add(1), cookie.wrapping_add(1), 0x10 | keep) else {
            continue;
        };
        let (_, to_server) = checked(f, &mut ack, "em0", Direction::In, now + 1);
        for syn in to_server {
            let mut out = syn.clone();
            checked(f, &mut out, "em1", Direction::Out, now + 1);
            // The server's answer: the SYN turned round, numbers from the input.
            let Some((so, sseq)) = tcp_at(&syn) else {
                continue;
            };
            let mut sa = syn.clone();
            let (a, b) = if sa[0] >> 4 == 4 { (12, 16) } else { (8, 24) };
            let n = b - a;
            let (src, dst) = (sa[a..a + n].to_vec(), sa[b..b + n].to_vec());
            sa[a..a + n].copy_from_slice(&dst);
            sa[b..b + n].copy_from_slice(&src);
            let (sp, dp) = ([sa[so], sa[so + 1]], [sa[so + 2], sa[so + 3]]);
            sa[so..so + 2].copy_from_slice(&dp);
            sa[so + 2..so + 4].copy_from_slice(&sp);
            let win = u16::from_be_bytes([data[o + 14], data[o + 15]]);
            sa[so + 14..so + 16].copy_from_slice(&win.to_be_bytes());
            let sisn = cseq.rotate_left(sel as u32 % 32) ^ cookie;
            let ackno = if sel & 4 != 0 { sseq.wrapping_add(1) } else { sseq ^ sel as u32 };
            let Some(mut sa) = renumbered(&sa, sisn, ackno, 0x12) else {
                continue;
            };
            checked(f, &mut sa, "em1", Direction::In, now + 2);
            checked(f, &mut sa, "em0", Direction::Out, now + 2);
            // The client's data: the input again, as an ACK after the cookie.
            if let Some(mut more) = renumbered(data, cseq.wrapping_add(1), cookie.wrapping_add(1), 0x18 | keep) {
                checked(f, &mut more, "em0", Direction::In, now + 3);
                checked(f, &mut more, "em1", Direction::Out, now + 3);
            }
        }
    }
}
