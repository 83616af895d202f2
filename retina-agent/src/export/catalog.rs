//! What the outputs export: every metric the agent's collectors list plus the agent's own
//! health, and for each metric the sources that hold its points.
//!
//! OTLP instruments and Prometheus families both want the points of one metric at a time,
//! while a collector hands out all of its points in one walk. [`Catalog::visit_metric`]
//! walks only the collectors that list the metric and passes on that metric's points,
//! straight from the collectors' state: nothing is copied or buffered in between.

use std::collections::HashMap;

use opentelemetry::KeyValue;

use super::selfmetrics::{self, ExportStats};
use crate::{
    agent::Agent,
    model::{Metric, Number},
};

/// One exported metric and where its points come from.
#[derive(Debug)]
struct Entry {
    metric: &'static Metric,
    /// Indexes (in [`Agent::collectors`] order) of the collectors that list it.
    collectors: Vec<usize>,
    /// Whether the self-telemetry emits it.
    self_telemetry: bool,
}

/// The metrics the outputs carry, each with a stable index.
#[derive(Debug)]
pub struct Catalog {
    entries: Vec<Entry>,
    by_name: HashMap<&'static str, usize>,
}

impl Catalog {
    /// Every metric of `agent`'s collectors, then the self-telemetry (`export_stats`:
    /// whether the export metrics are included). A name listed twice with another kind
    /// or unit keeps its first definition, with a warning; points of the other are not
    /// exported.
    pub fn new(agent: &Agent, export_stats: bool) -> Catalog {
        let mut c = Catalog {
            entries: Vec::new(),
            by_name: HashMap::new(),
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
                });
                self.entries.len() - 1
            }
        };
        self.entries.get_mut(i)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    #[cfg_attr(not(feature = "internals"), allow(dead_code, reason = "used by the tests, the bench or the fuzz targets"))]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The exported metrics, by index.
    pub fn metrics(&self) -> impl ExactSizeIterator<Item = &'static Metric> + '_ {
        self.entries.iter().map(|e| e.metric)
    }

    /// Hands every current point of metric `i` to `f`: from the collectors that list it,
    /// and from the self-telemetry (`export_stats`: the OTLP exporter's counters).
    pub fn visit_metric(
        &self,
        i: usize,
        agent: &Agent,
        export_stats: Option<&ExportStats>,
        f: &mut dyn FnMut(&[KeyValue], Number),
    ) {
        let Some(entry) = self.entries.get(i) else {
            return;
        };
        let want = entry.metric;
        let mut only = |m: &'static Metric, attrs: &[KeyValue], value: Number| {
            if std::ptr::eq(m, want) || (m.name == want.name && same_type(m, want)) {
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
        if entry.self_telemetry {
            selfmetrics::visit(agent, export_stats, &mut only);
        }
    }

    /// How many points each metric has right now.
    pub fn count_points(&self, agent: &Agent, export_stats: Option<&ExportStats>) -> Vec<usize> {
        (0..self.len())
            .map(|i| {
                let mut n = 0;
                self.visit_metric(i, agent, export_stats, &mut |_, _| n += 1);
                n
            })
            .collect()
    }
}

fn same_type(a: &Metric, b: &Metric) -> bool {
    a.kind == b.kind && a.unit == b.unit
}

/// A counter value as `u64`; `None` for a value that cannot be one (negative, NaN).
pub fn counter_value(n: Number) -> Option<u64> {
    match n {
        Number::U64(v) => Some(v),
        Number::F64(v) if v.is_finite() && v >= 0.0 => Some(v as u64),
        Number::F64(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_values() {
        assert_eq!(counter_value(Number::U64(7)), Some(7));
        assert_eq!(counter_value(Number::F64(7.9)), Some(7));
        assert_eq!(counter_value(Number::F64(-1.0)), None);
        assert_eq!(counter_value(Number::F64(f64::NAN)), None);
    }
}
