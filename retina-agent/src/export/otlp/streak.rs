//! Rate-limited logging of a condition that persists (exports failing, being skipped or
//! partly rejected): the first event of a streak at once, then at most once every
//! [`LOG_EVERY`] with how many happened since.

use std::time::{Duration, Instant};

/// How often a persisting condition is logged again, with a count.
pub(super) const LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub(super) struct Streak {
    since: Option<Instant>,
    pub(super) count: u64,
    unlogged: u64,
    last_logged: Option<Instant>,
}

impl Streak {
    /// Records one event; returns `Some(unlogged count)` when it should be logged now.
    pub(super) fn hit(&mut self) -> Option<u64> {
        let now = Instant::now();
        self.count += 1;
        if self.since.is_none() {
            self.since = Some(now);
            self.last_logged = Some(now);
            return Some(0);
        }
        self.unlogged += 1;
        if self
            .last_logged
            .is_none_or(|t| now.saturating_duration_since(t) >= LOG_EVERY)
        {
            self.last_logged = Some(now);
            return Some(std::mem::take(&mut self.unlogged));
        }
        None
    }

    /// Ends the streak; returns its length and duration if there was one.
    pub(super) fn end(&mut self) -> Option<(u64, Duration)> {
        let since = self.since.take()?;
        let count = std::mem::take(&mut self.count);
        self.unlogged = 0;
        self.last_logged = None;
        Some((count, since.elapsed()))
    }
}

#[cfg(test)]
mod tests;
