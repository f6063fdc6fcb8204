//! Abuse controls: a governor rate limit on upstream queries per organizational domain, and a
//! watch for wildcard domains (one record answering for every subdomain) that would otherwise
//! let random subdomains flood the cache and upstream.
//!
//! Both are bounded: the limiter's key map is trimmed with `retain_recent()` on a timer, and the
//! wildcard windows (one per organization, kind and name shape) live in a size-bounded moka
//! cache with a bounded name set each.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::answer::{Answer, KINDS, Kind};

/// Abuse-control settings.
#[derive(Clone, Debug)]
pub struct LimitConfig {
    /// Upstream queries per second per organizational domain.
    pub per_second: u32,
    /// Burst allowance.
    pub burst: u32,
    /// A wildcard needs at least this many distinct subdomain names in one window.
    pub wildcard_min_names: usize,
    /// ... of which at least this fraction carry byte-identical records.
    pub wildcard_identical: f64,
    /// The observation window.
    pub wildcard_window: Duration,
    /// How long a wildcard mark lasts.
    pub wildcard_mark: Duration,
    /// At most this many organizations are watched at once.
    pub wildcard_max_orgs: u64,
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig {
            per_second: 50,
            burst: 100,
            wildcard_min_names: 100,
            wildcard_identical: 0.95,
            wildcard_window: Duration::from_secs(600),
            wildcard_mark: Duration::from_secs(3600),
            wildcard_max_orgs: 10_000,
        }
    }
}

/// The per-organization upstream query limiter.
///
/// A wildcard probe *reserves* its organization ([`Limiter::reserve`]): while it waits for a
/// token, no other question of that organization is admitted, so the probe gets the next token
/// and every upstream query, probes included, stays within the budget.
pub struct Limiter {
    inner: DefaultKeyedRateLimiter<String>,
    /// One token's refill time.
    interval: Duration,
    /// Organizations reserved by a waiting probe (with how many probes wait); bounded by the
    /// probes in flight (one per wildcard window at most).
    reserved: Mutex<HashMap<String, u32>>,
    /// How many reservations are held (a fast path for [`Limiter::allow`]).
    reservations: AtomicUsize,
}

/// A held reservation; released when dropped (also when the waiting task is cancelled).
struct Reservation<'a> {
    limiter: &'a Limiter,
    org: &'a str,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        let mut map = self
            .limiter
            .reserved
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(self.org) {
            *n -= 1;
            if *n == 0 {
                map.remove(self.org);
            }
        }
        self.limiter.reservations.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Limiter {
    /// A limiter with `cfg`'s quota.
    pub fn new(cfg: &LimitConfig) -> Limiter {
        let per_second = NonZeroU32::new(cfg.per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(cfg.burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Limiter {
            inner: RateLimiter::keyed(Quota::per_second(per_second).allow_burst(burst)),
            interval: Duration::from_secs(1) / per_second.get(),
            reserved: Mutex::new(HashMap::new()),
            reservations: AtomicUsize::new(0),
        }
    }

    /// Whether one more upstream query for `org` is allowed now (never while a probe has the
    /// organization reserved).
    pub fn allow(&self, org: &str) -> bool {
        if self.reservations.load(Ordering::Relaxed) > 0
            && self
                .reserved
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(org)
        {
            return false;
        }
        self.inner.check_key(&org.to_owned()).is_ok()
    }

    /// One refill interval (the time the next token of a spent budget takes).
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Reserves `org` and waits up to `max` for one token of its budget (polling once per
    /// refill interval, so at most `max / interval + 1` tries); whether it was granted. While
    /// it waits, [`Limiter::allow`] refuses every other question of `org`.
    pub async fn reserve(&self, org: &str, max: Duration) -> bool {
        {
            let mut map = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
            *map.entry(org.to_owned()).or_insert(0) += 1;
            self.reservations.fetch_add(1, Ordering::Relaxed);
        }
        let _held = Reservation { limiter: self, org };
        let key = org.to_owned();
        let deadline = tokio::time::Instant::now() + max;
        loop {
            if self.inner.check_key(&key).is_ok() {
                return true;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return false;
            }
            tokio::time::sleep(self.interval.min(left)).await;
        }
    }

    /// Forgets organizations whose budget is full again (call periodically), and gives the
    /// key map's room back: its table would otherwise stay as large as its busiest period's.
    pub fn retain_recent(&self) {
        self.inner.retain_recent();
        self.inner.shrink_to_fit();
    }

    /// How many organizations are tracked.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// Whether no organization is tracked.
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

/// How many subdomains a window remembers, as a multiple of the marking threshold; past it
/// only names answering differently from the window's majority are still recorded (up to twice
/// as many), since those are the ones a mark must never answer for.
const NAMES_PER_THRESHOLD: usize = 4;

/// How long an unanswered probe keeps other observations from starting another.
const PROBE_HOLD: Duration = Duration::from_secs(30);

/// A wildcard window: one organization, one kind, one *shape* of name.
///
/// The shape is the part of the query name below the organization with every label that does
/// not start with `_` written `*`: `x.example.org` is `*`, `_dmarc.x.example.org` is
/// `_dmarc.*`, `sel._domainkey.example.org` is `*._domainkey`. Names with `_` labels never
/// share a window with plain names, and a window's probe has exactly its names' shape.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WindowKey {
    /// The organizational domain.
    pub org: Arc<str>,
    /// The question kind.
    pub kind: Kind,
    /// The name's shape below `org`.
    pub shape: Arc<str>,
}

/// A name's window, and where in the name the random label of that window's probe goes (the
/// non-`_` label closest to the organization).
#[derive(Clone, Debug)]
pub struct Shaped {
    /// The window.
    pub key: WindowKey,
    probe_at: std::ops::Range<usize>,
}

impl Shaped {
    /// The window of `name` (normalized) asked as `kind` under the organization `org`; `None`
    /// for the organization itself, a name not under it, or a name with no label but
    /// `_`-labels below it (those are never synthesized).
    pub fn of(kind: Kind, name: &str, org: &str) -> Option<Shaped> {
        // A forwarded type's records name their owner: never synthesized for another name.
        if matches!(kind, Kind::Forward(_)) {
            return None;
        }
        let rest = name.strip_suffix(org)?.strip_suffix('.')?;
        if rest.is_empty() {
            return None;
        }
        let mut shape = String::with_capacity(rest.len());
        let mut probe_at = None;
        let mut at = 0;
        for (i, label) in rest.split('.').enumerate() {
            if i > 0 {
                shape.push('.');
            }
            if label.starts_with('_') {
                shape.push_str(label);
            } else {
                shape.push('*');
                probe_at = Some(at..at + label.len());
            }
            at += label.len() + 1;
        }
        Some(Shaped {
            key: WindowKey {
                org: Arc::from(org),
                kind,
                shape: Arc::from(shape),
            },
            probe_at: probe_at?,
        })
    }

    /// `name` with its window's variable label replaced by `label`: the probe's name.
    pub fn probe_name(&self, name: &str, label: &str) -> String {
        format!(
            "{}{label}{}",
            &name[..self.probe_at.start],
            &name[self.probe_at.end..]
        )
    }

    /// The windows of the other kinds asking the same DNS type at the same name (a name seen
    /// under any of them with another answer is never synthesized).
    fn siblings(&self) -> impl Iterator<Item = WindowKey> + '_ {
        KINDS
            .iter()
            .filter(|k| **k != self.key.kind && k.record_type() == self.key.kind.record_type())
            .map(|k| WindowKey {
                org: self.key.org.clone(),
                kind: *k,
                shape: self.key.shape.clone(),
            })
    }
}

struct Window {
    started: Instant,
    /// Each distinct name seen (hashed) with its answer's mark ([`answer_mark`]), kept across
    /// the window's periods: a name whose own answer differed from the sample is never
    /// synthesized.
    seen: HashMap<u64, u64>,
    /// This period's count of new names per answer mark (counts only: a window holds no
    /// answer while it gathers evidence, so answers never outlive the cache through it).
    marks: HashMap<u64, usize>,
    /// New names this period.
    total: usize,
    marked_until: Option<Instant>,
    /// The marked window's sample: the only answer a window holds (from the candidate that
    /// its probe confirmed until the mark ends).
    sample: Option<Arc<Answer>>,
    /// A random-label probe is in flight since then (a probe never holds the window longer
    /// than [`PROBE_HOLD`], even if its task never reports).
    probing: Option<Instant>,
    /// The probe answered differently: not a DNS wildcard, no probe again in this period.
    refuted: bool,
}

impl Window {
    fn new(now: Instant) -> Window {
        Window {
            started: now,
            seen: HashMap::new(),
            marks: HashMap::new(),
            total: 0,
            marked_until: None,
            sample: None,
            probing: None,
            refuted: false,
        }
    }

    /// A new period: new evidence needed (the names seen are kept).
    fn restart(&mut self, now: Instant) {
        let seen = std::mem::take(&mut self.seen);
        *self = Window::new(now);
        self.seen = seen;
    }
}

fn name_hash(name: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    h.finish()
}

/// What identifies an answer for the wildcard watch: its response code and its records'
/// bytes (so NODATA, NXDOMAIN and each record set differ).
pub fn answer_mark(a: &Answer) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    a.rcode.hash(&mut h);
    a.is_positive().hash(&mut h);
    a.fingerprint.hash(&mut h);
    h.finish()
}

/// Whether two answers are the same as far as a wildcard is concerned: the same response code
/// and byte-identical records.
pub fn same_answer(a: &Answer, b: &Answer) -> bool {
    a.rcode == b.rcode && a.fingerprint == b.fingerprint && a.is_positive() == b.is_positive()
}

/// Watches, per window ([`WindowKey`]: organization, kind, name shape), how many distinct
/// names answered with byte-identical records; such a window becomes a *candidate*, and is
/// marked wildcard only when a random label of the same shape (a probe the resolver asks)
/// answers the same record: the evidence of a real DNS wildcard (RFC 4592). While marked, a
/// sample of names is still asked upstream ([`WildcardWatch::claim_verification`]); a
/// different answer ends the mark.
pub struct WildcardWatch {
    windows: moka::sync::Cache<WindowKey, Arc<Mutex<Window>>>,
    verify: DefaultKeyedRateLimiter<WindowKey>,
    cfg: LimitConfig,
}

/// What an observation changed.
#[derive(Clone, Debug)]
pub enum Observed {
    /// Nothing notable.
    Counted,
    /// The threshold is reached with this sample: probe a random label before marking (then
    /// call [`WildcardWatch::probed`]).
    Candidate {
        /// The record most names answered.
        sample: Arc<Answer>,
    },
}

impl WildcardWatch {
    /// A watch with `cfg`'s thresholds.
    pub fn new(cfg: &LimitConfig) -> WildcardWatch {
        // Verification under a mark: a tenth of the organization's rate (at least 1/s), so the
        // sample never starves the organization's other questions.
        let per_second = NonZeroU32::new((cfg.per_second / 10).max(1)).unwrap_or(NonZeroU32::MIN);
        WildcardWatch {
            windows: moka::sync::Cache::builder()
                .max_capacity(cfg.wildcard_max_orgs)
                .build(),
            verify: RateLimiter::keyed(Quota::per_second(per_second)),
            cfg: cfg.clone(),
        }
    }

    fn window(&self, key: &WindowKey, now: Instant) -> Arc<Mutex<Window>> {
        self.windows
            .get_with(key.clone(), || Arc::new(Mutex::new(Window::new(now))))
    }

    /// Records an upstream answer (positive or negative) for `name` in its window; every
    /// answer is recorded (within the window's bound), also while the window is marked or
    /// probing, so a name seen with its own answer is never synthesized later.
    pub fn observe(&self, at: &Shaped, name: &str, answer: &Arc<Answer>, now: Instant) -> Observed {
        let w = self.window(&at.key, now);
        let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
        if w.marked_until.is_some_and(|t| now >= t)
            || (w.marked_until.is_none()
                && now.saturating_duration_since(w.started) > self.cfg.wildcard_window)
        {
            w.restart(now);
        }
        let mark = answer_mark(answer);
        let cap = self.cfg.wildcard_min_names.max(1) * NAMES_PER_THRESHOLD;
        let usual = w
            .sample
            .as_ref()
            .map(|s| answer_mark(s))
            .or_else(|| w.marks.iter().max_by_key(|(_, n)| **n).map(|(m, _)| *m));
        let hash = name_hash(name);
        let room = if usual == Some(mark) { cap } else { cap * 2 };
        let new = match w.seen.get(&hash) {
            Some(old) => {
                if *old != mark {
                    w.seen.insert(hash, mark);
                }
                false
            }
            None if w.seen.len() < room => {
                w.seen.insert(hash, mark);
                true
            }
            None => false,
        };
        let probing = w
            .probing
            .is_some_and(|t| now.saturating_duration_since(t) < PROBE_HOLD);
        if !new || w.marked_until.is_some() || probing {
            return Observed::Counted;
        }
        let n = {
            let n = w.marks.entry(mark).or_insert(0);
            *n += 1;
            *n
        };
        w.total += 1;
        if w.total < self.cfg.wildcard_min_names || w.refuted {
            return Observed::Counted;
        }
        // The answer observed is the candidate's sample when it is the one most names gave
        // (a tie with another mark counts: either is a sample of byte-identical records, and
        // the probe decides). When another answer leads, the next name giving it makes the
        // window a candidate, with the same evidence and one name more.
        let best = w.marks.values().copied().max().unwrap_or(0);
        if n == best
            && answer.is_positive()
            && n as f64 >= w.total as f64 * self.cfg.wildcard_identical
        {
            w.probing = Some(now);
            return Observed::Candidate {
                sample: answer.clone(),
            };
        }
        Observed::Counted
    }

    /// The probe's outcome for a candidate: `Some(answer)` from the random label, or `None`
    /// when it could not be asked (budget, upstream failure: a later name may try again).
    /// Marks the window when the probe answered the sample's record; returns whether it did.
    pub fn probed(
        &self,
        key: &WindowKey,
        sample: &Arc<Answer>,
        probe: Option<&Answer>,
        now: Instant,
    ) -> bool {
        let w = self.window(key, now);
        let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
        w.probing = None;
        match probe {
            Some(p) if same_answer(p, sample) => {
                w.marked_until = Some(now + self.cfg.wildcard_mark);
                w.sample = Some(sample.clone());
                true
            }
            Some(_) => {
                w.refuted = true;
                false
            }
            None => false,
        }
    }

    /// The sample answer for `name` when its window is marked wildcard, unless `name` was seen
    /// answering something else, in this window or in a sibling one (another kind asking the
    /// same DNS type at the same name).
    pub fn synthesize(&self, at: &Shaped, name: &str, now: Instant) -> Option<Arc<Answer>> {
        let sample = {
            let w = self.windows.get(&at.key)?;
            let w = w.lock().unwrap_or_else(|p| p.into_inner());
            match (w.marked_until, &w.sample) {
                (Some(t), Some(s)) if now < t => s.clone(),
                _ => return None,
            }
        };
        let mark = answer_mark(&sample);
        let hash = name_hash(name);
        let differs = |key: &WindowKey| {
            self.windows.get(key).is_some_and(|w| {
                let w = w.lock().unwrap_or_else(|p| p.into_inner());
                w.seen.get(&hash).is_some_and(|m| *m != mark)
            })
        };
        if differs(&at.key) || at.siblings().any(|k| differs(&k)) {
            return None;
        }
        Some(sample)
    }

    /// Whether this synthesizable question should be asked upstream instead, to verify the
    /// mark (a tenth of the organization's rate, at least one a second, per window).
    pub fn claim_verification(&self, key: &WindowKey) -> bool {
        self.verify.check_key(key).is_ok()
    }

    /// A verified name answered differently from the sample: the mark ends, and the window
    /// starts again (a new mark needs new evidence and a new probe).
    pub fn unmark(&self, key: &WindowKey, now: Instant) {
        if let Some(w) = self.windows.get(key) {
            let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
            w.restart(now);
        }
    }

    /// Forgets verification budgets that are full again (call periodically).
    pub fn retain_recent(&self) {
        self.verify.retain_recent();
        self.verify.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::answer::{Data, Rcode};

    fn answer(name: &str, text: Option<&str>, fingerprint: u64) -> Arc<Answer> {
        let mut a = Answer::nxdomain(Kind::Txt, name, 60);
        if let Some(t) = text {
            a.rcode = Rcode::NoError;
            a.data = Data::Txt(vec![t.to_owned()]);
        }
        a.fingerprint = fingerprint;
        Arc::new(a)
    }

    /// A watch that considers a window once 10 names were seen in it.
    fn ten_name_watch() -> WildcardWatch {
        WildcardWatch::new(&LimitConfig {
            wildcard_min_names: 10,
            ..LimitConfig::default()
        })
    }

    #[test]
    fn names_answered_while_probing_or_marked_are_recorded() {
        let watch = ten_name_watch();
        let now = Instant::now();
        let org = "example.org";
        let sample = answer("x", Some("v=spf1 -all"), 7);
        let mut candidate = None;
        for i in 0..10 {
            let name = format!("r{i}.{org}");
            let at = Shaped::of(Kind::Txt, &name, org).unwrap();
            if let Observed::Candidate { sample } = watch.observe(&at, &name, &sample, now) {
                candidate = Some((at, sample));
            }
        }
        let (at, sample) = candidate.expect("a candidate after 10 identical names");
        // While the probe is in flight: a name with its own record, and a negative one.
        let own = format!("own.{org}");
        let own_at = Shaped::of(Kind::Txt, &own, org).unwrap();
        watch.observe(&own_at, &own, &answer(&own, Some("v=spf1 +a -all"), 8), now);
        let gone = format!("gone.{org}");
        watch.observe(&own_at, &gone, &answer(&gone, None, 0), now);
        assert!(watch.probed(&at.key, &sample, Some(&sample), now));
        // Marked: both are asked upstream, a never-seen name is synthesized.
        assert!(watch.synthesize(&own_at, &own, now).is_none());
        assert!(watch.synthesize(&own_at, &gone, now).is_none());
        assert!(
            watch
                .synthesize(&own_at, &format!("new.{org}"), now)
                .is_some()
        );
        // Seen under a sibling kind (same DNS type, same name) counts too.
        let spf_at = Shaped::of(Kind::Spf, &own, org).unwrap();
        let mut s = (*sample).clone();
        s.kind = Kind::Spf;
        let spf_sample = Arc::new(s);
        for i in 0..10 {
            let name = format!("s{i}.{org}");
            let at = Shaped::of(Kind::Spf, &name, org).unwrap();
            if let Observed::Candidate { sample } = watch.observe(&at, &name, &spf_sample, now) {
                assert!(watch.probed(&at.key, &sample, Some(&sample), now));
            }
        }
        assert!(
            watch
                .synthesize(&spf_at, &format!("new.{org}"), now)
                .is_some()
        );
        assert!(watch.synthesize(&spf_at, &own, now).is_none());
        // Names of another shape never share the window.
        let dmarc = format!("_dmarc.new.{org}");
        let dmarc_at = Shaped::of(Kind::Txt, &dmarc, org).unwrap();
        assert!(watch.synthesize(&dmarc_at, &dmarc, now).is_none());
    }

    #[test]
    fn a_window_holds_no_answer_until_marked() {
        let watch = ten_name_watch();
        let now = Instant::now();
        let org = "example.org";
        let same = answer("x", Some("v=spf1 -all"), 7);
        let mut candidate = None;
        // Nine identical names, then one with its own record: 9 of 10 is under 95 %.
        for i in 0..10 {
            let name = format!("r{i}.{org}");
            let at = Shaped::of(Kind::Txt, &name, org).unwrap();
            let a = if i == 9 {
                answer(&name, Some("v=spf1 +a -all"), 8)
            } else {
                same.clone()
            };
            assert!(matches!(
                watch.observe(&at, &name, &a, now),
                Observed::Counted
            ));
            // Only counts are kept: no answer outlives the caller's through the watch.
            assert_eq!(Arc::strong_count(&a), if i == 9 { 1 } else { 2 });
        }
        // Enough identical names again: the answer observed becomes the candidate's sample.
        for i in 10..200 {
            let name = format!("r{i}.{org}");
            let at = Shaped::of(Kind::Txt, &name, org).unwrap();
            if let Observed::Candidate { sample } = watch.observe(&at, &name, &same, now) {
                candidate = Some((at, sample, i));
                break;
            }
        }
        let (at, sample, i) = candidate.expect("a candidate once 95 % of the names agree");
        assert_eq!(i, 19, "19 of 20 names identical");
        assert!(same_answer(&sample, &same));
        drop(sample);
        assert_eq!(Arc::strong_count(&same), 1);
        // Marked: the window keeps its sample (and only then).
        assert!(watch.probed(&at.key, &same, Some(&same), now));
        assert_eq!(Arc::strong_count(&same), 2);
    }

    #[test]
    fn shapes_keep_underscore_labels_and_probe_the_label_nearest_the_org() {
        let s = Shaped::of(Kind::Txt, "x.example.org", "example.org").unwrap();
        assert_eq!(&*s.key.shape, "*");
        assert_eq!(s.probe_name("x.example.org", "R"), "R.example.org");
        let s = Shaped::of(Kind::Txt, "_dmarc.x.example.org", "example.org").unwrap();
        assert_eq!(&*s.key.shape, "_dmarc.*");
        assert_eq!(
            s.probe_name("_dmarc.x.example.org", "R"),
            "_dmarc.R.example.org"
        );
        let s = Shaped::of(Kind::Txt, "sel._domainkey.example.org", "example.org").unwrap();
        assert_eq!(&*s.key.shape, "*._domainkey");
        assert_eq!(
            s.probe_name("sel._domainkey.example.org", "R"),
            "R._domainkey.example.org"
        );
        let s = Shaped::of(Kind::DkimKey, "s._domainkey.a.b.example.org", "example.org").unwrap();
        assert_eq!(&*s.key.shape, "*._domainkey.*.*");
        assert_eq!(
            s.probe_name("s._domainkey.a.b.example.org", "R"),
            "s._domainkey.a.R.example.org"
        );
        assert!(Shaped::of(Kind::Txt, "example.org", "example.org").is_none());
        assert!(Shaped::of(Kind::Txt, "_dmarc.example.org", "example.org").is_none());
        assert!(Shaped::of(Kind::Txt, "xexample.org", "example.org").is_none());
        assert!(Shaped::of(Kind::Txt, "other.net", "example.org").is_none());
    }
}
