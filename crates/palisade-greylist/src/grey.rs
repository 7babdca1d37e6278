//! The greylisting decision.
//!
//! Keyed as postgrey keys it: the client's network (/24, /64 by default),
//! the envelope sender and the recipient (a "triplet"). A triplet's first
//! attempt is deferred; a retry after `delay` and within `retry_window` of
//! the first attempt passes, and the triplet then passes until it has not
//! been seen for `max_age`. A client network whose triplets passed
//! `auto_whitelist` times is not greylisted any more.
//!
//! Unlike postgrey, only clients whose SYN looked like one of the
//! configured systems (desktop Windows by default) are greylisted: the
//! others are delivered at once. Every message gets a header naming the
//! system (once per message: Postfix asks once per recipient, with the
//! same `instance`).
//!
//! The store is the caller's ([`Store`]): a map kept in memory for tests,
//! an embedded crash-safe database in the service.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;

use crate::policy::{Action, Request};

/// How far `last` may lag (at most half of `max-age`, which it ages
/// entries out by): an entry seen again within this is not written
/// again for that alone. A client retrying too early, or a whitelisted
/// network sending mail after mail, then costs no write (and its answer
/// no wait for the disk).
pub const LAST_SEEN_STEP: u64 = 3600;

/// What is stored per triplet and per client network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Entry {
    /// First attempt (triplet) or first pass (client), seconds.
    pub first: u64,
    /// Last time seen, to [`LAST_SEEN_STEP`] (it only ages entries out,
    /// after `max-age`: 35 days by default).
    pub last: u64,
    /// Triplet: how many attempts passed. Client: how many triplets passed.
    pub count: u32,
    /// Client: whitelisted by hand (never expires).
    pub manual: bool,
}

impl Entry {
    pub const SIZE: usize = 21;

    pub fn encode(&self) -> [u8; Entry::SIZE] {
        let mut b = [0u8; Entry::SIZE];
        b[..8].copy_from_slice(&self.first.to_be_bytes());
        b[8..16].copy_from_slice(&self.last.to_be_bytes());
        b[16..20].copy_from_slice(&self.count.to_be_bytes());
        b[20] = self.manual as u8;
        b
    }

    pub fn decode(b: &[u8]) -> Option<Entry> {
        if b.len() != Entry::SIZE || b[20] > 1 {
            return None;
        }
        Some(Entry {
            first: u64::from_be_bytes(b[..8].try_into().ok()?),
            last: u64::from_be_bytes(b[8..16].try_into().ok()?),
            count: u32::from_be_bytes(b[16..20].try_into().ok()?),
            manual: b[20] == 1,
        })
    }
}

/// Where triplets and clients are kept. Keys are [`triplet_key`] and
/// [`client_key`] strings.
pub trait Store {
    type Error: fmt::Display;
    fn get(&mut self, key: &str) -> Result<Option<Entry>, Self::Error>;
    fn put(&mut self, key: &str, e: Entry) -> Result<(), Self::Error>;
    fn delete(&mut self, key: &str) -> Result<bool, Self::Error>;
    /// Every entry whose key starts with `prefix`, in key order.
    fn scan(&mut self, prefix: &str) -> Result<Vec<(String, Entry)>, Self::Error>;
}

/// A store in memory (tests, benchmarks).
#[derive(Clone, Debug, Default)]
pub struct MemStore(pub BTreeMap<String, Entry>);

impl Store for MemStore {
    type Error = std::convert::Infallible;
    fn get(&mut self, key: &str) -> Result<Option<Entry>, Self::Error> {
        Ok(self.0.get(key).copied())
    }
    fn put(&mut self, key: &str, e: Entry) -> Result<(), Self::Error> {
        self.0.insert(key.to_string(), e);
        Ok(())
    }
    fn delete(&mut self, key: &str) -> Result<bool, Self::Error> {
        Ok(self.0.remove(key).is_some())
    }
    fn scan(&mut self, prefix: &str) -> Result<Vec<(String, Entry)>, Self::Error> {
        Ok(self
            .0
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, e)| (k.clone(), *e))
            .collect())
    }
}

/// Key prefixes.
pub const TRIPLET: &str = "t\n";
pub const CLIENT: &str = "c\n";

/// A triplet's key: network, sender, recipient (newline-separated: no
/// policy value holds one).
pub fn triplet_key(net: &str, sender: &str, recipient: &str) -> String {
    format!("{TRIPLET}{net}\n{sender}\n{recipient}")
}

pub fn client_key(net: &str) -> String {
    format!("{CLIENT}{net}")
}

/// A key as people read it (`show`): its parts separated by spaces.
pub fn key_text(key: &str) -> String {
    key.split('\n').skip(1).collect::<Vec<_>>().join(" ")
}

/// The operating system a client's SYN was taken for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Os {
    pub class: String,
    pub version: String,
    pub subtype: String,
}

impl Os {
    pub fn from_fingerprint(f: &palisade_filter::osfp::Fingerprint) -> Os {
        Os {
            class: f.class.clone(),
            version: f.version.clone(),
            subtype: f.subtype.clone(),
        }
    }

    /// Parse "Class [Version [Subtype]]" (as `os_label` and the control
    /// socket write it).
    pub fn parse(label: &str) -> Os {
        let mut it = label.splitn(3, ' ');
        Os {
            class: it.next().unwrap_or_default().to_string(),
            version: it.next().unwrap_or_default().to_string(),
            subtype: it.next().unwrap_or_default().to_string(),
        }
    }

    /// p0f's name (the class) and flavour (version and subtype).
    pub fn name(&self) -> &str {
        &self.class
    }
    pub fn flavour(&self) -> String {
        match (self.version.is_empty(), self.subtype.is_empty()) {
            (true, _) => String::new(),
            (false, true) => self.version.clone(),
            (false, false) => format!("{} {}", self.version, self.subtype),
        }
    }

    /// Does `name` ("Class", "Class Version" or "Class Version Subtype",
    /// any case) name this system, as pf's `os` does?
    pub fn is(&self, name: &str) -> bool {
        let mut full = self.class.clone();
        if name.eq_ignore_ascii_case(&full) {
            return true;
        }
        for part in [&self.version, &self.subtype] {
            if part.is_empty() {
                return false;
            }
            full.push(' ');
            full.push_str(part);
            if name.eq_ignore_ascii_case(&full) {
                return true;
            }
        }
        false
    }
}

impl fmt::Display for Os {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fl = self.flavour();
        if fl.is_empty() {
            write!(f, "{}", self.class)
        } else {
            write!(f, "{} {}", self.class, fl)
        }
    }
}

/// What to do with a client whose SYN matched no fingerprint (or was not
/// seen).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unknown {
    Deliver,
    Greylist,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// Seconds a triplet's retry must wait (postgrey: 300).
    pub delay: u64,
    /// A retry later than this after the first attempt starts over
    /// (postgrey: 2 days).
    pub retry_window: u64,
    /// Entries not seen for this long are forgotten (postgrey: 35 days).
    pub max_age: u64,
    /// Whitelist a client network after this many passed triplets
    /// (postgrey: 5; 0: never).
    pub auto_whitelist: u32,
    pub v4_prefix: u8,
    pub v6_prefix: u8,
    /// Systems to greylist (pf's `os` names).
    pub os: Vec<String>,
    /// ... except these.
    pub except_os: Vec<String>,
    pub unknown: Unknown,
    /// The header naming the system (`X-P0f-OS`), or none.
    pub header: Option<String>,
    /// The deferral's text after "4.7.1 ".
    pub text: String,
    /// Clients and recipients never greylisted (whitelist files).
    pub whitelist: crate::whitelist::Whitelist,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            delay: 300,
            retry_window: 2 * 86400,
            max_age: 35 * 86400,
            auto_whitelist: 5,
            v4_prefix: 24,
            v6_prefix: 64,
            os: vec!["Windows".into()],
            except_os: vec!["Windows Server".into()],
            unknown: Unknown::Deliver,
            header: Some("X-P0f-OS".into()),
            text: "Greylisted: please try again later".into(),
            whitelist: crate::whitelist::Whitelist::default(),
        }
    }
}

/// Why the answer is what it is (for the log and the counters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Why {
    /// Not a recipient-stage access policy request, or one without a
    /// client address: which.
    NotApplicable(&'static str),
    /// The client's system is not greylisted.
    OsNotListed,
    /// The client network is whitelisted (by hand or automatically).
    Whitelisted,
    /// The client or the recipient is in a whitelist file.
    Listed,
    /// The triplet passed before.
    KnownTriplet,
    /// The retry came after the delay: passes now (after `waited` s).
    Retried { waited: u64 },
    /// Deferred: `left` seconds until a retry passes.
    Greylisted { left: u64 },
}

/// As the service's log says it.
impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::NotApplicable(what) => write!(f, "{what}"),
            Why::OsNotListed => write!(f, "system not greylisted"),
            Why::Whitelisted => write!(f, "network whitelisted"),
            Why::Listed => write!(f, "in a whitelist file"),
            Why::KnownTriplet => write!(f, "passed before"),
            Why::Retried { waited } => write!(f, "retried after {waited} s: passes"),
            Why::Greylisted { left } => write!(f, "greylisted, {left} s left"),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub action: Action,
    pub why: Why,
    /// The client network the request was keyed by.
    pub net: String,
}

/// How many message instances are remembered for the once-per-message
/// header, and for how long.
const INSTANCES: usize = 65_536;
const INSTANCE_TTL: u64 = 3600;

/// The greylisting core: configuration and the messages headed so far.
#[derive(Debug)]
pub struct Greylist {
    pub cfg: Config,
    headed: HashMap<String, u64>,
    order: VecDeque<(u64, String)>,
}

impl Greylist {
    pub fn new(cfg: Config) -> Greylist {
        Greylist {
            cfg,
            headed: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The network a client address is keyed by.
    pub fn network(&self, client: &str) -> String {
        // An IPv4 client on a dual-stack socket (`::ffff:a.b.c.d`) is
        // keyed as the IPv4 client it is: its /64 is every such client.
        match client.parse::<IpAddr>().map(|a| a.to_canonical()) {
            Ok(IpAddr::V4(a)) => {
                let p = self.cfg.v4_prefix.min(32);
                let m = if p == 0 { 0 } else { u32::MAX << (32 - p) };
                format!("{}/{p}", std::net::Ipv4Addr::from(u32::from(a) & m))
            }
            Ok(IpAddr::V6(a)) => {
                let p = self.cfg.v6_prefix.min(128);
                let m = if p == 0 { 0 } else { u128::MAX << (128 - p) };
                format!("{}/{p}", std::net::Ipv6Addr::from(u128::from(a) & m))
            }
            Err(_) => client.to_string(),
        }
    }

    /// Is a client of this system greylisted?
    pub fn greylists(&self, os: Option<&Os>) -> bool {
        match os {
            None => self.cfg.unknown == Unknown::Greylist,
            Some(o) => {
                self.cfg.os.iter().any(|n| o.is(n)) && !self.cfg.except_os.iter().any(|n| o.is(n))
            }
        }
    }

    /// Answer one request, at `now` (seconds), for a client whose SYN was
    /// taken for `os` (None: unknown or not seen).
    pub fn decide<S: Store>(
        &mut self,
        now: u64,
        req: &Request,
        os: Option<&Os>,
        store: &mut S,
    ) -> Result<Decision, S::Error> {
        let client = req.get("client_address").unwrap_or_default();
        let net = self.network(client);
        let not_applicable = if req.get("request") != Some("smtpd_access_policy") {
            Some("not an access policy request")
        } else if !req
            .get("protocol_state")
            .is_none_or(|s| s.eq_ignore_ascii_case("RCPT"))
        {
            Some("not a recipient check")
        } else if client.is_empty() {
            Some("no client address in the request")
        } else {
            None
        };
        let why = if let Some(what) = not_applicable {
            Why::NotApplicable(what)
        } else if !self.cfg.whitelist.is_empty()
            && (self
                .cfg
                .whitelist
                .client(client, req.get("client_name").unwrap_or_default())
                || self
                    .cfg
                    .whitelist
                    .recipient(req.get("recipient").unwrap_or_default()))
        {
            Why::Listed
        } else if !self.greylists(os) {
            Why::OsNotListed
        } else {
            self.greylist(now, req, &net, store)?
        };
        let action = match &why {
            Why::Greylisted { left } => Action::DeferIfPermit(format!(
                "4.7.1 {} ({} s; {})",
                self.cfg.text,
                left,
                os.map_or("your system was not recognised".to_string(), |o| format!(
                    "your system looks like {o}"
                ))
            )),
            Why::NotApplicable(_) => Action::Dunno,
            _ => self.header(now, req, os),
        };
        Ok(Decision { action, why, net })
    }

    /// [`LAST_SEEN_STEP`], or half of `max-age` if that is shorter (an
    /// entry in use is then never older than `max-age`).
    fn last_seen_step(&self) -> u64 {
        LAST_SEEN_STEP.min(self.cfg.max_age / 2)
    }

    fn greylist<S: Store>(
        &mut self,
        now: u64,
        req: &Request,
        net: &str,
        store: &mut S,
    ) -> Result<Why, S::Error> {
        let ckey = client_key(net);
        let client = store.get(&ckey)?;
        if let Some(mut c) = client {
            if c.manual || (self.cfg.auto_whitelist > 0 && c.count >= self.cfg.auto_whitelist) {
                if now >= c.last.saturating_add(self.last_seen_step()) {
                    c.last = now;
                    store.put(&ckey, c)?;
                }
                return Ok(Why::Whitelisted);
            }
        }
        let sender = sender_key(req.get("sender").unwrap_or_default());
        let rcpt = normalize(req.get("recipient").unwrap_or_default());
        let tkey = triplet_key(net, &sender, &rcpt);
        let t = store.get(&tkey)?;
        let fresh = Entry {
            first: now,
            last: now,
            count: 0,
            manual: false,
        };
        let mut t = match t {
            // Too old to count: start over.
            Some(t)
                if now.saturating_sub(t.last) > self.cfg.max_age
                    || (t.count == 0 && now.saturating_sub(t.first) > self.cfg.retry_window) =>
            {
                store.put(&tkey, fresh)?;
                return Ok(Why::Greylisted {
                    left: self.cfg.delay,
                });
            }
            Some(t) => t,
            None => {
                store.put(&tkey, fresh)?;
                return Ok(Why::Greylisted {
                    left: self.cfg.delay,
                });
            }
        };
        let waited = now.saturating_sub(t.first);
        if t.count == 0 && waited < self.cfg.delay {
            if now >= t.last.saturating_add(self.last_seen_step()) {
                t.last = now;
                store.put(&tkey, t)?;
            }
            return Ok(Why::Greylisted {
                left: self.cfg.delay - waited,
            });
        }
        let first_pass = t.count == 0;
        t.count = t.count.saturating_add(1);
        t.last = now.max(t.last);
        store.put(&tkey, t)?;
        if first_pass {
            let mut c = client.unwrap_or(Entry {
                first: now,
                last: now,
                count: 0,
                manual: false,
            });
            c.count = c.count.saturating_add(1);
            c.last = now.max(c.last);
            store.put(&ckey, c)?;
            return Ok(Why::Retried { waited });
        }
        Ok(Why::KnownTriplet)
    }

    /// PREPEND the header for the first request of a message, DUNNO for
    /// the others.
    fn header(&mut self, now: u64, req: &Request, os: Option<&Os>) -> Action {
        let Some(h) = &self.cfg.header else {
            return Action::Dunno;
        };
        let value = os.map_or("unknown".to_string(), |o| o.to_string());
        let Some(instance) = req
            .get("instance")
            .filter(|i| !i.is_empty())
            .map(|i| cut(i, MAX_INSTANCE))
        else {
            return Action::Prepend(format!("{h}: {value}"));
        };
        while let Some((t, _)) = self.order.front() {
            if now.saturating_sub(*t) <= INSTANCE_TTL && self.order.len() < INSTANCES {
                break;
            }
            if let Some((t, i)) = self.order.pop_front() {
                if self.headed.get(&i) == Some(&t) {
                    self.headed.remove(&i);
                }
            }
        }
        if self.headed.contains_key(instance) {
            return Action::Dunno;
        }
        self.headed.insert(instance.to_string(), now);
        self.order.push_back((now, instance.to_string()));
        Action::Prepend(format!("{h}: {value}"))
    }

    /// Forget what was not seen for `max_age` (hand-whitelisted clients
    /// stay); how many entries went.
    pub fn expire<S: Store>(&self, now: u64, store: &mut S) -> Result<usize, S::Error> {
        let mut gone = 0;
        for prefix in [TRIPLET, CLIENT] {
            for (k, e) in store.scan(prefix)? {
                // A triplet never retried within the retry window starts
                // over anyway: bots leave many, keep none.
                let dead = prefix == TRIPLET
                    && e.count == 0
                    && now.saturating_sub(e.first) > self.cfg.retry_window;
                if dead || (!e.manual && now.saturating_sub(e.last) > self.cfg.max_age) {
                    store.delete(&k)?;
                    gone += 1;
                }
            }
        }
        Ok(gone)
    }

    /// Whitelist a client network by hand (`greylist whitelist`).
    /// `client` must be an address (its network is whitelisted); None
    /// otherwise.
    pub fn whitelist<S: Store>(
        &self,
        now: u64,
        client: &str,
        store: &mut S,
    ) -> Result<Option<String>, S::Error> {
        if client.parse::<IpAddr>().is_err() {
            return Ok(None);
        }
        let net = self.network(client);
        let key = client_key(&net);
        let mut e = store.get(&key)?.unwrap_or(Entry {
            first: now,
            last: now,
            count: 0,
            manual: true,
        });
        e.manual = true;
        store.put(&key, e)?;
        Ok(Some(net))
    }
}

/// The longest address kept in a key (RFC 5321 caps a path at 256
/// octets); longer ones are cut, so that hostile requests cannot make
/// keys of kilobytes.
pub const MAX_ADDRESS: usize = 320;
/// The longest message instance remembered (Postfix's are under 40 bytes).
const MAX_INSTANCE: usize = 64;

/// An address as keyed: lower case, without angle brackets, at most
/// `MAX_ADDRESS` bytes; the empty sender (bounces) stays empty.
pub fn normalize(addr: &str) -> String {
    let a = addr
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .to_ascii_lowercase();
    cut(&a, MAX_ADDRESS).to_string()
}

/// A sender as keyed: [`normalize`]d, then as postgrey keys it, so that
/// the senders of one mailing list or one BATV-signing system make one
/// triplet and not one per message. In the local part (the domain is
/// kept as it is):
/// - a BATV tag is dropped: `prvs=TAG=user` (and the order seen in the
///   wild, `prvs=user=TAG`) becomes `user`, the tag being the part that
///   starts with ten digits or lower-case letters (when both or neither
///   do, the third part is kept, as the standard puts the user there);
/// - an extension is dropped: `user+anything` becomes `user`;
/// - every number standing alone between non-word characters (VERP's
///   message and subscriber numbers, `bounce-1234`) becomes `#`.
///
/// An address without `@` (the empty sender of bounces included) is kept.
pub fn sender_key(addr: &str) -> String {
    let a = normalize(addr);
    let Some((user, domain)) = a.split_once('@') else {
        return a;
    };
    let mut user = user;
    if user.starts_with("prvs=") {
        let parts: Vec<&str> = user.split('=').collect();
        if parts.len() == 3 {
            let tag = |p: &str| {
                p.len() >= 10
                    && p.as_bytes()[..10]
                        .iter()
                        .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
            };
            user = if tag(parts[2]) && !tag(parts[1]) {
                parts[1]
            } else {
                parts[2]
            };
        }
    }
    if let Some((base, _)) = user.split_once('+') {
        user = base;
    }
    format!("{}@{domain}", hash_numbers(user))
}

/// Every run of ASCII digits with no word character (letter, digit,
/// underscore) on either side replaced by `#`.
fn hash_numbers(s: &str) -> String {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_ascii_digit() && (i == 0 || !word(chars[i - 1])) {
            let mut j = i;
            while j < chars.len() && chars[j].is_ascii_digit() {
                j += 1;
            }
            if j == chars.len() || !word(chars[j]) {
                out.push('#');
                i = j;
                continue;
            }
            // Digits that run into a word character: kept, up to it.
            out.extend(&chars[i..j]);
            i = j;
            continue;
        }
        out.push(c);
        i += 1;
    }
    out
}

/// At most `n` bytes of `s`, on a character boundary.
fn cut(s: &str, n: usize) -> &str {
    let mut n = n.min(s.len());
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    &s[..n]
}
