//! The wire contract's one frame codec (`proto::frame`) and one error table (`proto::error`),
//! through the real server and the real clients on real Unix sockets.

mod common;
mod dnsserver;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

use dnsserver::{TestDns, Zone};
use mailpolicyd::client::{BlockingClient, Client, ClientError};
use mailpolicyd::proto::{ERROR_CODES, ErrorCode, Op, Outcome, Reply, Response};
use mailpolicyd::serve::{self, SocketConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// A peer that answers every request on every connection with a frame announcing `u32::MAX`
/// bytes (then a few bytes of it, then nothing), like a broken or hostile server.
fn oversize_server(path: &Path) -> std::thread::JoinHandle<()> {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        for s in listener.incoming().take(4) {
            let Ok(mut s) = s else { return };
            let mut req = [0u8; 64];
            let _ = s.read(&mut req);
            let _ = s.write_all(&[0xff, 0xff, 0xff, 0xff, 1, 2, 3]);
            std::thread::sleep(Duration::from_millis(300));
        }
    })
}

#[test]
fn blocking_client_refuses_a_response_frame_over_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.sock");
    let _server = oversize_server(&path);
    let mut c = BlockingClient::connect(&path, Duration::from_secs(5)).unwrap();
    let started = Instant::now();
    // Refused from the 4-byte prefix: no 4 GiB buffer, no wait for bytes that never come.
    match c.call(Op::Ping) {
        Err(ClientError::Protocol(why)) => assert!(why.contains("limit"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_client_drops_a_connection_announcing_a_frame_over_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.sock");
    let _server = oversize_server(&path);
    let c = Client::connect(&path).await.unwrap();
    let r = tokio::time::timeout(Duration::from_secs(2), c.call(Op::Ping))
        .await
        .expect("the client waited for a frame over the bound");
    assert!(matches!(r, Err(ClientError::Io(_))), "{r:?}");
}

type Daemon = common::Daemon<TestDns>;

async fn start() -> Daemon {
    let dns = TestDns::start(vec![Zone::new("example.test.", 300)]).await;
    let cfg = common::resolver_config(dns.addr, Duration::from_millis(500));
    common::serve_resolver(cfg, SocketConfig::default(), dns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_lines_may_end_in_crlf() {
    let d = start().await;
    let s = tokio::net::UnixStream::connect(&d.socket).await.unwrap();
    let mut s = tokio::io::BufReader::new(s);
    s.write_all(b"{\"id\":1,\"op\":\"ping\"}\r\n{\"id\":2,\"op\":\"ping\"}\r\n")
        .await
        .unwrap();
    for want in [1, 2] {
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_line(&mut line))
            .await
            .unwrap()
            .unwrap();
        let r: Response = serde_json::from_str(&line).unwrap();
        assert_eq!(r.id, want);
        assert!(matches!(r.result, Outcome::Ok(Reply::Pong)), "{line}");
    }
    d.shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_ip_is_a_listed_error_code_and_counted() {
    let d = start().await;
    let c = Client::connect(&d.socket).await.unwrap();
    let e = match c
        .spf_check("not-an-ip", "a@example.test", "mx.example.test")
        .await
    {
        Err(ClientError::Server(e)) => e,
        other => panic!("{other:?}"),
    };
    assert_eq!(e.code, "invalid_ip");
    let code = e.error_code().expect("a code of proto::ERROR_CODES");
    assert_eq!(code, ErrorCode::InvalidIp);
    assert!(!code.temporary() && !code.closes());
    // The metric label is the table's, not `other`.
    let metrics = serve::admin::render(&d.service);
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("op=\"spf_check\"") && l.contains("result=\"invalid_ip\"")),
        "{metrics}"
    );
    // The connection stays usable after an error that does not close it.
    assert!(matches!(c.call(Op::Ping).await.unwrap(), Reply::Pong));
    // `shutting_down` was listed and never sent: it is gone from the table.
    assert!(ERROR_CODES.iter().all(|r| r.name != "shutting_down"));
    d.shutdown.cancel();
}
