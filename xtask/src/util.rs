//! Workspace layout, running child processes with readable errors, and privileges.

use std::{
    env,
    ffi::{OsStr, OsString},
    fmt::Write as _,
    io,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, anyhow, bail};

/// Paths of the workspace this xtask belongs to.
pub struct Workspace {
    /// The workspace root (the directory holding the root `Cargo.toml`).
    pub root: PathBuf,
    /// Project-local tools (bpf-linker, its LLVM links, the Python venv): `<root>/.tools`.
    pub tools: PathBuf,
    /// Cargo's target directory, as `cargo metadata` reports it (honours `CARGO_TARGET_DIR`
    /// and `build.target-dir`).
    pub target_dir: PathBuf,
}

impl Workspace {
    pub fn locate() -> Result<Self> {
        // `cargo run` sets CARGO_MANIFEST_DIR at run time too; the compile-time value is the
        // fallback for running the binary directly.
        let manifest_dir = env::var_os("CARGO_MANIFEST_DIR")
            .map(PathBuf::from)
            .filter(|dir| dir.join("Cargo.toml").is_file())
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        let root = manifest_dir
            .parent()
            .context("the xtask crate has no parent directory")?
            .to_path_buf();

        let mut cmd = cargo();
        cmd.current_dir(&root)
            .args(["metadata", "--format-version", "1", "--no-deps"]);
        let metadata = capture(&mut cmd)?;
        let metadata: serde_json::Value =
            serde_json::from_str(&metadata).context("`cargo metadata` printed invalid JSON")?;
        let target_dir = metadata["target_directory"]
            .as_str()
            .context("`cargo metadata` reported no target_directory")?;

        Ok(Self {
            tools: root.join(".tools"),
            target_dir: PathBuf::from(target_dir),
            root,
        })
    }
}

/// The cargo that runs this xtask (the default toolchain, stable), for host builds.
pub fn cargo() -> Command {
    Command::new(env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// Environment variables through which the outer cargo/rustup select a toolchain or compiler
/// flags. A child that must use another toolchain (`rustup run nightly ...`) or target
/// (`bpfel-unknown-none`) must not inherit them, or it silently uses the outer ones.
const TOOLCHAIN_ENV: &[&str] = &[
    "RUSTUP_TOOLCHAIN",
    "RUSTC",
    "RUSTC_WRAPPER",
    "RUSTC_WORKSPACE_WRAPPER",
    "RUSTDOC",
    "CARGO",
    "CARGO_BUILD_RUSTC",
    "CARGO_BUILD_RUSTC_WRAPPER",
    "CARGO_BUILD_RUSTC_WORKSPACE_WRAPPER",
    "CARGO_BUILD_RUSTDOC",
    "CARGO_BUILD_TARGET",
    "RUSTFLAGS",
    "CARGO_BUILD_RUSTFLAGS",
    "CARGO_ENCODED_RUSTFLAGS",
];

/// `rustup run <toolchain> <program>` with the outer toolchain selection removed.
pub fn rustup_run(toolchain: &str, program: &str) -> Command {
    let mut cmd = Command::new("rustup");
    cmd.args(["run", toolchain, program]);
    for key in TOOLCHAIN_ENV {
        cmd.env_remove(key);
    }
    cmd
}

/// `dir` followed by the current PATH.
pub fn path_with(dirs: &[&Path]) -> Result<OsString> {
    let current = env::var_os("PATH").unwrap_or_default();
    let all = dirs
        .iter()
        .map(|dir| dir.to_path_buf())
        .chain(env::split_paths(&current));
    env::join_paths(all).context("a directory to put on PATH contains ':'")
}

/// Prints a phase banner.
pub fn banner(message: &str) {
    eprintln!("\n==> {message}");
}

/// The command line of `cmd` as a shell would show it, with the variables set on it
/// (except PATH, which is long and unhelpful).
pub fn display(cmd: &Command) -> String {
    let mut line = String::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value
            && key != "PATH"
        {
            let _ = write!(line, "{}={} ", key.display(), quote(value));
        }
    }
    line.push_str(&quote(cmd.get_program()));
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&quote(arg));
    }
    line
}

fn quote(word: &OsStr) -> String {
    let word = word.to_string_lossy();
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@%".contains(c));
    if plain {
        word.into_owned()
    } else {
        format!("{word:?}")
    }
}

/// What to tell the user when `program` is not installed.
fn install_hint(program: &OsStr) -> &'static str {
    match Path::new(program).file_name().and_then(OsStr::to_str) {
        Some("rustup") => {
            "install rustup (https://rustup.rs): the eBPF program needs its nightly toolchain"
        }
        Some("cargo" | "rustc") => "install Rust with rustup (https://rustup.rs)",
        Some("cc") => "install a C toolchain (Debian: `apt-get install g++`)",
        Some("python3") => "install Python 3 (Debian: `apt-get install python3 python3-venv`)",
        Some("apt-get" | "dpkg-query") => {
            "this is not a Debian-based system: install the packages listed above by hand"
        }
        Some("sudo") => "run as root instead",
        _ => "is it installed and on PATH?",
    }
}

fn spawn_error(cmd: &Command, err: io::Error) -> anyhow::Error {
    if err.kind() == io::ErrorKind::NotFound {
        anyhow!(
            "`{}` not found: {}",
            cmd.get_program().display(),
            install_hint(cmd.get_program())
        )
    } else {
        anyhow!(err).context(format!("failed to start `{}`", display(cmd)))
    }
}

/// Runs `cmd` (printing it first) with inherited stdio; fails unless it exits with 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {}", display(cmd));
    let status = cmd.status().map_err(|err| spawn_error(cmd, err))?;
    if !status.success() {
        bail!("`{}` failed ({status})", display(cmd));
    }
    Ok(())
}

/// Runs `cmd` quietly and returns its stdout; on failure the error carries its stderr.
pub fn capture(cmd: &mut Command) -> Result<String> {
    let output = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|err| spawn_error(cmd, err))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        bail!(
            "`{}` failed ({}): {}",
            display(cmd),
            output.status,
            stderr.trim()
        );
    }
    String::from_utf8(output.stdout)
        .with_context(|| format!("`{}` printed non-UTF-8", display(cmd)))
}

/// Runs `cmd` quietly; its stdout if it could be started and succeeded, else `None`.
pub fn probe(cmd: &mut Command) -> Option<String> {
    let output = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    String::from_utf8(output.stdout).ok()
}

/// The first executable called `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|path| {
            path.metadata()
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

/// How to run something that needs root.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    /// We are root (or hold the capabilities the agent needs): run directly.
    Direct,
    /// Not root, but `sudo` exists: prefix privileged commands with it.
    Sudo,
}

/// Capabilities the agent needs: CAP_NET_ADMIN (12), CAP_PERFMON (38), CAP_BPF (39).
const AGENT_CAPS: [u32; 3] = [12, 38, 39];

fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// How to get the privileges needed to load eBPF programs; `what` names the action for the
/// error message when neither root, the capabilities, nor sudo is available.
pub fn privilege(what: &str) -> Result<Privilege> {
    let has_caps =
        effective_caps().is_some_and(|caps| AGENT_CAPS.iter().all(|&cap| caps & (1 << cap) != 0));
    if is_root() || has_caps {
        Ok(Privilege::Direct)
    } else if which("sudo").is_some() {
        Ok(Privilege::Sudo)
    } else {
        bail!(
            "{what} needs root (or CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN), and `sudo` is not \
             installed: run it as root"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_only_when_needed() {
        let mut cmd = Command::new("cargo");
        cmd.env("A", "x y")
            .env("PATH", "/bin")
            .args(["build", "-p", "a b"]);
        assert_eq!(display(&cmd), r#"A="x y" cargo build -p "a b""#);
    }
}
