//! The fingerprint parsers: a pf.os file (the text), a TCP SYN's header
//! and options (the bytes), a p0f query. None panics; a SYN that parses
//! can be identified with the built-in database and with the fuzzed one,
//! and written in pf.os notation; a p0f query parses or is refused.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_filter::osfp::{FingerprintDb, SynSignature};
use palisade_filter::synlog::{pf_os_notation, SynLog};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let db = FingerprintDb::parse(&text).ok();
    let builtin = FingerprintDb::default_db();
    let (ttl, size, df) = match data {
        [a, b, c, ..] => (*a, u16::from_be_bytes([*b, *c]), a & 1 == 1),
        _ => (64, 60, true),
    };
    let tcp = data.get(3..).unwrap_or(&[]);
    if let Some(sig) = SynSignature::from_tcp(tcp, ttl, df, size) {
        let found = builtin.identify(&sig).cloned();
        if let Some(db) = &db {
            let _ = db.identify(&sig);
        }
        let n = pf_os_notation(&sig);
        assert!(n.split(':').count() == 5, "{n}");
        let mut log = SynLog::new(4, 1000);
        log.record(
            1,
            "192.0.2.1".parse().unwrap(),
            1,
            "192.0.2.2".parse().unwrap(),
            25,
            &sig,
            found.map(std::sync::Arc::new),
        );
        assert!(log.connection("192.0.2.1".parse().unwrap(), 1).is_some());
    }
    if data.len() >= 21 {
        let q: [u8; 21] = data[..21].try_into().unwrap();
        if let Ok(a) = palisade_greylist::p0f::parse_query(&q) {
            assert_eq!(palisade_greylist::p0f::query(a)[4..5], q[4..5]);
        }
    }
});
