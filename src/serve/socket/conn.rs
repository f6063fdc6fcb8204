//! One connection, on its own thread: the read loop (frames cut by [`proto::frame`], requests
//! polled once, hits batched), the write path shared with the tasks answering misses, and the
//! bounds of a connection (idle time, in-flight requests, unsent answer bytes).

use std::future::Future;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream as StdStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};

use super::fairness::{Load, Verdict, demote};
use super::{Live, SocketConfig};
use crate::proto::frame::{self, Framing};
use crate::proto::{
    self, ErrorCode, MAX_FRAME, Outcome, Peeked, Reply, Request, Response, WireError,
};
use crate::serve::Service;

/// The write side, shared by the connection thread (batches of hits) and the tasks answering
/// misses. An async mutex, so a task can hold it across a hand-off to the blocking pool when a
/// frame could not be written whole without waiting (frames never interleave).
type Writer = Arc<tokio::sync::Mutex<StdStream>>;

fn encode(framing: Framing, resp: &Response, out: &mut Vec<u8>) {
    // A policy reply to a binary client is the answer's kept encoding behind a short header.
    if let (Framing::Binary, Outcome::Ok(Reply::Policy(p))) = (framing, &resp.result) {
        proto::encode_policy_frame(resp.id, p.source, p.ttl, &p.answer, out);
        return;
    }
    let ok = match framing {
        Framing::Binary => proto::encode_frame(resp, out).is_ok(),
        Framing::Json => proto::encode_json_line(resp, out).is_ok(),
    };
    if !ok {
        let fallback = Response {
            id: resp.id,
            result: Outcome::Error(WireError::of(
                ErrorCode::Internal,
                "the response could not be encoded",
            )),
        };
        let _ = match framing {
            Framing::Binary => proto::encode_frame(&fallback, out).map_err(|_| ()),
            Framing::Json => proto::encode_json_line(&fallback, out).map_err(|_| ()),
        };
    }
}

/// Requests of one connection waiting on upstream: at most `max`, and a way to wait for all;
/// the bytes of their answers not yet sent; and whether the connection is dead.
struct InFlight {
    count: Mutex<usize>,
    changed: Condvar,
    max: usize,
    /// Encoded answers of tasks not yet written whole.
    pending: AtomicUsize,
    /// A write failed or timed out (possibly in the middle of a frame): the socket was shut
    /// down both ways under the writer lock, and nothing more is written to it, so a client
    /// never reads whole frames after a cut one, and tasks still to answer skip the write
    /// instead of each waiting out the idle timeout.
    dead: AtomicBool,
}

impl InFlight {
    fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// A write to `stream` (held under the writer lock) failed: no byte is written after it.
    fn kill(&self, stream: &StdStream) {
        self.dead.store(true, Ordering::Release);
        let _ = stream.shutdown(std::net::Shutdown::Both);
    }

    /// Takes a slot, waiting while all are taken.
    fn acquire(&self) {
        let mut n = self.count.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= self.max {
            n = self.changed.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
    }

    fn release(&self) {
        let mut n = self.count.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        self.changed.notify_all();
    }

    /// Waits until every slot is free.
    fn wait_idle(&self) {
        let mut n = self.count.lock().unwrap_or_else(|e| e.into_inner());
        while *n > 0 {
            n = self.changed.wait(n).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Bytes of misses' answers not yet sent.
    fn pending(&self) -> usize {
        self.pending.load(Ordering::Relaxed)
    }

    fn pending_add(&self, bytes: usize) {
        self.pending.fetch_add(bytes, Ordering::SeqCst);
    }

    fn pending_sub(&self, bytes: usize) {
        self.pending.fetch_sub(bytes, Ordering::SeqCst);
        // Under the lock, so a waiter cannot miss the wake-up.
        let _n = self.count.lock().unwrap_or_else(|e| e.into_inner());
        self.changed.notify_all();
    }

    /// Waits while more than `max` answer bytes are unsent; false if they did not drain within
    /// `timeout` (the client does not read: the connection is closed).
    fn wait_drained(&self, max: usize, timeout: Duration) -> bool {
        if self.pending.load(Ordering::SeqCst) <= max {
            return true;
        }
        let deadline = std::time::Instant::now() + timeout;
        let mut n = self.count.lock().unwrap_or_else(|e| e.into_inner());
        while self.pending.load(Ordering::SeqCst) > max {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            n = self
                .changed
                .wait_timeout(n, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// A read or write that waited `idle_timeout` (SO_RCVTIMEO / SO_SNDTIMEO).
fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Counts (and logs, rate-limited) a request rejected for its size or syntax.
fn count_bad(service: &Service, resp: &Response) {
    if let Outcome::Error(e) = &resp.result
        && matches!(
            e.error_code(),
            Some(ErrorCode::BadJson | ErrorCode::BadFrame | ErrorCode::FrameTooLarge)
        )
    {
        service.metrics.bad_frame(&e.code, &e.message);
    }
}

/// One connection, on its own thread. This is the one place that bounds a connection: its
/// idle time and the time a frame may take (`idle_timeout`, as the socket's receive and send
/// timeouts, set once), its requests waiting on upstream (`max_inflight`) and its unsent
/// answers (`max_pending_bytes`).
pub(super) fn connection(
    stream: StdStream,
    allowed: bool,
    service: &Arc<Service>,
    cfg: &SocketConfig,
    runtime: &tokio::runtime::Handle,
    live: &Live,
) -> std::io::Result<()> {
    // Set once per connection (no system call per request): a read that waits this long
    // returns an error, and so does a write to a client that does not read.
    let idle = cfg.idle_timeout.max(Duration::from_millis(1));
    stream.set_read_timeout(Some(idle))?;
    stream.set_write_timeout(Some(idle))?;
    let writer: Writer = Arc::new(tokio::sync::Mutex::new(stream.try_clone()?));
    let mut rd = stream;
    let mut buf = BytesMut::with_capacity(16 * 1024);
    let mut chunk = vec![0u8; 16 * 1024];
    let timed_out_close = |what: &str| {
        service.metrics.connection_timed_out();
        tracing::debug!(idle_timeout = ?idle, "{what}: connection closed");
    };
    // The first byte decides the framing.
    match read_more(&mut rd, &mut buf, &mut chunk) {
        Ok(0) => return Ok(()),
        Ok(_) => {}
        Err(e) if timed_out(&e) => {
            timed_out_close("idle");
            return Ok(());
        }
        Err(e) => return Err(e),
    }
    let framing = Framing::detect(buf[0]);
    let inflight = Arc::new(InFlight {
        count: Mutex::new(0),
        changed: Condvar::new(),
        max: cfg.max_inflight.max(1),
        pending: AtomicUsize::new(0),
        dead: AtomicBool::new(false),
    });
    if !allowed {
        let resp = Response {
            id: 0,
            result: Outcome::Error(WireError::of(
                ErrorCode::Forbidden,
                "peer credentials not in the allow-list",
            )),
        };
        return close_with(&writer, &inflight, framing, &resp);
    }
    let max_pending = cfg.max_pending_bytes.max(1);
    let mut batch: Vec<u8> = Vec::with_capacity(8 * 1024);
    let mut load = Load::default();
    // When the frame still incomplete in the buffer began (read only when one is left over).
    let mut partial_since: Option<std::time::Instant> = None;
    // The loop leaves by `?` on a broken connection too, so what follows it always runs.
    let mut serve = || loop {
        // Answer every complete request in the buffer.
        let mut fatal = None;
        let mut answered = 0usize;
        let mut consumed = false;
        loop {
            let request = match next_request(framing, &mut buf) {
                Next::Incomplete => break,
                Next::Request(r) => r,
                Next::Answer(resp) => {
                    consumed = true;
                    count_bad(service, &resp);
                    encode(framing, &resp, &mut batch);
                    continue;
                }
                Next::Fatal(resp) => {
                    count_bad(service, &resp);
                    fatal = Some(resp);
                    break;
                }
            };
            consumed = true;
            if let Some(resp) = service.version_check(&request, framing) {
                // An error that closes the connection (`unsupported_version`) ends it here.
                let closes = matches!(&resp.result,
                    Outcome::Error(e) if e.error_code().is_some_and(ErrorCode::closes));
                if closes {
                    fatal = Some(resp);
                    break;
                }
                encode(framing, &resp, &mut batch);
                continue;
            }
            answered += 1;
            let id = request.id;
            let svc = service.clone();
            let mut fut = Box::pin(async move { svc.handle(request.op).await });
            match poll_once(fut.as_mut()) {
                Poll::Ready(result) => {
                    encode(framing, &Response { id, result }, &mut batch);
                    // A client that does not read: at most `max_pending_bytes` of its
                    // answers are held, hits' batch and misses' answers together; past it
                    // they are written (waiting at most the idle timeout) before another
                    // request is looked at.
                    if batch.len() + inflight.pending() >= max_pending {
                        flush(&writer, &inflight, &mut batch)?;
                        if !inflight.wait_drained(max_pending, idle) {
                            return Err(std::io::ErrorKind::TimedOut.into());
                        }
                    }
                }
                Poll::Pending => {
                    // Answers ready so far go out before this one waits for a slot: this is
                    // where a flooding client is slowed down.
                    flush(&writer, &inflight, &mut batch)?;
                    inflight.acquire();
                    let (writer, inflight) = (writer.clone(), inflight.clone());
                    runtime.spawn(async move {
                        let result = fut.await;
                        // Encoded only once this task holds the writer: tasks waiting for it
                        // hold their result (a policy answer is the cache's `Arc`), not a
                        // copy of its bytes, so misses completing together cannot pile up
                        // `max_inflight` encoded answers.
                        write_from_task(&writer, &inflight, framing, Response { id, result }).await;
                        inflight.release();
                    });
                }
            }
        }
        flush(&writer, &inflight, &mut batch)?;
        if let Some(resp) = fatal {
            break close_with(&writer, &inflight, framing, &resp);
        }
        if load.read(answered, cfg.bulk_batch, &live.interactive) == Verdict::Demote {
            demote(cfg.bulk_nice);
            service.metrics.connection_demoted();
        }
        // Answers of misses still unsent past the bound: read nothing more until they drain.
        if !inflight.wait_drained(max_pending, idle) {
            timed_out_close("answers not taken");
            break Ok(());
        }
        // A frame left incomplete: it has `idle_timeout` from its first byte to be whole (a
        // client trickling a byte at a time does not hold the connection for ever).
        if buf.is_empty() {
            partial_since = None;
        } else if consumed || partial_since.is_none() {
            partial_since = Some(std::time::Instant::now());
        } else if partial_since.is_some_and(|t| t.elapsed() >= idle) {
            timed_out_close("frame incomplete");
            break Ok(());
        }
        let n = match read_more(&mut rd, &mut buf, &mut chunk) {
            Ok(n) => n,
            Err(e) if timed_out(&e) => {
                timed_out_close(if buf.is_empty() {
                    "idle"
                } else {
                    "frame incomplete"
                });
                break Ok(());
            }
            Err(e) => break Err(e),
        };
        if n == 0 {
            if !buf.is_empty() && !live.draining.load(Ordering::SeqCst) {
                let resp = err(
                    0,
                    ErrorCode::BadFrame,
                    format!(
                        "connection closed inside a frame ({} bytes pending)",
                        buf.len()
                    ),
                );
                count_bad(service, &resp);
                let _ = close_with(&writer, &inflight, framing, &resp);
            }
            break Ok(());
        }
    };
    let result = match serve() {
        Err(e) if timed_out(&e) => {
            timed_out_close("answers not taken");
            Ok(())
        }
        r => r,
    };
    load.close(&live.interactive);
    // Let requests still waiting on upstream answer before the socket closes.
    inflight.wait_idle();
    result
}

/// The connection thread's hold on the writer (it is not a runtime thread, so it may block).
fn lock(writer: &Writer) -> tokio::sync::MutexGuard<'_, StdStream> {
    writer.blocking_lock()
}

/// Writes a miss's answer from its task without blocking a runtime worker: encoded once the
/// writer is ours; a send that does not wait (the usual case: the client reads its answers) is
/// done right here; the rest of a frame that would have to wait is written from the blocking
/// pool, still under the lock. A failed or timed-out write kills the connection (see
/// [`InFlight::dead`]); on a dead connection nothing is written.
async fn write_from_task(
    writer: &Writer,
    inflight: &Arc<InFlight>,
    framing: Framing,
    resp: Response,
) {
    let guard = writer.clone().lock_owned().await;
    if inflight.is_dead() {
        return;
    }
    let mut out = Vec::with_capacity(512);
    encode(framing, &resp, &mut out);
    drop(resp);
    let from = match send_now(&guard, &out) {
        Some(n) if n < out.len() => n,
        Some(_) => return,
        None => return inflight.kill(&guard),
    };
    let unsent = out.len() - from;
    inflight.pending_add(unsent);
    let owner = inflight.clone();
    let _ = tokio::task::spawn_blocking(move || {
        if (&*guard).write_all(&out[from..]).is_err() {
            owner.kill(&guard);
        }
    })
    .await;
    inflight.pending_sub(unsent);
}

/// One send that does not wait: the bytes sent (0 when none fit), `None` on an error (the
/// connection is gone; nothing more to write).
fn send_now(stream: &StdStream, bytes: &[u8]) -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        use rustix::net::SendFlags;
        match rustix::net::send(stream, bytes, SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
            Ok(n) => Some(n),
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => Some(0),
            Err(_) => None,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (stream, bytes);
        Some(0)
    }
}

fn poll_once<F: Future>(fut: Pin<&mut F>) -> Poll<F::Output> {
    let mut cx = Context::from_waker(futures_util::task::noop_waker_ref());
    fut.poll(&mut cx)
}

/// One blocking read, appended to `buf`; 0 at end of file (or when shutdown shut the read side).
fn read_more(rd: &mut StdStream, buf: &mut BytesMut, chunk: &mut [u8]) -> std::io::Result<usize> {
    let n = loop {
        match rd.read(chunk) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => break r?,
        }
    };
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

/// The error of a connection killed by a failed write (from a task or an earlier flush).
fn dead() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::BrokenPipe,
        "a write failed: connection closed",
    )
}

/// Writes the batch (blocking, at most the idle timeout per write). A failure kills the
/// connection: the frame it cut is the last thing the client gets.
fn flush(writer: &Writer, inflight: &InFlight, batch: &mut Vec<u8>) -> std::io::Result<()> {
    if inflight.is_dead() {
        batch.clear();
        return Err(dead());
    }
    if batch.is_empty() {
        return Ok(());
    }
    let w = lock(writer);
    let r = (&*w).write_all(batch);
    batch.clear();
    if r.is_err() {
        inflight.kill(&w);
    }
    r
}

fn close_with(
    writer: &Writer,
    inflight: &InFlight,
    framing: Framing,
    resp: &Response,
) -> std::io::Result<()> {
    let mut out = Vec::new();
    encode(framing, resp, &mut out);
    let w = lock(writer);
    if inflight.is_dead() {
        return Err(dead());
    }
    if let Err(e) = (&*w).write_all(&out) {
        inflight.kill(&w);
        return Err(e);
    }
    w.shutdown(std::net::Shutdown::Write)
}

enum Next {
    Incomplete,
    Request(Request),
    /// Answer and keep going (bad JSON request, unknown op).
    Answer(Response),
    /// Answer and close (oversized or undecodable frame).
    Fatal(Response),
}

fn err(id: u64, code: ErrorCode, message: impl Into<String>) -> Response {
    Response {
        id,
        result: Outcome::Error(WireError::of(code, message)),
    }
}

/// The next request in `buf` (its frame consumed), or what to answer instead.
fn next_request(framing: Framing, buf: &mut BytesMut) -> Next {
    let split = match frame::split(framing, buf, MAX_FRAME) {
        Ok(Some(split)) => split,
        Ok(None) => return Next::Incomplete,
        Err(e) => return Next::Fatal(err(0, e.code(), e.to_string())),
    };
    let payload = &buf[split.payload];
    let next = match framing {
        Framing::Binary => match proto::decode_request(payload) {
            Peeked::Request(r) => Next::Request(r),
            Peeked::UnknownOp(id) => Next::Answer(err(
                id,
                ErrorCode::UnknownOp,
                "an operation this server does not know",
            )),
            Peeked::Garbage(e) => Next::Fatal(err(
                0,
                ErrorCode::BadFrame,
                format!("undecodable frame: {e}"),
            )),
        },
        Framing::Json if payload.iter().all(u8::is_ascii_whitespace) => {
            Next::Answer(err(0, ErrorCode::BadJson, "an empty line"))
        }
        Framing::Json => match proto::decode_json_request(payload) {
            proto::JsonPeeked::Request(r) => Next::Request(r),
            proto::JsonPeeked::UnknownOp(id, why) => Next::Answer(err(
                id,
                ErrorCode::UnknownOp,
                format!("not an operation this server knows: {why}"),
            )),
            proto::JsonPeeked::BadJson(id, why) => Next::Answer(err(id, ErrorCode::BadJson, why)),
        },
    };
    buf.advance(split.consumed);
    next
}
