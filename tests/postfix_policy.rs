//! Issue 16 at the protocol level: the real daemon binary with `[postfix_policy]` set, asked
//! over its policy socket in Postfix's SMTPD policy delegation protocol, its SPF answers coming
//! from the in-process authority (`tests/dnsserver`), whose query log counts the upstream
//! queries. The same cases through a real Postfix, and against pypolicyd-spf, are in
//! `tests/postfix_e2e.rs`.

mod common;
mod dnsserver;
mod postfix_lab;

use std::io::{Read, Write};
use std::time::Duration;

use postfix_lab::{
    BAD_HELO, CASES, Daemon, Expect, GOOD_HELO, ask, authority, lab, meets, read_answer, request,
};

fn action(answer: &[String]) -> &str {
    assert_eq!(answer.len(), 1, "one attribute per answer: {answer:?}");
    answer[0]
        .strip_prefix("action=")
        .unwrap_or_else(|| panic!("not an action: {answer:?}"))
}

/// Every case of the table, one after another on one connection (several requests per
/// connection), each a message of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_case_is_answered_its_action_on_one_connection() {
    let (_dns, _dir, d) = lab(&[]).await;
    let mut conn = d.connect();
    for (i, case) in CASES.iter().enumerate() {
        let req = request("RCPT", case.helo, case.sender, &format!("case.{i}"));
        let answer = ask(&mut conn, &req).expect("answered");
        let a = action(&answer);
        println!("{:<28} {a}", case.name);
        assert!(
            meets(a, case.expect),
            "{}: {a:?} is not {:?}",
            case.name,
            case.expect
        );
    }
    // The pass header names the client and the identity (RFC 7208 §9.1).
    let pass = ask(
        &mut conn,
        &request("RCPT", GOOD_HELO, "alice@pass.sender.test", "p.1"),
    )
    .unwrap();
    assert!(
        action(&pass).contains("client-ip=192.0.2.10; envelope-from=\"alice@pass.sender.test\"; helo=mx.sender.test; identity=mailfrom"),
        "{pass:?}"
    );
}

/// The RCPTs of one message (one `instance`) cost one check and get one header; a second,
/// identical session (another message) is answered from the cache: 0 upstream queries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_check_and_one_header_per_message_and_a_warm_cache() {
    let (dns, _dir, d) = lab(&[]).await;
    let mut conn = d.connect();
    let req = request("RCPT", GOOD_HELO, "alice@pass.sender.test", "a1.b2.c3");
    let first = ask(&mut conn, &req).unwrap();
    assert!(meets(action(&first), Expect::Prepend("pass")), "{first:?}");
    let queries = dns.log.len();
    assert!(
        queries >= 2,
        "the HELO and MAIL FROM records were asked: {queries}"
    );
    let second = ask(&mut conn, &req.replace("bob@rcpt.test", "carol@rcpt.test")).unwrap();
    assert_eq!(
        action(&second),
        "DUNNO",
        "the header is on the message already"
    );
    // A reject stands for every RCPT of its message.
    let fail = request("RCPT", GOOD_HELO, "alice@fail.sender.test", "f.1");
    let r1 = ask(&mut conn, &fail).unwrap();
    let r2 = ask(&mut conn, &fail).unwrap();
    assert!(meets(action(&r1), Expect::Reject("")), "{r1:?}");
    assert_eq!(r1, r2);
    let after_fail = dns.log.len();
    drop(conn);
    // A second, identical session: new connection, new message.
    let mut conn = d.connect();
    let again = ask(
        &mut conn,
        &request("RCPT", GOOD_HELO, "alice@pass.sender.test", "d4.e5"),
    )
    .unwrap();
    assert_eq!(again, first, "the same header for the same session");
    assert_eq!(
        dns.log.len(),
        after_fail,
        "0 upstream queries: {:?}",
        dns.log.all()
    );
    // The MAIL stage is checked too, and its RCPTs then add nothing.
    let mail = ask(
        &mut conn,
        &request("MAIL", GOOD_HELO, "alice@soft.sender.test", "m.1"),
    )
    .unwrap();
    assert!(
        meets(action(&mail), Expect::Prepend("softfail")),
        "{mail:?}"
    );
    let rcpt = ask(
        &mut conn,
        &request("RCPT", GOOD_HELO, "alice@soft.sender.test", "m.1"),
    )
    .unwrap();
    assert_eq!(action(&rcpt), "DUNNO");
}

/// Only the RCPT and MAIL stages are checked; the others are DUNNO without a query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_protocol_states_are_dunno_without_a_query() {
    let (dns, _dir, d) = lab(&[]).await;
    let mut conn = d.connect();
    for state in [
        "CONNECT",
        "EHLO",
        "HELO",
        "DATA",
        "END-OF-MESSAGE",
        "VRFY",
        "ETRN",
        "",
    ] {
        let a = ask(
            &mut conn,
            &request(state, GOOD_HELO, "alice@fail.sender.test", "s.1"),
        )
        .unwrap();
        assert_eq!(action(&a), "DUNNO", "{state}");
    }
    assert_eq!(dns.log.len(), 0, "{:?}", dns.log.all());
    // Authenticated submission (skip_sasl = true) and an unknown client address: not checked.
    let sasl = request("RCPT", GOOD_HELO, "alice@fail.sender.test", "s.2")
        .replace("sasl_username=\n", "sasl_username=alice\n");
    assert_eq!(action(&ask(&mut conn, &sasl).unwrap()), "DUNNO");
    let unknown = request("RCPT", GOOD_HELO, "alice@fail.sender.test", "s.3")
        .replace("client_address=192.0.2.10", "client_address=unknown");
    assert_eq!(action(&ask(&mut conn, &unknown).unwrap()), "DUNNO");
    assert_eq!(dns.log.len(), 0, "{:?}", dns.log.all());
}

/// A HELO that is not a domain name (an address literal, one label) gives none without a
/// lookup: the MAIL FROM decides, and a null sender with it is not checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_helo_that_is_not_a_domain_name_is_not_looked_up() {
    let (dns, _dir, d) = lab(&[]).await;
    let mut conn = d.connect();
    for (i, helo) in ["[192.0.2.10]", "localhost", "192.0.2.10"]
        .into_iter()
        .enumerate()
    {
        let fail = ask(
            &mut conn,
            &request("RCPT", helo, "alice@fail.sender.test", &format!("h.{i}")),
        )
        .unwrap();
        assert!(
            meets(action(&fail), Expect::Reject("identity mailfrom")),
            "{helo}: {fail:?}"
        );
        let null = ask(&mut conn, &request("RCPT", helo, "", &format!("n.{i}"))).unwrap();
        assert_eq!(action(&null), "DUNNO", "{helo}");
    }
    let asked: Vec<String> = dns.log.all().into_iter().map(|(n, _)| n).collect();
    assert!(
        !asked.is_empty()
            && asked
                .iter()
                .all(|n| n.starts_with("fail.sender.test") || n.starts_with("why.fail.sender.test")),
        "{asked:?}"
    );
}

/// Garbage closes only its own connection; an unknown attribute is ignored (the request is
/// answered); a request over 100 attributes or 64 KiB closes its connection; each is counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_closes_only_its_connection_and_unknown_attributes_are_ignored() {
    let (_dns, _dir, d) = lab(&[]).await;
    let mut good = d.connect();
    assert!(
        ask(
            &mut good,
            &request("RCPT", GOOD_HELO, "alice@pass.sender.test", "g.1")
        )
        .is_some()
    );
    // The binary socket protocol's frame, Postfix's lines to the wrong socket's reverse.
    let too_many: String = (0..101).map(|i| format!("x{i}=1\n")).collect();
    let too_long = format!("request=smtpd_access_policy\nx={}\n", "y".repeat(65 * 1024));
    for garbage in [
        b"\x00\x00\x00\x0a{\"id\":1}\n\n".to_vec(),
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        too_many.into_bytes(),
        too_long.into_bytes(),
    ] {
        let mut bad = d.connect();
        let _ = bad.write_all(&garbage);
        let mut rest = Vec::new();
        let n = bad.read_to_end(&mut rest);
        assert!(
            matches!(n, Ok(0)) || n.is_err(),
            "closed without an answer: {:?}",
            String::from_utf8_lossy(&rest)
        );
    }
    // The other connection goes on, and a newer Postfix's extra attribute is ignored.
    let newer = request("RCPT", GOOD_HELO, "alice@pass.sender.test", "g.2")
        .replace("request=", "policy_context=submission\nserver_address=127.0.0.1\nserver_port=25\ncompatibility_level=3.6\nmail_version=3.9.0\nrequest=");
    let a = ask(&mut good, &newer).expect("still served");
    assert!(meets(action(&a), Expect::Prepend("pass")), "{a:?}");
    // A request split across writes, with CRLF line ends, is one request.
    let crlf = request("RCPT", GOOD_HELO, "alice@pass.sender.test", "g.3").replace('\n', "\r\n");
    let (head, tail) = crlf.split_at(40);
    good.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    good.write_all(tail.as_bytes()).unwrap();
    let a = read_answer(&mut std::io::BufReader::new(&mut good)).unwrap();
    assert!(meets(action(&a), Expect::Prepend("pass")), "{a:?}");
    let m = d.metrics();
    assert!(
        m.contains("mailpolicyd_postfix_policy_malformed_total 4"),
        "{m}"
    );
}

/// The settings: each changes exactly its part of the decision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_change_the_decision() {
    let dns = authority().await;
    let dir = tempfile::tempdir().unwrap();
    let d = Daemon::start(
        dir.path(),
        dns.addr,
        &[
            ("MAILPOLICYD_POSTFIX_POLICY_MAIL_FROM_REJECT", "never"),
            ("MAILPOLICYD_POSTFIX_POLICY_HELO_REJECT", "never"),
            ("MAILPOLICYD_POSTFIX_POLICY_TEMPERROR", "dunno"),
            ("MAILPOLICYD_POSTFIX_POLICY_PERMERROR", "reject"),
            ("MAILPOLICYD_POSTFIX_POLICY_SKIP_SASL", "false"),
        ],
    );
    let mut conn = d.connect();
    let mut n = 0;
    let mut ask_for = |helo: &str, sender: &str, edit: &dyn Fn(String) -> String| {
        n += 1;
        let req = edit(request("RCPT", helo, sender, &format!("set.{n}")));
        action(&ask(&mut conn, &req).unwrap()).to_owned()
    };
    let same = |s: String| s;
    // mail_from_reject = never: delivered with the fail header.
    let a = ask_for(GOOD_HELO, "alice@fail.sender.test", &same);
    assert!(meets(&a, Expect::Prepend("fail")), "{a}");
    // helo_reject = never (and mail_from_reject = never): the null sender's fail is a header.
    let a = ask_for(BAD_HELO, "", &same);
    assert!(meets(&a, Expect::Prepend("fail")), "{a}");
    assert!(a.contains("identity=helo"), "{a}");
    // temperror = dunno: the SERVFAIL's temperror is a header, not a 451.
    let a = ask_for(GOOD_HELO, "alice@broken.sender.test", &same);
    assert!(meets(&a, Expect::Prepend("temperror")), "{a}");
    // permerror = reject: RFC 7372's 5.7.24.
    let a = ask_for(GOOD_HELO, "alice@perm.sender.test", &same);
    assert!(a.starts_with("550 5.7.24 SPF permerror"), "{a}");
    // skip_sasl = false: an authenticated client is checked.
    let a = ask_for(GOOD_HELO, "alice@pass.sender.test", &|s| {
        s.replace("sasl_username=\n", "sasl_username=alice\n")
    });
    assert!(meets(&a, Expect::Prepend("pass")), "{a}");
    drop(d);

    let d = Daemon::start(
        dir.path(),
        dns.addr,
        &[
            ("MAILPOLICYD_POSTFIX_POLICY_MAIL_FROM_REJECT", "softfail"),
            ("MAILPOLICYD_POSTFIX_POLICY_PREPEND", "false"),
            (
                "MAILPOLICYD_POSTFIX_POLICY_SKIP_NETWORKS",
                "198.51.100.0/24, 2001:db8::/32",
            ),
            ("MAILPOLICYD_POSTFIX_POLICY_TIMEOUT_MS", "300"),
        ],
    );
    let mut conn = d.connect();
    let mut ask_for = |sender: &str, ip: &str, instance: &str| {
        let req = request("RCPT", GOOD_HELO, sender, instance)
            .replace("client_address=192.0.2.10", &format!("client_address={ip}"));
        action(&ask(&mut conn, &req).unwrap()).to_owned()
    };
    // mail_from_reject = softfail.
    let a = ask_for("alice@soft.sender.test", "192.0.2.10", "t.1");
    assert!(meets(&a, Expect::Reject("SPF softfail")), "{a}");
    // prepend = false: a pass is DUNNO.
    assert_eq!(
        ask_for("alice@pass.sender.test", "192.0.2.10", "t.2"),
        "DUNNO"
    );
    // skip_networks: a listed relay is not checked (its fail would be a 550).
    let before = dns.log.len();
    assert_eq!(
        ask_for("alice@fail.sender.test", "198.51.100.9", "t.3"),
        "DUNNO"
    );
    assert_eq!(
        ask_for("alice@fail.sender.test", "2001:db8::25", "t.4"),
        "DUNNO"
    );
    assert_eq!(dns.log.len(), before);
    // timeout_ms: an authority that takes 2 s is past the 300 ms budget: temperror → defer.
    dns.delay("slow.sender.test", Duration::from_secs(2));
    let a = ask_for("alice@slow.sender.test", "192.0.2.77", "t.5");
    assert!(meets(&a, Expect::Defer("took longer than 300 ms")), "{a}");
}

/// The loopback TCP listener answers the same, and the metrics count requests by action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_listener_and_metrics() {
    let dns = authority().await;
    let dir = tempfile::tempdir().unwrap();
    let port = postfix_lab::free_port();
    let listen = format!("127.0.0.1:{port}");
    let d = Daemon::start(
        dir.path(),
        dns.addr,
        &[("MAILPOLICYD_POSTFIX_POLICY_LISTEN", &listen)],
    );
    let mut tcp = std::net::TcpStream::connect(&listen).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut reader = std::io::BufReader::new(tcp.try_clone().unwrap());
    for (i, case) in CASES.iter().enumerate() {
        tcp.write_all(request("RCPT", case.helo, case.sender, &format!("tcp.{i}")).as_bytes())
            .unwrap();
        let a = read_answer(&mut reader).unwrap();
        assert!(meets(action(&a), case.expect), "{}: {a:?}", case.name);
    }
    tcp.write_all(request("DATA", GOOD_HELO, "", "tcp.x").as_bytes())
        .unwrap();
    assert_eq!(action(&read_answer(&mut reader).unwrap()), "DUNNO");
    let count = |e: &Expect| {
        CASES
            .iter()
            .filter(|c| std::mem::discriminant(&c.expect) == std::mem::discriminant(e))
            .count() as u64
    };
    assert_eq!(
        d.metric("mailpolicyd_postfix_policy_requests_total{action=\"reject\"}"),
        count(&Expect::Reject(""))
    );
    assert_eq!(
        d.metric("mailpolicyd_postfix_policy_requests_total{action=\"defer\"}"),
        count(&Expect::Defer(""))
    );
    assert_eq!(
        d.metric("mailpolicyd_postfix_policy_requests_total{action=\"prepend\"}"),
        count(&Expect::Prepend(""))
    );
    assert_eq!(
        d.metric("mailpolicyd_postfix_policy_requests_total{action=\"dunno\"}"),
        1
    );
    assert_eq!(
        d.metric("mailpolicyd_requests_total{op=\"postfix_policy\",result=\"ok\"}"),
        CASES.len() as u64 + 1
    );
    assert!(
        d.metrics()
            .contains("mailpolicyd_request_duration_seconds_count")
    );
}

/// SIGTERM: the daemon drains and removes its policy socket; a request being answered when
/// it stops is answered first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_removes_the_policy_socket() {
    let dns = authority().await;
    let dir = tempfile::tempdir().unwrap();
    let mut d = Daemon::start(
        dir.path(),
        dns.addr,
        &[("MAILPOLICYD_POSTFIX_POLICY_MODE", "0640")],
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&d.policy).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o640);
    dns.delay("pass.sender.test", Duration::from_millis(800));
    let mut conn = d.connect();
    conn.write_all(request("RCPT", GOOD_HELO, "alice@pass.sender.test", "z.1").as_bytes())
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let status = d.stop();
    assert!(status.success(), "{status}");
    let a = read_answer(&mut std::io::BufReader::new(&mut conn)).expect("answered while draining");
    assert!(meets(action(&a), Expect::Prepend("pass")), "{a:?}");
    assert!(!d.policy.exists(), "the policy socket is removed");
}

/// A bad `[postfix_policy]` value is exit 64 naming the key; the defaults are in
/// `config --print-default`.
#[test]
fn bad_settings_exit_64_naming_the_key() {
    for (key, value) in [
        ("MODE", "rw-rw-rw-"),
        ("LISTEN", "localhost"),
        ("LISTEN", "192.0.2.1:10031"),
        ("MAIL_FROM_REJECT", "always"),
        ("HELO_REJECT", "neutral"),
        ("TEMPERROR", "reject"),
        ("PERMERROR", "defer"),
        ("PREPEND", "maybe"),
        ("SKIP_SASL", "perhaps"),
        ("SKIP_NETWORKS", "192.0.2.0/40"),
        ("TIMEOUT_MS", "0"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailpolicyd"))
            .args(["serve", "--socket"])
            .arg(dir.path().join("s.sock"))
            .args(["--upstream", "127.0.0.1:9", "--admin", ""])
            .env(format!("MAILPOLICYD_POSTFIX_POLICY_{key}"), value)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{key}={value}: {err}");
        assert!(
            err.contains(&format!("postfix_policy.{}", key.to_lowercase())),
            "{key}={value}: {err}"
        );
    }
    let out = common::cli(&["config", "--print-default"]);
    let text = String::from_utf8(out.stdout).unwrap();
    let section = text.split("[postfix_policy]").nth(1).expect("the section");
    for line in [
        "socket = \"\"",
        "mode = \"0666\"",
        "listen = \"\"",
        "mail_from_reject = \"fail\"",
        "helo_reject = \"fail\"",
        "temperror = \"defer\"",
        "permerror = \"dunno\"",
        "prepend = true",
        "skip_sasl = true",
        "skip_networks = []",
        "timeout_ms = 10000",
        "env: MAILPOLICYD_POSTFIX_POLICY_SKIP_NETWORKS",
    ] {
        assert!(section.contains(line), "{line} in {section}");
    }
}
