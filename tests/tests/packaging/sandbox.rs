//! System calls, socket families and file access of the running daemon against the unit's
//! `SystemCallFilter=` and `RestrictAddressFamilies=`, under `strace`.

use super::*;

/// The system calls `systemd-analyze syscall-filter` lists in each group (`@default`
/// → names, nested groups expanded).
fn syscall_groups() -> Result<BTreeMap<String, BTreeSet<String>>> {
    let out = run("systemd-analyze", ["syscall-filter"])?;
    let text = String::from_utf8(out.stdout)?;
    let mut raw: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix('@') {
            let name = format!("@{}", name.split_whitespace().next().unwrap_or(""));
            raw.insert(name.clone(), Vec::new());
            current = Some(name);
        } else if let Some(group) = &current {
            let word = line.trim();
            if !word.is_empty() && !word.starts_with('#') {
                let word = word.split_whitespace().next().unwrap_or(word);
                raw.get_mut(group).expect("group").push(word.to_string());
            }
        }
    }
    fn expand(
        raw: &BTreeMap<String, Vec<String>>,
        group: &str,
        out: &mut BTreeSet<String>,
    ) -> Result<()> {
        for entry in raw
            .get(group)
            .with_context(|| format!("unknown group {group}"))?
        {
            if entry.starts_with('@') {
                expand(raw, entry, out)?;
            } else {
                out.insert(entry.clone());
            }
        }
        Ok(())
    }
    let mut groups = BTreeMap::new();
    for group in raw.keys() {
        let mut set = BTreeSet::new();
        expand(&raw, group, &mut set)?;
        groups.insert(group.clone(), set);
    }
    ensure!(
        groups.contains_key("@system-service"),
        "no @system-service group: {text}"
    );
    Ok(groups)
}

/// The system calls the unit's SystemCallFilter= lines allow (systemd.exec(5): the first
/// line decides allow- or deny-list; later lines add to or remove from it).
fn allowed_syscalls(unit: &str) -> Result<BTreeSet<String>> {
    let groups = syscall_groups()?;
    let lines = service_values(unit, "SystemCallFilter");
    ensure!(!lines.is_empty(), "the unit has no SystemCallFilter=");
    ensure!(
        !lines[0].starts_with('~'),
        "expected an allow-list SystemCallFilter="
    );
    let mut allowed = BTreeSet::new();
    for line in lines {
        let (deny, list) = match line.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, line.as_str()),
        };
        for word in list.split_whitespace() {
            // `name:errno` sets a per-call error number; the name is what matters here.
            let word = word.split(':').next().unwrap_or(word);
            let names: BTreeSet<String> = if word.starts_with('@') {
                groups
                    .get(word)
                    .cloned()
                    .with_context(|| format!("unknown group {word}"))?
            } else {
                BTreeSet::from([word.to_string()])
            };
            if deny {
                allowed.retain(|n| !names.contains(n));
            } else {
                allowed.extend(names);
            }
        }
    }
    Ok(allowed)
}

/// What an strace log (`strace -f -o`) shows the agent doing after its exec.
#[derive(Default, Debug)]
struct Traced {
    syscalls: BTreeSet<String>,
    families: BTreeSet<String>,
    /// Paths opened successfully for writing or creating.
    written: BTreeSet<String>,
    /// Paths opened successfully (any mode).
    opened: BTreeSet<String>,
}

/// `logs` are (tid, log) of `strace -ff`; `pid` is the process that exec'ed the agent.
/// In its log only what follows the exec counts (before it, it was setpriv).
fn parse_strace(logs: &[(i32, String)], pid: i32, agent: &Path) -> Result<Traced> {
    let exec = format!("execve(\"{}\"", agent.display());
    let mut traced = Traced::default();
    for (tid, log) in logs {
        let skip = if *tid == pid {
            1 + log
                .lines()
                .position(|l| l.contains(&exec) && l.trim_end().ends_with("= 0"))
                .with_context(|| format!("no successful exec of the agent in:\n{log}"))?
        } else {
            0
        };
        for line in log.lines().skip(skip) {
            trace_line(line, &mut traced);
        }
    }
    Ok(traced)
}

/// One line of an `strace -ff` log: `call(args) = result`.
fn trace_line(line: &str, traced: &mut Traced) {
    if line.starts_with("+++") || line.starts_with("---") {
        return;
    }
    let Some((name, args)) = line.split_once('(') else {
        return;
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return;
    }
    traced.syscalls.insert(name.to_string());
    if (name == "socket" || name == "socketpair")
        && let Some(family) = args.split(',').next()
    {
        traced.families.insert(family.trim().to_string());
    }
    let succeeded = line
        .rsplit_once(" = ")
        .is_some_and(|(_, r)| r.trim_start().starts_with(|c: char| c.is_ascii_digit()));
    if (name == "openat" || name == "open") && succeeded {
        let path = args.split('"').nth(1).unwrap_or_default().to_string();
        let flags = args
            .split(", ")
            .nth(if name == "openat" { 2 } else { 1 })
            .unwrap_or("");
        if ["O_WRONLY", "O_RDWR", "O_CREAT"]
            .iter()
            .any(|f| flags.contains(f))
        {
            traced.written.insert(path.clone());
        }
        traced.opened.insert(path);
    }
}

#[test]
fn unit_sandbox_covers_what_the_daemon_does() -> Result<()> {
    require_root();
    let unit = unit_text();
    let caps = unit_capabilities();
    let allowed = allowed_syscalls(&unit)?;
    let families: BTreeSet<String> = service_values(&unit, "RestrictAddressFamilies")
        .iter()
        .flat_map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    ensure!(!families.is_empty(), "no RestrictAddressFamilies=");

    let dir = TempDir::new("rpkg-strace")?;
    let log = dir.path().join("strace.log");
    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    let agent = agent_bin();
    // strace runs setpriv, which runs the agent as the unit would; one log per thread
    // (`-ff`: log.<tid>), so no call is split into unfinished/resumed halves.
    let mut cmd = Command::new("strace");
    cmd.args(["-ff", "-qq", "-s", "256", "-o"])
        .arg(&log)
        .arg("setpriv");
    cmd.args(setpriv(&caps).get_args())
        .arg(&agent)
        .arg("--config")
        .arg(repo().join("packaging/config.toml"))
        .args(["run", "--interval", "500ms", "--prometheus-listen", &listen])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(dir.path().join("stderr"))?);
    let mut guard = Guard::spawn(&mut cmd)?;
    wait_for("the Prometheus endpoint", Duration::from_secs(60), || {
        if let Some(status) = guard.child().try_wait()? {
            bail!("the agent exited early ({status})");
        }
        Ok(http_get(&listen, "/metrics").is_ok_and(|(status, _)| status == 200))
    })?;
    // The traced process's pid is setpriv's, then the agent's (exec keeps it): the log
    // that shows the exec.
    let exec = format!("execve(\"{}\"", agent.display());
    let logs = || -> Result<Vec<(i32, String)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir.path())? {
            let path = entry?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if let Some(pid) = name
                .strip_prefix("strace.log.")
                .and_then(|p| p.parse().ok())
            {
                out.push((pid, fs::read_to_string(&path)?));
            }
        }
        Ok(out)
    };
    let pid = logs()?
        .into_iter()
        .find(|(_, text)| text.contains(&exec))
        .map(|(pid, _)| pid)
        .context("no trace shows the agent's exec")?;
    guard.extra.push(pid);
    let ns = NetNs::new("rpst")?;
    drops_in(&ns)?;
    // The drops show on /metrics from the next collection on.
    let scraped = poll::until(|| {
        Ok(match http_get(&listen, "/metrics") {
            Ok((200, body)) if body.contains("retina_drop_count") => Some(()),
            _ => None,
        })
    })?;
    let (status, body) = http_get(&listen, "/metrics")?;
    assert_eq!(status, 200);
    if scraped.is_none() || !body.contains("retina_drop_count") {
        let stderr = fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
        panic!("no retina_drop_count on /metrics; agent stderr:\n{stderr}");
    }
    signal(pid, libc::SIGTERM);
    let status = guard.finish(Duration::from_secs(30))?;
    let stderr = fs::read_to_string(dir.path().join("stderr"))?;
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    let traced = parse_strace(&logs()?, pid, &agent)?;
    let outside: Vec<_> = traced.syscalls.difference(&allowed).collect();
    assert!(
        outside.is_empty(),
        "system calls outside SystemCallFilter= (they would fail with EPERM): {outside:?}"
    );
    let other_families: Vec<_> = traced.families.difference(&families).collect();
    assert!(
        other_families.is_empty(),
        "socket families outside RestrictAddressFamilies=: {other_families:?}"
    );
    assert!(traced.families.contains("AF_NETLINK"), "{traced:?}");
    // ProtectSystem=strict: nothing is written to the file system.
    assert!(
        traced.written.is_empty(),
        "files opened for writing: {:?}",
        traced.written
    );
    // ProtectHome=, PrivateTmp=, PrivateDevices=, ProtectKernelLogs= hide these.
    let hidden = [
        "/home/",
        "/root/",
        "/run/user/",
        "/tmp/",
        "/var/tmp/",
        "/proc/kmsg",
    ];
    let devices = [
        "/dev/null",
        "/dev/zero",
        "/dev/random",
        "/dev/urandom",
        "/dev/full",
    ];
    eprintln!(
        "{} distinct system calls: {:?}\nsocket families: {:?}\nopened: {:?}",
        traced.syscalls.len(),
        traced.syscalls,
        traced.families,
        traced.opened
    );
    // (The configuration is read from the repository here, /etc/retina-agent in the unit.)
    let config = repo().join("packaging/config.toml").display().to_string();
    for path in traced.opened.iter().filter(|p| **p != config) {
        assert!(
            !hidden.iter().any(|h| path.starts_with(h))
                && (!path.starts_with("/dev/") || devices.contains(&path.as_str())),
            "the agent opened {path}, which the unit's sandbox hides"
        );
    }
    Ok(())
}
