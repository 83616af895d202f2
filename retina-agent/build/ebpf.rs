//! Which eBPF objects the agent embeds (`RETINA_EBPF_OBJECT`, `RETINA_TASKS_OBJECT`,
//! `RETINA_TCP_OBJECT`), for the build script. In order:
//!
//! 1. `RETINA_EBPF_OBJECT` set (as `cargo xtask build` does): that object, and
//!    `retina-tasks` and `retina-tcp` beside it. Missing: an error.
//! 2. The objects `cargo xtask build` leaves in `target/bpfel-unknown-none/release/`.
//! 3. Neither, but the eBPF toolchain is here (nightly with rust-src, a working
//!    bpf-linker on PATH or in `.tools/bin`): built now with aya-build, into `OUT_DIR`, the
//!    way aya-template's build script does it.
//! 4. No toolchain (a fresh clone): a warning, and an empty object, so that `cargo check`,
//!    `cargo clippy` and rust-analyzer work; the binary built that way refuses to load its
//!    programs at run time, naming `cargo xtask build`.

use std::{
    env, fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// The eBPF crate and its three objects (its binary targets).
const EBPF_PACKAGE: &str = "retina-ebpf";
const DROPS: &str = "retina-ebpf";
const TASKS: &str = "retina-tasks";
const TCP: &str = "retina-tcp";

/// The three objects to embed.
pub struct Objects {
    pub drops: PathBuf,
    pub tasks: PathBuf,
    pub tcp: PathBuf,
}

/// Finds or builds the objects; `Err` is the text of a `cargo::error`.
pub fn objects(root: &Path, out_dir: &Path) -> Result<Objects, String> {
    println!("cargo:rerun-if-env-changed=RETINA_EBPF_OBJECT");
    if let Some(path) = env::var_os("RETINA_EBPF_OBJECT") {
        let path = PathBuf::from(path);
        return existing(&path).ok_or_else(|| {
            format!(
                "RETINA_EBPF_OBJECT={}: no such object, or no {TASKS} or {TCP} beside it: build the \
                 workspace with `cargo xtask build`",
                path.display()
            )
        });
    }
    let xtask_built = root.join("target/bpfel-unknown-none/release").join(DROPS);
    if let Some(objects) = existing(&xtask_built) {
        return Ok(objects);
    }
    match toolchain(root) {
        Ok(linker_dir) => build(root, out_dir, &linker_dir),
        Err(missing) => {
            println!(
                "cargo::warning=no eBPF toolchain ({missing}): this build embeds no eBPF \
                 programs, and its retina-agent refuses to load them at run time. \
                 `cargo xtask build` provisions the toolchain and builds the real thing."
            );
            let empty = out_dir.join("no-ebpf-object");
            fs::write(&empty, b"").map_err(|e| format!("cannot write {}: {e}", empty.display()))?;
            Ok(Objects {
                drops: empty.clone(),
                tasks: empty.clone(),
                tcp: empty,
            })
        }
    }
}

/// `drops` and the task iterator and TCP programs beside it, if all three exist.
fn existing(drops: &Path) -> Option<Objects> {
    let tasks = drops.with_file_name(TASKS);
    let tcp = drops.with_file_name(TCP);
    (drops.is_file() && tasks.is_file() && tcp.is_file()).then(|| Objects {
        drops: drops.to_path_buf(),
        tasks,
        tcp,
    })
}

/// The directory holding a working bpf-linker, or what is missing.
fn toolchain(root: &Path) -> Result<PathBuf, String> {
    let sysroot =
        output(Command::new("rustup").args(["run", "nightly", "rustc", "--print", "sysroot"]))
            .ok_or("no nightly toolchain (`rustup run nightly rustc` failed)")?;
    if !Path::new(sysroot.trim())
        .join("lib/rustlib/src/rust/library")
        .is_dir()
    {
        return Err("the nightly toolchain has no rust-src".to_string());
    }
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.push(root.join(".tools/bin"));
    dirs.into_iter()
        .find(|dir| output(Command::new(dir.join("bpf-linker")).arg("--version")).is_some())
        .ok_or_else(|| "no working bpf-linker on PATH or in .tools/bin".to_string())
}

/// Standard output of a command that succeeded.
fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Builds the eBPF crate with aya-build into `OUT_DIR`.
fn build(root: &Path, out_dir: &Path, linker_dir: &Path) -> Result<Objects, String> {
    let path = env::var_os("PATH").unwrap_or_default();
    let path =
        env::join_paths(std::iter::once(linker_dir.to_path_buf()).chain(env::split_paths(&path)))
            .map_err(|e| format!("PATH: {e}"))?;
    // SAFETY: the build script is single-threaded here; aya-build's cargo inherits PATH.
    unsafe { env::set_var("PATH", path) };
    println!(
        "cargo:rerun-if-changed={}",
        root.join("retina-ebpf-common").display()
    );
    let package = root.join(EBPF_PACKAGE);
    let package = package.to_str().ok_or("the workspace path is not UTF-8")?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: EBPF_PACKAGE,
            root_dir: package,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
    .map_err(|e| format!("building the eBPF programs (aya-build): {e:#}"))?;
    existing(&out_dir.join(DROPS)).ok_or_else(|| {
        format!(
            "aya-build built {EBPF_PACKAGE} but {} lacks {DROPS}, {TASKS} or {TCP}",
            out_dir.display()
        )
    })
}
