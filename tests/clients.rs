//! The Perl and Lua clients (`clients/perl/`, `clients/lua/`) against the real daemon binary,
//! whose upstream is a real authoritative server on loopback (hickory-server,
//! `tests/dnsserver/`). Each client's check script asks a fixed list of questions through the
//! client's methods and prints what it got, with the operation each method stands for; this
//! test then asks the socket each operation itself (JSON lines, one fresh connection per
//! question) and asks the Python client the same calls, and all answers must agree, field for
//! field (the remaining TTL and hit/miss aside). On top of that it checks specific fields
//! against the zones below: DMARC `p=reject` and `sp=quarantine`, the SPF record's mechanisms,
//! the DKIM key's size, `spf_check` pass and fail, the DMARC verdict, and the error codes.
//!
//! The rspamd plugin example (`clients/lua/rspamd/mailpolicyd.lua`) runs in a real rspamd
//! (Debian's): `rspamadm configtest -s` loads it, and for messages From a `p=reject`, an
//! `sp=quarantine`, a `p=none` and a policy-less domain, and an invalid name, the symbol it
//! inserts and its options agree with the socket's own `dmarc` answer.
//!
//! The SpamAssassin plugin example (`clients/perl/spamassassin/MailPolicyd.pm`, on
//! `MailPolicy.pm`) runs in Debian's SpamAssassin (taint mode on): its eval rules and its
//! header agree with the socket's `dmarc` answer for the same From domains.
//!
//! Perl, Lua (every `lua5.x`/`lua` on PATH with luasocket and a JSON module; each with cjson
//! and with dkjson when both are installed), python3 and rspamd are skipped, with a line
//! saying so, only when missing and `MAILPOLICYD_REQUIRE_TOOLS` is unset; CI sets it, and
//! installs them (SpamAssassin too).

mod common;
mod dnsserver;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use dnsserver::{TestDns, Zone};
use hickory_server::proto::rr::rdata::{A, AAAA};
use hickory_server::proto::rr::{RData, RecordType};
use serde_json::{Value, json};

const SPF: &str = "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 include:_spf.example.test -all";

/// The zones the check scripts' questions are about (see their question lists).
fn zones() -> Vec<Zone> {
    let key = include_str!("data/dkim/rsa2048.spki.b64").trim();
    let dkim = format!("v=DKIM1; k=rsa; p={key}");
    // A key record longer than one TXT string, split as publishers do.
    let parts: Vec<String> = dkim
        .as_bytes()
        .chunks(255)
        .map(|c| String::from_utf8(c.to_vec()).unwrap())
        .collect();
    let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
    vec![
        Zone::new("test.", 300),
        Zone::new("example.test.", 300)
            .txt("@", 3600, &[SPF])
            .txt("_spf", 3600, &["v=spf1 ip4:203.0.113.0/24 -all"])
            .txt(
                "_dmarc",
                3600,
                &["v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@example.test"],
            )
            .txt("s1._domainkey", 3600, &parts)
            .txt("xn--bcher-kva", 3600, &["v=spf1 -all"])
            .txt("_dmarc.none", 3600, &["v=DMARC1; p=none"])
            .txt("none", 3600, &["v=spf1 -all"])
            .record("sub", 3600, RData::A(A("192.0.2.1".parse().unwrap())))
            .record("mx", 3600, RData::A(A("192.0.2.25".parse().unwrap())))
            .record(
                "mx",
                3600,
                RData::AAAA(AAAA("2001:db8::25".parse().unwrap())),
            ),
        Zone::new("other.test.", 300).txt("@", 3600, &["v=spf1 -all"]),
    ]
}

/// The daemon binary, stopped (SIGTERM to its PID, then waited for) when dropped.
struct Daemon {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `mailpolicyd serve` with `upstream` and waits (up to 20 s) until it answers.
    fn start(upstream: std::net::SocketAddr) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("mp.sock");
        // The daemon's log (hickory's DNSSEC warnings for the TLSA question) goes to a file,
        // shown if it exits early.
        let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
        let child = common::daemon_command(&socket, upstream)
            .args(["--admin", ""])
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut d = Daemon {
            child,
            socket,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while ask(&d.socket, &json!("ping")).ok() != Some(json!({"ok": "pong"})) {
            if let Some(status) = d.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(d._dir.path().join("daemon.log"));
                panic!("the daemon exited: {status}: {}", log.unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "the daemon did not come up");
            std::thread::sleep(Duration::from_millis(20));
        }
        d
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Asks the socket one operation over a fresh JSON-lines connection; the response's `result`.
fn ask(socket: &Path, op: &Value) -> std::io::Result<Value> {
    let mut s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_vec(&json!({"id": 1, "op": op})).unwrap();
    line.push(b'\n');
    s.write_all(&line)?;
    let mut reply = String::new();
    BufReader::new(s).read_line(&mut reply)?;
    let reply: Value = serde_json::from_str(&reply).map_err(std::io::Error::other)?;
    assert_eq!(reply["id"], 1, "{reply}");
    Ok(reply["result"].clone())
}

/// Whether a missing tool is a failure here (CI) rather than a skip.
fn require_tools() -> bool {
    std::env::var_os("MAILPOLICYD_REQUIRE_TOOLS").is_some()
}

fn skip(what: &str) {
    assert!(
        !require_tools(),
        "{what} (MAILPOLICYD_REQUIRE_TOOLS is set)"
    );
    println!("skipped: {what}");
}

/// Runs `program args` (bounded by 60 s, killed by PID past it) and returns its stdout,
/// failing on a non-zero exit with its stderr.
fn run(program: &str, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    use std::process::Stdio;
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
        }
    });
    let out = child.wait_with_output().unwrap();
    let _ = tx.send(());
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Whether `program args` runs and exits 0 (an interpreter with the modules a client needs).
fn works(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

fn script(rel: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(rel)
        .to_str()
        .unwrap()
        .to_owned()
}

/// How values are compared: what differs between two askings of the same question (the
/// remaining TTL, hit or miss) is dropped; for Lua, numbers are compared as doubles (Lua's
/// number) and an empty object as an empty array (Lua has one table type).
fn normalize(v: &Value, lua: bool) -> Value {
    match v {
        Value::Object(m) if lua && m.is_empty() => json!([]),
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| *k != "ttl" && *k != "source")
                .map(|(k, v)| {
                    let v = if k == "queries" {
                        // [[name, hit|miss], ...]: the names asked.
                        Value::Array(v.as_array().unwrap().iter().map(|q| q[0].clone()).collect())
                    } else {
                        normalize(v, lua)
                    };
                    (k.clone(), v)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|x| normalize(x, lua)).collect()),
        Value::Number(n) if lua => json!(n.as_f64().unwrap()),
        other => other.clone(),
    }
}

/// One answer of a check script: the method's reply as the socket gives it, by asking the
/// operation the script says the method stands for and taking the same key of its `ok`.
fn socket_answer(socket: &Path, answer: &Value) -> Value {
    let result = ask(socket, &answer["op"]).unwrap();
    match (&result["ok"], answer["key"].as_str()) {
        (Value::Null, _) => json!({"error": result["error"]}),
        (ok, Some(key)) => json!({"ok": ok[key]}),
        (ok, None) => json!({"ok": ok}),
    }
}

/// Asks the Python client (`clients/python/mailpolicy.py`) the calls of `answers`; its
/// results in the same shape.
fn python_answers(socket: &Path, answers: &[Value]) -> Vec<Value> {
    const PY: &str = r#"
import json, sys
sys.path.insert(0, sys.argv[1])
from mailpolicy import Client, MailpolicyError
calls = json.load(sys.stdin)
out = []
for q in calls:
    with Client(sys.argv[2]) as c:
        try:
            out.append({"ok": getattr(c, q["method"])(*q["args"], **(q["options"] or {}))})
        except MailpolicyError as e:
            out.append({"error": {"code": e.code, "message": e.message}})
print(json.dumps(out))
"#;
    // One connection per call: the Python client's reconnect after the daemon closed the
    // connection (the `hello 2.0` question) is not what is compared here, and fails when the
    // write meets EPIPE (its close() flushes the unsent request again).
    let calls: Vec<Value> = answers
        .iter()
        .map(|a| json!({"method": a["method"], "args": a["args"], "options": a["options"]}))
        .collect();
    let out = run(
        "python3",
        &[
            "-c",
            PY,
            &script("clients/python"),
            socket.to_str().unwrap(),
        ],
        Some(&serde_json::to_vec(&calls).unwrap()),
    );
    serde_json::from_slice::<Vec<Value>>(&out).unwrap()
}

/// The answer of `out` to `method(args...)`.
fn answer<'a>(out: &'a Value, method: &str, args: &Value) -> &'a Value {
    out["answers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["method"] == method && &a["args"] == args)
        .map(|a| &a["result"])
        .unwrap_or_else(|| panic!("{}: no answer to {method}{args}", out["client"]))
}

fn ok<'a>(out: &'a Value, method: &str, args: Value) -> &'a Value {
    let r = answer(out, method, &args);
    assert!(
        r.get("ok").is_some(),
        "{}: {method}{args}: {r}",
        out["client"]
    );
    &r["ok"]
}

fn error_code(out: &Value, method: &str, args: Value) -> String {
    let r = answer(out, method, &args);
    r["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("{}: {method}{args}: {r}", out["client"]))
        .to_owned()
}

/// What the zones say, read through one client's answers.
fn check_fields(out: &Value) {
    let who = out["client"].clone();
    // DMARC: the author domain's p=, a subdomain's sp= from the organizational domain, none.
    let d = ok(out, "dmarc", json!(["example.test"]));
    assert_eq!(d["applied"], json!(["p", "reject"]), "{who}");
    assert_eq!(d["found_at"], "example.test", "{who}");
    assert_eq!(
        d["record"]["answer"]["data"]["dmarc"]["valid"]["policy"]["p"], "reject",
        "{who}"
    );
    let d = ok(out, "dmarc", json!(["sub.example.test"]));
    assert_eq!(d["applied"], json!(["sp", "quarantine"]), "{who}");
    assert_eq!(d["found_at"], "example.test", "{who}");
    assert!(
        ok(out, "dmarc", json!(["other.test"]))["applied"].is_null(),
        "{who}"
    );
    // SPF: the record's directives, in order.
    let spf = &ok(out, "spf", json!(["example.test"]))["answer"]["data"]["spf"]["valid"]["policy"];
    let directives = spf["directives"].as_array().unwrap();
    assert_eq!(directives.len(), 4, "{who}: {spf}");
    assert_eq!(
        directives[0]["mechanism"]["ip4"],
        json!({"addr": "192.0.2.0", "prefix": 24}),
        "{who}"
    );
    assert!(directives[1]["mechanism"].get("ip6").is_some(), "{who}");
    assert!(directives[2]["mechanism"].get("include").is_some(), "{who}");
    assert_eq!(directives[3]["qualifier"], "-", "{who}");
    assert_eq!(directives[3]["mechanism"], "all", "{who}");
    assert_eq!(out["checks"]["spf_directives"], 4, "{who}");
    // A name that does not exist; a U-label sent as UTF-8, asked as its A-label.
    let nx = ok(out, "spf", json!(["nope.example.test"]));
    assert_eq!(nx["answer"]["rcode"], "nx_domain", "{who}");
    let idn = ok(out, "spf", json!(["bücher.example.test"]));
    assert_eq!(idn["answer"]["name"], "xn--bcher-kva.example.test", "{who}");
    // The DKIM key (a record of two strings).
    let key = ok(out, "dkim_key", json!(["s1", "example.test"]));
    assert_eq!(
        key["answer"]["data"]["dkim_key"]["valid"]["policy"]["key_bits"], 2048,
        "{who}"
    );
    // spf_check: ip4, ip6, include, -all, and the null sender (the HELO identity).
    let check = |ip: &str, from: &str, helo: &str| {
        ok(out, "spf_check", json!([ip, from, helo]))["result"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let from = "user@example.test";
    assert_eq!(
        check("192.0.2.5", from, "mail.example.test"),
        "pass",
        "{who}"
    );
    assert_eq!(
        check("198.51.100.7", from, "mail.example.test"),
        "fail",
        "{who}"
    );
    assert_eq!(
        check("2001:db8::25", from, "mail.example.test"),
        "pass",
        "{who}"
    );
    assert_eq!(
        check("203.0.113.9", from, "mail.example.test"),
        "pass",
        "{who}"
    );
    assert_eq!(check("192.0.2.5", "", "example.test"), "pass", "{who}");
    let null_sender = ok(out, "spf_check", json!(["192.0.2.5", "", "example.test"]));
    assert_eq!(null_sender["identity"], "helo", "{who}");
    // The DMARC verdicts: SPF failing for a p=reject domain; an aligned DKIM pass.
    let v = ok(out, "dmarc_evaluate", json!(["example.test"]));
    assert_eq!(v["result"], "fail", "{who}: {v}");
    assert_eq!(v["disposition"], "reject", "{who}: {v}");
    let v = ok(out, "dmarc_evaluate", json!(["sub.example.test"]));
    assert_eq!(v["result"], "pass", "{who}: {v}");
    // Errors the daemon answered, with their stable codes.
    assert_eq!(
        error_code(out, "spf", json!(["a..b"])),
        "invalid_name",
        "{who}"
    );
    assert_eq!(
        error_code(
            out,
            "spf_check",
            json!(["not-an-ip", from, "mail.example.test"])
        ),
        "invalid_ip",
        "{who}"
    );
    assert_eq!(
        error_code(out, "hello", json!(["3.0"])),
        "unsupported_version",
        "{who}"
    );
    // The client's own checks: the reconnect, the timeout, an unreachable socket.
    assert_eq!(out["checks"]["connections_opened"], 2, "{who}");
    assert_eq!(out["checks"]["timeout_code"], "client_timeout", "{who}");
    assert_eq!(out["checks"]["connect_code"], "client_connect", "{who}");
}

/// Every answer of a client equals the socket's own answer to the same operation, and the
/// Python client's answer to the same call.
fn check_against_socket_and_python(out: &Value, socket: &Path, python: bool) {
    let lua = out["client"] == "lua";
    let answers = out["answers"].as_array().unwrap();
    assert!(answers.len() >= 20, "{}", out["client"]);
    for a in answers {
        let want = socket_answer(socket, a);
        assert_eq!(
            normalize(&a["result"], lua),
            normalize(&want, lua),
            "{}: {}{} differs from the socket's answer to {}",
            out["client"],
            a["method"],
            a["args"],
            a["op"]
        );
    }
    if python {
        let py = python_answers(socket, answers);
        assert_eq!(py.len(), answers.len());
        for (a, p) in answers.iter().zip(&py) {
            assert_eq!(
                normalize(&a["result"], lua),
                normalize(p, lua),
                "{}: {}{} differs from the Python client's",
                out["client"],
                a["method"],
                a["args"]
            );
        }
    }
}

/// The Lua interpreters on PATH that have luasocket's unix module and a JSON module, each
/// with the JSON modules it has (cjson first).
fn lua_interpreters() -> Vec<(String, Vec<&'static str>)> {
    let mut found: Vec<(String, Vec<&'static str>)> = Vec::new();
    let mut seen = Vec::new();
    for lua in ["lua5.1", "lua5.2", "lua5.3", "lua5.4", "luajit", "lua"] {
        let Ok(v) = Command::new(lua)
            .args(["-e", "io.write(_VERSION)"])
            .output()
        else {
            continue;
        };
        if !v.status.success() || !works(lua, &["-e", "require('socket.unix')"]) {
            continue;
        }
        // `lua` is usually one of the versioned ones.
        let real = std::fs::canonicalize(which(lua).unwrap_or_default()).unwrap_or_default();
        if seen.contains(&real) {
            continue;
        }
        seen.push(real);
        let json: Vec<&str> = ["cjson", "dkjson"]
            .into_iter()
            .filter(|m| works(lua, &["-e", &format!("require('{m}')")]))
            .collect();
        if !json.is_empty() {
            found.push((lua.to_owned(), json));
        }
    }
    found
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(program))
            .find(|p| p.is_file())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn perl_and_lua_clients_agree_with_the_socket_and_python() {
    let dns = TestDns::start(zones()).await;
    // The subprocesses block: run them off the runtime that serves the DNS zones.
    let addr = dns.addr;
    let ran = tokio::task::spawn_blocking(move || run_clients(addr))
        .await
        .unwrap();
    if ran > 0 {
        // Every client, the socket replays and Python were answered from one upstream query
        // for the SPF record (the rest from the cache).
        let spf_queries = dns
            .log
            .all()
            .iter()
            .filter(|(name, t)| name == "example.test" && *t == RecordType::TXT)
            .count();
        assert_eq!(spf_queries, 1);
    }
}

/// Starts the daemon against `dns` and runs every client that is installed; how many ran.
fn run_clients(dns: std::net::SocketAddr) -> usize {
    let d = Daemon::start(dns);
    let python = works("python3", &["-c", "import json, socket"]);
    if !python {
        skip("python3 is not installed: the clients are compared with the socket only");
    }
    let mut ran = 0;
    let mut questions: Option<Value> = None;
    let mut same_questions = |out: &Value| {
        let asked: Vec<Value> = out["answers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| json!([a["method"], a["args"], a["options"], a["op"], a["key"]]))
            .collect();
        let asked = Value::Array(asked);
        match &questions {
            None => questions = Some(asked),
            Some(q) => assert_eq!(
                q, &asked,
                "{} asks other questions than the first client",
                out["client"]
            ),
        }
    };

    // Perl: core modules only.
    if works("perl", &["-MJSON::PP", "-MIO::Socket::UNIX", "-e", "1"]) {
        let out = run(
            "perl",
            &[
                &script("clients/perl/check_client.pl"),
                d.socket.to_str().unwrap(),
            ],
            None,
        );
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["client"], "perl");
        check_fields(&out);
        check_against_socket_and_python(&out, &d.socket, python);
        same_questions(&out);
        println!(
            "perl: {} answers agree",
            out["answers"].as_array().unwrap().len()
        );
        // The Exim example: its functions, called as ${perl{...}} calls them.
        const EXIM: &str = r#"our $MAILPOLICYD_SOCKET = shift; my $f = shift;
            do $f or die($@ || $!);
            print join("|", mp_dmarc_policy("example.test"), mp_dmarc_policy("sub.example.test"),
              mp_dmarc_policy("other.test"), mp_dmarc_policy("a..b"),
              mp_spf_result("192.0.2.5", 'user@example.test', "mail.example.test"),
              mp_spf_result("198.51.100.7", 'user@example.test', "mail.example.test"),
              mp_received_spf("192.0.2.5", "", "example.test"))"#;
        let exim = run(
            "perl",
            &[
                "-e",
                EXIM,
                d.socket.to_str().unwrap(),
                &script("clients/perl/exim/mailpolicy.pl"),
            ],
            None,
        );
        let exim = String::from_utf8(exim).unwrap();
        let got: Vec<&str> = exim.split('|').collect();
        assert_eq!(
            got[..6],
            ["reject", "quarantine", "na", "fail", "pass", "fail"],
            "{exim}"
        );
        assert!(
            got[6].starts_with("pass ") && got[6].contains("identity=helo"),
            "{exim}"
        );
        ran += 1;
    } else {
        skip("perl with JSON::PP and IO::Socket::UNIX is not installed");
    }

    // Lua: every interpreter with luasocket, with each JSON module it has.
    let luas = lua_interpreters();
    if luas.is_empty() {
        skip("no Lua with luasocket (socket.unix) and cjson or dkjson is installed");
    }
    for (lua, modules) in luas {
        for module in modules {
            let out = run(
                &lua,
                &[
                    &script("clients/lua/check_client.lua"),
                    d.socket.to_str().unwrap(),
                    module,
                ],
                None,
            );
            let out: Value = serde_json::from_slice(&out).unwrap_or_else(|e| {
                panic!("{lua} {module}: {e}: {}", String::from_utf8_lossy(&out))
            });
            assert_eq!(out["client"], "lua");
            assert_eq!(out["checks"]["json_module"], module);
            check_fields(&out);
            check_against_socket_and_python(&out, &d.socket, python);
            same_questions(&out);
            println!(
                "{lua} ({}, {module}): {} answers agree",
                out["checks"]["lua"],
                out["answers"].as_array().unwrap().len()
            );
            ran += 1;
        }
    }
    drop(d);
    ran
}

/// An rspamd of our own (`rspamd -f` with a local configuration directory), stopped
/// (SIGTERM to its PID, then SIGKILL past 20 s) when dropped.
struct Rspamd {
    child: Child,
}

impl Drop for Rspamd {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nobody listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rspamd_plugin_inserts_the_policy_the_socket_gives() {
    let conf = Path::new("/etc/rspamd/rspamd.conf");
    if !conf.is_file() || !works("rspamadm", &["--version"]) || !works("rspamc", &["--help"]) {
        skip("rspamd (Debian's, with /etc/rspamd/rspamd.conf) is not installed");
        return;
    }
    let dns = TestDns::start(zones()).await;
    let addr = dns.addr;
    tokio::task::spawn_blocking(move || run_rspamd(addr, conf))
        .await
        .unwrap();
}

fn run_rspamd(dns: std::net::SocketAddr, conf: &Path) {
    let d = Daemon::start(dns);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path();
    for sub in ["plugins.d", "local.d", "override.d", "db", "run", "log"] {
        std::fs::create_dir(local.join(sub)).unwrap();
    }
    std::fs::copy(
        script("clients/lua/rspamd/mailpolicyd.lua"),
        local.join("plugins.d/mailpolicyd.lua"),
    )
    .unwrap();
    // The configuration the plugin's README gives, with this test's socket.
    std::fs::write(
        local.join("rspamd.conf.local"),
        format!(
            "mailpolicyd {{\n  socket = \"{}\";\n  timeout = 5.0;\n}}\n",
            d.socket.display()
        ),
    )
    .unwrap();
    // rspamd's own lookups go to the test's DNS server; senders on loopback are checked.
    std::fs::write(
        local.join("local.d/options.inc"),
        format!("dns {{ nameserver = [\"{dns}\"]; }}\nlocal_addrs = [];\n"),
    )
    .unwrap();
    let normal = free_port();
    let controller = free_port();
    let proxy = free_port();
    for (worker, port) in [
        ("normal", normal),
        ("controller", controller),
        ("proxy", proxy),
    ] {
        std::fs::write(
            local.join(format!("override.d/worker-{worker}.inc")),
            format!("bind_socket = \"127.0.0.1:{port}\";\ncount = 1;\n"),
        )
        .unwrap();
    }
    // The fuzzy module would resolve rspamd.com's servers: off (no network here).
    std::fs::write(
        local.join("override.d/fuzzy_check.conf"),
        "enabled = false;\n",
    )
    .unwrap();
    std::fs::write(
        local.join("override.d/logging.inc"),
        format!(
            "type = \"file\";\nfilename = \"{}\";\nlevel = \"info\";\n",
            local.join("log/rspamd.log").display()
        ),
    )
    .unwrap();
    let vars: Vec<String> = [
        ("LOCAL_CONFDIR", local.to_path_buf()),
        ("DBDIR", local.join("db")),
        ("RUNDIR", local.join("run")),
        ("LOGDIR", local.join("log")),
    ]
    .iter()
    .map(|(k, v)| format!("--var={k}={}", v.display()))
    .collect();
    let conf = conf.to_str().unwrap();

    // The plugin loads: a strict configtest fails on a plugin that does not.
    let mut args: Vec<&str> = vars.iter().map(String::as_str).collect();
    args.extend(["configtest", "-s", "-c", conf]);
    let out = run("rspamadm", &args, None);
    assert!(
        String::from_utf8_lossy(&out).contains("syntax OK"),
        "{}",
        String::from_utf8_lossy(&out)
    );

    // rspamd itself; as root its workers stay root (-i), so that they can reach the test's
    // socket in its private directory (a deployment gives _rspamd the socket's group).
    let mut cmd = Command::new("rspamd");
    cmd.args(["-f", "-i", "-c", conf])
        .args(&vars)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut rspamd = Rspamd {
        child: cmd.spawn().unwrap(),
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let ctl = format!("127.0.0.1:{controller}");
    while !works("rspamc", &["-h", &ctl, "stat"]) {
        if let Some(status) = rspamd.child.try_wait().unwrap() {
            let log = std::fs::read_to_string(local.join("log/rspamd.log")).unwrap_or_default();
            panic!("rspamd exited: {status}: {log}");
        }
        assert!(Instant::now() < deadline, "rspamd did not come up in 120 s");
        std::thread::sleep(Duration::from_millis(250));
    }
    let log = std::fs::read_to_string(local.join("log/rspamd.log")).unwrap_or_default();
    assert!(
        log.contains("init lua module mailpolicyd"),
        "the plugin was not loaded: {log}"
    );

    let scan = format!("127.0.0.1:{normal}");
    let symbols_for = |from: &str| -> serde_json::Map<String, Value> {
        let msg = local.join("msg.eml");
        std::fs::write(
            &msg,
            format!(
                "From: Sender <{from}>\r\nTo: rcpt@other.test\r\nSubject: policy\r\n\
                 Message-ID: <{}@clients.test>\r\nDate: Mon, 30 Nov 2026 07:00:00 +0000\r\n\r\n\
                 hello\r\n",
                from.len()
            ),
        )
        .unwrap();
        let out = run(
            "rspamc",
            &[
                "-h",
                &scan,
                "-j",
                "-i",
                "192.0.2.5",
                "-F",
                from,
                "--helo",
                "mail.example.test",
                "-r",
                "rcpt@other.test",
                "symbols",
                msg.to_str().unwrap(),
            ],
            None,
        );
        let v: Value = serde_json::from_slice(&out).unwrap();
        v["symbols"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(k, _)| k.starts_with("MAILPOLICYD_"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    };

    let mut seen = Vec::new();
    for domain in [
        "example.test",
        "sub.example.test",
        "none.example.test",
        "other.test",
    ] {
        let got = symbols_for(&format!("user@{domain}"));
        assert_eq!(got.len(), 1, "{domain}: {got:?}");
        let (symbol, detail) = got.iter().next().unwrap();
        // What the socket answers for the same domain.
        let want = ask(&d.socket, &json!({"dmarc": {"domain": domain}})).unwrap();
        let want = &want["ok"]["dmarc"];
        match want["applied"].as_array() {
            Some(applied) => {
                let (tag, policy) = (applied[0].as_str().unwrap(), applied[1].as_str().unwrap());
                assert_eq!(
                    symbol,
                    &format!("MAILPOLICYD_DMARC_{}", policy.to_uppercase()),
                    "{domain}"
                );
                assert_eq!(
                    detail["options"],
                    json!([
                        tag,
                        format!("found_at={}", want["found_at"].as_str().unwrap()),
                        format!("reason={}", want["reason"].as_str().unwrap()),
                    ]),
                    "{domain}"
                );
            }
            None => {
                assert_eq!(symbol, "MAILPOLICYD_DMARC_NA", "{domain}");
                assert_eq!(detail["options"], json!([domain]), "{domain}");
            }
        }
        println!("rspamd: From {domain}: {symbol} {}", detail["options"]);
        seen.push(symbol.clone());
    }
    // The four kinds of answer the zones hold, each once.
    assert_eq!(
        seen,
        [
            "MAILPOLICYD_DMARC_REJECT",
            "MAILPOLICYD_DMARC_QUARANTINE",
            "MAILPOLICYD_DMARC_NONE",
            "MAILPOLICYD_DMARC_NA"
        ]
    );
    // A From domain that is not a name: the daemon's error code.
    let got = symbols_for("user@a..b");
    assert_eq!(
        got.get("MAILPOLICYD_FAIL").map(|s| s["options"].clone()),
        Some(json!(["invalid_name"])),
        "{got:?}"
    );
    drop(rspamd);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spamassassin_plugin_reports_the_policy_the_socket_gives() {
    let pre = Path::new("/etc/spamassassin");
    if !works("spamassassin", &["--version"]) || !pre.join("v320.pre").is_file() {
        skip("SpamAssassin (Debian's, with /etc/spamassassin/*.pre) is not installed");
        return;
    }
    let dns = TestDns::start(zones()).await;
    let addr = dns.addr;
    tokio::task::spawn_blocking(move || run_spamassassin(addr, pre))
        .await
        .unwrap();
}

fn run_spamassassin(dns: std::net::SocketAddr, pre: &Path) {
    let d = Daemon::start(dns);
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path();
    // Debian's plugin loader files (the Check plugin among them), and only our rules.
    for entry in std::fs::read_dir(pre).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "pre") {
            std::fs::copy(&path, rules.join(path.file_name().unwrap())).unwrap();
        }
    }
    let mut cf = format!(
        "loadplugin MailPolicyd::SpamAssassin {}\n\
         mailpolicyd_socket {}\nmailpolicyd_timeout 5\n\
         add_header all Status _YESNO_, score=_SCORE_ required=_REQD_ tests=_TESTS_\n\
         add_header all MailPolicyd-DMARC _MAILPOLICYD_DMARC_\n",
        script("clients/perl/spamassassin/MailPolicyd.pm"),
        d.socket.display()
    );
    for policy in ["reject", "quarantine", "none", "na", "fail"] {
        let rule = format!("MAILPOLICYD_DMARC_{}", policy.to_uppercase());
        cf.push_str(&format!(
            "header {rule} eval:check_mailpolicyd_dmarc('{policy}')\nscore {rule} 0.001\n"
        ));
    }
    std::fs::write(rules.join("local.cf"), cf).unwrap();
    let prefs = rules.join("user_prefs");
    std::fs::write(&prefs, "").unwrap();
    let rules_dir = rules.to_str().unwrap();

    let scan = |from: &str| -> (String, String) {
        let msg = format!(
            "From: Sender <{from}>\r\nTo: rcpt@other.test\r\nSubject: policy\r\n\
             Message-ID: <{}@clients.test>\r\nDate: Mon, 30 Nov 2026 07:00:00 +0000\r\n\r\n\
             hello\r\n",
            from.len()
        );
        let out = run(
            "spamassassin",
            &[
                "-L",
                "-C",
                rules_dir,
                &format!("--siteconfigpath={rules_dir}"),
                "-p",
                prefs.to_str().unwrap(),
            ],
            Some(msg.as_bytes()),
        );
        let out = String::from_utf8(out).unwrap();
        // Headers, unfolded.
        let head = out.split("\n\n").next().unwrap().replace("\n\t", " ");
        let field = |name: &str| {
            head.lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or_else(|| panic!("{from}: no {name} in {out}"))
                .trim()
                .to_owned()
        };
        (field("X-Spam-Status:"), field("X-Spam-MailPolicyd-DMARC:"))
    };

    for domain in [
        "example.test",
        "sub.example.test",
        "none.example.test",
        "other.test",
    ] {
        let (status, header) = scan(&format!("user@{domain}"));
        let want = ask(&d.socket, &json!({"dmarc": {"domain": domain}})).unwrap();
        let want = &want["ok"]["dmarc"];
        let (policy, expected) = match want["applied"].as_array() {
            Some(a) => {
                let (tag, policy) = (a[0].as_str().unwrap(), a[1].as_str().unwrap());
                let at = want["found_at"].as_str().unwrap();
                (policy, format!("{policy} ({tag}:{policy} found_at={at})"))
            }
            None => ("na", "na (none)".to_owned()),
        };
        assert_eq!(header, expected, "{domain}");
        let rule = format!("MAILPOLICYD_DMARC_{}", policy.to_uppercase());
        let tests = status.split("tests=").nth(1).unwrap_or_default();
        let hits: Vec<&str> = tests
            .split([',', ' '])
            .filter(|t| t.starts_with("MAILPOLICYD_"))
            .collect();
        assert_eq!(hits, [rule.as_str()], "{domain}: {status}");
        println!("spamassassin: From {domain}: {rule}, {header}");
    }
    // An invalid name: the daemon's error code.
    let (status, header) = scan("user@a..b");
    assert_eq!(header, "fail (invalid_name)");
    assert!(status.contains("MAILPOLICYD_DMARC_FAIL"), "{status}");
}
