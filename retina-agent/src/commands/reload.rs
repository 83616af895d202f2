//! SIGHUP: the daemon re-reads its configuration (the same file, environment and flags as
//! at start) and applies what can change while it runs.
//!
//! - A configuration that does not load (syntax, unknown key, refused value) is refused
//!   as a whole, logged with its file, key and reason; the daemon goes on with the one it
//!   has.
//! - Applied: `interval`; the collector sections (`[ethtool]`, `[netdev]`, `[netstat]`,
//!   `[softnet]`, `[qdisc]`, `[conntrack]`: enabling, disabling, filters), each collector
//!   whose section changed being rebuilt ([`Agent::reconfigure`]); `[export]` and
//!   `[prometheus]`, by restarting the exporters (a final OTLP export first, within
//!   [`SHUTDOWN_BUDGET`]), which is also done when a collector was rebuilt, started or
//!   dropped (the exporters index the collectors' metrics at start).
//! - Kept until a restart, with a warning naming the key: `[drops]` (the eBPF program and
//!   its maps stay loaded and attached, so drop counts go on exactly), `--drop-hook`,
//!   `--btf`, and `[log]`.
//!
//! Counters do not restart: every collector reads the kernel's running totals, and the
//! drop collector is never touched. Restarted exporters start their own counters
//! (`retina.agent.export.*`) from zero.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use crate::{
    config::{self, Config, ConfigError, Loaded, Overrides},
    export::{Exporters, SharedAgent},
};

/// Time a stop of the exporters may take, final OTLP export included: here when they
/// restart, and in `run` for the final collection and export after a shutdown signal.
pub(crate) const SHUTDOWN_BUDGET: Duration = Duration::from_secs(3);

/// How the daemon's configuration is read again.
#[derive(Clone, Debug)]
pub(crate) struct Reloader {
    path: Option<PathBuf>,
    overrides: Overrides,
}

impl Reloader {
    /// `path`: `--config` (else the default path); `overrides`: the command line's flags.
    pub(crate) fn new(path: Option<PathBuf>, overrides: Overrides) -> Reloader {
        Reloader { path, overrides }
    }

    fn load(&self) -> Result<Loaded, ConfigError> {
        config::load(self.path.as_deref(), &config::process_env, &self.overrides)
    }
}

/// The keys (sections) a reload does not change, with their values in `old` and `new`
/// compared.
fn needs_restart(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let d = (&old.drops, &new.drops);
    for (key, differs) in [
        ("drops.enabled", d.0.enabled != d.1.enabled),
        ("drops.map_entries", d.0.map_entries != d.1.map_entries),
        ("drops.locations", d.0.locations != d.1.locations),
        (
            "drops.locations_capacity",
            d.0.locations_capacity != d.1.locations_capacity,
        ),
        ("--drop-hook", d.0.hook != d.1.hook),
        ("--btf", old.btf != new.btf),
        ("log.level", old.log.level != new.log.level),
        ("log.format", old.log.format != new.log.format),
    ] {
        if differs {
            keys.push(key);
        }
    }
    keys
}

/// The configuration the daemon runs after a reload to `new`: `new` with the values that
/// need a restart kept from `old`.
fn effective(old: &Config, mut new: Config) -> Config {
    new.drops = old.drops.clone();
    new.btf = old.btf.clone();
    new.log = old.log.clone();
    new
}

/// What the daemon loop holds that a reload may change.
pub(crate) struct Running<'a> {
    pub(crate) agent: &'a SharedAgent,
    pub(crate) config: &'a mut Config,
    pub(crate) ticker: &'a mut tokio::time::Interval,
}

/// Re-reads the configuration and applies it; returns the exporters to go on with (the
/// same ones unless they were restarted).
pub(crate) async fn reload(reloader: &Reloader, run: Running<'_>, exporters: Exporters) -> Exporters {
    let loaded = match reloader.load() {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(
                "SIGHUP: configuration refused, still running on the previous one: {e}"
            );
            return exporters;
        }
    };
    for key in needs_restart(run.config, &loaded.config) {
        tracing::warn!(
            key,
            "SIGHUP: {key} changed; it only takes effect at a restart (the running value is kept)"
        );
    }
    let mut new = effective(run.config, loaded.config);
    if new == *run.config {
        tracing::info!(config = %loaded.origin, "SIGHUP: configuration reloaded; nothing to apply");
        return exporters;
    }
    let mut applied: Vec<&'static str> = Vec::new();
    let collectors = {
        let mut guard = run.agent.lock();
        match guard.as_mut().map(|a| a.reconfigure(run.config, &new)) {
            Some(Ok(changed)) => changed,
            Some(Err(e)) => {
                tracing::error!(
                    "SIGHUP: the new collector configuration cannot start ({e}); still running \
                     on the previous configuration"
                );
                return exporters;
            }
            None => return exporters,
        }
    };
    applied.extend(&collectors);
    if new.interval != run.config.interval {
        *run.ticker = ticker(new.interval);
        applied.push("interval");
    }
    let restart_exporters = !collectors.is_empty()
        || new.export != run.config.export
        || new.prometheus != run.config.prometheus;
    let exporters = if restart_exporters {
        if new.export != run.config.export {
            applied.push("export");
        }
        if new.prometheus != run.config.prometheus {
            applied.push("prometheus");
        }
        restart(run.agent, exporters, run.config, &mut new).await
    } else {
        exporters
    };
    *run.config = new;
    tracing::info!(
        config = %loaded.origin,
        applied = %applied.join(", "),
        "SIGHUP: configuration reloaded"
    );
    exporters
}

/// The collection ticker of the daemon loop: first tick one `interval` from now, late
/// ticks delayed rather than bunched.
pub(crate) fn ticker(interval: std::time::Duration) -> tokio::time::Interval {
    let start = tokio::time::Instant::now() + interval;
    let mut t = tokio::time::interval_at(start, interval);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// Stops `exporters` (final OTLP export included) and starts them for `new`. When that
/// fails (a port taken, a TLS file gone), the exporters of `old` are started again and
/// `new` gets `old`'s export sections, so that the running configuration says what runs.
async fn restart(
    agent: &SharedAgent,
    exporters: Exporters,
    old: &Config,
    new: &mut Config,
) -> Exporters {
    let now = Instant::now();
    exporters
        .shutdown(now.checked_add(SHUTDOWN_BUDGET).unwrap_or(now))
        .await;
    let e = match Exporters::start(agent, &new.export, &new.prometheus).await {
        Ok(e) => return e,
        Err(e) => e,
    };
    tracing::error!(
        "SIGHUP: the new export configuration cannot start ({e}); back to the previous one"
    );
    new.export = old.export.clone();
    new.prometheus = old.prometheus.clone();
    match Exporters::start(agent, &old.export, &old.prometheus).await {
        Ok(e) => e,
        Err(e) => {
            tracing::error!(
                "SIGHUP: the previous export configuration cannot start again either ({e}); \
                 not exporting until the next reload or restart"
            );
            Exporters::none()
        }
    }
}
