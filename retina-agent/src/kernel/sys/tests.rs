use super::*;

#[test]
fn cap_eff_is_read_from_status_text() {
    let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001c000001000\n";
    let caps = parse_cap_eff(status).unwrap();
    for cap in [CAP_NET_ADMIN, CAP_PERFMON, CAP_BPF] {
        assert_ne!(caps & (1 << cap), 0, "{cap}");
    }
    assert_eq!(caps & (1 << CAP_SYS_ADMIN), 0);
    assert_eq!(parse_cap_eff("Name:\tx\n"), None);
    assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
    // This process can always read its own.
    assert!(effective_caps().is_some());
}

#[test]
fn uname_names_this_kernel() {
    let u = uname().unwrap();
    let osrelease = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(u.release, osrelease.trim());
    assert!(!u.machine.is_empty());
}

#[derive(Debug, thiserror::Error)]
enum Outer {
    #[error("outer: {0}")]
    Repeats(#[source] Inner),
    #[error("outer")]
    Hides(#[source] Inner),
}

#[derive(Debug, thiserror::Error)]
#[error("inner")]
struct Inner(#[source] io::Error);

#[test]
fn error_chain_says_each_cause_once() {
    let io = || io::Error::other("disk on fire");
    assert_eq!(
        error_chain(&Outer::Repeats(Inner(io()))),
        "outer: inner: disk on fire"
    );
    assert_eq!(
        error_chain(&Outer::Hides(Inner(io()))),
        "outer: inner: disk on fire"
    );
    assert_eq!(error_chain(&io()), "disk on fire");
}
