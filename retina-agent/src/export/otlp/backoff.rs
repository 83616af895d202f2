//! Backoff while the collector is down.
//!
//! The exporter's own retries are off (`transport::retry_policy`): each retry rebuilt and
//! re-encoded the whole request, so a collector that was down cost more CPU than one that
//! was up. Instead, after a failed export the next ones are not even collected until the
//! backoff has passed: [`FIRST`], doubling with each further failure, up to [`MAX`]. With
//! cumulative temporality the next export carries the running totals, so nothing is lost;
//! with delta the SDK's next collect covers the whole time since the last one.

use std::time::{Duration, Instant};

/// Wait after the first failure.
pub(super) const FIRST: Duration = Duration::from_secs(1);
/// The longest wait between two attempts (at intervals longer than this, every interval
/// tries).
pub(super) const MAX: Duration = Duration::from_secs(30);

#[derive(Debug, Default)]
pub(super) struct Backoff {
    /// Failed exports in a row.
    failures: u32,
    /// No export starts before this.
    until: Option<Instant>,
}

impl Backoff {
    /// The wait after `failures` failures in a row.
    pub(super) fn delay(failures: u32) -> Duration {
        let doublings = failures.saturating_sub(1).min(16);
        FIRST.saturating_mul(1 << doublings).min(MAX)
    }

    /// Records a failed export that ended at `now`; returns the wait before the next one.
    pub(super) fn failed(&mut self, now: Instant) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let wait = Self::delay(self.failures);
        self.until = now.checked_add(wait);
        wait
    }

    /// Records a successful export: the next one starts at the next interval.
    pub(super) fn succeeded(&mut self) {
        *self = Backoff::default();
    }

    /// Whether an export due at `now` waits.
    pub(super) fn holds(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| now < u)
    }
}

#[cfg(test)]
mod tests;
