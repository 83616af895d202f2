//! Collectors: each reads one kernel source into state it keeps between cycles.
//!
//! The contract every collector keeps: after the first few cycles (interfaces discovered,
//! names fetched, buffers sized), `collect` allocates nothing, and `visit` never does.

pub mod conntrack;
pub mod drops;
pub mod ethtool;
pub(crate) mod interfaces;
pub mod netdev;
pub mod netstat;
pub mod procfile;
pub mod qdisc;
pub mod softnet;
pub mod tcp_events;

use crate::{
    kernel::links::Links,
    model::{Metric, Visitor},
};

/// The error a collection cycle can end with. Each collector returns its own typed error
/// (with the interface, path or program it concerns) behind this box.
pub type CollectError = Box<dyn std::error::Error + Send + Sync + 'static>;

pub trait Collector: Send {
    /// Short stable name (`drops`, `ethtool`, `ethtool_link`, `netdev`, `netstat`, ...),
    /// used in logs and in self-telemetry.
    fn name(&self) -> &'static str;

    /// Every metric this collector can emit, so exporters can register instruments once.
    fn metrics(&self) -> &'static [&'static Metric];

    /// Reads the kernel's current values into the collector's own state. `links` is the
    /// host namespace's interface table, refreshed by one rtnetlink dump at the start of
    /// this cycle.
    fn collect(&mut self, links: &Links) -> Result<(), CollectError>;

    /// Hands every data point from the last successful `collect` to `visitor`.
    fn visit(&self, visitor: &mut dyn Visitor);
}

/// The shape of the collectors that read procfs files again every cycle and need no
/// interface table (`conntrack`, `softnet`, `netstat`): each says its name, its metrics,
/// how it reads and what it holds, and is a [`Collector`] by that.
pub trait ProcCollector: Send {
    /// [`Collector::name`].
    const NAME: &'static str;
    /// [`Collector::metrics`].
    const METRICS: &'static [&'static Metric];
    type Error: std::error::Error + Send + Sync + 'static;

    /// Reads the files again ([`Collector::collect`]).
    fn read(&mut self) -> Result<(), Self::Error>;

    /// Hands every data point from the last successful read to `visitor`
    /// ([`Collector::visit`]).
    fn points(&self, visitor: &mut dyn Visitor);
}

impl<T: ProcCollector> Collector for T {
    fn name(&self) -> &'static str {
        T::NAME
    }

    fn metrics(&self) -> &'static [&'static Metric] {
        T::METRICS
    }

    fn collect(&mut self, _links: &Links) -> Result<(), CollectError> {
        Ok(self.read()?)
    }

    fn visit(&self, visitor: &mut dyn Visitor) {
        self.points(visitor);
    }
}
