//! The FTP control connection's words that decide where a data
//! connection goes: commands PORT and EPRT (RFC 959, RFC 2428) and PASV /
//! EPSV, and replies 227 and 229. Parsing is strict about what it
//! rewrites and refuses the rest with a reason; formatting writes what
//! this proxy sends. Nothing here allocates more than the line it reads.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why a command or reply could not be taken.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("PORT wants six numbers h1,h2,h3,h4,p1,p2 each 0 to 255")]
    Port,
    #[error("EPRT wants |family|address|port| (family 1 or 2)")]
    Eprt,
    #[error("the 227 reply has no h1,h2,h3,h4,p1,p2")]
    Reply227,
    #[error("the 229 reply has no (|||port|)")]
    Reply229,
    #[error("not a command: a command is 3 or 4 letters, then a space or the end of the line, in printable text")]
    Garbled,
}

/// A client command, as far as the proxy cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// PORT or EPRT: the client will accept a data connection here.
    Active { to: SocketAddr, extended: bool },
    /// PASV or EPSV (with its argument, if any: `EPSV ALL`, `EPSV 2`).
    Passive { extended: bool, arg: String },
    /// USER name.
    User(String),
    /// Anything else: relayed as it is.
    Other,
}

/// The command word of a line, upper-cased (at most 4 letters matter).
fn verb(line: &str) -> (String, &str) {
    let line = line.trim_end_matches(['\r', '\n']);
    let (v, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    (v.to_ascii_uppercase(), rest)
}

/// Parse a client command line (CRLF or LF at the end, or none). The
/// line must be a command as RFC 959 writes one (3 or 4 letters, then a
/// space or the end) with no control bytes (NUL, a bare CR, Telnet's
/// IAC...): servers split words in different ways, and a line the proxy
/// read differently from the server would slip past its checks.
pub fn command(line: &str) -> Result<Command, ParseError> {
    let body = line.strip_suffix('\n').unwrap_or(line);
    let body = body.strip_suffix('\r').unwrap_or(body);
    if body.chars().any(|c| c.is_control()) {
        return Err(ParseError::Garbled);
    }
    let word = body.split(' ').next().unwrap_or("");
    if !(3..=4).contains(&word.len()) || !word.bytes().all(|b| b.is_ascii_alphabetic()) {
        return Err(ParseError::Garbled);
    }
    let (v, arg) = verb(line);
    match v.as_str() {
        "PORT" => Ok(Command::Active {
            to: port_arg(arg.trim()).ok_or(ParseError::Port)?,
            extended: false,
        }),
        "EPRT" => Ok(Command::Active {
            to: eprt_arg(arg.trim()).ok_or(ParseError::Eprt)?,
            extended: true,
        }),
        "PASV" => Ok(Command::Passive {
            extended: false,
            arg: String::new(),
        }),
        "EPSV" => Ok(Command::Passive {
            extended: true,
            arg: arg.trim().to_string(),
        }),
        "USER" => Ok(Command::User(arg.trim().to_string())),
        _ => Ok(Command::Other),
    }
}

/// "h1,h2,h3,h4,p1,p2": exactly six numbers of 0 to 255.
fn six(s: &str) -> Option<SocketAddr> {
    let mut n = [0u8; 6];
    let mut parts = s.split(',');
    for slot in &mut n {
        let p = parts.next()?.trim();
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        *slot = p.parse().ok()?;
    }
    if parts.next().is_some() {
        return None;
    }
    let ip = Ipv4Addr::new(n[0], n[1], n[2], n[3]);
    Some(SocketAddr::new(
        IpAddr::V4(ip),
        u16::from_be_bytes([n[4], n[5]]),
    ))
}

fn port_arg(s: &str) -> Option<SocketAddr> {
    six(s)
}

/// "|1|192.0.2.1|6446|" (RFC 2428): the first character is the
/// delimiter (any printable ASCII but a digit... RFC 2428 suggests '|').
fn eprt_arg(s: &str) -> Option<SocketAddr> {
    let d = s.chars().next()?;
    if !(33..=126).contains(&(d as u32)) || d.is_ascii_digit() {
        return None;
    }
    let fields: Vec<&str> = s[d.len_utf8()..].split(d).collect();
    // family, address, port, and nothing after the closing delimiter
    if fields.len() != 4 || !fields[3].is_empty() {
        return None;
    }
    let port: u16 = digits(fields[2])?;
    let ip: IpAddr = match fields[0] {
        "1" => IpAddr::V4(fields[1].parse::<Ipv4Addr>().ok()?),
        "2" => IpAddr::V6(fields[1].parse::<Ipv6Addr>().ok()?),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

fn digits<T: std::str::FromStr>(s: &str) -> Option<T> {
    if s.is_empty() || s.len() > 5 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// A reply line: its code, and whether more lines follow ("227-").
pub fn reply_code(line: &str) -> Option<(u16, bool)> {
    let b = line.as_bytes();
    if b.len() < 3 || !b[..3].iter().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let code = (b[0] - b'0') as u16 * 100 + (b[1] - b'0') as u16 * 10 + (b[2] - b'0') as u16;
    let more = b.get(3) == Some(&b'-');
    Some((code, more))
}

/// The address and port of "227 Entering Passive Mode (h1,...,p2)": the
/// first run of six comma-separated numbers after the code (servers vary
/// in the words and the parentheses).
pub fn reply_227(line: &str) -> Result<SocketAddr, ParseError> {
    let text = line.get(4..).unwrap_or("");
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b',' || b[i] == b' ') {
                i += 1;
            }
            let run = text[start..i].trim_end_matches([' ', ',']);
            if let Some(a) = six(run) {
                return Ok(a);
            }
        } else {
            i += 1;
        }
    }
    Err(ParseError::Reply227)
}

/// The port of "229 Entering Extended Passive Mode (|||6446|)".
pub fn reply_229(line: &str) -> Result<u16, ParseError> {
    let text = line.get(4..).unwrap_or("");
    let open = text.find('(').ok_or(ParseError::Reply229)?;
    let close = text[open..].find(')').ok_or(ParseError::Reply229)? + open;
    let inner = &text[open + 1..close];
    let d = inner.chars().next().ok_or(ParseError::Reply229)?;
    let fields: Vec<&str> = inner[d.len_utf8()..].split(d).collect();
    // "|||port|": two empty fields (family, address), the port, then end.
    if fields.len() != 4 || !fields[0].is_empty() || !fields[1].is_empty() || !fields[3].is_empty()
    {
        return Err(ParseError::Reply229);
    }
    digits(fields[2]).ok_or(ParseError::Reply229)
}

/// "PORT h1,h2,h3,h4,p1,p2\r\n" (IPv4 only).
pub fn format_port(a: SocketAddr) -> Option<String> {
    let IpAddr::V4(ip) = a.ip() else {
        return None;
    };
    let o = ip.octets();
    let p = a.port().to_be_bytes();
    Some(format!(
        "PORT {},{},{},{},{},{}\r\n",
        o[0], o[1], o[2], o[3], p[0], p[1]
    ))
}

/// "EPRT |1|addr|port|\r\n" or "|2|...".
pub fn format_eprt(a: SocketAddr) -> String {
    let family = if a.is_ipv4() { 1 } else { 2 };
    format!("EPRT |{family}|{}|{}|\r\n", a.ip(), a.port())
}

/// "227 Entering Passive Mode (h1,h2,h3,h4,p1,p2)\r\n".
pub fn format_227(a: SocketAddr) -> Option<String> {
    let IpAddr::V4(ip) = a.ip() else {
        return None;
    };
    let o = ip.octets();
    let p = a.port().to_be_bytes();
    Some(format!(
        "227 Entering Passive Mode ({},{},{},{},{},{})\r\n",
        o[0], o[1], o[2], o[3], p[0], p[1]
    ))
}

/// "229 Entering Extended Passive Mode (|||port|)\r\n".
pub fn format_229(port: u16) -> String {
    format!("229 Entering Extended Passive Mode (|||{port}|)\r\n")
}
