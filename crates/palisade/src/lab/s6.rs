//! `palisade lab up --scenario s6`: scenario S6 on one machine, in
//! network namespaces. A mail server (Postfix) asks `palisade greylist`
//! about each recipient; the service captures the clients' SYNs on the
//! mail server itself. Two senders: one whose SYNs look like Windows 10's
//! (nftables rewrites them: TTL 128, window 64240, MSS,NOP,WS8,NOP,NOP,
//! SACK), one plain Linux.
//!
//!   win 192.0.2.10 ----------- [w0] mail 192.0.2.25      (Postfix, palisade greylist)
//!   linux 198.51.100.10 ------ [l0] mail 198.51.100.25

use super::*;

/// The S6 lab's hosts.
pub const HOSTS: [&str; 3] = ["win", "linux", "mail"];

/// The lab's greylisting delay (a real one: 300 s).
const DELAY: u64 = 5;

const SA_RULES: &str = include_str!("../../../../contrib/spamassassin/palisade-p0f.cf");

impl Lab {
    pub fn is_s6(&self) -> bool {
        std::fs::read_to_string(self.dir().join("scenario")).is_ok_and(|s| s.trim() == "s6")
    }

    pub fn check_host_s6(host: &str) -> Result<(), String> {
        check_among(host, &HOSTS, "the S6 lab's")
    }

    pub fn up_s6(&self) -> Result<(), String> {
        self.up_scenario(
            &["postfix", "swaks", "spamassassin", "nft"],
            "apt install postfix swaks spamassassin nftables",
            Lab::build_s6,
        )
    }

    fn build_s6(&self) -> Result<(), String> {
        std::fs::write(self.dir().join("scenario"), "s6\n").map_err(|e| e.to_string())?;
        self.add_hosts(&HOSTS)?;
        self.veth("win", "eth0", "mail", "w0")?;
        self.veth("linux", "eth0", "mail", "l0")?;
        for (h, dev, a) in [
            ("win", "eth0", "192.0.2.10/24"),
            ("mail", "w0", "192.0.2.25/24"),
            ("linux", "eth0", "198.51.100.10/24"),
            ("mail", "l0", "198.51.100.25/24"),
        ] {
            self.run_in(h, &["ip", "addr", "add", a, "dev", dev])?;
        }
        // win: Windows 10's SYN from a Linux stack.
        for kv in [
            "net.ipv4.ip_default_ttl=128",
            "net.ipv4.tcp_timestamps=0",
            "net.ipv4.tcp_rmem=4096 131072 8388608",
        ] {
            self.run_in("win", &["sysctl", "-qw", kv])?;
        }
        let nft = self.dir().join("winsyn.nft");
        std::fs::write(
            &nft,
            "table inet winsyn {\n chain out {\n  type filter hook output priority mangle; policy accept;\n  \
             tcp flags == syn @th,112,16 set 0xfaf0 @th,192,32 set 0x01030308 @th,224,32 set 0x01010402\n }\n}\n",
        )
        .map_err(|e| e.to_string())?;
        self.run_in("win", &["nft", "-f", nft.to_str().ok_or("odd path")?])?;
        // The greylisting service, capturing on the mail server.
        let conf = self.dir().join("palisade.toml");
        std::fs::write(
            &conf,
            format!(
                "[greylist]\nlisten = \"127.0.0.1:10023\"\ndatabase = \"{d}/greylist.redb\"\n\
                 admin-socket = \"{d}/greylist.sock\"\np0f-socket = \"{d}/p0f.sock\"\n\
                 sniff = [\"w0\", \"l0\"]\ndelay = {DELAY}\n",
                d = self.dir().display()
            ),
        )
        .map_err(|e| e.to_string())?;
        let me = std::env::current_exe().map_err(|e| e.to_string())?;
        let me = me.to_str().ok_or("odd path")?;
        self.spawn(
            "mail",
            &[
                me,
                "greylist",
                "run",
                "-c",
                conf.to_str().ok_or("odd path")?,
            ],
            "greylist.log",
        )?;
        // Postfix.
        let pf = self.dir().join("postfix");
        for sub in ["etc", "queue", "data", "mail"] {
            std::fs::create_dir_all(pf.join(sub)).map_err(|e| e.to_string())?;
        }
        std::fs::copy("/etc/postfix/master.cf", pf.join("etc/master.cf"))
            .map_err(|e| format!("/etc/postfix/master.cf: {e}"))?;
        let id = |a: &str| {
            Command::new("id")
                .args([a, "postfix"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .map_err(|e| e.to_string())
        };
        let (uid, gid) = (id("-u")?, id("-g")?);
        std::fs::write(
            pf.join("etc/main.cf"),
            format!(
                "compatibility_level = 3.6\nqueue_directory = {d}/queue\ndata_directory = {d}/data\n\
                 mail_owner = postfix\nmyhostname = mail.example.test\nmydestination =\n\
                 inet_interfaces = 192.0.2.25, 198.51.100.25\ninet_protocols = ipv4\n\
                 mynetworks = 127.0.0.0/8\nalias_maps =\nalias_database =\nsmtpd_peername_lookup = no\n\
                 virtual_mailbox_domains = example.test\nvirtual_mailbox_base = {d}/mail\n\
                 virtual_mailbox_maps = static:box/\nvirtual_uid_maps = static:{uid}\n\
                 virtual_gid_maps = static:{gid}\nmaillog_file = /dev/stdout\n\
                 smtpd_recipient_restrictions = reject_unauth_destination, check_policy_service inet:127.0.0.1:10023\n",
                d = pf.display()
            ),
        )
        .map_err(|e| e.to_string())?;
        for (p, who) in [("data", "postfix"), ("mail", "postfix:postfix")] {
            let ok = Command::new("chown")
                .args([who, pf.join(p).to_str().ok_or("odd path")?])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                return Err(format!("chown {who} {}", pf.join(p).display()));
            }
        }
        self.spawn(
            "mail",
            &[
                "postfix",
                "-c",
                pf.join("etc").to_str().ok_or("odd path")?,
                "start-fg",
            ],
            "postfix.log",
        )?;
        // `postfix start-fg` leaves its master running when signalled:
        // `down` kills the master by the PID it wrote.
        let pidfile = pf.join("queue/pid/master.pid");
        let t = Instant::now();
        loop {
            if let Some(pid) = std::fs::read_to_string(&pidfile)
                .ok()
                .and_then(|p| p.trim().parse::<u32>().ok())
            {
                self.record_pid(pid)?;
                break;
            }
            if t.elapsed() > Duration::from_secs(20) {
                return Err(format!(
                    "Postfix did not start (see {})",
                    self.dir().join("postfix.log").display()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let t = Instant::now();
        while !self
            .greeting("linux", "198.51.100.25:25")
            .starts_with("220")
        {
            if t.elapsed() > Duration::from_secs(20) {
                return Err("Postfix does not answer on 198.51.100.25:25".into());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Ok(())
    }

    fn swaks(&self, host: &str, server: &str, from: &str, subject: &str) -> (bool, String) {
        let o = Command::new("ip")
            .args(["netns", "exec", &self.ns(host), "swaks", "--server", server])
            .args(["--from", from, "--to", "user@example.test"])
            .args(["--header", &format!("Subject: {subject}")])
            .args(["--body", "hello from the S6 lab", "--timeout", "20"])
            .output();
        match o {
            Ok(o) => (
                o.status.success(),
                String::from_utf8_lossy(&o.stdout).into_owned(),
            ),
            Err(e) => (false, e.to_string()),
        }
    }

    fn mailbox(&self, subject: &str) -> Option<String> {
        let dir = self.dir().join("postfix/mail/box/new");
        let t = Instant::now();
        loop {
            for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                if let Ok(m) = std::fs::read_to_string(e.path()) {
                    if m.contains(&format!("Subject: {subject}")) {
                        return Some(m);
                    }
                }
            }
            if t.elapsed() > Duration::from_secs(15) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Send from both senders, retry the deferred one after the delay,
    /// show the headers and SpamAssassin's score; true if it all went as
    /// S6 says.
    pub fn show_s6(&self) -> bool {
        let mut ok = true;
        let reply = |t: &str| {
            t.lines()
                .filter(|l| l.starts_with("<** ") || l.contains(" 250 2.0.0 Ok: queued"))
                .map(|l| {
                    l.trim_start_matches("<** ")
                        .trim_start_matches("<-  ")
                        .to_string()
                })
                .next()
                .unwrap_or_default()
        };
        let header = |m: &str| {
            m.lines()
                .find(|l| l.starts_with("X-P0f-OS:"))
                .unwrap_or("(no X-P0f-OS header)")
                .to_string()
        };
        let (sent, t) = self.swaks(
            "win",
            "192.0.2.25",
            "alice@win.example",
            "first try from win",
        );
        // The delay runs from the first attempt's RCPT, which was before
        // swaks returned (a loaded machine can take seconds to get there).
        let t0 = Instant::now();
        println!("  win (Windows-shaped SYN) sends: {}", reply(&t));
        ok &= !sent && t.contains("450 4.7.1");
        let (sent, t) = self.swaks("linux", "198.51.100.25", "bob@linux.example", "from linux");
        println!("  linux sends: {}", reply(&t));
        ok &= sent;
        match self.mailbox("from linux") {
            Some(m) => println!("    delivered at once, with {}", header(&m)),
            None => {
                ok = false;
                println!("    not delivered");
            }
        }
        let wait = Duration::from_secs(DELAY + 1).saturating_sub(t0.elapsed());
        println!(
            "  (the lab's delay is {DELAY} s; a real one is 300 s) waiting {:.0} s, then win retries:",
            wait.as_secs_f64()
        );
        std::thread::sleep(wait);
        let (sent, t) = self.swaks("win", "192.0.2.25", "alice@win.example", "retry from win");
        println!("  win retries: {}", reply(&t));
        ok &= sent;
        match self.mailbox("retry from win") {
            Some(m) => {
                println!("    delivered, with {}", header(&m));
                let sa = self.spamassassin(&m);
                let line = sa
                    .lines()
                    .find(|l| {
                        l.contains("PALISADE_P0F_WINDOWS")
                            && l.trim_start().starts_with(|c: char| c.is_ascii_digit())
                    })
                    .unwrap_or("(PALISADE_P0F_WINDOWS did not hit)")
                    .trim()
                    .to_string();
                println!("    spamassassin -t: {line}");
                ok &= sa.contains("PALISADE_P0F_WINDOWS");
            }
            None => {
                ok = false;
                println!("    not delivered");
            }
        }
        ok
    }

    fn spamassassin(&self, msg: &str) -> String {
        let rules = self.dir().join("spamassassin");
        let _ = std::fs::create_dir_all(&rules);
        for e in std::fs::read_dir("/etc/spamassassin")
            .into_iter()
            .flatten()
            .flatten()
        {
            if e.path().extension().is_some_and(|x| x == "pre") {
                let _ = std::fs::copy(e.path(), rules.join(e.file_name()));
            }
        }
        let _ = std::fs::write(rules.join("palisade-p0f.cf"), SA_RULES);
        let c = Command::new("spamassassin")
            .args(["-t", "-L", "--siteconfigpath"])
            .arg(&rules)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut c) = c else {
            return String::new();
        };
        if let Some(mut i) = c.stdin.take() {
            let _ = i.write_all(msg.as_bytes());
        }
        c.wait_with_output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    pub fn print_s6(&self) {
        let a = self.prefix_arg();
        let d = self.dir().display().to_string();
        println!("Scenario S6: a mail server (mail: Postfix, `palisade greylist` capturing SYNs) and two senders, win (Windows-shaped SYNs, 192.0.2.10) and linux (198.51.100.10).");
        println!("\nExplore (as root; hosts: {}):", HOSTS.join(", "));
        let lines = [
            (
                format!("palisade lab exec{a} win -- swaks --server 192.0.2.25 --to user@example.test"),
                "greylisted (new triplet), then passes after the delay",
            ),
            (
                format!("palisade lab exec{a} linux -- swaks --server 198.51.100.25 --to user@example.test"),
                "delivered at once",
            ),
            (
                format!("palisade greylist show -c {d}/palisade.toml"),
                "the triplets and whitelist",
            ),
            (format!("ls {d}/postfix/mail/box/new"), "the delivered mail"),
            (format!("palisade lab down{a}"), "remove it all"),
        ];
        for (cmd, what) in lines {
            println!("  {cmd:<88} # {what}");
        }
        println!("  Logs: {d}/greylist.log, {d}/postfix.log");
    }
}
