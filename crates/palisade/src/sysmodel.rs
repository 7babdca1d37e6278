//! Reads the host model of the machine Palisade runs on: interfaces and
//! their addresses (getifaddrs), users and groups (/etc/passwd, /etc/group)
//! host names (/etc/hosts) and the services and protocols databases
//! (/etc/services, /etc/protocols; the parser consults OpenBSD's built-in
//! ones first and these for other names). Linux-specific, so it lives in
//! the binary.

use std::collections::BTreeMap;
use std::ffi::CStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use palisade_conf::host::{HostModel, IfAddr, Interface};
use palisade_conf::netdb;

pub fn from_system() -> HostModel {
    let mut m = HostModel {
        interfaces: interfaces(),
        ..Default::default()
    };
    m.users = id_file("/etc/passwd");
    m.groups = id_file("/etc/group");
    m.hosts = hosts_file("/etc/hosts");
    services_file(&mut m, "/etc/services");
    m.protocols = protocols_file("/etc/protocols");
    m
}

/// /etc/services: every name and alias of each tcp and udp entry, the
/// first entry of a transport winning, as getservbyname finds it.
fn services_file(m: &mut HostModel, path: &str) {
    let Ok(data) = std::fs::read(path) else {
        return;
    };
    for line in String::from_utf8_lossy(&data).lines() {
        if let Some((names, port, proto)) = netdb::parse_services_line(line) {
            if proto == "tcp" || proto == "udp" {
                for n in names {
                    m.add_service(&n, port, &proto);
                }
            }
        }
    }
}

/// /etc/protocols: every name and alias, the first entry winning.
fn protocols_file(path: &str) -> BTreeMap<String, u8> {
    let mut out = BTreeMap::new();
    if let Ok(data) = std::fs::read(path) {
        for line in String::from_utf8_lossy(&data).lines() {
            if let Some((names, num)) = netdb::parse_protocols_line(line) {
                for n in names {
                    out.entry(n).or_insert(num);
                }
            }
        }
    }
    out
}

fn id_file(path: &str) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    if let Ok(t) = std::fs::read_to_string(path) {
        for line in t.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 3 {
                if let Ok(id) = f[2].parse() {
                    out.entry(f[0].to_string()).or_insert(id);
                }
            }
        }
    }
    out
}

fn hosts_file(path: &str) -> BTreeMap<String, Vec<IpAddr>> {
    let mut out: BTreeMap<String, Vec<IpAddr>> = BTreeMap::new();
    if let Ok(t) = std::fs::read_to_string(path) {
        for line in t.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut it = line.split_whitespace();
            let Some(Ok(ip)) = it.next().map(|s| s.parse::<IpAddr>()) else {
                continue;
            };
            for name in it {
                let v = out.entry(name.to_string()).or_default();
                if !v.contains(&ip) {
                    v.push(ip);
                }
            }
        }
    }
    // IPv4 first, as the regress suite and most resolvers order them.
    for v in out.values_mut() {
        v.sort_by_key(|ip| ip.is_ipv6());
    }
    out
}

fn prefix_len(sa: *const libc::sockaddr) -> u8 {
    if sa.is_null() {
        return 0;
    }
    // SAFETY: getifaddrs returns valid sockaddr pointers whose family says
    // which concrete type they point to.
    unsafe {
        match (*sa).sa_family as i32 {
            libc::AF_INET => {
                let s = &*(sa as *const libc::sockaddr_in);
                u32::from_be(s.sin_addr.s_addr).count_ones() as u8
            }
            libc::AF_INET6 => {
                let s = &*(sa as *const libc::sockaddr_in6);
                s.sin6_addr
                    .s6_addr
                    .iter()
                    .map(|b| b.count_ones() as u8)
                    .sum()
            }
            _ => 0,
        }
    }
}

fn ip_of(sa: *const libc::sockaddr) -> Option<IpAddr> {
    if sa.is_null() {
        return None;
    }
    // SAFETY: as above; the family tag selects the layout.
    unsafe {
        match (*sa).sa_family as i32 {
            libc::AF_INET => {
                let s = &*(sa as *const libc::sockaddr_in);
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(s.sin_addr.s_addr))))
            }
            libc::AF_INET6 => {
                let s = &*(sa as *const libc::sockaddr_in6);
                Some(IpAddr::V6(Ipv6Addr::from(s.sin6_addr.s6_addr)))
            }
            _ => None,
        }
    }
}

pub fn interfaces() -> Vec<Interface> {
    let mut list: Vec<Interface> = Vec::new();
    let mut ifap: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a linked list we free with freeifaddrs below.
    if unsafe { libc::getifaddrs(&mut ifap) } != 0 {
        return list;
    }
    let mut p = ifap;
    while !p.is_null() {
        // SAFETY: p walks the list returned by getifaddrs until NULL.
        let ifa = unsafe { &*p };
        p = ifa.ifa_next;
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { CStr::from_ptr(ifa.ifa_name) }
            .to_string_lossy()
            .into_owned();
        let idx = match list.iter().position(|i| i.name == name) {
            Some(i) => i,
            None => {
                let loopback = ifa.ifa_flags & libc::IFF_LOOPBACK as u32 != 0;
                list.push(Interface {
                    name: name.clone(),
                    groups: if loopback { vec!["lo".into()] } else { vec![] },
                    loopback,
                    addrs: vec![],
                });
                list.len() - 1
            }
        };
        if let Some(ip) = ip_of(ifa.ifa_addr) {
            let peer = if ifa.ifa_flags & libc::IFF_POINTOPOINT as u32 != 0 {
                ip_of(ifa.ifa_ifu)
            } else {
                None
            };
            list[idx].addrs.push(IfAddr {
                ip,
                bits: prefix_len(ifa.ifa_netmask),
                peer,
            });
        }
    }
    // SAFETY: ifap came from a successful getifaddrs call.
    unsafe { libc::freeifaddrs(ifap) };
    list
}
