//! The bench's options and the sections it knows.

use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct Opts {
    /// Veth pairs to measure with (host ends in the host namespace, peers in a bench
    /// namespace), in increasing order; eth0 and lo come on top.
    #[arg(long, value_delimiter = ',', default_value = "64,256")]
    pub interfaces: Vec<usize>,
    /// Measured collection cycles per interface count [default: 2000, --quick 300].
    #[arg(long)]
    pub cycles: Option<usize>,
    /// Memory soak cycles [default: 100000, --quick 5000].
    #[arg(long)]
    pub soak_cycles: Option<usize>,
    /// node_exporter scrapes per interface count [default: 20, --quick 5].
    #[arg(long)]
    pub scrapes: Option<usize>,
    /// Measured OTLP exports and Prometheus scrapes per interface count [default: 100,
    /// --quick 20].
    #[arg(long)]
    pub exports: Option<usize>,
    /// Datagrams dropped for the eBPF measurement [default: 2000000, --quick 1000000].
    #[arg(long)]
    pub flood: Option<u64>,
    /// TCP connects refused for the TCP event measurement [default: 50000, --quick 20000].
    #[arg(long)]
    pub connects: Option<u64>,
    /// Seconds the real daemon and node_exporter run side by side [default: 120, --quick 30].
    #[arg(long)]
    pub agent_seconds: Option<u64>,
    /// A shorter run (under 3 minutes).
    #[arg(long)]
    pub quick: bool,
    /// Sections to run: cycle, node-exporter, export, ebpf, tcp, soak, agent, workload, flood,
    /// netns [default: all].
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// The release agent binary, for section 7 [default: next to this binary].
    #[arg(long)]
    pub agent_bin: Option<PathBuf>,
    /// Pods made for the workload section [default: 256].
    #[arg(long, default_value_t = 256)]
    pub pods: usize,
    #[arg(long, default_value = "/usr/bin/prometheus-node-exporter")]
    pub node_exporter: PathBuf,
    /// rotel-agent (PyPI `rotel`), the OTLP collector for sections 6 and 7 [env:
    /// RETINA_ROTEL_AGENT; default: a TCP listener in the soak, none in section 7].
    #[arg(long, env = "RETINA_ROTEL_AGENT")]
    pub rotel: Option<PathBuf>,
    /// The soak's OTLP collector: `rotel` (needs --rotel), `tcp` (accepts and closes) or
    /// `none` (no export) [default: rotel when available, else tcp].
    #[arg(long)]
    pub soak_export: Option<String>,
    /// JSON report [default: target/bench/retina-bench.json].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub const SECTIONS: [&str; 11] = [
    "cycle",
    "node-exporter",
    "export",
    "ebpf",
    "tcp",
    "soak",
    "agent",
    "workload",
    "flood",
    "netns",
    "flows-flood",
];

impl Opts {
    pub fn pick<T>(&self, given: Option<T>, full: T, quick: T) -> T {
        given.unwrap_or(if self.quick { quick } else { full })
    }

    pub fn runs(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }
}
