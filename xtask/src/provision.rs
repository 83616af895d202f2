//! Installs what the build and the tests need, idempotently and quickly when already done:
//! nightly components, bpf-linker in `.tools/`, Debian packages and a Python venv.

use std::{
    env,
    ffi::OsString,
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::util::{self, Privilege, Workspace};

/// Debian packages the tests (and the tools they drive) need. Append here.
pub const APT_PACKAGES: &[&str] = &[
    "ethtool",
    "nftables",
    "iproute2",
    "bpftool",
    "util-linux",
    "prometheus",
    "systemd",
    "dpkg-dev",
    "strace",
    "openssl",
    "lintian",
    "man-db",
    "iputils-arping",
    // A real container runtime for tests/container_runtime.rs: podman with runc (crun
    // refuses hybrid cgroup hosts), a busybox root file system imported locally.
    "podman",
    "runc",
    "busybox-static",
    // Reads the pcapng `snapshot --pcap` writes (tests/tests/drop_flows.rs).
    "tshark",
];

/// PyPI requirements (pip syntax, e.g. `name==1.2.3`) installed into `.tools/venv`, whose
/// `bin/` is put first on the tests' PATH. Append here.
pub const PYPI_PACKAGES: &[&str] = &["rotel"];

/// Debian packages needed to create the venv, added to [`APT_PACKAGES`] when
/// [`PYPI_PACKAGES`] is not empty.
const VENV_APT_PACKAGES: &[&str] = &["python3", "python3-venv"];

/// The bpf-linker release we build, and the LLVM majors it has a cargo feature for.
pub const BPF_LINKER_VERSION: &str = "0.13.0";
const BPF_LINKER_LLVM_MAJORS: &[u32] = &[21, 22, 23];

/// The cargo-deb release `cargo xtask package` builds into `.tools/` (3.8.0 declares
/// rust-version 1.85 and builds with the workspace's stable toolchain).
pub const CARGO_DEB_VERSION: &str = "3.8.0";

/// The nightly toolchain and bpf-linker, ready to build `bpfel-unknown-none`.
pub struct EbpfToolchain {
    /// `.tools/bin`, holding bpf-linker; must come first on the build's PATH.
    pub bin_dir: PathBuf,
}

impl EbpfToolchain {
    /// `cargo` of the nightly toolchain, isolated from the outer (stable) cargo's
    /// environment, with bpf-linker on PATH.
    pub fn cargo(&self) -> Result<Command> {
        let mut cmd = util::rustup_run("nightly", "cargo");
        cmd.env("PATH", util::path_with(&[&self.bin_dir])?);
        Ok(cmd)
    }
}

/// Makes sure the nightly toolchain has `components` (always `rust-src`) and bpf-linker is
/// built against the nightly's LLVM.
pub fn ebpf_toolchain(ws: &Workspace, components: &[&str]) -> Result<EbpfToolchain> {
    let nightly = nightly()?;
    let mut wanted = vec!["rust-src"];
    wanted.extend(components);
    rustup_components(Some("nightly"), &wanted)?;
    bpf_linker(ws, &nightly)?;
    Ok(EbpfToolchain {
        bin_dir: ws.tools.join("bin"),
    })
}

struct Nightly {
    llvm_major: u32,
    sysroot: PathBuf,
}

fn nightly() -> Result<Nightly> {
    let version = util::capture(util::rustup_run("nightly", "rustc").arg("-vV")).context(
        "the nightly Rust toolchain is needed to build the eBPF program (-Z build-std): \
         install it with `rustup toolchain install nightly --profile minimal`",
    )?;
    let llvm = version
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version:"))
        .map(str::trim)
        .context("`rustc +nightly -vV` reports no LLVM version")?;
    let llvm_major = llvm
        .split('.')
        .next()
        .and_then(|major| major.parse().ok())
        .with_context(|| format!("cannot parse LLVM version {llvm:?} of the nightly rustc"))?;
    let sysroot = util::capture(util::rustup_run("nightly", "rustc").args(["--print", "sysroot"]))?;
    Ok(Nightly {
        llvm_major,
        sysroot: PathBuf::from(sysroot.trim()),
    })
}

/// Adds the rustup `components` missing from `toolchain` (`None`: the active one).
pub fn rustup_components(toolchain: Option<&str>, components: &[&str]) -> Result<()> {
    let mut list = Command::new("rustup");
    list.args(["component", "list", "--installed"]);
    if let Some(toolchain) = toolchain {
        list.args(["--toolchain", toolchain]);
    }
    let installed = util::capture(&mut list)?;
    let missing: Vec<&str> = components
        .iter()
        .copied()
        .filter(|component| !has_component(&installed, component))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut add = Command::new("rustup");
    add.args(["component", "add"]).args(&missing);
    if let Some(toolchain) = toolchain {
        add.args(["--toolchain", toolchain]);
    }
    util::run(&mut add).context("could not add the rustup components")
}

/// Whether `rustup component list --installed` output lists `component`; its lines are
/// `rust-src` or `clippy-x86_64-unknown-linux-gnu`.
fn has_component(installed: &str, component: &str) -> bool {
    installed.lines().map(str::trim).any(|line| {
        line == component
            || line
                .strip_prefix(component)
                .is_some_and(|rest| rest.starts_with('-'))
    })
}

/// Builds bpf-linker into `.tools/bin` unless a working one of the right version is there.
///
/// Debian has no LLVM of the nightly's major, but each rustup toolchain ships a shared
/// libLLVM exporting the C API. bpf-linker links against it through `.tools/llvm/lib`, which
/// holds `libLLVM.so` (for the link) and the library's soname (for the loader, through the
/// binary's rpath). Both point into the nightly sysroot and are refreshed on every run, so
/// after a nightly update the old bpf-linker no longer loads and is rebuilt.
fn bpf_linker(ws: &Workspace, nightly: &Nightly) -> Result<()> {
    let major = nightly.llvm_major;
    let llvm_prefix = ws.tools.join("llvm");
    let libllvm = find_libllvm(&nightly.sysroot.join("lib"), major)?;
    link_libllvm(&llvm_prefix.join("lib"), &libllvm)?;

    let bin = ws.tools.join("bin").join("bpf-linker");
    if bpf_linker_version(&bin).as_deref() == Some(BPF_LINKER_VERSION) {
        return Ok(());
    }
    if !BPF_LINKER_LLVM_MAJORS.contains(&major) {
        bail!(
            "the nightly toolchain uses LLVM {major}, but bpf-linker {BPF_LINKER_VERSION} \
             supports LLVM {BPF_LINKER_LLVM_MAJORS:?}: install a matching nightly \
             (`rustup toolchain install nightly-YYYY-MM-DD`) or update BPF_LINKER_VERSION in \
             xtask/src/provision.rs"
        );
    }
    cxx_toolchain()?;

    util::banner(&format!(
        "building bpf-linker {BPF_LINKER_VERSION} for LLVM {major} into {} (about a minute)",
        ws.tools.display()
    ));
    let mut install = util::cargo();
    install
        // Not inside the workspace, so its config and lock file play no part.
        .current_dir(&ws.tools)
        .env("LLVM_PREFIX", &llvm_prefix)
        // A throw-away target dir: a shared one could reuse a build against an old libLLVM.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .args(["install", "bpf-linker", "--version", BPF_LINKER_VERSION])
        .args(["--locked", "--force", "--no-default-features", "--features"])
        .arg(format!("llvm-{major}"))
        .arg("--root")
        .arg(&ws.tools);
    util::run(&mut install).context("could not build bpf-linker")?;

    match bpf_linker_version(&bin) {
        Some(version) if version == BPF_LINKER_VERSION => Ok(()),
        found => bail!(
            "{} was built but does not run as bpf-linker {BPF_LINKER_VERSION} (got {found:?}); \
             check `ldd {}`",
            bin.display(),
            bin.display()
        ),
    }
}

/// `libLLVM.so.<major>.*-rust-*` in the nightly sysroot's `lib/`.
fn find_libllvm(lib_dir: &Path, major: u32) -> Result<PathBuf> {
    let prefix = format!("libLLVM.so.{major}.");
    let mut found: Vec<PathBuf> = fs::read_dir(lib_dir)
        .with_context(|| format!("cannot list {}", lib_dir.display()))?
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name.starts_with(&prefix) && name.contains("-rust-")
        })
        .map(|entry| entry.path())
        .collect();
    found.sort();
    match found.pop() {
        Some(path) => Ok(path),
        None => bail!(
            "the nightly toolchain has no shared LLVM ({}/{prefix}*-rust-*), which bpf-linker \
             is built against; reinstall it with `rustup toolchain install nightly --force`",
            lib_dir.display()
        ),
    }
}

/// Points `<dir>/libLLVM.so` and `<dir>/<soname of libllvm>` at `libllvm`, removing any
/// other libLLVM link left by an older nightly.
fn link_libllvm(dir: &Path, libllvm: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let soname = libllvm
        .file_name()
        .context("libLLVM path has no file name")?;
    let wanted = [OsString::from("libLLVM.so"), soname.to_os_string()];
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let entry = entry?;
        let stale = !wanted.contains(&entry.file_name())
            || fs::read_link(entry.path()).ok().as_deref() != Some(libllvm);
        if stale {
            fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove {}", entry.path().display()))?;
        }
    }
    for name in &wanted {
        let link = dir.join(name);
        if fs::symlink_metadata(&link).is_err() {
            symlink(libllvm, &link)
                .with_context(|| format!("cannot create the symlink {}", link.display()))?;
        }
    }
    Ok(())
}

/// The version `bin --version` reports (`bpf-linker 0.13.0`), if it runs.
fn bpf_linker_version(bin: &Path) -> Option<String> {
    let out = util::probe(Command::new(bin).arg("--version"))?;
    let mut words = out.split_whitespace();
    (words.next() == Some("bpf-linker"))
        .then(|| words.next().map(str::to_owned))
        .flatten()
}

/// bpf-linker is linked with `cc` against libstdc++. Installs `g++` when missing and we are
/// root on Debian; otherwise explains.
fn cxx_toolchain() -> Result<()> {
    let present = || {
        util::probe(Command::new("cc").arg("-print-file-name=libstdc++.so"))
            .is_some_and(|path| Path::new(path.trim()).is_absolute())
    };
    if present() {
        return Ok(());
    }
    if util::is_root() && util::which("dpkg-query").is_some() {
        apt_packages(&["g++"], Privilege::Direct)?;
        if present() {
            return Ok(());
        }
    }
    bail!(
        "building bpf-linker needs a C compiler (`cc`) and the C++ standard library \
         (libstdc++.so): on Debian, `sudo apt-get install g++`"
    )
}

/// Installs the Debian `packages` that are not installed yet (one `apt-get update` first),
/// as root or through sudo.
pub fn apt_packages(packages: &[&str], privilege: Privilege) -> Result<()> {
    if env::var_os("XTASK_SKIP_APT").is_some_and(|v| v == "1") {
        eprintln!(
            "XTASK_SKIP_APT=1: not checking the Debian packages {}; they must be installed",
            packages.join(" ")
        );
        return Ok(());
    }
    if util::which("dpkg-query").is_none() {
        bail!(
            "no dpkg-query: this is not a Debian-based system. Install the equivalents of the \
             Debian packages `{}`, then set XTASK_SKIP_APT=1",
            packages.join(" ")
        );
    }
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|package| {
            let status =
                util::probe(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]));
            status.as_deref() != Some("install ok installed")
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }

    util::banner(&format!(
        "installing Debian packages: {}",
        missing.join(" ")
    ));
    let apt_get = |args: &[&str]| {
        let mut cmd = match privilege {
            Privilege::Direct => {
                let mut cmd = Command::new("apt-get");
                cmd.env("DEBIAN_FRONTEND", "noninteractive");
                cmd
            }
            Privilege::Sudo => {
                // sudo resets the environment: pass DEBIAN_FRONTEND through `env`.
                let mut cmd = Command::new("sudo");
                cmd.args(["env", "DEBIAN_FRONTEND=noninteractive", "apt-get"]);
                cmd
            }
        };
        cmd.args(args);
        cmd
    };
    util::run(&mut apt_get(&["update"])).context("`apt-get update` failed")?;
    let mut install = apt_get(&["install", "-y", "--no-install-recommends"]);
    install.args(&missing);
    util::run(&mut install).with_context(|| {
        format!(
            "could not install the Debian packages {}",
            missing.join(" ")
        )
    })
}

/// [`APT_PACKAGES`] plus what the venv needs.
pub fn test_apt_packages() -> Vec<&'static str> {
    let mut packages = APT_PACKAGES.to_vec();
    if !PYPI_PACKAGES.is_empty() {
        packages.extend(VENV_APT_PACKAGES);
    }
    packages
}

/// Creates `.tools/venv` with [`PYPI_PACKAGES`] if that list is not empty; returns its
/// `bin/` directory. Skipped quickly when the venv works and already got this list.
pub fn python_venv(ws: &Workspace) -> Result<Option<PathBuf>> {
    if PYPI_PACKAGES.is_empty() {
        return Ok(None);
    }
    let venv = ws.tools.join("venv");
    let bin = venv.join("bin");
    let python = bin.join("python");
    let stamp = venv.join(".xtask-requirements");
    let wanted = PYPI_PACKAGES.join("\n") + "\n";

    let works = util::probe(Command::new(&python).args(["-c", ""])).is_some();
    if works && fs::read_to_string(&stamp).is_ok_and(|done| done == wanted) {
        return Ok(Some(bin));
    }
    util::banner(&format!(
        "installing PyPI packages into {}: {}",
        venv.display(),
        PYPI_PACKAGES.join(" ")
    ));
    if !works {
        if venv.exists() {
            fs::remove_dir_all(&venv)
                .with_context(|| format!("cannot remove the broken venv {}", venv.display()))?;
        }
        util::run(Command::new("python3").args(["-m", "venv"]).arg(&venv))
            .context("could not create the Python venv (Debian: `apt-get install python3-venv`)")?;
    }
    util::run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--no-input",
            ])
            .args(PYPI_PACKAGES),
    )
    .context("could not install the PyPI packages")?;
    fs::write(&stamp, wanted).with_context(|| format!("cannot write {}", stamp.display()))?;
    Ok(Some(bin))
}

/// `rotel-agent`, the collector binary inside the `rotel` wheel of the venv whose `bin/` is
/// `venv_bin` (what the export tests run, on the host and in the QEMU guests).
pub fn rotel_agent(venv_bin: &Path) -> Result<PathBuf> {
    let out = util::capture(Command::new(venv_bin.join("python3")).args([
        "-c",
        "import os, rotel; print(os.path.join(os.path.dirname(rotel.__file__), 'rotel-agent'))",
    ]))
    .context("cannot locate rotel-agent in the venv (PyPI `rotel`)")?;
    let path = PathBuf::from(out.trim());
    if !path.is_file() {
        bail!("the `rotel` wheel has no rotel-agent at {}", path.display());
    }
    Ok(path)
}

/// `.tools/bin/cargo-deb`, built (`cargo install --locked`, about a minute) unless the one
/// there already reports [`CARGO_DEB_VERSION`].
pub fn cargo_deb(ws: &Workspace) -> Result<PathBuf> {
    cargo_tool(ws, "cargo-deb", CARGO_DEB_VERSION, "about a minute")
}

/// The cargo-fuzz release `cargo xtask fuzz` builds into `.tools/` (it runs on nightly
/// and drives libFuzzer through `libfuzzer-sys`).
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// `.tools/bin/cargo-fuzz`, built (`cargo install --locked`, about a minute and a half)
/// unless the one there already reports [`CARGO_FUZZ_VERSION`].
pub fn cargo_fuzz(ws: &Workspace) -> Result<PathBuf> {
    cargo_tool(
        ws,
        "cargo-fuzz",
        CARGO_FUZZ_VERSION,
        "about a minute and a half",
    )
}

/// `.tools/bin/<name>`, built with `cargo install --locked` (which takes `takes`) unless the
/// one there already reports `<name> <version>`.
fn cargo_tool(ws: &Workspace, name: &str, version: &str, takes: &str) -> Result<PathBuf> {
    let bin = ws.tools.join("bin").join(name);
    let reports = |bin: &Path| {
        util::probe(Command::new(bin).arg("--version"))
            .is_some_and(|out| out.trim() == format!("{name} {version}"))
    };
    if reports(&bin) {
        return Ok(bin);
    }
    util::banner(&format!(
        "building {name} {version} into {} ({takes})",
        ws.tools.display()
    ));
    fs::create_dir_all(&ws.tools)
        .with_context(|| format!("cannot create {}", ws.tools.display()))?;
    let mut install = util::cargo();
    install
        // Not inside the workspace, so its config and lock file play no part.
        .current_dir(&ws.tools)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .args(["install", name, "--version", version])
        .args(["--locked", "--force", "--root"])
        .arg(&ws.tools);
    util::run(&mut install).with_context(|| format!("could not build {name}"))?;
    ensure!(
        reports(&bin),
        "{} was built but does not report {name} {version}",
        bin.display()
    );
    Ok(bin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn component_matching() {
        let installed = "cargo-x86_64-unknown-linux-gnu\nclippy-x86_64-unknown-linux-gnu\n\
                         rust-src\nrust-std-x86_64-unknown-linux-gnu\n";
        assert!(has_component(installed, "rust-src"));
        assert!(has_component(installed, "clippy"));
        assert!(!has_component(installed, "rustfmt"));
    }
}
