//! The guest's initramfs, written here as an uncompressed `newc` cpio archive: busybox
//! (static), the agent, the test binaries and the `traffic` helper (stripped of debug
//! info), the programs the tests run with the shared libraries `ldd` names, the kernel
//! modules the guest loads, `rotel-agent` (the OTLP collector of the export tests, from the
//! `rotel` wheel in the tools venv) and `xtask/guest/init.sh` as `/init`.
//!
//! Layout: the test binary in `/opt/retina/deps/` (once, however many modules run it), `traffic` in `/opt/retina/` (a test
//! binary finds its helpers one directory above its own, as in `target/debug/deps`), the
//! agent in `/usr/bin/retina-agent`, the collector in `/usr/bin/rotel-agent` (`/init` names
//! it to the tests in `RETINA_ROTEL_AGENT`); `/etc/retina-guest/` holds what `/init` reads: the
//! kernel package, the modules in load order, `test-timeout` (seconds per test binary) and
//! `suite` (one line per test module, a file of `tests/tests/`:
//! `NAME PATH LIBTEST-ARGS...`).

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs::{self, File},
    io::{self, BufWriter, Read as _, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result};

use super::{modules, packages::Kernel, suite::Planned};
use crate::util;

/// The guest's `/init`.
const GUEST_INIT: &str = include_str!("../../guest/init.sh");

/// Host programs copied into the guest, with their libraries: what the tests run (besides
/// busybox's applets) and `jq` for `/init`'s report. Their Debian packages are in
/// [`super::APT_PACKAGES`].
pub const GUEST_TOOLS: &[&str] = &[
    "ip",
    "tc",
    "nft",
    "ethtool",
    "jq",
    "bpftool",
    "setpriv",
    "strace",
    "arping",
    "prometheus",
    "promtool",
];

/// Programs the guest gets from the tools venv rather than the host's PATH: the OTLP
/// collector from PyPI `rotel` ([`Payload::rotel`]).
pub const GUEST_VENV_TOOLS: &[&str] = &["rotel-agent"];

/// Every program the guest has besides busybox's applets: what lifts a tool exclusion.
pub fn guest_programs() -> Vec<&'static str> {
    GUEST_TOOLS
        .iter()
        .chain(GUEST_VENV_TOOLS)
        .copied()
        .collect()
}

/// Where the test binaries go in the guest.
pub const GUEST_DEPS: &str = "/opt/retina/deps";

/// What goes into the guest besides the fixed parts.
pub struct Payload<'a> {
    pub agent: &'a Path,
    pub traffic: &'a Path,
    /// `rotel-agent` from the `rotel` wheel (linked against the host's libpython, which
    /// `ldd` names and the guest gets; it runs without the Python standard library).
    pub rotel: &'a Path,
    /// The test files this guest runs (those with `not_run` are left out).
    pub plan: &'a [Planned<'a>],
    /// Seconds the guest gives one test binary before it kills it.
    pub test_timeout: u64,
}

enum Node {
    Dir,
    File { src: PathBuf, mode: u32 },
    Data { bytes: Vec<u8>, mode: u32 },
    CharDev(u32, u32),
}

/// An initramfs under construction: paths (no leading `/`) to what they are.
#[derive(Default)]
struct Tree(BTreeMap<String, Node>);

impl Tree {
    fn add(&mut self, path: &str, node: Node) {
        let path = path.trim_start_matches('/').to_string();
        let mut parent = Path::new(&path).parent();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            self.0
                .entry(p.to_string_lossy().into_owned())
                .or_insert(Node::Dir);
            parent = p.parent();
        }
        self.0.insert(path, node);
    }

    fn file(&mut self, path: &str, src: &Path) -> Result<()> {
        let meta = fs::metadata(src).with_context(|| format!("cannot read {}", src.display()))?;
        let mode = meta.permissions().mode() & 0o7777;
        self.add(
            path,
            Node::File {
                src: src.to_path_buf(),
                mode,
            },
        );
        Ok(())
    }

    /// Adds the binary `src` as `path`, and every shared library `ldd` names for it at the
    /// same absolute path.
    fn binary(&mut self, path: &str, src: &Path) -> Result<()> {
        self.file(path, src)?;
        // ldd fails on static binaries ("not a dynamic executable"): nothing to add.
        let Some(out) = util::probe(Command::new("ldd").arg(src)) else {
            return Ok(());
        };
        for line in out.lines() {
            let lib = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next(),
                None => line.split_whitespace().next(),
            };
            if let Some(lib) = lib.filter(|l| l.starts_with('/')) {
                // The content, wherever a symlink points, under the name the loader asks for.
                let real = fs::canonicalize(lib).with_context(|| format!("ldd named {lib}"))?;
                self.file(lib, &real)?;
            }
        }
        Ok(())
    }

    /// Writes a `newc` cpio archive (what the kernel unpacks as initramfs); returns its size.
    fn write(&self, out: &Path) -> Result<u64> {
        let mut w = BufWriter::new(
            File::create(out).with_context(|| format!("cannot create {}", out.display()))?,
        );
        let mut written = 0u64;
        for (ino, (path, node)) in self.0.iter().enumerate() {
            let (mode, rdev, data): (u32, (u32, u32), Option<Box<dyn io::Read>>) = match node {
                Node::Dir => (0o040755, (0, 0), None),
                Node::File { src, mode } => (
                    0o100000 | mode,
                    (0, 0),
                    Some(Box::new(
                        File::open(src)
                            .with_context(|| format!("cannot open {}", src.display()))?,
                    )),
                ),
                Node::Data { bytes, mode } => (
                    0o100000 | mode,
                    (0, 0),
                    Some(Box::new(io::Cursor::new(bytes.clone()))),
                ),
                Node::CharDev(major, minor) => (0o020600, (*major, *minor), None),
            };
            let mut bytes = Vec::new();
            if let Some(mut data) = data {
                data.read_to_end(&mut bytes)?;
            }
            written += cpio_entry(&mut w, ino as u32 + 1, path, mode, rdev, &bytes)?;
        }
        written += cpio_entry(&mut w, 0, "TRAILER!!!", 0, (0, 0), &[])?;
        w.flush()?;
        Ok(written)
    }
}

/// One `newc` entry: header, NUL-terminated name and data, each padded to 4 bytes.
fn cpio_entry(
    w: &mut impl io::Write,
    ino: u32,
    name: &str,
    mode: u32,
    (rmajor, rminor): (u32, u32),
    data: &[u8],
) -> Result<u64> {
    let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
    let mut header = String::from("070701");
    for field in [
        ino,
        mode,
        0,
        0,
        nlink,
        0,
        u32::try_from(data.len()).context("file larger than 4 GiB")?,
        0,
        0,
        rmajor,
        rminor,
        name.len() as u32 + 1,
        0,
    ] {
        let _ = write!(header, "{field:08x}");
    }
    let pad = |n: usize| (4 - n % 4) % 4;
    let head_len = header.len() + name.len() + 1;
    w.write_all(header.as_bytes())?;
    w.write_all(name.as_bytes())?;
    w.write_all(&[0])?;
    w.write_all(&[0; 3][..pad(head_len)])?;
    w.write_all(data)?;
    w.write_all(&[0; 3][..pad(data.len())])?;
    Ok((head_len + pad(head_len) + data.len() + pad(data.len())) as u64)
}

/// The first of `/usr/sbin`, `/usr/bin`, `/sbin`, `/bin` holding `name` (root's PATH need
/// The first of `/usr/sbin`, `/usr/bin`, `/sbin`, `/bin` holding `name` (root's PATH need
/// not be ours).
fn host_tool(name: &str) -> Result<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "`{name}` is not installed (Debian packages: {:?})",
                super::APT_PACKAGES
            )
        })
}

/// Where Debian keeps the system's CA certificates (package `ca-certificates`).
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

fn host_ca_bundle() -> Result<PathBuf> {
    let path = PathBuf::from(CA_BUNDLE);
    fs::canonicalize(&path)
        .with_context(|| format!("{CA_BUNDLE} is missing (Debian package `ca-certificates`)"))
}

/// Copies `src` to `dst` without debug info (a debug agent is mostly DWARF), or as it is
/// when `strip` is missing.
fn stripped(src: &Path, dst: &Path) -> Result<PathBuf> {
    if util::which("strip").is_some()
        && util::probe(
            Command::new("strip")
                .arg("--strip-debug")
                .arg("-o")
                .arg(dst)
                .arg(src),
        )
        .is_some()
    {
        return Ok(dst.to_path_buf());
    }
    Ok(src.to_path_buf())
}

fn data(tree: &mut Tree, path: &str, text: String) {
    tree.add(
        path,
        Node::Data {
            bytes: text.into_bytes(),
            mode: 0o644,
        },
    );
}

/// Writes the initramfs for `kernel` to `out` and returns its size; stripped copies of the
/// binaries go to `strip_dir`.
pub fn assemble(kernel: &Kernel, payload: &Payload, strip_dir: &Path, out: &Path) -> Result<u64> {
    fs::create_dir_all(strip_dir)
        .with_context(|| format!("cannot create {}", strip_dir.display()))?;
    let mut tree = Tree::default();
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "etc", "root", "proc", "sys", "dev", "run", "tmp",
        "var",
    ] {
        tree.add(dir, Node::Dir);
    }
    tree.add("dev/console", Node::CharDev(5, 1));
    tree.add(
        "init",
        Node::Data {
            bytes: GUEST_INIT.as_bytes().to_vec(),
            mode: 0o755,
        },
    );
    data(
        &mut tree,
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n"
            .to_string(),
    );
    data(
        &mut tree,
        "etc/hosts",
        "127.0.0.1 localhost\n::1 localhost\n".to_string(),
    );
    data(
        &mut tree,
        "etc/group",
        "root:x:0:\nnogroup:x:65534:\n".to_string(),
    );
    // The system's CA certificates, as on any node: the agent's OTLP/HTTP client loads
    // them even for a plain `http://` endpoint, and refuses to start without any.
    tree.file(CA_BUNDLE, &host_ca_bundle()?)?;
    data(
        &mut tree,
        "etc/retina-guest/package",
        format!("{} {}\n", kernel.package, kernel.version),
    );
    tree.binary("bin/busybox", &host_tool("busybox")?)?;
    // A `/bin/sh` that runs what PATH names: busybox's shell would run its own `ip` applet
    // (no netns support) for a test's `sh -c "ip netns exec ..."`.
    tree.binary("bin/sh", &host_tool("dash")?)?;
    tree.binary(
        "usr/bin/retina-agent",
        &stripped(payload.agent, &strip_dir.join("retina-agent"))?,
    )?;
    tree.binary(
        "opt/retina/traffic",
        &stripped(payload.traffic, &strip_dir.join("traffic"))?,
    )?;
    tree.binary(
        "usr/bin/rotel-agent",
        &stripped(payload.rotel, &strip_dir.join("rotel-agent"))?,
    )?;
    for tool in GUEST_TOOLS {
        tree.binary(&format!("usr/bin/{tool}"), &host_tool(tool)?)?;
    }

    let mut suite = String::new();
    // The modules of the one test binary share it: copied once.
    let mut copied = Vec::new();
    for planned in payload.plan.iter().filter(|p| p.not_run.is_none()) {
        let name = &planned.file.name;
        let exe = &planned.file.exe;
        let base = exe
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("test binary without a name: {}", exe.display()))?;
        let guest = format!("{GUEST_DEPS}/{base}");
        if !copied.contains(exe) {
            tree.binary(&guest, &stripped(exe, &strip_dir.join(base))?)?;
            copied.push(exe.clone());
        }
        let _ = writeln!(suite, "{name} {guest} {}", planned.args().join(" "));
    }
    data(&mut tree, "etc/retina-guest/suite", suite);
    data(
        &mut tree,
        "etc/retina-guest/test-timeout",
        format!("{}\n", payload.test_timeout),
    );

    let mut load = String::new();
    if let Some(dir) = &kernel.modules {
        let cache = strip_dir.join("modules").join(&kernel.release);
        for module in modules::load_order(dir, &cache)? {
            let guest = format!("/lib/modules/{}/{}", kernel.release, module.rel);
            tree.file(&guest, &module.file)?;
            load.push_str(&guest);
            load.push('\n');
        }
    }
    eprintln!(
        "modules: {}",
        if load.is_empty() {
            "none needed".to_string()
        } else {
            load.lines()
                .filter_map(|l| l.rsplit('/').next())
                .collect::<Vec<_>>()
                .join(" ")
        }
    );
    data(&mut tree, "etc/retina-guest/modules", load);
    tree.write(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpio_entries_are_padded() {
        let mut out = Vec::new();
        let n = cpio_entry(&mut out, 1, "init", 0o100755, (0, 0), b"hello").unwrap();
        assert_eq!(n as usize, out.len());
        assert_eq!(out.len() % 4, 0);
        assert!(out.starts_with(b"070701"));
        // 110-byte header + "init\0" = 115, padded to 116; then 5 data bytes padded to 8.
        assert_eq!(out.len(), 116 + 8);
    }
}
