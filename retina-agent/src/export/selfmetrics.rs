//! The agent's own health, exported next to what it collects.
//!
//! | name | type | unit | attributes | meaning |
//! |---|---|---|---|---|
//! | `retina.agent.collect.duration` | gauge | `s` | `collector` | time the collector's last collection took |
//! | `retina.agent.collect.failures` | sum | `{failure}` | `collector` | collections that failed (the collector keeps its previous values) |
//! | `retina.agent.descriptor.shortages` | sum | `{lookup}` | `lost` (`interface.name`, `workload`) | lookups that failed for want of a file descriptor, so a series went out without that attribute ([`crate::fdshortage`]) |
//! | `retina.agent.collector.degraded` | gauge | `{collector}` | `collector` | 1 for each part that could not start ([`Agent::degraded`]); no point when all run |
//! | `retina.agent.export.failures` | sum | `{failure}` | `exporter` (`otlp`) | OTLP exports that failed or timed out |
//! | `retina.agent.export.skipped` | sum | `{export}` | `exporter` (`otlp`) | exports not started because the previous one was still in flight |
//! | `retina.agent.export.rejected` | sum | `{data_point}` | `exporter` (`otlp`) | data points the collector said it rejected (OTLP partial success) |
//! | `retina.agent.export.duration` | gauge | `s` | `exporter` (`otlp`) | time the last OTLP export took, encoding and send |
//! | `retina.agent.export.logs.exported` | sum | `{log_record}` | `exporter` (`otlp`) | drop events (`drops.flows`) the collector accepted |
//! | `retina.agent.export.logs.failed` | sum | `{log_record}` | `exporter` (`otlp`) | drop events in log exports that failed or timed out, or handed over during the backoff after failures (not retried) |
//! | `retina.agent.export.logs.dropped` | sum | `{log_record}` | `exporter` (`otlp`) | drop events not queued because the log export queue was full |
//! | `retina.agent.export.series.capped` | gauge | `{series}` | `metric` | series of a metric with a configured cap (`export.series_caps`) that did not fit in the last export or scrape; one series per capped metric, `0` while under the cap |
//!
//! A collector's own health counters (the drop map's overflow, interfaces an ethtool
//! collector had to skip, …) belong in that collector's [`Collector::metrics`] list: every
//! metric listed there is exported without anything to add here.
//!
//! [`Collector::metrics`]: crate::collectors::Collector::metrics
//! [`Agent::degraded`]: crate::agent::Agent::degraded

use std::sync::atomic::{AtomicU64, Ordering};

use opentelemetry::KeyValue;

use crate::{
    agent::Agent,
    fdshortage::{self, Lost},
    model::{Kind, Metric, Number, Visitor},
};

pub(crate) const COLLECT_DURATION: Metric = Metric {
    name: "retina.agent.collect.duration",
    unit: "s",
    description: "Time the collector's last collection took",
    kind: Kind::Gauge,
};
pub(crate) const COLLECT_FAILURES: Metric = Metric {
    name: "retina.agent.collect.failures",
    unit: "{failure}",
    description: "Collections that failed; the collector keeps its previous values",
    kind: Kind::Counter,
};
pub(crate) const DESCRIPTOR_SHORTAGES: Metric = Metric {
    name: "retina.agent.descriptor.shortages",
    unit: "{lookup}",
    description: "Lookups that failed for want of a file descriptor (EMFILE, ENFILE); the series went out without the attribute named by `lost`",
    kind: Kind::Counter,
};
pub(crate) const COLLECTOR_DEGRADED: Metric = Metric {
    name: "retina.agent.collector.degraded",
    unit: "{collector}",
    description: "1 for each collector that could not start (see the log or `retina-agent snapshot` for why)",
    kind: Kind::Gauge,
};
pub(crate) const EXPORT_FAILURES: Metric = Metric {
    name: "retina.agent.export.failures",
    unit: "{failure}",
    description: "Exports that failed or timed out; with cumulative temporality the next one carries the totals",
    kind: Kind::Counter,
};
pub(crate) const EXPORT_SKIPPED: Metric = Metric {
    name: "retina.agent.export.skipped",
    unit: "{export}",
    description: "Exports not started because the previous one was still in flight",
    kind: Kind::Counter,
};
pub(crate) const EXPORT_REJECTED: Metric = Metric {
    name: "retina.agent.export.rejected",
    unit: "{data_point}",
    description: "Data points the collector answered it rejected (OTLP partial success)",
    kind: Kind::Counter,
};
pub(crate) const EXPORT_DURATION: Metric = Metric {
    name: "retina.agent.export.duration",
    unit: "s",
    description: "Time the last export took (encoding of the data points and send)",
    kind: Kind::Gauge,
};
pub(crate) const LOGS_EXPORTED: Metric = Metric {
    name: "retina.agent.export.logs.exported",
    unit: "{log_record}",
    description: "Drop events (drops.flows) exported as OTLP log records that the collector accepted",
    kind: Kind::Counter,
};
pub(crate) const LOGS_FAILED: Metric = Metric {
    name: "retina.agent.export.logs.failed",
    unit: "{log_record}",
    description: "Drop events in OTLP log exports that failed or timed out, or handed over during the backoff after failures; they are not retried",
    kind: Kind::Counter,
};
pub(crate) const LOGS_DROPPED: Metric = Metric {
    name: "retina.agent.export.logs.dropped",
    unit: "{log_record}",
    description: "Drop events not queued for OTLP log export because the queue was full",
    kind: Kind::Counter,
};
// The log export's self-metrics (with `drops.flows` and OTLP) are listed and visited by the
// `drop_flows` collector (`collectors::drops::flow_metrics`), which exists only then.

/// Counters of the OTLP log output.
#[derive(Debug, Default)]
pub struct LogStats {
    pub exported: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
    /// Records handed to the batch processor and not yet exported or failed.
    pub(crate) queued: AtomicU64,
}

impl LogStats {
    /// Hands the counters to `v`.
    pub(crate) fn visit(&self, v: &mut dyn Visitor) {
        let otlp = [KeyValue::new(ATTR_EXPORTER, "otlp")];
        let load = |a: &AtomicU64| Number::U64(a.load(Ordering::Relaxed));
        v.point(&LOGS_EXPORTED, &otlp, load(&self.exported));
        v.point(&LOGS_FAILED, &otlp, load(&self.failed));
        v.point(&LOGS_DROPPED, &otlp, load(&self.dropped));
    }
}

pub(crate) const SERIES_CAPPED: Metric = Metric {
    name: "retina.agent.export.series.capped",
    unit: "{series}",
    description: "Series of a metric with a configured cap (export.series_caps) that did not fit in the last export; they were folded into its otel.metric.overflow series",
    kind: Kind::Gauge,
};

/// Every self-telemetry metric: those of both outputs first, then the OTLP ones.
pub(crate) static METRICS: &[&Metric] = &[
    &COLLECT_DURATION,
    &COLLECT_FAILURES,
    &DESCRIPTOR_SHORTAGES,
    &COLLECTOR_DEGRADED,
    &SERIES_CAPPED,
    &EXPORT_FAILURES,
    &EXPORT_SKIPPED,
    &EXPORT_REJECTED,
    &EXPORT_DURATION,
];
/// How many of [`METRICS`] every output has (the rest need an OTLP exporter).
const COLLECT_METRICS: usize = 5;

/// Attribute naming the collector.
pub(crate) const ATTR_COLLECTOR: &str = "collector";
/// Attribute naming what a descriptor shortage cost ([`fdshortage::Lost::as_str`]).
pub(crate) const ATTR_LOST: &str = "lost";
/// Attribute naming the metric of [`SERIES_CAPPED`].
pub(crate) const ATTR_METRIC: &str = "metric";
/// Attribute naming the exporter (`otlp`).
pub(crate) const ATTR_EXPORTER: &str = "exporter";

/// Counters one exporter updates and the self-telemetry reads.
#[derive(Debug, Default)]
pub struct ExportStats {
    pub failures: AtomicU64,
    pub(crate) skipped: AtomicU64,
    pub successes: AtomicU64,
    /// Exports not started (nothing collected or encoded) while backing off after a
    /// failure.
    pub(crate) backed_off: AtomicU64,
    /// Data points the collector rejected in exports it otherwise accepted.
    pub(crate) rejected_points: AtomicU64,
    /// Duration of the last finished export, in nanoseconds.
    pub(crate) last_duration_nanos: AtomicU64,
    /// Time the SDK's collect (the instruments' callbacks and aggregation) took in the
    /// last export, in nanoseconds.
    pub last_collect_nanos: AtomicU64,
    /// Data points in the last export's request (under delta temporality, the counters
    /// that moved and the gauges).
    pub last_points: AtomicU64,
}

impl ExportStats {
    pub(crate) fn record_duration(&self, d: std::time::Duration) {
        self.last_duration_nanos.store(
            u64::try_from(d.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

/// The self-telemetry metrics; the export ones only with an OTLP exporter.
pub(crate) fn metrics(export_stats: bool) -> &'static [&'static Metric] {
    if export_stats {
        METRICS
    } else {
        &METRICS[..COLLECT_METRICS]
    }
}

/// Hands the self-telemetry's current values to `v`; the export metrics only with
/// `export` (the OTLP exporter's counters). [`SERIES_CAPPED`] is the catalog's own
/// (`super::catalog`), not visited here.
pub(crate) fn visit(agent: &Agent, export: Option<&ExportStats>, v: &mut dyn Visitor) {
    for (c, stats) in agent.collectors() {
        let attrs = [KeyValue::new(ATTR_COLLECTOR, c.name())];
        v.point(
            &COLLECT_DURATION,
            &attrs,
            Number::F64(stats.duration.as_secs_f64()),
        );
        v.point(&COLLECT_FAILURES, &attrs, Number::U64(stats.failures));
    }
    for lost in Lost::ALL {
        let attrs = [KeyValue::new(ATTR_LOST, lost.as_str())];
        v.point(&DESCRIPTOR_SHORTAGES, &attrs, Number::U64(fdshortage::count(lost)));
    }
    for d in agent.degraded() {
        let attrs = [KeyValue::new(ATTR_COLLECTOR, d.collector)];
        v.point(&COLLECTOR_DEGRADED, &attrs, Number::U64(1));
    }
    let Some(s) = export else { return };
    let otlp = [KeyValue::new(ATTR_EXPORTER, "otlp")];
    let load = |a: &AtomicU64| Number::U64(a.load(Ordering::Relaxed));
    v.point(&EXPORT_FAILURES, &otlp, load(&s.failures));
    v.point(&EXPORT_SKIPPED, &otlp, load(&s.skipped));
    v.point(&EXPORT_REJECTED, &otlp, load(&s.rejected_points));
    let nanos = s.last_duration_nanos.load(Ordering::Relaxed);
    v.point(&EXPORT_DURATION, &otlp, Number::F64(nanos as f64 / 1e9));
}
