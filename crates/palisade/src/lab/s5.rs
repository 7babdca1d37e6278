//! `palisade lab up --scenario s5`: scenario S5 on one machine, in
//! network namespaces. An FTP server (vsftpd) sits on the firewall's
//! inside network; a client outside reaches it through the firewall's
//! outside address, in passive and active mode, through `palisade
//! ftp-proxy -R` and the older pf syntax S5 describes (examples/s5/).
//!
//!   outside 203.0.113.50, 2001:db8:1::50
//!     |
//!   gate: wan 203.0.113.1, 2001:db8:1::1   (Palisade, ftp-proxy -R)
//!         lan 192.0.2.1, 2001:db8::1
//!     |
//!   ftpsrv 192.0.2.10, 2001:db8::10 (vsftpd, anonymous: /big, /hello.txt)

use super::*;

pub const PF_CONF: &str = include_str!("../../../../examples/s5/pf.conf");
pub const TOML: &str = include_str!("../../../../examples/s5/palisade.toml");

/// The S5 lab's hosts.
pub const HOSTS: [&str; 3] = ["outside", "gate", "ftpsrv"];

/// The size of the server's `big`.
const BIG: usize = 20 << 20;

impl Lab {
    /// This lab runs scenario S5 (its directory says so).
    pub fn is_s5(&self) -> bool {
        std::fs::read_to_string(self.dir().join("scenario")).is_ok_and(|s| s.trim() == "s5")
    }

    pub fn check_host_s5(host: &str) -> Result<(), String> {
        check_among(host, &HOSTS, "the S5 lab's")
    }

    pub fn up_s5(&self) -> Result<(), String> {
        self.up_scenario(
            &["vsftpd", "curl"],
            "apt install vsftpd curl",
            Lab::build_s5,
        )
    }

    fn build_s5(&self) -> Result<(), String> {
        std::fs::write(self.dir().join("scenario"), "s5\n").map_err(|e| e.to_string())?;
        self.add_hosts(&HOSTS)?;
        self.veth("outside", "eth0", "gate", "eth0")?;
        self.veth("gate", "eth1", "ftpsrv", "eth0")?;
        // Palisade's ports need offloads off.
        for p in ["eth0", "eth1"] {
            let _ = self.run_in(
                "gate",
                &[
                    "ethtool", "-K", p, "tso", "off", "gso", "off", "gro", "off", "tx", "off",
                    "rx", "off",
                ],
            );
        }
        for (h, v4, v6, gw4, gw6) in [
            (
                "outside",
                "203.0.113.50/24",
                "2001:db8:1::50/64",
                "203.0.113.1",
                "2001:db8:1::1",
            ),
            (
                "ftpsrv",
                "192.0.2.10/24",
                "2001:db8::10/64",
                "192.0.2.1",
                "2001:db8::1",
            ),
        ] {
            self.run_in(h, &["ip", "addr", "add", v4, "dev", "eth0"])?;
            self.run_in(h, &["ip", "addr", "add", v6, "dev", "eth0", "nodad"])?;
            self.run_in(h, &["ip", "route", "add", "default", "via", gw4])?;
            self.run_in(h, &["ip", "-6", "route", "add", "default", "via", gw6])?;
        }
        // The server's files and vsftpd (anonymous, read-only).
        let root = self.dir().join("ftp");
        std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
        std::fs::write(
            root.join("hello.txt"),
            "hello from the S5 lab's FTP server\n",
        )
        .map_err(|e| e.to_string())?;
        std::fs::write(root.join("big"), pattern(BIG)).map_err(|e| e.to_string())?;
        let _ = std::fs::create_dir_all("/var/run/vsftpd/empty");
        for (addr, name) in [
            ("192.0.2.10", "vsftpd4.conf"),
            ("2001:db8::10", "vsftpd6.conf"),
        ] {
            let listen = if addr.contains(':') {
                format!("listen=NO\nlisten_ipv6=YES\nlisten_address6={addr}\n")
            } else {
                format!("listen=YES\nlisten_address={addr}\n")
            };
            let conf = self.dir().join(name);
            std::fs::write(
                &conf,
                format!(
                    "{listen}background=NO\nanonymous_enable=YES\nanon_root={}\nno_anon_password=YES\n\
                     local_enable=NO\nwrite_enable=NO\npasv_enable=YES\nport_enable=YES\n\
                     pasv_min_port=50000\npasv_max_port=50999\nconnect_from_port_20=NO\n\
                     seccomp_sandbox=NO\nsecure_chroot_dir=/var/run/vsftpd/empty\n\
                     ftpd_banner=S5 lab FTP server (vsftpd)\n",
                    root.display()
                ),
            )
            .map_err(|e| e.to_string())?;
            self.spawn(
                "ftpsrv",
                &["vsftpd", conf.to_str().ok_or("odd path")?],
                &format!("{name}.log"),
            )?;
        }
        // The firewall and its proxies.
        std::fs::write(self.dir().join("pf.conf"), PF_CONF).map_err(|e| e.to_string())?;
        let sock = self.dir().join("gate.sock");
        let cfg = self.dir().join("gate.toml");
        std::fs::write(&cfg, format!("control = \"{}\"\n{TOML}", sock.display()))
            .map_err(|e| e.to_string())?;
        let me = std::env::current_exe().map_err(|e| e.to_string())?;
        let me = me.to_str().ok_or("odd path")?;
        let pid = self.spawn(
            "gate",
            &[me, "run", "-c", cfg.to_str().ok_or("odd path")?],
            "gate.log",
        )?;
        self.wait_control(&sock, pid as i32, "gate.log")?;
        let s = sock.to_str().ok_or("odd path")?;
        self.spawn(
            "gate",
            &[me, "ftp-proxy", "-s", s, "-R", "192.0.2.10", "-v"],
            "ftp-proxy.log",
        )?;
        self.spawn(
            "gate",
            &[
                me,
                "ftp-proxy",
                "-s",
                s,
                "-6",
                "-b",
                "2001:db8::1",
                "-R",
                "2001:db8::10",
                "-v",
            ],
            "ftp-proxy6.log",
        )?;
        // Ready when a greeting comes back through the proxy.
        let t = Instant::now();
        while !self
            .greeting("outside", "203.0.113.1:21")
            .starts_with("220")
        {
            if t.elapsed() > Duration::from_secs(15) {
                return Err("no FTP greeting through the proxy within 15 s".into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    /// A passive and an active transfer of `big` from outside, with their
    /// rate; true if both brought the right bytes.
    pub fn show_s5(&self) -> bool {
        let want = pattern(BIG);
        let mut ok = true;
        for (what, extra) in [
            ("passive (PASV)", &["--disable-epsv"][..]),
            ("active (PORT)", &["-P", "-", "--disable-eprt"][..]),
        ] {
            let file = self.dir().join("got");
            let _ = std::fs::remove_file(&file);
            let o = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &self.ns("outside"),
                    "curl",
                    "-sS",
                    "--max-time",
                    "60",
                ])
                .args(extra)
                .arg("-o")
                .arg(&file)
                .args(["-w", "%{time_total}", "ftp://203.0.113.1/big"])
                .output();
            let secs: f64 = o
                .as_ref()
                .ok()
                .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
                .unwrap_or(0.0);
            let same = std::fs::read(&file).is_ok_and(|g| g == want);
            let _ = std::fs::remove_file(&file);
            if same {
                println!(
                    "  {what}: ftp://203.0.113.1/big, 20 MiB in {secs:.2} s, the same bytes as the server's"
                );
            } else {
                ok = false;
                println!(
                    "  {what}: FAILED ({})",
                    o.map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
                        .unwrap_or_else(|e| e.to_string())
                );
            }
        }
        ok
    }

    pub fn print_s5(&self) {
        let a = self.prefix_arg();
        let d = self.dir().display().to_string();
        println!("Scenario S5: an FTP server inside (ftpsrv 192.0.2.10, 2001:db8::10), clients outside use the firewall's address (203.0.113.1, 2001:db8:1::1) through `palisade ftp-proxy -R`.");
        println!("\nExplore (as root; hosts: {}):", HOSTS.join(", "));
        let lines = [
            (
                format!("palisade lab exec{a} outside -- curl ftp://203.0.113.1/hello.txt"),
                "passive mode (EPSV)",
            ),
            (
                format!("palisade lab exec{a} outside -- curl -P - ftp://203.0.113.1/hello.txt"),
                "active mode (EPRT)",
            ),
            (
                format!(
                    "palisade lab exec{a} outside -- curl -g 'ftp://[2001:db8:1::1]/hello.txt'"
                ),
                "over IPv6",
            ),
            (
                format!("palisade lab exec{a} outside -- lftp ftp://203.0.113.1"),
                "an FTP session by hand (ls, get big, ...)",
            ),
            (
                format!("palisade anchor 'ftp-proxy/*' show -s {d}/gate.sock"),
                "the live sessions' rules (during a transfer)",
            ),
            (format!("palisade lab down{a}"), "remove it all"),
        ];
        for (cmd, what) in lines {
            println!("  {cmd:<78} # {what}");
        }
        println!("  Logs: {d}/gate.log, {d}/ftp-proxy.log   pf.conf: {d}/pf.conf");
    }
}

impl Lab {
    /// The first line a TCP server at `to` says, from `role` (sending
    /// nothing: FTP servers speak first).
    pub(super) fn greeting(&self, role: &str, to: &str) -> String {
        let Ok(to) = to.parse::<SocketAddr>() else {
            return String::new();
        };
        let path = format!("/var/run/netns/{}", self.ns(role));
        std::thread::spawn(move || {
            use std::io::BufRead;
            let Ok(f) = std::fs::File::open(&path) else {
                return String::new();
            };
            // SAFETY: setns on this thread only, with a namespace fd we opened.
            if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return String::new();
            }
            let Ok(s) = TcpStream::connect_timeout(&to, Duration::from_secs(1)) else {
                return String::new();
            };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut line = String::new();
            let _ = std::io::BufReader::new(s).read_line(&mut line);
            line
        })
        .join()
        .unwrap_or_default()
    }
}

/// `n` bytes that no compression or pattern could fake (deterministic).
fn pattern(n: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut v = Vec::with_capacity(n + 8);
    while v.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(n);
    v
}
