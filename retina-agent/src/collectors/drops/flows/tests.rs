use super::*;

#[test]
fn flows_created_after_an_eviction_are_not_exact() {
    // Nothing evicted: every flow exact.
    assert_eq!(first_missing(&mut [2, 0, 1], 3), 3);
    // Number 1 evicted: 0 stays exact; 2 and 3 may be 1's flow come back.
    assert_eq!(first_missing(&mut [0, 2, 3], 4), 1);
    // Entries created after `issued` was read are not taken for gaps.
    assert_eq!(first_missing(&mut [0, 1, 5], 2), 2);
    assert_eq!(first_missing(&mut [], 0), 0);
    assert_eq!(first_missing(&mut [], 5), 0);
}

#[test]
fn per_cpu_rate_rounds_up() {
    let o = FlowOptions {
        events_per_second: 100,
        ..FlowOptions::default()
    };
    assert_eq!(o.per_cpu_rate(3), 34);
    assert_eq!(o.per_cpu_rate(0), 100);
}
