//! The drop counter's checks: kernel version, BTF, capabilities, tracepoint, and a real
//! load of the probe.

use std::path::Path;

use super::{Check, Status};
use crate::{
    collectors::drops::{
        Hook,
        preflight::{Preflight, preflight},
        probe::ProbeError,
    },
    kernel::btf::{Btf, VMLINUX_BTF},
    kernel::sys::{
        CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON, CAP_SYS_ADMIN, effective_caps, error_chain, uname,
    },
};

/// Oldest kernel whose `kfree_skb` tracepoint carries the drop reason.
pub(crate) const MIN_KERNEL: (u32, u32) = (5, 17);

/// The drop counter's checks, in the order they are printed: kernel, btf, capabilities,
/// tracepoint, probe.
pub(super) fn drop_counter(btf_path: Option<&Path>, map_entries: u32, hook: Hook) -> [Check; 5] {
    let (btf_check, btf) = btf(btf_path);
    let preflight = btf.as_ref().map(|btf| preflight(btf, map_entries, hook));
    let (tracepoint, probe) = match &preflight {
        Some(p) => (tracepoint(p), probe(p, map_entries)),
        None => (
            Check::fail(
                "tracepoint",
                "not checked: no BTF",
                "see the btf check above",
            ),
            Check::fail("probe", "not loaded: no BTF", "see the btf check above"),
        ),
    };
    let release = uname().map(|u| u.release);
    [
        kernel(release.as_deref(), tracepoint.status),
        btf_check,
        capabilities(effective_caps()),
        tracepoint,
        probe,
    ]
}

/// `(major, minor)` of a kernel release string such as `6.18.0-1-amd64`.
pub(crate) fn parse_release(release: &str) -> Option<(u32, u32)> {
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

/// CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) load the probe: without them, FAIL.
/// CAP_NET_ADMIN and CAP_SYS_ADMIN are reported, not required: ethtool get-commands,
/// rtnetlink dumps and /proc/net are unprivileged, and without CAP_SYS_ADMIN only the
/// interface names of drops in other named namespaces are missing (the packaged unit
/// grants CAP_BPF and CAP_PERFMON only).
pub(crate) fn capabilities(caps: Option<u64>) -> Check {
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

fn tracepoint(preflight: &Preflight) -> Check {
    const NAME: &str = "tracepoint";
    match &preflight.tracepoint {
        Ok(owners) => Check::pass(
            NAME,
            format!(
                "kfree_skb has the reason argument; sk_buff/net_device offsets found in BTF; {}",
                owners.as_str()
            ),
        ),
        Err(e @ (ProbeError::NoTracepoint | ProbeError::NoReasonArgument { .. })) => Check::fail(
            NAME,
            e.to_string(),
            "drop reasons need Linux 5.17 or newer; set drops.enabled = false to run without them",
        ),
        Err(e) => Check::fail(
            NAME,
            error_chain(e),
            "this kernel's structure layout is not what the probe expects; please report it with `uname -r`",
        ),
    }
}

fn probe(preflight: &Preflight, map_entries: u32) -> Check {
    const NAME: &str = "probe";
    match &preflight.load {
        Ok(attached) => Check::pass(
            NAME,
            format!(
                "loaded, attached to {} kfree_skb and detached (map capacity {map_entries})",
                attached.as_str()
            ),
        ),
        Err(e) => {
            let hint = match e {
                ProbeError::Capabilities { .. } => {
                    "run as root or grant CAP_BPF and CAP_PERFMON (see the capabilities check)"
                }
                ProbeError::NoTracepoint | ProbeError::NoReasonArgument { .. } => {
                    "drop reasons need Linux 5.17 or newer"
                }
                ProbeError::NotEmbedded => {
                    "`cargo xtask build` provisions the eBPF toolchain and builds the agent with its programs"
                }
                _ => {
                    "the kernel refused the program: `dmesg` and `bpftool prog` may say more; a lower drops.map_entries helps if memory is short"
                }
            };
            Check::fail(NAME, error_chain(e), hint)
        }
    }
}

#[cfg(test)]
mod tests;
