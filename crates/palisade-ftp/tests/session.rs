//! One proxied session on a virtual clock: the rewriting of PORT, EPRT,
//! 227 and 229, the anchor's rules for each data connection (and that pf
//! reads them), the refusals, and the session's end.

use std::net::SocketAddr;

use palisade_ftp::{Config, Ends, Output, Session};

const S: u64 = 1_000_000;

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Reverse mode as S5 sets it up: a client outside connects to the
/// firewall's address, the proxy connects to the server inside.
fn reverse() -> Ends {
    Ends {
        client: sa("203.0.113.50:40000"),
        orig_server: sa("198.51.100.1:21"),
        server: sa("192.0.2.10:21"),
        proxy: "192.0.2.1".parse().unwrap(),
    }
}

fn reverse6() -> Ends {
    Ends {
        client: sa("[2001:db8:1::50]:40000"),
        orig_server: sa("[2001:db8:1::1]:21"),
        server: sa("[2001:db8::10]:21"),
        proxy: "2001:db8::1".parse().unwrap(),
    }
}

#[derive(Default, Debug)]
struct Seen {
    to_server: String,
    to_client: String,
    rules: Vec<(String, String)>,
    refused: Vec<String>,
    closed: Option<String>,
}

fn drain(s: &mut Session) -> Seen {
    let mut seen = Seen::default();
    while let Some(o) = s.poll_output() {
        match o {
            Output::ToServer(b) => seen.to_server += &String::from_utf8_lossy(&b),
            Output::ToClient(b) => seen.to_client += &String::from_utf8_lossy(&b),
            Output::Rules { anchor, rules } => seen.rules.push((anchor, rules)),
            Output::Log { refused: true, msg } => seen.refused.push(msg),
            Output::Log { .. } => {}
            Output::Close(why) => seen.closed = Some(why),
        }
    }
    seen
}

/// A session whose server has greeted (the client's lines wait until
/// then).
fn greeted(id: u64, cfg: Config, ends: Ends) -> Session {
    let mut s = Session::new(id, cfg, ends, 0);
    s.from_server(0, b"220 test server\r\n");
    drain(&mut s);
    s
}

/// pf reads the rules (as `anchor ... load` would).
fn loads(rules: &str) {
    let out = palisade_conf::parse_bytes(
        "ftp-proxy/7",
        None,
        rules.as_bytes().to_vec(),
        &palisade_conf::ParseOptions::default(),
    );
    assert_eq!(out.errors, 0, "{rules}\n{:?}", out.stderr);
    assert_eq!(out.config.main.rules.len(), 2, "{rules}");
}

#[test]
fn pasv_227_is_rewritten_to_the_address_the_client_knows_with_rules_for_it() {
    let mut s = greeted(7, Config::default(), reverse());
    s.from_client(0, b"USER ftp\r\nPASV\r\n");
    let seen = drain(&mut s);
    assert_eq!(seen.to_server, "USER ftp\r\nPASV\r\n");
    s.from_server(S, b"227 Entering Passive Mode (192,0,2,10,195,80).\r\n");
    let seen = drain(&mut s);
    assert_eq!(
        seen.to_client,
        "227 Entering Passive Mode (198,51,100,1,195,80)\r\n"
    );
    assert_eq!(seen.rules.len(), 1);
    let (anchor, rules) = &seen.rules[0];
    assert_eq!(anchor, "ftp-proxy/7");
    assert_eq!(
        rules,
        "pass in quick inet proto tcp from 203.0.113.50 to 198.51.100.1 port 50000 flags S/SA keep state (max 1) rdr-to 192.0.2.10 port 50000\n\
         pass out quick inet proto tcp from 203.0.113.50 to 192.0.2.10 port 50000 flags S/SA keep state (max 1) nat-to 192.0.2.1\n"
    );
    loads(rules);
}

#[test]
fn epsv_229_keeps_its_port_over_ipv6() {
    let mut s = greeted(7, Config::default(), reverse6());
    s.from_client(0, b"EPSV\r\n");
    assert_eq!(drain(&mut s).to_server, "EPSV\r\n");
    s.from_server(0, b"229 Entering Extended Passive Mode (|||6446|)\r\n");
    let seen = drain(&mut s);
    assert_eq!(
        seen.to_client,
        "229 Entering Extended Passive Mode (|||6446|)\r\n"
    );
    let rules = &seen.rules[0].1;
    assert!(
        rules.starts_with(
            "pass in quick inet6 proto tcp from 2001:db8:1::50 to 2001:db8:1::1 port 6446 "
        ),
        "{rules}"
    );
    assert!(rules.contains("rdr-to 2001:db8::10 port 6446"), "{rules}");
    assert!(rules.contains("nat-to 2001:db8::1\n"), "{rules}");
    loads(rules);
    // PASV cannot say an IPv6 address: refused, not relayed.
    s.from_client(0, b"PASV\r\n");
    let seen = drain(&mut s);
    assert_eq!(seen.to_server, "");
    assert!(seen.to_client.starts_with("500 "), "{seen:?}");
    assert_eq!(seen.refused.len(), 1);
}

#[test]
fn port_goes_to_the_server_as_the_proxys_own_port_with_rules_back_to_the_client() {
    let cfg = Config {
        log: 1,
        tag: Some("FTPDATA".into()),
        ..Config::default()
    };
    let mut s = greeted(7, cfg, reverse());
    s.from_client(0, b"PORT 203,0,113,50,156,64\r\n");
    let seen = drain(&mut s);
    let l = seen.to_server.clone();
    let Ok(palisade_ftp::parse::Command::Active {
        to,
        extended: false,
    }) = palisade_ftp::parse::command(&l)
    else {
        panic!("{l}");
    };
    assert_eq!(to.ip().to_string(), "192.0.2.1");
    assert!(to.port() >= 49152, "{to}");
    let rules = &seen.rules[0].1;
    // With a tag, `match` rules (not quick): the rules after the anchor
    // decide with `tagged`, as ftp-proxy(8)'s -T says.
    assert_eq!(
        rules,
        &format!(
            "match in log inet proto tcp from 192.0.2.10 to 192.0.2.1 port {} tag FTPDATA rdr-to 203.0.113.50 port 40000\n\
             match out log inet proto tcp from 192.0.2.10 to 203.0.113.50 port 40000 tag FTPDATA nat-to 198.51.100.1\n",
            to.port()
        )
    );
    loads(rules);
    // The server's answer goes back as it is.
    s.from_server(0, b"200 PORT command successful\r\n");
    assert_eq!(drain(&mut s).to_client, "200 PORT command successful\r\n");
    // A new negotiation replaces the anchor's rules (another port).
    s.from_client(0, b"PORT 203,0,113,50,156,65\r\n");
    let seen = drain(&mut s);
    assert_eq!(seen.rules.len(), 1);
    assert!(seen.rules[0].1.contains("rdr-to 203.0.113.50 port 40001"));
    assert_eq!(s.negotiations, 2);
}

#[test]
fn the_source_port_20_option_is_for_port_only() {
    let cfg = Config {
        rewrite_source_port: true,
        ..Config::default()
    };
    let mut s = greeted(3, cfg.clone(), reverse());
    s.from_client(0, b"PORT 203,0,113,50,156,64\r\n");
    let rules = drain(&mut s).rules[0].1.clone();
    assert!(
        rules.contains("pass out quick inet proto tcp from 192.0.2.10 to 203.0.113.50 port 40000 flags S/SA keep state (max 1) nat-to 198.51.100.1 port 20\n"),
        "{rules}"
    );
    loads(&rules);
    // EPRT (either family): the source port is left alone.
    s.from_client(0, b"EPRT |1|203.0.113.50|40001|\r\n");
    let rules = drain(&mut s).rules[0].1.clone();
    assert!(rules.contains("nat-to 198.51.100.1\n"), "{rules}");
    let mut s = greeted(3, cfg, reverse6());
    s.from_client(0, b"EPRT |2|2001:db8:1::50|50001|\r\n");
    let seen = drain(&mut s);
    assert!(
        seen.to_server.starts_with("EPRT |2|2001:db8::1|"),
        "{seen:?}"
    );
    let rules = &seen.rules[0].1;
    assert!(
        rules.contains("rdr-to 2001:db8:1::50 port 50001"),
        "{rules}"
    );
    assert!(rules.contains("nat-to 2001:db8:1::1\n"), "{rules}");
    assert_eq!(seen.rules[0].0, "ftp-proxy/3");
    loads(rules);
}

#[test]
fn bounce_low_ports_and_malformed_addresses_are_refused_and_the_session_goes_on() {
    let mut s = greeted(7, Config::default(), reverse());
    for (line, want) in [
        (&b"PORT 192,0,2,99,156,64\r\n"[..], "FTP bounce"),
        (b"EPRT |1|192.0.2.99|40000|\r\n", "FTP bounce"),
        (b"PORT 203,0,113,50,0,22\r\n", "below 1024"),
        (b"PORT 203,0,113,50,1\r\n", "six numbers"),
    ] {
        s.from_client(0, line);
        let seen = drain(&mut s);
        assert_eq!(seen.to_server, "", "{}", String::from_utf8_lossy(line));
        assert!(seen.to_client.starts_with("501 "), "{seen:?}");
        assert!(seen.refused[0].contains(want), "{seen:?}");
        assert!(seen.rules.is_empty());
        assert!(seen.closed.is_none());
    }
    // Over IPv6, PORT (IPv4 only) is told to use EPRT, and an EPRT of the
    // other family is refused as such, not as a bounce.
    let mut s6 = greeted(8, Config::default(), reverse6());
    for (line, want) in [
        (
            &b"PORT 203,0,113,50,200,10\r\n"[..],
            "PORT is not possible over IPv6: use EPRT",
        ),
        (
            b"EPRT |1|203.0.113.50|40000|\r\n",
            "on a session over another family",
        ),
    ] {
        s6.from_client(0, line);
        let seen = drain(&mut s6);
        assert_eq!(seen.to_server, "", "{}", String::from_utf8_lossy(line));
        assert!(seen.to_client.starts_with("501 "), "{seen:?}");
        assert!(seen.refused[0].contains(want), "{seen:?}");
    }
    // A malformed 227 from the server: the client hears 425, no rules.
    s.from_client(0, b"PASV\r\n");
    drain(&mut s);
    s.from_server(0, b"227 Entering Passive Mode (192,0,2,10,195)\r\n");
    let seen = drain(&mut s);
    assert!(seen.to_client.starts_with("425 "), "{seen:?}");
    assert_eq!(seen.refused.len(), 1);
    assert!(seen.rules.is_empty());
    // A server port below 1024: refused too.
    s.from_client(0, b"EPSV\r\n");
    drain(&mut s);
    s.from_server(0, b"229 Entering Extended Passive Mode (|||21|)\r\n");
    let seen = drain(&mut s);
    assert!(seen.to_client.starts_with("425 "), "{seen:?}");
    // And a good one still works.
    s.from_client(0, b"PASV\r\n");
    drain(&mut s);
    s.from_server(0, b"227 Entering Passive Mode (192,0,2,10,195,80)\r\n");
    let seen = drain(&mut s);
    assert_eq!(seen.rules.len(), 1);
    assert!(!s.is_closed());
}

#[test]
fn anonymous_only_refuses_other_users() {
    let cfg = Config {
        anonymous_only: true,
        ..Config::default()
    };
    let mut s = greeted(1, cfg, reverse());
    s.from_client(0, b"USER root\r\n");
    let seen = drain(&mut s);
    assert_eq!(seen.to_server, "");
    assert!(seen.to_client.starts_with("530 "));
    s.from_client(0, b"USER Anonymous\r\n");
    assert_eq!(drain(&mut s).to_server, "USER Anonymous\r\n");
}

#[test]
fn an_overlong_line_ends_the_session_and_empties_its_anchor() {
    let mut s = greeted(7, Config::default(), reverse());
    s.from_client(0, b"PASV\r\n");
    s.from_server(0, b"227 Entering Passive Mode (192,0,2,10,195,80)\r\n");
    drain(&mut s);
    // 100 KB without an end of line, in pieces.
    for _ in 0..100 {
        s.from_client(0, &[b'A'; 1024]);
    }
    let seen = drain(&mut s);
    assert_eq!(seen.to_server, "", "nothing of it is relayed");
    assert!(seen.closed.unwrap().contains("line of"));
    assert_eq!(seen.rules, [("ftp-proxy/7".to_string(), String::new())]);
    assert!(s.is_closed());
    // Nothing more comes out of a closed session.
    s.from_client(0, b"NOOP\r\n");
    assert!(s.poll_output().is_none());
}

#[test]
fn an_idle_session_ends_at_its_timeout() {
    let cfg = Config {
        idle_timeout: 30 * S,
        ..Config::default()
    };
    let mut s = greeted(7, cfg, reverse());
    s.from_client(10 * S, b"NOOP\r\n");
    drain(&mut s);
    assert_eq!(s.poll_timeout(), Some(40 * S));
    s.handle_timeout(39 * S);
    assert!(!s.is_closed());
    s.handle_timeout(40 * S);
    let seen = drain(&mut s);
    assert!(seen.closed.unwrap().contains("idle for 30 s"));
    // No negotiation: no anchor to empty.
    assert!(seen.rules.is_empty());
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn lines_split_anywhere_and_multiline_replies_pass_untouched() {
    let mut s = greeted(7, Config::default(), reverse());
    for b in b"PO"
        .chunks(1)
        .chain([&b"RT 203,0,113,50,156,64\r"[..], b"\n"])
    {
        s.from_client(0, b);
    }
    let seen = drain(&mut s);
    assert!(seen.to_server.starts_with("PORT 192,0,2,1,"), "{seen:?}");
    // A multi-line reply whose inner line looks like a 227 is not read as
    // one.
    s.from_server(
        0,
        b"211-Status\r\n227 Entering Passive Mode (192,0,2,10,195,80)\r\n211 End\r\n",
    );
    let seen = drain(&mut s);
    assert_eq!(
        seen.to_client,
        "211-Status\r\n227 Entering Passive Mode (192,0,2,10,195,80)\r\n211 End\r\n"
    );
    assert!(seen.rules.is_empty());
    // Bytes that are not UTF-8 (a Latin-1 file name) are relayed as they
    // are.
    s.from_client(0, b"RETR caf\xe9.txt\r\n");
    let mut raw = Vec::new();
    while let Some(o) = s.poll_output() {
        if let Output::ToServer(b) = o {
            raw.extend(b);
        }
    }
    assert_eq!(raw, b"RETR caf\xe9.txt\r\n");
}

#[test]
fn either_side_closing_ends_the_session() {
    let mut s = greeted(9, Config::default(), reverse());
    s.from_client(0, b"PORT 203,0,113,50,156,64\r\n");
    drain(&mut s);
    s.closed_by("client");
    let seen = drain(&mut s);
    assert_eq!(seen.rules, [("ftp-proxy/9".to_string(), String::new())]);
    assert_eq!(seen.closed.as_deref(), Some("client closed the connection"));
}

#[test]
fn with_an_instance_the_anchor_is_named_as_openbsd_names_it() {
    let cfg = Config {
        instance: Some(4711),
        ..Config::default()
    };
    let mut s = greeted(3, cfg, reverse());
    assert_eq!(s.anchor(), "ftp-proxy/4711.3");
    s.from_client(0, b"EPSV\r\n");
    s.from_server(0, b"229 Entering Extended Passive Mode (|||50000|)\r\n");
    assert_eq!(drain(&mut s).rules[0].0, "ftp-proxy/4711.3");
}

#[test]
fn regression_epsv_with_bytes_that_are_not_utf8_is_relayed_as_it_is() {
    // Found by the fuzzer: the argument was relayed through a lossy UTF-8
    // conversion, three bytes for each bad one (past the line limit).
    let mut s = greeted(7, Config::default(), reverse());
    s.from_client(0, b"EPSV \x98\x98\r\n");
    let mut raw = Vec::new();
    while let Some(o) = s.poll_output() {
        if let Output::ToServer(b) = o {
            raw.extend(b);
        }
    }
    assert_eq!(raw, b"EPSV \x98\x98\r\n");
}

#[test]
fn a_227_or_229_that_answers_no_passive_command_opens_nothing() {
    let mut s = greeted(7, Config::default(), reverse());
    // Unasked: refused, not relayed, no rules.
    s.from_server(0, b"227 Entering Passive Mode (192,0,2,10,195,80)\r\n");
    let seen = drain(&mut s);
    assert!(seen.rules.is_empty());
    assert!(seen.to_client.starts_with("425 "), "{seen:?}");
    assert_eq!(seen.refused.len(), 1);
    // A 229 to PASV is not read either; the next PASV's 227 is.
    s.from_client(0, b"PASV\r\n");
    s.from_server(0, b"229 Entering Extended Passive Mode (|||50000|)\r\n");
    assert!(drain(&mut s).rules.is_empty());
    s.from_client(0, b"PASV\r\n");
    s.from_server(
        0,
        b"150 Here it comes\r\n227 Entering Passive Mode (192,0,2,10,195,80)\r\n",
    );
    assert_eq!(
        drain(&mut s).rules.len(),
        1,
        "a 1xx reply does not end the wait"
    );
    // Answered: a second 227 opens nothing.
    s.from_server(0, b"227 Entering Passive Mode (192,0,2,10,195,81)\r\n");
    assert!(drain(&mut s).rules.is_empty());
}

#[test]
fn garbled_commands_tls_and_telnet_escapes_are_refused_not_relayed() {
    let mut s = greeted(7, Config::default(), reverse());
    for line in [
        &b"PORT\t203,0,113,50,156,64\r\n"[..],
        b" PORT 203,0,113,50,156,64\r\n",
        b"RETR a\xff\xffb\r\n",
        b"USER\tbob\r\n",
        b"RETR a\x00b\r\n",
        b"PO\rRT 1\r\n",
        b"X\r\n",
        b"AUTH TLS\r\n",
        b"CCC\r\n",
    ] {
        s.from_client(0, line);
        let seen = drain(&mut s);
        assert_eq!(
            seen.to_server,
            "",
            "{:?} was relayed",
            String::from_utf8_lossy(line)
        );
        assert!(
            seen.to_client.starts_with("500 ") || seen.to_client.starts_with("534 "),
            "{seen:?}"
        );
        assert_eq!(seen.refused.len(), 1);
    }
    // A Latin-1 file name is still relayed (not a control byte).
    s.from_client(0, b"RETR caf\xe9\r\n");
    assert!(!drain(&mut s).to_server.is_empty());
}

#[test]
fn the_clients_lines_wait_for_the_servers_greeting() {
    // A client that talks first (a garbled line, then a command): the
    // proxy's answer must not come before the server's greeting.
    let mut s = Session::new(7, Config::default(), reverse(), 0);
    s.from_client(0, b"\r\nNOOP\r\n");
    let seen = drain(&mut s);
    assert_eq!((seen.to_client.as_str(), seen.to_server.as_str()), ("", ""));
    s.from_server(0, b"220-welcome\r\n220 ready\r\n");
    let seen = drain(&mut s);
    assert!(
        seen.to_client
            .starts_with("220-welcome\r\n220 ready\r\n500 "),
        "{seen:?}"
    );
    assert_eq!(seen.to_server, "NOOP\r\n");
    // Too many lines before a greeting end the session.
    let mut s = Session::new(8, Config::default(), reverse(), 0);
    s.from_client(0, "NOOP\r\n".repeat(65).as_bytes());
    assert!(drain(&mut s)
        .closed
        .unwrap()
        .contains("before the server's greeting"));
}

/// With the older syntax (`legacy`: the ruleset calls the anchors from
/// `nat-anchor` / `rdr-anchor`), the translations are `rdr` and `nat`
/// rules, and the filter rules name the translated addresses: after
/// `rdr` the destination is the target, after `nat` the source is the
/// new one. An `rdr` that would change nothing (forward mode's PASV) is
/// left out. pf reads them.
#[test]
fn older_syntax_loads_nat_and_rdr_rules_and_filters_translated_addresses() {
    let legacy = Config {
        legacy: true,
        rewrite_source_port: true,
        ..Config::default()
    };
    let mut s = greeted(7, legacy.clone(), reverse());
    s.from_client(0, b"PASV\r\n");
    drain(&mut s);
    s.from_server(S, b"227 Entering Passive Mode (192,0,2,10,195,80).\r\n");
    let rules = drain(&mut s).rules[0].1.clone();
    assert_eq!(
        rules,
        "rdr inet proto tcp from 203.0.113.50 to 198.51.100.1 port 50000 -> 192.0.2.10 port 50000\n\
         nat inet proto tcp from 203.0.113.50 to 192.0.2.10 port 50000 -> 192.0.2.1\n\
         pass in quick inet proto tcp from 203.0.113.50 to 192.0.2.10 port 50000 flags S/SA keep state (max 1)\n\
         pass out quick inet proto tcp from 192.0.2.1 to 192.0.2.10 port 50000 flags S/SA keep state (max 1)\n"
    );
    let out = palisade_conf::parse_bytes(
        "ftp-proxy/7",
        None,
        rules.as_bytes().to_vec(),
        &palisade_conf::ParseOptions::default(),
    );
    assert_eq!(out.errors, 0, "{rules}\n{:?}", out.stderr);
    // PORT with -r: the server's connection leaves from port 20.
    s.from_client(0, b"PORT 203,0,113,50,156,64\r\n");
    let seen = drain(&mut s);
    let rules = &seen.rules[0].1;
    assert!(
        rules.contains("nat inet proto tcp from 192.0.2.10 to 203.0.113.50 port 40000 -> 198.51.100.1 port 20\n")
            && rules.contains("pass out quick inet proto tcp from 198.51.100.1 to 203.0.113.50 port 40000 flags S/SA keep state (max 1)\n"),
        "{rules}"
    );
    // Forward mode (the server is where the client was going): no rdr.
    let fwd = Ends {
        client: sa("192.0.2.50:40000"),
        orig_server: sa("198.51.100.80:21"),
        server: sa("198.51.100.80:21"),
        proxy: "203.0.113.1".parse().unwrap(),
    };
    let mut s = greeted(8, legacy, fwd);
    s.from_client(0, b"PASV\r\n");
    drain(&mut s);
    s.from_server(S, b"227 Entering Passive Mode (198,51,100,80,195,80).\r\n");
    let rules = drain(&mut s).rules[0].1.clone();
    assert!(!rules.contains("rdr "), "{rules}");
    assert!(
        rules.starts_with(
            "nat inet proto tcp from 192.0.2.50 to 198.51.100.80 port 50000 -> 203.0.113.1\n"
        ),
        "{rules}"
    );
}

/// Telnet commands before a command (ftp(1)'s Interrupt Process and Data
/// Mark before ABOR, RFC 959 4.1.3) are taken out, and the server gets
/// the command the proxy read: ABOR reaches it, and a PORT behind them is
/// handled as any PORT (the server never sees the client's own).
#[test]
fn telnet_commands_before_a_command_are_taken_out() {
    let mut s = greeted(7, Config::default(), reverse());
    s.from_client(0, b"\xff\xf4\xff\xf2ABOR\r\n");
    let seen = drain(&mut s);
    assert_eq!(seen.to_server, "ABOR\r\n");
    assert!(seen.refused.is_empty(), "{seen:?}");
    s.from_client(0, b"\xff\xf4PORT 203,0,113,50,156,64\r\n");
    let seen = drain(&mut s);
    assert!(seen.to_server.starts_with("PORT 192,0,2,1,"), "{seen:?}");
    assert_eq!(seen.rules.len(), 1);
}

/// A Telnet command cut short by the end of the line (IAC DONT with no
/// option byte) never takes the newline with it: the line still goes to
/// the server whole (found by the fuzzer: "Mbb" went out without its
/// end, to be glued to the next line).
#[test]
fn a_telnet_command_at_the_end_of_a_line_keeps_the_line_whole() {
    let mut s = greeted(7, Config::default(), reverse());
    s.from_client(0, b"NOOP\xff\xfe\nNOOP\xff\r\n");
    let seen = drain(&mut s);
    assert_eq!(seen.to_server, "NOOP\n", "{seen:?}");
    assert_eq!(seen.refused.len(), 1, "the lone 0xff: {seen:?}");
}

/// A client that sends commands without waiting for their replies (lftp
/// with `sync-mode off`: TYPE and EPSV in one write): each final reply
/// answers the oldest command, so the 229 is read as EPSV's, not refused
/// as TYPE's (which cut every passive transfer of such a client).
#[test]
fn pipelined_commands_get_their_own_replies() {
    let mut s = greeted(7, Config::default(), reverse());
    s.from_client(0, b"TYPE I\r\nEPSV\r\nPASV\r\n");
    assert_eq!(drain(&mut s).to_server, "TYPE I\r\nEPSV\r\nPASV\r\n");
    s.from_server(
        0,
        b"200 Switching to Binary mode.\r\n229 Entering Extended Passive Mode (|||50001|)\r\n",
    );
    let seen = drain(&mut s);
    assert!(seen.refused.is_empty(), "{seen:?}");
    assert_eq!(
        seen.to_client,
        "200 Switching to Binary mode.\r\n229 Entering Extended Passive Mode (|||50001|)\r\n"
    );
    assert_eq!(seen.rules.len(), 1, "{seen:?}");
    s.from_server(0, b"227 Entering Passive Mode (192,0,2,10,195,82)\r\n");
    let seen = drain(&mut s);
    assert_eq!(seen.rules.len(), 1, "{seen:?}");
    assert!(seen.rules[0].1.contains("port 50002"), "{seen:?}");
    // Nothing waits now: another 227 opens nothing.
    s.from_server(0, b"227 Entering Passive Mode (192,0,2,10,195,83)\r\n");
    assert!(drain(&mut s).rules.is_empty());
}

/// A 227 over several lines: read on its last line (or any), never passed
/// on as it came (it names the server's own address), and it answers the
/// PASV (a later single-line 227 is not read).
#[test]
fn a_multiline_227_is_read_and_rewritten_whole() {
    let mut s = greeted(7, Config::default(), reverse());
    s.from_client(0, b"PASV\r\n");
    drain(&mut s);
    s.from_server(
        0,
        b"227-Entering Passive Mode\r\n227 (192,0,2,10,200,1)\r\n",
    );
    let seen = drain(&mut s);
    assert_eq!(
        seen.to_client,
        "227 Entering Passive Mode (198,51,100,1,200,1)\r\n"
    );
    assert!(!seen.to_client.contains("192,0,2,10"), "{seen:?}");
    assert_eq!(seen.rules.len(), 1);
    s.from_server(0, b"227 Entering Passive Mode (192,0,2,10,195,80)\r\n");
    let seen = drain(&mut s);
    assert!(
        seen.rules.is_empty() && seen.to_client.starts_with("425 "),
        "{seen:?}"
    );
    // The address on the first line, a text line between.
    s.from_client(0, b"EPSV\r\n");
    drain(&mut s);
    s.from_server(
        0,
        b"229-Entering Extended Passive Mode (|||50003|)\r\n here it is\r\n229 ok\r\n",
    );
    let seen = drain(&mut s);
    assert_eq!(
        seen.to_client,
        "229 Entering Extended Passive Mode (|||50003|)\r\n"
    );
    assert_eq!(seen.rules.len(), 1);
    // Multi-line replies of other codes still pass untouched.
    s.from_client(0, b"HELP\r\n");
    drain(&mut s);
    s.from_server(0, b"214-The following\r\n USER PASS\r\n214 Help OK.\r\n");
    assert_eq!(
        drain(&mut s).to_client,
        "214-The following\r\n USER PASS\r\n214 Help OK.\r\n"
    );
}

/// The proxy's own refusal of a pipelined command comes after the
/// replies to the commands sent before it, so each reply pairs with its
/// command.
#[test]
fn a_refusal_among_pipelined_commands_keeps_its_place() {
    let mut s = greeted(7, Config::default(), reverse());
    s.from_client(0, b"NOOP\r\nPORT 198,51,100,99,200,1\r\nSYST\r\n");
    let seen = drain(&mut s);
    assert_eq!(seen.to_server, "NOOP\r\nSYST\r\n");
    assert_eq!(seen.to_client, "", "the refusal waits for NOOP's reply");
    assert_eq!(seen.refused.len(), 1);
    s.from_server(0, b"200 NOOP ok.\r\n215 UNIX Type: L8\r\n");
    let seen = drain(&mut s);
    assert!(
        seen.to_client
            .starts_with("200 NOOP ok.\r\n501 Refused by the proxy: PORT names 198.51.100.99")
            && seen.to_client.ends_with("215 UNIX Type: L8\r\n"),
        "{seen:?}"
    );
    // With nothing waiting, a refusal goes at once.
    s.from_client(0, b"PORT 198,51,100,99,200,1\r\n");
    assert!(drain(&mut s).to_client.starts_with("501 "));
}

/// Bounds on what a hostile peer makes the proxy hold: a client that
/// sends commands (or refused ones) without end while the server does not
/// answer, and a server whose multi-line 227 never ends, each end the
/// session instead of growing it.
#[test]
fn commands_waiting_for_replies_and_held_reply_lines_are_bounded() {
    let mut s = greeted(7, Config::default(), reverse());
    s.from_client(0, b"NOOP\r\n");
    drain(&mut s);
    let flood = b"AUTH TLS\r\n".repeat(1000);
    s.from_client(0, &flood);
    let seen = drain(&mut s);
    assert!(
        seen.closed
            .as_deref()
            .is_some_and(|w| w.contains("commands waiting for their replies")),
        "{:?}",
        seen.closed
    );
    assert!(s.is_closed());

    let mut s = greeted(8, Config::default(), reverse());
    s.from_client(0, b"PASV\r\n");
    drain(&mut s);
    s.from_server(0, b"227-x\r\n");
    for _ in 0..100 {
        s.from_server(0, b" more\r\n");
    }
    let seen = drain(&mut s);
    assert!(
        seen.closed
            .as_deref()
            .is_some_and(|w| w.contains("reply of more than")),
        "{:?}",
        seen.closed
    );
    assert!(
        seen.rules.is_empty() && !seen.to_client.contains("227"),
        "{seen:?}"
    );
}
