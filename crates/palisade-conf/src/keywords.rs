//! pf.conf's vocabulary: the words and names that both the parser reads
//! and the printer writes, so that the two agree on them and neither has to
//! import the other.
//!
//! It owns the keyword list (what cannot stand unquoted where a string is
//! expected), the TCP flag letters and the ICMP type and code names
//! (pf.conf(5) PACKET FILTERING, `flags` and `icmp-type`). It does not own
//! the services and protocols databases (`netdb`, consulted by name and by
//! number through `host`) nor timeout names (`ir::Timeout`), which live with
//! the types they name.

/// Words the lexer would turn into keywords in pfctl: they cannot stand
/// where a plain string (a name, a label) is expected unless quoted.
const KEYWORDS: &[&str] = &[
    "af-to",
    "all",
    "allow-opts",
    "altq",
    "anchor",
    "antispoof",
    "any",
    "bandwidth",
    "binat",
    "binat-anchor",
    "binat-to",
    "bitmask",
    "block",
    "block-policy",
    "burst",
    "cbq",
    "code",
    "debug",
    "divert-packet",
    "divert-reply",
    "divert-to",
    "drop",
    "dup-to",
    "file",
    "fingerprints",
    "flags",
    "floating",
    "flows",
    "flush",
    "for",
    "fragment",
    "from",
    "global",
    "group",
    "hostid",
    "icmp-type",
    "icmp6-type",
    "if-bound",
    "in",
    "include",
    "inet",
    "inet6",
    "keep",
    "label",
    "least-states",
    "limit",
    "load",
    "log",
    "loginterface",
    "match",
    "max",
    "max-mss",
    "max-pkt-rate",
    "max-src-conn",
    "max-src-conn-rate",
    "max-src-nodes",
    "max-src-states",
    "min-ttl",
    "modulate",
    "nat",
    "nat-anchor",
    "nat-to",
    "no",
    "no-df",
    "no-route",
    "no-sync",
    "on",
    "once",
    "optimization",
    "os",
    "out",
    "overload",
    "parent",
    "pass",
    "pflow",
    "port",
    "prio",
    "probability",
    "proto",
    "qlimit",
    "queue",
    "quick",
    "random",
    "random-id",
    "rdr",
    "rdr-anchor",
    "rdr-to",
    "reassemble",
    "received-on",
    "reply-to",
    "return",
    "return-icmp",
    "return-icmp6",
    "return-rst",
    "round-robin",
    "route",
    "route-to",
    "rtable",
    "rule",
    "ruleset-optimization",
    "scrub",
    "set",
    "skip",
    "sloppy",
    "source-hash",
    "source-track",
    "state",
    "state-defaults",
    "state-policy",
    "static-port",
    "sticky-address",
    "synproxy",
    "table",
    "tag",
    "tagged",
    "timeout",
    "to",
    "tos",
    "urpf-failed",
    "user",
    "quantum",
    "default",
    "min",
    "rdomain",
    "syncookies",
    "divert",
    "counters",
    "persist",
    "const",
];

/// Is `s` a word pfctl's lexer would take as a keyword?
pub fn is_keyword(s: &str) -> bool {
    KEYWORDS.contains(&s)
}

/// The TCP flags in pf's bit order (TH_FIN is bit 0 ... TH_CWR bit 7), by
/// the letters `flags a/b` uses (pf.conf(5) PACKET FILTERING, `flags`).
pub const TCP_FLAGS: &str = "FSRPAUEW";

/// ICMP type names (pfctl's icmp_type table).
const ICMP_TYPES: &[(&str, u8)] = &[
    ("echoreq", 8),
    ("echorep", 0),
    ("unreach", 3),
    ("squench", 4),
    ("redir", 5),
    ("althost", 6),
    ("routeradv", 9),
    ("routersol", 10),
    ("timex", 11),
    ("paramprob", 12),
    ("timereq", 13),
    ("timerep", 14),
    ("inforeq", 15),
    ("inforep", 16),
    ("maskreq", 17),
    ("maskrep", 18),
    ("trace", 30),
    ("dataconv", 31),
    ("mobredir", 32),
    ("ipv6-where", 33),
    ("ipv6-here", 34),
    ("mobregreq", 35),
    ("mobregrep", 36),
    ("skip", 39),
    ("photuris", 40),
];

const ICMP6_TYPES: &[(&str, u8)] = &[
    ("unreach", 1),
    ("toobig", 2),
    ("timex", 3),
    ("paramprob", 4),
    ("echoreq", 128),
    ("echorep", 129),
    ("groupqry", 130),
    ("listqry", 130),
    ("grouprep", 131),
    ("listenrep", 131),
    ("groupterm", 132),
    ("listendone", 132),
    ("routersol", 133),
    ("routeradv", 134),
    ("neighbrsol", 135),
    ("neighbradv", 136),
    ("redir", 137),
    ("routrrenum", 138),
    ("wrureq", 139),
    ("wrurep", 140),
    ("fqdnreq", 139),
    ("fqdnrep", 140),
    ("niqry", 139),
    ("nirep", 140),
    ("mtraceresp", 200),
    ("mtrace", 201),
];

/// (type, name, code)
const ICMP_CODES: &[(u8, &str, u8)] = &[
    (3, "net-unr", 0),
    (3, "host-unr", 1),
    (3, "proto-unr", 2),
    (3, "port-unr", 3),
    (3, "needfrag", 4),
    (3, "srcfail", 5),
    (3, "net-unk", 6),
    (3, "host-unk", 7),
    (3, "isolate", 8),
    (3, "net-prohib", 9),
    (3, "host-prohib", 10),
    (3, "net-tos", 11),
    (3, "host-tos", 12),
    (3, "filter-prohib", 13),
    (3, "host-preced", 14),
    (3, "cutoff-preced", 15),
    (5, "redir-net", 0),
    (5, "redir-host", 1),
    (5, "redir-tos-net", 2),
    (5, "redir-tos-host", 3),
    (9, "normal-adv", 0),
    (9, "common-adv", 16),
    (11, "transit", 0),
    (11, "reassemb", 1),
    (12, "badhead", 0),
    (12, "optmiss", 1),
    (12, "badlen", 2),
    (40, "unknown-ind", 1),
    (40, "auth-fail", 2),
    (40, "decrypt-fail", 3),
];

const ICMP6_CODES: &[(u8, &str, u8)] = &[
    (1, "noroute-unr", 0),
    (1, "admin-unr", 1),
    (1, "beyond-unr", 2),
    (1, "addr-unr", 3),
    (1, "port-unr", 4),
    (3, "transit", 0),
    (3, "reassemb", 1),
    (4, "badhead", 0),
    (4, "nxthdr", 1),
    (137, "redironlink", 0),
    (137, "redirrouter", 1),
];

pub fn icmp_type_number(name: &str, v6: bool) -> Option<u8> {
    let t = if v6 { ICMP6_TYPES } else { ICMP_TYPES };
    t.iter().find(|(n, _)| *n == name).map(|&(_, v)| v)
}

pub fn icmp_type_name(ty: u8, v6: bool) -> Option<&'static str> {
    let t = if v6 { ICMP6_TYPES } else { ICMP_TYPES };
    t.iter().find(|(_, v)| *v == ty).map(|&(n, _)| n)
}

pub fn icmp_code_number(name: &str, v6: bool) -> Option<(u8, u8)> {
    let t = if v6 { ICMP6_CODES } else { ICMP_CODES };
    t.iter()
        .find(|(_, n, _)| *n == name)
        .map(|&(ty, _, c)| (ty, c))
}

pub fn icmp_code_name(ty: u8, code: u8, v6: bool) -> Option<&'static str> {
    let t = if v6 { ICMP6_CODES } else { ICMP_CODES };
    t.iter()
        .find(|(t0, _, c)| *t0 == ty && *c == code)
        .map(|&(_, n, _)| n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn icmp_names() {
        assert_eq!(icmp_code_name(3, 4, false), Some("needfrag"));
        assert_eq!(icmp_type_name(1, true), Some("unreach"));
        assert_eq!(icmp_type_number("echoreq", true), Some(128));
        assert_eq!(icmp_code_number("port-unr", false), Some((3, 3)));
    }

    #[test]
    fn keywords_and_flags() {
        assert!(is_keyword("pass") && is_keyword("const") && !is_keyword("em0"));
        assert_eq!(TCP_FLAGS.find('S'), Some(1));
        assert_eq!(TCP_FLAGS.find('A'), Some(4));
    }
}
