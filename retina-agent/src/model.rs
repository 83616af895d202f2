//! The agent's metric model: what every collector exposes and every output reads.
//!
//! A collector keeps the kernel's latest values in its own state; outputs (the snapshot
//! printer, the OTLP/Prometheus exporter, the daemon's summary) visit those values. A data
//! point's attributes are `opentelemetry::KeyValue`s built once when a series first appears
//! (interface names as shared `Arc<str>`, keys as `&'static str`), so visiting allocates
//! nothing.

use opentelemetry::KeyValue;

/// How a metric's values behave over time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A monotonic running total kept by the kernel: exported as a cumulative sum, so
    /// `rate()` works; the snapshot prints its change over the window.
    Counter,
    /// A value that goes up and down (link speed, ring size, a duration).
    Gauge,
}

impl Kind {
    /// The name used in the snapshot's JSON (`"sum"` or `"gauge"`, as in OTLP).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "sum",
            Kind::Gauge => "gauge",
        }
    }
}

/// A metric's identity, as documented in `docs/metrics.md`.
#[derive(Debug, PartialEq, Eq)]
pub struct Metric {
    /// OpenTelemetry name, e.g. `retina.drop.count`.
    pub name: &'static str,
    /// UCUM unit, e.g. `{packet}` or `By`.
    pub(crate) unit: &'static str,
    pub(crate) description: &'static str,
    pub(crate) kind: Kind,
}

/// One value of a data point.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    U64(u64),
    F64(f64),
}

impl Number {
    pub fn as_f64(self) -> f64 {
        match self {
            Number::U64(v) => v as f64,
            Number::F64(v) => v,
        }
    }
}

/// Receives every data point a collector currently holds.
pub trait Visitor {
    fn point(&mut self, metric: &'static Metric, attributes: &[KeyValue], value: Number);
}

impl<F: FnMut(&'static Metric, &[KeyValue], Number)> Visitor for F {
    fn point(&mut self, metric: &'static Metric, attributes: &[KeyValue], value: Number) {
        self(metric, attributes, value)
    }
}

/// Attribute keys used across collectors (OpenTelemetry semantic conventions where one
/// exists).
pub mod attr {
    pub(crate) const INTERFACE_NAME: &str = "network.interface.name";
    pub(crate) const INTERFACE_INDEX: &str = "network.interface.index";
    pub(crate) const IO_DIRECTION: &str = "network.io.direction";
    pub const NETWORK_TYPE: &str = "network.type";
    pub const NETNS_INODE: &str = "network.namespace.inode";
    pub(crate) const NETNS_NAME: &str = "network.namespace.name";
    pub const DROP_REASON: &str = "drop.reason";
    pub(crate) const DROP_LOCATION: &str = "drop.location";
}
