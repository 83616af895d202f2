//! `retina-agent run`: the collection loop, until SIGTERM or SIGINT.

use std::{collections::HashMap, time::Duration};

use opentelemetry::KeyValue;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    agent::Agent,
    drops::collector::DROP_COUNT,
    metrics::{Metric, Number, attr},
};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("installing the {0} handler: {1}")]
    Signal(&'static str, std::io::Error),
}

/// Collects every `interval` until a shutdown signal arrives.
pub async fn run(mut agent: Agent, interval: Duration, summary: bool) -> Result<(), DaemonError> {
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| DaemonError::Signal("SIGTERM", e))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| DaemonError::Signal("SIGINT", e))?;
    for d in agent.degraded() {
        tracing::warn!(collector = d.collector, "not collecting: {}", d.reason);
    }
    tracing::info!(interval = ?interval, "retina-agent running");
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: HashMap<String, u64> = HashMap::new();
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                agent.cycle();
                if summary {
                    print_summary(&agent, &mut last);
                }
            }
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); break; }
        }
    }
    // Dropping the agent detaches the eBPF program and frees its maps.
    drop(agent);
    Ok(())
}

/// Prints drops by reason and interface that happened since the previous cycle. This is
/// the human view for a terminal, not the export path, so it may allocate.
fn print_summary(agent: &Agent, last: &mut HashMap<String, u64>) {
    let mut lines = Vec::new();
    agent.visit(
        &mut |metric: &'static Metric, attrs: &[KeyValue], value: Number| {
            if metric != &DROP_COUNT {
                return;
            }
            let Number::U64(total) = value else { return };
            let get = |k: &str| {
                attrs
                    .iter()
                    .find(|kv| kv.key.as_str() == k)
                    .map(|kv| kv.value.as_str().into_owned())
            };
            let reason = get(attr::DROP_REASON).unwrap_or_default();
            let iface = get(attr::INTERFACE_NAME)
                .or_else(|| get(attr::INTERFACE_INDEX).map(|i| format!("ifindex {i}")))
                .unwrap_or_else(|| "-".into());
            let ns = get(attr::NETNS_NAME)
                .or_else(|| get(attr::NETNS_INODE))
                .unwrap_or_default();
            let key = format!(
                "{reason}\u{1f}{iface}\u{1f}{ns}\u{1f}{}",
                get(attr::NETWORK_TYPE).unwrap_or_default()
            );
            let prev = last.insert(key, total).unwrap_or(0);
            if total > prev {
                lines.push((total - prev, reason, iface, ns));
            }
        },
    );
    if lines.is_empty() {
        return;
    }
    lines.sort_by(|a, b| b.0.cmp(&a.0));
    println!(
        "{:>10}  {:<32} {:<16} NETNS",
        "DROPS", "REASON", "INTERFACE"
    );
    for (n, reason, iface, ns) in lines {
        println!("{n:>10}  {reason:<32} {iface:<16} {ns}");
    }
    println!();
}
