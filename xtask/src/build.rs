//! `cargo xtask build`: the eBPF object (nightly, bpf-linker, always release) and the agent
//! (the default toolchain, stable), which embeds the object via `RETINA_EBPF_OBJECT`.

use std::{ffi::OsString, path::PathBuf, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{
    provision::{self, EbpfToolchain},
    util::{self, Workspace},
};

pub const EBPF_TARGET: &str = "bpfel-unknown-none";
const EBPF_PACKAGE: &str = "retina-ebpf";
const AGENT_PACKAGE: &str = "retina-agent";

#[derive(clap::Args)]
pub struct Args {
    /// Build the agent with the release profile (the eBPF object always is).
    #[arg(long)]
    pub release: bool,
}

pub fn run(args: &Args) -> Result<()> {
    let ws = Workspace::locate()?;
    let built = build(&ws, Profile::from_release(args.release))?;
    eprintln!("eBPF object: {}", built.ebpf_object.display());
    eprintln!("agent:       {}", built.agent.display());
    Ok(())
}

#[derive(Clone, Copy)]
pub enum Profile {
    Debug,
    Release,
}

impl Profile {
    pub fn from_release(release: bool) -> Self {
        if release { Self::Release } else { Self::Debug }
    }

    /// The directory under the target dir.
    pub fn dir(self) -> &'static str {
        match self {
            Self::Debug => "debug",
            Self::Release => "release",
        }
    }

    /// Cargo flags selecting this profile.
    pub fn flags(self) -> &'static [&'static str] {
        match self {
            Self::Debug => &[],
            Self::Release => &["--release"],
        }
    }
}

/// What a build produced (absolute paths).
pub struct Built {
    pub ebpf_object: PathBuf,
    pub agent: PathBuf,
}

/// Provisions the eBPF toolchain, then builds the eBPF object and the agent.
pub fn build(ws: &Workspace, profile: Profile) -> Result<Built> {
    util::banner("provisioning: nightly rust-src, bpf-linker");
    let toolchain = provision::ebpf_toolchain(ws, &[])?;
    let ebpf_object = ebpf(ws, &toolchain)?;
    util::banner("building the agent");
    let mut cmd = util::cargo();
    cmd.current_dir(&ws.root)
        .env("RETINA_EBPF_OBJECT", &ebpf_object)
        .args(["build", "--package", AGENT_PACKAGE])
        .args(profile.flags());
    util::run(&mut cmd)?;
    let agent = ws.target_dir.join(profile.dir()).join(AGENT_PACKAGE);
    if !agent.is_file() {
        bail!("the build succeeded but {} does not exist", agent.display());
    }
    Ok(Built { ebpf_object, agent })
}

/// Builds the eBPF object and returns its path.
pub fn ebpf(ws: &Workspace, toolchain: &EbpfToolchain) -> Result<PathBuf> {
    util::banner("building the eBPF program (nightly, bpfel-unknown-none)");
    let mut cmd = ebpf_cargo(ws, toolchain)?;
    cmd.args(["build", "--release"]).args(ebpf_target_args());
    util::run(&mut cmd).context("could not build the eBPF program")?;
    let object = ws
        .target_dir
        .join(EBPF_TARGET)
        .join("release")
        .join(EBPF_PACKAGE);
    if !object.is_file() {
        bail!(
            "the eBPF build succeeded but {} does not exist",
            object.display()
        );
    }
    Ok(object)
}

/// `--target bpfel-unknown-none -Z build-std=core -p retina-ebpf`.
pub fn ebpf_target_args() -> [&'static str; 6] {
    [
        "--target",
        EBPF_TARGET,
        "-Z",
        "build-std=core",
        "--package",
        EBPF_PACKAGE,
    ]
}

/// Nightly cargo in the eBPF crate's directory, with bpf-linker on PATH and the flags
/// aya-build uses: full debug info and `--btf`, so bpf-linker emits BTF (which the kernel
/// verifier and aya use for function/line info and global data).
pub fn ebpf_cargo(ws: &Workspace, toolchain: &EbpfToolchain) -> Result<Command> {
    let mut cmd = toolchain.cargo()?;
    let mut rustflags = OsString::from("-Cdebuginfo=2");
    rustflags.push("\x1f-Clink-arg=--btf");
    cmd.current_dir(ws.root.join(EBPF_PACKAGE))
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags);
    Ok(cmd)
}
