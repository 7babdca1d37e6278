//! The pfsync packet as OpenBSD sends it (pfsync(4), protocol version 6;
//! the layouts of OpenBSD's `if_pfsync.h` and, for the state record,
//! `pfvar.h`): the IP payload of protocol 240.
//!
//! ```text
//! header (20 bytes)
//!  0       version (6)
//!  1       pad
//!  2..4    len: bytes of the whole pfsync packet, this header included
//!  4..20   pfcksum: the sender's ruleset checksum (MD5 in OpenBSD)
//! then sections, each a subheader (4 bytes) and its messages:
//!  0       action
//!  1       len: the length of ONE message, in 32-bit words
//!  2..4    count: how many messages follow
//! ```
//!
//! Every multi-byte field is big-endian. Identifiers (`id`, `creatorid`)
//! travel in network order and are read here as big-endian numbers, which
//! is how pfctl(8) prints them. Pad bytes are ignored on input and written
//! as zeros.
//!
//! Parsing follows OpenBSD's input (if_pfsync.c): a packet longer than
//! its `len` field is cut to it; actions this side has no use for (the
//! old insert and update, fragments, TDB replay counters, end of frame,
//! numbers past the last) are skipped by their subheader's
//! `len * 4 * count`, bounded by the packet; a message longer than this
//! side knows (a newer peer's) is read for the part known. Where OpenBSD
//! stops reading a packet but keeps what it already applied (an unknown
//! action with a zero length or count, a section running past the end),
//! the whole packet is rejected here. A section whose messages are
//! shorter than its action's message is skipped, as OpenBSD does. Stricter
//! than OpenBSD: one to three bytes after the last section are rejected
//! (OpenBSD ignores them), and so is a `len` field under the header's 20
//! bytes (OpenBSD reads such a packet as empty).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol number of pfsync.
pub const PROTO: u8 = 240;
/// The protocol version spoken here (`PFSYNC_VERSION`).
pub const VERSION: u8 = 6;
/// IP TTL sent and required (`PFSYNC_DFLTTL`).
pub const TTL: u8 = 255;
/// Where packets go without a `syncpeer`.
pub const GROUP_V4: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 240);
/// Updates to one state before it is sent anyway (pfsync(4) `maxupd`).
pub const DEFAULT_MAXUPD: u8 = 128;
/// pf's state flag in an INS: the sender holds the state's first packet
/// until it hears INS_ACK (pfsync(4) `defer`).
pub const PFSTATE_ACK: u16 = 0x0010;
/// The pfsync interface's default MTU (Ethernet's), IP header included.
pub const DEFAULT_MTU: usize = 1500;
/// An IPv4 header without options: pfsync packets go over IPv4.
pub const IPV4_HEADER_LEN: usize = 20;

pub const HEADER_LEN: usize = 20;
pub const SUBHEADER_LEN: usize = 4;
/// `PF_MD5_DIGEST_LENGTH`.
pub const CKSUM_LEN: usize = 16;
/// `IFNAMSIZ`.
pub const IFNAMSIZ: usize = 16;

/// `struct pfsync_state`.
pub const STATE_LEN: usize = 264;
/// `struct pfsync_state_key`.
pub const STATE_KEY_LEN: usize = 40;
/// `struct pfsync_state_peer`.
pub const STATE_PEER_LEN: usize = 32;
/// `struct pfsync_state_scrub`.
pub const STATE_SCRUB_LEN: usize = 8;
/// `struct pfsync_clr`.
pub const CLR_LEN: usize = 20;
/// `struct pfsync_ins_ack`, `pfsync_upd_req` and `pfsync_del_c`.
pub const STATE_REF_LEN: usize = 12;
/// `struct pfsync_upd_c`.
pub const UPD_C_LEN: usize = 84;
/// `struct pfsync_bus`.
pub const BUS_LEN: usize = 12;

/// OpenBSD's address family numbers, as `sa_family_t` (one byte) carries
/// them. Not Linux's: OpenBSD's `AF_INET6` is 24.
pub const AF_INET: u8 = 2;
pub const AF_INET6: u8 = 24;

/// `sync_flags` of a state record: the state has a source node, a NAT
/// source node.
pub const SYNC_FLAG_SRCNODE: u8 = 0x04;
pub const SYNC_FLAG_NATSRCNODE: u8 = 0x08;
/// `scrub_flag` of a peer's scrub data: the data is there.
pub const SCRUB_FLAG_VALID: u8 = 0x01;
/// `rule`, `anchor`, `nat_rule` of a state record: no rule.
pub const NO_RULE: u32 = u32::MAX;

/// A subheader's action (`PFSYNC_ACT_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Action {
    /// Clear the states of a creator (and interface).
    Clr = 0,
    /// Old insert, before protocol version 5's layout; skipped.
    OldIns = 1,
    /// A state inserted on request was received.
    InsAck = 2,
    /// Old update; skipped.
    OldUpd = 3,
    /// A state changed: its peers and timeout only.
    UpdC = 4,
    /// Send me this state in full (id 0, creator 0: all of them).
    UpdReq = 5,
    /// A state is gone, sent in full.
    Del = 6,
    /// A state is gone, by id.
    DelC = 7,
    /// Fragments; never implemented by OpenBSD; skipped.
    InsF = 8,
    DelF = 9,
    /// Bulk update status: a bulk update starts or ends.
    Bus = 10,
    /// Old IPsec replay counters; skipped.
    OldTdb = 11,
    /// End of frame, deprecated; skipped.
    Eof = 12,
    /// A new state, in full.
    Ins = 13,
    /// A changed state, in full.
    Upd = 14,
    /// IPsec replay counters; skipped.
    Tdb = 15,
}

impl Action {
    pub fn from_u8(v: u8) -> Option<Action> {
        use Action::*;
        Some(match v {
            0 => Clr,
            1 => OldIns,
            2 => InsAck,
            3 => OldUpd,
            4 => UpdC,
            5 => UpdReq,
            6 => Del,
            7 => DelC,
            8 => InsF,
            9 => DelF,
            10 => Bus,
            11 => OldTdb,
            12 => Eof,
            13 => Ins,
            14 => Upd,
            15 => Tdb,
            _ => return None,
        })
    }

    /// The size of one message of this action, for the actions parsed
    /// here; `None` for the ones skipped.
    pub fn msg_len(self) -> Option<usize> {
        use Action::*;
        match self {
            Clr => Some(CLR_LEN),
            InsAck | UpdReq | DelC => Some(STATE_REF_LEN),
            UpdC => Some(UPD_C_LEN),
            Del | Ins | Upd => Some(STATE_LEN),
            Bus => Some(BUS_LEN),
            OldIns | OldUpd | InsF | DelF | OldTdb | Eof | Tdb => None,
        }
    }

    pub fn name(self) -> &'static str {
        use Action::*;
        match self {
            Clr => "CLR",
            OldIns => "OINS",
            InsAck => "INS_ACK",
            OldUpd => "OUPD",
            UpdC => "UPD_C",
            UpdReq => "UPD_REQ",
            Del => "DEL",
            DelC => "DEL_C",
            InsF => "INS_F",
            DelF => "DEL_F",
            Bus => "BUS",
            OldTdb => "OTDB",
            Eof => "EOF",
            Ins => "INS",
            Upd => "UPD",
            Tdb => "TDB",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", *self as u8, self.name())
    }
}

/// An action byte for messages: its name when known.
struct ActionByte(u8);

impl fmt::Display for ActionByte {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Action::from_u8(self.0) {
            Some(a) => a.fmt(f),
            None => write!(f, "{} (unknown)", self.0),
        }
    }
}

/// What is wrong with bytes that should be a pfsync packet. Offsets count
/// from the first byte of the pfsync header.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("pfsync header: packet of {len} bytes, shorter than the 20-byte header")]
    TooShort { len: usize },
    #[error("pfsync header: version {0}, only version 6 is spoken")]
    BadVersion(u8),
    #[error(
        "pfsync header: len field says {header} bytes, the packet has {actual} \
         (and the header alone takes 20)"
    )]
    BadLength { header: u16, actual: usize },
    #[error("pfsync subheader at offset {offset}: {left} bytes left, a subheader takes 4")]
    TruncatedSubheader { offset: usize, left: usize },
    #[error(
        "pfsync subheader at offset {offset}: action {} with message length {len} and \
         count {count} cannot be skipped",
        ActionByte(*.action)
    )]
    BadAction {
        offset: usize,
        action: u8,
        len: usize,
        count: u16,
    },
    #[error(
        "pfsync subheader at offset {offset}: action {}: {count} messages of {len} bytes \
         run past the end of the packet ({left} bytes left)",
        ActionByte(*.action)
    )]
    Truncated {
        offset: usize,
        action: u8,
        len: usize,
        count: u16,
        left: usize,
    },
}

/// Why a packet could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    #[error("pfsync packet: the messages need {need} bytes, {left} left under the limit")]
    NoRoom { need: usize, left: usize },
}

// ---------------------------------------------------------------------------
// Reading and writing fields in order.

/// Reads fields one after the other. Callers hand it at least as many
/// bytes as they read (the message parsers check the length first).
struct Rd<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Rd<'a> {
    fn new(b: &'a [u8]) -> Rd<'a> {
        Rd { b, at: 0 }
    }
    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(s) = self.b.get(self.at..self.at + N) {
            out.copy_from_slice(s);
        }
        self.at += N;
        out
    }
    fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }
    fn u16(&mut self) -> u16 {
        u16::from_be_bytes(self.take())
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.take())
    }
    fn i32(&mut self) -> i32 {
        i32::from_be_bytes(self.take())
    }
    fn u64(&mut self) -> u64 {
        u64::from_be_bytes(self.take())
    }
    /// Two 32-bit halves, the high one first: how pf sends its 64-bit
    /// packet and byte counters.
    fn counter(&mut self) -> u64 {
        let hi = self.u32() as u64;
        let lo = self.u32() as u64;
        hi << 32 | lo
    }
    fn skip(&mut self, n: usize) {
        self.at += n;
    }
}

/// Appends fields to a buffer.
struct Wr<'a>(&'a mut Vec<u8>);

impl Wr<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u16(&mut self, v: u16) {
        self.bytes(&v.to_be_bytes());
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_be_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.bytes(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_be_bytes());
    }
    fn counter(&mut self, v: u64) {
        self.u32((v >> 32) as u32);
        self.u32(v as u32);
    }
    fn zeros(&mut self, n: usize) {
        self.0.resize(self.0.len() + n, 0);
    }
    fn addr(&mut self, a: &IpAddr) {
        self.bytes(&addr_bytes(a));
    }
}

/// `struct pf_addr` (16 bytes) read for an address family: an IPv4
/// address is its first four bytes; under any other family the sixteen
/// are kept whole as an IPv6 address, so nothing is lost.
fn addr_from(raw: [u8; 16], af: u8) -> IpAddr {
    if af == AF_INET {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(raw))
    }
}

/// An address as `struct pf_addr`: IPv4 in the first four bytes, zeros
/// after.
fn addr_bytes(a: &IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            b
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

// ---------------------------------------------------------------------------
// Pieces of messages.

/// An interface name as pf keeps it: `IFNAMSIZ` bytes, NUL-padded. Bytes
/// after the first NUL mean nothing and are dropped; a name may fill all
/// sixteen bytes on input.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct IfName([u8; IFNAMSIZ]);

impl IfName {
    /// A name of at most 15 bytes without NUL (the C string's room).
    pub fn new(name: &str) -> Option<IfName> {
        let b = name.as_bytes();
        if b.len() >= IFNAMSIZ || b.contains(&0) {
            return None;
        }
        let mut out = [0u8; IFNAMSIZ];
        out[..b.len()].copy_from_slice(b);
        Some(IfName(out))
    }
    /// The sixteen bytes from the wire, cut at the first NUL.
    pub fn from_wire(raw: [u8; IFNAMSIZ]) -> IfName {
        let mut out = [0u8; IFNAMSIZ];
        let n = raw.iter().position(|&c| c == 0).unwrap_or(IFNAMSIZ);
        out[..n].copy_from_slice(&raw[..n]);
        IfName(out)
    }
    /// The name's bytes, without the padding.
    pub fn as_bytes(&self) -> &[u8] {
        let n = self.0.iter().position(|&c| c == 0).unwrap_or(IFNAMSIZ);
        &self.0[..n]
    }
    pub fn to_wire(&self) -> [u8; IFNAMSIZ] {
        self.0
    }
    /// No interface (CLR: every interface).
    pub fn is_empty(&self) -> bool {
        self.0[0] == 0
    }
}

impl fmt::Display for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
}

impl fmt::Debug for IfName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IfName({:?})", String::from_utf8_lossy(self.as_bytes()))
    }
}

/// `struct pfsync_state_scrub` (8 bytes): what the normalizer keeps of a
/// TCP peer.
///
/// ```text
///  0..2  flags     2  ttl     3  scrub_flag (SCRUB_FLAG_VALID)
///  4..8  ts_mod (timestamp modulation)
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StateScrub {
    pub flags: u16,
    pub ttl: u8,
    pub scrub_flag: u8,
    pub ts_mod: u32,
}

impl StateScrub {
    fn read(r: &mut Rd<'_>) -> StateScrub {
        StateScrub {
            flags: r.u16(),
            ttl: r.u8(),
            scrub_flag: r.u8(),
            ts_mod: r.u32(),
        }
    }
    fn write(&self, w: &mut Wr<'_>) {
        w.u16(self.flags);
        w.u8(self.ttl);
        w.u8(self.scrub_flag);
        w.u32(self.ts_mod);
    }
}

/// `struct pfsync_state_peer` (32 bytes): one side of a connection as
/// pf tracks it.
///
/// ```text
///  0..8   scrub           8..12  seqlo    12..16 seqhi   16..20 seqdiff
/// 20..22  max_win        22..24  mss      24 state        25 wscale
/// 26..32  pad
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct StatePeer {
    pub scrub: StateScrub,
    /// Highest sequence number sent.
    pub seqlo: u32,
    /// Highest the other side acknowledged, plus its window.
    pub seqhi: u32,
    /// Sequence number modulation.
    pub seqdiff: u32,
    /// Largest window seen, before scaling.
    pub max_win: u16,
    pub mss: u16,
    /// TCP state (pf's TCPS_* numbering) or the UDP/other state level.
    pub state: u8,
    /// Window scale, with pf's flag bit (0x80) that it was offered.
    pub wscale: u8,
}

impl StatePeer {
    fn read(r: &mut Rd<'_>) -> StatePeer {
        let p = StatePeer {
            scrub: StateScrub::read(r),
            seqlo: r.u32(),
            seqhi: r.u32(),
            seqdiff: r.u32(),
            max_win: r.u16(),
            mss: r.u16(),
            state: r.u8(),
            wscale: r.u8(),
        };
        r.skip(6);
        p
    }
    fn write(&self, w: &mut Wr<'_>) {
        self.scrub.write(w);
        w.u32(self.seqlo);
        w.u32(self.seqhi);
        w.u32(self.seqdiff);
        w.u16(self.max_win);
        w.u16(self.mss);
        w.u8(self.state);
        w.u8(self.wscale);
        w.zeros(6);
    }
}

/// `struct pfsync_state_key` (40 bytes): one of a state's two lookup
/// keys (index 0 the wire side, 1 the stack side; they differ under NAT
/// and `af-to`).
///
/// ```text
///  0..16  addr[0]   16..32  addr[1]   32..34 port[0]   34..36 port[1]
/// 36..38  rdomain   38 af             39 pad
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StateKey {
    /// Read by `af`: see the module's note on `struct pf_addr`.
    pub addr: [IpAddr; 2],
    pub port: [u16; 2],
    pub rdomain: u16,
    /// `AF_INET` or `AF_INET6` (OpenBSD's numbers).
    pub af: u8,
}

impl Default for StateKey {
    fn default() -> StateKey {
        StateKey {
            addr: [IpAddr::V4(Ipv4Addr::UNSPECIFIED); 2],
            port: [0; 2],
            rdomain: 0,
            af: AF_INET,
        }
    }
}

impl StateKey {
    fn read(r: &mut Rd<'_>) -> StateKey {
        let a0: [u8; 16] = r.take();
        let a1: [u8; 16] = r.take();
        let port = [r.u16(), r.u16()];
        let rdomain = r.u16();
        let af = r.u8();
        r.skip(1);
        StateKey {
            addr: [addr_from(a0, af), addr_from(a1, af)],
            port,
            rdomain,
            af,
        }
    }
    fn write(&self, w: &mut Wr<'_>) {
        w.addr(&self.addr[0]);
        w.addr(&self.addr[1]);
        w.u16(self.port[0]);
        w.u16(self.port[1]);
        w.u16(self.rdomain);
        w.u8(self.af);
        w.u8(0);
    }
}

// ---------------------------------------------------------------------------
// Messages.

/// `struct pfsync_state` (264 bytes): a state in full, the message of
/// INS, UPD and DEL.
///
/// ```text
///   0..8    id                   8..24   ifname
///  24..64   key[0] (wire)       64..104  key[1] (stack)
/// 104..136  src peer           136..168  dst peer
/// 168..184  rt_addr            184..188  rule
/// 188..192  anchor             192..196  nat_rule
/// 196..200  creation           200..204  expire
/// 204..220  packets[2][2]      220..236  bytes[2][2]
/// 236..240  creatorid          240..248  rtableid[2]
/// 248..250  max_mss            250 af    251 proto   252 direction
/// 253 log   254 rt   255 timeout   256 sync_flags   257 updates
/// 258 min_ttl   259 set_tos   260..262 state_flags  262..264 set_prio[2]
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct StateMsg {
    pub id: u64,
    pub creatorid: u32,
    /// The interface the state is bound to; empty when floating.
    pub ifname: IfName,
    /// The wire key, then the stack key.
    pub key: [StateKey; 2],
    pub src: StatePeer,
    pub dst: StatePeer,
    /// The route-to address, read by the state's `af`.
    pub rt_addr: IpAddr,
    /// Rule numbers in the sender's ruleset; `NO_RULE` for none.
    pub rule: u32,
    pub anchor: u32,
    /// Left for compatibility: OpenBSD sends `NO_RULE`.
    pub nat_rule: u32,
    /// Seconds since the state was created.
    pub creation: u32,
    /// Seconds left before it expires.
    pub expire: u32,
    /// Per direction; each travels as two 32-bit halves, high first.
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
    /// Routing tables of the wire and stack sides.
    pub rtableid: [i32; 2],
    pub max_mss: u16,
    /// The wire key's family.
    pub af: u8,
    pub proto: u8,
    /// PF_IN (1) or PF_OUT (2).
    pub direction: u8,
    pub log: u8,
    /// Route type (none, route-to, dup-to, reply-to).
    pub rt: u8,
    /// Which timeout (PFTM_*) applies.
    pub timeout: u8,
    /// SYNC_FLAG_*.
    pub sync_flags: u8,
    pub updates: u8,
    pub min_ttl: u8,
    pub set_tos: u8,
    /// PFSTATE_* flags.
    pub state_flags: u16,
    pub set_prio: [u8; 2],
}

impl Default for StateMsg {
    /// Zeros, IPv4, no rules.
    fn default() -> StateMsg {
        StateMsg {
            id: 0,
            creatorid: 0,
            ifname: IfName::default(),
            key: [StateKey::default(); 2],
            src: StatePeer::default(),
            dst: StatePeer::default(),
            rt_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            rule: NO_RULE,
            anchor: NO_RULE,
            nat_rule: NO_RULE,
            creation: 0,
            expire: 0,
            packets: [0; 2],
            bytes: [0; 2],
            rtableid: [0; 2],
            max_mss: 0,
            af: AF_INET,
            proto: 0,
            direction: 0,
            log: 0,
            rt: 0,
            timeout: 0,
            sync_flags: 0,
            updates: 0,
            min_ttl: 0,
            set_tos: 0,
            state_flags: 0,
            set_prio: [0; 2],
        }
    }
}

impl StateMsg {
    pub const LEN: usize = STATE_LEN;

    /// Read a state record from the first `LEN` bytes of `b`; `None` if
    /// there are fewer.
    pub fn parse(b: &[u8]) -> Option<StateMsg> {
        if b.len() < Self::LEN {
            return None;
        }
        let r = &mut Rd::new(b);
        let id = r.u64();
        let ifname = IfName::from_wire(r.take());
        let key = [StateKey::read(r), StateKey::read(r)];
        let src = StatePeer::read(r);
        let dst = StatePeer::read(r);
        let rt_raw: [u8; 16] = r.take();
        let rule = r.u32();
        let anchor = r.u32();
        let nat_rule = r.u32();
        let creation = r.u32();
        let expire = r.u32();
        let packets = [r.counter(), r.counter()];
        let bytes = [r.counter(), r.counter()];
        let creatorid = r.u32();
        let rtableid = [r.i32(), r.i32()];
        let max_mss = r.u16();
        let af = r.u8();
        let s = StateMsg {
            id,
            creatorid,
            ifname,
            key,
            src,
            dst,
            rt_addr: addr_from(rt_raw, af),
            rule,
            anchor,
            nat_rule,
            creation,
            expire,
            packets,
            bytes,
            rtableid,
            max_mss,
            af,
            proto: r.u8(),
            direction: r.u8(),
            log: r.u8(),
            rt: r.u8(),
            timeout: r.u8(),
            sync_flags: r.u8(),
            updates: r.u8(),
            min_ttl: r.u8(),
            set_tos: r.u8(),
            state_flags: r.u16(),
            set_prio: [r.u8(), r.u8()],
        };
        debug_assert_eq!(r.at, Self::LEN);
        Some(s)
    }

    /// Append the record's `LEN` bytes to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        let w = &mut Wr(out);
        w.u64(self.id);
        w.bytes(&self.ifname.to_wire());
        self.key[0].write(w);
        self.key[1].write(w);
        self.src.write(w);
        self.dst.write(w);
        w.addr(&self.rt_addr);
        w.u32(self.rule);
        w.u32(self.anchor);
        w.u32(self.nat_rule);
        w.u32(self.creation);
        w.u32(self.expire);
        w.counter(self.packets[0]);
        w.counter(self.packets[1]);
        w.counter(self.bytes[0]);
        w.counter(self.bytes[1]);
        w.u32(self.creatorid);
        w.i32(self.rtableid[0]);
        w.i32(self.rtableid[1]);
        w.u16(self.max_mss);
        w.u8(self.af);
        w.u8(self.proto);
        w.u8(self.direction);
        w.u8(self.log);
        w.u8(self.rt);
        w.u8(self.timeout);
        w.u8(self.sync_flags);
        w.u8(self.updates);
        w.u8(self.min_ttl);
        w.u8(self.set_tos);
        w.u16(self.state_flags);
        w.u8(self.set_prio[0]);
        w.u8(self.set_prio[1]);
    }
}

/// A state by its identity: `struct pfsync_ins_ack`, `pfsync_upd_req`
/// and `pfsync_del_c` (12 bytes, the same layout).
///
/// ```text
///  0..8  id     8..12  creatorid
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StateRef {
    pub id: u64,
    pub creatorid: u32,
}

impl StateRef {
    pub const LEN: usize = STATE_REF_LEN;

    pub fn parse(b: &[u8]) -> Option<StateRef> {
        if b.len() < Self::LEN {
            return None;
        }
        let r = &mut Rd::new(b);
        Some(StateRef {
            id: r.u64(),
            creatorid: r.u32(),
        })
    }
    pub fn emit(&self, out: &mut Vec<u8>) {
        let w = &mut Wr(out);
        w.u64(self.id);
        w.u32(self.creatorid);
    }
}

/// `struct pfsync_clr` (20 bytes): drop the states of `creatorid`, on
/// `ifname` only unless it is empty.
///
/// ```text
///  0..16  ifname     16..20  creatorid
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ClrMsg {
    pub ifname: IfName,
    pub creatorid: u32,
}

impl ClrMsg {
    pub const LEN: usize = CLR_LEN;

    pub fn parse(b: &[u8]) -> Option<ClrMsg> {
        if b.len() < Self::LEN {
            return None;
        }
        let r = &mut Rd::new(b);
        Some(ClrMsg {
            ifname: IfName::from_wire(r.take()),
            creatorid: r.u32(),
        })
    }
    pub fn emit(&self, out: &mut Vec<u8>) {
        let w = &mut Wr(out);
        w.bytes(&self.ifname.to_wire());
        w.u32(self.creatorid);
    }
}

/// `struct pfsync_upd_c` (84 bytes): a state's changes, by id.
///
/// ```text
///  0..8   id         8..40  src peer    40..72  dst peer
/// 72..76  creatorid 76..80  expire      80 timeout   81 state_flags
/// 82..84  pad
/// ```
///
/// `state_flags` is one byte here (two in the full record).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct UpdCMsg {
    pub id: u64,
    pub src: StatePeer,
    pub dst: StatePeer,
    pub creatorid: u32,
    pub expire: u32,
    pub timeout: u8,
    pub state_flags: u8,
}

impl UpdCMsg {
    pub const LEN: usize = UPD_C_LEN;

    pub fn parse(b: &[u8]) -> Option<UpdCMsg> {
        if b.len() < Self::LEN {
            return None;
        }
        let r = &mut Rd::new(b);
        let m = UpdCMsg {
            id: r.u64(),
            src: StatePeer::read(r),
            dst: StatePeer::read(r),
            creatorid: r.u32(),
            expire: r.u32(),
            timeout: r.u8(),
            state_flags: r.u8(),
        };
        r.skip(2);
        debug_assert_eq!(r.at, Self::LEN);
        Some(m)
    }
    pub fn emit(&self, out: &mut Vec<u8>) {
        let w = &mut Wr(out);
        w.u64(self.id);
        self.src.write(w);
        self.dst.write(w);
        w.u32(self.creatorid);
        w.u32(self.expire);
        w.u8(self.timeout);
        w.u8(self.state_flags);
        w.zeros(2);
    }
}

/// A bulk update's progress (`PFSYNC_BUS_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BusStatus {
    Start,
    End,
    /// Neither: kept so that it reads back the same.
    Other(u8),
}

impl BusStatus {
    pub fn from_u8(v: u8) -> BusStatus {
        match v {
            1 => BusStatus::Start,
            2 => BusStatus::End,
            v => BusStatus::Other(v),
        }
    }
    pub fn to_u8(self) -> u8 {
        match self {
            BusStatus::Start => 1,
            BusStatus::End => 2,
            BusStatus::Other(v) => v,
        }
    }
}

/// `struct pfsync_bus` (12 bytes): a bulk update starts or ends.
///
/// ```text
///  0..4  creatorid   4..8  endtime (seconds)   8 status   9..12 pad
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BusMsg {
    pub creatorid: u32,
    pub endtime: u32,
    pub status: BusStatus,
}

impl BusMsg {
    pub const LEN: usize = BUS_LEN;

    pub fn parse(b: &[u8]) -> Option<BusMsg> {
        if b.len() < Self::LEN {
            return None;
        }
        let r = &mut Rd::new(b);
        Some(BusMsg {
            creatorid: r.u32(),
            endtime: r.u32(),
            status: BusStatus::from_u8(r.u8()),
        })
    }
    pub fn emit(&self, out: &mut Vec<u8>) {
        let w = &mut Wr(out);
        w.u32(self.creatorid);
        w.u32(self.endtime);
        w.u8(self.status.to_u8());
        w.zeros(3);
    }
}

/// One message of a packet, by action.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Message {
    Clr(ClrMsg),
    InsAck(StateRef),
    UpdC(UpdCMsg),
    UpdReq(StateRef),
    Del(Box<StateMsg>),
    DelC(StateRef),
    Bus(BusMsg),
    Ins(Box<StateMsg>),
    Upd(Box<StateMsg>),
}

impl Message {
    pub fn action(&self) -> Action {
        match self {
            Message::Clr(_) => Action::Clr,
            Message::InsAck(_) => Action::InsAck,
            Message::UpdC(_) => Action::UpdC,
            Message::UpdReq(_) => Action::UpdReq,
            Message::Del(_) => Action::Del,
            Message::DelC(_) => Action::DelC,
            Message::Bus(_) => Action::Bus,
            Message::Ins(_) => Action::Ins,
            Message::Upd(_) => Action::Upd,
        }
    }

    /// Bytes of the message on the wire, subheader not included.
    pub fn wire_len(&self) -> usize {
        match self {
            Message::Clr(_) => ClrMsg::LEN,
            Message::InsAck(_) | Message::UpdReq(_) | Message::DelC(_) => StateRef::LEN,
            Message::UpdC(_) => UpdCMsg::LEN,
            Message::Del(_) | Message::Ins(_) | Message::Upd(_) => StateMsg::LEN,
            Message::Bus(_) => BusMsg::LEN,
        }
    }

    /// Read one message of `action` from the start of `b`; `None` if the
    /// action is not one parsed here or `b` is too short.
    pub fn parse(action: Action, b: &[u8]) -> Option<Message> {
        Some(match action {
            Action::Clr => Message::Clr(ClrMsg::parse(b)?),
            Action::InsAck => Message::InsAck(StateRef::parse(b)?),
            Action::UpdC => Message::UpdC(UpdCMsg::parse(b)?),
            Action::UpdReq => Message::UpdReq(StateRef::parse(b)?),
            Action::Del => Message::Del(Box::new(StateMsg::parse(b)?)),
            Action::DelC => Message::DelC(StateRef::parse(b)?),
            Action::Bus => Message::Bus(BusMsg::parse(b)?),
            Action::Ins => Message::Ins(Box::new(StateMsg::parse(b)?)),
            Action::Upd => Message::Upd(Box::new(StateMsg::parse(b)?)),
            _ => return None,
        })
    }

    /// Append the message's `wire_len` bytes to `out`.
    pub fn emit(&self, out: &mut Vec<u8>) {
        match self {
            Message::Clr(m) => m.emit(out),
            Message::InsAck(m) | Message::UpdReq(m) | Message::DelC(m) => m.emit(out),
            Message::UpdC(m) => m.emit(out),
            Message::Del(m) | Message::Ins(m) | Message::Upd(m) => m.emit(out),
            Message::Bus(m) => m.emit(out),
        }
    }
}

// ---------------------------------------------------------------------------
// Packets.

mod field {
    use std::ops::Range;
    pub const VERSION: usize = 0;
    pub const PAD: usize = 1;
    pub const LEN: Range<usize> = 2..4;
    pub const CKSUM: Range<usize> = 4..20;
}

/// A checked view over a packet's header: accessors never panic once
/// `new_checked` accepted the length (at least the 20-byte header).
#[derive(Clone, Copy, Debug)]
pub struct PfsyncPacket<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> PfsyncPacket<T> {
    pub fn new_checked(buf: T) -> Result<PfsyncPacket<T>, ParseError> {
        let len = buf.as_ref().len();
        if len < HEADER_LEN {
            return Err(ParseError::TooShort { len });
        }
        Ok(PfsyncPacket { buf })
    }
    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }
    pub fn version(&self) -> u8 {
        self.b()[field::VERSION]
    }
    pub fn pad(&self) -> u8 {
        self.b()[field::PAD]
    }
    /// The header's length field: the packet's bytes, header included.
    pub fn len_field(&self) -> u16 {
        let l = &self.b()[field::LEN];
        u16::from_be_bytes([l[0], l[1]])
    }
    /// Does the length field fit the header and the bytes at hand?
    pub fn len_ok(&self) -> bool {
        let l = self.len_field() as usize;
        (HEADER_LEN..=self.b().len()).contains(&l)
    }
    pub fn pfcksum(&self) -> [u8; CKSUM_LEN] {
        let mut c = [0u8; CKSUM_LEN];
        c.copy_from_slice(&self.b()[field::CKSUM]);
        c
    }
    /// The sections after the header, up to the length field (bytes after
    /// it are not part of the packet); empty when the field is wrong.
    pub fn body(&self) -> &[u8] {
        let end = (self.len_field() as usize).min(self.b().len());
        self.b().get(HEADER_LEN..end).unwrap_or(&[])
    }
}

/// `struct pfsync_subheader` (4 bytes): the action, the length of one
/// message in 32-bit words, and the message count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Subheader {
    pub action: u8,
    pub len_words: u8,
    pub count: u16,
}

impl Subheader {
    pub fn parse(b: &[u8]) -> Option<Subheader> {
        match b {
            [action, len_words, c0, c1, ..] => Some(Subheader {
                action: *action,
                len_words: *len_words,
                count: u16::from_be_bytes([*c0, *c1]),
            }),
            _ => None,
        }
    }
    /// Bytes of one message.
    pub fn msg_len(&self) -> usize {
        self.len_words as usize * 4
    }
    pub fn emit(&self, out: &mut Vec<u8>) {
        out.push(self.action);
        out.push(self.len_words);
        out.extend_from_slice(&self.count.to_be_bytes());
    }
}

/// A section the parser passed over: an action it has no use for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Skipped {
    /// Offset of the subheader from the start of the packet.
    pub offset: usize,
    pub action: u8,
    pub msg_len: usize,
    pub count: u16,
}

/// A packet's meaning: the sender's ruleset checksum and its messages in
/// order. `skipped` lists the sections passed over; it is not emitted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Packet {
    pub pfcksum: [u8; CKSUM_LEN],
    pub messages: Vec<Message>,
    pub skipped: Vec<Skipped>,
}

impl Packet {
    /// Parse and check a packet: version, length, every section.
    pub fn parse<T: AsRef<[u8]>>(p: &PfsyncPacket<T>) -> Result<Packet, ParseError> {
        if p.version() != VERSION {
            return Err(ParseError::BadVersion(p.version()));
        }
        if !p.len_ok() {
            return Err(ParseError::BadLength {
                header: p.len_field(),
                actual: p.b().len(),
            });
        }
        let body = p.body();
        let mut out = Packet {
            pfcksum: p.pfcksum(),
            ..Packet::default()
        };
        let mut at = 0;
        while at < body.len() {
            let offset = HEADER_LEN + at;
            let rest = &body[at..];
            let Some(sh) = Subheader::parse(rest) else {
                return Err(ParseError::TruncatedSubheader {
                    offset,
                    left: rest.len(),
                });
            };
            let data = &rest[SUBHEADER_LEN..];
            let mlen = sh.msg_len();
            let known = Action::from_u8(sh.action);
            let need = known.and_then(Action::msg_len);
            // Messages shorter than their action's are passed over, as
            // OpenBSD's input does (the section is skipped, the rest of
            // the packet read).
            let short = need.is_some_and(|need| mlen < need);
            match (known, need) {
                // A number past the last: skippable only if the peer says
                // how much to skip.
                (None, _) if mlen == 0 || sh.count == 0 => {
                    return Err(ParseError::BadAction {
                        offset,
                        action: sh.action,
                        len: mlen,
                        count: sh.count,
                    })
                }
                _ => {}
            }
            let total = mlen * sh.count as usize;
            if total > data.len() {
                return Err(ParseError::Truncated {
                    offset,
                    action: sh.action,
                    len: mlen,
                    count: sh.count,
                    left: data.len(),
                });
            }
            match known.filter(|_| need.is_some() && !short) {
                Some(action) => {
                    // `mlen >= need > 0`: the chunks are whole messages
                    // and parsing them cannot fail.
                    for chunk in data[..total].chunks_exact(mlen.max(1)) {
                        if let Some(m) = Message::parse(action, chunk) {
                            out.messages.push(m);
                        }
                    }
                }
                None => out.skipped.push(Skipped {
                    offset,
                    action: sh.action,
                    msg_len: mlen,
                    count: sh.count,
                }),
            }
            at += SUBHEADER_LEN + total;
        }
        Ok(out)
    }

    /// `parse` straight from bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Packet, ParseError> {
        Packet::parse(&PfsyncPacket::new_checked(b)?)
    }

    /// The packet's bytes: consecutive messages of one action share a
    /// subheader. Fails only past 65535 bytes, the length field's limit.
    pub fn to_bytes(&self) -> Result<Vec<u8>, EmitError> {
        let mut b = PacketBuilder::new(u16::MAX as usize, self.pfcksum);
        for m in &self.messages {
            b.push(m)?;
        }
        Ok(b.finish())
    }
}

/// A packet being filled up to a size limit, one message at a time:
/// consecutive messages of one action share a subheader. `fits` says
/// whether the next message would go in; when it would not, the caller
/// sends what it has and starts another. (The 65535-byte limit keeps a
/// section's count far below 65535.)
#[derive(Clone, Debug)]
pub struct PacketBuilder {
    buf: Vec<u8>,
    max_len: usize,
    /// The open section: its action, where its subheader is, its count.
    open: Option<(Action, usize, u16)>,
    messages: usize,
}

impl PacketBuilder {
    /// A packet of at most `max_len` bytes, pfsync header included (and
    /// at most 65535, the length field's limit).
    pub fn new(max_len: usize, pfcksum: [u8; CKSUM_LEN]) -> PacketBuilder {
        let mut buf = Vec::with_capacity(max_len.min(DEFAULT_MTU));
        buf.push(VERSION);
        buf.push(0);
        buf.extend_from_slice(&[0, 0]);
        buf.extend_from_slice(&pfcksum);
        PacketBuilder {
            buf,
            max_len: max_len.min(u16::MAX as usize),
            open: None,
            messages: 0,
        }
    }

    /// A packet for an interface of MTU `mtu` (an IPv4 header included,
    /// as OpenBSD counts it).
    pub fn for_mtu(mtu: usize, pfcksum: [u8; CKSUM_LEN]) -> PacketBuilder {
        PacketBuilder::new(mtu.saturating_sub(IPV4_HEADER_LEN), pfcksum)
    }

    /// Bytes `m` would add: the message, and a subheader unless it joins
    /// the open section.
    pub fn cost(&self, m: &Message) -> usize {
        let joins = matches!(self.open, Some((a, _, _)) if a == m.action());
        m.wire_len() + if joins { 0 } else { SUBHEADER_LEN }
    }

    pub fn fits(&self, m: &Message) -> bool {
        self.buf.len() + self.cost(m) <= self.max_len
    }

    /// Add `m`, or say how short the room is (the packet is unchanged).
    pub fn push(&mut self, m: &Message) -> Result<(), EmitError> {
        let need = self.cost(m);
        let left = self.max_len.saturating_sub(self.buf.len());
        if need > left {
            return Err(EmitError::NoRoom { need, left });
        }
        let action = m.action();
        match &mut self.open {
            Some((a, at, n)) if *a == action => {
                *n += 1;
                let at = *at;
                self.buf[at + 2..at + 4].copy_from_slice(&n.to_be_bytes());
            }
            _ => {
                let at = self.buf.len();
                Subheader {
                    action: action as u8,
                    len_words: (m.wire_len() / 4) as u8,
                    count: 1,
                }
                .emit(&mut self.buf);
                self.open = Some((action, at, 1));
            }
        }
        m.emit(&mut self.buf);
        self.messages += 1;
        Ok(())
    }

    /// Messages added so far.
    pub fn message_count(&self) -> usize {
        self.messages
    }
    pub fn is_empty(&self) -> bool {
        self.messages == 0
    }
    /// Bytes so far, header included.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// The packet, its length field written.
    pub fn finish(mut self) -> Vec<u8> {
        let len = self.buf.len() as u16;
        self.buf[field::LEN].copy_from_slice(&len.to_be_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of(m: &Message) -> Vec<u8> {
        let mut v = Vec::new();
        m.emit(&mut v);
        v
    }

    #[test]
    fn message_sizes_are_the_c_structs() {
        let s = Message::Ins(Box::default());
        assert_eq!(bytes_of(&s).len(), 264);
        assert_eq!(bytes_of(&Message::UpdC(UpdCMsg::default())).len(), 84);
        assert_eq!(bytes_of(&Message::Clr(ClrMsg::default())).len(), 20);
        assert_eq!(bytes_of(&Message::DelC(StateRef::default())).len(), 12);
        let bus = BusMsg {
            creatorid: 1,
            endtime: 2,
            status: BusStatus::End,
        };
        assert_eq!(bytes_of(&Message::Bus(bus)).len(), 12);
        for a in 0..=255u8 {
            if let Some(n) = Action::from_u8(a).and_then(Action::msg_len) {
                assert_eq!(n % 4, 0, "action {a}: whole 32-bit words");
                assert!(n / 4 <= 255);
            }
        }
    }

    #[test]
    fn state_fields_land_at_their_offsets() {
        let s = StateMsg {
            id: 0x0102_0304_0506_0708,
            creatorid: 0xaabb_ccdd,
            rt_addr: "192.0.2.9".parse().unwrap(),
            packets: [0x1111_1111_2222_2222, 3],
            max_mss: 0x05b4,
            af: AF_INET,
            proto: 6,
            state_flags: 0x1234,
            set_prio: [5, 6],
            ..StateMsg::default()
        };
        let mut b = Vec::new();
        s.emit(&mut b);
        assert_eq!(b[0..8], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(b[168..172], [192, 0, 2, 9]);
        assert_eq!(b[172..184], [0; 12]);
        assert_eq!(b[184..188], [0xff; 4], "rule: none");
        assert_eq!(
            b[204..212],
            [0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x22, 0x22]
        );
        assert_eq!(b[212..220], [0, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(b[236..240], [0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(b[248..252], [0x05, 0xb4, AF_INET, 6]);
        assert_eq!(b[260..264], [0x12, 0x34, 5, 6]);
        assert_eq!(StateMsg::parse(&b), Some(s));
        assert_eq!(StateMsg::parse(&b[..263]), None);
    }

    #[test]
    fn addresses_follow_the_family() {
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(&[10, 0, 0, 1]);
        raw[15] = 7; // meaningless after an IPv4 address
        assert_eq!(addr_from(raw, AF_INET), IpAddr::from([10, 0, 0, 1]));
        // Any other family keeps all sixteen bytes.
        assert_eq!(addr_bytes(&addr_from(raw, 0)), raw);
        assert_eq!(addr_bytes(&addr_from(raw, AF_INET6)), raw);
    }

    #[test]
    fn interface_names() {
        assert_eq!(IfName::new("em0").unwrap().to_string(), "em0");
        assert!(IfName::new("0123456789abcdef").is_none(), "no room for NUL");
        assert!(IfName::new("a\0b").is_none());
        let mut raw = *b"vio0\0garbage....";
        let n = IfName::from_wire(raw);
        assert_eq!(n.as_bytes(), b"vio0");
        assert_eq!(n.to_wire()[4..], [0; 12]);
        raw = *b"0123456789abcdef";
        assert_eq!(IfName::from_wire(raw).as_bytes(), &raw);
        assert!(IfName::default().is_empty());
    }

    #[test]
    fn reader_past_the_end_reads_zeros() {
        let r = &mut Rd::new(&[1, 2]);
        assert_eq!(r.u16(), 0x0102);
        assert_eq!(r.u32(), 0);
    }

    #[test]
    fn builder_shares_subheaders_and_respects_the_limit() {
        let r = Message::DelC(StateRef {
            id: 1,
            creatorid: 2,
        });
        let mut b = PacketBuilder::new(HEADER_LEN + SUBHEADER_LEN + 2 * 12, [0; 16]);
        assert!(b.is_empty());
        b.push(&r).unwrap();
        b.push(&r).unwrap();
        assert!(!b.fits(&r));
        assert_eq!(b.push(&r), Err(EmitError::NoRoom { need: 12, left: 0 }));
        let out = b.finish();
        assert_eq!(out.len(), 48);
        assert_eq!(out[2..4], [0, 48]);
        assert_eq!(out[20..24], [7, 3, 0, 2]);
        let p = Packet::from_bytes(&out).unwrap();
        assert_eq!(p.messages, vec![r.clone(), r]);
    }

    #[test]
    fn errors_name_the_place() {
        let e = ParseError::BadAction {
            offset: 40,
            action: 99,
            len: 0,
            count: 1,
        };
        assert!(e.to_string().contains("action 99 (unknown)"));
    }
}
