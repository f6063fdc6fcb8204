//! The Unix-socket server: accepts connections (bounded by a semaphore), picks the framing from
//! the first byte (`{` → JSON lines, anything else → binary frames), and answers pipelined
//! requests by id.
//!
//! Each request's future is polled once in the connection task: a cache hit completes there
//! and its response joins the batch written after the current read, so a pipelining client
//! gets many responses per `write`. A request that must wait (a miss) becomes its own task,
//! holding one of the connection's in-flight permits (default 256); when they are all taken
//! the connection stops reading, which is the backpressure. Bad input is answered with one
//! error and, for framing errors, closes only that connection.

use std::future::Future;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Mutex, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::Service;
use crate::proto::{self, MAX_FRAME, Outcome, Peeked, Request, Response, WireError};

/// Socket server settings.
#[derive(Clone, Debug)]
pub struct SocketConfig {
    /// Connections served at once; more wait in the accept queue.
    pub max_connections: usize,
    /// Requests waiting on upstream per connection before the connection stops reading.
    pub max_inflight: usize,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// File mode of the socket.
    pub mode: u32,
    /// Peer UIDs allowed (SO_PEERCRED); empty allows all (subject to the file mode).
    pub allow_uids: Vec<u32>,
    /// Peer GIDs allowed; a peer passes if its UID or its GID is listed.
    pub allow_gids: Vec<u32>,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            max_connections: 1024,
            max_inflight: 256,
            drain_timeout: Duration::from_secs(10),
            mode: 0o660,
            allow_uids: Vec::new(),
            allow_gids: Vec::new(),
        }
    }
}

/// Why the socket could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Something that is not a socket is in the way: refuse to delete it.
    #[error("{0} exists and is not a socket; not replacing it")]
    NotASocket(String),
    /// The bind or chmod failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// Binds the socket at `path`: a stale socket file is replaced, anything else is refused; the
/// parent directory is created; the file mode is set.
pub fn bind(path: &Path, mode: u32) -> Result<UnixListener, BindError> {
    let io = |source| BindError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(BindError::NotASocket(path.display().to_string()));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    Ok(listener)
}

/// Serves `listener` until `shutdown` is cancelled, then stops accepting, lets every
/// connection finish the requests it has read (up to the drain timeout), and returns.
pub async fn run(
    listener: UnixListener,
    service: Arc<Service>,
    cfg: SocketConfig,
    shutdown: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(cfg.max_connections));
    let tracker = TaskTracker::new();
    let cfg = Arc::new(cfg);
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            s = listener.accept() => match s {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let (service, cfg, shutdown) = (service.clone(), cfg.clone(), shutdown.clone());
        tracker.spawn(async move {
            let _permit = permit;
            service.metrics.connection_opened();
            if let Err(e) = connection(stream, &service, &cfg, shutdown).await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            service.metrics.connection_closed();
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(cfg.drain_timeout, tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout: closing connections with requests in flight");
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Binary,
    Json,
}

type Writer = Arc<Mutex<OwnedWriteHalf>>;

fn peer_allowed(stream: &UnixStream, cfg: &SocketConfig) -> bool {
    if cfg.allow_uids.is_empty() && cfg.allow_gids.is_empty() {
        return true;
    }
    match stream.peer_cred() {
        Ok(c) => cfg.allow_uids.contains(&c.uid()) || cfg.allow_gids.contains(&c.gid()),
        Err(_) => false,
    }
}

fn encode(mode: Mode, resp: &Response, out: &mut Vec<u8>) {
    let ok = match mode {
        Mode::Binary => proto::encode_frame(resp, out).is_ok(),
        Mode::Json => proto::encode_json_line(resp, out).is_ok(),
    };
    if !ok {
        let fallback = Response {
            id: resp.id,
            result: Outcome::Error(WireError::new(
                "internal",
                "the response could not be encoded",
            )),
        };
        let _ = match mode {
            Mode::Binary => proto::encode_frame(&fallback, out).map_err(|_| ()),
            Mode::Json => proto::encode_json_line(&fallback, out).map_err(|_| ()),
        };
    }
}

async fn connection(
    stream: UnixStream,
    service: &Arc<Service>,
    cfg: &SocketConfig,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let allowed = peer_allowed(&stream, cfg);
    let (mut rd, wr) = stream.into_split();
    let writer: Writer = Arc::new(Mutex::new(wr));
    let mut buf = BytesMut::with_capacity(16 * 1024);
    // The first byte decides the framing.
    if read_more(&mut rd, &mut buf, &shutdown).await? == 0 {
        return Ok(());
    }
    let mode = if buf[0] == b'{' {
        Mode::Json
    } else {
        Mode::Binary
    };
    if !allowed {
        let resp = Response {
            id: 0,
            result: Outcome::Error(WireError::new(
                "forbidden",
                "peer credentials not in the allow-list",
            )),
        };
        return close_with(&writer, mode, &resp).await;
    }
    let inflight = Arc::new(Semaphore::new(cfg.max_inflight));
    let mut batch: Vec<u8> = Vec::with_capacity(8 * 1024);
    loop {
        // Answer every complete request in the buffer.
        loop {
            let request = match next_request(mode, &mut buf) {
                Next::Incomplete => break,
                Next::Request(r) => r,
                Next::Answer(resp) => {
                    encode(mode, &resp, &mut batch);
                    continue;
                }
                Next::Fatal(resp) => {
                    flush(&writer, &mut batch).await?;
                    return close_with(&writer, mode, &resp).await;
                }
            };
            if let Some(resp) = service.version_check(&request) {
                let fatal =
                    matches!(&resp.result, Outcome::Error(e) if e.code == "unsupported_version");
                if fatal {
                    flush(&writer, &mut batch).await?;
                    return close_with(&writer, mode, &resp).await;
                }
                encode(mode, &resp, &mut batch);
                continue;
            }
            let id = request.id;
            let svc = service.clone();
            let mut fut = Box::pin(async move { svc.handle(request.op).await });
            match poll_once(fut.as_mut()) {
                Poll::Ready(result) => encode(mode, &Response { id, result }, &mut batch),
                Poll::Pending => {
                    // Wait for a slot: this is where a flooding client is slowed down.
                    flush(&writer, &mut batch).await?;
                    let Ok(permit) = inflight.clone().acquire_owned().await else {
                        break;
                    };
                    let writer = writer.clone();
                    tokio::spawn(async move {
                        let result = fut.await;
                        let mut out = Vec::with_capacity(512);
                        encode(mode, &Response { id, result }, &mut out);
                        let _ = writer.lock().await.write_all(&out).await;
                        drop(permit);
                    });
                }
            }
        }
        flush(&writer, &mut batch).await?;
        if read_more(&mut rd, &mut buf, &shutdown).await? == 0 {
            if !buf.is_empty() && !shutdown.is_cancelled() {
                let resp = err(
                    0,
                    "bad_frame",
                    format!(
                        "connection closed inside a frame ({} bytes pending)",
                        buf.len()
                    ),
                );
                let _ = close_with(&writer, mode, &resp).await;
            }
            break;
        }
    }
    // Let requests still waiting on upstream answer before the write half closes.
    let _ = inflight.acquire_many(cfg.max_inflight as u32).await;
    Ok(())
}

fn poll_once<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    fut.poll(&mut cx)
}

async fn read_more(
    rd: &mut tokio::net::unix::OwnedReadHalf,
    buf: &mut BytesMut,
    shutdown: &CancellationToken,
) -> std::io::Result<usize> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
    tokio::select! {
        _ = shutdown.cancelled() => Ok(0),
        n = rd.read_buf(buf) => n,
    }
}

async fn flush(writer: &Writer, batch: &mut Vec<u8>) -> std::io::Result<()> {
    if batch.is_empty() {
        return Ok(());
    }
    let r = writer.lock().await.write_all(batch).await;
    batch.clear();
    r
}

async fn close_with(writer: &Writer, mode: Mode, resp: &Response) -> std::io::Result<()> {
    let mut out = Vec::new();
    encode(mode, resp, &mut out);
    let mut w = writer.lock().await;
    w.write_all(&out).await?;
    w.shutdown().await
}

enum Next {
    Incomplete,
    Request(Request),
    /// Answer and keep going (bad JSON request, unknown op).
    Answer(Response),
    /// Answer and close (oversized or undecodable frame).
    Fatal(Response),
}

fn err(id: u64, code: &str, message: impl Into<String>) -> Response {
    Response {
        id,
        result: Outcome::Error(WireError::new(code, message)),
    }
}

fn next_request(mode: Mode, buf: &mut BytesMut) -> Next {
    match mode {
        Mode::Binary => {
            if buf.len() < 4 {
                return Next::Incomplete;
            }
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if len > MAX_FRAME {
                return Next::Fatal(err(
                    0,
                    "frame_too_large",
                    format!("a frame of {len} bytes; the limit is {MAX_FRAME}"),
                ));
            }
            if buf.len() < 4 + len {
                return Next::Incomplete;
            }
            buf.advance(4);
            let payload = buf.split_to(len);
            match proto::decode_request(&payload) {
                Peeked::Request(r) => Next::Request(r),
                Peeked::UnknownOp(id) => Next::Answer(err(
                    id,
                    "unknown_op",
                    "an operation this server does not know",
                )),
                Peeked::Garbage(e) => {
                    Next::Fatal(err(0, "bad_frame", format!("undecodable frame: {e}")))
                }
            }
        }
        Mode::Json => {
            let Some(nl) = buf.iter().position(|&b| b == b'\n') else {
                if buf.len() > MAX_FRAME {
                    return Next::Fatal(err(
                        0,
                        "frame_too_large",
                        format!("a JSON line over {MAX_FRAME} bytes"),
                    ));
                }
                return Next::Incomplete;
            };
            let line = buf.split_to(nl + 1);
            let line = &line[..nl];
            if line.len() > MAX_FRAME {
                return Next::Fatal(err(
                    0,
                    "frame_too_large",
                    format!("a JSON line over {MAX_FRAME} bytes"),
                ));
            }
            if line.iter().all(|b| b.is_ascii_whitespace()) {
                return Next::Answer(err(0, "bad_json", "an empty line"));
            }
            match serde_json::from_slice::<Request>(line) {
                Ok(r) => Next::Request(r),
                Err(e) => {
                    // Tell an unknown op (valid JSON with an id) from broken JSON.
                    match serde_json::from_slice::<serde_json::Value>(line) {
                        Ok(v) => {
                            let id = v.get("id").and_then(serde_json::Value::as_u64).unwrap_or(0);
                            if v.get("op").is_some() && v.get("id").is_some() {
                                Next::Answer(err(
                                    id,
                                    "unknown_op",
                                    format!("not an operation this server knows: {e}"),
                                ))
                            } else {
                                Next::Answer(err(id, "bad_json", format!("not a request: {e}")))
                            }
                        }
                        Err(e) => Next::Answer(err(0, "bad_json", format!("not JSON: {e}"))),
                    }
                }
            }
        }
    }
}
