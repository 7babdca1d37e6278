//! pfsync packets from the network: the parser never panics; whatever
//! parses re-emits to bytes that parse to the same messages and checksum,
//! and that re-emit to themselves; a builder under a small limit, fed the
//! same messages, never passes the limit and yields what it took.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_pfsync::wire::{Packet, PacketBuilder, HEADER_LEN};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Packet::from_bytes(data) else {
        return;
    };
    // Re-emitted packets are never longer than the input's length field.
    let out = p.to_bytes().expect("a parsed packet fits its own length");
    assert!(out.len() <= data.len());
    let q = Packet::from_bytes(&out).expect("an emitted packet parses");
    assert_eq!(q.pfcksum, p.pfcksum);
    assert_eq!(q.messages, p.messages);
    assert!(q.skipped.is_empty());
    assert_eq!(q.to_bytes().expect("fits"), out);

    // Split the messages over packets of at most `limit` bytes.
    let limit = HEADER_LEN + 4 + 12 + data.first().copied().unwrap_or(0) as usize * 4;
    let mut got = Vec::new();
    let mut b = PacketBuilder::new(limit, p.pfcksum);
    for m in &p.messages {
        if !b.fits(m) {
            let full = std::mem::replace(&mut b, PacketBuilder::new(limit, p.pfcksum));
            let bytes = full.finish();
            assert!(bytes.len() <= limit);
            got.extend(Packet::from_bytes(&bytes).expect("parses").messages);
        }
        if b.push(m).is_err() {
            // Larger than a whole packet under this limit.
            assert!(b.is_empty());
            return;
        }
    }
    let bytes = b.finish();
    assert!(bytes.len() <= limit);
    got.extend(Packet::from_bytes(&bytes).expect("parses").messages);
    assert_eq!(got, p.messages);
});
