//! systemd readiness, status and watchdog (`Type=notify`, `WatchdogSec=`), through the
//! `sd-notify` crate. Everything is a no-op without `NOTIFY_SOCKET` (not under systemd).
//!
//! - `READY=1` once the collectors are attached, the first cycle has run and the exporters
//!   (the Prometheus endpoint) are up;
//! - `STATUS=` a line for `systemctl status`: the interval and the degraded collectors;
//! - `WATCHDOG=1` from the collection loop after a cycle, at most every half watchdog
//!   period: a collection that hangs stops the pings, and systemd restarts the agent;
//! - `RELOADING=1` (with `MONOTONIC_USEC=`) when a SIGHUP reload begins, `READY=1` when
//!   it is done;
//! - `STOPPING=1` when shutdown begins.
//!
//! The crate builds each message on the heap, so pings are rate-limited rather than sent
//! every cycle (with the unit's 60 s and the default 10 s interval: every third cycle).

use std::{
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use sd_notify::NotifyState;

/// The agent's side of the notify protocol.
#[derive(Debug)]
pub(crate) struct Notifier {
    /// `NOTIFY_SOCKET`: nothing is sent without it (not under systemd).
    socket: Option<std::ffi::OsString>,
    /// `WATCHDOG_USEC` when it is meant for this process.
    watchdog: Option<Duration>,
    last_ping: Option<Instant>,
    /// The last message could not be sent: a new failure is only logged at debug level.
    failing: AtomicBool,
}

impl Notifier {
    /// From the environment systemd sets (`NOTIFY_SOCKET`, `WATCHDOG_USEC`, `WATCHDOG_PID`).
    pub(crate) fn from_env() -> Notifier {
        Notifier {
            socket: std::env::var_os("NOTIFY_SOCKET"),
            watchdog: sd_notify::watchdog_enabled().filter(|d| !d.is_zero()),
            last_ping: None,
            failing: AtomicBool::new(false),
        }
    }

    /// The watchdog period systemd asked for, if any.
    pub(crate) fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        let Some(socket) = &self.socket else { return };
        match sd_notify::notify(states) {
            // The first failure of a streak is a warning: under `Type=notify` a lost
            // `READY=1` or watchdog ping gets the service killed, and this says why.
            Err(e) if !self.failing.swap(true, Ordering::Relaxed) => tracing::warn!(
                socket = ?socket,
                "sending to systemd's notify socket failed: {e} (readiness and watchdog pings \
                 are lost until it works again)"
            ),
            Err(e) => tracing::debug!("sd_notify: {e}"),
            Ok(()) => self.failing.store(false, Ordering::Relaxed),
        }
    }

    /// `READY=1` with a first status line.
    pub(crate) fn ready(&mut self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
        if self.watchdog.is_some() {
            self.last_ping = Some(Instant::now());
            self.send(&[NotifyState::Watchdog]);
        }
    }

    /// After a collection cycle: `WATCHDOG=1` when half the watchdog period has passed
    /// since the last ping.
    pub(crate) fn cycle_done(&mut self) {
        let Some(period) = self.watchdog else { return };
        let now = Instant::now();
        if self
            .last_ping
            .is_some_and(|t| now.saturating_duration_since(t) < period / 2)
        {
            return;
        }
        self.last_ping = Some(now);
        self.send(&[NotifyState::Watchdog]);
    }

    /// `RELOADING=1` and the monotonic clock, as `Type=notify-reload` expects; `ready`
    /// ends the reload.
    pub(crate) fn reloading(&self) {
        if self.socket.is_none() {
            return;
        }
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(e) => tracing::debug!("sd_notify: reading the monotonic clock: {e}"),
        }
    }

    /// `STOPPING=1` with the reason as the status.
    pub(crate) fn stopping(&self, status: &str) {
        self.send(&[NotifyState::Stopping, NotifyState::Status(status)]);
    }
}

#[cfg(test)]
mod tests;
