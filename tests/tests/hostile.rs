//! Hostile input and faults (issue 14), against the real kernel: special files (a real
//! FIFO, /dev/zero), values out of range in file, environment and flags, a closed pipe on
//! stdout, an interface renamed to bytes that are not UTF-8, namespaces deleted under the
//! agent, and a renamed interface with drop series.
//!
//! Run with `--test-threads=1` (the xtask does): the tests create interfaces and
//! namespaces and count the agent's file descriptors.

use std::{
    ffi::OsStr,
    io::{BufRead, BufReader},
    os::unix::ffi::OsStrExt,
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail, ensure};
use opentelemetry::KeyValue;
use retina_agent::{
    agent::Agent,
    collectors::{
        Collector,
        ethtool::{EthtoolCollector, EthtoolConfig, LinkStateCollector},
    },
    config::Config,
    kernel::links::Links,
    model::{Metric, Number},
};
use retina_tests::{
    child::*,
    rotel::{PATIENCE, Proc, wait_for},
    unit::agent_as_unit,
    *,
};

/// A configuration the agent must refuse: `run` and `check` both exit 2, at once, and say
/// `needle` (the file, key or variable and the reason).
fn assert_exit_2(args: &[&str], env: &[(&OsStr, &OsStr)], needle: &str) -> Result<()> {
    for command in ["run", "check"] {
        let mut all = vec![command];
        all.extend_from_slice(args);
        if command == "run" {
            all.push("--no-summary");
        }
        let mut cmd = agent(&all);
        cmd.envs(env.iter().copied());
        let (out, _) = Running::spawn(cmd)?.wait(Duration::from_secs(30))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(2), "{command} {args:?}: {text}");
        assert!(
            text.contains(needle),
            "{command} {args:?}: {text:?} should say {needle:?}"
        );
        assert!(!text.contains("panicked"), "{text}");
    }
    Ok(())
}

#[test]
fn special_files_are_refused_at_once() -> Result<()> {
    require_root();
    let dir = TempDir::new("hostile-files")?;
    let fifo = dir.join("config.fifo");
    mkfifo(&fifo)?;
    let fifo_s = fifo.to_str().context("path")?;
    assert_exit_2(
        &["--config", fifo_s],
        &[],
        &format!("{fifo_s}: cannot read the configuration file: not a regular file (a FIFO)"),
    )?;
    assert_exit_2(
        &["--config", "/dev/zero"],
        &[],
        "/dev/zero: cannot read the configuration file: not a regular file (a character device)",
    )?;
    // A 50 MB value: refused by the size cap without reading it.
    let big = dir.join("big.toml");
    let mut text = String::from("[export]\nservice_name = \"");
    text.push_str(&"x".repeat(50_000_000));
    text.push_str("\"\n");
    std::fs::write(&big, text)?;
    // Each in a 64 MiB memory cgroup: refused without reading the file (the agent used to
    // reach 305 MB here), /dev/zero without reading it until memory runs out.
    const LIMIT: u64 = 64 << 20;
    let cg = MemCgroup::new(LIMIT)?;
    let mut cmd = agent(&["run", "--config", big.to_str().unwrap()]);
    cg.adopt(&mut cmd)?;
    let (out, _) = Running::spawn(cmd)?.wait(Duration::from_secs(30))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("larger than the limit of 1048576 bytes"),
        "{stderr}"
    );
    let peak = cg.peak()?;
    eprintln!(
        "50 MB config value: refused, peak memory {} KiB",
        peak >> 10
    );
    assert!(peak < 16 << 20, "peak memory {peak} bytes");
    drop(cg);
    // --btf of a device or a FIFO: an error naming the file, exit 1, no endless read.
    for btf in ["/dev/zero", fifo_s] {
        let cg = MemCgroup::new(LIMIT)?;
        let mut cmd = agent(&["reasons", "--btf", btf]);
        cg.adopt(&mut cmd)?;
        let (out, _) = Running::spawn(cmd)?.wait(Duration::from_secs(30))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains(btf) && stderr.contains("not a regular file"),
            "{stderr}"
        );
        let peak = cg.peak()?;
        eprintln!("--btf {btf}: refused, peak memory {} KiB", peak >> 10);
        assert!(peak < 16 << 20, "--btf {btf}: peak memory {peak} bytes");
    }
    Ok(())
}

#[test]
fn values_out_of_range_exit_2_in_run_and_check() -> Result<()> {
    require_root();
    let dir = TempDir::new("hostile-ranges")?;
    let port = free_port()?;
    for (case, text, needle) in [
        (
            "interval",
            "interval = \"1ns\"",
            "key `interval`: 1ns is out of range",
        ),
        (
            "timeout",
            "[export]\ntimeout = \"18446744073709551615s\"",
            "key `export.timeout`",
        ),
        (
            "years",
            "[export]\ntimeout = \"20000y\"",
            "key `export.timeout`: 20000years is out of range",
        ),
        (
            "linkstate",
            "[ethtool]\nlink_state_interval = \"20000y\"",
            "key `ethtool.link_state_interval`: 20000years is out of range",
        ),
        (
            "cafile",
            "[export]\nendpoint = \"https://127.0.0.1:4317\"\nca_file = \"/etc\"",
            "key `export.ca_file`: /etc: not a regular file (a directory)",
        ),
        (
            "port",
            "[export]\nendpoint = \"http://127.0.0.1:99999\"",
            "port is not a number from 1 to 65535",
        ),
        (
            "blank",
            "[export]\nendpoint = \" \"",
            "key `export.endpoint`: is blank",
        ),
        (
            "fragment",
            "[export]\nendpoint = \"http://127.0.0.1:4317#frag\"",
            "a fragment (#...) is not allowed",
        ),
    ] {
        let path = dir.join(&format!("{case}.toml"));
        std::fs::write(
            &path,
            format!("{text}\n[prometheus]\nlisten = \"127.0.0.1:{port}\"\n"),
        )?;
        let p = path.to_str().unwrap();
        assert_exit_2(&["--config", p], &[], needle).with_context(|| case)?;
        assert_exit_2(&["--config", p], &[], p).with_context(|| case)?;
    }
    let off = dir.join("off.toml");
    std::fs::write(
        &off,
        format!("[prometheus]\nlisten = \"127.0.0.1:{port}\"\n"),
    )?;
    let off = off.to_str().unwrap();
    let bad_header = OsStr::from_bytes(b"authorization=Bearer \xff");
    for (name, value, needle) in [
        (
            OsStr::new("OTEL_EXPORTER_OTLP_TIMEOUT"),
            OsStr::new("18446744073709551615"),
            "export.timeout",
        ),
        (
            OsStr::new("OTEL_METRIC_EXPORT_INTERVAL"),
            OsStr::new("1"),
            "OTEL_METRIC_EXPORT_INTERVAL",
        ),
        (
            OsStr::new("RUST_LOG"),
            OsStr::new("inf"),
            "RUST_LOG=\"inf\": invalid log filter: `inf` is not a level",
        ),
        (
            OsStr::new("OTEL_EXPORTER_OTLP_HEADERS"),
            bad_header,
            "environment variable OTEL_EXPORTER_OTLP_HEADERS: the value is not valid UTF-8",
        ),
    ] {
        assert_exit_2(&["--config", off], &[(name, value)], needle)?;
    }
    // Flags: clap's usage errors, also status 2.
    for flag in [
        &["--interval", "1ns"][..],
        &["--interval", "18446744073709551615s"],
    ] {
        let mut args = vec!["run", "--config", off];
        args.extend_from_slice(flag);
        let (out, _) = Running::spawn(agent(&args))?.wait(Duration::from_secs(30))?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag:?}: {stderr}");
        assert!(stderr.contains("out of range"), "{stderr}");
    }
    Ok(())
}

/// The `collect.failures` count of `collector` in a Prometheus scrape.
fn collect_failures(scrape: &str, collector: &str) -> Option<u64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains("collect_failures"))
        .find(|l| l.contains(&format!("collector=\"{collector}\"")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

#[test]
fn a_fifo_in_proc_root_neither_hangs_nor_blocks_sigterm() -> Result<()> {
    require_root();
    let dir = TempDir::new("hostile-proc")?;
    let net = dir.join("net");
    std::fs::create_dir_all(&net)?;
    mkfifo(&net.join("netstat"))?;
    std::fs::copy("/proc/net/snmp", net.join("snmp"))?;
    std::fs::copy("/proc/net/snmp6", net.join("snmp6"))?;
    let port = free_port()?;
    let config = dir.join("c.toml");
    std::fs::write(
        &config,
        format!(
            "[netstat]\nproc_root = {:?}\n[export]\nenabled = false\n\
             [prometheus]\nlisten = \"127.0.0.1:{port}\"\n",
            dir.path()
        ),
    )?;
    let running = Running::spawn(agent(&[
        "run",
        "--no-summary",
        "--interval",
        "200ms",
        "--config",
        config.to_str().unwrap(),
    ]))?;
    // Collection goes on: netstat's failures grow cycle after cycle, the endpoint answers.
    let addr = format!("127.0.0.1:{port}");
    let mut seen = Vec::new();
    let limit = Instant::now() + STARTUP;
    while seen.len() < 3 {
        ensure!(!running.exited(), "the agent exited early");
        ensure!(
            Instant::now() < limit,
            "no growing netstat failures: {seen:?}"
        );
        if let Ok((200, body)) = http_get(&addr, "/metrics")
            && let Some(n) = collect_failures(&body, "netstat")
            && seen.last().is_none_or(|&l| n > l)
        {
            seen.push(n);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(running.pid(), libc::SIGTERM) };
    let (out, _) = running.wait(Duration::from_secs(10))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("SIGTERM: stopping"), "{stderr}");
    // Logged once (the first of the streak), not every cycle.
    let fifo_lines = stderr.matches("not a regular file (a FIFO)").count();
    assert_eq!(fifo_lines, 1, "{stderr}");
    Ok(())
}

#[test]
fn summary_into_a_closed_pipe_stops_cleanly() -> Result<()> {
    require_root();
    let mut cmd = agent(&["run", "--summary", "--interval", "200ms", "--no-prometheus"]);
    cmd.env("OTEL_SDK_DISABLED", "true");
    let mut running = Running::spawn(cmd)?;
    let stdout = running.child().stdout.take().context("stdout")?;
    // `| head -2`: read two lines, then close the pipe.
    let reader = std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let got: Vec<String> = lines.by_ref().take(2).map_while(Result::ok).collect();
        got
    });
    let t = traffic();
    let limit = Instant::now() + STARTUP;
    while !reader.is_finished() {
        ensure!(Instant::now() < limit, "no summary lines");
        run(&t, ["udp", "127.0.0.1:9", "5", "8"])?;
        std::thread::sleep(Duration::from_millis(100));
    }
    let lines = reader.join().expect("reader");
    // The "where packets died" view: its title, then its header.
    assert!(
        lines
            .first()
            .is_some_and(|l| l.starts_with("where packets died"))
            && lines.get(1).is_some_and(|l| l.contains("PACKETS")),
        "{lines:?}"
    );
    // The read end is closed now; the next summary meets EPIPE.
    let limit = Instant::now() + Duration::from_secs(30);
    while !running.exited() {
        ensure!(Instant::now() < limit, "the agent kept running after EPIPE");
        run(&t, ["udp", "127.0.0.1:9", "5", "8"])?;
        std::thread::sleep(Duration::from_millis(100));
    }
    let (out, _) = running.wait(Duration::from_secs(1))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("stdout closed (broken pipe): stopping") && stderr.contains("stopped"),
        "{stderr}"
    );
    Ok(())
}

/// `SIOCSIFNAME`: renames an interface to any bytes (`ip link set name` refuses some).
fn rename_raw(from: &[u8], to: &[u8]) -> Result<()> {
    // SAFETY: a plain datagram socket for the ioctl; owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    ensure!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just opened and is owned by nobody else.
    let _fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: an all-zero ifreq is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    ensure!(from.len() < 16 && to.len() < 16, "names too long");
    for (i, b) in from.iter().enumerate() {
        ifr.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: writing the `ifru_newname` member of the union, which SIOCSIFNAME reads.
    let newname = unsafe { &mut ifr.ifr_ifru.ifru_newname };
    for (i, b) in to.iter().enumerate() {
        newname[i] = *b as libc::c_char;
    }
    // SAFETY: `ifr` is a valid ifreq for SIOCSIFNAME.
    let r = unsafe { libc::ioctl(fd, libc::SIOCSIFNAME, &mut ifr) };
    ensure!(
        r == 0,
        "SIOCSIFNAME {:?} -> {:?}: {}",
        String::from_utf8_lossy(from),
        to,
        std::io::Error::last_os_error()
    );
    Ok(())
}

fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// (metric, interface) → value, summed over other attributes.
fn by_interface(c: &dyn Collector) -> std::collections::BTreeMap<(String, String), u64> {
    let mut out = std::collections::BTreeMap::new();
    c.visit(&mut |m: &'static Metric, attrs: &[KeyValue], v: Number| {
        if let (Number::U64(v), Some(i)) = (v, attr(attrs, "network.interface.name")) {
            *out.entry((m.name.to_string(), i)).or_default() += v;
        }
    });
    out
}

#[test]
fn a_non_utf8_interface_name_spoils_nothing() -> Result<()> {
    require_root();
    // The odd one first: it comes before the others in every dump.
    let odd = Veth::new("rodd")?;
    const ODD: &[u8] = b"\xff\xfe\x01";
    let lossy = String::from_utf8_lossy(ODD).into_owned();
    rename_raw(odd.peer.as_bytes(), ODD)?;
    let normal = Veth::new("rnrm")?;
    let mut links = Links::new()?;
    links.refresh()?;
    let config = EthtoolConfig {
        interfaces_exclude: Vec::new(),
        ..EthtoolConfig::default()
    };
    let rt = runtime()?;
    let _rt = rt.enter();
    let mut ls = LinkStateCollector::new(&config)?;
    ls.collect(&links).map_err(|e| anyhow::anyhow!("{e}"))?;
    // The odd interface's message does not decode: reported, but only it is missing.
    let refresh = rt.block_on(ls.refresh(&links, Duration::from_secs(10)));
    eprintln!("link-state refresh with the odd name: {refresh:?}");
    let points = by_interface(&ls);
    for name in [&odd.host, &normal.host, &normal.peer] {
        assert_eq!(
            points.get(&("retina.nic.link.speed".into(), name.clone())),
            Some(&10_000_000_000),
            "{name}: {points:?}"
        );
    }
    // Driver statistics of the odd one, by its bytes, under its lossy name.
    let mut stats = EthtoolCollector::new(&config)?;
    stats.collect(&links).map_err(|e| anyhow::anyhow!("{e}"))?;
    let points = by_interface(&stats);
    let theirs = run("ethtool", [OsStr::new("-S"), OsStr::from_bytes(ODD)])?;
    let text = String::from_utf8(theirs.stdout)?;
    ensure!(text.contains("peer_ifindex"), "ethtool -S: {text}");
    assert!(
        points.contains_key(&("retina.nic.driver.stat".into(), lossy.clone())),
        "no driver statistics for {lossy:?}: {points:?}"
    );
    assert!(
        points.contains_key(&("retina.nic.info".into(), lossy.clone())),
        "{points:?}"
    );
    Ok(())
}

/// File descriptors this process holds.
fn fds() -> Result<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")?.count())
}

#[test]
fn deleted_namespaces_are_released() -> Result<()> {
    require_root();
    const N: usize = 30;
    let rt = runtime()?;
    let _rt = rt.enter();
    let mut agent = Agent::new(&Config::default())?;
    assert!(agent.degraded().is_empty(), "{:?}", agent.degraded());
    // The agent opens and closes a descriptor now and then (one more or less at any
    // moment): the baseline is the fewest over a few cycles, and the held count is
    // polled for below.
    let mut before = usize::MAX;
    for _ in 0..5 {
        agent.cycle();
        before = before.min(fds()?);
        std::thread::sleep(Duration::from_millis(50));
    }
    let t = traffic();
    let mut spaces = Vec::new();
    for _ in 0..N {
        let ns = NetNs::new("rrel")?;
        let mut veth = Veth::new("rrl")?;
        veth.move_peer(&ns)?;
        // A drop inside the namespace: its series asks for the namespace's interfaces.
        ns.exec(&t, &["udp", "127.0.0.1:9", "3", "8"])?;
        spaces.push((ns, veth));
    }
    let mut held = 0;
    let until = Instant::now() + Duration::from_secs(5);
    while held < before + 2 * N && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(200));
        agent.cycle();
        held = held.max(fds()?);
    }
    eprintln!("fds: {before} before, {held} with {N} namespaces' drops");
    ensure!(
        held >= before + 2 * N,
        "not 2 sockets per namespace? {before} -> {held}"
    );
    // `ip netns del` every one; the veth host ends stay while something keeps the
    // namespaces alive, and go with them.
    let hosts: Vec<String> = spaces.iter().map(|(_, v)| v.host.clone()).collect();
    let started = Instant::now();
    for (ns, veth) in spaces.drain(..) {
        drop(ns);
        std::mem::forget(veth); // its end goes with the namespace; checked below
    }
    let limit = Instant::now() + Duration::from_secs(30);
    loop {
        agent.cycle();
        let now = fds()?;
        let alive = hosts
            .iter()
            .filter(|h| Path::new(&format!("/sys/class/net/{h}")).exists())
            .count();
        // Every namespace's sockets closed (the agent holds 2 per namespace), and the
        // kernel destroyed every namespace (their veths went with them).
        if held.saturating_sub(now) >= 2 * N && alive == 0 {
            eprintln!(
                "released after {:?}: fds {now} (was {held}), 0 of {N} namespaces' devices left",
                started.elapsed()
            );
            break;
        }
        if Instant::now() > limit {
            for h in &hosts {
                let _ = ip(&["link", "del", h]);
            }
            bail!("after 30 s: fds {now} (before {before}), {alive} namespaces still alive");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

#[test]
fn a_drop_series_follows_an_interface_rename() -> Result<()> {
    require_root();
    let rt = runtime()?;
    let _rt = rt.enter();
    let mut agent = Agent::new(&Config::default())?;
    assert!(agent.degraded().is_empty(), "{:?}", agent.degraded());
    let ns = NetNs::new("rren")?;
    let mut veth = Veth::new("rrn")?;
    veth.move_peer(&ns)?;
    let host_if = veth.host.clone();
    let host_ip = "10.231.77.1";
    let peer_ip = "10.231.77.2";
    run(
        "sysctl",
        ["-qw", &format!("net.ipv6.conf.{host_if}.disable_ipv6=1")],
    )?;
    ns.exec(
        "sysctl",
        &[
            "-qw",
            &format!("net.ipv6.conf.{}.disable_ipv6=1", veth.peer),
        ],
    )?;
    ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &host_if])?;
    ip(&["link", "set", &host_if, "up"])?;
    ns.exec(
        "ip",
        &["addr", "add", &format!("{peer_ip}/24"), "dev", &veth.peer],
    )?;
    ns.exec("ip", &["link", "set", &veth.peer, "up"])?;
    let t = traffic();
    agent.cycle();
    let count = |agent: &Agent, name: &str| {
        let mut n = 0;
        agent.visit(&mut |m: &'static Metric, attrs: &[KeyValue], v: Number| {
            if m.name == "retina.drop.count"
                && attr(attrs, "network.interface.name").as_deref() == Some(name)
                && attr(attrs, "drop.reason").as_deref() == Some("NO_SOCKET")
                && let Number::U64(v) = v
            {
                n += v;
            }
        });
        n
    };
    let settle = |agent: &mut Agent, name: &str, want: u64| -> Result<()> {
        let limit = Instant::now() + Duration::from_secs(10);
        loop {
            agent.cycle();
            let got = count(agent, name);
            if got >= want {
                ensure!(got == want, "{name}: {got} drops, want {want}");
                return Ok(());
            }
            ensure!(Instant::now() < limit, "{name}: {got} drops, want {want}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    ns.exec(&t, &["udp", &format!("{host_ip}:9"), "40", "32"])?;
    settle(&mut agent, &host_if, 40)?;
    // Rename the host end (down, rename, up), then drop more on it.
    let renamed = format!("{host_if}x");
    ensure!(renamed.len() <= 15);
    ip(&["link", "set", &host_if, "down"])?;
    ip(&["link", "set", &host_if, "name", &renamed])?;
    // The Veth guard deletes by the old name: rename back whatever happens.
    struct Back(String, String);
    impl Drop for Back {
        fn drop(&mut self) {
            let _ = ip(&["link", "set", &self.0, "down"]);
            let _ = ip(&["link", "set", &self.0, "name", &self.1]);
        }
    }
    let _back = Back(renamed.clone(), host_if.clone());
    ip(&["link", "set", &renamed, "up"])?;
    agent.cycle();
    assert_eq!(count(&agent, &host_if), 0, "drops left under the old name");
    assert_eq!(count(&agent, &renamed), 40, "the series took the new name");
    ns.exec(&t, &["udp", &format!("{host_ip}:9"), "25", "32"])?;
    settle(&mut agent, &renamed, 65)?;
    assert_eq!(count(&agent, &host_if), 0);
    Ok(())
}

#[test]
fn snapshot_json_keeps_the_command_s_stdout_out() -> Result<()> {
    require_root();
    let mut cmd = agent(&[
        "snapshot",
        "--format",
        "json",
        "--settle",
        "1ms",
        "--",
        "echo",
        "{\"not\": \"the snapshot\"}",
    ]);
    cmd.env("OTEL_SDK_DISABLED", "true");
    let (out, _) = Running::spawn(cmd)?.wait(Duration::from_secs(60))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    // stdout is one JSON document, the snapshot; the command's line went to stderr.
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("stdout: {}", String::from_utf8_lossy(&out.stdout)))?;
    assert!(doc["metrics"].is_array(), "{doc}");
    assert!(stderr.contains("{\"not\": \"the snapshot\"}"), "{stderr}");
    Ok(())
}

/// An interface whose name is the bytes `name`, created with `ip link add`, with a veth
/// peer of a plain name; deleted on drop.
struct OddVeth {
    name: &'static [u8],
    peer: String,
}

impl OddVeth {
    fn new(name: &'static [u8], peer_prefix: &str) -> Result<OddVeth> {
        let _ = std::process::Command::new("ip")
            .args([
                OsStr::new("link"),
                OsStr::new("del"),
                OsStr::from_bytes(name),
            ])
            .output();
        let peer = unique_name(peer_prefix);
        let out = std::process::Command::new("ip")
            .args([
                OsStr::new("link"),
                OsStr::new("add"),
                OsStr::from_bytes(name),
            ])
            .args(["type", "veth", "peer", "name", &peer])
            .output()?;
        ensure!(
            out.status.success(),
            "ip link add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let odd = OddVeth { name, peer };
        for n in [OsStr::from_bytes(odd.name), OsStr::new(&odd.peer)] {
            let out = std::process::Command::new("ip")
                .args([OsStr::new("link"), OsStr::new("set"), n, OsStr::new("up")])
                .output()?;
            ensure!(out.status.success(), "ip link set up: {out:?}");
        }
        Ok(odd)
    }
}

impl Drop for OddVeth {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args([
                OsStr::new("link"),
                OsStr::new("del"),
                OsStr::from_bytes(self.name),
            ])
            .output();
    }
}

/// Whether a scrape has the link speed of interface `name`.
fn has_link_speed(scrape: &str, name: &str) -> bool {
    scrape.lines().any(|l| {
        l.starts_with("retina_nic_link_speed")
            && l.contains(&format!("network_interface_name=\"{name}\""))
    })
}

/// Issue 26, item 6: the daemon (run as the unit runs it) sees `ip link add $'pz\xff'`.
/// The kernel's link-state messages about it do not decode; that is no collector failure
/// (`collect_failures{collector="ethtool_link"}` stays 0), the interface is named once in
/// the log, and the other interfaces keep their link state, over several refreshes.
#[test]
fn a_non_utf8_interface_name_is_no_link_state_failure() -> Result<()> {
    require_root();
    let dir = TempDir::shared("roddls")?;
    let port = free_port()?;
    let config = dir.join("agent.toml");
    // Every series: a veth's link speed is its driver's constant, which the default
    // `informative` policy leaves out, and veths are the interfaces a test can make.
    std::fs::write(
        &config,
        format!(
            "interval = \"1s\"\n[ethtool]\nlink_state_interval = \"1s\"\n[export]\nenabled = false\n\
             series = \"everything\"\n[prometheus]\nlisten = \"127.0.0.1:{port}\"\n"
        ),
    )?;
    let cmd = agent_as_unit(&[
        "--config",
        config.to_str().context("utf-8")?,
        "run",
        "--no-summary",
    ]);
    let mut agent = Proc::spawn("agent", cmd, dir.join("agent.log"))?;
    let addr = format!("127.0.0.1:{port}");
    let mut scrape_when = |what: &str, ok: &dyn Fn(&str) -> bool| -> Result<String> {
        wait_for(what, PATIENCE, || {
            agent.ensure_alive()?;
            Ok(match http_get(&addr, "/metrics") {
                Ok((200, body)) if ok(&body) => Some(body),
                _ => None,
            })
        })
    };
    scrape_when("the endpoint", &|_| true)?;
    let odd = OddVeth::new(b"pz\xff", "rpz")?;
    // Its peer's link speed comes from a refresh that also read the odd interface.
    scrape_when("the odd veth's peer", &|b| has_link_speed(b, &odd.peer))?;
    // Two more refreshes, each after a new interface: the odd one is still there.
    let mut later = Vec::new();
    for prefix in ["rls1", "rls2"] {
        let v = Veth::new(prefix)?;
        scrape_when("a later refresh", &|b| has_link_speed(b, &v.host))?;
        later.push(v);
    }
    let scrape = scrape_when("a scrape", &|_| true)?;
    let log = agent.log_text();
    assert_eq!(
        collect_failures(&scrape, "ethtool_link").unwrap_or(0),
        0,
        "{log}"
    );
    let named: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("name is not UTF-8"))
        .collect();
    assert_eq!(named.len(), 1, "{log}");
    assert!(named[0].contains("pz\\xff"), "{named:?}");
    assert!(!log.contains("collection failed"), "{log}");
    let (status, _) = agent.terminate(Duration::from_secs(15))?;
    assert!(status.success(), "{}", agent.log_text());
    Ok(())
}
