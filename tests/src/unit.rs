//! The agent as the packaged unit runs it, the one home of that for every test: uid/gid
//! 65534, exactly the capabilities of `packaging/retina-agent.service` (bounding,
//! inheritable, ambient), no_new_privs; and, optionally, `ProtectProc=invisible`: a private
//! `/proc` mounted with `hidepid=invisible` in a mount namespace of its own, which is what
//! systemd gives the service.

use std::{
    collections::BTreeSet,
    fs,
    os::unix::{ffi::OsStrExt as _, fs::OpenOptionsExt as _},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::{TempDir, agent_bin, which};

/// The unit and the packaged configuration, compiled in: the 6.1 and 6.12 guests run these
/// tests without the repository.
const UNIT: &str = include_str!("../../packaging/retina-agent.service");
pub const CONFIG: &str = include_str!("../../packaging/config.toml");

/// The capabilities the unit grants (`CAP_BPF`, ...). Fails unless the bounding set and
/// the ambient set are the same: the agent runs as a non-root user, so a capability in only
/// one of them is either useless or unreachable.
pub fn unit_capabilities() -> Vec<String> {
    let words = |key: &str| -> BTreeSet<String> {
        UNIT.lines()
            .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
            .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .collect()
    };
    let bounding = words("CapabilityBoundingSet");
    let ambient = words("AmbientCapabilities");
    assert!(
        !bounding.is_empty(),
        "the unit sets no CapabilityBoundingSet="
    );
    assert_eq!(
        bounding, ambient,
        "CapabilityBoundingSet= and AmbientCapabilities= differ"
    );
    for cap in &bounding {
        assert!(
            cap.starts_with("CAP_") && cap[4..].chars().all(|c| c.is_ascii_uppercase() || c == '_'),
            "unexpected capability {cap:?} (systemd ignores unknown names silently)"
        );
    }
    bounding.into_iter().collect()
}

/// The packaged configuration, written to `dir` (readable by uid 65534).
pub fn packaged_config(dir: &TempDir) -> Result<std::path::PathBuf> {
    config_file(dir, CONFIG)
}

/// `text` as the configuration file, written to `dir` (readable by uid 65534).
pub fn config_file(dir: &TempDir, text: &str) -> Result<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.path().join("config.toml");
    fs::write(&path, text)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644))?;
    Ok(path)
}

/// `setpriv` arguments for uid/gid 65534 with exactly `caps` and no_new_privs.
pub fn setpriv_args(caps: &[String]) -> Vec<String> {
    let mut list = String::from("-all");
    for cap in caps {
        list.push_str(",+");
        list.push_str(&cap.trim_start_matches("CAP_").to_ascii_lowercase());
    }
    vec![
        "setpriv".into(),
        "--reuid=65534".into(),
        "--regid=65534".into(),
        "--clear-groups".into(),
        format!("--inh-caps={list}"),
        format!("--ambient-caps={list}"),
        format!("--bounding-set={list}"),
        "--no-new-privs".into(),
    ]
}

/// `setpriv` running a command as uid/gid 65534 with exactly `caps` (`CAP_BPF`, ...) as
/// bounding, inheritable and ambient capabilities, and no_new_privs: what the unit's
/// DynamicUser=, CapabilityBoundingSet=, AmbientCapabilities= and NoNewPrivileges= give.
pub fn setpriv(caps: &[String]) -> Command {
    let args = setpriv_args(caps);
    let mut cmd = Command::new(&args[0]);
    cmd.args(&args[1..]);
    cmd
}

/// The agent binary run as the packaged unit runs it ([`setpriv`] with the unit's
/// capabilities), `args` after the binary, without inherited `OTEL_*`/`RETINA_*`
/// variables, `RUST_LOG=info`.
pub fn agent_as_unit(args: &[&str]) -> Command {
    let mut cmd = setpriv(&unit_capabilities());
    cmd.arg(agent_bin()).args(args);
    for (k, _) in std::env::vars_os() {
        if k.as_bytes().starts_with(b"OTEL_") || k.as_bytes().starts_with(b"RETINA_") {
            cmd.env_remove(k);
        }
    }
    cmd.env("RUST_LOG", "info");
    cmd
}

/// `run --interval INTERVAL --no-summary` with the configuration file `config`, as the
/// packaged unit runs it ([`agent_as_unit`]).
pub fn run_as_unit(config: &std::path::Path, interval: &str) -> Command {
    let mut cmd = agent_as_unit(&[]);
    cmd.arg("--config")
        .arg(config)
        .args(["run", "--interval", interval, "--no-summary"]);
    cmd
}

/// How `/proc` looks to the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proc {
    /// The host's `/proc`.
    Host,
    /// `ProtectProc=invisible`: a private `/proc` with `hidepid=invisible`.
    Invisible,
}

/// Kills the agent (and reaps it) on drop.
struct Kill(std::process::Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `retina-agent snapshot --cumulative --format json` as the unit runs it, watching while
/// `during` runs (as root, in the test's process: the agent's own child command could not
/// enter a network namespace without CAP_SYS_ADMIN). Returns the document and the agent's
/// stderr.
pub fn snapshot_as_unit(
    proc: Proc,
    during: impl FnOnce() -> Result<()>,
) -> Result<(Value, String)> {
    snapshot_as_with(&unit_capabilities(), proc, CONFIG, &[], during)
}

/// [`snapshot_as_unit`] with exactly `caps` instead of the unit's.
pub fn snapshot_as(
    caps: &[String],
    proc: Proc,
    during: impl FnOnce() -> Result<()>,
) -> Result<(Value, String)> {
    snapshot_as_with(caps, proc, CONFIG, &[], during)
}

/// [`snapshot_as_unit`] with the configuration `config` and more `snapshot` arguments
/// (`--flows`, `--pcap FILE`, ...).
pub fn snapshot_as_unit_with(
    proc: Proc,
    config: &str,
    extra: &[&str],
    during: impl FnOnce() -> Result<()>,
) -> Result<(Value, String)> {
    snapshot_as_with(&unit_capabilities(), proc, config, extra, during)
}

/// The agent's `snapshot` with exactly `caps`, the configuration `config` and `extra`
/// arguments, as uid 65534 (the unit with a drop-in's capabilities, for one).
pub fn snapshot_as_with(
    caps: &[String],
    proc: Proc,
    config: &str,
    extra: &[&str],
    during: impl FnOnce() -> Result<()>,
) -> Result<(Value, String)> {
    let dir = TempDir::shared("runit")?;
    let ready = dir.path().join("ready");
    // The agent's child waits on a FIFO, not in a loop of `sleep`s: under TCG every fork
    // and exec of a polling loop costs the guest's one CPU what the test's traffic and the
    // agent need.
    let done = dir.path().join("done");
    let fifo = done.to_str().context("FIFO path")?;
    crate::run("mkfifo", ["-m", "0666", fifo])?;
    let script = format!(
        "touch {ready}; read _ < {fifo} || true",
        ready = ready.display(),
    );
    let config = config_file(&dir, config)?;
    let mut agent: Vec<String> = setpriv_args(caps);
    agent.push(agent_bin().display().to_string());
    agent.extend(
        [
            "--config",
            config.to_str().context("config path")?,
            "snapshot",
            "--cumulative",
            "--format",
            "json",
        ]
        .map(String::from),
    );
    agent.extend(extra.iter().map(|a| a.to_string()));
    agent.extend(["--", "sh", "-c", &script].map(String::from));
    let mut cmd = match proc {
        Proc::Host => {
            let mut c = Command::new(&agent[0]);
            c.args(&agent[1..]);
            c
        }
        Proc::Invisible => {
            // A mount namespace of its own with a private /proc, as systemd sets up
            // ProtectProc=invisible; then the agent, as the unit's user.
            // `setpriv` by its path: a busybox `sh` (the guests') runs its own applet of
            // that name in preference to util-linux's, which lacks `--reuid`.
            let setpriv = which(&agent[0])
                .with_context(|| format!("{} is not on PATH (util-linux)", agent[0]))?;
            let mut c = Command::new("unshare");
            c.args(["-m", "--propagation", "private", "sh", "-c"])
                .arg("mount -t proc -o hidepid=invisible proc /proc && exec \"$@\"")
                .arg("sh")
                .arg(setpriv)
                .args(&agent[1..]);
            c
        }
    };
    cmd.stdin(Stdio::null())
        .stdout(fs::File::create(dir.path().join("stdout"))?)
        .stderr(fs::File::create(dir.path().join("stderr"))?);
    let mut child = Kill(cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?);
    let stderr = || fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
    let end = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        if let Some(status) = child.0.try_wait()? {
            bail!("the agent exited early ({status}): {}", stderr());
        }
        ensure!(
            Instant::now() < end,
            "the agent did not start: {}",
            stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    during()?;
    // Opening the FIFO for writing and closing it ends the child's `read` (end of file).
    // Without blocking: the child may not have opened it yet, or be gone.
    let end = Instant::now() + Duration::from_secs(30);
    loop {
        match fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&done)
        {
            Ok(_) => break,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
                if child.0.try_wait()?.is_some() {
                    break;
                }
                ensure!(
                    Instant::now() < end,
                    "the agent's child never read its FIFO"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e).with_context(|| format!("opening {fifo}")),
        }
    }
    let status = loop {
        if let Some(status) = child.0.try_wait()? {
            break status;
        }
        ensure!(Instant::now() < end, "the agent did not exit: {}", stderr());
        std::thread::sleep(Duration::from_millis(20));
    };
    let stderr = stderr();
    ensure!(status.success(), "agent failed ({status}): {stderr}");
    let stdout = fs::read(dir.path().join("stdout"))?;
    let doc = serde_json::from_slice(&stdout).with_context(|| {
        format!(
            "parsing the snapshot: {}\nstderr: {stderr}",
            String::from_utf8_lossy(&stdout)
        )
    })?;
    Ok((doc, stderr))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one home gives what the copies it replaced hard-coded (`-all,+bpf,+perfmon` for
    /// uid/gid 65534), read from the unit file.
    #[test]
    fn setpriv_gives_the_units_user_and_capabilities() {
        let caps = unit_capabilities();
        assert_eq!(caps, ["CAP_BPF", "CAP_PERFMON"]);
        let args = setpriv_args(&caps);
        assert_eq!(
            args,
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all,+bpf,+perfmon",
                "--ambient-caps=-all,+bpf,+perfmon",
                "--bounding-set=-all,+bpf,+perfmon",
                "--no-new-privs",
            ]
        );
        let cmd = setpriv(&caps);
        assert_eq!(cmd.get_program(), "setpriv");
        assert_eq!(cmd.get_args().count(), args.len() - 1);
    }
}
