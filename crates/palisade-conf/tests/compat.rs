//! pf.conf files written for OpenBSD load unchanged (issue 10): each class
//! of construct users write that pfctl accepts, with the output `pfctl -nv`
//! gives for it (written from parse.y, pfctl_parser.c's printers and the
//! man pages), and every such output read back to itself.

use palisade_conf::host::HostModel;
use palisade_conf::{parse_bytes, ParseOptions, ParseOutput};

/// lo0 and two Ethernet ports, as the regress machine plus em0/em1 with
/// addresses; no services or protocols of its own.
const MODEL: &str = r#"
[[interface]]
name = "lo0"
groups = ["lo"]
addresses = ["::1/128", "fe80::1/64", "127.0.0.1/8"]
[[interface]]
name = "em0"
groups = ["egress"]
addresses = ["192.0.2.2/24"]
[[interface]]
name = "em1"
addresses = ["198.51.100.2/24"]
"#;

fn opts_with(extra: &str) -> ParseOptions {
    ParseOptions {
        verbose: 1,
        host: HostModel::from_toml(&format!("{MODEL}{extra}")).expect("host model"),
        ..Default::default()
    }
}

fn opts() -> ParseOptions {
    opts_with("")
}

fn parse_with(o: &ParseOptions, text: &[u8]) -> ParseOutput {
    parse_bytes("pf.conf", None, text.to_vec(), o)
}

/// Parse, expect no error, and return what `check -v` prints.
fn ok(o: &ParseOptions, text: &[u8]) -> ParseOutput {
    let out = parse_with(o, text);
    assert_eq!(
        out.errors,
        0,
        "refused: {:?}\ninput:\n{}",
        out.stderr,
        String::from_utf8_lossy(text)
    );
    out
}

/// The printed form parses back to the same print.
fn fixed_point(o: &ParseOptions, text: &[u8]) {
    let first = ok(o, text);
    let second = parse_bytes("printed", None, first.stdout.clone().into_bytes(), o);
    assert_eq!(
        second.errors, 0,
        "printed form refused: {:?}\n{}",
        second.stderr, first.stdout
    );
    assert_eq!(second.stdout, first.stdout, "not a fixed point");
}

// ----- 1. service and protocol names ------------------------------------

#[test]
fn openbsd_service_names() {
    let out = ok(
        &opts(),
        b"pass in on em0 proto tcp to port { dhcpv6-server dhcpv6-client smtps spamd \
          mdns ssdp ipsec-nat-t l2tp pptp ipp sftp domain-s spamd-cfg }\n",
    );
    let ports = [
        547, 546, 465, 8025, 5353, 1900, 4500, 1701, 1723, 631, 115, 853, 8026,
    ];
    let want: String = ports
        .iter()
        .map(|p| format!("pass in on em0 proto tcp from any to any port = {p} flags S/SA\n"))
        .collect();
    assert_eq!(out.stdout, want);
    assert!(out.stderr.is_empty(), "{:?}", out.stderr);
}

/// A Debian-like host says spamd is 783 (SpamAssassin's daemon): the file
/// was written for OpenBSD, so OpenBSD's 8025 is used, with a warning at
/// the line that uses the name. Names OpenBSD does not know come from the
/// host's database.
#[test]
fn openbsd_names_win_over_the_host_with_a_warning() {
    let o = opts_with(
        "[services]\nspamd = [\"783/tcp\", \"783/udp\"]\nopenvpn = 1194\nwww = 80\n\
         [protocols]\nethernet = 143\n",
    );
    let out = ok(
        &o,
        b"# spamd(8) on OpenBSD\n\
          pass in on em0 proto tcp to port spamd\n\
          pass in on em0 proto udp to port openvpn\n\
          pass in on em0 proto tcp to port www\n\
          pass out proto ethernet\n",
    );
    assert_eq!(
        out.stdout,
        "pass in on em0 proto tcp from any to any port = 8025 flags S/SA\n\
         pass in on em0 proto udp from any to any port = 1194\n\
         pass in on em0 proto tcp from any to any port = 80 flags S/SA\n\
         pass out proto 143 all\n"
    );
    assert_eq!(
        out.stderr,
        vec![
            "pf.conf:2: warning: port name 'spamd' is 8025 in OpenBSD's database but 783 \
             in this host's: 8025 is used, as pfctl would"
                .to_string()
        ]
    );
    // pfctl prints no such warning.
    let quiet = ParseOptions {
        pfctl_compat: true,
        ..o
    };
    let out = ok(&quiet, b"pass in on em0 proto tcp to port spamd\n");
    assert!(out.stderr.is_empty(), "{:?}", out.stderr);
    // Known to neither: still pfctl's error.
    let bad = parse_with(&opts(), b"pass in proto tcp to port nosuchservice\n");
    assert_eq!(bad.stderr[0], "pf.conf:1: unknown port nosuchservice");
}

#[test]
fn protocol_names_as_getprotobyname_knows_them() {
    let out = ok(
        &opts(),
        b"pass proto { TCP ipv6-icmp icmp6 carp vrrp ospf }\n",
    );
    assert_eq!(
        out.stdout,
        "pass proto tcp all flags S/SA\n\
         pass proto ipv6-icmp all\n\
         pass proto ipv6-icmp all\n\
         pass proto carp all\n\
         pass proto carp all\n\
         pass proto ospf all\n"
    );
}

// ----- 2. bytes that are not UTF-8 --------------------------------------

#[test]
fn latin1_and_big5_comments_are_ignored() {
    // "Réseau" in ISO-8859-1, "中文" in Big5, and a continued comment.
    let out = ok(
        &opts(),
        b"# R\xe9seau du bureau\n\
          int_if = \"em1\" # \xa4\xa4\xa4\xe5\n\
          pass in on $int_if proto tcp to port ssh # acc\xe8s \\\n\
          still a comment \xff\n\
          pass out all\n",
    );
    assert_eq!(
        out.stdout,
        "int_if = \"em1\"\n\
         pass in on em1 proto tcp from any to any port = 22 flags S/SA\n\
         pass out all flags S/SA\n"
    );
}

#[test]
fn non_utf8_in_a_string_is_an_error_at_its_line() {
    let out = parse_with(&opts(), b"pass all\npass out label \"caf\xe9\"\n");
    assert!(out.errors > 0);
    assert_eq!(
        out.stderr[0],
        "pf.conf:2: string is not UTF-8 text: \"caf\\xe9\" (names, labels and macros must be UTF-8)"
    );
    // A NUL byte still means the wrong file.
    let out = parse_with(&opts(), b"pass all\n\0");
    assert_eq!(
        out.stderr,
        vec!["pf.conf: not a text file (NUL byte at offset 9)"]
    );
}

// ----- 3. self in a table -----------------------------------------------

#[test]
fn self_in_a_table_is_the_machines_addresses() {
    let out = ok(&opts(), b"table <fw> const { self }\npass in to <fw>\n");
    assert_eq!(
        out.stdout,
        "table <fw> const { ::1 fe80::1 127.0.0.1 192.0.2.2 198.51.100.2 }\n\
         pass in from any to <fw> flags S/SA\n"
    );
}

// ----- 4. a list inside a host list -------------------------------------

#[test]
fn a_list_inside_a_host_list_is_flattened() {
    let out = ok(
        &opts(),
        b"lan = \"{ 10.0.0.1 10.0.0.2 }\"\n\
          table <t> { 192.0.2.9 }\n\
          pass from { $lan, <t> } to { { 10.1.0.1 } 10.1.0.2 }\n\
          table <u> { $lan 10.0.0.3 }\n",
    );
    assert_eq!(
        out.stdout,
        "lan = \"{ 10.0.0.1 10.0.0.2 }\"\n\
         table <t> { 192.0.2.9 }\n\
         table <u> { 10.0.0.1 10.0.0.2 10.0.0.3 }\n\
         pass inet from 10.0.0.1 to 10.1.0.1 flags S/SA\n\
         pass inet from 10.0.0.1 to 10.1.0.2 flags S/SA\n\
         pass inet from 10.0.0.2 to 10.1.0.1 flags S/SA\n\
         pass inet from 10.0.0.2 to 10.1.0.2 flags S/SA\n\
         pass inet from <t> to 10.1.0.1 flags S/SA\n\
         pass inet from <t> to 10.1.0.2 flags S/SA\n"
    );
    // Nesting is bounded; deeper is an error, not a stack overflow.
    let deep = format!("pass from {}10.0.0.1{}\n", "{ ".repeat(40), " }".repeat(40));
    let out = parse_with(&opts(), deep.as_bytes());
    assert!(out.errors > 0);
    assert!(
        out.stderr[0].contains("lists nested too deeply"),
        "{:?}",
        out.stderr
    );
}

// ----- 5. backslash-blank before a comment ------------------------------

#[test]
fn backslash_blank_is_a_blank() {
    let out = ok(
        &opts(),
        b"table <martians> { \\\n\
          \x20 0.0.0.0/8  \\ # this network\n\
          \x20 10.0.0.0/8 \\ # RFC 1918\n\
          \x20 }\n\
          block in quick from <martians>\n",
    );
    assert_eq!(
        out.stdout,
        "table <martians> { 0.0.0.0/8 10.0.0.0/8 }\n\
         block drop in quick from <martians> to any\n"
    );
}

// ----- 6. on any ----------------------------------------------------------

#[test]
fn on_any_is_kept() {
    // Enforced: every interface but loopback ones (palisade-filter's
    // options guard shows it on packets).
    let out = ok(&opts(), b"block in on any proto tcp to port ssh\n");
    assert_eq!(
        out.stdout,
        "block drop in on any proto tcp from any to any port = 22\n"
    );
    assert!(out.unenforced_warnings("pf.conf").is_empty());
}

// ----- 7. queues with burst ---------------------------------------------

#[test]
fn queue_burst_min_max() {
    let out = ok(
        &opts(),
        b"queue rootq on em0 bandwidth 100M burst 200M for 100ms max 100M\n\
          queue std parent rootq bandwidth 20M min 5M burst 10M for 50ms max 40M qlimit 100 default\n\
          queue ssh parent rootq bandwidth 10M, min 2M, max 20M burst 30M for 1000ms\n",
    );
    assert_eq!(
        out.stdout,
        "queue rootq on em0 bandwidth 100M burst 200M for 100ms, max 100M\n\
         queue std parent rootq bandwidth 20M, min 5M burst 10M for 50ms, max 40M default qlimit 100\n\
         queue ssh parent rootq bandwidth 10M, min 2M, max 20M burst 30M for 1000ms\n"
    );
    assert!(out
        .unenforced_warnings("pf.conf")
        .iter()
        .any(|w| w.contains("queueing is parsed but not enforced")));
    let bad = parse_with(
        &opts(),
        b"queue rootq on em0 bandwidth 10M burst 20M for 1s default\n",
    );
    assert_eq!(bad.stderr[0], "pf.conf:1: time in scspec must be in ms");
}

// ----- 8. route-to address@interface, af-to on pass out ------------------

#[test]
fn route_to_address_at_interface() {
    let out = ok(
        &opts(),
        b"pass out on em0 route-to 198.51.100.1@em1\n\
          pass out on em0 inet6 route-to 2001:db8::1@em1\n",
    );
    assert_eq!(
        out.stdout,
        "pass out on em0 inet all flags S/SA route-to 198.51.100.1@em1\n\
         pass out on em0 inet6 all flags S/SA route-to 2001:db8::1@em1\n"
    );
    // Enforced by the router (palisade-filter's route tests and
    // run_routing_options): no warning.
    assert!(out.unenforced_warnings("pf.conf").is_empty());
    // Targets through different interfaces (pf's load balancing over
    // two uplinks): each keeps its own, in the list's table (pfctl prints
    // the table, as for any list of targets).
    let two = ok(
        &opts(),
        b"pass out route-to { 198.51.100.1@em1, 198.51.100.3@em0 }\n\
          pass in on em1 route-to { (em0 198.51.100.3) (em1 198.51.100.1) } round-robin\n",
    );
    assert!(two.stderr.is_empty(), "{:?}", two.stderr);
    let hops: Vec<Vec<(String, String)>> = two
        .config
        .main
        .rules
        .iter()
        .map(|r| {
            let p = &r.route.as_ref().expect("routed").1;
            assert_eq!(p.ifname, None);
            p.hop_ifnames
                .as_ref()
                .expect("each its own")
                .iter()
                .map(|(a, i)| (palisade_conf::print::addr_str(a, None), i.clone()))
                .collect()
        })
        .collect();
    assert_eq!(
        hops,
        [
            [
                ("198.51.100.1".into(), "em1".into()),
                ("198.51.100.3".into(), "em0".into())
            ],
            [
                ("198.51.100.3".into(), "em0".into()),
                ("198.51.100.1".into(), "em1".into())
            ]
        ]
    );
    assert!(
        two.stdout.contains("route-to <__automatic_0> round-robin"),
        "{}",
        two.stdout
    );
    // One address through two interfaces cannot be told apart in the
    // list's table: refused, said why.
    let bad = parse_with(
        &opts(),
        b"pass out route-to { (em0 198.51.100.1) (em1 198.51.100.1) }\n",
    );
    assert_eq!(
        bad.stderr[0],
        "pf.conf:1: routing target 198.51.100.1 is listed through em0 and em1: a list holds each address once"
    );
}

#[test]
fn af_to_on_pass_out() {
    let out = ok(
        &opts(),
        b"pass out on em0 inet6 from any to 64:ff9b::/96 af-to inet from (em0:0)\n\
          pass out on em0 af-to inet6 from 2001:db8::1 to 2001:db8::2\n",
    );
    assert_eq!(
        out.stdout,
        "pass out on em0 inet6 from any to 64:ff9b::/96 flags S/SA af-to inet from (em0:0)\n\
         pass out on em0 inet all flags S/SA af-to inet6 from 2001:db8::1 to 2001:db8::2\n"
    );
}

// ----- fixed points -----------------------------------------------------

#[test]
fn new_constructs_print_back_to_themselves() {
    let o = opts_with("[services]\nspamd = 783\nopenvpn = 1194\n");
    for text in [
        &b"pass in on em0 proto tcp to port { dhcpv6-server smtps spamd mdns domain-s openvpn }\n"[..],
        b"pass proto { TCP carp }\n",
        b"# R\xe9seau\npass out all # \xa4\xa4\n",
        b"table <fw> const { self }\npass in to <fw>\n",
        b"m = \"{ 10.0.0.1 10.0.0.2 }\"\ntable <t> { 192.0.2.9 }\npass from { $m, <t> }\n",
        b"table <m> { \\\n 0.0.0.0/8 \\ # x\n 10.0.0.0/8 \\ # y\n }\n",
        b"pass in on any proto tcp to port ssh\npass in on ! any\n",
        b"queue rootq on em0 bandwidth 100M burst 200M for 100ms max 100M\n\
          queue std parent rootq bandwidth 20M min 5M burst 10M for 50ms max 40M default qlimit 100\n",
        b"pass out on em0 route-to 198.51.100.1@em1\n",
        b"pass out route-to (em1 198.51.100.1)\n",
        b"pass out route-to { 198.51.100.1@em1 198.51.100.3@em1 }\n",
        b"pass out on em0 af-to inet6 from 2001:db8::1\n",
        b"pass out on em0 inet6 to 64:ff9b::/96 af-to inet from (em0:0)\n",
    ] {
        fixed_point(&o, text);
    }
}

// ----- 9. from the walk through parse.y ---------------------------------

/// `queue (name, priority-name)` in a rule (parse.y's qname), and `any` in a
/// host list making the whole list `any` (host_list drops the rest).
#[test]
fn queue_pair_and_any_in_a_list() {
    let text = b"queue r on em0 bandwidth 10M\n\
          queue q parent r bandwidth 5M default\n\
          queue p parent r bandwidth 1M\n\
          pass out on em0 queue (q, p)\n\
          pass out on em0 queue (q)\n\
          pass from { any, 10.0.0.1 } to { 10.0.0.2 { any } }\n";
    let out = ok(&opts(), text);
    assert_eq!(
        out.stdout,
        "queue r on em0 bandwidth 10M\n\
         queue q parent r bandwidth 5M default\n\
         queue p parent r bandwidth 1M\n\
         pass out on em0 all flags S/SA set (queue(q, p))\n\
         pass out on em0 all flags S/SA set (queue q)\n\
         pass all flags S/SA\n"
    );
    fixed_point(&opts(), text);
}

/// An interface or group with no address of the kind a rule asks for is
/// refused, as pfctl refuses it ("no IP address found for ..."), never
/// read as an empty list (which would leave `from any`): a bridge member
/// with no address, `:peer` of a port without one, `:network` of an
/// interface with only a link-local address, an entry in a list.
#[test]
fn an_interface_without_the_address_asked_for_is_refused() {
    let o = opts_with(
        "[[interface]]\nname = \"em5\"\ngroups = [\"grp\"]\naddresses = []\n\
         [[interface]]\nname = \"em6\"\naddresses = [\"fe80::6/64\"]\n",
    );
    for rule in [
        "pass in from em5\n",
        "pass in from grp\n",
        "pass in from em5:network\n",
        "pass in from em5:0\n",
        "pass in on em0 proto tcp from em0:peer to any port 81\n",
        "pass in from em6:network\n",
        "pass in from { em0:peer 192.0.2.1 }\n",
        "pass out to em5:broadcast\n",
    ] {
        let out = parse_with(&o, rule.as_bytes());
        assert!(out.errors > 0, "{rule}: accepted as {}", out.stdout);
        assert!(
            out.stderr
                .iter()
                .any(|l| l.contains("no IP address found for")),
            "{rule}: {:?}",
            out.stderr
        );
    }
    // What does have addresses still loads.
    ok(
        &o,
        b"pass in from em0\npass in from em0:network\npass in from em6\n",
    );
    ok(&o, b"pass in from (em5)\n");
}

/// `os` applies to TCP SYNs only: a rule whose protocols leave TCP out is
/// refused as pfctl refuses it; with TCP, or no protocol, it loads.
#[test]
fn os_only_applies_to_tcp() {
    let o = opts();
    let out = parse_bytes(
        "pf.conf",
        None,
        b"pass in proto udp from any os \"Windows\" to any\npass in proto { udp icmp } os \"Linux\"\n".to_vec(),
        &o,
    );
    let err = out.stderr.join("\n");
    assert_eq!(out.errors, 2, "{err}");
    assert!(
        err.contains("pf.conf:1: OS fingerprinting only apply to tcp")
            && err.contains("pf.conf:2: OS fingerprinting only apply to tcp"),
        "{err}"
    );
    ok(
        &o,
        b"pass in proto tcp from any os \"Windows\" to any\npass in from any os \"Linux\"\n",
    );
}

/// A quoted string left open to the end of the file is named as pfctl
/// names it.
#[test]
fn an_open_quote_is_named() {
    let out = parse_bytes(
        "pf.conf",
        None,
        b"pass all\nanchor \"ftp-proxy/*\npass out all\n".to_vec(),
        &opts(),
    );
    let err = out.stderr.join("\n");
    assert!(out.errors > 0, "{err}");
    assert!(
        err.contains("pf.conf:4: reached end of file while parsing quoted string"),
        "{err}"
    );
}

/// The combinations pfctl refuses, each named with its line and pfctl's
/// message; the same rules written as pfctl wants them load.
#[test]
fn rules_pfctl_refuses_are_refused() {
    let o = opts();
    for (rule, message) in [
        (
            "pass on em0 from any to any nat-to 203.0.113.9",
            "nat-to and rdr-to require a direction",
        ),
        (
            "pass in on em0 proto tcp to port 80 rdr-to 198.51.100.9",
            "",
        ),
        (
            "pass out on em0 from 192.0.2.0/24 nat-to 203.0.113.9 no state",
            "nat-to and rdr-to require keep state",
        ),
        (
            "pass on em0 route-to (em1 198.51.100.1)",
            "direction must be explicit with rules that specify routing",
        ),
        (
            "match out on em1 route-to (em0 192.0.2.1)",
            "route-to, reply-to and dup-to are not supported on match rules",
        ),
        (
            "block out on em1 route-to (em0 192.0.2.1)",
            "route-to, reply-to and dup-to are not supported on block rules",
        ),
        (
            "match in on em0 proto tcp divert-to 127.0.0.1 port 8080",
            "divert is not supported on match rules",
        ),
        (
            "block return-rst in on em0 proto udp",
            "return-rst can only be applied to TCP rules",
        ),
        (
            "block return-rst in on em0",
            "return-rst can only be applied to TCP rules",
        ),
        (
            "block in on em0 proto tcp keep state",
            "keep state is great, but only for pass rules",
        ),
        (
            "block in on em0 allow-opts",
            "allow-opts can only be specified for pass rules",
        ),
        (
            "pass in proto tcp keep state (overload <bf>)",
            "'overload' requires 'max-src-conn' or 'max-src-conn-rate'",
        ),
        (
            "pass in proto tcp modulate state (sloppy)",
            "sloppy state matching cannot be used with synproxy state or modulate state",
        ),
        (
            "match in on em0 inet6 scrub (no-df)",
            "address family inet6 does not support scrub options no-df, random-id",
        ),
        ("pass in proto icmp user 0", "user only applies to tcp/udp"),
    ] {
        let text = format!("table <bf> persist\n{rule}\n");
        let out = parse_with(&o, text.as_bytes());
        let err = out.stderr.join("\n");
        if message.is_empty() {
            assert_eq!(out.errors, 0, "{rule}: {err}");
            continue;
        }
        assert!(out.errors > 0, "{rule}: loaded");
        assert!(
            err.contains(&format!("pf.conf:2: {message}")),
            "{rule}: {err}"
        );
    }
    // As pfctl wants them: they load.
    ok(
        &o,
        b"table <bf> persist\n\
          pass out on em0 from 192.0.2.0/24 nat-to 203.0.113.9\n\
          match out on em0 nat-to 203.0.113.9\n\
          pass out on em0 route-to (em1 198.51.100.1)\n\
          block return-rst in on em0 proto tcp\n\
          block return in on em0 proto udp\n\
          pass in proto tcp keep state (max-src-conn 5, overload <bf>)\n\
          pass in proto tcp keep state (sloppy)\n\
          match in on em0 inet scrub (no-df)\n\
          match in on em0 inet6 scrub (max-mss 1400)\n\
          pass in proto tcp user 0\n\
          pass on em0 from 192.0.2.9 binat-to 203.0.113.9\n\
          pass on em0 dup-to (em1 198.51.100.9)\n",
    );
}

/// `prio N` matches the packet's queueing priority (it is not `set
/// prio`), and `max-src-states` alone tracks sources globally, both
/// printed as pfctl prints them.
#[test]
fn prio_matches_and_max_src_states_is_global() {
    let o = opts();
    let out = ok(
        &o,
        b"pass in on em0 prio 7\npass in proto tcp keep state (max-src-states 3)\n",
    );
    let printed = &out.stdout;
    assert!(
        printed.contains("pass in on em0 all flags S/SA prio 7"),
        "{printed}"
    );
    assert!(!printed.contains("set (prio"), "{printed}");
    assert!(
        printed.contains("keep state (source-track global, max-src-states 3)"),
        "{printed}"
    );
}

/// A port range with a side missing names the range, not an empty port.
#[test]
fn a_port_range_with_a_side_missing_is_named() {
    for text in [
        "pass in proto tcp to port 22:\n",
        "pass in proto tcp to port :22\n",
    ] {
        let out = parse_with(&opts(), text.as_bytes());
        let err = out.stderr.join("\n");
        assert!(out.errors > 0, "{text}");
        assert!(err.contains("a port on each side of ':'"), "{err}");
    }
}

/// A range written high end first loads (pfctl takes it) with a warning:
/// it matches no port.
#[test]
fn a_port_range_high_end_first_is_warned_about() {
    let out = parse_with(&opts(), b"pass in proto tcp to port 34:12\n");
    assert_eq!(out.errors, 0, "{:?}", out.stderr);
    let err = out.stderr.join("\n");
    assert!(
        err.contains(":1: warning: port range '34:12' runs from 34 down to 12: it matches no port"),
        "{err}"
    );
    let out = parse_with(&opts(), b"pass in proto tcp to port 12:34\n");
    assert!(out.stderr.is_empty(), "{:?}", out.stderr);
}

/// antispoof's rules drop whatever `set block-policy` says, as pfctl's
/// do (an answer would go to the forged source).
#[test]
fn antispoof_drops_under_block_policy_return() {
    let out = ok(
        &opts(),
        b"set block-policy return\nantispoof for em0 inet\n",
    );
    assert!(
        out.stdout
            .contains("block drop in on ! em0 inet from 192.0.2.0/24 to any"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("block return in"), "{}", out.stdout);
}

/// antispoof for an interface without addresses (a bridge member) makes
/// no rule, as pfctl, and says so; the others of the list keep theirs.
/// (`from any` in its place blocked whatever came in on every other
/// interface.)
#[test]
fn antispoof_for_an_interface_without_addresses_makes_no_rule() {
    let o = opts_with("[[interface]]\nname = \"em2\"\naddresses = []\n");
    let out = ok(&o, b"antispoof quick for { em2 em0 }\n");
    assert!(!out.stdout.contains("em2"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("block drop in quick on ! em0 inet from 192.0.2.0/24 to any"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.lines().all(|l| !l.ends_with("all")),
        "{}",
        out.stdout
    );
    let err = out.stderr.join("\n");
    assert!(
        err.contains("pf.conf:1: warning: antispoof for em2: it has no address, so no rule"),
        "{err}"
    );
}

#[test]
fn syncookies_are_read_and_printed_as_pfctl_does_and_bad_percentages_refused() {
    let o = opts();
    for (text, printed) in [
        ("set syncookies never\n", "set syncookies never\n"),
        ("set syncookies always\n", "set syncookies always\n"),
        (
            "set syncookies adaptive\n",
            "set syncookies adaptive (start 25%, end 12%)\n",
        ),
        (
            "set syncookies adaptive (start 30%, end 10.5%)\n",
            "set syncookies adaptive (start 30%, end 10.5%)\n",
        ),
    ] {
        let out = ok(&o, text.as_bytes());
        assert_eq!(out.stdout, printed, "{text}");
        // Enforced: nothing warned.
        assert!(out.stderr.is_empty(), "{text}: {:?}", out.stderr);
        fixed_point(&o, printed.as_bytes());
    }
    for (text, want) in [
        (
            "set syncookies adaptive (start 130%)\n",
            "pf.conf:1: illegal percentage value",
        ),
        (
            "set syncookies adaptive (start 0%)\n",
            "pf.conf:1: illegal percentage value",
        ),
        (
            "set syncookies adaptive (start NaN%)\n",
            "pf.conf:1: illegal percentage value",
        ),
        (
            "set syncookies adaptive (start 10%, end 20%)\n",
            "pf.conf:1: syncookie end (20%) must not be above start (10%)",
        ),
        (
            "set syncookies adaptive (start 10%)\n",
            "pf.conf:1: syncookie end (12%) must not be above start (10%)",
        ),
        (
            "set syncookies adaptive (begin 30%)\n",
            "pf.conf:1: illegal syncookie option",
        ),
        (
            "set syncookies adaptive (start 30)\n",
            "pf.conf:1: syntax error",
        ),
        ("set syncookies sometimes\n", "pf.conf:1: syntax error"),
    ] {
        let out = parse_with(&o, text.as_bytes());
        assert!(out.errors > 0, "{text}: accepted");
        let err = out.stderr.join("\n");
        assert!(err.contains(want), "{text}: want {want}, got {err}");
    }
}

/// What pfctl refuses and a probe found accepted: reserved anchor names,
/// inline anchors with a path or defined twice, ranges in tables, packets
/// sent to a queue that has children. Each with pfctl's words.
#[test]
fn what_pfctl_refuses_of_anchors_tables_and_queues() {
    for (text, want) in [
        (
            "anchor \"_x\"\n",
            "pf.conf:1: anchor names beginning with '_' are reserved for internal use",
        ),
        (
            "anchor \"a/_x\" {\npass\n}\n",
            "pf.conf:1: anchor names beginning with '_' are reserved for internal use",
        ),
        (
            "load anchor \"_l\" from \"/dev/null\"\n",
            "pf.conf:1: anchor names beginning with '_' are reserved for internal use",
        ),
        (
            "anchor \"x/y\" {\npass\n}\n",
            "pf.conf:1: anchor paths containing '/' cannot be used for inline anchors.",
        ),
        (
            "anchor \"a\" {\npass\n}\nanchor \"a\" {\nblock\n}\n",
            "pf.conf:4: inline anchor 'a' already exists",
        ),
        (
            "table <r> { 198.51.100.1 - 198.51.100.20 }\n",
            "pf.conf:1: address ranges are not permitted inside tables",
        ),
        (
            "queue root on em0 bandwidth 10M\nqueue a parent root bandwidth 5M default\n\
             queue b parent root bandwidth 5M\nqueue b1 parent b bandwidth 1M\n\
             pass out on em0 set queue b\n",
            "queue b: packets must be assigned to leaf queues only",
        ),
    ] {
        let out = parse_with(&opts(), text.as_bytes());
        assert!(out.errors > 0, "accepted: {text}");
        let err = out.stderr.join("\n");
        assert!(err.contains(want), "{text}: {err}");
    }
    // Inline anchors of one name in different rulesets, a reference to an
    // inline anchor, and a leaf queue: all fine.
    ok(
        &opts(),
        b"anchor \"a\" {\nanchor \"b\" {\npass\n}\n}\nanchor \"b\" {\npass\n}\nanchor \"a\"\n",
    );
    ok(
        &opts(),
        b"queue root on em0 bandwidth 10M\nqueue a parent root bandwidth 5M default\n\
          queue b parent root bandwidth 5M\nqueue b1 parent b bandwidth 1M\n\
          pass out on em0 set queue b1\n",
    );
}

/// Accepted but warned, with the line: a rule on another routing domain
/// (Linux here has one), `tcp.tsdiff` and `set debug` (not enforced).
#[test]
fn rdomain_tsdiff_and_debug_are_warned_about() {
    let out = ok(
        &opts(),
        b"block in all\npass in on rdomain 1 all no state\n",
    );
    let err = out.stderr.join("\n");
    assert!(
        err.contains("pf.conf:2: warning: on rdomain 1: Palisade has only routing domain 0"),
        "{err}"
    );
    let out = ok(&opts(), b"pass in on rdomain 0 all\n");
    assert!(out.stderr.is_empty(), "{:?}", out.stderr);
    let out = ok(
        &opts(),
        b"set timeout { frag 30, tcp.tsdiff 20 }\nset debug debug\n\
          pass in proto tcp keep state (tcp.tsdiff 10)\n",
    );
    assert!(out.stdout.contains("tcp.tsdiff 20"), "{}", out.stdout);
    let warned: Vec<String> = out.unenforced_warnings("pf.conf");
    for want in [
        "pf.conf:1: warning: set timeout tcp.tsdiff is parsed but not enforced",
        "pf.conf:2: warning: set debug is parsed but not enforced",
        "pf.conf:3: warning: timeout tcp.tsdiff is parsed but not enforced",
    ] {
        assert!(
            warned.iter().any(|w| w.starts_with(want)),
            "{want}: {warned:?}"
        );
    }
    // Two limits with nothing to bound (a probe found them silent).
    let out = ok(
        &opts(),
        b"set limit anchors 10
set limit { pktdelay-pkts 50, states 100 }
pass
",
    );
    let warned: Vec<String> = out.unenforced_warnings("pf.conf");
    for want in [
        "pf.conf:1: warning: set limit anchors is parsed but not enforced",
        "pf.conf:2: warning: set limit pktdelay-pkts is parsed but not enforced",
    ] {
        assert!(
            warned.iter().any(|w| w.starts_with(want)),
            "{want}: {warned:?}"
        );
    }
    assert_eq!(warned.len(), 2, "{warned:?}");
}

/// `weight N` on a table entry (pfctl reads it for weighted pools) loads,
/// warned as not enforced; out of range it is refused as pfctl does.
#[test]
fn table_entry_weights_are_read_and_warned() {
    let out = ok(
        &opts(),
        b"table <w> { 192.0.2.1 weight 2, 192.0.2.2 }\npass in from <w>\n",
    );
    assert!(
        out.stdout.contains("table <w> { 192.0.2.1 192.0.2.2 }"),
        "{}",
        out.stdout
    );
    let w = out.unenforced_warnings("pf.conf");
    assert!(
        w.iter()
            .any(|l| l.starts_with("pf.conf:1: warning: weight on table entries")),
        "{w:?}"
    );
    let out = parse_with(&opts(), b"table <w> { 192.0.2.1 weight 0 }\n");
    assert!(
        out.stderr
            .join("\n")
            .contains("pf.conf:1: weight out of range"),
        "{:?}",
        out.stderr
    );
}

/// pf keeps a `load anchor` file's tables in the anchor: they are marked
/// with it (the filter keeps them apart, tests/misc.rs in
/// palisade-filter), without a warning.
#[test]
fn an_anchor_files_tables_are_marked_as_the_anchors() {
    let d = std::env::temp_dir().join(format!("palisade-compat-at-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let f = d.join("foo.conf");
    std::fs::write(
        &f,
        "table <bad> { 198.51.100.9 }\nblock in quick from { <bad>, <main> }\n\
         nat on em0 inet from any to any -> { <bad>, 198.51.100.1 } round-robin\n",
    )
    .unwrap();
    let text = format!(
        "table <bad> {{ 192.0.2.1 }}\ntable <main> {{ 192.0.2.2 }}\nblock in quick from <bad>\nanchor \"/foo\"\nload anchor \"/foo\" from \"{}\"\n",
        f.display()
    );
    let out = ok(&opts(), text.as_bytes());
    std::fs::remove_dir_all(&d).unwrap();
    assert!(out.stderr.is_empty(), "{:?}", out.stderr);
    let tables: Vec<(&str, &str)> = out
        .config
        .tables
        .iter()
        .map(|t| (t.anchor.as_str(), t.name.as_str()))
        .collect();
    assert_eq!(tables, [("", "bad"), ("", "main"), ("foo", "bad")]);
    let scoped = out.config.anchor_tables_scoped();
    let names: Vec<&str> = scoped.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["bad", "main", "foo/bad"]);
    let printed: Vec<String> = scoped.load_anchors[0]
        .ruleset
        .rules
        .iter()
        .map(|r| palisade_conf::print::rule_str(r, 0))
        .collect();
    assert_eq!(
        printed,
        [
            "block drop in quick from <foo/bad> to any",
            "block drop in quick from <main> to any",
            "nat on em0 inet all -> { <foo/bad>, 198.51.100.1 } round-robin"
        ]
    );
    // The pool's list (what the translation picks from) names the
    // anchor's table too.
    let list = scoped.load_anchors[0].ruleset.rules[2]
        .nat
        .as_ref()
        .and_then(|p| p.list.clone())
        .expect("a list");
    assert!(
        list.iter()
            .any(|a| *a == palisade_conf::ir::Addr::Table("foo/bad".into())),
        "{list:?}"
    );
}

/// FreeBSD's `ridentifier N` (pfSense writes one on every rule, and
/// `tracker N` before 2.6): kept and printed as FreeBSD's pfctl does; a
/// value past 32 bits is an error.
#[test]
fn ridentifier_and_pfsenses_tracker() {
    let out = ok(
        &opts(),
        b"block in log inet all ridentifier 1000000103 label \"Default deny rule IPv4\"\n\
          pass in quick on em1 inet proto tcp to port 22 tracker 10000 label \"anti-lockout rule\"\n",
    );
    assert_eq!(
        out.stdout,
        "block drop in log inet all label \"Default deny rule IPv4\" ridentifier 1000000103\n\
         pass in quick on em1 inet proto tcp from any to any port = 22 flags S/SA label \"anti-lockout rule\" ridentifier 10000\n"
    );
    assert_eq!(out.config.main.rules[0].ridentifier, Some(1000000103));
    let bad = parse_with(&opts(), b"pass ridentifier 4294967296\n");
    assert_eq!(
        bad.stderr[0],
        "pf.conf:1: illegal ridentifier value 4294967296"
    );
}

/// More of what pfSense's rule files hold: FreeBSD's `set keepcounters`,
/// its `set debug` names, dummynet limiters, `ridentifier` on antispoof;
/// the ones not enforced warned about.
#[test]
fn pfsense_rule_file_idioms() {
    let out = ok(
        &opts(),
        b"set keepcounters\nset debug urgent\n\
          antispoof log for em0 ridentifier 1000001470\n\
          pass in quick on em1 inet from any to any ridentifier 1770000002 dnpipe ( 1,2 ) keep state label \"x\"\n\
          pass in on em1 dnqueue 3\n",
    );
    assert!(
        out.stdout
            .starts_with("set keepcounters\nset debug urgent\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "block drop in log on ! em0 inet from 192.0.2.0/24 to any ridentifier 1000001470\n"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("ridentifier 1770000002 dnpipe(1, 2)\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("pass in on em1 all flags S/SA dnqueue 3\n"),
        "{}",
        out.stdout
    );
    let two = parse_with(&opts(), b"pass label \"USER_RULE: web\" label \"id:17\"\n");
    assert_eq!(two.errors, 0);
    assert_eq!(
        two.config.main.rules[0].label.as_deref(),
        Some("USER_RULE: web")
    );
    assert!(
        two.stderr
            .iter()
            .any(|l| l.contains("keeps its first label only")),
        "{:?}",
        two.stderr
    );
    let warned = out.unenforced_warnings("pf.conf");
    assert!(
        warned.iter().any(|w| w.contains("set keepcounters")),
        "{warned:?}"
    );
    assert!(
        warned.iter().any(|w| w.contains("dnpipe/dnqueue")),
        "{warned:?}"
    );
}

/// A file saved with a UTF-8 byte order mark (Windows editors write one)
/// loads as without it: the mark was read as part of the first line, so
/// its macro was never defined and later lines failed.
#[test]
fn a_byte_order_mark_is_not_part_of_the_first_line() {
    let text = b"\xef\xbb\xbfext_if = \"em0\"\npass in on $ext_if proto tcp to port 22\n";
    let out = ok(&opts(), text);
    assert!(
        out.stdout
            .contains("pass in on em0 proto tcp from any to any port = 22"),
        "{}",
        out.stdout
    );
}

/// `binat-to` between netblocks without a pool type maps every address
/// to the pool's own, as pf does (pfctl leaves the pool without a type):
/// said at load, with the way to a 1:1 mapping; `bitmask` and single
/// hosts load silently.
#[test]
fn binat_to_netblocks_without_bitmask_are_warned_about() {
    let o = opts();
    // (Once, however many rules it expands to.)
    let out = ok(
        &o,
        b"pass on { em0 em1 } inet proto { tcp udp } from 10.0.0.0/28 to any binat-to 198.51.100.16/28\n",
    );
    let said: Vec<&String> = out
        .stderr
        .iter()
        .filter(|l| l.contains("binat-to"))
        .collect();
    assert_eq!(said.len(), 1, "{:?}", out.stderr);
    assert!(
        said[0].starts_with("pf.conf:1: warning: binat-to 198.51.100.16/28")
            && said[0].contains("to 10.0.0.0, as pf does")
            && said[0].contains("add `bitmask`"),
        "{:?}",
        out.stderr
    );
    let out = ok(
        &o,
        b"pass on em0 inet6 from 2001:db8:1::/64 to any binat-to 2001:db8:ff::/64\n",
    );
    assert!(
        out.stderr
            .iter()
            .any(|l| l.contains("binat-to 2001:db8:ff::/64 without a pool type")),
        "{:?}",
        out.stderr
    );
    for quiet in [
        "pass on em0 inet from 10.0.0.0/28 to any binat-to 198.51.100.16/28 bitmask\n",
        "pass on em0 inet from 10.0.0.1 to any binat-to 198.51.100.16\n",
        "pass on em0 inet6 from 2001:db8:1::1 to any binat-to 2001:db8:ff::1\n",
    ] {
        let out = ok(&o, quiet.as_bytes());
        assert!(
            !out.stderr.iter().any(|l| l.contains("binat-to")),
            "{quiet}: {:?}",
            out.stderr
        );
    }
}

/// A list of translation or routing addresses becomes a table, which
/// pf's pools take round-robin, least-states, random or source-hash
/// (OpenBSD's PF_POOL_DYNTYPE): each loads with its kind (a probe's
/// `nat-to { ... } random` was refused); `bitmask` over a list is
/// refused with pfctl's message. `least-states` is warned about (no
/// state count per address is kept).
#[test]
fn pool_kinds_over_address_lists() {
    let out = ok(
        &opts(),
        b"match out on em0 inet nat-to { 203.0.113.10 203.0.113.11 } random\n\
          match out on em0 inet nat-to { 203.0.113.10 203.0.113.11 } source-hash 0x0123456789abcdef0123456789abcdef\n\
          pass in on em0 proto tcp to port 80 rdr-to { 198.51.100.20 198.51.100.21 } least-states sticky-address\n",
    );
    assert_eq!(
        out.stdout,
        "table <__automatic_0> const { 203.0.113.10 203.0.113.11 }\n\
         table <__automatic_1> const { 203.0.113.10 203.0.113.11 }\n\
         table <__automatic_2> const { 198.51.100.20 198.51.100.21 }\n\
         match out on em0 inet all nat-to <__automatic_0> random\n\
         match out on em0 inet all nat-to <__automatic_1> source-hash 0x0123456789abcdef0123456789abcdef\n\
         pass in on em0 inet proto tcp from any to any port = 80 flags S/SA rdr-to <__automatic_2> least-states sticky-address\n"
    );
    assert!(
        out.unenforced
            .iter()
            .any(|u| u.what.starts_with("least-states")),
        "{:?}",
        out.unenforced
    );
    let out = parse_with(
        &opts(),
        b"match out on em0 inet nat-to { 203.0.113.10 203.0.113.11 } bitmask\n",
    );
    assert!(
        out.stderr.iter().any(|l| l
            == "pf.conf:1: pool type is not valid for multiple translation or routing addresses"),
        "{:?}",
        out.stderr
    );
}

/// `weight` after pool addresses (pfctl's optweight) loads, warned about
/// as not used; out of range it is refused (a probe's `rdr-to ... weight
/// 2` was a syntax error).
#[test]
fn pool_address_weights_load_warned() {
    let out = ok(
        &opts(),
        b"pass in on em0 proto tcp to port 80 rdr-to 198.51.100.20 weight 2\n\
          pass in on em0 proto tcp to port 81 rdr-to { 198.51.100.20 weight 2, 198.51.100.21 weight 1 } least-states\n\
          pass in on em1 route-to { 192.0.2.1@em0 weight 2, 198.51.100.1@em1 }\n\
          pass in on em1 proto tcp to port 22 reply-to 192.0.2.1@em0 weight 3\n",
    );
    assert!(
        out.unenforced
            .iter()
            .any(|u| u.what == "weight on pool addresses"),
        "{:?}",
        out.unenforced
    );
    assert!(
        out.stdout.contains("rdr-to 198.51.100.20\n"),
        "{}",
        out.stdout
    );
    let out = parse_with(
        &opts(),
        b"pass in on em0 proto tcp to port 80 rdr-to 198.51.100.20 weight 0\n",
    );
    assert!(
        out.stderr
            .iter()
            .any(|l| l == "pf.conf:1: weight out of range"),
        "{:?}",
        out.stderr
    );
}

/// af-to with nat-to, rdr-to or binat-to, in either order, is refused as
/// pfctl refuses it (the other translation was dropped silently).
#[test]
fn af_to_with_another_translation_is_refused() {
    for rule in [
        "pass in on em0 inet proto tcp to port 80 nat-to 203.0.113.2 af-to inet6 from 2001:db8::1\n",
        "pass in on em0 inet proto tcp to port 80 af-to inet6 from 2001:db8::1 rdr-to 198.51.100.2\n",
        "pass in on em0 inet proto tcp to port 80 af-to inet6 from 2001:db8::1 to 2001:db8::5 nat-to 203.0.113.2\n",
        "pass in on em0 inet proto tcp to port 80 binat-to 203.0.113.2 af-to inet6 from 2001:db8::1\n",
    ] {
        let out = parse_with(&opts(), rule.as_bytes());
        assert!(out.errors > 0, "{rule}: accepted as {}", out.stdout);
        assert!(
            out.stderr.iter().any(|l| l.contains("respecif")),
            "{rule}: {:?}",
            out.stderr
        );
    }
    ok(
        &opts(),
        b"pass in on em0 inet proto tcp to port 80 af-to inet6 from 2001:db8::1 to 2001:db8::5\n",
    );
}

/// FreeBSD's `set fail-policy`: `drop` (what Palisade does) loads,
/// `return` loads warned about (a probe's pfSense file was a syntax
/// error there).
#[test]
fn set_fail_policy_loads() {
    let out = ok(
        &opts(),
        b"set fail-policy drop\nset fail-policy return\npass\n",
    );
    assert_eq!(
        out.stdout,
        "set fail-policy drop\nset fail-policy return\npass all flags S/SA\n"
    );
    assert_eq!(
        out.unenforced
            .iter()
            .map(|u| (u.line, u.what.as_str()))
            .collect::<Vec<_>>(),
        [(2, "set fail-policy return")]
    );
}

/// FreeBSD's ALTQ (a pfSense shaper) is refused as on OpenBSD, with one
/// error per line that says so, not a syntax error per queue line.
#[test]
fn altq_is_refused_clearly() {
    let out = parse_with(
        &opts(),
        b"altq on em0 priq bandwidth 10Mb queue { q1 q2 }\n\
          queue q1 priority 1 priq(default)\n\
          queue q2 priority 7\n\
          queue std bandwidth 5Mb cbq(default)\n\
          queue web bandwidth 50% cbq(borrow)\n",
    );
    assert_eq!(
        out.stderr,
        [
            "pf.conf:1: altq is not supported (FreeBSD's ALTQ, as on OpenBSD); use queue (OpenBSD's syntax: read, not enforced)",
            "pf.conf:2: queue q1: FreeBSD's ALTQ queues are not supported (as on OpenBSD); OpenBSD's `queue NAME on IF bandwidth ...` is read, not enforced",
            "pf.conf:3: queue q2: FreeBSD's ALTQ queues are not supported (as on OpenBSD); OpenBSD's `queue NAME on IF bandwidth ...` is read, not enforced",
            "pf.conf:4: queue std: FreeBSD's ALTQ queues are not supported (as on OpenBSD); OpenBSD's `queue NAME on IF bandwidth ...` is read, not enforced",
            "pf.conf:5: queue web: FreeBSD's ALTQ queues are not supported (as on OpenBSD); OpenBSD's `queue NAME on IF bandwidth ...` is read, not enforced",
        ]
    );
}
