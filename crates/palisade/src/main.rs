//! The `palisade` command: the daemon and its tools.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use palisade_conf::host::HostModel;
use palisade_conf::{files, parse_input, Input, ParseOptions};

mod aside;
mod carp;
mod control;
mod daemon;
mod ftpmonitor;
mod ftpproxy;
mod greylist;
mod greystore;
mod isolation;
mod lab;
mod listen;
mod load;
mod logline;
mod man;
mod metrics;
mod notify;
mod ops;
mod pfsync;
mod privdrop;
mod replay;
mod request;

use request::{AnchorOp, Request, TableOp};
mod run;
mod snapshot;
mod statefile;
mod sysmodel;
mod worker;

#[derive(Parser)]
#[command(
    name = "palisade",
    version,
    about = "An OpenBSD-style firewall for Linux"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// ftp-proxy's page after its options: the pf.conf lines it needs, what
/// it loads, signals, privileges, IPv6.
const FTP_PROXY_MORE: &str = "\
EXAMPLES (pf.conf)
  Reverse mode, an FTP server inside (palisade ftp-proxy -R 192.0.2.10), older syntax:
    rdr-anchor \"ftp-proxy/*\"
    rdr pass on $ext_if proto tcp from any to $ext_if port 21 -> 127.0.0.1 port 8021
    nat-anchor \"ftp-proxy/*\"
    anchor \"ftp-proxy/*\"
  Clients inside, servers outside (palisade ftp-proxy), current syntax:
    anchor \"ftp-proxy/*\"
    pass in quick on $int_if inet proto tcp to port 21 divert-to 127.0.0.1 port 8021
    pass out on $ext_if proto tcp to port 21

THE RULES
  For each data connection a session loads, into ftp-proxy/PID.ID, a rule
  for each way with `max 1` (rdr-to and nat-to; or, when the ruleset calls
  the anchors from nat-anchor / rdr-anchor, rdr and nat rules and filter
  rules on the translated addresses), replaced at each negotiation and
  emptied when the session ends. `palisade anchor 'ftp-proxy/*' show`
  lists them.

SIGNALS AND PRIVILEGES
  SIGTERM, SIGINT and SIGHUP end every session, their anchors emptied. The
  sessions run as -u's user, chrooted to an empty directory; a monitor
  that stays root asks the daemon for them, and empties the anchors a
  crashed child left.

IPV6
  -6 listens on ::1 unless -b names an address; connections diverted from
  outside cannot reach ::1 on Linux, so give -b one of the firewall's
  IPv6 addresses. Only EPSV and EPRT carry IPv6.

See docs/ftp-proxy.md.";

#[derive(Subcommand)]
enum Cmd {
    /// Parse and validate a pf.conf, like `pfctl -o none -nvf FILE`.
    Check(CheckArgs),
    /// Run a capture through a pf.conf and show, per packet, what decided.
    Replay(ReplayCli),
    /// Show what the running daemon knows, like `pfctl -s`: rules (-v: with
    /// counters, like pfctl -vsr), states, info, interfaces, tables,
    /// anchors, timeouts, limits, memory, osfp (the names `os` takes, as
    /// pfctl -s osfp), neighbors (the ARP and neighbour discovery cache,
    /// as arp -an and ndp -an), fdb (the bridges' learnt addresses, as
    /// ifconfig bridge0 addr), routes (the routing table, as netstat -rn),
    /// labels (each labelled rule's counters, as pfctl -sl), sources (the
    /// source nodes, as pfctl -sS).
    Show {
        /// rules | states | info | interfaces | tables | anchors | timeouts | limits | memory | osfp | neighbors | fdb | routes | labels | sources
        what: String,
        /// More detail: counters per rule, per state, per interface (-vv:
        /// rule numbers too).
        #[arg(short = 'v', long, action = clap::ArgAction::Count)]
        verbose: u8,
        /// `show rules`: the rules of this anchor instead of the main
        /// ruleset ('*': every anchor's too); `show tables`: this anchor's
        /// own tables (without it, every table, an anchor's as ANCHOR/NAME);
        /// `show anchors`: the anchors directly below this one; `show
        /// labels`: the labels of this anchor's rules.
        #[arg(short = 'a', long, value_name = "ANCHOR")]
        anchor: Option<String>,
        /// Print JSON instead of pfctl's format.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sock: Sock,
    },
    /// Change a table in the running daemon, like `pfctl -t NAME -T ...`:
    /// add|delete|replace|show|flush|test ADDR..., expire SECONDS.
    Table {
        /// The table: a name of pf.conf's (`bad` for <bad>), or an
        /// anchor's table as ANCHOR/NAME (`ssh/bruteforce`: pfctl -a ssh
        /// -t bruteforce), for one a `load anchor` file or an `anchor
        /// load` file defines, or made anew in the anchor.
        name: String,
        /// add | delete | replace | show | flush | test | expire
        op: String,
        /// Addresses or networks (192.0.2.1, 2001:db8::/32, !192.0.2.5);
        /// for expire, the age in seconds.
        args: Vec<String>,
        /// add, delete, replace, test: also the addresses in this file
        /// (`-`: standard input), as pfctl -T add -f FILE reads it: words
        /// separated by blanks or lines, `#` to the end of a line a
        /// comment. All sent as one change.
        #[arg(short = 'f', value_name = "FILE")]
        file: Option<String>,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sock: Sock,
    },
    /// Rules of an anchor in the running daemon, like `pfctl -a NAME`:
    /// load -f FILE | flush | show [-v].
    Anchor {
        name: String,
        /// load | flush | show
        op: String,
        /// For load: the rules (`-` for standard input).
        #[arg(short = 'f', value_name = "FILE")]
        file: Option<String>,
        #[arg(short = 'v', long, action = clap::ArgAction::Count)]
        verbose: u8,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sock: Sock,
    },
    /// States in the running daemon: `state kill --host A [--to B] |
    /// --id ID | --label L | --source-nodes A` (like pfctl -k), `state
    /// flush` (pfctl -F states).
    State {
        #[command(subcommand)]
        action: StateCmd,
    },
    /// Reload pf.conf in the running daemon: all or nothing, states kept.
    Reload {
        /// Load this file instead of the configured pf.conf (a later plain
        /// reload or SIGHUP reads the configured one again).
        #[arg(short = 'f', value_name = "FILE")]
        file: Option<PathBuf>,
        #[command(flatten)]
        sock: Sock,
    },
    /// Logged packets from the running daemon, one line each, as they come.
    Log {
        /// Keep printing as packets are logged: what `palisade log` does
        /// with or without it (the pflog file itself is read with
        /// `tcpdump -n -e -r FILE`).
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        sock: Sock,
    },
    /// CARP in the running daemon, like ifconfig(8) on OpenBSD: show,
    /// demote|undemote GROUP [N], group show [GROUP], group add|delete
    /// IFACE GROUP, set IFACE advskew N [advbase N], preempt on|off.
    Carp {
        #[command(subcommand)]
        action: CarpCmd,
    },
    /// pfsync in the running daemon: `sync show [--json]` (the sync
    /// interface and peer, the last bulk update, messages sent and
    /// received, refused packets).
    Sync {
        #[command(subcommand)]
        action: SyncCmd,
    },
    /// The bridges' learning tables in the running daemon, as OpenBSD's
    /// `ifconfig bridge0 flush` and `deladdr`: `bridge flush BRIDGE`
    /// forgets every learnt address (frames flood until their hosts are
    /// heard again), `bridge deladdr BRIDGE MAC` one of them. Static
    /// entries (palisade.toml) stay. `show fdb` lists them.
    Bridge {
        #[command(subcommand)]
        action: BridgeCmd,
    },
    /// Passive OS fingerprints in the running daemon: `osfp show
    /// ADDRESS[:PORT]` says what the host's SYNs (or that connection's)
    /// were taken for (needs `[osfp]` in palisade.toml).
    Osfp {
        #[command(subcommand)]
        action: OsfpCmd,
    },
    /// Greylisting of mail by the sender's operating system: a Postfix
    /// policy service (`check_policy_service inet:127.0.0.1:10023`) that
    /// defers a first attempt only from systems listed in `[greylist]`
    /// (desktop Windows by default), delivers the others at once, and adds
    /// a header naming the system. `run`, `show`, `whitelist`, `delete`.
    Greylist {
        #[command(subcommand)]
        action: GreylistCmd,
    },
    /// ftp-proxy(8): the FTP proxy beside the daemon. pf.conf brings
    /// FTP control connections to it (`rdr-to 127.0.0.1 port 8021`, or the
    /// older `rdr pass ... -> 127.0.0.1 port 8021`, or `divert-to`); for
    /// each data connection a session announces it loads the rules that
    /// pass exactly that connection into `ftp-proxy/ID`, and empties the
    /// anchor when the session ends. Runs in the foreground.
    #[command(
        name = "ftp-proxy",
        args_override_self = true,
        after_long_help = FTP_PROXY_MORE
    )]
    FtpProxy(ftpproxy::Options),
    /// The scenarios on this machine, in network namespaces (needs
    /// root): S1 by default, S2, S3, S5 and S6 with `up --scenario`.
    Lab {
        #[command(subcommand)]
        action: LabCmd,
    },
    /// Run the firewall on the ports the configuration names. It logs
    /// to the journal under systemd, else to standard error, at level
    /// info; RUST_LOG (or PALISADE_LOG) = error, warn, info, debug or
    /// trace chooses another.
    Run {
        /// The daemon's configuration (TOML).
        #[arg(
            short = 'c',
            value_name = "FILE",
            default_value = "/etc/palisade/palisade.toml"
        )]
        config: PathBuf,
        /// Only check the configuration and its pf.conf, touch nothing
        /// (like `pfctl -n`).
        #[arg(short = 'n')]
        dry_run: bool,
    },
    /// Print a shell completion script (bash: save it as
    /// /usr/share/bash-completion/completions/palisade; zsh: as _palisade
    /// in a directory of $fpath).
    Completions {
        /// bash | zsh | fish | elvish | powershell
        shell: clap_complete::Shell,
    },
    /// (packaging) Write the manual pages into DIR: palisade(8), one page
    /// per subcommand, palisade.toml(5) and palisade-pf.conf(5).
    #[command(hide = true)]
    Man {
        /// Where to write them (created if missing).
        dir: PathBuf,
    },
}

/// The daemon's control socket.
#[derive(clap::Args)]
struct Sock {
    /// The daemon's control socket (default: `control` in
    /// /etc/palisade/palisade.toml when it sets one, else
    /// /run/palisade.sock).
    #[arg(short = 's', long = "socket", value_name = "SOCKET")]
    socket: Option<PathBuf>,
}

impl Sock {
    /// The socket given, else the one the installed palisade.toml names
    /// (`control`), else the default: a daemon started with the packaged
    /// configuration is found without `-s`.
    fn path(&self) -> PathBuf {
        if let Some(s) = &self.socket {
            return s.clone();
        }
        control_in(Path::new("/etc/palisade/palisade.toml"))
            .unwrap_or_else(|| PathBuf::from(palisade_net::config::DEFAULT_CONTROL))
    }
}

/// The control socket a palisade.toml names (`control`, absolute), if it
/// can be read and does.
fn control_in(config: &Path) -> Option<PathBuf> {
    std::fs::read_to_string(config)
        .ok()?
        .parse::<toml::Table>()
        .ok()?
        .get("control")?
        .as_str()
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

#[derive(Subcommand)]
enum StateCmd {
    /// Remove states: those from a host or network (and to another) as
    /// pfctl -k, one by its id (as `show states -vv` prints it, or
    /// pfctl's ID/CREATORID), or those of the rules with a label (pfctl
    /// -k label -k LABEL).
    Kill {
        /// The states from this host or network (pfctl -k HOST).
        #[arg(long, value_name = "ADDR[/BITS]")]
        host: Option<String>,
        /// With --host: only those to this host or network (pfctl -k
        /// HOST -k DEST).
        #[arg(long, value_name = "ADDR[/BITS]", requires = "host")]
        to: Option<String>,
        /// The state with this id (pfctl -k id -k ID).
        #[arg(long, value_name = "ID[/CREATORID]", conflicts_with_all = ["host", "label"])]
        id: Option<String>,
        /// The states of the rules with this label (pfctl -k label -k
        /// LABEL).
        #[arg(long, value_name = "LABEL", conflicts_with = "host")]
        label: Option<String>,
        /// Forget the source nodes of these sources (pfctl -K): their
        /// counters for max-src-* start again; their states stay.
        #[arg(long, value_name = "ADDR[/BITS]", conflicts_with_all = ["host", "id", "label"])]
        source_nodes: Option<String>,
        /// Print the answer as JSON (the states' ids among it).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sock: Sock,
    },
    /// Remove every state (pfctl -F states).
    Flush {
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sock: Sock,
    },
}

#[derive(Subcommand)]
enum CarpCmd {
    /// Every CARP interface as `ifconfig carp0` shows it (state, carpdev,
    /// vhid, advbase, advskew, demotion, addresses, the master heard, the
    /// last transition and why), the groups' demote counts and the
    /// advertisements refused.
    Show {
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sock: Sock,
    },
    /// Raise a group's demote counter (`ifconfig -g GROUP carpdemote N`;
    /// N defaults to 1): its CARP interfaces advertise a worse priority,
    /// and a backup with preemption takes over. `carp demote carp 128`
    /// hands every vhid over.
    Demote {
        group: String,
        #[arg(default_value_t = 1, value_parser = clap::value_parser!(u8))]
        count: u8,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sock: Sock,
    },
    /// Lower a group's demote counter (`ifconfig -g GROUP -carpdemote N`).
    Undemote {
        group: String,
        #[arg(default_value_t = 1, value_parser = clap::value_parser!(u8))]
        count: u8,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sock: Sock,
    },
    /// Interface groups: show [GROUP] ("carp demote count N"), add IFACE
    /// GROUP, delete IFACE GROUP.
    Group {
        #[command(subcommand)]
        action: CarpGroupCmd,
    },
    /// Turn preemption on or off now (`sysctl net.inet.carp.preempt=1|0`):
    /// whether a backup takes over from a master it outranks. Until the
    /// next start: `preempt` under [carp-options] in palisade.toml keeps
    /// it.
    Preempt {
        /// on | off (also 1 | 0)
        state: String,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sock: Sock,
    },
    /// Change a CARP interface's advskew or advbase now (`ifconfig carp0
    /// advskew 100`): `carp set carp0 advskew 100 [advbase 1]`. A master
    /// advertises it at once, so a backup that now ranks better takes
    /// over if it preempts. Until the next start: put it in palisade.toml
    /// to keep it.
    Set {
        iface: String,
        /// `advskew N` and/or `advbase N`.
        #[arg(num_args = 2.., value_names = ["SETTING", "VALUE"])]
        settings: Vec<String>,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sock: Sock,
    },
}

#[derive(Subcommand)]
enum BridgeCmd {
    /// Forget every address the bridge learnt (static entries stay).
    Flush {
        /// The bridge (its [[bridge]] name).
        bridge: String,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sock: Sock,
    },
    /// Forget one learnt address.
    Deladdr {
        bridge: String,
        /// The MAC address (02:00:00:00:01:01).
        mac: String,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sock: Sock,
    },
}

#[derive(Subcommand)]
enum SyncCmd {
    /// The sync interface and peer, the bulk update, the counters.
    Show {
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sock: Sock,
    },
}

/// palisade.toml, for `greylist`.
#[derive(clap::Args)]
struct GreyConf {
    /// The configuration with the `[greylist]` section.
    #[arg(
        short = 'c',
        value_name = "FILE",
        default_value = "/etc/palisade/palisade.toml"
    )]
    config: PathBuf,
}

#[derive(Subcommand)]
enum GreylistCmd {
    /// Run the policy service in the foreground.
    #[command(
        long_about = "Run the policy service in the foreground: a Postfix policy service \
(check_policy_service) that greylists mail from clients whose TCP SYN looked like one of \
`os` (desktop Windows by default), configured by the [greylist] section of palisade.toml \
(man palisade.toml, /usr/share/doc/palisade/docs/greylist.md).\n\n\
Postfix (main.cf): smtpd_recipient_restrictions = ..., check_policy_service \
{ inet:127.0.0.1:10023, default_action=DUNNO } (DUNNO: mail is delivered while the \
service is down, instead of Postfix's 451). SpamAssassin: \
/usr/share/doc/palisade/contrib/spamassassin/palisade-p0f.cf scores the X-P0f-OS: header.\n\n\
Signals: SIGTERM or SIGINT stop it cleanly (the database checkpointed, the sockets' \
files removed); SIGHUP (systemctl reload) reads [greylist] and the whitelist files \
again (what needs a restart, such as listen or database, is said and kept).\n\n\
Files: the database (`database`, /var/lib/palisade/greylist.redb) and its journal \
(FILE.journal), crash-safe: a kill -9 loses no answered decision; the admin socket \
(`admin-socket`) for `palisade greylist show|whitelist|delete`; the p0f socket \
(`p0f-socket`) answering p0f's API.\n\n\
Log (standard error; the journal under systemd): one line per decision: client, \
system, sender -> recipient, why => the answer sent. A database that fails (a full \
disk) makes answers DUNNO (logged, at most one error line per 10 s) and is opened \
again by itself once it can be."
    )]
    Run {
        #[command(flatten)]
        conf: GreyConf,
    },
    /// The client networks and triplets the database holds.
    Show {
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        conf: GreyConf,
    },
    /// Whitelist a client's network by hand (never greylisted, never
    /// expires): CLIENT is an address, or its network (ADDRESS/BITS, at
    /// most as large as ipv4-prefix / ipv6-prefix).
    Whitelist {
        client: String,
        #[command(flatten)]
        conf: GreyConf,
    },
    /// Forget a client's network (its whitelist entry and triplets), or
    /// one triplet (CLIENT SENDER RECIPIENT); CLIENT as for whitelist.
    Delete {
        client: String,
        sender: Option<String>,
        recipient: Option<String>,
        #[command(flatten)]
        conf: GreyConf,
    },
}

#[derive(Subcommand)]
enum OsfpCmd {
    /// What a host (ADDRESS) or one connection (ADDRESS:PORT, [v6]:PORT)
    /// was seen as: the system, the SYN's signature, distance, when.
    Show {
        target: String,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sock: Sock,
    },
}

/// ADDRESS, ADDRESS:PORT or [IPv6]:PORT.
fn addr_port(s: &str) -> Option<(std::net::IpAddr, Option<u16>)> {
    if let Ok(a) = s.parse() {
        return Some((a, None));
    }
    s.parse::<std::net::SocketAddr>()
        .ok()
        .map(|sa| (sa.ip(), Some(sa.port())))
}

#[derive(Subcommand)]
enum CarpGroupCmd {
    /// A group's demote count (`ifconfig -g GROUP`), or every group's.
    Show {
        group: Option<String>,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sock: Sock,
    },
    /// Put a CARP interface in a group (`ifconfig carp0 group GROUP`).
    Add {
        iface: String,
        group: String,
        #[command(flatten)]
        sock: Sock,
    },
    /// Take a CARP interface out of a group (`ifconfig carp0 -group GROUP`).
    Delete {
        iface: String,
        group: String,
        #[command(flatten)]
        sock: Sock,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Scenario {
    S1,
    S2,
    S3,
    S5,
    S6,
}

#[derive(Subcommand)]
enum LabCmd {
    /// Build the lab, start Palisade, show what passes and what is blocked
    /// (S1, S2), or which firewall is master (S3).
    Up {
        /// A pf.conf to load instead of the lab's example (S1).
        #[arg(long, value_name = "FILE")]
        rules: Option<PathBuf>,
        /// Prefix of the namespace names (several labs side by side):
        /// letters, digits, '-', '_'.
        #[arg(long, default_value = "lab")]
        prefix: String,
        /// s1: a bridge firewall for hosted machines; s2: a router for VMs
        /// on a VLAN (802.1Q tagged by Palisade), with proxy ARP for their
        /// public addresses; s3: two firewalls
        /// sharing virtual gateways (CARP), a host on each side; s5: an
        /// FTP server behind the firewall (ftp-proxy), a client outside
        /// (needs vsftpd and curl); s6: a mail server greylisting by the
        /// sender's OS, a Windows-shaped and a Linux sender (needs
        /// postfix, swaks, spamassassin).
        #[arg(long, value_enum, default_value = "s1")]
        scenario: Scenario,
    },
    /// (S3) Kill the master with a ping and a 100 MiB download running
    /// across the pair, show how long the LAN was cut off, bring it back,
    /// and say whether the download survived both moves (pfsync).
    Failover {
        #[arg(long, default_value = "lab")]
        prefix: String,
        /// SIGTERM (a graceful stop: the master bows out) instead of kill -9.
        #[arg(long)]
        graceful: bool,
    },
    /// (S3) kill -9 a firewall's Palisade (fw1 or fw2).
    Kill {
        fw: String,
        #[arg(long, default_value = "lab")]
        prefix: String,
    },
    /// (S3) Stop a firewall's Palisade with SIGTERM (its masters bow out).
    Stop {
        fw: String,
        #[arg(long, default_value = "lab")]
        prefix: String,
    },
    /// (S3) Start a firewall's Palisade again (restore it).
    Start {
        fw: String,
        #[arg(long, default_value = "lab")]
        prefix: String,
    },
    /// (S3) `carp demote carp N` on a firewall (N defaults to 128: hand
    /// everything over).
    Demote {
        fw: String,
        #[arg(default_value_t = 128)]
        count: u8,
        #[arg(long, default_value = "lab")]
        prefix: String,
    },
    /// (S3) `carp undemote carp N` on a firewall.
    Undemote {
        fw: String,
        #[arg(default_value_t = 128)]
        count: u8,
        #[arg(long, default_value = "lab")]
        prefix: String,
    },
    /// List the hosts (addresses, gateways, servers) and the firewall's
    /// interfaces as pf.conf names them, then show again what passes and
    /// what is blocked. S2: whether every process the lab started still
    /// runs, then the checks again. S5 and S6: whether every process the lab started
    /// still runs, then its hosts and what to try.
    Status {
        /// The lab's prefix (as given to `lab up`).
        #[arg(long, default_value = "lab")]
        prefix: String,
        /// Print only a JSON document of the hosts and the firewall (S2,
        /// S5, S6: of the lab's processes).
        #[arg(long)]
        json: bool,
    },
    /// Run a command on one of the lab's hosts (in its namespace), with
    /// this terminal; exits with the command's status.
    #[command(after_help = "Example: palisade lab exec lan -- curl http://198.18.200.1/")]
    Exec {
        /// The lab's prefix (as given to `lab up`).
        #[arg(long, default_value = "lab")]
        prefix: String,
        /// The host: S1's wan, fw, sw, dmz1, dmz2 or lan; S2's up, router,
        /// sw, vm1, vm2 or vm3; S3's lan, wan,
        /// fw1, fw2 or sw; S5's outside, gate or ftpsrv; S6's win, linux
        /// or mail.
        host: String,
        /// The command and its arguments (after `--`).
        #[arg(
            required = true,
            trailing_var_arg = true,
            allow_hyphen_values = true,
            value_name = "COMMAND"
        )]
        command: Vec<String>,
    },
    /// Stop Palisade and every process of the lab, remove its namespaces
    /// and its files.
    Down {
        /// The lab's prefix (as given to `lab up`).
        #[arg(long, default_value = "lab")]
        prefix: String,
    },
    /// (internal) A server for the lab's hosts.
    #[command(hide = true)]
    Serve { addr: String, kind: String },
    /// (internal) S2's VM NIC: TAP device TAP, its frames on port TRUNK
    /// tagged with VLAN VID.
    #[command(hide = true)]
    VlanAdapter {
        trunk: String,
        tap: String,
        vid: u16,
    },
}

fn control_cmd(socket: &std::path::Path, req: Request, json: bool) -> ExitCode {
    let req = req.to_json();
    use std::io::Write;
    // A listing in parts is printed as it comes: with --json its items
    // as one array, laid out as serde_json's pretty printer would.
    let mut items = 0usize;
    let r = control::request_parts(socket, req, |p| {
        let mut out = std::io::stdout().lock();
        if json {
            for it in p["items"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
                let s = serde_json::to_string_pretty(it).unwrap_or_default();
                let _ = out.write_all(if items == 0 { b"[\n" } else { b",\n" });
                let indented: Vec<String> = s.lines().map(|l| format!("  {l}")).collect();
                let _ = out.write_all(indented.join("\n").as_bytes());
                items += 1;
            }
        } else {
            let _ = out.write_all(p["text"].as_str().unwrap_or("").as_bytes());
        }
    });
    match r {
        Ok(a) if a["parts"] == true => {
            if json {
                println!("{}", if items == 0 { "[]" } else { "\n]" });
            }
            ExitCode::SUCCESS
        }
        Ok(a) => print_answer(&a, json, true),
        Err(e) => {
            eprintln!("palisade: {e}");
            ExitCode::from(1)
        }
    }
}

/// What the CLI prints of an answer (`{"ok", "text", "data"}`): its
/// stdout, its stderr, and whether it succeeded. A refusal has no `data`:
/// with --json its reason goes to stderr and stdout stays empty (printing
/// `data` showed `null` and hid the reason); without, its text goes to
/// stderr too (it went to stdout, where a script reading the answer took
/// the error for one: a soak's finding). `pretty`: `data` laid out by serde_json's pretty
/// printer (the control socket's commands) or on one line (greylist's).
fn answer_output(a: &serde_json::Value, json: bool, pretty: bool) -> (String, String, bool) {
    let ok = a["ok"].as_bool() == Some(true);
    let text = a["text"].as_str().unwrap_or("").to_string();
    if !json && ok {
        (text, String::new(), ok)
    } else if !json {
        (String::new(), text, ok)
    } else if ok {
        let data = if pretty {
            serde_json::to_string_pretty(&a["data"]).unwrap_or_default()
        } else {
            a["data"].to_string()
        };
        (data + "\n", String::new(), ok)
    } else {
        let mut reason = text;
        if reason.trim().is_empty() {
            reason = "the request failed (the answer gave no reason)\n".into();
        }
        // An answer that is a "no" with data (`table NAME test` where not
        // every address matches) still prints its data.
        let data = if a["data"].is_null() {
            String::new()
        } else if pretty {
            serde_json::to_string_pretty(&a["data"]).unwrap_or_default() + "\n"
        } else {
            a["data"].to_string() + "\n"
        };
        (data, reason, ok)
    }
}

fn print_answer(a: &serde_json::Value, json: bool, pretty: bool) -> ExitCode {
    let (out, err, ok) = answer_output(a, json, pretty);
    print!("{out}");
    eprint!("{err}");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// The lab's pass/block checks; failure if one is not as expected under
/// the example pf.conf (another one, from `--rules` or edited, is the
/// user's experiment: its differences are shown, not failed).
fn checks(l: &lab::Lab) -> ExitCode {
    let example = l.runs_example();
    let ok = l.show(example);
    if !example {
        println!("  (This lab runs your pf.conf, not the example's: the lines say what happened, with no expectations.)");
        ExitCode::SUCCESS
    } else if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn lab_cmd(a: LabCmd) -> ExitCode {
    let fail = |what: &str, e: &str, code: u8| {
        eprintln!("palisade lab {what}: {e}");
        ExitCode::from(code)
    };
    let (what, prefix) = match &a {
        LabCmd::Up { prefix, .. } => ("up", prefix),
        LabCmd::Status { prefix, .. } => ("status", prefix),
        LabCmd::Exec { prefix, .. } => ("exec", prefix),
        LabCmd::Down { prefix } => ("down", prefix),
        LabCmd::Failover { prefix, .. } => ("failover", prefix),
        LabCmd::Kill { prefix, .. } => ("kill", prefix),
        LabCmd::Stop { prefix, .. } => ("stop", prefix),
        LabCmd::Start { prefix, .. } => ("start", prefix),
        LabCmd::Demote { prefix, .. } => ("demote", prefix),
        LabCmd::Undemote { prefix, .. } => ("undemote", prefix),
        LabCmd::Serve { addr, kind } => {
            return match lab::serve(addr, kind) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail("serve", &e, 1),
            }
        }
        LabCmd::VlanAdapter { trunk, tap, vid } => {
            return match lab::s2::vlan_adapter(trunk, tap, *vid) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail("vlan-adapter", &e, 1),
            }
        }
    };
    let l = match lab::Lab::new(prefix) {
        Ok(l) => l,
        Err(e) => return fail(what, &e, 2),
    };
    // The S3 lab's own commands.
    let s3_only = matches!(
        a,
        LabCmd::Failover { .. }
            | LabCmd::Kill { .. }
            | LabCmd::Stop { .. }
            | LabCmd::Start { .. }
            | LabCmd::Demote { .. }
            | LabCmd::Undemote { .. }
    );
    if s3_only && !l.is_s3() {
        return fail(
            what,
            &format!(
                "no S3 lab '{}' is up (palisade lab up --scenario s3{})",
                l.prefix,
                if l.prefix == "lab" {
                    String::new()
                } else {
                    format!(" --prefix {}", l.prefix)
                }
            ),
            1,
        );
    }
    let done = |r: Result<String, String>| match r {
        Ok(t) => {
            println!("{t}");
            // An advertisement or two later, the election has settled.
            std::thread::sleep(std::time::Duration::from_millis(500));
            l.print_carp();
            ExitCode::SUCCESS
        }
        Err(e) => fail(what, &e, 1),
    };
    match a {
        LabCmd::Up {
            scenario: Scenario::S3,
            rules,
            ..
        } => {
            if rules.is_some() {
                return fail(
                    what,
                    "--rules is for scenario s1 (the S3 lab loads examples/s3/pf.conf)",
                    2,
                );
            }
            // S3's own tools (ping, curl), before anything is built: as
            // S5 and S6 check theirs in up_scenario.
            if let Err(e) =
                lab::check_tools(&lab::S3_TOOLS, lab::S3_INSTALL).and_then(|()| l.up_s3())
            {
                return fail(what, &e, 1);
            }
            println!("The S3 lab is up.");
            l.print_s3();
            ExitCode::SUCCESS
        }
        LabCmd::Up {
            scenario: scenario @ (Scenario::S2 | Scenario::S5 | Scenario::S6),
            rules,
            ..
        } => {
            // (its name, how it is built, what `up` says before its checks,
            // the checks, what to try)
            type Run = fn(&lab::Lab) -> Result<(), String>;
            type Show = fn(&lab::Lab) -> bool;
            type Print = fn(&lab::Lab);
            let (name, up, intro, show, print): (&str, Run, &str, Show, Print) = match scenario {
                Scenario::S2 => (
                    "S2",
                    lab::Lab::up_s2,
                    "The S2 lab is up.\n",
                    lab::Lab::show_s2,
                    lab::Lab::print_s2,
                ),
                Scenario::S5 => (
                    "S5",
                    lab::Lab::up_s5,
                    "The S5 lab is up. Two downloads through the firewall:",
                    lab::Lab::show_s5,
                    lab::Lab::print_s5,
                ),
                _ => (
                    "S6",
                    lab::Lab::up_s6,
                    "The S6 lab is up. Mail from both senders:",
                    lab::Lab::show_s6,
                    lab::Lab::print_s6,
                ),
            };
            if rules.is_some() {
                let why = match scenario {
                    Scenario::S6 => "(the S6 lab has no firewall)".to_string(),
                    _ => format!(
                        "(the {name} lab loads examples/{}/pf.conf)",
                        name.to_lowercase()
                    ),
                };
                return fail(what, &format!("--rules is for scenario s1 {why}"), 2);
            }
            if let Err(e) = up(&l) {
                return fail(what, &e, 1);
            }
            println!("{intro}");
            let ok = show(&l);
            println!();
            print(&l);
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        LabCmd::Status { json, .. } if l.is_s2() => {
            let mut ok = l.status_processes("s2", json);
            if !json {
                println!();
                ok &= l.show_s2();
                println!();
                l.print_s2();
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        LabCmd::Exec { host, command, .. } if l.is_s2() => {
            if let Err(e) = lab::Lab::check_host_s2(&host) {
                return fail(what, &e, 2);
            }
            fail(what, &l.exec(&host, &command), 1)
        }
        LabCmd::Status { json, .. } if l.is_s5() || l.is_s6() => {
            let s6 = l.is_s6();
            let ok = l.status_processes(if s6 { "s6" } else { "s5" }, json);
            if !json && s6 {
                l.print_s6();
            } else if !json {
                l.print_s5();
            }
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        LabCmd::Exec { host, command, .. } if l.is_s6() => {
            if let Err(e) = lab::Lab::check_host_s6(&host) {
                return fail(what, &e, 2);
            }
            fail(what, &l.exec(&host, &command), 1)
        }
        LabCmd::Exec { host, command, .. } if l.is_s5() => {
            if let Err(e) = lab::Lab::check_host_s5(&host) {
                return fail(what, &e, 2);
            }
            fail(what, &l.exec(&host, &command), 1)
        }
        LabCmd::Failover { graceful, .. } => {
            match lab::check_tools(&lab::S3_TOOLS, lab::S3_INSTALL)
                .and_then(|()| l.failover(graceful))
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(what, &e, 1),
            }
        }
        LabCmd::Kill { fw, .. } => done(
            l.signal_fw(&fw, libc::SIGKILL)
                .map(|()| format!("{fw}: killed (kill -9)")),
        ),
        LabCmd::Stop { fw, .. } => done(
            l.signal_fw(&fw, libc::SIGTERM)
                .map(|()| format!("{fw}: stopped (SIGTERM)")),
        ),
        LabCmd::Start { fw, .. } => {
            done(l.start_fw(&fw).map(|()| format!("{fw}: Palisade started")))
        }
        LabCmd::Demote { fw, count, .. } => done(l.demote_fw(&fw, count as i32)),
        LabCmd::Undemote { fw, count, .. } => match l.demote_fw(&fw, -(count as i32)) {
            Ok(t) => {
                println!("{t}");
                // The backup gives way at its next advertisement (about
                // 1.4 s at advbase 1): show the state once fw has taken
                // its vhids back, or the bound passed.
                l.settle_undemote(&fw, lab::UNDEMOTE_SETTLE);
                l.print_carp();
                ExitCode::SUCCESS
            }
            Err(e) => fail(what, &e, 1),
        },
        LabCmd::Status { json, .. } if l.is_s3() => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&l.status_s3()).unwrap_or_default()
                );
            } else {
                l.print_s3();
            }
            ExitCode::SUCCESS
        }
        LabCmd::Exec { host, command, .. } if l.is_s3() => {
            if let Err(e) = lab::Lab::check_host_s3(&host) {
                return fail(what, &e, 2);
            }
            fail(what, &l.exec(&host, &command), 1)
        }
        LabCmd::Up { rules, .. } => {
            if let Err(e) = l.up(rules.as_deref()) {
                return fail(what, &e, 1);
            }
            println!("The lab is up.");
            match l.status() {
                Ok(s) => s.print(),
                Err(e) => eprintln!("palisade lab up: status: {e}"),
            }
            println!();
            let ok = checks(&l);
            l.print_help();
            ok
        }
        LabCmd::Status { json, .. } => {
            let s = match l.status() {
                Ok(s) => s,
                Err(e) => return fail(what, &e, 1),
            };
            if json {
                return match serde_json::to_string_pretty(&s) {
                    Ok(j) => {
                        println!("{j}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(what, &e.to_string(), 1),
                };
            }
            s.print();
            println!();
            checks(&l)
        }
        LabCmd::Exec { host, command, .. } => {
            if !l.exists() {
                return fail(what, &l.not_up(), 1);
            }
            if let Err(e) = lab::check_host(&host) {
                return fail(what, &e, 2);
            }
            // Returns only if the command could not be started.
            fail(what, &l.exec(&host, &command), 1)
        }
        LabCmd::Down { .. } => {
            // (Run whatever it finds: a lab that failed half-way up has
            // no firewall, and still namespaces and processes.)
            let was_up = l.exists();
            match l.down() {
                Ok(()) if was_up => {
                    println!("The lab '{}' is down.", l.prefix);
                    ExitCode::SUCCESS
                }
                Ok(()) => {
                    println!("No lab '{}' was up; nothing of it is left.", l.prefix);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(what, &e, 1),
            }
        }
        LabCmd::Serve { .. } | LabCmd::VlanAdapter { .. } => ExitCode::SUCCESS, // (run above)
    }
}

#[derive(clap::Args)]
struct ReplayCli {
    /// The pf.conf.
    #[arg(short = 'f', value_name = "FILE")]
    file: PathBuf,
    /// Host model for interface names and groups (docs/host-model.md).
    #[arg(long, value_name = "FILE")]
    host_model: Option<PathBuf>,
    /// The capture (pcap or pcapng).
    #[arg(long, value_name = "FILE")]
    pcap: PathBuf,
    /// Interface name, when the capture does not name it.
    #[arg(long, value_name = "NAME")]
    iface: Option<String>,
    /// Direction (in|out), when the capture does not record it.
    #[arg(long, value_name = "in|out")]
    dir: Option<String>,
    /// Write the packets that would leave, and those the filter generates,
    /// to this pcap file (raw IP).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Write the packets that rules log (`log`, `log (all)`) to this pcap
    /// file with pflog headers (DLT_PFLOG), readable by tcpdump and tshark.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// One JSON object per packet.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
struct CheckArgs {
    /// Print the normalized ruleset (-vv adds rule numbers).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Define a macro, overriding the file's definition.
    #[arg(short = 'D', value_name = "NAME=VALUE")]
    define: Vec<String>,
    /// The pf.conf to read; `-` for standard input. Without it, the one
    /// the palisade.toml in use names (`-c`, or
    /// /etc/palisade/palisade.toml when there is one), else
    /// /etc/palisade/pf.conf.
    #[arg(short = 'f', value_name = "FILE")]
    file: Option<String>,
    /// Resolve interfaces, groups, users, host names, and the port and
    /// protocol names OpenBSD's databases do not know, with this model of
    /// another machine instead of this one (see docs/host-model.md).
    #[arg(long, value_name = "FILE")]
    host_model: Option<PathBuf>,
    /// Resolve interface names as the daemon with this palisade.toml
    /// does (its interfaces, bridges, CARP interfaces and their
    /// addresses). Without it or --host-model,
    /// /etc/palisade/palisade.toml when there is one, else this machine.
    #[arg(short = 'c', value_name = "CONFIG", conflicts_with = "host_model")]
    config: Option<PathBuf>,
    /// Load into this anchor (accepted for pfctl compatibility).
    #[arg(short = 'a', value_name = "ANCHOR")]
    anchor: Option<String>,
    /// Optimization level (accepted for pfctl compatibility; only `none`).
    #[arg(short = 'o', value_name = "LEVEL")]
    optimize: Option<String>,
    /// Print exactly what pfctl prints: no warnings about features Palisade
    /// parses but does not enforce, nor about port or protocol names this
    /// host's databases give other numbers than OpenBSD's.
    #[arg(long)]
    pfctl_compat: bool,
}

/// `palisade state -s SOCK kill ...`: the socket given before a group's
/// subcommand (as `show -s SOCK info` takes it) is moved behind it, where
/// the subcommands take it.
fn socket_after_subcommand(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let group = args
        .get(1)
        .and_then(|a| a.to_str())
        .is_some_and(|a| ["state", "carp", "sync", "osfp", "group"].contains(&a));
    let Some(opt) = args.get(2).and_then(|a| a.to_str()) else {
        return args;
    };
    if !group {
        return args;
    }
    let n = if opt == "-s" || opt == "--socket" {
        2
    } else if opt.starts_with("--socket=") || (opt.starts_with("-s") && opt.len() > 2) {
        1
    } else {
        return args;
    };
    if args.len() < 2 + n + 1 {
        return args;
    }
    let moved: Vec<_> = args.drain(2..2 + n).collect();
    args.extend(moved);
    args
}

fn main() -> ExitCode {
    let cli = Cli::parse_from(socket_after_subcommand(std::env::args_os().collect()));
    if !matches!(
        cli.cmd,
        Cmd::Run { .. }
            | Cmd::Lab {
                action: LabCmd::Serve { .. }
            }
    ) {
        // Listings piped into `head` end quietly, as pfctl's do. (Not the
        // daemon, nor the lab's servers: a client that goes away must not
        // kill them.)
        // SAFETY: restoring the default action of a signal.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match cli.cmd {
        Cmd::Check(a) => check(a),
        Cmd::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "palisade", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Cmd::Man { dir } => match man::write_all(&dir) {
            Ok(pages) => {
                for p in pages {
                    println!("{}", p.display());
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("palisade man: {}: {e}", dir.display());
                ExitCode::from(1)
            }
        },
        Cmd::Replay(a) => replay_cmd(a),
        Cmd::Lab { action } => lab_cmd(action),
        Cmd::Show {
            what,
            verbose,
            anchor,
            json,
            sock,
        } => {
            let Some(what) = request::Listing::from_name(&what) else {
                eprintln!(
                    "palisade show: '{what}': one of {}",
                    request::Listing::names()
                );
                return ExitCode::from(2);
            };
            if anchor.is_some()
                && !matches!(
                    what,
                    request::Listing::Rules
                        | request::Listing::Tables
                        | request::Listing::Anchors
                        | request::Listing::Labels
                )
            {
                eprintln!(
                    "palisade show {}: -a is for rules, tables, anchors and labels",
                    what.name()
                );
                return ExitCode::from(2);
            }
            control_cmd(
                &sock.path(),
                Request::Show {
                    what,
                    level: verbose.into(),
                    anchor: anchor.unwrap_or_default(),
                },
                json,
            )
        }
        Cmd::Table {
            name,
            op,
            mut args,
            file,
            json,
            sock,
        } => {
            let name = name
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string();
            if let Some(f) = &file {
                if !["add", "delete", "replace", "test"].contains(&op.as_str()) {
                    eprintln!(
                        "palisade table {name} {op}: -f is for add, delete, replace and test"
                    );
                    return ExitCode::from(2);
                }
                let read = if f == "-" {
                    files::read_stdin(files::TABLE).map_err(|e| e.message("stdin"))
                } else {
                    files::read_file(std::path::Path::new(f), files::TABLE)
                        .map_err(|e| e.message(f))
                };
                match read {
                    Ok(data) => args.extend(table_file_words(&String::from_utf8_lossy(&data))),
                    Err(e) => {
                        eprintln!("palisade table {name} {op}: {e}");
                        return ExitCode::from(1);
                    }
                }
            }
            let op = match op.as_str() {
                "expire" => match args.as_slice() {
                    [n] if n.parse::<u64>().is_ok() => TableOp::Expire(n.parse().unwrap_or(0)),
                    _ => {
                        eprintln!("palisade table {name} expire: expected one number of seconds");
                        return ExitCode::from(2);
                    }
                },
                "add" => TableOp::Add(args),
                "delete" => TableOp::Delete(args),
                "replace" => TableOp::Replace(args),
                "show" => TableOp::Show,
                "flush" => TableOp::Flush,
                "test" => TableOp::Test(args),
                o => {
                    eprintln!("palisade table {name}: unknown operation '{o}' (add, delete, replace, show, flush, test, expire)");
                    return ExitCode::from(2);
                }
            };
            control_cmd(&sock.path(), Request::Table { name, op }, json)
        }
        Cmd::Anchor {
            name,
            op,
            file,
            verbose,
            json,
            sock,
        } => {
            let aop = if op == "load" {
                let Some(f) = file else {
                    eprintln!("palisade anchor {name} load: -f FILE is required");
                    return ExitCode::from(2);
                };
                let text = if f == "-" {
                    files::read_stdin_text(files::CONFIG)
                } else {
                    files::read_text(std::path::Path::new(&f), files::CONFIG)
                };
                match text {
                    Ok(rules) => AnchorOp::Load {
                        rules,
                        file: f,
                        files: true,
                    },
                    Err(e) => {
                        eprintln!("{}", e.message(if f == "-" { "stdin" } else { &f }));
                        return ExitCode::from(1);
                    }
                }
            } else if op == "flush" {
                AnchorOp::Flush
            } else if op == "show" {
                AnchorOp::Show
            } else {
                eprintln!("palisade anchor {name}: unknown operation '{op}' (load, flush, show)");
                return ExitCode::from(2);
            };
            control_cmd(
                &sock.path(),
                Request::Anchor {
                    name,
                    op: aop,
                    level: verbose.into(),
                },
                json,
            )
        }
        Cmd::State {
            action:
                StateCmd::Kill {
                    host,
                    to,
                    id,
                    label,
                    source_nodes,
                    json,
                    sock,
                },
        } => {
            // Checked as the daemon checks it (the same words, on stderr,
            // exit 1).
            let req = serde_json::json!({"cmd": "kill", "host": host, "to": to, "id": id,
                "label": label, "source_nodes": source_nodes});
            match Request::parse(&req) {
                Ok(r) => control_cmd(&sock.path(), r, json),
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::State {
            action: StateCmd::Flush { json, sock },
        } => control_cmd(&sock.path(), Request::Kill(request::Kill::All), json),
        Cmd::Sync {
            action: SyncCmd::Show { json, sock },
        } => control_cmd(&sock.path(), Request::SyncShow, json),
        Cmd::Bridge {
            action: BridgeCmd::Flush { bridge, json, sock },
        } => control_cmd(
            &sock.path(),
            Request::BridgeFlush { bridge, mac: None },
            json,
        ),
        Cmd::Bridge {
            action:
                BridgeCmd::Deladdr {
                    bridge,
                    mac,
                    json,
                    sock,
                },
        } => {
            let req = serde_json::json!({"cmd": "bridge", "bridge": bridge, "mac": mac});
            match Request::parse(&req) {
                Ok(r) => control_cmd(&sock.path(), r, json),
                Err(e) => {
                    eprintln!("palisade bridge deladdr: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Cmd::Osfp {
            action: OsfpCmd::Show { target, json, sock },
        } => match addr_port(&target) {
            Some((addr, port)) => control_cmd(&sock.path(), Request::Osfp { addr, port }, json),
            None => {
                eprintln!(
                    "palisade osfp show: '{target}' is not ADDRESS, ADDRESS:PORT or [IPv6]:PORT"
                );
                ExitCode::from(2)
            }
        },
        Cmd::Greylist { action } => greylist_cmd(action),
        Cmd::FtpProxy(mut opts) => {
            opts.socket = Sock {
                socket: opts.socket_arg.clone(),
            }
            .path();
            let level = match opts.debug {
                0..=3 => tracing::Level::ERROR,
                4 => tracing::Level::WARN,
                5 | 6 => tracing::Level::INFO,
                _ => tracing::Level::DEBUG,
            };
            let _ = tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_target(false)
                .with_max_level(level)
                .try_init();
            match ftpproxy::run(opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Carp { action } => {
            use request::CarpOp;
            let (op, json, sock) = match action {
                CarpCmd::Show { json, sock } => (CarpOp::Show, json, sock),
                CarpCmd::Preempt { state, json, sock } => match state.as_str() {
                    "on" | "1" => (CarpOp::Preempt(true), json, sock),
                    "off" | "0" => (CarpOp::Preempt(false), json, sock),
                    s => {
                        eprintln!("palisade carp preempt: '{s}': on or off");
                        return ExitCode::from(2);
                    }
                },
                CarpCmd::Set {
                    iface,
                    settings,
                    json,
                    sock,
                } => match carp_settings(&settings) {
                    Ok((advbase, advskew)) => (
                        CarpOp::Set {
                            iface,
                            advbase,
                            advskew,
                        },
                        json,
                        sock,
                    ),
                    Err(e) => {
                        eprintln!("palisade carp set: {e}; {}", set_usage());
                        return ExitCode::from(2);
                    }
                },
                CarpCmd::Demote {
                    group,
                    count,
                    json,
                    sock,
                } => (
                    CarpOp::Demote {
                        group,
                        delta: count as i32,
                    },
                    json,
                    sock,
                ),
                CarpCmd::Undemote {
                    group,
                    count,
                    json,
                    sock,
                } => (
                    CarpOp::Demote {
                        group,
                        delta: -(count as i32),
                    },
                    json,
                    sock,
                ),
                CarpCmd::Group {
                    action: CarpGroupCmd::Show { group, json, sock },
                } => (CarpOp::Groups(group), json, sock),
                CarpCmd::Group {
                    action: CarpGroupCmd::Add { iface, group, sock },
                } => (
                    CarpOp::Member {
                        iface,
                        group,
                        add: true,
                    },
                    false,
                    sock,
                ),
                CarpCmd::Group {
                    action: CarpGroupCmd::Delete { iface, group, sock },
                } => (
                    CarpOp::Member {
                        iface,
                        group,
                        add: false,
                    },
                    false,
                    sock,
                ),
            };
            control_cmd(&sock.path(), Request::Carp(op), json)
        }
        Cmd::Reload { file, sock } => {
            let file = file.map(|f| std::path::absolute(&f).unwrap_or(f));
            control_cmd(&sock.path(), Request::Reload { file }, false)
        }
        Cmd::Log { follow: _, sock } => {
            let out = std::io::stdout();
            let r = control::stream(&sock.path(), Request::Log.to_json(), |v| {
                let mut o = out.lock();
                writeln!(o, "{}", v["line"].as_str().unwrap_or("")).is_ok() && o.flush().is_ok()
            });
            match r {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("palisade log: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Cmd::Run {
            config,
            dry_run: true,
        } => match load::load(&config) {
            Ok((cfg, pf, _)) => {
                // `[greylist]` is the greylisting service's: checked here
                // too, so that `run -n` catches a mistake in it.
                let text = std::fs::read_to_string(&config).unwrap_or_default();
                let has_greylist =
                    toml::from_str::<toml::Table>(&text).is_ok_and(|t| t.contains_key("greylist"));
                if has_greylist {
                    match greylist::Conf::parse(&config, &text) {
                        Err(e) => {
                            eprintln!("palisade run: {e}");
                            return ExitCode::from(1);
                        }
                        Ok(g) => {
                            for w in g.warnings() {
                                eprintln!("palisade run: warning: {w}");
                            }
                        }
                    }
                }
                let n = |k: usize, one: &str, many: &str| {
                    format!("{k} {}", if k == 1 { one } else { many })
                };
                println!(
                    "{}: ok ({}, {}, {}; pf.conf {}{})",
                    config.display(),
                    n(cfg.ports.len(), "port", "ports"),
                    n(cfg.ifaces.len(), "interface", "interfaces"),
                    n(cfg.routes.len(), "route", "routes"),
                    n(pf.main.rules.len(), "rule", "rules"),
                    if has_greylist { "; [greylist] ok" } else { "" }
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("palisade run: {e}");
                ExitCode::from(1)
            }
        },
        Cmd::Run { config, .. } => match run::run(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("palisade run: {e}");
                ExitCode::from(1)
            }
        },
    }
}

fn load_host(p: &Option<PathBuf>) -> Result<HostModel, String> {
    match p {
        Some(p) => {
            let t = files::read_text(p, files::CONFIG)
                .map_err(|e| e.message(&p.display().to_string()))?;
            HostModel::from_toml(&t).map_err(|e| format!("{}: {e}", p.display()))
        }
        None => Ok(sysmodel::from_system()),
    }
}

fn replay_cmd(a: ReplayCli) -> ExitCode {
    let dir = match a.dir.as_deref() {
        None => None,
        Some("in") => Some(palisade_conf::ir::Direction::In),
        Some("out") => Some(palisade_conf::ir::Direction::Out),
        Some(d) => {
            eprintln!("palisade replay: --dir {d}: expected in or out");
            return ExitCode::from(1);
        }
    };
    let host = match load_host(&a.host_model) {
        Ok(h) => h,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    match replay::run(replay::ReplayArgs {
        rules: a.file,
        host,
        pcap: a.pcap,
        iface: a.iface,
        dir,
        out: a.out,
        log: a.log,
        json: a.json,
    }) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("palisade replay: {e}");
            ExitCode::from(1)
        }
    }
}

/// This machine's model, with the interfaces and routes the daemon with
/// the palisade.toml at `path` has (what `run -n` parses pf.conf with).
fn set_usage() -> &'static str {
    "usage: palisade carp set IFACE advskew N [advbase N]"
}

/// `advskew N advbase N` as ifconfig takes them (either, both, any order).
fn carp_settings(args: &[String]) -> Result<(Option<u8>, Option<u8>), String> {
    if args.is_empty() || args.len() % 2 != 0 {
        return Err("expected SETTING VALUE pairs".into());
    }
    let (mut advbase, mut advskew) = (None, None);
    for pair in args.chunks(2) {
        let (slot, max) = match pair[0].as_str() {
            "advbase" => (&mut advbase, 255),
            "advskew" => (&mut advskew, 254),
            other => return Err(format!("unknown setting '{other}' (advskew, advbase)")),
        };
        let n = pair[1]
            .parse::<u8>()
            .ok()
            .filter(|n| *n <= max)
            .ok_or_else(|| format!("{} {}: expected 0 to {max}", pair[0], pair[1]))?;
        *slot = Some(n);
    }
    Ok((advbase, advskew))
}

/// The addresses of a table file as pfctl reads one: words separated by
/// blanks or lines, `#` to the end of a line a comment.
fn table_file_words(text: &str) -> Vec<String> {
    text.lines()
        .flat_map(|l| l.split('#').next().unwrap_or("").split_whitespace())
        .map(str::to_string)
        .collect()
}

fn daemon_host_model(
    path: &std::path::Path,
) -> Result<(HostModel, palisade_net::config::Config), String> {
    let text = files::read_text(path, files::CONFIG)
        .map_err(|e| e.message(&path.display().to_string()))?;
    let cfg =
        palisade_net::config::Config::parse(path, &text, &|_| true).map_err(|e| e.to_string())?;
    let mut host = sysmodel::from_system();
    host.interfaces = cfg.host_interfaces();
    host.routes = cfg.host_routes();
    Ok((host, cfg))
}

fn check(a: CheckArgs) -> ExitCode {
    let mut defines = Vec::new();
    for d in &a.define {
        match d.split_once('=') {
            Some((k, v)) if !k.is_empty() => defines.push((k.to_string(), v.to_string())),
            _ => {
                eprintln!("palisade: -D {d}: expected NAME=VALUE");
                return ExitCode::from(1);
            }
        }
    }
    if let Some(o) = &a.optimize {
        if o != "none" {
            eprintln!("palisade: -o {o}: only 'none' is supported");
            return ExitCode::from(1);
        }
    }
    // Interfaces come from a palisade.toml: a rule naming another can
    // never match (run -n and reload say so; so does check then).
    let mut from_toml = None;
    let mut toml_path = None;
    let host = match &a.host_model {
        Some(p) => match files::read_text(p, files::CONFIG) {
            Ok(t) => match HostModel::from_toml(&t) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("{}: {e}", p.display());
                    return ExitCode::from(1);
                }
            },
            Err(e) => {
                eprintln!("{}", e.message(&p.display().to_string()));
                return ExitCode::from(1);
            }
        },
        None => {
            let (given, path) = match &a.config {
                Some(c) => (true, c.clone()),
                None => (false, PathBuf::from("/etc/palisade/palisade.toml")),
            };
            match daemon_host_model(&path) {
                Ok((m, cfg)) => {
                    from_toml = Some(cfg);
                    toml_path = Some(path.clone());
                    m
                }
                Err(e) if given => {
                    eprintln!("palisade check: {e}");
                    return ExitCode::from(1);
                }
                Err(e) => {
                    // There but unreadable: said, not silently passed over.
                    if path.exists() {
                        eprintln!(
                            "palisade check: {e}; interface names resolve from this machine instead"
                        );
                    }
                    sysmodel::from_system()
                }
            }
        }
    };
    // The pf.conf: given, or the one the palisade.toml names (as the
    // daemon finds it: beside the palisade.toml when relative).
    let file: String = match (&a.file, &from_toml, &toml_path) {
        (Some(f), _, _) => f.clone(),
        (None, Some(cfg), Some(p)) => p
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(&cfg.pf)
            .display()
            .to_string(),
        _ => "/etc/palisade/pf.conf".to_string(),
    };
    let opts = ParseOptions {
        verbose: a.verbose,
        defines,
        host,
        anchor: a.anchor.clone(),
        pfctl_compat: a.pfctl_compat,
        queues: Vec::new(),
        no_files: false,
    };
    let out = if file == "-" {
        let data = match files::read_stdin(files::CONFIG) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("{}", e.message("stdin"));
                return ExitCode::from(1);
            }
        };
        parse_input(Input::Stdin(data), &opts)
    } else {
        parse_input(Input::File(std::path::Path::new(&file)), &opts)
    };
    // Diagnostics go out first and unbuffered; the ruleset is written at the
    // end, as pfctl's buffered stdout is.
    let stderr = std::io::stderr();
    let mut e = stderr.lock();
    for line in &out.stderr {
        let _ = writeln!(e, "{line}");
    }
    // Interfaces resolved from this machine (no palisade.toml found): an
    // interface only the daemon's configuration defines reads as unknown.
    if from_toml.is_none()
        && a.host_model.is_none()
        && !a.pfctl_compat
        && out
            .stderr
            .iter()
            .any(|l| l.contains("no IP address found for"))
    {
        let _ = writeln!(
            e,
            "palisade check: interface names were resolved from this machine's; give the daemon's configuration (-c palisade.toml) to check against its interfaces"
        );
    }
    if !a.pfctl_compat && out.errors == 0 {
        let name = if file == "-" { "stdin" } else { &file };
        // With palisade.toml, what run -n and a reload say of the
        // interfaces and of the pair's own traffic (CARP, pfsync).
        let from_toml_warnings = match &from_toml {
            Some(cfg) => {
                let mut w = crate::load::unknown_interfaces(&out.config, &opts.host);
                w.extend(crate::load::carp_interface_rules(&out.config, cfg));
                w.extend(crate::load::member_translation_rules(&out.config, cfg));
                // And what the daemon says of palisade.toml itself at
                // start (run -n says it too).
                w.extend(palisade_net::dataplane::proxy_warnings(cfg));
                w.extend(cfg.warnings());
                w.extend(crate::load::blocked_ha_traffic(
                    &out.config,
                    cfg,
                    &opts.host,
                ));
                w
            }
            None => Vec::new(),
        };
        for w in out
            .unenforced_warnings(name)
            .iter()
            .chain(&from_toml_warnings)
            .chain(&crate::load::to_v6_loopback(&out.config))
            .chain(&crate::load::ftp_proxy_anchors(&out.config))
            .chain(&crate::load::anchor_only_tables(&out.config))
            .chain(&crate::load::unknown_os(&out.config))
        {
            let _ = writeln!(e, "{w}");
        }
    }
    // `set fingerprints "FILE"`: read as a load would (pfctl: "error
    // loading fingerprints"); a file that would not load fails the check.
    let mut errors = out.errors;
    if out.errors == 0 {
        if let Err(err) = palisade_filter::osfp::FingerprintDb::from_options(&out.config.options) {
            let file = if file == "-" { "stdin" } else { &file };
            let name = match out.fingerprints_line {
                Some(l) => format!("{file}:{l}"),
                None => file.to_string(),
            };
            let err = err.to_string();
            if err.starts_with("set fingerprints") {
                let _ = writeln!(e, "{name}: {err}");
            } else {
                let _ = writeln!(e, "{name}: set fingerprints: {err}");
            }
            errors += 1;
        }
    }
    let _ = std::io::stdout().write_all(out.stdout.as_bytes());
    if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn greylist_cmd(action: GreylistCmd) -> ExitCode {
    let conf_path = match &action {
        GreylistCmd::Run { conf }
        | GreylistCmd::Show { conf, .. }
        | GreylistCmd::Whitelist { conf, .. }
        | GreylistCmd::Delete { conf, .. } => conf.config.clone(),
    };
    let conf = match greylist::Conf::load(&conf_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("palisade greylist: {e}");
            return ExitCode::from(1);
        }
    };
    let (req, json) = match action {
        GreylistCmd::Run { .. } => {
            let _ = tracing_subscriber::fmt()
                .with_writer(std::io::stderr)
                .with_ansi(false)
                .with_target(false)
                .try_init();
            return match greylist::run(conf) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("palisade greylist: {e}");
                    ExitCode::from(1)
                }
            };
        }
        GreylistCmd::Show { json, .. } => (serde_json::json!({"op": "show"}), json),
        GreylistCmd::Whitelist { client, .. } => (
            serde_json::json!({"op": "whitelist", "client": client}),
            false,
        ),
        GreylistCmd::Delete {
            client,
            sender,
            recipient,
            ..
        } => {
            if sender.is_some() != recipient.is_some() {
                eprintln!("palisade greylist delete: CLIENT, or CLIENT SENDER RECIPIENT");
                return ExitCode::from(2);
            }
            (
                serde_json::json!({"op": "delete", "client": client, "sender": sender, "recipient": recipient}),
                false,
            )
        }
    };
    match greylist::admin_cmd(&conf, req) {
        Ok(v) => print_answer(&v, json, false),
        Err(e) => {
            eprintln!("palisade greylist: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;
    use serde_json::json;

    /// A refused request with --json shows its reason on stderr, not
    /// `null` on stdout (`carp undemote carp 1 --json` at count 0), and
    /// fails; without --json its text goes to stderr too.
    #[test]
    fn a_refusal_with_json_prints_its_reason_on_stderr() {
        let refused = json!({"ok": false, "text": "carp: no group nosuch\n"});
        let (out, err, ok) = super::answer_output(&refused, true, true);
        assert_eq!(
            (out.as_str(), err.as_str(), ok),
            ("", "carp: no group nosuch\n", false)
        );
        let (out, err, ok) = super::answer_output(&refused, false, true);
        assert_eq!(
            (out.as_str(), err.as_str(), ok),
            ("", "carp: no group nosuch\n", false)
        );
        // No text at all still says something.
        let (out, err, _) = super::answer_output(&json!({"ok": false}), true, true);
        assert!(out.is_empty() && err.contains("no reason"), "{err}");
        // Successes print `data` (pretty for the control socket's
        // commands, one line for greylist's).
        let done = json!({"ok": true, "text": "carp: demote count 1\n", "data": {"demote": 1}});
        let (out, err, ok) = super::answer_output(&done, true, true);
        assert_eq!(
            (out.as_str(), err.as_str(), ok),
            ("{\n  \"demote\": 1\n}\n", "", true)
        );
        let (out, _, _) = super::answer_output(&done, true, false);
        assert_eq!(out, "{\"demote\":1}\n");
        // A "no" with data (`table T test` where not every address
        // matches): the data still on stdout with --json, and it fails.
        let partly = json!({"ok": false, "text": "1/2 addresses match.\n",
            "data": {"matched": ["192.0.2.1"], "given": 2, "all": false}});
        let (out, err, ok) = super::answer_output(&partly, true, false);
        assert_eq!(
            (out.as_str(), err.as_str(), ok),
            (
                "{\"all\":false,\"given\":2,\"matched\":[\"192.0.2.1\"]}\n",
                "1/2 addresses match.\n",
                false
            )
        );
    }

    /// `lab exec --help` names every scenario's hosts.
    #[test]
    fn lab_exec_help_names_every_host() {
        let cli = super::Cli::command();
        let exec = cli
            .find_subcommand("lab")
            .and_then(|l| l.find_subcommand("exec"))
            .expect("lab exec");
        let help = exec
            .get_arguments()
            .find(|a| a.get_id() == "host")
            .and_then(|a| a.get_help())
            .expect("the host's help")
            .to_string();
        for h in super::lab::HOSTS
            .iter()
            .chain(&super::lab::s2::HOSTS)
            .chain(&super::lab::s3::HOSTS)
            .chain(&super::lab::s5::HOSTS)
            .chain(&super::lab::s6::HOSTS)
        {
            assert!(help.contains(h), "{h} is not in: {help}");
        }
    }
}

#[cfg(test)]
mod sock_tests {
    use super::*;

    #[test]
    fn the_socket_comes_from_palisade_toml_when_not_given() {
        let d = std::env::temp_dir().join(format!("palisade-socktest-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        let f = d.join("palisade.toml");
        std::fs::write(&f, "pf = \"/etc/pf.conf\"\ncontrol = \"/run/fw1.sock\"\n").unwrap();
        assert_eq!(control_in(&f), Some(PathBuf::from("/run/fw1.sock")));
        std::fs::write(&f, "pf = \"/etc/pf.conf\"\n").unwrap();
        assert_eq!(control_in(&f), None);
        std::fs::write(&f, "control = \"relative.sock\"\n").unwrap();
        assert_eq!(control_in(&f), None);
        assert_eq!(control_in(&d.join("missing.toml")), None);
        let given = Sock {
            socket: Some(PathBuf::from("/tmp/x.sock")),
        };
        assert_eq!(given.path(), PathBuf::from("/tmp/x.sock"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
