use super::*;
use crate::kernel::btf::tests::Builder;

fn btf(build: impl FnOnce(&mut Builder)) -> Btf {
    let mut b = Builder::new();
    build(&mut b);
    Btf::parse("fixture".into(), b.build(), None).unwrap()
}

#[test]
fn names_from_btf_and_unknown_values() {
    let btf = btf(|b| {
        b.enumeration(
            "skb_drop_reason",
            &[
                ("SKB_NOT_DROPPED_YET", 0),
                ("SKB_CONSUMED", 1),
                ("SKB_DROP_REASON_NOT_SPECIFIED", 2),
                ("SKB_DROP_REASON_NO_SOCKET", 3),
                ("SKB_DROP_REASON_SUBSYS_MASK", 0xffff_0000),
            ],
        );
        b.enumeration(
            "ovs_drop_reason",
            &[
                ("__OVS_DROP_REASON", 2 << 16),
                ("OVS_DROP_LAST_ACTION", (2 << 16) + 1),
            ],
        );
        b.enumeration(
            "mac80211_drop_reason",
            &[("RX_CONTINUE", 1), ("RX_DROP_MONITOR", 1 << 16)],
        );
    });
    let r = DropReasons::load(&btf, None).unwrap();
    assert_eq!(&*r.name(3), "NO_SOCKET");
    assert_eq!(&*r.name(1), "CONSUMED");
    assert_eq!(&*r.name(0), "NOT_DROPPED_YET");
    assert_eq!(&*r.name((2 << 16) + 1), "OVS_DROP_LAST_ACTION");
    assert_eq!(&*r.name(1 << 16), "RX_DROP_MONITOR");
    // Subsystem values below bit 16 never shadow core names; markers are skipped.
    assert_eq!(&*r.name(2 << 16), "UNKNOWN_131072");
    assert_eq!(&*r.name(4242), "UNKNOWN_4242");
}

#[test]
fn missing_enum_is_a_clear_error() {
    let btf = btf(|b| {
        b.int("int", 4);
    });
    let err = DropReasons::load(&btf, None).unwrap_err().to_string();
    assert!(
        err.contains("skb_drop_reason") && err.contains("5.17"),
        "{err}"
    );
}
