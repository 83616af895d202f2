//! The Debian kernel packages the guests boot: which ones by default (the newest build of
//! each series apt knows), and fetching one into `.tools/kernels/PKG/`.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::util::{self, Privilege, Workspace};

/// A kernel series booted by default: packages named `PREFIX<N>SUFFIX`, the highest `N`
/// wins (the ABI number for 6.1, the stable patch level for 6.12).
pub struct Series {
    pub prefix: &'static str,
    pub suffix: &'static str,
}

/// Debian bookworm's 6.1 cloud kernel and the 6.12 long-term kernel (Debian 13's, built
/// for bookworm): the kernels `cargo xtask test-kernel` boots unless `--kernel` names others.
pub const DEFAULT_SERIES: &[Series] = &[
    Series {
        prefix: "linux-image-6.1.0-",
        suffix: "-cloud-amd64-unsigned",
    },
    Series {
        prefix: "linux-image-6.12.",
        suffix: "+deb12-cloud-amd64-unsigned",
    },
];

pub struct Kernel {
    pub package: String,
    pub version: String,
    pub vmlinuz: PathBuf,
    /// `/lib/modules/<release>` inside the unpacked package, if it ships modules.
    pub modules: Option<PathBuf>,
    pub release: String,
    config: String,
}

impl Kernel {
    pub fn config_value(&self, key: &str) -> Option<&str> {
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

/// `^PREFIX[0-9]+SUFFIX$` for `apt-cache search`, with the regex characters of the names
/// escaped.
fn pattern(series: &Series) -> String {
    let escape = |s: &str| s.replace('.', "\\.").replace('+', "\\+");
    format!("^{}[0-9]+{}$", escape(series.prefix), escape(series.suffix))
}

/// The number between prefix and suffix, if `name` is a package of `series`.
fn build_number(series: &Series, name: &str) -> Option<u32> {
    name.strip_prefix(series.prefix)?
        .strip_suffix(series.suffix)?
        .parse()
        .ok()
}

/// The newest package of `series` in `apt-cache search` output.
fn newest(series: &Series, search_output: &str) -> Option<String> {
    search_output
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|name| Some((build_number(series, name)?, name)))
        .max()
        .map(|(_, name)| name.to_string())
}

fn search(series: &Series) -> Result<Option<String>> {
    let out = util::capture(Command::new("apt-cache").args([
        "search",
        "--names-only",
        &pattern(series),
    ]))?;
    Ok(newest(series, &out))
}

/// The newest package of every series in [`DEFAULT_SERIES`]; runs `apt-get update` once if
/// apt knows none of a series.
pub fn default_kernels(privilege: Privilege) -> Result<Vec<String>> {
    let mut updated = false;
    let mut out = Vec::new();
    for series in DEFAULT_SERIES {
        let mut found = search(series)?;
        if found.is_none() && !updated {
            util::run(apt_get(privilege).arg("update"))?;
            updated = true;
            found = search(series)?;
        }
        match found {
            Some(name) => out.push(name),
            None => bail!(
                "apt knows no {}N{} package: this needs Debian bookworm's sources (or pass \
                 --kernel PKG)",
                series.prefix,
                series.suffix
            ),
        }
    }
    Ok(out)
}

/// Unpacks `package` into `.tools/kernels/PACKAGE/` unless it is there already.
pub fn fetch(ws: &Workspace, package: &str, privilege: Privilege) -> Result<Kernel> {
    if package.contains('/') || package.starts_with('.') {
        bail!("{package:?} is not a Debian package name");
    }
    let kernels = ws.tools.join("kernels");
    let dir = kernels.join(package);
    if !dir.join(".version").is_file() {
        unpack(&kernels, &dir, package, privilege)?;
    }
    open(&dir, package)
}

fn unpack(kernels: &Path, dir: &Path, package: &str, privilege: Privilege) -> Result<()> {
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
        fs::remove_dir_all(dir)?;
    }
    fs::rename(&tmp, dir)?;
    Ok(())
}

fn open(dir: &Path, package: &str) -> Result<Kernel> {
    let version = fs::read_to_string(dir.join(".version"))?.trim().to_string();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_build_of_each_series() {
        let out = "linux-image-6.1.0-9-cloud-amd64-unsigned - Linux 6.1\n\
                   linux-image-6.1.0-57-cloud-amd64-unsigned - Linux 6.1\n\
                   linux-image-6.1.0-56-cloud-amd64-unsigned - Linux 6.1\n\
                   linux-image-6.12.9+deb12-cloud-amd64-unsigned - Linux 6.12\n\
                   linux-image-6.12.118+deb12-cloud-amd64-unsigned - Linux 6.12\n\
                   linux-image-6.12.43+deb12-cloud-amd64-unsigned - Linux 6.12\n";
        assert_eq!(
            newest(&DEFAULT_SERIES[0], out).as_deref(),
            Some("linux-image-6.1.0-57-cloud-amd64-unsigned")
        );
        assert_eq!(
            newest(&DEFAULT_SERIES[1], out).as_deref(),
            Some("linux-image-6.12.118+deb12-cloud-amd64-unsigned")
        );
        assert_eq!(newest(&DEFAULT_SERIES[1], "nothing here\n"), None);
        assert_eq!(
            pattern(&DEFAULT_SERIES[1]),
            "^linux-image-6\\.12\\.[0-9]+\\+deb12-cloud-amd64-unsigned$"
        );
    }
}
