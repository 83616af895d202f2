//! What the outputs export: every metric the agent's collectors list plus the agent's own
//! health, and the grouping of the collectors' data points by metric.
//!
//! OTLP and the Prometheus text format both want the points of one metric together,
//! while collectors hand them out in their own order (a drop series gives its packet
//! count, then its bytes). [`Grouper`] visits the collectors once and appends each point,
//! already encoded by the output, to its metric's buffer. The buffers are kept between
//! exports, so once they have grown to the series count an export allocates nothing.

use std::collections::HashMap;

use opentelemetry::KeyValue;

use super::selfmetrics::{self, ExportStats};
use crate::{
    agent::Agent,
    metrics::{Metric, Number, Visitor},
};

/// The metrics the outputs carry, each with a stable index.
#[derive(Debug)]
pub struct Catalog {
    metrics: Vec<&'static Metric>,
    by_name: HashMap<&'static str, usize>,
}

impl Catalog {
    /// Every metric of `agent`'s collectors, then the self-telemetry (`export_stats`:
    /// whether the export metrics are included). A name listed twice with another kind
    /// or unit keeps its first definition, with a warning; points of the other are not
    /// exported.
    pub fn new(agent: &Agent, export_stats: bool) -> Catalog {
        let mut c = Catalog {
            metrics: Vec::new(),
            by_name: HashMap::new(),
        };
        for (collector, _) in agent.collectors() {
            for &m in collector.metrics() {
                c.add(m, collector.name());
            }
        }
        for &m in selfmetrics::metrics(export_stats) {
            c.add(m, "agent");
        }
        c
    }

    fn add(&mut self, m: &'static Metric, from: &str) {
        match self.by_name.get(m.name) {
            Some(&i) if !same_type(self.metrics[i], m) => tracing::warn!(
                metric = m.name,
                collector = from,
                "metric already registered with another type or unit; not exported from this \
                 collector"
            ),
            Some(_) => {}
            None => {
                self.by_name.insert(m.name, self.metrics.len());
                self.metrics.push(m);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.metrics.len()
    }

    pub fn is_empty(&self) -> bool {
        self.metrics.is_empty()
    }

    pub fn metrics(&self) -> &[&'static Metric] {
        &self.metrics
    }

    /// The index of `m`, `None` if it is not exported (unknown, or a conflicting
    /// definition).
    pub fn index(&self, m: &Metric) -> Option<usize> {
        let &i = self.by_name.get(m.name)?;
        same_type(self.metrics[i], m).then_some(i)
    }
}

fn same_type(a: &Metric, b: &Metric) -> bool {
    a.kind == b.kind && a.unit == b.unit
}

/// Visits every point an output exports: the collectors', then the self-telemetry.
pub fn visit_all(agent: &Agent, export_stats: Option<&ExportStats>, v: &mut dyn Visitor) {
    agent.visit(v);
    selfmetrics::visit(agent, export_stats, v);
}

/// Per-metric buffers of encoded points, reused from one export to the next.
#[derive(Debug, Default)]
pub struct Grouper {
    buffers: Vec<Vec<u8>>,
}

impl Grouper {
    /// Clears the buffers, then visits `agent` (and the self-telemetry) once, calling
    /// `encode` for each exported point with its metric's index and buffer.
    pub fn fill(
        &mut self,
        catalog: &Catalog,
        agent: &Agent,
        export_stats: Option<&ExportStats>,
        mut encode: impl FnMut(usize, &'static Metric, &[KeyValue], Number, &mut Vec<u8>),
    ) {
        self.buffers.resize_with(catalog.len(), Vec::new);
        for b in &mut self.buffers {
            b.clear();
        }
        let mut last: Option<(*const Metric, usize)> = None;
        visit_all(
            agent,
            export_stats,
            &mut |m: &'static Metric, attrs: &[KeyValue], value: Number| {
                // Points of one metric mostly come in runs: skip the lookup for those.
                let i = match last {
                    Some((p, i)) if std::ptr::eq(p, m) => i,
                    _ => match catalog.index(m) {
                        Some(i) => {
                            last = Some((m, i));
                            i
                        }
                        None => return,
                    },
                };
                encode(i, catalog.metrics[i], attrs, value, &mut self.buffers[i]);
            },
        );
    }

    /// Gives back what the buffers hold beyond what this fill needed (after a burst of
    /// series, for example thousands of interfaces gone again).
    pub fn trim(&mut self) {
        for b in &mut self.buffers {
            trim(b);
        }
    }

    /// The encoded points of metric `i` (empty: it has none, or none the output could
    /// encode).
    pub fn get(&self, i: usize) -> &[u8] {
        &self.buffers[i]
    }
}

/// Shrinks `buf` when it holds more than twice what it needed plus 64 KiB: a steady
/// state never shrinks (so never reallocates), a burst's memory is returned.
pub fn trim(buf: &mut Vec<u8>) {
    if buf.capacity() > 2 * buf.len() + 64 * 1024 {
        buf.shrink_to(buf.len() + buf.len() / 2);
    }
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
    fn trim_returns_a_burst_only() {
        let mut b = Vec::with_capacity(1 << 20);
        b.resize(500_000, 0u8);
        trim(&mut b);
        assert_eq!(
            b.capacity(),
            1 << 20,
            "within twice the need plus 64 KiB: kept"
        );
        b.truncate(1000);
        trim(&mut b);
        assert!(b.capacity() < 64 * 1024, "{}", b.capacity());
        assert_eq!(b.len(), 1000);
    }

    #[test]
    fn counter_values() {
        assert_eq!(counter_value(Number::U64(7)), Some(7));
        assert_eq!(counter_value(Number::F64(7.9)), Some(7));
        assert_eq!(counter_value(Number::F64(-1.0)), None);
        assert_eq!(counter_value(Number::F64(f64::NAN)), None);
    }
}
