//! `cargo xtask`: the one entry point to build, run, lint and test retina-agent.
//!
//! Each subcommand lives in its own module with its own `clap::Args` struct and a
//! `run(args)` function; add new ones (`bench`, `install`, `package`, `test-kernel`, ...)
//! the same way and register them in [`Command`].
//!
//! Shared pieces: [`util`] (workspace layout, running commands, privileges), [`provision`]
//! (nightly components, bpf-linker, Debian packages, the Python venv) and [`build`] (the
//! eBPF object and the agent binary).

mod bench;
mod build;
mod fuzz;
mod install;
mod lint;
mod package;
mod provision;
mod run;
mod test;
mod test_kernel;
mod util;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, run, lint and test retina-agent (installs what it needs into .tools/)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the eBPF object (nightly + bpf-linker) and the agent binary (stable).
    Build(build::Args),
    /// Build, then run the agent as root (via `sudo -E` when not root).
    Run(run::Args),
    /// Install test dependencies, build, then run unit and privileged integration tests.
    Test(test::Args),
    /// Build (release), then measure the agent against the kernel floor and node_exporter;
    /// see docs/performance.md.
    Bench(bench::Args),
    /// Boot other kernels (default: Debian's 6.1 and 6.12 cloud kernels) under QEMU and run
    /// the integration tests inside; see docs/kernels.md.
    TestKernel(test_kernel::Args),
    /// Build the fuzz targets of `fuzz/` (cargo-fuzz, nightly) and run each from its seed
    /// corpus; see docs/reliability.md.
    Fuzz(fuzz::Args),
    /// Clippy with `-D warnings` on the workspace (stable) and on the eBPF crate (nightly).
    Clippy,
    /// Check formatting of the whole workspace and of `fuzz/` (`--fix` to rewrite files).
    Fmt(lint::FmtArgs),
    /// Build (release) and install the agent, its systemd unit and default configuration.
    Install(install::Args),
    /// Build a Debian package: target/debian/retina-agent_<version>_<arch>.deb.
    Package(package::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Build(args) => build::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Test(args) => test::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::TestKernel(args) => test_kernel::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Clippy => lint::clippy(),
        Command::Fmt(args) => lint::fmt(&args),
        Command::Install(args) => install::run(&args),
        Command::Package(args) => package::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("\nxtask error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
