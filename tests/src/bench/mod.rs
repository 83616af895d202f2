//! The pieces of `retina-bench` (see `src/bin/retina-bench.rs` and docs/performance.md).

pub mod agent_run;
pub mod bpf;
pub mod cycle;
pub mod ebpf;
pub mod export;
pub mod floors;
pub mod net;
pub mod node_exporter;
pub mod report;
pub mod soak;
pub mod sys;
pub mod workload;
