use super::*;

const ID: &str = "4f1e2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
const UID: &str = "0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0";

fn w(pod: Option<&str>, container: Option<&str>, unit: Option<&str>) -> Workload {
    Workload {
        pod_uid: pod.map(Arc::from),
        container_id: container.map(Arc::from),
        unit: unit.map(Arc::from),
        user_id: None,
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
fn a_second_pod_or_container_below_the_first_is_the_first() {
    let other = UID.replace('0', "1");
    let uid_ = UID.replace('-', "_");
    let p = format!("/kubepods.slice/kubepods-pod{uid_}.slice/x/kubepods/pod{other}/{ID}");
    assert_eq!(parse(&p), w(Some(UID), None, None));
    let id2 = ID.replace('4', "5");
    let p = format!("/system.slice/docker-{ID}.scope/docker-{id2}.scope");
    assert_eq!(parse(&p), w(None, Some(ID), None));
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
fn what_lies_below_a_unit_or_a_container_is_theirs() {
    let uid_ = UID.replace('-', "_");
    let id2 = ID.replace('4', "5");
    // A service's delegated subtree, whatever it names, is the service's.
    let p = format!(
        "/system.slice/containerd.service/kubepods-pod{uid_}.slice/cri-containerd-{ID}.scope"
    );
    assert_eq!(parse(&p), w(None, None, Some("containerd.service")));
    // A container's own cgroups (cgroupns, nested runtimes) are the container's.
    for below in [
        format!("/docker-{id2}.scope"),
        format!("/kubepods/pod{UID}/{id2}"),
        "/sshd.service".to_string(),
    ] {
        let p = format!("/system.slice/docker-{ID}.scope{below}");
        assert_eq!(parse(&p), w(None, Some(ID), None), "{p}");
        let p = format!("/kubepods/burstable/pod{UID}/{ID}{below}");
        assert_eq!(parse(&p), w(Some(UID), Some(ID), None), "{p}");
    }
    // A user's manager: the unit is user@UID.service, not what runs in it.
    let p = "/user.slice/user-1000.slice/user@1000.service/app.slice/evil.service";
    assert_eq!(parse(p), w(None, None, Some("user@1000.service")));
}

/// The probe's forged cgroups (issue 26): each pattern anywhere but where its manager
/// puts it, and slices systemd would never make.
#[test]
fn patterns_count_only_where_their_managers_put_them() {
    let uid_ = UID.replace('-', "_");
    for prefix in ["/d", "/d/x", "/system.slice/x", "/retina", "/kubepods.slice/y"] {
        for forged in [
            format!("kubepods-burstable-pod{uid_}.slice"),
            format!("kubepods-pod{uid_}.slice"),
            format!("kubepods.slice/kubepods-pod{uid_}.slice"),
            format!("docker-{ID}.scope"),
            "sshd.service".to_string(),
            format!("libpod_parent/libpod-{ID}"),
            format!("kubepods/pod{UID}/{ID}"),
            format!("kubepods/besteffort/pod{UID}/{ID}"),
            format!("docker/{ID}"),
        ] {
            let p = format!("{prefix}/{forged}");
            assert_eq!(parse(&p), Workload::default(), "{p}");
        }
    }
    for p in [
        // Slices not named after their parent, or with a '-' at the top.
        format!("/kubepods.slice/burstable.slice/kubepods-burstable-pod{uid_}.slice"),
        format!("/kubepods.slice/other-burstable.slice/kubepods-burstable-pod{uid_}.slice"),
        format!("/kubepods-burstable.slice/kubepods-burstable-pod{uid_}.slice"),
        format!("/a-b.slice/docker-{ID}.scope"),
        "/a-b.slice/sshd.service".to_string(),
        format!("/system.slice/x.slice/docker-{ID}.scope"),
        // A pod slice too deep in kubepods, or inside another pod's.
        format!(
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-x.slice/kubepods-burstable-x-pod{uid_}.slice"
        ),
        format!("/kubepods.slice/kubepods-pod{uid_}.slice/kubepods-pod{uid_}-a.slice"),
        // A pod slice outside kubepods.slice.
        format!("/system.slice/system-kubepods.slice/system-kubepods-pod{uid_}.slice"),
        // cgroupfs layouts with a wrong level.
        format!("/kubepods/guaranteed/pod{UID}/{ID}"),
        format!("/kubepods/x/besteffort/pod{UID}/{ID}"),
        format!("/docker/x/{ID}"),
        format!("/libpod_parent/x/libpod-{ID}"),
    ] {
        assert_eq!(parse(&p), Workload::default(), "{p}");
    }
}

fn process_path(text: &str) -> Option<&str> {
    process_cgroup(text).map(|(_, p)| p)
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
    assert_eq!(
        process_cgroup(hybrid),
        Some((Hierarchy::SystemdV1, "/system.slice/b.service"))
    );
    assert_eq!(process_cgroup(both), Some((Hierarchy::V2, "/kubepods/pod1")));
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
