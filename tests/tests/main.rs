//! The privileged end-to-end tests, as one test binary (aya's layout): each file of
//! `tests/tests/` (or directory with a `mod.rs`) is a module here, so the whole suite
//! links the agent once instead of once per file. Test names carry the module path
//! (`drops::both_hooks_count_exactly`); a filter such as `cargo xtask test -- drops::`
//! picks one file. The QEMU guests run the suite module by module
//! (`xtask/src/test_kernel/suite.rs`, whose exclusion table names modules and tests).
//!
//! A new test file: `tests/tests/NAME.rs` plus a `mod NAME;` line below (kept sorted).
//! `cargo xtask test` refuses to run while a file of `tests/tests/` is not declared here.

// Every module may count allocations (`retina_tests::alloc`); the counter only counts on
// a thread that switched it on, and otherwise forwards to the system allocator.
#[global_allocator]
static GLOBAL: retina_tests::alloc::Counting = retina_tests::alloc::Counting;

mod alerts;
mod check;
mod config;
mod conntrack;
mod container_runtime;
mod dashboard;
mod deb;
mod degradations;
mod drop_flood;
mod drop_flows;
mod drop_location;
mod drop_trace;
mod drops;
mod ethtool;
mod export;
mod forged_cgroup;
mod hostile;
mod losses;
mod netdev;
mod notify;
mod packaging;
mod qdisc;
mod socket_owner;
mod softnet;
mod tcp_events;
mod workload;
mod workload_netstat;
mod workload_unit;
mod zero_alloc;
