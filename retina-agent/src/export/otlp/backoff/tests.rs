use super::*;

#[test]
fn doubles_up_to_the_max_and_resets_on_success() {
    let waits: Vec<u64> = (1..=8).map(|n| Backoff::delay(n).as_secs()).collect();
    assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
    assert_eq!(Backoff::delay(u32::MAX), MAX);

    let t0 = Instant::now();
    let mut b = Backoff::default();
    assert!(!b.holds(t0));
    assert_eq!(b.failed(t0), FIRST);
    assert!(b.holds(t0 + Duration::from_millis(999)));
    assert!(!b.holds(t0 + FIRST));
    assert_eq!(b.failed(t0 + FIRST), Duration::from_secs(2));
    assert!(b.holds(t0 + Duration::from_secs(2)));
    b.succeeded();
    assert!(!b.holds(t0 + FIRST));
    assert_eq!(b.failed(t0), FIRST);
}
