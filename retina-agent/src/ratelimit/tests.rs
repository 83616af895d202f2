use super::*;

#[test]
fn first_then_once_a_minute_with_a_count() {
    let t0 = Instant::now();
    let mut s = Streak::default();
    assert_eq!(s.fail_at(t0), Some(0));
    for i in 1..60 {
        assert_eq!(s.fail_at(t0 + Duration::from_secs(i)), None);
    }
    // 60 failures after the first one, the last at +60 s.
    assert_eq!(s.fail_at(t0 + Duration::from_secs(60)), Some(60));
    assert_eq!(s.fail_at(t0 + Duration::from_secs(61)), None);
    assert_eq!(s.count(), 62);
    assert!(s.ok());
    assert!(!s.ok());
    // A new streak logs its first failure at once.
    assert_eq!(s.fail_at(t0 + Duration::from_secs(62)), Some(0));
}

#[test]
fn the_end_of_a_streak_says_how_long_it_was() {
    let mut s = Streak::default();
    assert_eq!(s.fail(), Some(0));
    assert_eq!(s.fail(), None);
    assert_eq!(s.fail(), None);
    assert_eq!(s.count(), 3);
    s.last_logged = Instant::now().checked_sub(Streak::EVERY);
    assert_eq!(s.fail(), Some(3));
    let (n, _) = s.end().unwrap();
    assert_eq!(n, 4);
    assert_eq!(s.count(), 0);
    assert!(s.end().is_none());
    assert_eq!(s.fail(), Some(0));
}
