//! What a cgroup path says about the workload in it: the Kubernetes pod, the container and
//! the systemd service, as kubelet, the container runtimes and systemd name their cgroups.
//!
//! Patterns are matched only where those managers put them, anchored at the hierarchy's
//! root, never anywhere in the path: a tenant who can create cgroups somewhere (a
//! delegated subtree) could otherwise name one like any pod, container or service.
//!
//! | layout | example | gives |
//! |---|---|---|
//! | kubelet, systemd driver | `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid with _>.slice/cri-containerd-<id>.scope` | pod uid (`_` → `-`), container id |
//! | kubelet, cgroupfs driver | `/kubepods/besteffort/pod<uid>/<id>` (or `crio-<id>`) | pod uid, container id |
//! | docker, podman, CRI-O scopes | `/system.slice/docker-<id>.scope`, `/machine.slice/libpod-<id>.scope`, `…/crio-<id>.scope` | container id |
//! | docker, cgroupfs driver | `/docker/<id>` | container id |
//! | podman, cgroupfs manager | `/libpod_parent/libpod-<id>` | container id |
//! | a systemd service | `/system.slice/unbound.service` | unit |
//!
//! The systemd layouts must follow systemd's own structure: a chain of slices from the
//! root, each named after its parent (`a.slice/a-b.slice/a-b-c.slice`), then one unit
//! directly in the last slice; the kubelet's pod slices are the second or third slice of
//! `kubepods.slice`. What lies below a unit or a container's cgroup (a service's
//! `Delegate=` subtree, a container's own cgroups) belongs to that unit or container,
//! whatever it is named.
//!
//! A container id is exactly 64 lowercase hex digits and a pod uid a canonical UUID;
//! anything that only looks close (another length, other characters, another place, a
//! path deeper than [`MAX_DEPTH`] or longer than [`MAX_PATH`]) gives nothing, never a wrong
//! attribute. Whether a cgroup was delegated to an unprivileged user (and so named by
//! them) is read from the file system by [`super::delegation`].

use std::sync::Arc;

use crate::model::Workload;

/// Paths longer than this are not parsed (the kernel allows 4096 per path).
pub(crate) const MAX_PATH: usize = 4096;
/// Paths with more components than this are not parsed.
pub(crate) const MAX_DEPTH: usize = 64;

/// The scope prefixes of container runtimes (`<prefix>-<id>.scope`).
const SCOPE_PREFIXES: [&str; 4] = ["docker-", "cri-containerd-", "crio-", "libpod-"];
/// The kubelet's QoS classes below `kubepods` (the guaranteed class has none).
const QOS: [&str; 2] = ["besteffort", "burstable"];

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A canonical UUID (8-4-4-4-12 hex digits, either case).
fn is_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// A systemd service unit name: `name.service`, with the characters systemd allows.
fn service_unit(c: &str) -> Option<&str> {
    let stem = c.strip_suffix(".service")?;
    (!stem.is_empty()
        && c.len() <= 256
        && c.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_' | b'.' | b'@' | b'\\')
        }))
    .then_some(c)
}

/// The container id of a runtime's scope (`docker-<id>.scope`, ...).
fn scope_container(c: &str) -> Option<&str> {
    let stem = c.strip_suffix(".scope")?;
    SCOPE_PREFIXES
        .iter()
        .find_map(|p| stem.strip_prefix(p))
        .filter(|id| is_hex64(id))
}

/// The parts of a path, or `None` for one too long or too deep to parse.
fn components(path: &str) -> Option<Vec<&str>> {
    if path.len() > MAX_PATH {
        return None;
    }
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    (parts.len() < MAX_DEPTH).then_some(parts)
}

fn arc(s: &str) -> Option<Arc<str>> {
    Some(Arc::from(s))
}

/// The workload of the cgroup at `path` (as in `/proc/PID/cgroup`), by its name alone.
pub(crate) fn parse(path: &str) -> Workload {
    let Some(parts) = components(path) else {
        return Workload::default();
    };
    match parts.first().copied() {
        Some("kubepods") => kubelet_cgroupfs(&parts[1..]),
        Some("docker") => container(parts.get(1).copied().filter(|c| is_hex64(c))),
        Some("libpod_parent") => container(
            parts
                .get(1)
                .and_then(|c| c.strip_prefix("libpod-"))
                .filter(|id| is_hex64(id)),
        ),
        Some(_) => systemd(&parts),
        None => Workload::default(),
    }
}

fn container(id: Option<&str>) -> Workload {
    Workload {
        container_id: id.and_then(arc),
        ..Workload::default()
    }
}

/// `kubepods/[besteffort|burstable/]pod<uid>[/<id>|/crio-<id>[/...]]`, below `kubepods`.
fn kubelet_cgroupfs(parts: &[&str]) -> Workload {
    let parts = match parts.first() {
        Some(q) if QOS.contains(q) => &parts[1..],
        _ => parts,
    };
    let Some(uid) = parts
        .first()
        .and_then(|c| c.strip_prefix("pod"))
        .filter(|u| is_uuid(u))
    else {
        return Workload::default();
    };
    let id = parts
        .get(1)
        .map(|c| c.strip_prefix("crio-").unwrap_or(*c))
        .filter(|id| is_hex64(id));
    Workload {
        pod_uid: arc(uid),
        container_id: id.and_then(arc),
        ..Workload::default()
    }
}

/// systemd's layout: slices from the root, each named after its parent, then a unit.
fn systemd(parts: &[&str]) -> Workload {
    let mut parent: Option<&str> = None;
    let mut pod = None;
    let mut depth = 0;
    for c in parts {
        let Some(stem) = c.strip_suffix(".slice") else {
            return systemd_unit(c, pod);
        };
        let nested = match parent {
            None => !stem.is_empty() && !stem.contains('-'),
            Some(p) => stem
                .strip_prefix(p)
                .and_then(|r| r.strip_prefix('-'))
                .is_some_and(|r| !r.is_empty() && !r.contains('-')),
        };
        if !nested || pod.is_some() {
            // Not a slice systemd would make here, or a slice inside a pod's.
            return Workload::default();
        }
        depth += 1;
        if parts[0] == "kubepods.slice" && (depth == 2 || depth == 3) {
            pod = slice_pod(stem);
        }
        parent = Some(stem);
    }
    Workload {
        pod_uid: pod.as_deref().and_then(arc),
        ..Workload::default()
    }
}

/// The pod uid of a kubelet systemd-driver slice stem (`kubepods[-qos]-pod<uid with _>`).
fn slice_pod(stem: &str) -> Option<String> {
    let rest = stem.strip_prefix("kubepods-")?;
    let rest = QOS
        .iter()
        .find_map(|q| rest.strip_prefix(q).and_then(|r| r.strip_prefix('-')))
        .unwrap_or(rest);
    let uid = rest.strip_prefix("pod")?.replace('_', "-");
    is_uuid(&uid).then_some(uid)
}

/// The unit `c` directly in a slice (in a pod's slice when `pod` is set).
fn systemd_unit(c: &str, pod: Option<String>) -> Workload {
    let container_id = scope_container(c).and_then(arc);
    let unit = match (&pod, &container_id) {
        (None, None) => service_unit(c).and_then(arc),
        _ => None,
    };
    Workload {
        pod_uid: pod.as_deref().and_then(arc),
        container_id,
        unit,
        user_id: None,
    }
}

/// The hierarchy a process's cgroup path is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Hierarchy {
    /// cgroup v2 (`0::PATH`).
    V2,
    /// The v1 `name=systemd` hierarchy of a hybrid host.
    SystemdV1,
}

/// The cgroup of a process, from the text of `/proc/PID/cgroup`: the cgroup v2 entry
/// (`0::PATH`) unless it is the root, else the v1 `name=systemd` entry (hybrid hosts).
pub(crate) fn process_cgroup(text: &str) -> Option<(Hierarchy, &str)> {
    let mut v2 = None;
    let mut systemd = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            v2 = Some(path);
        } else if controllers == "name=systemd" {
            systemd = Some(path);
        }
    }
    match (v2, systemd) {
        (Some(p), _) if p != "/" => Some((Hierarchy::V2, p)),
        (_, Some(p)) => Some((Hierarchy::SystemdV1, p)),
        (p, None) => p.map(|p| (Hierarchy::V2, p)),
    }
}

#[cfg(test)]
mod tests;
