//! palisade-net: the Linux data plane.
//!
//! Owns the network ports (AF_PACKET rings), the daemon configuration,
//! logical interfaces (VLANs), bridges, the router and ARP/NDP. It
//! moves frames and asks palisade-filter what to do with the IP packets
//! among them; it knows nothing of rule semantics.

pub mod afpacket;
pub mod config;
pub mod dataplane;
pub mod fastpath;
pub mod ra;
pub mod tap;
