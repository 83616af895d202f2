use super::*;

#[test]
fn the_named_ethertypes_are_set_and_no_other() {
    let words = words();
    let set = |p: u32| words[(p / 32) as usize] & (1 << (p % 32)) != 0;
    for p in [0, 0x0800, 0x86dd, 0x0806, 0x8100, 0x88a8, 0x88cc, 0x8847, 0x0004] {
        assert!(set(p), "0x{p:04x}");
    }
    // The probe's flood used every value: all but the named ones share one key.
    let kept = (0..=0xffff).filter(|&p| set(p)).count();
    assert_eq!(kept, NAMED.len());
    assert!(!set(0x1234) && !set(0xffff) && !set(0x0601));
    // Every entry is distinct (a duplicate would hide a missing one in the count).
    let mut sorted = NAMED.to_vec();
    sorted.dedup();
    assert_eq!(sorted.len(), NAMED.len());
}

#[test]
fn network_types() {
    assert_eq!(network_type(0), None);
    assert_eq!(network_type(0x0800), Some(Value::from("ipv4")));
    assert_eq!(network_type(PROTOCOL_OTHER), Some(Value::from("other")));
    assert_eq!(network_type(0x88cc), Some(Value::from("0x88cc")));
}
