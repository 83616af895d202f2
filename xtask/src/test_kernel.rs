//! `cargo xtask test-kernel`: proves the agent on a second kernel. Boots a Debian kernel
//! package (default: bookworm's newest `linux-image-6.1.*-cloud-amd64-unsigned`) under
//! `qemu-system-x86_64` with an initramfs this command writes itself, and runs
//! `xtask/guest/init.sh` inside as `/init`.
//!
//! The initramfs holds busybox (static), the agent and the tests' `traffic` helper (built as
//! `cargo xtask build` does), `ip`, `nft`, `ethtool` and `jq` with the shared libraries `ldd`
//! names, and the kernel modules the package builds as modules (virtio, veth, nf_tables)
//! with their dependencies, in load order. The guest reports on the serial console:
//! `RETINA-GUEST: PASS|FAIL|SKIP name` per check, then `RETINA-GUEST-RESULT: N passed, M
//! failed, K skipped`, and powers off. This command streams the console, fails on any
//! failed check, a missing result line (crash, panic) or the timeout.
//!
//! Installed on first use, idempotently: the Debian packages `qemu-system-x86`,
//! `busybox-static`, `jq`, `ethtool`, `nftables`, `iproute2`; the kernel package is fetched
//! with `apt-get download` and unpacked with `dpkg-deb -x` into `.tools/kernels/PKG/`.
//! Acceleration: KVM when `/dev/kvm` opens and the CPU advertises vmx/svm, else TCG.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Write as _,
    fs::{self, File},
    io::{self, BufRead as _, BufReader, BufWriter, Read as _, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    build::{self, Profile},
    provision,
    util::{self, Privilege, Workspace},
};

/// The guest's `/init`.
const GUEST_INIT: &str = include_str!("../guest/init.sh");

/// Debian packages this command needs on the host (the guest's tools are copied from here).
const APT_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    "busybox-static",
    "jq",
    "ethtool",
    "nftables",
    "iproute2",
];

/// Host programs copied into the guest, with their libraries.
const GUEST_TOOLS: &[&str] = &["ip", "nft", "ethtool", "jq"];

/// Kernel modules the guest needs when the kernel builds them as modules: the NIC QEMU
/// gives it, veth pairs, nftables. Their dependencies (`depends=`) are added; soft
/// dependencies are not, so they are listed: libcrc32c (for nf_tables) fails to load
/// without a crc32c implementation (`softdep=pre: crc32c`, an alias of crc32c_generic).
const GUEST_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_net",
    "veth",
    "crc32c_generic",
    "nf_tables",
];

/// The default kernel: Debian bookworm's 6.1 cloud kernel, newest ABI apt knows.
const DEFAULT_PREFIX: &str = "linux-image-6.1.0-";
const DEFAULT_SUFFIX: &str = "-cloud-amd64-unsigned";

const RESULT_PREFIX: &str = "RETINA-GUEST-RESULT:";
const CHECK_PREFIX: &str = "RETINA-GUEST:";

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// KVM when /dev/kvm is usable and the CPU advertises vmx/svm, else TCG.
    Auto,
    Kvm,
    Tcg,
}

#[derive(clap::Args)]
pub struct Args {
    /// Debian kernel package to boot [default: the newest
    /// linux-image-6.1.0-N-cloud-amd64-unsigned that `apt-cache` lists].
    #[arg(long, value_name = "PKG")]
    kernel: Option<String>,
    /// Virtualisation: `kvm`, `tcg` (software emulation) or `auto`.
    #[arg(long, value_enum, default_value = "auto")]
    accel: Accel,
    /// Give up on the guest after this many seconds.
    #[arg(long, default_value_t = 900, value_name = "SECONDS")]
    timeout: u64,
    /// Build the agent and the traffic helper with the release profile.
    #[arg(long)]
    release: bool,
    /// Extra kernel command line for the guest (e.g. `loglevel=7`).
    #[arg(long, value_name = "ARGS")]
    append: Option<String>,
}

impl Default for Args {
    /// What `cargo xtask test` runs: the default kernel, automatic acceleration.
    fn default() -> Self {
        Args {
            kernel: None,
            accel: Accel::Auto,
            timeout: 900,
            release: false,
            append: None,
        }
    }
}

pub fn run(args: &Args) -> Result<()> {
    let started = Instant::now();
    let privilege = util::privilege("`cargo xtask test-kernel` (installs Debian packages)")?;
    let ws = Workspace::locate()?;
    let profile = Profile::from_release(args.release);

    util::banner("provisioning: QEMU, busybox and the guest's tools");
    provision::apt_packages(APT_PACKAGES, privilege)?;
    let package = match &args.kernel {
        Some(package) => package.clone(),
        None => default_kernel_package(privilege)?,
    };
    let kernel = fetch_kernel(&ws, &package, privilege)?;
    eprintln!(
        "kernel: {} {} ({}), BTF: {}",
        kernel.package,
        kernel.version,
        kernel.vmlinuz.display(),
        kernel
            .config_value("CONFIG_DEBUG_INFO_BTF")
            .unwrap_or("not set")
    );

    let built = build::build(&ws, profile)?;
    util::banner("building the traffic helper");
    let mut cmd = util::cargo();
    cmd.current_dir(&ws.root)
        .env("RETINA_EBPF_OBJECT", &built.ebpf_object)
        .args(["build", "--package", "retina-tests", "--bin", "traffic"])
        .args(profile.flags());
    util::run(&mut cmd)?;
    let traffic = ws.target_dir.join(profile.dir()).join("traffic");

    let work = ws.target_dir.join("test-kernel").join(&kernel.package);
    fs::create_dir_all(&work).with_context(|| format!("cannot create {}", work.display()))?;
    util::banner("writing the guest's initramfs");
    let initramfs = work.join("initramfs.cpio");
    let size = assemble_initramfs(&kernel, &built.agent, &traffic, &work, &initramfs)?;
    eprintln!(
        "{}: {:.1} MiB",
        initramfs.display(),
        size as f64 / (1 << 20) as f64
    );

    let accel = match args.accel {
        Accel::Auto if kvm_usable() => Accel::Kvm,
        Accel::Auto => Accel::Tcg,
        other => other,
    };
    let accel_name = if accel == Accel::Kvm { "KVM" } else { "TCG" };
    util::banner(&format!(
        "booting {} under QEMU ({accel_name}); timeout {} s",
        kernel.package, args.timeout
    ));
    let log_path = work.join("console.log");
    let outcome = boot(
        &kernel,
        &initramfs,
        accel,
        args.append.as_deref(),
        Duration::from_secs(args.timeout),
        &log_path,
    )?;

    eprintln!(
        "\n{} {} ({accel_name}): {}; guest {:.0} s, total {:.0} s; console log {}",
        kernel.package,
        kernel.version,
        outcome.summary.as_deref().unwrap_or("no result"),
        outcome.guest_time.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        log_path.display()
    );
    for line in &outcome.failures {
        eprintln!("  {line}");
    }
    match outcome.counts {
        Some((passed, 0)) if passed > 0 => Ok(()),
        Some((_, failed)) if failed > 0 => bail!("{failed} guest check(s) failed on {package}"),
        Some(_) => bail!("the guest ran no checks"),
        None => bail!(
            "the guest printed no `{RESULT_PREFIX}` line ({}); see {}",
            outcome.ending,
            log_path.display()
        ),
    }
}

// --- the kernel package ----------------------------------------------------------------

struct Kernel {
    package: String,
    version: String,
    vmlinuz: PathBuf,
    /// `/lib/modules/<release>` inside the unpacked package, if it ships modules.
    modules: Option<PathBuf>,
    release: String,
    config: String,
}

impl Kernel {
    fn config_value(&self, key: &str) -> Option<&str> {
        self.config.lines().find_map(|line| {
            line.strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('='))
        })
    }
}

/// `apt-get ARGS` as root or through sudo, non-interactive.
fn apt_get(privilege: Privilege) -> Command {
    let mut cmd = match privilege {
        Privilege::Direct => Command::new("apt-get"),
        Privilege::Sudo => {
            let mut cmd = Command::new("sudo");
            cmd.arg("apt-get");
            cmd
        }
    };
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

/// ABI numbers of the default kernel packages `apt-cache` lists, newest last.
fn default_candidates() -> Result<Vec<(u32, String)>> {
    let pattern = format!(
        "^{}[0-9]+{}$",
        DEFAULT_PREFIX.replace('.', "\\."),
        DEFAULT_SUFFIX
    );
    let out = util::capture(Command::new("apt-cache").args(["search", "--names-only", &pattern]))?;
    let mut found: Vec<(u32, String)> = out
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|name| {
            let abi = name
                .strip_prefix(DEFAULT_PREFIX)?
                .strip_suffix(DEFAULT_SUFFIX)?;
            Some((abi.parse().ok()?, name.to_string()))
        })
        .collect();
    found.sort();
    Ok(found)
}

fn default_kernel_package(privilege: Privilege) -> Result<String> {
    let mut found = default_candidates()?;
    if found.is_empty() {
        util::run(apt_get(privilege).arg("update"))?;
        found = default_candidates()?;
    }
    match found.pop() {
        Some((_, name)) => Ok(name),
        None => bail!(
            "apt knows no {DEFAULT_PREFIX}N{DEFAULT_SUFFIX} package: this needs Debian bookworm's \
             sources (or pass --kernel PKG)"
        ),
    }
}

/// Unpacks `package` into `.tools/kernels/PACKAGE/` unless it is there already.
fn fetch_kernel(ws: &Workspace, package: &str, privilege: Privilege) -> Result<Kernel> {
    if package.contains('/') || package.starts_with('.') {
        bail!("{package:?} is not a Debian package name");
    }
    let kernels = ws.tools.join("kernels");
    let dir = kernels.join(package);
    let stamp = dir.join(".version");
    if !stamp.is_file() {
        util::banner(&format!("fetching {package} into {}", dir.display()));
        let tmp = kernels.join(format!(".{package}.partial"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        let download = || {
            let mut cmd = Command::new("apt-get");
            // As root, apt would drop to the `_apt` user, who cannot write here.
            cmd.current_dir(&tmp)
                .args(["-o", "APT::Sandbox::User=root", "download", package]);
            util::run(&mut cmd)
        };
        if download().is_err() {
            eprintln!("retrying after `apt-get update`");
            util::run(apt_get(privilege).arg("update"))?;
            download().with_context(|| format!("cannot download the Debian package {package}"))?;
        }
        let deb = fs::read_dir(&tmp)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "deb"))
            .context("apt-get download left no .deb")?;
        let version = util::capture(Command::new("dpkg-deb").arg("-f").arg(&deb).arg("Version"))?;
        util::run(
            Command::new("dpkg-deb")
                .arg("-x")
                .arg(&deb)
                .arg(tmp.join("root")),
        )?;
        fs::remove_file(&deb)?;
        fs::write(tmp.join(".version"), version.trim())?;
        if dir.exists() {
            fs::remove_dir_all(&dir)?;
        }
        fs::rename(&tmp, &dir)?;
    }
    let version = fs::read_to_string(&stamp)?.trim().to_string();
    let root = dir.join("root");
    let boot = root.join("boot");
    let find = |prefix: &str| -> Result<PathBuf> {
        fs::read_dir(&boot)
            .with_context(|| format!("{package} has no /boot"))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
            .with_context(|| format!("{package} has no /boot/{prefix}*: is it a kernel image?"))
    };
    let vmlinuz = find("vmlinuz-")?;
    let config = fs::read_to_string(find("config-")?)?;
    let release = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .context("odd vmlinuz name")?
        .to_string();
    let modules = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| root.join(d).join(&release))
        .find(|d| d.is_dir());
    Ok(Kernel {
        package: package.to_string(),
        version,
        vmlinuz,
        modules,
        release,
        config,
    })
}

// --- kernel modules --------------------------------------------------------------------

/// A module's name as the kernel knows it: file stem, `-` as `_`.
fn module_name(file_name: &str) -> Option<String> {
    let stem = file_name
        .strip_suffix(".ko")
        .or_else(|| file_name.split_once(".ko.").map(|(stem, _)| stem))?;
    Some(stem.replace('-', "_"))
}

/// The `depends=` list in a module's `.modinfo` section.
fn module_depends(data: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"depends=";
    let mut at = 0;
    while let Some(pos) = data[at..].windows(KEY.len()).position(|w| w == KEY) {
        let start = at + pos;
        at = start + KEY.len();
        // .modinfo entries are NUL-separated "key=value" strings.
        if start > 0 && data[start - 1] != 0 {
            continue;
        }
        let end = data[at..]
            .iter()
            .position(|&b| b == 0)
            .map_or(data.len(), |n| at + n);
        return String::from_utf8_lossy(&data[at..end])
            .split(',')
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .collect();
    }
    Vec::new()
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), out)?;
        } else {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// The `.ko` files to load for [`GUEST_MODULES`], dependencies first; modules built into
/// the kernel are left out.
fn module_load_order(modules: &Path) -> Result<Vec<PathBuf>> {
    let builtin: BTreeSet<String> = fs::read_to_string(modules.join("modules.builtin"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.rsplit('/').next().and_then(module_name))
        .collect();
    let mut files = Vec::new();
    walk(modules, &mut files)?;
    let index: HashMap<String, PathBuf> = files
        .into_iter()
        .filter_map(|p| Some((module_name(p.file_name()?.to_str()?)?, p)))
        .collect();

    fn visit(
        name: &str,
        index: &HashMap<String, PathBuf>,
        builtin: &BTreeSet<String>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<PathBuf>,
    ) -> Result<()> {
        if builtin.contains(name) || !seen.insert(name.to_string()) {
            return Ok(());
        }
        let Some(path) = index.get(name) else {
            eprintln!(
                "warning: module {name} is neither built in nor shipped; the guest runs without it"
            );
            return Ok(());
        };
        if path.extension().is_none_or(|x| x != "ko") {
            bail!(
                "{} is compressed; the guest's busybox insmod needs plain .ko files",
                path.display()
            );
        }
        let data = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        for dep in module_depends(&data) {
            visit(&dep, index, builtin, seen, order)?;
        }
        order.push(path.clone());
        Ok(())
    }
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for name in GUEST_MODULES {
        visit(name, &index, &builtin, &mut seen, &mut order)?;
    }
    Ok(order)
}

// --- the initramfs ---------------------------------------------------------------------

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
/// not be ours).
fn host_tool(name: &str) -> Result<PathBuf> {
    ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .with_context(|| format!("`{name}` is not installed (Debian packages: {APT_PACKAGES:?})"))
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

fn assemble_initramfs(
    kernel: &Kernel,
    agent: &Path,
    traffic: &Path,
    work: &Path,
    out: &Path,
) -> Result<u64> {
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
    tree.add(
        "etc/passwd",
        Node::Data {
            bytes:
                b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n"
                    .to_vec(),
            mode: 0o644,
        },
    );
    tree.add(
        "etc/hosts",
        Node::Data {
            bytes: b"127.0.0.1 localhost\n::1 localhost\n".to_vec(),
            mode: 0o644,
        },
    );
    tree.add(
        "etc/group",
        Node::Data {
            bytes: b"root:x:0:\nnogroup:x:65534:\n".to_vec(),
            mode: 0o644,
        },
    );
    tree.add(
        "etc/retina-guest/package",
        Node::Data {
            bytes: format!("{} {}\n", kernel.package, kernel.version).into_bytes(),
            mode: 0o644,
        },
    );
    tree.binary("bin/busybox", &host_tool("busybox")?)?;
    tree.binary(
        "usr/bin/retina-agent",
        &stripped(agent, &work.join("retina-agent"))?,
    )?;
    tree.binary(
        "usr/bin/traffic",
        &stripped(traffic, &work.join("traffic"))?,
    )?;
    for tool in GUEST_TOOLS {
        tree.binary(&format!("usr/bin/{tool}"), &host_tool(tool)?)?;
    }

    let mut load = String::new();
    if let Some(modules) = &kernel.modules {
        for ko in module_load_order(modules)? {
            let rel = ko.strip_prefix(modules)?.to_string_lossy().into_owned();
            let guest = format!("/lib/modules/{}/{rel}", kernel.release);
            tree.file(&guest, &ko)?;
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
    tree.add(
        "etc/retina-guest/modules",
        Node::Data {
            bytes: load.into_bytes(),
            mode: 0o644,
        },
    );
    tree.write(out)
}

// --- QEMU ------------------------------------------------------------------------------

/// KVM works only when /dev/kvm opens read-write and the CPU advertises hardware
/// virtualisation: inside a VM without nested virtualisation /dev/kvm may exist while
/// guests hang.
fn kvm_usable() -> bool {
    let opens = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    let flags = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hw = flags
        .lines()
        .filter(|l| l.starts_with("flags"))
        .any(|l| l.split_whitespace().any(|f| f == "vmx" || f == "svm"));
    opens && hw
}

struct Outcome {
    /// (passed, failed) from the result line.
    counts: Option<(u32, u32)>,
    summary: Option<String>,
    failures: Vec<String>,
    guest_time: Duration,
    /// How the console ended, for the error when there is no result line.
    ending: String,
}

/// Removes terminal escape sequences (SeaBIOS clears the screen) and carriage returns.
fn clean(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // Parameters, then one final byte in @..~.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' | '\n' => {}
            c => out.push(c),
        }
    }
    out
}

/// `N passed, M failed, K skipped` → (N, M).
fn parse_result(rest: &str) -> Option<(u32, u32)> {
    let mut passed = None;
    let mut failed = None;
    for part in rest.split(',') {
        let mut words = part.split_whitespace();
        let n: u32 = words.next()?.parse().ok()?;
        match words.next()? {
            "passed" => passed = Some(n),
            "failed" => failed = Some(n),
            _ => {}
        }
    }
    Some((passed?, failed?))
}

fn boot(
    kernel: &Kernel,
    initramfs: &Path,
    accel: Accel,
    append: Option<&str>,
    timeout: Duration,
    log_path: &Path,
) -> Result<Outcome> {
    let mut cmdline = String::from("console=ttyS0 panic=-1 quiet");
    if let Some(extra) = append {
        cmdline.push(' ');
        cmdline.push_str(extra);
    }
    let mut cmd = Command::new("qemu-system-x86_64");
    cmd.args([
        "-nodefaults",
        "-no-user-config",
        "-display",
        "none",
        "-no-reboot",
    ])
    .args(["-serial", "stdio", "-smp", "2", "-m", "1024"]);
    match accel {
        Accel::Kvm => cmd.args(["-accel", "kvm", "-cpu", "host"]),
        _ => cmd.args(["-accel", "tcg", "-cpu", "max"]),
    };
    cmd.arg("-kernel")
        .arg(&kernel.vmlinuz)
        .arg("-initrd")
        .arg(initramfs)
        .args(["-append", &cmdline])
        // A virtio NIC for the driver statistics, on an isolated user-mode network, without
        // its boot ROM.
        .args(["-netdev", "user,id=n0,restrict=on"])
        .args(["-device", "virtio-net-pci,netdev=n0,romfile="])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    eprintln!("$ {}", util::display(&cmd));
    let started = Instant::now();
    let mut child = cmd.spawn().context("cannot start qemu-system-x86_64")?;

    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().context("no qemu stdout")?;
    let reader = thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut buf = Vec::new();
        while matches!(stdout.read_until(b'\n', &mut buf), Ok(n) if n > 0) {
            if tx.send(clean(&buf)).is_err() {
                break;
            }
            buf.clear();
        }
    });
    let mut stderr = child.stderr.take().context("no qemu stderr")?;
    let stderr_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let mut log = BufWriter::new(
        File::create(log_path).with_context(|| format!("cannot create {}", log_path.display()))?,
    );
    let mut outcome = Outcome {
        counts: None,
        summary: None,
        failures: Vec::new(),
        guest_time: Duration::ZERO,
        ending: String::new(),
    };
    let mut tail: Vec<String> = Vec::new();
    let deadline = started + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                writeln!(log, "{line}")?;
                if line.trim().is_empty() {
                    continue;
                }
                eprintln!("guest| {line}");
                if let Some(rest) = line
                    .find(RESULT_PREFIX)
                    .map(|i| &line[i + RESULT_PREFIX.len()..])
                {
                    outcome.counts = parse_result(rest);
                    outcome.summary = Some(rest.trim().to_string());
                    outcome.guest_time = started.elapsed();
                } else if let Some(i) = line.find(CHECK_PREFIX) {
                    let check = line[i + CHECK_PREFIX.len()..].trim();
                    if check.starts_with("FAIL") {
                        outcome.failures.push(check.to_string());
                    }
                }
                tail.push(line);
                if tail.len() > 40 {
                    tail.remove(0);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                let _ = child.wait();
                log.flush()?;
                bail!(
                    "the guest did not finish within {} s (raise --timeout); last console lines:\n{}",
                    timeout.as_secs(),
                    tail.join("\n")
                );
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    log.flush()?;
    let status = child.wait()?;
    let _ = reader.join();
    let stderr = stderr_reader.join().unwrap_or_default();
    if !stderr.trim().is_empty() {
        eprintln!("qemu stderr:\n{}", stderr.trim());
    }
    if outcome.counts.is_none() {
        outcome.guest_time = started.elapsed();
        let panic = tail.iter().any(|l| l.contains("Kernel panic"));
        outcome.ending = format!(
            "QEMU exited with {status}{} after {:.0} s",
            if panic {
                ", the guest kernel panicked"
            } else {
                ""
            },
            outcome.guest_time.as_secs_f64()
        );
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depends_from_modinfo() {
        let data = b"\x7fELF...xdepends=nope\0license=GPL\0depends=virtio_ring,virtio\0name=x\0";
        assert_eq!(module_depends(data), ["virtio_ring", "virtio"]);
        assert!(module_depends(b"\0depends=\0").is_empty());
        assert_eq!(module_name("nf_tables.ko").as_deref(), Some("nf_tables"));
        assert_eq!(
            module_name("crc32c-intel.ko.xz").as_deref(),
            Some("crc32c_intel")
        );
    }

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

    #[test]
    fn console_lines_and_results() {
        assert_eq!(clean(b"\x1b[2J\x1bcRETINA\r\n"), "RETINA");
        assert_eq!(parse_result(" 7 passed, 1 failed, 2 skipped"), Some((7, 1)));
        assert_eq!(parse_result(" garbage"), None);
    }
}
