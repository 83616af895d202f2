//! `cargo xtask package`: a Debian package, `target/debian/retina-agent_<version>_<arch>.deb`.
//!
//! The tree is staged with the same code as `cargo xtask install --prefix /usr --destdir`,
//! in the layout debhelper uses (`target/debian/work/debian/retina-agent/`), so that
//! `dpkg-shlibdeps` can compute the real minimum versions of the shared libraries the
//! binary links. Then the control file, conffiles, md5sums and the maintainer scripts are
//! written and `dpkg-deb --build --root-owner-group` builds the archive.

use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{
    install::{self, CONFIG_DIR, CONFIG_NAME},
    util::{self, Workspace},
};

const PACKAGE: &str = "retina-agent";
/// Used when neither DEBFULLNAME nor DEBEMAIL is set (the Debian tools' convention).
const DEFAULT_MAINTAINER: &str = "retina-agent maintainers <retina-agent@example.invalid>";
const SYNOPSIS: &str = "node network telemetry: kernel packet drops, NIC and interface counters";
const LONG_DESCRIPTION: &[&str] = &[
    "retina-agent counts every packet the kernel drops, by drop reason, interface and",
    "network namespace (an eBPF program on the kfree_skb tracepoint), and collects NIC",
    "driver statistics (ethtool), interface counters (rtnetlink) and protocol counters",
    "(/proc/net). It exports them as OpenTelemetry metrics (OTLP) and on a Prometheus",
    "endpoint (127.0.0.1:9465 by default).",
    ".",
    "The systemd unit runs it as a dynamic user with only CAP_BPF and CAP_PERFMON.",
];

#[derive(clap::Args)]
pub struct Args {
    /// Write the .deb into DIR instead of target/debian.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
    /// Package this already built agent instead of building one (CI, tests).
    #[arg(long, value_name = "FILE")]
    pub agent_binary: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<()> {
    for tool in ["dpkg-deb", "dpkg"] {
        ensure!(
            util::which(tool).is_some(),
            "`{tool}` not found: building a .deb needs dpkg (Debian: `apt-get install dpkg-dev`)"
        );
    }
    let ws = Workspace::locate()?;
    let meta = Metadata::read(&ws)?;
    let arch = util::capture(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_owned();
    let version = debian_version(&meta.version)?;

    let agent = install::agent_binary(&ws, args.agent_binary.as_deref())?;
    let work = ws.target_dir.join("debian/work");
    let staging = work.join("debian").join(PACKAGE);
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("cannot remove {}", work.display()))?;
    }
    util::banner(&format!("staging {}", staging.display()));
    install::install(&ws, &agent, Path::new("/usr"), Some(&staging))?;
    check_version(&staging, &meta.version)?;

    let depends = depends(&work, &staging)?;
    let control = control(&ControlFields {
        version: &version,
        arch: &arch,
        maintainer: &maintainer(),
        depends: &depends,
        homepage: meta.homepage.as_deref(),
        installed_size_kib: installed_size_kib(&staging)?,
    });
    let debian = staging.join("DEBIAN");
    install::write_file(&debian.join("control"), control.as_bytes(), 0o644)?;
    let conffiles = format!("/{CONFIG_DIR}/{CONFIG_NAME}\n");
    install::write_file(&debian.join("conffiles"), conffiles.as_bytes(), 0o644)?;
    install::write_file(
        &debian.join("md5sums"),
        md5sums(&staging)?.as_bytes(),
        0o644,
    )?;
    for (name, script) in [("postinst", POSTINST), ("prerm", PRERM), ("postrm", POSTRM)] {
        install::write_file(&debian.join(name), script.as_bytes(), 0o755)?;
    }

    let out_dir = match &args.out_dir {
        Some(dir) => dir.clone(),
        None => ws.target_dir.join("debian"),
    };
    fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let deb = out_dir.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    util::banner(&format!("building {}", deb.display()));
    util::run(
        Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group"])
            .arg(&staging)
            .arg(&deb),
    )?;
    eprintln!("\n{}", deb.display());
    eprintln!("install with: apt-get install {}", deb.display());
    Ok(())
}

/// What the package takes from `cargo metadata`.
struct Metadata {
    version: String,
    homepage: Option<String>,
}

impl Metadata {
    fn read(ws: &Workspace) -> Result<Self> {
        let mut cmd = util::cargo();
        cmd.current_dir(&ws.root)
            .args(["metadata", "--format-version", "1", "--no-deps"]);
        let json: serde_json::Value = serde_json::from_str(&util::capture(&mut cmd)?)
            .context("`cargo metadata` printed invalid JSON")?;
        let agent = json["packages"]
            .as_array()
            .and_then(|packages| packages.iter().find(|p| p["name"] == PACKAGE))
            .context("`cargo metadata` lists no retina-agent package")?;
        let version = agent["version"]
            .as_str()
            .context("retina-agent has no version")?
            .to_owned();
        let homepage = agent["homepage"]
            .as_str()
            .or_else(|| agent["repository"].as_str())
            .map(str::to_owned);
        Ok(Metadata { version, homepage })
    }
}

/// A Cargo (SemVer) version as a Debian version: a pre-release sorts before the release in
/// SemVer, which in Debian takes `~` (`1.0.0-rc.1` becomes `1.0.0~rc.1`).
pub fn debian_version(cargo: &str) -> Result<String> {
    let (core, build) = match cargo.split_once('+') {
        Some((core, build)) => (core, Some(build)),
        None => (cargo, None),
    };
    let mut out = match core.split_once('-') {
        Some((release, pre)) => format!("{release}~{pre}"),
        None => core.to_owned(),
    };
    if let Some(build) = build {
        out.push('+');
        out.push_str(build);
    }
    let valid = out.starts_with(|c: char| c.is_ascii_digit())
        && out
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+~".contains(c));
    ensure!(
        valid,
        "cannot express version {cargo:?} as a Debian version"
    );
    Ok(out)
}

/// The staged binary must report the version the package carries.
fn check_version(staging: &Path, version: &str) -> Result<()> {
    let bin = staging.join("usr/bin").join(PACKAGE);
    let out = util::capture(Command::new(&bin).arg("--version"))?;
    let want = format!("{PACKAGE} {version}");
    ensure!(
        out.trim() == want,
        "{} --version printed {:?}, expected {want:?}",
        bin.display(),
        out.trim()
    );
    Ok(())
}

/// `Depends:` from `dpkg-shlibdeps` (the minimum versions of the libraries the binary
/// needs), or plain `libc6` when dpkg-dev is not installed.
fn depends(work: &Path, staging: &Path) -> Result<String> {
    if util::which("dpkg-shlibdeps").is_none() {
        eprintln!(
            "warning: dpkg-shlibdeps (Debian: dpkg-dev) not found: Depends: libc6 without a \
             minimum version"
        );
        return Ok("libc6".to_owned());
    }
    // dpkg-shlibdeps reads debian/control of a source package in its working directory.
    let control = format!("Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: any\n");
    install::write_file(&work.join("debian/control"), control.as_bytes(), 0o644)?;
    let bin = staging.join("usr/bin").join(PACKAGE);
    let rel = bin.strip_prefix(work).unwrap_or(&bin);
    let out = util::capture(
        Command::new("dpkg-shlibdeps")
            .current_dir(work)
            .arg("-O")
            .arg(rel),
    )?;
    parse_shlibdeps(&out)
}

/// The value of `shlibs:Depends=` in dpkg-shlibdeps' output.
fn parse_shlibdeps(out: &str) -> Result<String> {
    let depends = out
        .lines()
        .find_map(|line| line.strip_prefix("shlibs:Depends="))
        .map(str::trim)
        .filter(|d| !d.is_empty());
    match depends {
        Some(depends) => Ok(depends.to_owned()),
        None => bail!("dpkg-shlibdeps printed no shlibs:Depends: {out:?}"),
    }
}

fn maintainer() -> String {
    let name = std::env::var("DEBFULLNAME").ok().filter(|s| !s.is_empty());
    let email = std::env::var("DEBEMAIL").ok().filter(|s| !s.is_empty());
    match (name, email) {
        (Some(name), Some(email)) => format!("{name} <{email}>"),
        _ => DEFAULT_MAINTAINER.to_owned(),
    }
}

struct ControlFields<'a> {
    version: &'a str,
    arch: &'a str,
    maintainer: &'a str,
    depends: &'a str,
    homepage: Option<&'a str>,
    installed_size_kib: u64,
}

fn control(f: &ControlFields<'_>) -> String {
    let mut out = format!(
        "Package: {PACKAGE}\nVersion: {}\nArchitecture: {}\nMaintainer: {}\n\
         Installed-Size: {}\nDepends: {}\nSection: net\nPriority: optional\n",
        f.version, f.arch, f.maintainer, f.installed_size_kib, f.depends
    );
    if let Some(homepage) = f.homepage {
        out.push_str(&format!("Homepage: {homepage}\n"));
    }
    out.push_str(&format!("Description: {SYNOPSIS}\n"));
    for line in LONG_DESCRIPTION {
        out.push_str(&format!(" {line}\n"));
    }
    out
}

/// Every regular file under `dir` (sorted, relative), skipping `DEBIAN/`.
fn files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in
            fs::read_dir(&current).with_context(|| format!("cannot list {}", current.display()))?
        {
            let entry = entry?;
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                if path != dir.join("DEBIAN") {
                    stack.push(path);
                }
            } else if kind.is_file() {
                out.insert(path.strip_prefix(dir).expect("under dir").to_path_buf());
            }
        }
    }
    Ok(out.into_iter().collect())
}

/// The payload size in KiB as dpkg-gencontrol computes it (per file, rounded up).
fn installed_size_kib(staging: &Path) -> Result<u64> {
    let mut total = 0;
    for file in files(staging)? {
        let len = fs::metadata(staging.join(&file))?.len();
        total += len.div_ceil(1024);
    }
    Ok(total)
}

/// DEBIAN/md5sums (as dh_md5sums writes it), without conffiles, which dpkg tracks itself.
fn md5sums(staging: &Path) -> Result<String> {
    let conffile = Path::new(CONFIG_DIR).join(CONFIG_NAME);
    let files: Vec<PathBuf> = files(staging)?
        .into_iter()
        .filter(|f| f != &conffile)
        .collect();
    let out = util::capture(Command::new("md5sum").current_dir(staging).args(&files))?;
    Ok(out)
}

/// On install: enable the unit (also without a running systemd, e.g. in an image build,
/// where `systemctl enable` only creates the symlinks), and with a running systemd reload
/// it and start the agent. On upgrade: restart it if it runs, so the new binary is used.
const POSTINST: &str = r#"#!/bin/sh
set -e
UNIT=retina-agent.service
if [ "$1" = configure ] || [ "$1" = abort-upgrade ] || [ "$1" = abort-deconfigure ] || [ "$1" = abort-remove ]; then
    if [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
    fi
    if [ "$1" = configure ] && [ -z "$2" ] && command -v systemctl >/dev/null; then
        # First installation: enable at boot. Upgrades keep the administrator's choice.
        systemctl enable "$UNIT" >/dev/null 2>&1 || true
    fi
    if [ -d /run/systemd/system ]; then
        if [ -z "$2" ]; then
            systemctl start "$UNIT" || true
        else
            systemctl try-restart "$UNIT" || true
        fi
    fi
fi
exit 0
"#;

/// On removal: stop and disable the agent. On upgrade it keeps running until postinst
/// restarts it with the new binary.
const PRERM: &str = r#"#!/bin/sh
set -e
UNIT=retina-agent.service
if [ "$1" = remove ]; then
    if [ -d /run/systemd/system ]; then
        systemctl stop "$UNIT" || true
    fi
    if command -v systemctl >/dev/null; then
        systemctl disable "$UNIT" >/dev/null 2>&1 || true
    fi
fi
exit 0
"#;

/// After removal: let systemd forget the unit. Purge also removes what the administrator
/// added next to the configuration (dpkg removes the conffile itself).
const POSTRM: &str = r#"#!/bin/sh
set -e
if [ "$1" = remove ] || [ "$1" = purge ]; then
    if [ -d /run/systemd/system ]; then
        systemctl --system daemon-reload >/dev/null || true
    fi
fi
if [ "$1" = purge ]; then
    rm -f /etc/retina-agent/environment
    rmdir --ignore-fail-on-non-empty /etc/retina-agent 2>/dev/null || true
fi
exit 0
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_versions_become_debian_versions() {
        assert_eq!(debian_version("0.1.0").unwrap(), "0.1.0");
        assert_eq!(debian_version("1.2.3-rc.1").unwrap(), "1.2.3~rc.1");
        assert_eq!(
            debian_version("1.2.3-rc.1+g1234").unwrap(),
            "1.2.3~rc.1+g1234"
        );
        assert!(debian_version("v1").is_err());
    }

    #[test]
    fn shlibdeps_output() {
        let out = "shlibs:Depends=libc6 (>= 2.34), libgcc-s1 (>= 4.2)\n";
        assert_eq!(
            parse_shlibdeps(out).unwrap(),
            "libc6 (>= 2.34), libgcc-s1 (>= 4.2)"
        );
        assert!(parse_shlibdeps("").is_err());
    }

    #[test]
    fn control_has_the_required_fields() {
        let text = control(&ControlFields {
            version: "0.1.0",
            arch: "amd64",
            maintainer: "A <a@example.invalid>",
            depends: "libc6 (>= 2.34)",
            homepage: None,
            installed_size_kib: 42,
        });
        for field in [
            "Package: retina-agent\n",
            "Version: 0.1.0\n",
            "Architecture: amd64\n",
            "Maintainer: A <a@example.invalid>\n",
            "Depends: libc6 (>= 2.34)\n",
            "Installed-Size: 42\n",
            "Description: node network telemetry",
        ] {
            assert!(text.contains(field), "{field:?} in {text}");
        }
        // Every continuation line of the long description starts with a space.
        let description = text.split("Description:").nth(1).unwrap();
        assert!(description.lines().skip(1).all(|l| l.starts_with(' ')));
    }

    #[test]
    fn maintainer_scripts_are_posix_sh() {
        for script in [POSTINST, PRERM, POSTRM] {
            assert!(script.starts_with("#!/bin/sh\nset -e\n"));
            let status = Command::new("sh")
                .args(["-n", "-c", script])
                .status()
                .unwrap();
            assert!(status.success(), "{script}");
        }
    }
}
