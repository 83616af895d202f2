//! retina-agent: kernel packet drops by reason, NIC driver statistics, interface and
//! netstat counters, collected without per-cycle allocation and exported as metrics.
//!
//! The library's one public entry point is [`main`], which the binary calls. The modules
//! are crate-private, so rustc reports what nothing uses. The integration tests, the bench
//! and the fuzz targets reach inside through the `internals` feature, which makes the
//! modules public; nothing else enables it (`cargo xtask clippy` lints the crate without
//! it too, so dead code cannot hide behind the tests). Inside the modules, `pub` marks what
//! those crates use and `pub(crate)` the rest; what only they call is
//! `#[cfg(feature = "internals")]`, what the unit tests call too
//! `#[cfg(any(test, feature = "internals"))]`, so the binary carries none of it.

mod app;

pub use app::main;

/// Declares the crate's modules: `pub` with the `internals` feature, `pub(crate)` without.
macro_rules! modules {
    ($($(#[$doc:meta])* $name:ident;)*) => {
        $(
            $(#[$doc])*
            #[cfg(feature = "internals")]
            pub mod $name;
            $(#[$doc])*
            #[cfg(not(feature = "internals"))]
            pub(crate) mod $name;
        )*
    };
}

modules! {
    agent;
    cli;
    collectors;
    commands;
    config;
    duration;
    ebpf_log;
    export;
    fdshortage;
    filter;
    fsutil;
    kernel;
    memory;
    model;
    notify;
    ratelimit;
    report;
    workload;
}

/// The build script's git description, tested here (build scripts have no test harness).
#[cfg(test)]
#[path = "../build/git.rs"]
mod build_git;
