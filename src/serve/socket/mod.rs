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
//!
//! The server is three files: this one binds, accepts, bounds the connection count and drains;
//! [`conn`] is the connection loop and its write path; [`fairness`] demotes bulk connections.

mod conn;
mod fairness;

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream as StdStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::Service;
use conn::connection;

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
    /// Group the socket file is chowned to (its owner unchanged) before `mode` is set
    /// (`socket.group`, already resolved to a gid); `None` leaves the daemon's own group.
    pub group: Option<u32>,
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
            group: None,
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
    /// The socket file could not be given `socket.group` (the daemon is neither root nor a
    /// member of the group).
    #[error(
        "{path}: cannot set the socket's group to gid {gid} (socket.group): {source}; the daemon must run as root or as a member of that group"
    )]
    Chown {
        /// The path.
        path: String,
        /// The group asked for.
        gid: u32,
        /// The error.
        source: std::io::Error,
    },
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
    let (listener, file) = bind_owned(path, mode, None)?;
    file.keep();
    Ok(listener)
}

/// Binds the socket at `path`: first the exclusive lock on `<path>.lock` (held by the
/// returned [`SocketFile`]; another process holding it: [`BindError::InUse`]), so two daemons
/// starting at once cannot both find a dead socket and replace each other's; then a live
/// socket (one that accepts a connection) is refused as [`BindError::InUse`], a dead one is
/// replaced, anything else is refused; the parent directory is created; the file is chowned to
/// `group` when given (its owner unchanged), then the file mode is set.
/// The returned [`SocketFile`] removes the file when dropped (a start that fails later leaves
/// nothing behind), only if it is still ours. The lock file itself stays (deleting it would let
/// two processes lock two different files).
pub fn bind_owned(
    path: &Path,
    mode: u32,
    group: Option<u32>,
) -> Result<(UnixListener, SocketFile), BindError> {
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
    if let Some(gid) = group {
        // Before the mode: the group's bits never apply to the daemon's own group.
        std::os::unix::fs::chown(path, None, Some(gid)).map_err(|source| BindError::Chown {
            path: path.display().to_string(),
            gid,
            source,
        })?;
    }
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

fn peer_allowed(stream: &UnixStream, cfg: &SocketConfig) -> bool {
    if cfg.allow_uids.is_empty() && cfg.allow_gids.is_empty() {
        return true;
    }
    match stream.peer_cred() {
        Ok(c) => cfg.allow_uids.contains(&c.uid()) || cfg.allow_gids.contains(&c.gid()),
        Err(_) => false,
    }
}
