//! The OTLP log output of the drop events (`drops.flows`): `opentelemetry_sdk`'s logger
//! provider with the batch log processor, sending through `opentelemetry-otlp`'s
//! `LogExporter` with the metric exporter's transport ([`super::transport::log_exporter`]).
//!
//! The same rules as the metric export: memory is bounded (at most [`MAX_QUEUE`] records
//! wait; a record over that is counted in `retina.agent.export.logs.dropped` and never
//! queued), each export is one attempt bounded by the configured timeout (failed records are
//! counted, not retried), and nothing here blocks collection: the processor exports on its
//! own thread, driving the transport on the daemon's runtime.
//!
//! The SDK's batch processor bounds the queue and batches, but it exports every batch it
//! has, however often the last ones failed, and under a flood it has a full batch every
//! few milliseconds. While the collector is down the exporter therefore backs off as the
//! metric export does ([`super::backoff`]: 1, 2, 4, … up to 30 s after failures in a row,
//! ended by the first success): a batch handed over during the wait is counted failed at
//! once, without being encoded or sent.

use std::{
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use opentelemetry::logs::{LogRecord as _, Logger as _, LoggerProvider as _};
use opentelemetry_sdk::{
    Resource,
    error::{OTelSdkError, OTelSdkResult},
    logs::{
        BatchConfigBuilder, BatchLogProcessor, LogBatch, LogExporter, SdkLogRecord, SdkLogger,
        SdkLoggerProvider,
    },
};
use tokio::runtime::Handle;

use super::{HARD_STOP_MARGIN, backoff::Backoff, transport};
use crate::{
    config::ExportConfig,
    export::{ExportError, selfmetrics::LogStats},
    kernel::sys::error_chain,
    ratelimit::Streak,
};

/// Records that may wait for export, at most.
pub(crate) const MAX_QUEUE: usize = 2048;
/// Records in one export, at most.
const MAX_BATCH: usize = 512;
/// How often the processor exports what waits.
const SCHEDULE: Duration = Duration::from_secs(1);

/// `opentelemetry-otlp`'s exporter, driven on the daemon's runtime (the processor's thread
/// has none), bounded by the timeout, and counted.
#[derive(Debug)]
struct Counted {
    inner: opentelemetry_otlp::LogExporter,
    runtime: Handle,
    stats: Arc<LogStats>,
    last_error: Arc<transport::LastError>,
    deadline: Duration,
    endpoint: String,
    failures: std::sync::Mutex<Streak>,
    backoff: std::sync::Mutex<Backoff>,
}

impl Counted {
    fn failed(&self, records: u64, reason: String) {
        self.stats.failed.fetch_add(records, Ordering::Relaxed);
        let wait = self
            .backoff
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failed(Instant::now());
        let reason = format!(
            "{reason} (next attempt in {})",
            humantime::format_duration(wait)
        );
        let reason = match self.last_error.take() {
            Some(d) => format!("{reason}: {d}"),
            None => reason,
        };
        let mut streak = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match streak.fail() {
            Some(0) => tracing::warn!(
                endpoint = %self.endpoint,
                "OTLP log export of drop events failed: {reason}; {records} records lost, \
                 collection continues (logged again at most once a minute)"
            ),
            Some(n) => tracing::warn!(
                endpoint = %self.endpoint,
                "OTLP log export still failing ({n} more failures since the last message): {reason}"
            ),
            None => {}
        }
    }
}

impl LogExporter for Counted {
    async fn export(&self, batch: LogBatch<'_>) -> OTelSdkResult {
        let records = batch.iter().count() as u64;
        if self
            .backoff
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .holds(Instant::now())
        {
            // Backing off: the batch is lost, as a failed export's would be.
            self.stats.queued.fetch_sub(records, Ordering::Relaxed);
            self.stats.failed.fetch_add(records, Ordering::Relaxed);
            return Err(OTelSdkError::InternalFailure(
                "backing off after failed exports".into(),
            ));
        }
        // Built inside the runtime: the timer and the transport need its context.
        let result = self.runtime.block_on(async {
            tokio::time::timeout(self.deadline, self.inner.export(batch)).await
        });
        self.stats.queued.fetch_sub(records, Ordering::Relaxed);
        match result {
            Ok(Ok(())) => {
                self.stats.exported.fetch_add(records, Ordering::Relaxed);
                self.backoff
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .succeeded();
                let mut streak = self.failures.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((count, _)) = streak.end() {
                    tracing::info!(endpoint = %self.endpoint, "OTLP log export recovered after {count} failures");
                }
                Ok(())
            }
            Ok(Err(e)) => {
                self.failed(records, error_chain(&e));
                Err(e)
            }
            Err(_) => {
                let reason = format!("no answer within {}", humantime::format_duration(self.deadline));
                self.failed(records, reason.clone());
                Err(OTelSdkError::Timeout(self.deadline))
            }
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The log output.
pub(crate) struct LogOutput {
    provider: SdkLoggerProvider,
    logger: SdkLogger,
    stats: Arc<LogStats>,
    endpoint: String,
}

impl LogOutput {
    /// Builds the exporter and starts the processor's thread. Must run inside the Tokio
    /// runtime (its handle drives the transport).
    pub(crate) fn new(config: &ExportConfig, resource: Resource) -> Result<Self, ExportError> {
        let endpoint = config.resolved_logs_endpoint();
        // The shared settings with the `OTEL_EXPORTER_OTLP_LOGS_*` ones over them.
        let config = &config.for_logs();
        let (inner, last_error) = transport::log_exporter(config, &endpoint)?;
        let stats = Arc::new(LogStats::default());
        let deadline = config.timeout.saturating_add(HARD_STOP_MARGIN);
        let exporter = Counted {
            inner,
            runtime: Handle::current(),
            stats: stats.clone(),
            last_error,
            deadline,
            endpoint: endpoint.clone(),
            failures: std::sync::Mutex::new(Streak::default()),
            backoff: std::sync::Mutex::new(Backoff::default()),
        };
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(MAX_QUEUE)
            .with_max_export_batch_size(MAX_BATCH)
            .with_scheduled_delay(SCHEDULE)
            .build();
        let processor = BatchLogProcessor::builder(exporter)
            .with_batch_config(batch)
            .build();
        let provider = SdkLoggerProvider::builder()
            .with_resource(resource)
            .with_log_processor(processor)
            .build();
        let logger = provider.logger("retina-agent");
        Ok(LogOutput {
            provider,
            logger,
            stats,
            endpoint,
        })
    }

    pub(crate) fn endpoint(&self) -> &str {
        &self.endpoint
    }

    pub(crate) fn stats(&self) -> Arc<LogStats> {
        self.stats.clone()
    }

    /// A new record to fill and [`Self::emit`].
    pub(crate) fn record(&self) -> SdkLogRecord {
        self.logger.create_log_record()
    }

    /// Queues `record`, or counts it dropped when [`MAX_QUEUE`] records wait already.
    pub(crate) fn emit(&self, mut record: SdkLogRecord) {
        let queued = self.stats.queued.fetch_add(1, Ordering::Relaxed);
        if queued >= MAX_QUEUE as u64 {
            self.stats.queued.fetch_sub(1, Ordering::Relaxed);
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        record.set_observed_timestamp(std::time::SystemTime::now());
        self.logger.emit(record);
    }

    /// Exports what waits and stops the processor, within `deadline`. The processor's
    /// thread exports on the daemon's runtime, so it is waited for on a blocking thread.
    pub(crate) async fn shutdown(self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        let provider = self.provider;
        let task = tokio::task::spawn_blocking(move || provider.shutdown_with_timeout(left));
        match tokio::time::timeout(left, task).await {
            Ok(Ok(Ok(()))) => tracing::debug!("OTLP log export flushed"),
            Ok(Ok(Err(e))) => tracing::warn!("flushing the OTLP log export: {e}"),
            Ok(Err(e)) => tracing::warn!("flushing the OTLP log export: {e}"),
            Err(_) => tracing::warn!("flushing the OTLP log export did not finish in time"),
        }
    }
}

#[cfg(test)]
mod tests;
