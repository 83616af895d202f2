//! The configuration end to end: the real binary with real files.
//!
//! A bad file must stop the agent before anything starts. "Nothing started" is shown at
//! the system-call level: the agent runs under `strace`, and with a bad configuration it
//! makes no `bpf()` call (no map, no program, not even aya's feature probes), opens no
//! socket and binds nothing. (A `bpftool prog show` before and after could not show this:
//! the refused agent has exited, and with it any program it would have loaded, before the
//! second listing; and other programs named `kfree_skb` may come and go meanwhile.) The
//! Prometheus port the file names is checked free as well.
//!
//! Then the other direction: a good file, the environment and the flags really decide what
//! `snapshot` and `run` do.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is the test failing, with its message"
)]

use std::{
    net::{SocketAddr, TcpStream},
    os::unix::{fs::PermissionsExt as _, process::CommandExt},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use retina_tests::{unit, *};

/// A temporary directory with config files, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Result<Dir> {
        let path = std::env::temp_dir().join(format!("retina-config-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path)?;
        Ok(Dir(path))
    }

    fn file(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.0.join(name);
        std::fs::write(&path, text)?;
        Ok(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn listening(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// Runs the agent as the packaged unit runs it (uid 65534, `CAP_BPF`, `CAP_PERFMON`) under
/// `strace -f`, recording the system calls that would mean something started; returns its
/// output and the recorded calls. Fails if it does not exit by itself within 20 s (a bad
/// configuration must not leave a daemon running).
fn agent_traced(args: &[&str], env: &[(&str, &str)], trace: &Path) -> Result<(Output, String)> {
    let bin = agent_bin();
    let mut cmd = Command::new("strace");
    cmd.args([
        "-f",
        "-qq",
        "-e",
        "trace=execve,bpf,socket,bind,listen,connect",
        "-o",
    ])
    .arg(trace)
    .args(unit::setpriv_args(&unit::unit_capabilities()))
    .arg(&bin)
    .args(args)
    // The test's own environment must not decide the outcome (removed before the case's
    // variables are set).
    .env_remove("RUST_LOG")
    .env_remove("OTEL_METRIC_EXPORT_INTERVAL")
    .env_remove("RETINA_LOG_FORMAT")
    .env_remove("RETINA_CONFIG")
    .envs(env.iter().copied())
    // Its own process group, so a timeout stops strace and the agent together.
    .process_group(0)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .context("spawning strace (Debian package `strace`)")?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait()?.is_none() {
        if Instant::now() > deadline {
            // SAFETY: kill has no memory-safety preconditions; the group is our child's.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let out = child.wait_with_output()?;
            anyhow::bail!(
                "the agent did not exit with {args:?} {env:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output()?;
    let log = std::fs::read_to_string(trace).context("reading the strace log")?;
    // The agent's calls: those after setpriv's exec of it (setpriv itself asks nscd).
    let exec = format!("execve(\"{}\"", bin.display());
    let (_, calls) = log
        .split_once(&exec)
        .with_context(|| format!("the agent was never executed:\n{log}"))?;
    let calls = calls
        .split_once('\n')
        .map_or("", |(_, rest)| rest)
        .to_string();
    Ok((out, calls))
}

/// A configuration that must be refused: exit status 2, one `error:` line naming the file,
/// the key and the reason, and nothing started.
fn assert_refused(
    dir: &Dir,
    case: &str,
    text: &str,
    key: Option<&str>,
    reason: &str,
) -> Result<()> {
    let port = free_port()?;
    // Every case also sets a Prometheus port, so "not bound" can be checked on it; after
    // the case's text, so that top-level keys stay top-level.
    let text = format!("{text}\n[prometheus]\nlisten = \"127.0.0.1:{port}\"\n");
    let path = dir.file(&format!("{case}.toml"), &text)?;
    let trace = dir.0.join(format!("{case}.strace"));
    let (out, calls) = agent_traced(
        &["run", "--config", path.to_str().unwrap(), "--no-summary"],
        &[],
        &trace,
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);

    assert_eq!(out.status.code(), Some(2), "{case}: {stderr}");
    assert!(out.stdout.is_empty(), "{case}: stdout {:?}", out.stdout);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(
        lines.len(),
        1,
        "{case}: exactly one line expected: {stderr}"
    );
    let line = lines[0];
    assert!(
        line.starts_with(&format!("error: {}: ", path.display())),
        "{case}: the message should start with the file: {line}"
    );
    if let Some(key) = key {
        assert!(line.contains(&format!("key `{key}`: ")), "{case}: {line}");
    }
    assert!(line.contains(reason), "{case}: {line:?} lacks {reason:?}");

    // Nothing started.
    for call in ["bpf(", "socket(", "bind(", "listen(", "connect("] {
        assert!(
            !calls.lines().any(|l| l.contains(call)),
            "{case}: the agent made a {call}) system call before refusing its configuration:\n{calls}"
        );
    }
    assert!(
        !listening(SocketAddr::from(([127, 0, 0, 1], port))),
        "{case}: port {port} is bound"
    );
    Ok(())
}

#[test]
fn bad_configurations_are_refused_before_anything_starts() -> Result<()> {
    require_root();
    let dir = Dir::new("bad")?;
    let cases: &[(&str, &str, Option<&str>, &str)] = &[
        (
            "unknown-top",
            "intervall = \"5s\"\n",
            Some("intervall"),
            "unknown field `intervall`",
        ),
        (
            "unknown-nested",
            "[drops]\nmap_entires = 10\n",
            Some("drops.map_entires"),
            "unknown field `map_entires`",
        ),
        (
            "unknown-nested-collector",
            "[ethtool]\nstats_includes = []\n",
            Some("ethtool.stats_includes"),
            "unknown field `stats_includes`",
        ),
        (
            "bad-duration",
            "interval = \"10 parsecs\"\n",
            Some("interval"),
            "invalid duration \"10 parsecs\" (examples: 10s, 500ms, 1m)",
        ),
        (
            "bad-regex",
            "[ethtool]\nstats_include = [\"rx_.*\", \"tx_.*\", \"(bad\"]\n",
            Some("ethtool.stats_include[2]"),
            "invalid regular expression \"(bad\"",
        ),
        (
            "bad-regex-netdev",
            "[netdev]\nexclude = [\"veth[0-\"]\n",
            Some("netdev.exclude[0]"),
            "invalid regular expression",
        ),
        (
            "unknown-nested-table",
            "[export]\nenabled = false\n[prometheus.nested]\n",
            Some("prometheus.nested"),
            "unknown field `nested`",
        ),
        (
            "bad-endpoint",
            "[export]\nendpoint = \"ftp://collector:4317\"\n",
            Some("export.endpoint"),
            "not http or https",
        ),
        (
            "wrong-type",
            "[drops]\nmap_entries = \"lots\"\n",
            Some("drops.map_entries"),
            "invalid type: string \"lots\", expected u32",
        ),
        (
            "zero-entries",
            "[drops]\nmap_entries = 0\n",
            Some("drops.map_entries"),
            "must be at least 1",
        ),
        (
            "bad-log-level",
            "[log]\nlevel = \"verbose\"\n",
            Some("log.level"),
            "invalid log filter",
        ),
        ("syntax", "[drops\n", None, "TOML syntax"),
    ];
    for (case, text, key, reason) in cases {
        assert_refused(&dir, case, text, *key, reason)?;
    }
    Ok(())
}

#[test]
fn bad_listen_address_is_refused_before_anything_starts() -> Result<()> {
    require_root();
    let dir = Dir::new("addr")?;
    // Written without the helper's [prometheus] section: the bad value is the section's.
    let path = dir.file("addr.toml", "[prometheus]\nlisten = \"localhost:9465\"\n")?;
    let trace = dir.0.join("addr.strace");
    let (out, calls) = agent_traced(&["run", "--config", path.to_str().unwrap()], &[], &trace)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: key `prometheus.listen`: invalid socket address",
            path.display()
        )),
        "{stderr}"
    );
    assert!(
        !calls.contains("bpf(") && !calls.contains("bind("),
        "{calls}"
    );
    Ok(())
}

#[test]
fn missing_files_and_bad_environment() -> Result<()> {
    require_root();
    let dir = Dir::new("env")?;
    // An explicitly given file that does not exist is an error.
    let missing = dir.0.join("missing.toml");
    let (out, calls) = agent_traced(
        &["run", "--config", missing.to_str().unwrap()],
        &[],
        &dir.0.join("missing.strace"),
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("{}: cannot read", missing.display())),
        "{stderr}"
    );
    assert!(!calls.contains("bpf("), "{calls}");

    // So is one the unit's user may not read (a root-only file, as an editor or a
    // configuration manager may leave it): the file and the reason, nothing started.
    let private = dir.file("private.toml", "[drops]\nmap_entries = 100\n")?;
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600))?;
    let (out, calls) = agent_traced(
        &["run", "--config", private.to_str().unwrap()],
        &[],
        &dir.0.join("private.strace"),
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}: cannot read the configuration file: Permission denied",
            private.display()
        )),
        "{stderr}"
    );
    assert!(
        !calls.contains("bpf(") && !calls.contains("bind("),
        "{calls}"
    );

    // Environment values are checked as strictly as the file's.
    let ok = dir.file("ok.toml", "")?;
    for (var, value, reason) in [
        ("OTEL_METRIC_EXPORT_INTERVAL", "10s", "milliseconds"),
        (
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            "carrier-pigeon",
            "expected grpc or http/protobuf",
        ),
        ("RETINA_LOG_FORMAT", "xml", "expected `text` or `json`"),
    ] {
        let (out, calls) = agent_traced(
            &["run", "--config", ok.to_str().unwrap()],
            &[(var, value)],
            &dir.0.join("env.strace"),
        )?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{var}: {stderr}");
        assert!(
            stderr.contains(var) && stderr.contains(reason),
            "{var}: {stderr}"
        );
        assert!(!calls.contains("bpf("), "{var}: {calls}");
    }

    // Bad flag values are usage errors (clap's status 2), also before anything starts.
    let (out, calls) = agent_traced(
        &[
            "run",
            "--config",
            ok.to_str().unwrap(),
            "--interval",
            "soon",
        ],
        &[],
        &dir.0.join("flag.strace"),
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--interval") && stderr.contains("invalid duration"),
        "{stderr}"
    );
    assert!(!calls.contains("bpf("), "{calls}");
    Ok(())
}

/// `snapshot` builds its collectors from the file (filters, drop map size), and the flag
/// wins over the file; the agent as the unit runs it.
#[test]
fn snapshot_honours_the_file_and_the_flag_wins() -> Result<()> {
    require_root();
    let config = "[drops]\nmap_entries = 321\n\
         [netdev]\ninclude = [\"lo\"]\n\
         [netstat]\ninclude = [\"Tcp:.*\"]\n\
         [ethtool]\nenabled = false\n";
    let snapshot = |extra: &[&str]| {
        unit::snapshot_as_unit_with(unit::Proc::Host, config, extra, || Ok(())).map(|(d, _)| d)
    };
    let doc = snapshot(&[])?;
    assert_eq!(sum(&doc, "retina.drop.map.capacity", &[]), 321, "{doc:#}");
    let io = points(&doc, "system.network.io", &[]);
    ensure!(!io.is_empty(), "no netdev points: {doc:#}");
    for p in &io {
        assert_eq!(
            attr_str(p, "network.interface.name").as_deref(),
            Some("lo"),
            "netdev.include = [\"lo\"] should leave only lo: {p}"
        );
    }
    let netstat = points(&doc, "retina.netstat.stat", &[]);
    ensure!(!netstat.is_empty(), "no netstat points: {doc:#}");
    for p in &netstat {
        assert_eq!(attr_str(p, "netstat.group").as_deref(), Some("Tcp"), "{p}");
    }
    assert!(
        points(&doc, "retina.nic.driver.stat", &[]).is_empty(),
        "ethtool.enabled = false: {doc:#}"
    );

    let doc = snapshot(&["--drop-map-entries", "77"])?;
    assert_eq!(sum(&doc, "retina.drop.map.capacity", &[]), 77, "{doc:#}");
    Ok(())
}

/// Stops a child with SIGTERM on drop.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `run`: the file says one Prometheus port, the environment another, the flag a third;
/// the flag wins. Logs are JSON when the file says so.
#[test]
fn run_flags_win_over_environment_and_file() -> Result<()> {
    require_root();
    let dir = Dir::new("run")?;
    let (file_port, env_port, flag_port) = (free_port()?, free_port()?, free_port()?);
    let path = dir.file(
        "run.toml",
        &format!(
            "interval = \"1s\"\n[log]\nformat = \"json\"\n[export]\nenabled = false\n\
             [prometheus]\nlisten = \"127.0.0.1:{file_port}\"\n"
        ),
    )?;
    let stderr_path = dir.0.join("stderr");
    let flag_listen = format!("127.0.0.1:{flag_port}");
    // As the packaged unit runs it (uid 65534, the unit's capabilities).
    let child = retina_tests::unit::agent_as_unit(&[
        "run",
        "--config",
        path.to_str().context("config path")?,
        "--no-summary",
        "--prometheus-listen",
        &flag_listen,
    ])
    .env("OTEL_EXPORTER_PROMETHEUS_PORT", env_port.to_string())
    .env_remove("RUST_LOG")
    .env_remove("RETINA_LOG_FORMAT")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&stderr_path)?)
    .spawn()?;
    let daemon = Daemon(child);
    let flag_addr = SocketAddr::from(([127, 0, 0, 1], flag_port));
    let deadline = Instant::now() + STARTUP;
    while !listening(flag_addr) {
        ensure!(
            Instant::now() < deadline,
            "nothing listens on the flag's port {flag_port}: {}",
            std::fs::read_to_string(&stderr_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!listening(SocketAddr::from(([127, 0, 0, 1], file_port))));
    assert!(!listening(SocketAddr::from(([127, 0, 0, 1], env_port))));
    drop(daemon);
    let stderr = std::fs::read_to_string(&stderr_path)?;
    let lines: Vec<&str> = stderr.lines().collect();
    ensure!(!lines.is_empty(), "no log lines");
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("log.format = \"json\", but this line is not JSON: {line}"))?;
        assert!(
            v["level"].is_string() && v["fields"]["message"].is_string(),
            "{line}"
        );
    }
    Ok(())
}
