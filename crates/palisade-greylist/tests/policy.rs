//! The policy protocol: requests as Postfix sends them, split anywhere;
//! input that is not Postfix's is refused with the line and the problem.

use palisade_greylist::policy::{Action, PolicyError, Reader, Request, MAX_LINE};

/// A request as Postfix 3.7 sends it at RCPT (SMTPD_POLICY_README's list).
pub const POSTFIX_RCPT: &str = "request=smtpd_access_policy\nprotocol_state=RCPT\n\
protocol_name=ESMTP\nhelo_name=client.example\nqueue_id=\nsender=a@example.org\n\
recipient=b@example.net\nrecipient_count=0\nclient_address=192.0.2.7\n\
client_name=unknown\nreverse_client_name=unknown\ninstance=1a2b.6752f1c3.8e3f1.0\n\
sasl_method=\nsasl_username=\nsasl_sender=\nsize=0\nccert_subject=\nccert_issuer=\n\
ccert_fingerprint=\nccert_pubkey_fingerprint=\nencryption_protocol=\n\
encryption_cipher=\nencryption_keysize=0\netrn_domain=\nstress=\nclient_port=40123\n\
policy_context=\nserver_address=198.51.100.25\nserver_port=25\n\n";

#[test]
fn a_postfix_request_split_anywhere() {
    for split in [1, 2, 7, 50, POSTFIX_RCPT.len()] {
        let mut r = Reader::new();
        let mut got = Vec::new();
        for chunk in POSTFIX_RCPT.as_bytes().chunks(split) {
            r.feed(chunk);
            while let Some(req) = r.next_request().unwrap() {
                got.push(req);
            }
        }
        assert_eq!(got.len(), 1, "split {split}");
        let q = &got[0];
        assert_eq!(q.get("client_address"), Some("192.0.2.7"));
        assert_eq!(q.get("client_port"), Some("40123"));
        assert_eq!(q.get("queue_id"), Some(""));
        assert_eq!(q.get("instance"), Some("1a2b.6752f1c3.8e3f1.0"));
        assert_eq!(q.attrs.len(), 29);
        assert_eq!(r.pending(), 0);
    }
}

#[test]
fn requests_follow_each_other_on_one_connection() {
    let mut r = Reader::new();
    let two = format!(
        "{POSTFIX_RCPT}{}",
        POSTFIX_RCPT.replace("b@example", "c@example")
    );
    r.feed(two.as_bytes());
    let a = r.next_request().unwrap().unwrap();
    let b = r.next_request().unwrap().unwrap();
    assert_eq!(a.get("recipient"), Some("b@example.net"));
    assert_eq!(b.get("recipient"), Some("c@example.net"));
    assert_eq!(r.next_request().unwrap(), None);
    // CRLF is taken too; a request with no attributes is a request.
    r.feed(b"client_address=192.0.2.8\r\n\r\n\n");
    assert_eq!(
        r.next_request().unwrap().unwrap().get("client_address"),
        Some("192.0.2.8")
    );
    assert_eq!(r.next_request().unwrap(), Some(Request::default()));
}

#[test]
fn what_is_not_postfix_is_refused() {
    let cases: Vec<(Vec<u8>, PolicyError)> = vec![
        (
            [b"request=x\n".to_vec(), vec![b'a'; MAX_LINE + 10]].concat(),
            PolicyError::LineTooLong { line: 2 },
        ),
        (b"hello\n".to_vec(), PolicyError::NoEquals { line: 1 }),
        (b"=v\n".to_vec(), PolicyError::EmptyName { line: 1 }),
        (
            b"a=b\x00c\n".to_vec(),
            PolicyError::ControlByte { line: 1, byte: 0 },
        ),
        (
            (0..200)
                .flat_map(|i| format!("a{i}=b\n").into_bytes())
                .collect(),
            PolicyError::TooManyAttributes,
        ),
        (
            (0..20)
                .flat_map(|i| format!("a{i}={}\n", "v".repeat(8000)).into_bytes())
                .collect(),
            PolicyError::RequestTooLarge,
        ),
    ];
    for (input, want) in cases {
        let mut r = Reader::new();
        r.feed(&input);
        let mut res = r.next_request();
        while let Ok(Some(_)) = res {
            res = r.next_request();
        }
        assert_eq!(res, Err(want.clone()));
        // It stays refused, and takes nothing more.
        r.feed(b"\n\n");
        assert_eq!(r.next_request(), Err(want));
    }
    // One megabyte without a newline: refused as soon as the line is too
    // long, without holding the megabyte.
    let mut r = Reader::new();
    let mut refused = false;
    for _ in 0..128 {
        r.feed(&[b'x'; 8192]);
        if r.next_request().is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused);
    assert_eq!(r.pending(), 0);
}

#[test]
fn answers_are_one_line() {
    assert_eq!(Action::Dunno.to_wire(), "action=DUNNO\n\n");
    assert_eq!(
        Action::Prepend("X-P0f-OS: Windows 10".into()).to_wire(),
        "action=PREPEND X-P0f-OS: Windows 10\n\n"
    );
    assert_eq!(
        Action::DeferIfPermit("4.7.1 a\nb".into()).to_wire(),
        "action=DEFER_IF_PERMIT 4.7.1 a b\n\n"
    );
}
