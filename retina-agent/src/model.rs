//! The agent's metric model: what every collector exposes and every output reads.
//!
//! A collector keeps the kernel's latest values in its own state; outputs (the snapshot
//! printer, the OTLP/Prometheus exporter, the daemon's summary) visit those values. A data
//! point's attributes are `opentelemetry::KeyValue`s built once when a series first appears
//! (interface names as shared `Arc<str>`, keys as `&'static str`), so visiting allocates
//! nothing.
//!
//! [`Workload`] is the one value every layer passes along with a series: the pod,
//! container or service of a network namespace, found by `crate::workload` and kept on the
//! interfaces of `crate::kernel::links`, so both depend on it here.

use std::sync::Arc;

use opentelemetry::{KeyValue, Value};

/// Puts a series' attribute set in key order, once, when the series is made (sorting a set
/// of a few attributes in place allocates nothing). String values are best shared
/// (`Arc<str>`) or static: the SDK clones a set twice per observation on every collect of an
/// observable instrument, and an owned string is copied each time. The OpenTelemetry SDK looks every
/// observation up as given and then sorted by key, and an observable instrument's map is
/// rebuilt from empty on every collect: a set given out of order is stored under both
/// forms, which doubles the series' entries in that map and the work of draining it.
pub(crate) fn in_key_order<A: AsMut<[KeyValue]>>(mut attrs: A) -> A {
    attrs.as_mut().sort_unstable_by(|a, b| a.key.cmp(&b.key));
    attrs
}

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

/// The workload a cgroup path names (pod, container, service, delegated user); empty for
/// one that names none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    /// `k8s.pod.uid`.
    pub pod_uid: Option<Arc<str>>,
    /// `container.id`.
    pub(crate) container_id: Option<Arc<str>>,
    /// The systemd service unit (`systemd.unit`), for processes outside containers.
    pub(crate) unit: Option<Arc<str>>,
    /// `user.id`: the uid a cgroup subtree was delegated to (its directory's owner), for a
    /// cgroup in or below one. Such a cgroup gives nothing else but the unit the
    /// delegated directory itself is (`user@1000.service`): its name below is the user's.
    pub(crate) user_id: Option<u32>,
}

impl Workload {
    pub(crate) fn is_empty(&self) -> bool {
        self.pod_uid.is_none()
            && self.container_id.is_none()
            && self.unit.is_none()
            && self.user_id.is_none()
    }

    /// What two processes of one namespace have in common: each field kept only where
    /// both agree.
    pub(crate) fn common(&self, other: &Workload) -> Workload {
        let same =
            |a: &Option<Arc<str>>, b: &Option<Arc<str>>| if a == b { a.clone() } else { None };
        Workload {
            pod_uid: same(&self.pod_uid, &other.pod_uid),
            container_id: same(&self.container_id, &other.container_id),
            unit: same(&self.unit, &other.unit),
            user_id: if self.user_id == other.user_id {
                self.user_id
            } else {
                None
            },
        }
    }

    /// Appends the workload's attributes.
    pub(crate) fn push_attributes(&self, out: &mut Vec<KeyValue>) {
        let mut push = |key: &'static str, v: &Option<Arc<str>>| {
            if let Some(v) = v {
                out.push(KeyValue::new(key, Value::String(v.clone().into())));
            }
        };
        push(attr::CONTAINER_ID, &self.container_id);
        push(attr::POD_UID, &self.pod_uid);
        push(attr::SYSTEMD_UNIT, &self.unit);
        if let Some(uid) = self.user_id {
            out.push(KeyValue::new(attr::USER_ID, Arc::<str>::from(uid.to_string())));
        }
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
    /// The [`super::Workload`]'s keys: OpenTelemetry semantic conventions for the pod and
    /// the container; `systemd.unit` is the agent's own (the conventions have none).
    pub(crate) const POD_UID: &str = "k8s.pod.uid";
    pub(crate) const CONTAINER_ID: &str = "container.id";
    pub(crate) const SYSTEMD_UNIT: &str = "systemd.unit";
    /// The uid a cgroup subtree was delegated to (OpenTelemetry's `user.id`).
    pub(crate) const USER_ID: &str = "user.id";
}
