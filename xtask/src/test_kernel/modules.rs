//! The kernel modules a guest loads when its kernel builds what the tests need as modules
//! (Debian's do): the `.ko` files with their `depends=` dependencies, in load order.

use std::{
    collections::{BTreeSet, HashMap},
    fs, io,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

/// Kernel modules the guest needs when the kernel builds them as modules: the NIC QEMU
/// gives it, veth pairs, nftables, the queueing disciplines and connection tracking the
/// tests use. Their dependencies (`depends=`) are added; soft dependencies are not, so they
/// are listed: libcrc32c (for nf_tables, nf_conntrack) fails to load without a crc32c
/// implementation (`softdep=pre: crc32c`, an alias of crc32c_generic). A module a kernel
/// neither builds in nor ships is a warning, and the tests that need it fail.
const GUEST_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_net",
    "veth",
    "crc32c_generic",
    "nf_tables",
    "nf_conntrack",
    "nft_ct",
    "sch_tbf",
    "sch_htb",
    "sch_prio",
    "sch_ingress",
];

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

/// A module to load, as a plain `.ko` file.
pub struct Module {
    /// Its path under `/lib/modules/<release>/`, ending in `.ko`.
    pub rel: String,
    /// The file to copy: the package's own, or its decompressed copy.
    pub file: PathBuf,
}

/// The plain `.ko` of a module file: itself, or (for `.ko.xz`, `.ko.zst`, `.ko.gz`, as
/// Debian's 6.12 ships them) a copy decompressed into `cache`, since busybox's insmod
/// reads only plain modules.
fn plain(path: &Path, modules: &Path, cache: &Path) -> Result<Module> {
    let rel = path.strip_prefix(modules)?.to_string_lossy().into_owned();
    if rel.ends_with(".ko") {
        return Ok(Module {
            rel,
            file: path.to_path_buf(),
        });
    }
    let (stem, tool) = [(".ko.xz", "xz"), (".ko.zst", "zstd"), (".ko.gz", "gzip")]
        .iter()
        .find_map(|(ext, tool)| Some((rel.strip_suffix(ext)?, *tool)))
        .with_context(|| format!("{}: unknown module compression", path.display()))?;
    let rel = format!("{stem}.ko");
    let file = cache.join(&rel);
    if !file.is_file() {
        let data = Command::new(tool)
            .arg("-dc")
            .arg(path)
            .output()
            .with_context(|| format!("cannot run `{tool}` (to decompress kernel modules)"))?;
        if !data.status.success() {
            bail!(
                "`{tool} -dc {}` failed: {}",
                path.display(),
                String::from_utf8_lossy(&data.stderr).trim()
            );
        }
        if let Some(dir) = file.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::write(&file, &data.stdout)
            .with_context(|| format!("cannot write {}", file.display()))?;
    }
    Ok(Module { rel, file })
}

/// The modules to load for [`GUEST_MODULES`], dependencies first; modules built into the
/// kernel are left out. Compressed modules are decompressed into `cache`.
pub fn load_order(modules: &Path, cache: &Path) -> Result<Vec<Module>> {
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

    struct Walk<'a> {
        modules: &'a Path,
        cache: &'a Path,
        index: HashMap<String, PathBuf>,
        builtin: BTreeSet<String>,
        seen: BTreeSet<String>,
        order: Vec<Module>,
    }
    fn visit(name: &str, w: &mut Walk) -> Result<()> {
        if w.builtin.contains(name) || !w.seen.insert(name.to_string()) {
            return Ok(());
        }
        let Some(path) = w.index.get(name) else {
            eprintln!(
                "warning: module {name} is neither built in nor shipped; the guest runs without it"
            );
            return Ok(());
        };
        let module = plain(path, w.modules, w.cache)?;
        let data = fs::read(&module.file)
            .with_context(|| format!("cannot read {}", module.file.display()))?;
        for dep in module_depends(&data) {
            visit(&dep, w)?;
        }
        w.order.push(module);
        Ok(())
    }
    let mut w = Walk {
        modules,
        cache,
        index,
        builtin,
        seen: BTreeSet::new(),
        order: Vec::new(),
    };
    for name in GUEST_MODULES {
        visit(name, &mut w)?;
    }
    Ok(w.order)
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
}
