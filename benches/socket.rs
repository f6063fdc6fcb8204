//! A cached SPF lookup as a mail filter makes it: a round trip over the Unix socket to the
//! real server (`serve::run`), from a plain blocking client, one question at a time
//! (ping-pong) and 64 at a time (pipelined). Targets on the 2-core reference machine:
//! ping-pong ≥ 120 k/s with p99 ≤ 20 µs, pipelined ≥ 1 M/s.
//!
//! The baseline, measured in the same run with the same client: a bare tokio Unix-socket
//! server that answers every 4-byte-framed request with a fixed 200-byte frame and does no
//! work (the floor the performance notes measured at ~180 k/s ping-pong).
//!
//! After criterion, a latency pass prints p50/p99 of 200,000 ping-pong round trips for both.

#[path = "../tests/dnsserver/mod.rs"]
mod dnsserver;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use dnsserver::{TestDns, Zone};
use mailpolicyd::proto::frame::{self, Framing, MAX_FRAME, MAX_RESPONSE_FRAME};
use mailpolicyd::proto::{self, Op, Request};
use mailpolicyd::resolve::{Resolver, ResolverConfig};
use mailpolicyd::serve::{self, Service, SocketConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

const PIPELINE: usize = 64;

struct Setup {
    _rt: tokio::runtime::Runtime,
    server: PathBuf,
    floor: PathBuf,
    _dir: tempfile::TempDir,
    _dns: TestDns,
    _stop: CancellationToken,
}

fn setup() -> Setup {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = dir.path().join("mp.sock");
    let floor = dir.path().join("floor.sock");
    let stop = CancellationToken::new();
    let dns = rt.block_on(async {
        let dns = TestDns::start(vec![Zone::new("example.test.", 300).txt(
            "@",
            86_400,
            &["v=spf1 ip4:192.0.2.0/24 include:_spf.example.net -all"],
        )])
        .await;
        let mut cfg = ResolverConfig::default();
        cfg.upstream.servers = vec![dns.addr];
        let service = Service::new(Resolver::new(cfg).unwrap());
        let listener = serve::socket::bind(&server, 0o600).unwrap();
        tokio::spawn(serve::run(
            listener,
            service,
            SocketConfig::default(),
            stop.clone(),
        ));
        let floor_listener = tokio::net::UnixListener::bind(&floor).unwrap();
        tokio::spawn(floor_server(floor_listener));
        dns
    });
    Setup {
        _rt: rt,
        server,
        floor,
        _dir: dir,
        _dns: dns,
        _stop: stop,
    }
}

/// The no-work floor: 4-byte length framing in, a fixed 200-byte frame out per request.
async fn floor_server(listener: tokio::net::UnixListener) {
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        tokio::spawn(async move {
            let mut reply = vec![0, 0, 0, 196];
            reply.resize(200, 7);
            let mut buf = vec![0u8; 64 * 1024];
            let mut have = 0;
            let mut out = Vec::new();
            loop {
                let Ok(n) = s.read(&mut buf[have..]).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                have += n;
                let mut at = 0;
                while let Ok(Some(f)) = frame::split(Framing::Binary, &buf[at..have], MAX_FRAME) {
                    at += f.consumed;
                    out.extend_from_slice(&reply);
                }
                buf.copy_within(at..have, 0);
                have -= at;
                if s.write_all(&out).await.is_err() {
                    return;
                }
                out.clear();
            }
        });
    }
}

struct Conn {
    s: UnixStream,
    request: Vec<u8>,
    batch: Vec<u8>,
    buf: Vec<u8>,
}

impl Conn {
    fn new(path: &Path) -> Conn {
        let s = UnixStream::connect(path).unwrap();
        let mut request = Vec::new();
        proto::encode_frame(
            &Request {
                id: 1,
                op: Op::Spf {
                    domain: "example.test".into(),
                },
            },
            &mut request,
        )
        .unwrap();
        let batch = request.repeat(PIPELINE);
        let mut c = Conn {
            s,
            request,
            batch,
            buf: vec![0; 1 << 20],
        };
        c.round_trip(1); // warms the cache
        c
    }

    /// Sends `n` requests in one write and reads `n` response frames.
    fn round_trip(&mut self, n: usize) {
        if n == 1 {
            self.s.write_all(&self.request).unwrap();
        } else {
            self.s
                .write_all(&self.batch[..self.request.len() * n])
                .unwrap();
        }
        let mut have = 0;
        let mut frames = 0;
        let mut at = 0;
        while frames < n {
            let got = self.s.read(&mut self.buf[have..]).unwrap();
            assert!(got > 0, "server closed");
            have += got;
            while let Some(f) =
                frame::split(Framing::Binary, &self.buf[at..have], MAX_RESPONSE_FRAME).unwrap()
            {
                at += f.consumed;
                frames += 1;
            }
        }
    }
}

fn socket(c: &mut Criterion) {
    let s = setup();
    let mut server = Conn::new(&s.server);
    let mut floor = Conn::new(&s.floor);

    let mut g = c.benchmark_group("socket_ping_pong");
    g.throughput(Throughput::Elements(1));
    g.bench_function("baseline_tokio_floor", |b| b.iter(|| floor.round_trip(1)));
    g.bench_function("mailpolicyd_spf_hit", |b| b.iter(|| server.round_trip(1)));
    g.finish();

    let mut g = c.benchmark_group("socket_pipelined_64");
    g.throughput(Throughput::Elements(PIPELINE as u64));
    g.bench_function("baseline_tokio_floor", |b| {
        b.iter(|| floor.round_trip(PIPELINE))
    });
    g.bench_function("mailpolicyd_spf_hit", |b| {
        b.iter(|| server.round_trip(PIPELINE))
    });
    g.finish();

    for (name, conn) in [
        ("baseline_tokio_floor", &mut floor),
        ("mailpolicyd_spf_hit", &mut server),
    ] {
        let mut lat: Vec<Duration> = Vec::with_capacity(200_000);
        let start = Instant::now();
        for _ in 0..200_000 {
            let t = Instant::now();
            conn.round_trip(1);
            lat.push(t.elapsed());
        }
        let total = start.elapsed();
        lat.sort_unstable();
        let q = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
        println!(
            "latency {name}: {:.0} round trips/s, p50 {:?}, p99 {:?}, p999 {:?}",
            lat.len() as f64 / total.as_secs_f64(),
            q(0.50),
            q(0.99),
            q(0.999)
        );
    }
}

criterion_group!(benches, socket);
criterion_main!(benches);
