//! Cache snapshots, so a restart is warm: every entry with its answer, when it was stored (wall
//! clock) and its TTL, postcard-encoded behind a magic and format version. Written to a
//! temporary file and renamed over the old one, so a crash mid-write leaves the old snapshot.
//! On load, entries still fresh are served as hits and expired ones stay stale-eligible; a
//! corrupt or incompatible file is an error for the caller to log, never a reason not to start.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::answer::{Answer, Kind};
use super::cache::{Entry, Key};
use super::{Resolver, normalize_name};

const MAGIC: &[u8; 8] = b"MPDSNAP\0";
/// 2: answers read under issue 12's rules (only the CNAME chain believed, chain TTLs, a
/// malformed DKIM key is `invalid` not `absent`, bogus is an error and never stored). A format-1
/// file is refused whole (logged, cold start) rather than served with the old readings.
const FORMAT: u32 = 2;

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
    /// Writes every cache entry to `path` (atomically: temp file, fsync, rename). Returns the
    /// number of entries written.
    pub async fn save_snapshot(&self, path: &Path) -> Result<usize, SnapshotError> {
        let now = Instant::now();
        let wall = SystemTime::now();
        let entries: Vec<SnapEntry> = self
            .inner
            .cache
            .entries()
            .into_iter()
            .map(|(k, e)| {
                let age = now.saturating_duration_since(e.stored_at);
                SnapEntry {
                    kind: k.kind,
                    name: k.name.to_string(),
                    stored_unix_ms: unix_ms(wall - age),
                    ttl_ms: u64::try_from(e.ttl.as_millis()).unwrap_or(u64::MAX),
                    answer: (*e.answer).clone(),
                }
            })
            .collect();
        let count = entries.len();
        let body =
            postcard::to_stdvec(&entries).map_err(|e| SnapshotError::Corrupt(e.to_string()))?;
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || -> Result<(), SnapshotError> {
            if let Some(dir) = path.parent()
                && !dir.as_os_str().is_empty()
            {
                std::fs::create_dir_all(dir)?;
            }
            let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(MAGIC)?;
            f.write_all(&FORMAT.to_be_bytes())?;
            f.write_all(&body)?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, &path)?;
            Ok(())
        })
        .await
        .map_err(|e| SnapshotError::Corrupt(e.to_string()))??;
        Ok(count)
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
            let Ok(name) = normalize_name(&e.name) else {
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
