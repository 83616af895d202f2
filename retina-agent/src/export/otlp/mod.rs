//! The OTLP output: the OpenTelemetry SDK ([`pipeline`]) collects the collectors' values
//! through observable instruments, and `opentelemetry-otlp` ([`transport`]) sends them
//! over gRPC or HTTP/protobuf.
//!
//! The daemon drives it: right after each collection cycle [`Otlp::export`] collects the
//! SDK's reader and sends the result on a task, unless the previous send is still in
//! flight, in which case it is skipped and counted. A send is one attempt (the exporter's
//! own retries are off) bounded by the configured timeout plus a margin, so a collector
//! that accepts connections and never answers costs one task, never a queue. After a failed
//! send the next exports wait out a [`backoff`] without collecting or encoding anything:
//! a collector that is down costs less than one that is up.
//!
//! Memory: the request is dropped once it is sent, and then the C allocator hands the free
//! heap pages back ([`crate::memory::release_free_pages`]). Keeping the last request for
//! its buffers saved only the outer vectors (the SDK drops every data point's attributes
//! when it collects into it) while it held every point's attributes between exports;
//! trimming right after the send, when the transform's and encoder's blocks are free,
//! returns what a trim at any other moment leaves in the heap (measured at 256 veths:
//! anonymous RSS 10.2 → 7.0 MiB, the trim 0.14-0.25 ms per export; docs/performance.md).

mod backoff;
mod delta;
mod logs;
mod partial;
mod pipeline;
mod transport;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use opentelemetry_otlp::MetricExporter;
use opentelemetry_sdk::{
    Resource, metrics::data::ResourceMetrics, metrics::exporter::PushMetricExporter,
};
use tokio::task::JoinHandle;

pub(crate) use logs::LogOutput;
pub use partial::layer as partial_success_layer;
#[cfg(feature = "internals")]
pub use partial::totals as partial_success_totals;

use self::{
    backoff::Backoff,
    pipeline::{Pipeline, Sources, capped_limit},
};
use super::{ExportError, SharedAgent, catalog::Catalog, selfmetrics::ExportStats};
use crate::{config::ExportConfig, kernel::sys::error_chain, ratelimit::Streak};

/// Extra time an export gets beyond the transport's own timeout, so that the transport's
/// error (with its reason) usually wins over the hard stop.
const HARD_STOP_MARGIN: Duration = Duration::from_secs(1);

/// State the send tasks share with the daemon side.
#[derive(Debug)]
struct Shared {
    endpoint: String,
    /// The HTTP transport's reason for the last failure.
    last_error: Arc<transport::LastError>,
    stats: Arc<ExportStats>,
    failures: Mutex<Streak>,
    backoff: Mutex<Backoff>,
    /// The last send failed: under delta temporality its changes go again in the next
    /// export ([`Pipeline::rewind`]).
    unsent: AtomicBool,
}

impl Shared {
    fn backoff(&self) -> std::sync::MutexGuard<'_, Backoff> {
        self.backoff.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn failed(&self, reason: &str) {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        self.unsent.store(true, Ordering::Relaxed);
        let wait = self.backoff().failed(Instant::now());
        let detail = self.last_error.take();
        let reason = match &detail {
            Some(d) => format!("{reason}: {d}"),
            None => reason.to_string(),
        };
        let mut streak = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match streak.fail() {
            Some(0) => tracing::warn!(
                endpoint = %self.endpoint,
                "OTLP export failed: {reason}; collection continues, the next export is tried \
                 in {} at the earliest, backing off up to {} while failures continue (logged \
                 again at most once a minute)",
                humantime::format_duration(wait),
                humantime::format_duration(backoff::MAX)
            ),
            Some(n) => tracing::warn!(
                endpoint = %self.endpoint,
                failures = streak.count(),
                "OTLP export still failing ({n} more failures since the last message): {reason}"
            ),
            None => tracing::debug!(
                endpoint = %self.endpoint,
                "OTLP export failed: {reason}; next one in {} at the earliest",
                humantime::format_duration(wait)
            ),
        }
    }

    fn succeeded(&self) {
        self.stats.successes.fetch_add(1, Ordering::Relaxed);
        self.unsent.store(false, Ordering::Relaxed);
        self.backoff().succeeded();
        // A retried attempt's failure is no news once the export went through.
        let _ = self.last_error.take();
        let mut streak = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((count, over)) = streak.end() {
            tracing::info!(
                endpoint = %self.endpoint,
                "OTLP export recovered after {count} failed exports over {}",
                humantime::format_duration(Duration::from_secs(over.as_secs()))
            );
        }
    }
}

/// The data points of a collected request.
fn data_points(rm: &ResourceMetrics) -> u64 {
    use opentelemetry_sdk::metrics::data::{AggregatedMetrics as A, MetricData as D};
    fn of<T>(d: &D<T>) -> usize {
        match d {
            D::Gauge(g) => g.data_points().count(),
            D::Sum(s) => s.data_points().count(),
            D::Histogram(h) => h.data_points().count(),
            D::ExponentialHistogram(e) => e.data_points().count(),
        }
    }
    let n: usize = rm
        .scope_metrics()
        .flat_map(|s| s.metrics())
        .map(|m| match m.data() {
            A::F64(d) => of(d),
            A::U64(d) => of(d),
            A::I64(d) => of(d),
        })
        .sum();
    n as u64
}

/// A send in flight.
type InFlight = JoinHandle<()>;

/// The OTLP output, driven by the daemon.
pub(super) struct Otlp {
    sources: Sources,
    pipeline: Pipeline,
    exporter: Arc<MetricExporter>,
    shared: Arc<Shared>,
    /// Hard bound of one send.
    deadline: Duration,
    in_flight: Option<InFlight>,
    skips: Streak,
    rejections: Streak,
    /// Partial-success answers already accounted for.
    answers_seen: u64,
    rejected_seen: u64,
}

impl Otlp {
    pub(super) fn new(
        config: &ExportConfig,
        agent: &SharedAgent,
        catalog: Arc<Catalog>,
        resource: Resource,
    ) -> Result<Otlp, ExportError> {
        let endpoint = config.resolved_endpoint();
        let (exporter, last_error) = transport::exporter(config, &endpoint)?;
        let stats = Arc::new(ExportStats::default());
        let limits: Vec<usize> = {
            let guard = agent.lock();
            match guard.as_ref() {
                Some(a) => catalog.count_held(a, Some(&stats)),
                None => vec![0; catalog.len()],
            }
        }
        .into_iter()
        .enumerate()
        .map(|(i, n)| capped_limit(n, catalog.cap(i)))
        .collect();
        let sources = Sources {
            agent: agent.clone(),
            catalog,
            stats: stats.clone(),
            resource,
            temporality: transport::sdk_temporality(config.temporality),
        };
        let pipeline = Pipeline::new(&sources, limits, None);
        let (answers_seen, rejected_seen) = partial::totals();
        Ok(Otlp {
            sources,
            pipeline,
            exporter: Arc::new(exporter),
            shared: Arc::new(Shared {
                endpoint,
                last_error,
                stats,
                failures: Mutex::new(Streak::default()),
                backoff: Mutex::new(Backoff::default()),
                unsent: AtomicBool::new(false),
            }),
            deadline: config.timeout.saturating_add(HARD_STOP_MARGIN),
            in_flight: None,
            skips: Streak::default(),
            rejections: Streak::default(),
            answers_seen,
            rejected_seen,
        })
    }

    pub(super) fn stats(&self) -> Arc<ExportStats> {
        self.shared.stats.clone()
    }

    pub(super) fn endpoint(&self) -> &str {
        &self.shared.endpoint
    }

    /// Ends a finished send. `false` if one is still running.
    async fn reap(&mut self) -> bool {
        match &self.in_flight {
            Some(h) if !h.is_finished() => false,
            Some(_) => {
                if let Some(h) = self.in_flight.take() {
                    let _ = h.await;
                }
                self.account_partial_success();
                true
            }
            None => true,
        }
    }

    /// Counts what collectors rejected in exports they otherwise accepted.
    fn account_partial_success(&mut self) {
        let (answers, rejected) = partial::totals();
        if answers == self.answers_seen {
            return;
        }
        let new_points = rejected.saturating_sub(self.rejected_seen);
        (self.answers_seen, self.rejected_seen) = (answers, rejected);
        let stats = &self.shared.stats;
        stats
            .rejected_points
            .fetch_add(new_points, Ordering::Relaxed);
        if let Some(n) = self.rejections.fail() {
            tracing::warn!(
                endpoint = %self.shared.endpoint,
                rejected_data_points = new_points,
                "OTLP collector rejected part of an export: {:?} (logged again at most once a \
                 minute; {n} more since the last message)",
                partial::last_message()
            );
        }
    }

    /// Collects the SDK's reader into a request, growing the pipeline first when a metric
    /// is near its cardinality limit.
    fn collect(&mut self) -> Option<ResourceMetrics> {
        if self.shared.unsent.swap(false, Ordering::Relaxed) {
            // Under delta the SDK has forgotten the changes of the failed send: feed them
            // again (at least once; a send that timed out after the collector took it is
            // counted twice, never lost).
            self.pipeline.rewind();
        }
        if let Some(limits) = self.pipeline.outgrown() {
            self.regrow(limits);
        }
        let mut rm = ResourceMetrics::default();
        if let Err(e) = self.pipeline.collect(&self.sources, &mut rm) {
            tracing::warn!("OTLP: collecting the metrics failed: {e}");
            self.pipeline.rewind();
            return None;
        }
        if self.pipeline.overflowed()
            && let Some(limits) = self.pipeline.outgrown()
        {
            // More new series than a quarter of the limit in one interval: some were
            // folded into the SDK's overflow series. Grow and collect again, so this
            // export carries every series. The collect just made is thrown away, so the
            // delta counters' feed is taken back and done again into the new pipeline.
            self.pipeline.rewind();
            self.regrow(limits);
            if let Err(e) = self.pipeline.collect(&self.sources, &mut rm) {
                tracing::warn!("OTLP: collecting the metrics failed: {e}");
                return None;
            }
        }
        Some(rm)
    }

    /// Replaces the pipeline by one with `limits`. Under delta temporality the counters'
    /// last values go over to the new one, so its first export carries the changes since
    /// the last export sent: nothing is lost or counted twice. Under cumulative temporality
    /// the observed totals carry on (the new instruments' start time is now).
    fn regrow(&mut self, limits: Vec<usize>) {
        let carried = self.pipeline.take_changes();
        let next = Pipeline::new(&self.sources, limits, carried);
        tracing::info!(
            series_limit = next.total_limit(),
            "OTLP: series outgrew the instruments' cardinality limits; limits raised"
        );
        self.pipeline = next;
    }

    fn start(&mut self, deadline: Duration) -> Option<InFlight> {
        let started = Instant::now();
        let rm = self.collect()?;
        self.shared.stats.last_collect_nanos.store(
            u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.shared
            .stats
            .last_points
            .store(data_points(&rm), Ordering::Relaxed);
        Some(tokio::spawn(send(
            self.exporter.clone(),
            self.shared.clone(),
            rm,
            deadline,
            started,
        )))
    }

    /// Starts one export of what the collectors hold now, unless one is in flight.
    pub(super) async fn export(&mut self) {
        if !self.reap().await {
            self.shared.stats.skipped.fetch_add(1, Ordering::Relaxed);
            match self.skips.fail() {
                Some(0) => tracing::warn!(
                    endpoint = %self.shared.endpoint,
                    "previous OTLP export still in flight (collector slow or not answering); \
                     skipping this one (logged again at most once a minute)"
                ),
                Some(n) => tracing::warn!(
                    endpoint = %self.shared.endpoint,
                    "OTLP exports still being skipped: {n} more since the last message"
                ),
                None => {}
            }
            return;
        }
        // The skip streak is not ended here: with a collector down and a short interval,
        // exports and skips alternate, and each would start a new streak (and a warning).
        if self.shared.backoff().holds(Instant::now()) {
            // Nothing is collected or encoded: the next export carries the totals.
            self.shared.stats.backed_off.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.in_flight = self.start(self.deadline);
    }

    /// Waits for the export in flight, if any, to finish (the bench measures whole exports
    /// with it).
    #[cfg(feature = "internals")]
    pub(super) async fn flush(&mut self) {
        if let Some(h) = self.in_flight.take() {
            let _ = h.await;
        }
        self.account_partial_success();
    }

    /// Waits for the export in flight until `deadline`, then runs a last export bounded by
    /// what is left of it.
    pub(super) async fn finish(&mut self, deadline: Instant) {
        if let Some(h) = self.in_flight.take() {
            let left = deadline.saturating_duration_since(Instant::now());
            let abort = h.abort_handle();
            match tokio::time::timeout(left, h).await {
                Ok(_) => {}
                Err(_) => {
                    abort.abort();
                    tracing::warn!(
                        endpoint = %self.shared.endpoint,
                        "OTLP export in flight at shutdown did not finish in time; abandoned, \
                         no final export"
                    );
                    return;
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            tracing::warn!("no time left for a final OTLP export");
            return;
        }
        let Some(task) = self.start(left.min(self.deadline)) else {
            return;
        };
        let abort = task.abort_handle();
        match tokio::time::timeout(left, task).await {
            Ok(_) => tracing::debug!("final OTLP export done"),
            Err(_) => {
                abort.abort();
                tracing::warn!("final OTLP export did not finish in time; abandoned");
            }
        }
        self.account_partial_success();
    }
}

/// Sends one request within `deadline` (one attempt: the exporter's retries are off),
/// records the outcome, drops the request and hands the free heap pages back.
async fn send(
    exporter: Arc<MetricExporter>,
    shared: Arc<Shared>,
    rm: ResourceMetrics,
    deadline: Duration,
    started: Instant,
) {
    let result = tokio::time::timeout(deadline, exporter.export(&rm)).await;
    shared.stats.record_duration(started.elapsed());
    match result {
        Ok(Ok(())) => shared.succeeded(),
        Ok(Err(e)) => shared.failed(&error_chain(&e)),
        Err(_) => shared.failed(&format!(
            "no answer within {}",
            humantime::format_duration(deadline)
        )),
    }
    drop(rm);
    let trim = Instant::now();
    crate::memory::release_free_pages();
    tracing::trace!(took = ?trim.elapsed(), "free heap pages released after the export");
}

#[cfg(test)]
mod tests;
