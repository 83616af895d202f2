//! The Debian package, end to end: `cargo xtask package` (cargo-deb) builds it; lintian
//! reports no error and no warning; its man pages render; and apt-get installs it,
//! upgrades it over itself, removes and purges it on this machine, with the files,
//! the conffile, the unit's enablement and the systemctl calls checked after every step.
//!
//! PID 1 here is not systemd, so "systemd is running" is simulated for the maintainer
//! scripts only: every apt-get runs in a private mount namespace with a tmpfs on /run
//! (with or without `/run/systemd/system`, which is how the scripts and
//! deb-systemd-invoke detect a running systemd) and a `systemctl` on PATH that records the
//! calls meant for the service manager (daemon-reload, start, try-restart, stop). Queries
//! and offline operations (`is-enabled`, deb-systemd-helper's `--root=/ preset`) go to the
//! real systemctl, which reads the real unit files and symlinks. Everything else is real:
//! dpkg, apt, deb-systemd-helper, deb-systemd-invoke, lintian, man, systemd-analyze.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is the test failing, with its message"
)]

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use anyhow::{Context, Result, ensure};

use retina_tests::*;

const UNIT: &str = "retina-agent.service";
const UNIT_PATH: &str = "/usr/lib/systemd/system/retina-agent.service";
const CONFFILE: &str = "/etc/retina-agent/config.toml";
const ENVIRONMENT: &str = "/etc/retina-agent/environment";
const WANTS: &str = "/etc/systemd/system/multi-user.target.wants/retina-agent.service";
/// What deb-systemd-helper masks the unit with on removal.
const MASK: &str = "/etc/systemd/system/retina-agent.service";

/// Files the package installs besides the conffile (and their modes).
const FILES: &[(&str, u32)] = &[
    ("/usr/bin/retina-agent", 0o755),
    (UNIT_PATH, 0o644),
    ("/usr/share/man/man1/retina-agent.1.gz", 0o644),
    ("/usr/share/man/man1/retina-agent-run.1.gz", 0o644),
    ("/usr/share/man/man1/retina-agent-snapshot.1.gz", 0o644),
    ("/usr/share/man/man1/retina-agent-reasons.1.gz", 0o644),
    ("/usr/share/man/man1/retina-agent-check.1.gz", 0o644),
    ("/usr/share/bash-completion/completions/retina-agent", 0o644),
    ("/usr/share/zsh/vendor-completions/_retina-agent", 0o644),
    (
        "/usr/share/fish/vendor_completions.d/retina-agent.fish",
        0o644,
    ),
    ("/usr/share/doc/retina-agent/operations.md", 0o644),
    ("/usr/share/doc/retina-agent/metrics.md", 0o644),
    ("/usr/share/doc/retina-agent/runbooks.md", 0o644),
    ("/usr/share/doc/retina-agent/copyright", 0o644),
    ("/usr/share/doc/retina-agent/changelog.Debian.gz", 0o644),
    ("/usr/share/retina-agent/grafana/retina-agent.json", 0o644),
    ("/usr/share/retina-agent/alerts/agent.yml", 0o644),
    ("/usr/share/retina-agent/alerts/conntrack.yml", 0o644),
    ("/usr/share/retina-agent/alerts/drops.yml", 0o644),
    ("/usr/share/retina-agent/alerts/nic.yml", 0o644),
    ("/usr/share/retina-agent/alerts/qdisc.yml", 0o644),
    ("/usr/share/retina-agent/alerts/sockets.yml", 0o644),
    ("/usr/share/retina-agent/alerts/softnet.yml", 0o644),
    ("/usr/share/lintian/overrides/retina-agent", 0o644),
];

/// `cargo xtask package --out-dir DIR`: DIR and the one .deb in it.
fn build_deb() -> Result<(TempDir, PathBuf)> {
    let out = TempDir::new("rdeb-out")?;
    xtask(&[
        "package",
        "--out-dir",
        out.path().to_str().context("utf-8")?,
    ])?;
    let debs: Vec<PathBuf> = fs::read_dir(out.path())?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    ensure!(debs.len() == 1, "expected one .deb: {debs:?}");
    let deb = debs[0].clone();
    Ok((out, deb))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn field(deb: &str, name: &str) -> Result<String> {
    let out = run("dpkg-deb", ["--field", deb, name])?;
    Ok(String::from_utf8(out.stdout)?.trim().to_owned())
}

fn mode(path: &str) -> Result<u32> {
    Ok(fs::symlink_metadata(path)
        .with_context(|| format!("{path} missing"))?
        .permissions()
        .mode()
        & 0o7777)
}

#[test]
fn lintian_accepts_the_package_and_its_contents_are_right() -> Result<()> {
    require_root();
    let (_out, deb) = build_deb()?;
    let deb_s = deb.to_str().context("utf-8")?;

    // lintian: any error or warning fails (`--fail-on`), and none may be printed.
    let lintian = |extra: &[&str]| -> Result<(bool, String)> {
        let out = Command::new("lintian")
            .args(["--pedantic", "--display-level", ">=info"])
            .args(extra)
            .arg(&deb)
            .stdin(Stdio::null())
            .output()
            .context("running lintian (provisioned by `cargo xtask test`)")?;
        Ok((out.status.success(), text(&out)))
    };
    let (passed, report) = lintian(&["--fail-on", "error,warning"])?;
    let bad: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("E: ") || l.starts_with("W: "))
        .collect();
    ensure!(passed && bad.is_empty(), "lintian: {bad:#?}\n{report}");
    // The one override (with its reason) is in effect: lintian ran its checks on this
    // package. (With --show-overrides lintian's exit status counts the overridden tag.)
    let (_, shown) = lintian(&["--show-overrides"])?;
    assert!(
        shown.contains("O: retina-agent: initial-upload-closes-no-bugs"),
        "{shown}"
    );

    // Control fields.
    let agent_version =
        String::from_utf8(run(agent_bin().to_str().unwrap(), ["--version"])?.stdout)?;
    let crate_version = agent_version
        .trim()
        .strip_prefix("retina-agent ")
        .and_then(|v| {
            v.split_once(" (git commit ")
                .or(v.split_once(" (not built"))
        })
        .map(|(v, _)| v.replace('-', "~"))
        .with_context(|| format!("--version printed {agent_version:?}"))?;
    let arch = String::from_utf8(run("dpkg", ["--print-architecture"])?.stdout)?;
    let version = format!("{crate_version}-1");
    assert_eq!(
        deb.file_name().and_then(|n| n.to_str()),
        Some(format!("retina-agent_{version}_{}.deb", arch.trim()).as_str())
    );
    assert_eq!(field(deb_s, "Package")?, "retina-agent");
    assert_eq!(field(deb_s, "Version")?, version);
    assert_eq!(field(deb_s, "Section")?, "net");
    assert!(field(deb_s, "Maintainer")?.contains('@'));
    let depends = field(deb_s, "Depends")?;
    assert!(depends.starts_with("libc6 (>= 2."), "Depends: {depends}");
    let conffiles = String::from_utf8(run("dpkg-deb", ["--info", deb_s, "conffiles"])?.stdout)?;
    assert_eq!(conffiles, format!("{CONFFILE}\n"));

    // Files, owners and modes in the archive.
    let contents = String::from_utf8(run("dpkg-deb", ["--contents", deb_s])?.stdout)?;
    let entry = |path: &str| -> Option<(String, String)> {
        contents.lines().find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.last() == Some(&path)).then(|| (cols[0].to_string(), cols[1].to_string()))
        })
    };
    let conffile = format!(".{CONFFILE}");
    for (path, m) in FILES
        .iter()
        .map(|(p, m)| (format!(".{p}"), *m))
        .chain([(conffile, 0o644)])
    {
        let perms = if m == 0o755 {
            "-rwxr-xr-x"
        } else {
            "-rw-r--r--"
        };
        assert_eq!(
            entry(&path),
            Some((perms.to_string(), "0/0".to_string())),
            "{path} in {contents}"
        );
    }

    // The packaged binary is the one under test, and the unit is the repository's.
    let x = TempDir::new("rdeb-x")?;
    run(
        "dpkg-deb",
        ["-x", deb_s, x.path().to_str().context("utf-8")?],
    )?;
    let bin = x.join("usr/bin/retina-agent");
    let printed = String::from_utf8(run(bin.to_str().unwrap(), ["--version"])?.stdout)?;
    assert_eq!(printed, agent_version);
    assert_eq!(
        fs::read_to_string(x.join(&UNIT_PATH[1..]))?,
        fs::read_to_string(repo().join("packaging/retina-agent.service"))?
    );
    // The alerting rules are the repository's, every one of them (and not their tests).
    let mut shipped: Vec<String> = fs::read_dir(x.join("usr/share/retina-agent/alerts"))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    shipped.sort();
    let mut repo_rules: Vec<String> = fs::read_dir(repo().join("packaging/alerts"))?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|n| n.ends_with(".yml"))
        .collect();
    repo_rules.sort();
    assert_eq!(shipped, repo_rules);
    for name in &shipped {
        assert_eq!(
            fs::read(x.join("usr/share/retina-agent/alerts").join(name))?,
            fs::read(repo().join("packaging/alerts").join(name))?,
            "{name}"
        );
    }

    // Every man page renders with `man -l`, without a groff warning (what lintian's
    // groff-message check runs), and says what its command is.
    for (page, name) in [
        ("retina-agent.1.gz", "retina-agent - Kernel packet drops"),
        ("retina-agent-run.1.gz", "retina-agent-run - Run the daemon"),
        (
            "retina-agent-snapshot.1.gz",
            "retina-agent-snapshot - Attach",
        ),
        (
            "retina-agent-reasons.1.gz",
            "retina-agent-reasons - List the drop reasons",
        ),
        (
            "retina-agent-check.1.gz",
            "retina-agent-check - Check that this machine",
        ),
    ] {
        let path = x.join(&format!("usr/share/man/man1/{page}"));
        let out = Command::new("man")
            .args(["--warnings", "-E", "UTF-8", "-l", "-Tutf8"])
            .arg(&path)
            .env("MANWIDTH", "80")
            .env("LC_ALL", "C.UTF-8")
            .stdin(Stdio::null())
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.success() && stderr.trim().is_empty(),
            "man -l {page}: {stderr}"
        );
        let plain = Command::new("man")
            .arg("-l")
            .arg(&path)
            .env("MANWIDTH", "200")
            .env("MAN_KEEP_FORMATTING", "0")
            .env("LC_ALL", "C")
            .stdin(Stdio::null())
            .output()?;
        // `col -b`-like: drop overstrikes (bold) so the text can be searched.
        let rendered = strip_overstrike(&String::from_utf8_lossy(&plain.stdout));
        assert!(
            rendered.contains("NAME") && rendered.contains("SYNOPSIS"),
            "{rendered}"
        );
        // groff justifies the NAME line: compare with runs of spaces as one.
        let words = rendered.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(words.contains(name), "{name:?} in {page}: {rendered}");
    }
    let main = strip_overstrike(&String::from_utf8_lossy(
        &Command::new("man")
            .arg("-l")
            .arg(x.join("usr/share/man/man1/retina-agent.1.gz"))
            .env("MANWIDTH", "200")
            .env("LC_ALL", "C")
            .output()?
            .stdout,
    ));
    for text in [
        "retina-agent-run(1)",
        "--drop-map-entries",
        "FILES",
        CONFFILE,
        "VERSION",
    ] {
        assert!(main.contains(text), "{text:?} in retina-agent(1): {main}");
    }
    assert!(
        main.contains(printed.trim().trim_start_matches("retina-agent ")),
        "{main}"
    );

    // bash loads the completion and binds it to the command.
    let bash = x.join("usr/share/bash-completion/completions/retina-agent");
    let out = run(
        "bash",
        [
            "-c".to_string(),
            format!("source {} && complete -p retina-agent", bash.display()),
        ],
    )?;
    let bound = String::from_utf8_lossy(&out.stdout);
    assert!(bound.trim_end().ends_with(" retina-agent"), "{bound}");
    let zsh = fs::read_to_string(x.join("usr/share/zsh/vendor-completions/_retina-agent"))?;
    assert!(zsh.starts_with("#compdef retina-agent"), "{zsh}");
    let fish = fs::read_to_string(x.join("usr/share/fish/vendor_completions.d/retina-agent.fish"))?;
    assert!(
        fish.contains("complete -c retina-agent") && fish.contains("snapshot"),
        "{fish}"
    );
    Ok(())
}

/// Man output with overstrike bold/underline (`X\bX`, `_\bX`) reduced to the characters.
fn strip_overstrike(text: &str) -> String {
    let mut out: Vec<char> = Vec::with_capacity(text.len());
    for c in text.chars() {
        if c == '\u{8}' {
            out.pop();
            continue;
        }
        out.push(c);
    }
    // Man hyphenates with U+2010 in UTF-8 locales; LC_ALL=C makes it '-', but be sure.
    out.into_iter()
        .map(|c| if c == '\u{2010}' { '-' } else { c })
        .collect()
}

/// Where apt-get runs: a private mount namespace with a tmpfs on /run, `/run/systemd/system`
/// in it when `running`, and a recording `systemctl` first on PATH.
struct Apt {
    dir: TempDir,
    running: bool,
}

impl Apt {
    fn new(running: bool) -> Result<Self> {
        let dir = TempDir::new("rdeb-apt")?;
        let real = which("systemctl").context("systemctl (Debian: systemd) not found")?;
        let bin = dir.join("bin");
        fs::create_dir_all(&bin)?;
        // Every call but the queries is recorded (without --system/--quiet). Queries and
        // offline operations (`--root=`) go to the real systemctl, which reads and writes
        // the real unit files and links; start/stop are remembered for is-active.
        let stub = format!(
            r#"#!/bin/sh
case " $* " in
*" is-enabled "*) SYSTEMD_OFFLINE=1 exec {real} "$@" ;;
*" is-active "*) [ -e {active} ]; exit $? ;;
esac
call=$(printf '%s\n' "$@" | grep -v -e '^--system$' -e '^--quiet$' | tr '\n' ' ')
echo "${{call% }}" >> {log}
case " $* " in
*" --root="*) SYSTEMD_OFFLINE=1 exec {real} "$@" ;;
*" start "*|*" restart "*) touch {active} ;;
*" stop "*) rm -f {active} ;;
esac
"#,
            real = real.display(),
            active = dir.join("active").display(),
            log = dir.join("calls").display(),
        );
        fs::write(bin.join("systemctl"), stub)?;
        fs::set_permissions(bin.join("systemctl"), fs::Permissions::from_mode(0o755))?;
        // A node's service manager runs what deb-systemd-invoke asks for; this machine's
        // Docker-style policy-rc.d (exit 101) forbids it, so it is replaced in the namespace.
        fs::write(dir.join("policy-rc.d"), "#!/bin/sh\nexit 0\n")?;
        fs::set_permissions(dir.join("policy-rc.d"), fs::Permissions::from_mode(0o755))?;
        Ok(Apt { dir, running })
    }

    /// `apt-get -y ARGS` (waiting for the dpkg lock, never prompting); the systemctl calls
    /// it made.
    fn get(&self, args: &[&str]) -> Result<Vec<String>> {
        let _ = fs::remove_file(self.dir.join("calls"));
        let mut setup = "mount -t tmpfs retina-test /run".to_string();
        if self.running {
            setup.push_str(&format!(
                " && mkdir -p /run/systemd/system && \
                 {{ [ ! -e /usr/sbin/policy-rc.d ] || mount --bind {} /usr/sbin/policy-rc.d; }}",
                self.dir.join("policy-rc.d").display()
            ));
        }
        let out = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
            .arg(format!("{setup} && exec \"$@\""))
            .args(["sh", "apt-get", "-y", "-o", "DPkg::Lock::Timeout=600", "-o"])
            // apt runs dpkg (and so the maintainer scripts) with this PATH, not its own.
            .arg(format!(
                "DPkg::Path={}:/usr/sbin:/usr/bin:/sbin:/bin",
                self.dir.join("bin").display()
            ))
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null())
            .output()?;
        ensure!(
            out.status.success(),
            "apt-get {args:?} (systemd running: {}) failed ({}): {}",
            self.running,
            out.status,
            text(&out)
        );
        let calls = fs::read_to_string(self.dir.join("calls")).unwrap_or_default();
        Ok(calls.lines().map(str::to_owned).collect())
    }
}

/// `dpkg --verify`: the files that differ from what the package unpacked must be exactly
/// `changed` (its exit status is 0 either way).
fn verify_files(changed: &[&str]) -> Result<()> {
    let out = run("dpkg", ["--verify", "retina-agent"])?;
    let report = String::from_utf8(out.stdout)?;
    let differ: Vec<&str> = report
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .collect();
    ensure!(differ == changed, "dpkg --verify: {report}");
    Ok(())
}

/// dpkg's status of the package (`install ok installed`, `deinstall ok config-files`, or
/// empty when dpkg does not know it).
fn status() -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", "retina-agent"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// `systemctl is-enabled` as the real systemctl answers offline (enabled, masked, ...).
fn is_enabled() -> Result<String> {
    let out = Command::new("systemctl")
        .args(["is-enabled", UNIT])
        .env("SYSTEMD_OFFLINE", "1")
        .output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Purges the package on drop, so a failed test leaves the machine as it found it.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if !status().is_empty() {
            let out = Command::new("dpkg")
                .args(["--purge", "retina-agent"])
                .output();
            if !out.is_ok_and(|o| o.status.success()) {
                eprintln!("cleanup: dpkg --purge retina-agent failed");
            }
        }
    }
}

/// `systemd-analyze verify` of the installed unit; it loads the unit as systemd would
/// (no running systemd needed) and checks that ExecStart= exists and `man:retina-agent(1)`
/// resolves. It only warns about unknown keys and bad values, so any message naming the
/// unit fails too. The same verify must reject a copy whose binary does not exist: it
/// really checks offline.
fn verify_installed_unit() -> Result<()> {
    let verify = |unit: &str| -> Result<(bool, String)> {
        let out = Command::new("systemd-analyze")
            .args(["verify", "--generators=no", unit])
            .stdin(Stdio::null())
            .output()?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let clean = out.status.success() && !stderr.lines().any(|l| l.contains("retina-agent"));
        Ok((clean, stderr))
    };
    let (clean, stderr) = verify(UNIT_PATH)?;
    ensure!(clean, "systemd-analyze verify {UNIT_PATH}: {stderr}");

    let broken = TempDir::new("rdeb-broken")?;
    let unit = fs::read_to_string(UNIT_PATH)?.replace(
        "ExecStart=/usr/bin/retina-agent",
        "ExecStart=/nonexistent/retina-agent",
    );
    let copy = broken.join(UNIT);
    fs::write(&copy, unit)?;
    let (clean, stderr) = verify(copy.to_str().context("utf-8")?)?;
    ensure!(
        !clean && stderr.contains("/nonexistent/retina-agent"),
        "systemd-analyze verify accepted a unit whose binary is missing: {stderr}"
    );
    Ok(())
}

/// Install, upgrade over itself (with a modified conffile), remove, purge; `running`
/// selects whether the maintainer scripts see a running systemd.
fn lifecycle(deb: &str, running: bool) -> Result<()> {
    let apt = Apt::new(running)?;
    let calls = |step: &[&str]| -> Vec<String> { step.iter().map(|s| s.to_string()).collect() };
    let preset = "--root=/ --preset-mode=enable-only preset retina-agent.service";
    let _guard = Installed;

    // Install: files in place, the unit enabled; with systemd, reloaded and started.
    let made = apt.get(&["install", "--no-install-recommends", deb])?;
    assert_eq!(status(), "install ok installed");
    let want = if running {
        calls(&[preset, "daemon-reload", "start retina-agent.service"])
    } else {
        calls(&[preset])
    };
    assert_eq!(made, want, "install (systemd running: {running})");
    for (path, m) in FILES {
        assert_eq!(mode(path)?, *m, "{path}");
    }
    assert_eq!(mode(CONFFILE)?, 0o644);
    assert_eq!(mode("/etc/retina-agent")?, 0o755);
    assert_eq!(
        fs::read(CONFFILE)?,
        fs::read(repo().join("packaging/config.toml"))?
    );
    // systemctl links the unit by its /lib path, the same file on a merged-/usr system.
    assert_eq!(fs::canonicalize(WANTS)?, fs::canonicalize(UNIT_PATH)?);
    assert_eq!(is_enabled()?, "enabled");
    let installed = run("/usr/bin/retina-agent", ["--version"])?.stdout;
    assert_eq!(
        installed,
        run(agent_bin().to_str().unwrap(), ["--version"])?.stdout
    );
    let page = String::from_utf8(run("man", ["-w", "retina-agent"])?.stdout)?;
    assert_eq!(page.trim(), "/usr/share/man/man1/retina-agent.1.gz");
    // dpkg records the checksums of what it unpacked (cargo-deb ships no md5sums; dpkg
    // computes them): nothing differs.
    verify_files(&[])?;
    verify_installed_unit()?;

    // The administrator edits the configuration and adds an environment file.
    let edited = format!(
        "{}\n# edited by the administrator\n",
        fs::read_to_string(CONFFILE)?
    );
    fs::write(CONFFILE, &edited)?;
    fs::write(ENVIRONMENT, "RUST_LOG=debug\n")?;
    fs::set_permissions(ENVIRONMENT, fs::Permissions::from_mode(0o600))?;

    // Upgrade over itself: the edit survives without a prompt (the packaged default did
    // not change); the unit stays enabled; a running agent is restarted, a stopped one
    // is not started.
    let made = apt.get(&["install", "--reinstall", deb])?;
    assert_eq!(status(), "install ok installed");
    let want = if running {
        calls(&[
            "daemon-reload",
            "daemon-reload",
            "try-restart retina-agent.service",
        ])
    } else {
        Vec::new()
    };
    assert_eq!(made, want, "upgrade (systemd running: {running})");
    assert_eq!(fs::read_to_string(CONFFILE)?, edited);
    for leftover in [".dpkg-dist", ".dpkg-new", ".dpkg-old"] {
        assert!(
            !Path::new(&format!("{CONFFILE}{leftover}")).exists(),
            "{leftover}"
        );
    }
    assert_eq!(fs::read_to_string(ENVIRONMENT)?, "RUST_LOG=debug\n");
    assert_eq!(is_enabled()?, "enabled");
    verify_files(&[CONFFILE])?;

    // Remove: program files gone, the configuration kept, the unit stopped and masked.
    let made = apt.get(&["remove", "retina-agent"])?;
    assert_eq!(status(), "deinstall ok config-files");
    let want = if running {
        // postrm's reload, then deb-systemd-helper's after masking the unit.
        calls(&[
            "stop retina-agent.service",
            "daemon-reload",
            "daemon-reload",
        ])
    } else {
        Vec::new()
    };
    assert_eq!(made, want, "remove (systemd running: {running})");
    for (path, _) in FILES {
        assert!(!Path::new(path).exists(), "{path} left after remove");
    }
    assert_eq!(fs::read_to_string(CONFFILE)?, edited);
    assert!(Path::new(ENVIRONMENT).exists());
    assert_eq!(fs::read_link(MASK)?, Path::new("/dev/null"));

    // Purge: the configuration directory, the environment file and every link are gone.
    let made = apt.get(&["purge", "retina-agent"])?;
    assert_eq!(status(), "");
    // postrm's reload, then deb-systemd-helper's after each change (purge, unmask).
    let want = if running {
        calls(&["daemon-reload", "daemon-reload", "daemon-reload"])
    } else {
        Vec::new()
    };
    assert_eq!(made, want, "purge (systemd running: {running})");
    for gone in ["/etc/retina-agent", MASK, WANTS] {
        assert!(
            fs::symlink_metadata(gone).is_err(),
            "{gone} left after purge"
        );
    }
    for state in [
        "/var/lib/systemd/deb-systemd-helper-enabled/retina-agent.service.dsh-also",
        "/var/lib/systemd/deb-systemd-helper-masked/retina-agent.service",
    ] {
        assert!(!Path::new(state).exists(), "{state} left after purge");
    }
    Ok(())
}

#[test]
fn install_upgrade_remove_purge_with_and_without_systemd() -> Result<()> {
    require_root();
    ensure!(
        status().is_empty(),
        "retina-agent is already known to dpkg here ({}): this test installs and purges it",
        status()
    );
    let (_out, deb) = build_deb()?;
    let deb = deb.to_str().context("utf-8")?;
    // An image build (no running systemd), then a booted node.
    lifecycle(deb, false)?;
    lifecycle(deb, true)?;
    Ok(())
}
