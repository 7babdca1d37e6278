//! palisade-pfsync: pf state table synchronisation as OpenBSD's pfsync(4)
//! speaks it (protocol version 6), as a sans-IO core.
//!
//! `wire` is the packet format: the header, the subheaders and every
//! message a version 6 peer sends (full state records, the compressed
//! updates, deletions and acknowledgements, update requests, bulk update
//! status, clears), parsed from and emitted to bytes exactly as OpenBSD's
//! `if_pfsync.h` and `pfvar.h` lay them out. Nothing here opens a socket,
//! reads a clock or touches a state table: the caller receives and sends
//! the IP payloads (protocol 240).
//!
//! `sync` is the protocol: what to send for the local table's changes and
//! when, what the peer's messages mean for the local table, update
//! requests, the bulk update with its CARP demotion; fed the time by the
//! caller, tested on a virtual clock.

pub mod convert;
pub mod sync;
pub mod wire;

pub use wire::{
    Action, BusMsg, BusStatus, ClrMsg, EmitError, IfName, Message, Packet, PacketBuilder,
    ParseError, PfsyncPacket, Skipped, StateKey, StateMsg, StatePeer, StateRef, StateScrub,
    Subheader, UpdCMsg,
};
