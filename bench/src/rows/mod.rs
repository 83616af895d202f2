//! The table rows of each section, from its measurement (the figures come from the modules
//! of the same name at the crate root).

pub mod agent;
pub mod cycle;
pub mod ebpf;
pub mod export;
pub mod flood;
pub mod flows_flood;
pub mod node_exporter;
pub mod soak;
pub mod tcp_events;
pub mod workload;

/// Microseconds, in ms from 1000 µs on.
pub fn fmt_us(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.3} ms", v / 1000.0)
    } else {
        format!("{v:.2} µs")
    }
}
