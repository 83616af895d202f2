//! The `drop_flows` collector (`run` with `drops.flows`): the flow part's counters and,
//! with OTLP, the log export's.
//!
//! The flow maps belong to the task that drains the sampled events (`commands::run::flows`):
//! it reads the counters (a walk of the LRU map for the evictions) once per collection
//! interval into [`FlowCounters`], and this collector hands them out. `collect` and
//! `visit` only load atomics: nothing is allocated on the metrics path.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use super::flows::FlowStats;
use crate::{
    collectors::{CollectError, Collector},
    export::selfmetrics::{LOGS_DROPPED, LOGS_EXPORTED, LOGS_FAILED, LogStats},
    kernel::links::Links,
    model::{Kind, Metric, Number, Visitor},
};

pub(crate) const SAMPLE_SENT: Metric = Metric {
    name: "retina.drop.sample.sent",
    unit: "{event}",
    description: "Drops sent to the agent as sampled events (drops.flows), counted in the kernel",
    kind: Kind::Counter,
};
pub(crate) const SAMPLE_SUPPRESSED: Metric = Metric {
    name: "retina.drop.sample.suppressed",
    unit: "{event}",
    description: "Parsed drops not sent as sampled events: over the per-CPU budget (drops.flow_events_per_second) or the ring buffer was full",
    kind: Kind::Counter,
};
pub(crate) const SAMPLE_UNPARSED: Metric = Metric {
    name: "retina.drop.sample.unparsed",
    unit: "{packet}",
    description: "Drops whose headers could not be parsed (not IP, or a truncated linear head): neither sent nor suppressed",
    kind: Kind::Counter,
};
pub(crate) const FLOW_EVICTED: Metric = Metric {
    name: "retina.drop.flow.evicted",
    unit: "{flow}",
    description: "Flows evicted from the kernel's LRU flow map (drops.flows_capacity); a flow that comes back is counted again from zero",
    kind: Kind::Counter,
};

static METRICS: &[&Metric] = &[
    &SAMPLE_SENT,
    &SAMPLE_SUPPRESSED,
    &SAMPLE_UNPARSED,
    &FLOW_EVICTED,
];
static METRICS_WITH_LOGS: &[&Metric] = &[
    &SAMPLE_SENT,
    &SAMPLE_SUPPRESSED,
    &SAMPLE_UNPARSED,
    &FLOW_EVICTED,
    &LOGS_EXPORTED,
    &LOGS_FAILED,
    &LOGS_DROPPED,
];

/// The flow part's counters, as last read.
#[derive(Debug, Default)]
pub(crate) struct FlowCounters {
    sent: AtomicU64,
    suppressed: AtomicU64,
    unparsed: AtomicU64,
    evicted: AtomicU64,
}

impl FlowCounters {
    /// Keeps `stats`. The kernel's counters only grow; evictions are computed from the map
    /// and are kept from going back.
    pub(crate) fn store(&self, stats: &FlowStats) {
        self.sent.store(stats.sent, Ordering::Relaxed);
        self.suppressed.store(stats.suppressed, Ordering::Relaxed);
        self.unparsed.store(stats.unparsed, Ordering::Relaxed);
        self.evicted.fetch_max(stats.evicted, Ordering::Relaxed);
    }
}

pub(crate) struct FlowCollector {
    counters: Arc<FlowCounters>,
    logs: Option<Arc<LogStats>>,
}

impl FlowCollector {
    pub(crate) fn new(counters: Arc<FlowCounters>, logs: Option<Arc<LogStats>>) -> Self {
        FlowCollector { counters, logs }
    }
}

impl Collector for FlowCollector {
    fn name(&self) -> &'static str {
        "drop_flows"
    }

    fn metrics(&self) -> &'static [&'static Metric] {
        if self.logs.is_some() {
            METRICS_WITH_LOGS
        } else {
            METRICS
        }
    }

    fn collect(&mut self, _links: &Links) -> Result<(), CollectError> {
        Ok(())
    }

    fn visit(&self, v: &mut dyn Visitor) {
        let load = |a: &AtomicU64| Number::U64(a.load(Ordering::Relaxed));
        v.point(&SAMPLE_SENT, &[], load(&self.counters.sent));
        v.point(&SAMPLE_SUPPRESSED, &[], load(&self.counters.suppressed));
        v.point(&SAMPLE_UNPARSED, &[], load(&self.counters.unparsed));
        v.point(&FLOW_EVICTED, &[], load(&self.counters.evicted));
        if let Some(l) = &self.logs {
            l.visit(v);
        }
    }
}

#[cfg(test)]
mod tests;
