//! Rate-limited logging of a failure that repeats every cycle: the first failure of a
//! streak is logged, then at most one line per [`Streak::EVERY`] with the number of
//! failures since the last line, so a broken source cannot flood the log.

use std::time::{Duration, Instant};

/// The logging state of one repeating failure.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Streak {
    failing: bool,
    /// Failures since the last logged line.
    unlogged: u64,
    last_logged: Option<Instant>,
}

impl Streak {
    /// Repeats of a streak are logged at most this often.
    pub(crate) const EVERY: Duration = Duration::from_secs(60);

    /// Records a failure. `Some(n)` when it should be logged, `n` being the failures
    /// since the previous line (0 for the first of a streak).
    pub(crate) fn fail(&mut self) -> Option<u64> {
        self.fail_at(Instant::now())
    }

    fn fail_at(&mut self, now: Instant) -> Option<u64> {
        if !self.failing {
            self.failing = true;
            self.unlogged = 0;
            self.last_logged = Some(now);
            return Some(0);
        }
        self.unlogged = self.unlogged.saturating_add(1);
        let due = self
            .last_logged
            .is_none_or(|t| now.saturating_duration_since(t) >= Self::EVERY);
        if !due {
            return None;
        }
        let n = self.unlogged;
        self.unlogged = 0;
        self.last_logged = Some(now);
        Some(n)
    }

    /// Records a success; `true` if it ends a streak.
    pub(crate) fn ok(&mut self) -> bool {
        std::mem::replace(&mut self.failing, false)
    }

}

#[cfg(test)]
mod tests;
