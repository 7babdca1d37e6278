//! `palisade log --follow`: a pflog record (header and packet) as one
//! line, the way `tcpdump -n -e` prints pflog.

use palisade_filter::Reason;

/// Seconds of the day as HH:MM:SS.
pub fn hms(s: u64) -> String {
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// One pflog record (header and packet) as one line, the way
/// `tcpdump -n -e` prints pflog: rule, action, direction, interface, flow.
pub fn log_line(rec: &[u8]) -> String {
    use palisade_wire::pflog::{action, PflogHeader};
    let Some((h, n)) = PflogHeader::parse(rec) else {
        return "(unreadable pflog record)".into();
    };
    let ts = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = ts.as_secs() % 86400;
    let rule = if h.rulenr == u32::MAX {
        "-1".to_string()
    } else if h.ruleset.is_empty() {
        h.rulenr.to_string()
    } else {
        format!("{}.{}", h.rulenr, h.ruleset)
    };
    let sub = if h.subrulenr == u32::MAX {
        "0".to_string()
    } else {
        h.subrulenr.to_string()
    };
    let reason = Reason::from_code(h.reason).map_or("?", Reason::name);
    let act = match h.action {
        action::PASS => "pass",
        action::DROP => "block",
        action::MATCH => "match",
        _ => "other",
    };
    let dir = if h.dir == 2 { "out" } else { "in" };
    let pkt = &rec[n.min(rec.len())..];
    let what = match palisade_wire::parse_ip(pkt) {
        Err(_) => format!("malformed packet, {} bytes", pkt.len()),
        Ok(i) => match i.l4 {
            palisade_wire::L4::Tcp {
                sport,
                dport,
                flags,
                ..
            } => {
                let mut f = String::new();
                for (bit, c) in [
                    (0x02, 'S'),
                    (0x01, 'F'),
                    (0x04, 'R'),
                    (0x08, 'P'),
                    (0x10, '.'),
                ] {
                    if flags & bit != 0 {
                        f.push(c);
                    }
                }
                format!(
                    "{}.{sport} > {}.{dport}: Flags [{f}], length {}",
                    i.src, i.dst, i.len
                )
            }
            palisade_wire::L4::Udp { sport, dport } => {
                format!(
                    "{}.{sport} > {}.{dport}: UDP, length {}",
                    i.src, i.dst, i.len
                )
            }
            palisade_wire::L4::Icmp { ty, code, .. } => {
                format!(
                    "{} > {}: ICMP type {ty} code {code}, length {}",
                    i.src, i.dst, i.len
                )
            }
            palisade_wire::L4::Icmp6 { ty, code, .. } => {
                format!(
                    "{} > {}: ICMP6 type {ty} code {code}, length {}",
                    i.src, i.dst, i.len
                )
            }
            palisade_wire::L4::None => format!("{} > {}: length {}", i.src, i.dst, i.len),
        },
    };
    format!(
        "{}.{:06} rule {rule}/{sub}({reason}): {act} {dir} on {}: {what}",
        hms(secs),
        ts.subsec_micros(),
        h.ifname
    )
}
