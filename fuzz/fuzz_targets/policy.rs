//! Postfix policy requests from a hostile peer, fed in chunks (the first
//! byte of each chunk says how long it is), then decided on a virtual
//! clock. The reader never panics and never holds more than a line and a
//! request's worth; once it refuses it stays refused; every answer is one
//! `action=` line and an empty line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_greylist::grey::{Config, Greylist, MemStore, Os};
use palisade_greylist::policy::{Reader, MAX_LINE, MAX_REQUEST};

fuzz_target!(|data: &[u8]| {
    let mut r = Reader::new();
    let mut g = Greylist::new(Config::default());
    let mut store = MemStore::default();
    let mut refused = None;
    let mut now = 1_800_000_000u64;
    let mut rest = data;
    while let Some((&n, tail)) = rest.split_first() {
        let n = (n as usize % 64 + 1).min(tail.len());
        let (chunk, tail) = tail.split_at(n);
        rest = tail;
        r.feed(chunk);
        loop {
            match r.next_request() {
                Ok(Some(req)) => {
                    assert!(refused.is_none(), "a request after a refusal");
                    now += chunk.len() as u64 * 7;
                    let os = (chunk.first().copied().unwrap_or(0) & 1 == 1)
                        .then(|| Os::parse("Windows 10"));
                    let d = g.decide(now, &req, os.as_ref(), &mut store).unwrap();
                    let w = d.action.to_wire();
                    assert!(w.starts_with("action="));
                    assert!(w.ends_with("\n\n"));
                    assert_eq!(w.matches('\n').count(), 2, "{w:?}");
                }
                Ok(None) => break,
                Err(e) => {
                    if let Some(prev) = &refused {
                        assert_eq!(prev, &e);
                    }
                    refused = Some(e);
                    break;
                }
            }
        }
        assert!(r.pending() <= MAX_LINE + MAX_REQUEST + 64, "{}", r.pending());
    }
    let _ = g.expire(now + 100 * 86400, &mut store).unwrap();
});
