//! `cargo xtask install` into a destdir: the files it lays out, verified by
//! `systemd-analyze`.

use super::*;

fn mode(path: &Path) -> Result<u32> {
    Ok(fs::metadata(path)
        .with_context(|| format!("{} missing", path.display()))?
        .permissions()
        .mode()
        & 0o7777)
}

/// `systemd-analyze verify` of the unit installed under `root`, which holds the unit and
/// the binary its ExecStart= names. The host's units are copied in (the unit's
/// dependencies must load); `--root` makes ExecStart= resolve inside `root`. Warnings
/// about the unit ("Unknown key", "Failed to parse ... ignoring") do not change the exit
/// status, so any output naming the unit fails too.
fn verify_unit(root: &Path) -> Result<()> {
    let units = root.join("lib/systemd/system");
    for entry in fs::read_dir("/lib/systemd/system")? {
        let entry = entry?;
        let to = units.join(entry.file_name());
        if !to.exists() && entry.file_type()?.is_file() {
            fs::copy(entry.path(), &to)?;
        }
    }
    // ExecReload= runs the host's /bin/kill (procps), which the destdir does not hold.
    fs::create_dir_all(root.join("bin"))?;
    let kill = root.join("bin/kill");
    if !kill.exists() {
        fs::copy("/bin/kill", &kill).context("copying /bin/kill (Debian package procps)")?;
    }
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", "--generators=no"])
        .arg(format!("--root={}", root.display()))
        .arg("retina-agent.service")
        .stdin(Stdio::null())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let about_us: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("retina-agent"))
        .collect();
    ensure!(
        out.status.success() && about_us.is_empty(),
        "systemd-analyze verify ({}): {stderr}",
        out.status
    );
    Ok(())
}

/// The exposure score `systemd-analyze security --offline` gives the unit under `root`.
fn exposure(root: &Path) -> Result<f64> {
    let out = run(
        "systemd-analyze",
        [
            "security",
            "--offline=yes",
            &format!("--root={}", root.display()),
            "--no-pager",
            "retina-agent.service",
        ],
    )?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .with_context(|| format!("no overall exposure: {text}"))?;
    let score = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("cannot parse {line:?}"))?;
    Ok(score)
}

#[test]
fn install_into_a_destdir_lays_out_files_the_unit_verifies() -> Result<()> {
    require_root();
    let dest = TempDir::new("rpkg-dest")?;
    let root = dest.path();
    xtask(&["install", "--destdir", root.to_str().context("utf-8")?])?;

    let bin = root.join("usr/bin/retina-agent");
    let unit = root.join("lib/systemd/system/retina-agent.service");
    let config = root.join("etc/retina-agent/config.toml");
    assert_eq!(mode(&bin)?, 0o755);
    assert_eq!(mode(&unit)?, 0o644);
    assert_eq!(mode(&config)?, 0o644);
    assert_eq!(mode(&root.join("etc/retina-agent"))?, 0o755);
    for generated in [
        "usr/share/man/man1/retina-agent.1",
        "usr/share/man/man1/retina-agent-run.1",
        "usr/share/bash-completion/completions/retina-agent",
        "usr/share/zsh/vendor-completions/_retina-agent",
        "usr/share/fish/vendor_completions.d/retina-agent.fish",
    ] {
        assert_eq!(mode(&root.join(generated))?, 0o644, "{generated}");
    }
    assert_eq!(
        fs::read(&config)?,
        fs::read(repo().join("packaging/config.toml"))?
    );
    let installed = fs::read_to_string(&unit)?;
    assert_eq!(
        installed,
        unit_text(),
        "with the default prefix the unit is unchanged"
    );
    assert_eq!(
        service_values(&installed, "ExecStart"),
        ["/usr/bin/retina-agent run --config /etc/retina-agent/config.toml"]
    );
    let version = run(bin.to_str().context("utf-8")?, ["--version"])?;
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("retina-agent "));
    verify_unit(root)?;
    let score = exposure(root)?;
    assert!(
        score <= 2.0,
        "systemd-analyze security exposure {score} (was 1.5)"
    );

    // Another prefix: the binary moves, the unit follows, /etc and the unit dir do not.
    let other = TempDir::new("rpkg-opt")?;
    let root = other.path();
    xtask(&[
        "install",
        "--prefix",
        "/opt/retina",
        "--destdir",
        root.to_str().context("utf-8")?,
    ])?;
    assert_eq!(mode(&root.join("opt/retina/bin/retina-agent"))?, 0o755);
    assert!(!root.join("usr/bin/retina-agent").exists());
    let installed = fs::read_to_string(root.join("lib/systemd/system/retina-agent.service"))?;
    assert_eq!(
        service_values(&installed, "ExecStart"),
        ["/opt/retina/bin/retina-agent run --config /etc/retina-agent/config.toml"]
    );
    assert!(root.join("etc/retina-agent/config.toml").is_file());
    verify_unit(root)?;
    Ok(())
}
