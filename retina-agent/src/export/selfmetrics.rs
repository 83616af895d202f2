//! The agent's own health, exported next to what it collects.
//!
//! | name | type | unit | attributes | meaning |
//! |---|---|---|---|---|
//! | `retina.agent.collect.duration` | gauge | `s` | `collector` | time the collector's last collection took |
//! | `retina.agent.collect.failures` | sum | `{failure}` | `collector` | collections that failed (the collector keeps its previous values) |
//! | `retina.agent.export.failures` | sum | `{failure}` | `exporter` (`otlp`) | OTLP exports that failed or timed out |
//! | `retina.agent.export.skipped` | sum | `{export}` | `exporter` (`otlp`) | exports not started because the previous one was still in flight |
//! | `retina.agent.export.duration` | gauge | `s` | `exporter` (`otlp`) | time the last OTLP export took, collection and send |
//!
//! A collector's own health counters (the drop map's overflow, interfaces an ethtool
//! collector had to skip, …) belong in that collector's [`Collector::metrics`] list: every
//! metric listed there is exported without anything to add here.
//!
//! [`Collector::metrics`]: crate::collectors::Collector::metrics

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use opentelemetry::{
    KeyValue,
    metrics::{AsyncInstrumentBuilder, Meter, ObservableCounter, ObservableGauge},
};

use super::SharedAgent;
use crate::metrics::{Kind, Metric};

pub const COLLECT_DURATION: Metric = Metric {
    name: "retina.agent.collect.duration",
    unit: "s",
    description: "Time the collector's last collection took",
    kind: Kind::Gauge,
};
pub const COLLECT_FAILURES: Metric = Metric {
    name: "retina.agent.collect.failures",
    unit: "{failure}",
    description: "Collections that failed; the collector keeps its previous values",
    kind: Kind::Counter,
};
pub const EXPORT_FAILURES: Metric = Metric {
    name: "retina.agent.export.failures",
    unit: "{failure}",
    description: "Exports that failed or timed out; with cumulative temporality the next one carries the totals",
    kind: Kind::Counter,
};
pub const EXPORT_SKIPPED: Metric = Metric {
    name: "retina.agent.export.skipped",
    unit: "{export}",
    description: "Exports not started because the previous one was still in flight",
    kind: Kind::Counter,
};
pub const EXPORT_DURATION: Metric = Metric {
    name: "retina.agent.export.duration",
    unit: "s",
    description: "Time the last export took (collection of the data points and send)",
    kind: Kind::Gauge,
};

/// Every self-telemetry metric (for documentation and tests).
pub static METRICS: &[&Metric] = &[
    &COLLECT_DURATION,
    &COLLECT_FAILURES,
    &EXPORT_FAILURES,
    &EXPORT_SKIPPED,
    &EXPORT_DURATION,
];

/// Attribute naming the collector.
pub const ATTR_COLLECTOR: &str = "collector";
/// Attribute naming the exporter (`otlp`).
pub const ATTR_EXPORTER: &str = "exporter";

/// Counters one exporter updates and the self-telemetry reads.
#[derive(Debug, Default)]
pub struct ExportStats {
    pub failures: AtomicU64,
    pub skipped: AtomicU64,
    pub successes: AtomicU64,
    /// Duration of the last finished export, in nanoseconds.
    pub last_duration_nanos: AtomicU64,
}

impl ExportStats {
    pub fn record_duration(&self, d: std::time::Duration) {
        self.last_duration_nanos.store(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

fn gauge<'a>(
    meter: &'a Meter,
    m: &'static Metric,
) -> AsyncInstrumentBuilder<'a, ObservableGauge<f64>, f64> {
    meter
        .f64_observable_gauge(m.name)
        .with_unit(m.unit)
        .with_description(m.description)
}

fn counter<'a>(
    meter: &'a Meter,
    m: &'static Metric,
) -> AsyncInstrumentBuilder<'a, ObservableCounter<u64>, u64> {
    meter
        .u64_observable_counter(m.name)
        .with_unit(m.unit)
        .with_description(m.description)
}

/// Registers the self-telemetry instruments; the export ones only with an OTLP exporter.
pub(super) fn register(meter: &Meter, agent: &SharedAgent, otlp: Option<Arc<ExportStats>>) {
    let a = agent.clone();
    gauge(meter, &COLLECT_DURATION)
        .with_callback(move |o| {
            if let Some(agent) = a.lock().as_ref() {
                for (c, stats) in agent.collectors() {
                    o.observe(
                        stats.duration.as_secs_f64(),
                        &[KeyValue::new(ATTR_COLLECTOR, c.name())],
                    );
                }
            }
        })
        .build();
    let a = agent.clone();
    counter(meter, &COLLECT_FAILURES)
        .with_callback(move |o| {
            if let Some(agent) = a.lock().as_ref() {
                for (c, stats) in agent.collectors() {
                    o.observe(stats.failures, &[KeyValue::new(ATTR_COLLECTOR, c.name())]);
                }
            }
        })
        .build();
    let Some(stats) = otlp else { return };
    let attrs = [KeyValue::new(ATTR_EXPORTER, "otlp")];
    let (s, at) = (stats.clone(), attrs.clone());
    counter(meter, &EXPORT_FAILURES)
        .with_callback(move |o| o.observe(s.failures.load(Ordering::Relaxed), &at))
        .build();
    let (s, at) = (stats.clone(), attrs.clone());
    counter(meter, &EXPORT_SKIPPED)
        .with_callback(move |o| o.observe(s.skipped.load(Ordering::Relaxed), &at))
        .build();
    let (s, at) = (stats, attrs);
    gauge(meter, &EXPORT_DURATION)
        .with_callback(move |o| {
            let nanos = s.last_duration_nanos.load(Ordering::Relaxed);
            o.observe(nanos as f64 / 1e9, &at)
        })
        .build();
}
