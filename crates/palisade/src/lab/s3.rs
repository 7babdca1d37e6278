//! `palisade lab up --scenario s3`: scenario S3 on one machine, in network
//! namespaces. Two Palisade firewalls share a virtual gateway on each side
//! (CARP: carp0 on the LAN, carp1 on the WAN, IPv4 and IPv6), a host on
//! each side routes through them, and a crossover link joins the two
//! firewalls, which keep their state tables in step over it (pfsync). `lab failover` shows a takeover live, with a
//! ping running across; `lab kill|stop|start|demote|undemote fw1|fw2` play
//! with one node.
//!
//!   lan 198.18.0.10, 2001:db8::10 (web :80)     gateway 198.18.0.1 (carp0)
//!    |
//!   sw: brlan ---- eth0 fw1 eth1 ---- brwan     fw1 .2, advskew 0
//!              ---- eth0 fw2 eth1 ----           fw2 .3, advskew 100
//!                        eth2 === eth2 (sync 198.18.255.1/.2)
//!   wan 203.0.113.10, 2001:db8:1::10 (web :80)   gateway 203.0.113.1 (carp1)

use std::io::BufRead;

use super::*;

/// The S3 lab's files: examples/s3/.
pub const PF_CONF: &str = include_str!("../../../../examples/s3/pf.conf");
pub const FW_TOML: [&str; 2] = [
    include_str!("../../../../examples/s3/fw1.toml"),
    include_str!("../../../../examples/s3/fw2.toml"),
];

/// The S3 lab's hosts.
pub const HOSTS: [&str; 5] = ["lan", "wan", "fw1", "fw2", "sw"];
pub const FIREWALLS: [&str; 2] = ["fw1", "fw2"];

const SERVERS: [(&str, &str, &str); 2] = [
    ("lan", "198.18.0.10:80", "web"),
    ("wan", "203.0.113.10:80", "web"),
];

/// One firewall's CARP as `carp show --json` gives it, or None when its
/// daemon does not answer.
pub type CarpView = Option<serde_json::Value>;

impl Lab {
    /// This lab runs scenario S3 (its directory says so).
    pub fn is_s3(&self) -> bool {
        std::fs::read_to_string(self.dir().join("scenario")).is_ok_and(|s| s.trim() == "s3")
    }

    pub fn check_host_s3(host: &str) -> Result<(), String> {
        check_among(host, &HOSTS, "the S3 lab's")
    }

    fn check_fw(fw: &str) -> Result<(), String> {
        if FIREWALLS.contains(&fw) {
            Ok(())
        } else {
            Err(format!("'{fw}': the S3 lab's firewalls are fw1 and fw2"))
        }
    }

    pub fn up_s3(&self) -> Result<(), String> {
        self.up_scenario(&[], "", Lab::build_s3)
    }

    fn build_s3(&self) -> Result<(), String> {
        std::fs::write(self.dir().join("scenario"), "s3\n").map_err(|e| e.to_string())?;
        self.add_hosts(&HOSTS)?;
        for br in ["brlan", "brwan"] {
            self.run_in(
                "sw",
                &[
                    "ip",
                    "link",
                    "add",
                    br,
                    "type",
                    "bridge",
                    "forward_delay",
                    "0",
                ],
            )?;
            self.run_in("sw", &["ip", "link", "set", br, "up"])?;
        }
        for (k, fw) in FIREWALLS.iter().enumerate() {
            let (l, w) = (format!("l{}", k + 1), format!("w{}", k + 1));
            self.veth(fw, "eth0", "sw", &l)?;
            self.veth(fw, "eth1", "sw", &w)?;
            self.run_in("sw", &["ip", "link", "set", &l, "master", "brlan"])?;
            self.run_in("sw", &["ip", "link", "set", &w, "master", "brwan"])?;
        }
        self.veth("fw1", "eth2", "fw2", "eth2")?;
        self.veth("lan", "eth0", "sw", "la")?;
        self.veth("wan", "eth0", "sw", "wb")?;
        self.run_in("sw", &["ip", "link", "set", "la", "master", "brlan"])?;
        self.run_in("sw", &["ip", "link", "set", "wb", "master", "brwan"])?;
        // Palisade's ports need offloads off.
        for fw in FIREWALLS {
            for p in ["eth0", "eth1", "eth2"] {
                let _ = self.run_in(
                    fw,
                    &[
                        "ethtool", "-K", p, "tso", "off", "gso", "off", "gro", "off", "tx", "off",
                        "rx", "off",
                    ],
                );
            }
        }
        for (h, v4, v6, gw4, gw6) in [
            (
                "lan",
                "198.18.0.10/24",
                "2001:db8::10/64",
                "198.18.0.1",
                "2001:db8::1",
            ),
            (
                "wan",
                "203.0.113.10/24",
                "2001:db8:1::10/64",
                "203.0.113.1",
                "2001:db8:1::1",
            ),
        ] {
            self.run_in(h, &["ip", "addr", "add", v4, "dev", "eth0"])?;
            self.run_in(h, &["ip", "addr", "add", v6, "dev", "eth0", "nodad"])?;
            self.run_in(h, &["ip", "route", "add", "default", "via", gw4])?;
            self.run_in(h, &["ip", "-6", "route", "add", "default", "via", gw6])?;
        }
        let me = std::env::current_exe().map_err(|e| e.to_string())?;
        let me = me.to_str().ok_or("odd path")?;
        for (role, addr, what) in SERVERS {
            self.spawn(
                role,
                &[me, "lab", "serve", addr, what],
                &format!("serve-{role}-{what}.log"),
            )?;
        }
        std::fs::write(self.dir().join("pf.conf"), PF_CONF).map_err(|e| e.to_string())?;
        for (k, fw) in FIREWALLS.iter().enumerate() {
            // pf.conf's `block log all` writes here (`tcpdump -n -e -r`).
            let toml = format!(
                "control = \"{}\"\nmetrics = \"127.0.0.1:9101\"\npflog = \"{}\"\n{}",
                self.sock(fw).display(),
                self.dir().join(format!("{fw}.pflog")).display(),
                FW_TOML[k]
            );
            std::fs::write(self.dir().join(format!("{fw}.toml")), toml)
                .map_err(|e| e.to_string())?;
        }
        // fw2 first: fw1, the preferred master, takes over by preemption.
        self.start_fw("fw2")?;
        self.start_fw("fw1")?;
        let t = Instant::now();
        while self.master().is_none() {
            if t.elapsed() > Duration::from_secs(15) {
                return Err("no firewall became master within 15 s".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    pub fn sock(&self, fw: &str) -> PathBuf {
        self.dir().join(format!("{fw}.sock"))
    }

    fn pid_file(&self, fw: &str) -> PathBuf {
        self.dir().join(format!("{fw}.pid"))
    }

    /// A firewall's daemon, if it runs: (pid, start time).
    fn fw_proc(&self, fw: &str) -> Option<(i32, u64)> {
        let t = std::fs::read_to_string(self.pid_file(fw)).ok()?;
        let mut f = t.split_whitespace();
        let p = (f.next()?.parse().ok()?, f.next()?.parse().ok()?);
        alive(&p).then_some(p)
    }

    /// Start a firewall's daemon (after a check of its configuration) and
    /// wait (bounded) until it answers on its control socket.
    pub fn start_fw(&self, fw: &str) -> Result<(), String> {
        Self::check_fw(fw)?;
        if self.fw_proc(fw).is_some() {
            return Err(format!("{fw}: Palisade already runs there"));
        }
        let me = std::env::current_exe().map_err(|e| e.to_string())?;
        let me = me.to_str().ok_or("odd path")?;
        let cfg = self.dir().join(format!("{fw}.toml"));
        let cfg = cfg.to_str().unwrap_or_default();
        let check = Command::new("ip")
            .args(["netns", "exec", &self.ns(fw), me, "run", "-n", "-c", cfg])
            .output()
            .map_err(|e| e.to_string())?;
        if !check.status.success() {
            return Err(String::from_utf8_lossy(&check.stderr).to_string());
        }
        // (The log grows with each start.)
        let pid = self.spawn(fw, &[me, "run", "-c", cfg], &format!("{fw}.log"))? as i32;
        let start = proc_start(pid).unwrap_or(0);
        std::fs::write(self.pid_file(fw), format!("{pid} {start}\n")).map_err(|e| e.to_string())?;
        let t = Instant::now();
        while self.carp_view(fw).is_none() {
            if !alive(&(pid, start)) {
                let l = std::fs::read_to_string(self.dir().join(format!("{fw}.log")))
                    .unwrap_or_default();
                return Err(format!("{fw}: Palisade exited:\n{l}"));
            }
            if t.elapsed() > Duration::from_secs(15) {
                return Err(format!(
                    "{fw}: Palisade does not answer on its control socket"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Signal a firewall's daemon (SIGKILL: the machine dies; SIGTERM: a
    /// graceful stop, its masters bow out) and wait (bounded) for it.
    pub fn signal_fw(&self, fw: &str, sig: i32) -> Result<(), String> {
        Self::check_fw(fw)?;
        let Some(p) = self.fw_proc(fw) else {
            return Err(format!("{fw}: Palisade is not running there"));
        };
        // SAFETY: kill(2) with the lab's own daemon (its start time checked).
        unsafe { libc::kill(p.0, sig) };
        let t = Instant::now();
        while alive(&p) {
            if t.elapsed() > Duration::from_secs(10) {
                return Err(format!("{fw}: Palisade did not stop"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_file(self.pid_file(fw));
        Ok(())
    }

    /// `carp show --json` of a firewall, if its daemon answers.
    pub fn carp_view(&self, fw: &str) -> CarpView {
        let r = crate::control::request(
            &self.sock(fw),
            crate::request::Request::Carp(crate::request::CarpOp::Show).to_json(),
        )
        .ok()?;
        (r["ok"] == true).then(|| r["data"].clone())
    }

    /// The firewall that is master of both vhids, if one is.
    pub fn master(&self) -> Option<&'static str> {
        FIREWALLS.into_iter().find(|fw| {
            self.carp_view(fw).is_some_and(|v| {
                v["interfaces"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty() && a.iter().all(|i| i["state"] == "MASTER"))
            })
        })
    }

    /// `carp demote|undemote carp N` on a firewall; what it answered.
    pub fn demote_fw(&self, fw: &str, delta: i32) -> Result<String, String> {
        Self::check_fw(fw)?;
        let r = crate::control::request(
            &self.sock(fw),
            crate::request::Request::Carp(crate::request::CarpOp::Demote {
                group: "carp".into(),
                delta,
            })
            .to_json(),
        )
        .map_err(|e| format!("{fw}: {e} (is Palisade running there? `palisade lab start {fw}`)"))?;
        let text = r["text"].as_str().unwrap_or("").trim().to_string();
        if r["ok"] == true {
            Ok(format!("{fw}: {text}"))
        } else {
            Err(format!("{fw}: {text}"))
        }
    }

    /// One line per firewall: its CARP interfaces' states and demotion.
    pub fn print_carp(&self) {
        for fw in FIREWALLS {
            match self.carp_view(fw) {
                None => println!("  {fw}: Palisade is not running"),
                Some(v) => {
                    let parts: Vec<String> = v["interfaces"]
                        .as_array()
                        .map(Vec::as_slice)
                        .unwrap_or(&[])
                        .iter()
                        .map(|i| {
                            format!(
                                "{} ({}) {}",
                                i["name"].as_str().unwrap_or(""),
                                i["addresses"][0].as_str().unwrap_or(""),
                                i["state"].as_str().unwrap_or("")
                            )
                        })
                        .collect();
                    let demote = v["groups"][0]["demote"].as_u64().unwrap_or(0);
                    println!("  {fw}: {}, carp demote count {demote}", parts.join(", "));
                }
            }
        }
    }

    /// Ping across the pair (lan -> wan, every 50 ms) while the master is
    /// killed (or stopped); print the replies live, then how long the LAN
    /// was cut off; bring the node back and show it take over again.
    pub fn failover(&self, graceful: bool) -> Result<(), String> {
        let Some(master) = self.master() else {
            return Err(format!(
                "no firewall is master of both vhids now (see `palisade lab status{}`)",
                self.prefix_arg()
            ));
        };
        let mut ping = Command::new("ip")
            .args(["netns", "exec", &self.ns("lan")])
            .args(["ping", "-n", "-D", "-O", "-i", "0.05", "203.0.113.10"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("ping: {e}"))?;
        let out = ping.stdout.take().ok_or("ping: no output")?;
        let (tx, rx) = std::sync::mpsc::channel::<(bool, f64)>();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let ts = l
                    .strip_prefix('[')
                    .and_then(|r| r.split(']').next())
                    .and_then(|t| t.parse::<f64>().ok());
                if let Some(ts) = ts {
                    if l.contains("bytes from") {
                        let _ = tx.send((true, ts));
                    } else if l.contains("no answer yet") {
                        let _ = tx.send((false, ts));
                    }
                }
            }
        });
        // A download through the pair all along: pfsync keeps it alive.
        let mut download = Command::new("ip")
            .args(["netns", "exec", &self.ns("wan")])
            .args([
                "curl",
                "-s",
                "-o",
                "/dev/null",
                "--limit-rate",
                "10M",
                "--max-time",
                "60",
                "-w",
                "%{http_code} %{size_download}",
                "http://198.18.0.10/big",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("curl: {e}"))?;
        let result = (|| {
            println!(
                "wan downloads 100 MiB from the LAN web server at 10 MiB/s (curl http://198.18.0.10/big)"
            );
            println!(
                "ping 203.0.113.10 from lan through the virtual gateway every 50 ms ('.' answered, 'x' no answer):"
            );
            let show = |secs: f64, rx: &std::sync::mpsc::Receiver<(bool, f64)>| {
                let t = Instant::now();
                let mut replies = Vec::new();
                while t.elapsed().as_secs_f64() < secs {
                    if let Ok((ok, ts)) = rx.recv_timeout(Duration::from_millis(50)) {
                        print!("{}", if ok { '.' } else { 'x' });
                        let _ = std::io::stdout().flush();
                        if ok {
                            replies.push(ts);
                        }
                    }
                }
                replies
            };
            let before = show(2.0, &rx);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            let what = if graceful {
                "stopped (SIGTERM)"
            } else {
                "killed (kill -9)"
            };
            print!(" [{master} {what}] ");
            self.signal_fw(
                master,
                if graceful {
                    libc::SIGTERM
                } else {
                    libc::SIGKILL
                },
            )?;
            let after = show(6.0, &rx);
            let end = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64();
            println!();
            let last = after.iter().copied().fold(now, f64::max);
            match longest_silence(&before, &after, now) {
                // Silent since the last reply for longer still: the LAN
                // is still cut off at the end of the watch.
                Some(gap) if end - last > gap.max(1.0) => println!(
                    "{master} {what}: no reply for the last {} ms of the watch (see `palisade lab status`)",
                    ((end - last) * 1000.0).round()
                ),
                Some(gap) => println!(
                    "{master} {what}: the LAN lost the Internet for {} ms (the longest time between two replies from then on)",
                    (gap * 1000.0).round()
                ),
                None => println!("{master} {what}: no reply since (see `palisade lab status`)"),
            }
            self.print_carp();
            println!("bringing {master} back (it preempts once ready):");
            self.start_fw(master)?;
            let t = Instant::now();
            while self.master() != Some(master) && t.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(100));
            }
            // The download went through both moves.
            let t = Instant::now();
            while download.try_wait().ok().flatten().is_none()
                && t.elapsed() < Duration::from_secs(60)
            {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = download.kill();
            let mut got = String::new();
            if let Some(mut o) = download.stdout.take() {
                let _ = std::io::Read::read_to_string(&mut o, &mut got);
            }
            let _ = download.wait();
            if got.trim() == format!("200 {}", crate::lab::BIG) {
                println!(
                    "the download completed across both moves: {} bytes (pfsync had the connection's state on the other firewall)",
                    crate::lab::BIG
                );
            } else {
                println!(
                    "the download did not complete: curl says '{}' (code, bytes)",
                    got.trim()
                );
            }
            self.print_carp();
            Ok(())
        })();
        let _ = ping.kill();
        let _ = ping.wait();
        let _ = download.kill();
        let _ = download.wait();
        result
    }

    pub fn print_s3(&self) {
        let a = self.prefix_arg();
        let d = self.dir().display().to_string();
        println!("Scenario S3: two firewalls, virtual gateways 198.18.0.1 / 2001:db8::1 (LAN, carp0) and 203.0.113.1 / 2001:db8:1::1 (WAN, carp1).");
        self.print_carp();
        let lines = [
            (
                format!("palisade lab failover{a}"),
                "kill -9 the master with a ping and a download running across; bring it back"
                    .to_string(),
            ),
            (
                format!("palisade lab failover --graceful{a}"),
                "the same with SIGTERM (bow-out)".into(),
            ),
            (
                format!("palisade lab demote{a} fw1 128"),
                "hand fw1's vhids over; `undemote` takes them back".into(),
            ),
            (
                format!("palisade lab kill{a} fw1"),
                "kill -9 (also: stop = SIGTERM, start)".into(),
            ),
            (
                format!("palisade lab exec{a} lan -- ping 203.0.113.10"),
                "across the pair".into(),
            ),
            (
                format!("palisade lab exec{a} wan -- curl http://198.18.0.10/"),
                "to the LAN web server".into(),
            ),
            (
                format!("palisade carp show -s {d}/fw1.sock"),
                "fw1's CARP (ifconfig carp)".into(),
            ),
            (
                format!("palisade sync show -s {d}/fw2.sock"),
                "fw2's pfsync: messages received, the bulk update".into(),
            ),
            (
                format!("palisade show states -s {d}/fw2.sock"),
                "the states fw2 holds for fw1's connections".into(),
            ),
            (
                format!("palisade lab status{a}"),
                "which firewall is master".into(),
            ),
            (format!("palisade lab down{a}"), "remove it all".into()),
        ];
        let w = lines.iter().map(|(c, _)| c.len()).max().unwrap_or(0);
        println!("\nExplore (as root; hosts: {}):", HOSTS.join(", "));
        for (c, why) in lines {
            println!("  {c:<w$}  # {why}");
        }
        println!("  Logs: {d}/fw1.log, {d}/fw2.log   pf.conf: {d}/pf.conf");
        println!("  Blocked packets (block log): tcpdump -n -e -r {d}/fw1.pflog");
    }

    /// `lab status` of an S3 lab, as JSON: each firewall's CARP.
    pub fn status_s3(&self) -> serde_json::Value {
        let fws: Vec<_> = FIREWALLS
            .iter()
            .map(|fw| {
                serde_json::json!({
                    "name": fw,
                    "running": self.fw_proc(fw).is_some(),
                    "carp": self.carp_view(fw),
                })
            })
            .collect();
        serde_json::json!({
            "prefix": self.prefix,
            "scenario": "s3",
            "firewalls": fws,
            "master": self.master(),
        })
    }
}

/// The longest time without a reply (seconds) that ends after `at`, the
/// moment the master was signalled: from the last reply before it, across
/// every later gap, to the first reply after the longest one. A reply
/// already on its way when the master dies lands just after `at`; taking
/// only "the first reply after" would report that as the outage.
/// None when nothing answered after `at`.
fn longest_silence(before: &[f64], after: &[f64], at: f64) -> Option<f64> {
    let mut replies: Vec<f64> = before.iter().chain(after).copied().collect();
    replies.sort_by(f64::total_cmp);
    if !replies.iter().any(|&t| t > at) {
        return None;
    }
    let mut prev = replies
        .iter()
        .copied()
        .filter(|&t| t <= at)
        .fold(at - 0.05, f64::max);
    let mut longest = 0.0f64;
    for &t in replies.iter().filter(|&&t| t > at) {
        longest = longest.max(t - prev);
        prev = t;
    }
    Some(longest)
}

#[cfg(test)]
mod tests {
    use super::longest_silence;

    #[test]
    fn a_reply_in_flight_at_the_kill_is_not_the_end_of_the_outage() {
        // The ping every 50 ms seen in CI: one reply 30 ms after the kill,
        // then three seconds of silence.
        let before = [9.90, 9.95, 10.0];
        let mut after = vec![10.03];
        after.extend((0..20).map(|i| 13.03 + 0.05 * f64::from(i)));
        let gap = longest_silence(&before, &after, 10.01).unwrap();
        assert!((gap - 3.0).abs() < 1e-6, "{gap}");
    }

    #[test]
    fn a_graceful_move_shows_its_short_gap_and_silence_is_none() {
        let before = [9.95, 10.0];
        let after = [10.05, 10.2, 10.25];
        let gap = longest_silence(&before, &after, 10.01).unwrap();
        assert!((gap - 0.15).abs() < 1e-6, "{gap}");
        assert_eq!(longest_silence(&before, &[], 10.01), None);
    }
}
