//! A cache entry: its answer (parsed, or in compact form with the parsed answer held while
//! in use), its timing, and the hot list that bounds how many parsed answers the entries in
//! compact form hold.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::cold::Cold;
use super::{CacheConfig, Key, Origin};
use crate::resolve::answer::Answer;

/// One cached answer and its timing (56 bytes beside the answer: a cache holds millions).
#[derive(Debug)]
pub struct Entry {
    /// The parsed answer: always for an entry without a compact form, and while on the hot
    /// list for one with ([`Cache::answer`]).
    held: Mutex<Option<Arc<Answer>>>,
    /// The compact form the answer is rebuilt from once it has left the hot list.
    cold: Option<Box<Cold>>,
    /// Logical time it was stored.
    pub stored_at: Instant,
    /// What the entry's own form weighs (the compact form, or the answer without one).
    pub(super) weight: u32,
    /// Effective (clamped) TTL in milliseconds (at most ~49 days).
    ttl_ms: u32,
    /// The last refresh attempt, as milliseconds after `stored_at` plus one (0: none yet).
    last_refresh: AtomicU32,
    /// How it got here.
    pub origin: Origin,
    prefetch_claimed: AtomicBool,
    /// Used since the hot list last looked at it (its second chance).
    used: AtomicBool,
}

impl Entry {
    /// A new entry for `answer` stored at `now`, its TTL clamped per `cfg`.
    pub fn new(answer: Arc<Answer>, now: Instant, origin: Origin, cfg: &CacheConfig) -> Entry {
        let (lo, hi) = if answer.is_positive() {
            cfg.positive_ttl
        } else {
            cfg.negative_ttl
        };
        let ttl = Duration::from_secs(u64::from(answer.ttl)).clamp(lo, hi);
        Entry::with_ttl(answer, now, ttl, origin)
    }

    /// An entry loaded from a snapshot, with the TTL it has left.
    pub fn restored(answer: Arc<Answer>, stored_at: Instant, ttl: Duration) -> Entry {
        Entry::with_ttl(answer, stored_at, ttl, Origin::Restored)
    }

    fn with_ttl(answer: Arc<Answer>, stored_at: Instant, ttl: Duration, origin: Origin) -> Entry {
        let cold = Cold::of(&answer).map(Box::new);
        Entry::with_form(answer, cold, stored_at, ttl, origin)
    }

    /// The entry holding `answer`, in compact form `cold` if given.
    fn with_form(
        answer: Arc<Answer>,
        cold: Option<Box<Cold>>,
        stored_at: Instant,
        ttl: Duration,
        origin: Origin,
    ) -> Entry {
        let weight = cold
            .as_ref()
            .map_or_else(|| answer.weight(), |c| c.weight());
        Entry {
            held: Mutex::new(Some(answer)),
            cold,
            stored_at,
            weight,
            ttl_ms: u32::try_from(ttl.as_millis()).unwrap_or(u32::MAX),
            last_refresh: AtomicU32::new(0),
            origin,
            prefetch_claimed: AtomicBool::new(false),
            used: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Arc<Answer>>> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The parsed answer if it is held; `used` marks it used for the hot list.
    fn held(&self, used: bool) -> Option<Arc<Answer>> {
        let a = self.lock().clone()?;
        if used && self.cold.is_some() && !self.used.load(Ordering::Relaxed) {
            self.used.store(true, Ordering::Relaxed);
        }
        Some(a)
    }

    /// The parsed answer, from the compact form when not held. `hold`: a use (a held answer is
    /// marked used, a rebuilt one kept, and the flag says this call kept it: it then goes on
    /// the hot list); otherwise a look (snapshots, existence checks) that changes nothing. An
    /// entry without a compact form always holds its answer.
    pub(super) fn parse(&self, key: &Key, hold: bool) -> Option<(Arc<Answer>, bool)> {
        if let Some(a) = self.held(hold) {
            return Some((a, false));
        }
        let answer = Arc::new(self.cold.as_deref()?.expand(key.kind, &key.name));
        if !hold {
            return Some((answer, false));
        }
        let mut held = self.lock();
        Some(match held.as_ref() {
            // Another caller rebuilt it first: share theirs.
            Some(a) => (a.clone(), false),
            None => {
                *held = Some(answer.clone());
                (answer, true)
            }
        })
    }

    /// What the parsed answer held beside a compact form weighs (it is on the hot list).
    pub(super) fn hot_weight(&self) -> Option<u32> {
        self.cold.as_ref()?;
        self.lock().as_ref().map(|a| a.weight())
    }

    /// Whether the compact form (if any) stands for `key`'s answer: rebuilt with the key's kind
    /// and name, it must be the answer held now.
    pub(super) fn answers_for(&self, key: &Key) -> bool {
        self.cold.is_none()
            || self
                .lock()
                .as_ref()
                .is_some_and(|a| a.kind == key.kind && a.name == key.name.as_str())
    }

    /// The same entry (timing, origin) with its answer parsed and no compact form.
    pub(super) fn parsed_only(&self) -> Option<Entry> {
        let answer = self.lock().clone()?;
        Some(Entry::with_form(
            answer,
            None,
            self.stored_at,
            self.ttl(),
            self.origin,
        ))
    }

    /// Drops the parsed answer of an entry in compact form.
    fn release(&self) {
        if self.cold.is_some() {
            *self.lock() = None;
        }
    }

    /// Whether the entry holds its parsed answer now.
    pub fn is_parsed(&self) -> bool {
        self.lock().is_some()
    }

    /// The effective (clamped) TTL.
    pub fn ttl(&self) -> Duration {
        Duration::from_millis(u64::from(self.ttl_ms))
    }

    /// When the entry stops being fresh.
    pub fn expires_at(&self) -> Instant {
        self.stored_at + self.ttl()
    }

    /// Seconds of freshness left at `now` (0 once expired).
    pub fn remaining_secs(&self, now: Instant) -> u32 {
        u32::try_from(self.expires_at().saturating_duration_since(now).as_secs())
            .unwrap_or(u32::MAX)
    }

    /// Claims the one prefetch this entry may trigger.
    pub fn claim_prefetch(&self) -> bool {
        !self.prefetch_claimed.swap(true, Ordering::AcqRel)
    }

    /// Records a refresh attempt at `now` unless one was made less than `every` ago; returns
    /// whether the caller may go upstream (one caller wins a race for the same attempt).
    /// The offset is kept modulo 2^32 ms (~49.7 days) and compared with wrapping arithmetic: an
    /// attempt more than 49.7 days after the last one may wait one `every` more.
    pub fn begin_refresh(&self, now: Instant, every: Duration) -> bool {
        let ms = now.saturating_duration_since(self.stored_at).as_millis();
        // 0 means "none yet".
        let at = ((ms % (1u128 << 32)) as u32).max(1);
        let last = self.last_refresh.load(Ordering::Acquire);
        if last != 0 && Duration::from_millis(u64::from(at.wrapping_sub(last))) < every {
            return false;
        }
        self.last_refresh
            .compare_exchange(last, at, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// The entries holding their parsed answer beside their compact form, oldest first, and what
/// those answers weigh: at most `budget` bytes, second chance (CLOCK) for one used since it
/// was last looked at. A record of an entry the store has dropped is let go when reached.
pub(super) struct HotList {
    pub(super) budget: u64,
    pub(super) inner: Mutex<Hot>,
}

#[derive(Default)]
pub(super) struct Hot {
    bytes: u64,
    queue: std::collections::VecDeque<(Weak<Entry>, u32)>,
}

impl HotList {
    /// Puts `entry` (holding its parsed answer, which weighs `weight`) on the list, then
    /// releases the oldest unused answers while over budget (looking at each record once), and
    /// if every record looked at was used, the oldest regardless: the list never stays over
    /// its budget.
    pub(super) fn push(&self, entry: &Arc<Entry>, weight: u32) {
        let mut hot = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        // The record itself, and the entry's allocation its `Weak` keeps should the store drop
        // the entry before the record is reached, are charged with the answer.
        let weight = weight.saturating_add(HOT_RECORD);
        hot.queue.push_back((Arc::downgrade(entry), weight));
        hot.bytes += u64::from(weight);
        let mut second_chances = hot.queue.len();
        while hot.bytes > self.budget {
            let Some((weak, w)) = hot.queue.pop_front() else {
                break;
            };
            match weak.upgrade() {
                Some(e) if second_chances > 0 && e.used.swap(false, Ordering::Relaxed) => {
                    second_chances -= 1;
                    hot.queue.push_back((weak, w));
                }
                Some(e) => {
                    e.release();
                    hot.bytes -= u64::from(w);
                }
                None => hot.bytes -= u64::from(w),
            }
        }
    }

    pub(super) fn bytes(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).bytes
    }
}

/// A hot-list record's own cost: its slot in the queue and the entry allocation it can keep.
const HOT_RECORD: u32 = (std::mem::size_of::<(Weak<Entry>, u32)>()
    + crate::model::answer::alloc_size(std::mem::size_of::<Entry>() + 16))
    as u32;

/// What an entry with neither a held answer nor a compact form answers, which no entry is
/// (one without a compact form holds its answer from creation, [`Entry::release`] skips it):
/// a server failure, never served as data.
pub(super) fn gone(key: &Key) -> (Arc<Answer>, bool) {
    let mut a = Answer::nxdomain(key.kind, &key.name, 0);
    a.rcode = crate::resolve::Rcode::ServFail;
    (Arc::new(a), false)
}

/// The hot list's share of `cache.max_bytes`: an eighth, at most 32 MiB (a working set of
/// ~50,000 parsed policies; the long tail waits in compact form).
pub fn hot_budget(max_bytes: u64) -> u64 {
    (max_bytes / 8).min(32 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::answer::Kind;

    #[test]
    fn refresh_attempts_are_spaced_past_the_offsets_range() {
        let t0 = Instant::now();
        let e = Entry::restored(
            Arc::new(Answer::nxdomain(Kind::Spf, "a.example", 60)),
            t0,
            Duration::from_secs(60),
        );
        let every = Duration::from_secs(30);
        // Beyond 2^32 ms (~49.7 days) after the entry was stored, as well as before.
        for start in [Duration::from_secs(90), Duration::from_secs(50 * 86_400)] {
            assert!(e.begin_refresh(t0 + start, every), "{start:?}");
            assert!(!e.begin_refresh(t0 + start + Duration::from_secs(1), every));
            assert!(!e.begin_refresh(t0 + start + Duration::from_secs(29), every));
            assert!(e.begin_refresh(t0 + start + Duration::from_secs(31), every));
        }
    }
}
