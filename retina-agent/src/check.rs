//! `retina-agent check`: can this machine, with this configuration, run the agent?
//!
//! Every check prints one line, `PASS|WARN|FAIL  NAME: DETAIL`, and a `hint:` line with
//! what to do when it did not pass. FAIL means the agent would not do its job (no drop
//! counting, an exporter that cannot start, a configuration it refuses); WARN means it would
//! run, with a limitation or relying on something outside (an unreachable collector). The
//! probe check really loads, attaches and detaches the eBPF program.

use std::{
    fmt,
    net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs},
    path::Path,
    time::Duration,
};

use serde_json::json;

use crate::{
    btf::{Btf, VMLINUX_BTF},
    config::{self, ConfigError, Loaded, Origin},
    drops::probe::{DropProbe, ProbeError, ProbeOptions, offsets_from_btf},
};

/// Oldest kernel whose `kfree_skb` tracepoint carries the drop reason.
pub const MIN_KERNEL: (u32, u32) = (5, 17);

/// How long the collector reachability check waits for a TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    /// What to do about it (for WARN and FAIL).
    pub hint: Option<String>,
}

impl Check {
    fn pass(name: &'static str, detail: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Pass,
            detail: detail.into(),
            hint: None,
        }
    }

    fn warn(name: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Warn,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }

    fn fail(name: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Check {
        Check {
            name,
            status: Status::Fail,
            detail: detail.into(),
            hint: Some(hint.into()),
        }
    }
}

/// What `check` checks.
pub struct Input<'a> {
    /// The configuration as loaded (file, environment, flags), or why it could not be.
    pub config: Result<&'a Loaded, &'a ConfigError>,
    /// `--btf`: read BTF from this file instead of the running kernel's.
    pub btf_path: Option<&'a Path>,
    /// `--drop-hook`: which tracepoint flavour the probe check attaches.
    pub hook: crate::drops::probe::Hook,
}

/// Runs every check, in the order they are printed.
pub fn run(input: &Input<'_>) -> Vec<Check> {
    let mut checks = vec![config_check(input.config)];
    let config = input.config.ok().map(|l| &l.config);

    // The drop counter: kernel, BTF, capabilities, tracepoint, a real load.
    let first_drop_check = checks.len();
    let (btf_check, btf) = btf(input.btf_path);
    let tracepoint = match &btf {
        Some(btf) => tracepoint(btf),
        None => Check::fail(
            "tracepoint",
            "not checked: no BTF",
            "see the btf check above",
        ),
    };
    checks.push(kernel(uname_release().as_deref(), tracepoint.status));
    checks.push(btf_check);
    checks.push(capabilities(effective_caps()));
    checks.push(tracepoint);
    let map_entries = config.map_or(retina_ebpf_common::DEFAULT_DROPS_MAX_ENTRIES, |c| {
        c.drops.map_entries
    });
    checks.push(match &btf {
        Some(btf) => probe(btf, map_entries, input.hook),
        None => Check::fail("probe", "not loaded: no BTF", "see the btf check above"),
    });
    if config.is_some_and(|c| !c.drops.enabled) {
        // Nothing of this is needed when drop counting is off: report, do not fail.
        for c in &mut checks[first_drop_check..] {
            if c.status == Status::Fail {
                c.status = Status::Warn;
                c.detail.push_str(" (drops.enabled = false: not needed)");
            }
        }
    }

    // Informational: the agent needs neither.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    checks.push(mount(
        &mounts,
        "bpffs",
        "bpf",
        "mount -t bpf bpf /sys/fs/bpf (only to inspect programs with bpftool; the agent pins nothing)",
    ));
    checks.push(mount(
        &mounts,
        "tracefs",
        "tracefs",
        "mount -t tracefs tracefs /sys/kernel/tracing (only for tracing tools; the agent attaches raw tracepoints by name)",
    ));

    // The exporters, as configured (file, environment, flags).
    match config {
        Some(c) if c.export.enabled => {
            checks.push(otlp(&c.export.resolved_endpoint(), CONNECT_TIMEOUT))
        }
        Some(_) => checks.push(Check::pass(
            "otlp",
            "export disabled (export.enabled = false)",
        )),
        None => checks.push(Check::warn(
            "otlp",
            "not checked: the configuration is invalid",
            "fix the configuration first",
        )),
    }
    match config {
        Some(c) if c.prometheus.enabled => checks.push(prometheus(c.prometheus.listen)),
        Some(_) => checks.push(Check::pass(
            "prometheus",
            "endpoint disabled (prometheus.enabled = false)",
        )),
        None => checks.push(Check::warn(
            "prometheus",
            "not checked: the configuration is invalid",
            "fix the configuration first",
        )),
    }
    checks
}

/// Whether no check failed.
pub fn passed(checks: &[Check]) -> bool {
    !checks.iter().any(|c| c.status == Status::Fail)
}

/// One line per check, a `hint:` line under those that did not pass, and a summary.
pub fn render_text(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        out.push_str(&format!("{}  {}: {}\n", c.status, c.name, c.detail));
        if let Some(hint) = &c.hint
            && c.status != Status::Pass
        {
            out.push_str(&format!("      hint: {hint}\n"));
        }
    }
    let count = |s: Status| checks.iter().filter(|c| c.status == s).count();
    out.push_str(&format!(
        "{} passed, {} warnings, {} failed\n",
        count(Status::Pass),
        count(Status::Warn),
        count(Status::Fail)
    ));
    out
}

/// `{"ok": bool, "checks": [{"name", "status", "detail", "hint"}]}`.
pub fn render_json(checks: &[Check]) -> serde_json::Value {
    let list: Vec<serde_json::Value> = checks
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "status": c.status.as_str(),
                "detail": c.detail,
                "hint": c.hint,
            })
        })
        .collect();
    json!({ "ok": passed(checks), "checks": list })
}

fn config_check(config: Result<&Loaded, &ConfigError>) -> Check {
    const NAME: &str = "config";
    match config {
        Ok(l) => match &l.origin {
            Origin::File(p) => Check::pass(NAME, format!("{} is valid", p.display())),
            Origin::Defaults { missing } => {
                Check::pass(NAME, format!("no {}: built-in defaults", missing.display()))
            }
        },
        Err(e @ ConfigError::Env { .. }) => {
            Check::fail(NAME, e.to_string(), "fix or unset the environment variable")
        }
        Err(e) => Check::fail(
            NAME,
            e.to_string(),
            "fix the key named above; packaging/config.toml (installed as /etc/retina-agent/config.toml) lists every key with its default",
        ),
    }
}

fn uname_release() -> Option<String> {
    // SAFETY: utsname is plain data; uname fills it and NUL-terminates each field.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    // SAFETY: uname NUL-terminated `release` within its bounds.
    let release = unsafe { std::ffi::CStr::from_ptr(uts.release.as_ptr()) };
    Some(release.to_string_lossy().into_owned())
}

/// `(major, minor)` of a kernel release string such as `6.18.0-1-amd64`.
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The kernel version; an older kernel only fails when BTF does not show a backported
/// drop reason either (`tracepoint`).
fn kernel(release: Option<&str>, tracepoint: Status) -> Check {
    const NAME: &str = "kernel";
    let Some(release) = release else {
        return Check::warn(NAME, "uname failed", "the tracepoint check below decides");
    };
    let need = format!(
        "drop reasons need {}.{} or newer",
        MIN_KERNEL.0, MIN_KERNEL.1
    );
    match parse_release(release) {
        Some(v) if v >= MIN_KERNEL => Check::pass(NAME, format!("Linux {release} ({need})")),
        Some(_) if tracepoint == Status::Pass => Check::warn(
            NAME,
            format!(
                "Linux {release} is older than {}.{}, but its BTF shows the drop reason (backport)",
                MIN_KERNEL.0, MIN_KERNEL.1
            ),
            "nothing to do if the probe check passes",
        ),
        Some(_) => Check::fail(
            NAME,
            format!("Linux {release}: {need}"),
            "upgrade the kernel to 5.17 or newer; the netdev, netstat and ethtool collectors work without it (drops.enabled = false)",
        ),
        None => Check::warn(
            NAME,
            format!("cannot parse kernel release {release:?}"),
            "the tracepoint check below decides",
        ),
    }
}

fn btf(path: Option<&Path>) -> (Check, Option<Btf>) {
    const NAME: &str = "btf";
    let loaded = match path {
        Some(p) => Btf::from_file(p),
        None => Btf::from_sys(),
    };
    let shown = path.map_or(VMLINUX_BTF.to_string(), |p| p.display().to_string());
    let btf = match loaded {
        Ok(btf) => btf,
        Err(e) => {
            return (
                Check::fail(
                    NAME,
                    e.to_string(),
                    "the kernel must be built with CONFIG_DEBUG_INFO_BTF=y (most distribution kernels since 2020 are)",
                ),
                None,
            );
        }
    };
    let check = match btf.enum_values("skb_drop_reason") {
        Some(values) if !values.is_empty() => Check::pass(
            NAME,
            format!(
                "{shown}: parsed; enum skb_drop_reason has {} reasons",
                values.len()
            ),
        ),
        _ => Check::fail(
            NAME,
            format!("{shown}: parsed, but it has no enum skb_drop_reason"),
            "drop reasons appeared in Linux 5.17; upgrade the kernel or set drops.enabled = false",
        ),
    };
    (check, Some(btf))
}

/// Effective capability bits of this process, from /proc/self/status.
fn effective_caps() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) load the probe: without them, FAIL.
/// CAP_NET_ADMIN and CAP_SYS_ADMIN are reported, not required: ethtool get-commands,
/// rtnetlink dumps and /proc/net are unprivileged, and without CAP_SYS_ADMIN only the
/// interface names of drops in other named namespaces are missing (the packaged unit
/// grants CAP_BPF and CAP_PERFMON only).
pub fn capabilities(caps: Option<u64>) -> Check {
    const NAME: &str = "capabilities";
    let Some(caps) = caps else {
        return Check::warn(
            NAME,
            "cannot read CapEff from /proc/self/status",
            "the probe check below decides",
        );
    };
    let has = |c: u32| caps & (1u64 << c) != 0;
    let names = [
        (CAP_BPF, "CAP_BPF"),
        (CAP_PERFMON, "CAP_PERFMON"),
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    ];
    let present: Vec<&str> = names
        .iter()
        .filter(|(c, _)| has(*c))
        .map(|(_, n)| *n)
        .collect();
    let present = if present.is_empty() {
        "none".to_string()
    } else {
        present.join(", ")
    };
    let missing: Vec<&str> = if has(CAP_SYS_ADMIN) {
        Vec::new()
    } else {
        names[..2]
            .iter()
            .filter(|(c, _)| !has(*c))
            .map(|(_, n)| *n)
            .collect()
    };
    if !missing.is_empty() {
        return Check::fail(
            NAME,
            format!(
                "missing {} (effective: {present}); loading the drop probe needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)",
                missing.join(", ")
            ),
            "run as root, or grant them: AmbientCapabilities=CAP_BPF CAP_PERFMON in the systemd unit (as packaging/retina-agent.service does), or `setcap cap_bpf,cap_perfmon+ep` on the binary",
        );
    }
    let mut detail = format!("effective: {present}");
    if !has(CAP_SYS_ADMIN) {
        detail.push_str(
            " (without CAP_SYS_ADMIN, drops in other named namespaces carry no interface name)",
        );
    }
    Check::pass(NAME, detail)
}

fn tracepoint(btf: &Btf) -> Check {
    const NAME: &str = "tracepoint";
    match offsets_from_btf(btf) {
        Ok(_) => Check::pass(
            NAME,
            "kfree_skb has the reason argument; sk_buff/net_device offsets found in BTF",
        ),
        Err(e @ (ProbeError::NoTracepoint | ProbeError::NoReasonArgument { .. })) => Check::fail(
            NAME,
            e.to_string(),
            "drop reasons need Linux 5.17 or newer; set drops.enabled = false to run without them",
        ),
        Err(e) => Check::fail(
            NAME,
            error_chain(&e),
            "this kernel's structure layout is not what the probe expects; please report it with `uname -r`",
        ),
    }
}

fn probe(btf: &Btf, map_entries: u32, hook: crate::drops::probe::Hook) -> Check {
    const NAME: &str = "probe";
    let options = ProbeOptions {
        max_entries: map_entries,
        hook,
        ..ProbeOptions::default()
    };
    match DropProbe::load(btf, &options) {
        Ok(probe) => {
            let hook = match probe.program_name() {
                retina_ebpf_common::BTF_PROGRAM_NAME => "BTF-enabled tracepoint",
                _ => "raw tracepoint",
            };
            // Dropping detaches the program and frees its maps.
            drop(probe);
            Check::pass(
                NAME,
                format!(
                    "loaded, attached to {hook} kfree_skb and detached (map capacity {map_entries})"
                ),
            )
        }
        Err(e) => {
            let hint = match &e {
                ProbeError::Capabilities { .. } => {
                    "run as root or grant CAP_BPF and CAP_PERFMON (see the capabilities check)"
                }
                ProbeError::NoTracepoint | ProbeError::NoReasonArgument { .. } => {
                    "drop reasons need Linux 5.17 or newer"
                }
                _ => {
                    "the kernel refused the program: `dmesg` and `bpftool prog` may say more; a lower drops.map_entries helps if memory is short"
                }
            };
            Check::fail(NAME, error_chain(&e), hint)
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_msg = s.to_string();
        if !msg.contains(&s_msg) {
            msg.push_str(": ");
            msg.push_str(&s_msg);
        }
        source = s.source();
    }
    msg
}

/// Mount points of file systems of type `fstype` in `/proc/self/mounts` text.
pub fn mount_points<'a>(mounts: &'a str, fstype: &str) -> Vec<&'a str> {
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, point, ty) = (f.next()?, f.next()?, f.next()?);
            (ty == fstype).then_some(point)
        })
        .collect()
}

fn mount(mounts: &str, name: &'static str, fstype: &str, hint: &str) -> Check {
    let points = mount_points(mounts, fstype);
    if points.is_empty() {
        Check::warn(
            name,
            "not mounted (informational: the agent does not need it)",
            hint,
        )
    } else {
        Check::pass(name, format!("mounted at {}", points.join(", ")))
    }
}

/// Whether the OTLP collector accepts TCP connections. The agent retries an unreachable
/// collector, so this only warns.
pub fn otlp(endpoint: &str, timeout: Duration) -> Check {
    const NAME: &str = "otlp";
    let Some((host, port)) = config::endpoint_host_port(endpoint) else {
        return Check::fail(
            NAME,
            format!("cannot parse endpoint {endpoint:?}"),
            "write it as http://HOST:PORT",
        );
    };
    let hint = "start the collector or fix export.endpoint / --otlp-endpoint; the agent keeps collecting and retries";
    let addrs: Vec<SocketAddr> = match (host.as_str(), port).to_socket_addrs() {
        Ok(a) => a.collect(),
        Err(e) => {
            return Check::warn(
                NAME,
                format!("{endpoint}: cannot resolve {host}: {e}"),
                hint,
            );
        }
    };
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, timeout) {
            Ok(_) => {
                return Check::pass(NAME, format!("{endpoint}: {addr} accepts connections"));
            }
            Err(e) => last = Some(format!("{addr}: {e}")),
        }
    }
    Check::warn(
        NAME,
        format!(
            "{endpoint}: not reachable ({})",
            last.unwrap_or_else(|| format!("{host} has no address"))
        ),
        hint,
    )
}

/// Whether the Prometheus endpoint's address can be bound (the listener is closed again).
pub fn prometheus(listen: SocketAddr) -> Check {
    const NAME: &str = "prometheus";
    match TcpListener::bind(listen) {
        Ok(_) => Check::pass(NAME, format!("{listen} can be bound")),
        Err(e) => {
            let hint = match e.kind() {
                std::io::ErrorKind::AddrInUse => format!(
                    "another process listens on it (`ss -ltnp 'sport = :{}'`; is retina-agent already running?); choose another with prometheus.listen or --prometheus-listen",
                    listen.port()
                ),
                std::io::ErrorKind::PermissionDenied => {
                    "ports below 1024 need CAP_NET_BIND_SERVICE; use a higher port".to_string()
                }
                std::io::ErrorKind::AddrNotAvailable => {
                    "no interface of this machine has that address; use 0.0.0.0 or a local address"
                        .to_string()
                }
                _ => "fix prometheus.listen or --prometheus-listen".to_string(),
            };
            Check::fail(NAME, format!("cannot bind {listen}: {e}"), hint)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_release() {
        assert_eq!(parse_release("6.18.0-1-amd64"), Some((6, 18)));
        assert_eq!(parse_release("5.4.0"), Some((5, 4)));
        assert_eq!(parse_release("5.17"), Some((5, 17)));
        assert_eq!(parse_release("garbage"), None);
        assert_eq!(kernel(Some("6.18.0"), Status::Pass).status, Status::Pass);
        assert_eq!(kernel(Some("5.17.3"), Status::Fail).status, Status::Pass);
        assert_eq!(
            kernel(Some("5.14.0-rhel"), Status::Pass).status,
            Status::Warn
        );
        let old = kernel(Some("5.10.0"), Status::Fail);
        assert_eq!(old.status, Status::Fail);
        assert!(old.detail.contains("5.17") && old.hint.is_some(), "{old:?}");
    }

    #[test]
    fn capability_sets() {
        let bits = |caps: &[u32]| Some(caps.iter().fold(0u64, |a, c| a | (1 << c)));
        assert_eq!(
            capabilities(bits(&[CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN])).status,
            Status::Pass
        );
        assert_eq!(
            capabilities(bits(&[CAP_SYS_ADMIN, CAP_NET_ADMIN])).status,
            Status::Pass
        );
        assert_eq!(capabilities(bits(&[CAP_SYS_ADMIN])).status, Status::Pass);
        // The packaged unit's set.
        let packaged = capabilities(bits(&[CAP_BPF, CAP_PERFMON]));
        assert_eq!(packaged.status, Status::Pass);
        assert!(
            packaged.detail.contains("without CAP_SYS_ADMIN"),
            "{packaged:?}"
        );
        let none = capabilities(Some(0));
        assert_eq!(none.status, Status::Fail);
        assert!(
            none.detail
                .starts_with("missing CAP_BPF, CAP_PERFMON (effective: none)"),
            "{none:?}"
        );
        assert!(none.hint.unwrap().contains("AmbientCapabilities"));
        let partial = capabilities(bits(&[CAP_BPF, CAP_NET_ADMIN]));
        assert_eq!(partial.status, Status::Fail);
        assert!(
            partial.detail.starts_with("missing CAP_PERFMON "),
            "{partial:?}"
        );
        assert_eq!(capabilities(None).status, Status::Warn);
    }

    #[test]
    fn mounts() {
        let text = "sysfs /sys sysfs rw 0 0\nbpf /sys/fs/bpf bpf rw,relatime 0 0\n\
                    none /sys/kernel/tracing tracefs rw 0 0\n";
        assert_eq!(mount_points(text, "bpf"), vec!["/sys/fs/bpf"]);
        assert_eq!(mount_points(text, "tracefs"), vec!["/sys/kernel/tracing"]);
        assert!(mount_points("", "bpf").is_empty());
        assert_eq!(mount("", "bpffs", "bpf", "h").status, Status::Warn);
        assert_eq!(mount(text, "bpffs", "bpf", "h").status, Status::Pass);
    }

    #[test]
    fn btf_without_drop_reasons_fails() {
        let mut b = crate::btf::tests::Builder::new();
        b.int("int", 4);
        let dir = std::env::temp_dir().join(format!("retina-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("btf");
        std::fs::write(&path, b.build()).unwrap();
        let (c, parsed) = btf(Some(&path));
        assert!(parsed.is_some());
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("no enum skb_drop_reason"), "{c:?}");
        let t = tracepoint(parsed.as_ref().unwrap());
        assert_eq!(t.status, Status::Fail);
        let (c, parsed) = btf(Some(&dir.join("missing")));
        assert!(parsed.is_none());
        assert_eq!(c.status, Status::Fail);
        assert!(c.hint.unwrap().contains("CONFIG_DEBUG_INFO_BTF"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_config_fails_the_config_check() {
        let err = config::parse("intervall = 1", Path::new("/x.toml")).unwrap_err();
        let c = config_check(Err(&err));
        assert_eq!(c.status, Status::Fail);
        assert!(c.detail.contains("/x.toml: key `intervall`"), "{c:?}");
    }

    #[test]
    fn text_and_json_output() {
        let checks = vec![
            Check::pass("a", "fine"),
            Check::warn("b", "meh", "do x"),
            Check::fail("c", "broken", "do y"),
        ];
        let text = render_text(&checks);
        assert_eq!(
            text,
            "PASS  a: fine\nWARN  b: meh\n      hint: do x\nFAIL  c: broken\n      hint: do y\n\
             1 passed, 1 warnings, 1 failed\n"
        );
        assert!(!passed(&checks));
        assert!(passed(&checks[..2]));
        let j = render_json(&checks);
        assert_eq!(j["ok"], false);
        assert_eq!(j["checks"][2]["status"], "FAIL");
        assert_eq!(j["checks"][1]["hint"], "do x");
        assert_eq!(j["checks"][0]["hint"], serde_json::Value::Null);
    }

    #[test]
    fn reachability_and_bind() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let ok = otlp(&format!("http://127.0.0.1:{port}"), CONNECT_TIMEOUT);
        assert_eq!(ok.status, Status::Pass, "{ok:?}");
        // The port is taken: binding it fails with a hint.
        let taken = prometheus(listener.local_addr().unwrap());
        assert_eq!(taken.status, Status::Fail);
        assert!(taken.hint.unwrap().contains("already running"));
        drop(listener);
        let closed = otlp(&format!("http://127.0.0.1:{port}"), CONNECT_TIMEOUT);
        assert_eq!(closed.status, Status::Warn, "{closed:?}");
        assert_eq!(
            prometheus("127.0.0.1:0".parse().unwrap()).status,
            Status::Pass
        );
    }
}
