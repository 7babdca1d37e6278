//! `palisade lab up|down|status`: scenario S1 on one machine, in network
//! namespaces, for newcomers (and for tests): a provider's router with "the
//! Internet" behind it, the firewall running Palisade (a transparent bridge
//! WAN <-> DMZ with a /32 management address, hide NAT and a port forward
//! for the LAN), DMZ hosts (a mail server on 25, a web server on 80, one
//! with a /32 and an off-subnet gateway) and a LAN web server. `up` starts
//! everything, shows what passes and what is blocked, and prints commands
//! to explore it; `down` removes it all.
//!
//!   wan   203.0.113.1/24, 198.18.200.1 ("the Internet")
//!    |  pw
//!   fw    bridge0 = wan + dmz, 198.51.100.7/32; lan 198.18.1.1/24
//!    |  pd             \ pl
//!   sw (switch)         lan 198.18.1.10 (web :80)
//!   / \
//! dmz1 203.0.113.10/24 (mail :25, web :80)   dmz2 203.0.113.20/32

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The lab's pf.conf and palisade.toml: examples/s1/ (also what the S1
/// end-to-end test runs).
pub const PF_CONF: &str = include_str!("../../../examples/s1/pf.conf");
pub const PALISADE_TOML: &str = include_str!("../../../examples/s1/palisade.toml");

const ROLES: [&str; 6] = ["wan", "fw", "sw", "dmz1", "dmz2", "lan"];

pub struct Lab {
    pub prefix: String,
}

impl Lab {
    pub fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    pub fn dir(&self) -> PathBuf {
        PathBuf::from(format!("/run/palisade-lab/{}", self.prefix))
    }

    fn exec(&self, role: &str, args: &[&str]) -> Result<(), String> {
        let o = Command::new("ip")
            .args(["netns", "exec", &self.ns(role)])
            .args(args)
            .output()
            .map_err(|e| format!("ip netns exec: {e} (is iproute2 installed?)"))?;
        if !o.status.success() {
            return Err(format!(
                "{role}: {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Ok(())
    }

    fn ip(&self, args: &[&str]) -> Result<(), String> {
        let o = Command::new("ip")
            .args(args)
            .output()
            .map_err(|e| format!("ip: {e} (is iproute2 installed?)"))?;
        if !o.status.success() {
            return Err(format!(
                "ip {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Ok(())
    }

    fn veth(&self, a: &str, an: &str, b: &str, bn: &str) -> Result<(), String> {
        let (na, nb) = (self.ns(a), self.ns(b));
        self.ip(&[
            "link", "add", an, "netns", &na, "type", "veth", "peer", "name", bn, "netns", &nb,
        ])?;
        self.exec(a, &["ip", "link", "set", an, "up"])?;
        self.exec(b, &["ip", "link", "set", bn, "up"])
    }

    /// Start a detached program in namespace `role`, remembered for `down`.
    fn spawn(&self, role: &str, args: &[&str], log: &str) -> Result<u32, String> {
        let log = std::fs::File::create(self.dir().join(log)).map_err(|e| e.to_string())?;
        let c = Command::new("ip")
            .args(["netns", "exec", &self.ns(role)])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{}: {e}", args[0]))?;
        let pid = c.id();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join("pids"))
            .map_err(|e| e.to_string())?;
        writeln!(f, "{pid}").map_err(|e| e.to_string())?;
        Ok(pid)
    }

    pub fn exists(&self) -> bool {
        Path::new(&format!("/var/run/netns/{}", self.ns("fw"))).exists()
    }

    pub fn up(&self, rules: Option<&Path>) -> Result<(), String> {
        if self.exists() {
            return Err(format!(
                "a lab named '{}' is already up: `palisade lab down` first",
                self.prefix
            ));
        }
        let pf = match rules {
            Some(f) => std::fs::read_to_string(f)
                .map_err(|e| format!("{}: {}", f.display(), palisade_conf::io_reason(&e)))?,
            None => PF_CONF.to_string(),
        };
        std::fs::create_dir_all(self.dir()).map_err(|e| e.to_string())?;
        let r = self.build(&pf);
        if r.is_err() {
            self.down();
        }
        r
    }

    fn build(&self, pf: &str) -> Result<(), String> {
        for r in ROLES {
            self.ip(&["netns", "add", &self.ns(r)])?;
            self.exec(r, &["ip", "link", "set", "lo", "up"])?;
        }
        self.veth("wan", "eth0", "fw", "pw")?;
        self.veth("fw", "pd", "sw", "sw0")?;
        self.veth("dmz1", "eth0", "sw", "sw1")?;
        self.veth("dmz2", "eth0", "sw", "sw2")?;
        self.veth("lan", "eth0", "fw", "pl")?;
        self.exec(
            "sw",
            &[
                "ip",
                "link",
                "add",
                "br0",
                "type",
                "bridge",
                "forward_delay",
                "0",
            ],
        )?;
        for p in ["sw0", "sw1", "sw2"] {
            self.exec("sw", &["ip", "link", "set", p, "master", "br0"])?;
        }
        self.exec("sw", &["ip", "link", "set", "br0", "up"])?;
        let cmds: &[(&str, &[&str])] = &[
            (
                "wan",
                &["ip", "addr", "add", "203.0.113.1/24", "dev", "eth0"],
            ),
            (
                "wan",
                &[
                    "ip",
                    "addr",
                    "add",
                    "2001:db8:ff::1/64",
                    "dev",
                    "eth0",
                    "nodad",
                ],
            ),
            (
                "wan",
                &["ip", "addr", "add", "198.18.200.1/32", "dev", "lo"],
            ),
            (
                "wan",
                &["ip", "route", "add", "198.51.100.7/32", "dev", "eth0"],
            ),
            // (no procps needed)
            (
                "wan",
                &["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"],
            ),
            (
                "dmz1",
                &["ip", "addr", "add", "203.0.113.10/24", "dev", "eth0"],
            ),
            (
                "dmz1",
                &[
                    "ip",
                    "addr",
                    "add",
                    "2001:db8:ff::10/64",
                    "dev",
                    "eth0",
                    "nodad",
                ],
            ),
            (
                "dmz1",
                &["ip", "route", "add", "default", "via", "203.0.113.1"],
            ),
            (
                "dmz1",
                &["ip", "route", "add", "198.51.100.7/32", "dev", "eth0"],
            ),
            (
                "dmz1",
                &["ip", "route", "add", "198.18.1.0/24", "via", "198.51.100.7"],
            ),
            (
                "dmz2",
                &["ip", "addr", "add", "203.0.113.20/32", "dev", "eth0"],
            ),
            (
                "dmz2",
                &["ip", "route", "add", "203.0.113.1/32", "dev", "eth0"],
            ),
            (
                "dmz2",
                &["ip", "route", "add", "default", "via", "203.0.113.1"],
            ),
            (
                "lan",
                &["ip", "addr", "add", "198.18.1.10/24", "dev", "eth0"],
            ),
            (
                "lan",
                &["ip", "route", "add", "default", "via", "198.18.1.1"],
            ),
        ];
        for (role, c) in cmds {
            self.exec(role, c)?;
        }
        let me = std::env::current_exe().map_err(|e| e.to_string())?;
        let me = me.to_str().ok_or("odd path")?;
        for (role, addr, what) in [
            ("wan", "198.18.200.1:80", "web"),
            ("dmz1", "203.0.113.10:25", "smtp"),
            ("dmz1", "203.0.113.10:80", "web"),
            ("dmz1", "203.0.113.10:8080", "web"),
            ("lan", "198.18.1.10:80", "web"),
            ("fw", "0.0.0.0:22", "ssh"),
        ] {
            self.spawn(
                role,
                &[me, "lab", "serve", addr, what],
                &format!(
                    "serve-{role}-{what}-{}.log",
                    addr.rsplit(':').next().unwrap()
                ),
            )?;
        }
        std::fs::write(self.dir().join("pf.conf"), pf).map_err(|e| e.to_string())?;
        let cfg = self.dir().join("palisade.toml");
        let toml = format!(
            "control = \"{}\"\npflog = \"{}\"\n{PALISADE_TOML}",
            self.dir().join("palisade.sock").display(),
            self.dir().join("pflog").display()
        );
        std::fs::write(&cfg, toml).map_err(|e| e.to_string())?;
        let check = Command::new("ip")
            .args(["netns", "exec", &self.ns("fw"), me, "run", "-n", "-c"])
            .arg(&cfg)
            .output()
            .map_err(|e| e.to_string())?;
        if !check.status.success() {
            return Err(String::from_utf8_lossy(&check.stderr).to_string());
        }
        self.spawn(
            "fw",
            &[me, "run", "-c", cfg.to_str().unwrap()],
            "palisade.log",
        )?;
        // Wait (bounded) until traffic crosses the bridge.
        let t = Instant::now();
        while !self
            .tcp("wan", "203.0.113.10:25", 1)
            .is_ok_and(|g| g.starts_with("220"))
        {
            if t.elapsed() > Duration::from_secs(15) {
                let log =
                    std::fs::read_to_string(self.dir().join("palisade.log")).unwrap_or_default();
                return Err(format!("Palisade did not start forwarding:\n{log}"));
            }
        }
        Ok(())
    }

    /// Connect from `role` to `to`; the greeting or the first answer.
    pub fn tcp(&self, role: &str, to: &str, secs: u64) -> Result<String, String> {
        let to: SocketAddr = to.parse().map_err(|_| format!("bad address {to}"))?;
        let path = format!("/var/run/netns/{}", self.ns(role));
        std::thread::spawn(move || {
            let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
            // SAFETY: setns on this thread only, with a namespace fd we opened.
            if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err("setns failed".into());
            }
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(secs))
                .map_err(|e| e.to_string())?;
            s.set_read_timeout(Some(Duration::from_secs(secs)))
                .map_err(|e| e.to_string())?;
            let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
            // Everything until the server closes (web), or the greeting
            // line (smtp, ssh: they wait for us).
            let mut got = Vec::new();
            let mut buf = [0u8; 512];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        got.extend_from_slice(&buf[..n]);
                        if !got.starts_with(b"HTTP/") && got.ends_with(b"\n") {
                            break;
                        }
                    }
                    Err(e) if got.is_empty() => return Err(e.to_string()),
                    Err(_) => break,
                }
            }
            Ok(String::from_utf8_lossy(&got).to_string())
        })
        .join()
        .map_err(|_| "thread panicked".to_string())?
    }

    /// What passes and what is blocked, one line each; true if all as expected.
    pub fn show(&self) -> bool {
        let mut all = true;
        let mut line = |what: &str, r: Result<String, String>, want_pass: bool, want: &str| {
            let ok = match &r {
                Ok(g) => want_pass && g.contains(want),
                Err(_) => !want_pass,
            };
            all &= ok;
            let seen = match &r {
                Ok(g) => format!("passes: {}", g.lines().last().unwrap_or("").trim()),
                Err(e) => format!("blocked ({e})"),
            };
            println!(
                "  [{}] {what:<52} {seen}",
                if ok { "ok" } else { "UNEXPECTED" }
            );
        };
        println!("What passes and what is blocked:");
        line(
            "WAN -> DMZ mail server, SMTP",
            self.tcp("wan", "203.0.113.10:25", 3),
            true,
            "220",
        );
        line(
            "WAN -> DMZ web server, port 8080",
            self.tcp("wan", "203.0.113.10:8080", 2),
            false,
            "",
        );
        line(
            "DMZ -> the Internet (bridged, its own address)",
            self.tcp("dmz1", "198.18.200.1:80", 3),
            true,
            "you are 203.0.113.10",
        );
        line(
            "DMZ (/32, off-subnet gateway) -> the Internet",
            self.tcp("dmz2", "198.18.200.1:80", 3),
            true,
            "you are 203.0.113.20",
        );
        line(
            "LAN -> the Internet (hide NAT)",
            self.tcp("lan", "198.18.200.1:80", 3),
            true,
            "you are 198.51.100.7",
        );
        line(
            "Internet -> firewall:8080 -> LAN web (port forward)",
            self.tcp("wan", "198.51.100.7:8080", 3),
            true,
            "you are 203.0.113.1",
        );
        line(
            "LAN -> DMZ web server (not translated)",
            self.tcp("lan", "203.0.113.10:80", 3),
            true,
            "you are 198.18.1.10",
        );
        line(
            "DMZ -> LAN web server",
            self.tcp("dmz1", "198.18.1.10:80", 2),
            false,
            "",
        );
        line(
            "Internet -> ssh on the firewall itself",
            self.tcp("wan", "198.51.100.7:22", 3),
            true,
            "SSH-2.0",
        );
        all
    }

    pub fn print_help(&self) {
        let p = &self.prefix;
        println!(
            "\nExplore (as root):\n  ip netns exec {p}-lan curl http://198.18.200.1/      # LAN -> Internet, NATed\n  ip netns exec {p}-wan curl http://198.51.100.7:8080/ # port forward to the LAN\n  ip netns exec {p}-wan ping 203.0.113.20               # through the bridge\n  ip netns exec {p}-wan traceroute -n -I 203.0.113.20  # the bridge is invisible\n  palisade lab status{arg}                                # these checks again\n  palisade show states -s {d}/palisade.sock   # Palisade's states (like pfctl -ss)\n  palisade reload -s {d}/palisade.sock        # after editing its pf.conf\n  tcpdump -n -e -r {d}/pflog                  # what `block log` dropped\n  Palisade's log: {d}/palisade.log   its pf.conf: {d}/pf.conf\n  palisade lab down{arg}                                  # remove it all",
            d = self.dir().display(),
            arg = if p == "lab" { String::new() } else { format!(" --prefix {p}") },
        );
    }

    /// Remove everything `up` made; quiet about what is already gone.
    pub fn down(&self) {
        if let Ok(t) = std::fs::read_to_string(self.dir().join("pids")) {
            for pid in t.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: signalling processes we started (recorded by PID).
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        for r in ROLES {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.ns(r)])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(self.dir());
    }
}

/// `palisade lab serve ADDR KIND`: the lab's servers. `web` answers HTTP
/// with who the client appears to be; `smtp` and `ssh` greet.
pub fn serve(addr: &str, kind: &str) -> Result<(), String> {
    let l = TcpListener::bind(addr).map_err(|e| format!("{addr}: {e}"))?;
    for s in l.incoming() {
        let Ok(mut s) = s else { continue };
        let peer = s
            .peer_addr()
            .map(|p| p.ip().to_string())
            .unwrap_or_default();
        let kind = kind.to_string();
        std::thread::spawn(move || {
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            match kind.as_str() {
                "smtp" => {
                    let _ = s.write_all(b"220 mail.example ESMTP (palisade lab)\r\n");
                }
                "ssh" => {
                    let _ = s.write_all(b"SSH-2.0-palisade-lab\r\n");
                }
                _ => {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf);
                    let body = format!("you are {peer}\n");
                    let reply = format!(
                        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = s.write_all(reply.as_bytes());
                }
            }
        });
    }
    Ok(())
}
