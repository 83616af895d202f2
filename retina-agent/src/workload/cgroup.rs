//! What a cgroup path says about the workload in it: the Kubernetes pod, the container and
//! the systemd service, as kubelet, the container runtimes and systemd name their cgroups.
//!
//! | layout | example | gives |
//! |---|---|---|
//! | kubelet, systemd driver | `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid with _>.slice/cri-containerd-<id>.scope` | pod uid (`_` → `-`), container id |
//! | kubelet, cgroupfs driver | `/kubepods/besteffort/pod<uid>/<id>` | pod uid, container id |
//! | docker, podman, CRI-O scopes | `/system.slice/docker-<id>.scope`, `…/libpod-<id>.scope`, `…/crio-<id>.scope` | container id |
//! | docker, cgroupfs driver | `/docker/<id>` | container id |
//! | podman, cgroupfs manager | `/libpod_parent/libpod-<id>` | container id |
//! | a systemd service | `/system.slice/unbound.service` | unit |
//!
//! A container id is exactly 64 lowercase hex digits and a pod uid a canonical UUID;
//! anything that only looks close (another length, other characters, two different pods in
//! one path, a path deeper than [`MAX_DEPTH`] or longer than [`MAX_PATH`]) gives nothing,
//! never a wrong attribute.

use std::sync::Arc;

/// Paths longer than this are not parsed (the kernel allows 4096 per path).
pub const MAX_PATH: usize = 4096;
/// Paths with more components than this are not parsed.
pub const MAX_DEPTH: usize = 64;

/// The scope prefixes of container runtimes (`<prefix>-<id>.scope`).
const SCOPE_PREFIXES: [&str; 4] = ["docker-", "cri-containerd-", "crio-", "libpod-"];

/// The workload a cgroup path names; empty for a path that names none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    /// `k8s.pod.uid`.
    pub pod_uid: Option<Arc<str>>,
    /// `container.id`.
    pub container_id: Option<Arc<str>>,
    /// The systemd service unit (`systemd.unit`), for processes outside containers.
    pub unit: Option<Arc<str>>,
}

impl Workload {
    pub fn is_empty(&self) -> bool {
        self.pod_uid.is_none() && self.container_id.is_none() && self.unit.is_none()
    }

    /// What two processes of one namespace have in common: each field kept only where
    /// both agree.
    pub fn common(&self, other: &Workload) -> Workload {
        let same =
            |a: &Option<Arc<str>>, b: &Option<Arc<str>>| if a == b { a.clone() } else { None };
        Workload {
            pod_uid: same(&self.pod_uid, &other.pod_uid),
            container_id: same(&self.container_id, &other.container_id),
            unit: same(&self.unit, &other.unit),
        }
    }
}

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

/// A systemd unit name: `name.service`, with the characters systemd allows.
fn service_unit(c: &str) -> Option<&str> {
    let stem = c.strip_suffix(".service")?;
    (!stem.is_empty()
        && c.len() <= 256
        && c.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b':' | b'-' | b'_' | b'.' | b'@' | b'\\')
        }))
    .then_some(c)
}

/// The pod uid of a kubelet systemd-driver slice (`kubepods-…-pod<uid>.slice`).
fn slice_pod(c: &str) -> Option<String> {
    let rest = c.strip_prefix("kubepods")?.strip_suffix(".slice")?;
    let (_, uid) = rest.rsplit_once("-pod")?;
    let uid = uid.replace('_', "-");
    is_uuid(&uid).then_some(uid)
}

/// The container id of a runtime's scope (`docker-<id>.scope`, ...).
fn scope_container(c: &str) -> Option<&str> {
    let stem = c.strip_suffix(".scope")?;
    SCOPE_PREFIXES
        .iter()
        .find_map(|p| stem.strip_prefix(p))
        .filter(|id| is_hex64(id))
}

/// Records `value` for one field, or marks the field ambiguous if it differs from a value
/// found earlier in the same path.
fn set(field: &mut Option<String>, ambiguous: &mut bool, value: &str) {
    match field {
        Some(v) if v != value => *ambiguous = true,
        Some(_) => {}
        None => *field = Some(value.to_string()),
    }
}

/// The workload of the cgroup at `path` (as in `/proc/PID/cgroup`).
pub fn parse(path: &str) -> Workload {
    if path.len() > MAX_PATH || path.split('/').count() > MAX_DEPTH {
        return Workload::default();
    }
    let (mut pod, mut container, mut unit) = (None, None, None);
    let mut ambiguous = false;
    let mut under_kubepods = false;
    let mut under_docker = false;
    let mut under_libpod = false;
    let mut under_pod = false;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        if c == "kubepods" || c.starts_with("kubepods.") || c.starts_with("kubepods-") {
            under_kubepods = true;
        }
        if let Some(uid) = slice_pod(c) {
            set(&mut pod, &mut ambiguous, &uid);
            under_pod = true;
        } else if under_kubepods
            && let Some(uid) = c.strip_prefix("pod")
            && is_uuid(uid)
        {
            set(&mut pod, &mut ambiguous, uid);
            under_pod = true;
        } else if let Some(id) = scope_container(c) {
            set(&mut container, &mut ambiguous, id);
        } else if is_hex64(c) && (under_pod || under_docker) {
            set(&mut container, &mut ambiguous, c);
        } else if let Some(id) = c.strip_prefix("libpod-").filter(|id| under_libpod && is_hex64(id))
        {
            set(&mut container, &mut ambiguous, id);
        } else if let Some(u) = service_unit(c) {
            // The innermost service counts (a service nested in a slice of services).
            unit = Some(u.to_string());
        }
        under_docker = c == "docker";
        under_libpod = c == "libpod_parent";
    }
    if ambiguous {
        return Workload::default();
    }
    let arc = |s: Option<String>| s.map(Arc::<str>::from);
    let containerised = pod.is_some() || container.is_some();
    Workload {
        pod_uid: arc(pod),
        container_id: arc(container),
        // A container's cgroup may sit below a service (docker.service's children); the
        // service is then not the workload.
        unit: if containerised { None } else { arc(unit) },
    }
}

/// The cgroup path of a process, from the text of `/proc/PID/cgroup`: the cgroup v2 entry
/// (`0::PATH`) unless it is the root, else the v1 `name=systemd` entry (hybrid hosts).
pub fn process_path(text: &str) -> Option<&str> {
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
        (Some(p), _) if p != "/" => Some(p),
        (_, Some(p)) => Some(p),
        (p, None) => p,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f1e2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
    const UID: &str = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";

    fn w(pod: Option<&str>, container: Option<&str>, unit: Option<&str>) -> Workload {
        Workload {
            pod_uid: pod.map(Arc::from),
            container_id: container.map(Arc::from),
            unit: unit.map(Arc::from),
        }
    }

    #[test]
    fn the_layouts_kubelet_and_the_runtimes_use() {
        let uid_ = UID.replace('-', "_");
        let cases = [
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice/cri-containerd-{ID}.scope"
                ),
                w(Some(UID), Some(ID), None),
            ),
            (
                format!("/kubepods.slice/kubepods-pod{uid_}.slice/crio-{ID}.scope"),
                w(Some(UID), Some(ID), None),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice"
                ),
                w(Some(UID), None, None),
            ),
            (
                format!("/kubepods/besteffort/pod{UID}/{ID}"),
                w(Some(UID), Some(ID), None),
            ),
            (
                format!("/kubepods/pod{UID}/{ID}"),
                w(Some(UID), Some(ID), None),
            ),
            (
                format!("/system.slice/docker-{ID}.scope"),
                w(None, Some(ID), None),
            ),
            (
                format!("/machine.slice/libpod-{ID}.scope/container"),
                w(None, Some(ID), None),
            ),
            (format!("/docker/{ID}"), w(None, Some(ID), None)),
            (
                format!("/libpod_parent/libpod-{ID}"),
                w(None, Some(ID), None),
            ),
            (
                "/system.slice/unbound.service".to_string(),
                w(None, None, Some("unbound.service")),
            ),
            (
                "/system.slice/system-getty.slice/getty@tty1.service".to_string(),
                w(None, None, Some("getty@tty1.service")),
            ),
            ("/".to_string(), w(None, None, None)),
            (
                "/user.slice/user-0.slice/session-3.scope".to_string(),
                w(None, None, None),
            ),
        ];
        for (path, want) in cases {
            assert_eq!(parse(&path), want, "{path}");
        }
    }

    #[test]
    fn paths_that_look_almost_right_give_nothing() {
        let short = &ID[..63];
        let upper = ID.to_ascii_uppercase();
        let uid_ = UID.replace('-', "_");
        for path in [
            format!("/system.slice/docker-{short}.scope"),
            format!("/system.slice/docker-{ID}0.scope"),
            format!("/system.slice/docker-{upper}.scope"),
            format!("/system.slice/docker-{}.scope", ID.replace('a', "g")),
            format!("/system.slice/crio-conmon-{ID}.scope"),
            format!("/system.slice/docker-{ID}.scopex"),
            // A bare id outside docker/ or a pod.
            format!("/{ID}"),
            format!("/kubepods/besteffort/pod{}/x", &UID[..35]),
            format!("/kubepods.slice/kubepods-pod{}.slice", &uid_[1..]),
            format!("/kubepods.slice/kubepods-pod{uid_}x.slice"),
            format!("/elsewhere/pod{UID}/{ID}"),
            // podman's cgroupfs layout only directly below libpod_parent, and not conmon's.
            format!("/libpod-{ID}"),
            format!("/libpod_parent/libpod-conmon-{ID}"),
            format!("/libpod_parent/libpod-{short}"),
            "/system.slice/.service".to_string(),
            "/system.slice/bad unit.service".to_string(),
            "/system.slice/ünïcode.service".to_string(),
        ] {
            assert_eq!(parse(&path), Workload::default(), "{path}");
        }
    }

    #[test]
    fn two_pods_or_containers_in_one_path_give_nothing() {
        let other = UID.replace('0', "1");
        let uid_ = UID.replace('-', "_");
        let p = format!("/kubepods.slice/kubepods-pod{uid_}.slice/x/kubepods/pod{other}/{ID}");
        assert_eq!(parse(&p), Workload::default());
        let id2 = ID.replace('4', "5");
        let p = format!("/system.slice/docker-{ID}.scope/docker-{id2}.scope");
        assert_eq!(parse(&p), Workload::default());
    }

    #[test]
    fn deep_and_long_paths_give_nothing_and_do_not_panic() {
        let deep = format!("{}/docker-{ID}.scope", "/a".repeat(MAX_DEPTH));
        assert_eq!(parse(&deep), Workload::default());
        let long = format!("/{}/docker-{ID}.scope", "b".repeat(MAX_PATH));
        assert_eq!(parse(&long), Workload::default());
        for junk in [
            "",
            "//",
            "/\0/",
            "kubepods-pod.slice",
            "/kubepods/pod",
            "/docker/",
            ".scope",
        ] {
            assert_eq!(parse(junk), Workload::default(), "{junk:?}");
        }
    }

    #[test]
    fn a_service_above_a_container_is_not_the_workload() {
        let p = format!(
            "/system.slice/containerd.service/kubepods-pod{}.slice/cri-containerd-{ID}.scope",
            UID.replace('-', "_")
        );
        assert_eq!(parse(&p), w(Some(UID), Some(ID), None));
    }

    #[test]
    fn process_paths_prefer_v2_then_name_systemd() {
        assert_eq!(
            process_path("0::/system.slice/a.service\n"),
            Some("/system.slice/a.service")
        );
        let hybrid = "12:memory:/x\n1:name=systemd:/system.slice/b.service\n0::/\n";
        assert_eq!(process_path(hybrid), Some("/system.slice/b.service"));
        let both = "1:name=systemd:/init.scope\n0::/kubepods/pod1\n";
        assert_eq!(process_path(both), Some("/kubepods/pod1"));
        assert_eq!(process_path("garbage\n::\n"), None);
        assert_eq!(process_path(""), None);
    }

    #[test]
    fn common_keeps_what_agrees() {
        let a = w(Some(UID), Some(ID), None);
        let b = w(Some(UID), Some("other"), None);
        assert_eq!(a.common(&b), w(Some(UID), None, None));
        assert!(w(None, None, None).is_empty());
    }
}
