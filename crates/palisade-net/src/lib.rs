//! palisade-net: the Linux data plane.
//!
//! Owns the network ports (AF_PACKET rings), the transparent bridge and,
//! later, the router, VLAN interfaces, ARP/NDP and the host interface. It
//! moves frames and asks palisade-filter what to do with the IP packets
//! among them; it knows nothing of rule semantics.

pub mod afpacket;
pub mod bridge;
