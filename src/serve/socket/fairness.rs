//! CPU fairness between connections: a bulk connection's thread is demoted when interactive
//! ones are open.

use std::sync::atomic::{AtomicUsize, Ordering};

/// How much work a connection brings per read, to tell a bulk connection (a pipelining client
/// that always has a queue of requests waiting) from an interactive one (one question, one
/// answer). A bulk connection's thread is demoted once, when interactive connections are open
/// to be favoured, so that on a contended CPU the scheduler runs them first: fairness between
/// connections without a shared queue, since each has its own thread. With nobody to yield to
/// (only bulk clients), nothing is demoted and bulk throughput is untouched.
#[derive(Default)]
pub(super) struct Load {
    reads: usize,
    requests: usize,
    /// Counted in [`Live::interactive`].
    interactive: bool,
    demoted: bool,
}

/// What one window of a connection's reads says about it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Verdict {
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
    pub(super) fn read(
        &mut self,
        requests: usize,
        threshold: usize,
        interactive: &AtomicUsize,
    ) -> Verdict {
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
    pub(super) fn close(&mut self, interactive: &AtomicUsize) {
        if std::mem::take(&mut self.interactive) {
            interactive.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Lowers the calling thread's CPU priority to `nice` (Linux: `setpriority` on the thread id).
pub(super) fn demote(nice: i32) {
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
