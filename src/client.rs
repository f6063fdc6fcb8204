//! Clients for the binary socket protocol: [`Client`] (async, one connection, many requests in
//! flight, answers matched by id) and [`BlockingClient`] (one request at a time, for the CLI
//! and simple filters). Both reconnect once when the daemon has restarted under them; every
//! operation is a read, so retrying it is safe.
//!
//! They speak protocol [`PROTOCOL_MAJOR`](proto::PROTOCOL_MAJOR) (2: a policy answer of the
//! DMARC, SPF, DKIM key and ATPS kinds carries `raw`, the selected record's text, which moved
//! the binary encoding); [`Client::hello`] checks that the daemon speaks it too.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{Mutex, oneshot};

use crate::model::dmarc::{DmarcInput, DmarcVerdict};
use crate::model::spf::SpfCheck;
use crate::model::stats::StatsSnapshot;
use crate::policy::atps::AtpsHash;
use crate::proto::frame::{FrameBuf, Framing, MAX_RESPONSE_FRAME};
use crate::proto::{
    self, DmarcAnswer, Op, Outcome, PolicyAnswer, Reply, Request, Response, WireError,
};

/// What can go wrong talking to the daemon.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, reading or writing failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The daemon sent something this client cannot read.
    #[error("protocol: {0}")]
    Protocol(String),
    /// The daemon answered with an error.
    #[error("{0}")]
    Server(WireError),
    /// The daemon answered with a reply of the wrong kind.
    #[error("unexpected reply")]
    Unexpected,
}

type Pending = Arc<std::sync::Mutex<HashMap<u64, oneshot::Sender<Response>>>>;

struct Conn {
    writer: Mutex<OwnedWriteHalf>,
    pending: Pending,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// An async, pipelining client.
pub struct Client {
    path: PathBuf,
    conn: Mutex<Option<Arc<Conn>>>,
    next_id: AtomicU64,
}

async fn open(path: &Path) -> Result<Arc<Conn>, ClientError> {
    let stream = UnixStream::connect(path).await?;
    let (mut rd, wr) = stream.into_split();
    let pending: Pending = Arc::default();
    let p = pending.clone();
    let reader = tokio::spawn(async move {
        let mut frames = FrameBuf::new(Framing::Binary, MAX_RESPONSE_FRAME);
        let mut chunk = vec![0u8; 64 * 1024];
        'read: loop {
            let n = match rd.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            frames.feed(&chunk[..n]);
            loop {
                // A frame over the bound or one that does not decode ends the connection.
                let payload = match frames.next_frame() {
                    Ok(Some(payload)) => payload,
                    Ok(None) => break,
                    Err(_) => break 'read,
                };
                let Ok(resp) = postcard::from_bytes::<Response>(payload) else {
                    break 'read;
                };
                let waiter = p.lock().unwrap_or_else(|e| e.into_inner()).remove(&resp.id);
                match waiter {
                    Some(tx) => {
                        let _ = tx.send(resp);
                    }
                    // An error the server sends before closing (id 0) goes to every waiter.
                    None if resp.id == 0 => {
                        for (_, tx) in p.lock().unwrap_or_else(|e| e.into_inner()).drain() {
                            let _ = tx.send(resp.clone());
                        }
                    }
                    None => {}
                }
            }
        }
        // Connection gone: wake every waiter (their senders drop).
        p.lock().unwrap_or_else(|e| e.into_inner()).clear();
    });
    Ok(Arc::new(Conn {
        writer: Mutex::new(wr),
        pending,
        reader,
    }))
}

impl Client {
    /// Connects to the daemon's socket.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Client, ClientError> {
        let path = path.as_ref().to_owned();
        let conn = open(&path).await?;
        Ok(Client {
            path,
            conn: Mutex::new(Some(conn)),
            next_id: AtomicU64::new(1),
        })
    }

    async fn conn(&self, fresh: bool) -> Result<Arc<Conn>, ClientError> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref()
            && !fresh
            && !c.reader.is_finished()
        {
            return Ok(c.clone());
        }
        let c = open(&self.path).await?;
        *guard = Some(c.clone());
        Ok(c)
    }

    /// Sends one request and waits for its response; other calls may be in flight at the same
    /// time on the same connection.
    pub async fn call(&self, op: Op) -> Result<Reply, ClientError> {
        match self.call_once(op.clone(), false).await {
            Err(ClientError::Io(_)) => self.call_once(op, true).await,
            other => other,
        }
    }

    async fn call_once(&self, op: Op, fresh: bool) -> Result<Reply, ClientError> {
        let conn = self.conn(fresh).await?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        conn.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let mut frame = Vec::with_capacity(128);
        proto::encode_frame(&Request { id, op }, &mut frame)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        if let Err(e) = conn.writer.lock().await.write_all(&frame).await {
            conn.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            return Err(e.into());
        }
        match rx.await {
            Ok(resp) => into_reply(resp),
            Err(_) => Err(ClientError::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "the daemon closed the connection",
            ))),
        }
    }

    /// Announces this build's protocol version; the daemon's version and software on success,
    /// `unsupported_version` (and a closed connection) when it speaks another major.
    pub async fn hello(&self) -> Result<(String, String), ClientError> {
        hello_reply(self.call(hello_op()).await?)
    }

    /// The DMARC policy for mail from `domain`.
    pub async fn dmarc(&self, domain: &str) -> Result<DmarcAnswer, ClientError> {
        match self
            .call(Op::Dmarc {
                domain: domain.into(),
            })
            .await?
        {
            Reply::Dmarc(d) => Ok(*d),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// The SPF record of `domain`.
    pub async fn spf(&self, domain: &str) -> Result<PolicyAnswer, ClientError> {
        policy(
            self.call(Op::Spf {
                domain: domain.into(),
            })
            .await?,
        )
    }

    /// A DKIM key.
    pub async fn dkim_key(
        &self,
        selector: &str,
        domain: &str,
    ) -> Result<PolicyAnswer, ClientError> {
        policy(
            self.call(Op::DkimKey {
                selector: selector.into(),
                domain: domain.into(),
            })
            .await?,
        )
    }

    /// An ATPS authorization.
    pub async fn atps(
        &self,
        signer: &str,
        author: &str,
        hash: AtpsHash,
    ) -> Result<PolicyAnswer, ClientError> {
        policy(
            self.call(Op::Atps {
                signer: signer.into(),
                author: author.into(),
                hash,
            })
            .await?,
        )
    }

    /// TLSA records of an MX host.
    pub async fn tlsa(&self, host: &str, port: u16) -> Result<PolicyAnswer, ClientError> {
        policy(
            self.call(Op::Tlsa {
                host: host.into(),
                port: Some(port),
            })
            .await?,
        )
    }

    /// SPF check_host() for a connection.
    pub async fn spf_check(
        &self,
        ip: &str,
        mail_from: &str,
        helo: &str,
    ) -> Result<SpfCheck, ClientError> {
        match self
            .call(Op::SpfCheck {
                ip: ip.into(),
                mail_from: mail_from.into(),
                helo: helo.into(),
            })
            .await?
        {
            Reply::SpfCheck(c) => Ok(*c),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// The DMARC verdict for a message.
    pub async fn dmarc_evaluate(&self, input: DmarcInput) -> Result<DmarcVerdict, ClientError> {
        match self.call(Op::DmarcEvaluate(input)).await? {
            Reply::DmarcVerdict(v) => Ok(*v),
            _ => Err(ClientError::Unexpected),
        }
    }

    /// The daemon's counters.
    pub async fn stats(&self) -> Result<StatsSnapshot, ClientError> {
        match self.call(Op::Stats).await? {
            Reply::Stats(s) => Ok(*s),
            _ => Err(ClientError::Unexpected),
        }
    }
}

fn into_reply(resp: Response) -> Result<Reply, ClientError> {
    match resp.result {
        Outcome::Ok(r) => Ok(r),
        Outcome::Error(e) => Err(ClientError::Server(e)),
    }
}

fn policy(r: Reply) -> Result<PolicyAnswer, ClientError> {
    match r {
        Reply::Policy(p) => Ok(p),
        _ => Err(ClientError::Unexpected),
    }
}

/// A blocking client: one request at a time on one connection.
pub struct BlockingClient {
    path: PathBuf,
    stream: Option<std::os::unix::net::UnixStream>,
    /// Bytes read from `stream` and not yet taken as a response.
    frames: FrameBuf,
    next_id: u64,
    timeout: Duration,
}

impl BlockingClient {
    /// Connects, with a read/write timeout per request.
    pub fn connect(
        path: impl AsRef<Path>,
        timeout: Duration,
    ) -> Result<BlockingClient, ClientError> {
        let mut c = BlockingClient {
            path: path.as_ref().to_owned(),
            stream: None,
            frames: FrameBuf::new(Framing::Binary, MAX_RESPONSE_FRAME),
            next_id: 1,
            timeout,
        };
        c.reconnect()?;
        Ok(c)
    }

    fn reconnect(&mut self) -> Result<(), ClientError> {
        let s = std::os::unix::net::UnixStream::connect(&self.path)?;
        s.set_read_timeout(Some(self.timeout))?;
        s.set_write_timeout(Some(self.timeout))?;
        self.stream = Some(s);
        self.frames = FrameBuf::new(Framing::Binary, MAX_RESPONSE_FRAME);
        Ok(())
    }

    /// [`Client::hello`], blocking.
    pub fn hello(&mut self) -> Result<(String, String), ClientError> {
        hello_reply(self.call(hello_op())?)
    }

    /// Sends one request and reads its response.
    pub fn call(&mut self, op: Op) -> Result<Reply, ClientError> {
        match self.call_once(op.clone()) {
            Err(ClientError::Io(_)) => {
                self.reconnect()?;
                self.call_once(op)
            }
            other => other,
        }
    }

    fn call_once(&mut self, op: Op) -> Result<Reply, ClientError> {
        let id = self.next_id;
        self.next_id += 1;
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotConnected))?;
        let mut frame = Vec::with_capacity(128);
        proto::encode_frame(&Request { id, op }, &mut frame)
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        stream.write_all(&frame)?;
        loop {
            let payload = match self.frames.read_frame(stream) {
                Ok(payload) => payload,
                // A frame over the bound: this connection is dropped (the next call reconnects).
                Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                    self.stream = None;
                    return Err(ClientError::Protocol(e.to_string()));
                }
                Err(e) => return Err(e.into()),
            };
            let resp: Response =
                postcard::from_bytes(payload).map_err(|e| ClientError::Protocol(e.to_string()))?;
            if resp.id == id || resp.id == 0 {
                return into_reply(resp);
            }
        }
    }
}

/// `hello` with this build's protocol version.
fn hello_op() -> Op {
    Op::Hello {
        version: format!("{}.{}", proto::PROTOCOL_MAJOR, proto::PROTOCOL_MINOR),
    }
}

fn hello_reply(reply: Reply) -> Result<(String, String), ClientError> {
    match reply {
        Reply::Hello { version, server } => Ok((version, server)),
        _ => Err(ClientError::Unexpected),
    }
}
