//! Locates the eBPF object built by `cargo xtask build` so `src/collectors/drops/probe/mod.rs` can embed it, and
//! records the git commit the agent is built from for `--version` (`RETINA_GIT_COMMIT`).

use std::path::PathBuf;

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

    println!("cargo:rerun-if-env-changed=RETINA_EBPF_OBJECT");
    let object = match std::env::var_os("RETINA_EBPF_OBJECT") {
        Some(path) => PathBuf::from(path),
        None => crate_dir.join("../target/bpfel-unknown-none/release/retina-ebpf"),
    };
    if !object.is_file() {
        // One clear line instead of an include_bytes! error deep in the crate.
        println!(
            "cargo::error=the eBPF object {} does not exist: build the workspace with `cargo xtask build` \
             (it builds retina-ebpf with nightly and bpf-linker first), or point RETINA_EBPF_OBJECT at a built object",
            object.display()
        );
        return;
    }
    println!("cargo:rerun-if-changed={}", object.display());
    println!("cargo:rustc-env=RETINA_EBPF_OBJECT={}", object.display());
    // The task iterator (`retina-ebpf/src/tasks.rs`) is built beside it, by the same build.
    let tasks = object.with_file_name("retina-tasks");
    if !tasks.is_file() {
        println!(
            "cargo::error=the eBPF object {} does not exist: build the workspace with `cargo xtask build`",
            tasks.display()
        );
        return;
    }
    println!("cargo:rerun-if-changed={}", tasks.display());
    println!("cargo:rustc-env=RETINA_TASKS_OBJECT={}", tasks.display());
    // The TCP event programs (`retina-ebpf/src/tcp.rs`), built beside it too.
    let tcp = object.with_file_name("retina-tcp");
    if !tcp.is_file() {
        println!(
            "cargo::error=the eBPF object {} does not exist: build the workspace with `cargo xtask build`",
            tcp.display()
        );
        return;
    }
    println!("cargo:rerun-if-changed={}", tcp.display());
    println!("cargo:rustc-env=RETINA_TCP_OBJECT={}", tcp.display());
}
