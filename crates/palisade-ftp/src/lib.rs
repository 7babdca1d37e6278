//! ftp-proxy's core, sans-IO (issue 14): what OpenBSD's ftp-proxy(8)
//! does with an FTP control connection, without sockets or clocks.
//!
//! - `parse`: the commands and replies that say where a data connection
//!   goes (PORT, EPRT, PASV, EPSV; 227, 229), read strictly and written
//!   back;
//! - `session`: one proxied session: relays the control connection,
//!   rewrites those commands and replies, writes the pf rules for each
//!   announced data connection into the session's anchor
//!   (`ftp-proxy/<id>`), refuses what ftp-proxy refuses (FTP bounce,
//!   ports below 1024, malformed addresses, overlong lines, idle
//!   sessions) with a log line for each.
//!
//! The daemon side (listening, asking the state table where a redirected
//! connection was going, loading the anchors through the control socket)
//! is in the `palisade` binary.

pub mod monitor;
pub mod parse;
pub mod session;

pub use session::{Config, Ends, Output, Session};
