//! Packaging, end to end: the systemd unit's capabilities are enough for every collector
//! and each of them is needed; its system call filter and address families cover what the
//! agent really does; `cargo xtask install` lays out files that `systemd-analyze verify`
//! accepts. The Debian package has its own file: `deb.rs`.
//!
//! There is no systemd running on the test machines, so the unit's sandbox is reproduced
//! piece by piece: `setpriv` for the user, capabilities and no_new_privs (the same values,
//! parsed from `packaging/retina-agent.service`), `strace` for the system calls and
//! socket families, `systemd-analyze` for the unit itself.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is the test failing, with its message"
)]

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    os::unix::fs::PermissionsExt,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use retina_tests::{
    unit::{setpriv, unit_capabilities},
    *,
};

mod capabilities;
mod install;
mod kernel;
mod sandbox;

// ---------------------------------------------------------------------------------------
// The unit file.

/// The unit in the repository.
fn unit_text() -> String {
    let path = repo().join("packaging/retina-agent.service");
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every value assigned to `key` in the `[Service]` section, in order.
fn service_values(unit: &str, key: &str) -> Vec<String> {
    let mut section = "";
    let mut out = Vec::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = line;
            continue;
        }
        if section == "[Service]"
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            out.push(v.trim().to_string());
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Scratch directories and processes, removed and killed on drop.

/// A child process killed (and reaped) on drop, plus any other pids it is responsible for.
struct Guard {
    child: Option<Child>,
    extra: Vec<i32>,
}

impl Guard {
    fn spawn(cmd: &mut Command) -> Result<Self> {
        let child = cmd.spawn().with_context(|| format!("spawning {cmd:?}"))?;
        Ok(Guard {
            child: Some(child),
            extra: Vec::new(),
        })
    }

    fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("child")
    }

    /// Waits at most `timeout` for the child to exit.
    fn finish(mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child().try_wait()? {
                self.child = None;
                return Ok(status);
            }
            ensure!(
                Instant::now() < deadline,
                "process did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for &pid in &self.extra {
            // SAFETY: kill has no memory-safety preconditions.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn signal(pid: i32, sig: i32) {
    // SAFETY: kill has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) };
}

fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !ready()? {
        ensure!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The agent as the unit runs it.

/// `retina-agent snapshot --cumulative --format json` with the packaged configuration as
/// uid 65534 with exactly `caps`, watching while `during` runs (`retina_tests::unit`).
/// Returns the snapshot document and the agent's stderr.
fn snapshot_as(caps: &[String], during: impl FnOnce() -> Result<()>) -> Result<(Value, String)> {
    unit::snapshot_as(caps, unit::Proc::Host, during)
}

fn metric_names(doc: &Value) -> BTreeSet<String> {
    doc["metrics"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["name"].as_str().map(str::to_string))
        .collect()
}

const DROPS: u64 = 400;

/// Sends [`DROPS`] UDP datagrams to a closed port inside `ns`: that many NO_SOCKET drops,
/// once the kernel has processed them (which can be after `traffic` returned).
fn drops_in(ns: &NetNs) -> Result<()> {
    let before = poll::udp_no_ports(ns)?;
    ns.exec(
        &traffic(),
        &["udp", "127.0.0.1:9", &DROPS.to_string(), "32"],
    )?;
    poll::udp_no_ports_reach(ns, before + DROPS)?;
    Ok(())
}
