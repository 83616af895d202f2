//! The accepted range of every duration and size in the configuration (file, environment
//! and flags alike), documented in `packaging/config.toml`. A value outside is refused by
//! `check` and `run` (exit status 2) with the key and the range; nothing that follows from
//! an accepted value (deadlines, timers) can overflow.

use std::time::Duration;

/// `interval` / `--interval` / `OTEL_METRIC_EXPORT_INTERVAL`: at least 100 ms (a
/// collection of a few thousand interfaces takes milliseconds; less only burns CPU), at
/// most a day.
pub const INTERVAL: (Duration, Duration) =
    (Duration::from_millis(100), Duration::from_secs(86_400));
/// `export.timeout` / `OTEL_EXPORTER_OTLP_TIMEOUT`: 1 ms to 10 minutes.
pub const EXPORT_TIMEOUT: (Duration, Duration) =
    (Duration::from_millis(1), Duration::from_secs(600));
/// `ethtool.link_state_interval`: 1 s (the refresh floor) to a day.
pub const LINK_STATE_INTERVAL: (Duration, Duration) =
    (Duration::from_secs(1), Duration::from_secs(86_400));
/// `snapshot --duration`: 1 ms to a day.
pub(crate) const SNAPSHOT_DURATION: (Duration, Duration) =
    (Duration::from_millis(1), Duration::from_secs(86_400));
/// `snapshot --settle`: 1 ms to a minute.
pub(crate) const SNAPSHOT_SETTLE: (Duration, Duration) =
    (Duration::from_millis(1), Duration::from_secs(60));
/// `drops.map_entries` / `--drop-map-entries`: 1 to 1048576 keys.
pub const MAP_ENTRIES: (u32, u32) = (1, 1 << 20);
/// `drops.flows_capacity`: 1 to 1048576 flows.
pub const FLOWS_CAPACITY: (u32, u32) = (1, 1 << 20);
/// `drops.flow_events_per_second`: 1 to 1000000 (the program's token arithmetic relies
/// on this bound).
pub const FLOW_EVENTS_PER_SECOND: (u32, u32) = (1, 1_000_000);
/// `drops.flow_snaplen`: 0 to 128 bytes.
pub const FLOW_SNAPLEN: (u32, u32) = (0, 128);
/// `ethtool.unsupported_retry_cycles`: 1 to 1000000 cycles.
pub(crate) const UNSUPPORTED_RETRY_CYCLES: (u32, u32) = (1, 1_000_000);
/// `ethtool.max_interfaces`: 1 to 1048576 interfaces.
pub(crate) const MAX_INTERFACES: (usize, usize) = (1, 1 << 20);
/// `export.series_caps.*`: 1 to 1048576 series per metric.
pub(crate) const SERIES_CAP: (usize, usize) = (1, 1 << 20);

/// `Ok` if `d` is within `range`, else why not.
pub fn duration(d: Duration, (min, max): (Duration, Duration)) -> Result<(), String> {
    if d < min || d > max {
        return Err(format!(
            "{} is out of range: must be between {} and {}",
            humantime::format_duration(d),
            humantime::format_duration(min),
            humantime::format_duration(max)
        ));
    }
    Ok(())
}

/// `Ok` if `n` is within `range`, else why not.
pub fn size<T: PartialOrd + std::fmt::Display>(n: T, (min, max): (T, T)) -> Result<(), String> {
    if n < min || n > max {
        return Err(format!(
            "{n} is out of range: must be between {min} and {max}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
