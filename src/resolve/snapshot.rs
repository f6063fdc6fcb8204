//! Cache snapshots, so a restart is warm: every entry with its answer, when it was stored (wall
//! clock) and its TTL, postcard-encoded behind a magic and format version. Written to a
//! temporary file and renamed over the old one, so a crash mid-write leaves the old snapshot.
//! On load, entries still fresh are served as hits and expired ones stay stale-eligible; a
//! corrupt or incompatible file is an error for the caller to log, never a reason not to start.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::answer::{Answer, Kind};
use super::cache::{Cache, Entry, Key};
use super::{DomainName, Resolver};

const MAGIC: &[u8; 8] = b"MPDSNAP\0";
/// 2: answers read under issue 12's rules (only the CNAME chain believed, chain TTLs, a
/// malformed DKIM key is `invalid` not `absent`, bogus is an error and never stored). A format-1
/// file is refused whole (logged, cold start) rather than served with the old readings.
/// 3: an answer carries `raw`, the selected record's text (issue 14), after its fingerprint;
/// postcard is positional, so a format-2 file cannot be read as 3 and is refused the same way.
const FORMAT: u32 = 3;

/// What is written: the same encoding as [`SnapEntry`], borrowed from the cache's `Arc`s (a
/// held answer is not copied to write a snapshot).
#[derive(Serialize)]
struct SnapEntryRef<'a> {
    kind: Kind,
    name: &'a str,
    stored_unix_ms: u64,
    ttl_ms: u64,
    answer: &'a Answer,
}

/// Every entry to write, serialized as a sequence of [`SnapEntryRef`]: an answer held in compact
/// form is rebuilt for its element and dropped after it, so writing a snapshot never holds
/// every answer parsed at once.
struct Snap<'a> {
    cache: &'a Cache,
    entries: &'a [(Key, Arc<Entry>)],
    now: Instant,
    wall: SystemTime,
}

impl Serialize for Snap<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.entries.len()))?;
        for (k, e) in self.entries {
            let age = self.now.saturating_duration_since(e.stored_at);
            let answer = self.cache.peek_answer(k, e);
            seq.serialize_element(&SnapEntryRef {
                kind: k.kind,
                name: &k.name,
                stored_unix_ms: unix_ms(self.wall - age),
                ttl_ms: u64::try_from(e.ttl().as_millis()).unwrap_or(u64::MAX),
                answer: &answer,
            })?;
        }
        seq.end()
    }
}

#[derive(Serialize, Deserialize)]
struct SnapEntry {
    kind: Kind,
    name: String,
    stored_unix_ms: u64,
    ttl_ms: u64,
    answer: Answer,
}

/// Why a snapshot could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// File I/O.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not a snapshot of ours.
    #[error("not a mailpolicyd snapshot")]
    BadMagic,
    /// A snapshot of another format version.
    #[error("snapshot format {0} is not supported (this build reads {FORMAT})")]
    Format(u32),
    /// Undecodable content.
    #[error("corrupt snapshot: {0}")]
    Corrupt(String),
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Resolver {
    /// Writes every cache entry to `path` (atomically: a new temp file next to it, fsync,
    /// rename, fsync of the directory). Encoding and writing run on the blocking pool, from the
    /// cache's `Arc`s. Returns the number of entries written.
    pub async fn save_snapshot(&self, path: &Path) -> Result<usize, SnapshotError> {
        let now = Instant::now();
        let wall = SystemTime::now();
        // An entry past its stale window is not served; it is not written.
        let stale_window = self.inner.cache.config().stale_window;
        let mut entries = self.inner.cache.entries();
        entries.retain(|(_, e)| now < e.expires_at() + stale_window);
        let path = path.to_owned();
        let cache = self.inner.cache.clone();
        tokio::task::spawn_blocking(move || -> Result<usize, SnapshotError> {
            let snap = Snap {
                cache: &cache,
                entries: &entries,
                now,
                wall,
            };
            let body =
                postcard::to_stdvec(&snap).map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
            write_atomic(&path, &body)?;
            Ok(entries.len())
        })
        .await
        .map_err(|e| SnapshotError::Corrupt(e.to_string()))?
    }

    /// Loads a snapshot into the cache. Entries past their stale window are skipped. Returns
    /// the number of entries loaded.
    pub async fn load_snapshot(&self, path: &Path) -> Result<usize, SnapshotError> {
        let bytes = tokio::fs::read(path).await?;
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(SnapshotError::BadMagic);
        }
        let format = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if format != FORMAT {
            return Err(SnapshotError::Format(format));
        }
        let entries: Vec<SnapEntry> = postcard::from_bytes(&bytes[12..])
            .map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
        let now = Instant::now();
        let wall_ms = unix_ms(SystemTime::now());
        let cfg = self.inner.cache.config().clone();
        let mut loaded = 0;
        for e in entries {
            let Ok(name) = DomainName::dns(&e.name) else {
                continue;
            };
            // A bogus answer stored by an older version: a failure now, never served.
            if e.answer.dnssec == super::DnssecStatus::Bogus
                || e.answer.rcode == super::Rcode::ServFail
            {
                continue;
            }
            let age = Duration::from_millis(wall_ms.saturating_sub(e.stored_unix_ms));
            let ttl = Duration::from_millis(e.ttl_ms);
            if age > ttl + cfg.stale_window {
                continue;
            }
            // Re-based on this process's clock: what is left of the TTL starts now (an entry
            // already expired starts its stale window now, which errs toward serving it).
            let entry = Entry::restored(Arc::new(e.answer), now, ttl.saturating_sub(age));
            self.inner
                .cache
                .insert(Key { kind: e.kind, name }, Arc::new(entry));
            loaded += 1;
        }
        Ok(loaded)
    }
}

/// The directory a snapshot at `path` lives in.
fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// `<path>.tmp.<pid>`: this process's temporary file for the snapshot at `path`.
fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".tmp.{}", std::process::id()));
    PathBuf::from(name)
}

fn write_atomic(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let dir = dir_of(path);
    std::fs::create_dir_all(dir)?;
    let tmp = temp_path(path);
    // A new file (never one found in place: a leftover is removed at start).
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)?;
    let written = (|| {
        f.write_all(MAGIC)?;
        f.write_all(&FORMAT.to_be_bytes())?;
        f.write_all(body)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename itself is durable only once the directory is.
    std::fs::File::open(dir)?.sync_all()
}

/// Removes temporary files a crashed process left next to the snapshot at `path`
/// (`<name>.tmp.<pid>`, and `<stem>.tmp.<pid>` of older versions). Returns how many.
pub fn remove_stale_temp(path: &Path) -> usize {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return 0;
    };
    let stem = path.file_stem().and_then(|n| n.to_str()).unwrap_or(name);
    let prefixes = [format!("{name}.tmp."), format!("{stem}.tmp.")];
    let Ok(list) = std::fs::read_dir(dir_of(path)) else {
        return 0;
    };
    let mut removed = 0;
    for e in list.flatten() {
        let file = e.file_name();
        let Some(file) = file.to_str() else {
            continue;
        };
        let stale = prefixes.iter().any(|p| {
            file.strip_prefix(p.as_str())
                .is_some_and(|pid| !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()))
        });
        if stale
            && e.file_type().is_ok_and(|t| t.is_file())
            && std::fs::remove_file(e.path()).is_ok()
        {
            removed += 1;
        }
    }
    removed
}
