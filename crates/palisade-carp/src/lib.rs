//! palisade-carp: the Common Address Redundancy Protocol as OpenBSD's
//! carp(4) speaks it, as a sans-IO core.
//!
//! `wire` is the advertisement's format and authentication. `node` is the
//! protocol: the INIT / BACKUP / MASTER state machine of each virtual host
//! (vhid), the election, the timers and the demotion counters of interface
//! groups. The caller owns sockets, clocks and threads: it passes `now`,
//! feeds received advertisements and events (link up/down, demotions,
//! readiness, shutdown), and pulls out advertisements to send, events to
//! act on (announce the virtual addresses, log a transition) and the next
//! deadline. Nothing here reads a clock or the network, so several nodes
//! run in one test on a virtual clock.

pub mod node;
pub mod wire;

pub use node::{
    CarpConfig, ConfigError, Event, Node, Options, Reject, State, Status, TransitionReason,
    Transmit,
};
