//! Shared helpers for retina-agent's privileged end-to-end tests.
//!
//! Every resource a test creates (network namespaces, veth pairs, child processes, mounts)
//! is owned by an RAII guard that removes it on drop, so a failing assertion still cleans
//! up. These tests need root and a real kernel: they fail loudly without them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed unwrap is the test failing, with its message"
)]

use std::{
    ffi::OsStr,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

pub mod alloc;
pub mod child;
pub mod flood;
pub mod nstcp;
pub mod poll;
pub mod rotel;
pub mod unit;
pub mod workload;

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

/// The agent binary under test: `RETINA_AGENT_BIN`, set by `cargo xtask test`.
pub fn agent_bin() -> PathBuf {
    let path = std::env::var_os("RETINA_AGENT_BIN").expect(
        "RETINA_AGENT_BIN is not set: run these tests with `cargo xtask test`, which builds the \
         agent (with its eBPF object) and points this variable at it",
    );
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "RETINA_AGENT_BIN={} is not a file",
        path.display()
    );
    path
}

/// The first executable file called `name` on PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt as _;
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Path of a helper binary of this crate (e.g. `traffic`).
pub fn helper_bin(name: &str) -> PathBuf {
    // Integration tests live in target/<profile>/deps; helper binaries one level up.
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "helper binary {} missing: build with `cargo xtask test`",
        path.display()
    );
    path
}

/// A tokio runtime standing in for the agent's, for tests that build collectors outside
/// of one (the link-state collector runs as a task on the runtime it is created on). Its
/// one worker thread runs that task while the test thread runs collection cycles; `enter`
/// it while building the collectors or the agent.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting a tokio runtime")
}

/// Fails the test unless it runs as root: privileged tests must never skip quietly.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "this privileged test needs root (it loads eBPF and creates network namespaces); \
         run it through `cargo xtask test` as root"
    );
}

/// Runs a command, failing with its stderr when it exits non-zero.
pub fn run<I, S>(program: &str, args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(program);
    cmd.args(args);
    let desc = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("spawning {desc}"))?;
    if !out.status.success() {
        bail!(
            "{desc} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// Runs `ip ARGS...`.
pub fn ip(args: &[&str]) -> Result<Output> {
    run("ip", args)
}

static UNIQUE: AtomicU32 = AtomicU32::new(0);

/// A name unique to this test process, short enough for an interface name (15 bytes).
pub fn unique_name(prefix: &str) -> String {
    let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}{}{n}", std::process::id() % 100_000);
    assert!(name.len() <= 15, "name {name} too long for an interface");
    name
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(prefix: &str) -> Result<Self> {
        let name = unique_name(prefix);
        ip(&["netns", "add", &name])?;
        let ns = NetNs { name };
        ns.exec("ip", &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// Inode number of the namespace: what the agent reports as `network.namespace.inode`.
    pub fn inode(&self) -> Result<u64> {
        let path = format!("/run/netns/{}", self.name);
        Ok(std::fs::metadata(&path)
            .with_context(|| format!("stat {path}"))?
            .ino())
    }

    /// Runs a command inside the namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> Result<Output> {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        run("ip", all)
    }

    /// `/sys/class/net/IFNAME/ATTR` of an interface inside the namespace, trimmed: its
    /// `address`, `ifindex`, `statistics/tx_dropped`... (sysfs shows the namespace of the
    /// process that mounted it, so it is read through `ip netns exec`).
    pub fn link_attr(&self, ifname: &str, attr: &str) -> Result<String> {
        let out = self.exec("cat", &[&format!("/sys/class/net/{ifname}/{attr}")])?;
        Ok(String::from_utf8(out.stdout)?.trim().to_string())
    }

    /// `ifindex` of an interface inside the namespace.
    pub fn ifindex(&self, ifname: &str) -> Result<u32> {
        Ok(self.link_attr(ifname, "ifindex")?.parse()?)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("cleanup: {e}");
        }
    }
}

/// A veth pair created in the host namespace, deleted on drop (deleting one end deletes
/// both, wherever they were moved).
pub struct Veth {
    pub host: String,
    pub peer: String,
    /// Namespace the `peer` end lives in, if it was moved.
    peer_ns: Option<String>,
}

impl Veth {
    pub fn new(prefix: &str) -> Result<Self> {
        let host = unique_name(prefix);
        let peer = format!("{host}p");
        ensure!(peer.len() <= 15, "veth name {peer} too long");
        ip(&["link", "add", &host, "type", "veth", "peer", "name", &peer])?;
        Ok(Veth {
            host,
            peer,
            peer_ns: None,
        })
    }

    /// Moves the peer end into `ns`.
    pub fn move_peer(&mut self, ns: &NetNs) -> Result<()> {
        ip(&["link", "set", &self.peer, "netns", &ns.name])?;
        self.peer_ns = Some(ns.name.clone());
        Ok(())
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        // The host end may already be gone with a deleted namespace; only report real
        // failures.
        if std::path::Path::new(&format!("/sys/class/net/{}", self.host)).exists()
            && let Err(e) = ip(&["link", "del", &self.host])
        {
            eprintln!("cleanup: {e}");
        }
    }
}

/// Runs `retina-agent snapshot --format json ARGS...` and returns its parsed document.
pub fn snapshot_json(args: &[&str]) -> Result<Value> {
    let bin = agent_bin();
    let mut all = vec!["snapshot", "--format", "json"];
    all.extend_from_slice(args);
    let out = run(bin.to_str().context("agent path")?, &all)?;
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "parsing snapshot output: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// The data points of `name` in a snapshot document whose attributes include every
/// `(key, value)` in `want`.
pub fn points<'a>(doc: &'a Value, name: &str, want: &[(&str, &str)]) -> Vec<&'a Value> {
    doc["metrics"]
        .as_array()
        .map(|all| {
            all.iter()
                .filter(|m| m["name"] == name)
                .filter(|m| {
                    want.iter()
                        .all(|(k, v)| attr_str(m, k).as_deref() == Some(*v))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// An attribute of a data point as a string (numbers are rendered in decimal).
pub fn attr_str(point: &Value, key: &str) -> Option<String> {
    match &point["attributes"][key] {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Sum of the values of the matching data points.
pub fn sum(doc: &Value, name: &str, want: &[(&str, &str)]) -> u64 {
    points(doc, name, want)
        .iter()
        .map(|p| p["value"].as_u64().unwrap_or(0))
        .sum()
}

/// Runs `retina-agent ARGS...` without checking its exit status.
pub fn agent_output(args: &[&str]) -> Result<Output> {
    let bin = agent_bin();
    Command::new(&bin)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", bin.display()))
}

/// A minimal BTF blob for fixtures: an `int`, and optionally `enum skb_drop_reason` with the
/// given values. Enough for the agent to parse, never enough to load the probe.
pub fn fixture_btf(reasons: &[(&str, u32)]) -> Vec<u8> {
    let mut strings = vec![0u8];
    let mut name = |s: &str| {
        let off = strings.len() as u32;
        strings.extend_from_slice(s.as_bytes());
        strings.push(0);
        off
    };
    let mut types = Vec::new();
    // [1] INT 'int' size 4, 32 bits.
    for v in [name("int"), 1 << 24, 4, 32] {
        types.extend_from_slice(&u32::to_le_bytes(v));
    }
    if !reasons.is_empty() {
        let enum_name = name("skb_drop_reason");
        for v in [enum_name, (6 << 24) | reasons.len() as u32, 4] {
            types.extend_from_slice(&u32::to_le_bytes(v));
        }
        for (n, value) in reasons {
            types.extend_from_slice(&name(n).to_le_bytes());
            types.extend_from_slice(&value.to_le_bytes());
        }
    }
    let mut out = vec![0x9f, 0xeb, 1, 0];
    for v in [
        24u32,
        0,
        types.len() as u32,
        types.len() as u32,
        strings.len() as u32,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&types);
    out.extend_from_slice(&strings);
    out
}

/// Mounts tracefs at /sys/kernel/tracing unless it already is; unmounts on drop only what
/// it mounted.
pub struct TracefsMount {
    mounted_here: bool,
}

/// How long an agent started by a test may take to answer (its first scrape, its first
/// summary, its endpoint listening): a few seconds on a host, 20-40 s in a QEMU guest
/// under TCG that shares the machine's cores with another guest (BTF parsing and program
/// loads are slow there).
pub const STARTUP: std::time::Duration = std::time::Duration::from_secs(120);

pub const TRACEFS: &str = "/sys/kernel/tracing";

impl TracefsMount {
    pub fn ensure() -> Result<Self> {
        if std::path::Path::new(TRACEFS).join("events").is_dir() {
            return Ok(TracefsMount {
                mounted_here: false,
            });
        }
        run("mount", ["-t", "tracefs", "tracefs", TRACEFS])?;
        Ok(TracefsMount { mounted_here: true })
    }
}

impl Drop for TracefsMount {
    fn drop(&mut self) {
        if self.mounted_here
            && let Err(e) = run("umount", [TRACEFS])
        {
            eprintln!("cleanup: {e}");
        }
    }
}

/// The workspace root (for files the tests check: the unit, the dashboard, the config).
pub fn repo() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Path of the `traffic` helper binary, as a string for command lines.
pub fn traffic() -> String {
    helper_bin("traffic").display().to_string()
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `GET path` over HTTP/1.0: the status and the body.
pub fn http_get(addr: &str, path: &str) -> Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("no status")?;
    Ok((status, body.to_string()))
}

/// A directory under the system temp dir, removed with its contents on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Result<Self> {
        let n = UNIQUE.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
        Ok(TempDir(dir))
    }

    /// A directory an unprivileged process (uid 65534) can create files in.
    pub fn shared(prefix: &str) -> Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let dir = Self::new(prefix)?;
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o1777))?;
        Ok(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("cleanup: rm -r {}: {e}", self.0.display());
        }
    }
}

/// The xtask binary `cargo xtask test` was started with (`cargo xtask` builds it into
/// `<target>/debug/xtask`); it installs the already built agent (no second build).
pub fn xtask(args: &[&str]) -> Result<Output> {
    let agent = agent_bin();
    let target = agent
        .parent()
        .and_then(Path::parent)
        .context("agent binary outside a target dir")?;
    let bin = target.join("debug/xtask");
    ensure!(
        bin.is_file(),
        "{} missing: run through `cargo xtask test`",
        bin.display()
    );
    let out = Command::new(&bin)
        .current_dir(repo())
        .env("CARGO_MANIFEST_DIR", repo().join("xtask"))
        .args(args)
        .arg("--agent-binary")
        .arg(&agent)
        .stdin(Stdio::null())
        .output()?;
    ensure!(
        out.status.success(),
        "xtask {args:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(out)
}

/// Wires `veth` with its host end in the host namespace and its peer in `ns`: addresses
/// 10.232.`subnet`.1/24 (host) and .2 (peer), IPv6 off and permanent neighbour entries on
/// both ends, so that no ARP or IPv6 chatter mixes with test traffic. Returns the two
/// addresses.
pub fn wire_host_to(veth: &mut Veth, ns: &NetNs, subnet: u8) -> Result<(String, String)> {
    veth.move_peer(ns)?;
    let (host_ip, peer_ip) = (format!("10.232.{subnet}.1"), format!("10.232.{subnet}.2"));
    let (h, p) = (veth.host.clone(), veth.peer.clone());
    run(
        "sysctl",
        ["-qw", &format!("net.ipv6.conf.{h}.disable_ipv6=1")],
    )?;
    ns.exec(
        "sysctl",
        &["-qw", &format!("net.ipv6.conf.{p}.disable_ipv6=1")],
    )?;
    ip(&["addr", "add", &format!("{host_ip}/24"), "dev", &h])?;
    ns.exec("ip", &["addr", "add", &format!("{peer_ip}/24"), "dev", &p])?;
    ip(&["link", "set", &h, "up"])?;
    ns.exec("ip", &["link", "set", &p, "up"])?;
    let host_mac = std::fs::read_to_string(format!("/sys/class/net/{h}/address"))?;
    let peer_mac = ns.link_attr(&p, "address")?;
    let perm = |addr: &str, mac: &str, dev: &str| {
        [
            "neigh",
            "replace",
            addr,
            "lladdr",
            mac.trim(),
            "dev",
            dev,
            "nud",
            "permanent",
        ]
        .map(str::to_string)
    };
    ip(&perm(&peer_ip, &peer_mac, &h)
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>())?;
    ns.exec(
        "ip",
        &perm(&host_ip, &host_mac, &p)
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )?;
    Ok((host_ip, peer_ip))
}
