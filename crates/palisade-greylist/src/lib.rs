//! Greylisting mail by the sending machine's operating system (scenario
//! S6), without I/O: the caller reads sockets and the clock, this crate
//! parses and decides.
//!
//! - [`policy`]: Postfix's SMTPD access policy delegation protocol
//!   (`check_policy_service`): `name=value` lines ended by an empty line,
//!   answered with one `action=...` line and an empty line.
//! - [`grey`]: the decision. Greylisting keyed as postgrey keys it (the
//!   client's network, sender, recipient), applied only when the client's
//!   SYN looked like one of the configured systems; a header naming the
//!   system once per message.
//! - [`p0f`]: p0f v3's query API (a 21-byte query, a 232-byte answer), so
//!   tools written for p0f can ask Palisade.

pub mod grey;
pub mod p0f;
pub mod policy;
pub mod whitelist;
