use super::*;

fn msg(ty: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
    m.extend_from_slice(&ty.to_ne_bytes());
    m.extend_from_slice(&0u16.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    m.extend_from_slice(payload);
    m
}

fn nsid_payload(id: i32) -> Vec<u8> {
    let mut p = vec![0u8; RTGENMSG_LEN];
    p.extend_from_slice(&8u16.to_ne_bytes());
    p.extend_from_slice(&NETNSA_NSID.to_ne_bytes());
    p.extend_from_slice(&id.to_ne_bytes());
    p
}

#[test]
fn replies() {
    assert_eq!(
        parse_reply(&msg(RTM_NEWNSID, 5, &nsid_payload(2)), 5),
        Reply::Nsid(Some(2))
    );
    assert_eq!(
        parse_reply(&msg(RTM_NEWNSID, 5, &nsid_payload(-1)), 5),
        Reply::Nsid(None)
    );
    assert_eq!(
        parse_reply(&msg(RTM_NEWNSID, 4, &nsid_payload(2)), 5),
        Reply::Other
    );
    assert_eq!(
        parse_reply(&msg(NLMSG_ERROR, 5, &(-22i32).to_ne_bytes()), 5),
        Reply::Error(-22)
    );
    // Truncated, lying lengths, no NETNSA_NSID: malformed, never a number.
    assert_eq!(parse_reply(&[1, 2, 3], 5), Reply::Malformed);
    let mut lying = msg(RTM_NEWNSID, 5, &nsid_payload(2));
    lying[0] = 200;
    assert_eq!(parse_reply(&lying, 5), Reply::Malformed);
    assert_eq!(
        parse_reply(&msg(RTM_NEWNSID, 5, &[0, 0, 0, 0]), 5),
        Reply::Malformed
    );
    assert_eq!(parse_reply(&msg(RTM_NEWNSID, 5, &[0]), 5), Reply::Malformed);
    let mut bad_attr = nsid_payload(2);
    bad_attr[4] = 40;
    assert_eq!(
        parse_reply(&msg(RTM_NEWNSID, 5, &bad_attr), 5),
        Reply::Malformed
    );
}

#[test]
fn the_host_namespace_has_no_nsid_for_itself_or_is_asked_without_error() {
    // Asking about our own namespace is valid and answers "not assigned" or an id;
    // it must not fail (this runs without privileges).
    let host = crate::kernel::netns::current_netns_inode().unwrap();
    let mut p = PeerOwners::new(host).unwrap();
    let me = std::path::Path::new("/proc/self/ns/net");
    let r = p.nsid_of(me, Some(host)).unwrap();
    assert!(r.is_none_or(|id| id >= 0));
    // A namespace inode that is not the file's: not asked.
    assert_eq!(p.nsid_of(me, Some(host.wrapping_add(1))).unwrap(), None);
    // Not a namespace file: the kernel refuses, an error, not a number.
    assert!(
        p.nsid_of(std::path::Path::new("/proc/self/ns/uts"), None)
            .is_err()
    );
    assert_eq!(
        p.nsid_of(std::path::Path::new("/nonexistent"), None)
            .unwrap(),
        None
    );
    // By pid (what the task iterator gives): our own process answers like our
    // descriptor did, and a pid no process has is "no namespace", not an error.
    let by_fd = p.nsid_of(me, Some(host)).unwrap();
    assert_eq!(p.nsid_of_pid(std::process::id()).unwrap(), by_fd);
    let max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(p.nsid_of_pid(max).unwrap(), None);
}
