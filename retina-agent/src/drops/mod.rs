//! Kernel packet drops: the eBPF probe, the kernel's reason names, and the collector.

pub mod collector;
pub mod kallsyms;
pub mod locations;
pub mod probe;
pub mod reasons;

pub use collector::DropCollector;
