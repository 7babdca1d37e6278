//! One proxied FTP session, sans-IO: the caller relays the control
//! connection's bytes through it (`from_client`, `from_server`), takes
//! what comes out (`poll_output`: bytes for either side, the rules to put
//! in the session's anchor, log lines, the end of the session) and runs
//! its idle timer (`poll_timeout`, `handle_timeout`). Time is
//! microseconds from an origin the caller chooses.
//!
//! For each data connection the client or the server announces, the
//! session writes the rules that let exactly that connection through,
//! translated, as ftp-proxy(8) does (its manual describes them), into
//! `ftp-proxy/<id>` (or `ftp-proxy/<pid>.<id>`), replacing what was there, and empties the anchor
//! when the session ends:
//!
//! - active mode (PORT / EPRT from the client): the server is told to
//!   connect to the proxy's address at a port the proxy picks; that
//!   connection is redirected to the client's port and leaves from the
//!   server's address as the client knows it;
//! - passive mode (a 227 / 229 reply from the server): the client is told
//!   to connect to the server's address as it knows it, at the server's
//!   port; that connection is redirected to the server and leaves from
//!   the proxy's address.
//!
//! Each rule passes `quick`, only a connection's first SYN (`flags S/SA`),
//! and keeps at most one state (`max 1`): a second connection to an
//! announced port is blocked. Refused, each with a log line: a PORT or
//! EPRT naming another host than the client (FTP bounce), a data port
//! below 1024, malformed PORT / EPRT / 227 / 229, PASV or PORT where only
//! the extended commands can say the address (IPv6), a USER other than
//! ftp / anonymous with `anonymous_only`. A line longer than `max_line`,
//! or an idle session past `idle_timeout`, ends the session.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};

use crate::parse::{self, Command};

pub type Micros = u64;

const SECOND: Micros = 1_000_000;

/// Client lines kept while the server has not greeted yet.
const MAX_HELD: usize = 64;
/// Commands sent on (or answered by the proxy) whose replies have not
/// come yet: a client that sends more without reading is cut off.
const MAX_PENDING: usize = 256;
/// Lines of one multi-line 227 / 229 the proxy holds.
const MAX_REPLY_LINES: usize = 32;

/// ftp-proxy(8)'s options that shape a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// `-A`: only users ftp and anonymous.
    pub anonymous_only: bool,
    /// `-r`: active-mode data connections come from port 20 (RFC 959's
    /// source port, for clients that insist).
    pub rewrite_source_port: bool,
    /// `-T`: tag the data connections' packets.
    pub tag: Option<String>,
    /// `-q`: queue for the data connections.
    pub queue: Option<String>,
    /// `-v` given once (log) or twice (log all).
    pub log: u8,
    /// `-t`: seconds a control connection may stay silent.
    pub idle_timeout: Micros,
    /// The longest command or reply line taken.
    pub max_line: usize,
    /// Seeds the proxy's choice of active-mode ports.
    pub seed: u64,
    /// The proxy process's number (its pid): anchors are then named
    /// `ftp-proxy/<instance>.<id>`, as OpenBSD's, so that two proxies
    /// (IPv4 and IPv6, or one restarted) never share one.
    pub instance: Option<u32>,
    /// The ruleset calls the anchors from `nat-anchor` / `rdr-anchor`
    /// (the older syntax): the translations are loaded as `nat` and `rdr`
    /// rules, which translate before filtering, and the filter rules
    /// name the translated addresses, as the older ftp-proxy loads them.
    /// Otherwise `rdr-to` / `nat-to` on the filter rules.
    pub legacy: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            anonymous_only: false,
            rewrite_source_port: false,
            tag: None,
            queue: None,
            log: 0,
            idle_timeout: 86_400 * SECOND,
            max_line: 4096,
            seed: 0x9e37_79b9_7f4a_7c15,
            instance: None,
            legacy: false,
        }
    }
}

/// The session's four addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ends {
    /// The client, as the control connection came from it.
    pub client: SocketAddr,
    /// Where the client meant to go (before the redirection to the
    /// proxy): the server's address as the client knows it.
    pub orig_server: SocketAddr,
    /// Where the proxy connects: `orig_server`, or `-R` / `-P`.
    pub server: SocketAddr,
    /// The proxy's own address on its connection to the server.
    pub proxy: IpAddr,
}

/// What the session wants done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    ToServer(Vec<u8>),
    ToClient(Vec<u8>),
    /// Replace the rules of `anchor` with `rules` (pf.conf text); empty
    /// rules empty the anchor.
    Rules {
        anchor: String,
        rules: String,
    },
    /// A line for the log; `refused` when the proxy refused something.
    Log {
        refused: bool,
        msg: String,
    },
    /// Close both connections (after sending what was queued).
    Close(String),
}

#[derive(Default)]
struct Lines {
    buf: Vec<u8>,
}

impl Lines {
    /// Complete lines (with their LF) from what arrived; Err if a line
    /// grows past `max`.
    fn push(&mut self, data: &[u8], max: usize) -> Result<Vec<Vec<u8>>, usize> {
        self.buf.extend_from_slice(data);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(i) = self.buf[start..].iter().position(|&b| b == b'\n') {
            let end = start + i + 1;
            if end - start > max {
                return Err(end - start);
            }
            out.push(self.buf[start..end].to_vec());
            start = end;
        }
        // One move for all the lines taken.
        self.buf.drain(..start);
        if self.buf.len() > max {
            return Err(self.buf.len());
        }
        Ok(out)
    }
}

/// A command relayed to the server, as its reply will be read; or the
/// proxy's own answer to a command it did not relay, sent once the
/// commands before it are answered.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Asked {
    Other,
    /// PASV (false) or EPSV (true).
    Passive(bool),
    Own(String),
}

pub struct Session {
    id: u64,
    cfg: Config,
    ends: Ends,
    client_in: Lines,
    server_in: Lines,
    /// The code of a multi-line reply under way (its lines pass as they
    /// are, but a 227's or 229's, held until its last line is read).
    multiline: Option<u16>,
    reply_held: Vec<String>,
    /// The server's greeting has come; until then the client's lines
    /// wait (so that the proxy's own answers never come before it).
    greeted: bool,
    held: Vec<Vec<u8>>,
    /// The commands relayed to the server and not answered yet, oldest
    /// first: each final reply answers the oldest (RFC 959 4.2), so a
    /// client that sends commands without waiting (lftp's `sync-mode
    /// off`: TYPE then EPSV in one write) still gets its 229 read as
    /// EPSV's. Only a passive command's reply is read as a 227 / 229.
    relayed: VecDeque<Asked>,
    out: VecDeque<Output>,
    last_activity: Micros,
    closed: bool,
    rng: u64,
    /// Data connections set up so far.
    pub negotiations: u64,
}

impl Session {
    pub fn new(id: u64, cfg: Config, ends: Ends, now: Micros) -> Session {
        let rng = (cfg.seed ^ id.wrapping_mul(0x2545_f491_4f6c_dd1d)).max(1);
        Session {
            id,
            cfg,
            ends,
            client_in: Lines::default(),
            server_in: Lines::default(),
            multiline: None,
            reply_held: Vec::new(),
            relayed: VecDeque::new(),
            greeted: false,
            held: Vec::new(),
            out: VecDeque::new(),
            last_activity: now,
            closed: false,
            rng,
            negotiations: 0,
        }
    }

    /// The session's anchor: `ftp-proxy/<id>`, or
    /// `ftp-proxy/<instance>.<id>`.
    pub fn anchor(&self) -> String {
        match self.cfg.instance {
            Some(i) => format!("ftp-proxy/{i}.{}", self.id),
            None => format!("ftp-proxy/{}", self.id),
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Bytes the client sent on the control connection.
    pub fn from_client(&mut self, now: Micros, data: &[u8]) {
        if self.closed {
            return;
        }
        self.last_activity = now;
        match self.client_in.push(data, self.cfg.max_line) {
            Ok(lines) if !self.greeted => {
                self.held.extend(lines);
                if self.held.len() > MAX_HELD {
                    self.close(format!(
                        "client: more than {MAX_HELD} commands before the server's greeting: session ended"
                    ));
                }
            }
            Ok(lines) => {
                for l in lines {
                    if self.closed {
                        break;
                    }
                    self.client_line(&l);
                }
            }
            Err(n) => self.close(format!(
                "client: a line of {n} bytes or more (at most {}): session ended",
                self.cfg.max_line
            )),
        }
    }

    /// Bytes the server sent on the control connection.
    pub fn from_server(&mut self, now: Micros, data: &[u8]) {
        if self.closed {
            return;
        }
        self.last_activity = now;
        match self.server_in.push(data, self.cfg.max_line) {
            Ok(lines) => {
                for l in lines {
                    if self.closed {
                        break;
                    }
                    self.server_line(&l);
                }
            }
            Err(n) => self.close(format!(
                "server: a line of {n} bytes or more (at most {}): session ended",
                self.cfg.max_line
            )),
        }
    }

    /// The client or the server closed its side: the session ends.
    pub fn closed_by(&mut self, who: &str) {
        if !self.closed {
            self.close(format!("{who} closed the connection"));
        }
    }

    pub fn poll_output(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&self) -> Option<Micros> {
        (!self.closed).then(|| self.last_activity + self.cfg.idle_timeout)
    }

    pub fn handle_timeout(&mut self, now: Micros) {
        if !self.closed && now >= self.last_activity + self.cfg.idle_timeout {
            self.close(format!(
                "idle for {} s: session ended",
                self.cfg.idle_timeout / SECOND
            ));
        }
    }

    fn close(&mut self, why: String) {
        self.closed = true;
        if self.negotiations > 0 {
            self.out.push_back(Output::Rules {
                anchor: self.anchor(),
                rules: String::new(),
            });
        }
        self.out.push_back(Output::Close(why));
    }

    fn refuse(&mut self, msg: String) {
        self.out.push_back(Output::Log { refused: true, msg });
    }

    fn client_line(&mut self, raw: &[u8]) {
        // Telnet commands (IAC and a command byte: the Interrupt Process
        // and Data Mark that ftp(1) sends before ABOR, RFC 959 4.1.3) are
        // taken out here, and the line goes on without them: the server
        // reads the command the proxy read. A 0xff left after that (an
        // escaped IAC IAC, or a lone one) is refused: some servers strip
        // it, others do not, so the line could be read two ways.
        let stripped = strip_telnet(raw);
        let raw: &[u8] = &stripped;
        let text = String::from_utf8_lossy(raw);
        let parsed = if raw.contains(&0xff) {
            Err(parse::ParseError::Garbled)
        } else {
            parse::command(&text)
        };
        let cmd = match parsed {
            Ok(c) => c,
            Err(e @ parse::ParseError::Garbled) => {
                self.refuse(format!(
                    "client {}: {e}: {}",
                    self.ends.client,
                    escaped(&text)
                ));
                self.answer(format!("500 {e}\r\n"));
                return;
            }
            Err(e) => {
                self.refuse(format!("client {}: {e}", self.ends.client));
                self.answer(format!("501 {e}\r\n"));
                return;
            }
        };
        // The proxy must read the whole control connection: no TLS on it
        // (RFC 2228's AUTH, and the commands that go with it).
        let word = text.get(..4).unwrap_or("").trim_end().to_ascii_uppercase();
        if matches!(word.as_str(), "AUTH" | "ADAT" | "CCC" | "PBSZ" | "PROT") {
            self.refuse(format!(
                "client {}: {word} refused (the proxy cannot follow an encrypted control connection)",
                self.ends.client
            ));
            self.answer(format!(
                "534 {word} refused: the proxy reads the control connection\r\n"
            ));
            return;
        }
        match cmd {
            Command::Active { to, extended } => self.active(to, extended),
            Command::Passive { extended, .. } => {
                if !extended && !self.ends.orig_server.is_ipv4() {
                    self.refuse(format!(
                        "client {}: PASV over IPv6 (only EPSV can say where)",
                        self.ends.client
                    ));
                    self.answer("500 PASV is not possible over IPv6: use EPSV\r\n".into());
                    return;
                }
                if extended {
                    // EPSV, EPSV ALL, EPSV <proto>: relayed as the client
                    // wrote it (bytes and all); the proxy rewrites the
                    // 229.
                    self.relay(raw.to_vec(), Asked::Passive(true));
                    return;
                }
                // PASV to a server reached over IPv6 goes as EPSV.
                let (line, asked) = if self.ends.server.is_ipv4() {
                    ("PASV\r\n", Asked::Passive(false))
                } else {
                    ("EPSV\r\n", Asked::Passive(true))
                };
                self.relay(line.as_bytes().to_vec(), asked);
            }
            Command::User(name) => {
                let anon = ["ftp", "anonymous"]
                    .iter()
                    .any(|a| a.eq_ignore_ascii_case(&name));
                if self.cfg.anonymous_only && !anon {
                    self.refuse(format!(
                        "client {}: user '{}' refused (only ftp and anonymous)",
                        self.ends.client,
                        escaped(&name)
                    ));
                    self.answer("530 Only anonymous FTP is allowed through this proxy\r\n".into());
                } else {
                    self.relay(raw.to_vec(), Asked::Other);
                }
            }
            Command::Other => self.relay(raw.to_vec(), Asked::Other),
        }
    }

    /// PORT / EPRT: the client listens at `to`.
    fn active(&mut self, to: SocketAddr, extended: bool) {
        let why = if to.is_ipv4() != self.ends.client.is_ipv4() {
            Some(if extended {
                format!("EPRT names {} on a session over another family", to.ip())
            } else {
                "PORT is not possible over IPv6: use EPRT".to_string()
            })
        } else if to.ip() != self.ends.client.ip() {
            Some(format!(
                "{} names {} instead of the client (FTP bounce)",
                if extended { "EPRT" } else { "PORT" },
                to.ip()
            ))
        } else if to.port() < 1024 {
            Some(format!("data port {} is below 1024", to.port()))
        } else {
            None
        };
        if let Some(why) = why {
            self.refuse(format!("client {}: {why}", self.ends.client));
            self.answer(format!("501 Refused by the proxy: {why}\r\n"));
            return;
        }
        let proxy = SocketAddr::new(self.ends.proxy, self.pick_port());
        let af = af(self.ends.server.ip());
        let s = self.ends.server.ip();
        let c = to;
        // `-r`: as ftp-proxy(8), for PORT only (RFC 959's port 20).
        let nat_port = if self.cfg.rewrite_source_port && !extended {
            " port 20"
        } else {
            ""
        };
        let rules = self.data_rules(af, s, proxy, c, self.ends.orig_server.ip(), nat_port);
        self.set_rules(rules);
        let line = match (extended, parse::format_port(proxy)) {
            (false, Some(l)) => l,
            _ => parse::format_eprt(proxy),
        };
        self.relay(line.into_bytes(), Asked::Other);
    }

    fn server_line(&mut self, raw: &[u8]) {
        let text = String::from_utf8_lossy(raw);
        let Some((code, more)) = parse::reply_code(&text) else {
            // Inside a multi-line reply any text goes; outside, a line
            // without a code is relayed as it is (the client judges).
            if self.multiline.is_some() && !self.reply_held.is_empty() {
                self.reply_held.push(text.into_owned());
                if self.reply_held.len() > MAX_REPLY_LINES {
                    self.reply_held.clear();
                    self.multiline = None;
                    self.close(format!(
                        "server {}: a 227 / 229 reply of more than {MAX_REPLY_LINES} lines: session ended",
                        self.ends.server
                    ));
                }
            } else {
                self.send_client_raw(raw);
            }
            return;
        };
        if let Some(m) = self.multiline {
            let last = code == m && !more && text.as_bytes().get(3) == Some(&b' ');
            if !self.reply_held.is_empty() {
                self.reply_held.push(text.into_owned());
                if !last && self.reply_held.len() > MAX_REPLY_LINES {
                    // A 227 / 229 that does not end: not read, not relayed.
                    self.reply_held.clear();
                    self.multiline = None;
                    self.close(format!(
                        "server {}: a {m} reply of more than {MAX_REPLY_LINES} lines: session ended",
                        self.ends.server
                    ));
                    return;
                }
                if last {
                    self.multiline = None;
                    let lines = std::mem::take(&mut self.reply_held);
                    self.final_reply(m, &lines, raw, false);
                }
                return;
            }
            self.send_client_raw(raw);
            if last {
                self.multiline = None;
                // A preliminary reply (1xx) answers nothing yet.
                if !(100..200).contains(&m) {
                    self.final_reply(m, &[], raw, true);
                }
            }
            return;
        }
        if more {
            self.multiline = Some(code);
            // A 227's or 229's lines are held: the address they name is
            // the server's, not for the client.
            if matches!(code, 227 | 229) {
                self.reply_held.push(text.into_owned());
            } else {
                self.send_client_raw(raw);
            }
            return;
        }
        if (100..200).contains(&code) {
            // A preliminary reply (150 before a transfer): the command
            // still waits for its final one.
            self.send_client_raw(raw);
            return;
        }
        let line = text.into_owned();
        self.final_reply(code, std::slice::from_ref(&line), raw, false);
    }

    /// A final reply answers the oldest command relayed. `lines`: its
    /// text (one line, or a held 227's / 229's lines); `raw`: its last
    /// line as it came; `relayed`: already sent to the client (a
    /// multi-line reply's lines go as they come). A 227 / 229 is read only
    /// as a passive command's answer: the oldest one's, or (a server that
    /// answered something twice, or not at all) the first passive command
    /// waiting.
    fn final_reply(&mut self, code: u16, lines: &[String], raw: &[u8], relayed: bool) {
        // The greeting answers no command.
        if !self.greeted {
            if !relayed {
                match lines {
                    [_, _, ..] => {
                        for l in lines {
                            self.send_client_raw(l.as_bytes());
                        }
                    }
                    _ => self.send_client_raw(raw),
                }
            }
            self.greeting_done();
            return;
        }
        let want = match code {
            227 => Some(Asked::Passive(false)),
            229 => Some(Asked::Passive(true)),
            _ => None,
        };
        self.answers_due();
        let asked = match &want {
            Some(w) if self.relayed.front() != Some(w) && self.relayed.contains(w) => {
                // The proxy's own answers passed over go now.
                let at = self.relayed.iter().position(|a| a == w).expect("contained");
                let passed: Vec<Asked> = self.relayed.drain(..=at).collect();
                for a in &passed {
                    if let Asked::Own(s) = a {
                        self.send_client(s.clone());
                    }
                }
                passed.last().cloned()
            }
            _ => self.relayed.pop_front(),
        };
        match (want, asked) {
            (Some(w), Some(a)) if w == a => {
                // The address: on the last line, else on any line (a
                // line without the code is read as if it had it).
                let read = |l: &str| {
                    let l = if parse::reply_code(l).is_some() {
                        l.to_string()
                    } else {
                        format!("{code} {l}")
                    };
                    if code == 227 {
                        parse::reply_227(&l).map(|a| a.port())
                    } else {
                        parse::reply_229(&l)
                    }
                };
                let port = lines
                    .iter()
                    .rev()
                    .map(|l| read(l))
                    .find(Result::is_ok)
                    .unwrap_or_else(|| read(lines.last().map_or("", String::as_str)));
                match port {
                    Ok(p) => self.passive(p, code == 229),
                    Err(e) => self.bad_reply(e),
                }
            }
            (Some(_), _) => {
                self.refuse(format!(
                    "server {}: a {code} reply to no {} command: not relayed",
                    self.ends.server,
                    if code == 227 { "PASV" } else { "EPSV" }
                ));
                self.send_client(format!(
                    "425 Cannot open a data connection: the server answered {code} to another command\r\n"
                ));
            }
            (None, _) if relayed => {}
            (None, _) => self.send_client_raw(raw),
        }
        self.answers_due();
    }

    /// A final reply went to the client: if it was the greeting, the
    /// client's waiting lines go on now.
    fn greeting_done(&mut self) {
        if self.greeted {
            return;
        }
        self.greeted = true;
        for l in std::mem::take(&mut self.held) {
            if self.closed {
                break;
            }
            self.client_line(&l);
        }
    }

    fn bad_reply(&mut self, e: parse::ParseError) {
        self.refuse(format!("server {}: {e}", self.ends.server));
        self.send_client(
            "425 Cannot open a data connection: the proxy could not read the server's reply\r\n"
                .into(),
        );
    }

    /// A 227 / 229: the server listens at `port` (on its own address:
    /// the address a 227 names is not trusted).
    fn passive(&mut self, port: u16, extended: bool) {
        if port < 1024 {
            let why = format!("data port {port} is below 1024");
            self.refuse(format!("server {}: {why}", self.ends.server));
            self.send_client(format!("425 Refused by the proxy: {why}\r\n"));
            return;
        }
        let af = af(self.ends.server.ip());
        let rules = self.data_rules(
            af,
            self.ends.client.ip(),
            SocketAddr::new(self.ends.orig_server.ip(), port),
            SocketAddr::new(self.ends.server.ip(), port),
            self.ends.proxy,
            "",
        );
        let reply = if extended {
            Some(parse::format_229(port))
        } else {
            parse::format_227(SocketAddr::new(self.ends.orig_server.ip(), port))
        };
        let Some(reply) = reply else {
            self.refuse(format!(
                "server {}: a 227 for a client on IPv6 (only 229 can say where)",
                self.ends.server
            ));
            self.send_client("425 Cannot open a data connection: use EPSV\r\n".into());
            return;
        };
        self.set_rules(rules);
        self.send_client(reply);
    }

    /// The rules of one data connection from `from`: addressed to `to`,
    /// redirected to `target`, leaving from `source` (`nat_port`: ` port
    /// 20` with `-r`, or nothing). New syntax: a pass rule with `rdr-to`
    /// on the way in and one with `nat-to` on the way out. Older syntax
    /// (`legacy`): an `rdr` and a `nat` rule, which translate before the
    /// filter rules, and the two filter rules on the translated
    /// addresses (after `rdr` the destination is `target`; after `nat`
    /// the source is `source`).
    fn data_rules(
        &self,
        af: &str,
        from: IpAddr,
        to: SocketAddr,
        target: SocketAddr,
        source: IpAddr,
        nat_port: &str,
    ) -> String {
        let (inn, out, opts) = (self.head("in"), self.head("out"), self.opts());
        let (ti, tp, gi, gp) = (to.ip(), to.port(), target.ip(), target.port());
        if !self.cfg.legacy {
            return format!(
                "{inn} {af} proto tcp from {from} to {ti} port {tp}{opts} rdr-to {gi} port {gp}\n\
                 {out} {af} proto tcp from {from} to {gi} port {gp}{opts} nat-to {source}{nat_port}\n"
            );
        }
        let rdr = if to != target {
            format!("rdr {af} proto tcp from {from} to {ti} port {tp} -> {gi} port {gp}\n")
        } else {
            String::new()
        };
        format!(
            "{rdr}nat {af} proto tcp from {from} to {gi} port {gp} -> {source}{nat_port}\n\
             {inn} {af} proto tcp from {from} to {gi} port {gp}{opts}\n\
             {out} {af} proto tcp from {source} to {gi} port {gp}{opts}\n"
        )
    }

    fn set_rules(&mut self, rules: String) {
        self.negotiations += 1;
        self.out.push_back(Output::Rules {
            anchor: self.anchor(),
            rules,
        });
    }

    fn log(&self) -> &'static str {
        match self.cfg.log {
            0 => "",
            1 => " log",
            _ => " log (all)",
        }
    }

    /// A rule's action, direction and log: `pass ... quick`, or with
    /// `-T` a `match` rule (not quick), as ftp-proxy(8) does: the rules
    /// after the anchor decide, with `tagged`, and keep the translation.
    fn head(&self, dir: &str) -> String {
        if self.cfg.tag.is_some() {
            format!("match {dir}{}", self.log())
        } else {
            format!("pass {dir}{} quick", self.log())
        }
    }

    /// What follows the ports: the state (a pass rule's `max 1`), the
    /// tag, the queue.
    fn opts(&self) -> String {
        let mut s = String::new();
        if let Some(t) = &self.cfg.tag {
            s += &format!(" tag {t}");
        } else {
            s += " flags S/SA keep state (max 1)";
        }
        if let Some(q) = &self.cfg.queue {
            s += &format!(" queue {q}");
        }
        s
    }

    /// A port for the server to connect to, 49152 to 65535.
    fn pick_port(&mut self) -> u16 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        49152 + (x % 16384) as u16
    }

    /// The proxy's own answer to a command (a refusal): after the replies
    /// to the commands relayed before it, so that a client that sends
    /// commands without waiting pairs each reply with its command.
    fn answer(&mut self, s: String) {
        if self.relayed.is_empty() {
            self.send_client(s);
        } else if !self.pending_full() {
            self.relayed.push_back(Asked::Own(s));
        }
    }

    /// Too many commands wait for their replies (a client that sends
    /// without reading, to a server that answers slowly or not at all):
    /// the session ends rather than hold them all.
    fn pending_full(&mut self) -> bool {
        if self.relayed.len() < MAX_PENDING {
            return false;
        }
        self.close(format!(
            "client: more than {MAX_PENDING} commands waiting for their replies: session ended"
        ));
        true
    }

    /// The proxy's own answers whose turn has come.
    fn answers_due(&mut self) {
        while let Some(Asked::Own(_)) = self.relayed.front() {
            if let Some(Asked::Own(s)) = self.relayed.pop_front() {
                self.send_client(s);
            }
        }
    }

    /// A command to the server, whose reply the proxy will read as `asked`.
    fn relay(&mut self, b: Vec<u8>, asked: Asked) {
        if self.pending_full() {
            return;
        }
        self.relayed.push_back(asked);
        self.out.push_back(Output::ToServer(b));
    }

    fn send_client(&mut self, s: String) {
        self.out.push_back(Output::ToClient(s.into_bytes()));
    }

    fn send_client_raw(&mut self, b: &[u8]) {
        self.out.push_back(Output::ToClient(b.to_vec()));
    }
}

/// `line` without Telnet commands: IAC (0xff) followed by a command
/// byte (0xf0-0xfe; WILL/WONT/DO/DONT take an option byte too). IAC IAC
/// (a data byte 0xff) is kept as it is.
fn strip_telnet(line: &[u8]) -> Vec<u8> {
    // The line's end is kept out of it: a sequence cut short by the end
    // of the line never takes the newline with it.
    let body_len = if line.ends_with(b"\r\n") {
        line.len() - 2
    } else if line.ends_with(b"\n") {
        line.len() - 1
    } else {
        line.len()
    };
    let (line, end) = line.split_at(body_len);
    let mut out = Vec::with_capacity(line.len() + end.len());
    let mut i = 0;
    while i < line.len() {
        match (line[i], line.get(i + 1)) {
            (0xff, Some(&(0xfb..=0xfe))) => i += 3,
            (0xff, Some(&c)) if (0xf0..=0xfa).contains(&c) => i += 2,
            (0xff, Some(&0xff)) => {
                out.extend_from_slice(&[0xff, 0xff]);
                i += 2;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out.extend_from_slice(end);
    out
}

fn af(ip: IpAddr) -> &'static str {
    if ip.is_ipv4() {
        "inet"
    } else {
        "inet6"
    }
}

/// Text from the network, fit for a log line: control characters escaped,
/// at most 200 characters.
fn escaped(s: &str) -> String {
    let t: String = s.trim_end_matches(['\r', '\n']).chars().take(200).collect();
    t.escape_debug().to_string()
}
