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
fn btf_without_drop_reasons_fails() {
    let mut b = crate::kernel::btf::tests::Builder::new();
    b.int("int", 4);
    let dir = std::env::temp_dir().join(format!("retina-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("btf");
    std::fs::write(&path, b.build()).unwrap();
    let (c, parsed) = btf(Some(&path));
    assert!(parsed.is_some());
    assert_eq!(c.status, Status::Fail);
    assert!(c.detail.contains("no enum skb_drop_reason"), "{c:?}");
    let t = tracepoint(&Preflight {
        tracepoint: crate::collectors::drops::preflight::tracepoint(parsed.as_ref().unwrap()),
        load: Err(ProbeError::NoKernelBtf),
    });
    assert_eq!(t.status, Status::Fail);
    let (c, parsed) = btf(Some(&dir.join("missing")));
    assert!(parsed.is_none());
    assert_eq!(c.status, Status::Fail);
    assert!(c.hint.unwrap().contains("CONFIG_DEBUG_INFO_BTF"));
    std::fs::remove_dir_all(&dir).unwrap();
}
