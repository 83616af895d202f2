//! `cargo xtask clippy` and `cargo xtask fmt`.

use anyhow::{Context as _, Result, bail};

use crate::{
    build, provision,
    util::{self, Workspace},
};

/// Clippy with `-D warnings`: the host crates on the default toolchain, the eBPF crate on
/// nightly for its target. The eBPF object is built first because the agent embeds it.
pub fn clippy() -> Result<()> {
    let ws = Workspace::locate()?;
    util::banner("provisioning: clippy, nightly rust-src + clippy, bpf-linker");
    provision::rustup_components(None, &["clippy"])?;
    let toolchain = provision::ebpf_toolchain(&ws, &["clippy"])?;
    let object = build::ebpf(&ws, &toolchain)?;

    util::banner("clippy: workspace (host)");
    let mut host = util::cargo();
    host.current_dir(&ws.root)
        .env("RETINA_EBPF_OBJECT", &object)
        .args([
            "clippy",
            "--workspace",
            "--exclude",
            "retina-ebpf",
            "--all-targets",
        ])
        .args(["--", "-D", "warnings"]);
    // Run every lint, then fail if any did, so CI shows all findings at once.
    let mut host = util::run(&mut host);
    if let Err(err) = &host {
        eprintln!("{err:#}");
    }

    // Alone, the agent is built without the `internals` feature the tests, the bench and
    // the fuzz targets turn on: its modules are crate-private, so rustc reports dead code.
    util::banner("clippy: retina-agent alone (dead code)");
    let mut agent = util::cargo();
    agent
        .current_dir(&ws.root)
        .env("RETINA_EBPF_OBJECT", &object)
        .args(["clippy", "-p", "retina-agent", "--all-targets"])
        .args(["--", "-D", "warnings"]);
    if let Err(err) = util::run(&mut agent) {
        eprintln!("{err:#}");
        if host.is_ok() {
            host = Err(err);
        }
    }

    util::banner("clippy: eBPF crate (nightly)");
    let mut ebpf = build::ebpf_cargo(&ws, &toolchain)?;
    ebpf.arg("clippy")
        .args(build::ebpf_target_args())
        .args(["--", "-D", "warnings"]);
    let ebpf = util::run(&mut ebpf);
    if let Err(err) = &ebpf {
        eprintln!("{err:#}");
    }

    match (host.is_err(), ebpf.is_err()) {
        (false, false) => Ok(()),
        (true, false) => bail!("clippy failed on the host crates"),
        (false, true) => bail!("clippy failed on the eBPF crate"),
        (true, true) => bail!("clippy failed on the host crates and the eBPF crate"),
    }
}

#[derive(clap::Args)]
pub struct FmtArgs {
    /// Rewrite the files instead of only checking them.
    #[arg(long)]
    fix: bool,
}

/// The workspace, then the fuzz crate (`fuzz/`, outside the workspace).
pub fn fmt(args: &FmtArgs) -> Result<()> {
    let ws = Workspace::locate()?;
    provision::rustup_components(None, &["rustfmt"])?;
    let fuzz_manifest = ws.root.join("fuzz").join("Cargo.toml");
    for manifest in [None, Some(&fuzz_manifest)] {
        let mut cmd = util::cargo();
        cmd.current_dir(&ws.root).args(["fmt", "--all"]);
        if let Some(m) = manifest {
            cmd.arg("--manifest-path").arg(m);
        }
        if args.fix {
            util::run(&mut cmd)?;
            continue;
        }
        cmd.args(["--", "--check"]);
        util::run(&mut cmd).context("formatting differs: run `cargo xtask fmt --fix`")?;
    }
    Ok(())
}
