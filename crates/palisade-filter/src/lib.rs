//! palisade-filter: the packet filter, pure.
//!
//! Owns the compiled ruleset and its evaluation with pf's semantics (state
//! lookup comes first in a later slice; then rules, last match wins unless
//! `quick`; `match` rules whose options stick; tags; anchors, nested and
//! wildcard; tables by longest prefix with negated entries; interface
//! groups; dynamic interface addresses). It does not own sockets, threads or
//! the clock: everything it needs comes in as arguments.
//!
//! `reference` is a deliberately naive evaluator that walks the IR rule by
//! rule. It is the oracle the compiled engine is tested against.

pub mod engine;
pub mod filter;
pub mod frag;
pub mod osfp;
pub mod packet;
pub mod reason;
pub mod reference;
pub mod state;
pub mod syncookie;
pub mod synlog;
pub mod table;
pub mod workers;

pub use engine::Engine;
pub use filter::{Decision, Filter, RouteTo, StateMatch};
pub use packet::{PacketMeta, RuleRef, Verdict, VerdictAction};
pub use reason::Reason;
pub use table::{AddrTable, TableSet};
