//! The Unix-socket server: accepts connections (bounded by a semaphore), gives each one its own
//! OS thread doing blocking reads and writes, picks the framing from the first byte (`{` → JSON
//! lines, anything else → binary frames), and answers pipelined requests by id.
//!
//! Why a thread per connection and not a task: a filter asks one question at a time per
//! connection, and on that ping-pong path a thread blocked in `read` costs one wake-up and two
//! system calls per request, where an event loop adds an `epoll_wait` and a read that finds
//! nothing (measured: the bare thread echo answers ~1.5× as many round trips as the same echo on
//! tokio, see `loadtest/RESULTS.md`). Connections are few (one per filter worker) and bounded.
//!
//! Each request's future is polled once on the connection thread, inside the runtime's context:
//! a cache hit completes there and its response joins the batch written after the current
//! read, so a pipelining client gets many responses per `write`. A request that must wait (a
//! miss) becomes a task on the runtime, holding one of the connection's in-flight slots (default
//! 256), and its response is written from the blocking pool; when every slot is taken the
//! connection stops reading, which is the backpressure. Bad input is answered with one error
//! and, for framing errors, closes only that connection. On shutdown every connection's read
//! side is shut, so blocked reads return; requests already read are answered (up to the drain
//! timeout), then the rest are closed.

use std::collections::HashMap;
use std::future::Future;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdStream;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::Service;
use crate::proto::{self, MAX_FRAME, Outcome, Peeked, Reply, Request, Response, WireError};

/// Socket server settings.
#[derive(Clone, Debug)]
pub struct SocketConfig {
    /// Connections served at once; a connection over it is closed at once (the client sees an
    /// end of file and may retry) and counted (`mailpolicyd_connections_rejected_total`).
    pub max_connections: usize,
    /// Requests waiting on upstream per connection before the connection stops reading.
    pub max_inflight: usize,
    /// Average requests per read (over 256 requests) from which a connection counts as bulk
    /// and, while interactive connections are open, its thread is demoted to `bulk_nice`; 0
    /// never demotes.
    pub bulk_batch: usize,
    /// Nice value of a demoted connection's thread.
    pub bulk_nice: i32,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
    /// How long a connection may be idle (no request), in the middle of a frame, or stuck
    /// writing to a client that does not read, before it is closed.
    pub idle_timeout: Duration,
    /// Answers not yet sent to one connection, in bytes: past this the connection is not read
    /// until its client has taken them.
    pub max_pending_bytes: usize,
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
            bulk_batch: 8,
            bulk_nice: 10,
            drain_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_pending_bytes: 4 << 20,
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
    /// Another process holds the socket's lock (`<path>.lock`): another mailpolicyd runs, or
    /// is starting, on this path.
    #[error(
        "{0} is in use: another process (another mailpolicyd?) holds its lock {0}.lock; not replacing it"
    )]
    Locked(String),
    /// A live socket is at the path: something (another mailpolicyd?) accepts connections on
    /// it. Only a dead socket is replaced.
    #[error(
        "{0} is in use: a process accepts connections on it (another mailpolicyd?); not replacing it"
    )]
    InUse(String),
    /// The bind or chmod failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// The socket file this process bound, known by its inode: [`SocketFile::remove`] (or dropping
/// it) deletes the path only while it is still that inode, so a process never deletes a socket
/// another one bound there since. It holds the exclusive lock on `<path>.lock` for as long as
/// it lives (the socket is removed before the lock is let go).
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
    armed: bool,
    /// `<path>.lock`, locked (flock, exclusive): declared last, so it is released last.
    _lock: std::fs::File,
}

impl SocketFile {
    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Deletes the path if it is still the socket this process bound; true if it did.
    pub fn remove(mut self) -> bool {
        self.remove_if_ours()
    }

    /// Leaves the file in place (for callers that manage it themselves).
    /// The lock on `<path>.lock` is released.
    pub fn keep(mut self) {
        self.armed = false;
    }

    fn remove_if_ours(&mut self) -> bool {
        if !std::mem::take(&mut self.armed) {
            return false;
        }
        match std::fs::symlink_metadata(&self.path) {
            Ok(m) if m.dev() == self.dev && m.ino() == self.ino => {
                std::fs::remove_file(&self.path).is_ok()
            }
            Ok(_) => {
                tracing::warn!(path = %self.path.display(), "the socket path is no longer ours: left in place");
                false
            }
            Err(_) => false,
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        self.remove_if_ours();
    }
}

/// Binds the socket at `path` and leaves the file to the caller (see [`bind_owned`]).
pub fn bind(path: &Path, mode: u32) -> Result<UnixListener, BindError> {
    let (listener, file) = bind_owned(path, mode)?;
    file.keep();
    Ok(listener)
}

/// Binds the socket at `path`: first the exclusive lock on `<path>.lock` (held by the
/// returned [`SocketFile`]; another process holding it: [`BindError::InUse`]), so two daemons
/// starting at once cannot both find a dead socket and replace each other's; then a live
/// socket (one that accepts a connection) is refused as [`BindError::InUse`], a dead one is
/// replaced, anything else is refused; the parent directory is created; the file mode is set.
/// The returned [`SocketFile`] removes the file when dropped (a start that fails later leaves
/// nothing behind), only if it is still ours. The lock file itself stays (deleting it would let
/// two processes lock two different files).
pub fn bind_owned(path: &Path, mode: u32) -> Result<(UnixListener, SocketFile), BindError> {
    let io = |source| BindError::Io {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let lock = lock_path(path)?;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(BindError::NotASocket(path.display().to_string()));
        }
        if socket_alive(path).map_err(io)? {
            return Err(BindError::InUse(path.display().to_string()));
        }
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    let meta = std::fs::symlink_metadata(path).map_err(io)?;
    let file = SocketFile {
        path: path.to_path_buf(),
        dev: meta.dev(),
        ino: meta.ino(),
        armed: true,
        _lock: lock,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(io)?;
    Ok((listener, file))
}

/// Takes the exclusive lock on `<path>.lock` (created if missing, mode 0600), without waiting.
fn lock_path(path: &Path) -> Result<std::fs::File, BindError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock = PathBuf::from(name);
    let io = |source| BindError::Io {
        path: lock.display().to_string(),
        source,
    };
    if std::fs::symlink_metadata(&lock).is_ok_and(|m| !m.file_type().is_file()) {
        return Err(io(std::io::Error::other(
            "the socket's lock file is not a regular file; not using it",
        )));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock)
        .map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(BindError::Locked(path.display().to_string()))
        }
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

/// Whether a process accepts connections on the socket at `path`: one connection attempt that
/// does not wait (a full accept queue also counts as alive). Refused or gone: dead.
fn socket_alive(path: &Path) -> std::io::Result<bool> {
    #[cfg(target_os = "linux")]
    {
        use rustix::io::Errno;
        use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
        let fd = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )?;
        let addr = SocketAddrUnix::new(path)?;
        match rustix::net::connect(&fd, &addr) {
            Ok(()) | Err(Errno::AGAIN | Errno::INPROGRESS) => Ok(true),
            Err(Errno::CONNREFUSED | Errno::NOENT) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        match StdStream::connect(path) {
            Ok(_) => Ok(true),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                ) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

/// The connections being served: a handle on each socket (to shut it down on drain) and a
/// signal when the last one ends.
#[derive(Default)]
struct Live {
    sockets: Mutex<HashMap<u64, StdStream>>,
    next_id: AtomicU64,
    ended: Notify,
    /// Set once shutdown began: an end of file is then ours, not the client's.
    draining: AtomicBool,
    /// Open connections known to ask one question at a time ([`Load`]).
    interactive: AtomicUsize,
}

impl Live {
    fn add(&self, s: &StdStream) -> Option<u64> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let clone = s.try_clone().ok()?;
        self.sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, clone);
        Some(id)
    }

    fn remove(&self, id: u64) {
        let mut m = self.sockets.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(&id);
        if m.is_empty() {
            self.ended.notify_waiters();
        }
    }

    fn shutdown_all(&self, how: std::net::Shutdown) {
        self.draining.store(true, Ordering::SeqCst);
        for s in self
            .sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            let _ = s.shutdown(how);
        }
    }

    fn is_empty(&self) -> bool {
        self.sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Waits until no connection is left.
    async fn drained(&self) {
        loop {
            let ended = self.ended.notified();
            if self.is_empty() {
                return;
            }
            ended.await;
        }
    }
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
    // `/ready` answers 503 while no slot is free or `accept` fails.
    service.attach_socket(slots.clone());
    let live = Arc::new(Live::default());
    let cfg = Arc::new(cfg);
    let runtime = tokio::runtime::Handle::current();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            s = listener.accept() => match s {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and the like: not ready for a second after the last failure.
                    service.accept_failed();
                    if let Some(suppressed) = service.metrics.accept_log.allow() {
                        tracing::warn!(error = %e, suppressed, "accept failed");
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        // Over `max_connections`: closed at once (the client sees an end of file and may
        // retry), never queued.
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            close_at_once(stream);
            service.metrics.connection_rejected();
            if let Some(suppressed) = service.metrics.reject_log.allow() {
                tracing::warn!(
                    max_connections = cfg.max_connections,
                    suppressed,
                    "socket full: connection closed"
                );
            }
            continue;
        };
        let allowed = peer_allowed(&stream, &cfg);
        let stream = match stream.into_std().and_then(|s| {
            s.set_nonblocking(false)?;
            Ok(s)
        }) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "accepted connection unusable");
                continue;
            }
        };
        let Some(id) = live.add(&stream) else {
            continue;
        };
        let (service, cfg, live2, runtime) =
            (service.clone(), cfg.clone(), live.clone(), runtime.clone());
        let spawned = std::thread::Builder::new()
            .name("mailpolicyd-conn".into())
            .stack_size(CONNECTION_STACK)
            .spawn(move || {
                let _permit = permit;
                // Futures polled here may spawn tasks and arm timers on the runtime.
                let _context = runtime.enter();
                service.metrics.connection_opened();
                if let Err(e) = connection(stream, allowed, &service, &cfg, &runtime, &live2) {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                service.metrics.connection_closed();
                live2.remove(id);
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no thread for a connection");
            live.remove(id);
        }
    }
    drop(listener);
    // Blocked reads return end-of-file; requests already read still get their answers.
    live.shutdown_all(std::net::Shutdown::Read);
    if tokio::time::timeout(cfg.drain_timeout, live.drained())
        .await
        .is_err()
    {
        tracing::warn!("drain timeout: closing connections with requests in flight");
        live.shutdown_all(std::net::Shutdown::Both);
    }
}

/// Closes a connection refused over `max_connections` so that its client reads an end of file,
/// not a reset: a Unix socket closed with unread data resets its peer, and a filter writes its
/// first request right after connecting. Shut both ways first (the peer can send nothing
/// more), then what it already sent is read and dropped (without waiting, at most 64 KiB).
fn close_at_once(stream: UnixStream) {
    if let Ok(mut s) = stream.into_std() {
        let _ = s.shutdown(std::net::Shutdown::Both);
        discard_unread(&mut s);
    }
}

/// Reads and drops what a non-blocking stream holds, at most 64 KiB, never waiting.
pub(crate) fn discard_unread(s: &mut impl Read) {
    let mut sink = [0u8; 4096];
    let mut left: usize = 64 * 1024;
    while left > 0 {
        match s.read(&mut sink) {
            Ok(0) | Err(_) => return,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
}

/// Stack of a connection thread: it polls request futures once (deep ones, such as DMARC
/// discovery, live on the heap) and frames bytes.
const CONNECTION_STACK: usize = 512 * 1024;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Binary,
    Json,
}

/// The write side, shared by the connection thread (batches of hits) and the tasks answering
/// misses. An async mutex, so a task can hold it across a hand-off to the blocking pool when a
/// frame could not be written whole without waiting (frames never interleave).
type Writer = Arc<tokio::sync::Mutex<StdStream>>;

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
    // A policy reply to a binary client is the answer's kept encoding behind a short header.
    if let (Mode::Binary, Outcome::Ok(Reply::Policy(p))) = (mode, &resp.result) {
        proto::encode_policy_frame(resp.id, p.source, p.ttl, &p.answer, out);
        return;
    }
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
            e.code.as_str(),
            "bad_json" | "bad_frame" | "frame_too_large"
        )
    {
        service.metrics.bad_frame(&e.code, &e.message);
    }
}

/// One connection, on its own thread. This is the one place that bounds a connection: its
/// idle time and the time a frame may take (`idle_timeout`, as the socket's receive and send
/// timeouts, set once), its requests waiting on upstream (`max_inflight`) and its unsent
/// answers (`max_pending_bytes`).
fn connection(
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
    let mode = if buf[0] == b'{' {
        Mode::Json
    } else {
        Mode::Binary
    };
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
            result: Outcome::Error(WireError::new(
                "forbidden",
                "peer credentials not in the allow-list",
            )),
        };
        return close_with(&writer, &inflight, mode, &resp);
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
            let request = match next_request(mode, &mut buf) {
                Next::Incomplete => break,
                Next::Request(r) => r,
                Next::Answer(resp) => {
                    consumed = true;
                    count_bad(service, &resp);
                    encode(mode, &resp, &mut batch);
                    continue;
                }
                Next::Fatal(resp) => {
                    count_bad(service, &resp);
                    fatal = Some(resp);
                    break;
                }
            };
            consumed = true;
            if let Some(resp) = service.version_check(&request) {
                if matches!(&resp.result, Outcome::Error(e) if e.code == "unsupported_version") {
                    fatal = Some(resp);
                    break;
                }
                encode(mode, &resp, &mut batch);
                continue;
            }
            answered += 1;
            let id = request.id;
            let svc = service.clone();
            let mut fut = Box::pin(async move { svc.handle(request.op).await });
            match poll_once(fut.as_mut()) {
                Poll::Ready(result) => {
                    encode(mode, &Response { id, result }, &mut batch);
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
                        write_from_task(&writer, &inflight, mode, Response { id, result }).await;
                        inflight.release();
                    });
                }
            }
        }
        flush(&writer, &inflight, &mut batch)?;
        if let Some(resp) = fatal {
            break close_with(&writer, &inflight, mode, &resp);
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
                    "bad_frame",
                    format!(
                        "connection closed inside a frame ({} bytes pending)",
                        buf.len()
                    ),
                );
                count_bad(service, &resp);
                let _ = close_with(&writer, &inflight, mode, &resp);
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

/// How much work a connection brings per read, to tell a bulk connection (a pipelining client
/// that always has a queue of requests waiting) from an interactive one (one question, one
/// answer). A bulk connection's thread is demoted once, when interactive connections are open
/// to be favoured, so that on a contended CPU the scheduler runs them first: fairness between
/// connections without a shared queue, since each has its own thread. With nobody to yield to
/// (only bulk clients), nothing is demoted and bulk throughput is untouched.
#[derive(Default)]
struct Load {
    reads: usize,
    requests: usize,
    /// Counted in [`Live::interactive`].
    interactive: bool,
    demoted: bool,
}

/// What one window of a connection's reads says about it.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Nothing new.
    Same,
    /// It asks one question at a time (under two requests per read): now counted interactive.
    Interactive,
    /// It is bulk and interactive connections are open: demote its thread.
    Demote,
}

impl Load {
    /// The window, in requests, over which the average is taken.
    const WINDOW: usize = 256;

    /// Records one read that brought `requests` requests. `threshold` is the bulk average
    /// (0: never bulk); `interactive` counts the open interactive connections (this one
    /// included when it is one).
    fn read(&mut self, requests: usize, threshold: usize, interactive: &AtomicUsize) -> Verdict {
        if self.demoted || threshold == 0 {
            return Verdict::Same;
        }
        self.reads += 1;
        self.requests += requests;
        if self.requests < Self::WINDOW {
            return Verdict::Same;
        }
        let (requests, reads) = (self.requests, self.reads);
        self.reads = 0;
        self.requests = 0;
        if requests >= reads * threshold {
            if std::mem::take(&mut self.interactive) {
                interactive.fetch_sub(1, Ordering::SeqCst);
            }
            if interactive.load(Ordering::SeqCst) > 0 {
                self.demoted = true;
                return Verdict::Demote;
            }
        } else if requests < reads * 2 && !self.interactive {
            self.interactive = true;
            interactive.fetch_add(1, Ordering::SeqCst);
            return Verdict::Interactive;
        }
        Verdict::Same
    }

    /// The connection ends: it no longer counts.
    fn close(&mut self, interactive: &AtomicUsize) {
        if std::mem::take(&mut self.interactive) {
            interactive.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Lowers the calling thread's CPU priority to `nice` (Linux: `setpriority` on the thread id).
fn demote(nice: i32) {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        match rustix::process::setpriority_process(Some(tid), nice) {
            Ok(()) => tracing::debug!(nice, "bulk connection: thread demoted"),
            Err(e) => tracing::debug!(error = %e, "bulk connection: could not demote"),
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
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
async fn write_from_task(writer: &Writer, inflight: &Arc<InFlight>, mode: Mode, resp: Response) {
    let guard = writer.clone().lock_owned().await;
    if inflight.is_dead() {
        return;
    }
    let mut out = Vec::with_capacity(512);
    encode(mode, &resp, &mut out);
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
    mode: Mode,
    resp: &Response,
) -> std::io::Result<()> {
    let mut out = Vec::new();
    encode(mode, resp, &mut out);
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
            match proto::decode_json_request(line) {
                proto::JsonPeeked::Request(r) => Next::Request(r),
                proto::JsonPeeked::UnknownOp(id, why) => Next::Answer(err(
                    id,
                    "unknown_op",
                    format!("not an operation this server knows: {why}"),
                )),
                proto::JsonPeeked::BadJson(id, why) => Next::Answer(err(id, "bad_json", why)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Load, Verdict};
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn bulk_is_demoted_only_when_someone_interactive_is_there() {
        let interactive = AtomicUsize::new(0);
        // Sixteen requests per read with nobody interactive open: never demoted.
        let mut bulk = Load::default();
        assert!((0..1000).all(|_| bulk.read(16, 8, &interactive) == Verdict::Same));
        // One per read: interactive after a window of 256 requests, counted once.
        let mut one = Load::default();
        let verdicts: Vec<Verdict> = (0..3000).map(|_| one.read(1, 8, &interactive)).collect();
        assert_eq!(
            verdicts
                .iter()
                .filter(|v| **v == Verdict::Interactive)
                .count(),
            1
        );
        assert_eq!(verdicts[255], Verdict::Interactive);
        assert_eq!(interactive.load(Ordering::SeqCst), 1);
        // Now the bulk connection is demoted at its next full window, and only once.
        let turned: Vec<usize> = (0..1000)
            .filter(|_| bulk.read(16, 8, &interactive) == Verdict::Demote)
            .collect();
        assert_eq!(turned.len(), 1);
        // Seven per read with a threshold of eight is neither bulk nor interactive.
        let mut seven = Load::default();
        assert!((0..10_000).all(|_| seven.read(7, 8, &interactive) == Verdict::Same));
        // Threshold 0 turns it off.
        let mut off = Load::default();
        assert!((0..10_000).all(|_| off.read(64, 0, &interactive) == Verdict::Same));
        // A closing interactive connection stops counting.
        one.close(&interactive);
        assert_eq!(interactive.load(Ordering::SeqCst), 0);
    }
}
