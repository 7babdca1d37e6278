//! `palisade lab up|down|status`: scenario S1 on one machine, in network
//! namespaces, for newcomers (and for tests): a provider's router with "the
//! Internet" behind it, the firewall running Palisade (a transparent bridge
//! WAN <-> DMZ with a /32 management address, hide NAT and a port forward
//! for the LAN), DMZ hosts (a mail server on 25, a web server on 80, one
//! with a /32 and an off-subnet gateway) and a LAN web server. `up` starts
//! everything, shows what passes and what is blocked, and prints commands
//! to explore it; `down` removes it all. `exec HOST -- COMMAND` runs a
//! command on one of the hosts, `status` lists the hosts, their addresses
//! and gateways, and the firewall's interfaces as pf.conf names them.
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

use serde::Serialize;

pub mod s2;
pub mod s3;
pub mod s5;
pub mod s6;

/// The lab's pf.conf and palisade.toml: examples/s1/ (also what the S1
/// end-to-end test runs).
pub const PF_CONF: &str = include_str!("../../../examples/s1/pf.conf");
pub const PALISADE_TOML: &str = include_str!("../../../examples/s1/palisade.toml");

/// The lab's hosts, as `lab exec` and `lab status` name them; each is a
/// namespace PREFIX-HOST.
pub const HOSTS: [&str; 6] = ["wan", "fw", "sw", "dmz1", "dmz2", "lan"];

/// Every scenario's hosts (S1, S2, S3, S5, S6): what `down` looks for.
pub fn all_hosts() -> impl Iterator<Item = &'static str> {
    HOSTS
        .iter()
        .chain(s2::HOSTS.iter())
        .chain(s3::HOSTS.iter())
        .chain(s5::HOSTS.iter())
        .chain(s6::HOSTS.iter())
        .copied()
}

/// The servers `up` starts (`palisade lab serve`): host, address, kind.
const SERVERS: [(&str, &str, &str); 6] = [
    ("wan", "198.18.200.1:80", "web"),
    ("dmz1", "203.0.113.10:25", "smtp"),
    ("dmz1", "203.0.113.10:80", "web"),
    ("dmz1", "203.0.113.10:8080", "web"),
    ("lan", "198.18.1.10:80", "web"),
    ("fw", "0.0.0.0:22", "ssh"),
];

/// Where the labs keep their files, one directory per prefix.
const RUN_DIR: &str = "/run/palisade-lab";

/// How long `down` waits for the lab's processes after SIGTERM, before
/// SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);

pub struct Lab {
    pub prefix: String,
}

/// `host` if it is one of the lab's hosts, else what the hosts are.
pub fn check_host(host: &str) -> Result<(), String> {
    check_among(host, &HOSTS, "the lab's")
}

/// `host` if it is one of `hosts` (of `lab`), else what they are.
fn check_among(host: &str, hosts: &[&str], lab: &str) -> Result<(), String> {
    if hosts.contains(&host) {
        Ok(())
    } else {
        Err(format!(
            "unknown host '{host}': {lab} hosts are {}",
            hosts.join(", ")
        ))
    }
}

/// The programs a scenario runs on its hosts, each on PATH, or the first
/// missing one and how to install them (`install`). Checked before
/// anything runs: a program that is not there fails only once it runs
/// inside `ip netns exec`, whose error the lab does not see (S3's ping
/// then looked like a LAN cut off).
pub fn check_tools(tools: &[&str], install: &str) -> Result<(), String> {
    for tool in tools {
        let found = Command::new("which")
            .arg(tool)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Err(format!("this lab needs {tool}: {install}"));
        }
    }
    Ok(())
}

/// What scenario S3 runs besides `ip` and Palisade: `lab failover`'s ping
/// across the pair and its download (lab/s3.rs), and the commands it
/// prints; with the Debian packages that have them.
pub const S3_TOOLS: [&str; 2] = ["ping", "curl"];
pub const S3_INSTALL: &str = "apt install iputils-ping curl (Debian packages iputils-ping, curl)";

/// How long `lab undemote` waits for the undemoted firewall to take its
/// vhids back: the backup gives way at the firewall's next advertisement
/// (about 1.4 s at the lab's advbase 1), so a fixed short wait showed the
/// state before the move.
pub const UNDEMOTE_SETTLE: Duration = Duration::from_secs(5);

/// Whether a firewall (its `carp show --json`) is master of every vhid it
/// has.
pub fn master_of_all(view: &serde_json::Value) -> bool {
    view["interfaces"]
        .as_array()
        .is_some_and(|a| !a.is_empty() && a.iter().all(|i| i["state"] == "MASTER"))
}

/// Whether a firewall (`own`, its `carp show --json`) wins the election
/// of each of its vhids against the other (`other`, None when its daemon
/// does not answer): a lower demotion wins, then (the lab's firewalls
/// preempt) a shorter advertisement interval, advbase + advskew/256, as
/// palisade-carp's node elects. Lets `lab undemote` stop waiting for a
/// takeover that will not come.
pub fn expects_master(own: &serde_json::Value, other: Option<&serde_json::Value>) -> bool {
    let Some(other) = other else {
        return true;
    };
    let key = |i: &serde_json::Value| {
        (
            i["demote"].as_u64().unwrap_or(0),
            i["advbase"].as_u64().unwrap_or(0) * 256 + i["advskew"].as_u64().unwrap_or(0),
        )
    };
    let theirs = other["interfaces"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    own["interfaces"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[])
        .iter()
        .all(|i| {
            theirs
                .iter()
                .find(|t| t["vhid"] == i["vhid"])
                .is_none_or(|t| key(i) < key(t))
        })
}

impl Lab {
    /// After `lab undemote FW`: wait (at most `bound`) until FW is master
    /// of all its vhids, or until the election says it will not be;
    /// whether it is.
    pub fn settle_undemote(&self, fw: &str, bound: Duration) -> bool {
        let t = Instant::now();
        loop {
            let own = self.carp_view(fw);
            if own.as_ref().is_some_and(master_of_all) {
                return true;
            }
            let other = s3::FIREWALLS.into_iter().find(|f| *f != fw);
            let other = other.and_then(|f| self.carp_view(f));
            let hopeless = own
                .as_ref()
                .is_none_or(|v| !expects_master(v, other.as_ref()));
            if hopeless || t.elapsed() >= bound {
                return false;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Bring a scenario's lab up: refuse if one of that name is up, check
    /// the tools it needs (`install` says how to get them), clear what a
    /// lab of that name left, run `build`, and take everything down again
    /// if it fails.
    pub fn up_scenario(
        &self,
        tools: &[&str],
        install: &str,
        build: impl FnOnce(&Lab) -> Result<(), String>,
    ) -> Result<(), String> {
        if all_hosts().any(|h| self.ns_exists(h)) {
            return Err(format!(
                "a lab named '{}' is already up: `palisade lab down{}` first",
                self.prefix,
                self.prefix_arg()
            ));
        }
        check_tools(tools, install)?;
        if self.dir().exists() {
            self.down()?;
        }
        self.make_dir()?;
        if let Err(e) = build(self) {
            return Err(match self.down() {
                Ok(()) => e,
                Err(d) => format!("{e}\n(and taking it down again: {d})"),
            });
        }
        Ok(())
    }

    /// Create the lab's directory. Another lab's `down` may remove the
    /// empty parent between the two mkdirs create_dir_all makes: try again.
    pub fn make_dir(&self) -> Result<(), String> {
        let mut tries = 0;
        loop {
            match std::fs::create_dir_all(self.dir()) {
                Ok(()) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 20 => tries += 1,
                Err(e) => return Err(format!("{}: {e}", self.dir().display())),
            }
        }
    }

    /// The prefix names namespaces and a directory under /run/palisade-lab
    /// that `down` deletes, so it is a plain name: no '/', no "..".
    pub fn new(prefix: &str) -> Result<Lab, String> {
        let plain = (1..=32).contains(&prefix.len())
            && !prefix.starts_with('-')
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !plain {
            return Err(format!(
                "--prefix '{prefix}': use 1 to 32 letters, digits, '-' or '_' (not starting with '-')"
            ));
        }
        Ok(Lab {
            prefix: prefix.to_string(),
        })
    }

    pub fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.prefix)
    }

    pub fn dir(&self) -> PathBuf {
        Path::new(RUN_DIR).join(&self.prefix)
    }

    fn run_in(&self, role: &str, args: &[&str]) -> Result<(), String> {
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

    /// A namespace for each of `hosts`, its loopback up.
    fn add_hosts(&self, hosts: &[&str]) -> Result<(), String> {
        for r in hosts {
            self.ip(&["netns", "add", &self.ns(r)])?;
            self.run_in(r, &["ip", "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    /// A switch in `host`: bridge br0 (forwarding at once) over `ports`.
    fn switch(&self, host: &str, ports: &[&str]) -> Result<(), String> {
        self.run_in(
            host,
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
        for p in ports {
            self.run_in(host, &["ip", "link", "set", p, "master", "br0"])?;
        }
        self.run_in(host, &["ip", "link", "set", "br0", "up"])
    }

    fn veth(&self, a: &str, an: &str, b: &str, bn: &str) -> Result<(), String> {
        let (na, nb) = (self.ns(a), self.ns(b));
        self.ip(&[
            "link", "add", an, "netns", &na, "type", "veth", "peer", "name", bn, "netns", &nb,
        ])?;
        self.run_in(a, &["ip", "link", "set", an, "up"])?;
        self.run_in(b, &["ip", "link", "set", bn, "up"])
    }

    /// Start a detached program in namespace `role`, remembered for `down`.
    fn spawn(&self, role: &str, args: &[&str], log: &str) -> Result<u32, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join(log))
            .map_err(|e| e.to_string())?;
        let c = Command::new("ip")
            .args(["netns", "exec", &self.ns(role)])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("{}: {e}", args[0]))?;
        let pid = c.id();
        self.record_pid(pid)?;
        Ok(pid)
    }

    /// Remember a process `down` must stop, with its start time, so that
    /// `down` never signals an unrelated process that got the PID later.
    /// (`ip netns exec` execs the program: the PID and start time stay the
    /// program's.)
    fn record_pid(&self, pid: u32) -> Result<(), String> {
        let start = proc_start(pid as i32).unwrap_or(0);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir().join("pids"))
            .map_err(|e| e.to_string())?;
        writeln!(f, "{pid} {start}").map_err(|e| e.to_string())
    }

    fn ns_exists(&self, host: &str) -> bool {
        Path::new("/var/run/netns").join(self.ns(host)).exists()
    }

    /// Up: its firewall's namespace exists (S2: the router's; S3: the
    /// first firewall's; S6, which has no firewall: the mail server's).
    pub fn exists(&self) -> bool {
        ["fw", "router", "fw1", "gate", "mail"]
            .iter()
            .any(|h| self.ns_exists(h))
    }

    pub fn up(&self, rules: Option<&Path>) -> Result<(), String> {
        if all_hosts().any(|h| self.ns_exists(h)) {
            return Err(format!(
                "a lab named '{}' is already up: `palisade lab down{}` first",
                self.prefix,
                self.prefix_arg()
            ));
        }
        let pf = match rules {
            Some(f) => palisade_conf::files::read_text(f, palisade_conf::files::CONFIG)
                .map_err(|e| format!("{}: {e}", f.display()))?,
            None => PF_CONF.to_string(),
        };
        if self.dir().exists() {
            // Left over from a lab that was not taken down (its namespaces
            // are gone): its processes, if any still run, and its files.
            self.down()?;
        }
        self.make_dir()?;
        if let Err(mut e) = self.build(&pf) {
            if let Some(f) = rules {
                // Errors in the rules name the file the user gave, not the
                // lab's copy (which is about to go).
                let copy = self.dir().join("pf.conf");
                e = e.replace(&copy.display().to_string(), &f.display().to_string());
            }
            return Err(match self.down() {
                Ok(()) => e,
                Err(d) => format!("{e}\n(and taking it down again: {d})"),
            });
        }
        Ok(())
    }

    fn build(&self, pf: &str) -> Result<(), String> {
        self.add_hosts(&HOSTS)?;
        self.veth("wan", "eth0", "fw", "pw")?;
        self.veth("fw", "pd", "sw", "sw0")?;
        self.veth("dmz1", "eth0", "sw", "sw1")?;
        self.veth("dmz2", "eth0", "sw", "sw2")?;
        self.veth("lan", "eth0", "fw", "pl")?;
        self.switch("sw", &["sw0", "sw1", "sw2"])?;
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
            self.run_in(role, c)?;
        }
        let me = std::env::current_exe().map_err(|e| e.to_string())?;
        let me = me.to_str().ok_or("odd path")?;
        for (role, addr, what) in SERVERS {
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
            "control = \"{}\"\npflog = \"{}\"\nmetrics = \"127.0.0.1:9101\"\n{PALISADE_TOML}",
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
        let pid = self.spawn(
            "fw",
            &[me, "run", "-c", cfg.to_str().unwrap_or_default()],
            "palisade.log",
        )? as i32;
        let t = Instant::now();
        let failed = |what: &str| {
            let log = std::fs::read_to_string(self.dir().join("palisade.log")).unwrap_or_default();
            Err(format!("Palisade {what}:\n{log}"))
        };
        // Wait (bounded) until Palisade answers on its control socket (it
        // binds it when its ports are open, as it starts forwarding)...
        self.wait_control(&self.dir().join("palisade.sock"), pid, "palisade.log")?;
        // ... and, under the example's rules, until traffic crosses the
        // bridge (a pf.conf given with --rules may well block this).
        if pf == PF_CONF {
            while !self
                .tcp("wan", "203.0.113.10:25", 1)
                .is_ok_and(|g| g.starts_with("220"))
            {
                if t.elapsed() > Duration::from_secs(15) {
                    return failed("did not start forwarding");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// Wait (15 s at most) until the Palisade the lab started as `pid`
    /// answers on its control socket `sock` (it binds it when its ports
    /// are open, as it starts forwarding); its log (`log`, in the lab's
    /// directory) as the error if it exited or did not answer.
    pub(crate) fn wait_control(&self, sock: &Path, pid: i32, log: &str) -> Result<(), String> {
        let started = proc_start(pid);
        let failed = |what: &str| {
            let text = std::fs::read_to_string(self.dir().join(log)).unwrap_or_default();
            Err(format!("Palisade {what}:\n{text}"))
        };
        let t = Instant::now();
        while crate::control::request(sock, serde_json::json!({"cmd": "show", "what": "info"}))
            .is_err()
        {
            if started.is_none() || proc_start(pid) != started {
                return failed("exited");
            }
            if t.elapsed() > Duration::from_secs(15) {
                return failed("did not start (its control socket does not answer)");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Remove the ports' record (crate::isolation) a daemon in host `h`'s
    /// namespace left, if any: it is named after the namespace.
    fn remove_port_record(&self, h: &str) {
        let path = format!("/var/run/netns/{}", self.ns(h));
        let _ = std::thread::spawn(move || {
            let Ok(f) = std::fs::File::open(&path) else {
                return;
            };
            // SAFETY: setns on this thread only, with a namespace fd we opened.
            if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return;
            }
            let dir = Path::new(crate::isolation::RUN_DIR);
            let _ = std::fs::remove_file(crate::isolation::record_path(dir));
            let _ = std::fs::remove_file(crate::isolation::lock_path(dir));
        })
        .join();
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

    /// What passes and what is blocked, one line each; true if all as
    /// expected. With `expect` false (the lab runs another pf.conf) each
    /// check only says what happened: the expectations are the example's.
    /// The checks run at once, so a blocked one costs its time-out once.
    pub fn show(&self, expect: bool) -> bool {
        // (what, from, to, seconds, passes under the example, its answer)
        let checks: [(&str, &str, &str, u64, bool, &str); 9] = [
            (
                "WAN -> DMZ mail server, SMTP",
                "wan",
                "203.0.113.10:25",
                3,
                true,
                "220",
            ),
            (
                "WAN -> DMZ web server, port 8080",
                "wan",
                "203.0.113.10:8080",
                2,
                false,
                "",
            ),
            (
                "DMZ -> the Internet (bridged, its own address)",
                "dmz1",
                "198.18.200.1:80",
                3,
                true,
                "you are 203.0.113.10",
            ),
            (
                "DMZ (/32, off-subnet gateway) -> the Internet",
                "dmz2",
                "198.18.200.1:80",
                3,
                true,
                "you are 203.0.113.20",
            ),
            (
                "LAN -> the Internet (hide NAT)",
                "lan",
                "198.18.200.1:80",
                3,
                true,
                "you are 198.51.100.7",
            ),
            (
                "Internet -> firewall:8080 -> LAN web (port forward)",
                "wan",
                "198.51.100.7:8080",
                3,
                true,
                "you are 203.0.113.1",
            ),
            (
                "LAN -> DMZ web server (not translated)",
                "lan",
                "203.0.113.10:80",
                3,
                true,
                "you are 198.18.1.10",
            ),
            (
                "DMZ -> LAN web server",
                "dmz1",
                "198.18.1.10:80",
                2,
                false,
                "",
            ),
            (
                "Internet -> ssh on the firewall itself",
                "wan",
                "198.51.100.7:22",
                3,
                true,
                "SSH-2.0",
            ),
        ];
        self.run_checks(&checks, expect)
    }

    /// Run `checks` (what, from, to, seconds, passes under the example,
    /// its answer) at once and print one line each; true if all were as
    /// expected. With `expect` false only what happened is printed.
    pub(crate) fn run_checks(
        &self,
        checks: &[(&str, &str, &str, u64, bool, &str)],
        expect: bool,
    ) -> bool {
        let results: Vec<Result<String, String>> = std::thread::scope(|sc| {
            let hs: Vec<_> = checks
                .iter()
                .map(|c| sc.spawn(move || self.tcp(c.1, c.2, c.3)))
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("check panicked".into())))
                .collect()
        });
        let mut all = true;
        println!("What passes and what is blocked:");
        for (c, r) in checks.iter().zip(results) {
            let (what, want_pass, want) = (c.0, c.4, c.5);
            let ok = match &r {
                Ok(g) => want_pass && g.contains(want),
                Err(_) => !want_pass,
            };
            all &= ok;
            let seen = match &r {
                Ok(g) => format!("passes: {}", g.lines().last().unwrap_or("").trim()),
                // An RST: the rules here drop, so a host answered (its
                // service down), or a rule said `block return`.
                Err(e) if e.contains("refused") => format!("refused ({e})"),
                Err(e) => format!("blocked ({e})"),
            };
            if expect {
                let tag = if ok { "[ok]" } else { "[UNEXPECTED]" };
                println!("  {tag:<12} {what:<52} {seen}");
            } else {
                println!("  {what:<52} {seen}");
            }
        }
        all
    }

    /// " --prefix P" unless the prefix is the default one.
    pub(crate) fn prefix_arg(&self) -> String {
        if self.prefix == "lab" {
            String::new()
        } else {
            format!(" --prefix {}", self.prefix)
        }
    }

    pub fn print_help(&self) {
        let (a, d) = (self.prefix_arg(), self.dir().display().to_string());
        let x = |host: &str, cmd: &str| format!("palisade lab exec{a} {host} -- {cmd}");
        let lines = [
            (
                x("lan", "curl http://198.18.200.1/"),
                "LAN -> the Internet, hidden behind 198.51.100.7",
            ),
            (
                x("wan", "curl http://198.51.100.7:8080/"),
                "port forward to the LAN web server",
            ),
            (
                x("wan", "curl -m 3 telnet://203.0.113.10:25"),
                "SMTP to the DMZ mail host",
            ),
            (x("wan", "ping -c 3 203.0.113.20"), "through the bridge"),
            (
                x("wan", "traceroute -n -I 203.0.113.20"),
                "the bridge is invisible",
            ),
            (x("dmz1", "sh"), "a shell on a DMZ host"),
            (
                format!("palisade lab status{a} [--json]"),
                "hosts, addresses, the firewall's interfaces; the checks",
            ),
            (
                format!("palisade show states -s {d}/palisade.sock"),
                "Palisade's states (like pfctl -ss)",
            ),
            (
                format!("palisade show rules -v -s {d}/palisade.sock"),
                "the rules with their counters (pfctl -vsr)",
            ),
            (
                format!("palisade show info -s {d}/palisade.sock"),
                "counters and drop reasons (pfctl -si)",
            ),
            (
                format!("palisade log --follow -s {d}/palisade.sock"),
                "logged packets as they come",
            ),
            (
                format!("palisade state kill --host 198.18.1.10 -s {d}/palisade.sock"),
                "drop the LAN host's connections",
            ),
            (
                x("fw", "curl -s http://127.0.0.1:9101/metrics"),
                "Prometheus metrics",
            ),
            (
                format!("palisade reload -s {d}/palisade.sock"),
                "after editing its pf.conf",
            ),
            (
                format!("tcpdump -n -e -r {d}/pflog"),
                "what `block log` dropped",
            ),
            (format!("palisade lab down{a}"), "remove it all"),
        ];
        self.print_explore(&HOSTS, &lines);
    }

    /// "Explore": `lines` (a command, what it shows) in two columns, and
    /// where Palisade's log and pf.conf are.
    pub(crate) fn print_explore(&self, hosts: &[&str], lines: &[(String, &str)]) {
        let d = self.dir().display().to_string();
        let w = lines.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
        println!("\nExplore (as root; hosts: {}):", hosts.join(", "));
        for (c, why) in lines {
            println!("  {c:<w$}  # {why}");
        }
        println!("  Palisade's log: {d}/palisade.log   its pf.conf: {d}/pf.conf");
    }

    /// Run `command` in `host`'s namespace in place of this process
    /// (through `ip netns exec`, which also gives it the namespace's
    /// /etc/netns files): its standard streams, signals and exit status
    /// are the command's. Returns only if that could not start.
    pub fn exec(&self, host: &str, command: &[String]) -> String {
        use std::os::unix::process::CommandExt;
        let e = Command::new("ip")
            .args(["netns", "exec", &self.ns(host)])
            .args(command)
            .exec();
        format!("ip netns exec: {e} (is iproute2 installed?)")
    }

    /// Remove everything `up` made: stop the processes it recorded (and
    /// any other still in the lab's namespaces), SIGTERM, then SIGKILL
    /// after a bounded wait; delete the namespaces and the lab's
    /// directory. Quiet about what is already gone; an error says what
    /// is left.
    pub fn down(&self) -> Result<(), String> {
        let mut procs = self.recorded();
        for h in all_hosts() {
            procs.extend(
                self.ns_pids(h)
                    .into_iter()
                    .filter_map(|p| Some((p, proc_start(p)?))),
            );
        }
        let me = std::process::id() as i32;
        procs.retain(|&(p, _)| p != me);
        procs.sort_unstable();
        procs.dedup();
        let mut problems = Vec::new();
        let left = stop(&procs);
        if !left.is_empty() {
            problems.push(format!("processes still running after SIGKILL: {left:?}"));
        }
        let mut hosts: Vec<&str> = all_hosts().collect();
        hosts.sort_unstable();
        hosts.dedup();
        for h in hosts {
            if !self.ns_exists(h) {
                continue;
            }
            // A firewall killed (`lab kill`) left its ports' record, named
            // after its namespace, which goes now: the record too (not
            // while a process of the lab may still hold its lock).
            if left.is_empty() {
                self.remove_port_record(h);
            }
            if let Err(e) = self.ip(&["netns", "del", &self.ns(h)]) {
                problems.push(e);
            }
        }
        if self.dir().exists() {
            if let Err(e) = std::fs::remove_dir_all(self.dir()) {
                problems.push(format!("{}: {e}", self.dir().display()));
            }
        }
        // The parent too, when this was the last lab (fails otherwise).
        let _ = std::fs::remove_dir(RUN_DIR);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// The processes `up` started (pid and start time), from its record.
    fn recorded(&self) -> Vec<(i32, u64)> {
        let mut procs = Vec::new();
        if let Ok(t) = std::fs::read_to_string(self.dir().join("pids")) {
            for l in t.lines() {
                let mut f = l.split_whitespace().map(|x| x.parse::<u64>().ok());
                if let (Some(Some(pid)), Some(Some(start))) = (f.next(), f.next()) {
                    if let Ok(pid) = i32::try_from(pid) {
                        procs.push((pid, start));
                    }
                }
            }
        }
        procs
    }

    /// `lab status` of a scenario whose processes `up` recorded: how
    /// many are still running, and which are gone (with --json, as
    /// JSON). Exit 1 when any is gone.
    pub fn status_processes(&self, scenario: &str, json: bool) -> bool {
        let procs = self.recorded();
        let gone: Vec<i32> = procs.iter().filter(|p| !alive(p)).map(|p| p.0).collect();
        let ok = !procs.is_empty() && gone.is_empty();
        if json {
            println!(
                "{}",
                serde_json::json!({
                    "scenario": scenario,
                    "prefix": self.prefix,
                    "processes": procs.len(),
                    "gone": gone,
                    "ok": ok,
                })
            );
        } else if procs.is_empty() {
            println!(
                "The {} lab '{}' recorded no processes ({} has no `pids`): take it down and up again.",
                scenario.to_uppercase(),
                self.prefix,
                self.dir().display()
            );
        } else if ok {
            println!(
                "The {} lab '{}' is up: its {} processes run.",
                scenario.to_uppercase(),
                self.prefix,
                procs.len()
            );
        } else {
            println!(
                "The {} lab '{}': {} of the {} processes it started {} gone (pid{} {}); see the logs in {}, or `palisade lab down` and up again.",
                scenario.to_uppercase(),
                self.prefix,
                gone.len(),
                procs.len(),
                if gone.len() == 1 { "is" } else { "are" },
                if gone.len() == 1 { "" } else { "s" },
                gone.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", "),
                self.dir().display()
            );
        }
        ok
    }

    /// The processes in `host`'s namespace (`ip netns pids`), if it exists.
    fn ns_pids(&self, host: &str) -> Vec<i32> {
        if !self.ns_exists(host) {
            return Vec::new();
        }
        Command::new("ip")
            .args(["netns", "pids", &self.ns(host)])
            .stderr(Stdio::null())
            .output()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A process's start time (clock ticks after boot, /proc/PID/stat field
/// 22), None if there is no such process or it has exited (a zombie).
fn proc_start(pid: i32) -> Option<u64> {
    let t = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may
    // contain anything: state (field 3) first.
    let rest = &t[t.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    if f.first() == Some(&"Z") {
        return None;
    }
    f.get(19)?.parse().ok()
}

fn alive(&(pid, start): &(i32, u64)) -> bool {
    proc_start(pid) == Some(start)
}

/// SIGTERM `procs`, wait (bounded) for them, SIGKILL those left and wait
/// again; the PIDs still running after that. A PID is signalled only
/// while it still has its recorded start time.
fn stop(procs: &[(i32, u64)]) -> Vec<i32> {
    let signal = |sig: i32| {
        for p in procs.iter().filter(|p| alive(p)) {
            // SAFETY: kill(2) with a PID that is the lab's process (its start
            // time checked just before).
            unsafe { libc::kill(p.0, sig) };
        }
    };
    let wait = |d: Duration| {
        let t = Instant::now();
        while procs.iter().any(alive) && t.elapsed() < d {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    signal(libc::SIGTERM);
    wait(TERM_GRACE);
    signal(libc::SIGKILL);
    wait(Duration::from_secs(2));
    procs.iter().filter(|p| alive(p)).map(|p| p.0).collect()
}

/// What `lab status` reports (`--json` prints it as is).
#[derive(Serialize)]
pub struct Status {
    pub prefix: String,
    pub hosts: Vec<Host>,
    pub firewall: Firewall,
}

#[derive(Serialize)]
pub struct Host {
    pub name: String,
    pub namespace: String,
    /// Global addresses with their prefix length, IPv4 and IPv6, read
    /// from the namespace (loopback and link-local ones left out).
    pub addresses: Vec<String>,
    pub gateway: Gateway,
    pub services: Vec<Service>,
}

/// The default routes' gateways; null without one. A default route
/// through a device with no gateway (the firewall's, into Palisade) is
/// shown in text only.
#[derive(Serialize, Default)]
pub struct Gateway {
    pub v4: Option<String>,
    pub v6: Option<String>,
    #[serde(skip)]
    dev4: Option<String>,
    #[serde(skip)]
    dev6: Option<String>,
}

#[derive(Serialize)]
pub struct Service {
    pub kind: String,
    pub address: String,
}

#[derive(Serialize)]
pub struct Firewall {
    pub namespace: String,
    /// Logical interfaces, named as pf.conf names them.
    pub interfaces: Vec<FwIface>,
    pub routes: Vec<FwRoute>,
    pub control: String,
    pub pflog: Option<String>,
    pub pf_conf: String,
    pub log: String,
}

#[derive(Serialize)]
pub struct FwIface {
    pub name: String,
    /// The Linux interface it sits on (none for a bridge).
    pub port: Option<String>,
    pub vlan: Option<u16>,
    pub addresses: Vec<String>,
    /// Its interface groups as pf.conf sees them (with the implicit
    /// `egress`, `bridge` and `vlan`).
    pub groups: Vec<String>,
    /// A bridge's members.
    pub members: Vec<String>,
}

#[derive(Serialize)]
pub struct FwRoute {
    pub to: String,
    pub via: Option<String>,
    pub interface: Option<String>,
}

fn prefix_str(p: &palisade_net::config::Prefix) -> String {
    format!("{}/{}", p.ip, p.bits)
}

impl Lab {
    /// `ip -j ARGS` in `host`'s namespace, parsed.
    fn ip_json(&self, host: &str, args: &[&str]) -> Result<serde_json::Value, String> {
        let ns = self.ns(host);
        let o = Command::new("ip")
            .args(["-n", &ns, "-j"])
            .args(args)
            .output()
            .map_err(|e| format!("ip: {e} (is iproute2 installed?)"))?;
        let what = || format!("ip -n {ns} -j {}", args.join(" "));
        if !o.status.success() {
            return Err(format!(
                "{}: {}",
                what(),
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        // Some versions print nothing at all for an empty list.
        if o.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(serde_json::Value::Array(Vec::new()));
        }
        serde_json::from_slice(&o.stdout).map_err(|e| format!("{}: unexpected output: {e}", what()))
    }

    fn host(&self, name: &str) -> Result<Host, String> {
        let mut addresses = Vec::new();
        let links = self.ip_json(name, &["addr", "show"])?;
        for link in links.as_array().into_iter().flatten() {
            for a in link["addr_info"].as_array().into_iter().flatten() {
                if matches!(a["scope"].as_str(), Some("host" | "link")) {
                    continue;
                }
                if let (Some(ip), Some(len)) = (a["local"].as_str(), a["prefixlen"].as_u64()) {
                    addresses.push(format!("{ip}/{len}"));
                }
            }
        }
        let mut gateway = Gateway::default();
        for (v6, gw, dev) in [
            (false, &mut gateway.v4, &mut gateway.dev4),
            (true, &mut gateway.v6, &mut gateway.dev6),
        ] {
            let fam = if v6 { "-6" } else { "-4" };
            let routes = self.ip_json(name, &[fam, "route", "show", "default"])?;
            let routes = routes.as_array().cloned().unwrap_or_default();
            *gw = routes
                .iter()
                .find_map(|r| r["gateway"].as_str())
                .map(str::to_string);
            *dev = routes
                .iter()
                .find_map(|r| r["dev"].as_str())
                .map(str::to_string);
        }
        let services = SERVERS
            .iter()
            .filter(|(h, _, _)| *h == name)
            .map(|(_, a, k)| Service {
                kind: k.to_string(),
                address: a.to_string(),
            })
            .collect();
        Ok(Host {
            name: name.to_string(),
            namespace: self.ns(name),
            addresses,
            gateway,
            services,
        })
    }

    /// The firewall as the lab's palisade.toml configures it.
    fn firewall(&self) -> Result<Firewall, String> {
        let path = self.dir().join("palisade.toml");
        let text = std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "{}: cannot read: {}",
                path.display(),
                palisade_conf::io_reason(&e)
            )
        })?;
        // Its ports are in the firewall's namespace, not this one; `up`
        // checked them there.
        let cfg = palisade_net::config::Config::parse(&path, &text, &|_| true)
            .map_err(|e| e.to_string())?;
        let groups = cfg.host_interfaces();
        let name_of = |ix: usize| cfg.ifaces.get(ix).map(|i| i.name.clone());
        let interfaces = cfg
            .ifaces
            .iter()
            .enumerate()
            .map(|(ix, i)| FwIface {
                name: i.name.clone(),
                port: i
                    .port
                    .and_then(|p| cfg.ports.get(p))
                    .map(|p| p.name.clone()),
                vlan: i.vlan,
                addresses: i.addresses.iter().map(prefix_str).collect(),
                groups: groups.get(ix).map(|h| h.groups.clone()).unwrap_or_default(),
                members: i.members.iter().filter_map(|&m| name_of(m)).collect(),
            })
            .collect();
        let routes = cfg
            .routes
            .iter()
            .map(|r| FwRoute {
                to: if r.to.bits == 0 {
                    "default".into()
                } else {
                    prefix_str(&r.to)
                },
                via: r.via.map(|v| v.to_string()),
                interface: r.iface.and_then(name_of),
            })
            .collect();
        let dir = self.dir();
        Ok(Firewall {
            namespace: self.ns("fw"),
            interfaces,
            routes,
            control: cfg.control.display().to_string(),
            pflog: cfg.pflog.map(|p| p.display().to_string()),
            pf_conf: dir.join(&cfg.pf).display().to_string(),
            log: dir.join("palisade.log").display().to_string(),
        })
    }

    /// The hosts and the firewall, read live from the namespaces and the
    /// lab's configuration.
    pub fn status(&self) -> Result<Status, String> {
        if !self.exists() {
            return Err(self.not_up());
        }
        let hosts = HOSTS
            .iter()
            .map(|h| self.host(h))
            .collect::<Result<_, _>>()?;
        Ok(Status {
            prefix: self.prefix.clone(),
            hosts,
            firewall: self.firewall()?,
        })
    }

    pub fn not_up(&self) -> String {
        format!(
            "no lab named '{}' is up (`palisade lab up{}` starts one)",
            self.prefix,
            self.prefix_arg()
        )
    }

    /// Whether the firewall runs the lab's example pf.conf (which `show`'s
    /// expectations describe).
    pub fn runs_example(&self) -> bool {
        std::fs::read_to_string(self.dir().join("pf.conf")).is_ok_and(|t| t == PF_CONF)
    }
}

impl Status {
    /// Two tables: the hosts, and the firewall's interfaces.
    pub fn print(&self) {
        let dash = |v: &[String]| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join("\n")
            }
        };
        println!(
            "Lab '{}': scenario S1 (../shared/SCENARIOS.md) in network namespaces {}-*.\n\nHosts (`palisade lab exec HOST -- COMMAND` runs a command on one):",
            self.prefix, self.prefix
        );
        let rows: Vec<Vec<String>> = self
            .hosts
            .iter()
            .map(|h| {
                let g = &h.gateway;
                let mut gw = Vec::new();
                for (ip, dev) in [(&g.v4, &g.dev4), (&g.v6, &g.dev6)] {
                    match (ip, dev) {
                        (Some(ip), _) => gw.push(ip.clone()),
                        (None, Some(dev)) => gw.push(format!("dev {dev}")),
                        _ => {}
                    }
                }
                let services: Vec<String> = h
                    .services
                    .iter()
                    .map(|s| format!("{} {}", s.kind, s.address))
                    .collect();
                vec![
                    h.name.clone(),
                    h.namespace.clone(),
                    dash(&h.addresses),
                    dash(&gw),
                    dash(&services),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &["HOST", "NAMESPACE", "ADDRESSES", "GATEWAY", "SERVICES"],
                &rows
            )
        );
        let f = &self.firewall;
        println!(
            "\nThe firewall: Palisade in {}, its interfaces as pf.conf names them:",
            f.namespace
        );
        let rows: Vec<Vec<String>> = f
            .interfaces
            .iter()
            .map(|i| {
                vec![
                    i.name.clone(),
                    i.port.clone().unwrap_or_else(|| "-".into()),
                    i.vlan.map_or("-".into(), |v| v.to_string()),
                    dash(&i.addresses),
                    i.groups.join(" "),
                    i.members.join(" "),
                ]
            })
            .collect();
        print!(
            "{}",
            table(
                &[
                    "INTERFACE",
                    "PORT",
                    "VLAN",
                    "ADDRESSES",
                    "GROUPS",
                    "MEMBERS"
                ],
                &rows
            )
        );
        let routes: Vec<String> = f
            .routes
            .iter()
            .map(|r| match (&r.via, &r.interface) {
                (Some(v), _) => format!("{} via {v}", r.to),
                (None, Some(i)) => format!("{} on {i}", r.to),
                (None, None) => r.to.clone(),
            })
            .collect();
        println!("  routes:         {}", routes.join(", "));
        println!("  pf.conf:        {}", f.pf_conf);
        println!("  control socket: {}", f.control);
        if let Some(p) = &f.pflog {
            println!("  pflog:          {p}");
        }
        println!("  log:            {}", f.log);
    }
}

/// Columns padded to their widest cell; a cell may span several lines.
fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            let widest = c.lines().map(str::len).max().unwrap_or(0);
            if let Some(x) = w.get_mut(i) {
                *x = (*x).max(widest);
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[&str]| {
        let mut l = String::from(" ");
        for (c, w) in cells.iter().zip(&w) {
            l.push(' ');
            l.push_str(&format!("{c:<w$} "));
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(head);
    for r in rows {
        let cols: Vec<Vec<&str>> = r.iter().map(|c| c.lines().collect()).collect();
        let height = cols.iter().map(Vec::len).max().unwrap_or(0).max(1);
        for k in 0..height {
            let cells: Vec<&str> = cols
                .iter()
                .map(|c| c.get(k).copied().unwrap_or(""))
                .collect();
            line(&cells);
        }
    }
    out
}

/// `palisade lab serve ADDR KIND`: the lab's servers. `web` answers HTTP
/// with who the client appears to be; `smtp` and `ssh` greet.
/// The size of a web server's `/big` (100 MiB).
pub const BIG: usize = 100 << 20;

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
                    let n = s.read(&mut buf).unwrap_or(0);
                    if buf[..n].starts_with(b"GET /big ") {
                        // A long download (the S3 lab's failover shows
                        // it surviving).
                        let _ = s.set_write_timeout(Some(Duration::from_secs(30)));
                        let head = format!("HTTP/1.0 200 OK\r\nContent-Length: {BIG}\r\n\r\n");
                        let chunk: Vec<u8> =
                            (0..65536u32).map(|i| (i * 7 + i / 256) as u8).collect();
                        if s.write_all(head.as_bytes()).is_ok() {
                            for _ in 0..BIG / chunk.len() {
                                if s.write_all(&chunk).is_err() {
                                    break;
                                }
                            }
                        }
                        return;
                    }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    /// A program that is not installed is named, with how to install it.
    #[test]
    fn a_missing_tool_is_named_with_its_package() {
        assert_eq!(super::check_tools(&["sh"], "apt install dash"), Ok(()));
        let e = super::check_tools(&["sh", "palisade-no-such-program"], "apt install nothing")
            .unwrap_err();
        assert_eq!(
            e,
            "this lab needs palisade-no-such-program: apt install nothing"
        );
        // S3's failover pings: the check names ping's Debian package.
        assert!(super::S3_TOOLS.contains(&"ping"));
        assert!(super::S3_INSTALL.contains("iputils-ping"));
    }

    fn fw(states: &[(&str, u64, u64)]) -> serde_json::Value {
        let items: Vec<_> = states
            .iter()
            .enumerate()
            .map(|(k, (state, demote, skew))| {
                json!({"vhid": k + 1, "state": state, "demote": demote, "advbase": 1, "advskew": skew})
            })
            .collect();
        json!({"interfaces": items})
    }

    /// `lab undemote` waits for a takeover only when the election gives
    /// the firewall its vhids.
    #[test]
    fn undemote_waits_only_for_a_takeover_that_comes() {
        let fw1 = fw(&[("BACKUP", 0, 0), ("BACKUP", 0, 0)]);
        let fw2 = fw(&[("MASTER", 0, 100), ("MASTER", 0, 100)]);
        assert!(!super::master_of_all(&fw1));
        assert!(super::master_of_all(&fw2));
        // fw1 undemoted: it preempts fw2 (lower advskew).
        assert!(super::expects_master(&fw1, Some(&fw2)));
        // fw2 undemoted while fw1 leads: no takeover to wait for.
        let fw1m = fw(&[("MASTER", 0, 0), ("MASTER", 0, 0)]);
        let fw2b = fw(&[("BACKUP", 0, 100), ("BACKUP", 0, 100)]);
        assert!(!super::expects_master(&fw2b, Some(&fw1m)));
        // Still demoted more than the other: no takeover either.
        let fw1d = fw(&[("BACKUP", 1, 0), ("BACKUP", 1, 0)]);
        assert!(!super::expects_master(&fw1d, Some(&fw2)));
        // The other is not running: it takes over alone.
        assert!(super::expects_master(&fw2b, None));
        assert!(!super::master_of_all(&json!({"interfaces": []})));
    }
}
