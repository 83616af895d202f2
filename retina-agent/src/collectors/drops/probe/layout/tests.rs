use super::*;

#[test]
fn not_drop_reasons_follow_the_kernels_numbering() {
    use crate::kernel::btf::tests::Builder;
    let mask = |values: &[(&str, u32)]| {
        let mut b = Builder::new();
        b.enumeration("skb_drop_reason", values);
        not_drop_reasons(&Btf::parse("fixture".into(), b.build(), None).unwrap())
    };
    // 5.17: the enum starts with NOT_SPECIFIED; everything is a drop.
    assert_eq!(mask(&[("SKB_DROP_REASON_NOT_SPECIFIED", 0)]), 0);
    // 5.18 to 6.1: NOT_SPECIFIED = 1 must be counted.
    let v6_1 = [
        ("SKB_NOT_DROPPED_YET", 0),
        ("SKB_DROP_REASON_NOT_SPECIFIED", 1),
        ("SKB_DROP_REASON_NO_SOCKET", 2),
    ];
    assert_eq!(mask(&v6_1), 0b01);
    // 6.2 and later.
    let v6_18 = [
        ("SKB_NOT_DROPPED_YET", 0),
        ("SKB_CONSUMED", 1),
        ("SKB_DROP_REASON_NOT_SPECIFIED", 2),
    ];
    assert_eq!(mask(&v6_18), 0b11);
    // No enum at all: the probe does not load there anyway; nothing is excluded.
    assert_eq!(
        not_drop_reasons(&Btf::parse("f".into(), Builder::new().build(), None).unwrap()),
        0
    );
}

/// BTF holding only `btf_trace_kfree_skb`: a typedef of a pointer to a function of the
/// context plus `args` tracepoint arguments, as vmlinux BTF describes raw tracepoints.
fn tracepoint_btf(args: u32) -> Btf {
    let mut strings = b"\0int\0btf_trace_kfree_skb\0".to_vec();
    let (int_name, typedef_name) = (1u32, 5u32);
    let mut types: Vec<u32> = vec![int_name, 1 << 24, 4, 32]; // [1] int
    types.extend([0, (13 << 24) | (args + 1), 1]); // [2] func_proto returning int
    for _ in 0..=args {
        types.extend([0, 1]); // unnamed parameter of type int
    }
    types.extend([0, 2 << 24, 2]); // [3] pointer to [2]
    types.extend([typedef_name, 8 << 24, 3]); // [4] typedef to [3]
    let types: Vec<u8> = types.iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut blob = vec![0x9f, 0xeb, 1, 0];
    for v in [
        24,
        0,
        types.len() as u32,
        types.len() as u32,
        strings.len() as u32,
    ] {
        blob.extend_from_slice(&v.to_le_bytes());
    }
    blob.extend_from_slice(&types);
    blob.append(&mut strings);
    Btf::parse("fixture".into(), blob, None).unwrap()
}

#[test]
fn kernels_without_the_reason_argument_are_named() {
    // Before 5.17: trace_kfree_skb(skb, location).
    let old = offsets_from_btf(&tracepoint_btf(2)).unwrap_err();
    assert!(
        matches!(old, ProbeError::NoReasonArgument { found: 2 }),
        "{old}"
    );
    assert!(old.to_string().contains("5.17"), "{old}");
    // 5.17 to 6.1: (skb, location, reason); 6.11+ adds rx_sk. Both get past the check
    // (this fixture then lacks struct sk_buff).
    for args in [3, 4] {
        let err = offsets_from_btf(&tracepoint_btf(args)).unwrap_err();
        assert!(matches!(err, ProbeError::Layout(_)), "{args} args: {err}");
    }
}

#[test]
fn offsets_on_this_kernel() {
    let btf = Btf::from_sys().unwrap();
    let o = offsets_from_btf(&btf).unwrap();
    let args = btf.tracepoint_args(TRACEPOINT).unwrap() as usize;
    let rx_sk = if args > RX_SK_ARG { OFFSETS_HAS_RX_SK } else { 0 };
    assert_eq!(
        o.flags,
        OFFSETS_VALID | OFFSETS_HAS_NETNS | OFFSETS_HAS_SK_CGROUP | OFFSETS_HAS_USER_NS | rx_sk
    );
    assert!(o.net_user_ns > 0 && o.user_ns_level > 0);
    assert!(o.sk_cgroup > 0 && o.cgroup_kn > 0);
    // Sanity against the layout every 64-bit kernel shares: dev follows next/prev.
    assert_eq!(o.skb_dev, 16);
    assert!(o.skb_len > o.skb_dev && o.net_inum > 0 && o.dev_ifindex > 0);
}
