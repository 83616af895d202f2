//! What the outputs export: every metric the agent's collectors list plus the agent's own
//! health, and for each metric the sources that hold its points.
//!
//! OTLP instruments and Prometheus families both want the points of one metric at a time,
//! while a collector hands out all of its points in one walk. [`Catalog::visit_metric`]
//! walks only the collectors that list the metric and passes on that metric's points,
//! straight from the collectors' state: nothing is copied or buffered in between.
//!
//! The catalog also holds what both outputs must agree on: the series policy
//! (`export.series`: a collector's counter that has been zero since the agent started is
//! left out under `informative`) and the per-metric series caps (`export.series_caps`,
//! [`Caps`]).

use std::{
    collections::{BTreeMap, HashMap},
    sync::atomic::{AtomicUsize, Ordering},
};

use opentelemetry::KeyValue;

use super::selfmetrics::{self, ExportStats, SERIES_CAPPED};
use crate::{
    agent::Agent,
    config::SeriesPolicy,
    model::{Kind, Metric, Number},
};

/// One exported metric and where its points come from.
#[derive(Debug)]
struct Entry {
    metric: &'static Metric,
    /// Indexes (in [`Agent::collectors`] order) of the collectors that list it.
    collectors: Vec<usize>,
    /// Whether the self-telemetry emits it.
    self_telemetry: bool,
    /// The most series it exports (`export.series_caps`), if capped.
    cap: Option<usize>,
    /// Series that did not fit under `cap` in the last export or scrape.
    over: AtomicUsize,
}

/// The metrics the outputs carry, each with a stable index.
#[derive(Debug)]
pub struct Catalog {
    entries: Vec<Entry>,
    by_name: HashMap<&'static str, usize>,
    policy: SeriesPolicy,
}

/// Collectors' health counters, exported at zero under every policy like the agent's own
/// metrics: alerts read them, and an alert on a series that appears only with its first
/// count misses that count.
const ALWAYS_EXPORTED: &[&str] = &[
    "retina.drop.overflow.count",
    "retina.drop.overflow.bytes",
    "retina.drop.missed",
    "retina.drop.map.pruned",
    "retina.drop.location.overflow",
    "retina.tcp.event.overflow",
    "retina.drop.sample.sent",
    "retina.drop.sample.suppressed",
    "retina.drop.sample.unparsed",
    "retina.drop.flow.evicted",
    "retina.agent.export.logs.exported",
    "retina.agent.export.logs.failed",
    "retina.agent.export.logs.dropped",
];

/// The attributes of the SDK's overflow series, which the Prometheus output reproduces.
pub(crate) const OVERFLOW_KEY: &str = "otel.metric.overflow";

impl Catalog {
    /// Every metric of `agent`'s collectors, then the self-telemetry (`export_stats`:
    /// whether the export metrics are included). A name listed twice with another kind
    /// or unit keeps its first definition, with a warning; points of the other are not
    /// exported. `policy` and `caps` are `export.series` and `export.series_caps`; a cap
    /// naming a metric that no enabled collector exports is logged and ignored.
    pub fn new(
        agent: &Agent,
        export_stats: bool,
        policy: SeriesPolicy,
        caps: &BTreeMap<String, usize>,
    ) -> Catalog {
        let mut c = Catalog {
            entries: Vec::new(),
            by_name: HashMap::new(),
            policy,
        };
        for (i, (collector, _)) in agent.collectors().enumerate() {
            for &m in collector.metrics() {
                if let Some(e) = c.add(m, collector.name()) {
                    e.collectors.push(i);
                }
            }
        }
        for &m in selfmetrics::metrics(export_stats) {
            if let Some(e) = c.add(m, "agent") {
                e.self_telemetry = true;
            }
        }
        for (name, &cap) in caps {
            match c.by_name.get(name.as_str()) {
                Some(&i) => c.entries[i].cap = Some(cap),
                None => tracing::warn!(
                    metric = %name,
                    "export.series_caps names a metric that no enabled collector exports; \
                     ignored (the metric names are in docs/metrics.md)"
                ),
            }
        }
        c
    }

    fn add(&mut self, m: &'static Metric, from: &str) -> Option<&mut Entry> {
        let i = match self.by_name.get(m.name) {
            Some(&i) if !same_type(self.entries[i].metric, m) => {
                tracing::warn!(
                    metric = m.name,
                    collector = from,
                    "metric already registered with another type or unit; not exported from \
                     this collector"
                );
                return None;
            }
            Some(&i) => i,
            None => {
                self.by_name.insert(m.name, self.entries.len());
                self.entries.push(Entry {
                    metric: m,
                    collectors: Vec::new(),
                    self_telemetry: false,
                    cap: None,
                    over: AtomicUsize::new(0),
                });
                self.entries.len() - 1
            }
        };
        self.entries.get_mut(i)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The exported metrics, by index.
    pub(crate) fn metrics(&self) -> impl ExactSizeIterator<Item = &'static Metric> + '_ {
        self.entries.iter().map(|e| e.metric)
    }

    /// The series cap of metric `i`, if it has one.
    pub(crate) fn cap(&self, i: usize) -> Option<usize> {
        self.entries.get(i).and_then(|e| e.cap)
    }

    /// Records that metric `i` had `series` series in an export or scrape: how many did not
    /// fit under its cap, for `retina.agent.export.series.capped`, with a log line when
    /// the metric goes over its cap and when it is back under.
    pub(crate) fn record_series(&self, i: usize, series: usize) {
        let Some(e) = self.entries.get(i) else { return };
        let Some(cap) = e.cap else { return };
        let over = series.saturating_sub(cap);
        let before = e.over.swap(over, Ordering::Relaxed);
        if before == 0 && over > 0 {
            tracing::warn!(
                metric = e.metric.name,
                cap,
                over,
                "metric {} hit its series cap ({cap}, export.series_caps): {over} series did \
                 not fit and are folded into its otel.metric.overflow series",
                e.metric.name
            );
        } else if before > 0 && over == 0 {
            tracing::info!(
                metric = e.metric.name,
                cap,
                "metric {} is back under its series cap",
                e.metric.name
            );
        }
    }

    /// Hands the points of metric `i` to `f` as the Prometheus output exports them: the
    /// first `cap` series, then (past the cap) one series with `otel.metric.overflow=true`
    /// and the value of the last series that did not fit, as the SDK's cardinality limit
    /// does for the OTLP output's observable instruments. Records the count.
    pub(crate) fn visit_capped(
        &self,
        i: usize,
        agent: &Agent,
        export_stats: Option<&ExportStats>,
        f: &mut dyn FnMut(&[KeyValue], Number),
    ) {
        let cap = self.cap(i).unwrap_or(usize::MAX);
        let mut n = 0usize;
        let mut last_over = None;
        self.visit_metric(i, agent, export_stats, &mut |attrs, value| {
            n += 1;
            if n <= cap {
                f(attrs, value);
            } else {
                last_over = Some(value);
            }
        });
        if let Some(value) = last_over {
            f(&[KeyValue::new(OVERFLOW_KEY, true)], value);
        }
        self.record_series(i, n);
    }

    /// Hands every current point of metric `i` to `f`: from the collectors that list it,
    /// and from the self-telemetry (`export_stats`: the OTLP exporter's counters). Under
    /// the `informative` policy a collector's counter at zero is left out.
    pub(crate) fn visit_metric(
        &self,
        i: usize,
        agent: &Agent,
        export_stats: Option<&ExportStats>,
        f: &mut dyn FnMut(&[KeyValue], Number),
    ) {
        self.visit(i, agent, export_stats, self.policy, f)
    }

    fn visit(
        &self,
        i: usize,
        agent: &Agent,
        export_stats: Option<&ExportStats>,
        policy: SeriesPolicy,
        f: &mut dyn FnMut(&[KeyValue], Number),
    ) {
        let Some(entry) = self.entries.get(i) else {
            return;
        };
        let want = entry.metric;
        let skip_zero = policy == SeriesPolicy::Informative
            && want.kind == Kind::Counter
            && !ALWAYS_EXPORTED.contains(&want.name);
        let mut only = |m: &'static Metric, attrs: &[KeyValue], value: Number| {
            if (std::ptr::eq(m, want) || (m.name == want.name && same_type(m, want)))
                && !(skip_zero && counter_value(value) == Some(0))
            {
                f(attrs, value);
            }
        };
        let mut next = 0;
        for (index, (collector, _)) in agent.collectors().enumerate() {
            if entry.collectors.get(next) == Some(&index) {
                next += 1;
                collector.visit(&mut only);
            }
        }
        if !entry.self_telemetry {
            return;
        }
        // By name: `SERIES_CAPPED` is a `const`, so its address is not unique.
        if want.name == SERIES_CAPPED.name {
            for e in self.entries.iter().filter(|e| e.cap.is_some()) {
                let over = e.over.load(Ordering::Relaxed);
                f(
                    &[KeyValue::new(selfmetrics::ATTR_METRIC, e.metric.name)],
                    Number::U64(over as u64),
                );
            }
        } else {
            // The agent's own counters are exported at zero too: alerts read them.
            let mut own = |m: &'static Metric, attrs: &[KeyValue], value: Number| {
                if std::ptr::eq(m, want) || (m.name == want.name && same_type(m, want)) {
                    f(attrs, value);
                }
            };
            selfmetrics::visit(agent, export_stats, &mut own);
        }
    }

    /// How many points each metric exports right now.
    #[cfg(any(test, feature = "internals"))]
    pub fn count_points(&self, agent: &Agent, export_stats: Option<&ExportStats>) -> Vec<usize> {
        self.count(agent, export_stats, self.policy)
    }

    /// How many series each metric holds right now, exported or not (zero counters
    /// included): what the SDK's limits are sized from, so that counters starting to count
    /// do not make the pipeline grow (a rebuild restarts the sums' start times).
    pub(crate) fn count_held(&self, agent: &Agent, export_stats: Option<&ExportStats>) -> Vec<usize> {
        self.count(agent, export_stats, SeriesPolicy::Everything)
    }

    fn count(
        &self,
        agent: &Agent,
        export_stats: Option<&ExportStats>,
        policy: SeriesPolicy,
    ) -> Vec<usize> {
        (0..self.len())
            .map(|i| {
                let mut n = 0;
                self.visit(i, agent, export_stats, policy, &mut |_, _| n += 1);
                n
            })
            .collect()
    }
}

fn same_type(a: &Metric, b: &Metric) -> bool {
    a.kind == b.kind && a.unit == b.unit
}

/// A counter value as `u64`; `None` for a value that cannot be one (negative, NaN).
pub(crate) fn counter_value(n: Number) -> Option<u64> {
    match n {
        Number::U64(v) => Some(v),
        Number::F64(v) if v.is_finite() && v >= 0.0 => Some(v as u64),
        Number::F64(_) => None,
    }
}

#[cfg(test)]
mod tests;
