use super::*;

fn table() -> Kallsyms {
    Kallsyms::parse(
        "fixture",
        "ffffffff81000000 T a\nffffffff81000100 T b\nffffffff81000200 T c\n",
    )
    .unwrap()
}

#[test]
fn addresses_of_one_function_share_its_location() {
    let mut l = Locations::new(table(), 8);
    assert_eq!(l.get(0xffffffff81000010), None);
    assert_eq!(l.learn(0xffffffff81000010), 0xffffffff81000000);
    assert_eq!(l.learn(0xffffffff810000f0), 0xffffffff81000000);
    assert_eq!(l.get(0xffffffff810000f0), Some(0xffffffff81000000));
    assert_eq!(
        l.name(0xffffffff81000000).map(|v| v.as_str().into_owned()),
        Some("a".into())
    );
    assert_eq!(l.learn(0x10), UNKNOWN);
    assert_eq!(
        l.name(UNKNOWN).map(|v| v.as_str().into_owned()),
        Some("unknown".into())
    );
    assert_eq!(l.get(0), Some(UNNAMED));
    assert_eq!(l.named(), 2);
}

#[test]
fn functions_beyond_the_capacity_go_unnamed() {
    let mut l = Locations::new(table(), 2);
    assert_eq!(l.learn(0xffffffff81000001), 0xffffffff81000000);
    assert_eq!(l.learn(0xffffffff81000101), 0xffffffff81000100);
    // Full: a third function is not named, a known one still is.
    assert_eq!(l.learn(0xffffffff81000201), UNNAMED);
    assert_eq!(l.name(UNNAMED), None);
    assert_eq!(l.learn(0xffffffff81000102), 0xffffffff81000100);
    assert_eq!(l.named(), 2);
}
