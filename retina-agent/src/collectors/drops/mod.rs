//! Kernel packet drops: the eBPF probe, the kernel's reason names, and the collector.
//!
//! The commands use three entry points: [`Builder`] makes the collector (for `run` and
//! `snapshot`), [`preflight`] is what `check` asks of the probe, and [`Hook`] is how the
//! probe attaches.

pub mod builder;
pub mod collector;
pub mod flows;
pub mod kallsyms;
pub mod locations;
pub mod preflight;
pub mod probe;
pub mod protocols;
pub mod reasons;

pub use builder::Builder;
pub use collector::DropCollector;
pub use probe::Hook;
