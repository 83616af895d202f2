//! systemd's notify protocol against a real `NOTIFY_SOCKET` listener (a Unix datagram
//! socket made by the test, as systemd's own is): `READY=1` with a `STATUS=` line once the
//! agent runs, `WATCHDOG=1` pings while it collects, `STOPPING=1` on SIGTERM. And the unit
//! asks for it (`Type=notify`, a `WatchdogSec=` the pings fit in); `systemd-analyze verify`
//! of the installed unit is in tests/tests/packaging/.

use std::{
    os::unix::{fs::PermissionsExt, net::UnixDatagram, process::CommandExt},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, ensure};
use retina_tests::*;

/// `run` every 200 ms as the unit, OTLP off, with `NOTIFY_SOCKET` at `socket` and a 1 s
/// watchdog (pings at most every 0.5 s, from the 200 ms loop).
fn notifying_agent(socket: &std::path::Path) -> std::process::Command {
    let mut cmd = retina_tests::unit::agent_as_unit(&[
        "run",
        "--no-summary",
        "--no-prometheus",
        "--interval",
        "200ms",
    ]);
    cmd.env_remove("OTEL_METRIC_EXPORT_INTERVAL")
        .env("OTEL_SDK_DISABLED", "true")
        .env("NOTIFY_SOCKET", socket)
        .env("WATCHDOG_USEC", "1000000")
        .stdin(Stdio::null());
    cmd
}

#[test]
fn ready_status_watchdog_and_stopping_reach_notify_socket() -> Result<()> {
    require_root();
    let dir = TempDir::new("notify")?;
    let path = dir.join("notify.sock");
    let sock = UnixDatagram::bind(&path)?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    // The agent runs as the unit's user; systemd's own notify socket is writable by every
    // service (0777), this one by everyone too.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
    let mut child = notifying_agent(&path)
        .env_remove("RUST_LOG")
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning the agent")?;
    struct Kill(u32);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: kill has no memory-safety preconditions; the group is our child's.
            unsafe { libc::kill(-(self.0 as i32), libc::SIGKILL) };
        }
    }
    let _kill = Kill(child.id());
    let mut messages: Vec<String> = Vec::new();
    let mut buf = [0u8; 4096];
    let mut recv = |messages: &mut Vec<String>| {
        if let Ok(n) = sock.recv(&mut buf) {
            messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    };
    let limit = Instant::now() + Duration::from_secs(60);
    let pings = |m: &[String]| m.iter().filter(|m| m.as_str() == "WATCHDOG=1\n").count();
    while pings(&messages) < 4 {
        ensure!(
            child.try_wait()?.is_none(),
            "the agent exited: {messages:?}"
        );
        ensure!(Instant::now() < limit, "after 60 s: {messages:?}");
        recv(&mut messages);
    }
    let ready = messages
        .iter()
        .position(|m| m.starts_with("READY=1\n"))
        .with_context(|| format!("no READY=1: {messages:?}"))?;
    assert_eq!(ready, 0, "READY=1 comes first: {messages:?}");
    assert!(
        messages[0].contains("STATUS=collecting every 200ms"),
        "{messages:?}"
    );
    // SAFETY: as above; the pid is our child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let limit = Instant::now() + Duration::from_secs(10);
    while !messages.iter().any(|m| m.starts_with("STOPPING=1\n")) {
        ensure!(Instant::now() < limit, "no STOPPING=1: {messages:?}");
        recv(&mut messages);
    }
    let status = child.wait()?;
    assert!(status.success(), "{status}");
    eprintln!("notify messages: {messages:?}");
    Ok(())
}

/// A notify socket the agent cannot write to (root's, 0755): collection goes on, and the
/// log says once, with the socket, that readiness and pings are lost, where a debug line
/// used to be all there was while systemd killed the service for never being ready.
#[test]
fn an_unwritable_notify_socket_is_one_warning_naming_it() -> Result<()> {
    require_root();
    let dir = TempDir::new("notify-denied")?;
    let path = dir.join("notify.sock");
    let _sock = UnixDatagram::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    let log = dir.join("agent.log");
    let mut cmd = notifying_agent(&path);
    cmd.stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?);
    let running = child::Running::spawn(cmd)?;
    let warning = "sending to systemd's notify socket failed";
    let limit = Instant::now() + Duration::from_secs(60);
    // READY=1 refused: the warning.
    loop {
        let text = std::fs::read_to_string(&log)?;
        ensure!(!running.exited(), "the agent exited:\n{text}");
        if text.contains(warning) {
            break;
        }
        ensure!(Instant::now() < limit, "no warning after 60 s:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Then several watchdog pings (one every 0.5 s at most) and STOPPING=1, all refused
    // too, without another warning.
    std::thread::sleep(Duration::from_secs(2));
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(running.pid(), libc::SIGTERM) };
    let (out, _) = running.wait(Duration::from_secs(15))?;
    let status = out.status;
    let text = std::fs::read_to_string(&log)?;
    assert!(status.success(), "{status}\n{text}");
    assert_eq!(text.matches(warning).count(), 1, "{text}");
    assert!(
        text.contains("Permission denied") && text.contains("notify.sock"),
        "{text}"
    );
    Ok(())
}

#[test]
fn the_unit_uses_notify_with_a_watchdog_the_pings_fit_in() -> Result<()> {
    let unit = std::fs::read_to_string(repo().join("packaging/retina-agent.service"))?;
    let value = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .map(str::trim)
    };
    assert_eq!(value("Type"), Some("notify"));
    let watchdog = value("WatchdogSec").context("WatchdogSec=")?;
    let watchdog: Duration = retina_agent::duration::parse(watchdog).map_err(anyhow::Error::msg)?;
    // The default interval is pinged every cycle or every few, well within the period.
    assert!(
        watchdog >= retina_agent::config::DEFAULT_INTERVAL * 3,
        "WatchdogSec={watchdog:?}"
    );
    Ok(())
}
