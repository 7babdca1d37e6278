//! `palisade lab up --scenario s2`: scenario S2 on one machine, in network
//! namespaces. Palisade replaces a cloud's virtual router: the VMs live on
//! VLAN 1234 behind the router's trunk port (Palisade tags and untags
//! 802.1Q itself), one of them with public addresses that the router
//! answers ARP and NDP for upstream (proxy ARP) and routes to the VLAN;
//! the others hide behind the router's address (examples/s2/).
//!
//!   up      203.0.113.1, 2001:db8:ff::1 (the provider's router);
//!           "the Internet" behind it: 198.18.200.1, 2001:db8:200::1 (web)
//!     |
//!   router  eth0 "wan" 203.0.113.2, 2001:db8:ff::2, proxy ARP/NDP for
//!           203.0.113.10, 2001:db8:ff::10;
//!           eth1 trunk, VLAN 1234 "vlan1234" 192.0.2.1, 2001:db8:1::1
//!     |
//!   sw      a switch carrying the tagged frames
//!   /  |  \
//! vm1 VLAN 1234: 192.0.2.10, public 203.0.113.10, 2001:db8:ff::10
//!     (web :80, mail :25)
//! vm2 VLAN 1234: 192.0.2.20, 2001:db8:1::20
//! vm3 VLAN 99: 192.0.2.30 (another tenant's VLAN: not the router's)
//!
//! This kernel has no 8021q module, and the VMs need tagged frames on
//! their trunk: each VM's NIC is a TAP device `vm0` that `palisade lab
//! vlan-adapter` (in the VM's namespace) joins to its trunk port, adding
//! the VM's tag on the way out and taking it off on the way in (frames of
//! other VLANs are not the VM's).

use super::*;

pub const PF_CONF: &str = include_str!("../../../../examples/s2/pf.conf");
pub const TOML: &str = include_str!("../../../../examples/s2/palisade.toml");

/// The S2 lab's hosts.
pub const HOSTS: [&str; 6] = ["up", "router", "sw", "vm1", "vm2", "vm3"];

/// The VMs: host, VLAN, addresses on their NIC, default routes (IPv4 and
/// IPv6 gateway with the source address to use, as a cloud VM with a
/// public address has it).
type Vm = (
    &'static str,
    u16,
    &'static [&'static str],
    [&'static str; 4],
);
const VMS: [Vm; 3] = [
    (
        "vm1",
        1234,
        &[
            "192.0.2.10/24",
            "203.0.113.10/32",
            "2001:db8:1::10/64",
            "2001:db8:ff::10/128",
        ],
        [
            "192.0.2.1",
            "203.0.113.10",
            "2001:db8:1::1",
            "2001:db8:ff::10",
        ],
    ),
    (
        "vm2",
        1234,
        &["192.0.2.20/24", "2001:db8:1::20/64"],
        ["192.0.2.1", "192.0.2.20", "2001:db8:1::1", "2001:db8:1::20"],
    ),
    (
        "vm3",
        99,
        &["192.0.2.30/24", "2001:db8:1::30/64"],
        ["192.0.2.1", "192.0.2.30", "2001:db8:1::1", "2001:db8:1::30"],
    ),
];

/// The servers `up` starts (`palisade lab serve`): host, address, kind;
/// each answers from its own host once it runs.
const SERVERS: [(&str, &str, &str); 6] = [
    ("up", "198.18.200.1:80", "web"),
    ("up", "[2001:db8:200::1]:80", "web"),
    ("vm1", "203.0.113.10:80", "web"),
    ("vm1", "[2001:db8:ff::10]:80", "web"),
    ("vm1", "203.0.113.10:25", "smtp"),
    // (Both families: a listener on :: takes IPv4 too.)
    ("router", "[::]:22", "ssh"),
];

/// What `up` and `status` check: (what, from, to, seconds, passes, its
/// answer), as `Lab::run_checks` takes them.
const CHECKS: [(&str, &str, &str, u64, bool, &str); 11] = [
    (
        "Upstream -> public VM, web (proxy ARP)",
        "up",
        "203.0.113.10:80",
        3,
        true,
        "you are 203.0.113.1",
    ),
    (
        "Upstream -> public VM, web over IPv6 (proxy NDP)",
        "up",
        "[2001:db8:ff::10]:80",
        3,
        true,
        "you are 2001:db8:ff::1",
    ),
    (
        "Upstream -> public VM, SMTP (not in pf.conf)",
        "up",
        "203.0.113.10:25",
        2,
        false,
        "",
    ),
    (
        "Upstream -> ssh on the router itself",
        "up",
        "203.0.113.2:22",
        3,
        true,
        "SSH-2.0",
    ),
    (
        "Upstream -> ssh on the router itself over IPv6",
        "up",
        "[2001:db8:ff::2]:22",
        3,
        true,
        "SSH-2.0",
    ),
    (
        "Public VM -> the Internet (its own address)",
        "vm1",
        "198.18.200.1:80",
        3,
        true,
        "you are 203.0.113.10",
    ),
    (
        "Private VM -> the Internet (NAT to 203.0.113.2)",
        "vm2",
        "198.18.200.1:80",
        3,
        true,
        "you are 203.0.113.2",
    ),
    (
        "Private VM -> the Internet over IPv6 (routed)",
        "vm2",
        "[2001:db8:200::1]:80",
        3,
        true,
        "you are 2001:db8:1::20",
    ),
    (
        "VM on VLAN 1234 -> ssh on the router (its gateway)",
        "vm2",
        "192.0.2.1:22",
        3,
        true,
        "SSH-2.0",
    ),
    (
        "VM on VLAN 1234 -> ssh on the router over IPv6",
        "vm2",
        "[2001:db8:1::1]:22",
        3,
        true,
        "SSH-2.0",
    ),
    (
        "VM on VLAN 99 -> the router (not its VLAN)",
        "vm3",
        "192.0.2.1:22",
        2,
        false,
        "",
    ),
];

impl Lab {
    /// This lab runs scenario S2 (its directory says so).
    pub fn is_s2(&self) -> bool {
        std::fs::read_to_string(self.dir().join("scenario")).is_ok_and(|s| s.trim() == "s2")
    }

    pub fn check_host_s2(host: &str) -> Result<(), String> {
        check_among(host, &HOSTS, "the S2 lab's")
    }

    pub fn up_s2(&self) -> Result<(), String> {
        self.up_scenario(&[], "", Lab::build_s2)
    }

    fn build_s2(&self) -> Result<(), String> {
        std::fs::write(self.dir().join("scenario"), "s2\n").map_err(|e| e.to_string())?;
        self.add_hosts(&HOSTS)?;
        self.veth("up", "eth0", "router", "eth0")?;
        self.veth("router", "eth1", "sw", "sw0")?;
        for (i, (vm, ..)) in VMS.iter().enumerate() {
            self.veth(vm, "trunk", "sw", &format!("sw{}", i + 1))?;
        }
        self.switch("sw", &["sw0", "sw1", "sw2", "sw3"])?;
        let me = std::env::current_exe().map_err(|e| e.to_string())?;
        let me = me.to_str().ok_or("odd path")?;
        for (vm, vid, addrs, [gw4, src4, gw6, src6]) in VMS.iter() {
            // The trunk carries only tagged frames: the VM's own stack
            // speaks on vm0, not here.
            // (no procps needed)
            self.run_in(
                vm,
                &[
                    "sh",
                    "-c",
                    "echo 1 > /proc/sys/net/ipv6/conf/trunk/disable_ipv6",
                ],
            )?;
            self.spawn(
                vm,
                &[me, "lab", "vlan-adapter", "trunk", "vm0", &vid.to_string()],
                &format!("vlan-adapter-{vm}.log"),
            )?;
            self.wait_link(vm, "vm0")?;
            self.run_in(vm, &["ip", "link", "set", "vm0", "up"])?;
            for a in addrs.iter() {
                let mut c = vec!["ip", "addr", "add", a, "dev", "vm0"];
                if a.contains(':') {
                    c.push("nodad");
                }
                self.run_in(vm, &c)?;
            }
            self.run_in(
                vm,
                &["ip", "route", "add", "default", "via", gw4, "src", src4],
            )?;
            self.run_in(
                vm,
                &[
                    "ip", "-6", "route", "add", "default", "via", gw6, "src", src6,
                ],
            )?;
        }
        let cmds: &[&[&str]] = &[
            &["ip", "addr", "add", "203.0.113.1/24", "dev", "eth0"],
            &[
                "ip",
                "addr",
                "add",
                "2001:db8:ff::1/64",
                "dev",
                "eth0",
                "nodad",
            ],
            &["ip", "addr", "add", "198.18.200.1/32", "dev", "lo"],
            &["ip", "addr", "add", "2001:db8:200::1/128", "dev", "lo"],
            // The VMs' IPv6 network is routed to the router (IPv4's
            // private one hides behind the router's address).
            &[
                "ip",
                "-6",
                "route",
                "add",
                "2001:db8:1::/64",
                "via",
                "2001:db8:ff::2",
            ],
        ];
        for c in cmds {
            self.run_in("up", c)?;
        }
        for (role, addr, what) in SERVERS {
            self.spawn(
                role,
                &[me, "lab", "serve", addr, what],
                &format!(
                    "serve-{role}-{what}-{}.log",
                    addr.trim_start_matches('[')
                        .split([']', ':'])
                        .next()
                        .unwrap_or("")
                ),
            )?;
        }
        std::fs::write(self.dir().join("pf.conf"), PF_CONF).map_err(|e| e.to_string())?;
        let sock = self.dir().join("palisade.sock");
        let cfg = self.dir().join("palisade.toml");
        std::fs::write(
            &cfg,
            format!(
                "control = \"{}\"\npflog = \"{}\"\n{TOML}",
                sock.display(),
                self.dir().join("pflog").display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let pid = self.spawn(
            "router",
            &[me, "run", "-c", cfg.to_str().ok_or("odd path")?],
            "palisade.log",
        )? as i32;
        let t = Instant::now();
        let started = proc_start(pid);
        let failed = |what: &str| {
            let log = std::fs::read_to_string(self.dir().join("palisade.log")).unwrap_or_default();
            Err(format!("Palisade {what}:\n{log}"))
        };
        self.wait_control(&sock, pid, "palisade.log")?;
        // Every server answers on its own host, and the router forwards
        // from upstream to the public VM (bounded).
        for (role, addr, _) in SERVERS {
            let local = addr.replace("0.0.0.0", "127.0.0.1");
            while self.tcp(role, &local, 1).is_err() {
                if t.elapsed() > Duration::from_secs(15) {
                    return Err(format!("the lab's server {addr} on {role} does not answer"));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // (IPv4 and IPv6: proxy ARP and proxy NDP each.)
        while !["203.0.113.10:80", "[2001:db8:ff::10]:80"]
            .iter()
            .all(|to| self.tcp("up", to, 1).is_ok_and(|g| g.contains("you are")))
        {
            if started.is_none() || proc_start(pid) != started {
                return failed("exited");
            }
            if t.elapsed() > Duration::from_secs(20) {
                return failed("did not start forwarding to the VLAN");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Wait (bounded) until interface `name` exists in `role`'s namespace.
    fn wait_link(&self, role: &str, name: &str) -> Result<(), String> {
        let t = Instant::now();
        while self.run_in(role, &["ip", "link", "show", name]).is_err() {
            if t.elapsed() > Duration::from_secs(5) {
                return Err(format!(
                    "{role}: {name} did not appear (see {})",
                    self.dir()
                        .join(format!("vlan-adapter-{role}.log"))
                        .display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// What passes and what is blocked; true if all as expected.
    pub fn show_s2(&self) -> bool {
        self.run_checks(&CHECKS, true)
    }

    pub fn print_s2(&self) {
        let a = self.prefix_arg();
        let d = self.dir().display().to_string();
        println!("Scenario S2: Palisade (router) is the gateway of VMs on VLAN 1234 (trunk eth1, tagged by Palisade itself); upstream (up) reaches the public VM's 203.0.113.10 and 2001:db8:ff::10 through the router's proxy ARP and NDP; the private VM hides behind 203.0.113.2.");
        let x = |host: &str, cmd: &str| format!("palisade lab exec{a} {host} -- {cmd}");
        let lines = [
            (
                x("up", "curl http://203.0.113.10/"),
                "the public VM, through proxy ARP",
            ),
            (
                x("up", "ip neigh show 203.0.113.10"),
                "upstream learnt the VM's address at the router's MAC",
            ),
            (
                x("vm2", "curl http://198.18.200.1/"),
                "a private VM, hidden behind the router's address",
            ),
            (
                x("vm2", "curl -g 'http://[2001:db8:200::1]/'"),
                "the same over IPv6 (routed)",
            ),
            (
                x("vm3", "ping -c 2 -W 1 192.0.2.1"),
                "another VLAN: the router does not answer",
            ),
            (
                x("sw", "tcpdump -n -e -c 4 -i br0 vlan"),
                "the 802.1Q tags on the trunk (while pinging)",
            ),
            (
                format!("palisade show states -s {d}/palisade.sock"),
                "Palisade's states (like pfctl -ss)",
            ),
            (
                format!("palisade show neighbors -s {d}/palisade.sock"),
                "the router's ARP and neighbour caches",
            ),
            (
                format!("palisade show rules -v -s {d}/palisade.sock"),
                "the rules with their counters",
            ),
            (
                format!("tcpdump -n -e -r {d}/pflog"),
                "what `block log` dropped",
            ),
            (format!("palisade lab down{a}"), "remove it all"),
        ];
        self.print_explore(&HOSTS, &lines);
    }
}

/// `palisade lab vlan-adapter TRUNK TAP VID`: a VM's NIC on VLAN `vid`
/// (without the kernel's 8021q module). Creates TAP device `tap` in this
/// namespace and moves frames between it and port `trunk` until killed:
/// to the trunk with the tag added, from the trunk those tagged `vid`
/// with the tag taken off (others are dropped, as a VLAN port does).
pub fn vlan_adapter(trunk: &str, tap: &str, vid: u16) -> Result<(), String> {
    if !(1..=4094).contains(&vid) {
        return Err(format!("VLAN {vid}: use 1 to 4094"));
    }
    let t = palisade_net::tap::Tap::create(tap).map_err(|e| format!("TAP {tap}: {e}"))?;
    let port = palisade_net::afpacket::Port::open(trunk).map_err(|e| format!("{trunk}: {e}"))?;
    let mut buf = vec![0u8; 65536];
    let mut out = Vec::with_capacity(2048);
    loop {
        let mut fds = [
            libc::pollfd {
                fd: t.fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: port.fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: a valid array of two pollfds.
        unsafe { libc::poll(fds.as_mut_ptr(), 2, 1000) };
        t.recv_all(&mut buf, |f| {
            if f.len() < 14 {
                return;
            }
            out.clear();
            out.extend_from_slice(&f[..12]);
            out.extend_from_slice(&[0x81, 0x00]);
            out.extend_from_slice(&vid.to_be_bytes());
            out.extend_from_slice(&f[12..]);
            let _ = port.send(&out);
        });
        port.recv_batch(|f, _| {
            if f.len() >= 18
                && f[12..14] == [0x81, 0x00]
                && u16::from_be_bytes([f[14], f[15]]) & 0xfff == vid
            {
                out.clear();
                out.extend_from_slice(&f[..12]);
                out.extend_from_slice(&f[16..]);
                let _ = t.send(&out);
            }
        });
    }
}
