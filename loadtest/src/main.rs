//! `mpload`: the load generator and zone builder behind `loadtest/run`.
//!
//! - `zone`: writes the NSD zone of N synthetic mail domains (DMARC, SPF with two includes, a
//!   2048-bit DKIM key in 255-byte strings), subdomain-only organizations, a wildcard
//!   organization and short-TTL names for the outage scenario, plus the name lists.
//! - `socket`: drives mailpolicyd's binary protocol with C connections × D requests in flight
//!   over a list of names; reports throughput and HDR-histogram latencies as one JSON line.
//! - `udp`: the same questions as DNS TXT queries over UDP, N flows × 1 in flight (a filter
//!   asking a resolver directly), for Unbound or mailpolicyd's DNS front-end.
//! - `trace`: a Zipf(s) message trace over From domains (a share of them subdomains of a set of
//!   organizations); each message asks DMARC + SPF check + one DKIM key, either of mailpolicyd
//!   or, `--naive`, of DNS directly as a cacheless filter would.
//!
//! Every loop is bounded by a duration or a count; only loopback addresses are used.

use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use hdrhistogram::Histogram;
use hickory_proto::op::{Message, Query};
use hickory_proto::rr::{Name, RecordType};
use mailpolicyd::policy::atps::AtpsHash;
use mailpolicyd::proto::frame::{self, Framing, MAX_RESPONSE_FRAME};
use mailpolicyd::proto::{self, Op, Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
#[command(name = "mpload", about = "mailpolicyd load generator")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write the synthetic zone and name lists.
    Zone {
        #[arg(long, default_value_t = 10_000)]
        domains: usize,
        #[arg(long, default_value_t = 1_000)]
        orgs: usize,
        #[arg(long)]
        out: PathBuf,
        /// A base64 DKIM public key (2048-bit RSA SPKI) to publish for every domain.
        #[arg(long)]
        dkim_key: PathBuf,
    },
    /// Socket protocol load: C connections × D in flight.
    Socket {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        names: PathBuf,
        #[arg(long, default_value_t = 1)]
        conns: usize,
        #[arg(long, default_value_t = 1)]
        depth: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// spf | dkim | dmarc
        #[arg(long, default_value = "spf")]
        op: String,
        /// Write the latency histogram's percentile curve here (for the plot).
        #[arg(long)]
        curve: Option<PathBuf>,
    },
    /// One pass over a name list through the socket (each name once): C × D in flight.
    Pass {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        names: PathBuf,
        #[arg(long, default_value_t = 4)]
        conns: usize,
        #[arg(long, default_value_t = 16)]
        depth: usize,
        #[arg(long, default_value = "spf")]
        op: String,
    },
    /// The floor: a server speaking the same framing that does no work (a thread per connection,
    /// blocking reads and writes, like mailpolicyd's socket server), answering every request
    /// with a fixed reply of a cached SPF answer's size. Runs until killed.
    Echo {
        #[arg(long)]
        socket: PathBuf,
    },
    /// DNS TXT queries over UDP: N flows, one in flight each.
    Udp {
        #[arg(long)]
        server: SocketAddr,
        #[arg(long)]
        names: PathBuf,
        #[arg(long, default_value_t = 1)]
        flows: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        #[arg(long)]
        curve: Option<PathBuf>,
    },
    /// A Zipf message trace: each message asks DMARC + SPF check + one DKIM key.
    Trace {
        /// mailpolicyd's socket (or --naive).
        #[arg(long)]
        socket: Option<PathBuf>,
        /// Ask this DNS server directly, as a filter with no cache would.
        #[arg(long)]
        naive: Option<SocketAddr>,
        #[arg(long, default_value_t = 1_000_000)]
        messages: usize,
        #[arg(long, default_value_t = 100_000)]
        from_domains: usize,
        /// Existing synthetic domains d0..dN-1 (the rest of the From domains are subdomains).
        #[arg(long, default_value_t = 10_000)]
        domains: usize,
        #[arg(long, default_value_t = 1_000)]
        orgs: usize,
        /// Share of From domains that are subdomains of the organizations.
        #[arg(long, default_value_t = 0.10)]
        sub_share: f64,
        #[arg(long, default_value_t = 1.1)]
        zipf: f64,
        #[arg(long, default_value_t = 8)]
        conns: usize,
        #[arg(long, default_value_t = 16)]
        depth: usize,
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
}

fn main() {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Zone {
            domains,
            orgs,
            out,
            dkim_key,
        } => zone(domains, orgs, &out, &dkim_key),
        Cmd::Socket {
            socket,
            names,
            conns,
            depth,
            seconds,
            op,
            curve,
        } => {
            let names = read_names(&names);
            let ops: Vec<Op> = names.iter().map(|n| make_op(&op, n)).collect();
            let r = socket_load(
                socket,
                Arc::new(ops),
                conns,
                depth,
                Duration::from_secs_f64(seconds),
            );
            report(&r, curve.as_deref());
        }
        Cmd::Echo { socket } => echo(&socket),
        Cmd::Pass {
            socket,
            names,
            conns,
            depth,
            op,
        } => {
            let ops: Vec<Op> = read_names(&names).iter().map(|n| make_op(&op, n)).collect();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let r = rt.block_on(socket_run_all(socket, Arc::new(ops), conns, depth));
            report(&r, None);
        }
        Cmd::Udp {
            server,
            names,
            flows,
            seconds,
            curve,
        } => {
            let r = udp_load(
                server,
                Arc::new(read_names(&names)),
                flows,
                Duration::from_secs_f64(seconds),
            );
            report(&r, curve.as_deref());
        }
        Cmd::Trace {
            socket,
            naive,
            messages,
            from_domains,
            domains,
            orgs,
            sub_share,
            zipf,
            conns,
            depth,
            seed,
        } => {
            let froms = from_population(from_domains, domains, orgs, sub_share);
            let trace = zipf_trace(froms.len(), messages, zipf, seed);
            let started = Instant::now();
            let mut collapse = serde_json::Value::Null;
            let (asked, errors) = match (socket, naive) {
                (Some(s), None) => {
                    let mut ops = Vec::with_capacity(trace.len() * 3);
                    for &i in &trace {
                        let d = &froms[i];
                        ops.push(Op::Dmarc { domain: d.clone() });
                        ops.push(Op::SpfCheck {
                            ip: "192.0.2.25".into(),
                            mail_from: format!("user@{d}"),
                            helo: format!("mx.{d}"),
                        });
                        ops.push(Op::DkimKey {
                            selector: "s1".into(),
                            domain: d.clone(),
                        });
                    }
                    let n = ops.len();
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .unwrap();
                    let r = rt.block_on(socket_run_all(s, Arc::new(ops), conns, depth));
                    let subs = froms.iter().filter(|d| d.split('.').count() == 3).count();
                    collapse = serde_json::json!({"org_dmarc_upstream": r.org_misses, "sub_dmarc_upstream": r.sub_misses,
                        "orgs": orgs, "subdomains_in_population": subs});
                    (n as u64, r.errors)
                }
                (None, Some(server)) => naive_trace(server, &froms, &trace, conns),
                _ => {
                    eprintln!("mpload trace: give exactly one of --socket or --naive");
                    std::process::exit(2);
                }
            };
            let secs = started.elapsed().as_secs_f64();
            println!(
                "{}",
                serde_json::json!({"messages": trace.len(), "questions": asked, "errors": errors, "seconds": secs,
                    "distinct_from": froms.len(), "collapse": collapse})
            );
        }
    }
}

/// The no-work server of `mpload echo`.
fn echo(path: &std::path::Path) {
    let _ = std::fs::remove_file(path);
    let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
    // A reply the size of a cached SPF answer (~330 bytes of payload).
    let reply = |id: u64| {
        let mut out = Vec::with_capacity(400);
        let resp = Response {
            id,
            result: proto::Outcome::Ok(proto::Reply::Hello {
                version: "1.0".into(),
                server: "x".repeat(320),
            }),
        };
        proto::encode_frame(&resp, &mut out).unwrap();
        out
    };
    for conn in listener.incoming() {
        let Ok(mut s) = conn else { continue };
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut have = 0;
            let mut out = Vec::new();
            while read_more(&mut s, &mut buf, &mut have) {
                let mut at = 0;
                out.clear();
                while let Some(payload) = next_frame(&buf[..have], &mut at) {
                    let id = postcard::take_from_bytes::<u64>(payload).map_or(0, |(id, _)| id);
                    out.extend(reply(id));
                }
                buf.copy_within(at..have, 0);
                have -= at;
                if s.write_all(&out).is_err() {
                    return;
                }
            }
        });
    }
}

fn read_names(p: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

fn make_op(kind: &str, name: &str) -> Op {
    match kind {
        "dkim" => Op::DkimKey {
            selector: "s1".into(),
            domain: name.into(),
        },
        "dmarc" => Op::Dmarc {
            domain: name.into(),
        },
        "atps" => Op::Atps {
            signer: name.into(),
            author: name.into(),
            hash: AtpsHash::Sha256,
        },
        _ => Op::Spf {
            domain: name.into(),
        },
    }
}

/// A small deterministic PRNG (splitmix64), so traces are reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The From domains: existing synthetic domains, and a share of subdomains of the orgs.
fn from_population(n: usize, domains: usize, orgs: usize, sub_share: f64) -> Vec<String> {
    let subs = (n as f64 * sub_share) as usize;
    let mut out = Vec::with_capacity(n);
    for i in 0..n - subs {
        out.push(format!("d{}.example", i % domains));
    }
    for k in 0..subs {
        out.push(format!("s{k}.o{}.example", k % orgs));
    }
    // Interleave so Zipf ranks mix both kinds.
    let mut rng = Rng(7);
    for i in (1..out.len()).rev() {
        let j = (rng.next() % (i as u64 + 1)) as usize;
        out.swap(i, j);
    }
    out
}

/// `messages` draws from Zipf(s) over `n` ranks (inverse-CDF on a precomputed table).
fn zipf_trace(n: usize, messages: usize, s: f64, seed: u64) -> Vec<usize> {
    let mut cdf = Vec::with_capacity(n);
    let mut acc = 0.0;
    for k in 1..=n {
        acc += 1.0 / (k as f64).powf(s);
        cdf.push(acc);
    }
    let mut rng = Rng(seed);
    (0..messages)
        .map(|_| {
            let u = rng.unit() * acc;
            cdf.partition_point(|&c| c < u).min(n - 1)
        })
        .collect()
}

#[derive(Default)]
struct LoadResult {
    done: u64,
    errors: u64,
    org_misses: u64,
    sub_misses: u64,
    seconds: f64,
    hist: Option<Histogram<u64>>,
}

fn report(r: &LoadResult, curve: Option<&std::path::Path>) {
    let h = r.hist.as_ref();
    let q = |p: f64| h.map_or(0, |h| h.value_at_quantile(p));
    println!(
        "{}",
        serde_json::json!({"ops": r.done, "errors": r.errors, "seconds": r.seconds,
            "rate": r.done as f64 / r.seconds.max(1e-9),
            "p50_us": q(0.50) as f64 / 1000.0, "p90_us": q(0.90) as f64 / 1000.0,
            "p99_us": q(0.99) as f64 / 1000.0, "p999_us": q(0.999) as f64 / 1000.0})
    );
    if let (Some(path), Some(h)) = (curve, h) {
        let mut f = std::fs::File::create(path).unwrap();
        for p in [
            0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999,
        ] {
            writeln!(f, "{p} {}", h.value_at_quantile(p) as f64 / 1000.0).unwrap();
        }
    }
}

fn frame(id: u64, op: &Op) -> Vec<u8> {
    let mut v = Vec::with_capacity(96);
    proto::encode_frame(&Request { id, op: op.clone() }, &mut v).unwrap();
    v
}

/// One connection (a plain blocking client on its own thread, like the UDP flows) keeping
/// `depth` requests in flight until `deadline`.
fn conn_load(
    path: PathBuf,
    ops: Arc<Vec<Op>>,
    start: usize,
    depth: usize,
    deadline: Instant,
) -> (u64, u64, Histogram<u64>) {
    let mut s = std::os::unix::net::UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut hist = Histogram::<u64>::new_with_bounds(100, 60_000_000_000, 3).unwrap();
    // Ids cycle through 1..=depth*2; the send time of id i is in slot i.
    let slots = depth * 2 + 1;
    let mut sent_at: Vec<Option<Instant>> = vec![None; slots];
    let mut outstanding = 0usize;
    let mut next = start;
    let mut id = 0usize;
    let mut out = Vec::new();
    let send = |out: &mut Vec<u8>,
                sent_at: &mut Vec<Option<Instant>>,
                next: &mut usize,
                id: &mut usize| {
        *id = *id % (slots - 1) + 1;
        out.extend(frame(*id as u64, &ops[*next % ops.len()]));
        sent_at[*id] = Some(Instant::now());
        *next += 1;
    };
    for _ in 0..depth {
        send(&mut out, &mut sent_at, &mut next, &mut id);
        outstanding += 1;
    }
    s.write_all(&out).unwrap();
    let (mut done, mut errors) = (0u64, 0u64);
    let mut buf = vec![0u8; 256 * 1024];
    let mut have = 0usize;
    while outstanding > 0 && read_more(&mut s, &mut buf, &mut have) {
        let mut at = 0;
        out.clear();
        let now = Instant::now();
        while let Some(payload) = next_frame(&buf[..have], &mut at) {
            // Like the UDP client, which reads the DNS id and rcode and not the records: the id
            // and whether the outcome is an error, without decoding the answer.
            let (rid, is_error) = peek(payload);
            outstanding -= 1;
            if let Some(t) = sent_at.get_mut(rid as usize).and_then(Option::take) {
                let _ = hist
                    .record(u64::try_from(now.duration_since(t).as_nanos()).unwrap_or(u64::MAX));
            }
            done += 1;
            if is_error {
                errors += 1;
            }
            if now < deadline {
                send(&mut out, &mut sent_at, &mut next, &mut id);
                outstanding += 1;
            }
        }
        buf.copy_within(at..have, 0);
        have -= at;
        if !out.is_empty() {
            s.write_all(&out).unwrap();
        }
        if buf.len() - have < 64 * 1024 {
            buf.resize(buf.len() * 2, 0);
        }
    }
    (done, errors, hist)
}

/// Reads what `s` has next into `buf` after the `*have` bytes kept there; false at the end of
/// the stream or on an error.
fn read_more(s: &mut impl std::io::Read, buf: &mut [u8], have: &mut usize) -> bool {
    match s.read(&mut buf[*have..]) {
        Ok(n) if n > 0 => {
            *have += n;
            true
        }
        _ => false,
    }
}

/// The next complete frame's payload in `buf` from `*at` (cut by `proto::frame`), advancing
/// `*at`. A frame over the bound is a broken server: the run stops.
fn next_frame<'b>(buf: &'b [u8], at: &mut usize) -> Option<&'b [u8]> {
    let rest = &buf[*at..];
    let split = frame::split(Framing::Binary, rest, MAX_RESPONSE_FRAME)
        .unwrap_or_else(|e| panic!("the server sent a bad frame: {e}"))?;
    *at += split.consumed;
    Some(&rest[split.payload])
}

/// The response id and whether its outcome is `Error` (postcard: varint id, then the outcome's
/// variant index, 0 = Ok, 1 = Error).
fn peek(payload: &[u8]) -> (u64, bool) {
    match postcard::take_from_bytes::<u64>(payload)
        .and_then(|(id, rest)| postcard::take_from_bytes::<u32>(rest).map(|(v, _)| (id, v)))
    {
        Ok((id, variant)) => (id, variant != 0),
        Err(_) => (0, true),
    }
}

fn socket_load(
    path: PathBuf,
    ops: Arc<Vec<Op>>,
    conns: usize,
    depth: usize,
    dur: Duration,
) -> LoadResult {
    timed_threads(conns, dur, move |c, deadline| {
        let start = c * ops.len() / conns.max(1);
        conn_load(path.clone(), ops.clone(), start, depth, deadline)
    })
}

/// Runs every op once, spread over the connections, each keeping `depth` in flight.
async fn socket_run_all(
    path: PathBuf,
    ops: Arc<Vec<Op>>,
    conns: usize,
    depth: usize,
) -> LoadResult {
    let started = Instant::now();
    let per = ops.len().div_ceil(conns.max(1));
    let tasks: Vec<_> = (0..conns)
        .map(|c| {
            let slice: Vec<Op> = ops.iter().skip(c * per).take(per).cloned().collect();
            let path = path.clone();
            tokio::spawn(async move { run_slice(path, slice, depth).await })
        })
        .collect();
    let mut r = LoadResult::default();
    for t in tasks {
        let (d, e, o, s) = t.await.unwrap();
        r.done += d;
        r.errors += e;
        r.org_misses += o;
        r.sub_misses += s;
    }
    r.seconds = started.elapsed().as_secs_f64();
    r
}

/// Answers, errors, and the `_dmarc` names of organizations (`_dmarc.oN.example`) and of
/// their subdomains that mailpolicyd had to ask upstream (source `miss`).
async fn run_slice(path: PathBuf, ops: Vec<Op>, depth: usize) -> (u64, u64, u64, u64) {
    if ops.is_empty() {
        return (0, 0, 0, 0);
    }
    let (mut org_misses, mut sub_misses) = (0u64, 0u64);
    let mut s = tokio::net::UnixStream::connect(&path).await.unwrap();
    let (mut next, mut outstanding, mut done, mut errors) = (0usize, 0usize, 0u64, 0u64);
    let mut out = Vec::new();
    while next < ops.len() && outstanding < depth {
        out.extend(frame(next as u64 + 1, &ops[next]));
        next += 1;
        outstanding += 1;
    }
    s.write_all(&out).await.unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut have = 0;
    while outstanding > 0 {
        let n = match tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf[have..])).await
        {
            Ok(Ok(n)) if n > 0 => n,
            _ => break,
        };
        have += n;
        let mut at = 0;
        out.clear();
        while let Some(payload) = next_frame(&buf[..have], &mut at) {
            let resp: Response = postcard::from_bytes(payload).unwrap();
            outstanding -= 1;
            done += 1;
            match &resp.result {
                proto::Outcome::Error(_) => errors += 1,
                proto::Outcome::Ok(proto::Reply::Dmarc(d)) => {
                    for (name, src) in &d.queries {
                        if *src != mailpolicyd::resolve::Source::Miss {
                            continue;
                        }
                        let labels = name.split('.').count();
                        if name.starts_with("_dmarc.o") && labels == 3 {
                            org_misses += 1;
                        } else if labels == 4
                            && name.ends_with(".example")
                            && name.split('.').nth(2).is_some_and(|l| l.starts_with('o'))
                        {
                            sub_misses += 1;
                        }
                    }
                }
                _ => {}
            }
            if next < ops.len() {
                out.extend(frame(next as u64 + 1, &ops[next]));
                next += 1;
                outstanding += 1;
            }
        }
        buf.copy_within(at..have, 0);
        have -= at;
        if !out.is_empty() {
            s.write_all(&out).await.unwrap();
        }
        if buf.len() - have < 64 * 1024 {
            buf.resize(buf.len() * 2, 0);
        }
    }
    (done, errors, org_misses, sub_misses)
}

fn txt_query(id: u16, name: &str, rtype: RecordType) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    let qname = Name::from_ascii(format!("{name}.")).unwrap_or_else(|_| Name::root());
    m.add_query(Query::query(qname, rtype));
    m.to_vec().unwrap()
}

/// One UDP flow: one query in flight, answers matched by id; returns (done, errors, hist).
fn udp_flow(
    server: SocketAddr,
    names: &[String],
    start: usize,
    deadline: Option<Instant>,
    count: Option<usize>,
) -> (u64, u64, Histogram<u64>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.connect(server).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(1000)))
        .unwrap();
    let mut hist = Histogram::<u64>::new_with_bounds(100, 60_000_000_000, 3).unwrap();
    let (mut done, mut errors) = (0u64, 0u64);
    let mut buf = [0u8; 4096];
    let mut i = start;
    let mut id: u16 = 1;
    loop {
        if deadline.is_some_and(|d| Instant::now() >= d)
            || count.is_some_and(|c| done as usize >= c)
        {
            break;
        }
        let q = txt_query(id, &names[i % names.len()], RecordType::TXT);
        let t = Instant::now();
        sock.send(&q).unwrap();
        loop {
            match sock.recv(&mut buf) {
                Ok(n) if n >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id => {
                    let rcode = buf.get(3).map_or(2, |b| b & 0x0f);
                    if rcode == 2 || rcode == 5 {
                        errors += 1;
                    }
                    break;
                }
                Ok(_) => continue,
                Err(_) => {
                    errors += 1;
                    break;
                }
            }
        }
        let _ = hist.record(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
        done += 1;
        i += 1;
        id = id.wrapping_add(1);
    }
    (done, errors, hist)
}

fn udp_load(
    server: SocketAddr,
    names: Arc<Vec<String>>,
    flows: usize,
    dur: Duration,
) -> LoadResult {
    timed_threads(flows, dur, move |f, deadline| {
        let start = f * names.len() / flows.max(1);
        udp_flow(server, &names, start, Some(deadline), None)
    })
}

/// Runs `n` load threads, the `i`-th being `run(i, deadline)`, until `dur` is over, and sums
/// their counts and latencies.
fn timed_threads(
    n: usize,
    dur: Duration,
    run: impl Fn(usize, Instant) -> (u64, u64, Histogram<u64>) + Send + Sync + 'static,
) -> LoadResult {
    let started = Instant::now();
    let deadline = started + dur;
    let run = Arc::new(run);
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let run = run.clone();
            std::thread::spawn(move || run(i, deadline))
        })
        .collect();
    joined(threads, started)
}

/// The load threads' counts and latencies summed into one result, timed from `started`.
fn joined(
    threads: Vec<std::thread::JoinHandle<(u64, u64, Histogram<u64>)>>,
    started: Instant,
) -> LoadResult {
    let mut r = LoadResult {
        hist: Some(Histogram::new_with_bounds(100, 60_000_000_000, 3).unwrap()),
        ..LoadResult::default()
    };
    for t in threads {
        let (d, e, hist) = t.join().unwrap();
        r.done += d;
        r.errors += e;
        if let Some(all) = r.hist.as_mut() {
            let _ = all.add(&hist);
        }
    }
    r.seconds = started.elapsed().as_secs_f64();
    r
}

/// A filter without a cache: for each message, the DNS queries it would send itself.
/// DMARC: `_dmarc.<from>`, on NXDOMAIN/NODATA `_dmarc.<org>` (RFC 7489, PSL); SPF: the TXT of the
/// domain and of each of its two includes; DKIM: the key. Sent over `conns` UDP flows.
fn naive_trace(server: SocketAddr, froms: &[String], trace: &[usize], conns: usize) -> (u64, u64) {
    let asked = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let chunk = trace.len().div_ceil(conns.max(1));
    std::thread::scope(|scope| {
        for part in trace.chunks(chunk.max(1)) {
            let (asked, errors) = (asked.clone(), errors.clone());
            scope.spawn(move || {
                let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
                sock.connect(server).unwrap();
                sock.set_read_timeout(Some(Duration::from_millis(1000)))
                    .unwrap();
                let mut id: u16 = 0;
                let mut buf = [0u8; 4096];
                let mut ask = |name: &str| -> u16 {
                    id = id.wrapping_add(1);
                    asked.fetch_add(1, Ordering::Relaxed);
                    sock.send(&txt_query(id, name, RecordType::TXT)).unwrap();
                    loop {
                        match sock.recv(&mut buf) {
                            Ok(n) if n >= 12 && u16::from_be_bytes([buf[0], buf[1]]) == id => {
                                return u16::from_be_bytes([buf[6], buf[7]]);
                            }
                            Ok(_) => continue,
                            Err(_) => {
                                errors.fetch_add(1, Ordering::Relaxed);
                                return 0;
                            }
                        }
                    }
                };
                for &i in part {
                    let d = &froms[i];
                    if ask(&format!("_dmarc.{d}")) == 0 {
                        let labels: Vec<&str> = d.split('.').collect();
                        let org = labels[labels.len().saturating_sub(2)..].join(".");
                        if org != *d {
                            ask(&format!("_dmarc.{org}"));
                        }
                    }
                    if ask(d) > 0 {
                        ask("_spf1.prov.example");
                        ask("_spf2.prov.example");
                    }
                    ask(&format!("s1._domainkey.{d}"));
                }
            });
        }
    });
    (
        asked.load(Ordering::Relaxed),
        errors.load(Ordering::Relaxed),
    )
}

/// The zone `example.`: "example" is no public suffix, so every synthetic domain is its own
/// organization, as real senders are (one shared org would trip the limiter and the wildcard
/// watch, which are per organization).
fn zone(domains: usize, orgs: usize, out: &std::path::Path, key: &std::path::Path) {
    std::fs::create_dir_all(out).unwrap();
    let key = std::fs::read_to_string(key).unwrap();
    let dkim = format!("v=DKIM1; k=rsa; p={}", key.trim());
    let dkim_strings: Vec<String> = dkim
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    let mut z = String::with_capacity(domains * 700);
    z.push_str("$ORIGIN example.\n$TTL 3600\n@ IN SOA ns.example. hostmaster.example. 1 3600 600 86400 300\n@ IN NS ns.example.\nns IN A 127.0.0.1\n");
    z.push_str("_spf1.prov IN TXT \"v=spf1 ip4:198.51.100.0/24 -all\"\n_spf2.prov IN TXT \"v=spf1 ip4:203.0.113.0/24 -all\"\n");
    for i in 0..domains {
        z.push_str(&format!(
            "d{i} IN A 192.0.2.{}\nd{i} IN TXT \"v=spf1 include:_spf1.prov.example include:_spf2.prov.example -all\"\n_dmarc.d{i} IN TXT \"v=DMARC1; p=reject; rua=mailto:dmarc@d{i}.example\"\ns1._domainkey.d{i} IN TXT ( {} )\n",
            i % 250 + 1,
            dkim_strings.join(" ")
        ));
    }
    for j in 0..orgs {
        z.push_str(&format!("o{j} IN A 192.0.2.1\n_dmarc.o{j} IN TXT \"v=DMARC1; p=quarantine; sp=reject\"\n*.o{j} IN A 192.0.2.2\n"));
    }
    // A wildcard organization: every subdomain answers the same SPF record.
    z.push_str("*.wild IN TXT \"v=spf1 -all\"\n_dmarc.wild IN TXT \"v=DMARC1; p=reject\"\n");
    // Short-TTL names for the outage scenario (they expire during it: stale is served).
    for i in 0..1000 {
        z.push_str(&format!(
            "short{i} 30 IN TXT \"v=spf1 ip4:192.0.2.{} -all\"\n",
            i % 250 + 1
        ));
    }
    std::fs::write(out.join("example.zone"), z).unwrap();
    let list =
        |f: &str, names: Vec<String>| std::fs::write(out.join(f), names.join("\n") + "\n").unwrap();
    list(
        "names.txt",
        (0..domains).map(|i| format!("d{i}.example")).collect(),
    );
    list(
        "short.txt",
        (0..1000).map(|i| format!("short{i}.example")).collect(),
    );
    list(
        "uncached.txt",
        (0..1000).map(|i| format!("never{i}.example")).collect(),
    );
    let mut rng = Rng(99);
    list(
        "wild.txt",
        (0..100_000)
            .map(|_| format!("r{:016x}.wild.example", rng.next()))
            .collect(),
    );
}
