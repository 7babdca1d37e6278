//! p0f v3's API: queries and answers byte for byte (p0f's README, "API
//! access").

use palisade_greylist::p0f::*;
use std::net::IpAddr;

#[test]
fn queries_round_trip_and_bad_ones_are_named() {
    for a in ["192.0.2.7", "2001:db8::25"] {
        let ip: IpAddr = a.parse().unwrap();
        let q = query(ip);
        assert_eq!(q.len(), 21);
        assert_eq!(&q[..4], &0x50304601u32.to_ne_bytes());
        assert_eq!(parse_query(&q), Ok(ip));
    }
    let q = query("192.0.2.7".parse().unwrap());
    assert_eq!(&q[4..9], &[4, 192, 0, 2, 7]);
    assert!(q[9..].iter().all(|&b| b == 0), "IPv4 aligned to the left");
    let mut bad = q;
    bad[0] ^= 1;
    assert!(matches!(parse_query(&bad), Err(QueryError::Magic(_))));
    let mut bad = q;
    bad[4] = 5;
    assert_eq!(parse_query(&bad), Err(QueryError::AddrType(5)));
}

#[test]
fn the_answer_has_p0fs_layout() {
    let h = HostInfo {
        first_seen: 1_700_000_000,
        last_seen: 1_700_000_100,
        total_conn: 3,
        last_chg: 0,
        distance: 2,
        match_quality: 0,
        os_name: "Windows".into(),
        os_flavor: "10".into(),
    };
    let b = response(Status::Ok, Some(&h));
    assert_eq!(b.len(), 232);
    assert_eq!(&b[..4], &0x50304602u32.to_ne_bytes());
    assert_eq!(&b[4..8], &0x10u32.to_ne_bytes());
    assert_eq!(&b[8..12], &1_700_000_000u32.to_ne_bytes());
    assert_eq!(&b[12..16], &1_700_000_100u32.to_ne_bytes());
    assert_eq!(&b[16..20], &3u32.to_ne_bytes());
    assert_eq!(&b[36..38], &2i16.to_ne_bytes());
    assert_eq!(&b[40..48], b"Windows\0");
    assert_eq!(&b[72..75], b"10\0");
    assert!(
        b[104..].iter().all(|&c| c == 0),
        "no HTTP, link or language"
    );
    assert_eq!(parse_response(&b), Some((0x10, Some(h))));
    let n = response(Status::NoMatch, None);
    assert_eq!(parse_response(&n), Some((0x20, None)));
    assert!(n[8..].iter().all(|&c| c == 0));
    // A long name is cut at 31 bytes and stays NUL-terminated.
    let long = HostInfo {
        os_name: "x".repeat(40),
        ..Default::default()
    };
    let b = response(Status::Ok, Some(&long));
    assert_eq!(b[71], 0);
    assert_eq!(parse_response(&b).unwrap().1.unwrap().os_name.len(), 31);
}
