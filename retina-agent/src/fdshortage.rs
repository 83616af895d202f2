//! Lookups lost to a shortage of file descriptors, made loud.
//!
//! Some attributes need a descriptor at the moment a series appears: the interface names of
//! a named network namespace need an rtnetlink socket pair opened inside it (kept while the
//! namespace lives), a workload needs `/proc/PID/cgroup` or a namespace file open for a
//! moment. When the process (`EMFILE`, e.g. `ulimit -n 64`) or the system (`ENFILE`) is out
//! of descriptors, the lookup fails and the series goes out without that attribute. That
//! is never silent:
//!
//! - the first failure of a streak is logged as a warning naming what is lost, then at
//!   most one line a minute with the count ([`Streak`]); the end of the streak is logged
//!   at info;
//! - every such failure is counted in `retina.agent.descriptor.shortages{lost}`
//!   ([`DESCRIPTOR_SHORTAGES`](crate::export::selfmetrics::DESCRIPTOR_SHORTAGES)), `lost`
//!   being [`Lost::as_str`].
//!
//! Other failures of the same lookups (a namespace gone meanwhile, a process that exited)
//! are ordinary churn and stay at debug level where they are handled.

use std::{
    error::Error,
    io,
    sync::{
        LazyLock, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use crate::ratelimit::Streak;

/// What a failed lookup cost.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lost {
    /// The interface names (and namespace names) of drops in other network namespaces.
    InterfaceName,
    /// The pod, container or unit of a namespace or socket.
    Workload,
}

impl Lost {
    pub(crate) const ALL: [Lost; 2] = [Lost::InterfaceName, Lost::Workload];

    /// The value of the `lost` attribute.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Lost::InterfaceName => "interface.name",
            Lost::Workload => "workload",
        }
    }

    fn consequence(self) -> &'static str {
        match self {
            Lost::InterfaceName => {
                "drops in other network namespaces go out without their interface name"
            }
            Lost::Workload => "drops and interfaces go out without their pod, container or unit",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

static COUNTS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
/// Whether a streak is open, read without the lock on every success.
static FAILING: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];
static STREAKS: LazyLock<Mutex<[Streak; 2]>> = LazyLock::new(Mutex::default);

/// The `EMFILE`/`ENFILE` in `e` or its sources, if any.
pub(crate) fn shortage<'a>(e: &'a (dyn Error + 'static)) -> Option<&'a io::Error> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
        {
            return Some(io);
        }
        cur = err.source();
    }
    None
}

/// Records the failure `e` of a lookup that cost `lost`. True when it was a descriptor
/// shortage: then it is counted, and logged as described in the module documentation.
pub(crate) fn failed(lost: Lost, e: &(dyn Error + 'static)) -> bool {
    let Some(io) = shortage(e) else {
        return false;
    };
    COUNTS[lost.index()].fetch_add(1, Ordering::Relaxed);
    FAILING[lost.index()].store(true, Ordering::Relaxed);
    let due = STREAKS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())[lost.index()]
    .fail();
    match due {
        Some(0) => tracing::warn!(
            lost = lost.as_str(),
            "out of file descriptors ({io}): {}; raise the limit (LimitNOFILE= in the unit, \
             `ulimit -n`); counted in retina.agent.descriptor.shortages",
            lost.consequence()
        ),
        Some(more) => tracing::warn!(
            lost = lost.as_str(),
            "still out of file descriptors ({io}): {more} more lookups failed; {}",
            lost.consequence()
        ),
        None => {}
    }
    true
}

/// Records a lookup of `lost` that got its descriptors: ends a streak (logged at info).
/// Costs one atomic load unless a streak is open.
pub(crate) fn succeeded(lost: Lost) {
    if !FAILING[lost.index()].load(Ordering::Relaxed) {
        return;
    }
    FAILING[lost.index()].store(false, Ordering::Relaxed);
    let ended = STREAKS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())[lost.index()]
    .ok();
    if ended {
        tracing::info!(
            lost = lost.as_str(),
            "file descriptors available again: {} lookups work",
            lost.as_str()
        );
    }
}

/// Lookups that cost `lost` for want of a descriptor since the agent started.
pub(crate) fn count(lost: Lost) -> u64 {
    COUNTS[lost.index()].load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests;
