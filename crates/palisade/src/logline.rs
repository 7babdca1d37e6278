//! `palisade log --follow`: a pflog record (header and packet) as one
//! line, the way `tcpdump -n -e` prints pflog.

use palisade_filter::Reason;

/// Seconds of the day as HH:MM:SS.
pub fn hms(s: u64) -> String {
    format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// One pflog record (header and packet) as one line, the way
/// `tcpdump -n -e` prints pflog: rule, action, direction, interface, flow.
#[cfg(test)]
pub fn log_line(rec: &[u8]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    log_line_at(now, rec)
}

/// As `log_line`, for a record logged at `ts` (since the Unix epoch).
pub fn log_line_at(ts: std::time::Duration, rec: &[u8]) -> String {
    use palisade_wire::pflog::{action, PflogHeader};
    let Some((h, n)) = PflogHeader::parse(rec) else {
        return "(unreadable pflog record)".into();
    };
    let secs = ts.as_secs() % 86400;
    // As tcpdump prints it: `rule N/` for a rule of the main ruleset,
    // `rule N.ANCHOR.M/` for rule M of an anchor called by rule N; then
    // the reason's code and name.
    let nr = |n: u32| {
        if n == u32::MAX {
            "-1".to_string()
        } else {
            n.to_string()
        }
    };
    let rule = if h.subrulenr == u32::MAX {
        nr(h.rulenr)
    } else {
        format!("{}.{}.{}", nr(h.rulenr), h.ruleset, h.subrulenr)
    };
    let sub = h.reason;
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
        // `length` as tcpdump prints it: TCP's and UDP's payload, the
        // whole ICMP message, else the IP datagram.
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
                let end = i.len.min(pkt.len());
                let hl = pkt
                    .get(i.l4_offset + 12)
                    .map_or(20, |b| (*b >> 4) as usize * 4);
                format!(
                    "{}.{sport} > {}.{dport}: Flags [{f}], length {}",
                    i.src,
                    i.dst,
                    end.saturating_sub(i.l4_offset + hl)
                )
            }
            palisade_wire::L4::Udp { sport, dport } => {
                // The UDP header's own length, as tcpdump reads it.
                let ulen = pkt
                    .get(i.l4_offset + 4..i.l4_offset + 6)
                    .map_or(8, |b| u16::from_be_bytes([b[0], b[1]]) as usize);
                format!(
                    "{}.{sport} > {}.{dport}: UDP, length {}",
                    i.src,
                    i.dst,
                    ulen.saturating_sub(8)
                )
            }
            palisade_wire::L4::Icmp { ty, code, .. } => {
                format!(
                    "{} > {}: ICMP type {ty} code {code}, length {}",
                    i.src,
                    i.dst,
                    i.len.saturating_sub(i.l4_offset)
                )
            }
            palisade_wire::L4::Icmp6 { ty, code, .. } => {
                format!(
                    "{} > {}: ICMP6 type {ty} code {code}, length {}",
                    i.src,
                    i.dst,
                    i.len.saturating_sub(i.l4_offset)
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

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_wire::pflog::{action, PflogHeader};

    fn line(ruleset: &str, rulenr: u32, subrulenr: u32, reason: u8) -> String {
        let mut rec = PflogHeader {
            af: palisade_wire::pflog::AF_INET,
            action: action::PASS,
            reason,
            ifname: "wan".into(),
            ruleset: ruleset.into(),
            rulenr,
            subrulenr,
            dir: 1,
            rewritten: false,
        }
        .emit();
        rec.extend(palisade_wire::build::ip(
            "198.51.100.7".parse().unwrap(),
            "203.0.113.2".parse().unwrap(),
            17,
            64,
            &palisade_wire::build::udp(5000, 53, b"x"),
        ));
        log_line(&rec)
    }

    /// As tcpdump prints pflog: `rule N/` then the reason's code and
    /// name; `rule N.ANCHOR.M/` for a rule inside an anchor.
    #[test]
    fn rules_print_as_tcpdump_prints_them() {
        assert!(line("", 3, u32::MAX, 0).contains(" rule 3/0(match): pass in on wan: "));
        assert!(line("8729.5", 4, 0, 0).contains(" rule 4.8729.5.0/0(match): "));
        assert!(line("", u32::MAX, u32::MAX, 1).contains(" rule -1/1(bad-offset): "));
    }

    /// `length` is the payload's, as tcpdump prints it (UDP: one byte).
    #[test]
    fn lengths_are_the_payloads() {
        let l = line("", 3, u32::MAX, 0);
        assert!(l.ends_with(": UDP, length 1"), "{l}");
    }
}
