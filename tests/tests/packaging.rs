//! Packaging, end to end: the systemd unit's capabilities are enough for every collector
//! and each of them is needed; its system call filter and address families cover what the
//! agent really does; `cargo xtask install` lays out files that `systemd-analyze verify`
//! accepts. The Debian package has its own file: `deb.rs`.
//!
//! There is no systemd running on the test machines, so the unit's sandbox is reproduced
//! piece by piece: `setpriv` for the user, capabilities and no_new_privs (the same values,
//! parsed from `packaging/retina-agent.service`), `strace` for the system calls and
//! socket families, `systemd-analyze` for the unit itself.

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

use retina_tests::*;

/// The uid/gid the capability tests run the agent as (`nobody`): the unit's DynamicUser
/// is an unprivileged uid of the same kind.
const NOBODY: &str = "65534";

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

/// The capabilities the unit grants (`CAP_BPF`, ...). Fails unless the bounding set and
/// the ambient set are the same: the agent runs as a non-root user, so a capability in only
/// one of them is either useless or unreachable.
fn unit_capabilities() -> Vec<String> {
    let unit = unit_text();
    let words = |key: &str| -> BTreeSet<String> {
        service_values(&unit, key)
            .iter()
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

/// `setpriv` running a command as uid/gid 65534 with exactly `caps` (`CAP_BPF`, ...) as
/// bounding, inheritable and ambient capabilities, and no_new_privs: what the unit's
/// DynamicUser=, CapabilityBoundingSet=, AmbientCapabilities= and NoNewPrivileges= give.
fn setpriv(caps: &[String]) -> Command {
    let mut list = String::from("-all");
    for cap in caps {
        list.push_str(",+");
        list.push_str(&cap.trim_start_matches("CAP_").to_ascii_lowercase());
    }
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .arg(format!("--inh-caps={list}"))
        .arg(format!("--ambient-caps={list}"))
        .arg(format!("--bounding-set={list}"))
        .arg("--no-new-privs");
    cmd
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

/// `retina-agent --config packaging/config.toml snapshot --cumulative --format json` as
/// uid 65534 with exactly `caps`, watching while `during` runs (as root, in this process:
/// the agent's own child command could not enter a network namespace without
/// CAP_SYS_ADMIN). Returns the snapshot document and the agent's stderr.
fn snapshot_as(caps: &[String], during: impl FnOnce() -> Result<()>) -> Result<(Value, String)> {
    let dir = TempDir::shared("rpkg")?;
    let ready = dir.path().join("ready");
    let done = dir.path().join("done");
    let script = format!(
        "touch {ready}; while [ ! -e {done} ]; do sleep 0.02; done",
        ready = ready.display(),
        done = done.display()
    );
    let config = repo().join("packaging/config.toml");
    let mut cmd = setpriv(caps);
    cmd.arg(agent_bin())
        .arg("--config")
        .arg(&config)
        .args([
            "snapshot",
            "--cumulative",
            "--format",
            "json",
            "--",
            "sh",
            "-c",
        ])
        .arg(&script)
        .stdin(Stdio::null())
        // Files, not pipes: nobody reads a pipe until the agent exits.
        .stdout(fs::File::create(dir.path().join("stdout"))?)
        .stderr(fs::File::create(dir.path().join("stderr"))?);
    let mut agent = Guard::spawn(&mut cmd)?;
    wait_for("the agent to attach", Duration::from_secs(60), || {
        if let Some(status) = agent.child().try_wait()? {
            bail!("the agent exited early ({status})");
        }
        Ok(ready.exists())
    })?;
    during()?;
    fs::write(&done, b"")?;
    let status = agent.finish(Duration::from_secs(30));
    let stdout = fs::read(dir.path().join("stdout"))?;
    let stderr = fs::read_to_string(dir.path().join("stderr"))?;
    let status = status.with_context(|| format!("stderr: {stderr}"))?;
    ensure!(status.success(), "agent failed ({status}): {stderr}");
    let doc = serde_json::from_slice(&stdout).with_context(|| {
        format!(
            "parsing the snapshot: {}\nstderr: {stderr}",
            String::from_utf8_lossy(&stdout)
        )
    })?;
    Ok((doc, stderr))
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

/// Sends [`DROPS`] UDP datagrams to a closed port inside `ns`: that many NO_SOCKET drops.
fn drops_in(ns: &NetNs) -> Result<()> {
    ns.exec(
        &traffic(),
        &["udp", "127.0.0.1:9", &DROPS.to_string(), "32"],
    )?;
    Ok(())
}

#[test]
fn unit_capabilities_are_enough_for_every_collector() -> Result<()> {
    require_root();
    let caps = unit_capabilities();
    let ns = NetNs::new("rpkg")?;
    let inode = ns.inode()?.to_string();

    let (doc, stderr) = snapshot_as(&caps, || drops_in(&ns))?;
    assert_eq!(
        doc["degraded"],
        serde_json::json!([]),
        "with {caps:?} collectors are degraded; stderr:\n{stderr}"
    );
    for level in [" WARN ", " ERROR "] {
        assert!(
            !stderr.contains(level),
            "with {caps:?} the agent logged: {stderr}"
        );
    }
    let want = [
        ("drop.reason", "NO_SOCKET"),
        ("network.namespace.inode", inode.as_str()),
        ("network.type", "ipv4"),
    ];
    assert_eq!(
        sum(&doc, "retina.drop.count", &want),
        DROPS,
        "{:#?}",
        points(&doc, "retina.drop.count", &[])
    );
    let pts = points(&doc, "retina.drop.count", &want);
    assert_eq!(pts.len(), 1, "{pts:#?}");
    // The namespace is named from /run/netns (a stat), the ifindex comes from the kernel.
    assert_eq!(
        attr_str(pts[0], "network.namespace.name").as_deref(),
        Some(ns.name.as_str())
    );
    assert_eq!(
        attr_str(pts[0], "network.interface.index").as_deref(),
        Some("1")
    );
    // Naming an interface inside another namespace needs setns(), i.e. CAP_SYS_ADMIN, which
    // the unit does not grant (docs/operations.md). If the agent learns to do it without,
    // update the documentation and this assertion.
    assert_eq!(
        attr_str(pts[0], "network.interface.name"),
        None,
        "{:#}",
        pts[0]
    );

    // Every metric the agent reports as root, it reports with the unit's capabilities.
    let (root_doc, root_stderr) = snapshot_as_root()?;
    assert_eq!(root_doc["degraded"], serde_json::json!([]), "{root_stderr}");
    let as_root = metric_names(&root_doc);
    let as_unit = metric_names(&doc);
    let missing: Vec<_> = as_root.difference(&as_unit).collect();
    assert!(missing.is_empty(), "missing with {caps:?}: {missing:?}");
    for prefix in [
        "retina.drop.",
        "retina.nic.",
        "system.network.",
        "retina.netstat.",
    ] {
        assert!(
            as_unit.iter().any(|n| n.starts_with(prefix)),
            "no {prefix}* metric with {caps:?}: {as_unit:?}"
        );
    }
    Ok(())
}

/// The same snapshot as root (all capabilities), for comparison.
fn snapshot_as_root() -> Result<(Value, String)> {
    let config = repo().join("packaging/config.toml");
    let out = Command::new(agent_bin())
        .arg("--config")
        .arg(&config)
        .args([
            "snapshot",
            "--cumulative",
            "--format",
            "json",
            "--duration",
            "300ms",
        ])
        .stdin(Stdio::null())
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    ensure!(out.status.success(), "{stderr}");
    Ok((serde_json::from_slice(&out.stdout)?, stderr))
}

#[test]
fn sys_admin_would_only_add_interface_names_in_other_namespaces() -> Result<()> {
    require_root();
    let mut caps = unit_capabilities();
    caps.push("CAP_SYS_ADMIN".into());
    let ns = NetNs::new("rpsa")?;
    let inode = ns.inode()?.to_string();
    let (doc, stderr) = snapshot_as(&caps, || drops_in(&ns))?;
    assert_eq!(doc["degraded"], serde_json::json!([]), "{stderr}");
    let want = [
        ("drop.reason", "NO_SOCKET"),
        ("network.namespace.inode", inode.as_str()),
    ];
    let pts = points(&doc, "retina.drop.count", &want);
    assert_eq!(
        sum(&doc, "retina.drop.count", &want),
        DROPS,
        "{:#?}",
        points(&doc, "retina.drop.count", &[])
    );
    assert_eq!(
        attr_str(pts[0], "network.interface.name").as_deref(),
        Some("lo")
    );
    Ok(())
}

#[test]
fn without_any_one_unit_capability_the_drop_collector_degrades_clearly() -> Result<()> {
    require_root();
    let caps = unit_capabilities();
    for cap in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != cap).cloned().collect();
        let (doc, stderr) = snapshot_as(&fewer, || Ok(()))?;
        assert!(!stderr.contains("panicked"), "{stderr}");
        let degraded = doc["degraded"].as_array().context("degraded")?;
        let drops = degraded
            .iter()
            .find(|d| d["collector"] == "drops")
            .with_context(|| {
                format!(
                    "without {cap} the drops collector is not degraded: {}",
                    doc["degraded"]
                )
            })?;
        let reason = drops["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(cap.as_str()),
            "without {cap}: reason {reason:?} names it not"
        );
        assert!(
            stderr.contains(&format!("missing capabilities {cap}")),
            "without {cap}, stderr should say so: {stderr}"
        );
        // Only the drop collector needs a capability: the others keep working.
        assert_eq!(degraded.len(), 1, "without {cap}: {degraded:#?}");
        assert!(
            metric_names(&doc)
                .iter()
                .any(|n| n.starts_with("system.network.")),
            "without {cap}: no system.network.* metric"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The kernel's side: which operation needs which capability, independently of the
// agent's own capability check. This test re-runs itself under setpriv with fewer
// capabilities; the child does the raw operations and prints what the kernel said.

const CHILD_ENV: &str = "RETINA_CAPS_CHILD";
const CHILD_VETH: &str = "RETINA_CAPS_VETH";
const CHILD_NETNS: &str = "RETINA_CAPS_NETNS";
const RESULT_PREFIX: &str = "CAPS-RESULT ";

/// `union bpf_attr` is at most this big for the commands used here.
#[repr(C, align(8))]
struct BpfAttr([u8; 128]);

impl BpfAttr {
    fn new() -> Self {
        BpfAttr([0; 128])
    }
    fn u32_at(&mut self, offset: usize, v: u32) -> &mut Self {
        self.0[offset..offset + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64_at(&mut self, offset: usize, v: u64) -> &mut Self {
        self.0[offset..offset + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
}

fn bpf(cmd: i64, attr: &mut BpfAttr) -> Result<i32, String> {
    // SAFETY: attr is a zero-initialised bpf_attr of 128 bytes whose pointers (if any)
    // point to live buffers.
    match unsafe { retina_agent::sys::bpf(cmd, attr) } {
        Ok(fd) => Ok(fd as i32),
        Err(e) => Err(errno_text(e)),
    }
}

fn errno_name() -> String {
    errno_text(std::io::Error::last_os_error())
}

fn errno_text(err: std::io::Error) -> String {
    match err.raw_os_error() {
        Some(libc::EPERM) => "EPERM".into(),
        Some(libc::EACCES) => "EACCES".into(),
        Some(libc::EOPNOTSUPP) => "EOPNOTSUPP".into(),
        Some(libc::EINVAL) => "EINVAL".into(),
        _ => err.to_string(),
    }
}

fn outcome(r: Result<i32, String>) -> String {
    match r {
        Ok(fd) => {
            // SAFETY: fd was just returned by the kernel and is owned here.
            unsafe { libc::close(fd) };
            "ok".into()
        }
        Err(e) => e,
    }
}

/// `ioctl(SIOCETHTOOL)` on `ifname` with `data` (an ethtool command structure).
fn ethtool(ifname: &str, data: &mut [u8]) -> Result<i32, String> {
    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut u8,
        _pad: [u8; 16],
    }
    let mut req = IfReq {
        name: [0; 16],
        data: data.as_mut_ptr(),
        _pad: [0; 16],
    };
    req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: plain socket creation.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(errno_name());
    }
    // SAFETY: req is a valid ifreq whose data pointer refers to `data`, which is large
    // enough for the command it holds.
    let r = unsafe { libc::ioctl(sock, SIOCETHTOOL, &mut req as *mut IfReq) };
    let result = if r < 0 { Err(errno_name()) } else { Ok(0) };
    // SAFETY: sock is ours.
    unsafe { libc::close(sock) };
    result
}

fn ethtool_cmd(cmd: u32, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    data[..4].copy_from_slice(&cmd.to_ne_bytes());
    data
}

/// What the kernel allows this process (run under setpriv by the parent test).
fn child_probe() -> BTreeMap<&'static str, String> {
    let mut out = BTreeMap::new();
    // No memlock allowance at all: BPF memory must be charged to the memory cgroup
    // (Linux >= 5.11), or map creation fails with EPERM without CAP_SYS_RESOURCE.
    let zero = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: lowering our own limit.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &zero) };

    // A per-CPU hash map like the drop map: BPF_MAP_CREATE (0), BPF_MAP_TYPE_PERCPU_HASH (5).
    let mut attr = BpfAttr::new();
    attr.u32_at(0, 5)
        .u32_at(4, 16)
        .u32_at(8, 16)
        .u32_at(12, 16384);
    out.insert("bpf_map_create", outcome(bpf(0, &mut attr)));

    // A raw tracepoint program (BPF_PROG_TYPE_RAW_TRACEPOINT = 17): r0 = 0; exit.
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = b"GPL\0";
    let mut attr = BpfAttr::new();
    attr.u32_at(0, 17)
        .u32_at(4, 2)
        .u64_at(8, insns.as_ptr() as u64)
        .u64_at(16, license.as_ptr() as u64);
    let prog = bpf(5, &mut attr); // BPF_PROG_LOAD
    out.insert(
        "bpf_prog_load_raw_tracepoint",
        match &prog {
            Ok(_) => "ok".into(),
            Err(e) => e.clone(),
        },
    );
    if let Ok(prog_fd) = prog {
        // BPF_RAW_TRACEPOINT_OPEN (17): { u64 name; u32 prog_fd; }
        let name = b"kfree_skb\0";
        let mut attr = BpfAttr::new();
        attr.u64_at(0, name.as_ptr() as u64)
            .u32_at(8, prog_fd as u32);
        out.insert("bpf_raw_tracepoint_open", outcome(bpf(17, &mut attr)));
        // SAFETY: ours.
        unsafe { libc::close(prog_fd) };
    }

    // ethtool driver statistics (ETHTOOL_GDRVINFO, GSSET_INFO, GSTRINGS, GSTATS): what the
    // ethtool collector does. ETHTOOL_GREGS (register dump) for contrast: privileged.
    let veth = std::env::var(CHILD_VETH).expect("veth name");
    let mut drvinfo = ethtool_cmd(0x03, 196);
    out.insert("ethtool_gdrvinfo", outcome(ethtool(&veth, &mut drvinfo)));
    let n_stats = u32::from_ne_bytes(drvinfo[180..184].try_into().unwrap());
    // struct ethtool_sset_info { cmd, reserved, u64 sset_mask = ETH_SS_STATS; u32 data[] }
    let mut sset = ethtool_cmd(0x37, 16 + 4);
    sset[8..16].copy_from_slice(&(1u64 << 1).to_ne_bytes());
    out.insert("ethtool_gsset_info", outcome(ethtool(&veth, &mut sset)));
    // struct ethtool_gstrings { cmd, string_set = ETH_SS_STATS (1), len; u8 data[] }
    let mut strings = ethtool_cmd(0x1b, 12 + 32 * n_stats as usize);
    strings[4..8].copy_from_slice(&1u32.to_ne_bytes());
    strings[8..12].copy_from_slice(&n_stats.to_ne_bytes());
    out.insert("ethtool_gstrings", outcome(ethtool(&veth, &mut strings)));
    // struct ethtool_stats { cmd, n_stats; u64 data[] }
    let mut stats = ethtool_cmd(0x1d, 8 + 8 * n_stats as usize);
    stats[4..8].copy_from_slice(&n_stats.to_ne_bytes());
    out.insert("ethtool_gstats", outcome(ethtool(&veth, &mut stats)));
    out.insert("ethtool_n_stats", n_stats.to_string());
    let mut regs = ethtool_cmd(0x04, 12);
    out.insert("ethtool_gregs", outcome(ethtool(&veth, &mut regs)));

    // An rtnetlink link dump (with the link notification subscription), a counters-only
    // RTM_GETSTATS dump, and /proc/net (the netdev and netstat collectors).
    let links = retina_agent::links::Links::new().and_then(|mut l| l.refresh().map(|_| l));
    out.insert(
        "rtnetlink_link_dump",
        match &links {
            Ok(_) => "ok".into(),
            Err(e) => e.to_string(),
        },
    );
    let stats = match links {
        Err(_) => "no link table".to_string(),
        // A few tries: interfaces created meanwhile (by other tests) make a refresh a full
        // dump.
        Ok(mut l) => (0..5)
            .map(|_| {
                let full = l.full_dumps();
                match l.refresh() {
                    Ok(()) if l.full_dumps() == full => "ok".to_string(),
                    Ok(()) => "fell back to RTM_GETLINK".to_string(),
                    Err(e) => e.to_string(),
                }
            })
            .find(|r| r == "ok")
            .unwrap_or_else(|| "every refresh was a full RTM_GETLINK dump".to_string()),
    };
    out.insert("rtnetlink_stats_dump", stats);
    out.insert(
        "read_proc_net_netstat",
        match fs::read("/proc/net/netstat") {
            Ok(_) => "ok".into(),
            Err(e) => e.to_string(),
        },
    );

    // setns() into a named network namespace (naming interfaces inside it), in a thread
    // so this process stays where it is.
    let netns = std::env::var(CHILD_NETNS).expect("netns path");
    let setns = std::thread::spawn(move || {
        use std::os::fd::AsRawFd;
        let file = fs::File::open(&netns).map_err(|e| e.to_string())?;
        // SAFETY: file is an open namespace file; setns only affects this thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(errno_name());
        }
        Ok(())
    })
    .join()
    .expect("setns thread");
    out.insert("setns_netns", setns.map_or_else(|e| e, |_| "ok".into()));
    out
}

#[test]
fn kernel_needs_exactly_the_unit_capabilities() -> Result<()> {
    if std::env::var_os(CHILD_ENV).is_some() {
        let result = child_probe();
        println!("{RESULT_PREFIX}{}", serde_json::to_string(&result)?);
        return Ok(());
    }
    require_root();
    let caps = unit_capabilities();
    let veth = Veth::new("rpc")?;
    let ns = NetNs::new("rpcn")?;
    let exe = std::env::current_exe()?;
    let probe = |caps: &[String]| -> Result<BTreeMap<String, String>> {
        let out = setpriv(caps)
            .arg(&exe)
            .args([
                "--exact",
                "kernel_needs_exactly_the_unit_capabilities",
                "--nocapture",
            ])
            .args(["--test-threads", "1"])
            .env(CHILD_ENV, "1")
            .env(CHILD_VETH, &veth.host)
            .env(CHILD_NETNS, format!("/run/netns/{}", ns.name))
            .stdin(Stdio::null())
            .output()?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = stdout
            .lines()
            .find_map(|l| l.split_once(RESULT_PREFIX).map(|(_, json)| json))
            .with_context(|| {
                format!(
                    "child printed no result: {stdout}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })?;
        Ok(serde_json::from_str(line)?)
    };
    let with_unit = probe(&caps)?;
    eprintln!("with {caps:?}: {with_unit:#?}");
    let expect_ok = [
        "bpf_map_create",
        "bpf_prog_load_raw_tracepoint",
        "bpf_raw_tracepoint_open",
        "ethtool_gdrvinfo",
        "ethtool_gsset_info",
        "ethtool_gstrings",
        "ethtool_gstats",
        "rtnetlink_link_dump",
        "rtnetlink_stats_dump",
        "read_proc_net_netstat",
    ];
    for op in expect_ok {
        assert_eq!(
            with_unit.get(op).map(String::as_str),
            Some("ok"),
            "{op} with {caps:?}"
        );
    }
    assert_ne!(
        with_unit["ethtool_n_stats"], "0",
        "a veth has driver statistics"
    );
    // What the unit does not grant, and what it costs (documented in docs/operations.md).
    assert_eq!(
        with_unit["ethtool_gregs"], "EPERM",
        "register dumps need CAP_NET_ADMIN"
    );
    assert_eq!(
        with_unit["setns_netns"], "EPERM",
        "setns needs CAP_SYS_ADMIN"
    );

    // Each capability is needed: without it the kernel refuses the program.
    for cap in &caps {
        let fewer: Vec<String> = caps.iter().filter(|c| *c != cap).cloned().collect();
        let got = probe(&fewer)?;
        eprintln!("without {cap}: {got:#?}");
        assert_eq!(
            got["bpf_prog_load_raw_tracepoint"], "EPERM",
            "without {cap} the kernel still loads a raw tracepoint program"
        );
        // Everything else the agent does stays allowed.
        for op in &expect_ok[3..] {
            assert_eq!(
                got.get(*op).map(String::as_str),
                Some("ok"),
                "{op} without {cap}"
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// System calls, socket families and file access of the running daemon.

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
    std::thread::sleep(Duration::from_millis(1200));
    let (status, body) = http_get(&listen, "/metrics")?;
    assert_eq!(status, 200);
    if !body.contains("retina_drop_count") {
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

// ---------------------------------------------------------------------------------------
// cargo xtask install.

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
