//! Degradations are loud (issue 26, item 8), and `snapshot -- CMD` runs CMD as the caller
//! (or `--user`), never with the agent's capabilities.
//!
//! - A descriptor shortage that costs interface names is logged (once per streak) and
//!   counted in `retina.agent.descriptor.shortages`: the issue's `ulimit -n 64` replay,
//!   with drops in 40 named namespaces.
//! - CMD prints its own `/proc/self/status`: under the unit's capabilities it has none
//!   (ambient included) and the unit's uid; as root with `--user nobody` it is nobody,
//!   without capabilities; an unknown user is refused before anything runs.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, ensure};
use retina_tests::{
    NetNs, TempDir, agent_bin, child, free_port, helper_bin, http_get, poll, require_root,
    rotel::Proc, unit,
};

/// The `Prometheus` text lines of the drop counter.
fn drop_lines(body: &str) -> Vec<&str> {
    body.lines()
        .filter(|l| l.starts_with("retina_drop_count_total{"))
        .collect()
}

fn label<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let start = line.find(&format!("{name}=\""))? + name.len() + 2;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

fn counter(body: &str, series: &str) -> Option<u64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
}

/// The replay: the daemon limited to 64 descriptors (`ulimit -n 64`, as
/// `LimitNOFILE=64` would), drops in 40 named namespaces. Run as the unit with the
/// capability docs/operations.md documents for interface names in other namespaces
/// (CAP_SYS_ADMIN: without it no such name is ever resolved, so none can be lost). Each
/// namespace's rtnetlink sockets cost two descriptors: most namespaces cannot get theirs,
/// and every one that goes out unnamed must be counted, with a warning in the log.
#[test]
fn a_descriptor_shortage_that_costs_interface_names_is_logged_and_counted() -> Result<()> {
    require_root();
    let dir = TempDir::shared("fdshort")?;
    let config = dir.join("agent.toml");
    std::fs::write(&config, "# defaults\n")?;
    let port = free_port()?;
    let namespaces = (0..40)
        .map(|_| NetNs::new("rfd"))
        .collect::<Result<Vec<_>>>()?;

    // What the packaged unit gives, plus CAP_SYS_ADMIN (interface names in other
    // namespaces, which the descriptor shortage then costs).
    let mut caps = unit::unit_capabilities();
    caps.push("CAP_SYS_ADMIN".into());
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "ulimit -n 64 && exec \"$@\"", "sh"])
        .args(unit::setpriv_args(&caps))
        .arg(agent_bin())
        .arg("--config")
        .arg(&config)
        .args(["run", "--interval", "1s", "--no-summary"])
        .env("RUST_LOG", "info")
        .env("OTEL_EXPORTER_PROMETHEUS_PORT", port.to_string());
    let mut agent = Proc::spawn("agent", cmd, dir.join("agent.log"))?;
    agent.wait_running()?;

    let traffic = helper_bin("traffic");
    for ns in &namespaces {
        ns.exec(
            traffic.to_str().context("path")?,
            &["udp", "127.0.0.1:9", "3", "8"],
        )?;
    }
    let addr = format!("127.0.0.1:{port}");
    let names: Vec<&str> = namespaces.iter().map(|n| n.name.as_str()).collect();
    // Every namespace's NO_SOCKET series, named or not, is out.
    let body = poll::until(|| {
        agent.ensure_alive()?;
        let (_, body) = http_get(&addr, "/metrics")?;
        let seen = names
            .iter()
            .filter(|n| {
                drop_lines(&body).iter().any(|l| {
                    label(l, "network_namespace_name") == Some(**n)
                        && label(l, "drop_reason") == Some("NO_SOCKET")
                })
            })
            .count();
        Ok((seen == names.len()).then_some(body))
    })?
    .with_context(|| {
        format!(
            "not every namespace's drops appeared:\n{}",
            agent.log_text()
        )
    })?;

    let unnamed = names
        .iter()
        .filter(|n| {
            drop_lines(&body).iter().any(|l| {
                label(l, "network_namespace_name") == Some(**n)
                    && label(l, "network_interface_name").is_none()
            })
        })
        .count();
    ensure!(
        unnamed > 0,
        "the 64-descriptor limit cost no interface name: the replay did not reproduce the \
         shortage\n{body}"
    );
    let counted = counter(
        &body,
        "retina_agent_descriptor_shortages_total{lost=\"interface.name\"}",
    )
    .context("no retina_agent_descriptor_shortages_total{lost=\"interface.name\"}")?;
    assert!(
        counted >= unnamed as u64,
        "{unnamed} namespaces went out without interface names, {counted} shortages counted"
    );

    eprintln!(
        "{unnamed} of {} namespaces without interface names; {counted} shortages counted",
        names.len()
    );
    let log = agent.log_text();
    let first = log
        .lines()
        .filter(|l| {
            l.contains("WARN")
                && l.contains(": out of file descriptors (")
                && l.contains("lost=\"interface.name\"")
        })
        .count();
    let ended = log
        .lines()
        .filter(|l| l.contains("file descriptors available again: interface.name"))
        .count();
    // Once per streak: a streak that ended may start again, and is logged again.
    assert!(
        first >= 1 && first <= ended + 1,
        "{first} first-of-streak warnings for {ended} ended streaks:\n{log}"
    );
    assert!(log.contains("Too many open files"), "{log}");
    drop(agent);
    Ok(())
}

/// `snapshot -- sh -c 'cat /proc/self/status'` run through `prefix` (a command and its
/// arguments before the agent's): CMD's output (on the agent's stderr) and the exit status.
fn snapshot_cmd(
    prefix: &[String],
    agent_args: &[&str],
    env: &[(&str, &str)],
) -> Result<(String, String, i32)> {
    let status_cmd = "grep -E '^(Uid|Gid|Groups|CapInh|CapPrm|CapEff|CapAmb):' /proc/self/status";
    let mut cmd = match prefix.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(agent_bin());
            c
        }
        None => Command::new(agent_bin()),
    };
    cmd.args(["snapshot", "--format", "json"])
        .args(agent_args)
        .args(["--", "sh", "-c", status_cmd])
        .env_remove("SUDO_USER")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.stdin(std::process::Stdio::null()).output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    Ok((stdout, stderr, out.status.code().unwrap_or(-1)))
}

/// The value of a `Key:` line of /proc/PID/status text.
fn field<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
}

fn assert_no_capabilities(status: &str) {
    for set in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
        assert_eq!(
            field(status, set),
            Some("0000000000000000"),
            "{set} of CMD:\n{status}"
        );
    }
}

#[test]
fn snapshot_cmd_under_the_units_capabilities_has_none_and_the_units_uid() -> Result<()> {
    require_root();
    let prefix = unit::setpriv_args(&unit::unit_capabilities());
    let (stdout, stderr, code) = snapshot_cmd(&prefix, &[], &[])?;
    assert_eq!(code, 0, "{stderr}");
    // The snapshot itself ran with its capabilities: the drop probe attached.
    let doc: serde_json::Value = serde_json::from_str(stdout.trim())
        .with_context(|| format!("stdout is not the snapshot alone: {stdout}"))?;
    let degraded = doc["degraded"].as_array().context("no degraded list")?;
    assert!(
        !degraded.iter().any(|d| d["collector"] == "drops"),
        "{doc:#}"
    );
    assert_eq!(
        field(&stderr, "Uid"),
        Some("65534\t65534\t65534\t65534"),
        "{stderr}"
    );
    assert_no_capabilities(&stderr);
    Ok(())
}

#[test]
fn snapshot_user_runs_cmd_as_that_user_and_root_is_named_under_sudo() -> Result<()> {
    require_root();
    let (_, stderr, code) = snapshot_cmd(&[], &["--user", "nobody"], &[])?;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        field(&stderr, "Uid"),
        Some("65534\t65534\t65534\t65534"),
        "{stderr}"
    );
    assert_eq!(
        field(&stderr, "Gid"),
        Some("65534\t65534\t65534\t65534"),
        "{stderr}"
    );
    // nobody's supplementary groups from the user database, not root's.
    let groups = field(&stderr, "Groups").unwrap_or_default();
    assert!(
        !groups.split_whitespace().any(|g| g == "0"),
        "Groups: {groups}"
    );
    assert_no_capabilities(&stderr);

    // Under sudo without --user CMD is the caller, root, and the agent says so.
    let (_, stderr, code) = snapshot_cmd(&[], &[], &[("SUDO_USER", "nobody")])?;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(field(&stderr, "Uid"), Some("0\t0\t0\t0"), "{stderr}");
    assert!(
        stderr.contains("sh runs as root; `--user nobody` runs it as nobody"),
        "{stderr}"
    );
    Ok(())
}

#[test]
fn snapshot_refuses_an_unknown_user_before_anything_runs() -> Result<()> {
    require_root();
    let dir = TempDir::new("nouser")?;
    let marker = dir.join("ran");
    let out = child::agent(&["snapshot", "--user", "no-such-user-r26", "--", "touch"])
        .arg(&marker)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("\"no-such-user-r26\": no such user"),
        "{stderr}"
    );
    assert!(!Path::new(&marker).exists(), "CMD ran");
    assert!(
        !stderr.contains("drop probe attached"),
        "the agent attached first: {stderr}"
    );
    Ok(())
}
