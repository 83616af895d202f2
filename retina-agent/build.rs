//! Locates the eBPF object built by `cargo xtask build` so `src/ebpf.rs` can embed it.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=RETINA_EBPF_OBJECT");
    let object = match std::env::var_os("RETINA_EBPF_OBJECT") {
        Some(path) => PathBuf::from(path),
        // Cargo always sets CARGO_MANIFEST_DIR for build scripts; without it, the path is
        // relative to the package, where cargo runs the script.
        None => PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_else(|| ".".into()))
            .join("../target/bpfel-unknown-none/release/retina-ebpf"),
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
}
