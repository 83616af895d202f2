//! Rate-limited logging of a failure or condition that repeats every cycle (a collector
//! failing, OTLP exports failing, being skipped or partly rejected): the first event of a
//! streak is logged, then at most one line per [`Streak::EVERY`] with the number of events
//! since the last line, so a broken source cannot flood the log; the end of a streak can
//! be logged with its length and duration.

use std::time::{Duration, Instant};

/// The logging state of one repeating failure.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Streak {
    /// When the current streak started; `None`: not failing.
    since: Option<Instant>,
    /// Failures in the current streak.
    count: u64,
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
        self.count = self.count.saturating_add(1);
        if self.since.is_none() {
            self.since = Some(now);
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
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }

    /// Records a success; `true` if it ends a streak.
    pub(crate) fn ok(&mut self) -> bool {
        self.end().is_some()
    }

    /// Records a success; the length and duration of the streak it ends, if any.
    pub(crate) fn end(&mut self) -> Option<(u64, Duration)> {
        let since = self.since.take()?;
        let count = std::mem::take(&mut self.count);
        self.unlogged = 0;
        self.last_logged = None;
        Some((count, since.elapsed()))
    }

    /// Failures in the current streak (0 when not failing).
    pub(crate) fn count(&self) -> u64 {
        self.count
    }
}


#[cfg(test)]
mod tests;
