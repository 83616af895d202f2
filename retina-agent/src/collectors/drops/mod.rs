//! Kernel packet drops: the eBPF probe, the kernel's reason names, and the collector.
//!
//! The commands use three entry points: [`Builder`] makes the collector (for `run` and
//! `snapshot`), [`preflight`] is what `check` asks of the probe, and [`Hook`] is how the
//! probe attaches. [`DropsConfig`] is the collector's section of the configuration.

pub(crate) mod builder;
pub(crate) mod collector;
pub(crate) mod flow_metrics;
pub mod flows;
pub mod kallsyms;
pub mod locations;
pub(crate) mod preflight;
pub mod probe;
pub mod protocols;
pub mod reasons;

pub(crate) use builder::Builder;
pub use collector::DropCollector;
pub use probe::Hook;

use serde::Deserialize;

/// `[drops]`: the kernel packet drop counter (eBPF on the `kfree_skb` tracepoint).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct DropsConfig {
    /// Whether to load the eBPF probe and count drops by reason.
    pub enabled: bool,
    /// Capacity of the kernel drop map (distinct reason/namespace/interface/protocol keys);
    /// drops beyond it are counted in `retina.drop.overflow.*`.
    pub map_entries: u32,
    /// Add `drop.location` (the kernel function that freed the packet) to the drop series.
    pub locations: bool,
    /// With `locations`: distinct functions named; drops elsewhere go without
    /// `drop.location` and are counted in `retina.drop.location.overflow`.
    pub locations_capacity: u32,
    /// Count drops per flow (5-tuple, reason, namespace, interface) in the kernel and
    /// sample them (`snapshot --flows` turns it on for one look). Off by default.
    pub flows: bool,
    /// With `flows`: capacity of the kernel's LRU flow map; the least recently dropped
    /// flow is evicted beyond it (and counted).
    pub flows_capacity: u32,
    /// With `flows`: sampled drops per second for the node, at most (each CPU gets its
    /// share); the rest are counted, not sent.
    pub flow_events_per_second: u32,
    /// With `flows`: bytes of each sampled packet kept, from its IP header (0 to 128).
    pub flow_snaplen: u32,
    /// `--drop-hook`: how the probe attaches to `kfree_skb` (not a file key).
    #[serde(skip)]
    pub hook: Hook,
}

impl Default for DropsConfig {
    fn default() -> Self {
        DropsConfig {
            enabled: true,
            map_entries: retina_ebpf_common::DEFAULT_DROPS_MAX_ENTRIES,
            locations: false,
            locations_capacity: locations::DEFAULT_CAPACITY,
            flows: false,
            flows_capacity: flows::DEFAULT_CAPACITY,
            flow_events_per_second: flows::DEFAULT_EVENTS_PER_SECOND,
            flow_snaplen: flows::DEFAULT_SNAPLEN,
            hook: Hook::Auto,
        }
    }
}
