//! retina-agent: kernel packet drops by reason, NIC driver statistics, interface and
//! netstat counters, collected without per-cycle allocation and exported as metrics.

pub mod agent;
pub mod cli;
pub mod collectors;
pub mod commands;
pub mod config;
pub mod ebpf_log;
pub mod export;
pub mod filter;
pub mod fsutil;
pub mod kernel;
pub mod memory;
pub mod model;
pub mod notify;
pub mod ratelimit;
pub mod workload;

/// The build script's git description, tested here (build scripts have no test harness).
#[cfg(test)]
#[path = "../build/git.rs"]
mod build_git;
