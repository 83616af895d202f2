//! `retina-agent run`: the collection loop, until SIGTERM or SIGINT, with the exporters.
//!
//! Every `interval` the loop runs one collection cycle, then starts one OTLP export of
//! its values (skipped and counted if the previous export is still in flight, so a slow
//! collector never delays collection). The Prometheus endpoint reads the same values when
//! scraped. On SIGTERM or SIGINT, or when the reader of the `--summary` output has gone
//! (`run --summary | head -2`: EPIPE on stdout): one last cycle and export, bounded by
//! [`SHUTDOWN_BUDGET`], then the agent is dropped (the eBPF program detached) and `run`
//! returns. On SIGHUP the configuration is read again and applied ([`reload`]).
//!
//! With `drops.flows` a task drains the kernel's sampled drop events and, with OTLP on,
//! exports them as log records ([`flows`]); the `drop_flows` collector counts them. The
//! log output keeps the settings it started with across reloads. At shutdown it is
//! flushed after the final metric export, within the same budget.

mod flows;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::{
    agent::Agent,
    commands::reload::{self, Reloader, SHUTDOWN_BUDGET},
    collectors::drops::flow_metrics::{FlowCollector, FlowCounters},
    config::Config,
    export::{ExportError, Exporters, SharedAgent},
    report::{self, Point, losses, tcphealth},
};

#[derive(Debug, thiserror::Error)]
pub(crate) enum DaemonError {
    #[error("installing the {0} handler: {1}")]
    Signal(&'static str, std::io::Error),
    #[error(transparent)]
    Export(#[from] ExportError),
}

/// The SIGHUP handler, installed before anything starts: from then on SIGHUP never kills
/// the daemon (its default action), even while the probe loads.
pub(crate) fn hangup() -> Result<Signal, DaemonError> {
    signal(SignalKind::hangup()).map_err(|e| DaemonError::Signal("SIGHUP", e))
}

/// Collects every `config.interval` and exports (`config.export`, `config.prometheus`)
/// until a shutdown signal arrives; on SIGHUP (`hup`), re-reads the configuration with
/// `reloader` and applies it. `summary`: print what was lost since the previous interval
/// ("where packets died") to stdout.
pub(crate) async fn run(
    mut agent: Agent,
    config: &Config,
    summary: bool,
    mut hup: Signal,
    reloader: &Reloader,
) -> Result<(), DaemonError> {
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| DaemonError::Signal("SIGTERM", e))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| DaemonError::Signal("SIGINT", e))?;
    for d in agent.degraded() {
        tracing::warn!(collector = d.collector, "not collecting: {}", d.reason);
    }
    let flow_parts = match agent.take_flows() {
        Some(source) => {
            let logs = match crate::export::log_output(&config.export) {
                Ok(l) => l,
                Err(e) => {
                    drop(agent);
                    return Err(e.into());
                }
            };
            let counters = Arc::new(FlowCounters::default());
            agent.add_flow_collector(FlowCollector::new(
                counters.clone(),
                logs.as_ref().map(|l| l.stats()),
            ));
            Some((source, logs, counters))
        }
        None => None,
    };
    let mut config = config.clone();
    let interval = config.interval;
    let agent = SharedAgent::new(agent);
    let mut flow_export = match flow_parts {
        Some((mut source, logs, counters)) => {
            if let Some(l) = &logs {
                tracing::info!(endpoint = l.endpoint(), "exporting drop events as OTLP log records");
            }
            let ring = source.maps.take_events();
            match flows::FlowExport::start(
                source,
                ring,
                agent.clone(),
                logs,
                counters,
                interval,
                config.drops.locations,
            ) {
                Ok(f) => Some(f),
                Err(e) => {
                    tracing::warn!("drop flows: polling the sampled events: {e}; they are not exported");
                    None
                }
            }
        }
        None => None,
    };
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<Vec<Point>> = None;
    // The first tick is immediate: the first cycle runs before the exporters start, so
    // they are sized from real series.
    ticker.tick().await;
    let mut output = cycle(&agent, summary, &mut last);
    let mut exporters = match Exporters::start(&agent, &config.export, &config.prometheus).await {
        Ok(e) => e,
        Err(e) => {
            if let Some(f) = flow_export.take()
                && let Some(l) = f.stop().await
            {
                let now = Instant::now();
                l.shutdown(now.checked_add(SHUTDOWN_BUDGET).unwrap_or(now)).await;
            }
            drop(agent.take());
            return Err(e.into());
        }
    };
    exporters.export().await;
    // Start-up (BTF parsing, probe loading, first dumps) is over: its transient memory
    // goes back to the kernel instead of staying in the heap for the daemon's lifetime.
    crate::memory::release_free_pages();
    tracing::info!(interval = ?interval, "retina-agent running");
    let mut notifier = crate::notify::Notifier::from_env();
    if let Some(w) = notifier.watchdog()
        && w < interval.saturating_mul(2)
    {
        tracing::warn!(
            watchdog = ?w,
            interval = ?interval,
            "the systemd watchdog period is shorter than two collection intervals: a slow \
             cycle gets the agent restarted (raise WatchdogSec=)"
        );
    }
    notifier.ready(&ready_status(&agent, interval));
    loop {
        if output == Output::Closed {
            // Like any filter whose reader went away: stop, but cleanly (final export,
            // probe detached, exit status 0).
            tracing::info!("stdout closed (broken pipe): stopping");
            break;
        }
        tokio::select! {
            _ = ticker.tick() => {
                output = cycle(&agent, summary, &mut last);
                // From the loop, after the cycle: a hung collection stops the pings.
                notifier.cycle_done();
                exporters.export().await;
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reading the configuration again");
                notifier.reloading();
                let running = reload::Running {
                    agent: &agent,
                    config: &mut config,
                    ticker: &mut ticker,
                };
                exporters = reload::reload(reloader, running, exporters).await;
                notifier.ready(&ready_status(&agent, config.interval));
            }
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); break; }
        }
    }
    notifier.stopping("stopping: final collection and export");
    let now = Instant::now();
    let deadline = now.checked_add(SHUTDOWN_BUDGET).unwrap_or(now);
    let _ = cycle(&agent, false, &mut last);
    // The last events and counters, before the final metric export.
    let logs = match flow_export.take() {
        Some(f) => f.stop().await,
        None => None,
    };
    exporters.shutdown(deadline).await;
    if let Some(l) = logs {
        l.shutdown(deadline).await;
    }
    // Dropping the agent detaches the eBPF program and frees its maps.
    drop(agent.take());
    tracing::info!("stopped");
    Ok(())
}

/// The `STATUS=` line once running: the interval and what could not start.
fn ready_status(agent: &SharedAgent, interval: Duration) -> String {
    let mut status = format!("collecting every {}", humantime::format_duration(interval));
    if let Some(agent) = agent.lock().as_ref() {
        let degraded: Vec<&str> = agent.degraded().iter().map(|d| d.collector).collect();
        if !degraded.is_empty() {
            status.push_str(&format!("; not collecting: {}", degraded.join(", ")));
        }
    }
    status
}

/// How printing the summary went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Output {
    Ok,
    /// Whoever read stdout has gone (`run --summary | head`).
    Closed,
}

/// One collection cycle, then the terminal summary if asked for.
fn cycle(agent: &SharedAgent, summary: bool, last: &mut Option<Vec<Point>>) -> Output {
    let mut guard = agent.lock();
    if let Some(agent) = guard.as_mut() {
        agent.cycle();
        if summary && let Err(e) = print_summary(agent, last) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Output::Closed;
            }
            // Any other write error (a full disk behind a redirect): the summary is a
            // convenience, the daemon goes on.
            tracing::warn!("printing the summary: {e}");
        }
    }
    Output::Ok
}

/// Prints the "where packets died" view of what was lost since the previous cycle (the
/// first cycle only takes the baseline: interface and NIC counters run since boot). This
/// is the human view for a terminal, not the export path, so it may allocate.
fn print_summary(agent: &Agent, last: &mut Option<Vec<Point>>) -> std::io::Result<()> {
    use std::io::Write;
    let now = report::capture_matching(agent, |m| {
        losses::reads(m) || tcphealth::reads(m)
    });
    let Some(before) = last.replace(now.clone()) else {
        return Ok(());
    };
    let window = report::deltas(&before, now);
    let rows = losses::rows(&window);
    let tcp = tcphealth::render(tcphealth::rows(&window));
    if rows.is_empty() && tcp.is_empty() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}{tcp}", losses::render(&rows)).and_then(|()| out.flush())
}
