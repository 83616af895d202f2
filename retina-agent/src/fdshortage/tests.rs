use super::*;

#[derive(Debug, thiserror::Error)]
#[error("opening namespace: {source}")]
struct Wrapped {
    source: io::Error,
}

#[test]
fn only_descriptor_shortages_are_counted_also_when_wrapped() {
    let before = count(Lost::Workload);
    let emfile = io::Error::from_raw_os_error(libc::EMFILE);
    assert!(failed(Lost::Workload, &emfile));
    let enfile = Wrapped {
        source: io::Error::from_raw_os_error(libc::ENFILE),
    };
    assert!(failed(Lost::Workload, &enfile));
    let eperm = Wrapped {
        source: io::Error::from_raw_os_error(libc::EPERM),
    };
    assert!(!failed(Lost::Workload, &eperm));
    assert!(!failed(Lost::Workload, &io::Error::other("gone")));
    assert_eq!(count(Lost::Workload), before + 2);
    assert!(FAILING[Lost::Workload.index()].load(Ordering::Relaxed));
    succeeded(Lost::Workload);
    assert!(!FAILING[Lost::Workload.index()].load(Ordering::Relaxed));
}
