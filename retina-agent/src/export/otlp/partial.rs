//! OTLP partial success, as `opentelemetry-otlp` reports it.
//!
//! When a collector accepts an export but rejects some of its points, the exporter does
//! not return an error: it emits a `tracing` event (`TonicMetricsClient.PartialSuccess`
//! or `HttpMetricsClient.PartialSuccess`, target `opentelemetry-otlp`) with the rejected
//! count and the collector's message. [`layer`] is a `tracing` layer that watches for
//! those events and adds them up here, where the exporter reads them after each export
//! (`retina.agent.export.rejected`). The agent installs it beside its log output in
//! `main`; without it, partial success is not counted.

use std::sync::{
    Mutex,
    atomic::{AtomicU64, Ordering},
};

use tracing::{
    Event, Subscriber,
    field::{Field, Visit},
};
use tracing_subscriber::{Layer, layer::Context};

/// Event names of the exporter's partial-success reports.
const EVENTS: [&str; 2] = [
    "TonicMetricsClient.PartialSuccess",
    "HttpMetricsClient.PartialSuccess",
];
/// The target `opentelemetry-otlp` logs under.
const TARGET: &str = "opentelemetry-otlp";
/// The longest collector message kept.
const MAX_MESSAGE: usize = 512;

/// Rejected data points reported since start.
static REJECTED: AtomicU64 = AtomicU64::new(0);
/// Partial-success answers seen since start.
static ANSWERS: AtomicU64 = AtomicU64::new(0);
/// The collector's last message.
static MESSAGE: Mutex<String> = Mutex::new(String::new());

/// What the collectors said so far: answers with a partial success, rejected points.
/// Public for the fuzz target `otlp` (`fuzz/`).
pub fn totals() -> (u64, u64) {
    (
        ANSWERS.load(Ordering::Relaxed),
        REJECTED.load(Ordering::Relaxed),
    )
}

/// The last message a collector sent with a partial success.
pub(crate) fn last_message() -> String {
    MESSAGE.lock().map(|m| m.clone()).unwrap_or_default()
}

/// The layer that counts partial successes; add it to the process's subscriber. Its filter
/// is static (the exporter's target at WARN), so that every other callsite keeps its
/// cached "never" interest: a dynamic filter here would make each `tracing` event and
/// span of the exporter's crates (h2, hyper, tower create many per request) go through
/// the registry at run time, which multiplied the daemon's CPU time.
pub fn layer<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    PartialSuccess.with_filter(
        tracing_subscriber::filter::Targets::new().with_target(TARGET, tracing::Level::WARN),
    )
}

/// Adds `n` to `total`, stopping at `u64::MAX`: the collector chooses the counts, and a
/// total that wrapped would go backwards (the exporter then counts nothing new).
fn add_saturating(total: &AtomicU64, n: u64) {
    let _ = total.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
        Some(t.saturating_add(n))
    });
}

struct PartialSuccess;

#[derive(Default)]
struct Fields {
    rejected: Option<i64>,
    message: Option<String>,
}

impl Visit for Fields {
    fn record_i64(&mut self, field: &Field, value: i64) {
        if field.name() == "rejected_data_points" {
            self.rejected = Some(value);
        }
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        if field.name() == "rejected_data_points" {
            self.rejected = Some(i64::try_from(value).unwrap_or(i64::MAX));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "error_message" {
            self.message = Some(value.chars().take(MAX_MESSAGE).collect());
        }
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "error_message" {
            let s = format!("{value:?}");
            self.message = Some(s.chars().take(MAX_MESSAGE).collect());
        }
    }
}

impl<S: Subscriber> Layer<S> for PartialSuccess {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let meta = event.metadata();
        if meta.target() != TARGET || !EVENTS.contains(&meta.name()) {
            return;
        }
        let mut f = Fields::default();
        event.record(&mut f);
        let rejected = u64::try_from(f.rejected.unwrap_or(0)).unwrap_or(0);
        add_saturating(&REJECTED, rejected);
        ANSWERS.fetch_add(1, Ordering::Relaxed);
        if let (Some(m), Ok(mut last)) = (f.message, MESSAGE.lock()) {
            *last = m;
        }
    }
}

#[cfg(test)]
mod tests;
