//! Rate-limited logging of a failure or condition that repeats every cycle (a collector
//! failing, OTLP exports failing, being skipped or partly rejected): the first event of a
//! streak is logged, then at most one line per [`Streak::EVERY`] with the number of events
//! since the last line, so a broken source cannot flood the log; the end of a streak can
//! be logged with its length and duration.

use std::time::{Duration, Instant};

/// The logging state of one repeating failure.
#[derive(Clone, Copy, Debug, Default)]
pub struct Streak {
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
    pub const EVERY: Duration = Duration::from_secs(60);

    /// Records a failure. `Some(n)` when it should be logged, `n` being the failures
    /// since the previous line (0 for the first of a streak).
    pub fn fail(&mut self) -> Option<u64> {
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
    pub fn ok(&mut self) -> bool {
        self.end().is_some()
    }

    /// Records a success; the length and duration of the streak it ends, if any.
    pub fn end(&mut self) -> Option<(u64, Duration)> {
        let since = self.since.take()?;
        let count = std::mem::take(&mut self.count);
        self.unlogged = 0;
        self.last_logged = None;
        Some((count, since.elapsed()))
    }

    /// Failures in the current streak (0 when not failing).
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Whether the last record was a failure.
    #[cfg_attr(not(feature = "internals"), allow(dead_code, reason = "used by the tests, the bench or the fuzz targets"))]
    pub fn failing(&self) -> bool {
        self.since.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_then_once_a_minute_with_a_count() {
        let t0 = Instant::now();
        let mut s = Streak::default();
        assert_eq!(s.fail_at(t0), Some(0));
        for i in 1..60 {
            assert_eq!(s.fail_at(t0 + Duration::from_secs(i)), None);
        }
        // 60 failures after the first one, the last at +60 s.
        assert_eq!(s.fail_at(t0 + Duration::from_secs(60)), Some(60));
        assert_eq!(s.fail_at(t0 + Duration::from_secs(61)), None);
        assert_eq!(s.count(), 62);
        assert!(s.ok());
        assert!(!s.ok());
        // A new streak logs its first failure at once.
        assert_eq!(s.fail_at(t0 + Duration::from_secs(62)), Some(0));
    }

    #[test]
    fn the_end_of_a_streak_says_how_long_it_was() {
        let mut s = Streak::default();
        assert_eq!(s.fail(), Some(0));
        assert_eq!(s.fail(), None);
        assert_eq!(s.fail(), None);
        assert_eq!(s.count(), 3);
        s.last_logged = Instant::now().checked_sub(Streak::EVERY);
        assert_eq!(s.fail(), Some(3));
        let (n, _) = s.end().unwrap();
        assert_eq!(n, 4);
        assert_eq!(s.count(), 0);
        assert!(s.end().is_none());
        assert_eq!(s.fail(), Some(0));
    }
}
