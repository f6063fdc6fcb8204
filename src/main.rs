//! The `mailpolicyd` command. Thin by design: parse arguments, load configuration, call the
//! library, map the outcome to an exit code (0 ok, 1 invalid record or error answer, 2 usage
//! error, 64 bad configuration, 69 daemon unreachable, 70 daemon failure).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use mailpolicyd::client::{BlockingClient, ClientError};
use mailpolicyd::config::{self, Flags};
use mailpolicyd::policy::atps::AtpsHash;
use mailpolicyd::policy::orgdomain::SuffixList;
use mailpolicyd::proto::{Op, Reply};
use mailpolicyd::report::{self, Kind};
use mailpolicyd::resolve::Data;
use mailpolicyd::resolve::evaluate::{DkimIdentity, DkimResult, DmarcInput, SpfIdentity};
use mailpolicyd::resolve::spf::SpfResult;

/// A caching sidecar that answers mail filters' DMARC, SPF, DKIM, ATPS and TLSA questions.
#[derive(Parser)]
#[command(name = "mailpolicyd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (with no configuration file: an embedded default).
    Serve(ServeArgs),
    /// Ask a running daemon.
    Query {
        #[command(flatten)]
        conn: ConnArgs,
        #[command(subcommand)]
        what: QueryWhat,
    },
    /// A running daemon's counters.
    Stats {
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Configuration helpers.
    Config {
        /// Print the default configuration file, commented.
        #[arg(long)]
        print_default: bool,
    },
    /// Parse a record given on the command line (no daemon, no DNS) and print its policy and
    /// diagnostics as JSON. Exit 0 valid, 1 invalid, 2 usage error.
    Parse {
        #[command(subcommand)]
        what: ParseWhat,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// A TOML configuration file (see `config --print-default`).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Unix socket path.
    #[arg(long, value_name = "PATH")]
    socket: Option<String>,
    /// Upstream resolver IP:PORT (repeatable); default: /etc/resolv.conf.
    #[arg(long, value_name = "IP:PORT")]
    upstream: Vec<String>,
    /// Admin HTTP address (/live, /ready, /metrics); "" turns it off.
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
    /// Serve DNS (TXT, TLSA) on this loopback address, e.g. 127.0.0.1:5300.
    #[arg(long, value_name = "ADDR")]
    dns_listen: Option<String>,
    /// Cache snapshot file (written on shutdown, loaded on start).
    #[arg(long, value_name = "PATH")]
    snapshot: Option<String>,
    /// Log format: human or json.
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
}

#[derive(Args)]
struct ConnArgs {
    /// The daemon's socket (default: as `serve` would choose).
    #[arg(long, value_name = "PATH", global = true)]
    socket: Option<PathBuf>,
    /// Print the answer as JSON.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum QueryWhat {
    /// The DMARC policy that applies to mail from DOMAIN.
    Dmarc { domain: String },
    /// The SPF record of DOMAIN.
    Spf { domain: String },
    /// The DKIM key SELECTOR._domainkey.DOMAIN.
    Dkim { selector: String, domain: String },
    /// The ATPS record authorizing SIGNER for AUTHOR.
    Atps {
        signer: String,
        author: String,
        /// The signature's atpsh= (sha256, sha1, none).
        #[arg(long, default_value = "sha256")]
        hash: String,
    },
    /// TLSA records of an MX host.
    Tlsa { host: String, port: Option<u16> },
    /// SPF check_host() for a connection: client IP, envelope sender ("" for the null
    /// sender), HELO name.
    SpfCheck {
        ip: String,
        mail_from: String,
        helo: Option<String>,
    },
    /// The DMARC verdict for a message from FROM_DOMAIN.
    DmarcEval {
        from_domain: String,
        /// The SPF result: DOMAIN:RESULT (e.g. example.com:pass).
        #[arg(long, value_name = "DOMAIN:RESULT")]
        spf: Option<String>,
        /// A DKIM result: DOMAIN:SELECTOR:RESULT (repeatable).
        #[arg(long, value_name = "DOMAIN:SELECTOR:RESULT")]
        dkim: Vec<String>,
        /// A DKIM2 forwarder domain (repeatable).
        #[arg(long, value_name = "DOMAIN")]
        forwarder: Vec<String>,
        /// Seed for pct sampling (deterministic).
        #[arg(long)]
        seed: Option<u64>,
    },
}

#[derive(Subcommand)]
enum ParseWhat {
    /// A DMARC record, e.g. 'v=DMARC1; p=reject; rua=mailto:d@example.com'.
    Dmarc { record: String },
    /// An SPF record, e.g. 'v=spf1 include:_spf.example.com -all'.
    Spf { record: String },
    /// A DKIM key record, e.g. 'v=DKIM1; k=ed25519; p=...'.
    Dkim { record: String },
    /// An ATPS record, e.g. 'v=ATPS1; d=signer.example'.
    Atps { record: String },
    /// A TLSA record in presentation form, e.g. '3 1 1 <hex>'.
    Tlsa { record: String },
    /// The organizational domain (Public Suffix List) and the RFC 9989 tree-walk queries.
    Orgdomain {
        domain: String,
        /// A public_suffix_list.dat to use instead of the compiled-in list.
        #[arg(long, value_name = "FILE")]
        psl: Option<PathBuf>,
    },
}

fn env() -> BTreeMap<String, String> {
    std::env::vars()
        .filter(|(k, _)| k.starts_with("MAILPOLICYD_") || k == "XDG_RUNTIME_DIR")
        .collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Query { conn, what } => query(conn, what),
        Command::Stats { conn } => query_stats(conn),
        Command::Config { print_default } => {
            if !print_default {
                eprintln!("mailpolicyd config: nothing to do (try --print-default)");
                return ExitCode::from(2);
            }
            print!("{}", config::default_file());
            ExitCode::SUCCESS
        }
        Command::Parse { what } => parse(what),
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let file = match &args.config {
        None => None,
        Some(p) => match std::fs::read_to_string(p) {
            Ok(t) => Some(t),
            Err(e) => {
                eprintln!("mailpolicyd: --config {}: {e}", p.display());
                return ExitCode::from(64);
            }
        },
    };
    let flags = Flags {
        socket: args.socket,
        upstream: args.upstream,
        admin: args.admin,
        dns_listen: args.dns_listen,
        snapshot: args.snapshot,
        log_format: args.log_format,
    };
    let cfg = match config::load(file.as_deref(), &env(), &flags) {
        Ok(c) => c,
        Err(problems) => {
            for p in &problems {
                eprintln!("mailpolicyd: bad setting: {p}");
            }
            eprintln!(
                "mailpolicyd: {} problem(s) in the configuration; not starting",
                problems.len()
            );
            return ExitCode::from(64);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    if cfg.log_json {
        tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mailpolicyd: cannot start the runtime: {e}");
            return ExitCode::from(70);
        }
    };
    let result = rt.block_on(async {
        let shutdown = mailpolicyd::serve::daemon::signals();
        mailpolicyd::serve::daemon::run(cfg, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "mailpolicyd stopped");
            eprintln!("mailpolicyd: {e}");
            ExitCode::from(70)
        }
    }
}

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

/// A value's JSON name in words, as a mail operator reads it: `organizational_domain` →
/// "organizational domain", `np` → "np", `hit` → "hit". (The JSON output keeps the names.)
fn words<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s.replace('_', " "),
        Ok(other) => other.to_string(),
        Err(_) => "-".to_owned(),
    }
}

/// A response code in words.
fn rcode_words(r: mailpolicyd::resolve::Rcode) -> String {
    use mailpolicyd::resolve::Rcode;
    match r {
        Rcode::NoError => "no error".to_owned(),
        Rcode::NxDomain => "no such domain (NXDOMAIN)".to_owned(),
        Rcode::ServFail => "server failure (SERVFAIL)".to_owned(),
        #[allow(unreachable_patterns)]
        other => words(&other),
    }
}

fn describe(d: &Data) -> String {
    use mailpolicyd::resolve::Found;
    fn found<T: std::fmt::Display, E: std::fmt::Display>(f: &Found<T, E>) -> String {
        match f {
            Found::Absent => "no record".to_owned(),
            Found::Valid(p) => p.policy.to_string(),
            Found::Invalid(r) => format!("invalid: {}", r.error),
        }
    }
    match d {
        Data::None => "no records".to_owned(),
        Data::Dmarc(f) => found(f),
        Data::Spf(f) => found(f),
        Data::DkimKey(Found::Valid(p)) => format!(
            "{} key, {} bits{}",
            p.policy.k,
            p.policy.key_bits.map_or("?".to_owned(), |b| b.to_string()),
            if p.policy.revoked { " (revoked)" } else { "" }
        ),
        Data::DkimKey(Found::Invalid(r)) => format!("invalid: {}", r.error),
        Data::DkimKey(Found::Absent) => "no key record".to_owned(),
        Data::Atps(Found::Valid(p)) => format!(
            "authorized{}",
            p.policy
                .d
                .as_ref()
                .map(|d| format!(" (d={d})"))
                .unwrap_or_default()
        ),
        Data::Atps(Found::Invalid(r)) => format!("invalid: {}", r.error),
        Data::Atps(Found::Absent) => "no ATPS record".to_owned(),
        Data::Tlsa(t) => t
            .iter()
            .map(|p| p.policy.to_string())
            .collect::<Vec<_>>()
            .join("; "),
        Data::Txt(t) => t
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", "),
        Data::Addrs(a) => a
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        Data::Mx(m) => m
            .iter()
            .map(|(pref, host)| format!("{pref} {host}"))
            .collect::<Vec<_>>()
            .join(", "),
        Data::Names(n) => n.join(", "),
        #[allow(unreachable_patterns)]
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

fn diagnostics(d: &Data) -> Vec<String> {
    use mailpolicyd::resolve::Found;
    fn diags<T, E>(f: &Found<T, E>) -> Vec<String> {
        match f {
            Found::Valid(p) => p
                .diagnostics
                .as_slice()
                .iter()
                .map(ToString::to_string)
                .collect(),
            Found::Invalid(r) => r
                .diagnostics
                .as_slice()
                .iter()
                .map(ToString::to_string)
                .collect(),
            Found::Absent => Vec::new(),
        }
    }
    match d {
        Data::Dmarc(f) => diags(f),
        Data::Spf(f) => diags(f),
        Data::DkimKey(f) => diags(f),
        Data::Atps(f) => diags(f),
        Data::Tlsa(t) => t
            .iter()
            .flat_map(|p| p.diagnostics.as_slice().iter().map(ToString::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

fn query(conn: ConnArgs, what: QueryWhat) -> ExitCode {
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

fn query_stats(conn: ConnArgs) -> ExitCode {
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

fn parse(what: ParseWhat) -> ExitCode {
    let report = match what {
        ParseWhat::Dmarc { record } => report::parse_record(Kind::Dmarc, &record),
        ParseWhat::Spf { record } => report::parse_record(Kind::Spf, &record),
        ParseWhat::Dkim { record } => report::parse_record(Kind::Dkim, &record),
        ParseWhat::Atps { record } => report::parse_record(Kind::Atps, &record),
        ParseWhat::Tlsa { record } => report::parse_record(Kind::Tlsa, &record),
        ParseWhat::Orgdomain { domain, psl } => {
            let list = match psl {
                None => SuffixList::builtin(),
                Some(path) => match config::read_suffix_list(&path) {
                    Ok(l) => l,
                    Err(e) => {
                        eprintln!("mailpolicyd: --psl {}: {e}", path.display());
                        return ExitCode::from(2);
                    }
                },
            };
            report::org_domain(&list, &domain)
        }
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&report.json).unwrap_or_default()
    );
    if report.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
