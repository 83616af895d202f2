//! `cargo xtask bench`: builds the release agent and the bench binary, then runs the
//! bench as root (see docs/performance.md for what it measures and the latest figures).
//!
//! Not part of `cargo xtask test`: it takes minutes and its figures depend on the machine.
//! The bench is the `retina-bench` crate (`bench/`), a default workspace member, so a plain
//! `cargo build` or `cargo test` keeps it compiling.

use std::{path::Path, process::Command};

use anyhow::{Result, bail};

use crate::{
    build::{self, Profile},
    provision,
    util::{self, Privilege, Workspace},
};

/// Debian packages the bench needs: the peer it compares with, `ip`, and the venv for the
/// OTLP collector (`rotel`, from [`provision::PYPI_PACKAGES`]). Kept out of
/// [`provision::APT_PACKAGES`] so that `cargo xtask test` does not install them.
const BENCH_APT_PACKAGES: &[&str] = &[
    "prometheus-node-exporter",
    "iproute2",
    "python3",
    "python3-venv",
];

#[derive(clap::Args)]
pub struct Args {
    /// Veth pair counts to measure with, e.g. `64,256` (default).
    #[arg(long, value_name = "N,N...")]
    interfaces: Option<String>,
    /// Measured collection cycles per interface count (default 2000, --quick 300).
    #[arg(long)]
    cycles: Option<usize>,
    /// Memory soak cycles (default 100000, --quick 5000).
    #[arg(long)]
    soak_cycles: Option<usize>,
    /// A shorter run (under 3 minutes once built).
    #[arg(long)]
    quick: bool,
    /// Extra arguments for the bench binary, after `--` (`--only cycle,ebpf`, `--flood N`,
    /// `--scrapes K`, `--agent-seconds S`; see `retina-bench --help`).
    #[arg(last = true, value_name = "BENCH ARGS")]
    extra: Vec<String>,
}

pub fn run(args: &Args) -> Result<()> {
    let privilege = util::privilege("`cargo xtask bench` (veths, namespaces, eBPF)")?;
    let ws = Workspace::locate()?;

    util::banner("provisioning: Debian packages, Python venv (rotel)");
    provision::apt_packages(BENCH_APT_PACKAGES, privilege)?;
    let rotel = match provision::python_venv(&ws) {
        Ok(Some(bin)) => rotel_agent(&bin),
        Ok(None) => None,
        Err(err) => {
            eprintln!("warning: no Python venv ({err:#}): the soak exports to a TCP sink");
            None
        }
    };

    let built = build::build(&ws, Profile::Release)?;
    util::banner("building the bench (release)");
    let mut cmd = util::cargo();
    cmd.current_dir(&ws.root)
        .env("RETINA_EBPF_OBJECT", &built.ebpf_object)
        .args(["build", "--release", "--package", "retina-bench"])
        .args(["--bin", "retina-bench"]);
    util::run(&mut cmd)?;
    let bench = ws.target_dir.join("release").join("retina-bench");
    if !bench.is_file() {
        bail!("the build succeeded but {} does not exist", bench.display());
    }

    let out_dir = ws.target_dir.join("bench");
    let stamp = util::capture(Command::new("date").args(["-u", "+%Y%m%dT%H%M%SZ"]))?;
    let out = out_dir.join(format!("retina-bench-{}.json", stamp.trim()));
    let mut cmd = match privilege {
        Privilege::Direct => Command::new(&bench),
        Privilege::Sudo => {
            let mut cmd = Command::new("sudo");
            cmd.arg("-E").arg(&bench);
            cmd
        }
    };
    cmd.current_dir(&ws.root)
        .arg("--agent-bin")
        .arg(&built.agent)
        .arg("--out")
        .arg(&out);
    if let Some(r) = &rotel {
        cmd.arg("--rotel").arg(r);
    }
    if let Some(i) = &args.interfaces {
        cmd.args(["--interfaces", i]);
    }
    if let Some(c) = args.cycles {
        cmd.args(["--cycles", &c.to_string()]);
    }
    if let Some(c) = args.soak_cycles {
        cmd.args(["--soak-cycles", &c.to_string()]);
    }
    if args.quick {
        cmd.arg("--quick");
    }
    cmd.args(&args.extra);
    util::banner("running the bench");
    util::run(&mut cmd)
}

/// `rotel-agent` inside the `rotel` wheel of the venv whose `bin/` is `venv_bin`.
fn rotel_agent(venv_bin: &Path) -> Option<std::path::PathBuf> {
    let out = util::probe(Command::new(venv_bin.join("python3")).args([
        "-c",
        "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
    ]))?;
    let path = std::path::PathBuf::from(out.trim());
    path.is_file().then_some(path)
}
