//! The OpenTelemetry SDK pipeline: one `SdkMeterProvider` with one `ManualReader`, and one
//! instrument per exported metric reading the collectors' current values through
//! [`Catalog::visit_metric`]: an observable instrument whose callback reads them, except for
//! counters under delta temporality, which are synchronous counters fed with each series'
//! change before every collect ([`super::delta`]: a series that did not move sends no point).
//!
//! The cardinality limit of each instrument (the SDK reserves it up front, per instrument)
//! is sized from the series that exist: twice the points seen, at least [`MIN_LIMIT`], at
//! most the metric's configured cap (`export.series_caps`). When an uncapped metric grows
//! past three quarters of its limit, [`Pipeline::outgrown`] says so and the exporter builds
//! a new pipeline with larger limits. A capped metric never grows past its cap: the SDK
//! folds the series beyond it into its `otel.metric.overflow` series, and the catalog
//! counts and logs them.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use opentelemetry::{
    InstrumentationScope,
    metrics::{AsyncInstrument, Counter, Meter, MeterProvider as _},
};
use opentelemetry_sdk::{
    Resource,
    error::OTelSdkResult,
    metrics::{
        InstrumentKind, ManualReader, Pipeline as SdkPipeline, SdkMeterProvider, Stream,
        Temporality, data::ResourceMetrics, reader::MetricReader,
    },
};

use super::{
    super::{
        SharedAgent,
        catalog::{Catalog, counter_value},
        selfmetrics::ExportStats,
    },
    delta::Changes,
};
use crate::model::Kind;

/// The smallest cardinality limit given to an instrument.
pub(super) const MIN_LIMIT: usize = 64;

/// The limit for a metric that has `points` series now.
pub(super) fn limit_for(points: usize) -> usize {
    points.saturating_mul(2).max(MIN_LIMIT)
}

/// The limit for a metric that has `points` series now and the cap `cap`.
pub(super) fn capped_limit(points: usize, cap: Option<usize>) -> usize {
    cap.map_or(limit_for(points), |c| limit_for(points).min(c))
}

/// The SDK takes its reader by value; the exporter keeps a handle to collect from it.
#[derive(Debug, Clone)]
pub(super) struct SharedReader(pub(super) Arc<ManualReader>);

impl MetricReader for SharedReader {
    fn register_pipeline(&self, pipeline: std::sync::Weak<SdkPipeline>) {
        self.0.register_pipeline(pipeline)
    }
    fn collect(&self, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.0.collect(rm)
    }
    fn force_flush(&self) -> OTelSdkResult {
        self.0.force_flush()
    }
    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.0.shutdown_with_timeout(timeout)
    }
    fn temporality(&self, kind: InstrumentKind) -> Temporality {
        self.0.temporality(kind)
    }
}

/// What every pipeline of one exporter shares.
pub(super) struct Sources {
    pub(crate) agent: SharedAgent,
    pub(crate) catalog: Arc<Catalog>,
    pub(crate) stats: Arc<ExportStats>,
    pub(crate) resource: Resource,
    pub(crate) temporality: Temporality,
}

pub(super) struct Pipeline {
    // Dropping the provider ends the pipeline; the instruments live as long as it does.
    _provider: SdkMeterProvider,
    reader: SharedReader,
    limits: Vec<usize>,
    /// Per instrument, its configured cap.
    caps: Vec<Option<usize>>,
    /// Points each instrument's callback observed (or each counter was fed) in the last
    /// collect.
    observed: Arc<[AtomicUsize]>,
    /// Under delta temporality, the counters' series, fed before every collect.
    changes: Option<Changes>,
}

impl Pipeline {
    /// A provider, its reader and one instrument per metric of `sources.catalog`, with the
    /// cardinality limits `limits` (one per metric). Under delta temporality the counters'
    /// last values come from `carried` (the pipeline this one replaces), if any.
    pub(super) fn new(sources: &Sources, limits: Vec<usize>, carried: Option<Changes>) -> Pipeline {
        let reader = SharedReader(Arc::new(
            ManualReader::builder()
                .with_temporality(sources.temporality)
                .build(),
        ));
        let by_name: std::collections::HashMap<&'static str, usize> = sources
            .catalog
            .metrics()
            .zip(limits.iter().copied())
            .map(|(m, l)| (m.name, l))
            .collect();
        let provider = SdkMeterProvider::builder()
            .with_resource(sources.resource.clone())
            .with_reader(reader.clone())
            .with_view(move |i: &opentelemetry_sdk::metrics::Instrument| {
                let limit = *by_name.get(i.name())?;
                Stream::builder().with_cardinality_limit(limit).build().ok()
            })
            .build();
        let meter = provider.meter_with_scope(
            InstrumentationScope::builder("retina-agent")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        let observed: Arc<[AtomicUsize]> = (0..sources.catalog.len())
            .map(|_| AtomicUsize::new(0))
            .collect();
        let delta = sources.temporality == Temporality::Delta;
        let counters: Vec<Option<Counter<u64>>> = sources
            .catalog
            .metrics()
            .enumerate()
            .map(|(i, m)| register(&meter, sources, &observed, i, m, delta))
            .collect();
        let changes = delta.then(|| {
            let mut c = carried.unwrap_or_else(|| Changes::new(sources.catalog.len()));
            c.attach(counters);
            c
        });
        let caps = (0..sources.catalog.len())
            .map(|i| sources.catalog.cap(i))
            .collect();
        Pipeline {
            _provider: provider,
            reader,
            limits,
            caps,
            observed,
            changes,
        }
    }

    /// Feeds the synchronous counters (delta temporality) from `sources` (the ones this
    /// pipeline was made with), then runs every observable instrument's callback and
    /// aggregates into `rm`.
    pub(super) fn collect(&mut self, sources: &Sources, rm: &mut ResourceMetrics) -> OTelSdkResult {
        self.feed(sources);
        self.reader.collect(rm)
    }

    /// Adds each counter series' change since the last collect to its counter.
    fn feed(&mut self, sources: &Sources) {
        let Some(changes) = &mut self.changes else {
            return;
        };
        let Sources {
            agent,
            catalog,
            stats,
            ..
        } = sources;
        let guard = agent.lock();
        let Some(a) = guard.as_ref() else { return };
        changes.begin();
        for (i, m) in catalog.metrics().enumerate() {
            if m.kind != Kind::Counter {
                continue;
            }
            let n = changes.feed(i, |f| {
                catalog.visit_metric(i, a, Some(stats), &mut |attrs, value| {
                    debug_assert!(is_in_key_order(attrs), "{attrs:?}");
                    f(attrs, value)
                })
            });
            self.observed[i].store(n, Ordering::Relaxed);
            catalog.record_series(i, n);
        }
    }

    /// Takes the last feed of the counters back (delta temporality): its export was not
    /// sent, and the next feed adds its changes again.
    pub(super) fn rewind(&mut self) {
        if let Some(c) = &mut self.changes {
            c.rewind();
        }
    }

    /// The counters' last values, for the pipeline that replaces this one.
    pub(super) fn take_changes(&mut self) -> Option<Changes> {
        self.changes.take()
    }

    /// New limits if a metric below its cap came within a quarter of its limit in the
    /// last collect.
    pub(super) fn outgrown(&self) -> Option<Vec<usize>> {
        let next: Vec<usize> = self
            .observed
            .iter()
            .zip(&self.limits)
            .zip(&self.caps)
            .map(|((n, &limit), &cap)| {
                let n = n.load(Ordering::Relaxed);
                if n > limit / 4 * 3 {
                    capped_limit(n, cap).max(limit)
                } else {
                    limit
                }
            })
            .collect();
        (next != self.limits).then_some(next)
    }

    /// Whether a metric without a cap reached its limit in the last collect (the SDK then
    /// folded the extra series into one overflow series).
    pub(super) fn overflowed(&self) -> bool {
        self.observed
            .iter()
            .zip(&self.limits)
            .zip(&self.caps)
            .any(|((n, &limit), &cap)| {
                n.load(Ordering::Relaxed) >= limit && cap.is_none_or(|c| limit < c)
            })
    }

    /// The total of the cardinality limits (for the log).
    pub(super) fn total_limit(&self) -> usize {
        self.limits.iter().sum()
    }
}

/// Registers the instrument of metric `i`: observable, or with `sync_counters` a
/// synchronous counter for a counter metric, which it returns.
fn register(
    meter: &Meter,
    sources: &Sources,
    observed: &Arc<[AtomicUsize]>,
    i: usize,
    m: &'static crate::model::Metric,
    sync_counters: bool,
) -> Option<Counter<u64>> {
    let (agent, catalog, stats, observed) = (
        sources.agent.clone(),
        sources.catalog.clone(),
        sources.stats.clone(),
        observed.clone(),
    );
    match m.kind {
        Kind::Counter if sync_counters => {
            return Some(
                meter
                    .u64_counter(m.name)
                    .with_unit(m.unit)
                    .with_description(m.description)
                    .build(),
            );
        }
        Kind::Counter => {
            meter
                .u64_observable_counter(m.name)
                .with_unit(m.unit)
                .with_description(m.description)
                .with_callback(move |o: &dyn AsyncInstrument<u64>| {
                    let guard = agent.lock();
                    let Some(a) = guard.as_ref() else { return };
                    let mut n = 0;
                    catalog.visit_metric(i, a, Some(&stats), &mut |attrs, value| {
                        debug_assert!(is_in_key_order(attrs), "{attrs:?}");
                        if let Some(v) = counter_value(value) {
                            o.observe(v, attrs);
                            n += 1;
                        }
                    });
                    observed[i].store(n, Ordering::Relaxed);
                    catalog.record_series(i, n);
                })
                .build();
        }
        Kind::Gauge => {
            meter
                .f64_observable_gauge(m.name)
                .with_unit(m.unit)
                .with_description(m.description)
                .with_callback(move |o: &dyn AsyncInstrument<f64>| {
                    let guard = agent.lock();
                    let Some(a) = guard.as_ref() else { return };
                    let mut n = 0;
                    catalog.visit_metric(i, a, Some(&stats), &mut |attrs, value| {
                        debug_assert!(is_in_key_order(attrs), "{attrs:?}");
                        o.observe(value.as_f64(), attrs);
                        n += 1;
                    });
                    observed[i].store(n, Ordering::Relaxed);
                    catalog.record_series(i, n);
                })
                .build();
        }
    }
    None
}

/// Whether `attrs` is in key order, as every collector builds its attribute sets
/// ([`crate::model::in_key_order`]): a set out of order costs the SDK two map entries.
fn is_in_key_order(attrs: &[opentelemetry::KeyValue]) -> bool {
    attrs.is_sorted_by(|a, b| a.key <= b.key)
}

#[cfg(test)]
mod tests;
