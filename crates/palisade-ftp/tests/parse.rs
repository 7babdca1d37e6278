//! Every command and reply the proxy reads or writes, and what it refuses.

use std::net::SocketAddr;

use palisade_ftp::parse::{self, Command, ParseError};

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn port_reads_six_numbers_and_nothing_else() {
    assert_eq!(
        parse::command("PORT 192,0,2,7,195,80\r\n"),
        Ok(Command::Active {
            to: sa("192.0.2.7:50000"),
            extended: false
        })
    );
    // Lower case and LF only are taken (clients vary).
    assert_eq!(
        parse::command("port 192,0,2,7,0,21\n"),
        Ok(Command::Active {
            to: sa("192.0.2.7:21"),
            extended: false
        })
    );
    for bad in [
        "PORT",
        "PORT 192,0,2,7,195",
        "PORT 192,0,2,7,195,80,1",
        "PORT 192,0,2,256,195,80",
        "PORT 192,0,2,7,-1,80",
        "PORT 192,0,2,7,1995,80",
        "PORT 192,0,2,,195,80",
        "PORT 0x10,0,2,7,195,80",
        "PORT 192.0.2.7,195,80",
    ] {
        assert_eq!(parse::command(bad), Err(ParseError::Port), "{bad}");
    }
}

#[test]
fn eprt_reads_both_families_and_any_delimiter() {
    assert_eq!(
        parse::command("EPRT |1|192.0.2.7|6446|\r\n"),
        Ok(Command::Active {
            to: sa("192.0.2.7:6446"),
            extended: true
        })
    );
    assert_eq!(
        parse::command("EPRT |2|2001:db8::7|6446|\r\n"),
        Ok(Command::Active {
            to: sa("[2001:db8::7]:6446"),
            extended: true
        })
    );
    assert_eq!(
        parse::command("EPRT !2!2001:db8::7!6446!"),
        Ok(Command::Active {
            to: sa("[2001:db8::7]:6446"),
            extended: true
        })
    );
    for bad in [
        "EPRT",
        "EPRT |3|192.0.2.7|6446|",
        "EPRT |1|2001:db8::7|6446|",
        "EPRT |2|192.0.2.7|6446|",
        "EPRT |1|192.0.2.7|70000|",
        "EPRT |1|192.0.2.7|6446",
        "EPRT |1|192.0.2.7|6446|x",
        "EPRT 1192.0.2.716446",
        "EPRT |1|192.0.2.7||",
    ] {
        assert_eq!(parse::command(bad), Err(ParseError::Eprt), "{bad}");
    }
}

#[test]
fn pasv_epsv_user_and_the_rest() {
    assert_eq!(
        parse::command("PASV\r\n"),
        Ok(Command::Passive {
            extended: false,
            arg: String::new()
        })
    );
    assert_eq!(
        parse::command("EPSV ALL\r\n"),
        Ok(Command::Passive {
            extended: true,
            arg: "ALL".into()
        })
    );
    assert_eq!(
        parse::command("USER anonymous\r\n"),
        Ok(Command::User("anonymous".into()))
    );
    for other in ["RETR file", "STOR x", "NOOP", "QUIT\r\n", "MKD a b"] {
        assert_eq!(parse::command(other), Ok(Command::Other), "{other}");
    }
    // Not a command as RFC 959 writes one: refused before anything else.
    for bad in [
        "",
        "X",
        "PORTS 1",
        "PORT\t1",
        " PORT 1",
        "NO OP\x01",
        "RE7R a",
    ] {
        assert_eq!(parse::command(bad), Err(ParseError::Garbled), "{bad:?}");
    }
}

#[test]
fn replies_227_and_229() {
    assert_eq!(parse::reply_code("227 Entering"), Some((227, false)));
    assert_eq!(parse::reply_code("211-Features:"), Some((211, true)));
    assert_eq!(parse::reply_code(" EPRT"), None);
    assert_eq!(parse::reply_code("22"), None);
    assert_eq!(
        parse::reply_227("227 Entering Passive Mode (192,0,2,10,195,80).\r\n"),
        Ok(sa("192.0.2.10:50000"))
    );
    // Without parentheses, as some servers write it.
    assert_eq!(
        parse::reply_227("227 Entering passive mode 192,0,2,10,4,1\r\n"),
        Ok(sa("192.0.2.10:1025"))
    );
    // Numbers before the six are skipped over.
    assert_eq!(
        parse::reply_227("227 =192,0,2,10,195,81"),
        Ok(sa("192.0.2.10:50001"))
    );
    for bad in [
        "227 Entering Passive Mode",
        "227 Entering Passive Mode (192,0,2,10,195)",
        "227 Entering Passive Mode (192,0,2,10,195,800)",
        "227 (999,0,2,10,195,80)",
    ] {
        assert_eq!(parse::reply_227(bad), Err(ParseError::Reply227), "{bad}");
    }
    assert_eq!(
        parse::reply_229("229 Entering Extended Passive Mode (|||6446|)\r\n"),
        Ok(6446)
    );
    for bad in [
        "229 Entering Extended Passive Mode",
        "229 (|||6446)",
        "229 (||192.0.2.1|6446|)",
        "229 (|||99999|)",
        "229 (|||x|)",
    ] {
        assert_eq!(parse::reply_229(bad), Err(ParseError::Reply229), "{bad}");
    }
}

#[test]
fn what_the_proxy_writes_reads_back() {
    let a = sa("192.0.2.1:50000");
    let l = parse::format_port(a).unwrap();
    assert_eq!(l, "PORT 192,0,2,1,195,80\r\n");
    assert_eq!(
        parse::command(&l),
        Ok(Command::Active {
            to: a,
            extended: false
        })
    );
    assert!(parse::format_port(sa("[2001:db8::1]:50000")).is_none());
    for a in [sa("192.0.2.1:50000"), sa("[2001:db8::1]:50000")] {
        let l = parse::format_eprt(a);
        assert_eq!(
            parse::command(&l),
            Ok(Command::Active {
                to: a,
                extended: true
            })
        );
    }
    let r = parse::format_227(a).unwrap();
    assert_eq!(r, "227 Entering Passive Mode (192,0,2,1,195,80)\r\n");
    assert_eq!(parse::reply_227(&r), Ok(a));
    let r = parse::format_229(6446);
    assert_eq!(parse::reply_229(&r), Ok(6446));
}
