//! `cargo xtask package`: the Debian package, `target/debian/retina-agent_<version>_<arch>.deb`,
//! built by cargo-deb from `[package.metadata.deb]` in retina-agent/Cargo.toml: control
//! file, `Depends:` (dpkg-shlibdeps), conffiles (everything under /etc), copyright, the
//! compressed changelog, and the systemd parts of the maintainer scripts
//! (deb-systemd-helper / deb-systemd-invoke) around the ones in packaging/debian/. It
//! writes no md5sums (dpkg computes them when it unpacks; `dpkg --verify` works).
//!
//! What this adds, because cargo-deb cannot do it:
//! - cargo-deb itself, built into `.tools/` like bpf-linker;
//! - the binary: the agent embeds the eBPF object, which a plain `cargo build` (cargo-deb's)
//!   does not build, so cargo-deb runs with `--no-build` on a binary built by
//!   `cargo xtask build --release` (or given with `--agent-binary`);
//! - the man pages and shell completions, which that binary writes from its own clap
//!   definitions (`retina-agent generate`), so they describe exactly what is packaged
//!   (and the pages compressed: cargo-deb leaves files from the target dir as they are);
//! - two checks: the binary reports the crate's version, and packaging/debian/changelog's
//!   newest entry is the package's version.
//!
//! cargo-deb resolves the `target/release/...` assets in its target dir; this stages the
//! binary and the generated files in one of its own (`target/debian/stage`), so a given
//! binary is packaged as it is and the workspace's own target/release is never touched.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, ensure};

use crate::{
    install, provision,
    util::{self, Workspace},
};

const PACKAGE: &str = "retina-agent";
const CHANGELOG: &str = "packaging/debian/changelog";

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
    for tool in ["dpkg-deb", "dpkg-shlibdeps"] {
        ensure!(
            util::which(tool).is_some(),
            "`{tool}` not found: building a .deb needs dpkg-dev (Debian: `apt-get install dpkg-dev`)"
        );
    }
    let ws = Workspace::locate()?;
    util::banner(&format!(
        "provisioning: cargo-deb {}",
        provision::CARGO_DEB_VERSION
    ));
    let cargo_deb = provision::cargo_deb(&ws)?;
    let agent = install::agent_binary(&ws, args.agent_binary.as_deref())?;

    let stage = ws.target_dir.join("debian/stage");
    if stage.exists() {
        fs::remove_dir_all(&stage).with_context(|| format!("cannot remove {}", stage.display()))?;
    }
    let release = stage.join("release");
    util::banner(&format!("staging {}", release.display()));
    let bin = release.join(PACKAGE);
    install::write_file(
        &bin,
        &fs::read(&agent).with_context(|| format!("cannot read {}", agent.display()))?,
        0o755,
    )?;
    check_version(&bin, &crate_version(&ws)?)?;
    util::run(
        Command::new(&bin)
            .args(["generate", "--out-dir"])
            .arg(&release),
    )
    .context("the agent could not write its man pages and completions")?;
    compress_man_pages(&release.join("man"))?;

    let out_dir = match &args.out_dir {
        Some(dir) => dir.clone(),
        None => ws.target_dir.join("debian"),
    };
    fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    util::banner("cargo-deb");
    let mut cmd = Command::new(&cargo_deb);
    cmd.current_dir(&ws.root)
        .env("CARGO_TARGET_DIR", &stage)
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .args(["--package", PACKAGE, "--no-build", "--output"])
        .arg(&out_dir);
    if let Some(maintainer) = maintainer() {
        cmd.arg("--maintainer").arg(maintainer);
    }
    // Its warnings go to the terminal; stdout ends with the path of the .deb.
    cmd.stderr(Stdio::inherit());
    eprintln!("$ {}", util::display(&cmd));
    let printed = util::capture(&mut cmd)?;
    let deb = printed
        .lines()
        .map(str::trim)
        .rfind(|line| line.ends_with(".deb"))
        .map(PathBuf::from)
        .with_context(|| format!("cargo-deb printed no .deb path: {printed:?}"))?;
    ensure!(
        deb.is_file(),
        "cargo-deb reported {}, which does not exist",
        deb.display()
    );
    check_changelog(&ws, &deb)?;

    eprintln!("\n{}", deb.display());
    eprintln!("install with: apt-get install {}", deb.display());
    Ok(())
}

/// `gzip -9n` every page, as Debian policy (12.1) wants them installed. cargo-deb
/// compresses man pages only when they are not under the target dir.
fn compress_man_pages(dir: &Path) -> Result<()> {
    let mut pages = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("cannot list {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|ext| ext == "1") {
            pages.push(path);
        }
    }
    ensure!(
        !pages.is_empty(),
        "the agent wrote no man page into {}",
        dir.display()
    );
    util::run(Command::new("gzip").args(["-9n", "--force"]).args(&pages))
}

/// The retina-agent crate's version, from `cargo metadata`.
fn crate_version(ws: &Workspace) -> Result<String> {
    let mut cmd = util::cargo();
    cmd.current_dir(&ws.root)
        .args(["metadata", "--format-version", "1", "--no-deps"]);
    let json: serde_json::Value = serde_json::from_str(&util::capture(&mut cmd)?)
        .context("`cargo metadata` printed invalid JSON")?;
    json["packages"]
        .as_array()
        .and_then(|packages| packages.iter().find(|p| p["name"] == PACKAGE))
        .and_then(|agent| agent["version"].as_str())
        .map(str::to_owned)
        .context("`cargo metadata` lists no retina-agent package with a version")
}

/// The staged binary must be the crate's version (not a stale build):
/// `retina-agent 0.1.0 (git commit ...)`.
fn check_version(bin: &Path, version: &str) -> Result<()> {
    let out = util::capture(Command::new(bin).arg("--version"))?;
    let want = format!("{PACKAGE} {version} (");
    ensure!(
        out.starts_with(&want) && out.trim_end().ends_with(')'),
        "{} --version printed {:?}, expected {want}...)",
        bin.display(),
        out.trim()
    );
    Ok(())
}

/// The version of the newest entry of a Debian changelog: `retina-agent (0.1.0-1) ...`.
fn changelog_version(text: &str) -> Option<&str> {
    let first = text.lines().find(|line| !line.trim().is_empty())?;
    let rest = first
        .strip_prefix(PACKAGE)?
        .trim_start()
        .strip_prefix('(')?;
    rest.split_once(')').map(|(version, _)| version)
}

/// packaging/debian/changelog must start with the version the package got, or lintian and
/// `apt changelog` show an outdated history.
fn check_changelog(ws: &Workspace, deb: &Path) -> Result<()> {
    let version = util::capture(
        Command::new("dpkg-deb")
            .arg("--field")
            .arg(deb)
            .arg("Version"),
    )?;
    let version = version.trim();
    let path = ws.root.join(CHANGELOG);
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let newest = changelog_version(&text)
        .with_context(|| format!("{CHANGELOG}: the first line is not `{PACKAGE} (VERSION) ...`"))?;
    ensure!(
        newest == version,
        "{CHANGELOG}: the newest entry is {newest}, but the package is {version}: add an entry \
         for {version} (`dch -c {CHANGELOG} -v {version}`)"
    );
    Ok(())
}

/// `Name <email>` from DEBFULLNAME and DEBEMAIL (the Debian tools' convention), else the
/// manifest's `maintainer`.
fn maintainer() -> Option<String> {
    let name = std::env::var("DEBFULLNAME")
        .ok()
        .filter(|s| !s.is_empty())?;
    let email = std::env::var("DEBEMAIL").ok().filter(|s| !s.is_empty())?;
    Some(format!("{name} <{email}>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changelog_versions() {
        let text = "retina-agent (1.2.3~rc.1-1) unstable; urgency=medium\n\n  * x\n";
        assert_eq!(changelog_version(text), Some("1.2.3~rc.1-1"));
        assert_eq!(
            changelog_version("\nretina-agent (0.1.0-1) unstable;"),
            Some("0.1.0-1")
        );
        assert_eq!(changelog_version("other (0.1.0-1) unstable;"), None);
        assert_eq!(changelog_version("retina-agent 0.1.0"), None);
    }

    #[test]
    fn the_repository_changelog_is_parsed() {
        let text = include_str!("../../packaging/debian/changelog");
        assert!(changelog_version(text).is_some(), "{text}");
    }
}
