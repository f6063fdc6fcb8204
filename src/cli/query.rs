//! `mailpolicyd query` and `mailpolicyd stats`: one request to a running daemon over its
//! socket, the reply in words (a parsed record in [`report`]'s words) or, with `--json`, as
//! the wire's JSON. Exit 0 answered, 1 error answer, 2 usage error, 69 daemon unreachable.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use mailpolicyd::client::{BlockingClient, ClientError};
use mailpolicyd::config;
use mailpolicyd::model::dmarc::{DkimIdentity, DkimResult, DmarcInput, SpfIdentity};
use mailpolicyd::model::spf::SpfResult;
use mailpolicyd::policy::atps::AtpsHash;
use mailpolicyd::proto::{Op, Reply};

use super::report::{describe, diagnostics, words};
use super::{ConnArgs, QueryWhat};

fn socket_path(conn: &ConnArgs) -> PathBuf {
    if let Some(p) = &conn.socket {
        return p.clone();
    }
    if let Ok(p) = std::env::var("MAILPOLICYD_SOCKET")
        && !p.is_empty()
    {
        return PathBuf::from(p);
    }
    config::default_socket_path(std::env::var("XDG_RUNTIME_DIR").ok().as_deref()).0
}

fn connect(conn: &ConnArgs) -> Result<BlockingClient, ExitCode> {
    let path = socket_path(conn);
    BlockingClient::connect(&path, Duration::from_secs(10)).map_err(|e| {
        eprintln!(
            "mailpolicyd: cannot reach the daemon at {}: {e}",
            path.display()
        );
        ExitCode::from(69)
    })
}

fn print_reply(conn: &ConnArgs, what: &str, reply: &Reply) {
    if conn.json {
        println!(
            "{}",
            serde_json::to_string_pretty(reply).unwrap_or_default()
        );
        return;
    }
    match reply {
        Reply::Policy(p) => {
            let a = &p.answer;
            println!("{what} {}: {}", a.name, describe(&a.data));
            println!(
                "  found at {}, rcode {}, ttl {}s, source {}, dnssec {}",
                a.found_at.as_deref().unwrap_or("-"),
                rcode_words(a.rcode),
                p.ttl,
                words(&p.source),
                words(&a.dnssec)
            );
            if let Some(raw) = &a.raw {
                println!("  record: {raw}");
            }
            for d in diagnostics(&a.data) {
                println!("  {d}");
            }
        }
        Reply::Dmarc(d) => {
            match (&d.found_at, &d.record) {
                (Some(at), Some(rec)) => {
                    println!("dmarc {}: {}", d.domain, describe(&rec.answer.data));
                    println!(
                        "  found at _dmarc.{at} ({}), source {}",
                        d.reason.as_ref().map_or("-".to_owned(), words),
                        words(&d.source)
                    );
                    if let Some((tag, disp)) = &d.applied {
                        println!("  applies: {} = {disp}", words(tag));
                    }
                    if let Some(raw) = &rec.answer.raw {
                        println!("  record: {raw}");
                    }
                    for diag in diagnostics(&rec.answer.data) {
                        println!("  {diag}");
                    }
                }
                _ => println!("dmarc {}: no DMARC policy", d.domain),
            }
            if let Some(org) = &d.org_domain {
                println!("  organizational domain: {org}");
            }
            for n in &d.notes {
                println!("  note: {n}");
            }
        }
        Reply::SpfCheck(c) => {
            println!("spf {} for {}: {}", c.identity, c.domain, c.result);
            if let Some(m) = &c.mechanism {
                println!("  matched: {m}");
            }
            if let Some(e) = &c.explanation {
                println!("  explanation: {e}");
            }
            if let Some(p) = &c.problem {
                println!("  problem: {p}");
            }
            println!(
                "  DNS lookups {}, void lookups {}",
                c.dns_lookups, c.void_lookups
            );
            println!("  Received-SPF: {}", c.received_spf);
        }
        Reply::DmarcVerdict(v) => {
            println!("dmarc {}: {} → {}", v.from_domain, v.result, v.disposition);
            if let (Some(at), Some(tag)) = (&v.found_at, &v.applied) {
                println!(
                    "  policy from _dmarc.{at} ({}), tag {}",
                    v.reason.as_ref().map_or("-".to_owned(), words),
                    words(tag)
                );
            }
            if let Some(s) = &v.spf {
                println!(
                    "  spf {}: passed {}, aligned {} ({})",
                    s.domain, s.passed, s.aligned, s.mode
                );
            }
            for d in &v.dkim {
                println!(
                    "  dkim {}: passed {}, aligned {} ({})",
                    d.domain, d.passed, d.aligned, d.mode
                );
            }
            for (i, c) in v.candidates.iter().enumerate() {
                let won = if Some(i) == v.winner {
                    " (applied)"
                } else {
                    ""
                };
                println!("  candidate {}: {}={}{won}", c.source, c.tag, c.disposition);
            }
            for n in &v.notes {
                println!("  note: {n}");
            }
        }
        Reply::Stats(s) => {
            println!("upstream queries: {}", s.upstream_total());
            for (k, n) in &s.hits {
                let m = s
                    .misses
                    .iter()
                    .find(|(k2, _)| k2 == k)
                    .map_or(0, |(_, m)| *m);
                if n + m > 0 {
                    println!("  {k}: {n} hits, {m} misses");
                }
            }
            println!(
                "prefetches {}, stale served {}, coalesced {}, rate limited {}, wildcard marked {} / synthesized {}",
                s.prefetches,
                s.stale_served,
                s.coalesced,
                s.rate_limited,
                s.wildcard_marked,
                s.wildcard_synthesized
            );
            println!(
                "cache: {} entries, {} bytes",
                s.cache_entries, s.cache_bytes
            );
        }
        Reply::Hello { version, server } => println!("{server} (protocol {version})"),
        Reply::Pong => println!("pong"),
        #[allow(unreachable_patterns)]
        other => println!(
            "{}",
            serde_json::to_string_pretty(other).unwrap_or_default()
        ),
    }
}

/// A response code in words.
fn rcode_words(r: mailpolicyd::model::Rcode) -> String {
    use mailpolicyd::model::Rcode;
    match r {
        Rcode::NoError => "no error".to_owned(),
        Rcode::NxDomain => "no such domain (NXDOMAIN)".to_owned(),
        Rcode::ServFail => "server failure (SERVFAIL)".to_owned(),
        #[allow(unreachable_patterns)]
        other => words(&other),
    }
}

/// `mailpolicyd query ...`: one question to the running daemon.
pub fn query(conn: ConnArgs, what: QueryWhat) -> ExitCode {
    let (label, op) = match what {
        QueryWhat::Dmarc { domain } => ("dmarc", Op::Dmarc { domain }),
        QueryWhat::Spf { domain } => ("spf", Op::Spf { domain }),
        QueryWhat::Dkim { selector, domain } => ("dkim", Op::DkimKey { selector, domain }),
        QueryWhat::Atps {
            signer,
            author,
            hash,
        } => {
            let Some(hash) = AtpsHash::from_token(&hash) else {
                eprintln!("mailpolicyd: --hash must be sha256, sha1 or none");
                return ExitCode::from(2);
            };
            (
                "atps",
                Op::Atps {
                    signer,
                    author,
                    hash,
                },
            )
        }
        QueryWhat::Tlsa { host, port } => ("tlsa", Op::Tlsa { host, port }),
        QueryWhat::SpfCheck {
            ip,
            mail_from,
            helo,
        } => {
            let helo = helo.unwrap_or_else(|| {
                mail_from
                    .rsplit_once('@')
                    .map_or(String::new(), |(_, d)| d.to_owned())
            });
            (
                "spf-check",
                Op::SpfCheck {
                    ip,
                    mail_from,
                    helo,
                },
            )
        }
        QueryWhat::DmarcEval {
            from_domain,
            spf,
            dkim,
            forwarder,
            seed,
        } => {
            let spf = match spf.as_deref().map(|s| s.rsplit_once(':')) {
                None => None,
                Some(Some((domain, result))) => match SpfResult::from_token(result) {
                    Some(result) => Some(SpfIdentity {
                        domain: domain.to_owned(),
                        result,
                    }),
                    None => return usage(&format!("--spf: {result:?} is not an SPF result")),
                },
                Some(None) => return usage("--spf takes DOMAIN:RESULT"),
            };
            let mut sigs = Vec::new();
            for d in dkim {
                let parts: Vec<&str> = d.split(':').collect();
                let [domain, selector, result] = parts[..] else {
                    return usage("--dkim takes DOMAIN:SELECTOR:RESULT");
                };
                let Some(result) = DkimResult::from_token(result) else {
                    return usage(&format!("--dkim: {result:?} is not a DKIM result"));
                };
                sigs.push(DkimIdentity {
                    domain: domain.to_owned(),
                    selector: selector.to_owned(),
                    result,
                });
            }
            (
                "dmarc-eval",
                Op::DmarcEvaluate(DmarcInput {
                    from_domain,
                    spf,
                    dkim: sigs,
                    forwarders: forwarder,
                    seed,
                }),
            )
        }
    };
    let mut client = match connect(&conn) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.call(op) {
        Ok(reply) => {
            print_reply(&conn, label, &reply);
            ExitCode::SUCCESS
        }
        Err(ClientError::Server(e)) => {
            if conn.json {
                println!("{}", serde_json::json!({"error": e}));
            } else {
                eprintln!("mailpolicyd: {e}");
            }
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("mailpolicyd: {e}");
            ExitCode::from(69)
        }
    }
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("mailpolicyd: {msg}");
    ExitCode::from(2)
}

/// `mailpolicyd stats`: the daemon's counters.
pub fn query_stats(conn: ConnArgs) -> ExitCode {
    let mut client = match connect(&conn) {
        Ok(c) => c,
        Err(code) => return code,
    };
    match client.call(Op::Stats) {
        Ok(reply) => {
            print_reply(&conn, "stats", &reply);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mailpolicyd: {e}");
            ExitCode::from(69)
        }
    }
}
