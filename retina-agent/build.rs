//! Finds (or builds) the eBPF objects that `src/collectors/drops/probe/mod.rs` and
//! `src/kernel/tasks.rs` and `src/collectors/tcp_events` embed (`build/ebpf.rs` says how), and records the git commit the
//! agent is built from for `--version` (`RETINA_GIT_COMMIT`).

use std::path::PathBuf;

#[path = "build/ebpf.rs"]
mod ebpf;
#[path = "build/git.rs"]
mod git;

/// What the binary is built from, relative to the workspace root: a change in any of them
/// makes `--version` say "with uncommitted changes".
const BINARY_SOURCES: &[&str] = &[
    "retina-agent",
    "retina-ebpf",
    "retina-ebpf-common",
    "Cargo.toml",
    "Cargo.lock",
];

fn main() {
    // Cargo always sets CARGO_MANIFEST_DIR for build scripts; without it, paths are
    // relative to the package, where cargo runs the script.
    let crate_dir =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| ".".into()));
    let root = crate_dir.join("..");
    for file in git::watched(&root, BINARY_SOURCES) {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    let source = git::source(&root, BINARY_SOURCES);
    println!("cargo:rustc-env=RETINA_GIT_COMMIT={}", source.describe());

    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_else(|| ".".into()));
    match ebpf::objects(&root, &out_dir) {
        Ok(objects) => {
            for (var, path) in [
                ("RETINA_EBPF_OBJECT", &objects.drops),
                ("RETINA_TASKS_OBJECT", &objects.tasks),
                ("RETINA_TCP_OBJECT", &objects.tcp),
            ] {
                println!("cargo:rerun-if-changed={}", path.display());
                println!("cargo:rustc-env={var}={}", path.display());
            }
        }
        // One clear line instead of an include_bytes! error deep in the crate.
        Err(error) => println!("cargo::error={error}"),
    }
}
