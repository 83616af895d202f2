//! `cargo xtask install`: build the release agent and install it with its systemd unit,
//! default configuration, documentation, Grafana dashboard and alerting rules.
//!
//! Layout (`D` = `--destdir`, empty by default; `P` = `--prefix`, `/usr` by default):
//!
//! | file | installed as | mode |
//! |---|---|---|
//! | the release binary | `D/P/bin/retina-agent` | 0755 |
//! | `packaging/retina-agent.service` | `D/lib/systemd/system/retina-agent.service`, with `ExecStart=` pointing at `P/bin/retina-agent` | 0644 |
//! | `packaging/config.toml` | `D/etc/retina-agent/config.toml` (an existing one is kept, unless staging into a destdir) | 0644 |
//! | `docs/operations.md`, `docs/metrics.md`, `docs/runbooks.md` | `D/P/share/doc/retina-agent/` | 0644 |
//! | `packaging/grafana/retina-agent.json` | `D/P/share/retina-agent/grafana/retina-agent.json` | 0644 |
//! | `packaging/alerts/*.yml` (the Prometheus alerting rules) | `D/P/share/retina-agent/alerts/` | 0644 |
//! | man pages and completions (`retina-agent generate`) | `D/P/share/man/man1/`, `D/P/share/{bash-completion/completions,zsh/vendor-completions,fish/vendor_completions.d}/` | 0644 |
//!
//! `cargo xtask package` installs the same files with cargo-deb (`[package.metadata.deb]`).

use std::{
    fs,
    io::{self, Write as _},
    os::unix::fs::PermissionsExt as _,
    path::{Component, Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};

use crate::{
    build::{self, Profile},
    util::{self, Workspace},
};

/// The unit as the repository holds it; its ExecStart names [`UNIT_BINARY`].
pub const UNIT_SOURCE: &str = "packaging/retina-agent.service";
/// The default configuration (written by the config owners; installed, never generated).
pub const CONFIG_SOURCE: &str = "packaging/config.toml";
pub const DASHBOARD_SOURCE: &str = "packaging/grafana/retina-agent.json";
/// The Prometheus alerting rules: every `*.yml` directly in it (not its `tests/`).
pub const ALERTS_SOURCE: &str = "packaging/alerts";
/// Documentation installed next to the binary (those that exist).
const DOCS: &[&str] = &["docs/operations.md", "docs/metrics.md", "docs/runbooks.md"];

/// The binary path the unit in the repository names (the default prefix).
const UNIT_BINARY: &str = "/usr/bin/retina-agent";
const DEFAULT_PREFIX: &str = "/usr";

pub const UNIT_DIR: &str = "lib/systemd/system";
pub const UNIT_NAME: &str = "retina-agent.service";
pub const CONFIG_DIR: &str = "etc/retina-agent";
pub const CONFIG_NAME: &str = "config.toml";

#[derive(clap::Args)]
pub struct Args {
    /// Installation prefix: the binary goes to PREFIX/bin, documentation to PREFIX/share
    /// (the unit's ExecStart= is rewritten to match).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PREFIX)]
    pub prefix: PathBuf,
    /// Stage the installation under DIR instead of /, e.g. for packaging. Paths inside the
    /// installed files do not contain DIR; an existing configuration there is replaced.
    #[arg(long, value_name = "DIR")]
    pub destdir: Option<PathBuf>,
    /// Install this already built agent instead of building one (CI, tests). It must have
    /// been built with the eBPF object (`cargo xtask build --release`).
    #[arg(long, value_name = "FILE")]
    pub agent_binary: Option<PathBuf>,
}

pub fn run(args: &Args) -> Result<()> {
    let prefix = check_prefix(&args.prefix)?;
    let ws = Workspace::locate()?;
    // Fail before the build if the sources are not all there.
    Sources::locate(&ws)?;
    let agent = agent_binary(&ws, args.agent_binary.as_deref())?;
    let destdir = args.destdir.as_deref();
    let done = install(&ws, &agent, &prefix, destdir)?;
    util::banner("installed");
    for line in &done {
        eprintln!("  {line}");
    }
    if destdir.is_none() {
        eprintln!(
            "\nTo start the agent now and at every boot:\n  \
             systemctl daemon-reload && systemctl enable --now {UNIT_NAME}\n\
             Logs: journalctl -u {UNIT_NAME}; metrics: curl -s http://127.0.0.1:9465/metrics"
        );
    }
    Ok(())
}

/// `given` if set (it must exist), else a fresh release build.
pub fn agent_binary(ws: &Workspace, given: Option<&Path>) -> Result<PathBuf> {
    match given {
        Some(path) => {
            ensure!(
                path.is_file(),
                "--agent-binary {} is not a file",
                path.display()
            );
            Ok(path.to_path_buf())
        }
        None => Ok(build::build(ws, Profile::Release)?.agent),
    }
}

/// The prefix, absolute and normalized (no `.`, `..` or trailing slash).
pub fn check_prefix(prefix: &Path) -> Result<PathBuf> {
    ensure!(
        prefix.is_absolute(),
        "--prefix must be an absolute path (got {})",
        prefix.display()
    );
    let mut clean = PathBuf::from("/");
    for part in prefix.components() {
        match part {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(name) => clean.push(name),
            Component::ParentDir | Component::Prefix(_) => {
                bail!("--prefix must not contain `..` (got {})", prefix.display())
            }
        }
    }
    let text = clean
        .to_str()
        .context("--prefix must be valid UTF-8 (it is written into the systemd unit)")?;
    ensure!(
        !text
            .chars()
            .any(|c| c.is_whitespace() || "\"'\\%$;".contains(c)),
        "--prefix {text:?} contains characters that need quoting in a systemd unit"
    );
    for hidden in ["/home", "/root", "/run/user"] {
        if clean.starts_with(hidden) {
            eprintln!(
                "warning: the unit sets ProtectHome=yes, so systemd cannot run a binary under \
                 {hidden} ({text}/bin/retina-agent): use a prefix such as /usr/local or /opt"
            );
        }
    }
    Ok(clean)
}

/// The files install copies from the repository.
struct Sources {
    unit: PathBuf,
    config: PathBuf,
    dashboard: Option<PathBuf>,
    docs: Vec<PathBuf>,
    alerts: Vec<PathBuf>,
}

impl Sources {
    fn locate(ws: &Workspace) -> Result<Self> {
        let unit = ws.root.join(UNIT_SOURCE);
        ensure!(unit.is_file(), "{} is missing", unit.display());
        let config = ws.root.join(CONFIG_SOURCE);
        ensure!(
            config.is_file(),
            "{} (the commented default configuration) is missing",
            config.display()
        );
        let dashboard = Some(ws.root.join(DASHBOARD_SOURCE)).filter(|p| p.is_file());
        let docs = DOCS
            .iter()
            .map(|doc| ws.root.join(doc))
            .filter(|p| p.is_file())
            .collect();
        let mut alerts: Vec<PathBuf> = match fs::read_dir(ws.root.join(ALERTS_SOURCE)) {
            Ok(dir) => dir
                .map(|e| e.map(|e| e.path()))
                .collect::<io::Result<Vec<_>>>()
                .with_context(|| format!("cannot list {ALERTS_SOURCE}"))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot list {ALERTS_SOURCE}")),
        };
        alerts.retain(|p| p.is_file() && p.extension().is_some_and(|x| x == "yml"));
        alerts.sort();
        Ok(Sources {
            unit,
            config,
            dashboard,
            docs,
            alerts,
        })
    }
}

/// Installs `agent` and the packaging files for `prefix` under `destdir` (None: `/`).
/// Returns one line per file saying what was done.
pub fn install(
    ws: &Workspace,
    agent: &Path,
    prefix: &Path,
    destdir: Option<&Path>,
) -> Result<Vec<String>> {
    let sources = Sources::locate(ws)?;
    let root = destdir.unwrap_or(Path::new("/"));
    // A staging tree is built from scratch; on a real system the administrator's
    // configuration wins.
    let mut done = install_tree(&sources, agent, prefix, root, destdir.is_none())?;
    let prefix = root.join(prefix.strip_prefix("/").unwrap_or(prefix));
    done.extend(install_generated(
        &prefix.join("bin/retina-agent"),
        &prefix,
    )?);
    Ok(done)
}

fn install_tree(
    sources: &Sources,
    agent: &Path,
    prefix: &Path,
    root: &Path,
    keep_config: bool,
) -> Result<Vec<String>> {
    let under = |path: &Path| root.join(path.strip_prefix("/").unwrap_or(path));
    let mut done = Vec::new();

    let bin = under(&prefix.join("bin/retina-agent"));
    copy_file(agent, &bin, 0o755)?;
    if strip(&bin) {
        done.push(format!("{} (stripped)", bin.display()));
    } else {
        done.push(bin.display().to_string());
    }

    let unit_text = fs::read_to_string(&sources.unit)
        .with_context(|| format!("cannot read {}", sources.unit.display()))?;
    let unit = under(&Path::new("/").join(UNIT_DIR).join(UNIT_NAME));
    write_file(&unit, rewrite_unit(&unit_text, prefix)?.as_bytes(), 0o644)?;
    done.push(format!(
        "{} (ExecStart={}/bin/retina-agent ...)",
        unit.display(),
        prefix.display()
    ));

    let config = under(&Path::new("/").join(CONFIG_DIR).join(CONFIG_NAME));
    if keep_config && fs::symlink_metadata(&config).is_ok() {
        done.push(format!(
            "{} kept: it exists (the new default is {})",
            config.display(),
            sources.config.display()
        ));
    } else {
        copy_file(&sources.config, &config, 0o644)?;
        done.push(config.display().to_string());
    }

    let doc_dir = under(&prefix.join("share/doc/retina-agent"));
    for doc in &sources.docs {
        let to = doc_dir.join(doc.file_name().context("doc without a name")?);
        copy_file(doc, &to, 0o644)?;
        done.push(to.display().to_string());
    }
    if let Some(dashboard) = &sources.dashboard {
        let to = under(&prefix.join("share/retina-agent/grafana/retina-agent.json"));
        copy_file(dashboard, &to, 0o644)?;
        done.push(to.display().to_string());
    }
    let alerts_dir = under(&prefix.join("share/retina-agent/alerts"));
    for rules in &sources.alerts {
        let to = alerts_dir.join(rules.file_name().context("rule file without a name")?);
        copy_file(rules, &to, 0o644)?;
        done.push(to.display().to_string());
    }
    Ok(done)
}

/// The unit with its ExecStart= (and Documentation=) pointing into `prefix`. Fails if the
/// unit no longer names [`UNIT_BINARY`], so an edit of the unit cannot silently produce
/// an installed unit that runs the wrong binary.
pub fn rewrite_unit(unit: &str, prefix: &Path) -> Result<String> {
    let prefix = prefix
        .to_str()
        .context("the prefix must be valid UTF-8")?
        .trim_end_matches('/');
    let prefix = if prefix.is_empty() { "" } else { prefix };
    let mut out = String::with_capacity(unit.len());
    let mut exec_starts = 0;
    for line in unit.split_inclusive('\n') {
        let key = line.split('=').next().unwrap_or("").trim();
        match key {
            "ExecStart" => {
                let Some((_, command)) = line.split_once('=') else {
                    bail!("{UNIT_SOURCE}: ExecStart without `=`: {line}");
                };
                let Some(args) = command.trim_start().strip_prefix(UNIT_BINARY) else {
                    bail!("{UNIT_SOURCE}: ExecStart= must start with {UNIT_BINARY}: {line}");
                };
                exec_starts += 1;
                out.push_str(&format!("ExecStart={prefix}/bin/retina-agent{args}"));
            }
            "Documentation" => {
                out.push_str(&line.replace(
                    &format!("file:{DEFAULT_PREFIX}/share/"),
                    &format!("file:{prefix}/share/"),
                ));
            }
            _ => out.push_str(line),
        }
    }
    ensure!(
        exec_starts == 1,
        "{UNIT_SOURCE} must have exactly one ExecStart= line (found {exec_starts})"
    );
    Ok(out)
}

/// The man pages and shell completions the installed binary writes from its own clap
/// definitions (`retina-agent generate`), installed as the Debian package lays them out,
/// under `prefix` (already inside the destdir).
fn install_generated(bin: &Path, prefix: &Path) -> Result<Vec<String>> {
    let tmp = std::env::temp_dir().join(format!("retina-install-{}", std::process::id()));
    let result = (|| {
        util::capture(Command::new(bin).args(["generate", "--out-dir"]).arg(&tmp))?;
        let mut done = Vec::new();
        for entry in fs::read_dir(tmp.join("man"))? {
            let page = entry?.path();
            let to = prefix
                .join("share/man/man1")
                .join(page.file_name().context("page without a name")?);
            copy_file(&page, &to, 0o644)?;
            done.push(to.display().to_string());
        }
        for (from, to) in [
            (
                "retina-agent.bash",
                "share/bash-completion/completions/retina-agent",
            ),
            (
                "_retina-agent",
                "share/zsh/vendor-completions/_retina-agent",
            ),
            (
                "retina-agent.fish",
                "share/fish/vendor_completions.d/retina-agent.fish",
            ),
        ] {
            let to = prefix.join(to);
            copy_file(&tmp.join("completions").join(from), &to, 0o644)?;
            done.push(to.display().to_string());
        }
        Ok(done)
    })();
    let _ = fs::remove_dir_all(&tmp);
    result
}

/// Creates the missing directories above `path` with mode 0755 whatever the umask: the
/// dynamic user the unit runs as must be able to read /etc/retina-agent.
fn create_parent(path: &Path) -> Result<()> {
    let parent = path.parent().context("path without a parent")?;
    let mut missing = Vec::new();
    let mut dir = parent;
    while fs::symlink_metadata(dir).is_err() {
        missing.push(dir);
        match dir.parent() {
            Some(up) => dir = up,
            None => break,
        }
    }
    for dir in missing.into_iter().rev() {
        fs::create_dir(dir)
            .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(0o755)))
            .map_err(|err| permission_hint(err, dir))?;
    }
    Ok(())
}

fn permission_hint(err: io::Error, path: &Path) -> anyhow::Error {
    if err.kind() == io::ErrorKind::PermissionDenied {
        anyhow::anyhow!(
            "cannot write {}: permission denied. Install as root (`sudo -E cargo xtask \
             install`) or stage the files with --destdir DIR",
            path.display()
        )
    } else {
        anyhow::Error::new(err).context(format!("cannot write {}", path.display()))
    }
}

/// Copies `from` to `to` with `mode`. See [`write_file`].
fn copy_file(from: &Path, to: &Path, mode: u32) -> Result<()> {
    let bytes = fs::read(from).with_context(|| format!("cannot read {}", from.display()))?;
    write_file(to, &bytes, mode)
}

/// Writes `bytes` to a temporary file next to `to`, then renames it over `to`: an upgrade
/// never leaves a half-written file, and replacing the binary of a running agent works
/// (writing into it would fail with ETXTBSY).
pub fn write_file(to: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    create_parent(to)?;
    let name = to.file_name().context("path without a file name")?;
    let tmp = to.with_file_name(format!(".{}.xtask-new", name.to_string_lossy()));
    let result = (|| -> io::Result<()> {
        let mut file = fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        fs::rename(&tmp, to)
    })();
    if let Err(err) = result {
        let _ = fs::remove_file(&tmp);
        return Err(permission_hint(err, to));
    }
    Ok(())
}

/// Strips symbols and debug information from the installed binary (as dh_strip does),
/// when binutils' `strip` is there. Returns whether it did.
fn strip(bin: &Path) -> bool {
    if util::which("strip").is_none() {
        return false;
    }
    let mut cmd = Command::new("strip");
    cmd.arg("--strip-unneeded").arg(bin);
    match util::capture(&mut cmd) {
        Ok(_) => true,
        Err(err) => {
            eprintln!("warning: not stripped: {err:#}");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: &str = "[Unit]\nDocumentation=file:/usr/share/doc/retina-agent/operations.md\n\
                        [Service]\nExecStart=/usr/bin/retina-agent run --config /etc/x.toml\n";

    #[test]
    fn default_prefix_keeps_the_unit() {
        assert_eq!(rewrite_unit(UNIT, Path::new("/usr")).unwrap(), UNIT);
    }

    #[test]
    fn prefix_rewrites_exec_start_and_documentation() {
        let unit = rewrite_unit(UNIT, Path::new("/opt/retina")).unwrap();
        assert!(
            unit.contains("ExecStart=/opt/retina/bin/retina-agent run --config /etc/x.toml\n"),
            "{unit}"
        );
        assert!(unit.contains("file:/opt/retina/share/doc/retina-agent/operations.md"));
        assert!(!unit.contains("/usr/"), "{unit}");
    }

    #[test]
    fn unexpected_exec_start_is_an_error() {
        let unit = UNIT.replace("/usr/bin/retina-agent", "/usr/sbin/other");
        assert!(rewrite_unit(&unit, Path::new("/usr")).is_err());
        let twice = format!("{UNIT}ExecStart=/usr/bin/retina-agent run\n");
        assert!(rewrite_unit(&twice, Path::new("/usr")).is_err());
    }

    #[test]
    fn prefixes_are_checked_and_normalized() {
        assert_eq!(
            check_prefix(Path::new("/usr/local/")).unwrap(),
            PathBuf::from("/usr/local")
        );
        assert_eq!(check_prefix(Path::new("/")).unwrap(), PathBuf::from("/"));
        assert!(check_prefix(Path::new("usr")).is_err());
        assert!(check_prefix(Path::new("/opt/../usr")).is_err());
        assert!(check_prefix(Path::new("/opt/my dir")).is_err());
    }

    /// A scratch directory removed on drop.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("xtask-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn an_existing_configuration_is_kept_unless_staging() {
        let dir = Scratch::new("install");
        let src = dir.0.join("src");
        fs::create_dir_all(&src).unwrap();
        let sources = Sources {
            unit: src.join("unit"),
            config: src.join("config.toml"),
            dashboard: None,
            docs: Vec::new(),
            alerts: Vec::new(),
        };
        fs::write(&sources.unit, UNIT).unwrap();
        fs::write(&sources.config, "# default\n").unwrap();
        let agent = src.join("agent");
        fs::write(
            &agent,
            "not an ELF file, so strip fails and it is kept as is",
        )
        .unwrap();
        let root = dir.0.join("root");
        // Directories the install creates are 0755 whatever the umask.
        // SAFETY: umask has no preconditions (it is process-wide; no other test here
        // creates files).
        let umask = unsafe { libc::umask(0o077) };
        let fresh = install_tree(
            &sources,
            &agent,
            Path::new("/opt/r"),
            &dir.0.join("fresh"),
            true,
        );
        // SAFETY: as above, restoring the previous mask.
        unsafe { libc::umask(umask) };
        fresh.unwrap();
        for sub in [
            "fresh/etc",
            "fresh/etc/retina-agent",
            "fresh/opt/r/bin",
            "fresh/lib/systemd/system",
        ] {
            let mode = fs::metadata(dir.0.join(sub)).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode, 0o755, "{sub}");
        }
        let config = root.join(CONFIG_DIR).join(CONFIG_NAME);
        fs::create_dir_all(config.parent().unwrap()).unwrap();
        fs::write(&config, "# edited by the administrator\n").unwrap();

        let done = install_tree(&sources, &agent, Path::new("/usr/local"), &root, true).unwrap();
        assert_eq!(
            fs::read_to_string(&config).unwrap(),
            "# edited by the administrator\n"
        );
        assert!(done.iter().any(|line| line.contains("kept")), "{done:?}");
        let bin = root.join("usr/local/bin/retina-agent");
        assert_eq!(
            fs::metadata(&bin).unwrap().permissions().mode() & 0o7777,
            0o755
        );
        let unit = fs::read_to_string(root.join(UNIT_DIR).join(UNIT_NAME)).unwrap();
        assert!(
            unit.contains("ExecStart=/usr/local/bin/retina-agent run"),
            "{unit}"
        );

        install_tree(&sources, &agent, Path::new("/usr"), &root, false).unwrap();
        assert_eq!(fs::read_to_string(&config).unwrap(), "# default\n");
        // No temporary file is left behind.
        let leftovers: Vec<_> = fs::read_dir(config.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|name| name != CONFIG_NAME)
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn root_prefix_gives_bin_at_the_top() {
        let unit = rewrite_unit(UNIT, Path::new("/")).unwrap();
        assert!(unit.contains("ExecStart=/bin/retina-agent run"), "{unit}");
    }
}
