//! The greylisting decision on a virtual clock: only the configured
//! systems wait, the retry passes after the delay, the header comes once
//! per message, clients are whitelisted after passes, entries expire.

use palisade_greylist::grey::*;
use palisade_greylist::policy::{Action, Request};

fn rcpt(client: &str, sender: &str, rcpt: &str, instance: &str) -> Request {
    Request::from_pairs(&[
        ("request", "smtpd_access_policy"),
        ("protocol_state", "RCPT"),
        ("client_address", client),
        ("sender", sender),
        ("recipient", rcpt),
        ("instance", instance),
    ])
}

fn win10() -> Os {
    Os::parse("Windows 10")
}
fn linux() -> Os {
    Os::parse("Linux 4-6")
}

const T0: u64 = 1_800_000_000;

#[test]
fn windows_waits_linux_does_not() {
    let mut g = Greylist::new(Config::default());
    let mut s = MemStore::default();
    let r = rcpt("192.0.2.7", "a@example.org", "b@example.net", "i1");
    let d = g.decide(T0, &r, Some(&win10()), &mut s).unwrap();
    assert_eq!(d.why, Why::Greylisted { left: 300 });
    let Action::DeferIfPermit(t) = &d.action else {
        panic!("{d:?}")
    };
    assert!(t.starts_with("4.7.1 "), "{t}");
    assert!(t.contains("Windows 10"), "{t}");
    assert_eq!(d.net, "192.0.2.0/24");
    // Too early: still deferred, with what is left.
    let d = g.decide(T0 + 100, &r, Some(&win10()), &mut s).unwrap();
    assert_eq!(d.why, Why::Greylisted { left: 200 });
    // After the delay (from another address of the same /24): passes,
    // with the header.
    let r2 = rcpt("192.0.2.99", "A@Example.org", "<b@example.net>", "i2");
    let d = g.decide(T0 + 301, &r2, Some(&win10()), &mut s).unwrap();
    assert_eq!(d.why, Why::Retried { waited: 301 });
    assert_eq!(d.action, Action::Prepend("X-P0f-OS: Windows 10".into()));
    // And afterwards at once.
    let d = g
        .decide(
            T0 + 5000,
            &rcpt("192.0.2.7", "a@example.org", "b@example.net", "i3"),
            Some(&win10()),
            &mut s,
        )
        .unwrap();
    assert_eq!(d.why, Why::KnownTriplet);

    // Linux: at once, with its header; nothing stored.
    let before = s.0.len();
    let d = g
        .decide(
            T0,
            &rcpt("198.51.100.9", "x@example.org", "b@example.net", "j1"),
            Some(&linux()),
            &mut s,
        )
        .unwrap();
    assert_eq!(d.why, Why::OsNotListed);
    assert_eq!(d.action, Action::Prepend("X-P0f-OS: Linux 4-6".into()));
    assert_eq!(s.0.len(), before);
    // Unknown: delivered by default, greylisted when configured so.
    let r = rcpt("203.0.113.5", "u@example.org", "b@example.net", "k1");
    let d = g.decide(T0, &r, None, &mut s).unwrap();
    assert_eq!(d.action, Action::Prepend("X-P0f-OS: unknown".into()));
    g.cfg.unknown = Unknown::Greylist;
    let d = g.decide(T0, &r, None, &mut s).unwrap();
    assert_eq!(d.why, Why::Greylisted { left: 300 });
    // Windows Server is excepted by default; a list can name a version.
    assert!(!g.greylists(Some(&Os::parse("Windows Server 2016+"))));
    g.cfg.os = vec!["Windows 7-8".into()];
    assert!(!g.greylists(Some(&win10())));
    assert!(g.greylists(Some(&Os::parse("Windows 7-8"))));
}

#[test]
fn the_header_comes_once_per_message() {
    let mut g = Greylist::new(Config::default());
    let mut s = MemStore::default();
    let os = linux();
    let a = g
        .decide(
            T0,
            &rcpt("198.51.100.9", "x@e.org", "one@e.net", "m1"),
            Some(&os),
            &mut s,
        )
        .unwrap();
    let b = g
        .decide(
            T0,
            &rcpt("198.51.100.9", "x@e.org", "two@e.net", "m1"),
            Some(&os),
            &mut s,
        )
        .unwrap();
    let c = g
        .decide(
            T0,
            &rcpt("198.51.100.9", "x@e.org", "one@e.net", "m2"),
            Some(&os),
            &mut s,
        )
        .unwrap();
    assert!(matches!(a.action, Action::Prepend(_)));
    assert_eq!(b.action, Action::Dunno);
    assert!(matches!(c.action, Action::Prepend(_)));
    // A deferred recipient does not use up the message's header.
    let w = win10();
    let d = g
        .decide(
            T0,
            &rcpt("192.0.2.7", "x@e.org", "new@e.net", "m3"),
            Some(&w),
            &mut s,
        )
        .unwrap();
    assert!(matches!(d.action, Action::DeferIfPermit(_)));
    assert_eq!(
        g.whitelist(T0, "192.0.2.7", &mut s).unwrap().as_deref(),
        Some("192.0.2.0/24")
    );
    let d = g
        .decide(
            T0,
            &rcpt("192.0.2.7", "x@e.org", "old@e.net", "m3"),
            Some(&w),
            &mut s,
        )
        .unwrap();
    assert_eq!(d.why, Why::Whitelisted);
    assert_eq!(d.action, Action::Prepend("X-P0f-OS: Windows 10".into()));
    // Without a header configured: DUNNO.
    g.cfg.header = None;
    let d = g
        .decide(
            T0,
            &rcpt("198.51.100.9", "x@e.org", "one@e.net", "m9"),
            Some(&os),
            &mut s,
        )
        .unwrap();
    assert_eq!(d.action, Action::Dunno);
}

#[test]
fn retry_window_auto_whitelist_and_expiry() {
    let mut g = Greylist::new(Config::default());
    let mut s = MemStore::default();
    let w = win10();
    // A retry after the retry window starts over.
    let r = rcpt("192.0.2.7", "a@e.org", "b@e.net", "");
    g.decide(T0, &r, Some(&w), &mut s).unwrap();
    let d = g.decide(T0 + 3 * 86400, &r, Some(&w), &mut s).unwrap();
    assert_eq!(d.why, Why::Greylisted { left: 300 });
    let d = g
        .decide(T0 + 3 * 86400 + 300, &r, Some(&w), &mut s)
        .unwrap();
    assert_eq!(d.why, Why::Retried { waited: 300 });
    // Five passed triplets whitelist the network.
    let mut t = T0 + 4 * 86400;
    for i in 1..5 {
        let r = rcpt("192.0.2.7", "a@e.org", &format!("r{i}@e.net"), "");
        assert!(matches!(
            g.decide(t, &r, Some(&w), &mut s).unwrap().why,
            Why::Greylisted { .. }
        ));
        assert!(matches!(
            g.decide(t + 400, &r, Some(&w), &mut s).unwrap().why,
            Why::Retried { .. }
        ));
        t += 1000;
    }
    let r = rcpt("192.0.2.200", "new@e.org", "new@e.net", "");
    assert_eq!(
        g.decide(t, &r, Some(&w), &mut s).unwrap().why,
        Why::Whitelisted
    );
    // Another network is not.
    let r = rcpt("192.0.3.1", "new@e.org", "new@e.net", "");
    assert!(matches!(
        g.decide(t, &r, Some(&w), &mut s).unwrap().why,
        Why::Greylisted { .. }
    ));
    // IPv6 is keyed by /64.
    let r = rcpt("2001:db8:1:2:3::4", "a@e.org", "b@e.net", "");
    assert_eq!(
        g.decide(t, &r, Some(&w), &mut s).unwrap().net,
        "2001:db8:1:2::/64"
    );
    // Expiry: 35 days without a visit; a hand-made whitelist stays.
    g.whitelist(t, "198.51.100.1", &mut s).unwrap();
    assert_eq!(
        g.whitelist(t, "10.0.0.0/8", &mut s).unwrap(),
        None,
        "not an address"
    );
    let n = s.0.len();
    assert_eq!(g.expire(t + 86400, &mut s).unwrap(), 0);
    let gone = g.expire(t + 40 * 86400, &mut s).unwrap();
    assert_eq!(gone, n - 1);
    assert_eq!(s.0.len(), 1);
    assert!(s.0.contains_key(&client_key("198.51.100.0/24")));
}

#[test]
fn not_applicable_and_odd_requests() {
    let mut g = Greylist::new(Config::default());
    let mut s = MemStore::default();
    let w = win10();
    // Another protocol state, no client, another request type: DUNNO,
    // and the log says which.
    for (r, why) in [
        (
            Request::from_pairs(&[
                ("request", "smtpd_access_policy"),
                ("protocol_state", "DATA"),
                ("client_address", "192.0.2.7"),
            ]),
            "not a recipient check",
        ),
        (
            Request::from_pairs(&[("request", "smtpd_access_policy")]),
            "no client address in the request",
        ),
        (
            Request::from_pairs(&[
                ("request", "smtpd_access_policy"),
                ("protocol_state", "RCPT"),
            ]),
            "no client address in the request",
        ),
        (
            Request::from_pairs(&[("request", "junk"), ("client_address", "192.0.2.7")]),
            "not an access policy request",
        ),
        (Request::default(), "not an access policy request"),
    ] {
        let d = g.decide(T0, &r, Some(&w), &mut s).unwrap();
        assert_eq!(
            (d.action, d.why.to_string()),
            (Action::Dunno, why.to_string())
        );
    }
    // A client address that is not an address is keyed as given.
    let r = rcpt("unknown", "a@e.org", "b@e.net", "");
    assert_eq!(g.decide(T0, &r, Some(&w), &mut s).unwrap().net, "unknown");
    // Entries survive encoding; junk does not decode.
    let e = Entry {
        first: 1,
        last: 2,
        count: 3,
        manual: true,
    };
    assert_eq!(Entry::decode(&e.encode()), Some(e));
    assert_eq!(Entry::decode(b"short"), None);
    // The bounce sender (empty) is a sender like another.
    let r = rcpt("192.0.2.50", "", "b@e.net", "");
    assert!(matches!(
        g.decide(T0, &r, Some(&w), &mut s).unwrap().why,
        Why::Greylisted { .. }
    ));
    assert!(s
        .0
        .contains_key(&triplet_key("192.0.2.0/24", "", "b@e.net")));
}

#[test]
fn dead_triplets_go_and_hostile_sizes_are_cut() {
    let mut g = Greylist::new(Config::default());
    let mut s = MemStore::default();
    let w = win10();
    // A bot's one-shot attempt: gone once the retry window is over.
    let r = rcpt("192.0.2.66", "bot@e.org", "x@e.net", "");
    g.decide(T0, &r, Some(&w), &mut s).unwrap();
    assert_eq!(g.expire(T0 + 86400, &mut s).unwrap(), 0);
    assert_eq!(g.expire(T0 + 3 * 86400, &mut s).unwrap(), 1);
    assert!(s.0.is_empty());
    // Addresses of kilobytes make keys of at most MAX_ADDRESS bytes each.
    let long = "a".repeat(8000);
    let r = Request::from_pairs(&[
        ("request", "smtpd_access_policy"),
        ("client_address", "192.0.2.67"),
        ("sender", &long),
        ("recipient", &long),
        ("instance", &long),
    ]);
    g.decide(T0, &r, Some(&w), &mut s).unwrap();
    let k = s.0.keys().next().unwrap();
    assert!(k.len() <= 2 * MAX_ADDRESS + 32, "{}", k.len());
    assert_eq!(normalize(" <A@B> "), "a@b");
}

/// A retry too early, or a whitelisted network's next mail within
/// `LAST_SEEN_STEP`, changes nothing stored (so costs no write, and its
/// answer no wait for the disk); `last` moves once the step has passed.
#[test]
fn last_seen_is_written_to_the_hour() {
    let mut g = Greylist::new(Config::default());
    let mut s = MemStore::default();
    let r = rcpt("192.0.2.7", "a@example.org", "b@example.net", "i1");
    g.decide(T0, &r, Some(&win10()), &mut s).unwrap();
    let stored = s.0.clone();
    let d = g.decide(T0 + 100, &r, Some(&win10()), &mut s).unwrap();
    assert_eq!(d.why, Why::Greylisted { left: 200 });
    assert_eq!(s.0, stored, "a retry too early changed the store");
    // A delay longer than the step: the entry's last seen moves once
    // the step has passed, and only then.
    g.cfg.delay = 3 * LAST_SEEN_STEP;
    g.decide(T0 + LAST_SEEN_STEP - 1, &r, Some(&win10()), &mut s)
        .unwrap();
    assert_eq!(s.0, stored);
    g.decide(T0 + LAST_SEEN_STEP, &r, Some(&win10()), &mut s)
        .unwrap();
    let t = s.0.iter().find(|(k, _)| k.starts_with(TRIPLET)).unwrap().1;
    assert_eq!((t.first, t.last), (T0, T0 + LAST_SEEN_STEP));

    // A whitelisted network: its entry's last seen moves by the step.
    let mut g = Greylist::new(Config::default());
    let mut s = MemStore::default();
    let ckey = client_key("198.51.100.0/24");
    s.put(
        &ckey,
        Entry {
            first: T0,
            last: T0,
            count: 0,
            manual: true,
        },
    )
    .unwrap();
    let r = rcpt("198.51.100.9", "a@example.org", "b@example.net", "j1");
    let d = g.decide(T0 + 10, &r, Some(&win10()), &mut s).unwrap();
    assert_eq!(d.why, Why::Whitelisted);
    assert_eq!(s.0[&ckey].last, T0);
    g.decide(T0 + LAST_SEEN_STEP, &r, Some(&win10()), &mut s)
        .unwrap();
    assert_eq!(s.0[&ckey].last, T0 + LAST_SEEN_STEP);
}

/// With a `max-age` shorter than two steps, last seen moves at least
/// every half `max-age`: a network in use stays whitelisted, and a
/// client retrying too early keeps its first attempt.
#[test]
fn a_short_max_age_keeps_entries_in_use() {
    let mut g = Greylist::new(Config {
        max_age: 600,
        delay: 900,
        ..Config::default()
    });
    let mut s = MemStore::default();
    let r = rcpt("192.0.2.7", "a@example.org", "b@example.net", "i1");
    g.decide(T0, &r, Some(&win10()), &mut s).unwrap();
    for t in (1..9).map(|i| T0 + i * 100) {
        let d = g.decide(t, &r, Some(&win10()), &mut s).unwrap();
        assert_eq!(
            d.why,
            Why::Greylisted {
                left: 900 - (t - T0)
            },
            "at {t}"
        );
    }
    let d = g.decide(T0 + 900, &r, Some(&win10()), &mut s).unwrap();
    assert_eq!(d.why, Why::Retried { waited: 900 });
}

/// An IPv4 client on a dual-stack socket (`::ffff:a.b.c.d`) is keyed by
/// its IPv4 /24, not by the one /64 every such client shares.
#[test]
fn ipv4_mapped_clients_are_keyed_as_ipv4() {
    let g = Greylist::new(Config::default());
    assert_eq!(g.network("::ffff:198.51.100.20"), "198.51.100.0/24");
    assert_eq!(g.network("198.51.100.20"), "198.51.100.0/24");
    assert_eq!(g.network("2001:db8:5:5::1"), "2001:db8:5:5::/64");
}

#[test]
fn senders_are_keyed_as_postgrey_keys_them() {
    for (sender, key) in [
        ("bounce-1001@list.test", "bounce-#@list.test"),
        ("Bounce-1002@List.Test", "bounce-#@list.test"),
        ("user+tag1@x.test", "user@x.test"),
        ("<prvs=0123456789=user@y.test>", "user@y.test"),
        ("prvs=user=0123456789@y.test", "user@y.test"),
        // Neither part looks like a tag: the standard's place.
        ("prvs=a=b@y.test", "b@y.test"),
        // Not three parts: kept.
        ("prvs=a@y.test", "prvs=a@y.test"),
        ("list-42-7@x.test", "list-#-#@x.test"),
        ("a.17.b@x.test", "a.#.b@x.test"),
        // Digits joined to a word character are not a number alone.
        ("user123@x.test", "user123@x.test"),
        ("12ab@x.test", "12ab@x.test"),
        ("x_12@x.test", "x_12@x.test"),
        // The domain is kept as it is.
        ("a@mx1.x.test", "a@mx1.x.test"),
        ("a@10.0.0.1", "a@10.0.0.1"),
        ("", ""),
        ("no-domain-12", "no-domain-12"),
    ] {
        assert_eq!(sender_key(sender), key, "{sender}");
    }
    // So a mailing list's next message, from its next VERP address,
    // passes once the first has.
    let mut g = Greylist::new(Config::default());
    let mut s = MemStore::default();
    let r = rcpt("192.0.2.7", "bounce-1001@list.test", "b@example.net", "i1");
    let d = g.decide(T0, &r, Some(&win10()), &mut s).unwrap();
    assert_eq!(d.why, Why::Greylisted { left: 300 });
    let r = rcpt("192.0.2.7", "bounce-1001@list.test", "b@example.net", "i2");
    let d = g.decide(T0 + 301, &r, Some(&win10()), &mut s).unwrap();
    assert_eq!(d.why, Why::Retried { waited: 301 });
    let r = rcpt("192.0.2.7", "bounce-1002@list.test", "b@example.net", "i3");
    let d = g.decide(T0 + 4000, &r, Some(&win10()), &mut s).unwrap();
    assert_eq!(d.why, Why::KnownTriplet);
}

/// Whitelist files (postgrey's whitelist_clients / whitelist_recipients):
/// a listed client (by network or by the name Postfix resolved) or a
/// listed recipient is delivered at once, with the header, and leaves no
/// triplet; others from the same Windows system still wait.
#[test]
fn whitelist_files_let_listed_clients_and_recipients_through() {
    use palisade_greylist::whitelist::{parse_clients, parse_recipients, Whitelist};
    let cfg = Config {
        whitelist: Whitelist {
            clients: parse_clients("198.51.100.0/24\nmail.example.org\n").unwrap(),
            recipients: parse_recipients("postmaster@\n").unwrap(),
        },
        ..Config::default()
    };
    let mut g = Greylist::new(cfg);
    let mut s = MemStore::default();
    let d = g
        .decide(
            T0,
            &rcpt("198.51.100.9", "a@x.test", "b@example.net", "i1"),
            Some(&win10()),
            &mut s,
        )
        .unwrap();
    assert_eq!(d.why, Why::Listed);
    assert_eq!(d.action, Action::Prepend("X-P0f-OS: Windows 10".into()));
    let named = Request::from_pairs(&[
        ("request", "smtpd_access_policy"),
        ("protocol_state", "RCPT"),
        ("client_address", "203.0.113.5"),
        ("client_name", "MAIL.example.org"),
        ("sender", "a@x.test"),
        ("recipient", "b@example.net"),
        ("instance", "i2"),
    ]);
    let d = g.decide(T0, &named, Some(&win10()), &mut s).unwrap();
    assert_eq!(d.why, Why::Listed);
    let d = g
        .decide(
            T0,
            &rcpt("203.0.113.5", "a@x.test", "Postmaster@example.net", "i3"),
            Some(&win10()),
            &mut s,
        )
        .unwrap();
    assert_eq!(d.why, Why::Listed);
    assert!(s.0.is_empty(), "no triplet kept: {:?}", s.0);
    let d = g
        .decide(
            T0,
            &rcpt("203.0.113.5", "a@x.test", "b@example.net", "i4"),
            Some(&win10()),
            &mut s,
        )
        .unwrap();
    assert_eq!(d.why, Why::Greylisted { left: 300 });
}
