//! Kernel packet drops: the eBPF probe, the kernel's reason names, and the collector.

pub mod builder;
pub mod collector;
pub mod kallsyms;
pub mod locations;
pub mod preflight;
pub mod probe;
pub mod reasons;

pub use builder::{BuildError, Builder};
pub use collector::DropCollector;
pub use probe::Hook;
