//! OpenBSD's services and protocols databases, built in.
//!
//! A pf.conf written for OpenBSD names ports and protocols as OpenBSD's
//! /etc/services and /etc/protocols do, and pfctl resolves them there
//! (getservbyname with "tcp", then "udp"; getprotobyname). The Linux host
//! Palisade runs on has other databases: Debian's /etc/services says
//! `spamd` is 783 (SpamAssassin's daemon) where OpenBSD's spamd(8) listens
//! on 8025. So the parser consults these tables first and the host's own
//! databases (or the host model's) only for names OpenBSD does not know,
//! and warns where the two disagree about a name a file uses.
//!
//! Where the facts come from (tables written here from them, nothing
//! copied):
//! - the set of service names and aliases: OpenBSD src/etc/services as of
//!   revision 1.95 (2018), as listed by the pf syntax file shipped with Vim
//!   ("from OpenBSD src/etc/services r1.95"), plus `domain-s` (DNS over
//!   TLS/DTLS, RFC 7858/8094) added to OpenBSD's file later;
//! - the port numbers and transports: OpenBSD src/etc/services revision
//!   1.46 (2002) for the entries it already had, the IANA "Service Name and
//!   Transport Protocol Port Number Registry" for the rest, and OpenBSD's
//!   own daemons for the names it assigns itself (spamd(8): `spamd`
//!   8025/tcp, `spamd-sync` 8025/udp, `spamd-cfg` 8026/tcp; dhcpd(8)
//!   `dhcpd-sync` 8067/udp; the routing daemons 2600-2608);
//! - the protocols: OpenBSD src/etc/protocols (name, number, the upper-case
//!   IANA name as an alias, other aliases) and the IANA "Assigned Internet
//!   Protocol Numbers" registry.
//!
//! A few names of OpenBSD's file whose numbers could not be confirmed from
//! these sources (`iapp`, `netplan`, `xcept`) are left out: they resolve
//! through the host's database, as any name OpenBSD does not know.

/// Transports a service entry is listed for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
    Both,
}

use Transport::{Both, Tcp, Udp};

/// OpenBSD's services, in the order of its file: (name, port, transports,
/// aliases). getservbyname returns the first entry whose name or alias
/// matches, so the order decides an alias used by two entries.
const SERVICES: &[(&str, u16, Transport, &[&str])] = &[
    ("tcpmux", 1, Tcp, &[]),
    ("echo", 7, Both, &[]),
    ("discard", 9, Both, &["sink", "null"]),
    ("systat", 11, Tcp, &["users"]),
    ("daytime", 13, Both, &[]),
    ("netstat", 15, Tcp, &[]),
    ("qotd", 17, Tcp, &["quote"]),
    ("msp", 18, Both, &[]),
    ("chargen", 19, Both, &["ttytst", "source"]),
    ("ftp-data", 20, Tcp, &[]),
    ("ftp", 21, Tcp, &[]),
    ("ssh", 22, Both, &[]),
    ("telnet", 23, Tcp, &[]),
    ("smtp", 25, Tcp, &["mail"]),
    ("time", 37, Both, &["timserver"]),
    ("rlp", 39, Udp, &["resource"]),
    ("nameserver", 42, Tcp, &["name"]),
    ("whois", 43, Tcp, &["nicname"]),
    ("tacacs", 49, Both, &["tacas+"]),
    ("domain", 53, Both, &[]),
    ("mtp", 57, Tcp, &[]),
    ("bootps", 67, Both, &[]),
    ("bootpc", 68, Both, &[]),
    ("tftp", 69, Udp, &[]),
    ("gopher", 70, Both, &[]),
    ("rje", 77, Tcp, &["netrjs"]),
    ("finger", 79, Tcp, &[]),
    ("www", 80, Both, &["http"]),
    ("link", 87, Tcp, &["ttylink"]),
    ("kerberos", 88, Both, &["kerberos-sec"]),
    ("supdup", 95, Tcp, &[]),
    ("hostnames", 101, Tcp, &["hostname"]),
    ("iso-tsap", 102, Tcp, &["tsap"]),
    ("x400", 103, Tcp, &[]),
    ("x400-snd", 104, Tcp, &[]),
    ("csnet-ns", 105, Both, &["cso-ns"]),
    ("pop3pw", 106, Tcp, &["poppassd"]),
    ("rtelnet", 107, Both, &[]),
    ("pop2", 109, Both, &["postoffice"]),
    ("pop3", 110, Both, &[]),
    ("sunrpc", 111, Both, &["portmap", "rpcbind"]),
    ("auth", 113, Tcp, &["authentication", "tap", "ident"]),
    ("sftp", 115, Tcp, &[]),
    ("uucp-path", 117, Tcp, &[]),
    ("nntp", 119, Tcp, &["readnews", "untp"]),
    ("ntp", 123, Both, &[]),
    ("pwdgen", 129, Both, &[]),
    ("epmap", 135, Both, &[]),
    ("netbios-ns", 137, Both, &[]),
    ("netbios-dgm", 138, Both, &[]),
    ("netbios-ssn", 139, Both, &[]),
    ("imap", 143, Both, &["imap2"]),
    ("bftp", 152, Tcp, &[]),
    ("snmp", 161, Udp, &[]),
    ("snmptrap", 162, Udp, &["snmp-trap"]),
    ("cmip-man", 163, Both, &[]),
    ("cmip-agent", 164, Both, &[]),
    ("xdmcp", 177, Both, &[]),
    ("nextstep", 178, Both, &["NeXTStep", "NextStep"]),
    ("bgp", 179, Both, &[]),
    ("prospero", 191, Both, &[]),
    ("irc", 194, Both, &[]),
    ("smux", 199, Both, &[]),
    ("at-rtmp", 201, Both, &[]),
    ("at-nbp", 202, Both, &[]),
    ("at-echo", 204, Both, &[]),
    ("at-zis", 206, Both, &[]),
    ("z3950", 210, Both, &["wais"]),
    ("ipx", 213, Both, &[]),
    ("imap3", 220, Both, &[]),
    ("ulistserv", 372, Both, &[]),
    ("ldap", 389, Both, &[]),
    ("svrloc", 427, Both, &[]),
    ("nnsp", 433, Tcp, &["usenet"]),
    ("https", 443, Both, &[]),
    ("snpp", 444, Tcp, &[]),
    ("microsoft-ds", 445, Both, &[]),
    ("kpasswd", 464, Both, &[]),
    ("smtps", 465, Tcp, &[]),
    ("photuris", 468, Both, &[]),
    ("isakmp", 500, Udp, &[]),
    ("exec", 512, Tcp, &[]),
    ("biff", 512, Udp, &["comsat"]),
    ("login", 513, Tcp, &[]),
    ("who", 513, Udp, &["whod"]),
    ("shell", 514, Tcp, &["cmd"]),
    ("syslog", 514, Udp, &[]),
    ("printer", 515, Tcp, &["spooler"]),
    ("talk", 517, Udp, &[]),
    ("ntalk", 518, Udp, &[]),
    ("route", 520, Udp, &["router", "routed"]),
    ("efs", 520, Tcp, &[]),
    ("ripng", 521, Udp, &[]),
    ("timed", 525, Udp, &["timeserver"]),
    ("tempo", 526, Tcp, &["newdate"]),
    ("courier", 530, Tcp, &["rpc"]),
    ("conference", 531, Tcp, &["chat"]),
    ("netnews", 532, Tcp, &["readnews"]),
    ("netwall", 533, Udp, &[]),
    ("uucp", 540, Tcp, &["uucpd"]),
    ("klogin", 543, Tcp, &[]),
    ("kshell", 544, Tcp, &["krcmd"]),
    ("ekshell", 545, Tcp, &[]),
    ("dhcpv6-client", 546, Both, &[]),
    ("dhcpv6-server", 547, Both, &[]),
    ("afpovertcp", 548, Both, &[]),
    ("rtsp", 554, Both, &[]),
    ("remotefs", 556, Tcp, &["rfs_server", "rfs"]),
    ("submission", 587, Both, &["msa"]),
    ("asf-rmcp", 623, Udp, &[]),
    ("ipp", 631, Both, &[]),
    ("ldaps", 636, Both, &[]),
    ("ldp", 646, Both, &[]),
    ("silc", 706, Both, &[]),
    ("kerberos-adm", 749, Both, &[]),
    ("kerberos-iv", 750, Both, &["kdc"]),
    ("kerberos_master", 751, Both, &[]),
    ("krb_prop", 754, Tcp, &["hprop"]),
    ("krbupdate", 760, Tcp, &["kreg"]),
    ("conserver", 782, Tcp, &[]),
    ("domain-s", 853, Both, &[]),
    ("supfilesrv", 871, Tcp, &[]),
    ("rsync", 873, Tcp, &[]),
    ("cddb", 888, Tcp, &["cddbp"]),
    ("swat", 901, Tcp, &[]),
    ("imaps", 993, Both, &[]),
    ("pop3s", 995, Both, &["spop3"]),
    ("socks", 1080, Tcp, &[]),
    ("kpop", 1109, Tcp, &[]),
    ("supfiledbg", 1127, Tcp, &[]),
    ("ms-sql-s", 1433, Tcp, &["Microsoft-SQL-Server"]),
    ("ms-sql-m", 1434, Udp, &["Microsoft-SQL-Monitor"]),
    ("ingreslock", 1524, Both, &[]),
    ("prospero-np", 1525, Both, &[]),
    ("support", 1529, Tcp, &[]),
    ("datametrics", 1645, Udp, &[]),
    ("sa-msg-port", 1646, Udp, &[]),
    ("l2tp", 1701, Udp, &[]),
    ("pptp", 1723, Both, &[]),
    ("radius", 1812, Udp, &[]),
    ("radius-acct", 1813, Udp, &["radacct"]),
    ("ssdp", 1900, Udp, &[]),
    ("nfsd", 2049, Both, &["nfs"]),
    ("eklogin", 2105, Tcp, &[]),
    ("ekshell2", 2106, Tcp, &[]),
    ("rkinit", 2108, Tcp, &[]),
    ("kf", 2110, Tcp, &[]),
    ("kx", 2111, Tcp, &[]),
    ("kip", 2112, Tcp, &[]),
    ("kauth", 2120, Tcp, &[]),
    ("iprop", 2121, Tcp, &[]),
    ("cvspserver", 2401, Tcp, &[]),
    ("zebrasrv", 2600, Tcp, &[]),
    ("zebra", 2601, Tcp, &[]),
    ("ripd", 2602, Tcp, &[]),
    ("ospfd", 2604, Tcp, &[]),
    ("bgpd", 2605, Tcp, &[]),
    ("ospf6d", 2606, Tcp, &[]),
    ("ospfapi", 2607, Tcp, &[]),
    ("isisd", 2608, Tcp, &[]),
    ("webster", 2627, Both, &[]),
    ("eppc", 3031, Both, &[]),
    ("iscsi", 3260, Tcp, &[]),
    ("mysql", 3306, Tcp, &[]),
    ("rdp", 3389, Tcp, &[]),
    ("802-11-iapp", 3517, Both, &[]),
    ("daap", 3689, Both, &[]),
    ("svn", 3690, Both, &[]),
    ("bfd-control", 3784, Udp, &[]),
    ("bfd-echo", 3785, Udp, &[]),
    ("sieve", 4190, Tcp, &[]),
    ("krb524", 4444, Both, &[]),
    ("ipsec-nat-t", 4500, Udp, &["ipsec-msft"]),
    ("hylafax", 4559, Tcp, &[]),
    ("gre-in-udp", 4754, Udp, &[]),
    ("gre-udp-dtls", 4755, Udp, &[]),
    ("vxlan", 4789, Udp, &[]),
    ("rfe", 5002, Both, &[]),
    ("sip", 5060, Both, &[]),
    ("xmpp-client", 5222, Tcp, &[]),
    ("xmpp-server", 5269, Tcp, &[]),
    ("xmpp-bosh", 5280, Tcp, &[]),
    ("presence", 5298, Both, &[]),
    ("mdns", 5353, Udp, &["mdnsresponder"]),
    ("postgresql", 5432, Tcp, &[]),
    ("canna", 5680, Tcp, &[]),
    ("rfb", 5900, Tcp, &["vnc"]),
    ("syslog-tls", 6514, Tcp, &[]),
    ("sane-port", 6566, Tcp, &[]),
    ("afs3-fileserver", 7000, Udp, &[]),
    ("afs3-callback", 7001, Udp, &[]),
    ("afs3-prserver", 7002, Udp, &[]),
    ("afs3-vlserver", 7003, Udp, &[]),
    ("afs3-kaserver", 7004, Udp, &[]),
    ("afs3-volser", 7005, Udp, &[]),
    ("afs3-errors", 7006, Udp, &[]),
    ("afs3-bos", 7007, Udp, &[]),
    ("afs3-update", 7008, Udp, &[]),
    ("afs3-rmtsys", 7009, Udp, &[]),
    ("icb", 7326, Tcp, &[]),
    ("spamd", 8025, Tcp, &[]),
    ("spamd-sync", 8025, Udp, &[]),
    ("spamd-cfg", 8026, Tcp, &[]),
    ("dhcpd-sync", 8067, Udp, &[]),
    ("puppet", 8140, Tcp, &[]),
    ("ub-dns-control", 8953, Tcp, &[]),
    ("git", 9418, Tcp, &[]),
    ("zabbix-agent", 10050, Both, &[]),
    ("zabbix-trapper", 10051, Both, &[]),
    ("openwebnet", 20005, Tcp, &[]),
    ("hunt", 26740, Udp, &[]),
];

fn service_matches(name: &str, entry: &(&str, u16, Transport, &[&str])) -> bool {
    entry.0 == name || entry.3.contains(&name)
}

/// The port OpenBSD's pfctl gives a service name: the first TCP entry with
/// that name or alias, else the first UDP one (getservbyname with "tcp",
/// then "udp").
pub fn service_port(name: &str) -> Option<u16> {
    let find = |want_tcp: bool| {
        SERVICES
            .iter()
            .filter(|e| match e.2 {
                Both => true,
                Tcp => want_tcp,
                Udp => !want_tcp,
            })
            .find(|e| service_matches(name, e))
            .map(|e| e.1)
    };
    find(true).or_else(|| find(false))
}

/// OpenBSD's protocols: (name, number, aliases). The name is what pfctl
/// prints for the number; every alias is accepted (getprotobyname is
/// case-sensitive, so the upper-case IANA names are aliases of their own).
const PROTOCOLS: &[(&str, u8, &[&str])] = &[
    ("ip", 0, &["IP"]),
    ("icmp", 1, &["ICMP"]),
    ("igmp", 2, &["IGMP"]),
    ("ggp", 3, &["GGP"]),
    ("ipencap", 4, &["IP-ENCAP", "ipv4"]),
    ("st", 5, &["ST"]),
    ("tcp", 6, &["TCP"]),
    ("egp", 8, &["EGP"]),
    ("igp", 9, &["IGP"]),
    ("pup", 12, &["PUP"]),
    ("udp", 17, &["UDP"]),
    ("hmp", 20, &["HMP"]),
    ("xns-idp", 22, &["XNS-IDP"]),
    ("rdp", 27, &["RDP"]),
    ("iso-tp4", 29, &["ISO-TP4"]),
    ("dccp", 33, &["DCCP"]),
    ("xtp", 36, &["XTP"]),
    ("ddp", 37, &["DDP"]),
    ("idpr-cmtp", 38, &["IDPR-CMTP"]),
    ("ipv6", 41, &["IPV6"]),
    ("ipv6-route", 43, &["IPV6-ROUTE"]),
    ("ipv6-frag", 44, &["IPV6-FRAG"]),
    ("idrp", 45, &["IDRP"]),
    ("rsvp", 46, &["RSVP"]),
    ("gre", 47, &["GRE"]),
    ("esp", 50, &["ESP"]),
    ("ah", 51, &["AH"]),
    ("mobile", 55, &["MOBILE"]),
    ("tlsp", 56, &["TLSP"]),
    ("skip", 57, &["SKIP"]),
    ("ipv6-icmp", 58, &["IPV6-ICMP", "icmp6"]),
    ("ipv6-nonxt", 59, &["IPV6-NONXT"]),
    ("ipv6-opts", 60, &["IPV6-OPTS"]),
    ("rspf", 73, &["RSPF"]),
    ("vmtp", 81, &["VMTP"]),
    ("ospf", 89, &["OSPFIGP", "ospfigp"]),
    ("ipip", 94, &["IPIP"]),
    ("encap", 98, &["ENCAP"]),
    ("pim", 103, &["PIM"]),
    ("ipcomp", 108, &["IPCOMP"]),
    ("carp", 112, &["CARP", "vrrp"]),
    ("l2tp", 115, &["L2TP"]),
    ("sctp", 132, &["SCTP"]),
    ("udplite", 136, &["UDPLITE"]),
    ("mpls-in-ip", 137, &["MPLS-IN-IP"]),
    ("wesp", 141, &["WESP"]),
    ("rohc", 142, &["ROHC"]),
    ("pfsync", 240, &["PFSYNC"]),
];

/// The number OpenBSD's getprotobyname gives a protocol name.
pub fn proto_number(name: &str) -> Option<u8> {
    PROTOCOLS
        .iter()
        .find(|(n, _, a)| *n == name || a.contains(&name))
        .map(|&(_, p, _)| p)
}

/// The name pfctl prints for a protocol number (getprotobynumber).
pub fn proto_name(p: u8) -> Option<&'static str> {
    PROTOCOLS
        .iter()
        .find(|(_, n, _)| *n == p)
        .map(|&(s, _, _)| s)
}

/// Parse one line of an /etc/services file: `name port/proto [aliases...]
/// [# comment]`. Returns the names (the name first), the port and the
/// transport, or None for blank, comment and malformed lines.
pub fn parse_services_line(line: &str) -> Option<(Vec<String>, u16, String)> {
    let line = line.split('#').next().unwrap_or("");
    let mut it = line.split_whitespace();
    let name = it.next()?;
    let (port, proto) = it.next()?.split_once('/')?;
    let port: u16 = port.parse().ok()?;
    let mut names = vec![name.to_string()];
    names.extend(it.map(str::to_string));
    Some((names, port, proto.to_string()))
}

/// Parse one line of an /etc/protocols file: `name number [aliases...]`.
pub fn parse_protocols_line(line: &str) -> Option<(Vec<String>, u8)> {
    let line = line.split('#').next().unwrap_or("");
    let mut it = line.split_whitespace();
    let name = it.next()?;
    let num: u8 = it.next()?.parse().ok()?;
    let mut names = vec![name.to_string()];
    names.extend(it.map(str::to_string));
    Some((names, num))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openbsd_meanings() {
        assert_eq!(service_port("spamd"), Some(8025));
        assert_eq!(service_port("spamd-sync"), Some(8025));
        assert_eq!(service_port("spamd-cfg"), Some(8026));
        assert_eq!(service_port("dhcpv6-server"), Some(547));
        assert_eq!(service_port("dhcpv6-client"), Some(546));
        assert_eq!(service_port("smtps"), Some(465));
        assert_eq!(service_port("mdns"), Some(5353));
        assert_eq!(service_port("ssdp"), Some(1900));
        assert_eq!(service_port("ipsec-nat-t"), Some(4500));
        assert_eq!(service_port("l2tp"), Some(1701));
        assert_eq!(service_port("pptp"), Some(1723));
        assert_eq!(service_port("ipp"), Some(631));
        assert_eq!(service_port("sftp"), Some(115));
        assert_eq!(service_port("domain-s"), Some(853));
        assert_eq!(service_port("http"), Some(80));
        assert_eq!(service_port("ident"), Some(113));
        // An alias of two entries: the TCP one first (nntp before netnews).
        assert_eq!(service_port("readnews"), Some(119));
        // UDP only: found on the second look.
        assert_eq!(service_port("router"), Some(520));
        assert_eq!(service_port("openvpn"), None);
        assert_eq!(proto_number("TCP"), Some(6));
        assert_eq!(proto_number("icmp6"), Some(58));
        assert_eq!(proto_name(112), Some("carp"));
    }

    #[test]
    fn host_files() {
        assert_eq!(
            parse_services_line("spamd\t\t783/tcp\t\t\t# spamassassin daemon"),
            Some((vec!["spamd".into()], 783, "tcp".into()))
        );
        assert_eq!(parse_services_line("# comment"), None);
        assert_eq!(
            parse_protocols_line("ipv6-icmp 58\tIPv6-ICMP\t# ICMP for IPv6"),
            Some((vec!["ipv6-icmp".into(), "IPv6-ICMP".into()], 58))
        );
    }
}
