//! The host interface: a TAP device through which the Linux stack of the
//! firewall itself (management access, local services) sends and receives,
//! while the owned ports stay Palisade's. Written on `libc` (one ioctl and
//! read/write); configured with iproute2, which Palisade requires anyway.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::process::Command;

use crate::config::Config;

const TUNSETIFF: libc::c_ulong = 0x400454ca;
const IFF_TAP: i16 = 0x0002;
const IFF_NO_PI: i16 = 0x1000;

pub struct Tap {
    pub name: String,
    fd: OwnedFd,
}

impl Tap {
    /// Create TAP device `name` (it disappears when this is dropped).
    pub fn create(name: &str) -> io::Result<Tap> {
        if name.len() >= 16 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "name too long"));
        }
        // SAFETY: opening a character device with a NUL-terminated path.
        let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut ifr = [0u8; 40];
        ifr[..name.len()].copy_from_slice(name.as_bytes());
        ifr[16..18].copy_from_slice(&(IFF_TAP | IFF_NO_PI).to_ne_bytes());
        // SAFETY: TUNSETIFF reads and writes a struct ifreq (40 bytes).
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF as _, ifr.as_mut_ptr()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: setting O_NONBLOCK on our descriptor.
        unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
        Ok(Tap {
            name: name.to_string(),
            fd,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Every frame waiting, to `f`.
    pub fn recv_all(&self, buf: &mut [u8], mut f: impl FnMut(&[u8])) {
        loop {
            // SAFETY: reading into a buffer of the length passed.
            let n =
                unsafe { libc::read(self.fd(), buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
            if n <= 0 {
                return;
            }
            f(&buf[..n as usize]);
        }
    }

    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: writing a buffer of the length passed.
        let r = unsafe {
            libc::write(
                self.fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Give the Linux stack the firewall's addresses on this device, and
    /// routes that send everything it originates through Palisade. The
    /// device does no ARP/NDP: Palisade takes every frame it sends.
    /// Returns warnings (a route the kernel already has, ...).
    pub fn configure(&self, cfg: &Config) -> Vec<String> {
        let mut warn = Vec::new();
        let n = self.name.as_str();
        let mut run = |args: &[&str]| match Command::new("ip").args(args).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => warn.push(format!(
                "host interface: ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) => warn.push(format!("host interface: ip: {e}")),
        };
        for (k, v) in [
            (format!("ipv6/conf/{n}/accept_ra"), "0"),
            (format!("ipv6/conf/{n}/autoconf"), "0"),
            (format!("ipv4/conf/{n}/route_localnet"), "1"),
            (format!("ipv4/conf/{n}/rp_filter"), "0"),
        ] {
            let _ = std::fs::write(format!("/proc/sys/net/{k}"), v);
        }
        run(&["link", "set", n, "arp", "off", "up"]);
        let mut nets = Vec::new();
        // (A link-local address on several interfaces is given once.)
        let mut given = std::collections::HashSet::new();
        for i in &cfg.ifaces {
            for p in &i.addresses {
                if !given.insert(p.ip) {
                    continue;
                }
                let (fam, host) = if p.ip.is_ipv4() {
                    ("-4", 32)
                } else {
                    ("-6", 128)
                };
                let a = format!("{}/{host}", p.ip);
                if p.ip.is_ipv4() {
                    run(&[fam, "addr", "add", &a, "dev", n]);
                } else {
                    run(&[fam, "addr", "add", &a, "dev", n, "nodad"]);
                }
                if p.bits < host {
                    // From the interface's own address: the stack's
                    // packets to a subnet leave from the address they
                    // would have on OpenBSD (the kernel would take the
                    // first address of the host interface, whatever the
                    // way out).
                    nets.push((format!("{}/{}", p.network(), p.bits), Some(p.ip)));
                }
            }
        }
        // CARP's virtual addresses belong to the stack too: the data plane
        // delivers traffic for them only while their virtual host is
        // master, so the stack answers for them only then.
        for c in &cfg.carp {
            for p in &c.addresses {
                let (fam, a) = if p.ip.is_ipv4() {
                    ("-4", format!("{}/32", p.ip))
                } else {
                    ("-6", format!("{}/128", p.ip))
                };
                if p.ip.is_ipv4() {
                    run(&[fam, "addr", "add", &a, "dev", n]);
                } else {
                    run(&[fam, "addr", "add", &a, "dev", n, "nodad"]);
                }
                // Its subnet is connected (router::lookup says so): the
                // stack reaches it from the virtual address, unless an
                // interface's own address already covers it.
                let covered = cfg.ifaces.iter().any(|i| {
                    i.addresses
                        .iter()
                        .any(|o| o.bits <= p.bits && o.contains(&p.ip))
                });
                let host = if p.ip.is_ipv4() { 32 } else { 128 };
                if p.bits < host && !covered {
                    nets.push((format!("{}/{}", p.network(), p.bits), Some(p.ip)));
                }
            }
        }
        for r in &cfg.routes {
            // From an address of the interface the route leaves by.
            let way = r.iface.or_else(|| r.via.and_then(|g| cfg.connected(&g)));
            let src = way.and_then(|i| {
                cfg.ifaces[i]
                    .addresses
                    .iter()
                    .find(|a| a.ip.is_ipv4() == r.to.ip.is_ipv4())
                    .map(|a| a.ip)
            });
            nets.push((format!("{}/{}", r.to.network(), r.to.bits), src));
        }
        // One route per network: the first address an interface lists in
        // it is the stack's source there (two addresses in one subnet
        // asked for the route twice, and the second was warned about).
        let mut seen = std::collections::HashSet::new();
        nets.retain(|(net, _)| seen.insert(net.clone()));
        for (net, src) in nets {
            let src = src.map(|a| a.to_string());
            let mut args = vec!["route", "add", &net, "dev", n, "metric", "100"];
            if let Some(a) = &src {
                args.extend(["src", a.as_str()]);
            }
            run(&args);
        }
        warn
    }
}
